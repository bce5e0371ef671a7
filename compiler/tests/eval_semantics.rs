//! The reference evaluator's semantics on hand-made policies: matchers,
//! actions, tunnels, audit mode, opaque streams, spans, delivered and held
//! bytes (language.md §1, §5, §6; cli.md).

mod eval_common;

use eval_common::*;
use l7c_compiler::eval::{evaluate, explain, Reason, Session};
use l7c_compiler::http::MalformedKind;
use l7c_compiler::model::{
    Action, ConnectionInfo, DefaultVerdict, HostOp, Limits, Mode, OpaqueVerdict, PathOp, Program, Scope, ValueOp,
    VerdictAction,
};

fn one_rule(conditions: Vec<l7c_compiler::model::ConditionKind>) -> Program {
    program(policy("p", DefaultVerdict::Deny, vec![rule("r", conditions, Action::Allow)]))
}

fn holds(program: &Program, request: &str) -> bool {
    match only(&run(program, request.as_bytes())).as_str() {
        "allow rule:r" => true,
        "deny default" => false,
        other => panic!("{request:?}: unexpected verdict {other}"),
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
}

#[test]
fn method_matcher_is_case_sensitive_and_takes_lists() {
    let program = one_rule(vec![method(&["GET", "M.SEARCH"])]);
    assert!(holds(&program, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(holds(&program, "M.SEARCH / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!holds(&program, "get / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!holds(&program, "POST / HTTP/1.1\r\nHost: a\r\n\r\n"));
}

#[test]
fn path_matchers() {
    let exact = one_rule(vec![path(PathOp::Exact, &["/a/b", "/c"])]);
    assert!(holds(&exact, &get("/a/b")) && holds(&exact, &get("/c")) && !holds(&exact, &get("/a/b/")));
    let prefix = one_rule(vec![path(PathOp::Prefix, &["/api"])]);
    assert!(holds(&prefix, &get("/api")) && holds(&prefix, &get("/api/x")) && !holds(&prefix, &get("/apix")));
    let slash_prefix = one_rule(vec![path(PathOp::Prefix, &["/api/"])]);
    assert!(holds(&slash_prefix, &get("/api/x")) && !holds(&slash_prefix, &get("/api")));
    let starts = one_rule(vec![path(PathOp::StartsWith, &["/pub"])]);
    assert!(holds(&starts, &get("/public")) && !holds(&starts, &get("/pu")));
    let suffix = one_rule(vec![path(PathOp::Suffix, &[".pdf"])]);
    assert!(holds(&suffix, &get("/a/b.pdf")) && holds(&suffix, &get("/a/b%2Epdf")) && !holds(&suffix, &get("/a.pdf/x")));
    let glob = one_rule(vec![path(PathOp::Glob, &["/a/**"])]);
    assert!(holds(&glob, &get("/a")) && holds(&glob, &get("/a/")) && holds(&glob, &get("/a/b/c")) && !holds(&glob, &get("/ab")));
    // The query is never part of the path; the path is decoded once.
    assert!(holds(&exact, &get("/c?x=/a/b")));
    assert!(holds(&exact, &get("/%63")));
    assert!(!holds(&exact, &get("/%2563")));
}

#[test]
fn path_matchers_on_asterisk_and_connect() {
    let star = one_rule(vec![path(PathOp::Exact, &["*"])]);
    assert!(holds(&star, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"));
    // CONNECT has no path: no path matcher holds, so its negation does.
    let connect = program(policy(
        "p",
        DefaultVerdict::Deny,
        vec![
            rule("path", vec![path(PathOp::Glob, &["/**"])], Action::AllowTunnel),
            rule("not-path", vec![not(path(PathOp::Prefix, &["/"]))], Action::AllowTunnel),
        ],
    ));
    let outcome = run(&connect, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
    assert_eq!(only(&outcome), "tunnel rule:not-path");
}

#[test]
fn header_matchers() {
    let present_rule = one_rule(vec![present("x-key")]);
    assert!(holds(&present_rule, "GET / HTTP/1.1\r\nHost: a\r\nX-KEY: \r\n\r\n"));
    assert!(!holds(&present_rule, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    let absent_rule = one_rule(vec![absent("x-key")]);
    assert!(holds(&absent_rule, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    let req = |value: &str| format!("GET / HTTP/1.1\r\nHost: a\r\nX-V:{value}\r\n\r\n");
    let exact = one_rule(vec![header("x-v", ValueOp::Exact, false, &["Abc", "z"])]);
    assert!(holds(&exact, &req(" Abc ")) && holds(&exact, &req("z")) && !holds(&exact, &req("abc")) && !holds(&exact, &req("Abc d")));
    let nocase = one_rule(vec![header("x-v", ValueOp::Exact, true, &["ABC"])]);
    assert!(holds(&nocase, &req("abc")));
    let prefix = one_rule(vec![header("x-v", ValueOp::Prefix, true, &["app/"])]);
    assert!(holds(&prefix, &req("APP/json")) && !holds(&prefix, &req("ap")));
    let suffix = one_rule(vec![header("x-v", ValueOp::Suffix, false, &[".com"])]);
    assert!(holds(&suffix, &req("\ta.com\t")) && !holds(&suffix, &req("a.COM")));
    let contains = one_rule(vec![header("x-v", ValueOp::Contains, true, &["bot"])]);
    assert!(holds(&contains, &req("Mozilla GoogleBOT/2")) && !holds(&contains, &req("b-o-t")));
    // A value matcher on a missing field fails; under `not` it holds.
    assert!(!holds(&exact, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    let negated = one_rule(vec![not(header("x-v", ValueOp::Exact, false, &["z"]))]);
    assert!(holds(&negated, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
}

#[test]
fn repeated_value_matched_headers_are_refused_even_under_not_and_any() {
    let program = one_rule(vec![any(vec![present("x-a"), not(header("x-v", ValueOp::Exact, false, &["z"]))])]);
    let outcome = run(&program, b"GET / HTTP/1.1\r\nHost: a\r\nX-V: 1\r\nx-v: 1\r\n\r\n");
    assert_eq!(only(&outcome), "deny malformed:duplicate-header");
    // A header only tested for presence may repeat.
    let outcome = run(&program, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
    assert_eq!(only(&outcome), "allow rule:r");
}

#[test]
fn host_matchers() {
    let exact = one_rule(vec![host(HostOp::Exact, &["api.example.com", "[::1]"])]);
    let with_host = |value: &str| format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
    assert!(holds(&exact, &with_host("API.example.com:443")));
    assert!(holds(&exact, &with_host("api.example.com.")));
    assert!(!holds(&exact, &with_host("api.example.com..")));
    assert!(holds(&exact, &with_host("[::1]:8080")));
    assert!(!holds(&exact, &with_host("api.example.com.evil")));
    let suffix = one_rule(vec![host(HostOp::Suffix, &[".example.com"])]);
    assert!(holds(&suffix, &with_host("a.b.example.com")) && !holds(&suffix, &with_host("example.com")));
    // Without a Host (HTTP/1.0) no host matcher holds.
    assert!(!holds(&exact, "GET / HTTP/1.0\r\n\r\n"));
    let negated = one_rule(vec![not(host(HostOp::Exact, &["x"]))]);
    assert!(holds(&negated, "GET / HTTP/1.0\r\n\r\n"));
}

#[test]
fn first_match_and_default() {
    let program = program(policy(
        "p",
        DefaultVerdict::Allow,
        vec![
            rule("deny-admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny),
            rule("allow-all", vec![], Action::Allow),
        ],
    ));
    assert_eq!(only(&run(&program, get("/admin/x").as_bytes())), "deny rule:deny-admin");
    assert_eq!(only(&run(&program, get("/x").as_bytes())), "allow rule:allow-all");
    let fallthrough = program_with_default(DefaultVerdict::Allow);
    assert_eq!(only(&run(&fallthrough, get("/x").as_bytes())), "allow default");
}

fn program_with_default(default: DefaultVerdict) -> Program {
    program(policy("p", default, vec![]))
}

#[test]
fn tunnels() {
    let program = program(policy(
        "p",
        DefaultVerdict::Allow,
        vec![
            rule("ws", vec![path(PathOp::Exact, &["/ws"])], Action::AllowTunnel),
            rule("plain", vec![path(PathOp::Exact, &["/plain"])], Action::Allow),
            rule("moved", vec![path(PathOp::Exact, &["/moved"])], redirect("t")),
        ],
    ));
    let bound = ["t".to_string()];
    let upgrade = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n\r\nGARBAGE\x00\x01");
    // Sent after the server agreed (the default answers, after the send
    // that ends the request), the rest passes: a tunnel spans to the end
    // of the input (what follows the switch is part of it).
    let ws = evaluate(&program, ConnectionInfo::default(), &bound, upgrade("/ws").as_bytes(), &[41]);
    assert_eq!(only(&ws), "tunnel rule:ws");
    assert_eq!((ws.verdicts[0].start, ws.verdicts[0].end), (0, 50));
    assert_eq!(ws.delivered, 50);
    // Sent with the request, before the server's answer, the same bytes
    // are early: denied with reason `tunnel` and no rule (revision 3).
    let early = evaluate(&program, ConnectionInfo::default(), &bound, upgrade("/ws").as_bytes(), &[]);
    assert_eq!(spelled(&early), ["tunnel rule:ws", "deny tunnel"]);
    assert_eq!((early.verdicts[0].start, early.verdicts[0].end, early.verdicts[1].start, early.verdicts[1].end), (0, 41, 41, 50));
    assert_eq!((early.verdicts[1].rule.as_deref(), early.delivered), (None, 41));
    let plain = evaluate(&program, ConnectionInfo::default(), &bound, upgrade("/plain").as_bytes(), &[]);
    assert_eq!(only(&plain), "deny tunnel");
    assert_eq!(plain.verdicts[0].rule.as_deref(), Some("plain"));
    let moved = evaluate(&program, ConnectionInfo::default(), &bound, upgrade("/moved").as_bytes(), &[]);
    assert_eq!(only(&moved), "deny tunnel");
    assert_eq!(moved.verdicts[0].rule.as_deref(), Some("moved"));
    let default = evaluate(&program, ConnectionInfo::default(), &bound, upgrade("/other").as_bytes(), &[]);
    assert_eq!(only(&default), "deny tunnel");
    assert_eq!(default.verdicts[0].rule, None);
    // After a tunnel nothing is parsed: a malformed request passes.
    let input = "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\nGE(T / HTTP/1.1\r\n\r\n";
    let connect = program_with_rule_tunnel();
    let outcome = evaluate(&connect, ConnectionInfo::default(), &[], input.as_bytes(), &[35]);
    assert_eq!(only(&outcome), "tunnel rule:c");
    assert_eq!(outcome.delivered, input.len() as u64);
}

fn program_with_rule_tunnel() -> Program {
    program(policy("p", DefaultVerdict::Deny, vec![rule("c", vec![method(&["CONNECT"])], Action::AllowTunnel)]))
}

#[test]
fn redirects() {
    let program = program(policy("p", DefaultVerdict::Deny, vec![rule("r", vec![], redirect("t"))]));
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let bound = evaluate(&program, ConnectionInfo::default(), &["t".into()], input, &[]);
    assert_eq!(spelled(&bound), ["redirect rule:r", "redirect rule:r"]);
    assert_eq!(bound.delivered, 0);
    assert_eq!((bound.verdicts[0].start, bound.verdicts[0].end), (0, 50));
    let unbound = evaluate(&program, ConnectionInfo::default(), &["other".into()], input, &[]);
    assert_eq!(only(&unbound), "deny redirect-unbound");
    assert_eq!(unbound.verdicts[0].rule.as_deref(), Some("r"));
    assert_eq!(unbound.verdicts[0].end, input.len() as u64);
}

#[test]
fn spans_and_delivered_in_enforce_mode() {
    let program = program(policy("p", DefaultVerdict::Deny, vec![rule("get", vec![method(&["GET", "POST"])], Action::Allow)]));
    // A Content-Length body still being sent: the span reaches past the input.
    let outcome = run(&program, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc");
    assert_eq!((outcome.verdicts[0].start, outcome.verdicts[0].end), (0, 149));
    assert_eq!(outcome.delivered, 52);
    // A chunked body cut off by the end of the input ends there.
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
    let outcome = run(&program, input);
    assert_eq!(outcome.verdicts[0].end, input.len() as u64);
    assert_eq!((outcome.delivered, outcome.pending), (input.len() as u64, 0));
    // A deny spans to the end of the input; nothing follows it.
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nDELETE / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n";
    let outcome = run(&program, input);
    assert_eq!(spelled(&outcome), ["allow rule:get", "deny default"]);
    assert_eq!((outcome.verdicts[1].start, outcome.verdicts[1].end), (27, input.len() as u64));
    assert_eq!((outcome.delivered, outcome.pending), (27, 0));
    // A bad chunk starts its own verdict at the offending byte.
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n";
    let outcome = run(&program, input);
    assert_eq!(spelled(&outcome), ["allow rule:get", "deny malformed:chunk"]);
    assert_eq!((outcome.verdicts[0].end, outcome.verdicts[1].start, outcome.verdicts[1].end), (61, 61, 64));
    assert_eq!(outcome.delivered, 61);
    // An incomplete head is held.
    let outcome = run(&program, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HT");
    assert_eq!((outcome.delivered, outcome.pending), (27, 8));
}

#[test]
fn audit_mode() {
    let mut audited = policy(
        "p",
        DefaultVerdict::Deny,
        vec![
            rule("get", vec![method(&["GET"])], Action::Allow),
            rule("moved", vec![method(&["PUT"])], redirect("t")),
            rule("lost", vec![method(&["PATCH"])], redirect("nowhere")),
            rule("plain", vec![method(&["POST"])], Action::Allow),
        ],
    );
    audited.mode = Mode::Audit;
    // A chunked GET below shows how audit mode handles a bad chunk.
    audited.get_body = l7c_compiler::model::GetBodyVerdict::Allow;
    let program = program(audited);
    let input = concat!(
        "DELETE / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxx",
        "PUT / HTTP/1.1\r\nHost: a\r\n\r\n",
        "PATCH / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a//b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let outcome = evaluate(&program, ConnectionInfo::default(), &["t".into()], input.as_bytes(), &[]);
    assert_eq!(
        spelled(&outcome),
        [
            "deny default",
            "redirect rule:moved",
            "deny redirect-unbound",
            "deny tunnel",
            "allow rule:get",
            "deny malformed:path-traversal"
        ]
    );
    // Every byte passes; the would-be denies span their own request, the
    // malformed one the rest of the input.
    assert_eq!((outcome.delivered, outcome.pending), (input.len() as u64, 0));
    assert_eq!((outcome.verdicts[0].start, outcome.verdicts[0].end), (0, 51));
    assert_eq!(outcome.verdicts[5].end, input.len() as u64);
    // An incomplete head is still held.
    let outcome = run(&program, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nDELETE / HT");
    assert_eq!(spelled(&outcome), ["allow rule:get", "pending"]);
    assert_eq!((outcome.delivered, outcome.pending), (27, 11));
    // A bad chunk in audit: reported, then the rest passes unparsed.
    let input = b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\nGE(T\r\n";
    let outcome = run(&program, input);
    assert_eq!(spelled(&outcome), ["allow rule:get", "deny malformed:chunk"]);
    assert_eq!(outcome.delivered, input.len() as u64);
}

#[test]
fn opaque_streams() {
    let deny = program_with_default(DefaultVerdict::Allow);
    let tls = [0x16u8, 0x03, 0x01, 0x02, 0x00];
    let outcome = run(&deny, &tls);
    assert_eq!(only(&outcome), "deny opaque");
    assert_eq!((outcome.verdicts[0].start, outcome.verdicts[0].end, outcome.delivered), (0, 5, 0));
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // Revision 3: the preface is denied as http2, whatever `opaque` says.
    assert_eq!(only(&run(&deny, preface)), "deny http2");
    // Byte by byte, the preface is pending until its line is complete.
    let mut session = Session::new(&deny, ConnectionInfo::default(), &[]);
    session.feed(&preface[..15]);
    let held = session.finish();
    assert_eq!((spelled(&held), held.pending), (vec!["pending".to_string()], 15));
    // A request that merely starts like the preface is read as a request.
    assert_eq!(only(&run(&deny, b"PRIX / HTTP/1.1\r\nHost: a\r\n\r\n")), "allow default");
    assert_eq!(only(&run(&deny, b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n")), "deny malformed:target");
    // opaque allow: a tunnel; audit: a would-be deny, every byte passes.
    let mut allow_policy = policy("p", DefaultVerdict::Deny, vec![]);
    allow_policy.opaque = OpaqueVerdict::Allow;
    let outcome = run(&program(allow_policy), &tls);
    assert_eq!((only(&outcome), outcome.delivered), ("tunnel opaque".to_string(), 5));
    let mut audit_policy = policy("p", DefaultVerdict::Deny, vec![]);
    audit_policy.mode = Mode::Audit;
    let outcome = run(&program(audit_policy), &tls);
    assert_eq!((only(&outcome), outcome.delivered), ("deny opaque".to_string(), 5));
}

#[test]
fn scope_selects_the_governing_policy() {
    let mut web = policy("web", DefaultVerdict::Deny, vec![rule("web", vec![], Action::Allow)]);
    web.scope = Scope { remote_ports: Some(vec![80, 8080]), ..Scope::default() };
    let mut db = policy("db", DefaultVerdict::Deny, vec![]);
    db.scope = Scope { remote_ports: Some(vec![5432]), ..Scope::default() };
    let program = Program { policies: vec![db, web], tests: vec![] };
    let at = |port: u16| ConnectionInfo { remote_port: port, ..ConnectionInfo::default() };
    let request = get("/");
    assert_eq!(only(&evaluate(&program, at(8080), &[], request.as_bytes(), &[])), "allow rule:web");
    assert_eq!(only(&evaluate(&program, at(5432), &[], request.as_bytes(), &[])), "deny default");
    let ungoverned = evaluate(&program, at(9), &[], b"\x16\x03garbage", &[]);
    assert_eq!((ungoverned.verdicts.len(), ungoverned.delivered, ungoverned.pending), (0, 9, 0));
}

#[test]
fn every_malformed_kind_is_reachable_through_a_session() {
    let program = program(policy("p", DefaultVerdict::Allow, vec![rule("v", vec![header("x-v", ValueOp::Exact, false, &["1"])], Action::Allow)]));
    let cases: [(&str, MalformedKind); 16] = [
        (" GET / HTTP/1.1\r\n", MalformedKind::RequestLine),
        ("G@T / HTTP/1.1\r\n", MalformedKind::Method),
        ("GET / HTTP/3\r\n", MalformedKind::Version),
        ("GET a HTTP/1.1\r\n", MalformedKind::Target),
        ("GET / HTTP/1.1\r\nHost: a\rb", MalformedKind::LineEnding),
        ("GET / HTTP/1.1\r\nHo st: a\r\n", MalformedKind::HeaderSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n", MalformedKind::ObsFold),
        ("GET / HTTP/1.1\r\n\r\n", MalformedKind::Host),
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", MalformedKind::ContentLength),
        ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", MalformedKind::TransferEncoding),
        ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", MalformedKind::ClTe),
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", MalformedKind::GetBody),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-V: 1\r\nX-V: 1\r\n\r\n", MalformedKind::DuplicateHeader),
        ("GET /%2f HTTP/1.1\r\n", MalformedKind::PathEncoding),
        ("GET /a/./b HTTP/1.1\r\n", MalformedKind::PathTraversal),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab", MalformedKind::Chunk),
    ];
    for (input, kind) in cases {
        let outcome = run(&program, input.as_bytes());
        let last = outcome.verdicts.last().expect("a verdict");
        assert_eq!((last.action, last.reason), (VerdictAction::Deny, Reason::Malformed(kind)), "{input:?}");
    }
}

#[test]
fn limits_through_a_session() {
    let mut limited = policy("p", DefaultVerdict::Allow, vec![]);
    limited.limits = Limits { header_bytes: 40, headers: 1 };
    let program = program(limited);
    assert_eq!(only(&run(&program, b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\n\r\n")), "deny limit:headers");
    assert_eq!(only(&run(&program, b"GET /0123456789012345678901234567890123456789")), "deny limit:header_bytes");
    assert_eq!(only(&run(&program, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")), "allow default");
    // Trailers have their own allowance of field lines.
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\n\r\n";
    let three = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let mut roomy = policy("p", DefaultVerdict::Allow, vec![]);
    roomy.limits = Limits { header_bytes: 1024, headers: 2 };
    assert_eq!(spelled(&run(&program_of(roomy.clone()), input)), ["allow default"]);
    let outcome = run(&program_of(roomy), three);
    assert_eq!(spelled(&outcome), ["allow default", "deny malformed:chunk"]);
    assert_eq!(outcome.verdicts[1].start, 71);
}

fn program_of(policy: l7c_compiler::model::Policy) -> Program {
    program(policy)
}

#[test]
fn explain_traces_the_decision() {
    let program = program(policy(
        "api",
        DefaultVerdict::Deny,
        vec![
            rule("admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny),
            rule("read", vec![method(&["GET"]), not(present("x-debug"))], Action::Allow),
        ],
    ));
    let text = explain(&program, ConnectionInfo::default(), &[], b"GET /%61pi?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET //x HTTP/1.1\r\n");
    for expected in [
        "policy \"api\"",
        "request line: \"GET /%61pi?x=1 HTTP/1.1\"",
        "raw target: \"/%61pi?x=1\"",
        "path (before '?'): \"/%61pi\"",
        "decoded path: \"/api\"",
        "rule \"admin\":",
        "path \"/api\" prefix \"/admin\": fails",
        "method \"GET\" in \"GET\": holds",
        "header \"x-debug\" present: fails",
        "} (negated): holds",
        "verdict: allow rule \"read\"",
        "head refused: malformed:path-traversal at byte 41",
        "0: allow rule \"read\" [bytes 0..36)",
        "1: deny malformed:path-traversal [bytes 36..54)",
        "delivered 36 bytes, pending 0 bytes",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
