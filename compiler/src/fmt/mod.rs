//! `l7c fmt`: one canonical layout for `.l7` source, comments kept.
//!
//! [`format_source`] parses with the one grammar ([`parse_tree`]), builds a
//! pretty-printing document ([`doc`]) from the raw pest tree, prints it in
//! 100 columns and then checks its own work (see *Invariants*).
//!
//! # The layout
//!
//! - Indentation is two spaces per block. Output ends with exactly one
//!   newline (an empty or blank file stays empty) and no line has trailing
//!   whitespace. Line ends are `\n`.
//! - Top level: one item per line, a blank line between items, except that
//!   consecutive `import`s, and consecutive `let`s, keep the blank lines the
//!   author wrote (at most one) so they can stay grouped.
//! - Inside `policy` and `test` blocks: one item per line, in the order
//!   written (settings too); blank lines between items are kept, at most one.
//!   Never a blank line right after `{` or right before `}`. An empty block
//!   is `{}`.
//! - `rule "name" { m1  m2  action }` on one line (two spaces between
//!   elements) when it fits in 100 columns and holds neither an `any` nor a
//!   comment; otherwise one matcher per line and the action last. `any { ... }`
//!   and `limits { header_bytes 8KiB  headers 64 }` follow the same rule
//!   (an `any` may be one line inside a multi-line rule). `log` is set apart
//!   from its action by two spaces: `deny  log`.
//! - Lists: `[a, b, c]`; when that does not fit (or holds a comment), one
//!   element per line, each followed by a comma, the closing `]` on its own
//!   line. An expectation list `expect [...]` likewise. Unbracketed value
//!   lists (`method GET, HEAD`, `scope remote port 80, 443`, `split 1, 2`,
//!   `bind "a", "b"`) are `, `-separated and never wrapped.
//! - A `send` of one string is one line:
//!   `send "..." split 1, 2 expect allow "r"`. Several
//!   adjacent strings go one per line, aligned under the first. `split` and
//!   `expect` follow the last string, or, when that line would pass 100
//!   columns, go on the next line, indented two more than `send`. A string
//!   is never split, so a line holding a long one may pass 100 columns.
//! - Tokens are reproduced as written: strings keep the author's escapes,
//!   numbers and sizes their spelling, methods their ident or string form.
//!   Tokens are separated by one space; `,` is followed by one space.
//!   A list written with a trailing comma loses it when printed on one line.
//! - Alignment, on consecutive lines only (a blank line, a comment line or
//!   any other line ends a run): the `{` of one-line rules, the `split` or
//!   `expect` of one-line single-string sends, and the `=` of `let`s line up
//!   one space after the longest head. A run is cut, from its top, into
//!   sections that align without passing 100 columns; a line that would
//!   pass them starts a new section. Trailing comments are not aligned (two
//!   spaces after their line), so a long line never drags its neighbours'.
//!
//! # Comments
//!
//! Every comment is kept, with trailing whitespace removed. A comment is
//! *trailing* when code precedes it on its line, *own-line* otherwise.
//!
//! - An own-line comment stays on its own line, at the indentation of the
//!   item that follows it; before a closing `}`/`]` (or at the end of the
//!   file) it takes the indentation of the block's items. Blank lines
//!   between comments and items are kept, at most one.
//! - A trailing comment stays at the end of the line of the construct it
//!   follows (an item, a list element, a `{` or `[`), two spaces after it.
//!   After a list element it follows the element's comma.
//! - A comment inside a construct that is printed on one line (between
//!   `path` and `prefix`, between `rule` and its name, between a `send`'s
//!   last string and `expect`, ...) moves to its own line just above that
//!   construct, at its indentation, in source order. Comments between the
//!   strings of a multi-string `send` stay between them.
//! - A block or list that holds a comment is never printed on one line.
//!
//! # Invariants
//!
//! - Every comment of the input is placed exactly once: the builder claims
//!   comments by byte range (gaps between a block's items, then whatever is
//!   left inside each item), and [`format_source`] fails rather than drop
//!   one. It then checks the output: it parses, holds the same multiset of
//!   comment texts, and, when the input builds an AST, builds an equal AST
//!   (ASTs compare without spans).
//! - The layout depends only on the tokens, the comments, where comments
//!   sit (trailing or own-line) and where blank lines are, all of which the
//!   output reproduces, so formatting is idempotent. Alignment is decided
//!   after the layout and only inserts spaces, which the layout ignores.

mod doc;

use crate::source::FileId;
use crate::syntax::parse::{parse_tree, G};
use doc::{broken_group, concat, group, nest, soft_group, text, Doc};
use pest::iterators::Pair;

