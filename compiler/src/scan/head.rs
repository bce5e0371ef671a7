//! The head lexer: its states, its action codes, and its transition
//! function over raw bytes, written from language.md §7 with `http`'s
//! character classes. [`super::tables`] evaluates the function for every
//! (state, byte) pair and packs the result into the `main` table.
//!
//! Invariants:
//! - Every violation the lexer can see is a transition: a `Fail` move names
//!   the kind and how many bytes back it sits (0: this byte; 1: the CR
//!   before it, or the `%` of an escape after its `%`; 2: the `%` of an
//!   escape after its first hex digit).
//! - The states that wait for the byte after a CR are numbered 1 to
//!   [`AFTER_CR_STATES`] (the LF of a CRLF, or what tells a bare CR in a
//!   field name from a line without a colon), so the header_bytes check
//!   tests `state - 1 < AFTER_CR_STATES` (see the walker).
//! - State 0 is never entered by a move that does not fail; the walker stops
//!   at the first `Fail`.
//! - The method class (`OPTIONS`, `CONNECT`, other) is recognised by the
//!   lexer itself (a case-sensitive trie), so the target's form needs no
//!   help from the policy's method table.

use crate::http::{is_hex_digit, is_path_byte, is_query_byte, is_sub_delim, is_tchar, is_unreserved, MalformedKind};

/// What the walker does with a byte besides moving to the entry's next
/// state. Codes are the values in the table (`action` byte of an entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Action {
    /// Nothing.
    None = 0,
    /// A violation: `arg` = kind (index in [`MalformedKind::ALL`]) | back << 5.
    Fail = 1,
    /// `method_byte(b)`.
    MethodByte = 2,
    /// The SP after the method: `form = arg`, `method_end()`.
    MethodEnd = 3,
    /// The first byte of an origin-form (`/`) or asterisk-form (`*`)
    /// target: `form = arg`, `path_byte(b)`.
    TargetFirst = 4,
    /// `path_byte(b)`: a literal path byte.
    PathByte = 5,
    /// The first hex digit of a `%HH` in the path: `escape_high = hex(b)`.
    EscapeHigh = 6,
    /// The second hex digit: `path_byte(escape_high << 4 | hex(b))`.
    PathEscaped = 7,
    /// The SP or `?` that ends the path: `path_end()`.
    PathEnd = 8,
    /// The version's last digit: `version = arg` (0: HTTP/1.0, 1: HTTP/1.1).
    Version = 9,
    /// The first byte of a field line: `limit:headers` if `fields >=
    /// headers`, else `header_name_byte(lower(b))`.
    LineName = 10,
    /// A field line starting with a byte that cannot start a name:
    /// `limit:headers` if `fields >= headers`, else the violation in `arg`
    /// (as for [`Action::Fail`]).
    LineFail = 11,
    /// `header_name_byte(lower(b))`.
    NameByte = 12,
    /// The colon: `id = header_name_end()`; presence bits; `sub =
    /// role_start[id]`.
    NameEnd = 13,
    /// A value byte after the leading whitespace: `header_value_byte(b)`;
    /// steps the value-syntax table (and Content-Length's digits).
    ValueByte = 14,
    /// The LF ending a field line: `header_value_end()`, the value's
    /// syntax verdict into `value_bad`, `fields += 1`.
    FieldEnd = 15,
    /// `[` opening a CONNECT target's IP literal: `sub = literal_start`,
    /// `literal_len = 0`.
    LiteralOpen = 16,
    /// A byte inside that literal: `literal_len += 1` (past 64:
    /// `malformed:target` here), step `sub`.
    LiteralByte = 17,
    /// Its `]`: step `sub`; dead (not an IPv6address or IPvFuture):
    /// `malformed:target` here.
    LiteralClose = 18,
    /// The final LF: the whole-head checks.
    HeadEnd = 19,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::None,
        Action::Fail,
        Action::MethodByte,
        Action::MethodEnd,
        Action::TargetFirst,
        Action::PathByte,
        Action::EscapeHigh,
        Action::PathEscaped,
        Action::PathEnd,
        Action::Version,
        Action::LineName,
        Action::LineFail,
        Action::NameByte,
        Action::NameEnd,
        Action::ValueByte,
        Action::FieldEnd,
        Action::LiteralOpen,
        Action::LiteralByte,
        Action::LiteralClose,
        Action::HeadEnd,
    ];

    pub fn from_code(code: u8) -> Option<Action> {
        Action::ALL.get(usize::from(code)).copied()
    }
}

