//! How long the front end (parse, resolve, check with every lint) takes on
//! generated policies of 10, 100 and 1,000 rules. Target (issue 2): a
//! 1,000-rule policy in under 100 ms. Figures go to docs/BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use l7c_compiler::driver::compile_text;
use std::fmt::Write;

/// A policy of `rules` rules in the mix a real API policy has: methods,
/// exact paths, prefixes, globs, header tests, `any`, `not`.
pub fn generated_policy(rules: usize) -> String {
    let mut text = String::from("import \"std/http\"\n\npolicy \"generated\" {\n  default deny\n");
    for i in 0..rules {
        let rule = match i % 6 {
            0 => format!("rule \"r{i}\" {{ method READ  path prefix \"/svc{i}/items\"  allow }}"),
            1 => format!("rule \"r{i}\" {{ method POST  path exact \"/svc{i}/orders\"  header \"x-api-key\" present  allow }}"),
            2 => format!("rule \"r{i}\" {{ method GET  path glob \"/svc{i}/users/*/orders\"  allow }}"),
            3 => format!(
                "rule \"r{i}\" {{ path prefix \"/svc{i}/admin\"  any {{ header \"x-role\" exact \"admin\"  header \"x-role\" exact \"ops\" }}  allow }}"
            ),
            4 => format!("rule \"r{i}\" {{ path prefix \"/svc{i}/internal\"  not header \"x-internal\" present  deny }}"),
            _ => format!("rule \"r{i}\" {{ method PUT, PATCH  path prefix \"/svc{i}/v2\"  header \"content-type\" prefix \"application/json\"  allow }}"),
        };
        let _ = writeln!(text, "  {rule}");
    }
    text.push_str("}\n");
    text
}

fn check(c: &mut Criterion) {
    let mut group = c.benchmark_group("check");
    group.sample_size(20);
    for rules in [10usize, 100, 1000] {
        let text = generated_policy(rules);
        // The benchmark is only meaningful on a policy that checks clean.
        let compilation = compile_text("generated.l7", &text, None);
        assert!(compilation.checked.is_some(), "{:?}", compilation.diagnostics);
        group.bench_with_input(BenchmarkId::from_parameter(rules), &text, |b, text| {
            b.iter(|| compile_text("generated.l7", text, None))
        });
    }
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
