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

// What `l7c run` and `l7c probe` add: loading a program from raw
// instructions, cgroup links that can be updated in place, map key
// iteration and plain map creation.

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `BPF_PROG_TYPE_SOCK_OPS`.
pub const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
/// `BPF_CGROUP_SOCK_OPS` in `enum bpf_attach_type`.
pub const BPF_CGROUP_SOCK_OPS: u32 = 3;
/// `BPF_PROG_TYPE_CGROUP_SOCKOPT`.
pub const BPF_PROG_TYPE_CGROUP_SOCKOPT: u32 = 25;
/// `BPF_CGROUP_SETSOCKOPT` in `enum bpf_attach_type`.
pub const BPF_CGROUP_SETSOCKOPT: u32 = 22;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_INET4_CONNECT` and `BPF_CGROUP_INET6_CONNECT` in `enum
/// bpf_attach_type`.
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
/// `BPF_PROG_TYPE_CGROUP_SOCK` and `BPF_CGROUP_INET_SOCK_CREATE`.
pub const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
/// `BPF_PROG_TYPE_SK_SKB` and its verdict attach type without a stream
/// parser (5.13+).
pub const BPF_PROG_TYPE_SK_SKB: u32 = 14;
pub const BPF_SK_SKB_VERDICT: u32 = 38;
pub const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;

/// Like [`bpf`], for the commands that return a new file descriptor.
fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: as in `bpf`.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(ret).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `union bpf_attr` as `BPF_MAP_CREATE` reads it (the leading fields).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `BPF_MAP_CREATE` of a map without BTF.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> Result<std::os::fd::OwnedFd, Errno> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (or the first key when
/// `key` is `None`) written into `next`; `ENOENT` after the last.
pub fn map_next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        _pad: 0,
        key: key.map_or(0, |key| key.as_ptr() as u64),
        value: next.as_mut_ptr() as u64,
        flags: 0,
    };
    bpf(BPF_MAP_GET_NEXT_KEY, &mut attr)
}

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to
/// `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `BPF_PROG_LOAD` of `code` (encoded instructions, map loads already
/// resolved to fds) as `prog_type`, license GPL. On a refusal the error
/// carries the verifier's log.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    code: &[u8],
) -> Result<std::os::fd::OwnedFd, (Errno, String)> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    // At most 15 bytes: the kernel wants a NUL-terminated name.
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(code.len() / 8).unwrap_or(u32::MAX),
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type,
    };
    bpf_fd(BPF_PROG_LOAD, &mut attr).map_err(|errno| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        (errno, String::from_utf8_lossy(log.get(..end).unwrap_or(&[])).into_owned())
    })
}

const BPF_BTF_LOAD: libc::c_long = 18;

/// `union bpf_attr` as `BPF_BTF_LOAD` reads it. Every byte is a named
/// field: the struct would otherwise end in 4 bytes of padding with
/// whatever the stack held, and 6.1 refuses (`EINVAL`) an attr whose bytes
/// past the fields it knows are not zero (measured in the test bed: the
/// load failed or not depending on the stack).
#[repr(C)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// `btf_log_true_size` (6.4+, written by the kernel): zero.
    btf_log_true_size: u32,
}

