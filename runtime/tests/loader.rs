//! The loader: what it reports on success, and that each way of failing
//! names its step, errno and remedy.

mod common;

use common::*;
use l7c_compiler::bpf::{Asm, R0, R2};
use l7c_runtime::{Errno, KernelError, KernelProgram, LoadOptions, PRIVILEGE_HELP};

#[test]
fn garbage_is_refused_before_any_syscall() {
    // Needs no privilege: the object is parsed first.
    let error = KernelProgram::load(b"not an object", &LoadOptions::default()).unwrap_err();
    assert!(matches!(error, KernelError::BadObject { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot load the BPF object: not an ELF object"),
        "{error}"
    );
}

#[test]
fn a_loaded_program_reports_its_verifier_cost_and_metadata() {
    if !kernel_ready("a_loaded_program_reports_its_verifier_cost_and_metadata") {
        return;
    }
    let program = load(&probe_object());
    let count = program
        .verified_instruction_count()
        .expect("6.18 reports verified_insns");
    println!(
        "probe: {} instructions, verifier processed {count}",
        probe_program().slot_len()
    );
    assert!(
        count as usize >= probe_program().slot_len() / 2,
        "processed {count}"
    );
    assert_eq!(program.meta(), Some(&br#"{"test":true}"#[..]));
    assert_eq!(program.program_name(), "l7_verdict");
    assert_eq!(program.attach_map(), SOCKS);
    assert!(program.program_id().is_some());
    let names: Vec<&str> = program.maps().iter().map(|m| m.name.as_str()).collect();
    for name in [SOCKS, REDIRECT, PLAN, EVENTS, COUNTERS, STORE] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // The attach map is found without being named: the only SOCKHASH with
    // 44-byte keys.
    let again = KernelProgram::load(&probe_object(), &LoadOptions::default()).unwrap();
    assert_eq!(again.attach_map(), SOCKS);
}

#[test]
fn array_maps_can_be_written_read_and_cleared() {
    if !kernel_ready("array_maps_can_be_written_read_and_cleared") {
        return;
    }
    let program = load(&probe_object());
    let row: Vec<u8> = (0..32).collect();
    program.write_array(PLAN, 3, &row).unwrap();
    assert_eq!(
        program.lookup(PLAN, &3u32.to_ne_bytes()).unwrap(),
        Some(row)
    );
    // A wrong value size is refused before the syscall.
    let error = program.write_array(PLAN, 3, &[1, 2, 3]).unwrap_err();
    assert!(matches!(error, KernelError::MapShape { .. }), "{error:?}");
    // Out of range: the kernel's E2BIG, named.
    let error = program.write_array(PLAN, 99, &[0; 32]).unwrap_err();
    assert!(
        matches!(
            error,
            KernelError::Syscall {
                errno: Errno::E2BIG,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("BPF_MAP_UPDATE_ELEM of index 99 in map `plan`"),
        "{error}"
    );
    // Nothing under a missing key of a socket map.
    assert!(!program.delete(REDIRECT, &7u32.to_ne_bytes()).unwrap());
}

#[test]
fn the_verifier_refusal_carries_the_log_tail() {
    if !kernel_ready("the_verifier_refusal_carries_the_log_tail") {
        return;
    }
    // Reads R2 before writing it.
    let mut a = Asm::new();
    a.mov64(R0, R2).exit();
    let object = object_with(a.finish().unwrap(), Vec::new());
    let error = KernelProgram::load(&object, &LoadOptions::default()).unwrap_err();
    println!("{error}");
    match &error {
        KernelError::VerifierRejected {
            program,
            errno,
            log_tail,
        } => {
            assert_eq!(program, "l7_verdict");
            assert_eq!(*errno, Errno::EACCES);
            assert!(log_tail.contains("R2 !read_ok"), "{log_tail}");
        }
        other => panic!("expected a verifier refusal, got {other:?}"),
    }
    assert!(error
        .to_string()
        .contains("the kernel verifier refused program `l7_verdict`"));
    let help = miette::Diagnostic::help(&error)
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(help.contains("l7c compile --emit asm"), "{help}");
}

#[test]
fn unknown_names_are_reported_with_what_exists() {
    if !kernel_ready("unknown_names_are_reported_with_what_exists") {
        return;
    }
    let object = probe_object();
    let error = KernelProgram::load(
        &object,
        &LoadOptions {
            program: Some("nope"),
            attach_map: None,
        },
    )
    .unwrap_err();
    assert!(matches!(error, KernelError::NoProgram { .. }), "{error:?}");
    assert!(error.to_string().contains("it has: l7_verdict"), "{error}");
    let error = KernelProgram::load(
        &object,
        &LoadOptions {
            program: None,
            attach_map: Some("nope"),
        },
    )
    .unwrap_err();
    assert!(matches!(error, KernelError::NoMap { .. }), "{error:?}");
    let error = KernelProgram::load(
        &object,
        &LoadOptions {
            program: None,
            attach_map: Some(PLAN),
        },
    )
    .unwrap_err();
    assert!(matches!(error, KernelError::MapShape { .. }), "{error:?}");
    let program = load(&object);
    let error = program.counters(PLAN).unwrap_err();
    assert!(error.to_string().contains("PERCPU_ARRAY"), "{error}");
}

#[test]
fn without_capabilities_the_error_says_what_to_grant() {
    if !kernel_ready("without_capabilities_the_error_says_what_to_grant") {
        return;
    }
    // Credentials are per thread in the kernel: drop the effective set of
    // one thread (raw capset, not the libc wrapper that syncs threads) and
    // load from it. `kernel_ready` has already run aya's feature probes
    // with privileges, so this does not spoil them for other tests.
    let object = pass_all_object();
    let result = std::thread::spawn(move || {
        drop_effective_capabilities();
        KernelProgram::load(&object, &LoadOptions::default()).map(|_| ())
    })
    .join()
    .expect("thread");
    let error = result.expect_err("loading without capabilities must fail");
    println!("{error}");
    assert!(error.is_permission(), "{error:?}");
    assert!(error.to_string().contains("EPERM"), "{error}");
    let help = miette::Diagnostic::help(&error)
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert_eq!(help, PRIVILEGE_HELP);
    assert!(help.contains("run as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"));
}

fn drop_effective_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and a two-element data array, as capget/capset want
    // for version 3.
    unsafe {
        assert_eq!(
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut Header,
                data.as_mut_ptr()
            ),
            0
        );
        data[0].effective = 0;
        data[1].effective = 0;
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()),
            0
        );
    }
}
