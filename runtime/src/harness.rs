//! A loopback TCP connection policed by a loaded program, and a run of an
//! input through it.
//!
//! [`Connection::open`] makes a listener on `127.0.0.1:0`, connects a
//! client, accepts the server side, and puts the client socket into the
//! program's socket map (under its [`SockKey`] for a 44-byte-key
//! `SOCKHASH`, at index 0 for a `SOCKMAP` or a 4-byte-key `SOCKHASH`), so
//! every `send()` on it runs the program. For each redirect target bound
//! (`(name, slot)`), it makes another loopback pair and puts that pair's
//! client into the redirect map at `slot`: bytes the program redirects
//! there (egress) leave through that socket and arrive at its peer.
//!
//! A reader thread per receiving socket collects bytes as they arrive, so
//! a large input never blocks the sender on a full receive buffer.
//! [`Connection::finish`] shuts the client's write side, waits (bounded)
//! for the peer to see the end of the stream, then does the same for each
//! target. Every wait is bounded by the connection's timeout; nothing here
//! can hang.
//!
//! [`Endpoints`] choose the connection's addresses instead: the listener
//! on a given loopback address and port (what a policy's `scope remote
//! port 8080` sees), the client bound to a given local address and port.
//! Only 127.0.0.0/8 addresses can be used (anything else would leave the
//! machine); others are refused with [`KernelError::Unsupported`]. A fixed
//! port is retried for a while when it is briefly in use (another run on
//! the same port), and such connections end with an abortive close of the
//! peer, so the fixed 4-tuple leaves no TIME_WAIT behind and can be used
//! again at once.
//!
//! Invariants: a `Connection` owns its sockets and threads; dropping it
//! (or finishing it) joins the threads and closes the sockets, which
//! removes them from the maps.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::answerer::Answerer;
use crate::errno::Errno;
use l7c_abi::verdict::ServerAnswers;
use crate::error::KernelError;
use crate::key::{SockKey, SOCK_KEY_SIZE};
use crate::loader::{KernelProgram, SocketMapKind};

/// How long a run may take to see each stream end, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a reader thread wakes to look at its stop flag.
const READ_TICK: Duration = Duration::from_millis(20);

/// What to run through the kernel.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    /// The bytes the client sends.
    pub input: &'a [u8],
    /// Sizes of the first `send()` calls (as `--split` gives them); what
    /// is left is sent in one last call. Sizes of 0 are skipped.
    pub split: &'a [usize],
    /// The map redirect targets are bound in (`SOCKMAP`, or `SOCKHASH`
    /// with 4-byte keys); needed when `bindings` is not empty.
    pub redirect_map: Option<&'a str>,
    /// Redirect targets to bind: each name gets a loopback socket at its
    /// slot of `redirect_map` (the slots `.l7.meta` names).
    pub bindings: &'a [(&'a str, u32)],
    /// The `RINGBUF` map the program writes its events to, if any.
    pub events_map: Option<&'a str>,
    /// The bound on each wait.
    pub timeout: Duration,
    /// The connection's addresses (default: ephemeral ports on 127.0.0.1).
    pub endpoints: Endpoints,
    /// What the peer answers (cli.md `--answers`): with `Some`, the peer
    /// frames the requests it receives and answers each, and the client
    /// reads every answer before its next `send()`; `None`: the peer only
    /// reads.
    pub answers: Option<&'a ServerAnswers>,
}

/// Where the policed connection's ends are. `None` is 127.0.0.1 with an
/// ephemeral port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The connection's remote address and port: where the peer listens.
    /// A loopback address: in 127.0.0.0/8, `::1`, or an IPv4-mapped
    /// `::ffff:127.x.y.z` (then the client is a dual-stack IPv6 socket and
    /// the peer an IPv4 listener, as a real dual-stack client meets one).
    pub remote: Option<SocketAddr>,
    /// The address the client binds before connecting (its local address
    /// and port; port 0 is ephemeral): a loopback address of the remote's
    /// kind.
    pub local: Option<SocketAddr>,
}

