//! The HTTP vocabulary shared by every stage: character classes, the
//! `malformed:<kind>` and `limit:<name>` reasons, and their spellings.
//!
//! One source of truth: the checker, the reference evaluator, the scanner
//! tables and the code generator all name reasons and limits through these
//! enums and constants, so a spelling or a bound can never drift between
//! engines.

use std::fmt;

/// `tchar` of RFC 9110 §5.6.2: the bytes of a token (methods, field names).
pub const fn is_tchar(byte: u8) -> bool {
    matches!(byte,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// The longest chunk-size line, CRLF included (language.md §7): both
/// engines refuse a longer one as `malformed:chunk`.
pub const MAX_CHUNK_LINE: u16 = 1024;
/// The most hex digits of a chunk size.
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// `unreserved` of RFC 3986.
pub const fn is_unreserved(byte: u8) -> bool {
    matches!(byte, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~')
}

/// `sub-delims` of RFC 3986.
pub const fn is_sub_delim(byte: u8) -> bool {
    matches!(byte, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// Bytes browsers send unencoded in a target although RFC 3986 does not
/// allow them, which every server accepts (language.md §7, revision 3):
/// `[ ] { } | ^` and backquote.
pub const fn is_browser_target_byte(byte: u8) -> bool {
    matches!(byte, b'[' | b']' | b'{' | b'}' | b'|' | b'^' | b'`')
}

/// A byte allowed literally in an origin-form path (RFC 3986 `pchar` or `/`,
/// and what browsers send unencoded; `%` is allowed here and its escape
/// checked separately).
pub const fn is_path_byte(byte: u8) -> bool {
    is_unreserved(byte) || is_sub_delim(byte) || is_browser_target_byte(byte) || matches!(byte, b':' | b'@' | b'/' | b'%')
}

/// A byte allowed literally in a query (RFC 3986: `pchar`, `/`, `?`, and
/// what browsers send unencoded). The query is never decoded, so any `%`
/// is just a byte there.
pub const fn is_query_byte(byte: u8) -> bool {
    is_path_byte(byte) || byte == b'?'
}

pub const fn is_hex_digit(byte: u8) -> bool {
    byte.is_ascii_hexdigit()
}

/// The value of a hex digit; callers check [`is_hex_digit`] first.
pub const fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

/// The kinds of `malformed:<kind>`, in the order of the table in
/// language.md §7. The order matters: ties at one byte go to the earlier row,
/// and the whole-head checks run in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MalformedKind {
    RequestLine,
    Method,
    Version,
    Target,
    LineEnding,
    HeaderSyntax,
    ObsFold,
    Host,
    ContentLength,
    TransferEncoding,
    ClTe,
    /// A GET or HEAD request with a body, under `get_body deny` (§6).
    GetBody,
    DuplicateHeader,
    PathEncoding,
    PathTraversal,
    Chunk,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 16] = [
        Self::RequestLine,
        Self::Method,
        Self::Version,
        Self::Target,
        Self::LineEnding,
        Self::HeaderSyntax,
        Self::ObsFold,
        Self::Host,
        Self::ContentLength,
        Self::TransferEncoding,
        Self::ClTe,
        Self::GetBody,
        Self::DuplicateHeader,
        Self::PathEncoding,
        Self::PathTraversal,
        Self::Chunk,
    ];

    /// The spelling used in reasons, counters, events and tests.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RequestLine => "request-line",
            Self::Method => "method",
            Self::Version => "version",
            Self::Target => "target",
            Self::LineEnding => "line-ending",
            Self::HeaderSyntax => "header-syntax",
            Self::ObsFold => "obs-fold",
            Self::Host => "host",
            Self::ContentLength => "content-length",
            Self::TransferEncoding => "transfer-encoding",
            Self::ClTe => "cl-te",
            Self::GetBody => "get-body",
            Self::DuplicateHeader => "duplicate-header",
            Self::PathEncoding => "path-encoding",
            Self::PathTraversal => "path-traversal",
            Self::Chunk => "chunk",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of `limit:<name>` (language.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitKind {
    HeaderBytes,
    Headers,
}

impl LimitKind {
    pub const ALL: [LimitKind; 2] = [Self::HeaderBytes, Self::Headers];

    pub const fn name(self) -> &'static str {
        match self {
            Self::HeaderBytes => "header_bytes",
            Self::Headers => "headers",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The HTTP/2 connection preface's first line; a connection that starts with
/// it is denied as `http2` (language.md §6, revision 3).
pub const HTTP2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A TLS record header (language.md §6): a content type 0x14–0x17
/// (change_cipher_spec, alert, handshake, application_data), then the
/// major version 3, then a minor version 0–4. Only this is opaque.
pub const TLS_CONTENT_TYPES: std::ops::RangeInclusive<u8> = 0x14..=0x17;
pub const TLS_MAJOR: u8 = 3;
pub const TLS_MAX_MINOR: u8 = 4;

/// What a connection's first bytes are (language.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStart {
    /// A TLS record header: opaque.
    Tls,
    /// The HTTP/2 preface line: `http2`.
    Http2,
    /// Anything else: read as a request (a first byte that cannot start
    /// one is `malformed:request-line` there).
    Request,
    /// A proper prefix of a TLS record header or of the preface line: hold
    /// the bytes until more arrive.
    Undecided,
}

/// Classifies the first bytes of a connection (at most
/// [`HTTP2_PREFACE_LINE`]'s length are looked at).
pub fn connection_start(bytes: &[u8]) -> ConnectionStart {
    match bytes {
        [] => ConnectionStart::Undecided,
        [first, rest @ ..] if TLS_CONTENT_TYPES.contains(first) => match rest {
            [] => ConnectionStart::Undecided,
            [major, ..] if *major != TLS_MAJOR => ConnectionStart::Request,
            [_] => ConnectionStart::Undecided,
            [_, minor, ..] if *minor <= TLS_MAX_MINOR => ConnectionStart::Tls,
            _ => ConnectionStart::Request,
        },
        _ if bytes.len() >= HTTP2_PREFACE_LINE.len() && bytes.starts_with(HTTP2_PREFACE_LINE) => ConnectionStart::Http2,
        _ if HTTP2_PREFACE_LINE.starts_with(bytes) => ConnectionStart::Undecided,
        _ => ConnectionStart::Request,
    }
}

#[cfg(test)]
mod connection_start_tests {
    use super::*;

    #[test]
    fn only_tls_record_headers_are_opaque_and_the_preface_is_http2() {
        use ConnectionStart::*;
        assert_eq!(connection_start(&[0x16, 3, 1, 0, 0x2a]), Tls);
        assert_eq!(connection_start(&[0x17, 3, 3]), Tls);
        assert_eq!(connection_start(&[0x16, 3]), Undecided);
        assert_eq!(connection_start(&[0x16]), Undecided);
        assert_eq!(connection_start(&[0x16, b'G']), Request);
        assert_eq!(connection_start(&[0x16, 3, 9]), Request);
        assert_eq!(connection_start(&[0x18, 3, 1]), Request);
        for first in [0x0b, 0x0c, 0x1c, 0x85, 0xa0, 0x00] {
            assert_eq!(connection_start(&[first, b'G']), Request, "{first:#x}");
        }
        assert_eq!(connection_start(b"PRI * HTTP/2.0\r\n\r\nSM"), Http2);
        assert_eq!(connection_start(b"PRI * HTTP/2.0\r\n"), Http2);
        assert_eq!(connection_start(b"PRI * HT"), Undecided);
        assert_eq!(connection_start(b"PRIX"), Request);
        assert_eq!(connection_start(b"GET / HTTP/1.1"), Request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in MalformedKind::ALL {
            assert_eq!(MalformedKind::from_name(kind.name()), Some(kind));
        }
        for kind in LimitKind::ALL {
            assert_eq!(LimitKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(MalformedKind::from_name("nonsense"), None);
    }

    #[test]
    fn character_classes() {
        assert!(is_tchar(b'G') && is_tchar(b'~') && !is_tchar(b'(') && !is_tchar(b' '));
        assert!(is_path_byte(b'/') && is_path_byte(b';') && !is_path_byte(b'#'));
        assert!(!is_path_byte(b'\\') && !is_path_byte(b'?') && is_query_byte(b'?'));
        assert_eq!(hex_value(b'f'), 15);
        assert_eq!(hex_value(b'A'), 10);
    }
}
