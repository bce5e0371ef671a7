//! The code generator's objects under the kernel's verifier (root only;
//! without root every test prints `SKIPPED <test>: <reason>` and passes).
//!
//! Every program `codegen::compile` generates for an example or a
//! conformance policy (the ones snapshotted in
//! `compiler/tests/snapshots/codegen_compile__program__*.snap`) loads, and
//! the budget policies (1,000 rules; `header_bytes 16KiB`) load with their
//! figures printed (`VERIFIED ...`, copied into docs/program.md). The
//! program *frame* (`codegen::compile_frame` with
//! `HeadPhase::DenyFailClosed`) is checked for its own mechanics: storage,
//! scope selection, the pass-all path and the fail-closed deny.

mod common;
#[path = "../../tests/pending/mod.rs"]
mod pending;
#[path = "../../tests/support/mod.rs"]
mod support;

use common::kernel_ready;
use l7c_compiler::codegen::{self, HeadPhase};
use l7c_compiler::driver::compile_text;
use l7c_runtime::harness::{self, RunSpec};
use l7c_runtime::{Errno, KernelProgram, LoadOptions};

fn frame(source: &str) -> codegen::Compiled {
    let compilation = compile_text("t.l7", source, None);
    let checked = compilation.checked.as_ref().expect("the test policy checks");
    codegen::compile_frame(checked, HeadPhase::DenyFailClosed).expect("the frame compiles")
}

fn load(compiled: &codegen::Compiled) -> KernelProgram {
    KernelProgram::load(
        &compiled.object,
        &LoadOptions { program: None, attach_map: Some(l7c_compiler::abi::maps::SOCKETS) },
    )
    .unwrap_or_else(|error| panic!("the verifier refused the frame: {error}"))
}

const GOVERNS_ALL: &str = "policy \"p\" {\n  default allow\n}\n";
const GOVERNS_PORT_1: &str = "policy \"p\" {\n  scope remote port 1\n  default allow\n}\n";

#[test]
fn the_frame_loads_and_reports_its_cost() {
    if !kernel_ready("the_frame_loads_and_reports_its_cost") {
        return;
    }
    for (name, source) in [("governs-all", GOVERNS_ALL), ("governs-port-1", GOVERNS_PORT_1)] {
        let compiled = frame(source);
        let program = load(&compiled);
        let processed = program.verified_instruction_count();
        println!("VERIFIED {name}: {} instructions, {processed:?} processed", compiled.report.instructions);
        assert!(processed.is_some_and(|n| n < 1_000_000));
    }
}

#[test]
fn a_governed_connection_is_denied_fail_closed() {
    if !kernel_ready("a_governed_connection_is_denied_fail_closed") {
        return;
    }
    let mut program = load(&frame(GOVERNS_ALL));
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let run = harness::run(&mut program, &RunSpec { input, split: &[5], ..RunSpec::default() }).unwrap();
    assert_eq!(run.sends.first(), Some(&Err(Errno::EACCES)), "{:?}", run.sends);
    assert!(run.delivered.is_empty(), "nothing passes: {:?}", run.delivered);
}

#[test]
fn an_ungoverned_connection_passes_everything() {
    if !kernel_ready("an_ungoverned_connection_passes_everything") {
        return;
    }
    let mut program = load(&frame(GOVERNS_PORT_1));
    let input: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let run = harness::run(&mut program, &RunSpec { input: &input, split: &[1, 7, 3000], ..RunSpec::default() })
        .unwrap();
    assert!(run.sends.iter().all(Result::is_ok), "{:?}", run.sends);
    assert_eq!(run.delivered, input);
}

fn example_frames() -> Vec<(String, codegen::Compiled)> {
    support::files(&support::repository(env!("CARGO_MANIFEST_DIR")).join("examples"), "l7")
        .into_iter()
        .map(|path| {
            let compilation = l7c_compiler::driver::compile_paths(std::slice::from_ref(&path)).unwrap();
            let checked = compilation.checked.expect("examples check");
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, codegen::compile_frame(&checked, HeadPhase::DenyFailClosed).unwrap())
        })
        .collect()
}

/// A policy of `rules` rules over distinct path prefixes and a few methods.
fn generated_policy(rules: usize, header_bytes: &str) -> String {
    let mut text = format!("policy \"big\" {{\n  default deny\n  limits {{ header_bytes {header_bytes} }}\n");
    for i in 0..rules {
        let method = ["GET", "POST", "PUT", "DELETE"][i % 4];
        text.push_str(&format!("  rule \"r{i}\" {{ method {method}  path prefix \"/svc{i}/v{}\"  allow }}\n", i % 7));
    }
    text.push_str("}\n");
    text
}

#[test]
fn every_snapshotted_frame_loads() {
    if !kernel_ready("every_snapshotted_frame_loads") {
        return;
    }
    for (name, compiled) in example_frames() {
        let program = load(&compiled);
        println!(
            "VERIFIED example {name}: {} instructions, {:?} processed",
            compiled.report.instructions,
            program.verified_instruction_count()
        );
    }
}

