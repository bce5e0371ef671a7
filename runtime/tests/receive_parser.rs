//! The receive side's response parser (`l7c_abi::receive`) on real
//! loopback connections: a compiled policy object is loaded, the receive
//! verdict attached to its socket map, and for each case a fresh client
//! socket is enrolled, its `l7_peer` record created (`peer::open`) and
//! `forwarded`/`kinds` set as the `sk_msg` program would; then the server
//! writes responses cut in several ways, the client reads them to the end
//! of the stream, and the record (`answered`, `flags`) is compared with a
//! user-space model (whole responses, heads read by `httparse`) and with
//! the case's own expectation. The client must read every byte intact:
//! the program never drops.
//!
//! Also: the verifier accepts the program (its processed-instruction count
//! is printed), and the `sock_ops` enrollment program creates the record
//! zeroed and deletes it at close. Root only (each test prints `SKIPPED
//! <test>: <reason>` otherwise); ephemeral ports only.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{kernel_ready, Cgroup};
use l7c_abi::peer::{self, Peer, KIND_CONNECT, KIND_HEAD, KIND_PLAIN, KIND_UPGRADE, LOST, SWITCH_ACCEPTED, SWITCH_REFUSED};
use l7c_abi::receive;
use l7c_compiler::codegen;
use l7c_compiler::driver::compile_text;
use l7c_runtime::{harness, peer as records, KernelProgram, LoadOptions, SockKey};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A policy that allows everything: the object's maps and programs are
/// what matters here, not its rules.
const ALLOW_ALL: &str = "policy \"p\" {\n  default allow\n}\n";

fn compiled() -> codegen::Compiled {
    let compilation = compile_text("allow.l7", ALLOW_ALL, None);
    let checked = compilation.checked.as_ref().expect("the test policy checks");
    codegen::compile(checked, &codegen::Options::default()).expect("the test policy compiles")
}

/// The compiled policy, loaded, with the receive verdict attached.
fn load() -> KernelProgram {
    let program = KernelProgram::load(&compiled().object, &LoadOptions::default()).expect("load the policy");
    program.attach_receive_verdict().expect("attach the receive verdict");
    program
}

// ---------------------------------------------------------------- model

/// What the record should say after the server sent `stream` in answer to
/// requests of `kinds`: whole responses, heads read by httparse, bodies
/// framed as RFC 9112 §6.3 says. Written apart from the BPF framer (no
/// states, no cuts) so that each checks the other.
fn model(stream: &[u8], kinds: &[u8]) -> (u32, u32) {
    let mut answered = 0usize;
    let mut flags = 0;
    let mut at = 0;
    while at < stream.len() {
        if answered == kinds.len() || kinds.len() - answered > peer::RING as usize {
            return (answered as u32, flags | LOST);
        }
        let rest = &stream[at..];
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if rest.len() <= receive::MAX_HEAD_BYTES as usize => break,
            _ => return (answered as u32, flags | LOST),
        };
        if head > receive::MAX_HEAD_BYTES as usize {
            return (answered as u32, flags | LOST);
        }
        let status = response.code.unwrap_or(0);
        let kind = kinds[answered];
        if status == 101 {
            let outcome = if kind == KIND_UPGRADE { SWITCH_ACCEPTED } else { LOST };
            return (answered as u32, flags | outcome);
        }
        if kind == KIND_CONNECT && (200..300).contains(&status) {
            return (answered as u32, flags | SWITCH_ACCEPTED);
        }
        if status >= 200 && (kind == KIND_UPGRADE || kind == KIND_CONNECT) {
            flags |= SWITCH_REFUSED;
        }
        at += head;
        if status < 200 {
            continue;
        }
        let field = |name: &str| -> Vec<String> {
            response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .collect()
        };
        let body = if kind == KIND_HEAD || status == 204 || status == 304 {
            Body::Length(0)
        } else {
            match body_framing(&field("transfer-encoding"), &field("content-length")) {
                Some(body) => body,
                None => return (answered as u32, flags | LOST),
            }
        };
        match body {
            Body::Length(n) if (stream.len() - at) as u64 >= n => at += n as usize,
            Body::Length(_) => break,
            Body::Chunked => match chunked_length(&stream[at..]) {
                Ok(Some(n)) => at += n,
                Ok(None) => break,
                Err(()) => return (answered as u32, flags | LOST),
            },
        }
        answered += 1;
    }
    (answered as u32, flags)
}

