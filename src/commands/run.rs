//! `l7c run FILE... --cgroup PATH [--redirect NAME=HOST:PORT]...
//! [--metrics ADDR] [--events PATH|-] [--events-all] [--capacity N]
//! [--watch] [--allow-empty] [--ephemeral]`
//!
//! Compiles the policy and enforces it on every TCP connection the
//! processes of the cgroup open (`l7c_runtime::Session`). The enforcement
//! is pinned in the kernel: it stays in force when this agent exits or
//! dies, a restarted agent adopts it, and only `l7c stop` lifts it
//! (docs/runtime.md, "Crash safety"); `--ephemeral` ties it to the
//! process instead. SIGHUP (and with `--watch` a changed file once it has
//! settled) reloads: new connections get the new policy, established ones
//! keep theirs. A policy that fails to compile or load, or that defines no
//! policy at all (without `--allow-empty`), is rejected and the running
//! one stays. SIGINT and SIGTERM end the agent, not the enforcement.
//!
//! Exit codes: 0 after a clean stop; 1 the policy does not compile, is
//! empty, or the kernel refused the compiled program; 2 usage,
//! privileges, cgroup, another agent on the cgroup, I/O.

use super::{compile_or_report_at_most, generate_or_report, kernel_failure, lacks_node_privileges};
use crate::{files_arg, usage_error, Status};
use l7c_compiler::codegen::Compiled;
use l7c_compiler::report;
use l7c_runtime::cgroup::check_cgroup;
use l7c_runtime::metrics;
use l7c_runtime::run::{LoadedGeneration, ReceiveVerdict, RunConfig, RunError, Session, Started};
use l7c_runtime::signals::Signals;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often the loop drains events, refreshes metrics and looks at
/// signals; file changes are looked at every [`WATCH_EVERY`].
const TICK: Duration = Duration::from_millis(50);
/// How often the metrics text is rebuilt: reading the counters costs one
/// lookup per counter (a 10,000-rule policy has over 10,000), too much for
/// every tick; Prometheus scrapes every few seconds.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before `--watch` applies it.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
#[command(after_help = "\
Needs root, or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and CAP_SYS_ADMIN (`l7c probe` says which are missing).

The policy is pinned in bpffs (/sys/fs/bpf/l7c/cg-<id>): it stays in force when this process exits or is killed;
`l7c run` started again adopts it, and only `l7c stop --cgroup PATH` lifts it (`--ephemeral` ties it to this process).

Signals: SIGHUP compiles the files again and applies them to new connections (established ones keep their policy)
and reopens the --events file (log rotation); SIGTERM and SIGINT stop the agent, not the enforcement.
--watch does the same reload when a file has changed and then stayed unchanged for a second.")]
pub struct Args {
    /// The policy files (compiled together)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The cgroup v2 directory whose processes' TCP connections are policed
    #[arg(long, value_name = "PATH", required = true)]
    cgroup: PathBuf,
    /// Bind redirect target NAME to a TCP connection to HOST:PORT
    #[arg(long = "redirect", value_name = "NAME=HOST:PORT", value_parser = parse_redirect)]
    redirects: Vec<(String, SocketAddr)>,
    /// Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9107 or localhost:9107) at /metrics
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_address)]
    metrics: Option<SocketAddr>,
    /// Write one JSON line per reported verdict to PATH (appended) or `-` (stdout)
    #[arg(long, value_name = "PATH|-")]
    events: Option<PathBuf>,
    /// Report every verdict, not only `log` rules and audit-mode verdicts
    #[arg(long)]
    events_all: bool,
    /// Governed connections policed at once; a governed connect() beyond it
    /// fails with EPERM (connections to ports no policy selects do not count)
    #[arg(long, value_name = "N", default_value_t = l7c_runtime::run::DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    capacity: u32,
    /// Policy generations kept at once (the current one and older ones kept for
    /// connections established under them); a reload beyond it is rejected
    #[arg(long, value_name = "N", default_value_t = l7c_runtime::run::DEFAULT_MAX_GENERATIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=1024))]
    max_generations: usize,
    /// Bytes of the kernel's event ring buffer per generation: a power of two
    /// from 4KiB to 256MiB (suffixes KiB, MiB); a burst beyond it loses events
    /// (counted in l7c_events_lost_total)
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_ring_size)]
    events_buffer: u32,
    /// The pass-all receive verdict that keeps ioctl(FIONREAD) true on kernels that
    /// miscount it for sockets in a socket map: auto attaches it where this kernel
    /// needs it (it costs throughput: docs/BENCHMARKS.md)
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    receive_verdict: ReceiveVerdictArg,
    /// Tie enforcement to this process: nothing is pinned, and it ends when
    /// l7c run exits or dies (for trying policies out, never on a node)
    #[arg(long)]
    ephemeral: bool,
    /// Also reload when a policy file changes and then stays unchanged for a
    /// second (SIGHUP always reloads); replace files atomically (write, then mv)
    #[arg(long)]
    watch: bool,
    /// Accept policy files with no policy at all (every connection passes);
    /// without it such a start or reload is refused
    #[arg(long)]
    allow_empty: bool,
    /// Governed connections established before the policy are not policed:
    /// `keep` reports them (log, l7c_connections_unpoliced), `reset` ends
    /// them so that their clients reconnect under the policy
    #[arg(long, value_enum, default_value = "keep")]
    existing: Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReceiveVerdictArg {
    Auto,
    On,
    Off,
}