/// Why a file could not be formatted.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The text does not match the grammar; the parser reports it in full.
    #[error("the file does not parse: {0}")]
    Parse(Box<pest::error::Error<G>>),
    /// The formatter failed its own checks (a bug in the formatter): the
    /// file is left as it was.
    #[error("internal formatter error: {0}")]
    Internal(String),
}

/// Formats one file's text in the canonical layout.
pub fn format_source(text: &str) -> Result<String, FormatError> {
    let root =
        parse_tree(text).map_err(FormatError::Parse)?.next().ok_or_else(|| internal("the parser returned no file"))?;
    let original_comments = comment_texts(&root);
    let mut builder = Builder { text, comments: Comments::collect(text, &root) };
    let document = builder.file(root)?;
    builder.comments.check_all_placed()?;
    let formatted = finish(&doc::print(&document));
    verify(text, &original_comments, &formatted)?;
    Ok(formatted)
}

fn internal(message: impl Into<String>) -> FormatError {
    FormatError::Internal(message.into())
}

/// The printer's output with whitespace-only line ends removed and exactly
/// one final newline.
fn finish(printed: &str) -> String {
    let mut out = String::with_capacity(printed.len() + 1);
    for line in printed.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let content_len = out.trim_end().len();
    out.truncate(content_len);
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The formatter's self-check: the output parses, keeps every comment and
/// means the same as the input.
fn verify(original: &str, original_comments: &[String], formatted: &str) -> Result<(), FormatError> {
    let formatted_root = parse_tree(formatted)
        .map_err(|error| internal(format!("the formatted text does not parse: {error}")))?
        .next()
        .ok_or_else(|| internal("the parser returned no file"))?;
    if comment_texts(&formatted_root) != original_comments {
        return Err(internal("the comments of the formatted text differ from the original's"));
    }
    if let Ok(before) = crate::syntax::parse(FileId(0), original) {
        match crate::syntax::parse(FileId(0), formatted) {
            Ok(after) if after == before => {}
            _ => return Err(internal("the formatted text does not mean the same as the original")),
        }
    }
    Ok(())
}

/// The texts of every comment under `root`, trimmed and sorted (a
/// multiset).
fn comment_texts(root: &Pair<'_, G>) -> Vec<String> {
    let mut texts: Vec<String> = root
        .clone()
        .into_inner()
        .flatten()
        .filter(|pair| pair.as_rule() == G::COMMENT)
        .map(|pair| pair.as_str().trim_end().to_string())
        .collect();
    texts.sort();
    texts
}

// ------------------------------------------------------------ comments

/// One comment of the input.
struct Comment {
    /// The comment from `#`, trailing whitespace removed.
    text: String,
    start: usize,
    end: usize,
    /// Nothing but whitespace precedes it on its line.
    own_line: bool,
}

/// Every comment of the file in source order, each claimed at most once.
struct Comments {
    list: Vec<Comment>,
    placed: Vec<bool>,
}

impl Comments {
    fn collect(source: &str, root: &Pair<'_, G>) -> Self {
        let mut list: Vec<Comment> = root
            .clone()
            .into_inner()
            .flatten()
            .filter(|pair| pair.as_rule() == G::COMMENT)
            .map(|pair| {
                let span = pair.as_span();
                let line_start =
                    source.get(..span.start()).and_then(|before| before.rfind('\n')).map_or(0, |at| at + 1);
                let own_line = source.get(line_start..span.start()).is_some_and(|prefix| prefix.trim().is_empty());
                Comment { text: pair.as_str().trim_end().to_string(), start: span.start(), end: span.end(), own_line }
            })
            .collect();
        list.sort_by_key(|comment| comment.start);
        let placed = vec![false; list.len()];
        Comments { list, placed }
    }

    /// Claims the comments not yet placed that start in `from..to`.
    fn take(&mut self, from: usize, to: usize) -> Vec<&Comment> {
        // The list is sorted by start: skip to the first that may be in range.
        let first = self.list.partition_point(|comment| comment.start < from);
        let mut taken = Vec::new();
        for (comment, placed) in self.list.iter().zip(self.placed.iter_mut()).skip(first) {
            if comment.start >= to {
                break;
            }
            if !*placed {
                *placed = true;
                taken.push(comment);
            }
        }
        taken
    }

    fn check_all_placed(&self) -> Result<(), FormatError> {
        match self.list.iter().zip(&self.placed).find(|(_, placed)| !**placed) {
            Some((comment, _)) => Err(internal(format!("comment `{}` was not placed", comment.text))),
            None => Ok(()),
        }
    }
}

/// The comments between two elements of a block (or before the first, or
/// after the last).
#[derive(Default)]
struct Gap {
    /// A comment on the same line as the element before the gap.
    trailing: Option<String>,
    /// Own-line comments, with whether a blank line precedes each.
    leading: Vec<(String, bool)>,
    /// Whether a blank line precedes the element after the gap.
    blank_before_next: bool,
}

// ------------------------------------------------------------ the builder

/// How a block's elements are laid out.
#[derive(Clone, Copy)]
struct BlockStyle {
    open: &'static str,
    close: &'static str,
    /// Between the delimiters and the elements when flat.
    pad: &'static str,
    /// Between elements when flat (after the comma, for lists).
    separator: &'static str,
    /// Elements are comma-separated, with a trailing comma when broken.
    commas: bool,
    may_be_flat: bool,
    /// Aligns the opening delimiter with those of neighbouring one-line
    /// blocks of this kind.
    anchor: Option<&'static str>,
}

const BRACES: BlockStyle =
    BlockStyle { open: "{", close: "}", pad: " ", separator: "  ", commas: false, may_be_flat: true, anchor: None };
const BRACKETS: BlockStyle =
    BlockStyle { open: "[", close: "]", pad: "", separator: " ", commas: true, may_be_flat: true, anchor: None };

/// `send ` is this wide: further strings of a send align under the first.
const SEND_ALIGN: usize = "send ".len();

struct Builder<'t> {
    text: &'t str,
    comments: Comments,
}

