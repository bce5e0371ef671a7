//! The layout the docs describe is the layout there is (issue 11, "one
//! fact in one place"): every path `docs/architecture.md` names exists,
//! every module of the compiler, the runtime and the commands is named
//! there, and the seam between the executable spec and the back end holds
//! (no back-end or runtime module imports the reference evaluator).
//! Plain file reads: no root, no kernel.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md")
}

/// The `backticked` words of `text` that look like paths.
fn paths_in(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            !word.contains(' ')
                && !word.contains('*')
                && !word.starts_with('.')
                && (word.ends_with('/') || [".rs", ".md", ".sh", ".toml", ".l7"].iter().any(|ext| word.ends_with(ext)))
        })
        .map(str::to_owned)
        .collect()
}

/// Every file below `dir` (recursively), skipping build output.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            if path.is_dir() {
                out.push(path.clone());
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Whether `word` (a path, or a bare file name a row mentions) is there:
/// from the repository root, from `shared/`'s place beside it, or as a
/// file of that name below one of the row's folders.
fn exists(word: &str, row_dirs: &[PathBuf], all: &[PathBuf]) -> bool {
    let trimmed = word.trim_end_matches('/');
    if root().join(trimmed).exists() {
        return true;
    }
    if let Some(shared) = trimmed.strip_prefix("shared/") {
        let beside = root().join("../shared");
        return !beside.is_dir() || beside.join(shared).exists();
    }
    let name = Path::new(trimmed);
    let within = |dir: &PathBuf| all.iter().any(|path| path.starts_with(dir) && path.ends_with(name));
    if row_dirs.is_empty() {
        all.iter().any(|path| path.ends_with(name))
    } else {
        row_dirs.iter().any(within)
    }
}

#[test]
fn every_path_the_architecture_names_exists() {
    let text = architecture();
    let all = files_below(&root());
    let mut missing = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        let (first, rest) = match cells.as_slice() {
            [_, first, rest @ ..] if line.starts_with('|') => (*first, rest.join("|")),
            _ => ("", line.to_owned()),
        };
        let row_dirs: Vec<PathBuf> = paths_in(first)
            .iter()
            .map(|p| root().join(p.trim_end_matches('/')))
            .map(|p| if p.is_dir() { p } else { p.parent().map(Path::to_path_buf).unwrap_or(p) })
            .collect();
        for word in paths_in(first).into_iter().chain(paths_in(&rest)) {
            if !exists(&word, &row_dirs, &all) {
                missing.push(format!("`{word}` in: {}", line.trim()));
            }
        }
    }
    assert!(missing.is_empty(), "docs/architecture.md names paths that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn every_module_is_on_the_map() {
    let text = architecture();
    let mut unnamed = Vec::new();
    for dir in ["compiler/src", "runtime/src", "src/commands", "bpf/src", "abi/src"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "lib.rs" || name == "mod.rs" || name == "snapshots" || name == "main.rs" {
                continue;
            }
            let shown = if entry.path().is_dir() { format!("{name}/") } else { name.clone() };
            if !text.contains(&format!("`{shown}`")) && !text.contains(&format!("{dir}/{shown}`")) && !text.contains(&format!("`{dir}/{name}")) {
                unnamed.push(format!("{dir}/{shown}"));
            }
        }
    }
    assert!(unnamed.is_empty(), "modules docs/architecture.md does not name: {unnamed:?}");
}

/// The kernel side compiles against the shared vocabulary (`verdict.rs`,
/// `http.rs`, `model.rs`), never against the executable spec (`eval`):
/// no module of the back end or the runtime imports it.
#[test]
fn no_back_end_or_runtime_module_imports_the_reference_evaluator() {
    let mut offenders = Vec::new();
    let back_end = ["abi/src", "bpf/src", "compiler/src/lower", "compiler/src/scan", "compiler/src/codegen", "runtime/src"];
    for place in back_end {
        let path = root().join(place);
        let files = if path.is_dir() { files_below(&path) } else { vec![path] };
        for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("crate::eval") || code.contains("l7c_compiler::eval") {
                    offenders.push(format!("{}:{}: {}", file.strip_prefix(root()).unwrap().display(), number + 1, line.trim()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "the back end and the runtime must not import `eval` (use `verdict`):\n{}", offenders.join("\n"));
}

/// One registry of diagnostic codes: every code an error type declares
/// (`code("...")` in a `#[diagnostic]`) is in `diagnostic::codes`, in one
/// spelling (kebab-case after `l7::stage::`), and every engine code has a
/// row in docs/diagnostics.md (the front end's codes are checked with
/// their examples in compiler/tests/check_report.rs).
#[test]
fn every_diagnostic_code_is_registered_spelled_once_and_documented() {
    use l7c_compiler::diagnostic::codes;
    let registered: Vec<&str> = codes::every().collect();
    let mut problems = Vec::new();
    for code in &registered {
        let name = code.rsplit("::").next().unwrap_or_default();
        if !code.starts_with("l7::") || name.contains('_') || name.chars().any(|c| c.is_ascii_uppercase()) {
            problems.push(format!("`{code}` is not spelled `l7::stage::kebab-case`"));
        }
    }
    let docs = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap();
    for code in codes::ENGINE {
        if !docs.contains(&format!("| `{code}`")) && !docs.contains(&format!("`{code}` |")) && !docs.contains(&format!(", `{code}`")) {
            problems.push(format!("`{code}` has no row in docs/diagnostics.md"));
        }
    }
    for dir in ["compiler/src", "runtime/src", "src", "abi/src", "bpf/src"] {
        for file in files_below(&root().join(dir)).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for declared in text.split("code(").skip(1) {
                let Some(code) = declared.strip_prefix('"').and_then(|rest| rest.split('"').next()) else {
                    if declared.starts_with("l7::") {
                        problems.push(format!("{}: a code written as a path (`code(l7::...)`): write it as a string from `diagnostic::codes`", file.display()));
                    }
                    continue;
                };
                if code.starts_with("l7::") && !registered.contains(&code) {
                    problems.push(format!("{}: `{code}` is not in diagnostic::codes", file.display()));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for code in &registered {
        if !seen.insert(code) {
            problems.push(format!("`{code}` is registered twice"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The runtime builds on what the programs and user space agree on
/// (`l7c-abi`) and on the BPF toolkit (`l7c-bpf`), not on the compiler:
/// the compiler is only a dev-dependency of its tests. And `l7c-bpf`
/// knows no policy: it depends on no other crate of the workspace.
#[test]
fn the_runtime_and_the_bpf_toolkit_do_not_depend_on_the_compiler() {
    let dependencies = |crate_dir: &str| -> String {
        let text = std::fs::read_to_string(root().join(crate_dir).join("Cargo.toml")).unwrap();
        let section = text.split("[dependencies]").nth(1).unwrap_or_default();
        section.split("\n[").next().unwrap_or_default().to_owned()
    };
    let runtime = dependencies("runtime");
    assert!(!runtime.contains("l7c-compiler"), "runtime/Cargo.toml [dependencies]:\n{runtime}");
    assert!(runtime.contains("l7c-abi") && runtime.contains("l7c-bpf"), "{runtime}");
    let bpf = dependencies("bpf");
    assert!(!bpf.contains("l7c-"), "bpf/Cargo.toml [dependencies]:\n{bpf}");
    let abi = dependencies("abi");
    assert!(!abi.contains("l7c-compiler") && !abi.contains("l7c-runtime"), "abi/Cargo.toml [dependencies]:\n{abi}");
}
