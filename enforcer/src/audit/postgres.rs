//! The Postgres audit sink: one plain `INSERT` into `preflight_audit.audit_log` per record.
//!
//! The database assigns `id`, `at` and `actor` and computes the hash chain in its trigger, so this
//! sink sends only what the gateway knows. It never uses `RETURNING`: the writer role can insert
//! but not read the log (AUD-2). Inside a gateway call the record goes through the call's own
//! transaction, so a write and its record commit together; standalone (tools, benchmarks) it uses
//! its own pool, normally connected as `preflight_audit_writer`.

use std::error::Error as StdError;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::canonical::normalized;
use super::record::{AuditError, AuditRecord, AuditSink, TxUse};

/// The one statement this sink appends a record with; its 17 binds, in order, are the fields of
/// the normalized record (`insert` below, and the pipelined read path of the built-in gateway).
pub(crate) const INSERT: &str = "INSERT INTO preflight_audit.audit_log \
    (trace_id, tenant_id, user_id, roles, tool, arguments, arguments_sha256, decision, error_code, \
     rows_returned, rows_affected, duration_ms, reason, approval_id, approver, policy_hash, subjects) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)";

/// Appends audit records to `preflight_audit.audit_log`.
#[derive(Clone, Debug)]
pub struct PostgresSink {
    /// Used when `append` is called without a transaction.
    pool: Option<PgPool>,
}

impl PostgresSink {
    /// A sink that only writes through the transaction the gateway passes in (the normal case
    /// inside the built-in gateway, whose agent role is a member of `preflight_audit_writer`).
    pub fn in_transaction() -> Self {
        Self { pool: None }
    }

    /// A sink with its own pool, for appends outside a gateway transaction.
    pub fn with_pool(pool: PgPool) -> Self {
        Self { pool: Some(pool) }
    }

    /// Connects a small pool, normally as `preflight_audit_writer` (insert-only).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, AuditError> {
        let options: PgConnectOptions = url.parse().map_err(|e| sink_err(Box::new(e)))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(|e| sink_err(Box::new(e)))?;
        Ok(Self::with_pool(pool))
    }

    pub fn pool(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }
}

fn sink_err(source: Box<dyn StdError + Send + Sync>) -> AuditError {
    AuditError::Sink {
        sink: "postgres",
        source,
    }
}

async fn insert(conn: &mut PgConnection, record: &AuditRecord) -> Result<(), sqlx::Error> {
    let r = normalized(record);
    sqlx::query(INSERT)
        .bind(&r.trace_id)
        .bind(&r.tenant_id)
        .bind(&r.user_id)
        .bind(&r.roles)
        .bind(&r.tool)
        .bind(&r.arguments)
        .bind(&r.arguments_sha256)
        .bind(r.decision.as_str())
        .bind(&r.error_code)
        .bind(r.rows_returned)
        .bind(r.rows_affected)
        .bind(r.duration_ms)
        .bind(&r.reason)
        .bind(&r.approval_id)
        .bind(&r.approver)
        .bind(&r.policy_hash)
        .bind(&r.subjects)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl AuditSink for PostgresSink {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn append(
        &self,
        tx: Option<&mut PgConnection>,
        record: &AuditRecord,
    ) -> Result<(), AuditError> {
        match (tx, &self.pool) {
            (Some(conn), _) => insert(conn, record)
                .await
                .map_err(|e| sink_err(Box::new(e))),
            (None, Some(pool)) => {
                let mut conn = pool.acquire().await.map_err(|e| sink_err(Box::new(e)))?;
                insert(&mut conn, record)
                    .await
                    .map_err(|e| sink_err(Box::new(e)))
            }
            (None, None) => Err(sink_err(
                "the postgres audit sink was given no transaction and has no pool of its own"
                    .into(),
            )),
        }
    }

    fn tx_use(&self) -> TxUse {
        TxUse::AuditLogInsert
    }

    async fn health(&self) -> Result<String, AuditError> {
        let Some(pool) = &self.pool else {
            return Ok("writes through the call's transaction".to_string());
        };
        let can_insert: bool =
            sqlx::query_scalar("SELECT has_table_privilege('preflight_audit.audit_log', 'INSERT')")
                .fetch_one(pool)
                .await
                .map_err(|e| sink_err(Box::new(e)))?;
        if can_insert {
            Ok("ok (insert privilege on preflight_audit.audit_log)".to_string())
        } else {
            Err(sink_err(
                "the connected role cannot insert into preflight_audit.audit_log".into(),
            ))
        }
    }
}
