//! `budget`: reads that would cost too much are refused before they run, with an error an agent
//! can recover from (PRE-3, BUD-1…5, BUD-7). See docs/probes/budget.md.
//!
//! Evidence: the rows a response carries (an unbounded query that returns rows has run), the
//! server's own statistics for the table (`pg_stat_user_tables`, read as the owner), the depth of
//! included rows, and — for the timeout and quota probes, which need a layer instance of their
//! own — what a fresh instance with a tighter policy does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::policy::{FieldAction, ModelPolicy};
use preflight_enforcer::ErrorCode;
use serde_json::{json, Value};

use super::common::{internal_is_inconclusive, structured};
use super::hygiene::{role_settings, role_timeout_ms};
use super::PlanInput;
use crate::calls::{self, Query, AGGREGATE, GET, QUERY};
use crate::codes::ProbeCode;
use crate::evidence::{include_depth, rows_of};
use crate::runner::{Access, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::table_ref;

/// Every budget probe this policy and tool list call for.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    // The largest table over its scan budget: the one whose statistics corroborate "refused
    // before it ran" (reading them costs a statistics interval, so only once).
    let largest: Option<(&ModelPolicy, i64)> = input
        .policy
        .models
        .values()
        .filter(|m| m.tools.contains(QUERY))
        .filter(|m| {
            m.budgets
                .max_scan_rows
                .is_some_and(|b| input.truth.estimated_rows(m) as u64 > b)
        })
        .map(|m| (m, input.truth.estimated_rows(m)))
        .max_by_key(|(_, r)| *r);
    for m in input.policy.models.values() {
        let name = m.name.clone();
        let budgets = format!("models.{name}.budgets");
        let rows = input.truth.estimated_rows(m);
        if m.tools.contains(QUERY) {
            if let Some(max_scan) = m.budgets.max_scan_rows {
                if rows as u64 > max_scan {
                    for tool in [QUERY, AGGREGATE] {
                        if !m.tools.contains(tool) {
                            continue;
                        }
                        let n = name.clone();
                        let stats = tool == QUERY && largest.is_some_and(|(l, _)| l.name == m.name);
                        out.push(
                            Probe::new(
                                ProbeCode::UnboundedScan,
                                format!("unfiltered {tool} on {name} (~{rows} rows)"),
                                move |ctx| unbounded_scan(ctx, n.clone(), tool, stats),
                            )
                            .needs([tool])
                            .phase(Phase::Serial)
                            .at(budgets.clone()),
                        );
                    }
                }
            } else {
                let n = name.clone();
                out.push(
                    Probe::new(
                        ProbeCode::UnboundedScan,
                        format!("unfiltered db_query on {name} (~{rows} rows)"),
                        move |ctx| unbounded_scan(ctx, n.clone(), QUERY, false),
                    )
                    .needs([QUERY])
                    .phase(Phase::Serial)
                    .at(budgets.clone()),
                );
            }
            let cap = m.budgets.max_rows_for(QUERY).unwrap_or(u64::MAX);
            if m.tenant_column.is_some()
                && input.key_allowed(m)
                && input.rows_per_tenant(m) as u64 > cap
            {
                for explicit in [true, false] {
                    let n = name.clone();
                    let title = if explicit {
                        format!("db_query on {name} asking for one row more than max_rows")
                    } else {
                        format!("db_query on {name} without a limit")
                    };
                    out.push(
                        Probe::new(ProbeCode::RowLimit, title, move |ctx| {
                            row_limit(ctx, n.clone(), explicit)
                        })
                        .at(budgets.clone()),
                    );
                }
            }
            if let Some(path) = deep_path(input, m, m.budgets.max_join_depth as usize + 1) {
                let n = name.clone();
                let p = path.clone();
                out.push(
                    Probe::new(
                        ProbeCode::JoinDepth,
                        format!("include {path} on {name} (deeper than max_join_depth)"),
                        move |ctx| join_depth(ctx, n.clone(), p.clone()),
                    )
                    .at(budgets.clone()),
                );
            }
        }
    }
    // The timeout probe reads the largest table the aggregate tool reaches; any table would
    // do, since the read's slowness comes from a lock, not from the data.
    let timed = input
        .policy
        .models
        .values()
        .filter(|m| m.tools.contains(AGGREGATE))
        .max_by_key(|m| input.truth.estimated_rows(m));
    if let Some(m) = timed {
        let n = m.name.clone();
        out.push(
            Probe::new(
                ProbeCode::StatementTimeout,
                format!(
                    "a db_aggregate on {} waiting on a lock, under a tight statement_timeout_ms",
                    m.name
                ),
                move |ctx| statement_timeout(ctx, n.clone()),
            )
            .phase(Phase::Serial)
            .at(format!("models.{}.budgets", m.name)),
        );
    }
    if let Some(m) = input
        .policy
        .models
        .values()
        .find(|m| m.tenant_column.is_some() && m.tools.contains(GET))
    {
        let n = m.name.clone();
        out.push(
            Probe::new(
                ProbeCode::Quota,
                "per-tenant calls_per_hour on a fresh instance",
                move |ctx| quota(ctx, n.clone()),
            )
            .phase(Phase::Serial)
            .at("quotas"),
        );
    }
    out
}

