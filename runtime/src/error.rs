//! `KernelError`: why loading a program or driving a connection failed.
//!
//! Every variant names the step (the syscall or `bpf(2)` command, and the
//! map or program it was about), the errno where there is one, and says in
//! `help` what the user can do. Messages follow the project's guide:
//! lowercase, no trailing period, names in backticks.

use crate::errno::Errno;
use crate::privileges::PRIVILEGE_HELP;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum KernelError {
    /// The kernel refused a BPF operation for lack of privilege.
    #[error("{step} failed with {errno}: this needs privileges the process does not have")]
    #[diagnostic(code("l7::kernel::not-permitted"), help("{}", PRIVILEGE_HELP))]
    NotPermitted { step: String, errno: Errno },

    /// The verifier refused the program.
    #[error("the kernel verifier refused program `{program}` (BPF_PROG_LOAD failed with {errno}); its last words:\n{log_tail}")]
    #[diagnostic(
        code("l7::kernel::verifier"),
        help("the log numbers instructions as `l7c compile --emit asm` does; a refusal of compiler output is an l7c bug: report it with the policy")
    )]
    VerifierRejected {
        program: String,
        errno: Errno,
        log_tail: String,
    },

    /// The object could not be parsed or prepared (relocations, BTF).
    #[error("cannot load the BPF object: {reason}")]
    #[diagnostic(
        code("l7::kernel::object"),
        help("load an object written by this version of `l7c compile`")
    )]
    BadObject { reason: String },

    /// A map of the object could not be created.
    #[error("BPF_MAP_CREATE of map `{map}` failed with {errno}")]
    #[diagnostic(code("l7::kernel::map-create"), help("{help}"))]
    MapCreate {
        map: String,
        errno: Errno,
        help: String,
    },

    /// The object lacks a program the caller named.
    #[error("the object has no sk_msg program `{name}` (it has: {available})")]
    #[diagnostic(
        code("l7::kernel::no-program"),
        help("name the program by its symbol, as `llvm-objdump -t` lists it")
    )]
    NoProgram { name: String, available: String },

    /// The object lacks a map the caller named.
    #[error("the object has no map `{name}` (it has: {available})")]
    #[diagnostic(
        code("l7::kernel::no-map"),
        help("name the map as the object's `.maps` section does (`bpftool btf dump file OBJ`)")
    )]
    NoMap { name: String, available: String },

    /// A map exists but is of the wrong type or shape for the use.
    #[error("map `{name}` cannot be used {purpose}: {problem}")]
    #[diagnostic(code("l7::kernel::map-shape"), help("the object and this runtime disagree about the map's layout; rebuild both from one l7c"))]
    MapShape {
        name: String,
        purpose: String,
        problem: String,
    },

    /// A syscall of the runtime (socket, map element, attach) failed.
    #[error("{step} failed with {errno}")]
    #[diagnostic(code("l7::kernel::syscall"), help("{help}"))]
    Syscall {
        step: String,
        errno: Errno,
        help: String,
    },

    /// The run asked for something the kernel engine cannot do here (a
    /// connection address off loopback, a policy without the ABI's maps).
    #[error("the kernel engine cannot run {what}")]
    #[diagnostic(code("l7::kernel::unsupported"), help("{help}"))]
    Unsupported { what: String, help: String },

    /// The program wrote an event this runtime cannot read as `abi.rs`
    /// says (or one that names a policy or rule `.l7.meta` does not have).
    #[error("unreadable verdict event: {reason}")]
    #[diagnostic(code("l7::kernel::event"), help("the program and this runtime disagree about `abi::Event`; rebuild both from one l7c (a mismatch in compiler output is an l7c bug)"))]
    BadEvent { reason: String },

    /// Bytes reached a redirect target that the verdicts did not send there
    /// (or did not reach it though they did).
    #[error("the program misrouted bytes: {what}")]
    #[diagnostic(code("l7::kernel::misrouted"), help("the program sent bytes where its verdicts do not say: an l7c bug; report it with the policy and the input"))]
    Misrouted { what: String },

    /// The peer did not see the end of the stream in time.
    #[error("{what} timed out after {millis} ms ({received} bytes received)")]
    #[diagnostic(code("l7::kernel::timeout"), help("the connection did not close in time; raise the timeout or look for bytes the program held back"))]
    Timeout {
        what: String,
        millis: u128,
        received: usize,
    },
}

impl KernelError {
    /// Whether the failure was a missing privilege (the CLI exits 2 and
    /// says so).
    pub fn is_permission(&self) -> bool {
        matches!(self, KernelError::NotPermitted { .. })
    }

    /// Whether this kernel lacks something the program needs (socket maps,
    /// a map type, a helper) rather than privileges or a bad object.
    pub fn is_unsupported(&self) -> bool {
        match self {
            KernelError::MapCreate { errno, .. } | KernelError::Syscall { errno, .. } => {
                matches!(*errno, Errno::EINVAL | Errno::EOPNOTSUPP) || errno.0 == libc::ENOSYS
            }
            _ => false,
        }
    }

    /// `step` failed with `errno`: a permission error for `EPERM`, a plain
    /// syscall error (with `help`) otherwise.
    pub(crate) fn syscall(step: impl Into<String>, errno: Errno, help: &str) -> KernelError {
        if errno == Errno::EPERM {
            KernelError::NotPermitted {
                step: step.into(),
                errno,
            }
        } else {
            KernelError::Syscall {
                step: step.into(),
                errno,
                help: help.to_owned(),
            }
        }
    }
}
