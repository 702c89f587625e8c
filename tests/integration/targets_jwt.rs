//! The structured test layer over streamable HTTP with a bearer JWT per principal
//! (tests/targets/structured/profile-http-jwt.yaml): the layer takes the principal only from a
//! token it verifies with PyJWT, preflight mints one per principal with `jsonwebtoken`; the
//! verdicts are those of the stdio run, and a wrong key is the layer's refusal (HTTP 401), an
//! `error`, never a pass. The key and the tokens never reach the output.

use std::path::Path;

use super::targets_cli::{venv_bin, Run};
use super::targets_http::{
    assert_no_tenant_filter_verdicts, probe_http_profile, structured_http_layer, Server,
};

/// The structured layer served over streamable HTTP, taking the principal only from bearer
/// tokens signed with `secret`, with `flaw`.
async fn jwt_layer(bin: &Path, db_agent_url: &str, secret: &str, flaw: &str) -> (Server, u16) {
    structured_http_layer(bin, db_agent_url, flaw, &[("LAYER_JWT_SECRET", secret)]).await
}

/// `preflight probe` with profile-http-jwt.yaml on `port`, the signing key in the environment.
fn probe_jwt(db: &preflight_probes::db::Database, port: u16, key: &str) -> Run {
    probe_http_profile(
        db,
        "profile-http-jwt.yaml",
        "38919",
        port,
        &[("STRUCTURED_LAYER_JWT_SECRET", key)],
    )
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
    assert_no_tenant_filter_verdicts(&run);
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
