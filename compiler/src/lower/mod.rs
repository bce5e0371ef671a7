//! Lowering: a checked policy as tables and automata for a bounded,
//! table-driven BPF scan (`check → lower → codegen`).
//!
//! [`lower`] takes [`Checked`] (so an unchecked program cannot be lowered)
//! and gives one [`LoweredPolicy`] per policy:
//!
//! - [`TokenTable`]s recognise the method (id 1..=63, 0 = any other) and
//!   header names (ASCII-lowercased; id 1..=63, 0 = any other; the ids of
//!   `host`, `content-length`, `transfer-encoding` and `upgrade` are fixed,
//!   see [`HeaderId`]);
//! - one [`PatternAutomaton`] over the canonical path for every path
//!   matcher of the policy (one pattern per matcher, its list an
//!   alternation): one [`Automaton`], or a few "lanes" when one would be
//!   too large, and [`StickyLane`]s for many `contains` patterns;
//! - per header with value matchers (and `host` for host matchers, which
//!   see the raw Host value), one pattern automaton over the field value;
//! - a [`DecisionTable`]: atoms, per rule a conjunction of clauses over
//!   them and the action; each rule is listed under the patterns of one of
//!   its clauses (its guard), so a request walks only the rules its
//!   accepted patterns can satisfy, plus the unguarded ones.
//!
//! What the scanner must feed each automaton, each table's layout and the
//! per-request cost are in docs/lowering.md; [`walk`] is a user-space model
//! of the kernel's scan and decision over these tables, nothing else.
//!
//! Invariants:
//! - a lowered policy decides every request exactly as the reference
//!   evaluator does (tests/lower_differential.rs compares them);
//! - the output depends only on the input: hash maps are only looked up,
//!   never iterated, so no table order depends on hashing;
//! - every limit (methods, header names, clauses per rule, automaton
//!   states and lanes) is checked here and reported as a [`LowerError`]
//!   naming the policy, never left to the verifier.

mod automaton;
mod decision;
mod pattern;
pub mod walk;

pub use automaton::{
    Automaton, IdLists, PatternLane, StickyLane, DEAD, MAX_LANES, MAX_STATES, START, STICKY_FROM, STICKY_LANE_PATTERNS,
};

use crate::check::Checked;
use crate::model::{
    Action, Condition, ConditionKind, DefaultVerdict, Limits, Mode, OpaqueVerdict, Policy, Scope,
};
use decision::{Atoms, PatternRegistry};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Most distinct methods a policy may name: ids 1..=63 and 0 for the rest,
/// so a method set is one `u64` mask.
pub const MAX_METHODS: usize = 63;
/// Most distinct header names (the four the protocol needs included): ids
/// 1..=63, so the presence bits are one `u64`.
pub const MAX_HEADER_NAMES: usize = 63;
/// Most clauses one rule may have once in conjunctive normal form (only
/// `any` groups holding `not any { ... }` multiply clauses).
pub const MAX_CLAUSES_PER_RULE: usize = 256;

/// The fixed ids of the header names the protocol needs: the scanner's
/// (`scan::HeaderId`), which the header-name automaton must give them.
pub use crate::scan::HeaderId;

/// Why a checked program could not be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error("policy `{policy}` names {count} methods; at most {limit} are supported")]
    TooManyMethods { policy: String, count: usize, limit: usize },
    #[error("policy `{policy}` names {count} header names (with the 4 the protocol needs); at most {limit} are supported")]
    TooManyHeaderNames { policy: String, count: usize, limit: usize },
    #[error("rule `{rule}` of policy `{policy}` expands to {clauses} clauses; at most {limit} are supported (simplify `any` groups that hold `not any`)")]
    RuleTooComplex { policy: String, rule: String, clauses: usize, limit: usize },
    #[error("the {what} is too large: {detail}")]
    AutomatonTooLarge { what: String, detail: String },
    #[error("internal error lowering the {what}: {message}")]
    Internal { what: String, message: String },
}

/// Every policy of a program, lowered.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub policies: Vec<LoweredPolicy>,
}

/// One policy's tables.
#[derive(Debug, Clone)]
pub struct LoweredPolicy {
    pub name: String,
    pub scope: Scope,
    pub default: DefaultVerdict,
    pub mode: Mode,
    pub opaque: OpaqueVerdict,
    pub get_body: crate::model::GetBodyVerdict,
    pub limits: Limits,
    pub methods: TokenTable,
    pub path: PatternAutomaton,
    pub headers: HeaderTable,
    pub decision: DecisionTable,
}

