//! The agent's loop: what `l7c run` does between starting a [`Session`]
//! and a SIGTERM. Signals, the file watcher, reloads (compiled and loaded
//! on a thread of their own), events drained to a [`Sink`], metrics
//! published. The caller hands in how to compile the files
//! ([`Compile`]) and gets back typed [`Report`]s to print; the command
//! line parses, calls, prints and maps exit codes.
//!
//! Invariants: a reload never stops the draining of events, the metrics
//! or the answer to a signal; only one reload runs at a time, and
//! requests meanwhile make one more; a reload is put in force on the
//! loop's thread (pins, link updates), so the session is never touched
//! from two threads.

use crate::metrics::{self, Shared};
use crate::run::{LoadedGeneration, RunError, Session};
use l7c_abi::Meta;
use crate::signals::Signals;
use crate::KernelError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the loop drains events, refreshes metrics and looks at
/// signals; file changes are looked at every [`WATCH_EVERY`].
pub const TICK: Duration = Duration::from_millis(50);
/// How often the metrics text is rebuilt: reading the counters costs one
/// lookup per counter (a 10,000-rule policy has over 10,000), too much for
/// every tick; Prometheus scrapes every few seconds.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a changed file must stay unchanged before `--watch` applies it.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A compiled policy: the object, its `.l7.meta`, and every file the
/// compilation read (to watch).
pub struct Build {
    pub object: Vec<u8>,
    pub meta: Meta,
    pub read: Vec<PathBuf>,
}

/// Compiles the policy files; `None` when they do not compile (the
/// closure has said why, e.g. printed the diagnostics).
pub type Compile = Arc<dyn Fn(&[PathBuf]) -> Option<Build> + Send + Sync>;

/// What the loop was asked to do besides enforcing.
pub struct Options {
    pub files: Vec<PathBuf>,
    /// Reload when a file the compilation read changed and settled.
    pub watch: bool,
    /// Accept files that define no policy.
    pub allow_empty: bool,
    /// `--events PATH` (reopened on SIGHUP), or `-`, or none.
    pub events: Option<PathBuf>,
    /// How a reload compiles the files.
    pub compile: Compile,
    /// The files the first compilation read (watched with `watch`).
    pub watched: Vec<PathBuf>,
}

