//! The request-head scanner: a strict HTTP/1.0/1.1 head parser that takes
//! one byte at a time (language.md §7).
//!
//! Invariants:
//! - The scanner holds the head's bytes in one buffer that never grows past
//!   `header_bytes + 1`: a byte that would make the head longer than that
//!   is never accepted, because the `limit:header_bytes` violation is
//!   certain by then.
//! - Each call to [`HeadScanner::push`] decides only from the bytes pushed
//!   so far, so the result does not depend on how the stream was split.
//! - The first violation in byte order is the one reported: a violation
//!   "sits" at the byte that makes it certain (an escape problem at its `%`,
//!   a bare CR at the CR, a dot segment at the byte that ends it), and a
//!   byte is checked against the table rows in their order, so ties at one
//!   byte go to the earlier row.
//! - Whole-head checks (`host`, `content-length`, `transfer-encoding`,
//!   `cl-te`, `duplicate-header`) run only on a complete head, in the
//!   table's order, after every per-line check passed.

use super::authority::{AuthorityRules, AuthorityScanner};
use crate::http::{hex_value, is_hex_digit, is_path_byte, is_query_byte, is_tchar, LimitKind, MalformedKind};
use crate::model::Limits;

/// Why a head was refused: a `malformed:<kind>` or a `limit:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeadViolation {
    Malformed(MalformedKind),
    Limit(LimitKind),
}

impl HeadViolation {
    /// The spelling of language.md §8: `malformed:target`, `limit:headers`.
    pub fn name(&self) -> String {
        match self {
            HeadViolation::Malformed(kind) => format!("malformed:{kind}"),
            HeadViolation::Limit(kind) => format!("limit:{kind}"),
        }
    }
}

/// A refused head: the violation and the offset (from the head's first byte)
/// of the byte it sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadError {
    pub violation: HeadViolation,
    pub offset: usize,
}

impl HeadError {
    fn malformed(kind: MalformedKind, offset: usize) -> Self {
        HeadError { violation: HeadViolation::Malformed(kind), offset }
    }
}

/// The protocol version of a request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
}

impl HttpVersion {
    pub const fn text(self) -> &'static str {
        match self {
            HttpVersion::Http10 => "HTTP/1.0",
            HttpVersion::Http11 => "HTTP/1.1",
        }
    }
}

/// The form of the request target (RFC 9112 §3.2); absolute-form is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `*`, only with `OPTIONS`.
    Asterisk,
    /// `host:port`, only (and always) with `CONNECT`.
    Authority,
}

/// How the request's body is delimited (language.md §7, Framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// A chunked body through its last chunk and trailers.
    Chunked,
}

/// One field line's name and trimmed value, as offsets into the head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FieldLine {
    name_start: u32,
    name_end: u32,
    value_start: u32,
    value_end: u32,
}

/// Where the parts of a complete head lie in its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadLayout {
    method_end: usize,
    target_start: usize,
    target_end: usize,
    /// End of the path part of an origin-form target (its `?` or its end).
    path_end: usize,
    request_line_end: usize,
    version: Option<HttpVersion>,
    form: Option<TargetForm>,
    fields: Vec<FieldLine>,
}

/// A borrowed view of a complete, per-line-checked head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadView<'a, 'l> {
    pub bytes: &'a [u8],
    layout: &'l HeadLayout,
}

impl<'a, 'l> HeadView<'a, 'l> {
    fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        // The layout's offsets were recorded while these very bytes were
        // scanned, so they lie inside `bytes`; `get` keeps it panic-free.
        self.bytes.get(start..end).unwrap_or_default()
    }

    pub fn method(&self) -> &'a [u8] {
        self.slice(0, self.layout.method_end)
    }

    pub fn target(&self) -> &'a [u8] {
        self.slice(self.layout.target_start, self.layout.target_end)
    }

    /// The raw (still percent-encoded) path of an origin-form target.
    pub fn raw_path(&self) -> &'a [u8] {
        self.slice(self.layout.target_start, self.layout.path_end)
    }

    pub fn request_line(&self) -> &'a [u8] {
        self.slice(0, self.layout.request_line_end.saturating_sub(2))
    }

    pub fn version(&self) -> HttpVersion {
        self.layout.version.unwrap_or(HttpVersion::Http11)
    }

    pub fn form(&self) -> TargetForm {
        self.layout.form.unwrap_or(TargetForm::Origin)
    }

    pub fn field_count(&self) -> usize {
        self.layout.fields.len()
    }

    /// Every field line as (name as sent, whitespace-trimmed value).
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a, 'l> {
        let view = *self;
        self.layout.fields.iter().map(move |field| {
            (
                view.slice(field.name_start as usize, field.name_end as usize),
                view.slice(field.value_start as usize, field.value_end as usize),
            )
        })
    }

    /// The field lines' names as sent.
    fn names(&self) -> impl Iterator<Item = &'a [u8]> + use<'a, 'l> {
        let view = *self;
        self.layout.fields.iter().map(move |field| view.slice(field.name_start as usize, field.name_end as usize))
    }

    /// The values of the field lines named `name` (ASCII case-insensitive).
    pub fn values_of<'n>(&self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'l, 'n> {
        self.fields().filter(move |(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    pub fn count_of(&self, name: &[u8]) -> usize {
        self.names().filter(|field| field.eq_ignore_ascii_case(name)).count()
    }

    /// The only value of `name`, if exactly one field line carries it.
    pub fn single_value(&self, name: &[u8]) -> Option<&'a [u8]> {
        let mut values = self.values_of(name);
        let first = values.next()?;
        values.next().is_none().then_some(first)
    }
}

