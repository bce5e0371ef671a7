//! The project's real policies check without errors: every conformance
//! policy (tests/conformance/*.toml, the text between `policy = '''` and
//! `'''`), the benchmark policy (shared/bench/api30.l7, copied below), the
//! examples and the standard library. The warnings they do produce are
//! recorded in a snapshot, so a lint that starts firing on them is seen. A
//! conformance policy that does not compile yet is left out only while
//! tests/conformance/PENDING.toml lists its whole file (see `pending`).

#[path = "../../tests/pending/mod.rs"]
mod pending;
#[path = "../../tests/support/mod.rs"]
mod support;

use l7c_compiler::driver::{compile_paths, compile_text, Compilation};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// shared/bench/api30.l7, the benchmark policy.
const API30: &str = r#"# The benchmark policy: 30 rules typical of a public API. The request the
# benchmark sends (GET /api/v1/users/123 with Host, User-Agent, X-Api-Key)
# passes through 15 rules before "user" allows it.
policy "bench-api" {
  default deny

  rule "no-trace"     { method TRACE, CONNECT, OPTIONS  deny }
  rule "no-delete"    { method DELETE  deny }
  rule "admin"        { path prefix ["/admin", "/internal", "/debug"]  deny }
  rule "dotfiles"     { path starts_with ["/.git", "/.env", "/.svn", "/.htaccess"]  deny }
  rule "scanners"     { header "user-agent" contains nocase ["sqlmap", "nikto", "masscan"]  deny }
  rule "host"         { not host exact ["localhost", "127.0.0.1", "api.example.com"]  deny }
  rule "debug-flag"   { header "x-debug" present  deny }
  rule "post-key"     { method POST  header "x-api-key" absent  deny }
  rule "post-json"    { method POST  not header "content-type" prefix "application/json"  deny }
  rule "put-key"      { method PUT, PATCH  header "x-api-key" absent  deny }
  rule "metrics"      { path prefix "/metrics"  deny }
  rule "grpc"         { header "content-type" prefix "application/grpc"  deny }
  rule "health"       { method GET, HEAD  path exact ["/healthz", "/readyz"]  allow }
  rule "favicon"      { method GET  path exact "/favicon.ico"  allow }
  rule "static"       { method GET, HEAD  path glob "/static/**"  allow }
  rule "user"         { method GET, HEAD  path glob "/api/v1/users/*"  allow }
  rule "users"        { method GET, HEAD  path prefix "/api/v1/users"  allow }
  rule "orders"       { method GET, HEAD  path prefix "/api/v1/orders"  allow }
  rule "create-order" { method POST  path exact "/api/v1/orders"  allow }
  rule "products"     { method GET, HEAD  path prefix "/api/v1/products"  allow }
  rule "reviews"      { method GET  path glob "/api/v1/products/*/reviews"  allow }
  rule "cart"         { method GET, PUT  path prefix "/api/v1/cart"  header "x-api-key" present  allow }
  rule "checkout"     { method POST  path exact "/api/v1/checkout"  allow }
  rule "search"       { method GET  path exact "/api/v1/search"  allow }
  rule "login"        { method POST  path exact "/auth/login"  allow }
  rule "logout"       { method POST  path exact "/auth/logout"  allow }
  rule "refresh"      { method POST  path exact "/auth/refresh"  header "authorization" present  allow }
  rule "webhook"      { method POST  path prefix "/hooks"  header "x-signature" present  allow }
  rule "tenant-api"   { path prefix "/api/v2"  header "x-tenant-id" present  allow }
  rule "options-cors" { method GET  path exact "/cors"  header "origin" present  allow }
}
"#;

fn repository() -> PathBuf {
    support::repository(env!("CARGO_MANIFEST_DIR"))
}

use support::files;

/// Assert there is no error; list the warnings as `name: code: message`.
fn warnings_of(name: &str, compilation: &Compilation, out: &mut String) {
    assert!(
        !compilation.diagnostics.has_errors(),
        "{name} has errors:\n{}",
        l7c_compiler::report::human(&compilation.diagnostics, &compilation.sources)
    );
    assert!(compilation.checked.is_some(), "{name} did not check");
    for d in compilation.diagnostics.iter() {
        let _ = writeln!(out, "{name}: {}", d.one_line(&compilation.sources).split_once(": ").map_or("", |(_, rest)| rest));
    }
}

#[test]
fn conformance_policies_have_no_errors() {
    let mut warnings = String::new();
    for case in pending::compiling_policies(env!("CARGO_MANIFEST_DIR")) {
        warnings_of(&case.file, &compile_text(&case.file, &case.policy, None), &mut warnings);
    }
    insta::assert_snapshot!("conformance_warnings", warnings);
}

#[test]
fn benchmark_policy_has_no_errors() {
    let mut warnings = String::new();
    warnings_of("api30.l7", &compile_text("api30.l7", API30, None), &mut warnings);
    insta::assert_snapshot!("api30_warnings", warnings);
    // The shared original, when this checkout sits beside it.
    let shared = Path::new("/work/shared/bench/api30.l7");
    if let Ok(text) = std::fs::read_to_string(shared) {
        let mut ignored = String::new();
        warnings_of("shared api30.l7", &compile_text("api30.l7", &text, None), &mut ignored);
    }
}

#[test]
fn examples_and_standard_library_have_no_errors() {
    let mut warnings = String::new();
    let root = repository();
    for dir in ["examples", "stdlib"] {
        for path in files(&root.join(dir), "l7") {
            let name = format!("{dir}/{}", path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let compilation = compile_paths(std::slice::from_ref(&path)).expect("readable");
            warnings_of(&name, &compilation, &mut warnings);
        }
    }
    // Examples change with the project: their warnings are shown, not pinned.
    println!("{warnings}");
}
