//! The head machine's tables: the lexer ([`super::head`]) and the
//! value-syntax machine ([`super::sub`]) evaluated on every byte, then
//! compressed to byte classes shared by both.
//!
//! Layout (docs/scan.md has the byte-level format):
//! - `byte_class[byte]`: bytes with equal columns in both tables share a
//!   class; classes are numbered by their smallest byte;
//! - `main[state << 6 | class]`: `next | action << 8 | arg << 16` (u32);
//!   `main.len()` is a power of two, so `& (len - 1)` bounds any index;
//! - `sub[state << 6 | class]`: `next | DIGIT_FLAG` (u16), likewise a
//!   power of two; `sub_reject[state]`: 1 when a value ending there is
//!   refused;
//! - `role_start[id & 63]`: the value-syntax start state for header id
//!   `id` (1 Host, 2 Content-Length, 3 Transfer-Encoding, else anything).
//!
//! Invariants: at most [`MAIN_COLUMNS`] classes and 256 lexer states;
//! padding entries (unused classes and rows) fail closed.

use super::head::{fail_arg, Action, Lex, Move};
use super::hooks::HeaderId;
use super::sub::{SubMachine, MAX_LITERAL};
use super::ScanBuildError;
use crate::http::MalformedKind;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Columns per row of `main` and `sub`: the class count rounded up to a
/// power of two, fixed so the BPF index is `state << 6 | class`.
pub const MAIN_COLUMNS: usize = 64;

/// The head machine as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadTables {
    pub byte_class: [u8; 256],
    pub class_count: u8,
    /// Lexer states in use (the rest of `main` is padding).
    pub main_states: u16,
    pub main: Vec<u32>,
    /// Value-syntax states in use.
    pub sub_states: u16,
    pub sub: Vec<u16>,
    pub sub_reject: Vec<u8>,
    pub role_start: [u16; 64],
    /// The value-syntax state after a Host literal's `[`: where a CONNECT
    /// target's literal starts.
    pub literal_start: u16,
    /// The lexer's start state.
    pub start: u16,
    /// The lexer state inside a field value (after its first byte).
    pub value_body: u16,
    /// The lexer state inside a field name (after its first byte).
    pub name_body: u16,
    /// The value-syntax state of a field no role reads (`role_start` of
    /// any id but Host, Content-Length and Transfer-Encoding).
    pub any_value: u16,
    /// Most bytes between a CONNECT literal's brackets.
    pub max_literal: u8,
    /// The lexer states' names, by number (for listings and comments).
    pub state_names: Vec<String>,
}

/// The skip of plain value bytes ([`HeadTables::value_skip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueSkip {
    /// The value-syntax state in which the skip applies: a field no role
    /// reads, after its value's first byte.
    pub plain: u16,
}

impl ValueSkip {
    /// Bytes are skipped eight at a time: one 64-bit load.
    pub const WIDTH: u32 = 8;
    /// No byte below this is skipped (controls, HTAB, CR, LF).
    pub const LOW: u8 = 0x20;
    /// Nor this one.
    pub const DEL: u8 = 0x7f;

    /// The bytes a skip may pass: SP, visible ASCII and obs-text; a word
    /// with any other byte is stepped byte by byte.
    pub fn bytes() -> impl Iterator<Item = u8> {
        (0..=255u8).filter(|&byte| byte >= Self::LOW && byte != Self::DEL)
    }

    /// Whether all eight bytes of `word` are [`ValueSkip::bytes`], as the
    /// program tests it: no byte below 0x20 (`(w - 0x20..) & !w & 0x80..`
    /// is non-zero exactly when one is) and none equal to 0x7f (the same
    /// test for a zero byte of `w ^ 0x7f..`).
    pub fn word_passes(word: u64) -> bool {
        let low = word.wrapping_sub(Self::ONES * Self::LOW as u64) & !word & Self::HIGH;
        let del = word ^ (Self::ONES * Self::DEL as u64);
        let del = del.wrapping_sub(Self::ONES) & !del & Self::HIGH;
        low | del == 0
    }

    /// 0x01 in every byte of a word (the program uses the same constants).
    pub const ONES: u64 = 0x0101_0101_0101_0101;
    /// 0x80 in every byte of a word.
    pub const HIGH: u64 = 0x8080_8080_8080_8080;
}