/// What the head tells after its whole-head checks passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadFacts {
    pub framing: Framing,
    /// `CONNECT`, or an `Upgrade` field (language.md §6).
    pub switches_protocols: bool,
}

/// The whole-head checks of language.md §7, in the table's order: `host`,
/// `content-length`, `transfer-encoding`, `cl-te`, `duplicate-header`.
/// `value_matched` names the headers a value matcher of the governing policy
/// reads (lowercase).
pub(crate) fn check_whole_head(
    head: &HeadView<'_, '_>,
    value_matched: &[Vec<u8>],
    get_body: crate::model::GetBodyVerdict,
) -> Result<HeadFacts, MalformedKind> {
    // host
    let host_count = head.count_of(b"host");
    if host_count > 1 || (host_count == 0 && head.version() == HttpVersion::Http11) {
        return Err(MalformedKind::Host);
    }
    if let Some(host) = head.single_value(b"host") {
        if !AuthorityScanner::is_valid(host, AuthorityRules::HOST_FIELD) {
            return Err(MalformedKind::Host);
        }
    }
    // content-length
    let length = match head.count_of(b"content-length") {
        0 => None,
        1 => Some(parse_content_length(head.single_value(b"content-length").unwrap_or_default())?),
        _ => return Err(MalformedKind::ContentLength),
    };
    // transfer-encoding
    let chunked = match head.count_of(b"transfer-encoding") {
        0 => false,
        1 => {
            let value = head.single_value(b"transfer-encoding").unwrap_or_default();
            if head.version() == HttpVersion::Http10 || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(MalformedKind::TransferEncoding);
            }
            true
        }
        _ => return Err(MalformedKind::TransferEncoding),
    };
    // cl-te
    if chunked && length.is_some() {
        return Err(MalformedKind::ClTe);
    }
    // get-body: a GET or HEAD with a body (revision 3)
    if (chunked || length.is_some_and(|length| length > 0)) && get_body.refuses(head.method()) {
        return Err(MalformedKind::GetBody);
    }
    // duplicate-header
    if value_matched.iter().any(|name| head.count_of(name) > 1) {
        return Err(MalformedKind::DuplicateHeader);
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(length)) => Framing::Length(length),
    };
    let switches_protocols = head.form() == TargetForm::Authority || head.count_of(b"upgrade") > 0;
    Ok(HeadFacts { framing, switches_protocols })
}

/// The largest Content-Length accepted: 2^53 (language.md §7).
pub const MAX_CONTENT_LENGTH: u64 = 1 << 53;

/// `1*DIGIT`, at most 2^53 (leading zeros are digits like any other).
fn parse_content_length(value: &[u8]) -> Result<u64, MalformedKind> {
    if value.is_empty() {
        return Err(MalformedKind::ContentLength);
    }
    let mut length: u64 = 0;
    for &byte in value {
        if !byte.is_ascii_digit() {
            return Err(MalformedKind::ContentLength);
        }
        // Saturating: any value past 2^53 is refused below, however long.
        length = length.saturating_mul(10).saturating_add(u64::from(byte - b'0'));
    }
    if length > MAX_CONTENT_LENGTH {
        return Err(MalformedKind::ContentLength);
    }
    Ok(length)
}

/// What the method says about the target's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MethodClass {
    Options,
    Connect,
    Other,
}

/// A percent escape being read: where its `%` is and the digits so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// Seen `%` at this offset.
    NeedFirst(usize),
    /// Seen `%` and one hex digit of this value.
    NeedSecond(usize, u8),
}

/// The path checks' state: the current segment after decoding, as far as
/// dot segments and empty segments need it.
#[derive(Debug, Clone, Copy)]
struct PathScan {
    escape: Escape,
    /// Decoded bytes in the current segment, saturating at 3.
    segment_len: u8,
    /// Whether every decoded byte of the current segment is a `.`.
    segment_all_dots: bool,
}

impl PathScan {
    const NEW_SEGMENT: PathScan = PathScan { escape: Escape::None, segment_len: 0, segment_all_dots: true };

    fn add_decoded(&mut self, byte: u8) {
        self.segment_len = self.segment_len.saturating_add(1).min(3);
        self.segment_all_dots &= byte == b'.';
    }

