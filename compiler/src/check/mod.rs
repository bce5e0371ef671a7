//! Checks: the errors `resolve` cannot see and the lints of cli.md.
//!
//! `check` takes a resolved [`Program`] and returns [`Checked`] only when
//! there are no errors: later stages take `&Checked`, so an unchecked
//! program cannot reach evaluation or code generation.
//!
//! - names: duplicate policies, duplicate rules in a policy;
//! - settings: a missing `default`;
//! - scopes: two policies that can govern one connection ([`scope`]);
//! - matchers: methods, header names, path patterns and globs, host names,
//!   field values, empty lists, redirect targets ([`matchers`]);
//! - lints: shadowed rules ([`shadow`]), and the pattern warnings of
//!   [`matchers`] (prefix bleed, literal `*`, `?` in a path, escapes).
//!
//! Every diagnostic code is documented in docs/diagnostics.md. Lints are
//! sound: a warning is given only when it is certain (see [`shadow`]).
//!
//! A program that did not resolve completely is still checked
//! ([`check_partial`]), so one run reports every error it can; the parts
//! resolution left [`Gaps`] in are not judged, so a mistake there gives no
//! follow-on errors.

mod matchers;
mod paths;
mod scope;
mod shadow;

pub(crate) use matchers::REGISTERED_METHODS;

use crate::diagnostic::{codes, Diagnostic, Diagnostics};
use crate::model::{Policy, Program, Rule};
use crate::resolve::Gaps;
use std::borrow::Cow;
use std::collections::HashMap;

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
    let diagnostics = diagnose(&program, &Gaps::default());
    let checked = if diagnostics.has_errors() { None } else { Some(Checked { program }) };
    (checked, diagnostics)
}

/// The diagnostics of a program that resolution reported errors in: every
/// check runs, except on what `gaps` says did not resolve. Never a
/// [`Checked`].
pub fn check_partial(program: &Program, gaps: &Gaps) -> Diagnostics {
    diagnose(program, gaps)
}

fn diagnose(program: &Program, gaps: &Gaps) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    duplicate_policies(program, &mut diagnostics);
    overlapping_scopes(program, gaps, &mut diagnostics);
    for policy in &program.policies {
        missing_default(policy, &mut diagnostics);
        ktls_record_bound(policy, &mut diagnostics);
        duplicate_rules(policy, &mut diagnostics);
        let judged: Cow<'_, [Rule]> = if gaps.is_empty() {
            Cow::Borrowed(&policy.rules)
        } else {
            Cow::Owned(policy.rules.iter().filter(|rule| !gaps.has_rule(rule)).cloned().collect())
        };
        for rule in judged.iter() {
            matchers::check_rule(rule, &mut diagnostics);
        }
        shadowed_rules(&judged, &mut diagnostics);
    }
    // With a file missing, a test may name a rule that is there.
    if !gaps.missing_items {
        test_rule_names(program, &mut diagnostics);
    }
    diagnostics.deduplicated()
}

