//! The phases of a governed connection (docs/program.md): the head phase
//! of each policy (window, pull, connection-start checks, the scan, the
//! decision, the verdict), its chunked-body phase, the long-body phase,
//! and the exits and the `l7_report` function they share.
//!
//! Registers in the main program: r6 = msg, r7 = the connection's state,
//! r8 = the stream offset where this run's data starts (from the phase
//! dispatch on), r9 = scratch kept across calls.

use super::answer;
use super::callbacks::{self, tables_base, Names, CTX, CTX_DATA, CTX_DATA_END, CTX_STATE};
use super::layout::{self, chunk as cs, flags, head as hs, phase};
use super::tables::{rule_action, PolicyTables, SharedTables};
use crate::abi::{self, event_flags, record, Event, NO_RULE};
use crate::bpf::{sk_msg_md, verdict, Asm, Helper, Label, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::verdict::Reason;
use crate::http::{MalformedKind, HTTP2_PREFACE_LINE};
use crate::lower::{LoweredPolicy, START};
use crate::model::{DefaultVerdict, Mode, OpaqueVerdict, VerdictAction};
use crate::scan::HeaderId;

/// `HeadState::form` of an authority-form target (CONNECT).
const CONNECT_FORM: i32 = 2;
/// The most bytes one `apply_bytes` covers.
const APPLY_MAX: i64 = u32::MAX as i64;
/// Bytes of a chunked body looked at per run.
const CHUNK_WINDOW: i32 = 4096;
/// The self-redirect key on the main stack.
const KEY: i16 = -72;
/// The event record on `l7_report`'s stack (below the counter key at -8).
const EVENT: i16 = -8 - Event::SIZE as i16;
/// Audit mode's redirect check: the config key and the slot.
const AUDIT_KEY: i16 = -80;
const AUDIT_SLOT: i16 = -76;

/// What one policy's phases need.
pub struct PolicyPlan<'a> {
    pub index: usize,
    pub lowered: &'a LoweredPolicy,
    pub tables: &'a PolicyTables,
    /// Counter index of the policy's first reason slot.
    pub counter_base: u32,
    pub facts: i16,
    /// Words of the facts bitmap, minus one (a power of two minus one).
    pub fact_mask: u32,
    /// The candidate facts' array (`tables::CANDIDATES` u32s).
    pub cand: i16,
}

fn policy_label(index: usize, what: &str) -> Label {
    Label::from(format!("p{index}_{what}"))
}

/// The label of policy `index`'s head phase.
pub fn head_label(index: usize) -> Label {
    policy_label(index, "head")
}

pub fn chunk_label(index: usize) -> Label {
    policy_label(index, "chunk")
}

/// Emits the head and chunk phases of one policy (main program code).
pub fn emit_policy(a: &mut Asm, plan: &PolicyPlan<'_>, shared: &SharedTables) {
    head_phase(a, plan, shared);
    chunk_phase(a, plan, shared);
}

/// `apply_bytes(reg)` (a register or constant) and `cork_bytes(0)`.
fn apply_no_cork(a: &mut Asm, amount: Reg) {
    a.mov64(R1, R6).mov64(R2, amount).call(Helper::MsgApplyBytes);
    a.mov64(R1, R6).mov64(R2, 0).call(Helper::MsgCorkBytes);
}

/// r9 = min(msg->size, limit); pulls `[0, r9)` when it is not contiguous
/// (a failed pull denies); fills the loop context.
fn window(a: &mut Asm, index: usize, limit: i32, what: &str) {
    let ok = policy_label(index, &format!("{what}_window_ok"));
    let pulled = policy_label(index, &format!("{what}_pulled"));
    a.ldxw(R9, R6, sk_msg_md::SIZE).comment("msg->size");
    a.jle(R9, limit, ok.clone());
    a.mov64(R9, limit);
    a.label(ok);
    a.ldxdw(R2, R6, sk_msg_md::DATA).ldxdw(R3, R6, sk_msg_md::DATA_END).sub64(R3, R2);
    a.note("data == data_end with bytes to read: the message is not mapped (kTLS gives every record so)");
    a.mov64(R1, 0);
    let mapped = policy_label(index, &format!("{what}_mapped"));
    a.jne(R3, 0, mapped.clone());
    a.mov64(R1, 1);
    a.label(mapped);
    a.stxb(R7, layout::UNMAPPED, R1);
    a.jge(R3, R9, pulled.clone());
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, R9).mov64(R4, 0).call(Helper::MsgPullData);
    a.jne(R0, 0, "internal_pull").comment("a failed pull denies (fail closed)");
    a.label(pulled);
    a.stxdw(R10, CTX + CTX_STATE, R7);
    a.ldxdw(R2, R6, sk_msg_md::DATA).stxdw(R10, CTX + CTX_DATA, R2);
    a.ldxdw(R3, R6, sk_msg_md::DATA_END).stxdw(R10, CTX + CTX_DATA_END, R3);
}

/// `bpf_loop(count, callback, ctx, 0)`; count in `count`.
fn run_loop(a: &mut Asm, count: Reg, callback: &str) {
    a.mov64(R1, count);
    a.ld_func(R2, callback);
    a.mov64(R3, R10).add64(R3, i32::from(CTX));
    a.mov64(R4, 0);
    a.call(Helper::Loop);
}

/// Fills the verdict fields the report reads (start = r8).
struct Verdict {
    action: VerdictAction,
    reason: Reason,
    /// The rule is in r9 (else no rule).
    by_rule: bool,
}

