//! Deterministic automata for many patterns, exported from
//! `regex_automata`'s dense DFA into flat tables a bounded BPF loop walks;
//! a pattern set too large for one automaton is split into a few "lanes"
//! ([`build_lanes`]), each walked over the same input.
//!
//! Layout (see docs/lowering.md):
//! - `byte_class[byte]`: the class of each byte (`class_count` classes);
//! - `next[state * class_count + class]`: the state after one byte;
//! - `accept_set[state]`: the index of the set of patterns that hold if the
//!   input ends in `state`, in `sets`;
//! - `sets`: deduplicated pattern sets, as offsets into sorted members.
//!
//! Invariants:
//! - state [`DEAD`] (0) is the dead state: every transition from it leads
//!   back to it and its accept set is empty, so a zero-filled table row or
//!   a zero-initialised state variable is dead;
//! - state [`START`] (1) is the start state (even when it is also dead in
//!   effect: then all its transitions lead to 0);
//! - set 0 is the empty set; every other set is non-empty, sorted, and
//!   listed once;
//! - states are numbered breadth-first from the start state, classes by
//!   their smallest byte, sets by the first state that uses them: the same
//!   patterns always give the same tables.

use super::pattern::{self, MatcherRegex};
use super::LowerError;
use regex_automata::dfa::{dense, Automaton as _, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::primitives::StateID;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The dead state.
pub const DEAD: u32 = 0;
/// The start state.
pub const START: u32 = 1;

/// Most states one automaton may have, so that a state fits a `u16`
/// table entry in the BPF program. See docs/lowering.md for the measured
/// sizes this leaves room for.
pub const MAX_STATES: usize = 1 << 16;

/// Memory regex-automata may use while determinizing one automaton (the
/// DFA's own size is bounded by [`MAX_STATES`], see [`build`]).
const DETERMINIZE_LIMIT_BYTES: usize = 256 << 20;

/// Most automata ("lanes") one pattern set may be split into when a
/// single automaton would be too large. Each lane costs one table lookup
/// per input byte.
pub const MAX_LANES: usize = 8;

/// Lists of ids in one array (compressed sparse rows): list `i` is
/// `members[offsets[i]..offsets[i + 1]]`. Used for an automaton's
/// deduplicated pattern sets (each sorted, set 0 empty) and for the rules
/// guarded by each pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLists {
    pub offsets: Vec<u32>,
    pub members: Vec<u32>,
}

impl IdLists {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The members of list `index` (empty for an unknown index).
    pub fn get(&self, index: u32) -> &[u32] {
        let index = index as usize;
        match (self.offsets.get(index), self.offsets.get(index + 1)) {
            (Some(&start), Some(&end)) => self.members.get(start as usize..end as usize).unwrap_or_default(),
            _ => &[],
        }
    }

    /// The longest list's length: the bound of a loop over a list.
    pub fn largest(&self) -> usize {
        self.offsets.windows(2).map(|pair| match pair {
            [start, end] => end.saturating_sub(*start) as usize,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
    }
}

/// A DFA as flat tables (module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automaton {
    pub byte_class: [u8; 256],
    pub class_count: u32,
    pub state_count: u32,
    pub next: Vec<u32>,
    pub accept_set: Vec<u32>,
    pub sets: IdLists,
    pub pattern_count: u32,
}

impl Automaton {
    /// The state after `byte` in `state`. An unknown state is dead.
    pub fn step(&self, state: u32, byte: u8) -> u32 {
        // A `u8` indexes a 256-entry array: always in bounds.
        let class = self.byte_class[usize::from(byte)];
        let index = state as usize * self.class_count as usize + usize::from(class);
        self.next.get(index).copied().unwrap_or(DEAD)
    }

    /// The state after `bytes` from the start state, one table lookup per
    /// byte, stopping early once dead (every later step would stay dead).
    pub fn run(&self, bytes: &[u8]) -> u32 {
        self.run_from(START, bytes)
    }

