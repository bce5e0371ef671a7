//! The BPF object file: a relocatable little-endian `EM_BPF` ELF that aya,
//! libbpf (`bpftool`) and `llvm-objdump` read.
//!
//! Layout, in section order:
//!
//! | section | contents |
//! |---|---|
//! | one per program (`sk_msg`, `sockops`, …) | the program's bytes; `SHF_ALLOC \| SHF_EXECINSTR`; a global `STT_FUNC` symbol at 0 of the program's exact size |
//! | `.rel<section>` | one `R_BPF_64_64` per map load, at the load's first slot, against the map's symbol; implicit addend 0; for each `call_local`/`ld_func`, `R_BPF_64_32`/`R_BPF_64_64` against the `.text` section symbol |
//! | `.text` (only with functions) | every program's functions after its main code (`Asm::function`), each with a local `STT_FUNC` symbol; `.rel.text` as above |
//! | `license` | `GPL\0` (GPL-only helpers need it) |
//! | `.maps` | zeros: one definition struct per map, each with a global `STT_OBJECT` symbol of its size (what relocations and BTF `VAR`s name) |
//! | `.BTF` | the maps' definition structs, `VAR`s and the `.maps` `DATASEC` ([`btf`]); with functions, a `FUNC` per function |
//! | `.BTF.ext` (only with functions) | func_info: one record per function, by section (no line_info) |
//! | `.l7.meta` | the caller's bytes (JSON); no flags, so loaders skip it |
//!
//! Invariants: the same [`ObjectBuilder`] contents give the same bytes
//! (nothing depends on time, paths or hash order); every relocation names a
//! map defined in the object; every name that ends up in BTF is a C
//! identifier.

pub mod btf;
pub mod maps;

use object::write::{Object, Relocation as ObjRelocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

use crate::bpf::{Insn, Program};
pub use maps::{is_c_identifier, DataType, Field, KvType, MapDef, MapDefError, MapKind, BPF_F_NO_PREALLOC};

/// Name of the section with the caller's metadata.
pub const META_SECTION: &str = ".l7.meta";
/// Name of the section of BTF-defined maps.
pub const MAPS_SECTION: &str = ".maps";
/// Name of the license section.
pub const LICENSE_SECTION: &str = "license";

/// Section names a program cannot take: the object's own sections, and
/// `.text`, which libbpf treats as subprograms.
const RESERVED_SECTIONS: [&str; 6] = [META_SECTION, MAPS_SECTION, LICENSE_SECTION, ".BTF", ".BTF.ext", ".text"];

/// One program of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ProgramEntry {
    section: String,
    name: String,
    program: Program,
}

/// Collects programs, maps and metadata, then writes the object.
///
/// ```
/// use l7c_bpf::bpf::{Asm, R0};
/// use l7c_bpf::elf::{ObjectBuilder, MapDef};
///
/// let mut a = Asm::new();
/// a.mov64(R0, 1).exit();
/// let mut object = ObjectBuilder::new();
/// object.program("sk_msg", "l7_verdict", a.finish()?);
/// object.map(MapDef::sock_hash("l7_redirect", 4, 64));
/// object.meta(br#"{"policy":"demo"}"#.to_vec());
/// let bytes = object.write()?;
/// assert_eq!(&bytes[..4], b"\x7fELF");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectBuilder {
    programs: Vec<ProgramEntry>,
    maps: Vec<MapDef>,
    license: String,
    meta: Option<Vec<u8>>,
    /// Read-only data: the symbol naming its start, and its bytes.
    rodata: Option<(String, Vec<u8>)>,
}

impl Default for ObjectBuilder {
    fn default() -> Self {
        ObjectBuilder::new()
    }
}

impl ObjectBuilder {
    /// An empty object with license `GPL`.
    pub fn new() -> ObjectBuilder {
        ObjectBuilder { programs: Vec::new(), maps: Vec::new(), license: "GPL".to_owned(), meta: None, rodata: None }
    }

