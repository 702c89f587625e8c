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

use std::collections::BTreeSet;

use super::serve_probes::{agent_can_log_in, probe_db_with, served_policy};
use super::targets_cli::repo;

const ALL: [&str; 5] = [
    "server.token_forgery",
    "server.health_fields",
    "server.health_db_down",
    "server.rate_limit_per_principal",
    "server.rate_limit_per_ip",
];

fn set(codes: &[&str]) -> BTreeSet<String> {
    codes.iter().map(|c| c.to_string()).collect()
}

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
        assert_eq!(run.findings.len(), 8, "{name}: {}", run.log());
        let passing: BTreeSet<String> = ALL
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !failing.contains(c))
            .collect();
        if run.codes("fail") != failing || run.codes("pass") != passing {
            problems.push(format!(
                "{name}: fail {:?} (want {failing:?}), pass {:?} (want {passing:?})\n{}",
                run.codes("fail"),
                run.codes("pass"),
                run.findings
                    .iter()
                    .map(|f| format!("  {} {}: {}", f["verdict"], f["title"], f["message"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
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
