//! Shared by the kernel tests: the root gate, hand-assembled objects, and
//! the probe program the mechanics tests drive.
//!
//! The probe is one `sk_msg` program whose behaviour on its n-th run is
//! read from row min(n, 15) of the `plan` array, so each test describes an
//! experiment as data. On every run it writes an 80-byte event to the
//! `events` ring buffer describing what it saw and did.

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use l7c_compiler::bpf::{sk_msg_md, Asm, Helper, Program, R0, R1, R10, R2, R3, R4, R6, R7, R8, R9};
use l7c_compiler::elf::{DataType, Field, MapDef, ObjectBuilder};
use l7c_runtime::{KernelError, KernelProgram, LoadOptions, SOCK_KEY_SIZE};

pub const SOCKS: &str = "l7_socks";
pub const REDIRECT: &str = "l7_redirect";
pub const REDIRECT_ARRAY: &str = "l7_redirect_arr";
pub const PLAN: &str = "plan";
pub const RUNS: &str = "runs";
pub const STORE: &str = "store";
pub const EVENTS: &str = "events";
pub const COUNTERS: &str = "counters";

pub const SHORT: Duration = Duration::from_millis(150);
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a kernel test can run here; prints `SKIPPED <test>: <reason>`
/// when it cannot.
pub fn kernel_ready(test: &str) -> bool {
    if !l7c_runtime::is_root() {
        eprintln!("SKIPPED {test}: needs root (CAP_BPF and CAP_NET_ADMIN) to load sk_msg programs");
        return false;
    }
    match KernelProgram::load(&pass_all_object(), &LoadOptions::default()) {
        Ok(_) => true,
        Err(error) if error.is_permission() => {
            eprintln!("SKIPPED {test}: the kernel refused BPF: {error}");
            false
        }
        Err(error) if error.is_unsupported() => {
            eprintln!("SKIPPED {test}: sockmap/sk_msg unavailable on this kernel: {error}");
            false
        }
        Err(error) => panic!(
            "loading the pass-all program failed for a reason other than privilege: {error:?}"
        ),
    }
}

/// An object with `program` in section `sk_msg` and the enrollment map.
pub fn object_with(program: Program, extra_maps: Vec<MapDef>) -> Vec<u8> {
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "l7_verdict", program);
    object.map(MapDef::sock_hash(SOCKS, SOCK_KEY_SIZE as u32, 64));
    for map in extra_maps {
        object.map(map);
    }
    object.meta(br#"{"test":true}"#.to_vec());
    object.write().expect("test object")
}

/// `return verdict;`
pub fn constant_object(verdict: i32) -> Vec<u8> {
    let mut a = Asm::new();
    a.mov64(R0, verdict).exit();
    object_with(a.finish().expect("asm"), Vec::new())
}

pub fn pass_all_object() -> Vec<u8> {
    constant_object(1)
}

pub fn drop_all_object() -> Vec<u8> {
    constant_object(0)
}

pub fn load(object: &[u8]) -> KernelProgram {
    match KernelProgram::load(
        object,
        &LoadOptions {
            program: None,
            attach_map: Some(SOCKS),
        },
    ) {
        Ok(program) => program,
        Err(error) => panic!("load failed: {error}"),
    }
}

/// One row of the probe's plan (8 × u32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// 0 drop, 1 pass, 2 `msg_redirect_hash(l7_redirect, key, flags)`,
    /// 3 `msg_redirect_map(l7_redirect_arr, key, flags)`, 4 return `key`
    /// as the verdict, 5 `msg_redirect_hash` as 2 but return `SK_PASS`
    /// whatever the helper said.
    pub action: u32,
    /// `msg_apply_bytes(apply)` when non-zero.
    pub apply: u32,
    /// `msg_cork_bytes(cork)` when non-zero ...
    pub cork: u32,
    /// ... or `msg_cork_bytes(msg->size + cork_plus)` when this is non-zero.
    pub cork_plus: u32,
    /// `msg_pull_data(pull_start, pull_end, 0)` when `pull_end` is non-zero.
    pub pull_start: u32,
    pub pull_end: u32,
    pub key: u32,
    pub flags: u32,
}

