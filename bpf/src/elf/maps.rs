//! Map definitions as the object file declares them.
//!
//! One constructor per map type l7c uses, each setting what the kernel
//! requires of that type (an `SK_STORAGE` map has `BPF_F_NO_PREALLOC`, no
//! `max_entries` and BTF key and value types; a `SOCKHASH` value is a 4-byte
//! socket fd; a ring buffer has no key or value), so a definition the kernel
//! would refuse is hard to write. [`MapDef::check`] catches the rest (names,
//! ring-buffer sizes) before the object is written.

use std::fmt;

/// `BPF_F_NO_PREALLOC`: required by `SK_STORAGE`, optional for hashes.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Map types, with their `enum bpf_map_type` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash,
    Array,
    PercpuArray,
    SockMap,
    SockHash,
    SkStorage,
    RingBuf,
}

impl MapKind {
    /// `BPF_MAP_TYPE_*` (from `include/uapi/linux/bpf.h`).
    pub const fn type_id(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PercpuArray => 6,
            MapKind::SockMap => 15,
            MapKind::SockHash => 18,
            MapKind::SkStorage => 24,
            MapKind::RingBuf => 27,
        }
    }

    /// The kernel's name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "BPF_MAP_TYPE_HASH",
            MapKind::Array => "BPF_MAP_TYPE_ARRAY",
            MapKind::PercpuArray => "BPF_MAP_TYPE_PERCPU_ARRAY",
            MapKind::SockMap => "BPF_MAP_TYPE_SOCKMAP",
            MapKind::SockHash => "BPF_MAP_TYPE_SOCKHASH",
            MapKind::SkStorage => "BPF_MAP_TYPE_SK_STORAGE",
            MapKind::RingBuf => "BPF_MAP_TYPE_RINGBUF",
        }
    }
}

/// The C type of a map key or value, described to the kernel in BTF (so
/// `bpftool map dump` prints fields by name). Layout follows C: fields at
/// their natural alignment, the struct padded to its largest alignment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// `unsigned int`.
    U32,
    /// `unsigned long long`.
    U64,
    /// `unsigned char[n]`.
    Bytes(u32),
    /// `struct name { ... }`.
    Struct { name: String, fields: Vec<Field> },
}

/// A named field of a [`DataType::Struct`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Field {
    pub name: String,
    pub ty: DataType,
}

impl Field {
    pub fn new(name: &str, ty: DataType) -> Field {
        Field { name: name.to_owned(), ty }
    }
}

impl DataType {
    /// A struct type.
    pub fn structure(name: &str, fields: Vec<Field>) -> DataType {
        DataType::Struct { name: name.to_owned(), fields }
    }

