//! Reading the audit log of a layer preflight did not write into [`Record`]s, through its
//! target profile's `audit:` field mapping: a JSONL file ([`read_jsonl`]) or a table in the run's
//! database ([`read_table`]), whose identifiers are found in the catalog before they are quoted.

use std::path::Path;

use preflight_targets::profile::{AuditFields, AuditLog, AuditSource, Profile};
use serde_json::Value;
use sqlx::Row;

use crate::runner::{ProbeCtx, ProbeOutcome};
use crate::target::ForeignAudit;

/// Whether a record says the call was allowed or refused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Decision {
    Allowed,
    Refused,
    /// A value the profile does not map.
    Unknown(String),
}

/// One record of the layer's log, read through the profile's field mapping.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    /// Seconds since the epoch, when the log has a time field.
    pub time: Option<f64>,
    pub tenant: String,
    pub user: String,
    pub tool: String,
    pub decision: Decision,
    /// Our code for the layer's code (mapped through `denials.codes`), or the layer's code as
    /// written when the profile does not map it.
    pub code: Option<String>,
    pub trace_id: Option<String>,
}

/// The layer's records (every one, before the time window), lines that could not be read, and
/// where they came from.
pub(super) async fn read(
    ctx: &ProbeCtx,
    foreign: &ForeignAudit,
    audit: &AuditLog,
    profile: &Profile,
) -> Result<(Vec<Record>, Vec<String>, String), ProbeOutcome> {
    match &audit.source {
        AuditSource::Jsonl { .. } => {
            let Some(path) = &foreign.jsonl_path else {
                return Err(ProbeOutcome::error(
                    "the JSONL audit path could not be resolved",
                ));
            };
            let (records, bad) = read_jsonl(path, audit, profile)?;
            Ok((records, bad, format!("the JSONL log {}", path.display())))
        }
        AuditSource::Table { schema, table } => {
            let records = read_table(ctx.truth.pool(), schema, table, audit, profile).await?;
            Ok((records, Vec::new(), format!("the table {schema}.{table}")))
        }
    }
}

/// Our code for a code the layer wrote: mapped through `denials.codes`, one of ours as it is,
/// anything else as written (it then matches no call's code).
fn our_code(profile: &Profile, code: &str) -> String {
    match profile.denials.codes.get(code) {
        Some(c) => c.as_str().to_string(),
        None => code.to_string(),
    }
}

fn decision(audit: &AuditLog, value: &str) -> Decision {
    if audit.allow.iter().any(|v| v == value) {
        Decision::Allowed
    } else if audit.deny.iter().any(|v| v == value) {
        Decision::Refused
    } else {
        Decision::Unknown(value.to_string())
    }
}

/// Seconds since the epoch from RFC 3339 text or a number (seconds, or milliseconds when it is
/// too large to be seconds).
fn seconds(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| if x > 1e11 { x / 1000.0 } else { x }),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.timestamp_micros() as f64 / 1e6)
            .or_else(|| s.trim().parse::<f64>().ok()),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, k| cur.get(k))
}

/// A record from a JSON object through the field mapping.
fn record_of(v: &Value, fields: &AuditFields, audit: &AuditLog, profile: &Profile) -> Record {
    let get = |f: &Option<String>| f.as_deref().and_then(|p| at_path(v, p));
    let code = text(get(&fields.code));
    Record {
        time: get(&fields.time).and_then(seconds),
        tenant: text(at_path(v, &fields.tenant)),
        user: text(get(&fields.user)),
        tool: text(at_path(v, &fields.tool)),
        decision: decision(audit, &text(at_path(v, &fields.decision))),
        code: (!code.is_empty()).then(|| our_code(profile, &code)),
        trace_id: get(&fields.trace_id).map(|t| text(Some(t))),
    }
}

/// Reads a JSONL log: one JSON object a line; blank lines are skipped, and a line that is not an
/// object is reported (a log that cannot be read is not a faithful log).
pub(super) fn read_jsonl(
    path: &Path,
    audit: &AuditLog,
    profile: &Profile,
) -> Result<(Vec<Record>, Vec<String>), ProbeOutcome> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProbeOutcome::error(format!(
                "the layer's audit log {} does not exist: the layer wrote no record there, or the profile names the wrong path",
                path.display()
            )))
        }
        Err(e) => {
            return Err(ProbeOutcome::error(format!(
                "cannot read the layer's audit log {}: {e}",
                path.display()
            )))
        }
    };
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => records.push(record_of(&v, &audit.fields, audit, profile)),
            Ok(_) | Err(_) => bad.push(format!(
                "{}:{}: not a JSON object: {}",
                path.display(),
                i + 1,
                crate::runner::excerpt(line, 80)
            )),
        }
    }
    Ok((records, bad))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Reads the layer's audit table. Every identifier is first found in the catalog (bound as
