//! The shared conformance cases (tests/conformance/*.toml, copied from
//! shared/conformance/) run through the `l7c eval` binary: each case with its
//! stated split, then under 20 random splits that must print the very same
//! JSON. The reference engine runs them everywhere; the kernel engine runs
//! them as root (each case, stated split and 20 random splits, must print
//! exactly the reference engine's JSON), and reports `SKIPPED` with the
//! reason when it cannot: not root, or a policy the code generator refuses
//! (listed once per policy, with the generator's error). The stated split
//! runs through `l7c eval --engine kernel`; the random splits run through the
//! same engine with the policy loaded once (`L7C_CONFORMANCE_ALL_CLI=1` sends
//! every run through the binary instead, loading the program each time).

use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const RANDOM_SPLITS: usize = 20;

#[derive(Deserialize)]
struct Suite {
    policy: String,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    input: Option<String>,
    input_hex: Option<String>,
    split: Option<Vec<usize>>,
    remote_port: Option<u16>,
    remote_addr: Option<String>,
    local_port: Option<u16>,
    expect: Vec<String>,
    delivered: Option<u64>,
    #[serde(default)]
    bind: Vec<String>,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        match (&self.input, &self.input_hex) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(hex)) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("input_hex is hex"))
                .collect(),
            (None, None) => panic!("case `{}` has neither input nor input_hex", self.name),
        }
    }
}

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn suites() -> Vec<(String, Suite)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conformance_dir())
        .expect("tests/conformance exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "expected the shared conformance files, found {}", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable suite");
            let suite: Suite = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap_or_default().to_string_lossy().into_owned(), suite)
        })
        .collect()
}

/// Run `l7c eval` on one input; the JSON it printed.
fn eval(policy: &Path, case: &Case, input: &[u8], split: &[usize]) -> serde_json::Value {
    let output = eval_on("ref", policy, case, input, split);
    assert!(
        output.status.success(),
        "case `{}`: l7c eval failed: {}",
        case.name,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("l7c eval prints JSON")
}

/// Run `l7c eval --engine ENGINE` on one input.
fn eval_on(engine: &str, policy: &Path, case: &Case, input: &[u8], split: &[usize]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_l7c"));
    command.arg("eval").arg(policy).args(["--engine", engine, "--input", "-"]);
    if !split.is_empty() {
        let sizes: Vec<String> = split.iter().map(usize::to_string).collect();
        command.arg("--split").arg(sizes.join(","));
    }
    if let Some(port) = case.remote_port {
        command.arg("--remote-port").arg(port.to_string());
    }
    if let Some(addr) = &case.remote_addr {
        command.arg("--remote-addr").arg(addr);
    }
    if let Some(port) = case.local_port {
        command.arg("--local-port").arg(port.to_string());
    }
    for name in &case.bind {
        command.arg("--bind").arg(name);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("l7c runs");
    child.stdin.take().expect("piped stdin").write_all(input).expect("input written");
    child.wait_with_output().expect("l7c finishes")
}

/// The verdicts of eval's JSON in the cases' notation: `allow rule:NAME`,
/// `deny malformed:cl-te`, and `pending` when bytes are held.
fn verdicts_of(json: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = json["verdicts"]
        .as_array()
        .expect("verdicts array")
        .iter()
        .map(|v| {
            let action = v["action"].as_str().expect("action");
            let reason = v["reason"].as_str().expect("reason");
            if reason == "rule" {
                format!("{action} rule:{}", v["rule"].as_str().expect("rule name with reason rule"))
            } else {
                format!("{action} {reason}")
            }
        })
        .collect();
    if json["pending"].as_u64().expect("pending") > 0 {
        out.push("pending".into());
    }
    out
}

/// `deny malformed` accepts any kind; everything else must be equal.
fn expectation_holds(expected: &str, got: &str) -> bool {
    expected == got || (expected.ends_with(" malformed") && got.starts_with(&format!("{expected}:")))
}

fn random_splits(len: usize, seed: u64, count: usize) -> Vec<Vec<usize>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let mut sizes = Vec::new();
            let mut used = 0;
            while used < len {
                let cap = if rng.u8(..4) == 0 { len } else { 12 };
                let size = rng.usize(1..=cap.max(1));
                sizes.push(size);
                used += size;
            }
            sizes
        })
        .collect()
}

