//! From text to [`ast::File`]: pest parses with `grammar/l7.pest`, then a
//! builder walks the pairs into the typed tree, decoding string escapes and
//! numbers and checking the shape of rules, each with a precise span.

use super::ast::*;
use crate::diagnostic::{codes, did_you_mean, edit_distance, Diagnostic, Diagnostics};
use crate::model::{DefaultVerdict, GetBodyVerdict, HostOp, Mode, OpaqueVerdict, PathOp, ValueOp, VerdictAction};
use crate::source::{FileId, Span};
use pest::iterators::Pair;
use pest::Parser as _;

/// The parser pest derives from the one grammar file. Its `Rule` enum names
/// grammar rules; it is re-exported as [`G`] to keep it apart from
/// [`ast::Rule`].
pub mod grammar {
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/l7.pest"]
    pub struct L7Parser;
}

pub use grammar::{L7Parser, Rule as G};

/// Parse one file's text.
pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostics> {
    let mut pairs = L7Parser::parse(G::file, text).map_err(|e| parse_error(file, text, e))?;
    let mut builder = Builder { file, diagnostics: Diagnostics::default() };
    let mut items = Vec::new();
    if let Some(root) = pairs.next() {
        for pair in significant(root) {
            if let Some(item) = builder.item(pair) {
                items.push(item);
            }
        }
    }
    if builder.diagnostics.has_errors() {
        return Err(builder.diagnostics);
    }
    Ok(File { id: file, items })
}

/// The raw pest parse tree, comments included, for the formatter.
pub fn parse_tree(text: &str) -> Result<pest::iterators::Pairs<'_, G>, Box<pest::error::Error<G>>> {
    L7Parser::parse(G::file, text).map_err(Box::new)
}