impl From<ReceiveVerdictArg> for ReceiveVerdict {
    fn from(arg: ReceiveVerdictArg) -> ReceiveVerdict {
        match arg {
            ReceiveVerdictArg::Auto => ReceiveVerdict::Auto,
            ReceiveVerdictArg::On => ReceiveVerdict::On,
            ReceiveVerdictArg::Off => ReceiveVerdict::Off,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Existing {
    Keep,
    Reset,
}

/// A ring buffer's size: a power of two from 4 KiB to 256 MiB, in bytes
/// or with `KiB`/`MiB`.
fn parse_ring_size(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.strip_suffix("KiB") {
        Some(digits) => (digits, 1024),
        None => match text.strip_suffix("MiB") {
            Some(digits) => (digits, 1024 * 1024),
            None => (text, 1),
        },
    };
    let bytes = digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("`{text}` is not a size (e.g. 4MiB)"))?;
    if !bytes.is_power_of_two() || !(4096..=256 << 20).contains(&bytes) {
        return Err(format!("`{text}`: the kernel wants a power of two from 4KiB to 256MiB"));
    }
    u32::try_from(bytes).map_err(|_| format!("`{text}` is too large"))
}

/// `HOST:PORT`, the host a name or an address.
fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|error| format!("cannot resolve `{text}` (HOST:PORT): {error}"))?
        .next()
        .ok_or_else(|| format!("`{text}` resolves to no address"))
}

fn parse_redirect(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, target) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=HOST:PORT"))?;
    if name.is_empty() {
        return Err(format!("`{text}` has no target name before `=`"));
    }
    let addr = target
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve `{target}`: {error}"))?
        .next()
        .ok_or_else(|| format!("`{target}` resolves to no address"))?;
    Ok((name.to_owned(), addr))
}

/// Where `--events` lines go.
enum Sink {
    None,
    Stdout,
    File(std::fs::File),
    /// The file could not be opened again: lines are counted as dropped.
    Dropped,
}

impl Sink {
    fn open(events: Option<&PathBuf>) -> Result<Sink, Status> {
        match events {
            None => Ok(Sink::None),
            Some(path) if path.as_os_str() == "-" => Ok(Sink::Stdout),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| usage_error(format!("cannot open events file `{}`: {error}", path.display())))?;
                if let Some(what) = pseudo_file_system(&file) {
                    return Err(usage_error(format!(
                        "events file `{}` is on {what}, where lines cannot be appended; give a file on a disk (or `-` for stdout)",
                        path.display()
                    )));
                }
                Ok(Sink::File(file))
            }
        }
    }

    /// Opens `events` again (log rotation: the old file was moved away).
    fn reopen(&mut self, events: Option<&PathBuf>) -> Result<(), Status> {
        if matches!(self, Sink::File(_) | Sink::Dropped) {
            *self = Sink::open(events)?;
        }
        Ok(())
    }

    /// Writes the lines; `false` if they could not be written.
    fn write(&mut self, lines: &[String]) -> bool {
        if lines.is_empty() {
            return true;
        }
        let mut text = lines.join("\n");
        text.push('\n');
        let result = match self {
            Sink::None => return true,
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes()).and_then(|()| out.flush())
            }
            Sink::File(file) => file.write_all(text.as_bytes()),
            Sink::Dropped => return false,
        };
        result.is_ok()
    }

    fn enabled(&self) -> bool {
        !matches!(self, Sink::None)
    }
}

