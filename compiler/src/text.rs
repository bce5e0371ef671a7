//! User bytes shown to people (diagnostics, `explain`): printable text
//! kept, control bytes and invalid UTF-8 escaped the way `.l7` strings
//! write them, so what is shown can be pasted back into a policy.

use std::fmt::Write;

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
    fn escapes_what_is_not_printable() {
        assert_eq!(string_literal(b"/a\"b\\\r\n\t\x00\x7f\xffcaf\xc3\xa9"), r#""/a\"b\\\r\n\t\x00\x7f\xffcafé""#);
        assert_eq!(code(b"a\"b\x01"), "`a\"b\\x01`");
    }
}
