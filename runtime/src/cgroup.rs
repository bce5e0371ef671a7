//! The cgroup side of `l7c run`: checking that `--cgroup PATH` is a
//! cgroup v2 directory (with errors that say what to do), and the
//! [`CgroupLink`]s that keep the enrollment program and the gate attached
//! to it.
//!
//! Invariants: a [`CgroupLink`] owns one `BPF_LINK_CREATE` link; the
//! program is attached exactly while the link's fd is open, so dropping
//! the enrollment, or the process dying, detaches it (nothing is left on
//! the cgroup, unlike `BPF_PROG_ATTACH`). [`CgroupLink::replace`] swaps the
//! program atomically (`BPF_LINK_UPDATE`): no connection established during
//! a reload escapes enrollment, and none is enrolled twice.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::errno::Errno;
use crate::error::KernelError;
use crate::sys;

/// `CGROUP2_SUPER_MAGIC` (`statfs.f_type` of a cgroup v2 mount).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// How to get a cgroup v2 mount, for the errors below.
pub const MOUNT_HELP: &str = "mount the unified hierarchy, e.g. `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`, then create a cgroup under it with `mkdir`";

/// Why `--cgroup PATH` cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CgroupError {
    #[error("no cgroup v2 file system is mounted (none in /proc/self/mountinfo)")]
    #[diagnostic(code("l7::run::no-cgroup2"), help("{}", MOUNT_HELP))]
    NoCgroup2,
    #[error("cgroup `{path}` does not exist ({errno})")]
    #[diagnostic(
        code("l7::run::cgroup-missing"),
        help("create it first: `mkdir {path}` (cgroup v2 mounts here: {mounts}), then move the service's processes into it by writing their pids to `{path}/cgroup.procs`")
    )]
    Missing {
        path: String,
        errno: Errno,
        mounts: String,
    },
    #[error("`{path}` is not a cgroup v2 directory")]
    #[diagnostic(
        code("l7::run::not-cgroup2"),
        help("name a directory on a cgroup2 mount (here: {mounts}); a cgroup v1 hierarchy cannot take sock_ops programs")
    )]
    NotCgroup2 { path: String, mounts: String },
}

/// The mount points of cgroup v2 file systems, from `/proc/self/mountinfo`.
pub fn cgroup2_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            // `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS... - FSTYPE SOURCE SUPER`
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let code = rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = rest.get(at + 4..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                rest = rest.get(at + 1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks that `path` is a directory on a cgroup v2 mount.
pub fn check_cgroup(path: &Path) -> Result<(), CgroupError> {
    check_against(path, &cgroup2_mounts())
}

fn check_against(path: &Path, mounts: &[PathBuf]) -> Result<(), CgroupError> {
    if mounts.is_empty() {
        return Err(CgroupError::NoCgroup2);
    }
    let listed = mounts
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let display = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|error| CgroupError::Missing {
        path: display.clone(),
        errno: Errno::from_io(&error),
        mounts: listed.clone(),
    })?;
    if !metadata.is_dir() || statfs_type(path) != Some(CGROUP2_SUPER_MAGIC) {
        return Err(CgroupError::NotCgroup2 {
            path: display,
            mounts: listed,
        });
    }
    Ok(())
}

/// `statfs(2)`'s `f_type` for `path` (which file system it is on).
pub(crate) fn statfs_type(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own; the path is a
    // NUL-terminated string that outlives the call.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut buf) != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // f_type's type differs by libc target
        Some(buf.f_type as i64)
    }
}

/// Opens a cgroup directory (what attaching to it takes).
pub(crate) fn open_cgroup(cgroup: &Path) -> Result<std::fs::File, KernelError> {
    std::fs::File::open(cgroup).map_err(|error| {
        KernelError::syscall(
            format!("open of cgroup `{}`", cgroup.display()),
            Errno::from_io(&error),
            "name a cgroup v2 directory, e.g. /sys/fs/cgroup/unified/NAME",
        )
    })
}

/// A program attached to a cgroup through a BPF link (module docs): the
/// enrollment program (`BPF_CGROUP_SOCK_OPS`) or one half of the gate
/// (`BPF_CGROUP_INET4_CONNECT`, `..._INET6_CONNECT`).
#[derive(Debug)]
pub struct CgroupLink {
    cgroup: PathBuf,
    /// What is attached, for errors: e.g. "the sock_ops program".
    what: &'static str,
    /// The attach type's name, for errors.
    hook: &'static str,
    link: OwnedFd,
}

/// The enrollment program's link.
pub type Enrollment = CgroupLink;

impl CgroupLink {
    /// Attaches `program` (a loaded `sock_ops` program) to the cgroup v2
    /// directory `cgroup`.
    pub fn attach(program: BorrowedFd<'_>, cgroup: &Path) -> Result<CgroupLink, KernelError> {
        CgroupLink::attach_as(program, cgroup, sys::BPF_CGROUP_SOCK_OPS, "the sock_ops program", "BPF_CGROUP_SOCK_OPS")
    }