/// The request target's form, as recorded in [`super::HeadState::form`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Form {
    Origin = 0,
    Asterisk = 1,
    Authority = 2,
}

/// `arg` of a `Fail`: the kind's index and how many bytes back it sits.
pub(crate) fn fail_arg(kind: MalformedKind, back: u8) -> u8 {
    kind_code(kind) | (back << 5)
}

pub(crate) fn kind_code(kind: MalformedKind) -> u8 {
    MalformedKind::ALL.iter().position(|&k| k == kind).map_or(0, |index| index as u8)
}

/// The method so far, as far as the target's form cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MethodClass {
    Other,
    Options,
    Connect,
}

/// The decoded path's current segment, as far as dot segments and empty
/// segments care: empty, `.`, `..`, or anything else (`...` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Empty,
    Dot,
    DotDot,
    Other,
}

impl Segment {
    const ALL: [Segment; 4] = [Segment::Empty, Segment::Dot, Segment::DotDot, Segment::Other];

    fn after_dot(self) -> Segment {
        match self {
            Segment::Empty => Segment::Dot,
            Segment::Dot => Segment::DotDot,
            Segment::DotDot | Segment::Other => Segment::Other,
        }
    }

    fn is_dot_segment(self) -> bool {
        matches!(self, Segment::Dot | Segment::DotDot)
    }
}

/// What the high nibble of a path escape decides about the decoded byte
/// (with the low nibble): controls (`0x`, `1x`), `%2E` (`.`) and `%2F`
/// (`/`), `%3B` (`;`), `%5C` (`\`), `%7F` (DEL), or nothing special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HighNibble {
    Control,
    Two,
    Three,
    Five,
    Seven,
    Plain,
}

impl HighNibble {
    const ALL: [HighNibble; 6] =
        [HighNibble::Control, HighNibble::Two, HighNibble::Three, HighNibble::Five, HighNibble::Seven, HighNibble::Plain];

    fn of(nibble: u8) -> HighNibble {
        match nibble {
            0 | 1 => HighNibble::Control,
            2 => HighNibble::Two,
            3 => HighNibble::Three,
            5 => HighNibble::Five,
            7 => HighNibble::Seven,
            _ => HighNibble::Plain,
        }
    }
}

/// A path escape in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PathEscape {
    None,
    /// After `%`.
    Percent,
    /// After `%` and one hex digit.
    High(HighNibble),
}

/// The states after a CR whose violation, if any, sits at the CR and is
/// known only at the next byte: numbered 1 to this.
pub const AFTER_CR_STATES: u16 = 4;

/// The lexer's states. [`Lex::all`] gives their numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lex {
    /// Never entered; a padding row.
    Dead,
    /// A CR ended the request line.
    RequestLineLf,
    /// A CR ended a field line.
    FieldLf,
    /// A CR started a line: the final CRLF.
    FinalLf,
    /// A CR inside a field name: LF after it makes a line without a colon
    /// (`header-syntax`), anything else makes it a bare CR (`line-ending`);
    /// either sits at the CR.
    NameCr,
    /// The head's first byte.
    MethodFirst,
    /// A method that is not a prefix of `OPTIONS` or `CONNECT`.
    Method,
    /// The first `n` bytes of `OPTIONS` (1..=7).
    Options(u8),
    /// The first `n` bytes of `CONNECT` (1..=7).
    Connect(u8),
    /// The first `n` bytes of `GET` (1..=3) or `HEAD` (1..=4): methods
    /// whose body `get_body deny` refuses.
    Get(u8),
    Head(u8),
    TargetFirst(MethodClass),
    /// After `OPTIONS *`.
    AsteriskEnd,
    Path(Segment, PathEscape),
    /// The query: never decoded, so `%` is an ordinary byte there.
    Query,
    /// CONNECT's authority after a reg-name byte or a complete escape.
    AuthorityName,
    AuthorityPercent,
    AuthorityHigh,
    /// Inside `[...]`.
    AuthorityLiteral,
    AuthorityAfterLiteral,
    AuthorityPortStart,
    AuthorityPort,
    /// The next byte of `HTTP/1.x` at this index (0..=7); 8: after the
    /// digit, waiting for CR.
    Version(u8),
    /// The first byte of a field line or of the final CRLF.
    LineStart,
    Name,
    /// A field value's leading SP/HTAB.
    ValueLead,
    ValueBody,
    /// The head ended (never stepped).
    Complete,
}

