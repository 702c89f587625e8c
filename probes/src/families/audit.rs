//! `audit`: every call leaves exactly one record, records are sanitized and hashed, the writer
//! cannot rewrite history, the chain exposes an edit, and a data subject's records can be found
//! and outlive no deletion in clear (PRE-6, AUD-1…4, AUD-7, CMP-3, CMP-4). See
//! docs/probes/audit.md.
//!
//! The run's own call log is the reference: each call's trace id must have exactly one record
//! in `preflight_audit.audit_log` with the same principal, tool and decision. The chain is
//! recomputed here from the documented canonical form (fixtures/shop/README.md), independently
//! of the layer's own verifier, and the tamper probe edits a record inside a transaction it rolls
//! back, so the log is never left changed.
//!
//! A layer preflight did not write keeps its own log, which its target profile names (a JSONL
//! file or a table); [`foreign`] judges it. The probes that need preflight's own hash-chained
//! table (chain, tamper, writer, sanitized arguments) are `not_verified` there, with the reason.

mod foreign;
mod foreign_log;
mod subject;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use preflight_enforcer::policy::AuditSinkConfig;
use preflight_enforcer::ErrorCode;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Row};

use super::PlanInput;
use crate::calls::{self, Query, DESCRIBE, GET, QUERY};
use crate::codes::ProbeCode;
use crate::runner::{CallEntry, Phase, Probe, ProbeCtx, ProbeOutcome, ProbeResult};

/// Every audit probe: one coverage instance per tool the layer offers (its SQL tool too, when
/// its profile names one), then the log itself.
pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    let mut out = Vec::new();
    let sql_tool = input
        .sql
        .map(|s| s.tool.clone())
        .filter(|t| !input.tools.contains(t));
    for tool in input.tools.iter().chain(sql_tool.iter()) {
        let t = tool.clone();
        out.push(
            Probe::new(
                ProbeCode::EveryCallAudited,
                format!("every {tool} call has exactly one audit record"),
                move |ctx| every_call(ctx, t.clone()),
            )
            .phase(Phase::Final)
            .at("audit.sinks"),
        );
    }
    out.push(
        Probe::new(
            ProbeCode::ArgumentsSanitized,
            "audit records carry sanitized arguments and the raw arguments' hash",
            arguments_sanitized,
        )
        .phase(Phase::Final)
        .at("audit"),
    );
    out.push(
        Probe::new(
            ProbeCode::SubjectAccess,
            "a subject-access query finds every call that touched the subject",
            subject::subject_access,
        )
        .at("audit"),
    );
    out.push(
        Probe::new(
            ProbeCode::SubjectErasure,
            "a deleted subject's audit trail names it, holds no personal value and expires with retention",
            subject::subject_erasure,
        )
        .phase(Phase::Serial)
        .at("audit.retention"),
    );
    out.push(
        Probe::new(
            ProbeCode::WriterAppendOnly,
            "the audit writer role cannot update, delete or truncate",
            writer_append_only,
        )
        .phase(Phase::Serial)
        .at("audit"),
    );
    out.push(
        Probe::new(
            ProbeCode::ChainVerifies,
            "the audit hash chain verifies",
            chain_verifies,
        )
        .phase(Phase::Final)
        .at("audit"),
    );
    out.push(
        Probe::new(
            ProbeCode::TamperDetected,
            "an audit record edited through the owner breaks the chain",
            tamper_detected,
        )
        .phase(Phase::Last)
        .at("audit"),
    );
    out
}

/// `Err(not_verified)` on a layer preflight did not write, for probes that read preflight's own
/// hash-chained `preflight_audit.audit_log`.
fn needs_own_log(ctx: &ProbeCtx, what: &str) -> Result<(), ProbeOutcome> {
    let Some(f) = &ctx.foreign else {
        return Ok(());
    };
    foreign::section(f)?;
    Err(ProbeOutcome::not_verified(format!(
        "the target keeps its own audit log (named by its profile), not preflight's \
         preflight_audit.audit_log; {what}"
    )))
}

fn audits_to_postgres(ctx: &ProbeCtx) -> Result<(), ProbeOutcome> {
    if ctx
        .policy
        .audit
        .sinks
        .iter()
        .any(|s| matches!(s, AuditSinkConfig::Postgres))
    {
        Ok(())
    } else {
        Err(ProbeOutcome::not_verified(
            "the policy configures no postgres audit sink; this probe reads preflight_audit.audit_log",
        ))
    }
}

