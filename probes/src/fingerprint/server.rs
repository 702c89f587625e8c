//! The fingerprint the `sql` family takes around every attempt ([`ServerFingerprint`]): the
//! database [`Fingerprint`] (catalog, grants, policies, roles and their settings, a checksum of
//! every table) plus what SQL can change without touching a table: sequence values, large
//! objects, advisory locks still held, temporary relations, prepared transactions, installed
//! extensions and database-wide settings. (When the configuration was last loaded is a
//! per-backend fact, read on one held connection around the attempt: [`conf_load_time`].)
//!
//! Backends are not listed here (the layer's own connections come and go); the family watches
//! a sentinel backend of its own instead ([`Sentinel`]).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

use super::Fingerprint;
use crate::truth::TruthError;

/// The database and the server state SQL can reach, as ground truth sees it.
#[derive(Clone, Debug)]
pub struct ServerFingerprint {
    base: Fingerprint,
    server: BTreeMap<String, String>,
    /// The next transaction id to be assigned, and whether any transaction held one (an open
    /// write) when this fingerprint was taken.
    xids: (String, bool),
    /// Whether `base` was carried over from the earlier fingerprint rather than read.
    pub reused: bool,
}

/// The next transaction id, and whether a transaction that has written (holds an xid) is open.
/// Every change to a table or the catalog assigns a transaction id; sequences, advisory locks
/// and the configuration do not, and are read every time.
async fn xid_state(pool: &PgPool) -> Result<(String, bool), TruthError> {
    sqlx::query_as(
        "SELECT txid_snapshot_xmax(txid_current_snapshot())::text, \
                EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid')",
    )
    .fetch_one(pool)
    .await
    .map_err(q("read the transaction counter"))
}

fn q(what: &str) -> impl FnOnce(sqlx::Error) -> TruthError {
    let what = what.to_string();
    move |source| TruthError::Query { what, source }
}

/// Schemas whose sequences advance on every call of a layer by design (preflight's own audit
/// log and ledgers).
const LEDGER_SCHEMAS: &str = "'preflight_audit', 'preflight_ops'";

impl ServerFingerprint {
    /// Reads the fingerprint; `ignore` are tables (and their sequences) that grow by design,
    /// `earlier` the fingerprint this one will be compared with.
    pub async fn take(
        pool: &PgPool,
        earlier: Option<&ServerFingerprint>,
        ignore: &[(String, String)],
    ) -> Result<Self, TruthError> {
        // The table checksums are the costly part: when no transaction id was assigned since
        // `earlier` and none is open now or was then, nothing can have written a table or the
        // catalog, and `earlier`'s are carried over.
        let xids = xid_state(pool).await?;
        let (base, reused) = match earlier {
            Some(e) if e.xids == xids && !xids.1 => (e.base.clone(), true),
            _ => (
                Fingerprint::take_ignoring(pool, earlier.map(|e| &e.base), ignore).await?,
                false,
            ),
        };
        let ignored: Vec<String> = ignore.iter().map(|(s, t)| format!("{s}.{t}")).collect();
        let mut server = BTreeMap::new();
        let queries: [(&str, String); 7] = [
            (
                "sequences",
                format!(
                    "SELECT format('sequence %I.%I', s.schemaname, s.sequencename), coalesce(s.last_value::text, 'unused') \
                     FROM pg_sequences s \
                     WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', {LEDGER_SCHEMAS}) \
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid \
                                        JOIN pg_namespace tn ON tn.oid = t.relnamespace \
                                       WHERE d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass \
                                         AND d.deptype IN ('a', 'i') AND tn.nspname || '.' || t.relname = ANY($1))"
                ),
            ),
            (
                "large objects",
                "SELECT format('large object %s', m.oid), pg_get_userbyid(m.lomowner)::text FROM pg_largeobject_metadata m \
                 WHERE $1::text[] IS NOT NULL"
                    .to_string(),
            ),
            (
                "advisory locks",
                "SELECT format('advisory lock %s/%s/%s %s', l.classid, l.objid, l.objsubid, l.mode), \
                        format('granted=%s held by %s', l.granted, count(*)) \
                 FROM pg_locks l WHERE l.locktype = 'advisory' AND $1::text[] IS NOT NULL \
                 GROUP BY l.classid, l.objid, l.objsubid, l.mode, l.granted"
                    .to_string(),
            ),
            (
                "temporary relations",
                "SELECT format('temporary relation %s (%s)', c.relname, c.relkind), pg_get_userbyid(c.relowner)::text \
                 FROM pg_class c WHERE c.relpersistence = 't' AND c.relkind IN ('r', 'v', 'm', 'p', 'S') AND $1::text[] IS NOT NULL"
                    .to_string(),
            ),
            (
                "prepared transactions",
                "SELECT format('prepared transaction %s', p.gid), p.owner::text FROM pg_prepared_xacts p WHERE $1::text[] IS NOT NULL"
                    .to_string(),
            ),
            (
                "extensions",
                "SELECT format('extension %I', e.extname), e.extversion FROM pg_extension e WHERE $1::text[] IS NOT NULL"
                    .to_string(),
            ),
            (
                "database settings",
                "SELECT 'database settings', coalesce((SELECT array_to_string(s.setconfig, ',') FROM pg_db_role_setting s \
                   WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())), '') \
                 WHERE $1::text[] IS NOT NULL"
                    .to_string(),
            ),
        ];
        for (what, sql) in queries {
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
                .bind(&ignored)
                .fetch_all(pool)
                .await
                .map_err(q(&format!("fingerprint the server ({what})")))?;
            for (k, v) in rows {
                server.insert(k, v.unwrap_or_default());
            }
        }
        Ok(Self {
            base,
            server,
            xids,
            reused,
        })
    }

