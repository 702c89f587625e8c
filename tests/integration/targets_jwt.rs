//! The structured test layer over streamable HTTP with a bearer JWT per principal
//! (tests/targets/structured/profile-http-jwt.yaml): the layer takes the principal only from a
//! token it verifies with PyJWT, preflight mints one per principal with `jsonwebtoken`; the
//! verdicts are those of the stdio run, and a wrong key is the layer's refusal (HTTP 401), an
//! `error`, never a pass. The key and the tokens never reach the output.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::targets_cli::{free_port, repo, url_not_verified, venv_bin, Run, Server, BIN, FAMILIES};

/// The structured layer served over streamable HTTP, taking the principal only from bearer
/// tokens signed with `secret`, with `flaw`.
async fn jwt_layer(bin: &Path, db_agent_url: &str, secret: &str, flaw: &str) -> (Server, u16) {
    let port = free_port();
    let server = Server(
        Command::new(bin.join("python3"))
            .arg(repo().join("tests/targets/structured/server.py"))
            .args(["--http", &port.to_string(), "--flaw", flaw])
            .env("DATABASE_URL", db_agent_url)
            .env("LAYER_JWT_SECRET", secret)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the HTTP layer"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP layer never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    (server, port)
}

/// `preflight probe` with profile-http-jwt.yaml on `port`, the signing key in the environment.
fn probe_jwt(db: &preflight_probes::db::Database, port: u16, key: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let template =
        std::fs::read_to_string(repo().join("tests/targets/structured/profile-http-jwt.yaml"))
            .expect("profile-http-jwt.yaml");
    let profile = dir.path().join("profile-http-jwt.yaml");
    std::fs::write(&profile, template.replace("38919", &port.to_string())).expect("write");
    let out_dir = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["probe", "--allow-writes", "--only", FAMILIES, "--policy"])
        .arg(repo().join("tests/targets/structured/policy.yaml"))
        .arg("--target")
        .arg(&profile)
        .arg("--out")
        .arg(&out_dir)
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env("STRUCTURED_LAYER_JWT_SECRET", key)
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    let text = std::fs::read_to_string(out_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let report: Value = serde_json::from_str(&text).expect("JSON");
    Run {
        findings: report["findings"].as_array().cloned().unwrap_or_default(),
        report,
        out,
    }
}

/// Over streamable HTTP with a bearer JWT per principal (the layer reads the principal only
/// from the verified token), the verdicts are those of the stdio run with the same flaw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_structured_layer_with_bearer_tokens_gives_the_same_verdicts() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let db = preflight_probes::db::testing::database().await;
    let secret = "structured-layer-test-secret-0123456789";
    let (server, port) = jwt_layer(&bin, db.agent_url(), secret, "no_tenant_filter").await;
    let run = probe_jwt(&db, port, secret);
    drop(server);
    let expected: BTreeSet<String> = [
        "cross_tenant.filter_foreign_keys",
        "cross_tenant.filter_foreign_reference",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(run.codes("fail"), expected, "{}", run.log());
    assert!(run.codes("error").is_empty(), "{}", run.log());
    assert_eq!(
        run.codes("not_verified"),
        url_not_verified(),
        "{}",
        run.log()
    );
    assert!(run.count("pass") >= 50, "{}", run.log());
    let all = format!("{}{}", run.report, run.log());
    assert!(!all.contains(secret), "the signing key reached the output");
    assert!(!all.contains("Bearer ey"), "a token reached the output");
}

/// A profile whose key the layer does not accept: the layer refuses every session (HTTP 401),
/// and that refusal is an `error` finding with the evidence, never a pass, and exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signing_key_is_an_error_not_a_pass() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let db = preflight_probes::db::testing::database().await;
    let (server, port) = jwt_layer(
        &bin,
        db.agent_url(),
        "the-layers-own-secret-0123456789",
        "none",
    )
    .await;
    let run = probe_jwt(&db, port, "a-different-secret-9876543210");
    drop(server);
    assert_eq!(run.out.status.code(), Some(3), "{}", run.log());
    assert_eq!(run.count("pass") + run.count("fail"), 0, "{}", run.log());
    assert!(run.count("error") > 0, "{}", run.log());
    let messages: Vec<&str> = run
        .findings
        .iter()
        .filter(|f| f["verdict"] == "error")
        .filter_map(|f| f["message"].as_str())
        .collect();
    // rmcp reports the layer's HTTP 401 as "Auth required".
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Auth required") || m.contains("401")),
        "no error names the refusal:\n{}",
        messages.join("\n")
    );
    let all = format!("{}{}", run.report, run.log());
    assert!(
        !all.contains("a-different-secret"),
        "the signing key reached the output"
    );
}
