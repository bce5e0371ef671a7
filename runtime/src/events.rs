//! Verdict events as `l7c run --events` writes them: one JSON object per
//! line, from the program's `abi::Event` records and `.l7.meta`.
//!
//! ```json
//! {"kind":"verdict","time":"2026-11-24T15:40:01.123456789Z","policy":"site","rule":"list-users",
//!  "action":"allow","reason":"rule","audit":false,"logged":true,"chunked":false,"held_tail":false,
//!  "answered":false,"fallback":false,
//!  "index":0,"start":0,"end":43,
//!  "bytes":43,"local":"127.0.0.1:40000","remote":"127.0.0.1:8080","local_port":40000,
//!  "remote_port":8080,"pid":4242,"cgroup_id":8123,"cgroup":"/sys/fs/cgroup/unified/app"}
//! ```
//!
//! `answered`: a deny the program answered over HTTP (language.md §6);
//! `fallback`: a deny whose reason is answered but that got a reset (the
//! server still owed an answer, or the message could not be rewritten).
//!
//! What the kernel gives and what it does not (docs/runtime.md): the record
//! carries the ports; the addresses come from the enrolled socket's key in
//! `l7_sockets` while the connection is still open when the runtime polls,
//! or else from `/proc/net/tcp{,6}` while the kernel still lists the socket
//! (`null` otherwise); `pid` and `cgroup_id` are the sending process's
//! (`bpf_get_current_pid_tgid`, `bpf_get_current_cgroup_id` in the verdict
//! run: the process in whose `send()` the verdict was given); `cgroup` is
//! the `--cgroup` directory the connection was enrolled through (every
//! enrolled process is in it or below it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use l7c_abi::{self as abi, event_flags, record, Event, Meta};


/// The remote and local ports of a connection as an event names them
/// (`remote_port` raw as the context gives it, `local_port` host order).
pub type PortPair = (u32, u32);

/// Reads a 44-byte `l7_sock_key` back into (local, remote) addresses.
pub fn parse_key(key: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    l7c_abi::sock_key::decode(key)
}

/// The raw (remote port, local port) words of a key, as events carry them.
pub fn key_ports(key: &[u8]) -> Option<PortPair> {
    l7c_abi::sock_key::ports(key)
}

/// The remote port of an event in host order (the record keeps the
/// context's `[0, 0, hi, lo]` bytes).
pub fn remote_port(raw: u32) -> u16 {
    l7c_abi::sock_key::remote_port(raw)
}

/// TCP sockets of this network namespace by (local port, remote port),
/// from `/proc/net/tcp` and `/proc/net/tcp6`: the addresses of a
/// connection that left `l7_sockets` before the runtime read its key (it
/// closed; the kernel lists it in `TIME_WAIT` or `FIN_WAIT` for a while).
/// A port pair seen with two different address pairs is left out rather
/// than guessed.
pub fn proc_net_tcp() -> std::collections::HashMap<(u16, u16), (SocketAddr, SocketAddr)> {
    let mut found = std::collections::HashMap::new();
    let mut ambiguous = std::collections::HashSet::new();
    for entry in tcp_sockets() {
        let (local, remote) = (entry.local, entry.remote);
        let ports = (local.port(), remote.port());
        match found.insert(ports, (local, remote)) {
            Some(previous) if previous != (local, remote) => {
                ambiguous.insert(ports);
            }
            _ => {}
        }
    }
    for ports in ambiguous {
        found.remove(&ports);
    }
    found
}

/// One line of `/proc/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `enum tcp_state` (1: established).
    pub state: u8,
    /// The socket's inode (what `/proc/PID/fd/N` links to as `socket:[N]`).
    pub inode: u64,
}

/// Every TCP socket of this network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let mut sockets = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            // sl local remote st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) = (
                fields.get(1).and_then(|f| proc_net_addr(f)),
                fields.get(2).and_then(|f| proc_net_addr(f)),
                fields.get(3).and_then(|f| u8::from_str_radix(f, 16).ok()),
                fields.get(9).and_then(|f| f.parse().ok()),
            ) else {
                continue;
            };
            sockets.push(TcpSocket { local, remote, state, inode });
        }
    }
    sockets
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word of the address as the kernel holds it (network order), printed as
/// a native-endian number.
fn proc_net_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// What the formatter needs besides the record.
pub struct Context<'a> {
    pub meta: &'a Meta,
    /// The connection's (local, remote) addresses, if still known.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    pub cgroup: &'a str,
    /// `CLOCK_MONOTONIC` now and the wall clock now, to place the
    /// record's `bpf_ktime_get_ns()` in time.
    pub monotonic_now: Duration,
    pub wall_now: SystemTime,
}

