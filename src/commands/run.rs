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
//! This command parses, checks what an operator can get wrong before the
//! kernel is touched, starts the session, prints; the loop itself is
//! `l7c_runtime::supervise`, tested as a library.
//!
//! Exit codes: 0 after a clean stop; 1 the policy does not compile, is
//! empty, or the kernel refused the compiled program; 2 usage,
//! privileges, cgroup, another agent on the cgroup, I/O.

use super::{compile_or_report_at_most, generate_or_report, kernel_failure, lacks_node_privileges};
use crate::{files_arg, usage_error, Status};
use l7c_compiler::abi::Meta;
use l7c_compiler::codegen::Compiled;
use l7c_compiler::report;
use l7c_runtime::cgroup::check_cgroup;
use l7c_runtime::metrics;
use l7c_runtime::run::{ReceiveVerdict, RunConfig, RunError, Session, Started};
use l7c_runtime::signals::Signals;
use l7c_runtime::supervise::{self, Report, Sink};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// The receive side: frames the server's responses, so denies are answered with
    /// an HTTP status and a switch opens only with the server's consent; it also keeps
    /// ioctl(FIONREAD) true. auto = on. off saves its cost (docs/BENCHMARKS.md) and
    /// fails closed: denies after a connection's first request get a reset, and no
    /// Upgrade or CONNECT tunnel ever opens
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
    let (compiled, watched) = match build(&args.files) {
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
    let mut sink = match Sink::open(args.events.as_deref()) {
        Ok(sink) => sink,
        Err(error) => return usage_error(error.to_string()),
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
        // The pins that keep enforcement past this process live on bpffs.
        match l7c_runtime::pins::ensure_bpffs(Path::new(l7c_runtime::pins::BPFFS)) {
            Ok(true) => eprintln!("l7c: bpffs was not mounted at {0}; mounted it there (mode 0700) for the pins", l7c_runtime::pins::BPFFS),
            Ok(false) => {}
            Err(error) => return kernel_failure(error),
        }
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
    if let Err(error) = supervise::publish(&session, &shared) {
        eprint!("{}", report::render(&error));
    }
    match session.started() {
        Started::Fresh => eprintln!(
            "l7c: enforcing {} (build {}) on TCP connections opened in cgroup `{}`; SIGHUP reloads{}",
            describe(&compiled.meta),
            compiled.meta.source_hash,
            args.cgroup.display(),
            if args.watch { ", and so does a changed file once it settles (--watch)" } else { "" }
        ),
        Started::Adopted { since, generations, reloaded } => eprintln!(
            "l7c: adopted the enforcement in force on cgroup `{}` since {since} ({generations} policy generation(s), it never stopped); {}",
            args.cgroup.display(),
            if *reloaded {
                format!("the policy given differs: {} (build {}) is now in force for new connections", describe(&compiled.meta), compiled.meta.source_hash)
            } else {
                format!("the policy given is the one in force: {} (build {}), nothing reloaded", describe(&compiled.meta), compiled.meta.source_hash)
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
            (ReceiveVerdict::On, _) => "the server's responses are framed on every enrolled connection: denies are answered over HTTP and a switch opens only with the server's consent",
            _ => "off (--receive-verdict off): denies after a connection's first request get a reset, no Upgrade or CONNECT tunnel opens, and on kernels with upstream 929e30f93125 ioctl(FIONREAD) answers 0 on enrolled sockets",
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
    let options = supervise::Options {
        files: args.files.clone(),
        watch: args.watch,
        allow_empty: args.allow_empty,
        events: args.events.clone(),
        compile: Arc::new(|files: &[PathBuf]| {
            build(files).ok().map(|(compiled, read)| supervise::Build { object: compiled.object, meta: compiled.meta, read })
        }),
        watched,
    };
    let cgroup = args.cgroup.display().to_string();
    let signal = supervise::supervise(&mut session, &signals, &mut sink, &shared, &options, |event| say(event, &cgroup));
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

/// Says what the agent's loop reported.
fn say(event: Report, cgroup: &str) {
    match event {
        Report::Notice(line) => eprintln!("{line}"),
        Report::Reloaded { meta, cgroup_present } => eprintln!(
            "l7c: reloaded: {} (build {}) for new connections; established ones keep their policy{}",
            describe(&meta),
            meta.source_hash,
            if cgroup_present {
                String::new()
            } else {
                format!(" (cgroup `{cgroup}` does not exist now: nothing is enforced until it is created again)")
            }
        ),
        Report::Rejected { why, error } => {
            if let Some(error) = error {
                eprint!("{}", report::render(&error));
            }
            eprintln!("l7c: reload rejected: {why}; the running one stays");
        }
        Report::EventsNotReopened(error) => {
            eprintln!("l7c: {error}; events are counted as dropped until the next SIGHUP");
        }
        Report::Failed(error) => eprint!("{}", report::render(&error)),
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

fn describe(meta: &Meta) -> String {
    if meta.policies.is_empty() {
        return "no policy (every connection passes)".to_owned();
    }
    meta
        .policies
        .iter()
        .map(|p| format!("policy `{}`{}", p.name, if p.audit { " (audit)" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ")
}
