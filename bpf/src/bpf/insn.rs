//! One eBPF instruction as a typed value, and its wire format.
//!
//! [`Insn`] can only hold instructions the kernel's verifier accepts in form
//! (a 32-bit `mov` with a register source, a `ldxw` with an offset, …): the
//! operands of each form are fields of its variant, so an unused field cannot
//! be set. [`Op`] names the form without its operands; the opcode byte, the
//! mnemonic and the LLVM syntax of every `Op` come from the one table in
//! [`super::table`].
//!
//! Wire format (little-endian, as the kernel reads `struct bpf_insn`): byte 0
//! the opcode, byte 1 `src << 4 | dst`, bytes 2–3 the signed offset, bytes 4–7
//! the signed immediate. `LD_IMM64` takes two 8-byte slots; the second holds
//! the upper 32 bits of the constant in its immediate and zeros elsewhere.
//! Jump offsets count slots, not instructions.

use std::fmt;

use super::table::{Helper, Key, OpInfo, OPCODES};

/// Bytes in one instruction slot.
pub const SLOT_BYTES: usize = 8;

/// `src_reg` of an `LD_IMM64` whose immediate is a map file descriptor
/// (`BPF_PSEUDO_MAP_FD` in `include/uapi/linux/bpf.h`).
pub const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `src_reg` of a BPF-to-BPF call: `imm` is the callee's slot relative to
/// the slot after the call (`BPF_PSEUDO_CALL` in `include/uapi/linux/bpf.h`).
pub const BPF_PSEUDO_CALL: u8 = 1;

/// `src_reg` of an `LD_IMM64` loading a subprogram's address (a callback
/// for `bpf_loop`): `imm` is the callee's slot relative to the slot after
/// the load's first slot (`BPF_PSEUDO_FUNC`).
pub const BPF_PSEUDO_FUNC: u8 = 4;

/// The eleven registers: R0 return value, R1–R5 arguments (clobbered by
/// calls), R6–R9 callee-saved, R10 the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reg {
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl Reg {
    /// Every register, in number order.
    pub const ALL: [Reg; 11] =
        [Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5, Reg::R6, Reg::R7, Reg::R8, Reg::R9, Reg::R10];

    /// The register's number in the `dst`/`src` nibbles.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The register with this number, if there is one.
    pub fn from_number(number: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(number)).copied()
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.number())
    }
}

/// Operand width of an ALU or jump instruction: the 64-bit classes
/// (`BPF_ALU64`, `BPF_JMP`; registers print as `r1`) or the 32-bit ones
/// (`BPF_ALU`, `BPF_JMP32`; registers print as `w1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    X64,
    X32,
}

/// Access size of a load or store: `u8`, `u16`, `u32`, `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    pub const ALL: [Size; 4] = [Size::B, Size::H, Size::W, Size::DW];

    /// Bytes accessed.
    pub const fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Access size of an atomic instruction: the kernel has no 8- or 16-bit
/// atomics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicSize {
    W,
    DW,
}

/// Two-operand ALU operations (`dst op= src`). `neg` and the byte-order
/// conversions have their own variants of [`Insn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Mod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    pub const ALL: [AluOp; 12] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];
}

/// Conditions of the conditional jumps. `S` prefixes the signed comparisons;
/// `Set` jumps when `dst & src` is non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpCond {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpCond {
    pub const ALL: [JmpCond; 11] = [
        JmpCond::Eq,
        JmpCond::Gt,
        JmpCond::Ge,
        JmpCond::Set,
        JmpCond::Ne,
        JmpCond::Sgt,
        JmpCond::Sge,
        JmpCond::Lt,
        JmpCond::Le,
        JmpCond::Slt,
        JmpCond::Sle,
    ];
}

/// Byte-order conversions of the low 16, 32 or 64 bits of a register
/// (`BPF_END`, in the 32-bit ALU class; the upper bits are zeroed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    Be16,
    Be32,
    Be64,
    Le16,
    Le32,
    Le64,
}

impl Endian {
    pub const ALL: [Endian; 6] = [Endian::Be16, Endian::Be32, Endian::Be64, Endian::Le16, Endian::Le32, Endian::Le64];
}

