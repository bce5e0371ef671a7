//! The rules as a decision over atoms: each rule's conditions become a
//! conjunction of clauses (each an OR of possibly negated atoms), and the
//! rules are indexed by a pattern they require.
//!
//! Invariants:
//! - a rule's clauses hold together exactly when its conditions do
//!   (conversion to conjunctive normal form, with `not` pushed onto atoms;
//!   only tautological clauses and repeated literals are dropped);
//! - a rule's guard is one of its clauses made only of positive pattern
//!   literals (path patterns, header value patterns): the rule cannot hold
//!   unless one of them is in its automaton's accept set, so it is listed
//!   under each of them and walked only when one is accepted; a rule with
//!   no such clause is in `unguarded`; each list is in rule order;
//! - atoms, method sets and patterns are numbered in order of first
//!   appearance, so the same policy always gives the same tables.

use super::automaton::IdLists;
use super::pattern::{self, MatcherRegex};
use super::{Atom, Guard, Literal, LowerError, MAX_CLAUSES_PER_RULE};
use crate::model::{Condition, ConditionKind, HeaderTest, HostOp, PathOp, ValueOp};
use std::collections::BTreeMap;

/// Patterns of one automaton, deduplicated by regex.
#[derive(Debug, Default)]
pub(crate) struct PatternRegistry {
    ids: BTreeMap<String, u32>,
    pub regexes: Vec<MatcherRegex>,
    pub matchers: Vec<String>,
}

impl PatternRegistry {
    fn intern(&mut self, regex: MatcherRegex, matcher: impl FnOnce() -> String) -> u32 {
        if let Some(&id) = self.ids.get(&regex.anchored) {
            return id;
        }
        let id = u32::try_from(self.regexes.len()).unwrap_or(u32::MAX);
        self.ids.insert(regex.anchored.clone(), id);
        self.regexes.push(regex);
        self.matchers.push(matcher());
        id
    }

    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }
}

/// What the rules of one policy refer to, filled while translating them.
pub(crate) struct Atoms<'a> {
    /// Method token → id (ids from 1).
    pub method_ids: &'a BTreeMap<Vec<u8>, u8>,
    /// Header name → id (ids from 1).
    pub header_ids: &'a BTreeMap<Vec<u8>, u8>,
    pub atoms: Vec<Atom>,
    atom_ids: BTreeMap<Atom, u32>,
    pub method_sets: Vec<u64>,
    method_set_ids: BTreeMap<u64, u32>,
    pub path_patterns: PatternRegistry,
    /// Value patterns per header id.
    pub value_patterns: BTreeMap<u8, PatternRegistry>,
}

/// A rule's conditions in negation normal form.
enum Formula {
    Literal(Literal),
    All(Vec<Formula>),
    Any(Vec<Formula>),
}

impl<'a> Atoms<'a> {
    pub fn new(method_ids: &'a BTreeMap<Vec<u8>, u8>, header_ids: &'a BTreeMap<Vec<u8>, u8>) -> Self {
        Atoms {
            method_ids,
            header_ids,
            atoms: Vec::new(),
            atom_ids: BTreeMap::new(),
            method_sets: Vec::new(),
            method_set_ids: BTreeMap::new(),
            path_patterns: PatternRegistry::default(),
            value_patterns: BTreeMap::new(),
        }
    }

    fn atom(&mut self, atom: Atom) -> u32 {
        if let Some(&id) = self.atom_ids.get(&atom) {
            return id;
        }
        let id = u32::try_from(self.atoms.len()).unwrap_or(u32::MAX);
        self.atom_ids.insert(atom, id);
        self.atoms.push(atom);
        id
    }

    /// The header id of a name the caller collected before (every name a
    /// rule uses was given an id; an unknown one would be a bug, reported).
    fn header_id(&self, name: &[u8]) -> Result<u8, LowerError> {
        self.header_ids.get(name).copied().ok_or_else(|| LowerError::Internal {
            what: "header names".into(),
            message: format!("header {} has no id", quoted(name)),
        })
    }

    fn method_set(&mut self, methods: &[Vec<u8>]) -> Result<u32, LowerError> {
        let mut mask = 0u64;
        for method in methods {
            let id = self.method_ids.get(method).copied().ok_or_else(|| LowerError::Internal {
                what: "methods".into(),
                message: format!("method {} has no id", quoted(method)),
            })?;
            mask |= 1u64 << (id & 63);
        }
        if let Some(&id) = self.method_set_ids.get(&mask) {
            return Ok(id);
        }
        let id = u32::try_from(self.method_sets.len()).unwrap_or(u32::MAX);
        self.method_set_ids.insert(mask, id);
        self.method_sets.push(mask);
        Ok(id)
    }

