//! Arbitrary bytes as a client stream, cut into sends by the data itself:
//! the reference evaluator must never panic, and its verdicts must not
//! depend on the split.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    l7c_compiler::eval::fuzzing::fuzz_evaluate(data);
});
