//! One run, one checklist: `preflight probe` on the shipped setup writes a `checklist.md` and
//! `checklist.json` in which every machine-checkable item is verified: OPS-4 and OPS-6 by the
//! server probes of the built-in layer the run serves over HTTP on loopback (their variants, and
//! ISO-1's forgeries: probe_served.rs), the quarterly review's items (QRT-2 … QRT-5, OPS-8) by the
//! review self-check on a generated quarter (their variants: probe_qrt.rs). Each item the run
//! newly verifies fails on a variant that breaks it: an admin policy
//! sharing the agent's audit channel (ISO-6), a policy without a regression suite or with a case
//! that does not hold (OPS-3), a system prompt that does not explain structured errors (LLM-1),
//! a task that tells the model its tenant (LLM-4), no place for the transcript (LLM-5), a
//! scenario above the step cap (LLM-2), a quarterly review that found problems (QRT-*, OPS-8).

use std::path::Path;
use std::process::{Command, Stdio};

use preflight_probes::db::{testing, Db};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_preflight");

fn db_flag() -> &'static str {
    match testing::test_db().unwrap_or_else(|e| panic!("{e}")) {
        Db::Container { .. } => "container",
        _ => "local",
    }
}

/// `preflight probe ARGS --db ... --out OUT` from the workspace root (where `scenarios/` and the
/// shop policy are found by default).
pub(crate) fn probe(args: &[&str], out: &Path) -> (Option<i32>, String) {
    let output = Command::new(BIN)
        .arg("probe")
        .args(args)
        .args(["--db", db_flag(), "--out"])
        .arg(out)
        .current_dir(testing::workspace_root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run preflight");
    (
        output.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

pub(crate) fn checklist(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("checklist.json")).expect("checklist.json");
    serde_json::from_str(&text).expect("checklist.json is JSON")
}

pub(crate) fn item<'a>(c: &'a Value, id: &str) -> &'a Value {
    c["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing"))
}

pub(crate) fn status<'a>(c: &'a Value, id: &str) -> &'a str {
    item(c, id)["status"].as_str().unwrap_or_default()
}

#[test]
fn the_default_run_verifies_every_item_a_probe_run_can() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let (code, log) = probe(&[], &out);
    assert_eq!(code, Some(0), "{log}");
    let c = checklist(&out);
    assert_eq!(c["total"], 62);
    assert_eq!(c["machine_checkable"], 57);
    assert_eq!(c["failed"], 0, "{c}");
    assert_eq!(c["needs_sign_off"], 5);
    let mut unverified = Vec::new();
    for i in c["items"].as_array().unwrap() {
        let id = i["id"].as_str().unwrap();
        match i["status"].as_str().unwrap() {
            "verified" | "needs_sign_off" => {}
            "not_verified" => unverified.push(id.to_string()),
            other => panic!("{id} is {other}: {i}"),
        }
    }
    assert!(unverified.is_empty(), "not verified: {unverified:?}: {c}");
    assert_eq!(c["verified"], 57);
    // The newly verified items, by the findings that verify them.
    for (id, code) in [
        ("LLM-1", "agent.system_prompt"),
        ("LLM-2", "agent.step_cap"),
        ("LLM-3", "agent.tool_list"),
        ("LLM-4", "agent.principal_leak"),
        ("LLM-5", "agent.transcript"),
        ("OPS-3", "policy.regression_suite"),
        ("CMP-3", "audit.subject_access"),
        ("CMP-4", "audit.subject_erasure"),
        ("ISO-6", "lint.admin_separation"),
        ("OPS-4", "server.health_fields"),
        ("OPS-4", "server.health_db_down"),
        ("OPS-6", "server.rate_limit_per_ip"),
        ("OPS-6", "server.rate_limit_per_principal"),
        ("ISO-1", "server.token_forgery"),
        ("QRT-2", "review.self_check.qrt_2"),
        ("QRT-3", "review.self_check.qrt_3"),
        ("QRT-4", "review.self_check.qrt_4"),
        ("QRT-5", "review.self_check.qrt_5"),
        ("OPS-8", "review.self_check.ops_8"),
    ] {
        let i = item(&c, id);
        assert_eq!(i["status"], "verified", "{i}");
        assert!(
            i["codes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["code"] == code && k["pass"].as_u64() > Some(0)),
            "{id} not verified by {code}: {i}"
        );
    }
    let md = std::fs::read_to_string(out.join("checklist.md")).unwrap();
    assert!(
        md.contains(
            "**62 items:** 57 ✅ verified · 0 ❌ failed · 0 ❔ not verified · 5 ✍️ needs sign-off"
        ),
        "{md}"
    );
    assert!(!md.contains("## Not verified on this run"), "{md}");
    assert!(out.join("transcripts").is_dir(), "no transcripts written");
    // The server findings were taken through the served layer, every one passed and says so.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let served: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["family"] == "server")
        .collect();
    assert_eq!(served.len(), 8, "{log}");
    for f in served {
        assert_eq!(f["verdict"], "pass", "{f}");
        assert!(
            f["message"]
                .as_str()
                .unwrap()
                .contains("served over streamable HTTP on loopback"),
            "{f}"
        );
    }
    assert!(md.contains("`server.rate_limit_per_ip` (1 pass)"), "{md}");
    assert!(!log.contains("Bearer ey"), "a token reached the output");
}

