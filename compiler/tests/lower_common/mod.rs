//! Shared by the `lower_*` tests: compile a policy, lower it, and decide a
//! raw request both with the reference evaluator and with the walker over
//! the lowered tables.
#![allow(dead_code)]

use l7c_compiler::check::Checked;
use l7c_compiler::driver::compile_text;
use l7c_compiler::eval::{self, parse_head, TargetForm};
use l7c_compiler::verdict::Reason;
use l7c_compiler::http::MalformedKind;
use l7c_compiler::lower::walk::{self, Decision, RequestFacts};
use l7c_compiler::lower::{self, Lowered, LoweredPolicy};
use l7c_compiler::model::{ConnectionInfo, Policy, Scope};
use std::path::Path;

/// Compile a policy text; panic with the diagnostics if it has errors.
pub fn checked(name: &str, text: &str, dir: Option<&Path>) -> Checked {
    let compilation = compile_text(name, text, dir);
    match compilation.checked {
        Some(checked) => checked,
        None => panic!(
            "{name} does not compile:\n{}",
            l7c_compiler::report::human(&compilation.diagnostics, &compilation.sources)
        ),
    }
}

/// Compile and lower; `None` when the text has errors.
pub fn try_lowered(text: &str) -> Option<(Checked, Lowered)> {
    let checked = compile_text("generated.l7", text, None).checked?;
    let lowered = lower::lower(&checked).unwrap_or_else(|e| panic!("lowering failed: {e}\n{text}"));
    Some((checked, lowered))
}

pub fn lowered(text: &str) -> (Checked, Lowered) {
    let checked = checked("test.l7", text, None);
    let lowered = lower::lower(&checked).unwrap_or_else(|e| panic!("lowering failed: {e}"));
    (checked, lowered)
}

/// A connection the policy's scope selects, if one is easy to build.
pub fn connection_for(scope: &Scope) -> Option<ConnectionInfo> {
    let mut connection = ConnectionInfo::default();
    if let Some(port) = scope.remote_ports.as_ref().and_then(|ports| ports.first()) {
        connection.remote_port = *port;
    }
    if let Some(port) = scope.local_ports.as_ref().and_then(|ports| ports.first()) {
        connection.local_port = *port;
    }
    if let Some(cidr) = scope.remote_addrs.as_ref().and_then(|cidrs| cidrs.first()) {
        connection.remote_addr = cidr.addr;
    }
    if let Some(cidr) = scope.local_addrs.as_ref().and_then(|cidrs| cidrs.first()) {
        connection.local_addr = cidr.addr;
    }
    scope.selects(&connection).then_some(connection)
}

/// What the reference evaluator decided for the first request of `input`,
/// in the walker's terms; `None` when it is not a rule/default decision
/// (a malformed head other than a duplicate header, a limit, opaque, ...).
pub fn reference(checked: &Checked, policy: &Policy, connection: ConnectionInfo, input: &[u8]) -> Option<Decision> {
    let outcome = eval::evaluate(checked.program(), connection, &[], input, &[]);
    let verdict = outcome.verdicts.first()?;
    if let Some(name) = &verdict.rule {
        let index = policy.rules.iter().position(|rule| &rule.name == name)?;
        return Some(Decision::Rule(index));
    }
    match verdict.reason {
        Reason::Default => Some(Decision::Default),
        Reason::Malformed(MalformedKind::DuplicateHeader) => Some(Decision::Refused(MalformedKind::DuplicateHeader)),
        _ => None,
    }
}

/// What the walker decides, from the head the reference parser gives;
/// `None` when the parser refuses the head.
pub fn walked(policy: &LoweredPolicy, input: &[u8], trailing_whitespace: &[u8]) -> Option<(Decision, Decision)> {
    let head = parse_head(input, policy.limits).ok()?;
    let target = match head.form {
        TargetForm::Origin => walk::Target::Origin(head.target),
        TargetForm::Asterisk => walk::Target::Asterisk,
        TargetForm::Authority => walk::Target::Authority,
    };
    let mut facts = RequestFacts::from_parts(head.method, target, head.fields.iter().map(|(name, value)| (&name[..], &value[..])));
    // The kernel scanner sees a value's trailing whitespace; the parser
    // trimmed it. Put some back (the automata must ignore it).
    if !trailing_whitespace.is_empty() {
        for (_, value) in &mut facts.fields {
            value.extend_from_slice(trailing_whitespace);
        }
    }
    Some((walk::decide(policy, &facts), walk::decide_linear(policy, &facts)))
}

