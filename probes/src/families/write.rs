//! `write`: writes need a reason, stay inside `writable_fields`, never touch the tenant column,
//! offer a dry run before bulk changes, and respect the write rate (PRE-4, WRT-1, WRT-2, WRT-6,
//! WRT-7). See docs/probes/write.md.
//!
//! Every probe acts on rows it planted through the owner connection and compares row snapshots
//! before and after the call: a refusal counts only when the database is unchanged, and a write
//! the layer should have refused but applied is proven by the changed rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::policy::{FieldAction, ModelPolicy};
use preflight_enforcer::ErrorCode;
use serde_json::{json, Map, Value};

use super::common::internal_is_inconclusive;
use super::cross_tenant::{finish, judge_refused_write};
use super::PlanInput;
use crate::calls::{self, BULK_UPDATE, CREATE, DELETE, DRY_RUN, UPDATE};
use crate::codes::ProbeCode;
use crate::runner::{Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::{self, Scratch};

/// Columns any approval rule of `m` gates (written, or compared with a threshold).
pub(crate) fn gated_columns(
    ctx_policy: &preflight_enforcer::policy::Policy,
    m: &ModelPolicy,
) -> BTreeSet<String> {
    ctx_policy
        .approvals
        .iter()
        .filter(|r| r.model == m.name)
        .flat_map(|r| {
            r.fields
                .iter()
                .cloned()
                .chain(r.threshold.iter().map(|t| t.field.clone()))
        })
        .collect()
}

/// A writable, ungated column of `m` (so a write of it needs no approval).
pub(crate) fn free_column(
    policy: &preflight_enforcer::policy::Policy,
    m: &ModelPolicy,
) -> Option<String> {
    let gated = gated_columns(policy, m);
    m.writable_fields
        .iter()
        .find(|c| {
            **c != m.primary_key
                && Some(c.as_str()) != m.tenant_column.as_deref()
                && m.column(c).is_some()
                && !gated.contains(*c)
        })
        .cloned()
}

/// Every write probe this policy and tool list call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut rate_model = None;
    let mut dry_model = None;
    for m in input.policy.models.values() {
        let name = m.name.clone();
        let has = |t: &str| m.tools.contains(t);
        let free = free_column(input.policy, m);
        for tool in calls::WRITE_TOOLS {
            let any_writable = super::cross_tenant::writable_column(m).is_some();
            if !has(tool) || (matches!(tool, UPDATE | BULK_UPDATE) && !any_writable) {
                continue;
            }
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::ReasonRequired,
                    format!("{tool} on {name} without a reason"),
                    move |ctx| reason_required(ctx, n.clone(), tool),
                )
                .needs([tool])
                .phase(Phase::Serial)
                .at(format!("models.{name}.require_reason")),
            );
        }
        let not_writable = m.columns.iter().find(|c| {
            c.action == FieldAction::Allow
                && c.name != m.primary_key
                && Some(c.name.as_str()) != m.tenant_column.as_deref()
                && !m.writable_fields.contains(&c.name)
        });
        if let Some(col) = not_writable {
            for tool in [UPDATE, CREATE] {
                if !has(tool) {
                    continue;
                }
                let (n, c) = (name.clone(), col.name.clone());
                out.push(
                    Probe::new(
                        ProbeCode::WritableFields,
                        format!(
                            "{tool} on {name} writing {} (not in writable_fields)",
                            col.name
                        ),
                        move |ctx| writable_fields(ctx, n.clone(), c.clone(), tool),
                    )
                    .needs([tool])
                    .phase(Phase::Serial)
                    .at(format!("models.{name}.writable_fields")),
                );
            }
        }
        if let Some(tc) = &m.tenant_column {
            if has(UPDATE) {
                let n = name.clone();
                out.push(
                    Probe::new(
                        ProbeCode::TenantColumn,
                        format!("db_update on {name} writing {tc}"),
                        move |ctx| tenant_column(ctx, n.clone()),
                    )
                    .phase(Phase::Serial)
                    .at(format!("models.{name}.tenant_column")),
                );
            }
        }
        if has(BULK_UPDATE) && free.is_some() && dry_model.is_none() && m.tenant_column.is_some() {
            dry_model = Some(name.clone());
        }
        if has(UPDATE) && free.is_some() && rate_model.is_none() && m.tenant_column.is_some() {
            rate_model = Some(name.clone());
        }
    }
    if let Some(n) = dry_model {
        out.push(
            Probe::new(
                ProbeCode::DryRun,
                format!("db_bulk_update on {n} above the dry-run threshold"),
                move |ctx| dry_run(ctx, n.clone()),
            )
            .phase(Phase::Serial)
            .at("writes.dry_run_required_above"),
        );
    }
    if let Some(n) = rate_model {
        let path = format!("models.{n}.budgets");
        out.push(
            Probe::new(
                ProbeCode::RateLimit,
                format!("db_update on {n} one past max_writes_per_minute"),
                move |ctx| rate_limit(ctx, n.clone()),
            )
            .phase(Phase::Serial)
            .at(path),
        );
    }
    out
}

