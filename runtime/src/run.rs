//! `l7c run`: a compiled policy enforced on every TCP connection the
//! processes of one cgroup open, reloadable without dropping connections.
//!
//! A [`Session`] holds *generations*: each is one loaded object (its own
//! maps, its `sk_msg` program attached to its own `l7_sockets`, its own
//! redirect sockets) plus its enrollment program. One cgroup link
//! ([`Enrollment`]) runs the current generation's enrollment program, so
//! new connections go into the current generation's `l7_sockets`.
//!
//! Which policy an enrolled connection follows: the one that was current
//! when it was established, until it closes. A socket takes its map's
//! programs when it is inserted, and its `sk_msg` state (`l7_conn`, the
//! request it is in the middle of) lives with that program; moving it to
//! a new program mid-stream would judge a half-sent request with a policy
//! that never saw its head. So [`Session::reload`] loads the new object,
//! swaps the link's program atomically (`BPF_LINK_UPDATE`: no connection is
//! enrolled in neither or both), and keeps the old generation loaded until
//! its `l7_sockets` is empty (the kernel removes a socket from the map when
//! it closes); only then is it freed. Freeing it earlier would remove its
//! sockets from the map and leave them unpoliced.
//!
//! Invariants: the current generation is always fully loaded and attached
//! before the link points at it; a reload that fails at any step leaves
//! the link and the current generation untouched; dropping the session
//! drops the link first (no new enrollments), then every generation
//! (detach, close), so nothing of ours is left in the kernel.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use l7c_abi::{self as abi, Meta};
use l7c_abi::enroll;

use crate::cgroup::{check_cgroup, CgroupError, CgroupLink, UlpGuard};
use crate::error::KernelError;
use crate::events::{self, PortPair};
use crate::loader::{KernelProgram, LoadOptions};
use crate::pins::{self, Place};
use crate::metrics::{Counters, Snapshot};
use crate::sys;

/// A retired generation is freed once its socket map has been seen empty
/// this many polls in a row, and no sooner than [`RETIRE_GRACE`] after the
/// swap (an enrollment callback running during the swap may still insert
/// into the old map).
const EMPTY_POLLS_TO_FREE: u32 = 2;
const RETIRE_GRACE: Duration = Duration::from_secs(1);
/// How often connections established before the policy are counted
/// again while there are any.
const UNPOLICED_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often client TCP Fast Open is checked to be still off.
const TFO_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the cgroup's path is looked at (removed, created again).
const CGROUP_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long to wait for a redirect target to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections one generation may police at once unless `--capacity`
/// says otherwise: 65,536, about what one node's client processes keep
/// open to governed services (each costs a socket-map element and its
/// `l7_conn` state, ~0.5 KiB of kernel memory).
pub const DEFAULT_CAPACITY: u32 = 65_536;

/// `l7_sockets` holds `capacity` plus this margin: the gate checks the
/// capacity in `connect()` and reserves a unit a few microseconds later
/// (`enroll.rs`, "Capacity"), so connections racing through that window
/// may exceed it by a few; the margin keeps the map from ever being the
/// limit.
pub fn socket_map_entries(capacity: u32) -> u32 {
    capacity.saturating_add(1024 + capacity / 16)
}

/// What `l7c run` was asked for, besides the policy.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The cgroup v2 directory whose processes' connections are enrolled.
    pub cgroup: PathBuf,
    /// `--redirect NAME=HOST:PORT`: targets bound to the policy's slots.
    pub redirects: Vec<(String, SocketAddr)>,
    /// Report every verdict as an event (`abi::config::EVENTS_ALL`), not
    /// only logged rules and audit-mode verdicts.
    pub events_all: bool,
    /// Governed connections one generation polices at once; a governed
    /// `connect()` beyond it fails with `EPERM` (docs/runtime.md,
    /// "Capacity").
    pub capacity: u32,
    /// Pin everything in bpffs (`pins.rs`) so enforcement outlives the
    /// process, take the cgroup's agent lock, and adopt what a previous
    /// agent pinned. `l7c run` sets it; without it (tests, `--ephemeral`)
    /// dropping the session removes everything.
    pub persist: bool,
    /// Policy generations kept at once (the current one and those kept
    /// for connections established under older policies); a reload
    /// beyond it is rejected until older ones are freed.
    pub max_generations: usize,
    /// Bytes of each generation's event ring buffer (a power of two, at
    /// least a page): what a burst of events may fill before the agent
    /// drains it.
    pub events_buffer: u32,
    /// Attach the receive side (`l7c_abi::receive`: the response framer)
    /// to each generation's `l7_sockets`. [`Session::start`] turns
    /// [`ReceiveVerdict::Auto`] into `On`.
    pub receive_verdict: ReceiveVerdict,
}

/// Whether enrolled sockets get the receive-side verdict: it frames the
/// server's responses, which deny answers and a switch's consent need
/// (language.md §6), keeps `ioctl(FIONREAD)` true on kernels with
/// upstream 929e30f93125, and costs throughput (docs/BENCHMARKS.md).
/// Without it the program fails closed: no deny after a connection's
/// first request is answered, and no switch is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveVerdict {
    /// The default: `On`.
    Auto,
    On,
    Off,
}

/// The default of [`RunConfig::events_buffer`]: 1 MiB, about 14,500
/// events; 256 KiB lost 15 % of the events of a flood of logged denies
/// that starved the agent of CPU, 1 MiB none (docs/BENCHMARKS.md).
pub const DEFAULT_EVENTS_BUFFER: u32 = 1024 * 1024;

/// The default of [`RunConfig::max_generations`]: 16 generations of the
/// benchmark's policy lock about 22 MB of kernel memory.
pub const DEFAULT_MAX_GENERATIONS: usize = 16;

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            cgroup: PathBuf::new(),
            redirects: Vec::new(),
            events_all: false,
            capacity: DEFAULT_CAPACITY,
            persist: false,
            max_generations: DEFAULT_MAX_GENERATIONS,
            events_buffer: DEFAULT_EVENTS_BUFFER,
            receive_verdict: ReceiveVerdict::Auto,
        }
    }
}

