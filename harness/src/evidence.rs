//! Ground truth read through the owner connection: who owns which row, the canary registry,
//! table snapshots, pending approvals and the audit trail of a run; [`GroundTruth`].
//!
//! Identifiers come from scenario files that the loader has already restricted to plain
//! identifiers, and are checked against the catalog here before use; they are always quoted.
//! Values are always bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;
use sqlx::PgPool;
use sqlx::Row;

/// One registered canary (`preflight_meta.canaries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub value: String,
    pub tenant: String,
    pub table: String,
    pub column: String,
    pub row_id: i64,
    /// `pii`, `secret` or `free_text`.
    pub kind: String,
}

impl Canary {
    /// Where it belongs, e.g. `globex.customers.ssn#12` (safe to print: no value).
    pub fn location(&self) -> String {
        format!(
            "{}.{}.{}#{}",
            self.tenant, self.table, self.column, self.row_id
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("ground-truth query failed: {what}")]
    Query {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("`{0}` is not a table of schema public with an `id` column")]
    UnknownTable(String),
}

fn q(what: &str) -> impl FnOnce(sqlx::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Query {
        what: what.to_string(),
        source,
    }
}

/// Ground truth for one database.
#[derive(Clone)]
pub struct GroundTruth {
    owner: PgPool,
    pub tenants: Vec<String>,
    pub canaries: Vec<Canary>,
    /// Tables of schema `public` with an `id` column, and whether they have `tenant_id`.
    tables: BTreeMap<String, bool>,
    /// Write scenarios act on rows created for each attempt (a copy of each row they name),
    /// removed afterwards: set for a staging database, whose fixture rows are not ours to change.
    pub attempt_rows: bool,
}

impl std::fmt::Debug for GroundTruth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroundTruth")
            .field("tenants", &self.tenants)
            .field("canaries", &self.canaries.len())
            .field("tables", &self.tables)
            .finish()
    }
}

/// A table's contents at one moment, compared by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDigest {
    pub table: String,
    pub rows: i64,
    pub md5: String,
}

/// An approval as the approvals table records it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRow {
    pub id: String,
    pub model: String,
    pub state: String,
}

/// One audit row of a run (`preflight_audit.audit_log` by trace id).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    pub tool: String,
    pub decision: String,
    pub error_code: Option<String>,
}

impl GroundTruth {
    pub async fn load(owner: PgPool) -> Result<Self, EvidenceError> {
        let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM public.tenants ORDER BY id")
            .fetch_all(&owner)
            .await
            .map_err(q("list tenants"))?;
        let rows = sqlx::query(
            "SELECT value, tenant_id, table_name, column_name, row_id, kind \
             FROM preflight_meta.canaries ORDER BY length(value) DESC, value",
        )
        .fetch_all(&owner)
        .await
        .map_err(q("read the canary registry"))?;
        let canaries = rows
            .iter()
            .map(|r| Canary {
                value: r.get("value"),
                tenant: r.get("tenant_id"),
                table: r.get("table_name"),
                column: r.get("column_name"),
                row_id: r.get("row_id"),
                kind: r.get("kind"),
            })
            .collect();
        let table_rows = sqlx::query(
            "SELECT c.table_name::text AS t, bool_or(c.column_name = 'tenant_id') AS scoped \
             FROM information_schema.columns c \
             JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
             GROUP BY c.table_name HAVING bool_or(c.column_name = 'id')",
        )
        .fetch_all(&owner)
        .await
        .map_err(q("read the catalog"))?;
        let tables = table_rows
            .iter()
            .map(|r| (r.get::<String, _>("t"), r.get::<bool, _>("scoped")))
            .collect();
        Ok(Self {
            owner,
            tenants,
            canaries,
            tables,
            attempt_rows: false,
        })
    }

    pub fn owner(&self) -> &PgPool {
        &self.owner
    }

    /// Whether `table` is a table of schema `public` with an `id` column.
    pub fn has_table(&self, table: &str) -> bool {
        self.tables.contains_key(table)
    }

