//! The `bpf_loop` callbacks every policy shares: the head scan (one byte
//! per step, a 1:1 translation of `scan::HeadScanner::step` and `feed`,
//! with the governing policy's automata stepped where `scan::HeadHooks`
//! are called), the accept-set collection, the decision interpreter, and
//! the chunk-line scan (`scan::ChunkScanner::step`). A policy is data: its
//! descriptor and lane records in the blob (`tables::desc`,
//! `tables::lane`), found through the `P_*` fields of the state that
//! scope selection sets (docs/program.md, "Many policies").
//!
//! Every callback is `long cb(u64 index, void *ctx)` with `ctx` the main
//! program's stack context ([`CTX`]): the connection state, `data`,
//! `data_end`. Registers inside: r9 = state, r7 = the tables' base, r6 =
//! the byte, r8 = its offset; r0..r5 are scratch. A callback returns 0 to
//! go on, 1 to stop. State that the verifier could track as a precise
//! counter lives in the storage, so one pass verifies every iteration.

use super::layout::{self, chunk as cs, head as hs};
use super::tables::{self, desc, lane, record, SharedTables, CANDIDATES, GROUP_LANES};
use crate::bpf::{Asm, Label, Reg, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::http::{LimitKind, MalformedKind};
use crate::lower::{DEAD, START};
use crate::scan::{Action, ChunkAction, HeaderId, NameSkip, ValueSkip, MAX_CHUNK_LINE};

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

/// The callbacks' and helper functions' names: one of each, for every
/// policy (docs/program.md, "Many policies").
pub mod names {
    pub const SCAN: &str = "l7_scan";
    pub const COLLECT: &str = "l7_collect";
    pub const DECIDE: &str = "l7_decide";
    pub const GUARDED: &str = "l7_guarded";
    pub const STICKY: &str = "l7_sticky";
    pub const CHUNK: &str = "l7_chunk";
    pub const STEP_GROUP: &str = "l7_step_group";
    pub const START_GROUP: &str = "l7_start_group";
    pub const READ_WORDS: &str = "l7_read_words";
}

/// What every policy's code shares in one compilation: where the facts
/// and candidates sit in the storage, the masks that bound a lane's slot
/// and a fact's word, and the blob's mask (`blob::Blob::seal`).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub facts: i16,
    /// Words of the facts bitmap, minus one (a power of two minus one).
    pub fact_mask: u32,
    /// The candidate facts' array (`tables::CANDIDATES` u32s).
    pub cand: i16,
    /// Lane slots in the storage, minus one (a power of two minus one).
    pub lane_mask: u32,
    pub blob_mask: u32,
}

/// Emits the callbacks and the functions they call.
pub fn emit(a: &mut Asm, shared: &SharedTables, shape: &Shape) {
    scan(a, shared, shape);
    step_group(a, shape);
    start_group(a, shape);
    if shared.value_skip.is_some() {
        read_words(a, shape);
    }
    collect(a, shape);
    sticky(a, shape);
    decide(a, shape);
    guarded(a, shape);
    chunk(a, shared);
}

/// `reg = &l7_tables` (the `.rodata` blob).
pub(super) fn tables_base(a: &mut Asm, reg: Reg) {
    a.ld_map(reg, super::blob::SYMBOL).comment("the tables (.rodata)");
}

/// `reg = base + (reg & blob_mask)`: a pointer into the blob whatever
/// `reg` held (blob::Blob::seal).
pub(super) fn into_blob(a: &mut Asm, reg: Reg, base: Reg, shape: &Shape) {
    a.and64(reg, shape.blob_mask as i32).add64(reg, base);
}

/// `index` = a pointer to entry `index` of the policy's table (`table`,
/// `mask`: the descriptor's fields of its offset and mask), entries of
/// `1 << shift` bytes; `desc` the descriptor, r7 the blob (clobbers `tmp`).
fn table_entry(a: &mut Asm, index: Reg, desc: Reg, (table, mask): (i16, i16), shift: i32, tmp: Reg, shape: &Shape) {
    a.ldxw(tmp, desc, mask).and64(index, tmp).lsh64(index, shift);
    a.ldxw(tmp, desc, table).add64(index, tmp);
    into_blob(a, index, R7, shape);
}

/// `reg` = the governing policy's descriptor (`state` the storage, `base`
/// the blob).
pub(super) fn desc_ptr(a: &mut Asm, reg: Reg, state: Reg, base: Reg, shape: &Shape) {
    a.ldxw(reg, state, layout::P_DESC);
    into_blob(a, reg, base, shape);
}

/// Steps the token lane `index` (0: the method, 1: header names) with the
/// byte in r1 (clobbers r0, r2, r3, r4; r1 kept). r9 = state, r7 = blob.
fn step_token(a: &mut Asm, index: i16, shape: &Shape) {
    a.ldxw(R4, R9, layout::P_LANES).add64(R4, i32::from(index) * lane::BYTES as i32);
    into_blob(a, R4, R7, shape);
    a.ldxw(R2, R4, lane::CLASS).add64(R2, R1);
    into_blob(a, R2, R7, shape);
    a.ldxb(R2, R2, 0).comment("class");
    let state = layout::AREA + 4 * index;
    a.ldxw(R3, R9, state);
    a.ldxw(R0, R4, lane::MASK).and64(R3, R0);
    a.ldxw(R0, R4, lane::CLASSES).mul64(R3, R0).add64(R3, R2).lsh64(R3, 1);
    a.ldxw(R0, R4, lane::NEXT).add64(R3, R0);
    into_blob(a, R3, R7, shape);
    a.ldxh(R3, R3, 0).stxw(R9, state, R3).comment("next state");
}

