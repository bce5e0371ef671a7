//! `tests/conformance/PENDING.toml`: the conformance cases an engine does
//! not implement yet, and the one place that reads it. Every runner of the
//! cases includes this file (`mod pending;` here, `#[path =
//! "../../tests/pending/mod.rs"] mod pending;` from compiler/tests/, a
//! different crate), so the list has one reader and one meaning:
//!
//! - a listed case still runs; while it fails, the runner prints
//!   `SKIPPED pending (issue N): FILE `CASE`: REASON` (scripts/test.sh
//!   collects those lines), and when it passes the runner fails: the entry
//!   is stale, remove it;
//! - an entry without `case` is a whole file whose policy does not compile
//!   yet: the runner checks that it still does not, and fails once it does;
//! - an entry that names no case a runner met fails too (a renamed case).
//!
//! The reader knows only the subset of TOML the list uses (`[[pending]]`,
//! `key = "string"`, `key = 12`, `key = ["a", "b"]`, `#` comments), so that
//! l7c-compiler's tests need no TOML dependency; anything else in the file
//! is an error, not ignored.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The list's file name in tests/conformance/. It is not a case file, and
/// it has no counterpart in shared/conformance/.
pub const FILE_NAME: &str = "PENDING.toml";

/// The engines an entry may name.
pub const ENGINES: [&str; 2] = ["ref", "kernel"];

/// tests/conformance/ of this repository, from either crate's manifest
/// directory (the root crate's, or compiler/).
pub fn conformance_dir(manifest_dir: &str) -> PathBuf {
    let manifest = Path::new(manifest_dir);
    let root = if manifest.join("tests/conformance").is_dir() { manifest.to_path_buf() } else { manifest.join("..") };
    root.join("tests/conformance")
}

/// The case files of `dir` (`*.toml` but the pending list), sorted.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .filter(|path| path.file_name().is_some_and(|name| name != FILE_NAME))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "expected the conformance case files in {}, found {}", dir.display(), files.len());
    files
}

/// The policy text of a case file: between `policy = '''` and `'''`,
/// without the newline TOML drops after the opening delimiter.
pub fn policy_of(toml: &str) -> Option<&str> {
    let start = toml.find("policy = '''")? + "policy = '''".len();
    let length = toml.get(start..)?.find("'''")?;
    let text = toml.get(start..start + length)?;
    Some(text.strip_prefix('\n').unwrap_or(text))
}

/// Whether a policy text compiles (parse, resolve, check); `Err`: its
/// first error on one line.
pub fn compiles(name: &str, text: &str) -> Result<(), String> {
    let compilation = l7c_compiler::driver::compile_text(name, text, None);
    match compilation.checked {
        Some(_) if !compilation.diagnostics.has_errors() => Ok(()),
        _ => Err(compilation
            .diagnostics
            .iter()
            .filter(|d| d.severity == l7c_compiler::diagnostic::Severity::Error)
            .map(|d| d.one_line(&compilation.sources))
            .next()
            .unwrap_or_else(|| "no program".into())),
    }
}

/// One entry of the list.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The case file, `revision3.toml`.
    pub file: String,
    /// The case's `name`; `None`: the whole file (its policy does not compile).
    pub case: Option<String>,
    /// Which engines do not pass it yet: `ref`, `kernel` or both.
    pub engines: Vec<String>,
    /// The issue that will make it pass.
    pub issue: u32,
    /// Why it fails, in one line.
    pub reason: String,
}

impl Entry {
    fn label(&self) -> String {
        match &self.case {
            Some(case) => format!("{} `{case}`", self.file),
            None => format!("{} (the whole file)", self.file),
        }
    }

    fn skipped(&self, detail: &str) {
        println!("SKIPPED pending (issue {}): {}: {}{detail}", self.issue, self.label(), self.reason);
    }
}

/// The list as read from tests/conformance/PENDING.toml.
#[derive(Debug, Clone)]
pub struct Pending {
    pub entries: Vec<Entry>,
}