    pub fn run_from(&self, mut state: u32, bytes: &[u8]) -> u32 {
        for &byte in bytes {
            if state == DEAD {
                break;
            }
            state = self.step(state, byte);
        }
        state
    }

    /// The patterns that hold when the input ends in `state`.
    pub fn accepted(&self, state: u32) -> &[u32] {
        let set = self.accept_set.get(state as usize).copied().unwrap_or(0);
        self.sets.get(set)
    }

    /// Bytes for a state in a table entry: 2 while states fit a `u16`.
    pub fn state_bytes(&self) -> usize {
        if self.state_count as usize <= 1 << 16 {
            2
        } else {
            4
        }
    }

    /// Bytes for a set index or a pattern id in a table entry.
    fn index_bytes(count: usize) -> usize {
        if count <= 1 << 8 {
            1
        } else if count <= 1 << 16 {
            2
        } else {
            4
        }
    }

    /// The bytes of the tables as the BPF program would hold them (compact
    /// widths: `u16` states, the narrowest width for set indexes and
    /// pattern ids, `u32` offsets).
    pub fn table_bytes(&self) -> usize {
        256 + self.next.len() * self.state_bytes()
            + self.accept_set.len() * Self::index_bytes(self.sets.len())
            + self.sets.offsets.len() * 4
            + self.sets.members.len() * Self::index_bytes(self.pattern_count as usize)
    }

    /// The automaton of no patterns: start and dead, nothing accepted.
    fn empty() -> Automaton {
        Automaton {
            byte_class: [0; 256],
            class_count: 1,
            state_count: 2,
            next: vec![DEAD, DEAD],
            accept_set: vec![0, 0],
            sets: IdLists { offsets: vec![0, 0], members: Vec::new() },
            pattern_count: 0,
        }
    }
}

/// Compile `regexes` (pattern id = position) into one automaton. `what`
/// names it in errors (`path automaton`).
pub(crate) fn build(what: &str, regexes: &[String]) -> Result<Automaton, LowerError> {
    build_searching(what, regexes, Anchored::Yes)
}

/// [`build`], with the search anchored at the start (every regex is
/// anchored) or not (every regex may start anywhere: the start state loops
/// over any bytes, once for all patterns).
fn build_searching(what: &str, regexes: &[String], search: Anchored) -> Result<Automaton, LowerError> {
    if regexes.is_empty() {
        return Ok(Automaton::empty());
    }
    let pattern_count = u32::try_from(regexes.len()).map_err(|_| too_large(what, "more than 2^32 patterns".into()))?;
    let internal = |message: String| LowerError::Internal { what: what.to_string(), message };
    let nfa = thompson::Compiler::new()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(thompson::Config::new().utf8(false).which_captures(WhichCaptures::None))
        .build_many(regexes)
        .map_err(|error| internal(error.to_string()))?;
    // regex-automata's transition table: a stride (a power of two, at least
    // the classes plus end-of-input) of 4-byte entries per state. Stop it
    // at a little over MAX_STATES states: past that, the tables would be
    // refused anyway, and an exploding pattern set fails in a second.
    let stride = (nfa.byte_classes().alphabet_len()).next_power_of_two();
    let dfa_limit = MAX_STATES * stride * 4 * 5 / 4;
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(if search == Anchored::No { StartKind::Unanchored } else { StartKind::Anchored })
                .byte_classes(true)
                .accelerate(false)
                .determinize_size_limit(Some(DETERMINIZE_LIMIT_BYTES))
                .dfa_size_limit(Some(dfa_limit)),
        )
        .build_from_nfa(&nfa)
        .map_err(|error| {
            if error.is_size_limit_exceeded() {
                too_large(what, format!("more than {MAX_STATES} states"))
            } else {
                internal(error.to_string())
            }
        })?;
    let start = dfa.start_state(&start::Config::new().anchored(search)).map_err(|error| internal(error.to_string()))?;
    export(what, &dfa, start, pattern_count)
}

