//! The conformance policies of `tests/conformance/*.toml` (the repository's
//! copies of shared/conformance/), built by hand as models, run through the
//! reference evaluator: a representative selection of cases inline, and
//! every case of the TOML files (read with a small reader for the subset of
//! TOML they use). The cases tests/conformance/PENDING.toml lists for the
//! `ref` engine run too and must still fail (`pending`, shared with the
//! other runners); a file whose policy does not compile yet has no model.

mod eval_common;
#[path = "../../tests/pending/mod.rs"]
mod pending;

use eval_common::*;
use l7c_compiler::eval::{evaluate, evaluate_with_answers, Answer, Outcome, ServerAnswers};
use l7c_compiler::model::{
    Action, Cidr, ConnectionInfo, DefaultVerdict, DenyWith, HostOp, Limits, Mode, OpaqueVerdict, PathOp, Program, Scope,
    ValueOp,
};
use l7c_compiler::testing::Timing;
use std::net::IpAddr;

fn basics() -> Program {
    program(policy(
        "basics",
        DefaultVerdict::Deny,
        vec![
            rule("read-users", vec![method(&["GET", "HEAD"]), path(PathOp::Prefix, &["/api/users"])], Action::Allow),
            rule(
                "create-user",
                vec![
                    method(&["POST"]),
                    path(PathOp::Exact, &["/api/users"]),
                    header("content-type", ValueOp::Exact, false, &["application/json"]),
                ],
                Action::Allow,
            ),
            rule("admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny),
            rule("health", vec![method(&["GET"]), path(PathOp::Exact, &["/healthz"])], Action::Allow),
        ],
    ))
}

fn audit() -> Program {
    let mut policy = policy("dry-run", DefaultVerdict::Deny, vec![rule("read", vec![method(&["GET"])], Action::Allow)]);
    policy.mode = Mode::Audit;
    program(policy)
}

fn canonical() -> Program {
    program(policy(
        "canonical",
        DefaultVerdict::Allow,
        vec![
            rule("admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny),
            rule("secret", vec![path(PathOp::Exact, &["/files/secret.txt"])], Action::Deny),
        ],
    ))
}

fn edges() -> Program {
    let mut policy = policy(
        "edges",
        DefaultVerdict::Deny,
        vec![
            rule("internal-host", vec![host(HostOp::Exact, &["internal.corp"])], Action::Deny),
            rule("ok", vec![path(PathOp::Prefix, &["/ok"])], Action::Allow),
            rule("ws", vec![path(PathOp::Exact, &["/ws"])], Action::AllowTunnel),
            rule("adm", vec![path(PathOp::Exact, &["/admin "])], Action::Deny),
        ],
    );
    policy.limits = Limits { header_bytes: Limits::DEFAULT_HEADER_BYTES, headers: 3 };
    program(policy)
}

fn framing() -> Program {
    program(policy(
        "framing",
        DefaultVerdict::Deny,
        vec![
            rule("get", vec![method(&["GET"])], Action::Allow),
            rule("upload", vec![method(&["POST"]), path(PathOp::Exact, &["/upload"])], Action::Allow),
        ],
    ))
}

fn headers() -> Program {
    program(policy(
        "headers",
        DefaultVerdict::Deny,
        vec![
            rule("api-key", vec![path(PathOp::Prefix, &["/api"]), present("x-api-key")], Action::Allow),
            rule("public", vec![path(PathOp::Prefix, &["/public"]), absent("authorization")], Action::Allow),
            rule("tenant", vec![path(PathOp::Prefix, &["/tenant"]), header("x-tenant", ValueOp::Exact, true, &["acme"])], Action::Allow),
            rule("curl", vec![path(PathOp::Exact, &["/curl"]), header("user-agent", ValueOp::Prefix, false, &["curl/"])], Action::Allow),
            rule("json", vec![path(PathOp::Exact, &["/json"]), header("accept", ValueOp::Contains, false, &["json"])], Action::Allow),
            rule("host", vec![path(PathOp::Exact, &["/host"]), host(HostOp::Suffix, &[".example.com"])], Action::Allow),
        ],
    ))
}

fn limits() -> Program {
    let mut policy = policy(
        "limits",
        DefaultVerdict::Allow,
        vec![
            rule(
                "ws",
                vec![path(PathOp::Exact, &["/ws"]), header("upgrade", ValueOp::Exact, true, &["websocket"])],
                Action::AllowTunnel,
            ),
            rule("connect", vec![method(&["CONNECT"])], Action::AllowTunnel),
            rule("h2c", vec![path(PathOp::Exact, &["/h2c"])], Action::Allow),
        ],
    );
    policy.limits = Limits { header_bytes: 1024, headers: 8 };
    program(policy)
}

fn matchers() -> Program {
    program(policy(
        "matchers",
        DefaultVerdict::Deny,
        vec![
            rule("private", vec![path(PathOp::Prefix, &["/internal", "/debug"])], Action::Deny),
            rule("orders", vec![method(&["GET"]), path(PathOp::Glob, &["/api/v2/users/*/orders"])], Action::Allow),
            rule("static", vec![method(&["GET"]), path(PathOp::Glob, &["/static/**/*.css"])], Action::Allow),
            rule("pdf", vec![method(&["GET"]), path(PathOp::Suffix, &[".pdf"])], Action::Allow),
            rule("pub", vec![method(&["GET"]), path(PathOp::StartsWith, &["/pub"])], Action::Allow),
            rule(
                "tickets",
                vec![
                    method(&["PUT"]),
                    path(PathOp::Prefix, &["/tickets"]),
                    any(vec![
                        header("x-role", ValueOp::Exact, false, &["support"]),
                        header("x-role", ValueOp::Exact, false, &["admin"]),
                    ]),
                ],
                Action::Allow,
            ),
            rule(
                "delete",
                vec![
                    method(&["DELETE"]),
                    path(PathOp::Prefix, &["/tickets"]),
                    header("x-role", ValueOp::Exact, false, &["admin"]),
                    not(present("x-readonly")),
                ],
                Action::Allow,
            ),
            rule("grpc", vec![header("content-type", ValueOp::Prefix, false, &["application/grpc"])], redirect("envoy")),
        ],
    ))
}

fn scope() -> Program {
    let mut policy = policy("internal-api", DefaultVerdict::Deny, vec![rule("read", vec![method(&["GET"])], Action::Allow)]);
    policy.scope = Scope { remote_ports: Some(vec![8080]), ..Scope::default() };
    policy.opaque = OpaqueVerdict::Allow;
    program(policy)
}

fn cidr(addr: &str, prefix_len: u8) -> Cidr {
    Cidr { addr: addr.parse().expect("an address"), prefix_len }
}

fn addresses() -> Program {
    let mut backend = policy("backend", DefaultVerdict::Deny, vec![rule("read", vec![method(&["GET"])], Action::Allow)]);
    backend.scope = Scope {
        remote_addrs: Some(vec![cidr("127.0.0.2", 32), cidr("127.0.1.0", 24)]),
        remote_ports: Some(vec![8080]),
        ..Scope::default()
    };
    let mut v6 = policy("v6", DefaultVerdict::Deny, vec![rule("write", vec![method(&["POST"])], Action::Allow)]);
    v6.scope = Scope { remote_addrs: Some(vec![cidr("::1", 128)]), remote_ports: Some(vec![8081]), ..Scope::default() };
    Program { policies: vec![backend, v6], tests: Vec::new() }
}

fn revision3() -> Program {
    let mut policy = policy(
        "r3",
        DefaultVerdict::Deny,
        vec![
            rule("pub", vec![method(&["GET", "HEAD"]), path(PathOp::Prefix, &["/pub"])], Action::Allow),
            rule("api", vec![method(&["POST"]), path(PathOp::Prefix, &["/api"])], Action::Allow),
            rule("ws", vec![path(PathOp::Exact, &["/ws"])], Action::AllowTunnel),
            rule("admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny),
        ],
    );
    policy.opaque = OpaqueVerdict::Allow;
    program(policy)
}

fn answers() -> Program {
    let scoped = |name: &str, port: u16| {
        let mut policy = policy(
            name,
            DefaultVerdict::Deny,
            vec![rule("pub", vec![method(&["GET"]), path(PathOp::Prefix, &["/pub"])], Action::Allow)],
        );
        policy.scope = Scope { remote_ports: Some(vec![port]), ..Scope::default() };
        policy
    };
    let mut shop = scoped("shop", 8080);
    shop.rules.push(rule("admin", vec![path(PathOp::Prefix, &["/admin"])], Action::Deny));
    shop.limits = Limits { header_bytes: 1024, headers: Limits::DEFAULT_HEADERS };
    let mut teapot = scoped("teapot", 8081);
    teapot.deny_with = DenyWith::Status(451);
    let mut quiet = scoped("quiet", 8082);
    quiet.deny_with = DenyWith::Reset;
    let mut dry = scoped("dry", 8083);
    dry.mode = Mode::Audit;
    Program { policies: vec![shop, teapot, quiet, dry], tests: Vec::new() }
}

/// The model of a case file; `None` for a file without one (a failure,
/// unless its policy does not compile yet and PENDING.toml says so).
fn model_for(file_stem: &str) -> Option<Program> {
    Some(match file_stem {
        "addresses" => addresses(),
        "answers" => answers(),
        "audit" => audit(),
        "basics" => basics(),
        "canonical" => canonical(),
        "edges" => edges(),
        "framing" => framing(),
        "headers" => headers(),
        "limits" => limits(),
        "matchers" => matchers(),
        "revision3" => revision3(),
        "scope" => scope(),
        _ => return None,
    })
}

/// One conformance case.
#[derive(Debug, Default, Clone)]
struct Case {
    name: String,
    input: Vec<u8>,
    split: Option<Vec<usize>>,
    remote_port: Option<u16>,
    remote_addr: Option<IpAddr>,
    expect: Vec<String>,
    delivered: Option<u64>,
    bind: Vec<String>,
    /// The server's statuses (`answers = [101]`).
    answers: Option<Vec<usize>>,
    /// How the deny is answered (`answer = 403` or `"reset"`).
    answer: Option<String>,
}

fn expectation_holds(expected: &str, actual: &str) -> bool {
    match expected {
        "deny malformed" => actual.starts_with("deny malformed:"),
        "deny limit" => actual.starts_with("deny limit:"),
        _ => expected == actual,
    }
}

/// Some splits of an input: byte by byte, in two at every position (for
/// short inputs), and a few deterministic pseudo-random ones.
fn splits_of(len: usize) -> Vec<Vec<usize>> {
    let mut splits = vec![vec![], vec![1; len]];
    if len <= 200 {
        splits.extend((1..len).map(|cut| vec![cut]));
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    for _ in 0..8 {
        let mut sizes = Vec::new();
        let mut total = 0;
        while total < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let size = 1 + (seed % 23) as usize;
            sizes.push(size);
            total += size;
        }
        splits.push(sizes);
    }
    splits
}

/// Every split of [`splits_of`], and the stated one, must meet the case;
/// the splits keep the stated split's boundaries where the timing of the
/// server's answers matters (`Timing`, cli.md), and then give the stated
/// split's very outcome.
fn check_case(program: &Program, case: &Case) -> Result<(), String> {
    let answers = match &case.answers {
        Some(statuses) => ServerAnswers::Listed(
            statuses.iter().map(|&status| u16::try_from(status).map_err(|e| format!("{:?}: {e}", case.name))).collect::<Result<_, _>>()?,
        ),
        None => ServerAnswers::Agreeing,
    };
    let default = ConnectionInfo::default();
    let connection = ConnectionInfo {
        remote_port: case.remote_port.unwrap_or(default.remote_port),
        remote_addr: case.remote_addr.unwrap_or(default.remote_addr),
        ..default
    };
    let stated = case.split.clone().unwrap_or_default();
    let reference = evaluate_with_answers(program, connection, &case.bind, &case.input, &stated, &answers);
    let timing = Timing::of(&case.input, &reference.verdicts);
    let mut splits: Vec<Vec<usize>> =
        splits_of(case.input.len()).iter().map(|split| timing.keep(&stated, split, case.input.len())).collect();
    splits.insert(0, stated);
    for split in &splits {
        let outcome = evaluate_with_answers(program, connection, &case.bind, &case.input, split, &answers);
        let actual = spelled(&outcome);
        let matches = actual.len() == case.expect.len()
            && case.expect.iter().zip(&actual).all(|(expected, actual)| expectation_holds(expected, actual));
        if !matches {
            return Err(format!("{:?}: expected {:?}, got {:?} (split {:?})", case.name, case.expect, actual, split));
        }
        if let Some(delivered) = case.delivered {
            if outcome.delivered != delivered {
                return Err(format!("{:?}: delivered {} instead of {delivered} (split {split:?})", case.name, outcome.delivered));
            }
        }
        if outcome != reference {
            return Err(format!("{:?}: split {split:?} gives {outcome:?}, the stated split {reference:?}", case.name));
        }
    }
    if let Some(answer) = &case.answer {
        let got = reference.verdicts.iter().rev().find(|v| v.action == l7c_compiler::model::VerdictAction::Deny).and_then(|v| v.answer);
        let holds = match (answer.as_str(), got) {
            ("reset", Some(Answer::Reset)) => true,
            (status, Some(Answer::Status { status: got, .. })) => status == got.to_string(),
            _ => false,
        };
        if !holds {
            return Err(format!("{:?}: expected the deny answered {answer}, got {got:?}", case.name));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// A reader for the subset of TOML the conformance files use.

fn parse_basic_string(text: &str) -> Result<(Vec<u8>, &str), String> {
    let mut chars = text.strip_prefix('"').ok_or("expected a string")?.char_indices();
    let mut out = Vec::new();
    while let Some((index, ch)) = chars.next() {
        match ch {
            '"' => return Ok((out, &text[index + 2..])),
            '\\' => {
                let (_, escape) = chars.next().ok_or("dangling escape")?;
                let simple = match escape {
                    'r' => Some('\r'),
                    'n' => Some('\n'),
                    't' => Some('\t'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                        Some(char::from_u32(code).ok_or("bad \\u escape")?)
                    }
                    other => return Err(format!("unsupported escape \\{other}")),
                };
                if let Some(ch) = simple {
                    let mut buffer = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
                }
            }
            _ => {
                let mut buffer = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    Err("unterminated string".into())
}

fn parse_string_array(text: &str) -> Result<Vec<String>, String> {
    let mut rest = text.trim().strip_prefix('[').ok_or("expected an array")?.trim_start();
    let mut out = Vec::new();
    while !rest.starts_with(']') {
        let (value, after) = parse_basic_string(rest)?;
        out.push(String::from_utf8(value).map_err(|e| e.to_string())?);
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    Ok(out)
}

fn parse_number_array(text: &str) -> Result<Vec<usize>, String> {
    let inner = text.trim().strip_prefix('[').and_then(|t| t.strip_suffix(']')).ok_or("expected an array")?;
    inner.split(',').map(str::trim).filter(|t| !t.is_empty()).map(|t| t.parse().map_err(|e| format!("{e}"))).collect()
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(&text[index..index + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn read_cases(source: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    let mut current: Option<Case> = None;
    let mut in_policy = false;
    for line in source.lines() {
        let line = line.trim();
        if in_policy {
            in_policy = !line.ends_with("'''");
            continue;
        }
        if line.starts_with("policy = '''") {
            in_policy = true;
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[case]]" {
            cases.extend(current.take());
            current = Some(Case::default());
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| format!("cannot read {line:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        let case = current.as_mut().ok_or("a key outside a case")?;
        match key {
            "name" => case.name = String::from_utf8(parse_basic_string(value)?.0).map_err(|e| e.to_string())?,
            "input" => case.input = parse_basic_string(value)?.0,
            "input_hex" => case.input = hex_bytes(&String::from_utf8(parse_basic_string(value)?.0).map_err(|e| e.to_string())?)?,
            "split" => case.split = Some(parse_number_array(value)?),
            "remote_port" => case.remote_port = Some(value.parse().map_err(|e| format!("{e}"))?),
            "remote_addr" => {
                let text = String::from_utf8(parse_basic_string(value)?.0).map_err(|e| e.to_string())?;
                case.remote_addr = Some(text.parse().map_err(|e| format!("remote_addr {text:?}: {e}"))?);
            }
            "answers" => case.answers = Some(parse_number_array(value)?),
            "answer" if value.starts_with('"') => {
                case.answer = Some(String::from_utf8(parse_basic_string(value)?.0).map_err(|e| e.to_string())?)
            }
            "answer" => case.answer = Some(value.parse::<u16>().map_err(|e| format!("answer: {e}"))?.to_string()),
            "expect" => case.expect = parse_string_array(value)?,
            "delivered" => case.delivered = Some(value.parse().map_err(|e| format!("{e}"))?),
            "bind" => case.bind = parse_string_array(value)?,
            other => return Err(format!("unknown key {other}")),
        }
    }
    cases.extend(current);
    Ok(cases)
}

#[test]
fn every_conformance_case_from_the_toml_files() {
    let dir = pending::conformance_dir(env!("CARGO_MANIFEST_DIR"));
    let pending = pending::Pending::read(&dir);
    let mut ledger = pending.cases_on("ref");
    let mut failures = Vec::new();
    let mut count = 0;
    for file in pending::case_files(&dir) {
        let name = file.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let stem = name.trim_end_matches(".toml");
        let source = std::fs::read_to_string(&file).expect("readable file");
        let cases = read_cases(&source).unwrap_or_else(|error| panic!("{name}: {error}"));
        let policy = pending::policy_of(&source).unwrap_or_else(|| panic!("{name} has no policy"));
        match ledger.policy(&name, cases.len(), pending::compiles(&name, policy)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        }
        let Some(program) = model_for(stem) else {
            failures.push(format!("{name}: no hand-built model for this file; add one to this test"));
            continue;
        };
        for case in cases {
            count += 1;
            let result = check_case(&program, &case).map_err(|error| format!("{name}: {error}"));
            if let Err(failure) = ledger.case(&name, &case.name, result) {
                failures.push(failure);
            }
        }
    }
    let met = ledger.met();
    failures.extend(ledger.finish());
    eprintln!("checked {count} conformance cases from {}, {met} entries of PENDING.toml still pending", dir.display());
    assert!(count > 0, "no conformance case was read");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------
// A representative selection, inline, so it runs wherever the tests run.

fn case(name: &str, input: &[u8], expect: &[&str], delivered: Option<u64>) -> Case {
    Case {
        name: name.into(),
        input: input.to_vec(),
        expect: expect.iter().map(|e| e.to_string()).collect(),
        delivered,
        ..Case::default()
    }
}

fn check_all(program: Program, cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(|case| check_case(&program, case).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn basics_selection() {
    check_all(
        basics(),
        &[
            case("prefix", b"GET /api/users/42 HTTP/1.1\r\nHost: a\r\n\r\n", &["allow rule:read-users"], Some(39)),
            case("no bleed", b"GET /api/usersX HTTP/1.1\r\nHost: a\r\n\r\n", &["deny default"], Some(0)),
            case(
                "post json",
                b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                &["allow rule:create-user"],
                Some(90),
            ),
            case(
                "trimmed value",
                b"POST /api/users HTTP/1.1\r\nHost: a\r\nContent-Type: \t application/json \t\r\nContent-Length: 0\r\n\r\n",
                &["allow rule:create-user"],
                None,
            ),
            case("query", b"GET /healthz?verbose=1&x=/../y HTTP/1.1\r\nHost: a\r\n\r\n", &["allow rule:health"], None),
            case("http/1.0", b"GET /healthz HTTP/1.0\r\n\r\n", &["allow rule:health"], None),
            case("pending", b"GET /api/users/42 HTTP/1.1\r\nHost: a\r\n", &["pending"], Some(0)),
        ],
    );
}

#[test]
fn audit_selection() {
    check_all(
        audit(),
        &[
            case(
                "goes on",
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nDELETE /a HTTP/1.1\r\nHost: a\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
                &["allow rule:read", "deny default", "allow rule:read"],
                Some(87),
            ),
            case(
                "framing lost",
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET //x HTTP/1.1\r\nHost: a\r\n\r\nDELETE /a HTTP/1.1\r\nHost: a\r\n\r\n",
                &["allow rule:read", "deny malformed:path-traversal"],
                Some(88),
            ),
        ],
    );
}

#[test]
fn canonical_selection() {
    check_all(
        canonical(),
        &[
            case("decoded", b"GET /%61dmin HTTP/1.1\r\nHost: a\r\n\r\n", &["deny rule:admin"], None),
            case("dotdot", b"GET /%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:path-traversal"], None),
            case("slash", b"GET /x%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:path-encoding"], None),
            case("truncated", b"GET /files/a% HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:path-encoding"], None),
            case("semicolon", b"GET /admin;jsessionid=1 HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:path-traversal"], None),
            case("absolute", b"GET http://a/admin HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:target"], None),
            case("options", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &["allow default"], None),
            case("utf8", b"GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n", &["allow default"], None),
        ],
    );
}

#[test]
fn edges_selection() {
    check_all(
        edges(),
        &[
            case("empty line start", b"\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:request-line"], None),
            case("preface prefix", b"PRI * HT", &["pending"], Some(0)),
            case(
                "later preface",
                b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                &["allow rule:ok", "deny malformed:target"],
                None,
            ),
            case("encoded space", b"GET /admin%20 HTTP/1.1\r\nHost: a\r\n\r\n", &["deny rule:adm"], None),
            case("userinfo", b"GET /internal HTTP/1.1\r\nHost: internal.corp:80@evil\r\n\r\n", &["deny malformed:host"], None),
            case("trailing dot", b"GET /internal HTTP/1.1\r\nHost: Internal.Corp.\r\n\r\n", &["deny rule:internal-host"], None),
            case("upgrade 1.0", b"GET /ok HTTP/1.0\r\nUpgrade: websocket\r\n\r\n", &["deny tunnel"], None),
            case(
                "limit before syntax",
                b"GET /ok HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC : 3\r\n\r\n",
                &["deny limit:headers"],
                None,
            ),
            case("obs-fold", b"GET /ok HTTP/1.1\r\nHost: a\r\nA: 1\r\n B\r\n\r\n", &["deny malformed:obs-fold"], None),
            case("byte order", b"GET /../x%zz HTTP/1.1\r\nHost: a\r\n\r\n", &["deny malformed:path-traversal"], None),
        ],
    );
}

#[test]
fn framing_selection() {
    check_all(
        framing(),
        &[
            case(
                "chunked then next",
                b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
                &["allow rule:upload", "allow rule:get"],
                Some(105),
            ),
            case(
                "bad chunk",
                b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                &["allow rule:upload", "deny malformed:chunk"],
                Some(62),
            ),
            case(
                "cl-te",
                b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                &["deny malformed:cl-te"],
                Some(0),
            ),
            case(
                "body in flight",
                b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n012",
                &["allow rule:upload"],
                Some(57),
            ),
            case(
                "smuggled body",
                b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\n\r\nDELETE /x HTTP/1.1\r\nHost: a\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
                &["allow rule:upload", "allow rule:get"],
                Some(113),
            ),
        ],
    );
}

#[test]
fn headers_selection() {
    check_all(
        headers(),
        &[
            case("empty present", b"GET /api/x HTTP/1.1\r\nHost: a\r\nx-api-key:\r\n\r\n", &["allow rule:api-key"], None),
            case(
                "duplicate",
                b"GET /tenant/1 HTTP/1.1\r\nHost: a\r\nX-Tenant: other\r\nX-Tenant: acme\r\n\r\n",
                &["deny malformed:duplicate-header"],
                None,
            ),
            case("host suffix", b"GET /host HTTP/1.1\r\nHost: API.Example.COM:8443\r\n\r\n", &["allow rule:host"], None),
            case("bare lf", b"GET /api/x HTTP/1.1\nHost: a\nX-Api-Key: k\n\n", &["deny malformed:line-ending"], None),
            case("nul", b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\x00x\r\n\r\n", &["deny malformed:header-syntax"], None),
        ],
    );
}

#[test]
fn limits_selection() {
    let exact = {
        let mut head = b"GET /big HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        head.resize(1024 - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    let mut over = exact.clone();
    over.insert(40, b'p');
    check_all(
        limits(),
        &[
            case("tls", &[0x16, 0x03, 0x01, 0x00, 0x2a, 0x01], &["deny opaque"], Some(0)),
            case("preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &["deny http2"], Some(0)),
            case("exact head", &exact, &["allow default"], Some(1024)),
            case("over head", &over, &["deny limit:header_bytes"], Some(0)),
            Case {
                split: Some(vec![70]),
                ..case(
                    "websocket",
                    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
                    &["tunnel rule:ws"],
                    Some(77),
                )
            },
            case(
                "websocket frames before the answer",
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello",
                &["tunnel rule:ws", "deny tunnel"],
                Some(70),
            ),
            case("h2c", b"GET /h2c HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", &["deny tunnel"], Some(0)),
            Case {
                split: Some(vec![61]),
                ..case(
                    "connect",
                    b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n\x00\x01binary",
                    &["tunnel rule:connect"],
                    Some(69),
                )
            },
        ],
    );
}

#[test]
fn matchers_selection() {
    let grpc = b"POST /pkg.Service/Call HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\nContent-Length: 0\r\n\r\n";
    let mut bound = case("bound", grpc, &["redirect rule:grpc"], Some(0));
    bound.bind = vec!["envoy".into()];
    check_all(
        matchers(),
        &[
            case("list", b"GET /internal/metrics HTTP/1.1\r\nHost: a\r\n\r\n", &["deny rule:private"], None),
            case("glob zero", b"GET /static/main.css HTTP/1.1\r\nHost: a\r\n\r\n", &["allow rule:static"], None),
            case("glob star", b"GET /api/v2/users/7/x/orders HTTP/1.1\r\nHost: a\r\n\r\n", &["deny default"], None),
            case("any", b"PUT /tickets/9 HTTP/1.1\r\nHost: a\r\nX-Role: support\r\n\r\n", &["allow rule:tickets"], None),
            case(
                "not",
                b"DELETE /tickets/9 HTTP/1.1\r\nHost: a\r\nX-Role: admin\r\nX-Readonly: 1\r\n\r\n",
                &["deny default"],
                None,
            ),
            case("unbound", grpc, &["deny redirect-unbound"], Some(0)),
            bound,
        ],
    );
}

#[test]
fn scope_selection() {
    let mut governed = case(
        "governed",
        b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        &["allow rule:read", "deny default"],
        Some(28),
    );
    governed.remote_port = Some(8080);
    let mut tls = case("tls tunnel", &[0x16, 0x03, 0x01, 0x00, 0x2a, 0x01], &["tunnel opaque"], Some(6));
    tls.remote_port = Some(8080);
    let mut outside = case("outside", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &[], Some(48));
    outside.remote_port = Some(9090);
    check_all(scope(), &[governed, tls, outside]);
}

#[test]
fn the_outcome_json_has_the_cli_shape() {
    let outcome: Outcome = evaluate(&framing(), ConnectionInfo::default(), &[], b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nDELETE /a HTTP/1.1\r\nHost: a\r\n\r\n", &[]);
    let json = serde_json::to_value(outcome.to_json("ref")).expect("serializable");
    assert_eq!(
        json,
        serde_json::json!({
            "engine": "ref",
            "verdicts": [
                {"index": 0, "start": 0, "end": 28, "action": "allow", "reason": "rule", "rule": "get"},
                {"index": 1, "start": 28, "end": 59, "action": "deny", "reason": "default", "rule": null,
                 "answer": null, "fallback": "reset"}
            ],
            "delivered": 28,
            "pending": 0
        })
    );
    // Sent after the first request's answer arrived, the deny is answered.
    let outcome = evaluate(&framing(), ConnectionInfo::default(), &[], b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nDELETE /a HTTP/1.1\r\nHost: a\r\n\r\n", &[28]);
    let json = serde_json::to_value(outcome.to_json("ref")).expect("serializable");
    assert_eq!(json["verdicts"][1]["answer"], serde_json::json!({"status": 403, "bytes": 129}));
    assert_eq!(json["verdicts"][1].get("fallback"), None);
}
