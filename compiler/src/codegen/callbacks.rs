//! The `bpf_loop` callbacks of one policy: the head scan (one byte per
//! iteration, a 1:1 translation of `scan::HeadScanner::step` and `feed`,
//! with the policy's automata stepped where `scan::HeadHooks` are
//! called), the accept-set collection, the decision interpreter, and the
//! chunk-line scan (`scan::ChunkScanner::step`).
//!
//! Every callback is `long cb(u64 index, void *ctx)` with `ctx` the main
//! program's stack context ([`CTX`]): the connection state, `data`,
//! `data_end`. Registers inside: r9 = state, r7 = the tables' base, r6 =
//! the byte, r8 = its offset; r0..r5 are scratch. A callback returns 0 to
//! go on, 1 to stop. State that the verifier could track as a precise
//! counter lives in the storage, so one pass verifies every iteration.

use super::layout::{self, chunk as cs, head as hs};
use super::tables::{record, LaneAt, LaneKind, PolicyTables, SharedTables, CANDIDATES};
use crate::bpf::{Asm, Label, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::http::{LimitKind, MalformedKind};
use crate::lower::START;
use crate::model::Limits;
use crate::scan::{Action, ChunkAction, HeaderId, ValueSkip, MAX_CHUNK_LINE};

/// Head bytes one `bpf_loop` iteration of the scan takes (the step body
/// is emitted this many times: fewer calls per byte).
pub const SCAN_UNROLL: usize = 4;

/// Offsets in the main program's stack context (`r10 + CTX + field`).
pub const CTX: i16 = -24;
pub const CTX_STATE: i16 = 0;
pub const CTX_DATA: i16 = 8;
pub const CTX_DATA_END: i16 = 16;

/// Content-Length saturates here (scan/walk.rs).
const CONTENT_LENGTH_CAP: i64 = (1 << 53) + 1;

/// The violation byte of a malformed kind (`scan::Violation::code`).
pub fn malformed_code(kind: MalformedKind) -> i32 {
    i32::from(crate::scan::Violation::Malformed(kind).code())
}

/// The violation byte of a limit (`scan::Violation::code`).
pub fn limit_code(kind: LimitKind) -> i32 {
    i32::from(crate::scan::Violation::Limit(kind).code())
}

/// Names of one policy's callbacks.
pub struct Names {
    pub scan: String,
    pub collect: String,
    pub decide: String,
    pub guarded: String,
    pub sticky: String,
    pub chunk: String,
}

impl Names {
    pub fn new(policy: usize) -> Names {
        Names {
            scan: format!("l7_scan_p{policy}"),
            collect: format!("l7_collect_p{policy}"),
            decide: format!("l7_decide_p{policy}"),
            guarded: format!("l7_guarded_p{policy}"),
            sticky: format!("l7_sticky_p{policy}"),
            chunk: format!("l7_chunk_p{policy}"),
        }
    }
}

/// Emits the four callbacks of policy `index`.
#[allow(clippy::too_many_arguments)]
pub fn emit(a: &mut Asm, index: usize, limits: Limits, shared: &SharedTables, tables: &PolicyTables, facts: i16, fact_mask: u32, cand: i16) {
    let names = Names::new(index);
    scan(a, &names.scan, index, limits, shared, tables, facts);
    collect(a, &names.collect, tables, facts, fact_mask, cand);
    if !tables.sticky_words.is_empty() {
        sticky(a, &names.sticky, facts, fact_mask, cand);
    }
    decide(a, &names.decide, tables, facts, fact_mask);
    guarded(a, &names.guarded, tables, facts, fact_mask, cand);
    chunk(a, &names.chunk, index, limits, shared);
}

/// `r7 = &l7_tables`.
/// `reg = &l7_tables` (the `.rodata` blob).
pub(super) fn tables_base(a: &mut Asm, reg: Reg) {
    a.ld_map(reg, super::blob::SYMBOL).comment("the tables (.rodata)");
}

/// Steps `lane` with the byte in r1 (clobbers r0, r2, r3; r1 kept).
fn step_lane(a: &mut Asm, lane: &LaneAt, facts: i16) {
    a.mov64(R2, R7).add64(R2, lane.class as i32).add64(R2, R1);
    a.ldxb(R2, R2, 0).comment("class");
    a.ldxw(R3, R9, lane.state).and64(R3, lane.mask as i32).mul64(R3, lane.classes as i32).add64(R3, R2).lsh64(R3, 1);
    a.mov64(R2, R7).add64(R2, lane.next as i32).add64(R2, R3);
    a.ldxh(R3, R2, 0).stxw(R9, lane.state, R3).comment("next state");
    if let LaneKind::Sticky { seen, word } = lane.kind {
        or_seen(a, seen, word, lane.mask, facts);
    }
}

/// facts[word] |= seen[r3 & mask] (clobbers r0, r2, r3).
fn or_seen(a: &mut Asm, seen: u32, word: u32, mask: u32, facts: i16) {
    a.and64(R3, mask as i32).lsh64(R3, 3);
    a.mov64(R2, R7).add64(R2, seen as i32).add64(R2, R3);
    a.ldxdw(R2, R2, 0);
    let at = facts + (word as i16) * 8;
    a.ldxdw(R0, R9, at).or64(R0, R2).stxdw(R9, at, R0).comment("seen |= seen_mask[state]");
}

/// Sets every lane of `lanes` to the start state (sticky words to the
/// start state's seen mask).
fn start_lanes(a: &mut Asm, lanes: &[LaneAt], facts: i16) {
    for lane in lanes {
        a.stw(R9, lane.state, START as i32);
        if let LaneKind::Sticky { seen, word } = lane.kind {
            a.stdw(R9, facts + word as i16 * 8, 0);
            a.mov64(R3, START as i32);
            or_seen(a, seen, word, lane.mask, facts);
        }
    }
}

/// The head scanner's actions in the order the scan tests for them: by
/// how often a head's bytes take them.
const HOT_ACTIONS: [Action; 4] = [Action::ValueByte, Action::NameByte, Action::None, Action::PathByte];

/// The head scan callback: one byte.
#[allow(clippy::too_many_arguments)]
fn scan(a: &mut Asm, name: &str, index: usize, limits: Limits, shared: &SharedTables, tables: &PolicyTables, facts: i16) {
    let l = |what: &str| Label::from(format!("s{index}_{what}"));
    let header_bytes = limits.header_bytes.max(1) as i32;
    a.function(name);
    a.note(format!("head scan of policy {index}: one byte (scan::HeadScanner::step)"));
    a.ldxdw(R9, R2, CTX_STATE);
    a.stxdw(R10, -8, R2).comment("ctx, for every byte of this iteration");
    for k in 0..SCAN_UNROLL {
        let lk = |what: &str| Label::from(format!("s{index}_{what}_{k}"));
        a.note(format!("byte {k} of this iteration"));
        if k == 0 {
            // Every path that ends the scan (complete, refused) sets the
            // status and leaves the callback at once, so within one call
            // the status can only have changed before its first byte.
            a.ldxb(R1, R9, layout::HEAD + hs::STATUS).jne(R1, 0, l("stop")).comment("scanning only");
        }
        a.ldxw(R8, R9, layout::HEAD + hs::OFFSET).and64(R8, 0x7fff).comment("offset (< 32 KiB)");
        a.ldxdw(R2, R10, -8).comment("ctx");
        a.ldxdw(R3, R2, CTX_DATA).ldxdw(R4, R2, CTX_DATA_END);
        a.add64(R3, R8).mov64(R5, R3).add64(R5, 1);
        a.jgt(R5, R4, l("stop")).comment("no more bytes in the window");
        a.ldxb(R6, R3, 0).comment("the byte");
        tables_base(a, R7);
        a.mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD + hs::OFFSET, R1);
        a.mov64(R1, R7).add64(R1, shared.head_class as i32).add64(R1, R6);
        a.ldxb(R5, R1, 0).comment("r5 = class");
        a.ldxh(R1, R9, layout::HEAD + hs::STATE).lsh64(R1, 6).or64(R1, R5).and64(R1, shared.head_main_mask as i32).lsh64(R1, 2);
        a.mov64(R2, R7).add64(R2, shared.head_main as i32).add64(R2, R1);
        a.ldxw(R0, R2, 0).comment("entry: next | action << 8 | arg << 16");
        a.mov64(R1, R0).and64(R1, 0xff).stxh(R9, layout::HEAD + hs::STATE, R1);
        a.mov64(R4, R0).rsh64(R4, 16).and64(R4, 0xff).comment("r4 = arg");
        a.rsh64(R0, 8).and64(R0, 0xff).comment("r0 = action");
        // Most bytes of a head are field values, then names, then bytes
        // with nothing to do (OWS, CR), then the path: test those first,
        // so that a value byte is dispatched after one compare, not
        // fifteen (issue 15: per-byte cost).
        for action in HOT_ACTIONS.iter().chain(Action::ALL.iter().filter(|action| !HOT_ACTIONS.contains(action))) {
            a.jeq(R0, *action as i32, lk(&format!("a{}", *action as u8)));
        }
        a.note("no entry holds another code: fail closed");
        refuse_const(a, malformed_code(MalformedKind::RequestLine), R8);

        let action = |a: &mut Asm, act: Action| {
            a.label(lk(&format!("a{}", act as u8)));
        };
        let after = lk("after");

        action(a, Action::None);
        a.ja(after.clone());

        action(a, Action::Fail);
        a.label(lk("fail_arg"));
        fail_arg(a, &l("fail_at"));

        action(a, Action::MethodByte);
        a.mov64(R1, R6);
        step_lane(a, &tables.method, facts);
        a.ja(after.clone());

        action(a, Action::MethodEnd);
        let get_or_head = i32::from(crate::scan::METHOD_GET_OR_HEAD);
        a.mov64(R1, R4).and64(R1, get_or_head).stxb(R9, layout::HEAD + hs::METHOD, R1).comment("GET or HEAD");
        a.and64(R4, !get_or_head & 0xff).stxb(R9, layout::HEAD + hs::FORM, R4).ja(after.clone());

        action(a, Action::TargetFirst);
        a.stxb(R9, layout::HEAD + hs::FORM, R4);
        start_lanes(a, &tables.path.lanes, facts);
        a.mov64(R1, R6);
        path_byte(a, tables, facts);
        a.ja(after.clone());

        action(a, Action::PathByte);
        a.mov64(R1, R6);
        path_byte(a, tables, facts);
        a.ja(after.clone());

        action(a, Action::EscapeHigh);
        hex(a, R1, R6);
        a.stxb(R9, layout::HEAD + hs::ESCAPE_HIGH, R1).ja(after.clone());

        action(a, Action::PathEscaped);
        hex(a, R2, R6);
        a.ldxb(R1, R9, layout::HEAD + hs::ESCAPE_HIGH).lsh64(R1, 4).or64(R1, R2);
        path_byte(a, tables, facts);
        a.ja(after.clone());

        action(a, Action::PathEnd);
        a.ja(after.clone());

        action(a, Action::Version);
        a.stxb(R9, layout::HEAD + hs::MINOR_VERSION, R4).ja(after.clone());

        action(a, Action::LineName);
        a.ldxh(R1, R9, layout::HEAD + hs::FIELDS).jge(R1, limits.headers as i32, l("limit_headers"));
        a.stw(R9, tables.name.state, START as i32);
        lower_byte(a);
        step_lane(a, &tables.name, facts);
        a.ja(after.clone());

        action(a, Action::LineFail);
        a.ldxh(R1, R9, layout::HEAD + hs::FIELDS).jge(R1, limits.headers as i32, l("limit_headers"));
        a.ja(lk("fail_arg"));

        action(a, Action::NameByte);
        lower_byte(a);
        step_lane(a, &tables.name, facts);
        a.ja(after.clone());

        action(a, Action::NameEnd);
        {
            let LaneKind::Token { id_at_end } = tables.name.kind else { unreachable_lane(a); return };
            a.ldxw(R1, R9, tables.name.state).and64(R1, tables.name.mask as i32);
            a.mov64(R2, R7).add64(R2, id_at_end as i32).add64(R2, R1).ldxb(R1, R2, 0).and64(R1, 63).comment("header id");
            a.stxb(R9, layout::HEAD + hs::HEADER_ID, R1);
            a.mov64(R2, 1).lsh64(R2, R1).comment("bit");
            a.ldxdw(R3, R9, layout::HEAD + hs::PRESENT).and64(R3, R2);
            a.ldxdw(R0, R9, layout::HEAD + hs::REPEATED).or64(R0, R3).stxdw(R9, layout::HEAD + hs::REPEATED, R0);
            a.ldxdw(R0, R9, layout::HEAD + hs::PRESENT).or64(R0, R2).stxdw(R9, layout::HEAD + hs::PRESENT, R0);
            a.mov64(R2, R1).lsh64(R2, 1).add64(R2, R7).add64(R2, shared.head_role as i32);
            a.ldxh(R2, R2, 0).stxh(R9, layout::HEAD + hs::SUB, R2).comment("sub = role_start[id]");
            for (header, automaton) in &tables.values {
                let skip = a.fresh_label(&format!("s{index}_not_{header}"));
                a.jne(R1, i32::from(*header), skip.clone());
                start_lanes(a, &automaton.lanes, facts);
                a.ja(after.clone());
                a.label(skip);
            }
            a.ja(after.clone());
        }

        action(a, Action::ValueByte);
        if !tables.values.is_empty() {
            a.ldxb(R4, R9, layout::HEAD + hs::HEADER_ID);
            let done = lk("value_lanes_done");
            for (header, automaton) in &tables.values {
                let skip = a.fresh_label(&format!("s{index}_value_not_{header}"));
                a.jne(R4, i32::from(*header), skip.clone());
                a.mov64(R1, R6);
                for lane in &automaton.lanes {
                    step_lane(a, lane, facts);
                }
                a.ja(done.clone());
                a.label(skip);
            }
            a.label(done);
        }
        sub_step(a, shared);
        a.jset(R0, 0x8000, lk("digit"));
        if let Some(skip) = shared.value_skip {
            skip_plain_value(a, skip, tables, header_bytes, &after);
        }
        a.ja(after.clone());
        a.label(lk("digit"));
        a.ldxdw(R1, R9, layout::HEAD + hs::CONTENT_LENGTH).mul64(R1, 10);
        a.mov64(R2, R6).sub64(R2, i32::from(b'0')).and64(R2, 0xff).add64(R1, R2);
        a.ld_imm64(R2, CONTENT_LENGTH_CAP);
        a.jle(R1, R2, lk("digit_store"));
        a.mov64(R1, R2);
        a.label(lk("digit_store"));
        a.stxdw(R9, layout::HEAD + hs::CONTENT_LENGTH, R1).ja(after.clone());

        action(a, Action::FieldEnd);
        a.ldxh(R1, R9, layout::HEAD + hs::SUB).and64(R1, shared.head_reject_mask as i32);
        a.mov64(R2, R7).add64(R2, shared.head_reject as i32).add64(R2, R1).ldxb(R1, R2, 0).and64(R1, 1);
        a.ldxb(R2, R9, layout::HEAD + hs::HEADER_ID).and64(R2, 63).lsh64(R1, R2);
        a.ldxdw(R0, R9, layout::HEAD + hs::VALUE_BAD).or64(R0, R1).stxdw(R9, layout::HEAD + hs::VALUE_BAD, R0);
        a.ldxh(R1, R9, layout::HEAD + hs::FIELDS).jeq(R1, 0xffff, after.clone());
        a.add64(R1, 1).stxh(R9, layout::HEAD + hs::FIELDS, R1).ja(after.clone());

        action(a, Action::LiteralOpen);
        a.sth(R9, layout::HEAD + hs::SUB, i32::from(shared.literal_start));
        a.stb(R9, layout::HEAD + hs::LITERAL_LEN, 0).ja(after.clone());

        action(a, Action::LiteralByte);
        a.ldxb(R1, R9, layout::HEAD + hs::LITERAL_LEN).jeq(R1, 0xff, lk("literal_len_kept"));
        a.add64(R1, 1).stxb(R9, layout::HEAD + hs::LITERAL_LEN, R1);
        a.label(lk("literal_len_kept"));
        a.jgt(R1, i32::from(shared.max_literal), l("target"));
        sub_step(a, shared);
        a.ja(after.clone());

        action(a, Action::LiteralClose);
        sub_step(a, shared);
        a.jeq(R1, 0, l("target")).ja(after.clone());

        action(a, Action::HeadEnd);
        a.jlt(R8, header_bytes, l("complete"));
        a.ja(after.clone());

        a.label(after);
        a.note("the head may not be longer than header_bytes; a CR as the last allowed byte waits for the next");
        a.mov64(R2, R8).add64(R2, 1);
        a.jlt(R2, header_bytes, lk("go_on"));
        a.jne(R2, header_bytes, l("limit_bytes"));
        a.ldxh(R1, R9, layout::HEAD + hs::STATE).sub64(R1, 1);
        a.jlt(R1, i32::from(crate::scan::AFTER_CR_STATES), lk("go_on"));
        a.label(lk("go_on"));
        if k + 1 == SCAN_UNROLL {
            a.mov64(R0, 0).exit();
        }
    }
    a.label(l("limit_bytes"));
    a.mov64(R8, header_bytes - 1);
    refuse_const(a, limit_code(LimitKind::HeaderBytes), R8);

    a.label(l("limit_headers"));
    refuse_const(a, limit_code(LimitKind::Headers), R8);
    a.label(l("target"));
    refuse_const(a, malformed_code(MalformedKind::Target), R8);
    a.label(l("fail_at"));
    a.note("r1 = violation code, r8 = its offset");
    a.stxb(R9, layout::HEAD + hs::VIOLATION, R1);
    a.stxw(R9, layout::HEAD + hs::VIOLATION_OFFSET, R8);
    a.stb(R9, layout::HEAD + hs::STATUS, 2);
    a.label(l("stop"));
    a.mov64(R0, 1).exit();

    a.label(l("complete"));
    complete(a, index, tables);
}

