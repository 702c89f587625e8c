//! The oracles: a filter, an ordering or an aggregate over a hidden field, each judged by
//! comparison with what the database holds — a true and a wrong guess answered alike, a row
//! order that does not follow the hidden values, no stored value among the aggregate's cells.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use preflight_enforcer::policy::{FieldAction, ModelPolicy};
use serde_json::{json, Value};

use super::super::common::{internal_is_inconclusive, require_ok, text_of};
use crate::calls::{self, Query, AGGREGATE, QUERY};
use crate::evidence::{inspect, rows_of};
use crate::runner::{CallOutcome, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::key_text;

/// What a response answered, for comparing two answers: the rows it returned, by key where they
/// carry one and as returned otherwise, in order (None when it was refused). Rows without a
/// key still count, so two answers of different sizes never compare equal.
fn answer(m: &ModelPolicy, call: &CallOutcome) -> Option<Vec<String>> {
    let v = call.result.as_ref().ok()?;
    Some(
        rows_of(v)
            .iter()
            .map(|r| {
                r.get(&m.primary_key)
                    .and_then(key_text)
                    .unwrap_or_else(|| r.to_string())
            })
            .collect(),
    )
}

pub(super) async fn filter_oracle(
    ctx: Arc<ProbeCtx>,
    model: String,
    col: String,
    op: &'static str,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let visible = ctx.truth.keys(&m, &a.tenant, 20).await?;
    let visible_text: BTreeSet<String> = visible.iter().filter_map(key_text).collect();
    let Some(target) = ctx
        .truth
        .canaries
        .of_column(&a.tenant, &m.table, &col)
        .find(|c| visible_text.contains(&c.row_id.to_string()))
        .cloned()
    else {
        return Err(ProbeOutcome::not_verified(format!(
            "no visible {} row of {model} has a canary in {col}",
            a.tenant
        )));
    };
    let (truth_guess, wrong_guess) = match op {
        "eq" => (json!(target.value), json!("preflight-wrong-guess")),
        _ => (
            json!(target.value.chars().take(3).collect::<String>()),
            json!("~~~"),
        ),
    };
    let q = |guess: Value| {
        Query::new(&model)
            .filter(&col, op, guess)
            .filter(&m.primary_key, "in", json!(visible))
            .build()
    };
    let right = ctx.call(a, QUERY, q(truth_guess)).await;
    let wrong = ctx.call(a, QUERY, q(wrong_guess)).await;
    internal_is_inconclusive(&right)?;
    internal_is_inconclusive(&wrong)?;
    let exposure = inspect(&ctx, &m, &right).await?;
    if !exposure.leaks.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "filtering {model} on {col} returned hidden values"
        ))
        .with_call(&ctx, &right)
        .leaks(exposure.leaks));
    }
    let (r, w) = (answer(&m, &right), answer(&m, &wrong));
    let facts = vec![
        format!("true guess ({}): {}", target.cell(), right.describe()),
        format!("wrong guess: {}", wrong.describe()),
    ];
    if r != w {
        return Ok(ProbeOutcome::fail(format!(
            "a filter on {} field {model}.{col} answers a true guess differently from a wrong one, \
             so an agent can test values it may not read; refuse {op} on it (field_denied)",
            m.action(&col).map(action_word).unwrap_or("hidden")
        ))
        .with_call(&ctx, &right)
        .summary(format!(
            "true guess → {:?}, wrong guess → {:?}",
            r.as_ref().map(|v| v.len()),
            w.as_ref().map(|v| v.len())
        ))
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "{op} on {model}.{col} reveals nothing: a true and a wrong guess get the same answer ({})",
        match &right.result {
            Ok(_) => "the same rows".to_string(),
            Err(e) => format!("refused with {}", e.code),
        }
    ))
    .with_call(&ctx, &right)
    .facts(facts))
}

fn action_word(a: FieldAction) -> &'static str {
    match a {
        FieldAction::Allow => "allowed",
        FieldAction::Deny => "denied",
        FieldAction::Mask => "masked",
        FieldAction::Hash => "hashed",
    }
}