/// The skip of field-name bytes ([`HeadTables::name_skip`]): after a
/// name byte that left the header-name automaton in its dead state (the
/// name is none the policy or the scanner knows), the rest of the name
/// changes nothing but the offset while its bytes are letters, digits and
/// `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameSkip;

impl NameSkip {
    /// Bytes are skipped eight at a time: one 64-bit load.
    pub const WIDTH: u32 = 8;

    /// The bytes a skip may pass: ASCII letters, digits and `-`, the bytes
    /// of nearly every field name; a word with any other byte (`:`, CR,
    /// other tchars, anything else) is stepped byte by byte.
    pub fn bytes() -> impl Iterator<Item = u8> {
        (0..=255u8).filter(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
    }

    /// `0x80` in each byte of `word` (every byte below 0x80) that lies in
    /// `low..=high`: `t + (0x80 - low)` sets a byte's top bit exactly when
    /// `t >= low`, and `t + (0x7f - high)` when `t > high`; no sum carries
    /// out of its byte.
    pub fn in_range(word: u64, low: u8, high: u8) -> u64 {
        let at_least = word.wrapping_add(ValueSkip::ONES * u64::from(0x80 - low)) & ValueSkip::HIGH;
        let above = word.wrapping_add(ValueSkip::ONES * u64::from(0x7f - high)) & ValueSkip::HIGH;
        at_least & !above
    }

    /// Whether all eight bytes of `word` are [`NameSkip::bytes`], as the
    /// program tests it: no top bit set, then each byte a letter (tested
    /// on the byte with 0x20 set: `A-Z` and `a-z` both land in `a-z`, and
    /// nothing else does), a digit or `-`.
    pub fn word_passes(word: u64) -> bool {
        if word & ValueSkip::HIGH != 0 {
            return false;
        }
        let letters = Self::in_range(word | ValueSkip::ONES * 0x20, b'a', b'z');
        let digits = Self::in_range(word, b'0', b'9');
        let dash = Self::in_range(word, b'-', b'-');
        letters | digits | dash == ValueSkip::HIGH
    }
}

/// Table sizes in bytes as the BPF program holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    pub byte_class: usize,
    pub main: usize,
    pub sub: usize,
    pub sub_reject: usize,
    pub role_start: usize,
}

impl TableSizes {
    pub fn total(&self) -> usize {
        self.byte_class + self.main + self.sub + self.sub_reject + self.role_start
    }
}