fn set_verdict(a: &mut Asm, plan: &PolicyPlan<'_>, v: &Verdict, shared_flags: bool) {
    let (class, kind) = abi::reason_code(v.reason);
    a.stb(R7, layout::V_ACTION, i32::from(abi::action_code(v.action)));
    a.stb(R7, layout::V_CLASS, i32::from(class));
    a.stb(R7, layout::V_KIND, i32::from(kind));
    a.stb(R7, layout::V_RECORD, i32::from(record::VERDICT));
    a.stw(R7, layout::V_BASE, plan.counter_base as i32);
    a.ldxw(R1, R7, layout::INDEX).stxw(R7, layout::V_INDEX, R1).add64(R1, 1).stxw(R7, layout::INDEX, R1);
    a.stxdw(R7, layout::V_START, R8);
    let audit = if plan.lowered.mode == Mode::Audit { event_flags::AUDIT } else { 0 };
    if shared_flags {
        // V_FLAGS holds the framing's CHUNKED bit (head_done).
        a.ldxb(R1, R7, layout::V_FLAGS);
    } else {
        a.mov64(R1, 0);
    }
    a.or64(R1, i32::from(audit));
    if v.by_rule {
        a.stxw(R7, layout::V_RULE, R9);
        rule_entry(a, plan, R2);
        let plain = a.fresh_label("unlogged");
        a.ldxb(R3, R2, 1).jeq(R3, 0, plain.clone());
        a.or64(R1, i32::from(event_flags::LOGGED));
        a.label(plain);
    } else {
        a.stw(R7, layout::V_RULE, NO_RULE as i32);
    }
    a.stxb(R7, layout::V_FLAGS, R1);
}

/// reg = &rules[r9] (clobbers reg only).
fn rule_entry(a: &mut Asm, plan: &PolicyPlan<'_>, reg: Reg) {
    tables_base(a, reg);
    a.add64(reg, plan.tables.rules as i32);
    // r9 & mask, shifted, without clobbering r9: use r0.
    a.mov64(R0, R9).and64(R0, plan.tables.rules_mask as i32).lsh64(R0, 3).add64(reg, R0);
}

fn report(a: &mut Asm) {
    a.mov64(R1, R7).mov64(R2, R6).call_local("l7_report");
}

