//! What the program does with the server's side of the connection
//! (language.md §6; docs/program.md, "Answers and switches"): deny
//! answers written into the message and redirected into the client's own
//! receive queue, the switch wait, and the `l7_peer` record it shares with
//! the receive side (`abi::peer`, `l7c_abi::receive`).
//!
//! Registers in the main program as in `program.rs`: r6 = msg, r7 = the
//! connection's state, r8 = the stream offset of this run's first byte.
//!
//! Invariants:
//! - An answer is written only over bytes the program owns: the message
//!   is cut or grown to the answer's exact length first (`pop_data` after
//!   the answer, `push_data` at 0, which never splits an element), pulled,
//!   and every byte of it is overwritten (pushed bytes are not zeroed).
//! - Any helper failure on the way falls back to `reset`, and the event
//!   says so: a deny is never weakened into a pass.
//! - A missing or lost `l7_peer` record answers nothing after the first
//!   request and opens no switch (both fail closed).

use super::blob::Blob;
use super::callbacks::tables_base;
use super::layout::{self, flags, phase};
use super::CodegenError;
use crate::abi::{self, event_flags, peer, record, NO_RULE};
use crate::bpf::{sk_msg_md, Asm, Helper, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::http::{LimitKind, MalformedKind};
use crate::model::{Action, Program as Policies, Rule};
use crate::verdict::{answer_bytes, answer_status, Reason, VerdictAction};

/// The longest answer the program writes (bytes; a multiple of 8). A
/// policy whose answers would be longer (a rule name of more than about
/// 110 bytes) is refused by name.
pub const ANSWER_MAX: u32 = 384;
/// `BPF_F_INGRESS`: into the socket's own receive queue.
const BPF_F_INGRESS: i32 = 1;
/// The connection's key on the stack of the functions below.
const FN_KEY: i16 = -48;
/// The connection's key on the main stack (where `program.rs` builds it
/// for its self redirect).
const MAIN_KEY: i16 = -72;

/// Where the answers are in `.rodata`.
#[derive(Debug, Clone, Copy)]
pub struct AnswerTables {
    /// Per counter index (`abi::counter_index`): `offset | len << 32` of
    /// the answer to a deny counted there; `len` 0: never answered.
    pub dir: u32,
    pub dir_entries: u32,
    /// The last offset an answer may start at (the texts are followed by
    /// `ANSWER_MAX` bytes of padding, so a full-width copy stays inside).
    pub last_offset: u32,
}

/// Every reason with its counter slot.
fn reasons() -> Vec<Reason> {
    let mut all: Vec<Reason> = abi::SINGLE_REASON_SLOTS.iter().map(|(reason, _)| *reason).collect();
    all.extend(MalformedKind::ALL.iter().map(|kind| Reason::Malformed(*kind)));
    all.extend(LimitKind::ALL.iter().map(|kind| Reason::Limit(*kind)));
    all
}

/// The answers of every policy, laid out by counter index.
pub fn tables(blob: &mut Blob, program: &Policies) -> Result<AnswerTables, CodegenError> {
    let mut texts: Vec<u8> = Vec::new();
    let mut placed: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
    let mut dir: Vec<u64> = Vec::new();
    let mut place = |bytes: Vec<u8>, texts: &mut Vec<u8>| -> u64 {
        let len = bytes.len() as u64;
        let offset = *placed.entry(bytes.clone()).or_insert_with(|| {
            let at = texts.len() as u32;
            texts.extend_from_slice(&bytes);
            at
        });
        u64::from(offset) | len << 32
    };
    for policy in &program.policies {
        let mut slots = vec![0u64; abi::REASON_SLOTS];
        for reason in reasons() {
            if let Some(status) = answer_status(reason, policy.deny_with) {
                let bytes = answer_bytes(status, reason, None);
                check_length(policy.name.as_str(), None, bytes.len())?;
                slots[abi::reason_slot(reason)] = place(bytes, &mut texts);
            }
        }
        dir.extend(slots);
        for rule in &policy.rules {
            dir.push(rule_answer(policy, rule, &mut texts, &mut place)?);
        }
    }
    let texts_len = texts.len() as u32;
    let texts_at = blob.add("deny answers", &texts, ANSWER_MAX as usize);
    let dir: Vec<u64> = dir.into_iter().map(|entry| if entry >> 32 == 0 { 0 } else { entry + u64::from(texts_at) }).collect();
    let dir_entries = dir.len() as u32;
    let dir_at = blob.add_u64("deny answer directory", &dir, 0);
    Ok(AnswerTables { dir: dir_at, dir_entries, last_offset: texts_at + texts_len })
}

fn rule_answer(
    policy: &crate::model::Policy,
    rule: &Rule,
    texts: &mut Vec<u8>,
    place: &mut impl FnMut(Vec<u8>, &mut Vec<u8>) -> u64,
) -> Result<u64, CodegenError> {
    if !matches!(rule.action, Action::Deny) {
        return Ok(0);
    }
    let Some(status) = answer_status(Reason::Rule, policy.deny_with) else { return Ok(0) };
    let bytes = answer_bytes(status, Reason::Rule, Some(&rule.name));
    check_length(&policy.name, Some(&rule.name), bytes.len())?;
    Ok(place(bytes, texts))
}

fn check_length(policy: &str, rule: Option<&str>, len: usize) -> Result<(), CodegenError> {
    if len <= ANSWER_MAX as usize {
        return Ok(());
    }
    Err(CodegenError::Unsupported {
        policy: policy.to_owned(),
        construct: format!(
            "a deny answer of {len} bytes{} (at most {ANSWER_MAX}: shorten the rule's name, or use `deny_with reset`)",
            rule.map(|name| format!(" for rule `{name}`")).unwrap_or_default()
        ),
    })
}

/// The connection's `l7_sock_key` at `r10 + at`, from the `sk_msg_md` in
/// `ctx` (clobbers r1).
pub fn own_key(a: &mut Asm, ctx: Reg, at: i16) {
    let v6 = a.fresh_label("key_v6");
    let ports = a.fresh_label("key_ports");
    for word in 0..6 {
        a.stdw(R10, at + word * 8, 0);
    }
    a.ldxw(R1, ctx, sk_msg_md::FAMILY).stxw(R10, at, R1);
    a.jeq(R1, abi::sock_key::AF_INET6 as i32, v6.clone());
    a.ldxw(R1, ctx, sk_msg_md::REMOTE_IP4).stxw(R10, at + 4, R1);
    a.ldxw(R1, ctx, sk_msg_md::LOCAL_IP4).stxw(R10, at + 20, R1);
    a.ja(ports.clone());
    a.label(v6);
    for word in 0..4i16 {
        a.ldxw(R1, ctx, sk_msg_md::REMOTE_IP6 + word * 4).stxw(R10, at + 4 + word * 4, R1);
        a.ldxw(R1, ctx, sk_msg_md::LOCAL_IP6 + word * 4).stxw(R10, at + 20 + word * 4, R1);
    }
    a.label(ports);
    a.ldxw(R1, ctx, sk_msg_md::REMOTE_PORT).stxw(R10, at + 36, R1);
    a.ldxw(R1, ctx, sk_msg_md::LOCAL_PORT).stxw(R10, at + 40, R1);
}

/// r0 = this connection's `l7_peer` record or null (msg in `ctx`; key at
/// `r10 + at`; clobbers r1–r5).
fn peer_record(a: &mut Asm, ctx: Reg, at: i16) {
    own_key(a, ctx, at);
    a.ld_map(R1, abi::maps::PEERS).mov64(R2, R10).add64(R2, i32::from(at)).call(Helper::MapLookupElem);
}

/// r1 = the counter index of the verdict in the state at `state` (its
/// reason's slot plus `V_BASE`); internal reasons jump to `none`.
/// Clobbers r1–r3. Shared by `l7_report` and `l7_answer`.
pub fn reason_counter(a: &mut Asm, state: Reg, none: &str) {
    let malformed = MalformedKind::ALL.len() as i32;
    let count = a.fresh_label("slot_count");
    a.ldxb(R2, state, layout::V_CLASS).ldxb(R3, state, layout::V_KIND);
    for (reason, slot) in abi::SINGLE_REASON_SLOTS {
        let next = a.fresh_label("slot_class");
        a.jne(R2, i32::from(abi::reason_code(reason).0), next.clone());
        a.mov64(R1, slot as i32).ja(count.clone());
        a.label(next);
    }
    a.mov64(R1, R3).add64(R1, abi::SINGLE_REASONS as i32);
    a.jeq(R2, i32::from(abi::reason_code(Reason::Malformed(MalformedKind::Host)).0), count.clone());
    a.add64(R1, malformed);
    a.jeq(R2, i32::from(abi::reason_code(Reason::Limit(LimitKind::Headers)).0), count.clone());
    a.ja(none);
    a.label(count);
    a.ldxw(R2, state, layout::V_BASE).add64(R1, R2);
}

/// `int l7_answer(state, msg)`: for the enforce-mode deny in the state's
/// verdict fields, finds its answer (`ANS_OFF`, `ANS_LEN`) and whether it
/// may be given now (language.md §6): the request is the connection's
/// first, or it began in a later `send()` than the one before it ended and
/// the server has finished answering every request it was sent. Sets
/// `ANSWERED` or `FALLBACK_RESET` in `V_FLAGS`; returns 1 to answer.
pub fn emit_answer_function(a: &mut Asm, answers: &AnswerTables) {
    a.function("l7_answer");
    a.note("l7_answer(state, msg): may this deny be answered over HTTP? (language.md §6)");
    a.mov64(R6, R1).mov64(R7, R2);
    reason_counter(a, R6, "answer_none");
    a.ldxb(R2, R6, layout::V_CLASS).jne(R2, i32::from(abi::reason_code(Reason::Rule).0), "answer_slot");
    a.ldxw(R3, R6, layout::V_RULE).jeq32(R3, NO_RULE as i32, "answer_slot");
    a.note("a rule's own deny: its answer names the rule");
    a.ldxw(R1, R6, layout::V_BASE).add64(R1, abi::REASON_SLOTS as i32).add64(R1, R3);
    a.label("answer_slot");
    a.jge(R1, answers.dir_entries as i32, "answer_none");
    a.lsh64(R1, 3);
    tables_base(a, R2);
    a.add64(R2, answers.dir as i32).add64(R2, R1);
    a.ldxw(R3, R2, 0).ldxw(R4, R2, 4);
    a.jeq(R4, 0, "answer_none").comment("never answered (opaque, http2, malformed:chunk, deny_with reset)");
    a.stxw(R6, layout::ANS_OFF, R3).stxw(R6, layout::ANS_LEN, R4);
    a.ldxb(R1, R6, layout::UNMAPPED).jne(R1, 0, "answer_fallback").comment("a kTLS record (or sendfile pages): plaintext cannot answer it");
    a.ldxw(R1, R6, layout::V_INDEX).jeq(R1, 0, "answer_yes").comment("the connection's first request");
    a.ldxb(R1, R6, layout::REDIRECTED_ONCE).jne(R1, 0, "answer_fallback").comment("a redirected request's answer never comes here");
    a.ldxb(R1, R6, layout::REQ_NEW).jeq(R1, 0, "answer_fallback").comment("sent with the request before it: pipelined");
    peer_record(a, R7, FN_KEY);
    a.jeq(R0, 0, "answer_fallback").comment("no record: fail closed");
    a.ldxw(R1, R0, peer::FLAGS).jset(R1, peer::LOST as i32, "answer_fallback");
    a.ldxw(R1, R0, peer::FORWARDED).ldxw(R2, R0, peer::ANSWERED);
    a.jne(R1, R2, "answer_fallback").comment("the server still owes an answer");
    a.label("answer_yes");
    a.ldxb(R1, R6, layout::V_FLAGS).or64(R1, i32::from(event_flags::ANSWERED)).stxb(R6, layout::V_FLAGS, R1);
    a.mov64(R0, 1).exit();
    a.label("answer_fallback");
    a.ldxb(R1, R6, layout::V_FLAGS).or64(R1, i32::from(event_flags::FALLBACK_RESET)).stxb(R6, layout::V_FLAGS, R1);
    a.label("answer_none");
    a.mov64(R0, 0).exit();
}

/// `void l7_forwarded(state, msg)`: one more request goes to the server;
/// its kind (`REQ_KIND`) goes into the record's ring. A full ring sets
/// `LOST` (fail closed).
pub fn emit_forwarded_function(a: &mut Asm) {
    a.function("l7_forwarded");
    a.note("l7_forwarded(state, msg): count a request sent on to the server, and its kind");
    a.mov64(R6, R1).mov64(R7, R2);
    peer_record(a, R7, FN_KEY);
    a.jeq(R0, 0, "forwarded_out");
    a.ldxw(R1, R0, peer::FORWARDED).ldxw(R2, R0, peer::ANSWERED);
    a.mov64(R3, R1).sub64(R3, R2);
    a.jlt(R3, peer::RING as i32, "forwarded_room");
    a.ldxw(R1, R0, peer::FLAGS).or64(R1, peer::LOST as i32).stxw(R0, peer::FLAGS, R1);
    a.ja("forwarded_out");
    a.label("forwarded_room");
    a.mov64(R3, R1).and64(R3, peer::RING as i32 - 1);
    a.mov64(R4, R0).add64(R4, i32::from(peer::KINDS)).add64(R4, R3);
    a.ldxb(R5, R6, layout::REQ_KIND).stxb(R4, 0, R5);
    a.add64(R1, 1).stxw(R0, peer::FORWARDED, R1);
    a.label("forwarded_out");
    a.mov64(R0, 0).exit();
}

/// Sets `REQ_KIND` for the request whose head was just scanned (r6 = msg
/// with the head at its start): CONNECT, Upgrade, HEAD or plain.
pub fn set_request_kind(a: &mut Asm, connect_form: i32, upgrade_bit: i32) {
    let done = a.fresh_label("kind_done");
    let not_head = a.fresh_label("kind_plain");
    a.stb(R7, layout::REQ_KIND, i32::from(peer::KIND_CONNECT));
    a.ldxb(R1, R7, layout::HEAD + layout::head::FORM).jeq(R1, connect_form, done.clone());
    a.stb(R7, layout::REQ_KIND, i32::from(peer::KIND_UPGRADE));
    a.ldxdw(R1, R7, layout::HEAD + layout::head::PRESENT).jset(R1, upgrade_bit, done.clone());
    a.stb(R7, layout::REQ_KIND, i32::from(peer::KIND_PLAIN));
    a.ldxdw(R2, R6, sk_msg_md::DATA).ldxdw(R3, R6, sk_msg_md::DATA_END);
    a.mov64(R4, R2).add64(R4, 5).jgt(R4, R3, not_head.clone());
    a.ldxw(R1, R2, 0).jne(R1, i32::from_le_bytes(*b"HEAD"), not_head.clone());
    a.ldxb(R1, R2, 4).jne(R1, i32::from(b' '), not_head.clone());
    a.stb(R7, layout::REQ_KIND, i32::from(peer::KIND_HEAD));
    a.label(not_head);
    a.label(done);
}

/// `l7_forwarded(state, msg)` from the main program.
pub fn call_forwarded(a: &mut Asm) {
    a.mov64(R1, R7).mov64(R2, R6).call_local("l7_forwarded");
}

/// `l7_answer(state, msg)` from the main program; answerable → `yes`.
pub fn call_answer(a: &mut Asm, yes: &str) {
    a.mov64(R1, R7).mov64(R2, R6).call_local("l7_answer");
    a.jne(R0, 0, yes);
}

fn report(a: &mut Asm) {
    a.mov64(R1, R7).mov64(R2, R6).call_local("l7_report");
}

/// The shared exits of this module: `deny_answer` (the verdict's fields
/// are set and not reported yet) and the switch wait (`switch_wait`).
/// Emitted before `program::emit_shared_exits`, whose `tunnel` exit the
/// switch wait uses.
pub fn emit_exits(a: &mut Asm, answers: &AnswerTables, audit_possible: bool) {
    emit_switch_wait(a, audit_possible);
    emit_deny_answer(a, answers);
}

fn emit_deny_answer(a: &mut Asm, answers: &AnswerTables) {
    a.label("deny_answer");
    a.note("answer the deny (language.md §6): the message becomes the answer, redirected into the client's own");
    a.note("receive queue; the server never sees the request (docs/program.md, \"Answers and switches\")");
    a.ldxw(R9, R7, layout::ANS_LEN);
    a.jgt(R9, ANSWER_MAX as i32, "answer_failed");
    a.ldxw(R2, R6, sk_msg_md::SIZE);
    a.jeq(R2, R9, "answer_sized");
    a.jgt(R2, R9, "answer_pop");
    a.note("shorter than the answer: push the difference at 0 (no element is split there)");
    a.mov64(R3, R9).sub64(R3, R2).mov64(R1, R6).mov64(R2, 0).mov64(R4, 0).call(Helper::MsgPushData);
    a.jne(R0, 0, "answer_failed");
    a.ja("answer_sized");
    a.label("answer_pop");
    a.note("longer: pop everything after the answer's length");
    a.mov64(R3, R2).sub64(R3, R9).mov64(R1, R6).mov64(R2, R9).mov64(R4, 0).call(Helper::MsgPopData);
    a.jne(R0, 0, "answer_failed");
    a.label("answer_sized");
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, R9).mov64(R4, 0).call(Helper::MsgPullData);
    a.jne(R0, 0, "answer_failed");
    a.ldxw(R1, R6, sk_msg_md::SIZE).jne(R1, R9, "answer_failed").comment("the message is exactly the answer");
    a.ldxw(R4, R7, layout::ANS_OFF);
    a.jgt(R4, answers.last_offset as i32, "answer_failed").comment("inside the texts (bound for the verifier)");
    tables_base(a, R5);
    a.add64(R5, R4);
    a.ldxdw(R2, R6, sk_msg_md::DATA).ldxdw(R3, R6, sk_msg_md::DATA_END);
    a.note("copy the answer: whole words, then the last bytes; every byte of the message is written");
    let words = ANSWER_MAX / 8;
    for word in 0..words as i32 {
        a.jlt(R9, word * 8 + 8, format!("answer_tail_{word}"));
        a.mov64(R0, R2).add64(R0, word * 8 + 8).jgt(R0, R3, "answer_failed");
        a.ldxdw(R1, R5, (word * 8) as i16).stxdw(R2, (word * 8) as i16, R1);
    }
    a.ja("answer_copied");
    for word in 0..words as i32 {
        a.label(format!("answer_tail_{word}"));
        a.add64(R2, word * 8).add64(R5, word * 8).sub64(R9, word * 8).ja("answer_tail");
    }
    a.label("answer_tail");
    for byte in 0..7i32 {
        a.jle(R9, byte, "answer_copied");
        a.mov64(R0, R2).add64(R0, byte + 1).jgt(R0, R3, "answer_failed");
        a.ldxb(R1, R5, byte as i16).stxb(R2, byte as i16, R1);
    }
    a.label("answer_copied");
    a.ldxw(R2, R7, layout::ANS_LEN).mov64(R1, R6).call(Helper::MsgApplyBytes);
    a.mov64(R1, R6).mov64(R2, 0).call(Helper::MsgCorkBytes);
    a.stb(R7, layout::PHASE, i32::from(phase::DEAD));
    a.stb(R7, layout::CORKED, 0);
    report(a);
    own_key(a, R6, MAIN_KEY);
    a.mov64(R1, R6).ld_map(R2, abi::maps::SOCKETS).mov64(R3, R10).add64(R3, i32::from(MAIN_KEY)).mov64(R4, BPF_F_INGRESS);
    a.call(Helper::MsgRedirectHash).comment("a missing key drops: a reset");
    a.exit();
    a.label("answer_failed");
    a.note("the message could not be made into the answer: reset, and the event says so");
    a.ldxb(R1, R7, layout::V_FLAGS).and64(R1, !i32::from(event_flags::ANSWERED));
    a.or64(R1, i32::from(event_flags::FALLBACK_RESET)).stxb(R7, layout::V_FLAGS, R1);
    report(a);
    a.ja("deny");
}

