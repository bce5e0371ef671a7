//! Instructions as text, in LLVM's BPF syntax (what `llvm-objdump -d`
//! prints), and the annotated listing of `l7c compile --emit asm`.
//!
//! The text of each instruction comes from its row of the opcode table; this
//! module only fills in the placeholders. For the rows LLVM 14 cannot decode
//! (`OpInfo::llvm14 == false`) the text is what later LLVM releases print.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::asm::{Placement, Program};
use super::insn::{Fields, Insn};

/// The instruction in LLVM's BPF syntax, e.g. `r2 = *(u32 *)(r1 + 4)`.
pub fn text(insn: &Insn) -> String {
    render(insn.op().info().syntax, insn.fields())
}

/// What LLVM 14's `llvm-objdump -d` prints for the instruction: [`text`], or
/// `<unknown>` for the forms its disassembler lacks (`BPF_ST`, `mod`, `jset`).
pub fn llvm14_text(insn: &Insn) -> String {
    let info = insn.op().info();
    if info.llvm14 {
        render(info.syntax, insn.fields())
    } else {
        "<unknown>".to_owned()
    }
}

/// Fills a syntax template's placeholders from the instruction's fields.
fn render(syntax: &str, fields: Fields) -> String {
    let mut out = String::with_capacity(syntax.len() + 8);
    let mut rest = syntax;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let Some(close) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let (placeholder, tail) = after.split_at(close + 1);
        // Writing to a String cannot fail.
        let _ = match placeholder {
            "{dst}" => write!(out, "{}", fields.dst),
            "{src}" => write!(out, "{}", fields.src),
            "{imm}" => write!(out, "{}", fields.imm),
            "{off}" if fields.off < 0 => write!(out, "- {}", -i32::from(fields.off)),
            "{off}" => write!(out, "+ {}", fields.off),
            "{target}" if fields.off < 0 => write!(out, "{}", fields.off),
            "{target}" => write!(out, "+{}", fields.off),
            // Not reached by the table (a unit test renders every row); kept
            // visible rather than dropped if a row is ever mistyped.
            other => write!(out, "{other}"),
        };
        rest = tail;
    }
    out.push_str(rest);
    out
}

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text(self))
    }
}

