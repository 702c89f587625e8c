//! `preflight bench audit` end to end with tiny sizes: it runs on a local throwaway database,
//! exits 0 and prints every figure (append rates per sink and path, verify rates with their load
//! times); bad flags exit 2. No timing is asserted: this is a benchmark, not a timed test.

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_preflight");

fn bench(args: &[&str]) -> (Option<i32>, String, String) {
    run_bench("audit", args)
}

/// `preflight bench WHICH ARGS…` with no database in the environment: exit code, stdout, stderr.
pub(crate) fn run_bench(which: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(["bench", which])
        .args(args)
        .env_remove("PREFLIGHT_DB")
        .stdin(Stdio::null())
        .output()
        .expect("run preflight");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn tiny_run_on_a_local_database_prints_every_figure_as_json() {
    let (code, stdout, stderr) = bench(&[
        "--db",
        "local",
        "--rows",
        "100",
        "--writers",
        "2",
        "--records",
        "40",
        "--verify-records",
        "300",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(report["backend"], "local", "{report:#}");
    assert!(
        report["server_settings"]
            .as_str()
            .is_some_and(|s| s.contains("fsync=")),
        "{report:#}"
    );
    let append = report["append"].as_array().expect("append figures");
    let paths: Vec<String> = append
        .iter()
        .map(|a| {
            format!(
                "{}: {}",
                a["sink"].as_str().unwrap(),
                a["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "postgres: autocommit INSERT (sink's own pool)",
            "postgres: BEGIN, INSERT, COMMIT (as in a gateway call)",
            "jsonl: fsync always",
            "jsonl: fsync interval 100ms",
            "jsonl: fsync never",
        ],
        "{report:#}"
    );
    for a in append {
        assert_eq!(a["records"], 40, "{a}");
        assert!(a["records_per_second"].as_f64().unwrap() > 0.0, "{a}");
        assert!(a["goal_met"].is_boolean(), "{a}");
    }
    // The Postgres chain holds both append runs; each JSONL run has a file of its own.
    assert_eq!(append[0]["chain_records"], 40);
    assert_eq!(append[1]["chain_records"], 80);
    assert_eq!(append[2]["chain_records"], 40);

    assert!(
        report["hash_floor"]["single_thread_records_per_second"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{report:#}"
    );
    // stdout stays one JSON document: the summary table went to stderr.
    assert!(stderr.contains("summary (audit bench)"), "{stderr}");
    let verify = report["verify"].as_array().expect("verify figures");
    assert_eq!(verify.len(), 2, "{report:#}");
    assert_eq!(verify[0]["sink"], "postgres");
    // The appends left 80 records; the load tops the chain up to 300.
    assert_eq!(verify[0]["loaded"], 220);
    assert_eq!(verify[0]["records"], 300);
    assert_eq!(verify[1]["sink"], "jsonl");
    assert_eq!(verify[1]["loaded"], 300);
    assert_eq!(verify[1]["records"], 300);
    for v in verify {
        assert!(v["records_per_second"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["load_seconds"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    }
}

#[test]
fn jsonl_only_prints_the_text_table_without_a_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("summary.json");
    let (code, stdout, stderr) = bench(&[
        "--sink",
        "jsonl",
        "--fsync",
        "never",
        "--records",
        "20",
        "--verify-records",
        "100",
        "--json",
        json.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("jsonl: fsync never"),
        "append row missing:\n{stdout}"
    );
    assert!(
        stdout.contains("verify jsonl: 100 records"),
        "verify row missing:\n{stdout}"
    );
    assert!(stdout.contains("records/s"), "{stdout}");
    // The verify goal is 500,000/s or half the measured floor, whichever is lower (checked
    // against the --json file below).
    assert!(stdout.contains("goal >= "), "{stdout}");
    assert!(!stdout.contains("postgres"), "{stdout}");
    // The summary: goal, the measured SHA-256 floor and the figure on one line, and which goal
    // applied.
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("verify jsonl "))
        .unwrap_or_else(|| panic!("no summary line for verify jsonl:\n{stdout}"));
    assert!(line.contains("records/s"), "{line}");
    assert!(
        stdout.contains("goal of verify jsonl: the fixed 500,000 records/s")
            || stdout.contains("goal of verify jsonl: half the SHA-256 floor"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("--json file written"))
            .expect("the --json file is JSON");
    assert_eq!(summary["bench"], "audit");
    let lines = summary["lines"].as_array().expect("summary lines");
    let verify = lines
        .iter()
        .find(|l| l["metric"] == "verify jsonl")
        .expect("verify jsonl in the summary");
    let floor = verify["floor"].as_f64().expect("a measured floor");
    let goal = verify["goal"].as_f64().unwrap();
    assert!(floor > 0.0, "{verify}");
    assert_eq!(goal, (floor / 2.0).min(500_000.0), "{verify}");
    assert_eq!(
        verify["met"].as_bool().unwrap(),
        verify["figure"].as_f64().unwrap() >= goal,
        "{verify}"
    );
}

#[test]
fn bad_flags_exit_2_without_echoing_secrets() {
    let (code, _, stderr) = bench(&["--db", "postgres://bench:hunter2@db.invalid/shop"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("runs only on a throwaway database"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let (code, _, stderr) = bench(&["--writers", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--writers: expected at least 1"),
        "{stderr}"
    );

    let (code, _, stderr) = bench(&["--sink", "kafka"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("kafka"), "{stderr}");
}
