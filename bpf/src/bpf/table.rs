//! The one table of eBPF opcodes and the one table of helpers.
//!
//! Everything else is driven by these two tables: the encoder takes the
//! opcode byte from [`OPCODES`], the decoder looks the byte up in it, the
//! disassembler prints each row's `syntax`, and the tests walk every row.
//! The opcode bytes are written out literally (so `0x62` can be found with
//! grep); a unit test re-derives each one from the kernel's bit layout
//! (class | operation | source), so a typo in either shows up.
//!
//! `syntax` is what LLVM's BPF disassembler prints, with placeholders
//! `{dst}`, `{src}` (register numbers), `{imm}` (signed decimal; the 64-bit
//! constant for `LD_IMM64`), `{off}` (`+ 8` / `- 8`) and `{target}` (`+3` /
//! `-3`). Rows marked `llvm14: false` are printed by LLVM 14's `llvm-objdump`
//! as `<unknown>` (it predates `BPF_ST`, `mod` and `jset` in its BPF
//! disassembler); their syntax is the one later LLVM releases print, and the
//! kernel accepts all of them.

use super::insn::{
    AluOp::*, AtomicSize, Endian, JmpCond::*, Op, Size, SrcKind::*, Width::*, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_FD, OP_COUNT,
};
use Op::{Alu, AtomicAdd, Call, Exit, Ja, Jmp, LdImm64, LdMap, Ldx, Neg, St, Stx};

/// One row of the opcode table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// The instruction form.
    pub op: Op,
    /// The opcode byte.
    pub code: u8,
    /// What else in the first slot is fixed for this form, for opcode bytes
    /// shared by several rows.
    pub key: Key,
    /// A short name (kernel/ubpf style), for people and error messages.
    pub mnemonic: &'static str,
    /// LLVM's BPF syntax, with placeholders (see the module documentation).
    pub syntax: &'static str,
    /// Whether LLVM 14's disassembler decodes it (otherwise it prints
    /// `<unknown>`).
    pub llvm14: bool,
}

/// A field of the first slot that is fixed by the row rather than an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The opcode byte alone identifies the row.
    None,
    /// `src_reg` holds this value (`LD_IMM64`: 0 for a constant,
    /// `BPF_PSEUDO_MAP_FD` for a map).
    Src(u8),
    /// The immediate holds this value (byte-order width, atomic operation).
    Imm(i32),
}

const fn row(op: Op, code: u8, mnemonic: &'static str, syntax: &'static str) -> OpInfo {
    OpInfo { op, code, key: Key::None, mnemonic, syntax, llvm14: true }
}

impl OpInfo {
    const fn keyed(self, key: Key) -> OpInfo {
        OpInfo { key, ..self }
    }

    const fn unknown_to_llvm14(self) -> OpInfo {
        OpInfo { llvm14: false, ..self }
    }
}

