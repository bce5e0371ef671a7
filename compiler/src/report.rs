//! Diagnostic output in the three formats of `l7c check --format`:
//!
//! - [`human`]: each diagnostic drawn by miette's graphical handler without
//!   colour (stable in tests and CI logs): file, line and column, the source
//!   line underlined with its label, the code, the help; then a summary
//!   line such as `2 errors, 1 warning`.
//! - [`json`]: one object for scripts; the shape is documented in
//!   docs/diagnostics.md and only ever extended.
//! - [`sarif`]: SARIF 2.1.0, one run, for code-scanning services (GitHub
//!   shows each result inline on the policy file).
//!
//! Lines and columns are 1-based, columns count characters (Unicode
//! scalar values), and an end position is exclusive (the character after
//! the span), as SARIF's `endColumn` is.

use crate::diagnostic::{codes, Diagnostics, Severity};
use crate::source::{Sources, Span};
use serde_json::{json, Map, Value};

/// The version of the [`json`] shape; raised only if a field changes
/// meaning (new fields do not raise it).
pub const JSON_VERSION: u32 = 1;

/// The SARIF schema [`sarif`] follows.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The one way diagnostics are drawn for people: no colour (stable in
/// tests and CI logs), no wrapping, no terminal links.
fn handler() -> miette::GraphicalReportHandler {
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_wrap_lines(false)
        .with_links(false)
}

/// Any miette diagnostic (a code generator or kernel error) drawn like
/// `check`'s own.
pub fn render(diagnostic: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    if handler().render_report(&mut out, diagnostic).is_err() {
        // Writing to a String cannot fail; keep a plain line all the same.
        out = format!("error: {diagnostic}\n");
    }
    out
}

/// Every diagnostic drawn for a person, then the summary line.
pub fn human(diagnostics: &Diagnostics, sources: &Sources) -> String {
    let handler = handler();
    let mut out = String::new();
    for diagnostic in diagnostics.iter() {
        let rendered = diagnostic.render(sources);
        if handler.render_report(&mut out, &rendered).is_err() {
            // The handler only fails if writing to the String fails, which
            // it cannot; keep the one-line form as a fallback all the same.
            out.push_str(&diagnostic.one_line(sources));
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&summary(diagnostics));
    out.push('\n');
    out
}

/// `2 errors, 1 warning` (with `, 1 note` when there are notes).
pub fn summary(diagnostics: &Diagnostics) -> String {
    let count = |severity: Severity| diagnostics.iter().filter(|d| d.severity == severity).count();
    let plural = |n: usize, word: &str| if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") };
    let mut line = format!("{}, {}", plural(count(Severity::Error), "error"), plural(count(Severity::Warning), "warning"));
    let notes = count(Severity::Note);
    if notes > 0 {
        line.push_str(&format!(", {}", plural(notes, "note")));
    }
    line
}

/// The diagnostics as one JSON object (shape: docs/diagnostics.md).
pub fn json(diagnostics: &Diagnostics, sources: &Sources) -> Value {
    let count = |severity: Severity| diagnostics.iter().filter(|d| d.severity == severity).count();
    let items: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let mut item = Map::new();
            item.insert("code".into(), json!(d.code));
            item.insert("severity".into(), json!(d.severity.name()));
            item.insert("message".into(), json!(d.message));
            item.extend(location(sources, d.span));
            item.insert("label".into(), json!(d.label));
            item.insert("help".into(), json!(d.help));
            let related: Vec<Value> = d
                .related
                .iter()
                .map(|(span, label)| {
                    let mut place = location(sources, *span);
                    place.insert("label".into(), json!(label));
                    Value::Object(place)
                })
                .collect();
            item.insert("related".into(), Value::Array(related));
            Value::Object(item)
        })
        .collect();
    json!({
        "version": JSON_VERSION,
        "diagnostics": items,
        "summary": {
            "errors": count(Severity::Error),
            "warnings": count(Severity::Warning),
            "notes": count(Severity::Note),
        },
    })
}

/// `file`, `line`, `column`, `end_line`, `end_column`, `start`, `end`
/// (byte offsets) of a span.
fn location(sources: &Sources, span: Span) -> Map<String, Value> {
    let (line, column) = sources.line_col(span.file, span.start);
    let (end_line, end_column) = sources.line_col(span.file, span.end);
    let mut map = Map::new();
    map.insert("file".into(), json!(sources.get(span.file).name));
    map.insert("line".into(), json!(line));
    map.insert("column".into(), json!(column));
    map.insert("end_line".into(), json!(end_line));
    map.insert("end_column".into(), json!(end_column));
    map.insert("start".into(), json!(span.start));
    map.insert("end".into(), json!(span.end));
    map
}