/// ISO-6 and OPS-3 from a policy folder that breaks them: an admin policy beside the agent's
/// that writes to the same audit sinks, and no regression suite.
#[test]
fn an_admin_policy_on_the_agents_channel_and_a_missing_suite_fail() {
    let dir = tempfile::tempdir().unwrap();
    let shop = std::fs::read_to_string(testing::workspace_root().join("fixtures/shop/policy.yaml"))
        .unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, &shop).unwrap();
    std::fs::write(
        dir.path().join("admin-policy.yaml"),
        shop.replacen("name: shop-support-agent", "name: shop-admin", 1),
    )
    .unwrap();
    let out = dir.path().join("report");
    let policy_arg = policy.to_string_lossy().into_owned();
    let (code, log) = probe(&["--policy", &policy_arg, "--only", "lint,suite"], &out);
    assert_eq!(code, Some(1), "{log}");
    let c = checklist(&out);
    assert_eq!(status(&c, "ISO-6"), "failed", "{}", item(&c, "ISO-6"));
    assert_eq!(status(&c, "OPS-3"), "failed", "{}", item(&c, "OPS-3"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let suite = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "policy.regression_suite")
        .expect("the suite finding");
    assert!(
        suite["message"]
            .as_str()
            .unwrap()
            .contains("policy-cases.yaml"),
        "{suite}"
    );
    // The agent was left out, and the checklist says so.
    assert_eq!(status(&c, "LLM-2"), "not_verified");
    assert!(
        item(&c, "LLM-2")["reason"]
            .as_str()
            .unwrap()
            .contains("--only/--skip"),
        "{}",
        item(&c, "LLM-2")
    );

    // With the admin policy on a channel of its own, ISO-6 holds.
    std::fs::write(
        dir.path().join("admin-policy.yaml"),
        shop.replacen("name: shop-support-agent", "name: shop-admin", 1)
            .replacen("    - postgres                         # preflight_audit.audit_log, hash-chained, same transaction\n    - jsonl: audit/shop-audit.jsonl    # the long-term, hash-chained copy\n", "    - jsonl: audit/shop-admin-audit.jsonl\n", 1),
    )
    .unwrap();
    let (_, log) = probe(&["--policy", &policy_arg, "--only", "lint"], &out);
    let c = checklist(&out);
    assert_eq!(
        status(&c, "ISO-6"),
        "verified",
        "{log}\n{}",
        item(&c, "ISO-6")
    );
}

/// OPS-3 from a suite with a case that does not hold, named by its line.
#[test]
fn a_regression_case_that_does_not_hold_fails_ops_3() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong-cases.yaml");
    std::fs::write(
        &wrong,
        "version: 1
cases:
  - name: acme reads its own customer 1
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 1}
    expect: allow
  - name: claims another tenant's customer is visible
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: allow
",
    )
    .unwrap();
    let out = dir.path().join("report");
    let cases = wrong.to_string_lossy().into_owned();
    let (code, log) = probe(&["--only", "suite", "--cases", &cases], &out);
    assert_eq!(code, Some(1), "{log}");
    let c = checklist(&out);
    assert_eq!(status(&c, "OPS-3"), "failed", "{}", item(&c, "OPS-3"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let suite = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "policy.regression_suite")
        .expect("the suite finding");
    assert_eq!(suite["verdict"], "fail");
    assert!(
        suite["message"].as_str().unwrap().contains("1 of 2"),
        "{suite}"
    );
    let facts = suite["evidence"]["facts"].to_string();
    assert!(
        facts.contains(
            ":8: claims another tenant's customer is visible: expected allow, got deny not_found"
        ),
        "{facts}"
    );
    assert_eq!(suite["location"]["line"], 8);
}

