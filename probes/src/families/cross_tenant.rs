//! `cross_tenant`: tenant A, with tenant B in every argument that can carry it (PRE-1, ISO-1,
//! ISO-3). See docs/probes/cross_tenant.md.
//!
//! Each probe puts something of B's into a call made as A — B's primary keys, B's tenant id in a
//! filter, a foreign key pointing at B's row, an include that reaches B's row through a planted
//! cross-tenant reference, B's cursor, B's tenant id in written data — and judges the response by
//! ground truth: the owner of every row key it returned (includes too) and every canary in it,
//! errors included. A control call (the same thing with A's own values) shows the path works, so
//! an empty answer means isolation and not a broken tool.

use std::sync::Arc;

use preflight_enforcer::policy::{FieldAction, ModelPolicy, RelationKind};
use preflight_enforcer::{ErrorCode, Fault};
use serde_json::{json, Map, Value};

use super::common::{
    absent_key, internal_is_inconclusive, normalised_error, numeric_key, require_ok,
};
use super::PlanInput;
use crate::calls::{self, Query, AGGREGATE, CREATE, DELETE, GET, QUERY, UPDATE};
use crate::codes::ProbeCode;
use crate::controls::Control;
use crate::evidence::{inspect, rows_of, Exposure};
use crate::runner::{CallOutcome, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::scratch::{self, Scratch};

mod aggregate;
mod cursor;
mod writes;
use aggregate::aggregate;
use cursor::cursor;
pub(crate) use writes::{finish, judge_refused_write};
use writes::{write_foreign_reference, write_foreign_row, write_forged_tenant};

/// Every cross-tenant probe this policy and tool list call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    for m in input.policy.models.values() {
        let Some(tc) = m.tenant_column.clone() else {
            continue;
        };
        let name = m.name.clone();
        let path = format!("models.{name}");
        if m.tools.contains(GET) {
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::GetForeignRow,
                    format!("db_get on {name} with {b}'s keys", b = input.tenant_b),
                    move |ctx| get_foreign_row(ctx, n.clone()),
                )
                .killed_by(isolation_controls(input, m))
                .at(path.clone()),
            );
        }
        if m.tools.contains(QUERY) {
            for op in ["eq", "in", "ne"] {
                let (n, t) = (name.clone(), tc.clone());
                let what = match op {
                    "eq" => format!("{tc} eq {}", input.tenant_b),
                    "in" => format!("{tc} in [{}, {}]", input.tenant_a, input.tenant_b),
                    _ => format!("{tc} ne {}", input.tenant_a),
                };
                out.push(
                    Probe::new(
                        ProbeCode::FilterForgedTenant,
                        format!("db_query on {name} where {what}"),
                        move |ctx| filter_forged_tenant(ctx, n.clone(), t.clone(), op),
                    )
                    .killed_by(isolation_controls(input, m))
                    .at(format!("{path}.tenant_column")),
                );
            }
            let n = name.clone();
            out.push(
                Probe::new(
                    ProbeCode::FilterForeignKeys,
                    format!(
                        "db_query on {name} where {} in {}'s keys",
                        m.primary_key, input.tenant_b
                    ),
                    move |ctx| filter_foreign_keys(ctx, n.clone()),
                )
                .killed_by(isolation_controls(input, m))
                .at(path.clone()),
            );
            for rel in m.relations.values() {
                let Some(target) = input.policy.model(&rel.target) else {
                    continue;
                };
                if rel.kind == RelationKind::BelongsTo
                    && target.tenant_column.is_some()
                    && m.action(&rel.foreign_key) == Some(FieldAction::Allow)
                {
                    let (n, fk, t) = (name.clone(), rel.foreign_key.clone(), target.name.clone());
                    out.push(
                        Probe::new(
                            ProbeCode::FilterForeignReference,
                            format!(
                                "db_query on {name} where {} points at {}'s {}",
                                rel.foreign_key, input.tenant_b, target.name
                            ),
                            move |ctx| {
                                filter_foreign_reference(ctx, n.clone(), fk.clone(), t.clone())
                            },
                        )
                        .killed_by(isolation_controls(input, m))
                        .at(format!("{path}.relations.{}", rel.name)),
                    );
                }
                if target.tenant_column.is_some()
                    && target.tools.contains(QUERY)
                    && !include_over_budget(input, rel, target)
                {
                    let (n, r) = (name.clone(), rel.name.clone());
                    out.push(
                        Probe::new(
                            ProbeCode::IncludeForeign,
                            format!(
                                "include {} on {name} across a planted reference to {}",
                                rel.name, input.tenant_b
                            ),
                            move |ctx| include_foreign(ctx, n.clone(), r.clone()),
                        )
                        .killed_by(isolation_controls(input, target))
                        .phase(Phase::Serial)
                        .at(format!("{path}.relations.{}", rel.name)),
                    );
                }
            }
            let pageable = input.key_allowed(m) && input.rows_per_tenant(m) >= 3;
            for variant in ["cursor_foreign", "cursor_rebound"] {
                if !pageable {
                    continue;
                }
                let n = name.clone();
                let (code, title) = if variant == "cursor_foreign" {
                    (
                        ProbeCode::CursorForeign,
                        format!(
                            "db_query on {name} with a cursor minted for {}",
                            input.tenant_b
                        ),
                    )
                } else {
                    (
                        ProbeCode::CursorRebound,
                        format!("db_query on {name} with a cursor from another query"),
                    )
                };
                out.push(
                    Probe::new(code, title, move |ctx| cursor(ctx, n.clone(), variant))
                        .at(path.clone()),
                );
            }
        }
        if m.tools.contains(AGGREGATE) {
            for variant in ["count", "group_by", "forged"] {
                let n = name.clone();
                let title = match variant {
                    "count" => format!(
                        "db_aggregate count on {name} over {}'s and {}'s keys",
                        input.tenant_a, input.tenant_b
                    ),
                    "group_by" => format!("db_aggregate on {name} grouped by {tc}"),
                    _ => format!(
                        "db_aggregate count on {name} where {tc} eq {}",
                        input.tenant_b
                    ),
                };
                out.push(
                    Probe::new(ProbeCode::AggregateForgedTenant, title, move |ctx| {
                        aggregate(ctx, n.clone(), variant)
                    })
                    .killed_by(isolation_controls(input, m))
                    .at(path.clone()),
                );
            }
        }
        for tool in [CREATE, UPDATE] {
            if !m.tools.contains(tool) {
                continue;
            }
            let n = name.clone();
            let title = if tool == CREATE {
                format!("db_create on {name} with {tc} = {}", input.tenant_b)
            } else {
                format!(
                    "db_update on {name} moving {}'s row to {tc} = {}",
                    input.tenant_a, input.tenant_b
                )
            };
            out.push(
                Probe::new(ProbeCode::WriteForgedTenant, title, move |ctx| {
                    write_forged_tenant(ctx, n.clone(), tool)
                })
                .needs([tool])
                .phase(Phase::Serial)
                .at(format!("{path}.writable_fields")),
            );
        }
        for tool in [UPDATE, DELETE] {
            if m.tools.contains(tool) {
                if tool == UPDATE && writable_column(m).is_none() {
                    continue;
                }
                let n = name.clone();
                out.push(
                    Probe::new(
                        ProbeCode::WriteForeignRow,
                        format!("{tool} on {name} of {}'s row", input.tenant_b),
                        move |ctx| write_foreign_row(ctx, n.clone(), tool),
                    )
                    .needs([tool])
                    .killed_by(write_row_controls(input, m, tool))
                    .phase(Phase::Serial)
                    .at(path.clone()),
                );
            }
        }
        for rel in m.relations.values() {
            if rel.kind != RelationKind::BelongsTo || !m.writable_fields.contains(&rel.foreign_key)
            {
                continue;
            }
            let Some(target) = input.policy.model(&rel.target) else {
                continue;
            };
            if target.tenant_column.is_none() {
                continue;
            }
            for tool in [CREATE, UPDATE] {
                if !m.tools.contains(tool) {
                    continue;
                }
                let (n, fk, t) = (name.clone(), rel.foreign_key.clone(), target.name.clone());
                out.push(
                    Probe::new(
                        ProbeCode::WriteForeignReference,
                        format!(
                            "{tool} on {name} with {} pointing at {}'s {}",
                            rel.foreign_key, input.tenant_b, target.name
                        ),
                        move |ctx| {
                            write_foreign_reference(ctx, n.clone(), fk.clone(), t.clone(), tool)
                        },
                    )
                    .needs([tool])
                    .phase(Phase::Serial)
                    .at(format!("{path}.relations.{}", rel.name)),
                );
            }
        }
    }
    out
}

