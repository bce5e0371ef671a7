//! The table-driven head walker (`scan::walk_head`) against the reference
//! parser (`eval::parse_head`): on the conformance inputs (every request
//! start in them, every truncation), on >100,000 generated and mutated
//! heads, on long heads around `header_bytes` and field counts around
//! `headers`, the two must agree exactly — the same violation kind at the
//! same offset, or both incomplete, or both complete with the same length,
//! version, form, framing, and the same method, decoded path and fields as
//! fed through the hooks. Duplicate headers (which `parse_head` leaves to
//! the policy) are compared with `eval::evaluate` on a policy that
//! value-matches some headers.

mod scan_common;
use scan_common::Rng;
/// The conformance case files (tests/conformance/, without PENDING.toml).
#[path = "../../tests/pending/mod.rs"]
mod pending;
#[path = "../../tests/support/mod.rs"]
mod support;

use l7c_compiler::eval::{self, parse_head, HeadViolation, HttpVersion, ParseHeadError, ParsedHead, Reason, TargetForm};
use l7c_compiler::http::{hex_value, is_tchar, MalformedKind};
use l7c_compiler::model::{
    Action, Condition, ConditionKind, ConnectionInfo, DefaultVerdict, HeaderTest, Limits, Mode, OpaqueVerdict, Policy, Program,
    Rule, Scope, ValueOp,
};
use l7c_compiler::scan::{walk_head, Form, Framing, HeadProgress, HeadTables, RecordingHooks, Violation};
use l7c_compiler::source::Span;
use proptest::prelude::*;

fn tables() -> &'static HeadTables {
    HeadTables::shared().expect("the scanner tables build")
}

