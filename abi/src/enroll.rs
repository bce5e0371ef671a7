//! The enrollment program: a cgroup `sock_ops` program that puts every TCP
//! connection a process of the cgroup *opens* into the `l7_sockets` socket
//! hash ([`abi::maps::SOCKETS`]), under the 44-byte `struct l7_sock_key`
//! (docs/kernel-mechanics.md, "The enrollment key"), so that the `sk_msg`
//! verdict program attached to that map polices what the connection sends.
//!
//! Which sockets are enrolled:
//! - `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB` (a `connect()` completed): yes.
//!   That socket sends the requests a policy governs (language.md §1: "a
//!   policy governs the bytes a client sends").
//! - `BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB` (an `accept()`ed child): **no**.
//!   An accepted socket sends *responses*; the `sk_msg` program sees only
//!   what its socket sends, so enrolling it would run the request parser on
//!   response bytes and deny them as malformed. A server's inbound requests
//!   are policed by enrolling its *clients* (put them in the cgroup).
//! - Families: `AF_INET` and `AF_INET6` (dual-stack sockets with an
//!   IPv4-mapped peer are `AF_INET6`, as `sk_msg_md` sees them too). Any
//!   other family is left alone.
//!
//! The key is built with plain 4-byte copies of the context's fields, the
//! same fields `struct sk_msg_md` has, so the verdict program (redirect to
//! self) and user space (`l7c_runtime::SockKey`) build the same bytes.
//! Unused address words are zero (the key is zeroed first).
//!
//! ## The connection's record
//!
//! Right after a successful enrollment the program creates the
//! connection's record in `l7_peer` ([`abi::peer`], under the same key),
//! zeroed, and asks for state callbacks; on `STATE_CB` into `TCP_CLOSE`
//! it deletes the record (a socket without one changes nothing). The
//! `sk_msg` program and the receive verdict ([`crate::receive`]) share it.
//! A stale record of an earlier connection with the same 4-tuple is
//! replaced at enrollment (`BPF_ANY`).
//!
//! The program always returns 1: a `sock_ops` program's return value only
//! matters for the callbacks that ask for a reply, none of which it handles.
//!
//! ## Capacity: the gate
//!
//! `l7_sockets` has room for a fixed number of sockets, and nothing in
//! `sock_ops` can refuse a connection that is already established: a full
//! map would leave connections unpoliced. So capacity is *reserved before
//! the connection exists* and refused where the application sees it:
//!
//! - [`gate`] (a cgroup `connect4`/`connect6` program) runs in `connect()`
//!   before the SYN. For a governed TCP connection (its remote port is in
//!   `l7_gate_ports`, or `all_ports`) it refuses the call (`EPERM`) when
//!   `used >= capacity`, counting `refused_full`. A stream socket that is
//!   not TCP (MPTCP, SCTP) to a governed port is refused too
//!   (`refused_protocol`): the `sk_msg` program never sees what it sends.
//! - This program, on `TCP_CONNECT_CB` (the SYN is about to go out; every
//!   early failure of `connect()` is behind it), takes one unit of `used`
//!   for a governed connection, marks the socket in `l7_gate_mark` and asks
//!   for state callbacks; on `STATE_CB` into `TCP_CLOSE` (every way a TCP
//!   socket ends, including a failed handshake) it gives the unit back if
//!   the socket is marked. A unit is never taken twice or returned twice.
//! - On `ACTIVE_ESTABLISHED_CB` it enrolls governed connections only:
//!   connections to ports no policy can select take no capacity at all.
//!
//! The check and the reservation are two steps, so connections in the
//! microseconds between them can exceed `capacity`; the runtime sizes
//! `l7_sockets` above `capacity` by a margin for that. Should the map
//! still be full, the failure is counted (`unenrolled`) and the runtime
//! reports every such connection as an error.

use crate as abi;
use l7c_bpf::bpf::{Asm, AsmError, Helper, Program, R0, R1, R10, R2, R3, R4, R6, R7};

