//! Differential testing of the two engines: generated client streams
//! (valid requests, mutated and malformed ones, pipelined, with
//! Content-Length and chunked bodies) under random splits, judged by the
//! reference evaluator and by the compiled program in the kernel; the
//! outcomes must be equal.
//!
//! Each policy is compiled and loaded once and serves many connections.
//! The policies are the conformance suites' and the examples. The run is
//! bounded both by a stream count (`L7C_DIFF_STREAMS`, default 10,000 in
//! all) and by time (`L7C_DIFF_SECONDS`, default 120), and says how far it
//! got. The seed is printed; `L7C_DIFF_SEED` replays a run.
//!
//! Root only (`SKIPPED` otherwise). A policy the code generator refuses is
//! reported as `SKIPPED <policy>: <the generator's error>`; a disagreement
//! on a policy it compiles fails the test. A conformance policy that does
//! not compile yet is left out while tests/conformance/PENDING.toml lists
//! its whole file (see `pending`).

mod pending;

use l7c_compiler::check::Checked;
use l7c_compiler::codegen::{self, Compiled};
use l7c_compiler::driver;
use l7c_compiler::eval::{self, Outcome};
use l7c_compiler::model::ConnectionInfo;
use l7c_compiler::verdict::ServerAnswers;
use l7c_runtime::engine::KernelEngine;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Details printed of at most this many disagreements.
const SHOWN_FAILURES: usize = 10;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (name, source text) of every policy the streams run against.
fn policies() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-differential");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conformance = root.join("tests/conformance");
    let list = pending::Pending::read(&conformance);
    let mut ledger = list.policies();
    let mut failures = Vec::new();
    for suite in pending::case_files(&conformance) {
        let text = std::fs::read_to_string(&suite).expect("readable suite");
        let table: toml::Table = toml::from_str(&text).expect("suite TOML");
        let policy = table.get("policy").and_then(|p| p.as_str()).unwrap_or_else(|| panic!("{} has no policy", suite.display()));
        let file = suite.file_name().unwrap_or_default().to_string_lossy().into_owned();
        match ledger.policy(&file, 0, pending::compiles(&file, policy)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        }
        let name = suite.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let path = dir.join(format!("{name}.l7"));
        std::fs::write(&path, policy).expect("policy written");
        out.push((format!("conformance/{name}"), path));
    }
    failures.extend(ledger.finish());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // No policy at all: every connection is ungoverned.
    let ungoverned = dir.join("ungoverned.l7");
    std::fs::write(&ungoverned, "# no policy: nothing is governed\n").expect("policy written");
    out.push(("ungoverned".to_owned(), ungoverned));
    // Audit mode with redirects (bound or not: the runtime's bound-slot
    // bitmap), tunnels and chunked bodies: every verdict kind reported
    // while every byte passes.
    let audit = dir.join("audit-redirect.l7");
    std::fs::write(
        &audit,
        "policy \"watch\" {\n  mode audit\n  default deny\n  opaque allow\n  rule \"grpc\" { header \"content-type\" prefix \"application/grpc\"  redirect \"envoy\" }\n  rule \"ws\" { path prefix \"/ws\"  allow tunnel }\n  rule \"read\" { method GET, HEAD  allow }\n  rule \"up\" { method POST  path prefix \"/api\"  allow  log }\n}\n",
    )
    .expect("policy written");
    out.push(("audit-redirect".to_owned(), audit));
    // More accepted patterns than the guarded decision lists (every prefix
    // of the generator's X-Long value: the program decides linearly), and
    // `contains` matchers in a sticky lane (more than 4 on one header).
    let mut many = String::from("policy \"many\" {\n  default allow\n");
    for length in (1..=70).rev() {
        let action = if length % 3 == 0 { "deny" } else { "allow" };
        many.push_str(&format!("  rule \"long{length}\" {{ method POST  header \"x-long\" prefix \"{}\"  {action} }}\n", "a".repeat(length)));
    }
    for (word, action) in [("l7c", "allow"), ("diff/", "deny"), ("curl", "deny"), ("/1", "allow"), ("-d", "deny"), ("bot", "deny")] {
        many.push_str(&format!("  rule \"ua-{}\" {{ header \"user-agent\" contains nocase \"{word}\"  {action} }}\n", word.trim_matches('/')));
    }
    many.push_str("}\n");
    let many_path = dir.join("many-candidates.l7");
    std::fs::write(&many_path, many).expect("policy written");
    out.push(("many-candidates".to_owned(), many_path));
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .expect("examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "l7"))
        .collect();
    examples.sort();
    for example in examples {
        let name = example.file_name().unwrap_or_default().to_string_lossy().into_owned();
        out.push((format!("examples/{name}"), example));
    }
    out
}