/// Both engines on one request. `Some(true)` when they agree, `Some(false)`
/// (after printing why) when not, `None` when the request is not one both
/// decide.
pub fn compare(checked: &Checked, index: usize, lowered: &LoweredPolicy, input: &[u8], trailing_whitespace: &[u8]) -> Option<bool> {
    let policy = checked.program().policies.get(index)?;
    let connection = connection_for(&policy.scope)?;
    let expected = reference(checked, policy, connection, input)?;
    let (indexed, linear) = walked(lowered, input, trailing_whitespace)?;
    if indexed == expected && linear == expected {
        return Some(true);
    }
    eprintln!(
        "MISMATCH policy {:?}: reference {expected:?}, walker {indexed:?} (linear {linear:?}) for {:?}",
        policy.name,
        String::from_utf8_lossy(input)
    );
    Some(false)
}

/// A small deterministic generator (xorshift64*), so corpus runs repeat.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// Canonical path bytes as a raw origin-form path: bytes that cannot stand
/// in a path are percent-encoded, and (with `rng`) some others too.
pub fn encode_path(path: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for &byte in path {
        let plain = l7c_compiler::http::is_path_byte(byte) && byte != b'%';
        let may_encode = byte != b'/';
        if !plain || (may_encode && rng.chance(10)) {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        } else {
            out.push(byte);
        }
    }
    out
}

