//! Data subjects in the audit log: a subject-access request finds every call that touched the
//! subject (CMP-3), and a subject's deletion leaves a trail that names the subject, holds none of
//! their personal values in clear and expires under the policy's retention (CMP-4).
//!
//! Both are judged against the calls the probe itself made, by trace id, through the same query
//! `preflight audit subject model:id` runs ([`subject_postgres`]) on the owner connection.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::audit::prune;
use preflight_enforcer::audit::subject::{subject_postgres, SubjectHit};
use preflight_enforcer::policy::{FieldAction, ModelPolicy};
use serde_json::{json, Map, Value};

use super::{audits_to_postgres, needs_own_log, records_by_trace};
use crate::calls::{self, Query, DELETE, GET, QUERY, UPDATE};
use crate::context::CallOutcome;
use crate::families::cross_tenant::finish;
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::Scratch;

/// `model:id`, the form audit records name their subjects in.
fn subject_id(model: &ModelPolicy, key: &Value) -> String {
    match key {
        Value::String(s) => format!("{}:{s}", model.name),
        other => format!("{}:{other}", model.name),
    }
}

/// A tenant-scoped model the probe can read a row of by key: `db_get` on it, and its primary key
/// visible (so a filter on it is allowed). Models with personal data first: they are the
/// subjects a request is about.
fn subject_model(ctx: &ProbeCtx) -> Option<ModelPolicy> {
    let mut candidates: Vec<&ModelPolicy> = ctx
        .policy
        .models
        .values()
        .filter(|m| m.tenant_column.is_some() && m.tools.contains(GET))
        .collect();
    candidates.sort_by_key(|m| !m.columns.iter().any(|c| c.action != FieldAction::Allow));
    candidates.first().map(|m| (*m).clone())
}

/// The subject-access query's hits for `subject`, through the owner connection.
async fn subject_hits(ctx: &ProbeCtx, subject: &str) -> Result<Vec<SubjectHit>, ProbeOutcome> {
    let mut conn = ctx
        .truth
        .pool()
        .acquire()
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot reach the audit log: {e}")))?;
    subject_postgres(&mut conn, subject, &[])
        .await
        .map_err(|e| {
            ProbeOutcome::error(format!(
                "the subject-access query failed: {}",
                crate::runner::error_chain(&e)
            ))
        })
}

/// The trace ids of `calls` the subject-access query did not return.
fn missing_from(calls: &[&CallOutcome], hits: &[SubjectHit]) -> Vec<String> {
    let found: BTreeSet<&str> = hits.iter().map(|h| h.trace_id.as_str()).collect();
    calls
        .iter()
        .filter(|c| !found.contains(c.trace_id.as_str()))
        .map(|c| format!("the {} call (trace {})", c.tool, c.trace_id))
        .collect()
}

/// CMP-3: reads of one subject by key and by filter, then the subject-access query.
pub(super) async fn subject_access(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the subject-access query reads preflight's own audit log, so it cannot be checked here",
    )?;
    audits_to_postgres(&ctx)?;
    let Some(m) = subject_model(&ctx) else {
        return Err(ProbeOutcome::not_verified(
            "no tenant-scoped model offers db_get, so no call can touch one data subject",
        ));
    };
    let a = &ctx.principals.a;
    let Some(key) = ctx.truth.keys(&m, &a.tenant, 1).await?.into_iter().next() else {
        return Err(ProbeOutcome::not_verified(format!(
            "tenant {} has no row of {} to ask about",
            a.tenant, m.name
        )));
    };
    let subject = subject_id(&m, &key);
    let mut outcomes = vec![ctx.call(a, GET, calls::get(&m.name, &key)).await];
    let pk_visible = m
        .columns
        .iter()
        .any(|c| c.name == m.primary_key && c.action == FieldAction::Allow);
    if m.tools.contains(QUERY) && pk_visible {
        outcomes.push(
            ctx.call(
                a,
                QUERY,
                Query::new(&m.name)
                    .filter(&m.primary_key, "eq", key.clone())
                    .limit(1)
                    .build(),
            )
            .await,
        );
    }
    let allowed: Vec<&CallOutcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    if allowed.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "the layer refused every read of {subject}, so no call touched the subject"
        ))
        .facts(
            outcomes
                .iter()
                .filter_map(|o| o.result.as_ref().err())
                .map(|e| format!("{}: {}", e.code.as_str(), e.message)),
        ));
    }
    let hits = subject_hits(&ctx, &subject).await?;
    let summary = format!(
        "{} call(s) read {subject}; `audit subject {subject}` returned {} record(s)",
        allowed.len(),
        hits.len()
    );
    let missing = missing_from(&allowed, &hits);
    if !missing.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "{} of {} call(s) that read {subject} are not found by a subject-access query: their \
             audit records do not name the rows they touched (`subjects`), so a data subject \
             access request would miss them",
            missing.len(),
            allowed.len()
        ))
        .summary(summary)
        .facts(missing));
    }
    Ok(ProbeOutcome::pass(format!(
        "every call that read {subject} is found by `preflight audit subject {subject}`"
    ))
    .summary(summary))
}

