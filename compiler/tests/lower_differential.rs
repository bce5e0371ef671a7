//! The lowered tables decide like the reference evaluator.
//!
//! For every real policy (examples, stdlib, the conformance policies, the
//! benchmark policy) and for generated ones, requests built from the
//! policy's own strings (mutated: case, ports, trailing dots, extra
//! segments, percent-encoding, trailing whitespace, duplicates) are decided
//! by `eval::evaluate` and by `lower::walk` over the lowered tables (with
//! and without the path-guard index); the decisions must be equal.

mod lower_common;
#[path = "../../tests/pending/mod.rs"]
mod pending;
#[path = "../../tests/support/mod.rs"]
mod support;

/// Inside `lower` so that `cargo test -p l7c-compiler lower` runs them.
mod lower {

    use crate::lower_common::{compare, try_lowered, Rng, Vocabulary};
    use crate::pending;
    use l7c_compiler::lower;
    use l7c_compiler::lower::walk::Decision;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    use crate::support::{files, toml_basic_string as basic_string};

    fn repository() -> PathBuf {
        crate::support::repository(env!("CARGO_MANIFEST_DIR"))
    }

    /// The request streams of a conformance file's cases (`input = "..."`, a
    /// TOML basic string, or `input_hex = "..."`).
    fn conformance_inputs(toml: &str) -> Vec<Vec<u8>> {
        let mut inputs = Vec::new();
        for line in toml.lines() {
            if let Some(hex) = line.strip_prefix("input_hex = \"").and_then(|rest| rest.strip_suffix('"')) {
                let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
                let bytes = digits
                    .chunks(2)
                    .filter_map(|pair| std::str::from_utf8(pair).ok().and_then(|pair| u8::from_str_radix(pair, 16).ok()))
                    .collect();
                inputs.push(bytes);
            } else if let Some(rest) = line.strip_prefix("input = \"") {
                inputs.push(basic_string(rest));
            }
        }
        inputs
    }


