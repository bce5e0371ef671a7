//! Snapshots of the lowered IR (`listing`) and of the size report
//! (`report`) for the examples: a change in what a policy lowers to shows up
//! in review.

mod lower_common;

/// Inside `lower` so that `cargo test -p l7c-compiler lower` runs them.
mod lower {

    use l7c_compiler::lower;
    use std::path::Path;

    fn example(name: &str) -> lower::Lowered {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let checked = crate::lower_common::checked(name, &text, Some(&dir));
        lower::lower(&checked).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn everything(lowered: &lower::Lowered) -> String {
        let listings: Vec<String> = lowered.policies.iter().map(|policy| policy.listing()).collect();
        format!("{}\n{}", listings.join("\n"), lowered.report())
    }

    #[test]
    fn static_site() {
        insta::assert_snapshot!(everything(&example("static-site.l7")));
    }

    #[test]
    fn payments() {
        insta::assert_snapshot!(everything(&example("payments.l7")));
    }

    #[test]
    fn multi_tenant() {
        insta::assert_snapshot!(everything(&example("multi-tenant.l7")));
    }
}