/// `l7_step_group(state, byte, group)`: steps the lanes of `group`
/// (`first | count << 8`: the path's, or one header value's) with the
/// byte; a sticky lane ORs what its new state has seen into its facts
/// word. Unrolled [`GROUP_LANES`] times.
fn step_group(a: &mut Asm, shape: &Shape) {
    a.function(names::STEP_GROUP);
    a.note("l7_step_group(state, byte, group): each lane of the group steps with the byte");
    a.mov64(R6, R1).mov64(R8, R2).and64(R8, 0xff).mov64(R9, R3);
    tables_base(a, R7);
    let out = Label::from("step_group_out");
    for k in 0..GROUP_LANES as i32 {
        let next = Label::from(format!("step_group_{k}_done"));
        a.mov64(R1, R9).rsh64(R1, 8).jle(R1, k, out.clone()).comment(format!("fewer than {} lanes", k + 1));
        group_lane(a, k, shape);
        lane_step(a, shape, R6, R8, &next);
        a.label(next);
    }
    a.label(out);
    a.mov64(R0, 0).exit();
}

/// One lane steps with `byte` (r4 = its record, r3 = its state's place
/// minus `AREA`, `state` the storage, r7 the blob): the next state is
/// stored, and a sticky lane ORs what it has now seen into its facts
/// word; then `done` (clobbers r0, r2, r5; `byte` is read first).
fn lane_step(a: &mut Asm, shape: &Shape, state: Reg, byte: Reg, done: &Label) {
    a.ldxw(R2, R4, lane::CLASS).add64(R2, byte);
    into_blob(a, R2, R7, shape);
    a.ldxb(R2, R2, 0).comment("class");
    a.ldxw(R5, R3, layout::AREA);
    a.ldxw(R0, R4, lane::MASK).and64(R5, R0);
    a.ldxw(R0, R4, lane::CLASSES).mul64(R5, R0).add64(R5, R2).lsh64(R5, 1);
    a.ldxw(R0, R4, lane::NEXT).add64(R5, R0);
    into_blob(a, R5, R7, shape);
    a.ldxh(R5, R5, 0).stxw(R3, layout::AREA, R5).comment("next state");
    a.ldxb(R0, R4, lane::KIND).jne(R0, i32::from(lane::STICKY), done.clone());
    seen_word(a, shape, Seen::Or(done), state);
}

/// r4 = the record of lane `first + k` of the group in r9, r3 = its
/// state's place minus `AREA` (r6 = state, r7 = blob; clobbers r0).
fn group_lane(a: &mut Asm, k: i32, shape: &Shape) {
    a.mov64(R3, R9).and64(R3, 0xff).add64(R3, k);
    lane_at(a, R3, R6, shape);
}

/// For the lane whose index is in `index` (r3 or r4, or another register
/// it leaves as it is; `state` the storage, r7 the blob): r3 = its
/// state's place minus `AREA`, r4 = its record (clobbers r0). The one
/// place a lane's index becomes its two pointers.
fn lane_at(a: &mut Asm, index: Reg, state: Reg, shape: &Shape) {
    let place = |a: &mut Asm| {
        if index != R3 {
            a.mov64(R3, index);
        }
        a.and64(R3, shape.lane_mask as i32).lsh64(R3, 2).add64(R3, state);
    };
    if index != R3 {
        place(a);
    }
    if index != R4 {
        a.mov64(R4, index);
    }
    a.lsh64(R4, lane::SHIFT).ldxw(R0, state, layout::P_LANES).add64(R4, R0);
    into_blob(a, R4, R7, shape);
    if index == R3 {
        place(a);
    }
}

/// How [`seen_word`] writes a sticky lane's facts word.
enum Seen<'a> {
    /// `seen = seen_mask[state]` (a lane starting).
    Set,
    /// `seen |= seen_mask[state]`; when that mask is empty, nothing to
    /// OR: on to the label (most states of most lanes see nothing).
    Or(&'a Label),
}

/// A sticky lane (record r4, new state r5, `state` the storage): its
/// facts word gets `seen[state]`, set or ORed in (clobbers r0, r2, r5).
fn seen_word(a: &mut Asm, shape: &Shape, how: Seen, state: Reg) {
    a.ldxw(R0, R4, lane::MASK).and64(R5, R0).lsh64(R5, 3);
    a.ldxw(R0, R4, lane::A).add64(R5, R0);
    into_blob(a, R5, R7, shape);
    a.ldxdw(R5, R5, 0);
    if let Seen::Or(nothing) = how {
        a.jeq(R5, 0, nothing.clone()).comment("this state sees nothing");
    }
    a.ldxw(R0, R4, lane::B).and64(R0, shape.fact_mask as i32).lsh64(R0, 3).add64(R0, state);
    match how {
        Seen::Set => {
            a.stxdw(R0, shape.facts, R5).comment("seen = seen_mask[start]");
        }
        Seen::Or(_) => {
            a.ldxdw(R2, R0, shape.facts).or64(R2, R5).stxdw(R0, shape.facts, R2).comment("seen |= seen_mask[state]");
        }
    }
}

