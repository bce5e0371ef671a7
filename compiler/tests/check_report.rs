//! The machine formats of `l7c check`: the JSON shape of
//! docs/diagnostics.md and SARIF 2.1.0, as snapshots and as checks of the
//! fields tools depend on; and the promise that docs/diagnostics.md
//! documents every code.

use l7c_compiler::diagnostic::codes;
use l7c_compiler::driver::{compile_text, Compilation};
use l7c_compiler::report;

/// One error with a related span, one warning with a related span, one
/// plain warning, across several lines (one with a non-ASCII character
/// before the span, so columns count characters, not bytes).
const POLICY: &str = r#"let UNUSED = ["/x"]
policy "p" {
  default deny
  rule "api"  { path prefix "/api"  allow }
  rule "usér" { path exact "/api/users"  allow }
  rule "usér" { header "X-Key" present  deny }
}
"#;

fn compilation() -> Compilation {
    compile_text("policies/api.l7", POLICY, None)
}

#[test]
fn json_snapshot() {
    let c = compilation();
    insta::assert_snapshot!("json", serde_json::to_string_pretty(&report::json(&c.diagnostics, &c.sources)).unwrap_or_default());
}

#[test]
fn json_shape() {
    let c = compilation();
    let value = report::json(&c.diagnostics, &c.sources);
    assert_eq!(value["version"], 1);
    assert_eq!(value["summary"]["errors"], 2);
    assert_eq!(value["summary"]["warnings"], 2);
    assert_eq!(value["summary"]["notes"], 0);
    let items = value["diagnostics"].as_array().expect("an array");
    assert_eq!(items.len(), c.diagnostics.0.len());
    for item in items {
        for field in ["code", "severity", "message", "file"] {
            assert!(item[field].is_string(), "{field} in {item}");
        }
        for field in ["line", "column", "end_line", "end_column", "start", "end"] {
            assert!(item[field].as_u64().is_some_and(|n| field == "start" || field == "end" || n >= 1), "{field} in {item}");
        }
        assert!(item["label"].is_string() || item["label"].is_null());
        assert!(item["help"].is_string() || item["help"].is_null());
        assert!(item["related"].is_array());
    }
    // The shadowed rule points at the rule that shadows it.
    let shadowed = items.iter().find(|i| i["code"] == codes::SHADOWED_RULE).expect("a shadowed rule");
    assert_eq!(shadowed["line"], 5);
    assert_eq!(shadowed["column"], 8);
    assert_eq!(shadowed["end_column"], 14);
    assert_eq!(shadowed["related"][0]["line"], 4);
    assert_eq!(shadowed["related"][0]["label"], "this earlier rule decides first");
}

#[test]
fn sarif_snapshot() {
    let c = compilation();
    insta::assert_snapshot!("sarif", serde_json::to_string_pretty(&report::sarif(&c.diagnostics, &c.sources)).unwrap_or_default());
}

/// The fields SARIF 2.1.0 requires, and those code scanning needs to show
/// a result inline.
#[test]
fn sarif_has_the_required_fields() {
    let c = compilation();
    let log = report::sarif(&c.diagnostics, &c.sources);
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().is_some_and(|s| s.contains("sarif") && s.contains("2.1.0")));
    let runs = log["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "l7c");
    if let Some(uri) = driver.get("informationUri") {
        assert!(uri.as_str().is_some_and(|u| u.starts_with("http")), "{uri}");
    }
    let rules = driver["rules"].as_array().expect("rules");
    let mut used: Vec<&str> = c.diagnostics.iter().map(|d| d.code).collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(rules.len(), used.len(), "one reportingDescriptor per code used");
    for rule in rules {
        assert!(rule["id"].as_str().is_some_and(|id| used.contains(&id)), "{rule}");
        assert!(rule["shortDescription"]["text"].as_str().is_some_and(|t| !t.is_empty()), "{rule}");
        assert!(rule["help"]["text"].as_str().is_some_and(|t| !t.is_empty()), "{rule}");
    }
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), c.diagnostics.0.len());
    for result in results {
        let rule_id = result["ruleId"].as_str().expect("ruleId");
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], rule_id);
        assert!(matches!(result["level"].as_str(), Some("error" | "warning" | "note")), "{result}");
        assert!(result["message"]["text"].as_str().is_some_and(|t| !t.is_empty()));
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "policies/api.l7");
        let region = &location["region"];
        for field in ["startLine", "startColumn", "endLine", "endColumn"] {
            assert!(region[field].as_u64().is_some_and(|n| n >= 1), "{field} in {region}");
        }
        assert!(region["endLine"].as_u64() >= region["startLine"].as_u64());
    }
    assert_eq!(run["columnKind"], "unicodeCodePoints");
}