/// Percent-decode a checked raw path once.
fn decoded(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = 0;
    while let Some(&byte) = raw.get(index) {
        if byte == b'%' && index + 2 < raw.len() {
            out.push(hex_value(raw[index + 1]) << 4 | hex_value(raw[index + 2]));
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    out
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |end| end + 1);
    &value[start..end.max(start)]
}

fn same_violation(reference: HeadViolation, ours: Violation) -> bool {
    match (reference, ours) {
        (HeadViolation::Malformed(a), Violation::Malformed(b)) => a == b,
        (HeadViolation::Limit(a), Violation::Limit(b)) => a == b,
        _ => false,
    }
}

/// Both engines on one input; panics with a description on any
/// difference. Returns the walker's result.
fn compare(input: &[u8], limits: Limits) -> HeadProgress {
    let reference = parse_head(input, limits);
    let mut hooks = RecordingHooks::default();
    let ours = walk_head(tables(), input, limits, &mut hooks);
    let show = || format!("input {:?}\nlimits {limits:?}\nreference {reference:?}\nscan {ours:?}", String::from_utf8_lossy(input));
    match (&reference, &ours) {
        (Err(ParseHeadError::Incomplete), HeadProgress::Incomplete) => {}
        (Err(ParseHeadError::Refused(error)), HeadProgress::Refused(scan)) => {
            assert!(same_violation(error.violation, scan.violation) && error.offset == scan.offset, "{}", show());
        }
        (Ok(head), HeadProgress::Complete(facts)) => check_facts(head, facts, &hooks, &show),
        _ => panic!("the engines disagree\n{}", show()),
    }
    ours
}

fn check_facts(head: &ParsedHead<'_>, facts: &l7c_compiler::scan::HeadFacts, hooks: &RecordingHooks, show: &dyn Fn() -> String) {
    assert_eq!(head.len, facts.len, "{}", show());
    let minor = match head.version {
        HttpVersion::Http10 => 0,
        HttpVersion::Http11 => 1,
    };
    assert_eq!(minor, facts.minor_version, "{}", show());
    let form = match head.form {
        TargetForm::Origin => Form::Origin,
        TargetForm::Asterisk => Form::Asterisk,
        TargetForm::Authority => Form::Authority,
    };
    assert_eq!(form, facts.form, "{}", show());
    let framing = match head.framing {
        eval::Framing::None => Framing::None,
        eval::Framing::Length(length) => Framing::Length(length),
        eval::Framing::Chunked => Framing::Chunked,
    };
    assert_eq!(framing, facts.framing, "{}", show());
    assert_eq!(head.switches_protocols, facts.switches_protocols, "{}", show());
    assert_eq!(head.method == b"GET" || head.method == b"HEAD", facts.get_or_head, "{}", show());
    // What the hooks were fed.
    assert_eq!(head.method, hooks.method.as_slice(), "{}", show());
    assert!(hooks.method_ended, "{}", show());
    match head.form {
        TargetForm::Origin => {
            let raw = head.target.split(|&b| b == b'?').next().unwrap_or_default();
            assert_eq!(decoded(raw), hooks.path, "{}", show());
            assert!(hooks.path_ended, "{}", show());
        }
        TargetForm::Asterisk => assert!(hooks.path == b"*" && hooks.path_ended, "{}", show()),
        TargetForm::Authority => assert!(hooks.path.is_empty() && !hooks.path_ended, "{}", show()),
    }
    assert_eq!(head.fields.len(), hooks.fields.len(), "{}", show());
    for ((name, value), field) in head.fields.iter().zip(&hooks.fields) {
        assert_eq!(name.to_ascii_lowercase(), field.name, "{}", show());
        assert_eq!(*value, trim(&field.value), "{}", show());
        // Leading whitespace is never fed.
        assert!(!matches!(field.value.first(), Some(b' ' | b'\t')), "{}", show());
        assert!(field.ended, "{}", show());
    }
}

/// The header ids the scanner relies on are the ones lowering gives.
#[test]
fn scan_header_ids_match_lowering() {
    use l7c_compiler::lower::HeaderId as Lowered;
    use l7c_compiler::scan::HeaderId as Scanned;
    assert_eq!(
        [Scanned::OTHER, Scanned::HOST, Scanned::CONTENT_LENGTH, Scanned::TRANSFER_ENCODING, Scanned::UPGRADE],
        [Lowered::OTHER, Lowered::HOST, Lowered::CONTENT_LENGTH, Lowered::TRANSFER_ENCODING, Lowered::UPGRADE]
    );
    assert_eq!(Scanned::PROTOCOL, Lowered::PROTOCOL);
}

// ---------------------------------------------------------------------------
// Conformance inputs

/// `input = "..."` (TOML basic string) and `input_hex = "..."` lines, with
/// the limits of the file's policy.
fn conformance_inputs() -> Vec<(String, Vec<u8>, Limits)> {
    let mut inputs = Vec::new();
    for path in pending::case_files(&pending::conformance_dir(env!("CARGO_MANIFEST_DIR"))) {
        let text = std::fs::read_to_string(&path).expect("readable");
        let limits = policy_limits(&text);
        for line in text.lines() {
            let name = path.file_name().map(|name| name.to_string_lossy().to_string()).unwrap_or_default();
            if let Some(rest) = line.strip_prefix("input = \"") {
                inputs.push((name, toml_basic_string(rest), limits));
            } else if let Some(rest) = line.strip_prefix("input_hex = \"") {
                let hex = rest.trim_end().trim_end_matches('"');
                let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
                inputs.push((name, bytes, limits));
            }
        }
    }
    inputs
}

fn policy_limits(text: &str) -> Limits {
    let mut limits = Limits::default();
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == '{' || c == '}').filter(|w| !w.is_empty()).collect();
    for pair in words.windows(2) {
        let number = |word: &str| -> Option<u32> {
            let (digits, scale) = match word.strip_suffix("KiB") {
                Some(digits) => (digits, 1024),
                None => (word, 1),
            };
            digits.parse::<u32>().ok().map(|n| n * scale)
        };
        match (pair[0], number(pair[1])) {
            ("header_bytes", Some(n)) => limits.header_bytes = n,
            ("headers", Some(n)) => limits.headers = n,
            _ => {}
        }
    }
    limits
}

use support::toml_basic_string;


#[test]
fn scan_conformance_inputs_at_every_request_start() {
    let inputs = conformance_inputs();
    assert!(inputs.len() > 100, "found {} inputs", inputs.len());
    let mut compared = 0usize;
    for (_file, input, limits) in &inputs {
        for limits in [*limits, Limits::default(), Limits { header_bytes: 64, headers: 2 }] {
            // Every suffix: every request start (and every other offset).
            for start in 0..input.len() {
                compare(&input[start..], limits);
                compared += 1;
            }
            // Every truncation of the whole input.
            for end in 0..input.len() {
                compare(&input[..end], limits);
                compared += 1;
            }
        }
    }
    eprintln!("conformance: {} inputs, {compared} heads compared", inputs.len());
}

// ---------------------------------------------------------------------------
// Generated heads


const METHODS: &[&str] = &[
    "GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "OPTIONS", "CONNECT", "CONNECT", "PATCH", "M.SEARCH", "get",
    "OPTION", "OPTIONSX", "CONNEC", "CONNECTX", "XCONNECT", "C", "O", "OPTIONs", "cONNECT", "P~#!", "GE(T", "GE\tT",
    // Near misses of the words the method trie knows (OPTIONS, CONNECT,
    // GET, HEAD): every trie state left on a byte that does not continue it.
    "GE", "G", "GETS", "HEA", "H", "HEADS", "HE", "OP", "OPT", "OPTI", "OPTIO", "CON", "CONN", "CONNE", "XNS", "XPTIONS",
    "GONNECT", "HPTIONS", "OGET", "CHEAD", "GEAD", "HET",
];