/// Makes one call of `tool` whose outcome cannot change data: valid for read tools, schema-
/// invalid (so refused before anything runs) for the others.
async fn own_call(ctx: &ProbeCtx, tool: &str) {
    let a = &ctx.principals.a;
    let first = ctx
        .policy
        .models
        .values()
        .find(|m| m.tools.contains(tool))
        .map(|m| m.name.clone());
    let args = match (tool, first) {
        (DESCRIBE, _) => json!({}),
        (GET, Some(m)) => {
            let key = match ctx.policy.model(&m) {
                Some(model) => ctx
                    .truth
                    .keys(model, &a.tenant, 1)
                    .await
                    .ok()
                    .and_then(|k| k.into_iter().next())
                    .unwrap_or(json!(1)),
                None => json!(1),
            };
            calls::get(&m, &key)
        }
        (QUERY, Some(m)) => Query::new(&m).limit(1).build(),
        _ => json!({"preflight_probe": "deliberately invalid arguments"}),
    };
    ctx.call(a, tool, args).await;
}

/// Audit records of `entries`, by trace id.
async fn records_by_trace(
    ctx: &ProbeCtx,
    entries: &[CallEntry],
) -> Result<BTreeMap<String, Vec<Value>>, ProbeOutcome> {
    let mut by_trace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for chunk in entries.chunks(5000) {
        let ids: Vec<String> = chunk.iter().map(|e| e.trace_id.clone()).collect();
        let Some(records) = ctx.truth.audit_records(&ids).await? else {
            return Err(ProbeOutcome::fail(
                "the database has no preflight_audit.audit_log, so no call was recorded there",
            ));
        };
        for r in records {
            let t = r
                .get("trace_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            by_trace.entry(t).or_default().push(r);
        }
    }
    Ok(by_trace)
}

async fn every_call(ctx: Arc<ProbeCtx>, tool: String) -> ProbeResult {
    if let Some(f) = ctx.foreign.clone() {
        foreign::section(&f)?;
        own_call(&ctx, &tool).await;
        return foreign::every_call(ctx, &f, &tool).await;
    }
    audits_to_postgres(&ctx)?;
    own_call(&ctx, &tool).await;
    let entries: Vec<CallEntry> = ctx
        .calls
        .entries()
        .into_iter()
        .filter(|e| e.tool == tool)
        .collect();
    let by_trace = records_by_trace(&ctx, &entries).await?;
    let mut problems = Vec::new();
    let mut denied = 0;
    for e in &entries {
        let recs = by_trace
            .get(&e.trace_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if e.outcome.is_err() {
            denied += 1;
        }
        let what = format!(
            "{} call {} ({})",
            e.tool,
            e.trace_id,
            match &e.outcome {
                Ok(()) => "allowed".to_string(),
                Err(c) => c.as_str().to_string(),
            }
        );
        match recs {
            [] => problems.push(format!("{what}: no audit record")),
            [r] => {
                let get = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                if get("tenant_id") != e.principal.tenant || get("user_id") != e.principal.user {
                    problems.push(format!(
                        "{what}: recorded as {}/{}, made as {}/{}",
                        get("tenant_id"),
                        get("user_id"),
                        e.principal.tenant,
                        e.principal.user
                    ));
                }
                if get("tool") != e.tool {
                    problems.push(format!("{what}: recorded as tool {}", get("tool")));
                }
                let decision = get("decision");
                let consistent = match &e.outcome {
                    Ok(()) => decision == "allow",
                    Err(ErrorCode::Internal) => decision == "error" || decision == "deny",
                    Err(_) => decision == "deny" || decision == "error",
                };
                if !consistent {
                    problems.push(format!("{what}: recorded decision {decision}"));
                }
                if let Err(code) = &e.outcome {
                    let rec_code = get("error_code");
                    if !rec_code.is_empty() && rec_code != code.as_str() {
                        problems.push(format!("{what}: recorded error code {rec_code}"));
                    }
                }
            }
            many => problems.push(format!("{what}: {} audit records", many.len())),
        }
    }
    if entries.is_empty() {
        return Err(ProbeOutcome::error(format!("no {tool} call was made")));
    }
    let summary = format!(
        "{} {tool} call(s) this run ({denied} denied or failed), matched to audit records by trace id",
        entries.len()
    );
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(20);
        return Ok(ProbeOutcome::fail(format!(
            "{n} {tool} call(s) lack exactly one faithful audit record; every call, allowed or \
             denied, must be recorded once with its principal, tool, decision and trace id"
        ))
        .summary(summary)
        .facts(problems));
    }
    Ok(ProbeOutcome::pass(format!(
        "every {tool} call has exactly one audit record with the right principal, decision and trace id"
    ))
    .summary(summary))
}

/// The canonical JSON form the layer hashes (keys sorted by bytes at every level, compact).
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => v.clone(),
        }
    }
    sorted(value).to_string()
}

