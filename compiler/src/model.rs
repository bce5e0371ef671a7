//! The resolved policy model: what `resolve` produces from syntax, what
//! `check` validates, and what the reference evaluator and the back end
//! (`lower`, `codegen`) consume.
//!
//! Invariants once a [`Program`] has passed `check`:
//! - every name is resolved: lists are flattened into their values;
//! - header names are lowercase tokens; host values are lowercase;
//! - policy names are unique, rule names are unique within a policy, and no
//!   two policies' scopes can select the same connection;
//! - `limits.header_bytes` is in 1..=16 KiB and `limits.headers` >= 1;
//! - every glob pattern is well formed (`**` only as a whole segment).
//!
//! Spans point into the [`crate::source::Sources`] the program was read
//! from; they are for diagnostics only.

use crate::source::Span;
use std::net::IpAddr;

/// Everything one compilation holds: the policies of the files named on the
/// command line (imports bring in `let`s only) and their tests.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub policies: Vec<Policy>,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub span: Span,
    pub scope: Scope,
    /// The verdict when no rule matches. `None` only before `check`, which
    /// reports a missing default as an error.
    pub default: Option<DefaultVerdict>,
    pub mode: Mode,
    pub opaque: OpaqueVerdict,
    /// `get_body`: whether a GET or HEAD request may carry a body.
    pub get_body: GetBodyVerdict,
    /// `deny_with`: how a deny is answered (language.md §6).
    pub deny_with: DenyWith,
    pub limits: Limits,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Names of the headers used by a value matcher (`exact`, `prefix`,
    /// `suffix`, `contains`) anywhere in this policy, including `host`
    /// matchers' `host`. A request repeating one of them is
    /// `malformed:duplicate-header` (language.md §5). Sorted, lowercase.
    pub fn value_matched_headers(&self) -> Vec<String> {
        let mut names = Vec::new();
        for rule in &self.rules {
            for cond in &rule.conditions {
                cond.collect_value_headers(&mut names);
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultVerdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpaqueVerdict {
    #[default]
    Deny,
    Allow,
}

/// `get_body deny|allow` (language.md §6, revision 3): a GET or HEAD
/// request with a body (a Content-Length other than 0, or a
/// Transfer-Encoding) is `malformed:get-body` unless allowed. Some servers
/// never read such a body and parse it as the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GetBodyVerdict {
    #[default]
    Deny,
    Allow,
}

impl GetBodyVerdict {
    /// Whether `method` with a body is refused.
    pub fn refuses(self, method: &[u8]) -> bool {
        self == GetBodyVerdict::Deny && (method == b"GET" || method == b"HEAD")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head inspected (request line + fields + final CRLF).
    pub header_bytes: u32,
    /// Most field lines in a head.
    pub headers: u32,
}

impl Limits {
    pub const DEFAULT_HEADER_BYTES: u32 = 8 * 1024;
    pub const MAX_HEADER_BYTES: u32 = 16 * 1024;
    pub const DEFAULT_HEADERS: u32 = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_bytes: Self::DEFAULT_HEADER_BYTES, headers: Self::DEFAULT_HEADERS }
    }
}

/// Which connections a policy governs. Each present kind must hold (AND);
/// within a kind, any listed value (OR). All `None`: every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub remote_ports: Option<Vec<u16>>,
    pub local_ports: Option<Vec<u16>>,
    pub remote_addrs: Option<Vec<Cidr>>,
    pub local_addrs: Option<Vec<Cidr>>,
}

impl Scope {
    pub fn is_everything(&self) -> bool {
        self.remote_ports.is_none()
            && self.local_ports.is_none()
            && self.remote_addrs.is_none()
            && self.local_addrs.is_none()
    }

    /// Whether this scope selects a connection with these addresses.
    pub fn selects(&self, conn: &ConnectionInfo) -> bool {
        let port_ok = |ports: &Option<Vec<u16>>, port: u16| {
            ports.as_ref().is_none_or(|ports| ports.contains(&port))
        };
        let addr_ok = |cidrs: &Option<Vec<Cidr>>, addr: IpAddr| {
            cidrs.as_ref().is_none_or(|cidrs| cidrs.iter().any(|cidr| cidr.contains(addr)))
        };
        port_ok(&self.remote_ports, conn.remote_port)
            && port_ok(&self.local_ports, conn.local_port)
            && addr_ok(&self.remote_addrs, conn.remote_addr)
            && addr_ok(&self.local_addrs, conn.local_addr)
    }
}

/// A connection's addresses: shared vocabulary (`l7c_abi::verdict`).
pub use crate::verdict::{ConnectionInfo, DenyWith};

/// An address block. An IPv4 block also matches IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) of dual-stack sockets (language.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match (self.addr, addr) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => addr,
        };
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_eq(&net.octets(), &a.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_eq(&net.octets(), &a.octets(), self.prefix_len)
            }
            _ => false,
        }
    }

    /// Whether some address lies in both blocks. An IPv4 block also covers
    /// the IPv4-mapped IPv6 addresses, so it is compared as the block
    /// `::ffff:a.b.c.d/(96 + len)` against an IPv6 block.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let (a, b) = match (self.addr, other.addr) {
            (IpAddr::V4(_), IpAddr::V6(_)) => (self.as_mapped_v6(), *other),
            (IpAddr::V6(_), IpAddr::V4(_)) => (*self, other.as_mapped_v6()),
            _ => (*self, *other),
        };
        let (shorter, longer) = if a.prefix_len <= b.prefix_len { (a, b) } else { (b, a) };
        shorter.contains(longer.addr)
    }

    /// An IPv4 block as the block of its IPv4-mapped IPv6 addresses; an
    /// IPv6 block as it is.
    fn as_mapped_v6(&self) -> Cidr {
        match self.addr {
            IpAddr::V4(v4) => Cidr { addr: IpAddr::V6(v4.to_ipv6_mapped()), prefix_len: 96 + self.prefix_len },
            IpAddr::V6(_) => *self,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix_len: u8) -> bool {
    let full = usize::from(prefix_len / 8);
    let rest = prefix_len % 8;
    if a.iter().zip(b).take(full).any(|(x, y)| x != y) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub span: Span,
    /// All must hold.
    pub conditions: Vec<Condition>,
    pub action: Action,
    /// Emit an event whenever this rule decides.
    pub log: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// `allow tunnel`: allowed, and if the request switches protocols, the
    /// rest of the connection passes unparsed.
    AllowTunnel,
    Redirect { target: String, ingress: bool },
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub span: Span,
    pub kind: ConditionKind,
}

#[derive(Debug, Clone)]
pub enum ConditionKind {
    /// The method token is one of these (case-sensitive bytes).
    Method(Vec<Vec<u8>>),
    /// The canonical (percent-decoded) path relates to one of the patterns.
    Path { op: PathOp, patterns: Vec<Vec<u8>> },
    /// A header test; `name` is lowercase.
    Header { name: String, test: HeaderTest },
    /// The Host value (lowercased, port and one trailing dot removed)
    /// relates to one of the values (lowercase).
    Host { op: HostOp, values: Vec<Vec<u8>> },
    /// One of the group holds.
    Any(Vec<Condition>),
    /// The inner condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    fn collect_value_headers(&self, names: &mut Vec<String>) {
        match &self.kind {
            ConditionKind::Header { name, test: HeaderTest::Value { .. } } => names.push(name.clone()),
            ConditionKind::Host { .. } => names.push("host".to_string()),
            ConditionKind::Any(group) => group.iter().for_each(|c| c.collect_value_headers(names)),
            ConditionKind::Not(inner) => inner.collect_value_headers(names),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOp {
    /// Equal to the pattern.
    Exact,
    /// Segment-aware: equal, or followed by `/`; a pattern ending in `/`
    /// matches paths that start with it.
    Prefix,
    /// Raw byte prefix.
    StartsWith,
    /// Raw byte suffix.
    Suffix,
    /// `*` = one or more bytes within a segment; `**` (a whole segment) =
    /// zero or more whole segments.
    Glob,
}

impl PathOp {
    pub const fn keyword(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Prefix => "prefix",
            Self::StartsWith => "starts_with",
            Self::Suffix => "suffix",
            Self::Glob => "glob",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    Present,
    Absent,
    /// The whitespace-trimmed value relates to one of `values` as `op` says;
    /// with `nocase`, compared ASCII case-insensitively.
    Value { op: ValueOp, nocase: bool, values: Vec<Vec<u8>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueOp {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

impl ValueOp {
    pub const fn keyword(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Prefix => "prefix",
            Self::Suffix => "suffix",
            Self::Contains => "contains",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOp {
    Exact,
    Suffix,
}

/// A `test` block: connections to open and the verdicts each must get.
#[derive(Debug, Clone)]
pub struct Test {
    pub name: String,
    pub span: Span,
    pub sends: Vec<TestSend>,
}

#[derive(Debug, Clone)]
pub struct TestSend {
    pub span: Span,
    pub connection: ConnectionInfo,
    /// Redirect targets bound for this connection.
    pub bound: Vec<String>,
    pub input: Vec<u8>,
    /// Sizes of the first `send()` calls; the rest is one final send.
    pub split: Option<Vec<usize>>,
    pub expect: Vec<Expectation>,
}

/// One expected verdict. `reason: None` accepts any reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    Pending,
    Verdict { action: VerdictAction, reason: Option<ExpectedReason> },
}

/// What a verdict does: shared vocabulary (`l7c_abi::verdict`).
pub use crate::verdict::VerdictAction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedReason {
    Rule(String),
    Default,
    /// `None`: any kind.
    Malformed(Option<crate::http::MalformedKind>),
    Limit(Option<crate::http::LimitKind>),
    Opaque,
    Http2,
    Tunnel,
    RedirectUnbound,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str, len: u8) -> Cidr {
        Cidr { addr: s.parse().unwrap(), prefix_len: len }
    }

    #[test]
    fn cidr_contains_and_mapped_v4() {
        let net = cidr("10.1.0.0", 16);
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        assert!(cidr("0.0.0.0", 0).contains("8.8.8.8".parse().unwrap()));
        assert!(cidr("10.1.2.3", 31).contains("10.1.2.2".parse().unwrap()));
        assert!(!cidr("10.1.2.3", 32).contains("10.1.2.2".parse().unwrap()));
    }

    #[test]
    fn cidr_overlap() {
        assert!(cidr("10.0.0.0", 8).overlaps(&cidr("10.1.0.0", 16)));
        assert!(cidr("10.1.0.0", 16).overlaps(&cidr("10.0.0.0", 8)));
        assert!(!cidr("10.1.0.0", 16).overlaps(&cidr("10.2.0.0", 16)));
        // IPv4 blocks cover their IPv4-mapped IPv6 addresses.
        assert!(cidr("::", 0).overlaps(&cidr("10.0.0.0", 8)));
        assert!(cidr("10.0.0.0", 8).overlaps(&cidr("::ffff:10.1.0.0", 112)));
        assert!(!cidr("10.0.0.0", 8).overlaps(&cidr("::ffff:11.0.0.0", 104)));
        assert!(!cidr("10.0.0.0", 8).overlaps(&cidr("fd00::", 8)));
    }
}