/// Words of plain value bytes one value byte's step may skip after it.
pub const SKIP_WORDS: usize = 3;

/// After a value byte (r1 = the value syntax's new state, r8 = the byte's
/// offset): while the field is one no matcher of this policy reads and
/// no role checks (`skip.plain`), the next eight bytes are inside the
/// window and below `header_bytes`, and all of them are
/// [`ValueSkip::bytes`], take them at once — up to [`SKIP_WORDS`] words.
/// Each such byte would take the lexer and the value syntax back to
/// where they are and do nothing else (`HeadTables::value_skip` checks
/// that from the tables), so only the offset moves. A word with any
/// other byte, or near either limit, is left to the byte steps, which
/// find a violation at its exact offset. Ends at `after`, r8 = the last
/// byte taken.
fn skip_plain_value(a: &mut Asm, skip: ValueSkip, tables: &PolicyTables, header_bytes: i32, after: &Label) {
    let ones = ValueSkip::ONES;
    let width = ValueSkip::WIDTH as i32;
    a.note("plain value bytes, eight at a time (docs/program.md, \"Skipping plain value bytes\")");
    a.jne(R1, i32::from(skip.plain), after.clone()).comment("a role's value, or still empty");
    if !tables.values.is_empty() {
        let read: u64 = tables.values.iter().fold(0, |mask, (header, _)| mask | 1 << (u32::from(*header) & 63));
        a.ldxb(R2, R9, layout::HEAD + hs::HEADER_ID).and64(R2, 63);
        a.mov64(R3, 1).lsh64(R3, R2);
        a.ld_imm64(R2, read as i64).comment("the fields this policy's matchers read");
        a.jset(R3, R2, after.clone());
    }
    for _ in 0..SKIP_WORDS {
        a.mov64(R2, R8).add64(R2, width).jge(R2, header_bytes, after.clone()).comment("the last byte taken stays below header_bytes");
        a.ldxdw(R2, R10, -8).comment("ctx");
        a.ldxdw(R3, R2, CTX_DATA).ldxdw(R4, R2, CTX_DATA_END);
        a.add64(R3, R8).add64(R3, 1);
        a.mov64(R5, R3).add64(R5, width).jgt(R5, R4, after.clone()).comment("eight more bytes in the window");
        a.ldxdw(R1, R3, 0).comment("w = the next eight bytes");
        a.ld_imm64(R2, (ones * u64::from(ValueSkip::LOW)) as i64);
        a.mov64(R0, R1).sub64(R0, R2).mov64(R2, R1).xor64(R2, -1).and64(R0, R2).comment("a byte below 0x20: (w - 0x20..) & !w");
        a.ld_imm64(R2, (ones * u64::from(ValueSkip::DEL)) as i64);
        a.mov64(R4, R1).xor64(R4, R2).comment("y = w ^ 0x7f..: DEL becomes 0");
        a.ld_imm64(R2, ones as i64);
        a.mov64(R5, R4).sub64(R5, R2).xor64(R4, -1).and64(R5, R4).or64(R0, R5).comment("| a zero byte of y: (y - 0x01..) & !y");
        a.ld_imm64(R2, ValueSkip::HIGH as i64);
        a.and64(R0, R2).jne(R0, 0, after.clone()).comment("a byte to step: stop here");
        a.add64(R8, width).mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD + hs::OFFSET, R1).comment("eight bytes taken");
    }
}

