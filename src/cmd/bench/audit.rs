//! `preflight bench audit`: how fast the audit sinks append and how fast a chain verifies.
//!
//! Provisions a throwaway shop database, then:
//!
//! 1. **Append.** `--writers` tasks share one sink and append `--records` records between them,
//!    as fast as they can: the Postgres sink (each record one `INSERT` through the hash-chain
//!    trigger, autocommit on the sink's own pool, and again inside a `BEGIN … COMMIT` per record
//!    as the gateway does it), and the JSONL sink under each `--fsync` policy. Records are built
//!    before the clock starts; the chain is verified afterwards, untimed, so a fast but broken
//!    append cannot pass.
//! 2. **Verify.** The chain is topped up to `--verify-records` records (Postgres: set-based
//!    `INSERT … SELECT` through the same trigger, in chunks; JSONL: the sink's own append, fsync
//!    off), that load timed on its own, then `verify_postgres` / `verify_jsonl` timed over the
//!    whole chain.
//!
//! 3. **Floor.** SHA-256 over the bytes the verifier hashes, on one thread and on the verifier's
//!    thread count (`floor`): the verify goal is issue 15's, 500,000 records/s or half that
//!    floor, whichever is lower.
//!
//! Every figure is printed with its goal (append goals from issue 4) and whether it was met,
//! then the goal/floor/figure summary (`summary`, `--json FILE`). Goals are not
//! assertions: the command exits 0 whenever it ran and every chain verified (1 when a chain did
//! not: that is a defect, not a slow machine).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use preflight_enforcer::audit::{
    arguments_sha256, verify_jsonl, verify_postgres, AuditRecord, AuditSink, Decision, FsyncPolicy,
    JsonlSink, PostgresSink, VerifyReport,
};
use preflight_probes::db::{provision, Database, Db};
use serde::Serialize;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::cpu::{cpu_text, Cpu, Meter};
use super::floor::{self, HashFloor};
use super::summary::{load_average, Better, Line, Summary, SummaryArgs};
use super::{error_chain, thousands};
use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

/// Postgres appends per second the issue asks for.
const GOAL_POSTGRES: f64 = 2_000.0;
/// JSONL appends per second the issue asks for.
const GOAL_JSONL: f64 = 50_000.0;
/// Records verified per second the issue asks for (either source).
const GOAL_VERIFY: f64 = 500_000.0;

/// How often the `interval` fsync policy syncs.
const FSYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Rows per set-based INSERT when loading the Postgres chain (one transaction each; see
/// `load_postgres` for why not one big one).
const LOAD_CHUNK: u64 = 500;

#[derive(Args, Debug)]
// The bench needs the fixtures' audit schema, not a large orders table.
#[command(mut_arg("rows", |a| a.default_value("1000")))]
pub struct AuditBenchArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Concurrent writers in the append phase (tasks sharing one sink).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub writers: usize,

    /// Records appended per sink (and per fsync policy) in the append phase.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub records: u64,

    /// Records in the chain each verify phase reads.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub verify_records: u64,

    /// Which sinks to measure.
    #[arg(long, value_enum, default_value_t = SinkArg::All)]
    pub sink: SinkArg,

    /// The JSONL sink's fsync policies to measure appends under, comma-separated (`interval`
    /// syncs at most every 100 ms).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "always,interval,never",
        value_name = "POLICY,..."
    )]
    pub fsync: Vec<FsyncArg>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    pub format: FormatArg,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SinkArg {
    Postgres,
    Jsonl,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// `fdatasync` before each append returns, shared by concurrent writers (the default).
    Always,
    /// At most every 100 ms.
    Interval,
    /// Never (the kernel flushes when it likes).
    Never,
}

