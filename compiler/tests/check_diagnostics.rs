//! One small policy per check and lint, compiled with `driver::compile_text`
//! and rendered as a person sees it (`report::human`, no colour): each
//! snapshot shows the file, line and column, the underlined source, the
//! code, the label and the help. Every case also asserts its code, so a
//! snapshot cannot silently lose the diagnostic it exists for.

use l7c_compiler::diagnostic::{codes, Severity};
use l7c_compiler::driver::compile_text;
use l7c_compiler::report;

/// Compile `source`, assert that `code` was reported with `severity`, and
/// return the human rendering.
fn render(code: &str, severity: Severity, source: &str) -> String {
    let compilation = compile_text("policy.l7", source, None);
    let found: Vec<(&str, Severity)> = compilation.diagnostics.iter().map(|d| (d.code, d.severity)).collect();
    assert!(found.contains(&(code, severity)), "expected {code} ({severity:?}), got {found:?}");
    if severity == Severity::Error {
        assert!(compilation.checked.is_none(), "an error must withhold `Checked`");
    }
    report::human(&compilation.diagnostics, &compilation.sources)
}

macro_rules! case {
    ($name:ident, $code:expr, $severity:expr, $source:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), render($code, $severity, $source));
        }
    };
}

use Severity::{Error, Warning};

case!(missing_default, codes::MISSING_DEFAULT, Error, r#"policy "p" {
  rule "r" { method GET  allow }
}
"#);

case!(duplicate_policy, codes::DUPLICATE_POLICY, Error, r#"policy "api" {
  scope remote port 80
  default deny
}
policy "api" {
  scope remote port 8080
  default deny
}
"#);

case!(duplicate_rule, codes::DUPLICATE_RULE, Error, r#"policy "p" {
  default deny
  rule "read" { method GET  path prefix "/a"  allow }
  rule "read" { method GET  path prefix "/b"  allow }
}
"#);

case!(overlapping_scopes, codes::OVERLAPPING_SCOPES, Error, r#"policy "public" {
  scope remote port 80, 8080
  default deny
}
policy "internal" {
  scope remote port 8080
  scope remote addr 10.0.0.0/8
  default allow
}
"#);

