//! What `l7c check` says of a program the back end would refuse, without
//! root: the code generator's own refusals, and a verifier budget the
//! program's size predicts it would exceed, each on the policy it
//! concerns (a span and a help line, like every other diagnostic).

use super::{compile, CodegenError, Options};
use crate::bpf::AsmError;
use crate::check::Checked;
use crate::diagnostic::Diagnostic;
use crate::lower::LowerError;
use crate::model::Policy;

/// The verifier's limit on the instructions it processes for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`); also the longest program it takes.
pub const VERIFIER_BUDGET: usize = 1_000_000;

/// Processed instructions per generated instruction, an upper bound with
/// margin over what 6.18 measured: 10.6–11.0 since every policy shares one
/// code path, whose lane-group function the verifier walks at each of its
/// call sites (docs/program.md, "Many policies"; checked by
/// tests/kernel_differential.rs on every scale file).
pub const PROCESSED_PER_INSTRUCTION: usize = 20;
/// A lower bound: below every program measured. A program whose size
/// times this is past the budget is refused for certain.
pub const PROCESSED_PER_INSTRUCTION_AT_LEAST: usize = 6;

/// The generated code's refusals and predicted budget overruns, as
/// diagnostics on the policies they concern (empty: the back end takes
/// it; the kernel may still refuse what no shape predicts).
pub fn deployment_diagnostics(checked: &Checked) -> Vec<Diagnostic> {
    let policies = &checked.program().policies;
    let Some(last) = policies.last() else { return Vec::new() };
    let named = |name: &str| policies.iter().find(|p| p.name == name).unwrap_or(last);
    let diagnostic = match compile(checked, &Options::default()) {
        Ok(compiled) => {
            let instructions = compiled.report.instructions;
            let (least, most) = (instructions * PROCESSED_PER_INSTRUCTION_AT_LEAST, instructions * PROCESSED_PER_INSTRUCTION);
            if most <= VERIFIER_BUDGET {
                return Vec::new();
            }
            let certain = least > VERIFIER_BUDGET;
            let need = if certain { format!("at least {least}") } else { format!("up to {most}") };
            let message = format!(
                "the program for these {} policies has {instructions} instructions; the verifier would need {need} steps, past its budget of {VERIFIER_BUDGET}",
                policies.len(),
            );
            let code = "l7::codegen::verifier-budget";
            let diagnostic = if certain {
                Diagnostic::error(code, last.span, message)
            } else {
                Diagnostic::warning(code, last.span, message)
            };
            diagnostic.with_label("the policies up to here make one program").with_help(SPLIT_HELP)
        }
        Err(CodegenError::Assemble(AsmError::JumpOutOfRange { offset, .. })) => Diagnostic::error(
            "l7::codegen::too-large",
            last.span,
            format!(
                "the program for these {} policies is too large: a jump would span {offset} instructions, and a BPF jump reaches at most 32767",
                policies.len()
            ),
        )
        .with_label("the policies up to here make one program")
        .with_help(SPLIT_HELP),
        Err(CodegenError::Unsupported { policy, construct }) => Diagnostic::error(
            "l7::codegen::unsupported",
            named(&policy).span,
            format!("the BPF code generator does not support {construct}"),
        )
        .with_label("in this policy")
        .with_help("`l7c eval` and `l7c test` run it with the reference evaluator; the kernel program cannot be generated for it"),
        Err(CodegenError::Lower(error)) => lowering(&error, named(lowered_policy(&error).unwrap_or(&last.name))),
        Err(error @ CodegenError::TargetTooOld { .. }) => {
            Diagnostic::error("l7::codegen::target-kernel", last.span, error.to_string())
        }
        Err(error) => Diagnostic::error("l7::codegen::internal", last.span, error.to_string())
            .with_help("an internal error of the code generator: report it with the policy"),
    };
    vec![diagnostic]
}

const SPLIT_HELP: &str = "each policy adds its own code to the one program `l7c run` loads; give fewer policies to one `l7c run` (one cgroup each), or merge policies that share a scope";

fn lowered_policy(error: &LowerError) -> Option<&str> {
    match error {
        LowerError::TooManyMethods { policy, .. }
        | LowerError::TooManyHeaderNames { policy, .. }
        | LowerError::RuleTooComplex { policy, .. } => Some(policy),
        LowerError::AutomatonTooLarge { .. } | LowerError::Internal { .. } => None,
    }
}

fn lowering(error: &LowerError, policy: &Policy) -> Diagnostic {
    Diagnostic::error("l7::codegen::lower", policy.span, error.to_string())
        .with_label("in this policy")
        .with_help("the kernel program cannot hold this policy's tables as written; simplify the rules the message names")
}
