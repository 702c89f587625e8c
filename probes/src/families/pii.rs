//! `pii`: masked fields masked, denied fields absent, on every read path and through every
//! oracle (PRE-2, RED-1…6). See docs/probes/pii.md.
//!
//! Redaction is judged against the stored row (read as the owner): a masked or hashed field
//! must not carry its stored value, a denied field must not be present, and no response — rows,
//! includes, aggregates, error messages — may contain a canary of a column the policy does not
//! allow. Oracles are judged by comparison: the same query with a true guess and a wrong guess
//! about a hidden value must not be answered differently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use preflight_enforcer::policy::{ColumnPolicy, FieldAction, ModelPolicy};
use serde_json::{json, Map, Value};

use super::common::{
    internal_is_inconclusive, internal_markers, redaction_violations, require_ok, text_of,
};
use super::cross_tenant::finish;
use super::PlanInput;
use crate::calls::{self, Query, AGGREGATE, DESCRIBE, GET, QUERY, UPDATE};
use crate::codes::ProbeCode;
use crate::evidence::{inspect, row_refs, rows_of, Exposure};
use crate::runner::{CallOutcome, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::Scratch;
use crate::truth::key_text;

fn sensitive(m: &ModelPolicy) -> Vec<String> {
    m.columns
        .iter()
        .filter(|c| c.action != FieldAction::Allow)
        .map(|c| c.name.clone())
        .collect()
}

/// Every pii probe this policy and tool list call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    if input.tools.contains(DESCRIBE) {
        out.push(
            Probe::new(
                ProbeCode::DescribeSchema,
                "db_describe_schema lists nothing denied",
                describe_schema,
            )
            .at("models"),
        );
    }
    for m in input.policy.models.values() {
        let name = m.name.clone();
        let path = format!("models.{name}.fields");
        let hidden = sensitive(m);
        if !hidden.is_empty() && m.tools.contains(GET) && input.tools.contains(GET) {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::GetRedacted,
                    format!("db_get on {name}"),
                    move |ctx| read_redacted(ctx, n.clone(), GET),
                )
                .at(path.clone()),
            );
        }
        if !hidden.is_empty() && m.tools.contains(QUERY) && input.tools.contains(QUERY) {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::QueryRedacted,
                    format!("db_query on {name}"),
                    move |ctx| read_redacted(ctx, n.clone(), QUERY),
                )
                .at(path.clone()),
            );
        }
        if m.tools.contains(QUERY) && input.tools.contains(QUERY) {
            for rel in m.relations.values() {
                let Some(t) = input.policy.model(&rel.target) else {
                    continue;
                };
                if sensitive(t).is_empty() || !t.tools.contains(QUERY) {
                    continue;
                }
                let (n, r) = (name.clone(), rel.name.clone());
                out.push(
                    Probe::new(
                        ProbeCode::IncludeRedacted,
                        format!("include {} on {name}", rel.name),
                        move |ctx| include_redacted(ctx, n.clone(), r.clone()),
                    )
                    .at(format!("models.{}.fields", t.name)),
                );
            }
            for col in &hidden {
                let has_canaries =
                    input.truth.canaries.iter().any(|c| {
                        c.tenant == input.tenant_a && c.table == m.table && c.column == *col
                    });
                let field_path = format!("models.{name}.fields.{col}");
                if has_canaries {
                    for op in ["eq", "startswith"] {
                        let (n, c) = (name.clone(), col.clone());
                        out.push(
                            Probe::new(
                                ProbeCode::FilterOracle,
                                format!("db_query on {name} where {col} {op} a guess"),
                                move |ctx| filter_oracle(ctx, n.clone(), c.clone(), op),
                            )
                            .at(field_path.clone()),
                        );
                    }
                }
                let (n, c) = (name.clone(), col.clone());
                if m.tenant_column.is_none() || input.rows_per_tenant(m) < 3 {
                    continue;
                }
                out.push(
                    Probe::new(
                        ProbeCode::OrderOracle,
                        format!("db_query on {name} ordered by {col}"),
                        move |ctx| order_oracle(ctx, n.clone(), c.clone()),
                    )
                    .at(field_path.clone()),
                );
                if m.tools.contains(AGGREGATE) && input.tools.contains(AGGREGATE) {
                    for variant in ["min_max", "group_by"] {
                        let (n, c) = (name.clone(), col.clone());
                        let title = if variant == "min_max" {
                            format!("db_aggregate min/max of {name}.{col}")
                        } else {
                            format!("db_aggregate on {name} grouped by {col}")
                        };
                        out.push(
                            Probe::new(ProbeCode::AggregateOracle, title, move |ctx| {
                                aggregate_oracle(ctx, n.clone(), c.clone(), variant)
                            })
                            .at(field_path.clone()),
                        );
                    }
                }
            }
            if let Some(col) = m.columns.iter().find(|c| {
                c.action == FieldAction::Allow
                    && (matches!(
                        c.pg_type.as_str(),
                        "bigint" | "integer" | "smallint" | "date" | "boolean"
                    ) || c.pg_type.starts_with("timestamp")
                        || c.pg_type.starts_with("numeric"))
            }) {
                let (n, c) = (name.clone(), col.name.clone());
                out.push(
                    Probe::new(
                        ProbeCode::ErrorLeak,
                        format!("db_query on {name} with a malformed {} value", col.name),
                        move |ctx| error_leak_read(ctx, n.clone(), c.clone()),
                    )
                    .at(format!("models.{name}")),
                );
            }
        }
        if m.tools.contains(UPDATE) && input.tools.contains(UPDATE) && !m.writable_fields.is_empty()
        {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::ErrorLeak,
                    format!("db_update on {name} violating a constraint"),
                    move |ctx| error_leak_write(ctx, n.clone()),
                )
                .phase(Phase::Serial)
                .at(format!("models.{name}.writable_fields")),
            );
        }
    }
    out
}