/// A client stream generator: requests built from pieces a policy cares
/// about, then sometimes mutated.
struct Streams {
    rng: fastrand::Rng,
}

const METHODS: &[&str] = &["GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "get", "G@T", "BREW"];
const PATHS: &[&str] = &[
    "/", "/api/users", "/api/users/42", "/api/usersX", "/admin", "/admin/x", "/%61dmin", "/ADMIN", "/healthz",
    "/api/v1/payments/7", "/api/v1/payments/../x", "/a/./b", "//x", "/a%2Fb", "/a;b", "/pub", "/public/index.html",
    "/static/app.js", "/v1/status", "/helloworld.Greeter/SayHello", "/a?x=1&y=%41", "/a%zz", "/%", "*",
    "http://a/api/users", "example.com:443", "/t/acme/x", "/files/../../etc/passwd", "/%2e%2e/x",
];
const VERSIONS: &[&str] = &["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.10", "http/1.1"];
const HEADERS: &[&str] = &[
    "Content-Type: application/json",
    "content-type: application/grpc",
    "Content-Type: application/grpc-web+proto",
    "Accept: */*",
    "User-Agent: l7c-diff/1",
    "Authorization: Bearer abc",
    "X-Tenant: acme",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "TE: trailers",
    "Bad Header: x",
    "X-Empty:",
    " folded: line",
    "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Host: second",
];
const HOSTS: &[&str] = &["a", "pay", "svc", "example.com", "example.com:8080", "[::1]", "", "bad host"];
const MUTATION_BYTES: &[u8] = b"\r\n :%/\0\xff\t;?#.";

impl Streams {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    fn request(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let method = *self.pick(METHODS);
        let target = *self.pick(PATHS);
        let version = *self.pick(VERSIONS);
        out.extend_from_slice(format!("{method} {target} {version}\r\n").as_bytes());
        if self.rng.u8(..10) < 8 {
            out.extend_from_slice(format!("Host: {}\r\n", self.pick(HOSTS)).as_bytes());
        }
        for _ in 0..self.rng.usize(..4) {
            let header = *self.pick(HEADERS);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match self.rng.u8(..10) {
            0..=5 => out.extend_from_slice(b"\r\n"),
            6 | 7 => {
                let length = self.rng.usize(..40);
                out.extend_from_slice(format!("Content-Length: {length}\r\n\r\n").as_bytes());
                out.extend((0..length).map(|i| b'a' + (i % 26) as u8));
            }
            8 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for _ in 0..self.rng.usize(..3) {
                    let size = self.rng.usize(1..20);
                    out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    out.extend(std::iter::repeat_n(b'z', size));
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            _ => out.extend_from_slice(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"),
        }
        out
    }

    fn mutate(&mut self, stream: &mut Vec<u8>) {
        for _ in 0..self.rng.usize(1..4) {
            if stream.is_empty() {
                return;
            }
            let at = self.rng.usize(..stream.len());
            match self.rng.u8(..4) {
                0 => stream[at] = *self.pick(MUTATION_BYTES),
                1 => {
                    stream.remove(at);
                }
                2 => stream.insert(at, *self.pick(MUTATION_BYTES)),
                _ => stream.truncate(at),
            }
        }
    }

    fn stream(&mut self) -> Vec<u8> {
        match self.rng.u8(..100) {
            0..=2 => return (0..self.rng.usize(..60)).map(|_| self.rng.u8(..)).collect(),
            3 | 4 => {
                let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
                return preface[..self.rng.usize(1..=preface.len())].to_vec();
            }
            // Connection starts (revision 3): TLS record headers and their
            // prefixes, near misses, and bytes some servers skip, before a
            // request.
            5..=7 => {
                const STARTS: &[&[u8]] = &[
                    &[0x16, 0x03, 0x01, 0x00, 0x05],
                    &[0x17, 0x03, 0x03],
                    &[0x16, 0x03],
                    &[0x16],
                    &[0x16, 0x03, 0x05],
                    &[0x14, 0x02],
                    &[0x0b],
                    &[0x0c],
                    &[0x85],
                    &[0x00],
                    b"PRI * HTTP/2.0\r\n",
                    b"PRI * HTTP/1.1\r\n",
                ];
                let mut stream = self.pick(STARTS).to_vec();
                stream.extend(self.request());
                return stream;
            }
            _ => {}
        }
        let mut stream = Vec::new();
        for _ in 0..self.rng.usize(1..4) {
            stream.extend(self.request());
        }
        if self.rng.u8(..10) < 3 {
            self.mutate(&mut stream);
        }
        stream
    }

    fn split(&mut self, len: usize) -> Vec<usize> {
        match self.rng.u8(..4) {
            0 => Vec::new(),
            1 => vec![1; len.saturating_sub(1).min(200)],
            _ => {
                let mut sizes = Vec::new();
                let mut used = 0;
                while used < len {
                    let size = self.rng.usize(1..=16.min(len - used).max(1));
                    sizes.push(size);
                    used += size;
                }
                sizes
            }
        }
    }
}

/// `text` checked, compiled and loaded into the kernel engine.
fn compile_and_load(name: &str, text: &str) -> (driver::Compilation, KernelEngine) {
    let compilation = driver::compile_text(name, text, None);
    let checked = compilation.checked.as_ref().unwrap_or_else(|| panic!("{name} checks: {:?}", compilation.diagnostics));
    let compiled = codegen::compile(checked, &codegen::Options::default()).expect("compiles");
    let engine = KernelEngine::load(&compiled.object, &compiled.meta).expect("loads");
    (compilation, engine)
}

fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[test]
fn kernel_engine_agrees_with_the_reference_on_generated_streams() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED kernel differential: needs root (CAP_BPF and CAP_NET_ADMIN) to load sk_msg programs");
        return;
    }
    let total_streams = env_number("L7C_DIFF_STREAMS", 10_000);
    let deadline = Instant::now() + Duration::from_secs(env_number("L7C_DIFF_SECONDS", 120));
    let seed = env_number("L7C_DIFF_SEED", fastrand::u64(..));
    println!("kernel differential: seed {seed} (replay with L7C_DIFF_SEED={seed})");

    // Compile every policy; keep those the generator compiles.
    let mut loaded: Vec<(String, driver::Compilation, KernelEngine, Compiled)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut refused = 0usize;
    for (name, path) in policies() {
        let compilation = driver::compile_paths(std::slice::from_ref(&path)).expect("readable policy");
        let Some(checked) = compilation.checked.as_ref() else {
            panic!("{name} does not compile: {:?}", compilation.diagnostics);
        };
        let compiled = match codegen::compile(checked, &codegen::Options::default()) {
            Ok(compiled) => compiled,
            Err(error) => {
                eprintln!("SKIPPED {name} in the kernel differential: {error}");
                refused += 1;
                continue;
            }
        };
        match KernelEngine::load(&compiled.object, &compiled.meta) {
            Ok(engine) => loaded.push((name, compilation, engine, compiled)),
            Err(error) => failures.push(format!("{name}: the kernel did not load the generated program: {error}")),
        }
    }
    if loaded.is_empty() {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        eprintln!("SKIPPED kernel differential: the code generator compiles none of the policies (see above)");
        return;
    }

    let mut streams = Streams { rng: fastrand::Rng::with_seed(seed) };
    let ports = [80u16, 8080, 443, 9090, 50051];
    let (mut run, mut disagreements, mut held_tails) = (0u64, 0usize, 0usize);
    'streams: for number in 0..total_streams {
        if Instant::now() >= deadline {
            println!("kernel differential: time box reached after {run} streams");
            break 'streams;
        }
        let policy_index = (number as usize) % loaded.len();
        let (name, compilation, engine, compiled) = &mut loaded[policy_index];
        let program = compilation.checked.as_ref().expect("kept only checked policies").program();
        let input = streams.stream();
        let split = streams.split(input.len());
        let connection = ConnectionInfo { remote_port: *streams.pick(&ports), ..ConnectionInfo::default() };
        let bound: Vec<String> = compiled
            .meta
            .redirect_slots
            .iter()
            .filter(|_| streams.rng.u8(..10) < 7)
            .map(|(target, _)| target.clone())
            .collect();
        let reference: Outcome = eval::evaluate(program, connection, &bound, &input, &split);
        let kernel = engine.run_report(connection, &bound, &input, &split);
        run += 1;
        let agreed = matches!(&kernel, Ok(report) if report.outcome == reference);
        if !agreed && matches!(&kernel, Ok(report) if report.is_documented_held_tail(&reference)) {
            // The one documented kernel limitation, checked exactly (see
            // KernelReport::is_documented_held_tail); counted and shown.
            held_tails += 1;
            if held_tails <= SHOWN_FAILURES {
                println!("documented kernel limitation (held tail), {name}, split {split:?}: \"{}\"", escape(&input));
            }
            continue;
        }
        if !agreed {
            disagreements += 1;
            if failures.len() < SHOWN_FAILURES {
                failures.push(format!(
                    "{name}, remote port {}, bound {bound:?}, split {split:?}\n  input: \"{}\"\n  ref:    {reference:?}\n  kernel: {kernel:?}",
                    connection.remote_port,
                    escape(&input)
                ));
            }
        }
    }
    println!(
        "kernel differential: {run} streams over {} policies ({refused} skipped: the generator refuses them), {disagreements} disagreements, {held_tails} redirects cut by the documented held-tail limitation",
        loaded.len()
    );
    assert!(
        failures.is_empty(),
        "{disagreements} disagreements (seed {seed}); the first ones:\n{}",
        failures.join("\n\n")
    );
}

/// Chunk sizes near 2^64 (issue 12): the kernel added the line's length to
/// the chunk's remaining data, which wrapped for sizes from
/// `ffffffffffffffef` up, so the data after such a line was judged as a new
/// request (and at other sizes the verdict depended on the split). Every
/// size of the boundary range, with a denied request inside the "data",
/// under one send, byte-sized sends around the size line, and random splits:
/// both engines must give the same outcome.
#[test]
fn chunk_sizes_near_two_to_the_64_agree_under_every_split() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED chunk sizes near 2^64: needs root to load the program");
        return;
    }
    let policy = "policy \"p\" {\n  default deny\n  rule \"up\" { method POST  path prefix \"/up\"  allow }\n}\n";
    let (compilation, mut engine) = compile_and_load("chunks.l7", policy);
    let checked = compilation.checked.as_ref().expect("the policy checks");
    let mut rng = fastrand::Rng::with_seed(0x264);
    let sizes: Vec<u64> = (0..=0x20u64).map(|below| u64::MAX - below).chain([1u64 << 63, (1 << 32) + 5, 0xffff_ffff]).collect();
    let mut runs = 0;
    for size in sizes {
        let input = format!("POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{size:x}\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
        let line_end = input.find("\r\nGET").unwrap_or(0) + 2;
        let mut splits = vec![Vec::new(), vec![line_end - 3, 1, 1, 1], vec![line_end], vec![line_end + 5]];
        for _ in 0..4 {
            splits.push((0..rng.usize(1..6)).map(|_| rng.usize(1..30)).collect());
        }
        for split in splits {
            let connection = ConnectionInfo::default();
            let reference = eval::evaluate(checked.program(), connection, &[], input.as_bytes(), &split);
            let kernel = engine.run(connection, &[], input.as_bytes(), &split).expect("the kernel run");
            assert_eq!(kernel, reference, "size {size:x}, split {split:?}");
            runs += 1;
        }
    }
    println!("chunk sizes near 2^64: {runs} runs, the engines agree");
}