fn unreachable_lane(a: &mut Asm) {
    a.mov64(R0, 1).exit();
}

/// Refuses with a constant violation code at the offset in `at`.
fn refuse_const(a: &mut Asm, code: i32, at: Reg) {
    a.stb(R9, layout::HEAD + hs::VIOLATION, code);
    a.stxw(R9, layout::HEAD + hs::VIOLATION_OFFSET, at);
    a.stb(R9, layout::HEAD + hs::STATUS, 2);
    a.mov64(R0, 1).exit();
}

/// A `Fail` entry (arg in r4: kind | back << 5): r1 = code, r8 = offset -
/// back (saturating), then `fail_at`.
fn fail_arg(a: &mut Asm, fail_at: &Label) {
    let ok = a.fresh_label("kind_ok");
    a.mov64(R1, R4).and64(R1, 0x1f);
    a.jlt(R1, MalformedKind::ALL.len() as i32, ok.clone());
    a.mov64(R1, 0).comment("an unknown kind: request-line");
    a.label(ok);
    a.add64(R1, 1);
    a.mov64(R2, R4).rsh64(R2, 5);
    let sat = a.fresh_label("back_ok");
    a.jle(R2, R8, sat.clone());
    a.mov64(R2, R8);
    a.label(sat);
    a.sub64(R8, R2);
    a.ja(fail_at.clone());
}