const SEGMENTS: &[&str] = &[
    "a", "api", "v1", "users", "%41", "%61dmin", "%2e", "%2E", "%2e%2e", ".%2e", ".", "..", "...", ".a", "a.", "%2F", "%2f", "%5C",
    "%5c", "%3B", "%3b", ";", "a;b", "%00", "%1f", "%1F", "%7F", "%7f", "%20", "%zz", "%4", "%", "%C3%A9", "a:b", "@", "!$&'()*+,=",
    "~-_", "", "#", "\\", "\x7f", "é", "%25", "%2", "a%2Gb", "%G1", "x%", "%%", "%2e.", "%3a", "%7e", "%80", "%FF", "\"", "[", "]",
    "{", "^", "`", "|", "<",
];

const CLEAN_METHODS: &[&str] =
    &["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT", "PATCH", "M.SEARCH", "get", "COPY", "CHECKOUT", "OPTIONAL", "CONNECTED", "CO", "C", "CONNX", "OPTIONX", "GE", "GETS", "HEA", "HEADS", "GEAD", "HET"];
const CLEAN_SEGMENTS: &[&str] = &[
    "a", "api", "v1", "users", "%41", "%61dmin", "...", ".a", "a.", "%2e%2e%2e", "a%2e", "%20", "%C3%A9", "a:b", "@", "!$&'()*+,=",
    "~-_", "%25", "%3a", "%7e", "%80", "%FF", "x.y.z", "%2E%2Ex", "..a", ".%41", "..%41", ".~", "..!", ".:", "..@", "%2e%3a",
];
const CLEAN_QUERIES: &[&str] = &["a=1", "x=%41", "/..", "?", "b=c&d", "", "%2F%00", "[x]", "q=%4a", ";", "@:"];
const CLEAN_REG_NAMES: &[&str] = &["example.com", "a", "db.internal", "%41b", "10.0.0.1", "256.1.1.1", "EXAMPLE.COM.", "x_y~z", "a!$&'()*+,;=b"];
const CLEAN_IPV6: &[&str] = &[
    "::1", "::", "2001:db8::1", "1:2:3:4:5:6:7:8", "::ffff:10.0.0.1", "fe80::1:2", "1::", "1:2:3:4:5:6:1.2.3.4", "v1.x", "V7f.a:b!",
    "0:0:0:0:0:0:0:0", "abcd:ef01::2345:6789",
];
const CLEAN_PORTS: &[&str] = &["", ":443", ":80", ":0", ":65536", ":08080"];

const QUERIES: &[&str] =
    &["a=1", "x=%41", "%zz", "%", "/..", "?", "#", "%2", "b=c&d", "\x01", "", "%2F%00", "a b", "é", "[x]", "q=%4"];

const REG_NAMES: &[&str] = &[
    "example.com", "a", "db.internal", "%41b", "%zz", "%4", "a%", "", "a@b", "10.0.0.1", "256.1.1.1", "EXAMPLE.COM.", "x_y~z",
    "a!$&'()*+,;=b", "a/b", "é", "a#b", "-", ".",
];

const PORTS: &[&str] = &["", "", ":443", ":80", ":", ":x", ":44x", ":0", "::1", ":8080 ", ":65536"];

const IPV6_PIECES: &[&str] =
    &["", "0", "1", "ff", "fFfF", "12345", "abc", "1.2.3.4", "255.255.255.255", "256.1.1.1", "01.1.1.1", "1.2.3", "0.0.0.0", "g"];

fn ipv6ish(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => {
            // IPvFuture, around its 64-byte bound.
            let digits = "1aF".repeat(1 + rng.below(3));
            let tail_len = 1 + rng.below(66);
            let tail: String = (0..tail_len).map(|i| if i % 7 == 3 { ':' } else { 'x' }).collect();
            let v = if rng.chance(50) { "v" } else { "V" };
            let mut text = format!("{v}{}{}{}", &digits[..1 + rng.below(digits.len())], if rng.chance(90) { "." } else { "" }, tail);
            if rng.chance(10) {
                text.truncate(rng.below(text.len() + 1));
            }
            text
        }
        1 => {
            // Junk in the literal's character set, long or not.
            let pool = b"0123456789abcdefv.:x!-_~";
            (0..rng.below(70)).map(|_| rng.pick(pool) as char).collect()
        }
        _ => {
            let groups = rng.below(10);
            let gap = rng.below(11);
            let mut text = String::new();
            for index in 0..groups {
                if index == gap {
                    text.push_str("::");
                } else if index > 0 {
                    text.push(':');
                }
                text.push_str(rng.pick(IPV6_PIECES));
            }
            if gap == groups {
                text.push_str("::");
            }
            if rng.chance(5) {
                text.push_str("%25eth0");
            }
            text
        }
    }
}