fn head_phase(a: &mut Asm, plan: &PolicyPlan<'_>, shared: &SharedTables) {
    let p = plan.index;
    let l = |what: &str| policy_label(p, what);
    let lowered = plan.lowered;
    let tables = plan.tables;
    let names = Names::new(p);
    let header_bytes = lowered.limits.header_bytes.max(1) as i32;
    let preface = HTTP2_PREFACE_LINE;
    let limit = (header_bytes + 1).max(preface.len() as i32);

    a.label(head_label(p));
    a.note(format!("policy {}: the request head (docs/program.md)", lowered.name));
    a.stw(R7, layout::V_BASE, plan.counter_base as i32);
    window(a, p, limit, "head");

    a.note("connection start (http::connection_start): a TLS record header is opaque, the HTTP/2 preface line is http2, a proper prefix of either is held");
    a.jne(R8, 0, l("scan"));
    a.ldxdw(R2, R6, sk_msg_md::DATA).ldxdw(R3, R6, sk_msg_md::DATA_END);
    a.mov64(R4, R2).add64(R4, 1).jgt(R4, R3, l("scan"));
    a.ldxb(R1, R2, 0);
    a.jeq(R1, i32::from(preface[0]), l("preface"));
    let tls = crate::http::TLS_CONTENT_TYPES;
    a.sub64(R1, i32::from(*tls.start()));
    a.jgt(R1, i32::from(tls.end() - tls.start()), l("scan")).comment("not a TLS content type");
    a.jle(R9, 1, l("hold"));
    a.mov64(R4, R2).add64(R4, 2).jgt(R4, R3, l("hold"));
    a.ldxb(R1, R2, 1).jne(R1, i32::from(crate::http::TLS_MAJOR), l("scan")).comment("TLS major version");
    a.jle(R9, 2, l("hold"));
    a.mov64(R4, R2).add64(R4, 3).jgt(R4, R3, l("hold"));
    a.ldxb(R1, R2, 2).jgt(R1, i32::from(crate::http::TLS_MAX_MINOR), l("scan")).comment("TLS minor version");
    a.ja(l("opaque"));
    a.label(l("preface"));
    for (i, &byte) in preface.iter().enumerate() {
        a.jle(R9, i as i32, l("hold")).comment("all of it a prefix of the preface: hold");
        a.mov64(R4, R2).add64(R4, i as i32 + 1).jgt(R4, R3, l("hold"));
        a.ldxb(R1, R2, i as i16).jne(R1, i32::from(byte), l("scan"));
    }
    a.ja(l("http2"));

    a.label(l("scan"));
    a.note("scan the window: reset the head state, the automata and the facts");
    for word in 0..(hs::BYTES / 8) {
        a.stdw(R7, layout::HEAD + word * 8, 0);
    }
    a.sth(R7, layout::HEAD + hs::STATE, i32::from(shared.head_start));
    for offset in (0..tables.area_bytes as i16).step_by(4) {
        a.stw(R7, layout::AREA + offset, 0);
    }
    a.stw(R7, tables.method.state, START as i32);
    a.stw(R7, tables.name.state, START as i32);
    for word in 0..tables.fact_words as i16 {
        a.stdw(R7, plan.facts + word * 8, 0);
    }
    a.stw(R7, layout::DEC_CANDIDATES, 0).stb(R7, layout::DEC_MODE, 0);
    a.add64(R9, callbacks::SCAN_UNROLL as i32 - 1).div64(R9, callbacks::SCAN_UNROLL as i32).comment("iterations: bytes / SCAN_UNROLL, rounded up");
    run_loop(a, R9, &names.scan);
    a.ldxb(R1, R7, layout::HEAD + hs::STATUS);
    a.jeq(R1, 1, l("complete"));
    a.jeq(R1, 2, l("refused"));

    a.label(l("hold"));
    a.note("an unmapped message (kTLS): a cork would not run the program again, so the head cannot complete: deny");
    a.ldxb(R1, R7, layout::UNMAPPED);
    a.jne(R1, 0, "internal_unmapped_hold");
    a.note("incomplete head: hold the bytes until one more arrives (the verdict of a corking run is not applied)");
    a.note("pull first: a bare cork after a partial apply_bytes loses or repeats bytes (docs/kernel-mechanics.md)");
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, 1).mov64(R4, 0).call(Helper::MsgPullData);
    a.jne(R0, 0, "internal_pull");
    a.mov64(R1, R6).mov64(R2, 0).call(Helper::MsgApplyBytes);
    a.ldxw(R2, R6, sk_msg_md::SIZE).add64(R2, 1);
    a.mov64(R1, R6).call(Helper::MsgCorkBytes);
    a.stb(R7, layout::CORKED, 1);
    a.mov64(R0, verdict::DROP).exit();

    // An HTTP/2 connection: denied whatever `opaque` says; in audit mode
    // the framing is lost and the rest passes.
    a.label(l("http2"));
    set_verdict(a, plan, &Verdict { action: VerdictAction::Deny, reason: Reason::Http2, by_rule: false }, false);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    a.ja(if lowered.mode == Mode::Audit { "tunnel" } else { "deny" });

    // Opaque connection.
    a.label(l("opaque"));
    let (action, passes) = match (lowered.opaque, lowered.mode) {
        (OpaqueVerdict::Allow, _) => (VerdictAction::Tunnel, true),
        (OpaqueVerdict::Deny, Mode::Audit) => (VerdictAction::Deny, true),
        (OpaqueVerdict::Deny, Mode::Enforce) => (VerdictAction::Deny, false),
    };
    set_verdict(a, plan, &Verdict { action, reason: Reason::Opaque, by_rule: false }, false);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    if passes {
        a.ja("tunnel");
    } else {
        a.ja("deny");
    }

    // A refused head.
    a.label(l("refused"));
    a.note("a refused head: its reason from the scan");
    set_verdict(a, plan, &Verdict { action: VerdictAction::Deny, reason: Reason::Default, by_rule: false }, false);
    a.ldxb(R1, R7, layout::HEAD + hs::VIOLATION);
    a.jge(R1, i32::from(crate::scan::Violation::LIMIT_BASE), l("refused_limit"));
    a.stb(R7, layout::V_CLASS, i32::from(abi::reason_code(Reason::Malformed(MalformedKind::Host)).0));
    a.sub64(R1, 1).ja(l("refused_kind"));
    a.label(l("refused_limit"));
    a.stb(R7, layout::V_CLASS, i32::from(abi::reason_code(Reason::Limit(crate::http::LimitKind::Headers)).0));
    a.sub64(R1, i32::from(crate::scan::Violation::LIMIT_BASE));
    a.label(l("refused_kind"));
    a.stxb(R7, layout::V_KIND, R1);
    a.stdw(R7, layout::V_END, 0);
    if lowered.mode == Mode::Enforce {
        answer::call_answer(a, "deny_answer");
    }
    report(a);
    match lowered.mode {
        Mode::Enforce => a.ja("deny"),
        Mode::Audit => a.ja("tunnel"),
    };

    // A complete head: facts, decision, verdict.
    a.label(l("complete"));
    a.note("the method's id, the accepted patterns' facts, then the rules in order");
    {
        let super::tables::LaneKind::Token { id_at_end } = tables.method.kind else { unreachable!() };
        a.ldxw(R1, R7, tables.method.state).and64(R1, tables.method.mask as i32);
        tables_base(a, R2);
        a.add64(R2, id_at_end as i32).add64(R2, R1).ldxb(R1, R2, 0).stxb(R7, layout::METHOD_ID, R1);
    }
    let lanes = tables.path.lanes.iter().chain(tables.values.iter().flat_map(|(_, at)| at.lanes.iter()));
    for lane in lanes {
        let super::tables::LaneKind::AtEnd { accept, sets, set_mask } = lane.kind else { continue };
        let skip = a.fresh_label(&format!("p{p}_no_members"));
        a.ldxw(R1, R7, lane.state).and64(R1, lane.mask as i32).lsh64(R1, 2);
        tables_base(a, R2);
        a.add64(R2, accept as i32).add64(R2, R1).ldxw(R1, R2, 0).comment("accept set");
        a.and64(R1, set_mask as i32).lsh64(R1, 2);
        tables_base(a, R2);
        a.add64(R2, sets as i32).add64(R2, R1);
        a.ldxw(R3, R2, 0).ldxw(R4, R2, 4).stxw(R7, layout::COLLECT_START, R3);
        a.jle(R4, R3, skip.clone());
        a.sub64(R4, R3);
        run_loop(a, R4, &names.collect);
        a.label(skip);
    }
    for &word in &tables.sticky_words {
        a.stw(R7, layout::DEC_STICKY_WORD, word as i32);
        a.mov64(R9, 64);
        run_loop(a, R9, &names.sticky);
    }
    a.stw(R7, layout::DEC_RULE, 0).stw(R7, layout::DEC_MATCH, NO_RULE as i32);
    a.stb(R7, layout::DEC_CLAUSE, 0).stb(R7, layout::DEC_OK, 1);
    if tables.record_count > 0 {
        a.note("the guarded decision over the candidates, or every rule in order when there are too many");
        a.ldxb(R1, R7, layout::DEC_MODE);
        a.jne(R1, 0, l("linear"));
        a.stw(R7, layout::DEC_LIST, 0);
        a.stw(R7, layout::DEC_LIST_AT, tables.unguarded.0 as i32).stw(R7, layout::DEC_LIST_END, tables.unguarded.1 as i32);
        a.stw(R7, layout::DEC_RECORD, 0).stw(R7, layout::DEC_RECORD_END, 0);
        a.mov64(R9, tables.guarded_bound as i32);
        run_loop(a, R9, &names.guarded);
        a.ldxb(R1, R7, layout::DEC_MODE);
        a.jeq(R1, 2, l("decided"));
        a.ja("internal_nothing").comment("the bound ran out before the decision ended: fail closed");
        a.label(l("linear"));
        a.mov64(R9, tables.record_count as i32);
        run_loop(a, R9, &names.decide);
        a.label(l("decided"));
    }

    a.note("framing: the request's bytes (head + Content-Length) and its declared end");
    let te = 1i32 << HeaderId::TRANSFER_ENCODING;
    let cl = 1i32 << HeaderId::CONTENT_LENGTH;
    a.ldxw(R1, R7, layout::HEAD_LEN);
    a.stb(R7, layout::V_FLAGS, 0);
    a.ldxdw(R2, R7, layout::HEAD + hs::PRESENT);
    a.jset(R2, te, l("chunked"));
    a.jset(R2, cl, l("length"));
    a.ja(l("framed"));
    a.label(l("chunked"));
    a.stb(R7, layout::V_FLAGS, i32::from(event_flags::CHUNKED)).ja(l("framed"));
    a.label(l("length"));
    a.ldxdw(R3, R7, layout::HEAD + hs::CONTENT_LENGTH).add64(R1, R3);
    a.label(l("framed"));
    a.stxdw(R7, layout::BODY_LEFT, R1).comment("the request's bytes, for now");
    a.add64(R1, R8).stxdw(R7, layout::V_END, R1);

    a.note("the verdict (eval::session decide)");
    a.ldxw(R9, R7, layout::DEC_MATCH);
    a.ldxb(R1, R7, layout::HEAD + hs::FORM);
    a.jeq(R1, CONNECT_FORM, l("switching")).comment("CONNECT");
    a.ldxdw(R1, R7, layout::HEAD + hs::PRESENT);
    a.jset(R1, 1i32 << HeaderId::UPGRADE, l("switching"));
    verdict_table(a, plan, false);
    a.label(l("switching"));
    verdict_table(a, plan, true);

    let mode = lowered.mode;
    if a.is_referenced(l("redirect")) {
        redirect_block(a, plan);
    }
    // Each verdict: report, then its effect (only those something reaches).
    let outcome = |a: &mut Asm, what: &str, v: Verdict| {
        if !a.is_referenced(l(what)) {
            return;
        }
        a.label(l(what));
        set_verdict(a, plan, &v, true);
        let enforce_deny = v.action == VerdictAction::Deny && mode == Mode::Enforce;
        if enforce_deny {
            answer::call_answer(a, "deny_answer");
        }
        report(a);
        match v.action {
            _ if enforce_deny => {
                a.ja("deny");
            }
            VerdictAction::Tunnel => {
                a.ja("take_switch");
            }
            _ => {
                a.ja("deliver");
            }
        }
    };
    outcome(a, "allow_rule", Verdict { action: VerdictAction::Allow, reason: Reason::Rule, by_rule: true });
    outcome(a, "allow_default", Verdict { action: VerdictAction::Allow, reason: Reason::Default, by_rule: false });
    outcome(a, "deny_rule", Verdict { action: VerdictAction::Deny, reason: Reason::Rule, by_rule: true });
    outcome(a, "deny_default", Verdict { action: VerdictAction::Deny, reason: Reason::Default, by_rule: false });
    outcome(a, "deny_tunnel_rule", Verdict { action: VerdictAction::Deny, reason: Reason::Tunnel, by_rule: true });
    outcome(a, "deny_tunnel_default", Verdict { action: VerdictAction::Deny, reason: Reason::Tunnel, by_rule: false });
    outcome(a, "tunnel_rule", Verdict { action: VerdictAction::Tunnel, reason: Reason::Rule, by_rule: true });
    outcome(a, "deny_unbound", Verdict { action: VerdictAction::Deny, reason: Reason::RedirectUnbound, by_rule: true });
}