/// Tokens recognised by an automaton: the token of id `i` is
/// `tokens[i - 1]`; id 0 is "none of them".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTable {
    pub tokens: Vec<Vec<u8>>,
    pub automaton: Automaton,
    /// Per state: the id of the token the input is if it ends there, or 0.
    pub id_at_end: Vec<u8>,
}

impl TokenTable {
    /// The id of a token (what the scan computes, walking the automaton).
    pub fn id_of(&self, token: &[u8]) -> u8 {
        self.id_at_end.get(self.automaton.run(token) as usize).copied().unwrap_or(0)
    }
}

/// The automata ("lanes") over one input and the matchers their patterns
/// stand for. Usually one lane; more when one automaton for every pattern
/// would be too large, and sticky lanes for many `contains` patterns (each
/// byte of the input is fed to every lane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternAutomaton {
    /// Lanes whose accept set at the input's end says which patterns hold.
    pub lanes: Vec<Automaton>,
    /// Lanes for `contains` patterns, which hold from the byte their match
    /// ends at (see [`StickyLane`]).
    pub sticky_lanes: Vec<StickyLane>,
    /// Per pattern id: where the scan finds it.
    pub lane_of_pattern: Vec<PatternLane>,
    /// Per pattern id: the matcher as written (`path prefix "/api"`).
    pub matchers: Vec<String>,
    /// Per pattern id: the byte regex it was compiled from (anchored at
    /// the start; a pattern in a floating lane is searched without its
    /// leading loop).
    pub regexes: Vec<String>,
    /// Per pattern id: the rules guarded by it, in rule order.
    pub guarded_rules: IdLists,
}

/// Header names and, per header id, what the scan does with the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTable {
    pub names: TokenTable,
    /// Per header id, at index `id - 1`.
    pub headers: Vec<HeaderSlot>,
}

impl HeaderTable {
    pub fn slot(&self, id: u8) -> Option<&HeaderSlot> {
        usize::from(id).checked_sub(1).and_then(|index| self.headers.get(index))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSlot {
    pub name: String,
    /// A value matcher (or host matcher, for `host`) names it: a request
    /// with two such field lines is `malformed:duplicate-header`.
    pub refuse_duplicates: bool,
    /// The automaton over its value, when value matchers name it.
    pub values: Option<PatternAutomaton>,
}

/// What a literal tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// The method id is in `method_sets[set]` (a mask over ids).
    MethodIn { set: u32 },
    /// The path's accept set holds `pattern` (never for CONNECT).
    Path { pattern: u32 },
    /// A field line named `header` is present.
    HeaderPresent { header: u8 },
    /// The value automaton of `header` accepts `pattern` at the value's
    /// end (never when the field is absent).
    HeaderValue { header: u8, pattern: u32 },
}

/// An atom or its negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Literal {
    pub atom: u32,
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoweredAction {
    Allow,
    Deny,
    AllowTunnel,
    /// `target` indexes [`DecisionTable::redirect_targets`].
    Redirect { target: u32, ingress: bool },
}

/// A pattern under which a rule is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guard {
    Path { pattern: u32 },
    HeaderValue { header: u8, pattern: u32 },
}

/// One rule: it holds when each of its clauses
/// `clause_offsets[first_clause .. first_clause + clause_count]` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    pub name: String,
    pub action: LoweredAction,
    pub log: bool,
    pub first_clause: u32,
    pub clause_count: u32,
    /// The patterns the rule is listed under (in their automata's
    /// [`PatternAutomaton::guarded_rules`]): one of its clauses, so the rule
    /// holds only if one of them is accepted. Empty: the rule is in
    /// [`DecisionTable::unguarded`].
    pub guard: Vec<Guard>,
}

/// The rules over atoms (see docs/lowering.md for the evaluation and its
/// cost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionTable {
    pub atoms: Vec<Atom>,
    /// Masks over method ids (bit `id`).
    pub method_sets: Vec<u64>,
    pub rules: Vec<RuleEntry>,
    /// Clause `c` is `literals[clause_offsets[c]..clause_offsets[c + 1]]`.
    pub clause_offsets: Vec<u32>,
    pub literals: Vec<Literal>,
    /// Rules without a guard, in order.
    pub unguarded: Vec<u32>,
    pub redirect_targets: Vec<String>,
}

