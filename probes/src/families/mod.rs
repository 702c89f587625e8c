//! The probe families, one module each, and [`plan`], which asks every selected family for its
//! probes. Families generate probes from the validated policy (every model, relation and field
//! rule), the layer's tool list and what ground truth knows about the data — not from a fixed
//! list — so a new model or field rule is probed without touching this code.

pub mod approval;
pub mod audit;
pub mod budget;
pub(crate) mod common;
pub mod cross_tenant;
pub mod every_tool;
pub mod hygiene;
pub mod lint;
pub mod malformed;
pub mod pii;
pub mod server;
pub mod sql;
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
    /// The layer's own tools under its own names.
    pub native_tools: &'a [preflight_enforcer::ToolSpec],
    pub truth: &'a GroundTruth,
    /// Tenant A (the caller) and B (the victim), for titles.
    pub tenant_a: &'a str,
    pub tenant_b: &'a str,
    /// Policy lint results, turned into findings by the lint family.
    pub lint: &'a [lint::LintItem],
    /// The layer's SQL tool (its target profile's `sql:`); `None`: the `sql` family does not
    /// apply.
    pub sql: Option<&'a preflight_targets::profile::SqlTool>,
}

impl PlanInput<'_> {
    /// The planner's estimate of one tenant's rows in `m` (all rows for a global model).
    pub fn rows_per_tenant(&self, m: &preflight_enforcer::policy::ModelPolicy) -> i64 {
        let rows = self.truth.estimated_rows(m);
        if m.tenant_column.is_some() {
            rows / (self.truth.tenants.len().max(1) as i64)
        } else {
            rows
        }
    }

    /// Whether the model's primary key may be filtered and ordered on.
    pub fn key_allowed(&self, m: &preflight_enforcer::policy::ModelPolicy) -> bool {
        m.action(&m.primary_key) == Some(preflight_enforcer::policy::FieldAction::Allow)
    }
}

/// The policy the instance under test runs with: the file's policy with per-tenant quotas and
/// write rates lifted. A probe run makes hundreds of calls and dozens of writes as one tenant
/// within a minute, which would trip those limits and turn unrelated probes into
/// `quota_exceeded`; `budget.quota` and `write.rate_limit` test the limits themselves on fresh
/// instances that run the policy as written.
pub fn instance_policy(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    p.quotas.calls_per_hour = None;
    p.quotas.rows_per_hour = None;
    for m in p.models.values_mut() {
        m.budgets.max_writes_per_minute = None;
    }
    p
}

/// The probes of the selected families, in family order.
pub fn plan(input: &PlanInput<'_>, families: &BTreeSet<Family>) -> ProbePlan {
    let mut probes = Vec::new();
    for family in Family::ALL {
        if !families.contains(&family) {
            continue;
        }
        probes.extend(match family {
            Family::CrossTenant => {
                let mut p = cross_tenant::probes(input);
                p.extend(every_tool::probes(input));
                p
            }
            Family::Pii => {
                let mut p = pii::probes(input);
                p.extend(malformed::probes(input));
                p
            }
            Family::Budget => budget::probes(input),
            Family::Write => write::probes(input),
            Family::Approval => approval::probes(input),
            Family::Audit => audit::probes(input),
            Family::Hygiene => hygiene::probes(input),
            Family::Lint => lint::probes(input),
            Family::Server => server::probes(input),
            Family::Sql => sql::probes(input),
        });
    }
    ProbePlan { probes }
}