/// The parts of a generated request.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec {
    pub method: Vec<u8>,
    /// Raw target (already encoded).
    pub target: Vec<u8>,
    pub http10: bool,
    pub host: Option<Vec<u8>>,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RequestSpec {
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(if self.http10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        if let Some(host) = &self.host {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(host);
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.fields {
            out.extend_from_slice(name);
            out.extend_from_slice(b":");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Strings a policy's rules mention: the seeds of requests that reach its
/// rules.
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    pub methods: Vec<Vec<u8>>,
    pub paths: Vec<Vec<u8>>,
    pub headers: Vec<Vec<u8>>,
    pub values: Vec<Vec<u8>>,
    pub hosts: Vec<Vec<u8>>,
}

impl Vocabulary {
    pub fn of(policy: &Policy) -> Vocabulary {
        use l7c_compiler::model::{Condition, ConditionKind, HeaderTest};
        fn visit(condition: &Condition, v: &mut Vocabulary) {
            match &condition.kind {
                ConditionKind::Method(methods) => v.methods.extend(methods.iter().cloned()),
                ConditionKind::Path { patterns, .. } => v.paths.extend(patterns.iter().cloned()),
                ConditionKind::Header { name, test } => {
                    v.headers.push(name.as_bytes().to_vec());
                    if let HeaderTest::Value { values, .. } = test {
                        v.values.extend(values.iter().cloned());
                    }
                }
                ConditionKind::Host { values, .. } => v.hosts.extend(values.iter().cloned()),
                ConditionKind::Any(group) => group.iter().for_each(|c| visit(c, v)),
                ConditionKind::Not(inner) => visit(inner, v),
            }
        }
        let mut v = Vocabulary::default();
        for rule in &policy.rules {
            for condition in &rule.conditions {
                visit(condition, &mut v);
            }
        }
        for list in [&mut v.methods, &mut v.paths, &mut v.headers, &mut v.values, &mut v.hosts] {
            list.sort();
            list.dedup();
        }
        v
    }

    /// A request built from the vocabulary, mutated.
    pub fn request(&self, rng: &mut Rng) -> RequestSpec {
        const METHODS: &[&[u8]] = &[b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"get", b"M.X"];
        const PATHS: &[&[u8]] = &[b"/", b"/a", b"/a/b", b"/x/y.z", b"/index.html", b"/api", b"/api/v1/users/7"];
        const HEADERS: &[&[u8]] = &[b"x-other", b"user-agent", b"content-type", b"upgrade", b"x-api-key", b"origin"];
        const VALUES: &[&[u8]] = &[b"", b"v", b"application/json", b"websocket", b"x y", b"\xc3\xa9"];
        const HOSTS: &[&[u8]] = &[b"example.com", b"localhost", b"127.0.0.1", b"[::1]", b"a", b""];

        let method = if !self.methods.is_empty() && rng.chance(70) {
            rng.pick(&self.methods).cloned().unwrap_or_default()
        } else {
            rng.pick(METHODS).map(|m| m.to_vec()).unwrap_or_default()
        };
        let mut spec = RequestSpec { method, ..RequestSpec::default() };
        let host = if !self.hosts.is_empty() && rng.chance(70) {
            mutate_host(rng.pick(&self.hosts).cloned().unwrap_or_default(), rng)
        } else {
            rng.pick(HOSTS).map(|h| h.to_vec()).unwrap_or_default()
        };
        spec.http10 = rng.chance(5);
        spec.host = if spec.http10 && rng.chance(50) { None } else { Some(host) };
        if spec.method == b"CONNECT" {
            spec.target = b"example.com:443".to_vec();
        } else if spec.method == b"OPTIONS" && rng.chance(30) {
            spec.target = b"*".to_vec();
        } else {
            let path = if !self.paths.is_empty() && rng.chance(80) {
                mutate_path(rng.pick(&self.paths).cloned().unwrap_or_default(), rng)
            } else {
                rng.pick(PATHS).map(|p| p.to_vec()).unwrap_or_default()
            };
            let mut target = if path == b"*" { path } else { encode_path(&path, rng) };
            if target.first() != Some(&b'/') && target != b"*" {
                target.insert(0, b'/');
            }
            if rng.chance(10) {
                target.extend_from_slice(b"?q=/a&b");
            }
            spec.target = target;
        }
        let field_count = rng.below(4);
        for _ in 0..field_count {
            let name = if !self.headers.is_empty() && rng.chance(75) {
                rng.pick(&self.headers).cloned().unwrap_or_default()
            } else {
                rng.pick(HEADERS).map(|h| h.to_vec()).unwrap_or_default()
            };
            if name == b"host" || name == b"content-length" || name == b"transfer-encoding" {
                continue;
            }
            let name = if rng.chance(20) { name.to_ascii_uppercase() } else { name };
            let value = if !self.values.is_empty() && rng.chance(75) {
                mutate_value(rng.pick(&self.values).cloned().unwrap_or_default(), rng)
            } else {
                rng.pick(VALUES).map(|v| v.to_vec()).unwrap_or_default()
            };
            let mut wire = Vec::new();
            if rng.chance(60) {
                wire.push(b' ');
            }
            if rng.chance(10) {
                wire.push(b'\t');
            }
            wire.extend_from_slice(&value);
            if rng.chance(15) {
                wire.extend_from_slice(b" \t");
            }
            spec.fields.push((name, wire));
        }
        // Sometimes repeat a field (a duplicate of a value-matched header
        // is refused by both engines).
        if rng.chance(5) {
            if let Some(field) = spec.fields.first().cloned() {
                spec.fields.push(field);
            }
        }
        spec
    }
}

fn mutate_path(mut path: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
    // Globs: fill the wildcards.
    if path.contains(&b'*') && path != b"*" && rng.chance(70) {
        let fills: &[&[u8]] = &[b"x", b"seg", b"a.b", b"x/y"];
        let mut out = Vec::new();
        let segments: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for (i, segment) in segments.iter().enumerate() {
            if *segment == b"**" {
                let pick = rng.below(3);
                match pick {
                    0 => {
                        // zero segments: drop the `/` too
                        continue;
                    }
                    1 => {
                        out.push(b'/');
                        out.extend_from_slice(b"p");
                    }
                    _ => {
                        out.extend_from_slice(b"/p/q");
                    }
                }
                continue;
            }
            if i > 0 {
                out.push(b'/');
            }
            for &byte in *segment {
                if byte == b'*' {
                    out.extend_from_slice(rng.pick(fills).copied().unwrap_or(b"x"));
                } else {
                    out.push(byte);
                }
            }
        }
        path = out;
        if path.is_empty() {
            path.push(b'/');
        }
    }
    match rng.below(10) {
        0 => path.extend_from_slice(b"/x"),
        1 => path.push(b'x'),
        2 => {
            path.pop();
        }
        3 => path.push(b'/'),
        4 => {
            if let Some(byte) = path.iter_mut().rev().find(|b| b.is_ascii_alphabetic()) {
                *byte ^= 0x20;
            }
        }
        5 => {
            let at = rng.below(path.len());
            if let Some(byte) = path.get_mut(at) {
                if *byte != b'/' {
                    *byte = b'X';
                }
            }
        }
        6 => {
            let mut prefixed = b"/x".to_vec();
            prefixed.extend_from_slice(&path);
            path = prefixed;
        }
        _ => {}
    }
    path
}

fn mutate_value(mut value: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => value = value.to_ascii_uppercase(),
        1 => value.extend_from_slice(b";x"),
        2 => {
            let mut v = b"x ".to_vec();
            v.extend_from_slice(&value);
            value = v;
        }
        3 => {
            value.pop();
        }
        4 => {
            let at = rng.below(value.len());
            if let Some(byte) = value.get_mut(at) {
                *byte = b'X';
            }
        }
        5 => value.extend_from_slice(b" z"),
        _ => {}
    }
    // A value cannot hold CR, LF or other controls (the parser refuses).
    value.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    value
}

fn mutate_host(mut host: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
    match rng.below(9) {
        0 => host = host.to_ascii_uppercase(),
        1 => host.extend_from_slice(b":8080"),
        2 => host.push(b'.'),
        3 => {
            let mut h = b"x.".to_vec();
            h.extend_from_slice(&host);
            host = h;
        }
        4 => {
            host.pop();
        }
        5 => host.extend_from_slice(b".:80"),
        6 => host.extend_from_slice(b".."),
        _ => {}
    }
    host
}
