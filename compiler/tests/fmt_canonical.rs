//! `l7c fmt`'s engine, [`format_source`], tested from the outside:
//!
//! - snapshots of the canonical layout for inputs that cover every construct
//!   of the language, messy spacing, comments in every position, long rules
//!   and test blocks (`tests/snapshots/fmt_canonical__*.snap`);
//! - for those inputs, every `.l7` file under `examples/` and `stdlib/`, and
//!   every `policy = '''...'''` of the conformance cases: formatting is
//!   idempotent, keeps the meaning (equal ASTs, spans ignored) and keeps
//!   every comment (equal multisets of comment texts);
//! - the same three properties for those sources with comments inserted at
//!   random token boundaries, and that spaces and line breaks inserted there
//!   change nothing unless they make a blank line or move a comment to a
//!   line of its own (proptest).
//!
//! The conformance policies are the repository's copies (tests/conformance/);
//! one that does not compile yet is left out only while PENDING.toml lists
//! its file as a whole (see `pending`).

#[path = "../../tests/pending/mod.rs"]
mod pending;

use l7c_compiler::fmt::{format_source, FormatError};
use l7c_compiler::source::FileId;
use l7c_compiler::syntax::parse as parse_ast;
use l7c_compiler::syntax::parse::{parse_tree, G};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ------------------------------------------------------------ inputs

/// The example of language.md §3, as written there.
const SPEC_EXAMPLE: &str = r#"import "std/http"            # a stdlib module (shipped inside the binary)
import "./common.l7"         # a file relative to this one

let ADMIN  = ["/admin", "/internal"]  # a named list of strings
let BACKUP = [GET, HEAD, "PROPFIND"]  # a named list of methods (READ comes from std/http)

policy "payments" {
  scope remote port 8080, 8443        # optional: which connections it governs
  default deny                        # required: verdict when no rule matches
  mode enforce                        # enforce (default) | audit
  opaque deny                         # deny (default) | allow: streams that are not HTTP/1.x
  limits { header_bytes 8KiB  headers 64 }

  rule "list-users" {
    method READ
    path prefix "/api/v1/users"
    allow
  }

  rule "create-payment" {
    method POST
    path exact "/api/v1/payments"
    header "x-api-key" present
    header "content-type" exact "application/json"
    allow
  }

  rule "admin" { path prefix ADMIN  deny  log }

  rule "grpc" {
    header "content-type" prefix "application/grpc"
    redirect "envoy"
  }

  rule "websocket" {
    path exact "/ws"
    header "upgrade" exact nocase "websocket"
    allow tunnel
  }
}

test "payments" {
  remote port 8080
  send "GET /api/v1/users/7 HTTP/1.1\r\nHost: pay\r\n\r\n"       expect allow "list-users"
  send "DELETE /admin/x HTTP/1.1\r\nHost: pay\r\n\r\n"           expect deny "admin"
  send "GET /api/v1/users HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
                                                                  expect [allow "list-users", deny "admin"]
}
"#;

/// Every construct of the language at least once.
const EVERY_CONSTRUCT: &str = r#"import "std/http"
import "std/sensitive"
let READS = [GET, HEAD, "M.SEARCH"]
let NESTED = [READS, ["/a", "/b"], []]
policy "all" {
  scope remote port 80, 443
  scope remote addr 10.0.0.0/8, "192.168.0.0/16", ::1/128, ::ffff:10.0.0.0/104
  scope local port 8080
  default allow
  mode audit
  opaque allow
  deny_with 451
  limits { header_bytes 16KiB headers 100 }
  limits {}
  rule "method-list" { method READS allow }
  rule "method-literal" { method [GET, "PROPFIND"] deny }
  rule "paths" { path exact "/e" path prefix "/p" path starts_with "/s" path suffix ".x" path glob "/g/**/*.css" deny log }
  rule "headers" { header "a" present header "b" absent header "c" exact "v" header "d" prefix nocase "v", "w" header "e" suffix "v" header "f" contains nocase NESTED allow tunnel }
  rule "hosts" { host exact "a.example" host suffix ".example.com" redirect "envoy" }
  rule "ingress" { redirect "local" ingress log }
  rule "negations" { not method GET not not path prefix "/x" not any { host exact "a" host exact "b" } any {} allow tunnel log }
  rule "ünïcödé" { header "x-naïve" exact "çà va, ünïcödé"  host suffix ".bücher.example" allow }
  rule "nested-any" { any { any { method GET method HEAD } not header "x" present } deny }
}
policy "empty" {}
policy "quiet" { deny_with   reset }
test "all" {
  remote port 443
  remote addr 10.1.2.3
  remote addr "::1"
  local port 8080
  bind "envoy", "local"
  send "GET / HTTP/1.1\r\nHost: a\r\n\r\n" expect allow "method-list"
  send "GET / HTTP/1.1\r\n" split 3, 4 expect pending
  send "X" expect deny malformed:method
  send "\x16\x03\x01" expect tunnel opaque
  send "" expect []
  send "a" "b" "c" expect [deny limit, deny malformed, deny limit:headers, redirect "hosts", deny redirect-unbound, deny tunnel, deny default, tunnel "negations", pending]
}
test "empty" {}
"#;