/// In `apply` or `cork`: call the helper with 0 (0 itself means "do not
/// call").
pub const ZERO: u32 = u32::MAX;

pub const DROP: u32 = 0;
pub const PASS: u32 = 1;
pub const REDIRECT_HASH: u32 = 2;
pub const REDIRECT_MAP: u32 = 3;
pub const RETURN_KEY: u32 = 4;
pub const REDIRECT_HASH_PASS: u32 = 5;

impl Plan {
    pub fn pass() -> Plan {
        Plan {
            action: PASS,
            ..Plan::default()
        }
    }

    pub fn drop() -> Plan {
        Plan {
            action: DROP,
            ..Plan::default()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        [
            self.action,
            self.apply,
            self.cork,
            self.cork_plus,
            self.pull_start,
            self.pull_end,
            self.key,
            self.flags,
        ]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
    }
}

/// Writes `rows` into the plan; the last row also fills every later one.
pub fn set_plan(program: &KernelProgram, rows: &[Plan]) {
    let last = *rows.last().expect("a plan row");
    for index in 0..16u32 {
        let row = rows.get(index as usize).copied().unwrap_or(last);
        program
            .write_array(PLAN, index, &row.bytes())
            .expect("plan write");
    }
}

/// One probe event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub run: u32,
    pub size: u32,
    pub data_len_before: u32,
    pub data_len_after: u32,
    pub pull_ret: i32,
    pub apply_ret: i32,
    pub cork_ret: i32,
    pub redirect_ret: i32,
    pub storage_count: u32,
    pub family: u32,
    pub remote_ip4: [u8; 4],
    pub local_ip4: [u8; 4],
    pub remote_port_raw: [u8; 4],
    pub local_port: u32,
    pub head_len: u32,
    pub head: Vec<u8>,
}

pub const EVENT_SIZE: usize = 80;

impl Event {
    pub fn parse(raw: &[u8]) -> Event {
        assert_eq!(raw.len(), EVENT_SIZE, "probe event size");
        let word = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().unwrap());
        let bytes4 = |at: usize| -> [u8; 4] { raw[at..at + 4].try_into().unwrap() };
        let head_len = word(56);
        Event {
            run: word(0),
            size: word(4),
            data_len_before: word(8),
            data_len_after: word(12),
            pull_ret: word(16) as i32,
            apply_ret: word(20) as i32,
            cork_ret: word(24) as i32,
            redirect_ret: word(28) as i32,
            storage_count: word(32),
            family: word(36),
            remote_ip4: bytes4(40),
            local_ip4: bytes4(44),
            remote_port_raw: bytes4(48),
            local_port: word(52),
            head_len,
            head: raw[64..64 + head_len.min(16) as usize].to_vec(),
        }
    }
}

pub fn events(program: &mut KernelProgram) -> Vec<Event> {
    program
        .drain_events(EVENTS)
        .expect("ring buffer")
        .iter()
        .map(|raw| Event::parse(raw))
        .collect()
}

/// A patterned input of `len` bytes: 8-byte records `NNNNNNN|` holding
/// their own offset / 8, so any 16 bytes of it say where they are from.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut record = 0usize;
    while out.len() < len {
        out.extend_from_slice(format!("{:07}|", record % 10_000_000).as_bytes());
        record += 1;
    }
    out.truncate(len);
    out
}

/// Where `head` (16 bytes of a [`pattern`]) starts in the input.
pub fn offset_of(input: &[u8], head: &[u8]) -> Option<usize> {
    if head.is_empty() {
        return None;
    }
    input.windows(head.len()).position(|w| w == head)
}