    fn is_dot_segment(&self) -> bool {
        self.segment_all_dots && (self.segment_len == 1 || self.segment_len == 2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    MethodFirst,
    Method,
    TargetFirst,
    OriginPath,
    Query,
    AsteriskEnd,
    Authority,
    /// The next byte of the version, at this index of `HTTP/1.x`.
    Version(u8),
    /// A CR ended the request line; LF must follow.
    RequestLineLf,
    /// The first byte of a field line, or the CR of the final CRLF.
    LineStart,
    Name,
    Value,
    /// A CR ended a field value; LF must follow.
    FieldLf,
    /// A CR at the start of a line; LF ends the head.
    FinalLf,
    /// A CR inside a field name: LF after it is a line without a colon
    /// (`header-syntax`), anything else a bare CR (`line-ending`), both at
    /// the CR.
    NameCr,
    Complete,
    Failed,
}

impl State {
    /// States in which the last byte was a CR that may still be followed by
    /// its LF.
    fn awaits_lf(self) -> bool {
        matches!(self, State::RequestLineLf | State::FieldLf | State::FinalLf | State::NameCr)
    }
}

/// The result of one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadStep {
    /// More bytes are needed.
    Continue,
    /// This byte ended a head that passed every per-line check and limit.
    Complete,
    /// The head is refused.
    Refused(HeadError),
}

const VERSION_PREFIX: &[u8; 7] = b"HTTP/1.";

/// The incremental head parser. Reused from one request to the next with
/// [`HeadScanner::reset`], so the hot path does not allocate.
#[derive(Debug, Clone)]
pub(crate) struct HeadScanner {
    header_bytes: usize,
    max_fields: usize,
    bytes: Vec<u8>,
    state: State,
    method: MethodClass,
    path: PathScan,
    authority: AuthorityScanner,
    layout: HeadLayout,
    line_start: usize,
    name_end: usize,
    value_start: Option<usize>,
    value_end: usize,
}

impl HeadScanner {
    pub fn new(limits: Limits) -> Self {
        let header_bytes = usize::try_from(limits.header_bytes).unwrap_or(usize::MAX).max(1);
        let max_fields = usize::try_from(limits.headers).unwrap_or(usize::MAX);
        HeadScanner {
            header_bytes,
            max_fields,
            bytes: Vec::with_capacity(header_bytes.saturating_add(1).min(64 * 1024)),
            state: State::MethodFirst,
            method: MethodClass::Other,
            path: PathScan::NEW_SEGMENT,
            authority: AuthorityScanner::new(AuthorityRules::CONNECT_TARGET),
            layout: HeadLayout::default(),
            line_start: 0,
            name_end: 0,
            value_start: None,
            value_end: 0,
        }
    }

    /// Forget the last head and wait for the next one.
    pub fn reset(&mut self) {
        self.bytes.clear();
        self.state = State::MethodFirst;
        self.method = MethodClass::Other;
        self.path = PathScan::NEW_SEGMENT;
        self.authority = AuthorityScanner::new(AuthorityRules::CONNECT_TARGET);
        self.layout.fields.clear();
        self.layout.method_end = 0;
        self.layout.target_start = 0;
        self.layout.target_end = 0;
        self.layout.path_end = 0;
        self.layout.request_line_end = 0;
        self.layout.version = None;
        self.layout.form = None;
        self.line_start = 0;
        self.name_end = 0;
        self.value_start = None;
        self.value_end = 0;
    }

    /// Bytes of the current head taken so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The complete head; meaningful after [`HeadStep::Complete`].
    pub fn view(&self) -> HeadView<'_, '_> {
        HeadView { bytes: &self.bytes, layout: &self.layout }
    }

    /// Take bytes of the head until it completes or is refused: returns how
    /// many bytes were taken and the step the last one gave. The same as
    /// calling [`HeadScanner::push`] byte by byte; runs of ordinary bytes
    /// (in field names, field values and path segments) are taken at once.
    pub fn push_slice(&mut self, input: &[u8]) -> (usize, HeadStep) {
        let mut index = 0;
        while let Some(rest) = input.get(index..) {
            let Some(&first) = rest.first() else { break };
            // Stop short of the last allowed byte: the limit check there
            // belongs to `push`.
            let room = self.header_bytes.saturating_sub(self.bytes.len() + 1).min(rest.len());
            let run = self.ordinary_run(rest.get(..room).unwrap_or_default());
            if run > 0 {
                index += run;
                continue;
            }
            index += 1;
            let step = self.push(first);
            if step != HeadStep::Continue {
                return (index, step);
            }
        }
        (index, HeadStep::Continue)
    }

    /// Take the longest run at the start of `bytes` that cannot change the
    /// state; returns its length (0: let `push` decide the next byte).
    fn ordinary_run(&mut self, bytes: &[u8]) -> usize {
        let start = self.bytes.len();
        let run = match self.state {
            State::Name => bytes.iter().take_while(|&&byte| is_name_byte(byte)).count(),
            State::Value => {
                let run = bytes.iter().take_while(|&&byte| is_ordinary_value_byte(byte)).count();
                let taken = bytes.get(..run).unwrap_or_default();
                if let Some(first) = taken.iter().position(|&byte| !matches!(byte, b' ' | b'\t')) {
                    self.value_start.get_or_insert(start + first);
                    let last = taken.iter().rposition(|&byte| !matches!(byte, b' ' | b'\t')).unwrap_or(first);
                    self.value_end = start + last + 1;
                }
                run
            }
            State::OriginPath if self.path.escape == Escape::None => {
                let run = bytes.iter().take_while(|&&byte| is_ordinary_path_byte(byte)).count();
                let taken = bytes.get(..run).unwrap_or_default();
                if run > 0 {
                    self.path.segment_len = self.path.segment_len.saturating_add(u8::try_from(run).unwrap_or(u8::MAX)).min(3);
                    self.path.segment_all_dots &= taken.iter().all(|&byte| byte == b'.');
                }
                run
            }
            _ => 0,
        };
        self.bytes.extend_from_slice(bytes.get(..run).unwrap_or_default());
        run
    }