/// `l7_start_group(state, group)`: every lane of the group to the start
/// state (a sticky lane's facts word to the start state's seen mask).
fn start_group(a: &mut Asm, shape: &Shape) {
    a.function(names::START_GROUP);
    a.note("l7_start_group(state, group): each lane of the group starts");
    a.mov64(R6, R1).mov64(R9, R2);
    tables_base(a, R7);
    let out = Label::from("start_group_out");
    for k in 0..GROUP_LANES as i32 {
        let next = Label::from(format!("start_group_{k}_done"));
        a.mov64(R1, R9).rsh64(R1, 8).jle(R1, k, out.clone());
        group_lane(a, k, shape);
        a.stw(R3, layout::AREA, START as i32);
        a.ldxb(R0, R4, lane::KIND).jne(R0, i32::from(lane::STICKY), next.clone());
        a.mov64(R5, START as i32);
        seen_word(a, shape, Seen::Set, R6);
        a.label(next);
    }
    a.label(out);
    a.mov64(R0, 0).exit();
}

/// Calls `l7_start_group(state, group)` for the group in `group` when it
/// has lanes; r9 = state (clobbers r0..r5).
fn start_group_here(a: &mut Asm, group: Reg) {
    let none = a.fresh_label("no_lanes");
    a.mov64(R3, group).rsh64(R3, 8).jeq(R3, 0, none.clone());
    a.mov64(R2, group).mov64(R1, R9);
    a.call_local(names::START_GROUP);
    a.label(none);
}

/// The head scanner's actions in the order the scan tests for them: by
/// how often a head's bytes take them.
const HOT_ACTIONS: [Action; 4] = [Action::ValueByte, Action::NameByte, Action::None, Action::PathByte];

/// The head scan callback: [`SCAN_UNROLL`] bytes per call.
fn scan(a: &mut Asm, shared: &SharedTables, shape: &Shape) {
    let l = |what: &str| Label::from(format!("s_{what}"));
    a.function(names::SCAN);
    a.note("head scan: one byte per step (scan::HeadScanner::step), the governing policy's lanes where hooks are called");
    a.ldxdw(R9, R2, CTX_STATE);
    a.stxdw(R10, -8, R2).comment("ctx, for every byte of this iteration");
    // r7 holds the blob for the whole call: nothing in it writes r7, and
    // `l7_step_group` keeps it (r6..r9 survive a call).
    tables_base(a, R7);
    for k in 0..SCAN_UNROLL {
        let lk = |what: &str| Label::from(format!("s_{what}_{k}"));
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
        a.mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD + hs::OFFSET, R1);
        head_class(a, shared);
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
        step_token(a, 0, shape);
        a.ja(after.clone());

        action(a, Action::MethodEnd);
        let get_or_head = i32::from(crate::scan::METHOD_GET_OR_HEAD);
        a.mov64(R1, R4).and64(R1, get_or_head).stxb(R9, layout::HEAD + hs::METHOD, R1).comment("GET or HEAD");
        a.and64(R4, !get_or_head & 0xff).stxb(R9, layout::HEAD + hs::FORM, R4).ja(after.clone());

        let path_step = lk("path_step");
        action(a, Action::TargetFirst);
        a.stxb(R9, layout::HEAD + hs::FORM, R4);
        a.ldxh(R1, R9, layout::P_PATH_GROUP);
        start_group_here(a, R1);
        a.mov64(R1, R6);
        a.ja(path_step.clone());

        action(a, Action::PathByte);
        a.mov64(R1, R6);
        a.label(path_step.clone());
        a.and64(R1, 0xff).ldxh(R2, R9, layout::P_PATH_GROUP);
        step_group_here(a, R2, R1, shape, &lk("path_stepped"));
        a.ja(after.clone());

        action(a, Action::EscapeHigh);
        hex(a, R1, R6);
        a.stxb(R9, layout::HEAD + hs::ESCAPE_HIGH, R1).ja(after.clone());

        action(a, Action::PathEscaped);
        hex(a, R2, R6);
        a.ldxb(R1, R9, layout::HEAD + hs::ESCAPE_HIGH).lsh64(R1, 4).or64(R1, R2);
        a.ja(path_step.clone());

        action(a, Action::PathEnd);
        a.ja(after.clone());

        action(a, Action::Version);
        a.stxb(R9, layout::HEAD + hs::MINOR_VERSION, R4).ja(after.clone());

        action(a, Action::LineName);
        fields_limit(a, &l("limit_headers"));
        a.stw(R9, layout::AREA + 4, START as i32).comment("the header-name lane starts");
        lower_byte(a);
        step_token(a, 1, shape);
        a.ja(after.clone());

        action(a, Action::LineFail);
        fields_limit(a, &l("limit_headers"));
        a.ja(lk("fail_arg"));

        action(a, Action::NameByte);
        lower_byte(a);
        step_token(a, 1, shape);
        if shared.name_skip.is_some() {
            skip_name(a, &after);
        }
        a.ja(after.clone());

        action(a, Action::NameEnd);
        a.ldxw(R4, R9, layout::P_LANES).add64(R4, lane::BYTES as i32);
        into_blob(a, R4, R7, shape);
        a.ldxw(R1, R9, layout::AREA + 4);
        a.ldxw(R0, R4, lane::MASK).and64(R1, R0);
        a.ldxw(R2, R4, lane::A).add64(R2, R1);
        into_blob(a, R2, R7, shape);
        a.ldxb(R1, R2, 0).and64(R1, 63).comment("header id");
        a.stxb(R9, layout::HEAD + hs::HEADER_ID, R1);
        a.mov64(R2, 1).lsh64(R2, R1).comment("bit");
        a.ldxdw(R3, R9, layout::HEAD + hs::PRESENT).and64(R3, R2);
        a.ldxdw(R0, R9, layout::HEAD + hs::REPEATED).or64(R0, R3).stxdw(R9, layout::HEAD + hs::REPEATED, R0);
        a.ldxdw(R0, R9, layout::HEAD + hs::PRESENT).or64(R0, R2).stxdw(R9, layout::HEAD + hs::PRESENT, R0);
        a.mov64(R2, R1).lsh64(R2, 1).add64(R2, R7).add64(R2, shared.head_role as i32);
        a.ldxh(R2, R2, 0).stxh(R9, layout::HEAD + hs::SUB, R2).comment("sub = role_start[id]");
        a.mov64(R2, 1).lsh64(R2, R1).ldxdw(R3, R9, layout::P_READ).and64(R3, R2);
        a.mov64(R2, 0).jeq(R3, 0, lk("field_unread"));
        a.mov64(R2, 1);
        a.label(lk("field_unread"));
        a.stxb(R9, layout::FIELD_READ, R2).comment("whether the policy's matchers read this field's value");
        value_group(a, shape);
        start_group_here(a, R1);
        a.ja(after.clone());

        action(a, Action::ValueByte);
        let read = lk("value_read");
        a.ldxb(R1, R9, layout::FIELD_READ).jne(R1, 0, read.clone()).comment("a field the policy's matchers read");
        sub_step(a, shared);
        a.jset(R0, 0x8000, lk("digit"));
        if let Some(skip) = shared.value_skip {
            skip_plain_value(a, skip, &after);
        }
        a.ja(after.clone());
        a.label(read);
        a.ldxb(R1, R9, layout::HEAD + hs::HEADER_ID).and64(R1, 63);
        value_group(a, shape);
        step_group_here(a, R1, R6, shape, &lk("value_stepped"));
        head_class(a, shared);
        sub_step(a, shared);
        a.jset(R0, 0x8000, lk("digit"));
        if let Some(skip) = shared.value_skip {
            a.note("read value bytes, a word at a time (docs/program.md, \"Read values a word at a time\")");
            a.jne(R1, i32::from(skip.plain), after.clone()).comment("a role's value, or still empty");
            a.mov64(R1, R9).mov64(R2, R8).ldxdw(R3, R10, -8);
            a.call_local(names::READ_WORDS);
            a.mov64(R8, R0).comment("the last byte taken");
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
        a.ldxw(R3, R9, layout::P_HEADER_BYTES);
        a.jlt(R8, R3, l("complete"));
        a.ja(after.clone());

        a.label(after);
        a.note("the head may not be longer than header_bytes; a CR as the last allowed byte waits for the next");
        a.ldxw(R3, R9, layout::P_HEADER_BYTES);
        a.mov64(R2, R8).add64(R2, 1);
        a.jlt(R2, R3, lk("go_on"));
        a.jne(R2, R3, l("limit_bytes"));
        a.ldxh(R1, R9, layout::HEAD + hs::STATE).sub64(R1, 1);
        a.jlt(R1, i32::from(crate::scan::AFTER_CR_STATES), lk("go_on"));
        a.label(lk("go_on"));
        if k + 1 == SCAN_UNROLL {
            a.mov64(R0, 0).exit();
        }
    }
    a.label(l("limit_bytes"));
    a.ldxw(R8, R9, layout::P_HEADER_BYTES).sub64(R8, 1);
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
    complete(a, shape);
}

