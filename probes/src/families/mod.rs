//! The probe families, one module each, and [`plan`], which asks every selected family for its
//! probes. Families generate probes from the validated policy (every model, relation and field
//! rule), the layer's tool list and what ground truth knows about the data — not from a fixed
//! list — so a new model or field rule is probed without touching this code.

pub mod approval;
pub mod audit;
pub mod budget;
pub(crate) mod common;
pub mod cross_tenant;
pub mod hygiene;
pub mod lint;
pub mod pii;
pub mod write;

use std::collections::BTreeSet;

use preflight_enforcer::policy::Policy;

use crate::codes::Family;
use crate::runner::ProbePlan;
use crate::truth::GroundTruth;

/// What probe generation may look at.
pub struct PlanInput<'a> {
    pub policy: &'a Policy,
    /// The tool names the layer offers.
    pub tools: &'a BTreeSet<String>,
    pub truth: &'a GroundTruth,
    /// Tenant A (the caller) and B (the victim), for titles.
    pub tenant_a: &'a str,
    pub tenant_b: &'a str,
    /// Policy lint results, turned into findings by the lint family.
    pub lint: &'a [lint::LintItem],
}

/// The probes of the selected families, in family order.
pub fn plan(input: &PlanInput<'_>, families: &BTreeSet<Family>) -> ProbePlan {
    let mut probes = Vec::new();
    for family in Family::ALL {
        if !families.contains(&family) {
            continue;
        }
        probes.extend(match family {
            Family::CrossTenant => cross_tenant::probes(input),
            Family::Pii => pii::probes(input),
            Family::Budget => budget::probes(input),
            Family::Write => write::probes(input),
            Family::Approval => approval::probes(input),
            Family::Audit => audit::probes(input),
            Family::Hygiene => hygiene::probes(input),
            Family::Lint => lint::probes(input),
        });
    }
    ProbePlan { probes }
}