/// Switches (language.md §6) in both modes, under every single cut of the
/// stream and three ways the server answers: the two engines give the same
/// verdicts, answers and delivered bytes. (Audit mode once differed: the
/// kernel parsed the bytes sent before the switch's answer as the next
/// request, the reference takes the framing as lost.)
#[test]
fn switches_agree_in_both_modes_under_every_cut_and_answer() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED switches in both modes: needs root to load the program");
        return;
    }
    let input = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /pub/x HTTP/1.1\r\nHost: a\r\n\r\nGET /zzz HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut runs = 0;
    for mode in ["enforce", "audit"] {
        let policy = format!(
            "policy \"p\" {{\n  mode {mode}\n  default deny\n  rule \"ws\" {{ path exact \"/ws\"  allow tunnel }}\n  rule \"pub\" {{ path prefix \"/pub\"  allow }}\n}}\n"
        );
        let (compilation, mut engine) = compile_and_load("switch.l7", &policy);
        let checked = compilation.checked.as_ref().expect("the policy checks");
        for answers in [ServerAnswers::Agreeing, ServerAnswers::Listed(vec![404, 200]), ServerAnswers::Listed(vec![101])] {
            engine.set_answers(answers.clone());
            for cut in 0..input.len() {
                let split = if cut == 0 { Vec::new() } else { vec![cut] };
                let connection = ConnectionInfo::default();
                let reference = eval::evaluate_with_answers(checked.program(), connection, &[], input.as_bytes(), &split, &answers);
                let kernel = engine.run(connection, &[], input.as_bytes(), &split).expect("the kernel run");
                assert_eq!(kernel, reference, "{mode}, answers {answers:?}, split {split:?}");
                runs += 1;
            }
        }
    }
    println!("switches in both modes: {runs} runs, the engines agree");
}

