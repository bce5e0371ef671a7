//! The instruction builder: one method per instruction, symbolic labels,
//! map references and comments, resolved into a [`Program`] by
//! [`Asm::finish`].
//!
//! Invariants of a [`Program`] (it can only be built here or by decoding):
//! every jump offset lands on the first slot of an instruction inside the
//! program; `relocations` lists exactly the map loads, in order; labels and
//! comments refer to existing instructions.

use std::collections::BTreeMap;
use std::fmt;

use super::insn::{AluOp, AtomicSize, DecodeError, Endian, Insn, JmpCond, Operand, Reg, Size, Width, SLOT_BYTES};
use super::table::Helper;

/// A jump target, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

impl Label {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Label {
    fn from(name: &str) -> Self {
        Label(name.to_owned())
    }
}

impl From<String> for Label {
    fn from(name: String) -> Self {
        Label(name)
    }
}

impl From<&String> for Label {
    fn from(name: &String) -> Self {
        Label(name.clone())
    }
}

impl From<&Label> for Label {
    fn from(label: &Label) -> Self {
        label.clone()
    }
}

/// A reference from a map load to a map, by name: the ELF writer turns it
/// into an `R_BPF_64_64` relocation against the map's symbol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Relocation {
    /// Slot of the `LD_IMM64` (its first half) within the program.
    pub slot: usize,
    /// The map's name.
    pub map: String,
}

impl Relocation {
    /// Byte offset of the instruction within the program.
    pub fn byte_offset(&self) -> u64 {
        // usize → u64 never truncates on the targets Rust supports.
        (self.slot * SLOT_BYTES) as u64
    }
}

/// Text attached to a program for people reading the `asm` listing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Comment {
    /// The instruction the comment belongs to.
    pub insn: usize,
    pub text: String,
    pub placement: Placement,
}

/// Where a comment is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// On the instruction's line, after `;`.
    Trailing,
    /// On a line of its own before the instruction (and before its labels
    /// defined later).
    Before,
}

/// A label definition: the name and the instruction it points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelDef {
    pub name: Label,
    /// Index of the instruction (not the slot) the label points at.
    pub insn: usize,
}

/// Why the builder's instructions do not make a program.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AsmError {
    #[error("label `{label}` is used by instruction {insn} but never defined")]
    UndefinedLabel { label: Label, insn: usize },
    #[error("label `{label}` is defined twice (at instructions {first} and {second})")]
    DuplicateLabel { label: Label, first: usize, second: usize },
    #[error("label `{label}` is past the last instruction, so instruction {insn} cannot jump to it")]
    LabelPastEnd { label: Label, insn: usize },
    #[error("the jump at instruction {insn} to `{label}` is {offset} slots away; a jump reaches at most 32767 slots either way")]
    JumpOutOfRange { label: Label, insn: usize, offset: i64 },
    #[error("the jump at instruction {insn} lands outside the program (offset {offset})")]
    JumpOutsideProgram { insn: usize, offset: i16 },
    #[error("the jump at instruction {insn} lands inside the two-slot instruction at slot {slot}")]
    JumpIntoLdImm64 { insn: usize, slot: usize },
    #[error("instruction {insn} refers to `{label}`, which is a label but not a function")]
    NotAFunction { label: Label, insn: usize },
    #[error("function `{label}` is defined at instruction 0, where the main program starts")]
    FunctionAtStart { label: Label },
    #[error("the jump at instruction {insn} to `{label}` leaves its function")]
    JumpAcrossFunctions { label: Label, insn: usize },
    #[error("the subprogram reference at instruction {insn} does not land on a function start (offset {offset})")]
    BadFunctionOffset { insn: usize, offset: i32 },
    #[error("map name `{map}` is empty or contains a NUL byte")]
    BadMapName { map: String },
}

/// A jump whose offset is still a label.
#[derive(Clone, Debug)]
struct Fixup {
    insn: usize,
    label: Label,
    /// A subprogram reference (`call_local`, `ld_func`) rather than a jump.
    func: bool,
}

