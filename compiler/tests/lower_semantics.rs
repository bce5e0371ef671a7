//! The lowered tables on hand-picked cases: glob translation, segment-aware
//! prefixes, escaping of regex metacharacters, `nocase`, trailing
//! whitespace, hosts (ports, trailing dots, IP literals), `not`/`any`,
//! CONNECT and `OPTIONS *`, duplicates, determinism and the limits.
//!
//! Each case states the expected rule and is also checked against the
//! reference evaluator, so a wrong expectation here cannot hide a bug.

mod lower_common;

/// Inside `lower` so that `cargo test -p l7c-compiler lower` runs them.
mod lower {

    use l7c_compiler::http::MalformedKind;
    use l7c_compiler::lower::walk::Decision;
    use l7c_compiler::lower::{self, LowerError, MAX_CLAUSES_PER_RULE, MAX_HEADER_NAMES, MAX_METHODS};
    use crate::lower_common::{lowered, reference, walked};

    /// `GET <target>` with a Host and the given extra field lines.
    fn request(method: &str, target: &str, fields: &[&str]) -> Vec<u8> {
        let mut out = format!("{method} {target} HTTP/1.1\r\nHost: example.com\r\n");
        for field in fields {
            out.push_str(field);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// Decide `input` with both engines; they must agree with each other and
    /// with `expected` (a rule name, `"default"` or `"duplicate"`). Trailing
    /// whitespace is appended to every value on the walker's side too.
    fn expect(policy_text: &str, input: &[u8], expected: &str) {
        let (checked, lowered) = lowered(policy_text);
        let policy = &checked.program().policies[0];
        let want = match expected {
            "default" => Decision::Default,
            "duplicate" => Decision::Refused(MalformedKind::DuplicateHeader),
            name => Decision::Rule(policy.rules.iter().position(|r| r.name == name).expect("a rule of the policy")),
        };
        let connection = crate::lower_common::connection_for(&policy.scope).expect("a connection the policy governs");
        let reference = reference(&checked, policy, connection, input);
        assert_eq!(reference, Some(want), "reference on {:?}", String::from_utf8_lossy(input));
        for trailing in [&b""[..], b" ", b"\t \t"] {
            let (indexed, linear) = walked(&lowered.policies[0], input, trailing).expect("a well-formed head");
            assert_eq!(indexed, want, "walker on {:?} (+{trailing:?})", String::from_utf8_lossy(input));
            assert_eq!(linear, want, "linear walker on {:?}", String::from_utf8_lossy(input));
        }
    }

    fn get(target: &str) -> Vec<u8> {
        request("GET", target, &[])
    }

    #[test]
    fn glob_star_is_one_or_more_bytes_within_a_segment() {
        let p = r#"policy "p" { default deny  rule "g" { path glob "/users/*/orders" allow } }"#;
        expect(p, &get("/users/7/orders"), "g");
        expect(p, &get("/users/a.b/orders"), "g");
        expect(p, &get("/users/7/x/orders"), "default");
    }

    #[test]
    fn glob_double_star_is_whole_segments() {
        let p = r#"policy "p" { default deny
            rule "tree" { path glob "/a/**" allow }
            rule "css" { path glob "/static/**/*.css" allow }
            rule "mid" { path glob "/**/x/**/y" allow } }"#;
        for target in ["/a", "/a/", "/a/b", "/a/b/c"] {
            expect(p, &get(target), "tree");
        }
        expect(p, &get("/ab"), "default");
        expect(p, &get("/static/main.css"), "css");
        expect(p, &get("/static/css/site/main.css"), "css");
        expect(p, &get("/static/css/site/main.js"), "default");
        expect(p, &get("/static/.css"), "default");
        expect(p, &get("/q/x/r/s/y"), "mid");
        expect(p, &get("/x/y"), "mid");
        expect(p, &get("/q/x/r/s/z"), "default");
    }

    #[test]
    fn prefix_is_segment_aware() {
        let p = r#"policy "p" { default deny
            rule "api" { path prefix "/api" allow }
            rule "slash" { path prefix "/pub/" allow }
            rule "raw" { path starts_with "/raw" allow } }"#;
        expect(p, &get("/api"), "api");
        expect(p, &get("/api/x"), "api");
        expect(p, &get("/apix"), "default");
        expect(p, &get("/pub/x"), "slash");
        expect(p, &get("/pub"), "default");
        expect(p, &get("/rawer"), "raw");
        expect(p, &get("/api?x=/y"), "api");
    }