/// A dotted include path of exactly `depth` relations starting at `m`, if the relation graph
/// has one (relations may revisit models: `customer.payment_methods.customer`). Targets too
/// large for their scan budget are avoided, so the path is refused for its depth and not for
/// its cost.
fn deep_path(input: &PlanInput<'_>, m: &ModelPolicy, depth: usize) -> Option<String> {
    fn walk(input: &PlanInput<'_>, m: &ModelPolicy, depth: usize, acc: &mut Vec<String>) -> bool {
        let policy = input.policy;
        if acc.len() == depth {
            return true;
        }
        for rel in m.relations.values() {
            let Some(t) = policy.model(&rel.target) else {
                continue;
            };
            if !t.tools.contains(QUERY) {
                continue;
            }
            let too_big = t
                .budgets
                .max_scan_rows
                .is_some_and(|b| input.truth.estimated_rows(t) as u64 > b);
            if too_big {
                continue;
            }
            acc.push(rel.name.clone());
            if walk(input, t, depth, acc) {
                return true;
            }
            acc.pop();
        }
        false
    }
    let mut acc = Vec::new();
    walk(input, m, depth, &mut acc).then(|| acc.join("."))
}

async fn unbounded_scan(
    ctx: Arc<ProbeCtx>,
    model: String,
    tool: &'static str,
    stats: bool,
) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let Some(max_scan) = m.budgets.max_scan_rows else {
        return Ok(ProbeOutcome::fail(format!(
            "{model} has no max_scan_rows: nothing stops an unbounded read of it"
        )));
    };
    // Counters from the server itself. A backend publishes its statistics when it goes idle, at
    // most once a second, so the reading after the call waits one interval: an unchanged counter
    // is corroboration, a full scan's worth of rows read is proof the statement ran. Ground
    // truth's own earlier reads of the table are published first, so they cannot land in the
    // window and pass for the layer's scan.
    let published = ctx.truth.publish_own_stats().await;
    let before = ctx.truth.table_stats(&m).await?;
    let args = if tool == QUERY {
        Query::new(&model).build()
    } else {
        calls::aggregate(&model, &[("count", None)], &[], vec![])
    };
    let call = ctx.call(a, tool, args).await;
    if stats {
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let after = ctx.truth.table_stats(&m).await?;
    internal_is_inconclusive(&call)?;
    let read = after.seq_tup_read - before.seq_tup_read;
    let mut facts = vec![
        format!("before: {}", before.fact(&m.table)),
        format!("after:  {}", after.fact(&m.table)),
        format!(
            "max_scan_rows = {max_scan}, estimated rows = {}",
            before.reltuples
        ),
    ];
    if let Err(e) = published {
        facts.push(format!(
            "ground truth could not publish its own statistics first ({e}); its own earlier reads may show in the counters"
        ));
    }
    let indexed = ctx.truth.indexed_columns(&m).await?;
    match &call.result {
        Ok(v) => Ok(ProbeOutcome::fail(format!(
            "an unfiltered {tool} on {model} (~{} rows, budget {max_scan}) ran and returned {} row(s); \
             estimate the scan before running and refuse it with scan_budget_exceeded",
            before.reltuples,
            rows_of(v).len()
        ))
        .with_call(&ctx, &call)
        .facts(facts)),
        Err(e) if e.code == ErrorCode::ScanBudgetExceeded => {
            if read > 0 && read as f64 >= before.reltuples as f64 * 0.5 {
                return Ok(ProbeOutcome::fail(format!(
                    "the unfiltered {tool} on {model} was refused, but the table was read in full \
                     ({read} rows) while it ran: the budget was checked after execution"
                ))
                .with_call(&ctx, &call)
                .facts(facts));
            }
            if let Err(why) = structured(e) {
                return Ok(ProbeOutcome::fail(why).with_call(&ctx, &call).facts(facts));
            }
            let filterable: Vec<&String> = indexed
                .iter()
                .filter(|c| m.action(c) == Some(FieldAction::Allow))
                .collect();
            let text = format!("{} {} {}", e.message, e.suggestion, e.details);
            let named: Vec<&&String> = filterable.iter().filter(|c| names_column(&text, c)).collect();
            if named.is_empty() {
                return Ok(ProbeOutcome::fail(format!(
                    "the scan_budget_exceeded error does not name a column the agent can filter on \
                     (indexed and allowed: {}); the suggestion must say how to recover",
                    filterable.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ))
                .with_call(&ctx, &call)
                .facts(facts));
            }
            Ok(ProbeOutcome::pass(format!(
                "the unfiltered {tool} on {model} was refused before it ran, and the suggestion names {}",
                named.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            ))
            .with_call(&ctx, &call)
            .summary(format!("seq_tup_read grew by {read} during the call"))
            .facts(facts))
        }
        Err(e) => Ok(ProbeOutcome::fail(format!(
            "the unfiltered {tool} on {model} ended in {} instead of scan_budget_exceeded: {}",
            e.code, e.message
        ))
        .with_call(&ctx, &call)
        .facts(facts)),
    }
}

