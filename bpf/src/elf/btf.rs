//! The `.BTF` section: just enough BPF Type Format to declare BTF-defined
//! maps the way libbpf's `__uint`/`__type` macros do.
//!
//! For each map, a `VAR` (global, allocated) in a `DATASEC` named `.maps`,
//! whose type is an anonymous `STRUCT` of pointer members:
//!
//! ```c
//! struct {
//!     int (*type)[BPF_MAP_TYPE_SK_STORAGE];   // __uint(type, 24): the value is the array length
//!     unsigned int *key;                      // __type(key, unsigned int): the pointee is the type
//!     struct session *value;
//!     int (*map_flags)[BPF_F_NO_PREALLOC];
//! } sessions SEC(".maps");
//! ```
//!
//! Members appear in libbpf's order (`type`, `key`/`key_size`,
//! `value`/`value_size`, `max_entries`, `map_flags`); members whose value is
//! 0 are left out, as libbpf's defaults are 0. Each member is a pointer, 8
//! bytes, so a map takes `8 × members` bytes of `.maps`. Types are
//! deduplicated, and ids are assigned in first-use order, so the section is a
//! function of the map list alone.

use std::collections::BTreeMap;

use super::maps::{DataType, KvType, MapDef};

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
const BTF_HEADER_LEN: u32 = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;

const INT_SIGNED: u32 = 1;
const VAR_GLOBAL_ALLOCATED: u32 = 1;

/// Bytes of one member of a map definition struct (a pointer).
pub const MEMBER_BYTES: u32 = 8;

/// A type already emitted, for deduplication.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TypeKey {
    Int(&'static str),
    Ptr(u32),
    Array { elem: u32, len: u32 },
    Named(DataType),
}

/// Where a map's definition lies in `.maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapPlacement {
    pub offset: u32,
    pub size: u32,
}

/// Builds the `.BTF` section.
#[derive(Debug, Default)]
pub struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: BTreeMap<String, u32>,
    type_ids: BTreeMap<TypeKey, u32>,
    next_id: u32,
}

impl BtfBuilder {
    pub fn new() -> BtfBuilder {
        BtfBuilder { strings: vec![0], next_id: 1, ..BtfBuilder::default() }
    }

    /// Declares `maps` in a `.maps` DATASEC; returns each map's place in the
    /// `.maps` section and the section's size.
    pub fn declare_maps(&mut self, maps: &[MapDef]) -> (Vec<MapPlacement>, u32) {
        let mut placements = Vec::with_capacity(maps.len());
        let mut entries = Vec::with_capacity(maps.len());
        let mut offset = 0u32;
        for map in maps {
            let (definition, size) = self.map_struct(map);
            let var = self.var(map.name(), definition);
            placements.push(MapPlacement { offset, size });
            entries.push((var, offset, size));
            offset = offset.saturating_add(size);
        }
        self.datasec(".maps", offset, &entries);
        (placements, offset)
    }

    /// The anonymous struct describing one map, and its size.
    fn map_struct(&mut self, map: &MapDef) -> (u32, u32) {
        let mut members: Vec<(&str, u32)> = Vec::new();
        let type_member = self.uint_member(map.kind().type_id());
        members.push(("type", type_member));
        for (kv, typed_name, sized_name) in [(map.key(), "key", "key_size"), (map.value(), "value", "value_size")] {
            match kv {
                KvType::Typed(ty) => {
                    let ty = self.data_type(ty);
                    members.push((typed_name, self.ptr(ty)));
                }
                KvType::Sized(size) => members.push((sized_name, self.uint_member(*size))),
                KvType::None => {}
            }
        }
        if map.max_entries() != 0 {
            members.push(("max_entries", self.uint_member(map.max_entries())));
        }
        if map.flags() != 0 {
            members.push(("map_flags", self.uint_member(map.flags())));
        }
        // At most 6 members: the product fits in u32.
        let size = members.len() as u32 * MEMBER_BYTES;
        let layout: Vec<(&str, u32, u32)> =
            members.iter().zip(0u32..).map(|(&(name, ty), i)| (name, ty, i * MEMBER_BYTES * 8)).collect();
        (self.structure("", size, &layout), size)
    }

    /// `int (*name)[value]`: libbpf's `__uint(name, value)`.
    fn uint_member(&mut self, value: u32) -> u32 {
        let int = self.int("int", 4, true);
        let array = self.array(int, value);
        self.ptr(array)
    }

