//! The head walker: a user-space model of the BPF scan loop, one byte at a
//! time over [`HeadTables`], with all its state in [`HeadState`].
//!
//! Invariants:
//! - [`HeadScanner::step`] is the loop body: one class load, one lexer
//!   entry load, one action from [`Action`], then the `header_bytes` check;
//!   it reads nothing but the tables, the state struct, the byte, the
//!   limits and (through the hooks) the policy's automata.
//! - The first violation stops the scan; later bytes change nothing.
//! - The scan may be fed in any pieces: the result depends only on the
//!   bytes (the kernel re-runs the scan over held bytes instead).

use super::head::{Action, Form};
use super::hooks::{HeadHooks, HeaderId};
use super::sub::DIGIT_FLAG;
use super::tables::HeadTables;
use crate::http::{LimitKind, MalformedKind};
use crate::model::Limits;

/// The largest Content-Length accepted: 2^53 (language.md §7).
pub const MAX_CONTENT_LENGTH: u64 = 1 << 53;
/// Content-Length saturates here, so `* 10 + 9` never overflows.
const CONTENT_LENGTH_CAP: u64 = MAX_CONTENT_LENGTH + 1;

/// A refused head's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Violation {
    Malformed(MalformedKind),
    Limit(LimitKind),
}

impl Violation {
    /// `HeadState::violation` codes from here up are limits.
    pub const LIMIT_BASE: u8 = 0x40;

    /// The violation byte of the scanner's state (`HeadState::violation`,
    /// also written by the generated program): 0 none, `1 + index` of a
    /// malformed kind, [`Violation::LIMIT_BASE`] `+ index` of a limit.
    pub fn code(self) -> u8 {
        match self {
            Violation::Malformed(kind) => 1 + super::head::kind_code(kind),
            Violation::Limit(kind) => Self::LIMIT_BASE + LimitKind::ALL.iter().position(|&k| k == kind).unwrap_or(0) as u8,
        }
    }

    /// The violation a code stands for (`None`: 0, or no such kind).
    pub fn from_code(code: u8) -> Option<Violation> {
        if code >= Self::LIMIT_BASE {
            LimitKind::ALL.get(usize::from(code - Self::LIMIT_BASE)).copied().map(Violation::Limit)
        } else {
            MalformedKind::ALL.get(usize::from(code.checked_sub(1)?)).copied().map(Violation::Malformed)
        }
    }
}

/// A refused head: the reason and the offset of the byte it sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanError {
    pub violation: Violation,
    pub offset: usize,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What a complete, accepted head tells the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    /// Bytes of the head, through its final CRLF.
    pub len: usize,
    /// The minor version: 0 (HTTP/1.0) or 1 (HTTP/1.1).
    pub minor_version: u8,
    pub form: Form,
    pub framing: Framing,
    /// CONNECT, or an `Upgrade` field line.
    pub switches_protocols: bool,
    /// Bit `id`: a field line with that header id is present.
    pub present: u64,
    /// The method is `GET` or `HEAD` (what `get_body` looks at).
    pub get_or_head: bool,
}

/// Where a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadProgress {
    /// The bytes end inside a head with no violation so far.
    Incomplete,
    Refused(ScanError),
    Complete(HeadFacts),
}

/// The per-request scan state: 56 bytes, `repr(C)`, the layout the BPF
/// program keeps (docs/scan.md, "State").
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadState {
    /// Bit `id`: a field line with header id `id` was seen.
    pub present: u64,
    /// Bit `id`: seen more than once.
    pub repeated: u64,
    /// Bit `id`: a value of that header failed its syntax (Host,
    /// Content-Length, Transfer-Encoding).
    pub value_bad: u64,
    /// Content-Length digits so far, saturating at 2^53 + 1.
    pub content_length: u64,
    /// Bytes taken: the offset of the next byte.
    pub offset: u32,
    /// Where the violation sits (when `status` is refused).
    pub violation_offset: u32,
    /// The lexer state.
    pub state: u16,
    /// The value-syntax state (a field value, or a CONNECT literal).
    pub sub: u16,
    /// Field lines completed.
    pub fields: u16,
    /// The current field line's header id.
    pub header_id: u8,
    /// The high nibble of the path escape being read.
    pub escape_high: u8,
    /// Bytes inside a CONNECT target's IP literal.
    pub literal_len: u8,
    /// 0: HTTP/1.0, 1: HTTP/1.1 (set by the version's digit).
    pub minor_version: u8,
    /// [`Form`] as a byte.
    pub form: u8,
    /// 0: scanning; 1: complete; 2: refused.
    pub status: u8,
    /// When refused: 1 + malformed kind index, or 0x40 + limit index.
    pub violation: u8,
    /// `head::METHOD_GET_OR_HEAD` when the method is GET or HEAD.
    pub method: u8,
}

