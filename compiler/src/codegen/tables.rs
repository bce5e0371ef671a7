//! Where each table of a compilation sits in the `.rodata` blob, and where
//! each automaton's state sits in the connection's `l7_conn` storage.
//!
//! The scan keeps every automaton state as a `u32` in the storage, and
//! the "facts" bitmap: one bit per pattern an automaton can accept. A
//! sticky lane's seen word *is* a word of the bitmap (its 64 patterns are
//! facts `64 w .. 64 w + 63`), so the scan ORs into it directly; at-end
//! lanes' accept sets are collected into it after the scan (the members
//! tables hold fact numbers, not pattern ids). The decision then tests
//! facts, method sets and presence bits, literal by literal.

use super::blob::Blob;
use super::layout;
use crate::lower::{Atom, Automaton, LoweredAction, LoweredPolicy, PatternAutomaton, PatternLane, TokenTable, DEAD};
use crate::scan::{ChunkTables, HeadTables, NameSkip, ValueSkip};

/// Accepted facts the guarded decision lists; more fall back to trying
/// every rule in order.
pub const CANDIDATES: u32 = 64;

/// Padding after a `next` table: the verifier only knows a class byte is
/// at most 255, so `state * classes + class` may reach 255 entries past
/// the last row.
const CLASS_SLACK: usize = 256;

/// One automaton lane in the blob and in the storage.
#[derive(Debug, Clone)]
pub struct LaneAt {
    pub class: u32,
    pub next: u32,
    /// `capacity - 1`: states are masked with it (capacity a power of two).
    pub mask: u32,
    pub classes: u32,
    /// Offset of the lane's `u32` state in the storage.
    pub state: i16,
    pub kind: LaneKind,
}

#[derive(Debug, Clone)]
pub enum LaneKind {
    /// A token automaton (method, header name): `id_at_end[state]` (u8).
    Token { id_at_end: u32 },
    /// An at-end pattern lane: `accept[state]` (u32 set) and the set
    /// offsets into the policy's members table (`sets[set]`,
    /// `sets[set + 1]`, absolute indexes), sets masked with `set_mask`.
    AtEnd { accept: u32, sets: u32, set_mask: u32 },
    /// A sticky lane: `seen[state]` (u64) ORed into facts word `word`.
    Sticky { seen: u32, word: u32 },
}

/// The lanes of one pattern automaton (path, or one header's value).
#[derive(Debug, Clone, Default)]
pub struct AutomatonAt {
    pub lanes: Vec<LaneAt>,
}

/// One policy's tables and state offsets.
#[derive(Debug, Clone)]
pub struct PolicyTables {
    pub method: LaneAt,
    pub name: LaneAt,
    pub path: AutomatonAt,
    /// (header id, its value automaton).
    pub values: Vec<(u8, AutomatonAt)>,
    /// Members (fact numbers) of every at-end lane's accept sets.
    pub members: u32,
    pub members_mask: u32,
    /// Decision records (8 bytes each) and their count.
    pub records: u32,
    pub record_count: u32,
    pub records_mask: u32,
    /// Per rule: action, log, ingress, pad, slot (u32).
    pub rules: u32,
    pub rules_mask: u32,
    /// Method sets (u64 masks over method ids).
    pub method_sets: u32,
    pub method_sets_mask: u32,
    /// Bit `id`: a repeated field line with that id is
    /// `malformed:duplicate-header`.
    pub refuse_duplicates: u64,
    /// `get_body deny`: a GET or HEAD with a body is `malformed:get-body`.
    pub refuse_get_body: bool,
    /// Rule `r`'s records are `rule_records[r] .. rule_records[r + 1]`.
    pub rule_records: u32,
    pub rule_records_mask: u32,
    /// Per fact: (start, end) of the rules listed under its pattern in
    /// `guard_members`.
    pub fact_guards: u32,
    pub fact_guards_mask: u32,
    pub guard_members: u32,
    pub guard_members_mask: u32,
    /// (start, end) of the unguarded rules in `guard_members`.
    pub unguarded: (u32, u32),
    /// The facts words that are sticky lanes' seen words.
    pub sticky_words: Vec<u32>,
    /// A bound on the guarded decision's iterations (every record of every
    /// candidate list, and the lists themselves).
    pub guarded_bound: u32,
    /// Words of the facts bitmap this policy uses.
    pub fact_words: u32,
}

