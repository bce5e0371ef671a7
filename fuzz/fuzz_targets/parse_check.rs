//! Arbitrary bytes as a `.l7` file: parse, resolve and check must never
//! panic or hang, whatever the input.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    l7c_compiler::driver::fuzz_parse_check(data);
});