    #[test]
    fn metacharacters_in_patterns_are_literal() {
        let p = r#"policy "p" { default deny
            rule "dot" { path exact "/a.b" allow }
            rule "paren" { path exact "/(x)+" allow }
            rule "star" { path exact "/a*" allow }
            rule "suffix" { path suffix ".json" allow }
            rule "value" { header "x-v" exact "a|b" allow }
            rule "class" { header "x-c" contains "[a-z]" allow } }"#;
        expect(p, &get("/a.b"), "dot");
        expect(p, &get("/aXb"), "default");
        expect(p, &get("/(x)+"), "paren");
        expect(p, &get("/xx"), "default");
        expect(p, &get("/(x)"), "default");
        expect(p, &get("/a*"), "star");
        expect(p, &get("/ab"), "default");
        expect(p, &get("/f.json"), "suffix");
        expect(p, &get("/fxjson"), "default");
        expect(p, &request("GET", "/", &["x-v: a|b"]), "value");
        expect(p, &request("GET", "/", &["x-v: a"]), "default");
        expect(p, &request("GET", "/", &["x-c: q[a-z]q"]), "class");
        expect(p, &request("GET", "/", &["x-c: q"]), "default");
    }

    #[test]
    fn paths_are_matched_decoded() {
        let p = r#"policy "p" { default deny  rule "admin" { path prefix "/admin" deny }  rule "sp" { path exact "/a b" allow } }"#;
        expect(p, &get("/%61dmin/x"), "admin");
        expect(p, &get("/a%20b"), "sp");
    }

    #[test]
    fn nocase_and_trailing_whitespace() {
        let p = r#"policy "p" { default deny
            rule "ws" { header "upgrade" exact nocase "websocket" allow tunnel }
            rule "ct" { header "content-type" prefix "application/json" allow }
            rule "sfx" { header "x-s" suffix "end" allow }
            rule "case" { header "x-case" exact "Value" allow } }"#;
        expect(p, &request("GET", "/", &["Upgrade: WebSocket"]), "ws");
        expect(p, &request("GET", "/", &["upgrade:websocket   "]), "ws");
        expect(p, &request("GET", "/", &["upgrade: websockets"]), "default");
        expect(p, &request("GET", "/", &["content-type: application/json; charset=utf-8"]), "ct");
        expect(p, &request("GET", "/", &["content-type: Application/json"]), "default");
        expect(p, &request("GET", "/", &["x-s: the end \t"]), "sfx");
        expect(p, &request("GET", "/", &["x-s: endless"]), "default");
        expect(p, &request("GET", "/", &["x-case: Value"]), "case");
        expect(p, &request("GET", "/", &["x-case: value"]), "default");
    }

    #[test]
    fn values_with_inner_whitespace() {
        // A prefix ending in a space needs more after it inside the trimmed
        // value; `contains` likewise.
        let p = r#"policy "p" { default deny
            rule "pfx" { header "x-p" prefix "a " allow }
            rule "has" { header "x-c" contains "b " allow } }"#;
        expect(p, &request("GET", "/", &["x-p: a b"]), "pfx");
        expect(p, &request("GET", "/", &["x-p: a  "]), "default");
        expect(p, &request("GET", "/", &["x-c: ab c"]), "has");
        expect(p, &request("GET", "/", &["x-c: ab   "]), "default");
    }

    #[test]
    fn hosts() {
        let p = r#"policy "p" { default deny
            rule "exact" { host exact "api.example.com" allow }
            rule "suffix" { host suffix ".example.org" allow }
            rule "literal" { host exact "[::1]" allow } }"#;
        let with_host = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        expect(p, &with_host("api.example.com"), "exact");
        expect(p, &with_host("API.Example.COM"), "exact");
        expect(p, &with_host("api.example.com:8443"), "exact");
        expect(p, &with_host("api.example.com."), "exact");
        expect(p, &with_host("api.example.com.:80"), "exact");
        expect(p, &with_host("api.example.com.."), "default");
        expect(p, &with_host("xapi.example.com"), "default");
        expect(p, &with_host("a.example.org"), "suffix");
        expect(p, &with_host("a.example.org.:1"), "suffix");
        expect(p, &with_host("example.org"), "default");
        expect(p, &with_host("[::1]"), "literal");
        expect(p, &with_host("[::1]:8080"), "literal");
        expect(p, &with_host("[::2]"), "default");
        // HTTP/1.0 without Host: no host matcher holds.
        expect(p, b"GET / HTTP/1.0\r\n\r\n", "default");
        let negated = r#"policy "p" { default allow  rule "wrong-host" { not host exact "a" deny } }"#;
        expect(negated, b"GET / HTTP/1.0\r\n\r\n", "wrong-host");
        expect(negated, &with_host("A"), "default");
    }

    #[test]
    fn connect_and_options_star() {
        let p = r#"policy "p" { default deny
            rule "star" { path exact "*" allow }
            rule "any-path" { path starts_with "" deny }
            rule "connect" { method CONNECT allow tunnel } }"#;
        expect(p, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "star");
        // No path matcher holds for CONNECT, not even an empty `starts_with`.
        expect(p, b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "connect");
        expect(p, &get("/x"), "any-path");
    }

    #[test]
    fn any_not_and_order() {
        let p = r#"policy "p" { default allow
            rule "a" { any { not header "x-a" present  not any { method POST  path prefix "/w" } }  path exact "/t" deny }
            rule "b" { not any { header "x-b" present  header "x-c" present } method GET  deny }
            rule "c" { path prefix "/" allow } }"#;
        expect(p, &get("/t"), "a");
        expect(p, &request("GET", "/t", &["x-a: 1"]), "a");
        expect(p, &request("POST", "/t", &["x-a: 1", "content-length: 0"]), "c");
        expect(p, &get("/u"), "b");
        expect(p, &request("GET", "/u", &["x-c: 1"]), "c");
    }

    #[test]
    fn repeated_value_matched_header_is_refused() {
        let p = r#"policy "p" { default allow  rule "r" { header "x-a" exact "1" deny }  rule "q" { header "x-b" present deny } }"#;
        expect(p, &request("GET", "/", &["x-a: 1", "X-A: 2"]), "duplicate");
        expect(p, &request("GET", "/", &["x-b: 1", "x-b: 2"]), "q");
    }

    #[test]
    fn methods_are_case_sensitive_tokens() {
        let p = r#"policy "p" { default deny  rule "m" { method GET, "M-SEARCH" allow } }"#;
        expect(p, &get("/"), "m");
        expect(p, &request("M-SEARCH", "/", &[]), "m");
        expect(p, &request("get", "/", &[]), "default");
        expect(p, &request("GETX", "/", &[]), "default");
    }

    #[test]
    fn lowering_is_deterministic() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/static-site.l7")).unwrap();
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
        let first = lower::lower(&crate::lower_common::checked("static-site.l7", &text, Some(dir))).unwrap();
        let second = lower::lower(&crate::lower_common::checked("static-site.l7", &text, Some(dir))).unwrap();
        assert_eq!(first.report(), second.report());
        for (a, b) in first.policies.iter().zip(&second.policies) {
            assert_eq!(a.path, b.path);
            assert_eq!(a.headers, b.headers);
            assert_eq!(a.methods, b.methods);
            assert_eq!(a.decision, b.decision);
        }
    }

    #[test]
    fn too_many_methods() {
        let methods: Vec<String> = (0..=MAX_METHODS).map(|i| format!("M{i}")).collect();
        let text = format!(r#"policy "p" {{ default deny  rule "m" {{ method {} allow }} }}"#, methods.join(", "));
        let checked = crate::lower_common::checked("m.l7", &text, None);
        let error = lower::lower(&checked).unwrap_err();
        assert!(matches!(error, LowerError::TooManyMethods { count, .. } if count == MAX_METHODS + 1));
        assert_eq!(error.to_string(), format!("policy `p` names {} methods; at most {MAX_METHODS} are supported", MAX_METHODS + 1));
        // One fewer is fine.
        let text = format!(r#"policy "p" {{ default deny  rule "m" {{ method {} allow }} }}"#, methods[1..].join(", "));
        assert!(lower::lower(&crate::lower_common::checked("m.l7", &text, None)).is_ok());
    }

    #[test]
    fn too_many_header_names() {
        let rules: Vec<String> = (0..MAX_HEADER_NAMES).map(|i| format!(r#"rule "r{i}" {{ header "x-{i}" present deny }}"#)).collect();
        let text = format!(r#"policy "p" {{ default allow  {} }}"#, rules.join("\n"));
        let error = lower::lower(&crate::lower_common::checked("h.l7", &text, None)).unwrap_err();
        assert!(matches!(error, LowerError::TooManyHeaderNames { .. }), "{error}");
    }

    #[test]
    fn too_complex_rule() {
        // `any` of k `not any {a, b}` groups expands to 2^k clauses.
        let group = |i: usize| format!(r#"not any {{ header "x-{i}a" present  header "x-{i}b" present }}"#);
        let text = format!(r#"policy "p" {{ default allow  rule "r" {{ any {{ {} }} deny }} }}"#, (0..9).map(group).collect::<Vec<_>>().join("  "));
        let error = lower::lower(&crate::lower_common::checked("c.l7", &text, None)).unwrap_err();
        assert!(matches!(error, LowerError::RuleTooComplex { clauses, .. } if clauses > MAX_CLAUSES_PER_RULE), "{error}");
        // Eight groups (256 clauses) still lower, and decide like the reference.
        let text = format!(r#"policy "p" {{ default allow  rule "r" {{ any {{ {} }} deny }} }}"#, (0..8).map(group).collect::<Vec<_>>().join("  "));
        expect(&text, &request("GET", "/", &["x-0a: 1", "x-1b: 1", "x-2a: 1", "x-3a: 1", "x-4a: 1", "x-5a: 1", "x-6b: 1", "x-7a: 1"]), "default");
        expect(&text, &request("GET", "/", &["x-0a: 1", "x-1b: 1", "x-2a: 1", "x-3a: 1", "x-4a: 1", "x-5a: 1", "x-6b: 1"]), "r");
    }

    #[test]
    fn many_contains_values_share_one_automaton() {
        // Each `contains` list is one pattern with one leading and one trailing
        // loop; written as separate loops, this automaton had 507,910 states
        // (311 now).
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../stdlib/hardened.l7")).unwrap();
        let checked = crate::lower_common::checked("hardened.l7", &text, None);
        let lowered = lower::lower(&checked).unwrap();
        let agent = lowered.policies[0].headers.headers.iter().find(|slot| slot.name == "user-agent").unwrap();
        let values = agent.values.as_ref().unwrap();
        assert_eq!(values.lanes.len(), 1);
        assert!(values.lanes[0].state_count < 1_000, "{}", values.lanes[0].state_count);
    }

    #[test]
    fn independent_contains_matchers_use_a_sticky_lane() {
        // Each rule's `contains` is its own pattern: an automaton that had
        // to tell at the end which of the 24 words it has seen would need
        // 2^24 times the states. A sticky lane records each word where its
        // match ends: an Aho-Corasick-sized automaton and one seen word.
        let rules: Vec<String> =
            (0..24).map(|i| format!(r#"rule "r{i}" {{ header "x-w" contains nocase "w{i:02}x" deny }}"#)).collect();
        let text = format!(
            r#"policy "p" {{ default allow  {}  rule "sp" {{ header "x-w" contains "a " deny }} rule "e" {{ header "x-w" exact "q" deny }} }}"#,
            rules.join("\n")
        );
        let (_, lowered) = lowered(&text);
        let slot = lowered.policies[0].headers.headers.iter().find(|slot| slot.name == "x-w").unwrap();
        let values = slot.values.as_ref().unwrap();
        assert_eq!(values.sticky_lanes.len(), 1);
        assert_eq!(values.sticky_lanes[0].patterns.len(), 25);
        // About the words' bytes (96 here; 138 measured).
        assert!(values.sticky_lanes[0].automaton.state_count < 200, "{}", values.sticky_lanes[0].automaton.state_count);
        assert_eq!(values.lanes.len(), 1);
        expect(&text, &request("GET", "/", &["x-w: a W07X b w03x"]), "r3");
        expect(&text, &request("GET", "/", &["x-w: w23x"]), "r23");
        expect(&text, &request("GET", "/", &["x-w: w2"]), "default");
        expect(&text, &request("GET", "/", &["x-w: xa y"]), "sp");
        expect(&text, &request("GET", "/", &["x-w: xa  "]), "default");
        expect(&text, &request("GET", "/", &["x-w: q"]), "e");
    }

    #[test]
    fn contains_of_nothing_holds_for_any_present_value() {
        let rules: Vec<String> = (0..6).map(|i| format!(r#"rule "r{i}" {{ header "x-{i}" contains "" deny }}"#)).collect();
        let many: Vec<String> = (0..6).map(|i| format!(r#"rule "m{i}" {{ header "x-e" contains ["", "z{i}"] deny }}"#)).collect();
        let text = format!(r#"policy "p" {{ default allow  {}  {} }}"#, many.join("\n"), rules.join("\n"));
        expect(&text, &request("GET", "/", &["x-e:"]), "m0");
        expect(&text, &request("GET", "/", &["x-3: anything"]), "r3");
        expect(&text, &get("/"), "default");
    }
}