/// The head scanner's and chunk scanner's tables, shared by all policies.
#[derive(Debug, Clone)]
pub struct SharedTables {
    pub head_class: u32,
    pub head_main: u32,
    pub head_main_mask: u32,
    pub head_sub: u32,
    pub head_sub_mask: u32,
    pub head_reject: u32,
    pub head_reject_mask: u32,
    pub head_role: u32,
    pub head_start: u16,
    pub literal_start: u16,
    pub max_literal: u8,
    /// Plain value bytes skipped eight at a time (`None`: the tables do
    /// not allow it, and every byte is stepped).
    pub value_skip: Option<ValueSkip>,
    /// Name bytes after the header-name lane died, skipped likewise.
    pub name_skip: Option<NameSkip>,
    pub chunk_class: u32,
    pub chunk_table: u32,
    pub chunk_mask: u32,
    pub chunk_start: u8,
    pub chunk_data: u8,
    pub chunk_data_cr: u8,
}

/// Decision record kinds and flags (8 bytes: kind, flags, u16, u32).
pub mod record {
    pub const FALSE: u8 = 0;
    pub const TRUE: u8 = 1;
    pub const METHOD: u8 = 2;
    pub const PRESENT: u8 = 3;
    pub const FACT: u8 = 4;
    pub const NEGATED: u8 = 1;
    pub const END_CLAUSE: u8 = 2;
    pub const END_RULE: u8 = 4;
}

/// Rule action codes in the rule table.
pub mod rule_action {
    pub const ALLOW: u8 = 0;
    pub const DENY: u8 = 1;
    pub const ALLOW_TUNNEL: u8 = 2;
    pub const REDIRECT: u8 = 3;
}

pub fn shared(blob: &mut Blob, head: &HeadTables, chunk: &ChunkTables) -> SharedTables {
    let head_class = blob.add("head byte classes", &head.byte_class, 0);
    let head_main = blob.add_u32("head lexer", &head.main, 0);
    let head_sub = blob.add_u16("head value syntax", &head.sub, 0);
    let head_reject = blob.add("head value rejects", &head.sub_reject, 0);
    let head_role = blob.add_u16("head value roles", &head.role_start, 0);
    let chunk_class = blob.add("chunk byte classes", &chunk.byte_class, 0);
    let chunk_table = blob.add_u32("chunk machine", &chunk.table, 0);
    SharedTables {
        head_class,
        head_main,
        head_main_mask: head.main.len() as u32 - 1,
        head_sub,
        head_sub_mask: head.sub.len() as u32 - 1,
        head_reject,
        head_reject_mask: head.sub_reject.len() as u32 - 1,
        head_role,
        head_start: head.start,
        literal_start: head.literal_start,
        max_literal: head.max_literal,
        value_skip: head.value_skip(),
        name_skip: head.name_skip(),
        chunk_class,
        chunk_table,
        chunk_mask: chunk.table.len() as u32 - 1,
        chunk_start: chunk.start,
        chunk_data: chunk.data,
        chunk_data_cr: chunk.data_cr,
    }
}