/// What one byte does in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    Go(Lex, Action, u8),
    Fail(MalformedKind, u8),
}

const VERSION_TEXT: &[u8; 7] = b"HTTP/1.";
const OPTIONS: &[u8; 7] = b"OPTIONS";
const CONNECT: &[u8; 7] = b"CONNECT";
const GET: &[u8; 3] = b"GET";
const HEAD: &[u8; 4] = b"HEAD";

/// The bit of `Action::MethodEnd`'s arg (above the [`Form`]) and of
/// `HeadState::method` that says the method is `GET` or `HEAD`.
pub const METHOD_GET_OR_HEAD: u8 = 0x10;

impl Lex {
    /// Every state, in table order. The first four are fixed (see the
    /// module invariants); the start state is [`Lex::MethodFirst`].
    pub fn all() -> Vec<Lex> {
        let mut states = vec![Lex::Dead, Lex::RequestLineLf, Lex::FieldLf, Lex::FinalLf, Lex::NameCr, Lex::MethodFirst, Lex::Method];
        states.extend((1..=7).map(Lex::Options));
        states.extend((1..=7).map(Lex::Connect));
        states.extend((1..=3).map(Lex::Get));
        states.extend((1..=4).map(Lex::Head));
        states.extend([MethodClass::Other, MethodClass::Options, MethodClass::Connect].map(Lex::TargetFirst));
        states.push(Lex::AsteriskEnd);
        for segment in Segment::ALL {
            states.push(Lex::Path(segment, PathEscape::None));
            states.push(Lex::Path(segment, PathEscape::Percent));
            states.extend(HighNibble::ALL.map(|high| Lex::Path(segment, PathEscape::High(high))));
        }
        states.push(Lex::Query);
        states.extend([
            Lex::AuthorityName,
            Lex::AuthorityPercent,
            Lex::AuthorityHigh,
            Lex::AuthorityLiteral,
            Lex::AuthorityAfterLiteral,
            Lex::AuthorityPortStart,
            Lex::AuthorityPort,
        ]);
        states.extend((0..=8).map(Lex::Version));
        states.extend([Lex::LineStart, Lex::Name, Lex::ValueLead, Lex::ValueBody, Lex::Complete]);
        states
    }

