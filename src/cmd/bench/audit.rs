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

mod jsonl;
mod postgres;
mod record;
mod report;

use jsonl::bench_jsonl;
use postgres::bench_postgres;
use record::bench_record;
use report::{print_text, summary, AuditBenchReport};

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

fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn chain(e: impl std::error::Error) -> String {
    error_chain(&e)
}
