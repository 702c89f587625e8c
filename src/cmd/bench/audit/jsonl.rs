//! The JSONL phases of `bench audit`: appends under each fsync policy, the load of the verify
//! chain through the sink, and the timed verify.

use super::report::{AppendFigure, VerifyFigure};
use super::*;

/// The JSONL phases; `Ok(false)` when a chain did not verify.
pub(super) async fn bench_jsonl(
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