impl Endpoints {
    /// Whether a fixed 4-tuple may be reused right after this connection.
    fn fixed(&self) -> bool {
        self.remote.is_some_and(|a| a.port() != 0) || self.local.is_some_and(|a| a.port() != 0)
    }
}

impl Default for RunSpec<'_> {
    fn default() -> Self {
        RunSpec {
            input: &[],
            split: &[],
            redirect_map: None,
            bindings: &[],
            events_map: None,
            timeout: DEFAULT_TIMEOUT,
            endpoints: Endpoints::default(),
            answers: None,
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRun {
    /// Per `send()` call, in order: the bytes it accepted, or its errno
    /// (`EACCES` after `SK_DROP`).
    pub sends: Vec<Result<usize, Errno>>,
    /// Everything the peer received, up to the end of the stream.
    pub delivered: Vec<u8>,
    /// Per bound redirect target, in `bindings` order: what it received.
    pub redirected: Vec<(String, Vec<u8>)>,
    /// The records the program wrote to the events ring buffer during the
    /// run, oldest first.
    pub events: Vec<Vec<u8>>,
    /// Everything the client read: the peer's answers, then whatever the
    /// program answered itself (a deny answer, language.md §6).
    pub client_read: Vec<u8>,
    /// How many of `client_read`'s bytes the peer sent.
    pub peer_answered: usize,
}

/// Sends `spec.input` through a fresh connection policed by `program` and
/// reports what happened.
pub fn run(program: &mut KernelProgram, spec: &RunSpec<'_>) -> Result<KernelRun, KernelError> {
    if let Some(events) = spec.events_map {
        // Leftovers of earlier runs are not this run's.
        program.drain_events(events)?;
    }
    let mut connection = Connection::open_answering(
        program,
        &spec.endpoints,
        spec.redirect_map,
        spec.bindings,
        spec.timeout,
        spec.answers.cloned(),
    )?;
    let mut sends = Vec::new();
    for piece in pieces(spec.input, spec.split) {
        sends.push(connection.send(piece));
        connection.read_answers()?;
    }
    let (client_read, peer_answered) = connection.client_read()?;
    let received = connection.finish()?;
    let events = match spec.events_map {
        Some(events) => program.drain_events(events)?,
        None => Vec::new(),
    };
    Ok(KernelRun {
        sends,
        delivered: received.delivered,
        redirected: received.redirected,
        events,
        client_read,
        peer_answered,
    })
}

/// The pieces `input` is sent in: the `split` sizes first (cut short at
/// the end of the input), then the rest in one piece.
pub fn pieces<'a>(input: &'a [u8], split: &[usize]) -> Vec<&'a [u8]> {
    let mut rest = input;
    let mut out = Vec::with_capacity(split.len() + 1);
    for &size in split {
        if rest.is_empty() {
            break;
        }
        if size == 0 {
            continue;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// What the receiving ends got, once the streams ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub delivered: Vec<u8>,
    pub redirected: Vec<(String, Vec<u8>)>,
}

/// A bound redirect target: the socket in the redirect map and the reader
/// of its peer.
struct Target {
    name: String,
    socket: TcpStream,
    peer: Collector,
}

/// An enrolled loopback connection (see the module docs).
pub struct Connection {
    client: TcpStream,
    peer: Collector,
    targets: Vec<Target>,
    timeout: Duration,
    /// With an answering peer: what the client read so far, and the
    /// client's bytes written to TCP when it was enrolled.
    answering: Option<ClientSide>,
}

#[derive(Debug)]
struct ClientSide {
    read: Vec<u8>,
    written_at_start: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &self.client)
            .field(
                "targets",
                &self.targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a connection, enrolls its client in `program`'s socket map
    /// and binds the redirect targets (see the module docs).
    pub fn open(
        program: &KernelProgram,
        redirect_map: Option<&str>,
        bindings: &[(&str, u32)],
        timeout: Duration,
    ) -> Result<Connection, KernelError> {
        Connection::open_at(program, &Endpoints::default(), redirect_map, bindings, timeout)
    }

    /// [`Connection::open`] with the connection's addresses chosen (see
    /// [`Endpoints`]).
    pub fn open_at(
        program: &KernelProgram,
        endpoints: &Endpoints,
        redirect_map: Option<&str>,
        bindings: &[(&str, u32)],
        timeout: Duration,
    ) -> Result<Connection, KernelError> {
        Connection::open_answering(program, endpoints, redirect_map, bindings, timeout, None)
    }

    /// [`Connection::open_at`] with a peer that answers the requests it
    /// receives as `answers` says (`crate::answerer`): after each
    /// [`Connection::send`], [`Connection::read_answers`] waits until the
    /// peer has answered everything the send delivered and reads it.
    pub fn open_answering(
        program: &KernelProgram,
        endpoints: &Endpoints,
        redirect_map: Option<&str>,
        bindings: &[(&str, u32)],
        timeout: Duration,
        answers: Option<ServerAnswers>,
    ) -> Result<Connection, KernelError> {
        let (client, server) = loopback_pair_at(endpoints, timeout)?;
        let enroll = program.attach_map();
        let key = enrollment_key(program, enroll, &client)?;
        program.insert_socket(enroll, &key, client.as_fd())?;
        // The record the program and the receive side share (abi::peer),
        // as the sock_ops program creates it for `l7c run`.
        if let Some(key) = SockKey::from_bytes(&key) {
            if program.maps().iter().any(|map| map.name == l7c_abi::maps::PEERS) {
                crate::peer::open(program, &key)?;
            }
        }
        let answering = match answers {
            Some(_) => Some(ClientSide { read: Vec::new(), written_at_start: written(&client)? }),
            None => None,
        };
        client
            .set_write_timeout(Some(timeout))
            .map_err(|e| socket_error("setsockopt(SO_SNDTIMEO) on the client", &e))?;
        if endpoints.fixed() {
            abortive_close(&server)?;
        }
        let peer = Collector::spawn(server, "peer", answers.map(Answerer::new))?;

        let mut targets = Vec::with_capacity(bindings.len());
        if !bindings.is_empty() {
            let map = redirect_map.ok_or_else(|| KernelError::MapShape {
                name: "(none)".to_owned(),
                purpose: "for redirect targets".to_owned(),
                problem: "targets were bound but no redirect map was named".to_owned(),
            })?;
            let kind = program.socket_map_kind(map)?;
            if !matches!(
                kind,
                SocketMapKind::Array | SocketMapKind::Hash { key_size: 4 }
            ) {
                return Err(KernelError::MapShape {
                    name: map.to_owned(),
                    purpose: "for redirect targets".to_owned(),
                    problem: "redirect slots are u32 keys: the map must be a SOCKMAP or a SOCKHASH with 4-byte keys"
                        .to_owned(),
                });
            }
            for &(name, slot) in bindings {
                let (socket, target_peer) = loopback_pair(timeout)?;
                program.insert_socket(map, &slot.to_ne_bytes(), socket.as_fd())?;
                targets.push(Target {
                    name: name.to_owned(),
                    socket,
                    peer: Collector::spawn(target_peer, name, None)?,
                });
            }
        }
        Ok(Connection {
            client,
            peer,
            targets,
            timeout,
            answering,
        })
    }

    /// With an answering peer: waits until the peer has read every byte
    /// the client's TCP has written and answered every request that ended
    /// in them, then reads those answers on the client (cli.md: the
    /// client reads each answer before its next `send()`). Without one,
    /// nothing.
    pub fn read_answers(&mut self) -> Result<(), KernelError> {
        let Some(side) = self.answering.as_mut() else { return Ok(()) };
        let deadline = Instant::now() + self.timeout;
        let target = written(&self.client)?.saturating_sub(side.written_at_start);
        while (self.peer.shared.processed.load(Ordering::Acquire) as u64) < target {
            if Instant::now() >= deadline {
                return Err(KernelError::Timeout {
                    what: "the peer reading what the client wrote".to_owned(),
                    millis: self.timeout.as_millis(),
                    received: self.peer.shared.len(),
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let answered = self.peer.shared.answered.load(Ordering::Acquire);
        read_at_least(&self.client, &mut side.read, answered, deadline)
    }

    /// What the client read (the peer's answers, then anything the
    /// program answered itself, which is queued by the time `send()`
    /// returns), and how many of those bytes the peer sent.
    pub fn client_read(&mut self) -> Result<(Vec<u8>, usize), KernelError> {
        let Some(side) = self.answering.as_mut() else { return Ok((Vec::new(), 0)) };
        let answered = self.peer.shared.answered.load(Ordering::Acquire);
        drain(&self.client, &mut side.read)?;
        Ok((side.read.clone(), answered))
    }

    /// One `send()` of `bytes` on the client (`MSG_NOSIGNAL`): the count
    /// the kernel accepted, or its errno.
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize, Errno> {
        // SAFETY: `bytes` is a live slice of the given length; the fd is
        // owned by `self.client`.
        let sent = unsafe {
            libc::send(
                self.client.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(sent).map_err(|_| Errno::last())
    }

    /// The client socket (to read a reply, or set an option).
    pub fn client(&self) -> &TcpStream {
        &self.client
    }

    /// The socket bound for target `name`, the one in the redirect map
    /// (redirects with `BPF_F_INGRESS` queue bytes for reading on it).
    pub fn target_socket(&self, name: &str) -> Option<&TcpStream> {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.socket)
    }

    /// What the peer has received so far, once it has at least `at_least`
    /// bytes or `wait` has passed.
    pub fn delivered(&self, at_least: usize, wait: Duration) -> Vec<u8> {
        self.peer.wait_for(at_least, wait)
    }

    /// What target `name` has received so far, once it has at least
    /// `at_least` bytes or `wait` has passed.
    pub fn redirected(&self, name: &str, at_least: usize, wait: Duration) -> Option<Vec<u8>> {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.peer.wait_for(at_least, wait))
    }

    /// Ends the client's stream with `shutdown(SHUT_WR)` and collects what
    /// every receiver got.
    pub fn finish(self) -> Result<Received, KernelError> {
        self.client
            .shutdown(Shutdown::Write)
            .map_err(|e| socket_error("shutdown(SHUT_WR) of the client", &e))?;
        self.collect()
    }

    /// Ends the client's stream with `close()` and collects what every
    /// receiver got (bytes the kernel still holds for the client are
    /// freed by the close).
    pub fn finish_by_close(self) -> Result<Received, KernelError> {
        let Connection {
            client,
            peer,
            targets,
            timeout,
            ..
        } = self;
        drop(client);
        collect(peer, targets, timeout)
    }

    fn collect(self) -> Result<Received, KernelError> {
        let Connection {
            client,
            peer,
            targets,
            timeout,
            ..
        } = self;
        let received = collect(peer, targets, timeout);
        // The client stays open until the peer has read everything.
        drop(client);
        received
    }
}

fn collect(
    peer: Collector,
    targets: Vec<Target>,
    timeout: Duration,
) -> Result<Received, KernelError> {
    let delivered = peer.finish(timeout, "the peer's end of stream")?;
    let mut redirected = Vec::with_capacity(targets.len());
    for target in targets {
        // Redirected bytes were queued on the target during the sends;
        // its FIN follows them.
        target.socket.shutdown(Shutdown::Write).map_err(|e| {
            socket_error(
                &format!("shutdown(SHUT_WR) of target `{}`", target.name),
                &e,
            )
        })?;
        let bytes = target.peer.finish(
            timeout,
            &format!("target `{}`'s end of stream", target.name),
        )?;
        redirected.push((target.name, bytes));
    }
    Ok(Received {
        delivered,
        redirected,
    })
}

/// The enrolled client's key in `map`.
fn enrollment_key(
    program: &KernelProgram,
    map: &str,
    client: &TcpStream,
) -> Result<Vec<u8>, KernelError> {
    match program.socket_map_kind(map)? {
        SocketMapKind::Hash { key_size } if key_size as usize == SOCK_KEY_SIZE => {
            let local = client.local_addr().map_err(|e| socket_error("getsockname of the client", &e))?;
            let remote = client.peer_addr().map_err(|e| socket_error("getpeername of the client", &e))?;
            Ok(SockKey::new(local, remote).to_bytes().to_vec())
        }
        SocketMapKind::Array | SocketMapKind::Hash { key_size: 4 } => Ok(0u32.to_ne_bytes().to_vec()),
        SocketMapKind::Hash { key_size } => Err(KernelError::MapShape {
            name: map.to_owned(),
            purpose: "to enroll connections".to_owned(),
            problem: format!("its keys have {key_size} bytes; the runtime enrolls with a {SOCK_KEY_SIZE}-byte SockKey or a u32 index"),
        }),
    }
}

/// A connected loopback pair: (client, accepted server side).
pub fn loopback_pair(timeout: Duration) -> Result<(TcpStream, TcpStream), KernelError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| socket_error("bind of a listener on 127.0.0.1:0", &e))?;
    let address = listener
        .local_addr()
        .map_err(|e| socket_error("getsockname of the listener", &e))?;
    let client = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| socket_error(&format!("connect to {address}"), &e))?;
    // The handshake is complete, so the accept queue holds the connection.
    let (server, _) = listener
        .accept()
        .map_err(|e| socket_error("accept on the listener", &e))?;
    client
        .set_nodelay(true)
        .map_err(|e| socket_error("setsockopt(TCP_NODELAY)", &e))?;
    Ok((client, server))
}

/// How long to pause between tries of a fixed address that is in use.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A connected loopback pair at `endpoints`: (client, accepted server side).
pub fn loopback_pair_at(
    endpoints: &Endpoints,
    timeout: Duration,
) -> Result<(TcpStream, TcpStream), KernelError> {
    if *endpoints == Endpoints::default() {
        return loopback_pair(timeout);
    }
    let remote = endpoints.remote.unwrap_or(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0));
    let kind = Loopback::of(remote.ip()).ok_or_else(|| off_loopback(remote.ip(), "remote"))?;
    let local = endpoints.local.unwrap_or(SocketAddr::new(kind.localhost(), 0));
    if Loopback::of(local.ip()) != Some(kind) {
        return Err(KernelError::Unsupported {
            what: format!("a connection from local address {} to remote address {}", local.ip(), remote.ip()),
            help: format!("a socket's two addresses are of one kind: give a local address like {}", kind.localhost()),
        });
    }
    // The peer of an IPv4-mapped remote is an IPv4 listener.
    let listen = match remote.ip() {
        IpAddr::V6(v6) if kind == Loopback::Mapped => SocketAddr::new(v6.to_ipv4_mapped().expect("mapped").into(), remote.port()),
        _ => remote,
    };
    let deadline = Instant::now() + timeout;
    let listener = retry_in_use(deadline, || TcpListener::bind(listen))
        .map_err(|e| socket_error(&format!("bind of a listener on {listen}"), &e))?;
    let port = listener
        .local_addr()
        .map_err(|e| socket_error("getsockname of the listener", &e))?
        .port();
    let address = SocketAddr::new(remote.ip(), port);
    let client = retry_in_use(deadline, || connect_from(local, address))
        .map_err(|e| socket_error(&format!("connect from {local} to {address}"), &e))?;
    let (server, _) = listener
        .accept()
        .map_err(|e| socket_error("accept on the listener", &e))?;
    client
        .set_nodelay(true)
        .map_err(|e| socket_error("setsockopt(TCP_NODELAY)", &e))?;
    Ok((client, server))
}

/// The kinds of loopback address a connection of the kernel engine can
/// have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loopback {
    /// 127.0.0.0/8 on an IPv4 socket.
    V4,
    /// `::1` on an IPv6 socket.
    V6,
    /// `::ffff:127.x.y.z` on a dual-stack IPv6 socket.
    Mapped,
}

impl Loopback {
    fn of(ip: IpAddr) -> Option<Loopback> {
        match ip {
            IpAddr::V4(v4) if v4.is_loopback() => Some(Loopback::V4),
            IpAddr::V6(v6) if v6.is_loopback() => Some(Loopback::V6),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()) => Some(Loopback::Mapped),
            _ => None,
        }
    }

    /// The usual address of the kind (a local address's default).
    fn localhost(self) -> IpAddr {
        match self {
            Loopback::V4 => Ipv4Addr::LOCALHOST.into(),
            Loopback::V6 => Ipv6Addr::LOCALHOST.into(),
            Loopback::Mapped => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        }
    }
}