/// A's visible keys of `m`, those holding the most canaries first (up to `n`).
async fn keys_with_canaries(
    ctx: &ProbeCtx,
    m: &ModelPolicy,
    n: usize,
) -> Result<Vec<Value>, ProbeOutcome> {
    let tenant = ctx.principals.a.tenant.clone();
    let visible = if m.tenant_column.is_some() {
        ctx.truth.keys(m, &tenant, 200).await?
    } else {
        ctx.truth.keys(m, "", 200).await?
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in ctx.truth.canaries.iter() {
        if c.table == m.table && (m.tenant_column.is_none() || c.tenant == tenant) {
            *counts.entry(c.row_id.to_string()).or_default() += 1;
        }
    }
    let mut keyed: Vec<(usize, usize, Value)> = visible
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let n = key_text(&k)
                .and_then(|t| counts.get(&t).copied())
                .unwrap_or(0);
            (n, i, k)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(keyed.into_iter().take(n).map(|(_, _, k)| k).collect())
}

/// Redaction violations of every row of `model` (top-level and included) in a response,
/// against the stored rows, plus the canary exposure.
async fn check_rows(
    ctx: &ProbeCtx,
    m: &ModelPolicy,
    call: &CallOutcome,
    depth: Option<usize>,
) -> Result<(Vec<String>, Exposure, usize), ProbeOutcome> {
    let response = call.response();
    let refs = row_refs(&ctx.policy, m, &response);
    let mut by_model: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in refs
        .into_iter()
        .filter(|r| depth.is_none_or(|d| r.depth == d))
    {
        by_model.entry(r.model.clone()).or_default().push(r);
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    for (model_name, refs) in by_model {
        let Some(model) = ctx.policy.model(&model_name) else {
            continue;
        };
        let keys: Vec<Value> = refs.iter().filter_map(|r| r.key.clone()).collect();
        let stored = ctx.truth.rows(model, &keys).await?;
        let stored: BTreeMap<String, Value> = stored
            .into_iter()
            .filter_map(|row| {
                let k = row.get(&model.primary_key).and_then(key_text)?;
                Some((k, row))
            })
            .collect();
        for r in &refs {
            let Value::Object(obj) = &r.row else { continue };
            let s = r
                .key
                .as_ref()
                .and_then(key_text)
                .and_then(|k| stored.get(&k));
            checked += 1;
            violations.extend(redaction_violations(model, obj, s, &r.path));
        }
    }
    let exposure = inspect(ctx, m, call).await?;
    Ok((violations, exposure, checked))
}

fn redaction_outcome(
    ctx: &ProbeCtx,
    call: &CallOutcome,
    violations: Vec<String>,
    exposure: Exposure,
    checked: usize,
    what: &str,
) -> ProbeOutcome {
    if !violations.is_empty() || !exposure.leaks.is_empty() {
        return ProbeOutcome::fail(format!(
            "{what} exposed {} field(s) the policy hides and {} canary value(s); mask or drop \
             every masked, hashed and denied field on this path",
            violations.len(),
            exposure.leaks.len()
        ))
        .with_call(ctx, call)
        .summary(format!(
            "{} → {} violation(s)",
            call.describe(),
            violations.len() + exposure.leaks.len()
        ))
        .facts(violations)
        .leaks(exposure.leaks.clone())
        .facts(exposure.facts());
    }
    ProbeOutcome::pass(format!(
        "{what}: {checked} row(s) checked against the stored rows; every masked field masked, every denied field absent"
    ))
    .with_call(ctx, call)
    .summary(call.describe())
    .facts(exposure.facts())
}

async fn read_redacted(ctx: Arc<ProbeCtx>, model: String, tool: &'static str) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let keys = keys_with_canaries(&ctx, &m, if tool == GET { 1 } else { 10 }).await?;
    let Some(first) = keys.first() else {
        return Err(ProbeOutcome::not_verified(format!(
            "{} has no visible {model} row",
            a.tenant
        )));
    };
    let key_filterable = m.action(&m.primary_key) == Some(FieldAction::Allow);
    let args = if tool == GET {
        calls::get(&model, first)
    } else if key_filterable {
        Query::new(&model)
            .filter(&m.primary_key, "in", json!(keys))
            .build()
    } else {
        // The key is hidden from the agent: read the caller's own rows, as many as fit.
        Query::new(&model).limit(10).build()
    };
    let call = ctx.call(a, tool, args).await;
    require_ok(&call, &format!("{tool} of {}'s own {model} rows", a.tenant))?;
    let (violations, exposure, checked) = check_rows(&ctx, &m, &call, Some(0)).await?;
    if checked == 0 {
        return Err(
            ProbeOutcome::error(format!("{tool} returned no {model} row to inspect"))
                .with_call(&ctx, &call),
        );
    }
    Ok(redaction_outcome(
        &ctx,
        &call,
        violations,
        exposure,
        checked,
        &format!("{tool} on {model}"),
    ))
}

async fn include_redacted(ctx: Arc<ProbeCtx>, model: String, relation: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let rel = m
        .relations
        .get(&relation)
        .cloned()
        .ok_or_else(|| ProbeOutcome::error(format!("relation {relation} vanished")))?;
    let target = ctx.model(&rel.target)?.clone();
    // Rows that have something to include: parents with children, children with a parent.
    let keys = crate::scratch::linked_keys(&ctx.truth, &m, &target, &rel, &a.tenant, 5).await?;
    if keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "no {} row of {model} has a related {} row",
            a.tenant, target.name
        )));
    }
    let call = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&m.primary_key, "in", json!(keys))
                .include(&relation)
                .build(),
        )
        .await;
    internal_is_inconclusive(&call)?;
    if let Err(e) = &call.result {
        // A refused include returns no included rows, so nothing can leak through it.
        return Ok(ProbeOutcome::pass(format!(
            "include {relation} on {model} is refused here ({}), so no included row reaches the agent on this path",
            e.code
        ))
        .with_call(&ctx, &call));
    }
    let (violations, exposure, checked) = check_rows(&ctx, &m, &call, Some(1)).await?;
    if checked == 0 {
        return Err(ProbeOutcome::not_verified(format!(
            "the response carried no included {relation} rows to inspect"
        ))
        .with_call(&ctx, &call));
    }
    Ok(redaction_outcome(
        &ctx,
        &call,
        violations,
        exposure,
        checked,
        &format!("include {relation} on {model}"),
    ))
}