impl DecisionTable {
    /// The literals of clause `clause`.
    pub fn clause(&self, clause: u32) -> &[Literal] {
        let index = clause as usize;
        match (self.clause_offsets.get(index), self.clause_offsets.get(index + 1)) {
            (Some(&start), Some(&end)) => self.literals.get(start as usize..end as usize).unwrap_or_default(),
            _ => &[],
        }
    }

    /// Bytes as the BPF program would hold them: atoms 8 (kind, header,
    /// pattern or set), method sets 8, rules 12 (first clause, clause
    /// count, action, target, flags), clause offsets 4, literals 4 (atom
    /// and a negation bit), unguarded rule numbers 4.
    pub fn table_bytes(&self) -> usize {
        self.atoms.len() * 8
            + self.method_sets.len() * 8
            + self.rules.len() * 12
            + self.clause_offsets.len() * 4
            + self.literals.len() * 4
            + self.unguarded.len() * 4
    }

    pub fn clause_count(&self) -> usize {
        self.clause_offsets.len().saturating_sub(1)
    }

    /// The most clauses of one rule, and the most literals of one clause:
    /// the bounds of the decision's inner loops.
    pub fn widest(&self) -> (usize, usize) {
        let clauses = self.rules.iter().map(|rule| rule.clause_count as usize).max().unwrap_or(0);
        let literals = (0..self.clause_count()).map(|c| self.clause(c as u32).len()).max().unwrap_or(0);
        (clauses, literals)
    }
}

/// Lower every policy of a checked program.
pub fn lower(checked: &Checked) -> Result<Lowered, LowerError> {
    let policies = checked.program().policies.iter().map(lower_policy).collect::<Result<Vec<_>, _>>()?;
    Ok(Lowered { policies })
}