async fn reason_required(ctx: Arc<ProbeCtx>, model: String, tool: &'static str) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        // An ungated column if there is one; otherwise a gated one (the reason check must come
        // before the approval gate).
        let col = free_column(&ctx.policy, &m).or_else(|| super::cross_tenant::writable_column(&m));
        let (args, watched) = match tool {
            CREATE => {
                let data = match scratch.create_data(&ctx.policy, &m, &a.tenant).await? {
                    Ok(d) => d,
                    Err(why) => return Err(ProbeOutcome::not_verified(why)),
                };
                (calls::create(&model, Value::Object(data), None), Vec::new())
            }
            DELETE => {
                let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
                (calls::delete(&model, &key, None), vec![key])
            }
            UPDATE => {
                let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
                let col = col.ok_or_else(|| ProbeOutcome::not_verified("no writable field"))?;
                let v = scratch::other_value(&ctx.truth, &m, &key, &col).await?;
                (
                    calls::update(&model, &key, json!({ col: v }), None),
                    vec![key],
                )
            }
            _ => {
                let k1 = scratch.plant(&m, &a.tenant, &Map::new()).await?;
                let k2 = scratch.plant(&m, &a.tenant, &Map::new()).await?;
                let col = col.ok_or_else(|| ProbeOutcome::not_verified("no writable field"))?;
                let v = scratch::other_value(&ctx.truth, &m, &k1, &col).await?;
                (
                    calls::bulk_update(
                        &model,
                        vec![calls::cond(&m.primary_key, "in", json!([k1, k2]))],
                        json!({ col: v }),
                        None,
                    ),
                    vec![k1, k2],
                )
            }
        };
        judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            &watched,
            (tool, args),
            &[ErrorCode::ReasonRequired],
            &format!("{tool} on {model} without a reason"),
        )
        .await
    }
    .await;
    finish(scratch, result).await
}

async fn writable_fields(
    ctx: Arc<ProbeCtx>,
    model: String,
    col: String,
    tool: &'static str,
) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let (args, watched) = if tool == UPDATE {
            let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
            let v = scratch::other_value(&ctx.truth, &m, &key, &col).await?;
            (
                calls::update(&model, &key, json!({ col.clone(): v }), Some(calls::REASON)),
                vec![key],
            )
        } else {
            let mut data = match scratch.create_data(&ctx.policy, &m, &a.tenant).await? {
                Ok(d) => d,
                Err(why) => return Err(ProbeOutcome::not_verified(why)),
            };
            let src = ctx.truth.keys(&m, &a.tenant, 1).await?;
            let src = src.first().cloned().unwrap_or(Value::Null);
            data.insert(
                col.clone(),
                scratch::other_value(&ctx.truth, &m, &src, &col).await?,
            );
            (
                calls::create(&model, Value::Object(data), Some(calls::REASON)),
                Vec::new(),
            )
        };
        judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            &watched,
            (tool, args),
            &[ErrorCode::FieldNotWritable],
            &format!("{tool} on {model} writing {col}, which is not in writable_fields"),
        )
        .await
    }
    .await;
    finish(scratch, result).await
}