    /// What differs from `earlier`, one line per object (empty: identical).
    pub fn diff(&self, earlier: &ServerFingerprint) -> Vec<String> {
        let mut out = self.base.diff(&earlier.base);
        for (k, before) in &earlier.server {
            match self.server.get(k) {
                None => out.push(format!("{k}: gone (was {before})")),
                Some(now) if now != before => out.push(format!("{k}: {before} → {now}")),
                Some(_) => {}
            }
        }
        for (k, now) in &self.server {
            if !earlier.server.contains_key(k) {
                out.push(format!("{k}: new ({now})"));
            }
        }
        out
    }

    /// How many objects the fingerprint covers.
    pub fn len(&self) -> usize {
        self.base.len() + self.server.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When this connection's backend last loaded the server's configuration. A reload
/// (`pg_reload_conf()`) reaches every backend, which re-reads the files before its next command;
/// read it on the same connection before and after an attempt.
pub async fn conf_load_time(conn: &mut PgConnection) -> Result<String, TruthError> {
    sqlx::query_scalar("SELECT pg_conf_load_time()::text")
        .fetch_one(conn)
        .await
        .map_err(q("read when the configuration was loaded"))
}

/// A backend of ground truth's own that sits in `pg_sleep` while an attempt runs: an attempt
/// that cancels or terminates other backends ends its sleep, which the sentinel reports.
pub struct Sentinel {
    pid: i32,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// The `application_name` of the sentinel backend.
pub const SENTINEL_APP: &str = "preflight-sentinel";

impl Sentinel {
    /// Opens a connection of the pool's login and starts it sleeping.
    pub async fn start(pool: &PgPool) -> Result<Sentinel, TruthError> {
        let options = pool.connect_options().as_ref().clone();
        let mut conn = PgConnection::connect_with(&options.application_name(SENTINEL_APP))
            .await
            .map_err(q("open the sentinel backend"))?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(q("read the sentinel's backend id"))?;
        let task = tokio::spawn(async move {
            let r = sqlx::query("SELECT pg_sleep(600)")
                .execute(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = conn.close().await;
            r
        });
        // Let the sleep reach the server before the attempt is made: a sentinel that is not yet
        // sleeping cannot be interrupted, and would hide an attempt that cancels backends.
        let mut sleeping = false;
        for _ in 0..500 {
            let active: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND wait_event = 'PgSleep')",
            )
            .bind(pid)
            .fetch_one(pool)
            .await
            .map_err(q("watch the sentinel backend"))?;
            if active {
                sleeping = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !sleeping {
            task.abort();
            return Err(TruthError::Query {
                what: "start the sentinel backend".to_string(),
                source: sqlx::Error::Protocol(format!(
                    "backend {pid} was not sleeping after 2.5 s"
                )),
            });
        }
        Ok(Sentinel { pid, task })
    }

    /// Stops the sentinel; `Some(what happened)` when something other than this call ended its
    /// sleep (the attempt cancelled or terminated it).
    pub async fn stop(self, pool: &PgPool) -> Result<Option<String>, TruthError> {
        // Interrupted means the sleep ended (the task got its error: a cancel, a closed
        // connection) or the backend left the server. The backend's `state` is no witness: it
        // reads `idle` between the statement's parse and its execution.
        let gone = || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            )
            .bind(self.pid)
            .fetch_one(pool)
            .await
            .map_err(q("watch the sentinel backend"))
        };
        let mut vanished = gone().await?;
        // A signal sent just before the reply may still be on its way: up to 50 ms more.
        for _ in 0..5 {
            if vanished || self.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            vanished = gone().await?;
        }
        if vanished || self.task.is_finished() {
            let what = if self.task.is_finished() {
                match self.task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "its sleep ended early".to_string(),
                    Err(e) => e.to_string(),
                }
            } else {
                self.task.abort();
                "the backend is gone (terminated)".to_string()
            };
            return Ok(Some(format!(
                "the sentinel backend (pid {}) was interrupted: {what}",
                self.pid
            )));
        }
        let _: Option<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(self.pid)
            .fetch_one(pool)
            .await
            .map_err(q("stop the sentinel backend"))?;
        let _ = self.task.await;
        Ok(None)
    }
}
