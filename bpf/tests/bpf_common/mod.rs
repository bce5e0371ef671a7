//! Shared by the `bpf_*` and `elf_*` tests: representative instructions of
//! every form in the opcode table, external tools, and a sample object.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use l7c_bpf::bpf::{
    Asm, Helper, Insn, Op, Operand, Program, Reg, SrcKind, HELPERS, R0, R1, R10, R2, R3, R4, R6, R7,
};
use l7c_bpf::elf::{DataType, Field, MapDef, ObjectBuilder};

/// Operand sets: ordinary values, extremes, zeros.
pub const VARIANTS: usize = 3;

/// An instruction of form `op` with distinctive operands (`variant` <
/// [`VARIANTS`]); jumps get offset 0, map loads load `map_N`.
pub fn example(op: Op, variant: usize) -> Insn {
    let (dst, src, imm, off, imm64) = match variant {
        0 => (R1, R2, 7, -8, 0x1_0000_0002),
        1 => (Reg::R9, R10, i32::MIN, i16::MAX, i64::MIN),
        _ => (R0, R0, -1, i16::MIN, -1),
    };
    let operand = |kind: SrcKind| match kind {
        SrcKind::Imm => Operand::Imm(imm),
        SrcKind::Reg => Operand::Reg(src),
    };
    match op {
        Op::Alu(width, alu, kind) => Insn::Alu { width, op: alu, dst, src: operand(kind) },
        Op::Neg(width) => Insn::Neg { width, dst },
        Op::Endian(conv) => Insn::Endian { conv, dst },
        Op::Ja => Insn::Ja { off: 0 },
        Op::Jmp(width, cond, kind) => Insn::Jmp { width, cond, dst, src: operand(kind), off: 0 },
        Op::Call => Insn::Call { helper: HELPERS[variant % HELPERS.len()].helper },
        Op::Exit => Insn::Exit,
        Op::LdImm64 => Insn::LdImm64 { dst, imm: imm64 },
        Op::LdMap => Insn::LdMap { dst, map: format!("map_{variant}") },
        Op::Ldx(size) => Insn::Ldx { size, dst, src, off },
        Op::St(size) => Insn::St { size, dst, off, imm },
        Op::Stx(size) => Insn::Stx { size, dst, src, off },
        Op::AtomicAdd(size) => Insn::AtomicAdd { size, dst, src, off },
        Op::CallLocal => Insn::CallLocal { off: imm },
        Op::LdFunc => Insn::LdFunc { dst, off: imm },
    }
}

/// A program with every form of the table in every variant but the
/// subprogram references (see [`with_functions`]); each jump goes to `end`,
/// the final `exit`. Not meant to pass the verifier.
pub fn every_form() -> Program {
    let mut a = Asm::new();
    for variant in 0..VARIANTS {
        for op in Op::all() {
            let insn = example(op, variant);
            if insn.func_offset().is_some() {
                continue;
            }
            match insn {
                Insn::Ja { .. } => a.ja("end"),
                Insn::Jmp { width, cond, dst, src, .. } => a.jmp(width, cond, dst, src, "end"),
                other => a.push(other),
            };
        }
    }
    a.label("end");
    a.exit();
    a.finish().expect("every_form assembles")
}

/// A main program and two functions: a `bpf_loop` callback passed with
/// `ld_func` (which itself calls a helper function) and a function the main
/// program calls with `call_local`; a map load inside a function.
pub fn with_functions() -> Program {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    a.mov64(R1, 4).ld_func(R2, "callback").mov64(R3, R10).add64(R3, -8).mov64(R4, 0);
    a.call(Helper::Loop);
    a.jeq(R0, 0, "out");
    a.call_local("helper");
    a.label("out");
    a.mov64(R0, 1).exit();
    a.function("callback");
    a.ld_map(R1, "map_0");
    a.call_local("helper");
    a.mov64(R0, 0).exit();
    a.function("helper");
    a.mov64(R0, 7).exit();
    a.finish().expect("with_functions assembles")
}

/// The maps `every_form` loads.
pub fn every_form_maps() -> Vec<MapDef> {
    (0..VARIANTS).map(|v| MapDef::array(&format!("map_{v}"), DataType::U64, 1)).collect()
}

/// The sk_storage value of the sample program.
pub fn session_type() -> DataType {
    DataType::structure(
        "l7_session",
        vec![
            Field::new("bytes", DataType::U64),
            Field::new("state", DataType::U32),
            Field::new("tag", DataType::Bytes(6)),
        ],
    )
}

/// A small program the verifier accepts: counts the bytes of each message
/// in the socket's storage, redirects through a SOCKHASH key 0 and returns
/// SK_PASS.
pub fn sample_program() -> Program {
    use l7c_bpf::bpf::sk_msg_md;
    let mut a = Asm::new();
    a.note("keep the context, find this socket's session");
    a.mov64(R6, R1);
    a.ldxdw(R7, R6, sk_msg_md::SK).comment("msg->sk");
    a.ld_map(R1, "l7_sessions");
    a.mov64(R2, R7);
    a.mov64(R3, 0);
    a.mov64(R4, 1).comment("BPF_SK_STORAGE_GET_F_CREATE");
    a.call(Helper::SkStorageGet);
    a.jeq(R0, 0, "redirect");
    a.ldxw(R1, R6, sk_msg_md::SIZE).comment("msg->size");
    a.atomic_add64(R0, 0, R1).comment("session.bytes += size");
    a.note("redirect to slot 0");
    a.label("redirect");
    a.stw(R10, -4, 0);
    a.mov64(R1, R6);
    a.ld_map(R2, "l7_redirect");
    a.mov64(R3, R10);
    a.add64(R3, -4);
    a.mov64(R4, 0);
    a.call(Helper::MsgRedirectHash);
    a.label("pass");
    a.mov64(R0, 1);
    a.exit();
    a.finish().expect("sample program assembles")
}

/// The sample object: the sample program in `sk_msg`, and one map of each
/// type l7c uses.
pub fn sample_object() -> ObjectBuilder {
    let mut object = ObjectBuilder::new();
    object
        .program("sk_msg", "l7_verdict", sample_program())
        .map(MapDef::sock_hash("l7_redirect", 4, 16))
        .map(MapDef::sk_storage("l7_sessions", session_type()))
        .map(MapDef::percpu_array("l7_counters", DataType::U64, 8))
        .map(MapDef::array(
            "l7_config",
            DataType::structure("l7_limits", vec![Field::new("header_bytes", DataType::U32)]),
            1,
        ))
        .map(MapDef::ring_buf("l7_events", 1 << 16))
        .meta(br#"{"policy":"sample","rules":{"1":"allow-all"}}"#.to_vec());
    object
}

/// `tool` on PATH (or in /usr/sbin, /sbin), if installed.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Whether the test runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Says loudly why a test did not run.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("l7c-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Removes a scratch directory, unless `L7C_KEEP_OBJECTS` is set (to look
/// at the objects a test wrote).
pub fn cleanup(dir: &Path) {
    if std::env::var_os("L7C_KEEP_OBJECTS").is_some() {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs a command; returns (success, stdout, stderr).
pub fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(program).args(args).output().expect("run command");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
