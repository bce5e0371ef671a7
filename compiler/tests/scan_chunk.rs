//! The table-driven chunked-body walker (`scan::ChunkScanner`) against the
//! reference evaluator's chunked framing, observed through
//! `eval::evaluate` on a policy that allows everything: a chunked POST
//! followed by the body and a sentinel NUL byte. The allowed request's
//! span ends where the body ended or broke; a `malformed:chunk` verdict
//! starts at the offending byte. Both must agree on every generated and
//! mutated body (sizes, extensions, quoted strings, data, trailers, the
//! 1024-byte size line, the trailer allowances), on the chunked requests
//! of the conformance inputs, and whatever pieces the walker is fed.

mod scan_common;
use scan_common::Rng;

use l7c_compiler::eval::{evaluate, Reason};
use l7c_compiler::http::MalformedKind;
use l7c_compiler::model::{ConnectionInfo, DefaultVerdict, Limits, Mode, OpaqueVerdict, Policy, Program, Scope, VerdictAction};
use l7c_compiler::scan::{walk_head, ChunkScanner, ChunkStep, ChunkTables, Framing, HeadProgress, HeadTables, RecordingHooks};
use l7c_compiler::source::Span;
use std::path::Path;

const HEAD: &[u8] = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

fn allow_all(limits: Limits) -> Program {
    let policy = Policy {
        name: "all".into(),
        span: Span::default(),
        scope: Scope::default(),
        default: Some(DefaultVerdict::Allow),
        mode: Mode::Enforce,
        opaque: OpaqueVerdict::Deny,
        get_body: l7c_compiler::model::GetBodyVerdict::Deny,
        deny_with: l7c_compiler::model::DenyWith::default(),
        limits,
        rules: Vec::new(),
    };
    Program { policies: vec![policy], tests: Vec::new() }
}

/// The reference's framing of `body` (which ends with the sentinel),
/// as offsets into `body`.
fn reference(program: &Program, body: &[u8]) -> ChunkStep {
    let input = [HEAD, body].concat();
    let outcome = evaluate(program, ConnectionInfo::default(), &[], &input, &[]);
    let first = outcome.verdicts.first().expect("a verdict for the head");
    assert_eq!((first.action, first.reason), (VerdictAction::Allow, Reason::Default), "{outcome:?}");
    let end = first.end as usize - HEAD.len();
    match outcome.verdicts.get(1) {
        None => {
            assert_eq!(end, body.len(), "{outcome:?}");
            ChunkStep::Continue
        }
        Some(next) if next.reason == Reason::Malformed(MalformedKind::Chunk) => {
            assert_eq!(next.start as usize - HEAD.len(), end);
            ChunkStep::Refused(end)
        }
        Some(_) => ChunkStep::Done(end - 1),
    }
}

fn ours(tables: &ChunkTables, limits: Limits, body: &[u8]) -> ChunkStep {
    ChunkScanner::new(tables, limits).feed(body)
}

/// Feed `body` in random pieces; offsets made absolute.
fn ours_in_pieces(tables: &ChunkTables, limits: Limits, body: &[u8], rng: &mut Rng) -> ChunkStep {
    let mut scanner = ChunkScanner::new(tables, limits);
    let mut at = 0;
    while at < body.len() {
        let size = 1 + rng.below((body.len() - at).min(40));
        match scanner.feed(&body[at..at + size]) {
            ChunkStep::Continue => at += size,
            ChunkStep::Done(index) => return ChunkStep::Done(at + index),
            ChunkStep::Refused(index) => return ChunkStep::Refused(at + index),
        }
    }
    ChunkStep::Continue
}

fn compare(program: &Program, limits: Limits, body_without_sentinel: &[u8], rng: &mut Rng) -> ChunkStep {
    let body = [body_without_sentinel, b"\0"].concat();
    let tables = ChunkTables::shared().expect("the chunk tables build");
    let expected = reference(program, &body);
    let whole = ours(tables, limits, &body);
    assert_eq!(whole, expected, "body {:?} limits {limits:?}", String::from_utf8_lossy(&body));
    let pieces = ours_in_pieces(tables, limits, &body, rng);
    assert_eq!(pieces, expected, "in pieces: body {:?}", String::from_utf8_lossy(&body));
    expected
}


