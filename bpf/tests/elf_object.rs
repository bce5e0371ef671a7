//! The object file: read back with the `object` crate, listed by
//! `llvm-objdump -dr`, and loaded into the running kernel by `bpftool`
//! (root only; the real proof that the BTF is right).

mod bpf_common;

/// Test paths carry the area's name, so `cargo test -p l7c-compiler elf` selects them.
mod elf_object {
    use super::bpf_common;

    use bpf_common::{cleanup, find_tool, is_root, run, sample_object, sample_program, scratch_dir, skip};
    use l7c_bpf::bpf::{Asm, Helper, Program, Relocation, R0, R1, R10, R2, R3, R4, R6};
    use l7c_bpf::elf::{DataType, ElfError, Field, MapDef, ObjectBuilder};
    use object::read::{Object as _, ObjectSection as _, ObjectSymbol as _};
    use object::{elf, RelocationFlags, SectionKind, SymbolKind};

    fn write_sample() -> Vec<u8> {
        sample_object().write().expect("sample object writes")
    }

    #[test]
    fn object_reads_back() {
        let bytes = write_sample();
        let file = object::File::parse(bytes.as_slice()).expect("parses");
        assert_eq!(file.architecture(), object::Architecture::Bpf);
        assert!(file.is_little_endian());
        assert_eq!(file.kind(), object::ObjectKind::Relocatable);

        let names: Vec<&str> = file.sections().map(|s| s.name().unwrap()).filter(|n| !n.is_empty()).collect();
        for wanted in ["sk_msg", "license", ".maps", ".BTF", ".l7.meta"] {
            assert!(names.contains(&wanted), "no section {wanted} in {names:?}");
        }

        let program = sample_program();
        let text = file.section_by_name("sk_msg").unwrap();
        assert_eq!(text.kind(), SectionKind::Text);
        assert_eq!(text.data().unwrap(), program.encode().as_slice());

        let license = file.section_by_name("license").unwrap();
        assert_eq!(license.data().unwrap(), b"GPL\0");
        let meta = file.section_by_name(".l7.meta").unwrap();
        assert_eq!(meta.data().unwrap(), br#"{"policy":"sample","rules":{"1":"allow-all"}}"#);
        let object::SectionFlags::Elf { sh_flags } = meta.flags() else { panic!("not ELF flags") };
        assert_eq!(sh_flags, 0, ".l7.meta must not be allocated or executable");

        let verdict = file.symbols().find(|s| s.name() == Ok("l7_verdict")).expect("program symbol");
        assert_eq!(verdict.kind(), SymbolKind::Text);
        assert!(verdict.is_global());
        assert_eq!(verdict.address(), 0);
        assert_eq!(verdict.size(), program.byte_len() as u64);
        assert_eq!(verdict.section_index(), Some(text.index()));

        let maps = file.section_by_name(".maps").unwrap();
        let mut map_symbols: Vec<(String, u64, u64)> = file
            .symbols()
            .filter(|s| s.section_index() == Some(maps.index()))
            .map(|s| {
                assert_eq!(s.kind(), SymbolKind::Data);
                assert!(s.is_global());
                (s.name().unwrap().to_owned(), s.address(), s.size())
            })
            .collect();
        map_symbols.sort_by_key(|m| m.1);
        let map_names: Vec<&str> = map_symbols.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(map_names, ["l7_redirect", "l7_sessions", "l7_counters", "l7_config", "l7_events"]);
        let end = map_symbols.last().map(|m| m.1 + m.2).unwrap();
        assert_eq!(end, maps.size(), "map definitions tile .maps");

        let relocations: Vec<(u64, String)> = text
            .relocations()
            .map(|(offset, r)| {
                assert_eq!(r.flags(), RelocationFlags::Elf { r_type: elf::R_BPF_64_64 });
                assert_eq!(r.addend(), 0);
                assert!(r.has_implicit_addend());
                let object::RelocationTarget::Symbol(index) = r.target() else { panic!("not a symbol") };
                (offset, file.symbol_by_index(index).unwrap().name().unwrap().to_owned())
            })
            .collect();
        let expected: Vec<(u64, String)> =
            program.relocations().iter().map(|r| (r.byte_offset(), r.map.clone())).collect();
        assert_eq!(relocations, expected);
        assert_eq!(relocations.len(), 2);

        // The instructions decode back from the section and its relocations.
        let decoded = Program::decode(
            text.data().unwrap(),
            &relocations
                .iter()
                .map(|(offset, map)| Relocation { slot: *offset as usize / 8, map: map.clone() })
                .collect::<Vec<_>>(),
        )
        .expect("decodes");
        assert_eq!(decoded.insns(), program.insns());
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(write_sample(), write_sample());
    }

    #[test]
    fn several_programs_one_section_each() {
        let mut a = Asm::new();
        a.mov64(R0, 1).exit();
        let one = a.finish().unwrap();
        let mut b = Asm::new();
        b.mov64(R1, 0).mov64(R0, 0).exit();
        let two = b.finish().unwrap();
        let mut object = ObjectBuilder::new();
        object.program("sk_msg", "verdict", one).program("sockops", "enroll", two);
        let bytes = object.write().unwrap();
        let file = object::File::parse(bytes.as_slice()).unwrap();
        for (section, symbol, size) in [("sk_msg", "verdict", 16), ("sockops", "enroll", 24)] {
            let s = file.section_by_name(section).expect(section);
            let sym = file.symbols().find(|x| x.name() == Ok(symbol)).expect(symbol);
            assert_eq!(sym.section_index(), Some(s.index()));
            assert_eq!(sym.size(), size);
            assert_eq!(s.size(), size);
        }
        assert!(file.section_by_name(".maps").is_none(), "no maps, no .maps");
    }

    #[test]
    fn refuses_bad_objects() {
        let mut a = Asm::new();
        a.ld_map(R1, "missing").mov64(R0, 1).exit();
        let loads_missing = a.finish().unwrap();
        let exit_only = || {
            let mut a = Asm::new();
            a.mov64(R0, 1).exit();
            a.finish().unwrap()
        };

        let mut object = ObjectBuilder::new();
        object.program("sk_msg", "verdict", loads_missing);
        assert!(matches!(object.write(), Err(ElfError::UnknownMap { map, .. }) if map == "missing"));

        assert_eq!(ObjectBuilder::new().write(), Err(ElfError::NoPrograms));

        let mut twice = ObjectBuilder::new();
        twice.program("sk_msg", "a", exit_only()).program("sk_msg", "b", exit_only());
        assert!(matches!(twice.write(), Err(ElfError::DuplicateSection { .. })));

        let mut clash = ObjectBuilder::new();
        clash.program("sk_msg", "same", exit_only()).map(MapDef::array("same", DataType::U32, 1));
        assert!(matches!(clash.write(), Err(ElfError::DuplicateSymbol { .. })));

        let mut reserved = ObjectBuilder::new();
        reserved.program(".maps", "p", exit_only());
        assert!(matches!(reserved.write(), Err(ElfError::BadSection { .. })));

        let one = DataType::structure("state", vec![Field::new("a", DataType::U32)]);
        let other = DataType::structure("state", vec![Field::new("b", DataType::U64)]);
        let mut conflicting = ObjectBuilder::new();
        conflicting
            .program("sk_msg", "p", exit_only())
            .map(MapDef::array("first", one, 1))
            .map(MapDef::sk_storage("second", other));
        assert_eq!(conflicting.write(), Err(ElfError::ConflictingStruct { name: "state".into() }));

        let mut bad_map = ObjectBuilder::new();
        bad_map.program("sk_msg", "p", exit_only()).map(MapDef::ring_buf("events", 100));
        assert!(matches!(bad_map.write(), Err(ElfError::Map(_))));
    }

    #[test]
    fn llvm_objdump_lists_program_and_relocations() {
        let Some(objdump) = find_tool("llvm-objdump") else {
            return skip("llvm_objdump_lists_program_and_relocations", "llvm-objdump is not installed");
        };
        let dir = scratch_dir("objdump-dr");
        let path = dir.join("sample.o");
        std::fs::write(&path, write_sample()).unwrap();
        let (ok, listing, stderr) = run(&objdump, &["-dr", path.to_str().unwrap()]);
        assert!(ok, "llvm-objdump failed: {stderr}");
        assert!(listing.contains("file format elf64-bpf"), "{listing}");
        assert!(listing.contains("Disassembly of section sk_msg:"), "{listing}");
        assert!(listing.contains("<l7_verdict>:"), "{listing}");
        let relocation_lines: Vec<&str> = listing.lines().filter(|l| l.contains("R_BPF_64_64")).collect();
        assert_eq!(relocation_lines.len(), 2, "{listing}");
        // Each relocation line follows its ld_imm64 and names the map.
        let lines: Vec<&str> = listing.lines().collect();
        for relocation in sample_program().relocations() {
            let map = &relocation.map;
            let at = lines.iter().position(|l| l.ends_with(&format!("R_BPF_64_64\t{map}"))).expect(map);
            let offset = format!("{:016x}:", relocation.byte_offset());
            assert!(lines[at].trim_start().starts_with(&offset), "{}", lines[at]);
            let slot = format!("{:>8}:", relocation.slot);
            assert!(lines[at - 1].starts_with(&slot) && lines[at - 1].contains("ld_pseudo\tr"), "{}", lines[at - 1]);
        }
        cleanup(&dir);
    }

    #[test]
    fn bpftool_loads_the_sample_object() {
        const TEST: &str = "bpftool_loads_the_sample_object";
        if !is_root() {
            return skip(TEST, "not running as root; loading needs CAP_BPF and CAP_NET_ADMIN");
        }
        let Some(bpftool) = find_tool("bpftool") else {
            return skip(TEST, "bpftool is not installed (apt-get install -y bpftool)");
        };
        let dir = scratch_dir("bpftool-load");
        let path = dir.join("sample.o");
        std::fs::write(&path, write_sample()).unwrap();
        let pin = format!("/sys/fs/bpf/l7c-test-{}", std::process::id());
        let (ok, stdout, stderr) =
            run(&bpftool, &["-d", "prog", "load", path.to_str().unwrap(), &pin, "type", "sk_msg"]);
        let shown = run(&bpftool, &["prog", "show", "pinned", &pin]);
        let _ = std::fs::remove_file(&pin);
        assert!(ok, "bpftool refused the object:\n{stdout}\n{stderr}");
        let (shown_ok, shown, shown_err) = shown;
        assert!(shown_ok, "bpftool prog show failed: {shown_err}");
        assert!(shown.contains("sk_msg") && shown.contains("name l7_verdict") && shown.contains("gpl"), "{shown}");
        eprintln!("{TEST}: the kernel accepted the sample object:\n{shown}");
        cleanup(&dir);
    }

    /// A `sockops` program that enrolls established connections in the SOCKHASH
    /// the `sk_msg` program redirects through.
    fn enroll_program() -> Program {
        let mut a = Asm::new();
        a.mov64(R6, R1);
        a.ldxw(R2, R6, 0).comment("skops->op");
        a.jeq(R2, 4, "enroll").comment("BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB");
        a.jne(R2, 5, "out").comment("BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB");
        a.label("enroll");
        a.stw(R10, -4, 0);
        a.mov64(R1, R6);
        a.ld_map(R2, "l7_redirect");
        a.mov64(R3, R10);
        a.add64(R3, -4);
        a.mov64(R4, 0).comment("BPF_ANY");
        a.call(Helper::SockHashUpdate);
        a.label("out");
        a.mov64(R0, 1);
        a.exit();
        a.finish().expect("enroll program assembles")
    }

    #[test]
    fn bpftool_loads_two_programs_sharing_a_map() {
        const TEST: &str = "bpftool_loads_two_programs_sharing_a_map";
        if !is_root() {
            return skip(TEST, "not running as root; loading needs CAP_BPF and CAP_NET_ADMIN");
        }
        let Some(bpftool) = find_tool("bpftool") else {
            return skip(TEST, "bpftool is not installed (apt-get install -y bpftool)");
        };
        let mut object = sample_object();
        object.program("sockops", "l7_enroll", enroll_program());
        let dir = scratch_dir("bpftool-loadall");
        let path = dir.join("two.o");
        std::fs::write(&path, object.write().unwrap()).unwrap();
        let pins = format!("/sys/fs/bpf/l7c-test-{}-all", std::process::id());
        let (ok, stdout, stderr) = run(&bpftool, &["prog", "loadall", path.to_str().unwrap(), &pins]);
        let pinned: Vec<String> = std::fs::read_dir(&pins)
            .map(|entries| {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(&pins);
        assert!(ok, "bpftool refused the object:\n{stdout}\n{stderr}");
        let mut pinned = pinned;
        pinned.sort();
        assert_eq!(pinned, ["l7_enroll", "l7_verdict"]);
        cleanup(&dir);
    }

    #[test]
    fn bpftool_reads_the_btf() {
        const TEST: &str = "bpftool_reads_the_btf";
        let Some(bpftool) = find_tool("bpftool") else {
            return skip(TEST, "bpftool is not installed (apt-get install -y bpftool)");
        };
        let dir = scratch_dir("bpftool-btf");
        let path = dir.join("sample.o");
        std::fs::write(&path, write_sample()).unwrap();
        let (ok, dump, stderr) = run(&bpftool, &["btf", "dump", "file", path.to_str().unwrap()]);
        assert!(ok, "bpftool btf dump failed: {stderr}");
        // libbpf's reading of each map definition, in bpftool's words.
        for line in [
            "] VAR 'l7_redirect' type_id=",
            "] VAR 'l7_sessions' type_id=",
            "] STRUCT 'l7_session' size=24 vlen=3",
            "\t'bytes' type_id=",
            "\t'tag' type_id=",
            "] ARRAY '(anon)' type_id=1 index_type_id=2 nr_elems=24",
            "] ARRAY '(anon)' type_id=1 index_type_id=2 nr_elems=65536",
            "] DATASEC '.maps' size=144 vlen=5",
            "\ttype_id=10 offset=0 size=32 (VAR 'l7_redirect')",
        ] {
            assert!(dump.contains(line), "no `{line}` in\n{dump}");
        }
        cleanup(&dir);
    }
}
