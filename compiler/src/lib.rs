//! The l7c compiler: the `.l7` language from source text to a checked
//! policy model, and the reference evaluator that defines its meaning.
//!
//! The pipeline, one typed stage per module:
//! `syntax::parse` (text → [`syntax::ast::File`]) → `resolve` (files, imports
//! and names → [`model::Program`]) → `check` (errors and lints →
//! [`check::Checked`]) → `eval` (bytes → verdicts).

pub mod http;
pub mod model;
pub mod verdict;
pub mod source;
pub mod eval;
pub mod diagnostic;
pub mod syntax;
pub mod fmt;
pub mod resolve;
pub mod stdlib;
pub mod check;
pub mod driver;
pub mod report;
pub mod testing;
pub mod bpf;
pub mod elf;
pub mod lower;
pub mod text;
pub mod scan;
pub mod abi;
pub mod codegen;
pub mod enroll;