const EXTENSIONS: &[&str] = &[
    ";a", ";a=b", ";name=\"v a l\"", ";q=\"x\\\"y\"", ";x=\"\\\t\"", ";e=", ";=v", "; a", ";a =b", ";a=\"unterminated", ";a=\"x\"y",
    ";a=b;c", ";;", ";a=\"\u{e9}\"", ";a=\"\\\u{1}\"", ";t=\"\t\"", ";a=b=c", ";\"q\"",
];
const TRAILER_LINES: &[&str] =
    &["X-T: 1", "A:", "B: \tv\t", "X : 1", " X: 1", "X(: 1", "X: a\u{1}b", "X: a\u{7f}", "X: \u{e9}", "X", ":v", "X: a\rb"];

/// A chunked body: chunks, the last chunk, trailers, the final CRLF.
fn generate_body(rng: &mut Rng, limits: Limits) -> Vec<u8> {
    let clean = rng.chance(50);
    let mut body = Vec::new();
    for _ in 0..rng.below(4) {
        let size = rng.below(20) + 1;
        let digits = match rng.below(10) {
            0 => format!("{:0width$x}", size, width = 1 + rng.below(18)),
            1 => format!("{size:X}"),
            _ => format!("{size:x}"),
        };
        body.extend_from_slice(digits.as_bytes());
        if rng.chance(30) {
            for _ in 0..1 + rng.below(3) {
                body.extend_from_slice(rng.pick(if clean { &EXTENSIONS[..6] } else { EXTENSIONS }).as_bytes());
            }
        }
        if rng.chance(3) && !clean {
            // A size line around its 1024-byte bound.
            let pad = 1000 + rng.below(40);
            body.extend_from_slice(b";p=");
            body.resize(body.len() + pad.saturating_sub(digits.len() + 5), b'x');
        }
        body.extend_from_slice(b"\r\n");
        let data_len = if clean || rng.chance(90) { size } else { size + rng.below(3) - 1 };
        body.extend((0..data_len).map(|i| if i % 5 == 4 { b'\r' } else { b'd' }));
        if clean {
            body.extend_from_slice(b"\r\n");
        } else {
            body.extend_from_slice(rng.pick(&[&b"\r\n"[..], b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n"]));
        }
    }
    body.extend_from_slice(rng.pick(&[&b"0"[..], b"0", b"00", b"0;last", b"000000000000000000"]));
    body.extend_from_slice(b"\r\n");
    let trailers = if rng.chance(10) { limits.headers as usize + rng.below(3) } else { rng.below(3) };
    for _ in 0..trailers {
        let line = if clean || rng.chance(80) { rng.pick(&TRAILER_LINES[..3]).to_string() } else { rng.pick(TRAILER_LINES).to_string() };
        body.extend_from_slice(line.as_bytes());
        if rng.chance(5) {
            // A trailer around the allowance.
            body.resize(body.len() + (limits.header_bytes as usize).saturating_sub(10 + rng.below(20)), b't');
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    if rng.chance(20) {
        body.extend_from_slice(b"GET / HTTP/1.1\r\n");
    }
    body
}

const SPECIAL: &[u8] = b"\r\n \t;=\"\\0aF\x7f\x80:";

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] = rng.next() as u8,
            1 | 2 => bytes.insert(at, rng.pick(SPECIAL)),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
}

/// Generated bodies, half of them mutated, under three limit sets.
fn generated_bodies(seed: u64, bodies: usize) -> [usize; 3] {
    let mut rng = Rng(seed);
    // The head (58 bytes, 2 field lines) must fit the same limits.
    let limit_sets = [Limits::default(), Limits { header_bytes: 64, headers: 2 }, Limits { header_bytes: 200, headers: 3 }];
    let programs: Vec<Program> = limit_sets.iter().map(|&limits| allow_all(limits)).collect();
    let mut outcomes = [0usize; 3];
    for index in 0..bodies {
        let which = index % limit_sets.len();
        let limits = limit_sets[which];
        let mut body = generate_body(&mut rng, limits);
        if rng.chance(50) {
            mutate(&mut rng, &mut body);
        }
        let result = compare(&programs[which], limits, &body, &mut rng);
        outcomes[match result {
            ChunkStep::Continue => 0,
            ChunkStep::Refused(_) => 1,
            ChunkStep::Done(_) => 2,
        }] += 1;
    }
    outcomes
}

#[test]
fn scan_generated_bodies_agree() {
    let bodies = 60_000;
    let outcomes = generated_bodies(0xc4u64 << 32 | 0x0b0d, bodies);
    let [open, refused, done] = outcomes;
    eprintln!("chunked bodies: {bodies} compared ({open} open, {refused} refused, {done} done)");
    assert!(refused > bodies / 5 && done > bodies / 5 && open > 100, "{outcomes:?}");
}

/// A much larger run: `cargo test --release -p l7c-compiler --test scan_chunk -- --ignored`.
#[test]
#[ignore]
fn scan_generated_bodies_agree_at_length() {
    for seed in 1..=10u64 {
        let outcomes = generated_bodies(seed.wrapping_mul(0x0123_4567_89ab_cdef), 200_000);
        eprintln!("seed {seed}: {outcomes:?}");
    }
}

/// The chunked requests of the conformance inputs, found with the head
/// walker: their bodies (to the input's end) framed by both engines.
#[test]
fn scan_conformance_chunked_bodies_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let heads = HeadTables::shared().expect("head tables");
    let program = allow_all(Limits::default());
    let mut rng = Rng(5);
    let mut bodies = 0;
    for entry in std::fs::read_dir(dir).expect("conformance dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter_map(|line| line.strip_prefix("input = \"")) {
            let input = line.trim_end_matches('"').replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t");
            let input = input.as_bytes();
            for start in 0..input.len() {
                let rest = &input[start..];
                if let HeadProgress::Complete(facts) = walk_head(heads, rest, Limits::default(), &mut RecordingHooks::default()) {
                    if facts.framing == Framing::Chunked {
                        compare(&program, Limits::default(), &rest[facts.len..], &mut rng);
                        bodies += 1;
                    }
                }
            }
        }
    }
    eprintln!("conformance chunked bodies: {bodies}");
    assert!(bodies >= 10);
}