/// The inner pairs of `pair`, without comments and end-of-input markers.
fn significant<'t>(pair: &Pair<'t, G>) -> Vec<Pair<'t, G>> {
    pair.clone().into_inner().filter(|inner| !matches!(inner.as_rule(), G::COMMENT | G::EOI)).collect()
}

/// Where `pair`'s last token ends: its last inner pair's last token, or a
/// literal after it (`}`, `]`). A pest pair's own end may lie past
/// whitespace and comments its rule skipped before an optional part that
/// was absent (`allow # note` in `action = { action_kind ~ kw_log? }`).
fn tight_end(pair: &Pair<'_, G>) -> usize {
    let span = pair.as_span();
    let Some(last) = significant(pair).into_iter().rev().find(|inner| !inner.as_str().is_empty()) else {
        return span.end();
    };
    let mut end = tight_end(&last);
    let after_last = pair.get_input().get(end..span.end()).unwrap_or_default();
    let mut in_comment = false;
    for (offset, character) in after_last.char_indices() {
        match character {
            '\n' => in_comment = false,
            _ if in_comment => {}
            '#' => in_comment = true,
            c if c.is_whitespace() => {}
            c => end = span.end() - after_last.len() + offset + c.len_utf8(),
        }
    }
    end
}

fn tight_span(pair: &Pair<'_, G>) -> (usize, usize) {
    (pair.as_span().start(), tight_end(pair))
}

/// Whether a blank line (only whitespace between two line breaks) lies in
/// `from..to`. A comma alone on a line does not make one.
fn blank_between(source: &str, from: usize, to: usize) -> bool {
    let mut line_started = false;
    let mut line_is_blank = false;
    for character in source.get(from..to).unwrap_or_default().chars() {
        if character == '\n' {
            if line_started && line_is_blank {
                return true;
            }
            line_started = true;
            line_is_blank = true;
        } else if !character.is_whitespace() {
            line_is_blank = false;
        }
    }
    false
}

/// Whether the file puts a blank line between two top-level items of these
/// kinds whatever the author wrote.
fn blank_line_required(previous: G, next: G) -> bool {
    !(previous == next && matches!(next, G::import | G::let_decl))
}

impl<'t> Builder<'t> {
    /// Claims the comments in `from..to`, a stretch between two elements.
    fn gap(&mut self, from: usize, to: usize) -> Gap {
        let source = self.text;
        let mut gap = Gap::default();
        let mut cursor = from;
        for (index, comment) in self.comments.take(from, to).into_iter().enumerate() {
            // Only the first comment of a gap can share a line with code:
            // every comment runs to the end of its line.
            if index == 0 && !comment.own_line {
                gap.trailing = Some(comment.text.clone());
            } else {
                gap.leading.push((comment.text.clone(), blank_between(source, cursor, comment.start)));
            }
            cursor = comment.end;
        }
        gap.blank_before_next = blank_between(source, cursor, to);
        gap
    }

    /// One element of a block: its document, preceded by the comments inside
    /// it that no nested block claimed, each on its own line.
    fn unit(&mut self, pair: &Pair<'t, G>) -> Result<Doc, FormatError> {
        let built = self.node(pair)?;
        let (start, end) = tight_span(pair);
        let hoisted = self.comments.take(start, end);
        if hoisted.is_empty() {
            return Ok(built);
        }
        let mut parts = Vec::new();
        for comment in hoisted {
            parts.push(text(comment.text.clone()));
            parts.push(Doc::HardLine { blank: false });
        }
        parts.push(built);
        Ok(concat(parts))
    }

