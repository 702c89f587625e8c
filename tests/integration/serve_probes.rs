//! The `server` family (docs/probes/server.md) against `preflight serve --mcp http` through the
//! shipped JWT profile (tests/targets/serve/profile-http.yaml), on a real local Postgres:
//!
//! - on the served layer every server claim passes: forged tokens refused with no data, the
//!   health endpoint's fields, unhealthy while the layer's login is taken away and healthy once
//!   it is back, both rate limits;
//! - on the served layer with one protection switched off (`--insecure-test-variant`), exactly
//!   that protection's probes fail: `no-token-check` the four forgeries, `no-health` both health
//!   probes, `no-limits` both rate limits;
//! - a layer whose profile has no `server:` section (the structured layer's profile-http.yaml)
//!   gets `not_verified` with the reason (the built-in layer, served by the run itself:
//!   probe_served.rs).
//!
//! Neither the signing key nor a token reaches the output.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::targets_cli::{repo, venv_bin, Run, BIN};
use super::targets_http::{free_port, structured_http_layer, Server};

pub(crate) const KEY: &str = "serve-probes-test-key-0123456789abcdef";

/// The shop policy as `serve` runs it: no JSONL copy (the Postgres sink is the log), and with
/// or without the shipped `rate_limits:` (the limits the shipped profile declares).
pub(crate) fn served_policy(dir: &Path, rate_limits: bool) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("fixtures/shop/policy.yaml")).expect("policy");
    assert!(
        text.contains("\nrate_limits:\n  # ")
            && text.contains("  per_principal: {requests: 40, per: 60s}\n"),
        "the shipped policy declares the limits the shipped profile does"
    );
    let mut in_limits = false;
    let served: String = text
        .lines()
        .filter(|l| !l.contains("jsonl: audit/shop-audit.jsonl"))
        .filter(|l| {
            // The section runs from `rate_limits:` to the next top-level key.
            if !l.starts_with(' ') && !l.is_empty() {
                in_limits = l.starts_with("rate_limits:");
            }
            rate_limits || !in_limits
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.join("served-policy.yaml");
    std::fs::write(&path, served).expect("write policy");
    path
}

/// `preflight serve --mcp http` on a free port over `db`, with `extra` flags, once `/healthz`
/// answers.
pub(crate) async fn serve_http(
    db: &preflight_probes::db::Database,
    policy: &Path,
    extra: &[&str],
) -> (Server, u16) {
    let port = free_port();
    let server = Server(
        Command::new(BIN)
            .args(["serve", "--mcp", "http", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--policy")
            .arg(policy)
            .args(["--jwt-hs256-key-env", "SERVE_JWT_KEY"])
            .args(extra)
            .env("DATABASE_URL", db.agent_url())
            .env("SERVE_JWT_KEY", KEY)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start preflight serve"),
    );
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "preflight serve never became healthy on port {port}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    (server, port)
}

/// The shipped serve profile pointed at `port`, written into `dir`.
pub(crate) fn serve_profile(dir: &Path, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("tests/targets/serve/profile-http.yaml"))
        .expect("profile");
    let path = dir.join(format!("profile-{port}.yaml"));
    std::fs::write(&path, text.replace("38920", &port.to_string())).expect("write profile");
    path
}

/// `preflight probe --allow-writes --only FAMILIES` on `db` against `target` (a profile path, or
/// nothing for the built-in layer), with the superuser login the health probe needs.
pub(crate) fn probe_db(
    db: &preflight_probes::db::Database,
    families: &str,
    policy: &Path,
    target: Option<&Path>,
    env: &[(&str, &str)],
) -> Run {
    probe_db_with(db, families, policy, target, env, &[])
}

/// As [`probe_db`], with `extra` flags.
pub(crate) fn probe_db_with(
    db: &preflight_probes::db::Database,
    families: &str,
    policy: &Path,
    target: Option<&Path>,
    env: &[(&str, &str)],
    extra: &[&str],
) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("report");
    let mut cmd = Command::new(BIN);
    cmd.args(["probe", "--allow-writes", "--only", families, "--policy"])
        .arg(policy)
        .arg("--out")
        .arg(&out_dir)
        .args(extra);
    if let Some(t) = target {
        cmd.arg("--target").arg(t);
    }
    if let Some(su) = db.superuser_url() {
        cmd.env("PREFLIGHT_SUPERUSER_URL", su);
    }
    let out = cmd
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env("SERVE_JWT_KEY", KEY)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight probe");
    let text = std::fs::read_to_string(out_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let report: Value = serde_json::from_str(&text).expect("JSON");
    Run {
        findings: report["findings"].as_array().cloned().unwrap_or_default(),
        report,
        out,
    }
}

/// Whether a run of the eight server probes failed exactly `failing` and passed every other one;
/// `Some(what differs)` when not.
pub(crate) fn split_problem(name: &str, run: &Run, failing: &BTreeSet<String>) -> Option<String> {
    assert_eq!(run.findings.len(), 8, "{name}: {}", run.log());
    let passing: BTreeSet<String> = ALL
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !failing.contains(c))
        .collect();
    if run.codes("fail") == *failing && run.codes("pass") == passing {
        return None;
    }
    Some(format!(
        "{name}: fail {:?} (want {failing:?}), pass {:?} (want {passing:?})\n{}",
        run.codes("fail"),
        run.codes("pass"),
        run.findings
            .iter()
            .map(|f| format!("  {} {}: {}", f["verdict"], f["title"], f["message"]))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

pub(crate) fn set(codes: &[&str]) -> BTreeSet<String> {
    codes.iter().map(|c| c.to_string()).collect()
}

pub(crate) const ALL: [&str; 5] = [
    "server.token_forgery",
    "server.health_fields",
    "server.health_db_down",
    "server.rate_limit_per_principal",
    "server.rate_limit_per_ip",
];

/// The agent role can log in (the health probe gave its login back).
pub(crate) async fn agent_can_log_in(db: &preflight_probes::db::Database) -> bool {
    use sqlx::Connection;
    sqlx::PgConnection::connect(db.agent_url()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_family_passes_on_serve_and_each_variant_fails_its_probes() {
    let db = preflight_probes::db::testing::database().await;
    if db.superuser_url().is_none() {
        preflight_probes::db::testing::prerequisite_missing(
            "the_server_family_passes_on_serve_and_each_variant_fails_its_probes",
            "the test database offers no superuser login to take the layer's login away",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = served_policy(dir.path(), true);
    let judged_by = repo().join("fixtures/shop/policy.yaml");
    let mut problems = Vec::new();
    for (variant, failing) in [
        (None, set(&[])),
        (Some("no-token-check"), set(&["server.token_forgery"])),
        (
            Some("no-health"),
            set(&["server.health_fields", "server.health_db_down"]),
        ),
        (
            Some("no-limits"),
            set(&[
                "server.rate_limit_per_principal",
                "server.rate_limit_per_ip",
            ]),
        ),
    ] {
        let extra: Vec<&str> = variant
            .map(|v| vec!["--insecure-test-variant", v])
            .unwrap_or_default();
        let (server, port) = serve_http(&db, &policy, &extra).await;
        let profile = serve_profile(dir.path(), port);
        let run = probe_db(&db, "server", &judged_by, Some(&profile), &[]);
        drop(server);
        let name = variant.unwrap_or("serve");
        for f in &run.findings {
            eprintln!(
                "{name}: {} {} — {}\n    {}",
                f["verdict"], f["title"], f["message"], f["evidence"]["facts"]
            );
        }
        problems.extend(split_problem(name, &run, &failing));
        if variant == Some("no-token-check") {
            // Every forgery failed, each with what came back as evidence.
            let forged: Vec<&Value> = run
                .findings
                .iter()
                .filter(|f| f["code"] == "server.token_forgery")
                .collect();
            assert_eq!(forged.len(), 4, "{}", run.log());
            for f in forged {
                assert!(
                    f["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("accepted"),
                    "{f}"
                );
            }
        }
        let all = format!("{}{}", run.report, run.log());
        assert!(
            !all.contains(KEY),
            "{name}: the signing key reached the output"
        );
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

/// Without a server to probe — a URL layer whose profile declares no `server:` section and no
/// `principal.jwt` — every server claim is `not_verified` with its reason, never a pass. (The
/// built-in layer is served by the run itself: tests/integration/probe_served.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_claims_are_not_verified_where_nothing_is_declared() {
    let db = preflight_probes::db::testing::database().await;
    let Some(bin) = venv_bin() else {
        return;
    };
    let (server, port) = structured_http_layer(&bin, db.agent_url(), "none", &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let template =
        std::fs::read_to_string(repo().join("tests/targets/structured/profile-http.yaml"))
            .expect("profile");
    let profile = dir.path().join("profile-http.yaml");
    std::fs::write(&profile, template.replace("38917", &port.to_string())).expect("write");
    let run = probe_db(
        &db,
        "server",
        &repo().join("tests/targets/structured/policy.yaml"),
        Some(&profile),
        &[],
    );
    drop(server);
    assert_eq!(run.findings.len(), 8, "{}", run.log());
    for f in &run.findings {
        assert_eq!(f["verdict"], "not_verified", "{f}");
        let m = f["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("no `server:` section") || m.contains("no `principal.jwt`"),
            "{f}"
        );
    }
}
