//! The receive side's verdict: an `sk_skb` program (attached to
//! `l7_sockets` as `BPF_SK_SKB_VERDICT`) that sees every byte the server
//! sends on an enrolled connection, frames the server's HTTP/1.x responses
//! and tells the `sk_msg` program, through the connection's
//! [`abi::peer`] record, how many requests the server has finished
//! answering and whether it agreed to a switch (docs/receive-side.md).
//!
//! Invariants:
//! - It always returns `SK_PASS`: every byte goes, unchanged and in order,
//!   to the enrolled socket's receive queue. `SK_DROP` on the receive side
//!   would discard bytes TCP has already acknowledged. It reads the skb
//!   with `bpf_skb_load_bytes` only (no `skb_pull_data`, no writes).
//! - Why a verdict at all, even where nothing reads the record: kernels
//!   with upstream 929e30f93125 (6.6.128+, 6.12.75+, 6.18.14+) answer 0 to
//!   `ioctl(FIONREAD)` on a socket in a socket map without a receive-side
//!   verdict; with one the bytes go through the psock's queue, which
//!   FIONREAD counts.
//! - The framer is a byte-at-a-time machine whose whole state lives in the
//!   record's `rx` words, so any cut of the stream into skbs gives the same
//!   result. It writes `answered`, `flags` (`LOST`, `SWITCH_ACCEPTED`,
//!   `SWITCH_REFUSED`) and `rx`; it reads `forwarded` and `kinds`, which
//!   only the `sk_msg` program writes. The two programs never run at once
//!   on one socket (docs/receive-side-research.md, A3), so plain loads and
//!   stores suffice.
//! - Once `LOST` or `SWITCH_ACCEPTED` is set it parses nothing more; a
//!   connection without a record is passed untouched.
//! - Body bytes are never stepped one by one: a `Content-Length` body and
//!   chunk data are skipped by arithmetic on the stream offset. Only heads,
//!   chunk-size lines and trailers are read, one byte per `bpf_loop`
//!   iteration, from a 256-byte window `skb_load_bytes` fills.
//!
//! The `rx` words, at their offsets in the 64-byte record:
//!
//! ```text
//!  12  u8   state      the machine's state (`state::*`)
//!  13  u8   pos        position in the status line, the field name, the
//!                      Transfer-Encoding token, the Content-Length digits
//!                      (0 none, 1 digits, 2 trailing blanks), or the count
//!                      of chunk-size digits
//!  14  u8   field      while in a field name: the names it may still be
//!                      (`CAND_*`)
//!  15  u8   bits       per response: `CL_SEEN`, `TE_SEEN`, `TE_CHUNKED`,
//!                      `TRAILERS`
//!  16  u32  code       the status code
//!  20  u32  count      bytes of the current head, trailer section or
//!                      chunk-size line
//!  24  u64  remaining  the Content-Length (while in the head), then the
//!                      body or chunk-data bytes still to skip
//!  32  u64  cur        the Content-Length or chunk size being read
//!  40  u32  off        this run: the offset in the skb of the next byte
//!  44  u32  win        this run: where the window in the scratch starts
//! ```

use crate as abi;
use crate::peer;
use l7c_bpf::bpf::{verdict, Asm, AsmError, Helper, Program, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};

/// The program's ELF section (aya and libbpf read `sk_skb/verdict` as
/// `BPF_PROG_TYPE_SK_SKB`).
pub const SECTION: &str = "sk_skb/verdict";
/// Its function symbol.
pub const PROGRAM_NAME: &str = "l7c_receive";
/// The `bpf_loop` callback that takes one step of the framer.
pub const STEP_NAME: &str = "l7c_rx_step";

/// The longest response head (status line, fields, the blank line) and
/// the longest trailer section the framer follows; one byte more sets
/// `LOST`.
pub const MAX_HEAD_BYTES: u32 = 16 * 1024;
/// The longest chunk-size line, CRLF included (the request side's limit).
pub const MAX_CHUNK_LINE: u32 = abi::http::MAX_CHUNK_LINE as u32;
/// The most hex digits of a chunk size (the request side's limit).
pub const MAX_CHUNK_SIZE_DIGITS: u32 = abi::http::MAX_CHUNK_SIZE_DIGITS as u32;
/// A Content-Length of 2^60 or more is an overflow (`LOST`): below it,
/// `value * 10 + 9` cannot wrap a u64.
pub const CONTENT_LENGTH_BITS: i32 = 60;
/// Bytes `skb_load_bytes` copies at a time into the stack scratch.
pub const WINDOW: i32 = 256;
/// `bpf_loop`'s most iterations (`BPF_MAX_LOOPS`). A run takes at most
/// `skb->len + 1` steps (each consumes a byte or skips a body span); an
/// skb longer than this is left unparsed and sets `LOST`.
pub const MAX_STEPS: i32 = 1 << 23;