/// The instruction builder.
///
/// ```
/// use l7c_bpf::bpf::{Asm, Helper, Size, R0, R1, R2, R6};
///
/// let mut a = Asm::new();
/// a.mov64(R6, R1).comment("keep the context");
/// a.ldx(Size::W, R2, R6, 68).comment("msg->size");
/// a.jeq(R2, 0, "pass");
/// a.mov64(R1, R6);
/// a.call(Helper::MsgApplyBytes);
/// a.label("pass");
/// a.mov64(R0, 1);
/// a.exit();
/// let program = a.finish()?;
/// assert_eq!(program.insns().len(), 7);
/// # Ok::<(), l7c_bpf::bpf::AsmError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    fixups: Vec<Fixup>,
    labels: BTreeMap<Label, usize>,
    label_order: Vec<LabelDef>,
    comments: Vec<Comment>,
    errors: Vec<AsmError>,
    fresh: u32,
    functions: Vec<LabelDef>,
}

macro_rules! alu_methods {
    ($($op:ident => $name64:ident, $name32:ident;)*) => {$(
        #[doc = concat!("`dst ", stringify!($op), "= src` on 64 bits (`r` registers); `src` is a register or an `i32`.")]
        pub fn $name64(&mut self, dst: Reg, src: impl Into<Operand>) -> &mut Self {
            self.push(Insn::Alu { width: Width::X64, op: AluOp::$op, dst, src: src.into() })
        }

        #[doc = concat!("`dst ", stringify!($op), "= src` on 32 bits (`w` registers; the upper half of `dst` is zeroed).")]
        pub fn $name32(&mut self, dst: Reg, src: impl Into<Operand>) -> &mut Self {
            self.push(Insn::Alu { width: Width::X32, op: AluOp::$op, dst, src: src.into() })
        }
    )*};
}

macro_rules! jmp_methods {
    ($($cond:ident => $name64:ident, $name32:ident;)*) => {$(
        #[doc = concat!("`if dst ", stringify!($cond), " src goto target`, comparing 64 bits.")]
        pub fn $name64(&mut self, dst: Reg, src: impl Into<Operand>, target: impl Into<Label>) -> &mut Self {
            self.jump(Insn::Jmp { width: Width::X64, cond: JmpCond::$cond, dst, src: src.into(), off: 0 }, target)
        }

        #[doc = concat!("`if dst ", stringify!($cond), " src goto target`, comparing the low 32 bits.")]
        pub fn $name32(&mut self, dst: Reg, src: impl Into<Operand>, target: impl Into<Label>) -> &mut Self {
            self.jump(Insn::Jmp { width: Width::X32, cond: JmpCond::$cond, dst, src: src.into(), off: 0 }, target)
        }
    )*};
}

macro_rules! sized_methods {
    ($($size:ident => $ldx:ident, $st:ident, $stx:ident;)*) => {$(
        #[doc = concat!("`dst = *(", stringify!($size), " *)(src + off)`.")]
        pub fn $ldx(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
            self.ldx(Size::$size, dst, src, off)
        }

        #[doc = concat!("`*(", stringify!($size), " *)(dst + off) = imm`.")]
        pub fn $st(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
            self.st(Size::$size, dst, off, imm)
        }

        #[doc = concat!("`*(", stringify!($size), " *)(dst + off) = src`.")]
        pub fn $stx(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
            self.stx(Size::$size, dst, off, src)
        }
    )*};
}

impl Asm {
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Instructions emitted so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Slots emitted so far (what the kernel counts as program length).
    pub fn slot_len(&self) -> usize {
        self.insns.iter().map(Insn::slots).sum()
    }

    /// Appends an instruction as it is. Jumps pushed this way keep their
    /// numeric offset; prefer the jump methods, which take labels.
    pub fn push(&mut self, insn: Insn) -> &mut Self {
        self.insns.push(insn);
        self
    }

    fn jump(&mut self, insn: Insn, target: impl Into<Label>) -> &mut Self {
        self.fixups.push(Fixup { insn: self.insns.len(), label: target.into(), func: false });
        self.push(insn)
    }