/// The program's ELF section: aya and libbpf read `sockops` as
/// `BPF_PROG_TYPE_SOCK_OPS`.
pub const SECTION: &str = "sockops";
/// Its function symbol (what `KernelProgram::attach_sock_ops` names).
pub const PROGRAM_NAME: &str = "l7c_enroll";

/// `enum bpf_sock_ops_cb` values the program looks at.
pub mod op {
    /// `connect()` is about to send the SYN (every early failure is past).
    pub const TCP_CONNECT_CB: i32 = 3;
    /// A socket changed state (asked for with `STATE_CB_FLAG`): `args[0]`
    /// the old state, `args[1]` the new one.
    pub const STATE_CB: i32 = 10;
    /// A connection this host initiated is established (client side).
    pub const ACTIVE_ESTABLISHED_CB: i32 = 4;
    /// A connection this host accepted is established (server side): not
    /// enrolled (module docs).
    pub const PASSIVE_ESTABLISHED_CB: i32 = 5;
}

/// `AF_INET` and `AF_INET6` as `bpf_sock_ops.family` holds them.
pub mod family {
    pub const INET: i32 = 2;
    pub const INET6: i32 = 10;
}

/// Offsets of the fields read in `struct bpf_sock_ops` (uapi/linux/bpf.h);
/// every one is read as a u32, the only width the verifier allows for them.
pub mod sock_ops {
    pub const OP: i16 = 0;
    pub const FAMILY: i16 = 20;
    pub const REMOTE_IP4: i16 = 24;
    pub const LOCAL_IP4: i16 = 28;
    /// `__u32 remote_ip6[4]`, network order.
    pub const REMOTE_IP6: i16 = 32;
    /// `__u32 local_ip6[4]`, network order.
    pub const LOCAL_IP6: i16 = 48;
    /// Network order in the upper half: memory bytes `[0, 0, hi, lo]`.
    pub const REMOTE_PORT: i16 = 64;
    /// Host order.
    pub const LOCAL_PORT: i16 = 68;
    /// `args[1]`: the new state in `STATE_CB`.
    pub const ARG1: i16 = 8;
    /// `bpf_sock_ops_cb_flags`: the callbacks asked for so far.
    pub const CB_FLAGS: i16 = 84;
    /// `struct bpf_sock *sk` (a 64-bit pointer, may be NULL).
    pub const SK: i16 = 184;
}

/// Offsets in `struct l7_sock_key` (`abi::sock_key`), as store offsets.
pub mod key {
    use crate::sock_key as layout;
    pub const FAMILY: i16 = layout::FAMILY as i16;
    pub const REMOTE_IP: i16 = layout::REMOTE_IP as i16;
    pub const LOCAL_IP: i16 = layout::LOCAL_IP as i16;
    pub const REMOTE_PORT: i16 = layout::REMOTE_PORT as i16;
    pub const LOCAL_PORT: i16 = layout::LOCAL_PORT as i16;
    /// Size of the key: the `key_size` of `l7_sockets`.
    pub const SIZE: i16 = layout::SIZE as i16;
}

/// Where the key lives on the stack: r10 - 48, so that six 8-byte stores
/// zero it (48 bytes, the key's 44 rounded up to the store width).
const KEY_AT: i16 = -48;
const KEY_SLOTS: i16 = 6;

/// `BPF_ANY`: enroll even if a stale element has the same 4-tuple (a
/// closed socket leaves the map when it closes, so none should).
const BPF_ANY: i32 = 0;
/// `BPF_SK_STORAGE_GET_F_CREATE`.
const F_CREATE: i32 = 1;
/// `BPF_SOCK_OPS_STATE_CB_FLAG`: call the program on every state change.
const STATE_CB_FLAG: i32 = 1 << 2;
/// `TCP_CLOSE` in `enum tcp_state`.
const TCP_CLOSE: i32 = 7;
/// Where governed-port lookups keep their u32 key: below the socket key.
const LOOKUP_KEY_AT: i16 = KEY_AT - 8;
/// Where the zeroed `l7_peer` record is built: below the lookup key.
const PEER_AT: i16 = LOOKUP_KEY_AT - abi::peer::SIZE as i16;
const PEER_SLOTS: i16 = abi::peer::SIZE as i16 / 8;