#[test]
fn conformance_cases_through_the_reference_engine() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let mut runs = 0usize;
    let mut cases = 0usize;
    for (file, suite) in suites() {
        let policy = dir.join(file.replace(".toml", ".l7"));
        std::fs::write(&policy, &suite.policy).expect("policy written");
        for (number, case) in suite.cases.iter().enumerate() {
            cases += 1;
            let input = case.bytes();
            let stated = case.split.clone().unwrap_or_default();
            let json = eval(&policy, case, &input, &stated);
            runs += 1;
            let got = verdicts_of(&json);
            let holds = got.len() == case.expect.len()
                && case.expect.iter().zip(&got).all(|(e, g)| expectation_holds(e, g));
            if !holds {
                failures.push(format!("{file} `{}`: expected {:?}, got {:?}", case.name, case.expect, got));
                continue;
            }
            if let Some(delivered) = case.delivered {
                if json["delivered"] != delivered {
                    failures.push(format!(
                        "{file} `{}`: expected {delivered} bytes delivered, got {}",
                        case.name, json["delivered"]
                    ));
                    continue;
                }
            }
            let seed = (number as u64) << 32 | input.len() as u64;
            for split in random_splits(input.len(), seed, RANDOM_SPLITS) {
                let other = eval(&policy, case, &input, &split);
                runs += 1;
                if other != json {
                    failures.push(format!(
                        "{file} `{}`: split {split:?} printed {other}, the stated split printed {json}",
                        case.name
                    ));
                    break;
                }
            }
        }
    }
    println!("conformance (ref): {cases} cases, {runs} runs of l7c eval");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Whether `l7c compile` makes an object of `policy`: `Err` with the
/// generator's error when it refuses (exit 1); any other failure panics.
fn generator_compiles(policy: &Path) -> Result<(), String> {
    let object = policy.with_extension("o");
    let output = Command::new(env!("CARGO_BIN_EXE_l7c"))
        .arg("compile")
        .arg(policy)
        .arg("-o")
        .arg(&object)
        .output()
        .expect("l7c runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) if stderr.contains("l7::codegen") => {
            let reason = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
            Err(reason)
        }
        other => panic!("l7c compile {} exited {other:?}: {stderr}", policy.display()),
    }
}

/// The policy compiled by the generator and loaded into the kernel once.
fn load_engine(policy: &Path) -> l7c_runtime::engine::KernelEngine {
    let compilation = l7c_compiler::driver::compile_paths(&[policy.to_path_buf()]).expect("readable policy");
    let checked = compilation.checked.as_ref().expect("conformance policies check");
    let compiled = l7c_compiler::codegen::compile(checked, &l7c_compiler::codegen::Options::default())
        .expect("`l7c compile` compiled it a moment ago");
    l7c_runtime::engine::KernelEngine::load(&compiled.object, &compiled.meta)
        .unwrap_or_else(|error| panic!("{}: the kernel did not load the generated program: {error}", policy.display()))
}

/// A case's connection as `l7c eval`'s flags give it.
fn connection_of(case: &Case) -> l7c_compiler::model::ConnectionInfo {
    let default = l7c_compiler::model::ConnectionInfo::default();
    l7c_compiler::model::ConnectionInfo {
        remote_addr: case.remote_addr.as_deref().map_or(default.remote_addr, |a| a.parse().expect("remote_addr is an IP")),
        remote_port: case.remote_port.unwrap_or(default.remote_port),
        local_port: case.local_port.unwrap_or(default.local_port),
        ..default
    }
}