/// The event's stack slot: `r10 - 80`.
const EV: i16 = -80;
/// A 4-byte key on the stack.
const KEY: i16 = -88;

/// The probe program (see the module docs). Registers: r6 ctx, r7 plan
/// row, r8 run index, r9 verdict.
pub fn probe_program() -> Program {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    for slot in 0..10 {
        a.stdw(R10, EV + slot * 8, 0);
    }
    a.stdw(R10, KEY, 0);

    a.note("run index: runs[0]++");
    a.ld_map(R1, RUNS)
        .mov64(R2, R10)
        .add64(R2, i32::from(KEY))
        .call(Helper::MapLookupElem);
    a.jeq(R0, 0, "fail");
    a.ldxw(R8, R0, 0).mov64(R1, R8).add64(R1, 1).stxw(R0, 0, R1);
    a.stxw(R10, EV, R8);

    a.note("plan row min(n, 15)");
    a.mov64(R1, R8).jle(R1, 15, "row").mov64(R1, 15);
    a.label("row").stxw(R10, KEY, R1);
    a.ld_map(R1, PLAN)
        .mov64(R2, R10)
        .add64(R2, i32::from(KEY))
        .call(Helper::MapLookupElem);
    a.jeq(R0, 0, "fail");
    a.mov64(R7, R0);

    a.note("size, data length, context fields");
    a.ldxw(R1, R6, sk_msg_md::SIZE).stxw(R10, EV + 4, R1);
    a.ldxdw(R1, R6, sk_msg_md::DATA)
        .ldxdw(R2, R6, sk_msg_md::DATA_END)
        .sub64(R2, R1)
        .stxw(R10, EV + 8, R2);
    a.ldxw(R1, R6, sk_msg_md::FAMILY).stxw(R10, EV + 36, R1);
    a.ldxw(R1, R6, sk_msg_md::REMOTE_IP4).stxw(R10, EV + 40, R1);
    a.ldxw(R1, R6, sk_msg_md::LOCAL_IP4).stxw(R10, EV + 44, R1);
    a.ldxw(R1, R6, sk_msg_md::REMOTE_PORT)
        .stxw(R10, EV + 48, R1);
    a.ldxw(R1, R6, sk_msg_md::LOCAL_PORT).stxw(R10, EV + 52, R1);

    a.note("pull");
    a.ldxw(R3, R7, 20).jeq(R3, 0, "no_pull");
    a.ldxw(R2, R7, 16)
        .mov64(R1, R6)
        .mov64(R4, 0)
        .call(Helper::MsgPullData);
    a.stxw(R10, EV + 16, R0);
    a.label("no_pull");
    a.ldxdw(R1, R6, sk_msg_md::DATA)
        .ldxdw(R2, R6, sk_msg_md::DATA_END);
    a.mov64(R3, R2).sub64(R3, R1).stxw(R10, EV + 12, R3);
    a.mov64(R3, R1).add64(R3, 16).jgt(R3, R2, "no_head");
    a.ldxdw(R4, R1, 0)
        .stxdw(R10, EV + 64, R4)
        .ldxdw(R4, R1, 8)
        .stxdw(R10, EV + 72, R4);
    a.stw(R10, EV + 56, 16);
    a.label("no_head");

    a.note("apply");
    a.ldxw(R2, R7, 4).jeq(R2, 0, "no_apply");
    a.jne32(R2, ZERO as i32, "apply_call").mov64(R2, 0);
    a.label("apply_call")
        .mov64(R1, R6)
        .call(Helper::MsgApplyBytes)
        .stxw(R10, EV + 20, R0);
    a.label("no_apply");

    a.note("cork: fixed, or size + cork_plus");
    a.ldxw(R2, R7, 8).ldxw(R3, R7, 12).jeq(R3, 0, "cork_fixed");
    a.ldxw(R2, R6, sk_msg_md::SIZE).add64(R2, R3);
    a.label("cork_fixed").jeq(R2, 0, "no_cork");
    a.jne32(R2, ZERO as i32, "cork_call").mov64(R2, 0);
    a.label("cork_call")
        .mov64(R1, R6)
        .call(Helper::MsgCorkBytes)
        .stxw(R10, EV + 24, R0);
    a.label("no_cork");

    a.note("sk_storage_get(store, msg->sk, NULL, F_CREATE)->count++");
    a.ldxdw(R2, R6, sk_msg_md::SK);
    a.ld_map(R1, STORE)
        .mov64(R3, 0)
        .mov64(R4, 1)
        .call(Helper::SkStorageGet);
    a.jeq(R0, 0, "no_store");
    a.ldxdw(R1, R0, 0)
        .add64(R1, 1)
        .stxdw(R0, 0, R1)
        .stxw(R10, EV + 32, R1);
    a.ja("store_done");
    a.label("no_store").stw(R10, EV + 32, -1);
    a.label("store_done");

    a.note("counters[0] += 1; counters[1] += size");
    a.stw(R10, KEY, 0);
    a.ld_map(R1, COUNTERS)
        .mov64(R2, R10)
        .add64(R2, i32::from(KEY))
        .call(Helper::MapLookupElem);
    a.jeq(R0, 0, "no_count");
    a.ldxdw(R1, R0, 0).add64(R1, 1).stxdw(R0, 0, R1);
    a.label("no_count");
    a.stw(R10, KEY, 1);
    a.ld_map(R1, COUNTERS)
        .mov64(R2, R10)
        .add64(R2, i32::from(KEY))
        .call(Helper::MapLookupElem);
    a.jeq(R0, 0, "no_size");
    a.ldxw(R2, R6, sk_msg_md::SIZE)
        .ldxdw(R1, R0, 0)
        .add64(R1, R2)
        .stxdw(R0, 0, R1);
    a.label("no_size");

    a.note("verdict");
    a.ldxw(R9, R7, 0);
    a.jeq(R9, REDIRECT_HASH as i32, "redirect_hash");
    a.jeq(R9, REDIRECT_MAP as i32, "redirect_map");
    a.jeq(R9, RETURN_KEY as i32, "return_key");
    a.jeq(R9, REDIRECT_HASH_PASS as i32, "redirect_hash_pass");
    a.ja("emit");
    a.label("redirect_hash");
    a.ldxw(R1, R7, 24).stxw(R10, KEY, R1);
    a.ldxw(R4, R7, 28)
        .mov64(R1, R6)
        .ld_map(R2, REDIRECT)
        .mov64(R3, R10)
        .add64(R3, i32::from(KEY));
    a.call(Helper::MsgRedirectHash)
        .stxw(R10, EV + 28, R0)
        .mov64(R9, R0)
        .ja("emit");
    a.label("redirect_hash_pass");
    a.ldxw(R1, R7, 24).stxw(R10, KEY, R1);
    a.ldxw(R4, R7, 28)
        .mov64(R1, R6)
        .ld_map(R2, REDIRECT)
        .mov64(R3, R10)
        .add64(R3, i32::from(KEY));
    a.call(Helper::MsgRedirectHash)
        .stxw(R10, EV + 28, R0)
        .mov64(R9, 1)
        .ja("emit");
    a.label("redirect_map");
    a.ldxw(R3, R7, 24)
        .ldxw(R4, R7, 28)
        .mov64(R1, R6)
        .ld_map(R2, REDIRECT_ARRAY);
    a.call(Helper::MsgRedirectMap)
        .stxw(R10, EV + 28, R0)
        .mov64(R9, R0)
        .ja("emit");
    a.label("return_key");
    a.ldxw(R9, R7, 24);

    a.label("emit");
    a.ld_map(R1, EVENTS)
        .mov64(R2, R10)
        .add64(R2, i32::from(EV))
        .mov64(R3, EVENT_SIZE as i32)
        .mov64(R4, 0);
    a.call(Helper::RingbufOutput);
    a.mov64(R0, R9).exit();
    a.label("fail").mov64(R0, 0).exit();
    a.finish().expect("probe program")
}