/// The enrollment gate's maps (module docs, "Capacity"), in every object
/// the code generator writes and in `l7c probe`'s.
pub fn gate_maps() -> Vec<l7c_bpf::elf::MapDef> {
    use l7c_bpf::elf::{DataType, MapDef};
    vec![
        MapDef::array(abi::maps::GATE, DataType::Bytes(abi::gate::SIZE), 1),
        MapDef::sk_storage(abi::maps::GATE_MARKS, DataType::U32),
        MapDef::array(abi::maps::GATE_PORTS, DataType::U32, abi::gate::PORT_WORDS),
    ]
}

/// The enrollment program (module docs).
pub fn program() -> Program {
    // Cannot fail: the program is fixed (no input reaches it), its labels
    // are all defined and its map names are valid; the unit tests
    // assemble it.
    #[allow(clippy::expect_used)]
    build().expect("the fixed enrollment program assembles")
}

/// `r0 = gate record or 0`, clobbering r1-r5.
fn lookup_gate(a: &mut Asm) {
    a.stw(R10, LOOKUP_KEY_AT, 0);
    a.ld_map(R1, abi::maps::GATE);
    a.mov64(R2, R10).add64(R2, i32::from(LOOKUP_KEY_AT));
    a.call(Helper::MapLookupElem).comment("the gate record (index 0)");
}

/// Jumps to `yes` when a connection to the host-order remote port in `port`
/// (a callee-saved register) is governed, to `no` when it is not. A
/// missing gate record or bitmap word counts as governed (fail closed).
/// Clobbers r1-r5.
fn governed(a: &mut Asm, port: l7c_bpf::bpf::Reg, yes: &str, no: &str) {
    lookup_gate(a);
    a.jeq(R0, 0, yes);
    a.ldxdw(R1, R0, abi::gate::ALL_PORTS).comment("gate->all_ports");
    a.jne(R1, 0, yes);
    a.mov64(R1, port).rsh64(R1, 5);
    a.stxw(R10, LOOKUP_KEY_AT, R1).comment("port / 32");
    a.ld_map(R1, abi::maps::GATE_PORTS);
    a.mov64(R2, R10).add64(R2, i32::from(LOOKUP_KEY_AT));
    a.call(Helper::MapLookupElem);
    a.jeq(R0, 0, yes);
    a.ldxw(R1, R0, 0);
    a.mov64(R2, port).and64(R2, 31);
    a.rsh64(R1, R2).and64(R1, 1).comment("bit port % 32");
    a.jeq(R1, 0, no);
    a.ja(yes);
}

/// `lock gate->field += delta` if the gate record exists. Clobbers r0-r5.
fn gate_add(a: &mut Asm, field: i16, delta: i32) {
    let skip = a.fresh_label("no_gate");
    lookup_gate(a);
    a.jeq(R0, 0, skip.clone());
    a.mov64(R1, delta);
    a.atomic_add64(R0, field, R1);
    a.label(skip);
}

/// `r7` = the connection's remote port in host order, from
/// `ops->remote_port` (memory bytes `[0, 0, hi, lo]`).
fn remote_port(a: &mut Asm) {
    a.ldxw(R7, R6, sock_ops::REMOTE_PORT).comment("ops->remote_port: bytes [0, 0, hi, lo]");
    a.rsh64(R7, 16).be16(R7).comment("host order");
}

