//! Support for fuzz targets: one fixed policy and a check that the verdicts
//! do not depend on how the input is split, except where the server's
//! answers make them (language.md §6): the splits never cut where
//! [`Timing`] says the answers' timing matters.
//!
//! Invariant: [`fuzz_evaluate`] panics only when two splits of one input
//! disagree (or when the evaluator itself panics): that is the bug a fuzzer
//! is looking for.

use super::{evaluate, Outcome};
use crate::testing::Timing;
use crate::model::{
    Action, Condition, ConditionKind, ConnectionInfo, DefaultVerdict, HeaderTest, HostOp, Limits, Mode,
    OpaqueVerdict, PathOp, Policy, Program, Rule, Scope, ValueOp,
};
use crate::source::Span;
use std::sync::OnceLock;

/// The redirect target the fixed policy's `grpc` rule uses; bound in
/// [`fuzz_evaluate`].
pub const BOUND_TARGET: &str = "envoy";

/// Evaluate `data` with the fixed policy (enforce or audit, chosen by the
/// first byte) as one piece, one byte at a time, and split as the data's
/// first bytes say; panic if any two disagree.
pub fn fuzz_evaluate(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else { return };
    let program = if control & 1 == 0 { enforce_program() } else { audit_program() };
    // Split sizes from the next few bytes (0 means "1"), the rest is input.
    let split_count = usize::from((control >> 1) & 7).min(rest.len());
    let (split_bytes, input) = rest.split_at(split_count);
    let split: Vec<usize> = split_bytes.iter().map(|&size| usize::from(size).max(1)).collect();
    let bound = [BOUND_TARGET.to_string()];
    let connection = ConnectionInfo::default();
    let whole = evaluate(program, connection, &bound, input, &[]);
    let timing = Timing::of(input, &whole.verdicts);
    let split = timing.keep(&[], &split, input.len());
    let cut = evaluate(program, connection, &bound, input, &split);
    assert_same(&whole, &cut, "split", &split);
    let byte_split = timing.keep(&[], &vec![1; input.len()], input.len());
    let bytewise = evaluate(program, connection, &bound, input, &byte_split);
    assert_same(&whole, &bytewise, "byte by byte", &[]);
    check_accounting(&whole, input.len() as u64);
}

fn assert_same(whole: &Outcome, other: &Outcome, how: &str, split: &[usize]) {
    assert_eq!(whole, other, "verdicts differ between one piece and {how} {split:?}");
}

/// Bytes delivered and held never exceed the input, and spans are ordered.
fn check_accounting(outcome: &Outcome, input_len: u64) {
    assert!(outcome.delivered + outcome.pending <= input_len, "more bytes accounted than sent: {outcome:?}");
    let mut previous_start = 0;
    for verdict in &outcome.verdicts {
        assert!(verdict.start >= previous_start, "verdict spans out of order: {outcome:?}");
        assert!(verdict.start <= input_len, "a verdict starts past the input: {outcome:?}");
        previous_start = verdict.start;
    }
}

/// The fixed policy in enforce mode.
pub fn enforce_program() -> &'static Program {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    PROGRAM.get_or_init(|| fixed_program(Mode::Enforce))
}

/// The fixed policy in audit mode.
pub fn audit_program() -> &'static Program {
    static PROGRAM: OnceLock<Program> = OnceLock::new();
    PROGRAM.get_or_init(|| fixed_program(Mode::Audit))
}

fn condition(kind: ConditionKind) -> Condition {
    Condition { span: Span::default(), kind }
}

fn rule(name: &str, conditions: Vec<ConditionKind>, action: Action) -> Rule {
    Rule { name: name.to_string(), span: Span::default(), conditions: conditions.into_iter().map(condition).collect(), action, log: false }
}

fn list(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|value| value.as_bytes().to_vec()).collect()
}

/// A small policy touching every matcher and action, with small limits so
/// that fuzzed inputs reach them.
fn fixed_program(mode: Mode) -> Program {
    let rules = vec![
        rule("admin", vec![ConditionKind::Path { op: PathOp::Prefix, patterns: list(&["/admin", "/internal"]) }], Action::Deny),
        rule(
            "internal-host",
            vec![ConditionKind::Host { op: HostOp::Suffix, values: list(&[".corp"]) }],
            Action::Deny,
        ),
        rule(
            "ws",
            vec![
                ConditionKind::Path { op: PathOp::Exact, patterns: list(&["/ws"]) },
                ConditionKind::Header {
                    name: "upgrade".into(),
                    test: HeaderTest::Value { op: ValueOp::Exact, nocase: true, values: list(&["websocket"]) },
                },
            ],
            Action::AllowTunnel,
        ),
        rule("connect", vec![ConditionKind::Method(list(&["CONNECT"]))], Action::AllowTunnel),
        rule(
            "grpc",
            vec![ConditionKind::Header {
                name: "content-type".into(),
                test: HeaderTest::Value { op: ValueOp::Prefix, nocase: false, values: list(&["application/grpc"]) },
            }],
            Action::Redirect { target: BOUND_TARGET.into(), ingress: false },
        ),
        rule(
            "legacy",
            vec![ConditionKind::Path { op: PathOp::StartsWith, patterns: list(&["/legacy"]) }],
            Action::Redirect { target: "unbound".into(), ingress: false },
        ),
        rule(
            "static",
            vec![
                ConditionKind::Method(list(&["GET", "HEAD"])),
                ConditionKind::Path { op: PathOp::Glob, patterns: list(&["/static/**/*.css", "/u/*/x"]) },
            ],
            Action::Allow,
        ),
        rule(
            "upload",
            vec![
                ConditionKind::Method(list(&["POST", "PUT"])),
                ConditionKind::Any(vec![
                    condition(ConditionKind::Header { name: "x-key".into(), test: HeaderTest::Present }),
                    condition(ConditionKind::Path { op: PathOp::Suffix, patterns: list(&[".txt"]) }),
                ]),
                ConditionKind::Not(Box::new(condition(ConditionKind::Header {
                    name: "user-agent".into(),
                    test: HeaderTest::Value { op: ValueOp::Contains, nocase: true, values: list(&["bot"]) },
                }))),
            ],
            Action::Allow,
        ),
        rule("read", vec![ConditionKind::Method(list(&["GET", "HEAD", "OPTIONS"]))], Action::Allow),
    ];
    let policy = Policy {
        name: "fuzz".into(),
        span: Span::default(),
        scope: Scope::default(),
        default: Some(DefaultVerdict::Deny),
        mode,
        opaque: OpaqueVerdict::Deny,
        get_body: crate::model::GetBodyVerdict::Deny,
        deny_with: crate::model::DenyWith::default(),
        limits: Limits { header_bytes: 512, headers: 8 },
        rules,
    };
    Program { policies: vec![policy], tests: Vec::new() }
}