/// Inner pairs without comments and end-of-input markers.
fn significant(pair: Pair<'_, G>) -> impl Iterator<Item = Pair<'_, G>> {
    pair.into_inner().filter(|p| !matches!(p.as_rule(), G::COMMENT | G::EOI))
}

/// The keyword a `kw_*` grammar rule matches (`kw_starts_with` →
/// `starts_with`): the grammar is the one list of keywords.
fn keyword_of(grammar_rule: G) -> Option<String> {
    format!("{grammar_rule:?}").strip_prefix("kw_").map(str::to_string)
}

/// Every keyword of the language.
fn keywords() -> impl Iterator<Item = String> {
    G::all_rules().iter().filter_map(|grammar_rule| keyword_of(*grammar_rule))
}

/// A human name for each rule that can appear in "expected ..." lists; a
/// test makes sure no grammar rule is left without one.
fn describe(grammar_rule: &G) -> String {
    let text = match grammar_rule {
        G::COMMENT => "a comment",
        G::WHITESPACE => "white space",
        G::ident_char => "a letter, a digit, `_` or `-`",
        G::file | G::item => "`import`, `let`, `policy` or `test`",
        G::policy_item => "`scope`, `default`, `mode`, `opaque`, `get_body`, `deny_with`, `limits` or `rule`",
        G::rule_item => "a matcher or an action",
        G::test_item => "`remote`, `local`, `bind` or `send`",
        G::value => "a value",
        G::address => "an address",
        G::string => "a string",
        G::ident => "a name",
        G::keyword => "a keyword",
        G::integer => "a number",
        G::size => "a size (such as `8KiB`)",
        G::cidr => "an address",
        G::list => "a list `[...]`",
        G::values => "a value",
        G::import => "`import`",
        G::let_decl => "`let`",
        G::policy => "`policy`",
        G::test => "`test`",
        G::rule => "`rule`",
        G::scope => "`scope`",
        G::default_decl => "`default`",
        G::mode_decl => "`mode`",
        G::opaque_decl => "`opaque`",
        G::get_body_decl => "`get_body`",
        G::deny_with_decl => "`deny_with`",
        G::limits_decl => "`limits`",
        G::limit_entry => "a limit (`header_bytes 8KiB`, `headers 64`)",
        G::matcher => "a matcher (`method`, `path`, `header`, `host`, `any`, `not`)",
        G::method_matcher => "`method`",
        G::path_matcher => "`path`",
        G::header_matcher => "`header`",
        G::host_matcher => "`host`",
        G::any_matcher => "`any`",
        G::not_matcher => "`not`",
        G::action | G::action_kind => "an action (`allow`, `deny`, `redirect`, `allow tunnel`)",
        G::allow_tunnel => "`allow tunnel`",
        G::redirect_to => "`redirect`",
        G::path_op => "`exact`, `prefix`, `starts_with`, `suffix` or `glob`",
        G::header_test => "`present`, `absent`, `exact`, `prefix`, `suffix` or `contains`",
        G::value_op => "`exact`, `prefix`, `suffix` or `contains`",
        G::host_op => "`exact` or `suffix`",
        G::scope_side => "`remote` or `local`",
        G::scope_port => "`port`",
        G::scope_addr => "`addr`",
        G::send => "`send`",
        G::split => "`split`",
        G::expect => "`expect`",
        G::expect_list => "a list of expectations `[...]`",
        G::expectation => "an expectation (`allow \"rule\"`, `deny default`, `pending`, ...)",
        G::verdict_action => "`allow`, `deny`, `redirect` or `tunnel`",
        G::expected_reason | G::reason_word => "a reason",
        G::test_remote_port | G::test_remote_addr => "`remote`",
        G::test_local_port => "`local`",
        G::test_bind => "`bind`",
        G::EOI => "end of file",
        other => {
            return match keyword_of(*other) {
                Some(keyword) => format!("`{keyword}`"),
                None => "something else".to_string(),
            }
        }
    };
    text.to_string()
}

/// Punctuation the grammar writes as literals, which pest leaves out of its
/// "expected" lists: each is tried at the error instead (see
/// [`parses_past`]).
const PUNCTUATION: [&str; 6] = ["{", "}", "[", "]", ",", "="];

fn parse_error(file: FileId, text: &str, error: pest::error::Error<G>) -> Diagnostics {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match error.location {
        InputLocation::Pos(pos) => (pos, pos),
        InputLocation::Span((s, e)) => (s, e),
    };
    // A string or a block left open makes the parse fail somewhere after
    // it; the place to fix is where it opens.
    if let Some(quote) = delimiters(text, text.len()).unterminated_string.filter(|&quote| quote <= start) {
        return Diagnostic::error(codes::UNTERMINATED_STRING, Span::new(file, quote, quote + 1), "unterminated string")
            .with_label("this string is never closed")
            .with_help("end the string with `\"` on the same line; a line break inside a string is written `\\n`")
            .into();
    }
    if let Some((open, delimiter)) = unclosed_delimiter(text, start) {
        let (close, what) = if delimiter == '{' { ('}', "block") } else { (']', "list") };
        let mut diagnostic =
            Diagnostic::error(codes::UNCLOSED_DELIMITER, Span::new(file, open, open + 1), format!("unclosed `{delimiter}`"))
                .with_label(format!("this `{delimiter}` is never closed"))
                .with_help(format!("add `{close}` where the {what} ends"));
        if start < text.len() {
            diagnostic = diagnostic.with_related(Span::new(file, start, token_end(text, start)), format!("the {what} must end before this"));
        }
        return diagnostic.into();
    }
    // Underline the token that was found, not an empty point.
    let end = if end > start { end } else { token_end(text, start) };
    let found = text.get(start..end).filter(|s| !s.is_empty()).map_or("end of file".to_string(), |s| format!("`{s}`"));
    let message = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            // A comment may stand anywhere, so it is never what is missing.
            let mut expected: Vec<String> =
                positives.iter().filter(|expected| **expected != G::COMMENT).map(describe).collect();
            expected.extend(PUNCTUATION.iter().filter(|p| parses_past(text, start, 0, p)).map(|p| format!("`{p}`")));
            expected.sort();
            expected.dedup();
            if expected.is_empty() {
                format!("unexpected {found}")
            } else {
                format!("expected {}, found {found}", join_or(&expected))
            }
        }
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let help = parse_help(text, start);
    let mut diagnostic =
        Diagnostic::error(codes::PARSE, Span::new(file, start, end), message).with_label("here");
    if let Some(help) = help {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic.into()
}

/// The end of the token at `start`: up to the next white space, at least
/// one character (nothing at the end of the text).
fn token_end(text: &str, start: usize) -> usize {
    let rest = text.get(start..).unwrap_or_default();
    let token_len = rest
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(rest.len(), |(i, _)| i)
        .max(rest.chars().next().map_or(0, char::len_utf8));
    start + token_len
}

/// Whether the parse gets past `at` once the `replace` bytes there are
/// replaced by `insert`. A missing `}` or a misspelled keyword is confirmed
/// this way, by the grammar itself, rather than guessed.
fn parses_past(text: &str, at: usize, replace: usize, insert: &str) -> bool {
    let (Some(before), Some(after)) = (text.get(..at), text.get(at + replace..)) else { return false };
    match L7Parser::parse(G::file, &format!("{before}{insert}{after}")) {
        Ok(_) => true,
        Err(error) => {
            let reached = match error.location {
                pest::error::InputLocation::Pos(pos) | pest::error::InputLocation::Span((pos, _)) => pos,
            };
            reached > at + insert.len()
        }
    }
}

/// What a lexical pass sees up to `until`, reading the text as the grammar
/// does: a string ends at `"` or (unterminated) at a line break, `\`
/// escapes any character, `#` starts a comment to the end of the line.
struct Delimiters {
    /// The opening quote of the first string a line break or the end of the
    /// text cuts off.
    unterminated_string: Option<usize>,
    /// The `{` and `[` still open, innermost last.
    open: Vec<(usize, char)>,
}

fn delimiters(text: &str, until: usize) -> Delimiters {
    let mut found = Delimiters { unterminated_string: None, open: Vec::new() };
    let mut chars = text.get(..until).unwrap_or(text).char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '#' => {
                let _ = chars.by_ref().find(|(_, c)| *c == '\n');
            }
            '"' => loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some((_, '"')) => break,
                    Some((_, '\n')) | None => {
                        found.unterminated_string.get_or_insert(at);
                        break;
                    }
                    Some(_) => {}
                }
            },
            '{' | '[' => found.open.push((at, c)),
            '}' | ']' if found.open.last().is_some_and(|&(_, open)| (open == '{') == (c == '}')) => {
                found.open.pop();
            }
            _ => {}
        }
    }
    found
}

