//! Escapes in command-line byte strings (`l7c explain --request`), the same
//! as in `.l7` strings: `\\ \" \r \n \t \xHH`, so a request can be typed in
//! one shell argument.

/// Decode the escapes of `text`; an unknown or cut-off escape is an error
/// naming it.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'"') => out.push(b'"'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let hi = bytes.next().filter(u8::is_ascii_hexdigit);
                let lo = bytes.next().filter(u8::is_ascii_hexdigit);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        let digits = [h, l];
                        let text = std::str::from_utf8(&digits).map_err(|e| e.to_string())?;
                        out.push(u8::from_str_radix(text, 16).map_err(|e| e.to_string())?);
                    }
                    _ => return Err("`\\x` must be followed by two hex digits".into()),
                }
            }
            Some(other) => return Err(format!("unknown escape `\\{}`", other as char)),
            None => return Err("a trailing `\\`".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_the_l7_escapes() {
        assert_eq!(decode(r"GET / HTTP/1.1\r\n\x00\\").unwrap(), b"GET / HTTP/1.1\r\n\x00\\");
        assert!(decode(r"\q").unwrap_err().contains("\\q"));
        assert!(decode(r"\x4").is_err());
        assert!(decode("\\").is_err());
    }
}
