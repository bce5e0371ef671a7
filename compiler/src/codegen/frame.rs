//! The program frame: state, scope selection, phase dispatch and the
//! verdict exits. Registers across the program: r6 = ctx (`sk_msg_md`),
//! r7 = the connection's state (non-null after the prologue).

use super::layout::{self, phase};
use super::program::{self, PolicyPlan};
use super::tables::SharedTables;
use super::CodegenError;
use crate::abi;
use crate::bpf::{sk_msg_md, verdict, Asm, Helper, Program, R0, R1, R2, R3, R4, R6, R7, R8, R9};
use crate::model::{Policy, Program as Policies};

/// The governed phases: the generated ones, or the frame's stand-in.
pub enum Phases<'a> {
    StandIn(HeadPhase),
    Generated { plans: &'a [PolicyPlan<'a>], shared: &'a SharedTables },
}

/// What the head phase does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPhase {
    /// Deny every governed connection at its first byte (fail closed):
    /// the frame's stand-in until the head scan is generated. Only
    /// reachable through `compile_frame` (tests), or unreachable (no
    /// policy governs anything).
    DenyFailClosed,
}

const BPF_SK_STORAGE_GET_F_CREATE: i32 = 1;

pub fn emit(program: &Policies, phases: Phases<'_>) -> Result<Program, CodegenError> {
    let mut a = Asm::new();
    a.note("l7c sk_msg verdict program (docs/program.md)");
    a.note("prologue: r6 = msg; r7 = this connection's l7_conn state (created on first use)");
    a.mov64(R6, R1);
    a.ld_map(R1, abi::maps::CONNECTIONS);
    a.ldxdw(R2, R6, sk_msg_md::SK).comment("msg->sk");
    a.mov64(R3, 0).comment("no initial value: zeroed (phase NEW)");
    a.mov64(R4, BPF_SK_STORAGE_GET_F_CREATE).comment("BPF_SK_STORAGE_GET_F_CREATE");
    a.call(Helper::SkStorageGet);
    a.jeq(R0, 0, "deny_no_state").comment("no storage: deny (fail closed)");
    a.mov64(R7, R0);

    a.note("phase dispatch");
    a.ldxb(R1, R7, layout::PHASE);
    a.jeq(R1, i32::from(phase::PASS_ALL), "pass_all");
    a.jeq(R1, i32::from(phase::DEAD), "deny");
    a.jeq(R1, i32::from(phase::HEAD), "head");
    if let Phases::Generated { .. } = phases {
        a.jeq(R1, i32::from(phase::CHUNK), "chunk");
        a.jeq(R1, i32::from(phase::BODY), "body_phase");
    }
    a.jne(R1, i32::from(phase::NEW), "deny").comment("unknown phase: fail closed");

    a.label("select");
    a.note("scope selection (once per connection): the first policy whose scope selects the socket governs it");
    a.ldxw(R8, R6, sk_msg_md::REMOTE_PORT).comment("msg->remote_port: bytes [0, 0, hi, lo]");
    a.rsh64(R8, 16);
    a.be16(R8).comment("remote port, host order");
    a.ldxw(R9, R6, sk_msg_md::LOCAL_PORT).comment("msg->local_port, host order");
    let mut selects_all = false;
    for (index, policy) in program.policies.iter().enumerate() {
        select_policy(&mut a, index, policy)?;
        if policy.scope.is_everything() {
            // Later policies and the ungoverned case are unreachable (the
            // verifier refuses unreachable instructions).
            selects_all = true;
            break;
        }
    }
    if !selects_all {
        a.note("no policy selects this socket: it is ungoverned from now on");
        a.stb(R7, layout::PHASE, i32::from(phase::PASS_ALL));
        a.ja("pass_all");
    }

    a.label("head");
    match &phases {
        Phases::StandIn(HeadPhase::DenyFailClosed) => {
            a.note("head phase: not generated in this build; deny (fail closed)");
            a.ja("deny");
        }
        Phases::Generated { plans, shared } => {
            a.note("r8 = the stream offset of this run's first byte; then the governing policy");
            to_policy(&mut a, plans, program::head_label);
            a.label("chunk");
            to_policy(&mut a, plans, program::chunk_label);
            a.label("body_phase");
            a.ldxdw(R8, R7, layout::OFFSET);
            a.ja("body");
            for plan in plans.iter() {
                program::emit_policy(&mut a, plan, shared);
            }
            program::emit_shared_exits(&mut a, shared.chunk_start);
        }
    }

    a.label("pass_all");
    a.note("pass everything: the largest apply_bytes, no cork (both set on every run)");
    a.mov64(R1, R6);
    a.mov32(R2, -1).comment("u32::MAX bytes");
    a.call(Helper::MsgApplyBytes);
    a.mov64(R1, R6);
    a.mov64(R2, 0);
    a.call(Helper::MsgCorkBytes);
    a.mov64(R0, verdict::PASS);
    a.exit();

    a.label("deny");
    a.note("deny: the connection is dead from now on");
    a.stb(R7, layout::PHASE, i32::from(phase::DEAD));
    a.label("deny_no_state");
    a.note("apply_bytes(0) so send() counts only what passed; cork_bytes(0) so nothing stays held");
    a.mov64(R1, R6);
    a.mov64(R2, 0);
    a.call(Helper::MsgApplyBytes);
    a.mov64(R1, R6);
    a.mov64(R2, 0);
    a.call(Helper::MsgCorkBytes);
    a.mov64(R0, verdict::DROP);
    a.exit();
    if let Phases::Generated { plans, shared } = &phases {
        program::emit_report(&mut a);
        for plan in plans.iter() {
            program::emit_callbacks(&mut a, plan.index, plan.lowered.limits, shared, plan.tables, plan.facts, plan.fact_mask, plan.cand);
        }
    }
    Ok(a.finish()?)
}