async fn arguments_sanitized(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the profile maps no stored arguments or their hash, so sanitization cannot be checked",
    )?;
    audits_to_postgres(&ctx)?;
    let a = &ctx.principals.a;
    // Secrets under innocent keys: a sanitizer that only looks at key names lets them through.
    let secrets: Vec<String> = ctx
        .truth
        .canaries
        .iter()
        .filter(|c| c.tenant == a.tenant)
        .filter(|c| matches!(c.kind, crate::canary::CanaryKind::Secret))
        .take(2)
        .map(|c| c.value.clone())
        .collect();
    if let Some(m) = ctx.policy.models.values().find(|m| m.tools.contains(QUERY)) {
        if let Some(col) = m.columns.iter().find(|c| {
            c.action == preflight_enforcer::policy::FieldAction::Allow && c.pg_type == "text"
        }) {
            for s in &secrets {
                ctx.call(
                    a,
                    QUERY,
                    Query::new(&m.name)
                        .filter(&col.name, "eq", json!(s))
                        .limit(1)
                        .build(),
                )
                .await;
            }
        }
    }
    let entries = ctx.calls.entries();
    let by_trace = records_by_trace(&ctx, &entries).await?;
    let mut leaks = Vec::new();
    let mut hash_mismatch = Vec::new();
    let mut with_secrets = 0;
    let mut checked = 0;
    for e in &entries {
        let Some([rec]) = by_trace.get(&e.trace_id).map(Vec::as_slice) else {
            continue;
        };
        checked += 1;
        let sent = ctx.truth.canaries.sent_in(&e.arguments);
        if !sent.is_empty() {
            with_secrets += 1;
        }
        let stored_args = rec.get("arguments").cloned().unwrap_or(Value::Null);
        for h in ctx.truth.canaries.scan_json(&stored_args, "$.arguments") {
            leaks.push(format!(
                "{} call {}: \"{}\" ({}) at {}",
                e.tool,
                e.trace_id,
                h.canary.masked(),
                h.canary.cell(),
                h.path
            ));
        }
        let expected = hex::encode(Sha256::digest(canonical_json(&e.arguments).as_bytes()));
        let stored = rec
            .get("arguments_sha256")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if stored != expected {
            hash_mismatch.push(format!(
                "{} call {}: arguments_sha256 {} is not the SHA-256 of the arguments sent",
                e.tool,
                e.trace_id,
                crate::runner::excerpt(stored, 16)
            ));
        }
    }
    let summary = format!(
        "{checked} audit record(s) checked; {with_secrets} call(s) carried canary values in their arguments"
    );
    if with_secrets == 0 {
        return Err(ProbeOutcome::not_verified(
            "no call of this run carried a canary in its arguments, so sanitization was not exercised",
        )
        .summary(summary));
    }
    if !leaks.is_empty() || !hash_mismatch.is_empty() {
        let n = leaks.len();
        leaks.truncate(20);
        hash_mismatch.truncate(10);
        return Ok(ProbeOutcome::fail(format!(
            "{n} canary value(s) reached the audit log and {} record(s) have a wrong arguments hash; \
             sanitize arguments by field policy and by value pattern, and hash the raw arguments",
            hash_mismatch.len()
        ))
        .summary(summary)
        .leaks(leaks)
        .facts(hash_mismatch));
    }
    Ok(ProbeOutcome::pass(
        "no canary reached the audit log, and every record's arguments_sha256 matches the arguments sent",
    )
    .summary(summary))
}