/// Builds the tables of `policy` into `blob`; `area` is where its
/// automaton states start in the storage.
pub fn policy(blob: &mut Blob, policy: &LoweredPolicy, index: usize, area: i16) -> PolicyTables {
    let mut next_state = area;
    let mut take_state = || {
        let at = next_state;
        next_state += 4;
        at
    };
    let name = |what: &str| format!("policy {index} {what}");

    let method = token_lane(blob, &policy.methods, &name("method"), take_state());
    let header_names = token_lane(blob, &policy.headers.names, &name("header names"), take_state());

    // Facts: sticky words first (one word per sticky lane), then at-end
    // patterns, automaton by automaton.
    let automata: Vec<(Option<u8>, &PatternAutomaton)> = std::iter::once((None, &policy.path))
        .chain(
            policy
                .headers
                .headers
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| slot.values.as_ref().map(|values| (Some(i as u8 + 1), values))),
        )
        .collect();
    let mut word = 0u32;
    let mut sticky_words: Vec<Vec<u32>> = Vec::new();
    for (_, automaton) in &automata {
        sticky_words.push(automaton.sticky_lanes.iter().map(|_| { word += 1; word - 1 }).collect());
    }
    let mut fact = word * 64;
    // fact of (automaton index, pattern) for at-end patterns.
    let mut fact_of: Vec<Vec<u32>> = Vec::new();
    for (k, (_, automaton)) in automata.iter().enumerate() {
        let facts = automaton
            .lane_of_pattern
            .iter()
            .map(|lane| match lane {
                PatternLane::AtEnd { .. } => {
                    fact += 1;
                    fact - 1
                }
                PatternLane::Sticky { lane, bit } => sticky_words[k][usize::from(*lane)] * 64 + u32::from(*bit),
            })
            .collect();
        fact_of.push(facts);
    }
    let fact_words = fact.div_ceil(64).max(1);

    // Members: every at-end lane's sets, as fact numbers.
    let mut members: Vec<u32> = Vec::new();
    let mut placed: Vec<AutomatonAt> = Vec::new();
    for (k, (header, automaton)) in automata.iter().enumerate() {
        let what = match header {
            None => "path".to_owned(),
            Some(id) => format!("header {id} value"),
        };
        let mut at = AutomatonAt::default();
        for (l, lane) in automaton.lanes.iter().enumerate() {
            let mut sets: Vec<u32> = Vec::with_capacity(lane.sets.len() + 1);
            for set in 0..lane.sets.len() as u32 {
                sets.push(members.len() as u32);
                members.extend(lane.sets.get(set).iter().map(|&pattern| fact_of[k][pattern as usize]));
            }
            sets.push(members.len() as u32);
            let set_capacity = (lane.sets.len()).next_power_of_two();
            sets.resize(set_capacity + 1, members.len() as u32);
            let (class, next, mask) = lane_tables(blob, lane, &name(&format!("{what} lane {l}")));
            let capacity = mask as usize + 1;
            let mut accept = lane.accept_set.clone();
            accept.resize(capacity, 0);
            let accept = blob.add_u32(name(&format!("{what} lane {l} accept")), &accept, 0);
            let sets = blob.add_u32(name(&format!("{what} lane {l} sets")), &sets, 0);
            at.lanes.push(LaneAt {
                class,
                next,
                mask,
                classes: lane.class_count,
                state: take_state(),
                kind: LaneKind::AtEnd { accept, sets, set_mask: set_capacity as u32 - 1 },
            });
        }
        for (s, lane) in automaton.sticky_lanes.iter().enumerate() {
            let (class, next, mask) = lane_tables(blob, &lane.automaton, &name(&format!("{what} sticky {s}")));
            let mut seen = lane.seen_mask.clone();
            seen.resize(mask as usize + 1, 0);
            let seen = blob.add_u64(name(&format!("{what} sticky {s} seen")), &seen, 0);
            at.lanes.push(LaneAt {
                class,
                next,
                mask,
                classes: lane.automaton.class_count,
                state: take_state(),
                kind: LaneKind::Sticky { seen, word: sticky_words[k][s] },
            });
        }
        placed.push(at);
    }
    let members_capacity = members.len().max(1).next_power_of_two();
    members.resize(members_capacity, 0);
    let members_at = blob.add_u32(name("accept members"), &members, 0);

    // Decision records.
    let decision = &policy.decision;
    let mut records: Vec<u8> = Vec::new();

    let mut rule_starts: Vec<u32> = Vec::with_capacity(decision.rules.len() + 1);
    for rule in &decision.rules {
        rule_starts.push((records.len() / 8) as u32);
        let clauses = rule.first_clause..rule.first_clause + rule.clause_count;
        if clauses.is_empty() {
            push_record(&mut records, record::TRUE, record::END_CLAUSE | record::END_RULE, 0, 0);
            continue;
        }
        for clause in clauses.clone() {
            let last_clause = clause + 1 == clauses.end;
            let literals = decision.clause(clause);
            let end = |last_literal: bool| {
                let mut flags = 0;
                if last_literal {
                    flags |= record::END_CLAUSE;
                    if last_clause {
                        flags |= record::END_RULE;
                    }
                }
                flags
            };
            if literals.is_empty() {
                push_record(&mut records, record::FALSE, end(true), 0, 0);
                continue;
            }
            for (i, literal) in literals.iter().enumerate() {
                let flags = end(i + 1 == literals.len()) | if literal.negated { record::NEGATED } else { 0 };
                match decision.atoms.get(literal.atom as usize) {
                    Some(Atom::MethodIn { set }) => push_record(&mut records, record::METHOD, flags, 0, *set),
                    Some(Atom::HeaderPresent { header }) => push_record(&mut records, record::PRESENT, flags, u16::from(*header), 0),
                    Some(Atom::Path { pattern }) => push_record(&mut records, record::FACT, flags, 0, fact_of[0][*pattern as usize]),
                    Some(Atom::HeaderValue { header, pattern }) => {
                        let k = automata.iter().position(|(h, _)| *h == Some(*header));
                        match k {
                            Some(k) => push_record(&mut records, record::FACT, flags, 0, fact_of[k][*pattern as usize]),
                            None => push_record(&mut records, record::FALSE, flags & !record::NEGATED, 0, 0),
                        }
                    }
                    // An unknown atom never holds (fail closed).
                    None => push_record(&mut records, record::FALSE, flags & !record::NEGATED, 0, 0),
                }
            }
        }
    }
    rule_starts.push((records.len() / 8) as u32);
    let record_count = (records.len() / 8) as u32;
    let records_capacity = (record_count as usize).max(1).next_power_of_two();
    records.resize(records_capacity * 8, 0);
    let records_at = blob.add(name("decision records"), &records, 0);

    let mut rules: Vec<u8> = Vec::new();
    for rule in &decision.rules {
        let (action, ingress, slot) = match &rule.action {
            LoweredAction::Allow => (rule_action::ALLOW, 0, 0),
            LoweredAction::Deny => (rule_action::DENY, 0, 0),
            LoweredAction::AllowTunnel => (rule_action::ALLOW_TUNNEL, 0, 0),
            LoweredAction::Redirect { target, ingress } => (rule_action::REDIRECT, u8::from(*ingress), *target),
        };
        rules.extend_from_slice(&[action, u8::from(rule.log), ingress, 0]);
        rules.extend_from_slice(&slot.to_le_bytes());
    }
    let rules_capacity = decision.rules.len().max(1).next_power_of_two();
    // Padding rules deny (fail closed).
    while rules.len() < rules_capacity * 8 {
        rules.extend_from_slice(&[rule_action::DENY, 0, 0, 0, 0, 0, 0, 0]);
    }
    let rules_at = blob.add(name("rules"), &rules, 0);
    let mut sets = decision.method_sets.clone();
    let sets_capacity = sets.len().max(1).next_power_of_two();
    sets.resize(sets_capacity, 0);
    let method_sets = blob.add_u64(name("method sets"), &sets, 0);

    // The guard index (docs/lowering.md): per rule its records, per fact
    // the rules listed under its pattern, and the unguarded rules.
    let rules_capacity_plus = decision.rules.len().max(1).next_power_of_two();
    let mut starts = rule_starts.clone();
    let last = *starts.last().unwrap_or(&0);
    starts.resize(rules_capacity_plus + 1, last);
    let rule_records = blob.add_u32(name("rule records"), &starts, 0);
    let mut guard_members: Vec<u32> = decision.unguarded.clone();
    let unguarded = (0u32, guard_members.len() as u32);
    let fact_capacity = (fact_words as usize * 64).next_power_of_two();
    let mut fact_guards: Vec<u32> = vec![0; fact_capacity * 2];
    for (k, (_, automaton)) in automata.iter().enumerate() {
        for (pattern, &fact) in fact_of[k].iter().enumerate() {
            let list = automaton.guarded_rules.get(pattern as u32);
            let start = guard_members.len() as u32;
            guard_members.extend_from_slice(list);
            if let Some(slot) = fact_guards.get_mut(fact as usize * 2..fact as usize * 2 + 2) {
                slot.copy_from_slice(&[start, guard_members.len() as u32]);
            }
        }
    }
    let guard_total = guard_members.len();
    let members_cap = guard_members.len().max(1).next_power_of_two();
    guard_members.resize(members_cap, 0);
    let fact_guards_at = blob.add_u32(name("fact guards"), &fact_guards, 0);
    let guard_members_at = blob.add_u32(name("guard members"), &guard_members, 0);
    let sticky: Vec<u32> = sticky_words.iter().flatten().copied().collect();

    let refuse_duplicates = policy
        .headers
        .headers
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.refuse_duplicates)
        .fold(0u64, |mask, (i, _)| mask | 1u64 << ((i + 1) & 63));

    PolicyTables {
        method,
        name: header_names,
        path: placed.first().cloned().unwrap_or_default(),
        values: automata.iter().zip(placed.iter()).skip(1).filter_map(|((h, _), at)| h.map(|h| (h, at.clone()))).collect(),
        members: members_at,
        members_mask: members_capacity as u32 - 1,
        records: records_at,
        record_count,
        records_mask: records_capacity as u32 - 1,
        rules: rules_at,
        rules_mask: rules_capacity as u32 - 1,
        method_sets,
        method_sets_mask: sets_capacity as u32 - 1,
        refuse_duplicates,
        refuse_get_body: policy.get_body == crate::model::GetBodyVerdict::Deny,
        rule_records,
        rule_records_mask: rules_capacity_plus as u32 - 1,
        fact_guards: fact_guards_at,
        fact_guards_mask: fact_capacity as u32 - 1,
        guard_members: guard_members_at,
        guard_members_mask: members_cap as u32 - 1,
        unguarded,
        sticky_words: sticky,
        guarded_bound: (u64::from(record_count) * (CANDIDATES as u64 + 1) + guard_total as u64 + CANDIDATES as u64 + 2)
            .min(1 << 23) as u32,
        fact_words,
    }
}

