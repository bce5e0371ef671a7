//! The kernel engine of `l7c eval --engine kernel`: a compiled policy run
//! in the running kernel over a real loopback TCP connection, its verdicts
//! read back as the reference evaluator reports them.
//!
//! [`evaluate`] loads the object, attaches it to the ABI's socket map
//! (`abi::maps::SOCKETS`), turns on every-verdict events
//! (`abi::config::EVENTS_ALL`), binds the redirect targets asked for at the
//! slots `.l7.meta` names, sends the input cut as `split` says, and builds
//! an [`Outcome`] from what happened:
//! - verdicts from the ring buffer's [`abi::Event`] records, named with the
//!   rule names of [`Meta`], their spans completed by `abi::span_rules`
//!   ([`decode_events`]);
//! - `delivered`: the bytes the peer received;
//! - `pending`: the bytes `send()` accepted that reached neither the peer
//!   nor a redirect target, and 0 after an enforced deny.
//!
//! [`KernelEngine`] keeps one program loaded for many connections (the
//! differential tests run thousands of streams through one load).
//!
//! Invariants: the engine never invents a verdict; every verdict comes from
//! one `VERDICT` record, in the order the program wrote them. What it adds
//! is only what `abi::span_rules` says the program cannot know (where the
//! input ends). Redirected bytes are checked against the redirect verdicts:
//! bytes that arrive where no verdict sent them are an error, not a result.

use std::net::SocketAddr;
use std::time::Duration;

use l7c_abi::{self as abi, event_flags, record, Event, Meta};
use l7c_abi::verdict::{Answer, Outcome, Reason, Verdict};
use l7c_abi::verdict::{ConnectionInfo, ServerAnswers, VerdictAction};

use crate::errno::Errno;
use crate::error::KernelError;
use crate::harness::{self, Endpoints, KernelRun, RunSpec, DEFAULT_TIMEOUT};
use crate::loader::{KernelProgram, LoadOptions};

/// Loads `object`, runs one connection over `input` and unloads: the
/// kernel engine's answer for one stream (see the module docs).
pub fn evaluate(
    object: &[u8],
    meta: &Meta,
    connection: ConnectionInfo,
    bound: &[String],
    input: &[u8],
    split: &[usize],
) -> Result<KernelReport, KernelError> {
    KernelEngine::load(object, meta)?.run_report(connection, bound, input, split)
}

/// A compiled policy loaded once and run over any number of connections.
#[derive(Debug)]
pub struct KernelEngine {
    program: KernelProgram,
    meta: Meta,
    timeout: Duration,
    /// What the loopback server answers (cli.md `--answers`).
    answers: ServerAnswers,
}

impl KernelEngine {
    /// Loads `object` and prepares it for runs: attached to
    /// `abi::maps::SOCKETS`, with every verdict reported as an event.
    pub fn load(object: &[u8], meta: &Meta) -> Result<KernelEngine, KernelError> {
        if meta.abi != Meta::ABI_VERSION {
            return Err(KernelError::BadObject {
                reason: format!(
                    "its `.l7.meta` has ABI version {}, this runtime reads version {}",
                    meta.abi,
                    Meta::ABI_VERSION
                ),
            });
        }
        let program = KernelProgram::load(
            object,
            &LoadOptions {
                program: None,
                attach_map: Some(abi::maps::SOCKETS),
            },
        )?;
        program.write_array(abi::maps::CONFIG, 0, &abi::config::EVENTS_ALL.to_ne_bytes())?;
        // The receive side: the server's answers decide switches and deny
        // answers (language.md §6), as under `l7c run`. Every compiled
        // object has its record map; a hand-made test object may not.
        if program.maps().iter().any(|map| map.name == abi::maps::PEERS) {
            program.attach_receive_verdict()?;
        }
        Ok(KernelEngine {
            program,
            meta: meta.clone(),
            timeout: DEFAULT_TIMEOUT,
            answers: ServerAnswers::default(),
        })
    }

    /// The bound on each wait of a run (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// What the loopback server answers to the requests of later runs
    /// (cli.md `--answers`; default: every request 200, every switch
    /// agreed to).
    pub fn set_answers(&mut self, answers: ServerAnswers) {
        self.answers = answers;
    }

