//! The checks. Each builds its own loopback connections from a fresh TLS
//! handshake and reports `Ok(evidence)`, a failure, or a skip with the
//! reason.
//!
//! Two groups:
//! - mechanics, with hand-assembled programs (`programs.rs`): what the
//!   kernel does with kTLS on a socket in a socket map. These run now.
//! - policy, with the compiled example policy (`policy.rs`): what a user
//!   of `l7c` gets. Skipped, with the code generator's reason, while
//!   `l7c compile` refuses the policy.

use std::cell::OnceCell;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use l7c_runtime::{Errno, KernelProgram};

use crate::ktls::{self, Direction, RecordOpener, RecordSealer};
use crate::policy::{self, Compiled, Loaded, GOVERNED_PORT};
use crate::programs;
use crate::tls::{self, Configs, Session};

/// Why a check did not pass.
#[derive(Debug)]
pub enum Failure {
    Fail(String),
    Skip(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Fail(message)
    }
}

pub type CheckResult = Result<String, Failure>;

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(Failure::Fail(format!($($message)+)));
        }
    };
}

/// What the kernel under test is expected to do with kTLS on an enrolled
/// socket (the runner knows which kernel it booted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Debian 6.1.187: map → `TCP_ULP` → `TLS_TX` works.
    Accepts,
    /// Debian 6.1.192 (stable 6.1.189+): `TLS_TX` fails with `EINVAL`.
    Refuses,
}

/// Everything the checks share.
pub struct Bed {
    pub configs: Configs,
    payments: OnceCell<Result<Compiled, String>>,
    fallback: OnceCell<Result<Compiled, String>>,
}

impl Bed {
    pub fn new(configs: Configs) -> Bed {
        Bed { configs, payments: OnceCell::new(), fallback: OnceCell::new() }
    }

    /// `examples/payments.l7`, compiled on first use (in the guest, on an
    /// emulated CPU: only the kernels whose checks need it pay for it).
    fn payments(&self) -> &Result<Compiled, String> {
        self.payments.get_or_init(|| policy::compile(policy::PAYMENTS))
    }

    /// `tests/ktls/tls-fallback.l7`, compiled on first use.
    fn fallback(&self) -> &Result<Compiled, String> {
        self.fallback.get_or_init(|| policy::compile(policy::TLS_FALLBACK))
    }
}

/// How long a receiver waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(600);

/// A check: its name (the function's, in kebab case) and what it does.
pub struct Check {
    pub name: String,
    pub run: fn(&Bed) -> CheckResult,
}

/// `[Check]`s named after their functions.
macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        [$(Check { name: stringify!($check).replace('_', "-"), run: $check }),*]
    };
}

/// The checks for a kernel that is expected to behave as `expect` says.
pub fn for_kernel(expect: Expect) -> Vec<Check> {
    let mut checks = Vec::from(checks![
        ktls_handshake_key_handoff,
        sockmap_after_ktls_refused,
        tls_ulp_without_keys_bypasses_sk_msg,
        cgroup_setsockopt_keeps_the_ulp_off,
        policy_handshake_enrolled_at_connect_is_opaque,
        deny_answers_and_switches_on_plain_tcp,
        many_policies_load_under_the_verifier,
    ]);
    match expect {
        Expect::Accepts => checks.extend(checks![
            ktls_on_enrolled_socket,
            ciphertext_only_on_the_wire,
            denied_send_eacces_no_record,
            verdict_per_record,
            apply_bytes_splits_a_record,
            deny_inside_a_record_shortens_the_send,
            corking_verdict_applies_without_rerun,
            apply_bytes_ends_at_the_record,
            policy_allowed_requests_decrypted,
            policy_ciphertext_only,
            policy_denied_eacces_no_record,
            policy_pipelined_in_one_record,
            policy_body_across_records,
            policy_head_split_across_records_denied,
            probe_says_ktls_works_on_enrolled_sockets,
        ]),
        Expect::Refuses => checks.extend(checks![
            ktls_on_enrolled_socket_einval,
            user_space_tls_fallback,
            fallback_program_sees_records,
            policy_fallback_opaque_deny,
            policy_fallback_opaque_allow,
            probe_says_ktls_is_refused_on_enrolled_sockets,
        ]),
    }
    checks
}

// ---------------------------------------------------------------- helpers

fn listen(port: u16) -> Result<TcpListener, Failure> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .map_err(|e| Failure::Fail(format!("listening on 127.0.0.1:{port}: {e}")))
}

/// A fresh TLS 1.3 session to `port` (0: any), handshake done in user space.
fn session(bed: &Bed, port: u16) -> Result<Session, Failure> {
    let listener = listen(port)?;
    Ok(tls::handshake(&bed.configs, &listener)?)
}

/// `TCP_ULP "tls"` then `TLS_TX` (or `TLS_RX`) with the session's keys.
fn kernel_tls(socket: &TcpStream, direction: Direction, info: &ktls::CryptoInfo) -> Result<(), (String, Errno)> {
    ktls::attach_tls_ulp(socket.as_fd()).map_err(|errno| ("TCP_ULP \"tls\"".to_owned(), errno))?;
    ktls::set_keys(socket.as_fd(), direction, info).map_err(|errno| (direction.name().to_owned(), errno))
}

fn client_tx(session: &Session) -> Result<(), Failure> {
    kernel_tls(&session.client.socket, Direction::Transmit, &session.client.transmit)
        .map_err(|(step, errno)| Failure::Fail(format!("client {step}: {errno}")))
}

fn server_rx(session: &Session) -> Result<(), Failure> {
    kernel_tls(&session.server.socket, Direction::Receive, &session.server.receive)
        .map_err(|(step, errno)| Failure::Fail(format!("server {step}: {errno}")))
}

/// One `send()` (no SIGPIPE): the count, or the errno.
fn send(socket: &TcpStream, bytes: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `bytes` is valid for its length during the call.
    let sent = unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| Errno::last())
}

