//! `preflight probe` end to end, through the built binary: a clean run writes every report
//! file and exits 0; bad flags exit 2; a database that dies mid-run ends in `error` findings, a
//! written report and exit 3, never a pass.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_probes::db::testing;

const BIN: &str = env!("CARGO_BIN_EXE_preflight");

fn report_findings(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&text).expect("report.json is JSON");
    report["findings"].as_array().cloned().unwrap_or_default()
}

#[test]
fn unknown_family_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["probe", "--only", "pii,nope"])
        .output()
        .expect("run preflight");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown family \"nope\""), "{err}");
}

#[test]
fn a_clean_run_writes_every_report_file_and_exits_0() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--only", "hygiene,lint", "--out"])
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for file in [
        "report.json",
        "report.md",
        "report.html",
        "junit.xml",
        "results.sarif",
        "checklist.md",
    ] {
        assert!(out_dir.path().join(file).is_file(), "{file} missing");
    }
    let findings = report_findings(out_dir.path());
    assert!(findings.iter().all(|f| f["verdict"] == "pass"));
    assert!(findings.iter().any(|f| f["family"] == "hygiene"));
    assert!(findings.iter().any(|f| f["family"] == "lint"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_mid_run_ends_in_errors_a_report_and_exit_3() {
    let db = testing::database().await;
    let out_dir = tempfile::tempdir().expect("temp dir");
    // The URLs go through the environment, not the command line (visible to other users).
    let mut child = Command::new(BIN)
        .args(["probe", "--allow-writes", "--jobs", "2", "--out"])
        .arg(out_dir.path())
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start preflight");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut log = Vec::new();
    // Wait until the probes are running, give them a moment, then take the server down.
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("preflight never started probing:\n{}", log.join("\n")));
        let started = line.starts_with("probing ");
        log.push(line);
        if started {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    db.stop_server().expect("stop the server");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "preflight did not exit after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert_eq!(status.code(), Some(3), "exit status {status:?}\n{log}");
    assert!(log.contains("unreachable"), "{log}");
    let findings = report_findings(out_dir.path());
    assert!(!findings.is_empty(), "the report has no findings");
    let errors = findings.iter().filter(|f| f["verdict"] == "error").count();
    assert!(errors > 0, "no error finding in the report");
    assert!(
        findings.iter().any(|f| f["verdict"] == "error"
            && f["message"]
                .as_str()
                .unwrap_or_default()
                .contains("unreachable")),
        "no finding says the database was unreachable"
    );
    for file in [
        "report.md",
        "report.html",
        "junit.xml",
        "results.sarif",
        "checklist.md",
    ] {
        assert!(out_dir.path().join(file).is_file(), "{file} missing");
    }
}

/// `preflight probe --self-test` through the binary: every probe instance is killed by its
/// declared controls (the kill matrix says 100%), every control is undone exactly, the report
/// says so finding by finding, and the run exits 0.
#[test]
fn the_self_test_kills_every_instance_and_exits_0() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["probe", "--db", "local", "--self-test", "--out"])
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    let totals = stdout
        .lines()
        .find(|l| l.starts_with("killed "))
        .unwrap_or_else(|| panic!("no kill totals in:\n{stdout}"));
    // "killed N of N instances (100%) with C controls"
    let words: Vec<&str> = totals.split_whitespace().collect();
    let (killed, instances): (usize, usize) = (
        words[1].parse().expect("killed count"),
        words[3].parse().expect("instance count"),
    );
    assert!(instances > 100, "{totals}");
    assert_eq!(killed, instances, "{totals}\n{stdout}");
    assert!(totals.contains("(100%)"), "{totals}");
    assert!(stderr.contains("self-test passed"), "{stderr}");
    let findings = report_findings(out_dir.path());
    let per_code: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| f["code"] == "self_test.instances_killed")
        .collect();
    assert!(per_code.len() > 30, "{} codes", per_code.len());
    let controls = findings
        .iter()
        .filter(|f| f["code"] == "self_test.control")
        .count();
    assert!(controls >= 30, "{controls} controls");
    let not_pass: Vec<String> = findings
        .iter()
        .filter(|f| f["verdict"] != "pass")
        .map(|f| format!("{} {}: {}", f["code"], f["title"], f["message"]))
        .collect();
    assert!(not_pass.is_empty(), "{not_pass:#?}");
}