const SCANNING: u8 = 0;
const COMPLETE: u8 = 1;
const REFUSED: u8 = 2;

/// What one byte did.
enum Stop {
    Continue,
    Violation(Violation, u32),
    Complete,
}

/// A head scan over shared tables.
#[derive(Debug, Clone)]
pub struct HeadScanner<'t> {
    tables: &'t HeadTables,
    header_bytes: u32,
    max_fields: u32,
    pub state: HeadState,
    result: HeadProgress,
}

/// Scan the head at the start of `bytes` (bytes after it are ignored).
pub fn walk_head<H: HeadHooks>(tables: &HeadTables, bytes: &[u8], limits: Limits, hooks: &mut H) -> HeadProgress {
    HeadScanner::new(tables, limits).feed(bytes, hooks)
}

impl<'t> HeadScanner<'t> {
    pub fn new(tables: &'t HeadTables, limits: Limits) -> Self {
        HeadScanner {
            tables,
            header_bytes: limits.header_bytes.max(1),
            max_fields: limits.headers,
            state: HeadState { state: tables.start, ..HeadState::default() },
            result: HeadProgress::Incomplete,
        }
    }

    /// Take the next bytes of the head; stops at its end or at the first
    /// violation (bytes after that are not looked at).
    pub fn feed<H: HeadHooks>(&mut self, bytes: &[u8], hooks: &mut H) -> HeadProgress {
        for &byte in bytes {
            if self.state.status != SCANNING {
                break;
            }
            let offset = self.state.offset;
            match self.step(byte, hooks) {
                Stop::Violation(violation, at) => self.refuse(violation, at),
                Stop::Complete if offset < self.header_bytes => self.complete(offset, hooks),
                // The head may not be longer than header_bytes; a CR as the
                // last allowed byte waits for the next (a bare CR sits at
                // the CR, inside the allowance).
                Stop::Complete | Stop::Continue => {
                    let awaits_lf = self.state.state.wrapping_sub(1) < super::head::AFTER_CR_STATES;
                    if offset + 1 >= self.header_bytes && !(offset + 1 == self.header_bytes && awaits_lf) {
                        self.refuse(Violation::Limit(LimitKind::HeaderBytes), self.header_bytes - 1);
                    }
                }
            }
        }
        self.result
    }

    pub fn progress(&self) -> HeadProgress {
        self.result
    }