impl FsyncArg {
    fn policy(self) -> FsyncPolicy {
        match self {
            FsyncArg::Always => FsyncPolicy::Always,
            FsyncArg::Interval => FsyncPolicy::Interval(FSYNC_INTERVAL),
            FsyncArg::Never => FsyncPolicy::Never,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FsyncArg::Always => "always",
            FsyncArg::Interval => "interval 100ms",
            FsyncArg::Never => "never",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

/// Everything the bench measured, as printed (`--format json` prints it as is).
#[derive(Debug, Serialize)]
struct AuditBenchReport {
    backend: String,
    server_version: String,
    /// The server's durability settings: figures on `fsync=off` say nothing about a disk.
    server_settings: String,
    /// Cores on this machine and its 1-minute load average when the run started and ended:
    /// other work on the machine slows every figure.
    cores: usize,
    load_average: [Option<f64>; 2],
    writers: usize,
    append: Vec<AppendFigure>,
    verify: Vec<VerifyFigure>,
    /// SHA-256 over the bytes the verifier hashes, on this machine (when a chain was verified).
    hash_floor: Option<HashFloor>,
}

#[derive(Debug, Serialize)]
struct AppendFigure {
    /// `postgres` or `jsonl`.
    sink: &'static str,
    /// How the records were written (`autocommit`, `transaction`, `fsync always`, ...).
    path: String,
    records: u64,
    seconds: f64,
    records_per_second: f64,
    goal_records_per_second: f64,
    goal_met: bool,
    /// Records in the chain after the phase, all verified.
    chain_records: u64,
    #[serde(flatten)]
    cpu: Cpu,
}

#[derive(Debug, Serialize)]
struct VerifyFigure {
    sink: &'static str,
    /// Records loaded to reach the chain length (0 when it was long enough already).
    loaded: u64,
    load_seconds: f64,
    load_records_per_second: f64,
    /// How the chain was loaded.
    load_method: String,
    records: u64,
    seconds: f64,
    records_per_second: f64,
    goal_records_per_second: f64,
    goal_met: bool,
    /// Size of the chain as stored (table with indexes, or the file).
    bytes: u64,
    /// The verify's CPU.
    #[serde(flatten)]
    cpu: Cpu,
}

pub async fn run(args: AuditBenchArgs) -> CmdResult {
    if args.writers == 0 {
        return Err(CliError::config("--writers: expected at least 1"));
    }
    if args.records < args.writers as u64 {
        return Err(CliError::config(format!(
            "--records: expected at least one record per writer ({}), got {}",
            args.writers, args.records
        )));
    }
    if args.fsync.is_empty() {
        return Err(CliError::config(
            "--fsync: expected one or more of always, interval, never",
        ));
    }
    let (db, fixtures) = args.db.to_db()?;
    if matches!(db, Db::Url { .. }) {
        // The log is append-only by design: bench records written there could never be removed.
        return Err(CliError::config(
            "--db: the audit bench appends records that can never be removed (the log is \
             append-only), so it runs only on a throwaway database: auto, container or local",
        ));
    }
    let postgres = matches!(args.sink, SinkArg::Postgres | SinkArg::All);
    let jsonl = matches!(args.sink, SinkArg::Jsonl | SinkArg::All);

    // The records every append phase writes, built before any clock starts.
    let records: Arc<Vec<AuditRecord>> = Arc::new((0..args.records).map(bench_record).collect());

    let mut report = AuditBenchReport {
        backend: String::new(),
        server_version: String::new(),
        server_settings: String::new(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: [load_average(), None],
        writers: args.writers,
        append: Vec::new(),
        verify: Vec::new(),
        hash_floor: None,
    };
    let mut intact = true;

    if postgres {
        eprintln!("provisioning a throwaway database ...");
        let database = provision(&db, &fixtures).await.map_err(db_error)?;
        report.backend = database.info().kind.clone();
        report.server_version = database.info().server_version.clone();
        let result = bench_postgres(&database, &args, &records, &mut report).await;
        // Close every connection of ours before the server is torn down under them.
        if let Ok(pool) = database.owner_pool().await {
            pool.close().await;
        }
        intact &= result?;
    }
    if jsonl {
        let dir = tempfile::Builder::new()
            .prefix("preflight-bench-audit-")
            .tempdir()
            .map_err(|e| CliError::infra(format!("cannot create a temporary folder: {e}")))?;
        intact &= bench_jsonl(dir.path(), &args, &records, &mut report).await?;
    }

    if !report.verify.is_empty() {
        eprintln!("measuring the SHA-256 floor on the chain's own bytes ...");
        let f = floor::of_bench_records(args.verify_records, bench_record).await?;
        // Issue 15's goal: the fixed rate or half the floor, whichever is lower.
        let (goal, _) = floor::verify_goal(GOAL_VERIFY, f.threaded_records_per_second);
        for v in &mut report.verify {
            v.goal_records_per_second = goal;
            v.goal_met = v.records_per_second >= goal;
        }
        report.hash_floor = Some(f);
    }
    report.load_average[1] = load_average();
    let summary = summary(&report);
    match args.format {
        FormatArg::Text => print_text(&report, &args),
        FormatArg::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::infra(format!("cannot render the report: {e}")))?
        ),
    }
    // With --format json, stdout is one JSON document: the table goes to stderr.
    summary.emit_to(&args.summary, args.format == FormatArg::Json)?;
    if !intact {
        eprintln!("error: a chain written by the bench did not verify (see above): a defect");
    }
    Ok(Outcome::from_all_passed(intact))
}

/// The Postgres phases; `Ok(false)` when a chain did not verify.
async fn bench_postgres(
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

/// The JSONL phases; `Ok(false)` when a chain did not verify.
async fn bench_jsonl(
    dir: &Path,
    args: &AuditBenchArgs,
    records: &Arc<Vec<AuditRecord>>,
    report: &mut AuditBenchReport,
) -> Result<bool, CliError> {
    let mut intact = true;
    let mut seen = Vec::new();
    for fsync in args.fsync.iter().copied() {
        if seen.contains(&fsync) {
            continue;
        }
        seen.push(fsync);
        eprintln!(
            "jsonl: {} appends (fsync {}) ...",
            args.records,
            fsync.name()
        );
        let path = dir.join(format!("append-{}.jsonl", seen.len()));
        let sink = Arc::new(open_jsonl(&path, fsync.policy())?);
        let meter = Meter::start(&[]);
        let elapsed = append_jsonl(&sink, args.writers, records).await?;
        let cpu = meter.stop();
        drop(sink);
        let v = verify_file(&path).await?;
        intact &= check_intact("jsonl", &v);
        let rate = per_second(args.records, elapsed);
        report.append.push(AppendFigure {
            sink: "jsonl",
            path: format!("fsync {}", fsync.name()),
            records: args.records,
            seconds: elapsed.as_secs_f64(),
            records_per_second: rate,
            goal_records_per_second: GOAL_JSONL,
            goal_met: rate >= GOAL_JSONL,
            chain_records: v.records,
            cpu,
        });
        let _ = std::fs::remove_file(&path);
    }

    let path = dir.join("verify.jsonl");
    let n = args.verify_records;
    eprintln!("jsonl: writing {n} records through the sink ...");
    let t0 = Instant::now();
    {
        let sink = open_jsonl(&path, FsyncPolicy::Never)?;
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            for i in 0..n {
                sink.append_blocking(&bench_record(i))
                    .map_err(|e| error_chain(&e))?;
            }
            sink.flush().map_err(|e| error_chain(&e))
        })
        .await
        .map_err(|e| CliError::infra(format!("the JSONL loader stopped: {e}")))?
        .map_err(|e| CliError::infra(format!("{shown}: {e}")))?;
    }
    let load = t0.elapsed();
    eprintln!("jsonl: verifying {n} records ...");
    let meter = Meter::start(&[]);
    let v = verify_file(&path).await?;
    let cpu = meter.stop();
    intact &= check_intact("jsonl", &v);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    report.verify.push(VerifyFigure {
        sink: "jsonl",
        loaded: n,
        load_seconds: load.as_secs_f64(),
        load_records_per_second: per_second(n, load),
        load_method: "JsonlSink::append_blocking, one thread, fsync never (one flush at the end)"
            .to_string(),
        records: v.records,
        seconds: v.elapsed.as_secs_f64(),
        records_per_second: v.records_per_second(),
        goal_records_per_second: GOAL_VERIFY,
        goal_met: v.records_per_second() >= GOAL_VERIFY,
        bytes,
        cpu,
    });
    Ok(intact)
}

fn open_jsonl(path: &Path, fsync: FsyncPolicy) -> Result<JsonlSink, CliError> {
    JsonlSink::open(path, "preflight-bench", fsync).map_err(|e| CliError::infra(error_chain(&e)))
}

/// Runs `writers` tasks appending `records` between them through the async sink API (the
/// gateway's path); returns the wall time.
async fn append_jsonl(
    sink: &Arc<JsonlSink>,
    writers: usize,
    records: &Arc<Vec<AuditRecord>>,
) -> Result<Duration, CliError> {
    let start = Arc::new(tokio::sync::Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let (sink, records, start) = (sink.clone(), records.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for record in records.iter().skip(w).step_by(writers) {
                sink.append(None, record).await.map_err(chain)?;
            }
            Ok::<(), String>(())
        }));
    }
    start.wait().await;
    let t0 = Instant::now();
    join_writers(tasks, "jsonl").await?;
    // Every append has returned, so under `always` every record is synced; the other policies
    // promise nothing more, and the figure is what a caller waits for.
    Ok(t0.elapsed())
}

