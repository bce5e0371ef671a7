//! Judging an engine's [`Outcome`] against a test's expectations, and the
//! splits a test is run under. Engine-agnostic: `l7c test` uses it for
//! every engine.

use crate::verdict::{Outcome, Reason, Verdict};
use crate::model::{Expectation, ExpectedReason};

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

/// The splits a test without its own `split` also runs under, because
/// verdicts must not depend on them: one byte per send, and `random` random
/// cuts drawn from a generator seeded by the input (so a failure is
/// reproducible). Each split lists the sizes of the first sends.
pub fn extra_splits(input: &[u8], random: usize) -> Vec<Vec<usize>> {
    let mut splits = Vec::with_capacity(random + 1);
    if input.len() > 1 {
        splits.push(vec![1; input.len() - 1]);
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
        splits.push(sizes);
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
        let splits = extra_splits(input, 5);
        assert_eq!(splits.len(), 6);
        assert_eq!(splits[0].len(), input.len() - 1);
        for split in &splits[1..] {
            assert!(split.iter().sum::<usize>() >= input.len());
            assert!(split.iter().all(|&n| n >= 1));
        }
        assert_eq!(splits, extra_splits(input, 5));
    }
}
