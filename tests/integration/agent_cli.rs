//! `preflight agent run` end to end, through the built binary, against the built-in layer as
//! `preflight probe` starts it (the policy's audit sinks, its budget store, the approvals queue):
//! every shipped scenario passes with its scripted model; every tool call the agents made has
//! exactly one audit record; and with the tenant predicate switched off the forged-tenant
//! scenario fails (a positive control of the whole chain: loop, layer, judge, report).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use preflight_probes::db::testing;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_preflight");

fn scenarios_dir() -> PathBuf {
    testing::workspace_root().join("scenarios")
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `agent.scenario` findings of a report, by scenario name.
fn scenario_verdicts(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "agent.scenario")
        .map(|f| {
            (
                f["title"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("scenario ")
                    .to_string(),
                f["verdict"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn shipped_scenario_count() -> usize {
    std::fs::read_dir(scenarios_dir())
        .expect("scenarios/")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count()
}

#[test]
fn every_shipped_scenario_passes_on_a_local_database() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["agent", "run"])
        .arg(scenarios_dir())
        .args(["--db", "local", "--jobs", "4", "--out"])
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = report(out_dir.path());
    let verdicts = scenario_verdicts(&report);
    assert_eq!(verdicts.len(), shipped_scenario_count(), "{verdicts:?}");
    assert!(verdicts.len() >= 10, "at least 10 scenarios ship");
    for (name, verdict) in &verdicts {
        assert_eq!(verdict, "pass", "scenario {name}\n{}", show(&out));
    }
    // Every finding passed, not only the scenario summaries.
    for f in report["findings"].as_array().unwrap() {
        assert_eq!(f["verdict"], "pass", "{f}");
    }
    assert!(report["tool_calls"].as_u64().unwrap() > 10);
    assert!(
        report["environment"]["target"]
            .as_str()
            .unwrap()
            .starts_with("builtin with the scripted model"),
        "{}",
        report["environment"]["target"]
    );
    assert!(out_dir.path().join("transcripts").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_call_of_a_run_has_exactly_one_audit_record() {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(&owner)
        .await
        .expect("audit count");
    let out_dir = tempfile::tempdir().expect("temp dir");
    let bin = BIN.to_string();
    let scenarios = scenarios_dir();
    let out_path = out_dir.path().to_path_buf();
    let owner_url = db.owner_url().to_string();
    let agent_url = db.agent_url().to_string();
    // URLs go through the environment, as the docs ask of users.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["agent", "run"])
            .arg(scenarios)
            .args(["--allow-writes", "--out"])
            .arg(out_path)
            .env("PREFLIGHT_DB", owner_url)
            .env("PREFLIGHT_AGENT_URL", agent_url)
            .env("NO_COLOR", "1")
            .output()
            .expect("run preflight")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = report(out_dir.path());
    let calls = report["tool_calls"].as_i64().expect("tool_calls");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(&owner)
        .await
        .expect("audit count");
    assert_eq!(
        after - before,
        calls,
        "one audit record per tool call that reached the layer (report.tool_calls)"
    );
    // The chain the run extended still verifies.
    let mut conn = owner.acquire().await.expect("owner connection");
    let verified = preflight_enforcer::audit::verify_postgres(&mut conn, None)
        .await
        .expect("verify");
    assert!(verified.intact(), "{:?}", verified.first_break);
    assert_eq!(verified.records as i64, after);
    // No URL or password reached the output.
    let text = show(&out);
    assert!(!text.contains(db.owner_url()), "owner URL printed");
    assert!(!text.contains(db.agent_url()), "agent URL printed");
}

#[test]
fn without_the_tenant_predicate_the_forged_tenant_scenario_fails() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(BIN)
        .args(["agent", "run"])
        .arg(scenarios_dir().join("02-forge-tenant-id.yaml"))
        .args(["--db", "local", "--fault", "no_tenant_predicate", "--out"])
        .arg(out_dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = report(out_dir.path());
    assert_eq!(
        scenario_verdicts(&report),
        vec![("forge-tenant-id".to_string(), "fail".to_string())]
    );
    let leak = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["verdict"] == "fail" && f["code"] != "agent.scenario")
        .unwrap_or_else(|| panic!("no failing check: {report}"));
    assert!(
        leak["checklist"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "ISO-1" || c == "ISO-3"),
        "{leak}"
    );
    assert!(report["environment"]["target"]
        .as_str()
        .unwrap()
        .contains("no_tenant_predicate"));
}

#[test]
fn an_unknown_fault_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["agent", "run"])
        .arg(scenarios_dir())
        .args(["--fault", "no_such_fault"])
        .output()
        .expect("run preflight");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown fault \"no_such_fault\""), "{err}");
    assert!(err.contains("no_tenant_predicate"), "{err}");
}
