//! Ground truth: what the database itself says, read through the owner connection
//! ([`GroundTruth`]).
//!
//! Probes never take the enforcement layer's word for anything. Who owns a row, which canary
//! sits in which cell, what a row looked like before and after a call, which audit records exist
//! and what the catalog says are all read here, with the fixture owner's role (it bypasses
//! row-level security and owns every object). Identifiers come from the policy (which the loader
//! checked against the catalog) and are always quoted; values are always bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use preflight_enforcer::policy::{ModelPolicy, Policy};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::canary::{Canary, CanaryKind, CanarySet};

/// Why a ground-truth read failed.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("cannot connect to the database as the owner")]
    Connect(#[source] sqlx::Error),
    #[error("ground-truth query failed: {what}")]
    Query {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the canary registry could not be compiled")]
    Canaries(#[source] regex::Error),
    #[error("model {0} is not in the policy")]
    UnknownModel(String),
}

impl TruthError {
    fn query(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> TruthError {
        let what = what.into();
        move |source| TruthError::Query { what, source }
    }

    /// True when the failure means the database is gone (connection refused or reset, server
    /// shutting down, pool exhausted by dead connections), not that one query was wrong.
    pub fn is_connection(&self) -> bool {
        match self {
            TruthError::Connect(_) => true,
            TruthError::Query { source, .. } => is_connection_error(source),
            TruthError::Canaries(_) | TruthError::UnknownModel(_) => false,
        }
    }
}

/// Whether a sqlx error means "the server is unreachable" rather than "this statement failed".
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Class 08 (connection exception) and 57P01..57P03 (admin shutdown, crash shutdown,
            // cannot connect now).
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// Double-quotes an identifier, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"` of a model.
pub fn table_ref(model: &ModelPolicy) -> String {
    format!(
        "{}.{}",
        quote_ident(&model.schema),
        quote_ident(&model.table)
    )
}

/// A row key as text: JSON strings bare, numbers as written. Used to compare keys from responses
/// with keys from the database.
pub fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Tables estimated larger than this are never counted in full by ground truth.
const LARGE_TABLE: i64 = 10_000;

/// Counters of one table from `pg_stat_user_tables` plus the planner's size estimate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub reltuples: i64,
    pub seq_scan: i64,
    pub seq_tup_read: i64,
    pub idx_scan: i64,
    pub idx_tup_fetch: i64,
}

impl TableStats {
    pub fn fact(&self, table: &str) -> String {
        format!(
            "{table}: reltuples={} seq_scan={} seq_tup_read={} idx_scan={} idx_tup_fetch={}",
            self.reltuples, self.seq_scan, self.seq_tup_read, self.idx_scan, self.idx_tup_fetch
        )
    }
}

/// The state of some rows of one table at one moment, for "the database is unchanged".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Rows in the whole table (catches inserts and deletes anywhere); `None` for large tables,
    /// where counting would be a full scan that pollutes the statistics the budget probes read
    /// (the highest key still catches inserts there).
    pub count: Option<i64>,
    /// Highest key in the table, as text (catches insert-then-delete of other rows).
    pub max_key: Option<String>,
    /// SHA-256 over the watched rows' JSON, in key order.
    pub rows_hash: String,
    /// The watched rows as JSON (for evidence; redact before reporting).
    pub rows: Vec<Value>,
}

impl Snapshot {
    /// What differs between two snapshots, in words; empty when nothing changed.
    pub fn diff(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        if self.count != after.count {
            let show = |c: Option<i64>| c.map(|c| c.to_string()).unwrap_or_else(|| "?".into());
            out.push(format!(
                "row count {} -> {}",
                show(self.count),
                show(after.count)
            ));
        }
        if self.max_key != after.max_key {
            out.push(format!(
                "highest key {} -> {}",
                self.max_key.as_deref().unwrap_or("none"),
                after.max_key.as_deref().unwrap_or("none")
            ));
        }
        if self.rows_hash != after.rows_hash {
            out.push("watched rows changed".to_string());
        }
        out
    }
}

/// The owner connection plus everything read from it once per run.
#[derive(Debug)]
pub struct GroundTruth {
    pool: PgPool,
    pub canaries: CanarySet,
    /// Tenant ids from the `tenants` table (empty on a database without one).
    pub tenants: Vec<String>,
    /// `reltuples` per `schema.table` at the start of the run.
    sizes: BTreeMap<String, i64>,
    /// `schema.table` of the tables with row-level security enabled at the start of the run.
    row_security: std::collections::BTreeSet<String>,
    /// Ownership cache: (model, key) → tenant (None for global rows); absent = not looked up.
    owners: Mutex<BTreeMap<(String, String), Option<String>>>,
    down: AtomicBool,
}

impl GroundTruth {
    /// Connects as the owner and loads the canary registry, the tenant list and table sizes.
    /// A database without `preflight_meta.canaries` (staging) yields an empty canary set; the
    /// probes that need canaries then report `not_verified`.
    pub async fn connect(owner_url: &str, max_connections: u32) -> Result<Self, TruthError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect(owner_url)
            .await
            .map_err(TruthError::Connect)?;
        Self::from_pool(pool).await
    }

    pub async fn from_pool(pool: PgPool) -> Result<Self, TruthError> {
        let has_registry: bool =
            sqlx::query_scalar("SELECT to_regclass('preflight_meta.canaries') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .map_err(TruthError::query("look up the canary registry"))?;
        let mut canaries = Vec::new();
        if has_registry {
            let rows = sqlx::query(
                "SELECT value, tenant_id::text AS tenant, table_name, column_name, row_id, kind \
                 FROM preflight_meta.canaries",
            )
            .fetch_all(&pool)
            .await
            .map_err(TruthError::query("read the canary registry"))?;
            for r in rows {
                canaries.push(Canary {
                    value: r.get("value"),
                    tenant: r.get("tenant"),
                    table: r.get("table_name"),
                    column: r.get("column_name"),
                    row_id: r.get("row_id"),
                    kind: CanaryKind::parse(r.get::<String, _>("kind").as_str()),
                });
            }
        }
        let canaries = CanarySet::new(canaries).map_err(TruthError::Canaries)?;
        let tenants: Vec<String> =
            if sqlx::query_scalar::<_, bool>("SELECT to_regclass('public.tenants') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .map_err(TruthError::query("look up the tenants table"))?
            {
                sqlx::query_scalar("SELECT id::text FROM public.tenants ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .map_err(TruthError::query("read the tenants"))?
            } else {
                Vec::new()
            };
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT n.nspname || '.' || c.relname, GREATEST(c.reltuples, 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p')",
        )
        .fetch_all(&pool)
        .await
        .map_err(TruthError::query("read table sizes"))?;
        let row_security: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity",
        )
        .fetch_all(&pool)
        .await
        .map_err(TruthError::query("read row-level security flags"))?;
        Ok(Self {
            pool,
            canaries,
            tenants,
            sizes: sizes.into_iter().collect(),
            row_security: row_security.into_iter().collect(),
            owners: Mutex::new(BTreeMap::new()),
            down: AtomicBool::new(false),
        })
    }

    /// The owner pool, for catalog checks and for the probes that plant or tamper on purpose.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The planner's row estimate for a model's table at the start of the run.
    pub fn estimated_rows(&self, model: &ModelPolicy) -> i64 {
        self.sizes
            .get(&format!("{}.{}", model.schema, model.table))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the model's table had row-level security enabled at the start of the run (a
    /// second line of defence: with it, a layer without a tenant predicate still leaks nothing).
    pub fn row_security(&self, model: &ModelPolicy) -> bool {
        self.row_security
            .contains(&format!("{}.{}", model.schema, model.table))
    }

    /// Marks the database as unreachable when `e` says so, and passes the error through.
    pub fn note(&self, e: TruthError) -> TruthError {
        if e.is_connection() {
            self.down.store(true, Ordering::SeqCst);
        }
        e
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// A cheap liveness check with a short deadline; marks the database down on failure.
    pub async fn ping(&self) -> bool {
        let ok = matches!(
            tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&self.pool)
            )
            .await,
            Ok(Ok(1))
        );
        if !ok {
            self.down.store(true, Ordering::SeqCst);
        }
        ok
    }

    fn visible_predicate(model: &ModelPolicy) -> String {
        match &model.soft_delete_column {
            Some(c) => format!(" AND t.{} IS NULL", quote_ident(c)),
            None => String::new(),
        }
    }

    /// Keys of `tenant`'s rows of `model` that a read should be able to see (soft-deleted rows
    /// excluded), lowest first.
    pub async fn keys(
        &self,
        model: &ModelPolicy,
        tenant: &str,
        limit: i64,
    ) -> Result<Vec<Value>, TruthError> {
        let Some(tc) = &model.tenant_column else {
            return self.global_keys(model, limit).await;
        };
        let sql = format!(
            "SELECT to_jsonb(t.{pk}) FROM {table} t WHERE t.{tc}::text = $1{vis} ORDER BY t.{pk} LIMIT $2",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
            tc = quote_ident(tc),
            vis = Self::visible_predicate(model),
        );
        sqlx::query_scalar(&sql)
            .bind(tenant)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!("list keys of {}", model.name)))
            .map_err(|e| self.note(e))
    }

    async fn global_keys(&self, model: &ModelPolicy, limit: i64) -> Result<Vec<Value>, TruthError> {
        let sql = format!(
            "SELECT to_jsonb(t.{pk}) FROM {table} t WHERE true{vis} ORDER BY t.{pk} LIMIT $1",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
            vis = Self::visible_predicate(model),
        );
        sqlx::query_scalar(&sql)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!("list keys of {}", model.name)))
            .map_err(|e| self.note(e))
    }

    /// Keys of `tenant`'s visible rows whose `column` is not null, ordered by `column` (then
    /// key), exactly as the database orders them: the reference for ordering oracles.
    pub async fn keys_ordered_by(
        &self,
        model: &ModelPolicy,
        tenant: &str,
        column: &str,
        descending: bool,
        limit: i64,
    ) -> Result<Vec<Value>, TruthError> {
        let Some(tc) = &model.tenant_column else {
            return Ok(Vec::new());
        };
        let dir = if descending {
            "DESC NULLS LAST"
        } else {
            "ASC NULLS LAST"
        };
        let sql = format!(
            "SELECT to_jsonb(t.{pk}) FROM {table} t \
             WHERE t.{tc}::text = $1 AND t.{col} IS NOT NULL{vis} \
             ORDER BY t.{col} {dir}, t.{pk} LIMIT $2",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
            tc = quote_ident(tc),
            col = quote_ident(column),
            vis = Self::visible_predicate(model),
        );
        sqlx::query_scalar(&sql)
            .bind(tenant)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!(
                "order {} by {column}",
                model.name
            )))
            .map_err(|e| self.note(e))
    }

    /// Number of rows of `model` owned by `tenant` (all rows with `None`), soft-deleted ones
    /// included when `include_deleted`.
    pub async fn count(
        &self,
        model: &ModelPolicy,
        tenant: Option<&str>,
        include_deleted: bool,
    ) -> Result<i64, TruthError> {
        let mut sql = format!("SELECT count(*) FROM {} t WHERE true", table_ref(model));
        if !include_deleted {
            sql.push_str(&Self::visible_predicate(model));
        }
        let q = match (tenant, &model.tenant_column) {
            (Some(t), Some(tc)) => {
                sql.push_str(&format!(" AND t.{}::text = $1", quote_ident(tc)));
                sqlx::query_scalar(&sql).bind(t.to_string())
            }
            _ => sqlx::query_scalar(&sql),
        };
        q.fetch_one(&self.pool)
            .await
            .map_err(TruthError::query(format!("count {}", model.name)))
            .map_err(|e| self.note(e))
    }

    /// Who owns each key (`None` for a row of a global model, absent for a key that does not
    /// exist). Cached for the run: ownership of existing rows never changes under probes.
    pub async fn owners(
        &self,
        model: &ModelPolicy,
        keys: &[Value],
    ) -> Result<BTreeMap<String, Option<String>>, TruthError> {
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.owners.lock().unwrap_or_else(|p| p.into_inner());
            for k in keys {
                let Some(kt) = key_text(k) else { continue };
                match cache.get(&(model.name.clone(), kt.clone())) {
                    Some(owner) => {
                        out.insert(kt, owner.clone());
                    }
                    None => missing.push(k.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let tenant_expr = match &model.tenant_column {
            Some(tc) => format!("t.{}::text", quote_ident(tc)),
            None => "NULL::text".to_string(),
        };
        let sql = format!(
            "SELECT t.{pk}::text, {tenant_expr} FROM {table} t \
             WHERE t.{pk} IN (SELECT r.{pk} FROM jsonb_populate_recordset(NULL::{table}, $1) r)",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
        );
        let records: Vec<Value> = missing
            .iter()
            .map(|k| json!({ model.primary_key.clone(): k }))
            .collect();
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
            .bind(Value::Array(records))
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!(
                "look up owners in {}",
                model.name
            )))
            .map_err(|e| self.note(e))?;
        let mut cache = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        for (k, tenant) in rows {
            cache.insert((model.name.clone(), k.clone()), tenant.clone());
            out.insert(k, tenant);
        }
        Ok(out)
    }

    /// Forgets cached ownership of `keys` (after a probe planted or removed rows).
    pub fn forget(&self, model: &ModelPolicy, keys: &[Value]) {
        let mut cache = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(kt) = key_text(k) {
                cache.remove(&(model.name.clone(), kt));
            }
        }
    }

    /// The full rows (as JSON, every column) with these keys, in key order.
    pub async fn rows(
        &self,
        model: &ModelPolicy,
        keys: &[Value],
    ) -> Result<Vec<Value>, TruthError> {
        let sql = format!(
            "SELECT to_jsonb(t) FROM {table} t \
             WHERE t.{pk} IN (SELECT r.{pk} FROM jsonb_populate_recordset(NULL::{table}, $1) r) \
             ORDER BY t.{pk}",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
        );
        let records: Vec<Value> = keys
            .iter()
            .map(|k| json!({ model.primary_key.clone(): k }))
            .collect();
        sqlx::query_scalar(&sql)
            .bind(Value::Array(records))
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!("read rows of {}", model.name)))
            .map_err(|e| self.note(e))
    }

    /// Table-wide count and highest key plus the watched rows' hash.
    pub async fn snapshot(
        &self,
        model: &ModelPolicy,
        watched: &[Value],
    ) -> Result<Snapshot, TruthError> {
        let max_key = self.max_key(model).await?;
        let count = if self.estimated_rows(model) > LARGE_TABLE {
            None
        } else {
            let sql = format!("SELECT count(*) FROM {}", table_ref(model));
            Some(
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(TruthError::query(format!("count {}", model.name)))
                    .map_err(|e| self.note(e))?,
            )
        };
        let rows = if watched.is_empty() {
            Vec::new()
        } else {
            self.rows(model, watched).await?
        };
        let mut h = Sha256::new();
        for r in &rows {
            h.update(r.to_string().as_bytes());
            h.update([0x1e]);
        }
        Ok(Snapshot {
            count,
            max_key,
            rows_hash: hex::encode(h.finalize()),
            rows,
        })
    }

    /// The highest key of the table, as text (an index lookup for an indexed key).
    pub async fn max_key(&self, model: &ModelPolicy) -> Result<Option<String>, TruthError> {
        let sql = format!(
            "SELECT max(t.{pk})::text FROM {table} t",
            pk = quote_ident(&model.primary_key),
            table = table_ref(model),
        );
        sqlx::query_scalar(&sql)
            .fetch_one(&self.pool)
            .await
            .map_err(TruthError::query(format!(
                "read the highest key of {}",
                model.name
            )))
            .map_err(|e| self.note(e))
    }

    /// `pg_stat_user_tables` counters for a model's table.
    /// Publishes the pending table statistics of ground truth's own sessions now
    /// (`pg_stat_force_next_flush()`, PostgreSQL 15+). A backend publishes its counters when it
    /// goes idle at most once a second, or up to ten seconds later; without this, ground
    /// truth's own full reads (a checksum, a fingerprint) could land in the counters while a
    /// probe watches them and be taken for a scan the layer made. Waits until every pooled
    /// session is idle, then flushes each. `Err` when the login may not call the function (a
    /// staging role): the caller must then allow for its own reads.
    pub async fn publish_own_stats(&self) -> Result<(), TruthError> {
        publish_pool_stats(&self.pool).await
    }

    pub async fn table_stats(&self, model: &ModelPolicy) -> Result<TableStats, TruthError> {
        let row: Option<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT GREATEST(c.reltuples, 0)::bigint, coalesce(s.seq_scan, 0), \
                    coalesce(s.seq_tup_read, 0), coalesce(s.idx_scan, 0), coalesce(s.idx_tup_fetch, 0) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&model.schema)
        .bind(&model.table)
        .fetch_optional(&self.pool)
        .await
        .map_err(TruthError::query(format!("read statistics of {}", model.table)))
        .map_err(|e| self.note(e))?;
        let (reltuples, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch) = row.unwrap_or_default();
        Ok(TableStats {
            reltuples,
            seq_scan,
            seq_tup_read,
            idx_scan,
            idx_tup_fetch,
        })
    }

    /// First columns of the table's indexes, from the catalog.
    pub async fn indexed_columns(&self, model: &ModelPolicy) -> Result<Vec<String>, TruthError> {
        sqlx::query_scalar(
            "SELECT DISTINCT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
             WHERE n.nspname = $1 AND c.relname = $2 ORDER BY 1",
        )
        .bind(&model.schema)
        .bind(&model.table)
        .fetch_all(&self.pool)
        .await
        .map_err(TruthError::query(format!(
            "read indexes of {}",
            model.table
        )))
        .map_err(|e| self.note(e))
    }

    /// Audit records whose trace id is one of `trace_ids`, as JSON objects, in chain order.
    /// `None` when the database has no `preflight_audit.audit_log`.
    pub async fn audit_records(
        &self,
        trace_ids: &[String],
    ) -> Result<Option<Vec<Value>>, TruthError> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('preflight_audit.audit_log') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(TruthError::query("look up the audit log"))
                .map_err(|e| self.note(e))?;
        if !exists {
            return Ok(None);
        }
        let rows: Vec<Value> = sqlx::query_scalar(
            "SELECT to_jsonb(a) - 'prev_hash' - 'hash' FROM preflight_audit.audit_log a \
             WHERE a.trace_id = ANY($1) ORDER BY a.id",
        )
        .bind(trace_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(TruthError::query("read audit records"))
        .map_err(|e| self.note(e))?;
        Ok(Some(rows))
    }

    /// `keys` of `model` in the database's descending order of `column`, each with its dense
    /// rank in that order (equal values share a rank): the reference for ordering oracles.
    pub async fn ranked_by(
        &self,
        model: &ModelPolicy,
        keys: &[Value],
        column: &str,
    ) -> Result<Vec<(Value, i64)>, TruthError> {
        let sql = format!(
            "SELECT to_jsonb(t.{pk}), dense_rank() OVER (ORDER BY t.{col} DESC)::bigint FROM {table} t \
             WHERE t.{pk} IN (SELECT r.{pk} FROM jsonb_populate_recordset(NULL::{table}, $1) r) \
               AND t.{col} IS NOT NULL \
             ORDER BY 2, t.{pk}",
            pk = quote_ident(&model.primary_key),
            col = quote_ident(column),
            table = table_ref(model),
        );
        let records: Vec<Value> = keys
            .iter()
            .map(|k| json!({ model.primary_key.clone(): k }))
            .collect();
        sqlx::query_as(&sql)
            .bind(Value::Array(records))
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!(
                "rank {} by {column}",
                model.name
            )))
            .map_err(|e| self.note(e))
    }

    /// Up to `limit` keys of `tenant`'s visible rows of `model` whose `column` equals `value`
    /// (a JSON scalar), lowest first.
    pub async fn keys_where(
        &self,
        model: &ModelPolicy,
        tenant: &str,
        column: &str,
        value: &Value,
        limit: i64,
    ) -> Result<Vec<Value>, TruthError> {
        let Some(tc) = &model.tenant_column else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT to_jsonb(t.{pk}) FROM {table} t \
             WHERE t.{tc}::text = $1 AND t.{col} = (jsonb_populate_record(NULL::{table}, $2)).{col}{vis} \
             ORDER BY t.{pk} LIMIT $3",
            pk = quote_ident(&model.primary_key),
            tc = quote_ident(tc),
            col = quote_ident(column),
            table = table_ref(model),
            vis = Self::visible_predicate(model),
        );
        sqlx::query_scalar(&sql)
            .bind(tenant)
            .bind(json!({ column: value }))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(TruthError::query(format!(
                "find {} rows by {column}",
                model.name
            )))
            .map_err(|e| self.note(e))
    }

    /// The state of approval request `id` in the approvals store, as the store computes it
    /// (`pending`, `approved`, `rejected`, `expired`, `executed`). `None` when the database has
    /// no `preflight_ops.approvals`; `Some(None)` when it holds no such request.
    pub async fn approval_state(&self, id: &str) -> Result<Option<Option<String>>, TruthError> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('preflight_ops.approvals') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(TruthError::query("look up the approvals store"))
                .map_err(|e| self.note(e))?;
        if !exists {
            return Ok(None);
        }
        let state: Option<String> = sqlx::query_scalar(
            "SELECT preflight_ops.approval_state(a) FROM preflight_ops.approvals a \
             WHERE a.id::text = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(TruthError::query("read an approval request"))
        .map_err(|e| self.note(e))?;
        Ok(Some(state))
    }

    /// Whether some model of the policy returns `table.column` as stored (`allow`), so a canary
    /// of that column may appear in the caller's own responses.
    pub fn column_exposed(policy: &Policy, table: &str, column: &str) -> bool {
        use preflight_enforcer::policy::FieldAction;
        policy
            .models
            .values()
            .filter(|m| m.table == table)
            .any(|m| m.action(column) == Some(FieldAction::Allow))
    }
}