    /// The struct's name, for a struct.
    pub fn struct_name(&self) -> Option<&str> {
        match self {
            DataType::Struct { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Size in bytes, with C padding.
    pub fn size(&self) -> u32 {
        match self {
            DataType::U32 => 4,
            DataType::U64 => 8,
            DataType::Bytes(n) => *n,
            DataType::Struct { .. } => {
                let (fields_end, align) = self.struct_layout(|_, _| {});
                round_up(fields_end, align)
            }
        }
    }

    /// Alignment in bytes.
    pub fn align(&self) -> u32 {
        match self {
            DataType::U32 => 4,
            DataType::U64 => 8,
            DataType::Bytes(_) => 1,
            DataType::Struct { fields, .. } => fields.iter().map(|f| f.ty.align()).max().unwrap_or(1),
        }
    }

    /// Calls `visit(field, byte_offset)` for each field of a struct, returns
    /// the end of the last field and the struct's alignment.
    pub(crate) fn struct_layout(&self, mut visit: impl FnMut(&Field, u32)) -> (u32, u32) {
        let DataType::Struct { fields, .. } = self else { return (self.size(), self.align()) };
        let mut offset = 0u32;
        for field in fields {
            offset = round_up(offset, field.ty.align());
            visit(field, offset);
            offset = offset.saturating_add(field.ty.size());
        }
        (offset, self.align())
    }

    fn check(&self, map: &str) -> Result<(), MapDefError> {
        match self {
            DataType::U32 | DataType::U64 => Ok(()),
            DataType::Bytes(0) => Err(MapDefError::EmptyType { map: map.to_owned() }),
            DataType::Bytes(_) => Ok(()),
            DataType::Struct { name, fields } => {
                if !is_c_identifier(name) {
                    return Err(MapDefError::BadTypeName { map: map.to_owned(), name: name.clone() });
                }
                if fields.is_empty() {
                    return Err(MapDefError::EmptyType { map: map.to_owned() });
                }
                for (i, field) in fields.iter().enumerate() {
                    if !is_c_identifier(&field.name) {
                        return Err(MapDefError::BadTypeName { map: map.to_owned(), name: field.name.clone() });
                    }
                    if fields.iter().take(i).any(|f| f.name == field.name) {
                        return Err(MapDefError::DuplicateField { map: map.to_owned(), field: field.name.clone() });
                    }
                    field.ty.check(map)?;
                }
                Ok(())
            }
        }
    }
}

fn round_up(value: u32, align: u32) -> u32 {
    match value % align.max(1) {
        0 => value,
        rest => value.saturating_add(align - rest),
    }
}

/// Whether `name` is a C identifier (what BTF requires of variable, struct
/// and member names).
pub fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The key or value of a map: a BTF-described type, a bare size (for the
/// types whose kernel implementation takes no BTF), or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvType {
    Typed(DataType),
    Sized(u32),
    None,
}

impl KvType {
    pub fn size(&self) -> u32 {
        match self {
            KvType::Typed(ty) => ty.size(),
            KvType::Sized(size) => *size,
            KvType::None => 0,
        }
    }
}

/// One map of the object: a BTF-defined map in `.maps`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MapDef {
    name: String,
    kind: MapKind,
    key: KvType,
    value: KvType,
    max_entries: u32,
    flags: u32,
}

/// Bytes of a socket fd as a `SOCKHASH`/`SOCKMAP` value (aya's `SockHash`
/// requires 4).
const SOCKET_VALUE_SIZE: u32 = 4;

impl MapDef {
    /// `BPF_MAP_TYPE_HASH` with BTF key and value types.
    pub fn hash(name: &str, key: DataType, value: DataType, max_entries: u32) -> MapDef {
        MapDef::new(name, MapKind::Hash, KvType::Typed(key), KvType::Typed(value), max_entries)
    }

    /// `BPF_MAP_TYPE_ARRAY`: `u32` index to `value`.
    pub fn array(name: &str, value: DataType, max_entries: u32) -> MapDef {
        MapDef::new(name, MapKind::Array, KvType::Typed(DataType::U32), KvType::Typed(value), max_entries)
    }

    /// `BPF_MAP_TYPE_PERCPU_ARRAY`: one `value` per CPU per index (counters
    /// without atomics).
    pub fn percpu_array(name: &str, value: DataType, max_entries: u32) -> MapDef {
        MapDef::new(name, MapKind::PercpuArray, KvType::Typed(DataType::U32), KvType::Typed(value), max_entries)
    }

    /// `BPF_MAP_TYPE_SOCKHASH`: `key_size`-byte keys to sockets. The kernel
    /// takes no BTF for socket maps, so key and value are sizes.
    pub fn sock_hash(name: &str, key_size: u32, max_entries: u32) -> MapDef {
        MapDef::new(name, MapKind::SockHash, KvType::Sized(key_size), KvType::Sized(SOCKET_VALUE_SIZE), max_entries)
    }

    /// `BPF_MAP_TYPE_SOCKMAP`: `u32` index to sockets.
    pub fn sock_map(name: &str, max_entries: u32) -> MapDef {
        MapDef::new(name, MapKind::SockMap, KvType::Sized(4), KvType::Sized(SOCKET_VALUE_SIZE), max_entries)
    }

    /// `BPF_MAP_TYPE_SK_STORAGE`: one `value` per socket, reached with
    /// `bpf_sk_storage_get(map, sk, init, flags)`. The kernel requires an
    /// `int` BTF key, a BTF value, `BPF_F_NO_PREALLOC` and no `max_entries`.
    pub fn sk_storage(name: &str, value: DataType) -> MapDef {
        MapDef::new(name, MapKind::SkStorage, KvType::Typed(DataType::U32), KvType::Typed(value), 0)
            .with_flags(BPF_F_NO_PREALLOC)
    }

    /// `BPF_MAP_TYPE_RINGBUF` of `size_bytes` (a power of two, at least one
    /// page).
    pub fn ring_buf(name: &str, size_bytes: u32) -> MapDef {
        MapDef::new(name, MapKind::RingBuf, KvType::None, KvType::None, size_bytes)
    }

    fn new(name: &str, kind: MapKind, key: KvType, value: KvType, max_entries: u32) -> MapDef {
        MapDef { name: name.to_owned(), kind, key, value, max_entries, flags: 0 }
    }

    /// Adds `BPF_F_*` flags.
    pub fn with_flags(mut self, flags: u32) -> MapDef {
        self.flags |= flags;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> MapKind {
        self.kind
    }

    pub fn key(&self) -> &KvType {
        &self.key
    }

    pub fn value(&self) -> &KvType {
        &self.value
    }

    pub fn key_size(&self) -> u32 {
        self.key.size()
    }

    pub fn value_size(&self) -> u32 {
        self.value.size()
    }

    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// What the kernel would refuse, found before writing.
    pub fn check(&self) -> Result<(), MapDefError> {
        let map = &self.name;
        if !is_c_identifier(map) {
            return Err(MapDefError::BadName { map: map.clone() });
        }
        for slot in [&self.key, &self.value] {
            match slot {
                KvType::Typed(ty) => ty.check(map)?,
                KvType::Sized(0) => return Err(MapDefError::EmptyType { map: map.clone() }),
                KvType::Sized(_) | KvType::None => {}
            }
        }
        match self.kind {
            MapKind::RingBuf => {
                let size = self.max_entries;
                if size < 4096 || !size.is_power_of_two() {
                    return Err(MapDefError::RingBufSize { map: map.clone(), size });
                }
            }
            MapKind::SkStorage => {}
            _ if self.max_entries == 0 => return Err(MapDefError::NoEntries { map: map.clone() }),
            _ => {}
        }
        Ok(())
    }
}

/// Why a map definition cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapDefError {
    #[error("map name `{map}` is not a C identifier")]
    BadName { map: String },
    #[error("map `{map}`: type or field name `{name}` is not a C identifier")]
    BadTypeName { map: String, name: String },
    #[error("map `{map}`: field `{field}` is declared twice")]
    DuplicateField { map: String, field: String },
    #[error("map `{map}`: a key or value type has no bytes")]
    EmptyType { map: String },
    #[error("map `{map}` has max_entries 0")]
    NoEntries { map: String },
    #[error("ring buffer `{map}`: size {size} is not a power of two of at least 4096 bytes")]
    RingBufSize { map: String, size: u32 },
}

impl fmt::Display for MapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_follows_c() {
        let session = DataType::structure(
            "session",
            vec![
                Field::new("state", DataType::U32),
                Field::new("bytes", DataType::U64),
                Field::new("tag", DataType::Bytes(3)),
            ],
        );
        let mut offsets = Vec::new();
        session.struct_layout(|f, off| offsets.push((f.name.clone(), off)));
        assert_eq!(offsets, [("state".into(), 0), ("bytes".into(), 8), ("tag".into(), 16)]);
        assert_eq!(session.size(), 24);
        assert_eq!(session.align(), 8);
    }

    #[test]
    fn constructors_set_what_the_kernel_requires() {
        let storage = MapDef::sk_storage("sessions", DataType::U64);
        assert_eq!(storage.flags(), BPF_F_NO_PREALLOC);
        assert_eq!(storage.max_entries(), 0);
        assert_eq!(storage.key_size(), 4);
        assert_eq!(storage.check(), Ok(()));
        let hash = MapDef::sock_hash("redirect", 4, 64);
        assert_eq!((hash.key_size(), hash.value_size()), (4, 4));
        assert_eq!(MapDef::ring_buf("events", 4096).check(), Ok(()));
    }

    #[test]
    fn check_refuses_what_the_kernel_refuses() {
        assert!(matches!(MapDef::ring_buf("events", 5000).check(), Err(MapDefError::RingBufSize { .. })));
        assert!(matches!(MapDef::array("bad-name", DataType::U32, 1).check(), Err(MapDefError::BadName { .. })));
        assert!(matches!(MapDef::array("counts", DataType::U32, 0).check(), Err(MapDefError::NoEntries { .. })));
        let twice = DataType::structure("s", vec![Field::new("a", DataType::U32), Field::new("a", DataType::U32)]);
        assert!(matches!(MapDef::array("m", twice, 1).check(), Err(MapDefError::DuplicateField { .. })));
        assert!(matches!(MapDef::array("m", DataType::Bytes(0), 1).check(), Err(MapDefError::EmptyType { .. })));
    }
}