/// Whether `text` names `column` as a word of its own (`customer_id`, `"id"`, `id,`), not as
/// part of another word (`valid`, `idle`, `paid`).
fn names_column(text: &str, column: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(column).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + column.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

async fn row_limit(ctx: Arc<ProbeCtx>, model: String, explicit: bool) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let Some(cap) = m.budgets.max_rows_for(QUERY) else {
        return Ok(ProbeOutcome::fail(format!(
            "{model} has no max_rows for db_query"
        )));
    };
    let want = cap as i64 + 10;
    let keys = ctx.truth.keys(&m, &a.tenant, want).await?;
    if (keys.len() as u64) <= cap {
        return Err(ProbeOutcome::not_verified(format!(
            "{} has only {} visible {model} row(s); max_rows is {cap}",
            a.tenant,
            keys.len()
        )));
    }
    // A key range keeps the read inside any scan budget while matching more rows than the cap.
    let (first, last) = (keys[0].clone(), keys[keys.len() - 1].clone());
    let mut q = Query::new(&model)
        .filter(&m.primary_key, "gte", first)
        .filter(&m.primary_key, "lte", last);
    if explicit {
        q = q.limit(cap + 1);
    }
    let call = ctx.call(a, QUERY, q.build()).await;
    internal_is_inconclusive(&call)?;
    match &call.result {
        Ok(v) => {
            let n = rows_of(v).len() as u64;
            if n > cap {
                Ok(ProbeOutcome::fail(format!(
                    "db_query on {model} returned {n} rows; max_rows is {cap}"
                ))
                .with_call(&ctx, &call))
            } else {
                Ok(ProbeOutcome::pass(format!(
                    "db_query on {model} returned {n} of the {} matching rows (max_rows {cap})",
                    keys.len()
                ))
                .with_call(&ctx, &call))
            }
        }
        Err(e)
            if matches!(
                e.code,
                ErrorCode::RowBudgetExceeded | ErrorCode::ValidationError
            ) =>
        {
            if let Err(why) = structured(e) {
                return Ok(ProbeOutcome::fail(why).with_call(&ctx, &call));
            }
            Ok(ProbeOutcome::pass(format!(
                "asking {model} for {} rows was refused ({}); max_rows is {cap}",
                cap + 1,
                e.code
            ))
            .with_call(&ctx, &call))
        }
        Err(e) => Err(ProbeOutcome::not_verified(format!(
            "the read was refused for another reason ({}: {})",
            e.code, e.message
        ))
        .with_call(&ctx, &call)),
    }
}

