//! Diagnostics shared by every stage: a stable code, a severity, a message,
//! a primary span with its label, optional related spans, and help.
//!
//! Message style (after Cedar's guide): lowercase, no trailing period, user
//! input in backticks, the fix in `help`. Every code is listed with an
//! example in docs/diagnostics.md; `codes::ALL` is the list tests check that
//! document against.

use crate::source::{Sources, Span};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    /// Advice that never fails a check, even with `--deny-warnings`.
    Note,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    /// What the underline at `span` says.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Other places that explain this one (the earlier rule that shadows, the
    /// first definition of a name).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(code, span, message) }
    }

    pub fn note(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Note, ..Self::error(code, span, message) }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]: {}", self.severity.name(), self.code, self.message)
    }
}

/// A set of diagnostics, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// One diagnostic per (code, place, message): a value reached twice (a
    /// `let` used by two matchers, a value listed twice) is reported once.
    pub fn deduplicated(self) -> Self {
        let mut seen = std::collections::HashSet::new();
        let kept = self
            .0
            .into_iter()
            .filter(|d| seen.insert((d.code, d.span.file, d.span.start, d.span.end, d.message.clone())))
            .collect();
        Diagnostics(kept)
    }

    /// Sorted by file, then position, so output is stable whatever order the
    /// checks ran in.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|d| (d.span.file, d.span.start, d.span.end, d.code));
        self
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

/// The candidate `word` was most likely meant to be, for a "did you mean"
/// help: the one nearest by [`edit_distance`] (case ignored), if it is at
/// most two edits away (one for words of two or three characters, none for
/// one character) and no other candidate is as near. A tie gives nothing:
/// a wrong suggestion is worse than none.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let max_distance = (word.chars().count() / 2).min(2);
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    let mut tied = false;
    for candidate in candidates {
        let distance = edit_distance(&lower, &candidate.to_ascii_lowercase());
        if candidate == word || distance > max_distance {
            continue;
        }
        match best {
            Some((nearest, seen)) if distance == nearest && seen != candidate => tied = true,
            Some((nearest, _)) if distance >= nearest => {}
            _ => {
                best = Some((distance, candidate));
                tied = false;
            }
        }
    }
    best.filter(|_| !tied).map(|(_, candidate)| candidate)
}