/// The `{` or `[` a parse error at `at` is due to: the text leaves one open,
/// the innermost one open at `at` is it, and closing it there lets the
/// parse go on.
fn unclosed_delimiter(text: &str, at: usize) -> Option<(usize, char)> {
    if delimiters(text, text.len()).open.is_empty() {
        return None;
    }
    let (open, delimiter) = *delimiters(text, at).open.last()?;
    let close = if delimiter == '{' { "}" } else { "]" };
    parses_past(text, at, 0, close).then_some((open, delimiter))
}

/// A targeted hint for common mistakes at a parse error's position.
fn parse_help(text: &str, at: usize) -> Option<String> {
    let rest = text.get(at..)?;
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    // Ask the grammar, the one list of keywords.
    let is_keyword = !word.is_empty()
        && L7Parser::parse(G::keyword, &word).is_ok_and(|pairs| pairs.as_str().len() == word.len());
    if is_keyword && follows_method(text, at) {
        return Some(format!(
            "`{word}` is a keyword and cannot stand here; a method with this name is written as a string: `\"{word}\"`"
        ));
    }
    if !is_keyword && !word.is_empty() {
        // A misspelled keyword: one that is near and that the grammar
        // accepts in its place.
        let near: Vec<String> = keywords()
            .filter(|keyword| edit_distance(&word, keyword) <= 2 && parses_past(text, at, word.len(), keyword))
            .collect();
        if let Some(keyword) = did_you_mean(&word, near.iter().map(String::as_str)) {
            return Some(format!("did you mean `{keyword}`?"));
        }
    }
    if rest.starts_with('\'') {
        return Some("strings are written in double quotes: `\"...\"`".into());
    }
    if rest.starts_with('}') {
        return Some("a rule needs matchers followed by exactly one action, such as `allow` or `deny`".into());
    }
    None
}