/// Every instruction form l7c emits, in [`Op::index`] order.
pub const OPCODES: [OpInfo; OP_COUNT] = [
    // ALU64: `r1 op= r2`, `r1 op= 7`
    row(Alu(X64, Add, Imm), 0x07, "add64", "r{dst} += {imm}"),
    row(Alu(X64, Add, Reg), 0x0f, "add64", "r{dst} += r{src}"),
    row(Alu(X64, Sub, Imm), 0x17, "sub64", "r{dst} -= {imm}"),
    row(Alu(X64, Sub, Reg), 0x1f, "sub64", "r{dst} -= r{src}"),
    row(Alu(X64, Mul, Imm), 0x27, "mul64", "r{dst} *= {imm}"),
    row(Alu(X64, Mul, Reg), 0x2f, "mul64", "r{dst} *= r{src}"),
    row(Alu(X64, Div, Imm), 0x37, "div64", "r{dst} /= {imm}"),
    row(Alu(X64, Div, Reg), 0x3f, "div64", "r{dst} /= r{src}"),
    row(Alu(X64, Or, Imm), 0x47, "or64", "r{dst} |= {imm}"),
    row(Alu(X64, Or, Reg), 0x4f, "or64", "r{dst} |= r{src}"),
    row(Alu(X64, And, Imm), 0x57, "and64", "r{dst} &= {imm}"),
    row(Alu(X64, And, Reg), 0x5f, "and64", "r{dst} &= r{src}"),
    row(Alu(X64, Lsh, Imm), 0x67, "lsh64", "r{dst} <<= {imm}"),
    row(Alu(X64, Lsh, Reg), 0x6f, "lsh64", "r{dst} <<= r{src}"),
    row(Alu(X64, Rsh, Imm), 0x77, "rsh64", "r{dst} >>= {imm}"),
    row(Alu(X64, Rsh, Reg), 0x7f, "rsh64", "r{dst} >>= r{src}"),
    row(Alu(X64, Mod, Imm), 0x97, "mod64", "r{dst} %= {imm}").unknown_to_llvm14(),
    row(Alu(X64, Mod, Reg), 0x9f, "mod64", "r{dst} %= r{src}").unknown_to_llvm14(),
    row(Alu(X64, Xor, Imm), 0xa7, "xor64", "r{dst} ^= {imm}"),
    row(Alu(X64, Xor, Reg), 0xaf, "xor64", "r{dst} ^= r{src}"),
    row(Alu(X64, Mov, Imm), 0xb7, "mov64", "r{dst} = {imm}"),
    row(Alu(X64, Mov, Reg), 0xbf, "mov64", "r{dst} = r{src}"),
    row(Alu(X64, Arsh, Imm), 0xc7, "arsh64", "r{dst} s>>= {imm}"),
    row(Alu(X64, Arsh, Reg), 0xcf, "arsh64", "r{dst} s>>= r{src}"),
    // ALU: `w1 op= w2`, `w1 op= 7`
    row(Alu(X32, Add, Imm), 0x04, "add32", "w{dst} += {imm}"),
    row(Alu(X32, Add, Reg), 0x0c, "add32", "w{dst} += w{src}"),
    row(Alu(X32, Sub, Imm), 0x14, "sub32", "w{dst} -= {imm}"),
    row(Alu(X32, Sub, Reg), 0x1c, "sub32", "w{dst} -= w{src}"),
    row(Alu(X32, Mul, Imm), 0x24, "mul32", "w{dst} *= {imm}"),
    row(Alu(X32, Mul, Reg), 0x2c, "mul32", "w{dst} *= w{src}"),
    row(Alu(X32, Div, Imm), 0x34, "div32", "w{dst} /= {imm}"),
    row(Alu(X32, Div, Reg), 0x3c, "div32", "w{dst} /= w{src}"),
    row(Alu(X32, Or, Imm), 0x44, "or32", "w{dst} |= {imm}"),
    row(Alu(X32, Or, Reg), 0x4c, "or32", "w{dst} |= w{src}"),
    row(Alu(X32, And, Imm), 0x54, "and32", "w{dst} &= {imm}"),
    row(Alu(X32, And, Reg), 0x5c, "and32", "w{dst} &= w{src}"),
    row(Alu(X32, Lsh, Imm), 0x64, "lsh32", "w{dst} <<= {imm}"),
    row(Alu(X32, Lsh, Reg), 0x6c, "lsh32", "w{dst} <<= w{src}"),
    row(Alu(X32, Rsh, Imm), 0x74, "rsh32", "w{dst} >>= {imm}"),
    row(Alu(X32, Rsh, Reg), 0x7c, "rsh32", "w{dst} >>= w{src}"),
    row(Alu(X32, Mod, Imm), 0x94, "mod32", "w{dst} %= {imm}").unknown_to_llvm14(),
    row(Alu(X32, Mod, Reg), 0x9c, "mod32", "w{dst} %= w{src}").unknown_to_llvm14(),
    row(Alu(X32, Xor, Imm), 0xa4, "xor32", "w{dst} ^= {imm}"),
    row(Alu(X32, Xor, Reg), 0xac, "xor32", "w{dst} ^= w{src}"),
    row(Alu(X32, Mov, Imm), 0xb4, "mov32", "w{dst} = {imm}"),
    row(Alu(X32, Mov, Reg), 0xbc, "mov32", "w{dst} = w{src}"),
    row(Alu(X32, Arsh, Imm), 0xc4, "arsh32", "w{dst} s>>= {imm}"),
    row(Alu(X32, Arsh, Reg), 0xcc, "arsh32", "w{dst} s>>= w{src}"),
    // neg: `r1 = -r1`
    row(Neg(X64), 0x87, "neg64", "r{dst} = -r{dst}"),
    row(Neg(X32), 0x84, "neg32", "w{dst} = -w{dst}"),
    // byte order (BPF_END in the ALU class; the immediate selects the width)
    row(Op::Endian(Endian::Be16), 0xdc, "be16", "r{dst} = be16 r{dst}").keyed(Key::Imm(16)),
    row(Op::Endian(Endian::Be32), 0xdc, "be32", "r{dst} = be32 r{dst}").keyed(Key::Imm(32)),
    row(Op::Endian(Endian::Be64), 0xdc, "be64", "r{dst} = be64 r{dst}").keyed(Key::Imm(64)),
    row(Op::Endian(Endian::Le16), 0xd4, "le16", "r{dst} = le16 r{dst}").keyed(Key::Imm(16)),
    row(Op::Endian(Endian::Le32), 0xd4, "le32", "r{dst} = le32 r{dst}").keyed(Key::Imm(32)),
    row(Op::Endian(Endian::Le64), 0xd4, "le64", "r{dst} = le64 r{dst}").keyed(Key::Imm(64)),
    // JMP: `goto +3`, `if r1 == 7 goto +3`
    row(Ja, 0x05, "ja", "goto {target}"),
    row(Jmp(X64, Eq, Imm), 0x15, "jeq", "if r{dst} == {imm} goto {target}"),
    row(Jmp(X64, Eq, Reg), 0x1d, "jeq", "if r{dst} == r{src} goto {target}"),
    row(Jmp(X64, Gt, Imm), 0x25, "jgt", "if r{dst} > {imm} goto {target}"),
    row(Jmp(X64, Gt, Reg), 0x2d, "jgt", "if r{dst} > r{src} goto {target}"),
    row(Jmp(X64, Ge, Imm), 0x35, "jge", "if r{dst} >= {imm} goto {target}"),
    row(Jmp(X64, Ge, Reg), 0x3d, "jge", "if r{dst} >= r{src} goto {target}"),
    row(Jmp(X64, Set, Imm), 0x45, "jset", "if r{dst} & {imm} goto {target}").unknown_to_llvm14(),
    row(Jmp(X64, Set, Reg), 0x4d, "jset", "if r{dst} & r{src} goto {target}").unknown_to_llvm14(),
    row(Jmp(X64, Ne, Imm), 0x55, "jne", "if r{dst} != {imm} goto {target}"),
    row(Jmp(X64, Ne, Reg), 0x5d, "jne", "if r{dst} != r{src} goto {target}"),
    row(Jmp(X64, Sgt, Imm), 0x65, "jsgt", "if r{dst} s> {imm} goto {target}"),
    row(Jmp(X64, Sgt, Reg), 0x6d, "jsgt", "if r{dst} s> r{src} goto {target}"),
    row(Jmp(X64, Sge, Imm), 0x75, "jsge", "if r{dst} s>= {imm} goto {target}"),
    row(Jmp(X64, Sge, Reg), 0x7d, "jsge", "if r{dst} s>= r{src} goto {target}"),
    row(Jmp(X64, Lt, Imm), 0xa5, "jlt", "if r{dst} < {imm} goto {target}"),
    row(Jmp(X64, Lt, Reg), 0xad, "jlt", "if r{dst} < r{src} goto {target}"),
    row(Jmp(X64, Le, Imm), 0xb5, "jle", "if r{dst} <= {imm} goto {target}"),
    row(Jmp(X64, Le, Reg), 0xbd, "jle", "if r{dst} <= r{src} goto {target}"),
    row(Jmp(X64, Slt, Imm), 0xc5, "jslt", "if r{dst} s< {imm} goto {target}"),
    row(Jmp(X64, Slt, Reg), 0xcd, "jslt", "if r{dst} s< r{src} goto {target}"),
    row(Jmp(X64, Sle, Imm), 0xd5, "jsle", "if r{dst} s<= {imm} goto {target}"),
    row(Jmp(X64, Sle, Reg), 0xdd, "jsle", "if r{dst} s<= r{src} goto {target}"),
    // JMP32: `if w1 == 7 goto +3`
    row(Jmp(X32, Eq, Imm), 0x16, "jeq32", "if w{dst} == {imm} goto {target}"),
    row(Jmp(X32, Eq, Reg), 0x1e, "jeq32", "if w{dst} == w{src} goto {target}"),
    row(Jmp(X32, Gt, Imm), 0x26, "jgt32", "if w{dst} > {imm} goto {target}"),
    row(Jmp(X32, Gt, Reg), 0x2e, "jgt32", "if w{dst} > w{src} goto {target}"),
    row(Jmp(X32, Ge, Imm), 0x36, "jge32", "if w{dst} >= {imm} goto {target}"),
    row(Jmp(X32, Ge, Reg), 0x3e, "jge32", "if w{dst} >= w{src} goto {target}"),
    row(Jmp(X32, Set, Imm), 0x46, "jset32", "if w{dst} & {imm} goto {target}").unknown_to_llvm14(),
    row(Jmp(X32, Set, Reg), 0x4e, "jset32", "if w{dst} & w{src} goto {target}").unknown_to_llvm14(),
    row(Jmp(X32, Ne, Imm), 0x56, "jne32", "if w{dst} != {imm} goto {target}"),
    row(Jmp(X32, Ne, Reg), 0x5e, "jne32", "if w{dst} != w{src} goto {target}"),
    row(Jmp(X32, Sgt, Imm), 0x66, "jsgt32", "if w{dst} s> {imm} goto {target}"),
    row(Jmp(X32, Sgt, Reg), 0x6e, "jsgt32", "if w{dst} s> w{src} goto {target}"),
    row(Jmp(X32, Sge, Imm), 0x76, "jsge32", "if w{dst} s>= {imm} goto {target}"),
    row(Jmp(X32, Sge, Reg), 0x7e, "jsge32", "if w{dst} s>= w{src} goto {target}"),
    row(Jmp(X32, Lt, Imm), 0xa6, "jlt32", "if w{dst} < {imm} goto {target}"),
    row(Jmp(X32, Lt, Reg), 0xae, "jlt32", "if w{dst} < w{src} goto {target}"),
    row(Jmp(X32, Le, Imm), 0xb6, "jle32", "if w{dst} <= {imm} goto {target}"),
    row(Jmp(X32, Le, Reg), 0xbe, "jle32", "if w{dst} <= w{src} goto {target}"),
    row(Jmp(X32, Slt, Imm), 0xc6, "jslt32", "if w{dst} s< {imm} goto {target}"),
    row(Jmp(X32, Slt, Reg), 0xce, "jslt32", "if w{dst} s< w{src} goto {target}"),
    row(Jmp(X32, Sle, Imm), 0xd6, "jsle32", "if w{dst} s<= {imm} goto {target}"),
    row(Jmp(X32, Sle, Reg), 0xde, "jsle32", "if w{dst} s<= w{src} goto {target}"),
    row(Call, 0x85, "call", "call {imm}").keyed(Key::Src(0)),
    row(Exit, 0x95, "exit", "exit"),
    // LD_IMM64, two slots; src_reg tells a constant from a map reference
    row(LdImm64, 0x18, "lddw", "r{dst} = {imm} ll").keyed(Key::Src(0)),
    row(LdMap, 0x18, "ld_map_fd", "ld_pseudo\tr{dst}, 1, {imm}").keyed(Key::Src(BPF_PSEUDO_MAP_FD)),
    // LDX: `r1 = *(u32 *)(r2 + 4)`
    row(Ldx(Size::B), 0x71, "ldxb", "r{dst} = *(u8 *)(r{src} {off})"),
    row(Ldx(Size::H), 0x69, "ldxh", "r{dst} = *(u16 *)(r{src} {off})"),
    row(Ldx(Size::W), 0x61, "ldxw", "r{dst} = *(u32 *)(r{src} {off})"),
    row(Ldx(Size::DW), 0x79, "ldxdw", "r{dst} = *(u64 *)(r{src} {off})"),
    // ST: `*(u32 *)(r10 - 4) = 0`
    row(St(Size::B), 0x72, "stb", "*(u8 *)(r{dst} {off}) = {imm}").unknown_to_llvm14(),
    row(St(Size::H), 0x6a, "sth", "*(u16 *)(r{dst} {off}) = {imm}").unknown_to_llvm14(),
    row(St(Size::W), 0x62, "stw", "*(u32 *)(r{dst} {off}) = {imm}").unknown_to_llvm14(),
    row(St(Size::DW), 0x7a, "stdw", "*(u64 *)(r{dst} {off}) = {imm}").unknown_to_llvm14(),
    // STX: `*(u64 *)(r10 - 8) = r1`
    row(Stx(Size::B), 0x73, "stxb", "*(u8 *)(r{dst} {off}) = r{src}"),
    row(Stx(Size::H), 0x6b, "stxh", "*(u16 *)(r{dst} {off}) = r{src}"),
    row(Stx(Size::W), 0x63, "stxw", "*(u32 *)(r{dst} {off}) = r{src}"),
    row(Stx(Size::DW), 0x7b, "stxdw", "*(u64 *)(r{dst} {off}) = r{src}"),
    // atomic add: BPF_ATOMIC with imm = BPF_ADD (no fetch)
    row(AtomicAdd(AtomicSize::W), 0xc3, "xaddw", "lock *(u32 *)(r{dst} {off}) += r{src}").keyed(Key::Imm(0)),
    row(AtomicAdd(AtomicSize::DW), 0xdb, "xadddw", "lock *(u64 *)(r{dst} {off}) += r{src}").keyed(Key::Imm(0)),
    // subprograms: a BPF-to-BPF call and the address of a callback
    row(Op::CallLocal, 0x85, "call_local", "call {imm}").keyed(Key::Src(BPF_PSEUDO_CALL)),
    row(Op::LdFunc, 0x18, "ld_func", "ld_pseudo\tr{dst}, 4, {imm}").keyed(Key::Src(BPF_PSEUDO_FUNC)),
];

