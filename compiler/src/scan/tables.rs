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
    /// Most bytes between a CONNECT literal's brackets.
    pub max_literal: u8,
    /// The lexer states' names, by number (for listings and comments).
    pub state_names: Vec<String>,
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
            max_literal: MAX_LITERAL,
            state_names: states.iter().map(|state| format!("{state:?}")).collect(),
        })
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
