//! `uri-host [":" port]` (RFC 3986 §3.2.2, port `1*DIGIT` per language.md
//! §5), read one byte at a time: the Host field's value and the
//! authority-form target of `CONNECT`.
//!
//! Invariants:
//! - [`AuthorityScanner::push`] refuses a byte as soon as no continuation
//!   could make the authority valid, except inside an IP literal, whose
//!   content is judged when its `]` arrives (its bytes are still checked one
//!   by one against the literal's character set).
//! - The scanner keeps at most [`MAX_LITERAL`] bytes of an IP literal; a
//!   longer literal is refused (no IPv6 address or realistic IPvFuture is
//!   that long).

use crate::http::{is_hex_digit, is_sub_delim, is_unreserved};
use std::net::Ipv6Addr;

/// The longest IP literal content (between the brackets) accepted.
pub const MAX_LITERAL: usize = 64;

/// What an authority must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthorityRules {
    /// The host may not be empty.
    pub require_host: bool,
    /// `":" port` must be there.
    pub require_port: bool,
}

impl AuthorityRules {
    /// The Host field: `uri-host [":" port]`; an empty reg-name is what
    /// RFC 3986 allows (RFC 9112 §3.2 even asks for an empty Host at times).
    pub const HOST_FIELD: AuthorityRules = AuthorityRules { require_host: false, require_port: false };
    /// CONNECT's target: `uri-host ":" port`, with a host to connect to.
    pub const CONNECT_TARGET: AuthorityRules = AuthorityRules { require_host: true, require_port: true };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    HostStart,
    RegName,
    /// Inside `[...]`.
    Literal,
    /// Right after the `]`.
    AfterLiteral,
    /// Right after the `:`.
    PortStart,
    Port,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthorityScanner {
    rules: AuthorityRules,
    part: Part,
    /// Bytes taken so far (the next byte's relative offset).
    position: usize,
    /// An open percent escape in a reg-name: its `%` offset and the hex
    /// digits read after it.
    escape: Option<(usize, u8)>,
    literal: [u8; MAX_LITERAL],
    literal_len: usize,
}

impl AuthorityScanner {
    pub fn new(rules: AuthorityRules) -> Self {
        AuthorityScanner {
            rules,
            part: Part::HostStart,
            position: 0,
            escape: None,
            literal: [0; MAX_LITERAL],
            literal_len: 0,
        }
    }

    /// Whether all of `bytes` is a valid authority under `rules`.
    pub fn is_valid(bytes: &[u8], rules: AuthorityRules) -> bool {
        let mut scanner = AuthorityScanner::new(rules);
        bytes.iter().all(|&byte| scanner.push(byte).is_ok()) && scanner.open_escape().is_none() && scanner.finish()
    }

    /// The relative offset of the `%` of an unfinished escape.
    pub fn open_escape(&self) -> Option<usize> {
        self.escape.map(|(percent, _)| percent)
    }

    /// Take one byte; `Err` carries the relative offset of the byte the
    /// violation sits at (an escape's `%`, or this byte).
    pub fn push(&mut self, byte: u8) -> Result<(), usize> {
        let offset = self.position;
        self.position += 1;
        if let Some((percent, digits)) = self.escape {
            if !is_hex_digit(byte) {
                return Err(percent);
            }
            self.escape = if digits == 0 { Some((percent, 1)) } else { None };
            return Ok(());
        }
        let reg_name_byte = is_unreserved(byte) || is_sub_delim(byte);
        match self.part {
            Part::HostStart => match byte {
                b'[' => self.part = Part::Literal,
                b':' if !self.rules.require_host => self.part = Part::PortStart,
                b'%' => {
                    self.escape = Some((offset, 0));
                    self.part = Part::RegName;
                }
                _ if reg_name_byte => self.part = Part::RegName,
                _ => return Err(offset),
            },
            Part::RegName => match byte {
                b':' => self.part = Part::PortStart,
                b'%' => self.escape = Some((offset, 0)),
                _ if reg_name_byte => {}
                _ => return Err(offset),
            },
            Part::Literal => {
                if byte == b']' {
                    if !literal_is_valid(self.literal.get(..self.literal_len).unwrap_or_default()) {
                        return Err(offset);
                    }
                    self.part = Part::AfterLiteral;
                } else if (reg_name_byte || byte == b':') && self.literal_len < MAX_LITERAL {
                    if let Some(slot) = self.literal.get_mut(self.literal_len) {
                        *slot = byte;
                    }
                    self.literal_len += 1;
                } else {
                    return Err(offset);
                }
            }
            Part::AfterLiteral => match byte {
                b':' => self.part = Part::PortStart,
                _ => return Err(offset),
            },
            Part::PortStart | Part::Port => {
                if !byte.is_ascii_digit() {
                    return Err(offset);
                }
                self.part = Part::Port;
            }
        }
        Ok(())
    }

