//! `l7c probe`: what this kernel offers, each capability *tried*, never
//! guessed from the version string: maps are created, tiny programs are
//! loaded (and attached), kTLS is switched on for real on loopback sockets,
//! once alone and once for a socket that sits in a socket map.
//!
//! Every probe cleans up after itself (its fds close when it returns).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use l7c_bpf::bpf::{sk_msg_md, Asm, Helper, Program, R0, R1, R10, R2, R3, R4, R6};
use l7c_bpf::elf::{DataType, MapDef, ObjectBuilder};

use crate::errno::Errno;
use crate::error::KernelError;
use crate::loader::{KernelProgram, LoadOptions};
use crate::{sys, SockKey, SOCK_KEY_SIZE};

/// One capability and what trying it showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Stable identifier (JSON key): `bpf_syscall`, `sockmap`, ...
    pub name: &'static str,
    /// Whether `l7c run` needs it: a missing required capability fails
    /// the probe (exit 1).
    pub required: bool,
    pub available: bool,
    /// What was tried and what happened.
    pub detail: String,
}

/// The probe's findings.
#[derive(Clone, Debug)]
pub struct Report {
    /// `uname -r`, for the reader only.
    pub kernel: String,
    pub capabilities: Vec<Capability>,
}

impl Report {
    /// Whether every required capability is available.
    pub fn ok(&self) -> bool {
        self.capabilities.iter().all(|c| c.available || !c.required)
    }

    /// Whether the BPF syscall itself was refused for lack of privilege
    /// (the rest could not be tried).
    pub fn not_permitted(&self) -> bool {
        self.capabilities
            .iter()
            .find(|c| c.name == "bpf_syscall")
            .is_some_and(|c| !c.available && c.detail.contains("EPERM"))
    }
}

/// `BPF_MAP_TYPE_*` numbers tried by the probe.
mod map_type {
    pub const ARRAY: u32 = 2;
    pub const SOCKMAP: u32 = 15;
    pub const SOCKHASH: u32 = 18;
    pub const RINGBUF: u32 = 27;
}