/// The same kind of file written with no care for spacing: everything on
/// few lines, tabs, CRLF line ends, many blank lines.
const MESSY_SPACING: &str = "import \"std/http\" import\t\"./x.l7\"\r\n\r\n\r\n\r\nlet A=[\"/a\",\"/b\" ,]let B = [  ]\r\npolicy\"p\"{default deny mode\taudit rule \"r\"{method GET,HEAD path prefix A allow}\r\n\r\n\r\n\r\n   rule \"s\"\r\n{\r\n\r\n  \tdeny\r\n\r\n}limits{headers 3}}\r\ntest \"t\"{remote port 80 send\"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n\"\"x\"split 1,2,3expect[allow\"r\",deny]send \"y\" expect deny\r\n}\r\n\r\n\r\n";

/// A comment in every position the grammar allows one.
const COMMENTS_EVERYWHERE: &str = r#"#!/usr/bin/env l7c
# File header, then a blank line.

# About the imports.
import # inside an import
  "std/http" # after an import
import "./b.l7"


# About the lets, after two blank lines.
let # after let
  X # after the name
  = # after =
  [ # after [
    "a", # after a
    # before b
    "b" # after b without comma
    , "c"
    # before ]
  ] # after ]
let Y = [GET] # short list stays short

policy # between policy and its name
  "p" # between the name and {
{ # after {
  # before scope
  scope # inside scope
    remote port 80, # between ports
    443 # after scope
  default # between default and deny
    deny
  limits { header_bytes 8KiB # after an entry
    headers 64 }
  limits { headers 1 } # after limits

  # before a rule, after a blank line
  rule "short" { allow } # trailing a one-line rule
  rule # after rule
    "r" # after the rule name
  { # after the rule's {
    method GET # after method
    path # between path and prefix
      prefix # between prefix and its value
      "/a"
    header "x" # between name and test
      exact nocase # between nocase and value
      "v"
    any { # after any's {
      method GET # inside any
      # before any's }
    } # after any
    not # between not and its matcher
      any { method HEAD }
    allow # between allow and log
      log # after log
    # before the rule's }
  } # after the rule's }
  rule "redirect" { redirect # between redirect and target
    "t" # between target and ingress
    ingress }
  # before the policy's }
} # after the policy

test "t" { # after test's {
  remote # inside remote port
    port 80
  bind "a", # between bind targets
    "b"
  send # between send and its string
    "GET / HTTP/1.1\r\n" # after the first string
    # between strings
    "Host: a\r\n\r\n" # after the last string
    split # inside split
      1, 2
    expect # between expect and the verdict
      allow # between action and reason
      "r" # after the send
  send "x" expect [ # after expect's [
    deny # in an expectation
    , pending # after pending
  ]
  send "y" expect deny # a verdict without reason
  # before test's }
}
# the end of the file

# really the end
"#;

/// Rules, lists and sends that do not fit in 100 columns.
const LONG_LINES: &str = r#"let SENSITIVE = ["/.git", "/.env", "/actuator", "/server-status", "/wp-admin", "/phpmyadmin", "/.aws"]
let NESTED = [["/one/very/long/path/segment/number/one", "/one/very/long/path/segment/number/two"], ["/x"]]
policy "long" {
  default deny
  rule "fits-exactly" { path prefix "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  allow }
  rule "one-column-too-many" { path prefix "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"  allow }
  rule "many-matchers" { method GET, HEAD, OPTIONS path prefix "/api/v1/users" header "x-api-key" present allow }
  rule "long-any" { any { header "x-role" exact "support" header "x-role" exact "admin" header "x-role" exact "operator" } allow }
  rule "long-literal" { path prefix ["/api/v1/users", "/api/v1/payments", "/api/v1/orders", "/api/v1/invoices", "/api/v1/refunds"] deny }
  rule "unbreakable-matcher" { header "content-type" exact "application/vnd.example.payments.v1+json; charset=utf-8; profile=strict" allow }
}
test "long" {
  send "GET /api/v1/users/7 HTTP/1.1\r\nHost: payments.internal.example.com\r\nAccept: application/json\r\n\r\n" expect allow "many-matchers"
  send "GET /a HTTP/1.1\r\nHost: a\r\n\r\n" expect [allow "many-matchers", allow "many-matchers", deny "long-literal", deny default]
}
"#;

/// Test blocks in their variety.
const TEST_BLOCKS: &str = r#"test "pipelined" {
  remote port 8080
  send "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
       "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
       "GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
       expect [allow "a", allow "b", deny "c"]
  send "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" split 10, 10, 1 expect allow "upload"

  local port 443
  send "GET /x HTTP/1.1\r\n"   expect pending
  send "\x16\x03\x01\x02\x00" expect tunnel opaque
}