    /// Take one byte of the head.
    pub fn push(&mut self, byte: u8) -> HeadStep {
        if matches!(self.state, State::Complete | State::Failed) {
            return HeadStep::Continue;
        }
        let offset = self.bytes.len();
        self.bytes.push(byte);
        let step = match self.scan(byte, offset) {
            Err(error) => HeadStep::Refused(error),
            Ok(()) if self.state == State::Complete && offset < self.header_bytes => HeadStep::Complete,
            Ok(()) => {
                // §7: a head with no violation in its first header_bytes
                // bytes and no end within them. A CR as the last allowed
                // byte waits for the next byte: if that is not LF, the CR is
                // a bare CR, a violation inside the allowance.
                let past_allowance = offset + 1 >= self.header_bytes;
                let waits = offset + 1 == self.header_bytes && self.state.awaits_lf();
                if past_allowance && !waits {
                    HeadStep::Refused(HeadError {
                        violation: HeadViolation::Limit(LimitKind::HeaderBytes),
                        offset: offset.min(self.header_bytes.saturating_sub(1)),
                    })
                } else {
                    HeadStep::Continue
                }
            }
        };
        if let HeadStep::Refused(_) = step {
            self.state = State::Failed;
        }
        step
    }

    fn scan(&mut self, byte: u8, offset: usize) -> Result<(), HeadError> {
        use MalformedKind as K;
        let fail = |kind: MalformedKind| Err(HeadError::malformed(kind, offset));
        match self.state {
            State::MethodFirst => {
                if !is_tchar(byte) {
                    return fail(K::RequestLine);
                }
                self.state = State::Method;
            }
            State::Method => match byte {
                b' ' => {
                    self.layout.method_end = offset;
                    self.method = match self.bytes.get(..offset) {
                        Some(b"OPTIONS") => MethodClass::Options,
                        Some(b"CONNECT") => MethodClass::Connect,
                        _ => MethodClass::Other,
                    };
                    self.layout.target_start = offset + 1;
                    self.state = State::TargetFirst;
                }
                b'\r' | b'\n' => return fail(K::RequestLine),
                _ if is_tchar(byte) => {}
                _ => return fail(K::Method),
            },
            State::TargetFirst => {
                if matches!(byte, b' ' | b'\r' | b'\n') {
                    return fail(K::RequestLine);
                }
                match self.method {
                    MethodClass::Connect => {
                        self.layout.form = Some(TargetForm::Authority);
                        self.state = State::Authority;
                        return self.scan_authority(byte, offset);
                    }
                    MethodClass::Options if byte == b'*' => {
                        self.layout.form = Some(TargetForm::Asterisk);
                        self.state = State::AsteriskEnd;
                    }
                    _ if byte == b'/' => {
                        self.layout.form = Some(TargetForm::Origin);
                        self.path = PathScan::NEW_SEGMENT;
                        self.state = State::OriginPath;
                    }
                    _ => return fail(K::Target),
                }
            }
            State::OriginPath => return self.scan_path(byte, offset),
            State::Query => return self.scan_query(byte, offset),
            State::AsteriskEnd => match byte {
                b' ' => self.end_target(offset, offset),
                b'\r' | b'\n' => return fail(K::RequestLine),
                _ => return fail(K::Target),
            },
            State::Authority => return self.scan_authority(byte, offset),
            State::Version(index) => {
                if byte == b' ' {
                    // A SP where the version should start, or after it.
                    return fail(K::RequestLine);
                }
                let index = usize::from(index);
                if let Some(&expected) = VERSION_PREFIX.get(index) {
                    if byte != expected {
                        return fail(K::Version);
                    }
                    self.state = State::Version(index as u8 + 1);
                } else if index == VERSION_PREFIX.len() {
                    self.layout.version = match byte {
                        b'0' => Some(HttpVersion::Http10),
                        b'1' => Some(HttpVersion::Http11),
                        _ => return fail(K::Version),
                    };
                    self.state = State::Version(index as u8 + 1);
                } else {
                    match byte {
                        b'\r' => self.state = State::RequestLineLf,
                        b'\n' => return fail(K::LineEnding),
                        _ => return fail(K::Version),
                    }
                }
            }
            State::RequestLineLf => {
                if byte != b'\n' {
                    return Err(HeadError::malformed(K::LineEnding, offset.saturating_sub(1)));
                }
                self.layout.request_line_end = offset + 1;
                self.state = State::LineStart;
            }
            State::LineStart => match byte {
                b'\r' => self.state = State::FinalLf,
                b'\n' => return fail(K::LineEnding),
                b' ' | b'\t' => return fail(K::ObsFold),
                _ if self.layout.fields.len() >= self.max_fields => {
                    return Err(HeadError { violation: HeadViolation::Limit(LimitKind::Headers), offset });
                }
                _ if is_tchar(byte) => {
                    self.line_start = offset;
                    self.state = State::Name;
                }
                _ => return fail(K::HeaderSyntax),
            },
            State::Name => match byte {
                b':' => {
                    self.name_end = offset;
                    self.value_start = None;
                    self.value_end = offset + 1;
                    self.state = State::Value;
                }
                b'\n' => return fail(K::LineEnding),
                b'\r' => self.state = State::NameCr,
                _ if is_tchar(byte) => {}
                // Whitespace before the colon, any other non-token byte.
                _ => return fail(K::HeaderSyntax),
            },
            State::NameCr => {
                let kind = if byte == b'\n' { K::HeaderSyntax } else { K::LineEnding };
                return Err(HeadError::malformed(kind, offset.saturating_sub(1)));
            }
            State::Value => match byte {
                b'\r' => self.state = State::FieldLf,
                b'\n' => return fail(K::LineEnding),
                b' ' | b'\t' => {}
                0x00..=0x1f | 0x7f => return fail(K::HeaderSyntax),
                _ => {
                    self.value_start.get_or_insert(offset);
                    self.value_end = offset + 1;
                }
            },
            State::FieldLf => {
                if byte != b'\n' {
                    return Err(HeadError::malformed(K::LineEnding, offset.saturating_sub(1)));
                }
                let value_start = self.value_start.unwrap_or(self.value_end);
                self.layout.fields.push(FieldLine {
                    name_start: offset_u32(self.line_start),
                    name_end: offset_u32(self.name_end),
                    value_start: offset_u32(value_start),
                    value_end: offset_u32(self.value_end.max(value_start)),
                });
                self.state = State::LineStart;
            }
            State::FinalLf => {
                if byte != b'\n' {
                    return Err(HeadError::malformed(K::LineEnding, offset.saturating_sub(1)));
                }
                self.state = State::Complete;
            }
            State::Complete | State::Failed => {}
        }
        Ok(())
    }

