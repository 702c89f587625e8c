//! Shared by the tests: a database, a served layer on a free loopback port, tokens minted with
//! the test key, and an MCP client that sends them.

use std::path::{Path, PathBuf};

use jsonwebtoken::{encode, EncodingKey, Header};
use preflight_probes::db::Database;
use preflight_serve::auth::{JwtSettings, JwtVerifier};
use preflight_serve::http::{HttpOptions, HttpServer, TestVariant};
use preflight_serve::limits::Rate;
use preflight_serve::{Layer, LayerConfig};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

pub const KEY_ENV: &str = "PREFLIGHT_SERVE_TEST_KEY";
pub const KEY: &str = "serve-test-shared-key-0123456789abcdef";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of the shop policy (with `extra` appended, a top-level section), whose JSONL audit copy
/// goes to a temporary folder instead of the policy's relative path.
pub struct TestPolicy {
    file: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

impl TestPolicy {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// The shipped policy without its `rate_limits:` section: the tests add the limits they test.
pub fn shop_policy_text() -> String {
    let text =
        std::fs::read_to_string(repo().join("fixtures/shop/policy.yaml")).expect("shop policy");
    let mut in_limits = false;
    text.lines()
        .filter(|l| {
            // The section runs from `rate_limits:` to the next top-level key.
            if !l.starts_with(' ') && !l.is_empty() {
                in_limits = l.starts_with("rate_limits:");
            }
            !in_limits
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

pub fn policy_text(text: &str) -> TestPolicy {
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = dir.path().join("audit.jsonl");
    assert!(text.contains("audit/shop-audit.jsonl"));
    let text = text.replace("audit/shop-audit.jsonl", &jsonl.display().to_string());
    let file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp policy");
    std::fs::write(file.path(), text).expect("write policy");
    TestPolicy { file, _dir: dir }
}

pub fn policy_with(extra: &str) -> TestPolicy {
    let mut text = shop_policy_text();
    text.push('\n');
    text.push_str(extra);
    policy_text(&text)
}

pub fn shop_policy() -> TestPolicy {
    policy_with("")
}

pub fn verifier() -> JwtVerifier {
    // SAFETY of the test: every test sets the same value, so concurrent setters agree.
    std::env::set_var(KEY_ENV, KEY);
    JwtVerifier::new(&JwtSettings {
        hs256_key_env: Some(KEY_ENV.to_string()),
        ..Default::default()
    })
    .expect("verifier")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A valid HS256 token for `tenant`/`user`.
pub fn token(tenant: &str, user: &str) -> String {
    token_with(json!({"tenant": tenant, "sub": user, "roles": ["support"], "exp": now() + 600}))
}

pub fn token_with(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("encode")
}

pub struct Served {
    pub base: String,
    pub layer: Layer,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub struct ServeSpec<'a> {
    pub policy: &'a Path,
    pub variant: TestVariant,
    pub per_ip: Option<Rate>,
    pub per_principal: Option<Rate>,
}

impl<'a> ServeSpec<'a> {
    pub fn new(policy: &'a Path) -> Self {
        Self {
            policy,
            variant: TestVariant::default(),
            per_ip: None,
            per_principal: None,
        }
    }
}

pub async fn serve(db: &Database, spec: ServeSpec<'_>) -> Served {
    let layer = Layer::start(&LayerConfig {
        policy_path: spec.policy.to_path_buf(),
        database_url: db.agent_url().to_string(),
        secret_key: None,
        faults: Default::default(),
        instance: None,
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "start the layer: {}",
            preflight_probes::runner::error_chain(&e)
        )
    });
    let server = HttpServer::bind(
        layer.clone(),
        HttpOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            verifier: verifier(),
            per_ip: spec.per_ip,
            per_principal: spec.per_principal,
            allowed_hosts: Vec::new(),
            variant: spec.variant,
        },
    )
    .await
    .expect("bind");
    let addr = server.local_addr().expect("addr");
    let cancel = server.cancel_token();
    let task = tokio::spawn(async move {
        server.run().await.expect("serve");
    });
    Served {
        base: format!("http://{addr}"),
        layer,
        cancel,
        task: Some(task),
    }
}

/// An MCP session at `base`/mcp sending `token`.
pub async fn client(base: &str, token: &str) -> Result<RunningService<RoleClient, ()>, String> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    ().serve(transport).await.map_err(|e| e.to_string())
}

/// A tool call's JSON result (`Err` with the denial JSON for an `isError` result).
pub async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    args: Value,
) -> Result<Value, Value> {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let args: Map<String, Value> = args;
    let r = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .expect("call");
    let text: String = r
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    let v: Value = serde_json::from_str(&text).expect("JSON result");
    if r.is_error.unwrap_or(false) {
        Err(v)
    } else {
        Ok(v)
    }
}

/// A raw `initialize` POST to /mcp with `authorization` (for refusals before MCP).
pub async fn raw_initialize(base: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}}
        }));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.expect("send")
}

/// The id of one order of `tenant`, from the owner connection (ground truth).
pub async fn an_order_of(db: &Database, tenant: &str) -> i64 {
    let owner = db.owner_pool().await.expect("owner pool");
    sqlx::query_scalar("SELECT id FROM public.orders WHERE tenant_id = $1 ORDER BY id LIMIT 1")
        .bind(tenant)
        .fetch_one(&owner)
        .await
        .expect("an order")
}

/// Audit records refused before MCP with `code`, from the owner connection.
pub async fn refusals(db: &Database, code: &str) -> i64 {
    let owner = db.owner_pool().await.expect("owner pool");
    sqlx::query_scalar(
        "SELECT count(*) FROM preflight_audit.audit_log WHERE tool = 'http:/mcp' AND error_code = $1",
    )
    .bind(code)
    .fetch_one(&owner)
    .await
    .expect("count refusals")
}
