//! The cross-tenant writes: B's tenant id in written data, A writing B's row, a foreign key
//! pointing at B's row — each judged by row snapshots before and after the call
//! ([`judge_refused_write`]), on rows the probe planted.

use preflight_enforcer::policy::ModelPolicy;
use preflight_enforcer::ErrorCode;
use serde_json::{json, Map, Value};

use super::super::common::internal_is_inconclusive;
use super::writable_column;
use crate::calls::{self, CREATE, UPDATE};
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::{self, Scratch};
use std::sync::Arc;

/// Judges a write that must be refused, made as A: the call's result and row snapshots before
/// and after it. Rows the layer created anyway are adopted for cleanup. A write parked for
/// approval is not yet refused: the approver approves it and it is submitted again with the
/// approval, and then it must still change nothing (an approval is for the write, not a way
/// around the check under test).
pub(crate) async fn judge_refused_write(
    ctx: &ProbeCtx,
    scratch: &mut Scratch<'_>,
    m: &ModelPolicy,
    watched: &[Value],
    (tool, args): (&str, Value),
    expected: &[ErrorCode],
    what: &str,
) -> ProbeResult {
    let a = &ctx.principals.a;
    let mut args = args;
    let mut facts = Vec::new();
    for attempt in 0..2 {
        let before = ctx.truth.snapshot(m, watched).await?;
        let call = ctx.call(a, tool, args.clone()).await;
        let after = ctx.truth.snapshot(m, watched).await?;
        for k in scratch::created_since(&ctx.truth, m, before.max_key.as_deref()).await? {
            scratch.adopt(m, k);
        }
        let diff = before.diff(&after);
        facts.push(format!(
            "before: {} rows, highest key {}",
            count_text(before.count),
            before.max_key.as_deref().unwrap_or("none")
        ));
        facts.push(format!(
            "after: {} rows, highest key {}",
            count_text(after.count),
            after.max_key.as_deref().unwrap_or("none")
        ));
        if !diff.is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "{what}{} changed the database ({}) — it must be refused",
                if attempt > 0 { ", once approved," } else { "" },
                diff.join(", ")
            ))
            .with_call(ctx, &call)
            .summary(format!("{} and the database changed", call.describe()))
            .facts(facts)
            .rows(after.rows));
        }
        internal_is_inconclusive(&call)?;
        let e = match &call.result {
            Ok(_) => {
                return Ok(ProbeOutcome::fail(format!(
                    "{what} was accepted (the layer reported success although no row changed)"
                ))
                .with_call(ctx, &call)
                .summary(call.describe())
                .facts(facts))
            }
            Err(e) => e,
        };
        if expected.is_empty() && e.code != ErrorCode::ApprovalRequired
            || expected.contains(&e.code)
        {
            return Ok(ProbeOutcome::pass(format!(
                "{what} was refused ({}) and the database is unchanged",
                e.code
            ))
            .with_call(ctx, &call)
            .summary(call.describe())
            .facts(facts));
        }
        let parked = e.code == ErrorCode::ApprovalRequired && attempt == 0;
        let (Some(desk), Some(id), true) = (
            ctx.approvals.clone(),
            calls::approval_id_of(e).filter(|_| parked),
            parked,
        ) else {
            return Err(ProbeOutcome::not_verified(format!(
                "{what} was refused for another reason ({}: {}), so this claim was not isolated",
                e.code, e.message
            ))
            .with_call(ctx, &call)
            .facts(facts));
        };
        desk.approve(&id, &ctx.principals.approver)
            .await
            .map_err(|why| {
                ProbeOutcome::error(format!("the approver could not approve {id}: {why}"))
            })?;
        facts.push(format!(
            "parked for approval ({id}); approved by {} and submitted again",
            ctx.principals.approver.user
        ));
        args = calls::with_approval(args, &id);
    }
    Err(ProbeOutcome::error(
        "the write was neither refused nor applied",
    ))
}

