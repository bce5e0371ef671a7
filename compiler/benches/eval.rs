//! Requests per second of the reference evaluator: small pipelined requests
//! against the 30-rule benchmark policy (`shared/bench/api30.l7`, mirrored
//! here as a model). Run with `cargo bench -p l7c-compiler --bench eval`;
//! criterion reports the throughput in requests (elements) per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use l7c_compiler::eval::{evaluate, Session};
use l7c_compiler::model::{
    Action, Condition, ConditionKind, ConnectionInfo, DefaultVerdict, HeaderTest, HostOp, Limits, Mode,
    OpaqueVerdict, PathOp, Policy, Program, Rule, Scope, ValueOp, VerdictAction,
};
use l7c_compiler::source::Span;
use std::hint::black_box;

const REQUEST: &[u8] = b"GET /api/v1/users/123 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nX-Api-Key: k\r\n\r\n";
const PIPELINED: usize = 1000;

fn list(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|value| value.as_bytes().to_vec()).collect()
}

fn cond(kind: ConditionKind) -> Condition {
    Condition { span: Span::default(), kind }
}

fn method(methods: &[&str]) -> ConditionKind {
    ConditionKind::Method(list(methods))
}

fn path(op: PathOp, patterns: &[&str]) -> ConditionKind {
    ConditionKind::Path { op, patterns: list(patterns) }
}

fn present(name: &str) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Present }
}

fn absent(name: &str) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Absent }
}

fn value(name: &str, op: ValueOp, nocase: bool, values: &[&str]) -> ConditionKind {
    ConditionKind::Header { name: name.into(), test: HeaderTest::Value { op, nocase, values: list(values) } }
}

fn not(inner: ConditionKind) -> ConditionKind {
    ConditionKind::Not(Box::new(cond(inner)))
}

fn rule(name: &str, conditions: Vec<ConditionKind>, action: Action) -> Rule {
    Rule { name: name.into(), span: Span::default(), conditions: conditions.into_iter().map(cond).collect(), action, log: false }
}

/// `shared/bench/api30.l7` as a model.
fn api30() -> Program {
    use Action::{Allow, Deny};
    use PathOp::{Exact, Glob, Prefix, StartsWith};
    let read = ["GET", "HEAD"];
    let rules = vec![
        rule("no-trace", vec![method(&["TRACE", "CONNECT", "OPTIONS"])], Deny),
        rule("no-delete", vec![method(&["DELETE"])], Deny),
        rule("admin", vec![path(Prefix, &["/admin", "/internal", "/debug"])], Deny),
        rule("dotfiles", vec![path(StartsWith, &["/.git", "/.env", "/.svn", "/.htaccess"])], Deny),
        rule("scanners", vec![value("user-agent", ValueOp::Contains, true, &["sqlmap", "nikto", "masscan"])], Deny),
        rule(
            "host",
            vec![not(ConditionKind::Host { op: HostOp::Exact, values: list(&["localhost", "127.0.0.1", "api.example.com"]) })],
            Deny,
        ),
        rule("debug-flag", vec![present("x-debug")], Deny),
        rule("post-key", vec![method(&["POST"]), absent("x-api-key")], Deny),
        rule("post-json", vec![method(&["POST"]), not(value("content-type", ValueOp::Prefix, false, &["application/json"]))], Deny),
        rule("put-key", vec![method(&["PUT", "PATCH"]), absent("x-api-key")], Deny),
        rule("metrics", vec![path(Prefix, &["/metrics"])], Deny),
        rule("grpc", vec![value("content-type", ValueOp::Prefix, false, &["application/grpc"])], Deny),
        rule("health", vec![method(&read), path(Exact, &["/healthz", "/readyz"])], Allow),
        rule("favicon", vec![method(&["GET"]), path(Exact, &["/favicon.ico"])], Allow),
        rule("static", vec![method(&read), path(Glob, &["/static/**"])], Allow),
        rule("user", vec![method(&read), path(Glob, &["/api/v1/users/*"])], Allow),
        rule("users", vec![method(&read), path(Prefix, &["/api/v1/users"])], Allow),
        rule("orders", vec![method(&read), path(Prefix, &["/api/v1/orders"])], Allow),
        rule("create-order", vec![method(&["POST"]), path(Exact, &["/api/v1/orders"])], Allow),
        rule("products", vec![method(&read), path(Prefix, &["/api/v1/products"])], Allow),
        rule("reviews", vec![method(&["GET"]), path(Glob, &["/api/v1/products/*/reviews"])], Allow),
        rule("cart", vec![method(&["GET", "PUT"]), path(Prefix, &["/api/v1/cart"]), present("x-api-key")], Allow),
        rule("checkout", vec![method(&["POST"]), path(Exact, &["/api/v1/checkout"])], Allow),
        rule("search", vec![method(&["GET"]), path(Exact, &["/api/v1/search"])], Allow),
        rule("login", vec![method(&["POST"]), path(Exact, &["/auth/login"])], Allow),
        rule("logout", vec![method(&["POST"]), path(Exact, &["/auth/logout"])], Allow),
        rule("refresh", vec![method(&["POST"]), path(Exact, &["/auth/refresh"]), present("authorization")], Allow),
        rule("webhook", vec![method(&["POST"]), path(Prefix, &["/hooks"]), present("x-signature")], Allow),
        rule("tenant-api", vec![path(Prefix, &["/api/v2"]), present("x-tenant-id")], Allow),
        rule("options-cors", vec![method(&["GET"]), path(Exact, &["/cors"]), present("origin")], Allow),
    ];
    let policy = Policy {
        name: "bench-api".into(),
        span: Span::default(),
        scope: Scope::default(),
        default: Some(DefaultVerdict::Deny),
        mode: Mode::Enforce,
        opaque: OpaqueVerdict::Deny,
        get_body: l7c_compiler::model::GetBodyVerdict::Deny,
        deny_with: l7c_compiler::model::DenyWith::default(),
        limits: Limits::default(),
        rules,
    };
    Program { policies: vec![policy], tests: Vec::new() }
}

/// shared/bench/README.md: the policy must allow the benchmark request
/// (rule `user`) and refuse the four probes; check before measuring.
fn check_policy(program: &Program) {
    let verdict = |input: &[u8]| {
        let outcome = evaluate(program, ConnectionInfo::default(), &[], input, &[]);
        let first = outcome.verdicts.first().cloned().expect("a verdict");
        (first.action, first.rule)
    };
    assert_eq!(verdict(REQUEST), (VerdictAction::Allow, Some("user".to_string())));
    for probe in [
        &b"DELETE /api/v1/users/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
        b"GET /admin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /.env HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert_eq!(verdict(probe).0, VerdictAction::Deny, "{:?}", String::from_utf8_lossy(probe));
    }
}

fn bench(c: &mut Criterion) {
    let program = api30();
    check_policy(&program);
    let stream: Vec<u8> = REQUEST.repeat(PIPELINED);
    let connection = ConnectionInfo::default();

    let mut group = c.benchmark_group("api30");
    group.throughput(Throughput::Elements(PIPELINED as u64));
    group.bench_function("pipelined-one-send", |b| {
        b.iter(|| {
            let mut session = Session::new(&program, connection, &[]);
            session.feed(black_box(&stream));
            let outcome = session.finish();
            assert_eq!(outcome.verdicts.len(), PIPELINED);
            outcome.delivered
        })
    });
    group.bench_function("pipelined-4KiB-sends", |b| {
        b.iter(|| {
            let mut session = Session::new(&program, connection, &[]);
            for piece in black_box(&stream).chunks(4096) {
                session.feed(piece);
            }
            session.finish().delivered
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
