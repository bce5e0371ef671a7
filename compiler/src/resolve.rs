//! Resolution: from parsed files to one [`Program`].
//!
//! - Reads the root files and, transitively, their imports: `std/<name>`
//!   from the embedded standard library, anything else relative to the
//!   importing file. An import cycle is an error naming the chain.
//! - Builds each file's name table: its own `let`s plus the `let`s of the
//!   files it imports (an import brings in only that file's own `let`s, not
//!   what it imported in turn, nor its policies or tests). A name defined
//!   twice is an error.
//! - Flattens every value list. A bare name in a method position is a `let`
//!   if one is in scope, else a method token; in a string position it must
//!   be a `let`.
//! - Turns policies and tests of the root files into model items; policies
//!   and tests of imported files are not part of the compilation.
//! - A bare name in a method position that is no `let` and no registered
//!   method is a lint (`unknown-method`), or an error when it is a list of a
//!   standard module the file does not import (`missing-import`).
//!
//! Invariant of the output: every name is resolved and every list flat; the
//! remaining semantic checks (header names, globs, scopes, shadowing) are
//! `check`'s. Resolution goes on after an error, so every error of the
//! files is reported; what did not resolve is recorded in [`Gaps`], so that
//! checks leave it alone and one mistake gives one error. A name is not
//! reported in a file with an import that failed: it may be that file's.