case!(overlapping_unscoped, codes::OVERLAPPING_SCOPES, Error, r#"policy "a" { default deny }
policy "b" { default allow }
"#);

case!(header_name_upper_case, codes::BAD_HEADER_NAME, Error, r#"policy "p" {
  default deny
  rule "key" { header "X-Api-Key" present  allow }
}
"#);

case!(header_name_not_a_token, codes::BAD_HEADER_NAME, Error, r#"policy "p" {
  default deny
  rule "key" { header "x api key" present  allow }
}
"#);

case!(unmatchable_empty_segment, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default allow
  rule "admin" { path prefix "/api//admin"  deny }
}
"#);

case!(unmatchable_dot_segment, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default allow
  rule "up" { path exact "/static/../etc/passwd"  deny }
}
"#);

case!(unmatchable_encoded_slash, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default allow
  rule "slash" { path prefix "/admin%2Fusers"  deny }
}
"#);

case!(unmatchable_semicolon, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default allow
  rule "matrix" { path exact "/login;jsessionid=1"  deny }
}
"#);

case!(unmatchable_relative, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default deny
  rule "api" { path prefix "api/v1"  allow }
}
"#);

case!(unmatchable_asterisk, codes::UNMATCHABLE_PATH, Error, r#"policy "p" {
  default deny
  rule "options" { method OPTIONS  path prefix "*"  allow }
}
"#);

case!(bad_glob, codes::BAD_GLOB, Error, r#"policy "p" {
  default deny
  rule "assets" { path glob "/static/**.css"  allow }
}
"#);

case!(bad_method, codes::BAD_METHOD, Error, r#"policy "p" {
  default deny
  rule "search" { method "M SEARCH"  allow }
}
"#);

case!(empty_list, codes::EMPTY_LIST, Error, r#"let BLOCKED = []
policy "p" {
  default allow
  rule "blocked" { path prefix BLOCKED  deny }
}
"#);

case!(empty_any, codes::EMPTY_LIST, Error, r#"policy "p" {
  default deny
  rule "roles" { any { }  allow }
}
"#);

case!(shadowed_by_prefix, codes::SHADOWED_RULE, Warning, r#"policy "p" {
  default deny
  rule "api"    { path prefix "/api"  allow }
  rule "delete" { method DELETE  path exact "/api/users"  deny }
}
"#);

case!(shadowed_by_catch_all, codes::SHADOWED_RULE, Warning, r#"policy "p" {
  default deny
  rule "all"  { allow }
  rule "read" { method GET  allow }
}
"#);

case!(prefix_bleed, codes::PREFIX_BLEED, Warning, r#"policy "p" {
  default deny
  rule "public" { method GET  path starts_with "/pub"  allow }
}
"#);

case!(empty_pattern, codes::EMPTY_PATTERN, Warning, r#"policy "p" {
  default deny
  rule "all" { method GET  path prefix ""  allow }
}
"#);

case!(literal_wildcard, codes::LITERAL_WILDCARD, Warning, r#"policy "p" {
  default deny
  rule "users" { method GET  path prefix "/users/*/orders"  allow }
}
"#);

case!(query_in_path, codes::QUERY_IN_PATH, Warning, r#"policy "p" {
  default allow
  rule "debug" { path exact "/search?debug=1"  deny }
}
"#);

case!(encoded_path, codes::ENCODED_PATH, Warning, r#"policy "p" {
  default allow
  rule "admin" { path prefix "/%61dmin"  deny }
}
"#);

case!(unmatchable_host_port, codes::UNMATCHABLE_HOST, Error, r#"policy "p" {
  default deny
  rule "api" { host exact "api.example.com:8443"  allow }
}
"#);

case!(unmatchable_host_scheme, codes::UNMATCHABLE_HOST, Error, r#"policy "p" {
  default deny
  rule "api" { host suffix "https://example.com"  allow }
}
"#);

case!(unmatchable_value, codes::UNMATCHABLE_VALUE, Error, r#"policy "p" {
  default deny
  rule "json" { header "content-type" exact "application/json "  allow }
}
"#);

case!(method_case, codes::METHOD_CASE, Warning, r#"policy "p" {
  default deny
  rule "read" { method "get"  allow }
}
"#);

case!(bad_redirect, codes::BAD_REDIRECT, Error, r#"policy "p" {
  default deny
  rule "grpc" { header "content-type" prefix "application/grpc"  redirect "" }
}
"#);

case!(unused_let, codes::UNUSED_LET, Warning, r#"let OLD = ["/old"]
policy "p" { default deny }
"#);

case!(several_at_once, codes::SHADOWED_RULE, Warning, r#"policy "p" {
  default deny
  rule "get"   { method GET  allow }
  rule "get-a" { method GET  path exact "/a"  allow }
  rule "Key"   { header "X-Key" present  allow }
}
"#);

/// A related span in another file is named in the help, with its place.
#[test]
fn related_span_in_another_file() {
    let dir = std::env::temp_dir().join(format!("l7c-check-related-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let a = dir.join("a.l7");
    let b = dir.join("b.l7");
    std::fs::write(&a, "policy \"a\" {\n  default deny\n}\n").expect("write a.l7");
    std::fs::write(&b, "policy \"b\" {\n  default deny\n}\n").expect("write b.l7");
    let compilation = l7c_compiler::driver::compile_paths(&[a, b]).expect("readable");
    let _ = std::fs::remove_dir_all(&dir);
    let text = report::human(&compilation.diagnostics, &compilation.sources);
    assert!(text.contains("l7::check::overlapping-scopes"), "{text}");
    assert!(text.contains("the other policy at ") && text.contains("a.l7:1:8"), "{text}");
    assert!(text.trim_end().ends_with("1 error, 0 warnings"), "{text}");
}

/// A clean policy renders as the summary line alone.
#[test]
fn clean_policy() {
    let compilation = compile_text("policy.l7", "policy \"p\" {\n  default deny\n  rule \"r\" { method GET  path prefix \"/a\"  allow }\n}\n", None);
    assert!(compilation.checked.is_some());
    assert_eq!(report::human(&compilation.diagnostics, &compilation.sources), "0 errors, 0 warnings\n");
}