/// A redirect rule decided (rule in r9).
fn redirect_block(a: &mut Asm, plan: &PolicyPlan<'_>) {
    let l = |what: &str| policy_label(plan.index, what);
    a.label(l("redirect"));
    match plan.lowered.mode {
        Mode::Enforce => {
            a.note("redirect: the helper's answer says whether the target is bound");
            rule_entry(a, plan, R5);
            a.ldxw(R3, R5, 4).ldxb(R4, R5, 2);
            a.stxw(R7, layout::SLOT, R3).stxb(R7, layout::REDIRECT_FLAGS, R4);
            a.mov64(R1, R6).ld_map(R2, abi::maps::REDIRECTS).call(Helper::MsgRedirectMap);
            a.jne(R0, verdict::PASS, l("deny_unbound"));
            set_verdict(a, plan, &Verdict { action: VerdictAction::Redirect, reason: Reason::Rule, by_rule: true }, true);
            a.note("in a held message, a redirect frees the bytes after it: report that, and close the connection after it");
            a.ldxb(R1, R7, layout::CORKED);
            a.stb(R7, layout::CORKED, 0);
            a.jeq(R1, 0, l("redirect_report"));
            a.ldxw(R1, R6, sk_msg_md::SIZE).ldxdw(R2, R7, layout::BODY_LEFT);
            a.jge(R2, R1, l("redirect_report"));
            a.ldxb(R1, R7, layout::V_FLAGS).or64(R1, i32::from(event_flags::HELD_TAIL)).stxb(R7, layout::V_FLAGS, R1);
            report(a);
            a.stb(R7, layout::PHASE, i32::from(phase::DEAD));
            a.ldxdw(R9, R7, layout::BODY_LEFT);
            apply_no_cork(a, R9);
            a.mov64(R0, verdict::PASS).exit();
            a.label(l("redirect_report"));
            report(a);
            a.stb(R7, layout::REDIRECTED_ONCE, 1);
            a.ldxw(R1, R6, sk_msg_md::SIZE).add64(R1, R8).stxdw(R7, layout::REDIRECT_MSG_END, R1);
            a.stb(R7, layout::FLAGS, i32::from(flags::REDIRECTED));
            a.ja("take_request");
        }
        Mode::Audit => {
            a.note("audit: a redirect is reported (bound or not, by the runtime's bitmap) and the bytes pass");
            rule_entry(a, plan, R5);
            a.ldxw(R3, R5, 4).stxw(R10, AUDIT_SLOT, R3);
            a.stw(R10, AUDIT_KEY, abi::config::BOUND_SLOTS as i32);
            a.ld_map(R1, abi::maps::CONFIG).mov64(R2, R10).add64(R2, i32::from(AUDIT_KEY)).call(Helper::MapLookupElem);
            a.jeq(R0, 0, l("deny_unbound"));
            a.ldxw(R1, R0, 0).ldxw(R2, R10, AUDIT_SLOT).and64(R2, 31).rsh64(R1, R2).and64(R1, 1);
            a.jeq(R1, 0, l("deny_unbound"));
            set_verdict(a, plan, &Verdict { action: VerdictAction::Redirect, reason: Reason::Rule, by_rule: true }, true);
            report(a);
            a.ja("deliver");
        }
    }
}

