//! Shared helpers for the write, approval, audit and budget-store tests.

#![allow(dead_code)] // helpers for the write-tool tests, which land with builtin/write.rs

use preflight_enforcer::audit::AuditRecord;
use preflight_enforcer::audit::Decision;
use preflight_probes::db::{provision, testing, Database};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

/// A database with the shop fixtures and few bulk rows (these tests do not need the scale).
pub async fn small_db() -> Database {
    let db = testing::test_db().unwrap_or_else(|e| panic!("{e}"));
    let mut options = testing::test_fixture_options().unwrap_or_else(|e| panic!("{e}"));
    options.rows = options.rows.min(200);
    provision(&db, &options)
        .await
        .unwrap_or_else(|e| panic!("provisioning failed:\n{}", e.report()))
}

pub async fn superuser(db: &Database) -> PgConnection {
    let url = db
        .superuser_url()
        .expect("the throwaway backends expose a superuser");
    PgConnection::connect(url)
        .await
        .expect("superuser connects")
}

pub async fn owner(db: &Database) -> PgConnection {
    PgConnection::connect(db.owner_url())
        .await
        .expect("owner connects")
}

/// A record with varied, awkward values (floats, nesting, unicode, control characters).
pub fn record(i: usize) -> AuditRecord {
    let args = json!({
        "model": "orders",
        "where": [{"field": "status", "op": "eq", "value": "paid"}],
        "limit": 10 + i,
        "ratio": 0.1 + 0.2,
        "tiny": 1e-7,
        "huge": 1e20,
        "neg": -12.5,
        "text": format!("line\nbreak\ttab \u{1} é ✓ \"quoted\" \\ {i}"),
        "nested": {"zz": [1, 2, {"b": null, "a": true}], "a": false},
    });
    AuditRecord {
        trace_id: format!("trace-{i}"),
        tenant_id: "acme".into(),
        user_id: format!("user-{}", i % 3),
        roles: vec!["support".into(), "analyst".into()],
        tool: "db_query".into(),
        arguments_sha256: preflight_enforcer::audit::arguments_sha256(&args),
        arguments: args,
        decision: if i.is_multiple_of(5) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        error_code: i.is_multiple_of(5).then(|| "field_denied".to_string()),
        rows_returned: Some(i as i64),
        rows_affected: None,
        duration_ms: 0.1 * i as f64 + 1.0 / 3.0,
        reason: i.is_multiple_of(2).then(|| format!("reason {i}")),
        approval_id: None,
        approver: None,
        policy_hash: "policyhash".into(),
        subjects: vec![format!("orders:{i}"), "customers:3".into()],
    }
}

/// Every canary value of the fixtures.
pub async fn canaries(owner: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT value FROM preflight_meta.canaries")
        .fetch_all(owner)
        .await
        .expect("canaries readable by the owner")
}

/// Every stored audit record as text (arguments, reason, everything), for leak scans.
pub async fn audit_texts(owner: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT row_to_json(a)::text FROM preflight_audit.audit_log a ORDER BY id")
        .fetch_all(owner)
        .await
        .expect("audit log readable by the owner")
}

/// A JSON snapshot of every row of the shop's tenant tables, for "nothing changed" checks.
pub async fn snapshot(owner: &mut PgConnection) -> Value {
    let mut out = serde_json::Map::new();
    for t in [
        "users",
        "customers",
        "products",
        "orders",
        "order_items",
        "refunds",
        "payment_methods",
        "support_tickets",
    ] {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]'::jsonb) FROM public.{t} x WHERE x.id <= 200 OR x.id > (SELECT max(id) - 50 FROM public.{t})"
        );
        let v: Value = sqlx::query_scalar(&sql)
            .fetch_one(&mut *owner)
            .await
            .expect("snapshot query");
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM public.{t}"))
            .fetch_one(&mut *owner)
            .await
            .expect("count");
        out.insert(t.to_string(), json!({"count": count, "rows": v}));
    }
    Value::Object(out)
}

/// A real `redis-server` on a free port, in a temp dir, without persistence; killed on drop.
pub struct RedisServer {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let bin = std::env::var("PREFLIGHT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().expect("temp dir");
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let mut child = std::process::Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {bin} ({e}); install it: apt-get install -y redis-server")
                });
            let url = format!("redis://127.0.0.1:{port}/");
            for _ in 0..100 {
                if let Ok(client) = redis::Client::open(url.as_str()) {
                    if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                        if pong.is_ok() {
                            return RedisServer {
                                child,
                                url,
                                _dir: dir,
                            };
                        }
                    }
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not come up");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A shop database, its owner pool, and the shipped policy loaded against its live catalog.
pub struct WriteEnv {
    pub db: Database,
    pub owner: sqlx::PgPool,
    pub policy: std::sync::Arc<preflight_enforcer::policy::Policy>,
}

pub async fn write_env() -> WriteEnv {
    let db = small_db().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let catalog = preflight_enforcer::policy::Catalog::read_url(db.owner_url())
        .await
        .expect("catalog");
    let path = testing::workspace_root().join("fixtures/shop/policy.yaml");
    let policy = preflight_enforcer::policy::load(&path, Some(&catalog))
        .unwrap_or_else(|e| panic!("the shipped policy loads:\n{e}"));
    WriteEnv {
        db,
        owner,
        policy: std::sync::Arc::new(policy),
    }
}

impl WriteEnv {
    /// The shipped policy with rates and quotas lifted (tests of other rules make many calls).
    pub fn unlimited(&self) -> std::sync::Arc<preflight_enforcer::policy::Policy> {
        let mut p = (*self.policy).clone();
        p.quotas.calls_per_hour = None;
        p.quotas.rows_per_hour = None;
        for m in p.models.values_mut() {
            m.budgets.max_writes_per_minute = None;
        }
        std::sync::Arc::new(p)
    }

    /// A gateway auditing to Postgres inside each call's transaction.
    pub async fn gateway(
        &self,
        policy: std::sync::Arc<preflight_enforcer::policy::Policy>,
        faults: preflight_enforcer::Faults,
        store: Option<std::sync::Arc<dyn preflight_enforcer::budget_store::BudgetStore>>,
    ) -> preflight_enforcer::builtin::BuiltinGateway {
        preflight_enforcer::builtin::BuiltinGateway::connect(
            policy,
            self.db.agent_url(),
            preflight_enforcer::builtin::BuiltinOptions {
                faults,
                secret_key: [7u8; 32],
                audit: vec![std::sync::Arc::new(
                    preflight_enforcer::audit::PostgresSink::in_transaction(),
                )],
                budget_store: store,
                ..Default::default()
            },
        )
        .await
        .expect("gateway connects")
    }

    pub async fn conn(&self) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
        self.owner.acquire().await.expect("owner connection")
    }

    /// Audit records so far.
    pub async fn audit_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
            .fetch_one(&self.owner)
            .await
            .expect("count audit")
    }

    /// The newest audit record as JSON.
    pub async fn last_audit(&self) -> Value {
        sqlx::query_scalar(
            "SELECT to_jsonb(a) FROM preflight_audit.audit_log a ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(&self.owner)
        .await
        .expect("last audit record")
    }
}

pub fn principal(tenant: &str, user: &str) -> preflight_enforcer::CallContext {
    preflight_enforcer::CallContext::new(preflight_enforcer::Principal {
        tenant: tenant.to_string(),
        user: user.to_string(),
        roles: vec!["support".to_string()],
    })
}
