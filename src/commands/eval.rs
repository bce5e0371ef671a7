//! `l7c eval FILE [--input PATH|-] [--engine ref|kernel] [--split N,N,...]
//! [--remote-addr IP] [--remote-port P] [--local-port P] [--bind NAME]...
//! [--answers S,S,...]`

use super::{compile_or_report, generate_or_report, has_kernel_privileges, kernel_engine_needs_root, kernel_failure, ConnectionArgs};
use crate::{usage_error, Engine, Status};
use l7c_compiler::eval::{self, ServerAnswers};
use l7c_runtime::engine::KernelEngine;
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
    /// The server's status for each request in order (`101`, `200`, `404`,
    /// ...); a request past the list is never answered [default: every
    /// request 200, every switch agreed to]
    #[arg(long, value_name = "S,S,...")]
    answers: Option<String>,
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
    let answers = match args.answers.as_deref().map(parse_answers).transpose() {
        Ok(answers) => answers.unwrap_or_default(),
        Err(message) => return usage_error(message),
    };
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
            let mut engine = match KernelEngine::load(&compiled.object, &compiled.meta) {
                Ok(engine) => engine,
                Err(error) => return kernel_failure(error),
            };
            engine.set_answers(answers);
            match engine.run_report(connection, &args.connection.bind, &input, &args.split) {
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
            eval::evaluate_with_answers(checked.program(), connection, &args.connection.bind, &input, &args.split, &answers),
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

/// `--answers 101,200,404`: each a three-digit status from 100 to 599; an
/// empty list (`--answers ''`) means the server answers nothing.
fn parse_answers(text: &str) -> Result<ServerAnswers, String> {
    if text.is_empty() {
        return Ok(ServerAnswers::Listed(Vec::new()));
    }
    let statuses = text
        .split(',')
        .map(|status| match status.parse::<u16>() {
            Ok(value @ 100..=599) if status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()) => Ok(value),
            _ => Err(format!("`--answers`: `{status}` is not an HTTP status (three digits, 100 to 599)")),
        })
        .collect::<Result<Vec<u16>, String>>()?;
    Ok(ServerAnswers::Listed(statuses))
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
