//! `l7c-ktls-guest`: the checks of the kTLS test bed, run as root inside a
//! QEMU guest booted by `tests/ktls/run.sh` (docs/ktls.md).
//!
//! A real TLS 1.3 session (rustls, over loopback) hands its keys to kernel
//! TLS on a socket enrolled in an `sk_msg` program's socket map — a
//! hand-assembled program for the kernel mechanics, the compiled example
//! policy for what `l7c` users get. Whether the kernel should accept kTLS
//! on an enrolled socket is an argument (`--expect accepts|refuses`, or
//! `l7c.expect=` on the kernel command line): the runner knows which kernel
//! it booted, and the checks verify that the kernel does what it should.
//!
//! Output, one line per check, then a summary the runner reads:
//! ```text
//! PASS    <check>: <evidence>
//! FAIL    <check>: <what went wrong>
//! SKIPPED <check>: <why it could not run>
//! L7C-KTLS-SUMMARY <release> (Debian <version>) expect=<..>: N passed, N failed, N skipped
//! ```
//! The exit status is 0 only when every check passed, 1 when one failed,
//! 3 when none failed but some were skipped, 2 on a usage error.

mod checks;
mod ktls;
mod policy;
mod programs;
mod tls;

use std::process::ExitCode;
use std::time::Instant;

use checks::{Bed, Expect, Failure};

fn main() -> ExitCode {
    let Some(expect) = expectation() else {
        eprintln!("usage: l7c-ktls-guest --expect accepts|refuses (or l7c.expect= on the kernel command line)");
        return ExitCode::from(2);
    };
    let kernel = kernel_release();
    let expect_name = match expect {
        Expect::Accepts => "accepts",
        Expect::Refuses => "refuses",
    };
    println!(
        "kTLS test bed on Linux {kernel}: expecting the kernel to {} kTLS on an enrolled socket",
        &expect_name[..expect_name.len() - 1]
    );

    let configs = match tls::Configs::new() {
        Ok(configs) => configs,
        Err(error) => {
            println!("FAIL    setup: {error}");
            println!("L7C-KTLS-SUMMARY {kernel} expect={expect_name}: 0 passed, 1 failed, 0 skipped");
            return ExitCode::from(1);
        }
    };
    let bed = Bed::new(configs);

    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for check in checks::for_kernel(expect) {
        let started = Instant::now();
        let result = (check.run)(&bed);
        let took = format!("[{:.1} s]", started.elapsed().as_secs_f64());
        match result {
            Ok(evidence) => {
                passed += 1;
                println!("PASS    {}: {evidence} {took}", check.name);
            }
            Err(Failure::Fail(reason)) => {
                failed += 1;
                println!("FAIL    {}: {reason} {took}", check.name);
            }
            Err(Failure::Skip(reason)) => {
                skipped += 1;
                println!("SKIPPED {}: {reason}", check.name);
            }
        }
    }
    println!("L7C-KTLS-SUMMARY {kernel} expect={expect_name}: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::from(1)
    } else if skipped > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

fn expectation() -> Option<Expect> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = match args.as_slice() {
        [flag, value] if flag == "--expect" => value.clone(),
        [] => std::fs::read_to_string("/proc/cmdline")
            .ok()?
            .split_whitespace()
            .find_map(|word| word.strip_prefix("l7c.expect=").map(str::to_owned))?,
        _ => return None,
    };
    match value.as_str() {
        "accepts" => Some(Expect::Accepts),
        "refuses" => Some(Expect::Refuses),
        _ => None,
    }
}

/// `6.1.0-53-amd64 (Debian 6.1.187-1)`: the release, and the package
/// version `/proc/version` names (Debian's releases hide the upstream one).
fn kernel_release() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let words: Vec<&str> = version.split_whitespace().collect();
    match words.windows(2).rev().find(|pair| pair[0] == "Debian") {
        Some(pair) => format!("{release} (Debian {})", pair[1]),
        None => release,
    }
}