/// The head scan takes plain value bytes eight at a time (issue 15;
/// docs/program.md, "Skipping plain value bytes"). Every byte that may
/// or may not be skipped, at every position of a value around the
/// eight-byte words, in a field no matcher reads and in one a matcher
/// reads (a match missed by a wrong skip shows as a deny), heads whose
/// length straddles `header_bytes`, under one send and cuts at every
/// offset of the value: the engines agree.
#[test]
fn plain_value_skips_agree_at_every_position_and_limit() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED plain value skips: needs root to load the program");
        return;
    }
    // x-tenant and user-agent are read by one lane each, so their value
    // bytes go a word at a time through the lane (`l7_read_words`);
    // x-pad's are skipped.
    let policy = "policy \"p\" {\n  limits { header_bytes 256 }\n  default deny\n  rule \"scanner\" { header \"user-agent\" contains nocase [\"sqlmap\", \"nikto\"]  deny }\n  rule \"tenant\" { path prefix \"/t\"  header \"x-tenant\" contains \"acme\"  allow }\n  rule \"any\" { path prefix \"/a\"  allow }\n}\n";
    let (compilation, mut engine) = compile_and_load("skip.l7", policy);
    let checked = compilation.checked.as_ref().expect("the policy checks");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let special = [0x00u8, 0x08, b'\t', b'\n', b'\r', 0x1f, b' ', b'!', 0x7e, 0x7f, 0x80, 0xff, b':'];
    for &byte in &special {
        for at in 0..26 {
            let mut value = vec![b'v'; 26];
            value[at] = byte;
            for field in ["X-Pad", "X-Tenant", "User-Agent"] {
                let mut head = format!("GET /a HTTP/1.1\r\nHost: a\r\n{field}: ").into_bytes();
                head.extend_from_slice(&value);
                head.extend_from_slice(b"\r\nAccept: */*\r\n\r\n");
                inputs.push(head);
            }
        }
    }
    for before in 0..26 {
        let pad = "p".repeat(before);
        inputs.push(format!("GET /t HTTP/1.1\r\nHost: a\r\nX-Tenant: {pad}acme{pad}\r\n\r\n").into_bytes());
        inputs.push(format!("GET /t HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}acme\r\nX-Tenant: {pad}acm\r\n\r\n").into_bytes());
        // A match, a near miss and a restart at every place in a word.
        for agent in ["SqLmAp", "nikt", "sqlsqlmap", "nnikto"] {
            inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: Mozilla/5.0 {pad}{agent}{pad} x\r\n\r\n").into_bytes());
        }
    }
    let base = "GET /a HTTP/1.1\r\nHost: a\r\nX-Pad: \r\n\r\n".len();
    for total in 240..=266 {
        let pad = "q".repeat(total - base);
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\n\r\n").into_bytes());
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\nX: y\r\n\r\n").into_bytes());
        // The same limits where the value is read: the match last.
        let pad = "q".repeat(total - base - 4);
        inputs.push(format!("GET /t HTTP/1.1\r\nHost: a\r\nX-Tenant: {pad}acme\r\n\r\n").into_bytes());
        let pad = "q".repeat(total - base - 8);
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: {pad}\r\n\r\n").into_bytes());
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: {pad}nikto\r\n\r\n").into_bytes());
    }
    let runs = agree_whole_and_cut(&mut engine, checked, &inputs, |input| input.windows(3).position(|w| w == b"\nX-").or_else(|| input.windows(4).position(|w| w == b"\nUse")).unwrap_or(0));
    println!("plain value skips: {} inputs, {runs} runs, the engines agree", inputs.len());
}

