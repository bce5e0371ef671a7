//! One client connection seen by the reference evaluator.
//!
//! Invariants:
//! - Every byte is consumed exactly once, in order, and its fate (delivered,
//!   redirected, refused, or held while its head is incomplete) depends only
//!   on the bytes before it and itself, never on where `send()` cut the
//!   stream (but for the server's answers, below): that is what makes
//!   verdicts split-independent.
//! - Memory is bounded by the policy: a head is held in a buffer of at most
//!   `header_bytes + 1` bytes, and bodies are counted, never stored.
//! - After a deny in enforce mode nothing more is delivered and no verdict
//!   follows; after a tunnel whose switch took effect, or a would-be
//!   malformed/limit/opaque deny in audit mode, every byte passes and no
//!   verdict follows.
//! - The server's answers ([`ServerAnswers`]) are the one input besides the
//!   bytes, and the one place where `send()` boundaries matter (language.md
//!   §6): an answer arrives only at the end of a [`Session::feed`] (the
//!   send that carried its request's last byte), so a switch and the answer
//!   to a deny depend on where the sends were cut, and on nothing else.
//! - The requests the server owes an answer to are kept in order, at most
//!   one entry per delivered request not yet answered; once one is never
//!   answered, none after it is (a server answers in order), and they are
//!   no longer kept.

use super::body::{ChunkStep, ChunkedBody};
use super::head::{check_whole_head, Framing, HeadError, HeadScanner, HeadStep, HeadViolation, TargetForm};
use super::path::decode_path;
use super::rules::{first_match, matchable_host, path_form, show, PathForm, Request};
use super::{Outcome, Reason, Verdict};
use crate::http::{connection_start, ConnectionStart};
use crate::model::{Action, ConnectionInfo, DefaultVerdict, Mode, OpaqueVerdict, Policy, Program, VerdictAction};
use crate::verdict::{answer_bytes, answer_status, Answer, DenyWith, RequestKind, ServerAnswers};
use std::collections::VecDeque;
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
    /// The verdict of the allowed switch request being read: once it is
    /// complete, the connection waits for the server's answer.
    switch: Option<usize>,
    path_buffer: Vec<u8>,
    host_buffer: Vec<u8>,
    /// The `l7c explain` trace, when asked for.
    trace: Option<String>,
    /// What the server answers to each request it receives.
    answers: ServerAnswers,
    /// Requests delivered to the server so far: the next one's `k`.
    delivered_requests: usize,
    /// Delivered requests whose final answer has not arrived, in order.
    owed: VecDeque<Owed>,
    /// A request the server will never answer was delivered: it owes the
    /// client forever (answers come in order, so nothing after it arrives).
    never_answered: bool,
    /// A request was redirected in enforce mode: its answer comes from
    /// elsewhere, at a time nothing here sees.
    redirected: bool,
    /// Whether the server owed the client an answer when the first byte of
    /// the request being read was sent (a deny of it is then not answered).
    owed_at_request_start: bool,
}

/// A request delivered to the server whose final answer has not arrived.
#[derive(Debug, Clone, Copy)]
struct Owed {
    /// Its place among the delivered requests (the `answers` list's index).
    k: usize,
    kind: RequestKind,
    /// Its last byte was sent: its answer arrives when that send ends.
    complete: bool,
}

#[derive(Debug)]
enum Phase {
    /// Connection start: these bytes, a proper prefix of a TLS record
    /// header or of the HTTP/2 preface line, are held until
    /// `http::connection_start` can decide.
    Start { held: Vec<u8> },
    Head,
    Body { deliver: bool, body: Body },
    /// An allowed switch request (verdict `index`, request `k` of the
    /// server) was sent in full; until the server's status line arrives,
    /// every byte is early (language.md §6).
    Switching { index: usize, k: usize },
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
    /// scope selects the connection (at most one can, once checked). The
    /// server answers as [`ServerAnswers::Agreeing`] says unless
    /// [`Session::with_answers`] says otherwise.
    pub fn new(program: &'p Program, connection: ConnectionInfo, bound_targets: &[String]) -> Self {
        let governed = program.policies.iter().find(|policy| policy.scope.selects(&connection)).map(|policy| Governed {
            policy,
            value_matched: policy.value_matched_headers().into_iter().map(String::into_bytes).collect(),
            bound: bound_targets.to_vec(),
            phase: Phase::Start { held: Vec::new() },
            scanner: HeadScanner::new(policy.limits),
            request_start: 0,
            open_chunked: None,
            switch: None,
            path_buffer: Vec::new(),
            host_buffer: Vec::new(),
            trace: None,
            answers: ServerAnswers::Agreeing,
            delivered_requests: 0,
            owed: VecDeque::new(),
            never_answered: false,
            redirected: false,
            owed_at_request_start: false,
        });
        Session { governed, consumed: 0, delivered: 0, verdicts: Vec::new(), ending_at_input_end: Vec::new() }
    }

