//! Helpers every test crate of the workspace needs once: where the
//! repository is, its files by extension, TOML basic strings as the
//! conformance cases write inputs, and whether `bpftool` still finds a
//! kernel object. Included by path (`#[path = ".../tests/support/mod.rs"]
//! mod support;`) from the root crate's tests, compiler/tests and
//! runtime/tests, which are different crates, so nothing is copied.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository's root, from any crate's manifest directory.
pub fn repository(manifest_dir: &str) -> PathBuf {
    let manifest = Path::new(manifest_dir);
    let root = manifest
        .ancestors()
        .find(|dir| dir.join("docs/architecture.md").is_file())
        .unwrap_or(manifest)
        .to_path_buf();
    root.canonicalize().unwrap_or(root)
}

/// The files of `dir` ending in `.extension`, sorted by name.
pub fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    found.sort();
    found
}

/// The bytes of a TOML basic string, from after its opening quote to its
/// closing one (escapes `\r \n \t \\ \" \b \f \uXXXX \UXXXXXXXX`).
pub fn toml_basic_string(rest: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).expect("\\u")).expect("char"));
                }
                Some('U') => {
                    let hex: String = chars.by_ref().take(8).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).expect("\\U")).expect("char"));
                }
                other => panic!("unknown escape {other:?}"),
            },
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// Whether `bpftool KIND show id ID` finds the object now.
pub fn bpftool_finds(kind: &str, id: u32) -> bool {
    Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string()])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

/// Whether the object is gone within 10 s: the kernel frees programs and
/// maps after an RCU grace period and in a work queue, so poll a little.
pub fn gone(kind: &str, id: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !bpftool_finds(kind, id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
