//! Matchers as byte regexes: one regex per matcher (its list of values is
//! an alternation), to be compiled together into one automaton per input.
//!
//! Every regex here is a *byte* regex, compiled with Unicode and UTF-8
//! disabled, matched anchored at the start of the fed bytes and ending with
//! `$` (the end of the fed bytes). Invariants:
//! - every byte of a user value is written as `\xHH` (or a two-byte class
//!   `[\xHH\xhh]` for an ASCII letter under `nocase`), so no value can
//!   inject regex syntax: `/a.b` never matches `/aXb`;
//! - a regex holds for the fed bytes exactly when the reference meaning
//!   (language.md §5) holds for the request, *given what the scanner feeds*
//!   (stated per function below): trimming, ports and trailing dots are
//!   encoded in the regex, not left to the scanner;
//! - a matcher that can never hold becomes [`NEVER`], an empty byte class.

use crate::model::{HostOp, PathOp, ValueOp};
use std::fmt::Write as _;

/// A regex that matches nothing (an empty class).
pub(crate) const NEVER: &str = r"[^\x00-\xFF]";
/// Any byte.
const ANY: &str = r"[\x00-\xFF]";
/// Any byte but `/`: a glob `*` stays within a segment.
const NOT_SLASH: &str = r"[\x00-\x2E\x30-\xFF]";
/// SP or HTAB: the whitespace a field value is trimmed of.
const WS: &str = r"[\x09\x20]";
/// Any byte but SP and HTAB.
const NOT_WS: &str = r"[\x00-\x08\x0A-\x1F\x21-\xFF]";
/// A byte of a reg-name or IPv4 host: anything but `:`, `[`, `]`, SP, HTAB.
/// (A valid Host value holds only RFC 3986 reg-name bytes there; the class
/// only has to exclude what delimits the host.)
const HOST_BYTE: &str = r"[\x00-\x08\x0A-\x1F\x21-\x39\x3B-\x5A\x5C\x5E-\xFF]";

/// Append one literal byte, escaped; with `nocase`, an ASCII letter matches
/// both cases.
fn push_byte(out: &mut String, byte: u8, nocase: bool) {
    if nocase && byte.is_ascii_alphabetic() {
        let (lower, upper) = (byte.to_ascii_lowercase(), byte.to_ascii_uppercase());
        let _ = write!(out, r"[\x{upper:02X}\x{lower:02X}]");
    } else {
        let _ = write!(out, r"\x{byte:02X}");
    }
}

/// The bytes as a literal regex.
pub(crate) fn literal(bytes: &[u8], nocase: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 4);
    for &byte in bytes {
        push_byte(&mut out, byte, nocase);
    }
    out
}

/// One alternative of a matcher's list: `before body after`. Alternatives
/// with the same `before` and `after` are written as one group,
/// `before(?:body|body…)after`, so a list of `contains` values shares one
/// leading and one trailing loop: written apart, each value's trailing loop
/// is a state of its own and the automaton must track every subset of
/// values already seen (2^n states).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternative {
    before: String,
    body: String,
    after: String,
}

impl Alternative {
    fn new(before: impl Into<String>, body: impl Into<String>, after: impl Into<String>) -> Self {
        Alternative { before: before.into(), body: body.into(), after: after.into() }
    }
}

/// A matcher's regex, anchored at the start of the fed bytes and at their
/// end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatcherRegex {
    pub anchored: String,
    /// When every alternative starts with the loop "any bytes": the regex
    /// without that loop, for an automaton that searches unanchored (whose
    /// start state holds that loop once, for every pattern: with a loop of
    /// its own per pattern, every state would carry all of them, and
    /// determinizing 1,000 of them takes seconds per thousand states).
    pub floating: Option<String>,
    /// When, moreover, every alternative ends with that loop (`contains`):
    /// the regex without either loop and without `$`. Once it matched
    /// somewhere, the pattern holds whatever follows: a sticky lane records
    /// it where its match ends (see `automaton::StickyLane`).
    pub sticky: Option<String>,
}