// Row i holds the op numbered i, so `Op::info` can index the table directly.
const _: () = {
    let mut i = 0;
    while i < OPCODES.len() {
        assert!(OPCODES[i].op.index() == i, "OPCODES is out of Op::index order");
        i += 1;
    }
};

/// One row of the helper table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperInfo {
    pub helper: Helper,
    /// The id `call` carries in its immediate.
    pub id: u32,
    /// The C name, `bpf_` included.
    pub name: &'static str,
    /// Arguments, passed in R1..R5.
    pub args: u8,
}

/// Declares [`Helper`] and [`HELPERS`] from one list, so that row i of the
/// table always describes the variant with discriminant i.
macro_rules! helper_table {
    ($($variant:ident = $id:literal, $name:literal, $args:literal;)*) => {
        /// The kernel helpers l7c calls.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Helper {
            $($variant,)*
        }

        /// The helpers l7c uses, in [`Helper`] order, with their ids in
        /// `enum bpf_func_id` (`___BPF_FUNC_MAPPER` in
        /// `include/uapi/linux/bpf.h`; checked against the 6.1 header).
        pub const HELPERS: &[HelperInfo] = &[
            $(HelperInfo { helper: Helper::$variant, id: $id, name: $name, args: $args },)*
        ];
    };
}

