//! Path patterns as sets of canonical paths: what one pattern matches, and
//! when every path one pattern matches is also matched by another.
//!
//! Whether one path matches a pattern is asked of the reference evaluator
//! (`eval::path::path_matches`): a lint predicts what evaluation will do, so
//! it must use the very same reading of language.md §5. What is the
//! checker's own is the inclusion of one pattern in another. Invariant:
//! [`covers`] is sound — it answers `true`
//! only when the inclusion holds for every byte string, so a lint built on
//! it never reports a rule that could still decide. It may answer `false`
//! for inclusions that do hold (a missed lint, never a false one).

use crate::model::PathOp;

/// Whether `path` relates to `pattern` as `op` says (language.md §5), as
/// the reference evaluator decides it.
pub(crate) fn matches(op: PathOp, pattern: &[u8], path: &[u8]) -> bool {
    crate::eval::path::path_matches(op, pattern, path)
}

/// Whether every segment holding `**` is exactly `**` (language.md §5).
pub(crate) fn glob_is_well_formed(pattern: &[u8]) -> bool {
    pattern.split(|&b| b == b'/').all(|segment| segment == b"**" || !contains(segment, b"**"))
}

/// A path pattern reduced to the simplest operation that matches exactly
/// the same set of paths: a glob without `*` is an exact path, and a glob
/// `L/**` (with no `*` in `L`) is the segment-aware prefix `L`.
fn normalize(op: PathOp, pattern: &[u8]) -> (PathOp, &[u8]) {
    if op != PathOp::Glob {
        return (op, pattern);
    }
    if !pattern.contains(&b'*') {
        return (PathOp::Exact, pattern);
    }
    if let Some(head) = pattern.strip_suffix(b"/**") {
        if !head.contains(&b'*') && head.last() != Some(&b'/') {
            return (PathOp::Prefix, head);
        }
    }
    (op, pattern)
}

/// Whether every path that `(inner_op, inner)` matches is also matched by
/// `(outer_op, outer)`. Sound, not complete: see the module comment.
pub(crate) fn covers(outer_op: PathOp, outer: &[u8], inner_op: PathOp, inner: &[u8]) -> bool {
    let bad_glob = |op: PathOp, pattern: &[u8]| op == PathOp::Glob && !glob_is_well_formed(pattern);
    if bad_glob(outer_op, outer) || bad_glob(inner_op, inner) {
        return false;
    }
    let (outer_op, outer) = normalize(outer_op, outer);
    let (inner_op, inner) = normalize(inner_op, inner);
    if outer_op == inner_op && outer == inner {
        return true;
    }
    match inner_op {
        // One path: decide it exactly.
        PathOp::Exact => matches(outer_op, outer, inner),
        // `/a` matches `/a` and what starts with `/a/`; `/a/` what starts with it.
        PathOp::Prefix => {
            if inner.last() == Some(&b'/') {
                starts_with_covered(outer_op, outer, inner)
            } else {
                let mut below = inner.to_vec();
                below.push(b'/');
                matches(outer_op, outer, inner) && starts_with_covered(outer_op, outer, &below)
            }
        }
        PathOp::StartsWith => starts_with_covered(outer_op, outer, inner),
        PathOp::Suffix => (outer_op == PathOp::Suffix && inner.ends_with(outer)) || is_universal(outer_op, outer),
        PathOp::Glob => glob_covered(outer_op, outer, inner),
    }
}

/// Whether every path starting with `start` is matched by the outer pattern.
fn starts_with_covered(outer_op: PathOp, outer: &[u8], start: &[u8]) -> bool {
    match outer_op {
        PathOp::StartsWith => start.starts_with(outer),
        PathOp::Prefix => {
            if outer.last() == Some(&b'/') {
                start.starts_with(outer)
            } else {
                let mut below = outer.to_vec();
                below.push(b'/');
                start.starts_with(&below)
            }
        }
        PathOp::Suffix => outer.is_empty(),
        PathOp::Exact | PathOp::Glob => false,
    }
}

/// Patterns that match every byte string.
fn is_universal(op: PathOp, pattern: &[u8]) -> bool {
    matches!(op, PathOp::StartsWith | PathOp::Suffix) && pattern.is_empty()
}