/// Runs every probe.
pub fn probe() -> Report {
    let mut capabilities = Vec::new();
    let mut add = |name, required, result: Result<String, String>| {
        let (available, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        capabilities.push(Capability {
            name,
            required,
            available,
            detail,
        });
    };
    add("privileges", true, privileges());
    add("bpf_syscall", true, try_map(map_type::ARRAY, 4, 4, 1, "ARRAY"));
    add(
        "sockmap",
        true,
        try_map(map_type::SOCKHASH, SOCK_KEY_SIZE as u32, 4, 1, "SOCKHASH")
            .and_then(|hash| try_map(map_type::SOCKMAP, 4, 4, 1, "SOCKMAP").map(|map| format!("{hash}; {map}"))),
    );
    add("sk_msg", true, try_sk_msg());
    add("receive_verdict", true, try_receive_verdict());
    add(
        "bounded_loops",
        false,
        try_program("a bounded loop", bounded_loop())
            .map_err(|refused| format!("{refused} (not needed: l7c's program loops with bpf_loop)")),
    );
    add("bpf_loop", true, try_program("a bpf_loop callback", bpf_loop()));
    add(
        "ring_buffer",
        true,
        try_map(map_type::RINGBUF, 0, 0, 4096, "RINGBUF (4 KiB)"),
    );
    add("sk_storage", true, try_sk_storage());
    add("cgroup_v2", true, try_cgroup2());
    add("sock_ops", true, try_sock_ops());
    let (ktls, ktls_in_map) = try_ktls();
    add("ktls", false, ktls);
    add("ktls_in_sockmap", false, ktls_in_map);
    Report {
        kernel: kernel_release(),
        capabilities,
    }
}

/// The capabilities of `privileges::REQUIRED` that `l7c run` needs, as
/// this process holds them.
fn privileges() -> Result<String, String> {
    let missing = crate::privileges::missing(crate::privileges::Need::Node);
    if missing.is_empty() {
        let names: Vec<_> = crate::privileges::REQUIRED.iter().map(|cap| cap.name).collect();
        Ok(format!("this process holds {}", names.join(", ")))
    } else {
        Err(crate::privileges::refusal("`l7c run`", &missing))
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn try_map(map_type: u32, key: u32, value: u32, entries: u32, what: &str) -> Result<String, String> {
    match sys::map_create(map_type, key, value, entries, 0) {
        Ok(_fd) => Ok(format!("BPF_MAP_CREATE of a {what} map: created")),
        Err(errno) => Err(format!("BPF_MAP_CREATE of a {what} map failed with {errno}")),
    }
}

/// An object with `program` as its `sk_msg` program and a socket hash.
fn object(program: Program, extra: Vec<MapDef>) -> Result<Vec<u8>, String> {
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "l7c_probe", program);
    object.map(MapDef::sock_hash("l7c_probe_socks", SOCK_KEY_SIZE as u32, 4));
    // The receive verdict reads the connections' records.
    object.map(l7c_abi::receive::peer_map());
    for map in extra {
        object.map(map);
    }
    object.write().map_err(|error| format!("internal error writing the probe object: {error}"))
}

fn describe(error: &KernelError) -> String {
    error.to_string().replace('\n', " / ")
}

fn pass_all() -> Result<Program, String> {
    let mut a = Asm::new();
    a.mov64(R0, 1).exit();
    a.finish().map_err(|e| e.to_string())
}

fn try_sk_msg() -> Result<String, String> {
    let bytes = object(pass_all()?, Vec::new())?;
    let program = KernelProgram::load(&bytes, &LoadOptions::default()).map_err(|e| describe(&e))?;
    // A socket in the map runs the program: send through it.
    let (client, mut server) = enrolled_pair(&program)?;
    (&client).write_all(b"probe").map_err(|e| format!("send through the enrolled socket: {e}"))?;
    let mut got = [0u8; 5];
    server
        .read_exact(&mut got)
        .map_err(|e| format!("the peer of the enrolled socket got nothing: {e}"))?;
    Ok(format!(
        "loaded an sk_msg program ({} processed instructions), attached it to a SOCKHASH, and a socket in the map delivered through it",
        program.verified_instruction_count().map_or("?".to_owned(), |n| n.to_string())
    ))
}

/// The receive-side verdict on a socket map, and what `ioctl(FIONREAD)`
/// says on an enrolled socket with and without it (kernels with upstream
/// 929e30f93125 answer 0 without it).
fn try_receive_verdict() -> Result<String, String> {
    let with = fionread_on_an_enrolled_socket(true)?;
    let without = fionread_on_an_enrolled_socket(false)?;
    if with != 566 {
        return Err(format!("with the receive verdict attached, FIONREAD said {with} with 566 bytes queued"));
    }
    Ok(format!(
        "an sk_skb verdict attached to the socket map (BPF_SK_SKB_VERDICT); FIONREAD with 566 bytes queued: {with} with it, {without} without it{}",
        if without == 566 { "" } else { " (this kernel miscounts without a receive-side verdict)" }
    ))
}

/// Whether this kernel miscounts `ioctl(FIONREAD)` on a socket in a
/// socket map without a receive-side verdict (upstream 929e30f93125), tried
/// for real; `true` too when the trial itself fails (the verdict is then
/// attached, which is right on every kernel).
pub fn fionread_needs_a_receive_verdict() -> bool {
    fionread_on_an_enrolled_socket(false) != Ok(566)
}

/// What FIONREAD says on an enrolled socket with 566 bytes queued, with or
/// without the receive verdict attached.
fn fionread_on_an_enrolled_socket(verdict: bool) -> Result<i32, String> {
    let bytes = object(pass_all()?, Vec::new())?;
    let program = KernelProgram::load(&bytes, &LoadOptions::default()).map_err(|e| describe(&e))?;
    if verdict {
        program.attach_receive_verdict().map_err(|e| describe(&e))?;
    }
    let (client, mut server) = enrolled_pair(&program)?;
    server.write_all(&[b'x'; 566]).map_err(|e| format!("send to the enrolled socket: {e}"))?;
    // Readable once the bytes are queued (loopback: at once); then what
    // FIONREAD says of them.
    let mut ready = libc::pollfd { fd: client.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own, for the length given.
    if unsafe { libc::poll(&mut ready, 1, 2000) } != 1 {
        return Err("the enrolled socket never became readable".to_owned());
    }
    std::thread::sleep(Duration::from_millis(20));
    fionread(&client)
}

/// `ioctl(FIONREAD)` on `socket`.
fn fionread(socket: &TcpStream) -> Result<i32, String> {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut queued) };
    if ret == 0 {
        Ok(queued)
    } else {
        Err(format!("ioctl(FIONREAD) failed with {}", crate::Errno::last()))
    }
}

fn try_program(what: &str, program: Result<Program, String>) -> Result<String, String> {
    let bytes = object(program?, Vec::new())?;
    match KernelProgram::load(&bytes, &LoadOptions::default()) {
        Ok(loaded) => Ok(format!(
            "the verifier accepted {what} ({} processed instructions)",
            loaded.verified_instruction_count().map_or("?".to_owned(), |n| n.to_string())
        )),
        Err(error) => Err(format!("the kernel refused {what}: {}", describe(&error))),
    }
}

/// `for (i = 0; i < 16; i++) r0 ^= i` with a back edge: refused before 5.3.
fn bounded_loop() -> Result<Program, String> {
    let mut a = Asm::new();
    a.mov64(R0, 0).mov64(R1, 0);
    a.label("top");
    a.xor64(R0, R1).add64(R1, 1);
    a.jlt(R1, 16, "top");
    a.mov64(R0, 1).exit();
    a.finish().map_err(|e| e.to_string())
}

/// `bpf_loop(4, callback, &ctx, 0)` (5.17+).
fn bpf_loop() -> Result<Program, String> {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.stdw(R10, -8, 0);
    a.mov64(R1, 4);
    a.ld_func(R2, "step");
    a.mov64(R3, R10).add64(R3, -8);
    a.mov64(R4, 0);
    a.call(Helper::Loop);
    a.mov64(R0, 1).exit();
    a.function("step");
    a.mov64(R0, 0).exit();
    a.finish().map_err(|e| e.to_string())
}

fn try_sk_storage() -> Result<String, String> {
    // sk_storage_get(map, msg->sk, 0, F_CREATE) in an sk_msg program: the
    // map type, BTF for its value, and the helper on msg->sk (5.8+).
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.ld_map(R1, "l7c_probe_store");
    a.ldxdw(R2, R6, sk_msg_md::SK);
    a.mov64(R3, 0).mov64(R4, 1);
    a.call(Helper::SkStorageGet);
    a.mov64(R0, 1).exit();
    let program = a.finish().map_err(|e| e.to_string())?;
    let store = MapDef::sk_storage("l7c_probe_store", DataType::U64)
        .with_flags(l7c_bpf::elf::BPF_F_NO_PREALLOC);
    let bytes = object(program, vec![store])?;
    KernelProgram::load(&bytes, &LoadOptions::default())
        .map(|_| "created an SK_STORAGE map and loaded sk_storage_get on msg->sk".to_owned())
        .map_err(|e| describe(&e))
}

fn try_cgroup2() -> Result<String, String> {
    let mounts = crate::cgroup::cgroup2_mounts();
    if mounts.is_empty() {
        return Err(format!("no cgroup2 mount in /proc/self/mountinfo; {}", crate::cgroup::MOUNT_HELP));
    }
    Ok(format!(
        "mounted at {}",
        mounts.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")
    ))
}

fn try_sock_ops() -> Result<String, String> {
    // The enrollment program itself, against a 44-byte-key SOCKHASH named
    // as it expects.
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "l7c_probe", pass_all()?);
    object.map(MapDef::sock_hash(
        l7c_abi::maps::SOCKETS,
        SOCK_KEY_SIZE as u32,
        4,
    ));
    for map in l7c_abi::enroll::gate_maps() {
        object.map(map);
    }
    // It creates and deletes the connections' records.
    object.map(l7c_abi::receive::peer_map());
    let bytes = object.write().map_err(|e| e.to_string())?;
    let program = KernelProgram::load(&bytes, &LoadOptions::default()).map_err(|e| describe(&e))?;
    program
        .load_companion(
            l7c_abi::enroll::PROGRAM_NAME,
            sys::BPF_PROG_TYPE_SOCK_OPS,
            0,
            &l7c_abi::enroll::program(),
        )
        .map_err(|e| describe(&e))?;
    for (name, attach_type) in [
        (l7c_abi::enroll::gate::PROGRAM_NAME_4, sys::BPF_CGROUP_INET4_CONNECT),
        (l7c_abi::enroll::gate::PROGRAM_NAME_6, sys::BPF_CGROUP_INET6_CONNECT),
    ] {
        program
            .load_companion(name, sys::BPF_PROG_TYPE_CGROUP_SOCK_ADDR, attach_type, &l7c_abi::enroll::gate::program())
            .map_err(|e| describe(&e))?;
    }
    Ok("the verifier accepted the sock_ops enrollment program and the connect4/connect6 gate".to_owned())
}

fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    server.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok((client, server))
}

/// A loopback connection whose client socket is in `program`'s socket map.
fn enrolled_pair(program: &KernelProgram) -> Result<(TcpStream, TcpStream), String> {
    let (client, server) = loopback_pair().map_err(|e| format!("loopback connection: {e}"))?;
    let key = SockKey::new(
        client.local_addr().map_err(|e| e.to_string())?,
        client.peer_addr().map_err(|e| e.to_string())?,
    );
    program
        .insert_socket(program.attach_map(), &key.to_bytes(), client.as_fd())
        .map_err(|e| describe(&e))?;
    Ok((client, server))
}

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_1_2_VERSION: u16 = 0x0303;
const TLS_CIPHER_AES_GCM_128: u16 = 51;

/// `struct tls12_crypto_info_aes_gcm_128`.
#[repr(C)]
struct CryptoInfo {
    version: u16,
    cipher_type: u16,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

/// `setsockopt(TCP_ULP, "tls")` then `setsockopt(SOL_TLS, TLS_TX, ...)`
/// with a throwaway key.
fn enable_ktls(socket: &TcpStream) -> Result<(), String> {
    let fd = socket.as_raw_fd();
    let ulp = b"tls";
    // SAFETY: setsockopt reads `ulp.len()` bytes from a live slice.
    let ret = unsafe {
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_ULP, ulp.as_ptr().cast(), ulp.len() as libc::socklen_t)
    };
    if ret != 0 {
        let errno = Errno::last();
        let hint = if errno == Errno::ENOENT {
            " (the `tls` module is not loaded: `modprobe tls`)"
        } else {
            ""
        };
        return Err(format!("setsockopt(TCP_ULP, \"tls\") failed with {errno}{hint}"));
    }
    let info = CryptoInfo {
        version: TLS_1_2_VERSION,
        cipher_type: TLS_CIPHER_AES_GCM_128,
        iv: [1; 8],
        key: [2; 16],
        salt: [3; 4],
        rec_seq: [0; 8],
    };
    // SAFETY: setsockopt reads size_of::<CryptoInfo>() bytes from `info`.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            SOL_TLS,
            TLS_TX,
            (&info as *const CryptoInfo).cast(),
            std::mem::size_of::<CryptoInfo>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(format!("setsockopt(SOL_TLS, TLS_TX) failed with {}", Errno::last()));
    }
    Ok(())
}

