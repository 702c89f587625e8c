//! `lint`: the policy linter's results as findings, so one report covers what the policy file
//! says and what the layer does. See docs/probes/lint.md.
//!
//! A lint finding fails its rule; a rule that ran and found nothing passes, so the checklist page
//! can cite it as verification. The rules themselves (and their own positive controls, a bad
//! policy per rule) live with the linter in `preflight_enforcer::policy`.

use preflight_enforcer::policy::Span;
use preflight_reports::Severity;

use super::PlanInput;
use crate::codes::Family;
use crate::runner::{Probe, ProbeOutcome};

/// One lint result, independent of the linter's own types.
#[derive(Clone, Debug, PartialEq)]
pub struct LintItem {
    /// `lint.<rule>`.
    pub code: String,
    pub title: String,
    pub checklist: Vec<String>,
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    /// True for "the rule ran and found nothing".
    pub passed: bool,
}

/// One probe per lint result; the body only reports it.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    input
        .lint
        .iter()
        .map(|item| {
            let it = item.clone();
            let mut p = Probe::custom(
                item.code.clone(),
                Family::Lint,
                item.title.clone(),
                item.checklist.clone(),
                item.severity,
                move |_ctx| {
                    let it = it.clone();
                    async move {
                        Ok(if it.passed {
                            ProbeOutcome::pass(it.message)
                        } else {
                            ProbeOutcome::fail(it.message)
                        })
                    }
                },
            );
            p.span = item.span;
            p
        })
        .collect()
}

/// The policy linter's results for `policy` against `catalog`: each finding fails its rule at
/// the line it cites (errors as high severity, warnings as medium); every rule that found nothing
/// passes, at the file's top, so the checklist page can cite it.
pub fn from_policy_lint(
    policy: &preflight_enforcer::policy::Policy,
    catalog: &preflight_enforcer::policy::Catalog,
) -> Vec<LintItem> {
    use preflight_enforcer::policy::{lint, LintRule, Severity as LintSeverity};
    let findings = lint(policy, Some(catalog));
    let mut out = Vec::new();
    for rule in LintRule::ALL {
        let mine: Vec<_> = findings.iter().filter(|f| f.rule == rule).collect();
        let checklist: Vec<String> = rule.checklist().iter().map(|s| s.to_string()).collect();
        if mine.is_empty() {
            out.push(LintItem {
                code: rule.code().to_string(),
                title: rule.title().to_string(),
                checklist,
                severity: Severity::Info,
                message: format!("{}: nothing to report", rule.title()),
                span: None,
                passed: true,
            });
            continue;
        }
        for f in mine {
            let subject = if f.key_path.is_empty() {
                "the policy file".to_string()
            } else {
                f.key_path.clone()
            };
            out.push(LintItem {
                code: rule.code().to_string(),
                title: format!("{} ({subject})", rule.title()),
                checklist: checklist.clone(),
                severity: match f.severity {
                    LintSeverity::Error => Severity::High,
                    LintSeverity::Warning => Severity::Medium,
                },
                message: f.message.clone(),
                span: f.span.or_else(|| policy.span_of(&f.key_path)),
                passed: false,
            });
        }
    }
    out
}