    fn end_target(&mut self, target_end: usize, path_end: usize) {
        self.layout.target_end = target_end;
        self.layout.path_end = path_end;
        self.state = State::Version(0);
    }

    fn scan_path(&mut self, byte: u8, offset: usize) -> Result<(), HeadError> {
        use MalformedKind as K;
        let at = |kind: MalformedKind, offset: usize| Err(HeadError::malformed(kind, offset));
        match self.path.escape {
            Escape::NeedFirst(percent) => {
                if !is_hex_digit(byte) {
                    return at(K::PathEncoding, percent);
                }
                self.path.escape = Escape::NeedSecond(percent, hex_value(byte));
                return Ok(());
            }
            Escape::NeedSecond(percent, high) => {
                if !is_hex_digit(byte) {
                    return at(K::PathEncoding, percent);
                }
                let decoded = high * 16 + hex_value(byte);
                self.path.escape = Escape::None;
                return match decoded {
                    b'/' | b'\\' | 0x00..=0x1f | 0x7f => at(K::PathEncoding, percent),
                    b';' => at(K::PathTraversal, percent),
                    _ => {
                        self.path.add_decoded(decoded);
                        Ok(())
                    }
                };
            }
            Escape::None => {}
        }
        match byte {
            b' ' | b'?' => {
                if self.path.is_dot_segment() {
                    return at(K::PathTraversal, offset);
                }
                if byte == b' ' {
                    self.end_target(offset, offset);
                } else {
                    self.layout.path_end = offset;
                    self.state = State::Query;
                }
            }
            b'\r' | b'\n' => return at(K::RequestLine, offset),
            b'/' => {
                if self.path.is_dot_segment() || self.path.segment_len == 0 {
                    return at(K::PathTraversal, offset);
                }
                self.path = PathScan::NEW_SEGMENT;
            }
            b'%' => self.path.escape = Escape::NeedFirst(offset),
            b';' => return at(K::PathTraversal, offset),
            _ if is_path_byte(byte) => self.path.add_decoded(byte),
            _ => return at(K::Target, offset),
        }
        Ok(())
    }

    /// The query is never decoded (language.md §7): a `%` is a byte like
    /// any other there.
    fn scan_query(&mut self, byte: u8, offset: usize) -> Result<(), HeadError> {
        use MalformedKind as K;
        match byte {
            b' ' => {
                self.layout.target_end = offset;
                self.state = State::Version(0);
            }
            b'\r' | b'\n' => return Err(HeadError::malformed(K::RequestLine, offset)),
            _ if is_query_byte(byte) => {}
            _ => return Err(HeadError::malformed(K::Target, offset)),
        }
        Ok(())
    }

    fn scan_authority(&mut self, byte: u8, offset: usize) -> Result<(), HeadError> {
        use MalformedKind as K;
        if matches!(byte, b' ' | b'\r' | b'\n') {
            // An unfinished escape sits at its `%`, before this byte.
            if let Some(percent) = self.authority.open_escape() {
                return Err(HeadError::malformed(K::Target, self.layout.target_start + percent));
            }
            if byte != b' ' {
                return Err(HeadError::malformed(K::RequestLine, offset));
            }
            if !self.authority.finish() {
                return Err(HeadError::malformed(K::Target, offset));
            }
            self.end_target(offset, offset);
            return Ok(());
        }
        match self.authority.push(byte) {
            Ok(()) => Ok(()),
            Err(relative) => Err(HeadError::malformed(K::Target, self.layout.target_start + relative)),
        }
    }
}

/// A 256-entry table of a byte class, so the hot loops test a byte with
/// one load. (A macro: const fns cannot call function pointers.)
macro_rules! class_table {
    (|$byte:ident| $class:expr) => {{
        let mut table = [false; 256];
        let mut index = 0;
        while index < 256 {
            let $byte = index as u8;
            table[index] = $class;
            index += 1;
        }
        table
    }};
}

const TCHAR: [bool; 256] = class_table!(|byte| is_tchar(byte));
const ORDINARY_VALUE: [bool; 256] = class_table!(|byte| matches!(byte, b' ' | b'\t' | 0x21..=0x7e | 0x80..=0xff));
const ORDINARY_PATH: [bool; 256] = class_table!(|byte| is_path_byte(byte) && !matches!(byte, b'/' | b'%' | b';'));

// The tables have 256 entries, so indexing them with a `u8` cannot panic.

/// A field-name byte (tchar).
fn is_name_byte(byte: u8) -> bool {
    TCHAR[usize::from(byte)]
}

/// A field-value byte that only extends the value: VCHAR, obs-text, SP,
/// HTAB (not CR, LF, other controls or DEL).
fn is_ordinary_value_byte(byte: u8) -> bool {
    ORDINARY_VALUE[usize::from(byte)]
}

/// A path byte that only extends the current segment: a path character
/// other than `/`, `%`, `;` (and never `?` or SP, which end the path).
fn is_ordinary_path_byte(byte: u8) -> bool {
    ORDINARY_PATH[usize::from(byte)]
}

/// Offsets are below `header_bytes + 1` (at most 16 KiB + 1), so they fit.
fn offset_u32(offset: usize) -> u32 {
    u32::try_from(offset).unwrap_or(u32::MAX)
}

/// A head parsed on its own, for tools and differential tests: the request
/// line, the field lines and the framing, after every per-line check, limit
/// and whole-head check except `duplicate-header` (which depends on a
/// policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHead<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub version: HttpVersion,
    pub form: TargetForm,
    /// (name as sent, value with surrounding whitespace trimmed).
    pub fields: Vec<(&'a [u8], &'a [u8])>,
    pub framing: Framing,
    pub switches_protocols: bool,
    /// Bytes of the head, through its final CRLF.
    pub len: usize,
}

