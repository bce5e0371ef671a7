//! The value-syntax machine: small DFAs over a field value (after its
//! leading SP/HTAB) that say whether the value is well formed for the
//! header the name automaton recognised — `Host` (`uri-host [":" port]`,
//! RFC 3986, with IPv6address / IPvFuture literals of at most 64 bytes),
//! `Content-Length` (`1*DIGIT`), `Transfer-Encoding` (`chunked`, any case)
//! — each followed by optional trailing SP/HTAB, plus a one-state machine
//! that accepts anything (every other header). CONNECT's IP literal runs
//! through the Host machine's literal states (see [`SubMachine::literal_start`]).
//!
//! Built with `regex-automata` from regexes written from RFC 3986 and
//! exported per byte into one table with a shared dead state.
//!
//! Invariants:
//! - State [`SUB_DEAD`] (0) is the only state from which no continuation
//!   is accepted: every other such state is folded into it (so a dead
//!   state after a literal's `]` means the literal is not valid).
//! - A `Content-Length` transition on a digit that stays alive carries
//!   [`DIGIT_FLAG`]: the walker accumulates exactly those digits.
//! - The states of one component only lead to states of the same
//!   component or to the dead state.

use super::head::{is_literal_byte, is_reg_name_byte};
use super::ScanBuildError;
use regex_automata::dfa::{dense, Automaton as _, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, MatchKind};
use std::collections::{HashMap, VecDeque};

/// The dead state of the value-syntax table.
pub const SUB_DEAD: u16 = 0;
/// Set on a `Content-Length` digit transition: `cl = cl * 10 + digit`.
pub const DIGIT_FLAG: u16 = 0x8000;
/// The longest IP literal content (between the brackets) accepted.
pub const MAX_LITERAL: u8 = 64;

/// The value-syntax machine over raw bytes (classes come later).
#[derive(Debug, Clone)]
pub(crate) struct SubMachine {
    /// `rows[state][byte]`: the next state, with [`DIGIT_FLAG`].
    pub rows: Vec<[u16; 256]>,
    /// Whether a value ending in this state is refused.
    pub reject: Vec<bool>,
    pub any_value: u16,
    pub host: u16,
    pub content_length: u16,
    pub transfer_encoding: u16,
    /// The Host machine's state after `[`: where a CONNECT literal starts.
    pub literal_start: u16,
}

/// One component, numbered from 0 (its start state); `None` is dead.
struct Component {
    next: Vec<[Option<usize>; 256]>,
    accept: Vec<bool>,
}

impl SubMachine {
    pub fn build() -> Result<SubMachine, ScanBuildError> {
        let mut machine = SubMachine {
            rows: vec![[SUB_DEAD; 256]],
            reject: vec![true],
            any_value: 0,
            host: 0,
            content_length: 0,
            transfer_encoding: 0,
            literal_start: 0,
        };
        machine.any_value = machine.add(&compile("any-value syntax", r"[\x00-\xFF]*")?, false)?;
        machine.content_length = machine.add(&compile("content-length syntax", r"[0-9]+[ \t]*")?, true)?;
        machine.transfer_encoding = machine.add(&compile("transfer-encoding syntax", r"(?i:chunked)[ \t]*")?, false)?;
        machine.host = machine.add(&compile("host syntax", &host_regex())?, false)?;
        machine.literal_start = machine.step(machine.host, b'[');
        if machine.literal_start == SUB_DEAD {
            return Err(internal("host syntax", "`[` does not open a literal".into()));
        }
        Ok(machine)
    }

    /// The state after `byte` (without the flag).
    pub fn step(&self, state: u16, byte: u8) -> u16 {
        self.rows.get(usize::from(state)).map_or(SUB_DEAD, |row| row[usize::from(byte)] & !DIGIT_FLAG)
    }

    /// Whether `value` (after its leading whitespace) is accepted from
    /// `start`.
    #[cfg(test)]
    pub fn accepts(&self, start: u16, value: &[u8]) -> bool {
        let end = value.iter().fold(start, |state, &byte| self.step(state, byte));
        !self.reject.get(usize::from(end)).copied().unwrap_or(true)
    }

    /// Append a component; its states follow the ones already there.
    fn add(&mut self, component: &Component, digits: bool) -> Result<u16, ScanBuildError> {
        let base = self.rows.len();
        let number = |local: Option<usize>| -> Result<u16, ScanBuildError> {
            match local {
                None => Ok(SUB_DEAD),
                Some(local) => u16::try_from(base + local)
                    .ok()
                    .filter(|&state| state < DIGIT_FLAG)
                    .ok_or_else(|| internal("value syntax", "more than 2^15 states".into())),
            }
        };
        for (next, &accept) in component.next.iter().zip(&component.accept) {
            // 256-entry rows indexed by bytes: cannot panic.
            let mut row = [SUB_DEAD; 256];
            for (byte, slot) in row.iter_mut().enumerate() {
                let target = number(next[byte])?;
                let flag = if digits && target != SUB_DEAD && (byte as u8).is_ascii_digit() { DIGIT_FLAG } else { 0 };
                *slot = target | flag;
            }
            self.rows.push(row);
            self.reject.push(!accept);
        }
        number(Some(0))
    }
}