/// The controls that must make a cross-tenant read or write of `m`'s rows fail: the layer
/// without its tenant predicate and the database without row-level security; without its
/// tenant predicate alone too, when `m`'s table has no row-level security to fall back on.
fn isolation_controls(input: &PlanInput<'_>, m: &ModelPolicy) -> Vec<Control> {
    let mut v = vec![Control::Fault(Fault::RlsDisabled)];
    if !input.truth.row_security(m) {
        v.push(Control::Fault(Fault::NoTenantPredicate));
    }
    v
}

/// Whether including `rel` (into `target`) is refused for its cost whatever rows it starts
/// from: a `has_many` into a table larger than its scan budget (the planner's estimate of the
/// children per parent is an average over the whole table). Such an include shows nothing about
/// what it would return, so it is not planned (as the budget probes avoid it for their paths).
pub(crate) fn include_over_budget(
    input: &PlanInput<'_>,
    rel: &preflight_enforcer::policy::Relation,
    target: &ModelPolicy,
) -> bool {
    rel.kind == RelationKind::HasMany
        && target
            .budgets
            .max_scan_rows
            .is_some_and(|b| input.truth.estimated_rows(target) as u64 > b)
}

/// The controls for a write of B's row: as for reads, except for an update whose only
/// writable columns need an approval. That write is parked, approved and submitted again
/// ([`judge_refused_write`]); an approval is found by the tenant the layer sets for the
/// database, which a layer with row-level security off does not set, so only the missing tenant
/// predicate can carry that write through to B's row.
fn write_row_controls(input: &PlanInput<'_>, m: &ModelPolicy, tool: &str) -> Vec<Control> {
    let gated = super::write::free_column(input.policy, m).is_none();
    if tool == UPDATE && gated && !input.truth.row_security(m) {
        vec![Control::Fault(Fault::NoTenantPredicate)]
    } else {
        isolation_controls(input, m)
    }
}