    /// The move for `byte` in this state (language.md §7 and the
    /// evaluator's documented decisions, row by row).
    pub fn step(self, byte: u8) -> Move {
        use MalformedKind as K;
        let fail = |kind| Move::Fail(kind, 0);
        let line_break = matches!(byte, b'\r' | b'\n');
        match self {
            Lex::Dead | Lex::Complete => fail(K::RequestLine),
            Lex::MethodFirst => match self.method_next(byte) {
                Some(next) => Move::Go(next, Action::MethodByte, 0),
                None => fail(K::RequestLine),
            },
            Lex::Method | Lex::Options(_) | Lex::Connect(_) | Lex::Get(_) | Lex::Head(_) => match byte {
                b' ' => {
                    let (class, form) = match self {
                        Lex::Options(7) => (MethodClass::Options, Form::Origin),
                        Lex::Connect(7) => (MethodClass::Connect, Form::Authority),
                        _ => (MethodClass::Other, Form::Origin),
                    };
                    let get_or_head = if matches!(self, Lex::Get(3) | Lex::Head(4)) { METHOD_GET_OR_HEAD } else { 0 };
                    Move::Go(Lex::TargetFirst(class), Action::MethodEnd, form as u8 | get_or_head)
                }
                b'\r' | b'\n' => fail(K::RequestLine),
                _ => match self.method_next(byte) {
                    Some(next) => Move::Go(next, Action::MethodByte, 0),
                    None => fail(K::Method),
                },
            },
            Lex::TargetFirst(_) if byte == b' ' || line_break => fail(K::RequestLine),
            Lex::TargetFirst(MethodClass::Connect) => Lex::authority_start(byte),
            Lex::TargetFirst(class) => match byte {
                b'*' if class == MethodClass::Options => Move::Go(Lex::AsteriskEnd, Action::TargetFirst, Form::Asterisk as u8),
                b'/' => Move::Go(Lex::Path(Segment::Empty, PathEscape::None), Action::TargetFirst, Form::Origin as u8),
                _ => fail(K::Target),
            },
            Lex::AsteriskEnd => match byte {
                b' ' => Move::Go(Lex::Version(0), Action::PathEnd, 0),
                _ if line_break => fail(K::RequestLine),
                _ => fail(K::Target),
            },
            Lex::Path(segment, escape) => Lex::path_step(segment, escape, byte),
            Lex::Query => match byte {
                b' ' => Move::Go(Lex::Version(0), Action::None, 0),
                _ if line_break => fail(K::RequestLine),
                _ if is_query_byte(byte) => Move::Go(Lex::Query, Action::None, 0),
                _ => fail(K::Target),
            },
            // CONNECT's `host:port`: an unfinished escape sits at its `%`,
            // whatever ends it (SP, CR and LF included).
            Lex::AuthorityPercent if is_hex_digit(byte) => Move::Go(Lex::AuthorityHigh, Action::None, 0),
            Lex::AuthorityPercent => Move::Fail(K::Target, 1),
            Lex::AuthorityHigh if is_hex_digit(byte) => Move::Go(Lex::AuthorityName, Action::None, 0),
            Lex::AuthorityHigh => Move::Fail(K::Target, 2),
            // Otherwise SP ends the target (only after a port), CR and LF
            // are `request-line`.
            Lex::AuthorityName
            | Lex::AuthorityLiteral
            | Lex::AuthorityAfterLiteral
            | Lex::AuthorityPortStart
            | Lex::AuthorityPort
                if byte == b' ' || line_break =>
            {
                match (self, byte) {
                    (_, b'\r' | b'\n') => fail(K::RequestLine),
                    (Lex::AuthorityPort, _) => Move::Go(Lex::Version(0), Action::None, 0),
                    _ => fail(K::Target),
                }
            }
            Lex::AuthorityName => match byte {
                b':' => Move::Go(Lex::AuthorityPortStart, Action::None, 0),
                b'%' => Move::Go(Lex::AuthorityPercent, Action::None, 0),
                _ if is_reg_name_byte(byte) => Move::Go(Lex::AuthorityName, Action::None, 0),
                _ => fail(K::Target),
            },
            Lex::AuthorityLiteral => match byte {
                b']' => Move::Go(Lex::AuthorityAfterLiteral, Action::LiteralClose, 0),
                _ if is_literal_byte(byte) => Move::Go(Lex::AuthorityLiteral, Action::LiteralByte, 0),
                _ => fail(K::Target),
            },
            Lex::AuthorityAfterLiteral => match byte {
                b':' => Move::Go(Lex::AuthorityPortStart, Action::None, 0),
                _ => fail(K::Target),
            },
            Lex::AuthorityPortStart | Lex::AuthorityPort => match byte {
                b'0'..=b'9' => Move::Go(Lex::AuthorityPort, Action::None, 0),
                _ => fail(K::Target),
            },
            Lex::Version(index) => Lex::version_step(index, byte),
            Lex::RequestLineLf => match byte {
                b'\n' => Move::Go(Lex::LineStart, Action::None, 0),
                _ => Move::Fail(K::LineEnding, 1),
            },
            // Rows in table order: a CR starts the final CRLF (never a field
            // line), LF is bare, SP/HTAB is obs-fold (whatever the count),
            // then the field-line count, then the name's syntax.
            Lex::LineStart => match byte {
                b'\r' => Move::Go(Lex::FinalLf, Action::None, 0),
                b'\n' => fail(K::LineEnding),
                b' ' | b'\t' => fail(K::ObsFold),
                _ if is_tchar(byte) => Move::Go(Lex::Name, Action::LineName, 0),
                _ => Move::Go(Lex::Dead, Action::LineFail, fail_arg(K::HeaderSyntax, 0)),
            },
            Lex::Name => match byte {
                b':' => Move::Go(Lex::ValueLead, Action::NameEnd, 0),
                b'\n' => fail(K::LineEnding),
                b'\r' => Move::Go(Lex::NameCr, Action::None, 0),
                _ if is_tchar(byte) => Move::Go(Lex::Name, Action::NameByte, 0),
                // Whitespace before the colon, any other non-token byte.
                _ => fail(K::HeaderSyntax),
            },
            Lex::NameCr => match byte {
                b'\n' => Move::Fail(K::HeaderSyntax, 1),
                _ => Move::Fail(K::LineEnding, 1),
            },
            Lex::ValueLead | Lex::ValueBody => match byte {
                b'\r' => Move::Go(Lex::FieldLf, Action::None, 0),
                b'\n' => fail(K::LineEnding),
                b' ' | b'\t' if self == Lex::ValueLead => Move::Go(Lex::ValueLead, Action::None, 0),
                b' ' | b'\t' => Move::Go(Lex::ValueBody, Action::ValueByte, 0),
                0x00..=0x1f | 0x7f => fail(K::HeaderSyntax),
                _ => Move::Go(Lex::ValueBody, Action::ValueByte, 0),
            },
            Lex::FieldLf => match byte {
                b'\n' => Move::Go(Lex::LineStart, Action::FieldEnd, 0),
                _ => Move::Fail(K::LineEnding, 1),
            },
            Lex::FinalLf => match byte {
                b'\n' => Move::Go(Lex::Complete, Action::HeadEnd, 0),
                _ => Move::Fail(K::LineEnding, 1),
            },
        }
    }