fn internal(what: &'static str, message: String) -> ScanBuildError {
    ScanBuildError::Internal { what, message }
}

/// `[...]` of the bytes `accept` holds, as hex escapes.
fn byte_set(accept: impl Fn(u8) -> bool) -> String {
    let mut set = String::from("[");
    for byte in (0..=255u8).filter(|&byte| accept(byte)) {
        set.push_str(&format!("\\x{byte:02X}"));
    }
    set.push(']');
    set
}

/// RFC 3986 `IPv6address`.
pub(crate) fn ipv6_regex() -> String {
    let h16 = "[0-9A-Fa-f]{1,4}";
    let dec_octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";
    let ipv4 = format!(r"{dec_octet}\.{dec_octet}\.{dec_octet}\.{dec_octet}");
    let ls32 = format!("(?:{h16}:{h16}|{ipv4})");
    let before = |most: usize| match most {
        0 => String::new(),
        _ => format!("(?:(?:{h16}:){{0,{}}}{h16})?", most - 1),
    };
    let forms = [
        format!("(?:{h16}:){{6}}{ls32}"),
        format!("::(?:{h16}:){{5}}{ls32}"),
        format!("{}::(?:{h16}:){{4}}{ls32}", before(1)),
        format!("{}::(?:{h16}:){{3}}{ls32}", before(2)),
        format!("{}::(?:{h16}:){{2}}{ls32}", before(3)),
        format!("{}::{h16}:{ls32}", before(4)),
        format!("{}::{ls32}", before(5)),
        format!("{}::{h16}", before(6)),
        format!("{}::", before(7)),
    ];
    format!("(?:{})", forms.join("|"))
}

/// RFC 3986 `IPvFuture` (`"v" 1*HEXDIG "." 1*( unreserved / sub-delims /
/// ":" )`) of at most [`MAX_LITERAL`] bytes: one branch per number of hex
/// digits, each with the room the rest leaves.
pub(crate) fn ipvfuture_regex() -> String {
    let tail = byte_set(is_literal_byte);
    let most = usize::from(MAX_LITERAL);
    // "v" + k digits + "." + at least one tail byte.
    let branches: Vec<String> =
        (1..=most - 3).map(|digits| format!(r"[0-9A-Fa-f]{{{digits}}}\.{tail}{{1,{}}}", most - 2 - digits)).collect();
    format!("[vV](?:{})", branches.join("|"))
}

/// The Host field value after its leading whitespace.
fn host_regex() -> String {
    let reg_name = format!("(?:{}|%[0-9A-Fa-f]{{2}})*", byte_set(is_reg_name_byte));
    format!(r"(?:\[(?:{}|{})\]|{reg_name})(?::[0-9]+)?[ \t]*", ipv6_regex(), ipvfuture_regex())
}