/// One JSON line (without the newline) for a record; `None` for a record
/// this runtime cannot read (counted as dropped by the caller).
pub fn json_line(bytes: &[u8], context: &Context<'_>) -> Option<String> {
    let event = Event::from_bytes(bytes)?;
    let time = context
        .wall_now
        .checked_sub(context.monotonic_now.saturating_sub(Duration::from_nanos(event.time_ns)))
        .unwrap_or(context.wall_now);
    let address = |pick: fn(&(SocketAddr, SocketAddr)) -> SocketAddr| {
        context
            .addresses
            .as_ref()
            .map_or("null".to_owned(), |pair| json_string(&pick(pair).to_string()))
    };
    let common = format!(
        "\"time\":{},\"index\":{},\"local\":{},\"remote\":{},\"local_port\":{},\"remote_port\":{},\"pid\":{},\"cgroup_id\":{},\"cgroup\":{}",
        json_string(&rfc3339(time)),
        event.index,
        address(|pair| pair.0),
        address(|pair| pair.1),
        event.local_port,
        remote_port(event.remote_port),
        match event.pid_tgid >> 32 {
            0 => "null".to_owned(),
            pid => pid.to_string(),
        },
        match event.cgroup_id {
            0 => "null".to_owned(),
            id => id.to_string(),
        },
        json_string(context.cgroup),
    );
    if event.record == record::SPAN_END {
        return Some(format!("{{\"kind\":\"span_end\",{common},\"end\":{}}}", event.end));
    }
    if event.record != record::VERDICT {
        return None;
    }
    let policy = context.meta.policies.get(usize::from(event.policy))?;
    let rule = if event.rule == abi::NO_RULE {
        "null".to_owned()
    } else {
        json_string(policy.rules.get(usize::try_from(event.rule).ok()?)?)
    };
    let action = abi::action_from_code(event.action)?;
    let reason = if event.reason_class == abi::internal::CLASS {
        format!("internal:{}", abi::internal::NAMES.get(usize::from(event.reason_kind))?)
    } else {
        abi::reason_from_code(event.reason_class, event.reason_kind)?.name()
    };
    let chunked = event.flags & event_flags::CHUNKED != 0;
    // A request ends after its first byte: an end at or before the start
    // is one the program could not know (a head over a limit or malformed
    // before it ended, an opaque or HTTP/2 stream), and is said as such.
    let end_known = event.end > event.start;
    let end_field = if end_known { event.end.to_string() } else { "null".to_owned() };
    let bytes_field = if chunked || !end_known {
        "null".to_owned()
    } else {
        event.end.saturating_sub(event.start).to_string()
    };
    Some(format!(
        "{{\"kind\":\"verdict\",{common},\"policy\":{},\"rule\":{rule},\"action\":{},\"reason\":{},\"audit\":{},\"logged\":{},\"chunked\":{chunked},\"held_tail\":{},\"answered\":{},\"fallback\":{},\"start\":{},\"end\":{end_field},\"bytes\":{bytes_field}}}",
        json_string(&policy.name),
        json_string(action.name()),
        json_string(&reason),
        event.flags & event_flags::AUDIT != 0,
        event.flags & event_flags::LOGGED != 0,
        event.flags & event_flags::HELD_TAIL != 0,
        event.flags & event_flags::ANSWERED != 0,
        event.flags & event_flags::FALLBACK_RESET != 0,
        event.start,
    ))
}