/// The machine's states (`rx.state`).
pub mod state {
    /// The status line up to the code: `HTTP/1.x DDD` (`pos` 0..=12).
    pub const STATUS: u8 = 0;
    /// The reason phrase, to its CR.
    pub const REASON: u8 = 1;
    /// The LF that ends the status line: the switch is decided here.
    pub const STATUS_LF: u8 = 2;
    /// The start of a field line, or the CR of the blank line.
    pub const FIELD_START: u8 = 3;
    pub const NAME: u8 = 4;
    /// A field value the framer does not read, to its CR.
    pub const VALUE_OTHER: u8 = 5;
    pub const VALUE_CONTENT_LENGTH: u8 = 6;
    pub const VALUE_TRANSFER_ENCODING: u8 = 7;
    pub const FIELD_LF: u8 = 8;
    /// The LF of the blank line: the head (or the trailers) ends here.
    pub const HEAD_END_LF: u8 = 9;
    /// A Content-Length body, skipped.
    pub const BODY: u8 = 10;
    /// The chunk-size line: digits, extensions, its LF (11..=13, the
    /// states `MAX_CHUNK_LINE` bounds).
    pub const CHUNK_SIZE: u8 = 11;
    pub const CHUNK_EXT: u8 = 12;
    pub const CHUNK_SIZE_LF: u8 = 13;
    /// Chunk data, skipped, then its CRLF.
    pub const CHUNK_DATA: u8 = 14;
    pub const CHUNK_DATA_CR: u8 = 15;
    pub const CHUNK_DATA_LF: u8 = 16;
}

/// Offsets of the `rx` words in the record (module docs).
pub mod rx {
    use crate::peer::RX;
    pub const STATE: i16 = RX;
    pub const POS: i16 = RX + 1;
    pub const FIELD: i16 = RX + 2;
    pub const BITS: i16 = RX + 3;
    /// The status code.
    pub const CODE: i16 = RX + 4;
    pub const COUNT: i16 = RX + 8;
    pub const REMAINING: i16 = RX + 12;
    pub const CUR: i16 = RX + 20;
    pub const OFF: i16 = RX + 28;
    pub const WIN: i16 = RX + 32;
    /// One past the last `rx` byte.
    pub const END: i16 = RX + 36;

    /// `bits`: this response has a Content-Length (its value in
    /// `remaining`).
    pub const CL_SEEN: i32 = 1;
    /// `bits`: this response has a Transfer-Encoding.
    pub const TE_SEEN: i32 = 2;
    /// `bits`: its last transfer coding is `chunked`.
    pub const TE_CHUNKED: i32 = 4;
    /// `bits`: the field lines are the chunked body's trailers.
    pub const TRAILERS: i32 = 8;
    /// `field`: the name may still be `content-length`.
    pub const CAND_CONTENT_LENGTH: i32 = 1;
    /// `field`: the name may still be `transfer-encoding`.
    pub const CAND_TRANSFER_ENCODING: i32 = 2;
}

/// The main program's stack: the key at r10 - 48, the context the
/// callback reads below it (`r10 + CTX + field`).
const KEY_AT: i16 = -48;
const KEY_SLOTS: i16 = 6;
/// The context's fields: the skb, the record, `skb->len`, the constant
/// strings the framer compares with, the scratch window.
const C_SKB: i16 = 0;
const C_REC: i16 = 8;
const C_LEN: i16 = 16;
/// `"HTTP/1."`, 8 bytes (read at `pos & 7`).
const C_HTTP: i16 = 24;
/// `"chunked"`, 8 bytes.
const C_CHUNKED: i16 = 32;
/// `"content-length"` and `"transfer-encoding"`, 32 bytes each, zero
/// padded (read at `pos & 31`; a zero never equals a name byte).
const C_NAME_CL: i16 = 40;
const C_NAME_TE: i16 = 72;
const C_SCRATCH: i16 = 104;
const CTX_BYTES: i16 = C_SCRATCH + WINDOW as i16;
const CTX: i16 = KEY_AT - CTX_BYTES;

const HTTP_PREFIX: &[u8; 7] = b"HTTP/1.";
const CHUNKED: &[u8; 7] = b"chunked";
const NAME_CONTENT_LENGTH: &[u8] = b"content-length";
const NAME_TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// Offsets of the fields read in `struct __sk_buff` (uapi/linux/bpf.h);
/// the socket fields are the ones `sk_msg_md` and `bpf_sock_ops` have,
/// loaded by the kernel from `skb->sk` the same way, so the key is the
/// same bytes (docs/receive-side-research.md, A1).
pub mod sk_buff {
    pub const LEN: i16 = 0;
    pub const FAMILY: i16 = 88;
    pub const REMOTE_IP4: i16 = 92;
    pub const LOCAL_IP4: i16 = 96;
    pub const REMOTE_IP6: i16 = 100;
    pub const LOCAL_IP6: i16 = 116;
    /// Network order in the upper half, as in the other contexts.
    pub const REMOTE_PORT: i16 = 132;
    pub const LOCAL_PORT: i16 = 136;
}

const CR: i32 = b'\r' as i32;
const LF: i32 = b'\n' as i32;
const SP: i32 = b' ' as i32;
const HTAB: i32 = b'\t' as i32;

/// The record map (`maps::PEERS`), as every object declares it.
pub fn peer_map() -> l7c_bpf::elf::MapDef {
    use l7c_bpf::elf::{DataType, MapDef};
    MapDef::hash(abi::maps::PEERS, DataType::Bytes(abi::sock_key::SIZE as u32), DataType::Bytes(peer::SIZE), 65_536)
}

/// The receive verdict (module docs).
pub fn program() -> Program {
    // Cannot fail: the program is fixed (no input reaches it), its labels
    // are all defined and its map name is valid; the unit tests assemble
    // it.
    #[allow(clippy::expect_used)]
    build().expect("the fixed receive verdict assembles")
}

/// The bitmap of `tchar` (RFC 9110 §5.6.2) over bytes 0..128, as two
/// words (`abi::http::is_tchar`, the one definition).
fn tchar_words() -> [i64; 2] {
    let mut words = [0u64; 2];
    for byte in 0u8..128 {
        if abi::http::is_tchar(byte) {
            words[usize::from(byte / 64)] |= 1 << (byte % 64);
        }
    }
    words.map(|w| w as i64)
}