/// The diagnostics as a SARIF 2.1.0 log with one run.
pub fn sarif(diagnostics: &Diagnostics, sources: &Sources) -> Value {
    // One reportingDescriptor per code used, in order of first use;
    // results point at theirs by index.
    let mut used: Vec<&'static str> = Vec::new();
    for d in diagnostics.iter() {
        if !used.contains(&d.code) {
            used.push(d.code);
        }
    }
    let rules: Vec<Value> = used.iter().map(|code| reporting_descriptor(code)).collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let rule_index = used.iter().position(|code| *code == d.code).unwrap_or(0);
            let mut text = d.message.clone();
            if let Some(help) = &d.help {
                text.push_str("\nhelp: ");
                text.push_str(help);
            }
            let related: Vec<Value> = d
                .related
                .iter()
                .enumerate()
                .map(|(id, (span, label))| {
                    json!({
                        "id": id,
                        "physicalLocation": physical_location(sources, *span),
                        "message": { "text": label },
                    })
                })
                .collect();
            let mut location = json!({ "physicalLocation": physical_location(sources, d.span) });
            if let (Some(label), Some(object)) = (&d.label, location.as_object_mut()) {
                object.insert("message".into(), json!({ "text": label }));
            }
            let mut result = json!({
                "ruleId": d.code,
                "ruleIndex": rule_index,
                "level": level(d.severity),
                "message": { "text": text },
                "locations": [location],
            });
            if let (false, Some(object)) = (related.is_empty(), result.as_object_mut()) {
                object.insert("relatedLocations".into(), Value::Array(related));
            }
            result
        })
        .collect();
    let mut driver = json!({
        "name": "l7c",
        "semanticVersion": env!("CARGO_PKG_VERSION"),
        "rules": rules,
    });
    if let (Some(uri), Some(object)) = (information_uri(), driver.as_object_mut()) {
        object.insert("informationUri".into(), json!(uri));
    }
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": driver },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

/// The project's home page, from the package's `repository` field; SARIF
/// makes `informationUri` optional, and it is left out while none is set.
fn information_uri() -> Option<&'static str> {
    Some(env!("CARGO_PKG_REPOSITORY")).filter(|uri| !uri.is_empty())
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn reporting_descriptor(code: &str) -> Value {
    let (summary, help) = describe(code).unwrap_or(("an l7c diagnostic", "see docs/diagnostics.md"));
    let name = code.rsplit("::").next().unwrap_or(code);
    let mut descriptor = json!({
        "id": code,
        "name": name,
        "shortDescription": { "text": summary },
        "help": { "text": help },
    });
    if let (Some(base), Some(object)) = (information_uri(), descriptor.as_object_mut()) {
        let anchor: String = code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        object.insert("helpUri".into(), json!(format!("{base}/blob/main/docs/diagnostics.md#{anchor}")));
    }
    descriptor
}

fn physical_location(sources: &Sources, span: Span) -> Value {
    let file = sources.get(span.file);
    let (start_line, start_column) = sources.line_col(span.file, span.start);
    let (end_line, end_column) = sources.line_col(span.file, span.end);
    json!({
        "artifactLocation": { "uri": artifact_uri(&file.name) },
        "region": {
            "startLine": start_line,
            "startColumn": start_column,
            "endLine": end_line,
            "endColumn": end_column,
        },
    })
}