fn authority(rng: &mut Rng, clean: bool) -> String {
    if clean {
        let host = if rng.chance(40) { format!("[{}]", rng.pick(CLEAN_IPV6)) } else { rng.pick(CLEAN_REG_NAMES).to_string() };
        return format!("{host}{}", rng.pick(&CLEAN_PORTS[1..]));
    }
    let host = if rng.chance(40) {
        let close = if rng.chance(95) { "]" } else { "" };
        format!("[{}{close}", ipv6ish(rng))
    } else {
        rng.pick(REG_NAMES).to_string()
    };
    format!("{host}{}", rng.pick(PORTS))
}

fn origin(rng: &mut Rng, clean: bool) -> String {
    let (segment_pool, query_pool) = if clean { (CLEAN_SEGMENTS, CLEAN_QUERIES) } else { (SEGMENTS, QUERIES) };
    let mut target = String::from("/");
    let segments = rng.below(6);
    for index in 0..segments {
        if index > 0 {
            target.push('/');
        }
        target.push_str(rng.pick(segment_pool));
        if rng.chance(20) {
            target.push_str(rng.pick(segment_pool));
        }
    }
    if rng.chance(15) && segments > 0 {
        target.push('/');
    }
    if rng.chance(25) {
        target.push('?');
        for _ in 0..1 + rng.below(3) {
            target.push_str(rng.pick(query_pool));
        }
    }
    target
}

fn target(rng: &mut Rng, method: &str, clean: bool) -> String {
    match (method, rng.below(if clean { 92 } else { 100 })) {
        ("CONNECT", 0..=89) => authority(rng, clean),
        ("CONNECT", _) if clean => authority(rng, clean),
        ("OPTIONS", 0..=39) => "*".into(),
        (_, 0..=91) => origin(rng, clean),
        (_, 92..=94) => authority(rng, clean),
        (_, 95..=96) => "*".into(),
        (_, 97) => "http://a/".into(),
        (_, 98) => "*x".into(),
        _ => String::new(),
    }
}

const VERSIONS: &[&str] = &[
    "HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.", "HTTP/1.10", "HTTP/1.1 ", "HTTP/11", "", "HTTP/1.1x", " HTTP/1.1", "HTTP/1.0 ",
    "HTTP", "H", "HTTP/1.1\n", "HTTP/1.1\r",
];

const HOST_VALUES: &[&str] = &["a", "pay", "example.com:8080", "[::1]:8080", "a b", "a:", "", "user@a", "%41", "[v1.x]", "a:80 "];
const LENGTHS: &[&str] = &[
    "0", "5", "12", "0012", "9007199254740992", "9007199254740993", "99999999999999999999999", "", "1 2", "1,1", "-1", "+1", "0x10",
    " 7 ", "7\t",
];
const CODINGS: &[&str] = &["chunked", "Chunked", "CHUNKED", "chunked ", "gzip", "chunked, gzip", "", "chunke", "chunkedx", "\tchunked"];
const NAMES: &[&str] = &[
    "X-A", "x-b", "Accept", "User-Agent", "X-Custom-Header", "Upgrade", "upgrade", "Cookie", "X(A)", "X A", "X-\u{7f}", ":x", "X-Ü",
    " Fold", "\tFold",
];
const VALUES: &[&str] = &[
    "1", "text/html", "  spaced  value \t", "", "\t", "a\u{1}b", "a\u{7f}b", "\u{e9}t\u{e9}", "x:y", "\"q\"", "a\rb", "a\nb", "websocket",
];
const OWS: &[&str] = &["", "", " ", "  ", "\t", " \t "];

fn case_variant(rng: &mut Rng, name: &str) -> String {
    match rng.below(4) {
        0 => name.to_ascii_uppercase(),
        1 => name.to_ascii_lowercase(),
        2 => name.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect(),
        _ => name.to_string(),
    }
}