    /// Starts a subprogram named `name` at the next instruction emitted
    /// (and defines `name` as a label there). Everything before the first
    /// function is the main program; a function runs until the next one.
    /// Jumps stay inside their function; functions are reached with
    /// [`Asm::call_local`] or passed as callbacks with [`Asm::ld_func`].
    pub fn function(&mut self, name: impl Into<Label>) -> &mut Self {
        let name = name.into();
        let here = self.insns.len();
        if here == 0 {
            self.errors.push(AsmError::FunctionAtStart { label: name.clone() });
        }
        self.functions.push(LabelDef { name: name.clone(), insn: here });
        self.label(name)
    }

    /// `call function`: a BPF-to-BPF call (`src_reg = BPF_PSEUDO_CALL`)
    /// of a function defined with [`Asm::function`]. Arguments in R1..R5,
    /// result in R0; R1..R5 are clobbered, R6..R9 and the caller's stack
    /// kept.
    pub fn call_local(&mut self, function: impl Into<Label>) -> &mut Self {
        self.fixups.push(Fixup { insn: self.insns.len(), label: function.into(), func: true });
        self.push(Insn::CallLocal { off: 0 })
    }

    /// `dst = &function` (two slots, `src_reg = BPF_PSEUDO_FUNC`): a
    /// callback argument, e.g. `bpf_loop`'s R2.
    pub fn ld_func(&mut self, dst: Reg, function: impl Into<Label>) -> &mut Self {
        self.fixups.push(Fixup { insn: self.insns.len(), label: function.into(), func: true });
        self.push(Insn::LdFunc { dst, off: 0 })
    }

    /// Defines `name` at the next instruction emitted.
    pub fn label(&mut self, name: impl Into<Label>) -> &mut Self {
        let name = name.into();
        let here = self.insns.len();
        match self.labels.get(&name) {
            Some(&first) => {
                self.errors.push(AsmError::DuplicateLabel { label: name, first, second: here });
            }
            None => {
                self.labels.insert(name.clone(), here);
                self.label_order.push(LabelDef { name, insn: here });
            }
        }
        self
    }

    /// Whether an instruction emitted so far jumps to (or calls) `label`:
    /// code generators emit a block only when something reaches it (the
    /// kernel's verifier refuses unreachable instructions).
    pub fn is_referenced(&self, label: impl Into<Label>) -> bool {
        let label = label.into();
        self.fixups.iter().any(|fixup| fixup.label == label)
    }

    /// A label name not used before by this builder: `prefix.N`. Define it
    /// with [`Asm::label`] where it belongs.
    pub fn fresh_label(&mut self, prefix: &str) -> Label {
        loop {
            self.fresh += 1;
            let label = Label(format!("{prefix}.{}", self.fresh));
            if !self.labels.contains_key(&label) {
                return label;
            }
        }
    }

    /// Attaches `text` to the last instruction emitted, printed after it in
    /// the listing. Before any instruction, it becomes a line of its own
    /// before the first one.
    pub fn comment(&mut self, text: impl Into<String>) -> &mut Self {
        let (insn, placement) = match self.insns.len().checked_sub(1) {
            Some(last) => (last, Placement::Trailing),
            None => (0, Placement::Before),
        };
        self.comments.push(Comment { insn, text: text.into(), placement });
        self
    }

    /// A comment on a line of its own before the next instruction emitted
    /// (a heading such as `rule list-users`).
    pub fn note(&mut self, text: impl Into<String>) -> &mut Self {
        self.comments.push(Comment { insn: self.insns.len(), text: text.into(), placement: Placement::Before });
        self
    }

    alu_methods! {
        Add => add64, add32;
        Sub => sub64, sub32;
        Mul => mul64, mul32;
        Div => div64, div32;
        Or => or64, or32;
        And => and64, and32;
        Lsh => lsh64, lsh32;
        Rsh => rsh64, rsh32;
        Mod => mod64, mod32;
        Xor => xor64, xor32;
        Mov => mov64, mov32;
        Arsh => arsh64, arsh32;
    }

    /// `dst = -dst` on 64 bits.
    pub fn neg64(&mut self, dst: Reg) -> &mut Self {
        self.push(Insn::Neg { width: Width::X64, dst })
    }

    /// `dst = -dst` on 32 bits.
    pub fn neg32(&mut self, dst: Reg) -> &mut Self {
        self.push(Insn::Neg { width: Width::X32, dst })
    }