/// The first writable column that is neither the key nor the tenant column.
pub(crate) fn writable_column(m: &ModelPolicy) -> Option<String> {
    m.writable_fields
        .iter()
        .find(|c| {
            **c != m.primary_key
                && Some(c.as_str()) != m.tenant_column.as_deref()
                && m.column(c).is_some()
        })
        .cloned()
}

/// Whether a refusal is about the cost of a read (it says nothing about what the read may see).
pub(crate) fn is_budget(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ScanBudgetExceeded
            | ErrorCode::RowBudgetExceeded
            | ErrorCode::JoinDepthExceeded
            | ErrorCode::StatementTimeout
            | ErrorCode::QuotaExceeded
    )
}

/// A failing outcome for a response that exposed B's rows or canaries.
fn exposed(ctx: &ProbeCtx, call: &CallOutcome, exposure: Exposure, what: &str) -> ProbeOutcome {
    let n = exposure.foreign_rows.len();
    let l = exposure.cross_tenant_leaks;
    ProbeOutcome::fail(format!(
        "{what} returned data of another tenant ({n} foreign row(s), {l} foreign canary value(s)). \
         Scope every read, include and aggregate by the session's tenant, never by arguments."
    ))
    .with_call(ctx, call)
    .summary(format!(
        "{} → {n} row(s) owned by another tenant, {l} foreign canary value(s)",
        call.describe()
    ))
    .facts(exposure.foreign_rows.clone())
    .facts(exposure.facts())
    .leaks(exposure.leaks)
}