use crate::check::REGISTERED_METHODS;
use crate::diagnostic::{codes, did_you_mean, Diagnostic, Diagnostics};
use crate::http::{LimitKind, MalformedKind};
use crate::model::{self, Cidr, ConnectionInfo, Limits, Program};
use crate::source::{FileId, Sources, Span};
use crate::stdlib;
use crate::syntax::ast::{self, Item, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How to read an imported file from disk (a seam for tests).
pub trait FileReader {
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// Reads from the real file system.
pub struct DiskReader;

impl FileReader for DiskReader {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The result of resolution: the program (when there were no errors) and
/// every diagnostic found on the way.
pub struct Resolved {
    pub program: Option<Program>,
    /// When there were errors: the program as far as it resolved, and its
    /// gaps, for the checks to judge the rest.
    pub partial: Option<(Program, Gaps)>,
    pub diagnostics: Diagnostics,
}

/// What did not resolve in a program with errors, so that checks skip it
/// rather than report what follows from an error already reported.
#[derive(Debug, Default)]
pub struct Gaps {
    /// Rules with a matcher whose values did not all resolve, by where their
    /// name starts.
    rules: HashSet<(FileId, usize)>,
    /// Policies with a scope that did not resolve, by where their name
    /// starts.
    scopes: HashSet<(FileId, usize)>,
    /// A root file did not parse: its policies and rules are missing.
    pub missing_items: bool,
}

impl Gaps {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.scopes.is_empty() && !self.missing_items
    }

    pub fn has_rule(&self, rule: &model::Rule) -> bool {
        self.rules.contains(&(rule.span.file, rule.span.start))
    }

    pub fn has_scope(&self, policy: &model::Policy) -> bool {
        self.scopes.contains(&(policy.span.file, policy.span.start))
    }
}

/// Resolve the root files (already added to `sources`) into one program.
pub fn resolve(sources: &mut Sources, roots: &[FileId], reader: &dyn FileReader) -> Resolved {
    let mut resolver = Resolver {
        sources,
        reader,
        files: HashMap::new(),
        loading: Vec::new(),
        diagnostics: Diagnostics::default(),
        unresolved: 0,
        gaps: Gaps::default(),
    };
    for &root in roots {
        resolver.load(root);
    }
    let mut program = Program::default();
    for &root in roots {
        resolver.lower_root(root, &mut program);
    }
    let diagnostics = resolver.diagnostics.deduplicated();
    if diagnostics.has_errors() {
        Resolved { program: None, partial: Some((program, resolver.gaps)), diagnostics }
    } else {
        Resolved { program: Some(program), partial: None, diagnostics }
    }
}

/// One parsed file and its name table.
struct LoadedFile {
    ast: Option<ast::File>,
    /// Name → the `let` defining it (in this file or an imported one).
    names: BTreeMap<String, LetRef>,
    /// Whether the file is part of the standard library (no unused-name
    /// warnings there: a library defines names for others).
    is_stdlib: bool,
    /// An import of the file failed (not found, a cycle, a file that does
    /// not parse): a name it lacks may be that import's, so it is not
    /// reported.
    broken_import: bool,
}

#[derive(Clone)]
struct LetRef {
    file: FileId,
    /// Index of the `let` item in its file.
    item: usize,
    /// Where the name entered this file: the `let` itself, or the import.
    introduced_at: Span,
}

struct Resolver<'a> {
    sources: &'a mut Sources,
    reader: &'a dyn FileReader,
    files: HashMap<FileId, LoadedFile>,
    /// The import chain being loaded, for cycle detection.
    loading: Vec<(FileId, Span)>,
    diagnostics: Diagnostics,
    /// Names left unresolved without a diagnostic (see `broken_import`).
    unresolved: usize,
    gaps: Gaps,
}

impl Resolver<'_> {
    /// Parse a file and everything it imports; build its name table.
    fn load(&mut self, id: FileId) {
        if self.files.contains_key(&id) {
            return;
        }
        let text = self.sources.get(id).text.clone();
        let is_stdlib = self.sources.get(id).name.starts_with("std/");
        let ast = match crate::syntax::parse(id, &text) {
            Ok(ast) => Some(ast),
            Err(d) => {
                self.diagnostics.extend(d);
                None
            }
        };
        // Reserve the entry first so a cycle back to this file is seen as
        // "loading", not loaded again.
        self.files.insert(id, LoadedFile { ast: None, names: BTreeMap::new(), is_stdlib, broken_import: false });
        let mut names: BTreeMap<String, LetRef> = BTreeMap::new();
        let mut broken_import = false;
        if let Some(ast) = &ast {
            for (index, item) in ast.items.iter().enumerate() {
                if let Item::Let(l) = item {
                    self.define(&mut names, &l.name.name, LetRef { file: id, item: index, introduced_at: l.name.span });
                }
            }
            for item in &ast.items {
                let Item::Import(import) = item else { continue };
                let Some(target) = self.open_import(id, import) else {
                    broken_import = true;
                    continue;
                };
                if let Some(pos) = self.loading.iter().position(|(f, _)| *f == target) {
                    let mut chain: Vec<String> =
                        self.loading[pos..].iter().map(|(f, _)| self.sources.get(*f).name.clone()).collect();
                    chain.push(self.sources.get(id).name.clone());
                    chain.push(self.sources.get(target).name.clone());
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_CYCLE,
                            import.span,
                            format!("import cycle: {}", chain.join(" → ")),
                        )
                        .with_label("this import closes the cycle")
                        .with_help("move the shared `let`s into a file that both can import"),
                    );
                    broken_import = true;
                    continue;
                }
                if target == id {
                    continue;
                }
                self.loading.push((id, import.span));
                self.load(target);
                self.loading.pop();
                broken_import |= self.files.get(&target).is_none_or(|f| f.ast.is_none());
                let imported: Vec<(String, LetRef)> = self
                    .files
                    .get(&target)
                    .and_then(|f| f.ast.as_ref())
                    .map(|target_ast| {
                        target_ast
                            .items
                            .iter()
                            .enumerate()
                            .filter_map(|(index, item)| match item {
                                Item::Let(l) => Some((
                                    l.name.name.clone(),
                                    LetRef { file: target, item: index, introduced_at: import.span },
                                )),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                for (name, let_ref) in imported {
                    self.define(&mut names, &name, let_ref);
                }
            }
        }
        self.files.insert(id, LoadedFile { ast, names, is_stdlib, broken_import });
    }

    fn define(&mut self, names: &mut BTreeMap<String, LetRef>, name: &str, new: LetRef) {
        if let Some(old) = names.get(name) {
            // The same let reached twice (imported by two paths) is fine.
            if old.file == new.file && old.item == new.item {
                return;
            }
            self.diagnostics.push(
                Diagnostic::error(codes::DUPLICATE_NAME, new.introduced_at, format!("`{name}` is defined twice"))
                    .with_label("defined again here")
                    .with_related(old.introduced_at, "first defined here")
                    .with_help("rename one of them; names from imports count as definitions"),
            );
            return;
        }
        names.insert(name.to_string(), new);
    }

    /// Find and register the file an import names.
    fn open_import(&mut self, from: FileId, import: &ast::Import) -> Option<FileId> {
        let spec = import.path.text();
        if let Some(module) = spec.strip_prefix("std/") {
            let name = format!("std/{module}");
            if let Some(id) = self.sources.find_name(&name) {
                return Some(id);
            }
            return match stdlib::module(module) {
                Some(text) => Some(self.sources.add(name, None, text)),
                None => {
                    let modules = stdlib::MODULES.iter().map(|(n, _)| format!("`std/{n}`")).collect::<Vec<_>>().join(", ");
                    let help = match did_you_mean(module, stdlib::MODULES.iter().map(|(n, _)| *n)) {
                        Some(near) => format!("did you mean `std/{near}`? the standard modules are: {modules}"),
                        None => format!("the standard modules are: {modules}"),
                    };
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::IMPORT_NOT_FOUND,
                            import.path.span,
                            format!("no standard module `{spec}`"),
                        )
                        .with_label("not in the standard library")
                        .with_help(help),
                    );
                    None
                }
            };
        }
        let base = self.sources.get(from).path.as_deref().and_then(Path::parent).map(Path::to_path_buf);
        let path = match base {
            Some(dir) => dir.join(&spec),
            None => PathBuf::from(&spec),
        };
        let path = normalize(&path);
        if let Some(id) = self.sources.find_path(&path) {
            return Some(id);
        }
        match self.reader.read(&path) {
            Ok(text) => Some(self.sources.add(path.display().to_string(), Some(&path), text)),
            Err(error) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        codes::IMPORT_NOT_FOUND,
                        import.path.span,
                        format!("cannot read `{}`: {error}", path.display()),
                    )
                    .with_label("imported here")
                    .with_help("a relative import is resolved from the importing file's folder; `std/...` names the standard library"),
                );
                None
            }
        }
    }

    fn lower_root(&mut self, root: FileId, program: &mut Program) {
        let Some(file) = self.files.get(&root) else { return };
        let Some(ast) = file.ast.clone() else {
            self.gaps.missing_items = true;
            return;
        };
        let is_stdlib = file.is_stdlib;
        let mut used: HashSet<(FileId, usize)> = HashSet::new();
        for item in &ast.items {
            match item {
                Item::Policy(policy) => {
                    let lowered = self.lower_policy(root, policy, &mut used);
                    program.policies.push(lowered);
                }
                Item::Test(test) => {
                    if let Some(lowered) = self.lower_test(test) {
                        program.tests.push(lowered);
                    }
                }
                _ => {}
            }
        }
        // Lets may use other lets: mark those reached through used ones.
        let mut lets_used_by_lets = HashSet::new();
        for item in &ast.items {
            if let Item::Let(l) = item {
                let mut scratch = HashSet::new();
                for value in &l.value.values {
                    self.mark_names(root, value, &mut scratch);
                }
                scratch.retain(|(f, _)| *f == root);
                lets_used_by_lets.extend(scratch);
            }
        }
        if is_stdlib {
            return;
        }
        for (index, item) in ast.items.iter().enumerate() {
            if let Item::Let(l) = item {
                if !used.contains(&(root, index)) && !lets_used_by_lets.contains(&(root, index)) {
                    self.diagnostics.push(
                        Diagnostic::warning(codes::UNUSED_LET, l.name.span, format!("`{}` is never used", l.name.name))
                            .with_label("defined here")
                            .with_help("remove it, or use it in a rule"),
                    );
                }
            }
        }
    }

    fn mark_names(&self, file: FileId, value: &Value, out: &mut HashSet<(FileId, usize)>) {
        match value {
            Value::Ident(ident) => {
                if let Some(r) = self.files.get(&file).and_then(|f| f.names.get(&ident.name)) {
                    out.insert((r.file, r.item));
                }
            }
            Value::List(list) => list.values.iter().for_each(|v| self.mark_names(file, v, out)),
            Value::Str(_) => {}
        }
    }

    fn lower_policy(&mut self, file: FileId, policy: &ast::Policy, used: &mut HashSet<(FileId, usize)>) -> model::Policy {
        let mut out = model::Policy {
            name: policy.name.text(),
            span: policy.name.span,
            scope: model::Scope::default(),
            default: None,
            mode: model::Mode::default(),
            opaque: model::OpaqueVerdict::default(),
            get_body: model::GetBodyVerdict::default(),
            deny_with: model::DenyWith::default(),
            limits: Limits::default(),
            rules: Vec::new(),
        };
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut once = |this: &mut Self, what: &'static str, span: Span| {
            if let Some(first) = seen.insert(what, span) {
                this.diagnostics.push(
                    Diagnostic::error(codes::DUPLICATE_SETTING, span, format!("`{what}` is set twice"))
                        .with_label("set again here")
                        .with_related(first, "first set here")
                        .with_help(format!("a policy has one `{what}`; remove one")),
                );
            }
        };
        for item in &policy.items {
            match item {
                ast::PolicyItem::Default(s) => {
                    once(self, "default", s.span);
                    out.default = Some(s.value);
                }
                ast::PolicyItem::Mode(s) => {
                    once(self, "mode", s.span);
                    out.mode = s.value;
                }
                ast::PolicyItem::Opaque(s) => {
                    once(self, "opaque", s.span);
                    out.opaque = s.value;
                }
                ast::PolicyItem::GetBody(s) => {
                    once(self, "get_body", s.span);
                    out.get_body = s.value;
                }
                ast::PolicyItem::DenyWith(s) => {
                    once(self, "deny_with", s.span);
                    if let Some(deny_with) = self.lower_deny_with(&s.value) {
                        out.deny_with = deny_with;
                    }
                }
                ast::PolicyItem::Limits(limits) => {
                    once(self, "limits", limits.span);
                    self.lower_limits(limits, &mut out.limits);
                }
                ast::PolicyItem::Scope(scope) => {
                    let before = self.setbacks();
                    self.lower_scope(scope, &mut out.scope);
                    if self.setbacks() != before {
                        self.gaps.scopes.insert((policy.name.span.file, policy.name.span.start));
                    }
                }
                ast::PolicyItem::Rule(rule) => {
                    let before = self.setbacks();
                    let conditions = rule.matchers.iter().map(|m| self.lower_matcher(file, m, used)).collect();
                    if self.setbacks() != before {
                        self.gaps.rules.insert((rule.name.span.file, rule.name.span.start));
                    }
                    let action = match &rule.action.kind {
                        ast::ActionKind::Allow => model::Action::Allow,
                        ast::ActionKind::Deny => model::Action::Deny,
                        ast::ActionKind::AllowTunnel => model::Action::AllowTunnel,
                        ast::ActionKind::Redirect { target, ingress } => {
                            model::Action::Redirect { target: target.text(), ingress: *ingress }
                        }
                    };
                    out.rules.push(model::Rule {
                        name: rule.name.text(),
                        span: rule.name.span,
                        conditions,
                        action,
                        log: rule.action.log,
                    });
                }
            }
        }
        out
    }

    /// Errors and unreported names so far: when lowering an item raises
    /// them, the item has a gap.
    fn setbacks(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count() + self.unresolved
    }

    /// `deny_with`: a 4xx or 5xx status (language.md §6), or `reset`.
    fn lower_deny_with(&mut self, value: &ast::DenyWith) -> Option<model::DenyWith> {
        match value {
            ast::DenyWith::Reset => Some(model::DenyWith::Reset),
            ast::DenyWith::Status(number) => match u16::try_from(number.value) {
                Ok(status @ 400..=599) => Some(model::DenyWith::Status(status)),
                _ => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            codes::DENY_WITH_STATUS,
                            number.span,
                            format!("`deny_with` takes a 4xx or 5xx status, not {}", number.value),
                        )
                        .with_label("not a 4xx or 5xx status")
                        .with_help("answer denies with a status from 400 to 599 (403 by default), or write `deny_with reset` to answer nothing"),
                    );
                    None
                }
            },
        }
    }

    fn lower_limits(&mut self, limits: &ast::Limits, out: &mut Limits) {
        for entry in &limits.entries {
            let value = entry.size.value;
            match LimitKind::from_name(&entry.name.name) {
                Some(LimitKind::HeaderBytes) => {
                    if (64..=u64::from(Limits::MAX_HEADER_BYTES)).contains(&value) {
                        out.header_bytes = value as u32;
                    } else {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::LIMIT_RANGE,
                                entry.size.span,
                                format!("`header_bytes` must be between 64 and 16KiB, not {value}"),
                            )
                            .with_label("out of range")
                            .with_help("the compiled program scans at most 16KiB of a request head"),
                        );
                    }
                }
                Some(LimitKind::Headers) => {
                    if (1..=1024).contains(&value) {
                        out.headers = value as u32;
                    } else {
                        self.diagnostics.push(
                            Diagnostic::error(
                                codes::LIMIT_RANGE,
                                entry.size.span,
                                format!("`headers` must be between 1 and 1024, not {value}"),
                            )
                            .with_label("out of range"),
                        );
                    }
                }
                None => self.diagnostics.push(
                    Diagnostic::error(codes::BAD_SETTING, entry.name.span, format!("unknown limit `{}`", entry.name.name))
                        .with_label("not a limit")
                        .with_help("the limits are `header_bytes` (a size, such as `8KiB`) and `headers` (a count)"),
                ),
            }
        }
    }

    fn lower_scope(&mut self, scope: &ast::Scope, out: &mut model::Scope) {
        match &scope.kind {
            ast::ScopeKind::Port(ports) => {
                let list = match scope.side {
                    ast::Side::Remote => &mut out.remote_ports,
                    ast::Side::Local => &mut out.local_ports,
                };
                let list = list.get_or_insert_with(Vec::new);
                for port in ports {
                    match u16::try_from(port.value) {
                        Ok(p) if p != 0 => list.push(p),
                        _ => self.diagnostics.push(
                            Diagnostic::error(codes::BAD_SETTING, port.span, format!("`{}` is not a port", port.value))
                                .with_label("not in 1..65535"),
                        ),
                    }
                }
            }
            ast::ScopeKind::Addr(addrs) => {
                let list = match scope.side {
                    ast::Side::Remote => &mut out.remote_addrs,
                    ast::Side::Local => &mut out.local_addrs,
                };
                let list = list.get_or_insert_with(Vec::new);
                for addr in addrs {
                    match parse_cidr(&addr.text) {
                        Ok(cidr) => list.push(cidr),
                        Err(why) => self.diagnostics.push(
                            Diagnostic::error(codes::BAD_SETTING, addr.span, format!("`{}` is not an address block: {why}", addr.text))
                                .with_label("here")
                                .with_help("write an address or a block: `10.0.0.0/8`, `192.168.1.7`, `fd00::/8`"),
                        ),
                    }
                }
            }
        }
    }

    fn lower_matcher(&mut self, file: FileId, matcher: &ast::Matcher, used: &mut HashSet<(FileId, usize)>) -> model::Condition {
        use model::ConditionKind as K;
        let kind = match &matcher.kind {
            ast::MatcherKind::Method(values) => K::Method(self.flatten_all(file, values, Position::Method, used)),
            ast::MatcherKind::Path { op, values } => {
                K::Path { op: *op, patterns: self.flatten_all(file, values, Position::String, used) }
            }
            ast::MatcherKind::Header { name, test } => K::Header {
                name: name.text(),
                test: match test {
                    ast::HeaderTest::Present => model::HeaderTest::Present,
                    ast::HeaderTest::Absent => model::HeaderTest::Absent,
                    ast::HeaderTest::Value { op, nocase, values } => model::HeaderTest::Value {
                        op: *op,
                        nocase: *nocase,
                        values: self.flatten_all(file, values, Position::String, used),
                    },
                },
            },
            ast::MatcherKind::Host { op, values } => K::Host {
                op: *op,
                values: self
                    .flatten_all(file, values, Position::String, used)
                    .into_iter()
                    .map(|v| v.to_ascii_lowercase())
                    .collect(),
            },
            ast::MatcherKind::Any(group) => K::Any(group.iter().map(|m| self.lower_matcher(file, m, used)).collect()),
            ast::MatcherKind::Not(inner) => K::Not(Box::new(self.lower_matcher(file, inner, used))),
        };
        model::Condition { span: matcher.span, kind }
    }

    fn flatten_all(&mut self, file: FileId, values: &[Value], position: Position, used: &mut HashSet<(FileId, usize)>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = Vec::new();
        for value in values {
            self.flatten(file, value, position, used, &mut stack, None, &mut out);
        }
        out
    }

    /// Flatten one value into byte strings. `stack` holds the `let`s being
    /// expanded, to report a `let` that contains itself; `origin` is the
    /// name the matcher used, when expanding a `let` (errors inside the
    /// `let` are reported there, where the author can act on them).
    #[allow(clippy::too_many_arguments)]
    fn flatten(
        &mut self,
        file: FileId,
        value: &Value,
        position: Position,
        used: &mut HashSet<(FileId, usize)>,
        stack: &mut Vec<(FileId, usize)>,
        origin: Option<&ast::Ident>,
        out: &mut Vec<Vec<u8>>,
    ) {
        match value {
            Value::Str(s) => out.push(s.bytes.clone()),
            Value::List(list) => {
                for v in &list.values {
                    self.flatten(file, v, position, used, stack, origin, out);
                }
            }
            Value::Ident(ident) => {
                let target = self.files.get(&file).and_then(|f| f.names.get(&ident.name)).cloned();
                match target {
                    Some(let_ref) => {
                        let key = (let_ref.file, let_ref.item);
                        used.insert(key);
                        if stack.contains(&key) {
                            self.diagnostics.push(
                                Diagnostic::error(codes::UNKNOWN_NAME, ident.span, format!("`{}` refers to itself", ident.name))
                                    .with_label("used inside its own definition")
                                    .with_help("a list cannot contain itself"),
                            );
                            return;
                        }
                        let values = match self.files.get(&let_ref.file).and_then(|f| f.ast.as_ref()).and_then(|a| a.items.get(let_ref.item)) {
                            Some(Item::Let(l)) => l.value.values.clone(),
                            _ => return,
                        };
                        stack.push(key);
                        for v in &values {
                            // Names inside a let are looked up in the let's
                            // own file. An error repeated at one place (a
                            // list of methods used as strings, reported at
                            // the use) is reported once: see `resolve`.
                            self.flatten(let_ref.file, v, position, used, stack, Some(origin.unwrap_or(ident)), out);
                        }
                        stack.pop();
                    }
                    None => self.unresolved_name(file, ident, position, origin, used, out),
                }
            }
        }
    }

    /// A bare name that is no `let` in scope: a method token in a method
    /// position, else an error; in both, a list of a standard module the
    /// file does not import is an error that names the import. A `let` a
    /// "did you mean" points to counts as used: it was meant to be.
    fn unresolved_name(
        &mut self,
        file: FileId,
        ident: &ast::Ident,
        position: Position,
        origin: Option<&ast::Ident>,
        used: &mut HashSet<(FileId, usize)>,
        out: &mut Vec<Vec<u8>>,
    ) {
        let name = ident.name.as_str();
        if position == Position::Method {
            out.push(name.as_bytes().to_vec());
            if REGISTERED_METHODS.contains(&name) {
                return;
            }
        }
        let Some(loaded) = self.files.get(&file) else { return };
        if loaded.broken_import {
            self.unresolved += 1;
            return;
        }
        let is_stdlib = loaded.is_stdlib;
        let known: Vec<String> = loaded.names.keys().cloned().collect();
        let mut mark_used = |near: &str| {
            if let Some(r) = loaded.names.get(near) {
                used.insert((r.file, r.item));
            }
        };
        if let Some(module) = stdlib::module_defining(name) {
            self.diagnostics.push(
                Diagnostic::error(
                    codes::MISSING_IMPORT,
                    ident.span,
                    format!("`{name}` is a list of `std/{module}`, which this file does not import"),
                )
                .with_label(format!("defined in `std/{module}`"))
                .with_help(format!("add `import \"std/{module}\"` at the top of the file")),
            );
            return;
        }
        match (position, origin) {
            (Position::Method, _) => {
                // A lower-case spelling of a registered method is the
                // method-case lint's; the standard library names methods
                // on purpose.
                if is_stdlib || REGISTERED_METHODS.contains(&name.to_ascii_uppercase().as_str()) {
                    return;
                }
                let (diagnostic, near) = unknown_method(ident, &known);
                near.inspect(|near| mark_used(near));
                self.diagnostics.push(diagnostic);
            }
            (Position::String, Some(origin)) => {
                // A list of method names (bare names) used where strings
                // are expected.
                self.diagnostics.push(
                    Diagnostic::error(codes::WRONG_LIST, origin.span, format!("`{}` is a list of methods, not of strings", origin.name))
                        .with_label("used where strings are expected")
                        .with_related(ident.span, format!("`{name}` is a method name (a bare name, not a string)"))
                        .with_help(format!("use `{}` with `method`, or a list of strings here", origin.name)),
                );
            }
            (Position::String, None) => {
                let d = Diagnostic::error(codes::UNKNOWN_NAME, ident.span, format!("no list named `{name}`")).with_label("not defined");
                let d = match did_you_mean(name, known.iter().map(String::as_str)) {
                    Some(near) => {
                        mark_used(near);
                        d.with_help(format!("did you mean `{near}`? (a string is written in quotes)"))
                    }
                    None => d.with_help(format!(
                        "define it with `let {name} = [\"...\"]`, import a module that does, or write a string in quotes"
                    )),
                };
                self.diagnostics.push(d);
            }
        }
    }

    fn lower_test(&mut self, test: &ast::Test) -> Option<model::Test> {
        let mut connection = ConnectionInfo::default();
        let mut bound: Vec<String> = Vec::new();
        let mut sends = Vec::new();
        for item in &test.items {
            match item {
                ast::TestItem::RemotePort(n) | ast::TestItem::LocalPort(n) => {
                    let Ok(port) = u16::try_from(n.value) else {
                        self.diagnostics.push(
                            Diagnostic::error(codes::BAD_TEST, n.span, format!("`{}` is not a port", n.value)).with_label("not in 0..65535"),
                        );
                        continue;
                    };
                    if matches!(item, ast::TestItem::RemotePort(_)) {
                        connection.remote_port = port;
                    } else {
                        connection.local_port = port;
                    }
                }
                ast::TestItem::RemoteAddr(addr) => match addr.text.parse::<IpAddr>() {
                    Ok(ip) => connection = connection.with_remote_addr(ip),
                    Err(_) => self.diagnostics.push(
                        Diagnostic::error(codes::BAD_TEST, addr.span, format!("`{}` is not an IP address", addr.text))
                            .with_label("here"),
                    ),
                },
                ast::TestItem::Bind(names) => bound.extend(names.iter().map(ast::Str::text)),
                ast::TestItem::Send(send) => {
                    let input: Vec<u8> = send.input.iter().flat_map(|s| s.bytes.iter().copied()).collect();
                    let split = send.split.as_ref().map(|sizes| {
                        sizes.iter().map(|n| usize::try_from(n.value).unwrap_or(usize::MAX)).collect::<Vec<_>>()
                    });
                    if let Some(sizes) = &send.split {
                        if let Some(zero) = sizes.iter().find(|n| n.value == 0) {
                            self.diagnostics.push(
                                Diagnostic::error(codes::BAD_TEST, zero.span, "a `send()` of 0 bytes")
                                    .with_label("here")
                                    .with_help("every size in `split` is at least 1"),
                            );
                        }
                    }
                    let expect = send.expect.iter().filter_map(|e| self.lower_expectation(e)).collect();
                    sends.push(model::TestSend {
                        span: send.span,
                        connection,
                        bound: bound.clone(),
                        input,
                        split,
                        expect,
                    });
                }
            }
        }
        Some(model::Test { name: test.name.text(), span: test.name.span, sends })
    }

    fn lower_expectation(&mut self, e: &ast::Expectation) -> Option<model::Expectation> {
        use model::ExpectedReason as R;
        let ast::ExpectationKind::Verdict { action, reason } = &e.kind else {
            return Some(model::Expectation::Pending);
        };
        let reason = match reason {
            None => None,
            Some(ast::ExpectedReason::Rule(name)) => Some(R::Rule(name.text())),
            Some(ast::ExpectedReason::Word(word)) => {
                let (head, kind) = match word.name.split_once(':') {
                    Some((h, k)) => (h, Some(k)),
                    None => (word.name.as_str(), None),
                };
                let parsed = match (head, kind) {
                    ("default", None) => Some(R::Default),
                    ("opaque", None) => Some(R::Opaque),
                    ("http2", None) => Some(R::Http2),
                    ("tunnel", None) => Some(R::Tunnel),
                    ("redirect-unbound", None) => Some(R::RedirectUnbound),
                    ("malformed", None) => Some(R::Malformed(None)),
                    ("limit", None) => Some(R::Limit(None)),
                    ("malformed", Some(k)) => MalformedKind::from_name(k).map(|k| R::Malformed(Some(k))),
                    ("limit", Some(k)) => LimitKind::from_name(k).map(|k| R::Limit(Some(k))),
                    _ => None,
                };
                match parsed {
                    Some(r) => Some(r),
                    None => {
                        let help = if head == "malformed" {
                            format!(
                                "the kinds are: {}",
                                MalformedKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
                            )
                        } else {
                            "the limits are `limit:header_bytes` and `limit:headers`".to_string()
                        };
                        self.diagnostics.push(
                            Diagnostic::error(codes::BAD_TEST, word.span, format!("unknown reason `{}`", word.name))
                                .with_label("here")
                                .with_help(help),
                        );
                        return None;
                    }
                }
            }
        };
        Some(model::Expectation::Verdict { action: *action, reason })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// A bare name that is not a `let` is a method token.
    Method,
    /// A bare name must be a `let`.
    String,
}

