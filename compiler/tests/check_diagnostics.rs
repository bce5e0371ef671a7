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

case!(deny_with_status_out_of_range, codes::DENY_WITH_STATUS, Error, r#"policy "p" {
  default deny
  deny_with 302
}
"#);

case!(deny_with_twice, codes::DUPLICATE_SETTING, Error, r#"policy "p" {
  default deny
  deny_with 451
  deny_with reset
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

case!(unknown_method_typo, codes::UNKNOWN_METHOD, Warning, r#"policy "p" {
  default deny
  rule "read" { method GTE  allow }
}
"#);

case!(unknown_method_near_list, codes::UNKNOWN_METHOD, Warning, r#"import "std/http"
policy "p" {
  default deny
  rule "write" { method WRITES  deny }
}
"#);

case!(unknown_method_unregistered, codes::UNKNOWN_METHOD, Warning, r#"policy "p" {
  default deny
  rule "tea" { method BREW  deny }
}
"#);

case!(missing_import_method_list, codes::MISSING_IMPORT, Error, r#"policy "p" {
  default deny
  rule "x" { method WRITE  deny }
}
"#);

case!(missing_import_path_list, codes::MISSING_IMPORT, Error, r#"policy "p" {
  default allow
  rule "secrets" { path prefix SECRETS  deny }
}
"#);

case!(parse_expected_in_words, codes::PARSE, Error, r#"policy "p" {
  default deny  # a comment before the mistake
  rule "r" { method GET POST  allow }
}
"#);

case!(keyword_did_you_mean, codes::PARSE, Error, r#"policy "p" {
  defualt deny
  rule "r" { method GET  allow }
}
"#);

case!(unclosed_brace_before_next_rule, codes::UNCLOSED_DELIMITER, Error, r#"policy "p" {
  default deny
  rule "read" { method GET  allow
  rule "write" { method POST  deny }
}
"#);

case!(unclosed_brace_at_end_of_file, codes::UNCLOSED_DELIMITER, Error, r#"policy "p" {
  default deny
  rule "read" { method GET  allow }
"#);

case!(unterminated_string, codes::UNTERMINATED_STRING, Error, r#"policy "p" {
  default deny
  rule "api" { path prefix "/api  allow }
}
"#);

/// The codes a compilation reported, in order.
fn codes_of(source: &str) -> (Vec<&'static str>, String) {
    let compilation = compile_text("policy.l7", source, None);
    let found = compilation.diagnostics.iter().map(|d| d.code).collect();
    (found, report::human(&compilation.diagnostics, &compilation.sources))
}

/// A parse error never names a grammar rule (`COMMENT`, `kw_deny`).
#[test]
fn parse_errors_use_human_names() {
    for source in ["policy \"p\" { default maybe }", "policy \"p\" {\n # c\n default deny rule \"r\" { method GET, allow } }", "let X = [\"a\" \"b\"]"] {
        let (found, text) = codes_of(source);
        assert_eq!(found, vec![codes::PARSE], "{text}");
        assert!(!text.contains("COMMENT") && !text.contains("kw_"), "{text}");
    }
}

/// Errors after a resolution error are reported too: an unknown name does
/// not hide a missing `default`, an upper-case header name or a test that
/// names no rule; and the rule with the unknown name is not judged further
/// (no follow-on `empty-list` or `shadowed-rule`).
#[test]
fn errors_after_resolution_errors() {
    let source = r#"let ADMIN = ["/admin"]
policy "p" {
  rule "admin" { path prefix ADMN  deny }
  rule "all"   { path prefix ["/admin", "/docs"]  allow }
  rule "key"   { header "X-Key" present  allow }
}
test "t" {
  send "GET / HTTP/1.1\r\nHost: a\r\n\r\n" expect deny "admn"
}
"#;
    let (found, text) = codes_of(source);
    assert_eq!(
        found,
        vec![codes::MISSING_DEFAULT, codes::UNKNOWN_NAME, codes::BAD_HEADER_NAME, codes::UNKNOWN_TEST_RULE],
        "{text}"
    );
    insta::assert_snapshot!("errors_after_resolution_errors", text);
}

/// One mistake, one error: a misspelled import is reported once, not again
/// at every name it would have defined.
#[test]
fn no_cascade_from_a_failed_import() {
    let source = r#"import "std/htp"
policy "p" {
  default deny
  rule "read"  { method READ  allow }
  rule "admin" { path prefix ADMIN  deny }
  rule "key"   { header "X-Key" present  allow }
}
"#;
    let (found, text) = codes_of(source);
    assert_eq!(found, vec![codes::IMPORT_NOT_FOUND, codes::BAD_HEADER_NAME], "{text}");
    insta::assert_snapshot!("no_cascade_from_a_failed_import", text);
}

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