/// Whether the `model` rows with `keys` reach a row at the end of the dotted include `path`,
/// by ground truth.
async fn reaches_end(
    ctx: &ProbeCtx,
    model: &ModelPolicy,
    path: &str,
    keys: &[Value],
) -> Result<bool, ProbeOutcome> {
    let mut m = model.clone();
    let mut level = keys.to_vec();
    for step in path.split('.') {
        let rel = m.relations.get(step).cloned().ok_or_else(|| {
            ProbeOutcome::error(format!("relation {step} of {} vanished", m.name))
        })?;
        let t = ctx.model(&rel.target)?.clone();
        level = crate::scratch::related_keys(&ctx.truth, &m, &t, &rel, &level).await?;
        if level.is_empty() {
            return Ok(false);
        }
        m = t;
    }
    Ok(true)
}

async fn join_depth(ctx: Arc<ProbeCtx>, model: String, path: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let max = m.budgets.max_join_depth as usize;
    let candidates = ctx
        .truth
        .keys(
            &m,
            if m.tenant_column.is_some() {
                &a.tenant
            } else {
                ""
            },
            30,
        )
        .await?;
    // Rows that really have something at the end of the path: an include over rows without
    // deep children returns nothing deep from any layer, capped or not.
    let mut keys = Vec::new();
    for k in candidates {
        if reaches_end(&ctx, &m, &path, std::slice::from_ref(&k)).await? {
            keys.push(k);
            if keys.len() == 3 {
                break;
            }
        }
    }
    if keys.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "no {} row of {model} among the first 30 reaches a row through {path}, so an include \
             of it returns nothing deep whatever the layer enforces",
            a.tenant
        )));
    }
    let call = ctx
        .call(
            a,
            QUERY,
            Query::new(&model)
                .filter(&m.primary_key, "in", json!(keys))
                .include(&path)
                .build(),
        )
        .await;
    internal_is_inconclusive(&call)?;
    let fact = format!(
        "ground truth: {} chosen row(s) of {model} reach rows {} relations deep through {path}",
        keys.len(),
        path.split('.').count()
    );
    match &call.result {
        Ok(v) => {
            let depth = include_depth(&ctx.policy, &m, v);
            if depth > max {
                Ok(ProbeOutcome::fail(format!(
                    "include {path} on {model} returned rows {depth} relations deep; max_join_depth is {max}"
                ))
                .with_call(&ctx, &call)
                .fact(fact))
            } else {
                Ok(ProbeOutcome::pass(format!(
                    "include {path} was accepted but returned nothing deeper than {max} relation(s), although the rows have deeper relations"
                ))
                .with_call(&ctx, &call)
                .fact(fact))
            }
        }
        Err(e) if e.code == ErrorCode::JoinDepthExceeded => {
            if let Err(why) = structured(e) {
                return Ok(ProbeOutcome::fail(why).with_call(&ctx, &call));
            }
            Ok(ProbeOutcome::pass(format!(
                "include {path} ({} relations, max {max}) was refused with join_depth_exceeded",
                path.split('.').count(),
            ))
            .with_call(&ctx, &call)
            .fact(fact))
        }
        Err(e) => Err(ProbeOutcome::not_verified(format!(
            "include {path} was refused for another reason ({}: {}), so the depth limit was not what stopped it",
            e.code, e.message
        ))
        .with_call(&ctx, &call)
        .fact(fact)),
    }
}

