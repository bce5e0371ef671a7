//! The chunked-body machine (RFC 9112 §7.1, language.md §7 `chunk`) as
//! tables plus a resumable walker: chunk-size lines with extensions, data
//! (counted, never scanned), the CRLF after data, the last chunk and the
//! trailer section with its own `header_bytes` and `headers` allowance.
//!
//! Layout: `byte_class[byte]` (own classes, at most [`CHUNK_COLUMNS`]);
//! `table[state << 4 | class]` = `next | action << 8 | arg << 16` (u32),
//! `table.len()` a power of two.
//!
//! Invariants:
//! - All state between calls is [`ChunkState`] (32 bytes): input may come
//!   in any pieces, and the result does not depend on how it was split.
//! - The offending byte is the first byte that cannot continue a
//!   well-formed body: a bad byte itself, the byte after a CR that is not
//!   LF, or the last byte a size line (1024 bytes with its CRLF) or the
//!   trailer section may have when it has not ended with it.
//! - Data bytes are skipped in bulk (the kernel passes them with
//!   `apply_bytes`); the table has no row for them.

use super::ScanBuildError;
use crate::http::{is_hex_digit, is_tchar};
use crate::model::Limits;
use std::collections::HashMap;
use std::sync::OnceLock;

pub use crate::http::MAX_CHUNK_LINE;
use crate::http::MAX_CHUNK_SIZE_DIGITS as MAX_SIZE_DIGITS;
/// Columns per row of the chunk table.
pub const CHUNK_COLUMNS: usize = 16;

/// What the chunk walker does besides moving to the entry's next state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChunkAction {
    None = 0,
    /// This byte is the offending one.
    Fail = 1,
    /// A size-line byte: `line_len += 1`, refused at 1024.
    Line = 2,
    /// A size digit: `size = size << 4 | hex(b)`, then as `Line`.
    Digit = 3,
    /// The size line's LF: `line_len = 0`; size 0 → state `arg` (the
    /// trailer section, counters reset); else `remaining = size`, `size =
    /// 0`, state `next` (data).
    SizeEnd = 4,
    /// A trailer-section byte: `trailer_bytes += 1`, refused at
    /// `header_bytes`.
    Trailer = 5,
    /// The first byte of a trailer field line: refused if `trailer_fields
    /// >= headers`, then as `Trailer`.
    TrailerLine = 6,
    /// The LF of a trailer field line: `trailer_fields += 1`, then as
    /// `Trailer`.
    TrailerFieldEnd = 7,
    /// The final LF: the body ended.
    Done = 8,
}

impl ChunkAction {
    pub const ALL: [ChunkAction; 9] = [
        ChunkAction::None,
        ChunkAction::Fail,
        ChunkAction::Line,
        ChunkAction::Digit,
        ChunkAction::SizeEnd,
        ChunkAction::Trailer,
        ChunkAction::TrailerLine,
        ChunkAction::TrailerFieldEnd,
        ChunkAction::Done,
    ];