    fn value_pattern(&mut self, header: u8, regex: MatcherRegex, matcher: impl FnOnce() -> String) -> u32 {
        self.value_patterns.entry(header).or_default().intern(regex, matcher)
    }

    fn formula(&mut self, condition: &Condition, negated: bool) -> Result<Formula, LowerError> {
        let literal = |atom: u32, negated: bool| Ok(Formula::Literal(Literal { atom, negated }));
        match &condition.kind {
            ConditionKind::Method(methods) => {
                let set = self.method_set(methods)?;
                literal(self.atom(Atom::MethodIn { set }), negated)
            }
            ConditionKind::Path { op, patterns } => {
                let pattern = self.path_patterns.intern(pattern::path(*op, patterns), || path_matcher(*op, patterns));
                literal(self.atom(Atom::Path { pattern }), negated)
            }
            ConditionKind::Header { name, test } => {
                let header = self.header_id(name.as_bytes())?;
                match test {
                    HeaderTest::Present => literal(self.atom(Atom::HeaderPresent { header }), negated),
                    HeaderTest::Absent => literal(self.atom(Atom::HeaderPresent { header }), !negated),
                    HeaderTest::Value { op, nocase, values } => {
                        let regex = pattern::header_value(*op, *nocase, values);
                        let pattern = self.value_pattern(header, regex, || value_matcher(name, *op, *nocase, values));
                        literal(self.atom(Atom::HeaderValue { header, pattern }), negated)
                    }
                }
            }
            ConditionKind::Host { op, values } => {
                let header = self.header_id(b"host")?;
                let pattern = self.value_pattern(header, pattern::host(*op, values), || host_matcher(*op, values));
                literal(self.atom(Atom::HeaderValue { header, pattern }), negated)
            }
            ConditionKind::Any(group) => {
                let inner = group.iter().map(|member| self.formula(member, negated)).collect::<Result<Vec<_>, _>>()?;
                // not (a or b) = (not a) and (not b)
                Ok(if negated { Formula::All(inner) } else { Formula::Any(inner) })
            }
            ConditionKind::Not(inner) => self.formula(inner, !negated),
        }
    }

    /// A rule's conditions as clauses (all must hold; each holds when one
    /// of its literals does). `Err(count)` when the conversion would give
    /// more than [`MAX_CLAUSES_PER_RULE`] clauses.
    pub fn clauses(&mut self, conditions: &[Condition]) -> Result<Result<Vec<Vec<Literal>>, usize>, LowerError> {
        let all = Formula::All(conditions.iter().map(|c| self.formula(c, false)).collect::<Result<Vec<_>, _>>()?);
        Ok(cnf(&all).map(simplified))
    }
}

/// Conjunctive normal form by distribution, giving up (with the size it
/// reached) past [`MAX_CLAUSES_PER_RULE`] clauses.
fn cnf(formula: &Formula) -> Result<Vec<Vec<Literal>>, usize> {
    match formula {
        Formula::Literal(literal) => Ok(vec![vec![*literal]]),
        Formula::All(members) => {
            let mut clauses = Vec::new();
            for member in members {
                clauses.extend(cnf(member)?);
                if clauses.len() > MAX_CLAUSES_PER_RULE {
                    return Err(clauses.len());
                }
            }
            Ok(clauses)
        }
        Formula::Any(members) => {
            // The empty disjunction is one empty (false) clause.
            let mut product: Vec<Vec<Literal>> = vec![Vec::new()];
            for member in members {
                let member = cnf(member)?;
                let size = product.len().saturating_mul(member.len());
                if size > MAX_CLAUSES_PER_RULE {
                    return Err(size);
                }
                let mut next = Vec::with_capacity(size);
                for left in &product {
                    for right in &member {
                        next.push(left.iter().chain(right).copied().collect());
                    }
                }
                product = next;
            }
            Ok(product)
        }
    }
}