enum Body {
    Length(u64),
    Chunked,
}

/// How a final response's body is framed; `None`: the framing is lost
/// (close-delimited, another coding last, both fields, bad lengths).
fn body_framing(transfer_encoding: &[String], content_length: &[String]) -> Option<Body> {
    if !transfer_encoding.is_empty() {
        let joined = transfer_encoding.join(",");
        let codings: Vec<&str> = joined.split(',').map(|c| c.trim_matches([' ', '\t'])).collect();
        let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
        let last_only = codings.iter().position(chunked) == Some(codings.len() - 1);
        return (last_only && content_length.is_empty()).then_some(Body::Chunked);
    }
    let mut length = None;
    for value in content_length {
        let value = value.trim_matches([' ', '\t']);
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = value.parse().ok().filter(|n| *n < 1 << 60)?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length.map(Body::Length)
}

/// The length of a chunked body at the start of `bytes` (chunks, the last
/// chunk, the trailer section); `Ok(None)` if it is cut short, `Err` if
/// malformed.
fn chunked_length(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() + 1 > receive::MAX_CHUNK_LINE as usize { Err(()) } else { Ok(None) };
        };
        if end + 2 > receive::MAX_CHUNK_LINE as usize {
            return Err(());
        }
        let line = &rest[..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 || digits > receive::MAX_CHUNK_SIZE_DIGITS as usize {
            return Err(());
        }
        let extension = &line[digits..];
        if !(extension.is_empty() || matches!(extension[0], b';' | b' ' | b'\t'))
            || extension.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(());
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).map_err(|_| ())?, 16).map_err(|_| ())?;
        at += end + 2;
        if size == 0 {
            let mut trailers = [httparse::EMPTY_HEADER; 64];
            return match httparse::parse_headers(&bytes[at..], &mut trailers) {
                Ok(httparse::Status::Complete((n, _))) if n <= receive::MAX_HEAD_BYTES as usize => Ok(Some(at + n)),
                Ok(httparse::Status::Partial) if bytes.len() - at <= receive::MAX_HEAD_BYTES as usize => Ok(None),
                _ => Err(()),
            };
        }
        let data_end = at as u64 + size;
        if (bytes.len() as u64) < data_end + 2 {
            let crlf_seen = bytes.get(data_end as usize..).unwrap_or(&[]);
            return if b"\r\n".starts_with(crlf_seen) { Ok(None) } else { Err(()) };
        }
        if &bytes[data_end as usize..data_end as usize + 2] != b"\r\n" {
            return Err(());
        }
        at = data_end as usize + 2;
    }
}

// ---------------------------------------------------------------- cases

struct Case {
    name: &'static str,
    /// The requests forwarded, by kind.
    kinds: Vec<u8>,
    /// What the server sends.
    stream: Vec<u8>,
    /// (answered, flags) once the whole stream went through.
    expect: (u32, u32),
}

fn case(name: &'static str, kinds: &[u8], stream: impl Into<Vec<u8>>, expect: (u32, u32)) -> Case {
    Case { name, kinds: kinds.to_vec(), stream: stream.into(), expect }
}

/// Bytes that look like HTTP but are body: a framer that read them would
/// count responses that are not there.
fn decoy(len: usize) -> Vec<u8> {
    // Each copy ends in its own number, so that a stream delivered out of
    // order or twice shows where (`delivery`).
    let mut out = Vec::with_capacity(len + 64);
    for n in 0u32.. {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\x00\xff\r\n\r\n");
        out.extend_from_slice(format!("{n:08x}").as_bytes());
    }
    out.truncate(len);
    out
}