    /// The verifier's processed-instruction count, if the kernel says.
    pub fn verified_instruction_count(&self) -> Option<u32> {
        self.program.verified_instruction_count()
    }

    /// The loaded program (for counters and maps).
    pub fn program(&self) -> &KernelProgram {
        &self.program
    }

    /// Runs one fresh connection with `connection`'s addresses over
    /// `input`, cut into `send()` calls as `split` says; `bound` names the
    /// redirect targets to bind (names the policy never uses are ignored,
    /// as the reference engine ignores them).
    pub fn run(
        &mut self,
        connection: ConnectionInfo,
        bound: &[String],
        input: &[u8],
        split: &[usize],
    ) -> Result<Outcome, KernelError> {
        self.run_report(connection, bound, input, split).map(|report| report.outcome)
    }

    /// Like [`KernelEngine::run`], with what the kernel could not do as
    /// the reference says ([`KernelReport`]).
    pub fn run_report(
        &mut self,
        connection: ConnectionInfo,
        bound: &[String],
        input: &[u8],
        split: &[usize],
    ) -> Result<KernelReport, KernelError> {
        let bindings: Vec<(&str, u32)> = self
            .meta
            .redirect_slots
            .iter()
            .filter(|(name, _)| bound.contains(name))
            .map(|(name, slot)| (name.as_str(), *slot))
            .collect();
        // Audit mode reads which slots are bound from the config map (a
        // redirect there must not act, so it cannot ask the helper).
        let bound_slots = bindings.iter().filter(|(_, slot)| *slot < 32).fold(0u32, |bits, (_, slot)| bits | 1 << slot);
        self.program.write_array(abi::maps::CONFIG, abi::config::BOUND_SLOTS, &bound_slots.to_ne_bytes())?;
        let spec = RunSpec {
            input,
            split,
            redirect_map: (!bindings.is_empty()).then_some(abi::maps::REDIRECTS),
            bindings: &bindings,
            events_map: Some(abi::maps::EVENTS),
            timeout: self.timeout,
            endpoints: endpoints(connection)?,
            answers: Some(&self.answers),
        };
        let run = harness::run(&mut self.program, &spec)?;
        report(&run, &self.meta, input)
    }
}

/// A kernel run's outcome, and the one documented way it can differ from
/// the reference engine's (docs/kernel-mechanics.md, "Redirects and held
/// messages"): the kernel frees the bytes after a redirected request when
/// the message was held by a cork, so the program closes the connection
/// after that verdict. `held_tail` is the index of that redirect verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelReport {
    pub outcome: Outcome,
    pub held_tail: Option<usize>,
}

impl KernelReport {
    /// Whether this outcome differs from the reference's `reference` only
    /// in the documented way: the same verdicts up to and including the
    /// redirect at `held_tail` (which the reference also redirects), none
    /// after it, and no more bytes delivered than the reference delivers.
    pub fn is_documented_held_tail(&self, reference: &Outcome) -> bool {
        let Some(cut) = self.held_tail else { return false };
        let kernel = &self.outcome;
        // The cut request's span ends where the kernel cut it (a chunked
        // body's end is never seen), at most where the reference ends it.
        let same_cut_verdict = match (reference.verdicts.get(cut), kernel.verdicts.get(cut)) {
            (Some(theirs), Some(ours)) => {
                theirs.action == VerdictAction::Redirect && ours.end <= theirs.end && Verdict { end: theirs.end, ..ours.clone() } == *theirs
            }
            _ => false,
        };
        same_cut_verdict
            && kernel.verdicts.len() == cut + 1
            && reference.verdicts.get(..cut) == kernel.verdicts.get(..cut)
            && kernel.delivered <= reference.delivered
    }

    /// What to tell a person when `held_tail` is set.
    pub fn held_tail_note(&self) -> Option<String> {
        self.held_tail.map(|cut| {
            format!(
                "request {cut} was redirected from a message the kernel held (its head came in pieces) with more bytes after it; \
                 the kernel frees those bytes with the held message, so the program closed the connection after this verdict \
                 (a kernel limitation: docs/kernel-mechanics.md, \"Redirects and held messages\")"
            )
        })
    }
}