/// `bytes`, zero padded, as little-endian 8-byte words.
fn words_of(bytes: &[u8], words: usize) -> Vec<i64> {
    let mut padded = bytes.to_vec();
    padded.resize(words * 8, 0);
    padded.chunks(8).map(|w| i64::from_le_bytes(w.try_into().unwrap_or([0; 8]))).collect()
}

/// Writes `bytes` (zero padded to `words` words) at `r10 + at`.
fn store_string(a: &mut Asm, at: i16, bytes: &[u8], words: usize) {
    for (i, word) in words_of(bytes, words).into_iter().enumerate() {
        a.ld_imm64(R1, word);
        a.stxdw(R10, at + 8 * i as i16, R1);
    }
}

fn build() -> Result<Program, AsmError> {
    let mut a = Asm::new();
    a.note("l7c receive verdict (abi/src/receive.rs): frame the server's responses into l7_peer; always SK_PASS");
    a.mov64(R6, R1).comment("r6 = struct __sk_buff *");

    a.note("the connection's l7_sock_key at r10 - 48, zeroed");
    for slot in 0..KEY_SLOTS {
        a.stdw(R10, KEY_AT + slot * 8, 0);
    }
    let key = |field: usize| KEY_AT + field as i16;
    a.ldxw(R1, R6, sk_buff::FAMILY).comment("skb->family");
    a.stxw(R10, key(abi::sock_key::FAMILY), R1);
    a.jeq(R1, abi::sock_key::AF_INET6 as i32, "ipv6");
    a.jne(R1, abi::sock_key::AF_INET as i32, "pass").comment("neither IPv4 nor IPv6: not ours");
    a.ldxw(R1, R6, sk_buff::REMOTE_IP4).comment("skb->remote_ip4");
    a.stxw(R10, key(abi::sock_key::REMOTE_IP), R1);
    a.ldxw(R1, R6, sk_buff::LOCAL_IP4).comment("skb->local_ip4");
    a.stxw(R10, key(abi::sock_key::LOCAL_IP), R1);
    a.ja("ports");
    a.label("ipv6");
    for word in 0..4i16 {
        a.ldxw(R1, R6, sk_buff::REMOTE_IP6 + 4 * word).comment(format!("skb->remote_ip6[{word}]"));
        a.stxw(R10, key(abi::sock_key::REMOTE_IP) + 4 * word, R1);
    }
    for word in 0..4i16 {
        a.ldxw(R1, R6, sk_buff::LOCAL_IP6 + 4 * word).comment(format!("skb->local_ip6[{word}]"));
        a.stxw(R10, key(abi::sock_key::LOCAL_IP) + 4 * word, R1);
    }
    a.label("ports");
    a.ldxw(R1, R6, sk_buff::REMOTE_PORT).comment("skb->remote_port, copied verbatim");
    a.stxw(R10, key(abi::sock_key::REMOTE_PORT), R1);
    a.ldxw(R1, R6, sk_buff::LOCAL_PORT).comment("skb->local_port, copied verbatim");
    a.stxw(R10, key(abi::sock_key::LOCAL_PORT), R1);

    a.ld_map(R1, abi::maps::PEERS);
    a.mov64(R2, R10).add64(R2, i32::from(KEY_AT));
    a.call(Helper::MapLookupElem).comment("the connection's l7_peer record");
    a.jeq(R0, 0, "pass").comment("no record: not ours to frame");
    a.mov64(R7, R0).comment("r7 = record");
    a.ldxw(R1, R7, peer::FLAGS);
    a.jset(R1, (peer::LOST | peer::SWITCH_ACCEPTED) as i32, "pass").comment("lost or switched: nothing to frame");
    a.ldxw(R8, R6, sk_buff::LEN).comment("r8 = skb->len");
    a.jeq(R8, 0, "pass");

    a.note("the callback's context");
    a.stxdw(R10, CTX + C_SKB, R6);
    a.stxdw(R10, CTX + C_REC, R7);
    a.stxdw(R10, CTX + C_LEN, R8);
    store_string(&mut a, CTX + C_HTTP, HTTP_PREFIX, 1);
    store_string(&mut a, CTX + C_CHUNKED, CHUNKED, 1);
    store_string(&mut a, CTX + C_NAME_CL, NAME_CONTENT_LENGTH, 4);
    store_string(&mut a, CTX + C_NAME_TE, NAME_TRANSFER_ENCODING, 4);
    a.note("the scratch, zeroed: the verifier sees it initialised on every path");
    for slot in 0..(WINDOW as i16 / 8) {
        a.stdw(R10, CTX + C_SCRATCH + 8 * slot, 0);
    }
    a.stw(R7, rx::OFF, 0).comment("rx.off = 0");
    a.stxw(R7, rx::WIN, R8).comment("rx.win = len: the window is empty");

    a.mov64(R1, R8).add64(R1, 1).comment("steps: at most len + 1");
    a.jle(R1, MAX_STEPS, "steps");
    a.mov64(R1, MAX_STEPS);
    a.label("steps");
    a.ld_func(R2, STEP_NAME);
    a.mov64(R3, R10).add64(R3, i32::from(CTX));
    a.mov64(R4, 0);
    a.call(Helper::Loop).comment("bpf_loop(steps, l7c_rx_step, &ctx, 0)");

    a.note("every byte framed, or the framing given up");
    a.ldxw(R1, R7, peer::FLAGS);
    a.jset(R1, (peer::LOST | peer::SWITCH_ACCEPTED) as i32, "pass");
    a.ldxw(R2, R7, rx::OFF);
    a.jge(R2, R8, "pass");
    a.or64(R1, peer::LOST as i32).comment("bytes left unframed (never expected): lost");
    a.stxw(R7, peer::FLAGS, R1);
    a.label("pass");
    a.mov64(R0, verdict::PASS).comment("SK_PASS, always");
    a.exit();

    step(&mut a);
    a.finish()
}

