//! A user-space model of the kernel program's scan and decision, walking
//! only the lowered tables, byte by byte, as the BPF loop will.
//!
//! It exists to be compared with the reference evaluator (which is written
//! from the spec, not from these tables): where they disagree, a table is
//! wrong, or the evaluator is.
//!
//! Invariants:
//! - [`scan`] feeds each automaton exactly what docs/lowering.md says the
//!   kernel scanner feeds it (method bytes; canonical path bytes, or
//!   nothing for CONNECT; ASCII-lowercased field names; field values after
//!   their leading SP/HTAB, trailing whitespace included), every lane of an
//!   automaton stepping on every byte, sticky lanes ORing their seen masks;
//! - [`decide`] reads only the [`ScanResult`] and the decision table, and
//!   uses the guard index; [`decide_linear`] tries every rule in
//!   order; both give the same answer.

use super::{Atom, LoweredPolicy, PatternAutomaton, PatternLane, DEAD, START};
use crate::http::{hex_value, is_hex_digit, MalformedKind};

/// What the kernel's scanner reads from one request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub method: Vec<u8>,
    /// The canonical path (decoded once, up to the `?`); `*` for
    /// `OPTIONS *`; `None` for CONNECT.
    pub path: Option<Vec<u8>>,
    /// Field lines: name (any case: the scanner folds it) and value. The
    /// value may carry the leading and trailing SP/HTAB of the wire; the
    /// scan skips the leading ones and the automata account for the
    /// trailing ones.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A request target as the scanner tells the forms apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/path?query`, as sent.
    Origin(&'a [u8]),
    /// `*` (`OPTIONS *`).
    Asterisk,
    /// `host:port` (CONNECT): no path.
    Authority,
}

impl RequestFacts {
    /// The facts of an accepted head from its parts: lowercased names,
    /// the values as given, the target's path decoded. (The tests build
    /// them from the reference parser's `ParsedHead`; this module knows no
    /// parser, only the tables.)
    pub fn from_parts<'a>(method: &[u8], target: Target<'_>, fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> RequestFacts {
        let path = match target {
            Target::Origin(raw) => {
                let raw = raw.split(|&byte| byte == b'?').next().unwrap_or_default();
                Some(percent_decoded(raw))
            }
            Target::Asterisk => Some(b"*".to_vec()),
            Target::Authority => None,
        };
        RequestFacts {
            method: method.to_vec(),
            path,
            fields: fields.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec())).collect(),
        }
    }
}

/// Decode `%HH` once, as the scanner does while feeding the path automaton
/// (the head scanner has refused every other use of `%`).
fn percent_decoded(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, after)) = rest.split_first() {
        match after {
            [high, low, tail @ ..] if byte == b'%' && is_hex_digit(*high) && is_hex_digit(*low) => {
                out.push(hex_value(*high) << 4 | hex_value(*low));
                rest = tail;
            }
            _ => {
                out.push(byte);
                rest = after;
            }
        }
    }
    out
}

/// Which rule decided, or the default; or the whole-head refusal the
/// decision's data brings (a repeated value-matched header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The index of the rule in its policy.
    Rule(usize),
    Default,
    Refused(MalformedKind),
}

/// What the scan leaves for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub method_id: u8,
    /// The path automaton's lanes at the path's end (dead, nothing seen,
    /// for CONNECT).
    pub path: LaneStates,
    /// Bit `id`: a field line with header id `id` is present.
    pub present: u64,
    /// Per header id (index `id - 1`): its value automaton's lanes at the
    /// value's end (dead, nothing seen, when the field is absent).
    pub values: Vec<LaneStates>,
}

/// The state of each at-end lane and the seen word of each sticky lane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaneStates {
    pub at_end: Vec<u32>,
    pub seen: Vec<u64>,
}

impl LaneStates {
    /// Before any input: at-end lanes dead and nothing seen, so that no
    /// pattern holds (an absent field, CONNECT's path).
    fn nothing(automaton: &PatternAutomaton) -> LaneStates {
        LaneStates { at_end: vec![DEAD; automaton.lanes.len()], seen: vec![0; automaton.sticky_lanes.len()] }
    }
}