impl HeadTables {
    /// The tables, built once per process.
    pub fn shared() -> Result<&'static HeadTables, ScanBuildError> {
        static TABLES: OnceLock<Result<HeadTables, ScanBuildError>> = OnceLock::new();
        TABLES.get_or_init(HeadTables::build).as_ref().map_err(Clone::clone)
    }

    pub fn build() -> Result<HeadTables, ScanBuildError> {
        let states = Lex::all();
        let number: HashMap<Lex, usize> = states.iter().enumerate().map(|(index, &state)| (state, index)).collect();
        let start = number.get(&Lex::MethodFirst).copied().unwrap_or(0);
        let value_body = number.get(&Lex::ValueBody).copied().ok_or_else(|| internal("ValueBody is not numbered".into()))?;
        let name_body = number.get(&Lex::Name).copied().ok_or_else(|| internal("Name is not numbered".into()))?;
        // Every (state, byte) of the lexer as a packed entry (rows are
        // 256-entry arrays indexed by bytes throughout: cannot panic).
        let mut main_rows: Vec<[u32; 256]> = Vec::with_capacity(states.len());
        for &state in &states {
            let mut row = [0u32; 256];
            for (byte, slot) in row.iter_mut().enumerate() {
                *slot = match state.step(byte as u8) {
                    Move::Go(next, action, arg) => {
                        let next = number.get(&next).copied().ok_or_else(|| internal(format!("{next:?} is not numbered")))?;
                        pack(next, action, arg)
                    }
                    Move::Fail(kind, back) => pack(0, Action::Fail, fail_arg(kind, back)),
                };
            }
            main_rows.push(row);
        }
        let sub = SubMachine::build()?;

        // Bytes whose columns agree in both tables share a class.
        let mut class_of_column: HashMap<(Vec<u32>, Vec<u16>), u8> = HashMap::new();
        let mut byte_class = [0u8; 256];
        let mut representatives: Vec<usize> = Vec::new();
        for (byte, slot) in byte_class.iter_mut().enumerate() {
            let column = (
                main_rows.iter().map(|row| row[byte]).collect::<Vec<u32>>(),
                sub.rows.iter().map(|row| row[byte]).collect::<Vec<u16>>(),
            );
            let fresh = representatives.len();
            let class = *class_of_column.entry(column).or_insert_with(|| {
                representatives.push(byte);
                fresh as u8
            });
            *slot = class;
        }
        if representatives.len() > MAIN_COLUMNS {
            return Err(internal(format!("{} byte classes; at most {MAIN_COLUMNS} fit a row", representatives.len())));
        }
        if states.len() > 256 {
            return Err(internal(format!("{} lexer states; at most 256 fit an entry", states.len())));
        }

        let padding = pack(0, Action::Fail, fail_arg(MalformedKind::RequestLine, 0));
        let main_len = (states.len() * MAIN_COLUMNS).next_power_of_two();
        let mut main = vec![padding; main_len];
        for (state, row) in main_rows.iter().enumerate() {
            for (class, &byte) in representatives.iter().enumerate() {
                if let Some(slot) = main.get_mut(state * MAIN_COLUMNS + class) {
                    *slot = row[byte];
                }
            }
        }
        let sub_len = (sub.rows.len() * MAIN_COLUMNS).next_power_of_two();
        let mut sub_table = vec![0u16; sub_len];
        for (state, row) in sub.rows.iter().enumerate() {
            for (class, &byte) in representatives.iter().enumerate() {
                if let Some(slot) = sub_table.get_mut(state * MAIN_COLUMNS + class) {
                    *slot = row[byte];
                }
            }
        }
        let mut sub_reject = vec![1u8; sub_len / MAIN_COLUMNS];
        for (slot, &reject) in sub_reject.iter_mut().zip(&sub.reject) {
            *slot = u8::from(reject);
        }
        let mut role_start = [sub.any_value; 64];
        // The protocol's ids are 1..=3, inside the 64 entries.
        role_start[usize::from(HeaderId::HOST)] = sub.host;
        role_start[usize::from(HeaderId::CONTENT_LENGTH)] = sub.content_length;
        role_start[usize::from(HeaderId::TRANSFER_ENCODING)] = sub.transfer_encoding;

        Ok(HeadTables {
            byte_class,
            class_count: representatives.len() as u8,
            main_states: states.len() as u16,
            main,
            sub_states: sub.rows.len() as u16,
            sub: sub_table,
            sub_reject,
            role_start,
            literal_start: sub.literal_start,
            start: start as u16,
            value_body: value_body as u16,
            name_body: name_body as u16,
            any_value: sub.any_value,
            max_literal: MAX_LITERAL,
            state_names: states.iter().map(|state| format!("{state:?}")).collect(),
        })
    }

    /// Whether a plain field value may be skipped eight bytes at a time
    /// (issue 15; docs/program.md "Skipping plain value bytes"): after a
    /// value byte (lexer state [`HeadTables::value_body`], value syntax
    /// [`ValueSkip::plain`]), every byte of [`ValueSkip::bytes`]
    /// takes the lexer back to the same state with `ValueByte` and no
    /// argument, and leaves the value syntax where it is without a digit.
    /// Such a byte changes nothing but the offset in a field whose value
    /// no matcher reads. Checked here from the tables themselves: `None`
    /// (no skip) if any of it does not hold, so a change of the lexer or
    /// of the value syntax can make the skip go away, never wrong.
    pub fn value_skip(&self) -> Option<ValueSkip> {
        let value_byte = pack(usize::from(self.value_body), Action::ValueByte, 0);
        // Every ValueByte entry leads to value_body: after the action the
        // state is known without being tested.
        let all_to_body = (0..self.main_states).all(|state| {
            (0..self.class_count).all(|class| {
                let entry = self.main_entry(state, class);
                (entry >> 8) & 0xff != Action::ValueByte as u32 || entry & 0xff == u32::from(self.value_body)
            })
        });
        // The value syntax of a field no role reads, once it has a byte
        // (the start state itself records that the value is empty).
        let plain = self.sub_entry(self.any_value, self.byte_class[usize::from(b'a')]);
        let kept = ValueSkip::bytes().all(|byte| {
            let class = self.byte_class[usize::from(byte)];
            self.main_entry(self.value_body, class) == value_byte && self.sub_entry(plain, class) == plain
        });
        (all_to_body && kept).then_some(ValueSkip { plain })
    }

    /// Whether name bytes may be skipped ([`NameSkip`]): every entry that
    /// takes a name byte (`LineName`, `NameByte`) leads to
    /// [`HeadTables::name_body`], and there each of [`NameSkip::bytes`] is
    /// a `NameByte` that stays. Checked from the tables, like
    /// [`HeadTables::value_skip`]: `None` if any of it does not hold.
    pub fn name_skip(&self) -> Option<NameSkip> {
        let name_byte = pack(usize::from(self.name_body), Action::NameByte, 0);
        let all_to_body = (0..self.main_states).all(|state| {
            (0..self.class_count).all(|class| {
                let entry = self.main_entry(state, class);
                let action = (entry >> 8) & 0xff;
                (action != Action::NameByte as u32 && action != Action::LineName as u32) || entry & 0xff == u32::from(self.name_body)
            })
        });
        let kept = NameSkip::bytes().all(|byte| self.main_entry(self.name_body, self.byte_class[usize::from(byte)]) == name_byte);
        (all_to_body && kept).then_some(NameSkip)
    }

    /// The lexer entry for `state` and `class` (masked like the BPF load).
    pub fn main_entry(&self, state: u16, class: u8) -> u32 {
        let index = (usize::from(state) << 6 | usize::from(class)) & (self.main.len() - 1);
        // In bounds: masked to the length, a power of two.
        self.main.get(index).copied().unwrap_or(0)
    }

    /// The value-syntax entry for `state` and `class` (masked).
    pub fn sub_entry(&self, state: u16, class: u8) -> u16 {
        let index = (usize::from(state) << 6 | usize::from(class)) & (self.sub.len() - 1);
        self.sub.get(index).copied().unwrap_or(0)
    }

    pub fn sub_rejects(&self, state: u16) -> bool {
        let index = usize::from(state) & (self.sub_reject.len() - 1);
        self.sub_reject.get(index).copied().unwrap_or(1) != 0
    }

    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            byte_class: 256,
            main: self.main.len() * 4,
            sub: self.sub.len() * 2,
            sub_reject: self.sub_reject.len(),
            role_start: self.role_start.len() * 2,
        }
    }

    /// A one-paragraph summary: classes, states, bytes.
    pub fn report(&self) -> String {
        let sizes = self.sizes();
        format!(
            "head scanner: {} byte classes; lexer {} states ({} entries, {} B); value syntax {} states ({} entries, {} B); {} B in all",
            self.class_count,
            self.main_states,
            self.main.len(),
            sizes.main,
            self.sub_states,
            self.sub.len(),
            sizes.sub,
            sizes.total()
        )
    }
}