async fn tenant_column(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let tc = m.tenant_column.clone().unwrap_or_default();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    // Moving the row to a third tenant if there is one, so this is not the cross-tenant probe
    // again: the column itself must be read-only, whoever it would point at.
    let other = ctx
        .truth
        .tenants
        .iter()
        .find(|t| **t != a.tenant && **t != b.tenant)
        .cloned()
        .unwrap_or_else(|| b.tenant.clone());
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
        judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            std::slice::from_ref(&key),
            (
                UPDATE,
                calls::update(
                    &model,
                    &key,
                    json!({ tc.clone(): other }),
                    Some(calls::REASON),
                ),
            ),
            &[],
            &format!("db_update on {model} setting {tc} to {other}"),
        )
        .await
    }
    .await;
    finish(scratch, result).await
}

/// The number of rows a dry-run response says the write would affect.
fn affected_of(v: &Value) -> Option<u64> {
    for key in [
        "affected_rows",
        "rows_affected",
        "affected",
        "count",
        "would_affect",
    ] {
        if let Some(n) = v.get(key).and_then(Value::as_u64) {
            return Some(n);
        }
    }
    None
}

async fn dry_run(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    ctx.require_writes()?;
    ctx.require_tool(DRY_RUN).map_err(|o| {
        ProbeOutcome::fail(
            "the layer offers db_bulk_update but no db_dry_run: bulk writes cannot be previewed",
        )
        .fact(o.message)
    })?;
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let above = ctx.policy.writes.dry_run_required_above;
    let n = (above + 1).min(50);
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let mut keys = Vec::new();
        for _ in 0..n {
            keys.push(scratch.plant(&m, &a.tenant, &Map::new()).await?);
        }
        let col = free_column(&ctx.policy, &m).ok_or_else(|| ProbeOutcome::not_verified("no writable field"))?;
        let v = scratch::other_value(&ctx.truth, &m, &keys[0], &col).await?;
        let want = super::common::text_of(&v);
        let args = calls::bulk_update(
            &model,
            vec![calls::cond(&m.primary_key, "in", json!(keys))],
            json!({ col.clone(): v }),
            Some(calls::REASON),
        );
        // 1. Without a dry run first, a bulk write above the threshold must not run.
        let first = judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            &keys,
            (BULK_UPDATE, args.clone()),
            &[],
            &format!("db_bulk_update of {n} rows without a dry run (threshold {above})"),
        )
        .await?;
        if first.verdict != preflight_reports::Verdict::Pass {
            return Ok(first);
        }
        // 2. The dry run reports the count and changes nothing.
        let before = ctx.truth.snapshot(&m, &keys).await?;
        let dry = ctx.call(a, DRY_RUN, calls::dry_run(BULK_UPDATE, &args)).await;
        let after = ctx.truth.snapshot(&m, &keys).await?;
        let diff = before.diff(&after);
        if !diff.is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "db_dry_run changed the database ({}): a dry run must change nothing",
                diff.join(", ")
            ))
            .with_call(&ctx, &dry));
        }
        internal_is_inconclusive(&dry)?;
        let Ok(report) = &dry.result else {
            return Ok(ProbeOutcome::fail(format!(
                "db_dry_run of the bulk write was refused ({}), so the agent has no way to preview it",
                dry.code().map(|c| c.as_str()).unwrap_or("")
            ))
            .with_call(&ctx, &dry));
        };
        if affected_of(report) != Some(n) {
            return Ok(ProbeOutcome::fail(format!(
                "db_dry_run reported {:?} affected rows; the write matches {n}",
                affected_of(report)
            ))
            .with_call(&ctx, &dry));
        }
        // 3. After the dry run the same write goes through (on the probe's own rows), and the
        //    database shows it: every row holds the new value.
        let applied = ctx.call(a, BULK_UPDATE, args.clone()).await;
        internal_is_inconclusive(&applied)?;
        let rows = ctx.truth.rows(&m, &keys).await?;
        let changed = rows
            .iter()
            .filter(|r| r.get(&col).and_then(super::common::text_of) == want)
            .count();
        if let Err(e) = &applied.result {
            return Ok(ProbeOutcome::fail(format!(
                "the bulk write was refused ({}) even after its dry run, so a dry run does not \
                 unlock the write it previews",
                e.code
            ))
            .with_call(&ctx, &applied)
            .fact(first.message));
        }
        if changed != keys.len() {
            return Ok(ProbeOutcome::fail(format!(
                "the bulk write after its dry run reported success, but {changed} of {} rows hold \
                 the new value",
                keys.len()
            ))
            .with_call(&ctx, &applied)
            .fact(first.message));
        }
        Ok(ProbeOutcome::pass(format!(
            "a {n}-row bulk write was refused without a dry run; the dry run reported {n} rows and \
             changed nothing; after it the write changed all {n} rows"
        ))
        .with_call(&ctx, &dry)
        .fact(first.message)
        .fact(format!("after the dry run: {}", applied.describe())))
    }
    .await;
    finish(scratch, result).await
}