/// Alternatives joined into one regex anchored at the end. No alternative
/// at all (an empty list, or only values that can never hold) never
/// matches.
fn alternation(alternatives: Vec<Alternative>) -> MatcherRegex {
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for alternative in alternatives {
        match groups.iter_mut().find(|(before, after, _)| *before == alternative.before && *after == alternative.after) {
            Some((_, _, bodies)) => {
                if !bodies.contains(&alternative.body) {
                    bodies.push(alternative.body);
                }
            }
            None => groups.push((alternative.before, alternative.after, vec![alternative.body])),
        }
    }
    if groups.is_empty() {
        return MatcherRegex { anchored: NEVER.to_string(), floating: None, sticky: None };
    }
    let any = format!("{ANY}*");
    let floats = groups.iter().all(|(before, _, _)| *before == any);
    let write = |skip_loop: bool| {
        let written: Vec<String> = groups
            .iter()
            .map(|(before, after, bodies)| {
                let before = if skip_loop { "" } else { before.as_str() };
                format!("{before}(?:{}){after}", bodies.join("|"))
            })
            .collect();
        format!("(?:{})$", written.join("|"))
    };
    let sticks = floats && groups.iter().all(|(_, after, _)| after.ends_with(&any));
    let sticky = sticks.then(|| {
        let written: Vec<String> = groups
            .iter()
            .map(|(_, after, bodies)| {
                let after = after.strip_suffix(&any).unwrap_or(after);
                format!("(?:{}){after}", bodies.join("|"))
            })
            .collect();
        format!("(?:{})", written.join("|"))
    });
    MatcherRegex { anchored: write(false), floating: floats.then(|| write(true)), sticky }
}

/// A method token, case-sensitive. Fed: the method bytes.
pub(crate) fn method(token: &[u8]) -> String {
    format!("{}$", literal(token, false))
}

/// A header name. Fed: the field name, ASCII-lowercased.
pub(crate) fn header_name(name: &[u8]) -> String {
    format!("{}$", literal(&name.to_ascii_lowercase(), false))
}

/// A path matcher. Fed: the canonical path (decoded once; `*` for
/// `OPTIONS *`). CONNECT feeds nothing and keeps the dead state.
pub(crate) fn path(op: PathOp, patterns: &[Vec<u8>]) -> MatcherRegex {
    alternation(patterns.iter().map(|pattern| path_alternative(op, pattern)).collect())
}

fn path_alternative(op: PathOp, pattern: &[u8]) -> Alternative {
    let text = literal(pattern, false);
    let any = format!("{ANY}*");
    match op {
        PathOp::Exact => Alternative::new("", text, ""),
        // Segment-aware: equal, or followed by `/`; a pattern ending in `/`
        // already ends a segment, so anything may follow it.
        PathOp::Prefix if pattern.last() == Some(&b'/') => Alternative::new("", text, any),
        PathOp::Prefix => Alternative::new("", text, format!(r"(?:\x2F{ANY}*)?")),
        PathOp::StartsWith => Alternative::new("", text, any),
        PathOp::Suffix => Alternative::new(any, text, ""),
        PathOp::Glob => Alternative::new("", glob(pattern), ""),
    }
}

/// One element of a glob split at `/`.
#[derive(Debug, PartialEq, Eq)]
enum GlobSegment<'a> {
    /// `**`: zero or more whole segments.
    AnySegments,
    /// A segment whose every `*` is one or more bytes other than `/`.
    Bytes(&'a [u8]),
}

