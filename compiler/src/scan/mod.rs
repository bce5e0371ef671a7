//! The table-driven HTTP scanners the BPF program runs: the request-head
//! machine and the chunked-body machine, as data (flat tables) plus
//! user-space walkers that are 1:1 models of the kernel's loop bodies.
//!
//! - [`HeadTables`]: one byte-class table (256 → [`HeadTables::class_count`]
//!   classes, shared by both head tables), the lexer table (`main`, entries
//!   `next | action << 8 | arg << 16`) and the value-syntax table (`sub`:
//!   the Host value with its IP literals, `Content-Length`,
//!   `Transfer-Encoding`, built with `regex-automata` and exported here).
//! - [`HeadScanner`] / [`walk_head`]: steps one byte at a time using only
//!   those tables and the fixed-size [`HeadState`]; the policy's automata are
//!   driven through [`HeadHooks`] at the points docs/scan.md lists.
//! - [`ChunkTables`] / [`ChunkScanner`]: the chunked-body framing, resumable
//!   across calls with its state in the fixed-size [`ChunkState`].
//!
//! Invariants:
//! - The walkers read nothing but their tables, their state struct, the
//!   current byte and the limits; every behaviour lives in the tables, the
//!   walker only runs the small fixed set of actions ([`Action`],
//!   [`ChunkAction`]). docs/scan.md gives the loop body as BPF pseudo-code.
//! - They agree with the reference evaluator (`eval::parse_head`,
//!   `eval`'s chunked framing) on every input: the same violation kind at the
//!   same offset, or the same head length and facts (tests/scan_*.rs). The
//!   tables are built from `http`'s character classes and the spec, not
//!   from the evaluator's code, so that comparing the two catches a
//!   mistake in either.
//! - Building is deterministic: the same tables every time.

mod chunk;
mod head;
mod hooks;
mod sub;
mod tables;
mod walk;

pub use chunk::{ChunkAction, ChunkScanner, ChunkState, ChunkStep, ChunkTables, MAX_CHUNK_LINE};
pub use head::{Action, Form, AFTER_CR_STATES, METHOD_GET_OR_HEAD};
pub use hooks::{HeaderId, HeadHooks, RecordedField, RecordingHooks};
pub use tables::{describe_classes, HeadTables, NameSkip, TableSizes, ValueSkip, MAIN_COLUMNS};
pub use walk::{walk_head, Framing, HeadFacts, HeadProgress, HeadScanner, HeadState, ScanError, Violation};

/// Why the scanner tables could not be built (a bug: the inputs are fixed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanBuildError {
    #[error("internal error building the {what}: {message}")]
    Internal { what: &'static str, message: String },
}