/// r5 = the head class of the byte in r6 (r7 = blob; clobbers r1).
fn head_class(a: &mut Asm, shared: &SharedTables) {
    a.mov64(R1, R7).add64(R1, shared.head_class as i32).add64(R1, R6);
    a.ldxb(R5, R1, 0).comment("r5 = class");
}

/// Jumps to `limit` when the head already has the policy's most field
/// lines (clobbers r1, r2).
fn fields_limit(a: &mut Asm, limit: &Label) {
    a.ldxh(R1, R9, layout::HEAD + hs::FIELDS);
    a.ldxw(R2, R9, layout::P_HEADERS);
    a.jge(R1, R2, limit.clone());
}

/// r1 = the value group of the header id in r1 (clobbers r2).
fn value_group(a: &mut Asm, shape: &Shape) {
    desc_ptr(a, R2, R9, R7, shape);
    a.lsh64(R1, 1).add64(R2, R1).ldxh(R1, R2, tables::desc::VALUE_GROUPS).comment("its value lanes: first | count << 8");
}

/// For a skip (r8 = the last byte taken, r6 = header_bytes): r1 = the
/// next eight bytes, or `after` when the last of them would reach
/// `header_bytes` or lie past the window (clobbers r2..r5).
fn next_word(a: &mut Asm, after: &Label) {
    let width = ValueSkip::WIDTH as i32;
    a.mov64(R2, R8).add64(R2, width).jge(R2, R6, after.clone()).comment("the last byte taken stays below header_bytes");
    a.ldxdw(R2, R10, -8).comment("ctx");
    a.ldxdw(R3, R2, CTX_DATA).ldxdw(R4, R2, CTX_DATA_END);
    a.add64(R3, R8).add64(R3, 1);
    a.mov64(R5, R3).add64(R5, width).jgt(R5, R4, after.clone()).comment("eight more bytes in the window");
    a.ldxdw(R1, R3, 0).comment("w = the next eight bytes");
}