async fn writer_append_only(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the profile names no writer login for it, so append-only cannot be tried",
    )?;
    let Some(url) = ctx.audit_url.clone() else {
        return Err(ProbeOutcome::not_verified(
            "no audit writer login is known for this database",
        ));
    };
    let mut conn = PgConnection::connect(&url)
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot log in as the audit writer: {e}")))?;
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot open a transaction: {e}")))?;
    let attempts = [
        (
            "UPDATE",
            "UPDATE preflight_audit.audit_log SET reason = 'preflight tamper probe'",
        ),
        ("DELETE", "DELETE FROM preflight_audit.audit_log"),
        ("TRUNCATE", "TRUNCATE preflight_audit.audit_log"),
    ];
    let mut allowed = Vec::new();
    let mut facts = Vec::new();
    for (what, sql) in attempts {
        sqlx::query("SAVEPOINT preflight_probe")
            .execute(&mut *tx)
            .await
            .map_err(|e| ProbeOutcome::error(format!("savepoint failed: {e}")))?;
        match sqlx::query(sql).execute(&mut *tx).await {
            Ok(r) => {
                allowed.push(what);
                facts.push(format!(
                    "{what} as the audit writer: accepted ({} row(s))",
                    r.rows_affected()
                ));
            }
            Err(e) => {
                let code = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                facts.push(format!(
                    "{what} as the audit writer: refused (SQLSTATE {code})"
                ));
            }
        }
        sqlx::query("ROLLBACK TO SAVEPOINT preflight_probe")
            .execute(&mut *tx)
            .await
            .map_err(|e| ProbeOutcome::error(format!("rollback to savepoint failed: {e}")))?;
    }
    tx.rollback()
        .await
        .map_err(|e| ProbeOutcome::error(format!("rollback failed: {e}")))?;
    if !allowed.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "the audit writer could {} the audit log (rolled back by the probe); grant it INSERT only",
            allowed.join(", ")
        ))
        .facts(facts)
        .sql(attempts.iter().map(|(_, s)| s.to_string()).collect::<Vec<_>>().join("; ")));
    }
    Ok(
        ProbeOutcome::pass(
            "the audit writer can neither update, delete nor truncate the audit log",
        )
        .facts(facts),
    )
}

/// Where a chain walk stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub id: i64,
    pub kind: &'static str,
    pub detail: String,
}

/// The result of walking the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainWalk {
    pub records: u64,
    pub first_id: Option<i64>,
    pub broken: Option<ChainBreak>,
}

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Recomputes the audit chain on `conn` from the canonical form (fields rendered by the
/// database, hashed here), checking links, gapless ids, every hash, and the head.
pub async fn walk_chain(conn: &mut PgConnection) -> Result<ChainWalk, sqlx::Error> {
    sqlx::query("SET extra_float_digits = 1")
        .execute(&mut *conn)
        .await?;
    let sql = "SELECT id, prev_hash, hash, jsonb_build_array(id, \
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
        trace_id, tenant_id, user_id, roles, tool, arguments, arguments_sha256, decision, \
        error_code, rows_returned, rows_affected, duration_ms::text, reason, approval_id, \
        approver, policy_hash, subjects, actor)::text AS payload \
        FROM preflight_audit.audit_log ORDER BY id";
    let mut walk = ChainWalk {
        records: 0,
        first_id: None,
        broken: None,
    };
    let mut last_hash: Option<String> = None;
    let mut last_id: Option<i64> = None;
    {
        let mut rows = sqlx::query(sql).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let id: i64 = row.get("id");
            let prev: String = row.get("prev_hash");
            let hash: String = row.get("hash");
            let payload: String = row.get("payload");
            walk.records += 1;
            if walk.broken.is_some() {
                continue;
            }
            match (last_id, walk.first_id) {
                (None, _) => {
                    walk.first_id = Some(id);
                    if id == 1 && prev != ZERO_HASH {
                        walk.broken = Some(ChainBreak {
                            id,
                            kind: "link",
                            detail: "the first record does not start from the genesis hash".into(),
                        });
                    }
                }
                (Some(l), _) if id != l + 1 => {
                    walk.broken = Some(ChainBreak {
                        id,
                        kind: "gap",
                        detail: format!("record {} is missing", l + 1),
                    });
                }
                (Some(_), _) => {
                    if last_hash.as_deref() != Some(prev.as_str()) {
                        walk.broken = Some(ChainBreak {
                            id,
                            kind: "link",
                            detail: "prev_hash is not the previous record's hash".into(),
                        });
                    }
                }
            }
            if walk.broken.is_none() {
                let computed = hex::encode(Sha256::digest(format!("{prev}|{payload}").as_bytes()));
                if computed != hash {
                    walk.broken = Some(ChainBreak {
                        id,
                        kind: "edited",
                        detail: "the stored hash does not match the record's content".into(),
                    });
                }
            }
            last_id = Some(id);
            last_hash = Some(hash);
        }
    }
    if walk.broken.is_none() {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT count, hash FROM preflight_audit.chain_head WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?;
        match head {
            Some((count, hash)) => {
                let n = last_id.unwrap_or(0);
                if count != n || (n > 0 && last_hash.as_deref() != Some(hash.as_str())) {
                    walk.broken = Some(ChainBreak {
                        id: n,
                        kind: "head",
                        detail: format!("the chain head says {count} records; the log ends at {n}"),
                    });
                }
            }
            None => {
                walk.broken = Some(ChainBreak {
                    id: 0,
                    kind: "head",
                    detail: "the chain head row is missing".into(),
                })
            }
        }
    }
    Ok(walk)
}

