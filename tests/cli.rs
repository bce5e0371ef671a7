//! The command line's contract (shared/spec/cli.md): exit codes, the JSON
//! of `eval`, the closing line of `test`, `fmt --check`, `check` formats.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn l7c(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l7c"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("l7c runs");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).expect("stdin written");
    }
    drop(pipe);
    child.wait_with_output().expect("l7c finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A policy file in a fresh temporary folder.
fn temp_policy(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.l7"));
    std::fs::write(&path, text).expect("policy written");
    path
}

const GOOD: &str = r#"policy "p" {
  default deny
  rule "read" { method GET  allow }
}

test "p" {
  send "GET / HTTP/1.1\r\nHost: a\r\n\r\n" expect allow "read"
}
"#;

#[test]
fn eval_prints_the_json_of_cli_md() {
    let output = l7c(
        &["eval", "tests/conformance/framing.l7-does-not-exist", "--input", "-"],
        Some(b""),
    );
    assert_eq!(output.status.code(), Some(2), "a missing file is an I/O error: {}", stderr(&output));

    let policy = temp_policy("eval", GOOD);
    let input = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nDELETE /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let output = l7c(&["eval", policy.to_str().unwrap(), "--split", "3,40"], Some(input));
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({
            "engine": "ref",
            "verdicts": [
                {"index": 0, "start": 0, "end": 28, "action": "allow", "reason": "rule", "rule": "read"},
                {"index": 1, "start": 28, "end": 59, "action": "deny", "reason": "default", "rule": null,
                 "answer": null, "fallback": "reset"}
            ],
            "delivered": 28,
            "pending": 0
        })
    );
}

const SWITCHING: &str = r#"policy "p" {
  default deny
  rule "read" { method GET  path prefix "/pub"  allow }
  rule "ws"   { path exact "/ws"  allow tunnel }
}
"#;

/// `--answers` (cli.md): the server's status for each request decides
/// switches and whether a deny is answered over HTTP.
#[test]
fn eval_takes_the_servers_answers() {
    let policy = temp_policy("eval-answers", SWITCHING);
    let policy = policy.to_str().unwrap();
    let eval = |args: &[&str], input: &[u8]| -> serde_json::Value {
        let mut all = vec!["eval", policy];
        all.extend_from_slice(args);
        let output = l7c(&all, Some(input));
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str(&stdout(&output)).expect("JSON")
    };
    let verdicts = |json: &serde_json::Value| -> Vec<String> {
        json["verdicts"].as_array().unwrap().iter().map(|v| format!("{} {}", v["action"], v["rule"])).collect()
    };
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"; // 49 bytes
    let mut input = upgrade.to_vec();
    input.extend_from_slice(b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n");

    // Agreed to (the default, or 101): the rest passes.
    for args in [&["--split", "49"][..], &["--split", "49", "--answers", "101"]] {
        let json = eval(args, &input);
        assert_eq!(verdicts(&json), ["\"tunnel\" \"ws\""]);
        assert_eq!((json["verdicts"][0]["end"].as_u64(), json["delivered"].as_u64()), (Some(81), Some(81)));
        assert_eq!(json["verdicts"][0].get("answer"), None, "only denies carry an answer");
    }
    // Refused: the next request is judged, and its deny is answered (the
    // server answered before it was sent).
    let json = eval(&["--split", "49", "--answers", "404"], &input);
    assert_eq!(verdicts(&json), ["\"tunnel\" \"ws\"", "\"deny\" null"]);
    assert_eq!(json["verdicts"][0]["end"], 49);
    let deny = &json["verdicts"][1];
    assert_eq!((deny["reason"].as_str(), deny["answer"]["status"].as_u64()), (Some("default"), Some(403)));
    assert!(deny["answer"]["bytes"].as_u64().is_some_and(|bytes| bytes > 100), "{deny}");
    assert_eq!(deny.get("fallback"), None);
    // Sent before the answer: early bytes, `deny tunnel` with no rule, never
    // answered over HTTP.
    let json = eval(&["--answers", "101"], &input);
    assert_eq!(verdicts(&json), ["\"tunnel\" \"ws\"", "\"deny\" null"]);
    let early = &json["verdicts"][1];
    assert_eq!((early["reason"].as_str(), early["start"].as_u64()), (Some("tunnel"), Some(49)));
    assert_eq!((&early["answer"], &early["fallback"]), (&serde_json::Value::Null, &serde_json::json!("reset")));
    assert!(early.as_object().unwrap().contains_key("answer"), "`answer` is present, and null: {early}");
    // A request past the list is never answered: the switch never opens.
    let json = eval(&["--split", "49", "--answers", ""], &input);
    assert_eq!(verdicts(&json), ["\"tunnel\" \"ws\"", "\"deny\" null"]);

    // Bad values are usage errors, with a message.
    for bad in ["2000", "99", "600", "abc", "200,,404", "+200", "200 "] {
        let output = l7c(&["eval", policy, "--answers", bad], Some(b""));
        assert_eq!(output.status.code(), Some(2), "--answers {bad:?}");
        assert!(stderr(&output).contains("`--answers`"), "{}", stderr(&output));
    }
}

#[test]
fn eval_reads_input_from_a_file_and_rejects_bad_flags() {
    let policy = temp_policy("eval-file", GOOD);
    let input = policy.with_extension("bin");
    std::fs::write(&input, b"GET / HTTP/1.1\r\n").expect("input written");
    let output = l7c(&["eval", policy.to_str().unwrap(), "--input", input.to_str().unwrap()], None);
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(json["pending"], 16);
    assert_eq!(json["delivered"], 0);

    let output = l7c(&["eval", policy.to_str().unwrap(), "--split", "0"], Some(b""));
    assert_eq!(output.status.code(), Some(2));
    let output = l7c(&["eval", policy.to_str().unwrap(), "--remote-port", "99999"], Some(b""));
    assert_eq!(output.status.code(), Some(2));
    // The kernel engine: without root it refuses (exit 2) and says so; as
    // root it runs, or reports the code generator's refusal (exit 1).
    let output = l7c(&["eval", policy.to_str().unwrap(), "--engine", "kernel"], Some(b""));
    if l7c_runtime::is_root() {
        assert!(matches!(output.status.code(), Some(0 | 1)), "{}", stderr(&output));
        if output.status.code() == Some(1) {
            assert!(stderr(&output).contains("l7::"), "{}", stderr(&output));
        }
    } else {
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains("the kernel engine needs CAP_BPF ("), "{}", stderr(&output));
    }
}