/// A test that expects a verdict by a rule no policy has can never pass;
/// say so at compile time, with the names that do exist.
fn test_rule_names(program: &Program, out: &mut Diagnostics) {
    use crate::model::{Expectation, ExpectedReason};
    let known: Vec<&str> = program.policies.iter().flat_map(|p| p.rules.iter().map(|r| r.name.as_str())).collect();
    for test in &program.tests {
        for send in &test.sends {
            for expectation in &send.expect {
                let Expectation::Verdict { reason: Some(ExpectedReason::Rule(name)), .. } = expectation else { continue };
                if known.contains(&name.as_str()) {
                    continue;
                }
                let help = if known.is_empty() {
                    "this file has no rules; a test runs against the policies of its own file".to_string()
                } else {
                    format!("the rules are: {}", known.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
                };
                out.push(
                    Diagnostic::error(
                        codes::UNKNOWN_TEST_RULE,
                        send.span,
                        format!("test `{}` expects a verdict by rule `{name}`, which no policy has", test.name),
                    )
                    .with_label("this expectation can never hold")
                    .with_help(help),
                );
            }
        }
    }
}

fn missing_default(policy: &Policy, out: &mut Diagnostics) {
    if policy.default.is_none() {
        out.push(
            Diagnostic::error(codes::MISSING_DEFAULT, policy.span, format!("policy `{}` has no `default`", policy.name))
                .with_label("this policy")
                .with_help("add `default deny` (or `default allow`) so every request gets a verdict"),
        );
    }
}

/// Remote ports that carry TLS by convention.
const TLS_PORTS: [u16; 2] = [443, 8443];

/// A policy scoped to a TLS port may be enforced beneath kernel TLS, where
/// the program judges each record's plaintext and cannot wait for the rest
/// of a head in the next record (docs/ktls.md): say so, as a note.
fn ktls_record_bound(policy: &Policy, out: &mut Diagnostics) {
    let Some(ports) = &policy.scope.remote_ports else { return };
    let Some(port) = ports.iter().find(|port| TLS_PORTS.contains(port)) else { return };
    out.push(
        Diagnostic::note(
            codes::KTLS_RECORD_BOUND,
            policy.span,
            format!(
                "policy `{}` governs remote port {port}: beneath kernel TLS a request head must be complete within one TLS record (at most 16 KiB of plaintext); a head split across records is denied with `internal:ktls-split-head`",
                policy.name
            ),
        )
        .with_label("this policy")
        .with_help("for kTLS deployments, have clients write each request head in one write (most HTTP clients do); without kTLS the program holds a split head until it is complete"),
    );
}

fn duplicate_policies(program: &Program, out: &mut Diagnostics) {
    let mut first: HashMap<&str, &Policy> = HashMap::new();
    for policy in &program.policies {
        match first.get(policy.name.as_str()) {
            Some(earlier) => out.push(
                Diagnostic::error(codes::DUPLICATE_POLICY, policy.span, format!("policy `{}` is defined twice", policy.name))
                    .with_label("defined again here")
                    .with_related(earlier.span, "first defined here")
                    .with_help("policy names are unique in a compilation (they name counters and events); rename one"),
            ),
            None => {
                first.insert(&policy.name, policy);
            }
        }
    }
}

fn duplicate_rules(policy: &Policy, out: &mut Diagnostics) {
    let mut first = HashMap::new();
    for rule in &policy.rules {
        match first.get(rule.name.as_str()) {
            Some(earlier) => out.push(
                Diagnostic::error(
                    codes::DUPLICATE_RULE,
                    rule.span,
                    format!("rule `{}` is defined twice in policy `{}`", rule.name, policy.name),
                )
                .with_label("defined again here")
                .with_related(*earlier, "first defined here")
                .with_help("rule names are unique within a policy (they name counters, events and test expectations); rename one"),
            ),
            None => {
                first.insert(rule.name.as_str(), rule.span);
            }
        }
    }
}

fn overlapping_scopes(program: &Program, gaps: &Gaps, out: &mut Diagnostics) {
    for (index, policy) in program.policies.iter().enumerate() {
        let earlier = program.policies.get(..index).unwrap_or_default();
        for other in earlier {
            // Same-named policies are already an error of their own, and a
            // scope that did not resolve cannot be compared.
            if other.name == policy.name || gaps.has_scope(policy) || gaps.has_scope(other) {
                continue;
            }
            let Some(witness) = scope::overlap(&other.scope, &policy.scope) else { continue };
            out.push(
                Diagnostic::error(
                    codes::OVERLAPPING_SCOPES,
                    policy.span,
                    format!("policies `{}` and `{}` can both govern {}", other.name, policy.name, connections(&witness)),
                )
                .with_label("its scope overlaps an earlier policy's")
                .with_related(other.span, "the other policy")
                .with_help(
                    "a connection is governed by at most one policy; make the scopes disjoint with \
                     `scope remote port`, `scope remote addr` or `scope local port`, or merge the policies",
                ),
            );
        }
    }
}

/// `every connection`, or `connections with remote port 8080`.
fn connections(witness: &str) -> String {
    if witness == "every connection" {
        witness.to_string()
    } else {
        format!("connections with {witness}")
    }
}

fn shadowed_rules(rules: &[Rule], out: &mut Diagnostics) {
    let shadowing = shadow::shadowing(rules);
    for (rule, shadowed_by) in rules.iter().zip(shadowing) {
        let Some(shadowing) = shadowed_by.and_then(|index| rules.get(index)) else { continue };
        let why = if shadowing.conditions.is_empty() {
            format!("rule `{}` has no matchers, so it decides every request that reaches it", shadowing.name)
        } else {
            format!("rule `{}` matches every request this rule matches", shadowing.name)
        };
        out.push(
            Diagnostic::warning(codes::SHADOWED_RULE, rule.span, format!("rule `{}` can never decide", rule.name))
                .with_label(why)
                .with_related(shadowing.span, "this earlier rule decides first")
                .with_help(format!(
                    "the first matching rule decides; move `{}` above `{}` if it should take precedence, or remove it",
                    rule.name, shadowing.name
                )),
        );
    }
}
