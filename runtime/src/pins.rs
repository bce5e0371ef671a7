//! Where a running policy lives outside the `l7c run` process, so that no
//! crash of the agent switches enforcement off (docs/runtime.md, "Crash
//! safety"):
//!
//! ```text
//! /sys/fs/bpf/l7c/cg-<id>/links/<name>            the cgroup links (enroll, gate4, gate6, gate_sock, ulp_guard)
//! /sys/fs/bpf/l7c/cg-<id>/gen-<n>/maps/<map>      every map of policy generation n
//! /sys/fs/bpf/l7c/cg-<id>/gen-<n>/progs/<name>    its cgroup programs (to point the links back at them)
//! /run/l7c/cg-<id>/state.json                     which generations exist, their `.l7.meta`, since when
//! /run/l7c/cg-<id>/lock                           held (flock) by the one agent of this cgroup
//! ```
//!
//! `<id>` is the cgroup's id (its directory's inode, what
//! `bpf_get_current_cgroup_id` returns). A pinned link keeps its program
//! attached to the cgroup, a pinned map keeps its sockets, its `sk_msg`
//! program and its counters, whatever happens to the process that made
//! them; only removing the pins ([`Place::remove_all`], `l7c stop`) lifts
//! enforcement. bpffs and `/run` are both emptied by a reboot, together.
//!
//! Invariants: the state file is written (atomically: a temporary file
//! renamed) after the pins it names exist and before pins it no longer
//! names are removed, so a crash between two steps leaves at worst pins
//! the state does not name ([`Place::remove_all`] removes the whole
//! directory) — never a state that names missing pins as current.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use l7c_abi::Meta;
use serde::{Deserialize, Serialize};

use crate::errno::Errno;
use crate::error::KernelError;
use crate::sys;

/// Where bpffs is mounted: the parent of [`PIN_ROOT`].
pub const BPFFS: &str = "/sys/fs/bpf";
/// The bpffs directory under which every cgroup's pins live.
pub const PIN_ROOT: &str = "/sys/fs/bpf/l7c";
/// `BPF_FS_MAGIC` (`statfs.f_type` of a bpffs mount, `linux/magic.h`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The directory under which every cgroup's state file and lock live.
pub const STATE_ROOT: &str = "/run/l7c";

/// The links a session pins, by file name.
pub mod link {
    pub const ENROLL: &str = "enroll";
    pub const GATE4: &str = "gate4";
    pub const GATE6: &str = "gate6";
    pub const GATE_SOCKET: &str = "gate_sock";
    pub const ULP_GUARD: &str = "ulp_guard";
    /// Every link, in the order `l7c stop` removes them: the enrollment
    /// first (no new connection is enrolled into maps about to go).
    pub const ALL: [&str; 5] = [ENROLL, GATE4, GATE6, GATE_SOCKET, ULP_GUARD];
}

/// What `state.json` says about one cgroup's enforcement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The `--cgroup` path it was started with.
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// When enforcement began (RFC 3339, UTC).
    pub since: String,
    pub capacity: u32,
    pub events_all: bool,
    /// The agent running it now (`None`: no agent; enforcement goes on).
    pub agent_pid: Option<u32>,
    /// Oldest first; the last is current (new connections get it).
    pub generations: Vec<GenerationState>,
}

/// One pinned policy generation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerationState {
    pub number: u64,
    /// When it was loaded (RFC 3339, UTC).
    pub loaded: String,
    pub meta: Meta,
}

impl State {
    pub fn current(&self) -> Option<&GenerationState> {
        self.generations.last()
    }
}

/// One cgroup's places (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub cgroup_id: u64,
    pub pins: PathBuf,
    pub state_dir: PathBuf,
}