pub fn probe_maps() -> Vec<MapDef> {
    let u32f = |name: &str| Field::new(name, DataType::U32);
    let plan = DataType::structure(
        "probe_plan",
        vec![
            u32f("action"),
            u32f("apply"),
            u32f("cork"),
            u32f("cork_plus"),
            u32f("pull_start"),
            u32f("pull_end"),
            u32f("key"),
            u32f("flags"),
        ],
    );
    vec![
        MapDef::sock_hash(REDIRECT, 4, 16),
        MapDef::sock_map(REDIRECT_ARRAY, 16),
        MapDef::array(PLAN, plan, 16),
        MapDef::array(RUNS, DataType::U32, 1),
        MapDef::sk_storage(
            STORE,
            DataType::structure("probe_store", vec![Field::new("count", DataType::U64)]),
        ),
        MapDef::ring_buf(EVENTS, 1 << 16),
        MapDef::percpu_array(COUNTERS, DataType::U64, 2),
    ]
}

pub fn probe_object() -> Vec<u8> {
    object_with(probe_program(), probe_maps())
}

/// Loads the probe with `rows` as its plan.
pub fn probe(rows: &[Plan]) -> KernelProgram {
    let program = load(&probe_object());
    set_plan(&program, rows);
    program
}

/// Prints an error as the CLI would, for the test output.
pub fn show(error: &KernelError) -> String {
    format!("{error}")
}

