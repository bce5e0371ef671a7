//! Builders for hand-made policy models, shared by the `eval_*` tests (the
//! `.l7` parser is not needed to test the evaluator).
#![allow(dead_code)]

use l7c_compiler::eval::{evaluate, Outcome, Reason};
use l7c_compiler::model::{
    Action, Condition, ConditionKind, ConnectionInfo, DefaultVerdict, HeaderTest, HostOp, Limits, Mode,
    OpaqueVerdict, PathOp, Policy, Program, Rule, Scope, ValueOp, VerdictAction,
};
use l7c_compiler::source::Span;

pub fn list(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|value| value.as_bytes().to_vec()).collect()
}

pub fn method(methods: &[&str]) -> ConditionKind {
    ConditionKind::Method(list(methods))
}

pub fn path(op: PathOp, patterns: &[&str]) -> ConditionKind {
    ConditionKind::Path { op, patterns: list(patterns) }
}

pub fn present(name: &str) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Present }
}

pub fn absent(name: &str) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Absent }
}

pub fn header(name: &str, op: ValueOp, nocase: bool, values: &[&str]) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Value { op, nocase, values: list(values) } }
}

pub fn host(op: HostOp, values: &[&str]) -> ConditionKind {
    ConditionKind::Host { op, values: list(values) }
}

pub fn any(group: Vec<ConditionKind>) -> ConditionKind {
    ConditionKind::Any(group.into_iter().map(cond).collect())
}

pub fn not(inner: ConditionKind) -> ConditionKind {
    ConditionKind::Not(Box::new(cond(inner)))
}

pub fn cond(kind: ConditionKind) -> Condition {
    Condition { span: Span::default(), kind }
}

pub fn redirect(target: &str) -> Action {
    Action::Redirect { target: target.into(), ingress: false }
}

pub fn rule(name: &str, conditions: Vec<ConditionKind>, action: Action) -> Rule {
    Rule { name: name.into(), span: Span::default(), conditions: conditions.into_iter().map(cond).collect(), action, log: false }
}

pub fn policy(name: &str, default: DefaultVerdict, rules: Vec<Rule>) -> Policy {
    Policy {
        name: name.into(),
        span: Span::default(),
        scope: Scope::default(),
        default: Some(default),
        mode: Mode::Enforce,
        opaque: OpaqueVerdict::Deny,
        get_body: l7c_compiler::model::GetBodyVerdict::Deny,
        deny_with: l7c_compiler::model::DenyWith::default(),
        limits: Limits::default(),
        rules,
    }
}

pub fn program(policy: Policy) -> Program {
    Program { policies: vec![policy], tests: Vec::new() }
}

/// Evaluate with default connection, nothing bound, one piece.
pub fn run(program: &Program, input: &[u8]) -> Outcome {
    evaluate(program, ConnectionInfo::default(), &[], input, &[])
}

/// `action reason` in the conformance spelling: `allow rule:NAME`,
/// `deny malformed:host`, `tunnel opaque`.
pub fn spelled(outcome: &Outcome) -> Vec<String> {
    let mut out: Vec<String> = outcome
        .verdicts
        .iter()
        .map(|verdict| {
            let reason = match (&verdict.reason, &verdict.rule) {
                (Reason::Rule, Some(rule)) => format!("rule:{rule}"),
                (reason, _) => reason.name(),
            };
            format!("{} {}", verdict.action.name(), reason)
        })
        .collect();
    if outcome.pending > 0 {
        out.push("pending".into());
    }
    out
}

/// The single verdict's spelling, or "pending"/"none".
pub fn only(outcome: &Outcome) -> String {
    let all = spelled(outcome);
    match all.as_slice() {
        [one] => one.clone(),
        [] => "none".into(),
        _ => all.join(", "),
    }
}

pub fn action_of(outcome: &Outcome) -> Option<VerdictAction> {
    outcome.verdicts.first().map(|verdict| verdict.action)
}