/// A well-formed glob that is neither an exact path nor `L/**`, inside
/// another pattern: through what every match of the glob must begin and
/// end with.
fn glob_covered(outer_op: PathOp, outer: &[u8], glob: &[u8]) -> bool {
    if is_universal(outer_op, outer) {
        return true;
    }
    let Some(first_star) = glob.iter().position(|&b| b == b'*') else {
        return matches(outer_op, outer, glob);
    };
    let segment_start = glob.get(..first_star).and_then(|before| before.iter().rposition(|&b| b == b'/')).map(|i| i + 1);
    let segment_is_double_star = segment_start.is_some_and(|start| {
        let rest = glob.get(start..).unwrap_or_default();
        let segment = rest.split(|&b| b == b'/').next().unwrap_or_default();
        segment == b"**"
    });
    let begins_covered = match segment_start {
        // `L/**/...`: every match is `L` or starts with `L/`, i.e. is in
        // the segment-aware prefix `L`.
        Some(start) if segment_is_double_star => {
            let head = glob.get(..start.saturating_sub(1)).unwrap_or_default();
            covers(outer_op, outer, PathOp::Prefix, head)
        }
        // A `*` inside a segment: every match starts with the bytes before it.
        _ => starts_with_covered(outer_op, outer, glob.get(..first_star).unwrap_or_default()),
    };
    // Every match ends with the bytes after the last `*` (a `**` that takes
    // no segment still leaves the `/` before what follows it).
    let last_star = glob.iter().rposition(|&b| b == b'*').unwrap_or(0);
    let tail = glob.get(last_star + 1..).unwrap_or_default();
    let ends_covered = outer_op == PathOp::Suffix && tail.ends_with(outer);
    begins_covered || ends_covered
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathOp::*;

    fn covered(outer_op: PathOp, outer: &str, inner_op: PathOp, inner: &str) -> bool {
        covers(outer_op, outer.as_bytes(), inner_op, inner.as_bytes())
    }

    #[test]
    fn well_formed_globs() {
        assert!(glob_is_well_formed(b"/a/**/b/*.css"));
        assert!(glob_is_well_formed(b"/**"));
        assert!(!glob_is_well_formed(b"/a**"));
        assert!(!glob_is_well_formed(b"/**b/c"));
        assert!(!glob_is_well_formed(b"/a/***"));
    }

    #[test]
    fn exact_inside_everything() {
        assert!(covered(Prefix, "/api", Exact, "/api/x"));
        assert!(covered(Prefix, "/api", Exact, "/api"));
        assert!(!covered(Prefix, "/api", Exact, "/apix"));
        assert!(!covered(Prefix, "/api/", Exact, "/api"));
        assert!(covered(StartsWith, "/pub", Exact, "/public"));
        assert!(covered(Suffix, ".pdf", Exact, "/a.pdf"));
        assert!(covered(Glob, "/users/*", Exact, "/users/7"));
        assert!(!covered(Glob, "/users/*", Exact, "/users/"));
        assert!(!covered(Exact, "/a", Exact, "/b"));
    }

    #[test]
    fn prefixes() {
        assert!(covered(Prefix, "/api", Prefix, "/api/v1"));
        assert!(covered(Prefix, "/api", Prefix, "/api"));
        assert!(covered(Prefix, "/api", Prefix, "/api/"));
        assert!(!covered(Prefix, "/api", Prefix, "/apiv1"));
        assert!(!covered(Prefix, "/api/", Prefix, "/api"));
        assert!(covered(Prefix, "/api/", Prefix, "/api/v1"));
        assert!(covered(Prefix, "/", Prefix, "/anything"));
        assert!(!covered(Prefix, "/api/v1", Prefix, "/api"));
        assert!(covered(StartsWith, "/ap", Prefix, "/api"));
        assert!(!covered(Prefix, "/api", StartsWith, "/api"));
        assert!(covered(Prefix, "/api", StartsWith, "/api/"));
        assert!(covered(Prefix, "/api/", StartsWith, "/api/v"));
        assert!(covered(StartsWith, "/a", StartsWith, "/ab"));
        assert!(!covered(Exact, "/a", Prefix, "/a"));
    }

    #[test]
    fn suffixes() {
        assert!(covered(Suffix, ".css", Suffix, "main.css"));
        assert!(!covered(Suffix, "main.css", Suffix, ".css"));
        assert!(!covered(Prefix, "/", Suffix, ".css"));
        assert!(covered(StartsWith, "", Suffix, ".css"));
    }

    #[test]
    fn globs() {
        // `L/**` is the prefix `L`.
        assert!(covered(Glob, "/static/**", Prefix, "/static/css"));
        assert!(covered(Prefix, "/static", Glob, "/static/**"));
        assert!(covered(Glob, "/static/**", Glob, "/static/**"));
        assert!(!covered(Glob, "/static/**", Prefix, "/staticx"));
        // Through what every match begins or ends with.
        assert!(covered(Prefix, "/api", Glob, "/api/*/x"));
        assert!(covered(Prefix, "/static", Glob, "/static/**/*.css"));
        assert!(covered(Suffix, ".css", Glob, "/static/**/*.css"));
        assert!(!covered(Prefix, "/api/v1", Glob, "/api/*/x"));
        assert!(!covered(Glob, "/api/*/x", Prefix, "/api"));
        assert!(covered(Glob, "/a/*", Glob, "/a/*"));
        assert!(!covered(Glob, "/a/*", Glob, "/a/**/b"));
        // A malformed glob is never reasoned about.
        assert!(!covered(Glob, "/a**", Glob, "/a**"));
    }
}