    pub fn is_tenant_table(&self, table: &str) -> bool {
        self.tables.get(table).copied().unwrap_or(false)
    }

    fn check_table(&self, table: &str) -> Result<String, EvidenceError> {
        if self.tables.contains_key(table) {
            Ok(quote_ident(table))
        } else {
            Err(EvidenceError::UnknownTable(table.to_string()))
        }
    }

    /// The tenant of each of `ids` in `table` (ids absent from the table are absent here).
    pub async fn row_tenants(
        &self,
        table: &str,
        ids: &[i64],
    ) -> Result<HashMap<i64, String>, EvidenceError> {
        if ids.is_empty() || !self.is_tenant_table(table) {
            return Ok(HashMap::new());
        }
        let t = self.check_table(table)?;
        let sql = format!("SELECT id, tenant_id::text FROM public.{t} WHERE id = ANY($1)");
        let rows = sqlx::query(&sql)
            .bind(ids)
            .fetch_all(&self.owner)
            .await
            .map_err(q("look up row owners"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
            .collect())
    }

    /// A digest of every row of `table`, in id order.
    pub async fn digest(&self, table: &str) -> Result<TableDigest, EvidenceError> {
        let t = self.check_table(table)?;
        let sql = format!(
            "SELECT count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '')) FROM public.{t} x"
        );
        let row = sqlx::query(&sql)
            .fetch_one(&self.owner)
            .await
            .map_err(q("snapshot a table"))?;
        Ok(TableDigest {
            table: table.to_string(),
            rows: row.get(0),
            md5: row.get(1),
        })
    }

    /// One row as JSON, or `None`.
    pub async fn row(&self, table: &str, id: i64) -> Result<Option<Value>, EvidenceError> {
        let t = self.check_table(table)?;
        let sql = format!("SELECT to_jsonb(x) FROM public.{t} x WHERE x.id = $1");
        sqlx::query_scalar(&sql)
            .bind(id)
            .fetch_optional(&self.owner)
            .await
            .map_err(q("read a row"))
    }

    /// Puts `fields` of a row back to their values in `before` (after a write scenario, so that
    /// repeats start from the same state). Only columns named in the scenario are touched.
    pub async fn restore(
        &self,
        table: &str,
        id: i64,
        before: &Value,
        fields: &BTreeSet<String>,
    ) -> Result<(), EvidenceError> {
        let t = self.check_table(table)?;
        for f in fields {
            let Some(old) = before.get(f) else { continue };
            // jsonb_populate_record casts the JSON value back to the column's own type.
            let sql = format!(
                "UPDATE public.{t} x SET {c} = (jsonb_populate_record(NULL::public.{t}, $1)).{c} WHERE x.id = $2",
                c = quote_ident(f)
            );
            sqlx::query(&sql)
                .bind(serde_json::json!({ f: old }))
                .bind(id)
                .execute(&self.owner)
                .await
                .map_err(q("restore a row"))?;
        }
        Ok(())
    }

    /// The highest `id` of `table` (`None` when it is empty): rows above it were created later.
    pub async fn max_id(&self, table: &str) -> Result<Option<i64>, EvidenceError> {
        let t = self.check_table(table)?;
        let sql = format!("SELECT max(id)::bigint FROM public.{t}");
        sqlx::query_scalar(&sql)
            .fetch_one(&self.owner)
            .await
            .map_err(q("read the highest id"))
    }

    /// Removes rows `ids` of `table` that were created after the snapshot whose highest id was
    /// `max_id` (an attempt's inserts, so the next attempt starts from the same rows; a row at or
    /// below `max_id` is never touched). Returns how many.
    pub async fn remove_created_rows(
        &self,
        table: &str,
        max_id: Option<i64>,
        ids: &[i64],
    ) -> Result<u64, EvidenceError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let t = self.check_table(table)?;
        let sql = format!("DELETE FROM public.{t} WHERE id = ANY($1) AND id > $2");
        sqlx::query(&sql)
            .bind(ids)
            .bind(max_id.unwrap_or(i64::MIN))
            .execute(&self.owner)
            .await
            .map(|r| r.rows_affected())
            .map_err(q("remove an attempt's rows"))
    }