/// One decision record: kind, flags, `u16`, `u32`.
fn push_record(records: &mut Vec<u8>, kind: u8, flags: u8, arg16: u16, arg32: u32) {
    records.push(kind);
    records.push(flags);
    records.extend_from_slice(&arg16.to_le_bytes());
    records.extend_from_slice(&arg32.to_le_bytes());
}

fn token_lane(blob: &mut Blob, table: &TokenTable, what: &str, state: i16) -> LaneAt {
    let (class, next, mask) = lane_tables(blob, &table.automaton, what);
    let mut ids = table.id_at_end.clone();
    ids.resize(mask as usize + 1, 0);
    let id_at_end = blob.add(format!("{what} ids"), &ids, 0);
    LaneAt { class, next, mask, classes: table.automaton.class_count, state, kind: LaneKind::Token { id_at_end } }
}

/// The byte classes and the `next` table (u16, rows padded to a power of
/// two, plus [`CLASS_SLACK`] dead entries); returns (class, next, mask).
fn lane_tables(blob: &mut Blob, automaton: &Automaton, what: &str) -> (u32, u32, u32) {
    let class = blob.add(format!("{what} classes"), &automaton.byte_class, 0);
    let capacity = (automaton.state_count as usize).max(2).next_power_of_two();
    let mut next: Vec<u16> = automaton.next.iter().map(|&s| s as u16).collect();
    next.resize(capacity * automaton.class_count as usize, DEAD as u16);
    let next = blob.add_u16(format!("{what} next"), &next, CLASS_SLACK);
    (class, next, capacity as u32 - 1)
}

