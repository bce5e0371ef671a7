//! Prometheus text for `l7c run --metrics ADDR`: the verdict counters of
//! `l7_counters` named by `.l7.meta`, and the runtime's own figures; plus
//! the tiny HTTP server that serves them (std `TcpListener`, one thread).
//!
//! Counters only go up: when a reloaded-away policy generation is freed,
//! its last reading is carried over ([`Counters::add`]), so a series never
//! decreases while `l7c run` lives.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use l7c_abi::{self as abi, Counter, Meta};
use l7c_abi::verdict::Reason;
use l7c_abi::http::{LimitKind, MalformedKind};

use crate::error::KernelError;
use crate::events::json_string;
use crate::loader::KernelProgram;

/// Every reason a counter is kept for, in slot order.
pub fn all_reasons() -> Vec<Reason> {
    let mut reasons = vec![
        Reason::Rule,
        Reason::Default,
        Reason::Opaque,
        Reason::Tunnel,
        Reason::RedirectUnbound,
        Reason::Http2,
    ];
    reasons.extend(MalformedKind::ALL.map(Reason::Malformed));
    reasons.extend(LimitKind::ALL.map(Reason::Limit));
    reasons.sort_by_key(|reason| abi::reason_slot(*reason));
    reasons
}

/// Verdict counts by (policy, rule) and (policy, reason).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rules: BTreeMap<(String, String), u64>,
    pub reasons: BTreeMap<(String, String), u64>,
}

impl Counters {
    /// Reads `l7_counters` of `program` and names its slots with `meta`
    /// (layout: `abi::counter_index`).
    pub fn read(program: &KernelProgram, meta: &Meta) -> Result<Counters, KernelError> {
        let values = program.counters(abi::maps::COUNTERS)?;
        Ok(Counters::from_values(&values, meta))
    }

    /// Names `values` (one per counter slot) with `meta`; slots past the
    /// end count 0.
    pub fn from_values(values: &[u64], meta: &Meta) -> Counters {
        let mut counters = Counters::default();
        let value = |index: usize| values.get(index).copied().unwrap_or(0);
        let mut rules_before = 0;
        for (policy_index, policy) in meta.policies.iter().enumerate() {
            for reason in all_reasons() {
                let index = abi::counter_index(policy_index, rules_before, Counter::Reason(reason));
                *counters
                    .reasons
                    .entry((policy.name.clone(), reason.name()))
                    .or_default() += value(index);
            }
            // The program's own failures (a helper failed: fail closed),
            // in the last reason slots (`abi::internal`).
            let base = abi::counter_index(policy_index, rules_before, Counter::Reason(Reason::Rule))
                - abi::reason_slot(Reason::Rule);
            for (kind, name) in abi::internal::NAMES.iter().enumerate() {
                let slot = abi::internal::slot(u8::try_from(kind).unwrap_or(u8::MAX));
                *counters
                    .reasons
                    .entry((policy.name.clone(), format!("internal:{name}")))
                    .or_default() += value(base + slot);
            }
            for (rule_index, rule) in policy.rules.iter().enumerate() {
                let index = abi::counter_index(policy_index, rules_before, Counter::Rule(rule_index));
                *counters
                    .rules
                    .entry((policy.name.clone(), rule.clone()))
                    .or_default() += value(index);
            }
            rules_before += policy.rules.len();
        }
        counters
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counters) {
        for (key, count) in &other.rules {
            *self.rules.entry(key.clone()).or_default() += count;
        }
        for (key, count) in &other.reasons {
            *self.reasons.entry(key.clone()).or_default() += count;
        }
    }
}

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Counters,
    /// Connections in the enrollment maps of every loaded generation now.
    pub connections_enrolled: usize,
    pub events_written: u64,
    /// Records that were read but could not be reported (unreadable, or
    /// the `--events` sink failed).
    pub events_dropped: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Redirect targets that closed, and the tries to connect them again.
    pub redirect_targets: crate::run::Reconnects,
    /// Policy generations loaded (the current one and those kept for
    /// connections enrolled before a reload).
    pub generations: usize,
    /// The bound on them (`--max-generations`).
    pub generations_max: usize,
    /// Kernel memory their maps hold (bytes).
    pub generations_memlock: u64,
    /// `.l7.meta`'s `source_hash` of the current policy.
    pub source_hash: String,
    /// What the kernel does with kTLS (probed when `l7c run` started).
    pub ktls: crate::probe::KtlsState,
    /// The enrollment gate: capacity, use and refusals (docs/runtime.md,
    /// "Capacity").
    pub gate: GateFigures,
    /// The cgroup's directory exists (the policy is attached to it).
    pub cgroup_present: bool,
    /// Times the cgroup was created again and the policy re-attached.
    pub cgroup_reattached: u64,
    /// The cgroup's connections established before the policy was (not
    /// enrolled, not judged), at the last look.
    pub connections_unpoliced: usize,
}