/// Every example and every conformance policy the code generator
/// compiles (the snapshotted ones: a policy pending as a whole in
/// tests/conformance/PENDING.toml, or one the generator refuses by name,
/// has no snapshot and is said `SKIPPED`).
fn snapshotted_programs() -> Vec<(String, codegen::Compiled)> {
    let mut sources: Vec<(String, String)> = Vec::new();
    for path in support::files(&support::repository(env!("CARGO_MANIFEST_DIR")).join("examples"), "l7") {
        sources.push((path.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&path).unwrap()));
    }
    for case in pending::compiling_policies(env!("CARGO_MANIFEST_DIR")) {
        sources.push((format!("conformance_{}", case.file.trim_end_matches(".toml")), case.policy));
    }
    sources
        .into_iter()
        .filter_map(|(name, text)| {
            let compilation = compile_text(&format!("{name}.l7"), &text, None);
            let checked = compilation.checked.as_ref().unwrap_or_else(|| panic!("{name} checks"));
            match codegen::compile(checked, &codegen::Options::default()) {
                Ok(compiled) => Some((name, compiled)),
                Err(error @ codegen::CodegenError::Unsupported { .. }) if name.starts_with("conformance_") => {
                    println!("SKIPPED loading {name}: {error}");
                    None
                }
                Err(error) => panic!("{name}: {error}"),
            }
        })
        .collect()
}

#[test]
fn every_snapshotted_program_loads() {
    if !kernel_ready("every_snapshotted_program_loads") {
        return;
    }
    let programs = snapshotted_programs();
    assert!(programs.len() >= 14, "{} programs", programs.len());
    for (name, compiled) in programs {
        let program = load(&compiled);
        println!(
            "VERIFIED program {name}: {} instructions, {:?} processed",
            compiled.report.instructions,
            program.verified_instruction_count()
        );
    }
}