/// Jumps to the verdict for the rule in r9 (or the default), for a request
/// that does (`switching`) or does not switch protocols. Only the actions
/// the policy's rules have get a branch (the verifier refuses code that
/// nothing reaches).
fn verdict_table(a: &mut Asm, plan: &PolicyPlan<'_>, switching: bool) {
    use crate::lower::LoweredAction as A;
    let p = plan.index;
    let l = |what: &str| policy_label(p, what);
    let rules = &plan.lowered.decision.rules;
    let has = |f: &dyn Fn(&A) -> bool| rules.iter().any(|rule| f(&rule.action));
    let mut branches: Vec<(u8, &str)> = Vec::new();
    if has(&|x| matches!(x, A::Deny)) {
        branches.push((rule_action::DENY, "deny_rule"));
    }
    if has(&|x| matches!(x, A::AllowTunnel)) {
        branches.push((rule_action::ALLOW_TUNNEL, if switching { "tunnel_rule" } else { "allow_rule" }));
    }
    if has(&|x| matches!(x, A::Redirect { .. })) {
        branches.push((rule_action::REDIRECT, if switching { "deny_tunnel_rule" } else { "redirect" }));
    }
    if has(&|x| matches!(x, A::Allow)) {
        branches.push((rule_action::ALLOW, if switching { "deny_tunnel_rule" } else { "allow_rule" }));
    }
    let default = a.fresh_label(&format!("p{p}_default"));
    if let Some(((_, last), rest)) = branches.split_last() {
        a.jeq32(R9, NO_RULE as i32, default.clone());
        rule_entry(a, plan, R2);
        a.ldxb(R3, R2, 0);
        for (code, label) in rest {
            a.jeq(R3, i32::from(*code), l(label));
        }
        a.ja(l(last));
    }
    a.label(default);
    match (plan.lowered.default, switching) {
        (DefaultVerdict::Allow, true) => a.ja(l("deny_tunnel_default")),
        (DefaultVerdict::Allow, false) => a.ja(l("allow_default")),
        (DefaultVerdict::Deny, _) => a.ja(l("deny_default")),
    };
}