/// A glob over segments. The path is `s0/s1/.../sn`; each pattern segment
/// takes one path segment, except `**`, which takes zero or more. So every
/// segment after the first is written with its leading `/`, and `**` is
/// `(/seg)*`; a leading `**` is `(seg/)*` followed by the rest without its
/// first `/`. Consecutive `**` are one (zero-or-more twice is
/// zero-or-more).
pub(crate) fn glob(pattern: &[u8]) -> String {
    let mut segments: Vec<GlobSegment<'_>> = Vec::new();
    for segment in pattern.split(|&byte| byte == b'/') {
        let element = if segment == b"**" { GlobSegment::AnySegments } else { GlobSegment::Bytes(segment) };
        if element == GlobSegment::AnySegments && segments.last() == Some(&GlobSegment::AnySegments) {
            continue;
        }
        segments.push(element);
    }
    let mut out = String::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment {
            GlobSegment::AnySegments if index == 0 => {
                let _ = write!(out, r"(?:{NOT_SLASH}*\x2F)*");
                // The next segment (if any) starts without its `/`: the
                // `**` either took segments, each with its `/` after it, or
                // none.
            }
            GlobSegment::AnySegments => {
                let _ = write!(out, r"(?:\x2F{NOT_SLASH}*)*");
            }
            GlobSegment::Bytes(bytes) => {
                let after_leading_any = index == 1 && segments.first() == Some(&GlobSegment::AnySegments);
                if index > 0 && !after_leading_any {
                    out.push_str(r"\x2F");
                }
                for &byte in *bytes {
                    if byte == b'*' {
                        let _ = write!(out, "{NOT_SLASH}+");
                    } else {
                        push_byte(&mut out, byte, false);
                    }
                }
            }
        }
    }
    // A glob that is only `**` takes every path, the empty one included;
    // `(seg/)*` alone would need a trailing `/`.
    if segments.len() == 1 && segments.first() == Some(&GlobSegment::AnySegments) {
        out = format!("{ANY}*");
    }
    out
}