async fn verify_file(path: &Path) -> Result<VerifyReport, CliError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || verify_jsonl(&owned, None))
        .await
        .map_err(|e| CliError::infra(format!("the JSONL verifier stopped: {e}")))?
        .map_err(|e| CliError::infra(error_chain(&e)))
}

async fn join_writers(
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    sink: &str,
) -> Result<(), CliError> {
    for t in tasks {
        t.await
            .map_err(|e| CliError::infra(format!("a {sink} writer stopped: {e}")))?
            .map_err(|e| CliError::infra(format!("a {sink} append failed: {e}")))?;
    }
    Ok(())
}

fn check_intact(sink: &str, v: &VerifyReport) -> bool {
    if let Some(b) = &v.first_break {
        eprintln!(
            "error: the {sink} chain does not verify: {} at record {} (position {}): {}",
            b.kind.as_str(),
            b.id,
            b.position,
            b.detail
        );
        return false;
    }
    true
}

/// The goal/floor/figure table: every append and verify figure; verify goals are issue 15's
/// (the fixed goal or half the measured floor, whichever is lower).
fn summary(report: &AuditBenchReport) -> Summary {
    let mut lines = Vec::new();
    for a in &report.append {
        lines.push(Line::new(
            format!("append {}: {}", a.sink, a.path),
            "records/s",
            Better::Higher,
            a.goal_records_per_second,
            a.records_per_second,
        ));
    }
    for v in &report.verify {
        let metric = format!("verify {}", v.sink);
        let line = match &report.hash_floor {
            Some(f) => {
                let (goal, basis) = floor::verify_goal(GOAL_VERIFY, f.threaded_records_per_second);
                Line::new(
                    metric,
                    "records/s",
                    Better::Higher,
                    goal,
                    v.records_per_second,
                )
                .floor(f.threaded_records_per_second)
                .basis(format!(
                    "{basis}; floor = SHA-256 of the chain's bytes ({:.0} B/record) on {} \
                         thread(s), {} records/s on one",
                    f.bytes_per_record,
                    f.threads,
                    thousands(f.single_thread_records_per_second.round() as u64)
                ))
            }
            None => Line::new(
                metric,
                "records/s",
                Better::Higher,
                GOAL_VERIFY,
                v.records_per_second,
            ),
        };
        lines.push(line);
    }
    Summary::new("audit", lines)
}

