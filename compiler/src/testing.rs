//! Judging an engine's [`Outcome`] against a test's expectations, and the
//! splits a test is run under. Engine-agnostic: `l7c test` uses it for
//! every engine, and the conformance runners use [`Timing`] too.

use crate::model::{Expectation, ExpectedReason, VerdictAction};
use crate::verdict::{Outcome, Reason, Verdict};

/// Whether `outcome` meets `expect`: one expectation per verdict, in order,
/// then `pending` when bytes are held at the end. On failure, a sentence
/// saying what differs.
pub fn judge(expect: &[Expectation], outcome: &Outcome) -> Result<(), String> {
    let mut got: Vec<String> = outcome.verdicts.iter().map(describe_verdict).collect();
    if outcome.pending > 0 {
        got.push("pending".into());
    }
    let wanted: Vec<String> = expect.iter().map(describe_expectation).collect();
    let mut matches = expect.len() == got.len();
    if matches {
        let mut verdicts = outcome.verdicts.iter();
        for e in expect {
            let ok = match e {
                Expectation::Pending => verdicts.next().is_none() && outcome.pending > 0,
                Expectation::Verdict { action, reason } => match verdicts.next() {
                    Some(v) => v.action == *action && reason.as_ref().is_none_or(|r| reason_matches(r, v)),
                    None => false,
                },
            };
            if !ok {
                matches = false;
                break;
            }
        }
    }
    if matches {
        Ok(())
    } else {
        Err(format!("expected [{}], got [{}]", wanted.join(", "), got.join(", ")))
    }
}

fn reason_matches(expected: &ExpectedReason, verdict: &Verdict) -> bool {
    match (expected, verdict.reason) {
        (ExpectedReason::Rule(name), Reason::Rule) => verdict.rule.as_deref() == Some(name.as_str()),
        (ExpectedReason::Default, Reason::Default) => true,
        (ExpectedReason::Malformed(kind), Reason::Malformed(got)) => kind.is_none_or(|k| k == got),
        (ExpectedReason::Limit(kind), Reason::Limit(got)) => kind.is_none_or(|k| k == got),
        (ExpectedReason::Opaque, Reason::Opaque) => true,
        (ExpectedReason::Http2, Reason::Http2) => true,
        (ExpectedReason::Tunnel, Reason::Tunnel) => true,
        (ExpectedReason::RedirectUnbound, Reason::RedirectUnbound) => true,
        _ => false,
    }
}

/// A verdict as a test would write it: `allow "read"`, `deny malformed:cl-te`.
pub fn describe_verdict(v: &Verdict) -> String {
    match (v.reason, &v.rule) {
        (Reason::Rule, Some(rule)) => format!("{} \"{rule}\"", v.action.name()),
        (reason, _) => format!("{} {}", v.action.name(), reason.name()),
    }
}

pub fn describe_expectation(e: &Expectation) -> String {
    match e {
        Expectation::Pending => "pending".into(),
        Expectation::Verdict { action, reason: None } => action.name().into(),
        Expectation::Verdict { action, reason: Some(reason) } => {
            let reason = match reason {
                ExpectedReason::Rule(name) => format!("\"{name}\""),
                ExpectedReason::Default => "default".into(),
                ExpectedReason::Malformed(None) => "malformed".into(),
                ExpectedReason::Malformed(Some(k)) => format!("malformed:{k}"),
                ExpectedReason::Limit(None) => "limit".into(),
                ExpectedReason::Limit(Some(k)) => format!("limit:{k}"),
                ExpectedReason::Opaque => "opaque".into(),
                ExpectedReason::Http2 => "http2".into(),
                ExpectedReason::Tunnel => "tunnel".into(),
                ExpectedReason::RedirectUnbound => "redirect-unbound".into(),
            };
            format!("{} {reason}", action.name())
        }
    }
}

/// Where a stream's outcome depends on when the server's answers arrive,
/// and so on its `send()` boundaries (language.md §6, cli.md `--answers`):
/// runners that try extra splits keep the stated split's boundaries there
/// and add none. Everywhere else verdicts do not depend on the split.
///
/// An answer arrives after the send that carries its request's last byte,
/// so two things depend on timing:
/// - whether an enforce-mode deny is answered: only through a boundary at
///   its first byte (the end of the request before it);
/// - an allowed switch: through the boundaries from the end of the switch
///   request's head to the end of its verdict (its body, the end of the
///   request, and the early bytes after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    /// Closed byte ranges where the stated split's boundaries are kept and
    /// no others are added.
    fixed: Vec<(u64, u64)>,
}