/// dst = the hex value of the digit in src: (b & 15) + 9 * (b >> 6).
fn hex(a: &mut Asm, dst: Reg, src: Reg) {
    a.mov64(dst, src).rsh64(dst, 6).mul64(dst, 9);
    a.mov64(R3, src).and64(R3, 15).add64(dst, R3);
}

/// r1 = the byte in r6, ASCII-lowercased.
fn lower_byte(a: &mut Asm) {
    let done = a.fresh_label("lower");
    a.mov64(R1, R6);
    a.jlt(R1, i32::from(b'A'), done.clone());
    a.jgt(R1, i32::from(b'Z'), done.clone());
    a.add64(R1, 32);
    a.label(done);
}

/// The path automaton's lanes step with the byte in r1.
fn path_byte(a: &mut Asm, tables: &PolicyTables, facts: i16) {
    a.and64(R1, 0xff);
    for lane in &tables.path.lanes {
        step_lane(a, lane, facts);
    }
}

/// sub = sub_table[(sub << 6 | class) & mask]: r0 = the entry, r1 = the
/// new state (flag cleared), stored.
fn sub_step(a: &mut Asm, shared: &SharedTables) {
    a.ldxh(R1, R9, layout::HEAD + hs::SUB).lsh64(R1, 6).or64(R1, R5).and64(R1, shared.head_sub_mask as i32).lsh64(R1, 1);
    a.mov64(R2, R7).add64(R2, shared.head_sub as i32).add64(R2, R1);
    a.ldxh(R0, R2, 0);
    a.mov64(R1, R0).and64(R1, 0x7fff).stxh(R9, layout::HEAD + hs::SUB, R1);
}