/// The pseudo file system `file` is on, if it is one (procfs, sysfs, ...):
/// writes there fail or mean something else.
fn pseudo_file_system(file: &std::fs::File) -> Option<&'static str> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs on an open fd into a zeroed statfs we own.
    let kind = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(file.as_raw_fd(), &mut buf) != 0 {
            return None;
        }
        buf.f_type as i64
    };
    match kind {
        0x9fa0 => Some("procfs"),
        0x6265_6572 => Some("sysfs"),
        0x6367_7270 | 0x0027_e0eb => Some("a cgroup file system"),
        0xcafe_4a11 => Some("bpffs"),
        0x6462_6720 => Some("debugfs"),
        0x7472_6163 => Some("tracefs"),
        _ => None,
    }
}

/// Modification times and sizes of the files a compilation read.
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths
        .iter()
        .map(|path| {
            let stamp = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (path.clone(), stamp)
        })
        .collect()
}

/// Compiles the files to an object; diagnostics go to stderr. Returns the
/// object and every file the compilation read (to watch).
/// How many diagnostics a failed compilation prints in `l7c run`.
const DIAGNOSTICS_SHOWN: usize = 20;

fn build(files: &[PathBuf]) -> Result<(Compiled, Vec<PathBuf>), Status> {
    let (compilation, checked) = compile_or_report_at_most(files, DIAGNOSTICS_SHOWN)?;
    let compiled = generate_or_report(&checked)?;
    let mut read: Vec<PathBuf> = compilation
        .sources
        .iter()
        .filter_map(|(_, file)| file.path.clone())
        .collect();
    for file in files {
        if !read.contains(file) {
            read.push(file.clone());
        }
    }
    Ok((compiled, read))
}

fn run_error(error: RunError) -> Status {
    match error {
        RunError::Kernel(error) => kernel_failure(error),
        RunError::Abi { .. } => {
            eprint!("{}", report::render(&error));
            Status::Failed
        }
        other => {
            eprint!("{}", report::render(&other));
            Status::Usage
        }
    }
}

