//! `l7c test [--engine ref|kernel|all] FILE...`: run `test` blocks.
//!
//! Each file is compiled on its own (language.md §9: a test runs against
//! everything its file compiles to). Each `send` is one case: a fresh
//! connection judged against its expectation. A `send` without `split`
//! also runs one byte per send and under random splits, and must give the
//! same outcome every time. One line per case, then `N passed, N failed`.

use super::{compile_or_report, kernel_engine_unavailable};
use crate::{files_arg, Engine, Status};
use l7c_compiler::eval::{self, Outcome};
use l7c_compiler::model::{Program, TestSend};
use l7c_compiler::testing;
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
    if args.engine != Engine::Ref {
        return kernel_engine_unavailable();
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
        for test in &program.tests {
            for (number, send) in test.sends.iter().enumerate() {
                let (line, _) = compilation.sources.line_col(send.span.file, send.span.start);
                let label = format!("{}:{line}: test \"{}\" send {}", file.display(), test.name, number + 1);
                match run_send(program, send) {
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

/// Run one case under its own split, or under every extra split; all must
/// meet the expectation and agree with each other.
fn run_send(program: &Program, send: &TestSend) -> Result<(), String> {
    let evaluate = |split: &[usize]| -> Outcome {
        eval::evaluate(program, send.connection, &send.bound, &send.input, split)
    };
    let first_split = send.split.clone().unwrap_or_default();
    let first = evaluate(&first_split);
    testing::judge(&send.expect, &first)?;
    if send.split.is_some() {
        return Ok(());
    }
    for split in testing::extra_splits(&send.input, RANDOM_SPLITS) {
        let other = evaluate(&split);
        if other != first {
            return Err(format!(
                "the outcome depends on how the stream is split (an engine bug): split {split:?} gave {:?}, one piece gave {:?}",
                other, first
            ));
        }
    }
    Ok(())
}