    /// Adds `program` in its own executable `section` (`sk_msg`,
    /// `sk_msg/NAME`, `sockops`, …) under the function symbol `name`, the
    /// name loaders look programs up by.
    pub fn program(&mut self, section: &str, name: &str, program: Program) -> &mut Self {
        self.programs.push(ProgramEntry { section: section.to_owned(), name: name.to_owned(), program });
        self
    }

    /// Adds a map; map loads refer to it by its name.
    pub fn map(&mut self, map: MapDef) -> &mut Self {
        self.maps.push(map);
        self
    }

    /// Replaces the license (default `GPL`).
    pub fn license(&mut self, license: &str) -> &mut Self {
        license.clone_into(&mut self.license);
        self
    }

    /// Sets the contents of `.l7.meta`.
    pub fn meta(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.meta = Some(bytes);
        self
    }

    /// Adds a `.rodata` section holding `bytes`, named by the data symbol
    /// `symbol` at its start. Programs reach it with `ld_map(reg, symbol)`:
    /// loaders (aya, libbpf) turn the relocation into a pointer to the
    /// frozen, read-only array map they create for `.rodata`.
    pub fn rodata(&mut self, symbol: &str, bytes: Vec<u8>) -> &mut Self {
        self.rodata = Some((symbol.to_owned(), bytes));
        self
    }

    /// Checks names and references; what [`ObjectBuilder::write`] refuses.
    pub fn check(&self) -> Result<(), ElfError> {
        if self.programs.is_empty() {
            return Err(ElfError::NoPrograms);
        }
        if self.license.is_empty() || self.license.contains('\0') {
            return Err(ElfError::BadLicense);
        }
        let mut symbols: Vec<&str> = Vec::new();
        let mut sections: Vec<&str> = Vec::new();
        for entry in &self.programs {
            let section = entry.section.as_str();
            if section.is_empty() || section.contains('\0') || RESERVED_SECTIONS.contains(&section) {
                return Err(ElfError::BadSection { section: entry.section.clone() });
            }
            if sections.contains(&section) {
                return Err(ElfError::DuplicateSection { section: entry.section.clone() });
            }
            sections.push(section);
            if !is_c_identifier(&entry.name) {
                return Err(ElfError::BadSymbol { name: entry.name.clone() });
            }
            if symbols.contains(&entry.name.as_str()) {
                return Err(ElfError::DuplicateSymbol { name: entry.name.clone() });
            }
            symbols.push(&entry.name);
            if entry.program.insns().is_empty() {
                return Err(ElfError::EmptyProgram { name: entry.name.clone() });
            }
        }
        for entry in &self.programs {
            for function in entry.program.functions() {
                let name = function.name.as_str();
                if !is_c_identifier(name) {
                    return Err(ElfError::BadSymbol { name: name.to_owned() });
                }
                if symbols.contains(&name) {
                    return Err(ElfError::DuplicateSymbol { name: name.to_owned() });
                }
                symbols.push(name);
            }
        }
        for map in &self.maps {
            map.check()?;
            if symbols.contains(&map.name()) {
                return Err(ElfError::DuplicateSymbol { name: map.name().to_owned() });
            }
            symbols.push(map.name());
        }
        // One BTF name, one struct: two layouts under one name would make
        // `bpftool map dump` and the runtime disagree about a value.
        let mut structs: Vec<&DataType> = Vec::new();
        for map in &self.maps {
            for kv in [map.key(), map.value()] {
                if let KvType::Typed(ty) = kv {
                    collect_structs(ty, &mut structs);
                }
            }
        }
        for (i, ty) in structs.iter().enumerate() {
            let clash = structs.iter().take(i).find(|other| other.struct_name() == ty.struct_name() && *other != ty);
            if let (Some(_), Some(name)) = (clash, ty.struct_name()) {
                return Err(ElfError::ConflictingStruct { name: name.to_owned() });
            }
        }
        if let Some((symbol, bytes)) = &self.rodata {
            if !is_c_identifier(symbol) {
                return Err(ElfError::BadSymbol { name: symbol.clone() });
            }
            if symbols.contains(&symbol.as_str()) {
                return Err(ElfError::DuplicateSymbol { name: symbol.clone() });
            }
            if bytes.is_empty() {
                return Err(ElfError::Object("an empty .rodata section".to_owned()));
            }
        }
        let rodata_symbol = self.rodata.as_ref().map(|(symbol, _)| symbol.as_str());
        for entry in &self.programs {
            for relocation in entry.program.relocations() {
                if rodata_symbol != Some(relocation.map.as_str()) && !self.maps.iter().any(|m| m.name() == relocation.map) {
                    return Err(ElfError::UnknownMap { program: entry.name.clone(), map: relocation.map.clone() });
                }
            }
        }
        Ok(())
    }