/// The bytes of each class, as printable ranges (`0x00-0x08 0x0b ...`).
pub fn describe_classes(byte_class: &[u8; 256], class_count: u8) -> Vec<String> {
    let show = |byte: u8| match byte {
        0x21..=0x7e => format!("{}", byte as char),
        _ => format!("0x{byte:02x}"),
    };
    (0..class_count)
        .map(|class| {
            let mut parts: Vec<String> = Vec::new();
            let mut byte = 0usize;
            while byte < 256 {
                if byte_class[byte] != class {
                    byte += 1;
                    continue;
                }
                let start = byte;
                while byte + 1 < 256 && byte_class[byte + 1] == class {
                    byte += 1;
                }
                parts.push(if byte > start + 1 {
                    format!("{}-{}", show(start as u8), show(byte as u8))
                } else if byte == start + 1 {
                    format!("{} {}", show(start as u8), show(byte as u8))
                } else {
                    show(start as u8)
                });
                byte += 1;
            }
            parts.join(" ")
        })
        .collect()
}

/// A lexer entry: `next | action << 8 | arg << 16`.
pub(crate) fn pack(next: usize, action: Action, arg: u8) -> u32 {
    (next as u32 & 0xff) | (action as u32) << 8 | u32::from(arg) << 16
}

fn internal(message: String) -> ScanBuildError {
    ScanBuildError::Internal { what: "head scanner tables", message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_value_bytes_can_be_skipped_with_these_tables() {
        let tables = HeadTables::build().expect("builds");
        let skip = tables.value_skip().expect("the skip's conditions hold for the lexer and value syntax as built");
        assert_ne!(skip.plain, tables.role_start[usize::from(HeaderId::HOST)]);
        assert_ne!(skip.plain, tables.role_start[usize::from(HeaderId::CONTENT_LENGTH)]);
        // A byte outside the set is not passed by the tables either way:
        // CR, LF, HTAB, NUL and DEL each change the lexer's state or fail.
        for byte in [b'\r', b'\n', b'\t', 0, 0x7f] {
            let class = tables.byte_class[usize::from(byte)];
            assert!(ValueSkip::bytes().all(|b| b != byte));
            let entry = tables.main_entry(tables.value_body, class);
            let same = entry == pack(usize::from(tables.value_body), Action::ValueByte, 0);
            assert!(!same || byte == b'\t', "{byte:#x}");
        }
    }

    #[test]
    fn name_bytes_can_be_skipped_with_these_tables() {
        let tables = HeadTables::build().expect("builds");
        assert_eq!(tables.name_skip(), Some(NameSkip), "the skip's conditions hold for the lexer as built");
        // The name's ends and the bytes around them are never passed by the
        // tables as a plain name byte.
        for byte in [b':', b'\r', b'\n', b' ', b'\t', 0, 0x7f, 0x80] {
            assert!(NameSkip::bytes().all(|b| b != byte));
            let entry = tables.main_entry(tables.name_body, tables.byte_class[usize::from(byte)]);
            assert_ne!(entry, pack(usize::from(tables.name_body), Action::NameByte, 0), "{byte:#x}");
        }
    }

    #[test]
    fn the_name_word_test_is_exactly_the_byte_test() {
        let passes = |byte: u8| NameSkip::bytes().any(|b| b == byte);
        for fill in [b'a', b'Z', b'0', b'-', b'9', b'z'] {
            for at in 0..8 {
                for byte in 0..=255u8 {
                    let mut bytes = [fill; 8];
                    bytes[at] = byte;
                    assert_eq!(NameSkip::word_passes(u64::from_le_bytes(bytes)), passes(byte), "{bytes:?}");
                }
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..400_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly name-like bytes, so that both answers are common.
            let word = x & 0x7f7f_7f7f_7f7f_7f7f | if x % 7 == 0 { 0x80 } else { 0 };
            let bytes = word.to_le_bytes();
            assert_eq!(NameSkip::word_passes(word), bytes.iter().all(|&b| passes(b)), "{bytes:?}");
        }
    }

    /// The word test against the byte test: every byte at every position
    /// among passing neighbours, and pseudo-random words.
    #[test]
    fn the_word_test_is_exactly_the_byte_test() {
        let passes = |byte: u8| ValueSkip::bytes().any(|b| b == byte);
        for fill in [b'a', b' ', 0x7e, 0x80, 0xff, 0x21] {
            for at in 0..8 {
                for byte in 0..=255u8 {
                    let mut bytes = [fill; 8];
                    bytes[at] = byte;
                    assert_eq!(ValueSkip::word_passes(u64::from_le_bytes(bytes)), passes(byte), "{bytes:?}");
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Bias toward the edges of the set: 0x1f, 0x20, 0x7e..0x80.
            let word = x & 0x7f7f_7f7f_7f7f_7f7f | (x >> 1) & 0x2020_2020_2020_2020;
            for word in [x, word] {
                let bytes = word.to_le_bytes();
                assert_eq!(ValueSkip::word_passes(word), bytes.iter().all(|&b| passes(b)), "{bytes:?}");
            }
        }
    }

    #[test]
    fn builds_within_its_limits_and_deterministically() {
        let tables = HeadTables::build().expect("builds");
        assert!(usize::from(tables.class_count) <= MAIN_COLUMNS);
        assert!(tables.main.len().is_power_of_two() && tables.sub.len().is_power_of_two());
        assert!(tables.sub_reject.len().is_power_of_two());
        assert_eq!(tables, HeadTables::build().expect("builds again"));
        // Every next state is a real state.
        for entry in &tables.main {
            assert!((entry & 0xff) < u32::from(tables.main_states));
            assert!(Action::from_code((entry >> 8) as u8).is_some());
        }
        for entry in &tables.sub {
            assert!((entry & 0x7fff) < tables.sub_states);
        }
        eprintln!("{}", tables.report());
        for (class, bytes) in describe_classes(&tables.byte_class, tables.class_count).iter().enumerate() {
            eprintln!("class {class:2}: {bytes}");
        }
        for (state, name) in tables.state_names.iter().enumerate() {
            eprintln!("state {state:2}: {name}");
        }
    }
}