/// The whole-head checks at the final LF (scan::HeadScanner::complete):
/// refuse, or status complete with the head's length.
fn complete(a: &mut Asm, index: usize, tables: &PolicyTables) {
    let l = |what: &str| Label::from(format!("s{index}_c_{what}"));
    let bit = |id: u8| 1i32 << id;
    let (host, length, coding) = (bit(HeaderId::HOST), bit(HeaderId::CONTENT_LENGTH), bit(HeaderId::TRANSFER_ENCODING));
    a.note("whole-head checks, in the reference's order");
    a.ldxdw(R1, R9, layout::HEAD + hs::REPEATED);
    a.ldxdw(R2, R9, layout::HEAD + hs::PRESENT);
    a.ldxdw(R3, R9, layout::HEAD + hs::VALUE_BAD);
    a.ldxb(R4, R9, layout::HEAD + hs::MINOR_VERSION);
    a.jset(R1, host, l("host"));
    a.jset(R2, host, l("host_present"));
    a.jeq(R4, 1, l("host"));
    a.label(l("host_present"));
    a.jset(R3, host, l("host"));
    a.jset(R1, length, l("length"));
    a.jset(R2, length, l("length_present"));
    a.ja(l("coding"));
    a.label(l("length_present"));
    a.jset(R3, length, l("length"));
    a.ldxdw(R5, R9, layout::HEAD + hs::CONTENT_LENGTH);
    a.ld_imm64(R0, 1 << 53);
    a.jgt(R5, R0, l("length"));
    a.label(l("coding"));
    a.jset(R1, coding, l("coding_bad"));
    a.jset(R2, coding, l("coding_present"));
    a.ja(l("duplicates"));
    a.label(l("coding_present"));
    a.jeq(R4, 0, l("coding_bad"));
    a.jset(R3, coding, l("coding_bad"));
    a.jset(R2, length, l("clte"));
    a.label(l("duplicates"));
    if tables.refuse_get_body {
        a.note("get_body deny: a GET or HEAD with a body (Transfer-Encoding, or a Content-Length other than 0)");
        a.ldxb(R0, R9, layout::HEAD + hs::METHOD);
        a.jeq(R0, 0, l("no_get_body"));
        a.jset(R2, coding, l("get_body"));
        a.jset(R2, length, l("get_body_length"));
        a.ja(l("no_get_body"));
        a.label(l("get_body_length"));
        a.ldxdw(R5, R9, layout::HEAD + hs::CONTENT_LENGTH);
        a.jne(R5, 0, l("get_body"));
        a.label(l("no_get_body"));
    }
    if tables.refuse_duplicates != 0 {
        a.ld_imm64(R0, tables.refuse_duplicates as i64);
        a.and64(R0, R1);
        a.jne(R0, 0, l("duplicate"));
    }
    a.stb(R9, layout::HEAD + hs::STATUS, 1).comment("complete");
    a.mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD_LEN, R1);
    a.mov64(R0, 1).exit();
    for (what, kind) in [
        ("host", MalformedKind::Host),
        ("length", MalformedKind::ContentLength),
        ("coding_bad", MalformedKind::TransferEncoding),
        ("clte", MalformedKind::ClTe),
        ("get_body", MalformedKind::GetBody),
        ("duplicate", MalformedKind::DuplicateHeader),
    ] {
        if (what == "duplicate" && tables.refuse_duplicates == 0) || (what == "get_body" && !tables.refuse_get_body) {
            continue;
        }
        a.label(l(what));
        refuse_const(a, malformed_code(kind), R8);
    }
}

