//! The Postgres phases of `bench audit`: appends through the sink (autocommit and in the call's
//! transaction), the set-based load of the verify chain, and the timed verify.

use super::record::POLICY_HASH;
use super::report::{AppendFigure, VerifyFigure};
use super::*;

/// The Postgres phases; `Ok(false)` when a chain did not verify.
pub(super) async fn bench_postgres(
    database: &Database,
    args: &AuditBenchArgs,
    records: &Arc<Vec<AuditRecord>>,
    report: &mut AuditBenchReport,
) -> Result<bool, CliError> {
    let owner = database.owner_pool().await.map_err(db_error)?;
    let settings: (String, String) =
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(&owner)
            .await
            .map_err(|e| CliError::infra(format!("cannot read the server settings: {e}")))?;
    report.server_settings = format!("fsync={} synchronous_commit={}", settings.0, settings.1);
    let writer_pool = PgPoolOptions::new()
        .max_connections(args.writers as u32)
        .connect(database.audit_url())
        .await
        .map_err(|e| CliError::infra(format!("cannot connect as the audit writer: {e}")))?;
    // Open every writer connection now, so the backends whose CPU is counted exist.
    let mut held = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        held.push(
            writer_pool
                .acquire()
                .await
                .map_err(|e| CliError::infra(format!("cannot connect as the audit writer: {e}")))?,
        );
    }
    drop(held);
    // Backend CPU is read from /proc, which shows the server's processes under the pids the
    // server reports only when it runs on this machine outside a container.
    let local = database.info().kind == "local";
    let writer_pids: Vec<i32> = if local {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE usename = 'preflight_audit_writer' AND datname = current_database()",
        )
        .fetch_all(&owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot list the writer backends: {e}")))?
    } else {
        Vec::new()
    };
    let mut intact = true;

    for path in [PgPath::Autocommit, PgPath::Transaction] {
        eprintln!("postgres: {} appends ({}) ...", args.records, path.name());
        let meter = Meter::start(&writer_pids);
        let elapsed = append_postgres(&writer_pool, path, args.writers, records).await?;
        let cpu = meter.stop();
        let report_v = verify_pg(&owner, false).await?.0;
        intact &= check_intact("postgres", &report_v);
        report.append.push(AppendFigure {
            sink: "postgres",
            path: path.name().to_string(),
            records: args.records,
            seconds: elapsed.as_secs_f64(),
            records_per_second: per_second(args.records, elapsed),
            goal_records_per_second: GOAL_POSTGRES,
            goal_met: per_second(args.records, elapsed) >= GOAL_POSTGRES,
            chain_records: report_v.records,
            cpu,
        });
    }

    let existing = chain_count(&owner).await?;
    let to_load = args.verify_records.saturating_sub(existing);
    eprintln!(
        "postgres: loading {to_load} records through the chain trigger (to {} in all) ...",
        existing + to_load
    );
    let t0 = Instant::now();
    load_postgres(&writer_pool, existing, to_load).await?;
    let load = t0.elapsed();
    writer_pool.close().await;
    // Verify reads the table cold from the COPY's point of view but warm in shared buffers and
    // the page cache, as a verify of a live log would; VACUUM sets hint bits first, so the
    // timed read does not write them.
    sqlx::raw_sql("VACUUM (ANALYZE) preflight_audit.audit_log")
        .execute(&owner)
        .await
        .map_err(|e| CliError::infra(format!("vacuum of the audit log failed: {e}")))?;
    eprintln!("postgres: verifying {} records ...", existing + to_load);
    let (v, cpu) = verify_pg(&owner, local).await?;
    intact &= check_intact("postgres", &v);
    let bytes: i64 =
        sqlx::query_scalar("SELECT pg_total_relation_size('preflight_audit.audit_log')")
            .fetch_one(&owner)
            .await
            .map_err(|e| CliError::infra(format!("cannot size the audit log: {e}")))?;
    report.verify.push(VerifyFigure {
        sink: "postgres",
        loaded: to_load,
        load_seconds: load.as_secs_f64(),
        load_records_per_second: per_second(to_load, load),
        load_method: format!(
            "set-based INSERT ... SELECT through the chain trigger, {} rows a transaction",
            thousands(LOAD_CHUNK)
        ),
        records: v.records,
        seconds: v.elapsed.as_secs_f64(),
        records_per_second: v.records_per_second(),
        goal_records_per_second: GOAL_VERIFY,
        goal_met: v.records_per_second() >= GOAL_VERIFY,
        bytes: bytes.max(0) as u64,
        cpu,
    });
    Ok(intact)
}

/// The two ways a Postgres append is made.
#[derive(Clone, Copy, Debug)]
enum PgPath {
    /// `PostgresSink::append(None, ..)`: one autocommit INSERT on the sink's own pool.
    Autocommit,
    /// BEGIN, `PostgresSink::append(Some(tx), ..)`, COMMIT: the gateway's way, where the record
    /// commits with the call.
    Transaction,
}

