//! Nothing of ours outlives a dropped program or a finished run: no
//! program or map in the kernel (checked with `bpftool`), no socket fd, no
//! reader thread. One test in its own binary, so the fd and thread counts
//! are not disturbed by other tests running in parallel.

mod common;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use l7c_runtime::harness::{self, RunSpec};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.count())
        .unwrap_or(0)
}



#[test]
fn dropping_the_program_leaves_nothing_behind() {
    if !kernel_ready("dropping_the_program_leaves_nothing_behind") {
        return;
    }
    if Command::new("bpftool")
        .arg("version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED dropping_the_program_leaves_nothing_behind: bpftool is not installed");
        return;
    }
    // Let the pass-all probe of `kernel_ready` finish its own cleanup.
    std::thread::sleep(Duration::from_millis(100));
    let fds_before = count("/proc/self/fd");
    let threads_before = count("/proc/self/task");

    let mut program = probe(&[
        Plan {
            action: REDIRECT_HASH,
            key: 1,
            apply: 10,
            ..Plan::pass()
        },
        Plan::pass(),
    ]);
    let prog_id = program.program_id().expect("program id");
    let map_ids = program.map_ids();
    assert!(support::bpftool_finds("prog", prog_id));
    assert_eq!(map_ids.len(), probe_maps().len() + 1);
    let input = pattern(100);
    for _ in 0..3 {
        let run = harness::run(
            &mut program,
            &RunSpec {
                input: &input,
                split: &[10, 20],
                redirect_map: Some(REDIRECT),
                bindings: &[("a", 1), ("b", 2)],
                events_map: Some(EVENTS),
                ..RunSpec::default()
            },
        )
        .unwrap();
        let redirected: usize = run.redirected.iter().map(|(_, bytes)| bytes.len()).sum();
        assert_eq!(run.delivered.len() + redirected, input.len());
    }
    // A connection dropped without finishing cleans up too.
    let connection =
        l7c_runtime::Connection::open(&program, Some(REDIRECT), &[("a", 1)], TIMEOUT).unwrap();
    drop(connection);
    drop(program);

    assert!(support::gone("prog", prog_id), "program {prog_id} is still loaded");
    for (name, id) in &map_ids {
        assert!(support::gone("map", *id), "map `{name}` ({id}) is still there");
    }
    assert_eq!(
        count("/proc/self/fd"),
        fds_before,
        "file descriptors leaked"
    );
    assert_eq!(
        count("/proc/self/task"),
        threads_before,
        "reader threads left running"
    );
}
