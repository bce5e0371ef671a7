//! Connections that were established before the policy was: the
//! enrollment program runs when a connection is established, so a
//! connection a process of the cgroup opened earlier is not in any socket
//! map and its bytes are not judged. `l7c run` finds them at start (and
//! keeps counting them), says so, and with `--existing reset` ends them so
//! that their clients reconnect under the policy.
//!
//! How they are found: the processes of the cgroup and of every cgroup
//! below it (`cgroup.procs`), the socket inodes among their open files
//! (`/proc/PID/fd`), and the established TCP sockets of this network
//! namespace with those inodes (`/proc/net/tcp{,6}`), less those the
//! policy cannot govern (their remote port) and those already enrolled.
//! Processes in another network namespace are not seen (said in the
//! docs). How they are ended: `SOCK_DESTROY` over `NETLINK_SOCK_DIAG`
//! (what `ss -K` sends; `CONFIG_INET_DIAG_DESTROY`): the application's
//! next call on the socket fails with `ECONNABORTED` and the peer gets a
//! reset.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::errno::Errno;
use crate::events::{tcp_sockets, TcpSocket};
use crate::key::SockKey;

/// One unpoliced connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// A process of the cgroup that has it open.
    pub pid: u32,
}

/// The processes of `cgroup` and of every cgroup below it.
pub fn cgroup_pids(cgroup: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut dirs = vec![cgroup.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|line| line.trim().parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    pids
}

/// The socket inodes process `pid` has open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?;
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The established TCP connections processes of `cgroup` have open that a
/// policy could govern (`governed_ports`: `None` every remote port) and
/// that are not among `enrolled` (the keys of every socket map).
pub fn unpoliced(cgroup: &Path, governed_ports: Option<&[u16]>, enrolled: &HashSet<SockKey>) -> Vec<Existing> {
    const ESTABLISHED: u8 = 1;
    let mut owners = std::collections::HashMap::new();
    for pid in cgroup_pids(cgroup) {
        for inode in socket_inodes(pid) {
            owners.entry(inode).or_insert(pid);
        }
    }
    let mut found: Vec<Existing> = tcp_sockets()
        .into_iter()
        .filter(|socket: &TcpSocket| socket.state == ESTABLISHED)
        .filter(|socket| governed_ports.is_none_or(|ports| ports.contains(&socket.remote.port())))
        .filter(|socket| !enrolled.contains(&SockKey::new(socket.local, socket.remote)))
        .filter_map(|socket| Some(Existing { local: socket.local, remote: socket.remote, pid: *owners.get(&socket.inode)? }))
        .collect();
    found.sort_by_key(|existing| (existing.pid, existing.local));
    found
}

/// `struct nlmsghdr`.
#[repr(C)]
struct NetlinkHeader {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_req_v2` with its `struct inet_diag_sockid`.
#[repr(C)]
struct DestroyRequest {
    header: NetlinkHeader,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    ifindex: u32,
    cookie: [u32; 2],
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const INET_DIAG_NOCOOKIE: u32 = !0;

fn address_bytes(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
    }
    bytes
}

/// Ends the connection (`SOCK_DESTROY`, module docs). Errors name the
/// errno: `EOPNOTSUPP` without `CONFIG_INET_DIAG_DESTROY`, `ENOENT` when
/// it closed meanwhile.
pub fn reset(connection: &Existing) -> Result<(), Errno> {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `raw` is a new fd nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let family = match connection.local.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    let request = DestroyRequest {
        header: NetlinkHeader {
            len: std::mem::size_of::<DestroyRequest>() as u32,
            kind: SOCK_DESTROY,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            seq: 1,
            pid: 0,
        },
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        sport: connection.local.port().to_be_bytes(),
        dport: connection.remote.port().to_be_bytes(),
        src: address_bytes(connection.local.ip()),
        dst: address_bytes(connection.remote.ip()),
        ifindex: 0,
        cookie: [INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE],
    };
    // SAFETY: a zeroed sockaddr_nl is valid; nl_family set below.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `request` is a live #[repr(C)] value of the size passed; the
    // address is a sockaddr_nl of its size.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            (&request as *const DestroyRequest).cast(),
            std::mem::size_of::<DestroyRequest>(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(Errno::last());
    }
    let mut answer = [0u8; 512];
    // SAFETY: recv into a buffer we own, of the length passed.
    let got = unsafe { libc::recv(socket.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) };
    if got < 0 {
        return Err(Errno::last());
    }
    let kind = u16::from_ne_bytes([answer[4], answer[5]]);
    if got < 20 || kind != NLMSG_ERROR {
        return Err(Errno(libc::EPROTO));
    }
    match i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]) {
        0 => Ok(()),
        error => Err(Errno(-error)),
    }
}