/// Run the automata over the request, as the kernel scanner does.
pub fn scan(policy: &LoweredPolicy, facts: &RequestFacts) -> Result<ScanResult, MalformedKind> {
    let method_id = {
        let table = &policy.methods;
        let state = table.automaton.run(&facts.method);
        table.id_at_end.get(state as usize).copied().unwrap_or(0)
    };
    let path = match &facts.path {
        Some(path) => run_lanes(&policy.path, path),
        None => LaneStates::nothing(&policy.path),
    };
    let headers = &policy.headers;
    let mut present = 0u64;
    let mut values: Vec<LaneStates> = headers
        .headers
        .iter()
        .map(|slot| slot.values.as_ref().map(LaneStates::nothing).unwrap_or_default())
        .collect();
    for (name, value) in &facts.fields {
        let name_automaton = &headers.names.automaton;
        let mut state = START;
        for &byte in name {
            state = name_automaton.step(state, byte.to_ascii_lowercase());
        }
        let id = headers.names.id_at_end.get(state as usize).copied().unwrap_or(0);
        let Some(slot) = headers.slot(id) else { continue };
        let bit = 1u64 << (id & 63);
        if present & bit != 0 && slot.refuse_duplicates {
            return Err(MalformedKind::DuplicateHeader);
        }
        present |= bit;
        if let Some(automaton) = &slot.values {
            let start = value.iter().position(|&byte| byte != b' ' && byte != b'\t').unwrap_or(value.len());
            let fed = value.get(start..).unwrap_or_default();
            if let Some(entry) = usize::from(id).checked_sub(1).and_then(|index| values.get_mut(index)) {
                *entry = run_lanes(automaton, fed);
            }
        }
    }
    Ok(ScanResult { method_id, path, present, values })
}

/// Every lane steps on every byte (one lookup per lane per byte); a sticky
/// lane also ORs its state's seen mask into its word (and does once for
/// the start state, before any byte).
fn run_lanes(automaton: &PatternAutomaton, input: &[u8]) -> LaneStates {
    let mask = |lane: &super::StickyLane, state: u32| lane.seen_mask.get(state as usize).copied().unwrap_or(0);
    let mut at_end = vec![START; automaton.lanes.len()];
    let mut sticky_states = vec![START; automaton.sticky_lanes.len()];
    let mut seen: Vec<u64> = automaton.sticky_lanes.iter().map(|lane| mask(lane, START)).collect();
    for &byte in input {
        for (state, lane) in at_end.iter_mut().zip(&automaton.lanes) {
            *state = lane.step(*state, byte);
        }
        for ((state, word), lane) in sticky_states.iter_mut().zip(seen.iter_mut()).zip(&automaton.sticky_lanes) {
            *state = lane.automaton.step(*state, byte);
            *word |= mask(lane, *state);
        }
    }
    LaneStates { at_end, seen }
}

/// Whether `pattern` holds: in its at-end lane's accept set (a loop over
/// the set's members, bounded by the largest set), or its bit in its
/// sticky lane's seen word.
fn accepts(automaton: &PatternAutomaton, lanes: &LaneStates, pattern: u32) -> bool {
    match automaton.lane_of_pattern.get(pattern as usize) {
        Some(PatternLane::AtEnd { lane }) => {
            let lane = usize::from(*lane);
            match (automaton.lanes.get(lane), lanes.at_end.get(lane)) {
                (Some(automaton), Some(&state)) => automaton.accepted(state).contains(&pattern),
                _ => false,
            }
        }
        Some(PatternLane::Sticky { lane, bit }) => {
            lanes.seen.get(usize::from(*lane)).is_some_and(|word| word >> (bit & 63) & 1 == 1)
        }
        None => false,
    }
}

