//! The front end as one call: read the root files, parse, resolve, check.
//! This is what every command of the CLI starts with.

use crate::check::{self, Checked};
use crate::diagnostic::Diagnostics;
use crate::resolve::{self, DiskReader, FileReader};
use crate::source::Sources;
use std::path::{Path, PathBuf};

/// Everything a compilation produced: the files read (for rendering
/// diagnostics), the checked program when there were no errors, and every
/// diagnostic.
#[derive(Debug)]
pub struct Compilation {
    pub sources: Sources,
    pub checked: Option<Checked>,
    pub diagnostics: Diagnostics,
}

/// A root file that could not be read at all (an I/O error, exit code 2 in
/// the CLI, as opposed to diagnostics about its contents).
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{path}`: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Compile files from disk together (their policies form one program).
pub fn compile_paths(paths: &[PathBuf]) -> Result<Compilation, ReadError> {
    let mut sources = Sources::new();
    let mut roots = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| ReadError { path: path.clone(), source })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        roots.push(sources.add(path.display().to_string(), Some(&absolute), text));
    }
    Ok(compile(sources, &roots, &DiskReader))
}

/// Compile one text (for tests and tools). Relative imports resolve against
/// `dir` when given.
pub fn compile_text(name: &str, text: &str, dir: Option<&Path>) -> Compilation {
    let mut sources = Sources::new();
    let path = dir.map(|d| d.join(name));
    let root = sources.add(name, path.as_deref(), text);
    compile(sources, &[root], &DiskReader)
}

fn compile(mut sources: Sources, roots: &[crate::source::FileId], reader: &dyn FileReader) -> Compilation {
    let resolved = resolve::resolve(&mut sources, roots, reader);
    let mut diagnostics = resolved.diagnostics;
    let checked = match (resolved.program, resolved.partial) {
        (Some(program), _) => {
            let (checked, found) = check::check(program);
            diagnostics.extend(found);
            checked
        }
        // Resolution found errors: check what did resolve all the same, so
        // one run reports every error it can.
        (None, Some((partial, gaps))) => {
            diagnostics.extend(check::check_partial(&partial, &gaps));
            None
        }
        (None, None) => None,
    };
    Compilation { sources, checked, diagnostics: diagnostics.sorted() }
}

/// The fuzz target for the front end: arbitrary bytes (as lossy UTF-8)
/// through parse, resolve and check. Imports are not read from disk: a
/// fuzzer must not open files its input names.
#[doc(hidden)]
pub fn fuzz_parse_check(data: &[u8]) {
    struct NoFiles;
    impl FileReader for NoFiles {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
    let text = String::from_utf8_lossy(data);
    let mut sources = Sources::new();
    let root = sources.add("fuzz.l7", None, text.as_ref());
    let compilation = compile(sources, &[root], &NoFiles);
    // Rendering must not panic either (spans stay inside the text).
    for diagnostic in compilation.diagnostics.iter() {
        let _ = diagnostic.one_line(&compilation.sources);
    }
}