/// A model whose rows the agent may update and delete, with a writable text field the policy
/// does not return raw (personal data), and that field.
fn erasure_model(ctx: &ProbeCtx) -> Option<(ModelPolicy, String)> {
    let mut best: Option<(ModelPolicy, String)> = None;
    for m in ctx.policy.models.values() {
        if m.tenant_column.is_none() || !m.tools.contains(UPDATE) || !m.tools.contains(DELETE) {
            continue;
        }
        let mut fields: Vec<&str> = m
            .columns
            .iter()
            .filter(|c| {
                c.action != FieldAction::Allow
                    && m.writable_fields.contains(&c.name)
                    && preflight_enforcer::policy::is_text_type(&c.pg_type)
            })
            .map(|c| c.name.as_str())
            .collect();
        // An email-like field takes a value no check constraint refuses.
        fields.sort_by_key(|f| !f.contains("email"));
        if let Some(f) = fields.first() {
            let better = best
                .as_ref()
                .is_none_or(|(_, bf)| !bf.contains("email") && f.contains("email"));
            if better {
                best = Some((m.clone(), f.to_string()));
            }
        }
    }
    best
}

/// CMP-4: a subject (a row the probe plants) gets a personal value written, then is deleted;
/// the audit trail must still name the subject, hold the value nowhere in clear, and be bounded
/// by the policy's retention.
pub(super) async fn subject_erasure(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the erasure check reads preflight's own audit log, so it cannot be checked here",
    )?;
    audits_to_postgres(&ctx)?;
    ctx.require_writes()?;
    ctx.require_tool(UPDATE)?;
    ctx.require_tool(DELETE)?;
    let Some((m, field)) = erasure_model(&ctx) else {
        return Err(ProbeOutcome::not_verified(
            "no tenant-scoped model lets the agent both update a personal text field and delete \
             rows, so no subject's deletion can be followed into the audit log",
        ));
    };
    let a = ctx.principals.a.clone();
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
        let subject = subject_id(&m, &key);
        let marker = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let value = if field.contains("email") {
            format!("erasure.{marker}@example.org")
        } else {
            format!("Erasure Subject {marker}")
        };
        let update = ctx
            .call(
                &a,
                UPDATE,
                calls::update(&m.name, &key, json!({ field.clone(): value }), Some(calls::REASON)),
            )
            .await;
        if let Err(e) = &update.result {
            return Err(ProbeOutcome::not_verified(format!(
                "the layer refused to write {}.{field} of the probe's own row ({}: {}), so no \
                 personal value could be followed into the audit log",
                m.name,
                e.code.as_str(),
                e.message
            )));
        }
        let delete = ctx
            .call(
                &a,
                DELETE,
                calls::delete(
                    &m.name,
                    &key,
                    Some("preflight probe: erasure request for a row the probe created"),
                ),
            )
            .await;
        if let Err(e) = &delete.result {
            return Err(ProbeOutcome::not_verified(format!(
                "the layer refused to delete the probe's own {subject} ({}: {})",
                e.code.as_str(),
                e.message
            )));
        }
        let mut problems = Vec::new();
        // The deletion itself, from the database.
        let rows = ctx.truth.rows(&m, std::slice::from_ref(&key)).await?;
        let gone = match (rows.first(), &m.soft_delete_column) {
            (None, _) => true,
            (Some(row), Some(col)) => !row.get(col).is_none_or(Value::is_null),
            (Some(_), None) => false,
        };
        if !gone {
            problems.push(format!(
                "db_delete answered success but {subject} is still in the database"
            ));
        }
        let made = [&update, &delete];
        let by_trace = records_by_trace(
            &ctx,
            &ctx.calls
                .entries()
                .into_iter()
                .filter(|e| made.iter().any(|c| c.trace_id == e.trace_id))
                .collect::<Vec<_>>(),
        )
        .await?;
        let mut records = Vec::new();
        for c in made {
            let recs = by_trace.get(&c.trace_id).cloned().unwrap_or_default();
            if recs.is_empty() {
                problems.push(format!("the {} of {subject} left no audit record", c.tool));
            }
            for r in recs {
                if r.to_string().contains(&value) {
                    problems.push(format!(
                        "the audit record of the {} holds the personal value written to {}.{field} in clear ({}…): it outlives the deletion",
                        c.tool,
                        m.name,
                        value.chars().take(4).collect::<String>()
                    ));
                }
                records.push(r);
            }
        }
        let hits = subject_hits(&ctx, &subject).await?;
        for missing in missing_from(&made, &hits) {
            problems.push(format!(
                "`audit subject {subject}` does not find {missing}: retention and erasure cannot reach the subject's trail"
            ));
        }
        let retention = match prune::plan(ctx.policy.audit.retention.as_ref(), None, None) {
            Ok(plan) => format!(
                "the policy keeps audit records {} days (hot + warm + cold), then `preflight audit prune` removes them",
                plan.keep_days
            ),
            Err(e) => {
                problems.push(format!(
                    "{e}: nothing bounds how long the deleted subject's trail is kept"
                ));
                "no retention".to_string()
            }
        };
        let summary = format!(
            "wrote {}.{field} of {subject} and deleted it; {} audit record(s) of those calls; {retention}",
            m.name,
            records.len()
        );
        // Records are quoted without their arguments: a leaked value must not reach the report.
        let shown: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "trace_id": r.get("trace_id"),
                    "tool": r.get("tool"),
                    "decision": r.get("decision"),
                    "subjects": r.get("subjects"),
                })
            })
            .collect();
        if !problems.is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "the deletion of {subject} does not propagate to the audit trail as it must: {}",
                problems[0]
            ))
            .summary(summary)
            .facts(problems)
            .audit_records(shown));
        }
        Ok(ProbeOutcome::pass(format!(
            "after {subject} was deleted its audit trail names it (found by `audit subject`), holds no personal value in clear, and expires with the policy's retention"
        ))
        .summary(summary)
        .audit_records(shown))
    }
    .await;
    finish(scratch, result).await
}
