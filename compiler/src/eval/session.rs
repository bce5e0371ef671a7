//! One client connection seen by the reference evaluator.
//!
//! Invariants:
//! - Every byte is consumed exactly once, in order, and its fate (delivered,
//!   redirected, refused, or held while its head is incomplete) depends only
//!   on the bytes before it and itself, never on where `send()` cut the
//!   stream: that is what makes verdicts split-independent.
//! - Memory is bounded by the policy: a head is held in a buffer of at most
//!   `header_bytes + 1` bytes, and bodies are counted, never stored.
//! - After a deny in enforce mode nothing more is delivered and no verdict
//!   follows; after a tunnel, or a would-be malformed/limit/opaque deny in
//!   audit mode, every byte passes and no verdict follows.

use super::body::{ChunkStep, ChunkedBody};
use super::head::{check_whole_head, Framing, HeadError, HeadScanner, HeadStep, HeadViolation};
use super::path::decode_path;
use super::rules::{first_match, matchable_host, path_form, show, PathForm, Request};
use super::{Outcome, Reason, Verdict};
use crate::http::{connection_start, ConnectionStart};
use crate::model::{Action, ConnectionInfo, DefaultVerdict, Mode, OpaqueVerdict, Policy, Program, VerdictAction};
use std::fmt::Write as _;

/// One connection: feed it the client's bytes in any pieces, then
/// [`Session::finish`] it for the verdicts.
#[derive(Debug)]
pub struct Session<'p> {
    governed: Option<Governed<'p>>,
    /// Bytes consumed so far (bytes held at connection start excluded until
    /// the opaque check decides).
    consumed: u64,
    delivered: u64,
    verdicts: Vec<Verdict>,
    /// Verdicts whose span ends where the input ends.
    ending_at_input_end: Vec<usize>,
}

#[derive(Debug)]
struct Governed<'p> {
    policy: &'p Policy,
    /// Lowercase names read by a value matcher (duplicate-header).
    value_matched: Vec<Vec<u8>>,
    bound: Vec<String>,
    phase: Phase,
    scanner: HeadScanner,
    request_start: u64,
    /// The verdict of a chunked request whose body is still being read.
    open_chunked: Option<usize>,
    path_buffer: Vec<u8>,
    host_buffer: Vec<u8>,
    /// The `l7c explain` trace, when asked for.
    trace: Option<String>,
}

#[derive(Debug)]
enum Phase {
    /// Connection start: these bytes, a proper prefix of a TLS record
    /// header or of the HTTP/2 preface line, are held until
    /// `http::connection_start` can decide.
    Start { held: Vec<u8> },
    Head,
    Body { deliver: bool, body: Body },
    /// Everything passes unparsed: a tunnel, or audit after framing was lost.
    Passing,
    /// Enforce mode after a deny: everything is refused.
    Refused,
}

#[derive(Debug)]
enum Body {
    Length { remaining: u64 },
    Chunked(ChunkedBody),
}

/// What the rules (or the default) decided for one head.
struct Decision<'r> {
    action: VerdictAction,
    reason: Reason,
    rule: Option<&'r str>,
}

impl<'p> Session<'p> {
    /// A connection with these addresses; `bound_targets` are the redirect
    /// targets the runtime has bound. The governing policy is the one whose
    /// scope selects the connection (at most one can, once checked).
    pub fn new(program: &'p Program, connection: ConnectionInfo, bound_targets: &[String]) -> Self {
        let governed = program.policies.iter().find(|policy| policy.scope.selects(&connection)).map(|policy| Governed {
            policy,
            value_matched: policy.value_matched_headers().into_iter().map(String::into_bytes).collect(),
            bound: bound_targets.to_vec(),
            phase: Phase::Start { held: Vec::new() },
            scanner: HeadScanner::new(policy.limits),
            request_start: 0,
            open_chunked: None,
            path_buffer: Vec::new(),
            host_buffer: Vec::new(),
            trace: None,
        });
        Session { governed, consumed: 0, delivered: 0, verdicts: Vec::new(), ending_at_input_end: Vec::new() }
    }

    /// Like [`Session::new`], recording an `l7c explain` trace.
    pub(crate) fn with_trace(program: &'p Program, connection: ConnectionInfo, bound_targets: &[String]) -> Self {
        let mut session = Session::new(program, connection, bound_targets);
        if let Some(governed) = session.governed.as_mut() {
            governed.trace = Some(String::new());
        }
        session
    }

