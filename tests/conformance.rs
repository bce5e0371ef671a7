//! The shared conformance cases (tests/conformance/*.toml, copied from
//! shared/conformance/) run through the `l7c eval` binary: each case with its
//! stated split, then under 20 random splits that must print the very same
//! JSON. The server's answers (`answers`, `l7c eval --answers`) make a
//! switch and the answer to a deny depend on when they arrive, so the
//! random splits keep the stated split's boundaries where that matters and
//! add none there (`testing::Timing`, from the reference engine's JSON of
//! the stated split; cli.md). The reference engine runs them everywhere; the kernel engine runs
//! them as root (each case, stated split and 20 random splits, must print
//! exactly the reference engine's JSON), and reports `SKIPPED` with the
//! reason when it cannot: not root, or a policy the code generator refuses
//! (listed once per policy, with the generator's error). The stated split
//! runs through `l7c eval --engine kernel`; the random splits run through the
//! same engine with the policy loaded once (`L7C_CONFORMANCE_ALL_CLI=1` sends
//! every run through the binary instead, loading the program each time).
//!
//! The cases the engines do not implement yet are listed in
//! tests/conformance/PENDING.toml (read by `pending`, shared with the
//! compiler's runners): they run too, each still-failing one is reported as
//! `SKIPPED pending (issue N): ...`, and one that passes fails the test, so
//! the list cannot go stale.

mod pending;

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
    /// The server's status for each request (`l7c eval --answers`).
    answers: Option<Vec<u16>>,
    /// How the case's deny is answered: a status, or `"reset"`.
    answer: Option<Answer>,
}

/// A case's `answer`: `403`, or `"reset"` (no answer: `send()` fails).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Answer {
    Status(u16),
    Word(String),
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
    pending::case_files(&conformance_dir())
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable suite");
            let suite: Suite = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap_or_default().to_string_lossy().into_owned(), suite)
        })
        .collect()
}

