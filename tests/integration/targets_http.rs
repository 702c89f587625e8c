//! The target adapters over HTTP: the structured test layer over streamable HTTP gives the
//! verdicts it gives over stdio, and plain HTTP tool endpoints reach the every-tool probe. The
//! helpers that start a layer on a free port and probe it through a profile copy pointed at that
//! port are shared with the bearer-token tests (targets_jwt.rs).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::targets_cli::{expected_not_verified, repo, venv_bin, Run, BIN, FAMILIES};

/// A free TCP port on the loopback interface.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Ends the server process when the test ends, however it ends.
pub(crate) struct Server(pub(crate) std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The structured layer served over streamable HTTP on a free port, with `flaw` and `env`, once
/// it listens.
pub(crate) async fn structured_http_layer(
    bin: &Path,
    db_agent_url: &str,
    flaw: &str,
    env: &[(&str, &str)],
) -> (Server, u16) {
    let port = free_port();
    let server = Server(
        Command::new(bin.join("python3"))
            .arg(repo().join("tests/targets/structured/server.py"))
            .args(["--http", &port.to_string(), "--flaw", flaw])
            .env("DATABASE_URL", db_agent_url)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
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

/// `preflight probe` with the structured layer's `profile` (whose URL names `profile_port`)
/// pointed at `port`, on `db`, with `env`.
pub(crate) fn probe_http_profile(
    db: &preflight_probes::db::Database,
    profile: &str,
    profile_port: &str,
    port: u16,
    env: &[(&str, &str)],
) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let template = std::fs::read_to_string(repo().join("tests/targets/structured").join(profile))
        .expect("profile");
    let copy = dir.path().join(profile);
    std::fs::write(&copy, template.replace(profile_port, &port.to_string())).expect("write");
    let out_dir = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["probe", "--allow-writes", "--only", FAMILIES, "--policy"])
        .arg(repo().join("tests/targets/structured/policy.yaml"))
        .arg("--target")
        .arg(&copy)
        .arg("--out")
        .arg(&out_dir)
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .envs(env.iter().copied())
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

/// The structured layer served over streamable HTTP gives the same verdicts as over stdio,
/// except the write-rate probe, which needs a fresh instance that a shared server cannot give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_structured_layer_over_streamable_http_gives_the_same_verdicts() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let db = preflight_probes::db::testing::database().await;
    let (server, port) = structured_http_layer(&bin, db.agent_url(), "no_tenant_filter", &[]).await;
    let run = probe_http_profile(&db, "profile-http.yaml", "38917", port, &[]);
    drop(server);
    assert_no_tenant_filter_verdicts(&run);
    // The HTTP profile names no audit log: no audit claim is judged, and each says why.
    for f in run
        .findings
        .iter()
        .filter(|f| f["code"].as_str().unwrap_or_default().starts_with("audit."))
    {
        assert_eq!(f["verdict"], "not_verified", "{f}");
        assert!(
            f.to_string()
                .contains("the target profile names no audit log"),
            "{f}"
        );
    }
    let target = run.report["environment"]["target"]
        .as_str()
        .unwrap_or_default();
    assert!(
        target.starts_with("mcp-http http://127.0.0.1:")
            && target.contains("structured-test-layer"),
        "{target}"
    );
}

/// The verdicts of the structured layer with `no_tenant_filter` over a URL: exactly that flaw's
/// cross-tenant probes fail, nothing is an error, and what a URL layer cannot show is
/// `not_verified`.
pub(crate) fn assert_no_tenant_filter_verdicts(run: &Run) {
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
}

/// What a layer reached by URL whose profile names no audit log cannot show: what stdio cannot,
/// the write-rate probe (it needs a fresh instance), and every audit probe.
pub(crate) fn url_not_verified() -> BTreeSet<String> {
    let mut out = expected_not_verified();
    out.insert("write.rate_limit".to_string());
    out.insert("audit.every_call".to_string());
    out
}

/// Plain HTTP tool endpoints (`--target` profile with `protocol: http`): the every-tool probe
/// reaches the domain tools through reqwest and catches the one that trusts its tenant argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_every_tool_probe_works_over_plain_http_tool_endpoints() {
    let Some(bin) = venv_bin() else {
        return;
    };
    let db = preflight_probes::db::testing::database().await;
    let port = free_port();
    let server = Server(
        Command::new(bin.join("python3"))
            .arg(repo().join("tests/targets/http/server.py"))
            .arg(port.to_string())
            .env("DATABASE_URL", db.agent_url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
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
    let dir = tempfile::tempdir().expect("temp dir");
    let template =
        std::fs::read_to_string(repo().join("tests/targets/http/profile.yaml")).expect("profile");
    let profile = dir.path().join("profile.yaml");
    std::fs::write(&profile, template.replace("38918", &port.to_string())).expect("write");
    let out_dir = dir.path().join("report");
    let out = Command::new(BIN)
        .args(["probe", "--only", "cross_tenant", "--target"])
        .arg(&profile)
        .arg("--out")
        .arg(&out_dir)
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight");
    drop(server);
    let text = std::fs::read_to_string(out_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let report: Value = serde_json::from_str(&text).expect("JSON");
    // The contract's probes have no tool here (not_verified, saying so); the layer's own tools
    // are the every-tool probe's.
    let verdicts: BTreeSet<(String, String)> = report["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|f| f["code"] == "cross_tenant.every_tool")
        .map(|f| {
            (
                f["title"]
                    .as_str()
                    .unwrap_or_default()
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                f["verdict"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("get_order", "pass"), ("list_tickets", "fail")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(verdicts, want, "{}", String::from_utf8_lossy(&out.stderr));
    let target = report["environment"]["target"].as_str().unwrap_or_default();
    assert!(target.starts_with("http http://127.0.0.1:"), "{target}");
}