/// B's tenant id in written data: a create naming B, or an update moving A's own row to B.
pub(super) async fn write_forged_tenant(
    ctx: Arc<ProbeCtx>,
    model: String,
    tool: &'static str,
) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let tc = m.tenant_column.clone().unwrap_or_default();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let (args, watched, what) = if tool == CREATE {
            let mut data = match scratch.create_data(&ctx.policy, &m, &a.tenant).await? {
                Ok(d) => d,
                Err(why) => return Err(ProbeOutcome::not_verified(why)),
            };
            data.insert(tc.clone(), json!(b.tenant));
            (
                calls::create(&model, Value::Object(data), Some(calls::REASON)),
                Vec::new(),
                format!("db_create on {model} naming {} in {tc}", b.tenant),
            )
        } else {
            // A's own row (planted), so the only foreign thing in the call is B's tenant id.
            let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
            (
                calls::update(
                    &model,
                    &key,
                    json!({ tc.clone(): b.tenant.clone() }),
                    Some(calls::REASON),
                ),
                vec![key],
                format!(
                    "db_update on {model} moving {}'s row to {tc} = {}",
                    a.tenant, b.tenant
                ),
            )
        };
        judge_refused_write(&ctx, &mut scratch, &m, &watched, (tool, args), &[], &what).await
    }
    .await;
    finish(scratch, result).await
}

/// Cleans up and folds a cleanup failure into the outcome.
pub(crate) async fn finish(scratch: Scratch<'_>, result: ProbeResult) -> ProbeResult {
    match (result, scratch.cleanup().await) {
        (r, Ok(())) => r,
        (Ok(o), Err(e)) | (Err(o), Err(e)) => {
            Ok(o.fact(format!("removing the probe's rows failed: {e}")))
        }
    }
}

pub(super) async fn write_foreign_row(
    ctx: Arc<ProbeCtx>,
    model: String,
    tool: &'static str,
) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        // B's row is one the probe planted, so a faulty layer damages nothing of the fixture's.
        let key = scratch.plant(&m, &b.tenant, &Map::new()).await?;
        let args = if tool == UPDATE {
            let col = writable_column(&m).ok_or_else(|| {
                ProbeOutcome::not_verified(format!("{model} has no writable field"))
            })?;
            let v = scratch::other_value(&ctx.truth, &m, &key, &col).await?;
            calls::update(&model, &key, json!({ col: v }), Some(calls::REASON))
        } else {
            calls::delete(&model, &key, Some(calls::REASON))
        };
        judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            std::slice::from_ref(&key),
            (tool, args),
            &[],
            &format!("{tool} of {}'s {model} row by {}", b.tenant, a.tenant),
        )
        .await
    }
    .await;
    finish(scratch, result).await
}

pub(super) async fn write_foreign_reference(
    ctx: Arc<ProbeCtx>,
    model: String,
    fk: String,
    target: String,
    tool: &'static str,
) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let t = ctx.model(&target)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        let b_target = ctx.truth.keys(&t, &b.tenant, 1).await?;
        let Some(b_target) = b_target.first().cloned() else {
            return Err(ProbeOutcome::not_verified(format!(
                "{} has no {target} row",
                b.tenant
            )));
        };
        let (args, watched) = if tool == CREATE {
            let mut data = match scratch.create_data(&ctx.policy, &m, &a.tenant).await? {
                Ok(d) => d,
                Err(why) => return Err(ProbeOutcome::not_verified(why)),
            };
            data.insert(fk.clone(), b_target.clone());
            (
                calls::create(&model, Value::Object(data), Some(calls::REASON)),
                Vec::new(),
            )
        } else {
            let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
            (
                calls::update(
                    &model,
                    &key,
                    json!({ fk.clone(): b_target.clone() }),
                    Some(calls::REASON),
                ),
                vec![key],
            )
        };
        judge_refused_write(
            &ctx,
            &mut scratch,
            &m,
            &watched,
            (tool, args),
            &[],
            &format!(
                "{tool} on {model} pointing {fk} at {}'s {target}#{b_target}",
                b.tenant
            ),
        )
        .await
    }
    .await;
    finish(scratch, result).await
}

fn count_text(c: Option<i64>) -> String {
    c.map(|c| c.to_string())
        .unwrap_or_else(|| "(not counted)".to_string())
}