/// Whether the second operand is the immediate (`BPF_K`) or `src` (`BPF_X`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrcKind {
    Imm,
    Reg,
}

/// The second operand of an ALU instruction or a conditional jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A 32-bit immediate; 64-bit operations sign-extend it.
    Imm(i32),
    Reg(Reg),
}

impl Operand {
    pub const fn kind(self) -> SrcKind {
        match self {
            Operand::Imm(_) => SrcKind::Imm,
            Operand::Reg(_) => SrcKind::Reg,
        }
    }
}

impl From<i32> for Operand {
    fn from(imm: i32) -> Self {
        Operand::Imm(imm)
    }
}

impl From<Reg> for Operand {
    fn from(reg: Reg) -> Self {
        Operand::Reg(reg)
    }
}

/// An instruction form without its operands: one row of the opcode table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Alu(Width, AluOp, SrcKind),
    Neg(Width),
    Endian(Endian),
    Ja,
    Jmp(Width, JmpCond, SrcKind),
    Call,
    Exit,
    LdImm64,
    LdMap,
    Ldx(Size),
    St(Size),
    Stx(Size),
    AtomicAdd(AtomicSize),
    /// A BPF-to-BPF call (`src_reg = BPF_PSEUDO_CALL`).
    CallLocal,
    /// `LD_IMM64` of a subprogram's address (`src_reg = BPF_PSEUDO_FUNC`).
    LdFunc,
}

/// Rows in [`OPCODES`]: one per [`Op`].
pub const OP_COUNT: usize = 121;

impl Op {
    /// The op's row in [`OPCODES`]: a dense numbering of all 119 ops, in the
    /// order the table lists them (checked at compile time in `table.rs`).
    pub const fn index(self) -> usize {
        const fn width(w: Width) -> usize {
            match w {
                Width::X64 => 0,
                Width::X32 => 1,
            }
        }
        const fn src(s: SrcKind) -> usize {
            match s {
                SrcKind::Imm => 0,
                SrcKind::Reg => 1,
            }
        }
        const fn size(s: Size) -> usize {
            match s {
                Size::B => 0,
                Size::H => 1,
                Size::W => 2,
                Size::DW => 3,
            }
        }
        match self {
            // 2 widths × 12 ops × 2 operand kinds = rows 0..48
            Op::Alu(w, op, s) => width(w) * 24 + op as usize * 2 + src(s),
            Op::Neg(w) => 48 + width(w),
            Op::Endian(e) => 50 + e as usize,
            Op::Ja => 56,
            // 2 widths × 11 conditions × 2 operand kinds = rows 57..101
            Op::Jmp(w, c, s) => 57 + width(w) * 22 + c as usize * 2 + src(s),
            Op::Call => 101,
            Op::Exit => 102,
            Op::LdImm64 => 103,
            Op::LdMap => 104,
            Op::Ldx(s) => 105 + size(s),
            Op::St(s) => 109 + size(s),
            Op::Stx(s) => 113 + size(s),
            Op::AtomicAdd(AtomicSize::W) => 117,
            Op::AtomicAdd(AtomicSize::DW) => 118,
            Op::CallLocal => 119,
            Op::LdFunc => 120,
        }
    }

    /// The op's row of the opcode table: its opcode byte, mnemonic and syntax.
    pub fn info(self) -> &'static OpInfo {
        // Cannot fail: `index` numbers the ops densely from 0 to OP_COUNT - 1,
        // and table.rs asserts at compile time that OPCODES has OP_COUNT rows
        // and that row i holds the op whose index is i.
        &OPCODES[self.index()]
    }

    /// Every op, in table order.
    pub fn all() -> impl Iterator<Item = Op> {
        OPCODES.iter().map(|row| row.op)
    }

    /// Instruction slots the op occupies (2 for `LD_IMM64`, 1 otherwise).
    pub const fn slots(self) -> usize {
        match self {
            Op::LdImm64 | Op::LdMap | Op::LdFunc => 2,
            _ => 1,
        }
    }
}

