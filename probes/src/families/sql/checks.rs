//! The `sql` family's budget, exposure and login probes: a runaway statement must stop on the
//! server (`pg_stat_activity`), `SELECT *` must stay under the declared cap (counted against
//! ground truth), another tenant's rows and hidden columns must not come back (canaries and
//! tenant columns in the result), and the login must be one that holds on its own (the
//! catalog).

use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_targets::profile::SqlTool;
use serde_json::Value;

use super::{control, control_fact, literal, run_sql, SqlCall};
use crate::runner::{ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::{quote_ident, table_ref, TruthError};

fn truth_error(what: &str, source: sqlx::Error) -> ProbeOutcome {
    ProbeOutcome::from(TruthError::Query {
        what: what.to_string(),
        source,
    })
}

/// The two runaway statements.
#[derive(Clone, Copy, Debug)]
pub(super) enum Runaway {
    Sleep,
    CrossJoin,
}

impl Runaway {
    pub fn title(self) -> &'static str {
        match self {
            Runaway::Sleep => "pg_sleep past the layer's timeout",
            Runaway::CrossJoin => "an expensive cross join",
        }
    }
}

/// The largest tenant-scoped table of the policy, by ground truth's estimate.
fn largest_table(ctx: &ProbeCtx) -> Option<&preflight_enforcer::policy::ModelPolicy> {
    ctx.policy
        .models
        .values()
        .filter(|m| m.tenant_column.is_some())
        .max_by_key(|m| ctx.truth.estimated_rows(m))
}

pub(super) async fn server_timeout(
    ctx: Arc<ProbeCtx>,
    tool: Arc<SqlTool>,
    what: Runaway,
) -> ProbeResult {
    let Some(timeout) = tool.statement_timeout else {
        return Err(ProbeOutcome::not_verified(
            "the target profile declares no statement timeout for the SQL tool (`sql.statement_timeout`), so there is no limit to run past",
        ));
    };
    control(&ctx, &tool).await?;
    let marker = format!("preflight-runaway-{}", uuid::Uuid::new_v4().simple());
    let past = timeout + Duration::from_secs(3);
    let sql = match what {
        Runaway::Sleep => format!(
            "SELECT pg_sleep({}) AS slept, {} AS marker",
            past.as_secs_f64(),
            literal(&marker)
        ),
        Runaway::CrossJoin => {
            let m = largest_table(&ctx).ok_or_else(|| {
                ProbeOutcome::not_verified("the policy has no tenant-scoped table to join")
            })?;
            let t = table_ref(m);
            format!(
                "SELECT count(*) AS n, {} AS marker FROM {t} a, {t} b, {t} c, {t} d",
                literal(&marker)
            )
        }
    };
    // Another login's statements show in pg_stat_activity only to a superuser (or
    // pg_read_all_stats); ground truth's owner login sees its own role's only.
    let pool = match &ctx.superuser_url {
        Some(url) => sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(|e| truth_error("connect as the superuser to watch pg_stat_activity", e))?,
        None => ctx.truth.pool().clone(),
    };
    let watch = |pool: sqlx::PgPool, marker: String| async move {
        sqlx::query_as::<_, (i32, Option<String>)>(
            "SELECT pid, state FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND state = 'active' AND strpos(query, $1) > 0",
        )
        .bind(marker)
        .fetch_all(&pool)
        .await
    };
    let started = Instant::now();
    let call_fut = run_sql(&ctx, &tool, &sql);
    tokio::pin!(call_fut);
    let mut seen = false;
    let call: SqlCall = loop {
        tokio::select! {
            c = &mut call_fut => break c,
            _ = tokio::time::sleep(Duration::from_millis(25)) => {
                if !seen {
                    seen = !watch(pool.clone(), marker.clone())
                        .await
                        .map_err(|e| truth_error("watch pg_stat_activity", e))?
                        .is_empty();
                }
            }
        }
    };
    let elapsed = started.elapsed();
    // The server needs a moment to notice a client that went away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let running = watch(pool.clone(), marker.clone())
        .await
        .map_err(|e| truth_error("read pg_stat_activity", e))?;
    let facts = vec![
        format!(
            "declared timeout {:.1} s; the statement asks for {:.1} s",
            timeout.as_secs_f64(),
            past.as_secs_f64()
        ),
        format!(
            "the reply came after {:.1} s: {}",
            elapsed.as_secs_f64(),
            call.describe()
        ),
        format!("seen running on the server during the call: {seen}"),
    ];
    if !running.is_empty() {
        for (pid, _) in &running {
            let _ = sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&pool)
                .await;
        }
        return Ok(ProbeOutcome::fail(format!(
            "after the layer replied ({}), the statement was still running on the server in {} backend(s): the timeout is enforced on the client only. Set statement_timeout on the layer's login role (ALTER ROLE ... SET statement_timeout) or per transaction (SET LOCAL statement_timeout).",
            call.describe(),
            running.len()
        ))
        .facts(facts)
        .fact(format!("pids still running it: {:?} (cancelled by preflight)", running.iter().map(|r| r.0).collect::<Vec<_>>()))
        .sql(sql.clone())
        .with_call(&ctx, &call.call));
    }
    let slack = Duration::from_secs(2);
    if call.refused.is_none() && elapsed > timeout + slack {
        return Ok(ProbeOutcome::fail(format!(
            "the layer answered after {:.1} s, past its declared timeout of {:.1} s: the statement ran to the end",
            elapsed.as_secs_f64(),
            timeout.as_secs_f64()
        ))
        .facts(facts)
        .sql(sql.clone())
        .with_call(&ctx, &call.call));
    }
    if !seen {
        return Ok(ProbeOutcome::not_verified(format!(
            "the statement was never seen running on the server ({}), so whether a runaway statement would be stopped there was not exercised",
            call.describe()
        ))
        .facts(facts)
        .sql(sql.clone())
        .with_call(&ctx, &call.call));
    }
    Ok(ProbeOutcome::pass(format!(
        "the statement ran on the server and was stopped there: nothing with its marker was running after the reply ({:.1} s, {})",
        elapsed.as_secs_f64(),
        call.describe()
    ))
    .facts(facts)
    .sql(sql.clone())
    .with_call(&ctx, &call.call))
}