    /// Attaches `program` to `cgroup` at `attach_type` (named `hook` in
    /// errors).
    pub fn attach_as(
        program: BorrowedFd<'_>,
        cgroup: &Path,
        attach_type: u32,
        what: &'static str,
        hook: &'static str,
    ) -> Result<CgroupLink, KernelError> {
        let dir = open_cgroup(cgroup)?;
        let link = sys::link_create(program, dir.as_fd(), attach_type).map_err(|errno| {
            KernelError::syscall(
                format!("BPF_LINK_CREATE of {what} on cgroup `{}` ({hook})", cgroup.display()),
                errno,
                "the directory must be on a cgroup2 mount and the kernel must have CONFIG_CGROUP_BPF (5.7+ for links)",
            )
        })?;
        Ok(CgroupLink { cgroup: cgroup.to_owned(), what, hook, link })
    }

    /// A link opened from its pin (`pins.rs`), attached to `cgroup`.
    pub fn from_fd(link: OwnedFd, cgroup: &Path, what: &'static str, hook: &'static str) -> CgroupLink {
        CgroupLink { cgroup: cgroup.to_owned(), what, hook, link }
    }

    /// From now on the cgroup's connections run `program` instead
    /// (atomically: `BPF_LINK_UPDATE`).
    pub fn replace(&self, program: BorrowedFd<'_>) -> Result<(), KernelError> {
        sys::link_update(self.link.as_fd(), program).map_err(|errno| {
            KernelError::syscall(
                format!("BPF_LINK_UPDATE of {} on cgroup `{}` ({})", self.what, self.cgroup.display(), self.hook),
                errno,
                "",
            )
        })
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The link's fd (to pin it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// The `TCP_ULP` guard (`l7c_abi::enroll::ulp_guard`) loaded and
/// attached to a cgroup through a BPF link: the cgroup's sockets cannot
/// take the `tls` ULP, so none is left with the ULP and no key, a state in
/// which the kernel stops running its `sk_msg` program (docs/runtime.md,
/// "kTLS"). Detached when dropped.
#[derive(Debug)]
pub struct UlpGuard {
    _program: Option<OwnedFd>,
    link: OwnedFd,
}

impl UlpGuard {
    /// The guard's link opened from its pin.
    pub fn from_link(link: OwnedFd) -> UlpGuard {
        UlpGuard { _program: None, link }
    }

    /// The link's fd (to pin it).
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    pub fn attach(cgroup: &Path) -> Result<UlpGuard, KernelError> {
        use l7c_abi::enroll::ulp_guard;
        let code = ulp_guard::program().encode();
        let program = sys::prog_load(sys::BPF_PROG_TYPE_CGROUP_SOCKOPT, sys::BPF_CGROUP_SETSOCKOPT, ulp_guard::PROGRAM_NAME, &code)
            .map_err(|(errno, log)| {
                KernelError::syscall(
                    format!("BPF_PROG_LOAD of the TCP_ULP guard (`{}`, cgroup/setsockopt)", ulp_guard::PROGRAM_NAME),
                    errno,
                    &format!("the kernel needs CONFIG_CGROUP_BPF (5.3+ for setsockopt hooks); verifier: {}", log.trim()),
                )
            })?;
        let dir = open_cgroup(cgroup)?;
        let link = sys::link_create(program.as_fd(), dir.as_fd(), sys::BPF_CGROUP_SETSOCKOPT).map_err(|errno| {
            KernelError::syscall(
                format!("BPF_LINK_CREATE of the TCP_ULP guard on cgroup `{}` (BPF_CGROUP_SETSOCKOPT)", cgroup.display()),
                errno,
                "the directory must be on a cgroup2 mount",
            )
        })?;
        Ok(UlpGuard { _program: Some(program), link })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/odd\x"), r"/odd\x");
    }

    #[test]
    fn without_a_cgroup2_mount_the_error_says_how_to_mount_one() {
        let error = check_against(Path::new("/sys/fs/cgroup/app"), &[]).unwrap_err();
        assert!(matches!(error, CgroupError::NoCgroup2));
        let help = miette::Diagnostic::help(&error).map(|h| h.to_string()).unwrap_or_default();
        assert!(help.contains("mount -t cgroup2"), "{help}");
    }

    #[test]
    fn a_missing_cgroup_says_how_to_create_it() {
        if cgroup2_mounts().is_empty() {
            eprintln!("SKIPPED a_missing_cgroup_says_how_to_create_it: no cgroup2 mount here");
            return;
        }
        let error = check_cgroup(Path::new("/nonexistent/l7c-test")).unwrap_err();
        assert!(matches!(error, CgroupError::Missing { .. }), "{error:?}");
        let error = check_cgroup(Path::new("/tmp")).unwrap_err();
        assert!(matches!(error, CgroupError::NotCgroup2 { .. }), "{error:?}");
    }
}
