//! Checks of single matchers: the values they hold (methods, header names,
//! path patterns, host names, field values) and empty lists.
//!
//! The errors here are matchers that can never hold for the reason given,
//! judged against the request a rule actually sees: a head that passed
//! every check of language.md §7, whose path is canonical (decoded once,
//! with no `.`/`..`/empty segments and no `;`, `\` or control bytes) and
//! whose field values are trimmed. The warnings are patterns that do hold
//! but rarely mean what they say. Every diagnostic's span is the matcher
//! (values from a `let` have no span of their own); its message names the
//! value.

use super::paths;
use crate::diagnostic::{codes, Diagnostic, Diagnostics};
use crate::http::{is_sub_delim, is_tchar, is_unreserved};
use crate::model::{Action, Condition, ConditionKind, HeaderTest, PathOp, Rule};
use crate::source::Span;

/// Check every matcher of a rule, nested ones included.
pub(crate) fn check_rule(rule: &Rule, out: &mut Diagnostics) {
    // A rule that lets bytes through: for the prefix-bleed lint,
    // over-matching matters where it lets more through.
    let permissive = !matches!(rule.action, Action::Deny);
    for condition in &rule.conditions {
        check_condition(condition, permissive, false, out);
    }
    if let Action::Redirect { target, .. } = &rule.action {
        if target.is_empty() {
            out.push(
                Diagnostic::error(codes::BAD_REDIRECT, rule.span, format!("rule `{}` redirects to an empty target name", rule.name))
                    .with_label("redirects to `\"\"`")
                    .with_help("name the target the runtime binds, as in `redirect \"envoy\"` with `l7c run --redirect envoy=HOST:PORT`"),
            );
        }
    }
}

fn check_condition(condition: &Condition, permissive: bool, negated: bool, out: &mut Diagnostics) {
    let span = condition.span;
    match &condition.kind {
        ConditionKind::Method(methods) => {
            empty_list(methods.is_empty(), "method", negated, span, out);
            for method in methods {
                check_method(method, span, out);
            }
        }
        ConditionKind::Path { op, patterns } => {
            empty_list(patterns.is_empty(), &format!("path {}", op.keyword()), negated, span, out);
            // Over-matching lets more through in a permissive rule, or under
            // a `not` in a deny rule.
            let bleed_matters = permissive != negated;
            for pattern in patterns {
                check_path(*op, pattern, bleed_matters, span, out);
            }
        }
        ConditionKind::Header { name, test } => {
            check_header_name(name, span, out);
            if let HeaderTest::Value { op, values, .. } = test {
                empty_list(values.is_empty(), &format!("header {} {}", show(name.as_bytes()), op.keyword()), negated, span, out);
                for value in values {
                    check_field_value(*op, value, span, out);
                }
            }
        }
        ConditionKind::Host { op, values } => {
            let keyword = match op {
                crate::model::HostOp::Exact => "host exact",
                crate::model::HostOp::Suffix => "host suffix",
            };
            empty_list(values.is_empty(), keyword, negated, span, out);
            for value in values {
                check_host(value, span, out);
            }
        }
        ConditionKind::Any(group) => {
            if group.is_empty() {
                let label = if negated { "no matchers: the `not` around it always holds" } else { "no matchers: never holds" };
                out.push(
                    Diagnostic::error(codes::EMPTY_LIST, span, "`any` with no matchers")
                        .with_label(label)
                        .with_help("`any` holds when one of its matchers does; add matchers, or remove it"),
                );
            }
            for inner in group {
                check_condition(inner, permissive, negated, out);
            }
        }
        ConditionKind::Not(inner) => check_condition(inner, permissive, !negated, out),
    }
}

fn empty_list(is_empty: bool, matcher: &str, negated: bool, span: Span, out: &mut Diagnostics) {
    if !is_empty {
        return;
    }
    let label = if negated { "the list is empty, so the `not` around it always holds" } else { "the list is empty, so this never holds" };
    out.push(
        Diagnostic::error(codes::EMPTY_LIST, span, format!("`{matcher}` with an empty list"))
            .with_label(label)
            .with_help("a matcher holds when one of its values does; add values, or remove the matcher (check the `let`s it names)"),
    );
}

/// The IANA HTTP Method Registry (RFC 9110 §16.1; the reserved `*` is not
/// a method): the names the method-case lint knows, and the bare names a
/// `method` matcher takes without `unknown-method`.
pub(crate) const REGISTERED_METHODS: &[&str] = &[
    "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LABEL",
    "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "OPTIONS",
    "ORDERPATCH", "PATCH", "POST", "PRI", "PROPFIND", "PROPPATCH", "PUT", "QUERY", "REBIND", "REPORT", "SEARCH",
    "TRACE", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL",
];