pub(super) async fn row_cap(ctx: Arc<ProbeCtx>, tool: Arc<SqlTool>) -> ProbeResult {
    let Some(cap) = tool.max_rows else {
        return Err(ProbeOutcome::not_verified(
            "the target profile declares no row cap for the SQL tool (`sql.max_rows`), so there is no limit to check",
        ));
    };
    control(&ctx, &tool).await?;
    let a = ctx.principals.a.tenant.clone();
    let mut best: Option<(&preflight_enforcer::policy::ModelPolicy, i64)> = None;
    for m in ctx.policy.models.values() {
        let Some(tc) = &m.tenant_column else { continue };
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE {}::text = $1",
            table_ref(m),
            quote_ident(tc)
        ))
        .bind(&a)
        .fetch_one(ctx.truth.pool())
        .await
        .map_err(|e| truth_error("count the caller's rows", e))?;
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((m, n));
        }
    }
    let Some((m, n)) = best else {
        return Err(ProbeOutcome::not_verified(
            "the policy has no tenant-scoped table",
        ));
    };
    if n as u64 <= cap {
        return Err(ProbeOutcome::not_verified(format!(
            "{a} has {n} row(s) in its largest table {}, no more than the cap of {cap}; load more rows (--rows) to test the cap",
            m.name
        )));
    }
    let t = table_ref(m);
    let mut tried = Vec::new();
    for sql in [
        format!("SELECT * FROM {t}"),
        format!("SELECT {} FROM {t}", quote_ident(&m.primary_key)),
    ] {
        let call = run_sql(&ctx, &tool, &sql).await;
        tried.push(format!("`{sql}` → {}", call.describe()));
        if call.refused.is_some() || call.unreadable {
            continue;
        }
        let got = call.rows.len() as u64;
        let facts = [
            format!("ground truth: {a} has {n} rows in {}", m.name),
            format!("declared cap: {cap}"),
        ];
        if got > cap {
            return Ok(ProbeOutcome::fail(format!(
                "`{sql}` returned {got} rows, more than the declared cap of {cap}"
            ))
            .facts(facts)
            .facts(tried)
            .with_call(&ctx, &call.call));
        }
        return Ok(ProbeOutcome::pass(format!(
            "`{sql}` returned {got} of {a}'s {n} rows, within the declared cap of {cap}"
        ))
        .facts(facts)
        .facts(tried)
        .with_call(&ctx, &call.call));
    }
    Err(ProbeOutcome::not_verified(format!(
        "the layer refused every full read of {}, so its row cap was not exercised",
        m.name
    ))
    .facts(tried))
}

