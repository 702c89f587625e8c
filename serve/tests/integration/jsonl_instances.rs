//! Several `serve` instances sharing one policy with a JSONL audit copy: each file is locked by
//! its one writer, so a plain path lets only the first instance start; `{instance}` (or `{pid}`)
//! in the path gives each its own file, and each file is a hash chain of its own that verifies.

use preflight_enforcer::{CallContext, Gateway, Principal};
use preflight_serve::{Layer, LayerConfig};
use serde_json::json;

use crate::support::*;

fn config(
    db: &preflight_probes::db::Database,
    policy: &std::path::Path,
    name: &str,
) -> LayerConfig {
    LayerConfig {
        policy_path: policy.to_path_buf(),
        database_url: db.agent_url().to_string(),
        secret_key: None,
        faults: Default::default(),
        instance: Some(name.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_writes_its_own_chained_jsonl_file() {
    let db = preflight_probes::db::testing::database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let template = dir.path().join("audit-{instance}.jsonl");
    let text =
        shop_policy_text().replace("audit/shop-audit.jsonl", &template.display().to_string());
    let policy = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("policy file");
    std::fs::write(policy.path(), &text).expect("write policy");

    let a = Layer::start(&config(&db, policy.path(), "a"))
        .await
        .expect("instance a");
    let b = Layer::start(&config(&db, policy.path(), "b"))
        .await
        .expect("instance b starts beside a: its own file");
    let who = Principal {
        tenant: "acme".into(),
        user: "alice".into(),
        roles: vec!["support".into()],
    };
    for layer in [&a, &b, &a] {
        let ctx = CallContext::new(who.clone());
        let _ = layer
            .gateway
            .call(&ctx, "db_query", json!({"model": "carriers", "limit": 1}))
            .await;
    }
    for (name, calls) in [("a", 2), ("b", 1)] {
        let path = dir.path().join(format!("audit-{name}.jsonl"));
        let report = preflight_enforcer::audit::verify_jsonl(&path, None)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(report.intact(), "{}: {report:?}", path.display());
        assert_eq!(report.records, calls, "{}", path.display());
    }

    // The same name twice is the same file: the second writer is refused, not interleaved.
    let again = Layer::start(&config(&db, policy.path(), "a")).await;
    assert!(again.is_err(), "a second writer of audit-a.jsonl started");

    // An unknown placeholder is a policy error at its line, with a hint.
    let bad = text.replace("{instance}", "{instanse}");
    let e = preflight_enforcer::policy::load_str(&bad, "p.yaml", None)
        .expect_err("unknown placeholder")
        .to_string();
    assert!(
        e.contains("unknown placeholder `{instanse}`") && e.contains("did you mean `{instance}`"),
        "{e}"
    );
}