fn is_ws(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// A header value matcher. Fed: the field value after its leading SP/HTAB
/// (so the first fed byte, if any, is not whitespace), through its last byte
/// before the line's CR, trailing SP/HTAB included. The regex holds when the
/// trimmed value relates to one of `values` as `op` says.
pub(crate) fn header_value(op: ValueOp, nocase: bool, values: &[Vec<u8>]) -> MatcherRegex {
    alternation(values.iter().filter_map(|value| value_alternative(op, nocase, value)).collect())
}

/// `None`: the value can never hold.
fn value_alternative(op: ValueOp, nocase: bool, value: &[u8]) -> Option<Alternative> {
    let text = literal(value, nocase);
    let starts_ws = value.first().copied().is_some_and(is_ws);
    let ends_ws = value.last().copied().is_some_and(is_ws);
    let any = format!("{ANY}*");
    // Some non-whitespace byte later on: V's trailing whitespace then lies
    // inside the trimmed value. Written "whitespace, then the first other
    // byte" rather than "anything, then such a byte": the same values, but
    // the wait ends at that byte instead of lasting (a sticky lane would
    // otherwise carry every waiting value to the end).
    let then_not_ws = format!("{WS}*{NOT_WS}{ANY}*");
    match op {
        // trimmed == V: V, then the trailing whitespace that trimming drops.
        // A V with whitespace at either end can never equal a trimmed value.
        ValueOp::Exact if starts_ws || ends_ws => None,
        ValueOp::Exact => Some(Alternative::new("", text, format!("{WS}*"))),
        // The trimmed value never starts with whitespace.
        ValueOp::Prefix if starts_ws => None,
        ValueOp::Prefix if ends_ws => Some(Alternative::new("", text, then_not_ws)),
        ValueOp::Prefix => Some(Alternative::new("", text, any)),
        // The trimmed value never ends with whitespace (unless V is empty,
        // which every value ends with).
        ValueOp::Suffix if ends_ws => None,
        ValueOp::Suffix => Some(Alternative::new(any, text, format!("{WS}*"))),
        ValueOp::Contains if ends_ws => Some(Alternative::new(any, text, then_not_ws)),
        ValueOp::Contains => Some(Alternative::new(any.clone(), text, any)),
    }
}

/// A host matcher. Fed: the Host field value like any other field value
/// (see [`header_value`]): after leading SP/HTAB, through its end, port and
/// trailing whitespace included. The scanner has already checked that the
/// value is `uri-host [":" port]` (else `malformed:host`), and the regex
/// relies on it: the compared host is the IP literal with its brackets, or
/// the reg-name/IPv4 host up to the first `:` without one trailing `.`,
/// compared ASCII case-insensitively.
pub(crate) fn host(op: HostOp, values: &[Vec<u8>]) -> MatcherRegex {
    alternation(values.iter().flat_map(|value| host_alternatives(op, &value.to_ascii_lowercase())).collect())
}

/// The ways a host value can hold: as an IP literal, as a reg-name or IPv4
/// address (none when it can never hold).
fn host_alternatives(op: HostOp, value: &[u8]) -> Vec<Alternative> {
    // After the host: an optional port, then the value's trailing whitespace.
    let tail = format!(r"(?:\x3A[\x30-\x39]*)?{WS}*");
    if op == HostOp::Suffix && value.is_empty() {
        return vec![Alternative::new(format!("{ANY}*"), "", "")];
    }
    let is_host_byte = |byte: &u8| !matches!(byte, b':' | b'[' | b']' | b' ' | b'\t');
    let is_literal_byte = |byte: &u8| !matches!(byte, b'[' | b']' | b' ' | b'\t');
    let mut alternatives = Vec::new();

    // The host is an IP literal `[C]`, compared with its brackets.
    let bracketed = value.strip_prefix(b"[").and_then(|inner| inner.strip_suffix(b"]"));
    match bracketed {
        Some(inner) if inner.iter().all(is_literal_byte) => {
            alternatives.push(Alternative::new("", format!(r"\x5B{}\x5D", literal(inner, true)), tail.clone()));
        }
        _ => {
            // `…W]` with no bracket in W: the end of a literal. (A valid
            // Host value holds one `]` at most, at the literal's end, so
            // any bytes may come before W.)
            if let Some(end_of_literal) = value.strip_suffix(b"]") {
                if op == HostOp::Suffix && end_of_literal.iter().all(is_literal_byte) {
                    alternatives.push(Alternative::new(
                        format!("{ANY}*"),
                        literal(end_of_literal, true),
                        format!(r"\x5D{tail}"),
                    ));
                }
            }
        }
    }

    // The host is a reg-name or IPv4 address: compared without one
    // trailing dot, so a V ending in `.` needs a second one on the wire.
    if value.iter().all(is_host_byte) {
        // Before a suffix, any bytes: V holds no `:`, so it cannot reach
        // into the port, and it cannot lie inside the port either unless
        // it is all digits (`80` must not match `a:80`): then only host
        // bytes may come before it.
        let before = match op {
            HostOp::Exact => String::new(),
            HostOp::Suffix if value.iter().all(u8::is_ascii_digit) => format!("{HOST_BYTE}*"),
            HostOp::Suffix => format!("{ANY}*"),
        };
        let dot = if value.last() == Some(&b'.') { r"\x2E" } else { r"\x2E?" };
        alternatives.push(Alternative::new(before, format!("{}{dot}", literal(value, true)), tail));
    }
    alternatives
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_every_byte() {
        assert_eq!(literal(b"/a.b", false), r"\x2F\x61\x2E\x62");
        assert_eq!(literal(b"aZ1", true), r"[\x41\x61][\x5A\x7A]\x31");
        assert_eq!(method(b"GET"), r"\x47\x45\x54$");
    }

    #[test]
    fn glob_shapes() {
        assert_eq!(glob(b"/a/**"), r"\x2F\x61(?:\x2F[\x00-\x2E\x30-\xFF]*)*");
        assert_eq!(glob(b"/a/**/**/b"), r"\x2F\x61(?:\x2F[\x00-\x2E\x30-\xFF]*)*\x2F\x62");
        assert_eq!(glob(b"**"), r"[\x00-\xFF]*");
        assert_eq!(glob(b"**/x"), r"(?:[\x00-\x2E\x30-\xFF]*\x2F)*\x78");
        assert_eq!(glob(b"/*.css"), r"\x2F[\x00-\x2E\x30-\xFF]+\x2E\x63\x73\x73");
    }

    #[test]
    fn never_for_impossible_values() {
        assert_eq!(value_alternative(ValueOp::Exact, false, b" a"), None);
        assert_eq!(value_alternative(ValueOp::Suffix, false, b"a "), None);
        assert!(host_alternatives(HostOp::Exact, b"a:80").is_empty());
        assert_eq!(header_value(ValueOp::Exact, false, &[b" a".to_vec()]).anchored, NEVER);
    }

    #[test]
    fn lists_share_their_loops() {
        let regex = header_value(ValueOp::Contains, true, &[b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(regex.anchored.matches(ANY).count(), 2, "{regex:?}");
        // Floating: the automaton searches unanchored, without the loop.
        assert_eq!(regex.floating.as_deref().map(|r| r.matches(ANY).count()), Some(1));
        assert_eq!(path(PathOp::Exact, &[b"/a".to_vec()]).floating, None);
    }
}
