//! `preflight probe --target tests/targets/serve/profile-http.yaml` against `preflight serve
//! --mcp http` (our client against our server over streamable HTTP, a bearer JWT per principal)
//! gives the verdicts of the in-process built-in layer, finding for finding (fingerprints), on
//! the cross_tenant, pii, write and budget families — both runs on the same database.
//!
//! Known differences, each asserted:
//! - `budget.quota` and `budget.statement_timeout` need a fresh instance (with a changed
//!   policy), which one shared server reached by URL cannot give and which runs its own policy
//!   file anyway: passes in-process, `not_verified` over HTTP with that reason;
//! - `write.rate_limit` needs a fresh instance with untouched counters, which one shared server
//!   reached by URL cannot give: `not_verified` over HTTP (over stdio a new process is one);
//! - the served layer enforces the policy's real write rate (10 writes a minute to `customers`)
//!   across every probe, where the in-process layer under test has it lifted: a write probe
//!   refused by that limit is `not_verified` ("not isolated"), at most 5 of them, never a pass or
//!   a fail.
//!
//! The shipped agent scenarios through the same server give the in-process verdicts, and every
//! check passes.
//!
//! And the self-test's faults given to the served layer (`serve --insecure-fault`) are caught
//! over MCP as in-process: every probe code whose declared positive control is that fault has a
//! failing finding.

use std::collections::{BTreeMap, BTreeSet};

use preflight_enforcer::Fault;
use preflight_probes::codes::{Family, ProbeCode};
use preflight_probes::controls::Control;

use super::serve_probes::{probe_db, serve_http, serve_profile, served_policy};
use super::targets_cli::{repo, Run};

const FAMILIES: &str = "cross_tenant,pii,write,budget";