/// What the kernel does with kTLS, as `l7c run` reports it in its log
/// and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KtlsState {
    /// `available` or `unavailable` (kTLS on a plain socket).
    pub kernel: &'static str,
    /// `allowed`, `refused` (the kernel refuses kTLS on a socket in a
    /// socket map) or `untested` (no kTLS at all).
    pub enrolled: &'static str,
    /// What was tried and what happened.
    pub detail: String,
}

impl Default for KtlsState {
    fn default() -> Self {
        KtlsState { kernel: "untested", enrolled: "untested", detail: String::new() }
    }
}

/// Tries kTLS on a plain socket and on an enrolled one (`l7c probe`'s
/// `ktls` and `ktls_in_sockmap`).
pub fn ktls_state() -> KtlsState {
    match try_ktls() {
        (Err(why), _) => KtlsState { kernel: "unavailable", enrolled: "untested", detail: why },
        (Ok(_), Ok(what)) => KtlsState { kernel: "available", enrolled: "allowed", detail: what },
        (Ok(_), Err(why)) => KtlsState { kernel: "available", enrolled: "refused", detail: why },
    }
}

/// (kTLS on a plain socket, kTLS on a socket in a socket map).
fn try_ktls() -> (Result<String, String>, Result<String, String>) {
    let plain = loopback_pair()
        .map_err(|e| format!("loopback connection: {e}"))
        .and_then(|(client, _server)| enable_ktls(&client))
        .map(|()| "TCP_ULP \"tls\" and TLS_TX (AES-GCM-128) enabled on a loopback socket".to_owned());
    if let Err(why) = &plain {
        let in_map = Err(format!("not tried: kTLS itself is unavailable ({why})"));
        return (plain, in_map);
    }
    let in_map = (|| {
        let bytes = object(pass_all()?, Vec::new())?;
        let program = KernelProgram::load(&bytes, &LoadOptions::default()).map_err(|e| describe(&e))?;
        let (client, _server) = enrolled_pair(&program)?;
        enable_ktls(&client).map_err(|e| {
            format!("{e} on a socket in a SOCKHASH with an sk_msg program: an enrolled application cannot use kTLS; its TLS library falls back to user-space TLS and the policy's `opaque` setting decides")
        })?;
        Ok("kTLS enabled on a socket in a SOCKHASH with an sk_msg program".to_owned())
    })();
    (plain, in_map)
}

/// The report as one JSON object.
pub fn to_json(report: &Report) -> String {
    use crate::events::json_string;
    let capabilities = report
        .capabilities
        .iter()
        .map(|c| {
            format!(
                "{{\"name\":{},\"available\":{},\"required\":{},\"detail\":{}}}",
                json_string(c.name),
                c.available,
                c.required,
                json_string(&c.detail)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{\"kernel\":{},\"ok\":{},\"capabilities\":[{capabilities}]}}",
        json_string(&report.kernel),
        report.ok()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_programs_assemble() {
        assert!(bounded_loop().is_ok());
        assert!(bpf_loop().is_ok());
        assert_eq!(pass_all().unwrap().insns().len(), 2);
        assert_eq!(std::mem::size_of::<CryptoInfo>(), 40);
    }
}