    /// Converts the low 16/32/64 bits of `dst` between host and big- or
    /// little-endian order (`dst = be16 dst`).
    pub fn endian(&mut self, conv: Endian, dst: Reg) -> &mut Self {
        self.push(Insn::Endian { conv, dst })
    }

    /// `dst = be16 dst`: network to host order for a 16-bit value.
    pub fn be16(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Be16, dst)
    }

    pub fn be32(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Be32, dst)
    }

    pub fn be64(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Be64, dst)
    }

    pub fn le16(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Le16, dst)
    }

    pub fn le32(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Le32, dst)
    }

    pub fn le64(&mut self, dst: Reg) -> &mut Self {
        self.endian(Endian::Le64, dst)
    }

    /// `goto target`.
    pub fn ja(&mut self, target: impl Into<Label>) -> &mut Self {
        self.jump(Insn::Ja { off: 0 }, target)
    }

    jmp_methods! {
        Eq => jeq, jeq32;
        Gt => jgt, jgt32;
        Ge => jge, jge32;
        Set => jset, jset32;
        Ne => jne, jne32;
        Sgt => jsgt, jsgt32;
        Sge => jsge, jsge32;
        Lt => jlt, jlt32;
        Le => jle, jle32;
        Slt => jslt, jslt32;
        Sle => jsle, jsle32;
    }

    /// A conditional jump with the condition as a value.
    pub fn jmp(
        &mut self,
        width: Width,
        cond: JmpCond,
        dst: Reg,
        src: impl Into<Operand>,
        target: impl Into<Label>,
    ) -> &mut Self {
        self.jump(Insn::Jmp { width, cond, dst, src: src.into(), off: 0 }, target)
    }

    /// Calls a helper: arguments in R1..R5, result in R0; R1..R5 are
    /// clobbered.
    pub fn call(&mut self, helper: Helper) -> &mut Self {
        self.push(Insn::Call { helper })
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(Insn::Exit)
    }

    /// `dst = imm ll`: a 64-bit constant (two slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: i64) -> &mut Self {
        self.push(Insn::LdImm64 { dst, imm })
    }

    /// `dst = &map` (two slots): the loader fills in the map, guided by a
    /// relocation against the map's symbol.
    pub fn ld_map(&mut self, dst: Reg, map: &str) -> &mut Self {
        if map.is_empty() || map.contains('\0') {
            self.errors.push(AsmError::BadMapName { map: map.to_owned() });
        }
        self.push(Insn::LdMap { dst, map: map.to_owned() })
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(Insn::Ldx { size, dst, src, off })
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(Insn::St { size, dst, off, imm })
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::Stx { size, dst, src, off })
    }

    sized_methods! {
        B => ldxb, stb, stxb;
        H => ldxh, sth, stxh;
        W => ldxw, stw, stxw;
        DW => ldxdw, stdw, stxdw;
    }

    /// `lock *(u32 *)(dst + off) += src`.
    pub fn atomic_add32(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::AtomicAdd { size: AtomicSize::W, dst, src, off })
    }

    /// `lock *(u64 *)(dst + off) += src`.
    pub fn atomic_add64(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(Insn::AtomicAdd { size: AtomicSize::DW, dst, src, off })
    }

    /// Resolves labels into jump offsets and returns the program, or the
    /// first error found.
    pub fn finish(self) -> Result<Program, AsmError> {
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let mut insns = self.insns;
        let starts = slot_starts(&insns);
        for fixup in &self.fixups {
            let target = *self
                .labels
                .get(&fixup.label)
                .ok_or_else(|| AsmError::UndefinedLabel { label: fixup.label.clone(), insn: fixup.insn })?;
            // A label after the last instruction is no place to jump to.
            let target_slot = match starts.get(target) {
                Some(&slot) if target < insns.len() => slot,
                _ => return Err(AsmError::LabelPastEnd { label: fixup.label.clone(), insn: fixup.insn }),
            };
            // Cannot be missing: fixups are recorded at existing instructions.
            let Some(&jump_slot) = starts.get(fixup.insn) else { continue };
            // Slot indexes fit in i64: a Vec holds fewer than i64::MAX items.
            let offset = target_slot as i64 - jump_slot as i64 - 1;
            if fixup.func {
                if !self.functions.iter().any(|f| f.insn == target) {
                    return Err(AsmError::NotAFunction { label: fixup.label.clone(), insn: fixup.insn });
                }
                if let Some(insn) = insns.get_mut(fixup.insn) {
                    // Slot counts of a program fit in i32 (the kernel caps
                    // programs at 1M instructions); beyond, the kernel refuses.
                    insn.set_func_offset(offset as i32);
                }
                continue;
            }
            let function_of = |insn: usize| self.functions.iter().filter(|f| f.insn <= insn).count();
            if function_of(target) != function_of(fixup.insn) {
                return Err(AsmError::JumpAcrossFunctions { label: fixup.label.clone(), insn: fixup.insn });
            }
            let off = i16::try_from(offset).map_err(|_| AsmError::JumpOutOfRange {
                label: fixup.label.clone(),
                insn: fixup.insn,
                offset,
            })?;
            if let Some(insn) = insns.get_mut(fixup.insn) {
                insn.set_jump_offset(off);
            }
        }
        let mut program = Program::assemble(insns, self.label_order, self.comments);
        program.check_jumps()?;
        // Explicit names win over the `sub_N` names of derived starts.
        for function in self.functions {
            if let Some(existing) = program.functions.iter_mut().find(|f| f.insn == function.insn) {
                existing.name = function.name;
            } else {
                program.functions.push(function);
            }
        }
        program.functions.sort_by_key(|f| f.insn);
        Ok(program)
    }
}