/// What [`Timing`] needs of one verdict (from an [`Outcome`], or from the
/// JSON of `l7c eval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedVerdict {
    pub start: u64,
    pub end: u64,
    pub action: VerdictAction,
    /// Reason `opaque`: a tunnel with no request.
    pub opaque: bool,
    /// The verdict carries an `answer` (an enforce-mode deny).
    pub answered: bool,
}

impl Timing {
    /// The timing of `input` from the verdicts it got under its stated split.
    pub fn of(input: &[u8], verdicts: &[Verdict]) -> Timing {
        Timing::from_verdicts(
            input,
            verdicts.iter().map(|v| TimedVerdict {
                start: v.start,
                end: v.end,
                action: v.action,
                opaque: v.reason == Reason::Opaque,
                answered: v.answer.is_some(),
            }),
        )
    }

    pub fn from_verdicts(input: &[u8], verdicts: impl IntoIterator<Item = TimedVerdict>) -> Timing {
        let mut fixed = Vec::new();
        for verdict in verdicts {
            match verdict.action {
                VerdictAction::Deny if verdict.answered && verdict.start > 0 => fixed.push((verdict.start, verdict.start)),
                VerdictAction::Tunnel if !verdict.opaque => {
                    // A tunnel verdict starts at its request's head, which
                    // holds no blank line before its end.
                    let from = usize::try_from(verdict.start).unwrap_or(usize::MAX);
                    let head_end = input
                        .get(from..)
                        .and_then(|rest| rest.windows(4).position(|window| window == b"\r\n\r\n"))
                        .map_or(verdict.start, |at| verdict.start + at as u64 + 4);
                    fixed.push((head_end, verdict.end.max(head_end)));
                }
                _ => {}
            }
        }
        Timing { fixed }
    }

    /// `split` (sizes of the first sends of an input `len` bytes long) with
    /// its boundaries where timing matters replaced by `stated`'s.
    pub fn keep(&self, stated: &[usize], split: &[usize], len: usize) -> Vec<usize> {
        let boundaries = |sizes: &[usize]| -> Vec<usize> {
            let mut at = 0usize;
            let mut out = Vec::new();
            for &size in sizes {
                at = at.saturating_add(size);
                if at >= len {
                    break;
                }
                out.push(at);
            }
            out
        };
        let fixed = |at: usize| self.fixed.iter().any(|&(from, to)| (from..=to).contains(&(at as u64)));
        let mut cuts: Vec<usize> = boundaries(split).into_iter().filter(|&at| !fixed(at)).collect();
        cuts.extend(boundaries(stated).into_iter().filter(|&at| fixed(at)));
        cuts.sort_unstable();
        cuts.dedup();
        let mut previous = 0;
        cuts.into_iter()
            .map(|at| {
                let size = at - previous;
                previous = at;
                size
            })
            .collect()
    }
}