async fn chain_verifies(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the profile describes no hash chain for it, so there is no chain to verify",
    )?;
    let mut conn =
        ctx.truth.pool().acquire().await.map_err(|e| {
            ProbeOutcome::error(format!("cannot reach the database as the owner: {e}"))
        })?;
    let walk = walk_chain(&mut conn)
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot read the audit chain: {e}")))?;
    let summary = format!(
        "{} record(s) walked from id {}",
        walk.records,
        walk.first_id
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into())
    );
    if walk.records == 0 {
        return Err(ProbeOutcome::not_verified("the audit log is empty").summary(summary));
    }
    match walk.broken {
        Some(b) => Ok(ProbeOutcome::fail(format!(
            "the audit chain is broken at record {} ({}: {})",
            b.id, b.kind, b.detail
        ))
        .summary(summary)),
        None => Ok(
            ProbeOutcome::pass("the audit chain verifies end to end and matches its head")
                .summary(summary),
        ),
    }
}

async fn tamper_detected(ctx: Arc<ProbeCtx>) -> ProbeResult {
    needs_own_log(
        &ctx,
        "the profile describes no hash chain for it, so an edit has nothing to break",
    )?;
    ctx.require_writes()?;
    let mut conn =
        ctx.truth.pool().acquire().await.map_err(|e| {
            ProbeOutcome::error(format!("cannot reach the database as the owner: {e}"))
        })?;
    let err = |what: &str| {
        let what = what.to_string();
        move |e: sqlx::Error| ProbeOutcome::error(format!("{what}: {e}"))
    };
    let mut tx = conn
        .begin()
        .await
        .map_err(err("cannot open a transaction"))?;
    let target: Option<i64> =
        sqlx::query_scalar("SELECT max(id) / 2 + 1 FROM preflight_audit.audit_log")
            .fetch_one(&mut *tx)
            .await
            .map_err(err("cannot read the audit log"))?;
    let Some(target) = target else {
        return Err(ProbeOutcome::not_verified(
            "the audit log is empty; there is nothing to tamper with",
        ));
    };
    let mut facts = Vec::new();
    // 1. A plain edit by the owner must be refused.
    sqlx::query("SAVEPOINT preflight_probe")
        .execute(&mut *tx)
        .await
        .map_err(err("savepoint"))?;
    let plain = sqlx::query(
        "UPDATE preflight_audit.audit_log SET decision = CASE decision WHEN 'allow' THEN 'deny' ELSE 'allow' END WHERE id = $1",
    )
    .bind(target)
    .execute(&mut *tx)
    .await;
    let plain_accepted = plain.is_ok();
    facts.push(match &plain {
        Ok(r) => format!(
            "plain UPDATE of record {target} as the owner: accepted ({} row)",
            r.rows_affected()
        ),
        Err(e) => format!(
            "plain UPDATE of record {target} as the owner: refused (SQLSTATE {})",
            e.as_database_error()
                .and_then(|d| d.code())
                .unwrap_or_default()
        ),
    });
    sqlx::query("ROLLBACK TO SAVEPOINT preflight_probe")
        .execute(&mut *tx)
        .await
        .map_err(err("rollback to savepoint"))?;
    // 2. Forced through (triggers off, as only the owner can), the chain must break right there.
    sqlx::query("ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .map_err(err("cannot disable the audit log's triggers as the owner"))?;
    sqlx::query(
        "UPDATE preflight_audit.audit_log SET decision = CASE decision WHEN 'allow' THEN 'deny' ELSE 'allow' END WHERE id = $1",
    )
    .bind(target)
    .execute(&mut *tx)
    .await
    .map_err(err("cannot edit the record with triggers off"))?;
    facts.push(format!(
        "record {target}'s decision flipped with triggers disabled (rolled back afterwards)"
    ));
    let walk = walk_chain(&mut tx)
        .await
        .map_err(err("cannot walk the chain"))?;
    tx.rollback().await.map_err(err("rollback"))?;
    let detected = walk.broken.as_ref().is_some_and(|b| b.id == target);
    facts.push(match &walk.broken {
        Some(b) => format!("chain walk: broken at record {} ({})", b.id, b.kind),
        None => "chain walk: no break found".to_string(),
    });
    if plain_accepted || !detected {
        let mut why = Vec::new();
        if plain_accepted {
            why.push("the owner could edit an audit record without disabling any protection");
        }
        if !detected {
            why.push("the chain did not expose the edited record");
        }
        return Ok(ProbeOutcome::fail(format!(
            "{}; the log must be append-only and hash-chained",
            why.join(" and ")
        ))
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "a plain edit was refused, and an edit forced through broke the chain at record {target}"
    ))
    .facts(facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": "x"}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