pub fn run(args: Args) -> Status {
    if let Err(status) = files_arg(&args.files) {
        return status;
    }
    if let Some(refused) = lacks_node_privileges("`l7c run`") {
        return refused;
    }
    if let Err(error) = check_cgroup(&args.cgroup) {
        eprint!("{}", report::render(&error));
        return Status::Usage;
    }
    let (compiled, mut watched) = match build(&args.files) {
        Ok(built) => built,
        Err(status) => return status,
    };
    if compiled.meta.policies.is_empty() && !args.allow_empty {
        eprintln!(
            "error: {} define(s) no policy: every connection of cgroup `{}` would pass unjudged\n  help: check the file (an empty or half-written file?); pass --allow-empty if that is what you want",
            args.files.iter().map(|f| format!("`{}`", f.display())).collect::<Vec<_>>().join(", "),
            args.cgroup.display()
        );
        return Status::Failed;
    }
    let mut sink = match Sink::open(args.events.as_ref()) {
        Ok(sink) => sink,
        Err(status) => return status,
    };
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => return usage_error(format!("cannot install signal handlers (sigaction): {error}")),
    };
    // The metrics address is taken before anything reaches the kernel: a
    // port in use must not leave a half-started enforcement behind. A
    // second agent on the cgroup is told so first (it would find the port
    // of the first one taken).
    if !args.ephemeral {
        if let Err(error) = Session::check_no_other_agent(&args.cgroup) {
            return run_error(error);
        }
    }
    let shared: metrics::Shared = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = args.metrics {
        match metrics::serve(addr, Arc::clone(&shared)) {
            Ok(bound) => eprintln!("l7c: metrics at http://{bound}/metrics"),
            Err(error) => {
                return usage_error(format!(
                    "cannot serve metrics on {addr}: {error}; choose a free address with `--metrics HOST:PORT`"
                ));
            }
        }
    }
    let config = RunConfig {
        cgroup: args.cgroup.clone(),
        redirects: args.redirects.clone(),
        events_all: args.events_all,
        capacity: args.capacity,
        persist: !args.ephemeral,
        max_generations: args.max_generations,
        events_buffer: args.events_buffer,
        receive_verdict: args.receive_verdict.into(),
    };
    let mut session = match Session::start(&compiled.object, &compiled.meta, config) {
        Ok(session) => session,
        Err(error) => return run_error(error),
    };
    let change = match session.tcp_fastopen_was() {
        Some(was) => format!("net.ipv4.tcp_fastopen {was} -> {}; the last `l7c stop` on the node puts it back", was & !1),
        None => "it was already off".to_owned(),
    };
    eprintln!(
        "l7c: client TCP Fast Open is off in this network namespace while the policy is in force ({change}): a sendto(MSG_FASTOPEN) connect sends bytes the policy never sees"
    );
    report_existing(&mut session, &args);
    publish(&session, &shared);
    match session.started() {
        Started::Fresh => eprintln!(
            "l7c: enforcing {} (build {}) on TCP connections opened in cgroup `{}`; SIGHUP reloads{}",
            describe(&compiled),
            compiled.meta.source_hash,
            args.cgroup.display(),
            if args.watch { ", and so does a changed file once it settles (--watch)" } else { "" }
        ),
        Started::Adopted { since, generations, reloaded } => eprintln!(
            "l7c: adopted the enforcement in force on cgroup `{}` since {since} ({generations} policy generation(s), it never stopped); {}",
            args.cgroup.display(),
            if *reloaded {
                format!("the policy given differs: {} (build {}) is now in force for new connections", describe(&compiled), compiled.meta.source_hash)
            } else {
                format!("the policy given is the one in force: {} (build {}), nothing reloaded", describe(&compiled), compiled.meta.source_hash)
            }
        ),
    }
    match session.place() {
        Some(place) => eprintln!(
            "l7c: pinned under {}: enforcement stays in force if this process exits or dies; `l7c stop --cgroup {}` lifts it",
            place.pins.display(),
            args.cgroup.display()
        ),
        None => eprintln!("l7c: --ephemeral: enforcement ends when this process exits or dies"),
    }
    eprintln!(
        "l7c: receive side: {}",
        match (session.receive_verdict(), args.receive_verdict) {
            (ReceiveVerdict::On, ReceiveVerdictArg::Auto) => "this kernel miscounts ioctl(FIONREAD) for sockets in a socket map, so new connections get a pass-all receive verdict that keeps it true (--receive-verdict off to save its cost)",
            (ReceiveVerdict::On, _) => "new connections get a pass-all receive verdict (--receive-verdict on)",
            (_, ReceiveVerdictArg::Auto) => "this kernel counts ioctl(FIONREAD) right for sockets in a socket map: no receive verdict needed",
            _ => "no receive verdict (--receive-verdict off): on kernels with upstream 929e30f93125 ioctl(FIONREAD) answers 0 on enrolled sockets",
        }
    );
    let ktls = session.ktls();
    let ktls_line = match (ktls.kernel, ktls.enrolled) {
        ("unavailable", _) => format!("kTLS is not available on this kernel ({})", ktls.detail),
        (_, "refused") => format!("this kernel refuses kTLS on enrolled sockets: {}", ktls.detail),
        _ => "this kernel allows kTLS on enrolled sockets".to_owned(),
    };
    eprintln!(
        "l7c: kTLS: {ktls_line}; TCP_ULP is refused in the cgroup while the policy is in force, so TLS libraries stay in user space and the policy's `opaque` setting judges their records (docs/ktls.md)"
    );
    let mut last_stamps = stamps(&watched);
    let mut last_watch = Instant::now();
    // A changed file is applied once it has stayed unchanged for SETTLE:
    // an editor or a `cp` still writing it is not read half-way.
    let mut changed_at: Option<Instant> = None;
    let mut last_publish = Instant::now();
    // A reload compiles and loads in a thread of its own: events, metrics
    // and signals are served meanwhile, and SIGTERM does not wait for it.
    let mut in_flight: Option<InFlight> = None;
    let signal = loop {
        if let Some(signal) = signals.terminated() {
            break signal;
        }
        let hangup = signals.take_hangup();
        if hangup && sink.reopen(args.events.as_ref()).is_err() {
            // SIGHUP also reopens the events file (log rotation, as nginx).
            eprintln!("l7c: the events file could not be opened again; events are counted as dropped until the next SIGHUP");
            sink = Sink::Dropped;
        }
        let mut reload = hangup;
        if args.watch && last_watch.elapsed() >= WATCH_EVERY {
            last_watch = Instant::now();
            let now = stamps(&watched);
            if now != last_stamps {
                last_stamps = now;
                changed_at = Some(Instant::now());
            } else if changed_at.is_some_and(|at| at.elapsed() >= SETTLE) {
                changed_at = None;
                reload = true;
            }
        }
        if reload {
            changed_at = None;
            // The files as this attempt read them: a change the watcher has
            // not seen yet is not applied (or refused) a second time.
            last_stamps = stamps(&watched);
            if let Some(in_flight) = &mut in_flight {
                // One reload at a time; requests meanwhile make one more.
                in_flight.again = true;
            } else {
                in_flight = start_reload(&mut session, &args);
            }
        }
        if let Some(outcome) = in_flight.as_ref().and_then(InFlight::finished) {
            let again = in_flight.take().is_some_and(|done| done.again);
            if let Some(read) = finish_reload(&mut session, &args, outcome) {
                watched = read;
                last_stamps = stamps(&watched);
            }
            if again {
                in_flight = start_reload(&mut session, &args);
            }
        }
        match session.poll() {
            Ok(polled) => {
                for notice in &polled.notices {
                    eprintln!("{notice}");
                }
                if polled.freed > 0 {
                    eprintln!(
                        "l7c: {} older policy generation(s) freed: their last connection closed",
                        polled.freed
                    );
                }
                if sink.enabled() {
                    let count = polled.events.len() as u64;
                    if sink.write(&polled.events) {
                        session.events_written += count;
                    } else {
                        session.events_dropped += count;
                    }
                }
            }
            Err(error) => eprint!("{}", report::render(&error)),
        }
        if reload || last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            publish(&session, &shared);
        }
        std::thread::sleep(TICK);
    };
    let signal = l7c_runtime::signals::name(signal);
    if session.place().is_some() {
        drop(session);
        eprintln!(
            "l7c: agent stopped on {signal}; the policy stays in force (`l7c run` adopts it, `l7c stop --cgroup {}` lifts it)",
            args.cgroup.display()
        );
        return Status::Ok;
    }
    match session.stop() {
        Ok(()) => {
            eprintln!("l7c: stopped on {signal}: programs detached, maps freed");
            Status::Ok
        }
        Err(error) => kernel_failure(error),
    }
}