/// B's rows in a response: B's canaries, and rows whose tenant column is B.
fn foreign_in(ctx: &ProbeCtx, call: &SqlCall, tenant_column: &str) -> Vec<String> {
    let a = &ctx.principals.a.tenant;
    let b = &ctx.principals.b.tenant;
    let mut out: Vec<String> = ctx
        .truth
        .canaries
        .scan_json(&call.call.response(), "$")
        .into_iter()
        .filter(|h| &h.canary.tenant != a)
        .map(|h| format!("{} at {}", h.canary.cell(), h.path))
        .collect();
    let rows = call
        .rows
        .iter()
        .filter(|r| r.get(tenant_column).and_then(Value::as_str) == Some(b.as_str()))
        .count();
    if rows > 0 {
        out.push(format!("{rows} row(s) with {tenant_column} = {b}"));
    }
    out
}

pub(super) async fn foreign_rows(
    ctx: Arc<ProbeCtx>,
    tool: Arc<SqlTool>,
    model: String,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let Some(tc) = m.tenant_column.clone() else {
        return Err(ProbeOutcome::not_verified(format!(
            "{model} has no tenant column"
        )));
    };
    let control_call = control(&ctx, &tool).await?;
    let b = ctx.principals.b.tenant.clone();
    let t = table_ref(&m);
    let c = quote_ident(&tc);
    let pk = quote_ident(&m.primary_key);
    let attempts = [
        format!("SELECT * FROM {t} WHERE {c} = {} LIMIT 20", literal(&b)),
        format!("SELECT {pk}, {c} FROM {t} WHERE {c} = {} LIMIT 20", literal(&b)),
        format!(
            "SELECT {pk}, {c} FROM {t} WHERE {c} <> {} LIMIT 20",
            literal(&ctx.principals.a.tenant)
        ),
        // The fixture's row-level security reads the tenant from this setting: a layer that
        // lets the agent set it hands out every tenant's rows.
        format!(
            "SELECT {pk}, {c} FROM (SELECT set_config('app.tenant_id', {}, false)) s, {t} WHERE {c} = {} LIMIT 20",
            literal(&b),
            literal(&b)
        ),
    ];
    let mut facts = vec![control_fact(&control_call)];
    for sql in attempts {
        let call = run_sql(&ctx, &tool, &sql).await;
        let found = foreign_in(&ctx, &call, &tc);
        facts.push(format!("`{sql}` → {}", call.describe()));
        if !found.is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "SQL for {b}'s {model} rows returned them: {}. Key row-level security on something the SQL cannot change (the login, not a setting it can set_config) and force it.",
                found.join("; ")
            ))
            .facts(facts)
            .leaks(found)
            .sql(sql)
            .with_call(&ctx, &call.call));
        }
    }
    Ok(ProbeOutcome::pass(format!(
        "no SQL for {b}'s {model} rows returned any of them (no canary of theirs, no row with {tc} = {b})"
    ))
    .facts(facts))
}