/// Why a policy could not be started or reloaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Kernel(#[from] KernelError),
    #[error("the policy has no redirect target `{name}` (it has: {known})")]
    #[diagnostic(
        code("l7::run::unknown-redirect"),
        help("`--redirect NAME=HOST:PORT` binds a target a `redirect` rule names; drop the flag or fix the name")
    )]
    UnknownRedirect { name: String, known: String },
    #[error("cannot connect to redirect target `{name}` at {addr}: {error}")]
    #[diagnostic(
        code("l7::run::redirect-connect"),
        help("start the target first: redirected requests are sent over this connection")
    )]
    RedirectConnect {
        name: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{kept} policy generations are in force (the current one and {} kept for connections established under older policies); the bound is {max}", kept - 1)]
    #[diagnostic(
        code("l7::run::too-many-generations"),
        help("older generations are freed when their last connection closes (`l7c status` shows them); reload again then, or raise `--max-generations`")
    )]
    TooManyGenerations { kept: usize, max: usize },
    #[error("internal error: a loaded generation numbered {number} arrived where {expected} was expected")]
    #[diagnostic(code("l7::run::stale-generation"), help("an l7c bug: report it"))]
    Stale { number: u64, expected: u64 },
    #[error("another `l7c run` already enforces a policy on cgroup `{}`{}", cgroup.display(), pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    #[diagnostic(
        code("l7::run::already-running"),
        help("one agent per cgroup: stop the other one (SIGTERM; its enforcement stays and this command adopts it), or change its policy file and send it SIGHUP; `l7c status` shows what runs where")
    )]
    AlreadyRunning { cgroup: PathBuf, pid: Option<u32> },
    #[error("the object's `.l7.meta` has ABI version {found}; this runtime reads version {expected}")]
    #[diagnostic(
        code("l7::run::abi"),
        help("compile the policy with this l7c (`l7c run` compiles it itself)")
    )]
    Abi { found: u32, expected: u32 },
}

impl RunError {
    /// Whether the failure is for lack of privileges (exit 2).
    pub fn is_permission(&self) -> bool {
        matches!(self, RunError::Kernel(error) if error.is_permission())
    }
}

/// A generation's cgroup programs: what the session's links run while it
/// is current.
struct Programs {
    /// The enrollment program: the object's own `sock_ops` program
    /// (duplicated fd) or the one loaded next to it.
    enroll: OwnedFd,
    /// The gate (`enroll::gate`) loaded against the generation's maps, for
    /// `connect4` and `connect6`, and its `sock_create` half.
    gate4: OwnedFd,
    gate6: OwnedFd,
    gate_socket: OwnedFd,
}

impl Programs {
    /// (pin name, fd), in a fixed order.
    fn named(&self) -> [(&'static str, &OwnedFd); 4] {
        [
            (pins::link::ENROLL, &self.enroll),
            (pins::link::GATE4, &self.gate4),
            (pins::link::GATE6, &self.gate6),
            (pins::link::GATE_SOCKET, &self.gate_socket),
        ]
    }

    /// The programs generation `number` pinned under `place`.
    fn open(place: &Place, number: u64) -> Result<Programs, KernelError> {
        let dir = place.generation_progs(number);
        Ok(Programs {
            enroll: Place::open(&dir.join(pins::link::ENROLL))?,
            gate4: Place::open(&dir.join(pins::link::GATE4))?,
            gate6: Place::open(&dir.join(pins::link::GATE6))?,
            gate_socket: Place::open(&dir.join(pins::link::GATE_SOCKET))?,
        })
    }
}

/// One loaded policy (module docs).
struct Generation {
    /// 1, 2, ... in load order (names its pins).
    number: u64,
    program: KernelProgram,
    meta: Meta,
    programs: Programs,
    /// When it was loaded (RFC 3339).
    loaded: String,
    /// The gate record at the last poll (refusals are reported as they
    /// grow).
    gate_seen: abi::gate::Gate,
    /// The redirect targets bound at its slots; replies are read and
    /// discarded so they never fill the receive buffer, and a target
    /// that closed is connected again with backoff.
    targets: Vec<Target>,
    retired_at: Option<Instant>,
    empty_polls: u32,
    /// Sockets in its `l7_sockets` at the last poll.
    enrolled: usize,
}

impl Generation {
    fn load(number: u64, object: &[u8], meta: &Meta, config: &RunConfig) -> Result<Generation, RunError> {
        if meta.abi != Meta::ABI_VERSION {
            return Err(RunError::Abi {
                found: meta.abi,
                expected: Meta::ABI_VERSION,
            });
        }
        for (name, _) in &config.redirects {
            if !meta.redirect_slots.iter().any(|(target, _)| target == name) {
                return Err(RunError::UnknownRedirect {
                    name: name.clone(),
                    known: known_targets(meta),
                });
            }
        }
        let mut program = KernelProgram::load_with_max_entries(
            object,
            &LoadOptions {
                program: None,
                attach_map: Some(abi::maps::SOCKETS),
            },
            &[
                (abi::maps::SOCKETS, socket_map_entries(config.capacity)),
                (abi::maps::PEERS, socket_map_entries(config.capacity)),
                (abi::maps::EVENTS, config.events_buffer),
            ],
        )?;
        // The gate's capacity and ports, before any program that reads
        // them is attached (until then a missing record would refuse).
        let gate = abi::gate::Gate {
            capacity: u64::from(config.capacity),
            all_ports: u64::from(meta.governed_ports.is_none()),
            ..abi::gate::Gate::default()
        };
        program.write_array(abi::maps::GATE, 0, &gate.to_bytes())?;
        // Before anything is enrolled: a socket gets the receive path when
        // it enters the map.
        if config.receive_verdict != ReceiveVerdict::Off {
            program.attach_receive_verdict()?;
        }
        for (index, word) in abi::gate::port_words(meta.governed_ports.as_deref()).iter().enumerate() {
            if *word != 0 {
                program.write_array(abi::maps::GATE_PORTS, index as u32, &word.to_ne_bytes())?;
            }
        }
        if config.events_all {
            program.write_array(
                abi::maps::CONFIG,
                abi::config::FLAGS,
                &abi::config::EVENTS_ALL.to_ne_bytes(),
            )?;
        }
        let enroll = if program.has_program(enroll::PROGRAM_NAME) {
            let fd = program.load_sock_ops(enroll::PROGRAM_NAME)?;
            fd.try_clone_to_owned().map_err(|error| {
                KernelError::syscall(
                    "dup of the sock_ops program's fd",
                    crate::Errno::from_io(&error),
                    "",
                )
            })?
        } else {
            // An object written before codegen carried the enrollment
            // program: load ours against its `l7_sockets`.
            program.load_companion(
                enroll::PROGRAM_NAME,
                sys::BPF_PROG_TYPE_SOCK_OPS,
                0,
                &enroll::program(),
            )?
        };
        let gate = enroll::gate::program();
        let gate4 = program.load_companion(
            enroll::gate::PROGRAM_NAME_4,
            sys::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            sys::BPF_CGROUP_INET4_CONNECT,
            &gate,
        )?;
        let gate6 = program.load_companion(
            enroll::gate::PROGRAM_NAME_6,
            sys::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            sys::BPF_CGROUP_INET6_CONNECT,
            &gate,
        )?;
        let gate_socket = program.load_companion(
            enroll::gate::PROGRAM_NAME_SOCKET,
            sys::BPF_PROG_TYPE_CGROUP_SOCK,
            sys::BPF_CGROUP_INET_SOCK_CREATE,
            &enroll::gate::socket_program(),
        )?;
        let mut generation = Generation {
            number,
            program,
            meta: meta.clone(),
            programs: Programs { enroll, gate4, gate6, gate_socket },
            loaded: events::rfc3339(SystemTime::now()),
            gate_seen: abi::gate::Gate::default(),
            targets: Vec::new(),
            retired_at: None,
            empty_polls: 0,
            enrolled: 0,
        };
        generation.bind_targets(config)?;
        Ok(generation)
    }