    /// The loop body: one byte.
    fn step<H: HeadHooks>(&mut self, byte: u8, hooks: &mut H) -> Stop {
        let tables = self.tables;
        let s = &mut self.state;
        let offset = s.offset;
        s.offset += 1;
        // A 256-entry table indexed by a byte: cannot panic.
        let class = tables.byte_class[usize::from(byte)];
        let entry = tables.main_entry(s.state, class);
        s.state = (entry & 0xff) as u16;
        let arg = (entry >> 16) as u8;
        let Some(action) = Action::from_code((entry >> 8) as u8) else {
            // No table entry holds an unknown code (tested); fail closed.
            return Stop::Violation(Violation::Malformed(MalformedKind::RequestLine), offset);
        };
        match action {
            Action::None => {}
            Action::Fail => return fail(arg, offset),
            Action::MethodByte => hooks.method_byte(byte),
            Action::MethodEnd => {
                s.form = arg & !super::head::METHOD_GET_OR_HEAD;
                s.method = arg & super::head::METHOD_GET_OR_HEAD;
                hooks.method_end();
            }
            Action::TargetFirst => {
                s.form = arg;
                hooks.path_byte(byte);
            }
            Action::PathByte => hooks.path_byte(byte),
            Action::EscapeHigh => s.escape_high = hex_value(byte),
            Action::PathEscaped => hooks.path_byte(s.escape_high << 4 | hex_value(byte)),
            Action::PathEnd => hooks.path_end(),
            Action::Version => s.minor_version = arg,
            Action::LineName | Action::LineFail if u32::from(s.fields) >= self.max_fields => {
                return Stop::Violation(Violation::Limit(LimitKind::Headers), offset);
            }
            Action::LineName | Action::NameByte => hooks.header_name_byte(byte.to_ascii_lowercase()),
            Action::LineFail => return fail(arg, offset),
            Action::NameEnd => {
                let id = hooks.header_name_end() & 63;
                let bit = 1u64 << id;
                s.repeated |= s.present & bit;
                s.present |= bit;
                s.header_id = id;
                // `id` <= 63 and the table has 64 entries.
                s.sub = tables.role_start[usize::from(id)];
            }
            Action::ValueByte => {
                hooks.header_value_byte(byte);
                let sub = tables.sub_entry(s.sub, class);
                s.sub = sub & !DIGIT_FLAG;
                if sub & DIGIT_FLAG != 0 {
                    s.content_length = (s.content_length * 10 + u64::from(byte.wrapping_sub(b'0'))).min(CONTENT_LENGTH_CAP);
                }
            }
            Action::FieldEnd => {
                hooks.header_value_end();
                s.value_bad |= u64::from(tables.sub_rejects(s.sub)) << s.header_id;
                s.fields = s.fields.saturating_add(1);
            }
            Action::LiteralOpen => {
                s.sub = tables.literal_start;
                s.literal_len = 0;
            }
            Action::LiteralByte => {
                s.literal_len = s.literal_len.saturating_add(1);
                if s.literal_len > tables.max_literal {
                    return Stop::Violation(Violation::Malformed(MalformedKind::Target), offset);
                }
                s.sub = tables.sub_entry(s.sub, class) & !DIGIT_FLAG;
            }
            Action::LiteralClose => {
                s.sub = tables.sub_entry(s.sub, class) & !DIGIT_FLAG;
                if s.sub == 0 {
                    return Stop::Violation(Violation::Malformed(MalformedKind::Target), offset);
                }
            }
            Action::HeadEnd => return Stop::Complete,
        }
        Stop::Continue
    }

    fn refuse(&mut self, violation: Violation, offset: u32) {
        self.state.status = REFUSED;
        self.state.violation = violation.code();
        self.state.violation_offset = offset;
        self.result = HeadProgress::Refused(ScanError { violation, offset: offset as usize });
    }

    /// The whole-head checks, in the table's order, at the final LF.
    fn complete<H: HeadHooks>(&mut self, offset: u32, hooks: &H) {
        use MalformedKind as K;
        let s = &self.state;
        let has = |bits: u64, id: u8| bits & (1u64 << id) != 0;
        let (host, length, coding, upgrade) =
            (HeaderId::HOST, HeaderId::CONTENT_LENGTH, HeaderId::TRANSFER_ENCODING, HeaderId::UPGRADE);
        let refused = if has(s.repeated, host) || (!has(s.present, host) && s.minor_version == 1) || has(s.value_bad, host) {
            Some(K::Host)
        } else if has(s.repeated, length)
            || (has(s.present, length) && (has(s.value_bad, length) || s.content_length > MAX_CONTENT_LENGTH))
        {
            Some(K::ContentLength)
        } else if has(s.repeated, coding) || (has(s.present, coding) && (s.minor_version == 0 || has(s.value_bad, coding))) {
            Some(K::TransferEncoding)
        } else if has(s.present, coding) && has(s.present, length) {
            Some(K::ClTe)
        } else if s.method != 0
            && hooks.refuse_get_body()
            && (has(s.present, coding) || (has(s.present, length) && s.content_length > 0))
        {
            Some(K::GetBody)
        } else if s.repeated & hooks.refuse_duplicates() != 0 {
            Some(K::DuplicateHeader)
        } else {
            None
        };
        if let Some(kind) = refused {
            self.refuse(Violation::Malformed(kind), offset);
            return;
        }
        let form = match s.form {
            1 => Form::Asterisk,
            2 => Form::Authority,
            _ => Form::Origin,
        };
        let framing = if has(s.present, coding) {
            Framing::Chunked
        } else if has(s.present, length) && s.content_length > 0 {
            Framing::Length(s.content_length)
        } else {
            Framing::None
        };
        let facts = HeadFacts {
            len: offset as usize + 1,
            minor_version: s.minor_version,
            form,
            framing,
            switches_protocols: form == Form::Authority || has(s.present, upgrade),
            present: s.present,
            get_or_head: s.method != 0,
        };
        self.state.status = COMPLETE;
        self.result = HeadProgress::Complete(facts);
    }
}