/// Issue 15, "Many policies": one program holds every policy, and what
/// differs between them is data — the descriptor and tables scope
/// selection points the connection at. Twelve policies that differ in
/// every setting the program reads from a descriptor (default, mode,
/// `get_body`, `opaque`, both limits, refused repeated headers, their
/// own matchers on paths, on a header of their own, `contains` on a
/// shared header), each on its own port, judge requests written for
/// every one of them: on each port the kernel must agree with the
/// reference, so no policy's tables leak into another's judgement.
#[test]
fn many_policies_in_one_program_agree_with_the_reference_on_every_port() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED many policies: needs root to load the program");
        return;
    }
    let count = 12u16;
    let mut text = String::new();
    for i in 0..count {
        let default = if i % 2 == 1 { "allow" } else { "deny" };
        let mut settings = String::new();
        if i % 4 == 3 {
            settings += "  mode audit\n";
        }
        if i % 3 == 1 {
            settings += "  get_body allow\n";
        }
        if i % 5 == 2 {
            settings += "  opaque allow\n";
        }
        text += &format!(
            "policy \"p{i}\" {{\n  scope remote port {port}\n  default {default}\n{settings}  limits {{ header_bytes {bytes}  headers {headers} }}\n  rule \"admin\" {{ path prefix \"/admin{i}\"  deny }}\n  rule \"tenant\" {{ path prefix \"/t\"  header \"x-t{i}\" exact \"v{i}\"  allow }}\n  rule \"agent\" {{ header \"user-agent\" contains \"bot{i}\"  deny }}\n  rule \"glob\" {{ method GET  path glob \"/g{i}/*/x\"  allow }}\n}}\n",
            port = 21000 + i,
            bytes = 200 + 40 * u32::from(i),
            headers = 3 + i % 4,
        );
    }
    let (compilation, mut engine) = compile_and_load("many.l7", &text);
    let checked = compilation.checked.as_ref().expect("the policies check");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for j in 0..count {
        for head in [
            format!("GET /admin{j}/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("GET /t/1 HTTP/1.1\r\nHost: a\r\nX-T{j}: v{j}\r\n\r\n"),
            format!("GET /t/1 HTTP/1.1\r\nHost: a\r\nX-T{j}: v{j}\r\nX-T{j}: v{j}\r\n\r\n"),
            format!("GET /o HTTP/1.1\r\nHost: a\r\nUser-Agent: a-bot{j}-b\r\n\r\n"),
            format!("GET /g{j}/abc/x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"),
            format!("GET /g{j}/abc/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
            format!("POST /t HTTP/1.1\r\nHost: a\r\nX-T{j}: v{j}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            format!("GET /o HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: {}\r\n\r\n", "e".repeat(40 * usize::from(j))),
        ] {
            inputs.push(head.into_bytes());
        }
    }
    inputs.push(b"\x16\x03\x01\x00\x05hello".to_vec());
    let mut runs = 0;
    for port in 21000..21000 + count {
        let connection = ConnectionInfo { remote_port: port, ..ConnectionInfo::default() };
        for input in &inputs {
            for split in [vec![], vec![input.len() / 2]] {
                let reference = eval::evaluate(checked.program(), connection, &[], input, &split);
                let kernel = engine.run(connection, &[], input, &split).expect("the kernel run");
                assert_eq!(kernel, reference, "port {port}, split {split:?}, input \"{}\"", escape(input));
                runs += 1;
            }
        }
    }
    println!("many policies: {count} policies in one program, {runs} runs, the engines agree");
}

/// Issue 15, target 4: the program's size and the verifier's work do not
/// grow with the number of policies. The scale files of
/// ../shared/bench/scale (5 and 20 policies) and a generated file of 100
/// policies of 20 rules (tests/scale/generate.py) each load under the
/// running kernel's verifier, and so does each file's first policy alone:
/// every further policy adds only its scope's few instructions, and what
/// the verifier processed stays within
/// `codegen::PROCESSED_PER_INSTRUCTION{,_AT_LEAST}` of the size, the
/// bounds `l7c check` predicts the budget from.
#[test]
fn scale_files_load_and_policies_add_only_their_scope() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED scale files: needs root to load the programs");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |name: &str, text: &str| {
        let started = Instant::now();
        let compilation = driver::compile_text(name, text, None);
        let checked = compilation.checked.as_ref().unwrap_or_else(|| panic!("{name} checks: {:?}", compilation.diagnostics));
        let compiled = codegen::compile(checked, &codegen::Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compile_time = started.elapsed();
        let policies = checked.program().policies.len();
        let engine = KernelEngine::load(&compiled.object, &compiled.meta).unwrap_or_else(|e| panic!("{name} loads: {e}"));
        let processed = engine.verified_instruction_count().expect("the kernel reports what it verified") as usize;
        let instructions = compiled.report.instructions;
        println!(
            "{name}: {policies} policies, {instructions} instructions, the verifier processed {processed}, compiled in {:.0} ms",
            compile_time.as_secs_f64() * 1000.0
        );
        let (least, most) = (instructions * codegen::PROCESSED_PER_INSTRUCTION_AT_LEAST, instructions * codegen::PROCESSED_PER_INSTRUCTION);
        assert!((least..=most).contains(&processed), "{name}: {processed} processed is outside the predicted {least}..={most}");
        (policies, instructions, processed)
    };
    for file in ["tests/scale/multi5.l7", "tests/scale/multi20.l7", "tests/scale/multi100x20.l7"] {
        let text = std::fs::read_to_string(root.join(file)).expect("the scale file");
        let starts: Vec<usize> = text.match_indices("policy \"").map(|(at, _)| at).filter(|&at| at == 0 || text.as_bytes()[at - 1] == b'\n').collect();
        let (_, one_instructions, one_processed) = load(&format!("{file} (its first policy)"), &text[..starts[1]]);
        let (policies, instructions, processed) = load(file, &text);
        let more = policies - 1;
        assert!(instructions <= one_instructions + 8 * more, "{file}: {instructions} instructions for {policies} policies, {one_instructions} for one");
        assert!(processed <= one_processed + 20 * more, "{file}: the verifier processed {processed} for {policies} policies, {one_processed} for one");
    }
}

/// Issue 15, target 1 for field names: once no name the policy or the
/// scanner knows starts as a field's name does, its further letters,
/// digits and `-` are taken eight at a time (docs/program.md, "Skipping
/// name bytes"). Special bytes at every position of such a name, names
/// that follow a known one and leave it at every position (or only after
/// it ended), known names in any case, and heads around `header_bytes`,
/// each whole and cut at every third byte of the name: the kernel must
/// agree with the reference on the verdict and on the offset of every
/// violation.
#[test]
fn name_skips_agree_at_every_position_and_limit() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED name skips: needs root to load the program");
        return;
    }
    let policy = "policy \"p\" {\n  limits { header_bytes 256 }\n  default deny\n  rule \"tenant\" { path prefix \"/t\"  header \"x-tenant\" exact \"acme\"  allow }\n  rule \"agent\" { header \"x-agent-identifier\" present  deny }\n  rule \"any\" { path prefix \"/a\"  allow }\n}\n";
    let (compilation, mut engine) = compile_and_load("names.l7", policy);
    let checked = compilation.checked.as_ref().expect("the policy checks");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    let special = [b':', b' ', b'\t', b'\r', b'\n', 0x00, 0x7f, 0x80, 0xff, b'_', b'.', b'!', b'~', b'@', b'A', b'9', b'-', b'/', b'['];
    for &byte in &special {
        for at in 0..26 {
            let mut name = b"Zqwertyuiop-asdfghjkl-zxcv".to_vec();
            name[at] = byte;
            let mut head = b"GET /a HTTP/1.1\r\nHost: a\r\n".to_vec();
            head.extend_from_slice(&name);
            head.extend_from_slice(b": v\r\nAccept: */*\r\n\r\n");
            inputs.push(head);
        }
    }
    for known in ["x-tenant", "X-Agent-Identifier", "content-length", "Transfer-Encoding", "host", "upgrade"] {
        for at in 0..=known.len() {
            for tail in ["z", "zzzzzzzzzzzzzzzz-long-tail-0123456789"] {
                let name = format!("{}{tail}", &known[..at]);
                inputs.push(format!("GET /t HTTP/1.1\r\nHost: a\r\n{name}: acme\r\nX-Tenant: acme\r\n\r\n").into_bytes());
            }
        }
        inputs.push(format!("GET /t HTTP/1.1\r\nHost: a\r\n{}: acme\r\n\r\n", known.to_ascii_uppercase()).into_bytes());
    }
    let base = "GET /a HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n".len();
    for total in 240..=266 {
        let name = "n".repeat(total - base);
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\n{name}: v\r\n\r\n").into_bytes());
        inputs.push(format!("GET /a HTTP/1.1\r\nHost: a\r\n{name}\r\n\r\n").into_bytes());
    }
    let runs = agree_whole_and_cut(&mut engine, checked, &inputs, |input| input.windows(2).position(|w| w == b"a\r").map_or(0, |at| at + 3));
    println!("name skips: {} inputs, {runs} runs, the engines agree", inputs.len());
}

/// Runs each input whole and cut at every third byte of the 40 from
/// `start(input)`, on the kernel and the reference, and asserts they
/// agree; returns the number of runs.
fn agree_whole_and_cut(engine: &mut KernelEngine, checked: &Checked, inputs: &[Vec<u8>], start: impl Fn(&[u8]) -> usize) -> usize {
    let mut runs = 0;
    for input in inputs {
        let from = start(input);
        let mut splits = vec![Vec::new()];
        for cut in (from..input.len().min(from + 40)).step_by(3) {
            splits.push(vec![cut]);
        }
        for split in splits {
            let connection = ConnectionInfo::default();
            let reference = eval::evaluate(checked.program(), connection, &[], input, &split);
            let kernel = engine.run(connection, &[], input, &split).expect("the kernel run");
            assert_eq!(kernel, reference, "split {split:?}, input \"{}\"", escape(input));
            runs += 1;
        }
    }
    runs
}