/// A request head: well formed when `clean`, otherwise often not.
fn generate_head(rng: &mut Rng) -> (Vec<u8>, usize) {
    let clean = rng.chance(50);
    let method = rng.pick(if clean { CLEAN_METHODS } else { METHODS });
    let version = if clean || rng.chance(88) {
        if rng.chance(75) {
            "HTTP/1.1"
        } else {
            "HTTP/1.0"
        }
    } else {
        rng.pick(VERSIONS)
    };
    let mut head = format!("{method} {} {version}\r\n", target(rng, method, clean));
    let mut fields = 0;
    if rng.chance(if clean { 97 } else { 85 }) {
        let value = match (clean, rng.below(3)) {
            (true, 0) => rng.pick(&HOST_VALUES[..4]).to_string(),
            (true, _) => authority(rng, true),
            (false, 0) => rng.pick(HOST_VALUES).to_string(),
            (false, 1) => authority(rng, false),
            (false, _) => rng.pick(REG_NAMES).to_string(),
        };
        head.push_str(&format!("{}:{}{value}{}\r\n", case_variant(rng, "Host"), rng.pick(OWS), rng.pick(OWS)));
        fields += 1;
    }
    let count = if rng.chance(3) { 55 + rng.below(20) } else { rng.below(7) };
    let mut framed = false;
    for _ in 0..count {
        if clean {
            let (name, value) = match rng.below(8) {
                0 if !framed => {
                    framed = true;
                    ("Content-Length".to_string(), rng.pick(&LENGTHS[..5]).to_string())
                }
                1 if !framed && version == "HTTP/1.1" => {
                    framed = true;
                    ("Transfer-Encoding".to_string(), rng.pick(&CODINGS[..4]).to_string())
                }
                2 if rng.chance(15) => {
                    // Both framings: cl-te (when nothing else is wrong).
                    head.push_str("Content-Length: 3\r\n");
                    fields += 1;
                    ("Transfer-Encoding".to_string(), "chunked".to_string())
                }
                _ => (rng.pick(&NAMES[..8]).to_string(), rng.pick(&VALUES[..5]).to_string()),
            };
            head.push_str(&format!("{}:{}{value}{}\r\n", case_variant(rng, &name), rng.pick(OWS), rng.pick(OWS)));
            fields += 1;
            continue;
        }
        let (name, value) = match rng.below(12) {
            0 => ("Host".to_string(), rng.pick(HOST_VALUES).to_string()),
            1 | 2 => ("Content-Length".to_string(), rng.pick(LENGTHS).to_string()),
            3 | 4 => ("Transfer-Encoding".to_string(), rng.pick(CODINGS).to_string()),
            5 => ("Upgrade".to_string(), "websocket".to_string()),
            _ => (rng.pick(NAMES).to_string(), rng.pick(VALUES).to_string()),
        };
        head.push_str(&format!("{}:{}{value}{}\r\n", case_variant(rng, &name), rng.pick(OWS), rng.pick(OWS)));
        fields += 1;
    }
    head.push_str("\r\n");
    if rng.chance(20) {
        head.push_str("body bytes");
    }
    (head.into_bytes(), fields)
}

const SPECIAL: &[u8] = b"\r\n \t%\0;./:?#\x7f\x80[]*@\\";

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] = rng.next() as u8,
            1 | 2 => bytes.insert(at, rng.pick(SPECIAL)),
            3 if at < bytes.len() => {
                bytes.remove(at);
            }
            4 => {
                let end = (at + rng.below(8)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.truncate(at),
        }
    }
}

fn limits_for(rng: &mut Rng, len: usize, fields: usize) -> Limits {
    match rng.below(10) {
        0..=5 => Limits::default(),
        6 | 7 => {
            let near = len as i64 + rng.below(9) as i64 - 4;
            Limits { header_bytes: near.max(1) as u32, headers: Limits::DEFAULT_HEADERS }
        }
        8 => {
            let near = fields as i64 + rng.below(3) as i64 - 1;
            Limits { header_bytes: Limits::DEFAULT_HEADER_BYTES, headers: near.max(0) as u32 }
        }
        _ => Limits { header_bytes: 1 + rng.below(len + 2) as u32, headers: rng.below(fields + 2) as u32 },
    }
}