async fn describe_schema(ctx: Arc<ProbeCtx>) -> ProbeResult {
    let a = &ctx.principals.a;
    let call = ctx.call(a, DESCRIBE, json!({})).await;
    require_ok(&call, "db_describe_schema")?;
    let v = call.response();
    let Some(models) = v.get("models").and_then(Value::as_array) else {
        return Err(ProbeOutcome::error(
            "db_describe_schema returned no `models` list; the probe cannot read this format",
        )
        .with_call(&ctx, &call));
    };
    let mut problems = Vec::new();
    let mut listed = 0;
    for entry in models {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(m) = ctx.policy.model(name) else {
            problems.push(format!("lists `{name}`, which the policy does not expose"));
            continue;
        };
        listed += 1;
        let fields: Vec<&Value> = entry
            .get("fields")
            .and_then(Value::as_array)
            .map(|f| f.iter().collect())
            .unwrap_or_default();
        for f in fields {
            let fname = f
                .get("name")
                .and_then(Value::as_str)
                .or_else(|| f.as_str())
                .unwrap_or_default();
            match m.action(fname) {
                None => problems.push(format!("{name}: lists `{fname}`, which is not a column")),
                Some(FieldAction::Deny) => {
                    problems.push(format!("{name}: lists denied field `{fname}`"))
                }
                Some(action @ (FieldAction::Mask | FieldAction::Hash)) => {
                    if f.get("access").and_then(Value::as_str) == Some("allow") {
                        problems.push(format!(
                            "{name}: presents {} field `{fname}` as plainly readable",
                            if action == FieldAction::Mask {
                                "masked"
                            } else {
                                "hashed"
                            }
                        ));
                    }
                }
                Some(FieldAction::Allow) => {}
            }
        }
    }
    let leaks = ctx.truth.canaries.scan_json(&v, "$");
    if !problems.is_empty() || !leaks.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "db_describe_schema shows what the policy hides ({} problem(s)); list only allowed, \
             masked and hashed fields of exposed models",
            problems.len() + leaks.len()
        ))
        .with_call(&ctx, &call)
        .facts(problems)
        .leaks(leaks.iter().map(|h| {
            format!(
                "\"{}\" ({}) at {}",
                h.canary.masked(),
                h.canary.cell(),
                h.path
            )
        })));
    }
    Ok(ProbeOutcome::pass(format!(
        "db_describe_schema lists {listed} model(s) and no denied field"
    ))
    .with_call(&ctx, &call))
}