/// The switch wait (language.md §6): a run before the server's status
/// line, or in the message that ended the switch request, is early: `deny
/// tunnel` (in audit mode reported, and the rest passes unparsed: whether
/// the server switched is unknown). Consent: the tunnel. Refusal: the
/// tunnel verdict's span ends at its request, and the bytes are the next
/// request.
fn emit_switch_wait(a: &mut Asm, audit_possible: bool) {
    a.label("switch_wait");
    a.ldxdw(R8, R7, layout::OFFSET);
    a.ldxdw(R1, R7, layout::SW_MSG_END);
    a.jlt(R8, R1, "switch_early").comment("sent with the switch request: early, whatever the server says");
    peer_record(a, R6, MAIN_KEY);
    a.jeq(R0, 0, "switch_early").comment("no record: fail closed");
    a.ldxw(R1, R0, peer::FLAGS);
    a.jset(R1, peer::LOST as i32, "switch_early");
    a.jset(R1, peer::SWITCH_ACCEPTED as i32, "tunnel");
    a.jset(R1, peer::SWITCH_REFUSED as i32, "switch_refused");
    a.ja("switch_early");

    a.label("switch_refused");
    a.note("refused: the connection stays HTTP; the tunnel verdict's span ends at its own request");
    a.and64(R1, !(peer::SWITCH_REFUSED as i32)).stxw(R0, peer::FLAGS, R1);
    a.stb(R7, layout::V_RECORD, i32::from(record::SPAN_END));
    a.ldxdw(R1, R7, layout::SW_REQ_END).stxdw(R7, layout::V_END, R1);
    a.ldxw(R1, R7, layout::INDEX).sub64(R1, 1).stxw(R7, layout::V_INDEX, R1);
    a.ldxb(R1, R7, layout::REQ_FLAGS).stxb(R7, layout::V_FLAGS, R1);
    report(a);
    a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
    a.stb(R7, layout::FLAGS, 0);
    a.stxdw(R7, layout::REQ_AT, R8);
    a.stb(R7, layout::REQ_NEW, 1).comment("past the switch request's send(): a new one");
    a.ja("head");

    a.label("switch_early");
    a.note("early bytes: the tunnel verdict's span ends at its own request (no switch took effect)");
    a.stb(R7, layout::V_RECORD, i32::from(record::SPAN_END));
    a.ldxdw(R1, R7, layout::SW_REQ_END).stxdw(R7, layout::V_END, R1);
    a.ldxw(R1, R7, layout::INDEX).sub64(R1, 1).stxw(R7, layout::V_INDEX, R1);
    a.ldxb(R1, R7, layout::REQ_FLAGS).stxb(R7, layout::V_FLAGS, R1);
    report(a);
    a.note("then deny tunnel, no rule (the policy's counters: V_BASE is still the switch request's)");
    let (class, kind) = abi::reason_code(Reason::Tunnel);
    a.stb(R7, layout::V_ACTION, i32::from(abi::action_code(VerdictAction::Deny)));
    a.stb(R7, layout::V_CLASS, i32::from(class)).stb(R7, layout::V_KIND, i32::from(kind));
    a.stb(R7, layout::V_RECORD, i32::from(record::VERDICT));
    a.stw(R7, layout::V_RULE, NO_RULE as i32);
    a.ldxw(R1, R7, layout::INDEX).stxw(R7, layout::V_INDEX, R1).add64(R1, 1).stxw(R7, layout::INDEX, R1);
    a.stxdw(R7, layout::V_START, R8);
    a.stdw(R7, layout::V_END, 0);
    a.ldxb(R1, R7, layout::REQ_FLAGS).and64(R1, i32::from(event_flags::AUDIT)).stxb(R7, layout::V_FLAGS, R1);
    if audit_possible {
        a.jset(R1, i32::from(event_flags::AUDIT), "switch_early_audit");
    }
    a.stb(R7, layout::REQ_NEW, 0).comment("the switch's answer had not arrived: never answered");
    call_answer(a, "deny_answer");
    report(a);
    a.ja("deny");
    if audit_possible {
        a.label("switch_early_audit");
        a.note("audit: reported; whether the server switched is unknown, so framing is lost and the rest passes");
        a.note("unparsed (the reference's choice, docs/evaluator.md)");
        report(a);
        a.ja("tunnel");
    }
}