/// Storage offsets of the per-run scratch and scan state (see
/// `layout`); the automaton area starts at [`layout::AREA`].
pub fn facts_offset(area_bytes: u32) -> i16 {
    let end = layout::AREA as u32 + area_bytes;
    end.next_multiple_of(8) as i16
}

/// A policy's descriptor in the blob: the offsets and masks of its tables
/// and the facts of it the one code path reads (`describe`). Every field
/// is a `u32` unless named otherwise.
pub mod desc {
    pub const MEMBERS: i16 = 0;
    pub const MEMBERS_MASK: i16 = 4;
    pub const RECORDS: i16 = 8;
    pub const RECORD_COUNT: i16 = 12;
    pub const RECORDS_MASK: i16 = 16;
    pub const RULES: i16 = 20;
    pub const RULES_MASK: i16 = 24;
    pub const METHOD_SETS: i16 = 28;
    pub const METHOD_SETS_MASK: i16 = 32;
    pub const RULE_RECORDS: i16 = 36;
    pub const RULE_RECORDS_MASK: i16 = 40;
    pub const FACT_GUARDS: i16 = 44;
    pub const FACT_GUARDS_MASK: i16 = 48;
    pub const GUARD_MEMBERS: i16 = 52;
    pub const GUARD_MEMBERS_MASK: i16 = 56;
    pub const UNGUARDED_START: i16 = 60;
    pub const UNGUARDED_END: i16 = 64;
    pub const GUARDED_BOUND: i16 = 68;
    pub const LANE_COUNT: i16 = 72;
    /// The sticky lanes' facts words: a `u32` list and its length.
    pub const STICKY: i16 = 76;
    pub const STICKY_COUNT: i16 = 80;
    /// Iterations that collect every at-end lane's accept set.
    pub const COLLECT_BOUND: i16 = 84;
    /// `u8`: 1 when the default denies.
    pub const DEFAULT_DENY: i16 = 88;
    /// `u8`: 1 when an opaque connection is denied.
    pub const OPAQUE_DENY: i16 = 89;
    /// `u8`: 1 for `get_body deny`.
    pub const GET_BODY_DENY: i16 = 90;
    /// `u8`: `event_flags::AUDIT` when the policy audits, else 0.
    pub const AUDIT: i16 = 91;
    /// `u16`: the path's lanes (`first | count << 8`).
    pub const PATH_GROUP: i16 = 92;
    /// `u8`: 1 when the header-name lane's dead state stays dead on every
    /// byte a name skip passes (`scan::NameSkip`).
    pub const NAME_SKIP: i16 = 94;
    /// `u64`: header ids whose repeated field line is refused.
    pub const REFUSE_DUPLICATES: i16 = 96;
    /// `u64`: header ids whose values the policy's matchers read.
    pub const READ: i16 = 104;
    /// The lane records' offset in the blob.
    pub const LANES: i16 = 112;
    pub const HEADER_BYTES: i16 = 116;
    pub const HEADERS: i16 = 120;
    /// Bytes a head's window reads: `header_bytes + 1`, or the HTTP/2
    /// preface line when that is longer.
    pub const WINDOW: i16 = 124;
    /// Counter index of the policy's first reason slot.
    pub const COUNTER_BASE: i16 = 128;
    /// `u16` per header id: its value lanes' group (`first | count << 8`).
    pub const VALUE_GROUPS: i16 = 136;
    pub const BYTES: usize = 264;
}

