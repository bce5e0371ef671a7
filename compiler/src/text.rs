//! The escapes of `.l7` strings (`\\ \" \r \n \t \xHH`, language.md §2),
//! both ways, in one place: [`decode_escapes`] reads them (the parser's
//! string literals, `l7c explain --request`), and user bytes shown to
//! people (diagnostics, `explain`) are written with them — printable text
//! kept, control bytes and invalid UTF-8 escaped — so what is shown can be
//! pasted back into a policy.

use std::fmt::Write;

/// An escape [`decode_escapes`] could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEscape {
    /// Byte offset of its backslash in the text.
    pub at: usize,
    /// Bytes the bad escape covers (from the backslash).
    pub len: usize,
    pub message: String,
    pub help: &'static str,
}

/// The bytes `text` (the inside of a `.l7` string, or a command-line
/// argument) stands for, and every escape that could not be read (each
/// skipped; decoding goes on after it).
pub fn decode_escapes(text: &str) -> (Vec<u8>, Vec<BadEscape>) {
    let mut bytes = Vec::with_capacity(text.len());
    let mut bad = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some((_, '\\')) => bytes.push(b'\\'),
            Some((_, '"')) => bytes.push(b'"'),
            Some((_, 'r')) => bytes.push(b'\r'),
            Some((_, 'n')) => bytes.push(b'\n'),
            Some((_, 't')) => bytes.push(b'\t'),
            Some((_, 'x')) => {
                let hi = chars.next().map(|(_, c)| c);
                let lo = chars.next().map(|(_, c)| c);
                match (hi.and_then(|c| c.to_digit(16)), lo.and_then(|c| c.to_digit(16))) {
                    (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                    _ => bad.push(BadEscape {
                        at,
                        len: 4.min(text.len() - at),
                        message: "`\\x` must be followed by two hex digits".to_owned(),
                        help: "write a byte as `\\xHH`, for example `\\x00` or `\\x7f`",
                    }),
                }
            }
            Some((_, other)) => bad.push(BadEscape {
                at,
                len: 1 + other.len_utf8(),
                message: format!("unknown escape `\\{other}`"),
                help: "the escapes are `\\\\`, `\\\"`, `\\r`, `\\n`, `\\t` and `\\xHH`",
            }),
            None => bad.push(BadEscape {
                at,
                len: 1,
                message: "a trailing `\\`".to_owned(),
                help: "write a backslash as `\\\\`",
            }),
        }
    }
    (bytes, bad)
}

/// Bytes as a `.l7` string literal: `"/a\x00"`.
pub fn string_literal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    escape_into(&mut out, bytes, true);
    out.push('"');
    out
}

/// Bytes in backticks for a message: `` `/a\x00` `` (quotes left as they are).
pub fn code(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('`');
    escape_into(&mut out, bytes, false);
    out.push('`');
    out
}

fn escape_into(out: &mut String, bytes: &[u8], in_string: bool) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' if in_string => out.push_str("\\\""),
                '\\' if in_string => out.push_str("\\\\"),
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_every_bad_one_is_reported_where_it_is() {
        let (bytes, bad) = decode_escapes(r#"GET / HTTP/1.1\r\n\x00\\\""#);
        assert_eq!(bytes, b"GET / HTTP/1.1\r\n\x00\\\"");
        assert!(bad.is_empty());
        let (bytes, bad) = decode_escapes(r"a\qb\x4");
        assert_eq!(bytes, b"ab");
        assert_eq!(bad.iter().map(|b| (b.at, b.len)).collect::<Vec<_>>(), vec![(1, 2), (4, 3)]);
        assert!(bad[0].message.contains("\\q") && bad[1].message.contains("two hex digits"));
        assert_eq!(decode_escapes("\\").1[0].message, "a trailing `\\`");
    }

    #[test]
    fn what_is_shown_decodes_back_to_the_bytes() {
        let bytes: Vec<u8> = (0..=255u8).chain(*b"\"\\").collect();
        let literal = string_literal(&bytes);
        let inner = &literal[1..literal.len() - 1];
        assert_eq!(decode_escapes(inner), (bytes, vec![]));
    }

    #[test]
    fn escapes_what_is_not_printable() {
        assert_eq!(string_literal(b"/a\"b\\\r\n\t\x00\x7f\xffcaf\xc3\xa9"), r#""/a\"b\\\r\n\t\x00\x7f\xffcafé""#);
        assert_eq!(code(b"a\"b\x01"), "`a\"b\\x01`");
    }
}