#[test]
fn sarif_of_a_clean_run_has_no_results() {
    let c = compile_text("ok.l7", "policy \"p\" { default deny }\n", None);
    let log = report::sarif(&c.diagnostics, &c.sources);
    assert_eq!(log["runs"][0]["results"].as_array().map(Vec::len), Some(0));
    assert_eq!(log["runs"][0]["tool"]["driver"]["rules"].as_array().map(Vec::len), Some(0));
}

/// docs/diagnostics.md has a section for every code, with an example.
#[test]
fn every_code_is_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let docs = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut missing = Vec::new();
    for code in codes::ALL {
        let heading = format!("### `{code}`");
        match docs.find(&heading) {
            None => missing.push(*code),
            Some(at) => {
                let section = docs.get(at + heading.len()..).unwrap_or_default();
                let section = section.split("\n### ").next().unwrap_or_default();
                assert!(section.contains("```l7"), "{code}: the section has no `.l7` example");
                assert!(section.contains("Severity:"), "{code}: the section gives no severity");
            }
        }
    }
    assert!(missing.is_empty(), "docs/diagnostics.md lacks a `### `code`` section for: {missing:?}");
}

/// Every documented `.l7` example really triggers its code.
#[test]
fn documented_check_examples_trigger_their_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let docs = std::fs::read_to_string(&path).unwrap_or_default();
    let mut tried = 0;
    for code in codes::ALL {
        // The cycle needs two files.
        if [codes::IMPORT_CYCLE].contains(code) {
            continue;
        }
        let heading = format!("### `{code}`");
        let Some(at) = docs.find(&heading) else { continue };
        let section = docs.get(at..).unwrap_or_default().split("\n### ").next().unwrap_or_default();
        let Some(example) = section.split("```l7\n").nth(1).and_then(|rest| rest.split("```").next()) else { continue };
        let c = compile_text("example.l7", example, None);
        tried += 1;
        assert!(
            c.diagnostics.iter().any(|d| d.code == *code),
            "the example of {code} does not trigger it:\n{example}\n{:?}",
            c.diagnostics
        );
    }
    assert_eq!(tried, codes::ALL.len() - 1, "every example but the import cycle was tried");
}

/// The JSON example of docs/diagnostics.md is what `report::json` gives
/// for the `shadowed-rule` example (key order aside).
#[test]
fn documented_json_example_is_real() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let docs = std::fs::read_to_string(&path).unwrap_or_default();
    let section = |heading: &str, fence: &str| -> String {
        let at = docs.find(heading).unwrap_or_else(|| panic!("no {heading}"));
        let rest = docs.get(at..).unwrap_or_default();
        rest.split(fence).nth(1).and_then(|block| block.split("```").next()).unwrap_or_default().to_string()
    };
    let example = section("### `l7::check::shadowed-rule`", "```l7\n");
    let documented: serde_json::Value =
        serde_json::from_str(&section("### JSON", "```json\n")).expect("the documented JSON parses");
    let c = compile_text("policy.l7", &example, None);
    assert_eq!(report::json(&c.diagnostics, &c.sources), documented);
}
