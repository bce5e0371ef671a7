//! Large generated policies lower in reasonable time, and their tables stay
//! within the documented bounds (every automaton under `MAX_STATES`, so a
//! state fits a `u16`). The sizes and times are printed (`--nocapture`)
//! and recorded in docs/lowering.md.
//!
//! The policy of N rules looks like a large API's: per service a prefix,
//! exact paths, globs with `*` and `**`, some method sets, a tenant header
//! matched by value, hosts by suffix, and a few suffix rules.

mod lower_common;

/// Inside `lower` so that `cargo test -p l7c-compiler lower` runs them.
mod lower {

    use l7c_compiler::lower;
    use std::fmt::Write as _;
    use std::time::Instant;

    pub fn scale_policy(rules: usize) -> String {
        let mut text = String::from("policy \"scale\" {\n  default deny\n");
        let methods = ["GET", "GET, HEAD", "POST", "PUT, PATCH", "DELETE"];
        for index in 0..rules {
            let service = index / 10;
            let method = methods[index % methods.len()];
            let matcher = match index % 10 {
                0 => format!("path prefix \"/api/v{}/svc{service}\"", service % 3),
                1 => format!("method {method}  path exact \"/api/v{}/svc{service}/items\"", service % 3),
                2 => format!("method {method}  path glob \"/api/v{}/svc{service}/items/*\"", service % 3),
                3 => format!("path glob \"/static/svc{service}/**\"  header \"x-tenant\" exact \"t{}\"", index % 50),
                4 => format!("method {method}  path exact [\"/svc{service}/a\", \"/svc{service}/b\"]  header \"x-api-key\" present"),
                5 => format!("path starts_with \"/files/svc{service}/\"  not header \"x-debug\" present"),
                6 => format!("host suffix \".svc{service}.example.com\"  path prefix \"/internal\""),
                7 => format!("method {method}  path glob \"/api/v{}/svc{service}/*/orders/*\"", service % 3),
                8 => format!("any {{ path exact \"/health/svc{service}\"  header \"x-svc\" exact \"svc{service}\" }}"),
                _ => format!("path suffix \".ext{}\"  method GET", service % 20),
            };
            let action = if index % 7 == 0 { "deny" } else { "allow" };
            let _ = writeln!(text, "  rule \"r{index}\" {{ {matcher}  {action} }}");
        }
        text.push_str("}\n");
        text
    }

    fn lower_and_report(rules: usize) -> (lower::Lowered, String) {
        let text = scale_policy(rules);
        let started = Instant::now();
        let checked = crate::lower_common::checked("scale.l7", &text, None);
        let checked_after = started.elapsed();
        let lowered = lower::lower(&checked).unwrap_or_else(|e| panic!("{rules} rules: {e}"));
        let lowered_after = started.elapsed() - checked_after;
        let report = lowered.report();
        println!("{rules} rules: check {checked_after:?}, lower {lowered_after:?}\n{report}");
        for policy in &lowered.policies {
            let automata = policy
                .path
                .lanes
                .iter()
                .chain(std::iter::once(&policy.methods.automaton))
                .chain(std::iter::once(&policy.headers.names.automaton))
                .chain(policy.headers.headers.iter().filter_map(|slot| slot.values.as_ref()).flat_map(|v| &v.lanes));
            for automaton in automata {
                assert!(automaton.state_count as usize <= lower::MAX_STATES);
                assert_eq!(automaton.state_bytes(), 2);
            }
        }
        (lowered, report)
    }

    #[test]
    fn ten_and_a_hundred_rules() {
        lower_and_report(10);
        lower_and_report(100);
    }

    #[test]
    fn a_thousand_rules() {
        let (lowered, _) = lower_and_report(1_000);
        let policy = &lowered.policies[0];
        // Rules are indexed by the patterns they need: a request walks only the
        // rules its path (or host, or value) can satisfy. The longest list is
        // the suffix `.extN`, shared by one service in 20.
        assert!(policy.path.guarded_rules.largest() <= 1_000 / 200);
        assert!(policy.decision.unguarded.is_empty());
    }

    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "about 200 s in a debug build (regex-automata unoptimized), 8 s in release: cargo test --release -p l7c-compiler --test lower_scale"
    )]
    fn ten_thousand_rules() {
        let (lowered, _) = lower_and_report(10_000);
        let policy = &lowered.policies[0];
        assert_eq!(policy.decision.rules.len(), 10_000);
        assert!(policy.path.guarded_rules.largest() <= 10_000 / 200);
        assert!(policy.decision.unguarded.is_empty());
    }
}
