//! The per-connection state in `l7_conn` (SK_STORAGE) and the other byte
//! layouts the program shares with user space.

use crate::elf::{DataType, Field};

/// Bytes of `struct l7_sock_key` (docs/kernel-mechanics.md, "The
/// enrollment key").
pub const SOCK_KEY_BYTES: u32 = 44;

/// Phases (`state.phase`).
pub mod phase {
    /// Storage just created: the connection's scope is not chosen yet.
    pub const NEW: u8 = 0;
    /// Governed: the next byte starts a request head.
    pub const HEAD: u8 = 1;
    /// No policy governs the connection, or a tunnel: pass everything.
    pub const PASS_ALL: u8 = 2;
    /// Denied: every later run denies (the kernel's drop is sticky too).
    pub const DEAD: u8 = 3;
}

/// Offsets in `struct l7_conn_state`.
pub const PHASE: i16 = 0;
/// The governing policy's index (valid from `HEAD` on).
pub const POLICY: i16 = 1;
/// Requests seen on the connection.
pub const INDEX: i16 = 4;
/// Stream offset of the next byte the program has not given a verdict on.
pub const OFFSET: i16 = 8;
/// Body bytes still to pass (u64: bodies can exceed one `apply_bytes`).
pub const BODY_LEFT: i16 = 16;
/// Bytes of the state (the head scanner's 56-byte `HeadState` and the
/// 32-byte `ChunkState` will extend it).
pub const STATE_BYTES: u32 = 24;

/// The BTF type of the state.
pub fn state_type() -> DataType {
    DataType::Struct {
        name: "l7_conn_state".to_owned(),
        fields: vec![
            Field::new("phase", DataType::Bytes(1)),
            Field::new("policy", DataType::Bytes(1)),
            Field::new("pad", DataType::Bytes(2)),
            Field::new("index", DataType::U32),
            Field::new("offset", DataType::U64),
            Field::new("body_left", DataType::U64),
        ],
    }
}
