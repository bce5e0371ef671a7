//! `l7c probe [--format human|json]`: what this kernel offers, each
//! capability tried for real (`l7c_runtime::probe`).
//!
//! Exit codes: 0 every capability `l7c run` needs is there (kTLS is
//! reported, not required); 1 one is missing; 2 the BPF syscall was
//! refused for lack of privileges (nothing could be tried).

use super::HumanOrJson as Format;
use crate::{outln, usage_error, Status};
use l7c_runtime::probe;

#[derive(clap::Args)]
pub struct Args {
    /// Output format
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
}

pub fn run(args: Args) -> Status {
    let report = probe::probe();
    if report.not_permitted() {
        return usage_error(format!(
            "`l7c probe` needs root: it creates maps and loads programs to see what the kernel accepts; {}",
            l7c_runtime::PRIVILEGE_HELP
        ));
    }
    match args.format {
        Format::Json => outln!("{}", probe::to_json(&report)),
        Format::Human => {
            outln!("kernel {}", report.kernel);
            for capability in &report.capabilities {
                let mark = match (capability.available, capability.required) {
                    (true, _) => "yes",
                    (false, true) => "NO ",
                    (false, false) => "no ",
                };
                outln!("{mark} {:<16} {}", capability.name, capability.detail);
            }
            if report.ok() {
                outln!("every capability `l7c run` needs is available");
            } else {
                outln!("missing capabilities marked NO: `l7c run` cannot enforce policies on this kernel");
            }
        }
    }
    if report.ok() {
        Status::Ok
    } else {
        Status::Failed
    }
}