const POLICY_HASH: &str = "5f1b0e3c9a7d2468ace013579bdf2468ace013579bdf2468ace013579bdf2468";

/// The `i`-th record of the bench: what a `db_get` or filtered `db_query` call leaves, with the
/// same shape the Postgres loader gives its rows (a tenant, a user, one role, arguments with a
/// filter, a subject), so both chains hold records of about the same size.
fn bench_record(i: u64) -> AuditRecord {
    let arguments = if i.is_multiple_of(3) {
        json!({"model": "orders", "id": i})
    } else {
        json!({"model": "orders", "where": [{"field": "customer_id", "op": "eq", "value": i % 1000}], "limit": 50})
    };
    let denied = i.is_multiple_of(10);
    AuditRecord {
        trace_id: format!(
            "{:032x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        ),
        tenant_id: if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        }
        .to_string(),
        user_id: format!("bench-user-{}", i % 8),
        roles: vec!["support".to_string()],
        tool: if i.is_multiple_of(3) {
            "db_get"
        } else {
            "db_query"
        }
        .to_string(),
        arguments_sha256: arguments_sha256(&arguments),
        arguments,
        decision: if denied {
            Decision::Deny
        } else {
            Decision::Allow
        },
        error_code: denied.then(|| "field_denied".to_string()),
        rows_returned: (!denied).then_some((i % 50) as i64),
        rows_affected: None,
        duration_ms: 0.25 + (i % 1000) as f64 / 100.0,
        reason: None,
        approval_id: None,
        approver: None,
        policy_hash: POLICY_HASH.to_string(),
        subjects: vec![format!("customers:{}", i % 1000)],
    }
}

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn print_text(report: &AuditBenchReport, args: &AuditBenchArgs) {
    println!(
        "preflight bench audit: {} concurrent writer(s), {} records per append run, chains of {} for verify",
        report.writers,
        thousands(args.records),
        thousands(args.verify_records)
    );
    if !report.backend.is_empty() {
        println!(
            "database: {} ({}), {}",
            report.backend, report.server_version, report.server_settings
        );
    }
    let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    println!(
        "machine: {} cores, 1-minute load average {} at the start and {} at the end",
        report.cores,
        load(report.load_average[0]),
        load(report.load_average[1])
    );
    println!("cpu: microseconds of CPU per record, this process / the database backends");
    println!();
    println!(
        "{:<58} {:>8} {:>8} {:>10}  {:<22} {:>15}",
        "append: sink, path", "records", "seconds", "records/s", "goal", "cpu"
    );
    for a in &report.append {
        println!(
            "{:<58} {:>8} {:>8.3} {:>10}  {:<22} {:>15}",
            format!("{}: {}", a.sink, a.path),
            thousands(a.records),
            a.seconds,
            thousands(a.records_per_second.round() as u64),
            format!(
                ">= {}/s {}",
                thousands(a.goal_records_per_second as u64),
                met(a.goal_met)
            ),
            cpu_text(&a.cpu, a.records)
        );
    }
    for v in &report.verify {
        println!();
        println!(
            "verify {}: {} records ({:.1} MB) in {:.3} s: {} records/s, goal >= {}/s {}; cpu {}",
            v.sink,
            thousands(v.records),
            v.bytes as f64 / 1e6,
            v.seconds,
            thousands(v.records_per_second.round() as u64),
            thousands(v.goal_records_per_second as u64),
            met(v.goal_met),
            cpu_text(&v.cpu, v.records)
        );
        println!(
            "  load (not in the figure): {} records in {:.2} s, {} records/s, {}",
            thousands(v.loaded),
            v.load_seconds,
            thousands(v.load_records_per_second.round() as u64),
            v.load_method
        );
    }
}

fn chain(e: impl std::error::Error) -> String {
    error_chain(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_records_are_distinct_and_well_formed() {
        let a = bench_record(1);
        let b = bench_record(2);
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.trace_id.len(), 32);
        assert_eq!(bench_record(10).decision, Decision::Deny);
        assert_eq!(bench_record(10).error_code.as_deref(), Some("field_denied"));
        assert_eq!(a.arguments_sha256, arguments_sha256(&a.arguments));
    }
}