/// How long the timeout probe lets a read wait on its lock at most, whatever the agent role's
/// own backstop: the probe's cost on a layer that does not apply its timeout.
const TIMEOUT_CEILING_MS: u64 = 5_000;
/// How often ground truth looks for the read's lock wait.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// How long ground truth waits for the read to reach the table at all before it stops holding
/// the lock (a layer still connecting, a busy pool).
const REACH_DEADLINE: Duration = Duration::from_secs(10);

/// The statement timeout, decided by the database's own clock, not by how fast this machine is.
///
/// Ground truth takes an `ACCESS EXCLUSIVE` lock on the model's table; a fresh instance of the
/// layer with a tight `statement_timeout_ms` then reads that table, so its statement waits on
/// the lock, and a lock wait counts toward `statement_timeout`. A layer that applies the timeout
/// answers `statement_timeout` while the lock is still held; one that does not stays blocked
/// until ground truth lets go, many times the limit later, and then answers with rows. The
/// agent role's own `statement_timeout` (a backstop the fixtures set) would also cut the wait
/// off, so the window in which a `statement_timeout` counts as the policy's stays well under it.
async fn statement_timeout(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    if ctx.access == Access::ReadOnly {
        return Err(ProbeOutcome::not_verified(format!(
            "a read-only staging database (no --allow-writes): the probe makes a read wait on a lock \
             that ground truth takes on {} (LOCK TABLE … IN ACCESS EXCLUSIVE MODE), which would \
             stall everyone else using that table; rerun with --allow-writes to test the timeout",
            m.table
        )));
    }
    let Some(factory) = ctx.factory.clone() else {
        return Err(ProbeOutcome::not_verified(
            "this target cannot start an instance with a tighter policy",
        ));
    };
    if !factory.applies_policy() {
        return Err(ProbeOutcome::not_verified(
            "this target runs its own configuration, so preflight cannot start it with a tighter statement_timeout",
        ));
    }
    let backstop = match &ctx.agent_role {
        Some(role) => role_timeout_ms(&role_settings(&ctx, role).await?),
        None => None,
    };
    let ceiling = backstop.map_or(TIMEOUT_CEILING_MS, |b| b.min(TIMEOUT_CEILING_MS));
    let tight_ms = (ceiling / 25).clamp(1, 100);
    // A statement_timeout later than this is not the policy's; the lock goes after `hold`.
    let judge = Duration::from_millis(ceiling / 2);
    let hold = Duration::from_millis(ceiling * 4 / 5);
    let mut facts = vec![
        format!("statement_timeout_ms = {tight_ms} on a fresh instance"),
        match backstop {
            Some(b) => format!("the agent role's own statement_timeout: {b} ms"),
            None => "the agent role's own statement_timeout: none known".to_string(),
        },
    ];

    let mut tight = (*ctx.policy).clone();
    if let Some(mm) = tight.models.get_mut(&model) {
        // Only the timeout may stop this read, not its estimated cost.
        mm.budgets.max_scan_rows = Some(u64::MAX / 4);
        mm.budgets.statement_timeout_ms = Some(tight_ms);
    }
    let gw = factory
        .instance(Arc::new(tight), ctx.faults.clone())
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot start an instance: {e}")))?;
    let args = calls::aggregate(&m.name, &[("count", None)], &[], vec![]);

    let pool = ctx.truth.pool();
    let oid: i64 = sqlx::query_scalar(
        "SELECT c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(&m.schema)
    .bind(&m.table)
    .fetch_optional(pool)
    .await
    .map_err(lock_error("find the table in the catalog"))?
    .ok_or_else(|| {
        ProbeOutcome::error(format!("{}.{} is not in the catalog", m.schema, m.table))
    })?;
    let lock_sql = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", table_ref(&m));
    let mut lock = pool
        .begin()
        .await
        .map_err(lock_error("open the lock transaction"))?;
    sqlx::query("SELECT set_config('lock_timeout', '5s', true)")
        .execute(&mut *lock)
        .await
        .map_err(lock_error("bound the lock wait"))?;
    sqlx::query(&lock_sql)
        .execute(&mut *lock)
        .await
        .map_err(lock_error("lock the table"))?;

    let started = Instant::now();
    let call = ctx.call_on(gw.as_ref(), a, AGGREGATE, args);
    tokio::pin!(call);
    let mut waiting_since: Option<Duration> = None;
    let early = loop {
        tokio::select! {
            done = &mut call => break Some(done),
            _ = tokio::time::sleep(LOCK_POLL) => {}
        }
        if waiting_since.is_none() && lock_waiters(pool, oid).await? > 0 {
            waiting_since = Some(started.elapsed());
        }
        let release = match waiting_since {
            Some(w) => started.elapsed() >= w + hold,
            None => started.elapsed() >= REACH_DEADLINE,
        };
        if release {
            break None;
        }
    };
    let released = started.elapsed();
    if let Err(e) = lock.rollback().await {
        facts.push(format!("releasing the lock failed: {e}"));
    }
    facts.push(match waiting_since {
        Some(w) => format!(
            "the read was seen waiting on the lock (pg_locks) {} ms after the call",
            w.as_millis()
        ),
        None => "the read was never seen waiting on the lock (pg_locks)".to_string(),
    });
    let released_first = early.is_none();
    let call = match early {
        Some(call) => call,
        None => {
            facts.push(format!(
                "ground truth released the lock {} ms after the call",
                released.as_millis()
            ));
            call.await
        }
    };
    facts.push(format!(
        "the call ended after {} ms: {}",
        call.elapsed.as_millis(),
        call.describe()
    ));
    internal_is_inconclusive(&call)?;
    let verdict = match (&call.result, released_first) {
        (Err(e), false) if e.code == ErrorCode::StatementTimeout && call.elapsed <= judge => {
            match structured(e) {
                Err(why) => ProbeOutcome::fail(why),
                Ok(()) => ProbeOutcome::pass(format!(
                    "a read waiting on a lock was cut off by the database with statement_timeout \
                     after {} ms, while the lock was still held (policy timeout {tight_ms} ms)",
                    call.elapsed.as_millis()
                )),
            }
        }
        (Err(e), false) if e.code == ErrorCode::StatementTimeout => ProbeOutcome::fail(format!(
            "the read was cut off only after {} ms under a {tight_ms} ms policy timeout: another \
             limit (such as the role's own statement_timeout) stopped it, not the policy's",
            call.elapsed.as_millis()
        )),
        (Ok(_), false) => {
            return Err(ProbeOutcome::not_verified(format!(
                "the read answered while {} was locked: it never read the table, so the \
                 timeout was not exercised",
                m.table
            ))
            .with_call(&ctx, &call)
            .facts(facts))
        }
        (Err(e), false) if waiting_since.is_none() => {
            return Err(ProbeOutcome::error(format!(
                "the read was refused with {} before it reached the table, so the timeout could \
                 not be tested",
                e.code
            ))
            .with_call(&ctx, &call)
            .facts(facts))
        }
        (Err(e), false) => ProbeOutcome::fail(format!(
            "the read waited on the lock and ended in {} instead of statement_timeout",
            e.code
        )),
        (Ok(_), true) => ProbeOutcome::fail(format!(
            "the read waited {} ms, {}× the policy's {tight_ms} ms timeout, and ran to completion \
             once ground truth released the lock: the policy's statement timeout is not applied",
            released.as_millis(),
            released.as_millis() / u128::from(tight_ms)
        )),
        (Err(e), true) => ProbeOutcome::fail(format!(
            "the read was still running {} ms into a {tight_ms} ms policy timeout, when ground \
             truth released the lock; it then ended in {}",
            released.as_millis(),
            e.code
        )),
    };
    Ok(verdict.with_call(&ctx, &call).sql(lock_sql).facts(facts))
}

/// Sessions waiting for a lock on the relation `oid` in this database.
async fn lock_waiters(pool: &sqlx::PgPool, oid: i64) -> Result<i64, ProbeOutcome> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted \
         AND relation::bigint = $1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(oid)
    .fetch_one(pool)
    .await
    .map_err(lock_error("look for the read's lock wait"))
}