#[test]
fn test_command_counts_and_fails_on_a_wrong_expectation() {
    let policy = temp_policy("test-ok", GOOD);
    let output = l7c(&["test", policy.to_str().unwrap()], None);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert_eq!(stdout(&output).lines().last(), Some("1 passed, 0 failed"));

    let wrong = GOOD.replace("expect allow \"read\"", "expect deny default");
    let policy = temp_policy("test-wrong", &wrong);
    let output = l7c(&["test", policy.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("FAIL") && out.contains("expected [deny default], got [allow \"read\"]"), "{out}");
    assert_eq!(out.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn every_example_and_stdlib_module_passes_its_tests() {
    let mut files: Vec<String> = Vec::new();
    for dir in ["examples", "stdlib"] {
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "l7") {
                files.push(format!("{dir}/{}", path.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let args: Vec<&str> = std::iter::once("test").chain(files.iter().map(String::as_str)).collect();
    let output = l7c(&args, None);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    let last = out.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed") && !last.starts_with("0 "), "{last}");

    for file in &files {
        let output = l7c(&["check", "--deny-warnings", file], None);
        assert!(output.status.success(), "{file}: {}", stderr(&output));
    }
    // Named together they form one program, and unscoped policies overlap.
    let together: Vec<&str> = ["check", "examples/admin-lockdown.l7", "examples/static-site.l7"].to_vec();
    let output = l7c(&together, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("l7::check::overlapping-scopes"), "{}", stderr(&output));
}

#[test]
fn check_exit_codes_and_formats() {
    let broken = temp_policy("check-broken", "policy \"p\" {\n  rule \"r\" { method GET  allow }\n}\n");
    let output = l7c(&["check", broken.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("l7::check::missing-default") && err.contains("check-broken.l7"), "{err}");

    let output = l7c(&["check", "--format", "json", broken.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON diagnostics");
    assert!(json.to_string().contains("l7::check::missing-default"), "{json}");

    let output = l7c(&["check", "--format", "sarif", broken.to_str().unwrap()], None);
    let sarif: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("SARIF");
    assert_eq!(sarif["version"], "2.1.0");

    let output = l7c(&["check", "no/such/file.l7"], None);
    assert_eq!(output.status.code(), Some(2));
    let output = l7c(&["check", "--format", "yaml", broken.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(2));

    let unused = temp_policy("check-warn", &format!("let UNUSED = [\"/x\"]\n{GOOD}"));
    let output = l7c(&["check", unused.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0), "warnings alone pass");
    let output = l7c(&["check", "--deny-warnings", unused.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1), "--deny-warnings fails on them");
}

#[test]
fn fmt_check_reports_and_fmt_rewrites() {
    let messy = temp_policy("fmt", "policy \"p\"{default deny\nrule \"read\"{method GET allow}}\n");
    let output = l7c(&["fmt", "--check", messy.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("would reformat"), "{}", stdout(&output));

    let output = l7c(&["fmt", messy.to_str().unwrap()], None);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = l7c(&["fmt", "--check", messy.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0), "formatted files pass --check");
    let output = l7c(&["check", messy.to_str().unwrap()], None);
    assert!(output.status.success(), "the formatted file still compiles: {}", stderr(&output));

    let unparsable = temp_policy("fmt-bad", "policy \"p\" { default maybe }\n");
    let output = l7c(&["fmt", unparsable.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("l7::syntax::parse"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&unparsable).unwrap(), "policy \"p\" { default maybe }\n", "left as it was");
}

#[test]
fn explain_shows_the_canonical_path_and_the_verdict() {
    let output = l7c(
        &[
            "explain",
            "examples/admin-lockdown.l7",
            "--request",
            r"GET /%61dmin/users HTTP/1.1\r\nHost: svc\r\n\r\n",
        ],
        None,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("/admin/users"), "the decoded path is shown: {out}");
    assert!(out.contains("admin"), "{out}");
    let output = l7c(&["explain", "examples/admin-lockdown.l7", "--request", r"\q"], None);
    assert_eq!(output.status.code(), Some(2));
    // A deny says how it is answered.
    let output = l7c(&["explain", "examples/admin-lockdown.l7", "--request", r"DELETE /admin HTTP/1.1\r\nHost: svc\r\n\r\n"], None);
    assert!(stdout(&output).contains("answered 403"), "{}", stdout(&output));
}

/// The README's example policy is real: it checks clean, passes its own
/// tests and is in canonical layout.
#[test]
fn the_readme_example_works() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let example = readme
        .split("```l7\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a policy in an ```l7 block");
    let policy = temp_policy("readme", example);
    let path = policy.to_str().unwrap();
    for args in [vec!["check", "--deny-warnings", path], vec!["test", path], vec!["fmt", "--check", path]] {
        let output = l7c(&args, None);
        assert!(output.status.success(), "{args:?}: {}{}", stdout(&output), stderr(&output));
    }
}

/// `check` tells the truth about deployment: the scale files of
/// ../shared/bench/scale (copied to tests/scale/) and the generated file of
/// 100 policies (tests/scale/generate.py) check as the back end takes
/// them, without root. Every policy shares one code path (issue 15), so
/// none of them is too large any more: `check` says nothing against them,
/// in text or JSON, and `compile` agrees. A program the back end would
/// refuse would still be reported on a policy (`codegen/deploy.rs`).
#[test]
fn check_reports_what_the_back_end_would_refuse() {
    for file in ["tests/scale/multi5.l7", "tests/scale/multi20.l7", "tests/scale/multi100x20.l7"] {
        let output = l7c(&["check", file], None);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{file}: {text}");
        assert!(!text.contains("l7::codegen::"), "{file}: {text}");
        let json = l7c(&["check", "--format", "json", file], None);
        assert_eq!(json.status.code(), Some(0), "{file}");
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
        assert!(!json.to_string().contains("l7::codegen::"), "{file}: {json}");
        let compiled = l7c(&["compile", file, "--emit", "report"], None);
        assert_eq!(compiled.status.code(), Some(0), "{file}: check and compile agree: {}", stderr(&compiled));
    }
}

/// Every command in the README's ```sh blocks under "Using it" runs as
/// written and succeeds: in a scratch directory that holds the examples,
/// `l7c` being this build, `sudo` dropped (the kernel commands run as root
/// and say SKIPPED otherwise), `fmt` with `--check` so a test never
/// rewrites the examples. The node walk-through under "Running on a node"
/// is run step by step, as root, by tests/run_cli.rs.
#[test]
fn the_readme_commands_under_using_it_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let section = readme
        .split("## Using it")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a \"Using it\" section");
    let scratch = std::env::temp_dir().join(format!("l7c-readme-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let _ = std::os::unix::fs::symlink(root.join("examples"), scratch.join("examples"));
    let bin = Path::new(env!("CARGO_BIN_EXE_l7c")).parent().unwrap();
    let mut commands = 0;
    for block in section.split("```sh\n").skip(1).filter_map(|rest| rest.split("```").next()) {
        for command in block.replace("\\\n", " ").lines() {
            // A comment starts at `  #` after the command.
            let command = command.split("  #").next().unwrap().trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            let command = command.replace("sudo ", "").replace("l7c fmt ", "l7c fmt --check ");
            let kernel = ["--engine kernel", "--engine all", "--verify"].iter().any(|flag| command.contains(flag));
            if kernel && !l7c_runtime::is_root() {
                eprintln!("SKIPPED README command `{command}`: needs root");
                continue;
            }
            let output = Command::new("bash")
                .args(["-c", &command])
                .current_dir(&scratch)
                .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
                .output()
                .expect("bash");
            assert!(output.status.success(), "`{command}`: {}{}", stdout(&output), stderr(&output));
            commands += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(commands >= 8 || !l7c_runtime::is_root(), "{commands} commands found");
}
