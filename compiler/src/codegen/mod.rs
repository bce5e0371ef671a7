//! Code generation: a checked policy to one BPF `sk_msg` program and its
//! ELF object (docs/program.md).
//!
//! What is generated (docs/program.md): the program frame — the
//! per-connection state in `l7_conn`, scope selection by ports, the phase
//! dispatch, the pass-all path of ungoverned sockets, verdict exits that
//! call both `msg_apply_bytes` and `msg_cork_bytes` on every path
//! (docs/kernel-mechanics.md) — and one head phase (the `scan/` head
//! machine and the `lower/` automata stepped in a `bpf_loop`), decision,
//! verdicts and chunk phase that every policy shares: a policy is data, its
//! tables and descriptor in `.rodata`, found from the connection's state
//! (docs/program.md, "Many policies"). [`compile`] refuses by name
//! ([`CodegenError::Unsupported`]) what it cannot generate yet — address
//! scopes (`remote addr` / `local addr`) and audit mode with more than 32
//! redirect targets — rather than emit a program that would judge a
//! request differently from the reference evaluator; the kernel tests
//! compare the two on every conformance case and on generated streams.

mod answer;
mod blob;
mod callbacks;
mod deploy;
mod frame;
pub mod layout;
pub use deploy::{deployment_diagnostics, PROCESSED_PER_INSTRUCTION, PROCESSED_PER_INSTRUCTION_AT_LEAST, VERIFIER_BUDGET};
mod program;
mod tables;

use crate::abi::{self, Meta, MetaPolicy};
use crate::bpf::{AsmError, Program};
use crate::check::Checked;
use crate::elf::{ElfError, MapDef, ObjectBuilder};
use crate::lower::LowerError;
use crate::model::{Action, Mode, Program as Policies};
use crate::scan::{ChunkTables, HeadTables, ScanBuildError};
use std::collections::BTreeSet;
use std::time::Instant;

pub use frame::HeadPhase;
use frame::Phases;

/// The `sk_msg` program's symbol name in the object.
pub const PROGRAM_NAME: &str = "l7c_verdict";
/// Its ELF section.
pub const PROGRAM_SECTION: &str = "sk_msg";

/// What `l7c compile` produces.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The ELF object (`--emit obj`).
    pub object: Vec<u8>,
    /// The program in LLVM's BPF syntax with labels and comments (`--emit asm`).
    pub listing: String,
    /// Figures for `--emit report`.
    pub report: Report,
    /// What `.l7.meta` holds.
    pub meta: Meta,
}

/// Figures of one compilation (`--emit report`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub instructions: usize,
    /// The most request bytes one run scans (the largest `header_bytes`).
    pub max_scan_bytes: u32,
    /// Table name → bytes.
    pub tables: Vec<(String, usize)>,
    pub compile_micros: u128,
}

#[derive(Debug, Clone, Default)]
pub struct Options {}

/// The oldest kernel the generated program loads on, and why
/// (docs/program.md, "Minimum kernel").
pub const MIN_KERNEL: (u32, u32) = (5, 17);
const MIN_KERNEL_WHY: &str = "the head scan runs in a `bpf_loop` callback (5.17); it also needs `msg->sk` and `sk_storage_get` on it (5.8) and the BPF ring buffer (5.8)";

