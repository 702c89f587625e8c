//! Verifying the Postgres log: [`verify_postgres`] streams `COPY ... TO STDOUT (FORMAT binary)` inside one
//! repeatable-read snapshot (so the chain head read beside it is consistent), parses and hashes
//! the rows on worker threads and checks the chain here in id order.

use std::time::Instant;

use futures::StreamExt;
use sqlx::{Connection, PgConnection};

use super::engine::Engine;
use super::pgcopy::{parse_rows, RowSplitter};
use super::report::{
    check_source, db, ChainStart, Checkpoint, VerifyError, VerifyReport, CHECKPOINT_FORMAT,
};
use crate::audit::workers::{verify_threads, Workers};

/// The columns of one row, in canonical order, then prev_hash and hash, in binary (see
/// `pgcopy`): the payload is rendered here, never by the database. The third column is the
/// trigger's own `to_char` text of `at`, sent only for a time outside the years 1 to 9999, which
/// `format_time` does not render as `to_char` does.
const COPY_QUERY: &str = "COPY (SELECT id, at, \
    CASE WHEN at >= '0001-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00' THEN NULL \
         ELSE to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END, \
    trace_id, tenant_id, user_id, roles, tool, arguments, \
    arguments_sha256, decision, error_code, rows_returned, rows_affected, duration_ms, reason, \
    approval_id, approver, policy_hash, subjects, actor, prev_hash, hash \
    FROM preflight_audit.audit_log WHERE id > $START ORDER BY id) TO STDOUT (FORMAT binary)";

/// Verifies `preflight_audit.audit_log` (the connection must be able to read it: the owner).
pub async fn verify_postgres(
    conn: &mut PgConnection,
    checkpoint: Option<Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    check_source(&checkpoint, "postgres")?;
    let t0 = Instant::now();
    let mut tx = conn.begin().await.map_err(db)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let start = read_start(&mut tx).await?;
    let db_head: Option<(i64, String)> =
        sqlx::query_as("SELECT count, hash FROM preflight_audit.chain_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    let mut engine = Engine::new(start.clone(), checkpoint);
    // COPY cannot take bind parameters; the start id is an integer we read ourselves.
    let query = COPY_QUERY.replace("$START", &start.after_id.to_string());
    {
        let mut stream = tx.copy_out_raw(&query).await.map_err(db)?;
        let mut cut_short = false;
        // Rows are parsed and hashed on worker threads, batch by batch; the chain is checked
        // here in id order. Waiting for a batch blocks this task the way checking it inline
        // would.
        let mut workers = Workers::new(verify_threads(), parse_rows);
        let mut buf: Vec<u8> = Vec::with_capacity(COPY_BATCH_BYTES + (64 << 10));
        let mut rows_split = RowSplitter::default();
        let mut position: u64 = 0;
        let mut ended = false;
        let format = |position: u64| move |detail| VerifyError::CopyFormat { position, detail };
        while !engine.done() {
            while !ended && workers.in_flight() < workers.depth() {
                match stream.next().await {
                    Some(chunk) => {
                        buf.extend_from_slice(&chunk.map_err(db)?);
                        rows_split.scan(&mut buf).map_err(format(position + 1))?;
                        if rows_split.whole_bytes() >= COPY_BATCH_BYTES {
                            workers.submit(rows_split.take(&mut buf));
                        }
                    }
                    None => {
                        ended = true;
                        if rows_split.whole_bytes() > 0 {
                            workers.submit(rows_split.take(&mut buf));
                        }
                        if !rows_split.ended {
                            // Rows already parsed come first; the cut is reported after them.
                            cut_short = true;
                        }
                    }
                }
            }
            let Some(rows) = workers.next() else {
                break;
            };
            for row in rows {
                position += 1;
                engine.push(row.map_err(format(position))?);
                if engine.done() {
                    break;
                }
            }
        }
        if cut_short && !engine.done() {
            return Err(format(position + 1)("the COPY stream ended mid-row".into()));
        }
    }
    let done_early = engine.done();
    let report = engine.finish(
        "postgres".to_string(),
        if done_early { None } else { db_head },
        t0,
    );
    // Read-only: nothing to keep, and a broken-off COPY leaves the transaction unusable anyway.
    let _ = tx.rollback().await;
    Ok(report)
}

/// The chain's start: the latest prune cut, cross-checked with the audit record the prune wrote.
async fn read_start(conn: &mut PgConnection) -> Result<ChainStart, VerifyError> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('preflight_audit.chain_checkpoints') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !has_table {
        return Ok(ChainStart::genesis());
    }
    let row: Option<(i64, String, i64, String, String)> = sqlx::query_as(
        "SELECT cut_id, cut_hash, removed, \
                to_char(older_than AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                to_char(pruned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM preflight_audit.chain_checkpoints ORDER BY cut_id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    Ok(match row {
        None => ChainStart::genesis(),
        Some((cut_id, cut_hash, removed, older_than, pruned_at)) => ChainStart {
            after_id: cut_id,
            hash: cut_hash,
            origin: format!(
                "prune checkpoint: {removed} records older than {older_than} removed at {pruned_at}"
            ),
        },
    })
}

/// Bytes of COPY output handed to a worker thread at a time.
const COPY_BATCH_BYTES: usize = 512 * 1024;

/// Reads the current head of the Postgres log for a checkpoint.
pub async fn postgres_head(conn: &mut PgConnection) -> Result<Checkpoint, VerifyError> {
    let (count, hash): (i64, String) =
        sqlx::query_as("SELECT count, hash FROM preflight_audit.chain_head WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(Checkpoint {
        format: CHECKPOINT_FORMAT.to_string(),
        source: "postgres".to_string(),
        head_id: count,
        head_hash: hash,
        created_at: crate::audit::canonical::now_text(),
    })
}