/// What happened, for the caller to say.
#[derive(Debug)]
pub enum Report {
    /// A line of the session's (a freed generation, a lost event, a
    /// redirect target, the cgroup): print as is.
    Notice(String),
    /// A reload is in force for new connections.
    Reloaded { meta: Meta, cgroup_present: bool },
    /// A reload was rejected and the running policy stays: why, and the
    /// error where there is one.
    Rejected { why: &'static str, error: Option<RunError> },
    /// SIGHUP could not reopen the events file: lines are counted as
    /// dropped until a later SIGHUP succeeds.
    EventsNotReopened(SinkError),
    /// Reading the kernel failed this tick (the loop goes on).
    Failed(KernelError),
}

/// Runs the loop until SIGINT or SIGTERM; returns the signal.
pub fn supervise(
    session: &mut Session,
    signals: &Signals,
    sink: &mut Sink,
    shared: &Shared,
    options: &Options,
    mut report: impl FnMut(Report),
) -> i32 {
    let compile = &options.compile;
    let mut watched = options.watched.clone();
    let mut last_stamps = stamps(&watched);
    let mut last_watch = Instant::now();
    // A changed file is applied once it has stayed unchanged for SETTLE:
    // an editor or a `cp` still writing it is not read half-way.
    let mut changed_at: Option<Instant> = None;
    let mut last_publish = Instant::now();
    let mut in_flight: Option<InFlight> = None;
    loop {
        if let Some(signal) = signals.terminated() {
            // A reload under way is abandoned: its generation is neither
            // pinned nor attached, and goes with its thread.
            return signal;
        }
        let hangup = signals.take_hangup();
        if hangup {
            // SIGHUP also reopens the events file (log rotation, as nginx).
            if let Err(error) = sink.reopen(options.events.as_deref()) {
                *sink = Sink::Dropped;
                report(Report::EventsNotReopened(error));
            }
        }
        let mut reload = hangup;
        if options.watch && last_watch.elapsed() >= WATCH_EVERY {
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
            // The files as this attempt reads them: a change the watcher has
            // not seen yet is not applied (or refused) a second time.
            last_stamps = stamps(&watched);
            match &mut in_flight {
                Some(in_flight) => {
                    if !in_flight.again {
                        report(Report::Notice(format!(
                            "l7c: a reload is under way (for {:.1} s); this request follows it (to drop it instead, restart the agent: the policy in force stays)",
                            in_flight.started.elapsed().as_secs_f64()
                        )));
                    }
                    in_flight.again = true;
                }
                None => in_flight = start_reload(session, compile, options, &mut report),
            }
        }
        if let Some(outcome) = in_flight.as_ref().and_then(InFlight::finished) {
            let again = in_flight.take().is_some_and(|done| done.again);
            if let Some(read) = finish_reload(session, outcome, &mut report) {
                watched = read;
                last_stamps = stamps(&watched);
            }
            if again {
                in_flight = start_reload(session, compile, options, &mut report);
            }
        }
        match session.poll() {
            Ok(polled) => {
                for notice in polled.notices {
                    report(Report::Notice(notice));
                }
                if polled.freed > 0 {
                    report(Report::Notice(format!(
                        "l7c: {} older policy generation(s) freed: their last connection closed",
                        polled.freed
                    )));
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
            Err(error) => report(Report::Failed(error)),
        }
        if reload || last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            if let Err(error) = publish(session, shared) {
                report(Report::Failed(error));
            }
        }
        std::thread::sleep(TICK);
    }
}

/// Renders the session's metrics into `shared` (what `/metrics` serves).
pub fn publish(session: &Session, shared: &Shared) -> Result<(), KernelError> {
    let snapshot = session.snapshot()?;
    if let Ok(mut text) = shared.lock() {
        *text = metrics::render(&snapshot);
    }
    Ok(())
}

/// A reload compiling and loading on its own thread.
struct InFlight {
    outcome: mpsc::Receiver<Outcome>,
    /// Another reload was asked for meanwhile: it follows this one.
    again: bool,
    started: Instant,
}

/// How a reload attempt ended on its thread.
enum Outcome {
    DoesNotCompile,
    NoPolicy,
    Loaded { meta: Meta, read: Vec<PathBuf>, loaded: Box<LoadedGeneration> },
    NotLoaded(RunError),
}

impl InFlight {
    fn finished(&self) -> Option<Outcome> {
        match self.outcome.try_recv() {
            Ok(outcome) => Some(outcome),
            Err(mpsc::TryRecvError::Empty) => None,
            // The thread died without a word (a panic): a rejection.
            Err(mpsc::TryRecvError::Disconnected) => Some(Outcome::DoesNotCompile),
        }
    }
}

/// Starts a reload: compiles the files and loads the generation on a
/// thread. Refused at once when the generations are at their bound.
fn start_reload(session: &mut Session, compile: &Compile, options: &Options, report: &mut impl FnMut(Report)) -> Option<InFlight> {
    let loader = match session.loader() {
        Ok(loader) => loader,
        Err(error) => {
            session.rejected();
            report(Report::Rejected { why: rejection(&error), error: Some(error) });
            return None;
        }
    };
    let (files, allow_empty, compile) = (options.files.clone(), options.allow_empty, Arc::clone(compile));
    let (send, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let result = match compile(&files) {
            None => Outcome::DoesNotCompile,
            Some(build) if build.meta.policies.is_empty() && !allow_empty => Outcome::NoPolicy,
            Some(build) => match loader.load(&build.object, &build.meta) {
                Ok(loaded) => Outcome::Loaded { meta: build.meta, read: build.read, loaded: Box::new(loaded) },
                Err(error) => Outcome::NotLoaded(error),
            },
        };
        // The agent may have stopped meanwhile: nobody to tell.
        let _ = send.send(result);
    });
    Some(InFlight { outcome, again: false, started: Instant::now() })
}

/// Puts a finished reload in force, or reports why not; the files it read
/// when it was applied.
fn finish_reload(session: &mut Session, outcome: Outcome, report: &mut impl FnMut(Report)) -> Option<Vec<PathBuf>> {
    let (why, error) = match outcome {
        Outcome::DoesNotCompile => ("the policy does not compile", None),
        Outcome::NoPolicy => (
            "the files define no policy, so every connection would pass (start with --allow-empty if that is what you want)",
            None,
        ),
        Outcome::NotLoaded(error) => (rejection(&error), Some(error)),
        Outcome::Loaded { meta, read, loaded } => {
            return match session.install(*loaded) {
                Ok(()) => {
                    report(Report::Reloaded { meta, cgroup_present: session.cgroup_present() });
                    Some(read)
                }
                Err(error) => {
                    // `install` counts its own refusals.
                    report(Report::Rejected { why: rejection(&error), error: Some(error) });
                    None
                }
            };
        }
    };
    session.rejected();
    report(Report::Rejected { why, error });
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

/// Modification times and sizes of the files a compilation read.
type Stamps = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamps(paths: &[PathBuf]) -> Stamps {
    paths
        .iter()
        .map(|path| {
            let stamp = std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            (path.clone(), stamp)
        })
        .collect()
}

/// Where `--events` lines go.
#[derive(Debug)]
pub enum Sink {
    None,
    Stdout,
    File(std::fs::File),
    /// The file could not be opened again: lines are counted as dropped.
    Dropped,
}

/// Why the events file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open events file `{path}`: {error}")]
    Open { path: PathBuf, error: std::io::Error },
    #[error("events file `{path}` is on {what}, where lines cannot be appended; give a file on a disk (or `-` for stdout)")]
    PseudoFileSystem { path: PathBuf, what: &'static str },
}

impl Sink {
    /// `events`: a path (appended), `-` (stdout), or none.
    pub fn open(events: Option<&Path>) -> Result<Sink, SinkError> {
        match events {
            None => Ok(Sink::None),
            Some(path) if path.as_os_str() == "-" => Ok(Sink::Stdout),
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| SinkError::Open { path: path.to_owned(), error })?;
                if let Some(what) = pseudo_file_system(&file) {
                    return Err(SinkError::PseudoFileSystem { path: path.to_owned(), what });
                }
                Ok(Sink::File(file))
            }
        }
    }

    /// Opens `events` again (log rotation: the old file was moved away).
    pub fn reopen(&mut self, events: Option<&Path>) -> Result<(), SinkError> {
        if matches!(self, Sink::File(_) | Sink::Dropped) {
            *self = Sink::open(events)?;
        }
        Ok(())
    }

    /// Writes the lines; `false` if they could not be written.
    pub fn write(&mut self, lines: &[String]) -> bool {
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

    pub fn enabled(&self) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_file_on_procfs_is_refused_and_a_disk_file_is_appended() {
        let error = Sink::open(Some(Path::new("/proc/version"))).unwrap_err();
        assert!(matches!(error, SinkError::PseudoFileSystem { what: "procfs", .. } | SinkError::Open { .. }), "{error}");
        let path = std::env::temp_dir().join(format!("l7c-sink-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut sink = Sink::open(Some(&path)).unwrap();
        assert!(sink.write(&["a".to_owned(), "b".to_owned()]));
        // Log rotation: moved away, reopened, the next line goes to a new file.
        let moved = path.with_extension("1");
        std::fs::rename(&path, &moved).unwrap();
        sink.reopen(Some(&path)).unwrap();
        assert!(sink.write(&["c".to_owned()]));
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&moved);
    }
}