/// A lane record in the blob (32 bytes), lane `i` of a policy at
/// `lanes + 32 i`; its state is at `layout::AREA + 4 i`.
pub mod lane {
    pub const CLASS: i16 = 0;
    pub const NEXT: i16 = 4;
    pub const MASK: i16 = 8;
    pub const CLASSES: i16 = 12;
    /// `u8`: [`TOKEN`], [`AT_END`] or [`STICKY`].
    pub const KIND: i16 = 16;
    /// Token: `id_at_end`; at-end: `accept`; sticky: `seen`.
    pub const A: i16 = 20;
    /// At-end: `sets`; sticky: the facts word.
    pub const B: i16 = 24;
    /// At-end: the sets' mask.
    pub const C: i16 = 28;
    pub const BYTES: usize = 32;
    pub const SHIFT: i32 = 5;
    pub const TOKEN: u8 = 0;
    pub const AT_END: u8 = 1;
    pub const STICKY: u8 = 2;
}

/// The most lanes one group (the path, or one header's value) has
/// (`lower::MAX_LANES`): the group step is unrolled this many times.
pub const GROUP_LANES: usize = crate::lower::MAX_LANES;

/// Where a policy's descriptor is, for the frame's scope selection.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    pub desc: u32,
    pub lane_count: u32,
}

