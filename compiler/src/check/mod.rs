//! Checks: the errors `resolve` cannot see and the lints of cli.md.
//!
//! `check` takes a resolved [`Program`] and returns [`Checked`] only when
//! there are no errors: later stages take `&Checked`, so an unchecked
//! program cannot reach evaluation or code generation.

use crate::diagnostic::{codes, Diagnostic, Diagnostics};
use crate::model::Program;

/// Evidence that a program passed every check. Invariants: see
/// [`crate::model`].
#[derive(Debug, Clone)]
pub struct Checked {
    program: Program,
}

impl Checked {
    pub fn program(&self) -> &Program {
        &self.program
    }
}

/// Run every check. Returns the checked program when no error was found,
/// and every diagnostic (errors, warnings, notes) either way.
pub fn check(program: Program) -> (Option<Checked>, Diagnostics) {
    let mut diagnostics = Diagnostics::default();
    for policy in &program.policies {
        if policy.default.is_none() {
            diagnostics.push(
                Diagnostic::error(codes::MISSING_DEFAULT, policy.span, format!("policy `{}` has no `default`", policy.name))
                    .with_label("this policy")
                    .with_help("add `default deny` (or `default allow`) so every request gets a verdict"),
            );
        }
    }
    let checked = if diagnostics.has_errors() { None } else { Some(Checked { program }) };
    (checked, diagnostics)
}