impl PgPath {
    fn name(self) -> &'static str {
        match self {
            PgPath::Autocommit => "autocommit INSERT (sink's own pool)",
            PgPath::Transaction => "BEGIN, INSERT, COMMIT (as in a gateway call)",
        }
    }
}

/// Runs `writers` tasks appending `records` between them; returns the wall time.
async fn append_postgres(
    pool: &PgPool,
    path: PgPath,
    writers: usize,
    records: &Arc<Vec<AuditRecord>>,
) -> Result<Duration, CliError> {
    let sink = Arc::new(match path {
        PgPath::Autocommit => PostgresSink::with_pool(pool.clone()),
        PgPath::Transaction => PostgresSink::in_transaction(),
    });
    let start = Arc::new(tokio::sync::Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let (sink, pool, records, start) =
            (sink.clone(), pool.clone(), records.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for record in records.iter().skip(w).step_by(writers) {
                match path {
                    PgPath::Autocommit => sink.append(None, record).await.map_err(chain)?,
                    PgPath::Transaction => {
                        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                        sink.append(Some(&mut *tx), record).await.map_err(chain)?;
                        tx.commit().await.map_err(|e| e.to_string())?;
                    }
                }
            }
            Ok::<(), String>(())
        }));
    }
    start.wait().await;
    let t0 = Instant::now();
    join_writers(tasks, "postgres").await?;
    Ok(t0.elapsed())
}

/// Tops the chain up by `n` records with set-based INSERTs that go through the chain trigger
/// (so every record is chained exactly as an append would be).
///
/// Chunks, each its own transaction: the trigger updates the one chain-head row once per
/// record, and versions of a row that the same transaction updated cannot be pruned before it
/// commits, so in one big transaction every head lookup would walk an ever longer chain of
/// dead versions.
async fn load_postgres(pool: &PgPool, after: u64, n: u64) -> Result<(), CliError> {
    const LOAD: &str = "INSERT INTO preflight_audit.audit_log \
        (trace_id, tenant_id, user_id, roles, tool, arguments, arguments_sha256, decision, \
         error_code, rows_returned, rows_affected, duration_ms, reason, approval_id, approver, \
         policy_hash, subjects) \
        SELECT md5(i::text), CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END, \
               'bench-user-' || (i % 8), ARRAY['support'], \
               CASE WHEN i % 3 = 0 THEN 'db_get' ELSE 'db_query' END, \
               CASE WHEN i % 3 = 0 THEN jsonb_build_object('model', 'orders', 'id', i) \
                    ELSE jsonb_build_object('model', 'orders', 'limit', 50, 'where', \
                        jsonb_build_array(jsonb_build_object('field', 'customer_id', 'op', 'eq', \
                                                             'value', i % 1000))) END, \
               encode(sha256(convert_to(i::text, 'UTF8')), 'hex'), \
               CASE WHEN i % 10 = 0 THEN 'deny' ELSE 'allow' END, \
               CASE WHEN i % 10 = 0 THEN 'field_denied' END, \
               CASE WHEN i % 10 = 0 THEN NULL ELSE i % 50 END, NULL, \
               0.25 + (i % 1000) / 100.0, NULL, NULL, NULL, $3, \
               ARRAY['customers:' || (i % 1000)] \
        FROM generate_series($1::bigint, $2::bigint) AS i";
    let mut done = 0;
    while done < n {
        let chunk = LOAD_CHUNK.min(n - done);
        let first = (after + done + 1) as i64;
        sqlx::query(LOAD)
            .bind(first)
            .bind(first + chunk as i64 - 1)
            .bind(POLICY_HASH)
            .execute(pool)
            .await
            .map_err(|e| CliError::infra(format!("loading the audit chain failed: {e}")))?;
        done += chunk;
    }
    Ok(())
}

/// Verifies the Postgres chain; with `measure_backend`, the CPU the backend spent on it too.
async fn verify_pg(owner: &PgPool, measure_backend: bool) -> Result<(VerifyReport, Cpu), CliError> {
    let mut conn = owner
        .acquire()
        .await
        .map_err(|e| CliError::infra(format!("cannot connect as the owner: {e}")))?;
    let pids: Vec<i32> = if measure_backend {
        vec![sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| CliError::infra(format!("cannot read the backend pid: {e}")))?]
    } else {
        Vec::new()
    };
    let meter = Meter::start(&pids);
    let report = verify_postgres(&mut conn, None)
        .await
        .map_err(|e| CliError::infra(error_chain(&e)))?;
    Ok((report, meter.stop()))
}

async fn chain_count(owner: &PgPool) -> Result<u64, CliError> {
    let count: i64 =
        sqlx::query_scalar("SELECT count FROM preflight_audit.chain_head WHERE id = 1")
            .fetch_one(owner)
            .await
            .map_err(|e| CliError::infra(format!("cannot read the chain head: {e}")))?;
    Ok(count.max(0) as u64)
}
