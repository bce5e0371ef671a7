//! Chunked bodies (RFC 9112 §7.1, language.md §7 `chunk`), read one byte at
//! a time except for chunk data, which is counted in bulk and never stored.
//!
//! Invariants:
//! - The parser keeps counters only: no byte of the body is buffered.
//! - A violation is reported at the first byte that cannot continue a
//!   well-formed chunked body: a bad byte itself, the byte after a CR that
//!   is not LF, or the last byte a line or the trailer section may have
//!   when it has not ended with it.
//! - Chunk-size lines (with their CRLF) fit in [`MAX_CHUNK_LINE`] bytes;
//!   the trailer section (its field lines and final CRLF) fits in the
//!   policy's `header_bytes` and holds at most `headers` field lines.

use crate::http::{is_hex_digit, is_tchar};
use crate::model::Limits;

/// The longest chunk-size line, CRLF included (`http::MAX_CHUNK_LINE`).
pub const MAX_CHUNK_LINE: usize = crate::http::MAX_CHUNK_LINE as usize;
use crate::http::MAX_CHUNK_SIZE_DIGITS as MAX_SIZE_DIGITS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    SizeFirst,
    Size,
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

/// The result of feeding body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkStep {
    /// All the bytes were taken; the body goes on.
    Continue,
    /// The body ended with byte `.0` (relative to the bytes given): the
    /// next request starts after it.
    Done(usize),
    /// Byte `.0` (relative to the bytes given) is the offending byte.
    Refused(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct ChunkedBody {
    state: ChunkState,
    /// Bytes of the current chunk-size line so far.
    line_len: usize,
    size_digits: u8,
    size: u64,
    /// Data bytes of the current chunk still to come.
    remaining: u64,
    trailer_bytes: usize,
    trailer_fields: usize,
    max_trailer_bytes: usize,
    max_trailer_fields: usize,
}

impl ChunkedBody {
    pub fn new(limits: Limits) -> Self {
        ChunkedBody {
            state: ChunkState::SizeFirst,
            line_len: 0,
            size_digits: 0,
            size: 0,
            remaining: 0,
            trailer_bytes: 0,
            trailer_fields: 0,
            max_trailer_bytes: usize::try_from(limits.header_bytes).unwrap_or(usize::MAX).max(1),
            max_trailer_fields: usize::try_from(limits.headers).unwrap_or(usize::MAX),
        }
    }

    /// Feed the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> ChunkStep {
        let mut index = 0;
        while let Some(rest) = bytes.get(index..) {
            if rest.is_empty() {
                break;
            }
            if self.state == ChunkState::Data {
                let available = rest.len() as u64;
                let taken = self.remaining.min(available);
                self.remaining -= taken;
                // `taken` <= rest.len(), so it fits in usize.
                index += taken as usize;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let Some(&byte) = rest.first() else { break };
            match self.step(byte) {
                Ok(()) if self.state == ChunkState::Done => return ChunkStep::Done(index),
                Ok(()) => {}
                Err(()) => return ChunkStep::Refused(index),
            }
            index += 1;
        }
        ChunkStep::Continue
    }

    fn step(&mut self, byte: u8) -> Result<(), ()> {
        use ChunkState as S;
        let in_size_line = matches!(
            self.state,
            S::SizeFirst
                | S::Size
                | S::ExtensionNameFirst
                | S::ExtensionName
                | S::ExtensionValueFirst
                | S::ExtensionToken
                | S::ExtensionQuoted
                | S::ExtensionQuotedPair
                | S::ExtensionAfterQuoted
                | S::SizeLf
        );
        let in_trailer = matches!(
            self.state,
            S::TrailerLineStart | S::TrailerName | S::TrailerValue | S::TrailerFieldLf | S::TrailerFinalLf
        );
        let ok = match self.state {
            S::SizeFirst | S::Size => match byte {
                _ if is_hex_digit(byte) && self.size_digits < MAX_SIZE_DIGITS => {
                    self.size_digits += 1;
                    self.size = (self.size << 4) | u64::from(crate::http::hex_value(byte));
                    self.state = S::Size;
                    true
                }
                b';' if self.state == S::Size => {
                    self.state = S::ExtensionNameFirst;
                    true
                }
                b'\r' if self.state == S::Size => {
                    self.state = S::SizeLf;
                    true
                }
                _ => false,
            },
            S::ExtensionNameFirst => self.enter_if(is_tchar(byte), S::ExtensionName),
            S::ExtensionName | S::ExtensionToken => match byte {
                b'=' if self.state == S::ExtensionName => self.enter(S::ExtensionValueFirst),
                b';' => self.enter(S::ExtensionNameFirst),
                b'\r' => self.enter(S::SizeLf),
                _ => is_tchar(byte),
            },
            S::ExtensionValueFirst => match byte {
                b'"' => self.enter(S::ExtensionQuoted),
                _ => self.enter_if(is_tchar(byte), S::ExtensionToken),
            },
            S::ExtensionQuoted => match byte {
                b'"' => self.enter(S::ExtensionAfterQuoted),
                b'\\' => self.enter(S::ExtensionQuotedPair),
                // qdtext: HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => true,
                _ => false,
            },
            S::ExtensionQuotedPair => {
                // quoted-pair: "\" ( HTAB / SP / VCHAR / obs-text )
                self.enter_if(matches!(byte, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff), S::ExtensionQuoted)
            }
            S::ExtensionAfterQuoted => match byte {
                b';' => self.enter(S::ExtensionNameFirst),
                b'\r' => self.enter(S::SizeLf),
                _ => false,
            },
            S::SizeLf => {
                if byte == b'\n' {
                    self.line_len = 0;
                    self.size_digits = 0;
                    if self.size == 0 {
                        self.trailer_bytes = 0;
                        self.trailer_fields = 0;
                        self.state = S::TrailerLineStart;
                    } else {
                        self.remaining = self.size;
                        self.size = 0;
                        self.state = S::Data;
                    }
                    // The line ended: its length check below must not fire.
                    return Ok(());
                }
                false
            }
            S::Data => true,
            S::DataCr => self.enter_if(byte == b'\r', S::DataLf),
            S::DataLf => self.enter_if(byte == b'\n', S::SizeFirst),
            S::TrailerLineStart => match byte {
                b'\r' => self.enter(S::TrailerFinalLf),
                _ if self.trailer_fields >= self.max_trailer_fields => false,
                _ => self.enter_if(is_tchar(byte), S::TrailerName),
            },
            S::TrailerName => match byte {
                b':' => self.enter(S::TrailerValue),
                _ => is_tchar(byte),
            },
            S::TrailerValue => match byte {
                b'\r' => self.enter(S::TrailerFieldLf),
                b'\t' => true,
                0x00..=0x1f | 0x7f => false,
                _ => true,
            },
            S::TrailerFieldLf => {
                let ok = self.enter_if(byte == b'\n', S::TrailerLineStart);
                if ok {
                    self.trailer_fields += 1;
                }
                ok
            }
            S::TrailerFinalLf => self.enter_if(byte == b'\n', S::Done),
            S::Done => true,
        };
        if !ok {
            return Err(());
        }
        if in_size_line {
            self.line_len += 1;
            if self.line_len >= MAX_CHUNK_LINE {
                // The line has not ended with its last allowed byte.
                return Err(());
            }
        }
        if in_trailer && self.state != S::Done {
            self.trailer_bytes += 1;
            if self.trailer_bytes >= self.max_trailer_bytes {
                return Err(());
            }
        }
        Ok(())
    }

    fn enter(&mut self, state: ChunkState) -> bool {
        self.state = state;
        true
    }

    fn enter_if(&mut self, condition: bool, state: ChunkState) -> bool {
        if condition {
            self.state = state;
        }
        condition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> ChunkStep {
        ChunkedBody::new(Limits::default()).feed(body)
    }

    #[test]
    fn well_formed_bodies() {
        assert_eq!(run(b"0\r\n\r\n"), ChunkStep::Done(4));
        assert_eq!(run(b"5\r\nhello\r\n0\r\n\r\nNEXT"), ChunkStep::Done(14));
        assert_eq!(run(b"5;a=b;c;d=\"x y\\\"\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), ChunkStep::Done(38));
        assert_eq!(run(b"00000000000000000\r\n"), ChunkStep::Refused(16));
        assert_eq!(run(b"5\r\nhel"), ChunkStep::Continue);
    }

    #[test]
    fn offending_bytes() {
        assert_eq!(run(b"zz\r\n"), ChunkStep::Refused(0));
        assert_eq!(run(b"5 \r\n"), ChunkStep::Refused(1));
        assert_eq!(run(b"5\r\nhelloX"), ChunkStep::Refused(8));
        assert_eq!(run(b"5\r\nhello\rX"), ChunkStep::Refused(9));
        assert_eq!(run(b"5\rX"), ChunkStep::Refused(2));
        assert_eq!(run(b"0\r\nX : 1\r\n\r\n"), ChunkStep::Refused(4));
        assert_eq!(run(b"0\r\n X\r\n\r\n"), ChunkStep::Refused(3));
        assert_eq!(run(b"\r\n"), ChunkStep::Refused(0));
    }

    #[test]
    fn split_feeding_agrees() {
        let body = b"5;x=1\r\nhello\r\n3\r\nabc\r\n0\r\nA: b\r\n\r\n";
        for cut in 0..body.len() {
            let mut parser = ChunkedBody::new(Limits::default());
            let (first, second) = body.split_at(cut);
            assert_eq!(parser.feed(first), ChunkStep::Continue, "cut {cut}");
            assert_eq!(parser.feed(second), ChunkStep::Done(second.len() - 1), "cut {cut}");
        }
    }

    #[test]
    fn size_line_limit() {
        let mut line = b"1".to_vec();
        line.push(b';');
        line.push(b'a');
        line.resize(MAX_CHUNK_LINE - 2, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_CHUNK_LINE);
        let mut body = line.clone();
        body.extend_from_slice(b"x\r\n0\r\n\r\n");
        assert_eq!(run(&body), ChunkStep::Done(body.len() - 1));
        let mut long = line[..MAX_CHUNK_LINE - 2].to_vec();
        long.extend_from_slice(b"a\r\n");
        assert_eq!(run(&long), ChunkStep::Refused(MAX_CHUNK_LINE - 1));
    }

    #[test]
    fn trailer_limits() {
        let limits = Limits { header_bytes: 16, headers: 1 };
        let mut parser = ChunkedBody::new(limits);
        assert_eq!(parser.feed(b"0\r\nA: 1\r\nB: 2\r\n\r\n"), ChunkStep::Refused(9));
        let mut parser = ChunkedBody::new(limits);
        // "A: 123456789\r\n\r\n" is 16 bytes: exactly the allowance.
        assert_eq!(parser.feed(b"0\r\nA: 123456789\r\n\r\n"), ChunkStep::Done(18));
        let mut parser = ChunkedBody::new(limits);
        assert_eq!(parser.feed(b"0\r\nA: 1234567890\r\n\r\n"), ChunkStep::Refused(3 + 15));
    }
}