    /// Generation `saved.number` as a previous agent pinned it under
    /// `place`: its maps and programs opened from the pins, its redirect
    /// targets connected anew (the old agent's connections died with it).
    fn adopt(place: &Place, saved: &pins::GenerationState, config: &RunConfig) -> Result<Generation, RunError> {
        let program = KernelProgram::adopt(&place.generation_maps(saved.number), abi::maps::SOCKETS)?;
        let mut generation = Generation {
            number: saved.number,
            program,
            meta: saved.meta.clone(),
            programs: Programs::open(place, saved.number)?,
            loaded: saved.loaded.clone(),
            gate_seen: abi::gate::Gate::default(),
            targets: Vec::new(),
            retired_at: None,
            empty_polls: 0,
            enrolled: 0,
        };
        // Refusals the previous agent reported are not reported again; lost
        // events are, all of them since the generation was loaded (those
        // lost while no agent ran among them).
        generation.gate_seen = abi::gate::Gate { events_lost: 0, ..generation.gate()? };
        let usable: Vec<(String, SocketAddr)> = config
            .redirects
            .iter()
            .filter(|(name, _)| saved.meta.redirect_slots.iter().any(|(target, _)| target == name))
            .cloned()
            .collect();
        generation.bind_targets(&RunConfig { redirects: usable, ..config.clone() })?;
        Ok(generation)
    }

    /// Pins the generation's maps and programs under `place`.
    fn pin(&mut self, place: &Place) -> Result<(), KernelError> {
        self.program.pin(&place.generation_maps(self.number))?;
        for (name, fd) in self.programs.named() {
            Place::pin(fd.as_fd(), &place.generation_progs(self.number).join(name), "a cgroup program")?;
        }
        Ok(())
    }

    fn saved(&self) -> pins::GenerationState {
        pins::GenerationState { number: self.number, loaded: self.loaded.clone(), meta: self.meta.clone() }
    }

    /// Connects `--redirect` targets and binds them at their slots; writes
    /// which slots are bound for audit mode.
    fn bind_targets(&mut self, config: &RunConfig) -> Result<(), RunError> {
        let mut bound_slots = 0u32;
        for (name, addr) in &config.redirects {
            let Some((_, slot)) = self.meta.redirect_slots.iter().find(|(target, _)| target == name)
            else {
                continue; // checked by the caller
            };
            let stream = connect_target(*addr).map_err(|error| RunError::RedirectConnect {
                name: name.clone(),
                addr: *addr,
                error,
            })?;
            self.program.insert_socket(abi::maps::REDIRECTS, &slot.to_ne_bytes(), stream.as_fd())?;
            self.targets.push(Target {
                name: name.clone(),
                addr: *addr,
                slot: *slot,
                stream: Some(stream),
                retry_at: Instant::now(),
                backoff: RECONNECT_FIRST,
            });
            if *slot < 32 {
                bound_slots |= 1 << slot;
            }
        }
        // Audit mode reads which slots are bound from the config map (a
        // redirect there must not act, so it cannot ask the helper); an
        // object without that word has no audit-mode redirects to judge.
        let has_bound_word = self.program.maps().iter().any(|map| {
            map.name == abi::maps::CONFIG && map.max_entries > abi::config::BOUND_SLOTS
        });
        if has_bound_word {
            self.program.write_array(abi::maps::CONFIG, abi::config::BOUND_SLOTS, &bound_slots.to_ne_bytes())?;
        }
        Ok(())
    }

    fn enrolled_keys(&self) -> Result<Vec<Vec<u8>>, KernelError> {
        self.program.keys(abi::maps::SOCKETS)
    }

    /// The gate record now.
    fn gate(&self) -> Result<abi::gate::Gate, KernelError> {
        let bytes = self.program.lookup(abi::maps::GATE, &0u32.to_ne_bytes())?.unwrap_or_default();
        Ok(abi::gate::Gate::from_bytes(&bytes).unwrap_or_default())
    }