/// The gate's figures for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateFigures {
    /// `--capacity`: governed connections one generation may hold.
    pub capacity: u64,
    /// Units held in the current generation now.
    pub used: u64,
    /// `connect()` calls refused because the capacity was used up, over
    /// every generation.
    pub refused_full: u64,
    /// `connect()` calls refused because the stream socket was not TCP.
    pub refused_protocol: u64,
    /// Governed connections that could not be enrolled (each unpoliced).
    pub unenrolled: u64,
    /// Events the program could not write (the ring buffer was full).
    pub events_lost: u64,
}

/// The Prometheus text exposition (format 0.0.4) of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    family(
        "l7c_rule_verdicts_total",
        "counter",
        "Verdicts decided by each rule.",
    );
    let mut body = String::new();
    for ((policy, rule), count) in &snapshot.counters.rules {
        body.push_str(&format!(
            "l7c_rule_verdicts_total{{policy={},rule={}}} {count}\n",
            label(policy),
            label(rule)
        ));
    }
    out.push_str(&body);
    out.push_str("# HELP l7c_reason_verdicts_total Verdicts by reason (rule, default, malformed:KIND, limit:KIND, opaque, tunnel, redirect-unbound; internal:KIND when a helper failed and the program denied, failing closed).\n# TYPE l7c_reason_verdicts_total counter\n");
    for ((policy, reason), count) in &snapshot.counters.reasons {
        out.push_str(&format!(
            "l7c_reason_verdicts_total{{policy={},reason={}}} {count}\n",
            label(policy),
            label(reason)
        ));
    }
    let scalars: [(&str, &str, &str, String); 9] = [
        (
            "l7c_connections_enrolled",
            "gauge",
            "TCP connections enrolled now (in the socket maps of every loaded policy generation).",
            snapshot.connections_enrolled.to_string(),
        ),
        (
            "l7c_events_total",
            "counter",
            "Verdict events written to --events.",
            snapshot.events_written.to_string(),
        ),
        (
            "l7c_events_dropped_total",
            "counter",
            "Verdict events read from the ring buffer but not written (unreadable or the sink failed).",
            snapshot.events_dropped.to_string(),
        ),
        (
            "l7c_redirect_targets_lost_total",
            "counter",
            "Redirect target connections that closed (their redirects deny until connected again).",
            snapshot.redirect_targets.lost.to_string(),
        ),
        (
            "l7c_redirect_reconnects_total",
            "counter",
            "Redirect targets connected again after they closed.",
            snapshot.redirect_targets.done.to_string(),
        ),
        (
            "l7c_redirect_reconnect_failures_total",
            "counter",
            "Tries to connect a closed redirect target again that failed (retried with backoff up to 30 s).",
            snapshot.redirect_targets.failed.to_string(),
        ),
        (
            "l7c_policy_generations",
            "gauge",
            "Policy generations loaded: the current one and older ones kept for their connections.",
            snapshot.generations.to_string(),
        ),
        (
            "l7c_policy_generations_max",
            "gauge",
            "The bound on policy generations (--max-generations); a reload beyond it is rejected.",
            snapshot.generations_max.to_string(),
        ),
        (
            "l7c_policy_generations_memlock_bytes",
            "gauge",
            "Kernel memory the maps of every loaded generation hold.",
            snapshot.generations_memlock.to_string(),
        ),
    ];
    let gate: [(&str, &str, &str, String); 7] = [
        (
            "l7c_events_lost_total",
            "counter",
            "Events the kernel program could not write because the ring buffer was full (counted in the kernel, also while no agent ran).",
            snapshot.gate.events_lost.to_string(),
        ),
        (
            "l7c_connections_unpoliced",
            "gauge",
            "Governed connections of the cgroup established before the policy was: not enrolled, their bytes are not judged (l7c run --existing reset ends them).",
            snapshot.connections_unpoliced.to_string(),
        ),
        (
            "l7c_cgroup_present",
            "gauge",
            "1 while the cgroup's directory exists and the policy is attached to it; 0 after it was removed (nothing to enforce until it is created again).",
            u8::from(snapshot.cgroup_present).to_string(),
        ),
        (
            "l7c_cgroup_reattached_total",
            "counter",
            "Times the cgroup was removed and created again (as systemd does on a unit restart) and the policy attached to the new one.",
            snapshot.cgroup_reattached.to_string(),
        ),
        (
            "l7c_capacity_connections",
            "gauge",
            "Governed connections one policy generation may police at once (--capacity); a governed connect() beyond it fails with EPERM.",
            snapshot.gate.capacity.to_string(),
        ),
        (
            "l7c_capacity_used_connections",
            "gauge",
            "Governed connections holding capacity in the current generation now (opening or open).",
            snapshot.gate.used.to_string(),
        ),
        (
            "l7c_connections_unenrolled_total",
            "counter",
            "Governed connections the kernel could not enroll despite the gate: each one is unpoliced (an error; should stay 0).",
            snapshot.gate.unenrolled.to_string(),
        ),
    ];
    for (name, kind, help, value) in scalars.into_iter().chain(gate) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
    }
    out.push_str("# HELP l7c_connections_refused_total Governed connect() calls refused with EPERM: capacity (the generation's capacity was used up) or protocol (a stream socket that is not TCP, e.g. MPTCP).\n# TYPE l7c_connections_refused_total counter\n");
    out.push_str(&format!(
        "l7c_connections_refused_total{{reason=\"capacity\"}} {}\nl7c_connections_refused_total{{reason=\"protocol\"}} {}\n",
        snapshot.gate.refused_full, snapshot.gate.refused_protocol
    ));
    out.push_str("# HELP l7c_reloads_total Policy reloads, applied or rejected (the running policy stays).\n# TYPE l7c_reloads_total counter\n");
    out.push_str(&format!(
        "l7c_reloads_total{{result=\"applied\"}} {}\nl7c_reloads_total{{result=\"rejected\"}} {}\n",
        snapshot.reloads_applied, snapshot.reloads_rejected
    ));
    out.push_str("# HELP l7c_ktls_info kTLS on this kernel (available/unavailable), on enrolled sockets (allowed/refused/untested), and TCP_ULP in the governed cgroup (refused by l7c run's guard).\n# TYPE l7c_ktls_info gauge\n");
    out.push_str(&format!(
        "l7c_ktls_info{{kernel={},enrolled={},tcp_ulp=\"refused\"}} 1\n",
        label(snapshot.ktls.kernel),
        label(snapshot.ktls.enrolled)
    ));
    out.push_str("# HELP l7c_policy_info The policy in force for new connections.\n# TYPE l7c_policy_info gauge\n");
    out.push_str(&format!(
        "l7c_policy_info{{source_hash={}}} 1\n",
        label(&snapshot.source_hash)
    ));
    out
}

