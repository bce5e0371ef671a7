//! The kernel engine end to end with a hand-assembled program that follows
//! `abi.rs` (no code generator needed): the engine attaches to
//! `abi::maps::SOCKETS`, turns on `EVENTS_ALL` in `abi::maps::CONFIG`,
//! runs the connection at the ports asked for, and reads the program's
//! `abi::Event`s back as verdicts. Root only; skips loudly otherwise.

mod common;

use common::kernel_ready;
use l7c_compiler::abi::{self, Event, Meta, MetaPolicy};
use l7c_compiler::bpf::{sk_msg_md, Asm, Helper, R0, R1, R10, R2, R3, R4, R6};
use l7c_compiler::elf::{DataType, MapDef, ObjectBuilder};
use l7c_compiler::eval::{Outcome, Reason, Verdict};
use l7c_compiler::model::{ConnectionInfo, VerdictAction};
use l7c_runtime::engine::{self, KernelEngine};
use l7c_runtime::{KernelError, SOCK_KEY_SIZE};

/// Where the event is built on the stack.
const EV: i16 = -(Event::SIZE as i16);
const KEY: i16 = EV - 8;

/// On every run, when the config enables events: one VERDICT event
/// `allow default` on request 0 whose `start` is the context's raw
/// `remote_port` and whose `end` is its `local_port` (so a test reads the
/// ports the program saw from the verdict); then `SK_PASS`.
fn port_reporter_object() -> Vec<u8> {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    for slot in 0..(Event::SIZE as i16 / 8) {
        a.stdw(R10, EV + slot * 8, 0);
    }
    a.stw(R10, KEY, 0);
    a.ld_map(R1, abi::maps::CONFIG)
        .mov64(R2, R10)
        .add64(R2, i32::from(KEY))
        .call(Helper::MapLookupElem);
    a.jeq(R0, 0, "pass");
    a.ldxw(R1, R0, 0).and64(R1, abi::config::EVENTS_ALL as i32).jeq(R1, 0, "pass");
    a.ldxw(R1, R6, sk_msg_md::REMOTE_PORT).stxw(R10, EV + Event::OFFSET_START, R1);
    a.ldxw(R1, R6, sk_msg_md::LOCAL_PORT).stxw(R10, EV + Event::OFFSET_END, R1);
    a.stw(R10, EV + Event::OFFSET_RULE, -1); // abi::NO_RULE
    let (class, kind) = abi::reason_code(Reason::Default);
    a.stb(R10, EV + Event::OFFSET_ACTION, i32::from(abi::action_code(VerdictAction::Allow)));
    a.stb(R10, EV + Event::OFFSET_REASON_CLASS, i32::from(class));
    a.stb(R10, EV + Event::OFFSET_REASON_KIND, i32::from(kind));
    a.stb(R10, EV + Event::OFFSET_RECORD, i32::from(abi::record::VERDICT));
    a.ld_map(R1, abi::maps::EVENTS)
        .mov64(R2, R10)
        .add64(R2, i32::from(EV))
        .mov64(R3, Event::SIZE as i32)
        .mov64(R4, 0)
        .call(Helper::RingbufOutput);
    a.label("pass").mov64(R0, 1).exit();
    let mut object = ObjectBuilder::new();
    object.program("sk_msg", "l7_verdict", a.finish().expect("port reporter"));
    object.map(MapDef::sock_hash(abi::maps::SOCKETS, SOCK_KEY_SIZE as u32, 64));
    object.map(MapDef::sock_hash(abi::maps::REDIRECTS, 4, 8));
    object.map(MapDef::ring_buf(abi::maps::EVENTS, 1 << 16));
    object.map(MapDef::array(abi::maps::CONFIG, DataType::U32, abi::config::ENTRIES));
    // The engine names verdicts from the `Meta` it is given.
    object.meta(br#"{"test":true}"#.to_vec());
    object.write().expect("object")
}

fn meta() -> Meta {
    Meta {
        abi: Meta::ABI_VERSION,
        policies: vec![MetaPolicy {
            name: "ports".into(),
            rules: vec![],
            audit: false,
            header_bytes: 8192,
            headers: 100,
        }],
        redirect_slots: vec![("envoy".into(), 1)],
        source_hash: "0".into(),
        governed_ports: None,
    }
}

/// The raw `remote_port` of the context: bytes `[0, 0, hi, lo]`.
fn raw_remote_port(port: u16) -> u64 {
    let [hi, lo] = port.to_be_bytes();
    u64::from(u32::from_le_bytes([0, 0, hi, lo]))
}

#[test]
fn the_engine_runs_the_connection_at_the_ports_asked_for_and_reads_its_events() {
    if !kernel_ready("the_engine_runs_the_connection_at_the_ports_asked_for_and_reads_its_events") {
        return;
    }
    let object = port_reporter_object();
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut engine = KernelEngine::load(&object, &meta()).expect("load");
    // The same fixed 4-tuple many times in a row: no TIME_WAIT in the way.
    for (remote_port, local_port) in [(8080u16, 40000u16), (8080, 40000), (8080, 40000), (443, 40001), (9090, 40000)] {
        let connection = ConnectionInfo { remote_port, local_port, ..ConnectionInfo::default() };
        let outcome = engine.run(connection, &["envoy".to_owned()], input, &[]).expect("run");
        assert_eq!(
            outcome,
            Outcome {
                verdicts: vec![Verdict {
                    index: 0,
                    start: raw_remote_port(remote_port),
                    end: u64::from(local_port),
                    action: VerdictAction::Allow,
                    reason: Reason::Default,
                    rule: None,
                    answer: None,
                }],
                delivered: input.len() as u64,
                pending: 0,
            },
            "ports {remote_port} and {local_port}"
        );
    }
    // The one-shot form loads, runs and unloads.
    let report = engine::evaluate(&object, &meta(), ConnectionInfo::default(), &[], input, &[]).expect("evaluate");
    assert_eq!(report.held_tail, None);
    let outcome = report.outcome;
    assert_eq!(outcome.verdicts.len(), 1);
    assert_eq!(outcome.verdicts[0].start, raw_remote_port(80));
}

#[test]
fn connections_off_loopback_are_refused_with_the_reason() {
    if !kernel_ready("connections_off_loopback_are_refused_with_the_reason") {
        return;
    }
    let mut engine = KernelEngine::load(&port_reporter_object(), &meta()).expect("load");
    for remote in ["10.0.0.1", "::1"] {
        let connection = ConnectionInfo { remote_addr: remote.parse().unwrap(), ..ConnectionInfo::default() };
        let error = engine.run(connection, &[], b"GET / HTTP/1.1\r\n\r\n", &[]).unwrap_err();
        assert!(matches!(error, KernelError::Unsupported { .. }), "{error:?}");
        assert!(error.to_string().contains(remote), "{error}");
    }
    // Another loopback address works: listen and bind there.
    let connection = ConnectionInfo {
        remote_addr: "127.0.0.2".parse().unwrap(),
        local_addr: "127.0.0.3".parse().unwrap(),
        ..ConnectionInfo::default()
    };
    let outcome = engine.run(connection, &[], b"GET / HTTP/1.1\r\n\r\n", &[]).expect("127.0.0.2");
    assert_eq!(outcome.delivered, 18);
}