/// Build a minimal anchored DFA for `regex` over bytes and export it per
/// byte, folding every state that cannot reach acceptance into dead.
fn compile(what: &'static str, regex: &str) -> Result<Component, ScanBuildError> {
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .minimize(true)
                .accelerate(false),
        )
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .thompson(thompson::Config::new().utf8(false).which_captures(WhichCaptures::None))
        .build(regex)
        .map_err(|error| internal(what, error.to_string()))?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .map_err(|error| internal(what, error.to_string()))?;

    // Breadth-first numbering from the start state.
    let mut number = HashMap::new();
    let mut ids = vec![start];
    number.insert(start, 0usize);
    let mut queue = VecDeque::from([0usize]);
    let mut next: Vec<[Option<usize>; 256]> = Vec::new();
    while let Some(index) = queue.pop_front() {
        let Some(&id) = ids.get(index) else { continue };
        let mut row = [None; 256];
        for (byte, slot) in row.iter_mut().enumerate() {
            let target = dfa.next_state(id, byte as u8);
            if dfa.is_dead_state(target) {
                continue;
            }
            let fresh = ids.len();
            let local = *number.entry(target).or_insert_with(|| {
                ids.push(target);
                queue.push_back(fresh);
                fresh
            });
            *slot = Some(local);
        }
        if next.len() <= index {
            next.resize(index + 1, [None; 256]);
        }
        if let Some(slot) = next.get_mut(index) {
            *slot = row;
        }
    }
    let accept: Vec<bool> = ids.iter().map(|&id| dfa.is_match_state(dfa.next_eoi_state(id))).collect();
    next.resize(ids.len(), [None; 256]);

    // Keep the states from which acceptance is reachable; renumber.
    let mut alive: Vec<bool> = accept.clone();
    loop {
        let mut changed = false;
        for (state, row) in next.iter().enumerate() {
            if alive.get(state) == Some(&false) && row.iter().flatten().any(|&target| alive.get(target) == Some(&true)) {
                if let Some(slot) = alive.get_mut(state) {
                    *slot = true;
                }
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    if alive.first() != Some(&true) {
        return Err(internal(what, "the start state accepts nothing".into()));
    }
    let mut renumber: Vec<Option<usize>> = Vec::with_capacity(ids.len());
    let mut count = 0;
    for &keep in &alive {
        renumber.push(keep.then_some(count));
        count += usize::from(keep);
    }
    let mut trimmed = Component { next: Vec::with_capacity(count), accept: Vec::with_capacity(count) };
    for (state, row) in next.iter().enumerate() {
        if renumber.get(state).copied().flatten().is_none() {
            continue;
        }
        let mut kept = [None; 256];
        // Rows are 256-entry arrays indexed by bytes throughout.
        for (slot, &target) in kept.iter_mut().zip(row.iter()) {
            *slot = target.and_then(|target| renumber.get(target).copied().flatten());
        }
        trimmed.next.push(kept);
        trimmed.accept.push(accept.get(state).copied().unwrap_or(false));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn machine() -> &'static SubMachine {
        static MACHINE: std::sync::OnceLock<SubMachine> = std::sync::OnceLock::new();
        MACHINE.get_or_init(|| SubMachine::build().expect("builds"))
    }

    #[test]
    fn build_time() {
        let start = std::time::Instant::now();
        let built = SubMachine::build().expect("builds");
        eprintln!("value syntax: {} states built in {:?}", built.rows.len(), start.elapsed());
    }

    #[test]
    fn host_values() {
        let m = machine();
        for good in ["a", "example.com", "example.com:8080", "10.0.0.1:80", "[::1]", "[::1]:8080", "a%2Eb", "", "x.", "[v1.fe]", ":80", "a \t", "[V7.a:b]"] {
            assert!(m.accepts(m.host, good.as_bytes()), "{good:?}");
        }
        for bad in ["a:80@evil", "a b", "[::1", "[zz]", "a:", "a:8x", "[::1]x", "a%2", "a%zz", "[1:::2]", "a/b", "user@a", "[v.x]", "[v1.]", "[::1%25eth0]"] {
            assert!(!m.accepts(m.host, bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn ipvfuture_is_bounded_at_64() {
        let m = machine();
        let mut literal = b"v1.".to_vec();
        literal.resize(64, b'x');
        let host = [b"[".as_slice(), &literal, b"]"].concat();
        assert!(m.accepts(m.host, &host));
        literal.push(b'x');
        let host = [b"[".as_slice(), &literal, b"]"].concat();
        assert!(!m.accepts(m.host, &host));
    }

    #[test]
    fn other_components() {
        let m = machine();
        assert!(m.accepts(m.content_length, b"0012 \t"));
        assert!(!m.accepts(m.content_length, b""));
        assert!(!m.accepts(m.content_length, b"1 2"));
        assert!(m.accepts(m.transfer_encoding, b"ChUnKeD "));
        assert!(!m.accepts(m.transfer_encoding, b"chunked, gzip"));
        assert!(m.accepts(m.any_value, b"\xff anything"));
        assert!(m.rows[usize::from(m.content_length)][usize::from(b'7')] & DIGIT_FLAG != 0);
    }

    #[test]
    fn ipv6_agrees_with_the_standard_parser() {
        let m = machine();
        let check = |text: &str| {
            let host = format!("[{text}]");
            let ours = m.accepts(m.host, host.as_bytes());
            let std = text.parse::<Ipv6Addr>().is_ok();
            assert_eq!(ours, std, "{text:?}");
        };
        // Every arrangement of up to 9 groups and `::`, with short, long,
        // and dotted-quad groups.
        let pieces = ["", "0", "1", "ff", "fFfF", "12345", "1.2.3.4", "255.255.255.255", "256.1.1.1", "01.1.1.1", "1.2.3"];
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let groups = (next() % 10) as usize;
            let gap = (next() % 11) as usize;
            let mut text = String::new();
            for index in 0..groups {
                if index == gap {
                    text.push_str("::");
                } else if index > 0 {
                    text.push(':');
                }
                text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            if gap == groups {
                text.push_str("::");
            }
            check(&text);
        }
        for fixed in ["::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6::8", "::ffff:1.2.3.4", "1::2::3", ":1::", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4"] {
            check(fixed);
        }
    }
}
