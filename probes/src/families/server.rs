//! `server`: the probes of a layer reached by URL as a server — its health endpoint (OPS-4), its
//! request rate limits (OPS-6) and its bearer-token checks (ISO-1). See docs/probes/server.md.
//!
//! They speak to the layer raw ([`preflight_targets::wire::Wire`]), because what they judge is
//! below the tool calls: HTTP statuses, `Retry-After`, a token forged on purpose. What the
//! profile's `server:` section declares (the health path, the limits) is what is checked; a
//! target with nothing to check (the built-in layer, a stdio layer, a profile without the
//! section or without `principal.jwt`) gets `not_verified` with the reason.
//!
//! Every probe runs in the last phase, after every other family: forging tokens is harmless,
//! but taking the database away from the layer and exhausting its rate limits would disturb any
//! probe running beside or after them.

mod forgery;
mod health;
mod limits;

use std::sync::Arc;

use preflight_enforcer::policy::ModelPolicy;
use preflight_enforcer::Principal;
use preflight_targets::profile::{Profile, ServerSection};
use preflight_targets::wire::{Answer, Wire};
use serde_json::Value;

use super::PlanInput;
use crate::calls::{Query, QUERY};
use crate::runner::{Phase, Probe, ProbeCtx, ProbeOutcome};

/// The server family's probes: four forgeries, the health endpoint's fields and its answer with
/// the database gone, then the per-principal and per-IP limits (in that order: the per-IP burst
/// leaves the client's address throttled).
pub fn probes(_input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = forgery::probes();
    out.extend(health::probes());
    out.extend(limits::probes());
    out.into_iter().map(|p| p.phase(Phase::Last)).collect()
}

/// The layer's profile and raw access to it, or why the claim cannot be tested on this target.
pub(crate) fn remote(ctx: &ProbeCtx) -> Result<(Arc<Profile>, Wire), ProbeOutcome> {
    let Some(foreign) = &ctx.foreign else {
        return Err(ProbeOutcome::not_verified(
            "the built-in layer runs inside preflight and has no HTTP endpoint; serve it \
             (`preflight serve --mcp http`) and probe it through a target profile with a \
             `server:` section to test this claim",
        ));
    };
    let profile = Arc::clone(&foreign.profile);
    let Some(wire) = Wire::new(Arc::clone(&profile)) else {
        return Err(ProbeOutcome::not_verified(format!(
            "the target is reached over {}: it has no HTTP endpoint, so it has no health \
             endpoint, request rate limits or bearer tokens to test",
            profile.transport.kind()
        )));
    };
    Ok((profile, wire))
}

/// The profile's `server:` section, or `not_verified` naming what it should say.
pub(crate) fn section<'a>(
    profile: &'a Profile,
    what: &str,
) -> Result<&'a ServerSection, ProbeOutcome> {
    profile.server.as_ref().ok_or_else(|| {
        ProbeOutcome::not_verified(format!(
            "the target profile {} has no `server:` section, so the layer's {what} is unknown \
             and this claim could not be tested",
            profile.path
        ))
    })
}

/// What the probes read: a model scoped by tenant whose key may be filtered on, and keys of
/// tenant A's and tenant B's rows in it (ground truth).
pub(crate) struct DataCall {
    pub model: String,
    pub keys_a: Vec<Value>,
    pub keys_b: Vec<Value>,
}

impl DataCall {
    /// The first such model the profile maps `db_query` for, with rows of both tenants.
    pub(crate) async fn find(ctx: &ProbeCtx, profile: &Profile) -> Result<DataCall, ProbeOutcome> {
        if !profile.tools.contains_key(QUERY) {
            return Err(ProbeOutcome::not_verified(format!(
                "the target profile maps no `{QUERY}`, so no call could show whether data comes back"
            )));
        }
        for m in ctx.policy.models.values() {
            if !usable(m) {
                continue;
            }
            let keys_a = ctx.truth.keys(m, &ctx.principals.a.tenant, 3).await?;
            let keys_b = ctx.truth.keys(m, &ctx.principals.b.tenant, 3).await?;
            if !keys_a.is_empty() && !keys_b.is_empty() {
                return Ok(DataCall {
                    model: m.name.clone(),
                    keys_a,
                    keys_b,
                });
            }
        }
        Err(ProbeOutcome::not_verified(
            "no model scoped by tenant, readable with db_query and keyed by an allowed column \
             has rows of both tenants",
        ))
    }

    /// `db_query` for A's and B's keys: A's rows are what a genuine caller gets; any of B's is a
    /// leak.
    pub(crate) fn arguments(&self, ctx: &ProbeCtx) -> Value {
        let pk = ctx
            .policy
            .model(&self.model)
            .map(|m| m.primary_key.clone())
            .unwrap_or_default();
        let keys: Vec<Value> = self.keys_a.iter().chain(&self.keys_b).cloned().collect();
        Query::new(&self.model)
            .filter(&pk, "in", Value::Array(keys))
            .limit(10)
            .build()
    }

    /// What came back in `answer`: rows, B's keys among them, and canaries of any tenant.
    pub(crate) fn judge(&self, ctx: &ProbeCtx, answer: &Answer) -> DataSeen {
        let pk = ctx
            .policy
            .model(&self.model)
            .map(|m| m.primary_key.clone())
            .unwrap_or_default();
        let mut seen = DataSeen::default();
        if let Some(Ok(v)) = &answer.outcome {
            let rows = crate::evidence::rows_of(v);
            seen.rows = rows.len();
            seen.foreign_rows = rows
                .iter()
                .filter_map(|r| r.get(&pk))
                .filter(|k| self.keys_b.contains(k))
                .count();
        }
        let mut texts: Vec<Value> = Vec::new();
        if let Some(b) = &answer.body {
            texts.push(b.clone());
        }
        texts.push(Value::String(answer.text.clone()));
        for t in &texts {
            for hit in ctx.truth.canaries.scan_json(t, "$") {
                let c = hit.canary;
                let line = format!("{} ({}): {}", c.cell(), c.tenant, c.masked());
                if !seen.canaries.contains(&line) {
                    seen.canaries.push(line);
                }
            }
        }
        seen
    }
}

fn usable(m: &ModelPolicy) -> bool {
    m.tenant_column.is_some()
        && m.tools.contains(QUERY)
        && m.action(&m.primary_key) == Some(preflight_enforcer::policy::FieldAction::Allow)
}

/// Data in an answer.
#[derive(Debug, Default)]
pub(crate) struct DataSeen {
    pub rows: usize,
    /// Rows whose key is one of tenant B's.
    pub foreign_rows: usize,
    /// Canaries found anywhere in the answer (`cell (tenant): masked`).
    pub canaries: Vec<String>,
}

impl DataSeen {
    pub(crate) fn any(&self) -> bool {
        self.rows > 0 || !self.canaries.is_empty()
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} row(s), {} of them tenant B's, {} canary value(s)",
            self.rows,
            self.foreign_rows,
            self.canaries.len()
        )
    }
}

/// A principal of tenant A with its own name, so a probe's calls count against nobody else's
/// per-principal limit.
pub(crate) fn probe_principal(ctx: &ProbeCtx, name: &str) -> Principal {
    let a = &ctx.principals.a;
    Principal {
        tenant: a.tenant.clone(),
        user: format!("preflight-{name}@{}", a.tenant),
        roles: a.roles.clone(),
    }
}

/// A value at a dotted path of a JSON body.
pub(crate) fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |cur, key| cur.get(key))
}
