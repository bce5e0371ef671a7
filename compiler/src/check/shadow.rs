//! The shadowed-rule lint: a rule that can never decide because every
//! request it matches is matched, and so decided, by an earlier rule
//! (rules are tried in order and the first match decides, language.md §3).
//!
//! Invariant: the analysis is sound and conservative. [`shadowing`]
//! answers `true` only when it has proved, for every request, that the
//! later rule's conditions imply the earlier rule's; anything it cannot
//! prove (most `not`s, combinations of conditions, unusual globs) counts as
//! "might differ", so a warning is never wrong, though some shadowed rules
//! go unreported.
//!
//! Conditions are read as formulas over a request. A `not` of
//! `header N present` is `header N absent` and the other way round, and a
//! double `not` cancels; value matchers imply `present`; a `method`,
//! `path`, `host` or header value matcher holds when one of its values
//! does, so a matcher implies another when each of its values is covered by
//! one of the other's.

use super::paths;
use crate::model::{Condition, ConditionKind, HeaderTest, HostOp, PathOp, Rule, ValueOp};

/// A condition in the shape the implication rules need.
#[derive(Debug)]
enum Formula<'a> {
    Method(&'a [Vec<u8>]),
    Path(PathOp, &'a [Vec<u8>]),
    /// `header N present` (names compared lowercase).
    Present(String),
    Value { name: String, op: ValueOp, nocase: bool, values: &'a [Vec<u8>] },
    Host(HostOp, &'a [Vec<u8>]),
    Any(Vec<Formula<'a>>),
    Not(Box<Formula<'a>>),
}

impl<'a> Formula<'a> {
    fn of(condition: &'a Condition) -> Formula<'a> {
        match &condition.kind {
            ConditionKind::Method(methods) => Formula::Method(methods),
            ConditionKind::Path { op, patterns } => Formula::Path(*op, patterns),
            ConditionKind::Header { name, test } => {
                let name = name.to_ascii_lowercase();
                match test {
                    HeaderTest::Present => Formula::Present(name),
                    HeaderTest::Absent => Formula::Present(name).negate(),
                    HeaderTest::Value { op, nocase, values } => {
                        Formula::Value { name, op: *op, nocase: *nocase, values }
                    }
                }
            }
            ConditionKind::Host { op, values } => Formula::Host(*op, values),
            ConditionKind::Any(group) => Formula::Any(group.iter().map(Formula::of).collect()),
            ConditionKind::Not(inner) => Formula::of(inner).negate(),
        }
    }

    /// `not self`, cancelling a double negation.
    fn negate(self) -> Formula<'a> {
        match self {
            Formula::Not(inner) => *inner,
            other => Formula::Not(Box::new(other)),
        }
    }
}

/// For each rule, the index of the first earlier rule that matches every
/// request it matches (so it never decides), if there is one.
pub(crate) fn shadowing(rules: &[Rule]) -> Vec<Option<usize>> {
    let formulas: Vec<Vec<Formula<'_>>> =
        rules.iter().map(|rule| rule.conditions.iter().map(Formula::of).collect()).collect();
    formulas
        .iter()
        .enumerate()
        .map(|(index, later)| {
            let earlier = formulas.get(..index).unwrap_or_default();
            earlier.iter().position(|earlier| conjunction_implies(later, earlier))
        })
        .collect()
}

/// Whether the conditions `given` (all holding) imply all of `needed`:
/// each needed condition must follow from one given condition. No
/// condition needed (a rule without matchers) is always implied.
fn conjunction_implies(given: &[Formula<'_>], needed: &[Formula<'_>]) -> bool {
    needed.iter().all(|needed| given.iter().any(|given| implies(given, needed)))
}

/// Whether `b` holding guarantees that `a` holds, for every request.
fn implies(b: &Formula<'_>, a: &Formula<'_>) -> bool {
    match (b, a) {
        // A group holds through one of its members: each must imply `a`.
        (Formula::Any(group), _) => !group.is_empty() && group.iter().all(|member| implies(member, a)),
        // `a` is a group: one member implied is enough.
        (_, Formula::Any(group)) => group.iter().any(|member| implies(b, member)),
        // Contraposition: `not y` implies `not x` when `x` implies `y`.
        (Formula::Not(y), Formula::Not(x)) => implies(x, y),
        (_, Formula::Not(x)) => disjoint(b, x),
        (Formula::Not(_), _) => false,
        _ => atom_implies(b, a),
    }
}

/// Whether `b` and `x` never hold together.
fn disjoint(b: &Formula<'_>, x: &Formula<'_>) -> bool {
    match (b, x) {
        (Formula::Any(group), _) => !group.is_empty() && group.iter().all(|member| disjoint(member, x)),
        (_, Formula::Any(group)) => !group.is_empty() && group.iter().all(|member| disjoint(b, member)),
        // `b` and `not y` never hold together when `b` implies `y`.
        (_, Formula::Not(y)) => implies(b, y),
        (Formula::Not(y), _) => implies(x, y),
        (Formula::Method(bs), Formula::Method(xs)) => {
            !bs.is_empty() && !xs.is_empty() && bs.iter().all(|m| !xs.contains(m))
        }
        // One side a set of exact paths: decide each path.
        (Formula::Path(PathOp::Exact, exact), Formula::Path(op, patterns))
        | (Formula::Path(op, patterns), Formula::Path(PathOp::Exact, exact)) => {
            !exact.is_empty()
                && !patterns.is_empty()
                && exact.iter().all(|path| patterns.iter().all(|pattern| !path_may_match(*op, pattern, path)))
        }
        (Formula::Host(HostOp::Exact, hosts), Formula::Host(op, values))
        | (Formula::Host(op, values), Formula::Host(HostOp::Exact, hosts)) => {
            !hosts.is_empty()
                && !values.is_empty()
                && hosts.iter().all(|host| values.iter().all(|value| !host_matches(*op, value, host)))
        }
        _ => false,
    }
}

/// A matcher against one exact path; a malformed glob might match anything
/// as far as this analysis knows.
fn path_may_match(op: PathOp, pattern: &[u8], path: &[u8]) -> bool {
    if op == PathOp::Glob && !paths::glob_is_well_formed(pattern) {
        return true;
    }
    paths::matches(op, pattern, path)
}

fn host_matches(op: HostOp, value: &[u8], host: &[u8]) -> bool {
    match op {
        HostOp::Exact => host.eq_ignore_ascii_case(value),
        HostOp::Suffix => ends_with(host, value, true),
    }
}

/// Implication between two matchers that are neither `any` nor `not`.
fn atom_implies(b: &Formula<'_>, a: &Formula<'_>) -> bool {
    match (b, a) {
        (Formula::Method(bs), Formula::Method(as_)) => !bs.is_empty() && bs.iter().all(|m| as_.contains(m)),
        (Formula::Path(b_op, bs), Formula::Path(a_op, as_)) => {
            !bs.is_empty() && bs.iter().all(|inner| as_.iter().any(|outer| paths::covers(*a_op, outer, *b_op, inner)))
        }
        (Formula::Present(b_name), Formula::Present(a_name)) => b_name == a_name,
        // A value matcher holds only on a field that is there.
        (Formula::Value { name, values, .. }, Formula::Present(a_name)) => name == a_name && !values.is_empty(),
        (
            Formula::Value { name: b_name, op: b_op, nocase: b_nocase, values: bs },
            Formula::Value { name: a_name, op: a_op, nocase: a_nocase, values: as_ },
        ) => {
            b_name == a_name
                && !bs.is_empty()
                && bs.iter().all(|inner| {
                    as_.iter().any(|outer| value_covers((*a_op, *a_nocase, outer), (*b_op, *b_nocase, inner)))
                })
        }
        (Formula::Host(b_op, bs), Formula::Host(a_op, as_)) => {
            !bs.is_empty() && bs.iter().all(|inner| as_.iter().any(|outer| host_covers(*a_op, outer, *b_op, inner)))
        }
        _ => false,
    }
}

/// Whether every field value that `inner` accepts, `outer` accepts too.
fn value_covers(outer: (ValueOp, bool, &[u8]), inner: (ValueOp, bool, &[u8])) -> bool {
    let (outer_op, outer_nocase, outer_value) = outer;
    let (inner_op, inner_nocase, inner_value) = inner;
    // A case-insensitive inner matcher accepts spellings a case-sensitive
    // outer one refuses (unless the value has no letters at all, which is
    // not worth the subtlety here).
    if inner_nocase && !outer_nocase {
        return false;
    }
    let nocase = outer_nocase;
    match (inner_op, outer_op) {
        // Every accepted value is `inner_value` itself (up to case).
        (ValueOp::Exact, _) => value_holds(outer_op, nocase, inner_value, outer_value),
        // Every accepted value starts with `inner_value`.
        (ValueOp::Prefix, ValueOp::Prefix) => starts_with(inner_value, outer_value, nocase),
        (ValueOp::Suffix, ValueOp::Suffix) => ends_with(inner_value, outer_value, nocase),
        // Every accepted value contains `inner_value`.
        (ValueOp::Prefix | ValueOp::Suffix | ValueOp::Contains, ValueOp::Contains) => {
            contains(inner_value, outer_value, nocase)
        }
        _ => false,
    }
}

/// Whether a field value relates to `expected` as `op` says.
fn value_holds(op: ValueOp, nocase: bool, value: &[u8], expected: &[u8]) -> bool {
    match op {
        ValueOp::Exact => bytes_eq(value, expected, nocase),
        ValueOp::Prefix => starts_with(value, expected, nocase),
        ValueOp::Suffix => ends_with(value, expected, nocase),
        ValueOp::Contains => contains(value, expected, nocase),
    }
}

/// Whether every host `inner` accepts, `outer` accepts too (both compare
/// case-insensitively).
fn host_covers(outer_op: HostOp, outer: &[u8], inner_op: HostOp, inner: &[u8]) -> bool {
    match (inner_op, outer_op) {
        (HostOp::Exact, _) => host_matches(outer_op, outer, inner),
        (HostOp::Suffix, HostOp::Suffix) => ends_with(inner, outer, true),
        (HostOp::Suffix, HostOp::Exact) => false,
    }
}

fn bytes_eq(a: &[u8], b: &[u8], nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn starts_with(value: &[u8], start: &[u8], nocase: bool) -> bool {
    value.get(..start.len()).is_some_and(|head| bytes_eq(head, start, nocase))
}

fn ends_with(value: &[u8], end: &[u8], nocase: bool) -> bool {
    value.len().checked_sub(end.len()).and_then(|at| value.get(at..)).is_some_and(|tail| bytes_eq(tail, end, nocase))
}

fn contains(value: &[u8], needle: &[u8], nocase: bool) -> bool {
    needle.is_empty() || value.windows(needle.len()).any(|window| bytes_eq(window, needle, nocase))
}
