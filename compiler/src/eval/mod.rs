//! The reference evaluator: the executable specification of language.md.
//!
//! Written straight from the spec, independently of the code generator's
//! tables, so that comparing the two engines catches a mistake in either.
//! A [`Session`] is one client connection: it is fed the bytes the client
//! sends, in whatever pieces `send()` delivered them, and reports verdicts
//! that do not depend on how the stream was split.
//!
//! The stages, one module each: `head` (the strict head scanner, §7),
//! `authority` (Host and CONNECT targets), `path` (canonical path and path
//! matchers), `rules` (matchers and first match), `body` (chunked framing),
//! `session` (the connection: verdicts, spans, delivered and held bytes),
//! `explain` (the trace of `l7c explain`).
//!
//! Invariants:
//! - Split independence: every decision is taken at one byte, from the
//!   bytes up to it; `feed` may be called with any pieces. The one
//!   exception is the spec's own (language.md §6): the server's answers
//!   ([`ServerAnswers`]) arrive when a `feed` ends, so whether a switch took
//!   effect and whether a deny is answered depend on where the sends were
//!   cut (`testing::Timing` says where).
//! - Bounded memory: a head is held in at most `header_bytes + 1` bytes;
//!   bodies are counted, never stored; nothing grows with the stream except
//!   the list of verdicts.
//! - Fail closed: anything the spec does not accept is refused.
//!
//! # Decisions where the spec is silent
//!
//! - **Where a bare CR sits.** A bare CR's `line-ending` violation sits at
//!   the CR itself (it becomes certain at the next byte). So a CR as the
//!   last byte a head may have (`header_bytes`) waits for the next byte: a
//!   LF makes the head `limit:header_bytes`, anything else makes it
//!   `malformed:line-ending`. An input that ends right there is pending.
//! - **`limit:header_bytes` is certain at the last allowed byte**: once
//!   `header_bytes` bytes arrived without a violation and without the end of
//!   the head, the head is denied then (not one byte later).
//! - **Obs-fold is not a new field line**: a line starting with SP or HTAB
//!   is `malformed:obs-fold` even when the field-line count is used up.
//! - **A line starting with CR is not a field line**: it is the final CRLF
//!   (or a bare CR), so it never triggers `limit:headers`.
//! - **Bytes within one request-line slot, by table row**: a CR or LF inside
//!   the method or target is `request-line`; a SP inside or after the
//!   version is `request-line`; a CR or LF that cuts the version short is
//!   `version`; a field line without a colon is `header-syntax` at its CR
//!   (`line-ending` at a bare LF).
//! - **Escapes sit at their `%`** even when the byte that makes them wrong
//!   comes later (`/a%` followed by SP is `path-encoding` at the `%`); an
//!   encoded `;` (`%3B`) is `path-traversal` at its `%`. In the query, a bad
//!   escape is `target` at its `%`.
//! - **Empty Host value**: valid (an empty reg-name, RFC 3986; RFC 9112 asks
//!   for it at times); it satisfies HTTP/1.1's Host requirement, and host
//!   matchers compare against the empty string. A port must have at least
//!   one digit; a percent-encoded reg-name must have two hex digits per `%`.
//! - **IP literals** in Host and CONNECT targets are RFC 3986's IPv6address
//!   (no zone identifier) or IPvFuture, at most 64 bytes between the
//!   brackets; their content is judged when the `]` arrives. Host matchers
//!   see a literal with its brackets (`[::1]`).
//! - **CONNECT targets** need a non-empty host and a port
//!   (`host:port`); anything else is `malformed:target`.
//! - **Any `Upgrade` field switches protocols**, whatever its value (an
//!   empty value included): only `allow tunnel` allows it.
//! - **A tunnel's span** runs from its request's first byte through its body
//!   (Content-Length or chunked: a switch request's body is framed like any
//!   other, and a bad chunk in it is `deny malformed:chunk`). When the server
//!   agrees to the switch the span reaches the end of the input and the rest
//!   passes unparsed; when it refuses, the span is the request's own and the
//!   next request follows; when the input ends before the answer arrives, or
//!   the answer never comes, the span is the request's own (a Content-Length
//!   body still being sent reaches past the input, as for `allow`).
//! - **When an answer arrives** (cli.md `--answers`): request `k` is the k-th
//!   request delivered to the server — allowed and tunnel requests, and in
//!   audit mode every request judged (would-be denies and redirects too, their
//!   bytes go to the peer). A request redirected in enforce mode goes elsewhere
//!   and is not counted. The answer to request `k` arrives when the send()
//!   that carries its last byte ends — after its Content-Length body, or after
//!   the last chunk and trailers of a chunked body, for a switch request too
//!   (language.md §6: "its head and its body"). Answers arrive in order: a
//!   request the list does not answer, or answers only with an interim `1xx`
//!   (other than a `101` that consents), is never answered, and neither is
//!   any request after it.
//! - **Final answers.** Any status outside `1xx` is final, and so is a
//!   consenting one (`101` to an Upgrade). Consent is `101` to a request with
//!   an `Upgrade` field and any `2xx` to `CONNECT` (`RequestKind`); a `CONNECT`
//!   that also carries `Upgrade` is a `CONNECT`. A `101` to a request that is
//!   not an Upgrade, or to a `CONNECT`, is an interim answer, so it never
//!   opens the switch: the connection waits forever.
//! - **Early bytes.** From the end of an allowed switch request until its
//!   answer arrives, every byte is early: `deny tunnel`, rule `null`, starting
//!   at the first early byte and spanning to the end of the input; the tunnel
//!   verdict keeps its own request's span (the switch never took effect). It
//!   is never answered over HTTP (the server owes the switch request's answer).
//!   In audit mode the same verdict is reported and every byte passes; after it
//!   framing is lost, as after a would-be `malformed` deny, and no verdict
//!   follows: whether the server read those bytes as tunnel data or as a
//!   request depends on an answer they did not wait for.
//! - **Audit mode does not wait for the switch of a would-be denied request**:
//!   a would-be `deny tunnel` (an Upgrade no `allow tunnel` allows) goes on
//!   with the next request, as language.md §6 says of every would-be `tunnel`
//!   deny, whatever the server answers.
//! - **Whether a deny is answered** is decided at the denied request's first
//!   byte: it is answered when, at that byte, the server owes nothing — every
//!   request delivered before it has its final answer, which arrived at the
//!   end of an earlier send (so the first byte is in a later send than the
//!   previous request's last byte). Where the rest of the denied request was
//!   sent does not matter. A deny that starts at a byte rather than at a
//!   request (early bytes) is judged at that byte.
//! - **A redirected request makes later denies `reset`** (enforce mode): its
//!   answer comes from the redirect target, at a time no engine sees, and the
//!   client could take the deny's answer for it.
//! - **A deny that has no answer** (`answer_status` is `None`: `opaque`,
//!   `http2`, `malformed:chunk`, or `deny_with reset`) is `reset`; so is every
//!   deny whose answer would overtake the server's. Audit-mode denies carry no
//!   answer at all (`answer` is absent from the JSON).
//! - **Opaque verdicts** (`deny opaque`, `tunnel opaque`) span the whole
//!   input, from byte 0 to its end.
//! - **Audit mode, would-be malformed/limit/opaque denies** span to the end
//!   of the input: framing is lost, so the request's own end is unknown.
//! - **Chunked bodies of every verdict are framed**: a redirected request's
//!   body, or an audit-mode would-be deny's, is parsed too, and a bad chunk
//!   gives its own `deny malformed:chunk` (in audit mode the rest then
//!   passes unparsed).
//! - **The offending byte of a chunked body** is the first byte that cannot
//!   continue a well-formed body: a CR is delivered as it arrives, and a CR
//!   not followed by LF makes the byte after it the offending one. A
//!   chunk-size line or trailer section that reaches its allowance without
//!   ending is refused at its last allowed byte.
//! - **A chunked request cut by a bad chunk** keeps its own verdict, whose
//!   span ends at the offending byte, where the `malformed:chunk` verdict
//!   starts.
//! - **Chunk extensions** follow RFC 9112's grammar with no whitespace;
//!   quoted-string values may hold HTAB, SP, VCHAR and obs-text, and
//!   quoted pairs. The trailer section (its field lines and final CRLF,
//!   after the last-chunk line) has its own `header_bytes` and `headers`.
//! - **Content-Length 0** means no body; `Content-Length` on any method
//!   frames a body. `Content-Length` and `Transfer-Encoding` are judged on
//!   the field value with its surrounding SP/HTAB removed (`Content-Length:
//!   5 ` is 5); "whitespace-trimmed" means SP and HTAB only.
//! - **Audit-mode redirects** keep the action `redirect` in the verdict
//!   (reported as such), though their bytes go to the peer.
//! - **Ungoverned connections** get no verdict at all: every byte is
//!   delivered, nothing is pending, even for opaque or malformed input.
//! - **`log`** does not change verdicts; the outcome carries no events.
//! - **A policy without a default** (which `check` refuses) denies.
//! - **Held bytes at connection start**: while the input is a proper prefix
//!   of the HTTP/2 preface line, those bytes are pending; when it diverges,
//!   they are read as an ordinary request from byte 0.

