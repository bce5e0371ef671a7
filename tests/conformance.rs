//! The shared conformance cases (tests/conformance/*.toml, copied from
//! shared/conformance/) run through the `l7c eval` binary: each case with its
//! stated split, then under 20 random splits that must print the very same
//! JSON. Every engine in this build runs them; an engine that is not in the
//! build is reported as skipped, by name.

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
    let mut command = Command::new(env!("CARGO_BIN_EXE_l7c"));
    command.arg("eval").arg(policy).args(["--engine", "ref", "--input", "-"]);
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
    let output = child.wait_with_output().expect("l7c finishes");
    assert!(
        output.status.success(),
        "case `{}`: l7c eval failed: {}",
        case.name,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("l7c eval prints JSON")
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

#[test]
fn conformance_through_the_kernel_engine() {
    // The kernel engine arrives with the BPF back end; until then the cases
    // cannot run on it, and that must be visible in every test log.
    eprintln!("SKIPPED conformance on the kernel engine: this build has no kernel engine (`l7c eval --engine kernel` exits 2)");
    let status = Command::new(env!("CARGO_BIN_EXE_l7c"))
        .args(["eval", "--engine", "kernel", "examples/payments.l7", "--input", "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("l7c runs");
    assert_eq!(status.code(), Some(2), "the kernel engine must refuse with exit 2 while it is missing");
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
