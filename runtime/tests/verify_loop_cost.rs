//! What a plain bounded byte loop costs the verifier on this kernel — the
//! alternative to `bpf_loop` for the head scan (docs/program.md, "How the
//! head phase is to be built"). The body is shaped like docs/scan.md's:
//! packet bounds check, byte-class lookup, lexer-table step with the state
//! masked to the table, and an action dispatch over `arms` small arms that
//! each write the scanner state. Prints `LOOP …` lines with the processed
//! instruction counts; asserts nothing about them beyond loading or the
//! verifier's own refusal. Root only.

mod common;

use common::*;
use l7c_compiler::bpf::{sk_msg_md, Asm, Helper, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9};
use l7c_compiler::elf::{DataType, MapDef};
use l7c_runtime::{KernelProgram, LoadOptions};

const TABLES: &str = "tables";
const MAIN_ENTRIES: i32 = 8192;

fn loop_object(iterations: i32, arms: i32) -> Vec<u8> {
    let mut a = Asm::new();
    a.mov64(R6, R1);
    // r7 = tables (one array value: 256 class bytes, then u32 main[8192]).
    a.stw(R10, -4, 0);
    a.ld_map(R1, TABLES).mov64(R2, R10).add64(R2, -4).call(Helper::MapLookupElem);
    a.jeq(R0, 0, "drop");
    a.mov64(R7, R0);
    a.mov64(R8, 0).comment("i");
    a.mov64(R9, 4).comment("lexer state");
    a.label("loop");
    a.jge(R8, iterations, "done");
    a.ldxdw(R2, R6, sk_msg_md::DATA);
    a.ldxdw(R3, R6, sk_msg_md::DATA_END);
    a.add64(R2, R8);
    a.mov64(R4, R2).add64(R4, 1);
    a.jgt(R4, R3, "done");
    a.ldxb(R1, R2, 0).comment("b");
    a.mov64(R2, R7).add64(R2, R1);
    a.ldxb(R5, R2, 0).comment("class");
    a.lsh64(R9, 6).or64(R9, R5).and64(R9, MAIN_ENTRIES - 1);
    a.lsh64(R9, 2).add64(R9, R7);
    a.ldxw(R0, R9, 256).comment("entry");
    a.mov64(R9, R0).and64(R9, 0xff).comment("next state");
    a.rsh64(R0, 8).and64(R0, 0xff).comment("action");
    for arm in 1..=arms {
        a.jeq(R0, arm, format!("arm{arm}"));
    }
    a.ja("next");
    for arm in 1..=arms {
        a.label(format!("arm{arm}"));
        a.mov64(R2, R1).add64(R2, arm).and64(R2, 0xff);
        a.stxb(R10, -8, R2);
        a.ja("next");
    }
    a.label("next");
    a.add64(R8, 1);
    a.ja("loop");
    a.label("done");
    a.mov64(R0, 1).exit();
    a.label("drop");
    a.mov64(R0, 0).exit();
    object_with(
        a.finish().unwrap(),
        vec![MapDef::array(TABLES, DataType::Bytes(256 + 4 * MAIN_ENTRIES as u32), 1)],
    )
}

#[test]
fn plain_loop_cost() {
    if !kernel_ready("plain_loop_cost") {
        return;
    }
    for arms in [1, 19] {
        for iterations in [256, 1024, 4096, 8192] {
            let outcome = KernelProgram::load(
                &loop_object(iterations, arms),
                &LoadOptions { program: None, attach_map: Some(SOCKS) },
            );
            match outcome {
                Ok(program) => println!(
                    "LOOP arms={arms} iterations={iterations}: processed {:?}",
                    program.verified_instruction_count()
                ),
                Err(error) => {
                    let text = error.to_string();
                    let last: Vec<&str> = text.lines().rev().take(4).collect();
                    println!("LOOP arms={arms} iterations={iterations}: REFUSED {last:?}");
                }
            }
        }
    }
}