/// Makes sure a bpffs is mounted at `dir` (for `l7c run`: [`BPFFS`]),
/// mounting one (`mode=0700`, as systemd does) when it is not; returns
/// whether this call mounted it, for the caller to say so. Pins made on a
/// directory that is not a bpffs fail (`mkdir` ENOENT on sysfs), so a
/// node without one could not keep enforcement past the agent; Cilium's
/// agent mounts it the same way.
pub fn ensure_bpffs(dir: &Path) -> Result<bool, KernelError> {
    if crate::cgroup::statfs_type(dir) == Some(BPF_FS_MAGIC) {
        return Ok(false);
    }
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| KernelError::syscall(format!("mount bpffs at {}", dir.display()), Errno(libc::EINVAL), "the path has a NUL byte"))?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let ret = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
    if ret != 0 {
        return Err(KernelError::syscall(
            format!("mount -t bpf bpf {} (bpffs is not mounted there)", dir.display()),
            Errno::last(),
            "l7c pins its programs and maps on bpffs; mount it (`mount -t bpf bpf /sys/fs/bpf`) or run l7c where it may (CAP_SYS_ADMIN in the host's mount namespace)",
        ));
    }
    Ok(true)
}

fn io_error(step: String, error: &std::io::Error, help: &str) -> KernelError {
    KernelError::syscall(step, Errno::from_io(error), help)
}

impl Place {
    /// The places of the cgroup v2 directory `cgroup`.
    pub fn of(cgroup: &Path) -> Result<Place, KernelError> {
        let metadata = std::fs::metadata(cgroup)
            .map_err(|error| io_error(format!("stat {}", cgroup.display()), &error, "the cgroup directory must exist"))?;
        Ok(Place::with_id(metadata.ino()))
    }

    pub fn with_id(cgroup_id: u64) -> Place {
        Place {
            cgroup_id,
            pins: Path::new(PIN_ROOT).join(format!("cg-{cgroup_id}")),
            state_dir: Path::new(STATE_ROOT).join(format!("cg-{cgroup_id}")),
        }
    }

    /// Every cgroup with a state file (enforcement in force), by id.
    pub fn all() -> Vec<Place> {
        let mut places: Vec<Place> = std::fs::read_dir(STATE_ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_prefix("cg-")?.parse().ok().map(Place::with_id)
            })
            .filter(|place| place.state_file().exists())
            .collect();
        places.sort_by_key(|place| place.cgroup_id);
        places
    }

    pub fn generation_maps(&self, number: u64) -> PathBuf {
        self.pins.join(format!("gen-{number}")).join("maps")
    }

    pub fn generation_progs(&self, number: u64) -> PathBuf {
        self.pins.join(format!("gen-{number}")).join("progs")
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.pins.join("links").join(name)
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// Whether anything is pinned for this cgroup.
    pub fn is_pinned(&self) -> bool {
        self.pins.exists()
    }

    /// The state file, if there is one.
    pub fn read_state(&self) -> Result<Option<State>, KernelError> {
        match std::fs::read_to_string(self.state_file()) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|error| KernelError::BadObject {
                reason: format!("{} is not l7c state: {error}", self.state_file().display()),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error(format!("reading {}", self.state_file().display()), &error, "")),
        }
    }

    /// Writes the state file atomically (module invariants).
    pub fn write_state(&self, state: &State) -> Result<(), KernelError> {
        let create = |error: std::io::Error| {
            io_error(format!("writing {}", self.state_file().display()), &error, "l7c keeps its state under /run/l7c (root)")
        };
        std::fs::create_dir_all(&self.state_dir).map_err(create)?;
        let temporary = self.state_dir.join("state.json.new");
        let text = serde_json::to_string_pretty(state).map_err(|error| KernelError::BadObject { reason: error.to_string() })?;
        std::fs::write(&temporary, text).map_err(create)?;
        std::fs::rename(&temporary, self.state_file()).map_err(create)
    }

    /// Takes the agent lock of this cgroup without waiting: `Ok(None)`
    /// when another process holds it (another `l7c run` on this cgroup).
    /// The lock is released when the returned file is closed — also when
    /// the process dies.
    pub fn try_lock(&self) -> Result<Option<File>, KernelError> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|error| io_error(format!("mkdir {}", self.state_dir.display()), &error, "l7c keeps its state under /run/l7c (root)"))?;
        let path = self.state_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| io_error(format!("open {}", path.display()), &error, ""))?;
        // SAFETY: flock on an fd this function owns; no memory involved.
        let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if ret == 0 {
            Ok(Some(file))
        } else {
            let errno = Errno::last();
            if errno == Errno(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(KernelError::syscall(format!("flock {}", path.display()), errno, ""))
            }
        }
    }

    /// Pins `fd` (a map, program or link) at `path`, creating its
    /// directory.
    pub fn pin(fd: BorrowedFd<'_>, path: &Path, what: &str) -> Result<(), KernelError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| {
                io_error(format!("mkdir {}", dir.display()), &error, "bpffs must be mounted at /sys/fs/bpf: `mount -t bpf bpf /sys/fs/bpf`")
            })?;
        }
        sys::obj_pin(fd, path).map_err(|errno| {
            KernelError::syscall(format!("BPF_OBJ_PIN of {what} at {}", path.display()), errno, "bpffs must be mounted at /sys/fs/bpf and the path free")
        })
    }

    /// A new fd for what is pinned at `path`.
    pub fn open(path: &Path) -> Result<OwnedFd, KernelError> {
        sys::obj_get(path).map_err(|errno| KernelError::syscall(format!("BPF_OBJ_GET of {}", path.display()), errno, ""))
    }

    /// Removes generation `number`'s pins: once nothing else holds its
    /// maps they are freed and its connections leave them.
    pub fn remove_generation(&self, number: u64) -> Result<(), KernelError> {
        let dir = self.pins.join(format!("gen-{number}"));
        remove_tree(&dir)
    }

    /// Removes every pin and the state of this cgroup: the links first
    /// (nothing new is enrolled or gated), then the generations. What is
    /// left in the kernel afterwards is only what open fds still hold.
    pub fn remove_all(&self) -> Result<(), KernelError> {
        for name in link::ALL {
            let path = self.link(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(format!("unlink {}", path.display()), &error, "")),
            }
        }
        remove_tree(&self.pins)?;
        match std::fs::remove_file(self.state_file()) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(format!("unlink {}", self.state_file().display()), &error, "")),
        }
    }
}

