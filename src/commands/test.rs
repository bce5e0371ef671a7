//! `l7c test [--engine ref|kernel|all] FILE...`: run `test` blocks.
//!
//! Each file is compiled on its own (language.md §9: a test runs against
//! everything its file compiles to). Each `send` is one case: a fresh
//! connection judged against its expectation. A `send` without `split`
//! also runs one byte per send and under random splits, and must give the
//! same outcome every time; those splits never cut where the timing of the
//! server's answers matters (`testing::Timing`: the server answers every
//! request and agrees to every switch, cli.md). One line per case, then
//! `N passed, N failed`.
//!
//! `--engine kernel` compiles each file to BPF, loads it once and runs
//! every case over real loopback connections (needs root); `--engine all`
//! runs the reference engine and the kernel engine on every case and split:
//! each must meet the expectation, and the two outcomes must be equal.

use super::{compile_or_report, generate_or_report, has_kernel_privileges, kernel_engine_needs_root, kernel_failure};
use crate::{files_arg, Engine, Status};
use l7c_compiler::eval::{self, Outcome};
use l7c_compiler::model::{Program, TestSend};
use l7c_compiler::testing;
use l7c_runtime::engine::KernelEngine;
use std::path::PathBuf;

/// Random splits tried for each `send` that has none of its own.
const RANDOM_SPLITS: usize = 8;

#[derive(clap::Args)]
pub struct Args {
    /// Which engine runs the tests
    #[arg(long, value_enum, default_value = "ref")]
    engine: Engine,
    /// Policy files, each compiled and tested on its own
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Status {
    if let Err(status) = files_arg(&args.files) {
        return status;
    }
    let kernel_wanted = args.engine != Engine::Ref;
    if kernel_wanted && !has_kernel_privileges() {
        return kernel_engine_needs_root();
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &args.files {
        let (compilation, checked) = match compile_or_report(std::slice::from_ref(file)) {
            Ok(compiled) => compiled,
            Err(Status::Failed) => {
                crate::outln!("FAIL {}: does not compile", file.display());
                failed += 1;
                continue;
            }
            Err(status) => return status,
        };
        let program = checked.program();
        let mut kernel = None;
        if kernel_wanted {
            let compiled = match generate_or_report(&checked) {
                Ok(compiled) => compiled,
                Err(_) => {
                    crate::outln!("FAIL {}: the BPF code generator refused it (see above)", file.display());
                    failed += 1;
                    continue;
                }
            };
            match KernelEngine::load(&compiled.object, &compiled.meta) {
                Ok(engine) => kernel = Some(engine),
                // Nothing can be judged here without the privilege: exit 2.
                Err(error) if error.is_permission() => return kernel_failure(error),
                Err(error) => {
                    eprint!("{}", l7c_compiler::report::render(&error));
                    crate::outln!("FAIL {}: the kernel did not load its program: {error}", file.display());
                    failed += 1;
                    continue;
                }
            }
        }
        let mut engines = Engines {
            reference: args.engine != Engine::Kernel,
            kernel,
        };
        for test in &program.tests {
            for (number, send) in test.sends.iter().enumerate() {
                let (line, _) = compilation.sources.line_col(send.span.file, send.span.start);
                let label = format!("{}:{line}: test \"{}\" send {}", file.display(), test.name, number + 1);
                match run_send(program, send, &mut engines) {
                    Ok(()) => {
                        passed += 1;
                        crate::outln!("ok   {label}");
                    }
                    Err(why) => {
                        failed += 1;
                        crate::outln!("FAIL {label}\n     {why}");
                    }
                }
            }
        }
    }
    crate::outln!("{passed} passed, {failed} failed");
    if failed == 0 {
        Status::Ok
    } else {
        Status::Failed
    }
}

/// The engines a file's cases run on: the reference evaluator, the loaded
/// kernel program, or both.
struct Engines {
    reference: bool,
    kernel: Option<KernelEngine>,
}

impl Engines {
    /// The outcome of every engine on one split, by engine name.
    fn outcomes(&mut self, program: &Program, send: &TestSend, split: &[usize]) -> Result<Vec<(&'static str, Outcome)>, String> {
        let mut outcomes = Vec::with_capacity(2);
        if self.reference {
            outcomes.push(("ref", eval::evaluate(program, send.connection, &send.bound, &send.input, split)));
        }
        if let Some(kernel) = self.kernel.as_mut() {
            let report = kernel
                .run_report(send.connection, &send.bound, &send.input, split)
                .map_err(|error| format!("kernel engine, split {split:?}: {error}"))?;
            if let Some(note) = report.held_tail_note() {
                return Err(format!("kernel engine, split {split:?}: {note}"));
            }
            outcomes.push(("kernel", report.outcome));
        }
        Ok(outcomes)
    }
}

/// Run one case under its own split, or under every extra split; every
/// engine must meet the expectation, agree with the others, and give the
/// same outcome under every split.
fn run_send(program: &Program, send: &TestSend, engines: &mut Engines) -> Result<(), String> {
    let first_split = send.split.clone().unwrap_or_default();
    let firsts = engines.outcomes(program, send, &first_split)?;
    for (engine, outcome) in &firsts {
        testing::judge(&send.expect, outcome).map_err(|why| format!("{engine} engine: {why}"))?;
    }
    agree(&firsts, &first_split)?;
    if send.split.is_some() {
        return Ok(());
    }
    // Where answers arrive is a property of the stream, whatever engine
    // runs it: the reference evaluator says where (cli.md `--answers`).
    let one_piece = eval::evaluate(program, send.connection, &send.bound, &send.input, &[]);
    let timing = testing::Timing::of(&send.input, &one_piece.verdicts);
    for split in testing::extra_splits(&send.input, RANDOM_SPLITS, &timing) {
        let others = engines.outcomes(program, send, &split)?;
        agree(&others, &split)?;
        for ((engine, other), (_, first)) in others.iter().zip(&firsts) {
            if other != first {
                return Err(format!(
                    "the outcome depends on how the stream is split (a {engine} engine bug): split {split:?} gave {other:?}, one piece gave {first:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The engines' outcomes on one split must be equal (a difference is a bug
/// in one of them).
fn agree(outcomes: &[(&'static str, Outcome)], split: &[usize]) -> Result<(), String> {
    match outcomes {
        [(first_engine, first), rest @ ..] => {
            for (engine, outcome) in rest {
                if outcome != first {
                    return Err(format!(
                        "the engines disagree (a bug in one of them) under split {split:?}: {first_engine} gave {first:?}, {engine} gave {outcome:?}"
                    ));
                }
            }
            Ok(())
        }
        [] => Ok(()),
    }
}