/// The connection's `l7_sock_key` at `r10 + KEY_AT`, zeroed first, from
/// the context in r6 (an IPv4 or IPv6 socket). Clobbers r1.
fn build_key(a: &mut Asm) {
    let ipv6 = a.fresh_label("key_ipv6");
    let ports = a.fresh_label("key_ports");
    a.note("the key at r10 - 48, zeroed: unused address words stay 0");
    for slot in 0..KEY_SLOTS {
        a.stdw(R10, KEY_AT + slot * 8, 0);
    }
    a.ldxw(R1, R6, sock_ops::FAMILY).comment("ops->family");
    a.stxw(R10, KEY_AT + key::FAMILY, R1);
    a.jeq(R1, family::INET6, ipv6.clone());

    a.note("IPv4: [remote_ip4, 0, 0, 0] and [local_ip4, 0, 0, 0]");
    a.ldxw(R1, R6, sock_ops::REMOTE_IP4).comment("ops->remote_ip4");
    a.stxw(R10, KEY_AT + key::REMOTE_IP, R1);
    a.ldxw(R1, R6, sock_ops::LOCAL_IP4).comment("ops->local_ip4");
    a.stxw(R10, KEY_AT + key::LOCAL_IP, R1);
    a.ja(ports.clone());

    a.label(ipv6);
    for word in 0..4i16 {
        a.ldxw(R1, R6, sock_ops::REMOTE_IP6 + 4 * word).comment(format!("ops->remote_ip6[{word}]"));
        a.stxw(R10, KEY_AT + key::REMOTE_IP + 4 * word, R1);
    }
    for word in 0..4i16 {
        a.ldxw(R1, R6, sock_ops::LOCAL_IP6 + 4 * word).comment(format!("ops->local_ip6[{word}]"));
        a.stxw(R10, KEY_AT + key::LOCAL_IP + 4 * word, R1);
    }

    a.label(ports);
    a.ldxw(R1, R6, sock_ops::REMOTE_PORT).comment("ops->remote_port, copied verbatim");
    a.stxw(R10, KEY_AT + key::REMOTE_PORT, R1);
    a.ldxw(R1, R6, sock_ops::LOCAL_PORT).comment("ops->local_port, copied verbatim");
    a.stxw(R10, KEY_AT + key::LOCAL_PORT, R1);
}

/// `bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
/// STATE_CB_FLAG)`: the program runs again when the socket closes.
fn ask_for_state_callbacks(a: &mut Asm, why: &str) {
    a.ldxw(R2, R6, sock_ops::CB_FLAGS).comment("ops->bpf_sock_ops_cb_flags");
    a.or64(R2, STATE_CB_FLAG);
    a.mov64(R1, R6);
    a.call(Helper::SockOpsCbFlagsSet).comment(why);
}