// `msg_push_data` (90) and `msg_pop_data` (91) are used only to make a
// denied message into its answer (language.md §6), at offsets that never
// split an element (codegen/answer.rs); their history is a list of
// memory-safety fixes (shared/spec/kernel.md).
helper_table! {
    MapLookupElem = 1, "bpf_map_lookup_elem", 2;
    MapUpdateElem = 2, "bpf_map_update_elem", 4;
    MapDeleteElem = 3, "bpf_map_delete_elem", 2;
    KtimeGetNs = 5, "bpf_ktime_get_ns", 0;
    GetCurrentPidTgid = 14, "bpf_get_current_pid_tgid", 0;
    SkbLoadBytes = 26, "bpf_skb_load_bytes", 4;
    SockMapUpdate = 53, "bpf_sock_map_update", 4;
    SockOpsCbFlagsSet = 59, "bpf_sock_ops_cb_flags_set", 2;
    MsgRedirectMap = 60, "bpf_msg_redirect_map", 4;
    MsgApplyBytes = 61, "bpf_msg_apply_bytes", 2;
    MsgCorkBytes = 62, "bpf_msg_cork_bytes", 2;
    MsgPullData = 63, "bpf_msg_pull_data", 4;
    SockHashUpdate = 70, "bpf_sock_hash_update", 4;
    MsgRedirectHash = 71, "bpf_msg_redirect_hash", 4;
    GetCurrentCgroupId = 80, "bpf_get_current_cgroup_id", 0;
    MsgPushData = 90, "bpf_msg_push_data", 4;
    MsgPopData = 91, "bpf_msg_pop_data", 4;
    SkStorageGet = 107, "bpf_sk_storage_get", 4;
    SkStorageDelete = 108, "bpf_sk_storage_delete", 2;
    RingbufOutput = 130, "bpf_ringbuf_output", 4;
    RingbufReserve = 131, "bpf_ringbuf_reserve", 3;
    RingbufSubmit = 132, "bpf_ringbuf_submit", 2;
    RingbufDiscard = 133, "bpf_ringbuf_discard", 2;
    Loop = 181, "bpf_loop", 4;
}

