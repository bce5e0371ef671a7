//! The BPF object file: a relocatable little-endian `EM_BPF` ELF that aya,
//! libbpf (`bpftool`) and `llvm-objdump` read.
//!
//! Layout, in section order:
//!
//! | section | contents |
//! |---|---|
//! | one per program (`sk_msg`, `sockops`, …) | the program's bytes; `SHF_ALLOC \| SHF_EXECINSTR`; a global `STT_FUNC` symbol at 0 of the program's exact size |
//! | `.rel<section>` | one `R_BPF_64_64` per map load, at the load's first slot, against the map's symbol; implicit addend 0 |
//! | `license` | `GPL\0` (GPL-only helpers need it) |
//! | `.maps` | zeros: one definition struct per map, each with a global `STT_OBJECT` symbol of its size (what relocations and BTF `VAR`s name) |
//! | `.BTF` | the maps' definition structs, `VAR`s and the `.maps` `DATASEC` ([`btf`]) |
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

use crate::bpf::Program;
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
/// use l7c_compiler::bpf::{Asm, R0};
/// use l7c_compiler::elf::{ObjectBuilder, MapDef};
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
}

impl Default for ObjectBuilder {
    fn default() -> Self {
        ObjectBuilder::new()
    }
}

impl ObjectBuilder {
    /// An empty object with license `GPL`.
    pub fn new() -> ObjectBuilder {
        ObjectBuilder { programs: Vec::new(), maps: Vec::new(), license: "GPL".to_owned(), meta: None }
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
        for entry in &self.programs {
            for relocation in entry.program.relocations() {
                if !self.maps.iter().any(|m| m.name() == relocation.map) {
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

        let mut program_sections: Vec<SectionId> = Vec::with_capacity(self.programs.len());
        for entry in &self.programs {
            let section = obj.add_section(Vec::new(), entry.section.as_bytes().to_vec(), SectionKind::Text);
            obj.set_section_data(section, entry.program.encode(), 8);
            obj.add_symbol(Symbol {
                name: entry.name.as_bytes().to_vec(),
                value: 0,
                size: entry.program.byte_len() as u64,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(section),
                flags: SymbolFlags::None,
            });
            program_sections.push(section);
        }

        let license = obj.add_section(Vec::new(), LICENSE_SECTION.as_bytes().to_vec(), SectionKind::Data);
        let mut license_bytes = self.license.as_bytes().to_vec();
        license_bytes.push(0);
        obj.set_section_data(license, license_bytes, 1);

        let mut map_symbols: Vec<(&str, SymbolId)> = Vec::with_capacity(self.maps.len());
        if !self.maps.is_empty() {
            let mut btf = btf::BtfBuilder::new();
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
            let btf_section = obj.add_section(Vec::new(), b".BTF".to_vec(), SectionKind::Other);
            obj.set_section_data(btf_section, btf.finish(), 4);
        }

        for (entry, &section) in self.programs.iter().zip(&program_sections) {
            for relocation in entry.program.relocations() {
                let Some(&(_, symbol)) = map_symbols.iter().find(|(name, _)| *name == relocation.map) else {
                    // `check` found every relocation's map above.
                    return Err(ElfError::UnknownMap { program: entry.name.clone(), map: relocation.map.clone() });
                };
                obj.add_relocation(
                    section,
                    ObjRelocation {
                        offset: relocation.byte_offset(),
                        symbol,
                        // BPF relocations have implicit addends: a non-zero
                        // one would be written into the instruction.
                        addend: 0,
                        flags: RelocationFlags::Elf { r_type: elf::R_BPF_64_64 },
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
