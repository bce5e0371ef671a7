//! `l7c check FILE... [--format human|json|sarif] [--deny-warnings]`
//!
//! The front end's diagnostics, then — when it found no error — what the
//! code generator would refuse (`codegen::deployment_diagnostics`), so CI
//! learns of an undeployable policy without root.

use crate::{files_arg, usage_error, Status};
use clap::ValueEnum;
use l7c_compiler::diagnostic::Severity;
use l7c_compiler::{codegen, driver, report};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Policy files, compiled together
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Fail (exit 1) on warnings too
    #[arg(long)]
    deny_warnings: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
}

pub fn run(args: Args) -> Status {
    if let Err(status) = files_arg(&args.files) {
        return status;
    }
    let mut compilation = match driver::compile_paths(&args.files) {
        Ok(c) => c,
        Err(error) => return usage_error(error),
    };
    // What the back end would refuse is found here too, without root: a
    // policy that checks but cannot be deployed is an error of `check`.
    if !compilation.diagnostics.has_errors() {
        if let Some(checked) = &compilation.checked {
            for diagnostic in codegen::deployment_diagnostics(checked) {
                compilation.diagnostics.push(diagnostic);
            }
        }
    }
    let diagnostics = &compilation.diagnostics;
    match args.format {
        Format::Human => {
            // Diagnostics go to stderr like a compiler's; a clean run says
            // so on stdout, so a person sees that something happened.
            if !diagnostics.is_empty() {
                eprint!("{}", report::human(diagnostics, &compilation.sources));
            }
            if !diagnostics.has_errors() {
                let policies = compilation.checked.as_ref().map_or(0, |c| c.program().policies.len());
                let files = args.files.len();
                crate::outln!(
                    "checked {files} {}: {policies} {}",
                    if files == 1 { "file" } else { "files" },
                    if policies == 1 { "policy" } else { "policies" }
                );
            }
        }
        Format::Json => crate::outln!("{}", report::json(diagnostics, &compilation.sources)),
        Format::Sarif => crate::outln!("{:#}", report::sarif(diagnostics, &compilation.sources)),
    }
    let warnings = diagnostics.iter().any(|d| d.severity == Severity::Warning);
    if diagnostics.has_errors() || (args.deny_warnings && warnings) {
        Status::Failed
    } else {
        Status::Ok
    }
}