    pub fn from_code(code: u8) -> Option<ChunkAction> {
        ChunkAction::ALL.get(usize::from(code)).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Chunk {
    Dead,
    SizeFirst,
    /// `n` hex digits read (1..=16).
    Size(u8),
    ExtensionNameFirst,
    ExtensionName,
    ExtensionValueFirst,
    ExtensionToken,
    ExtensionQuoted,
    ExtensionQuotedPair,
    ExtensionAfterQuoted,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerFieldLf,
    TrailerFinalLf,
    Done,
}

impl Chunk {
    fn all() -> Vec<Chunk> {
        let mut states = vec![Chunk::Dead, Chunk::SizeFirst];
        states.extend((1..=MAX_SIZE_DIGITS).map(Chunk::Size));
        states.extend([
            Chunk::ExtensionNameFirst,
            Chunk::ExtensionName,
            Chunk::ExtensionValueFirst,
            Chunk::ExtensionToken,
            Chunk::ExtensionQuoted,
            Chunk::ExtensionQuotedPair,
            Chunk::ExtensionAfterQuoted,
            Chunk::SizeLf,
            Chunk::Data,
            Chunk::DataCr,
            Chunk::DataLf,
            Chunk::TrailerLineStart,
            Chunk::TrailerName,
            Chunk::TrailerValue,
            Chunk::TrailerFieldLf,
            Chunk::TrailerFinalLf,
            Chunk::Done,
        ]);
        states
    }

    /// The move for `byte`: next state, action, arg; `None` refuses it.
    fn step(self, byte: u8) -> Option<(Chunk, ChunkAction, Chunk)> {
        use ChunkAction as A;
        let go = |next, action| Some((next, action, Chunk::Dead));
        let line = |next| go(next, A::Line);
        // qdtext and quoted-pair bytes: HTAB / SP / VCHAR / obs-text.
        let quotable = matches!(byte, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff);
        match self {
            Chunk::Dead | Chunk::Data | Chunk::Done => None,
            Chunk::SizeFirst if is_hex_digit(byte) => go(Chunk::Size(1), A::Digit),
            Chunk::SizeFirst => None,
            Chunk::Size(digits) => match byte {
                _ if is_hex_digit(byte) && digits < MAX_SIZE_DIGITS => go(Chunk::Size(digits + 1), A::Digit),
                b';' => line(Chunk::ExtensionNameFirst),
                b'\r' => line(Chunk::SizeLf),
                _ => None,
            },
            Chunk::ExtensionNameFirst => is_tchar(byte).then_some((Chunk::ExtensionName, A::Line, Chunk::Dead)),
            Chunk::ExtensionName | Chunk::ExtensionToken => match byte {
                b'=' if self == Chunk::ExtensionName => line(Chunk::ExtensionValueFirst),
                b';' => line(Chunk::ExtensionNameFirst),
                b'\r' => line(Chunk::SizeLf),
                _ if is_tchar(byte) => line(self),
                _ => None,
            },
            Chunk::ExtensionValueFirst => match byte {
                b'"' => line(Chunk::ExtensionQuoted),
                _ if is_tchar(byte) => line(Chunk::ExtensionToken),
                _ => None,
            },
            Chunk::ExtensionQuoted => match byte {
                b'"' => line(Chunk::ExtensionAfterQuoted),
                b'\\' => line(Chunk::ExtensionQuotedPair),
                _ if quotable => line(Chunk::ExtensionQuoted),
                _ => None,
            },
            Chunk::ExtensionQuotedPair => quotable.then_some((Chunk::ExtensionQuoted, A::Line, Chunk::Dead)),
            Chunk::ExtensionAfterQuoted => match byte {
                b';' => line(Chunk::ExtensionNameFirst),
                b'\r' => line(Chunk::SizeLf),
                _ => None,
            },
            Chunk::SizeLf => (byte == b'\n').then_some((Chunk::Data, A::SizeEnd, Chunk::TrailerLineStart)),
            Chunk::DataCr => (byte == b'\r').then_some((Chunk::DataLf, A::None, Chunk::Dead)),
            Chunk::DataLf => (byte == b'\n').then_some((Chunk::SizeFirst, A::None, Chunk::Dead)),
            Chunk::TrailerLineStart => match byte {
                b'\r' => go(Chunk::TrailerFinalLf, A::Trailer),
                _ if is_tchar(byte) => go(Chunk::TrailerName, A::TrailerLine),
                _ => None,
            },
            Chunk::TrailerName => match byte {
                b':' => go(Chunk::TrailerValue, A::Trailer),
                _ if is_tchar(byte) => go(Chunk::TrailerName, A::Trailer),
                _ => None,
            },
            Chunk::TrailerValue => match byte {
                b'\r' => go(Chunk::TrailerFieldLf, A::Trailer),
                b'\t' => go(Chunk::TrailerValue, A::Trailer),
                0x00..=0x1f | 0x7f => None,
                _ => go(Chunk::TrailerValue, A::Trailer),
            },
            Chunk::TrailerFieldLf => (byte == b'\n').then_some((Chunk::TrailerLineStart, A::TrailerFieldEnd, Chunk::Dead)),
            Chunk::TrailerFinalLf => (byte == b'\n').then_some((Chunk::Done, A::Done, Chunk::Dead)),
        }
    }
}

/// The chunked-body machine as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTables {
    pub byte_class: [u8; 256],
    pub class_count: u8,
    pub states: u8,
    pub table: Vec<u32>,
    /// The state a body starts in (a size line's first byte).
    pub start: u8,
    /// The data state (skipped in bulk) and the state after data.
    pub data: u8,
    pub data_cr: u8,
    pub done: u8,
    /// The states' names, by number.
    pub state_names: Vec<String>,
}

impl ChunkTables {
    pub fn shared() -> Result<&'static ChunkTables, ScanBuildError> {
        static TABLES: OnceLock<Result<ChunkTables, ScanBuildError>> = OnceLock::new();
        TABLES.get_or_init(ChunkTables::build).as_ref().map_err(Clone::clone)
    }