/// A `Fail` entry's violation: kind index | back << 5.
fn fail(arg: u8, offset: u32) -> Stop {
    let kind = MalformedKind::ALL.get(usize::from(arg & 0x1f)).copied().unwrap_or(MalformedKind::RequestLine);
    Stop::Violation(Violation::Malformed(kind), offset.saturating_sub(u32::from(arg >> 5)))
}

/// A hex digit's value, branch-free as in BPF: `(b & 15) + 9 * (b >> 6)`
/// (the lexer only calls it on hex digits).
fn hex_value(byte: u8) -> u8 {
    (byte & 15) + 9 * (byte >> 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_code_round_trips() {
        let all = MalformedKind::ALL.iter().map(|&k| Violation::Malformed(k)).chain(LimitKind::ALL.iter().map(|&k| Violation::Limit(k)));
        for violation in all {
            assert_ne!(violation.code(), 0);
            assert_eq!(Violation::from_code(violation.code()), Some(violation));
        }
        assert_eq!(Violation::from_code(0), None);
        assert!(MalformedKind::ALL.len() < usize::from(Violation::LIMIT_BASE));
    }
    use crate::scan::RecordingHooks;

    fn tables() -> &'static HeadTables {
        HeadTables::shared().expect("tables build")
    }

    fn scan(head: &str) -> HeadProgress {
        walk_head(tables(), head.as_bytes(), Limits::default(), &mut RecordingHooks::default())
    }

    fn malformed(head: &str) -> (MalformedKind, usize) {
        match scan(head) {
            HeadProgress::Refused(ScanError { violation: Violation::Malformed(kind), offset }) => (kind, offset),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    /// docs/scan.md gives these offsets to the BPF emitter.
    #[test]
    fn state_layout() {
        use std::mem::offset_of;
        assert_eq!(std::mem::size_of::<HeadState>(), 56);
        let offsets = [
            offset_of!(HeadState, present),
            offset_of!(HeadState, repeated),
            offset_of!(HeadState, value_bad),
            offset_of!(HeadState, content_length),
            offset_of!(HeadState, offset),
            offset_of!(HeadState, violation_offset),
            offset_of!(HeadState, state),
            offset_of!(HeadState, sub),
            offset_of!(HeadState, fields),
            offset_of!(HeadState, header_id),
            offset_of!(HeadState, escape_high),
            offset_of!(HeadState, literal_len),
            offset_of!(HeadState, minor_version),
            offset_of!(HeadState, form),
            offset_of!(HeadState, status),
            offset_of!(HeadState, violation),
            offset_of!(HeadState, method),
        ];
        assert_eq!(offsets, [0, 8, 16, 24, 32, 36, 40, 42, 44, 46, 47, 48, 49, 50, 51, 52, 53]);
    }

    #[test]
    fn hex_values() {
        for byte in (0..=255u8).filter(u8::is_ascii_hexdigit) {
            assert_eq!(hex_value(byte), crate::http::hex_value(byte));
        }
    }

    #[test]
    fn a_few_heads() {
        use MalformedKind as K;
        assert_eq!(malformed("GET /a%2Fb HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a/.. HTTP/1.1\r\n"), (K::PathTraversal, 9));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost: a\rX"), (K::LineEnding, 23));
        assert_eq!(malformed("CONNECT [::1 HTTP/1.1\r\n"), (K::Target, 12));
        assert_eq!(malformed("GET / HTTP/1.1\r\n\r\n"), (K::Host, 17));
        let mut hooks = RecordingHooks::default();
        let head = b"POST /a%41/b?x HTTP/1.1\r\nHost: x\r\nX-Y:  v w \r\nContent-Length: 12\r\n\r\nbody";
        let HeadProgress::Complete(facts) = walk_head(tables(), head, Limits::default(), &mut hooks) else { panic!() };
        assert_eq!(facts.len, head.len() - 4);
        assert_eq!(facts.framing, Framing::Length(12));
        assert_eq!(hooks.method, b"POST");
        assert_eq!(hooks.path, b"/aA/b");
        assert_eq!(hooks.fields[1].name, b"x-y");
        assert_eq!(hooks.fields[1].value, b"v w ");
    }
}