/// A reload compiling and loading on its own thread.
struct InFlight {
    outcome: std::sync::mpsc::Receiver<Outcome>,
    /// Another reload was asked for meanwhile: it follows this one.
    again: bool,
}

/// How a reload attempt ended on its thread.
enum Outcome {
    DoesNotCompile,
    NoPolicy,
    Loaded { compiled: Box<Compiled>, read: Vec<PathBuf>, loaded: Box<LoadedGeneration> },
    NotLoaded(RunError),
}

impl InFlight {
    fn finished(&self) -> Option<Outcome> {
        match self.outcome.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            // The thread died without a word (a panic): a rejection.
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Outcome::DoesNotCompile),
        }
    }
}

/// Starts a reload: compiles the files and loads the generation on a
/// thread. Refused at once when the generations are at their bound.
fn start_reload(session: &mut Session, args: &Args) -> Option<InFlight> {
    let loader = match session.loader() {
        Ok(loader) => loader,
        Err(error) => {
            session.rejected();
            eprint!("{}", report::render(&error));
            eprintln!("l7c: reload rejected: too many policy generations are in force; the running one stays");
            return None;
        }
    };
    let (files, allow_empty) = (args.files.clone(), args.allow_empty);
    let (send, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = match build(&files) {
            Err(_) => Outcome::DoesNotCompile,
            Ok((compiled, _)) if compiled.meta.policies.is_empty() && !allow_empty => Outcome::NoPolicy,
            Ok((compiled, read)) => match loader.load(&compiled.object, &compiled.meta) {
                Ok(loaded) => Outcome::Loaded { compiled: Box::new(compiled), read, loaded: Box::new(loaded) },
                Err(error) => Outcome::NotLoaded(error),
            },
        };
        // The agent may have stopped meanwhile: nobody to tell.
        let _ = send.send(result);
    });
    Some(InFlight { outcome, again: false })
}