/// A file name as a URI reference: relative names stay relative (code
/// scanning resolves them against the repository root), absolute paths
/// become `file://` URIs; bytes outside a URI path are percent-encoded.
fn artifact_uri(name: &str) -> String {
    let name = name.replace('\\', "/");
    let mut out = String::with_capacity(name.len());
    let absolute = name.starts_with('/');
    if absolute {
        out.push_str("file://");
    }
    for byte in name.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A one-line summary and the general fix of each code, for SARIF's rule
/// descriptions. docs/diagnostics.md has the full text and examples.
pub fn describe(code: &str) -> Option<(&'static str, &'static str)> {
    let text = match code {
        codes::PARSE => ("the text is not valid `.l7` syntax", "fix the syntax at the position shown"),
        codes::BAD_ESCAPE => ("a string holds an unknown escape", "use `\\\\`, `\\\"`, `\\r`, `\\n`, `\\t` or `\\xHH`"),
        codes::BAD_NUMBER => ("a number does not fit in 64 bits", "write a smaller number"),
        codes::RULE_ACTION => ("a rule without exactly one action, written last", "end each rule with one action"),
        codes::UNCLOSED_DELIMITER => ("a `{` or `[` that is never closed", "add the `}` or `]` where the block or list ends"),
        codes::UNTERMINATED_STRING => ("a string without its closing quote on its line", "end the string with `\"`"),
        codes::IMPORT_NOT_FOUND => ("an import names no file or standard module", "fix the path, relative to the importing file, or the `std/` name"),
        codes::IMPORT_CYCLE => ("files import each other in a cycle", "move the shared `let`s into a file both import"),
        codes::DUPLICATE_NAME => ("a name is defined twice", "rename one of the definitions"),
        codes::UNKNOWN_NAME => ("a name that no `let` defines", "define it, import it, or quote a string"),
        codes::MISSING_IMPORT => ("a list of a standard module that the file does not import", "add the `import` the message names"),
        codes::WRONG_LIST => ("a list used where another kind of value is expected", "use a list of the expected kind"),
        codes::DUPLICATE_SETTING => ("a policy setting is given twice", "keep one"),
        codes::BAD_SETTING => ("a setting with an unknown name or a bad value", "use a known setting with a valid value"),
        codes::BAD_TEST => ("a test block with a bad value", "fix the value in the test"),
        codes::MISSING_DEFAULT => ("a policy without `default`", "add `default deny` or `default allow`"),
        codes::DUPLICATE_POLICY => ("two policies with one name", "rename one policy"),
        codes::DUPLICATE_RULE => ("two rules with one name in a policy", "rename one rule"),
        codes::OVERLAPPING_SCOPES => ("two policies can govern the same connection", "make the scopes disjoint, or merge the policies"),
        codes::BAD_HEADER_NAME => ("a header name that is not a lowercase token", "write the field name in lowercase"),
        codes::UNMATCHABLE_PATH => ("a path pattern no canonical path can match", "write the path as the canonical path reads"),
        codes::BAD_GLOB => ("`**` inside a glob segment", "use `**` only as a whole segment"),
        codes::BAD_METHOD => ("a method that is not a token", "write the method as clients send it"),
        codes::LIMIT_RANGE => ("a limit outside its allowed range", "use a value in range"),
        codes::DENY_WITH_STATUS => ("a `deny_with` status that is not 4xx or 5xx", "use a status from 400 to 599, or `reset`"),
        codes::SHADOWED_RULE => ("a rule that an earlier rule always decides before it", "reorder the rules, or remove the shadowed one"),
        codes::PREFIX_BLEED => ("a raw `starts_with` prefix that also matches sibling segments", "use `path prefix`, or end the pattern with `/`"),
        codes::UNUSED_LET => ("a `let` that nothing uses", "remove it, or use it"),
        codes::EMPTY_LIST => ("a matcher with an empty list, which never holds", "add values, or remove the matcher"),
        codes::EMPTY_PATTERN => ("an empty path pattern that matches every path", "remove the matcher, or write the pattern meant"),
        codes::LITERAL_WILDCARD => ("`*` outside a glob, where it is a literal byte", "use `path glob` for wildcards"),
        codes::QUERY_IN_PATH => ("`?` or `#` in a path pattern, though the path never holds a query or fragment", "match the path alone"),
        codes::ENCODED_PATH => ("a percent escape in a path pattern, compared with the decoded path", "write the decoded bytes"),
        codes::UNMATCHABLE_HOST => ("a `host` value no Host field can match", "write the bare host name, without port or scheme"),
        codes::UNMATCHABLE_VALUE => ("a header value no field value can match", "remove surrounding whitespace or control bytes"),
        codes::METHOD_CASE => ("a lowercase spelling of a standard method", "write the method in upper case"),
        codes::UNKNOWN_METHOD => ("a bare method name that is neither a registered HTTP method nor a list in scope", "correct the name, import the list, or quote the method"),
        codes::BAD_REDIRECT => ("a redirect to an empty target name", "name the target the runtime binds"),
        codes::UNKNOWN_TEST_RULE => ("a test expects a rule that no policy has", "name a rule that exists"),
        codes::KTLS_RECORD_BOUND => (
            "beneath kernel TLS a request head must fit in one TLS record",
            "have clients write each request head in one write",
        ),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Diagnostic;

    #[test]
    fn every_code_is_described() {
        for code in codes::ALL {
            assert!(describe(code).is_some(), "{code} has no description for SARIF");
        }
    }

    #[test]
    fn uris() {
        assert_eq!(artifact_uri("policies/a b.l7"), "policies/a%20b.l7");
        assert_eq!(artifact_uri("/srv/p.l7"), "file:///srv/p.l7");
        assert_eq!(artifact_uri("dir\\p.l7"), "dir/p.l7");
    }

    #[test]
    fn summaries() {
        let mut sources = Sources::new();
        let file = sources.add("a.l7", None, "x");
        let span = Span::new(file, 0, 1);
        let mut diagnostics = Diagnostics::default();
        assert_eq!(summary(&diagnostics), "0 errors, 0 warnings");
        diagnostics.push(Diagnostic::error(codes::PARSE, span, "e"));
        diagnostics.push(Diagnostic::warning(codes::UNUSED_LET, span, "w"));
        diagnostics.push(Diagnostic::warning(codes::UNUSED_LET, span, "w"));
        assert_eq!(summary(&diagnostics), "1 error, 2 warnings");
        diagnostics.push(Diagnostic::note(codes::UNUSED_LET, span, "n"));
        assert_eq!(summary(&diagnostics), "1 error, 2 warnings, 1 note");
    }
}
