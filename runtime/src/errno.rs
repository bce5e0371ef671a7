//! `Errno`: an error number a syscall returned, printed with its name.

use std::fmt;
use std::io;

/// An `errno` value, as a failed syscall left it.
///
/// Prints as `EACCES (Permission denied)`: the name to grep the kernel
/// sources and man pages for, then the C library's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EACCES: Errno = Errno(libc::EACCES);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const E2BIG: Errno = Errno(libc::E2BIG);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const ECONNRESET: Errno = Errno(libc::ECONNRESET);

    /// The calling thread's `errno`, right after a failed libc call.
    pub fn last() -> Errno {
        Errno::from_io(&io::Error::last_os_error())
    }

    /// The errno inside an `io::Error`; `EIO` (5) when it carries none
    /// (an error made in user space, not by a syscall).
    pub fn from_io(error: &io::Error) -> Errno {
        Errno(error.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The symbolic name (`EACCES`), or `errno N` for a number this table
    /// does not know.
    pub fn name(self) -> String {
        let known = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::EPIPE => "EPIPE",
            libc::ERANGE => "ERANGE",
            libc::ENOSYS => "ENOSYS",
            libc::ELOOP => "ELOOP",
            libc::ENOTSUP => "EOPNOTSUPP",
            libc::ENOTCONN => "ENOTCONN",
            libc::ECONNRESET => "ECONNRESET",
            libc::ECONNREFUSED => "ECONNREFUSED",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::ENOTSOCK => "ENOTSOCK",
            libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
            _ => return format!("errno {}", self.0),
        };
        known.to_owned()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = io::Error::from_raw_os_error(self.0).to_string();
        // `io::Error` appends " (os error N)"; the name already says which.
        let text = text.split(" (os error").next().unwrap_or(&text);
        write!(f, "{} ({})", self.name(), text)
    }
}

impl From<Errno> for io::Error {
    fn from(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_name_and_text() {
        assert_eq!(Errno::EACCES.to_string(), "EACCES (Permission denied)");
        assert_eq!(Errno(4095).name(), "errno 4095");
    }
}