/// Where the scan finds whether a pattern holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternLane {
    /// In the accept set of at-end lane `lane`'s final state.
    AtEnd { lane: u8 },
    /// Bit `bit` of sticky lane `lane`'s seen mask.
    Sticky { lane: u8, bit: u8 },
}

/// A lane for patterns that, once matched, hold whatever follows (every
/// `contains`): the automaton finds where each one's match *ends*, and the
/// scan ORs `seen_mask[state]` into a 64-bit "seen" word after every byte
/// (and once for the start state). At most 64 patterns, bit `i` for
/// `patterns[i]`. An automaton that had to remember, at the end, which of
/// n such patterns it has seen would need 2^n times the states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyLane {
    /// Its accept sets: the patterns whose match ends right at that state.
    pub automaton: Automaton,
    pub patterns: Vec<u32>,
    pub seen_mask: Vec<u64>,
}

/// Most patterns in one sticky lane (the bits of its seen word).
pub const STICKY_LANE_PATTERNS: usize = 64;

/// Sticky lanes are used once an automaton has more than this many
/// patterns that can be sticky; with fewer, remembering them at the end
/// costs at most 2^4 times the states and saves the per-byte OR.
pub const STICKY_FROM: usize = 4;

/// The lanes of one pattern set.
#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    pub at_end: Vec<Automaton>,
    pub sticky: Vec<StickyLane>,
    pub lane_of_pattern: Vec<PatternLane>,
}

/// Compile `patterns` (pattern id = position) into as few automata
/// ("lanes") as fit. Patterns that float (start with a loop: suffixes,
/// `contains`) are built apart from those anchored at the start: together,
/// every state of one kind can pair with every state of the other. The two
/// are merged into one lane only when the product of their state counts is
/// at most [`MERGE_LIMIT`], which bounds the merged automaton. A group that
/// is too large on its own is split into the halves of its patterns sorted
/// by regex (which keeps shared prefixes together). More than
/// [`STICKY_FROM`] sticky patterns (`contains`) go to sticky lanes of up to
/// 64. At most [`MAX_LANES`] lanes in all. The accept sets of every lane
/// hold global pattern ids; each pattern is in exactly one lane.
pub(crate) fn build_lanes(what: &str, patterns: &[MatcherRegex]) -> Result<Lanes, LowerError> {
    let anchored_regexes: Vec<String> = patterns.iter().map(|pattern| pattern.anchored.clone()).collect();
    // Floating patterns without their loop, searched unanchored.
    let floating_regexes: Vec<String> =
        patterns.iter().map(|pattern| pattern.floating.clone().unwrap_or_else(|| pattern::NEVER.to_string())).collect();
    let sticky_regexes: Vec<String> =
        patterns.iter().map(|pattern| pattern.sticky.clone().unwrap_or_else(|| pattern::NEVER.to_string())).collect();
    let use_sticky = patterns.iter().filter(|pattern| pattern.sticky.is_some()).count() > STICKY_FROM;
    let (mut anchored, mut floats, mut stickies) = (Vec::new(), Vec::new(), Vec::new());
    for (id, pattern) in (0u32..).zip(patterns) {
        if use_sticky && pattern.sticky.is_some() {
            stickies.push(id);
        } else if pattern.floating.is_some() {
            floats.push(id);
        } else {
            anchored.push(id);
        }
    }

    let mut parts: Vec<(Automaton, Vec<u32>)> = Vec::new();
    build_part(what, &anchored_regexes, Anchored::Yes, anchored, &mut parts)?;
    build_part(what, &floating_regexes, Anchored::No, floats, &mut parts)?;
    let regexes = &anchored_regexes;
    if let [(first, first_patterns), (second, second_patterns)] = parts.as_slice() {
        let product = (first.state_count as usize).saturating_mul(second.state_count as usize);
        if product <= MERGE_LIMIT {
            let mut merged_patterns: Vec<u32> = first_patterns.iter().chain(second_patterns).copied().collect();
            merged_patterns.sort_unstable();
            let merged = build_global(what, regexes, Anchored::Yes, &merged_patterns)?;
            parts = vec![(merged, merged_patterns)];
        }
    }
    if parts.is_empty() && stickies.is_empty() {
        parts.push((Automaton::empty(), Vec::new()));
    }
    let mut sticky_parts: Vec<(Automaton, Vec<u32>)> = Vec::new();
    for chunk in stickies.chunks(STICKY_LANE_PATTERNS) {
        build_part(what, &sticky_regexes, Anchored::No, chunk.to_vec(), &mut sticky_parts)?;
    }
    let lanes = parts.len() + sticky_parts.len();
    if lanes > MAX_LANES {
        return Err(too_large(
            what,
            format!("it needs {lanes} automata (at most {MAX_LANES}); fewer `suffix`, `contains` or `**` patterns would help"),
        ));
    }

    let mut lane_of_pattern = vec![PatternLane::AtEnd { lane: 0 }; regexes.len()];
    // Lane numbers are below MAX_LANES (8) and bits below 64.
    let small = |value: usize| u8::try_from(value).unwrap_or(u8::MAX);
    for (lane, (_, members)) in parts.iter().enumerate() {
        for &pattern in members {
            if let Some(slot) = lane_of_pattern.get_mut(pattern as usize) {
                *slot = PatternLane::AtEnd { lane: small(lane) };
            }
        }
    }
    let mut sticky = Vec::with_capacity(sticky_parts.len());
    for (lane, (automaton, members)) in sticky_parts.into_iter().enumerate() {
        for (bit, &pattern) in members.iter().enumerate() {
            if let Some(slot) = lane_of_pattern.get_mut(pattern as usize) {
                *slot = PatternLane::Sticky { lane: small(lane), bit: small(bit) };
            }
        }
        let seen_mask = (0..automaton.state_count)
            .map(|state| {
                automaton.accepted(state).iter().fold(0u64, |mask, pattern| match members.binary_search(pattern) {
                    Ok(bit) if bit < STICKY_LANE_PATTERNS => mask | 1u64 << bit,
                    _ => mask,
                })
            })
            .collect();
        sticky.push(StickyLane { automaton, patterns: members, seen_mask });
    }
    Ok(Lanes { at_end: parts.into_iter().map(|(automaton, _)| automaton).collect(), sticky, lane_of_pattern })
}

