//! The canonical path (language.md §7) and the path matchers (§5).
//!
//! Invariants: [`decode_path`] is only given a raw path that passed the
//! head scanner's checks, so every `%` starts two hex digits and the decoded
//! bytes hold no `/` that was not a `/` on the wire; matchers compare bytes
//! of that decoded path and never allocate.

use crate::http::{hex_value, is_hex_digit};
use crate::model::PathOp;

/// Percent-decode a checked raw path once, into `out` (cleared first).
pub(crate) fn decode_path(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut index = 0;
    while let Some(&byte) = raw.get(index) {
        if byte == b'%' {
            if let (Some(&high), Some(&low)) = (raw.get(index + 1), raw.get(index + 2)) {
                if is_hex_digit(high) && is_hex_digit(low) {
                    out.push(hex_value(high) * 16 + hex_value(low));
                    index += 3;
                    continue;
                }
            }
        }
        out.push(byte);
        index += 1;
    }
}

/// Whether `path` relates to `pattern` as `op` says.
pub(crate) fn path_matches(op: PathOp, pattern: &[u8], path: &[u8]) -> bool {
    match op {
        PathOp::Exact => path == pattern,
        PathOp::Prefix => segment_prefix(pattern, path),
        PathOp::StartsWith => path.starts_with(pattern),
        PathOp::Suffix => path.ends_with(pattern),
        PathOp::Glob => glob_matches(pattern, path),
    }
}

/// `/api` matches `/api` and `/api/x`, not `/apix`; `/api/` matches what
/// starts with it.
fn segment_prefix(pattern: &[u8], path: &[u8]) -> bool {
    match path.strip_prefix(pattern) {
        None => false,
        Some(rest) => rest.is_empty() || rest.first() == Some(&b'/') || pattern.last() == Some(&b'/'),
    }
}

/// Glob over segments: `**` as a whole segment matches zero or more whole
/// segments; in any other segment `*` matches one or more bytes (never `/`).
///
/// The classic wildcard walk with one backtrack point, applied twice: over
/// segments (with `**` as the star) and within a segment (with `*`, which
/// must take at least one byte). One backtrack point suffices because every
/// other element matches exactly one element, so the run time is at most
/// the product of the two lengths, whatever a hostile path holds.
pub(crate) fn glob_matches(pattern: &[u8], path: &[u8]) -> bool {
    // A position is the start of the current segment, or `None` once every
    // segment was taken.
    let (mut p, mut s) = (Some(0usize), Some(0usize));
    // After a `**`: where the pattern resumes, and the path position up to
    // which the `**` has taken segments.
    let mut backtrack: Option<(Option<usize>, Option<usize>)> = None;
    loop {
        match p {
            Some(pattern_at) => {
                let (segment_pattern, pattern_next) = segment_at(pattern, pattern_at);
                if segment_pattern == b"**" {
                    backtrack = Some((pattern_next, s));
                    p = pattern_next;
                    continue;
                }
                if let Some(path_at) = s {
                    let (segment, path_next) = segment_at(path, path_at);
                    if segment_glob(segment_pattern, segment) {
                        p = pattern_next;
                        s = path_next;
                        continue;
                    }
                }
            }
            None if s.is_none() => return true,
            None => {}
        }
        // Mismatch: let the last `**` take one more segment.
        match backtrack {
            Some((resume, Some(taken_to))) => {
                let (_, after) = segment_at(path, taken_to);
                backtrack = Some((resume, after));
                p = resume;
                s = after;
            }
            _ => return false,
        }
    }
}

/// The segment starting at `start` and where the next one starts, if any.
fn segment_at(bytes: &[u8], start: usize) -> (&[u8], Option<usize>) {
    let rest = bytes.get(start..).unwrap_or_default();
    match rest.iter().position(|&byte| byte == b'/') {
        Some(slash) => (rest.get(..slash).unwrap_or_default(), Some(start + slash + 1)),
        None => (rest, None),
    }
}

/// One segment: `*` matches one or more bytes.
fn segment_glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // After a `*` at `star` that took bytes up to `taken_to`.
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        match pattern.get(p) {
            Some(b'*') if t < text.len() => {
                backtrack = Some((p, t + 1));
                p += 1;
                t += 1;
                continue;
            }
            Some(&expected) if expected != b'*' && text.get(t) == Some(&expected) => {
                p += 1;
                t += 1;
                continue;
            }
            None if t == text.len() => return true,
            _ => {}
        }
        match backtrack {
            Some((star, taken_to)) if taken_to < text.len() => {
                backtrack = Some((star, taken_to + 1));
                p = star + 1;
                t = taken_to + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str, path: &str) -> bool {
        glob_matches(pattern.as_bytes(), path.as_bytes())
    }

    #[test]
    fn decoding() {
        let mut out = Vec::new();
        decode_path(b"/%61dmin/caf%C3%A9", &mut out);
        assert_eq!(out, "/admin/café".as_bytes());
    }

    #[test]
    fn prefix_is_segment_aware() {
        assert!(segment_prefix(b"/api", b"/api"));
        assert!(segment_prefix(b"/api", b"/api/x"));
        assert!(!segment_prefix(b"/api", b"/apix"));
        assert!(segment_prefix(b"/api/", b"/api/x"));
        assert!(!segment_prefix(b"/api/", b"/api"));
        assert!(segment_prefix(b"/", b"/anything"));
    }

    #[test]
    fn other_ops() {
        assert!(path_matches(PathOp::StartsWith, b"/pub", b"/public"));
        assert!(path_matches(PathOp::Suffix, b".pdf", b"/a/b.pdf"));
        assert!(path_matches(PathOp::Exact, b"/a", b"/a"));
        assert!(!path_matches(PathOp::Exact, b"/a", b"/a/"));
    }

    #[test]
    fn star_within_a_segment() {
        assert!(glob("/users/*/orders", "/users/7/orders"));
        assert!(!glob("/users/*/orders", "/users//orders"));
        assert!(!glob("/users/*/orders", "/users/7/x/orders"));
        assert!(glob("/f/*.css", "/f/a.css"));
        assert!(!glob("/f/*.css", "/f/.css"));
        assert!(glob("/f/a*b*c", "/f/aXbYbc"));
        assert!(!glob("/f/a*b*c", "/f/abc"));
    }

    #[test]
    fn double_star() {
        assert!(glob("/a/**", "/a"));
        assert!(glob("/a/**", "/a/"));
        assert!(glob("/a/**", "/a/b/c"));
        assert!(!glob("/a/**", "/ab"));
        assert!(glob("/static/**/*.css", "/static/main.css"));
        assert!(glob("/static/**/*.css", "/static/css/site/main.css"));
        assert!(!glob("/static/**/*.css", "/static/css/site/main.js"));
        assert!(glob("/**", "/"));
        assert!(glob("/**/x/**/y", "/a/x/b/c/y"));
        assert!(!glob("/**/x/**/y", "/a/x/b/c/z"));
        // `OPTIONS *` has the path `*`, which no glob of segments matches.
        assert!(!glob("/**", "*"));
    }
}
