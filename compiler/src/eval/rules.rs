//! Matchers (language.md §5) and the first-match rule walk (§3, §6).
//!
//! Invariants: a [`Request`] is built only from a head that passed every
//! check of §7, including `duplicate-header`, so a value matcher's header
//! occurs at most once; evaluation reads the request and never allocates
//! unless a trace is asked for (`l7c explain`).

use super::authority::host_for_matching;
use super::head::{HeadView, TargetForm};
use super::path::path_matches;
use crate::model::{Condition, ConditionKind, HeaderTest, HostOp, Rule, ValueOp};
use std::fmt::Write as _;

/// What the matchers look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub head: HeadView<'a, 'a>,
    /// The canonical path; `None` for CONNECT (no path matcher holds).
    pub path: Option<&'a [u8]>,
    /// The Host value as matched: lowercase, without port and one trailing
    /// dot; `None` without a Host field (no host matcher holds).
    pub host: Option<&'a [u8]>,
}

/// Fill `host_out` with the matchable form of the head's Host value.
pub(crate) fn matchable_host(head: &HeadView<'_, '_>, host_out: &mut Vec<u8>) -> bool {
    host_out.clear();
    match head.single_value(b"host") {
        Some(value) => {
            host_out.extend(host_for_matching(value).iter().map(u8::to_ascii_lowercase));
            true
        }
        None => false,
    }
}