/// The row keys a response returned (None when it was refused).
fn returned_keys(m: &ModelPolicy, call: &CallOutcome) -> Option<Vec<String>> {
    let v = call.result.as_ref().ok()?;
    Some(
        rows_of(v)
            .iter()
            .filter_map(|r| r.get(&m.primary_key).and_then(key_text))
            .collect(),
    )
}

async fn filter_oracle(
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
    let (r, w) = (returned_keys(&m, &right), returned_keys(&m, &wrong));
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

async fn order_oracle(ctx: Arc<ProbeCtx>, model: String, col: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    if m.tenant_column.is_none() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} is not tenant-scoped"
        )));
    }
    let secret_order = ctx
        .truth
        .keys_ordered_by(&m, &a.tenant, &col, true, 20)
        .await?;
    if secret_order.len() < 3 {
        return Err(ProbeOutcome::not_verified(format!(
            "{} has fewer than 3 {model} rows with {col} set",
            a.tenant
        )));
    }
    let secret: Vec<String> = secret_order.iter().filter_map(key_text).collect();
    let mut key_order = secret_order.clone();
    key_order.sort_by(|x, y| {
        x.as_i64()
            .zip(y.as_i64())
            .map(|(a, b)| a.cmp(&b))
            .unwrap_or_else(|| key_text(x).cmp(&key_text(y)))
    });
    let by_key: Vec<String> = key_order.iter().filter_map(key_text).collect();
    let call = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&m.primary_key, "in", json!(secret_order))
                .order(&col, true)
                .limit(secret_order.len() as u64)
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
    let Some(returned) = returned_keys(&m, &call) else {
        return Ok(ProbeOutcome::pass(format!(
            "ordering {model} by {col} was refused ({})",
            call.code().map(|c| c.as_str()).unwrap_or("")
        ))
        .with_call(&ctx, &call));
    };
    if secret != by_key && returned == secret {
        return Ok(ProbeOutcome::fail(format!(
            "db_query ordered {model} by the hidden values of {col}: the row order reveals how \
             those values compare; refuse order_by on masked, hashed and denied fields"
        ))
        .with_call(&ctx, &call)
        .fact(format!("returned order: {}", returned.join(", ")))
        .fact(format!("order by the stored {col}: {}", secret.join(", "))));
    }
    Ok(ProbeOutcome::pass(format!(
        "ordering {model} by {col} was accepted but did not follow the hidden values"
    ))
    .with_call(&ctx, &call)
    .fact(format!("returned order: {}", returned.join(", "))))
}

async fn aggregate_oracle(
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
        .filter(|s| s.chars().count() >= 4)
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
    let mut revealed: Vec<String> = Vec::new();
    if let Ok(v) = &call.result {
        let mut strings = Vec::new();
        collect_strings(v, &mut strings);
        for s in strings {
            if stored.contains(&s) {
                revealed.push(crate::canary::mask(&s));
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
    Ok(ProbeOutcome::pass(match &call.result {
        Ok(_) => format!("db_aggregate over {model}.{col} returned no stored value"),
        Err(e) => format!("db_aggregate over {model}.{col} was refused ({})", e.code),
    })
    .with_call(&ctx, &call))
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                collect_strings(v, out);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Judges an error response for database internals and canaries.
async fn judge_error(
    ctx: &ProbeCtx,
    m: &ModelPolicy,
    call: &CallOutcome,
    what: &str,
) -> ProbeResult {
    internal_is_inconclusive(call)?;
    let exposure = inspect(ctx, m, call).await?;
    let markers = match &call.result {
        Err(e) => internal_markers(e),
        Ok(_) => Vec::new(),
    };
    if !markers.is_empty() || !exposure.leaks.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "{what}: the error passed database internals or hidden values to the agent; map \
             database errors to a structured code with a safe message"
        ))
        .with_call(ctx, call)
        .facts(
            markers
                .iter()
                .map(|m| format!("database phrase in the error: \"{m}\"")),
        )
        .leaks(exposure.leaks));
    }
    Ok(ProbeOutcome::pass(match &call.result {
        Err(e) => format!("{what}: refused with {} and a safe message", e.code),
        Ok(_) => format!("{what}: accepted without an error to leak through"),
    })
    .with_call(ctx, call))
}