/// The splits a test without its own `split` also runs under, because
/// verdicts must not depend on them: one byte per send, and `random` random
/// cuts drawn from a generator seeded by the input (so a failure is
/// reproducible). Each split lists the sizes of the first sends. Where
/// `timing` says the answers' timing matters, they never cut (a test
/// without `split` is sent in one piece).
pub fn extra_splits(input: &[u8], random: usize, timing: &Timing) -> Vec<Vec<usize>> {
    let mut splits = Vec::with_capacity(random + 1);
    if input.len() > 1 {
        splits.push(timing.keep(&[], &vec![1; input.len() - 1], input.len()));
    }
    let mut state = input.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    for _ in 0..random {
        let mut sizes = Vec::new();
        let mut used = 0usize;
        while used < input.len() {
            state = splitmix(state);
            // Mostly small pieces, sometimes large ones.
            let cap = if state % 4 == 0 { input.len() } else { 16 };
            let size = 1 + (state >> 8) as usize % cap.max(1);
            sizes.push(size);
            used += size;
        }
        splits.push(timing.keep(&[], &sizes, input.len()));
    }
    splits
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::MalformedKind;
    use crate::model::VerdictAction;

    fn verdict(action: VerdictAction, reason: Reason, rule: Option<&str>) -> Verdict {
        Verdict { index: 0, start: 0, end: 1, action, reason, rule: rule.map(String::from), answer: None }
    }

    #[test]
    fn judges_rules_reasons_and_pending() {
        let outcome = Outcome {
            verdicts: vec![
                verdict(VerdictAction::Allow, Reason::Rule, Some("read")),
                verdict(VerdictAction::Deny, Reason::Malformed(MalformedKind::ClTe), None),
            ],
            delivered: 10,
            pending: 3,
        };
        let allow_read = Expectation::Verdict { action: VerdictAction::Allow, reason: Some(ExpectedReason::Rule("read".into())) };
        let deny_any_malformed = Expectation::Verdict { action: VerdictAction::Deny, reason: Some(ExpectedReason::Malformed(None)) };
        assert_eq!(judge(&[allow_read.clone(), deny_any_malformed.clone(), Expectation::Pending], &outcome), Ok(()));
        // Missing the pending expectation fails, and says what was got.
        let error = judge(&[allow_read.clone(), deny_any_malformed], &outcome).unwrap_err();
        assert!(error.contains("deny malformed:cl-te, pending"), "{error}");
        // A wrong rule name fails.
        let allow_other = Expectation::Verdict { action: VerdictAction::Allow, reason: Some(ExpectedReason::Rule("x".into())) };
        assert!(judge(&[allow_other], &Outcome { verdicts: vec![outcome.verdicts[0].clone()], ..Outcome::default() }).is_err());
        // An empty expectation matches only an ungoverned stream.
        assert_eq!(judge(&[], &Outcome::default()), Ok(()));
        assert!(judge(&[], &outcome).is_err());
    }

    #[test]
    fn splits_cover_the_input_and_are_reproducible() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let splits = extra_splits(input, 5, &Timing::default());
        assert_eq!(splits.len(), 6);
        assert_eq!(splits[0].len(), input.len() - 1);
        for split in &splits[1..] {
            // Boundaries inside the input; the rest is the final send.
            assert!(split.iter().sum::<usize>() < input.len());
            assert!(split.iter().all(|&n| n >= 1));
        }
        assert_eq!(splits, extra_splits(input, 5, &Timing::default()));
    }

    fn timed(start: u64, end: u64, action: VerdictAction, answered: bool) -> TimedVerdict {
        TimedVerdict { start, end, action, opaque: false, answered }
    }

    #[test]
    fn extra_splits_keep_the_stated_boundaries_where_answers_arrive() {
        // An allowed request (0..10), then an answered deny from 10.
        let input = [b'x'; 20];
        let timing = Timing::from_verdicts(
            &input,
            [timed(0, 10, VerdictAction::Allow, false), timed(10, 20, VerdictAction::Deny, true)],
        );
        // Stated with a boundary at 10: kept; no cut at 10 in one piece.
        assert_eq!(timing.keep(&[10], &[3, 4], 20), [3, 4, 3]);
        assert_eq!(timing.keep(&[], &[5, 5, 5], 20), [5, 10]);
        assert_eq!(extra_splits(&input, 0, &timing), [vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1]]);
        // A deny without an answer (audit mode) leaves the split alone.
        let audit = Timing::from_verdicts(&input, [timed(10, 20, VerdictAction::Deny, false)]);
        assert_eq!(audit.keep(&[], &[5, 5, 5], 20), [5, 5, 5]);
        // A tunnel: from the end of its head to its end, the stated split.
        let input = b"GET /ws HTTP/1.1\r\nUpgrade: x\r\n\r\nframes";
        let tunnel = Timing::from_verdicts(input, [timed(0, 38, VerdictAction::Tunnel, false)]);
        assert_eq!(tunnel.keep(&[32], &[10, 10, 10, 3], 38), [10, 10, 10, 2]);
        assert_eq!(tunnel.keep(&[], &[10, 10, 10, 3], 38), [10, 10, 10]);
    }
}