fn head(status: &str, fields: &[&str]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for field in fields {
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn with_body(mut head: Vec<u8>, body: &[u8]) -> Vec<u8> {
    head.extend_from_slice(body);
    head
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn cases() -> Vec<Case> {
    let ok = |body: &[u8]| with_body(head("200 OK", &[&format!("Content-Length: {}", body.len())]), body);
    let big = 10 << 20;
    let chunked_body = concat(&[
        b"5;name=value\r\nhello\r\n",
        b"1A ; a=\"b c\" ;flag\r\n",
        &decoy(0x1a),
        b"\r\n",
        b"00000010\r\n",
        &decoy(16),
        b"\r\n",
        b"0;last\r\nX-Trailer: yes\r\nX-Checksum: 1234\r\n\r\n",
    ]);
    // A head of exactly the limit, and one byte over it.
    let head_of = |total: usize| {
        let fixed = head("200 OK", &["Content-Length: 0", "X-Pad: "]).len();
        head("200 OK", &["Content-Length: 0", &format!("X-Pad: {}", "a".repeat(total - fixed))])
    };
    let mut pipelined_kinds = Vec::new();
    let mut pipelined = Vec::new();
    for i in 0..16 {
        let kind = [KIND_PLAIN, KIND_HEAD, KIND_PLAIN, KIND_PLAIN][i % 4];
        pipelined_kinds.push(kind);
        pipelined.extend(match (kind, i % 3) {
            (KIND_HEAD, _) => head("200 OK", &["Content-Length: 100000"]),
            (_, 0) => ok(format!("response {i}").as_bytes()),
            (_, 1) => with_body(head("200 OK", &["Transfer-Encoding: chunked"]), b"3\r\nabc\r\n0\r\n\r\n"),
            _ => head("304 Not Modified", &["ETag: \"x\""]),
        });
    }
    vec![
        case("content-length 0", &[KIND_PLAIN], head("200 OK", &["Content-Length: 0"]), (1, 0)),
        case("content-length small", &[KIND_PLAIN], with_body(head("200 OK", &["Content-Type: text/plain", "content-LENGTH:  13 "]), b"hello, world\n"), (1, 0)),
        case("content-length 10 MiB", &[KIND_PLAIN], ok(&decoy(big)), (1, 0)),
        case("chunked with extensions and trailers", &[KIND_PLAIN], with_body(head("200 OK", &["Transfer-Encoding: gzip, Chunked", "Vary: *"]), &chunked_body), (1, 0)),
        case("chunked then pipelined", &[KIND_PLAIN, KIND_PLAIN], concat(&[&with_body(head("200 OK", &["transfer-encoding: chunked"]), &chunked_body), &ok(b"x")]), (2, 0)),
        case("HEAD", &[KIND_HEAD, KIND_PLAIN], concat(&[&head("200 OK", &["Content-Length: 1234", "Transfer-Encoding: chunked"]), &ok(b"hello")]), (2, 0)),
        case("204 and 304", &[KIND_PLAIN, KIND_PLAIN, KIND_PLAIN], concat(&[&head("204 No Content", &[]), &head("304 Not Modified", &["ETag: \"x\"", "Content-Length: 100"]), &ok(b"!")]), (3, 0)),
        case("100 Continue then 200", &[KIND_PLAIN], concat(&[&head("100 Continue", &[]), &head("103 Early Hints", &["Link: </a.css>; rel=preload"]), &ok(b"ok")]), (1, 0)),
        case("101 to an Upgrade", &[KIND_PLAIN, KIND_UPGRADE], concat(&[&ok(b""), &head("101 Switching Protocols", &["Upgrade: websocket", "Connection: Upgrade"]), b"\x81\x05hello", &decoy(300)]), (1, SWITCH_ACCEPTED)),
        case("100 then 101 to an Upgrade", &[KIND_UPGRADE], concat(&[&head("100 Continue", &[]), &head("101 Switching Protocols", &["Upgrade: h2c"]), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), (0, SWITCH_ACCEPTED)),
        case("101 to a plain request", &[KIND_PLAIN], head("101 Switching Protocols", &["Upgrade: websocket"]), (0, LOST)),
        case("2xx to CONNECT", &[KIND_CONNECT], concat(&[&head("200 Connection Established", &[]), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", &decoy(100)]), (0, SWITCH_ACCEPTED)),
        case("407 to CONNECT", &[KIND_CONNECT, KIND_PLAIN], concat(&[&with_body(head("407 Proxy Authentication Required", &["Content-Length: 4"]), b"auth"), &ok(b"")]), (2, SWITCH_REFUSED)),
        case("404 to an Upgrade then a framed 200", &[KIND_UPGRADE, KIND_PLAIN], concat(&[&with_body(head("404 Not Found", &["Content-Length: 9"]), b"not found"), &with_body(head("200 OK", &["Transfer-Encoding: chunked"]), b"3\r\nabc\r\n0\r\n\r\n")]), (2, SWITCH_REFUSED)),
        case("bytes nobody asked for", &[], head("408 Request Timeout", &["Content-Length: 0", "Connection: close"]), (0, LOST)),
        case("one response more than asked", &[KIND_PLAIN], concat(&[&ok(b"a"), &ok(b"b")]), (1, LOST)),
        case("garbage status line", &[KIND_PLAIN], head("2OO OK", &["Content-Length: 0"]), (0, LOST)),
        case("not HTTP", &[KIND_PLAIN], b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), (0, LOST)),
        case("a head of exactly 16 KiB", &[KIND_PLAIN], head_of(receive::MAX_HEAD_BYTES as usize), (1, 0)),
        case("a head over 16 KiB", &[KIND_PLAIN], head_of(receive::MAX_HEAD_BYTES as usize + 1), (0, LOST)),
        case("two Content-Lengths", &[KIND_PLAIN], with_body(head("200 OK", &["Content-Length: 5", "Content-Length: 6"]), b"hello!"), (0, LOST)),
        case("the same Content-Length twice", &[KIND_PLAIN], with_body(head("200 OK", &["Content-Length: 5", "Content-Length: 5"]), b"hello"), (1, 0)),
        case("a Content-Length overflow", &[KIND_PLAIN], head("200 OK", &["Content-Length: 99999999999999999999"]), (0, LOST)),
        case("no framing", &[KIND_PLAIN], with_body(head("200 OK", &["Content-Type: text/plain"]), b"until the connection closes"), (0, LOST)),
        case("another transfer coding", &[KIND_PLAIN], with_body(head("200 OK", &["Transfer-Encoding: chunked, gzip"]), b"..."), (0, LOST)),
        case("Transfer-Encoding and Content-Length", &[KIND_PLAIN], with_body(head("200 OK", &["Transfer-Encoding: chunked", "Content-Length: 5"]), b"0\r\n\r\n"), (0, LOST)),
        case("a bad chunk", &[KIND_PLAIN], with_body(head("200 OK", &["Transfer-Encoding: chunked"]), b"3\r\nabcd\r\n0\r\n\r\n"), (0, LOST)),
        case("sixteen pipelined", &pipelined_kinds, pipelined, (16, 0)),
        case("cut off in a body", &[KIND_PLAIN, KIND_PLAIN], concat(&[&ok(b"one"), &head("200 OK", &["Content-Length: 1000"]), b"only part"]), (1, 0)),
    ]
}

// ---------------------------------------------------------------- cuts

/// How the server's writes cut the stream.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// One `write()`: every response pipelined in it.
    Whole,
    /// One byte per `write()` (the first 20,000 bytes; the rest in 64 KiB).
    Bytewise,
    /// Seeded random sizes.
    Random(u64),
}

fn pieces(len: usize, cut: Cut) -> Vec<usize> {
    match cut {
        Cut::Whole => vec![len],
        Cut::Bytewise => {
            let ones = len.min(20_000);
            let mut sizes = vec![1; ones];
            let mut left = len - ones;
            while left > 0 {
                sizes.push(left.min(64 << 10));
                left -= left.min(64 << 10);
            }
            sizes
        }
        Cut::Random(seed) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut sizes = Vec::new();
            let mut left = len;
            while left > 0 {
                let most = [3usize, 40, 1500, 70_000][rng.usize(..4)];
                let size = rng.usize(1..=most).min(left);
                sizes.push(size);
                left -= size;
            }
            sizes
        }
    }
}

/// What `ss` says of both ends of `server`'s connection (queues, memory,
/// windows), for a stall's failure message.
fn socket_report(server: &std::net::TcpStream) -> String {
    let port = server.local_addr().map(|a| a.port()).unwrap_or(0);
    let filter = format!("( sport = :{port} or dport = :{port} )");
    match Command::new("ss").args(["-tnmieo", "state", "all", &filter]).output() {
        Ok(out) => format!("ss -tnmieo of port {port}:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(error) => format!("(ss did not run: {error})"),
    }
}

/// How the client's bytes compare with what the server sent.
#[derive(Debug, PartialEq)]
enum Delivery {
    Intact,
    /// Sent bytes `start..start + len` were delivered twice in a row: the
    /// kernel's defect (docs/receive-side.md, "Two kernel defects").
    Twice { start: usize, len: usize },
    /// Anything else, described.
    Wrong(String),
}

fn delivery(sent: &[u8], read: &[u8]) -> Delivery {
    if read == sent {
        return Delivery::Intact;
    }
    let at = sent.iter().zip(read).take_while(|(a, b)| a == b).count();
    if read.len() > sent.len() {
        let len = read.len() - sent.len();
        // `read` is `sent` with `sent[start..start + len]` put in again
        // right after itself.
        let twice = (at.saturating_sub(len)..=at)
            .find(|&s| s + len <= sent.len() && read[..s + len] == sent[..s + len] && read[s + len..] == sent[s..]);
        if let Some(start) = twice {
            return Delivery::Twice { start, len };
        }
    }
    Delivery::Wrong(format!(
        "read {} bytes of {} sent; the first difference is at byte {at}",
        read.len(),
        sent.len()
    ))
}

/// FNV-1a 64: what the client read against what the server wrote.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// What the kernel did wrong on the receive path during the runs, counted
/// and shown, never taken for the program's fault (docs/receive-side.md,
/// "Two kernel defects").
#[derive(Default)]
struct KernelDefects {
    /// `recv()` on a blocking socket returned `EAGAIN` long before its
    /// timeout; the reader read on.
    eagain: u32,
    /// A stream delivered with a run of bytes twice; the run is repeated.
    twice: Vec<String>,
}

/// Reads to the end of the stream. Returns what was read, and an error
/// only for a real timeout or another failure: an `EAGAIN` from a
/// blocking `recv()` well before the timeout is the kernel's, counted in
/// `eagain` and read past, as a client that retries would.
fn read_all(mut client: std::net::TcpStream) -> (Vec<u8>, std::io::Result<()>, u32) {
    let mut read = Vec::new();
    let mut eagain = 0;
    loop {
        // `read_to_end` keeps what it read before an error.
        let started = Instant::now();
        match client.read_to_end(&mut read) {
            Ok(_) => return (read, Ok(()), eagain),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && started.elapsed() < TIMEOUT / 2 => eagain += 1,
            Err(e) => return (read, Err(e), eagain),
        }
    }
}

/// One connection: enrolled, its record made with `kinds` forwarded, the
/// server writing `stream` in `cut`; returns the record after the client
/// read the whole stream, or `None` when the kernel delivered part of the
/// stream twice (the program then framed bytes the server never sent).
fn run(program: &KernelProgram, case: &Case, cut: Cut, kernel: &mut KernelDefects) -> Option<Peer> {
    let (client, mut server) = harness::loopback_pair(TIMEOUT).expect("a loopback pair");
    let key = SockKey::new(client.local_addr().unwrap(), client.peer_addr().unwrap());
    program.insert_socket(program.attach_map(), &key.to_bytes(), client.as_fd()).expect("enroll the client");
    records::open(program, &key).expect("create the record");
    let mut record = records::read(program, &key).expect("read").expect("the record exists");
    assert_eq!(record, Peer::default(), "{}: created zeroed", case.name);
    for kind in &case.kinds {
        record.forward(*kind);
    }
    records::write(program, &key, &record).expect("forward the requests");

    let reader = {
        let client = client.try_clone().unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::thread::spawn(move || read_all(client))
    };
    server.set_nodelay(true).unwrap();
    // A client that stops receiving must fail the test, not hang it: the
    // server's writes time out.
    server.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut at = 0;
    for size in pieces(case.stream.len(), cut) {
        if let Err(error) = server.write_all(&case.stream[at..at + size]) {
            let sockets = socket_report(&server);
            let (read, _, _) = reader.join().expect("the reader");
            panic!(
                "{} ({cut:?}): the server's write failed after {at} bytes ({error}); the enrolled client had read {} bytes: a stall of more than {TIMEOUT:?}\n{sockets}",
                case.name,
                read.len()
            );
        }
        at += size;
    }
    server.shutdown(Shutdown::Write).unwrap();
    let (read, result, eagain) = reader.join().expect("the reader");
    kernel.eagain += eagain;
    if let Err(e) = result {
        panic!("{} ({cut:?}): the client's read failed after {} bytes: {e}\n{}", case.name, read.len(), socket_report(&server));
    }
    match delivery(&case.stream, &read) {
        Delivery::Intact => {}
        Delivery::Twice { start, len } => {
            let seen = format!("{} ({cut:?}): sent bytes {start}..{} were delivered twice", case.name, start + len);
            eprintln!("KERNEL DEFECT (docs/receive-side.md): {seen}; the connection is run again");
            kernel.twice.push(seen);
            return None;
        }
        Delivery::Wrong(how) => panic!("{} ({cut:?}): the client must read every byte the server sent, intact: {how}", case.name),
    }
    let record = records::read(program, &key).expect("read").expect("the record is still there");
    assert!(records::close(program, &key).expect("delete"));
    drop(client);
    Some(record)
}

#[test]
fn delivery_tells_a_run_delivered_twice_from_other_damage() {
    let sent = decoy(5_000);
    assert_eq!(delivery(&sent, &sent), Delivery::Intact);
    let twice = [&sent[..3_000], &sent[1_000..]].concat();
    assert_eq!(delivery(&sent, &twice), Delivery::Twice { start: 1_000, len: 2_000 });
    let at_the_end = [&sent[..], &sent[4_990..]].concat();
    assert_eq!(delivery(&sent, &at_the_end), Delivery::Twice { start: 4_990, len: 10 });
    // Not a repeat: other bytes put in, bytes left out, bytes changed.
    let other = [&sent[..3_000], &sent[..2_000], &sent[3_000..]].concat();
    assert!(matches!(delivery(&sent, &other), Delivery::Wrong(_)));
    assert!(matches!(delivery(&sent, &sent[..4_000]), Delivery::Wrong(_)));
    let mut changed = sent.clone();
    changed[2_500] ^= 1;
    assert!(matches!(delivery(&sent, &changed), Delivery::Wrong(_)));
}

#[test]
fn the_model_agrees_with_each_cases_expectation() {
    // No kernel: the model and the hand-written expectations first.
    for case in cases() {
        assert_eq!(model(&case.stream, &case.kinds), case.expect, "{}", case.name);
    }
}

#[test]
fn the_receive_parser_counts_answers_and_switches_under_every_cut() {
    let test = "the_receive_parser_counts_answers_and_switches_under_every_cut";
    if !kernel_ready(test) {
        return;
    }
    let program = load();
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut kernel = KernelDefects::default();
    for (index, case) in cases().iter().enumerate() {
        let expect = model(&case.stream, &case.kinds);
        let mut cuts = vec![Cut::Whole, Cut::Bytewise];
        cuts.extend((0..4).map(|seed| Cut::Random(0x5eed_0000 + 16 * index as u64 + seed)));
        for cut in cuts {
            // The kernel's double delivery is rare (a few connections in a
            // hundred loaded runs of this test); three in a row is not.
            let record = (0..3)
                .find_map(|_| run(&program, case, cut, &mut kernel))
                .unwrap_or_else(|| panic!("{} ({cut:?}): the kernel delivered part of the stream twice three times in a row", case.name));
            runs += 1;
            let got = (record.answered, record.flags);
            if got != expect || record.forwarded != case.kinds.len() as u32 {
                failures.push(format!("{} ({cut:?}): record says answered {} flags {:#x}, the model {} {:#x}", case.name, got.0, got.1, expect.0, expect.1));
            }
        }
    }
    println!("{runs} connections, {} cases", cases().len());
    if kernel.eagain > 0 || !kernel.twice.is_empty() {
        eprintln!(
            "KERNEL DEFECTS seen (docs/receive-side.md, \"Two kernel defects\"): {} EAGAIN from a blocking recv (read past); {} streams delivered with bytes twice (run again): {:?}",
            kernel.eagain,
            kernel.twice.len(),
            kernel.twice
        );
    }
    assert!(failures.is_empty(), "{} of {runs} runs disagree:\n{}", failures.len(), failures.join("\n"));
}

/// The verifier's processed-instruction count of a program loaded from
/// `fd` (`/proc/self/fdinfo`, Linux 5.16+).
fn verified_insns(fd: &std::os::fd::OwnedFd) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines().find_map(|line| line.strip_prefix("verified_insns:")).and_then(|n| n.trim().parse().ok())
}

#[test]
fn the_verifier_accepts_the_receive_parser() {
    let test = "the_verifier_accepts_the_receive_parser";
    if !kernel_ready(test) {
        return;
    }
    let program = KernelProgram::load(&compiled().object, &LoadOptions::default()).expect("load the policy");
    let code = receive::program();
    let fd = program
        .load_companion(receive::PROGRAM_NAME, 14 /* BPF_PROG_TYPE_SK_SKB */, 38 /* BPF_SK_SKB_VERDICT */, &code)
        .unwrap_or_else(|error| panic!("the verifier refused the receive parser: {error}"));
    let count = verified_insns(&fd);
    println!(
        "receive parser: {} instructions ({} in the step callback), verifier processed {count:?}",
        code.insns().len(),
        code.function_ranges().get(1).map_or(0, |r| r.len())
    );
    assert!(count.is_some_and(|n| n < 1_000_000));
    // And the enrollment program that creates and deletes the records.
    let mut program = program;
    program
        .load_sock_ops(l7c_abi::enroll::PROGRAM_NAME)
        .unwrap_or_else(|error| panic!("the verifier refused the sock_ops enrollment program: {error}"));
}


fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sock_ops_creates_the_record_at_enrollment_and_deletes_it_at_close() {
    let test = "sock_ops_creates_the_record_at_enrollment_and_deletes_it_at_close";
    if !kernel_ready(test) {
        return;
    }
    let Some(cgroup) = Cgroup::new("receive") else {
        eprintln!("SKIPPED {test}: no cgroup2 mount to make a cgroup in");
        return;
    };
    let mut program = load();
    // Every port governed, so the connection below is enrolled.
    let gate = l7c_abi::gate::Gate { capacity: 16, all_ports: 1, ..Default::default() };
    program.write_array(l7c_abi::maps::GATE, 0, &gate.to_bytes()).expect("the gate record");
    program.attach_sock_ops(l7c_abi::enroll::PROGRAM_NAME, &cgroup.0).expect("attach sock_ops");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A shell in the cgroup connects (enrolled at ACTIVE_ESTABLISHED),
    // reads to the end of the stream, and exits (the close).
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{port} && cat <&3 > /dev/null",
        cgroup.0.display()
    );
    let mut child: Child = Command::new("bash").args(["-c", &script]).spawn().expect("bash");
    listener.set_nonblocking(true).unwrap();
    let mut server = wait_for("the shell to connect", || listener.accept().ok().map(|(s, _)| s));
    server.set_nonblocking(false).unwrap();
    let key = SockKey::new(server.peer_addr().unwrap(), server.local_addr().unwrap());

    let record = wait_for("the record", || records::read(&program, &key).expect("read"));
    assert_eq!(record, Peer::default(), "sock_ops creates the record zeroed");
    let mut record = record;
    record.forward(KIND_PLAIN);
    records::write(&program, &key, &record).expect("forward a request");
    server.write_all(&with_body(head("200 OK", &["Content-Length: 2"]), b"hi")).unwrap();
    let record = wait_for("the answer", || records::read(&program, &key).expect("read").filter(|r| r.answered == 1));
    assert_eq!((record.answered, record.flags), (1, 0));

    server.shutdown(Shutdown::Write).unwrap();
    let status = child.wait().expect("the shell exits");
    assert!(status.success(), "the shell failed: {status}");
    wait_for("the record's deletion at close", || records::read(&program, &key).expect("read").is_none().then_some(()));
    drop(server);
    drop(program);
}

#[test]
fn a_connection_without_a_record_is_passed_untouched() {
    let test = "a_connection_without_a_record_is_passed_untouched";
    if !kernel_ready(test) {
        return;
    }
    let program = load();
    let (client, mut server) = harness::loopback_pair(TIMEOUT).expect("a loopback pair");
    let key = SockKey::new(client.local_addr().unwrap(), client.peer_addr().unwrap());
    program.insert_socket(program.attach_map(), &key.to_bytes(), client.as_fd()).expect("enroll the client");
    let stream = decoy(100_000);
    server.write_all(&stream).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    let mut read = Vec::new();
    let mut client = client;
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.read_to_end(&mut read).expect("read");
    assert_eq!(checksum(&read), checksum(&stream));
    assert_eq!(records::read(&program, &key).expect("read"), None, "the parser never creates a record");
}

/// The u32 (u64) at record offset `at` of `peer`'s `rx` words.
fn rx_word(peer: &Peer, at: i16) -> u64 {
    let from = (at - peer::RX) as usize;
    let width = if at == receive::rx::REMAINING || at == receive::rx::CUR { 8 } else { 4 };
    peer.rx[from..from + width].iter().rev().fold(0, |word, b| word << 8 | u64::from(*b))
}

#[test]
fn the_framer_carries_its_state_across_one_byte_skbs() {
    // Each byte is written only once the previous one has been framed, so
    // every run of the program sees exactly one new byte: the state of a
    // status line, a field name, a Content-Length and a body cut at every
    // byte lives in the record between runs.
    let test = "the_framer_carries_its_state_across_one_byte_skbs";
    if !kernel_ready(test) {
        return;
    }
    let program = load();
    let (client, mut server) = harness::loopback_pair(TIMEOUT).expect("a loopback pair");
    server.set_nodelay(true).unwrap();
    let key = SockKey::new(client.local_addr().unwrap(), client.peer_addr().unwrap());
    program.insert_socket(program.attach_map(), &key.to_bytes(), client.as_fd()).expect("enroll the client");
    let mut record = Peer::default();
    record.forward(KIND_PLAIN);
    record.forward(KIND_PLAIN);
    records::write(&program, &key, &record).expect("the record");
    let head = head("200 OK", &["Content-Length: 3"]);
    for (i, byte) in head.iter().enumerate() {
        server.write_all(&[*byte]).unwrap();
        let seen = wait_for("the byte's run", || {
            let peer = records::read(&program, &key).expect("read").expect("the record");
            let count = rx_word(&peer, receive::rx::COUNT);
            (count == i as u64 + 1 || peer.flags != 0).then_some(peer)
        });
        assert_eq!(seen.flags, 0, "byte {i} ({:?}) lost the framing", *byte as char);
    }
    for (i, byte) in b"abc".iter().enumerate() {
        server.write_all(&[*byte]).unwrap();
        wait_for("the body byte's run", || {
            let peer = records::read(&program, &key).expect("read").expect("the record");
            let left = rx_word(&peer, receive::rx::REMAINING);
            (peer.answered == 1 || left == 2 - i as u64).then_some(())
        });
    }
    let peer = records::read(&program, &key).expect("read").expect("the record");
    assert_eq!((peer.answered, peer.flags), (1, 0));
    let mut client = client;
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut read = vec![0u8; head.len() + 3];
    client.read_exact(&mut read).expect("the client reads the response");
    assert_eq!(&read[..head.len()], &head[..]);
}