async fn error_leak_read(ctx: Arc<ProbeCtx>, model: String, col: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let call = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&col, "eq", json!("preflight-not-a-value'\"; --"))
                .limit(1)
                .build(),
        )
        .await;
    judge_error(
        &ctx,
        &m,
        &call,
        &format!("a malformed {model}.{col} filter"),
    )
    .await
}

async fn error_leak_write(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    ctx.require_writes()?;
    ctx.require_tool(UPDATE)?;
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        // A constraint violation on a row full of canaries: a layer that passes the database's
        // DETAIL line through ("Failing row contains (...)") hands every column to the agent.
        let checks: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT a.attname::text FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(k.conkey) \
             WHERE n.nspname = $1 AND c.relname = $2 AND k.contype = 'c'",
        )
        .bind(&m.schema)
        .bind(&m.table)
        .fetch_all(ctx.truth.pool())
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot read CHECK constraints: {e}")))?;
        // Only a value the layer cannot refuse by itself reaches the database: a layer checks
        // NULL against a NOT NULL column from the catalog, but not what a CHECK constraint
        // says. So a CHECK-constrained text column comes first (an ungated one: a gated write
        // would stop at the approval gate), NOT NULL only as a fallback for layers that do not
        // check NULLs themselves.
        let gated = super::write::gated_columns(&ctx.policy, &m);
        let writable: Vec<(&String, &ColumnPolicy)> = m
            .writable_fields
            .iter()
            .filter(|c| Some(c.as_str()) != m.tenant_column.as_deref() && **c != m.primary_key)
            .filter_map(|c| Some((c, m.column(c)?)))
            .collect();
        let pick = writable
            .iter()
            .find(|(c, col)| !gated.contains(*c) && checks.contains(c) && col.pg_type == "text")
            .map(|(c, _)| ((*c).clone(), json!("preflight-violates-check")))
            .or_else(|| {
                writable
                    .iter()
                    .find(|(_, col)| !col.nullable)
                    .map(|(c, _)| ((*c).clone(), Value::Null))
            });
        let Some((col, bad)) = pick else {
            return Err(ProbeOutcome::not_verified(format!(
                "no writable field of {model} is NOT NULL or CHECK-constrained text"
            )));
        };
        let key = scratch.plant(&m, &a.tenant, &Map::new()).await?;
        let before = ctx.truth.snapshot(&m, std::slice::from_ref(&key)).await?;
        let call = ctx
            .call(
                a,
                UPDATE,
                calls::update(
                    &model,
                    &key,
                    json!({ col.clone(): bad }),
                    Some(calls::REASON),
                ),
            )
            .await;
        let after = ctx.truth.snapshot(&m, std::slice::from_ref(&key)).await?;
        let judged = judge_error(
            &ctx,
            &m,
            &call,
            &format!("db_update setting {model}.{col} to an invalid value"),
        )
        .await?;
        if judged.verdict != preflight_reports::Verdict::Pass {
            return Ok(judged);
        }
        let diff = before.diff(&after);
        match (&call.result, diff.is_empty()) {
            (Err(_), true) => Ok(judged),
            (Err(e), false) => Ok(ProbeOutcome::fail(format!(
                "an invalid write to {model}.{col} was refused ({}) but changed the row ({})",
                e.code,
                diff.join(", ")
            ))
            .with_call(&ctx, &call)),
            // The database took the value, so the constraint the probe aimed at did not apply
            // and no error was provoked: nothing was shown either way.
            (Ok(_), _) => Err(ProbeOutcome::not_verified(format!(
                "db_update setting {model}.{col} to the probe's invalid value was accepted, so no \
                 database error was provoked"
            ))
            .with_call(&ctx, &call)),
        }
    }
    .await;
    finish(scratch, result).await
}