fn lower_policy(policy: &Policy) -> Result<LoweredPolicy, LowerError> {
    let named = NamedTokens::collect(policy);
    if named.methods.len() > MAX_METHODS {
        return Err(LowerError::TooManyMethods { policy: policy.name.clone(), count: named.methods.len(), limit: MAX_METHODS });
    }
    let mut header_names: Vec<Vec<u8>> = HeaderId::PROTOCOL.iter().map(|name| name.as_bytes().to_vec()).collect();
    let policy_named: Vec<Vec<u8>> = named.headers.into_iter().filter(|name| !header_names.contains(name)).collect();
    header_names.extend(policy_named);
    if header_names.len() > MAX_HEADER_NAMES {
        return Err(LowerError::TooManyHeaderNames { policy: policy.name.clone(), count: header_names.len(), limit: MAX_HEADER_NAMES });
    }
    let methods: Vec<Vec<u8>> = named.methods.into_iter().collect();
    let method_ids = ids_from_one(&methods);
    let header_ids = ids_from_one(&header_names);

    let mut atoms = Atoms::new(&method_ids, &header_ids);
    let mut clause_offsets = vec![0u32];
    let mut literals = Vec::new();
    let mut rule_clauses = Vec::with_capacity(policy.rules.len());
    for rule in &policy.rules {
        let clauses = atoms.clauses(&rule.conditions)?.map_err(|clauses| LowerError::RuleTooComplex {
            policy: policy.name.clone(),
            rule: rule.name.clone(),
            clauses,
            limit: MAX_CLAUSES_PER_RULE,
        })?;
        rule_clauses.push(clauses);
    }
    let guards = decision::choose_guards(&rule_clauses, &atoms.atoms);
    let mut rules = Vec::with_capacity(policy.rules.len());
    let mut redirect_targets: Vec<String> = Vec::new();
    for ((rule, clauses), guard) in policy.rules.iter().zip(rule_clauses).zip(&guards) {
        let first_clause = u32::try_from(clause_offsets.len() - 1).unwrap_or(u32::MAX);
        let clause_count = u32::try_from(clauses.len()).unwrap_or(u32::MAX);
        for clause in clauses {
            literals.extend(clause);
            clause_offsets.push(u32::try_from(literals.len()).unwrap_or(u32::MAX));
        }
        let action = match &rule.action {
            Action::Allow => LoweredAction::Allow,
            Action::Deny => LoweredAction::Deny,
            Action::AllowTunnel => LoweredAction::AllowTunnel,
            Action::Redirect { target, ingress } => {
                let index = match redirect_targets.iter().position(|known| known == target) {
                    Some(index) => index,
                    None => {
                        redirect_targets.push(target.clone());
                        redirect_targets.len() - 1
                    }
                };
                LoweredAction::Redirect { target: u32::try_from(index).unwrap_or(u32::MAX), ingress: *ingress }
            }
        };
        rules.push(RuleEntry { name: rule.name.clone(), action, log: rule.log, first_clause, clause_count, guard: guard.clone() });
    }
    let unguarded: Vec<u32> =
        guards.iter().enumerate().filter(|(_, guard)| guard.is_empty()).map(|(rule, _)| u32::try_from(rule).unwrap_or(u32::MAX)).collect();

    let method_table = token_table(&format!("method automaton of policy `{}`", policy.name), &methods, pattern::method)?;
    let path = pattern_automaton(&format!("path automaton of policy `{}`", policy.name), std::mem::take(&mut atoms.path_patterns), &guards, |guard| match guard {
        Guard::Path { pattern } => Some(*pattern),
        Guard::HeaderValue { .. } => None,
    })?;
    let value_matched = policy.value_matched_headers();
    let mut value_patterns = std::mem::take(&mut atoms.value_patterns);
    let mut slots = Vec::with_capacity(header_names.len());
    for (index, name) in header_names.iter().enumerate() {
        let name_text = String::from_utf8_lossy(name).into_owned();
        let id = u8::try_from(index + 1).unwrap_or(u8::MAX);
        let values = match value_patterns.remove(&id) {
            Some(registry) if !registry.is_empty() => {
                let what = format!("value automaton of header `{name_text}` in policy `{}`", policy.name);
                Some(pattern_automaton(&what, registry, &guards, |guard| match guard {
                    Guard::HeaderValue { header, pattern } if *header == id => Some(*pattern),
                    _ => None,
                })?)
            }
            _ => None,
        };
        let refuse_duplicates = value_matched.contains(&name_text);
        slots.push(HeaderSlot { name: name_text, refuse_duplicates, values });
    }
    let names = token_table(&format!("header-name automaton of policy `{}`", policy.name), &header_names, pattern::header_name)?;

    Ok(LoweredPolicy {
        name: policy.name.clone(),
        scope: policy.scope.clone(),
        // `check` refuses a policy without a default; a missing one would
        // deny, as the reference evaluator does.
        default: policy.default.unwrap_or(DefaultVerdict::Deny),
        mode: policy.mode,
        opaque: policy.opaque,
        get_body: policy.get_body,
        limits: policy.limits,
        methods: method_table,
        path,
        headers: HeaderTable { names, headers: slots },
        decision: DecisionTable {
            atoms: atoms.atoms,
            method_sets: atoms.method_sets,
            rules,
            clause_offsets,
            literals,
            unguarded,
            redirect_targets,
        },
    })
}

/// Ids 1, 2, ... in list order.
fn ids_from_one(tokens: &[Vec<u8>]) -> BTreeMap<Vec<u8>, u8> {
    tokens.iter().enumerate().map(|(index, token)| (token.clone(), u8::try_from(index + 1).unwrap_or(u8::MAX))).collect()
}

fn token_table(what: &str, tokens: &[Vec<u8>], regex: fn(&[u8]) -> String) -> Result<TokenTable, LowerError> {
    let regexes: Vec<String> = tokens.iter().map(|token| regex(token)).collect();
    let automaton = automaton::build(what, &regexes)?;
    let mut id_at_end = Vec::with_capacity(automaton.state_count as usize);
    for state in 0..automaton.state_count {
        // Distinct tokens are distinct exact patterns: at most one holds.
        let id = match automaton.accepted(state) {
            [pattern] => u8::try_from(pattern + 1).unwrap_or(0),
            _ => 0,
        };
        id_at_end.push(id);
    }
    Ok(TokenTable { tokens: tokens.to_vec(), automaton, id_at_end })
}

