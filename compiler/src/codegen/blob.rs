//! The program's read-only tables: one `.rodata` blob the generated code
//! indexes with masked or bounded offsets (docs/program.md, "Tables").
//!
//! Invariants:
//! - Every table starts 8-byte aligned at an offset the code generator
//!   embeds as a constant; the blob only grows, so an offset once handed
//!   out stays valid.
//! - Each table is followed by enough zero padding that the largest index
//!   the verifier can prove for its load (a class byte up to 255 added to
//!   a masked state) stays inside the blob, and zero is always the dead
//!   state / empty entry.
//! - Building is deterministic: the same policy gives the same bytes.

/// The symbol naming the blob's start in the object.
pub const SYMBOL: &str = "l7_tables";

#[derive(Debug, Clone, Default)]
pub struct Blob {
    bytes: Vec<u8>,
    /// (offset, name, bytes) of each table, for the report.
    tables: Vec<(u32, String, usize)>,
}

impl Blob {
    pub fn new() -> Blob {
        Blob::default()
    }

    /// Appends `bytes` (8-byte aligned) plus `padding` zero bytes; returns
    /// the table's offset.
    pub fn add(&mut self, name: impl Into<String>, bytes: &[u8], padding: usize) -> u32 {
        while !self.bytes.len().is_multiple_of(8) {
            self.bytes.push(0);
        }
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(bytes);
        self.bytes.resize(self.bytes.len() + padding, 0);
        self.tables.push((offset, name.into(), bytes.len() + padding));
        offset
    }

    pub fn add_u16(&mut self, name: impl Into<String>, values: &[u16], padding_entries: usize) -> u32 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, &bytes, padding_entries * 2)
    }

    pub fn add_u32(&mut self, name: impl Into<String>, values: &[u32], padding_entries: usize) -> u32 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, &bytes, padding_entries * 4)
    }

    pub fn add_u64(&mut self, name: impl Into<String>, values: &[u64], padding_entries: usize) -> u32 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, &bytes, padding_entries * 8)
    }

    /// The finished bytes (at least 8, so the section is never empty).
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len().max(8), 0);
        self.bytes
    }

    /// Table name → bytes, in blob order.
    pub fn tables(&self) -> Vec<(String, usize)> {
        self.tables.iter().map(|(_, name, bytes)| (name.clone(), *bytes)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_and_padded() {
        let mut blob = Blob::new();
        let a = blob.add("a", &[1, 2, 3], 0);
        let b = blob.add_u16("b", &[0x0102], 2);
        let c = blob.add_u64("c", &[7], 0);
        assert_eq!((a, b, c), (0, 8, 16));
        let bytes = blob.into_bytes();
        assert_eq!(&bytes[8..14], &[2, 1, 0, 0, 0, 0]);
        assert_eq!(bytes.len(), 24);
    }
}