fn build() -> Result<Program, AsmError> {
    let mut a = Asm::new();
    a.note("l7c sock_ops enrollment program (abi/src/enroll.rs)");
    a.mov64(R6, R1).comment("r6 = struct bpf_sock_ops *");
    a.ldxw(R1, R6, sock_ops::OP).comment("ops->op");
    a.jeq(R1, op::TCP_CONNECT_CB, "reserve");
    a.jeq(R1, op::STATE_CB, "state");
    a.jne(R1, op::ACTIVE_ESTABLISHED_CB, "done")
        .comment("only connections this host opened (client side)");

    a.ldxw(R1, R6, sock_ops::FAMILY);
    a.jeq(R1, family::INET6, "established_inet");
    a.jne(R1, family::INET, "done").comment("neither IPv4 nor IPv6: not enrolled");
    a.label("established_inet");
    remote_port(&mut a);
    governed(&mut a, R7, "enroll", "done");

    a.label("enroll");
    build_key(&mut a);
    a.note("sock_hash_update(ops, &l7_sockets, &key, BPF_ANY)");
    a.mov64(R1, R6);
    a.ld_map(R2, abi::maps::SOCKETS);
    a.mov64(R3, R10);
    a.add64(R3, i32::from(KEY_AT));
    a.mov64(R4, BPF_ANY);
    a.call(Helper::SockHashUpdate);
    a.jeq(R0, 0, "enrolled");
    a.note("not enrolled (the map is full despite the gate): count it, the runtime reports it");
    gate_add(&mut a, abi::gate::UNENROLLED, 1);
    a.ja("done");

    a.label("enrolled");
    a.note("the record both directions share (abi::peer), zeroed: map_update_elem(&l7_peer, &key, &zeros, BPF_ANY)");
    a.note("(a record that cannot be made is a missing one, which the sk_msg program treats as lost)");
    for slot in 0..PEER_SLOTS {
        a.stdw(R10, PEER_AT + slot * 8, 0);
    }
    a.ld_map(R1, abi::maps::PEERS);
    a.mov64(R2, R10).add64(R2, i32::from(KEY_AT));
    a.mov64(R3, R10).add64(R3, i32::from(PEER_AT));
    a.mov64(R4, BPF_ANY);
    a.call(Helper::MapUpdateElem);
    ask_for_state_callbacks(&mut a, "STATE_CB: the close deletes the record");
    a.ja("done");

    a.label("reserve");
    a.note("TCP_CONNECT_CB: a governed connection takes one unit of capacity");
    a.ldxw(R1, R6, sock_ops::FAMILY);
    a.jeq(R1, family::INET6, "reserve_inet");
    a.jne(R1, family::INET, "done");
    a.label("reserve_inet");
    remote_port(&mut a);
    governed(&mut a, R7, "reserve_governed", "done");
    a.label("reserve_governed");
    a.ldxdw(R1, R6, sock_ops::SK).comment("ops->sk");
    a.jeq(R1, 0, "done");
    a.mov64(R2, R1);
    a.ld_map(R1, abi::maps::GATE_MARKS);
    a.mov64(R3, 0).mov64(R4, F_CREATE);
    a.call(Helper::SkStorageGet).comment("the socket's mark, created at 0");
    a.jeq(R0, 0, "done");
    a.ldxw(R1, R0, 0);
    a.jne(R1, 0, "done").comment("already holds a unit");
    a.stw(R0, 0, 1);
    gate_add(&mut a, abi::gate::USED, 1);
    ask_for_state_callbacks(&mut a, "STATE_CB: the close gives the unit back");
    a.ja("done");

    a.label("state");
    a.ldxw(R1, R6, sock_ops::ARG1).comment("ops->args[1]: the new state");
    a.jne(R1, TCP_CLOSE, "done");
    a.note("STATE_CB into TCP_CLOSE: the connection's l7_peer record goes (none: nothing happens)");
    a.ldxw(R1, R6, sock_ops::FAMILY);
    a.jeq(R1, family::INET6, "close_inet");
    a.jne(R1, family::INET, "release");
    a.label("close_inet");
    build_key(&mut a);
    a.ld_map(R1, abi::maps::PEERS);
    a.mov64(R2, R10).add64(R2, i32::from(KEY_AT));
    a.call(Helper::MapDeleteElem);

    a.label("release");
    a.note("and a marked socket gives its unit of capacity back");
    a.ldxdw(R1, R6, sock_ops::SK).comment("ops->sk");
    a.jeq(R1, 0, "done");
    a.mov64(R2, R1);
    a.ld_map(R1, abi::maps::GATE_MARKS);
    a.mov64(R3, 0).mov64(R4, 0);
    a.call(Helper::SkStorageGet);
    a.jeq(R0, 0, "done");
    a.ldxw(R1, R0, 0);
    a.jeq(R1, 0, "done");
    a.stw(R0, 0, 0);
    gate_add(&mut a, abi::gate::USED, -1);

    a.label("done");
    a.mov64(R0, 1);
    a.exit();
    a.finish()
}

/// The gate: a cgroup `connect4`/`connect6` program that refuses a
/// governed `connect()` when the generation's capacity is used up, and a
/// governed stream socket that is not TCP (module docs, "Capacity").
/// Returns 1 (let the kernel connect) or 0 (`connect()` fails with
/// `EPERM`). The same instructions serve both attach types.
pub mod gate {
    use super::{gate_add, governed, lookup_gate};
    use crate as abi;
    use l7c_bpf::bpf::{Asm, AsmError, Program, R0, R1, R2, R6, R7};

    /// Symbol names of the two programs (one per attach type).
    pub const PROGRAM_NAME_4: &str = "l7c_gate4";
    pub const PROGRAM_NAME_6: &str = "l7c_gate6";
    /// `struct bpf_sock_addr` offsets.
    const USER_PORT: i16 = 24;
    const TYPE: i16 = 32;
    const PROTOCOL: i16 = 36;
    const SOCK_STREAM: i32 = 1;
    const IPPROTO_TCP: i32 = 6;