/// One eBPF instruction with its operands.
///
/// Jump offsets are in slots, relative to the slot after the jump; the
/// assembler ([`super::Asm`]) computes them from labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// `dst op= src` (`r1 += 8`, `w1 = w2`).
    Alu {
        width: Width,
        op: AluOp,
        dst: Reg,
        src: Operand,
    },
    /// `dst = -dst`.
    Neg {
        width: Width,
        dst: Reg,
    },
    /// `dst = be16 dst` and friends.
    Endian {
        conv: Endian,
        dst: Reg,
    },
    /// `goto +off`.
    Ja {
        off: i16,
    },
    /// `if dst cond src goto +off`.
    Jmp {
        width: Width,
        cond: JmpCond,
        dst: Reg,
        src: Operand,
        off: i16,
    },
    /// A helper call; the result lands in R0, R1–R5 are clobbered.
    Call {
        helper: Helper,
    },
    Exit,
    /// A call of a subprogram of the same program (`BPF_PSEUDO_CALL`):
    /// `off` is the callee's first slot relative to the slot after the call.
    /// Arguments in R1..R5, result in R0, R6..R9 preserved.
    CallLocal {
        off: i32,
    },
    /// `dst = &subprogram`: a two-slot `LD_IMM64` with `src_reg =
    /// BPF_PSEUDO_FUNC`; `off` is the subprogram's first slot relative to
    /// the slot after the load's first slot.
    LdFunc {
        dst: Reg,
        off: i32,
    },
    /// `dst = imm ll`: a 64-bit constant, two slots.
    LdImm64 {
        dst: Reg,
        imm: i64,
    },
    /// `dst = &map`: a two-slot `LD_IMM64` with `src_reg = BPF_PSEUDO_MAP_FD`
    /// and immediate 0 that the loader fills with the map's fd, guided by an
    /// `R_BPF_64_64` relocation against the map's symbol.
    LdMap {
        dst: Reg,
        map: String,
    },
    /// `dst = *(size *)(src + off)`.
    Ldx {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `*(size *)(dst + off) = imm`.
    St {
        size: Size,
        dst: Reg,
        off: i16,
        imm: i32,
    },
    /// `*(size *)(dst + off) = src`.
    Stx {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `lock *(size *)(dst + off) += src`.
    AtomicAdd {
        size: AtomicSize,
        dst: Reg,
        src: Reg,
        off: i16,
    },
}

/// An instruction's fields as they go on the wire (before the opcode table's
/// fixed `src`/`imm` keys are applied). `imm` is 64-bit for `LD_IMM64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i64,
}

impl Insn {
    /// The instruction's form: its row of the opcode table.
    pub fn op(&self) -> Op {
        match *self {
            Insn::Alu { width, op, src, .. } => Op::Alu(width, op, src.kind()),
            Insn::Neg { width, .. } => Op::Neg(width),
            Insn::Endian { conv, .. } => Op::Endian(conv),
            Insn::Ja { .. } => Op::Ja,
            Insn::Jmp { width, cond, src, .. } => Op::Jmp(width, cond, src.kind()),
            Insn::Call { .. } => Op::Call,
            Insn::Exit => Op::Exit,
            Insn::LdImm64 { .. } => Op::LdImm64,
            Insn::LdMap { .. } => Op::LdMap,
            Insn::Ldx { size, .. } => Op::Ldx(size),
            Insn::St { size, .. } => Op::St(size),
            Insn::Stx { size, .. } => Op::Stx(size),
            Insn::AtomicAdd { size, .. } => Op::AtomicAdd(size),
            Insn::CallLocal { .. } => Op::CallLocal,
            Insn::LdFunc { .. } => Op::LdFunc,
        }
    }

    /// Slots the instruction occupies.
    pub fn slots(&self) -> usize {
        self.op().slots()
    }

    /// The jump offset, for `ja` and the conditional jumps.
    pub fn jump_offset(&self) -> Option<i16> {
        match *self {
            Insn::Ja { off } | Insn::Jmp { off, .. } => Some(off),
            _ => None,
        }
    }