impl Pending {
    /// Read and validate `dir/PENDING.toml`; a malformed list panics.
    pub fn read(dir: &Path) -> Pending {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let entries = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in &entries {
            let at = format!("{}: entry {}", path.display(), entry.label());
            assert!(dir.join(&entry.file).is_file(), "{at}: no such case file");
            assert!(entry.issue > 0, "{at}: no issue");
            assert!(!entry.reason.is_empty() && !entry.reason.contains('\n'), "{at}: the reason is one line");
            assert!(!entry.engines.is_empty(), "{at}: no engine");
            for engine in &entry.engines {
                assert!(ENGINES.contains(&engine.as_str()), "{at}: unknown engine {engine:?} (one of {ENGINES:?})");
            }
            if entry.case.is_none() {
                assert!(entry.engines.len() == ENGINES.len(), "{at}: a policy that does not compile is pending for every engine");
            }
        }
        Pending { entries }
    }

    /// A ledger for a runner of the cases on `engine`: it meets every entry
    /// for that engine, whole files included.
    pub fn cases_on(&self, engine: &str) -> Ledger<'_> {
        assert!(ENGINES.contains(&engine), "unknown engine {engine:?}");
        let entries = self.entries.iter().filter(|e| e.engines.iter().any(|x| x == engine)).collect();
        Ledger::new(entries, Some(engine.to_string()))
    }

    /// A ledger for a runner of the policies only (formatting, lowering,
    /// checks, code generation): it meets the whole-file entries.
    pub fn policies(&self) -> Ledger<'_> {
        Ledger::new(self.entries.iter().filter(|e| e.case.is_none()).collect(), None)
    }
}

/// What one runner met of the list; [`Ledger::finish`] gives the stale
/// entries as failures.
pub struct Ledger<'a> {
    entries: Vec<(&'a Entry, bool)>,
    engine: Option<String>,
}

impl<'a> Ledger<'a> {
    fn new(entries: Vec<&'a Entry>, engine: Option<String>) -> Self {
        Ledger { entries: entries.into_iter().map(|e| (e, false)).collect(), engine }
    }

    fn find(&mut self, file: &str, case: Option<&str>) -> Option<&mut (&'a Entry, bool)> {
        self.entries.iter_mut().find(|(e, _)| e.file == file && e.case.as_deref() == case)
    }

    fn on(&self) -> String {
        self.engine.as_ref().map_or(String::new(), |engine| format!(" on the {engine} engine"))
    }

    /// A case file's policy, its number of cases (0 for a runner of the
    /// policies only) and whether it compiled (`Err`: the compiler's
    /// message). `Ok(true)`: run its cases; `Ok(false)`: it is pending as a
    /// whole and still does not compile (said on stdout); `Err`: a failure
    /// for the runner's list (it compiles now but is listed, or it does not
    /// compile and is not listed).
    pub fn policy(&mut self, file: &str, cases: usize, compiles: Result<(), String>) -> Result<bool, String> {
        match (self.find(file, None), compiles) {
            (None, Ok(())) => Ok(true),
            (None, Err(error)) => Err(format!("{file}: the policy does not compile: {error}")),
            (Some((entry, met)), Err(_)) => {
                *met = true;
                entry.skipped(&match cases {
                    0 => " (the policy does not compile yet)".to_string(),
                    cases => format!(" ({cases} cases not run: the policy does not compile yet)"),
                });
                Ok(false)
            }
            (Some((entry, met)), Ok(())) => {
                *met = true;
                Err(format!(
                    "{file}: the policy compiles now (issue {}): remove its whole-file entry from tests/conformance/{FILE_NAME} and list the cases that still fail",
                    entry.issue
                ))
            }
        }
    }

    /// A case that ran and its result (`Err`: why it failed). `Ok`: nothing
    /// to report (it passed, or it is pending and still fails, said on
    /// stdout); `Err`: a failure for the runner's list (`result`'s own
    /// error when the case is not listed, so the runner names the case in it).
    pub fn case(&mut self, file: &str, case: &str, result: Result<(), String>) -> Result<(), String> {
        let on = self.on();
        match (self.find(file, Some(case)), result) {
            (None, result) => result,
            (Some((entry, met)), Err(_)) => {
                *met = true;
                entry.skipped("");
                Ok(())
            }
            (Some((entry, met)), Ok(())) => {
                *met = true;
                Err(format!("{file} `{case}` passes{on} now (issue {}): remove it from tests/conformance/{FILE_NAME}", entry.issue))
            }
        }
    }

    /// How many entries this runner met (all of them, after a full run).
    pub fn met(&self) -> usize {
        self.entries.iter().filter(|(_, met)| *met).count()
    }

