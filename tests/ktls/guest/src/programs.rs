//! Hand-assembled `sk_msg` programs for the checks that must not wait for
//! the code generator: they put a socket in a socket map and show what the
//! kernel does with kTLS there. Built like `runtime/tests/common`, with
//! `l7c_compiler::bpf::Asm` and `l7c_compiler::elf::ObjectBuilder`.

use l7c_compiler::bpf::{sk_msg_md, Asm, Helper, R0, R1, R10, R2, R3, R4, R6, R9};
use l7c_compiler::elf::{MapDef, ObjectBuilder};
use l7c_runtime::{KernelProgram, LoadOptions, SOCK_KEY_SIZE};

/// The enrollment map, keyed by the 44-byte `SockKey` like the generated
/// programs' `l7_sockets`.
pub const SOCKETS: &str = "l7_socks";
/// Ring buffer of [`Run`] records (the first-byte program).
pub const RUNS: &str = "runs";

fn object(program: l7c_compiler::bpf::Program, extra_maps: Vec<MapDef>) -> Result<Vec<u8>, String> {
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "ktls_verdict", program);
    object.map(MapDef::sock_hash(SOCKETS, SOCK_KEY_SIZE as u32, 64));
    for map in extra_maps {
        object.map(map);
    }
    object.write().map_err(|e| format!("writing the object: {e}"))
}

/// `return SK_PASS;` — a socket in a socket map, nothing else.
pub fn pass_all() -> Result<Vec<u8>, String> {
    let mut a = Asm::new();
    a.mov64(R0, 1).exit();
    object(a.finish().map_err(|e| e.to_string())?, Vec::new())
}

/// Bytes of one [`Run`] record.
const RUN_SIZE: i32 = 16;
/// Its stack slot: `r10 - 16`.
const RUN: i16 = -16;

/// Drops a message whose first byte is `denied`, passes any other. Under
/// kTLS `data == data_end` on entry, so it pulls the first byte before
/// reading it. Each run writes a [`Run`] record to [`RUNS`].
pub fn drop_first_byte(denied: u8) -> Result<Vec<u8>, String> {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.stdw(R10, RUN, 0).stdw(R10, RUN + 8, 0);
    a.note("size, and the bytes readable before the pull");
    a.ldxw(R1, R6, sk_msg_md::SIZE).stxw(R10, RUN, R1);
    a.ldxdw(R1, R6, sk_msg_md::DATA).ldxdw(R2, R6, sk_msg_md::DATA_END).sub64(R2, R1).stxw(R10, RUN + 4, R2);
    a.note("msg_pull_data(msg, 0, 1, 0)");
    a.mov64(R1, R6).mov64(R2, 0).mov64(R3, 1).mov64(R4, 0).call(Helper::MsgPullData);
    a.stxw(R10, RUN + 12, R0);
    a.ldxdw(R1, R6, sk_msg_md::DATA).ldxdw(R2, R6, sk_msg_md::DATA_END);
    a.mov64(R3, R2).sub64(R3, R1).stxw(R10, RUN + 8, R3);
    a.mov64(R9, 1);
    a.mov64(R3, R1).add64(R3, 1).jgt(R3, R2, "emit");
    a.ldxb(R4, R1, 0).jne(R4, i32::from(denied), "emit");
    a.mov64(R9, 0);
    a.label("emit");
    a.ld_map(R1, RUNS).mov64(R2, R10).add64(R2, i32::from(RUN)).mov64(R3, RUN_SIZE).mov64(R4, 0);
    a.call(Helper::RingbufOutput);
    a.mov64(R0, R9).exit();
    object(a.finish().map_err(|e| e.to_string())?, vec![MapDef::ring_buf(RUNS, 1 << 16)])
}

/// What one run of [`drop_first_byte`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// `msg->size`: the plaintext the verdict covers.
    pub size: u32,
    /// `data_end - data` on entry.
    pub readable_before_pull: u32,
    /// `data_end - data` after `msg_pull_data(0, 1)`.
    pub readable_after_pull: u32,
    pub pull_result: i32,
}

impl Run {
    fn parse(raw: &[u8]) -> Option<Run> {
        let word = |at: usize| raw.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
        Some(Run {
            size: word(0)?,
            readable_before_pull: word(4)?,
            readable_after_pull: word(8)?,
            pull_result: word(12)? as i32,
        })
    }
}

/// Every run recorded since the last call.
pub fn runs(program: &mut KernelProgram) -> Result<Vec<Run>, String> {
    let raw = program.drain_events(RUNS).map_err(|e| e.to_string())?;
    raw.iter().map(|r| Run::parse(r).ok_or_else(|| format!("a run record of {} bytes", r.len()))).collect()
}

/// Loads a hand-assembled object and attaches it to [`SOCKETS`].
pub fn load(object: &[u8]) -> Result<KernelProgram, String> {
    KernelProgram::load(object, &LoadOptions { program: None, attach_map: Some(SOCKETS) })
        .map_err(|e| format!("loading the hand-assembled program: {e}"))
}

