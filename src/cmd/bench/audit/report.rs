//! What `bench audit` measured: the report (printed as text or `--format json`) and the
//! goal/floor/figure summary.

use super::*;

/// Everything the bench measured, as printed (`--format json` prints it as is).
#[derive(Debug, Serialize)]
pub(super) struct AuditBenchReport {
    pub(super) backend: String,
    pub(super) server_version: String,
    /// The server's durability settings: figures on `fsync=off` say nothing about a disk.
    pub(super) server_settings: String,
    /// Cores on this machine and its 1-minute load average when the run started and ended:
    /// other work on the machine slows every figure.
    pub(super) cores: usize,
    pub(super) load_average: [Option<f64>; 2],
    pub(super) writers: usize,
    pub(super) append: Vec<AppendFigure>,
    pub(super) verify: Vec<VerifyFigure>,
    /// SHA-256 over the bytes the verifier hashes, on this machine (when a chain was verified).
    pub(super) hash_floor: Option<HashFloor>,
}

#[derive(Debug, Serialize)]
pub(super) struct AppendFigure {
    /// `postgres` or `jsonl`.
    pub(super) sink: &'static str,
    /// How the records were written (`autocommit`, `transaction`, `fsync always`, ...).
    pub(super) path: String,
    pub(super) records: u64,
    pub(super) seconds: f64,
    pub(super) records_per_second: f64,
    pub(super) goal_records_per_second: f64,
    pub(super) goal_met: bool,
    /// Records in the chain after the phase, all verified.
    pub(super) chain_records: u64,
    #[serde(flatten)]
    pub(super) cpu: Cpu,
}

#[derive(Debug, Serialize)]
pub(super) struct VerifyFigure {
    pub(super) sink: &'static str,
    /// Records loaded to reach the chain length (0 when it was long enough already).
    pub(super) loaded: u64,
    pub(super) load_seconds: f64,
    pub(super) load_records_per_second: f64,
    /// How the chain was loaded.
    pub(super) load_method: String,
    pub(super) records: u64,
    pub(super) seconds: f64,
    pub(super) records_per_second: f64,
    pub(super) goal_records_per_second: f64,
    pub(super) goal_met: bool,
    /// Size of the chain as stored (table with indexes, or the file).
    pub(super) bytes: u64,
    /// The verify's CPU.
    #[serde(flatten)]
    pub(super) cpu: Cpu,
}

/// The goal/floor/figure table: every append and verify figure; verify goals are issue 15's
/// (the fixed goal or half the measured floor, whichever is lower).
pub(super) fn summary(report: &AuditBenchReport) -> Summary {
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

pub(super) fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

pub(super) fn print_text(report: &AuditBenchReport, args: &AuditBenchArgs) {
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