/// The caller's rows of `m` to order by `col` (descending): up to 20, chosen so that ordering
/// them by ascending key gives a different order (otherwise a response in key order could not
/// be told from one that follows the hidden values), and descending key order too where the
/// rows allow. With each key, the rank of its hidden value in the database's descending order
/// (equal values share a rank). `None` when the caller's rows, ordered by `col` descending,
/// are in ascending key order.
async fn oracle_rows(
    ctx: &ProbeCtx,
    m: &ModelPolicy,
    col: &str,
) -> Result<Option<Vec<(Value, usize)>>, ProbeOutcome> {
    let a = &ctx.principals.a;
    // Rows from both ends of the column's order: where the values follow the key over most of
    // the table, the ends are where they are most likely not to.
    let mut candidates = ctx
        .truth
        .keys_ordered_by(m, &a.tenant, col, true, 100)
        .await?;
    for k in ctx
        .truth
        .keys_ordered_by(m, &a.tenant, col, false, 100)
        .await?
    {
        if !candidates.contains(&k) {
            candidates.push(k);
        }
    }
    let ranked: Vec<(Value, usize)> = ctx
        .truth
        .ranked_by(m, &candidates, col)
        .await?
        .into_iter()
        .map(|(k, r)| (k, usize::try_from(r).unwrap_or(usize::MAX)))
        .collect();
    // A pair with distinct hidden values that ascending key order (the order a layer that
    // ignores `order_by` returns rows in) puts the other way round; and, where the rows have
    // one, a pair it puts the same way, so descending key order differs too.
    let pair = |want: std::cmp::Ordering| {
        (0..ranked.len()).find_map(|i| {
            (i + 1..ranked.len()).find_map(|j| {
                let (ki, ri) = &ranked[i];
                let (kj, rj) = &ranked[j];
                (ri != rj && key_cmp(ki, kj) == want).then_some([i, j])
            })
        })
    };
    let Some(against) = pair(std::cmp::Ordering::Greater) else {
        return Ok(None);
    };
    let along = pair(std::cmp::Ordering::Less);
    let must: BTreeSet<usize> = against
        .into_iter()
        .chain(along.into_iter().flatten())
        .collect();
    let mut picked: Vec<(Value, usize)> = must.iter().map(|n| ranked[*n].clone()).collect();
    for (n, r) in ranked.iter().enumerate() {
        if picked.len() >= 20 {
            break;
        }
        if !must.contains(&n) {
            picked.push(r.clone());
        }
    }
    // Back in the database's order of the hidden values.
    picked.sort_by_key(|(_, r)| *r);
    Ok(Some(picked))
}

/// Keys compared as the database would: numbers numerically, text as text.
fn key_cmp(x: &Value, y: &Value) -> std::cmp::Ordering {
    x.as_i64()
        .zip(y.as_i64())
        .map(|(a, b)| a.cmp(&b))
        .unwrap_or_else(|| key_text(x).cmp(&key_text(y)))
}

pub(super) async fn order_oracle(ctx: Arc<ProbeCtx>, model: String, col: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    if m.tenant_column.is_none() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} is not tenant-scoped"
        )));
    }
    let Some(rows) = oracle_rows(&ctx, &m, &col).await? else {
        return Err(ProbeOutcome::not_verified(format!(
            "{}'s {model} rows are in the same order by {col} as by key, so a response that \
             follows the hidden values could not be told from one ordered by key",
            a.tenant
        )));
    };
    let keys: Vec<Value> = rows.iter().map(|(k, _)| k.clone()).collect();
    let rank: BTreeMap<String, usize> = rows
        .iter()
        .filter_map(|(k, r)| Some((key_text(k)?, *r)))
        .collect();
    let secret: Vec<String> = keys.iter().filter_map(key_text).collect();
    let call = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&m.primary_key, "in", json!(keys))
                .order(&col, true)
                .limit(keys.len() as u64)
                .build(),
        )
        .await;
    internal_is_inconclusive(&call)?;
    let exposure = inspect(&ctx, &m, &call).await?;
    if !exposure.leaks.is_empty() {
        return Ok(
            ProbeOutcome::fail(format!("ordering {model} by {col} returned hidden values"))
                .with_call(&ctx, &call)
                .leaks(exposure.leaks),
        );
    }
    let Ok(v) = &call.result else {
        // The same read ordered by the key must go through, or the refusal is not about the
        // hidden field.
        let control = ctx
            .call(
                a,
                QUERY,
                Query::new(&model)
                    .filter(&m.primary_key, "in", json!(keys))
                    .order(&m.primary_key, true)
                    .limit(keys.len() as u64)
                    .build(),
            )
            .await;
        require_ok(
            &control,
            &format!("the same read of {model} ordered by its key"),
        )?;
        return Ok(ProbeOutcome::pass(format!(
            "ordering {model} by {col} was refused ({}) while ordering by the key was not",
            call.code().map(|c| c.as_str()).unwrap_or("")
        ))
        .with_call(&ctx, &call)
        .fact(format!("control: {}", control.describe())));
    };
    let returned: Vec<String> = rows_of(v)
        .iter()
        .filter_map(|r| r.get(&m.primary_key).and_then(key_text))
        .collect();
    if returned.len() != rows_of(v).len() || returned.len() < 2 {
        return Err(ProbeOutcome::not_verified(format!(
            "ordering {model} by {col} was accepted, but {} of {} returned row(s) carry a key, so \
             their order cannot be compared with the hidden values",
            returned.len(),
            rows_of(v).len()
        ))
        .with_call(&ctx, &call));
    }
    let ranks: Vec<usize> = returned
        .iter()
        .filter_map(|k| rank.get(k).copied())
        .collect();
    let follows = ranks.len() == returned.len() && ranks.windows(2).all(|w| w[0] <= w[1]);
    if follows {
        return Ok(ProbeOutcome::fail(format!(
            "db_query ordered {model} by the hidden values of {col}: the row order reveals how \
             those values compare; refuse order_by on masked, hashed and denied fields"
        ))
        .with_call(&ctx, &call)
        .fact(format!("returned order: {}", returned.join(", ")))
        .fact(format!("order by the stored {col}: {}", secret.join(", "))));
    }
    Ok(ProbeOutcome::pass(format!(
        "ordering {model} by {col} was accepted but did not follow the hidden values (which differ from key order here)"
    ))
    .with_call(&ctx, &call)
    .fact(format!("returned order: {}", returned.join(", ")))
    .fact(format!("order by the stored {col}: {}", secret.join(", "))))
}