/// One row of [`planned`]'s plan: what run n does (row min(n, 3)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// 1 `SK_PASS`, 0 `SK_DROP`.
    pub verdict: u32,
    /// `msg_apply_bytes(apply)` when non-zero ([`ZERO`] calls it with 0).
    pub apply: u32,
    /// `msg_cork_bytes(msg->size + cork_plus)` when non-zero, or with 0
    /// when [`ZERO`].
    pub cork_plus: u32,
}

/// In [`Step`]: call the helper with 0 (0 itself means "do not call").
pub const ZERO: u32 = u32::MAX;
/// The plan array of [`planned`].
pub const PLAN: &str = "plan";
/// Its run counter.
const COUNT: &str = "count";
/// The events of [`planned`]: (run index, `msg->size`), 8 bytes each.
pub const STEPS: &str = "steps";

/// A program that does on its n-th run what row min(n, 3) of [`PLAN`]
/// says, and reports (n, `msg->size`) on [`STEPS`]: how often and on
/// what the kernel runs the verdict under kTLS.
pub fn planned() -> Result<Vec<u8>, String> {
    use l7c_compiler::bpf::{R7, R8};
    use l7c_compiler::elf::{DataType, Field};
    const KEY: i16 = -8;
    const EVENT: i16 = -16;
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.stdw(R10, KEY, 0).stdw(R10, EVENT, 0);
    a.note("n = count[0]++");
    a.ld_map(R1, COUNT).mov64(R2, R10).add64(R2, i32::from(KEY)).call(Helper::MapLookupElem);
    a.jeq(R0, 0, "fail");
    a.ldxw(R8, R0, 0).mov64(R1, R8).add64(R1, 1).stxw(R0, 0, R1);
    a.stxw(R10, EVENT, R8);
    a.ldxw(R1, R6, sk_msg_md::SIZE).stxw(R10, EVENT + 4, R1);
    a.note("row min(n, 3)");
    a.mov64(R1, R8).jle(R1, 3, "row").mov64(R1, 3);
    a.label("row").stxw(R10, KEY, R1);
    a.ld_map(R1, PLAN).mov64(R2, R10).add64(R2, i32::from(KEY)).call(Helper::MapLookupElem);
    a.jeq(R0, 0, "fail");
    a.mov64(R7, R0);
    a.note("apply");
    a.ldxw(R2, R7, 4).jeq(R2, 0, "no_apply");
    a.jne32(R2, ZERO as i32, "apply").mov64(R2, 0);
    a.label("apply").mov64(R1, R6).call(Helper::MsgApplyBytes);
    a.label("no_apply");
    a.note("cork size + cork_plus");
    a.ldxw(R3, R7, 8).jeq(R3, 0, "no_cork");
    a.mov64(R2, 0).jeq32(R3, ZERO as i32, "cork");
    a.ldxw(R2, R6, sk_msg_md::SIZE).add64(R2, R3);
    a.label("cork").mov64(R1, R6).call(Helper::MsgCorkBytes);
    a.label("no_cork");
    a.ld_map(R1, STEPS).mov64(R2, R10).add64(R2, i32::from(EVENT)).mov64(R3, 8).mov64(R4, 0);
    a.call(Helper::RingbufOutput);
    a.ldxw(R0, R7, 0).exit();
    a.label("fail").mov64(R0, 0).exit();
    let step = DataType::structure(
        "ktls_step",
        vec![
            Field::new("verdict", DataType::U32),
            Field::new("apply", DataType::U32),
            Field::new("cork_plus", DataType::U32),
        ],
    );
    object(
        a.finish().map_err(|e| e.to_string())?,
        vec![MapDef::array(PLAN, step, 4), MapDef::array(COUNT, DataType::U32, 1), MapDef::ring_buf(STEPS, 1 << 16)],
    )
}

/// Writes `steps` into [`PLAN`]; the last one fills the later rows.
pub fn set_plan(program: &KernelProgram, steps: &[Step]) -> Result<(), String> {
    let last = steps.last().copied().unwrap_or_default();
    for row in 0..4u32 {
        let step = steps.get(row as usize).copied().unwrap_or(last);
        let bytes: Vec<u8> = [step.verdict, step.apply, step.cork_plus].iter().flat_map(|v| v.to_ne_bytes()).collect();
        program.write_array(PLAN, row, &bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The (run index, `msg->size`) of every run since the last call.
pub fn steps(program: &mut KernelProgram) -> Result<Vec<(u32, u32)>, String> {
    let raw = program.drain_events(STEPS).map_err(|e| e.to_string())?;
    Ok(raw
        .iter()
        .filter_map(|r| {
            let word = |at: usize| r.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
            Some((word(0)?, word(4)?))
        })
        .collect())
}