    pub fn build() -> Result<ChunkTables, ScanBuildError> {
        let internal = |message: String| ScanBuildError::Internal { what: "chunk scanner tables", message };
        let states = Chunk::all();
        let number: HashMap<Chunk, usize> = states.iter().enumerate().map(|(index, &state)| (state, index)).collect();
        let id = |state: Chunk| number.get(&state).copied().unwrap_or(0);
        let fail = pack(0, ChunkAction::Fail, 0);
        // Rows are 256-entry arrays indexed by bytes throughout: cannot panic.
        let rows: Vec<[u32; 256]> = states
            .iter()
            .map(|state| {
                let mut row = [fail; 256];
                for (byte, slot) in row.iter_mut().enumerate() {
                    if let Some((next, action, arg)) = state.step(byte as u8) {
                        *slot = pack(id(next), action, id(arg) as u8);
                    }
                }
                row
            })
            .collect();
        let mut class_of_column: HashMap<Vec<u32>, u8> = HashMap::new();
        let mut representatives: Vec<usize> = Vec::new();
        let mut byte_class = [0u8; 256];
        for (byte, slot) in byte_class.iter_mut().enumerate() {
            let column: Vec<u32> = rows.iter().map(|row| row[byte]).collect();
            let fresh = representatives.len();
            *slot = *class_of_column.entry(column).or_insert_with(|| {
                representatives.push(byte);
                fresh as u8
            });
        }
        if representatives.len() > CHUNK_COLUMNS || states.len() > 256 {
            return Err(internal(format!("{} classes, {} states", representatives.len(), states.len())));
        }
        let mut table = vec![fail; (states.len() * CHUNK_COLUMNS).next_power_of_two()];
        for (state, row) in rows.iter().enumerate() {
            for (class, &byte) in representatives.iter().enumerate() {
                if let Some(slot) = table.get_mut(state * CHUNK_COLUMNS + class) {
                    *slot = row[byte];
                }
            }
        }
        Ok(ChunkTables {
            byte_class,
            class_count: representatives.len() as u8,
            states: states.len() as u8,
            table,
            start: id(Chunk::SizeFirst) as u8,
            data: id(Chunk::Data) as u8,
            data_cr: id(Chunk::DataCr) as u8,
            done: id(Chunk::Done) as u8,
            state_names: states.iter().map(|state| format!("{state:?}")).collect(),
        })
    }

    /// The entry for `state` and `class`, masked like the BPF load.
    pub fn entry(&self, state: u8, class: u8) -> u32 {
        let index = (usize::from(state) << 4 | usize::from(class)) & (self.table.len() - 1);
        self.table.get(index).copied().unwrap_or(0)
    }

    pub fn report(&self) -> String {
        format!(
            "chunk scanner: {} byte classes; {} states ({} entries, {} B)",
            self.class_count,
            self.states,
            self.table.len(),
            self.table.len() * 4 + 256
        )
    }
}

fn pack(next: usize, action: ChunkAction, arg: u8) -> u32 {
    (next as u32 & 0xff) | (action as u32) << 8 | u32::from(arg) << 16
}

/// The chunked body's state between calls: 32 bytes, `repr(C)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkState {
    /// Hex digits of the size line so far.
    pub size: u64,
    /// Data bytes of the current chunk still to come.
    pub remaining: u64,
    pub trailer_bytes: u32,
    pub trailer_fields: u32,
    /// Bytes of the current size line.
    pub line_len: u16,
    pub state: u8,
    /// 0: in the body; 1: done; 2: refused.
    pub status: u8,
}

/// The result of feeding body bytes (offsets relative to the bytes given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// All the bytes were taken; the body goes on.
    Continue,
    /// The body ended with this byte.
    Done(usize),
    /// This byte is the offending one.
    Refused(usize),
}

/// A chunked body being read.
#[derive(Debug, Clone)]
pub struct ChunkScanner<'t> {
    tables: &'t ChunkTables,
    max_trailer_bytes: u32,
    max_trailer_fields: u32,
    pub state: ChunkState,
}

impl<'t> ChunkScanner<'t> {
    pub fn new(tables: &'t ChunkTables, limits: Limits) -> Self {
        ChunkScanner {
            tables,
            max_trailer_bytes: limits.header_bytes.max(1),
            max_trailer_fields: limits.headers,
            state: ChunkState { state: tables.start, ..ChunkState::default() },
        }
    }

    /// Feed the next bytes of the body. After `Done` or `Refused`, further
    /// calls take nothing and return `Continue`.
    pub fn feed(&mut self, bytes: &[u8]) -> ChunkStep {
        let mut index = 0;
        while self.state.status == 0 {
            let Some(rest) = bytes.get(index..).filter(|rest| !rest.is_empty()) else { break };
            if self.state.state == self.tables.data {
                // `taken` <= rest.len(), so it fits in usize.
                let taken = self.state.remaining.min(rest.len() as u64);
                self.state.remaining -= taken;
                index += taken as usize;
                if self.state.remaining == 0 {
                    self.state.state = self.tables.data_cr;
                }
                continue;
            }
            let Some(&byte) = rest.first() else { break };
            match self.step(byte) {
                Ok(true) => {
                    self.state.status = 1;
                    return ChunkStep::Done(index);
                }
                Ok(false) => index += 1,
                Err(()) => {
                    self.state.status = 2;
                    return ChunkStep::Refused(index);
                }
            }
        }
        ChunkStep::Continue
    }