fn send_all(socket: &TcpStream, bytes: &[u8]) -> Result<(), Failure> {
    match send(socket, bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => Err(Failure::Fail(format!("send() took {n} of {} bytes", bytes.len()))),
        Err(errno) => Err(Failure::Fail(format!("send() of {} bytes failed: {errno}", bytes.len()))),
    }
}

/// Sends `message` in one `send()` and checks that the `TLS_RX` server
/// decrypts exactly it.
fn sent_and_decrypted(session: &Session, message: &[u8]) -> Result<(), Failure> {
    send_all(&session.client.socket, message)?;
    let got = receive(&session.server.socket, message.len(), tls::IO_TIMEOUT)?;
    ensure!(got == message, "the TLS_RX server read {} instead of {}", show(&got), show(message));
    Ok(())
}

/// Reads until `want` bytes arrived, the peer closed, or `wait` passed.
fn receive(socket: &TcpStream, want: usize, wait: Duration) -> Result<Vec<u8>, Failure> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut reader = socket;
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        reader.set_read_timeout(Some(left)).map_err(|e| Failure::Fail(e.to_string()))?;
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(Failure::Fail(format!("recv: {e}"))),
        }
    }
    Ok(got)
}

/// `[10, EACCES]`: each send's count or errno name.
fn sends_text(sends: &[Result<usize, Errno>]) -> String {
    let each: Vec<String> = sends
        .iter()
        .map(|sent| match sent {
            Ok(n) => n.to_string(),
            Err(errno) => errno.name(),
        })
        .collect();
    format!("[{}]", each.join(", "))
}

