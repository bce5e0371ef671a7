//! `l7c eval FILE [--input PATH|-] [--engine ref|kernel] [--split N,N,...]
//! [--remote-addr IP] [--remote-port P] [--local-port P] [--bind NAME]...`

use super::{compile_or_report, generate_or_report, has_kernel_privileges, kernel_engine_needs_root, kernel_failure, ConnectionArgs};
use crate::{usage_error, Engine, Status};
use l7c_compiler::eval;
use l7c_runtime::engine;
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file
    file: PathBuf,
    /// The raw bytes a client sends (`-`: standard input)
    #[arg(long, value_name = "PATH|-", default_value = "-")]
    input: String,
    /// Which engine judges the bytes
    #[arg(long, value_enum, default_value = "ref")]
    engine: Engine,
    /// Sizes of the first send() calls; the rest is one final send
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    split: Vec<usize>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub fn run(args: Args) -> Status {
    if args.engine == Engine::All {
        return usage_error("`l7c eval` runs one engine: `--engine ref` or `--engine kernel`");
    }
    if args.engine == Engine::Kernel && !has_kernel_privileges() {
        return kernel_engine_needs_root();
    }
    if args.split.contains(&0) {
        return usage_error("`--split` sizes must be at least 1");
    }
    let input = match read_input(&args.input) {
        Ok(bytes) => bytes,
        Err(error) => return usage_error(format!("cannot read input `{}`: {error}", args.input)),
    };
    let (_, checked) = match compile_or_report(std::slice::from_ref(&args.file)) {
        Ok(compiled) => compiled,
        Err(status) => return status,
    };
    let connection = args.connection.connection();
    let (outcome, engine) = match args.engine {
        Engine::Kernel => {
            let compiled = match generate_or_report(&checked) {
                Ok(compiled) => compiled,
                Err(status) => return status,
            };
            let outcome = engine::evaluate(
                &compiled.object,
                &compiled.meta,
                connection,
                &args.connection.bind,
                &input,
                &args.split,
            );
            match outcome {
                Ok(report) => {
                    if let Some(note) = report.held_tail_note() {
                        eprintln!("note[l7::kernel::held-tail]: {note}");
                    }
                    (report.outcome, "kernel")
                }
                Err(error) => return kernel_failure(error),
            }
        }
        Engine::Ref | Engine::All => (
            eval::evaluate(checked.program(), connection, &args.connection.bind, &input, &args.split),
            "ref",
        ),
    };
    match serde_json::to_string(&outcome.to_json(engine)) {
        Ok(json) => {
            crate::outln!("{json}");
            Status::Ok
        }
        Err(error) => usage_error(format!("cannot write JSON: {error}")),
    }
}

fn read_input(input: &str) -> std::io::Result<Vec<u8>> {
    if input == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(input)
    }
}