test "splits"{send "GET / HTTP/1.1\r\nHost: a\r\n\r\n" split 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1 expect allow}
"#;

/// Every input above, by name.
const INPUTS: &[(&str, &str)] = &[
    ("spec_example", SPEC_EXAMPLE),
    ("every_construct", EVERY_CONSTRUCT),
    ("messy_spacing", MESSY_SPACING),
    ("comments_everywhere", COMMENTS_EVERYWHERE),
    ("long_lines", LONG_LINES),
    ("test_blocks", TEST_BLOCKS),
];

// ------------------------------------------------------------ helpers

fn format(name: &str, text: &str) -> String {
    match format_source(text) {
        Ok(formatted) => formatted,
        Err(error) => panic!("{name}: formatting failed: {error}\n--- input:\n{text}\n---"),
    }
}

/// The comment texts of a source, trailing whitespace removed, sorted.
fn comments(name: &str, text: &str) -> Vec<String> {
    let root = match parse_tree(text) {
        Ok(mut pairs) => pairs.next(),
        Err(error) => panic!("{name}: does not parse: {error}"),
    };
    let mut texts: Vec<String> = root
        .into_iter()
        .flat_map(|root| root.into_inner().flatten())
        .filter(|pair| pair.as_rule() == G::COMMENT)
        .map(|pair| pair.as_str().trim_end().to_string())
        .collect();
    texts.sort();
    texts
}