/// `BPF_BTF_LOAD` of a BTF blob (types and strings); a refusal is tried
/// again with a log, which comes back with the errno.
pub fn btf_load(btf: &[u8]) -> Result<std::os::fd::OwnedFd, (Errno, String)> {
    let btf_size = u32::try_from(btf.len()).map_err(|_| (Errno::E2BIG, String::new()))?;
    let mut attr =
        BtfLoadAttr { btf: btf.as_ptr() as u64, btf_log_buf: 0, btf_size, btf_log_size: 0, btf_log_level: 0, btf_log_true_size: 0 };
    bpf_fd(BPF_BTF_LOAD, &mut attr).or_else(|errno| {
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = BtfLoadAttr {
            btf: btf.as_ptr() as u64,
            btf_log_buf: log.as_mut_ptr() as u64,
            btf_size,
            btf_log_size: log.len() as u32,
            btf_log_level: 1,
            btf_log_true_size: 0,
        };
        bpf_fd(BPF_BTF_LOAD, &mut attr).map_err(|_| {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            (errno, String::from_utf8_lossy(log.get(..end).unwrap_or(&[])).into_owned())
        })
    })
}

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to `attach_btf_id`:
/// the program's BTF and its func_info (one `[insn_off, type_id]` record
/// per function).
#[repr(C)]
struct ProgLoadFuncAttr {
    base: ProgLoadAttr,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// The verifier log kept when a program with functions is refused: its
/// log lists every instruction verified, so the refusal at its end needs
/// room (the kernel returns `ENOSPC` instead of the refusal when the log
/// does not fit, so a load that succeeds is tried without a log first).
const FUNCTIONS_LOG_BYTES: usize = 16 << 20;

/// `BPF_PROG_LOAD` of a program with subprograms (`bpf_loop` callbacks):
/// as [`prog_load`], with the BTF `btf` and one func_info record
/// `[instruction offset, FUNC type id]` per function, main first. Loaded
/// without a log; on a refusal, loaded again with one to report why.
pub fn prog_load_with_functions(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    code: &[u8],
    btf: BorrowedFd<'_>,
    func_info: &[[u32; 2]],
) -> Result<std::os::fd::OwnedFd, (Errno, String)> {
    let license = b"GPL\0";
    let mut prog_name = [0u8; 16];
    // At most 15 bytes: the kernel wants a NUL-terminated name.
    for (slot, byte) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = byte;
    }
    let attempt = |log: Option<&mut Vec<u8>>| {
        let (log_level, log_size, log_buf) = match log {
            Some(log) => (1, u32::try_from(log.len()).unwrap_or(0), log.as_mut_ptr() as u64),
            None => (0, 0, 0),
        };
        let mut attr = ProgLoadFuncAttr {
            base: ProgLoadAttr {
                prog_type,
                insn_cnt: u32::try_from(code.len() / 8).unwrap_or(u32::MAX),
                insns: code.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level,
                log_size,
                log_buf,
                kern_version: 0,
                prog_flags: 0,
                prog_name,
                prog_ifindex: 0,
                expected_attach_type,
            },
            prog_btf_fd: fd_u32(btf),
            func_info_rec_size: 8,
            func_info: func_info.as_ptr() as u64,
            func_info_cnt: u32::try_from(func_info.len()).unwrap_or(0),
            line_info_rec_size: 0,
            line_info: 0,
            line_info_cnt: 0,
            attach_btf_id: 0,
        };
        bpf_fd(BPF_PROG_LOAD, &mut attr)
    };
    attempt(None).or_else(|errno| {
        let mut log = vec![0u8; FUNCTIONS_LOG_BYTES];
        let again = attempt(Some(&mut log));
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(log.get(..end).unwrap_or(&[])).into_owned();
        match again {
            // Loaded the second time (a transient failure): keep it.
            Ok(fd) => Ok(fd),
            Err(_) => Err((errno, text)),
        }
    })
}

/// `union bpf_attr` as `BPF_LINK_CREATE` reads it for cgroup targets.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `BPF_LINK_CREATE`: attaches `program` to `target` (a cgroup) for as
/// long as the returned link fd is open.
pub fn link_create(
    program: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> Result<std::os::fd::OwnedFd, Errno> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(program),
        target_fd: fd_u32(target),
        attach_type,
        flags: 0,
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// `union bpf_attr` as `BPF_LINK_UPDATE` reads it.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// `BPF_LINK_UPDATE`: the link runs `program` from now on, atomically.
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut attr = LinkUpdateAttr {
        link_fd: fd_u32(link),
        new_prog_fd: fd_u32(program),
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr)
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

/// `union bpf_attr` as `BPF_OBJ_PIN` / `BPF_OBJ_GET` read it.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn c_path(path: &std::path::Path) -> Result<std::ffi::CString, Errno> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `BPF_OBJ_PIN`: `fd` (a map, program or link) stays alive under `path`
/// in a bpffs mount until the file is removed, whatever happens to this
/// process.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> Result<(), Errno> {
    let name = c_path(path)?;
    let mut attr = ObjAttr { pathname: name.as_ptr() as u64, bpf_fd: fd_u32(fd), file_flags: 0 };
    bpf(BPF_OBJ_PIN, &mut attr)
}

/// `BPF_OBJ_GET`: a new fd for the object pinned at `path`.
pub fn obj_get(path: &std::path::Path) -> Result<std::os::fd::OwnedFd, Errno> {
    let name = c_path(path)?;
    let mut attr = ObjAttr { pathname: name.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    bpf_fd(BPF_OBJ_GET, &mut attr)
}
