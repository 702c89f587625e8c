//! The pipelined read path: a read tool's statements sent in as few round trips as their data
//! dependencies allow. Main types: [`Pipeline`] (a pool of agent connections) and [`PipeTx`]
//! (one call's transaction on one of them).
//!
//! sqlx waits for each statement's reply before it sends the next, so a read call cost five round
//! trips (BEGIN, the `set_config` context, the read, the audit INSERT, COMMIT). tokio-postgres
//! sends a request as soon as its future is first polled, and the futures below are polled in
//! the order written, on one connection, so the server receives the statements in that order and
//! answers them in one go:
//!
//! 1. `BEGIN`, the bound `set_config` context (statement timeout, tenant setting) and the first
//!    statement — the read itself, or its `EXPLAIN` when the scan budget must price it first;
//! 2. the read, only when an `EXPLAIN` came first (the budget decides whether it runs at all);
//! 3. the audit `INSERT` (and, for a refused call, `SET LOCAL statement_timeout TO DEFAULT` before
//!    it) and `COMMIT`.
//!
//! The audit record holds the read's outcome (rows returned, subjects, duration), so it cannot be
//! sent before the read's rows are back: two waits per call is the floor, three with an
//! `EXPLAIN`. Every value is still a bind parameter, and a failed audit INSERT still fails the
//! call closed: the COMMIT behind it then only ends an aborted transaction.
//!
//! Every statement is prepared once per connection and kept (deadpool's per-connection statement
//! cache, at most [`STATEMENT_CACHE_MAX`] statements): the first call of a statement text on a
//! connection pays one extra round trip for the prepare, every later one sends only bind and
//! execute. Sending the statements unnamed instead (parsed and planned again on every call) cost
//! more than the round trips the pipeline saves; the audit INSERT alone, re-parsed each time, was
//! slower than the whole read.
//!
//! A connection goes back to the pool only outside a transaction: a transaction the call does not
//! commit is rolled back in a spawned task (off the call's latency) and the connection is closed
//! instead if that fails or if the call is dropped mid-way.
//!
//! tokio-postgres lives only here (sqlx does everything else) because sqlx cannot pipeline. The
//! pool is made only for connections that need no TLS (a Unix socket or a loopback host, or
//! `sslmode=disable`); any other URL keeps every call on the sqlx path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures::future::{join, join3, join_all};
use serde_json::Value;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Config, NoTls, Row, Statement};

use crate::audit::canonical::normalized;
use crate::audit::postgres::INSERT;
use crate::audit::AuditRecord;
use crate::gateway::ToolError;

use super::errors::{self, ErrorContext, ServerError};
use super::sql::Bind;

/// The most statements one pooled connection keeps prepared; past it its cache starts afresh
/// (reads with many filter shapes would otherwise grow it without bound).
pub(crate) const STATEMENT_CACHE_MAX: usize = 256;

/// `text` prepared on `client` with `types`, from the connection's cache when it was prepared
/// before (no round trip), else prepared now and kept.
async fn prepared(
    client: &Object,
    text: &str,
    types: &[Type],
) -> Result<Statement, tokio_postgres::Error> {
    if client.statement_cache.size() >= STATEMENT_CACHE_MAX {
        client.statement_cache.clear();
    }
    client.prepare_typed_cached(text, types).await
}

/// The types of the audit INSERT's 17 binds, in order (see [`INSERT`]).
const INSERT_TYPES: [Type; 17] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
];

/// A pipelined statement's failure; callers only pass it on to [`map_error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("the pipelined transaction was already finished")]
    Finished,
}

/// The transaction-local settings a call's transaction opens with (computed by `CallTx`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings<'a> {
    pub timeout_ms: Option<u64>,
    /// The tenant setting's name and the principal's tenant (`None` only under `rls_disabled`).
    pub tenant: Option<(&'a str, &'a str)>,
}