    fn data_type(&mut self, ty: &DataType) -> u32 {
        match ty {
            DataType::U32 => self.int("unsigned int", 4, false),
            DataType::U64 => self.int("unsigned long long", 8, false),
            DataType::Bytes(len) => {
                let byte = self.int("unsigned char", 1, false);
                self.array(byte, *len)
            }
            DataType::Struct { name, .. } => {
                let key = TypeKey::Named(ty.clone());
                if let Some(&id) = self.type_ids.get(&key) {
                    return id;
                }
                let mut fields = Vec::new();
                ty.struct_layout(|field, offset| fields.push((field.name.clone(), field.ty.clone(), offset)));
                let members: Vec<(String, u32, u32)> = fields
                    .into_iter()
                    .map(|(name, field_ty, offset)| (name, self.data_type(&field_ty), offset.saturating_mul(8)))
                    .collect();
                let layout: Vec<(&str, u32, u32)> =
                    members.iter().map(|(name, id, bits)| (name.as_str(), *id, *bits)).collect();
                let id = self.structure(name, ty.size(), &layout);
                self.type_ids.insert(key, id);
                id
            }
        }
    }

    fn string(&mut self, text: &str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        if let Some(&offset) = self.string_offsets.get(text) {
            return offset;
        }
        // The string table stays far below 4 GiB for any object we write.
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(text.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(text.to_owned(), offset);
        offset
    }

    /// Appends a `struct btf_type` header and returns the new type's id.
    fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let name_off = self.string(name);
        let info = (kind << 24) | (vlen & 0xffff);
        for word in [name_off, info, size_or_type] {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn words(&mut self, words: &[u32]) {
        for word in words {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
    }

    fn cached(&mut self, key: TypeKey, make: impl FnOnce(&mut Self) -> u32) -> u32 {
        if let Some(&id) = self.type_ids.get(&key) {
            return id;
        }
        let id = make(self);
        self.type_ids.insert(key, id);
        id
    }

    fn int(&mut self, name: &'static str, bytes: u32, signed: bool) -> u32 {
        self.cached(TypeKey::Int(name), |b| {
            let id = b.header(name, KIND_INT, 0, bytes);
            let encoding = if signed { INT_SIGNED } else { 0 };
            b.words(&[(encoding << 24) | (bytes * 8)]);
            id
        })
    }

    fn ptr(&mut self, target: u32) -> u32 {
        self.cached(TypeKey::Ptr(target), |b| b.header("", KIND_PTR, 0, target))
    }

    fn array(&mut self, elem: u32, len: u32) -> u32 {
        self.cached(TypeKey::Array { elem, len }, |b| {
            let index = b.int("__ARRAY_SIZE_TYPE__", 4, false);
            let id = b.header("", KIND_ARRAY, 0, 0);
            b.words(&[elem, index, len]);
            id
        })
    }

    /// A struct with `(name, type, bit offset)` members.
    fn structure(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        // Member names are interned before the header so that the string
        // order follows the type order.
        let names: Vec<u32> = members.iter().map(|(member, _, _)| self.string(member)).collect();
        // A struct has at most a handful of members: the count fits in vlen.
        let id = self.header(name, KIND_STRUCT, members.len() as u32, size);
        for (&(_, ty, bits), name_off) in members.iter().zip(names) {
            self.words(&[name_off, ty, bits]);
        }
        id
    }

    fn var(&mut self, name: &str, ty: u32) -> u32 {
        let id = self.header(name, KIND_VAR, 0, ty);
        self.words(&[VAR_GLOBAL_ALLOCATED]);
        id
    }

    fn datasec(&mut self, name: &str, size: u32, entries: &[(u32, u32, u32)]) -> u32 {
        // One entry per map: far fewer than 65536.
        let id = self.header(name, KIND_DATASEC, entries.len() as u32, size);
        for &(ty, offset, bytes) in entries {
            self.words(&[ty, offset, bytes]);
        }
        id
    }

    /// A `FUNC` (with its `FUNC_PROTO`) for a BPF function: `int
    /// name(void *ctx)` for a program's main function (global linkage), or
    /// `long name(unsigned long long index, void *ctx)`, static, for a
    /// subprogram (the shape of a `bpf_loop` callback; the kernel checks
    /// only a global function's argument types). Returns the `FUNC`'s id.
    pub fn function(&mut self, name: &str, main: bool) -> u32 {
        let int = self.int("int", 4, true);
        let void_ptr = self.ptr(0);
        let proto = if main {
            let ctx = self.string("ctx");
            let id = self.header("", KIND_FUNC_PROTO, 1, int);
            self.words(&[ctx, void_ptr]);
            id
        } else {
            let long = self.int("long", 8, true);
            let u64_ty = self.int("unsigned long long", 8, false);
            let (index, ctx) = (self.string("index"), self.string("ctx"));
            let id = self.header("", KIND_FUNC_PROTO, 2, long);
            self.words(&[index, u64_ty, ctx, void_ptr]);
            id
        };
        // Linkage in vlen: 0 static, 1 global.
        self.header(name, KIND_FUNC, u32::from(main), proto)
    }

    /// The `.BTF.ext` section with `func_info` only (no `line_info`, no
    /// CO-RE relocations): for each `(section, [(byte offset, FUNC id)])`,
    /// one record per function. Section names go into this BTF's strings,
    /// so call it before [`BtfBuilder::finish`].
    pub fn func_info_ext(&mut self, sections: &[(&str, Vec<(u32, u32)>)]) -> Vec<u8> {
        const EXT_HEADER_LEN: u32 = 32;
        const FUNC_INFO_REC_SIZE: u32 = 8;
        let mut info: Vec<u8> = Vec::new();
        info.extend_from_slice(&FUNC_INFO_REC_SIZE.to_le_bytes());
        for (section, records) in sections {
            let name = self.string(section);
            info.extend_from_slice(&name.to_le_bytes());
            // A section holds far fewer than 4G functions.
            info.extend_from_slice(&(records.len() as u32).to_le_bytes());
            for &(offset, type_id) in records {
                info.extend_from_slice(&offset.to_le_bytes());
                info.extend_from_slice(&type_id.to_le_bytes());
            }
        }
        let info_len = info.len() as u32;
        let mut out = Vec::with_capacity(EXT_HEADER_LEN as usize + info.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0); // flags
        for word in [
            EXT_HEADER_LEN,
            0,        // func_info_off
            info_len, // func_info_len
            info_len, // line_info_off
            0,        // line_info_len
            info_len, // core_relo_off
            0,        // core_relo_len
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&info);
        out
    }

    /// The section's bytes: header, types, strings.
    pub fn finish(self) -> Vec<u8> {
        // Both lengths stay far below 4 GiB for any object we write.
        let type_len = self.types.len() as u32;
        let str_len = self.strings.len() as u32;
        let mut out = Vec::with_capacity(24 + self.types.len() + self.strings.len());
        out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        out.push(BTF_VERSION);
        out.push(0); // flags
        out.extend_from_slice(&BTF_HEADER_LEN.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // type_off
        out.extend_from_slice(&type_len.to_le_bytes());
        out.extend_from_slice(&type_len.to_le_bytes()); // str_off
        out.extend_from_slice(&str_len.to_le_bytes());
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::maps::{DataType, Field};

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        let word: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        u32::from_le_bytes(word)
    }

    #[test]
    fn header_and_layout() {
        let mut btf = BtfBuilder::new();
        let (placements, size) = btf.declare_maps(&[
            MapDef::sock_hash("redirect", 4, 16),
            MapDef::sk_storage("sessions", DataType::structure("session", vec![Field::new("bytes", DataType::U64)])),
        ]);
        // sock_hash: type, key_size, value_size, max_entries; sk_storage:
        // type, key, value, map_flags.
        assert_eq!(placements, [MapPlacement { offset: 0, size: 32 }, MapPlacement { offset: 32, size: 32 }]);
        assert_eq!(size, 64);
        let bytes = btf.finish();
        assert_eq!(&bytes[..4], &[0x9f, 0xeb, 1, 0]);
        assert_eq!(u32_at(&bytes, 4), 24);
        let type_len = u32_at(&bytes, 12) as usize;
        let str_len = u32_at(&bytes, 20) as usize;
        assert_eq!(bytes.len(), 24 + type_len + str_len);
        let strings = &bytes[24 + type_len..];
        assert_eq!(strings[0], 0);
        for name in ["redirect", "sessions", ".maps", "max_entries", "map_flags", "session", "__ARRAY_SIZE_TYPE__"] {
            let needle = [name.as_bytes(), &[0]].concat();
            assert!(strings.windows(needle.len()).any(|w| w == needle.as_slice()), "missing string {name}");
        }
    }

    #[test]
    fn same_maps_same_bytes() {
        let maps = [MapDef::array("counts", DataType::U64, 8), MapDef::ring_buf("events", 1 << 16)];
        let build = || {
            let mut btf = BtfBuilder::new();
            btf.declare_maps(&maps);
            btf.finish()
        };
        assert_eq!(build(), build());
    }
}
