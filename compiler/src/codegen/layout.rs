//! The per-connection state in `l7_conn` (SK_STORAGE) and the other byte
//! layouts the program shares with user space.
//!
//! `struct l7_conn_state` (docs/program.md, "State"): a fixed part (phase,
//! stream offsets, the verdict being reported, decision scratch), the head
//! scanner's `HeadState` (56 B) and the chunk scanner's `ChunkState`
//! (32 B) at fixed offsets, then the governing policy's automaton states
//! (`AREA`, a `u32` each) and the facts bitmap, sized per compilation.

use crate::elf::{DataType, Field};

/// Bytes of `struct l7_sock_key` (docs/kernel-mechanics.md, "The
/// enrollment key").
pub const SOCK_KEY_BYTES: u32 = crate::abi::sock_key::SIZE as u32;

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
    /// Inside a chunked body.
    pub const CHUNK: u8 = 4;
    /// Inside a Content-Length body longer than one `apply_bytes`.
    pub const BODY: u8 = 5;
    /// After an allowed switch request: waiting for the server's status
    /// line (language.md §6); every client byte before it is early.
    pub const SWITCH_WAIT: u8 = 6;
}

/// Bits of `state.flags`.
pub mod flags {
    /// The current request was redirected: its body follows it.
    pub const REDIRECTED: u8 = 1;
    /// The current request switches protocols: when its bytes are taken,
    /// the connection waits for the server's consent (`SWITCH_WAIT`).
    pub const SWITCHING: u8 = 2;
}

/// Offsets in `struct l7_conn_state`.
pub const PHASE: i16 = 0;
/// The governing policy's index (valid from `HEAD` on).
pub const POLICY: i16 = 1;
/// [`flags`].
pub const FLAGS: i16 = 2;
/// `BPF_F_INGRESS` for the current request's redirect.
pub const REDIRECT_FLAGS: i16 = 3;
/// Requests given a verdict so far (the next verdict's index).
pub const INDEX: i16 = 4;
/// Stream offset of the first byte of this run's message data (the next
/// byte without a verdict).
pub const OFFSET: i16 = 8;
/// Body bytes still to pass (u64: bodies can exceed one `apply_bytes`).
pub const BODY_LEFT: i16 = 16;
/// Stream offset where the message of the last redirect ends: a pass
/// before it must redirect to the connection itself (program.md).
pub const REDIRECT_MSG_END: i16 = 24;
/// The current request's redirect slot.
pub const SLOT: i16 = 32;
/// Bytes of the head just scanned.
pub const HEAD_LEN: i16 = 36;
/// Decision scratch: the rule being tried, the rule that matched.
pub const DEC_RULE: i16 = 40;
pub const DEC_MATCH: i16 = 44;
/// Decision scratch: some literal of the clause held; every clause so far held.
pub const DEC_CLAUSE: i16 = 48;
pub const DEC_OK: i16 = 49;
/// The scanned method's id.
pub const METHOD_ID: i16 = 50;
/// Event flags of the open chunked request (for its span-end record).
pub const REQ_FLAGS: i16 = 51;
/// Bytes the scan may read this run; chunk bytes taken this run.
pub const SCAN_LEN: i16 = 52;
pub const CHUNK_TAKEN: i16 = 56;
/// Where a collect loop starts in the members table.
pub const COLLECT_START: i16 = 60;
/// The verdict being reported (the `report` function reads these).
pub const V_START: i16 = 64;
pub const V_END: i16 = 72;
pub const V_RULE: i16 = 80;
/// Counter index of the policy's first reason slot.
pub const V_BASE: i16 = 84;
pub const V_ACTION: i16 = 88;
pub const V_CLASS: i16 = 89;
pub const V_KIND: i16 = 90;
pub const V_FLAGS: i16 = 91;
pub const V_RECORD: i16 = 92;
/// Index of the request the record is about.
pub const V_INDEX: i16 = 96;
/// 1 while the kernel may hold a cork message for this socket (set by a
/// hold; a redirect frees it): see docs/kernel-mechanics.md, "Redirects
/// and held messages".
pub const CORKED: i16 = 100;
/// 1 when this run's message was not mapped (`data == data_end` with
/// bytes in it: every kTLS record), where a cork never runs the program
/// again (docs/program.md, "Under kTLS").
pub const UNMAPPED: i16 = 101;
/// 1 while the field whose value the scan is in is one the governing
/// policy's matchers read (set at its name's end).
pub const FIELD_READ: i16 = 102;
/// `scan::HeadState` (56 bytes).
pub const HEAD: i16 = 104;
/// `scan::ChunkState` (32 bytes).
pub const CHUNK: i16 = 160;
/// The guarded decision's cursor: the list (0: unguarded, `n`: the `n`th
/// candidate fact), its next and end positions in the guard members, the
/// current rule's next and end records.
pub const DEC_LIST: i16 = 192;
pub const DEC_LIST_AT: i16 = 196;
pub const DEC_LIST_END: i16 = 200;
pub const DEC_RECORD: i16 = 204;
pub const DEC_RECORD_END: i16 = 208;
/// Candidate facts collected (at most `tables::CANDIDATES`; more: linear).
pub const DEC_CANDIDATES: i16 = 212;
/// 1: too many candidates, decide linearly. 2: the guarded decision ended.
pub const DEC_MODE: i16 = 216;
/// The sticky word being listed.
pub const DEC_STICKY_WORD: i16 = 220;
/// Stream offset where the message of the last run ends: a run that
/// starts at or after it starts a new `send()` (deny answers, switches).
pub const MSG_END: i16 = 224;
/// The request start [`REQ_NEW`] was taken for.
pub const REQ_AT: i16 = 232;
/// Where the message that ended the switch request ends: client bytes
/// before it are early, whatever the server says.
pub const SW_MSG_END: i16 = 240;
/// The switch request's own end (its tunnel verdict's end when refused).
pub const SW_REQ_END: i16 = 248;
/// The answer to send: its offset in `.rodata` and its length.
pub const ANS_OFF: i16 = 256;
pub const ANS_LEN: i16 = 260;
/// 1 when the request at [`REQ_AT`] started in a later message than the
/// one before it ended (language.md §6: not pipelined).
pub const REQ_NEW: i16 = 264;
/// The kind of the request being forwarded (`abi::peer::KIND_*`).
pub const REQ_KIND: i16 = 265;
/// 1 once a request was redirected elsewhere: its answer never comes on
/// this connection, so no later deny is answered (it would read as the
/// redirected request's answer).
pub const REDIRECTED_ONCE: i16 = 266;
/// The governing policy, set once when its scope selects the connection
/// (`frame::select_policy`): its descriptor's offset in `.rodata`
/// (`tables::desc`), its lane records' offset (`tables::lane`), its path
/// lanes' group, its limits, whether it audits (`event_flags::AUDIT` or
/// 0), the read window of a head, and the header ids whose values its
/// matchers read. The code of every policy is one; only these and the
/// tables they point at differ (issue 15, "Many policies"). `P_NAME_SKIP`:
/// 1 when name bytes may be skipped once the header-name lane is dead.
pub const P_DESC: i16 = 272;
pub const P_LANES: i16 = 276;
pub const P_HEADER_BYTES: i16 = 280;
pub const P_HEADERS: i16 = 284;
pub const P_WINDOW: i16 = 288;
pub const P_PATH_GROUP: i16 = 292;
pub const P_AUDIT: i16 = 294;
pub const P_NAME_SKIP: i16 = 295;
pub const P_READ: i16 = 296;
/// The governing policy's automaton states start here: lane `i`'s state
/// at `AREA + 4 i`.
pub const AREA: i16 = 304;