    /// The entries no case or policy matched: each a failure (a case renamed
    /// or removed, or a file this runner never read).
    pub fn finish(self) -> Vec<String> {
        let on = self.on();
        self.entries
            .iter()
            .filter(|(_, met)| !met)
            .map(|(entry, _)| format!("tests/conformance/{FILE_NAME} lists {}{on}, but no such case ran: fix or remove the entry", entry.label()))
            .collect()
    }
}

fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}", number + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[pending]]" {
            entries.push(Entry::default());
            seen.clear();
            continue;
        }
        let entry = entries.last_mut().ok_or_else(|| at("a key before the first [[pending]]".into()))?;
        let (key, value) = line.split_once('=').ok_or_else(|| at(format!("cannot read {line:?}")))?;
        let (key, value) = (key.trim(), value.trim());
        if seen.contains(&key) {
            return Err(at(format!("`{key}` twice in one entry")));
        }
        match key {
            "file" => entry.file = string(value).map_err(at)?,
            "case" => entry.case = Some(string(value).map_err(at)?),
            "engines" => entry.engines = strings(value).map_err(at)?,
            "issue" => entry.issue = value.parse().map_err(|e| at(format!("issue: {e}")))?,
            "reason" => entry.reason = string(value).map_err(at)?,
            other => return Err(at(format!("unknown key `{other}`"))),
        }
        seen.push(key);
    }
    for (index, entry) in entries.iter().enumerate() {
        if entry.file.is_empty() {
            return Err(format!("entry {} has no file", index + 1));
        }
        let twin = entries[..index].iter().any(|e| e.file == entry.file && e.case == entry.case);
        if twin {
            return Err(format!("{} is listed twice", entry.label()));
        }
    }
    Ok(entries)
}

/// A TOML basic string standing alone: `"..."` with `\"` and `\\`.
fn string(value: &str) -> Result<String, String> {
    let (text, rest) = string_prefix(value)?;
    if !rest.trim().is_empty() {
        return Err(format!("unexpected {rest:?} after a string"));
    }
    Ok(text)
}

/// A basic string at the start of `value`, and what follows it.
fn string_prefix(value: &str) -> Result<(String, &str), String> {
    let body = value.strip_prefix('"').ok_or_else(|| format!("expected a string, found {value:?}"))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[index + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => out.push(escaped),
                other => return Err(format!("unsupported escape {other:?} (only \\\" and \\\\)")),
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

/// `["a", "b"]`.
fn strings(value: &str) -> Result<Vec<String>, String> {
    let mut rest = value.strip_prefix('[').ok_or("expected an array")?.trim_start();
    let mut out = Vec::new();
    while !rest.starts_with(']') {
        let (item, after) = string_prefix(rest)?;
        out.push(item);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        if rest.is_empty() {
            return Err("unterminated array".into());
        }
    }
    if !rest[1..].trim().is_empty() {
        return Err(format!("unexpected {:?} after an array", &rest[1..]));
    }
    Ok(out)
}

/// One conformance file's policy, for the runners of policies only.
pub struct CasePolicy {
    /// `basics.toml`.
    pub file: String,
    pub path: PathBuf,
    pub policy: String,
}

/// The policy of every case file under `manifest_dir`'s tests/conformance
/// that compiles, for the runners of the policies only (formatting, checks,
/// lowering, code generation). A file pending as a whole is left out (said
/// on stdout) while its policy still does not compile; any other policy
/// that does not compile, a listed one that compiles, or an entry that
/// names no file fails the calling test.
pub fn compiling_policies(manifest_dir: &str) -> Vec<CasePolicy> {
    let dir = conformance_dir(manifest_dir);
    let list = Pending::read(&dir);
    let mut ledger = list.policies();
    let mut policies = Vec::new();
    let mut failures = Vec::new();
    for path in case_files(&dir) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let policy = policy_of(&text).unwrap_or_else(|| panic!("{file} has no policy"));
        match ledger.policy(&file, 0, compiles(&file, policy)) {
            Ok(true) => policies.push(CasePolicy { file, policy: policy.to_owned(), path }),
            Ok(false) => {}
            Err(failure) => failures.push(failure),
        }
    }
    failures.extend(ledger.finish());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    policies
}
