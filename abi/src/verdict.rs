//! The vocabulary every engine shares: what a verdict does
//! ([`VerdictAction`]) on which connection ([`ConnectionInfo`]), why it was given
//! ([`Reason`]), a verdict with its span ([`Verdict`]), what a connection
//! came to ([`Outcome`]), and the JSON of `l7c eval` ([`EvalJson`],
//! cli.md). The reference evaluator (`eval`) produces these; the kernel
//! engine (`runtime`), the ABI (`abi`), the code generator and the test
//! runner read and write them without depending on the evaluator — the
//! executable spec and the back end meet only here, in `http.rs` and in
//! `model.rs`.

use crate::http::{LimitKind, MalformedKind};
use serde::Serialize;
use std::net::IpAddr;

/// What a verdict does with a request (language.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerdictAction {
    Allow,
    Deny,
    Redirect,
    Tunnel,
}

impl VerdictAction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Redirect => "redirect",
            Self::Tunnel => "tunnel",
        }
    }
}

/// The addresses of one TCP connection, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub local_addr: IpAddr,
    pub local_port: u16,
}

impl Default for ConnectionInfo {
    /// cli.md: remote 127.0.0.1 port 80, an ephemeral local port.
    fn default() -> Self {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        ConnectionInfo { remote_addr: loopback, remote_port: 80, local_addr: loopback, local_port: 40000 }
    }
}

impl ConnectionInfo {
    /// This connection with `remote_addr` as its remote address. A
    /// socket's two addresses are of one family, so a local address left
    /// at the default (127.0.0.1) follows the remote's kind: `::1` for an
    /// IPv6 remote, `::ffff:127.0.0.1` for an IPv4-mapped one (a
    /// dual-stack socket).
    pub fn with_remote_addr(self, remote_addr: IpAddr) -> Self {
        let local_addr = match (self.local_addr == ConnectionInfo::default().local_addr, remote_addr) {
            (true, IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
                IpAddr::V6(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped())
            }
            (true, IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            _ => self.local_addr,
        };
        ConnectionInfo { remote_addr, local_addr, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_local_address_follows_the_remote_family() {
        let at = |remote: &str| ConnectionInfo::default().with_remote_addr(remote.parse().unwrap()).local_addr.to_string();
        assert_eq!(at("127.0.0.2"), "127.0.0.1");
        assert_eq!(at("::1"), "::1");
        assert_eq!(at("::ffff:127.0.0.2"), "::ffff:127.0.0.1");
        let given = ConnectionInfo { local_addr: "10.0.0.1".parse().unwrap(), ..ConnectionInfo::default() };
        assert_eq!(given.with_remote_addr("::1".parse().unwrap()).local_addr.to_string(), "10.0.0.1");
    }
}

/// Why a verdict was given (language.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Rule,
    Default,
    Malformed(MalformedKind),
    Limit(LimitKind),
    Opaque,
    /// The connection starts with the HTTP/2 preface line (language.md §6).
    Http2,
    Tunnel,
    RedirectUnbound,
}

impl Reason {
    /// The spelling of cli.md's JSON and of counters: `rule`, `default`,
    /// `malformed:cl-te`, `limit:headers`, `opaque`, `tunnel`,
    /// `redirect-unbound`.
    pub fn name(&self) -> String {
        match self {
            Reason::Rule => "rule".into(),
            Reason::Default => "default".into(),
            Reason::Malformed(kind) => format!("malformed:{kind}"),
            Reason::Limit(kind) => format!("limit:{kind}"),
            Reason::Opaque => "opaque".into(),
            Reason::Http2 => "http2".into(),
            Reason::Tunnel => "tunnel".into(),
            Reason::RedirectUnbound => "redirect-unbound".into(),
        }
    }
}

/// One verdict, with the byte span of the request it covers (cli.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub index: usize,
    pub start: u64,
    pub end: u64,
    pub action: VerdictAction,
    pub reason: Reason,
    /// The rule that decided, whenever one did (also for `deny tunnel` and
    /// `deny redirect-unbound`).
    pub rule: Option<String>,
}

/// What one connection came to once its input ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub verdicts: Vec<Verdict>,
    /// Bytes that reached the peer (redirected bytes go elsewhere).
    pub delivered: u64,
    /// Bytes held at the end (an incomplete head).
    pub pending: u64,
}

/// The JSON of `l7c eval` (cli.md), shared by every engine.
#[derive(Debug, Serialize)]
pub struct EvalJson<'a> {
    pub engine: &'a str,
    pub verdicts: Vec<VerdictJson>,
    pub delivered: u64,
    pub pending: u64,
}

#[derive(Debug, Serialize)]
pub struct VerdictJson {
    pub index: usize,
    pub start: u64,
    pub end: u64,
    pub action: &'static str,
    pub reason: String,
    pub rule: Option<String>,
}

impl Outcome {
    pub fn to_json<'a>(&self, engine: &'a str) -> EvalJson<'a> {
        EvalJson {
            engine,
            verdicts: self
                .verdicts
                .iter()
                .map(|v| VerdictJson {
                    index: v.index,
                    start: v.start,
                    end: v.end,
                    action: v.action.name(),
                    reason: v.reason.name(),
                    rule: v.rule.clone(),
                })
                .collect(),
            delivered: self.delivered,
            pending: self.pending,
        }
    }
}
