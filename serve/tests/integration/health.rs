//! `GET /healthz`: version, policy hash and every sink's status while the database is up; 503
//! and `unhealthy` once the database has been stopped — never "ok" against an unreachable
//! database. The no-health test variant answers "ok" regardless, which the server probe catches.

use preflight_serve::http::TestVariant;
use serde_json::Value;

use crate::support::*;

async fn healthz(base: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("GET /healthz");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

#[tokio::test]
async fn health_turns_unhealthy_when_the_database_stops() {
    let db = preflight_probes::db::testing::database().await;
    let policy = shop_policy();
    let served = serve(&db, ServeSpec::new(policy.path())).await;

    let (status, body) = healthz(&served.base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["policy_hash"], served.layer.policy.hash.as_str());
    assert_eq!(body["database"]["ok"], true);
    let sinks = body["audit_sinks"].as_array().expect("sinks");
    assert!(
        !sinks.is_empty(),
        "the shop policy has a Postgres sink: {body}"
    );
    assert!(sinks.iter().all(|s| s["ok"] == true), "{body}");
    assert!(
        !body.to_string().contains("postgres://"),
        "no connection string in the health body"
    );

    db.stop_server().expect("stop the database");
    let (status, body) = healthz(&served.base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"]["ok"], false, "{body}");
    served.stop().await;
}

#[tokio::test]
async fn the_no_health_variant_says_ok_against_a_stopped_database() {
    let db = preflight_probes::db::testing::database().await;
    let policy = shop_policy();
    let mut spec = ServeSpec::new(policy.path());
    spec.variant = TestVariant {
        no_health: true,
        ..Default::default()
    };
    let served = serve(&db, spec).await;
    db.stop_server().expect("stop the database");
    let (status, body) = healthz(&served.base).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    assert!(body.get("policy_hash").is_none(), "{body}");
    served.stop().await;
}