    /// The method state after a tchar `byte`; `None` if it is no tchar.
    /// Only the first byte can start `OPTIONS` or `CONNECT`.
    fn method_next(self, byte: u8) -> Option<Lex> {
        if !is_tchar(byte) {
            return None;
        }
        let continues = |word: &[u8], matched: u8| word.get(usize::from(matched)) == Some(&byte);
        // `continues` fails past the word, so `n + 1` stays within it.
        Some(match self {
            Lex::MethodFirst if continues(OPTIONS, 0) => Lex::Options(1),
            Lex::MethodFirst if continues(CONNECT, 0) => Lex::Connect(1),
            Lex::MethodFirst if continues(GET, 0) => Lex::Get(1),
            Lex::MethodFirst if continues(HEAD, 0) => Lex::Head(1),
            Lex::Options(n) if continues(OPTIONS, n) => Lex::Options(n + 1),
            Lex::Connect(n) if continues(CONNECT, n) => Lex::Connect(n + 1),
            Lex::Get(n) if continues(GET, n) => Lex::Get(n + 1),
            Lex::Head(n) if continues(HEAD, n) => Lex::Head(n + 1),
            _ => Lex::Method,
        })
    }

    fn authority_start(byte: u8) -> Move {
        match byte {
            b'[' => Move::Go(Lex::AuthorityLiteral, Action::LiteralOpen, 0),
            b'%' => Move::Go(Lex::AuthorityPercent, Action::None, 0),
            // A CONNECT target needs a host: `:` cannot start it.
            _ if is_reg_name_byte(byte) => Move::Go(Lex::AuthorityName, Action::None, 0),
            _ => Move::Fail(MalformedKind::Target, 0),
        }
    }