    /// The object file's bytes.
    pub fn write(&self) -> Result<Vec<u8>, ElfError> {
        self.check()?;
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);

        // Each program's main function goes in its own section; the
        // functions after it (subprograms, callbacks) go in `.text`, where
        // libbpf and aya look for subprograms, one after another.
        let mut text_len = 0u64;
        let pieces: Vec<Split<'_>> = self
            .programs
            .iter()
            .map(|entry| {
                let split = split_program(&entry.program, text_len);
                text_len += split.1.iter().map(|(_, _, piece)| piece.bytes.len() as u64).sum::<u64>();
                split
            })
            .collect();
        let has_functions = text_len > 0;

        let mut program_sections: Vec<SectionId> = Vec::with_capacity(self.programs.len());
        for (entry, (main, _)) in self.programs.iter().zip(&pieces) {
            let section = obj.add_section(Vec::new(), entry.section.as_bytes().to_vec(), SectionKind::Text);
            obj.set_section_data(section, main.bytes.clone(), 8);
            obj.add_symbol(Symbol {
                name: entry.name.as_bytes().to_vec(),
                value: 0,
                size: main.bytes.len() as u64,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(section),
                flags: SymbolFlags::None,
            });
            program_sections.push(section);
        }
        let text_section = if has_functions {
            let section = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
            let mut bytes = Vec::with_capacity(text_len as usize);
            for (_, functions) in &pieces {
                for (name, offset, piece) in functions {
                    obj.add_symbol(Symbol {
                        name: name.as_bytes().to_vec(),
                        value: *offset,
                        size: piece.bytes.len() as u64,
                        kind: SymbolKind::Text,
                        // Static functions, as clang emits `static` callbacks.
                        scope: SymbolScope::Compilation,
                        weak: false,
                        section: SymbolSection::Section(section),
                        flags: SymbolFlags::None,
                    });
                    bytes.extend_from_slice(&piece.bytes);
                }
            }
            obj.set_section_data(section, bytes, 8);
            Some(section)
        } else {
            None
        };

        let license = obj.add_section(Vec::new(), LICENSE_SECTION.as_bytes().to_vec(), SectionKind::Data);
        let mut license_bytes = self.license.as_bytes().to_vec();
        license_bytes.push(0);
        obj.set_section_data(license, license_bytes, 1);