#[test]
fn scan_size_line_and_trailer_bounds() {
    let mut rng = Rng(1);
    let program = allow_all(Limits::default());
    for length in 1018..=1030 {
        for last in [&b"\r\n"[..], b"\r", b"\r\r\n", b";\r\n"] {
            let mut body = b"1;a=".to_vec();
            body.resize(length - last.len(), b'x');
            body.extend_from_slice(last);
            body.extend_from_slice(b"x\r\n0\r\n\r\n");
            compare(&program, Limits::default(), &body, &mut rng);
        }
    }
    // Trailer sections around the allowance (the head's own numbers; the
    // head is 58 bytes with 2 field lines).
    for header_bytes in [58u32, 59, 64, 70] {
        for headers in [2u32, 3] {
            let limits = Limits { header_bytes, headers };
            let program = allow_all(limits);
            for size in header_bytes as usize - 3..=header_bytes as usize + 1 {
                for lines in 1..=4usize {
                    let mut trailer = Vec::new();
                    for line in 0..lines {
                        trailer.extend_from_slice(format!("T{line}: ").as_bytes());
                        if line + 1 == lines {
                            trailer.resize(size.saturating_sub(4).max(trailer.len()), b'v');
                        }
                        trailer.extend_from_slice(b"\r\n");
                    }
                    let body = [&b"0\r\n"[..], &trailer, b"\r\n"].concat();
                    for end in body.len() - 4..=body.len() {
                        compare(&program, limits, &body[..end], &mut rng);
                    }
                }
            }
        }
    }
}