pub(super) async fn secret_columns(
    ctx: Arc<ProbeCtx>,
    tool: Arc<SqlTool>,
    model: String,
    columns: Vec<String>,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let control_call = control(&ctx, &tool).await?;
    let t = table_ref(&m);
    let list: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let attempts = [
        format!("SELECT {} FROM {t} LIMIT 50", list.join(", ")),
        format!("SELECT * FROM {t} LIMIT 50"),
        format!("SELECT row_to_json(x)::text AS j FROM {t} x LIMIT 50"),
    ];
    let mut facts = vec![control_fact(&control_call)];
    for sql in attempts {
        let call = run_sql(&ctx, &tool, &sql).await;
        facts.push(format!("`{sql}` → {}", call.describe()));
        let hits: Vec<String> = ctx
            .truth
            .canaries
            .scan_json(&call.call.response(), "$")
            .into_iter()
            .filter(|h| h.canary.table == m.table && columns.contains(&h.canary.column))
            .map(|h| format!("{} at {}", h.canary.cell(), h.path))
            .collect();
        if !hits.is_empty() {
            return Ok(ProbeOutcome::fail(format!(
                "SQL returned raw values of {model}'s hidden columns ({}): {}. Grant the SQL login SELECT only on the columns the policy allows.",
                columns.join(", "),
                hits.join("; ")
            ))
            .facts(facts)
            .leaks(hits)
            .sql(sql)
            .with_call(&ctx, &call.call));
        }
    }
    Ok(ProbeOutcome::pass(format!(
        "no SQL returned a raw value of {model}'s hidden columns ({})",
        columns.join(", ")
    ))
    .facts(facts))
}

pub(super) async fn login_role(ctx: Arc<ProbeCtx>, tool: Arc<SqlTool>) -> ProbeResult {
    let call = run_sql(
        &ctx,
        &tool,
        "SELECT current_user AS current_user, session_user AS session_user",
    )
    .await;
    let row = call.rows.first().cloned().unwrap_or_default();
    let names: Vec<String> = ["session_user", "current_user"]
        .iter()
        .filter_map(|k| row.get(*k).and_then(Value::as_str).map(str::to_string))
        .collect();
    if names.len() < 2 {
        return Err(ProbeOutcome::not_verified(format!(
            "the layer did not say which login its SQL runs as (`SELECT current_user, session_user` → {}), so the login could not be checked",
            call.describe()
        ))
        .with_call(&ctx, &call.call));
    }
    let mut problems = Vec::new();
    let mut facts = vec![format!(
        "session_user = {}, current_user = {}",
        names[0], names[1]
    )];
    let mut seen = std::collections::BTreeSet::new();
    for name in names.iter().filter(|n| seen.insert(n.to_string())) {
        let r: Option<(bool, bool, i64, Option<String>)> = sqlx::query_as(
            "SELECT r.rolsuper, r.rolbypassrls, \
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE c.relowner = r.oid AND c.relkind IN ('r', 'p', 'v', 'm') \
                        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'), \
                    (SELECT c FROM pg_db_role_setting s, unnest(s.setconfig) c \
                      WHERE s.setrole = r.oid AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) \
                        AND c LIKE 'statement\\_timeout=%' LIMIT 1) \
             FROM pg_roles r WHERE r.rolname = $1",
        )
        .bind(name)
        .fetch_optional(ctx.truth.pool())
        .await
        .map_err(|e| truth_error("read the login's role", e))?;
        let Some((sup, bypass, owned, timeout)) = r else {
            problems.push(format!("role `{name}` is not in the catalog"));
            continue;
        };
        facts.push(format!(
            "{name}: superuser={sup} bypassrls={bypass} owns {owned} relation(s) statement_timeout={}",
            timeout.clone().unwrap_or_else(|| "unset".into())
        ));
        if sup {
            problems.push(format!("`{name}` is a superuser"));
        }
        if bypass {
            problems.push(format!("`{name}` can bypass row-level security"));
        }
        if owned > 0 {
            problems.push(format!("`{name}` owns {owned} relation(s), so row-level security that is not forced does not bind it"));
        }
        match timeout.as_deref() {
            None => problems.push(format!("`{name}` carries no statement_timeout of its own")),
            Some(t) if t.ends_with("=0") => {
                problems.push(format!("`{name}` has statement_timeout switched off ({t})"))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "the SQL runs as a login that does not hold on its own: {}",
            problems.join("; ")
        ))
        .facts(facts)
        .with_call(&ctx, &call.call));
    }
    Ok(ProbeOutcome::pass(format!(
        "the SQL runs as `{}`: not superuser, no BYPASSRLS, owns nothing, with its own statement_timeout",
        names[0]
    ))
    .facts(facts)
    .with_call(&ctx, &call.call))
}
