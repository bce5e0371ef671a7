//! Subprograms: function labels, `call_local` (BPF-to-BPF calls) and
//! `ld_func` (callback addresses for `bpf_loop`), resolved by `Asm::finish`
//! into relative offsets; their disassembly next to `llvm-objdump`'s; and
//! the object the ELF writer makes of them (main function in the program's
//! section, functions in `.text`, `.BTF.ext` func_info).

mod bpf_common;

/// Test paths carry the area's name, so `cargo test -p l7c-compiler bpf` selects them.
mod bpf_functions {
    use super::bpf_common;

    use bpf_common::{cleanup, every_form_maps, find_tool, run, scratch_dir, skip, with_functions};
    use l7c_bpf::bpf::{disasm, Asm, AsmError, Insn, Program, R2};
    use l7c_bpf::elf::ObjectBuilder;
    use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, SymbolKind};

    fn object_bytes() -> Vec<u8> {
        let mut object = ObjectBuilder::new();
        object.program("sk_msg", "main_prog", with_functions());
        for map in every_form_maps() {
            object.map(map);
        }
        object.write().expect("object writes")
    }

    #[test]
    fn references_resolve_to_relative_offsets() {
        let program = with_functions();
        let names: Vec<(&str, usize)> = program.functions().iter().map(|f| (f.name.as_str(), f.insn)).collect();
        assert_eq!(names, [("callback", 11), ("helper", 15)]);
        let slots = program.slot_of_each();
        let mut seen = 0;
        for (index, insn) in program.insns().iter().enumerate() {
            let Some(off) = insn.func_offset() else { continue };
            let target = (slots[index] as i64 + 1 + i64::from(off)) as usize;
            let function = program.functions().iter().find(|f| slots[f.insn] == target).expect("lands on a function");
            let expected = match (index, insn) {
                (2, Insn::LdFunc { .. }) => "callback",
                (_, Insn::CallLocal { .. }) => "helper",
                other => panic!("unexpected reference {other:?}"),
            };
            assert_eq!(function.name.as_str(), expected);
            seen += 1;
        }
        assert_eq!(seen, 3);
        let ranges = program.function_ranges();
        assert_eq!(ranges, [0..11, 11..15, 15..17]);
    }

    #[test]
    fn function_errors_are_typed() {
        let mut a = Asm::new();
        a.call_local("nowhere").exit();
        assert!(matches!(a.finish(), Err(AsmError::UndefinedLabel { .. })));

        let mut a = Asm::new();
        a.call_local("plain").exit().label("plain").exit();
        assert_eq!(a.finish(), Err(AsmError::NotAFunction { label: "plain".into(), insn: 0 }));

        let mut a = Asm::new();
        a.function("first").exit();
        assert_eq!(a.finish(), Err(AsmError::FunctionAtStart { label: "first".into() }));

        let mut a = Asm::new();
        a.ja("inside_f").exit().function("f").label("inside_f").exit();
        assert!(matches!(a.finish(), Err(AsmError::JumpAcrossFunctions { .. })));

        let bad = Program::from_insns(vec![Insn::CallLocal { off: 5 }, Insn::Exit]);
        assert_eq!(bad, Err(AsmError::BadFunctionOffset { insn: 0, offset: 5 }));
    }

    #[test]
    fn programs_with_functions_round_trip() {
        let program = with_functions();
        let bytes = program.encode();
        let decoded = Program::decode(&bytes, program.relocations()).expect("decodes");
        assert_eq!(decoded.insns(), program.insns());
        assert_eq!(decoded.encode(), bytes);
        // Decoding finds the functions again (named by slot).
        let starts: Vec<usize> = decoded.functions().iter().map(|f| f.insn).collect();
        assert_eq!(starts, [11, 15]);
        assert_eq!(decoded.functions()[0].name.as_str(), "sub_12");
        let listing = program.listing();
        assert!(listing.contains("ld_pseudo\tr2, 4, 9 <callback>"), "{listing}");
        assert!(listing.contains("call 7 <helper>"), "{listing}");
        assert!(listing.contains("callback:\n"), "{listing}");
    }

    #[test]
    fn the_object_splits_functions_into_text() {
        let bytes = object_bytes();
        assert_eq!(bytes, object_bytes(), "deterministic");
        let file = object::File::parse(&*bytes).expect("parses");
        let main = file.section_by_name("sk_msg").expect("sk_msg");
        let text = file.section_by_name(".text").expect(".text");
        assert_eq!(main.size(), 12 * 8, "main: 11 instructions, one of them two slots");
        assert_eq!(text.size(), (5 + 2) * 8);
        assert!(file.section_by_name(".BTF").is_some());
        let ext = file.section_by_name(".BTF.ext").expect(".BTF.ext").data().unwrap().to_vec();
        assert_eq!(&ext[..4], &[0x9f, 0xeb, 1, 0]);
        // func_info: rec_size 8, then sk_msg (1 record), .text (2 records).
        let word = |at: usize| u32::from_le_bytes(ext[at..at + 4].try_into().unwrap());
        assert_eq!(word(4), 32);
        assert_eq!(word(12), 4 + (8 + 8) + (8 + 16), "func_info_len");
        assert_eq!(word(20), 0, "no line_info");
        assert_eq!(word(32), 8);
        assert_eq!((word(40), word(44)), (1, 0));
        assert_eq!((word(56), word(60), word(68)), (2, 0, 5 * 8));

        let symbols: Vec<(String, SymbolKind, bool, u64, u64)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text)
            .map(|s| (s.name().unwrap().to_owned(), s.kind(), s.is_global(), s.address(), s.size()))
            .collect();
        assert!(symbols.contains(&("main_prog".into(), SymbolKind::Text, true, 0, 12 * 8)), "{symbols:?}");
        assert!(symbols.contains(&("callback".into(), SymbolKind::Text, false, 0, 5 * 8)), "{symbols:?}");
        assert!(symbols.contains(&("helper".into(), SymbolKind::Text, false, 5 * 8, 2 * 8)), "{symbols:?}");

        let r_types = |section: &object::Section<'_, '_>| -> Vec<(u64, u32)> {
            section
                .relocations()
                .map(|(offset, r)| match r.flags() {
                    RelocationFlags::Elf { r_type } => (offset, r_type),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        // ld_func at slot 2 (64-bit), call_local at slot 9 (32-bit).
        assert_eq!(r_types(&main), [(16, object::elf::R_BPF_64_64), (9 * 8, object::elf::R_BPF_64_32)]);
        // ld_map at 0 in the callback, call_local at slot 2.
        assert_eq!(r_types(&text), [(0, object::elf::R_BPF_64_64), (16, object::elf::R_BPF_64_32)]);
        // Immediates are `.text`-relative, the way clang refers to statics.
        let data = main.data().unwrap();
        let imm = |slot: usize| i32::from_le_bytes(data[slot * 8 + 4..slot * 8 + 8].try_into().unwrap());
        assert_eq!(data[2 * 8 + 1] >> 4, 4, "BPF_PSEUDO_FUNC");
        assert_eq!(imm(2), 0, "callback at .text+0");
        assert_eq!(data[9 * 8 + 1] >> 4, 1, "BPF_PSEUDO_CALL");
        assert_eq!(imm(9), 5 - 1, "helper at .text slot 5");
    }

    #[test]
    fn llvm_objdump_reads_functions() {
        const TEST: &str = "llvm_objdump_reads_functions";
        let Some(objdump) = find_tool("llvm-objdump") else {
            return skip(TEST, "llvm-objdump is not installed");
        };
        let dir = scratch_dir("objdump-functions");
        let path = dir.join("functions.o");
        std::fs::write(&path, object_bytes()).unwrap();
        let (ok, listing, stderr) = run(&objdump, &["-d", path.to_str().unwrap()]);
        assert!(ok, "llvm-objdump failed: {stderr}");
        for line in ["<main_prog>:", "<callback>:", "<helper>:", "Disassembly of section .text:"] {
            assert!(listing.contains(line), "missing {line} in\n{listing}");
        }
        // The text of each reference as the object holds it (`.text`-relative).
        for insn in [Insn::LdFunc { dst: R2, off: 0 }, Insn::CallLocal { off: 4 }] {
            let text = disasm::text(&insn);
            assert!(listing.contains(&text), "`{text}` not in\n{listing}");
        }
        cleanup(&dir);
    }
}