fn chunk_phase(a: &mut Asm, plan: &PolicyPlan<'_>, shared: &SharedTables) {
    let p = plan.index;
    let l = |what: &str| policy_label(p, what);
    let names = Names::new(p);
    a.label(chunk_label(p));
    a.note(format!("policy {}: a chunked body's framing (data passes in bulk)", plan.lowered.name));
    a.stw(R7, layout::V_BASE, plan.counter_base as i32);
    a.stw(R7, layout::CHUNK_TAKEN, 0);
    a.ldxb(R1, R7, layout::CHUNK + cs::STATUS).jeq(R1, 2, l("chunk_refused"));
    window(a, p, CHUNK_WINDOW, "chunk");
    run_loop(a, R9, &names.chunk);
    a.ldxw(R9, R7, layout::CHUNK_TAKEN);
    a.ldxb(R1, R7, layout::CHUNK + cs::STATUS);
    a.jeq(R1, 1, l("chunk_done"));
    a.jne(R1, 2, l("chunk_more"));
    a.jeq(R9, 0, l("chunk_refused"));
    a.note("pass the bytes before the offending one; the next run refuses it");
    a.ja("take_r9");

    a.label(l("chunk_done"));
    a.note("the body ended: a switch request's waits for the server's consent (which decides its span);");
    a.note("any other's span ends here");
    answer::jump_if_switching(a, "body_switch_wait");
    span_end(a, R9);
    a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
    a.ja("take_r9");

    a.label(l("chunk_more"));
    a.ldxb(R1, R7, layout::CHUNK + cs::STATE);
    a.jne(R1, i32::from(shared.chunk_data), "take_r9_some");
    a.note("chunk data: pass it in bulk with the line before it, at most to this message's end");
    a.note("compare the remaining data with what this message has left after the line: a size near 2^64 must not wrap");
    a.ldxdw(R1, R7, layout::CHUNK + cs::REMAINING);
    a.ldxw(R2, R6, sk_msg_md::SIZE);
    a.mov64(R3, 0).jgt(R9, R2, l("chunk_left"));
    a.mov64(R3, R2).sub64(R3, R9);
    a.label(l("chunk_left"));
    a.jgt(R1, R3, l("chunk_huge"));
    a.stdw(R7, layout::CHUNK + cs::REMAINING, 0);
    a.stb(R7, layout::CHUNK + cs::STATE, i32::from(shared.chunk_data_cr));
    a.add64(R9, R1).ja("take_r9");
    a.label(l("chunk_huge"));
    a.sub64(R1, R3).stxdw(R7, layout::CHUNK + cs::REMAINING, R1);
    a.mov64(R9, R2).ja("take_r9");

    a.label(l("chunk_refused"));
    a.note("the offending byte: the request's span ends here, and a deny malformed:chunk");
    a.ldxw(R9, R7, layout::CHUNK_TAKEN);
    span_end(a, R9);
    set_verdict(a, plan, &Verdict { action: VerdictAction::Deny, reason: Reason::Malformed(MalformedKind::Chunk), by_rule: false }, false);
    a.ldxw(R1, R7, layout::CHUNK_TAKEN).add64(R1, R8).stxdw(R7, layout::V_START, R1);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    a.ldxw(R1, R7, layout::CHUNK_TAKEN).add64(R8, R1);
    match plan.lowered.mode {
        Mode::Enforce => a.ja("deny"),
        Mode::Audit => a.ja("tunnel"),
    };
}

/// A span-end record for the open chunked request: end = r8 + `taken`.
fn span_end(a: &mut Asm, taken: Reg) {
    a.stb(R7, layout::V_RECORD, i32::from(record::SPAN_END));
    a.mov64(R1, R8).add64(R1, taken).stxdw(R7, layout::V_END, R1);
    a.ldxw(R1, R7, layout::INDEX).sub64(R1, 1).stxw(R7, layout::V_INDEX, R1);
    a.ldxb(R1, R7, layout::REQ_FLAGS).stxb(R7, layout::V_FLAGS, R1);
    report(a);
}

