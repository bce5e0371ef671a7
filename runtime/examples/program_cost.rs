//! What one request costs the generated program in the kernel: compiles
//! policies of 10 to 10,000 generated rules and sends request heads of
//! 100 B to 16 KiB through the real program on loopback, with the kernel's
//! BPF run-time statistics on (`kernel.bpf_stats_enabled`), and prints the
//! program's nanoseconds per request (`run_time_ns / requests`) and runs
//! per request. Root only. Run it with
//! `cargo run --release -p l7c-runtime --example program_cost`;
//! figures go to docs/BENCHMARKS.md ("In the kernel").

use std::time::Instant;

use l7c_compiler::codegen;
use l7c_compiler::driver::compile_text;
use l7c_compiler::model::ConnectionInfo;
use l7c_runtime::engine::KernelEngine;

/// A policy of `rules` rules, each a method and a path prefix of its own
/// service, and the default deny; heads up to 16 KiB.
fn policy(rules: usize) -> String {
    let mut text = String::from("policy \"bench\" {\n  default deny\n  limits { header_bytes 16KiB  headers 100 }\n");
    for i in 0..rules {
        let method = ["GET", "POST", "PUT", "DELETE"][i % 4];
        text.push_str(&format!("  rule \"r{i}\" {{ method {method}  path prefix \"/svc{i}/v1\"  allow }}\n"));
    }
    text.push_str("}\n");
    text
}

/// A GET head of about `size` bytes (padded with one header) for the
/// service of rule `rule` (rule 0 matches a GET).
fn head(rule: usize, size: usize) -> Vec<u8> {
    let base = format!("GET /svc{rule}/v1/items/42 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n");
    let pad = size.saturating_sub(base.len() + 12).max(1);
    format!("{base}X-Pad: {}\r\n\r\n", "a".repeat(pad)).into_bytes()
}