/// Where the rest of a message goes after a run redirected its first part
/// (with `apply_bytes`) and the next run on the same message returned
/// `SK_PASS`. Builds of one kernel version differ here
/// (`shared/spec/kernel.md`, "Verdict mechanics"), so a test records which
/// behaviour the running kernel has instead of asserting one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectRest {
    /// The redirect target sticks to the message: the rest is redirected
    /// too, although its run said `SK_PASS`.
    Sticks,
    /// The pass is a pass: the rest goes to the original peer.
    Released,
}

impl RedirectRest {
    /// Classifies what a target and the original peer received when the
    /// first `redirected` bytes of a `message`-byte send were redirected
    /// and the rest of that send passed; the input's bytes after the
    /// message (a later send that passes) must reach the peer in both
    /// behaviours. Anything else is neither behaviour: `Err` says what
    /// was seen.
    pub fn classify(
        input: &[u8],
        redirected: usize,
        message: usize,
        target_got: &[u8],
        peer_got: &[u8],
    ) -> Result<RedirectRest, String> {
        if target_got == &input[..message] && peer_got == &input[message..] {
            Ok(RedirectRest::Sticks)
        } else if target_got == &input[..redirected] && peer_got == &input[redirected..] {
            Ok(RedirectRest::Released)
        } else {
            Err(format!(
                "neither known behaviour: the target got {} bytes (from offset {:?}), the peer {} bytes (from offset {:?})",
                target_got.len(),
                offset_of(input, target_got),
                peer_got.len(),
                offset_of(input, peer_got)
            ))
        }
    }

    /// One line for the test log.
    pub fn describe(self) -> &'static str {
        match self {
            RedirectRest::Sticks => "this kernel keeps a redirect's target for the rest of its message (a later SK_PASS on that message redirects too)",
            RedirectRest::Released => "this kernel releases a redirect's target at its apply_bytes boundary (a later SK_PASS on that message goes to the original peer)",
        }
    }
}

/// A cgroup made for one test and removed after it (one definition:
/// `l7c_runtime::harness::TestCgroup`).
#[allow(unused_imports)] // each test binary uses a different part
pub use l7c_runtime::harness::TestCgroup as Cgroup;
