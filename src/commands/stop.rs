//! `l7c stop --cgroup PATH`: lifts the enforcement `l7c run` pinned on a
//! cgroup. A running agent is asked to exit first (SIGTERM); then every
//! link, program and map is removed from the kernel (`l7c_runtime::node`).
//! Connections enrolled until then carry on unpoliced.
//!
//! Exit codes: 0 lifted (or nothing was in force: said so); 2 usage,
//! privileges, or an agent that would not exit.

use super::lacks_node_privileges;
use crate::Status;
use l7c_compiler::report;
use std::path::PathBuf;
use std::time::Duration;

/// How long the agent gets to exit after SIGTERM.
const AGENT_EXIT_WAIT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct Args {
    /// The cgroup v2 directory `l7c run --cgroup` was given
    #[arg(long, value_name = "PATH", required = true)]
    cgroup: PathBuf,
}

pub fn run(args: Args) -> Status {
    if let Some(refused) = lacks_node_privileges("`l7c stop`") {
        return refused;
    }
    match l7c_runtime::node::stop(&args.cgroup, AGENT_EXIT_WAIT) {
        Ok(stopped) if stopped.generations == 0 => {
            eprintln!("l7c: nothing was enforced on cgroup `{}`", args.cgroup.display());
            Status::Ok
        }
        Ok(stopped) => {
            if let Some(pid) = stopped.agent_pid {
                eprintln!("l7c: the agent (pid {pid}) exited");
            }
            eprintln!(
                "l7c: enforcement lifted on cgroup `{}`: {} policy generation(s) removed from the kernel; connections enrolled until now carry on unpoliced",
                args.cgroup.display(),
                stopped.generations
            );
            Status::Ok
        }
        Err(error) => {
            eprint!("{}", report::render(&error));
            Status::Usage
        }
    }
}
