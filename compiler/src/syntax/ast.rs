//! The syntax tree of one `.l7` file, as written: names are not resolved
//! and lists are not flattened yet (that is `resolve`'s job). Every node
//! carries a [`Span`]; equality ignores spans.

use crate::model::{HostOp, PathOp, ValueOp, VerdictAction};
use crate::source::{FileId, Span};

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub id: FileId,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Import(Import),
    Let(Let),
    Policy(Policy),
    Test(Test),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: Str,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    pub name: Ident,
    pub value: List,
    pub span: Span,
}

/// A string literal, its escapes decoded to bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Str {
    pub bytes: Vec<u8>,
    pub span: Span,
}

impl Str {
    /// The value as text, with any invalid UTF-8 replaced (for names and
    /// messages; matchers use the bytes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A value in a list position: a string, a name (a method, or a `let`
/// list), or a nested list literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Str),
    Ident(Ident),
    List(List),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Str(s) => s.span,
            Value::Ident(i) => i.span,
            Value::List(l) => l.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub values: Vec<Value>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: Str,
    pub items: Vec<PolicyItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyItem {
    Scope(Scope),
    Default(Setting<crate::model::DefaultVerdict>),
    Mode(Setting<crate::model::Mode>),
    Opaque(Setting<crate::model::OpaqueVerdict>),
    GetBody(Setting<crate::model::GetBodyVerdict>),
    DenyWith(Setting<DenyWith>),
    Limits(Limits),
    Rule(Rule),
}

/// A one-word policy setting (`default deny`, `mode audit`, `opaque allow`).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub span: Span,
}

/// `deny_with STATUS|reset` as written; `resolve` checks the status's
/// range (language.md §6: a 4xx or 5xx code).
#[derive(Debug, Clone, PartialEq)]
pub enum DenyWith {
    Status(Number),
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Remote,
    Local,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub side: Side,
    pub kind: ScopeKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScopeKind {
    Port(Vec<Number>),
    Addr(Vec<Address>),
}

/// An address or address block, as written (bare or quoted).
#[derive(Debug, Clone, PartialEq)]
pub struct Address {
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub value: u64,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub entries: Vec<LimitEntry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitEntry {
    pub name: Ident,
    pub size: Number,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Str,
    pub matchers: Vec<Matcher>,
    pub action: Action,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub kind: MatcherKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatcherKind {
    Method(Vec<Value>),
    Path { op: PathOp, values: Vec<Value> },
    Header { name: Str, test: HeaderTest },
    Host { op: HostOp, values: Vec<Value> },
    Any(Vec<Matcher>),
    Not(Box<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderTest {
    Present,
    Absent,
    Value { op: ValueOp, nocase: bool, values: Vec<Value> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    pub log: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    Allow,
    Deny,
    AllowTunnel,
    Redirect { target: Str, ingress: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: Str,
    pub items: Vec<TestItem>,
    pub span: Span,
}

/// Connection settings apply to every `send` after them in the block.
#[derive(Debug, Clone, PartialEq)]
pub enum TestItem {
    RemotePort(Number),
    RemoteAddr(Address),
    LocalPort(Number),
    Bind(Vec<Str>),
    Send(Send),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// Adjacent strings, concatenated.
    pub input: Vec<Str>,
    pub split: Option<Vec<Number>>,
    pub expect: Vec<Expectation>,
    /// Whether the expectation was written as a list `[...]`.
    pub expect_is_list: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub kind: ExpectationKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectationKind {
    Pending,
    Verdict { action: VerdictAction, reason: Option<ExpectedReason> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectedReason {
    Rule(Str),
    /// A reason word as written: `default`, `malformed:cl-te`, `limit`, …
    Word(Ident),
}