#[test]
fn budget_policies_compile_and_load() {
    if !kernel_ready("budget_policies_compile_and_load") {
        return;
    }
    for (name, rules, header_bytes) in [
        ("10 rules", 10, "8KiB"),
        ("100 rules", 100, "8KiB"),
        ("1000 rules", 1000, "8KiB"),
        ("16KiB heads", 10, "16KiB"),
    ] {
        let source = generated_policy(rules, header_bytes);
        let compilation = compile_text("big.l7", &source, None);
        let checked = compilation.checked.as_ref().expect("the generated policy checks");
        let started = std::time::Instant::now();
        let compiled = codegen::compile(checked, &codegen::Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled_in = started.elapsed();
        let program = load(&compiled);
        let tables: usize = compiled.report.tables.iter().map(|(_, bytes)| bytes).sum();
        println!(
            "VERIFIED {name}: compiled in {compiled_in:?}; {} instructions, {:?} processed, {tables} bytes of tables",
            compiled.report.instructions,
            program.verified_instruction_count()
        );
        assert!(program.verified_instruction_count().is_some_and(|n| n < 1_000_000));
    }
}

#[test]
fn the_compiled_program_without_policies_loads_and_passes_everything() {
    if !kernel_ready("the_compiled_program_without_policies_loads_and_passes_everything") {
        return;
    }
    let compilation = compile_text("empty.l7", "# no policy\n", None);
    let checked = compilation.checked.as_ref().expect("an empty program checks");
    let compiled = codegen::compile(checked, &codegen::Options::default()).expect("it compiles");
    let mut program = load(&compiled);
    println!(
        "VERIFIED no policy (codegen::compile): {} instructions, {:?} processed",
        compiled.report.instructions,
        program.verified_instruction_count()
    );
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x16\x03\x01 anything at all";
    let run = harness::run(&mut program, &RunSpec { input, split: &[3, 4], ..RunSpec::default() }).unwrap();
    assert!(run.sends.iter().all(Result::is_ok), "{:?}", run.sends);
    assert_eq!(run.delivered, input);
}

/// Scope selection reads the ports in the right byte order: a policy
/// scoped to the connection's remote (or local) port governs it (the frame
/// denies), one scoped to another port does not (everything passes).
#[test]
fn port_scopes_select_the_right_connections() {
    if !kernel_ready("port_scopes_select_the_right_connections") {
        return;
    }
    use std::net::SocketAddr;
    let remote: SocketAddr = "127.0.0.1:18093".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:18094".parse().unwrap();
    let cases = [
        ("scope remote port 18093", true),
        ("scope remote port 18094", false),
        ("scope local port 18094", true),
        ("scope local port 18093", false),
        ("scope remote port 1, 18093\n  scope local port 18094", true),
        ("scope remote port 18093\n  scope local port 7", false),
    ];
    for (scope, governed) in cases {
        let source = format!("policy \"p\" {{\n  {scope}\n  default allow\n}}\n");
        let mut program = load(&frame(&source));
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let spec = RunSpec {
            input,
            endpoints: harness::Endpoints { remote: Some(remote), local: Some(local) },
            ..RunSpec::default()
        };
        let run = harness::run(&mut program, &spec).unwrap();
        if governed {
            assert_eq!(run.sends, [Err(Errno::EACCES)], "{scope}");
            assert!(run.delivered.is_empty(), "{scope}");
        } else {
            assert_eq!(run.sends, [Ok(input.len())], "{scope}");
            assert_eq!(run.delivered, input, "{scope}");
        }
    }
}

/// A connection's address on loopback, of one of the three kinds the
/// kernel engine can make: IPv4 (127.0.0.0/8), IPv6 (`::1`), and the
/// IPv4-mapped address of a dual-stack IPv6 socket.
fn loopback_address(rng: &mut fastrand::Rng, kind: u8) -> std::net::IpAddr {
    let v4 = std::net::Ipv4Addr::new(127, rng.u8(0..3), rng.u8(0..3), rng.u8(1..255));
    match kind {
        0 => v4.into(),
        1 => std::net::Ipv6Addr::LOCALHOST.into(),
        _ => v4.to_ipv6_mapped().into(),
    }
}

/// A block near the loopback addresses: IPv4 blocks of every length
/// around 127.0.0.0/8 (so both sides of each boundary are met), and IPv6
/// blocks that hold `::1`, the mapped range, or neither.
fn address_block(rng: &mut fastrand::Rng) -> String {
    if rng.u8(0..4) == 0 {
        let v6 = ["::1/128", "::/0", "::ffff:0:0/96", "::ffff:127.0.0.0/104", "::ffff:127.0.1.0/120", "::2/127", "2001:db8::/32", "::/127"];
        return v6[rng.usize(0..v6.len())].to_owned();
    }
    let len = rng.u8(0..=32);
    let addr = u32::from(std::net::Ipv4Addr::new(127, rng.u8(0..3), rng.u8(0..3), rng.u8(0..=255)));
    let net = if len == 0 { 0 } else { addr & (u32::MAX << (32 - u32::from(len))) };
    format!("{}/{len}", std::net::Ipv4Addr::from(net))
}

/// Address scopes in the program select exactly the connections the
/// reference's `Scope::selects` does: seeded scopes of remote and local
/// blocks (IPv4, IPv6, one of 2,000 blocks) against real loopback
/// connections of every kind.
#[test]
fn address_scopes_select_what_the_reference_selects() {
    if !kernel_ready("address_scopes_select_what_the_reference_selects") {
        return;
    }
    use l7c_compiler::model::ConnectionInfo;
    use std::net::SocketAddr;
    let mut rng = fastrand::Rng::with_seed(0xadd5);
    let (mut governed, mut passed) = (0, 0);
    for round in 0..48 {
        let blocks = if round == 0 { 2000 } else { rng.usize(1..6) };
        let remote: Vec<String> = (0..blocks).map(|_| address_block(&mut rng)).collect();
        let mut source = format!("policy \"p\" {{\n  scope remote addr {}\n", remote.join(", "));
        if rng.bool() {
            let local: Vec<String> = (0..rng.usize(1..4)).map(|_| address_block(&mut rng)).collect();
            source.push_str(&format!("  scope local addr {}\n", local.join(", ")));
        }
        source.push_str("  default allow\n}\n");
        let compilation = compile_text("t.l7", &source, None);
        let checked = compilation.checked.as_ref().unwrap_or_else(|| panic!("{source}: {:?}", compilation.diagnostics));
        let scope = &checked.program().policies[0].scope;
        let mut program = load(&codegen::compile_frame(checked, HeadPhase::DenyFailClosed).expect("the frame compiles"));
        for _ in 0..6 {
            let kind = rng.u8(0..3);
            let (remote, local) = (loopback_address(&mut rng, kind), loopback_address(&mut rng, kind));
            let connection = ConnectionInfo { remote_addr: remote, local_addr: local, ..ConnectionInfo::default() };
            let selected = scope.selects(&connection);
            let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
            let spec = RunSpec {
                input,
                endpoints: harness::Endpoints { remote: Some(SocketAddr::new(remote, 0)), local: Some(SocketAddr::new(local, 0)) },
                ..RunSpec::default()
            };
            let run = harness::run(&mut program, &spec).unwrap_or_else(|error| panic!("{remote} from {local}: {error}"));
            let shown = if blocks > 8 { format!("{blocks} blocks") } else { source.clone() };
            if selected {
                governed += 1;
                assert_eq!(run.sends, [Err(Errno::EACCES)], "{remote} from {local} is selected by\n{shown}");
            } else {
                passed += 1;
                assert_eq!(run.sends, [Ok(input.len())], "{remote} from {local} is not selected by\n{shown}");
            }
        }
    }
    println!("address scopes: {governed} connections governed, {passed} passed, as the reference selects");
    assert!(governed > 20 && passed > 20, "the seed must meet both sides: {governed} governed, {passed} passed");
}
