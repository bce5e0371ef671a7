//! The loopback harness end to end: a run with bound redirect targets and
//! events, large inputs, and the refusals of a misdescribed run.

mod common;

use common::*;
use l7c_compiler::bpf::{Asm, Helper, R10, R2, R3, R4};
use l7c_compiler::elf::MapDef;
use l7c_runtime::harness::{self, KernelRun, RunSpec};
use l7c_runtime::{Errno, KernelError};

/// Redirects every message to slot `slot` of `l7_redirect` and returns
/// what the helper said.
fn redirect_all_object(slot: i32) -> Vec<u8> {
    let mut a = Asm::new();
    a.stw(R10, -4, slot);
    a.ld_map(R2, REDIRECT)
        .mov64(R3, R10)
        .add64(R3, -4)
        .mov64(R4, 0);
    a.call(Helper::MsgRedirectHash).exit();
    object_with(a.finish().unwrap(), vec![MapDef::sock_hash(REDIRECT, 4, 8)])
}

#[test]
fn a_run_reports_sends_peer_targets_and_events() {
    if !kernel_ready("a_run_reports_sends_peer_targets_and_events") {
        return;
    }
    // The probe redirects the first 100 bytes to slot 2 ("api"), passes
    // the next message to the peer, drops the third.
    let mut program = probe(&[
        Plan {
            action: REDIRECT_HASH,
            key: 2,
            apply: 100,
            ..Plan::pass()
        },
        Plan {
            apply: ZERO,
            ..Plan::pass()
        },
        Plan {
            apply: ZERO,
            ..Plan::drop()
        },
    ]);
    let input = pattern(300);
    let spec = RunSpec {
        input: &input,
        split: &[100, 100],
        redirect_map: Some(REDIRECT),
        bindings: &[("api", 2), ("unused", 7)],
        events_map: Some(EVENTS),
        ..RunSpec::default()
    };
    let run = harness::run(&mut program, &spec).unwrap();
    println!(
        "{:?} delivered {} events {}",
        run.sends,
        run.delivered.len(),
        run.events.len()
    );
    assert_eq!(
        run,
        KernelRun {
            sends: vec![Ok(100), Ok(100), Err(Errno::EACCES)],
            delivered: input[100..200].to_vec(),
            redirected: vec![
                ("api".to_owned(), input[..100].to_vec()),
                ("unused".to_owned(), Vec::new())
            ],
            events: run.events.clone(),
            client_read: Vec::new(),
            peer_answered: 0,
        }
    );
    assert_eq!(run.events.len(), 3);

    // A second run on the same program: fresh sockets, only its own events.
    let run = harness::run(
        &mut program,
        &RunSpec {
            input: &input[..10],
            events_map: Some(EVENTS),
            ..RunSpec::default()
        },
    )
    .unwrap();
    assert_eq!(run.events.len(), 1);
    assert_eq!(
        Event::parse(&run.events[0]).run,
        3,
        "runs counts on across connections"
    );
}

#[test]
fn a_redirect_program_moves_everything_to_the_bound_target() {
    if !kernel_ready("a_redirect_program_moves_everything_to_the_bound_target") {
        return;
    }
    let mut program = load(&redirect_all_object(4));
    let input = pattern(10_000);
    let spec = RunSpec {
        input: &input,
        split: &[1, 2, 3, 4000],
        redirect_map: Some(REDIRECT),
        bindings: &[("backend", 4)],
        ..RunSpec::default()
    };
    let run = harness::run(&mut program, &spec).unwrap();
    assert!(run.sends.iter().all(Result::is_ok), "{:?}", run.sends);
    assert!(run.delivered.is_empty());
    assert_eq!(run.redirected.len(), 1);
    assert!(
        run.redirected[0].1 == input,
        "target got {} bytes",
        run.redirected[0].1.len()
    );

    // Unbound: the helper's SK_DROP denies.
    let run = harness::run(
        &mut program,
        &RunSpec {
            input: &input,
            redirect_map: Some(REDIRECT),
            ..RunSpec::default()
        },
    )
    .unwrap();
    assert_eq!(run.sends, vec![Err(Errno::EACCES)]);
}

#[test]
fn a_large_input_never_blocks_the_sender() {
    if !kernel_ready("a_large_input_never_blocks_the_sender") {
        return;
    }
    // 8 MiB is more than the loopback socket buffers hold: the reader
    // threads must drain while the client sends.
    let mut program = load(&pass_all_object());
    let input = pattern(8 << 20);
    let run = harness::run(
        &mut program,
        &RunSpec {
            input: &input,
            split: &[1 << 20; 4],
            ..RunSpec::default()
        },
    )
    .unwrap();
    let sent: usize = run.sends.iter().map(|r| (*r).unwrap_or(0)).sum();
    assert_eq!(sent, input.len(), "{:?}", run.sends);
    assert!(run.delivered == input);
}

#[test]
fn a_misdescribed_run_is_refused() {
    if !kernel_ready("a_misdescribed_run_is_refused") {
        return;
    }
    let mut program = load(&probe_object());
    let input = b"x";
    // Targets without a redirect map.
    let error = harness::run(
        &mut program,
        &RunSpec {
            input,
            bindings: &[("api", 1)],
            ..RunSpec::default()
        },
    )
    .unwrap_err();
    assert!(matches!(error, KernelError::MapShape { .. }), "{error:?}");
    // A redirect map keyed by SockKey cannot take slots.
    let error = harness::run(
        &mut program,
        &RunSpec {
            input,
            redirect_map: Some(SOCKS),
            bindings: &[("api", 1)],
            ..RunSpec::default()
        },
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("redirect slots are u32 keys"),
        "{error}"
    );
    // Events from a map that is not a ring buffer.
    let error = harness::run(
        &mut program,
        &RunSpec {
            input,
            events_map: Some(PLAN),
            ..RunSpec::default()
        },
    )
    .unwrap_err();
    assert!(error.to_string().contains("not RINGBUF"), "{error}");
}