/// Why `ip` cannot be an end of the kernel engine's connection.
fn off_loopback(ip: IpAddr, which: &str) -> KernelError {
    KernelError::Unsupported {
        what: format!("a connection with {which} address {ip}"),
        help: "the kernel engine runs a real connection over loopback: use an address in 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104 (the reference engine takes any address)".to_owned(),
    }
}

/// Runs `attempt` until it does not fail with `EADDRINUSE` or
/// `EADDRNOTAVAIL` (a fixed port still held by an earlier or concurrent
/// run), or `deadline` passes.
fn retry_in_use<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    loop {
        match attempt() {
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL))
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

/// A TCP client bound to `local` (`SO_REUSEADDR`) and connected to
/// `remote` (blocking: a loopback listener completes the handshake at once).
/// (An IPv6 socket, `local` and `remote` IPv6, is dual-stack:
/// `IPV6_V6ONLY` off, so an IPv4-mapped remote reaches an IPv4 listener.)
fn connect_from(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if local.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if family == libc::AF_INET6 {
        set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    }
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
    }
    socket_address_call(&socket, local, libc::bind)?;
    socket_address_call(&socket, remote, libc::connect)?;
    Ok(TcpStream::from(socket))
}

/// `bind` or `connect` (one signature) of `socket` to an address.
fn socket_address_call(
    socket: &OwnedFd,
    address: SocketAddr,
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> std::io::Result<()> {
    let result = match address {
        SocketAddr::V4(v4) => {
            let address = sockaddr_in(v4);
            // SAFETY: `address` is a valid sockaddr_in of the length passed,
            // and `socket` is an open socket for the duration of the call.
            unsafe { call(socket.as_raw_fd(), std::ptr::addr_of!(address).cast(), socklen_of::<libc::sockaddr_in>()) }
        }
        SocketAddr::V6(v6) => {
            let address = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for a sockaddr_in6.
            unsafe { call(socket.as_raw_fd(), std::ptr::addr_of!(address).cast(), socklen_of::<libc::sockaddr_in6>()) }
        }
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn sockaddr_in(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    // A sockaddr's size fits a socklen_t.
    std::mem::size_of::<T>() as libc::socklen_t
}

fn set_int_option(socket: &impl AsRawFd, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: `value` is a live i32 of the length given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            socklen_of::<i32>(),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `SO_LINGER` {on, 0}: closing `socket` sends a RST instead of a FIN, so
/// neither end keeps the 4-tuple in TIME_WAIT. Used on the peer of a
/// fixed-port connection, which closes only after it has read the client's
/// end of stream, so no byte is lost.
fn abortive_close(socket: &TcpStream) -> Result<(), KernelError> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a live struct of the length given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            socklen_of::<libc::linger>(),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(socket_error("setsockopt(SO_LINGER)", &std::io::Error::last_os_error()))
    }
}

/// The bytes the client's TCP has taken from the program so far: sent
/// (without retransmissions) plus queued and not yet sent (`TCP_INFO`).
fn written(client: &TcpStream) -> Result<u64, KernelError> {
    // SAFETY: an all-zero tcp_info is a valid value of the plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = socklen_of::<libc::tcp_info>();
    // SAFETY: `info` is a live tcp_info of the length passed.
    let done = unsafe {
        libc::getsockopt(client.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, std::ptr::addr_of_mut!(info).cast(), &mut len)
    };
    if done != 0 {
        return Err(socket_error("getsockopt(TCP_INFO) of the client", &std::io::Error::last_os_error()));
    }
    Ok(info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans) + u64::from(info.tcpi_notsent_bytes))
}

/// Reads `socket` into `into` until it holds `at_least` bytes (bounded by
/// `deadline`).
fn read_at_least(socket: &TcpStream, into: &mut Vec<u8>, at_least: usize, deadline: Instant) -> Result<(), KernelError> {
    let mut buffer = [0u8; 16 * 1024];
    while into.len() < at_least {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KernelError::Timeout {
                what: "the client reading the peer's answers".to_owned(),
                millis: 0,
                received: into.len(),
            });
        }
        socket.set_read_timeout(Some(left)).map_err(|e| socket_error("setsockopt(SO_RCVTIMEO) on the client", &e))?;
        match (&*socket).read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => into.extend_from_slice(buffer.get(..n).unwrap_or_default()),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(socket_error("recv on the client", &e)),
        }
    }
    Ok(())
}