fn remove_tree(dir: &Path) -> Result<(), KernelError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io_error(format!("removing {}", dir.display()), &error, "")),
    }
}

/// Whether process `pid` is alive.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a directory of its own (not the node's /sys/fs/bpf, which other
    /// tests use): a missing bpffs is mounted, a present one is kept.
    #[test]
    fn a_missing_bpffs_is_mounted_and_a_present_one_kept() {
        if !crate::is_root() {
            eprintln!("SKIPPED a_missing_bpffs_is_mounted_and_a_present_one_kept: mount(2) needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("l7c-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_ne!(crate::cgroup::statfs_type(&dir), Some(BPF_FS_MAGIC));
        let mounted = ensure_bpffs(&dir);
        let is_bpffs = crate::cgroup::statfs_type(&dir) == Some(BPF_FS_MAGIC);
        let again = ensure_bpffs(&dir);
        let pinnable = std::fs::create_dir(dir.join("l7c")).is_ok();
        // SAFETY: umount2 of the directory this test mounted on.
        let c_dir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&dir);
        assert!(mounted.unwrap(), "the first call mounts");
        assert!(is_bpffs, "and what is there is a bpffs");
        assert!(!again.unwrap(), "the second call finds it and mounts nothing");
        assert!(pinnable, "directories for pins can be made in it");
    }

    #[test]
    fn places_are_named_by_the_cgroup_id() {
        let place = Place::with_id(4242);
        assert_eq!(place.pins, Path::new("/sys/fs/bpf/l7c/cg-4242"));
        assert_eq!(place.generation_maps(3), Path::new("/sys/fs/bpf/l7c/cg-4242/gen-3/maps"));
        assert_eq!(place.link(link::ENROLL), Path::new("/sys/fs/bpf/l7c/cg-4242/links/enroll"));
        assert_eq!(place.state_dir, Path::new("/run/l7c/cg-4242"));
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let state = State {
            cgroup: PathBuf::from("/sys/fs/cgroup/unified/app"),
            cgroup_id: 7,
            since: "2026-12-07T06:00:00Z".into(),
            capacity: 10,
            events_all: false,
            agent_pid: Some(1),
            generations: vec![GenerationState {
                number: 1,
                loaded: "2026-12-07T06:00:00Z".into(),
                meta: Meta {
                    abi: Meta::ABI_VERSION,
                    policies: vec![],
                    redirect_slots: vec![],
                    source_hash: "ab".into(),
                    governed_ports: Some(vec![80]),
                },
            }],
        };
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
        assert_eq!(state.current().map(|g| g.number), Some(1));
    }
}