/// Words of name bytes one name byte's step may skip after it.
pub const NAME_SKIP_WORDS: usize = 2;

/// After a name byte (r3 = the header-name lane's new state, r8 = the
/// byte's offset; clobbers r6): once the lane is dead (no name the policy
/// or the scanner knows starts so) and the policy's dead state stays dead
/// (`P_NAME_SKIP`), take the next eight bytes at once while all of them
/// are letters, digits or `-` ([`NameSkip::word_passes`]; the lexer keeps
/// its state on them: `HeadTables::name_skip`), inside the window and
/// below `header_bytes` — up to [`NAME_SKIP_WORDS`] words. Anything else
/// (the colon, a CR, another tchar) is left to the byte steps. Ends at
/// `after`, r8 = the last byte taken.
fn skip_name(a: &mut Asm, after: &Label) {
    let ones = ValueSkip::ONES;
    let width = NameSkip::WIDTH as i32;
    a.note("name bytes after the name lane died, eight at a time (docs/program.md, \"Skipping name bytes\")");
    a.jne(R3, DEAD as i32, after.clone()).comment("a name the policy may still know");
    a.ldxb(R1, R9, layout::P_NAME_SKIP).jeq(R1, 0, after.clone());
    a.ldxw(R6, R9, layout::P_HEADER_BYTES).comment("r6 = header_bytes (the byte is not needed any more)");
    // dst = 0x80 in each byte of src (all below 0x80) within low..=high;
    // clobbers r2, r3.
    let in_range = |a: &mut Asm, dst: Reg, src: Reg, low: u8, high: u8| {
        a.mov64(dst, src).ld_imm64(R2, (ones * u64::from(0x80 - low)) as i64).add64(dst, R2);
        a.ld_imm64(R2, ValueSkip::HIGH as i64).and64(dst, R2).comment(format!("bytes >= {:?}", char::from(low)));
        a.mov64(R3, src).ld_imm64(R2, (ones * u64::from(0x7f - high)) as i64).add64(R3, R2).xor64(R3, -1);
        a.and64(dst, R3).comment(format!("and <= {:?}", char::from(high)));
    };
    for _ in 0..NAME_SKIP_WORDS {
        next_word(a, after);
        a.ld_imm64(R2, ValueSkip::HIGH as i64);
        a.mov64(R0, R1).and64(R0, R2).jne(R0, 0, after.clone()).comment("a byte from 0x80 up");
        a.ld_imm64(R2, (ones * 0x20) as i64);
        a.mov64(R4, R1).or64(R4, R2).comment("letters as lowercase (nothing else lands in a-z)");
        in_range(a, R0, R4, b'a', b'z');
        in_range(a, R5, R1, b'0', b'9');
        a.or64(R0, R5);
        in_range(a, R5, R1, b'-', b'-');
        a.or64(R0, R5);
        a.ld_imm64(R2, ValueSkip::HIGH as i64);
        a.jne(R0, R2, after.clone()).comment("a byte to step: stop here");
        a.add64(R8, width).mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD + hs::OFFSET, R1).comment("eight bytes taken");
    }
}

/// Words of plain value bytes one value byte's step may skip after it.
pub const SKIP_WORDS: usize = 3;

/// After a value byte of a field no matcher of the policy reads (r1 =
/// the value syntax's new state, r8 = the byte's offset; clobbers r6):
/// while no role checks the field (`skip.plain`), the next eight bytes are inside the
/// window and below `header_bytes`, and all of them are
/// [`ValueSkip::bytes`], take them at once — up to [`SKIP_WORDS`] words.
/// Each such byte would take the lexer and the value syntax back to
/// where they are and do nothing else (`HeadTables::value_skip` checks
/// that from the tables), so only the offset moves. A word with any
/// other byte, or near either limit, is left to the byte steps, which
/// find a violation at its exact offset. Ends at `after`, r8 = the last
/// byte taken.
fn skip_plain_value(a: &mut Asm, skip: ValueSkip, after: &Label) {
    let width = ValueSkip::WIDTH as i32;
    a.note("plain value bytes, eight at a time (docs/program.md, \"Skipping plain value bytes\")");
    a.jne(R1, i32::from(skip.plain), after.clone()).comment("a role's value, or still empty");
    a.ldxw(R6, R9, layout::P_HEADER_BYTES).comment("r6 = header_bytes (the byte is not needed any more)");
    for _ in 0..SKIP_WORDS {
        next_word(a, after);
        plain_word(a, after);
        a.add64(R8, width).mov64(R1, R8).add64(R1, 1).stxw(R9, layout::HEAD + hs::OFFSET, R1).comment("eight bytes taken");
    }
}

/// Stack slots of [`read_words`] (ctx at -8, as in the scan).
const RW_RECORD: i16 = -16;
const RW_PLACE: i16 = -24;

