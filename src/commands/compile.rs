//! `l7c compile FILE -o OUT [--emit obj|asm|report] [--target-kernel X.Y]
//! [--verify]`: a policy to its BPF object, its listing, or its figures.
//!
//! The output is deterministic: the same source gives the same bytes (the
//! report leaves out the compile time for that reason). `-o -`, or no `-o`
//! for `asm` and `report`, writes to standard output. `--verify` loads the
//! object into the running kernel (root) and adds the verifier's
//! processed-instruction count to the report.

use super::{compile_or_report, generate_or_report, has_kernel_privileges, kernel_engine_needs_root, kernel_failure};
use crate::{usage_error, Status};
use clap::ValueEnum;
use l7c_compiler::abi;
use l7c_compiler::codegen::Report;
use l7c_runtime::{KernelProgram, LoadOptions};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// A BPF ELF relocatable object
    Obj,
    /// The program as text in LLVM's BPF syntax
    Asm,
    /// Instruction count, bytes scanned, table sizes
    Report,
}

#[derive(clap::Args)]
pub struct Args {
    /// The policy file
    file: PathBuf,
    /// Where to write the output (`-`: standard output; required for `obj`)
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// What to write
    #[arg(long, value_enum, default_value = "obj")]
    emit: Emit,
    /// The oldest kernel the program must load on, as X.Y
    #[arg(long, value_name = "X.Y", value_parser = parse_kernel_version)]
    target_kernel: Option<(u32, u32)>,
    /// Load the program into the running kernel to verify it (needs root)
    #[arg(long)]
    verify: bool,
}

/// `X.Y` as (X, Y).
fn parse_kernel_version(text: &str) -> Result<(u32, u32), String> {
    let (major, minor) = text.split_once('.').ok_or_else(|| format!("`{text}` is not a kernel version X.Y"))?;
    let number = |part: &str| part.parse::<u32>().map_err(|_| format!("`{text}` is not a kernel version X.Y"));
    Ok((number(major)?, number(minor)?))
}

pub fn run(args: Args) -> Status {
    if args.emit == Emit::Obj && args.output.is_none() {
        return usage_error("`--emit obj` writes a binary object: name it with `-o OUT.o` (or `-o -` for standard output)");
    }
    if args.verify && !has_kernel_privileges() {
        return kernel_engine_needs_root();
    }
    // One program serves every kernel from the minimum on: the target is
    // checked against it, nothing else depends on it.
    if let Some(target) = args.target_kernel {
        if let Err(error) = l7c_compiler::codegen::check_target(target) {
            eprint!("{}", l7c_compiler::report::render(&error));
            return Status::Failed;
        }
    }
    let (_, checked) = match compile_or_report(std::slice::from_ref(&args.file)) {
        Ok(compiled) => compiled,
        Err(status) => return status,
    };
    let compiled = match generate_or_report(&checked) {
        Ok(compiled) => compiled,
        Err(status) => return status,
    };
    let verified = if args.verify {
        match KernelProgram::load(
            &compiled.object,
            &LoadOptions {
                program: None,
                attach_map: Some(abi::maps::SOCKETS),
            },
        ) {
            Ok(program) => program.verified_instruction_count(),
            Err(error) => return kernel_failure(error),
        }
    } else {
        None
    };
    let bytes = match args.emit {
        Emit::Obj => compiled.object,
        Emit::Asm => compiled.listing.into_bytes(),
        Emit::Report => report_text(&compiled.report, args.verify.then_some(verified)).into_bytes(),
    };
    if args.verify && args.emit != Emit::Report {
        match verified {
            Some(count) => eprintln!("verified: the kernel's verifier processed {count} instructions"),
            None => eprintln!("verified: the kernel loaded the program (it does not report a processed-instruction count)"),
        }
    }
    match args.output.as_deref() {
        None => write_stdout(&bytes),
        Some(path) if path.as_os_str() == "-" => write_stdout(&bytes),
        Some(path) => match std::fs::write(path, &bytes) {
            Ok(()) => Status::Ok,
            Err(error) => usage_error(format!("cannot write `{}`: {error}", path.display())),
        },
    }
}

fn write_stdout(bytes: &[u8]) -> Status {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Status::Ok,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Status::Ok,
        Err(error) => usage_error(format!("cannot write to standard output: {error}")),
    }
}

/// `--emit report` for a person. `verified` is `Some` with `--verify`: the
/// verifier's count, if the kernel gave one.
pub fn report_text(report: &Report, verified: Option<Option<u32>>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "instructions: {}", report.instructions);
    let _ = writeln!(out, "largest number of request bytes scanned: {}", report.max_scan_bytes);
    if report.tables.is_empty() {
        let _ = writeln!(out, "tables: none");
    } else {
        let _ = writeln!(out, "tables:");
        for (name, bytes) in &report.tables {
            let _ = writeln!(out, "  {name}: {bytes} bytes");
        }
    }
    match verified {
        Some(Some(count)) => {
            let _ = writeln!(out, "verifier: {count} instructions processed");
        }
        Some(None) => {
            let _ = writeln!(out, "verifier: accepted (this kernel does not report a processed-instruction count)");
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_major_dot_minor() {
        assert_eq!(parse_kernel_version("5.15"), Ok((5, 15)));
        assert!(parse_kernel_version("5").is_err());
        assert!(parse_kernel_version("5.x").is_err());
    }

    #[test]
    fn reports_list_figures_and_the_verifier_count() {
        let report = Report {
            instructions: 120,
            max_scan_bytes: 8192,
            tables: vec![("l7_paths".into(), 512)],
            compile_micros: 99,
        };
        let text = report_text(&report, Some(Some(340)));
        assert_eq!(
            text,
            "instructions: 120\nlargest number of request bytes scanned: 8192\ntables:\n  l7_paths: 512 bytes\nverifier: 340 instructions processed\n"
        );
        assert!(!report_text(&report, None).contains("verifier"));
    }
}
