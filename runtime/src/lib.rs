//! The kernel side of l7c's test engine: load a compiled `sk_msg` program
//! into the running kernel and watch what it does to a real TCP stream.
//!
//! - [`loader`]: [`KernelProgram::load`] creates the object's maps, loads
//!   its `sk_msg` program (typed errors carry the verifier's last words),
//!   attaches it to the socket map, and exposes the maps: counters, ring
//!   buffer events, arrays, sockets.
//! - [`harness`]: a loopback connection whose client socket is enrolled in
//!   the program's socket map, redirect targets bound to their slots, and
//!   [`harness::run`], which sends an input cut into `send()` calls and
//!   reports what the peer and each target received ([`KernelRun`]).
//! - [`engine`]: the kernel engine of `l7c eval --engine kernel`: a
//!   compiled policy's verdicts on one stream, as the reference evaluator
//!   reports them ([`engine::evaluate`], [`engine::KernelEngine`]).
//! - [`key`]: [`SockKey`], the enrollment map's key (a connection's
//!   4-tuple in the layout `bpf_sock_ops` gives it).
//! - [`run`]: `l7c run`: a [`Session`] enforces a policy on the
//!   connections of a cgroup ([`cgroup`]: checks and the enrollment link),
//!   reloads it without dropping connections, and reports [`metrics`] and
//!   [`events`]; [`supervise`] is the agent's loop around it (signals,
//!   file watcher, reloads on a thread, the events sink, metrics), and
//!   [`signals`] are the flags it reads.
//! - [`pins`]: where a running policy lives outside the process (bpffs
//!   pins, the state file, the agent lock), so a crash changes nothing.
//! - [`existing`]: connections established before the policy was
//!   (not enrolled): found, counted, and ended with `--existing reset`.
//! - [`node`]: `l7c status` and `l7c stop`: what is pinned on this node,
//!   and lifting it.
//! - [`probe`]: `l7c probe`: each kernel capability tried for real.
//! - [`tfo`]: client TCP Fast Open, turned off while a policy is in force
//!   (it would let bytes pass unjudged).
//!
//! - [`privileges`]: the one list of capabilities l7c needs, checked
//!   before a command starts and named in every refusal.
//!
//! Everything here needs the capabilities of [`privileges::REQUIRED`];
//! without them the errors say so ([`KernelError::is_permission`]).
//!
//! The kernel behaviour this relies on is measured by `tests/mechanics.rs`
//! and written down in `docs/kernel-mechanics.md`.

pub mod answerer;
pub mod cgroup;
pub mod engine;
pub mod errno;
pub mod error;
pub mod events;
pub mod existing;
pub mod harness;
pub mod key;
pub mod loader;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod pins;
pub mod privileges;
pub mod probe;
pub mod run;
pub mod signals;
pub mod supervise;
mod sys;
pub mod tfo;

pub use errno::Errno;
pub use error::KernelError;
pub use privileges::PRIVILEGE_HELP;
pub use harness::{Connection, Endpoints, KernelRun, RunSpec};
pub use key::{SockKey, SOCK_KEY_SIZE};
pub use loader::{KernelProgram, LoadOptions, MapShape};
pub use run::{RunConfig, RunError, Session};

/// Whether the process runs with an effective uid of 0 (the tests' gate;
/// the loader itself reports a missing capability precisely).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