        let mut map_symbols: Vec<(&str, SymbolId)> = Vec::with_capacity(self.maps.len());
        if !self.maps.is_empty() || has_functions {
            let mut btf = btf::BtfBuilder::new();
            if !self.maps.is_empty() {
                let (placements, maps_size) = btf.declare_maps(&self.maps);
                let maps_section = obj.add_section(Vec::new(), MAPS_SECTION.as_bytes().to_vec(), SectionKind::Data);
                obj.set_section_data(maps_section, vec![0u8; maps_size as usize], 8);
                for (map, placement) in self.maps.iter().zip(&placements) {
                    let symbol = obj.add_symbol(Symbol {
                        name: map.name().as_bytes().to_vec(),
                        value: u64::from(placement.offset),
                        size: u64::from(placement.size),
                        kind: SymbolKind::Data,
                        scope: SymbolScope::Dynamic,
                        weak: false,
                        section: SymbolSection::Section(maps_section),
                        flags: SymbolFlags::None,
                    });
                    map_symbols.push((map.name(), symbol));
                }
            }
            if let Some((name, bytes)) = &self.rodata {
                let section = obj.add_section(Vec::new(), b".rodata".to_vec(), SectionKind::ReadOnlyData);
                obj.set_section_data(section, bytes.clone(), 8);
                let symbol = obj.add_symbol(Symbol {
                    name: name.as_bytes().to_vec(),
                    value: 0,
                    size: bytes.len() as u64,
                    kind: SymbolKind::Data,
                    scope: SymbolScope::Dynamic,
                    weak: false,
                    section: SymbolSection::Section(section),
                    flags: SymbolFlags::None,
                });
                map_symbols.push((name.as_str(), symbol));
            }
            let ext = has_functions.then(|| {
                // func_info: every function of every program, by section.
                let mut sections: Vec<(&str, Vec<(u32, u32)>)> = Vec::new();
                let mut text: Vec<(u32, u32)> = Vec::new();
                for (entry, (_, functions)) in self.programs.iter().zip(&pieces) {
                    sections.push((entry.section.as_str(), vec![(0, btf.function(&entry.name, true))]));
                    for (name, offset, _) in functions {
                        // `.text` stays far below 4 GiB.
                        text.push((*offset as u32, btf.function(name, false)));
                    }
                }
                sections.push((".text", text));
                btf.func_info_ext(&sections)
            });
            let btf_section = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Other);
            obj.set_section_data(btf_section, btf.finish(), 4);
            if let Some(ext) = ext {
                let ext_section = obj.add_section(Vec::new(), b".BTF.ext".to_vec(), SectionKind::Other);
                obj.set_section_data(ext_section, ext, 4);
            }
        }

        let text_symbol = text_section.map(|section| obj.section_symbol(section));
        let mut targets: Vec<(SectionId, &Piece<'_>)> = Vec::new();
        for ((main, functions), &section) in pieces.iter().zip(&program_sections) {
            targets.push((section, main));
            if let Some(text) = text_section {
                targets.extend(functions.iter().map(|(_, _, piece)| (text, piece)));
            }
        }
        for (section, piece) in targets {
            for reloc in &piece.relocs {
                let (symbol, r_type) = match reloc.target {
                    RelocTarget::Map(map) => {
                        let Some(&(_, symbol)) = map_symbols.iter().find(|(name, _)| *name == map) else {
                            // `check` found every relocation's map above.
                            return Err(ElfError::UnknownMap { program: String::new(), map: map.to_owned() });
                        };
                        (symbol, elf::R_BPF_64_64)
                    }
                    RelocTarget::Text { call } => {
                        let Some(symbol) = text_symbol else {
                            return Err(ElfError::Object("a subprogram reference without .text".to_owned()));
                        };
                        (symbol, if call { elf::R_BPF_64_32 } else { elf::R_BPF_64_64 })
                    }
                };
                obj.add_relocation(
                    section,
                    ObjRelocation {
                        offset: reloc.offset,
                        symbol,
                        // BPF relocations have implicit addends: a non-zero
                        // one would be written into the instruction.
                        addend: 0,
                        flags: RelocationFlags::Elf { r_type },
                    },
                )
                .map_err(|error| ElfError::Object(error.to_string()))?;
            }
        }

        if let Some(meta) = &self.meta {
            let section = obj.add_section(Vec::new(), META_SECTION.as_bytes().to_vec(), SectionKind::Other);
            obj.set_section_data(section, meta.clone(), 1);
        }

        obj.write().map_err(|error| ElfError::Object(error.to_string()))
    }
}

/// What a relocation points at.
#[derive(Clone, Copy, Debug)]
enum RelocTarget<'a> {
    /// A map load, against the map's symbol.
    Map(&'a str),
    /// A subprogram reference, against the `.text` section symbol with the
    /// function's place in the instruction: `call` (`R_BPF_64_32`, imm =
    /// slot − 1) or `ld_func` (`R_BPF_64_64`, imm = byte offset), the way
    /// clang refers to `static` functions.
    Text { call: bool },
}

/// The bytes of one function and its relocations (offsets in its section).
#[derive(Clone, Debug)]
struct Piece<'a> {
    bytes: Vec<u8>,
    relocs: Vec<Reloc<'a>>,
}