/// The harness's endpoints for a connection: both ends must have a port
/// (the reference engine judges the ports it is given; an ephemeral one
/// would differ).
pub fn endpoints(connection: ConnectionInfo) -> Result<Endpoints, KernelError> {
    for (which, port) in [("remote", connection.remote_port), ("local", connection.local_port)] {
        if port == 0 {
            return Err(KernelError::Unsupported {
                what: format!("a connection with {which} port 0"),
                help: "give the port the policy should see (`--remote-port`, `--local-port`)".to_owned(),
            });
        }
    }
    Ok(Endpoints {
        remote: Some(SocketAddr::new(connection.remote_addr, connection.remote_port)),
        local: Some(SocketAddr::new(connection.local_addr, connection.local_port)),
    })
}

/// The outcome of a run of `input`: verdicts from its events, what the
/// peer got, what is held. Fails when the redirected bytes are not the
/// redirect verdicts' bytes, or when a `send()` failed other than as a
/// drop does.
pub fn outcome(run: &KernelRun, meta: &Meta, input: &[u8]) -> Result<Outcome, KernelError> {
    report(run, meta, input).map(|report| report.outcome)
}

/// [`outcome`] with the documented kernel limitation it may show.
pub fn report(run: &KernelRun, meta: &Meta, input: &[u8]) -> Result<KernelReport, KernelError> {
    let input_len = input.len() as u64;
    let reported = decode_events(&run.events, meta, input_len)?;
    let mut accepted = 0u64;
    for (number, sent) in run.sends.iter().enumerate() {
        match sent {
            Ok(count) => accepted += *count as u64,
            // The program dropped the message (`SK_DROP`, sticky).
            Err(Errno::EACCES) => {}
            Err(errno) => {
                return Err(KernelError::Syscall {
                    step: format!("send() number {} of the input", number + 1),
                    errno: *errno,
                    help: "a policed send fails only with EACCES (a drop); anything else is the connection's fault".to_owned(),
                })
            }
        }
    }
    check_redirected(&reported, run, input)?;
    let delivered = run.delivered.len() as u64;
    let redirected: u64 = run.redirected.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    let enforced_deny = reported.iter().any(ReportedVerdict::is_enforced_deny);
    let pending = if enforced_deny {
        0
    } else {
        accepted.saturating_sub(delivered + redirected)
    };
    let held_tail = reported.iter().position(|r| r.flags & event_flags::HELD_TAIL != 0);
    let mut reported = reported;
    answer_denies(&mut reported, run)?;
    Ok(KernelReport {
        outcome: Outcome {
            verdicts: reported.into_iter().map(|r| r.verdict).collect(),
            delivered,
            pending,
        },
        held_tail,
    })
}

/// Every enforced deny's answer (language.md §6, cli.md): the one the
/// program answered (`ANSWERED`) is what the client read after the peer's
/// answers; every other one was not answered (`reset`). Fails when the
/// client read an answer no verdict gave, or none where one was given.
fn answer_denies(reported: &mut [ReportedVerdict], run: &KernelRun) -> Result<(), KernelError> {
    let answer = run.client_read.get(run.peer_answered..).unwrap_or_default();
    let mut used = false;
    for r in reported.iter_mut().filter(|r| r.is_enforced_deny()) {
        r.verdict.answer = Some(if r.flags & event_flags::ANSWERED != 0 {
            let status = answer_status_line(answer).ok_or_else(|| KernelError::BadEvent {
                reason: format!(
                    "the program answered deny {} but the client read {} bytes that are not an HTTP status line: {:?}",
                    r.verdict.index,
                    answer.len(),
                    String::from_utf8_lossy(answer.get(..answer.len().min(64)).unwrap_or_default())
                ),
            })?;
            used = true;
            Answer::Status { status, bytes: answer.len() as u64 }
        } else {
            Answer::Reset
        });
    }
    if !used && !answer.is_empty() {
        return Err(KernelError::BadEvent {
            reason: format!("the client read {} bytes after the peer's answers, but no deny was answered", answer.len()),
        });
    }
    Ok(())
}