/// Generated heads, half of them mutated, under varied limits; every 16th
/// is also compared at every truncation.
fn generated_corpus(seed: u64, heads: usize) -> ([usize; 3], usize, std::collections::BTreeMap<String, usize>) {
    let mut rng = Rng(seed);
    let mut outcomes = [0usize; 3];
    let mut kinds = std::collections::BTreeMap::new();
    let mut truncations = 0usize;
    for generated in 0..heads {
        let (mut bytes, fields) = generate_head(&mut rng);
        if rng.chance(50) {
            mutate(&mut rng, &mut bytes);
        }
        let limits = limits_for(&mut rng, bytes.len(), fields);
        let result = compare(&bytes, limits);
        outcomes[match result {
            HeadProgress::Incomplete => 0,
            HeadProgress::Refused(error) => {
                let name = match error.violation {
                    Violation::Malformed(kind) => kind.name(),
                    Violation::Limit(kind) => kind.name(),
                };
                *kinds.entry(name.to_string()).or_insert(0) += 1;
                1
            }
            HeadProgress::Complete(_) => 2,
        }] += 1;
        if generated % 64 == 0 {
            for end in 0..bytes.len() {
                compare(&bytes[..end], limits);
                truncations += 1;
            }
        }
    }
    (outcomes, truncations, kinds)
}

#[test]
fn scan_generated_heads_agree() {
    let heads = 120_000;
    let ([incomplete, refused, complete], truncations, kinds) = generated_corpus(0x5ca1_ab1e, heads);
    eprintln!(
        "generated: {heads} heads compared ({incomplete} incomplete, {refused} refused, {complete} complete) and {truncations} truncations\nrefusals: {kinds:?}"
    );
    // The corpus must exercise every outcome, and every kind, in earnest.
    assert!(complete > heads / 10 && refused > heads / 5 && incomplete > heads / 50, "{incomplete} {refused} {complete}");
    // Chunk is the body's; duplicate-header and get-body depend on the
    // policy (scan_duplicate_headers_agree_with_the_evaluator covers them).
    for kind in MalformedKind::ALL.iter().filter(|&&kind| !matches!(kind, MalformedKind::Chunk | MalformedKind::DuplicateHeader | MalformedKind::GetBody)) {
        assert!(kinds.get(kind.name()).copied().unwrap_or(0) > 50, "too few {kind}: {kinds:?}");
    }
}

/// A much larger run: `cargo test --release -p l7c-compiler --test scan_head -- --ignored`.
#[test]
#[ignore]
fn scan_generated_heads_agree_at_length() {
    for seed in 1..=20u64 {
        let (outcomes, truncations, _) = generated_corpus(seed.wrapping_mul(0x1234_5678_9abc_def1), 500_000);
        eprintln!("seed {seed}: 500000 heads {outcomes:?}, {truncations} truncations");
    }
}

/// Long heads around 8 KiB and 16 KiB, and field counts around `headers`.
#[test]
fn scan_long_heads_and_many_fields() {
    let mut compared = 0;
    for header_bytes in [8 * 1024u32, 16 * 1024] {
        let limits = Limits { header_bytes, headers: 64 };
        let prefix = b"GET /big HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let target = header_bytes as usize;
        for total in target - 4..=target + 4 {
            for tail in [&b"\r\n\r\n"[..], b"\r\n\r", b"\r\n", b" \r\n\r\n"] {
                let mut head = prefix.to_vec();
                head.resize(total.saturating_sub(tail.len()).max(prefix.len()), b'p');
                head.extend_from_slice(tail);
                for extra in [&b""[..], b"X", b"\n", b"\r\n"] {
                    let mut input = head.clone();
                    input.extend_from_slice(extra);
                    compare(&input, limits);
                    compared += 1;
                }
            }
        }
    }
    for headers in [0u32, 1, 2, 63, 64, 65] {
        let limits = Limits { header_bytes: 16 * 1024, headers };
        for count in headers.saturating_sub(2)..=headers + 2 {
            for last_line in ["", " obs\r\n", "(bad: 1\r\n", "X-Last: 1\r\n", "\r\n", "\n"] {
                let mut head = String::from("GET / HTTP/1.0\r\n");
                for index in 0..count {
                    head.push_str(&format!("X-{index}: v\r\n"));
                }
                head.push_str(last_line);
                head.push_str("\r\n");
                compare(head.as_bytes(), limits);
                compared += 1;
            }
        }
    }
    eprintln!("long heads and field counts: {compared} heads compared");
}

// ---------------------------------------------------------------------------
// Arbitrary token soups (proptest shrinks a failure to a short input)

fn soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"GET ".to_vec()),
        Just(b"CONNECT ".to_vec()),
        Just(b"OPTIONS ".to_vec()),
        Just(b"/".to_vec()),
        Just(b"%2e".to_vec()),
        Just(b"%".to_vec()),
        Just(b".".to_vec()),
        Just(b" HTTP/1.1\r\n".to_vec()),
        Just(b" HTTP/1.0\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"Host: ".to_vec()),
        Just(b"Content-Length: 1".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"[::1]".to_vec()),
        Just(b":80".to_vec()),
        Just(b"?".to_vec()),
        prop::collection::vec(any::<u8>(), 1..3),
        prop::collection::vec(prop::sample::select(b"aZ09-\r\n \t%:;[]".to_vec()), 1..4),
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn scan_token_soups_agree(input in soup(), header_bytes in 1u32..80, headers in 0u32..4) {
        compare(&input, Limits::default());
        compare(&input, Limits { header_bytes, headers });
    }
}