    /// The relative offset of a subprogram reference (`call_local`,
    /// `ld_func`), in slots from the slot after the instruction's first.
    pub fn func_offset(&self) -> Option<i32> {
        match *self {
            Insn::CallLocal { off } | Insn::LdFunc { off, .. } => Some(off),
            _ => None,
        }
    }

    /// Sets the offset of a subprogram reference; false (nothing changed)
    /// for other instructions.
    pub fn set_func_offset(&mut self, new: i32) -> bool {
        match self {
            Insn::CallLocal { off } | Insn::LdFunc { off, .. } => {
                *off = new;
                true
            }
            _ => false,
        }
    }

    /// Sets the jump offset; returns false (and changes nothing) when the
    /// instruction is not a jump.
    pub fn set_jump_offset(&mut self, new: i16) -> bool {
        match self {
            Insn::Ja { off } | Insn::Jmp { off, .. } => {
                *off = new;
                true
            }
            _ => false,
        }
    }

    /// The fields that vary between instructions of the same form. The
    /// fixed `src`/`imm` of keyed rows (`LD_IMM64` flavours, byte-order
    /// conversions, atomics) come from the table and are not included.
    pub fn fields(&self) -> Fields {
        let none = Fields { dst: 0, src: 0, off: 0, imm: 0 };
        let operand = |src: Operand| match src {
            Operand::Imm(imm) => (0, i64::from(imm)),
            Operand::Reg(reg) => (reg.number(), 0),
        };
        match *self {
            Insn::Alu { dst, src, .. } => {
                let (src, imm) = operand(src);
                Fields { dst: dst.number(), src, off: 0, imm }
            }
            Insn::Neg { dst, .. } | Insn::Endian { dst, .. } => Fields { dst: dst.number(), ..none },
            Insn::Ja { off } => Fields { off, ..none },
            Insn::Jmp { dst, src, off, .. } => {
                let (src, imm) = operand(src);
                Fields { dst: dst.number(), src, off, imm }
            }
            Insn::Call { helper } => Fields { imm: i64::from(helper.id()), ..none },
            Insn::Exit => none,
            Insn::CallLocal { off } => Fields { imm: i64::from(off), ..none },
            Insn::LdFunc { dst, off } => Fields { dst: dst.number(), imm: i64::from(off), ..none },
            Insn::LdImm64 { dst, imm } => Fields { dst: dst.number(), imm, ..none },
            Insn::LdMap { dst, .. } => Fields { dst: dst.number(), ..none },
            Insn::Ldx { dst, src, off, .. }
            | Insn::Stx { dst, src, off, .. }
            | Insn::AtomicAdd { dst, src, off, .. } => Fields { dst: dst.number(), src: src.number(), off, imm: 0 },
            Insn::St { dst, off, imm, .. } => Fields { dst: dst.number(), off, imm: i64::from(imm), ..none },
        }
    }

