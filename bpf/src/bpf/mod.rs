//! The BPF assembler: eBPF instructions as typed values, a builder with
//! symbolic labels, the wire format both ways, and a disassembler that
//! prints LLVM's BPF syntax.
//!
//! - [`table`]: the one table of opcodes ([`OPCODES`]) and the one table of
//!   helpers ([`HELPERS`]). The encoder, the decoder, the disassembler and
//!   the tests are all driven by them.
//! - [`insn`]: [`Insn`] (one instruction with its operands) and its 8/16-byte
//!   encoding and strict decoding.
//! - [`asm`]: [`Asm`], the builder the code generator writes through, and
//!   [`Program`], what it produces: instructions with resolved jumps, the
//!   relocations of map loads, labels and comments.
//! - [`disasm`]: instruction text (`r0 = 0`, `if r1 == 0 goto +3`) and the
//!   annotated listing of `l7c compile --emit asm`.
//!
//! ```
//! use l7c_bpf::bpf::{Asm, Helper, Size, R0, R1, R2, R6};
//!
//! let mut a = Asm::new();
//! a.mov64(R6, R1);
//! a.ldx(Size::W, R2, R6, 68).comment("msg->size");
//! a.jeq(R2, 0, "pass");
//! a.mov64(R1, R6).mov64(R2, 1);
//! a.call(Helper::MsgCorkBytes);
//! a.label("pass");
//! a.mov64(R0, 1);
//! a.exit();
//! let program = a.finish()?;
//! assert!(program.listing().contains("if r2 == 0 goto +3 <pass>"));
//! assert_eq!(program.encode().len(), 8 * 8);
//! # Ok::<(), l7c_bpf::bpf::AsmError>(())
//! ```
//!
//! Invariants: an [`Insn`] can only hold a form the kernel accepts (operands
//! are fields of its variant); a [`Program`] is only built by
//! [`Asm::finish`], [`Program::from_insns`] or [`Program::decode`], and its
//! jumps land on instructions inside it; decoding what [`Program::encode`]
//! wrote gives back the same instructions.

pub mod asm;
pub mod disasm;
pub mod insn;
pub mod table;

pub use asm::{Asm, AsmError, Comment, Label, LabelDef, Placement, Program, Relocation};
pub use insn::{
    AluOp, AtomicSize, DecodeError, Endian, Insn, JmpCond, Op, Operand, Reg, Size, SrcKind, Width, BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_FD, SLOT_BYTES,
};
pub use table::{Helper, HelperInfo, Key, OpInfo, HELPERS, OPCODES};

pub use Reg::{R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};

/// Context offsets of `struct sk_msg_md` (80 bytes, read-only, loads of
/// exactly the field's width).
pub mod sk_msg_md {
    /// `void *data` (u64 load).
    pub const DATA: i16 = 0;
    /// `void *data_end` (u64 load).
    pub const DATA_END: i16 = 8;
    /// `__u32 family`.
    pub const FAMILY: i16 = 16;
    /// `__u32 remote_ip4`, network byte order.
    pub const REMOTE_IP4: i16 = 20;
    /// `__u32 local_ip4`, network byte order.
    pub const LOCAL_IP4: i16 = 24;
    /// `__u32 remote_ip6[4]`.
    pub const REMOTE_IP6: i16 = 28;
    /// `__u32 local_ip6[4]`.
    pub const LOCAL_IP6: i16 = 44;
    /// `__u32 remote_port`, network byte order.
    pub const REMOTE_PORT: i16 = 60;
    /// `__u32 local_port`, host byte order.
    pub const LOCAL_PORT: i16 = 64;
    /// `__u32 size`: the whole message's length (5.0+).
    pub const SIZE: i16 = 68;
    /// `struct bpf_sock *sk` (u64 load, 5.8+).
    pub const SK: i16 = 72;
}

/// Verdicts an `sk_msg` program returns in R0.
pub mod verdict {
    /// `SK_DROP`.
    pub const DROP: i32 = 0;
    /// `SK_PASS`.
    pub const PASS: i32 = 1;
}