/// The JSON without its `engine` field (the one field that names the engine).
fn without_engine(mut json: serde_json::Value) -> serde_json::Value {
    if let Some(object) = json.as_object_mut() {
        object.remove("engine");
    }
    json
}

#[test]
fn conformance_through_the_kernel_engine() {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED conformance on the kernel engine: needs root (CAP_BPF and CAP_NET_ADMIN) to load sk_msg programs");
        return;
    }
    let every_run_through_the_cli = std::env::var_os("L7C_CONFORMANCE_ALL_CLI").is_some();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance-kernel");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let (mut runs, mut passed, mut skipped_cases) = (0usize, Vec::new(), 0usize);
    for (file, suite) in suites() {
        let policy = dir.join(file.replace(".toml", ".l7"));
        std::fs::write(&policy, &suite.policy).expect("policy written");
        if let Err(reason) = generator_compiles(&policy) {
            eprintln!("SKIPPED {file} on the kernel engine ({} cases): {reason}", suite.cases.len());
            skipped_cases += suite.cases.len();
            continue;
        }
        let mut loaded = if every_run_through_the_cli { None } else { Some(load_engine(&policy)) };
        for (number, case) in suite.cases.iter().enumerate() {
            let input = case.bytes();
            let stated = case.split.clone().unwrap_or_default();
            let reference = without_engine(eval(&policy, case, &input, &stated));
            let seed = (number as u64) << 32 | input.len() as u64;
            let mut splits = vec![stated];
            splits.extend(random_splits(input.len(), seed, RANDOM_SPLITS));
            let mut agreed = true;
            for (attempt, split) in splits.into_iter().enumerate() {
                // The stated split goes through `l7c eval --engine kernel`;
                // the random ones through the same engine loaded once (a
                // load per run would take minutes), unless asked otherwise.
                let kernel = match loaded.as_mut() {
                    Some(engine) if attempt > 0 => match engine.run(connection_of(case), &case.bind, &input, &split) {
                        Ok(outcome) => serde_json::to_value(outcome.to_json("kernel")).expect("JSON"),
                        Err(error) => {
                            failures.push(format!("{file} `{}` split {split:?}: the kernel engine failed: {error}", case.name));
                            agreed = false;
                            break;
                        }
                    },
                    _ => {
                        let output = eval_on("kernel", &policy, case, &input, &split);
                        if !output.status.success() {
                            failures.push(format!(
                                "{file} `{}` split {split:?}: l7c eval --engine kernel exited {:?}: {}",
                                case.name,
                                output.status.code(),
                                String::from_utf8_lossy(&output.stderr)
                            ));
                            agreed = false;
                            break;
                        }
                        serde_json::from_slice(&output.stdout).expect("l7c eval prints JSON")
                    }
                };
                runs += 1;
                assert_eq!(kernel["engine"], "kernel");
                let kernel = without_engine(kernel);
                if kernel != reference {
                    failures.push(format!(
                        "{file} `{}` split {split:?}: the kernel engine printed {kernel}, the reference engine {reference}",
                        case.name
                    ));
                    agreed = false;
                    break;
                }
            }
            if agreed {
                passed.push(format!("{file} `{}`", case.name));
            }
        }
    }
    println!(
        "conformance (kernel): {} cases agree with the reference engine, {} failed, {skipped_cases} skipped; {runs} kernel runs (stated splits through `l7c eval --engine kernel`)",
        passed.len(),
        failures.len()
    );
    for case in &passed {
        println!("  agrees: {case}");
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn copies_match_shared_conformance() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    if !shared.is_dir() {
        eprintln!("SKIPPED: ../shared/conformance is not beside this checkout; cannot compare the copies");
        return;
    }
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(&shared).expect("readable shared dir") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name() else { continue };
        let ours = conformance_dir().join(name);
        if std::fs::read(&path).ok() != std::fs::read(&ours).ok() {
            stale.push(name.to_string_lossy().into_owned());
        }
    }
    assert!(stale.is_empty(), "tests/conformance is out of date with shared/conformance: {stale:?}; copy them in");
}
