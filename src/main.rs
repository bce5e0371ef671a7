//! `l7c`: the command line of shared/spec/cli.md.
//!
//! Exit codes everywhere: 0 success; 1 the input was judged and found
//! wanting (errors, failing tests, `fmt --check` differences); 2 usage or
//! I/O errors. Each command lives in its own module under `commands/`.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "l7c", version, about = "Compile and test HTTP policies enforced in the Linux kernel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, resolve imports, type-check and lint policy files
    Check(commands::check::Args),
    /// Rewrite files in the one canonical layout
    Fmt(commands::fmt::Args),
    /// Run the `test` blocks of policy files
    Test(commands::test::Args),
    /// Compile a policy to a BPF object (or its listing, or a report)
    Compile(commands::compile::Args),
    /// Evaluate one client byte stream and print the verdicts as JSON
    Eval(commands::eval::Args),
    /// Show, for one stream, canonicalization, each rule tried, and the verdicts
    Explain(commands::explain::Args),
    /// Enforce a policy on the TCP connections of a cgroup (it stays in force after the agent exits)
    Run(commands::run::Args),
    /// Lift the enforcement on a cgroup: stop its agent, remove everything from the kernel
    Stop(commands::stop::Args),
    /// Show what is enforced on this node: cgroups, policies, generations, connections
    Status(commands::status::Args),
    /// Report what this kernel offers, each capability tried for real
    Probe(commands::probe::Args),
}

/// Which engine judges the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The reference evaluator (the executable specification)
    Ref,
    /// The compiled program in the running kernel (needs root)
    Kernel,
    /// Every engine, each compared with the reference
    All,
}

/// The outcome of a command, mapped to cli.md's exit codes.
pub enum Status {
    Ok,
    /// The input was judged and found wanting.
    Failed,
    /// A usage or I/O error, already reported.
    Usage,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        match status {
            Status::Ok => ExitCode::SUCCESS,
            Status::Failed => ExitCode::from(1),
            Status::Usage => ExitCode::from(2),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Check(args) => commands::check::run(args),
        Command::Fmt(args) => commands::fmt::run(args),
        Command::Test(args) => commands::test::run(args),
        Command::Compile(args) => commands::compile::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Explain(args) => commands::explain::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Stop(args) => commands::stop::run(args),
        Command::Status(args) => commands::status::run(args),
    }
    .into()
}

/// Write to standard output. A reader that went away (`l7c ... | head`)
/// ends the process quietly with the conventional SIGPIPE status instead of
/// a panic; any other write error is reported.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
#[macro_export]
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to standard output: {error}");
        }
        std::process::exit(141);
    }
}

/// Report an I/O or usage problem on stderr, in the one format every
/// command uses.
pub fn usage_error(message: impl std::fmt::Display) -> Status {
    eprintln!("error: {message}");
    Status::Usage
}

/// Every path argument must exist; directories are not walked (a shell glob
/// names the files).
pub fn files_arg(files: &[PathBuf]) -> Result<(), Status> {
    if files.is_empty() {
        return Err(usage_error("no input files"));
    }
    Ok(())
}