/// The Damerau–Levenshtein distance (optimal string alignment): insertions,
/// deletions, substitutions and swaps of two neighbours each count one, so
/// `GTE` is one edit from `GET`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the table: two back (for swaps), one back, this one.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    // Every index below stays within the loops' bounds (`i`, `j` ≥ 1, and
    // ≥ 2 where two back are read).
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j - 1] + cost).min(previous[j] + 1).min(current[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

/// A diagnostic paired with its source, in the shape miette renders.
#[derive(Debug)]
pub struct Rendered {
    code: &'static str,
    severity: miette::Severity,
    message: String,
    help: Option<String>,
    source: miette::NamedSource<String>,
    labels: Vec<miette::LabeledSpan>,
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl miette::Diagnostic for Rendered {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

impl Diagnostic {
    /// Pair this diagnostic with its file's text for miette. Related spans
    /// in other files are not drawn (miette draws one source per report);
    /// their location is appended to the help instead.
    pub fn render(&self, sources: &Sources) -> Rendered {
        let file = sources.get(self.span.file);
        let mut labels = vec![miette::LabeledSpan::new_primary_with_span(self.label.clone(), self.span)];
        let mut help = self.help.clone();
        for (span, label) in &self.related {
            if span.file == self.span.file {
                labels.push(miette::LabeledSpan::new_with_span(Some(label.clone()), *span));
            } else {
                let other = sources.get(span.file);
                let (line, col) = sources.line_col(span.file, span.start);
                let note = format!("{label} at {}:{line}:{col}", other.name);
                help = Some(match help {
                    Some(h) => format!("{h}\n{note}"),
                    None => note,
                });
            }
        }
        Rendered {
            code: self.code,
            severity: match self.severity {
                Severity::Error => miette::Severity::Error,
                Severity::Warning => miette::Severity::Warning,
                Severity::Note => miette::Severity::Advice,
            },
            message: self.message.clone(),
            help,
            source: miette::NamedSource::new(file.name.clone(), file.text.to_string()),
            labels,
        }
    }

    /// `file:line:col: severity[code]: message`, for logs and tests.
    pub fn one_line(&self, sources: &Sources) -> String {
        let (line, col) = sources.line_col(self.span.file, self.span.start);
        format!("{}:{line}:{col}: {self}", sources.get(self.span.file).name)
    }
}

/// Every diagnostic code, in one place and one spelling (kebab-case after
/// the stage). [`codes::ALL`] are the front end's, each documented in
/// docs/diagnostics.md with a `.l7` example that triggers it;
/// [`codes::ENGINE`] are the code generator's (`l7::codegen::*`), the
/// kernel's (`l7::kernel::*`) and `l7c run`'s (`l7::run::*`), reported
/// through `miette`'s derive (whose attributes spell the same strings) and
/// documented in its tables. Tests check both ways: every code here is
/// documented, and every code an error type declares is here
/// (`tests/architecture.rs`).
pub mod codes {
    pub const PARSE: &str = "l7::syntax::parse";
    pub const BAD_ESCAPE: &str = "l7::syntax::bad-escape";
    pub const BAD_NUMBER: &str = "l7::syntax::bad-number";
    pub const RULE_ACTION: &str = "l7::syntax::rule-action";
    pub const UNCLOSED_DELIMITER: &str = "l7::syntax::unclosed-delimiter";
    pub const UNTERMINATED_STRING: &str = "l7::syntax::unterminated-string";

    pub const IMPORT_NOT_FOUND: &str = "l7::resolve::import-not-found";
    pub const IMPORT_CYCLE: &str = "l7::resolve::import-cycle";
    pub const DUPLICATE_NAME: &str = "l7::resolve::duplicate-name";
    pub const UNKNOWN_NAME: &str = "l7::resolve::unknown-name";
    pub const MISSING_IMPORT: &str = "l7::resolve::missing-import";
    pub const WRONG_LIST: &str = "l7::resolve::wrong-list";
    pub const DUPLICATE_SETTING: &str = "l7::resolve::duplicate-setting";
    pub const BAD_SETTING: &str = "l7::resolve::bad-setting";
    pub const BAD_TEST: &str = "l7::resolve::bad-test";

    pub const MISSING_DEFAULT: &str = "l7::check::missing-default";
    pub const KTLS_RECORD_BOUND: &str = "l7::check::ktls-record-bound";
    pub const DUPLICATE_POLICY: &str = "l7::check::duplicate-policy";
    pub const DUPLICATE_RULE: &str = "l7::check::duplicate-rule";
    pub const OVERLAPPING_SCOPES: &str = "l7::check::overlapping-scopes";
    pub const BAD_HEADER_NAME: &str = "l7::check::bad-header-name";
    pub const UNMATCHABLE_PATH: &str = "l7::check::unmatchable-path";
    pub const BAD_GLOB: &str = "l7::check::bad-glob";
    pub const BAD_METHOD: &str = "l7::check::bad-method";
    pub const LIMIT_RANGE: &str = "l7::check::limit-range";
    pub const DENY_WITH_STATUS: &str = "l7::check::deny-with-status";
    pub const SHADOWED_RULE: &str = "l7::check::shadowed-rule";
    pub const PREFIX_BLEED: &str = "l7::check::prefix-bleed";
    pub const UNUSED_LET: &str = "l7::check::unused-let";
    pub const EMPTY_LIST: &str = "l7::check::empty-list";
    pub const EMPTY_PATTERN: &str = "l7::check::empty-pattern";
    pub const LITERAL_WILDCARD: &str = "l7::check::literal-wildcard";
    pub const QUERY_IN_PATH: &str = "l7::check::query-in-path";
    pub const ENCODED_PATH: &str = "l7::check::encoded-path";
    pub const UNMATCHABLE_HOST: &str = "l7::check::unmatchable-host";
    pub const UNMATCHABLE_VALUE: &str = "l7::check::unmatchable-value";
    pub const METHOD_CASE: &str = "l7::check::method-case";
    pub const UNKNOWN_METHOD: &str = "l7::check::unknown-method";
    pub const BAD_REDIRECT: &str = "l7::check::bad-redirect";
    pub const UNKNOWN_TEST_RULE: &str = "l7::check::unknown-test-rule";

    /// The code generator's, the kernel's and `l7c run`'s codes.
    pub const ENGINE: &[&str] = &[
        "l7::codegen::unsupported",
        "l7::codegen::target-kernel",
        "l7::codegen::lower",
        "l7::codegen::too-large",
        "l7::codegen::verifier-budget",
        "l7::codegen::internal",
        "l7::kernel::not-permitted",
        "l7::kernel::verifier",
        "l7::kernel::object",
        "l7::kernel::map-create",
        "l7::kernel::no-program",
        "l7::kernel::no-map",
        "l7::kernel::map-shape",
        "l7::kernel::syscall",
        "l7::kernel::unsupported",
        "l7::kernel::event",
        "l7::kernel::misrouted",
        "l7::kernel::timeout",
        "l7::run::no-cgroup2",
        "l7::run::cgroup-missing",
        "l7::run::not-cgroup2",
        "l7::run::unknown-redirect",
        "l7::run::redirect-connect",
        "l7::run::already-running",
        "l7::run::too-many-generations",
        "l7::run::stale-generation",
        "l7::run::abi",
    ];

    /// Every code: the front end's, then the engine's.
    pub fn every() -> impl Iterator<Item = &'static str> {
        ALL.iter().chain(ENGINE).copied()
    }

    /// The front end's codes.
    pub const ALL: &[&str] = &[
        PARSE,
        BAD_ESCAPE,
        BAD_NUMBER,
        RULE_ACTION,
        UNCLOSED_DELIMITER,
        UNTERMINATED_STRING,
        IMPORT_NOT_FOUND,
        IMPORT_CYCLE,
        DUPLICATE_NAME,
        UNKNOWN_NAME,
        MISSING_IMPORT,
        WRONG_LIST,
        DUPLICATE_SETTING,
        BAD_SETTING,
        BAD_TEST,
        MISSING_DEFAULT,
        KTLS_RECORD_BOUND,
        DUPLICATE_POLICY,
        DUPLICATE_RULE,
        OVERLAPPING_SCOPES,
        BAD_HEADER_NAME,
        UNMATCHABLE_PATH,
        BAD_GLOB,
        BAD_METHOD,
        LIMIT_RANGE,
        DENY_WITH_STATUS,
        SHADOWED_RULE,
        PREFIX_BLEED,
        UNUSED_LET,
        EMPTY_LIST,
        EMPTY_PATTERN,
        LITERAL_WILDCARD,
        QUERY_IN_PATH,
        ENCODED_PATH,
        UNMATCHABLE_HOST,
        UNMATCHABLE_VALUE,
        METHOD_CASE,
        UNKNOWN_METHOD,
        BAD_REDIRECT,
        UNKNOWN_TEST_RULE,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("ADMN", "ADMIN"), 1);
        assert_eq!(edit_distance("GTE", "GET"), 1, "a swap of neighbours is one edit");
        assert_eq!(edit_distance("defualt", "default"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn did_you_mean_only_when_unambiguous() {
        assert_eq!(did_you_mean("GTE", ["GET", "PUT", "POST"]), Some("GET"));
        assert_eq!(did_you_mean("WRITES", ["WRITE", "READ"]), Some("WRITE"));
        assert_eq!(did_you_mean("dny", ["deny", "any"]), None, "two at one edit");
        assert_eq!(did_you_mean("B", ["A"]), None, "one character is too short to guess");
        assert_eq!(did_you_mean("GET", ["GET"]), None, "nothing to suggest for an exact name");
        assert_eq!(did_you_mean("xyz", ["GET"]), None);
    }
}