fn lock_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> ProbeOutcome {
    move |e| {
        ProbeOutcome::error(format!(
            "ground truth could not {what} for the timeout probe: {e}"
        ))
    }
}

async fn quota(ctx: Arc<ProbeCtx>, model: String) -> ProbeResult {
    let m = ctx.model(&model)?.clone();
    let a = &ctx.principals.a;
    let Some(factory) = ctx.factory.clone() else {
        return Err(ProbeOutcome::not_verified(
            "this target cannot start an instance with fresh quota counters",
        ));
    };
    if !factory.applies_policy() {
        return Err(ProbeOutcome::not_verified(
            "this target runs its own configuration, so preflight cannot start it with a small calls_per_hour quota",
        ));
    }
    let keys = ctx.truth.keys(&m, &a.tenant, 1).await?;
    let Some(key) = keys.first().cloned() else {
        return Err(ProbeOutcome::not_verified(format!(
            "{} has no {model} row",
            a.tenant
        )));
    };
    let limit = 3u64;
    let mut policy = (*ctx.policy).clone();
    policy.quotas.calls_per_hour = Some(limit);
    let gw = factory
        .instance(Arc::new(policy), ctx.faults.clone())
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot start an instance: {e}")))?;
    let mut facts = vec![format!("calls_per_hour = {limit} on a fresh instance")];
    let mut last = None;
    for i in 1..=limit + 1 {
        let call = ctx
            .call_on(gw.as_ref(), a, GET, calls::get(&model, &key))
            .await;
        internal_is_inconclusive(&call)?;
        facts.push(format!("call {i}: {}", call.describe()));
        if i <= limit && !call.is_ok() {
            return Err(ProbeOutcome::error(format!(
                "call {i} of {limit} allowed was refused ({}), so the quota could not be measured",
                call.code().map(|c| c.as_str()).unwrap_or("")
            ))
            .with_call(&ctx, &call)
            .facts(facts));
        }
        last = Some(call);
    }
    let Some(call) = last else {
        return Err(ProbeOutcome::error("no call was made"));
    };
    match &call.result {
        Err(e) if e.code == ErrorCode::QuotaExceeded => {
            if let Err(why) = structured(e) {
                return Ok(ProbeOutcome::fail(why).with_call(&ctx, &call).facts(facts));
            }
            Ok(ProbeOutcome::pass(format!(
                "call {} of a {limit}-per-hour quota was refused with quota_exceeded",
                limit + 1
            ))
            .with_call(&ctx, &call)
            .facts(facts))
        }
        Err(e) => Ok(ProbeOutcome::fail(format!(
            "call {} over the quota ended in {} instead of quota_exceeded",
            limit + 1,
            e.code
        ))
        .with_call(&ctx, &call)
        .facts(facts)),
        Ok(_) => Ok(ProbeOutcome::fail(format!(
            "call {} went through although the tenant's quota is {limit} calls per hour",
            limit + 1
        ))
        .with_call(&ctx, &call)
        .facts(facts)),
    }
}

#[cfg(test)]
mod tests {
    use super::names_column;

    #[test]
    fn a_column_is_named_only_as_a_word_of_its_own() {
        assert!(names_column(
            "filter on customer_id or created_at",
            "customer_id"
        ));
        assert!(names_column("filter on \"id\", then page", "id"));
        assert!(names_column("id", "id"));
        assert!(!names_column("narrow the read with a valid filter", "id"));
        assert!(!names_column("the table is paid for by customer_id", "id"));
    }
}