/// The largest product of two lanes' state counts for which they are
/// merged into one automaton (which has at most that many states).
pub const MERGE_LIMIT: usize = 1 << 14;

/// Build `part` as one lane, or as several when one would be too large.
fn build_part(
    what: &str,
    regexes: &[String],
    search: Anchored,
    part: Vec<u32>,
    lanes: &mut Vec<(Automaton, Vec<u32>)>,
) -> Result<(), LowerError> {
    if part.is_empty() {
        return Ok(());
    }
    match build_global(what, regexes, search, &part) {
        Ok(automaton) => {
            lanes.push((automaton, part));
            Ok(())
        }
        Err(LowerError::AutomatonTooLarge { .. }) if part.len() > 1 && lanes.len() + 2 <= MAX_LANES => {
            let mut sorted = part;
            sorted.sort_by(|a, b| regexes.get(*a as usize).cmp(&regexes.get(*b as usize)));
            let mut second = sorted.split_off(sorted.len() / 2);
            let mut first = sorted;
            first.sort_unstable();
            second.sort_unstable();
            build_part(what, regexes, search, first, lanes)?;
            build_part(what, regexes, search, second, lanes)
        }
        Err(LowerError::AutomatonTooLarge { detail, .. }) => Err(too_large(
            what,
            format!(
                "{detail}, even split into {} automata (at most {MAX_LANES}); fewer `suffix`, `contains` or `**` patterns would help",
                lanes.len() + 1
            ),
        )),
        Err(other) => Err(other),
    }
}

