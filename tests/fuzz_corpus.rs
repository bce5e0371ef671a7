//! The fuzz targets' entry points over their committed seed corpora
//! (fuzz/corpus/<target>/), plus a few deterministic mutations of each seed
//! (truncations and byte flips), as an ordinary test: no panic, no hang.
//! `cargo fuzz run <target>` explores further (see docs/testing.md).

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("entry").path();
            (path.display().to_string(), std::fs::read(&path).expect("readable seed"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "the {target} corpus is empty");
    seeds
}

/// The seed, its truncations at a few points, and copies with one byte
/// changed, so each seed probes the code around it.
fn mutations(seed: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    let len = seed.len();
    for cut in [len / 4, len / 2, len * 3 / 4, len.saturating_sub(1)] {
        out.push(seed[..cut].to_vec());
    }
    for (i, replacement) in [(len / 3, b'\n'), (len / 2, b'"'), (len * 2 / 3, 0xff), (len / 5, b'%')] {
        if i < len {
            let mut copy = seed.to_vec();
            copy[i] = replacement;
            out.push(copy);
        }
    }
    out
}

#[test]
fn parse_check_corpus() {
    let mut runs = 0;
    for (_name, seed) in corpus("parse_check") {
        for input in mutations(&seed) {
            l7c_compiler::driver::fuzz_parse_check(&input);
            runs += 1;
        }
    }
    println!("parse_check: {runs} inputs");
}

#[test]
fn evaluate_corpus() {
    let mut runs = 0;
    for (_name, seed) in corpus("evaluate") {
        for input in mutations(&seed) {
            l7c_compiler::eval::fuzzing::fuzz_evaluate(&input);
            runs += 1;
        }
    }
    println!("evaluate: {runs} inputs");
}