/// `*(u8 *)(record + rx.state) = state`.
fn set_state(a: &mut Asm, state: u8) {
    a.stb(R8, rx::STATE, i32::from(state));
}

/// Jumps to `fail` unless the byte in `byte` is a `tchar`; clobbers r4
/// and r5.
fn require_tchar(a: &mut Asm, byte: Reg, fail: &str) {
    let [low, high] = tchar_words();
    let high_half = a.fresh_label("tchar_high");
    let test = a.fresh_label("tchar_test");
    a.jge(byte, 128, fail);
    a.mov64(R5, byte).and64(R5, 63);
    a.jge(byte, 64, high_half.clone());
    a.ld_imm64(R4, low);
    a.ja(test.clone());
    a.label(high_half);
    a.ld_imm64(R4, high);
    a.label(test);
    a.rsh64(R4, R5).and64(R4, 1).comment("tchar bit");
    a.jeq(R4, 0, fail);
}

/// Jumps to `fail` when the byte is a control character other than HTAB
/// (what a reason phrase, a field value or a chunk extension may not
/// hold: RFC 9112 §4, RFC 9110 §5.5).
fn refuse_ctl(a: &mut Asm, byte: Reg, fail: &str) {
    let fine = a.fresh_label("not_ctl");
    a.jeq(byte, HTAB, fine.clone());
    a.jlt(byte, 0x20, fail);
    a.jeq(byte, 0x7f, fail);
    a.label(fine);
}

/// `r1 = kinds[answered % RING]`: the kind of the request being
/// answered. Clobbers r3.
fn kind_answered(a: &mut Asm) {
    a.ldxw(R1, R8, peer::ANSWERED);
    a.and64(R1, peer::RING as i32 - 1);
    a.mov64(R3, R8).add64(R3, R1);
    a.ldxb(R1, R3, peer::KINDS).comment("kinds[answered % 16]");
}