// ---------------------------------------------------------------------------
// Duplicate headers, through the evaluator

fn header_rule(name: &str) -> Rule {
    let kind = ConditionKind::Header {
        name: name.into(),
        test: HeaderTest::Value { op: ValueOp::Exact, nocase: false, values: vec![b"never".to_vec()] },
    };
    Rule { name: format!("r-{name}"), span: Span::default(), conditions: vec![Condition { span: Span::default(), kind }], action: Action::Deny, log: false }
}

#[test]
fn scan_duplicate_headers_agree_with_the_evaluator() {
    let matched = ["x-a", "accept", "cookie"];
    let policy = Policy {
        name: "dups".into(),
        span: Span::default(),
        scope: Scope::default(),
        default: Some(DefaultVerdict::Allow),
        mode: Mode::Enforce,
        opaque: OpaqueVerdict::Deny,
        get_body: l7c_compiler::model::GetBodyVerdict::Deny,
        deny_with: l7c_compiler::model::DenyWith::default(),
        limits: Limits::default(),
        rules: matched.iter().map(|name| header_rule(name)).collect(),
    };
    let program = Program { policies: vec![policy], tests: Vec::new() };
    let mut rng = Rng(99);
    let mut duplicates = 0;
    let mut get_bodies = 0;
    for _ in 0..20_000 {
        let (mut bytes, _) = generate_head(&mut rng);
        // Value-matched (and other) field lines, often repeated.
        if let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") {
            let mut extra = Vec::new();
            for _ in 0..rng.below(4) {
                extra.extend_from_slice(rng.pick(&[&b"X-A: 1\r\n"[..], b"Accept: */*\r\n", b"cookie: c\r\n", b"x-a:2\r\n", b"X-B: 1\r\n"]));
            }
            bytes.splice(line_end + 2..line_end + 2, extra);
        }
        if !bytes.first().is_some_and(|&b| is_tchar(b)) {
            continue;
        }
        let mut hooks = RecordingHooks::new(&matched).refusing_get_body();
        let ours = walk_head(tables(), &bytes, Limits::default(), &mut hooks);
        let outcome = eval::evaluate(&program, ConnectionInfo::default(), &[], &bytes, &[]);
        let first = outcome.verdicts.first().map(|verdict| verdict.reason);
        let show = || format!("{:?}: scan {ours:?}, evaluator {outcome:?}", String::from_utf8_lossy(&bytes));
        match ours {
            HeadProgress::Refused(error) => {
                let expected = match error.violation {
                    Violation::Malformed(kind) => Reason::Malformed(kind),
                    Violation::Limit(kind) => Reason::Limit(kind),
                };
                duplicates += usize::from(error.violation == Violation::Malformed(MalformedKind::DuplicateHeader));
                get_bodies += usize::from(error.violation == Violation::Malformed(MalformedKind::GetBody));
                assert_eq!(first, Some(expected), "{}", show());
            }
            HeadProgress::Complete(_) => {
                assert!(!matches!(first, Some(Reason::Malformed(_) | Reason::Limit(_)) | None), "{}", show());
            }
            HeadProgress::Incomplete => assert!(outcome.pending > 0, "{}", show()),
        }
    }
    assert!(duplicates > 50, "only {duplicates} duplicate-header heads");
    assert!(get_bodies > 50, "only {get_bodies} get-body heads");
}

// ---------------------------------------------------------------------------
// The comparison has teeth, and pieces do not matter

/// Whether `tables` and the reference disagree on `input`.
fn disagrees(tables: &HeadTables, input: &[u8], limits: Limits) -> bool {
    let reference = parse_head(input, limits);
    let mut hooks = RecordingHooks::default();
    let ours = walk_head(tables, input, limits, &mut hooks);
    match (&reference, &ours) {
        (Err(ParseHeadError::Incomplete), HeadProgress::Incomplete) => false,
        (Err(ParseHeadError::Refused(error)), HeadProgress::Refused(scan)) => {
            !(same_violation(error.violation, scan.violation) && error.offset == scan.offset)
        }
        (Ok(head), HeadProgress::Complete(facts)) => {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_facts(head, facts, &hooks, &String::new))).is_err()
        }
        _ => true,
    }
}