/// Parse `10.0.0.0/8`, `::1/128`, or a bare address (a block of one).
/// Bits set past the prefix are an error: `10.1.2.3/8` is probably a typo.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| format!("`{addr_text}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len_text {
        None => max,
        Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("the prefix length must be 0..={max}"))?,
    };
    let cidr = Cidr { addr, prefix_len };
    let network = Cidr { addr: mask(addr, prefix_len), prefix_len };
    if network.addr != addr {
        return Err(format!("bits are set past the prefix; the block is `{network}`"));
    }
    Ok(cidr)
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix_len)) };
            IpAddr::from((bits & m).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix_len == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix_len)) };
            IpAddr::from((bits & m).to_be_bytes())
        }
    }
}

/// Remove `.` and `..` components lexically, so one file reached by two
/// spellings is loaded once.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The lint for a bare method name that is neither a registered method
/// nor a list in scope: probably a list that is not there, or a typo.
/// Also returns the near name the help suggests.
fn unknown_method(ident: &ast::Ident, lists_in_scope: &[String]) -> (Diagnostic, Option<String>) {
    let name = &ident.name;
    let std_lists = stdlib::lists();
    let candidates = REGISTERED_METHODS
        .iter()
        .copied()
        .chain(lists_in_scope.iter().map(String::as_str))
        .chain(std_lists.iter().map(|(_, list)| list.as_str()));
    let not_imported = |near: &str| {
        if lists_in_scope.iter().any(|list| list == near) {
            return None;
        }
        std_lists.iter().find(|(_, list)| list == near).map(|(module, _)| *module)
    };
    let near = did_you_mean(name, candidates);
    let help = match near {
        Some(near) => match not_imported(near) {
            Some(module) => format!("did you mean `{near}`? it is a list of `std/{module}`: add `import \"std/{module}\"`"),
            None => format!("did you mean `{near}`?"),
        },
        None => format!(
            "if `{name}` is the method meant, write it as a string: `\"{name}\"`; a list must be defined with `let` or imported"
        ),
    };
    let diagnostic = Diagnostic::warning(codes::UNKNOWN_METHOD, ident.span, format!("`{name}` is not a registered HTTP method"))
        .with_label("not a list in scope, so taken as a method name")
        .with_help(help);
    (diagnostic, near.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MemoryReader(HashMap<PathBuf, String>);

    impl FileReader for MemoryReader {
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0.get(path).cloned().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn run(files: &[(&str, &str)]) -> (Resolved, Sources) {
        let mut sources = Sources::new();
        let reader = MemoryReader(files.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect());
        let (path, text) = files[0];
        let root = sources.add(path, Some(Path::new(path)), text);
        let resolved = resolve(&mut sources, &[root], &reader);
        (resolved, sources)
    }

    fn codes_of(r: &Resolved) -> Vec<&'static str> {
        r.diagnostics.iter().map(|d| d.code).collect()
    }

    #[test]
    fn lists_flatten_and_methods_stay_methods() {
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"import "std/http"
               let ADMIN = ["/admin", ["/internal"]]
               let MORE = [ADMIN, "/debug"]
               policy "p" { default deny
                 rule "r" { method READ, "M.SEARCH", PATCH  path prefix MORE  deny } }"#,
        )]);
        let program = r.program.expect("resolves");
        let rule = &program.policies[0].rules[0];
        let model::ConditionKind::Method(methods) = &rule.conditions[0].kind else { panic!() };
        assert!(methods.contains(&b"GET".to_vec()) && methods.contains(&b"M.SEARCH".to_vec()));
        assert!(methods.contains(&b"PATCH".to_vec()));
        let model::ConditionKind::Path { patterns, .. } = &rule.conditions[1].kind else { panic!() };
        assert_eq!(patterns, &vec![b"/admin".to_vec(), b"/internal".to_vec(), b"/debug".to_vec()]);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
    }

    #[test]
    fn relative_imports_and_cycles() {
        let (r, _) = run(&[
            ("/p/a.l7", r#"import "./b.l7" policy "p" { default deny rule "r" { path prefix B deny } }"#),
            ("/p/b.l7", r#"import "./c.l7" let B = ["/b"]"#),
            ("/p/c.l7", r#"import "./b.l7" let C = ["/c"]"#),
        ]);
        assert_eq!(codes_of(&r), vec![codes::IMPORT_CYCLE]);
        let message = &r.diagnostics.0[0].message;
        assert!(message.contains("/p/b.l7 → /p/c.l7 → /p/b.l7"), "{message}");
    }

    #[test]
    fn imports_do_not_reexport() {
        let (r, _) = run(&[
            ("/p/a.l7", r#"import "./b.l7" policy "p" { default deny rule "r" { path prefix C deny } }"#),
            ("/p/b.l7", r#"import "./c.l7" let B = ["/b"]"#),
            ("/p/c.l7", r#"let C = ["/c"]"#),
        ]);
        assert_eq!(codes_of(&r), vec![codes::UNKNOWN_NAME]);
    }

    #[test]
    fn missing_import_and_unknown_std_module() {
        let (r, _) = run(&[("/p/a.l7", r#"import "./nope.l7" import "std/nope""#)]);
        assert_eq!(codes_of(&r), vec![codes::IMPORT_NOT_FOUND, codes::IMPORT_NOT_FOUND]);
    }

    #[test]
    fn duplicate_names_and_unused_lets() {
        let (r, _) = run(&[("/p/a.l7", r#"import "std/http" let READ = [GET] let X = ["/x"]"#)]);
        // The local `READ` clashes with the imported one, and neither local is used.
        assert_eq!(codes_of(&r), vec![codes::DUPLICATE_NAME, codes::UNUSED_LET, codes::UNUSED_LET]);
    }

    #[test]
    fn unknown_name_suggests_a_near_one() {
        let (r, _) = run(&[("/p/a.l7", r#"let ADMIN = ["/a"] policy "p" { default deny rule "r" { path prefix ADMN deny } }"#)]);
        let d = &r.diagnostics.0[0];
        assert_eq!(d.code, codes::UNKNOWN_NAME);
        assert!(d.help.as_deref().unwrap_or("").contains("`ADMIN`"), "{d:?}");
    }

    #[test]
    fn settings_scopes_and_limits() {
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"policy "p" { scope remote port 80, 8080  scope remote port 443  scope remote addr 10.0.0.0/8, "::1"
                default deny default allow limits { header_bytes 32KiB  colour 1 } }"#,
        )]);
        assert_eq!(codes_of(&r), vec![codes::DUPLICATE_SETTING, codes::LIMIT_RANGE, codes::BAD_SETTING]);
    }

    #[test]
    fn deny_with_is_a_4xx_or_5xx_status_or_reset_given_once() {
        let deny_with = |text: &str| {
            let (r, _) = run(&[("/p/a.l7", text)]);
            let program = r.program.as_ref().or(r.partial.as_ref().map(|(program, _)| program));
            (codes_of(&r), program.and_then(|program| program.policies.first()).map(|policy| policy.deny_with))
        };
        assert_eq!(deny_with(r#"policy "p" { default deny }"#), (vec![], Some(model::DenyWith::Status(403))));
        assert_eq!(deny_with(r#"policy "p" { default deny deny_with 451 }"#), (vec![], Some(model::DenyWith::Status(451))));
        assert_eq!(deny_with(r#"policy "p" { default deny deny_with 599 }"#), (vec![], Some(model::DenyWith::Status(599))));
        assert_eq!(deny_with(r#"policy "p" { default deny deny_with reset }"#), (vec![], Some(model::DenyWith::Reset)));
        for status in ["200", "399", "600", "70000", "0"] {
            let (codes, _) = deny_with(&format!(r#"policy "p" {{ default deny deny_with {status} }}"#));
            assert_eq!(codes, vec![codes::DENY_WITH_STATUS], "deny_with {status}");
        }
        let (codes, _) = deny_with(r#"policy "p" { default deny deny_with 403 deny_with reset }"#);
        assert_eq!(codes, vec![codes::DUPLICATE_SETTING]);
    }

    #[test]
    fn a_method_list_used_as_strings_is_reported_at_the_use() {
        let (r, _) = run(&[("/p/a.l7", "import \"std/http\"\npolicy \"p\" { default deny rule \"r\" { path prefix READ allow } }")]);
        assert_eq!(codes_of(&r), vec![codes::WRONG_LIST]);
        let d = &r.diagnostics.0[0];
        assert_eq!(d.span.file, FileId(0), "reported in the user's file, not in std/http");
        assert_eq!(d.related.len(), 1);
    }

    #[test]
    fn bare_method_names_outside_the_registry() {
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"policy "p" { default deny rule "r" { method GET, GTE, "BREW", get allow } rule "w" { method WRITE deny } }"#,
        )]);
        // `GET` is registered, `"BREW"` quoted, `get` is method-case's.
        assert_eq!(codes_of(&r), vec![codes::UNKNOWN_METHOD, codes::MISSING_IMPORT]);
        assert_eq!(r.diagnostics.0[0].help.as_deref(), Some("did you mean `GET`?"));
        assert!(r.diagnostics.0[1].help.as_deref().unwrap_or("").contains(r#"import "std/http""#));
    }

    #[test]
    fn a_failed_import_hides_the_names_it_may_define() {
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"import "./gone.l7" policy "p" { default deny rule "r" { method LIST path prefix PATHS allow } rule "s" { path prefix "/s" allow } }"#,
        )]);
        assert_eq!(codes_of(&r), vec![codes::IMPORT_NOT_FOUND]);
        let Some((program, gaps)) = r.partial else { panic!("a partial program") };
        let rules = &program.policies[0].rules;
        assert!(gaps.has_rule(&rules[0]) && !gaps.has_rule(&rules[1]));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8").map(|c| c.prefix_len), Ok(8));
        assert_eq!(parse_cidr("::1").map(|c| c.prefix_len), Ok(128));
        assert!(parse_cidr("10.1.0.0/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }

    #[test]
    fn tests_lower_with_connection_settings() {
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"test "t" { remote port 8080 bind "envoy" send "GET " "/ HTTP/1.1\r\n" split 2, 3 expect [allow "r", deny malformed:cl-te, deny limit, pending]
                         send "x" expect deny malformed:nonsense }"#,
        )]);
        assert_eq!(codes_of(&r), vec![codes::BAD_TEST]);
        let (r, _) = run(&[(
            "/p/a.l7",
            r#"test "t" { remote port 8080 bind "envoy" send "GET " "/ HTTP/1.1\r\n" split 2, 3 expect [allow "r", deny malformed:cl-te, deny limit, pending] }"#,
        )]);
        let program = r.program.expect("resolves");
        let send = &program.tests[0].sends[0];
        assert_eq!(send.connection.remote_port, 8080);
        assert_eq!(send.bound, vec!["envoy".to_string()]);
        assert_eq!(send.input, b"GET / HTTP/1.1\r\n".to_vec());
        assert_eq!(send.split, Some(vec![2, 3]));
        assert_eq!(send.expect.len(), 4);
        assert_eq!(
            send.expect[1],
            model::Expectation::Verdict {
                action: model::VerdictAction::Deny,
                reason: Some(model::ExpectedReason::Malformed(Some(MalformedKind::ClTe)))
            }
        );
    }
}