fn check_method(method: &[u8], span: Span, out: &mut Diagnostics) {
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        let message = if method.is_empty() { "an empty method".to_string() } else { format!("method {} is not a token", show(method)) };
        out.push(
            Diagnostic::error(codes::BAD_METHOD, span, message)
                .with_label("no request can have this method")
                .with_help("a method is letters, digits and the symbols `!#$%&'*+-.^_|~`, such as `GET` or `\"M-SEARCH\"`; requests with other bytes there are refused as `malformed:method`"),
        );
        return;
    }
    let upper = method.to_ascii_uppercase();
    if upper != method && REGISTERED_METHODS.iter().any(|known| known.as_bytes() == upper.as_slice()) {
        out.push(
            Diagnostic::warning(codes::METHOD_CASE, span, format!("method {} does not match {}", show(method), show(&upper)))
                .with_label("methods are case-sensitive")
                .with_help(format!("write {} (RFC 9110 methods are case-sensitive and the standard ones are upper case)", show(&upper))),
        );
    }
}

fn check_header_name(name: &str, span: Span, out: &mut Diagnostics) {
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(|&b| is_tchar(b)) {
        let message = if bytes.is_empty() { "an empty header name".to_string() } else { format!("header name {} is not a token", show(bytes)) };
        out.push(
            Diagnostic::error(codes::BAD_HEADER_NAME, span, message)
                .with_label("no field line can have this name")
                .with_help("a field name is letters, digits and the symbols `!#$%&'*+-.^_|~` (no spaces, no `:`); requests with other names are refused as `malformed:header-syntax`"),
        );
        return;
    }
    if bytes.iter().any(u8::is_ascii_uppercase) {
        out.push(
            Diagnostic::error(codes::BAD_HEADER_NAME, span, format!("header name {} is not lowercase", show(bytes)))
                .with_label("written with upper case")
                .with_help(format!("header names are case-insensitive and written in lowercase: `{}`", name.to_ascii_lowercase())),
        );
    }
}

/// One problem with a path pattern.
struct Finding {
    code: &'static str,
    error: bool,
    label: String,
    help: String,
}

fn check_path(op: PathOp, pattern: &[u8], bleed_matters: bool, span: Span, out: &mut Diagnostics) {
    let findings = path_findings(op, pattern, bleed_matters);
    // An unmatchable pattern needs no further advice.
    let first_error = findings.iter().position(|f| f.error);
    let selected: Vec<&Finding> = match first_error.and_then(|i| findings.get(i)) {
        Some(error) => vec![error],
        None => findings.iter().collect(),
    };
    for finding in selected {
        let message = match finding.code {
            codes::UNMATCHABLE_PATH => format!("path pattern {} can never match", show(pattern)),
            codes::BAD_GLOB => format!("glob {} uses `**` inside a segment", show(pattern)),
            codes::EMPTY_PATTERN => format!("an empty `{}` pattern matches every path", op.keyword()),
            codes::PREFIX_BLEED => format!("`starts_with` pattern {} bleeds into sibling segments", show(pattern)),
            codes::LITERAL_WILDCARD => format!("`*` in a `{}` pattern is a literal byte, not a wildcard", op.keyword()),
            codes::QUERY_IN_PATH => format!("path pattern {} holds a query or fragment delimiter", show(pattern)),
            _ => format!("path pattern {} holds a percent escape", show(pattern)),
        };
        let diagnostic = if finding.error {
            Diagnostic::error(finding.code, span, message)
        } else {
            Diagnostic::warning(finding.code, span, message)
        };
        out.push(diagnostic.with_label(finding.label.clone()).with_help(finding.help.clone()));
    }
}

