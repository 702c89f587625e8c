//! `pii`: masked fields masked, denied fields absent, on every read path and through every
//! oracle (PRE-2, RED-1…6). See docs/probes/pii.md.
//!
//! Redaction is judged against the stored row (read as the owner): a masked or hashed field
//! must not carry its stored value, a denied field must not be present, and no response — rows,
//! includes, aggregates, error messages — may contain a canary of a column the policy does not
//! allow. Oracles are judged by comparison: the same query with a true guess and a wrong guess
//! about a hidden value must not be answered differently.

use std::collections::BTreeMap;
use std::sync::Arc;

use preflight_enforcer::policy::{ColumnPolicy, FieldAction, ModelPolicy};
use preflight_enforcer::Fault;
use serde_json::{json, Map, Value};

use super::common::{internal_is_inconclusive, internal_markers, redaction_violations, require_ok};
use super::cross_tenant::finish;
use super::PlanInput;
use crate::calls::{self, Query, AGGREGATE, DESCRIBE, GET, QUERY, UPDATE};
use crate::codes::ProbeCode;
use crate::controls::Control;
use crate::evidence::{inspect, row_refs, Exposure};
use crate::runner::{CallOutcome, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::Scratch;
use crate::truth::key_text;

mod oracles;
use oracles::{aggregate_oracle, filter_oracle, order_oracle};

/// The faults under which a read of `m`'s rows must show what the policy hides: masking off
/// (masked or hashed fields), denials ignored (denied fields), wildcards ignored (fields a
/// pattern hides).
fn redaction_controls(m: &ModelPolicy) -> Vec<Control> {
    use preflight_enforcer::policy::RuleSource;
    let mut v = Vec::new();
    let hidden = || m.columns.iter().filter(|c| c.action != FieldAction::Allow);
    if hidden().any(|c| matches!(c.action, FieldAction::Mask | FieldAction::Hash)) {
        v.push(Control::Fault(Fault::MaskOff));
    }
    if hidden().any(|c| c.action == FieldAction::Deny) {
        v.push(Control::Fault(Fault::DenyIgnored));
    }
    if hidden().any(|c| matches!(c.source, RuleSource::Pattern { .. })) {
        v.push(Control::Fault(Fault::PatternsIgnored));
    }
    v
}

fn sensitive(m: &ModelPolicy) -> Vec<String> {
    m.columns
        .iter()
        .filter(|c| c.action != FieldAction::Allow)
        .map(|c| c.name.clone())
        .collect()
}

/// Every pii probe this policy and tool list call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    // Every layer should describe its schema; one that offers no describe tool is told so.
    let mut out = vec![Probe::new(
        ProbeCode::DescribeSchema,
        "db_describe_schema lists nothing denied",
        describe_schema,
    )
    .at("models")];
    for m in input.policy.models.values() {
        let name = m.name.clone();
        let path = format!("models.{name}.fields");
        let hidden = sensitive(m);
        if !hidden.is_empty() && m.tools.contains(GET) {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::GetRedacted,
                    format!("db_get on {name}"),
                    move |ctx| read_redacted(ctx, n.clone(), GET),
                )
                .killed_by(redaction_controls(m))
                .at(path.clone()),
            );
        }
        if !hidden.is_empty() && m.tools.contains(QUERY) {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::QueryRedacted,
                    format!("db_query on {name}"),
                    move |ctx| read_redacted(ctx, n.clone(), QUERY),
                )
                .killed_by(redaction_controls(m))
                .at(path.clone()),
            );
        }
        if m.tools.contains(QUERY) {
            for rel in m.relations.values() {
                let Some(t) = input.policy.model(&rel.target) else {
                    continue;
                };
                if sensitive(t).is_empty() || !t.tools.contains(QUERY) {
                    continue;
                }
                if super::cross_tenant::include_over_budget(input, rel, t) {
                    continue;
                }
                let (n, r) = (name.clone(), rel.name.clone());
                out.push(
                    Probe::new(
                        ProbeCode::IncludeRedacted,
                        format!("include {} on {name}", rel.name),
                        move |ctx| include_redacted(ctx, n.clone(), r.clone()),
                    )
                    .phase(Phase::Serial)
                    .at(format!("models.{}.fields", t.name)),
                );
            }
            for col in &hidden {
                let has_canaries =
                    input.truth.canaries.iter().any(|c| {
                        c.tenant == input.tenant_a && c.table == m.table && c.column == *col
                    });
                let field_path = format!("models.{name}.fields.{col}");
                // A prefix of a date or a number is not a value of its type: `startswith` only
                // makes sense on text.
                let text_like = m.column(col).is_some_and(|c| {
                    matches!(c.pg_type.as_str(), "text" | "character varying" | "citext")
                        || c.pg_type.starts_with("character")
                });
                if has_canaries {
                    let ops: &[&'static str] = if text_like {
                        &["eq", "startswith"]
                    } else {
                        &["eq"]
                    };
                    for op in ops.iter().copied() {
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
                // Row order is read from the keys a response returns: a model whose key the
                // policy hides cannot be probed this way. The tenant column holds one value for
                // all of the caller's rows: ordering by it reveals nothing.
                if input.key_allowed(m) && m.tenant_column.as_deref() != Some(col.as_str()) {
                    out.push(
                        Probe::new(
                            ProbeCode::OrderOracle,
                            format!("db_query on {name} ordered by {col}"),
                            move |ctx| order_oracle(ctx, n.clone(), c.clone()),
                        )
                        .at(field_path.clone()),
                    );
                }
                if m.tools.contains(AGGREGATE) {
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
                    .needs([QUERY])
                    .at(format!("models.{name}")),
                );
            }
        }
        // A write whose every column needs an approval stops at the approval gate before any
        // value reaches the database.
        if m.tools.contains(UPDATE) && super::write::free_column(input.policy, m).is_some() {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::ErrorLeak,
                    format!("db_update on {name} violating a constraint"),
                    move |ctx| error_leak_write(ctx, n.clone()),
                )
                .needs([UPDATE])
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
    let rel = m
        .relations
        .get(&relation)
        .cloned()
        .ok_or_else(|| ProbeOutcome::error(format!("relation {relation} vanished")))?;
    let target = ctx.model(&rel.target)?.clone();
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = include_redacted_body(&ctx, &mut scratch, &m, &target, &rel).await;
    finish(scratch, result).await
}

async fn include_redacted_body(
    ctx: &ProbeCtx,
    scratch: &mut Scratch<'_>,
    m: &ModelPolicy,
    target: &ModelPolicy,
    rel: &preflight_enforcer::policy::Relation,
) -> ProbeResult {
    use preflight_enforcer::policy::RelationKind;
    let a = &ctx.principals.a;
    let (model, relation) = (&m.name, &rel.name);
    // Rows that have something to include: parents with children, children with a parent.
    // A parent's children can be many (a customer's thousands of orders, over any budget):
    // where the run may write, the parent is a fresh copy of one of A's rows whose only child
    // is a copy of one of A's children.
    let keys = match (rel.kind, ctx.access) {
        (RelationKind::HasMany, crate::runner::Access::ReadWrite) => {
            let parent = scratch.plant(m, &a.tenant, &Map::new()).await?;
            let mut o = Map::new();
            o.insert(rel.foreign_key.clone(), parent.clone());
            scratch.plant(target, &a.tenant, &o).await?;
            vec![parent]
        }
        _ => crate::scratch::linked_keys(&ctx.truth, m, target, rel, &a.tenant, 5).await?,
    };
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
            Query::new(model)
                .filter(&m.primary_key, "in", json!(keys))
                .include(relation)
                .build(),
        )
        .await;
    internal_is_inconclusive(&call)?;
    if let Err(e) = &call.result {
        if super::cross_tenant::is_budget(e.code) {
            return Err(ProbeOutcome::not_verified(format!(
                "include {relation} on {model} was refused for its cost ({}), so no included row \
                 could be inspected",
                e.code
            ))
            .with_call(ctx, &call));
        }
        // A refused include returns no included rows, so nothing can leak through it.
        return Ok(ProbeOutcome::pass(format!(
            "include {relation} on {model} is refused here ({}), so no included row reaches the agent on this path",
            e.code
        ))
        .with_call(ctx, &call));
    }
    let (violations, exposure, checked) = check_rows(ctx, m, &call, Some(1)).await?;
    if checked == 0 {
        return Err(ProbeOutcome::not_verified(format!(
            "the response carried no included {relation} rows to inspect"
        ))
        .with_call(ctx, &call));
    }
    Ok(redaction_outcome(
        ctx,
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
    let mut unchecked: Vec<String> = Vec::new();
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
        let Some(fields) = entry.get("fields").and_then(Value::as_array) else {
            if !sensitive(m).is_empty() {
                unchecked.push(name.to_string());
            }
            continue;
        };
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
    if !unchecked.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "db_describe_schema lists {} without a `fields` array, so whether it shows their \
             hidden fields could not be checked",
            unchecked.join(", ")
        ))
        .with_call(&ctx, &call));
    }
    if listed == 0 {
        return Err(ProbeOutcome::not_verified(
            "db_describe_schema lists no model of the policy, so there was nothing to check",
        )
        .with_call(&ctx, &call));
    }
    Ok(ProbeOutcome::pass(format!(
        "db_describe_schema lists {listed} model(s) and no denied field"
    ))
    .with_call(&ctx, &call))
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
    match &call.result {
        Err(e) => Ok(ProbeOutcome::pass(format!(
            "{what}: refused with {} and a safe message",
            e.code
        ))
        .with_call(ctx, call)),
        // No error, so nothing could leak through one: the claim was not exercised.
        Ok(_) => Err(ProbeOutcome::not_verified(format!(
            "{what}: accepted, so no error was provoked and none could be inspected"
        ))
        .with_call(ctx, call)),
    }
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
                    .find(|(c, col)| !gated.contains(*c) && !col.nullable)
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