async fn get_foreign_row(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let a_keys = ctx.truth.keys(&m, &a.tenant, 1).await?;
    let b_keys = ctx.truth.keys(&m, &b.tenant, 2).await?;
    let Some(a_key) = a_keys.first() else {
        return Err(ProbeOutcome::not_verified(format!(
            "tenant {} has no visible row in {model} to use as a control",
            a.tenant
        )));
    };
    if b_keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "tenant {} has no row in {model} to reach for",
            b.tenant
        )));
    }
    let control = ctx.call(a, GET, calls::get(&model, a_key)).await;
    require_ok(
        &control,
        &format!("db_get of {}'s own {model} row", a.tenant),
    )?;
    let mut facts = vec![format!("control: {}", control.describe())];
    let mut last = None;
    for bk in &b_keys {
        let call = ctx.call(a, GET, calls::get(&model, bk)).await;
        internal_is_inconclusive(&call)?;
        let exposure = inspect(&ctx, &m, &call).await?;
        facts.push(call.describe());
        if exposure.has_cross_tenant() {
            return Ok(exposed(
                &ctx,
                &call,
                exposure,
                &format!("db_get of {}'s {model} row", b.tenant),
            )
            .facts(facts));
        }
        if call.is_ok() && !rows_of(&call.response()).is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "db_get with {}'s key returned a row to {}; keys out of scope must be not_found",
                b.tenant, a.tenant
            ))
            .with_call(&ctx, &call)
            .facts(facts)
            .facts(exposure.facts()));
        }
        last = Some((call, bk.clone()));
    }
    let Some((foreign, bk)) = last else {
        return Err(ProbeOutcome::error("no probing call was made"));
    };
    // "Not yours" must look exactly like "does not exist", or the error is an existence oracle.
    let max_key = ctx.truth.max_key(&m).await?;
    let missing = absent_key(max_key.as_deref(), numeric_key(&m));
    let absent = ctx.call(a, GET, calls::get(&model, &missing)).await;
    facts.push(format!("absent key: {}", absent.describe()));
    let (fe, ae) = (
        normalised_error(&foreign, &bk),
        normalised_error(&absent, &missing),
    );
    if fe != ae {
        return Ok(ProbeOutcome::fail(
            "db_get answers another tenant's key differently from a key that does not exist, so an \
             agent can tell which keys exist in other tenants; return the same not_found for both",
        )
        .with_call(&ctx, &foreign)
        .summary("the refusal for a foreign key differs from the refusal for an absent key")
        .facts(facts)
        .fact(format!("foreign key → {}", fe.unwrap_or_else(|| "ok".into())))
        .fact(format!("absent key → {}", ae.unwrap_or_else(|| "ok".into()))));
    }
    Ok(ProbeOutcome::pass(format!(
        "{}'s keys are not_found for {}, exactly like absent keys",
        b.tenant, a.tenant
    ))
    .with_call(&ctx, &foreign)
    .summary(format!(
        "{} of {}'s keys tried; none returned a row or a canary",
        b_keys.len(),
        b.tenant
    ))
    .facts(facts))
}

/// A read of the caller's own rows that the policy lets through: the rows with `keys` when the
/// key may be filtered on, else the first rows the caller can see (a policy that hides the key,
/// like a tenants registry whose key is the tenant id, refuses any key filter).
fn own_rows_query(ctx: &ProbeCtx, m: &ModelPolicy, keys: &[Value]) -> Value {
    let key_allowed = ctx
        .policy
        .model(&m.name)
        .and_then(|p| p.action(&p.primary_key))
        == Some(FieldAction::Allow);
    if key_allowed {
        Query::new(&m.name)
            .filter(&m.primary_key, "in", json!(keys))
            .build()
    } else {
        Query::new(&m.name).limit(10).build()
    }
}