/// r8 = the run's stream offset, then a jump to the governing policy's
/// `label` (an unknown policy denies).
fn to_policy(a: &mut Asm, plans: &[PolicyPlan<'_>], label: fn(usize) -> crate::bpf::Label) {
    a.ldxdw(R8, R7, layout::OFFSET);
    a.ldxb(R1, R7, layout::POLICY);
    for plan in plans {
        a.jeq(R1, plan.index as i32, label(plan.index));
    }
    a.ja("deny").comment("no such policy: fail closed");
}

/// Jumps to `head` (with the policy recorded) when `policy`'s scope
/// selects the socket; falls through otherwise. r8 = remote port, r9 =
/// local port (host order).
fn select_policy(a: &mut Asm, index: usize, policy: &Policy) -> Result<(), CodegenError> {
    let scope = &policy.scope;
    if scope.remote_addrs.is_some() || scope.local_addrs.is_some() {
        return Err(CodegenError::Unsupported {
            policy: policy.name.clone(),
            construct: "address scopes (`remote addr` / `local addr`)".to_owned(),
        });
    }
    let index_byte = u8::try_from(index).map_err(|_| CodegenError::Unsupported {
        policy: policy.name.clone(),
        construct: "more than 256 policies in one compilation".to_owned(),
    })?;
    let next = a.fresh_label(&format!("scope_{index}_next"));
    a.note(format!("policy {}", policy.name));
    for (reg, ports, what) in [(R8, &scope.remote_ports, "remote"), (R9, &scope.local_ports, "local")] {
        if let Some(ports) = ports {
            let ok = a.fresh_label(&format!("scope_{index}_{what}_ok"));
            for port in ports {
                a.jeq(reg, i32::from(*port), ok.clone()).comment(format!("{what} port {port}"));
            }
            a.ja(next.clone());
            a.label(ok);
        }
    }
    a.stb(R7, layout::POLICY, i32::from(index_byte));
    a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
    a.ja("head");
    if !scope.is_everything() {
        a.label(next);
    }
    Ok(())
}
