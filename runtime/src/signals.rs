//! The signals `l7c run` reacts to, as flags a polling loop reads:
//! SIGHUP asks for a reload, SIGINT and SIGTERM for a clean exit.
//!
//! Plain `sigaction` with a handler that only stores into atomics (the one
//! thing a handler may safely do); no thread, no self-pipe: the run loop
//! polls at least every 100 ms anyway (events, file changes), and a signal
//! also interrupts its sleep.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static HANGUP: AtomicBool = AtomicBool::new(false);
static TERMINATE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal == libc::SIGHUP {
        HANGUP.store(true, Ordering::SeqCst);
    } else {
        TERMINATE.store(signal, Ordering::SeqCst);
    }
}

/// The installed handlers (one set per process).
#[derive(Debug)]
pub struct Signals(());

impl Signals {
    /// Installs handlers for SIGHUP, SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<Signals> {
        for signal in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction with a handler that only touches
            // atomics; sa_mask empty; no SA_RESTART, so a blocking sleep
            // or accept returns EINTR and the loop looks at the flags.
            let ret = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            if ret != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Signals(()))
    }

    /// Whether a SIGHUP arrived since the last call.
    pub fn take_hangup(&self) -> bool {
        HANGUP.swap(false, Ordering::SeqCst)
    }

    /// The terminating signal received (SIGINT or SIGTERM), if any.
    pub fn terminated(&self) -> Option<i32> {
        match TERMINATE.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// The conventional name of a signal number this module handles.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