/// The canonical path as matchers see it: the decoded path of an
/// origin-form target, `*` for `OPTIONS *`, nothing for CONNECT.
pub(crate) fn path_form(head: &HeadView<'_, '_>) -> PathForm {
    match head.form() {
        TargetForm::Origin => PathForm::Decoded,
        TargetForm::Asterisk => PathForm::Asterisk,
        TargetForm::Authority => PathForm::None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathForm {
    Decoded,
    Asterisk,
    None,
}

/// The first rule whose conditions all hold, if any. With `trace`, every
/// rule tried and every condition is described in it.
pub(crate) fn first_match<'r>(rules: &'r [Rule], request: &Request<'_>, mut trace: Option<&mut String>) -> Option<&'r Rule> {
    for rule in rules {
        if let Some(out) = trace.as_deref_mut() {
            let _ = writeln!(out, "  rule {:?}:", rule.name);
        }
        let mut all_hold = true;
        for condition in &rule.conditions {
            let holds = condition_holds(condition, request, trace.as_deref_mut(), 2);
            if !holds {
                all_hold = false;
                break;
            }
        }
        if let Some(out) = trace.as_deref_mut() {
            if rule.conditions.is_empty() {
                let _ = writeln!(out, "    (no conditions: holds)");
            }
            let _ = writeln!(out, "    => {}", if all_hold { "matches" } else { "does not match" });
        }
        if all_hold {
            return Some(rule);
        }
    }
    None
}

fn condition_holds(condition: &Condition, request: &Request<'_>, mut trace: Option<&mut String>, depth: usize) -> bool {
    let (holds, why) = match &condition.kind {
        ConditionKind::Method(methods) => {
            let method = request.head.method();
            let holds = methods.iter().any(|candidate| candidate.as_slice() == method);
            (holds, trace.is_some().then(|| format!("method {} in {}", show(method), show_list(methods))))
        }
        ConditionKind::Path { op, patterns } => match request.path {
            None => (false, trace.is_some().then(|| "no path (CONNECT): no path matcher holds".to_string())),
            Some(path) => {
                let holds = patterns.iter().any(|pattern| path_matches(*op, pattern, path));
                (holds, trace.is_some().then(|| format!("path {} {} {}", show(path), op.keyword(), show_list(patterns))))
            }
        },
        ConditionKind::Header { name, test } => header_holds(request, name.as_bytes(), test, trace.is_some()),
        ConditionKind::Host { op, values } => match request.host {
            None => (false, trace.is_some().then(|| "no Host field: no host matcher holds".to_string())),
            Some(host) => {
                let holds = values.iter().any(|value| match op {
                    HostOp::Exact => host.eq_ignore_ascii_case(value),
                    HostOp::Suffix => ends_with(host, value, true),
                });
                let op_name = match op {
                    HostOp::Exact => "exact",
                    HostOp::Suffix => "suffix",
                };
                (holds, trace.is_some().then(|| format!("host {} {} {}", show(host), op_name, show_list(values))))
            }
        },
        ConditionKind::Any(group) => {
            if let Some(out) = trace.as_deref_mut() {
                let _ = writeln!(out, "{}any {{", indent(depth));
            }
            let mut holds = false;
            for inner in group {
                if condition_holds(inner, request, trace.as_deref_mut(), depth + 1) {
                    holds = true;
                    break;
                }
            }
            (holds, trace.is_some().then(|| "} (one of the group must hold)".to_string()))
        }
        ConditionKind::Not(inner) => {
            if let Some(out) = trace.as_deref_mut() {
                let _ = writeln!(out, "{}not {{", indent(depth));
            }
            let holds = !condition_holds(inner, request, trace.as_deref_mut(), depth + 1);
            (holds, trace.is_some().then(|| "} (negated)".to_string()))
        }
    };
    if let (Some(out), Some(why)) = (trace, why) {
        let _ = writeln!(out, "{}{}: {}", indent(depth), why, if holds { "holds" } else { "fails" });
    }
    holds
}

fn header_holds(request: &Request<'_>, name: &[u8], test: &HeaderTest, traced: bool) -> (bool, Option<String>) {
    // Only built for a trace: the hot path must not allocate.
    let shown_name = || String::from_utf8_lossy(name).into_owned();
    match test {
        HeaderTest::Present => {
            let holds = request.head.count_of(name) > 0;
            (holds, traced.then(|| format!("header {:?} present", shown_name())))
        }
        HeaderTest::Absent => {
            let holds = request.head.count_of(name) == 0;
            (holds, traced.then(|| format!("header {:?} absent", shown_name())))
        }
        HeaderTest::Value { op, nocase, values } => {
            // At most one such field: duplicates were refused before.
            let Some(value) = request.head.values_of(name).next() else {
                return (false, traced.then(|| format!("header {:?} {}: the field is missing", shown_name(), op.keyword())));
            };
            let holds = values.iter().any(|expected| value_holds(*op, *nocase, value, expected));
            let case = if *nocase { " nocase" } else { "" };
            (
                holds,
                traced.then(|| format!("header {:?} value {} {}{case} {}", shown_name(), show(value), op.keyword(), show_list(values))),
            )
        }
    }
}

fn value_holds(op: ValueOp, nocase: bool, value: &[u8], expected: &[u8]) -> bool {
    match op {
        ValueOp::Exact => {
            if nocase {
                value.eq_ignore_ascii_case(expected)
            } else {
                value == expected
            }
        }
        ValueOp::Prefix => value.get(..expected.len()).is_some_and(|start| bytes_eq(start, expected, nocase)),
        ValueOp::Suffix => ends_with(value, expected, nocase),
        ValueOp::Contains => {
            // `windows(0)` would panic: an empty needle is contained in anything.
            expected.is_empty() || value.windows(expected.len()).any(|window| bytes_eq(window, expected, nocase))
        }
    }
}

fn ends_with(value: &[u8], expected: &[u8], nocase: bool) -> bool {
    // `checked_sub` guards the slice: it starts inside `value`.
    match value.len().checked_sub(expected.len()) {
        Some(start) => bytes_eq(value.get(start..).unwrap_or_default(), expected, nocase),
        None => false,
    }
}

fn bytes_eq(a: &[u8], b: &[u8], nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn indent(depth: usize) -> String {
    "  ".repeat(depth)
}

/// Bytes as a quoted string, escaping what is not printable.
pub(crate) fn show(bytes: &[u8]) -> String {
    crate::text::string_literal(bytes)
}

fn show_list(values: &[Vec<u8>]) -> String {
    match values {
        [single] => show(single),
        _ => format!("[{}]", values.iter().map(|value| show(value)).collect::<Vec<_>>().join(", ")),
    }
}