/// `l7_read_words(state, offset, ctx) -> offset`: after a value byte of
/// a field the policy's matchers read, in the value syntax's plain state
/// (`offset` the byte's), the words [`skip_plain_value`] would take at
/// once in a field nobody reads are taken here too, eight bytes at a
/// time, each byte stepping the field's lane — without the lexer, the
/// value syntax, the dispatch and the offset store of a byte step, which
/// those bytes would leave as they are (`HeadTables::value_skip`: each
/// is a `ValueByte` that keeps both). Only for a field whose value group
/// is one lane (a larger group goes byte by byte through
/// `l7_step_group`). Up to [`SKIP_WORDS`] words; a word with any other
/// byte, or near either limit, is left to the byte steps. Returns the
/// last byte taken (stored in the head's offset as the byte steps do).
/// One copy for the scan's [`SCAN_UNROLL`] byte steps.
fn read_words(a: &mut Asm, shape: &Shape) {
    let width = ValueSkip::WIDTH as i32;
    let out = Label::from("read_words_out");
    a.function(names::READ_WORDS);
    a.note("l7_read_words(state, offset, ctx): read value bytes, eight at a time, each stepping the field's lane");
    a.mov64(R9, R1).mov64(R8, R2).stxdw(R10, -8, R3);
    tables_base(a, R7);
    a.ldxb(R1, R9, layout::HEAD + hs::HEADER_ID).and64(R1, 63);
    value_group(a, shape);
    a.mov64(R3, R1).rsh64(R3, 8).jne(R3, 1, out.clone()).comment("one lane only");
    a.and64(R1, 0xff);
    lane_at(a, R1, R9, shape);
    a.stxdw(R10, RW_PLACE, R3).comment("its state's place minus AREA");
    a.stxdw(R10, RW_RECORD, R4).comment("its record");
    for w in 0..SKIP_WORDS {
        a.ldxw(R6, R9, layout::P_HEADER_BYTES).comment("r6 = header_bytes");
        next_word(a, &out);
        plain_word(a, &out);
        a.ldxdw(R3, R10, RW_PLACE).ldxdw(R4, R10, RW_RECORD);
        for j in 0..width {
            let stepped = Label::from(format!("read_words_{w}_{j}"));
            a.mov64(R6, R1);
            if j > 0 {
                a.rsh64(R6, 8 * j);
            }
            a.and64(R6, 0xff).comment(format!("byte {j} of the word"));
            lane_step(a, shape, R9, R6, &stepped);
            a.label(stepped);
        }
        a.add64(R8, width).mov64(R2, R8).add64(R2, 1).stxw(R9, layout::HEAD + hs::OFFSET, R2).comment("eight bytes taken");
    }
    a.label(out);
    a.mov64(R0, R8).exit();
}

