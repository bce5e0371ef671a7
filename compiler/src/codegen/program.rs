//! The phases of a governed connection (docs/program.md): the head phase
//! (window, pull, connection-start checks, the scan, the decision, the
//! verdict), the chunked-body phase, the long-body phase, and the exits
//! and the `l7_report` function they share. One code path for every
//! policy: what differs between policies is data, the governing one's
//! descriptor (`tables::desc`) and the `P_*` fields scope selection set.
//!
//! Registers in the main program: r6 = msg, r7 = the connection's state,
//! r8 = the stream offset where this run's data starts (from the phase
//! dispatch on), r9 = scratch kept across calls.

use super::answer;
use super::callbacks::{self, names, tables_base, Shape, CTX, CTX_DATA, CTX_DATA_END, CTX_STATE};
use super::layout::{self, chunk as cs, flags, head as hs, phase};
use super::tables::{desc, lane, rule_action, SharedTables};
use crate::abi::{self, event_flags, record, Event, NO_RULE};
use crate::bpf::{sk_msg_md, verdict, Asm, Helper, Label, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::verdict::Reason;
use crate::http::{MalformedKind, HTTP2_PREFACE_LINE};
use crate::lower::START;
use crate::model::VerdictAction;
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

/// What the phases every policy shares need from the compilation.
pub struct Plan<'a> {
    pub shared: &'a SharedTables,
    pub shape: Shape,
    /// Bytes of the automaton states' area (every lane slot).
    pub area_bytes: u32,
}

fn label(what: &str) -> Label {
    Label::from(format!("p_{what}"))
}

/// The head phase's label.
pub const HEAD: &str = "p_head";
/// The chunked-body phase's label.
pub const CHUNK: &str = "p_chunk";

/// Emits the head and chunk phases (main program code), one for every
/// policy.
pub fn emit_phases(a: &mut Asm, plan: &Plan<'_>) {
    head_phase(a, plan);
    chunk_phase(a, plan);
}

/// `apply_bytes(reg)` (a register or constant) and `cork_bytes(0)`.
fn apply_no_cork(a: &mut Asm, amount: Reg) {
    a.mov64(R1, R6).mov64(R2, amount).call(Helper::MsgApplyBytes);
    a.mov64(R1, R6).mov64(R2, 0).call(Helper::MsgCorkBytes);
}

/// The most bytes one window reads: a constant, or the policy's
/// `P_WINDOW`.
enum Limit {
    Const(i32),
    Policy,
}