/// Puts a finished reload in force, or says why not; the files it read
/// when it was applied.
fn finish_reload(session: &mut Session, args: &Args, outcome: Outcome) -> Option<Vec<PathBuf>> {
    let why = match outcome {
        Outcome::DoesNotCompile => "the policy does not compile",
        Outcome::NoPolicy => "the files define no policy, so every connection would pass (start with --allow-empty if that is what you want)",
        Outcome::NotLoaded(error) => {
            eprint!("{}", report::render(&error));
            rejection(&error)
        }
        Outcome::Loaded { compiled, read, loaded } => match session.install(*loaded) {
            Ok(()) => {
                eprintln!(
                    "l7c: reloaded: {} (build {}) for new connections; established ones keep their policy{}",
                    describe(&compiled),
                    compiled.meta.source_hash,
                    if session.cgroup_present() {
                        String::new()
                    } else {
                        format!(" (cgroup `{}` does not exist now: nothing is enforced until it is created again)", args.cgroup.display())
                    }
                );
                return Some(read);
            }
            Err(error) => {
                eprint!("{}", report::render(&error));
                eprintln!("l7c: reload rejected: {}; the running one stays", rejection(&error));
                return None;
            }
        },
    };
    // `install` counts its own refusals; these never reached the session.
    session.rejected();
    eprintln!("l7c: reload rejected: {why}; the running one stays");
    None
}

/// Why the kernel side refused a reload, in words.
fn rejection(error: &RunError) -> &'static str {
    match error {
        RunError::Kernel(_) => "the kernel refused the new policy",
        RunError::TooManyGenerations { .. } => "too many policy generations are in force",
        _ => "the new policy cannot be loaded as given",
    }
}

/// Says which governed connections of the cgroup were established before
/// the policy (not policed), and ends them with `--existing reset`.
fn report_existing(session: &mut Session, args: &Args) {
    const SHOWN: usize = 10;
    let found = match session.unpoliced() {
        Ok(found) => found,
        Err(error) => {
            eprint!("{}", report::render(&error));
            return;
        }
    };
    if found.is_empty() {
        return;
    }
    let list = |items: &[l7c_runtime::existing::Existing]| {
        let mut text = items
            .iter()
            .take(SHOWN)
            .map(|c| format!("pid {} {} -> {}", c.pid, c.local, c.remote))
            .collect::<Vec<_>>()
            .join(", ");
        if items.len() > SHOWN {
            text.push_str(&format!(", and {} more", items.len() - SHOWN));
        }
        text
    };
    if args.existing == Existing::Keep {
        eprintln!(
            "l7c: WARNING: {} governed connection(s) of cgroup `{}` were established before the policy and are NOT policed until they close ({}); `--existing reset` ends them so their clients reconnect under the policy",
            found.len(),
            args.cgroup.display(),
            list(&found)
        );
        return;
    }
    let mut failed = Vec::new();
    for connection in &found {
        if let Err(errno) = l7c_runtime::existing::reset(connection) {
            failed.push(format!("{} -> {}: SOCK_DESTROY failed with {errno}", connection.local, connection.remote));
        }
    }
    eprintln!(
        "l7c: ended {} of {} connection(s) established before the policy (SOCK_DESTROY; their clients see ECONNABORTED and reconnect under the policy): {}",
        found.len() - failed.len(),
        found.len(),
        list(&found)
    );
    if !failed.is_empty() {
        eprintln!(
            "l7c: WARNING: {} could not be ended and are NOT policed: {} (the kernel needs CONFIG_INET_DIAG_DESTROY)",
            failed.len(),
            failed.join("; ")
        );
    }
    let _ = session.unpoliced();
}

fn describe(compiled: &Compiled) -> String {
    if compiled.meta.policies.is_empty() {
        return "no policy (every connection passes)".to_owned();
    }
    compiled
        .meta
        .policies
        .iter()
        .map(|p| format!("policy `{}`{}", p.name, if p.audit { " (audit)" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn publish(session: &Session, shared: &metrics::Shared) {
    match session.snapshot() {
        Ok(snapshot) => {
            if let Ok(mut text) = shared.lock() {
                *text = metrics::render(&snapshot);
            }
        }
        Err(error) => eprint!("{}", report::render(&error)),
    }
}