/// One automaton for the patterns `part`, whose accept sets hold their
/// global ids.
fn build_global(what: &str, regexes: &[String], search: Anchored, part: &[u32]) -> Result<Automaton, LowerError> {
    let part_regexes: Vec<String> = part.iter().filter_map(|&id| regexes.get(id as usize).cloned()).collect();
    let mut automaton = build_searching(what, &part_regexes, search)?;
    // Local ids to global ones: `part` is increasing, so sets stay sorted.
    for member in &mut automaton.sets.members {
        *member = part.get(*member as usize).copied().unwrap_or(u32::MAX);
    }
    automaton.pattern_count = u32::try_from(regexes.len()).unwrap_or(u32::MAX);
    Ok(automaton)
}

fn too_large(what: &str, detail: String) -> LowerError {
    LowerError::AutomatonTooLarge { what: what.to_string(), detail }
}

/// Number the DFA's states breadth-first and copy their transitions and
/// end-of-input matches into flat tables.
fn export(what: &str, dfa: &dense::DFA<Vec<u32>>, start: StateID, pattern_count: u32) -> Result<Automaton, LowerError> {
    // One representative byte per regex-automata class (classes are
    // numbered in byte order; the last class, end-of-input, has no byte).
    let classes = dfa.byte_classes();
    let mut representatives: Vec<u8> = Vec::new();
    let mut dfa_class_of = [0usize; 256];
    for byte in 0..=255u8 {
        let class = usize::from(classes.get(byte));
        // A `u8` indexes a 256-entry array: always in bounds.
        dfa_class_of[usize::from(byte)] = class;
        if class == representatives.len() {
            representatives.push(byte);
        }
    }

    let mut number: HashMap<StateID, u32> = HashMap::new();
    // Rows in our numbering: the DFA state each stands for (`None`: dead).
    let mut rows: Vec<Option<StateID>> = vec![None, Some(start)];
    let mut queue: VecDeque<u32> = VecDeque::from([START]);
    if !dfa.is_dead_state(start) {
        number.insert(start, START);
    }
    // Transitions by regex-automata class, per row.
    let mut transitions: Vec<Vec<u32>> = vec![vec![DEAD; representatives.len()]; 2];
    while let Some(row) = queue.pop_front() {
        let Some(Some(id)) = rows.get(row as usize).copied() else { continue };
        let mut targets = Vec::with_capacity(representatives.len());
        for &byte in &representatives {
            let target = dfa.next_state(id, byte);
            let numbered = if dfa.is_dead_state(target) {
                DEAD
            } else if let Some(&known) = number.get(&target) {
                known
            } else {
                let fresh = u32::try_from(rows.len()).unwrap_or(u32::MAX);
                if rows.len() >= MAX_STATES {
                    return Err(too_large(what, format!("more than {MAX_STATES} states")));
                }
                number.insert(target, fresh);
                rows.push(Some(target));
                transitions.push(vec![DEAD; representatives.len()]);
                queue.push_back(fresh);
                fresh
            };
            targets.push(numbered);
        }
        if let Some(slot) = transitions.get_mut(row as usize) {
            *slot = targets;
        }
    }

    // Merge regex-automata classes whose columns are equal in every state.
    let mut merged_class: Vec<u32> = Vec::with_capacity(representatives.len());
    let mut column_class: HashMap<Vec<u32>, u32> = HashMap::new();
    for class in 0..representatives.len() {
        let column: Vec<u32> = transitions.iter().map(|row| row.get(class).copied().unwrap_or(DEAD)).collect();
        let fresh = u32::try_from(column_class.len()).unwrap_or(u32::MAX);
        let id = *column_class.entry(column).or_insert(fresh);
        merged_class.push(id);
    }
    let class_count = u32::try_from(column_class.len()).unwrap_or(u32::MAX);
    // Columns are numbered in order of their first regex-automata class,
    // which is in byte order: at most 256 classes, so `u8` holds them.
    let mut byte_class = [0u8; 256];
    for (byte, slot) in byte_class.iter_mut().enumerate() {
        // `byte` enumerates a 256-entry array, as long as `dfa_class_of`.
        let class = merged_class.get(dfa_class_of[byte]).copied().unwrap_or(0);
        *slot = u8::try_from(class).unwrap_or(0);
    }
    let mut representative_of_class: Vec<usize> = vec![0; class_count as usize];
    for (dfa_class, &class) in merged_class.iter().enumerate().rev() {
        if let Some(slot) = representative_of_class.get_mut(class as usize) {
            *slot = dfa_class;
        }
    }
    let mut next = Vec::with_capacity(rows.len() * class_count as usize);
    for row in &transitions {
        for &dfa_class in &representative_of_class {
            next.push(row.get(dfa_class).copied().unwrap_or(DEAD));
        }
    }

    // End-of-input matches, deduplicated into sets (set 0 = empty).
    let mut set_ids: BTreeMap<Vec<u32>, u32> = BTreeMap::new();
    let mut sets = IdLists { offsets: vec![0, 0], members: Vec::new() };
    let mut accept_set = Vec::with_capacity(rows.len());
    for row in &rows {
        let members = match row {
            Some(id) => {
                let end = dfa.next_eoi_state(*id);
                let mut members: Vec<u32> = Vec::new();
                if dfa.is_match_state(end) {
                    for index in 0..dfa.match_len(end) {
                        members.push(dfa.match_pattern(end, index).as_u32());
                    }
                }
                members.sort_unstable();
                members.dedup();
                members
            }
            None => Vec::new(),
        };
        if members.is_empty() {
            accept_set.push(0);
            continue;
        }
        let fresh = u32::try_from(set_ids.len() + 1).unwrap_or(u32::MAX);
        let id = *set_ids.entry(members.clone()).or_insert_with(|| {
            sets.members.extend_from_slice(&members);
            sets.offsets.push(u32::try_from(sets.members.len()).unwrap_or(u32::MAX));
            fresh
        });
        accept_set.push(id);
    }

    Ok(Automaton {
        byte_class,
        class_count,
        state_count: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        next,
        accept_set,
        sets,
        pattern_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::pattern;

    fn automaton(regexes: &[&str]) -> Automaton {
        let regexes: Vec<String> = regexes.iter().map(|r| r.to_string()).collect();
        build("test", &regexes).unwrap()
    }

    #[test]
    fn exact_and_prefix_share_states() {
        let a = automaton(&[
            &pattern::path(crate::model::PathOp::Exact, &[b"/api".to_vec()]).anchored,
            &pattern::path(crate::model::PathOp::Prefix, &[b"/api".to_vec()]).anchored,
        ]);
        assert_eq!(a.accepted(a.run(b"/api")), &[0, 1]);
        assert_eq!(a.accepted(a.run(b"/api/x")), &[1]);
        assert!(a.accepted(a.run(b"/apix")).is_empty());
        assert_eq!(a.run(b"/b"), DEAD);
        assert!(a.accepted(DEAD).is_empty());
        // Dead row loops to itself.
        assert!((0..a.class_count).all(|class| a.next[class as usize] == DEAD));
    }

    #[test]
    fn never_matches_nothing() {
        let a = automaton(&[pattern::NEVER]);
        assert_eq!(a.run(b""), START);
        assert!(a.accepted(START).is_empty());
        assert_eq!(a.run(b"x"), DEAD);
    }

    #[test]
    fn empty_pattern_list() {
        let a = build("test", &[]).unwrap();
        assert_eq!(a.run(b"abc"), DEAD);
        assert!(a.accepted(START).is_empty());
    }

    #[test]
    fn deterministic() {
        let regexes = [r"\x61[\x00-\xFF]*$", r"[\x00-\xFF]*\x62$", r"\x61\x62$"];
        assert_eq!(automaton(&regexes), automaton(&regexes));
    }
}