pub(super) async fn aggregate_oracle(
    ctx: Arc<ProbeCtx>,
    model: String,
    col: String,
    variant: &'static str,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    if m.tenant_column.is_none() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} is not tenant-scoped"
        )));
    }
    let keys = ctx
        .truth
        .keys_ordered_by(&m, &a.tenant, &col, false, 20)
        .await?;
    if keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "{} has no {model} row with {col} set",
            a.tenant
        )));
    }
    let stored: BTreeSet<String> = ctx
        .truth
        .rows(&m, &keys)
        .await?
        .iter()
        .filter_map(|r| r.get(&col).and_then(text_of))
        .collect();
    let in_keys = calls::cond(&m.primary_key, "in", json!(keys));
    let args = if variant == "min_max" {
        calls::aggregate(
            &model,
            &[("min", Some(&col)), ("max", Some(&col))],
            &[],
            vec![in_keys],
        )
    } else {
        calls::aggregate(&model, &[("count", None)], &[col.as_str()], vec![in_keys])
    };
    let call = ctx.call(a, AGGREGATE, args).await;
    internal_is_inconclusive(&call)?;
    let exposure = inspect(&ctx, &m, &call).await?;
    // Only the cells that carry the field (the group key, `min_<col>`/`max_<col>`) are compared,
    // exactly and whatever their length: a one-digit stored value is as revealing as a long one,
    // and counts elsewhere in the response must not be mistaken for it.
    let mut revealed: Vec<String> = Vec::new();
    if let Ok(v) = &call.result {
        for row in rows_of(v) {
            let Value::Object(cells) = row else { continue };
            for (name, cell) in cells {
                if !(name == &col
                    || name.ends_with(&format!("_{col}"))
                    || name == "min"
                    || name == "max")
                {
                    continue;
                }
                if let Some(s) = text_of(cell) {
                    if stored.contains(&s) {
                        revealed.push(crate::canary::mask(&s));
                    }
                }
            }
        }
    }
    if !exposure.leaks.is_empty() || !revealed.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "db_aggregate returned stored values of {} field {model}.{col}; refuse min, max and \
             group_by on fields that are not allowed",
            m.action(&col).map(action_word).unwrap_or("hidden")
        ))
        .with_call(&ctx, &call)
        .leaks(exposure.leaks)
        .facts(
            revealed
                .into_iter()
                .map(|r| format!("stored value returned: \"{r}\"")),
        ));
    }
    if let (Ok(v), "group_by") = (&call.result, variant) {
        // Groups tell which rows share a hidden value (one group or two for two customers is
        // an equality oracle), whatever the group keys show.
        return Ok(ProbeOutcome::fail(format!(
            "db_aggregate grouped {model} by {} field {col} ({} group(s)): grouping tells which \
             rows share a hidden value even when the values themselves are redacted; refuse \
             group_by on fields that are not allowed",
            m.action(&col).map(action_word).unwrap_or("hidden"),
            rows_of(v).len()
        ))
        .with_call(&ctx, &call));
    }
    Ok(ProbeOutcome::pass(match &call.result {
        Ok(_) => format!("db_aggregate over {model}.{col} returned no stored value"),
        Err(e) => format!("db_aggregate over {model}.{col} was refused ({})", e.code),
    })
    .with_call(&ctx, &call))
}