/// A label value: Prometheus escapes `\`, `"` and newline like JSON does.
fn label(value: &str) -> String {
    json_string(value)
}

/// The text `/metrics` serves, updated by the run loop.
pub type Shared = Arc<Mutex<String>>;

/// Binds `addr` and serves `shared` on `GET /metrics` from a thread until
/// the process exits. Returns the bound address (port 0 picks one).
pub fn serve(addr: SocketAddr, shared: Shared) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("l7c-metrics".to_owned())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // A slow or silent scraper must not hold the server.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(buffer.get(..n).unwrap_or_default()),
                    }
                }
                let request_line = String::from_utf8_lossy(&head);
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" || path == "/" {
                    let text = shared.lock().map(|t| t.clone()).unwrap_or_default();
                    ("200 OK", text)
                } else {
                    ("404 Not Found", "not found: scrape /metrics\n".to_owned())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7c_abi::MetaPolicy;

    fn meta() -> Meta {
        let policy = |name: &str, rules: &[&str]| MetaPolicy {
            name: name.into(),
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
            audit: false,
            header_bytes: 8192,
            headers: 100,
        };
        Meta {
            abi: Meta::ABI_VERSION,
            policies: vec![policy("a", &["r0", "r1"]), policy("b", &["s0"])],
            redirect_slots: Vec::new(),
            source_hash: "abc".into(),
            governed_ports: None,
        }
    }

    #[test]
    fn counters_are_named_by_the_abi_layout() {
        let meta = meta();
        let slots = 2 * abi::REASON_SLOTS + 3;
        let mut values = vec![0u64; slots];
        let rule_b0 = abi::counter_index(1, 2, Counter::Rule(0));
        let default_a = abi::counter_index(0, 0, Counter::Reason(Reason::Default));
        let cl_te = abi::counter_index(1, 2, Counter::Reason(Reason::Malformed(MalformedKind::ALL[0])));
        values[rule_b0] = 7;
        values[default_a] = 3;
        values[cl_te] = 1;
        let counters = Counters::from_values(&values, &meta);
        assert_eq!(counters.rules[&("b".into(), "s0".into())], 7);
        assert_eq!(counters.rules[&("a".into(), "r0".into())], 0);
        assert_eq!(counters.reasons[&("a".into(), "default".into())], 3);
        let name = Reason::Malformed(MalformedKind::ALL[0]).name();
        assert_eq!(counters.reasons[&("b".into(), name)], 1);
        assert_eq!(counters.reasons.len(), 2 * abi::REASON_SLOTS, "every reason slot is named once");
        values[abi::counter_index(1, 2, Counter::Reason(Reason::Rule)) - abi::reason_slot(Reason::Rule)
            + abi::internal::slot(abi::internal::PULL_DATA)] = 4;
        let counters = Counters::from_values(&values, &meta);
        assert_eq!(counters.reasons[&("b".into(), "internal:pull-data".into())], 4);
        assert_eq!(counters.rules.values().sum::<u64>(), 7);

        let mut total = counters.clone();
        total.add(&counters);
        assert_eq!(total.rules[&("b".into(), "s0".into())], 14);
    }

    #[test]
    fn the_text_follows_the_exposition_format() {
        let meta = meta();
        let snapshot = Snapshot {
            counters: Counters::from_values(&[], &meta),
            connections_enrolled: 2,
            source_hash: "abc".into(),
            ktls: crate::probe::KtlsState { kernel: "available", enrolled: "refused", detail: "EINVAL".into() },
            ..Snapshot::default()
        };
        let text = render(&snapshot);
        assert!(text.contains("l7c_rule_verdicts_total{policy=\"a\",rule=\"r1\"} 0\n"));
        assert!(text.contains("l7c_reason_verdicts_total{policy=\"b\",reason=\"default\"} 0\n"));
        assert!(text.contains("# TYPE l7c_connections_enrolled gauge\nl7c_connections_enrolled 2\n"));
        assert!(text.contains("l7c_reloads_total{result=\"rejected\"} 0\n"));
        assert!(text.contains("l7c_ktls_info{kernel=\"available\",enrolled=\"refused\",tcp_ulp=\"refused\"} 1\n"), "{text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
        }
    }
}
