//! Cross-tenant aggregates: a count over A's and B's keys, a count grouped by the tenant
//! column, a count with the tenant column forged to B — judged by the counts ground truth
//! allows A, with a control count over A's own keys when the aggregate is refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::super::common::internal_is_inconclusive;
use super::exposed;
use crate::calls::{self, AGGREGATE};
use crate::evidence::{inspect, rows_of};
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};

fn count_of(v: &Value) -> Option<i64> {
    count_of_row(rows_of(v).first()?)
}

fn count_of_row(row: &Value) -> Option<i64> {
    row.get("count").and_then(|c| {
        c.as_i64()
            .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
    })
}

pub(super) async fn aggregate(
    ctx: Arc<ProbeCtx>,
    model: String,
    variant: &'static str,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let tc = m
        .tenant_column
        .clone()
        .ok_or_else(|| ProbeOutcome::error(format!("{model} lost its tenant column")))?;
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let a_keys = ctx.truth.keys(&m, &a.tenant, 5).await?;
    let b_keys = ctx.truth.keys(&m, &b.tenant, 5).await?;
    if a_keys.is_empty() || b_keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} needs rows of both {} and {}",
            a.tenant, b.tenant
        )));
    }
    let mut all = a_keys.clone();
    all.extend(b_keys.clone());
    let in_keys = calls::cond(&m.primary_key, "in", json!(all));
    let args = match variant {
        "count" => calls::aggregate(&model, &[("count", None)], &[], vec![in_keys]),
        "group_by" => calls::aggregate(&model, &[("count", None)], &[tc.as_str()], vec![in_keys]),
        _ => calls::aggregate(
            &model,
            &[("count", None)],
            &[],
            vec![calls::cond(&tc, "eq", json!(b.tenant)), in_keys],
        ),
    };
    let call = ctx.call(a, AGGREGATE, args).await;
    internal_is_inconclusive(&call)?;
    let exposure = inspect(&ctx, &m, &call).await?;
    if exposure.has_cross_tenant() {
        return Ok(exposed(
            &ctx,
            &call,
            exposure,
            &format!("db_aggregate on {model}"),
        ));
    }
    let Ok(v) = &call.result else {
        // A refusal means something only when the same aggregate over the caller's own keys
        // goes through: otherwise db_aggregate simply does not work here.
        let control = ctx
            .call(
                a,
                AGGREGATE,
                calls::aggregate(
                    &model,
                    &[("count", None)],
                    &[],
                    vec![calls::cond(&m.primary_key, "in", json!(a_keys))],
                ),
            )
            .await;
        internal_is_inconclusive(&control)?;
        let code = call.code().map(|c| c.as_str()).unwrap_or("");
        if !control.is_ok() {
            return Err(ProbeOutcome::not_verified(format!(
                "db_aggregate on {model} was refused ({code}), and so was the same count over {}'s \
                 own keys ({}): the refusal shows nothing about isolation",
                a.tenant,
                control.code().map(|c| c.as_str()).unwrap_or("")
            ))
            .with_call(&ctx, &call)
            .fact(format!("control: {}", control.describe())));
        }
        return Ok(ProbeOutcome::pass(format!(
            "db_aggregate on {model} was refused ({code}) while the same count over {}'s own keys went through",
            a.tenant
        ))
        .with_call(&ctx, &call)
        .summary(call.describe())
        .fact(format!("control: {}", control.describe())));
    };
    let allowed = if variant == "forged" {
        0
    } else {
        a_keys.len() as i64
    };
    let fact = format!(
        "ground truth: {} of the {} keys belong to {}",
        a_keys.len(),
        all.len(),
        a.tenant
    );
    match variant {
        "group_by" => {
            let foreign: Vec<String> = rows_of(v)
                .iter()
                .filter_map(|r| r.get(&tc).and_then(Value::as_str))
                .filter(|t| *t != a.tenant)
                .map(str::to_string)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !foreign.is_empty() {
                return Ok(ProbeOutcome::fail(format!(
                    "grouping {model} by {tc} produced groups of other tenants: {}",
                    foreign.join(", ")
                ))
                .with_call(&ctx, &call)
                .fact(fact));
            }
            let groups = rows_of(v);
            let counted: i64 = groups.iter().filter_map(|r| count_of_row(r)).sum();
            if counted > allowed {
                return Ok(ProbeOutcome::fail(format!(
                    "grouping {model} by {tc} counted {counted} row(s) where {} can own at most {allowed}",
                    a.tenant
                ))
                .with_call(&ctx, &call)
                .fact(fact));
            }
            let blind = groups
                .iter()
                .filter(|r| {
                    r.get(&tc).and_then(Value::as_str).is_none() || count_of_row(r).is_none()
                })
                .count();
            if blind > 0 {
                return Err(ProbeOutcome::not_verified(format!(
                    "grouping {model} by {tc} was accepted but {blind} group(s) show no readable \
                     tenant or count, so whose rows they hold is unknown"
                ))
                .with_call(&ctx, &call)
                .fact(fact));
            }
        }
        _ => {
            let Some(n) = count_of(v) else {
                return Err(ProbeOutcome::error(format!(
                    "db_aggregate on {model} answered without a count the probe can read, so \
                     whose rows it counted is unknown"
                ))
                .with_call(&ctx, &call));
            };
            if n > allowed {
                return Ok(ProbeOutcome::fail(format!(
                    "db_aggregate counted {n} row(s) where {} can own at most {allowed}: \
                     other tenants' rows were counted",
                    a.tenant
                ))
                .with_call(&ctx, &call)
                .fact(fact));
            }
        }
    }
    Ok(ProbeOutcome::pass(format!(
        "db_aggregate on {model} counted only {}'s rows",
        a.tenant
    ))
    .with_call(&ctx, &call)
    .summary(call.describe())
    .fact(fact))
}
