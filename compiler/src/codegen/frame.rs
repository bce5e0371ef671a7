//! The program frame: state, scope selection, phase dispatch and the
//! verdict exits. Registers across the program: r6 = ctx (`sk_msg_md`),
//! r7 = the connection's state (non-null after the prologue).

use super::layout::{self, phase};
use super::program::{self, Plan};
use super::answer::{self, AnswerTables};
use super::callbacks;
use super::tables::{desc, Described};
use super::CodegenError;
use crate::abi;
use crate::bpf::{sk_msg_md, verdict, Asm, Helper, Label, Program, Reg, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9};
use crate::model::{Cidr, Policy, Program as Policies};
use std::net::IpAddr;

/// The governed phases: the generated ones, or the frame's stand-in.
pub enum Phases<'a> {
    StandIn(HeadPhase),
    Generated { plan: &'a Plan<'a>, policies: &'a [Described], answers: &'a AnswerTables, audit: bool },
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
    if let Phases::Generated { .. } = phases {
        answer::emit_message_bookkeeping(&mut a);
    }

    a.note("phase dispatch");
    a.ldxb(R1, R7, layout::PHASE);
    a.jeq(R1, i32::from(phase::PASS_ALL), "pass_all");
    a.jeq(R1, i32::from(phase::DEAD), "deny");
    a.jeq(R1, i32::from(phase::HEAD), "head");
    if let Phases::Generated { .. } = phases {
        a.jeq(R1, i32::from(phase::CHUNK), "chunk");
        a.jeq(R1, i32::from(phase::BODY), "body_phase");
        a.jeq(R1, i32::from(phase::SWITCH_WAIT), "switch_wait");
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
        let params = match &phases {
            Phases::Generated { policies, .. } => Some(*policies.get(index).ok_or_else(|| CodegenError::Unsupported {
                policy: policy.name.clone(),
                construct: "a policy without tables (internal)".to_owned(),
            })?),
            Phases::StandIn(_) => None,
        };
        select_policy(&mut a, index, policy, params)?;
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

    if let Phases::Generated { plan, .. } = &phases {
        a.label("selected");
        a.note("the governing policy's parameters, from its descriptor, once per connection (docs/program.md, \"Many policies\")");
        let shape = &plan.shape;
        callbacks::tables_base(&mut a, R2);
        a.ldxw(R1, R7, layout::P_DESC).and64(R1, shape.blob_mask as i32).add64(R2, R1);
        for (from, to) in [
            (desc::LANES, layout::P_LANES),
            (desc::HEADER_BYTES, layout::P_HEADER_BYTES),
            (desc::HEADERS, layout::P_HEADERS),
            (desc::WINDOW, layout::P_WINDOW),
            (desc::COUNTER_BASE, layout::V_BASE),
        ] {
            a.ldxw(R1, R2, from).stxw(R7, to, R1);
        }
        a.ldxh(R1, R2, desc::PATH_GROUP).stxh(R7, layout::P_PATH_GROUP, R1);
        a.ldxb(R1, R2, desc::AUDIT).stxb(R7, layout::P_AUDIT, R1);
        a.ldxb(R1, R2, desc::NAME_SKIP).stxb(R7, layout::P_NAME_SKIP, R1);
        a.ldxdw(R1, R2, desc::READ).stxdw(R7, layout::P_READ, R1);
        a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
    }

    a.label("head");
    match &phases {
        Phases::StandIn(HeadPhase::DenyFailClosed) => {
            a.note("head phase: not generated in this build; deny (fail closed)");
            a.ja("deny");
        }
        Phases::Generated { plan, answers, audit, .. } => {
            a.note("r8 = the stream offset of this run's first byte; then the one head phase of every policy");
            a.ldxdw(R8, R7, layout::OFFSET);
            a.ja(program::HEAD);
            a.label("chunk");
            a.ldxdw(R8, R7, layout::OFFSET);
            a.ja(program::CHUNK);
            a.label("body_phase");
            a.ldxdw(R8, R7, layout::OFFSET);
            a.ja("body");
            program::emit_phases(&mut a, plan);
            answer::emit_exits(&mut a, answers, *audit);
            program::emit_shared_exits(&mut a, plan.shared.chunk_start);
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
    if let Phases::Generated { plan, answers, .. } = &phases {
        program::emit_report(&mut a);
        answer::emit_answer_function(&mut a, answers);
        answer::emit_forwarded_function(&mut a);
        program::emit_callbacks(&mut a, plan.shared, &plan.shape);
    }
    Ok(a.finish()?)
}

/// Jumps to `head` (with the policy recorded) when `policy`'s scope
/// selects the socket; falls through otherwise. r8 = remote port, r9 =
/// local port (host order).
fn select_policy(a: &mut Asm, index: usize, policy: &Policy, described: Option<Described>) -> Result<(), CodegenError> {
    let scope = &policy.scope;
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
    for (side, cidrs) in [(Side::Remote, &scope.remote_addrs), (Side::Local, &scope.local_addrs)] {
        if let Some(cidrs) = cidrs {
            select_addrs(a, index, side, cidrs, &next);
        }
    }
    a.stb(R7, layout::POLICY, i32::from(index_byte));
    match described {
        Some(described) => {
            a.stw(R7, layout::P_DESC, described.desc as i32).comment("its descriptor");
            a.ja("selected");
        }
        None => {
            a.stb(R7, layout::PHASE, i32::from(phase::HEAD));
            a.ja("head");
        }
    }

    if !scope.is_everything() {
        a.label(next);
    }
    Ok(())
}

/// Which of the socket's addresses a scope names.
#[derive(Debug, Clone, Copy)]
enum Side {
    Remote,
    Local,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Remote => "remote",
            Side::Local => "local",
        }
    }

    /// The `sk_msg_md` offsets of its IPv4 address and of the first of
    /// its four IPv6 words (network byte order, as the socket holds them).
    fn offsets(self) -> (i16, i16) {
        match self {
            Side::Remote => (sk_msg_md::REMOTE_IP4, sk_msg_md::REMOTE_IP6),
            Side::Local => (sk_msg_md::LOCAL_IP4, sk_msg_md::LOCAL_IP6),
        }
    }
}

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// Jumps to `next` unless the socket's `side` address lies in one of
/// `cidrs` (`model::Cidr::contains`: an IPv4 block also holds the
/// IPv4-mapped IPv6 address of a dual-stack socket; an IPv6 block never
/// holds a plain IPv4 address). Each block is a masked compare of one to
/// four words that sets r3 on a match and jumps only over its own
/// instructions, so a list of any length keeps every jump short; the code
/// runs once per connection. Uses r0-r5.
fn select_addrs(a: &mut Asm, index: usize, side: Side, cidrs: &[Cidr], next: &Label) {
    let what = side.name();
    let (ip4, ip6) = side.offsets();
    let v4: Vec<&Cidr> = cidrs.iter().filter(|cidr| cidr.addr.is_ipv4()).collect();
    let v6: Vec<&Cidr> = cidrs.iter().filter(|cidr| cidr.addr.is_ipv6()).collect();
    let label = |a: &mut Asm, part: &str| a.fresh_label(&format!("scope_{index}_{what}_{part}"));
    let (v6_words, done) = (label(a, "v6_words"), label(a, "addr_done"));
    a.note(format!("{what} addr: r3 = 1 when the socket's address lies in a block of the scope"));
    a.mov64(R3, 0);
    a.ldxw(R0, R6, sk_msg_md::FAMILY).comment("msg->family");
    a.jeq(R0, AF_INET6, v6_words.clone());
    a.jne(R0, AF_INET, done.clone()).comment("neither AF_INET nor AF_INET6: no block holds it");
    if !v4.is_empty() {
        a.ldxw(R1, R6, ip4).comment(format!("msg->{what}_ip4"));
        v4_blocks(a, &v4, R1, &label);
    }
    a.ja(done.clone());
    a.label(v6_words);
    let words = [R1, R2, R4, R5];
    for (at, reg) in words.iter().enumerate() {
        a.ldxw(*reg, R6, ip6 + 4 * at as i16).comment(format!("msg->{what}_ip6[{at}]"));
    }
    for cidr in &v6 {
        let miss = label(a, "v6_miss");
        a.note(format!("block {}/{}", cidr.addr, cidr.prefix_len));
        let net = octets(cidr);
        for (at, reg) in words.iter().enumerate() {
            let bits = (i32::from(cidr.prefix_len) - 32 * at as i32).clamp(0, 32) as u32;
            if bits == 0 {
                break;
            }
            word_compare(a, *reg, &net[4 * at..4 * at + 4], bits, &miss);
        }
        a.mov64(R3, 1);
        a.label(miss);
    }
    if !v4.is_empty() {
        a.note("an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is held by the IPv4 blocks");
        a.jne32(R1, 0, done.clone());
        a.jne32(R2, 0, done.clone());
        a.jne32(R4, le_word(&[0, 0, 0xff, 0xff]), done.clone()).comment("::ffff:0:0/96");
        v4_blocks(a, &v4, R5, &label);
    }
    a.label(done);
    a.jeq(R3, 0, next.clone()).comment(format!("{what} address in no block: not this policy"));
}