/// A pool of agent connections for the pipelined read path.
pub(crate) struct Pipeline {
    pool: Pool,
    /// Calls whose statements went through the pipeline (benchmarks and tests read it).
    calls: AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pool for `agent_url`, proven by one connection; `Err` says why the URL stays on the sqlx
    /// path (never with the password).
    pub(crate) async fn connect(
        agent_url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Pipeline, String> {
        let mut config: Config = agent_url
            .parse()
            .map_err(|e| format!("the URL does not parse for the pipelined driver: {e}"))?;
        if !plaintext_is_fine(&config) {
            return Err(
                "the server is neither local nor sslmode=disable, and the pipelined path speaks no TLS"
                    .to_string(),
            );
        }
        config
            .ssl_mode(SslMode::Disable)
            .application_name("preflight-builtin-gateway");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Every connection comes back outside a transaction (see the module docs), so
                // a liveness check is all recycling needs; a query would be a round trip.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1) as usize)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .build()
            .map_err(|e| format!("cannot build the pipelined pool: {e}"))?;
        drop(
            pool.get()
                .await
                .map_err(|e| format!("cannot connect with the pipelined driver: {e}"))?,
        );
        Ok(Pipeline {
            pool,
            calls: AtomicU64::new(0),
        })
    }

    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Publishes the pending table statistics of every pooled session now
    /// (`pg_stat_force_next_flush()`, PostgreSQL 15+): an idle backend may otherwise hold them
    /// for up to ten seconds. Takes every connection of the pool in turn, so it waits for calls
    /// in flight.
    pub(crate) async fn publish_stats(&self) -> Result<(), String> {
        let mut held = Vec::new();
        for _ in 0..self.pool.status().size {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            client
                .batch_execute("SELECT pg_stat_force_next_flush()")
                .await
                .map_err(|e| e.to_string())?;
            held.push(client);
        }
        Ok(())
    }

    /// Opens a transaction with `settings` and runs `text` with `binds` as its first statement,
    /// all in one round trip. The first error in statement order is the result's; the caller
    /// abandons the transaction then.
    pub(crate) async fn begin(
        &self,
        settings: &Settings<'_>,
        text: &str,
        binds: &[Bind],
    ) -> Result<(PipeTx, Result<Vec<Value>, Error>), PoolFailure> {
        let client = self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(_) => PoolFailure::Busy,
            other => PoolFailure::Other(other.to_string()),
        })?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (setup_sql, setup_values) = setup(settings);
        let setup_types = vec![Type::TEXT; setup_values.len()];
        let setup_params: Vec<&(dyn ToSql + Sync)> = setup_values
            .iter()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        let (params, types) = params(binds);
        // The context statement touches no table: preparing it before BEGIN is safe (from the
        // connection's cache after its first call, no round trip).
        let setup_stmt = match setup_sql {
            Some(sql) => match prepared(&client, sql, &setup_types).await {
                Ok(stmt) => Some(stmt),
                // Nothing was begun: the caller's abandon finds no transaction to roll back.
                Err(e) => return Ok((PipeTx::new(client), Err(Error::Db(e)))),
            },
            None => None,
        };
        let setup = async {
            match &setup_stmt {
                Some(stmt) => client.query(stmt, &setup_params).await.map(drop),
                None => Ok(()),
            }
        };
        // The read is prepared inside the transaction, after the context: parsing it takes its
        // tables' locks, which must wait no longer than the statement timeout. From the cache,
        // the read goes out in the same batch as BEGIN and the context.
        let read = async {
            let stmt = prepared(&client, text, &types).await?;
            client.query(&stmt, &params).await
        };
        let (began, set, rows) = join3(client.batch_execute("BEGIN"), setup, read).await;
        let result = began
            .and(set)
            .and(rows)
            .and_then(json_rows)
            .map_err(Error::Db);
        Ok((PipeTx::new(client), result))
    }
}

/// Why no pooled connection could be had.
#[derive(Debug)]
pub(crate) enum PoolFailure {
    /// None came free within the acquire timeout.
    Busy,
    /// Connecting failed (the message names no secret: the pool's errors never carry the URL).
    Other(String),
}

impl PoolFailure {
    pub(crate) fn to_tool_error(&self, trace_id: &str) -> ToolError {
        match self {
            PoolFailure::Busy => errors::busy(trace_id),
            PoolFailure::Other(e) => {
                tracing::error!(trace_id, error = %e, "cannot get a pipelined connection");
                errors::internal(trace_id, "talking to the database")
            }
        }
    }
}

/// The SQL that sets the call's context, and its text binds. The same statements `CallTx` sends
/// on the sqlx path.
fn setup(s: &Settings<'_>) -> (Option<&'static str>, Vec<String>) {
    match (s.timeout_ms, s.tenant) {
        (Some(ms), Some((name, tenant))) => (
            Some("SELECT set_config('statement_timeout', $1, true), set_config($2, $3, true)"),
            vec![ms.to_string(), name.to_string(), tenant.to_string()],
        ),
        (Some(ms), None) => (
            Some("SELECT set_config('statement_timeout', $1, true)"),
            vec![ms.to_string()],
        ),
        (None, Some((name, tenant))) => (
            Some("SELECT set_config($1, $2, true)"),
            vec![name.to_string(), tenant.to_string()],
        ),
        (None, None) => (None, Vec::new()),
    }
}