    /// Symbol name of the socket-creation half ([`socket_program`]).
    pub const PROGRAM_NAME_SOCKET: &str = "l7c_gate_sock";
    /// `struct bpf_sock` offsets (the `cgroup/sock_create` context).
    const SOCK_FAMILY: i16 = 4;
    const SOCK_TYPE: i16 = 8;
    const SOCK_PROTOCOL: i16 = 12;
    const AF_INET: i32 = 2;
    const AF_INET6: i32 = 10;

    pub fn program() -> Program {
        // Cannot fail: a fixed program with its labels defined (tested).
        #[allow(clippy::expect_used)]
        build().expect("the fixed gate assembles")
    }

    /// The gate's socket-creation half, a cgroup `sock_create` program:
    /// `socket()` of an IPv4/IPv6 stream socket that is not TCP (MPTCP,
    /// SCTP) fails with `EPERM`, counted in `refused_protocol`. Why at
    /// `socket()` and not at `connect()`: an MPTCP socket connects through
    /// a TCP subflow, which is what the `connect` hook and `sock_ops` see
    /// (protocol 6), while the application writes to the MPTCP socket
    /// and its bytes reach the subflow without passing `sk_msg` — measured:
    /// a denied request reached the server. Subflows are kernel sockets,
    /// which this hook does not see, so TCP itself is untouched.
    pub fn socket_program() -> Program {
        // Cannot fail: a fixed program with its labels defined (tested).
        #[allow(clippy::expect_used)]
        build_socket().expect("the fixed socket gate assembles")
    }

    fn build_socket() -> Result<Program, AsmError> {
        let mut a = Asm::new();
        a.note("l7c enrollment gate, socket() half (abi/src/enroll.rs): only TCP among IP stream sockets");
        a.ldxw(R2, R1, SOCK_FAMILY).comment("sk->family");
        a.jeq(R2, AF_INET, "inet");
        a.jne(R2, AF_INET6, "allow");
        a.label("inet");
        a.ldxw(R2, R1, SOCK_TYPE).comment("sk->type");
        a.jne(R2, SOCK_STREAM, "allow");
        a.ldxw(R2, R1, SOCK_PROTOCOL).comment("sk->protocol");
        a.jeq(R2, IPPROTO_TCP, "allow");
        gate_add(&mut a, abi::gate::REFUSED_PROTOCOL, 1);
        a.mov64(R0, 0).comment("socket() fails with EPERM");
        a.exit();
        a.label("allow");
        a.mov64(R0, 1);
        a.exit();
        a.finish()
    }

    fn build() -> Result<Program, AsmError> {
        let mut a = Asm::new();
        a.note("l7c enrollment gate (abi/src/enroll.rs): connect() of a governed connection needs capacity");
        a.mov64(R6, R1).comment("r6 = struct bpf_sock_addr *");
        a.ldxw(R1, R6, TYPE).comment("ctx->type");
        a.jne(R1, SOCK_STREAM, "allow").comment("datagrams are not governed");
        a.ldxw(R7, R6, USER_PORT).comment("ctx->user_port: network order");
        a.be16(R7).comment("host order");
        governed(&mut a, R7, "governed", "allow");
        a.label("governed");
        a.ldxw(R1, R6, PROTOCOL).comment("ctx->protocol");
        a.jeq(R1, IPPROTO_TCP, "tcp");
        a.note("a stream socket that is not TCP (MPTCP, SCTP): sk_msg cannot see its bytes");
        gate_add(&mut a, abi::gate::REFUSED_PROTOCOL, 1);
        a.ja("refuse");
        a.label("tcp");
        lookup_gate(&mut a);
        a.jeq(R0, 0, "refuse").comment("no gate record: refuse (fail closed)");
        a.ldxdw(R1, R0, abi::gate::USED).comment("gate->used");
        a.ldxdw(R2, R0, abi::gate::CAPACITY).comment("gate->capacity");
        a.jlt(R1, R2, "allow");
        a.mov64(R1, 1);
        a.atomic_add64(R0, abi::gate::REFUSED_FULL, R1).comment("gate->refused_full += 1");
        a.label("refuse");
        a.mov64(R0, 0).comment("connect() fails with EPERM");
        a.exit();
        a.label("allow");
        a.mov64(R0, 1);
        a.exit();
        a.finish()
    }
}

