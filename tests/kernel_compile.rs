//! `l7c compile`: exit codes, `--emit obj|asm|report`, determinism, and
//! `--verify` (root). Tests that need the code generator report
//! `SKIPPED <what>: <the generator's error>` while it refuses a policy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn l7c(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_l7c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("l7c runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-compile");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// `None` (after printing `SKIPPED`) when the generator refuses `policy`.
fn compile_or_skip(test: &str, policy: &str, extra: &[&str]) -> Option<Output> {
    let mut args = vec!["compile", policy];
    args.extend_from_slice(extra);
    let output = l7c(&args);
    let text = stderr(&output);
    if output.status.code() == Some(1) && text.contains("l7::codegen") {
        let reason = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        eprintln!("SKIPPED {test} ({policy}): {reason}");
        return None;
    }
    assert_eq!(output.status.code(), Some(0), "l7c {args:?}: {text}");
    Some(output)
}

#[test]
fn usage_errors_exit_2_and_bad_policies_exit_1() {
    let out = temp("never.o");
    let out = out.to_str().unwrap();
    let missing = l7c(&["compile", "examples/no-such-policy.l7", "-o", out]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let no_output = l7c(&["compile", "examples/payments.l7"]);
    assert_eq!(no_output.status.code(), Some(2), "{}", stderr(&no_output));
    assert!(stderr(&no_output).contains("-o"), "{}", stderr(&no_output));
    let bad_emit = l7c(&["compile", "examples/payments.l7", "--emit", "elf", "-o", out]);
    assert_eq!(bad_emit.status.code(), Some(2));
    let bad_target = l7c(&["compile", "examples/payments.l7", "--target-kernel", "six", "-o", out]);
    assert_eq!(bad_target.status.code(), Some(2));
    assert!(stderr(&bad_target).contains("X.Y"), "{}", stderr(&bad_target));
    let old_target = l7c(&["compile", "examples/payments.l7", "--target-kernel", "5.10", "-o", out]);
    assert_eq!(old_target.status.code(), Some(1), "{}", stderr(&old_target));
    assert!(stderr(&old_target).contains("l7::codegen::target-kernel") && stderr(&old_target).contains("bpf_loop"), "{}", stderr(&old_target));
    assert!(!Path::new(out).exists(), "nothing is written for a target the program cannot load on");
    let supported = temp("target-6.1.o");
    let ok = l7c(&["compile", "examples/payments.l7", "--target-kernel", "6.1", "-o", supported.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    let broken = temp("broken.l7");
    std::fs::write(&broken, "policy \"p\" { rule \"r\" { path prefix \"/a\" allow } }\n").expect("written");
    let output = l7c(&["compile", broken.to_str().unwrap(), "-o", out]);
    assert_eq!(output.status.code(), Some(1), "a policy without a default does not compile: {}", stderr(&output));
    assert!(!Path::new(out).exists(), "nothing is written for a policy that does not compile");
}

/// A file without policies: every connection is ungoverned (the
/// generator's pass-all program).
fn ungoverned_policy() -> String {
    let path = temp("ungoverned.l7");
    std::fs::write(&path, "# no policy: nothing is governed\n").expect("written");
    path.to_string_lossy().into_owned()
}

#[test]
fn objects_are_bpf_elf_and_deterministic() {
    let ungoverned = ungoverned_policy();
    let examples = ["examples/payments.l7", "examples/grpc-redirect.l7", "examples/static-site.l7", ungoverned.as_str()];
    for example in examples {
        let stem = Path::new(example).file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let first = temp(&format!("{stem}-1.o"));
        let second = temp(&format!("{stem}-2.o"));
        let Some(_) = compile_or_skip("objects_are_bpf_elf_and_deterministic", example, &["-o", first.to_str().unwrap()]) else {
            continue;
        };
        compile_or_skip("objects_are_bpf_elf_and_deterministic", example, &["-o", second.to_str().unwrap(), "--emit", "obj"])
            .expect("the generator compiled it a moment ago");
        let bytes = std::fs::read(&first).expect("object written");
        assert_eq!(bytes.get(..4), Some(&b"\x7fELF"[..]), "{example}: an ELF file");
        assert_eq!(bytes.get(5), Some(&1), "{example}: little-endian");
        assert_eq!(bytes.get(18..20), Some(&247u16.to_le_bytes()[..]), "{example}: EM_BPF");
        assert_eq!(bytes, std::fs::read(&second).expect("object written"), "{example}: the same source gives the same bytes");
    }
}

#[test]
fn asm_prints_a_listing_and_report_prints_figures() {
    let ungoverned = ungoverned_policy();
    for example in ["examples/payments.l7", ungoverned.as_str()] {
        listing_and_report(example);
    }
}

fn listing_and_report(example: &str) {
    let Some(first) = compile_or_skip("asm_prints_a_listing_and_report_prints_figures", example, &["--emit", "asm"]) else {
        return;
    };
    let listing = String::from_utf8(first.stdout).expect("the listing is text");
    assert!(listing.lines().count() > 5, "a listing of instructions:\n{listing}");
    assert!(listing.contains("exit"), "the program ends in `exit`:\n{listing}");
    let second = compile_or_skip("asm_prints_a_listing_and_report_prints_figures", example, &["--emit", "asm", "-o", "-"])
        .expect("compiled a moment ago");
    assert_eq!(listing.as_bytes(), &second.stdout[..], "the listing is deterministic");

    let report = compile_or_skip("asm_prints_a_listing_and_report_prints_figures", example, &["--emit", "report"])
        .expect("compiled a moment ago");
    let report = String::from_utf8(report.stdout).expect("text");
    assert!(report.starts_with("instructions: "), "{report}");
    assert!(report.contains("largest number of request bytes scanned: "), "{report}");
    assert!(!report.contains("verifier"), "no verifier count without --verify: {report}");
}

#[test]
fn verify_reports_the_verifiers_count() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED verify_reports_the_verifiers_count: needs root (CAP_BPF and CAP_NET_ADMIN) to load the program");
        return;
    }
    let ungoverned = ungoverned_policy();
    for example in ["examples/payments.l7", ungoverned.as_str()] {
        let Some(output) = compile_or_skip("verify_reports_the_verifiers_count", example, &["--emit", "report", "--verify"]) else {
            continue;
        };
        let report = String::from_utf8(output.stdout).expect("text");
        assert!(report.contains("verifier: "), "{example}: {report}");
    }
}

/// `l7c ARGS` as an unprivileged user (`setpriv` to nobody, no
/// capabilities); `None` when this process cannot drop to one.
fn l7c_unprivileged(args: &[&str]) -> Option<Output> {
    if !l7c_runtime::is_root() {
        // Already unprivileged: run directly.
        return Some(l7c(args));
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(env!("CARGO_BIN_EXE_l7c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    // setpriv itself failing (missing, or nobody cannot run the binary)
    // exits 127 or 126, or 1 with its own message.
    if matches!(output.status.code(), Some(126 | 127)) || stderr(&output).starts_with("setpriv:") {
        return None;
    }
    Some(output)
}

#[test]
fn without_privileges_the_kernel_engine_and_verify_exit_2_and_say_so() {
    let cases: [&[&str]; 3] = [
        &["eval", "examples/payments.l7", "--engine", "kernel", "--input", "/dev/null"],
        &["test", "--engine", "all", "examples/payments.l7"],
        &["compile", "examples/payments.l7", "--emit", "report", "--verify"],
    ];
    for args in cases {
        let Some(output) = l7c_unprivileged(args) else {
            eprintln!("SKIPPED without_privileges_the_kernel_engine_and_verify_exit_2_and_say_so: cannot drop privileges with setpriv");
            return;
        };
        assert_eq!(output.status.code(), Some(2), "l7c {args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains("needs CAP_BPF ("), "l7c {args:?}: {}", stderr(&output));
    }
}