/// LLM-1, LLM-4 and LLM-5 from the agent phase: a system prompt that does not explain
/// structured errors, a scenario whose task tells the model its tenant, and no place to write
/// the transcript. LLM-2: a scenario above the step cap is refused before anything starts
/// (exit 2; the harness's own tests fail a run that asked the model past its cap). LLM-3's
/// positive control is the harness's (a request that hides a tool).
#[test]
fn harness_variants_fail_their_llm_items() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = dir.path().join("prompt.md");
    std::fs::write(&prompt, "You are a helpful assistant for the shop.\n").unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir(&scenarios).unwrap();
    std::fs::write(
        scenarios.join("names-the-tenant.yaml"),
        "name: names-the-tenant
description: The task tells the model which tenant it works for.
principal: {tenant: acme, user: support-1, roles: [support]}
task: You work for the tenant acme. Look up order 3 and tell me its status.
script:
  - tool_calls:
      - tool: db_get
        arguments: {model: orders, id: 3}
  - final: Order 3 is shipped.
expect:
  outcome: completed
",
    )
    .unwrap();
    let out = dir.path().join("report");
    // LLM-5: nowhere to log the agent's output apart from the tool audit (a file is in the way).
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("transcripts"), "not a folder").unwrap();
    let (code, log) = probe(
        &[
            "--only",
            "agent",
            "--scenarios",
            &scenarios.to_string_lossy(),
            "--system-prompt",
            &prompt.to_string_lossy(),
        ],
        &out,
    );
    assert_eq!(code, Some(1), "{log}");
    let c = checklist(&out);
    assert_eq!(status(&c, "LLM-1"), "failed", "{}", item(&c, "LLM-1"));
    assert_eq!(status(&c, "LLM-4"), "failed", "{}", item(&c, "LLM-4"));
    assert_eq!(status(&c, "LLM-5"), "failed", "{}", item(&c, "LLM-5"));
    // The suite was left out and says so; the served and review items too.
    assert_eq!(status(&c, "OPS-3"), "not_verified");
    assert_eq!(status(&c, "OPS-4"), "not_verified");

    std::fs::write(
        scenarios.join("names-the-tenant.yaml"),
        "name: too-many-steps
principal: {tenant: acme, user: support-1, roles: [support]}
task: Look up order 3.
max_steps: 13
script:
  - final: done
",
    )
    .unwrap();
    let (code, log) = probe(
        &[
            "--only",
            "agent",
            "--scenarios",
            &scenarios.to_string_lossy(),
        ],
        &out,
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("LLM-2"), "{log}");
}

/// `--review`: the quarterly review of a log puts QRT-2 … QRT-5 and OPS-8 on the probe run's
/// checklist (verified where the review found nothing, QRT-5 not verified when the review did not
/// run the suite); a review of a log that does not verify fails them all.
#[test]
fn a_quarterly_review_puts_its_items_on_the_checklist() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    crate::review_cli::log(&log);
    let review_dir = dir.path().join("review");
    let review = |log: &Path| {
        let out = Command::new(BIN)
            .args(["review", "--jsonl"])
            .arg(log)
            .arg("--out")
            .arg(&review_dir)
            .env_remove("PREFLIGHT_AUDIT_DB_URL")
            .stdin(Stdio::null())
            .output()
            .expect("run preflight review");
        assert_eq!(out.status.code(), Some(1), "only the suite needs attention");
    };
    review(&log);
    let out = dir.path().join("report");
    let review_arg = review_dir.to_string_lossy().into_owned();
    let (code, log_text) = probe(&["--only", "lint", "--review", &review_arg], &out);
    assert_eq!(code, Some(1), "{log_text}");
    let c = checklist(&out);
    for id in ["QRT-2", "QRT-3", "QRT-4", "OPS-8"] {
        assert_eq!(status(&c, id), "verified", "{}", item(&c, id));
    }
    assert_eq!(status(&c, "QRT-5"), "not_verified");
    assert!(
        item(&c, "QRT-5")["reason"]
            .as_str()
            .unwrap()
            .contains("--cases"),
        "{}",
        item(&c, "QRT-5")
    );

    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        text.replacen("\"rows_returned\":1", "\"rows_returned\":7", 1),
    )
    .unwrap();
    review(&log);
    let (code, log_text) = probe(&["--only", "lint", "--review", &review_arg], &out);
    assert_eq!(code, Some(1), "{log_text}");
    let c = checklist(&out);
    for id in ["QRT-2", "QRT-3", "QRT-4", "QRT-5", "OPS-8"] {
        assert_eq!(status(&c, id), "failed", "{}", item(&c, id));
    }

    let (code, log_text) = probe(&["--only", "lint", "--review", "nowhere.json"], &out);
    assert_eq!(code, Some(2), "{log_text}");
    assert!(log_text.contains("--review nowhere.json"), "{log_text}");
}