    /// Whether the authority may end here.
    pub fn finish(&self) -> bool {
        if self.escape.is_some() {
            return false;
        }
        match self.part {
            Part::HostStart => !self.rules.require_host && !self.rules.require_port,
            Part::RegName | Part::AfterLiteral => !self.rules.require_port,
            Part::Literal | Part::PortStart => false,
            Part::Port => true,
        }
    }
}

/// `IPv6address / IPvFuture` (RFC 3986): the content between the brackets.
fn literal_is_valid(content: &[u8]) -> bool {
    if let Some(rest) = content.strip_prefix(b"v").or_else(|| content.strip_prefix(b"V")) {
        // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let digits = rest.iter().take_while(|&&byte| is_hex_digit(byte)).count();
        let Some(after_digits) = rest.get(digits..) else { return false };
        let Some(tail) = after_digits.strip_prefix(b".") else { return false };
        return digits > 0
            && !tail.is_empty()
            && tail.iter().all(|&byte| is_unreserved(byte) || is_sub_delim(byte) || byte == b':');
    }
    // RFC 3986's IPv6address: hex groups, `::`, an optional dotted quad.
    // The standard library's parser reads exactly that text form (no zone
    // identifier), which is all a bracketed literal may hold.
    std::str::from_utf8(content).is_ok_and(|text| text.parse::<Ipv6Addr>().is_ok())
}

/// The Host value as host matchers see it (language.md §5): without its
/// port and without one trailing dot; the caller lowercases. `value` has
/// passed [`AuthorityScanner::is_valid`].
pub(crate) fn host_for_matching(value: &[u8]) -> &[u8] {
    let host = if value.first() == Some(&b'[') {
        match value.iter().position(|&byte| byte == b']') {
            Some(close) => value.get(..=close).unwrap_or(value),
            None => value,
        }
    } else {
        // A reg-name or IPv4 address holds no `:`; the first one starts the port.
        match value.iter().position(|&byte| byte == b':') {
            Some(colon) => value.get(..colon).unwrap_or(value),
            None => value,
        }
    };
    host.strip_suffix(b".").unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_ok(value: &str) -> bool {
        AuthorityScanner::is_valid(value.as_bytes(), AuthorityRules::HOST_FIELD)
    }

    fn connect_ok(value: &str) -> bool {
        AuthorityScanner::is_valid(value.as_bytes(), AuthorityRules::CONNECT_TARGET)
    }

    #[test]
    fn host_values() {
        for good in ["a", "example.com", "example.com:8080", "10.0.0.1:80", "[::1]", "[::1]:8080", "a%2Eb", "", "x.", "[v1.fe]"] {
            assert!(host_ok(good), "{good:?} should be a valid Host");
        }
        for bad in ["a:80@evil", "a b", "[::1", "[zz]", "a:", "a:8x", "[::1]x", "a%2", "a%zz", "[1:::2]", "a/b", "user@a"] {
            assert!(!host_ok(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn connect_targets() {
        assert!(connect_ok("db.internal:5432"));
        assert!(connect_ok("[2001:db8::1]:443"));
        assert!(!connect_ok("db.internal"));
        assert!(!connect_ok(":443"));
        assert!(!connect_ok("/x"));
    }

    #[test]
    fn violation_offsets() {
        let mut scanner = AuthorityScanner::new(AuthorityRules::HOST_FIELD);
        assert_eq!(scanner.push(b'a'), Ok(()));
        assert_eq!(scanner.push(b'%'), Ok(()));
        assert_eq!(scanner.push(b'z'), Err(1));
    }

    #[test]
    fn matching_form() {
        assert_eq!(host_for_matching(b"Example.COM.:8443"), b"Example.COM");
        assert_eq!(host_for_matching(b"[::1]:80"), b"[::1]");
        assert_eq!(host_for_matching(b"a.."), b"a.");
    }
}