/// `--target-kernel X.Y`: refuses a target older than [`MIN_KERNEL`].
pub fn check_target(target: (u32, u32)) -> Result<(), CodegenError> {
    if target < MIN_KERNEL {
        return Err(CodegenError::TargetTooOld {
            target: format!("{}.{}", target.0, target.1),
            minimum: format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            why: MIN_KERNEL_WHY.to_owned(),
        });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CodegenError {
    /// A construct the generator does not translate yet: refused rather
    /// than compiled to a program that could judge differently from the
    /// reference evaluator.
    #[error("policy `{policy}`: the BPF code generator does not support {construct} yet")]
    #[diagnostic(
        code("l7::codegen::unsupported"),
        help("`l7c eval` and `l7c test` run this policy with the reference evaluator; the kernel program cannot be generated for it in this build")
    )]
    Unsupported { policy: String, construct: String },
    #[error(transparent)]
    #[diagnostic(code("l7::codegen::lower"))]
    Lower(#[from] LowerError),
    #[error("internal error assembling the program: {0}")]
    #[diagnostic(code("l7::codegen::internal"))]
    Assemble(#[from] AsmError),
    #[error("internal error writing the object: {0}")]
    #[diagnostic(code("l7::codegen::internal"))]
    Object(#[from] ElfError),
    /// `--target-kernel` names a kernel the program cannot load on.
    #[error("the generated program needs Linux {minimum} or newer; --target-kernel {target} is older: {why}")]
    #[diagnostic(
        code("l7::codegen::target-kernel"),
        help("deploy on Linux {minimum}+ (Debian 12's 6.1 works); no fallback program is generated for older kernels")
    )]
    TargetTooOld { target: String, minimum: String, why: String },
    #[error("internal error building the scanner tables: {0}")]
    #[diagnostic(code("l7::codegen::internal"))]
    Scan(#[from] ScanBuildError),
}

/// Compile a checked program to an object: the scan and chunk tables,
/// each policy's automata and decision in `.rodata`, and one `sk_msg`
/// program whose head phase steps them with `bpf_loop` (docs/program.md).
pub fn compile(checked: &Checked, _options: &Options) -> Result<Compiled, CodegenError> {
    let started = Instant::now();
    let program = checked.program();
    let lowered = crate::lower::lower(checked)?;
    if lowered.policies.is_empty() {
        // Nothing is governed: the frame passes every socket, and its head
        // phase is unreachable.
        let code = frame::emit(program, Phases::StandIn(HeadPhase::DenyFailClosed))?;
        return build(program, code, None, layout::AREA as u32 + 8, Vec::new(), started);
    }
    for policy in &lowered.policies {
        let targets = policy.decision.redirect_targets.len();
        if policy.mode == Mode::Audit && targets > 32 {
            return Err(CodegenError::Unsupported {
                policy: policy.name.clone(),
                construct: format!("audit mode with {targets} redirect targets (at most 32: the bound-slot bitmap is one u32)"),
            });
        }
    }
    let mut blob = blob::Blob::new();
    let shared = tables::shared(&mut blob, HeadTables::shared()?, ChunkTables::shared()?);
    let placed: Vec<tables::PolicyTables> = lowered
        .policies
        .iter()
        .enumerate()
        .map(|(index, policy)| tables::policy(&mut blob, policy, index, layout::AREA))
        .collect();
    let mut rules_before = 0usize;
    let mut policies = Vec::with_capacity(placed.len());
    for (index, (policy, tables)) in lowered.policies.iter().zip(&placed).enumerate() {
        let counter_base = (index * abi::REASON_SLOTS + rules_before) as u32;
        let described = tables::describe(&mut blob, policy, tables, index, counter_base);
        if described.lane_count > tables::MAX_POLICY_LANES {
            return Err(CodegenError::Unsupported {
                policy: policy.name.clone(),
                construct: format!("{} automata (at most {}: fewer headers matched by value would help)", described.lane_count, tables::MAX_POLICY_LANES),
            });
        }
        policies.push(described);
        rules_before += policy.decision.rules.len();
    }
    let lanes = policies.iter().map(|p| p.lane_count).max().unwrap_or(2).max(2).next_power_of_two();
    let area_bytes = lanes * 4;
    let facts = tables::facts_offset(area_bytes);
    let fact_capacity = placed.iter().map(|t| t.fact_words).max().unwrap_or(1).next_power_of_two();
    let cand = facts + (fact_capacity * 8) as i16;
    let state_bytes = cand as u32 + tables::CANDIDATES * 4;
    let answers = answer::tables(&mut blob, program)?;
    let blob_mask = blob.seal();
    let shape = callbacks::Shape { facts, fact_mask: fact_capacity - 1, cand, lane_mask: lanes - 1, blob_mask };
    let plan = program::Plan { shared: &shared, shape, area_bytes };
    let audit = lowered.policies.iter().any(|policy| policy.mode == Mode::Audit);
    let code = frame::emit(program, Phases::Generated { plan: &plan, policies: &policies, answers: &answers, audit })?;
    let table_sizes = blob.tables();
    build(program, code, Some(blob.into_bytes()), state_bytes, table_sizes, started)
}

/// Builds the object with the head phase `head` — for the verifier tests
/// of the frame (`HeadPhase::DenyFailClosed` denies every governed
/// request): not a policy's program, never what `l7c compile` emits.
#[doc(hidden)]
pub fn compile_frame(checked: &Checked, head: HeadPhase) -> Result<Compiled, CodegenError> {
    let code = frame::emit(checked.program(), Phases::StandIn(head))?;
    build(checked.program(), code, None, layout::AREA as u32 + 8, Vec::new(), Instant::now())
}

fn build(
    program: &Policies,
    code: Program,
    rodata: Option<Vec<u8>>,
    state_bytes: u32,
    tables: Vec<(String, usize)>,
    started: Instant,
) -> Result<Compiled, CodegenError> {
    let meta = meta(program);
    let listing = code.listing();
    let instructions = code.insns().len();
    let mut object = ObjectBuilder::new();
    object.program(PROGRAM_SECTION, PROGRAM_NAME, code);
    // The cgroup sock_ops program that enrolls connections into
    // `l7_sockets` (`l7c run`), sharing the object's maps.
    object.program(crate::enroll::SECTION, crate::enroll::PROGRAM_NAME, crate::enroll::program());
    for map in maps(&meta, state_bytes) {
        object.map(map);
    }
    if let Some(bytes) = rodata {
        object.rodata(blob::SYMBOL, bytes);
    }
    object.license("GPL");
    // Serialising plain data cannot fail.
    object.meta(serde_json::to_vec(&meta).unwrap_or_default());
    let object = object.write()?;
    let report = Report {
        instructions,
        max_scan_bytes: program.policies.iter().map(|p| p.limits.header_bytes).max().unwrap_or(0),
        tables,
        compile_micros: started.elapsed().as_micros(),
    };
    Ok(Compiled { object, listing, report, meta })
}

/// The maps of every object (abi::maps).
fn maps(meta: &Meta, state_bytes: u32) -> Vec<MapDef> {
    let counters: usize =
        meta.policies.iter().map(|p| abi::REASON_SLOTS + p.rules.len()).sum::<usize>().max(1);
    vec![
        MapDef::sk_storage(abi::maps::CONNECTIONS, layout::state_type(state_bytes)),
        MapDef::sock_hash(abi::maps::SOCKETS, layout::SOCK_KEY_BYTES, 65_536),
        l7c_abi::receive::peer_map(),
        MapDef::sock_map(abi::maps::REDIRECTS, (meta.redirect_slots.len() as u32).max(1)),
        MapDef::percpu_array(abi::maps::COUNTERS, crate::elf::DataType::U64, counters as u32),
        MapDef::ring_buf(abi::maps::EVENTS, 256 * 1024),
        MapDef::array(abi::maps::CONFIG, crate::elf::DataType::U32, abi::config::ENTRIES),
    ]
    .into_iter()
    .chain(gate_maps())
    .collect()
}

/// The enrollment gate's maps (`enroll.rs`, "Capacity"), in every object.
pub fn gate_maps() -> Vec<MapDef> {
    crate::enroll::gate_maps()
}

/// `.l7.meta`: policies, rule names, redirect slots (targets in name order,
/// from 0), limits and a hash naming the build.
pub fn meta(program: &Policies) -> Meta {
    let mut targets = BTreeSet::new();
    for policy in &program.policies {
        for rule in &policy.rules {
            if let Action::Redirect { target, .. } = &rule.action {
                targets.insert(target.clone());
            }
        }
    }
    let policies = program
        .policies
        .iter()
        .map(|policy| MetaPolicy {
            name: policy.name.clone(),
            rules: policy.rules.iter().map(|rule| rule.name.clone()).collect(),
            audit: policy.mode == crate::model::Mode::Audit,
            header_bytes: policy.limits.header_bytes,
            headers: policy.limits.headers,
        })
        .collect();
    Meta {
        abi: Meta::ABI_VERSION,
        policies,
        redirect_slots: targets.into_iter().enumerate().map(|(slot, name)| (name, slot as u32)).collect(),
        source_hash: format!("{:016x}", fnv1a64(format!("{:?}", program.policies).as_bytes())),
        governed_ports: governed_ports(program),
    }
}

/// The remote ports some policy can select, sorted; `None` when a policy
/// selects any remote port (no `remote port` in its scope). With no policy
/// at all no port is governed.
fn governed_ports(program: &Policies) -> Option<Vec<u16>> {
    let mut ports = BTreeSet::new();
    for policy in &program.policies {
        ports.extend(policy.scope.remote_ports.as_ref()?.iter().copied());
    }
    Some(ports.into_iter().collect())
}

/// FNV-1a 64. `Checked` carries the resolved policies, not the source
/// text, so the hash is over their debug form (deterministic: no hash-map
/// iteration in the model).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
