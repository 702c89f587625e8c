//! Two served instances on one database with the Redis budget store share the per-tenant quota
//! (BUD-6): after the first has used the tenant's budget, the second refuses with
//! `quota_exceeded`. With the memory store each instance would allow its own budget again.

use serde_json::json;

use crate::support::*;

/// A real `redis-server` on a free port, without persistence; killed on drop.
struct RedisServer {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    async fn start() -> Option<RedisServer> {
        let bin = std::env::var("PREFLIGHT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = std::process::Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                preflight_probes::db::testing::prerequisite_missing(
                    "two_instances_share_the_quota_through_redis",
                    &format!(
                        "cannot start {bin} ({e}); install it: apt-get install -y redis-server"
                    ),
                );
                return None;
            }
        };
        let url = format!("redis://127.0.0.1:{port}/");
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return Some(RedisServer {
                            child,
                            url,
                            _dir: dir,
                        });
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        panic!("redis-server did not come up on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_instances_share_the_quota_through_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    std::env::set_var("PREFLIGHT_SERVE_TEST_REDIS", &redis.url);
    let db = preflight_probes::db::testing::database().await;
    let text = shop_policy_text();
    assert!(text.contains("calls_per_hour: 600") && text.contains("budget_store: memory"));
    let text = text
        .replace("calls_per_hour: 600", "calls_per_hour: 4")
        .replace("instances: 1 ", "instances: 2 ")
        .replace(
            "budget_store: memory",
            "budget_store: {redis: {url_env: PREFLIGHT_SERVE_TEST_REDIS}}",
        );
    // One policy file each: every instance keeps its own JSONL copy (the file is locked by its
    // writer), as on two machines.
    let (p1, p2) = (policy_text(&text), policy_text(&text));

    let first = serve(&db, ServeSpec::new(p1.path())).await;
    let second = serve(&db, ServeSpec::new(p2.path())).await;
    assert_eq!(first.layer.budget_store.kind(), "redis");
    let order = an_order_of(&db, "acme").await;
    let args = json!({"model": "orders", "id": order});

    let a = client(&first.base, &token("acme", "alice"))
        .await
        .expect("session 1");
    for i in 0..4 {
        let r = call(&a, "db_get", args.clone()).await;
        assert!(
            r.is_ok(),
            "call {i} on the first instance is within the quota: {r:?}"
        );
    }
    let b = client(&second.base, &token("acme", "bob"))
        .await
        .expect("session 2");
    let r = call(&b, "db_get", args.clone()).await;
    assert_eq!(
        r.as_ref().err().and_then(|e| e["code"].as_str()),
        Some("quota_exceeded"),
        "the second instance sees the first one's calls: {r:?}"
    );
    // Another tenant's quota is its own.
    let g = client(&second.base, &token("globex", "gina"))
        .await
        .expect("session 3");
    let gorder = an_order_of(&db, "globex").await;
    assert!(call(&g, "db_get", json!({"model": "orders", "id": gorder}))
        .await
        .is_ok());
    let _ = a.cancel().await;
    let _ = b.cancel().await;
    let _ = g.cancel().await;
    first.stop().await;
    second.stop().await;
}