/// The exits every policy shares: `deliver` (an allowed or audited
/// request: take its bytes), `take_request` (a redirected one), `take_r9`
/// (pass r9 bytes of a body), `tunnel`, `internal`, `pass_exit`,
/// `body_pass`, and the long-body phase `body`.
pub fn emit_shared_exits(a: &mut Asm, chunk_start: u8) {
    let deliver = a.is_referenced("deliver");
    if deliver {
        a.label("deliver");
        a.note("the request goes to the server: count it for the receive side (abi::peer)");
        answer::set_request_kind(a, CONNECT_FORM, 1i32 << HeaderId::UPGRADE);
        answer::call_forwarded(a);
        a.stb(R7, layout::FLAGS, 0);
    }
    if deliver || a.is_referenced("take_request") || a.is_referenced("take_switch") {
        a.label("take_request");
        a.note("take the request: head + Content-Length, at most to this message's end (the rest in the body phase), or");
        a.note("the head of a chunked body. Never apply_bytes past the message: under kTLS the program runs again at");
        a.note("every record anyway, so the body is counted here, the same way on both paths (docs/program.md)");
        a.ldxb(R1, R7, layout::V_FLAGS).stxb(R7, layout::REQ_FLAGS, R1);
        a.ldxdw(R9, R7, layout::BODY_LEFT);
        a.stdw(R7, layout::BODY_LEFT, 0);
        a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
        a.ldxb(R1, R7, layout::V_FLAGS);
        a.jset(R1, i32::from(event_flags::CHUNKED), "take_chunked");
        a.ldxw(R1, R6, sk_msg_md::SIZE);
        a.jle(R9, R1, "take_whole");
        a.sub64(R9, R1).stxdw(R7, layout::BODY_LEFT, R9);
        a.stb(R7, layout::PHASE, i32::from(phase::BODY));
        a.mov64(R9, R1).ja("take_r9");
        a.label("take_whole");
        a.note("a switch request ends in this message: wait for the server's consent");
        answer::jump_if_switching(a, "body_switch_wait");
        a.ja("take_r9");
        a.label("take_chunked");
        for offset in (0..(layout::DEC_LIST - layout::CHUNK)).step_by(8) {
            a.stdw(R7, layout::CHUNK + offset, 0);
        }
        a.stb(R7, layout::CHUNK + cs::STATE, i32::from(chunk_start));
        a.stb(R7, layout::PHASE, i32::from(phase::CHUNK));
        a.ja("take_r9");
    }

    if a.is_referenced("take_switch") {
        a.label("take_switch");
        a.note("an allowed switch request goes to the server: its head and Content-Length body (a chunked body is part");
        a.note("of the tunnel); then the connection waits for the server's consent (language.md §6)");
        answer::set_request_kind(a, CONNECT_FORM, 1i32 << HeaderId::UPGRADE);
        answer::call_forwarded(a);
        a.stb(R7, layout::FLAGS, i32::from(flags::SWITCHING));
        a.ja("take_request");
    }

    a.label("take_r9_some");
    a.jeq(R9, 0, "internal_nothing").comment("nothing taken: never pass with apply_bytes(0)");
    a.label("take_r9");
    a.note("pass r9 bytes: the next run starts after them");
    a.ldxdw(R1, R7, layout::OFFSET).add64(R1, R9).stxdw(R7, layout::OFFSET, R1);
    apply_no_cork(a, R9);
    a.ja("body_pass");

    a.label("body");
    a.note("a Content-Length body that goes on past the message its head came in: this message's share of it");
    a.ldxdw(R9, R7, layout::BODY_LEFT);
    a.ldxw(R1, R6, sk_msg_md::SIZE);
    a.jle(R9, R1, "body_last");
    a.sub64(R9, R1).stxdw(R7, layout::BODY_LEFT, R9);
    a.mov64(R9, R1).ja("take_r9");
    a.label("body_last");
    a.stdw(R7, layout::BODY_LEFT, 0);
    a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
    answer::jump_if_switching(a, "body_switch_wait");
    a.ja("take_r9");
    a.label("body_switch_wait");
    answer::enter_switch_wait(a);
    a.ja("take_r9");

    if a.is_referenced("tunnel") {
        a.label("tunnel");
        a.note("a tunnel, or audit after framing was lost: everything passes from here");
        a.stb(R7, layout::PHASE, i32::from(phase::PASS_ALL));
        a.stb(R7, layout::FLAGS, 0);
        a.mov64(R1, R6).mov32(R2, -1).call(Helper::MsgApplyBytes);
        a.mov64(R1, R6).mov64(R2, 0).call(Helper::MsgCorkBytes);
        a.ld_imm64(R1, APPLY_MAX);
        a.ldxdw(R2, R7, layout::OFFSET).add64(R2, R1).stxdw(R7, layout::OFFSET, R2);
        a.ja("pass_exit");
    }

    a.label("body_pass");
    a.ldxb(R1, R7, layout::FLAGS);
    a.jset(R1, i32::from(flags::REDIRECTED), "redirect_exit");
    a.label("pass_exit");
    a.note("pass; but a redirect earlier in this message would take these bytes too: redirect them to the connection itself");
    a.ldxdw(R1, R7, layout::REDIRECT_MSG_END);
    a.jlt(R8, R1, "self_redirect");
    a.note("a held message the kernel keeps for the socket is freed only by a redirect: when this verdict covers the");
    a.note("whole message, redirect it to the connection itself, so that a later redirect cannot lose bytes");
    a.ldxb(R1, R7, layout::CORKED);
    a.jeq(R1, 0, "plain_pass");
    a.ldxw(R1, R6, sk_msg_md::SIZE).add64(R1, R8);
    a.ldxdw(R2, R7, layout::OFFSET);
    a.jge(R2, R1, "self_redirect");
    a.label("plain_pass");
    a.mov64(R0, verdict::PASS).exit();

    a.label("redirect_exit");
    a.mov64(R1, R6).ld_map(R2, abi::maps::REDIRECTS);
    a.ldxw(R3, R7, layout::SLOT).ldxb(R4, R7, layout::REDIRECT_FLAGS);
    a.call(Helper::MsgRedirectMap);
    a.exit();

    a.label("self_redirect");
    a.note("the connection's own l7_sockets key, built from the context (docs/kernel-mechanics.md)");
    a.stb(R7, layout::CORKED, 0);
    answer::own_key(a, R6, KEY);
    a.mov64(R1, R6).ld_map(R2, abi::maps::SOCKETS).mov64(R3, R10).add64(R3, i32::from(KEY)).mov64(R4, 0);
    a.call(Helper::MsgRedirectHash);
    a.exit();

    a.note("the program cannot judge the bytes (a helper failed): deny with an internal reason (fail closed)");
    for (label, kind) in [
        ("internal_pull", abi::internal::PULL_DATA),
        ("internal_nothing", abi::internal::NOTHING_TAKEN),
        ("internal_unmapped_hold", abi::internal::SPLIT_HEAD_UNMAPPED),
    ] {
        if a.is_referenced(label) {
            a.label(label);
            a.stb(R7, layout::V_KIND, i32::from(kind));
            a.ja("internal");
        }
    }
    a.label("internal");
    a.stb(R7, layout::V_ACTION, i32::from(abi::action_code(VerdictAction::Deny)));
    a.stb(R7, layout::V_CLASS, i32::from(abi::internal::CLASS));
    a.stb(R7, layout::V_RECORD, i32::from(record::VERDICT));
    a.stb(R7, layout::V_FLAGS, 0);
    a.stw(R7, layout::V_RULE, NO_RULE as i32);
    a.stxdw(R7, layout::V_START, R8);
    a.stdw(R7, layout::V_END, 0);
    a.ldxw(R1, R7, layout::INDEX).stxw(R7, layout::V_INDEX, R1);
    report(a);
    a.ja("deny");
}