/// The slot where each instruction starts, plus one entry for the end.
fn slot_starts(insns: &[Insn]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(insns.len() + 1);
    let mut slot = 0;
    for insn in insns {
        starts.push(slot);
        slot += insn.slots();
    }
    starts.push(slot);
    starts
}

/// A finished program: instructions with resolved jumps, the relocations of
/// its map loads, its labels and comments.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Program {
    insns: Vec<Insn>,
    relocations: Vec<Relocation>,
    labels: Vec<LabelDef>,
    comments: Vec<Comment>,
    functions: Vec<LabelDef>,
}

impl Program {
    fn assemble(insns: Vec<Insn>, labels: Vec<LabelDef>, comments: Vec<Comment>) -> Program {
        let mut relocations = Vec::new();
        let mut slot = 0;
        let starts = slot_starts(&insns);
        let mut functions: Vec<LabelDef> = Vec::new();
        for insn in &insns {
            if let Insn::LdMap { map, .. } = insn {
                relocations.push(Relocation { slot, map: map.clone() });
            }
            if let Some(off) = insn.func_offset() {
                let target = slot as i64 + 1 + i64::from(off);
                if let Some(target_insn) = starts.iter().position(|&s| s as i64 == target) {
                    if target_insn > 0 && target_insn < insns.len() && !functions.iter().any(|f| f.insn == target_insn) {
                        functions.push(LabelDef { name: Label(format!("sub_{target}")), insn: target_insn });
                    }
                }
            }
            slot += insn.slots();
        }
        functions.sort_by_key(|f| f.insn);
        Program { insns, relocations, labels, comments, functions }
    }

    /// The subprograms after the main program, by first instruction, in
    /// order: those defined with [`Asm::function`] under their names, and
    /// any other target of a `call_local`/`ld_func` as `sub_SLOT`.
    pub fn functions(&self) -> &[LabelDef] {
        &self.functions
    }

    /// Instruction ranges of the main program (first) and of each function.
    pub fn function_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let mut bounds: Vec<usize> = vec![0];
        bounds.extend(self.functions.iter().map(|f| f.insn));
        bounds.push(self.insns.len());
        bounds.windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// A program from instructions whose jump offsets are already numbers
    /// (no labels, no comments). Fails when a jump leaves the program.
    pub fn from_insns(insns: Vec<Insn>) -> Result<Program, AsmError> {
        let program = Program::assemble(insns, Vec::new(), Vec::new());
        program.check_jumps()?;
        Ok(program)
    }