    /// Every real policy: (name, text, directory for relative imports). The
    /// conformance policies are the repository's copies; one that does not
    /// compile yet must be pending as a whole in PENDING.toml (said, and
    /// left out), and one that is listed so must still not compile.
    fn corpus() -> Vec<(String, String, Option<PathBuf>)> {
        let root = repository();
        let mut out = Vec::new();
        for dir in ["examples", "stdlib"] {
            for path in files(&root.join(dir), "l7") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text, path.parent().map(Path::to_path_buf)));
            }
        }
        for case in pending::compiling_policies(env!("CARGO_MANIFEST_DIR")) {
            out.push((case.path.display().to_string(), case.policy, None));
        }
        let shared = root.join("../shared").canonicalize().unwrap_or_else(|_| root.join("../shared"));
        let api30 = shared.join("bench/api30.l7");
        match std::fs::read_to_string(&api30) {
            Ok(text) => out.push((api30.display().to_string(), text, None)),
            Err(e) => println!("SKIPPED {}: {e}", api30.display()),
        }
        out
    }

    #[derive(Default)]
    struct Tally {
        compared: usize,
        skipped: usize,
        mismatches: usize,
        by_rule: usize,
        /// Requests written by hand (tests, conformance cases) among them.
        written: usize,
    }

    impl Tally {
        fn record(&mut self, result: Option<bool>) {
            match result {
                Some(true) => self.compared += 1,
                Some(false) => {
                    self.compared += 1;
                    self.mismatches += 1;
                }
                None => self.skipped += 1,
            }
        }
    }

    const REQUESTS_PER_POLICY: usize = 3000;

    #[test]
    fn real_policies_decide_like_the_reference() {
        let mut total = Tally::default();
        for (name, text, dir) in corpus() {
            let checked = crate::lower_common::checked(&name, &text, dir.as_deref());
            let lowered = lower::lower(&checked).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut tally = Tally::default();
            // The requests the file's own tests send, and its conformance
            // cases' inputs, against every policy of the file.
            let mut written: Vec<Vec<u8>> = checked.program().tests.iter().flat_map(|t| t.sends.iter().map(|s| s.input.clone())).collect();
            if name.ends_with(".toml") {
                written.extend(conformance_inputs(&std::fs::read_to_string(&name).unwrap_or_default()));
            }
            for (index, lowered_policy) in lowered.policies.iter().enumerate() {
                for input in &written {
                    let result = compare(&checked, index, lowered_policy, input, b"");
                    tally.written += usize::from(result.is_some());
                    tally.record(result);
                }
            }
            for (index, (policy, lowered_policy)) in checked.program().policies.iter().zip(&lowered.policies).enumerate() {
                let vocabulary = Vocabulary::of(policy);
                let mut rng = Rng::new(index as u64 + 1);
                for round in 0..REQUESTS_PER_POLICY {
                    let request = vocabulary.request(&mut rng).bytes();
                    let trailing: &[u8] = if round % 3 == 0 { b" \t " } else { b"" };
                    let result = compare(&checked, index, lowered_policy, &request, trailing);
                    tally.record(result);
                    if result.is_some() {
                        let connection = crate::lower_common::connection_for(&policy.scope).unwrap_or_default();
                        if let Some(Decision::Rule(_)) = crate::lower_common::reference(&checked, policy, connection, &request) {
                            tally.by_rule += 1;
                        }
                    }
                }
            }
            println!(
                "{name}: {} compared ({} written by hand, {} generated decided by a rule), {} skipped, {} mismatches",
                tally.compared, tally.written, tally.by_rule, tally.skipped, tally.mismatches
            );
            total.written += tally.written;
            total.by_rule += tally.by_rule;
            total.compared += tally.compared;
            total.skipped += tally.skipped;
            total.mismatches += tally.mismatches;
        }
        println!(
            "corpus: {} compared ({} written by hand, {} generated decided by a rule), {} skipped, {} mismatches",
            total.compared, total.written, total.by_rule, total.skipped, total.mismatches
        );
        assert_eq!(total.mismatches, 0);
        assert!(total.compared > 10_000, "too few requests were decided by both engines");
    }

    // ---------------------------------------------------------------- generated

    const PATHS: &[&str] = &[
        "/", "/a", "/a/", "/a/b", "/a.b", "/ab", "/a/b/c", "/(x)", "/a+b", "/a b", "/a/*", "/é", "/a?b", "/%41",
    ];
    const GLOBS: &[&str] = &["/a/**", "/**", "/a/*/c", "/*.b", "/**/b", "/a/**/c", "/a*b", "/*", "/**/*.b", "/a/**/**/b"];
    const SUFFIXES: &[&str] = &[".b", "/", "b", "/c", "(x)", "*"];
    const METHODS: &[&str] = &["GET", "POST", "\"M.X\"", "DELETE", "\"get\""];
    const HEADERS: &[&str] = &["x-a", "x-b", "content-type", "upgrade"];
    const VALUES: &[&str] = &["v", "V", "a b", "a ", "", "x*y", "(v)", "a.b", "\\t", "é"];
    const HOSTS: &[&str] = &["a.com", "com", ".com", "[::1]", "a", "", "1]", "a.com.", "::1]"];

    fn quoted(text: &str) -> String {
        if text.starts_with('"') {
            text.to_string()
        } else {
            format!("\"{text}\"")
        }
    }

    fn list(items: Vec<&str>) -> String {
        if items.len() == 1 {
            quoted(items[0])
        } else {
            format!("[{}]", items.iter().map(|item| quoted(item)).collect::<Vec<_>>().join(", "))
        }
    }

    fn pick<'a>(items: &'a [&'a str], seeds: &[usize]) -> Vec<&'a str> {
        seeds.iter().map(|&seed| items[seed % items.len()]).collect()
    }

    /// A matcher drawn from small vocabularies (depth: how much nesting is left).
    fn matcher(depth: u32) -> BoxedStrategy<String> {
        let seeds = || proptest::collection::vec(any::<usize>(), 1..3);
        let leaf = prop_oneof![
            seeds().prop_map(|s| format!("method {}", pick(METHODS, &s).join(", "))),
            (0..4usize, seeds()).prop_map(|(op, s)| {
                let op = ["exact", "prefix", "starts_with", "exact"][op];
                format!("path {op} {}", list(pick(PATHS, &s)))
            }),
            seeds().prop_map(|s| format!("path glob {}", list(pick(GLOBS, &s)))),
            seeds().prop_map(|s| format!("path suffix {}", list(pick(SUFFIXES, &s)))),
            (any::<usize>(), any::<bool>()).prop_map(|(h, present)| {
                format!("header \"{}\" {}", HEADERS[h % HEADERS.len()], if present { "present" } else { "absent" })
            }),
            (any::<usize>(), 0..4usize, any::<bool>(), seeds()).prop_map(|(h, op, nocase, s)| {
                let op = ["exact", "prefix", "suffix", "contains"][op];
                let case = if nocase { " nocase" } else { "" };
                format!("header \"{}\" {op}{case} {}", HEADERS[h % HEADERS.len()], list(pick(VALUES, &s)))
            }),
            (any::<bool>(), seeds()).prop_map(|(exact, s)| {
                format!("host {} {}", if exact { "exact" } else { "suffix" }, list(pick(HOSTS, &s)))
            }),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        prop_oneof![
            4 => leaf,
            1 => proptest::collection::vec(matcher(depth - 1), 1..4).prop_map(|group| format!("any {{ {} }}", group.join("  "))),
            1 => matcher(depth - 1).prop_map(|inner| format!("not {inner}")),
        ]
        .boxed()
    }

    fn policy_text() -> impl Strategy<Value = String> {
        let rule = (proptest::collection::vec(matcher(2), 0..4), 0..4usize);
        (proptest::collection::vec(rule, 1..8), any::<bool>()).prop_map(|(rules, default_allow)| {
            let mut text = format!("policy \"generated\" {{\n  default {}\n", if default_allow { "allow" } else { "deny" });
            for (index, (matchers, action)) in rules.iter().enumerate() {
                let action = ["allow", "deny", "allow tunnel", "redirect \"t\""][*action];
                text.push_str(&format!("  rule \"r{index}\" {{ {}  {action} }}\n", matchers.join("  ")));
            }
            text.push_str("}\n");
            text
        })
    }

    /// Run `cases` generated policies, 200 requests each, through both
    /// engines; return (policies lowered, refused by check, requests
    /// compared, decided by a rule).
    fn run_generated(strategy: impl Strategy<Value = String>, cases: u32, label: &str) -> (usize, usize) {
        use proptest::test_runner::{Config, TestRunner};
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let (policies, refused, compared, by_rule) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let mut runner = TestRunner::new(Config { cases, ..Config::default() });
        let result = runner.run(&(strategy, any::<u64>()), |(text, seed)| {
            // Some generated matchers are errors (an unmatchable pattern, say):
            // those policies are not lowered at all.
            let Some((checked, lowered)) = try_lowered(&text) else {
                refused.fetch_add(1, Relaxed);
                return Ok(());
            };
            policies.fetch_add(1, Relaxed);
            let policy = &checked.program().policies[0];
            let mut vocabulary = Vocabulary::of(policy);
            for extra in ["/a/b/c", "/aXb", "/a.b/c", "/x.b", "/b", "/p/a/q/b", "/a/x/y/c"] {
                vocabulary.paths.push(extra.as_bytes().to_vec());
            }
            for extra in ["A.COM", "a.com:80", "x.a.com.", "[::1]:8080", "b.com", "xcom"] {
                vocabulary.hosts.push(extra.as_bytes().to_vec());
            }
            // Values that hold several of the policy's values at once.
            let joined: Vec<u8> = vocabulary.values.iter().flat_map(|v| v.iter().copied().chain(*b" ")).collect();
            vocabulary.values.push(joined);
            let mut rng = Rng::new(seed);
            let mut mismatches = 0;
            for round in 0..200 {
                let request = vocabulary.request(&mut rng).bytes();
                let trailing: &[u8] = if round % 2 == 0 { b" " } else { b"" };
                if let Some(agreed) = compare(&checked, 0, &lowered.policies[0], &request, trailing) {
                    compared.fetch_add(1, Relaxed);
                    mismatches += usize::from(!agreed);
                    let connection = crate::lower_common::connection_for(&policy.scope).unwrap_or_default();
                    if let Some(Decision::Rule(_)) = crate::lower_common::reference(&checked, policy, connection, &request) {
                        by_rule.fetch_add(1, Relaxed);
                    }
                }
            }
            prop_assert_eq!(mismatches, 0, "policy:\n{}", text);
            Ok(())
        });
        println!(
            "{label}: {} policies lowered ({} refused by check), {} requests compared ({} decided by a rule)",
            policies.load(Relaxed),
            refused.load(Relaxed),
            compared.load(Relaxed),
            by_rule.load(Relaxed)
        );
        if let Err(error) = result {
            panic!("{error}");
        }
        (policies.load(Relaxed), refused.load(Relaxed))
    }

    #[test]
    fn generated_policies_decide_like_the_reference() {
        let (lowered, _) = run_generated(policy_text(), 400, "generated");
        assert!(lowered > 200, "too many generated policies were refused by check");
    }

    /// Many rules with a `contains` on one header each: the value
    /// automaton uses a sticky lane.
    fn contains_heavy_policy() -> impl Strategy<Value = String> {
        let word = proptest::string::string_regex("[a-cA-C ]{0,3}").unwrap_or_else(|e| panic!("{e}"));
        let rule = (proptest::collection::vec(word, 1..3), any::<bool>(), proptest::option::of(matcher(1)));
        proptest::collection::vec(rule, 5..14).prop_map(|rules| {
            let mut text = String::from("policy \"contains\" {\n  default allow\n");
            for (index, (words, nocase, other)) in rules.iter().enumerate() {
                let words: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
                let case = if *nocase { " nocase" } else { "" };
                let other = other.clone().unwrap_or_default();
                text.push_str(&format!("  rule \"r{index}\" {{ header \"x-a\" contains{case} [{}]  {other}  deny }}\n", words.join(", ")));
            }
            text.push_str("}\n");
            text
        })
    }

    #[test]
    fn generated_contains_heavy_policies_decide_like_the_reference() {
        let (lowered, _) = run_generated(contains_heavy_policy(), 150, "contains-heavy");
        assert!(lowered > 100, "too many generated policies were refused by check");
    }
}
