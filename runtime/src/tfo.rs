//! TCP Fast Open on the client side lets data leave before `sk_msg` can
//! judge it: `sendto(..., MSG_FASTOPEN)` on a socket the cgroup has not
//! connected yet runs the connect *inside* that `sendmsg` call, which
//! started before the socket was enrolled, so its bytes go out through
//! the plain TCP send path (measured on 6.18: `GET /admin` reached a
//! server the policy denies it, with no TFO support on the server at all;
//! with a cookie the bytes would even ride in the SYN). No cgroup hook
//! tells a TFO connect from a plain one, so `l7c run` turns the client
//! side of TFO off in its network namespace (`net.ipv4.tcp_fastopen`
//! bit 0): `MSG_FASTOPEN` then fails with `EOPNOTSUPP` and applications
//! fall back to `connect()`. The previous value is kept in
//! `/run/l7c/tcp_fastopen_was` (a node-wide fact: one setting, however many
//! cgroups are governed) and put back when the last enforcement on the
//! node is lifted. Processes of the cgroup in another network namespace
//! have their own setting (docs/runtime.md, "Limits").

use crate::errno::Errno;
use crate::error::KernelError;

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fastopen";
/// `TFO_CLIENT_ENABLE`.
const CLIENT: u32 = 1;

fn read() -> Result<u32, KernelError> {
    let text = std::fs::read_to_string(SYSCTL)
        .map_err(|error| KernelError::syscall(format!("reading {SYSCTL}"), Errno::from_io(&error), ""))?;
    text.trim().parse().map_err(|_| KernelError::BadObject { reason: format!("{SYSCTL} holds `{}`", text.trim()) })
}

fn write(value: u32) -> Result<(), KernelError> {
    std::fs::write(SYSCTL, value.to_string()).map_err(|error| {
        KernelError::syscall(
            format!("writing {value} to {SYSCTL}"),
            Errno::from_io(&error),
            "l7c run turns client TCP Fast Open off (it would let bytes pass unjudged); /proc/sys must be writable (root, not a read-only container)",
        )
    })
}

/// Where the value before l7c is kept.
const SAVED: &str = "/run/l7c/tcp_fastopen_was";

/// Turns client TFO off if it is on; `Some(previous value)` when it
/// changed something. The first change on the node saves the value.
pub fn disable_client() -> Result<Option<u32>, KernelError> {
    let value = read()?;
    if value & CLIENT == 0 {
        return Ok(None);
    }
    if !std::path::Path::new(SAVED).exists() {
        let _ = std::fs::create_dir_all("/run/l7c");
        std::fs::write(SAVED, value.to_string())
            .map_err(|error| KernelError::syscall(format!("writing {SAVED}"), Errno::from_io(&error), ""))?;
    }
    write(value & !CLIENT)?;
    Ok(Some(value))
}

/// Once no enforcement is left on the node (`others_in_force` is 0), puts
/// the saved value back — unless someone changed the setting since (then
/// theirs stays).
pub fn restore_if_last(others_in_force: usize) -> Result<(), KernelError> {
    if others_in_force > 0 {
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string(SAVED) else { return Ok(()) };
    if let Ok(previous) = text.trim().parse::<u32>() {
        if read()? == previous & !CLIENT {
            write(previous)?;
        }
    }
    let _ = std::fs::remove_file(SAVED);
    Ok(())
}

/// Whether client TFO is off now.
pub fn client_off() -> Result<bool, KernelError> {
    Ok(read()? & CLIENT == 0)
}