/// The binds, and the types sqlx gives the same Rust values, so the server infers the same
/// statement.
fn params(binds: &[Bind]) -> (Vec<&(dyn ToSql + Sync)>, Vec<Type>) {
    binds
        .iter()
        .map(|b| -> (&(dyn ToSql + Sync), Type) {
            match b {
                Bind::Text(s) => (s, Type::TEXT),
                Bind::Int(i) => (i, Type::INT8),
                Bind::Bool(v) => (v, Type::BOOL),
                Bind::TextArray(v) => (v, Type::TEXT_ARRAY),
                Bind::IntArray(v) => (v, Type::INT8_ARRAY),
                Bind::BoolArray(v) => (v, Type::BOOL_ARRAY),
            }
        })
        .unzip()
}

/// The first column of every row, as JSON (the read compiler's `to_jsonb(r)`, or an EXPLAIN's
/// plan).
fn json_rows(rows: Vec<Row>) -> Result<Vec<Value>, tokio_postgres::Error> {
    rows.iter().map(|r| r.try_get::<_, Value>(0)).collect()
}

/// Maps a pipelined statement's error exactly as the sqlx path maps its own.
pub(crate) fn map_error(e: &Error, cx: &ErrorContext<'_>) -> ToolError {
    let db = match e {
        Error::Db(e) => e.as_db_error(),
        Error::Finished => None,
    };
    match db {
        Some(db) => errors::map_server(
            &ServerError {
                code: db.code().code(),
                message: db.message(),
                constraint: db.constraint(),
                detail: db.detail(),
                hint: db.hint(),
            },
            cx,
        ),
        None => {
            tracing::error!(trace_id = cx.trace_id, error = %e, "gateway call failed");
            errors::internal(cx.trace_id, "talking to the database")
        }
    }
}

/// How finishing a pipelined transaction failed.
#[derive(Debug)]
pub(crate) enum FinishError {
    /// The audit INSERT (or the statement before it) failed: nothing was committed.
    Audit(Error),
    /// COMMIT itself failed.
    Commit(Error),
}

/// One call's open transaction on a pooled connection.
pub(crate) struct PipeTx {
    /// `None` once committed or abandoned.
    client: Option<Object>,
}

impl std::fmt::Debug for PipeTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTx")
            .field("open", &self.client.is_some())
            .finish()
    }
}

impl PipeTx {
    fn new(client: Object) -> Self {
        Self {
            client: Some(client),
        }
    }

    /// Runs `text` with `binds` in the transaction, one round trip.
    pub(crate) async fn query(&self, text: &str, binds: &[Bind]) -> Result<Vec<Value>, Error> {
        let Some(client) = &self.client else {
            return Err(Error::Finished);
        };
        let (params, types) = params(binds);
        let stmt = prepared(client, text, &types).await.map_err(Error::Db)?;
        client
            .query(&stmt, &params)
            .await
            .and_then(json_rows)
            .map_err(Error::Db)
    }