/// Formats `text` and checks every property; returns the formatted text.
fn check_properties(name: &str, text: &str) -> String {
    let formatted = format(name, text);
    assert_eq!(format(name, &formatted), formatted, "{name}: formatting is not idempotent");
    assert_eq!(comments(name, &formatted), comments(name, text), "{name}: comments changed");
    if let Ok(before) = parse_ast(FileId(0), text) {
        match parse_ast(FileId(0), &formatted) {
            Ok(after) => assert_eq!(after, before, "{name}: the meaning changed"),
            Err(error) => panic!("{name}: the formatted text does not parse: {error:?}\n{formatted}"),
        }
    }
    assert!(
        formatted.is_empty() || (formatted.ends_with('\n') && !formatted.ends_with("\n\n")),
        "{name}: final newline"
    );
    for line in formatted.lines() {
        assert_eq!(line, line.trim_end(), "{name}: trailing whitespace");
    }
    formatted
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.l7` file under `dir`, recursively, sorted.
fn l7_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            l7_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "l7") {
            found.push(path);
        }
    }
}

/// The `policy = '''...'''` sources of the conformance cases (the
/// repository's copies). A policy that does not compile yet is left out
/// while PENDING.toml lists its whole file (said on stdout); any other
/// policy that does not compile, or a listed one that compiles, fails.
fn conformance_policies() -> Vec<(String, String)> {
    pending::compiling_policies(env!("CARGO_MANIFEST_DIR"))
        .into_iter()
        .map(|case| (case.path.display().to_string(), case.policy))
        .collect()
}

/// Every source the properties are checked on.
fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut sources: Vec<(String, String)> =
            INPUTS.iter().map(|(name, text)| (name.to_string(), text.to_string())).collect();
        let mut files = Vec::new();
        l7_files(&manifest_dir().join("../examples"), &mut files);
        l7_files(&manifest_dir().join("../stdlib"), &mut files);
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                sources.push((file.display().to_string(), text));
            }
        }
        sources.extend(conformance_policies());
        // Only sources the grammar accepts: an example may show a parse error.
        sources.retain(|(name, text)| {
            let parses = parse_tree(text).is_ok();
            if !parses {
                eprintln!("skipped (does not parse): {name}");
            }
            parses
        });
        sources
    })
}

// ------------------------------------------------------------ snapshots

#[test]
fn fmt_snapshots_of_the_canonical_layout() {
    for (name, text) in INPUTS {
        insta::assert_snapshot!(*name, check_properties(name, text));
    }
}

#[test]
fn fmt_keeps_every_comment_of_the_comment_test() {
    let (name, text) = ("comments_everywhere", COMMENTS_EVERYWHERE);
    assert!(comments(name, text).len() > 60, "the input is meant to hold many comments");
    check_properties(name, text);
}

#[test]
fn fmt_messy_spacing_formats_like_its_tidy_twin() {
    let tidy = "import \"std/http\"\nimport \"./x.l7\"\n\nlet A = [\"/a\", \"/b\"]\nlet B = []\n\npolicy \"p\" {\n  default deny\n  mode audit\n  rule \"r\" { method GET, HEAD  path prefix A  allow }\n\n  rule \"s\" { deny }\n  limits { headers 3 }\n}\n\ntest \"t\" {\n  remote port 80\n  send \"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n\"\n       \"x\" split 1, 2, 3 expect [allow \"r\", deny]\n  send \"y\" expect deny\n}\n";
    assert_eq!(format("messy", MESSY_SPACING), tidy);
    assert_eq!(format("tidy", tidy), tidy);
}

#[test]
fn fmt_refuses_a_file_that_does_not_parse() {
    for text in ["policy \"p\" {", "rule \"r\" { allow }", "let X = [\"a\" \"b\"]", "policy \"p\" { default maybe }"] {
        assert!(matches!(format_source(text), Err(FormatError::Parse(_))), "{text}");
    }
}

// ------------------------------------------------------------ corpus

#[test]
fn fmt_corpus_is_idempotent_and_keeps_meaning_and_comments() {
    let sources = corpus();
    let from_files = sources.len() - INPUTS.len();
    eprintln!("checked {} sources ({} from examples, stdlib and conformance)", sources.len(), from_files);
    for (name, text) in sources {
        check_properties(name, text);
    }
}

// ------------------------------------------------------------ random comments

/// Where each token of `text` ends: a comment or a space may go there.
fn token_ends(text: &str) -> Vec<usize> {
    let Ok(mut pairs) = parse_tree(text) else { return Vec::new() };
    let Some(root) = pairs.next() else { return Vec::new() };
    let mut ends: Vec<usize> = root
        .into_inner()
        .flatten()
        .filter(|pair| !matches!(pair.as_rule(), G::COMMENT | G::EOI))
        .filter(|pair| pair.clone().into_inner().next().is_none() && !pair.as_str().is_empty())
        .map(|pair| pair.as_span().end())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// `text` with, after token `i`, what `choices[i % len]` says. With
/// `comments`: a trailing comment, an own-line comment, one between blank
/// lines, or nothing. Without: spaces and tabs, a line break (only where
/// it neither makes a blank line nor puts a trailing comment on a line of
/// its own), or nothing.
fn mutate(text: &str, choices: &[u8], comments: bool) -> String {
    let mut out = text.to_string();
    for (index, end) in token_ends(text).into_iter().enumerate().rev() {
        let choice = choices.get(index % choices.len().max(1)).copied().unwrap_or(0);
        let next_on_line = text[end..].trim_start_matches([' ', '\t', '\r']);
        let insert = match (choice, comments) {
            (0, true) => format!(" # c{index} {{ ] trailing\n"),
            (1, true) => format!("\n# c{index} own line\n"),
            (2, true) => format!("\n\n  # c{index} between blanks\n\n"),
            (0, false) => " \t  ".to_string(),
            (1, false) if !next_on_line.starts_with(['\n', '#']) => "\n".to_string(),
            _ => continue,
        };
        out.insert_str(end, &insert);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fmt_keeps_random_comments_and_changes_nothing_else(
        index in 0usize..10_000,
        choices in prop::collection::vec(0u8..8, 1..64),
    ) {
        let sources = corpus();
        let (name, text) = &sources[index % sources.len()];
        let mutated = mutate(text, &choices, true);
        check_properties(&format!("{name} with comments"), &mutated);
    }

    #[test]
    fn fmt_spacing_matters_only_for_blank_lines_and_comments(
        index in 0usize..10_000,
        choices in prop::collection::vec(0u8..4, 1..64),
    ) {
        let sources = corpus();
        let (name, text) = &sources[index % sources.len()];
        let spaced = mutate(text, &choices, false);
        prop_assert_eq!(format(name, &spaced), format(name, text));
    }
}