    /// Inserts a copy of row `id` of `table` (every column but the generated ones and `id`) and
    /// returns the copy's id: a row of the attempt's own, as the write probes create theirs.
    pub async fn copy_row(&self, table: &str, id: i64) -> Result<i64, EvidenceError> {
        let t = self.check_table(table)?;
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 AND column_name <> 'id' \
             AND is_generated = 'NEVER' AND is_identity = 'NO' ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.owner)
        .await
        .map_err(q("read a table's columns"))?;
        let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let cols = cols.join(", ");
        let sql = format!(
            "INSERT INTO public.{t} ({cols}) SELECT {cols} FROM public.{t} WHERE id = $1 RETURNING id"
        );
        sqlx::query_scalar(&sql)
            .bind(id)
            .fetch_optional(&self.owner)
            .await
            .map_err(q("copy a row for the attempt"))?
            .ok_or_else(|| EvidenceError::Query {
                what: format!("copy {table}#{id} for the attempt (no such row)"),
                source: sqlx::Error::RowNotFound,
            })
    }

    /// Deletes row `id` of `table` (an attempt's own copy).
    pub async fn delete_row(&self, table: &str, id: i64) -> Result<(), EvidenceError> {
        let t = self.check_table(table)?;
        sqlx::query(&format!("DELETE FROM public.{t} WHERE id = $1"))
            .bind(id)
            .execute(&self.owner)
            .await
            .map(|_| ())
            .map_err(q("remove the attempt's row"))
    }

    /// The database clock, to mark the start of a run.
    pub async fn now(&self) -> Result<chrono::DateTime<chrono::Utc>, EvidenceError> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.owner)
            .await
            .map_err(q("read the clock"))
    }

    /// Approvals of `tenant` created since `since`; `None` when there is no approvals table.
    pub async fn approvals_since(
        &self,
        tenant: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Vec<ApprovalRow>>, EvidenceError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('preflight_ops.approvals')::text")
                .fetch_one(&self.owner)
                .await
                .map_err(q("look for the approvals table"))?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id::text, model::text, state::text FROM preflight_ops.approvals \
             WHERE tenant_id = $1 AND created_at >= $2 ORDER BY created_at",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(&self.owner)
        .await
        .map_err(q("read approvals"))?;
        Ok(Some(
            rows.iter()
                .map(|r| ApprovalRow {
                    id: r.get(0),
                    model: r.get(1),
                    state: r.get(2),
                })
                .collect(),
        ))
    }

    /// The audit rows carrying `trace_id`; `None` when there is no audit table.
    pub async fn audit_rows(&self, trace_id: &str) -> Result<Option<Vec<AuditRow>>, EvidenceError> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('preflight_audit.audit_log')::text")
                .fetch_one(&self.owner)
                .await
                .map_err(q("look for the audit table"))?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT tool, decision, error_code FROM preflight_audit.audit_log \
             WHERE trace_id = $1 ORDER BY id",
        )
        .bind(trace_id)
        .fetch_all(&self.owner)
        .await
        .map_err(q("read the audit log"))?;
        Ok(Some(
            rows.iter()
                .map(|r| AuditRow {
                    tool: r.get(0),
                    decision: r.get(1),
                    error_code: r.get(2),
                })
                .collect(),
        ))
    }

    /// Canaries that occur in `text` (case-insensitive), longest first, so a ticket body that
    /// quotes an email is attributed to the body.
    pub fn canaries_in<'a>(&'a self, text: &str) -> Vec<&'a Canary> {
        let lower = text.to_lowercase();
        let mut found: Vec<&Canary> = Vec::new();
        for c in &self.canaries {
            let v = c.value.to_lowercase();
            if v.len() >= 4 && lower.contains(&v) {
                // Skip canaries contained in a longer one already found (same tenant quoting).
                if found.iter().any(|f| f.value.to_lowercase().contains(&v)) {
                    continue;
                }
                found.push(c);
            }
        }
        found
    }
}

/// `"name"` with `"` doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
