//! The l7c compiler: the `.l7` language from source text to a checked
//! policy model, the reference evaluator that defines its meaning, and the
//! back end that compiles it to a BPF `sk_msg` program. This file is the
//! map; docs/architecture.md has the same map with the folders.
//!
//! ```text
//! text ─syntax─▶ ast ─resolve─▶ model::Program ─check─▶ Checked ─┬─eval──────────────────────────▶ verdicts (the spec)
//!                                                                 └─lower─▶ tables ─codegen─▶ object ─▶ runtime (the kernel)
//! ```
//!
//! Each stage takes the previous stage's type. The reference evaluator and
//! the back end share only vocabulary (`http`, `verdict`, `model`) and the
//! ABI the generated program and user space agree on (`abi`); no back-end
//! module imports `eval` (tests/architecture.rs).

// Vocabulary shared by every stage and engine (`http`, `verdict`, in the
// crate `l7c-abi` with the ABI the back end and the runtime share).
pub use l7c_abi::{http, verdict};
pub mod model;

// Front end: source text to a checked program, with diagnostics.
pub mod check;
pub mod diagnostic;
pub mod driver;
pub mod resolve;
pub mod source;
pub mod stdlib;
pub mod syntax;

// The reference evaluator: the executable specification.
pub mod eval;

// Back end: lowering, the policy-independent scanner, the generated
// program; the ABI with user space and the cgroup programs around the
// verdict live in `l7c-abi` (`abi/`), which the runtime uses without the
// compiler.
pub use l7c_abi as abi;
pub use l7c_abi::enroll;
pub mod codegen;
pub mod lower;
pub mod scan;
/// The BPF assembler and ELF writer live in their own crate (`bpf/`), a
/// leaf that knows no policy; re-exported here under their old paths.
pub use l7c_bpf::{bpf, elf};

// Tools: formatting, rendering diagnostics, the test runner, text shown
// to people.
pub mod fmt;
pub mod report;
pub mod testing;
pub mod text;
