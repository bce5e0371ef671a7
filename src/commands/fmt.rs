//! `l7c fmt [--check] FILE...`: rewrite files in the one canonical layout.
//! A file that does not parse is reported and left as it is.

use crate::{files_arg, usage_error, Status};
use l7c_compiler::{driver, fmt, report};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Report files that are not formatted (exit 1) instead of rewriting them
    #[arg(long)]
    check: bool,
    /// Policy files
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Status {
    if let Err(status) = files_arg(&args.files) {
        return status;
    }
    let mut status = Status::Ok;
    for path in &args.files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => return usage_error(format!("cannot read `{}`: {error}", path.display())),
        };
        let formatted = match fmt::format_source(&text) {
            Ok(formatted) => formatted,
            Err(fmt::FormatError::Internal(error)) => {
                // The formatter refused its own output: never write it.
                eprintln!("error: {}: {error}; the file was left as it was (please report this)", path.display());
                status = Status::Failed;
                continue;
            }
            Err(fmt::FormatError::Parse(_)) => {
                // Let the compiler say what is wrong, with its spans.
                let compilation = driver::compile_text(&path.display().to_string(), &text, None);
                eprint!("{}", report::human(&compilation.diagnostics, &compilation.sources));
                status = Status::Failed;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            crate::outln!("would reformat {}", path.display());
            status = Status::Failed;
        } else if let Err(error) = std::fs::write(path, formatted) {
            return usage_error(format!("cannot write `{}`: {error}", path.display()));
        } else {
            crate::outln!("formatted {}", path.display());
        }
    }
    status
}