    /// The policy governing this connection, if any.
    pub fn policy(&self) -> Option<&'p Policy> {
        self.governed.as_ref().map(|governed| governed.policy)
    }

    /// The bytes of one `send()`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.governed.is_none() {
            self.consumed += bytes.len() as u64;
            self.delivered += bytes.len() as u64;
            return;
        }
        self.process(bytes);
    }

    /// The input ended: resolve the spans that reach its end and count what
    /// is held.
    pub fn finish(self) -> Outcome {
        self.finish_traced().0
    }

    pub(crate) fn finish_traced(mut self) -> (Outcome, Option<String>) {
        let input_end = self.consumed;
        let mut pending = 0;
        let mut trace = None;
        if let Some(governed) = self.governed.as_mut() {
            pending = match &governed.phase {
                Phase::Start { held } => held.len() as u64,
                Phase::Head => governed.scanner.len() as u64,
                _ => 0,
            };
            if let Some(open) = governed.open_chunked.take() {
                self.ending_at_input_end.push(open);
            }
            trace = governed.trace.take();
        }
        // Held bytes at connection start were not counted as consumed.
        let input_end = match self.governed.as_ref().map(|governed| &governed.phase) {
            Some(Phase::Start { held }) => input_end + held.len() as u64,
            _ => input_end,
        };
        for &index in &self.ending_at_input_end {
            if let Some(verdict) = self.verdicts.get_mut(index) {
                verdict.end = input_end;
            }
        }
        let outcome = Outcome { verdicts: self.verdicts, delivered: self.delivered, pending };
        (outcome, trace)
    }

    fn process(&mut self, mut rest: &[u8]) {
        while let Some(&byte) = rest.first() {
            let Some(governed) = self.governed.as_mut() else { return };
            match &mut governed.phase {
                Phase::Start { held } => {
                    held.push(byte);
                    rest = rest.get(1..).unwrap_or_default();
                    match connection_start(held) {
                        ConnectionStart::Undecided => {}
                        ConnectionStart::Tls => {
                            let held = held.len();
                            self.connection_start_verdict(Reason::Opaque, held);
                        }
                        ConnectionStart::Http2 => {
                            let held = held.len();
                            self.connection_start_verdict(Reason::Http2, held);
                        }
                        ConnectionStart::Request => {
                            // Read what was held as a request.
                            let replay = std::mem::take(held);
                            governed.phase = Phase::Head;
                            self.process(&replay);
                        }
                    }
                }
                Phase::Head => {
                    let (taken, step) = governed.scanner.push_slice(rest);
                    rest = rest.get(taken..).unwrap_or_default();
                    self.consumed += taken as u64;
                    match step {
                        HeadStep::Continue => {}
                        HeadStep::Refused(error) => self.refuse_head(error),
                        HeadStep::Complete => self.decide_head(),
                    }
                }
                Phase::Body { deliver, body } => {
                    let deliver = *deliver;
                    let (taken, finished) = match body {
                        Body::Length { remaining } => {
                            let taken = (*remaining).min(rest.len() as u64);
                            *remaining -= taken;
                            // `taken` <= rest.len(), so it fits in usize.
                            (taken as usize, BodyEnd::from_flag(*remaining == 0))
                        }
                        Body::Chunked(chunked) => match chunked.feed(rest) {
                            ChunkStep::Continue => (rest.len(), BodyEnd::Open),
                            ChunkStep::Done(last) => (last + 1, BodyEnd::Complete),
                            ChunkStep::Refused(offending) => (offending, BodyEnd::Refused),
                        },
                    };
                    rest = rest.get(taken..).unwrap_or_default();
                    self.consumed += taken as u64;
                    if deliver {
                        self.delivered += taken as u64;
                    }
                    match finished {
                        BodyEnd::Open => {}
                        BodyEnd::Complete => {
                            self.close_chunked_span();
                            self.next_request();
                        }
                        BodyEnd::Refused => self.refuse_chunk(),
                    }
                }
                Phase::Passing => {
                    self.consumed += rest.len() as u64;
                    self.delivered += rest.len() as u64;
                    return;
                }
                Phase::Refused => {
                    self.consumed += rest.len() as u64;
                    return;
                }
            }
        }
    }

    /// The connection starts with TLS (`Reason::Opaque`) or the HTTP/2
    /// preface (`Reason::Http2`); `held` bytes were held so far.
    fn connection_start_verdict(&mut self, reason: Reason, held: usize) {
        let Some(governed) = self.governed.as_mut() else { return };
        let policy = governed.policy;
        self.consumed += held as u64;
        let (action, passes) = match (reason, policy.opaque, policy.mode) {
            (Reason::Opaque, OpaqueVerdict::Allow, _) => (VerdictAction::Tunnel, true),
            (_, _, Mode::Audit) => (VerdictAction::Deny, true),
            (_, _, Mode::Enforce) => (VerdictAction::Deny, false),
        };
        if let Some(trace) = governed.trace.as_mut() {
            let what = if reason == Reason::Opaque { "a TLS record header" } else { "the HTTP/2 preface" };
            let _ = writeln!(trace, "connection start: {what}: {} {}", action.name(), reason.name());
        }
        if passes {
            self.delivered += held as u64;
            governed.phase = Phase::Passing;
        } else {
            governed.phase = Phase::Refused;
        }
        let index = self.push_verdict(action, reason, None, 0, 0);
        self.ending_at_input_end.push(index);
    }

    fn refuse_head(&mut self, error: HeadError) {
        let Some(governed) = self.governed.as_mut() else { return };
        let reason = match error.violation {
            HeadViolation::Malformed(kind) => Reason::Malformed(kind),
            HeadViolation::Limit(kind) => Reason::Limit(kind),
        };
        let start = governed.request_start;
        if let Some(trace) = governed.trace.as_mut() {
            let request = self.verdicts.len();
            let _ = writeln!(trace, "\nrequest {request} at byte {start}");
            let _ = writeln!(
                trace,
                "  head refused: {} at byte {}",
                reason.name(),
                start + error.offset as u64
            );
        }
        match governed.policy.mode {
            Mode::Enforce => governed.phase = Phase::Refused,
            Mode::Audit => {
                // Framing is lost: the held head and the rest pass.
                self.delivered += governed.scanner.len() as u64;
                governed.phase = Phase::Passing;
            }
        }
        let index = self.push_verdict(VerdictAction::Deny, reason, None, start, 0);
        self.ending_at_input_end.push(index);
    }

    fn decide_head(&mut self) {
        let Some(governed) = self.governed.as_mut() else { return };
        let policy = governed.policy;
        let head = governed.scanner.view();
        let facts = match check_whole_head(&head, &governed.value_matched, policy.get_body) {
            Ok(facts) => facts,
            Err(kind) => {
                let offset = governed.scanner.len().saturating_sub(1);
                self.refuse_head(HeadError { violation: HeadViolation::Malformed(kind), offset });
                return;
            }
        };
        let path = match path_form(&head) {
            PathForm::Decoded => {
                decode_path(head.raw_path(), &mut governed.path_buffer);
                Some(governed.path_buffer.as_slice())
            }
            PathForm::Asterisk => Some(&b"*"[..]),
            PathForm::None => None,
        };
        let host = matchable_host(&head, &mut governed.host_buffer).then_some(governed.host_buffer.as_slice());
        let request = Request { head, path, host };
        let request_index = self.verdicts.len();
        if let Some(trace) = governed.trace.as_mut() {
            trace_request(trace, request_index, governed.request_start, &request);
        }
        let rule = first_match(&policy.rules, &request, governed.trace.as_mut());
        let decision = decide(policy, rule.map(|rule| (rule.name.as_str(), &rule.action)), facts.switches_protocols, &governed.bound);

        let head_len = governed.scanner.len() as u64;
        let start = governed.request_start;
        let head_end = start + head_len;
        let audit = policy.mode == Mode::Audit;
        let body = match facts.framing {
            Framing::None => None,
            Framing::Length(length) => Some(Body::Length { remaining: length }),
            Framing::Chunked => Some(Body::Chunked(ChunkedBody::new(policy.limits))),
        };
        let declared_end = match facts.framing {
            Framing::Length(length) => head_end + length,
            Framing::None | Framing::Chunked => head_end,
        };
        if let Some(trace) = governed.trace.as_mut() {
            let reason = super::explain::describe_reason(&decision.reason, decision.rule);
            let audit_text = if audit { " [audit: reported, bytes pass]" } else { "" };
            let _ = writeln!(trace, "  verdict: {} {reason}{audit_text}", decision.action.name());
        }
        match (decision.action, audit) {
            (VerdictAction::Deny, false) => {
                governed.phase = Phase::Refused;
                let index = self.push_verdict(decision.action, decision.reason, decision.rule, start, 0);
                self.ending_at_input_end.push(index);
            }
            (VerdictAction::Tunnel, _) => {
                // The switch happens after this request: the rest passes,
                // and the verdict spans it (language.md §1, revision 3:
                // its body included, chunked or not).
                self.delivered += head_len;
                governed.phase = Phase::Passing;
                let index = self.push_verdict(decision.action, decision.reason, decision.rule, start, 0);
                self.ending_at_input_end.push(index);
            }
            (action, _) => {
                // Allow, redirect, or an audit-mode would-be deny.
                let deliver = audit || action == VerdictAction::Allow;
                if deliver {
                    self.delivered += head_len;
                }
                let chunked = matches!(body, Some(Body::Chunked(_)));
                let index = self.push_verdict(action, decision.reason, decision.rule, start, declared_end);
                let Some(governed) = self.governed.as_mut() else { return };
                match body {
                    Some(body) => {
                        if chunked {
                            governed.open_chunked = Some(index);
                        }
                        governed.phase = Phase::Body { deliver, body };
                    }
                    None => self.next_request(),
                }
            }
        }
    }

    fn close_chunked_span(&mut self) {
        let consumed = self.consumed;
        let Some(governed) = self.governed.as_mut() else { return };
        if let Some(index) = governed.open_chunked.take() {
            if let Some(verdict) = self.verdicts.get_mut(index) {
                verdict.end = consumed;
            }
        }
    }

    /// A bad chunked body: the byte at `consumed` is the offending one.
    fn refuse_chunk(&mut self) {
        // The request's own span ends where its body broke.
        self.close_chunked_span();
        let start = self.consumed;
        let Some(governed) = self.governed.as_mut() else { return };
        if let Some(trace) = governed.trace.as_mut() {
            let _ = writeln!(trace, "chunked body refused at byte {start}: deny malformed:chunk");
        }
        governed.phase = match governed.policy.mode {
            Mode::Enforce => Phase::Refused,
            Mode::Audit => Phase::Passing,
        };
        let reason = Reason::Malformed(crate::http::MalformedKind::Chunk);
        let index = self.push_verdict(VerdictAction::Deny, reason, None, start, 0);
        self.ending_at_input_end.push(index);
    }

    fn next_request(&mut self) {
        let consumed = self.consumed;
        let Some(governed) = self.governed.as_mut() else { return };
        governed.scanner.reset();
        governed.request_start = consumed;
        governed.phase = Phase::Head;
    }

    fn push_verdict(&mut self, action: VerdictAction, reason: Reason, rule: Option<&str>, start: u64, end: u64) -> usize {
        let index = self.verdicts.len();
        self.verdicts.push(Verdict { index, start, end, action, reason, rule: rule.map(str::to_owned), answer: None });
        index
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Open,
    Complete,
    Refused,
}

