//! The record the two programs of an enrolled connection share
//! (`l7c_abi::peer`, in the map `l7_peer` under the connection's
//! [`SockKey`]), from user space: created zeroed where user space enrolls
//! a socket itself (the kernel engine's harness; for `l7c run` the
//! `sock_ops` program creates it), and read back.
//!
//! The `sk_msg` program counts the requests it forwards and notes their
//! kinds; the receive-side verdict (`l7c_abi::receive`) counts the final
//! responses that ended and sets the flags (docs/receive-side.md).

use l7c_abi::maps::PEERS;
use l7c_abi::peer::Peer;

use crate::error::KernelError;
use crate::key::SockKey;
use crate::loader::KernelProgram;

/// Creates the connection's record, zeroed (or zeroes an existing one):
/// nothing forwarded, nothing answered, framing at the start of a
/// response. Call it right after enrolling the socket, before any byte
/// crosses the connection.
pub fn open(program: &KernelProgram, key: &SockKey) -> Result<(), KernelError> {
    write(program, key, &Peer::default())
}

/// Replaces the connection's record with `peer` (what the tests use to
/// play the `sk_msg` program's part).
pub fn write(program: &KernelProgram, key: &SockKey, peer: &Peer) -> Result<(), KernelError> {
    program.update(PEERS, &key.to_bytes(), &peer.to_bytes())
}

/// The connection's record; `None` if it has none (never created, or
/// deleted when the connection closed).
pub fn read(program: &KernelProgram, key: &SockKey) -> Result<Option<Peer>, KernelError> {
    let Some(bytes) = program.lookup(PEERS, &key.to_bytes())? else {
        return Ok(None);
    };
    Peer::from_bytes(&bytes).map(Some).ok_or_else(|| KernelError::MapShape {
        name: PEERS.to_owned(),
        purpose: "as the connections' shared records".to_owned(),
        problem: format!("its values have {} bytes, not {}", bytes.len(), l7c_abi::peer::SIZE),
    })
}

/// Deletes the connection's record (what the `sock_ops` program does when
/// the connection closes); `false` if there was none.
pub fn close(program: &KernelProgram, key: &SockKey) -> Result<bool, KernelError> {
    program.delete(PEERS, &key.to_bytes())
}
