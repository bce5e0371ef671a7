//! The shadowed-rule lint, case by case: rules it must report (every
//! request the later rule matches is matched first by an earlier one) and
//! rules it must not (some request reaches the later rule). A false
//! positive is worse than a missed lint, so the negative cases include
//! near misses of every positive one.

use l7c_compiler::diagnostic::codes;
use l7c_compiler::driver::compile_text;

/// `(shadowed rule, earlier rule that shadows it)` for every shadowed-rule
/// warning of a policy whose rules are `rules`.
fn shadowed(rules: &str) -> Vec<(String, String)> {
    let source = format!("import \"std/http\"\npolicy \"p\" {{\n  default deny\n{rules}\n}}\n");
    let compilation = compile_text("shadow.l7", &source, None);
    assert!(!compilation.diagnostics.has_errors(), "{:#?}", compilation.diagnostics);
    compilation
        .diagnostics
        .iter()
        .filter(|d| d.code == codes::SHADOWED_RULE)
        .map(|d| {
            let name = |text: &str| text.split('`').nth(1).unwrap_or_default().to_string();
            (name(&d.message), name(d.label.as_deref().unwrap_or_default()))
        })
        .collect()
}

fn pair(later: &str, earlier: &str) -> Vec<(String, String)> {
    vec![(later.to_string(), earlier.to_string())]
}

#[track_caller]
fn assert_shadowed(rules: &str) {
    assert_eq!(shadowed(rules), pair("b", "a"), "{rules}");
}

#[track_caller]
fn assert_not_shadowed(rules: &str) {
    assert_eq!(shadowed(rules), vec![], "{rules}");
}