/// `ok` or the errno's name.
fn unit_text(result: Result<(), Errno>) -> String {
    result.map_or_else(Errno::name, |()| "ok".to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let short: String = text.chars().take(48).collect();
    format!("{short:?}{}", if text.chars().count() > 48 { "…" } else { "" })
}

/// The record bytes a TLS 1.3 record of `plaintext` bytes takes on the
/// wire: header, plaintext, content type, tag.
fn record_len(plaintext: usize) -> usize {
    ktls::RECORD_HEADER + plaintext + 1 + 16
}

/// The compiled policy, or the skip that says why there is none.
fn compiled(which: &Result<Compiled, String>) -> Result<Loaded, Failure> {
    match which {
        Ok(Compiled::Object { object, meta }) => Ok(Loaded::load(object, meta)?),
        Ok(Compiled::Refused(reason)) => Err(Failure::Skip(format!("pending on the code generator: {reason}"))),
        Err(error) => Err(Failure::Fail(error.clone())),
    }
}

/// A session to the governed port with the client enrolled in the
/// compiled policy's socket map, then kTLS on the client (and `TLS_RX` on
/// the server when `decrypting`).
fn policed_session(bed: &Bed, loaded: &Loaded, decrypting: bool) -> Result<Session, Failure> {
    let session = session(bed, GOVERNED_PORT)?;
    loaded.enroll(&session.client.socket)?;
    client_tx(&session)?;
    if decrypting {
        server_rx(&session)?;
    }
    Ok(session)
}

fn pass_all_enrolled(bed: &Bed) -> Result<(KernelProgram, Session), Failure> {
    let program = programs::load(&programs::pass_all()?)?;
    let session = session(bed, 0)?;
    policy::enroll(&program, programs::SOCKETS, &session.client.socket)?;
    Ok((program, session))
}

// ------------------------------------------------------ mechanics, both kernels

/// kTLS itself works on this kernel: rustls's keys, handed to the kernel,
/// encrypt on one socket and decrypt on the other.
fn ktls_handshake_key_handoff(bed: &Bed) -> CheckResult {
    let session = session(bed, 0)?;
    client_tx(&session)?;
    server_rx(&session)?;
    let message = b"hello through kernel TLS, keys from a rustls handshake";
    sent_and_decrypted(&session, message)?;
    Ok(format!(
        "{} handshake in user space; TLS_TX (client) and TLS_RX (server) took the extracted keys; {} bytes arrived decrypted",
        session.suite,
        message.len()
    ))
}

/// The old rule, on both kernels: a socket already in kTLS cannot enter a
/// socket map.
fn sockmap_after_ktls_refused(bed: &Bed) -> CheckResult {
    let program = programs::load(&programs::pass_all()?)?;
    let session = session(bed, 0)?;
    client_tx(&session)?;
    match policy::enroll(&program, programs::SOCKETS, &session.client.socket) {
        Ok(()) => Err(Failure::Fail("a socket with TLS_TX was accepted into the SOCKHASH".into())),
        Err(error) => Ok(format!("inserting a kTLS socket into the SOCKHASH is refused: {error}")),
    }
}

// ------------------------------------------------- mechanics, 6.1.187 (accepts)

fn ktls_on_enrolled_socket(bed: &Bed) -> CheckResult {
    let (_program, session) = pass_all_enrolled(bed)?;
    client_tx(&session)?;
    server_rx(&session)?;
    sent_and_decrypted(&session, b"plaintext judged by sk_msg, then encrypted by kTLS")?;
    Ok("order SOCKHASH insert → TCP_ULP \"tls\" → TLS_TX accepted; a pass-all sk_msg program's bytes arrived decrypted at the TLS_RX server".into())
}

fn ciphertext_only_on_the_wire(bed: &Bed) -> CheckResult {
    let (_program, session) = pass_all_enrolled(bed)?;
    client_tx(&session)?;
    let message = b"PLAINTEXT-MARKER must never cross the wire";
    send_all(&session.client.socket, message)?;
    let wire = receive(&session.server.socket, record_len(message.len()), tls::IO_TIMEOUT)?;
    let records = ktls::parse_records(&wire)?;
    ensure!(!contains(&wire, b"PLAINTEXT-MARKER"), "the plaintext crossed the wire");
    ensure!(
        records.len() == 1 && wire.len() == record_len(message.len()),
        "expected one record of {} bytes, got {} bytes in {records:?}",
        record_len(message.len()),
        wire.len()
    );
    Ok(format!(
        "a receiver without TLS_RX got {} bytes: one record starting {:02x?}, no plaintext",
        wire.len(),
        &wire[..3]
    ))
}

fn denied_send_eacces_no_record(bed: &Bed) -> CheckResult {
    let mut program = programs::load(&programs::drop_first_byte(b'X')?)?;
    // Decrypting receiver: the allowed message arrives, the denied one not.
    let session = enrolled_ktls(bed, &program, true)?;
    sent_and_decrypted(&session, b"allowed message")?;
    let denied = send(&session.client.socket, b"X denied message");
    ensure!(denied == Err(Errno::EACCES), "the denied send returned {}, not EACCES", sends_text(&[denied]));
    let after = receive(&session.server.socket, 1, QUIET)?;
    ensure!(after.is_empty(), "the TLS_RX server read {} after the deny", show(&after));

    // Raw receiver: the denied send leaves no record on the wire.
    let raw = enrolled_ktls(bed, &program, false)?;
    send_all(&raw.client.socket, b"allowed")?;
    let first = receive(&raw.server.socket, record_len(7), tls::IO_TIMEOUT)?;
    ensure!(ktls::parse_records(&first)?.len() == 1, "expected one record for the allowed send");
    let denied_raw = send(&raw.client.socket, b"X denied");
    ensure!(denied_raw == Err(Errno::EACCES), "the denied send returned {}, not EACCES", sends_text(&[denied_raw]));
    let wire = receive(&raw.server.socket, 1, QUIET)?;
    ensure!(wire.is_empty(), "{} bytes reached the wire after the deny", wire.len());
    let runs = programs::runs(&mut program)?;
    ensure!(runs.len() == 4, "the program ran {} times for 4 sends", runs.len());
    ensure!(
        runs.iter().all(|r| r.readable_before_pull == 0 && r.readable_after_pull == 1 && r.pull_result == 0),
        "expected data == data_end on entry and one byte after pull_data: {runs:?}"
    );
    Ok(format!(
        "allowed message decrypted at the server; `X…` send → EACCES, nothing decrypted and no record on the wire; runs saw data_end - data = {:?} before pull_data, {:?} after",
        runs.iter().map(|r| r.readable_before_pull).collect::<Vec<_>>(),
        runs.iter().map(|r| r.readable_after_pull).collect::<Vec<_>>()
    ))
}

/// A session whose client is enrolled in a hand-assembled `program`'s
/// socket map, then given kTLS; the server gets `TLS_RX` when `decrypting`.
fn enrolled_ktls(bed: &Bed, program: &KernelProgram, decrypting: bool) -> Result<Session, Failure> {
    let session = session(bed, 0)?;
    policy::enroll(program, programs::SOCKETS, &session.client.socket)?;
    client_tx(&session)?;
    if decrypting {
        server_rx(&session)?;
    }
    Ok(session)
}

fn verdict_per_record(bed: &Bed) -> CheckResult {
    let mut program = programs::load(&programs::drop_first_byte(b'X')?)?;
    let session = enrolled_ktls(bed, &program, true)?;
    let message = vec![b'a'; 64 * 1024];
    send_all(&session.client.socket, &message)?;
    let got = receive(&session.server.socket, message.len(), tls::IO_TIMEOUT)?;
    ensure!(got == message, "the TLS_RX server read {} of {} bytes", got.len(), message.len());
    let runs = programs::runs(&mut program)?;
    let sizes: Vec<u32> = runs.iter().map(|r| r.size).collect();
    ensure!(sizes.iter().map(|&s| s as usize).sum::<usize>() == message.len(), "runs covered {sizes:?}");
    ensure!(sizes.iter().all(|&s| s <= 16 * 1024) && sizes.len() >= 4, "runs of sizes {sizes:?}: not one per record");
    Ok(format!("one 64 KiB send() was judged record by record: runs of {sizes:?} bytes"))
}

// -------------------------------------------------- mechanics, 6.1.192 (refuses)

fn ktls_on_enrolled_socket_einval(bed: &Bed) -> CheckResult {
    let (_program, session) = pass_all_enrolled(bed)?;
    ktls::attach_tls_ulp(session.client.socket.as_fd()).map_err(|errno| {
        Failure::Fail(format!(
            "TCP_ULP \"tls\" on the enrolled socket failed with {errno} (expected only TLS_TX to fail)"
        ))
    })?;
    match ktls::set_keys(session.client.socket.as_fd(), Direction::Transmit, &session.client.transmit) {
        Err(errno) if errno == Errno::EINVAL => {
            Ok("SOCKHASH insert → TCP_ULP \"tls\" (accepted) → TLS_TX: EINVAL, kTLS refused on an enrolled socket"
                .into())
        }
        Err(errno) => Err(Failure::Fail(format!("TLS_TX failed with {errno}, not EINVAL"))),
        Ok(()) => Err(Failure::Fail("TLS_TX was accepted on a socket in a SOCKHASH".into())),
    }
}

/// A session whose client was refused kTLS and falls back to user-space
/// TLS, as a TLS library does: the client seals its records itself, the
/// server opens them in user space. The server socket gets no `tls` ULP:
/// attaching it would take the client out of its `sk_msg` program (see
/// [`tls_ulp_without_keys_bypasses_sk_msg`]).
fn fallen_back(session: &Session) -> Result<(RecordSealer, RecordOpener), Failure> {
    ktls::attach_tls_ulp(session.client.socket.as_fd()).map_err(|e| Failure::Fail(format!("TCP_ULP: {e}")))?;
    let refused = ktls::set_keys(session.client.socket.as_fd(), Direction::Transmit, &session.client.transmit);
    ensure!(refused == Err(Errno::EINVAL), "TLS_TX returned {}, not EINVAL", unit_text(refused));
    Ok((RecordSealer::new(&session.client.transmit)?, RecordOpener::new(&session.server.receive)?))
}

/// Reads the records of `plaintext_len` bytes of application data and
/// opens them in user space.
fn receive_opened(
    session: &Session,
    opener: &mut RecordOpener,
    plaintext_len: usize,
    wait: Duration,
) -> Result<Vec<u8>, Failure> {
    let wire = receive(&session.server.socket, record_len(plaintext_len), wait)?;
    let mut plaintext = Vec::new();
    opener.open(&wire, &mut plaintext)?;
    Ok(plaintext)
}

fn user_space_tls_fallback(bed: &Bed) -> CheckResult {
    let (_program, session) = pass_all_enrolled(bed)?;
    let (mut sealer, mut opener) = fallen_back(&session)?;
    let message = b"sealed in user space after TLS_TX was refused";
    let record = sealer.seal(message)?;
    send_all(&session.client.socket, &record)?;
    let got = receive_opened(&session, &mut opener, message.len(), tls::IO_TIMEOUT)?;
    ensure!(got == message, "the server opened {}", show(&got));
    Ok(format!(
        "after EINVAL the client sealed a {}-byte record itself; the pass-all program let it through and the server opened it with the session's keys",
        record.len()
    ))
}

/// What a policy's `opaque` setting rests on: after the fallback, the
/// program's first byte is a record's content type (0x17), not HTTP.
fn fallback_program_sees_records(bed: &Bed) -> CheckResult {
    let mut program = programs::load(&programs::drop_first_byte(0x17)?)?;
    let session = session(bed, 0)?;
    policy::enroll(&program, programs::SOCKETS, &session.client.socket)?;
    let (mut sealer, _opener) = fallen_back(&session)?;
    let record = sealer.seal(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")?;
    let sent = send(&session.client.socket, &record);
    let got = receive(&session.server.socket, 1, QUIET)?;
    let runs = programs::runs(&mut program)?;
    ensure!(
        sent == Err(Errno::EACCES),
        "a drop-if-first-byte-is-0x17 program let the record's send return {}; runs {runs:?}; the server got {} bytes",
        sends_text(&[sent]),
        got.len()
    );
    ensure!(got.is_empty(), "the server got {} bytes", got.len());
    ensure!(
        runs.len() == 1 && runs[0].size as usize == record.len(),
        "runs {runs:?} for one {}-byte record",
        record.len()
    );
    Ok(format!(
        "a drop-if-first-byte-is-0x17 program dropped the fallen-back client's record (send → EACCES): it judged {} bytes of ciphertext, from the record header on",
        runs[0].size
    ))
}

/// The hazard of a `tls` ULP without keys on an enrolled socket (a TLS
/// library's fallback after `EINVAL` on 6.1.192; on 6.1.187 a library
/// that attached the ULP and never set `TLS_TX`). Such a socket sends
/// through the kernel's shared `tls_prots[TLS_BASE]` table, which the
/// kernel rebuilds from the base protocol of whichever socket attached the
/// ULP last. While that was the enrolled socket (sockmap's `tcp_bpf`
/// protocol), its program runs; once any plain TCP socket attaches the ULP,
/// the table holds plain `tcp_sendmsg` and the enrolled socket's sends
/// bypass its `sk_msg` program.
fn tls_ulp_without_keys_bypasses_sk_msg(bed: &Bed) -> CheckResult {
    let mut evidence = Vec::new();
    for try_keys in [false, true] {
        let mut program = programs::load(&programs::drop_first_byte(b'X')?)?;
        let session = session(bed, 0)?;
        policy::enroll(&program, programs::SOCKETS, &session.client.socket)?;
        ktls::attach_tls_ulp(session.client.socket.as_fd()).map_err(|e| Failure::Fail(format!("TCP_ULP: {e}")))?;
        let keys = if try_keys {
            Some(ktls::set_keys(session.client.socket.as_fd(), Direction::Transmit, &session.client.transmit))
        } else {
            None
        };
        let keys_text = match keys {
            None => "no TLS_TX".to_owned(),
            Some(Ok(())) => "TLS_TX accepted".to_owned(),
            Some(Err(errno)) => format!("TLS_TX {}", errno.name()),
        };
        let before = send(&session.client.socket, b"first");
        let runs_before = programs::runs(&mut program)?.len();
        // An unrelated connection, in no socket map, attaches the ULP.
        let (_peer, other) = plain_pair()?;
        ktls::attach_tls_ulp(other.as_fd())
            .map_err(|e| Failure::Fail(format!("TCP_ULP on an unrelated socket: {e}")))?;
        let after = send(&session.client.socket, b"X must be dropped");
        let runs_after = programs::runs(&mut program)?.len();
        ensure!(
            before == Ok(5) && runs_before == 1,
            "{keys_text}, before: send {} runs {runs_before}",
            sends_text(&[before])
        );
        if keys == Some(Ok(())) {
            // With keys the socket sends through tls_sw_sendmsg, which runs
            // the program itself whatever the shared table holds.
            ensure!(
                after == Err(Errno::EACCES) && runs_after == 1,
                "{keys_text}: send {} runs {runs_after}",
                sends_text(&[after])
            );
            evidence.push(format!("{keys_text}: the program still runs (send → EACCES)"));
        } else {
            ensure!(
                after == Ok(17) && runs_after == 0,
                "{keys_text}, after another socket attached the ULP: send {} runs {runs_after}",
                sends_text(&[after])
            );
            evidence.push(format!(
                "{keys_text}: HAZARD, `X must be dropped` went out (send returned {}) with 0 runs",
                sends_text(&[after])
            ));
        }
    }
    Ok(format!(
        "an enrolled socket with the tls ULP ran its program on `first`; then an unrelated socket attached the tls ULP — {}",
        evidence.join("; ")
    ))
}

/// The remedy for the hazard above: a `cgroup/setsockopt` program in the
/// application's cgroup refuses `TCP_ULP`, so a TLS library's kTLS
/// attempt fails before a ULP is attached (`EPERM`), the library stays in
/// user space, and the socket keeps sockmap's own protocol — another
/// socket attaching the ULP later changes nothing for it.
fn cgroup_setsockopt_keeps_the_ulp_off(bed: &Bed) -> CheckResult {
    let mut program = programs::load(&programs::drop_first_byte(b'X')?)?;
    let session = session(bed, 0)?;
    policy::enroll(&program, programs::SOCKETS, &session.client.socket)?;
    let cgroup = std::path::Path::new(CGROUP_ROOT);
    // The guard `l7c run` attaches (l7c_compiler::enroll::ulp_guard).
    let refusal = l7c_runtime::cgroup::UlpGuard::attach(cgroup).map_err(|e| Failure::Fail(e.to_string()))?;
    let refused = ktls::attach_tls_ulp(session.client.socket.as_fd());
    drop(refusal);
    ensure!(
        refused == Err(Errno::EPERM),
        "TCP_ULP under the setsockopt program returned {}, not EPERM",
        unit_text(refused)
    );
    let (_peer, other) = plain_pair()?;
    ktls::attach_tls_ulp(other.as_fd())
        .map_err(|e| Failure::Fail(format!("TCP_ULP on an unrelated socket after the detach: {e}")))?;
    let after = send(&session.client.socket, b"X must be dropped");
    let runs = programs::runs(&mut program)?.len();
    ensure!(after == Err(Errno::EACCES) && runs == 1, "send {} runs {runs}", sends_text(&[after]));
    Ok(format!(
        "with l7c run's TCP_ULP guard (cgroup/setsockopt) on {CGROUP_ROOT}, the enrolled socket's TCP_ULP \"tls\" failed with EPERM (no ULP attached); after an unrelated socket attached the ULP, the program still ran (send → EACCES)"
    ))
}

/// The guest's cgroup2 mount (the init script mounts it); the checks run
/// in its root cgroup.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A connected loopback pair outside any socket map (both ends kept
/// open: the ULP needs an established socket).
fn plain_pair() -> Result<(TcpStream, TcpStream), Failure> {
    let listener = listen(0)?;
    let address = listener.local_addr().map_err(|e| Failure::Fail(e.to_string()))?;
    let client = TcpStream::connect(address).map_err(|e| Failure::Fail(format!("connect: {e}")))?;
    let (accepted, _) = listener.accept().map_err(|e| Failure::Fail(format!("accept: {e}")))?;
    Ok((client, accepted))
}

// -------------------------------------------------------- policy, 6.1.187

const ALLOWED: &[u8] = b"GET /api/v1/payments/pay_1 HTTP/1.1\r\nHost: pay\r\n\r\n";
const ALLOWED_TOO: &[u8] = b"GET /api/v1/customers/c1 HTTP/1.1\r\nHost: pay\r\n\r\n";
const DENIED: &[u8] = b"GET /actuator/env HTTP/1.1\r\nHost: pay\r\n\r\n";

/// Sends `sends` (one `send()` each) from a policed kTLS client to a
/// `TLS_RX` server and checks that all of it arrived, allowed by `allows`
/// verdicts; returns the verdicts.
fn all_allowed(bed: &Bed, sends: &[&[u8]], allows: usize) -> Result<Vec<String>, Failure> {
    let mut loaded = compiled(bed.payments())?;
    let session = policed_session(bed, &loaded, true)?;
    let results: Vec<Result<usize, Errno>> = sends.iter().map(|bytes| send(&session.client.socket, bytes)).collect();
    let want = sends.concat();
    let got = receive(&session.server.socket, want.len(), tls::IO_TIMEOUT)?;
    let verdicts = loaded.verdicts()?;
    let whole: Vec<Result<usize, Errno>> = sends.iter().map(|bytes| Ok(bytes.len())).collect();
    ensure!(
        results == whole && got == want,
        "sends returned {} for {} bytes; the TLS_RX server read {} of {} bytes; verdicts {verdicts:?}",
        sends_text(&results),
        sends_text(&whole),
        got.len(),
        want.len()
    );
    ensure!(verdicts.len() == allows && verdicts.iter().all(|v| v.starts_with("allow")), "verdicts {verdicts:?}");
    Ok(verdicts)
}

fn policy_allowed_requests_decrypted(bed: &Bed) -> CheckResult {
    let verdicts = all_allowed(bed, &[ALLOWED, ALLOWED_TOO], 2)?;
    Ok(format!("two requests sent under kTLS arrived decrypted; verdicts {verdicts:?}"))
}

fn policy_ciphertext_only(bed: &Bed) -> CheckResult {
    let mut loaded = compiled(bed.payments())?;
    let session = policed_session(bed, &loaded, false)?;
    send_all(&session.client.socket, ALLOWED)?;
    let wire = receive(&session.server.socket, record_len(ALLOWED.len()), tls::IO_TIMEOUT)?;
    let records = ktls::parse_records(&wire)?;
    ensure!(!contains(&wire, b"/api/v1/payments"), "the request's plaintext crossed the wire");
    ensure!(wire.len() == record_len(ALLOWED.len()), "expected one record for the request, got {records:?}");
    let verdicts = loaded.verdicts()?;
    ensure!(verdicts.len() == 1 && verdicts[0].starts_with("allow"), "verdicts {verdicts:?}");
    Ok(format!(
        "the policy allowed the request ({}) and a receiver without TLS_RX got only a record starting {:02x?}",
        verdicts[0],
        &wire[..3]
    ))
}

fn policy_denied_eacces_no_record(bed: &Bed) -> CheckResult {
    let mut loaded = compiled(bed.payments())?;
    let session = policed_session(bed, &loaded, false)?;
    send_all(&session.client.socket, ALLOWED)?;
    let first = receive(&session.server.socket, record_len(ALLOWED.len()), tls::IO_TIMEOUT)?;
    ensure!(ktls::parse_records(&first)?.len() == 1, "the allowed request did not make one record");
    let denied = send(&session.client.socket, DENIED);
    ensure!(denied == Err(Errno::EACCES), "the denied request's send returned {}, not EACCES", sends_text(&[denied]));
    let wire = receive(&session.server.socket, 1, QUIET)?;
    ensure!(wire.is_empty(), "{} bytes reached the wire after the deny", wire.len());
    let verdicts = loaded.verdicts()?;
    ensure!(verdicts.len() == 2 && verdicts[1].starts_with("deny"), "verdicts {verdicts:?}");
    Ok(format!("`GET /actuator/env` → EACCES, no record on the wire; verdicts {verdicts:?}"))
}

fn policy_pipelined_in_one_record(bed: &Bed) -> CheckResult {
    let verdicts = all_allowed(bed, &[&[ALLOWED, ALLOWED_TOO].concat()], 2)?;
    Ok(format!("two requests in one send() (one record) both arrived; verdicts {verdicts:?}"))
}

fn policy_body_across_records(bed: &Bed) -> CheckResult {
    let body = format!("{{\"amount\":10,\"note\":\"{}\"}}", "n".repeat(40_000));
    let request = format!(
        "POST /api/v1/payments HTTP/1.1\r\nHost: pay\r\nX-Api-Key: k\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let request = [request.as_bytes(), ALLOWED].concat();
    let verdicts = all_allowed(bed, &[&request], 2)?;
    Ok(format!(
        "a {}-byte send() (a POST whose body spans {} records, then a GET) arrived whole; verdicts {verdicts:?}",
        request.len(),
        request.len().div_ceil(16 * 1024)
    ))
}

fn policy_head_split_across_records_denied(bed: &Bed) -> CheckResult {
    let mut loaded = compiled(bed.payments())?;
    let session = policed_session(bed, &loaded, true)?;
    let (first, second) = ALLOWED.split_at(20);
    let sends = [send(&session.client.socket, first), send(&session.client.socket, second)];
    let got = receive(&session.server.socket, 1, QUIET)?;
    let verdicts = loaded.verdicts()?;
    ensure!(got.is_empty(), "the TLS_RX server read {} of a head split across records", show(&got));
    ensure!(sends.contains(&Err(Errno::EACCES)), "sends returned {}: no EACCES", sends_text(&sends));
    ensure!(
        verdicts.iter().any(|v| v == "deny internal:ktls-split-head"),
        "the head was denied (sends {}, nothing decrypted) but no `deny internal:ktls-split-head` verdict was reported: verdicts {verdicts:?}",
        sends_text(&sends)
    );
    Ok(format!(
        "a head split over two records (two send()s) was denied: sends {}, verdicts {verdicts:?}",
        sends_text(&sends)
    ))
}

// ---------------------------------------------------------------- l7c probe

/// `l7c probe`'s findings (the runtime's `probe::probe`, what the command
/// prints) for kTLS on a plain socket and on an enrolled one.
fn probed() -> (l7c_runtime::probe::Capability, l7c_runtime::probe::Capability) {
    let report = l7c_runtime::probe::probe();
    let find = |name: &str| {
        report.capabilities.iter().find(|c| c.name == name).cloned().unwrap_or(l7c_runtime::probe::Capability {
            name: "missing",
            required: false,
            available: false,
            detail: format!("the probe has no `{name}` entry"),
        })
    };
    (find("ktls"), find("ktls_in_sockmap"))
}

fn probe_says_ktls_works_on_enrolled_sockets(_bed: &Bed) -> CheckResult {
    let (plain, in_map) = probed();
    ensure!(plain.available, "l7c probe: ktls: {}", plain.detail);
    ensure!(in_map.available, "l7c probe: ktls_in_sockmap should work on this kernel: {}", in_map.detail);
    Ok(format!("l7c probe: ktls yes ({}); ktls_in_sockmap yes ({})", plain.detail, in_map.detail))
}

fn probe_says_ktls_is_refused_on_enrolled_sockets(_bed: &Bed) -> CheckResult {
    let (plain, in_map) = probed();
    ensure!(plain.available, "l7c probe: ktls: {}", plain.detail);
    ensure!(
        !in_map.available && in_map.detail.contains("EINVAL"),
        "l7c probe: ktls_in_sockmap should be refused with EINVAL: available {}, {}",
        in_map.available,
        in_map.detail
    );
    Ok(format!("l7c probe: ktls yes; ktls_in_sockmap NO: {}", in_map.detail))
}

// ------------------------------------------------------ policy, both kernels

/// Enrolled where `l7c run` enrolls (at connection establishment, before
/// the TLS handshake), the client's first bytes are a ClientHello: a TLS
/// record, `opaque` by the language's definition. Under `payments.l7`
/// (`opaque deny`) the handshake is refused, so kTLS is never reached:
/// what docs/ktls.md calls the handshake gap of a kTLS deployment.
fn policy_handshake_enrolled_at_connect_is_opaque(bed: &Bed) -> CheckResult {
    let mut loaded = compiled(bed.payments())?;
    let listener = listen(GOVERNED_PORT)?;
    let outcome = tls::handshake_after(&bed.configs, &listener, &|socket| loaded.enroll(socket));
    let verdicts = loaded.verdicts()?;
    let error = match outcome {
        Ok(_) => {
            return Err(Failure::Fail(format!("the handshake completed through the policy; verdicts {verdicts:?}")))
        }
        Err(error) => error,
    };
    ensure!(
        error.contains("client handshake") && error.contains("Permission denied"),
        "the handshake failed otherwise: {error}; verdicts {verdicts:?}"
    );
    ensure!(verdicts == ["deny opaque"], "verdicts {verdicts:?}");
    Ok(format!("enrolled before the handshake, the ClientHello was judged `deny opaque` ({error}): under opaque deny a TLS client never gets to kTLS"))
}

// -------------------------------------------------------- policy, 6.1.192

/// A fallen-back client's request, sent as one user-space TLS record
/// through a compiled policy.
struct FallbackRun {
    loaded: Loaded,
    sent: Result<usize, Errno>,
    /// What the server opened.
    opened: Vec<u8>,
}

fn policy_fallback(bed: &Bed, which: &Result<Compiled, String>) -> Result<FallbackRun, Failure> {
    let loaded = compiled(which)?;
    let session = session(bed, GOVERNED_PORT)?;
    loaded.enroll(&session.client.socket)?;
    let (mut sealer, mut opener) = fallen_back(&session)?;
    let record = sealer.seal(ALLOWED)?;
    let sent = send(&session.client.socket, &record);
    let opened = receive_opened(&session, &mut opener, ALLOWED.len(), Duration::from_secs(2))?;
    Ok(FallbackRun { loaded, sent, opened })
}

fn policy_fallback_opaque_deny(bed: &Bed) -> CheckResult {
    let FallbackRun { mut loaded, sent, opened: got } = policy_fallback(bed, bed.payments())?;
    ensure!(
        sent == Err(Errno::EACCES),
        "the user-space TLS record's send returned {}, not EACCES",
        sends_text(&[sent])
    );
    ensure!(got.is_empty(), "the server decrypted {}", show(&got));
    let verdicts = loaded.verdicts()?;
    ensure!(verdicts.first().is_some_and(|v| v == "deny opaque"), "verdicts {verdicts:?}");
    Ok(format!("payments.l7 (opaque deny): the fallen-back client's TLS record → EACCES; verdicts {verdicts:?}"))
}

fn policy_fallback_opaque_allow(bed: &Bed) -> CheckResult {
    let FallbackRun { mut loaded, sent, opened: got } = policy_fallback(bed, bed.fallback())?;
    ensure!(sent.is_ok(), "the user-space TLS record's send returned {}", sends_text(&[sent]));
    ensure!(got == ALLOWED, "the server decrypted {}", show(&got));
    let verdicts = loaded.verdicts()?;
    ensure!(verdicts.first().is_some_and(|v| v.ends_with("opaque")), "verdicts {verdicts:?}");
    Ok(format!("tls-fallback.l7 (opaque allow): the record passed unread and the server opened the request; verdicts {verdicts:?}"))
}

// ------------------------- deny answers and switches, plain TCP (issue 13)

/// A policy with a rule's deny, the default deny and a tunnel rule.
const ANSWERS_POLICY: &str = "policy \"shop\" {\n  default deny\n  rule \"pub\" { method GET  path prefix \"/pub\"  allow }\n  rule \"ws\" { path exact \"/ws\"  allow tunnel }\n  rule \"admin\" { path prefix \"/admin\"  deny }\n}\n";

/// The kernel program's deny answers (`msg_push_data` at 0 for a message
/// shorter than the answer, `msg_pop_data` for a longer one, the ingress
/// redirect to the client itself) and the receive side's framing of the
/// server's answers (a deny after an answered request; a switch opened by
/// a 101, refused by a 404), run by the kernel engine on loopback TCP and
/// compared with the reference evaluator, verdicts and answers alike.
/// Issue 15, target 4, on this kernel: the program for 20 and for 100
/// policies is the one program every policy shares, and this kernel's
/// verifier takes it under its budget, as the host's does
/// (tests/kernel_differential.rs).
fn many_policies_load_under_the_verifier(_bed: &Bed) -> CheckResult {
    let mut evidence = Vec::new();
    for source in policy::SCALE {
        let started = Instant::now();
        let compiled = policy::compile(source)?;
        let took = started.elapsed();
        let loaded = compiled_object(&compiled)?;
        let processed = loaded.verified_instruction_count().map_or("an unreported number of".to_owned(), |n| n.to_string());
        evidence.push(format!("{} compiled in {:.1} s and verified ({processed} instructions processed)", source.name, took.as_secs_f64()));
    }
    Ok(evidence.join("; "))
}

fn compiled_object(compiled: &Compiled) -> Result<Loaded, Failure> {
    match compiled {
        Compiled::Object { object, meta } => Ok(Loaded::load(object, meta)?),
        Compiled::Refused(reason) => Err(Failure::Fail(format!("refused: {reason}"))),
    }
}

fn deny_answers_and_switches_on_plain_tcp(_bed: &Bed) -> CheckResult {
    use l7c_compiler::verdict::{Answer, ConnectionInfo, ServerAnswers};
    let source = policy::Source { name: "answers.l7", text: ANSWERS_POLICY };
    let (object, meta) = match policy::compile(source)? {
        Compiled::Object { object, meta } => (object, meta),
        Compiled::Refused(why) => return Err(Failure::Fail(why)),
    };
    let compilation = l7c_compiler::driver::compile_text(source.name, source.text, None);
    let checked = compilation.checked.ok_or_else(|| Failure::Fail("the policy does not check".to_owned()))?;
    let mut engine = l7c_runtime::engine::KernelEngine::load(&object, &meta).map_err(|e| Failure::Fail(format!("loading: {e}")))?;
    let long = format!("GET /admin/{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(600));
    let upgrade = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let admin = Some(Answer::Status {
        status: 403,
        bytes: l7c_compiler::verdict::answer_bytes(403, l7c_compiler::verdict::Reason::Rule, Some("admin")).len() as u64,
    });
    let cases: Vec<(&str, String, Vec<usize>, ServerAnswers, Option<Answer>)> = vec![
        ("short deny (push)", "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(), vec![], ServerAnswers::Agreeing, admin),
        ("long deny (pop)", long, vec![], ServerAnswers::Agreeing, admin),
        (
            "a deny after an answered request",
            "GET /pub/x HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            vec![32],
            ServerAnswers::Listed(vec![200]),
            admin,
        ),
        (
            "a pipelined deny (reset)",
            "GET /pub/x HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            vec![],
            ServerAnswers::Listed(vec![200]),
            Some(Answer::Reset),
        ),
        ("a switch the server accepts", format!("{upgrade}frames"), vec![70], ServerAnswers::Listed(vec![101]), None),
        (
            "a switch the server refuses",
            format!("{upgrade}GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            vec![70],
            ServerAnswers::Listed(vec![404]),
            None,
        ),
        ("bytes before the server's answer", format!("{upgrade}frames"), vec![], ServerAnswers::Listed(vec![101]), Some(Answer::Reset)),
    ];
    let mut answered = Vec::new();
    for (name, input, split, answers, expected_answer) in cases {
        let reference = l7c_compiler::eval::evaluate_with_answers(checked.program(), ConnectionInfo::default(), &[], input.as_bytes(), &split, &answers);
        engine.set_answers(answers);
        let kernel = engine
            .run(ConnectionInfo::default(), &[], input.as_bytes(), &split)
            .map_err(|e| Failure::Fail(format!("{name}: the kernel engine failed: {e}")))?;
        ensure!(kernel == reference, "{name}: kernel {kernel:?}, reference {reference:?}");
        let answer = kernel.verdicts.iter().find_map(|v| v.answer);
        if let Some(expected) = expected_answer {
            ensure!(answer == Some(expected), "{name}: answer {answer:?}, expected {expected:?}");
        }
        answered.push(format!("{name}: {}", match answer {
            Some(Answer::Status { status, bytes }) => format!("{status} ({bytes} B)"),
            Some(Answer::Reset) => "reset".to_owned(),
            None => "no deny".to_owned(),
        }));
    }
    Ok(format!("kernel engine = reference on 7 streams: {}", answered.join("; ")))
}

// ------------------------------- verdict mechanics under kTLS, 6.1.187

/// What a [`planned`](programs::planned) program did to a kTLS stream.
struct Trace {
    sends: Vec<Result<usize, Errno>>,
    /// `msg->size` of each run, by the send during which it ran.
    runs: Vec<Vec<u32>>,
    /// The plaintext the `TLS_RX` server decrypted.
    delivered: Vec<u8>,
    input: Vec<u8>,
}

impl Trace {
    fn evidence(&self) -> String {
        format!(
            "sends {}; run sizes per send {:?}; {} bytes decrypted at the server",
            sends_text(&self.sends),
            self.runs,
            self.delivered.len()
        )
    }
}

/// Sends `sizes` pieces of a pattern from an enrolled kTLS client through
/// a program following `plan`.
fn trace(bed: &Bed, plan: &[programs::Step], sizes: &[usize]) -> Result<Trace, Failure> {
    let mut program = programs::load(&programs::planned()?)?;
    programs::set_plan(&program, plan)?;
    let session = enrolled_ktls(bed, &program, true)?;
    let total: usize = sizes.iter().sum();
    let input: Vec<u8> = (0..total).map(|i| b'a' + (i % 26) as u8).collect();
    let (mut at, mut sends, mut runs) = (0, Vec::new(), Vec::new());
    for &size in sizes {
        sends.push(send(&session.client.socket, &input[at..at + size]));
        at += size;
        runs.push(programs::steps(&mut program)?.into_iter().map(|(_, size)| size).collect());
    }
    let delivered = receive(&session.server.socket, total, QUIET)?;
    Ok(Trace { sends, runs, delivered, input })
}

const PASS: programs::Step = programs::Step { verdict: 1, apply: 0, cork_plus: 0 };
const DROP: programs::Step = programs::Step { verdict: 0, apply: 0, cork_plus: 0 };

fn apply_bytes_splits_a_record(bed: &Bed) -> CheckResult {
    let t = trace(bed, &[programs::Step { apply: 10, ..PASS }], &[30])?;
    ensure!(t.sends == [Ok(30)] && t.runs == [vec![30, 20, 10]] && t.delivered == t.input, "{}", t.evidence());
    Ok(format!(
        "apply_bytes(10) + pass on one 30-byte send (one record) re-runs the program on the rest of the record: {}",
        t.evidence()
    ))
}

fn deny_inside_a_record_shortens_the_send(bed: &Bed) -> CheckResult {
    let t = trace(bed, &[programs::Step { apply: 10, ..PASS }, DROP], &[30, 10])?;
    ensure!(
        t.sends == [Ok(10), Err(Errno::EACCES)] && t.runs == [vec![30, 20], vec![]] && t.delivered == t.input[..10],
        "{}",
        t.evidence()
    );
    Ok(format!(
        "pass 10 bytes, then drop, inside one record: send() returns the 10 passed, the next send EACCES (sticky): {}",
        t.evidence()
    ))
}

fn corking_verdict_applies_without_rerun(bed: &Bed) -> CheckResult {
    let hold = programs::Step { verdict: 0, apply: 0, cork_plus: 1 };
    let release = programs::Step { verdict: 1, apply: programs::ZERO, cork_plus: programs::ZERO };
    let held = trace(bed, &[hold, release], &[10, 10, 10])?;
    ensure!(
        held.sends == [Ok(10), Err(Errno::EACCES), Err(Errno::EACCES)]
            && held.runs == [vec![10], vec![], vec![]]
            && held.delivered.is_empty(),
        "{}",
        held.evidence()
    );
    let passing = trace(bed, &[programs::Step { cork_plus: 1, ..PASS }, release], &[10, 10, 10])?;
    ensure!(
        passing.sends == [Ok(10), Ok(10), Ok(10)]
            && passing.runs == [vec![10], vec![], vec![10]]
            && passing.delivered == passing.input,
        "{}",
        passing.evidence()
    );
    Ok(format!(
        "the design's hold (cork_bytes(size + 1) + SK_DROP) then a send that completes the cork: the program is NOT re-run and the held drop applies ({}); with SK_PASS the corked record passes unseen ({})",
        held.evidence(),
        passing.evidence()
    ))
}

fn apply_bytes_ends_at_the_record(bed: &Bed) -> CheckResult {
    let t = trace(bed, &[programs::Step { apply: 20_000, ..PASS }, DROP], &[32_768, 100])?;
    ensure!(
        t.sends == [Ok(16_384), Err(Errno::EACCES)]
            && t.runs == [vec![16_384, 16_384], vec![]]
            && t.delivered == t.input[..16_384],
        "{}",
        t.evidence()
    );
    Ok(format!("apply_bytes(20000) on the first 16 KiB record does not cover the next record: the program runs again at its start (byte 16384), and its drop takes the whole record: {}", t.evidence()))
}