/// The field lines of `bench/heads/NAME.fields` as a head for the service
/// of rule `rule` (the benchmark sends the same fields: bench/heads/).
fn realistic_head(rule: usize, fields: &str, host: &str) -> Vec<u8> {
    let mut head = format!("GET /svc{rule}/v1/items/42?page=2&sort=name HTTP/1.1\r\nHost: {host}\r\n");
    for line in fields.lines().filter(|line| !line.is_empty()) {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// What a browser sends (about 700 bytes: user agent, accept-*, a
/// session cookie, sec-fetch-*).
fn browser_head(rule: usize) -> Vec<u8> {
    realistic_head(rule, include_str!("../../bench/heads/browser.fields"), "shop.example.com")
}

/// An API client's request with a 1 KiB bearer token (a JWT's shape:
/// three base64url parts).
fn api_head(rule: usize) -> Vec<u8> {
    realistic_head(rule, include_str!("../../bench/heads/api.fields"), "api.example.com")
}

fn stats(id: u32) -> Option<(u64, u64)> {
    let out = std::process::Command::new("bpftool").args(["prog", "show", "id", &id.to_string(), "--json"]).output().ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((json["run_time_ns"].as_u64()?, json["run_cnt"].as_u64()?))
}

/// The id of the newest loaded program called `name` (the receive side's
/// verdict of the engine just loaded: it is attached, not kept by id).
fn newest_program_named(name: &str) -> Option<u32> {
    let out = std::process::Command::new("bpftool").args(["prog", "show", "--json"]).output().ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json.as_array()?
        .iter()
        .filter(|prog| prog["name"].as_str() == Some(name))
        .filter_map(|prog| prog["id"].as_u64())
        .max()
        .map(|id| id as u32)
}

fn main() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED program_cost: needs root to load programs and read their run-time statistics");
        return;
    }
    let enabled = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").is_err() {
        eprintln!("SKIPPED program_cost: cannot enable kernel.bpf_stats_enabled");
        return;
    }
    println!("| rules | head bytes | compile | requests | program runs per request | ns per request (program) | median of the connections | receive side, ns per response |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let connections = 20;
    let per_connection = 50;
    // Head sizes in bytes; 0 is the browser-like head, 1 the API head.
    const BROWSER: usize = 0;
    const API: usize = 1;
    // `program_cost ROWS` runs only the first ROWS rows (a profiler's
    // run of the 99-byte row: `program_cost 1`).
    let rows: usize = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(usize::MAX);
    let all = [(10, 100), (100, 100), (1_000, 100), (10_000, 100), (10, BROWSER), (10, API), (10, 1024), (10, 8192), (10, 16_000)];
    for (rules, size) in all.into_iter().take(rows) {
        let source = policy(rules);
        let started = Instant::now();
        let compilation = compile_text("bench.l7", &source, None);
        let Some(checked) = compilation.checked.as_ref() else {
            eprintln!("the generated policy does not check: {:?}", compilation.diagnostics);
            return;
        };
        let compiled = match codegen::compile(checked, &codegen::Options::default()) {
            Ok(compiled) => compiled,
            Err(error) => {
                eprintln!("{rules} rules: {error}");
                continue;
            }
        };
        let compile = started.elapsed();
        let mut engine = match KernelEngine::load(&compiled.object, &compiled.meta) {
            Ok(engine) => engine,
            Err(error) => {
                eprintln!("{rules} rules: {error}");
                continue;
            }
        };
        let Some(id) = engine.program().program_id() else { return };
        let receive = newest_program_named(l7c_abi::receive::PROGRAM_NAME);
        let receive_before = receive.and_then(stats).unwrap_or((0, 0));
        // The matching rule: the middle one.
        let rule = rules / 2 - (rules / 2) % 4;
        let one = match size {
            BROWSER => browser_head(rule),
            API => api_head(rule),
            _ => head(rule, size),
        };
        let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * per_connection).collect();
        let split: Vec<usize> = vec![one.len(); per_connection - 1];
        let before = stats(id).unwrap_or((0, 0));
        let mut requests = 0u64;
        // Per connection too: run_time_ns also counts what interrupts a
        // run (a softirq, the hypervisor), so one connection's share can
        // be far off; the median of the connections is the steadier figure.
        let mut per_connection_ns: Vec<u64> = Vec::new();
        for port in 0..connections {
            let connection = ConnectionInfo { local_port: 41_000 + port as u16, ..ConnectionInfo::default() };
            let at_start = stats(id).unwrap_or((0, 0));
            match engine.run(connection, &[], &input, &split) {
                Ok(outcome) => {
                    assert!(outcome.verdicts.iter().all(|v| v.action == l7c_compiler::model::VerdictAction::Allow));
                    let verdicts = outcome.verdicts.len() as u64;
                    requests += verdicts;
                    let at_end = stats(id).unwrap_or((0, 0));
                    per_connection_ns.push(at_end.0.saturating_sub(at_start.0) / verdicts.max(1));
                }
                Err(error) => {
                    eprintln!("{rules} rules, {size} B: {error}");
                    break;
                }
            }
        }
        per_connection_ns.sort_unstable();
        let median = per_connection_ns.get(per_connection_ns.len() / 2).copied().unwrap_or(0);
        let after = stats(id).unwrap_or((0, 0));
        let receive_ns = receive.and_then(stats).map(|(ns, _)| (ns - receive_before.0) / requests.max(1));
        let (ns, runs) = (after.0 - before.0, after.1 - before.1);
        let shape = match size {
            BROWSER => " (browser)",
            API => " (API, bearer token)",
            _ => "",
        };
        println!(
            "| {rules} | {}{shape} | {:.0} ms | {requests} | {:.2} | {} | {median} | {} |",
            one.len(),
            compile.as_secs_f64() * 1e3,
            runs as f64 / requests.max(1) as f64,
            ns / requests.max(1),
            receive_ns.map_or("-".to_owned(), |ns| ns.to_string())
        );
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", enabled.trim());
}