/// `CLOCK_MONOTONIC` now (what `bpf_ktime_get_ns` counts).
pub fn monotonic_now() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SockKey;
    use l7c_abi::MetaPolicy;
    use l7c_abi::verdict::Reason;
    use l7c_abi::verdict::VerdictAction;

    fn meta() -> Meta {
        Meta {
            abi: Meta::ABI_VERSION,
            policies: vec![MetaPolicy {
                name: "site".into(),
                rules: vec!["list-users".into(), "no-admin".into()],
                audit: false,
                header_bytes: 8192,
                headers: 100,
            }],
            redirect_slots: Vec::new(),
            source_hash: "0".into(),
            governed_ports: None,
        }
    }

    #[test]
    fn keys_read_back_as_user_space_builds_them() {
        for (local, remote) in [("127.0.0.1:40000", "127.0.0.2:80"), ("[::1]:5", "[fe80::2]:443")] {
            let key = SockKey::new(local.parse().unwrap(), remote.parse().unwrap());
            assert_eq!(parse_key(&key.to_bytes()), Some((key.local, key.remote)));
        }
    }

    #[test]
    fn a_verdict_becomes_one_json_line() {
        let key = SockKey::new("127.0.0.1:40000".parse().unwrap(), "127.0.0.1:18080".parse().unwrap());
        let (remote_raw, local) = key_ports(&key.to_bytes()).unwrap();
        let (class, kind) = abi::reason_code(Reason::Rule);
        let event = Event {
            time_ns: 5_000_000_000,
            start: 0,
            end: 43,
            index: 0,
            rule: 1,
            policy: 0,
            action: abi::action_code(VerdictAction::Deny),
            reason_class: class,
            reason_kind: kind,
            flags: event_flags::LOGGED,
            record: record::VERDICT,
            _pad: 0,
            remote_port: remote_raw,
            local_port: local,
            pid_tgid: 4242 << 32 | 4243,
            cgroup_id: 8123,
        };
        let meta = meta();
        let context = Context {
            meta: &meta,
            addresses: Some((key.local, key.remote)),
            cgroup: "/sys/fs/cgroup/unified/app",
            monotonic_now: Duration::from_secs(6),
            wall_now: UNIX_EPOCH + Duration::from_secs(1_000_000_001),
        };
        let line = json_line(&event.to_bytes(), &context).unwrap();
        assert_eq!(
            line,
            "{\"kind\":\"verdict\",\"time\":\"2001-09-09T01:46:40.000000000Z\",\"index\":0,\
             \"local\":\"127.0.0.1:40000\",\"remote\":\"127.0.0.1:18080\",\"local_port\":40000,\"remote_port\":18080,\
             \"pid\":4242,\"cgroup_id\":8123,\"cgroup\":\"/sys/fs/cgroup/unified/app\",\"policy\":\"site\",\"rule\":\"no-admin\",\
             \"action\":\"deny\",\"reason\":\"rule\",\"audit\":false,\"logged\":true,\"chunked\":false,\
             \"held_tail\":false,\"answered\":false,\"fallback\":false,\"start\":0,\"end\":43,\"bytes\":43}"
        );
        // A deny answered over HTTP, and one that fell back to a reset.
        let answered = Event { flags: event_flags::LOGGED | event_flags::ANSWERED, ..event };
        let line = json_line(&answered.to_bytes(), &context).unwrap();
        assert!(line.contains("\"answered\":true,\"fallback\":false,"), "{line}");
        let fallback = Event { flags: event_flags::LOGGED | event_flags::FALLBACK_RESET, ..event };
        let line = json_line(&fallback.to_bytes(), &context).unwrap();
        assert!(line.contains("\"answered\":false,\"fallback\":true,"), "{line}");
        // A head over a limit, refused before it ended: the program does
        // not know where the request ends, and the line says so.
        let (class, kind) = abi::reason_code(Reason::Limit(l7c_abi::http::LimitKind::HeaderBytes));
        let limit = Event { start: 32, end: 0, rule: abi::NO_RULE, reason_class: class, reason_kind: kind, ..event };
        let line = json_line(&limit.to_bytes(), &context).unwrap();
        assert!(line.ends_with("\"start\":32,\"end\":null,\"bytes\":null}"), "{line}");
        // A helper failure is reported under its internal reason.
        let internal = Event { reason_class: abi::internal::CLASS, reason_kind: abi::internal::PULL_DATA, ..event };
        let line = json_line(&internal.to_bytes(), &context).unwrap();
        assert!(line.contains("\"reason\":\"internal:pull-data\""), "{line}");
        // A record naming a rule the meta lacks is unreadable.
        let bad = Event { rule: 7, ..event };
        assert_eq!(json_line(&bad.to_bytes(), &context), None);
    }

    #[test]
    fn proc_net_addresses_read_back() {
        // 127.0.0.1:8080 as x86-64 prints it.
        if cfg!(target_endian = "little") {
            assert_eq!(proc_net_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
            assert_eq!(
                proc_net_addr("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
        assert_eq!(proc_net_addr("zz:1"), None);
        // A socket of our own is listed with its addresses.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap();
        let remote = client.peer_addr().unwrap();
        assert_eq!(proc_net_tcp().get(&(local.port(), remote.port())), Some(&(local, remote)));
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(json_string("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
    }
}