/// Reads whatever `socket` has queued now, without waiting.
fn drain(socket: &TcpStream, into: &mut Vec<u8>) -> Result<(), KernelError> {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buffer` is live and as long as passed.
        let n = unsafe {
            libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), libc::MSG_DONTWAIT)
        };
        match usize::try_from(n) {
            Ok(0) => return Ok(()),
            Ok(n) => into.extend_from_slice(buffer.get(..n).unwrap_or_default()),
            Err(_) => {
                let error = std::io::Error::last_os_error();
                return match error.kind() {
                    ErrorKind::WouldBlock => Ok(()),
                    ErrorKind::Interrupted => continue,
                    _ => Err(socket_error("recv(MSG_DONTWAIT) on the client", &error)),
                };
            }
        }
    }
}

fn socket_error(step: &str, error: &std::io::Error) -> KernelError {
    KernelError::Syscall {
        step: step.to_owned(),
        errno: Errno::from_io(error),
        help: "the harness needs loopback TCP (127.0.0.1) and free ephemeral ports".to_owned(),
    }
}

/// A thread reading one socket into a shared buffer until end of stream.
struct Collector {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    bytes: Mutex<Vec<u8>>,
    /// Bytes read and, with an answerer, answered (what they completed).
    processed: AtomicUsize,
    /// Bytes of answers written.
    answered: AtomicUsize,
    eof: AtomicBool,
    stop: AtomicBool,
    error: Mutex<Option<Errno>>,
}

impl Shared {
    fn bytes(&self) -> Vec<u8> {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn len(&self) -> usize {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Collector {
    fn spawn(mut socket: TcpStream, name: &str, mut answerer: Option<Answerer>) -> Result<Collector, KernelError> {
        socket
            .set_read_timeout(Some(READ_TICK))
            .map_err(|e| socket_error("setsockopt(SO_RCVTIMEO)", &e))?;
        let mut writer = match answerer {
            Some(_) => Some(socket.try_clone().map_err(|e| socket_error("dup of the peer socket", &e))?),
            None => None,
        };
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("l7c-read-{name}"))
            .spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                while !thread_shared.stop.load(Ordering::Acquire) {
                    match socket.read(&mut buffer) {
                        Ok(0) => {
                            thread_shared.eof.store(true, Ordering::Release);
                            break;
                        }
                        Ok(n) => {
                            let got = buffer.get(..n).unwrap_or_default();
                            thread_shared
                                .bytes
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .extend_from_slice(got);
                            if let (Some(answerer), Some(writer)) = (answerer.as_mut(), writer.as_mut()) {
                                let answers = answerer.feed(got);
                                if !answers.is_empty() && writer.write_all(&answers).is_ok() {
                                    thread_shared.answered.fetch_add(answers.len(), Ordering::AcqRel);
                                }
                            }
                            thread_shared.processed.fetch_add(n, Ordering::AcqRel);
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => {
                            *thread_shared
                                .error
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) = Some(Errno::from_io(&e));
                            thread_shared.eof.store(true, Ordering::Release);
                            break;
                        }
                    }
                }
                // `socket` closes here.
            })
            .map_err(|e| socket_error("spawning a reader thread", &e))?;
        Ok(Collector {
            shared,
            handle: Some(handle),
        })
    }

    fn wait_for(&self, at_least: usize, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        while self.shared.len() < at_least
            && !self.shared.eof.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.shared.bytes()
    }

    /// Waits for end of stream (at most `timeout`), stops the thread and
    /// returns the bytes.
    fn finish(mut self, timeout: Duration, what: &str) -> Result<Vec<u8>, KernelError> {
        let deadline = Instant::now() + timeout;
        while !self.shared.eof.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let ended = self.shared.eof.load(Ordering::Acquire);
        self.stop();
        let bytes = self.shared.bytes();
        if let Some(errno) = *self
            .shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(KernelError::Syscall {
                step: format!("recv while waiting for {what}"),
                errno,
                help: "the connection was reset; the program may have dropped it".to_owned(),
            });
        }
        if !ended {
            return Err(KernelError::Timeout {
                what: what.to_owned(),
                millis: timeout.as_millis(),
                received: bytes.len(),
            });
        }
        Ok(bytes)
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            // The thread wakes within READ_TICK; it cannot panic (no
            // indexing or unwrap in it), so the join result carries nothing.
            let _joined = handle.join();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_split() {
        let input = b"abcdefghij";
        assert_eq!(pieces(input, &[]), vec![&input[..]]);
        assert_eq!(pieces(input, &[3, 3]), vec![&b"abc"[..], b"def", b"ghij"]);
        assert_eq!(pieces(input, &[4, 100]), vec![&b"abcd"[..], b"efghij"]);
        assert_eq!(pieces(input, &[10, 1]), vec![&input[..]]);
        assert_eq!(pieces(input, &[0, 5]), vec![&b"abcde"[..], b"fghij"]);
        assert!(pieces(b"", &[1]).is_empty());
    }
}

/// A cgroup made for one test and removed after it: `l7c-TEST-PID`
/// under the first cgroup2 mount. Dropping it kills whatever the test
/// left inside (`cgroup.kill`, 5.14+: a client waiting on a file that a
/// failed assertion never wrote) and removes the directory, waiting (5 s
/// at most) for the kernel to notice that its members exited, so nothing
/// holds a port for the next run. The one definition for every test
/// crate (runtime's kernel tests, the workspace's `l7c run` tests).
pub struct TestCgroup(pub std::path::PathBuf);

impl TestCgroup {
    /// `None` when there is no cgroup2 mount or the directory cannot be
    /// made (the caller skips, saying why).
    pub fn new(test: &str) -> Option<TestCgroup> {
        let root = crate::cgroup::cgroup2_mounts().into_iter().next()?;
        let path = root.join(format!("l7c-{test}-{}", std::process::id()));
        std::fs::create_dir(&path).ok()?;
        Some(TestCgroup(path))
    }

    /// `program args...` started inside the cgroup (a shell moves itself
    /// in, then execs it).
    pub fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"", self.0.display()))
            .arg(program)
            .args(args);
        command
    }

    /// The directory, as the text a command line takes (made from the
    /// mount's path and UTF-8 text; a mount path that is not UTF-8 gives
    /// "", which no command takes for a cgroup).
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
