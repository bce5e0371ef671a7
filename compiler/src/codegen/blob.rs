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

/// Bytes after the blob's power-of-two part: a load at a constant offset
/// of up to this from a masked pointer stays inside (a policy
/// descriptor is the largest record read so).
pub const SLACK: usize = 512;

#[derive(Debug, Clone, Default)]
pub struct Blob {
    bytes: Vec<u8>,
    /// Set by [`Blob::seal`]: every offset is below `mask + 1`.
    mask: Option<u32>,
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

    /// Ends the tables: returns the mask every offset the code computes
    /// at run time is ANDed with (the blob's size rounded up to a power of
    /// two, minus one). The finished bytes hold `mask + 1 + SLACK`, so
    /// that the verifier can prove `base + (x & mask) + c` in bounds for
    /// any `c + width <= SLACK`, whatever `x` is; the tables' own masks
    /// keep each index inside its table.
    pub fn seal(&mut self) -> u32 {
        let mask = (self.bytes.len().max(8).next_power_of_two() - 1) as u32;
        self.mask = Some(mask);
        mask
    }

    /// The finished bytes (at least 8, so the section is never empty;
    /// padded past the mask when sealed).
    pub fn into_bytes(mut self) -> Vec<u8> {
        let len = match self.mask {
            Some(mask) => mask as usize + 1 + SLACK,
            None => self.bytes.len().max(8),
        };
        self.bytes.resize(len, 0);
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