impl Program {
    /// The program as text for people: one instruction per line as
    /// `llvm-objdump -d` prints it (slot number, tab, LLVM syntax), preceded
    /// by its notes (`; text`) and labels (`name:`); jumps name their target
    /// label (`<name>`) where objdump names a symbol; trailing comments, the
    /// map of each map load and the helper of each call follow `;`.
    pub fn listing(&self) -> String {
        let starts = self.slot_of_each();
        // Indexes built once: the listing of a 300,000-instruction program
        // is written in one pass, not one search of every label and
        // comment per instruction.
        let mut notes: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        let mut trailing_notes: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for comment in self.comments() {
            let into = if comment.placement == Placement::Before { &mut notes } else { &mut trailing_notes };
            into.entry(comment.insn).or_default().push(comment.text.as_str());
        }
        let mut labels: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for label in self.labels() {
            labels.entry(label.insn).or_default().push(label.name.as_str());
        }
        let mut functions: BTreeMap<usize, &str> = BTreeMap::new();
        for function in self.functions() {
            functions.entry(function.insn).or_insert(function.name.as_str());
        }
        let insn_at = |slot: i64| usize::try_from(slot).ok().and_then(|slot| starts.binary_search(&slot).ok());
        let heading = |out: &mut String, index: usize| {
            for note in notes.get(&index).into_iter().flatten() {
                let _ = writeln!(out, "; {note}");
            }
            for label in labels.get(&index).into_iter().flatten() {
                let _ = writeln!(out, "{label}:");
            }
        };
        let mut out = String::new();
        for (index, insn) in self.insns().iter().enumerate() {
            heading(&mut out, index);
            let slot = starts.get(index).copied().unwrap_or(0);
            // Writing to a String cannot fail.
            let _ = write!(out, "{slot:>8}:\t{}", text(insn));
            if let Some(off) = insn.jump_offset() {
                // Slot numbers fit in i64: a Vec holds fewer than i64::MAX items.
                let target = slot as i64 + 1 + i64::from(off);
                if let Some(label) = insn_at(target).and_then(|t| labels.get(&t)).and_then(|names| names.first()) {
                    let _ = write!(out, " <{label}>");
                }
            }
            if let Some(off) = insn.func_offset() {
                let target = slot as i64 + 1 + i64::from(off);
                if let Some(function) = insn_at(target).and_then(|t| functions.get(&t)) {
                    let _ = write!(out, " <{function}>");
                }
            }
            let mut trailing: Vec<&str> = Vec::new();
            let automatic = match insn {
                Insn::LdMap { map, .. } => Some(format!("map {map}")),
                Insn::Call { helper } => Some(helper.name().to_owned()),
                _ => None,
            };
            if let Some(automatic) = &automatic {
                trailing.push(automatic);
            }
            trailing.extend(trailing_notes.get(&index).into_iter().flatten().copied());
            if !trailing.is_empty() {
                let _ = write!(out, "\t; {}", trailing.join("; "));
            }
            out.push('\n');
        }
        // Labels and notes after the last instruction.
        heading(&mut out, self.insns().len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{AluOp, Asm, Endian, Helper, Operand, Size, Width, R0, R1, R10, R2};

    #[test]
    fn llvm_syntax() {
        let cases = [
            (Insn::Alu { width: Width::X64, op: AluOp::Mov, dst: R0, src: Operand::Imm(0) }, "r0 = 0"),
            (Insn::Alu { width: Width::X32, op: AluOp::Mov, dst: R0, src: Operand::Reg(R1) }, "w0 = w1"),
            (Insn::Alu { width: Width::X64, op: AluOp::Add, dst: R10, src: Operand::Imm(-8) }, "r10 += -8"),
            (Insn::Ldx { size: Size::W, dst: R2, src: R1, off: 4 }, "r2 = *(u32 *)(r1 + 4)"),
            (Insn::Stx { size: Size::DW, dst: R10, src: R1, off: -8 }, "*(u64 *)(r10 - 8) = r1"),
            (Insn::St { size: Size::W, dst: R10, off: -4, imm: 0 }, "*(u32 *)(r10 - 4) = 0"),
            (Insn::Call { helper: Helper::MsgApplyBytes }, "call 61"),
            (Insn::Exit, "exit"),
            (Insn::LdImm64 { dst: R1, imm: 0 }, "r1 = 0 ll"),
            (Insn::LdMap { dst: R1, map: "m".into() }, "ld_pseudo\tr1, 1, 0"),
            (Insn::Endian { conv: Endian::Be16, dst: R1 }, "r1 = be16 r1"),
            (Insn::Ja { off: -1 }, "goto -1"),
            (Insn::Ldx { size: Size::B, dst: R1, src: R2, off: i16::MIN }, "r1 = *(u8 *)(r2 - 32768)"),
        ];
        for (insn, expected) in cases {
            assert_eq!(text(&insn), expected);
            assert_eq!(insn.to_string(), expected);
        }
        let st = Insn::St { size: Size::W, dst: R10, off: -4, imm: 0 };
        assert_eq!(llvm14_text(&st), "<unknown>");
    }

    #[test]
    fn every_row_renders() {
        for row in crate::bpf::OPCODES.iter() {
            let fields = Fields { dst: 1, src: 2, off: -3, imm: 4 };
            let rendered = render(row.syntax, fields);
            assert!(!rendered.contains('{') && !rendered.contains('}'), "{}: {rendered}", row.mnemonic);
        }
    }

    #[test]
    fn listing_shows_labels_comments_maps_and_helpers() {
        let mut a = Asm::new();
        a.note("rule deny-admin");
        a.ld_map(R1, "sessions");
        a.jeq(R1, 0, "deny").comment("no session");
        a.call(Helper::MsgCorkBytes);
        a.label("deny");
        a.mov64(R0, 0);
        a.exit();
        let listing = a.finish().unwrap().listing();
        let expected = "\
; rule deny-admin
       0:\tld_pseudo\tr1, 1, 0\t; map sessions
       2:\tif r1 == 0 goto +1 <deny>\t; no session
       3:\tcall 62\t; bpf_msg_cork_bytes
deny:
       4:\tr0 = 0
       5:\texit
";
        assert_eq!(listing, expected);
    }
}