    /// Claims the comments of a block's elements and builds each element.
    /// `open_end` is just past the opening delimiter (0 for the file),
    /// `close_start` at the closing one (the end of the text for the file).
    fn elements(
        &mut self,
        open_end: usize,
        children: &[Pair<'t, G>],
        close_start: usize,
    ) -> Result<Elements, FormatError> {
        let mut elements = Elements::default();
        let mut cursor = open_end;
        let mut previous_trailing = &mut elements.open_trailing;
        let mut items = Vec::with_capacity(children.len());
        for child in children {
            let (start, end) = tight_span(child);
            let gap = self.gap(cursor, start);
            *previous_trailing = gap.trailing;
            let doc = self.unit(child)?;
            items.push(Element {
                leading: gap.leading,
                blank_before: gap.blank_before_next,
                doc,
                trailing: None,
                kind: child.as_rule(),
            });
            previous_trailing = match items.last_mut() {
                Some(element) => &mut element.trailing,
                None => return Err(internal("an element was just pushed")),
            };
            cursor = end;
        }
        let closing = self.gap(cursor, close_start);
        *previous_trailing = closing.trailing;
        elements.items = items;
        elements.closing = closing.leading;
        Ok(elements)
    }

    fn file(&mut self, root: Pair<'t, G>) -> Result<Doc, FormatError> {
        let items = significant(&root);
        let elements = self.elements(0, &items, self.text.len())?;
        // Nothing precedes the file's first comment on its line, so it is
        // own-line and this is empty; kept rather than lost if ever not.
        let mut parts: Vec<Doc> = elements.open_trailing.into_iter().map(text).collect();
        let push_line = |parts: &mut Vec<Doc>, blank: bool| {
            // Nothing, not even a break, before the file's first line.
            if !parts.is_empty() {
                parts.push(Doc::HardLine { blank });
            }
        };
        let mut previous_kind = None;
        for element in elements.items {
            let mut required = previous_kind.is_some_and(|previous| blank_line_required(previous, element.kind));
            for (comment, blank) in element.leading {
                push_line(&mut parts, blank || required);
                required = false;
                parts.push(text(comment));
            }
            push_line(&mut parts, element.blank_before || required);
            parts.push(element.doc);
            if let Some(trailing) = element.trailing {
                parts.push(Doc::Trailing(trailing));
            }
            previous_kind = Some(element.kind);
        }
        for (comment, blank) in elements.closing {
            push_line(&mut parts, blank);
            parts.push(text(comment));
        }
        Ok(concat(parts))
    }

    /// A block between delimiters: `{ ... }` or `[ ... ]`.
    fn block(
        &mut self,
        open_end: usize,
        children: &[Pair<'t, G>],
        close_start: usize,
        style: BlockStyle,
    ) -> Result<Doc, FormatError> {
        let elements = self.elements(open_end, children, close_start)?;
        if elements.items.is_empty() && elements.closing.is_empty() && elements.open_trailing.is_none() {
            return Ok(text(format!("{}{}", style.open, style.close)));
        }
        let count = elements.items.len();
        let mut head = Vec::new();
        if let Some(kind) = style.anchor {
            head.push(Doc::Anchor { kind, flat_only: true });
        }
        head.push(text(style.open));
        if let Some(trailing) = elements.open_trailing {
            head.push(Doc::Trailing(trailing));
        }
        let mut body = Vec::new();
        for (index, element) in elements.items.into_iter().enumerate() {
            let flat_before = if index == 0 { style.pad } else { style.separator };
            // Never a blank line right after the opening delimiter.
            let mut first_line = index == 0;
            let mut line_before = |body: &mut Vec<Doc>, blank: bool, first_of_element: bool| {
                let blank = blank && !first_line;
                first_line = false;
                body.push(if first_of_element {
                    Doc::Line { flat: flat_before, blank }
                } else {
                    Doc::HardLine { blank }
                });
            };
            let mut first_of_element = true;
            for (comment, blank) in element.leading {
                line_before(&mut body, blank, first_of_element);
                first_of_element = false;
                body.push(text(comment));
            }
            line_before(&mut body, element.blank_before, first_of_element);
            body.push(element.doc);
            if style.commas {
                body.push(if index + 1 < count { text(",") } else { Doc::IfBroken(",") });
            }
            if let Some(trailing) = element.trailing {
                body.push(Doc::Trailing(trailing));
            }
        }
        for (position, (comment, blank)) in elements.closing.iter().enumerate() {
            let blank = *blank && !(count == 0 && position == 0);
            body.push(if position == 0 { Doc::Line { flat: "", blank } } else { Doc::HardLine { blank } });
            body.push(text(comment.as_str()));
        }
        // A comment runs to the end of its line: after one, the closing
        // delimiter must start a new line.
        let close_line = match (elements.closing.is_empty(), count) {
            (false, _) => Doc::HardLine { blank: false },
            (true, 0) => Doc::Line { flat: "", blank: false },
            (true, _) => Doc::Line { flat: style.pad, blank: false },
        };
        head.extend([nest(2, concat(body)), close_line, text(style.close)]);
        let content = concat(head);
        Ok(if style.may_be_flat { group(content) } else { broken_group(content) })
    }

    /// A construct whose first `header_len` significant parts are words
    /// before `{`, and the rest its block: `rule "name" { ... }`.
    fn braced(&mut self, pair: &Pair<'t, G>, header_len: usize, style: BlockStyle) -> Result<Doc, FormatError> {
        let parts = significant(pair);
        let (header, children) = parts.split_at(header_len.min(parts.len()));
        let header_end = header.last().map_or(pair.as_span().start(), tight_end);
        let open_end = self.open_delimiter_end(header_end, '{')?;
        let close_start = self.close_delimiter_start(pair, '}')?;
        let mut words = Vec::new();
        for part in header {
            words.push(self.node(part)?);
            words.push(text(" "));
        }
        words.push(self.block(open_end, children, close_start, style)?);
        Ok(concat(words))
    }

    /// Just past the `delimiter` that comes next after `from`, skipping
    /// whitespace and comments.
    fn open_delimiter_end(&self, from: usize, delimiter: char) -> Result<usize, FormatError> {
        let rest = self.text.get(from..).ok_or_else(|| internal("a position inside the text"))?;
        let mut in_comment = false;
        for (offset, character) in rest.char_indices() {
            match character {
                '\n' => in_comment = false,
                _ if in_comment => {}
                '#' => in_comment = true,
                c if c == delimiter => return Ok(from + offset + c.len_utf8()),
                c if c.is_whitespace() => {}
                _ => break,
            }
        }
        Err(internal(format!("expected `{delimiter}` at byte {from}")))
    }

    /// Where `pair`'s closing `delimiter` starts: every block rule of the
    /// grammar ends with its literal closing delimiter.
    fn close_delimiter_start(&self, pair: &Pair<'t, G>, delimiter: char) -> Result<usize, FormatError> {
        let end = pair.as_span().end();
        let start = end.saturating_sub(delimiter.len_utf8());
        match self.text.get(start..end) {
            Some(found) if found.starts_with(delimiter) => Ok(start),
            _ => Err(internal(format!("expected `{delimiter}` before byte {end}"))),
        }
    }

    /// A bracketed list, `[...]`.
    fn list(&mut self, pair: &Pair<'t, G>) -> Result<Doc, FormatError> {
        let open_end = pair.as_span().start() + 1;
        if self.text.get(pair.as_span().start()..open_end) != Some("[") {
            return Err(internal("a list starts with `[`"));
        }
        let close_start = self.close_delimiter_start(pair, ']')?;
        self.block(open_end, &significant(pair), close_start, BRACKETS)
    }

    /// Any construct, by grammar rule.
    fn node(&mut self, pair: &Pair<'t, G>) -> Result<Doc, FormatError> {
        let parts = significant(pair);
        match pair.as_rule() {
            G::policy | G::test => self.braced(pair, 2, BlockStyle { may_be_flat: false, ..BRACES }),
            G::rule => {
                let holds_any = pair.clone().into_inner().flatten().any(|inner| inner.as_rule() == G::any_matcher);
                self.braced(pair, 2, BlockStyle { may_be_flat: !holds_any, anchor: Some("rule"), ..BRACES })
            }
            G::any_matcher | G::limits_decl => self.braced(pair, 1, BRACES),
            G::list | G::expect_list => self.list(pair),
            G::let_decl => {
                // `let NAME = LIST`: the `=` is a literal of the grammar.
                let (head, value) = parts.split_at(parts.len().saturating_sub(1));
                let mut docs = Vec::new();
                for part in head {
                    if !docs.is_empty() {
                        docs.push(text(" "));
                    }
                    docs.push(self.node(part)?);
                }
                docs.push(Doc::Anchor { kind: "let", flat_only: false });
                docs.push(text(" = "));
                for part in value {
                    docs.push(self.node(part)?);
                }
                Ok(concat(docs))
            }
            // A keyword, then a comma-separated run.
            G::scope_port | G::scope_addr | G::test_bind | G::split => {
                let mut docs = Vec::new();
                for (index, part) in parts.iter().enumerate() {
                    if index == 1 {
                        docs.push(text(" "));
                    } else if index > 1 {
                        docs.push(text(", "));
                    }
                    docs.push(self.node(part)?);
                }
                Ok(concat(docs))
            }
            G::values => {
                let mut docs = Vec::new();
                for (index, part) in parts.iter().enumerate() {
                    if index > 0 {
                        docs.push(text(", "));
                    }
                    docs.push(self.node(part)?);
                }
                Ok(concat(docs))
            }
            G::send => self.send(&parts),
            // `log` is a flag on the action, set apart: `deny  log`.
            G::action => {
                let mut docs = Vec::new();
                for part in &parts {
                    if !docs.is_empty() {
                        docs.push(text(if part.as_rule() == G::kw_log { "  " } else { " " }));
                    }
                    docs.push(self.node(part)?);
                }
                Ok(concat(docs))
            }
            _ if parts.is_empty() => {
                let token = pair.as_str();
                if token.contains('\n') {
                    return Err(internal(format!("a token spanning lines: {:?}", pair.as_rule())));
                }
                Ok(text(token))
            }
            // Words separated by one space: `path prefix "/a"`, `allow tunnel`.
            _ => self.spaced(&parts),
        }
    }

    fn spaced(&mut self, parts: &[Pair<'t, G>]) -> Result<Doc, FormatError> {
        let mut docs = Vec::new();
        for part in parts.iter().filter(|part| !part.as_str().is_empty()) {
            if !docs.is_empty() {
                docs.push(text(" "));
            }
            docs.push(self.node(part)?);
        }
        Ok(concat(docs))
    }

    /// `send "..." ["..."]... [split N, ...] expect E`.
    fn send(&mut self, parts: &[Pair<'t, G>]) -> Result<Doc, FormatError> {
        let (strings, rest): (Vec<&Pair<'t, G>>, Vec<&Pair<'t, G>>) =
            parts.iter().skip(1).partition(|part| part.as_rule() == G::string);
        let single_string = strings.len() == 1;
        let mut lines = Vec::new();
        let mut previous_end = None;
        for string in strings {
            if let Some(previous_end) = previous_end {
                let gap = self.gap(previous_end, string.as_span().start());
                if let Some(trailing) = gap.trailing {
                    lines.push(Doc::Trailing(trailing));
                }
                lines.push(Doc::HardLine { blank: false });
                for (comment, _) in gap.leading {
                    lines.push(text(comment));
                    lines.push(Doc::HardLine { blank: false });
                }
            }
            lines.push(self.node(string)?);
            previous_end = Some(string.as_span().end());
        }
        let mut tail = Vec::new();
        for part in rest.into_iter().filter(|part| !part.as_str().is_empty()) {
            if !tail.is_empty() {
                tail.push(text(" "));
            }
            tail.push(self.node(part)?);
        }
        if tail.is_empty() {
            return Ok(concat(vec![text("send "), nest(SEND_ALIGN, concat(lines))]));
        }
        // `split ... expect ...` follows the last string, or goes on a line
        // of its own when that does not fit. The choice is the tail's own:
        // an expectation list holding a comment breaks by itself.
        let mut after_space = vec![text(" ")];
        if single_string {
            after_space.push(Doc::Anchor { kind: "send", flat_only: true });
        }
        after_space.extend(tail.iter().cloned());
        let after_break = nest(2, concat([vec![Doc::Line { flat: " ", blank: false }], tail].concat()));
        let tail = Doc::Choice { flat: Box::new(concat(after_space)), broken: Box::new(after_break) };
        Ok(concat(vec![text("send "), nest(SEND_ALIGN, concat(lines)), soft_group(tail)]))
    }
}

/// A block's elements with their comments, ready to lay out.
#[derive(Default)]
struct Elements {
    /// A comment on the line of the opening delimiter.
    open_trailing: Option<String>,
    items: Vec<Element>,
    /// Own-line comments before the closing delimiter (or the end of the
    /// file), with whether a blank line precedes each.
    closing: Vec<(String, bool)>,
}

struct Element {
    /// Own-line comments before it, with whether a blank line precedes each.
    leading: Vec<(String, bool)>,
    /// Whether a blank line precedes the element itself.
    blank_before: bool,
    doc: Doc,
    /// A comment at the end of its last line.
    trailing: Option<String>,
    kind: G,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(text: &str) -> String {
        match format_source(text) {
            Ok(formatted) => formatted,
            Err(error) => panic!("formatting failed: {error}\n{text}"),
        }
    }

    /// Formats, and checks that formatting again changes nothing.
    fn canonical(text: &str) -> String {
        let once = format(text);
        assert_eq!(format(&once), once, "not idempotent for\n{text}");
        once
    }

    #[test]
    fn a_short_rule_is_one_line() {
        let text =
            "policy \"p\" {\ndefault deny\nrule \"r\" {\n method GET, HEAD\n   path prefix \"/a\"\n allow log\n }\n}";
        assert_eq!(
            canonical(text),
            "policy \"p\" {\n  default deny\n  rule \"r\" { method GET, HEAD  path prefix \"/a\"  allow  log }\n}\n"
        );
    }

    #[test]
    fn consecutive_one_line_rules_align_their_braces() {
        let text = "policy \"p\" {\n  rule \"a\" { deny }\n  rule \"long-name\" { allow }\n  rule \"multi\" {\n    any { method GET }\n    allow\n  }\n  rule \"bb\" { deny }\n  # apart\n  rule \"c\" { deny }\n}\n";
        assert_eq!(
            canonical(text),
            "policy \"p\" {\n  rule \"a\"         { deny }\n  rule \"long-name\" { allow }\n  rule \"multi\" {\n    any { method GET }\n    allow\n  }\n  rule \"bb\" { deny }\n  # apart\n  rule \"c\" { deny }\n}\n"
        );
    }

    #[test]
    fn consecutive_sends_align_their_expectations() {
        let text = "test \"t\" {\n  send \"a\" expect allow\n  send \"bbbb\" split 1 expect deny\n  send \"c\"\n       \"d\" expect pending\n}\n";
        assert_eq!(
            canonical(text),
            "test \"t\" {\n  send \"a\"    expect allow\n  send \"bbbb\" split 1 expect deny\n  send \"c\"\n       \"d\" expect pending\n}\n"
        );
    }

    #[test]
    fn a_send_too_long_for_its_line_puts_expect_below() {
        let request = format!("GET /{} HTTP/1.1\\r\\n\\r\\n", "x".repeat(80));
        let text = format!("test \"t\" {{\n  send \"{request}\" expect allow \"r\"\n}}\n");
        assert_eq!(canonical(&text), format!("test \"t\" {{\n  send \"{request}\"\n    expect allow \"r\"\n}}\n"));
    }

    #[test]
    fn lets_align_their_equals_signs() {
        assert_eq!(canonical("let A = [\"a\"]\nlet BBB = [\"b\"]"), "let A   = [\"a\"]\nlet BBB = [\"b\"]\n");
    }

    #[test]
    fn a_rule_of_exactly_100_columns_stays_on_one_line() {
        let prefix = "  rule \"r\" { path prefix \"";
        let suffix = "\"  allow }";
        let path = "a".repeat(100 - prefix.len() - suffix.len());
        let text = format!("policy \"p\" {{\n{prefix}{path}{suffix}\n}}\n");
        assert_eq!(canonical(&text), text);
        let longer = text.replace(&path, &format!("{path}b"));
        assert!(canonical(&longer).contains("  rule \"r\" {\n    path prefix"));
    }

    #[test]
    fn a_rule_with_any_is_multi_line() {
        let text = "policy \"p\" { rule \"r\" { any { method GET  method HEAD } allow } }";
        assert_eq!(
            canonical(text),
            "policy \"p\" {\n  rule \"r\" {\n    any { method GET  method HEAD }\n    allow\n  }\n}\n"
        );
    }

    #[test]
    fn a_long_list_wraps_one_element_per_line() {
        let elements: Vec<String> = (0..12).map(|index| format!("\"/path/number/{index}\"")).collect();
        let text = format!("let PATHS = [{}]", elements.join(","));
        let expected =
            format!("let PATHS = [\n{}]\n", elements.iter().map(|e| format!("  {e},\n")).collect::<String>());
        assert_eq!(canonical(&text), expected);
    }

    #[test]
    fn a_short_list_drops_its_trailing_comma() {
        assert_eq!(canonical("let X = [ GET ,HEAD, \"M.SEARCH\", ]"), "let X = [GET, HEAD, \"M.SEARCH\"]\n");
    }

    #[test]
    fn strings_keep_their_escapes() {
        let text = "let X = [\"a\\x41\\r\\n\\\"\\\\\", \"A\"]\n";
        assert_eq!(canonical(text), text);
    }

    #[test]
    fn a_comment_between_tokens_moves_above_its_line() {
        let text = "policy \"p\" {\n  rule \"r\" {\n    path # why\n      prefix \"/a\"\n    allow\n  }\n}\n";
        assert_eq!(
            canonical(text),
            "policy \"p\" {\n  rule \"r\" {\n    # why\n    path prefix \"/a\"\n    allow\n  }\n}\n"
        );
    }

    #[test]
    fn trailing_comments_stay_on_their_line() {
        let text = "import \"std/http\"   # methods\nlet X = [\"a\", # first\n \"b\"]";
        assert_eq!(canonical(text), "import \"std/http\"  # methods\n\nlet X = [\n  \"a\",  # first\n  \"b\",\n]\n");
    }

    #[test]
    fn a_comment_after_an_opening_brace_stays_there() {
        assert_eq!(
            canonical("policy \"p\" { limits { # tight\n headers 8 } }"),
            "policy \"p\" {\n  limits {  # tight\n    headers 8\n  }\n}\n"
        );
    }

    #[test]
    fn comments_before_a_closing_brace_take_the_items_indentation() {
        assert_eq!(
            canonical("policy \"p\" {\n  default deny\n\n\n# later\n}\n# end\n"),
            "policy \"p\" {\n  default deny\n\n  # later\n}\n# end\n"
        );
    }

    #[test]
    fn a_comment_alone_before_a_closing_brace_breaks_the_block() {
        assert_eq!(
            canonical("policy \"p\" { rule \"r\" { deny log\n# why\n} limits { headers 1\n# more\n} }"),
            "policy \"p\" {\n  rule \"r\" {\n    deny  log\n    # why\n  }\n  limits {\n    headers 1\n    # more\n  }\n}\n"
        );
        assert_eq!(canonical("let X = [\n# none yet\n]"), "let X = [\n  # none yet\n]\n");
    }

    #[test]
    fn a_commented_expectation_list_breaks_alone() {
        assert_eq!(
            canonical("test \"t\" { send \"x\" expect [ # why\n deny ] }"),
            "test \"t\" {\n  send \"x\" expect [  # why\n    deny,\n  ]\n}\n"
        );
    }

    #[test]
    fn a_comma_on_a_line_of_its_own_is_no_blank_line() {
        let long: Vec<String> = (0..9).map(|index| format!("\"/some/long/path/{index}\"")).collect();
        let text = format!("let X = [{}\n,\n{}]", long[..4].join(", "), long[4..].join(", "));
        assert!(!canonical(&text).contains("\n\n"), "{}", canonical(&text));
    }

    #[test]
    fn top_level_items_get_a_blank_line_but_imports_and_lets_may_group() {
        let text = "import \"a\"\nimport \"b\"\nlet A = [\"x\"]\nlet B = [\"y\"]\n\n\n\nlet C = [\"z\"]\npolicy \"p\" {}\ntest \"t\" {}";
        assert_eq!(
            canonical(text),
            "import \"a\"\nimport \"b\"\n\nlet A = [\"x\"]\nlet B = [\"y\"]\n\nlet C = [\"z\"]\n\npolicy \"p\" {}\n\ntest \"t\" {}\n"
        );
    }

    #[test]
    fn the_blank_line_goes_before_an_items_leading_comments() {
        assert_eq!(
            canonical("import \"a\"\n# the policy\npolicy \"p\" {}"),
            "import \"a\"\n\n# the policy\npolicy \"p\" {}\n"
        );
    }

    #[test]
    fn sends_with_several_strings_align_them() {
        let text = "test \"t\" {\nsend \"GET / HTTP/1.1\\r\\n\" \"Host: a\\r\\n\\r\\n\"   split 1,2 expect [allow \"r\",deny default]\n}";
        assert_eq!(
            canonical(text),
            "test \"t\" {\n  send \"GET / HTTP/1.1\\r\\n\"\n       \"Host: a\\r\\n\\r\\n\" split 1, 2 expect [allow \"r\", deny default]\n}\n"
        );
    }

    #[test]
    fn crlf_and_tabs_are_normalised() {
        assert_eq!(
            canonical("policy \"p\" {\r\n\tdefault deny\t# tab\r\n}\r\n"),
            "policy \"p\" {\n  default deny  # tab\n}\n"
        );
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert_eq!(canonical(""), "");
        assert_eq!(canonical("\n\n  \n"), "");
        assert_eq!(canonical("\n# only\n\n\n#  comments   \n\n"), "# only\n\n#  comments\n");
    }

    #[test]
    fn a_file_that_does_not_parse_is_not_formatted() {
        assert!(matches!(format_source("policy {"), Err(FormatError::Parse(_))));
    }

    #[test]
    fn the_pest_end_of_an_action_is_not_its_last_token() {
        // `action = { action_kind ~ kw_log? }` skips the comment looking for
        // `log`, so the pair's span covers it; the comment still trails.
        assert_eq!(
            canonical("policy \"p\" {\n  rule \"r\" {\n    allow # why\n  }\n}\n"),
            "policy \"p\" {\n  rule \"r\" {\n    allow  # why\n  }\n}\n"
        );
    }
}