fn pattern_automaton(
    what: &str,
    registry: PatternRegistry,
    guards: &[Vec<Guard>],
    belongs: impl Fn(&Guard) -> Option<u32>,
) -> Result<PatternAutomaton, LowerError> {
    let built = automaton::build_lanes(what, &registry.regexes)?;
    let guarded_rules = decision::guarded_rules(guards, registry.regexes.len(), belongs);
    let regexes = registry.regexes.into_iter().map(|regex| regex.anchored).collect();
    Ok(PatternAutomaton {
        lanes: built.at_end,
        sticky_lanes: built.sticky,
        lane_of_pattern: built.lane_of_pattern,
        matchers: registry.matchers,
        regexes,
        guarded_rules,
    })
}

/// The methods and header names a policy's rules name, sorted.
struct NamedTokens {
    methods: BTreeSet<Vec<u8>>,
    headers: BTreeSet<Vec<u8>>,
}

impl NamedTokens {
    fn collect(policy: &Policy) -> Self {
        let mut named = NamedTokens { methods: BTreeSet::new(), headers: BTreeSet::new() };
        for rule in &policy.rules {
            for condition in &rule.conditions {
                named.visit(condition);
            }
        }
        named
    }

    fn visit(&mut self, condition: &Condition) {
        match &condition.kind {
            ConditionKind::Method(methods) => self.methods.extend(methods.iter().cloned()),
            ConditionKind::Header { name, .. } => {
                self.headers.insert(name.to_ascii_lowercase().into_bytes());
            }
            ConditionKind::Any(group) => group.iter().for_each(|member| self.visit(member)),
            ConditionKind::Not(inner) => self.visit(inner),
            ConditionKind::Path { .. } | ConditionKind::Host { .. } => {}
        }
    }
}

impl Lowered {
    /// A summary of every policy's tables, for `l7c compile --emit report`.
    pub fn report(&self) -> String {
        self.policies.iter().map(LoweredPolicy::report).collect::<Vec<_>>().join("\n")
    }
}

impl LoweredPolicy {
    /// The IR in words: ids, patterns (with their lane), atoms and each
    /// rule's clauses and guard. For review and snapshots; the tables
    /// themselves are in the fields.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy {:?} (default {:?}, mode {:?})", self.name, self.default, self.mode);
        let tokens = |table: &TokenTable| -> String {
            table
                .tokens
                .iter()
                .enumerate()
                .map(|(index, token)| format!("{}={}", index + 1, String::from_utf8_lossy(token)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "methods: {}", tokens(&self.methods));
        let _ = writeln!(out, "headers: {}", tokens(&self.headers.names));
        let patterns = |out: &mut String, title: &str, automaton: &PatternAutomaton| {
            let sticky = match automaton.sticky_lanes.len() {
                0 => String::new(),
                count => format!(" + {count} sticky"),
            };
            let _ = writeln!(out, "{title} ({} lanes{sticky}):", automaton.lanes.len());
            for (index, matcher) in automaton.matchers.iter().enumerate() {
                let lane = match automaton.lane_of_pattern.get(index) {
                    Some(PatternLane::AtEnd { lane }) => format!("lane {lane}"),
                    Some(PatternLane::Sticky { lane, bit }) => format!("sticky lane {lane} bit {bit}"),
                    None => "no lane".to_string(),
                };
                let rules = automaton.guarded_rules.get(u32::try_from(index).unwrap_or(u32::MAX));
                let _ = writeln!(out, "  p{index} {lane}: {matcher}  guards {rules:?}");
            }
        };
        patterns(&mut out, "path patterns", &self.path);
        for (index, slot) in self.headers.headers.iter().enumerate() {
            let duplicates = if slot.refuse_duplicates { ", duplicates refused" } else { "" };
            match &slot.values {
                Some(values) => patterns(&mut out, &format!("header {} `{}` values{duplicates}", index + 1, slot.name), values),
                None if slot.refuse_duplicates => {
                    let _ = writeln!(out, "header {} `{}`{duplicates}", index + 1, slot.name);
                }
                None => {}
            }
        }
        let decision = &self.decision;
        let _ = writeln!(out, "atoms:");
        for (index, atom) in decision.atoms.iter().enumerate() {
            let text = match atom {
                Atom::MethodIn { set } => format!("method in {:#x}", decision.method_sets.get(*set as usize).copied().unwrap_or(0)),
                Atom::Path { pattern } => format!("path p{pattern}"),
                Atom::HeaderPresent { header } => format!("header {header} present"),
                Atom::HeaderValue { header, pattern } => format!("header {header} value p{pattern}"),
            };
            let _ = writeln!(out, "  a{index}: {text}");
        }
        let _ = writeln!(out, "rules (unguarded: {:?}):", decision.unguarded);
        for (index, rule) in decision.rules.iter().enumerate() {
            let clauses: Vec<String> = (rule.first_clause..rule.first_clause + rule.clause_count)
                .map(|clause| {
                    let literals: Vec<String> = decision
                        .clause(clause)
                        .iter()
                        .map(|literal| format!("{}a{}", if literal.negated { "!" } else { "" }, literal.atom))
                        .collect();
                    format!("({})", literals.join(" | "))
                })
                .collect();
            let clauses = if clauses.is_empty() { "true".to_string() } else { clauses.join(" & ") };
            let log = if rule.log { " log" } else { "" };
            let _ = writeln!(out, "  r{index} {:?}: {clauses} => {:?}{log}", rule.name, rule.action);
        }
        out
    }

    /// Table sizes and the bounds of the decision's loops.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy {:?}: {} rules", self.name, self.decision.rules.len());
        let mut total = 0usize;
        total += report_line(&mut out, "method automaton", &self.methods.automaton, self.methods.tokens.len(), None);
        total += report_lanes(&mut out, "path automaton", &self.path);
        total += report_line(&mut out, "header-name automaton", &self.headers.names.automaton, self.headers.names.tokens.len(), None);
        for slot in &self.headers.headers {
            if let Some(values) = &slot.values {
                total += report_lanes(&mut out, &format!("value automaton `{}`", slot.name), values);
            }
        }
        let decision = &self.decision;
        let (widest_rule, widest_clause) = decision.widest();
        let decision_bytes = decision.table_bytes();
        total += decision_bytes;
        let _ = writeln!(
            out,
            "  decision: {} atoms, {} method sets, {} clauses, {} literals (at most {} clauses per rule, {} literals per clause), {} unguarded rules: {} bytes",
            decision.atoms.len(),
            decision.method_sets.len(),
            decision.clause_count(),
            decision.literals.len(),
            widest_rule,
            widest_clause,
            decision.unguarded.len(),
            decision_bytes
        );
        let _ = writeln!(out, "  total {total} bytes");
        out
    }
}

