//! Everything the encoder writes, the decoder reads back: every form of the
//! opcode table with several operand sets, a program of all of them, and
//! random instructions.

mod bpf_common;

/// Test paths carry the area's name, so `cargo test -p l7c-compiler bpf` selects them.
mod bpf_roundtrip {
    use super::bpf_common;

    use bpf_common::{every_form, example, VARIANTS};
    use l7c_bpf::bpf::{Helper, Insn, Op, Operand, Program, Reg, SrcKind, HELPERS, OPCODES, SLOT_BYTES};
    use proptest::prelude::*;

    fn encode(insn: &Insn) -> Vec<u8> {
        let mut out = Vec::new();
        insn.encode(&mut out);
        out
    }

    fn map_of(insn: &Insn) -> Option<&str> {
        match insn {
            Insn::LdMap { map, .. } => Some(map.as_str()),
            _ => None,
        }
    }

    #[test]
    fn every_form_round_trips() {
        let mut checked = 0;
        for row in OPCODES.iter() {
            for variant in 0..VARIANTS {
                let insn = example(row.op, variant);
                assert_eq!(insn.op(), row.op);
                let bytes = encode(&insn);
                assert_eq!(bytes.len(), row.op.slots() * SLOT_BYTES, "{}", row.mnemonic);
                assert_eq!(bytes[0], row.code, "{}", row.mnemonic);
                let (decoded, slots) =
                    Insn::decode(&bytes, 0, map_of(&insn)).unwrap_or_else(|e| panic!("{}: {e}", row.mnemonic));
                assert_eq!(decoded, insn, "{}", row.mnemonic);
                assert_eq!(slots, row.op.slots());
                assert_eq!(encode(&decoded), bytes, "{}: re-encoding differs", row.mnemonic);
                checked += 1;
            }
        }
        assert_eq!(checked, OPCODES.len() * VARIANTS);
    }

    #[test]
    fn program_of_every_form_round_trips() {
        let program = every_form();
        let bytes = program.encode();
        assert_eq!(bytes.len(), program.byte_len());
        let decoded = Program::decode(&bytes, program.relocations()).expect("decodes");
        assert_eq!(decoded.insns(), program.insns());
        assert_eq!(decoded.relocations(), program.relocations());
        assert_eq!(decoded.encode(), bytes);
    }

    fn any_reg() -> impl Strategy<Value = Reg> {
        prop::sample::select(Reg::ALL.to_vec())
    }

    fn any_insn() -> impl Strategy<Value = Insn> {
        let ops: Vec<Op> = Op::all().collect();
        let helpers: Vec<Helper> = HELPERS.iter().map(|h| h.helper).collect();
        (
            prop::sample::select(ops),
            any_reg(),
            any_reg(),
            any::<i16>(),
            any::<i32>(),
            any::<i64>(),
            prop::sample::select(helpers),
            "[a-z_][a-z0-9_]{0,14}",
        )
            .prop_map(|(op, dst, src, off, imm, imm64, helper, map)| {
                let operand = |kind| match kind {
                    SrcKind::Imm => Operand::Imm(imm),
                    SrcKind::Reg => Operand::Reg(src),
                };
                match op {
                    Op::Alu(width, alu, kind) => Insn::Alu { width, op: alu, dst, src: operand(kind) },
                    Op::Neg(width) => Insn::Neg { width, dst },
                    Op::Endian(conv) => Insn::Endian { conv, dst },
                    Op::Ja => Insn::Ja { off },
                    Op::Jmp(width, cond, kind) => Insn::Jmp { width, cond, dst, src: operand(kind), off },
                    Op::Call => Insn::Call { helper },
                    Op::Exit => Insn::Exit,
                    Op::LdImm64 => Insn::LdImm64 { dst, imm: imm64 },
                    Op::LdMap => Insn::LdMap { dst, map },
                    Op::Ldx(size) => Insn::Ldx { size, dst, src, off },
                    Op::St(size) => Insn::St { size, dst, off, imm },
                    Op::Stx(size) => Insn::Stx { size, dst, src, off },
                    Op::AtomicAdd(size) => Insn::AtomicAdd { size, dst, src, off },
                    Op::CallLocal => Insn::CallLocal { off: imm },
                    Op::LdFunc => Insn::LdFunc { dst, off: imm },
                }
            })
    }

    proptest! {
        #[test]
        fn random_instructions_round_trip(insn in any_insn()) {
            let bytes = encode(&insn);
            let (decoded, slots) = Insn::decode(&bytes, 0, map_of(&insn)).expect("decodes");
            prop_assert_eq!(slots * SLOT_BYTES, bytes.len());
            prop_assert_eq!(&decoded, &insn);
            prop_assert_eq!(encode(&decoded), bytes);
        }

        #[test]
        fn random_bytes_decode_or_fail_cleanly(raw in prop::collection::vec(any::<u8>(), 0..40)) {
            // Never panics; what decodes re-encodes to the same bytes.
            if let Ok((insn, slots)) = Insn::decode(&raw, 0, None) {
                prop_assert_eq!(encode(&insn), raw[..slots * SLOT_BYTES].to_vec());
            }
        }
    }
}
