//! What is in force on this node, and lifting it: `l7c status` and
//! `l7c stop`. Both read what persistent sessions pinned (`pins.rs`), so
//! they work whether or not an agent runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use l7c_abi as abi;

use crate::error::KernelError;
use crate::loader::KernelProgram;
use crate::pins::{self, Place};
use crate::run::RunError;

/// One cgroup's enforcement as `l7c status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupStatus {
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// Enforcement began (RFC 3339).
    pub since: String,
    /// The agent running it, if one does (it holds the lock).
    pub agent_pid: Option<u32>,
    pub capacity: u32,
    /// Oldest first; the last is current.
    pub generations: Vec<GenerationStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerationStatus {
    pub number: u64,
    pub loaded: String,
    pub source_hash: String,
    pub policies: Vec<String>,
    /// Connections in its socket map now.
    pub enrolled: usize,
    /// Capacity units its gate holds now.
    pub used: u64,
}

/// The status of every cgroup with pinned enforcement on this node.
pub fn status_all() -> Result<Vec<CgroupStatus>, KernelError> {
    let mut all = Vec::new();
    for place in Place::all() {
        if let Some(status) = status_of_place(&place)? {
            all.push(status);
        }
    }
    Ok(all)
}

/// The status of `cgroup`'s enforcement, if any.
pub fn status_of(cgroup: &Path) -> Result<Option<CgroupStatus>, KernelError> {
    status_of_place(&Place::of(cgroup)?)
}

fn status_of_place(place: &Place) -> Result<Option<CgroupStatus>, KernelError> {
    let Some(state) = place.read_state()? else { return Ok(None) };
    // An agent runs it exactly when the lock is held.
    let agent_pid = match place.try_lock()? {
        Some(_lock) => None,
        None => state.agent_pid,
    };
    let mut generations = Vec::new();
    for saved in &state.generations {
        let program = KernelProgram::adopt(&place.generation_maps(saved.number), abi::maps::SOCKETS)?;
        let enrolled = program.keys(abi::maps::SOCKETS)?.len();
        let used = program
            .lookup(abi::maps::GATE, &0u32.to_ne_bytes())?
            .and_then(|bytes| abi::gate::Gate::from_bytes(&bytes))
            .map_or(0, |gate| gate.used);
        generations.push(GenerationStatus {
            number: saved.number,
            loaded: saved.loaded.clone(),
            source_hash: saved.meta.source_hash.clone(),
            policies: saved.meta.policies.iter().map(|p| p.name.clone()).collect(),
            enrolled,
            used,
        });
    }
    Ok(Some(CgroupStatus {
        cgroup: state.cgroup,
        cgroup_id: state.cgroup_id,
        since: state.since,
        agent_pid,
        capacity: state.capacity,
        generations,
    }))
}

/// What `l7c stop` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Generations whose pins were removed (0: nothing was in force).
    pub generations: usize,
    /// The agent that was asked to exit first (SIGTERM), if one ran.
    pub agent_pid: Option<u32>,
}

/// Lifts enforcement on `cgroup`: asks a running agent to exit (SIGTERM,
/// waiting up to `wait` for it to release the lock), then removes every
/// pin and the state: the links go first, so no connection is enrolled or
/// gated any more, then the maps, which the kernel frees with their
/// programs. Connections enrolled until then carry on unpoliced.
pub fn stop(cgroup: &Path, wait: Duration) -> Result<Stopped, RunError> {
    let place = Place::of(cgroup)?;
    let state = place.read_state()?;
    let mut asked = None;
    let lock = match place.try_lock()? {
        Some(lock) => lock,
        None => {
            let pid = state.as_ref().and_then(|state| state.agent_pid);
            if let Some(pid) = pid {
                // SAFETY: kill(2) with a pid from our own state file and a
                // plain signal number; no memory involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                asked = Some(pid);
            }
            let deadline = Instant::now() + wait;
            loop {
                if let Some(lock) = place.try_lock()? {
                    break lock;
                }
                if Instant::now() >= deadline {
                    return Err(RunError::AlreadyRunning { cgroup: cgroup.to_owned(), pid });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let generations = state.as_ref().map_or(0, |state| state.generations.len());
    place.remove_all()?;
    crate::tfo::restore_if_last(Place::all().iter().filter(|other| other.cgroup_id != place.cgroup_id).count())?;
    drop(lock);
    // The lock file goes last: nothing of this cgroup remains in /run.
    let _ = std::fs::remove_dir_all(&place.state_dir);
    Ok(Stopped { generations, agent_pid: asked })
}

/// `pins::alive`, re-exported for the CLI's messages.
pub fn agent_alive(pid: u32) -> bool {
    pins::alive(pid)
}
