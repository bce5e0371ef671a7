//! How the head walker drives the policy's automata: [`HeadHooks`], called
//! at fixed points of the scan (docs/scan.md, "Hooks"), and
//! [`RecordingHooks`], a trivial implementation that records what it is
//! fed (for tests and tools).
//!
//! Invariant: the walker calls the hooks in byte order, each at most once
//! per byte, and only for bytes that passed every check before them; once
//! the scan stops no hook is called. The hooks of a refused head mean
//! nothing (the byte after a CR that was the last allowed byte may still
//! fire `header_value_end` before `limit:header_bytes`).

/// Header ids the scanner itself needs (defined here once; `lower`
/// re-exports them): the header-name automaton gives these ids to these
/// names, 0 to names the policy does not use, and 5..=63 to the policy's
/// other header names.
pub struct HeaderId;

impl HeaderId {
    pub const OTHER: u8 = 0;
    pub const HOST: u8 = 1;
    pub const CONTENT_LENGTH: u8 = 2;
    pub const TRANSFER_ENCODING: u8 = 3;
    pub const UPGRADE: u8 = 4;
    /// The protocol's names, in id order from 1.
    pub const PROTOCOL: [&'static str; 4] = ["host", "content-length", "transfer-encoding", "upgrade"];
}

/// The policy side of the scan. Every method has an empty default, so a
/// caller implements only what its automata need.
pub trait HeadHooks {
    /// A byte of the method (the request line's first token).
    fn method_byte(&mut self, _byte: u8) {}
    /// The SP after the method.
    fn method_end(&mut self) {}
    /// A byte of the canonical path: a literal path byte, or the byte a
    /// `%HH` decodes to (fed at its second hex digit). For `OPTIONS *` the
    /// single byte `*`. Nothing for CONNECT's authority-form target.
    fn path_byte(&mut self, _decoded: u8) {}
    /// The SP or `?` after the path (origin and asterisk forms only).
    fn path_end(&mut self) {}
    /// A byte of a field name, ASCII-lowercased.
    fn header_name_byte(&mut self, _lowercased: u8) {}
    /// The colon after a field name: the name's id (0..=63; see
    /// [`HeaderId`]). Ids above 63 are taken modulo 64.
    fn header_name_end(&mut self) -> u8 {
        HeaderId::OTHER
    }
    /// A byte of the field value, from its first byte that is not SP or
    /// HTAB to the CR: trailing SP/HTAB are fed too (a value automaton
    /// that compares whole values lets them through to an accepting state).
    fn header_value_byte(&mut self, _byte: u8) {}
    /// The LF ending the field line (after all its value bytes, possibly
    /// none).
    fn header_value_end(&mut self) {}
    /// Bit `id`: a repeated field line with that id is
    /// `malformed:duplicate-header` (the headers a value matcher of the
    /// governing policy reads). Read once, at the end of the head.
    fn refuse_duplicates(&self) -> u64 {
        0
    }
    /// Whether a GET or HEAD with a body is `malformed:get-body` (the
    /// governing policy's `get_body deny`). Read once, at the end of the
    /// head.
    fn refuse_get_body(&self) -> bool {
        false
    }
}

/// One field line as the hooks saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedField {
    /// Lowercased name.
    pub name: Vec<u8>,
    /// The id [`RecordingHooks`] gave it.
    pub id: u8,
    /// The value bytes fed (leading whitespace skipped, trailing kept).
    pub value: Vec<u8>,
    /// Whether `header_value_end` was called.
    pub ended: bool,
}

/// Hooks that record what they are fed and name headers by a fixed list:
/// the four protocol names get their [`HeaderId`]s, `value_matched[i]` gets
/// id `5 + i` (and its duplicates are refused), everything else 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingHooks {
    /// Lowercase names of value-matched headers (at most 59).
    pub value_matched: Vec<Vec<u8>>,
    pub method: Vec<u8>,
    pub method_ended: bool,
    pub path: Vec<u8>,
    pub path_ended: bool,
    pub fields: Vec<RecordedField>,
    /// The current name, until its colon.
    name: Vec<u8>,
    /// `get_body deny` (off unless [`RecordingHooks::refusing_get_body`]).
    pub refuse_get_body: bool,
}

impl RecordingHooks {
    pub fn new(value_matched: &[&str]) -> Self {
        RecordingHooks { value_matched: value_matched.iter().map(|name| name.as_bytes().to_vec()).collect(), ..Default::default() }
    }

    /// The same, for a policy that refuses GET/HEAD bodies (the default).
    pub fn refusing_get_body(mut self) -> Self {
        self.refuse_get_body = true;
        self
    }

    fn id_of(&self, name: &[u8]) -> u8 {
        if let Some(index) = HeaderId::PROTOCOL.iter().position(|protocol| protocol.as_bytes() == name) {
            return index as u8 + 1;
        }
        match self.value_matched.iter().position(|matched| matched == name) {
            Some(index) if index < 59 => index as u8 + 5,
            _ => HeaderId::OTHER,
        }
    }
}

impl HeadHooks for RecordingHooks {
    fn method_byte(&mut self, byte: u8) {
        self.method.push(byte);
    }

    fn method_end(&mut self) {
        self.method_ended = true;
    }

    fn path_byte(&mut self, decoded: u8) {
        self.path.push(decoded);
    }

    fn path_end(&mut self) {
        self.path_ended = true;
    }

    fn header_name_byte(&mut self, lowercased: u8) {
        self.name.push(lowercased);
    }

    fn header_name_end(&mut self) -> u8 {
        let name = std::mem::take(&mut self.name);
        let id = self.id_of(&name);
        self.fields.push(RecordedField { name, id, value: Vec::new(), ended: false });
        id
    }

    fn header_value_byte(&mut self, byte: u8) {
        if let Some(field) = self.fields.last_mut() {
            field.value.push(byte);
        }
    }

    fn header_value_end(&mut self) {
        if let Some(field) = self.fields.last_mut() {
            field.ended = true;
        }
    }

    fn refuse_duplicates(&self) -> u64 {
        (0..self.value_matched.len().min(59)).fold(0, |mask, index| mask | 1u64 << (index + 5))
    }

    fn refuse_get_body(&self) -> bool {
        self.refuse_get_body
    }
}