/// The `TCP_ULP` guard: a cgroup `setsockopt` program that refuses
/// `setsockopt(SOL_TCP, TCP_ULP, ...)` (EPERM) to the cgroup's sockets.
///
/// Why: an enrolled socket that gets the `tls` ULP but no `TLS_TX` key —
/// what a TLS library leaves behind when the kernel refuses kTLS on a
/// socket in a socket map (`EINVAL`, current stable kernels) or the cipher
/// — stops running its `sk_msg` program as soon as any other socket
/// attaches the ULP (measured in the kTLS test bed on 6.1.187 and
/// 6.1.192: a send that had to be dropped went out, 0 runs). With the
/// guard the library's kTLS attempt fails at `TCP_ULP`, it stays in user
/// space, and the policy judges its records (`opaque`). `l7c run` attaches
/// it next to the enrollment program (docs/runtime.md, "kTLS").
pub mod ulp_guard {
    use l7c_bpf::bpf::{Asm, AsmError, Program, R0, R1, R2};

    /// Its ELF-style section and symbol name.
    pub const SECTION: &str = "cgroup/setsockopt";
    pub const PROGRAM_NAME: &str = "l7c_ulp_guard";
    /// `struct bpf_sockopt` offsets.
    const LEVEL: i16 = 24;
    const OPTNAME: i16 = 28;
    const SOL_TCP: i32 = 6;
    const TCP_ULP: i32 = 31;

    pub fn program() -> Program {
        // Cannot fail: a fixed program with its labels defined (tested).
        #[allow(clippy::expect_used)]
        build().expect("the fixed TCP_ULP guard assembles")
    }

