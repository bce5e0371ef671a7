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
    /// How a deny in enforce mode was answered (language.md §6); `None`
    /// for every other verdict (audit-mode denies included: nothing is
    /// answered in a dry run).
    pub answer: Option<Answer>,
}

/// How a deny was answered to the client (language.md §6, `deny_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The client reads an HTTP response made by the engine: this status,
    /// `bytes` long in all ([`answer_bytes`]).
    Status { status: u16, bytes: u64 },
    /// No answer: the client's `send()` fails with `EACCES` (`deny_with
    /// reset`, reasons that are never answered, or a deny the engine could
    /// not answer without overtaking the server's answer).
    Reset,
}

/// A policy's `deny_with` setting (language.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyWith {
    /// Answer rule, default and tunnel denies with this 4xx or 5xx status.
    Status(u16),
    /// Answer nothing.
    Reset,
}

impl Default for DenyWith {
    fn default() -> Self {
        DenyWith::Status(403)
    }
}

/// The status a deny with `reason` is answered with under `deny_with`, or
/// `None` when it is never answered (language.md §6): rule, default and
/// tunnel denies take `deny_with`'s status, `malformed:*` 400 (but
/// `malformed:chunk` none: the server has the head), `limit:*` 431,
/// `redirect-unbound` 503, `opaque` and `http2` none; `deny_with reset`
/// answers nothing.
pub fn answer_status(reason: Reason, deny_with: DenyWith) -> Option<u16> {
    let DenyWith::Status(status) = deny_with else { return None };
    match reason {
        Reason::Rule | Reason::Default | Reason::Tunnel => Some(status),
        Reason::Malformed(MalformedKind::Chunk) => None,
        Reason::Malformed(_) => Some(400),
        Reason::Limit(_) => Some(431),
        Reason::RedirectUnbound => Some(503),
        Reason::Opaque | Reason::Http2 => None,
    }
}

/// The value of the answer's `L7c-Deny` field (and its body line): the
/// verdict's reason, a rule's as `rule="NAME"`. A byte of the name that
/// is not visible ASCII or space, and `"`, `\` and `%`, are written
/// `%XX`, so no name can end the field or add one.
pub fn answer_reason(reason: Reason, rule: Option<&str>) -> String {
    match (reason, rule) {
        (Reason::Rule, Some(name)) => {
            let mut out = String::from("rule=\"");
            for &byte in name.as_bytes() {
                match byte {
                    b'"' | b'\\' | b'%' => out.push_str(&format!("%{byte:02X}")),
                    0x20..=0x7e => out.push(char::from(byte)),
                    _ => out.push_str(&format!("%{byte:02X}")),
                }
            }
            out.push('"');
            out
        }
        _ => reason.name(),
    }
}

/// The response a denied client reads (language.md §6): the status line,
/// `Content-Type: text/plain`, `Content-Length`, `Connection: close`,
/// `L7c-Deny: REASON`, a blank line, then the body: the same
/// `L7c-Deny: REASON` line, CRLF-ended.
pub fn answer_bytes(status: u16, reason: Reason, rule: Option<&str>) -> Vec<u8> {
    let line = format!("L7c-Deny: {}", answer_reason(reason, rule));
    let body = format!("{line}\r\n");
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{line}\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

/// The reason phrase of an answer's status line: the RFC 9110 phrase of a
/// registered 4xx or 5xx status, empty for others (which RFC 9112 allows).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// The server's answers to the requests it receives (cli.md `--answers`,
/// language.md §6): they decide switches and whether a deny can be
/// answered. Request `k` is the k-th request delivered to the server
/// (0-based; a redirected request goes elsewhere and is not counted). Its
/// answer arrives after the `send()` that carries its last byte, and the
/// client reads it before its next `send()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerAnswers {
    /// No list given: every request is answered `200`, every switch is
    /// agreed to (`101`; `200` for CONNECT).
    #[default]
    Agreeing,
    /// The status of each request in order; a request beyond the list is
    /// never answered.
    Listed(Vec<u16>),
}

/// What kind of request an answer is for: it decides what consent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Plain,
    /// A request with an `Upgrade` field: `101` is consent.
    Upgrade,
    /// A CONNECT request: any `2xx` is consent.
    Connect,
}

impl ServerAnswers {
    /// The server's status for request `k` of `kind`, or `None` if it never
    /// answers it.
    pub fn status(&self, k: usize, kind: RequestKind) -> Option<u16> {
        match self {
            ServerAnswers::Agreeing => Some(match kind {
                RequestKind::Upgrade => 101,
                RequestKind::Plain | RequestKind::Connect => 200,
            }),
            ServerAnswers::Listed(list) => list.get(k).copied(),
        }
    }

    /// Whether `status` to a request of `kind` agrees to the switch.
    pub fn consents(kind: RequestKind, status: u16) -> bool {
        match kind {
            RequestKind::Upgrade => status == 101,
            RequestKind::Connect => (200..300).contains(&status),
            RequestKind::Plain => false,
        }
    }
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
    /// cli.md: `{"status":403,"bytes":N}` for an answered deny, `null` for
    /// one that fell back to `reset`; absent for other verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Option<AnswerJson>>,
    /// `"reset"` when `answer` is `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct AnswerJson {
    pub status: u16,
    pub bytes: u64,
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
                    answer: v.answer.map(|answer| match answer {
                        Answer::Status { status, bytes } => Some(AnswerJson { status, bytes }),
                        Answer::Reset => None,
                    }),
                    fallback: matches!(v.answer, Some(Answer::Reset)).then_some("reset"),
                })
                .collect(),
            delivered: self.delivered,
            pending: self.pending,
        }
    }
}