/// The collect callback: sets the fact of member `start + index`.
fn collect(a: &mut Asm, name: &str, tables: &PolicyTables, facts: i16, fact_mask: u32, cand: i16) {
    a.function(name);
    a.note("accept-set member -> its fact bit");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    a.ldxw(R3, R9, layout::COLLECT_START).add64(R3, R1).and64(R3, tables.members_mask as i32).lsh64(R3, 2);
    a.mov64(R2, R7).add64(R2, tables.members as i32).add64(R2, R3).ldxw(R3, R2, 0).comment("fact");
    set_fact(a, R3, facts, fact_mask);
    add_candidate(a, R3, cand);
    a.mov64(R0, 0).exit();
}

/// facts[fact >> 6] |= 1 << (fact & 63), fact in `reg` (clobbers r0, r2, r4).
fn set_fact(a: &mut Asm, reg: Reg, facts: i16, fact_mask: u32) {
    a.mov64(R2, reg).rsh64(R2, 6).and64(R2, fact_mask as i32).lsh64(R2, 3).add64(R2, R9);
    a.mov64(R4, reg).and64(R4, 63).mov64(R0, 1).lsh64(R0, R4);
    a.ldxdw(R4, R2, facts).or64(R4, R0).stxdw(R2, facts, R4);
}

/// Loads record `r1` (an index) and evaluates its literal: r0 = 1 when
/// it holds (negation applied), r6 = its flags (clobbers r1..r5).
fn literal(a: &mut Asm, prefix: &str, tables: &PolicyTables, facts: i16, fact_mask: u32) {
    let l = |what: &str| Label::from(format!("{prefix}_{what}"));
    a.and64(R1, tables.records_mask as i32).lsh64(R1, 3);
    a.mov64(R2, R7).add64(R2, tables.records as i32).add64(R2, R1);
    a.ldxb(R3, R2, 0).ldxb(R6, R2, 1).ldxh(R4, R2, 2).ldxw(R5, R2, 4);
    a.mov64(R0, 0);
    a.jeq(R3, i32::from(record::TRUE), l("true"));
    a.jeq(R3, i32::from(record::METHOD), l("method"));
    a.jeq(R3, i32::from(record::PRESENT), l("present"));
    a.jeq(R3, i32::from(record::FACT), l("fact"));
    a.ja(l("value"));
    a.label(l("true"));
    a.mov64(R0, 1).ja(l("value"));
    a.label(l("method"));
    a.and64(R5, tables.method_sets_mask as i32).lsh64(R5, 3);
    a.mov64(R2, R7).add64(R2, tables.method_sets as i32).add64(R2, R5).ldxdw(R0, R2, 0);
    a.ldxb(R1, R9, layout::METHOD_ID).and64(R1, 63).rsh64(R0, R1).and64(R0, 1).ja(l("value"));
    a.label(l("present"));
    a.ldxdw(R0, R9, layout::HEAD + hs::PRESENT).and64(R4, 63).rsh64(R0, R4).and64(R0, 1).ja(l("value"));
    a.label(l("fact"));
    a.mov64(R2, R5).rsh64(R2, 6).and64(R2, fact_mask as i32).lsh64(R2, 3).add64(R2, R9);
    a.ldxdw(R0, R2, facts).and64(R5, 63).rsh64(R0, R5).and64(R0, 1);
    a.label(l("value"));
    a.mov64(R1, R6).and64(R1, i32::from(record::NEGATED)).xor64(R0, R1);
}

/// The linear decision (when more facts are accepted than the guarded
/// decision lists): one record per iteration, every rule in order; stops
/// at the first rule whose clauses all hold.
fn decide(a: &mut Asm, name: &str, tables: &PolicyTables, facts: i16, fact_mask: u32) {
    let l = |what: &str| Label::from(format!("{name}_{what}"));
    a.function(name);
    a.note("one decision record: a literal, closing its clause and rule as flagged");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    literal(a, name, tables, facts, fact_mask);
    a.ldxb(R1, R9, layout::DEC_CLAUSE).or64(R1, R0).stxb(R9, layout::DEC_CLAUSE, R1);
    a.jset(R6, i32::from(record::END_CLAUSE), l("end_clause"));
    a.mov64(R0, 0).exit();
    a.label(l("end_clause"));
    a.ldxb(R2, R9, layout::DEC_OK).and64(R2, R1).stxb(R9, layout::DEC_OK, R2);
    a.stb(R9, layout::DEC_CLAUSE, 0);
    a.jset(R6, i32::from(record::END_RULE), l("end_rule"));
    a.mov64(R0, 0).exit();
    a.label(l("end_rule"));
    a.ldxw(R1, R9, layout::DEC_RULE);
    a.jeq(R2, 0, l("next_rule"));
    a.stxw(R9, layout::DEC_MATCH, R1).comment("the first rule that holds");
    a.mov64(R0, 1).exit();
    a.label(l("next_rule"));
    a.add64(R1, 1).stxw(R9, layout::DEC_RULE, R1);
    a.stb(R9, layout::DEC_OK, 1);
    a.mov64(R0, 0).exit();
}

/// Appends the fact in `reg` to the candidate list (clobbers r0, r2);
/// past `CANDIDATES`, switches the decision to linear.
fn add_candidate(a: &mut Asm, reg: Reg, cand: i16) {
    let full = a.fresh_label("candidates_full");
    let done = a.fresh_label("candidate_added");
    a.ldxw(R0, R9, layout::DEC_CANDIDATES);
    a.jge(R0, CANDIDATES as i32, full.clone());
    a.mov64(R2, R0).lsh64(R2, 2).add64(R2, R9).stxw(R2, cand, reg);
    a.add64(R0, 1).stxw(R9, layout::DEC_CANDIDATES, R0).ja(done.clone());
    a.label(full);
    a.stb(R9, layout::DEC_MODE, 1).comment("too many: decide linearly");
    a.label(done);
}