    /// This connection with the server answering as `answers` says (cli.md
    /// `--answers`); call it before the first [`Session::feed`].
    pub fn with_answers(mut self, answers: ServerAnswers) -> Self {
        if let Some(governed) = self.governed.as_mut() {
            governed.answers = answers;
        }
        self
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

    /// The bytes of one `send()`. When it ends, the server's answers to the
    /// requests it completed arrive, and the client reads them before its
    /// next `send()` (cli.md `--answers`).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.governed.is_none() {
            self.consumed += bytes.len() as u64;
            self.delivered += bytes.len() as u64;
            return;
        }
        self.process(bytes);
        self.answers_arrive();
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
                    if governed.scanner.len() == 0 {
                        // This request's first byte is sent now: answers
                        // arriving after this send come too late for it.
                        governed.owed_at_request_start = governed.owes_client();
                    }
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
                            self.request_complete();
                        }
                        BodyEnd::Refused => self.refuse_chunk(),
                    }
                }
                Phase::Switching { .. } => {
                    self.early_bytes();
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
        let answer = (action == VerdictAction::Deny).then(|| governed.deny_answer(reason, None)).flatten();
        let index = self.push_verdict(action, reason, None, 0, 0, answer);
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
        let answer = governed.deny_answer(reason, None);
        governed.trace_answer(reason, answer);
        let index = self.push_verdict(VerdictAction::Deny, reason, None, start, 0, answer);
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
        // What the server's answer to this request means (language.md §6).
        let kind = match (head.form(), facts.switches_protocols) {
            (TargetForm::Authority, _) => RequestKind::Connect,
            (_, true) => RequestKind::Upgrade,
            (_, false) => RequestKind::Plain,
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
        if let (VerdictAction::Deny, false) = (decision.action, audit) {
            governed.phase = Phase::Refused;
            let answer = governed.deny_answer(decision.reason, decision.rule);
            governed.trace_answer(decision.reason, answer);
            let index = self.push_verdict(decision.action, decision.reason, decision.rule, start, 0, answer);
            self.ending_at_input_end.push(index);
            return;
        }
        // Allow, tunnel, redirect, or an audit-mode would-be deny. A tunnel
        // spans its request (its body included, chunked or not) until the
        // server agrees to the switch (language.md §1, §6).
        let action = decision.action;
        let deliver = audit || matches!(action, VerdictAction::Allow | VerdictAction::Tunnel);
        if deliver {
            self.delivered += head_len;
            governed.request_delivered(kind);
        } else {
            // Enforce mode: redirected elsewhere.
            governed.redirected = true;
        }
        let chunked = matches!(body, Some(Body::Chunked(_)));
        // Nothing is answered in audit mode, the one way a deny gets here.
        let index = self.push_verdict(action, decision.reason, decision.rule, start, declared_end, None);
        let Some(governed) = self.governed.as_mut() else { return };
        if action == VerdictAction::Tunnel {
            governed.switch = Some(index);
        }
        match body {
            Some(body) => {
                if chunked {
                    governed.open_chunked = Some(index);
                }
                governed.phase = Phase::Body { deliver, body };
            }
            None => self.request_complete(),
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
        let answer = governed.deny_answer(reason, None);
        let index = self.push_verdict(VerdictAction::Deny, reason, None, start, 0, answer);
        self.ending_at_input_end.push(index);
    }

    /// The last byte of the request being read was consumed: the server
    /// may answer it when this send ends. After an allowed switch request
    /// the connection waits for that answer; otherwise the next request
    /// starts here.
    fn request_complete(&mut self) {
        let Some(governed) = self.governed.as_mut() else { return };
        if let Some(owed) = governed.owed.back_mut() {
            owed.complete = true;
        }
        match governed.switch.take() {
            Some(index) => {
                if let Some(trace) = governed.trace.as_mut() {
                    let _ = writeln!(trace, "  the switch waits for the server's status line (bytes before it are early)");
                }
                // The switch request is the last one delivered.
                let k = governed.delivered_requests.saturating_sub(1);
                governed.phase = Phase::Switching { index, k };
            }
            None => self.next_request(),
        }
    }

    /// A byte arrived while the connection waits for the server's answer
    /// to a switch: it, and every byte after it, is denied with reason
    /// `tunnel` and no rule (language.md §6). In audit mode the bytes pass:
    /// whether the server read them as tunnel data or as a request depends
    /// on an answer they did not wait for, so framing is lost.
    fn early_bytes(&mut self) {
        let start = self.consumed;
        let Some(governed) = self.governed.as_mut() else { return };
        if let Some(trace) = governed.trace.as_mut() {
            let _ = writeln!(trace, "\nbyte {start} was sent before the server answered the switch: deny tunnel");
        }
        governed.phase = match governed.policy.mode {
            Mode::Enforce => Phase::Refused,
            Mode::Audit => Phase::Passing,
        };
        let answer = governed.deny_answer_now(Reason::Tunnel, None);
        governed.trace_answer(Reason::Tunnel, answer);
        let index = self.push_verdict(VerdictAction::Deny, Reason::Tunnel, None, start, 0, answer);
        self.ending_at_input_end.push(index);
    }

    /// A send ended: the server's answers to the requests it completed
    /// arrive, in order, and the client reads them before its next send.
    /// An answer to a switch request decides the switch.
    fn answers_arrive(&mut self) {
        let Some(governed) = self.governed.as_mut() else { return };
        while let Some(&owed) = governed.owed.front() {
            if !owed.complete {
                break;
            }
            let status = governed.answers.status(owed.k, owed.kind);
            let consents = status.is_some_and(|status| ServerAnswers::consents(owed.kind, status));
            let is_final = status.is_some_and(|status| consents || !(100..200).contains(&status));
            if let Some(trace) = governed.trace.as_mut() {
                let what = match status {
                    None => "is never answered".to_string(),
                    Some(status) if consents => format!("is answered {status}: the server agrees to the switch"),
                    Some(status) if is_final => format!("is answered {status}"),
                    Some(status) => format!("is answered {status}, an interim answer: the final one never comes"),
                };
                let _ = writeln!(trace, "\nafter the send ending at byte {}: the server's request {} {what}", self.consumed, owed.k);
            }
            if !is_final {
                // Never answered in full: it, and every request after it,
                // is owed to the client forever.
                governed.never_answered = true;
                governed.owed.clear();
                break;
            }
            governed.owed.pop_front();
            let Phase::Switching { index, k } = governed.phase else { continue };
            if owed.k != k {
                // A request before the switch request.
                continue;
            }
            if consents {
                // The tunnel is open: the rest passes, and the verdict spans
                // to the end of the input.
                governed.phase = Phase::Passing;
                self.ending_at_input_end.push(index);
                return;
            }
            // Refused: the connection stays HTTP; the next bytes are the
            // next request.
            self.next_request();
            return;
        }
    }

    fn next_request(&mut self) {
        let consumed = self.consumed;
        let Some(governed) = self.governed.as_mut() else { return };
        governed.scanner.reset();
        governed.request_start = consumed;
        governed.phase = Phase::Head;
    }

    fn push_verdict(
        &mut self,
        action: VerdictAction,
        reason: Reason,
        rule: Option<&str>,
        start: u64,
        end: u64,
        answer: Option<Answer>,
    ) -> usize {
        let index = self.verdicts.len();
        self.verdicts.push(Verdict { index, start, end, action, reason, rule: rule.map(str::to_owned), answer });
        index
    }
}

impl Governed<'_> {
    /// Whether the server owes the client an answer now: a delivered
    /// request's final answer has not arrived, or will never come, or a
    /// redirected request's answer comes from elsewhere.
    fn owes_client(&self) -> bool {
        !self.owed.is_empty() || self.never_answered || self.redirected
    }

    /// A request of `kind` goes to the server: it owes an answer to it.
    fn request_delivered(&mut self, kind: RequestKind) {
        let k = self.delivered_requests;
        self.delivered_requests += 1;
        if !self.never_answered {
            self.owed.push_back(Owed { k, kind, complete: false });
        }
    }

    /// How a deny of the request being read is answered (language.md §6,
    /// `deny_with`): `None` in audit mode; otherwise its status, unless the
    /// reason is never answered, `deny_with reset` says so, or the server
    /// owed the client an answer when the request's first byte was sent
    /// (an answer must never overtake the server's): then `reset`.
    fn deny_answer(&self, reason: Reason, rule: Option<&str>) -> Option<Answer> {
        self.answer_if(reason, rule, self.owed_at_request_start)
    }

    /// Like [`Governed::deny_answer`], for a deny that starts at a byte
    /// sent now rather than at a request's first byte.
    fn deny_answer_now(&self, reason: Reason, rule: Option<&str>) -> Option<Answer> {
        self.answer_if(reason, rule, self.owes_client())
    }

    fn answer_if(&self, reason: Reason, rule: Option<&str>, server_owes: bool) -> Option<Answer> {
        if self.policy.mode == Mode::Audit {
            return None;
        }
        Some(match answer_status(reason, self.policy.deny_with) {
            Some(status) if !server_owes => {
                Answer::Status { status, bytes: answer_bytes(status, reason, rule).len() as u64 }
            }
            _ => Answer::Reset,
        })
    }

    fn trace_answer(&mut self, reason: Reason, answer: Option<Answer>) {
        let Some(trace) = self.trace.as_mut() else { return };
        let line = match answer {
            None => return,
            Some(Answer::Status { status, bytes }) => format!("answered: the client reads a {status} response ({bytes} bytes)"),
            Some(Answer::Reset) => {
                let why = match (answer_status(reason, self.policy.deny_with), self.policy.deny_with) {
                    (None, DenyWith::Reset) => "`deny_with reset`",
                    (None, _) => "this reason is never answered over HTTP",
                    (Some(_), _) => "the server still owed the client an answer when this was sent",
                };
                format!("not answered over HTTP ({why}): the client's send() fails (reset)")
            }
        };
        let _ = writeln!(trace, "  {line}");
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

#[cfg(test)]
mod tests {
    //! The server's answers (language.md §6, cli.md `--answers`): switches
    //! that need consent, and how denies are answered.

    use super::*;
    use crate::driver::compile_text;
    use crate::http::MalformedKind;
    use crate::verdict::{answer_bytes, Answer, ServerAnswers};

    /// A policy with `settings` added: GET /pub allowed, POST /upload
    /// allowed, /ws and CONNECT tunnels, /admin denied, /moved redirected
    /// to `elsewhere`, a 256-byte head limit.
    fn program(settings: &str) -> Program {
        let text = format!(
            r#"policy "p" {{
  default deny
  {settings}
  limits {{ header_bytes 256 }}
  rule "pub"     {{ method GET  path prefix "/pub"  allow }}
  rule "upload"  {{ method POST  path exact "/upload"  allow }}
  rule "ws"      {{ path exact "/ws"  allow tunnel }}
  rule "connect" {{ method CONNECT  allow tunnel }}
  rule "admin"   {{ path prefix "/admin"  deny }}
  rule "moved"   {{ path prefix "/moved"  redirect "elsewhere" }}
}}
"#
        );
        let compilation = compile_text("answers.l7", &text, None);
        let checked = compilation.checked.unwrap_or_else(|| panic!("{:?}", compilation.diagnostics));
        checked.program().clone()
    }

    fn run_with(program: &Program, bound: &[&str], input: &str, split: &[usize], answers: ServerAnswers) -> Outcome {
        let bound: Vec<String> = bound.iter().map(|name| name.to_string()).collect();
        super::super::evaluate_with_answers(program, ConnectionInfo::default(), &bound, input.as_bytes(), split, &answers)
    }

    fn run(settings: &str, input: &str, split: &[usize]) -> Outcome {
        run_with(&program(settings), &[], input, split, ServerAnswers::Agreeing)
    }

    fn listed(settings: &str, input: &str, split: &[usize], answers: &[u16]) -> Outcome {
        run_with(&program(settings), &[], input, split, ServerAnswers::Listed(answers.to_vec()))
    }

    fn spelled(outcome: &Outcome) -> Vec<String> {
        outcome.verdicts.iter().map(crate::testing::describe_verdict).collect()
    }

    fn last_answer(outcome: &Outcome) -> Option<Answer> {
        outcome.verdicts.last().and_then(|verdict| verdict.answer)
    }

    fn status(status: u16, reason: Reason, rule: Option<&str>) -> Option<Answer> {
        Some(Answer::Status { status, bytes: answer_bytes(status, reason, rule).len() as u64 })
    }

    const PUB: &str = "GET /pub/x HTTP/1.1\r\nHost: a\r\n\r\n"; // 32 bytes
    const ADMIN: &str = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"; // 32 bytes
    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"; // 49 bytes

    #[test]
    fn a_deny_of_the_first_request_is_answered_403() {
        let outcome = run("", ADMIN, &[]);
        assert_eq!(last_answer(&outcome), status(403, Reason::Rule, Some("admin")));
        let outcome = run("", "DELETE /pub HTTP/1.1\r\nHost: a\r\n\r\n", &[]);
        assert_eq!(last_answer(&outcome), status(403, Reason::Default, None));
        // Other verdicts carry no answer.
        assert_eq!(run("", PUB, &[]).verdicts[0].answer, None);
    }

    #[test]
    fn a_deny_after_an_answered_request_is_answered() {
        let input = format!("{PUB}{ADMIN}");
        let outcome = run("", &input, &[32]);
        assert_eq!(spelled(&outcome).len(), 2);
        assert_eq!(last_answer(&outcome), status(403, Reason::Rule, Some("admin")));
        // Only its first byte needs to come after the answer.
        let outcome = run("", &input, &[32, 5]);
        assert_eq!(last_answer(&outcome), status(403, Reason::Rule, Some("admin")));
        let outcome = listed("", &input, &[32], &[404]);
        assert_eq!(last_answer(&outcome), status(403, Reason::Rule, Some("admin")));
    }

    #[test]
    fn a_pipelined_deny_falls_back_to_reset() {
        let input = format!("{PUB}{ADMIN}");
        assert_eq!(last_answer(&run("", &input, &[])), Some(Answer::Reset));
        // Its first byte was sent with the allowed request; the rest later.
        assert_eq!(last_answer(&run("", &input, &[33])), Some(Answer::Reset));
        // A request the server never answers (past the list, or an interim
        // status only) leaves it owing the client forever.
        assert_eq!(last_answer(&listed("", &input, &[32], &[])), Some(Answer::Reset));
        assert_eq!(last_answer(&listed("", &input, &[32], &[100])), Some(Answer::Reset));
        let three = format!("{PUB}{PUB}{ADMIN}");
        assert_eq!(last_answer(&listed("", &three, &[32, 32], &[200])), Some(Answer::Reset));
        assert_eq!(last_answer(&listed("", &three, &[32, 32], &[200, 204])), status(403, Reason::Rule, Some("admin")));
        // The second request pipelined behind the first: when the deny is
        // sent, the second's answer has arrived, and so has the first's.
        assert_eq!(last_answer(&listed("", &three, &[64], &[200, 200])), status(403, Reason::Rule, Some("admin")));
    }

    #[test]
    fn a_redirected_request_before_a_deny_makes_it_reset() {
        let input = format!("GET /moved HTTP/1.1\r\nHost: a\r\n\r\n{ADMIN}");
        let outcome = run_with(&program(""), &["elsewhere"], &input, &[32], ServerAnswers::Agreeing);
        assert_eq!(spelled(&outcome), ["redirect \"moved\"", "deny \"admin\""]);
        assert_eq!(last_answer(&outcome), Some(Answer::Reset));
    }

    #[test]
    fn deny_with_sets_the_status_of_rule_default_and_tunnel_denies() {
        assert_eq!(last_answer(&run("deny_with 451", ADMIN, &[])), status(451, Reason::Rule, Some("admin")));
        let upgrade = "GET /pub/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        let outcome = run("deny_with 451", upgrade, &[]);
        assert_eq!(spelled(&outcome), ["deny tunnel"]);
        assert_eq!(last_answer(&outcome), status(451, Reason::Tunnel, Some("pub")));
        // `reset` answers nothing, whatever the reason.
        assert_eq!(last_answer(&run("deny_with reset", ADMIN, &[])), Some(Answer::Reset));
        assert_eq!(last_answer(&run("deny_with reset", "GET /pub HTTP/1.1\r\n\r\n", &[])), Some(Answer::Reset));
    }

    #[test]
    fn malformed_is_400_limit_431_and_redirect_unbound_503() {
        let outcome = run("deny_with 451", "GET /pub HTTP/1.1\r\n\r\n", &[]);
        assert_eq!(last_answer(&outcome), status(400, Reason::Malformed(MalformedKind::Host), None));
        let long = format!("GET /pub HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n", "c".repeat(300));
        let outcome = run("", &long, &[]);
        assert_eq!(spelled(&outcome), ["deny limit:header_bytes"]);
        assert_eq!(last_answer(&outcome), status(431, Reason::Limit(crate::http::LimitKind::HeaderBytes), None));
        let outcome = run("", "GET /moved HTTP/1.1\r\nHost: a\r\n\r\n", &[]);
        assert_eq!(last_answer(&outcome), status(503, Reason::RedirectUnbound, Some("moved")));
    }

    #[test]
    fn opaque_http2_and_chunk_denies_are_never_answered() {
        let tls = "\u{16}\u{3}\u{1}\u{0}\u{5}hello";
        assert_eq!(spelled(&run("", tls, &[])), ["deny opaque"]);
        assert_eq!(last_answer(&run("", tls, &[])), Some(Answer::Reset));
        let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(last_answer(&run("", preface, &[])), Some(Answer::Reset));
        let chunked = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX";
        let outcome = run("", chunked, &[]);
        assert_eq!(spelled(&outcome), ["allow \"upload\"", "deny malformed:chunk"]);
        assert_eq!(last_answer(&outcome), Some(Answer::Reset));
    }

    #[test]
    fn audit_mode_answers_nothing() {
        let outcome = run("mode audit", &format!("{ADMIN}{PUB}"), &[32]);
        assert_eq!(spelled(&outcome), ["deny \"admin\"", "allow \"pub\""]);
        assert!(outcome.verdicts.iter().all(|verdict| verdict.answer.is_none()));
    }

    #[test]
    fn bytes_sent_before_the_switch_is_answered_are_denied() {
        let input = format!("{UPGRADE}frames");
        for outcome in [run("", &input, &[]), listed("", &input, &[], &[101]), run("", &input, &[10])] {
            assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "deny tunnel"]);
            let (tunnel, early) = (&outcome.verdicts[0], &outcome.verdicts[1]);
            // The tunnel spans its own request; the early deny the rest.
            assert_eq!((tunnel.start, tunnel.end, early.start, early.end), (0, 49, 49, 55));
            assert_eq!((early.rule.as_deref(), early.answer), (None, Some(Answer::Reset)));
            assert_eq!(outcome.delivered, 49);
        }
        // An answer the list does not give, or an interim one, never opens
        // the switch: every later byte is early.
        for answers in [&[][..], &[100], &[103, 101]] {
            let outcome = listed("", &input, &[49], answers);
            assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "deny tunnel"], "answers {answers:?}");
        }
    }

    #[test]
    fn the_servers_consent_opens_the_tunnel() {
        let input = format!("{UPGRADE}frames\r\n\r\nGET /admin HTTP/1.1\r\n");
        for outcome in [run("", &input, &[49]), listed("", &input, &[49], &[101]), run("", &input, &[20, 29, 1])] {
            assert_eq!(spelled(&outcome), ["tunnel \"ws\""]);
            assert_eq!((outcome.verdicts[0].end, outcome.delivered), (input.len() as u64, input.len() as u64));
        }
        // CONNECT: any 2xx is consent; 101 is not.
        let connect = "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nbytes";
        let head = connect.len() - "bytes".len();
        assert_eq!(spelled(&listed("", connect, &[head], &[200])), ["tunnel \"connect\""]);
        assert_eq!(spelled(&listed("", connect, &[head], &[204])), ["tunnel \"connect\""]);
        assert_eq!(spelled(&listed("", connect, &[head], &[101])), ["tunnel \"connect\"", "deny tunnel"]);
        // The audit dry run: the early bytes are reported, and pass.
        let outcome = run("mode audit", &format!("{UPGRADE}frames"), &[]);
        assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "deny tunnel"]);
        assert_eq!((outcome.delivered, outcome.verdicts[1].answer), (55, None));
    }

    #[test]
    fn a_refused_switch_leaves_http_and_the_next_request_is_judged() {
        let input = format!("{UPGRADE}{PUB}{ADMIN}");
        let outcome = listed("", &input, &[49, 32], &[404, 200]);
        assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "allow \"pub\"", "deny \"admin\""]);
        assert_eq!((outcome.verdicts[0].end, outcome.verdicts[1].start), (49, 49));
        // The server answered both requests before the deny was sent.
        assert_eq!(last_answer(&outcome), status(403, Reason::Rule, Some("admin")));
        assert_eq!(outcome.delivered, 81);
        // A final 1xx-free refusal of any kind: 200 to an Upgrade too.
        let outcome = listed("", &input, &[49, 32], &[200, 200]);
        assert_eq!(spelled(&outcome).len(), 3);
    }

    #[test]
    fn a_switch_waits_for_its_own_answer_not_an_earlier_ones() {
        // A request pipelined before the switch request is answered when the
        // send ends; the switch request is answered in the same breath.
        let input = format!("{PUB}{UPGRADE}");
        let outcome = listed("", &format!("{input}frames"), &[81], &[200, 101]);
        assert_eq!(spelled(&outcome), ["allow \"pub\"", "tunnel \"ws\""]);
        let outcome = listed("", &format!("{input}{PUB}"), &[81], &[200, 426]);
        assert_eq!(spelled(&outcome), ["allow \"pub\"", "tunnel \"ws\"", "allow \"pub\""]);
        let outcome = listed("", &format!("{input}{PUB}"), &[81], &[200]);
        assert_eq!(spelled(&outcome), ["allow \"pub\"", "tunnel \"ws\"", "deny tunnel"]);
    }

    #[test]
    fn a_switch_request_with_a_body_is_answered_after_its_body() {
        // Content-Length: the answer comes after the send with its last byte.
        let head = "POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\n"; // 61 bytes
        let input = format!("{head}abcframes");
        assert_eq!(spelled(&run("", &input, &[64])), ["tunnel \"ws\""]);
        let outcome = run("", &input, &[61]);
        assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "deny tunnel"]);
        assert_eq!((outcome.verdicts[0].end, outcome.verdicts[1].start, outcome.delivered), (64, 64, 64));
        // Chunked: the body is framed, and the answer comes after its end.
        let head = "PUT /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nTransfer-Encoding: chunked\r\n\r\n"; // 69 bytes
        let input = format!("{head}0\r\n\r\nframes");
        assert_eq!(spelled(&run("", &input, &[74])), ["tunnel \"ws\""]);
        let outcome = run("", &input, &[69]);
        assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "deny tunnel"]);
        assert_eq!((outcome.verdicts[0].end, outcome.verdicts[1].start), (74, 74));
        // Refused, the next request starts after the chunked body.
        let outcome = listed("", &format!("{head}0\r\n\r\n{PUB}"), &[74], &[400]);
        assert_eq!(spelled(&outcome), ["tunnel \"ws\"", "allow \"pub\""]);
        assert_eq!(outcome.verdicts[1].start, 74);
    }
}