/// One automaton's line of the report; returns its bytes.
fn report_line(out: &mut String, what: &str, automaton: &Automaton, patterns: usize, guarded: Option<&IdLists>) -> usize {
    let guard_bytes = guarded.map_or(0, |lists| (lists.offsets.len() + lists.members.len()) * 4);
    let guards = match guarded {
        Some(lists) => format!(", guard lists of {} rules (longest {})", lists.members.len(), lists.largest()),
        None => String::new(),
    };
    let bytes = automaton.table_bytes() + guard_bytes;
    let _ = writeln!(
        out,
        "  {what:<32} {:>6} states, {:>3} classes, {:>5} patterns, {:>5} accept sets (largest {}){guards}: {bytes} bytes",
        automaton.state_count,
        automaton.class_count,
        patterns,
        automaton.sets.len(),
        automaton.sets.largest(),
    );
    bytes
}

fn report_lanes(out: &mut String, what: &str, automaton: &PatternAutomaton) -> usize {
    let count = automaton.lanes.len() + automaton.sticky_lanes.len();
    let mut bytes = 0;
    let patterns_in = |wanted: &dyn Fn(&PatternLane) -> bool| automaton.lane_of_pattern.iter().filter(|lane| wanted(lane)).count();
    for (index, lane) in automaton.lanes.iter().enumerate() {
        let what = if count == 1 { what.to_string() } else { format!("{what} (lane {}/{count})", index + 1) };
        let patterns = patterns_in(&|l| *l == PatternLane::AtEnd { lane: u8::try_from(index).unwrap_or(u8::MAX) });
        bytes += report_line(out, &what, lane, patterns, (index == 0).then_some(&automaton.guarded_rules));
    }
    for (index, lane) in automaton.sticky_lanes.iter().enumerate() {
        let what = format!("{what} (lane {}/{count}, sticky)", automaton.lanes.len() + index + 1);
        let guards = (automaton.lanes.is_empty() && index == 0).then_some(&automaton.guarded_rules);
        // The seen masks: 8 bytes per state.
        bytes += report_line(out, &what, &lane.automaton, lane.patterns.len(), guards) + lane.seen_mask.len() * 8;
    }
    bytes
}