    /// Reads and discards what redirect targets answered; a target that
    /// closed (EOF or an error) leaves its slot — the kernel drops a
    /// closed socket from the map, so redirects there deny
    /// `redirect-unbound` — and is connected again once its backoff has
    /// passed (100 ms, doubling to 30 s). Says what changed.
    fn tend_targets(&mut self, notices: &mut Vec<String>, reconnects: &mut Reconnects) {
        use std::io::Read;
        let mut buffer = [0u8; 16 * 1024];
        let now = Instant::now();
        for target in &mut self.targets {
            if let Some(stream) = &mut target.stream {
                let closed = loop {
                    match stream.read(&mut buffer) {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    target.stream = None;
                    target.retry_at = now;
                    target.backoff = RECONNECT_FIRST;
                    reconnects.lost += 1;
                    notices.push(format!(
                        "l7c: redirect target `{}` at {} closed the connection: its redirects deny (`redirect-unbound`) until it is connected again",
                        target.name, target.addr
                    ));
                }
            }
            if target.stream.is_none() && now >= target.retry_at {
                let bound = connect_target(target.addr).map_err(|error| error.to_string()).and_then(|stream| {
                    self.program
                        .insert_socket(abi::maps::REDIRECTS, &target.slot.to_ne_bytes(), stream.as_fd())
                        .map_err(|error| error.to_string())
                        .map(|()| stream)
                });
                match bound {
                    Ok(stream) => {
                        target.stream = Some(stream);
                        target.backoff = RECONNECT_FIRST;
                        reconnects.done += 1;
                        notices.push(format!("l7c: redirect target `{}` at {} connected again", target.name, target.addr));
                    }
                    Err(error) => {
                        reconnects.failed += 1;
                        target.retry_at = now + target.backoff;
                        target.backoff = (target.backoff * 2).min(RECONNECT_MAX);
                        if reconnects.failed.is_power_of_two() {
                            notices.push(format!(
                                "l7c: redirect target `{}` at {}: connecting again failed ({error}); next try in {:?}",
                                target.name, target.addr, target.backoff
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// A redirect target of a generation.
#[derive(Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
    slot: u32,
    /// `None` while it is not connected.
    stream: Option<TcpStream>,
    retry_at: Instant,
    backoff: Duration,
}

const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Redirect targets lost and connected again, over the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconnects {
    pub lost: u64,
    pub done: u64,
    pub failed: u64,
}

/// A non-blocking connection to a redirect target.
fn connect_target(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn known_targets(meta: &Meta) -> String {
    if meta.redirect_slots.is_empty() {
        return "none".to_owned();
    }
    meta.redirect_slots
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The session's links on the cgroup: the gate's halves and the
/// enrollment program, all running the current generation's programs.
#[derive(Debug)]
struct Links {
    // Drop order: the enrollment first, then the gate.
    enroll: CgroupLink,
    gate4: CgroupLink,
    gate6: CgroupLink,
    gate_socket: CgroupLink,
}

impl Links {
    /// The gate first: a connection that the enrollment will see has
    /// passed it.
    fn attach(programs: &Programs, cgroup: &Path) -> Result<Links, KernelError> {
        let gate4 = CgroupLink::attach_as(
            programs.gate4.as_fd(),
            cgroup,
            sys::BPF_CGROUP_INET4_CONNECT,
            "the enrollment gate",
            "BPF_CGROUP_INET4_CONNECT",
        )?;
        let gate6 = CgroupLink::attach_as(
            programs.gate6.as_fd(),
            cgroup,
            sys::BPF_CGROUP_INET6_CONNECT,
            "the enrollment gate",
            "BPF_CGROUP_INET6_CONNECT",
        )?;
        let gate_socket = CgroupLink::attach_as(
            programs.gate_socket.as_fd(),
            cgroup,
            sys::BPF_CGROUP_INET_SOCK_CREATE,
            "the enrollment gate",
            "BPF_CGROUP_INET_SOCK_CREATE",
        )?;
        let enroll = CgroupLink::attach(programs.enroll.as_fd(), cgroup)?;
        Ok(Links { enroll, gate4, gate6, gate_socket })
    }

    /// The links a previous agent pinned under `place`.
    fn open(place: &Place, cgroup: &Path) -> Result<Links, KernelError> {
        let open = |name: &str, what: &'static str, hook: &'static str| {
            Place::open(&place.link(name)).map(|fd| CgroupLink::from_fd(fd, cgroup, what, hook))
        };
        Ok(Links {
            enroll: open(pins::link::ENROLL, "the sock_ops program", "BPF_CGROUP_SOCK_OPS")?,
            gate4: open(pins::link::GATE4, "the enrollment gate", "BPF_CGROUP_INET4_CONNECT")?,
            gate6: open(pins::link::GATE6, "the enrollment gate", "BPF_CGROUP_INET6_CONNECT")?,
            gate_socket: open(pins::link::GATE_SOCKET, "the enrollment gate", "BPF_CGROUP_INET_SOCK_CREATE")?,
        })
    }

    fn pin(&self, place: &Place) -> Result<(), KernelError> {
        for (name, link) in [
            (pins::link::GATE4, &self.gate4),
            (pins::link::GATE6, &self.gate6),
            (pins::link::GATE_SOCKET, &self.gate_socket),
            (pins::link::ENROLL, &self.enroll),
        ] {
            Place::pin(link.fd(), &place.link(name), "a cgroup link")?;
        }
        Ok(())
    }

    /// Points every link at `next`'s programs; if one update fails, the
    /// links already moved go back to `current`'s, so the cgroup never
    /// runs a mix of two generations.
    fn replace(&self, next: &Programs, current: &Programs) -> Result<(), KernelError> {
        let steps: [(&CgroupLink, &OwnedFd, &OwnedFd); 4] = [
            (&self.gate_socket, &next.gate_socket, &current.gate_socket),
            (&self.gate4, &next.gate4, &current.gate4),
            (&self.gate6, &next.gate6, &current.gate6),
            (&self.enroll, &next.enroll, &current.enroll),
        ];
        for (done, (link, new, _)) in steps.iter().enumerate() {
            if let Err(error) = link.replace(new.as_fd()) {
                for (link, _, old) in steps.iter().take(done) {
                    // Best effort: an update that just worked with the
                    // other program works with this one.
                    let _ = link.replace(old.as_fd());
                }
                return Err(error);
            }
        }
        Ok(())
    }
}

/// How a session began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// Nothing was running on the cgroup: the policy was loaded.
    Fresh,
    /// A previous agent's pinned enforcement was adopted (it never
    /// stopped). `reloaded`: the policy given differs from the one in
    /// force, so it was loaded as a new generation (the reload rules);
    /// otherwise nothing was loaded.
    Adopted { since: String, generations: usize, reloaded: bool },
}

/// What one [`Session::poll`] found.
#[derive(Debug, Default)]
pub struct Polled {
    /// JSON lines, one per record, oldest first per generation.
    pub events: Vec<String>,
    /// Records that could not be read as `abi::Event`.
    pub unreadable: u64,
    /// Generations freed because their last connection closed.
    pub freed: usize,
    /// What the gate refused or could not enroll since the last poll, one
    /// line each for the log (also in `events` as `"kind":"refused"` /
    /// `"kind":"unenrolled"` lines).
    pub notices: Vec<String>,
}

/// A running policy (module docs).
pub struct Session {
    config: RunConfig,
    cgroup_label: String,
    // Field order is drop order: the links go first (no new
    // enrollments), then the generations.
    links: Links,
    /// Refuses `TCP_ULP` to the cgroup's sockets (dropped after the
    /// enrollment link: declared after it).
    _ulp_guard: UlpGuard,
    /// Where the session is pinned (`RunConfig::persist`), with the agent
    /// lock held for as long as the session lives.
    place: Option<(Place, std::fs::File)>,
    /// What the state file says (persistent sessions).
    since: String,
    started: Started,
    next_number: u64,
    /// The id (inode) of the cgroup directory the links are attached to.
    cgroup_id: u64,
    /// The cgroup's path has no directory now (removed; maybe created
    /// again later, as systemd does on every unit restart).
    cgroup_missing: bool,
    last_cgroup_check: Instant,
    /// Times the cgroup was created again and the policy re-attached.
    pub cgroup_reattached: u64,
    /// `net.ipv4.tcp_fastopen` before the session turned client TFO off
    /// (`tfo.rs`), to restore when enforcement is lifted.
    tcp_fastopen_was: Option<u32>,
    last_tfo_check: Instant,
    /// Connections of the cgroup established before the policy (not
    /// enrolled) at the last look, and when that was.
    unpoliced: usize,
    last_unpoliced_check: Instant,
    /// What the kernel does with kTLS (probed at start).
    ktls: crate::probe::KtlsState,
    current: Generation,
    retired: Vec<Generation>,
    /// Counts of freed generations, so counters never go down.
    carried: Counters,
    /// Gate refusals and enrollment failures over every generation.
    gate_totals: abi::gate::Gate,
    /// Addresses of recently enrolled connections, by the ports events
    /// carry.
    addresses: HashMap<PortPair, (SocketAddr, SocketAddr)>,
    /// Sockets enrolled in every generation at the last poll.
    enrolled: usize,
    pub events_written: u64,
    pub events_dropped: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
    /// Redirect targets lost and connected again.
    reconnects: Reconnects,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cgroup", &self.config.cgroup)
            .field("generations", &(1 + self.retired.len()))
            .finish_non_exhaustive()
    }
}

/// Loads a generation away from the session (see [`Session::loader`]).
#[derive(Debug, Clone)]
pub struct GenerationLoader {
    number: u64,
    config: RunConfig,
}

impl GenerationLoader {
    /// Creates the generation's maps and loads its programs (the
    /// verifier's work); nothing is attached or pinned yet, so dropping
    /// the result (or the process) leaves nothing behind.
    pub fn load(&self, object: &[u8], meta: &Meta) -> Result<LoadedGeneration, RunError> {
        Generation::load(self.number, object, meta, &self.config).map(LoadedGeneration)
    }
}

/// A generation loaded and not yet in force ([`Session::install`]).
pub struct LoadedGeneration(Generation);

impl std::fmt::Debug for LoadedGeneration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedGeneration").field("number", &self.0.number).finish_non_exhaustive()
    }
}

/// Loaded on one thread, installed on another.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<LoadedGeneration>();
    send::<GenerationLoader>();
}

/// The refusal when another agent holds the lock of `place`.
fn already_running(place: &Place, cgroup: &Path) -> RunError {
    let pid = place.read_state().ok().flatten().and_then(|state| state.agent_pid);
    RunError::AlreadyRunning { cgroup: cgroup.to_owned(), pid }
}

impl Session {
    /// Loads `object` (with its `.l7.meta` as `meta`), attaches its
    /// `sk_msg` program to `l7_sockets`, binds the redirect targets, and
    /// attaches the gate and the enrollment program to the cgroup.
    ///
    /// With `config.persist`, everything is pinned (`pins.rs`) and the
    /// agent lock of the cgroup is taken: another session on the same
    /// cgroup is refused ([`RunError::AlreadyRunning`]), and pins a previous
    /// agent left are adopted instead of loaded ([`Started::Adopted`]).
    /// Refuses, as [`Session::start`] would, when another agent holds
    /// `cgroup`; for a command that must check it before it takes other
    /// resources (a metrics port). `start` checks again.
    pub fn check_no_other_agent(cgroup: &Path) -> Result<(), RunError> {
        let place = Place::of(cgroup)?;
        match place.try_lock()? {
            Some(_released_on_return) => Ok(()),
            None => Err(already_running(&place, cgroup)),
        }
    }

    pub fn start(object: &[u8], meta: &Meta, mut config: RunConfig) -> Result<Session, RunError> {
        check_cgroup(&config.cgroup)?;
        if config.receive_verdict == ReceiveVerdict::Auto {
            // The receive side frames the server's answers, which deny
            // answers and switches need (language.md §6), on every kernel.
            config.receive_verdict = ReceiveVerdict::On;
        }
        if !config.persist {
            let current = Generation::load(1, object, meta, &config)?;
            // Before the enrollment: no enrolled socket may take the tls ULP.
            let ulp_guard = UlpGuard::attach(&config.cgroup)?;
            let links = Links::attach(&current.programs, &config.cgroup)?;
            let mut session = Session::assemble(config, links, ulp_guard, None, current, Vec::new(), Started::Fresh);
            session.tcp_fastopen_was = crate::tfo::disable_client()?;
            return Ok(session);
        }
        let place = Place::of(&config.cgroup)?;
        let Some(lock) = place.try_lock()? else {
            return Err(already_running(&place, &config.cgroup));
        };
        if let (Some(state), true) = (place.read_state()?, place.is_pinned()) {
            return Session::adopt(object, meta, config, place, lock, state);
        }
        // Pins without a state file: an agent died between pinning and
        // writing its state, before it reported enforcement; start over.
        place.remove_all()?;
        let pinned = (|| -> Result<(Generation, UlpGuard, Links), RunError> {
            let mut current = Generation::load(1, object, meta, &config)?;
            current.pin(&place)?;
            let ulp_guard = UlpGuard::attach(&config.cgroup)?;
            Place::pin(ulp_guard.link(), &place.link(pins::link::ULP_GUARD), "the TCP_ULP guard's link")?;
            let links = Links::attach(&current.programs, &config.cgroup)?;
            links.pin(&place)?;
            Ok((current, ulp_guard, links))
        })();
        let (current, ulp_guard, links) = match pinned {
            Ok(parts) => parts,
            Err(error) => {
                // Nothing was in force before: leave nothing behind.
                let _ = place.remove_all();
                return Err(error);
            }
        };
        let mut session = Session::assemble(config, links, ulp_guard, Some((place, lock)), current, Vec::new(), Started::Fresh);
        session.tcp_fastopen_was = crate::tfo::disable_client()?;
        session.save()?;
        Ok(session)
    }

    fn adopt(
        object: &[u8],
        meta: &Meta,
        config: RunConfig,
        place: Place,
        lock: std::fs::File,
        state: pins::State,
    ) -> Result<Session, RunError> {
        let mut generations = Vec::new();
        for saved in &state.generations {
            generations.push(Generation::adopt(&place, saved, &config)?);
        }
        let Some(current) = generations.pop() else {
            return Err(RunError::Kernel(KernelError::BadObject {
                reason: format!("the state of cgroup `{}` names no generation", config.cgroup.display()),
            }));
        };
        let links = Links::open(&place, &config.cgroup)?;
        let ulp_guard = UlpGuard::from_link(Place::open(&place.link(pins::link::ULP_GUARD))?);
        let same = current.meta.source_hash == meta.source_hash
            && state.capacity == config.capacity
            && state.events_all == config.events_all;
        let adopted = 1 + generations.len();
        let since = state.since.clone();
        let mut session = Session::assemble(
            config,
            links,
            ulp_guard,
            Some((place, lock)),
            current,
            generations,
            Started::Adopted { since: since.clone(), generations: adopted, reloaded: !same },
        );
        session.since = since;
        // Off again if someone turned it back on meanwhile.
        session.tcp_fastopen_was = crate::tfo::disable_client()?;
        session.next_number = state.generations.iter().map(|g| g.number).max().unwrap_or(0) + 1;
        for generation in &mut session.retired {
            generation.retired_at = Some(Instant::now());
        }
        if !same {
            session.reload(object, meta)?;
        }
        session.save()?;
        Ok(session)
    }

    fn assemble(
        config: RunConfig,
        links: Links,
        ulp_guard: UlpGuard,
        place: Option<(Place, std::fs::File)>,
        current: Generation,
        retired: Vec<Generation>,
        started: Started,
    ) -> Session {
        let next_number = current.number + 1;
        let cgroup_id = cgroup_id(&config.cgroup).unwrap_or(0);
        Session {
            cgroup_id,
            cgroup_missing: false,
            last_cgroup_check: Instant::now(),
            cgroup_reattached: 0,
            unpoliced: 0,
            last_unpoliced_check: Instant::now(),
            tcp_fastopen_was: None,
            last_tfo_check: Instant::now(),
            _ulp_guard: ulp_guard,
            place,
            since: events::rfc3339(SystemTime::now()),
            started,
            next_number,
            ktls: crate::probe::ktls_state(),
            cgroup_label: config.cgroup.display().to_string(),
            config,
            links,
            current,
            retired,
            carried: Counters::default(),
            gate_totals: abi::gate::Gate::default(),
            addresses: HashMap::new(),
            enrolled: 0,
            events_written: 0,
            events_dropped: 0,
            reloads_applied: 0,
            reconnects: Reconnects::default(),
            reloads_rejected: 0,
        }
    }

    /// Writes the state file of a persistent session (no-op otherwise).
    fn save(&self) -> Result<(), KernelError> {
        let Some((place, _)) = &self.place else { return Ok(()) };
        place.write_state(&pins::State {
            cgroup: self.config.cgroup.clone(),
            cgroup_id: place.cgroup_id,
            since: self.since.clone(),
            capacity: self.config.capacity,
            events_all: self.config.events_all,
            agent_pid: Some(std::process::id()),
            generations: self.retired.iter().chain(std::iter::once(&self.current)).map(Generation::saved).collect(),
        })
    }

    /// `net.ipv4.tcp_fastopen` before the session turned client TFO off,
    /// if it did (`tfo.rs`).
    pub fn tcp_fastopen_was(&self) -> Option<u32> {
        self.tcp_fastopen_was
    }

    /// How the session began.
    pub fn started(&self) -> &Started {
        &self.started
    }

    /// Where the session is pinned, if it persists.
    pub fn place(&self) -> Option<&Place> {
        self.place.as_ref().map(|(place, _)| place)
    }

    /// Replaces the policy for new connections (module docs); on error
    /// the running policy stays and the error says why.
    pub fn reload(&mut self, object: &[u8], meta: &Meta) -> Result<(), RunError> {
        let loaded = self.loader().and_then(|loader| loader.load(object, meta));
        match loaded {
            Ok(loaded) => self.install(loaded),
            Err(error) => {
                self.rejected();
                Err(error)
            }
        }
    }

    /// What loads the next generation, on any thread (the verifier may
    /// take seconds: the agent's loop goes on meanwhile); refused when
    /// [`RunConfig::max_generations`] are in force.
    pub fn loader(&self) -> Result<GenerationLoader, RunError> {
        self.room_for_one_more()?;
        Ok(GenerationLoader { number: self.next_number, config: self.config.clone() })
    }

    fn room_for_one_more(&self) -> Result<(), RunError> {
        let kept = 1 + self.retired.len();
        if kept >= self.config.max_generations {
            return Err(RunError::TooManyGenerations { kept, max: self.config.max_generations });
        }
        Ok(())
    }

    /// Puts a generation [`GenerationLoader::load`] made in force for new
    /// connections (the one a reload makes): pinned, the cgroup links
    /// switched to its programs; the current one is kept for the
    /// connections it polices.
    pub fn install(&mut self, loaded: LoadedGeneration) -> Result<(), RunError> {
        let number = loaded.0.number;
        let result = (|| {
            if number != self.next_number {
                return Err(RunError::Stale { number, expected: self.next_number });
            }
            self.room_for_one_more()?;
            Ok(loaded.0)
        })()
        .and_then(|mut next| {
            if let Some((place, _)) = &self.place {
                next.pin(place)?;
            }
            if let Err(error) = self.links.replace(&next.programs, &self.current.programs) {
                if let Some((place, _)) = &self.place {
                    let _ = place.remove_generation(number);
                }
                next.program.release();
                return Err(error.into());
            }
            Ok(next)
        });
        match result {
            Ok(next) => {
                self.next_number += 1;
                let mut previous = std::mem::replace(&mut self.current, next);
                previous.retired_at = Some(Instant::now());
                self.retired.push(previous);
                self.reloads_applied += 1;
                self.save()?;
                Ok(())
            }
            Err(error) => {
                self.rejected();
                Err(error)
            }
        }
    }

    /// Lifts enforcement: unpins everything (a persistent session) and
    /// drops it, so nothing of it is left in the kernel. Connections that
    /// were enrolled carry on unpoliced. `l7c stop` does the same for a
    /// session whose agent is gone ([`stop_pinned`]).
    pub fn stop(mut self) -> Result<(), KernelError> {
        if let Some((place, _lock)) = self.place.take() {
            place.remove_all()?;
        }
        crate::tfo::restore_if_last(pins::Place::all().len())?;
        self.current.program.release();
        for generation in &mut self.retired {
            generation.program.release();
        }
        Ok(())
    }

    /// Counts a reload rejected before it reached the kernel (the policy
    /// did not compile).
    pub fn rejected(&mut self) {
        self.reloads_rejected += 1;
    }

    /// The cgroup's established connections that no generation polices
    /// (established before the policy was: `existing.rs`), now.
    pub fn unpoliced(&mut self) -> Result<Vec<crate::existing::Existing>, KernelError> {
        let mut enrolled = std::collections::HashSet::new();
        for generation in std::iter::once(&self.current).chain(&self.retired) {
            for key in generation.enrolled_keys()? {
                if let Some((local, remote)) = events::parse_key(&key) {
                    enrolled.insert(crate::key::SockKey::new(local, remote));
                }
            }
        }
        let found = crate::existing::unpoliced(&self.config.cgroup, self.current.meta.governed_ports.as_deref(), &enrolled);
        self.unpoliced = found.len();
        self.last_unpoliced_check = Instant::now();
        Ok(found)
    }

    /// Whether the cgroup directory exists (the policy is attached to it).
    pub fn cgroup_present(&self) -> bool {
        !self.cgroup_missing
    }

    /// Looks at the cgroup's path: removed, or created again (a new
    /// directory, a new id), in which case the policy is attached to the
    /// new one — links, guard, pins and state follow it. What it found is
    /// said in `notices`.
    fn follow_cgroup(&mut self, notices: &mut Vec<String>) -> Result<(), KernelError> {
        if self.last_cgroup_check.elapsed() < CGROUP_CHECK_EVERY {
            return Ok(());
        }
        self.last_cgroup_check = Instant::now();
        let path = self.config.cgroup.clone();
        match cgroup_id(&path) {
            None if !self.cgroup_missing => {
                self.cgroup_missing = true;
                notices.push(format!(
                    "l7c: cgroup `{}` was removed: no process can be in it, so nothing is enforced there until a cgroup is created at that path again; l7c attaches the policy to it then",
                    path.display()
                ));
            }
            Some(id) if id != self.cgroup_id => {
                self.reattach(id)?;
                self.cgroup_missing = false;
                notices.push(format!(
                    "l7c: cgroup `{}` was created again (id {id}): the policy is attached to it; connections its processes open are enforced again (re-attached {} time(s))",
                    path.display(),
                    self.cgroup_reattached
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Attaches the current generation to the cgroup now at the session's
    /// path (id `id`), and moves the pins and the state to that id.
    fn reattach(&mut self, id: u64) -> Result<(), KernelError> {
        let links = Links::attach(&self.current.programs, &self.config.cgroup)?;
        let guard = UlpGuard::attach(&self.config.cgroup)?;
        if let Some((place, _lock)) = &mut self.place {
            let moved = Place::with_id(id);
            let io = |step: String, error: std::io::Error| KernelError::syscall(step, crate::Errno::from_io(&error), "");
            for (from, to) in [(&place.pins, &moved.pins), (&place.state_dir, &moved.state_dir)] {
                // A directory at the new id is a stale one (ids are inode
                // numbers, which the kernel reuses).
                let _ = std::fs::remove_dir_all(to);
                std::fs::rename(from, to).map_err(|error| io(format!("rename {} to {}", from.display(), to.display()), error))?;
            }
            for name in pins::link::ALL {
                let _ = std::fs::remove_file(moved.link(name));
            }
            links.pin(&moved)?;
            Place::pin(guard.link(), &moved.link(pins::link::ULP_GUARD), "the TCP_ULP guard's link")?;
            *place = moved;
        }
        // The old links, attached to the removed cgroup, close here.
        self.links = links;
        self._ulp_guard = guard;
        self.cgroup_id = id;
        self.cgroup_reattached += 1;
        self.save()
    }

    /// Drains every generation's events, refreshes the address cache, and
    /// frees retired generations whose connections have all closed.
    pub fn poll(&mut self) -> Result<Polled, KernelError> {
        let mut polled = Polled::default();
        self.follow_cgroup(&mut polled.notices)?;
        if self.last_tfo_check.elapsed() >= TFO_CHECK_EVERY && !crate::tfo::client_off()? {
            let was = crate::tfo::disable_client()?;
            self.tcp_fastopen_was = self.tcp_fastopen_was.or(was);
            self.last_tfo_check = Instant::now();
            polled.notices.push("l7c: client TCP Fast Open was turned on again (net.ipv4.tcp_fastopen): turned it off, it lets bytes pass unjudged".to_owned());
        }
        if self.unpoliced > 0 && self.last_unpoliced_check.elapsed() >= UNPOLICED_CHECK_EVERY {
            // Until the last of them is closed (or reset), keep the gauge true.
            self.unpoliced()?;
        }
        // Keys first: an event's connection may close right after. One
        // walk of each map per poll serves the address cache, the
        // enrolled count and retiring.
        let mut enrolled = 0;
        for generation in std::iter::once(&mut self.current).chain(self.retired.iter_mut()) {
            let keys = generation.enrolled_keys()?;
            generation.enrolled = keys.len();
            enrolled += keys.len();
            for key in keys {
                if let (Some(ports), Some(addresses)) =
                    (events::key_ports(&key), events::parse_key(&key))
                {
                    self.addresses.insert(ports, addresses);
                }
            }
        }
        self.enrolled = enrolled;
        let monotonic_now = events::monotonic_now();
        let wall_now = SystemTime::now();
        let cgroup = self.cgroup_label.clone();
        let mut generations: Vec<&mut Generation> = std::iter::once(&mut self.current)
            .chain(self.retired.iter_mut())
            .collect();
        // Read once per poll, and only for an event whose connection
        // already left the map.
        let mut proc_net: Option<HashMap<(u16, u16), (SocketAddr, SocketAddr)>> = None;
        for generation in &mut generations {
            generation.tend_targets(&mut polled.notices, &mut self.reconnects);
            for record in generation.program.drain_events(abi::maps::EVENTS)? {
                let addresses = l7c_abi::Event::from_bytes(&record).and_then(|event| {
                    self.addresses
                        .get(&(event.remote_port, event.local_port))
                        .copied()
                        .or_else(|| {
                            let ports = (
                                u16::try_from(event.local_port).ok()?,
                                events::remote_port(event.remote_port),
                            );
                            proc_net.get_or_insert_with(events::proc_net_tcp).get(&ports).copied()
                        })
                });
                let context = events::Context {
                    meta: &generation.meta,
                    addresses,
                    cgroup: &cgroup,
                    monotonic_now,
                    wall_now,
                };
                match events::json_line(&record, &context) {
                    Some(line) => polled.events.push(line),
                    None => polled.unreadable += 1,
                }
            }
        }
        self.events_dropped += polled.unreadable;
        for generation in std::iter::once(&mut self.current).chain(self.retired.iter_mut()) {
            let gate = generation.gate()?;
            let seen = std::mem::replace(&mut generation.gate_seen, gate);
            let build = &generation.meta.source_hash;
            let time = events::rfc3339(wall_now);
            let mut report = |kind: &str, reason: &str, count: u64, line: String| {
                if count == 0 {
                    return;
                }
                polled.notices.push(line);
                polled.events.push(format!(
                    "{{\"kind\":\"{kind}\",\"time\":{},\"reason\":\"{reason}\",\"connections\":{count},\"capacity\":{},\"used\":{},\"cgroup\":{},\"build\":{}}}",
                    events::json_string(&time),
                    gate.capacity,
                    gate.used,
                    events::json_string(&cgroup),
                    events::json_string(build)
                ));
            };
            let full = gate.refused_full.saturating_sub(seen.refused_full);
            report("refused", "capacity", full, format!(
                "l7c: refused {full} governed connect() call(s) with EPERM: the capacity of {} connections was in use ({} held now); raise --capacity or find who holds them (l7c_capacity_used_connections)",
                gate.capacity, gate.used
            ));
            let protocol = gate.refused_protocol.saturating_sub(seen.refused_protocol);
            report("refused", "protocol", protocol, format!(
                "l7c: refused {protocol} socket()/connect() call(s) with EPERM: an IP stream socket that is not TCP (MPTCP, SCTP) cannot be policed"
            ));
            let lost = gate.events_lost.saturating_sub(seen.events_lost);
            report("lost", "ring-buffer-full", lost, format!(
                "l7c: {lost} event(s) were lost in the kernel: the ring buffer was full (l7c_events_lost_total)"
            ));
            self.gate_totals.events_lost += lost;
            let unenrolled = gate.unenrolled.saturating_sub(seen.unenrolled);
            report("unenrolled", "map-full", unenrolled, format!(
                "l7c: ERROR: {unenrolled} governed connection(s) could not be enrolled (the socket map was full despite the gate) and are NOT policed; please report this with `l7c status`"
            ));
            self.gate_totals.refused_full += full;
            self.gate_totals.refused_protocol += protocol;
            self.gate_totals.unenrolled += unenrolled;
        }
        // Free retired generations with no connection left.
        let mut index = 0;
        while let Some(generation) = self.retired.get_mut(index) {
            let empty = generation.enrolled == 0;
            generation.empty_polls = if empty { generation.empty_polls + 1 } else { 0 };
            let old_enough = generation
                .retired_at
                .is_some_and(|at| at.elapsed() >= RETIRE_GRACE);
            if generation.empty_polls >= EMPTY_POLLS_TO_FREE && old_enough {
                let mut freed = self.retired.remove(index);
                // Its last events were drained above; keep its counts.
                if let Ok(counters) = Counters::read(&freed.program, &freed.meta) {
                    self.carried.add(&counters);
                }
                // The state first (it must never name missing pins), then
                // the pins; the maps go when the last fd closes.
                self.save()?;
                if let Some((place, _)) = &self.place {
                    place.remove_generation(freed.number)?;
                }
                freed.program.release();
                drop(freed);
                polled.freed += 1;
            } else {
                index += 1;
            }
        }
        // The cache only needs connections that may still report.
        if self.addresses.len() > 65_536 {
            self.addresses.clear();
        }
        Ok(polled)
    }

    /// What `/metrics` shows now (the enrolled count as of the last
    /// [`Session::poll`]).
    pub fn snapshot(&self) -> Result<Snapshot, KernelError> {
        let mut counters = self.carried.clone();
        for generation in std::iter::once(&self.current).chain(&self.retired) {
            counters.add(&Counters::read(&generation.program, &generation.meta)?);
        }
        Ok(Snapshot {
            counters,
            connections_enrolled: self.enrolled,
            events_written: self.events_written,
            events_dropped: self.events_dropped,
            reloads_applied: self.reloads_applied,
            redirect_targets: self.reconnects,
            reloads_rejected: self.reloads_rejected,
            generations: 1 + self.retired.len(),
            generations_max: self.config.max_generations,
            generations_memlock: std::iter::once(&self.current).chain(&self.retired).map(|g| g.program.memlock_bytes()).sum(),
            source_hash: self.current.meta.source_hash.clone(),
            ktls: self.ktls.clone(),
            cgroup_present: !self.cgroup_missing,
            connections_unpoliced: self.unpoliced,
            cgroup_reattached: self.cgroup_reattached,
            gate: crate::metrics::GateFigures {
                capacity: u64::from(self.config.capacity),
                used: self.current.gate_seen.used,
                refused_full: self.gate_totals.refused_full,
                refused_protocol: self.gate_totals.refused_protocol,
                unenrolled: self.gate_totals.unenrolled,
                events_lost: self.gate_totals.events_lost,
            },
        })
    }

    /// What the kernel does with kTLS, probed when the session started.
    /// Whether this session's generations get the receive verdict (never
    /// `Auto` once started).
    pub fn receive_verdict(&self) -> ReceiveVerdict {
        self.config.receive_verdict
    }

    pub fn ktls(&self) -> &crate::probe::KtlsState {
        &self.ktls
    }

    /// The current generation's program (ids for `bpftool`, maps).
    pub fn current(&self) -> &KernelProgram {
        &self.current.program
    }

    /// Every loaded generation's program, current first.
    pub fn programs(&self) -> Vec<&KernelProgram> {
        std::iter::once(&self.current.program)
            .chain(self.retired.iter().map(|g| &g.program))
            .collect()
    }

    /// The kernel id of the current enrollment program.
    pub fn enrollment_program_id(&self) -> Option<u32> {
        prog_id(self.current.programs.enroll.as_fd())
    }

    pub fn cgroup(&self) -> &Path {
        &self.config.cgroup
    }
}

impl Drop for Session {
    /// A persistent session leaves its enforcement in the kernel and says
    /// in the state file that no agent runs it any more (best effort: the
    /// state is only informational once the lock is released).
    fn drop(&mut self) {
        if let Some((place, _)) = &self.place {
            if let Ok(Some(mut state)) = place.read_state() {
                state.agent_pid = None;
                let _ = place.write_state(&state);
            }
        } else if self.tcp_fastopen_was.is_some() {
            // An ephemeral (or stopped) session's enforcement ends here.
            let _ = crate::tfo::restore_if_last(pins::Place::all().len());
        }
    }
}

/// The id of the cgroup directory at `path` (its inode, what
/// `bpf_get_current_cgroup_id` returns), if there is one.
fn cgroup_id(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|metadata| metadata.ino())
}

/// The kernel id of a program fd, from `/proc/self/fdinfo`.
fn prog_id(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("prog_id:"))
        .and_then(|id| id.trim().parse().ok())
}