    /// The loop body: one byte; `Ok(true)` when it ends the body.
    fn step(&mut self, byte: u8) -> Result<bool, ()> {
        let s = &mut self.state;
        // A 256-entry table indexed by a byte: cannot panic.
        let class = self.tables.byte_class[usize::from(byte)];
        let entry = self.tables.entry(s.state, class);
        s.state = (entry & 0xff) as u8;
        let arg = (entry >> 16) as u8;
        let max_trailer_bytes = self.max_trailer_bytes;
        let count_line = |s: &mut ChunkState| {
            s.line_len += 1;
            if s.line_len >= MAX_CHUNK_LINE {
                return Err(());
            }
            Ok(())
        };
        let count_trailer = |s: &mut ChunkState| {
            s.trailer_bytes = s.trailer_bytes.saturating_add(1);
            if s.trailer_bytes >= max_trailer_bytes {
                return Err(());
            }
            Ok(())
        };
        match ChunkAction::from_code((entry >> 8) as u8).ok_or(())? {
            ChunkAction::None => {}
            ChunkAction::Fail => return Err(()),
            ChunkAction::Digit => {
                s.size = s.size << 4 | u64::from((byte & 15) + 9 * (byte >> 6));
                count_line(s)?;
            }
            ChunkAction::Line => count_line(s)?,
            ChunkAction::SizeEnd => {
                s.line_len = 0;
                if s.size == 0 {
                    s.state = arg;
                    s.trailer_bytes = 0;
                    s.trailer_fields = 0;
                } else {
                    s.remaining = s.size;
                    s.size = 0;
                }
            }
            ChunkAction::TrailerLine => {
                if s.trailer_fields >= self.max_trailer_fields {
                    return Err(());
                }
                count_trailer(s)?;
            }
            ChunkAction::TrailerFieldEnd => {
                s.trailer_fields = s.trailer_fields.saturating_add(1);
                count_trailer(s)?;
            }
            ChunkAction::Trailer => count_trailer(s)?,
            ChunkAction::Done => return Ok(true),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> ChunkStep {
        ChunkScanner::new(ChunkTables::shared().expect("builds"), Limits::default()).feed(body)
    }

    #[test]
    fn tables_are_small_and_deterministic() {
        let tables = ChunkTables::build().expect("builds");
        assert_eq!(tables, ChunkTables::build().expect("again"));
        assert!(tables.table.len().is_power_of_two());
        assert_eq!(std::mem::size_of::<ChunkState>(), 32);
        use std::mem::offset_of;
        let offsets = [
            offset_of!(ChunkState, size),
            offset_of!(ChunkState, remaining),
            offset_of!(ChunkState, trailer_bytes),
            offset_of!(ChunkState, trailer_fields),
            offset_of!(ChunkState, line_len),
            offset_of!(ChunkState, state),
            offset_of!(ChunkState, status),
        ];
        assert_eq!(offsets, [0, 8, 16, 20, 24, 26, 27]);
        eprintln!("{}", tables.report());
        for (class, bytes) in crate::scan::describe_classes(&tables.byte_class, tables.class_count).iter().enumerate() {
            eprintln!("chunk class {class:2}: {bytes}");
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(run(b"0\r\n\r\n"), ChunkStep::Done(4));
        assert_eq!(run(b"5\r\nhello\r\n0\r\n\r\nNEXT"), ChunkStep::Done(14));
        assert_eq!(run(b"5;a=b;c;d=\"x y\\\"\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), ChunkStep::Done(38));
        assert_eq!(run(b"00000000000000000\r\n"), ChunkStep::Refused(16));
        assert_eq!(run(b"5\r\nhel"), ChunkStep::Continue);
        assert_eq!(run(b"5\rX"), ChunkStep::Refused(2));
        assert_eq!(run(b"5\r\nhello\rX"), ChunkStep::Refused(9));
    }

    #[test]
    fn pieces_agree() {
        let body = b"5;x=1\r\nhello\r\n3\r\nabc\r\n0\r\nA: b\r\n\r\n";
        let tables = ChunkTables::shared().expect("builds");
        for cut in 0..body.len() {
            let mut scanner = ChunkScanner::new(tables, Limits::default());
            let (first, second) = body.split_at(cut);
            assert_eq!(scanner.feed(first), ChunkStep::Continue, "cut {cut}");
            assert_eq!(scanner.feed(second), ChunkStep::Done(second.len() - 1), "cut {cut}");
        }
    }
}