    fn path_step(segment: Segment, escape: PathEscape, byte: u8) -> Move {
        use MalformedKind as K;
        let path = |segment| Lex::Path(segment, PathEscape::None);
        match escape {
            PathEscape::Percent => match hex_value(byte) {
                Some(high) => Move::Go(Lex::Path(segment, PathEscape::High(HighNibble::of(high))), Action::EscapeHigh, 0),
                None => Move::Fail(K::PathEncoding, 1),
            },
            PathEscape::High(high) => {
                let Some(low) = hex_value(byte) else { return Move::Fail(K::PathEncoding, 2) };
                match (high, low) {
                    (HighNibble::Control, _) | (HighNibble::Two, 0xF) | (HighNibble::Five, 0xC) | (HighNibble::Seven, 0xF) => {
                        Move::Fail(K::PathEncoding, 2)
                    }
                    (HighNibble::Three, 0xB) => Move::Fail(K::PathTraversal, 2),
                    (HighNibble::Two, 0xE) => Move::Go(path(segment.after_dot()), Action::PathEscaped, 0),
                    _ => Move::Go(path(Segment::Other), Action::PathEscaped, 0),
                }
            }
            PathEscape::None => match byte {
                b' ' | b'?' if segment.is_dot_segment() => Move::Fail(K::PathTraversal, 0),
                b' ' => Move::Go(Lex::Version(0), Action::PathEnd, 0),
                b'?' => Move::Go(Lex::Query, Action::PathEnd, 0),
                b'\r' | b'\n' => Move::Fail(K::RequestLine, 0),
                b'/' if segment != Segment::Other => Move::Fail(K::PathTraversal, 0),
                b'/' => Move::Go(path(Segment::Empty), Action::PathByte, 0),
                b'%' => Move::Go(Lex::Path(segment, PathEscape::Percent), Action::None, 0),
                b';' => Move::Fail(K::PathTraversal, 0),
                b'.' => Move::Go(path(segment.after_dot()), Action::PathByte, 0),
                _ if is_path_byte(byte) => Move::Go(path(Segment::Other), Action::PathByte, 0),
                _ => Move::Fail(K::Target, 0),
            },
        }
    }

    fn version_step(index: u8, byte: u8) -> Move {
        use MalformedKind as K;
        if byte == b' ' {
            // A SP where the version should start, or inside or after it.
            return Move::Fail(K::RequestLine, 0);
        }
        match VERSION_TEXT.get(usize::from(index)) {
            Some(&expected) if byte == expected => Move::Go(Lex::Version(index + 1), Action::None, 0),
            Some(_) => Move::Fail(K::Version, 0),
            None if index == 7 => match byte {
                b'0' => Move::Go(Lex::Version(8), Action::Version, 0),
                b'1' => Move::Go(Lex::Version(8), Action::Version, 1),
                _ => Move::Fail(K::Version, 0),
            },
            None => match byte {
                b'\r' => Move::Go(Lex::RequestLineLf, Action::None, 0),
                b'\n' => Move::Fail(K::LineEnding, 0),
                _ => Move::Fail(K::Version, 0),
            },
        }
    }
}

/// RFC 3986 reg-name bytes other than `%`: unreserved and sub-delims.
pub(crate) fn is_reg_name_byte(byte: u8) -> bool {
    is_unreserved(byte) || is_sub_delim(byte)
}

/// The bytes an IP literal may hold between its brackets.
pub(crate) fn is_literal_byte(byte: u8) -> bool {
    is_reg_name_byte(byte) || byte == b':'
}

fn hex_value(byte: u8) -> Option<u8> {
    is_hex_digit(byte).then(|| crate::http::hex_value(byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn states_are_distinct_and_fixed_ones_first() {
        let states = Lex::all();
        let unique: HashSet<Lex> = states.iter().copied().collect();
        assert_eq!(unique.len(), states.len());
        assert_eq!(&states[..=AFTER_CR_STATES as usize], &[Lex::Dead, Lex::RequestLineLf, Lex::FieldLf, Lex::FinalLf, Lex::NameCr]);
        // Every state a move leads to is listed.
        for state in &states {
            for byte in 0..=255u8 {
                if let Move::Go(next, _, _) = state.step(byte) {
                    assert!(unique.contains(&next), "{state:?} --{byte}--> {next:?}");
                }
            }
        }
    }

    #[test]
    fn method_trie() {
        let mut state = Lex::MethodFirst;
        for &byte in b"OPTIONS" {
            let Move::Go(next, Action::MethodByte, _) = state.step(byte) else { panic!() };
            state = next;
        }
        assert_eq!(state, Lex::Options(7));
        assert_eq!(state.step(b'X'), Move::Go(Lex::Method, Action::MethodByte, 0));
        assert_eq!(Lex::Connect(2).step(b'X'), Move::Go(Lex::Method, Action::MethodByte, 0));
        assert_eq!(Lex::Method.step(b'C'), Move::Go(Lex::Method, Action::MethodByte, 0));
        assert_eq!(Lex::MethodFirst.step(b'C'), Move::Go(Lex::Connect(1), Action::MethodByte, 0));
        assert_eq!(Lex::Options(3).step(b'C'), Move::Go(Lex::Method, Action::MethodByte, 0));
    }
}