/// Every pattern that holds, over all lanes.
fn accepted<'a>(automaton: &'a PatternAutomaton, lanes: &'a LaneStates) -> impl Iterator<Item = u32> + 'a {
    let at_end = automaton.lanes.iter().zip(&lanes.at_end).flat_map(|(lane, &state)| lane.accepted(state).iter().copied());
    let sticky = automaton.sticky_lanes.iter().zip(&lanes.seen).flat_map(|(lane, &word)| {
        lane.patterns.iter().enumerate().filter(move |(bit, _)| word >> (bit & 63) & 1 == 1).map(|(_, &pattern)| pattern)
    });
    at_end.chain(sticky)
}

/// Whether atom `atom` holds for the scanned request.
pub fn atom_holds(policy: &LoweredPolicy, scanned: &ScanResult, atom: u32) -> bool {
    let decision = &policy.decision;
    match decision.atoms.get(atom as usize) {
        Some(Atom::MethodIn { set }) => {
            let mask = decision.method_sets.get(*set as usize).copied().unwrap_or(0);
            mask >> (scanned.method_id & 63) & 1 == 1
        }
        Some(Atom::Path { pattern }) => accepts(&policy.path, &scanned.path, *pattern),
        Some(Atom::HeaderPresent { header }) => scanned.present >> (header & 63) & 1 == 1,
        Some(Atom::HeaderValue { header, pattern }) => {
            let automaton = policy.headers.slot(*header).and_then(|slot| slot.values.as_ref());
            let states = usize::from(*header).checked_sub(1).and_then(|i| scanned.values.get(i));
            match (automaton, states) {
                (Some(values), Some(states)) => accepts(values, states, *pattern),
                _ => false,
            }
        }
        None => false,
    }
}

/// Whether rule `rule` holds: every clause has a literal that holds.
pub fn rule_holds(policy: &LoweredPolicy, scanned: &ScanResult, rule: u32) -> bool {
    let decision = &policy.decision;
    let Some(entry) = decision.rules.get(rule as usize) else { return false };
    (entry.first_clause..entry.first_clause + entry.clause_count).all(|clause| {
        decision.clause(clause).iter().any(|literal| atom_holds(policy, scanned, literal.atom) != literal.negated)
    })
}

/// The decision with the guard index: the first holding rule among the
/// unguarded ones and among those listed under each accepted pattern (of
/// the path and of each header value); each list is cut at the best rule
/// found so far.
pub fn decide(policy: &LoweredPolicy, facts: &RequestFacts) -> Decision {
    let scanned = match scan(policy, facts) {
        Ok(scanned) => scanned,
        Err(kind) => return Decision::Refused(kind),
    };
    let decision = &policy.decision;
    let mut best: Option<u32> = None;
    let mut consider = |list: &[u32]| {
        for &rule in list {
            if best.is_some_and(|best| rule >= best) {
                break;
            }
            if rule_holds(policy, &scanned, rule) {
                best = Some(rule);
                break;
            }
        }
    };
    consider(&decision.unguarded);
    for pattern in accepted(&policy.path, &scanned.path) {
        consider(policy.path.guarded_rules.get(pattern));
    }
    for (slot, states) in policy.headers.headers.iter().zip(&scanned.values) {
        if let Some(values) = &slot.values {
            for pattern in accepted(values, states) {
                consider(values.guarded_rules.get(pattern));
            }
        }
    }
    match best {
        Some(rule) => Decision::Rule(rule as usize),
        None => Decision::Default,
    }
}

/// The decision trying every rule in order (no index): the simplest
/// reading of the table, to check the index against.
pub fn decide_linear(policy: &LoweredPolicy, facts: &RequestFacts) -> Decision {
    let scanned = match scan(policy, facts) {
        Ok(scanned) => scanned,
        Err(kind) => return Decision::Refused(kind),
    };
    let rules = u32::try_from(policy.decision.rules.len()).unwrap_or(u32::MAX);
    match (0..rules).find(|&rule| rule_holds(policy, &scanned, rule)) {
        Some(rule) => Decision::Rule(rule as usize),
        None => Decision::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decoded(b"/%61dmin/%7e%zz"), b"/admin/~%zz");
        assert_eq!(percent_decoded(b"/a%2"), b"/a%2");
    }
}