/// Lists the set bits of sticky word `DEC_STICKY_WORD` as candidates:
/// bit `index` per iteration.
fn sticky(a: &mut Asm, name: &str, facts: i16, fact_mask: u32, cand: i16) {
    let skip = Label::from(format!("{name}_clear"));
    a.function(name);
    a.note("a sticky lane's seen bit -> a candidate fact");
    a.ldxdw(R9, R2, CTX_STATE);
    a.ldxw(R3, R9, layout::DEC_STICKY_WORD).and64(R3, fact_mask as i32);
    a.mov64(R2, R3).lsh64(R2, 3).add64(R2, R9).ldxdw(R4, R2, facts);
    a.and64(R1, 63).rsh64(R4, R1).and64(R4, 1);
    a.jeq(R4, 0, skip.clone());
    a.lsh64(R3, 6).add64(R3, R1);
    add_candidate(a, R3, cand);
    a.label(skip);
    a.mov64(R0, 0).exit();
}

/// The guarded decision (docs/lowering.md, `walk::decide`): the unguarded
/// rules, then the rules listed under each candidate fact, each list in
/// rule order and cut at the best rule found so far; a rule is tried
/// record by record and dropped at its first false clause. One record,
/// or one step between rules and lists, per iteration.
fn guarded(a: &mut Asm, name: &str, tables: &PolicyTables, facts: i16, fact_mask: u32, cand: i16) {
    let l = |what: &str| Label::from(format!("{name}_{what}"));
    a.function(name);
    a.note("the guarded decision: one record, or one step to the next rule or list");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    a.ldxw(R1, R9, layout::DEC_RECORD).ldxw(R2, R9, layout::DEC_RECORD_END);
    a.jlt(R1, R2, l("record"));
    a.note("the next rule of this list, unless it cannot beat the best so far");
    a.ldxw(R1, R9, layout::DEC_LIST_AT).ldxw(R2, R9, layout::DEC_LIST_END);
    a.jge(R1, R2, l("next_list"));
    a.mov64(R3, R1).add64(R3, 1).stxw(R9, layout::DEC_LIST_AT, R3);
    a.and64(R1, tables.guard_members_mask as i32).lsh64(R1, 2);
    a.mov64(R2, R7).add64(R2, tables.guard_members as i32).add64(R2, R1).ldxw(R1, R2, 0).comment("rule");
    a.ldxw(R2, R9, layout::DEC_MATCH).jge(R1, R2, l("next_list"));
    a.stxw(R9, layout::DEC_RULE, R1);
    a.and64(R1, tables.rule_records_mask as i32).lsh64(R1, 2);
    a.mov64(R2, R7).add64(R2, tables.rule_records as i32).add64(R2, R1);
    a.ldxw(R3, R2, 0).ldxw(R4, R2, 4);
    a.stxw(R9, layout::DEC_RECORD, R3).stxw(R9, layout::DEC_RECORD_END, R4);
    a.stb(R9, layout::DEC_CLAUSE, 0);
    a.mov64(R0, 0).exit();

    a.label(l("next_list"));
    a.ldxw(R1, R9, layout::DEC_LIST).add64(R1, 1).stxw(R9, layout::DEC_LIST, R1);
    a.ldxw(R2, R9, layout::DEC_CANDIDATES);
    a.jgt(R1, R2, l("done"));
    a.sub64(R1, 1).and64(R1, CANDIDATES as i32 - 1).lsh64(R1, 2).add64(R1, R9).ldxw(R1, R1, cand).comment("the candidate fact");
    a.and64(R1, tables.fact_guards_mask as i32).lsh64(R1, 3);
    a.mov64(R2, R7).add64(R2, tables.fact_guards as i32).add64(R2, R1);
    a.ldxw(R3, R2, 0).ldxw(R4, R2, 4);
    a.stxw(R9, layout::DEC_LIST_AT, R3).stxw(R9, layout::DEC_LIST_END, R4);
    a.stw(R9, layout::DEC_RECORD, 0).stw(R9, layout::DEC_RECORD_END, 0);
    a.mov64(R0, 0).exit();
    a.label(l("done"));
    a.stb(R9, layout::DEC_MODE, 2);
    a.mov64(R0, 1).exit();

    a.label(l("record"));
    a.add64(R1, 1).stxw(R9, layout::DEC_RECORD, R1).sub64(R1, 1);
    literal(a, name, tables, facts, fact_mask);
    a.ldxb(R1, R9, layout::DEC_CLAUSE).or64(R1, R0).stxb(R9, layout::DEC_CLAUSE, R1);
    a.jset(R6, i32::from(record::END_CLAUSE), l("end_clause"));
    a.mov64(R0, 0).exit();
    a.label(l("end_clause"));
    a.stb(R9, layout::DEC_CLAUSE, 0);
    a.jne(R1, 0, l("clause_held"));
    a.note("a false clause: the rule fails, skip its other records");
    a.ldxw(R1, R9, layout::DEC_RECORD_END).stxw(R9, layout::DEC_RECORD, R1);
    a.mov64(R0, 0).exit();
    a.label(l("clause_held"));
    a.jset(R6, i32::from(record::END_RULE), l("holds"));
    a.mov64(R0, 0).exit();
    a.label(l("holds"));
    a.ldxw(R1, R9, layout::DEC_RULE).stxw(R9, layout::DEC_MATCH, R1).comment("the best so far; the rest of this list is later");
    a.stw(R9, layout::DEC_RECORD, 0).stw(R9, layout::DEC_RECORD_END, 0);
    a.ja(l("next_list"));
}

