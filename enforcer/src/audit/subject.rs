//! Data subject access (CMP-3): every audited operation that involved one subject.
//!
//! A subject is named either as `model:id` (`customers:17`) or by a value (an email, a phone
//! number, an SSN). A record involves the subject when:
//! - its `subjects` (the rows the call read or wrote, and the rows they point at, as `model:id`)
//!   contain the subject, or any `model:id` the value resolves to;
//! - a string in its sanitized arguments equals the value (non-sensitive values stay readable);
//! - its reason mentions the value (values of 6 characters or more, case-insensitive).
//!
//! Sensitive values are redacted in the log, so a value is usually found through resolution:
//! [`resolve_subject`] looks the value up, through the owner connection, in every text column
//! the policy treats as sensitive (deny, mask, hash) and returns the matching rows as
//! `model:id`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::canonical::ChainedRecord;
use super::jsonl::{parse_line, JsonlLine};
use crate::policy::{FieldAction, Policy};

/// One audited operation involving the subject, and why it matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectHit {
    pub id: i64,
    pub at: String,
    pub trace_id: String,
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    pub tool: String,
    pub decision: String,
    pub error_code: Option<String>,
    pub rows_returned: Option<i64>,
    pub rows_affected: Option<i64>,
    pub reason: Option<String>,
    pub approval_id: Option<String>,
    pub approver: Option<String>,
    pub subjects: Vec<String>,
    /// `subjects`, `arguments` or `reason`.
    pub matched_by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    #[error("querying the audit log")]
    Database {
        #[source]
        source: sqlx::Error,
    },
    #[error("resolving the subject in {model}.{column}")]
    Resolve {
        model: String,
        column: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a valid audit record")]
    Parse {
        path: String,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// Quotes an identifier from the policy or catalog (`"` doubled).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_text_type(pg_type: &str) -> bool {
    let t = pg_type.to_ascii_lowercase();
    t == "text" || t.starts_with("character") || t.starts_with("varchar") || t == "citext"
}

/// Finds the rows whose sensitive text columns hold `value`, as `model:id`.
pub async fn resolve_subject(
    conn: &mut PgConnection,
    policy: &Policy,
    value: &str,
) -> Result<Vec<String>, SubjectError> {
    let mut found = Vec::new();
    for model in policy.models.values() {
        for col in &model.columns {
            if col.action == FieldAction::Allow || !is_text_type(&col.pg_type) {
                continue;
            }
            let sql = format!(
                "SELECT {pk}::text FROM {schema}.{table} WHERE {col} = $1 LIMIT 1000",
                pk = ident(&model.primary_key),
                schema = ident(&model.schema),
                table = ident(&model.table),
                col = ident(&col.name),
            );
            let ids: Vec<String> = sqlx::query_scalar(&sql)
                .bind(value)
                .fetch_all(&mut *conn)
                .await
                .map_err(|source| SubjectError::Resolve {
                    model: model.name.clone(),
                    column: col.name.clone(),
                    source,
                })?;
            found.extend(ids.into_iter().map(|id| format!("{}:{id}", model.name)));
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Why a record matches, if it does (the JSONL twin of the SQL predicate).
fn match_reason(r: &ChainedRecord, value: &str, subjects: &[String]) -> Option<&'static str> {
    if r.subjects.iter().any(|s| subjects.iter().any(|q| q == s)) {
        return Some("subjects");
    }
    fn has_leaf(v: &Value, value: &str) -> bool {
        match v {
            Value::String(s) => s == value,
            Value::Array(items) => items.iter().any(|i| has_leaf(i, value)),
            Value::Object(map) => map.values().any(|i| has_leaf(i, value)),
            _ => false,
        }
    }
    if has_leaf(&r.arguments, value) {
        return Some("arguments");
    }
    if value.chars().count() >= 6 {
        if let Some(reason) = &r.reason {
            if reason.to_lowercase().contains(&value.to_lowercase()) {
                return Some("reason");
            }
        }
    }
    None
}

fn hit(r: ChainedRecord, matched_by: &str) -> SubjectHit {
    SubjectHit {
        id: r.id,
        at: r.at,
        trace_id: r.trace_id,
        tenant_id: r.tenant_id,
        user_id: r.user_id,
        tool: r.tool,
        decision: r.decision,
        error_code: r.error_code,
        rows_returned: r.rows_returned,
        rows_affected: r.rows_affected,
        reason: r.reason,
        approval_id: r.approval_id,
        approver: r.approver,
        subjects: r.subjects,
        matched_by: matched_by.to_string(),
    }
}

fn query_subjects(value: &str, resolved: &[String]) -> Vec<String> {
    let mut s = vec![value.to_string()];
    s.extend(resolved.iter().cloned());
    s
}

/// Every record in `preflight_audit.audit_log` involving the subject, oldest first.
pub async fn subject_postgres(
    conn: &mut PgConnection,
    value: &str,
    resolved: &[String],
) -> Result<Vec<SubjectHit>, SubjectError> {
    let subjects = query_subjects(value, resolved);
    let sql = format!(
        "{} WHERE a.subjects && $1::text[] \
            OR jsonb_path_exists(a.arguments, '$.** ? (@ == $v)', jsonb_build_object('v', $2::text)) \
            OR (char_length($2) >= 6 AND strpos(lower(coalesce(a.reason, '')), lower($2)) > 0) \
         ORDER BY a.id",
        SELECT_RECORDS
    );
    let rows = sqlx::query(&sql)
        .bind(&subjects)
        .bind(value)
        .fetch_all(&mut *conn)
        .await
        .map_err(|source| SubjectError::Database { source })?;
    let mut hits = Vec::with_capacity(rows.len());
    for row in rows {
        let r = record_from_row(&row).map_err(|source| SubjectError::Database { source })?;
        let why = match_reason(&r, value, &subjects).unwrap_or("arguments");
        hits.push(hit(r, why));
    }
    Ok(hits)
}

/// Every record in a JSONL log involving the subject, in file order.
pub fn subject_jsonl(
    path: &Path,
    value: &str,
    resolved: &[String],
) -> Result<Vec<SubjectHit>, SubjectError> {
    use std::io::BufRead;
    let subjects = query_subjects(value, resolved);
    let file = std::fs::File::open(path).map_err(|source| SubjectError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut hits = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| SubjectError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if line.is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(JsonlLine::Record(r)) => {
                if let Some(why) = match_reason(&r, value, &subjects) {
                    hits.push(hit(*r, why));
                }
            }
            Ok(JsonlLine::Checkpoint(_)) => {}
            Err(source) => {
                return Err(SubjectError::Parse {
                    path: path.display().to_string(),
                    line: n as u64 + 1,
                    source,
                })
            }
        }
    }
    Ok(hits)
}

/// The columns of a stored record, rendered like the canonical form.
pub(crate) const SELECT_RECORDS: &str = "SELECT a.id, \
    to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at_text, \
    a.trace_id, a.tenant_id, a.user_id, a.roles, a.tool, a.arguments, a.arguments_sha256, \
    a.decision, a.error_code, a.rows_returned, a.rows_affected, a.duration_ms, a.reason, \
    a.approval_id, a.approver, a.policy_hash, a.subjects, a.actor, a.prev_hash, a.hash \
    FROM preflight_audit.audit_log a";

pub(crate) fn record_from_row(row: &sqlx::postgres::PgRow) -> Result<ChainedRecord, sqlx::Error> {
    Ok(ChainedRecord {
        id: row.try_get("id")?,
        at: row.try_get("at_text")?,
        trace_id: row.try_get("trace_id")?,
        tenant_id: row.try_get("tenant_id")?,
        user_id: row.try_get("user_id")?,
        roles: row.try_get("roles")?,
        tool: row.try_get("tool")?,
        arguments: row.try_get("arguments")?,
        arguments_sha256: row.try_get("arguments_sha256")?,
        decision: row.try_get("decision")?,
        error_code: row.try_get("error_code")?,
        rows_returned: row.try_get("rows_returned")?,
        rows_affected: row.try_get("rows_affected")?,
        duration_ms: row.try_get("duration_ms")?,
        reason: row.try_get("reason")?,
        approval_id: row.try_get("approval_id")?,
        approver: row.try_get("approver")?,
        policy_hash: row.try_get("policy_hash")?,
        subjects: row.try_get("subjects")?,
        actor: row.try_get("actor")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Reads stored records from Postgres (owner connection), `id > after`, oldest first.
pub async fn read_records(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<ChainedRecord>, sqlx::Error> {
    let sql = format!("{SELECT_RECORDS} WHERE a.id > $1 ORDER BY a.id LIMIT $2");
    let rows = sqlx::query(&sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(record_from_row).collect()
}
