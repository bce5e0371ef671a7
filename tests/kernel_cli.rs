//! `l7c eval --engine kernel` and `l7c test --engine kernel|all` end to end
//! (root only; `SKIPPED` otherwise). Policies the code generator refuses
//! are reported as `SKIPPED <what>: <the generator's error>`; with a policy
//! it compiles, the engines must agree.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn l7c(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l7c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("l7c runs");
    child.stdin.take().expect("piped").write_all(input).expect("input written");
    child.wait_with_output().expect("l7c finishes")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_policy(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-cli");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.to_string_lossy().into_owned()
}

/// A file without policies: nothing is governed, and its tests say so.
const UNGOVERNED: &str = "test \"ungoverned\" {\n  send \"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n\" expect []\n  send \"GET /x HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nPOST\" expect []\n}\n";

fn root_or_skip(test: &str) -> bool {
    if l7c_runtime::is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (CAP_BPF and CAP_NET_ADMIN) to load sk_msg programs");
    false
}

#[test]
fn eval_on_the_kernel_prints_the_reference_engines_json() {
    if !root_or_skip("eval_on_the_kernel_prints_the_reference_engines_json") {
        return;
    }
    let ungoverned = temp_policy("ungoverned.l7", UNGOVERNED);
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
    for policy in [ungoverned.as_str(), "examples/payments.l7"] {
        for split in ["", "1,1,1,5", "30"] {
            let mut args = vec!["eval", policy, "--remote-port", "8080"];
            if !split.is_empty() {
                args.extend(["--split", split]);
            }
            let kernel = l7c(&[args.as_slice(), &["--engine", "kernel"]].concat(), input);
            if kernel.status.code() == Some(1) && stderr(&kernel).contains("l7::codegen") {
                let reason = stderr(&kernel).lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
                eprintln!("SKIPPED eval on the kernel engine ({policy}): {reason}");
                break;
            }
            assert_eq!(kernel.status.code(), Some(0), "{policy} split {split}: {}", stderr(&kernel));
            let reference = l7c(&[args.as_slice(), &["--engine", "ref"]].concat(), input);
            let kernel = String::from_utf8(kernel.stdout).expect("JSON text");
            let reference = String::from_utf8(reference.stdout).expect("JSON text");
            assert_eq!(
                kernel.replacen("\"engine\":\"kernel\"", "\"engine\":\"ref\"", 1),
                reference,
                "{policy} split {split}: the engines disagree"
            );
        }
    }
}

#[test]
fn test_on_all_engines_runs_both_and_counts() {
    if !root_or_skip("test_on_all_engines_runs_both_and_counts") {
        return;
    }
    let ungoverned = temp_policy("ungoverned-tests.l7", UNGOVERNED);
    for engine in ["kernel", "all"] {
        let output = l7c(&["test", "--engine", engine, &ungoverned], b"");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{engine}: {stdout}{}", stderr(&output));
        assert!(stdout.ends_with("2 passed, 0 failed\n"), "{engine}: {stdout}");
    }
    // A policy the generator refuses fails the file with its error.
    let output = l7c(&["test", "--engine", "all", "examples/payments.l7"], b"");
    if output.status.code() == Some(1) && stderr(&output).contains("l7::codegen") {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(stdout.contains("FAIL examples/payments.l7"), "{stdout}");
        eprintln!("SKIPPED test --engine all on examples/payments.l7: the generator refuses it");
    } else {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    }
}