/// The chunk-line callback: one byte of a chunked body outside chunk
/// data (scan::ChunkScanner::step); stops at data, at the end, or at the
/// offending byte (`CHUNK_TAKEN` then points at it).
fn chunk(a: &mut Asm, name: &str, index: usize, limits: Limits, shared: &SharedTables) {
    let l = |what: &str| Label::from(format!("c{index}_{what}"));
    let header_bytes = limits.header_bytes.max(1) as i32;
    a.function(name);
    a.note(format!("chunked-body framing of policy {index}: one byte (scan::ChunkScanner::step)"));
    a.ldxdw(R9, R2, CTX_STATE);
    a.ldxb(R1, R9, layout::CHUNK + cs::STATUS).jne(R1, 0, l("stop"));
    a.ldxb(R1, R9, layout::CHUNK + cs::STATE).jeq(R1, i32::from(shared.chunk_data), l("stop")).comment("data: passed in bulk");
    a.ldxw(R8, R9, layout::CHUNK_TAKEN).and64(R8, 0x7fff);
    a.ldxdw(R3, R2, CTX_DATA).ldxdw(R4, R2, CTX_DATA_END);
    a.add64(R3, R8).mov64(R5, R3).add64(R5, 1);
    a.jgt(R5, R4, l("stop"));
    a.ldxb(R6, R3, 0);
    tables_base(a, R7);
    a.mov64(R1, R7).add64(R1, shared.chunk_class as i32).add64(R1, R6).ldxb(R5, R1, 0);
    a.ldxb(R1, R9, layout::CHUNK + cs::STATE).lsh64(R1, 4).add64(R1, R5).and64(R1, shared.chunk_mask as i32).lsh64(R1, 2);
    a.mov64(R2, R7).add64(R2, shared.chunk_table as i32).add64(R2, R1).ldxw(R0, R2, 0);
    a.mov64(R1, R0).and64(R1, 0xff).stxb(R9, layout::CHUNK + cs::STATE, R1);
    a.mov64(R4, R0).rsh64(R4, 16).and64(R4, 0xff);
    a.rsh64(R0, 8).and64(R0, 0xff);
    for action in ChunkAction::ALL {
        a.jeq(R0, action as i32, l(&format!("a{}", action as u8)));
    }
    a.ja(l("refuse"));
    let take = l("take");
    let act = |a: &mut Asm, action: ChunkAction| {
        a.label(l(&format!("a{}", action as u8)));
    };
    act(a, ChunkAction::None);
    a.ja(take.clone());
    act(a, ChunkAction::Fail);
    a.ja(l("refuse"));
    act(a, ChunkAction::Digit);
    a.ldxdw(R1, R9, layout::CHUNK + cs::SIZE).lsh64(R1, 4);
    hex(a, R2, R6);
    a.or64(R1, R2).stxdw(R9, layout::CHUNK + cs::SIZE, R1);
    a.label(l("line"));
    a.ldxh(R1, R9, layout::CHUNK + cs::LINE_LEN).add64(R1, 1).stxh(R9, layout::CHUNK + cs::LINE_LEN, R1);
    a.jge(R1, i32::from(MAX_CHUNK_LINE), l("refuse"));
    a.ja(take.clone());
    act(a, ChunkAction::Line);
    a.ja(l("line"));
    act(a, ChunkAction::SizeEnd);
    a.sth(R9, layout::CHUNK + cs::LINE_LEN, 0);
    a.ldxdw(R1, R9, layout::CHUNK + cs::SIZE).jne(R1, 0, l("data"));
    a.stxb(R9, layout::CHUNK + cs::STATE, R4);
    a.stw(R9, layout::CHUNK + cs::TRAILER_BYTES, 0).stw(R9, layout::CHUNK + cs::TRAILER_FIELDS, 0);
    a.ja(take.clone());
    a.label(l("data"));
    a.stxdw(R9, layout::CHUNK + cs::REMAINING, R1).stdw(R9, layout::CHUNK + cs::SIZE, 0);
    a.ja(take.clone());
    act(a, ChunkAction::TrailerLine);
    a.ldxw(R1, R9, layout::CHUNK + cs::TRAILER_FIELDS).jge(R1, limits.headers as i32, l("refuse"));
    a.ja(l("trailer"));
    act(a, ChunkAction::TrailerFieldEnd);
    a.ldxw(R1, R9, layout::CHUNK + cs::TRAILER_FIELDS);
    a.jeq(R1, -1, l("trailer"));
    a.add64(R1, 1).stxw(R9, layout::CHUNK + cs::TRAILER_FIELDS, R1);
    a.ja(l("trailer"));
    act(a, ChunkAction::Trailer);
    a.label(l("trailer"));
    a.ldxw(R1, R9, layout::CHUNK + cs::TRAILER_BYTES);
    let kept = l("trailer_kept");
    a.jeq32(R1, -1, kept.clone());
    a.add64(R1, 1).stxw(R9, layout::CHUNK + cs::TRAILER_BYTES, R1);
    a.label(kept);
    a.jge(R1, header_bytes, l("refuse"));
    a.ja(take.clone());
    act(a, ChunkAction::Done);
    a.stb(R9, layout::CHUNK + cs::STATUS, 1);
    a.add64(R8, 1).stxw(R9, layout::CHUNK_TAKEN, R8);
    a.mov64(R0, 1).exit();
    a.label(take);
    a.add64(R8, 1).stxw(R9, layout::CHUNK_TAKEN, R8);
    a.mov64(R0, 0).exit();
    a.label(l("refuse"));
    a.note("the offending byte: CHUNK_TAKEN stays at it");
    a.stb(R9, layout::CHUNK + cs::STATUS, 2);
    a.label(l("stop"));
    a.mov64(R0, 1).exit();
}