/// Run `l7c eval --engine ENGINE` on one input; the JSON it printed, or why
/// it printed none (a policy it refuses, a flag it does not know yet).
fn run(engine: &str, policy: &Path, case: &Case, input: &[u8], split: &[usize]) -> Result<serde_json::Value, String> {
    let output = eval_on(engine, policy, case, input, split);
    if !output.status.success() {
        return Err(format!(
            "l7c eval --engine {engine} (split {split:?}) exited {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("l7c eval prints JSON");
    assert_eq!(json["engine"], engine);
    Ok(json)
}

/// Whether the front end compiles a case file's policy (`Err`: its error).
fn front_end_compiles(file: &str, suite: &Suite) -> Result<(), String> {
    pending::compiles(file, &suite.policy)
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
    if let Some(answers) = &case.answers {
        let statuses: Vec<String> = answers.iter().map(u16::to_string).collect();
        command.arg("--answers").arg(statuses.join(","));
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("l7c runs");
    // A usage error (a flag this l7c does not know yet) exits before reading
    // the input; its exit status and message say so, not the broken pipe.
    if let Err(error) = child.stdin.take().expect("piped stdin").write_all(input) {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "input written");
    }
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

/// Whether an engine's JSON gives what the case expects: the verdicts, the
/// bytes delivered, and the deny's answer (README.md of the cases).
fn meets_expectations(case: &Case, json: &serde_json::Value) -> Result<(), String> {
    let got = verdicts_of(json);
    let holds = got.len() == case.expect.len() && case.expect.iter().zip(&got).all(|(e, g)| expectation_holds(e, g));
    if !holds {
        return Err(format!("expected {:?}, got {got:?}", case.expect));
    }
    if let Some(delivered) = case.delivered {
        if json["delivered"] != delivered {
            return Err(format!("expected {delivered} bytes delivered, got {}", json["delivered"]));
        }
    }
    let Some(answer) = &case.answer else { return Ok(()) };
    let deny = json["verdicts"].as_array().and_then(|verdicts| verdicts.iter().rev().find(|v| v["action"] == "deny"));
    let Some(deny) = deny else { return Err(format!("expected a deny answered {answer:?}, got no deny")) };
    let holds = match answer {
        Answer::Status(status) => deny["answer"]["status"] == *status,
        Answer::Word(word) if word == "reset" => deny.get("answer").is_some_and(|a| a.is_null()) && deny["fallback"] == "reset",
        Answer::Word(word) => panic!("case `{}`: answer {word:?} is neither a status nor \"reset\"", case.name),
    };
    if !holds {
        return Err(format!(
            "expected the deny answered {answer:?}, got answer {} and fallback {}",
            deny.get("answer").map_or("(absent)".to_string(), |a| a.to_string()),
            deny["fallback"]
        ));
    }
    Ok(())
}

/// `count` random splits of `input`, each keeping the stated split's
/// boundaries where the timing of the server's answers matters (from
/// `reference`, the reference engine's JSON of the stated split).
fn random_splits(input: &[u8], stated: &[usize], reference: &serde_json::Value, seed: u64, count: usize) -> Vec<Vec<usize>> {
    let len = input.len();
    let timing = timing_of(input, reference);
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
            timing.keep(stated, &sizes, len)
        })
        .collect()
}

/// Where the answers' timing matters, from eval's JSON.
fn timing_of(input: &[u8], json: &serde_json::Value) -> l7c_compiler::testing::Timing {
    use l7c_compiler::model::VerdictAction;
    let verdicts = json["verdicts"].as_array().map(Vec::as_slice).unwrap_or_default();
    l7c_compiler::testing::Timing::from_verdicts(
        input,
        verdicts.iter().map(|v| l7c_compiler::testing::TimedVerdict {
            start: v["start"].as_u64().expect("start"),
            end: v["end"].as_u64().expect("end"),
            action: match v["action"].as_str() {
                Some("allow") => VerdictAction::Allow,
                Some("deny") => VerdictAction::Deny,
                Some("redirect") => VerdictAction::Redirect,
                Some("tunnel") => VerdictAction::Tunnel,
                other => panic!("an unknown action {other:?}"),
            },
            opaque: v["reason"] == "opaque",
            answered: v.get("answer").is_some(),
        }),
    )
}

/// What the loopback server answers for this case.
fn answers_of(case: &Case) -> l7c_compiler::verdict::ServerAnswers {
    match &case.answers {
        Some(answers) => l7c_compiler::verdict::ServerAnswers::Listed(answers.clone()),
        None => l7c_compiler::verdict::ServerAnswers::Agreeing,
    }
}

/// One case on the reference engine: its stated split meets the
/// expectations, and 20 random splits print the very same JSON.
fn reference_case(policy: &Path, case: &Case, seed: u64, runs: &mut usize) -> Result<(), String> {
    let input = case.bytes();
    let stated = case.split.clone().unwrap_or_default();
    let json = run("ref", policy, case, &input, &stated)?;
    *runs += 1;
    meets_expectations(case, &json)?;
    for split in random_splits(&input, &stated, &json, seed, RANDOM_SPLITS) {
        let other = run("ref", policy, case, &input, &split)?;
        *runs += 1;
        if other != json {
            return Err(format!("split {split:?} printed {other}, the stated split printed {json}"));
        }
    }
    Ok(())
}

#[test]
fn conformance_cases_through_the_reference_engine() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pending = pending::Pending::read(&conformance_dir());
    let mut ledger = pending.cases_on("ref");
    let mut failures = Vec::new();
    let mut runs = 0usize;
    let mut cases = 0usize;
    for (file, suite) in suites() {
        match ledger.policy(&file, suite.cases.len(), front_end_compiles(&file, &suite)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        }
        let policy = dir.join(file.replace(".toml", ".l7"));
        std::fs::write(&policy, &suite.policy).expect("policy written");
        for (number, case) in suite.cases.iter().enumerate() {
            cases += 1;
            let seed = (number as u64) << 32 | case.bytes().len() as u64;
            let result = reference_case(&policy, case, seed, &mut runs).map_err(|e| format!("{file} `{}`: {e}", case.name));
            if let Err(failure) = ledger.case(&file, &case.name, result) {
                failures.push(failure);
            }
        }
    }
    let met = ledger.met();
    failures.extend(ledger.finish());
    println!("conformance (ref): {cases} cases, {runs} runs of l7c eval, {met} entries of PENDING.toml still pending");
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
    let connection = l7c_compiler::model::ConnectionInfo {
        remote_port: case.remote_port.unwrap_or(default.remote_port),
        local_port: case.local_port.unwrap_or(default.local_port),
        ..default
    };
    connection.with_remote_addr(case.remote_addr.as_deref().map_or(default.remote_addr, |a| a.parse().expect("remote_addr is an IP")))
}

/// The JSON without its `engine` field (the one field that names the engine).
fn without_engine(mut json: serde_json::Value) -> serde_json::Value {
    if let Some(object) = json.as_object_mut() {
        object.remove("engine");
    }
    json
}

/// One case on the kernel engine: its stated split (through `l7c eval
/// --engine kernel`) meets the expectations, and it and 20 random splits
/// print exactly the reference engine's JSON of the stated split (which
/// also says where the random splits keep the stated boundaries). The
/// random splits run on `loaded` when given (the policy loaded once, told
/// the case's answers).
fn kernel_case(
    policy: &Path,
    loaded: Option<&mut l7c_runtime::engine::KernelEngine>,
    case: &Case,
    seed: u64,
    runs: &mut usize,
) -> Result<(), String> {
    let input = case.bytes();
    let stated = case.split.clone().unwrap_or_default();
    let reference = run("ref", policy, case, &input, &stated)?;
    let mut splits = vec![stated.clone()];
    splits.extend(random_splits(&input, &stated, &reference, seed, RANDOM_SPLITS));
    let reference = without_engine(reference);
    let mut loaded = loaded;
    if let Some(engine) = loaded.as_deref_mut() {
        engine.set_answers(answers_of(case));
    }
    for (attempt, split) in splits.into_iter().enumerate() {
        // The stated split goes through `l7c eval --engine kernel`; the
        // random ones through the same engine loaded once (a load per run
        // would take minutes), unless asked otherwise.
        let kernel = match loaded.as_deref_mut() {
            Some(engine) if attempt > 0 => {
                let outcome = engine
                    .run(connection_of(case), &case.bind, &input, &split)
                    .map_err(|error| format!("split {split:?}: the kernel engine failed: {error}"))?;
                serde_json::to_value(outcome.to_json("kernel")).expect("JSON")
            }
            _ => run("kernel", policy, case, &input, &split)?,
        };
        *runs += 1;
        assert_eq!(kernel["engine"], "kernel");
        let kernel = without_engine(kernel);
        if attempt == 0 {
            meets_expectations(case, &kernel).map_err(|failure| format!("the kernel engine: {failure}"))?;
        }
        if kernel != reference {
            return Err(format!("split {split:?}: the kernel engine printed {kernel}, the reference engine {reference}"));
        }
    }
    Ok(())
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
    let pending = pending::Pending::read(&conformance_dir());
    let mut ledger = pending.cases_on("kernel");
    let mut failures = Vec::new();
    let (mut runs, mut passed, mut skipped_cases) = (0usize, Vec::new(), 0usize);
    for (file, suite) in suites() {
        match ledger.policy(&file, suite.cases.len(), front_end_compiles(&file, &suite)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        }
        let policy = dir.join(file.replace(".toml", ".l7"));
        std::fs::write(&policy, &suite.policy).expect("policy written");
        if let Err(reason) = generator_compiles(&policy) {
            eprintln!("SKIPPED {file} on the kernel engine ({} cases): {reason}", suite.cases.len());
            skipped_cases += suite.cases.len();
            continue;
        }
        let mut loaded = if every_run_through_the_cli { None } else { Some(load_engine(&policy)) };
        for (number, case) in suite.cases.iter().enumerate() {
            let seed = (number as u64) << 32 | case.bytes().len() as u64;
            let result = kernel_case(&policy, loaded.as_mut(), case, seed, &mut runs).map_err(|e| format!("{file} `{}`: {e}", case.name));
            let agreed = result.is_ok();
            match ledger.case(&file, &case.name, result) {
                Err(failure) => failures.push(failure),
                Ok(()) if agreed => passed.push(format!("{file} `{}`", case.name)),
                Ok(()) => {}
            }
        }
    }
    let met = ledger.met();
    failures.extend(ledger.finish());
    println!(
        "conformance (kernel): {} cases agree with the reference engine, {} failed, {skipped_cases} skipped, {met} entries of PENDING.toml still pending; {runs} kernel runs (stated splits through `l7c eval --engine kernel`)",
        passed.len(),
        failures.len()
    );
    for case in &passed {
        println!("  agrees: {case}");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The files of tests/conformance/ that are the repository's own, not
/// copies: the list of pending cases.
const REPOSITORY_ONLY: [&str; 1] = [pending::FILE_NAME];

#[test]
fn copies_match_shared_conformance() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    if !shared.is_dir() {
        eprintln!("SKIPPED: ../shared/conformance is not beside this checkout; cannot compare the copies");
        return;
    }
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut stale = Vec::new();
    for name in names(&shared) {
        if std::fs::read(shared.join(&name)).ok() != std::fs::read(conformance_dir().join(&name)).ok() {
            stale.push(name);
        }
    }
    assert!(stale.is_empty(), "tests/conformance is out of date with shared/conformance: {stale:?}; copy them in");
    // A file the shared cases no longer have would keep running here.
    let extra: Vec<String> = names(&conformance_dir())
        .into_iter()
        .filter(|name| !shared.join(name).exists() && !REPOSITORY_ONLY.contains(&name.as_str()))
        .collect();
    assert!(extra.is_empty(), "tests/conformance has files shared/conformance does not: {extra:?}; remove them");
}