#[test]
fn an_earlier_rule_without_matchers_shadows_everything_after_it() {
    assert_eq!(
        shadowed(r#"rule "a" { deny }  rule "b" { method GET  allow }  rule "c" { path prefix "/x"  allow }"#),
        vec![("b".to_string(), "a".to_string()), ("c".to_string(), "a".to_string())]
    );
}

#[test]
fn identical_conditions() {
    assert_shadowed(r#"rule "a" { method GET  path prefix "/api"  allow }  rule "b" { method GET  path prefix "/api"  deny }"#);
    assert_shadowed(r#"rule "a" { header "x" exact "1"  allow }  rule "b" { header "x" exact "1"  deny }"#);
}

#[test]
fn method_sets() {
    assert_shadowed(r#"rule "a" { method GET, HEAD  allow }  rule "b" { method GET  path exact "/x"  deny }"#);
    assert_shadowed(r#"rule "a" { method READ  allow }  rule "b" { method HEAD  deny }"#);
    assert_not_shadowed(r#"rule "a" { method GET  allow }  rule "b" { method GET, POST  deny }"#);
    assert_not_shadowed(r#"rule "a" { method GET  allow }  rule "b" { path exact "/x"  deny }"#);
    // Methods are case-sensitive.
    assert_not_shadowed(r#"rule "a" { method GET  allow }  rule "b" { method "GETX"  deny }"#);
}

#[test]
fn path_subsumption() {
    assert_shadowed(r#"rule "a" { path prefix "/api"  allow }  rule "b" { path exact "/api/x"  deny }"#);
    assert_shadowed(r#"rule "a" { path prefix "/api"  allow }  rule "b" { path exact "/api"  deny }"#);
    assert_shadowed(r#"rule "a" { path prefix "/api"  allow }  rule "b" { path prefix "/api/v1"  deny }"#);
    assert_shadowed(r#"rule "a" { path prefix "/api/"  allow }  rule "b" { path starts_with "/api/v"  deny }"#);
    assert_shadowed(r#"rule "a" { path starts_with "/ap"  deny }  rule "b" { path prefix "/api"  allow }"#);
    assert_shadowed(r#"rule "a" { path glob "/static/**"  allow }  rule "b" { path prefix "/static/css"  deny }"#);
    assert_shadowed(r#"rule "a" { path glob "/users/*"  allow }  rule "b" { path exact "/users/7"  deny }"#);
    assert_shadowed(r#"rule "a" { path suffix ".css"  allow }  rule "b" { path glob "/static/**/*.css"  deny }"#);
    assert_shadowed(r#"rule "a" { path prefix "/static"  allow }  rule "b" { path glob "/static/*/x"  deny }"#);
    // Every value of the later list must be covered, by any of the earlier.
    assert_shadowed(r#"rule "a" { path prefix ["/a", "/b"]  allow }  rule "b" { path exact ["/a/1", "/b/2"]  deny }"#);
}

#[test]
fn path_near_misses() {
    assert_not_shadowed(r#"rule "a" { path prefix "/api"  allow }  rule "b" { path exact "/apix"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path prefix "/api/"  allow }  rule "b" { path exact "/api"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path prefix "/api"  allow }  rule "b" { path starts_with "/api"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path prefix "/api/v1"  allow }  rule "b" { path prefix "/api"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path glob "/users/*"  allow }  rule "b" { path exact "/users/"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path glob "/users/*"  allow }  rule "b" { path exact "/users/7/x"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path glob "/api/*/x"  allow }  rule "b" { path prefix "/api"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path exact "/a"  allow }  rule "b" { path prefix "/a"  deny }"#);
    assert_not_shadowed(r#"rule "a" { path prefix ["/a", "/b"]  allow }  rule "b" { path exact ["/a/1", "/c"]  deny }"#);
    assert_not_shadowed(r#"rule "a" { path suffix ".css"  allow }  rule "b" { path glob "/static/**"  deny }"#);
}

#[test]
fn headers_and_hosts() {
    assert_shadowed(r#"rule "a" { header "x" present  allow }  rule "b" { header "x" contains "y"  deny }"#);
    assert_shadowed(r#"rule "a" { header "ct" prefix "application/"  allow }  rule "b" { header "ct" exact "application/json"  deny }"#);
    assert_shadowed(r#"rule "a" { header "ct" prefix "application/grpc"  allow }  rule "b" { header "ct" prefix "application/grpc-web"  deny }"#);
    assert_shadowed(r#"rule "a" { header "ua" contains nocase "BOT"  deny }  rule "b" { header "ua" prefix "googlebot"  allow }"#);
    assert_shadowed(r#"rule "a" { header "t" exact nocase "ACME"  allow }  rule "b" { header "t" exact "acme"  deny }"#);
    assert_shadowed(r#"rule "a" { host suffix ".example.com"  allow }  rule "b" { host exact "api.example.com"  deny }"#);
    assert_shadowed(r#"rule "a" { header "x" absent  allow }  rule "b" { header "x" absent  method GET  deny }"#);
}

#[test]
fn header_near_misses() {
    assert_not_shadowed(r#"rule "a" { header "x" exact "a"  allow }  rule "b" { header "x" present  deny }"#);
    assert_not_shadowed(r#"rule "a" { header "x" present  allow }  rule "b" { header "y" present  deny }"#);
    // A case-insensitive later matcher accepts spellings the earlier refuses.
    assert_not_shadowed(r#"rule "a" { header "t" exact "acme"  allow }  rule "b" { header "t" exact nocase "acme"  deny }"#);
    assert_not_shadowed(r#"rule "a" { header "ct" prefix "application/grpc-web"  allow }  rule "b" { header "ct" prefix "application/grpc"  deny }"#);
    assert_not_shadowed(r#"rule "a" { header "x" contains "ab"  allow }  rule "b" { header "x" prefix "a"  deny }"#);
    assert_not_shadowed(r#"rule "a" { host exact "example.com"  allow }  rule "b" { host suffix "example.com"  deny }"#);
}

#[test]
fn any_groups() {
    // The later rule's condition implies one member of the earlier group.
    assert_shadowed(r#"rule "a" { any { header "a" present  header "b" present }  allow }  rule "b" { header "b" exact "1"  deny }"#);
    // Every member of the later group implies the earlier condition.
    assert_shadowed(r#"rule "a" { path prefix "/x"  allow }  rule "b" { any { path exact "/x/1"  path exact "/x/2" }  deny }"#);
    assert_shadowed(r#"rule "a" { any { method GET  method HEAD }  allow }  rule "b" { any { method HEAD  method GET }  deny }"#);
    assert_not_shadowed(r#"rule "a" { path prefix "/x"  allow }  rule "b" { any { path exact "/x/1"  path exact "/y" }  deny }"#);
    assert_not_shadowed(r#"rule "a" { any { header "a" present  header "b" present }  allow }  rule "b" { header "c" present  deny }"#);
}

#[test]
fn negations() {
    // `not present` is `absent`, and the other way round.
    assert_shadowed(r#"rule "a" { header "x" absent  allow }  rule "b" { not header "x" present  deny }"#);
    assert_shadowed(r#"rule "a" { not header "x" present  allow }  rule "b" { header "x" absent  deny }"#);
    assert_shadowed(r#"rule "a" { not not method GET  allow }  rule "b" { method GET  deny }"#);
    // A matcher disjoint from the negated one implies the `not`.
    assert_shadowed(r#"rule "a" { not method POST  deny }  rule "b" { method GET  allow }"#);
    assert_shadowed(r#"rule "a" { not path prefix "/admin"  allow }  rule "b" { path exact "/public"  deny }"#);
    assert_shadowed(r#"rule "a" { not host exact ["a.test", "b.test"]  deny }  rule "b" { host exact "c.test"  allow }"#);
    assert_shadowed(r#"rule "a" { not header "x" present  allow }  rule "b" { not header "x" exact "1"  header "x" absent  deny }"#);
    // Contraposition: `not y` implies `not x` when `x` implies `y`.
    assert_shadowed(r#"rule "a" { not path exact "/a/b"  allow }  rule "b" { not path prefix "/a"  deny }"#);
    assert_shadowed(r#"rule "a" { not header "x" exact "1"  allow }  rule "b" { header "x" absent  deny }"#);
}

#[test]
fn negation_near_misses() {
    assert_not_shadowed(r#"rule "a" { not method POST  deny }  rule "b" { method GET, POST  allow }"#);
    assert_not_shadowed(r#"rule "a" { not path prefix "/admin"  allow }  rule "b" { path exact "/admin/x"  deny }"#);
    assert_not_shadowed(r#"rule "a" { not header "x" present  allow }  rule "b" { header "y" absent  deny }"#);
    assert_not_shadowed(r#"rule "a" { not path prefix "/a"  allow }  rule "b" { not path exact "/a/b"  deny }"#);
    // Both hold only together with different methods.
    assert_not_shadowed(r#"rule "a" { header "x" present  method POST  allow }  rule "b" { not header "x" absent  method GET  deny }"#);
    assert_shadowed(r#"rule "a" { header "x" present  allow }  rule "b" { not header "x" absent  method GET  deny }"#);
    // `not` of something unrelated proves nothing.
    assert_not_shadowed(r#"rule "a" { method GET  allow }  rule "b" { not method POST  deny }"#);
}

#[test]
fn conjunctions() {
    // Every earlier condition must follow from the later rule.
    assert_shadowed(r#"rule "a" { method GET  path prefix "/api"  allow }  rule "b" { path exact "/api/x"  method GET  header "k" present  deny }"#);
    assert_not_shadowed(r#"rule "a" { method GET  path prefix "/api"  allow }  rule "b" { path exact "/api/x"  deny }"#);
}

#[test]
fn only_the_first_shadowing_rule_is_named() {
    assert_eq!(
        shadowed(r#"rule "a" { method GET  allow }  rule "a2" { method GET, HEAD  allow }  rule "b" { method GET  path exact "/x"  deny }"#),
        vec![("b".to_string(), "a".to_string())],
    );
}

#[test]
fn examples_from_the_spec_are_not_shadowed() {
    // grpc-web must come first: its content type also starts with
    // application/grpc (examples/grpc-redirect.l7).
    assert_not_shadowed(
        r#"rule "a" { method POST  header "content-type" prefix "application/grpc-web"  allow }
           rule "b" { method POST  header "content-type" prefix "application/grpc"  allow }"#,
    );
    assert_shadowed(
        r#"rule "a" { method POST  header "content-type" prefix "application/grpc"  allow }
           rule "b" { method POST  header "content-type" prefix "application/grpc-web"  allow }"#,
    );
}