impl BodyEnd {
    fn from_flag(complete: bool) -> Self {
        if complete {
            BodyEnd::Complete
        } else {
            BodyEnd::Open
        }
    }
}

/// Turn the first matching rule (or the default) into a verdict
/// (language.md §6: tunnels, redirects).
fn decide<'r>(policy: &Policy, rule: Option<(&'r str, &Action)>, switches_protocols: bool, bound: &[String]) -> Decision<'r> {
    let by_rule = |action, reason, name| Decision { action, reason, rule: Some(name) };
    match rule {
        Some((name, action)) => match action {
            Action::Deny => by_rule(VerdictAction::Deny, Reason::Rule, name),
            Action::Allow | Action::Redirect { .. } if switches_protocols => by_rule(VerdictAction::Deny, Reason::Tunnel, name),
            Action::Allow => by_rule(VerdictAction::Allow, Reason::Rule, name),
            Action::AllowTunnel if switches_protocols => by_rule(VerdictAction::Tunnel, Reason::Rule, name),
            Action::AllowTunnel => by_rule(VerdictAction::Allow, Reason::Rule, name),
            Action::Redirect { target, .. } => {
                if bound.iter().any(|bound| bound == target) {
                    by_rule(VerdictAction::Redirect, Reason::Rule, name)
                } else {
                    by_rule(VerdictAction::Deny, Reason::RedirectUnbound, name)
                }
            }
        },
        None => {
            let (action, reason) = match policy.default {
                Some(DefaultVerdict::Allow) if switches_protocols => (VerdictAction::Deny, Reason::Tunnel),
                Some(DefaultVerdict::Allow) => (VerdictAction::Allow, Reason::Default),
                // A policy that never passed `check` has no default: fail closed.
                Some(DefaultVerdict::Deny) | None => (VerdictAction::Deny, Reason::Default),
            };
            Decision { action, reason, rule: None }
        }
    }
}

fn trace_request(trace: &mut String, index: usize, start: u64, request: &Request<'_>) {
    let head = &request.head;
    let _ = writeln!(trace, "\nrequest {index} at byte {start}");
    let _ = writeln!(trace, "  request line: {}", show(head.request_line()));
    let _ = writeln!(trace, "  raw target: {}", show(head.target()));
    match path_form(head) {
        PathForm::Decoded => {
            let _ = writeln!(trace, "  path (before '?'): {}", show(head.raw_path()));
            let _ = writeln!(trace, "  decoded path: {}", show(request.path.unwrap_or_default()));
        }
        PathForm::Asterisk => {
            let _ = writeln!(trace, "  path: \"*\" (OPTIONS *)");
        }
        PathForm::None => {
            let _ = writeln!(trace, "  path: none (CONNECT authority-form: no path matcher holds)");
        }
    }
    match request.host {
        Some(host) => {
            let _ = writeln!(trace, "  host: {}", show(host));
        }
        None => {
            let _ = writeln!(trace, "  host: none");
        }
    }
    let _ = writeln!(trace, "  fields: {}", head.field_count());
}
