//! A small pretty-printing document algebra, after Wadler's "prettier
//! printer" and the printer of the prettier project, and the printer that
//! lays a document out in [`WIDTH`] columns.
//!
//! Invariants:
//! - [`Doc::Text`] never holds a newline; only [`Doc::Line`],
//!   [`Doc::HardLine`] and the printer's own indentation produce line
//!   structure, so every output line is one indentation plus texts.
//! - A group that holds a hard break ([`Doc::HardLine`], a
//!   [`Doc::Trailing`] comment, or a nested group that must break) is marked
//!   broken when it is built ([`group`]), and a broken group is printed
//!   broken even inside a flat one, so the printer never prints a hard break
//!   in flat mode. A [`soft_group`] is not marked: its forced breaks all sit
//!   in nested broken groups.
//! - Indentation is written lazily, just before the next text, so blank
//!   lines and line ends never carry trailing spaces.
//! - Alignment ([`Doc::Anchor`]) only ever inserts spaces, after layout, and
//!   never makes a line's code (what precedes a trailing comment) wider than
//!   [`WIDTH`]: which groups break is decided without it, so it cannot
//!   change the layout it decorates.

/// The column limit a flat group must fit in (a line of exactly this many
/// characters fits). Columns count characters (Unicode scalar values), not
/// bytes.
pub(super) const WIDTH: usize = 100;