/// Whether `at` follows `method` or a comma: where a keyword was probably
/// meant as a method or a list element.
fn follows_method(text: &str, at: usize) -> bool {
    let before = text.get(..at).unwrap_or_default().trim_end();
    before.ends_with(',')
        || before.strip_suffix("method").is_some_and(|b| !b.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

struct Builder {
    file: FileId,
    diagnostics: Diagnostics,
}

impl Builder {
    fn span(&self, pair: &Pair<'_, G>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn item(&mut self, pair: Pair<'_, G>) -> Option<Item> {
        let span = self.span(&pair);
        match pair.as_rule() {
            G::import => {
                let path = self.string(significant(pair).nth(1)?);
                Some(Item::Import(Import { path, span }))
            }
            G::let_decl => {
                let mut inner = significant(pair).skip(1);
                let name = self.ident(inner.next()?);
                let value = self.list(inner.next()?);
                Some(Item::Let(Let { name, value, span }))
            }
            G::policy => self.policy(pair).map(Item::Policy),
            G::test => self.test(pair).map(Item::Test),
            _ => None,
        }
    }

    fn ident(&self, pair: Pair<'_, G>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    /// Decode a string literal's escapes; a bad escape is reported at the
    /// escape itself.
    fn string(&mut self, pair: Pair<'_, G>) -> Str {
        let span = self.span(&pair);
        let raw = pair.as_str();
        let body = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
        let (bytes, bad) = crate::text::decode_escapes(body);
        for escape in bad {
            let start = span.start + 1 + escape.at;
            self.diagnostics.push(
                Diagnostic::error(codes::BAD_ESCAPE, Span::new(self.file, start, (start + escape.len).min(span.end - 1)), escape.message)
                    .with_label("this escape")
                    .with_help(escape.help),
            );
        }
        Str { bytes, span }
    }

    fn number(&mut self, pair: Pair<'_, G>) -> Number {
        let span = self.span(&pair);
        let text = pair.as_str();
        let (digits, scale) = if let Some(d) = text.strip_suffix("KiB") {
            (d, 1024)
        } else if let Some(d) = text.strip_suffix("MiB") {
            (d, 1024 * 1024)
        } else {
            (text, 1)
        };
        let value = digits.parse::<u64>().ok().and_then(|v| v.checked_mul(scale));
        match value {
            Some(value) => Number { value, span },
            None => {
                self.diagnostics.push(
                    Diagnostic::error(codes::BAD_NUMBER, span, format!("`{text}` is too large"))
                        .with_label("this number")
                        .with_help("numbers must fit in 64 bits"),
                );
                Number { value: 0, span }
            }
        }
    }

    fn list(&mut self, pair: Pair<'_, G>) -> List {
        let span = self.span(&pair);
        let values = significant(pair).map(|p| self.value(p)).collect();
        List { values, span }
    }

    fn value(&mut self, pair: Pair<'_, G>) -> Value {
        match pair.as_rule() {
            G::string => Value::Str(self.string(pair)),
            G::list => Value::List(self.list(pair)),
            _ => Value::Ident(self.ident(pair)),
        }
    }

    fn values(&mut self, pair: Pair<'_, G>) -> Vec<Value> {
        significant(pair).map(|p| self.value(p)).collect()
    }

    fn address(&self, pair: Pair<'_, G>) -> Address {
        let span = self.span(&pair);
        let text = pair.as_str();
        let text = if pair.as_rule() == G::string { text.trim_matches('"') } else { text };
        Address { text: text.to_string(), span }
    }

    fn policy(&mut self, pair: Pair<'_, G>) -> Option<Policy> {
        let span = self.span(&pair);
        let mut inner = significant(pair).skip(1);
        let name = self.string(inner.next()?);
        let mut items = Vec::new();
        for item in inner {
            let item_span = self.span(&item);
            let kind = item.as_rule();
            let mut parts = significant(item).skip(1);
            let parsed = match kind {
                G::scope => {
                    let side = match parts.next()?.into_inner().next()?.as_rule() {
                        G::kw_local => Side::Local,
                        _ => Side::Remote,
                    };
                    let kind_pair = parts.next()?;
                    let is_port = kind_pair.as_rule() == G::scope_port;
                    let values = significant(kind_pair).skip(1);
                    let kind = if is_port {
                        ScopeKind::Port(values.map(|p| self.number(p)).collect())
                    } else {
                        ScopeKind::Addr(values.map(|p| self.address(p)).collect())
                    };
                    PolicyItem::Scope(Scope { side, kind, span: item_span })
                }
                G::default_decl => {
                    let value = match parts.next()?.as_rule() {
                        G::kw_allow => DefaultVerdict::Allow,
                        _ => DefaultVerdict::Deny,
                    };
                    PolicyItem::Default(Setting { value, span: item_span })
                }
                G::mode_decl => {
                    let value = match parts.next()?.as_rule() {
                        G::kw_audit => Mode::Audit,
                        _ => Mode::Enforce,
                    };
                    PolicyItem::Mode(Setting { value, span: item_span })
                }
                G::opaque_decl => {
                    let value = match parts.next()?.as_rule() {
                        G::kw_allow => OpaqueVerdict::Allow,
                        _ => OpaqueVerdict::Deny,
                    };
                    PolicyItem::Opaque(Setting { value, span: item_span })
                }
                G::get_body_decl => {
                    let value = match parts.next()?.as_rule() {
                        G::kw_allow => GetBodyVerdict::Allow,
                        _ => GetBodyVerdict::Deny,
                    };
                    PolicyItem::GetBody(Setting { value, span: item_span })
                }
                G::deny_with_decl => {
                    let part = parts.next()?;
                    let value = match part.as_rule() {
                        G::integer => DenyWith::Status(self.number(part)),
                        _ => DenyWith::Reset,
                    };
                    PolicyItem::DenyWith(Setting { value, span: item_span })
                }
                G::limits_decl => {
                    let entries = parts
                        .filter_map(|entry| {
                            let entry_span = self.span(&entry);
                            let mut e = significant(entry);
                            let name = self.ident(e.next()?);
                            let size = self.number(e.next()?);
                            Some(LimitEntry { name, size, span: entry_span })
                        })
                        .collect();
                    PolicyItem::Limits(Limits { entries, span: item_span })
                }
                G::rule => match self.rule(item_span, parts) {
                    Some(rule) => PolicyItem::Rule(rule),
                    None => continue,
                },
                _ => continue,
            };
            items.push(parsed);
        }
        Some(Policy { name, items, span })
    }

    fn rule<'a>(&mut self, span: Span, mut parts: impl Iterator<Item = Pair<'a, G>>) -> Option<Rule> {
        let name = self.string(parts.next()?);
        let mut matchers = Vec::new();
        let mut actions = Vec::new();
        for part in parts {
            match part.as_rule() {
                G::matcher => {
                    if let Some(action) = actions.last() {
                        let action: &Action = action;
                        self.diagnostics.push(
                            Diagnostic::error(codes::RULE_ACTION, self.span(&part), "a matcher after the rule's action")
                                .with_label("this matcher")
                                .with_related(action.span, "the action")
                                .with_help("write the matchers first and the action last"),
                        );
                    }
                    matchers.push(self.matcher(part)?);
                }
                _ => actions.push(self.action(part)?),
            }
        }
        let mut actions = actions.into_iter();
        let Some(action) = actions.next() else {
            self.diagnostics.push(
                Diagnostic::error(codes::RULE_ACTION, name.span, format!("rule `{}` has no action", name.text()))
                    .with_label("this rule")
                    .with_help("end the rule with `allow`, `deny`, `redirect \"TARGET\"` or `allow tunnel`"),
            );
            return None;
        };
        for extra in actions {
            self.diagnostics.push(
                Diagnostic::error(codes::RULE_ACTION, extra.span, "a rule has exactly one action")
                    .with_label("a second action")
                    .with_related(action.span, "the first action")
                    .with_help("split this into two rules, or remove one action"),
            );
        }
        Some(Rule { name, matchers, action, span })
    }

    fn matcher(&mut self, pair: Pair<'_, G>) -> Option<Matcher> {
        let span = self.span(&pair);
        let inner = significant(pair).next()?;
        let kind = inner.as_rule();
        let mut parts = significant(inner).skip(1);
        let kind = match kind {
            G::method_matcher => MatcherKind::Method(self.values(parts.next()?)),
            G::path_matcher => {
                let op = match parts.next()?.into_inner().next()?.as_rule() {
                    G::kw_exact => PathOp::Exact,
                    G::kw_prefix => PathOp::Prefix,
                    G::kw_starts_with => PathOp::StartsWith,
                    G::kw_suffix => PathOp::Suffix,
                    _ => PathOp::Glob,
                };
                MatcherKind::Path { op, values: self.values(parts.next()?) }
            }
            G::header_matcher => {
                let name = self.string(parts.next()?);
                let mut test = significant(parts.next()?);
                let first = test.next()?;
                let test = match first.as_rule() {
                    G::kw_present => HeaderTest::Present,
                    G::kw_absent => HeaderTest::Absent,
                    _ => {
                        let op = match first.into_inner().next()?.as_rule() {
                            G::kw_exact => ValueOp::Exact,
                            G::kw_prefix => ValueOp::Prefix,
                            G::kw_suffix => ValueOp::Suffix,
                            _ => ValueOp::Contains,
                        };
                        let mut next = test.next()?;
                        let nocase = next.as_rule() == G::kw_nocase;
                        if nocase {
                            next = test.next()?;
                        }
                        HeaderTest::Value { op, nocase, values: self.values(next) }
                    }
                };
                MatcherKind::Header { name, test }
            }
            G::host_matcher => {
                let op = match parts.next()?.into_inner().next()?.as_rule() {
                    G::kw_exact => HostOp::Exact,
                    _ => HostOp::Suffix,
                };
                MatcherKind::Host { op, values: self.values(parts.next()?) }
            }
            G::any_matcher => MatcherKind::Any(parts.filter_map(|m| self.matcher(m)).collect()),
            G::not_matcher => MatcherKind::Not(Box::new(self.matcher(parts.next()?)?)),
            _ => return None,
        };
        Some(Matcher { kind, span })
    }

    fn action(&mut self, pair: Pair<'_, G>) -> Option<Action> {
        let span = self.span(&pair);
        let mut inner = significant(pair);
        let kind_pair = inner.next()?.into_inner().next()?;
        let log = inner.next().is_some();
        let kind = match kind_pair.as_rule() {
            G::allow_tunnel => ActionKind::AllowTunnel,
            G::kw_allow => ActionKind::Allow,
            G::kw_deny => ActionKind::Deny,
            _ => {
                let mut parts = significant(kind_pair).skip(1);
                let target = self.string(parts.next()?);
                let ingress = parts.next().is_some();
                ActionKind::Redirect { target, ingress }
            }
        };
        Some(Action { kind, log, span })
    }

    fn test(&mut self, pair: Pair<'_, G>) -> Option<Test> {
        let span = self.span(&pair);
        let mut inner = significant(pair).skip(1);
        let name = self.string(inner.next()?);
        let mut items = Vec::new();
        for item in inner {
            let item_span = self.span(&item);
            let kind = item.as_rule();
            let parts: Vec<Pair<'_, G>> = significant(item).collect();
            let parsed = match kind {
                G::test_remote_port => TestItem::RemotePort(self.number(parts.last()?.clone())),
                G::test_local_port => TestItem::LocalPort(self.number(parts.last()?.clone())),
                G::test_remote_addr => TestItem::RemoteAddr(self.address(parts.last()?.clone())),
                G::test_bind => {
                    TestItem::Bind(parts.into_iter().skip(1).map(|p| self.string(p)).collect())
                }
                G::send => match self.send(item_span, parts) {
                    Some(send) => TestItem::Send(send),
                    None => continue,
                },
                _ => continue,
            };
            items.push(parsed);
        }
        Some(Test { name, items, span })
    }

    fn send(&mut self, span: Span, parts: Vec<Pair<'_, G>>) -> Option<Send> {
        let mut input = Vec::new();
        let mut split = None;
        let mut expect = Vec::new();
        let mut expect_is_list = false;
        for part in parts.into_iter().skip(1) {
            match part.as_rule() {
                G::string => input.push(self.string(part)),
                G::split => {
                    let sizes: Vec<Number> = significant(part).skip(1).map(|p| self.number(p)).collect();
                    if !sizes.is_empty() {
                        split = Some(sizes);
                    }
                }
                G::expect => {
                    let body = significant(part).nth(1)?;
                    if body.as_rule() == G::expect_list {
                        expect_is_list = true;
                        for e in significant(body) {
                            expect.push(self.expectation(e)?);
                        }
                    } else {
                        expect.push(self.expectation(body)?);
                    }
                }
                _ => {}
            }
        }
        Some(Send { input, split, expect, expect_is_list, span })
    }

    fn expectation(&mut self, pair: Pair<'_, G>) -> Option<Expectation> {
        let span = self.span(&pair);
        let mut inner = significant(pair);
        let first = inner.next()?;
        if first.as_rule() == G::kw_pending {
            return Some(Expectation { kind: ExpectationKind::Pending, span });
        }
        let action = match first.into_inner().next()?.as_rule() {
            G::kw_allow => VerdictAction::Allow,
            G::kw_deny => VerdictAction::Deny,
            G::kw_redirect => VerdictAction::Redirect,
            _ => VerdictAction::Tunnel,
        };
        let reason = match inner.next() {
            None => None,
            Some(reason) => {
                let r = reason.into_inner().next()?;
                Some(match r.as_rule() {
                    G::string => ExpectedReason::Rule(self.string(r)),
                    _ => ExpectedReason::Word(self.ident(r)),
                })
            }
        };
        Some(Expectation { kind: ExpectationKind::Verdict { action, reason }, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> File {
        match parse(FileId(0), text) {
            Ok(file) => file,
            Err(d) => panic!("parse failed: {:?}", d),
        }
    }

    fn parse_err(text: &str) -> Diagnostic {
        match parse(FileId(0), text) {
            Ok(file) => panic!("expected an error, got {file:?}"),
            Err(d) => d.0.into_iter().next().expect("at least one diagnostic"),
        }
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
import "std/http"
let ADMIN  = ["/admin", "/internal"]
let BACKUP = [GET, HEAD, "PROPFIND"]
policy "payments" {
  scope remote port 8080, 8443
  default deny
  mode enforce
  opaque deny
  limits { header_bytes 8KiB  headers 64 }
  rule "list-users" { method READ  path prefix "/api/v1/users"  allow }
  rule "admin" { path prefix ADMIN  deny  log }
  rule "grpc" { header "content-type" prefix "application/grpc"  redirect "envoy" }
  rule "ws" { path exact "/ws"  header "upgrade" exact nocase "websocket"  allow tunnel }
}
test "payments" {
  remote port 8080
  send "GET /api/v1/users/7 HTTP/1.1\r\nHost: pay\r\n\r\n" expect allow "list-users"
  send "a" "b" split 1, 1 expect [allow "list-users", deny malformed:cl-te, pending]
}
"#;
        let file = parse_ok(text);
        assert_eq!(file.items.len(), 5);
        let Item::Policy(policy) = &file.items[3] else { panic!("policy expected") };
        assert_eq!(policy.name.text(), "payments");
        assert_eq!(policy.items.len(), 9);
        let PolicyItem::Rule(ws) = &policy.items[8] else { panic!("rule expected") };
        assert_eq!(ws.action.kind, ActionKind::AllowTunnel);
        let MatcherKind::Header { test: HeaderTest::Value { nocase, .. }, .. } = &ws.matchers[1].kind else {
            panic!("header matcher expected")
        };
        assert!(nocase);
        let Item::Test(test) = &file.items[4] else { panic!("test expected") };
        let TestItem::Send(send) = &test.items[2] else { panic!("send expected") };
        assert_eq!(send.input.len(), 2);
        assert_eq!(send.split.as_ref().map(Vec::len), Some(2));
        assert_eq!(send.expect.len(), 3);
        assert_eq!(
            send.expect[1].kind,
            ExpectationKind::Verdict {
                action: VerdictAction::Deny,
                reason: Some(ExpectedReason::Word(Ident { name: "malformed:cl-te".into(), span: Span::default() }))
            }
        );
    }

    #[test]
    fn deny_with_takes_a_status_or_reset() {
        let file = parse_ok(r#"policy "p" { default deny  deny_with 451 } policy "q" { deny_with reset  default deny }"#);
        let settings: Vec<&DenyWith> = file
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Policy(policy) => Some(policy),
                _ => None,
            })
            .flat_map(|policy| &policy.items)
            .filter_map(|item| match item {
                PolicyItem::DenyWith(setting) => Some(&setting.value),
                _ => None,
            })
            .collect();
        assert_eq!(settings, [&DenyWith::Status(Number { value: 451, span: Span::default() }), &DenyWith::Reset]);
        // `deny_with` is one keyword, not `deny` followed by a name.
        let d = parse_err(r#"let deny_with = ["x"]"#);
        assert_eq!(d.code, codes::PARSE);
        let d = parse_err(r#"policy "p" { default deny  deny_with maybe }"#);
        assert!(d.message.contains("`reset`"), "{}", d.message);
    }

    #[test]
    fn escapes_decode_to_bytes() {
        let file = parse_ok(r#"let X = ["a\r\n\t\\\"\x00\xff"]"#);
        let Item::Let(l) = &file.items[0] else { panic!() };
        let Value::Str(s) = &l.value.values[0] else { panic!() };
        assert_eq!(s.bytes, b"a\r\n\t\\\"\x00\xff");
    }

    #[test]
    fn bad_escape_is_reported_at_the_escape() {
        let d = parse_err(r#"let X = ["ab\q"]"#);
        assert_eq!(d.code, codes::BAD_ESCAPE);
        assert_eq!((d.span.start, d.span.end), (12, 14));
    }

    #[test]
    fn rule_without_action() {
        let d = parse_err(r#"policy "p" { default deny rule "r" { method GET } }"#);
        assert_eq!(d.code, codes::RULE_ACTION);
        assert!(d.message.contains("no action"), "{}", d.message);
    }

    #[test]
    fn matcher_after_action() {
        let d = parse_err(r#"policy "p" { default deny rule "r" { allow method GET } }"#);
        assert_eq!(d.code, codes::RULE_ACTION);
    }

    #[test]
    fn keywords_are_not_names() {
        let d = parse_err(r#"let policy = ["x"]"#);
        assert_eq!(d.code, codes::PARSE);
        let d = parse_err(r#"policy "p" { default deny rule "r" { method bind allow } }"#);
        assert!(d.help.as_deref().unwrap_or("").contains("\"bind\""), "{d:?}");
    }

    #[test]
    fn parse_error_names_what_was_expected() {
        let d = parse_err(r#"policy "p" { default maybe }"#);
        assert_eq!(d.code, codes::PARSE);
        assert!(d.message.contains("`allow`") && d.message.contains("`maybe`"), "{}", d.message);
    }

    #[test]
    fn every_grammar_rule_has_a_human_name() {
        for grammar_rule in G::all_rules() {
            assert_ne!(describe(grammar_rule), "something else", "{grammar_rule:?} has no human name");
        }
        let keywords: Vec<String> = keywords().collect();
        for expected in ["starts_with", "get_body", "deny_with", "reset"] {
            assert!(keywords.iter().any(|k| k == expected), "`{expected}` is missing: {keywords:?}");
        }
        for keyword in &keywords {
            assert!(L7Parser::parse(G::keyword, keyword).is_ok(), "`{keyword}` is not a keyword of the grammar");
        }
    }

    #[test]
    fn a_misspelled_keyword_gets_a_suggestion() {
        let d = parse_err(r#"policy "p" { default dny }"#);
        assert_eq!(d.help.as_deref(), Some("did you mean `deny`?"));
        let d = parse_err(r#"polcy "p" { default deny }"#);
        assert_eq!(d.help.as_deref(), Some("did you mean `policy`?"));
        // Only a keyword the grammar takes there: `path` is near `pat`, but
        // no matcher may follow `default`.
        let d = parse_err(r#"policy "p" { default pat }"#);
        assert_eq!(d.help, None, "{d:?}");
    }

    #[test]
    fn an_unclosed_delimiter_is_reported_where_it_opens() {
        let text = "let A = [\"/a\"\npolicy \"p\" { default deny }\n";
        let d = parse_err(text);
        assert_eq!((d.code, d.span.start, d.span.end), (codes::UNCLOSED_DELIMITER, 8, 9));
        assert_eq!(d.message, "unclosed `[`");
        // Balanced braces: an item in the wrong block is a plain parse error.
        let d = parse_err(r#"policy "p" { default deny  rule "r" { method GET  allow  default allow } }"#);
        assert_eq!(d.code, codes::PARSE);
    }

    #[test]
    fn an_unterminated_string_is_reported_at_its_quote() {
        let d = parse_err("policy \"p\" {\n  default deny\n  rule \"r\" { path exact \"/a  allow }\n}\n");
        assert_eq!((d.code, d.span.start, d.span.end), (codes::UNTERMINATED_STRING, 52, 53));
        // An earlier error comes first.
        let d = parse_err("policy \"p\" {\n  defualt deny\n  rule \"r\" { path exact \"/a  allow }\n}\n");
        assert_eq!(d.code, codes::PARSE);
        // `#` in a string is not a comment, and `\` escapes the quote.
        let d = parse_err("policy \"p\" {\n  rule \"#\\\"\" { path exact \"/a  allow }\n}\n");
        assert_eq!(d.code, codes::UNTERMINATED_STRING);
    }

    #[test]
    fn sizes_scale() {
        let file = parse_ok(r#"policy "p" { default deny limits { header_bytes 16KiB headers 10 } }"#);
        let Item::Policy(p) = &file.items[0] else { panic!() };
        let PolicyItem::Limits(l) = &p.items[1] else { panic!() };
        assert_eq!(l.entries[0].size.value, 16384);
        assert_eq!(l.entries[1].size.value, 10);
    }
}