/// Runs `probe` and a control (the same path with the caller's own values). A probe refused
/// while the control went through shows the forged value was refused; both refused shows
/// nothing (`not_verified`).
async fn judge_read(
    ctx: &ProbeCtx,
    m: &ModelPolicy,
    control: CallOutcome,
    probe: CallOutcome,
    what: &str,
) -> ProbeResult {
    internal_is_inconclusive(&control)?;
    internal_is_inconclusive(&probe)?;
    let exposure = inspect(ctx, m, &probe).await?;
    if exposure.has_cross_tenant() {
        return Ok(
            exposed(ctx, &probe, exposure, what).fact(format!("control: {}", control.describe()))
        );
    }
    exposure.require_attributed(&probe, what)?;
    let control_rows = match &control.result {
        Ok(v) => rows_of(v).len(),
        Err(_) => 0,
    };
    if control.is_ok() && control_rows == 0 {
        return Err(ProbeOutcome::error(format!(
            "the control call returned no rows of the caller's own, so an empty answer to the probing call would prove nothing ({})",
            control.describe()
        )));
    }
    let note = match (&control.result, &probe.result) {
        // Both refused: the path does not work at all here, so the refusal of the probing
        // call says nothing about isolation.
        (Err(c), Err(p)) => {
            return Err(ProbeOutcome::not_verified(format!(
                "{what}: the control call was refused too ({}), so the probing call's refusal ({}) \
                 shows nothing about isolation",
                c.code, p.code
            ))
            .with_call(ctx, &probe)
            .fact(format!("control: {}", control.describe())))
        }
        (Ok(_), Err(p)) if is_budget(p.code) => {
            return Err(ProbeOutcome::not_verified(format!(
                "{what}: refused for its cost ({}), so whether another tenant's rows would come \
                 back was not shown",
                p.code
            ))
            .with_call(ctx, &probe)
            .fact(format!("control: {}", control.describe())))
        }
        (Ok(_), Err(p)) => format!("refused with {}", p.code),
        (Ok(_), Ok(v)) => format!("{} row(s), all the caller's own", rows_of(v).len()),
        (Err(c), Ok(v)) => format!(
            "control refused with {} yet the probe returned {} row(s), none another tenant's",
            c.code,
            rows_of(v).len()
        ),
    };
    Ok(
        ProbeOutcome::pass(format!("{what}: no other tenant's data ({note})"))
            .with_call(ctx, &probe)
            .summary(format!(
                "{} (control: {})",
                probe.describe(),
                control.describe()
            ))
            .facts(exposure.facts()),
    )
}

async fn filter_forged_tenant(
    ctx: Arc<ProbeCtx>,
    model: String,
    tc: String,
    op: &'static str,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let mut keys = ctx.truth.keys(&m, &a.tenant, 3).await?;
    let b_keys = ctx.truth.keys(&m, &b.tenant, 3).await?;
    if keys.is_empty() || b_keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} needs rows of both {} and {}",
            a.tenant, b.tenant
        )));
    }
    keys.extend(b_keys);
    // The key list keeps the query inside any scan budget, so a refusal is about the tenant.
    // The control is the same read without the forged filter: it shows the path works, so a
    // refusal of the probing call is about the tenant filter (which a policy that hides the
    // tenant column refuses outright).
    let pk = m.primary_key.clone();
    let control = own_rows_query(&ctx, &m, &keys);
    let forged = match op {
        "eq" => Query::new(&model).filter(&tc, "eq", json!(b.tenant)),
        "in" => Query::new(&model).filter(&tc, "in", json!([a.tenant, b.tenant])),
        _ => Query::new(&model).filter(&tc, "ne", json!(a.tenant)),
    }
    .filter(&pk, "in", json!(keys))
    .build();
    let control = ctx.call(a, QUERY, control).await;
    let probe = ctx.call(a, QUERY, forged).await;
    judge_read(
        &ctx,
        &m,
        control,
        probe,
        &format!("a forged {tc} filter on {model}"),
    )
    .await
}

async fn filter_foreign_keys(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let a_keys = ctx.truth.keys(&m, &a.tenant, 3).await?;
    let b_keys = ctx.truth.keys(&m, &b.tenant, 3).await?;
    if a_keys.is_empty() || b_keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} needs rows of both {} and {}",
            a.tenant, b.tenant
        )));
    }
    let control = ctx.call(a, QUERY, own_rows_query(&ctx, &m, &a_keys)).await;
    let probe = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&m.primary_key, "in", json!(b_keys))
                .build(),
        )
        .await;
    judge_read(
        &ctx,
        &m,
        control,
        probe,
        &format!("a filter on {}'s {model} keys", b.tenant),
    )
    .await
}

