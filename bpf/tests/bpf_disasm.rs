//! The disassembler, row by row, and the `asm` listing: snapshots a reviewer
//! can read against the kernel's instruction-set document and LLVM's output.

mod bpf_common;

/// Test paths carry the area's name, so `cargo test -p l7c-compiler bpf` selects them.
mod bpf_disasm {
    use super::bpf_common;

    use std::fmt::Write as _;

    use bpf_common::{example, sample_program};
    use l7c_bpf::bpf::{disasm, OPCODES};

    /// One line per row of the opcode table: opcode byte, mnemonic, what we
    /// print, and what LLVM 14's objdump prints when it differs.
    #[test]
    fn every_opcode_disassembles() {
        let mut table = String::new();
        for row in OPCODES.iter() {
            let insn = example(row.op, 0);
            let ours = disasm::text(&insn);
            let llvm14 = disasm::llvm14_text(&insn);
            let note = if llvm14 == ours { String::new() } else { format!("    (llvm-objdump 14: {llvm14})") };
            writeln!(table, "{:#04x}  {:<9} {}{note}", row.code, row.mnemonic, ours.replace('\t', " ")).unwrap();
        }
        insta::assert_snapshot!("every_opcode", table);
    }

    #[test]
    fn sample_listing() {
        insta::assert_snapshot!("sample_listing", sample_program().listing());
    }
}