/// Corrupt one reachable lexer entry at a time: the generated corpus must
/// notice nearly every corruption (some are equivalent: the entry is never
/// used by a well-formed difference, or the change is invisible).
#[test]
fn scan_corrupted_tables_are_caught() {
    let clean = tables();
    let mut rng = Rng(4242);
    let corpus: Vec<(Vec<u8>, Limits)> = (0..6000)
        .map(|_| {
            let (mut bytes, fields) = generate_head(&mut rng);
            if rng.chance(50) {
                mutate(&mut rng, &mut bytes);
            }
            let limits = limits_for(&mut rng, bytes.len(), fields);
            (bytes, limits)
        })
        .collect();
    // Mutate entries that the corpus actually uses.
    let mut used = std::collections::BTreeSet::new();
    for (bytes, _) in corpus.iter().take(500) {
        let mut state = clean.start;
        for &byte in bytes {
            let class = clean.byte_class[usize::from(byte)];
            used.insert((state, class));
            let entry = clean.main_entry(state, class);
            if (entry >> 8) & 0xff == 1 {
                break;
            }
            state = (entry & 0xff) as u16;
        }
    }
    let used: Vec<(u16, u8)> = used.into_iter().collect();
    let silenced = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (mut killed, mut mutants) = (0, 0);
    let mut survivors = Vec::new();
    for _ in 0..120 {
        let (state, class) = used[rng.below(used.len())];
        let index = usize::from(state) << 6 | usize::from(class);
        let mut mutant = clean.clone();
        let entry = mutant.main[index];
        if state == 0 || state + 1 == clean.main_states {
            continue;
        }
        let action = (entry >> 8) & 0xff;
        let corrupted = if action == 1 || action == 11 {
            // A violation: another kind, or another byte.
            let (kind, back) = ((entry >> 16) & 0x1f, (entry >> 21) & 3);
            let (kind, back) = match rng.below(2) {
                0 => ((kind + 1 + rng.below(13) as u32) % 14, back),
                _ => (kind, (back + 1 + rng.below(2) as u32) % 3),
            };
            (entry & 0xffff) | kind << 16 | back << 21
        } else {
            // A move: another state or no action.
            match rng.below(2) {
                0 => (entry & !0xff) | (((entry & 0xff) + 1 + rng.below(5) as u32) % u32::from(clean.main_states)),
                _ => entry & !0xff00,
            }
        };
        if corrupted == entry {
            continue;
        }
        // A move from one method-trie state to another (Method, Options(n),
        // Connect(n), Get(n), Head(n)) only differs on the rest of that
        // exact word ("...NS *" after a jump into Options(5)): nearly
        // equivalent mutants, which the trie's own tests cover.
        let in_trie = |state: u16| {
            clean.state_names.get(usize::from(state)).is_some_and(|name| {
                ["Method", "Options(", "Connect(", "Get(", "Head("].iter().any(|prefix| name.starts_with(prefix))
            })
        };
        if action != 1 && action != 11 && in_trie(state) && in_trie((corrupted & 0xff) as u16) && (corrupted & 0xff00) == (entry & 0xff00) {
            continue;
        }
        mutant.main[index] = corrupted;
        mutants += 1;
        if corpus.iter().any(|(bytes, limits)| disagrees(&mutant, bytes, *limits)) {
            killed += 1;
        } else {
            survivors.push((state, class, entry, corrupted));
        }
    }
    std::panic::set_hook(silenced);
    eprintln!("corrupted tables: {killed} of {mutants} caught; survivors {survivors:x?}");
    assert!(killed * 10 >= mutants * 9, "only {killed} of {mutants} corruptions caught: {survivors:x?}");
}

/// Feeding a head in pieces gives what feeding it whole gives, hooks
/// included.
#[test]
fn scan_pieces_do_not_matter() {
    let mut rng = Rng(77);
    for _ in 0..5000 {
        let (mut bytes, fields) = generate_head(&mut rng);
        if rng.chance(50) {
            mutate(&mut rng, &mut bytes);
        }
        let limits = limits_for(&mut rng, bytes.len(), fields);
        let mut whole_hooks = RecordingHooks::default();
        let whole = walk_head(tables(), &bytes, limits, &mut whole_hooks);
        let mut scanner = l7c_compiler::scan::HeadScanner::new(tables(), limits);
        let mut hooks = RecordingHooks::default();
        let mut rest = bytes.as_slice();
        let mut progress = HeadProgress::Incomplete;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(rng.below(rest.len()) + 1);
            progress = scanner.feed(piece, &mut hooks);
            rest = after;
        }
        assert_eq!(progress, whole, "{:?}", String::from_utf8_lossy(&bytes));
        assert_eq!(hooks, whole_hooks);
    }
}