    /// Appends the instruction's 8 or 16 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let info = self.op().info();
        let fields = self.fields();
        let src = match info.key {
            Key::Src(src) => src,
            _ => fields.src,
        };
        let imm = match info.key {
            Key::Imm(imm) => i64::from(imm),
            _ => fields.imm,
        };
        // The low 32 bits go in the first slot; for LD_IMM64 the high 32 bits
        // go in the second. Truncation is the wire format.
        let low = imm as i32;
        Slot { code: info.code, dst: fields.dst, src, off: fields.off, imm: low }.write(out);
        if info.op.slots() == 2 {
            // A subprogram's offset is 32 bits; the second half stays 0.
            let high = if info.op == Op::LdFunc { 0 } else { (imm >> 32) as i32 };
            Slot { code: 0, dst: 0, src: 0, off: 0, imm: high }.write(out);
        }
    }

    /// Decodes the instruction at the start of `bytes`, returning it and the
    /// number of slots it took. `map` is the name of the map a relocation at
    /// this slot refers to, if any; it is required by (and only by) a map
    /// load. `slot` is only used in error messages.
    ///
    /// The decoder is strict: it accepts exactly what [`Insn::encode`]
    /// writes, so decoding and re-encoding gives back the same bytes.
    pub fn decode(bytes: &[u8], slot: usize, map: Option<&str>) -> Result<(Insn, usize), DecodeError> {
        let first = Slot::read(bytes, slot)?;
        let info = OPCODES
            .iter()
            .find(|row| {
                row.code == first.code
                    && match row.key {
                        Key::None => true,
                        Key::Src(src) => src == first.src,
                        Key::Imm(imm) => imm == first.imm,
                    }
            })
            .ok_or(DecodeError::UnknownOpcode { slot, code: first.code })?;
        let reserved = |field: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(DecodeError::ReservedField { slot, code: first.code, field })
            }
        };
        let reg = |number: u8| Reg::from_number(number).ok_or(DecodeError::InvalidRegister { slot, number });
        let dst = reg(first.dst)?;
        let operand = |kind: SrcKind| -> Result<Operand, DecodeError> {
            match kind {
                SrcKind::Imm => {
                    reserved("src", first.src == 0)?;
                    Ok(Operand::Imm(first.imm))
                }
                SrcKind::Reg => {
                    reserved("imm", first.imm == 0)?;
                    Ok(Operand::Reg(reg(first.src)?))
                }
            }
        };
        let insn = match info.op {
            Op::Alu(width, op, kind) => {
                reserved("off", first.off == 0)?;
                Insn::Alu { width, op, dst, src: operand(kind)? }
            }
            Op::Neg(width) => {
                reserved("src", first.src == 0)?;
                reserved("off", first.off == 0)?;
                reserved("imm", first.imm == 0)?;
                Insn::Neg { width, dst }
            }
            Op::Endian(conv) => {
                reserved("src", first.src == 0)?;
                reserved("off", first.off == 0)?;
                Insn::Endian { conv, dst }
            }
            Op::Ja => {
                reserved("dst", first.dst == 0)?;
                reserved("src", first.src == 0)?;
                reserved("imm", first.imm == 0)?;
                Insn::Ja { off: first.off }
            }
            Op::Jmp(width, cond, kind) => Insn::Jmp { width, cond, dst, src: operand(kind)?, off: first.off },
            Op::Call => {
                reserved("dst", first.dst == 0)?;
                reserved("src", first.src == 0)?;
                reserved("off", first.off == 0)?;
                let helper = u32::try_from(first.imm)
                    .ok()
                    .and_then(Helper::from_id)
                    .ok_or(DecodeError::UnknownHelper { slot, id: first.imm })?;
                Insn::Call { helper }
            }
            Op::Exit => {
                reserved("dst", first.dst == 0)?;
                reserved("src", first.src == 0)?;
                reserved("off", first.off == 0)?;
                reserved("imm", first.imm == 0)?;
                Insn::Exit
            }
            Op::CallLocal => {
                reserved("dst", first.dst == 0)?;
                reserved("off", first.off == 0)?;
                Insn::CallLocal { off: first.imm }
            }
            Op::LdFunc => {
                reserved("off", first.off == 0)?;
                let rest = bytes.get(SLOT_BYTES..).unwrap_or(&[]);
                let second = Slot::read(rest, slot + 1).map_err(|_| DecodeError::Truncated { slot })?;
                let tail_ok = second.code == 0 && second.dst == 0 && second.src == 0 && second.off == 0;
                if !tail_ok {
                    return Err(DecodeError::BadLdImm64Tail { slot });
                }
                reserved("imm", second.imm == 0)?;
                Insn::LdFunc { dst, off: first.imm }
            }
            Op::LdImm64 | Op::LdMap => {
                reserved("off", first.off == 0)?;
                let rest = bytes.get(SLOT_BYTES..).unwrap_or(&[]);
                let second = Slot::read(rest, slot + 1).map_err(|_| DecodeError::Truncated { slot })?;
                let tail_ok = second.code == 0 && second.dst == 0 && second.src == 0 && second.off == 0;
                if !tail_ok {
                    return Err(DecodeError::BadLdImm64Tail { slot });
                }
                if info.op == Op::LdMap {
                    // The immediate is the fd the loader writes; an object
                    // holds 0 there.
                    reserved("imm", first.imm == 0 && second.imm == 0)?;
                    let map = map.ok_or(DecodeError::MapLoadWithoutRelocation { slot })?;
                    Insn::LdMap { dst, map: map.to_owned() }
                } else {
                    // Reassemble the two halves; `as u32` keeps the low half's bits.
                    let imm = (i64::from(second.imm) << 32) | i64::from(first.imm as u32);
                    Insn::LdImm64 { dst, imm }
                }
            }
            Op::Ldx(size) => {
                reserved("imm", first.imm == 0)?;
                Insn::Ldx { size, dst, src: reg(first.src)?, off: first.off }
            }
            Op::St(size) => {
                reserved("src", first.src == 0)?;
                Insn::St { size, dst, off: first.off, imm: first.imm }
            }
            Op::Stx(size) => {
                reserved("imm", first.imm == 0)?;
                Insn::Stx { size, dst, src: reg(first.src)?, off: first.off }
            }
            Op::AtomicAdd(size) => Insn::AtomicAdd { size, dst, src: reg(first.src)?, off: first.off },
        };
        if map.is_some() && info.op != Op::LdMap {
            return Err(DecodeError::RelocationNotOnMapLoad { slot });
        }
        Ok((insn, info.op.slots()))
    }
}

