//! One module per subcommand, plus what they share: compiling the named
//! files and reporting diagnostics, and the connection flags.

pub mod check;
pub mod eval;
pub mod explain;
pub mod fmt;
pub mod test;

use crate::{usage_error, Status};
use clap::Args as ClapArgs;
use l7c_compiler::check::Checked;
use l7c_compiler::driver::{self, Compilation};
use l7c_compiler::model::ConnectionInfo;
use l7c_compiler::report;
use std::net::IpAddr;
use std::path::PathBuf;

/// Compile files together; print their diagnostics (human form, stderr).
/// Returns the checked program, or the status to exit with.
pub fn compile_or_report(files: &[PathBuf]) -> Result<(Compilation, Checked), Status> {
    let mut compilation = driver::compile_paths(files).map_err(usage_error)?;
    if !compilation.diagnostics.is_empty() {
        eprint!("{}", report::human(&compilation.diagnostics, &compilation.sources));
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
    /// The connection's local address
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub local_addr: IpAddr,
    /// The connection's local port
    #[arg(long, value_name = "P", default_value_t = ConnectionInfo::default().local_port)]
    pub local_port: u16,
    /// Bind redirect target NAME (targets not bound are unbound)
    #[arg(long = "bind", value_name = "NAME")]
    pub bind: Vec<String>,
}

impl ConnectionArgs {
    pub fn connection(&self) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: self.remote_addr,
            remote_port: self.remote_port,
            local_addr: self.local_addr,
            local_port: self.local_port,
        }
    }
}

/// The kernel engine needs the BPF back end and root; until this build has
/// it, saying so is the only honest answer (exit 2: the request cannot be
/// served here, nothing was judged).
pub fn kernel_engine_unavailable() -> Status {
    usage_error(
        "the kernel engine is not part of this build yet: it needs the BPF back end (`l7c compile`); \
         use `--engine ref`",
    )
}