    /// Every jump must land on the first slot of an instruction.
    fn check_jumps(&self) -> Result<(), AsmError> {
        let starts = slot_starts(&self.insns);
        let total = starts.last().copied().unwrap_or(0);
        for (insn, (jump, &slot)) in self.insns.iter().zip(&starts).enumerate() {
            if let Some(off) = jump.func_offset() {
                let target = slot as i64 + 1 + i64::from(off);
                let lands = target > 0 && (target as usize) < total && starts.binary_search(&(target as usize)).is_ok();
                if !lands {
                    return Err(AsmError::BadFunctionOffset { insn, offset: off });
                }
                continue;
            }
            let Some(off) = jump.jump_offset() else { continue };
            // Slot indexes fit in i64: a Vec holds fewer than i64::MAX items.
            let target = slot as i64 + 1 + i64::from(off);
            if target < 0 || target >= total as i64 {
                return Err(AsmError::JumpOutsideProgram { insn, offset: off });
            }
            let target = target as usize;
            if starts.binary_search(&target).is_err() {
                return Err(AsmError::JumpIntoLdImm64 { insn, slot: target.saturating_sub(1) });
            }
        }
        Ok(())
    }

    /// The instructions, in order.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// One relocation per map load, in order.
    pub fn relocations(&self) -> &[Relocation] {
        &self.relocations
    }

    /// Label definitions, in the order they were defined.
    pub fn labels(&self) -> &[LabelDef] {
        &self.labels
    }

    /// Comments, in the order they were attached.
    pub fn comments(&self) -> &[Comment] {
        &self.comments
    }

    /// Program length in slots: what the kernel counts.
    pub fn slot_len(&self) -> usize {
        self.insns.iter().map(Insn::slots).sum()
    }

    /// Program length in bytes.
    pub fn byte_len(&self) -> usize {
        self.slot_len() * SLOT_BYTES
    }

    /// The slot where each instruction starts (one entry per instruction).
    pub fn slot_of_each(&self) -> Vec<usize> {
        let mut starts = slot_starts(&self.insns);
        starts.pop();
        starts
    }

    /// The names of the maps the program loads, each once, sorted.
    pub fn maps(&self) -> Vec<&str> {
        let mut maps: Vec<&str> = self.relocations.iter().map(|r| r.map.as_str()).collect();
        maps.sort_unstable();
        maps.dedup();
        maps
    }