/// values) and then quoted; a time column of a timestamp type is read as epoch seconds.
pub(super) async fn read_table(
    pool: &sqlx::PgPool,
    schema: &str,
    table: &str,
    audit: &AuditLog,
    profile: &Profile,
) -> Result<Vec<Record>, ProbeOutcome> {
    let f = &audit.fields;
    let wanted: Vec<(&str, &str)> = [
        ("time", f.time.as_deref()),
        ("tenant", Some(f.tenant.as_str())),
        ("user", f.user.as_deref()),
        ("tool", Some(f.tool.as_str())),
        ("decision", Some(f.decision.as_str())),
        ("code", f.code.as_deref()),
        ("trace_id", f.trace_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, c)| c.map(|c| (k, c)))
    .collect();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(|e| {
        ProbeOutcome::error(format!("cannot read the catalog for {schema}.{table}: {e}"))
    })?;
    if columns.is_empty() {
        return Err(ProbeOutcome::error(format!(
            "the layer's audit table {schema}.{table} does not exist (or the owner login cannot see it)"
        )));
    }
    let mut select = Vec::new();
    let mut missing = Vec::new();
    for (key, col) in &wanted {
        match columns.iter().find(|(name, _)| name == col) {
            Some((_, ty)) => {
                let q = quote_ident(col);
                select.push(if *key == "time" && ty.starts_with("timestamp") {
                    format!(
                        "extract(epoch FROM {q})::float8::text AS {}",
                        quote_ident(key)
                    )
                } else {
                    format!("{q}::text AS {}", quote_ident(key))
                });
            }
            None => missing.push(format!("audit.fields.{key}: `{col}`")),
        }
    }
    if !missing.is_empty() {
        return Err(ProbeOutcome::error(format!(
            "the layer's audit table {schema}.{table} has no column {}",
            missing.join(", ")
        )));
    }
    let sql = format!(
        "SELECT {} FROM {}.{}",
        select.join(", "),
        quote_ident(schema),
        quote_ident(table)
    );
    let rows = sqlx::query(&sql)
        .fetch_all(pool)
        .await
        .map_err(|e| ProbeOutcome::error(format!("cannot read {schema}.{table}: {e}")))?;
    let mut out = Vec::new();
    for row in rows {
        let mut obj = serde_json::Map::new();
        for (key, _) in &wanted {
            let v: Option<String> = row.try_get(*key).unwrap_or(None);
            obj.insert(key.to_string(), v.map(Value::String).unwrap_or(Value::Null));
        }
        // The row, now keyed by part, read through an identity mapping.
        let by_part = AuditFields {
            time: f.time.as_ref().map(|_| "time".into()),
            tenant: "tenant".into(),
            user: f.user.as_ref().map(|_| "user".into()),
            tool: "tool".into(),
            decision: "decision".into(),
            code: f.code.as_ref().map(|_| "code".into()),
            trace_id: f.trace_id.as_ref().map(|_| "trace_id".into()),
        };
        out.push(record_of(&Value::Object(obj), &by_part, audit, profile));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_rfc3339_or_epoch_numbers() {
        assert_eq!(seconds(&serde_json::json!(1_700_000_000)), Some(1.7e9));
        assert_eq!(
            seconds(&serde_json::json!(1_700_000_000_000u64)),
            Some(1.7e9)
        );
        assert_eq!(
            seconds(&serde_json::json!("2023-11-14T22:13:20Z")),
            Some(1.7e9)
        );
        assert_eq!(seconds(&serde_json::json!("yesterday")), None);
    }

    /// A profile over `table`, mapping the layer's codes to ours.
    fn table_profile(table: &str, tool_column: &str) -> Profile {
        let text = format!(
            "transport: {{url: \"http://x/mcp\"}}\nprincipal: {{headers: {{X-T: \"{{tenant}}\"}}}}\n\
             tools: {{db_get: {{}}}}\ndenials: {{codes: {{FORBIDDEN_FIELD: field_denied}}}}\n\
             audit:\n  table: '{table}'\n  fields: {{time: at, tenant: tenant, user: usr, tool: {tool_column}, decision: outcome, code: code}}\n  \
             decisions: {{allow: allowed, deny: denied}}\n"
        );
        preflight_targets::profile::load_str(&text, "p.yaml").expect("profile")
    }

    /// The table source on a real Postgres: names checked in the catalog and quoted (a table
    /// name with a double quote in it), timestamps read as epoch seconds, codes mapped, and a
    /// missing table or column an `error` naming it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_log_is_read_through_the_catalog() {
        let db = crate::db::testing::database().await;
        let Some(su_url) = db.superuser_url() else {
            crate::db::testing::prerequisite_missing(
                "a_table_log_is_read_through_the_catalog",
                "the test database offers no superuser login to create the layer's table",
            );
            return;
        };
        // The layer's table is made by a superuser and granted to the owner, which reads it as
        // ground truth does.
        let su = sqlx::PgPool::connect(su_url).await.expect("superuser pool");
        let owner = db.owner_pool().await.expect("owner pool");
        let owner_role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&owner)
            .await
            .expect("owner role");
        let schema = format!("layer_audit_{}", uuid::Uuid::new_v4().simple());
        let table = "ev\"ents";
        let pool = su;
        sqlx::query(&format!("CREATE SCHEMA {}", quote_ident(&schema)))
            .execute(&pool)
            .await
            .expect("schema");
        sqlx::query(&format!(
            "CREATE TABLE {}.{} (at timestamptz, tenant text, usr text, tool text, outcome text, code text)",
            quote_ident(&schema),
            quote_ident(table)
        ))
        .execute(&pool)
        .await
        .expect("table");
        sqlx::query(&format!(
            "INSERT INTO {}.{} VALUES \
             (now(), 'acme', 'alice', 'orders_search', 'allowed', NULL), \
             (now(), 'acme', 'alice', 'orders_search', 'denied', 'FORBIDDEN_FIELD'), \
             (now() - interval '1 hour', 'globex', 'bob', 'orders_get', 'maybe', 'ODD')",
            quote_ident(&schema),
            quote_ident(table)
        ))
        .execute(&pool)
        .await
        .expect("rows");
        for grant in [
            format!(
                "GRANT USAGE ON SCHEMA {} TO {}",
                quote_ident(&schema),
                quote_ident(&owner_role)
            ),
            format!(
                "GRANT SELECT ON {}.{} TO {}",
                quote_ident(&schema),
                quote_ident(table),
                quote_ident(&owner_role)
            ),
        ] {
            sqlx::query(&grant).execute(&pool).await.expect("grant");
        }
        let profile = table_profile(&format!("{schema}.{table}"), "tool");
        let audit = profile.audit.clone().expect("audit");
        let records = read_table(&owner, &schema, table, &audit, &profile).await;
        let missing_column = {
            let p = table_profile(&format!("{schema}.{table}"), "tool_name");
            let a = p.audit.clone().expect("audit");
            read_table(&owner, &schema, table, &a, &p).await
        };
        let missing_table = read_table(&owner, &schema, "nope", &audit, &profile).await;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", quote_ident(&schema)))
            .execute(&pool)
            .await
            .expect("drop");
        let mut records = records.expect("records");
        records.sort_by(|a, b| a.time.partial_cmp(&b.time).expect("times"));
        assert_eq!(records.len(), 3, "{records:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let old = records[0].time.expect("time");
        assert!((now - old - 3600.0).abs() < 120.0, "{old} vs {now}");
        assert_eq!(records[0].decision, Decision::Unknown("maybe".into()));
        assert_eq!(records[0].code.as_deref(), Some("ODD"));
        let denied = records
            .iter()
            .find(|r| r.decision == Decision::Refused)
            .expect("a refusal");
        assert_eq!(denied.code.as_deref(), Some("field_denied"));
        assert_eq!(
            (denied.tenant.as_str(), denied.user.as_str()),
            ("acme", "alice")
        );
        assert_eq!(denied.tool, "orders_search");
        let e = missing_column.expect_err("no such column").message;
        assert!(
            e.contains("has no column audit.fields.tool: `tool_name`"),
            "{e}"
        );
        let e = missing_table.expect_err("no such table").message;
        assert!(e.contains("does not exist"), "{e}");
    }
}
