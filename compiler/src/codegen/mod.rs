//! Code generation: a checked policy to one BPF `sk_msg` program and its
//! ELF object. (Being written; until it lands `compile` refuses.)

use crate::abi::Meta;
use crate::check::Checked;

/// What `l7c compile` produces.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The ELF object (`--emit obj`).
    pub object: Vec<u8>,
    /// The program in LLVM's BPF syntax with labels and comments (`--emit asm`).
    pub listing: String,
    /// Figures for `--emit report`.
    pub report: Report,
    /// What `.l7.meta` holds.
    pub meta: Meta,
}

/// Figures of one compilation (`--emit report`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub instructions: usize,
    /// The most request bytes one run scans (the largest `header_bytes`).
    pub max_scan_bytes: u32,
    /// Table name → bytes.
    pub tables: Vec<(String, usize)>,
    pub compile_micros: u128,
}

#[derive(Debug, Clone, Default)]
pub struct Options {}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CodegenError {
    #[error("the BPF code generator is not part of this build yet")]
    #[diagnostic(code(l7::codegen::unavailable))]
    Unavailable,
}

/// Compile a checked program to an object.
pub fn compile(_checked: &Checked, _options: &Options) -> Result<Compiled, CodegenError> {
    Err(CodegenError::Unavailable)
}