/// Whether the header-name automaton's dead state stays dead on every
/// byte a name skip passes, lowercased as the scan steps it: then such
/// bytes after the lane died change nothing but the offset.
fn names_stay_dead(names: &Automaton) -> bool {
    NameSkip::bytes().all(|byte| names.step(DEAD, byte.to_ascii_lowercase()) == DEAD)
}

/// A lane group: `first | count << 8`.
fn group(lanes: &[LaneAt]) -> u16 {
    let first = lanes.first().map(|lane| slot(lane.state)).unwrap_or(0);
    (first as u16) | ((lanes.len() as u16) << 8)
}

fn slot(state: i16) -> u32 {
    ((state - layout::AREA) / 4) as u32
}

/// Writes `tables`' lane records and descriptor into `blob`. Lane `i`'s
/// record is the lane whose state is `AREA + 4 i`, so the method lane is
/// lane 0 and the header-name lane lane 1.
pub fn describe(blob: &mut Blob, policy: &LoweredPolicy, tables: &PolicyTables, index: usize, counter_base: u32) -> Described {
    let all: Vec<&LaneAt> = [&tables.method, &tables.name]
        .into_iter()
        .chain(tables.path.lanes.iter())
        .chain(tables.values.iter().flat_map(|(_, at)| at.lanes.iter()))
        .collect();
    let mut records = vec![0u8; all.len() * lane::BYTES];
    for lane_at in &all {
        let (kind, a, b, c) = match lane_at.kind {
            LaneKind::Token { id_at_end } => (lane::TOKEN, id_at_end, 0, 0),
            LaneKind::AtEnd { accept, sets, set_mask } => (lane::AT_END, accept, sets, set_mask),
            LaneKind::Sticky { seen, word } => (lane::STICKY, seen, word, 0),
        };
        let at = slot(lane_at.state) as usize * lane::BYTES;
        let record = &mut records[at..at + lane::BYTES];
        for (offset, value) in [(lane::CLASS, lane_at.class), (lane::NEXT, lane_at.next), (lane::MASK, lane_at.mask), (lane::CLASSES, lane_at.classes), (lane::A, a), (lane::B, b), (lane::C, c)] {
            record[offset as usize..offset as usize + 4].copy_from_slice(&value.to_le_bytes());
        }
        record[lane::KIND as usize] = kind;
    }
    let lanes = blob.add(format!("policy {index} lanes"), &records, 0);
    let sticky = blob.add_u32(format!("policy {index} sticky words"), &tables.sticky_words, 0);
    let members = {
        // The members of all sets of every at-end lane: a bound on what
        // one head's accept sets can hold.
        (tables.members_mask + 1) as u64
    };
    let mut d = vec![0u8; desc::BYTES];
    let mut put = |offset: i16, value: u32| d[offset as usize..offset as usize + 4].copy_from_slice(&value.to_le_bytes());
    put(desc::MEMBERS, tables.members);
    put(desc::MEMBERS_MASK, tables.members_mask);
    put(desc::RECORDS, tables.records);
    put(desc::RECORD_COUNT, tables.record_count);
    put(desc::RECORDS_MASK, tables.records_mask);
    put(desc::RULES, tables.rules);
    put(desc::RULES_MASK, tables.rules_mask);
    put(desc::METHOD_SETS, tables.method_sets);
    put(desc::METHOD_SETS_MASK, tables.method_sets_mask);
    put(desc::RULE_RECORDS, tables.rule_records);
    put(desc::RULE_RECORDS_MASK, tables.rule_records_mask);
    put(desc::FACT_GUARDS, tables.fact_guards);
    put(desc::FACT_GUARDS_MASK, tables.fact_guards_mask);
    put(desc::GUARD_MEMBERS, tables.guard_members);
    put(desc::GUARD_MEMBERS_MASK, tables.guard_members_mask);
    put(desc::UNGUARDED_START, tables.unguarded.0);
    put(desc::UNGUARDED_END, tables.unguarded.1);
    put(desc::GUARDED_BOUND, tables.guarded_bound);
    put(desc::LANE_COUNT, all.len() as u32);
    put(desc::STICKY, sticky);
    put(desc::STICKY_COUNT, tables.sticky_words.len() as u32);
    // Lanes 0 and 1 are the method and header-name tokens, whatever the
    // policy (`all` above starts with them): collection starts at lane 2
    // (program.rs).
    // One iteration per lane, one per member of its accept set (each lane
    // has its own sets in the members table, so all of them together hold
    // at most every member), and one to stop. The head phase checks that
    // the collection ended (fail closed).
    put(desc::COLLECT_BOUND, (all.len() as u64 + members + 1).min(1 << 23) as u32);
    d[desc::DEFAULT_DENY as usize] = u8::from(policy.default == crate::model::DefaultVerdict::Deny);
    d[desc::OPAQUE_DENY as usize] = u8::from(policy.opaque == crate::model::OpaqueVerdict::Deny);
    d[desc::GET_BODY_DENY as usize] = u8::from(tables.refuse_get_body);
    d[desc::AUDIT as usize] = if policy.mode == crate::model::Mode::Audit { crate::abi::event_flags::AUDIT } else { 0 };
    let path_group = group(&tables.path.lanes);
    d[desc::PATH_GROUP as usize..desc::PATH_GROUP as usize + 2].copy_from_slice(&path_group.to_le_bytes());
    d[desc::NAME_SKIP as usize] = u8::from(names_stay_dead(&policy.headers.names.automaton));
    d[desc::REFUSE_DUPLICATES as usize..desc::REFUSE_DUPLICATES as usize + 8].copy_from_slice(&tables.refuse_duplicates.to_le_bytes());
    let read: u64 = tables.values.iter().fold(0, |mask, (header, _)| mask | 1 << (u32::from(*header) & 63));
    d[desc::READ as usize..desc::READ as usize + 8].copy_from_slice(&read.to_le_bytes());
    let header_bytes = policy.limits.header_bytes.max(1);
    let mut put = |offset: i16, value: u32| d[offset as usize..offset as usize + 4].copy_from_slice(&value.to_le_bytes());
    put(desc::LANES, lanes);
    put(desc::HEADER_BYTES, header_bytes);
    put(desc::HEADERS, policy.limits.headers);
    put(desc::WINDOW, (header_bytes + 1).max(crate::http::HTTP2_PREFACE_LINE.len() as u32));
    put(desc::COUNTER_BASE, counter_base);
    for (header, at) in &tables.values {
        let offset = desc::VALUE_GROUPS as usize + 2 * usize::from(*header & 63);
        d[offset..offset + 2].copy_from_slice(&group(&at.lanes).to_le_bytes());
    }
    let desc_at = blob.add(format!("policy {index} descriptor"), &d, 0);
    Described { desc: desc_at, lane_count: all.len() as u32 }
}

/// The most lanes (automata) one policy may have: their states' slots are
/// indexed by a byte (lane groups are `first | count << 8`).
pub const MAX_POLICY_LANES: u32 = 255;