/// `void l7_report(state, msg)`: counts a verdict record per reason and
/// per rule, and writes it to the ring buffer when the rule logs, in
/// audit mode, or when `l7_config` asks for every verdict.
pub fn emit_report(a: &mut Asm) {
    a.function("l7_report");
    a.note("l7_report(state, msg): counters, then the event if asked for");
    a.mov64(R6, R1).mov64(R7, R2);
    a.ldxb(R1, R6, layout::V_RECORD).jne(R1, i32::from(record::VERDICT), "report_event");
    answer::reason_counter(a, R6, "report_other");
    count(a, "report_rule");
    a.label("report_other");
    a.jne(R2, i32::from(abi::internal::CLASS), "report_event");
    let last = abi::internal::NAMES.len() as i32 - 1;
    a.mov64(R1, R3).jle(R1, last, "report_internal");
    a.mov64(R1, last);
    a.label("report_internal");
    a.add64(R1, abi::internal::slot(0) as i32);
    a.ldxw(R2, R6, layout::V_BASE).add64(R1, R2);
    count(a, "report_rule");
    a.label("report_rule");
    a.ldxw(R1, R6, layout::V_RULE).jeq32(R1, NO_RULE as i32, "report_event");
    a.ldxw(R2, R6, layout::V_BASE).add64(R1, R2).add64(R1, abi::REASON_SLOTS as i32);
    count(a, "report_event");

    a.label("report_event");
    a.ldxb(R1, R6, layout::V_FLAGS);
    a.jset(R1, i32::from(event_flags::AUDIT | event_flags::LOGGED), "report_emit");
    a.stw(R10, -4, 0);
    a.ld_map(R1, abi::maps::CONFIG).mov64(R2, R10).add64(R2, -4).call(Helper::MapLookupElem);
    a.jeq(R0, 0, "report_out");
    a.ldxw(R1, R0, 0);
    a.jset(R1, abi::config::EVENTS_ALL as i32, "report_emit");
    a.ja("report_out");
    a.label("report_emit");
    let at = |field: i16| EVENT + field;
    a.call(Helper::KtimeGetNs).stxdw(R10, at(Event::OFFSET_TIME), R0);
    a.ldxdw(R1, R6, layout::V_START).stxdw(R10, at(Event::OFFSET_START), R1);
    a.ldxdw(R1, R6, layout::V_END).stxdw(R10, at(Event::OFFSET_END), R1);
    a.ldxw(R1, R6, layout::V_INDEX).stxw(R10, at(Event::OFFSET_INDEX), R1);
    a.ldxw(R1, R6, layout::V_RULE).stxw(R10, at(Event::OFFSET_RULE), R1);
    a.ldxb(R1, R6, layout::POLICY).stxh(R10, at(Event::OFFSET_POLICY), R1);
    a.ldxb(R1, R6, layout::V_ACTION).stxb(R10, at(Event::OFFSET_ACTION), R1);
    a.ldxb(R1, R6, layout::V_CLASS).stxb(R10, at(Event::OFFSET_REASON_CLASS), R1);
    a.ldxb(R1, R6, layout::V_KIND).stxb(R10, at(Event::OFFSET_REASON_KIND), R1);
    a.ldxb(R1, R6, layout::V_FLAGS).stxb(R10, at(Event::OFFSET_FLAGS), R1);
    a.ldxb(R1, R6, layout::V_RECORD).stxb(R10, at(Event::OFFSET_RECORD), R1);
    a.stb(R10, at(Event::OFFSET_RECORD) + 1, 0);
    a.ldxw(R1, R7, sk_msg_md::REMOTE_PORT).stxw(R10, at(Event::OFFSET_REMOTE_PORT), R1);
    a.ldxw(R1, R7, sk_msg_md::LOCAL_PORT).stxw(R10, at(Event::OFFSET_LOCAL_PORT), R1);
    a.call(Helper::GetCurrentPidTgid).stxdw(R10, at(Event::OFFSET_PID_TGID), R0);
    a.call(Helper::GetCurrentCgroupId).stxdw(R10, at(Event::OFFSET_CGROUP_ID), R0);
    a.ld_map(R1, abi::maps::EVENTS).mov64(R2, R10).add64(R2, i32::from(EVENT)).mov64(R3, Event::SIZE as i32).mov64(R4, 0);
    a.call(Helper::RingbufOutput);
    a.jeq(R0, 0, "report_out");
    a.note("the ring buffer is full: the event is lost, and counted (abi::gate::EVENTS_LOST)");
    a.stw(R10, -8, 0);
    a.ld_map(R1, abi::maps::GATE).mov64(R2, R10).add64(R2, -8).call(Helper::MapLookupElem);
    a.jeq(R0, 0, "report_out");
    a.mov64(R1, 1).atomic_add64(R0, abi::gate::EVENTS_LOST, R1);
    a.label("report_out");
    a.mov64(R0, 0).exit();
}

/// counters[r1] += 1 (per CPU), then `next`.
fn count(a: &mut Asm, next: &str) {
    a.stxw(R10, -8, R1);
    a.ld_map(R1, abi::maps::COUNTERS).mov64(R2, R10).add64(R2, -8).call(Helper::MapLookupElem);
    a.jeq(R0, 0, next);
    a.ldxdw(R1, R0, 0).add64(R1, 1).stxdw(R0, 0, R1);
    a.ja(next);
}

pub use callbacks::emit as emit_callbacks;