#[derive(Debug, Clone)]
pub(super) enum Doc {
    /// Literal text without newlines.
    Text(String),
    Concat(Vec<Doc>),
    /// Line breaks inside are indented this many more columns.
    Nest(usize, Box<Doc>),
    /// Printed flat (its lines as their `flat` text) when it fits on the
    /// current line and is not `broken`; otherwise every line breaks.
    Group {
        content: Box<Doc>,
        broken: bool,
    },
    /// A break in a broken group, `flat` in a flat one. `blank` adds an empty
    /// line before the next one when broken.
    Line {
        flat: &'static str,
        blank: bool,
    },
    /// A break whatever the group's mode.
    HardLine {
        blank: bool,
    },
    /// Text printed only when the enclosing group is broken (a trailing
    /// comma).
    IfBroken(&'static str),
    /// A comment at the end of a line: two spaces, then the comment. A break
    /// always follows it.
    Trailing(String),
    /// A zero-width alignment point. On consecutive lines that each hold an
    /// anchor of the same kind, spaces are inserted at the anchors so they
    /// line up, in sections within which no line then exceeds [`WIDTH`].
    /// With `flat_only`, the anchor counts only where its group is printed
    /// flat.
    Anchor {
        kind: &'static str,
        flat_only: bool,
    },
    /// One of two documents, by the mode of the enclosing group: so that
    /// what follows a break may be indented differently from what follows
    /// a space.
    Choice {
        flat: Box<Doc>,
        broken: Box<Doc>,
    },
}

pub(super) fn text(value: impl Into<String>) -> Doc {
    Doc::Text(value.into())
}

pub(super) fn concat(parts: Vec<Doc>) -> Doc {
    Doc::Concat(parts)
}

pub(super) fn nest(by: usize, inner: Doc) -> Doc {
    Doc::Nest(by, Box::new(inner))
}

/// A group that breaks only if it must (it holds a hard break) or does not
/// fit.
pub(super) fn group(content: Doc) -> Doc {
    let broken = content.must_break();
    Doc::Group { content: Box::new(content), broken }
}

/// A group whose own lines break only when what comes before the first
/// forced break inside it does not fit: a nested group that must break
/// (a list holding a comment) breaks alone. Nothing inside it may be a hard
/// break outside such a nested group.
pub(super) fn soft_group(content: Doc) -> Doc {
    Doc::Group { content: Box::new(content), broken: false }
}

/// A group that always breaks.
pub(super) fn broken_group(content: Doc) -> Doc {
    Doc::Group { content: Box::new(content), broken: true }
}

impl Doc {
    /// Whether this document cannot be printed on one line.
    fn must_break(&self) -> bool {
        match self {
            Doc::Text(_) | Doc::Line { .. } | Doc::IfBroken(_) | Doc::Anchor { .. } => false,
            Doc::HardLine { .. } | Doc::Trailing(_) => true,
            Doc::Concat(parts) => parts.iter().any(Doc::must_break),
            Doc::Nest(_, inner) => inner.must_break(),
            Doc::Group { broken, .. } => *broken,
            Doc::Choice { flat, broken } => flat.must_break() && broken.must_break(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flat,
    Broken,
}

/// One pending piece of work: a document, its indentation and the mode of
/// the group it sits in.
type Command<'d> = (usize, Mode, &'d Doc);

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Lays the document out and aligns its anchors. The result has no trailing
/// whitespace on any line and no final newline (the caller adds it).
pub(super) fn print(doc: &Doc) -> String {
    let out = lay_out(doc);
    align(&out)
}

/// Where an anchor was printed.
struct AnchorAt {
    kind: &'static str,
    /// Byte offset in the output.
    offset: usize,
    line: usize,
    column: usize,
}

fn lay_out(doc: &Doc) -> Output {
    let mut out = Output::default();
    let mut stack: Vec<Command<'_>> = vec![(0, Mode::Broken, doc)];
    while let Some((indent, mode, doc)) = stack.pop() {
        match doc {
            Doc::Text(value) => out.write(value),
            Doc::Concat(parts) => stack.extend(parts.iter().rev().map(|part| (indent, mode, part))),
            Doc::Nest(by, inner) => stack.push((indent + by, mode, inner)),
            Doc::Group { content, broken } => {
                // A group that must break breaks even inside a flat one (a
                // soft group's nested list holding a comment).
                let flat = !broken && (mode == Mode::Flat || fits(content, &stack, WIDTH.saturating_sub(out.column)));
                stack.push((indent, if flat { Mode::Flat } else { Mode::Broken }, content));
            }
            Doc::Line { flat, blank } => match mode {
                Mode::Flat => out.write(flat),
                Mode::Broken => out.newline(indent, *blank),
            },
            Doc::HardLine { blank } => out.newline(indent, *blank),
            Doc::IfBroken(value) => {
                if mode == Mode::Broken {
                    out.write(value);
                }
            }
            Doc::Trailing(comment) => {
                out.code_width_before_comment.push((out.line, out.column));
                out.write("  ");
                out.write(comment);
            }
            Doc::Anchor { kind, flat_only } => {
                if mode == Mode::Flat || !flat_only {
                    out.anchor(kind);
                }
            }
            Doc::Choice { flat, broken } => {
                stack.push((indent, mode, if mode == Mode::Flat { flat } else { broken }));
            }
        }
    }
    out
}

/// Pads anchors of one kind on consecutive lines to a common column. A run
/// of such lines is cut, from the top, into sections that each align
/// without any line's code passing [`WIDTH`] (a trailing comment may pass
/// it anyway); a section of one line is left alone.
fn align(out: &Output) -> String {
    let (text, anchors) = (&out.text, &out.anchors);
    let mut line_widths: Vec<usize> = text.split('\n').map(width).collect();
    for &(line, code_width) in &out.code_width_before_comment {
        if let Some(line_width) = line_widths.get_mut(line) {
            *line_width = code_width;
        }
    }
    let line_width = |anchor: &AnchorAt| line_widths.get(anchor.line).copied().unwrap_or(0);
    let mut insertions: Vec<(usize, usize)> = Vec::new();
    let mut section: Vec<&AnchorAt> = Vec::new();
    let mut close = |section: &mut Vec<&AnchorAt>| {
        let target = section.iter().map(|anchor| anchor.column).max().unwrap_or(0);
        if section.len() > 1 {
            insertions.extend(section.iter().map(|anchor| (anchor.offset, target - anchor.column)));
        }
        section.clear();
    };
    for anchor in anchors {
        let continues =
            section.last().is_some_and(|previous| previous.kind == anchor.kind && previous.line + 1 == anchor.line);
        let target = section.iter().map(|member| member.column).max().unwrap_or(0).max(anchor.column);
        let fits = section.iter().chain([&anchor]).all(|member| line_width(member) + (target - member.column) <= WIDTH);
        if !(continues && fits) {
            close(&mut section);
        }
        section.push(anchor);
    }
    close(&mut section);
    let mut aligned = String::with_capacity(text.len() + insertions.iter().map(|(_, pad)| pad).sum::<usize>());
    let mut copied = 0;
    for (offset, pad) in insertions {
        aligned.push_str(text.get(copied..offset).unwrap_or_default());
        aligned.extend(std::iter::repeat_n(' ', pad));
        copied = offset;
    }
    aligned.push_str(text.get(copied..).unwrap_or_default());
    aligned
}

/// Whether `first`, printed flat, and what follows it up to the next line
/// break fit in `room` columns. A trailing comment ends the measure: a
/// comment may run past the limit.
fn fits(first: &Doc, rest: &[Command<'_>], room: usize) -> bool {
    let mut room = room as isize;
    let mut pending: Vec<(Mode, &Doc)> = vec![(Mode::Flat, first)];
    // The stack's top is its end: what the printer does next.
    let mut rest = rest.iter().rev();
    loop {
        let (mode, doc) = match pending.pop() {
            Some(next) => next,
            None => match rest.next() {
                Some(&(_, mode, doc)) => (mode, doc),
                None => return true,
            },
        };
        match doc {
            Doc::Text(value) => room -= width(value) as isize,
            Doc::Concat(parts) => pending.extend(parts.iter().rev().map(|part| (mode, part))),
            Doc::Nest(_, inner) => pending.push((mode, inner)),
            Doc::Group { content, broken } => {
                pending.push((if *broken { Mode::Broken } else { mode }, content));
            }
            Doc::Line { flat, .. } => match mode {
                Mode::Flat => room -= width(flat) as isize,
                Mode::Broken => return true,
            },
            Doc::HardLine { .. } | Doc::Trailing(_) => return true,
            Doc::IfBroken(value) => {
                if mode == Mode::Broken {
                    room -= width(value) as isize;
                }
            }
            Doc::Anchor { .. } => {}
            Doc::Choice { flat, broken } => pending.push((mode, if mode == Mode::Flat { flat } else { broken })),
        }
        if room < 0 {
            return false;
        }
    }
}

#[derive(Default)]
struct Output {
    text: String,
    /// The column the next text starts at.
    column: usize,
    /// Indentation owed to the current line, written with its first text.
    pending_indent: Option<usize>,
    /// The number of line breaks written.
    line: usize,
    anchors: Vec<AnchorAt>,
    /// For each line that ends in a comment: its width without it.
    code_width_before_comment: Vec<(usize, usize)>,
}

impl Output {
    fn write(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        if let Some(indent) = self.pending_indent.take() {
            self.text.extend(std::iter::repeat_n(' ', indent));
        }
        self.text.push_str(value);
        self.column += width(value);
    }

    fn newline(&mut self, indent: usize, blank: bool) {
        self.text.push('\n');
        self.line += 1;
        if blank {
            self.text.push('\n');
            self.line += 1;
        }
        self.pending_indent = Some(indent);
        self.column = indent;
    }

    /// Records an anchor at the current position (after any indentation
    /// owed, so that padding goes after it).
    fn anchor(&mut self, kind: &'static str) {
        if let Some(indent) = self.pending_indent.take() {
            self.text.extend(std::iter::repeat_n(' ', indent));
        }
        self.anchors.push(AnchorAt { kind, offset: self.text.len(), line: self.line, column: self.column });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(items: &[&str]) -> Doc {
        let mut body = Vec::new();
        for (index, item) in items.iter().enumerate() {
            body.push(Doc::Line { flat: if index == 0 { "" } else { " " }, blank: false });
            body.push(text(*item));
            body.push(if index + 1 < items.len() { text(",") } else { Doc::IfBroken(",") });
        }
        group(concat(vec![text("["), nest(2, concat(body)), Doc::Line { flat: "", blank: false }, text("]")]))
    }

    #[test]
    fn a_short_group_stays_flat() {
        assert_eq!(print(&block(&["a", "b"])), "[a, b]");
    }

    #[test]
    fn a_long_group_breaks_with_its_trailing_comma() {
        let long = "x".repeat(60);
        assert_eq!(print(&block(&[&long, &long])), format!("[\n  {long},\n  {long},\n]"));
    }

    #[test]
    fn exactly_the_width_fits() {
        // `[` + 96 + `, ` ... : make a flat line of exactly WIDTH columns.
        let item = "y".repeat(WIDTH - 2);
        assert_eq!(print(&block(&[&item])), format!("[{item}]"));
        let item = "y".repeat(WIDTH - 1);
        assert_eq!(print(&block(&[&item])), format!("[\n  {item},\n]"));
    }

    #[test]
    fn a_hard_break_breaks_every_enclosing_group() {
        let inner = group(concat(vec![text("a"), Doc::Trailing("# c".into())]));
        let outer = group(concat(vec![
            text("{"),
            nest(2, concat(vec![Doc::Line { flat: " ", blank: false }, inner])),
            Doc::Line { flat: " ", blank: false },
            text("}"),
        ]));
        assert_eq!(print(&outer), "{\n  a  # c\n}");
    }

    #[test]
    fn anchors_on_consecutive_lines_align() {
        let anchor = Doc::Anchor { kind: "k", flat_only: false };
        let line = |name: &str| concat(vec![text(name), anchor.clone(), text(" = x")]);
        let doc = concat(vec![
            line("a"),
            Doc::HardLine { blank: false },
            line("bbb"),
            Doc::HardLine { blank: true },
            line("cc"),
            Doc::HardLine { blank: false },
            line("d"),
        ]);
        assert_eq!(print(&doc), "a   = x\nbbb = x\n\ncc = x\nd  = x");
    }

    #[test]
    fn alignment_never_passes_the_width() {
        let anchor = Doc::Anchor { kind: "k", flat_only: false };
        let long = "y".repeat(WIDTH - 4);
        let doc = concat(vec![
            text("a"),
            anchor.clone(),
            text(&long),
            Doc::HardLine { blank: false },
            text("bbbbb"),
            anchor,
            text("z"),
        ]);
        assert_eq!(print(&doc), format!("a{long}\nbbbbbz"));
    }

    #[test]
    fn a_run_too_wide_to_align_is_cut_into_sections() {
        let anchor = Doc::Anchor { kind: "k", flat_only: false };
        let wide = "w".repeat(WIDTH - 12);
        let line = |head: &str, rest: &str| concat(vec![text(head), anchor.clone(), text(rest)]);
        let doc = concat(vec![
            line("a", " ="),
            Doc::HardLine { blank: false },
            line("bb", " ="),
            Doc::HardLine { blank: false },
            line("cccccccccc", &format!(" {wide}")),
            Doc::HardLine { blank: false },
            line("dddddddddddd", " ="),
            Doc::HardLine { blank: false },
            line("e", " ="),
        ]);
        // `cccccccccc` pushes neither `a` nor `bb` past the width, but the
        // longer `dddddddddddd` would push it: a new section starts there.
        assert_eq!(
            print(&doc),
            format!("a          =\nbb         =\ncccccccccc {wide}\ndddddddddddd =\ne            =")
        );
    }

    #[test]
    fn trailing_comments_do_not_count_against_alignment() {
        let anchor = Doc::Anchor { kind: "k", flat_only: false };
        let comment = format!("# {}", "c".repeat(WIDTH));
        let doc = concat(vec![
            text("a"),
            anchor.clone(),
            text(" ="),
            Doc::Trailing(comment.clone()),
            Doc::HardLine { blank: false },
            text("bbb"),
            anchor,
            text(" ="),
        ]);
        assert_eq!(print(&doc), format!("a   =  {comment}\nbbb ="));
    }

    #[test]
    fn flat_only_anchors_count_only_in_flat_groups() {
        let anchored = |items: &str| {
            group(concat(vec![
                Doc::Anchor { kind: "k", flat_only: true },
                text("{"),
                nest(2, concat(vec![Doc::Line { flat: " ", blank: false }, text(items)])),
                Doc::Line { flat: " ", blank: false },
                text("}"),
            ]))
        };
        let long = "z".repeat(WIDTH);
        let doc = concat(vec![
            text("a "),
            anchored("x"),
            Doc::HardLine { blank: false },
            text("bbb "),
            anchored(&long),
            Doc::HardLine { blank: false },
            text("cc "),
            anchored("y"),
        ]);
        assert_eq!(print(&doc), format!("a {{ x }}\nbbb {{\n  {long}\n}}\ncc {{ y }}"));
    }

    #[test]
    fn blank_lines_carry_no_indentation() {
        let doc = nest(4, concat(vec![text("a"), Doc::HardLine { blank: true }, text("b")]));
        assert_eq!(print(&doc), "a\n\n    b");
    }
}