impl Helper {
    /// The helper's row of the helper table.
    pub fn info(self) -> &'static HelperInfo {
        // Cannot fail: `helper_table!` writes one row per variant, in
        // discriminant order.
        &HELPERS[self as usize]
    }

    /// The kernel's id for the helper.
    pub fn id(self) -> u32 {
        self.info().id
    }

    /// The C name, e.g. `bpf_msg_cork_bytes`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The helper with this kernel id, if l7c uses it.
    pub fn from_id(id: u32) -> Option<Helper> {
        HELPERS.iter().find(|row| row.id == id).map(|row| row.helper)
    }

    /// Every helper, in table order.
    pub fn all() -> impl Iterator<Item = Helper> {
        HELPERS.iter().map(|row| row.helper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::insn::{AluOp, JmpCond, SrcKind, Width};
    use std::collections::HashSet;

    /// Every op, built from its parts rather than read from the table.
    fn every_op() -> Vec<Op> {
        let widths = [X64, X32];
        let kinds = [Imm, Reg];
        let mut ops = Vec::new();
        for w in widths {
            for op in AluOp::ALL {
                for k in kinds {
                    ops.push(Op::Alu(w, op, k));
                }
            }
        }
        ops.extend(widths.map(Op::Neg));
        ops.extend(Endian::ALL.map(Op::Endian));
        ops.push(Ja);
        for w in widths {
            for c in JmpCond::ALL {
                for k in kinds {
                    ops.push(Op::Jmp(w, c, k));
                }
            }
        }
        ops.extend([Call, Exit, LdImm64, LdMap]);
        ops.extend(Size::ALL.map(Ldx));
        ops.extend(Size::ALL.map(St));
        ops.extend(Size::ALL.map(Stx));
        ops.extend([AtomicAdd(AtomicSize::W), AtomicAdd(AtomicSize::DW)]);
        ops.extend([Op::CallLocal, Op::LdFunc]);
        ops
    }

    /// The opcode byte from the kernel's bit layout (include/uapi/linux/bpf.h,
    /// bpf_common.h): class in bits 0-2, source or size and mode above.
    fn kernel_code(op: Op) -> u8 {
        const LD: u8 = 0x00;
        const LDX: u8 = 0x01;
        const ST: u8 = 0x02;
        const STX: u8 = 0x03;
        const ALU: u8 = 0x04;
        const JMP: u8 = 0x05;
        const JMP32: u8 = 0x06;
        const ALU64: u8 = 0x07;
        const X: u8 = 0x08;
        const MEM: u8 = 0x60;
        const IMM: u8 = 0x00;
        const ATOMIC: u8 = 0xc0;
        let size = |s: Size| match s {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        };
        let src = |k: SrcKind| if k == SrcKind::Reg { X } else { 0 };
        let alu_class = |w: Width| if w == X64 { ALU64 } else { ALU };
        match op {
            Op::Alu(w, alu, k) => {
                let bits = match alu {
                    AluOp::Add => 0x00,
                    AluOp::Sub => 0x10,
                    AluOp::Mul => 0x20,
                    AluOp::Div => 0x30,
                    AluOp::Or => 0x40,
                    AluOp::And => 0x50,
                    AluOp::Lsh => 0x60,
                    AluOp::Rsh => 0x70,
                    AluOp::Mod => 0x90,
                    AluOp::Xor => 0xa0,
                    AluOp::Mov => 0xb0,
                    AluOp::Arsh => 0xc0,
                };
                alu_class(w) | bits | src(k)
            }
            Op::Neg(w) => alu_class(w) | 0x80,
            Op::Endian(e) => {
                let to_be = matches!(e, Endian::Be16 | Endian::Be32 | Endian::Be64);
                ALU | 0xd0 | if to_be { X } else { 0 }
            }
            Op::Ja => JMP,
            Op::Jmp(w, c, k) => {
                let bits = match c {
                    JmpCond::Eq => 0x10,
                    JmpCond::Gt => 0x20,
                    JmpCond::Ge => 0x30,
                    JmpCond::Set => 0x40,
                    JmpCond::Ne => 0x50,
                    JmpCond::Sgt => 0x60,
                    JmpCond::Sge => 0x70,
                    JmpCond::Lt => 0xa0,
                    JmpCond::Le => 0xb0,
                    JmpCond::Slt => 0xc0,
                    JmpCond::Sle => 0xd0,
                };
                (if w == X64 { JMP } else { JMP32 }) | bits | src(k)
            }
            Op::Call | Op::CallLocal => JMP | 0x80,
            Op::Exit => JMP | 0x90,
            Op::LdImm64 | Op::LdMap | Op::LdFunc => LD | IMM | size(Size::DW),
            Op::Ldx(s) => LDX | MEM | size(s),
            Op::St(s) => ST | MEM | size(s),
            Op::Stx(s) => STX | MEM | size(s),
            Op::AtomicAdd(AtomicSize::W) => STX | ATOMIC | size(Size::W),
            Op::AtomicAdd(AtomicSize::DW) => STX | ATOMIC | size(Size::DW),
        }
    }

    #[test]
    fn every_op_has_exactly_its_row() {
        let ops = every_op();
        assert_eq!(ops.len(), OP_COUNT);
        let indexes: HashSet<usize> = ops.iter().map(|op| op.index()).collect();
        assert_eq!(indexes.len(), OP_COUNT, "Op::index is not injective");
        for op in ops {
            assert!(op.index() < OP_COUNT);
            assert_eq!(op.info().op, op);
        }
    }

    #[test]
    fn opcode_bytes_follow_the_kernel_layout() {
        for row in &OPCODES {
            assert_eq!(row.code, kernel_code(row.op), "{} ({:?})", row.mnemonic, row.op);
        }
    }

    #[test]
    fn rows_are_told_apart_by_code_and_key() {
        let mut seen = HashSet::new();
        for row in &OPCODES {
            let key = match row.key {
                Key::None => (0u8, 0i32),
                Key::Src(src) => (1, i32::from(src)),
                Key::Imm(imm) => (2, imm),
            };
            assert!(seen.insert((row.code, key)), "two rows for {:#04x} {:?}", row.code, row.key);
        }
        // A keyed opcode byte is keyed in every row that uses it.
        for row in &OPCODES {
            let keyed = OPCODES.iter().filter(|r| r.code == row.code).all(|r| r.key != Key::None);
            let shared = OPCODES.iter().filter(|r| r.code == row.code).count() > 1;
            assert!(!shared || keyed, "{:#04x} is shared but not keyed", row.code);
        }
    }

    #[test]
    fn llvm14_gaps_are_st_mod_and_jset() {
        for row in &OPCODES {
            let missing = matches!(row.op, Op::St(_) | Op::Alu(_, AluOp::Mod, _) | Op::Jmp(_, JmpCond::Set, _));
            assert_eq!(row.llvm14, !missing, "{}", row.mnemonic);
        }
    }

    #[test]
    fn helper_table_is_consistent() {
        let ids: HashSet<u32> = HELPERS.iter().map(|h| h.id).collect();
        assert_eq!(ids.len(), HELPERS.len(), "duplicate helper id");
        for (i, row) in HELPERS.iter().enumerate() {
            assert_eq!(row.helper as usize, i);
            assert_eq!(row.helper.info(), row);
            assert_eq!(Helper::from_id(row.id), Some(row.helper));
            assert!(row.args <= 5, "{} takes more than R1..R5", row.name);
            assert!(row.name.starts_with("bpf_"));
        }
        assert_eq!(Helper::from_id(999), None);
        // The ids kernel.md and the 6.1 uapi header give.
        let expected = [
            (Helper::MsgRedirectMap, 60),
            (Helper::MsgApplyBytes, 61),
            (Helper::MsgCorkBytes, 62),
            (Helper::MsgPullData, 63),
            (Helper::MsgRedirectHash, 71),
            (Helper::SkStorageGet, 107),
            (Helper::Loop, 181),
        ];
        for (helper, id) in expected {
            assert_eq!(helper.id(), id, "{helper:?}");
        }
    }
}