/// The bookkeeping every run does first (frame prologue): whether a
/// request starting here starts a new `send()`, and where this message
/// ends. Clobbers r1–r4.
pub fn emit_message_bookkeeping(a: &mut Asm) {
    a.note("message bookkeeping: does the request starting here begin a new send()? (deny answers, switches)");
    a.ldxdw(R1, R7, layout::OFFSET);
    a.ldxb(R2, R7, layout::PHASE).jne(R2, i32::from(phase::HEAD), "msg_end");
    a.ldxdw(R3, R7, layout::REQ_AT).jeq(R1, R3, "msg_end").comment("seen before (a held head)");
    a.stxdw(R7, layout::REQ_AT, R1);
    a.mov64(R4, 0);
    a.ldxdw(R3, R7, layout::MSG_END).jlt(R1, R3, "msg_req_same");
    a.mov64(R4, 1);
    a.label("msg_req_same");
    a.stxb(R7, layout::REQ_NEW, R4);
    a.label("msg_end");
    a.ldxw(R2, R6, sk_msg_md::SIZE).add64(R2, R1).stxdw(R7, layout::MSG_END, R2);
}

/// The switch request's bytes are taken (its head and its body, chunked
/// or not): from the message that ends it on, the connection waits
/// (`SWITCH_WAIT`). r9 = the bytes taken in this run; the request ends at
/// r8 + r9.
pub fn enter_switch_wait(a: &mut Asm) {
    a.mov64(R1, R8).add64(R1, R9).stxdw(R7, layout::SW_REQ_END, R1);
    a.ldxw(R1, R6, sk_msg_md::SIZE).add64(R1, R8).stxdw(R7, layout::SW_MSG_END, R1);
    a.stb(R7, layout::PHASE, i32::from(phase::SWITCH_WAIT));
    a.stb(R7, layout::FLAGS, 0);
}

/// `flags::SWITCHING` in `FLAGS`?
pub fn jump_if_switching(a: &mut Asm, to: &str) {
    a.ldxb(R1, R7, layout::FLAGS).jset(R1, i32::from(flags::SWITCHING), to);
}