/// Everything worth saying about one path pattern, errors first in the
/// order a reader would fix them.
fn path_findings(op: PathOp, pattern: &[u8], bleed_matters: bool) -> Vec<Finding> {
    let mut found = Vec::new();
    let error = |label: String, help: String| Finding { code: codes::UNMATCHABLE_PATH, error: true, label, help };

    if pattern.is_empty() {
        found.push(match op {
            PathOp::Exact | PathOp::Glob => {
                error("an empty path".into(), "every path starts with `/`; write `\"/\"` for the root".into())
            }
            _ => Finding {
                code: codes::EMPTY_PATTERN,
                error: false,
                label: "empty pattern".into(),
                help: "remove the `path` matcher to match every path, or write the pattern meant".into(),
            },
        });
        return found;
    }
    if pattern == b"*" {
        if op != PathOp::Exact && op != PathOp::Suffix {
            found.push(error(
                "`*` is only the target of `OPTIONS *`".into(),
                "match it with `path exact \"*\"`".into(),
            ));
        }
        return found;
    }
    let rooted = matches!(op, PathOp::Exact | PathOp::Prefix | PathOp::StartsWith | PathOp::Glob);
    if rooted && pattern.first() != Some(&b'/') {
        found.push(error(
            "does not start with `/`".into(),
            format!("the canonical path always starts with `/`: write {}", show(&[b"/", pattern].concat())),
        ));
    }
    if let Some(&byte) = pattern.iter().find(|&&b| b == b';' || b == b'\\' || b < 0x20 || b == 0x7f) {
        found.push(if byte == b';' {
            error(
                "`;` is refused in paths".into(),
                "requests with `;` in the path (raw or `%3B`) are denied as `malformed:path-traversal` before any rule; remove it".into(),
            )
        } else {
            error(
                format!("{} is refused in paths", show(&[byte])),
                "`\\`, control bytes and DEL are refused in paths, raw or encoded (`malformed:target`, `malformed:path-encoding`); remove it".into(),
            )
        });
    }
    let escapes = percent_escapes(pattern);
    if escapes.iter().any(|&(_, decoded)| decoded == b'/') {
        found.push(error(
            "`%2F` is an encoded `/`".into(),
            "requests with an encoded slash are refused as `malformed:path-encoding`; patterns are compared with the decoded path, so write `/`".into(),
        ));
    }
    if let Some(segment) = bad_segment(op, pattern) {
        let suggestion = normalized(op, pattern).map(|n| format!("; to match the path it resolves to, write {}", show(&n))).unwrap_or_default();
        found.push(match segment {
            BadSegment::Empty => error(
                "`//` is an empty segment".into(),
                format!("requests with empty segments are refused as `malformed:path-traversal` before any rule, so no rule needs to match one{suggestion}"),
            ),
            BadSegment::Dot(dots) => error(
                format!("`{dots}` is a dot segment"),
                format!("requests with `.` or `..` segments are refused as `malformed:path-traversal` before any rule, so no rule needs to match one{suggestion}"),
            ),
        });
    }
    if op == PathOp::Glob && !paths::glob_is_well_formed(pattern) {
        found.push(Finding {
            code: codes::BAD_GLOB,
            error: true,
            label: "`**` must be a whole segment".into(),
            help: "`**` matches whole segments (`/a/**/b`); use `*` for bytes within a segment (`/a/*.css`)".into(),
        });
    }

    // Warnings: patterns that match, but probably not what was meant.
    if op != PathOp::Glob && pattern.contains(&b'*') {
        let glob = if rooted { pattern.to_vec() } else { [b"/**/", pattern].concat() };
        found.push(Finding {
            code: codes::LITERAL_WILDCARD,
            error: false,
            label: "matches only a literal `*`".into(),
            help: format!("for a wildcard, use `path glob {}`", literal(&glob)),
        });
    }
    if let Some(&delimiter) = pattern.iter().find(|&&b| b == b'?' || b == b'#') {
        let cut = pattern.split(|&b| b == b'?' || b == b'#').next().unwrap_or_default();
        let (label, encoded) = if delimiter == b'?' {
            ("the query is never part of the path", "%3F")
        } else {
            ("a fragment is never sent", "%23")
        };
        let advice = if cut.is_empty() { String::new() } else { format!("; match the path alone: {}", show(cut)) };
        found.push(Finding {
            code: codes::QUERY_IN_PATH,
            error: false,
            label: label.into(),
            help: format!("the path ends before the first `?`, so this matches only a path that encodes the byte as `{encoded}`{advice}"),
        });
    }
    if let Some(&(at, _)) = escapes.iter().find(|&&(_, decoded)| decoded != b'/') {
        let escape = String::from_utf8_lossy(pattern.get(at..at + 3).unwrap_or_default()).into_owned();
        let decoded = decode(pattern);
        found.push(Finding {
            code: codes::ENCODED_PATH,
            error: false,
            label: format!("`{escape}` is compared literally with the decoded path"),
            help: format!(
                "paths are percent-decoded once before matching, so this matches only a request that sent `%25{}`; write the decoded bytes: {}",
                escape.get(1..).unwrap_or_default(),
                show(&decoded)
            ),
        });
    }
    if op == PathOp::StartsWith && bleed_matters && pattern.first() == Some(&b'/') && pattern.last() != Some(&b'/') {
        let shown = String::from_utf8_lossy(pattern).into_owned();
        found.push(Finding {
            code: codes::PREFIX_BLEED,
            error: false,
            label: format!("also matches `{shown}x`, `{shown}-old`, ..."),
            help: format!("use `path prefix {}` to match it and the paths below it, or end the pattern with `/`", literal(pattern)),
        });
    }
    found
}