mod authority;
mod body;
mod explain;
#[doc(hidden)]
pub mod fuzzing;
mod head;
/// Shared with `check`, whose lints must predict exactly what evaluation does.
pub(crate) mod path;
mod rules;
mod session;

pub use explain::explain;
pub use head::{parse_head, Framing, HeadError, HeadViolation, HttpVersion, ParseHeadError, ParsedHead, TargetForm};
pub use session::Session;

use crate::model::{ConnectionInfo, Program};
/// The vocabulary every engine shares lives in `crate::verdict`; it is
/// re-exported here for the reference engine's users.
pub use crate::verdict::{Answer, EvalJson, Outcome, Reason, ServerAnswers, Verdict, VerdictJson};

/// Run one connection over `input`, cut into `send()` calls: `split` gives
/// the sizes of the first calls (a size past the input's end takes what is
/// left), and the rest is one final call. The server answers every request
/// and agrees to every switch ([`ServerAnswers::Agreeing`]).
pub fn evaluate(program: &Program, connection: ConnectionInfo, bound: &[String], input: &[u8], split: &[usize]) -> Outcome {
    evaluate_with_answers(program, connection, bound, input, split, &ServerAnswers::Agreeing)
}

/// Like [`evaluate`], with the server answering as `answers` says (cli.md
/// `--answers`).
pub fn evaluate_with_answers(
    program: &Program,
    connection: ConnectionInfo,
    bound: &[String],
    input: &[u8],
    split: &[usize],
    answers: &ServerAnswers,
) -> Outcome {
    let mut session = Session::new(program, connection, bound).with_answers(answers.clone());
    let mut rest = input;
    for &size in split {
        let (piece, after) = rest.split_at(size.min(rest.len()));
        session.feed(piece);
        rest = after;
    }
    session.feed(rest);
    session.finish()
}