    fn build() -> Result<Program, AsmError> {
        let mut a = Asm::new();
        a.note("l7c TCP_ULP guard (abi/src/enroll.rs): refuse setsockopt(SOL_TCP, TCP_ULP); pass everything else");
        a.ldxw(R2, R1, LEVEL).comment("ctx->level");
        a.jne(R2, SOL_TCP, "allow");
        a.ldxw(R2, R1, OPTNAME).comment("ctx->optname");
        a.jne(R2, TCP_ULP, "allow");
        a.mov64(R0, 0).comment("refuse: setsockopt fails with EPERM");
        a.exit();
        a.label("allow");
        a.mov64(R0, 1).comment("let the kernel handle it");
        a.exit();
        a.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7c_bpf::bpf::Insn;

    #[test]
    fn assembles_and_names_the_socket_map_and_the_gate() {
        let program = build().expect("the enrollment program assembles");
        let mut maps = program.maps();
        maps.sort_unstable();
        maps.dedup();
        assert_eq!(
            maps,
            vec![abi::maps::GATE, abi::maps::GATE_MARKS, abi::maps::GATE_PORTS, abi::maps::PEERS, abi::maps::SOCKETS]
        );
        assert_eq!(program, super::program());
        // Ends with `r0 = 1; exit`: every path returns 1.
        let insns = program.insns();
        assert!(matches!(insns.last(), Some(Insn::Exit)));
    }

    #[test]
    fn the_record_is_made_after_enrollment_and_deleted_at_close() {
        let program = program();
        let insns = program.insns();
        let calls: Vec<(usize, Helper)> = insns
            .iter()
            .enumerate()
            .filter_map(|(i, insn)| match insn {
                Insn::Call { helper } => Some((i, *helper)),
                _ => None,
            })
            .collect();
        let at = |helper: Helper| calls.iter().filter(|(_, h)| *h == helper).map(|(i, _)| *i).collect::<Vec<_>>();
        let (enroll, update, delete) = (at(Helper::SockHashUpdate), at(Helper::MapUpdateElem), at(Helper::MapDeleteElem));
        assert_eq!((enroll.len(), update.len(), delete.len()), (1, 1, 1), "{}", program.listing());
        assert!(enroll[0] < update[0], "the record comes after the enrollment");
        // The update's value is 64 zeroed bytes at PEER_AT, below every
        // other stack use.
        const { assert!(PEER_AT + abi::peer::SIZE as i16 <= LOOKUP_KEY_AT && PEER_AT % 8 == 0) };
        let listing = program.listing();
        assert_eq!(listing.matches("STATE_CB:").count(), 2, "both the reservation and the enrollment ask for STATE_CB: {listing}");
        // The deletion is on the close path, past the TCP_CLOSE test.
        let close_test = insns
            .iter()
            .position(|insn| matches!(insn, Insn::Jmp { src: l7c_bpf::bpf::Operand::Imm(imm), .. } if *imm == TCP_CLOSE))
            .expect("the close test");
        assert!(close_test < delete[0]);
    }

    #[test]
    fn the_ulp_guard_refuses_only_tcp_ulp() {
        let listing = ulp_guard::program().listing();
        assert!(listing.contains("if r2 != 6 goto") && listing.contains("if r2 != 31 goto"), "{listing}");
        assert_eq!(ulp_guard::program().insns().len(), 8);
    }

    #[test]
    fn the_key_fits_the_zeroed_stack_slots() {
        // Every field written lies inside the 48 zeroed bytes at KEY_AT.
        const { assert!(key::SIZE <= KEY_SLOTS * 8) };
        assert_eq!(key::LOCAL_PORT + 4, key::SIZE);
        assert_eq!(key::SIZE as usize, crate::sock_key::SIZE);
        // The IPv6 words fill exactly the address fields.
        assert_eq!(key::REMOTE_IP + 16, key::LOCAL_IP);
        assert_eq!(key::LOCAL_IP + 16, key::REMOTE_PORT);
        assert_eq!(sock_ops::REMOTE_IP6 + 16, sock_ops::LOCAL_IP6);
    }

    #[test]
    fn the_server_side_callback_is_not_enrolled() {
        // The only op compared is ACTIVE_ESTABLISHED_CB.
        let listing = program().listing();
        assert!(listing.contains(&format!("if r1 != {} goto", op::ACTIVE_ESTABLISHED_CB)));
        assert!(!listing.contains(&format!("== {} goto", op::PASSIVE_ESTABLISHED_CB)));
    }

    #[test]
    fn listing_snapshot() {
        insta::assert_snapshot!(program().listing());
    }

    #[test]
    fn gate_listing_snapshot() {
        insta::assert_snapshot!(gate::program().listing());
    }

    #[test]
    fn the_gate_refuses_by_returning_zero_and_reads_only_the_gate_maps() {
        let program = gate::program();
        let mut maps = program.maps();
        maps.sort_unstable();
        maps.dedup();
        assert_eq!(maps, vec![abi::maps::GATE, abi::maps::GATE_PORTS]);
        let listing = program.listing();
        assert!(listing.contains("r0 = 0"), "{listing}");
        assert!(listing.contains(&format!("if r1 != {} goto", 1)), "only SOCK_STREAM is looked at: {listing}");
    }

    #[test]
    fn every_reservation_is_marked_and_released_only_when_marked() {
        // One `+= 1` on `used` (reserve) and one `+= -1` (release), each
        // behind the mark test; the release only on TCP_CLOSE.
        let listing = program().listing();
        assert!(listing.contains(&format!("if r1 != {TCP_CLOSE} goto")), "{listing}");
        assert_eq!(listing.matches("lock *(u64 *)(r0 + 8) += r1").count(), 2, "{listing}");
    }

    #[test]
    fn the_port_bitmap_matches_the_abi() {
        let words = abi::gate::port_words(Some(&[80, 8080, 65535]));
        assert_eq!(words.len(), abi::gate::PORT_WORDS as usize);
        assert_eq!(words[80 / 32], 1 << (80 % 32));
        assert_eq!(words[8080 / 32], 1 << (8080 % 32));
        assert_eq!(words[2047], 1 << 31);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 3);
        let gate = abi::gate::Gate { capacity: 7, used: 3, refused_full: 2, refused_protocol: 1, unenrolled: 0, all_ports: 1, events_lost: 9 };
        assert_eq!(abi::gate::Gate::from_bytes(&gate.to_bytes()), Some(gate));
        assert_eq!(gate.to_bytes().len(), abi::gate::SIZE as usize);
    }
}