/// r9 = min(msg->size, limit); pulls `[0, r9)` when it is not contiguous
/// (a failed pull denies); fills the loop context.
fn window(a: &mut Asm, limit: Limit, what: &str) {
    let ok = label(&format!("{what}_window_ok"));
    let pulled = label(&format!("{what}_pulled"));
    a.ldxw(R9, R6, sk_msg_md::SIZE).comment("msg->size");
    match limit {
        Limit::Const(limit) => {
            a.jle(R9, limit, ok.clone());
            a.mov64(R9, limit);
        }
        Limit::Policy => {
            a.ldxw(R1, R7, layout::P_WINDOW).comment("the policy's window: header_bytes + 1, or the HTTP/2 preface");
            a.jle(R9, R1, ok.clone());
            a.mov64(R9, R1);
        }
    }
    a.label(ok);
    a.ldxdw(R2, R6, sk_msg_md::DATA).ldxdw(R3, R6, sk_msg_md::DATA_END).sub64(R3, R2);
    a.note("data == data_end with bytes to read: the message is not mapped (kTLS gives every record so)");
    a.mov64(R1, 0);
    let mapped = label(&format!("{what}_mapped"));
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

/// `reg` = the governing policy's descriptor (clobbers r0).
fn policy_desc(a: &mut Asm, reg: Reg, shape: &Shape) {
    tables_base(a, reg);
    a.ldxw(R0, R7, layout::P_DESC).and64(R0, shape.blob_mask as i32).add64(reg, R0);
}

/// Fills the verdict fields the report reads (start = r8).
struct Verdict {
    action: VerdictAction,
    reason: Reason,
    /// The rule is in r9 (else no rule).
    by_rule: bool,
}

fn set_verdict(a: &mut Asm, shape: &Shape, v: &Verdict, shared_flags: bool) {
    let (class, kind) = abi::reason_code(v.reason);
    a.stb(R7, layout::V_ACTION, i32::from(abi::action_code(v.action)));
    a.stb(R7, layout::V_CLASS, i32::from(class));
    a.stb(R7, layout::V_KIND, i32::from(kind));
    a.stb(R7, layout::V_RECORD, i32::from(record::VERDICT));
    a.ldxw(R1, R7, layout::INDEX).stxw(R7, layout::V_INDEX, R1).add64(R1, 1).stxw(R7, layout::INDEX, R1);
    a.stxdw(R7, layout::V_START, R8);
    if shared_flags {
        // V_FLAGS holds the framing's CHUNKED bit (head_done).
        a.ldxb(R1, R7, layout::V_FLAGS);
    } else {
        a.mov64(R1, 0);
    }
    a.ldxb(R2, R7, layout::P_AUDIT).or64(R1, R2).comment("AUDIT when the policy audits");
    if v.by_rule {
        a.stxw(R7, layout::V_RULE, R9);
        rule_entry(a, shape, R2);
        let plain = a.fresh_label("unlogged");
        a.ldxb(R3, R2, 1).jeq(R3, 0, plain.clone());
        a.or64(R1, i32::from(event_flags::LOGGED));
        a.label(plain);
    } else {
        a.stw(R7, layout::V_RULE, NO_RULE as i32);
    }
    a.stxb(R7, layout::V_FLAGS, R1);
}

/// reg = &rules[r9] of the governing policy (clobbers r0 and reg only).
fn rule_entry(a: &mut Asm, shape: &Shape, reg: Reg) {
    policy_desc(a, reg, shape);
    a.ldxw(R0, reg, desc::RULES_MASK).and64(R0, R9).lsh64(R0, 3);
    a.ldxw(reg, reg, desc::RULES).add64(R0, reg).and64(R0, shape.blob_mask as i32);
    tables_base(a, reg);
    a.add64(reg, R0);
}

fn report(a: &mut Asm) {
    a.mov64(R1, R7).mov64(R2, R6).call_local("l7_report");
}

/// Jumps to `enforce` when the governing policy enforces, else to
/// `audit` (clobbers r1).
fn by_mode(a: &mut Asm, enforce: impl Into<Label>, audit: impl Into<Label>) {
    a.ldxb(R1, R7, layout::P_AUDIT);
    a.jne(R1, 0, audit);
    a.ja(enforce);
}

fn head_phase(a: &mut Asm, plan: &Plan<'_>) {
    let l = label;
    let shared = plan.shared;
    let shape = &plan.shape;
    let preface = HTTP2_PREFACE_LINE;

    a.label(HEAD);
    a.note("the request head, for every policy: the governing one's tables through P_DESC (docs/program.md)");
    window(a, Limit::Policy, "head");

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
    for offset in (8..plan.area_bytes as i16).step_by(8) {
        a.stdw(R7, layout::AREA + offset, 0);
    }
    a.stw(R7, layout::AREA, START as i32).comment("the method lane starts");
    a.stw(R7, layout::AREA + 4, START as i32).comment("the header-name lane starts");
    for word in 0..=shape.fact_mask as i16 {
        a.stdw(R7, shape.facts + word * 8, 0);
    }
    a.stw(R7, layout::DEC_CANDIDATES, 0).stb(R7, layout::DEC_MODE, 0);
    a.add64(R9, callbacks::SCAN_UNROLL as i32 - 1).div64(R9, callbacks::SCAN_UNROLL as i32).comment("iterations: bytes / SCAN_UNROLL, rounded up");
    run_loop(a, R9, names::SCAN);
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
    set_verdict(a, shape, &Verdict { action: VerdictAction::Deny, reason: Reason::Http2, by_rule: false }, false);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    by_mode(a, "deny", "tunnel");

    // Opaque connection: a tunnel when the policy allows it; denied when
    // not (in audit mode reported as denied, and the rest passes).
    a.label(l("opaque"));
    policy_desc(a, R2, shape);
    a.ldxb(R1, R2, desc::OPAQUE_DENY).jne(R1, 0, l("opaque_denied"));
    set_verdict(a, shape, &Verdict { action: VerdictAction::Tunnel, reason: Reason::Opaque, by_rule: false }, false);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    a.ja("tunnel");
    a.label(l("opaque_denied"));
    set_verdict(a, shape, &Verdict { action: VerdictAction::Deny, reason: Reason::Opaque, by_rule: false }, false);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    by_mode(a, "deny", "tunnel");

    // A refused head.
    a.label(l("refused"));
    a.note("a refused head: its reason from the scan");
    set_verdict(a, shape, &Verdict { action: VerdictAction::Deny, reason: Reason::Default, by_rule: false }, false);
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
    by_mode(a, l("refused_enforce"), l("refused_audit"));
    a.label(l("refused_enforce"));
    answer::call_answer(a, "deny_answer");
    report(a);
    a.ja("deny");
    a.label(l("refused_audit"));
    report(a);
    a.ja("tunnel");

    // A complete head: facts, decision, verdict.
    a.label(l("complete"));
    a.note("the method's id, the accepted patterns' facts, then the rules in order");
    tables_base(a, R2);
    a.ldxw(R0, R7, layout::P_LANES).and64(R0, shape.blob_mask as i32).add64(R2, R0).comment("lane 0: the method");
    a.ldxw(R1, R7, layout::AREA);
    a.ldxw(R0, R2, lane::MASK).and64(R1, R0);
    a.ldxw(R0, R2, lane::A).add64(R1, R0).and64(R1, shape.blob_mask as i32);
    tables_base(a, R2);
    a.add64(R2, R1).ldxb(R1, R2, 0).stxb(R7, layout::METHOD_ID, R1);
    a.note("the at-end lanes' accept sets into the facts, lane by lane; a collection the bound cut short fails closed");
    a.stw(R7, layout::DEC_LIST, 2).comment("from lane 2: lanes 0 and 1 are the method's and the names' tokens");
    a.stw(R7, layout::DEC_LIST_AT, 0).stw(R7, layout::DEC_LIST_END, 0);
    policy_desc(a, R2, shape);
    a.ldxw(R9, R2, desc::COLLECT_BOUND);
    run_loop(a, R9, names::COLLECT);
    a.ldxw(R1, R7, layout::DEC_LIST_AT).ldxw(R2, R7, layout::DEC_LIST_END);
    a.jlt(R1, R2, "internal_nothing");
    policy_desc(a, R2, shape);
    a.ldxw(R1, R7, layout::DEC_LIST).ldxw(R3, R2, desc::LANE_COUNT);
    a.jlt(R1, R3, "internal_nothing");
    a.ldxw(R9, R2, desc::STICKY_COUNT);
    a.jeq(R9, 0, l("no_sticky"));
    a.lsh64(R9, 6);
    run_loop(a, R9, names::STICKY);
    a.label(l("no_sticky"));
    a.stw(R7, layout::DEC_RULE, 0).stw(R7, layout::DEC_MATCH, NO_RULE as i32);
    a.stb(R7, layout::DEC_CLAUSE, 0).stb(R7, layout::DEC_OK, 1);
    a.note("the guarded decision over the candidates, or every rule in order when there are too many");
    policy_desc(a, R2, shape);
    a.ldxw(R1, R2, desc::RECORD_COUNT);
    a.jeq(R1, 0, l("decided"));
    a.ldxb(R1, R7, layout::DEC_MODE);
    a.jne(R1, 0, l("linear"));
    a.stw(R7, layout::DEC_LIST, 0);
    a.ldxw(R1, R2, desc::UNGUARDED_START).stxw(R7, layout::DEC_LIST_AT, R1);
    a.ldxw(R1, R2, desc::UNGUARDED_END).stxw(R7, layout::DEC_LIST_END, R1);
    a.stw(R7, layout::DEC_RECORD, 0).stw(R7, layout::DEC_RECORD_END, 0);
    a.ldxw(R9, R2, desc::GUARDED_BOUND);
    run_loop(a, R9, names::GUARDED);
    a.ldxb(R1, R7, layout::DEC_MODE);
    a.jeq(R1, 2, l("decided"));
    a.ja("internal_nothing").comment("the bound ran out before the decision ended: fail closed");
    a.label(l("linear"));
    a.ldxw(R9, R2, desc::RECORD_COUNT);
    run_loop(a, R9, names::DECIDE);
    a.label(l("decided"));

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
    verdict_table(a, shape, false);
    a.label(l("switching"));
    verdict_table(a, shape, true);

    redirect_block(a, shape);
    // Each verdict: report, then its effect.
    let outcome = |a: &mut Asm, what: &str, v: Verdict| {
        a.label(l(what));
        set_verdict(a, shape, &v, true);
        match v.action {
            VerdictAction::Deny => {
                let audit = l(&format!("{what}_audit"));
                a.ldxb(R1, R7, layout::P_AUDIT).jne(R1, 0, audit.clone());
                answer::call_answer(a, "deny_answer");
                report(a);
                a.ja("deny");
                a.label(audit);
                report(a);
                a.ja("deliver");
            }
            VerdictAction::Tunnel => {
                report(a);
                a.ja("take_switch");
            }
            _ => {
                report(a);
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
fn redirect_block(a: &mut Asm, shape: &Shape) {
    let l = label;
    a.label(l("redirect"));
    by_mode(a, l("redirect_enforce"), l("redirect_audit"));
    a.label(l("redirect_enforce"));
    a.note("redirect: the helper's answer says whether the target is bound");
    rule_entry(a, shape, R5);
    a.ldxw(R3, R5, 4).ldxb(R4, R5, 2);
    a.stxw(R7, layout::SLOT, R3).stxb(R7, layout::REDIRECT_FLAGS, R4);
    a.mov64(R1, R6).ld_map(R2, abi::maps::REDIRECTS).call(Helper::MsgRedirectMap);
    a.jne(R0, verdict::PASS, l("deny_unbound"));
    set_verdict(a, shape, &Verdict { action: VerdictAction::Redirect, reason: Reason::Rule, by_rule: true }, true);
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

    a.label(l("redirect_audit"));
    a.note("audit: a redirect is reported (bound or not, by the runtime's bitmap) and the bytes pass");
    rule_entry(a, shape, R5);
    a.ldxw(R3, R5, 4).stxw(R10, AUDIT_SLOT, R3);
    a.stw(R10, AUDIT_KEY, abi::config::BOUND_SLOTS as i32);
    a.ld_map(R1, abi::maps::CONFIG).mov64(R2, R10).add64(R2, i32::from(AUDIT_KEY)).call(Helper::MapLookupElem);
    a.jeq(R0, 0, l("deny_unbound"));
    a.ldxw(R1, R0, 0).ldxw(R2, R10, AUDIT_SLOT).and64(R2, 31).rsh64(R1, R2).and64(R1, 1);
    a.jeq(R1, 0, l("deny_unbound"));
    set_verdict(a, shape, &Verdict { action: VerdictAction::Redirect, reason: Reason::Rule, by_rule: true }, true);
    report(a);
    a.ja("deliver");
}

/// Jumps to the verdict for the rule in r9 (or the default), for a request
/// that does (`switching`) or does not switch protocols: by the rule's
/// action in the policy's rule table (an unknown action denies).
fn verdict_table(a: &mut Asm, shape: &Shape, switching: bool) {
    let l = label;
    let default = a.fresh_label("default");
    a.jeq32(R9, NO_RULE as i32, default.clone());
    rule_entry(a, shape, R2);
    a.ldxb(R3, R2, 0);
    let (tunnel, redirect, allow) =
        if switching { ("tunnel_rule", "deny_tunnel_rule", "deny_tunnel_rule") } else { ("allow_rule", "redirect", "allow_rule") };
    a.jeq(R3, i32::from(rule_action::ALLOW), l(allow));
    a.jeq(R3, i32::from(rule_action::ALLOW_TUNNEL), l(tunnel));
    a.jeq(R3, i32::from(rule_action::REDIRECT), l(redirect));
    a.ja(l("deny_rule")).comment("deny, or an unknown action: fail closed");
    a.label(default);
    policy_desc(a, R2, shape);
    a.ldxb(R1, R2, desc::DEFAULT_DENY).jne(R1, 0, l("deny_default"));
    a.ja(l(if switching { "deny_tunnel_default" } else { "allow_default" }));
}

fn chunk_phase(a: &mut Asm, plan: &Plan<'_>) {
    let l = label;
    let shared = plan.shared;
    let shape = &plan.shape;
    a.label(CHUNK);
    a.note("a chunked body's framing (data passes in bulk)");
    a.stw(R7, layout::CHUNK_TAKEN, 0);
    a.ldxb(R1, R7, layout::CHUNK + cs::STATUS).jeq(R1, 2, l("chunk_refused"));
    window(a, Limit::Const(CHUNK_WINDOW), "chunk");
    run_loop(a, R9, names::CHUNK);
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
    set_verdict(a, shape, &Verdict { action: VerdictAction::Deny, reason: Reason::Malformed(MalformedKind::Chunk), by_rule: false }, false);
    a.ldxw(R1, R7, layout::CHUNK_TAKEN).add64(R1, R8).stxdw(R7, layout::V_START, R1);
    a.stdw(R7, layout::V_END, 0);
    report(a);
    a.ldxw(R1, R7, layout::CHUNK_TAKEN).add64(R8, R1);
    by_mode(a, "deny", "tunnel");
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