/// fingerprint → (code, verdict, message).
fn by_fingerprint(run: &Run) -> BTreeMap<String, (String, String, String)> {
    run.findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("fingerprint"), (s("code"), s("verdict"), s("message")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_streamable_http_gives_the_builtin_verdicts() {
    let db = preflight_probes::db::testing::database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = repo().join("fixtures/shop/policy.yaml");
    let builtin = probe_db(&db, FAMILIES, &shop, None, &[]);
    let policy = served_policy(dir.path(), false);
    let (server, port) = serve_http(&db, &policy, &[]).await;
    let profile = serve_profile(dir.path(), port);
    let http = probe_db(&db, FAMILIES, &shop, Some(&profile), &[]);
    drop(server);
    let (b, h) = (by_fingerprint(&builtin), by_fingerprint(&http));
    assert!(b.len() > 100, "the builtin run has its probes: {}", b.len());
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        h.keys().collect::<Vec<_>>(),
        "the same probes\n{}",
        http.log()
    );
    let mut differ = Vec::new();
    let mut rate_limited = 0;
    for (fp, (code, bv, _)) in &b {
        let (_, hv, message) = &h[fp];
        let code = code.as_str();
        if code == "budget.quota" || code == "budget.statement_timeout" {
            assert_eq!(bv, "pass", "{code}");
            assert_eq!(hv, "not_verified", "{code}: {message}");
            assert!(
                message.contains("runs its own configuration")
                    || message.contains("cannot start an instance"),
                "{code}: {message}"
            );
            continue;
        }
        if code == "write.rate_limit" {
            assert_eq!(bv, "pass", "{code}");
            assert_eq!(hv, "not_verified", "{code}: {message}");
            continue;
        }
        if code.starts_with("write.")
            && bv == "pass"
            && hv == "not_verified"
            && message.contains("write_rate_exceeded")
            && message.contains("not isolated")
        {
            rate_limited += 1;
            continue;
        }
        if bv != hv {
            differ.push(format!("{code} {fp}: builtin {bv}, http {hv} ({message})"));
        }
    }
    assert!(
        rate_limited <= 5,
        "{rate_limited} write probes were not isolated from the served layer's write rate"
    );
    assert!(differ.is_empty(), "verdicts differ:\n{}", differ.join("\n"));
    let target = http.report["environment"]["target"]
        .as_str()
        .unwrap_or_default();
    assert!(target.starts_with("mcp-http http://127.0.0.1:"), "{target}");
}

/// Faults given to the served layer are caught over MCP: every code the self-test kills with
/// that fault in-process fails here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_of_a_served_layer_are_caught_over_mcp() {
    let db = preflight_probes::db::testing::database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = repo().join("fixtures/shop/policy.yaml");
    let policy = served_policy(dir.path(), false);
    let faults = [Fault::MaskOff, Fault::CursorUnsigned];
    let (server, port) = serve_http(
        &db,
        &policy,
        &[
            "--insecure-fault",
            Fault::MaskOff.as_str(),
            "--insecure-fault",
            Fault::CursorUnsigned.as_str(),
        ],
    )
    .await;
    let profile = serve_profile(dir.path(), port);
    let run = probe_db(&db, "cross_tenant,pii", &shop, Some(&profile), &[]);
    drop(server);
    // The codes of the families run here (the `sql` family's declared controls overlap, but it
    // has no SQL tool to call on this layer).
    let expected: BTreeSet<String> = ProbeCode::ALL
        .into_iter()
        .filter(|c| matches!(c.family(), Family::CrossTenant | Family::Pii))
        .filter(|c| {
            Control::declared_for(*c)
                .iter()
                .any(|ctl| faults.iter().any(|f| *ctl == Control::Fault(*f)))
        })
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(
        expected,
        [
            "cross_tenant.cursor_foreign",
            "cross_tenant.cursor_rebound",
            "pii.get_redacted",
            "pii.query_redacted",
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<BTreeSet<_>>()
    );
    let failed = run.codes("fail");
    let missed: Vec<&String> = expected.difference(&failed).collect();
    assert!(
        missed.is_empty(),
        "not caught over MCP: {missed:?}\n{}",
        run.log()
    );
    // A bad fault name is a usage error, before anything starts.
    let out = std::process::Command::new(super::targets_cli::BIN)
        .args(["serve", "--mcp", "http", "--policy"])
        .arg(&policy)
        .args([
            "--insecure-fault",
            "mask_of",
            "--db",
            "postgres://x@127.0.0.1:1/x",
        ])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault `mask_of`"));
}

/// `preflight agent run` (the shipped scenarios, the scripted model) on `db` against `target`
/// (a profile) or the built-in layer: (code, title) → verdict.
fn agent_on(
    db: &preflight_probes::db::Database,
    target: Option<&std::path::Path>,
) -> BTreeMap<(String, String), (String, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report");
    let mut cmd = std::process::Command::new(super::targets_cli::BIN);
    cmd.args(["agent", "run", "--allow-writes"])
        .arg(repo().join("scenarios"))
        .arg("--policy")
        .arg(repo().join("fixtures/shop/policy.yaml"))
        .arg("--out")
        .arg(&out);
    if let Some(t) = target {
        cmd.arg("--target").arg(t);
    }
    let output = cmd
        .env("PREFLIGHT_DB", db.owner_url())
        .env("PREFLIGHT_AGENT_URL", db.agent_url())
        .env("PREFLIGHT_AUDIT_URL", db.audit_url())
        .env("SERVE_JWT_KEY", super::serve_probes::KEY)
        .env("NO_COLOR", "1")
        .output()
        .expect("run preflight agent");
    let text = std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            ((s("code"), s("title")), (s("verdict"), s("message")))
        })
        .collect()
}

/// The shipped scenarios through `serve --mcp http` (bearer JWTs, one shared server) give the
/// in-process verdicts on the same database, check for check, and every check passes: the
/// harness's trace ids reach serve's audit records through `_meta.traceparent`, and `--policy`
/// states the served policy so hidden-field leaks are judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_scenarios_through_serve_over_http_give_the_builtin_verdicts() {
    let db = preflight_probes::db::testing::database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let builtin = agent_on(&db, None);
    let policy = served_policy(dir.path(), false);
    let (server, port) = serve_http(&db, &policy, &[]).await;
    let profile = serve_profile(dir.path(), port);
    let http = agent_on(&db, Some(&profile));
    drop(server);
    assert!(builtin.len() > 100, "{} findings", builtin.len());
    let verdicts = |m: &BTreeMap<(String, String), (String, String)>| {
        m.iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(verdicts(&builtin), verdicts(&http), "verdicts differ");
    let not_passing: Vec<_> = http.iter().filter(|(_, (v, _))| v != "pass").collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
}