/// One raw 8-byte slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Slot {
    fn write(self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push((self.src << 4) | (self.dst & 0x0f));
        out.extend_from_slice(&self.off.to_le_bytes());
        out.extend_from_slice(&self.imm.to_le_bytes());
    }

    fn read(bytes: &[u8], slot: usize) -> Result<Slot, DecodeError> {
        let Some(&[code, regs, off0, off1, imm0, imm1, imm2, imm3]) = bytes.get(..SLOT_BYTES) else {
            return Err(DecodeError::Truncated { slot });
        };
        Ok(Slot {
            code,
            dst: regs & 0x0f,
            src: regs >> 4,
            off: i16::from_le_bytes([off0, off1]),
            imm: i32::from_le_bytes([imm0, imm1, imm2, imm3]),
        })
    }
}

/// Why bytes are not an instruction this module writes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("slot {slot}: the bytes end inside an instruction")]
    Truncated { slot: usize },
    #[error("slot {slot}: opcode {code:#04x} is not in the opcode table")]
    UnknownOpcode { slot: usize, code: u8 },
    #[error("slot {slot}: field `{field}` of opcode {code:#04x} must be zero")]
    ReservedField { slot: usize, code: u8, field: &'static str },
    #[error("slot {slot}: register number {number} does not exist")]
    InvalidRegister { slot: usize, number: u8 },
    #[error("slot {slot}: helper id {id} is not in the helper table")]
    UnknownHelper { slot: usize, id: i32 },
    #[error("slot {slot}: the second slot of an ld_imm64 must hold only the upper immediate")]
    BadLdImm64Tail { slot: usize },
    #[error("slot {slot}: a map load has no relocation naming its map")]
    MapLoadWithoutRelocation { slot: usize },
    #[error("slot {slot}: a relocation points at an instruction that is not a map load")]
    RelocationNotOnMapLoad { slot: usize },
    #[error("{reason}")]
    BadJump { reason: String },
    #[error("a relocation at byte offset {offset} is not at the start of an instruction")]
    MisplacedRelocation { offset: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(insn: &Insn) -> Vec<u8> {
        let mut out = Vec::new();
        insn.encode(&mut out);
        out
    }

    #[test]
    fn wire_format() {
        let ldx = Insn::Ldx { size: Size::W, dst: Reg::R2, src: Reg::R1, off: 4 };
        assert_eq!(bytes(&ldx), [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        let stx = Insn::Stx { size: Size::DW, dst: Reg::R10, src: Reg::R1, off: -8 };
        assert_eq!(bytes(&stx), [0x7b, 0x1a, 0xf8, 0xff, 0, 0, 0, 0]);
        let call = Insn::Call { helper: Helper::MsgApplyBytes };
        assert_eq!(bytes(&call), [0x85, 0, 0, 0, 61, 0, 0, 0]);
        let be16 = Insn::Endian { conv: Endian::Be16, dst: Reg::R1 };
        assert_eq!(bytes(&be16), [0xdc, 0x01, 0, 0, 16, 0, 0, 0]);
        let wide = Insn::LdImm64 { dst: Reg::R1, imm: 0x1122_3344_5566_7788 };
        assert_eq!(bytes(&wide), [0x18, 1, 0, 0, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        let map = Insn::LdMap { dst: Reg::R2, map: "m".into() };
        assert_eq!(bytes(&map), [0x18, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let atomic = Insn::AtomicAdd { size: AtomicSize::DW, dst: Reg::R0, src: Reg::R1, off: 0 };
        assert_eq!(bytes(&atomic), [0xdb, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let samples = [
            Insn::Alu { width: Width::X32, op: AluOp::Mov, dst: Reg::R0, src: Operand::Reg(Reg::R1) },
            Insn::Jmp { width: Width::X64, cond: JmpCond::Sle, dst: Reg::R9, src: Operand::Imm(-5), off: -3 },
            Insn::LdImm64 { dst: Reg::R3, imm: i64::MIN },
            Insn::LdImm64 { dst: Reg::R3, imm: 0xffff_ffff },
            Insn::St { size: Size::H, dst: Reg::R10, off: -2, imm: -1 },
        ];
        for insn in samples {
            assert_eq!(Insn::decode(&bytes(&insn), 0, None), Ok((insn.clone(), insn.slots())));
        }
        let map = Insn::LdMap { dst: Reg::R1, map: "sessions".into() };
        assert_eq!(Insn::decode(&bytes(&map), 0, Some("sessions")), Ok((map, 2)));
    }

    #[test]
    fn decoder_is_strict() {
        let decode = |raw: &[u8]| Insn::decode(raw, 7, None);
        assert_eq!(decode(&[0x95, 0, 0, 0]), Err(DecodeError::Truncated { slot: 7 }));
        assert_eq!(decode(&[0xff, 0, 0, 0, 0, 0, 0, 0]), Err(DecodeError::UnknownOpcode { slot: 7, code: 0xff }));
        // exit with a non-zero immediate
        assert!(matches!(decode(&[0x95, 0, 0, 0, 1, 0, 0, 0]), Err(DecodeError::ReservedField { field: "imm", .. })));
        // mov64 imm with a source register
        assert!(matches!(
            decode(&[0xb7, 0x21, 0, 0, 1, 0, 0, 0]),
            Err(DecodeError::ReservedField { field: "src", .. })
        ));
        // register 11
        assert_eq!(decode(&[0xbf, 0x0b, 0, 0, 0, 0, 0, 0]), Err(DecodeError::InvalidRegister { slot: 7, number: 11 }));
        // be with width 8
        assert!(matches!(decode(&[0xdc, 0x01, 0, 0, 8, 0, 0, 0]), Err(DecodeError::UnknownOpcode { .. })));
        assert_eq!(decode(&[0x85, 0, 0, 0, 0xe7, 3, 0, 0]), Err(DecodeError::UnknownHelper { slot: 7, id: 999 }));
        // ld_imm64 cut in half, and with garbage in its second slot
        assert_eq!(decode(&[0x18, 1, 0, 0, 0, 0, 0, 0]), Err(DecodeError::Truncated { slot: 7 }));
        let tail = [0x18, 1, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&tail), Err(DecodeError::BadLdImm64Tail { slot: 7 }));
        // a map load needs its relocation; other instructions must not have one
        let map = [0x18, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&map), Err(DecodeError::MapLoadWithoutRelocation { slot: 7 }));
        let exit = [0x95, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Insn::decode(&exit, 7, Some("m")), Err(DecodeError::RelocationNotOnMapLoad { slot: 7 }));
    }

    #[test]
    fn registers() {
        assert_eq!(Reg::from_number(10), Some(Reg::R10));
        assert_eq!(Reg::from_number(11), None);
        assert_eq!(Reg::R7.to_string(), "r7");
    }
}