/// Jumps to `after` unless all eight bytes of the word in r1 are
/// [`ValueSkip::bytes`] ([`ValueSkip::word_passes`]; keeps r1, clobbers
/// r0, r2, r4, r5).
fn plain_word(a: &mut Asm, after: &Label) {
    let ones = ValueSkip::ONES;
    a.ld_imm64(R2, (ones * u64::from(ValueSkip::LOW)) as i64);
    a.mov64(R0, R1).sub64(R0, R2).mov64(R2, R1).xor64(R2, -1).and64(R0, R2).comment("a byte below 0x20: (w - 0x20..) & !w");
    a.ld_imm64(R2, (ones * u64::from(ValueSkip::DEL)) as i64);
    a.mov64(R4, R1).xor64(R4, R2).comment("y = w ^ 0x7f..: DEL becomes 0");
    a.ld_imm64(R2, ones as i64);
    a.mov64(R5, R4).sub64(R5, R2).xor64(R4, -1).and64(R5, R4).or64(R0, R5).comment("| a zero byte of y: (y - 0x01..) & !y");
    a.ld_imm64(R2, ValueSkip::HIGH as i64);
    a.and64(R0, R2).jne(R0, 0, after.clone()).comment("a byte to step: stop here");
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

/// The lanes of `group` step with `byte` (in the scan: r9 = state, r7 =
/// blob; clobbers r0..r5): a group of one lane, the most common, inline —
/// a call per byte costs more than the step — and a larger one in
/// `l7_step_group`. Ends at `done`.
fn step_group_here(a: &mut Asm, group: Reg, byte: Reg, shape: &Shape, done: &Label) {
    let call = Label::from(format!("{done}_call"));
    a.mov64(R4, group).mov64(R5, byte);
    a.mov64(R3, R4).rsh64(R3, 8).jeq(R3, 0, done.clone()).comment("no lanes");
    a.jne(R3, 1, call.clone()).comment("more than one lane: the function");
    a.and64(R4, 0xff);
    lane_at(a, R4, R9, shape);
    lane_step(a, shape, R9, R5, done);
    a.ja(done.clone());
    a.label(call);
    a.mov64(R3, R4).mov64(R2, R5).mov64(R1, R9);
    a.call_local(names::STEP_GROUP);
    a.label(done.clone());
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
fn complete(a: &mut Asm, shape: &Shape) {
    let l = |what: &str| Label::from(format!("s_c_{what}"));
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
    desc_ptr(a, R3, R9, R7, shape);
    a.note("get_body deny: a GET or HEAD with a body (Transfer-Encoding, or a Content-Length other than 0)");
    a.ldxb(R0, R3, desc::GET_BODY_DENY).jeq(R0, 0, l("no_get_body"));
    a.ldxb(R0, R9, layout::HEAD + hs::METHOD);
    a.jeq(R0, 0, l("no_get_body"));
    a.jset(R2, coding, l("get_body"));
    a.jset(R2, length, l("get_body_length"));
    a.ja(l("no_get_body"));
    a.label(l("get_body_length"));
    a.ldxdw(R5, R9, layout::HEAD + hs::CONTENT_LENGTH);
    a.jne(R5, 0, l("get_body"));
    a.label(l("no_get_body"));
    a.note("repeated fields the policy refuses");
    a.ldxdw(R0, R3, desc::REFUSE_DUPLICATES);
    a.and64(R0, R1);
    a.jne(R0, 0, l("duplicate"));
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
        a.label(l(what));
        refuse_const(a, malformed_code(kind), R8);
    }
}

/// The collect callback: the accept sets of the governing policy's
/// at-end lanes into the facts, one step per iteration. Its cursor:
/// `DEC_LIST` the next lane, `DEC_LIST_AT .. DEC_LIST_END` the members of
/// the set being listed. Stops (returns 1) after the last lane.
fn collect(a: &mut Asm, shape: &Shape) {
    let l = |what: &str| Label::from(format!("collect_{what}"));
    a.function(names::COLLECT);
    a.note("accept-set member -> its fact bit; or the next at-end lane's accept set");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    a.ldxw(R1, R9, layout::DEC_LIST_AT).ldxw(R2, R9, layout::DEC_LIST_END);
    a.jlt(R1, R2, l("member"));
    a.ldxw(R1, R9, layout::DEC_LIST);
    desc_ptr(a, R2, R9, R7, shape);
    a.ldxw(R3, R2, desc::LANE_COUNT).jge(R1, R3, l("stop"));
    a.mov64(R3, R1).add64(R3, 1).stxw(R9, layout::DEC_LIST, R3);
    a.mov64(R4, R1).lsh64(R4, lane::SHIFT);
    a.ldxw(R3, R9, layout::P_LANES).add64(R4, R3);
    into_blob(a, R4, R7, shape);
    a.ldxb(R0, R4, lane::KIND).jne(R0, i32::from(lane::AT_END), l("go_on")).comment("a token or sticky lane: nothing to collect");
    a.and64(R1, shape.lane_mask as i32).lsh64(R1, 2).add64(R1, R9);
    a.ldxw(R5, R1, layout::AREA).comment("the lane's state");
    a.ldxw(R0, R4, lane::MASK).and64(R5, R0).lsh64(R5, 2);
    a.ldxw(R0, R4, lane::A).add64(R5, R0);
    into_blob(a, R5, R7, shape);
    a.ldxw(R5, R5, 0).comment("its accept set");
    a.ldxw(R0, R4, lane::C).and64(R5, R0).lsh64(R5, 2);
    a.ldxw(R0, R4, lane::B).add64(R5, R0);
    into_blob(a, R5, R7, shape);
    a.ldxw(R1, R5, 0).ldxw(R2, R5, 4);
    a.stxw(R9, layout::DEC_LIST_AT, R1).stxw(R9, layout::DEC_LIST_END, R2).comment("its members");
    a.label(l("go_on"));
    a.mov64(R0, 0).exit();
    a.label(l("stop"));
    a.mov64(R0, 1).exit();
    a.label(l("member"));
    a.mov64(R3, R1).add64(R3, 1).stxw(R9, layout::DEC_LIST_AT, R3);
    desc_ptr(a, R2, R9, R7, shape);
    table_entry(a, R1, R2, (desc::MEMBERS, desc::MEMBERS_MASK), 2, R3, shape);
    a.ldxw(R3, R1, 0).comment("fact");
    set_fact(a, R3, shape);
    add_candidate(a, R3, shape.cand);
    a.mov64(R0, 0).exit();
}

/// facts[fact >> 6] |= 1 << (fact & 63), fact in `reg` (clobbers r0, r2, r4).
fn set_fact(a: &mut Asm, reg: Reg, shape: &Shape) {
    a.mov64(R2, reg).rsh64(R2, 6).and64(R2, shape.fact_mask as i32).lsh64(R2, 3).add64(R2, R9);
    a.mov64(R4, reg).and64(R4, 63).mov64(R0, 1).lsh64(R0, R4);
    a.ldxdw(R4, R2, shape.facts).or64(R4, R0).stxdw(R2, shape.facts, R4);
}

/// Loads record `r1` (an index) and evaluates its literal: r0 = 1 when
/// it holds (negation applied), r6 = its flags (clobbers r1..r5).
fn literal(a: &mut Asm, prefix: &str, shape: &Shape) {
    let l = |what: &str| Label::from(format!("{prefix}_{what}"));
    desc_ptr(a, R3, R9, R7, shape);
    table_entry(a, R1, R3, (desc::RECORDS, desc::RECORDS_MASK), 3, R2, shape);
    a.mov64(R2, R1);
    a.ldxw(R1, R3, desc::METHOD_SETS_MASK).stxw(R10, -8, R1);
    a.ldxw(R1, R3, desc::METHOD_SETS).stxw(R10, -4, R1);
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
    a.ldxw(R2, R10, -8).and64(R5, R2).lsh64(R5, 3);
    a.ldxw(R2, R10, -4).add64(R2, R5);
    into_blob(a, R2, R7, shape);
    a.ldxdw(R0, R2, 0);
    a.ldxb(R1, R9, layout::METHOD_ID).and64(R1, 63).rsh64(R0, R1).and64(R0, 1).ja(l("value"));
    a.label(l("present"));
    a.ldxdw(R0, R9, layout::HEAD + hs::PRESENT).and64(R4, 63).rsh64(R0, R4).and64(R0, 1).ja(l("value"));
    a.label(l("fact"));
    a.mov64(R2, R5).rsh64(R2, 6).and64(R2, shape.fact_mask as i32).lsh64(R2, 3).add64(R2, R9);
    a.ldxdw(R0, R2, shape.facts).and64(R5, 63).rsh64(R0, R5).and64(R0, 1);
    a.label(l("value"));
    a.mov64(R1, R6).and64(R1, i32::from(record::NEGATED)).xor64(R0, R1);
}

/// The linear decision (when more facts are accepted than the guarded
/// decision lists): one record per iteration, every rule in order; stops
/// at the first rule whose clauses all hold.
fn decide(a: &mut Asm, shape: &Shape) {
    let name = names::DECIDE;
    let l = |what: &str| Label::from(format!("{name}_{what}"));
    a.function(name);
    a.note("one decision record: a literal, closing its clause and rule as flagged");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    literal(a, name, shape);
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

/// Lists the set bits of the sticky lanes' facts words as candidates:
/// word `index / 64` of the policy's list, bit `index % 64`, per
/// iteration.
fn sticky(a: &mut Asm, shape: &Shape) {
    let name = names::STICKY;
    let skip = Label::from(format!("{name}_clear"));
    let stop = Label::from(format!("{name}_stop"));
    a.function(name);
    a.note("a sticky lane's seen bit -> a candidate fact");
    a.ldxdw(R9, R2, CTX_STATE);
    tables_base(a, R7);
    desc_ptr(a, R2, R9, R7, shape);
    a.mov64(R3, R1).rsh64(R3, 6);
    a.ldxw(R4, R2, desc::STICKY_COUNT).jge(R3, R4, stop.clone());
    a.lsh64(R3, 2).ldxw(R4, R2, desc::STICKY).add64(R3, R4);
    into_blob(a, R3, R7, shape);
    a.ldxw(R3, R3, 0).and64(R3, shape.fact_mask as i32).comment("the facts word");
    a.mov64(R2, R3).lsh64(R2, 3).add64(R2, R9).ldxdw(R4, R2, shape.facts);
    a.and64(R1, 63).rsh64(R4, R1).and64(R4, 1);
    a.jeq(R4, 0, skip.clone());
    a.lsh64(R3, 6).add64(R3, R1);
    add_candidate(a, R3, shape.cand);
    a.label(skip);
    a.mov64(R0, 0).exit();
    a.label(stop);
    a.mov64(R0, 1).exit();
}

/// The guarded decision (docs/lowering.md, `walk::decide`): the unguarded
/// rules, then the rules listed under each candidate fact, each list in
/// rule order and cut at the best rule found so far; a rule is tried
/// record by record and dropped at its first false clause. One record,
/// or one step between rules and lists, per iteration.
fn guarded(a: &mut Asm, shape: &Shape) {
    let name = names::GUARDED;
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
    desc_ptr(a, R5, R9, R7, shape);
    table_entry(a, R1, R5, (desc::GUARD_MEMBERS, desc::GUARD_MEMBERS_MASK), 2, R2, shape);
    a.ldxw(R1, R1, 0).comment("rule");
    a.ldxw(R2, R9, layout::DEC_MATCH).jge(R1, R2, l("next_list"));
    a.stxw(R9, layout::DEC_RULE, R1);
    table_entry(a, R1, R5, (desc::RULE_RECORDS, desc::RULE_RECORDS_MASK), 2, R2, shape);
    a.ldxw(R3, R1, 0).ldxw(R4, R1, 4);
    a.stxw(R9, layout::DEC_RECORD, R3).stxw(R9, layout::DEC_RECORD_END, R4);
    a.stb(R9, layout::DEC_CLAUSE, 0);
    a.mov64(R0, 0).exit();

    a.label(l("next_list"));
    a.ldxw(R1, R9, layout::DEC_LIST).add64(R1, 1).stxw(R9, layout::DEC_LIST, R1);
    a.ldxw(R2, R9, layout::DEC_CANDIDATES);
    a.jgt(R1, R2, l("done"));
    a.sub64(R1, 1).and64(R1, CANDIDATES as i32 - 1).lsh64(R1, 2).add64(R1, R9).ldxw(R1, R1, shape.cand).comment("the candidate fact");
    desc_ptr(a, R5, R9, R7, shape);
    table_entry(a, R1, R5, (desc::FACT_GUARDS, desc::FACT_GUARDS_MASK), 3, R2, shape);
    a.ldxw(R3, R1, 0).ldxw(R4, R1, 4);
    a.stxw(R9, layout::DEC_LIST_AT, R3).stxw(R9, layout::DEC_LIST_END, R4);
    a.stw(R9, layout::DEC_RECORD, 0).stw(R9, layout::DEC_RECORD_END, 0);
    a.mov64(R0, 0).exit();
    a.label(l("done"));
    a.stb(R9, layout::DEC_MODE, 2);
    a.mov64(R0, 1).exit();

    a.label(l("record"));
    a.add64(R1, 1).stxw(R9, layout::DEC_RECORD, R1).sub64(R1, 1);
    literal(a, name, shape);
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
fn chunk(a: &mut Asm, shared: &SharedTables) {
    let l = |what: &str| Label::from(format!("c_{what}"));
    a.function(names::CHUNK);
    a.note("chunked-body framing: one byte (scan::ChunkScanner::step)");
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
    a.ldxw(R1, R9, layout::CHUNK + cs::TRAILER_FIELDS).ldxw(R2, R9, layout::P_HEADERS).jge(R1, R2, l("refuse"));
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
    a.ldxw(R2, R9, layout::P_HEADER_BYTES).jge(R1, R2, l("refuse"));
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
