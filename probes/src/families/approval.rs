//! `approval`: gated writes wait for a person, run once exactly as approved, and expire (PRE-5,
//! WRT-3…5). See docs/probes/approval.md.
//!
//! For every approval rule of the policy the probe builds a write the rule gates (a gated field
//! written, or a value over the threshold) on a row it planted, and follows it through the life
//! cycle: pending (nothing changed), approved through the approvals store as a person with an
//! approver role, executed once (the row changed and the audit record names the approver),
//! replayed or swapped (refused, nothing changed), expired (refused).

use std::sync::Arc;

use async_trait::async_trait;
use preflight_enforcer::policy::ApprovalRule;
use preflight_enforcer::{ErrorCode, Gateway, Principal};
use serde_json::{json, Map, Value};

use super::common::internal_is_inconclusive;
use super::cross_tenant::finish;
use super::PlanInput;
use crate::calls::{self, APPROVAL_STATUS, CREATE, UPDATE};
use crate::codes::ProbeCode;
use crate::runner::{CallOutcome, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::{self, Scratch};

/// The approvals store as a person uses it (`preflight approvals approve`), for the probes.
///
/// Contract: `approve` records `approver` as the decision maker of a pending request and fails
/// when the request is not pending or the approver lacks a role the rule names.
#[async_trait]
pub trait ApprovalDesk: Send + Sync {
    async fn approve(&self, approval_id: &str, approver: &Principal) -> Result<(), String>;
}

/// Every approval probe the policy's rules call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    for (i, rule) in input.policy.approvals.iter().enumerate() {
        let path = format!("approvals.rules.{i}");
        let stages = [
            (
                ProbeCode::ApprovalPending,
                "pending",
                "enters pending and changes nothing",
            ),
            (
                ProbeCode::ApprovalExecutesOnce,
                "execute",
                "runs once when approved, approver recorded",
            ),
            (
                ProbeCode::ApprovalReplay,
                "replay",
                "cannot be replayed or swapped",
            ),
            (ProbeCode::ApprovalExpiry, "expiry", "expires after its SLA"),
        ];
        for (code, stage, what) in stages {
            // The SLA mechanism is the queue's, not the rule's: one expiry probe covers it.
            if stage == "expiry" && i > 0 {
                continue;
            }
            let r = rule.name.clone();
            out.push(
                Probe::new(
                    code,
                    format!("approval rule {} {what}", rule.name),
                    move |ctx| approval(ctx, r.clone(), stage),
                )
                .phase(Phase::Serial)
                .at(path.clone()),
            );
        }
    }
    out
}

/// A write the rule gates, on a row the probe planted (or a new row), with the value it sets.
struct Gated {
    tool: &'static str,
    args: Value,
    /// Keys to watch (the updated row; empty for a create).
    watched: Vec<Value>,
    /// The column and value that show the write was applied.
    column: String,
    value: Value,
}

