//! Differential test of the reference head parser against `httparse`: on
//! generated heads that `parse_head` accepts, httparse reads the same
//! method, target, version and field lines. (The reverse does not hold:
//! httparse is more lenient, and the evaluator refuses on purpose.)

use l7c_compiler::eval::{parse_head, HttpVersion, ParseHeadError};
use l7c_compiler::model::Limits;
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[A-Za-z0-9._~!$&'()*+,=:@/-]{0,30}(\\?[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,20})?",
        "/([a-z]{1,5}(%[0-9A-Fa-f]{2})?/){0,4}[a-z]{0,5}",
        Just("*".to_string()),
        "[a-z]{1,10}:[0-9]{1,5}",
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![8 => 0x21u8..0x7f, 2 => Just(b' '), 1 => Just(b'\t'), 1 => 0x80u8..=0xff], 0..30)
}

fn head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![token(), Just("OPTIONS".to_string()), Just("CONNECT".to_string()), Just("GET".to_string())],
        target(),
        prop::bool::ANY,
        prop::collection::vec((token(), value()), 0..8),
        prop::bool::weighted(0.9),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..2),
    )
        .prop_map(|(method, target, http11, fields, with_host, flips)| {
            let version = if http11 { "HTTP/1.1" } else { "HTTP/1.0" };
            let mut bytes = format!("{method} {target} {version}\r\n").into_bytes();
            if with_host {
                bytes.extend_from_slice(b"Host: example.com:80\r\n");
            }
            for (name, value) in fields {
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(b':');
                bytes.extend_from_slice(&value);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            for (at, byte) in flips {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            bytes
        })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

fn compare(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let ours = match parse_head(bytes, Limits::default()) {
        Ok(head) => head,
        Err(ParseHeadError::Refused(_)) | Err(ParseHeadError::Incomplete) => return Ok(false),
    };
    let mut headers = [httparse::EMPTY_HEADER; 80];
    let mut theirs = httparse::Request::new(&mut headers);
    let status = theirs.parse(bytes);
    prop_assert!(matches!(status, Ok(httparse::Status::Complete(_))), "httparse: {:?} on {:?}", status, String::from_utf8_lossy(bytes));
    if let Ok(httparse::Status::Complete(len)) = status {
        prop_assert_eq!(len, ours.len);
    }
    prop_assert_eq!(theirs.method.map(str::as_bytes), Some(ours.method));
    prop_assert_eq!(theirs.path.map(str::as_bytes), Some(ours.target));
    let version = match ours.version {
        HttpVersion::Http10 => 0,
        HttpVersion::Http11 => 1,
    };
    prop_assert_eq!(theirs.version, Some(version));
    let their_fields: Vec<(&[u8], &[u8])> = theirs.headers.iter().map(|h| (h.name.as_bytes(), trim(h.value))).collect();
    prop_assert_eq!(their_fields, ours.fields.clone());
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn accepted_heads_read_the_same_in_httparse(bytes in head()) {
        compare(&bytes)?;
    }
}

#[test]
fn the_generator_yields_accepted_heads() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = head();
    let mut accepted = 0;
    for _ in 0..1000 {
        let bytes = strategy.new_tree(&mut runner).expect("a value").current();
        if compare(&bytes).expect("agreement") {
            accepted += 1;
        }
    }
    assert!(accepted > 300, "only {accepted} of 1000 generated heads were accepted");
}

#[test]
fn known_heads_agree() {
    for head in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
        b"POST /a%20b?x=%41 HTTP/1.0\r\nX-Empty:\r\nX-Obs: caf\xc3\xa9 \t\r\n\r\n",
    ] {
        assert!(compare(head).expect("agreement"), "{:?} should be accepted", String::from_utf8_lossy(head));
    }
}