/// The IPv4 blocks on the address in `reg`: r3 = 1 on a match.
fn v4_blocks(a: &mut Asm, v4: &[&Cidr], reg: Reg, label: &impl Fn(&mut Asm, &str) -> Label) {
    for cidr in v4 {
        let miss = label(a, "v4_miss");
        a.note(format!("block {}/{}", cidr.addr, cidr.prefix_len));
        if cidr.prefix_len > 0 {
            word_compare(a, reg, &octets(cidr)[..4], u32::from(cidr.prefix_len), &miss);
        }
        a.mov64(R3, 1);
        a.label(miss);
    }
}

/// Jumps to `miss` unless the first `bits` bits of the word in `reg` (four
/// bytes in network order) are those of `net`. Uses r0.
fn word_compare(a: &mut Asm, reg: Reg, net: &[u8], bits: u32, miss: &Label) {
    let mask = (u32::MAX << (32 - bits)).to_be_bytes();
    let masked: Vec<u8> = net.iter().zip(mask).map(|(byte, m)| byte & m).collect();
    if bits == 32 {
        a.jne32(reg, le_word(&masked), miss.clone());
    } else {
        a.mov32(R0, reg);
        a.and32(R0, le_word(&mask));
        a.jne32(R0, le_word(&masked), miss.clone());
    }
}

/// Four bytes in network order as the little-endian load of them reads
/// them (the program's target is little-endian BPF).
fn le_word(bytes: &[u8]) -> i32 {
    i32::from_le_bytes(bytes.try_into().expect("four bytes"))
}

/// A block's address: 4 bytes (IPv4) or 16 (IPv6).
fn octets(cidr: &Cidr) -> Vec<u8> {
    match cidr.addr {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
