//! The `server` family in the default run (src/cmd/probe_served.rs): `preflight probe` on the
//! built-in layer serves that layer over streamable HTTP on loopback and probes it as a server,
//! on a real Postgres:
//!
//! - every server probe passes through the served layer, and each finding says so;
//! - each test-only served variant (`--insecure-test-variant`) fails exactly its probes:
//!   `no-token-check` the four forgeries, `no-health` both health probes, `no-limits` both rate
//!   limits;
//! - a policy without `rate_limits:` fails both rate-limit probes (never a pass);
//! - no token reaches the output, and the agent login is given back every time.
//!
//! The default run's checklist (OPS-4, OPS-6 verified) is checked in checklist_cli.rs.

use super::serve_probes::{agent_can_log_in, probe_db_with, served_policy, set, split_problem};
use super::targets_cli::repo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_builtin_layer_passes_and_each_variant_fails_exactly_its_probes() {
    let db = preflight_probes::db::testing::database().await;
    if db.superuser_url().is_none() {
        preflight_probes::db::testing::prerequisite_missing(
            "the_served_builtin_layer_passes_and_each_variant_fails_exactly_its_probes",
            "the test database offers no superuser login to take the layer's login away",
        );
        return;
    }
    let shop = repo().join("fixtures/shop/policy.yaml");
    let dir = tempfile::tempdir().expect("temp dir");
    let without_limits = served_policy(dir.path(), false);
    let rate = [
        "server.rate_limit_per_principal",
        "server.rate_limit_per_ip",
    ];
    let mut problems = Vec::new();
    for (name, policy, extra, failing) in [
        ("served", &shop, vec![], set(&[])),
        (
            "no-token-check",
            &shop,
            vec!["--insecure-test-variant", "no-token-check"],
            set(&["server.token_forgery"]),
        ),
        (
            "no-health",
            &shop,
            vec!["--insecure-test-variant", "no-health"],
            set(&["server.health_fields", "server.health_db_down"]),
        ),
        (
            "no-limits",
            &shop,
            vec!["--insecure-test-variant", "no-limits"],
            set(&rate),
        ),
        (
            "policy without rate_limits",
            &without_limits,
            vec![],
            set(&rate),
        ),
    ] {
        let run = probe_db_with(&db, "server", policy, None, &[], &extra);
        problems.extend(split_problem(name, &run, &failing));
        for f in &run.findings {
            let message = f["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("the built-in layer, served over streamable HTTP on loopback"),
                "{name}: {f}"
            );
            if name == "policy without rate_limits"
                && f["code"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("server.rate_limit")
            {
                assert!(message.contains("declares no `rate_limits."), "{f}");
            }
        }
        let all = format!("{}{}", run.report, run.log());
        assert!(
            !all.contains("Bearer ey"),
            "{name}: a token reached the output"
        );
        assert!(
            agent_can_log_in(&db).await,
            "{name}: the agent login was not given back"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// On a database given by URL without a superuser login (staging), the served layer is probed
/// all the same, and the one probe that needs that login — the health endpoint with the layer's
/// login taken away — is `not_verified` saying so; every other server probe passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_superuser_login_only_the_database_down_probe_is_not_verified() {
    let db = preflight_probes::db::testing::database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("report");
    let out = std::process::Command::new(super::targets_cli::BIN)
        .args(["probe", "--allow-writes", "--only", "server", "--policy"])
        .arg(repo().join("fixtures/shop/policy.yaml"))
        .arg("--out")
        .arg(&out_dir)
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env_remove("PREFLIGHT_SUPERUSER_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight probe");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(out_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}): {log}"));
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    assert_eq!(findings.len(), 8, "{log}");
    for f in &findings {
        if f["code"] == "server.health_db_down" {
            assert_eq!(f["verdict"], "not_verified", "{f}");
            assert!(
                f["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("superuser"),
                "{f}"
            );
        } else {
            assert_eq!(f["verdict"], "pass", "{f}");
        }
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "not_verified fails the run: {log}"
    );
}