enum BadSegment {
    Empty,
    Dot(&'static str),
}

/// A `//`, `.` or `..` segment that the pattern forces into every path it
/// matches. The first segment of a `suffix` and the last of a
/// `starts_with` may be longer in the path, so they are not judged alone.
fn bad_segment(op: PathOp, pattern: &[u8]) -> Option<BadSegment> {
    let segments: Vec<&[u8]> = pattern.split(|&b| b == b'/').collect();
    let count = segments.len();
    for (index, segment) in segments.iter().enumerate() {
        // The first segment is what precedes a leading `/` (the root), the
        // incomplete end of a segment before a `suffix`, or the start of a
        // pattern missing its `/` (reported on its own).
        if index == 0 {
            continue;
        }
        let last = index + 1 == count;
        let open_end = last && op == PathOp::StartsWith;
        match *segment {
            b"" if !last => return Some(BadSegment::Empty),
            b"." if !open_end => return Some(BadSegment::Dot(".")),
            b".." if !open_end => return Some(BadSegment::Dot("..")),
            _ => {}
        }
    }
    None
}

/// The pattern with empty and dot segments resolved, when that gives a
/// different, rooted pattern worth suggesting.
fn normalized(op: PathOp, pattern: &[u8]) -> Option<Vec<u8>> {
    if !matches!(op, PathOp::Exact | PathOp::Prefix | PathOp::Glob) || pattern.first() != Some(&b'/') {
        return None;
    }
    let segments: Vec<&[u8]> = pattern.split(|&b| b == b'/').skip(1).collect();
    let trailing_slash = pattern.len() > 1 && pattern.last() == Some(&b'/');
    let mut kept: Vec<&[u8]> = Vec::new();
    for segment in segments {
        match segment {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let mut out = Vec::new();
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    (out != pattern).then_some(out)
}

/// The `%HH` escapes of a pattern: offset and decoded byte.
fn percent_escapes(pattern: &[u8]) -> Vec<(usize, u8)> {
    let mut escapes = Vec::new();
    for (at, window) in pattern.windows(3).enumerate() {
        if let [b'%', high, low] = window {
            if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() {
                escapes.push((at, crate::http::hex_value(*high) * 16 + crate::http::hex_value(*low)));
            }
        }
    }
    escapes
}

/// Percent-decode once (as the canonical path is).
fn decode(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut index = 0;
    while let Some(&byte) = pattern.get(index) {
        if let (b'%', Some(&high), Some(&low)) = (byte, pattern.get(index + 1), pattern.get(index + 2)) {
            if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() {
                out.push(crate::http::hex_value(high) * 16 + crate::http::hex_value(low));
                index += 3;
                continue;
            }
        }
        out.push(byte);
        index += 1;
    }
    out
}

/// A `host` value compares with the Host field's host (lowercase, without
/// port and one trailing dot, not decoded): a reg-name, an IPv4 address
/// or a bracketed IP literal.
fn check_host(value: &[u8], span: Span, out: &mut Diagnostics) {
    let allowed = |b: u8| is_unreserved(b) || is_sub_delim(b) || matches!(b, b'%' | b'[' | b']' | b':');
    let problem = if let Some(&byte) = value.iter().find(|&&b| !allowed(b)) {
        Some((
            format!("{} cannot appear in a host", show(&[byte])),
            "write only the host name, such as `api.example.com` (no scheme, path or user)".to_string(),
        ))
    } else if value.contains(&b':') && value.last() != Some(&b']') {
        let host = value.split(|&b| b == b':').next().unwrap_or_default();
        Some((
            "the port is not part of the compared host".to_string(),
            format!("`host` compares the Host value without its port: write {} (to select a port, use `scope`)", show(host)),
        ))
    } else {
        None
    };
    if let Some((label, help)) = problem {
        out.push(
            Diagnostic::error(codes::UNMATCHABLE_HOST, span, format!("host {} can never match", show(value)))
                .with_label(label)
                .with_help(help),
        );
    }
}

/// A field value is compared trimmed of SP and HTAB, and holds no control
/// bytes other than HTAB (language.md §5, §7).
fn check_field_value(op: crate::model::ValueOp, value: &[u8], span: Span, out: &mut Diagnostics) {
    use crate::model::ValueOp;
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let leading = matches!(op, ValueOp::Exact | ValueOp::Prefix) && value.first().is_some_and(is_ows);
    let trailing = matches!(op, ValueOp::Exact | ValueOp::Suffix) && value.last().is_some_and(is_ows);
    let problem = if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        Some((
            "a control byte cannot appear in a field value".to_string(),
            "requests with control bytes in a field value are refused as `malformed:header-syntax` (CR and LF as `malformed:line-ending`); remove it".to_string(),
        ))
    } else if leading || trailing {
        let trimmed: Vec<u8> = {
            let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
            let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
            value.get(start..end).unwrap_or_default().to_vec()
        };
        Some((
            "field values are compared without surrounding whitespace".to_string(),
            format!("write {}", show(&trimmed)),
        ))
    } else {
        None
    };
    if let Some((label, help)) = problem {
        out.push(
            Diagnostic::error(codes::UNMATCHABLE_VALUE, span, format!("header value {} can never match", show(value)))
                .with_label(label)
                .with_help(help),
        );
    }
}

/// User bytes in backticks, escaping what is not printable.
pub(crate) fn show(bytes: &[u8]) -> String {
    crate::text::code(bytes)
}

/// User bytes as a `.l7` string literal, to quote in a help text.
fn literal(bytes: &[u8]) -> String {
    crate::text::string_literal(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathOp::*;

    fn codes_of(op: PathOp, pattern: &str) -> Vec<&'static str> {
        path_findings(op, pattern.as_bytes(), true).iter().map(|f| f.code).collect()
    }

    #[test]
    fn unmatchable_paths() {
        for (op, pattern) in [
            (Exact, "/a//b"),
            (Prefix, "/a/./b"),
            (Exact, "/a/../b"),
            (Prefix, "/a/."),
            (Exact, "/a/.."),
            (Suffix, "/a/.."),
            (Suffix, "x//"),
            (Exact, "/a%2Fb"),
            (StartsWith, "/a%2fb"),
            (Prefix, "/a;b"),
            (Exact, "/a\\b"),
            (Exact, "api"),
            (StartsWith, "api"),
            (Glob, "a/*"),
            (Exact, ""),
            (Prefix, "*"),
            (Glob, "/a/./*"),
            (StartsWith, "/a/../b"),
        ] {
            assert_eq!(codes_of(op, pattern).first(), Some(&codes::UNMATCHABLE_PATH), "{op:?} {pattern}");
        }
    }

    #[test]
    fn matchable_paths() {
        for (op, pattern) in [
            (Exact, "/"),
            (Exact, "/a/"),
            (Exact, "*"),
            (Exact, "/admin "),
            (StartsWith, "/.well"),
            (StartsWith, "/a/."),
            (StartsWith, "/a/.."),
            (Suffix, ".."),
            (Suffix, "../x"),
            (Suffix, "/"),
            (Suffix, ".pdf"),
            (Glob, "/static/**/*.css"),
            (Glob, "/**"),
            (Prefix, "/api/"),
            (Exact, "/caf\u{e9}"),
        ] {
            assert!(!path_findings(op, pattern.as_bytes(), true).iter().any(|f| f.error), "{op:?} {pattern}");
        }
    }

    #[test]
    fn globs_and_warnings() {
        assert_eq!(codes_of(Glob, "/a**"), vec![codes::BAD_GLOB]);
        assert_eq!(codes_of(Glob, "/a/***"), vec![codes::BAD_GLOB]);
        assert_eq!(codes_of(StartsWith, "/pub"), vec![codes::PREFIX_BLEED]);
        assert!(codes_of(StartsWith, "/pub/").is_empty());
        assert!(path_findings(StartsWith, b"/.git", false).is_empty());
        assert_eq!(codes_of(Prefix, "/api/*"), vec![codes::LITERAL_WILDCARD]);
        assert_eq!(codes_of(Exact, "/search?q=1"), vec![codes::QUERY_IN_PATH]);
        assert_eq!(codes_of(Exact, "/%61dmin"), vec![codes::ENCODED_PATH]);
        assert_eq!(codes_of(Prefix, ""), vec![codes::EMPTY_PATTERN]);
    }

    #[test]
    fn normalizing_suggestions() {
        assert_eq!(normalized(Exact, b"/a//b"), Some(b"/a/b".to_vec()));
        assert_eq!(normalized(Prefix, b"/a/./b/"), Some(b"/a/b/".to_vec()));
        assert_eq!(normalized(Exact, b"/a/.."), Some(b"/".to_vec()));
        assert_eq!(normalized(Exact, b"/a"), None);
    }
}