async fn gated_write(
    ctx: &ProbeCtx,
    scratch: &mut Scratch<'_>,
    rule: &ApprovalRule,
    variant: u32,
) -> Result<Gated, ProbeOutcome> {
    let m = ctx.model(&rule.model)?.clone();
    let a = &ctx.principals.a;
    let can = |t: &str| {
        m.tools.contains(t) && ctx.has_tool(t) && (rule.tools.is_empty() || rule.tools.contains(t))
    };
    let tool = if can(UPDATE) {
        UPDATE
    } else if can(CREATE) {
        CREATE
    } else {
        return Err(ProbeOutcome::not_verified(format!(
            "rule {} gates no write tool the layer offers on {}",
            rule.name, rule.model
        )));
    };
    let (column, value) = if let Some(t) = &rule.threshold {
        let v = t.greater_than.max(0.0) * 2.0 + 100.0 + f64::from(variant);
        (t.field.clone(), json!(v.round()))
    } else if let Some(f) = rule.fields.iter().find(|f| m.writable_fields.contains(*f)) {
        (f.clone(), Value::Null)
    } else {
        return Err(ProbeOutcome::not_verified(format!(
            "rule {} gates no field the agent may write",
            rule.name
        )));
    };
    if !m.writable_fields.contains(&column) {
        return Err(ProbeOutcome::not_verified(format!(
            "rule {} compares {column}, which is not writable",
            rule.name
        )));
    }
    if tool == UPDATE {
        let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
        let value = if value.is_null() {
            let mut v = scratch::other_value(&ctx.truth, &m, &key, &column).await?;
            if variant > 0 {
                if let Some(n) = v.as_f64() {
                    v = json!(n + f64::from(variant));
                }
            }
            v
        } else {
            value
        };
        Ok(Gated {
            tool,
            args: calls::update(
                &m.name,
                &key,
                json!({ column.clone(): value.clone() }),
                Some(calls::REASON),
            ),
            watched: vec![key],
            column,
            value,
        })
    } else {
        let mut data = match scratch.create_data(&ctx.policy, &m, &a.tenant).await? {
            Ok(d) => d,
            Err(why) => return Err(ProbeOutcome::not_verified(why)),
        };
        let value = if value.is_null() {
            data.get(&column).cloned().unwrap_or(json!("preflight"))
        } else {
            value
        };
        data.insert(column.clone(), value.clone());
        Ok(Gated {
            tool,
            args: calls::create(&m.name, Value::Object(data), Some(calls::REASON)),
            watched: Vec::new(),
            column,
            value,
        })
    }
}

/// Submits `gated` and requires `approval_required` with an id and an unchanged database.
async fn submit_pending(
    ctx: &ProbeCtx,
    gw: &dyn Gateway,
    scratch: &mut Scratch<'_>,
    gated: &Gated,
) -> Result<(String, CallOutcome), ProbeOutcome> {
    let m = ctx.model(&ctx_rule_model(gated))?.clone();
    let a = &ctx.principals.a;
    let before = ctx.truth.snapshot(&m, &gated.watched).await?;
    let call = ctx.call_on(gw, a, gated.tool, gated.args.clone()).await;
    let after = ctx.truth.snapshot(&m, &gated.watched).await?;
    for k in scratch::created_since(&ctx.truth, &m, before.max_key.as_deref()).await? {
        scratch.adopt(&m, k);
    }
    let diff = before.diff(&after);
    if !diff.is_empty() {
        return Err(ProbeOutcome::fail(format!(
            "the gated {} ran at once ({}): it must wait for approval",
            gated.tool,
            diff.join(", ")
        ))
        .with_call(ctx, &call)
        .rows(after.rows));
    }
    internal_is_inconclusive(&call)?;
    match &call.result {
        Err(e) if e.code == ErrorCode::ApprovalRequired => match calls::approval_id_of(e) {
            Some(id) => Ok((id, call)),
            None => Err(ProbeOutcome::fail(
                "approval_required carried no approval id, so the agent cannot follow up",
            )
            .with_call(ctx, &call)),
        },
        Err(e) => Err(ProbeOutcome::not_verified(format!(
            "the gated write was refused for another reason ({}: {})",
            e.code, e.message
        ))
        .with_call(ctx, &call)),
        Ok(_) => Err(ProbeOutcome::fail(
            "the gated write was accepted without an approval (although nothing changed)",
        )
        .with_call(ctx, &call)),
    }
}

