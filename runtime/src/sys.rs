//! The few `bpf(2)` commands aya 0.14 does not expose for byte-sized keys
//! and values: element lookup/update/delete on any map by raw bytes, and
//! attaching/detaching an `sk_msg` program to a socket map of any key size
//! (aya's `SkMsg::attach` wants a `SockMapFd`, which it only hands out for
//! a `SockHash<K>` whose Rust key type has the map's key size).
//!
//! Invariant: every pointer passed to the kernel points into a live slice
//! whose length the kernel is told (or, for map elements, that is at least
//! the map's key or value size, which the callers check).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::errno::Errno;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;

/// `BPF_SK_MSG_VERDICT` in `enum bpf_attach_type`.
pub const BPF_SK_MSG_VERDICT: u32 = 7;
/// `BPF_ANY`: create or replace an element.
pub const BPF_ANY: u64 = 0;

/// `union bpf_attr` as the `BPF_MAP_*_ELEM` commands read it.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` as `BPF_PROG_ATTACH`/`BPF_PROG_DETACH` read it (the
/// fields up to `replace_bpf_fd`; the kernel zero-fills the rest).
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<(), Errno> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` prefix of `union
    // bpf_attr` whose size we pass; the pointers inside it follow the
    // module invariant.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // Cannot fail: a borrowed fd is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

/// `BPF_MAP_UPDATE_ELEM`; `key` and `value` must have the map's sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// `BPF_MAP_LOOKUP_ELEM` into `value` (the map's value size; for per-CPU
/// maps, the value size rounded up to 8 times the number of possible CPUs).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<(), Errno> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)
}

/// `BPF_MAP_DELETE_ELEM`.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> Result<(), Errno> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        _pad: 0,
        key: key.as_ptr() as u64,
        value: 0,
        flags: 0,
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr)
}

/// `BPF_PROG_ATTACH` of `program` to `target` (a socket map for
/// `BPF_SK_MSG_VERDICT`).
pub fn prog_attach(
    target: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), Errno> {
    attach_command(BPF_PROG_ATTACH, target, program, attach_type)
}

/// `BPF_PROG_DETACH`, the inverse of [`prog_attach`].
pub fn prog_detach(
    target: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), Errno> {
    attach_command(BPF_PROG_DETACH, target, program, attach_type)
}

/// Attach and detach take the same attribute; only the command differs.
fn attach_command(
    command: libc::c_long,
    target: BorrowedFd<'_>,
    program: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<(), Errno> {
    let mut attr = ProgAttachAttr {
        target_fd: fd_u32(target),
        attach_bpf_fd: fd_u32(program),
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(command, &mut attr)
}
