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
//! The program always returns 1: a `sock_ops` program's return value only
//! matters for the callbacks that ask for a reply, none of which it handles.
//! A failed `sock_hash_update` (map full) leaves the connection unenrolled:
//! nothing in `sock_ops` can refuse a connection that is already
//! established (docs/runtime.md, "Limits").

use crate::abi;
use crate::bpf::{Asm, AsmError, Helper, Program, R0, R1, R10, R2, R3, R4, R6};

/// The program's ELF section: aya and libbpf read `sockops` as
/// `BPF_PROG_TYPE_SOCK_OPS`.
pub const SECTION: &str = "sockops";
/// Its function symbol (what `KernelProgram::attach_sock_ops` names).
pub const PROGRAM_NAME: &str = "l7c_enroll";

/// `enum bpf_sock_ops_cb` values the program looks at.
pub mod op {
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
}

/// Offsets in `struct l7_sock_key` (the same as `l7c_runtime::key::offset`).
pub mod key {
    pub const FAMILY: i16 = 0;
    pub const REMOTE_IP: i16 = 4;
    pub const LOCAL_IP: i16 = 20;
    pub const REMOTE_PORT: i16 = 36;
    pub const LOCAL_PORT: i16 = 40;
    /// Size of the key: the `key_size` of `l7_sockets`.
    pub const SIZE: i16 = 44;
}

/// Where the key lives on the stack: r10 - 48, so that six 8-byte stores
/// zero it (48 bytes, the key's 44 rounded up to the store width).
const KEY_AT: i16 = -48;
const KEY_SLOTS: i16 = 6;

/// `BPF_ANY`: enroll even if a stale element has the same 4-tuple (a
/// closed socket leaves the map when it closes, so none should).
const BPF_ANY: i32 = 0;

/// The enrollment program (module docs).
pub fn program() -> Program {
    // Cannot fail: the program is fixed (no input reaches it), its labels
    // are all defined and its one map name is valid; the unit tests
    // assemble it.
    #[allow(clippy::expect_used)]
    build().expect("the fixed enrollment program assembles")
}

fn build() -> Result<Program, AsmError> {
    let mut a = Asm::new();
    a.note("l7c sock_ops enrollment program (compiler/src/enroll.rs)");
    a.mov64(R6, R1).comment("r6 = struct bpf_sock_ops *");
    a.ldxw(R1, R6, sock_ops::OP).comment("ops->op");
    a.jne(R1, op::ACTIVE_ESTABLISHED_CB, "done")
        .comment("only connections this host opened (client side)");

    a.note("the key at r10 - 48, zeroed: unused address words stay 0");
    for slot in 0..KEY_SLOTS {
        a.stdw(R10, KEY_AT + slot * 8, 0);
    }
    a.ldxw(R1, R6, sock_ops::FAMILY).comment("ops->family");
    a.stxw(R10, KEY_AT + key::FAMILY, R1);
    a.jeq(R1, family::INET6, "ipv6");
    a.jne(R1, family::INET, "done").comment("neither IPv4 nor IPv6: not enrolled");

    a.note("IPv4: [remote_ip4, 0, 0, 0] and [local_ip4, 0, 0, 0]");
    a.ldxw(R1, R6, sock_ops::REMOTE_IP4).comment("ops->remote_ip4");
    a.stxw(R10, KEY_AT + key::REMOTE_IP, R1);
    a.ldxw(R1, R6, sock_ops::LOCAL_IP4).comment("ops->local_ip4");
    a.stxw(R10, KEY_AT + key::LOCAL_IP, R1);
    a.ja("ports");

    a.label("ipv6");
    for word in 0..4i16 {
        a.ldxw(R1, R6, sock_ops::REMOTE_IP6 + 4 * word).comment(format!("ops->remote_ip6[{word}]"));
        a.stxw(R10, KEY_AT + key::REMOTE_IP + 4 * word, R1);
    }
    for word in 0..4i16 {
        a.ldxw(R1, R6, sock_ops::LOCAL_IP6 + 4 * word).comment(format!("ops->local_ip6[{word}]"));
        a.stxw(R10, KEY_AT + key::LOCAL_IP + 4 * word, R1);
    }

    a.label("ports");
    a.ldxw(R1, R6, sock_ops::REMOTE_PORT).comment("ops->remote_port, copied verbatim");
    a.stxw(R10, KEY_AT + key::REMOTE_PORT, R1);
    a.ldxw(R1, R6, sock_ops::LOCAL_PORT).comment("ops->local_port, copied verbatim");
    a.stxw(R10, KEY_AT + key::LOCAL_PORT, R1);

    a.note("sock_hash_update(ops, &l7_sockets, &key, BPF_ANY)");
    a.mov64(R1, R6);
    a.ld_map(R2, abi::maps::SOCKETS);
    a.mov64(R3, R10);
    a.add64(R3, i32::from(KEY_AT));
    a.mov64(R4, BPF_ANY);
    a.call(Helper::SockHashUpdate)
        .comment("a full map leaves the connection unenrolled (nothing can refuse it here)");

    a.label("done");
    a.mov64(R0, 1);
    a.exit();
    a.finish()
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
    use crate::bpf::{Asm, AsmError, Program, R0, R1, R2};

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
        a.note("l7c TCP_ULP guard (compiler/src/enroll.rs): refuse setsockopt(SOL_TCP, TCP_ULP); pass everything else");
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
    use crate::bpf::Insn;

    #[test]
    fn assembles_and_names_only_the_socket_map() {
        let program = build().expect("the enrollment program assembles");
        assert_eq!(program.maps(), vec![abi::maps::SOCKETS]);
        assert_eq!(program, super::program());
        // Ends with `r0 = 1; exit`: every path returns 1.
        let insns = program.insns();
        assert!(matches!(insns.last(), Some(Insn::Exit)));
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
        assert!(key::SIZE <= KEY_SLOTS * 8);
        assert_eq!(key::LOCAL_PORT + 4, key::SIZE);
        assert_eq!(i32::from(key::SIZE), crate::codegen::layout::SOCK_KEY_BYTES as i32);
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
}
