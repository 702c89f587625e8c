//! `preflight review` end to end on a JSONL log: the files are written and the exit code says
//! whether something needs attention; a tampered log is reported as not verifying (exit 1, no
//! sections); bad flags exit 2 before anything runs.

use std::process::{Command, Stdio};

use preflight_enforcer::audit::{arguments_sha256, AuditRecord, Decision, FsyncPolicy, JsonlSink};
use serde_json::json;

fn preflight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.env_remove("PREFLIGHT_AUDIT_DB_URL")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run preflight");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Twelve quiet reads by many principals, written by the real sink.
fn log(path: &std::path::Path) {
    let sink = JsonlSink::open(path, "test", FsyncPolicy::Never).unwrap();
    for i in 0..12 {
        let args = json!({"model": "orders", "id": i});
        sink.append_blocking(&AuditRecord {
            trace_id: format!("t{i}"),
            tenant_id: "acme".into(),
            user_id: format!("agent-{i}"),
            roles: vec!["support".into()],
            tool: "db_get".into(),
            arguments_sha256: arguments_sha256(&args),
            arguments: args,
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 1.0,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "b".repeat(64),
            subjects: Vec::new(),
        })
        .unwrap();
    }
}

#[test]
fn a_verified_log_is_reviewed_and_a_tampered_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    log(&path);
    let out = dir.path().join("review");
    let (code, stdout, err) = run(preflight()
        .args(["review", "--jsonl"])
        .arg(&path)
        .arg("--out")
        .arg(&out));
    // Only the regression suite, not run, needs attention in a quiet log.
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(stdout.contains("chain verified (12 records)"), "{stdout}");
    assert!(stdout.contains("1 item(s) need attention"), "{stdout}");
    assert!(
        stdout.contains("QRT-5: the regression suite was not run"),
        "{stdout}"
    );
    for f in ["review.md", "review.html", "review.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"rows_returned\":1", "\"rows_returned\":7", 1),
    )
    .unwrap();
    let (code, stdout, err) = run(preflight()
        .args(["review", "--jsonl"])
        .arg(&path)
        .arg("--out")
        .arg(&out));
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(
        stdout.contains("the audit chain DOES NOT VERIFY: record 1: edited"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(out.join("review.md")).unwrap();
    assert!(md.contains("**DOES NOT VERIFY**"), "{md}");
    assert!(!md.contains("## QRT-2"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("review.json")).unwrap()).unwrap();
    assert_eq!(json["chain"]["verified"], false);
    assert!(json["sections"].is_null());
}

#[test]
fn bad_flags_exit_2() {
    let (code, _, err) =
        run(preflight().args(["review", "--jsonl", "x.jsonl", "--since", "ninety"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--since: expected"), "{err}");
    let (code, _, err) = run(preflight().args(["review"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no audit log given"), "{err}");
    let (code, _, err) =
        run(preflight().args(["review", "--jsonl", "x.jsonl", "--cases", "c.yaml"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--cases needs --policy"), "{err}");
}