/// The status of `HTTP/1.1 DDD ...`.
fn answer_status_line(bytes: &[u8]) -> Option<u16> {
    let digits = bytes.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A verdict with the flags its event carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedVerdict {
    pub verdict: Verdict,
    pub flags: u8,
}

impl ReportedVerdict {
    fn audit(&self) -> bool {
        self.flags & event_flags::AUDIT != 0
    }

    fn is_enforced_deny(&self) -> bool {
        self.verdict.action == VerdictAction::Deny && !self.audit()
    }
}

/// Reads the ring buffer's records (oldest first) into verdicts, in the
/// order they were given, with rule names from `meta` and spans completed
/// by `abi::span_rules` for an input of `input_len` bytes.
pub fn decode_events(records: &[Vec<u8>], meta: &Meta, input_len: u64) -> Result<Vec<ReportedVerdict>, KernelError> {
    let mut reported: Vec<ReportedVerdict> = Vec::new();
    // Per verdict: whether a SPAN_END record gave its end.
    let mut span_ended: Vec<bool> = Vec::new();
    for (number, bytes) in records.iter().enumerate() {
        let bad = |reason: String| KernelError::BadEvent {
            reason: format!("record {number}: {reason}"),
        };
        let event = Event::from_bytes(bytes)
            .ok_or_else(|| bad(format!("{} bytes, an event has {}", bytes.len(), Event::SIZE)))?;
        let index = usize::try_from(event.index).map_err(|_| bad("request index too large".to_owned()))?;
        match event.record {
            record::VERDICT => {
                reported.push(ReportedVerdict {
                    verdict: verdict_of(&event, index, meta).map_err(bad)?,
                    flags: event.flags,
                });
                span_ended.push(false);
            }
            record::SPAN_END => {
                // The latest verdict on that request (a bad chunk's own
                // verdict follows the request it cut).
                let position = reported
                    .iter()
                    .rposition(|r| r.verdict.index == index)
                    .ok_or_else(|| bad(format!("the end of request {index}'s span, which has no verdict")))?;
                if let (Some(target), Some(ended)) = (reported.get_mut(position), span_ended.get_mut(position)) {
                    target.verdict.end = event.end;
                    *ended = true;
                }
            }
            other => return Err(bad(format!("unknown record kind {other}"))),
        }
    }
    for (reported, ended) in reported.iter_mut().zip(span_ended) {
        complete_span(reported, ended, input_len);
    }
    Ok(reported)
}

/// One VERDICT record as a verdict (span as reported).
fn verdict_of(event: &Event, index: usize, meta: &Meta) -> Result<Verdict, String> {
    if event.reason_class == abi::internal::CLASS {
        let name = abi::internal::NAMES.get(usize::from(event.reason_kind)).copied().unwrap_or("unknown");
        return Err(format!(
            "the program denied request {index} with internal:{name}: a helper failed, so the kernel could not judge those bytes (fail closed)"
        ));
    }
    let action = abi::action_from_code(event.action).ok_or_else(|| format!("unknown action code {}", event.action))?;
    let reason = abi::reason_from_code(event.reason_class, event.reason_kind)
        .ok_or_else(|| format!("unknown reason code ({}, {})", event.reason_class, event.reason_kind))?;
    let rule = if event.rule == abi::NO_RULE {
        None
    } else {
        let policy = meta
            .policies
            .get(usize::from(event.policy))
            .ok_or_else(|| format!("policy {} (`.l7.meta` has {})", event.policy, meta.policies.len()))?;
        let name = usize::try_from(event.rule)
            .ok()
            .and_then(|rule| policy.rules.get(rule))
            .ok_or_else(|| format!("rule {} of policy `{}` (it has {})", event.rule, policy.name, policy.rules.len()))?;
        Some(name.clone())
    };
    Ok(Verdict {
        index,
        start: event.start,
        end: event.end,
        action,
        reason,
        rule,
        answer: None,
    })
}

/// `abi::span_rules`: what only the end of the input tells.
fn complete_span(reported: &mut ReportedVerdict, span_ended: bool, input_len: u64) {
    let audit = reported.audit();
    let verdict = &mut reported.verdict;
    let chunked = reported.flags & event_flags::CHUNKED != 0;
    // A chunked body never ended: it was cut off by the end of the input
    // (or, for a held-tail redirect, by the kernel at the reported end).
    let held_tail = reported.flags & event_flags::HELD_TAIL != 0;
    if chunked && !span_ended && !held_tail {
        verdict.end = input_len;
    }
    // An enforced deny takes the rest of the connection, and a tunnel
    // spans everything after it (language.md §1, revision 3).
    if (verdict.action == VerdictAction::Deny && !audit) || (verdict.action == VerdictAction::Tunnel && !span_ended) {
        verdict.end = input_len;
    }
    // In audit mode a would-be malformed, limit or opaque deny loses the
    // framing: the rest of the input is its span.
    if audit && matches!(verdict.reason, Reason::Malformed(_) | Reason::Limit(_) | Reason::Opaque | Reason::Http2) {
        verdict.end = input_len;
    }
    // In audit mode, bytes sent before a switch's answer (a would-be `deny
    // tunnel` whose end the program could not know) lose the framing too.
    if audit && verdict.reason == Reason::Tunnel && verdict.end <= verdict.start {
        verdict.end = input_len;
    }
    // Connection-start verdicts cover the whole input.
    if matches!(verdict.reason, Reason::Opaque | Reason::Http2) {
        verdict.start = 0;
        verdict.end = input_len;
    }
}

/// Redirected bytes must be exactly the enforced redirect verdicts' bytes:
/// each target's bytes are whole redirected spans, in stream order, and
/// together they are all of them.
fn check_redirected(reported: &[ReportedVerdict], run: &KernelRun, input: &[u8]) -> Result<(), KernelError> {
    let spans: Vec<&[u8]> = reported
        .iter()
        .filter(|r| r.verdict.action == VerdictAction::Redirect && !r.audit())
        .map(|r| span_bytes(input, &r.verdict))
        .collect();
    let expected: usize = spans.iter().map(|s| s.len()).sum();
    let got: usize = run.redirected.iter().map(|(_, bytes)| bytes.len()).sum();
    let misdelivered = |what: String| KernelError::Misrouted { what };
    if expected != got {
        return Err(misdelivered(format!(
            "the redirect verdicts cover {expected} bytes but the targets received {got}"
        )));
    }
    for (name, bytes) in &run.redirected {
        let mut cursor = 0usize;
        for span in &spans {
            if !span.is_empty() && bytes.get(cursor..).is_some_and(|rest| rest.starts_with(span)) {
                cursor += span.len();
            }
        }
        if cursor != bytes.len() {
            return Err(misdelivered(format!(
                "target `{name}` received {} bytes that are not whole redirected requests",
                bytes.len() - cursor
            )));
        }
    }
    Ok(())
}

/// The input bytes of a verdict's span (clipped to the input).
fn span_bytes<'a>(input: &'a [u8], verdict: &Verdict) -> &'a [u8] {
    let clip = |offset: u64| usize::try_from(offset).unwrap_or(usize::MAX).min(input.len());
    let start = clip(verdict.start);
    let end = clip(verdict.end).max(start);
    input.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7c_abi::MetaPolicy;
    use l7c_abi::http::{LimitKind, MalformedKind};

    fn meta(audit: bool) -> Meta {
        Meta {
            abi: Meta::ABI_VERSION,
            policies: vec![MetaPolicy {
                name: "payments".into(),
                rules: vec!["read".into(), "admin".into()],
                audit,
                header_bytes: 8192,
                headers: 100,
            }],
            redirect_slots: vec![("envoy".into(), 0)],
            source_hash: "0".into(),
            governed_ports: None,
        }
    }

    fn event(index: u32, start: u64, end: u64, action: VerdictAction, reason: Reason, rule: Option<u32>) -> Event {
        let (reason_class, reason_kind) = abi::reason_code(reason);
        Event {
            start,
            end,
            index,
            rule: rule.unwrap_or(abi::NO_RULE),
            action: abi::action_code(action),
            reason_class,
            reason_kind,
            record: record::VERDICT,
            ..Event::default()
        }
    }

    fn span_end(index: u32, end: u64) -> Event {
        Event {
            index,
            end,
            record: record::SPAN_END,
            ..Event::default()
        }
    }

    fn flagged(mut event: Event, flags: u8) -> Event {
        event.flags = flags;
        event
    }

    #[test]
    fn an_internal_denial_is_an_error_that_names_the_helper() {
        let mut denied = event(1, 30, 0, VerdictAction::Deny, Reason::Default, None);
        denied.reason_class = abi::internal::CLASS;
        denied.reason_kind = abi::internal::PULL_DATA;
        let records = vec![event(0, 0, 30, VerdictAction::Allow, Reason::Rule, Some(0)).to_bytes().to_vec(), denied.to_bytes().to_vec()];
        let error = decode_events(&records, &meta(false), 60).unwrap_err().to_string();
        assert!(error.contains("internal:pull-data") && error.contains("request 1"), "{error}");
    }

    #[test]
    fn a_held_tail_cut_is_recognised_only_in_its_documented_shape() {
        let redirect = |end| Verdict { index: 0, start: 0, end, action: VerdictAction::Redirect, reason: Reason::Rule, rule: Some("grpc".into()), answer: None };
        let deny = Verdict { index: 1, start: 40, end: 90, action: VerdictAction::Deny, reason: Reason::Default, rule: None, answer: None };
        let reference = Outcome { verdicts: vec![redirect(40), deny.clone()], delivered: 0, pending: 0 };
        let cut = |verdicts: Vec<Verdict>, held_tail| KernelReport { outcome: Outcome { verdicts, delivered: 0, pending: 9 }, held_tail };
        assert!(cut(vec![redirect(40)], Some(0)).is_documented_held_tail(&reference));
        assert!(cut(vec![redirect(35)], Some(0)).is_documented_held_tail(&reference), "a chunked request's span ends where it was cut");
        assert!(!cut(vec![redirect(45)], Some(0)).is_documented_held_tail(&reference), "never past the reference's end");
        assert!(!cut(vec![redirect(40)], None).is_documented_held_tail(&reference), "only when the program says so");
        assert!(!cut(vec![redirect(40), deny], Some(0)).is_documented_held_tail(&reference), "nothing after the cut");
        let allowed = Outcome { verdicts: vec![Verdict { action: VerdictAction::Allow, ..redirect(40) }], ..reference.clone() };
        assert!(!cut(vec![redirect(40)], Some(0)).is_documented_held_tail(&allowed), "the reference must redirect too");
    }

    fn decode(events: &[Event], meta: &Meta, input_len: u64) -> Result<Vec<Verdict>, KernelError> {
        let records: Vec<Vec<u8>> = events.iter().map(|e| e.to_bytes().to_vec()).collect();
        Ok(decode_events(&records, meta, input_len)?.into_iter().map(|r| r.verdict).collect())
    }

    fn verdict(index: usize, start: u64, end: u64, action: VerdictAction, reason: Reason, rule: Option<&str>) -> Verdict {
        Verdict { index, start, end, action, reason, rule: rule.map(String::from), answer: None }
    }

    #[test]
    fn verdicts_take_rule_names_from_meta_and_keep_reported_spans() {
        let events = [
            event(0, 0, 43, VerdictAction::Allow, Reason::Rule, Some(0)),
            // A Content-Length body still being sent: the end lies past the input.
            event(1, 43, 200, VerdictAction::Allow, Reason::Default, None),
        ];
        assert_eq!(
            decode(&events, &meta(false), 90).unwrap(),
            vec![
                verdict(0, 0, 43, VerdictAction::Allow, Reason::Rule, Some("read")),
                verdict(1, 43, 200, VerdictAction::Allow, Reason::Default, None),
            ]
        );
    }

    #[test]
    fn an_enforced_deny_ends_at_the_end_of_the_input_an_audit_one_does_not() {
        let deny = event(0, 0, 40, VerdictAction::Deny, Reason::Rule, Some(1));
        let got = decode(&[deny], &meta(false), 90).unwrap();
        assert_eq!(got, vec![verdict(0, 0, 90, VerdictAction::Deny, Reason::Rule, Some("admin"))]);
        let got = decode(&[flagged(deny, event_flags::AUDIT | event_flags::LOGGED)], &meta(true), 90).unwrap();
        assert_eq!(got, vec![verdict(0, 0, 40, VerdictAction::Deny, Reason::Rule, Some("admin"))]);
        // `deny tunnel` and `deny redirect-unbound` keep their rule.
        let unbound = event(0, 0, 40, VerdictAction::Deny, Reason::RedirectUnbound, Some(0));
        let got = decode(&[unbound], &meta(false), 50).unwrap();
        assert_eq!(got, vec![verdict(0, 0, 50, VerdictAction::Deny, Reason::RedirectUnbound, Some("read"))]);
    }

    #[test]
    fn opaque_verdicts_span_the_whole_input() {
        for action in [VerdictAction::Deny, VerdictAction::Tunnel] {
            let got = decode(&[event(0, 0, 0, action, Reason::Opaque, None)], &meta(false), 24).unwrap();
            assert_eq!(got, vec![verdict(0, 0, 24, action, Reason::Opaque, None)]);
        }
        let audit_opaque = flagged(event(0, 0, 0, VerdictAction::Deny, Reason::Opaque, None), event_flags::AUDIT);
        assert_eq!(decode(&[audit_opaque], &meta(true), 24).unwrap()[0].end, 24);
    }

    #[test]
    fn audit_would_be_framing_denies_end_at_the_end_of_the_input() {
        let malformed = Reason::Malformed(MalformedKind::ALL[0]);
        let limit = Reason::Limit(LimitKind::ALL[0]);
        let events = [
            flagged(event(0, 0, 30, VerdictAction::Allow, Reason::Rule, Some(0)), event_flags::AUDIT),
            flagged(event(1, 30, 45, VerdictAction::Deny, malformed, None), event_flags::AUDIT),
        ];
        let got = decode(&events, &meta(true), 100).unwrap();
        assert_eq!(got[0].end, 30, "an audited allow keeps its span");
        assert_eq!(got[1].end, 100);
        let got = decode(&[flagged(event(0, 0, 30, VerdictAction::Deny, limit, None), event_flags::AUDIT)], &meta(true), 70).unwrap();
        assert_eq!(got[0].end, 70);
        // A rule's deny in audit mode keeps its own request's span.
        let got = decode(&[flagged(event(0, 0, 30, VerdictAction::Deny, Reason::Default, None), event_flags::AUDIT)], &meta(true), 70).unwrap();
        assert_eq!(got[0].end, 30);
    }

    #[test]
    fn chunked_spans_end_at_their_span_end_record_or_the_end_of_the_input() {
        let chunked = flagged(event(0, 0, 60, VerdictAction::Allow, Reason::Rule, Some(0)), event_flags::CHUNKED);
        // Finished body: the SPAN_END record gives the end.
        let got = decode(&[chunked, span_end(0, 75), event(1, 75, 100, VerdictAction::Allow, Reason::Default, None)], &meta(false), 100).unwrap();
        assert_eq!(got[0].end, 75);
        assert_eq!(got[1].start, 75);
        // Cut off by the end of the input: no SPAN_END, the input's end.
        let got = decode(&[chunked], &meta(false), 68).unwrap();
        assert_eq!(got[0].end, 68);
        // Cut by a bad chunk: the request ends at the offending byte, where
        // the malformed:chunk deny starts (and, enforced, takes the rest).
        let bad_chunk = event(1, 66, 66, VerdictAction::Deny, Reason::Malformed(MalformedKind::Chunk), None);
        let got = decode(&[chunked, span_end(0, 66), bad_chunk], &meta(false), 90).unwrap();
        assert_eq!(
            got,
            vec![
                verdict(0, 0, 66, VerdictAction::Allow, Reason::Rule, Some("read")),
                verdict(1, 66, 90, VerdictAction::Deny, Reason::Malformed(MalformedKind::Chunk), None),
            ]
        );
    }

    #[test]
    fn unreadable_records_are_errors_that_say_why() {
        let too_short = vec![vec![0u8; 40]];
        let error = decode_events(&too_short, &meta(false), 10).unwrap_err();
        assert!(matches!(error, KernelError::BadEvent { .. }) && error.to_string().contains("40 bytes"), "{error}");
        let no_such_rule = event(0, 0, 10, VerdictAction::Allow, Reason::Rule, Some(7));
        let error = decode(&[no_such_rule], &meta(false), 10).unwrap_err();
        assert!(error.to_string().contains("rule 7 of policy `payments`"), "{error}");
        let mut bad_action = event(0, 0, 10, VerdictAction::Allow, Reason::Default, None);
        bad_action.action = 9;
        assert!(decode(&[bad_action], &meta(false), 10).unwrap_err().to_string().contains("action code 9"));
        let orphan_end = span_end(3, 10);
        assert!(decode(&[orphan_end], &meta(false), 10).unwrap_err().to_string().contains("request 3"));
        let mut unknown = span_end(0, 1);
        unknown.record = 7;
        assert!(decode(&[unknown], &meta(false), 10).is_err());
    }

    fn run_with(events: &[Event], sends: Vec<Result<usize, Errno>>, delivered: &[u8], redirected: Vec<(String, Vec<u8>)>) -> KernelRun {
        KernelRun {
            sends,
            delivered: delivered.to_vec(),
            redirected,
            events: events.iter().map(|e| e.to_bytes().to_vec()).collect(),
            client_read: Vec::new(),
            peer_answered: 0,
        }
    }

    #[test]
    fn pending_is_what_was_accepted_and_not_received_and_zero_after_a_deny() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HT";
        // The first request passed; the second head is held.
        let allow = event(0, 0, 27, VerdictAction::Allow, Reason::Rule, Some(0));
        let run = run_with(&[allow], vec![Ok(input.len())], &input[..27], vec![]);
        let got = outcome(&run, &meta(false), input).unwrap();
        assert_eq!((got.delivered, got.pending), (27, input.len() as u64 - 27));
        // An enforced deny: the held bytes go with the connection.
        let deny = event(1, 27, 40, VerdictAction::Deny, Reason::Default, None);
        let run = run_with(&[allow, deny], vec![Ok(27), Err(Errno::EACCES)], &input[..27], vec![]);
        let got = outcome(&run, &meta(false), input).unwrap();
        assert_eq!((got.delivered, got.pending), (27, 0));
        assert_eq!(got.verdicts[1].end, input.len() as u64);
        // A send failing other than by a drop is the connection's fault.
        let run = run_with(&[], vec![Err(Errno::EPERM)], b"", vec![]);
        assert!(outcome(&run, &meta(false), input).is_err());
    }

    #[test]
    fn redirected_bytes_must_be_the_redirect_verdicts_bytes() {
        let input = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let redirect = event(0, 0, 19, VerdictAction::Redirect, Reason::Rule, Some(0));
        let allow = event(1, 19, 38, VerdictAction::Allow, Reason::Default, None);
        let good = run_with(&[redirect, allow], vec![Ok(38)], &input[19..], vec![("envoy".into(), input[..19].to_vec())]);
        let got = outcome(&good, &meta(false), input).unwrap();
        assert_eq!((got.delivered, got.pending), (19, 0));
        // The rest of the message followed the redirect: not what the verdicts say.
        let sticky = run_with(&[redirect, allow], vec![Ok(38)], b"", vec![("envoy".into(), input.to_vec())]);
        assert!(outcome(&sticky, &meta(false), input).is_err());
        // Bytes at a target with no redirect verdict.
        let stray = run_with(&[allow], vec![Ok(38)], &input[..19], vec![("envoy".into(), input[19..].to_vec())]);
        assert!(outcome(&stray, &meta(false), input).is_err());
        // An audit-mode redirect is reported, its bytes go to the peer.
        let audited = flagged(redirect, event_flags::AUDIT);
        let run = run_with(&[audited], vec![Ok(38)], input, vec![("envoy".into(), vec![])]);
        assert_eq!(outcome(&run, &meta(true), input).unwrap().delivered, 38);
    }

    #[test]
    fn connections_need_ports() {
        let connection = ConnectionInfo::default();
        let ends = endpoints(connection).unwrap();
        assert_eq!(ends.remote, Some(SocketAddr::new(connection.remote_addr, 80)));
        assert!(endpoints(ConnectionInfo { remote_port: 0, ..connection }).is_err());
    }
}
