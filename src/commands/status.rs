//! `l7c status [--cgroup PATH] [--format human|json]`: what `l7c run` has
//! in force on this node, read from its pins (`l7c_runtime::node`), with
//! or without a running agent: per cgroup, since when, the agent, the
//! capacity, and per policy generation its policies, build, load time,
//! enrolled connections and capacity in use.
//!
//! Exit codes: 0 printed (also when nothing is enforced); 2 privileges or
//! a pin that cannot be read.

use super::{lacks_node_privileges, HumanOrJson as Format};
use crate::{outln, Status};
use l7c_compiler::report;
use l7c_runtime::events::json_string;
use l7c_runtime::node::{self, CgroupStatus};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Only this cgroup (the path `l7c run --cgroup` was given)
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: Args) -> Status {
    if let Some(refused) = lacks_node_privileges("`l7c status`") {
        return refused;
    }
    let found = match &args.cgroup {
        Some(cgroup) => node::status_of(cgroup).map(|status| status.into_iter().collect::<Vec<_>>()),
        None => node::status_all(),
    };
    let all = match found {
        Ok(all) => all,
        Err(error) => {
            eprint!("{}", report::render(&error));
            return Status::Usage;
        }
    };
    match args.format {
        Format::Json => outln!("[{}]", all.iter().map(json).collect::<Vec<_>>().join(",")),
        Format::Human if all.is_empty() => outln!("no policy is enforced by l7c on this node"),
        Format::Human => {
            for status in &all {
                human(status);
            }
        }
    }
    Status::Ok
}

fn human(status: &CgroupStatus) {
    let agent = match status.agent_pid {
        Some(pid) => format!("agent pid {pid}"),
        None => "no agent running (enforcement continues; `l7c run` adopts it)".to_owned(),
    };
    outln!("cgroup {} (id {}): enforced since {}; {agent}", status.cgroup.display(), status.cgroup_id, status.since);
    let last = status.generations.len().saturating_sub(1);
    for (index, generation) in status.generations.iter().enumerate() {
        let role = if index == last { "current" } else { "kept for its connections" };
        let policies = if generation.policies.is_empty() { "no policy".to_owned() } else { generation.policies.join(", ") };
        outln!(
            "  generation {} ({role}): {policies}; build {}; loaded {}; {} connection(s) enrolled; capacity {} of {} in use",
            generation.number,
            generation.source_hash,
            generation.loaded,
            generation.enrolled,
            generation.used,
            status.capacity
        );
    }
}

fn json(status: &CgroupStatus) -> String {
    let generations: Vec<String> = status
        .generations
        .iter()
        .map(|g| {
            format!(
                "{{\"number\":{},\"loaded\":{},\"build\":{},\"policies\":[{}],\"enrolled\":{},\"capacity_used\":{}}}",
                g.number,
                json_string(&g.loaded),
                json_string(&g.source_hash),
                g.policies.iter().map(|p| json_string(p)).collect::<Vec<_>>().join(","),
                g.enrolled,
                g.used
            )
        })
        .collect();
    format!(
        "{{\"cgroup\":{},\"cgroup_id\":{},\"since\":{},\"agent_pid\":{},\"capacity\":{},\"generations\":[{}]}}",
        json_string(&status.cgroup.display().to_string()),
        status.cgroup_id,
        json_string(&status.since),
        status.agent_pid.map_or("null".to_owned(), |pid| pid.to_string()),
        status.capacity,
        generations.join(",")
    )
}