#[derive(Clone, Copy, Debug)]
struct Reloc<'a> {
    offset: u64,
    target: RelocTarget<'a>,
}

/// A program's main function, and its functions as (name, offset in
/// `.text`, piece).
type Split<'a> = (Piece<'a>, Vec<(&'a str, u64, Piece<'a>)>);

/// Splits a program into its main function and its functions placed in
/// `.text` from byte `text_base` on (name, offset in `.text`, piece), with
/// subprogram references rewritten to `.text`-relative immediates.
fn split_program(program: &Program, text_base: u64) -> Split<'_> {
    let ranges = program.function_ranges();
    let mut starts = program.slot_of_each();
    starts.push(program.slot_len());
    let slot_bytes = crate::bpf::SLOT_BYTES as u64;
    // Byte offset in its section of each function's first instruction.
    let mut offsets = Vec::with_capacity(ranges.len());
    let mut text = text_base;
    for (k, range) in ranges.iter().enumerate() {
        let len = (starts[range.end] - starts[range.start]) as u64 * slot_bytes;
        if k == 0 {
            offsets.push(0);
        } else {
            offsets.push(text);
            text += len;
        }
    }
    let function_at = |insn: usize| ranges.iter().position(|r| r.contains(&insn));
    let mut main = None;
    let mut functions = Vec::new();
    for (k, range) in ranges.iter().enumerate() {
        let mut piece = Piece { bytes: Vec::new(), relocs: Vec::new() };
        for index in range.clone() {
            let insn = &program.insns()[index];
            let offset = offsets[k] + (starts[index] - starts[range.start]) as u64 * slot_bytes;
            if let Insn::LdMap { map, .. } = insn {
                piece.relocs.push(Reloc { offset, target: RelocTarget::Map(map) });
            }
            if let Some(off) = insn.func_offset() {
                let target_slot = starts[index] as i64 + 1 + i64::from(off);
                let callee = starts.iter().position(|&s| s as i64 == target_slot).and_then(function_at);
                // `Program` checked that references land on function starts.
                if let Some(callee) = callee {
                    let at = offsets[callee];
                    let call = matches!(insn, Insn::CallLocal { .. });
                    let imm = if call { (at / slot_bytes) as i64 - 1 } else { at as i64 };
                    let mut rewritten = insn.clone();
                    rewritten.set_func_offset(imm as i32);
                    rewritten.encode(&mut piece.bytes);
                    piece.relocs.push(Reloc { offset, target: RelocTarget::Text { call } });
                    continue;
                }
            }
            insn.encode(&mut piece.bytes);
        }
        if k == 0 {
            main = Some(piece);
        } else {
            let name = program.functions().get(k - 1).map_or("", |f| f.name.as_str());
            functions.push((name, offsets[k], piece));
        }
    }
    (main.unwrap_or(Piece { bytes: Vec::new(), relocs: Vec::new() }), functions)
}

/// Every struct type in `ty`, outermost first.
fn collect_structs<'a>(ty: &'a DataType, out: &mut Vec<&'a DataType>) {
    if let DataType::Struct { fields, .. } = ty {
        out.push(ty);
        for field in fields {
            collect_structs(&field.ty, out);
        }
    }
}

/// Why an object cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("an object needs at least one program")]
    NoPrograms,
    #[error("the license must be non-empty text without NUL bytes")]
    BadLicense,
    #[error("`{section}` cannot be a program section")]
    BadSection { section: String },
    #[error("two programs are in section `{section}`")]
    DuplicateSection { section: String },
    #[error("symbol name `{name}` is not a C identifier")]
    BadSymbol { name: String },
    #[error("`{name}` names two programs or maps")]
    DuplicateSymbol { name: String },
    #[error("program `{name}` has no instructions")]
    EmptyProgram { name: String },
    #[error("program `{program}` loads map `{map}`, which the object does not define")]
    UnknownMap { program: String, map: String },
    #[error("struct `{name}` is declared with two different layouts")]
    ConflictingStruct { name: String },
    #[error(transparent)]
    Map(#[from] MapDefError),
    #[error("the object writer failed: {0}")]
    Object(String),
}