async fn rate_limit(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let Some(limit) = m.budgets.max_writes_per_minute else {
        return Ok(ProbeOutcome::fail(format!(
            "{model} has no max_writes_per_minute: nothing limits how fast an agent writes"
        )));
    };
    if limit > 60 {
        return Err(ProbeOutcome::not_verified(format!(
            "max_writes_per_minute is {limit}; the probe makes at most 61 writes"
        )));
    }
    let Some(factory) = ctx.factory.clone() else {
        return Err(ProbeOutcome::not_verified(
            "this target cannot start an instance with fresh rate counters",
        ));
    };
    let gw = factory
        .instance(Arc::clone(&ctx.policy), ctx.faults.clone())
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot start an instance: {e}")))?;
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
        let col = free_column(&ctx.policy, &m).ok_or_else(|| ProbeOutcome::not_verified("no writable field"))?;
        let original = ctx
            .truth
            .rows(&m, std::slice::from_ref(&key))
            .await?
            .first()
            .and_then(|r| r.get(&col).cloned())
            .unwrap_or(Value::Null);
        let other = scratch::other_value(&ctx.truth, &m, &key, &col).await?;
        // Alternate two values: the row's final value tells whether the last write applied.
        let mut facts = vec![format!("max_writes_per_minute = {limit}, on a fresh instance")];
        let mut last = None;
        for i in 1..=u64::from(limit) + 1 {
            let v = if i % 2 == 1 { other.clone() } else { original.clone() };
            let call = ctx
                .call_on(gw.as_ref(), a, UPDATE, calls::update(&model, &key, json!({ col.clone(): v }), Some(calls::REASON)))
                .await;
            internal_is_inconclusive(&call)?;
            if i <= u64::from(limit) && !call.is_ok() {
                return Err(ProbeOutcome::error(format!(
                    "write {i} of {limit} allowed per minute was refused ({}), so the limit could not be measured",
                    call.code().map(|c| c.as_str()).unwrap_or("")
                ))
                .with_call(&ctx, &call)
                .facts(facts));
            }
            if i > u64::from(limit) {
                facts.push(format!("write {i}: {}", call.describe()));
            }
            last = Some((call, v));
        }
        let Some((call, last_value)) = last else {
            return Err(ProbeOutcome::error("no write was made"));
        };
        let now = ctx
            .truth
            .rows(&m, std::slice::from_ref(&key))
            .await?
            .first()
            .and_then(|r| r.get(&col).cloned())
            .unwrap_or(Value::Null);
        // Consecutive writes alternate values, so the row holds the last write's value only if
        // that write was applied.
        let applied = now == last_value;
        match &call.result {
            Ok(_) => Ok(ProbeOutcome::fail(format!(
                "write {} within a minute went through although max_writes_per_minute is {limit}",
                limit + 1
            ))
            .with_call(&ctx, &call)
            .facts(facts)),
            Err(_) if applied => Ok(ProbeOutcome::fail(format!(
                "write {} was reported refused but the row holds its value",
                limit + 1
            ))
            .with_call(&ctx, &call)
            .facts(facts)),
            Err(e) if e.code == ErrorCode::WriteRateExceeded => Ok(ProbeOutcome::pass(format!(
                "write {} within a minute was refused with write_rate_exceeded and not applied",
                limit + 1
            ))
            .with_call(&ctx, &call)
            .facts(facts)),
            Err(e) => Ok(ProbeOutcome::fail(format!(
                "write {} over the limit ended in {} instead of write_rate_exceeded",
                limit + 1,
                e.code
            ))
            .with_call(&ctx, &call)
            .facts(facts)),
        }
    }
    .await;
    finish(scratch, result).await
}