/// Offsets inside `HeadState` (scan/walk.rs, tested there).
pub mod head {
    pub const PRESENT: i16 = 0;
    pub const REPEATED: i16 = 8;
    pub const VALUE_BAD: i16 = 16;
    pub const CONTENT_LENGTH: i16 = 24;
    pub const OFFSET: i16 = 32;
    pub const VIOLATION_OFFSET: i16 = 36;
    pub const STATE: i16 = 40;
    pub const SUB: i16 = 42;
    pub const FIELDS: i16 = 44;
    pub const HEADER_ID: i16 = 46;
    pub const ESCAPE_HIGH: i16 = 47;
    pub const LITERAL_LEN: i16 = 48;
    pub const MINOR_VERSION: i16 = 49;
    pub const FORM: i16 = 50;
    pub const STATUS: i16 = 51;
    pub const VIOLATION: i16 = 52;
    pub const METHOD: i16 = 53;
    pub const BYTES: i16 = 56;
}

/// Offsets inside `ChunkState` (scan/chunk.rs).
pub mod chunk {
    pub const SIZE: i16 = 0;
    pub const REMAINING: i16 = 8;
    pub const TRAILER_BYTES: i16 = 16;
    pub const TRAILER_FIELDS: i16 = 20;
    pub const LINE_LEN: i16 = 24;
    pub const STATE: i16 = 26;
    pub const STATUS: i16 = 27;
}

/// The BTF type of the state: the named fixed fields, then the scanners'
/// states and the automata area as bytes (`total` bytes in all).
pub fn state_type(total: u32) -> DataType {
    let total = total.max(AREA as u32);
    DataType::Struct {
        name: "l7_conn_state".to_owned(),
        fields: vec![
            Field::new("phase", DataType::Bytes(1)),
            Field::new("policy", DataType::Bytes(1)),
            Field::new("flags", DataType::Bytes(1)),
            Field::new("redirect_flags", DataType::Bytes(1)),
            Field::new("index", DataType::U32),
            Field::new("offset", DataType::U64),
            Field::new("body_left", DataType::U64),
            Field::new("redirect_msg_end", DataType::U64),
            Field::new("scratch", DataType::Bytes((HEAD - 32) as u32)),
            Field::new("head", DataType::Bytes((CHUNK - HEAD) as u32)),
            Field::new("chunk", DataType::Bytes((DEC_LIST - CHUNK) as u32)),
            Field::new("decision", DataType::Bytes((P_DESC - DEC_LIST) as u32)),
            Field::new("policy_params", DataType::Bytes((AREA - P_DESC) as u32)),
            Field::new("automata", DataType::Bytes(total - AREA as u32)),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanners_states_fit_their_places() {
        assert_eq!(std::mem::size_of::<crate::scan::HeadState>() as i16, CHUNK - HEAD);
        assert_eq!(std::mem::size_of::<crate::scan::ChunkState>() as i16, DEC_LIST - CHUNK);
        const { assert!(V_INDEX + 4 <= CORKED && CORKED < HEAD) };
    }
}