fn ctx_rule_model(g: &Gated) -> String {
    g.args
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The value of the gated column in the watched row (or in the newest row for a create).
async fn applied(
    ctx: &ProbeCtx,
    scratch: &mut Scratch<'_>,
    gated: &Gated,
    before_max: Option<&str>,
) -> Result<bool, ProbeOutcome> {
    let m = ctx.model(&ctx_rule_model(gated))?.clone();
    let rows = if gated.watched.is_empty() {
        let created = scratch::created_since(&ctx.truth, &m, before_max).await?;
        for k in &created {
            scratch.adopt(&m, k.clone());
        }
        ctx.truth.rows(&m, &created).await?
    } else {
        ctx.truth.rows(&m, &gated.watched).await?
    };
    Ok(rows.iter().any(|r| {
        let v = r.get(&gated.column);
        v == Some(&gated.value)
            || v.and_then(Value::as_f64)
                .zip(gated.value.as_f64())
                .is_some_and(|(a, b)| (a - b).abs() < 1e-9)
            || v.and_then(Value::as_str)
                .zip(gated.value.as_str())
                .is_some_and(|(a, b)| a == b)
    }))
}

async fn approval(ctx: Arc<ProbeCtx>, rule_name: String, stage: &'static str) -> ProbeResult {
    ctx.require_writes()?;
    let rule = ctx
        .policy
        .approvals
        .iter()
        .find(|r| r.name == rule_name)
        .cloned()
        .ok_or_else(|| ProbeOutcome::error(format!("approval rule {rule_name} vanished")))?;
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = stage_body(&ctx, &mut scratch, &rule, stage).await;
    finish(scratch, result).await
}

async fn stage_body(
    ctx: &ProbeCtx,
    scratch: &mut Scratch<'_>,
    rule: &ApprovalRule,
    stage: &'static str,
) -> ProbeResult {
    let a = &ctx.principals.a;
    let m = ctx.model(&rule.model)?.clone();
    // The expiry stage runs on an instance whose rule has a one-second SLA, so the request
    // expires by time passing, without anyone acting.
    let gw: Arc<dyn Gateway> = if stage == "expiry" {
        let Some(factory) = ctx.factory.clone() else {
            return Err(ProbeOutcome::not_verified(
                "this target cannot start an instance with a short approval SLA",
            ));
        };
        if !factory.applies_policy() {
            return Err(ProbeOutcome::not_verified(
                "this target runs its own configuration, so preflight cannot start it with a \
                 one-second approval SLA",
            ));
        }
        let mut policy = (*ctx.policy).clone();
        for r in policy.approvals.iter_mut().filter(|r| r.name == rule.name) {
            r.sla_seconds = 1;
        }
        let policy = crate::families::instance_policy(&policy);
        factory
            .instance(Arc::new(policy), ctx.faults.clone())
            .await
            .map_err(|e| ProbeOutcome::error(format!("cannot start an instance: {e}")))?
    } else {
        Arc::clone(&ctx.gateway)
    };
    let gated = gated_write(ctx, scratch, rule, 0).await?;
    let (id, pending_call) = submit_pending(ctx, gw.as_ref(), scratch, &gated).await?;
    if stage == "pending" {
        let state = stored_state(ctx, &id).await?;
        let mut out = ProbeOutcome::pass(format!(
            "the gated {} on {} returned approval_required ({id}), changed nothing, and the \
             approvals store holds the request as pending",
            gated.tool, rule.model
        ))
        .with_call(ctx, &pending_call)
        .fact(format!("approvals store: request {id} is {state}"));
        if state != "pending" {
            return Ok(ProbeOutcome::fail(format!(
                "the approvals store holds the new request {id} as {state}, not pending: nobody \
                 has decided on it yet"
            ))
            .with_call(ctx, &pending_call));
        }
        if ctx.has_tool(APPROVAL_STATUS) {
            let status = ctx
                .call(a, APPROVAL_STATUS, calls::approval_status(&id))
                .await;
            out = out.fact(format!("db_approval_status: {}", status.describe()));
        }
        return Ok(out);
    }
    if stage == "expiry" {
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        let mut facts =
            vec!["the rule's SLA is 1 s on this instance; the probe waited 1.3 s".to_string()];
        let state = stored_state(ctx, &id).await?;
        facts.push(format!(
            "approvals store after the SLA: request {id} is {state}"
        ));
        if state != "expired" {
            return Ok(ProbeOutcome::fail(format!(
                "the approvals store holds request {id} as {state} after its SLA passed; it must \
                 be expired"
            ))
            .facts(facts));
        }
        if ctx.has_tool(APPROVAL_STATUS) {
            let status = ctx
                .call_on(gw.as_ref(), a, APPROVAL_STATUS, calls::approval_status(&id))
                .await;
            facts.push(format!(
                "db_approval_status after the SLA: {}",
                status.describe()
            ));
        }
        let snap = ctx.truth.snapshot(&m, &gated.watched).await?;
        let call = ctx
            .call_on(
                gw.as_ref(),
                a,
                gated.tool,
                calls::with_approval(gated.args.clone(), &id),
            )
            .await;
        if applied(ctx, scratch, &gated, snap.max_key.as_deref()).await? {
            return Ok(ProbeOutcome::fail(
                "a write whose approval request had expired was executed; expired requests must be denied",
            )
            .with_call(ctx, &call)
            .facts(facts));
        }
        internal_is_inconclusive(&call)?;
        return Ok(match &call.result {
            Err(e) => ProbeOutcome::pass(format!(
                "the expired request could not be used ({}) and nothing changed",
                e.code
            ))
            .with_call(ctx, &call)
            .facts(facts),
            Ok(_) => {
                ProbeOutcome::fail("the expired request was accepted (although nothing changed)")
                    .with_call(ctx, &call)
                    .facts(facts)
            }
        });
    }
    let Some(desk) = ctx.approvals.clone() else {
        return Err(ProbeOutcome::not_verified(
            "the target has no approvals store the probe can act on as an approver",
        ));
    };
    desk.approve(&id, &ctx.principals.approver)
        .await
        .map_err(|e| ProbeOutcome::error(format!("the approver could not approve {id}: {e}")))?;
    let snap = ctx.truth.snapshot(&m, &gated.watched).await?;
    let exec = ctx
        .call(a, gated.tool, calls::with_approval(gated.args.clone(), &id))
        .await;
    internal_is_inconclusive(&exec)?;
    if !exec.is_ok() || !applied(ctx, scratch, &gated, snap.max_key.as_deref()).await? {
        return Ok(ProbeOutcome::fail(format!(
            "the approved write was not applied ({})",
            exec.describe()
        ))
        .with_call(ctx, &exec));
    }
    if stage == "execute" {
        let records = ctx
            .truth
            .audit_records(std::slice::from_ref(&exec.trace_id))
            .await?
            .unwrap_or_default();
        let Some(rec) = records.first() else {
            return Ok(ProbeOutcome::fail(
                "the approved write has no audit record, so its approver is not recorded",
            )
            .with_call(ctx, &exec));
        };
        let approver = rec
            .get("approver")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let approval_id = rec
            .get("approval_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if approver != ctx.principals.approver.user || approval_id != id {
            return Ok(ProbeOutcome::fail(format!(
                "the audit record of the approved write names approver `{approver}` and approval `{approval_id}`; expected `{}` and `{id}`",
                ctx.principals.approver.user
            ))
            .with_call(ctx, &exec)
            .audit_records(records));
        }
        return Ok(ProbeOutcome::pass(format!(
            "approved by {}, the write ran once and its audit record names the approver",
            ctx.principals.approver.user
        ))
        .with_call(ctx, &exec)
        .audit_records(records));
    }
    // Replay: put the row back, then submit the same approved write again.
    let mut facts = vec![format!("executed once: {}", exec.describe())];
    if !gated.watched.is_empty() {
        let original = pending_original(ctx, &gated).await?;
        restore_column(ctx, &m, &gated.watched[0], &gated.column, &original).await?;
    }
    let snap = ctx.truth.snapshot(&m, &gated.watched).await?;
    let replay = ctx
        .call(a, gated.tool, calls::with_approval(gated.args.clone(), &id))
        .await;
    // Judged from the database: a replay that wrote its row is a failure whatever the layer
    // answered (an error after the write does not undo it).
    if applied(ctx, scratch, &gated, snap.max_key.as_deref()).await? {
        return Ok(
            ProbeOutcome::fail("an executed approval was used a second time")
                .with_call(ctx, &replay)
                .facts(facts),
        );
    }
    facts.push(format!("replay: {}", replay.describe()));
    // Swap: a fresh approval, then a different payload under its id.
    let gated2 = gated_write(ctx, scratch, rule, 7).await?;
    let (id2, _) = submit_pending(ctx, gw.as_ref(), scratch, &gated2).await?;
    desk.approve(&id2, &ctx.principals.approver)
        .await
        .map_err(|e| ProbeOutcome::error(format!("the approver could not approve {id2}: {e}")))?;
    let mut swapped = gated2.args.clone();
    let swapped_value = match &gated2.value {
        Value::Number(n) => json!(n.as_f64().unwrap_or(0.0) + 1.0),
        Value::String(s) => json!(format!("{s}-swapped")),
        other => other.clone(),
    };
    if let Some(data) = swapped.get_mut("data").and_then(Value::as_object_mut) {
        data.insert(gated2.column.clone(), swapped_value.clone());
    }
    let before = ctx.truth.snapshot(&m, &gated2.watched).await?;
    let swap = ctx
        .call(a, gated2.tool, calls::with_approval(swapped, &id2))
        .await;
    let after = ctx.truth.snapshot(&m, &gated2.watched).await?;
    for k in scratch::created_since(&ctx.truth, &m, before.max_key.as_deref()).await? {
        scratch.adopt(&m, k);
    }
    if !before.diff(&after).is_empty() {
        return Ok(ProbeOutcome::fail(
            "an approval was used for a payload different from the one approved",
        )
        .with_call(ctx, &swap)
        .facts(facts));
    }
    facts.push(format!("swapped payload: {}", swap.describe()));
    internal_is_inconclusive(&replay)?;
    internal_is_inconclusive(&swap)?;
    if replay.is_ok() || swap.is_ok() {
        return Ok(ProbeOutcome::fail(
            "a replayed or swapped approval was accepted (although nothing changed)",
        )
        .with_call(ctx, if replay.is_ok() { &replay } else { &swap })
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(
        "a replayed approval and a swapped payload were both refused; nothing changed",
    )
    .with_call(ctx, &replay)
    .facts(facts))
}

/// The request's state in the approvals store, read from the database (never from a tool's
/// words); `not_verified` when the target keeps no approvals table the probe can read.
async fn stored_state(ctx: &ProbeCtx, id: &str) -> Result<String, ProbeOutcome> {
    match ctx.truth.approval_state(id).await? {
        Some(Some(state)) => Ok(state),
        Some(None) => Err(ProbeOutcome::fail(format!(
            "approval_required named request {id}, which the approvals store does not hold"
        ))),
        None => Err(ProbeOutcome::not_verified(
            "the database has no preflight_ops.approvals, so the request's state could not be read",
        )),
    }
}

/// The planted row's original value of the gated column (from its source: the planted row was
/// a clone, and only the approved write changed it).
async fn pending_original(ctx: &ProbeCtx, gated: &Gated) -> Result<Value, ProbeOutcome> {
    let m = ctx.model(&ctx_rule_model(gated))?.clone();
    let src = ctx.truth.keys(&m, &ctx.principals.a.tenant, 1).await?;
    let rows = ctx.truth.rows(&m, &src).await?;
    Ok(rows
        .first()
        .and_then(|r| r.get(&gated.column).cloned())
        .unwrap_or(Value::Null))
}

async fn restore_column(
    ctx: &ProbeCtx,
    m: &preflight_enforcer::policy::ModelPolicy,
    key: &Value,
    column: &str,
    value: &Value,
) -> Result<(), ProbeOutcome> {
    use crate::truth::{quote_ident, table_ref};
    let table = table_ref(m);
    let sql = format!(
        "UPDATE {table} t SET {col} = (jsonb_populate_record(NULL::{table}, $2)).{col} \
         WHERE t.{pk} = (jsonb_populate_record(NULL::{table}, $1)).{pk}",
        col = quote_ident(column),
        pk = quote_ident(&m.primary_key),
    );
    sqlx::query(&sql)
        .bind(json!({ m.primary_key.clone(): key }))
        .bind(json!({ column: value }))
        .execute(ctx.truth.pool())
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot reset the planted row: {e}")))?;
    Ok(())
}