async fn filter_foreign_reference(
    ctx: Arc<ProbeCtx>,
    model: String,
    fk: String,
    target: String,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let (Some(a_ref), Some(b_ref)) = (
        scratch::referenced_key(&ctx.truth, &m, &fk, &a.tenant).await?,
        scratch::referenced_key(&ctx.truth, &m, &fk, &b.tenant).await?,
    ) else {
        return Err(ProbeOutcome::not_verified(format!(
            "no {model} row of each tenant references a {target}"
        )));
    };
    // With the keys of rows that reference each target (ground truth), so the read stays
    // inside the scan budget however many rows share the reference: the foreign-key filter is
    // the only thing that names B.
    let a_rows = ctx.truth.keys_where(&m, &a.tenant, &fk, &a_ref, 5).await?;
    let b_rows = ctx.truth.keys_where(&m, &b.tenant, &fk, &b_ref, 5).await?;
    let q = |r: Value, keys: &[Value]| {
        let mut q = Query::new(&model).filter(&fk, "eq", r);
        if ctx
            .policy
            .model(&model)
            .and_then(|p| p.action(&p.primary_key))
            == Some(FieldAction::Allow)
        {
            q = q.filter(&m.primary_key, "in", json!(keys));
        }
        q.limit(5).build()
    };
    let control = ctx.call(a, QUERY, q(a_ref, &a_rows)).await;
    let probe = ctx.call(a, QUERY, q(b_ref, &b_rows)).await;
    judge_read(
        &ctx,
        &m,
        control,
        probe,
        &format!("a filter on {model}.{fk} naming {}'s {target}", b.tenant),
    )
    .await
}

async fn include_foreign(ctx: Arc<ProbeCtx>, model: String, relation: String) -> ProbeResult {
    ctx.require_writes()?;
    let m = ctx.model(&model)?.clone();
    let rel = m
        .relations
        .get(&relation)
        .cloned()
        .ok_or_else(|| ProbeOutcome::error(format!("relation {relation} vanished")))?;
    let target = ctx.model(&rel.target)?.clone();
    let (a, b) = (&ctx.principals.a, &ctx.principals.b);
    let mut scratch = Scratch::new(&ctx.truth, &ctx.scratch);
    let result = async {
        // Plant a reference that crosses tenants: the database accepts it (plain foreign keys),
        // and an include that follows it without a tenant predicate hands B's row to A.
        let (subject_key, planted_desc) = match rel.kind {
            RelationKind::BelongsTo => {
                let b_target = ctx.truth.keys(&target, &b.tenant, 1).await?;
                let Some(b_target) = b_target.first() else {
                    return Err(ProbeOutcome::not_verified(format!(
                        "{} has no {} row",
                        b.tenant, target.name
                    )));
                };
                let mut o = Map::new();
                o.insert(rel.foreign_key.clone(), b_target.clone());
                let key = scratch.plant(&m, &a.tenant, &o).await?;
                (
                    key.clone(),
                    format!(
                        "planted {} {model}#{key} with {} = {}'s {}#{b_target}",
                        a.tenant, rel.foreign_key, b.tenant, target.name
                    ),
                )
            }
            RelationKind::HasMany => {
                // A fresh copy of one of A's rows as the subject: its only child is the planted
                // one, so the include stays inside any budget.
                let a_subject = scratch.plant(&m, &a.tenant, &Map::new()).await?;
                let mut o = Map::new();
                o.insert(rel.foreign_key.clone(), a_subject.clone());
                let key = scratch.plant(&target, &b.tenant, &o).await?;
                (
                    a_subject.clone(),
                    format!(
                        "planted {} {}#{key} with {} = {}'s {model}#{a_subject}",
                        b.tenant, target.name, rel.foreign_key, a.tenant
                    ),
                )
            }
        };
        let control = ctx
            .call(
                a,
                QUERY,
                Query::new(&model)
                    .filter(&m.primary_key, "eq", subject_key.clone())
                    .build(),
            )
            .await;
        let probe = ctx
            .call(
                a,
                QUERY,
                Query::new(&model)
                    .filter(&m.primary_key, "eq", subject_key.clone())
                    .include(&relation)
                    .build(),
            )
            .await;
        judge_read(
            &ctx,
            &m,
            control,
            probe,
            &format!("include {relation} on {model}"),
        )
        .await
        .map(|o| o.fact(planted_desc.clone()))
        .map_err(|o| o.fact(planted_desc))
    }
    .await;
    let cleanup = scratch.cleanup().await;
    match (result, cleanup) {
        (r, Ok(())) => r,
        (Ok(o), Err(e)) | (Err(o), Err(e)) => Ok(o.fact(format!("cleanup failed: {e}"))),
    }
}
