//! The enrollment path of `l7c run`: a cgroup `sock_ops` program puts each
//! connection a process in the cgroup establishes into the `SOCKHASH`
//! under a `SockKey` it builds from `struct bpf_sock_ops`, and the `sk_msg`
//! program then polices that connection. Checks that the key the kernel
//! program builds is byte for byte the one `SockKey::new` builds in user
//! space. One test in its own binary: it makes and removes a cgroup.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use l7c_compiler::bpf::{Asm, Helper, R0, R1, R10, R2, R3, R4, R6};
use l7c_compiler::elf::{MapDef, ObjectBuilder};
use l7c_runtime::{KernelProgram, LoadOptions, SockKey, SOCK_KEY_SIZE};

/// `BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB`.
const ACTIVE_ESTABLISHED_CB: i32 = 4;

/// Offsets in `struct bpf_sock_ops`.
mod sock_ops {
    pub const OP: i16 = 0;
    pub const FAMILY: i16 = 20;
    pub const REMOTE_IP4: i16 = 24;
    pub const LOCAL_IP4: i16 = 28;
    pub const REMOTE_PORT: i16 = 64;
    pub const LOCAL_PORT: i16 = 68;
}

/// The key on the stack at r10 - 48 (44 bytes, zeroed first).
const KEY: i16 = -48;

fn enroll_program() -> l7c_compiler::bpf::Program {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.ldxw(R1, R6, sock_ops::OP)
        .jne(R1, ACTIVE_ESTABLISHED_CB, "out");
    for word in 0..6 {
        a.stdw(R10, KEY + word * 8, 0);
    }
    for (from, to) in [
        (sock_ops::FAMILY, 0),
        (sock_ops::REMOTE_IP4, 4),
        (sock_ops::LOCAL_IP4, 20),
        (sock_ops::REMOTE_PORT, 36),
        (sock_ops::LOCAL_PORT, 40),
    ] {
        a.ldxw(R1, R6, from).stxw(R10, KEY + to, R1);
    }
    a.mov64(R1, R6)
        .ld_map(R2, SOCKS)
        .mov64(R3, R10)
        .add64(R3, i32::from(KEY))
        .mov64(R4, 0);
    a.call(Helper::SockHashUpdate);
    a.label("out").mov64(R0, 1).exit();
    a.finish().expect("sock_ops program")
}

fn object() -> Vec<u8> {
    let mut drop_all = Asm::new();
    drop_all.mov64(R0, 0).exit();
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "l7_verdict", drop_all.finish().unwrap());
    object.program("sockops", "l7_enroll", enroll_program());
    object.map(MapDef::sock_hash(SOCKS, SOCK_KEY_SIZE as u32, 64));
    object.write().unwrap()
}


#[test]
fn sock_ops_enrolls_connections_under_the_user_space_key() {
    if !kernel_ready("sock_ops_enrolls_connections_under_the_user_space_key") {
        return;
    }
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    if !root.join("cgroup.procs").exists() {
        eprintln!(
            "SKIPPED sock_ops_enrolls_connections_under_the_user_space_key: no cgroup2 mount at {}",
            root.display()
        );
        return;
    }
    let cgroup = Cgroup(root.join(format!("l7c-test-{}", std::process::id())));
    std::fs::create_dir(&cgroup.0).expect("create cgroup");

    let mut program = KernelProgram::load(
        &object(),
        &LoadOptions {
            program: Some("l7_verdict"),
            attach_map: Some(SOCKS),
        },
    )
    .expect("load");
    program
        .attach_sock_ops("l7_enroll", &cgroup.0)
        .expect("attach sock_ops");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A shell that moves itself into the cgroup, then connects (bash's
    // /dev/tcp) and sends; its socket is enrolled on ACTIVE_ESTABLISHED.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port} && printf hello >&3; sleep 1",
        cgroup.0.display()
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .spawn()
        .expect("bash");
    // Bounded accept: a shell that failed must not hang the test.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut server = loop {
        match listener.accept() {
            Ok((server, _)) => break server,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => {
                let _ = child.kill();
                panic!("the shell in the cgroup never connected: {error}");
            }
        }
    };
    server.set_nonblocking(false).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buffer = [0u8; 64];
    // A timeout means nothing arrived.
    let got = server.read(&mut buffer).unwrap_or(0);
    // The drop-all verdict applied: the connection was enrolled.
    assert_eq!(got, 0, "the enrolled client's bytes must be dropped");
    // The key the sock_ops program built is the one user space builds for
    // the client: its local address is our peer, its remote is us.
    let key = SockKey::new(server.peer_addr().unwrap(), server.local_addr().unwrap()).to_bytes();
    assert!(
        program.delete(SOCKS, &key).expect("delete"),
        "no element under the user-space key"
    );
    let _ = child.wait();
    drop(program);
}