/// The `bpf_loop` callback: one step of the framer, one byte (or one
/// skipped body span). Registers: r9 = context, r8 = record, r7 = the
/// offset of the byte in the skb, r6 = the byte. Returns 0 to go on, 1 at
/// the end of the skb or once framing stops.
fn step(a: &mut Asm) {
    use rx::*;
    use state::*;
    a.function(STEP_NAME);
    a.mov64(R9, R2).comment("r9 = ctx");
    a.ldxdw(R8, R9, C_REC).comment("r8 = record");
    a.ldxw(R7, R8, OFF).comment("r7 = rx.off");
    a.ldxdw(R1, R9, C_LEN).comment("r1 = skb->len");
    a.jge(R7, R1, "stop").comment("the skb is framed");
    a.ldxb(R2, R8, STATE).comment("r2 = rx.state");
    a.jeq(R2, i32::from(BODY), "skip");
    a.jeq(R2, i32::from(CHUNK_DATA), "skip");

    a.note("the byte at rx.off, from the window [win, win + min(256, len - win)) of the scratch");
    a.ldxw(R3, R8, WIN);
    a.mov64(R4, R7).sub64(R4, R3).comment("r4 = off - win");
    a.mov64(R5, R1).sub64(R5, R3);
    a.jle(R5, WINDOW, "window_len");
    a.mov64(R5, WINDOW);
    a.label("window_len");
    a.jlt(R4, R5, "have_byte");
    a.stxw(R8, WIN, R7).comment("a new window at off");
    a.mov64(R4, R1).sub64(R4, R7);
    a.jle(R4, WINDOW, "load_len");
    a.mov64(R4, WINDOW);
    a.label("load_len");
    a.jlt(R4, 1, "lost").comment("off < len: never");
    a.ldxdw(R1, R9, C_SKB);
    a.mov64(R2, R7);
    a.mov64(R3, R9).add64(R3, i32::from(C_SCRATCH));
    a.call(Helper::SkbLoadBytes).comment("skb_load_bytes(skb, off, scratch, n)");
    a.jne(R0, 0, "lost");
    a.mov64(R4, 0);
    a.label("have_byte");
    a.and64(R4, WINDOW - 1);
    a.mov64(R3, R9).add64(R3, R4);
    a.ldxb(R6, R3, C_SCRATCH).comment("r6 = the byte");

    a.note("count the byte against its section's limit");
    a.ldxb(R2, R8, STATE);
    a.ldxw(R3, R8, COUNT).add64(R3, 1).stxw(R8, COUNT, R3);
    a.mov64(R4, MAX_HEAD_BYTES as i32);
    a.jlt(R2, i32::from(CHUNK_SIZE), "limit");
    a.jgt(R2, i32::from(CHUNK_SIZE_LF), "limit");
    a.mov64(R4, MAX_CHUNK_LINE as i32);
    a.label("limit");
    a.jgt(R3, R4, "lost").comment("a head, trailer section or chunk-size line too long");

    // The states, the most frequent first.
    for (state, label) in [
        (VALUE_OTHER, "value_other"),
        (NAME, "name"),
        (REASON, "reason"),
        (FIELD_START, "field_start"),
        (FIELD_LF, "field_lf"),
        (STATUS, "status"),
        (STATUS_LF, "status_lf"),
        (VALUE_CONTENT_LENGTH, "value_content_length"),
        (VALUE_TRANSFER_ENCODING, "value_transfer_encoding"),
        (HEAD_END_LF, "head_end_lf"),
        (CHUNK_SIZE, "chunk_size"),
        (CHUNK_EXT, "chunk_ext"),
        (CHUNK_SIZE_LF, "chunk_size_lf"),
        (CHUNK_DATA_CR, "chunk_data_cr"),
        (CHUNK_DATA_LF, "chunk_data_lf"),
    ] {
        a.jeq(R2, i32::from(state), label);
    }
    a.ja("lost").comment("no such state");

    // --- the status line ---
    a.label("status");
    a.ldxb(R3, R8, POS);
    a.jne(R3, 0, "status_pos");
    a.note("a response starts: somebody must be owed one, and its kind still be in the ring");
    a.ldxw(R4, R8, peer::FORWARDED).ldxw(R5, R8, peer::ANSWERED);
    a.sub32(R4, R5);
    a.jeq32(R4, 0, "lost").comment("nobody asked (a server speaking first, an unsolicited 408)");
    a.jgt32(R4, peer::RING as i32, "lost").comment("more owed than the ring holds");
    a.stb(R8, FIELD, 0).stb(R8, BITS, 0).stw(R8, CODE, 0);
    a.stdw(R8, REMAINING, 0).stdw(R8, CUR, 0);
    a.label("status_pos");
    a.jge(R3, HTTP_PREFIX.len() as i32, "status_version");
    a.mov64(R4, R9).add64(R4, R3);
    a.ldxb(R4, R4, C_HTTP).comment("\"HTTP/1.\"[pos]");
    a.jne(R6, R4, "lost");
    a.ja("status_next");
    a.label("status_version");
    a.jne(R3, 7, "status_sp");
    a.mov64(R4, R6).sub64(R4, i32::from(b'0'));
    a.jgt(R4, 9, "lost").comment("HTTP/1.x: x a digit");
    a.ja("status_next");
    a.label("status_sp");
    a.jne(R3, 8, "status_code");
    a.jne(R6, SP, "lost");
    a.ja("status_next");
    a.label("status_code");
    a.jeq(R3, 12, "status_code_end");
    a.mov64(R4, R6).sub64(R4, i32::from(b'0'));
    a.jgt(R4, 9, "lost");
    a.jne(R3, 9, "status_digit");
    a.jeq(R4, 0, "lost").comment("a status class 1..5");
    a.jgt(R4, 5, "lost");
    a.label("status_digit");
    a.ldxw(R5, R8, CODE).mul64(R5, 10).add64(R5, R4).stxw(R8, CODE, R5);
    a.label("status_next");
    a.add64(R3, 1).stxb(R8, POS, R3);
    a.ja("consume");
    a.label("status_code_end");
    a.jeq(R6, CR, "status_cr");
    a.jne(R6, SP, "lost");
    set_state(a, REASON);
    a.ja("consume");

    a.label("reason");
    a.jeq(R6, CR, "status_cr");
    refuse_ctl(a, R6, "lost");
    a.ja("consume");
    a.label("status_cr");
    set_state(a, STATUS_LF);
    a.ja("consume");

    a.label("status_lf");
    a.jne(R6, LF, "lost");
    a.note("the end of the status line: consent to a switch, or its refusal");
    kind_answered(a);
    a.ldxw(R2, R8, CODE);
    a.jne(R2, 101, "not_101");
    a.jeq(R1, i32::from(peer::KIND_UPGRADE), "accept");
    a.ja("lost").comment("101 to a request that asked for no upgrade");
    a.label("not_101");
    a.jlt(R2, 200, "fields").comment("interim: the request is still owed");
    a.jeq(R1, i32::from(peer::KIND_UPGRADE), "refused");
    a.jne(R1, i32::from(peer::KIND_CONNECT), "fields");
    a.jlt(R2, 300, "accept").comment("2xx to CONNECT");
    a.label("refused");
    a.ldxw(R3, R8, peer::FLAGS).or64(R3, peer::SWITCH_REFUSED as i32).stxw(R8, peer::FLAGS, R3);
    a.label("fields");
    set_state(a, FIELD_START);
    a.ja("consume");

    // --- field lines (the head's, and the trailers') ---
    a.label("field_start");
    a.jeq(R6, CR, "blank_line");
    require_tchar(a, R6, "lost");
    set_state(a, NAME);
    a.stb(R8, POS, 0);
    a.ldxb(R2, R8, BITS);
    a.mov64(R1, CAND_CONTENT_LENGTH | CAND_TRANSFER_ENCODING);
    a.jset(R2, TRAILERS, "trailer_name");
    a.ja("name_candidates");
    a.label("trailer_name");
    a.mov64(R1, 0).comment("trailer fields frame nothing");
    a.label("name_candidates");
    a.stxb(R8, FIELD, R1);
    a.ja("name_char");
    a.label("blank_line");
    set_state(a, HEAD_END_LF);
    a.ja("consume");

    a.label("name");
    a.jeq(R6, i32::from(b':'), "name_end");
    require_tchar(a, R6, "lost");
    a.label("name_char");
    a.ldxb(R1, R8, FIELD);
    a.jeq(R1, 0, "consume").comment("neither name any more");
    a.ldxb(R2, R8, POS);
    a.mov64(R3, R6).or64(R3, 0x20).comment("lower case (r6 is a tchar)");
    a.mov64(R4, R2).and64(R4, 31);
    a.mov64(R5, R9).add64(R5, R4);
    a.ldxb(R4, R5, C_NAME_CL);
    a.jeq(R4, R3, "name_cl_kept");
    a.and64(R1, !CAND_CONTENT_LENGTH);
    a.label("name_cl_kept");
    a.ldxb(R4, R5, C_NAME_TE);
    a.jeq(R4, R3, "name_te_kept");
    a.and64(R1, !CAND_TRANSFER_ENCODING);
    a.label("name_te_kept");
    a.stxb(R8, FIELD, R1);
    a.add64(R2, 1).stxb(R8, POS, R2);
    a.ja("consume");

    a.label("name_end");
    a.ldxb(R1, R8, FIELD);
    a.ldxb(R2, R8, POS);
    a.stb(R8, POS, 0);
    a.jset(R1, CAND_CONTENT_LENGTH, "maybe_content_length");
    a.jset(R1, CAND_TRANSFER_ENCODING, "maybe_transfer_encoding");
    a.ja("other_value");
    a.label("maybe_content_length");
    a.jne(R2, NAME_CONTENT_LENGTH.len() as i32, "other_value");
    a.stdw(R8, CUR, 0);
    set_state(a, VALUE_CONTENT_LENGTH);
    a.ja("consume");
    a.label("maybe_transfer_encoding");
    a.jne(R2, NAME_TRANSFER_ENCODING.len() as i32, "other_value");
    a.ldxb(R3, R8, BITS);
    a.jset(R3, TE_CHUNKED, "lost").comment("a coding after chunked");
    set_state(a, VALUE_TRANSFER_ENCODING);
    a.ja("consume");
    a.label("other_value");
    set_state(a, VALUE_OTHER);
    a.ja("consume");

    a.label("value_other");
    a.jeq(R6, CR, "value_cr");
    refuse_ctl(a, R6, "lost");
    a.ja("consume");
    a.label("value_cr");
    set_state(a, FIELD_LF);
    a.ja("consume");

    a.label("field_lf");
    a.jne(R6, LF, "lost");
    set_state(a, FIELD_START);
    a.ja("consume");

    a.note("Content-Length: OWS digits OWS (pos 0 before, 1 in, 2 after the digits)");
    a.label("value_content_length");
    a.ldxb(R2, R8, POS);
    a.mov64(R3, R6).sub64(R3, i32::from(b'0'));
    a.jgt(R3, 9, "cl_not_digit");
    a.jeq(R2, 2, "lost").comment("digits after blanks");
    a.ldxdw(R4, R8, CUR).mul64(R4, 10).add64(R4, R3);
    a.mov64(R5, R4).rsh64(R5, CONTENT_LENGTH_BITS);
    a.jne(R5, 0, "lost").comment("overflow");
    a.stxdw(R8, CUR, R4);
    a.stb(R8, POS, 1);
    a.ja("consume");
    a.label("cl_not_digit");
    a.jeq(R6, SP, "cl_blank");
    a.jeq(R6, HTAB, "cl_blank");
    a.jne(R6, CR, "lost");
    a.jeq(R2, 0, "lost").comment("an empty Content-Length");
    a.ldxdw(R4, R8, CUR);
    a.ldxb(R5, R8, BITS);
    a.jset(R5, CL_SEEN, "cl_again");
    a.ja("cl_first");
    a.label("cl_again");
    a.ldxdw(R3, R8, REMAINING);
    a.jne(R3, R4, "lost").comment("two different Content-Lengths");
    a.label("cl_first");
    a.stxdw(R8, REMAINING, R4);
    a.or64(R5, CL_SEEN).stxb(R8, BITS, R5);
    set_state(a, FIELD_LF);
    a.ja("consume");
    a.label("cl_blank");
    a.jne(R2, 1, "consume");
    a.stb(R8, POS, 2);
    a.ja("consume");

    a.note("Transfer-Encoding: is the last coding `chunked`? (pos: letters of it matched, 8 another token)");
    a.label("value_transfer_encoding");
    a.ldxb(R2, R8, POS);
    a.jeq(R6, CR, "te_end");
    a.jeq(R6, i32::from(b','), "te_comma");
    a.jeq(R6, SP, "te_blank");
    a.jeq(R6, HTAB, "te_blank");
    refuse_ctl(a, R6, "lost");
    a.jge(R2, CHUNKED.len() as i32, "te_other");
    a.mov64(R3, R9).add64(R3, R2);
    a.ldxb(R3, R3, C_CHUNKED).comment("\"chunked\"[pos]");
    a.mov64(R4, R6).or64(R4, 0x20);
    a.jne(R3, R4, "te_other");
    a.add64(R2, 1).stxb(R8, POS, R2);
    a.ja("consume");
    a.label("te_other");
    a.stb(R8, POS, 8);
    a.ja("consume");
    a.label("te_blank");
    a.jeq(R2, 0, "consume").comment("before a token");
    a.jge(R2, CHUNKED.len() as i32, "consume").comment("after one");
    a.ja("te_other").comment("inside `chunked`");
    a.label("te_comma");
    a.jeq(R2, CHUNKED.len() as i32, "lost").comment("a coding after chunked");
    a.stb(R8, POS, 0);
    a.ja("consume");
    a.label("te_end");
    a.ldxb(R3, R8, BITS);
    a.or64(R3, TE_SEEN).and64(R3, !TE_CHUNKED);
    a.jne(R2, CHUNKED.len() as i32, "te_store");
    a.or64(R3, TE_CHUNKED);
    a.label("te_store");
    a.stxb(R8, BITS, R3);
    set_state(a, FIELD_LF);
    a.ja("consume");

    a.note("the end of the head (or of the trailers): how the body is framed");
    a.label("head_end_lf");
    a.jne(R6, LF, "lost");
    a.ldxb(R5, R8, BITS);
    a.jset(R5, TRAILERS, "response_end");
    a.ldxw(R2, R8, CODE);
    a.jlt(R2, 200, "next_response").comment("interim: the same request is still owed");
    kind_answered(a);
    a.jeq(R1, i32::from(peer::KIND_HEAD), "response_end").comment("no body: HEAD, 204, 304");
    a.jeq(R2, 204, "response_end");
    a.jeq(R2, 304, "response_end");
    a.jset(R5, TE_SEEN, "head_chunked");
    a.jset(R5, CL_SEEN, "head_length");
    a.ja("lost").comment("close-delimited: the end is the connection's");
    a.label("head_chunked");
    a.jset(R5, CL_SEEN, "lost").comment("Transfer-Encoding and Content-Length");
    a.jset(R5, TE_CHUNKED, "chunk_line");
    a.ja("lost").comment("a transfer coding other than chunked last");
    a.label("head_length");
    a.ldxdw(R3, R8, REMAINING);
    a.jeq(R3, 0, "response_end");
    set_state(a, BODY);
    a.ja("consume");

    // --- chunked bodies ---
    a.label("chunk_size");
    a.ldxb(R2, R8, POS);
    a.mov64(R3, R6).sub64(R3, i32::from(b'0'));
    a.jle(R3, 9, "hex_digit");
    a.mov64(R3, R6).or64(R3, 0x20).sub64(R3, i32::from(b'a'));
    a.jgt(R3, 5, "chunk_not_hex");
    a.add64(R3, 10);
    a.label("hex_digit");
    a.jge(R2, MAX_CHUNK_SIZE_DIGITS as i32, "lost").comment("too many digits");
    a.ldxdw(R4, R8, CUR).lsh64(R4, 4).or64(R4, R3).stxdw(R8, CUR, R4);
    a.add64(R2, 1).stxb(R8, POS, R2);
    a.ja("consume");
    a.label("chunk_not_hex");
    a.jeq(R2, 0, "lost").comment("no digits");
    a.jeq(R6, CR, "chunk_cr");
    a.jeq(R6, i32::from(b';'), "chunk_ext_start");
    a.jeq(R6, SP, "chunk_ext_start");
    a.jeq(R6, HTAB, "chunk_ext_start");
    a.ja("lost");
    a.label("chunk_ext_start");
    set_state(a, CHUNK_EXT);
    a.ja("consume");

    a.label("chunk_ext");
    a.jeq(R6, CR, "chunk_cr");
    refuse_ctl(a, R6, "lost");
    a.ja("consume");
    a.label("chunk_cr");
    set_state(a, CHUNK_SIZE_LF);
    a.ja("consume");

    a.label("chunk_size_lf");
    a.jne(R6, LF, "lost");
    a.ldxdw(R3, R8, CUR);
    a.jeq(R3, 0, "last_chunk");
    a.stxdw(R8, REMAINING, R3);
    set_state(a, CHUNK_DATA);
    a.ja("consume");
    a.label("last_chunk");
    a.ldxb(R3, R8, BITS).or64(R3, TRAILERS).stxb(R8, BITS, R3);
    a.stw(R8, COUNT, 0).comment("the trailer section has its own limit");
    set_state(a, FIELD_START);
    a.ja("consume");

    a.label("chunk_data_cr");
    a.jne(R6, CR, "lost");
    set_state(a, CHUNK_DATA_LF);
    a.ja("consume");
    a.label("chunk_data_lf");
    a.jne(R6, LF, "lost");
    a.label("chunk_line");
    set_state(a, CHUNK_SIZE);
    a.stb(R8, POS, 0).stdw(R8, CUR, 0).stw(R8, COUNT, 0);
    a.ja("consume");

    // --- skipped bodies (r1 = len, r2 = state, r7 = off) ---
    a.label("skip");
    a.ldxdw(R3, R8, REMAINING);
    a.mov64(R4, R1).sub64(R4, R7).comment("r4 = bytes left in the skb");
    a.jle(R3, R4, "skip_ends");
    a.sub64(R3, R4).stxdw(R8, REMAINING, R3).comment("the body goes on in a later skb");
    a.stxw(R8, OFF, R1);
    a.mov64(R0, 0);
    a.exit();
    a.label("skip_ends");
    a.add64(R7, R3).stxw(R8, OFF, R7);
    a.stdw(R8, REMAINING, 0);
    a.jeq(R2, i32::from(CHUNK_DATA), "chunk_data_ends");
    a.ldxw(R1, R8, peer::ANSWERED).add64(R1, 1).stxw(R8, peer::ANSWERED, R1).comment("a final response ended");
    set_state(a, STATUS);
    a.stb(R8, POS, 0).stw(R8, COUNT, 0);
    a.mov64(R0, 0);
    a.exit();
    a.label("chunk_data_ends");
    set_state(a, CHUNK_DATA_CR);
    a.mov64(R0, 0);
    a.exit();

    // --- tails ---
    a.label("response_end");
    a.ldxw(R1, R8, peer::ANSWERED).add64(R1, 1).stxw(R8, peer::ANSWERED, R1).comment("a final response ended");
    a.label("next_response");
    set_state(a, STATUS);
    a.stb(R8, POS, 0).stw(R8, COUNT, 0);
    a.label("consume");
    a.add64(R7, 1).stxw(R8, OFF, R7);
    a.mov64(R0, 0);
    a.exit();

    a.label("accept");
    a.ldxw(R1, R8, peer::FLAGS).or64(R1, peer::SWITCH_ACCEPTED as i32).stxw(R8, peer::FLAGS, R1);
    a.comment("the server agreed to the switch: nothing more is HTTP");
    a.mov64(R0, 1);
    a.exit();

    a.label("lost");
    a.ldxw(R1, R8, peer::FLAGS).or64(R1, peer::LOST as i32).stxw(R8, peer::FLAGS, R1);
    a.comment("framing lost, for good");
    a.label("stop");
    a.mov64(R0, 1);
    a.exit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7c_bpf::bpf::{Insn, Operand};

    /// The immediate moved into r0 right before each `exit` of `range`.
    fn returns(program: &Program, range: std::ops::Range<usize>) -> Vec<Option<i32>> {
        let insns = &program.insns()[range];
        insns
            .iter()
            .enumerate()
            .filter(|(_, insn)| matches!(insn, Insn::Exit))
            .map(|(i, _)| match i.checked_sub(1).and_then(|p| insns.get(p)) {
                Some(Insn::Alu { dst: R0, src: Operand::Imm(imm), .. }) => Some(*imm),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn assembles_with_one_callback_and_reads_only_the_record_map() {
        let program = build().expect("the receive verdict assembles");
        assert_eq!(program, super::program());
        assert_eq!(program.maps(), vec![abi::maps::PEERS]);
        let functions: Vec<&str> = program.functions().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(functions, vec![STEP_NAME]);
    }

    #[test]
    fn the_verdict_is_always_pass_and_the_callback_returns_zero_or_one() {
        let program = program();
        let ranges = program.function_ranges();
        let main = returns(&program, ranges[0].clone());
        assert!(!main.is_empty() && main.iter().all(|r| *r == Some(verdict::PASS)), "{main:?}");
        let step = returns(&program, ranges[1].clone());
        assert!(step.iter().all(|r| matches!(r, Some(0 | 1))), "{step:?}");
        assert!(step.contains(&Some(0)) && step.contains(&Some(1)));
        // Never a helper that changes or pulls the skb.
        assert!(program.insns().iter().all(|insn| !matches!(insn, Insn::Call { helper } if *helper != Helper::MapLookupElem
            && *helper != Helper::Loop
            && *helper != Helper::SkbLoadBytes)));
    }

    #[test]
    fn the_tchar_bitmap_is_the_vocabularys() {
        let [low, high] = tchar_words().map(|w| w as u64);
        for byte in 0u8..=255 {
            let bit = match byte {
                0..=63 => low >> byte & 1 == 1,
                64..=127 => high >> (byte - 64) & 1 == 1,
                _ => false,
            };
            assert_eq!(bit, abi::http::is_tchar(byte), "byte {byte}");
        }
    }

    #[test]
    fn the_rx_words_fit_the_record_and_the_context_fits_the_stack() {
        let fields = [
            (rx::STATE, 1),
            (rx::POS, 1),
            (rx::FIELD, 1),
            (rx::BITS, 1),
            (rx::CODE, 4),
            (rx::COUNT, 4),
            (rx::REMAINING, 8),
            (rx::CUR, 8),
            (rx::OFF, 4),
            (rx::WIN, 4),
        ];
        let mut end = peer::RX;
        for (at, size) in fields {
            assert_eq!(at, end, "the words are packed in order");
            assert_eq!(at % size, 0, "aligned");
            end += size;
        }
        assert_eq!(end, rx::END);
        assert_eq!(rx::END as usize, peer::RX as usize + peer::RX_BYTES);
        const { assert!(CTX >= -512 && CTX % 8 == 0, "the stack holds 512 bytes") };
        const { assert!(C_NAME_CL + 32 <= C_NAME_TE && C_NAME_TE + 32 <= C_SCRATCH) };
        assert!(NAME_TRANSFER_ENCODING.len() < 32 && NAME_CONTENT_LENGTH.len() < 32);
        assert!((WINDOW as u32).is_power_of_two());
        assert_eq!(words_of(b"HTTP/1.", 1), vec![i64::from_le_bytes(*b"HTTP/1.\0")]);
    }

    #[test]
    fn the_states_bounded_by_the_chunk_line_limit_are_contiguous() {
        use state::*;
        assert_eq!((CHUNK_EXT, CHUNK_SIZE_LF), (CHUNK_SIZE + 1, CHUNK_SIZE + 2));
        let states = [
            STATUS,
            REASON,
            STATUS_LF,
            FIELD_START,
            NAME,
            VALUE_OTHER,
            VALUE_CONTENT_LENGTH,
            VALUE_TRANSFER_ENCODING,
            FIELD_LF,
            HEAD_END_LF,
            BODY,
            CHUNK_SIZE,
            CHUNK_EXT,
            CHUNK_SIZE_LF,
            CHUNK_DATA,
            CHUNK_DATA_CR,
            CHUNK_DATA_LF,
        ];
        assert!(states.iter().enumerate().all(|(i, s)| usize::from(*s) == i));
    }

    #[test]
    fn listing_snapshot() {
        insta::assert_snapshot!(program().listing());
    }
}