/// Drop repeated literals, tautologies (`a or not a`) and repeated clauses,
/// keeping the first occurrence's order.
fn simplified(clauses: Vec<Vec<Literal>>) -> Vec<Vec<Literal>> {
    let mut out: Vec<Vec<Literal>> = Vec::new();
    let mut seen: Vec<Vec<Literal>> = Vec::new();
    for clause in clauses {
        let mut kept: Vec<Literal> = Vec::new();
        for literal in clause {
            if !kept.contains(&literal) {
                kept.push(literal);
            }
        }
        if kept.iter().any(|l| kept.contains(&Literal { atom: l.atom, negated: !l.negated })) {
            continue;
        }
        let mut key = kept.clone();
        key.sort();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(kept);
    }
    out
}

/// The clauses of a rule that can guard it: those made only of positive
/// pattern literals (a path pattern, a header value pattern). The rule
/// cannot hold unless one of such a clause's patterns is accepted.
fn guard_clauses<'c>(clauses: &'c [Vec<Literal>], atoms: &'c [Atom]) -> impl Iterator<Item = Vec<Guard>> + 'c {
    clauses.iter().filter_map(move |clause| {
        clause
            .iter()
            .map(|literal| match (literal.negated, atoms.get(literal.atom as usize)) {
                (false, Some(Atom::Path { pattern })) => Some(Guard::Path { pattern: *pattern }),
                (false, Some(Atom::HeaderValue { header, pattern })) => Some(Guard::HeaderValue { header: *header, pattern: *pattern }),
                _ => None,
            })
            .collect::<Option<Vec<Guard>>>()
            .filter(|guards| !guards.is_empty())
    })
}

/// Each rule's guard clause: of the clauses that can guard it, the one
/// whose patterns guard the fewest rules in all (so the lists a request
/// walks stay short), the first on a tie. Empty: unguarded.
pub(crate) fn choose_guards(rules: &[Vec<Vec<Literal>>], atoms: &[Atom]) -> Vec<Vec<Guard>> {
    let mut candidates: BTreeMap<Guard, usize> = BTreeMap::new();
    for clauses in rules {
        for clause in guard_clauses(clauses, atoms) {
            for guard in clause {
                *candidates.entry(guard).or_default() += 1;
            }
        }
    }
    rules
        .iter()
        .map(|clauses| {
            let mut best: Option<(usize, Vec<Guard>)> = None;
            for clause in guard_clauses(clauses, atoms) {
                let weight: usize = clause.iter().map(|guard| candidates.get(guard).copied().unwrap_or(0)).sum();
                if best.as_ref().is_none_or(|(lightest, _)| weight < *lightest) {
                    best = Some((weight, clause));
                }
            }
            best.map(|(_, clause)| clause).unwrap_or_default()
        })
        .collect()
}

/// Per pattern of one automaton, the rules guarded by it, in rule order.
pub(crate) fn guarded_rules(guards: &[Vec<Guard>], pattern_count: usize, belongs: impl Fn(&Guard) -> Option<u32>) -> IdLists {
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); pattern_count];
    for (rule, clause) in guards.iter().enumerate() {
        for guard in clause {
            if let Some(list) = belongs(guard).and_then(|pattern| lists.get_mut(pattern as usize)) {
                let rule = u32::try_from(rule).unwrap_or(u32::MAX);
                // A clause may name one pattern twice only if simplification
                // kept both; list the rule once.
                if list.last() != Some(&rule) {
                    list.push(rule);
                }
            }
        }
    }
    let mut index = IdLists { offsets: vec![0], members: Vec::new() };
    for list in lists {
        index.members.extend(list);
        index.offsets.push(u32::try_from(index.members.len()).unwrap_or(u32::MAX));
    }
    index
}

/// Bytes as a `.l7` string, for the matcher descriptions of the report.
pub(crate) fn quoted(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    out
}

fn quoted_list(values: &[Vec<u8>]) -> String {
    match values {
        [single] => quoted(single),
        _ => format!("[{}]", values.iter().map(|v| quoted(v)).collect::<Vec<_>>().join(", ")),
    }
}

fn path_matcher(op: PathOp, patterns: &[Vec<u8>]) -> String {
    format!("path {} {}", op.keyword(), quoted_list(patterns))
}

fn value_matcher(name: &str, op: ValueOp, nocase: bool, values: &[Vec<u8>]) -> String {
    let case = if nocase { " nocase" } else { "" };
    format!("header {} {}{case} {}", quoted(name.as_bytes()), op.keyword(), quoted_list(values))
}

fn host_matcher(op: HostOp, values: &[Vec<u8>]) -> String {
    let op = match op {
        HostOp::Exact => "exact",
        HostOp::Suffix => "suffix",
    };
    format!("host {op} {}", quoted_list(values))
}