/// Publishes the pending table statistics of every session of `pool` now
/// (`pg_stat_force_next_flush()`, PostgreSQL 15+; the login needs EXECUTE on it). Connections go
/// back to a pool in a task of their own after each use, so this waits (up to 5 s) until every
/// open session is idle, then takes them all, so none is missed or opened anew.
pub async fn publish_pool_stats(pool: &PgPool) -> Result<(), TruthError> {
    let started = std::time::Instant::now();
    while pool.num_idle() < pool.size() as usize && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut held = Vec::new();
    for _ in 0..pool.num_idle() {
        let mut conn = pool
            .acquire()
            .await
            .map_err(TruthError::query("take a pooled session".to_string()))?;
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .map_err(TruthError::query(
                "publish a session's statistics".to_string(),
            ))?;
        held.push(conn);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("orders"), "\"orders\"");
    }

    #[test]
    fn key_text_normalises_numbers_and_strings() {
        assert_eq!(key_text(&json!(5)).as_deref(), Some("5"));
        assert_eq!(key_text(&json!("acme")).as_deref(), Some("acme"));
        assert_eq!(key_text(&json!(null)), None);
    }

    #[test]
    fn snapshot_diff_names_changes() {
        let a = Snapshot {
            count: Some(1),
            max_key: Some("1".into()),
            rows_hash: "x".into(),
            rows: vec![],
        };
        let mut b = a.clone();
        assert!(a.diff(&b).is_empty());
        b.count = Some(2);
        b.rows_hash = "y".into();
        assert_eq!(a.diff(&b).len(), 2);
    }
}
