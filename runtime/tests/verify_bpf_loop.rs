//! `bpf_loop` with a callback subprogram, under the kernel's verifier (root
//! only; without root every test prints `SKIPPED <test>: <reason>` and
//! passes).
//!
//! The object: an `sk_msg` main function that zeroes a 16-byte context on
//! its stack, calls `bpf_loop(ITERATIONS, count, ctx, 0)` and then a local
//! function `verdict` (a BPF-to-BPF call) that turns "the callback ran
//! ITERATIONS times" into SK_PASS; the callback `count` (in `.text`, static,
//! ~50 instructions) bumps the counter and mixes the index into an
//! accumulator, returning 0 (continue).

mod common;

use common::kernel_ready;
use l7c_compiler::bpf::{sk_msg_md, Helper, Asm, Program, R0, R1, R10, R2, R3, R4, R6};

use l7c_runtime::harness::{self, RunSpec};

const ITERATIONS: i32 = 16_384;
const CALLBACK_FILLER: usize = 22;

fn loop_program(iterations: i32, expected: i32) -> Program {
    let mut a = Asm::new();
    a.mov64(R6, R1).comment("keep the context");
    // ctx.count starts at msg->size, a value the verifier does not know, and
    // the verdict looks at count - size: the counter never becomes a
    // precise constant, so the callback's states converge after a couple of
    // passes instead of being walked once per iteration.
    a.ldxw(R1, R6, sk_msg_md::SIZE);
    a.stxdw(R10, -8, R1).comment("ctx.count = msg->size");
    a.stdw(R10, -16, 0).comment("ctx.mix = 0");
    a.mov64(R1, iterations);
    a.ld_func(R2, "count");
    a.mov64(R3, R10).add64(R3, -16);
    a.mov64(R4, 0);
    a.call(Helper::Loop);
    a.jne(R0, iterations, "drop").comment("bpf_loop returns the iterations run");
    a.ldxdw(R1, R10, -8);
    a.ldxw(R2, R6, sk_msg_md::SIZE);
    a.sub64(R1, R2).comment("iterations the callback counted");
    a.call_local("verdict");
    a.exit();
    a.label("drop");
    a.mov64(R0, 0).exit();

    // long count(u64 index, void *ctx)
    a.function("count");
    a.ldxdw(R3, R2, 8).add64(R3, 1).stxdw(R2, 8, R3);
    a.ldxdw(R4, R2, 0);
    for i in 0..CALLBACK_FILLER {
        a.xor64(R4, R1);
        a.add64(R4, i as i32 + 1);
    }
    a.stxdw(R2, 0, R4);
    a.mov64(R0, 0).exit();

    // int verdict(u64 count): SK_PASS when the callback ran every time
    a.function("verdict");
    a.mov64(R0, 0);
    a.jne(R1, expected, "verdict.out");
    a.mov64(R0, 1);
    a.label("verdict.out");
    a.exit();
    a.finish().expect("the bpf_loop program assembles")
}

#[test]
fn bpf_loop_callback_loads_and_passes_bytes() {
    if !kernel_ready("bpf_loop_callback_loads_and_passes_bytes") {
        return;
    }
    let program = loop_program(ITERATIONS, ITERATIONS);
    let callback = program.function_ranges()[1].len();
    let object = common::object_with(program, Vec::new());
    let mut loaded = common::load(&object);
    let processed = loaded.verified_instruction_count();
    println!(
        "VERIFIED bpf_loop: {ITERATIONS} iterations, callback {callback} instructions, {processed:?} processed"
    );
    assert!(processed.is_some_and(|n| n < 10_000), "{processed:?}");

    let input: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    let run = harness::run(&mut loaded, &RunSpec { input: &input, split: &[1, 700], ..RunSpec::default() })
        .expect("the harness runs");
    assert!(run.sends.iter().all(Result::is_ok), "{:?}", run.sends);
    assert_eq!(run.delivered, input);
}

#[test]
fn a_short_loop_drops() {
    if !kernel_ready("a_short_loop_drops") {
        return;
    }
    // bpf_loop(3): the callback runs 3 times, the verdict wants ITERATIONS.
    let a = loop_program(3, ITERATIONS);
    let mut loaded = common::load(&common::object_with(a, Vec::new()));
    let run = harness::run(&mut loaded, &RunSpec { input: b"hello", ..RunSpec::default() }).expect("runs");
    assert!(run.delivered.is_empty(), "SK_DROP delivers nothing: {:?}", run.delivered);
}

#[test]
fn bpftool_loads_the_object() {
    if !kernel_ready("bpftool_loads_the_object") {
        return;
    }
    let Ok(status) = std::process::Command::new("bpftool").arg("version").output() else {
        eprintln!("SKIPPED bpftool_loads_the_object: no bpftool");
        return;
    };
    assert!(status.status.success());
    let dir = std::env::temp_dir().join(format!("l7c-bpf-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loop.o");
    std::fs::write(&path, common::object_with(loop_program(ITERATIONS, ITERATIONS), Vec::new())).unwrap();
    let pin = format!("/sys/fs/bpf/l7c_bpf_loop_{}", std::process::id());
    let out = std::process::Command::new("bpftool")
        .args(["prog", "load"])
        .arg(&path)
        .arg(&pin)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&pin);
    if std::env::var_os("L7C_KEEP_OBJECTS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", path.display());
    }
    assert!(
        out.status.success(),
        "bpftool prog load failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_callback_can_load_a_map() {
    if !kernel_ready("a_callback_can_load_a_map") {
        return;
    }
    // The map load sits in `.text`: its relocation is in `.rel.text`.
    let mut a = Asm::new();
    a.mov64(R1, 8).ld_func(R2, "bump").mov64(R3, 0).mov64(R4, 0);
    a.call(Helper::Loop);
    a.mov64(R0, 1).exit();
    a.function("bump");
    a.stw(R10, -4, 0);
    a.ld_map(R1, "counts").mov64(R2, R10).add64(R2, -4);
    a.call(Helper::MapLookupElem);
    a.jeq(R0, 0, "bump.out");
    a.mov64(R1, 1).atomic_add64(R0, 0, R1);
    a.label("bump.out");
    a.mov64(R0, 0).exit();
    let program = a.finish().expect("asm");
    let counts = l7c_compiler::elf::MapDef::array("counts", l7c_compiler::elf::DataType::U64, 1);
    let mut loaded = common::load(&common::object_with(program, vec![counts]));
    println!("VERIFIED map in callback: {:?} processed", loaded.verified_instruction_count());
    let run = harness::run(&mut loaded, &RunSpec { input: b"hello", ..RunSpec::default() }).expect("runs");
    assert_eq!(run.delivered, b"hello");
}
