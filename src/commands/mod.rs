//! One module per subcommand, plus what they share: compiling the named
//! files and reporting diagnostics, and the connection flags.

pub mod check;
pub mod compile;
pub mod eval;
pub mod explain;
pub mod fmt;
pub mod probe;
pub mod run;
pub mod status;
pub mod stop;
pub mod test;

/// `--format human|json` of the commands that print a report (`probe`,
/// `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HumanOrJson {
    Human,
    Json,
}

use crate::{usage_error, Status};
use clap::Args as ClapArgs;
use l7c_compiler::check::Checked;
use l7c_compiler::diagnostic::Diagnostics;
use l7c_compiler::codegen::{self, Compiled};
use l7c_runtime::privileges::Need;
use l7c_runtime::KernelError;
use l7c_compiler::driver::{self, Compilation};
use l7c_compiler::model::ConnectionInfo;
use l7c_compiler::report;
use std::net::IpAddr;
use std::path::PathBuf;

/// Compile files together; print their diagnostics (human form, stderr).
/// Returns the checked program, or the status to exit with.
pub fn compile_or_report(files: &[PathBuf]) -> Result<(Compilation, Checked), Status> {
    compile_or_report_at_most(files, usize::MAX)
}

/// [`compile_or_report`], printing at most `shown` diagnostics (errors
/// first) and a line saying how many more there are: `l7c run`'s reload
/// must not flood the agent's log with an accidental file's thousands.
pub fn compile_or_report_at_most(files: &[PathBuf], shown: usize) -> Result<(Compilation, Checked), Status> {
    let mut compilation = driver::compile_paths(files).map_err(usage_error)?;
    let all = &compilation.diagnostics;
    if all.0.len() > shown {
        let by_severity = |errors: bool| all.iter().enumerate().filter(move |(_, d)| d.is_error() == errors);
        let mut picked: Vec<usize> = by_severity(true).chain(by_severity(false)).take(shown).map(|(at, _)| at).collect();
        picked.sort_unstable();
        let first = Diagnostics(picked.into_iter().map(|at| all.0[at].clone()).collect());
        eprint!("{}", report::human(&first, &compilation.sources));
        eprintln!(
            "... and {} more diagnostics not shown; `l7c check {}` lists them all",
            all.0.len() - shown,
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" ")
        );
    } else if !all.is_empty() {
        eprint!("{}", report::human(all, &compilation.sources));
    }
    match compilation.checked.take() {
        Some(checked) => Ok((compilation, checked)),
        None => Err(Status::Failed),
    }
}

/// The connection a stream is judged on (cli.md defaults: remote
/// 127.0.0.1 port 80, an ephemeral local port).
#[derive(ClapArgs, Debug, Clone)]
pub struct ConnectionArgs {
    /// The connection's remote address
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub remote_addr: IpAddr,
    /// The connection's remote port
    #[arg(long, value_name = "P", default_value_t = 80)]
    pub remote_port: u16,
    /// The connection's local address [default: 127.0.0.1, or ::1 (::ffff:127.0.0.1) when the remote is IPv6 (IPv4-mapped)]
    #[arg(long, value_name = "IP")]
    pub local_addr: Option<IpAddr>,
    /// The connection's local port
    #[arg(long, value_name = "P", default_value_t = ConnectionInfo::default().local_port)]
    pub local_port: u16,
    /// Bind redirect target NAME (targets not bound are unbound)
    #[arg(long = "bind", value_name = "NAME")]
    pub bind: Vec<String>,
}

impl ConnectionArgs {
    pub fn connection(&self) -> ConnectionInfo {
        let connection = ConnectionInfo {
            remote_port: self.remote_port,
            local_port: self.local_port,
            ..ConnectionInfo::default()
        }
        .with_remote_addr(self.remote_addr);
        match self.local_addr {
            Some(local_addr) => ConnectionInfo { local_addr, ..connection },
            None => connection,
        }
    }
}

/// Generate the BPF object of a checked program; a refusal of the code
/// generator is a diagnostic (exit 1: the policy was judged and cannot be
/// compiled by this build).
pub fn generate_or_report(checked: &Checked) -> Result<Compiled, Status> {
    codegen::compile(checked, &codegen::Options::default()).map_err(|error| {
        eprint!("{}", report::render(&error));
        Status::Failed
    })
}

/// Whether this process may load BPF programs and police sockets: root, or
/// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in its effective set.
pub fn has_kernel_privileges() -> bool {
    l7c_runtime::privileges::missing(Need::Engine).is_empty()
}

/// The refusal of `command` (one that enforces on this node) when the
/// process lacks a capability of `privileges::REQUIRED`.
pub fn lacks_node_privileges(command: &str) -> Option<Status> {
    let missing = l7c_runtime::privileges::missing(Need::Node);
    (!missing.is_empty()).then(|| usage_error(l7c_runtime::privileges::refusal(command, &missing)))
}

/// The refusal of the kernel engine without privileges (exit 2: nothing
/// was judged).
pub fn kernel_engine_needs_root() -> Status {
    let missing = l7c_runtime::privileges::missing(Need::Engine);
    usage_error(format!(
        "{}, or use `--engine ref`",
        l7c_runtime::privileges::refusal("the kernel engine", &missing)
    ))
}

/// Report a failure of the kernel engine. What the compiled program did
/// wrong (the verifier refused it, its object or events do not follow
/// `abi.rs`, it misrouted bytes) is exit 1: the policy's compilation was
/// judged and found wanting. What this machine cannot do (privileges, a
/// connection off loopback, a socket or kernel failure) is exit 2.
pub fn kernel_failure(error: KernelError) -> Status {
    eprint!("{}", report::render(&error));
    match error {
        KernelError::VerifierRejected { .. }
        | KernelError::BadObject { .. }
        | KernelError::NoProgram { .. }
        | KernelError::NoMap { .. }
        | KernelError::MapShape { .. }
        | KernelError::BadEvent { .. }
        | KernelError::Misrouted { .. } => Status::Failed,
        _ => Status::Usage,
    }
}