    /// Appends `record` `inserts` times (once per database sink) and commits, one round trip;
    /// `lift_timeout` first puts the statement timeout back to the role's default (a refused
    /// call's record must not be bound by the agent's budget, as on the sqlx path).
    pub(crate) async fn finish(
        mut self,
        record: &AuditRecord,
        inserts: usize,
        lift_timeout: bool,
    ) -> Result<(), FinishError> {
        let Some(client) = self.client.take() else {
            return Err(FinishError::Audit(Error::Finished));
        };
        let r = normalized(record);
        let decision = r.decision.as_str();
        let insert_params: [&(dyn ToSql + Sync); 17] = [
            &r.trace_id,
            &r.tenant_id,
            &r.user_id,
            &r.roles,
            &r.tool,
            &r.arguments,
            &r.arguments_sha256,
            &decision,
            &r.error_code,
            &r.rows_returned,
            &r.rows_affected,
            &r.duration_ms,
            &r.reason,
            &r.approval_id,
            &r.approver,
            &r.policy_hash,
            &r.subjects,
        ];
        let lift = async {
            if lift_timeout {
                client
                    .batch_execute("SET LOCAL statement_timeout TO DEFAULT")
                    .await
            } else {
                Ok(())
            }
        };
        // Polled after `lift`, so everything here reaches the server after it: parsing the INSERT
        // (on this connection's first call; from its cache after that) takes the log's lock, and
        // a refused call's record must not be bound by the agent's budget. COMMIT goes out only
        // after the INSERTs: in the same batch once the statement is cached, after the prepare's
        // reply otherwise. A failed prepare aborts the transaction; the COMMIT then only ends it.
        let append_and_commit = async {
            let insert = match inserts {
                0 => None,
                _ => match prepared(&client, INSERT, &INSERT_TYPES).await {
                    Ok(stmt) => Some(stmt),
                    Err(e) => return (Err(e), client.batch_execute("COMMIT").await),
                },
            };
            let appends = async {
                match &insert {
                    Some(stmt) => {
                        join_all((0..inserts).map(|_| client.query(stmt, &insert_params)))
                            .await
                            .into_iter()
                            .try_for_each(|r| r.map(drop))
                    }
                    None => Ok(()),
                }
            };
            join(appends, client.batch_execute("COMMIT")).await
        };
        let (lifted, (appended, committed)) = join(lift, append_and_commit).await;
        let audit = lifted.and(appended);
        match (audit, committed) {
            // After a failed statement the COMMIT only ended the aborted transaction: the
            // connection is clean, and nothing was recorded.
            (Err(e), Ok(())) => Err(FinishError::Audit(Error::Db(e))),
            (Ok(()), Ok(())) => Ok(()),
            (audit, Err(e)) => {
                // Whether the transaction ended is unknown: the connection is not reused.
                drop(Object::take(client));
                Err(match audit {
                    Err(a) => FinishError::Audit(Error::Db(a)),
                    Ok(()) => FinishError::Commit(Error::Db(e)),
                })
            }
        }
    }

    /// Rolls the transaction back off the call's latency; the connection returns to the pool
    /// only if the rollback succeeds.
    pub(crate) fn abandon(mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        tracing::warn!(error = %e, "rollback of a pipelined call failed; closing its connection");
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

impl Drop for PipeTx {
    /// A transaction still open here was neither committed nor abandoned (the call was dropped
    /// mid-way): its connection is closed, which ends the transaction on the server, rather
    /// than handed to the next call inside it.
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// Whether connecting without TLS loses nothing: every host is a Unix socket or a loopback
/// address, or the URL itself asks for no TLS.
fn plaintext_is_fine(config: &Config) -> bool {
    if config.get_ssl_mode() == SslMode::Disable {
        return true;
    }
    if config.get_ssl_mode() != SslMode::Prefer || config.get_hosts().is_empty() {
        return false;
    }
    let hosts_local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    let addrs_local = config.get_hostaddrs().iter().all(IpAddr::is_loopback);
    hosts_local && addrs_local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> Config {
        url.parse().expect("url")
    }

    #[test]
    fn only_local_or_explicitly_plain_connections_are_pipelined() {
        assert!(plaintext_is_fine(&parsed(
            "postgres://a:b@127.0.0.1:5432/shop"
        )));
        assert!(plaintext_is_fine(&parsed("postgres://a:b@localhost/shop")));
        assert!(plaintext_is_fine(&parsed("postgres://a:b@[::1]:5432/shop")));
        assert!(plaintext_is_fine(&parsed(
            "postgres://a@/shop?host=/var/run/postgresql"
        )));
        assert!(plaintext_is_fine(&parsed(
            "postgres://a:b@db.example.com/shop?sslmode=disable"
        )));
        assert!(!plaintext_is_fine(&parsed(
            "postgres://a:b@db.example.com/shop"
        )));
        assert!(!plaintext_is_fine(&parsed(
            "postgres://a:b@127.0.0.1/shop?sslmode=require"
        )));
        assert!(!plaintext_is_fine(&parsed(
            "postgres://a:b@localhost/shop?hostaddr=10.0.0.5"
        )));
    }

    #[test]
    fn settings_become_the_same_bound_set_config() {
        let both = Settings {
            timeout_ms: Some(250),
            tenant: Some(("app.tenant_id", "acme")),
        };
        let (sql, values) = setup(&both);
        assert_eq!(
            sql,
            Some("SELECT set_config('statement_timeout', $1, true), set_config($2, $3, true)")
        );
        assert_eq!(values, ["250", "app.tenant_id", "acme"]);
        let none = Settings {
            timeout_ms: None,
            tenant: None,
        };
        assert_eq!(setup(&none), (None, Vec::new()));
    }
}
