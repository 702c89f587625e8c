//! Cursors across tenants and queries: a cursor minted for B presented by A, a cursor reused
//! on another query; both must be refused and yield nothing of B's.

use std::sync::Arc;

use serde_json::json;

use super::super::common::{internal_is_inconclusive, require_ok};
use super::exposed;
use crate::calls::{self, Query, QUERY};
use crate::evidence::{inspect, rows_of};
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};

pub(super) async fn cursor(
    ctx: Arc<ProbeCtx>,
    model: String,
    variant: &'static str,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let a_keys = ctx.truth.keys(&m, &a.tenant, 3).await?;
    let b_keys = ctx.truth.keys(&m, &b.tenant, 3).await?;
    if a_keys.len() < 3 || b_keys.len() < 2 {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} needs at least 3 rows of {} and 2 of {} to page through",
            a.tenant, b.tenant
        )));
    }
    let pk = m.primary_key.clone();
    let (minted_by, first, reuse) = if variant == "cursor_foreign" {
        let mut all = a_keys.clone();
        all.extend(b_keys.clone());
        let q = Query::new(&model)
            .filter(&pk, "in", json!(all))
            .order(&pk, false)
            .limit(1);
        (b, q.clone(), q)
    } else {
        let q1 = Query::new(&model)
            .filter(&pk, "in", json!(a_keys))
            .order(&pk, false)
            .limit(1);
        let q2 = Query::new(&model)
            .filter(&pk, "in", json!(a_keys[1..].to_vec()))
            .order(&pk, true)
            .limit(1);
        (a, q1, q2)
    };
    let page = ctx.call(minted_by, QUERY, first.build()).await;
    require_ok(
        &page,
        &format!("the first page of {model} as {}", minted_by.tenant),
    )?;
    let Some(cursor) = calls::next_cursor(&page.response()) else {
        return Err(ProbeOutcome::not_verified(format!(
            "the first page of {model} carried no next_cursor, so there was no cursor to reuse"
        )));
    };
    let call = ctx.call(a, QUERY, reuse.cursor(&cursor).build()).await;
    internal_is_inconclusive(&call)?;
    let exposure = inspect(&ctx, &m, &call).await?;
    let what = if variant == "cursor_foreign" {
        format!("a cursor minted for {} reused by {}", b.tenant, a.tenant)
    } else {
        "a cursor reused on a different query".to_string()
    };
    if exposure.has_cross_tenant() {
        return Ok(exposed(&ctx, &call, exposure, &what));
    }
    match &call.result {
        Err(e) => Ok(
            ProbeOutcome::pass(format!("{what} was refused ({})", e.code))
                .with_call(&ctx, &call)
                .summary(call.describe())
                .fact(format!("first page: {}", page.describe())),
        ),
        Ok(v) => Ok(ProbeOutcome::fail(format!(
            "{what} was accepted ({} row(s) returned): cursors must be signed and bound to the \
             tenant, model and query they were issued for",
            rows_of(v).len()
        ))
        .with_call(&ctx, &call)
        .summary(call.describe())
        .fact(format!("first page: {}", page.describe()))
        .facts(exposure.facts())),
    }
}