    /// The program's bytes, as the kernel reads them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        for insn in &self.insns {
            insn.encode(&mut out);
        }
        out
    }

    /// Reads back what [`Program::encode`] wrote. `relocations` name the map
    /// of each map load (the ELF object's relocations for the section).
    pub fn decode(bytes: &[u8], relocations: &[Relocation]) -> Result<Program, DecodeError> {
        let by_slot: BTreeMap<usize, &str> = relocations.iter().map(|r| (r.slot, r.map.as_str())).collect();
        let mut insns = Vec::new();
        let mut slot = 0;
        let mut used = 0;
        while slot * SLOT_BYTES < bytes.len() {
            let rest = bytes.get(slot * SLOT_BYTES..).unwrap_or(&[]);
            let map = by_slot.get(&slot).copied();
            used += usize::from(map.is_some());
            let (insn, slots) = Insn::decode(rest, slot, map)?;
            insns.push(insn);
            slot += slots;
        }
        if used != by_slot.len() {
            let stray = by_slot.keys().find(|&&s| !slot_starts(&insns).contains(&s)).copied().unwrap_or(0);
            return Err(DecodeError::MisplacedRelocation { offset: (stray * SLOT_BYTES) as u64 });
        }
        let program = Program::assemble(insns, Vec::new(), Vec::new());
        program.check_jumps().map_err(|error| DecodeError::BadJump { reason: error.to_string() })?;
        Ok(program)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{R0, R1, R2};

    #[test]
    fn forward_and_backward_labels() {
        let mut a = Asm::new();
        a.label("top");
        a.mov64(R0, 0);
        a.jeq(R1, 0, "out"); // +2: skips the ld_imm64's two slots
        a.ld_imm64(R2, 1);
        a.label("out");
        a.jne(R1, 1, "top"); // back over 5 slots
        a.exit();
        let program = a.finish().unwrap();
        assert_eq!(program.insns()[1].jump_offset(), Some(2));
        assert_eq!(program.insns()[3].jump_offset(), Some(-5));
        assert_eq!(program.slot_of_each(), [0, 1, 2, 4, 5]);
        let names: Vec<(&str, usize)> = program.labels().iter().map(|l| (l.name.as_str(), l.insn)).collect();
        assert_eq!(names, [("top", 0), ("out", 3)]);
    }

    #[test]
    fn label_errors_are_typed() {
        let mut a = Asm::new();
        a.ja("nowhere").exit();
        assert_eq!(a.finish(), Err(AsmError::UndefinedLabel { label: "nowhere".into(), insn: 0 }));

        let mut a = Asm::new();
        a.label("x").exit().label("x").exit();
        assert_eq!(a.finish(), Err(AsmError::DuplicateLabel { label: "x".into(), first: 0, second: 1 }));

        let mut a = Asm::new();
        a.ja("end").exit().label("end");
        assert_eq!(a.finish(), Err(AsmError::LabelPastEnd { label: "end".into(), insn: 0 }));

        let mut a = Asm::new();
        a.ja("far");
        for _ in 0..32768 {
            a.mov64(R0, 0);
        }
        a.label("far").exit();
        assert_eq!(a.finish(), Err(AsmError::JumpOutOfRange { label: "far".into(), insn: 0, offset: 32768 }));

        let mut a = Asm::new();
        a.ja("far");
        for _ in 0..32767 {
            a.mov64(R0, 0);
        }
        a.label("far").exit();
        assert!(a.finish().is_ok(), "32767 slots is in range");
    }

    #[test]
    fn raw_jumps_must_land_on_instructions() {
        let outside = Program::from_insns(vec![Insn::Ja { off: 1 }, Insn::Exit]);
        assert_eq!(outside, Err(AsmError::JumpOutsideProgram { insn: 0, offset: 1 }));
        let middle = Program::from_insns(vec![Insn::Ja { off: 1 }, Insn::LdImm64 { dst: R0, imm: 0 }, Insn::Exit]);
        assert_eq!(middle, Err(AsmError::JumpIntoLdImm64 { insn: 0, slot: 1 }));
    }

    #[test]
    fn fresh_labels_do_not_collide() {
        let mut a = Asm::new();
        a.label("rule.1");
        let first = a.fresh_label("rule");
        let second = a.fresh_label("rule");
        assert_ne!(first, second);
        assert_ne!(first.as_str(), "rule.1");
    }

    #[test]
    fn map_loads_make_relocations() {
        let mut a = Asm::new();
        a.mov64(R0, 0).ld_map(R1, "sessions").ld_map(R2, "redirect").exit();
        let program = a.finish().unwrap();
        let relocations: Vec<(usize, u64, &str)> =
            program.relocations().iter().map(|r| (r.slot, r.byte_offset(), r.map.as_str())).collect();
        assert_eq!(relocations, [(1, 8, "sessions"), (3, 24, "redirect")]);
        assert_eq!(program.maps(), ["redirect", "sessions"]);

        let mut a = Asm::new();
        a.ld_map(R1, "").exit();
        assert!(matches!(a.finish(), Err(AsmError::BadMapName { .. })));
    }

    #[test]
    fn comments_attach_where_written() {
        let mut a = Asm::new();
        a.comment("before anything");
        a.note("heading");
        a.mov64(R0, 1).comment("allow");
        a.exit();
        let program = a.finish().unwrap();
        let comments: Vec<(usize, &str, Placement)> =
            program.comments().iter().map(|c| (c.insn, c.text.as_str(), c.placement)).collect();
        assert_eq!(
            comments,
            [
                (0, "before anything", Placement::Before),
                (0, "heading", Placement::Before),
                (0, "allow", Placement::Trailing)
            ]
        );
    }

    #[test]
    fn decode_rejects_stray_relocations() {
        let mut a = Asm::new();
        a.ld_imm64(R1, 5).exit();
        let bytes = a.finish().unwrap().encode();
        let stray = [Relocation { slot: 1, map: "m".into() }];
        assert!(matches!(Program::decode(&bytes, &stray), Err(DecodeError::MisplacedRelocation { offset: 8 })));
    }
}