/// Why [`parse_head`] gave no head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseHeadError {
    /// The bytes end inside a head that has no violation so far.
    Incomplete,
    Refused(HeadError),
}

/// Parse the head at the start of `bytes` with the reference evaluator's
/// rules (language.md §7) and these limits. Bytes after the head are
/// ignored.
pub fn parse_head(bytes: &[u8], limits: Limits) -> Result<ParsedHead<'_>, ParseHeadError> {
    let mut scanner = HeadScanner::new(limits);
    for (offset, &byte) in bytes.iter().enumerate() {
        match scanner.push(byte) {
            HeadStep::Continue => {}
            HeadStep::Refused(error) => return Err(ParseHeadError::Refused(error)),
            HeadStep::Complete => {
                let len = offset + 1;
                let view = HeadView { bytes: bytes.get(..len).unwrap_or_default(), layout: &scanner.layout };
                let facts = check_whole_head(&view, &[], crate::model::GetBodyVerdict::Allow).map_err(|kind| {
                    ParseHeadError::Refused(HeadError::malformed(kind, offset))
                })?;
                return Ok(ParsedHead {
                    method: view.method(),
                    target: view.target(),
                    version: view.version(),
                    form: view.form(),
                    fields: view.fields().collect(),
                    framing: facts.framing,
                    switches_protocols: facts.switches_protocols,
                    len,
                });
            }
        }
    }
    Err(ParseHeadError::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MalformedKind as K;

    fn refused(head: &[u8]) -> (HeadViolation, usize) {
        refused_with(head, Limits::default())
    }

    fn refused_with(head: &[u8], limits: Limits) -> (HeadViolation, usize) {
        match parse_head(head, limits) {
            Err(ParseHeadError::Refused(error)) => (error.violation, error.offset),
            other => panic!("{:?} was not refused: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    fn malformed(head: &str) -> (MalformedKind, usize) {
        match refused(head.as_bytes()) {
            (HeadViolation::Malformed(kind), offset) => (kind, offset),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn kind(head: &str) -> MalformedKind {
        malformed(head).0
    }

    #[test]
    fn request_line() {
        assert_eq!(malformed("\r\nGET / HTTP/1.1\r\n\r\n"), (K::RequestLine, 0));
        assert_eq!(malformed(" GET / HTTP/1.1\r\n\r\n"), (K::RequestLine, 0));
        assert_eq!(malformed("GET  / HTTP/1.1\r\n\r\n"), (K::RequestLine, 4));
        assert_eq!(malformed("GET / HTTP/1.1 \r\n\r\n"), (K::RequestLine, 14));
        assert_eq!(malformed("GET /a\r\n\r\n"), (K::RequestLine, 6));
        assert_eq!(malformed("GET\r\n\r\n"), (K::RequestLine, 3));
        assert_eq!(malformed("GET /  HTTP/1.1\r\n"), (K::RequestLine, 6));
        assert_eq!(malformed("GET / HTTP/1 \r\n"), (K::RequestLine, 12));
    }

    #[test]
    fn method() {
        assert_eq!(malformed("GE(T / HTTP/1.1\r\n"), (K::Method, 2));
        assert_eq!(malformed("GET\t/ HTTP/1.1\r\n"), (K::Method, 3));
    }

    #[test]
    fn version() {
        assert_eq!(malformed("GET / HTTP/1.2\r\n"), (K::Version, 13));
        assert_eq!(malformed("GET / http/1.1\r\n"), (K::Version, 6));
        assert_eq!(malformed("GET / HTTP/1.\r\n"), (K::Version, 13));
        assert_eq!(malformed("GET / HTTP/1.1x\r\n"), (K::Version, 14));
        assert_eq!(malformed("GET / HTTP/2.0\r\n"), (K::Version, 11));
    }

    #[test]
    fn target() {
        assert_eq!(malformed("GET http://a/ HTTP/1.1\r\n"), (K::Target, 4));
        assert_eq!(malformed("GET * HTTP/1.1\r\n"), (K::Target, 4));
        assert_eq!(malformed("OPTIONS *x HTTP/1.1\r\n"), (K::Target, 9));
        assert_eq!(malformed("GET /a#b HTTP/1.1\r\n"), (K::Target, 6));
        assert_eq!(malformed("GET /a\\b HTTP/1.1\r\n"), (K::Target, 6));
        // Revision 3: the query is never decoded; what browsers send is
        // accepted; `\`, `"`, `<`, `>`, controls, DEL and 0x80+ still not.
        assert!(parse_head(b"GET /a?q=%zz&d=100% HTTP/1.1\r\nHost: a\r\n\r\n", Limits::default()).is_ok());
        assert!(parse_head(b"GET /a[1]|{b}^`c`?ids[]=1 HTTP/1.1\r\nHost: a\r\n\r\n", Limits::default()).is_ok());
        assert_eq!(malformed("GET /a?q=\x7f HTTP/1.1\r\n"), (K::Target, 9));
        for refused_byte in ['"', '<', '>'] {
            assert_eq!(malformed(&format!("GET /a?q={refused_byte} HTTP/1.1\r\n")), (K::Target, 9), "{refused_byte}");
            assert_eq!(malformed(&format!("GET /a{refused_byte} HTTP/1.1\r\n")), (K::Target, 6), "{refused_byte}");
        }
        assert_eq!(refused(b"GET /\xc3\xa9 HTTP/1.1\r\n"), (HeadViolation::Malformed(K::Target), 5));
        assert_eq!(malformed("CONNECT /x HTTP/1.1\r\n"), (K::Target, 8));
        assert_eq!(malformed("CONNECT a HTTP/1.1\r\n"), (K::Target, 9));
        assert_eq!(malformed("CONNECT a:b HTTP/1.1\r\n"), (K::Target, 10));
        assert_eq!(malformed("CONNECT a@b:1 HTTP/1.1\r\n"), (K::Target, 9));
        assert_eq!(malformed("CONNECT [::1 HTTP/1.1\r\n"), (K::Target, 12));
    }

    #[test]
    fn line_ending() {
        assert_eq!(malformed("GET / HTTP/1.1\n"), (K::LineEnding, 14));
        assert_eq!(malformed("GET / HTTP/1.1\rX"), (K::LineEnding, 14));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost: a\rX"), (K::LineEnding, 23));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost: a\n"), (K::LineEnding, 23));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost: a\r\n\rX"), (K::LineEnding, 25));
        assert_eq!(malformed("GET / HTTP/1.1\r\n\n"), (K::LineEnding, 16));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost\n"), (K::LineEnding, 20));
        // A bare CR in a field name (revision 3), at the CR.
        assert_eq!(malformed("GET / HTTP/1.1\r\nHos\r: a\r\n"), (K::LineEnding, 19));
        // A CRLF after a name is a line without a colon.
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost\r\n\r\n"), (K::HeaderSyntax, 20));
    }

    #[test]
    fn header_syntax() {
        assert_eq!(malformed("GET / HTTP/1.1\r\nX-A : 1\r\n"), (K::HeaderSyntax, 19));
        assert_eq!(malformed("GET / HTTP/1.1\r\nX(A): 1\r\n"), (K::HeaderSyntax, 17));
        assert_eq!(malformed("GET / HTTP/1.1\r\n: 1\r\n"), (K::HeaderSyntax, 16));
        assert_eq!(malformed("GET / HTTP/1.1\r\nX: a\x00b\r\n"), (K::HeaderSyntax, 20));
        assert_eq!(malformed("GET / HTTP/1.1\r\nX: a\x7fb\r\n"), (K::HeaderSyntax, 20));
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost\r\n"), (K::HeaderSyntax, 20));
        // HTAB and obs-text are fine in a value.
        assert!(parse_head(b"GET / HTTP/1.0\r\nX: a\tb\xff\r\n\r\n", Limits::default()).is_ok());
    }

    #[test]
    fn obs_fold() {
        assert_eq!(malformed("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"), (K::ObsFold, 25));
        assert_eq!(malformed("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n"), (K::ObsFold, 16));
    }

    #[test]
    fn whole_head_checks() {
        assert_eq!(kind("GET / HTTP/1.1\r\n\r\n"), K::Host);
        assert_eq!(kind("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), K::Host);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), K::Host);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a:\r\n\r\n"), K::Host);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"), K::ContentLength);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"), K::ContentLength);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740993\r\n\r\n"), K::ContentLength);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), K::TransferEncoding);
        assert_eq!(
            kind("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            K::TransferEncoding
        );
        assert_eq!(kind("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), K::TransferEncoding);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), K::ClTe);
        // Whole-head checks come in the table's order.
        assert_eq!(kind("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), K::Host);
        assert_eq!(kind("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\nTransfer-Encoding: x\r\n\r\n"), K::ContentLength);
        let head = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740992\r\n\r\n", Limits::default());
        assert_eq!(head.map(|head| head.framing), Ok(Framing::Length(MAX_CONTENT_LENGTH)));
    }

    #[test]
    fn path_encoding() {
        assert_eq!(malformed("GET /a%2Fb HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a%5cb HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a%00 HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a%7F HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a%zz HTTP/1.1\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a% HTTP/1.1\r\n"), (K::PathEncoding, 6));
        // An escape problem sits at its `%`, before the bytes that reveal it.
        assert_eq!(malformed("GET /a%#\r\n"), (K::PathEncoding, 6));
        assert_eq!(malformed("GET /a%4\r\n"), (K::PathEncoding, 6));
    }

    #[test]
    fn path_traversal() {
        assert_eq!(malformed("GET //a HTTP/1.1\r\n"), (K::PathTraversal, 5));
        assert_eq!(malformed("GET /a//b HTTP/1.1\r\n"), (K::PathTraversal, 7));
        assert_eq!(malformed("GET /./a HTTP/1.1\r\n"), (K::PathTraversal, 6));
        assert_eq!(malformed("GET /a/.. HTTP/1.1\r\n"), (K::PathTraversal, 9));
        assert_eq!(malformed("GET /a/..?x HTTP/1.1\r\n"), (K::PathTraversal, 9));
        assert_eq!(malformed("GET /%2E%2e/a HTTP/1.1\r\n"), (K::PathTraversal, 11));
        assert_eq!(malformed("GET /a;b HTTP/1.1\r\n"), (K::PathTraversal, 6));
        assert_eq!(malformed("GET /a%3bb HTTP/1.1\r\n"), (K::PathTraversal, 6));
        // A dot segment is found where it ends, before a later bad escape.
        assert_eq!(malformed("GET /../x%zz HTTP/1.1\r\n"), (K::PathTraversal, 7));
        // Not traversal: a single trailing slash, dots inside names.
        for fine in ["/a/", "/", "/a./b", "/...", "/.a", "/a/?x=/../"] {
            let head = format!("GET {fine} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(parse_head(head.as_bytes(), Limits::default()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn limits() {
        let limits = Limits { header_bytes: 64, headers: 2 };
        let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB(: 1\r\n\r\n";
        assert_eq!(refused_with(many, limits), (HeadViolation::Limit(LimitKind::Headers), 31));
        let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        exact.resize(60, b'x');
        exact.extend_from_slice(b"\r\n\r\n");
        assert!(parse_head(&exact, limits).is_ok());
        let mut over = exact.clone();
        over.insert(30, b'x');
        assert_eq!(refused_with(&over, limits), (HeadViolation::Limit(LimitKind::HeaderBytes), 63));
        // The head cannot end within the allowance: refused at its last byte.
        let mut no_end = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        no_end.resize(64, b'x');
        assert_eq!(refused_with(&no_end, limits), (HeadViolation::Limit(LimitKind::HeaderBytes), 63));
        // A CR as the last allowed byte waits: bare CR or limit.
        let mut cr_last = over[..63].to_vec();
        cr_last.push(b'\r');
        assert_eq!(parse_head(&cr_last, limits), Err(ParseHeadError::Incomplete));
        let mut bare = cr_last.clone();
        bare.push(b'x');
        assert_eq!(refused_with(&bare, limits), (HeadViolation::Malformed(K::LineEnding), 63));
        // A violation in the allowance comes first.
        let mut early = over.clone();
        early[20] = 0;
        assert_eq!(refused_with(&early, limits), (HeadViolation::Malformed(K::HeaderSyntax), 20));
    }

    /// `push_slice` (runs taken at once) and `push` (byte by byte) agree on
    /// every prefix of every head, under tight limits too.
    #[test]
    fn runs_and_single_bytes_agree() {
        let heads: [&[u8]; 6] = [
            b"GET /a/b.c/%41d?x=1 HTTP/1.1\r\nHost: a\r\nX-Pad:  v  w \t\r\nEmpty:\r\n\r\n",
            b"GET /a/../b HTTP/1.1\r\n\r\n",
            b"GET /a/.. HTTP/1.1\r\n\r\n",
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \xff\x7f\r\n\r\n",
            b"POST /x HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        ];
        for limits in [Limits::default(), Limits { header_bytes: 20, headers: 2 }, Limits { header_bytes: 40, headers: 1 }] {
            for head in heads {
                for end in 0..=head.len() {
                    let input = &head[..end];
                    let mut single = HeadScanner::new(limits);
                    let mut single_result = (input.len(), HeadStep::Continue);
                    for (index, &byte) in input.iter().enumerate() {
                        let step = single.push(byte);
                        if step != HeadStep::Continue {
                            single_result = (index + 1, step);
                            break;
                        }
                    }
                    let mut runs = HeadScanner::new(limits);
                    assert_eq!(runs.push_slice(input), single_result, "{:?} {limits:?}", String::from_utf8_lossy(input));
                    assert_eq!(runs.bytes, single.bytes);
                    assert_eq!(runs.layout.fields, single.layout.fields);
                    assert_eq!((runs.value_start, runs.value_end), (single.value_start, single.value_end));
                }
            }
        }
    }

    #[test]
    fn a_parsed_head() {
        let head = parse_head(b"POST /a%41?b=1 HTTP/1.1\r\nHost: x\r\nX-Y:  v w \r\nTransfer-Encoding: Chunked\r\n\r\nrest", Limits::default())
            .expect("valid");
        assert_eq!(head.method, b"POST");
        assert_eq!(head.target, b"/a%41?b=1");
        assert_eq!(head.version, HttpVersion::Http11);
        assert_eq!(head.fields, vec![(&b"Host"[..], &b"x"[..]), (b"X-Y", b"v w"), (b"Transfer-Encoding", b"Chunked")]);
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(head.len, 76);
        let connect = parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", Limits::default()).expect("valid");
        assert_eq!(connect.form, TargetForm::Authority);
        assert!(connect.switches_protocols);
    }
}
