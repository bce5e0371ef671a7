//! Instructions as text, in LLVM's BPF syntax (what `llvm-objdump -d`
//! prints), and the annotated listing of `l7c compile --emit asm`.
//!
//! The text of each instruction comes from its row of the opcode table; this
//! module only fills in the placeholders. For the rows LLVM 14 cannot decode
//! (`OpInfo::llvm14 == false`) the text is what later LLVM releases print.

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
        let mut out = String::new();
        for (index, insn) in self.insns().iter().enumerate() {
            self.write_heading(&mut out, index);
            let slot = starts.get(index).copied().unwrap_or(0);
            // Writing to a String cannot fail.
            let _ = write!(out, "{slot:>8}:\t{}", text(insn));
            if let Some(off) = insn.jump_offset() {
                // Slot numbers fit in i64: a Vec holds fewer than i64::MAX items.
                let target = slot as i64 + 1 + i64::from(off);
                let target_insn = starts.iter().position(|&s| s as i64 == target);
                if let Some(label) = target_insn.and_then(|t| self.labels().iter().find(|l| l.insn == t)) {
                    let _ = write!(out, " <{}>", label.name);
                }
            }
            if let Some(off) = insn.func_offset() {
                let target = slot as i64 + 1 + i64::from(off);
                let target_insn = starts.iter().position(|&s| s as i64 == target);
                if let Some(function) = target_insn.and_then(|t| self.functions().iter().find(|f| f.insn == t)) {
                    let _ = write!(out, " <{}>", function.name);
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
            trailing.extend(
                self.comments()
                    .iter()
                    .filter(|c| c.insn == index && c.placement == Placement::Trailing)
                    .map(|c| c.text.as_str()),
            );
            if !trailing.is_empty() {
                let _ = write!(out, "\t; {}", trailing.join("; "));
            }
            out.push('\n');
        }
        // Labels and notes after the last instruction.
        self.write_heading(&mut out, self.insns().len());
        out
    }

    /// Notes, then labels, that precede instruction `index`.
    fn write_heading(&self, out: &mut String, index: usize) {
        for comment in self.comments() {
            if comment.insn == index && comment.placement == Placement::Before {
                let _ = writeln!(out, "; {}", comment.text);
            }
        }
        for label in self.labels() {
            if label.insn == index {
                let _ = writeln!(out, "{}:", label.name);
            }
        }
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
