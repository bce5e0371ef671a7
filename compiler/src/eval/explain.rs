//! `l7c explain`: the reference evaluator's reasoning on one stream, as
//! plain text (no colours), for a person reading why a request got its
//! verdict.
//!
//! Invariant: the trace is written by the very code that decides (the
//! [`Session`] with a trace switched on), so it cannot drift from the
//! verdicts it explains.

use super::{Outcome, Session};
use crate::model::{ConnectionInfo, Program};
use std::fmt::Write as _;

/// Explain how `input` fares on a connection with these addresses and bound
/// redirect targets: for each request its request line, the canonical path
/// step by step, each rule tried with each condition and why it held or
/// failed, and the verdict; then the list of verdicts, each deny with how
/// it is answered. The stream is one `send()`, and the server answers as in
/// `l7c test` (every request `200`, every switch agreed to).
pub fn explain(program: &Program, connection: ConnectionInfo, bound: &[String], input: &[u8]) -> String {
    let mut session = Session::with_trace(program, connection, bound);
    session.feed(input);
    let policy = session.policy();
    let (outcome, trace) = session.finish_traced();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "connection: remote {}:{}, local {}:{}",
        connection.remote_addr, connection.remote_port, connection.local_addr, connection.local_port
    );
    match policy {
        None => {
            let _ = writeln!(out, "no policy's scope selects this connection: it is not governed, every byte passes");
        }
        Some(policy) => {
            let default = match policy.default {
                Some(crate::model::DefaultVerdict::Allow) => "allow",
                Some(crate::model::DefaultVerdict::Deny) | None => "deny",
            };
            let mode = match policy.mode {
                crate::model::Mode::Enforce => "enforce",
                crate::model::Mode::Audit => "audit",
            };
            let opaque = match policy.opaque {
                crate::model::OpaqueVerdict::Allow => "allow",
                crate::model::OpaqueVerdict::Deny => "deny",
            };
            let _ = writeln!(
                out,
                "policy {:?}: default {default}, mode {mode}, opaque {opaque}, header_bytes {}, headers {}",
                policy.name, policy.limits.header_bytes, policy.limits.headers
            );
        }
    }
    if let Some(trace) = trace {
        out.push('\n');
        out.push_str(&trace);
    }
    out.push('\n');
    write_verdicts(&mut out, &outcome);
    out
}

fn write_verdicts(out: &mut String, outcome: &Outcome) {
    let _ = writeln!(out, "verdicts:");
    if outcome.verdicts.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for verdict in &outcome.verdicts {
        let answer = match verdict.answer {
            None => String::new(),
            Some(super::Answer::Status { status, bytes }) => format!(", answered {status} ({bytes} bytes)"),
            Some(super::Answer::Reset) => ", not answered (reset)".to_string(),
        };
        let _ = writeln!(
            out,
            "  {}: {} {} [bytes {}..{}){answer}",
            verdict.index,
            verdict.action.name(),
            describe_reason(&verdict.reason, verdict.rule.as_deref()),
            verdict.start,
            verdict.end
        );
    }
    if outcome.pending > 0 {
        let _ = writeln!(out, "  pending: {} bytes of an incomplete head are held", outcome.pending);
    }
    let _ = writeln!(out, "delivered {} bytes, pending {} bytes", outcome.delivered, outcome.pending);
}

/// `rule "read"`, `default`, `tunnel (rule "ws")`, `malformed:host`.
pub(crate) fn describe_reason(reason: &super::Reason, rule: Option<&str>) -> String {
    match (reason, rule) {
        (super::Reason::Rule, Some(name)) => format!("rule {name:?}"),
        (reason, Some(name)) => format!("{} (rule {name:?})", reason.name()),
        (reason, None) => reason.name(),
    }
}
