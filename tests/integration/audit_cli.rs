//! `preflight audit` and `preflight approvals` end to end, through the built binary, against a
//! real database whose audit log was filled by real gateway calls: verify (intact, edited,
//! deleted, truncated against a checkpoint), the saved views, subject access by a customer's
//! email, prune (dry run and real, chain verifiable after), the approval queue (list, approve,
//! reject; missing identity, unknown, expired and already-decided ids), and the same on a JSONL
//! log. The database URL always goes through the environment, and no output may carry its
//! password.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use preflight_enforcer::audit::jsonl::FsyncPolicy;
use preflight_enforcer::audit::{AuditRecord, AuditSink, Decision, JsonlSink, PostgresSink};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{self, Catalog, Policy};
use preflight_enforcer::{CallContext, ErrorCode, Gateway, Principal};
use preflight_probes::db::{provision, testing, Database};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

const BIN: &str = env!("CARGO_BIN_EXE_preflight");

/// What one run of the binary gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary with a clean environment for these commands, and the URL (if any) in the
/// environment variable, never on the command line.
fn preflight(url: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("PREFLIGHT_AUDIT_DB_URL")
        .env_remove("PREFLIGHT_APPROVER")
        .env("NO_COLOR", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if let Some(url) = url {
        cmd.env("PREFLIGHT_AUDIT_DB_URL", url);
    }
    cmd
}

fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run preflight");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The password of a postgres:// URL.
fn password(url: &str) -> String {
    let rest = &url[url.find("://").expect("a URL") + 3..];
    let userinfo = &rest[..rest.rfind('@').expect("credentials in the URL")];
    userinfo
        .split_once(':')
        .map(|(_, p)| p.to_string())
        .expect("a password")
}

/// Runs `args` against the database and checks no output carries its password.
fn pg(db: &Database, args: &[&str]) -> Run {
    let r = run(preflight(Some(db.owner_url())).args(args));
    let secret = password(db.owner_url());
    assert!(
        !r.stdout.contains(&secret) && !r.stderr.contains(&secret),
        "the owner password leaked:\n{r}"
    );
    r
}

/// A shop database with few bulk rows (these tests need the audit log, not the scale).
async fn small_db() -> Database {
    let db = testing::test_db().unwrap_or_else(|e| panic!("{e}"));
    let mut options = testing::test_fixture_options().unwrap_or_else(|e| panic!("{e}"));
    options.rows = options.rows.min(200);
    provision(&db, &options)
        .await
        .unwrap_or_else(|e| panic!("provisioning failed:\n{}", e.report()))
}

fn policy_path() -> std::path::PathBuf {
    testing::workspace_root().join("fixtures/shop/policy.yaml")
}

/// The shipped policy, loaded against the live catalog.
async fn shop_policy(db: &Database) -> Policy {
    let catalog = Catalog::read_url(db.owner_url()).await.expect("catalog");
    policy::load(policy_path(), Some(&catalog))
        .unwrap_or_else(|e| panic!("the shipped policy loads:\n{e}"))
}

/// The built-in gateway, auditing to Postgres inside each call's transaction.
async fn gateway(db: &Database, policy: Policy) -> BuiltinGateway {
    BuiltinGateway::connect(
        Arc::new(policy),
        db.agent_url(),
        BuiltinOptions {
            audit: vec![Arc::new(PostgresSink::in_transaction())],
            ..Default::default()
        },
    )
    .await
    .expect("gateway connects")
}

fn agent(tenant: &str) -> CallContext {
    CallContext::new(Principal {
        tenant: tenant.to_string(),
        user: "agent-1".to_string(),
        roles: vec!["support".to_string()],
    })
}

async fn owner(db: &Database) -> PgConnection {
    PgConnection::connect(db.owner_url())
        .await
        .expect("owner connects")
}

async fn superuser(db: &Database) -> PgConnection {
    PgConnection::connect(
        db.superuser_url()
            .expect("a throwaway database has a superuser"),
    )
    .await
    .expect("superuser connects")
}

/// Runs `sql` as superuser with the log's user triggers off: the only way past them.
async fn tamper(su: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(&format!(
        "ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER USER; \
         ALTER TABLE preflight_audit.audit_log ALTER COLUMN id SET GENERATED BY DEFAULT; {sql}; \
         ALTER TABLE preflight_audit.audit_log ALTER COLUMN id SET GENERATED ALWAYS; \
         ALTER TABLE preflight_audit.audit_log ENABLE TRIGGER USER;"
    ))
    .execute(su)
    .await
    .expect("tamper as superuser");
}

async fn audit_count(own: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(own)
        .await
        .expect("count the log")
}

/// A customer of `tenant`: (id, email).
async fn customer(own: &mut PgConnection, tenant: &str, nth: i64) -> (i64, String) {
    sqlx::query_as(
        "SELECT id::bigint, email FROM public.customers \
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id OFFSET $2 LIMIT 1",
    )
    .bind(tenant)
    .bind(nth)
    .fetch_one(own)
    .await
    .expect("a customer")
}

/// Real traffic: reads, a denial, a cross-tenant miss and a write with a reason. Returns the
/// customer whose data the calls touched (id, email) and the one they must not name.
async fn traffic(db: &Database, gw: &BuiltinGateway) -> ((i64, String), i64) {
    let mut own = owner(db).await;
    let (id, email) = customer(&mut own, "acme", 0).await;
    let (other, _) = customer(&mut own, "acme", 1).await;
    let (foreign, _) = customer(&mut own, "globex", 0).await;
    let ctx = agent("acme");
    gw.call(&ctx, "db_get", json!({"model": "customers", "id": id}))
        .await
        .expect("own customer");
    gw.call(&ctx, "db_get", json!({"model": "customers", "id": other}))
        .await
        .expect("another own customer");
    gw.call(
        &ctx,
        "db_query",
        json!({"model": "orders", "where": [{"field": "customer_id", "op": "eq", "value": id}], "limit": 5}),
    )
    .await
    .expect("orders of the customer");
    let e = gw
        .call(
            &ctx,
            "db_query",
            json!({"model": "customers", "select": ["id", "ssn"], "limit": 1}),
        )
        .await
        .expect_err("ssn is denied");
    assert_eq!(e.code, ErrorCode::FieldDenied);
    let e = gw
        .call(&ctx, "db_get", json!({"model": "customers", "id": foreign}))
        .await
        .expect_err("another tenant's customer");
    assert_eq!(e.code, ErrorCode::NotFound);
    gw.call(
        &ctx,
        "db_update",
        json!({"model": "customers", "id": id, "data": {"name": "Renamed On Request"},
               "reason": "customer asked on the phone to correct the spelling"}),
    )
    .await
    .expect("a write with a reason");
    ((id, email), other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_views_subject_checkpoint_and_tampering_on_postgres() {
    let db = small_db().await;
    let gw = gateway(&db, shop_policy(&db).await).await;
    let ((id, email), other) = traffic(&db, &gw).await;
    let mut own = owner(&db).await;
    let n = audit_count(&mut own).await;
    assert_eq!(n, 6, "one record per call");

    // Intact.
    let r = pg(&db, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains(&format!("records verified: {n}")), "{r}");
    assert!(r.stdout.contains("intact"), "{r}");
    let r = pg(&db, &["audit", "verify", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{r}");
    let v = r.json();
    assert_eq!(v["intact"], true);
    assert_eq!(v["records"], n);
    assert_eq!(v["first_break"], Value::Null);

    // Saved views.
    let r = run(preflight(None).args(["audit", "view"]));
    assert_eq!(r.code, Some(0), "{r}");
    for name in [
        "denials_by_code",
        "writes_with_reasons",
        "cross_tenant_attempts",
        "slowest_calls",
        "subject_access",
    ] {
        assert!(r.stdout.contains(name), "{r}");
    }
    let r = pg(&db, &["audit", "view", "nope"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("unknown view \"nope\"") && r.stderr.contains("slowest_calls"),
        "{r}"
    );
    let r = pg(
        &db,
        &["audit", "view", "denials_by_code", "--format", "json"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let rows = r.json()["rows"].as_array().cloned().unwrap();
    assert!(
        rows.contains(&json!(["field_denied", "acme", 1]))
            && rows.contains(&json!(["not_found", "acme", 1])),
        "{r}"
    );
    let r = pg(&db, &["audit", "view", "writes_with_reasons"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("db_update") && r.stdout.contains("customer asked on the phone"),
        "{r}"
    );
    assert!(r.stdout.contains("1 of 1 rows"), "{r}");
    let r = pg(
        &db,
        &["audit", "view", "cross-tenant-attempts", "--format", "json"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let v = r.json();
    assert_eq!(v["total"], 1, "{r}");
    assert_eq!(v["rows"][0][3], "not_found", "{r}");
    let r = pg(
        &db,
        &[
            "audit",
            "view",
            "slowest_calls",
            "--limit",
            "2",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let v = r.json();
    assert_eq!(v["total"], n, "{r}");
    let durations: Vec<f64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[8].as_f64().unwrap())
        .collect();
    assert_eq!(durations.len(), 2);
    assert!(durations[0] >= durations[1], "{r}");
    let r = pg(
        &db,
        &["audit", "view", "subject_access", "--format", "json"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let subjects: Vec<String> = r.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect();
    assert!(subjects.contains(&format!("customers:{id}")), "{r}");

    // Subject access by the customer's email: resolved through the masked column to the row.
    let r = pg(&db, &["audit", "subject", &email, "--format", "json"]);
    assert_eq!(r.code, Some(0), "{r}");
    let v = r.json();
    assert_eq!(v["resolved"], json!([format!("customers:{id}")]), "{r}");
    let ops = v["operations"].as_array().unwrap();
    let tools: Vec<&str> = ops.iter().map(|o| o["tool"].as_str().unwrap()).collect();
    assert!(
        tools.contains(&"db_get") && tools.contains(&"db_update"),
        "{r}"
    );
    for o in ops {
        assert!(
            o["subjects"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("customers:{id}"))),
            "{r}"
        );
        assert!(
            !o["subjects"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("customers:{other}"))),
            "another customer's read is not this subject's: {r}"
        );
    }
    let r = pg(&db, &["audit", "subject", &email]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains(&format!("customers:{id}"))
            && r.stdout.contains("db_update")
            && r.stdout.contains(&format!("{} operations", ops.len())),
        "{r}"
    );

    // Checkpoint the head.
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("head.json");
    let cp_arg = cp.to_str().unwrap();
    let r = pg(&db, &["audit", "checkpoint", cp_arg]);
    assert_eq!(r.code, Some(0), "{r}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(saved["head_id"], n);
    assert_eq!(saved["source"], "postgres");
    let r = pg(&db, &["audit", "verify", "--checkpoint", cp_arg]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout
            .contains(&format!("checkpoint: matched: record {n}")),
        "{r}"
    );

    // Edited: a field changed in place, found at that row; a checkpoint refuses to move on.
    let mut su = superuser(&db).await;
    tamper(
        &mut su,
        "CREATE TEMP TABLE keep AS SELECT * FROM preflight_audit.audit_log WHERE id = 3; \
         UPDATE preflight_audit.audit_log SET reason = 'nothing to see' WHERE id = 3",
    )
    .await;
    let r = pg(&db, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout.contains("BROKEN: edited at record 3 (position 3)"),
        "{r}"
    );
    let r = pg(&db, &["audit", "verify", "--format", "json"]);
    assert_eq!(r.code, Some(1), "{r}");
    let b = &r.json()["first_break"];
    assert_eq!(
        (b["kind"].as_str(), b["id"].as_i64()),
        (Some("edited"), Some(3))
    );
    let before = std::fs::read_to_string(&cp).unwrap();
    let r = pg(&db, &["audit", "checkpoint", cp_arg]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("checkpoint not written"), "{r}");
    assert_eq!(std::fs::read_to_string(&cp).unwrap(), before);
    tamper(
        &mut su,
        "DELETE FROM preflight_audit.audit_log WHERE id = 3; \
         INSERT INTO preflight_audit.audit_log OVERRIDING SYSTEM VALUE SELECT * FROM keep; \
         DROP TABLE keep",
    )
    .await;
    assert_eq!(pg(&db, &["audit", "verify"]).code, Some(0));

    // Deleted: one row removed.
    tamper(
        &mut su,
        "CREATE TEMP TABLE keep AS SELECT * FROM preflight_audit.audit_log WHERE id = 4; \
         DELETE FROM preflight_audit.audit_log WHERE id = 4",
    )
    .await;
    let r = pg(&db, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("BROKEN: deleted at record 4"), "{r}");
    tamper(
        &mut su,
        "INSERT INTO preflight_audit.audit_log OVERRIDING SYSTEM VALUE SELECT * FROM keep; \
         DROP TABLE keep",
    )
    .await;
    assert_eq!(pg(&db, &["audit", "verify"]).code, Some(0));

    // Truncated tail: the database's own chain head catches it ...
    tamper(
        &mut su,
        &format!("DELETE FROM preflight_audit.audit_log WHERE id > {}", n - 2),
    )
    .await;
    let r = pg(&db, &["audit", "verify"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("BROKEN: truncated"), "{r}");
    // ... and when the attacker fixes the head too, only the checkpoint does.
    sqlx::raw_sql(&format!(
        "UPDATE preflight_audit.chain_head SET count = {m}, \
           hash = (SELECT hash FROM preflight_audit.audit_log WHERE id = {m})",
        m = n - 2
    ))
    .execute(&mut su)
    .await
    .unwrap();
    assert_eq!(pg(&db, &["audit", "verify"]).code, Some(0));
    let r = pg(&db, &["audit", "verify", "--checkpoint", cp_arg]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout.contains(&format!(
            "BROKEN: truncated at record {} (position {})",
            n - 1,
            n - 1
        )),
        "{r}"
    );
    assert!(r.stdout.contains("the tail was removed"), "{r}");
}

/// Makes the first `k` records look 400 days old, re-sealing the chain as the trigger would
/// have (the state of a log that has been running for a year).
async fn age_records(su: &mut PgConnection, k: i64) {
    sqlx::raw_sql(&format!(
        "ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER USER;
         UPDATE preflight_audit.audit_log SET at = at - interval '400 days' WHERE id <= {k};
         SET extra_float_digits = 1;
         DO $$
         DECLARE r preflight_audit.audit_log; prev text := repeat('0', 64); h text;
         BEGIN
           FOR r IN SELECT * FROM preflight_audit.audit_log ORDER BY id LOOP
             r.prev_hash := prev;
             h := encode(sha256(convert_to(prev || '|' || preflight_audit.canonical_payload(r), 'UTF8')), 'hex');
             UPDATE preflight_audit.audit_log SET prev_hash = prev, hash = h WHERE id = r.id;
             prev := h;
           END LOOP;
           UPDATE preflight_audit.chain_head SET hash = prev;
         END $$;
         ALTER TABLE preflight_audit.audit_log ENABLE TRIGGER USER;"
    ))
    .execute(su)
    .await
    .expect("age the first records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_follows_the_retention_and_keeps_the_chain_verifiable() {
    let db = small_db().await;
    let gw = gateway(&db, shop_policy(&db).await).await;
    traffic(&db, &gw).await;
    let mut own = owner(&db).await;
    let n = audit_count(&mut own).await;
    let mut su = superuser(&db).await;
    age_records(&mut su, 4).await;
    assert_eq!(pg(&db, &["audit", "verify"]).code, Some(0));
    let policy = policy_path();
    let policy = policy.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("warm.jsonl");
    let archive_arg = archive.to_str().unwrap();

    // Without an archive only records past the whole retention (7 years and more) may go.
    let r = pg(&db, &["audit", "prune", "--dry-run", "--policy", policy]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("would remove nothing"), "{r}");
    assert!(r.stdout.contains(&format!("would keep {n} records")), "{r}");
    // Shorter than the whole retention needs an archive; inside the hot tier never.
    let r = pg(
        &db,
        &["audit", "prune", "--keep-days", "100", "--policy", policy],
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--archive FILE"), "{r}");
    let r = pg(
        &db,
        &[
            "audit",
            "prune",
            "--keep-days",
            "30",
            "--archive",
            archive_arg,
            "--policy",
            policy,
        ],
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("hot tier"), "{r}");

    // With an archive, the 400-day-old records may leave after the 90-day hot tier.
    let r = pg(
        &db,
        &[
            "audit",
            "prune",
            "--dry-run",
            "--archive",
            archive_arg,
            "--policy",
            policy,
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("would remove 4 records (ids 1..=4"),
        "{r}"
    );
    assert!(
        r.stdout.contains(&format!("would keep {} records", n - 4)),
        "{r}"
    );
    assert!(!archive.exists(), "a dry run writes nothing");
    assert_eq!(audit_count(&mut own).await, n, "a dry run removes nothing");

    let r = pg(
        &db,
        &[
            "audit",
            "prune",
            "--archive",
            archive_arg,
            "--policy",
            policy,
            "--note",
            "quarterly prune",
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("removed 4 records"), "{r}");
    assert!(r.stdout.contains("through record 4"), "{r}");
    assert!(r.stdout.contains("intact"), "{r}");
    // The prune itself is the newest record; the live log verifies from the cut, the archive
    // on its own.
    assert_eq!(audit_count(&mut own).await, n - 4 + 1);
    let r = pg(&db, &["audit", "verify"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("chain starts at: prune checkpoint"),
        "{r}"
    );
    assert!(r.stdout.contains("(after record 4)"), "{r}");
    let r = run(preflight(None).args(["audit", "verify", "--jsonl", archive_arg]));
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("records verified: 4"), "{r}");
    let (tool, note): (String, Option<String>) = sqlx::query_as(
        "SELECT tool, reason FROM preflight_audit.audit_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&mut own)
    .await
    .unwrap();
    assert_eq!(
        (tool.as_str(), note.as_deref()),
        ("audit_prune", Some("quarterly prune"))
    );

    // An archive is always a new file; a second run has nothing old left.
    let r = pg(
        &db,
        &[
            "audit",
            "prune",
            "--archive",
            archive_arg,
            "--policy",
            policy,
        ],
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("the file exists"), "{r}");

    // A broken log is never pruned: the cut would hide the evidence.
    tamper(
        &mut su,
        "UPDATE preflight_audit.audit_log SET reason = 'x' WHERE id = 6",
    )
    .await;
    let other = dir.path().join("other.jsonl");
    let r = pg(
        &db,
        &[
            "audit",
            "prune",
            "--archive",
            other.to_str().unwrap(),
            "--policy",
            policy,
        ],
    );
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("refusing to prune"), "{r}");
}

async fn gated_write(gw: &BuiltinGateway, product: i64, price: f64) -> String {
    let e = gw
        .call(
            &agent("acme"),
            "db_update",
            json!({"model": "products", "id": product, "data": {"price": price},
                   "reason": "supplier price list 2026"}),
        )
        .await
        .expect_err("a price change waits for approval");
    assert_eq!(e.code, ErrorCode::ApprovalRequired, "{}", e.to_json());
    e.details["approval_id"]
        .as_str()
        .expect("the error names the approval")
        .to_string()
}

async fn acme_product(own: &mut PgConnection, nth: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT id::bigint FROM public.products WHERE tenant_id = 'acme' ORDER BY id OFFSET $1 LIMIT 1",
    )
    .bind(nth)
    .fetch_one(own)
    .await
    .expect("a product")
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_list_approve_reject_and_refusals() {
    let db = small_db().await;
    let policy = shop_policy(&db).await;
    let mut short = policy.clone();
    for r in &mut short.approvals {
        r.sla_seconds = 1;
    }
    let gw = gateway(&db, policy).await;
    let gw_short = gateway(&db, short).await;
    let mut own = owner(&db).await;
    let (p1, p2, p3, p4) = (
        acme_product(&mut own, 0).await,
        acme_product(&mut own, 1).await,
        acme_product(&mut own, 2).await,
        acme_product(&mut own, 3).await,
    );
    let a1 = gated_write(&gw, p1, 777.25).await;
    let a2 = gated_write(&gw, p2, 12.5).await;
    let a3 = gated_write(&gw_short, p3, 9.0).await;
    let a4 = gated_write(&gw, p4, 3.0).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // The approver registry.
    let r = pg(
        &db,
        &["approvals", "approvers", "add", "alice", "--role", "admin"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let r = pg(
        &db,
        &["approvals", "approvers", "add", "bob", "--role", "support"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let r = pg(&db, &["approvals", "approvers", "list", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(
        r.json(),
        json!([{"name": "alice", "roles": ["admin"]}, {"name": "bob", "roles": ["support"]}])
    );

    // list: pending by default, expired apart, everything with --status all.
    let r = pg(&db, &["approvals", "list", "--format", "json"]);
    assert_eq!(r.code, Some(0), "{r}");
    let pending = r.json();
    let mut got = ids(&pending);
    got.sort();
    let mut want = vec![a1.clone(), a2.clone(), a4.clone()];
    want.sort();
    assert_eq!(got, want, "{r}");
    let r = pg(
        &db,
        &[
            "approvals",
            "list",
            "--status",
            "expired",
            "--format",
            "json",
        ],
    );
    assert_eq!(ids(&r.json()), vec![a3.clone()], "{r}");
    let r = pg(
        &db,
        &["approvals", "list", "--status", "all", "--format", "json"],
    );
    assert_eq!(ids(&r.json()).len(), 4, "{r}");
    let first = pending
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == a1.as_str())
        .unwrap();
    let short_hash = &first["payload_sha256"].as_str().unwrap()[..12];
    let r = pg(&db, &["approvals", "list"]);
    assert_eq!(r.code, Some(0), "{r}");
    for needle in [
        a1.as_str(),
        "products",
        "db_update",
        "acme",
        "agent-1",
        "supplier price list",
        short_hash,
        "3 pending requests",
    ] {
        assert!(r.stdout.contains(needle), "{needle} missing:\n{r}");
    }
    assert!(
        !r.stdout.contains(&a3),
        "expired requests are not pending:\n{r}"
    );

    // Deciding needs an identity: a usage error before anything is touched.
    let r = pg(&db, &["approvals", "approve", &a1]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--as USER") && r.stderr.contains("PREFLIGHT_APPROVER"),
        "{r}"
    );
    let r = pg(&db, &["approvals", "reject", &a1, "--as", "  "]);
    assert_eq!(r.code, Some(2), "{r}");

    // Refusals: a malformed id (2), an unknown id, an expired request, not an approver, a
    // missing role (1); nothing changes.
    let r = pg(
        &db,
        &["approvals", "approve", "not-a-uuid", "--as", "alice"],
    );
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("not an approval id"), "{r}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let r = pg(&db, &["approvals", "approve", unknown, "--as", "alice"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(&format!("no approval request {unknown}")),
        "{r}"
    );
    let r = pg(&db, &["approvals", "approve", &a3, "--as", "alice"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("is expired, not pending"), "{r}");
    let r = pg(&db, &["approvals", "approve", &a4, "--as", "mallory"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("mallory is not a registered approver"),
        "{r}"
    );
    let r = pg(&db, &["approvals", "approve", &a4, "--as", "bob"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("needs one of"), "{r}");

    // Approve (identity from --as), reject (identity from the environment).
    let r = pg(
        &db,
        &[
            "approvals",
            "approve",
            &a1,
            "--as",
            "alice",
            "--note",
            "checked the list",
        ],
    );
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains(&format!("approved {a1}")), "{r}");
    assert!(r.stdout.contains("decided by alice (roles admin)"), "{r}");
    let r = run(preflight(Some(db.owner_url()))
        .env("PREFLIGHT_APPROVER", "alice")
        .args(["approvals", "reject", &a2, "--format", "json"]));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.json()["state"], "rejected");
    assert_eq!(r.json()["decided_by"], "alice");

    // Already decided: a second approve (or a reject) is refused.
    let r = pg(&db, &["approvals", "approve", &a1, "--as", "alice"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("is approved, not pending"), "{r}");
    let r = pg(&db, &["approvals", "reject", &a2, "--as", "alice"]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("is rejected, not pending"), "{r}");

    let r = pg(
        &db,
        &[
            "approvals",
            "list",
            "--status",
            "approved",
            "--format",
            "json",
        ],
    );
    let approved = r.json();
    assert_eq!(ids(&approved), vec![a1.clone()], "{r}");
    assert_eq!(approved[0]["decided_by"], "alice");
    assert_eq!(approved[0]["decision_note"], "checked the list");
    let r = pg(
        &db,
        &[
            "approvals",
            "list",
            "--status",
            "rejected",
            "--format",
            "json",
        ],
    );
    assert_eq!(ids(&r.json()), vec![a2.clone()], "{r}");

    // The agent runs the approved write; the queue shows it executed and the audit log names
    // the approver.
    gw.call(
        &agent("acme"),
        "db_update",
        json!({"model": "products", "id": p1, "data": {"price": 777.25},
               "reason": "supplier price list 2026", "approval_id": a1}),
    )
    .await
    .expect("the approved write runs");
    let r = pg(
        &db,
        &[
            "approvals",
            "list",
            "--status",
            "executed",
            "--format",
            "json",
        ],
    );
    assert_eq!(ids(&r.json()), vec![a1.clone()], "{r}");
    let r = pg(
        &db,
        &["audit", "view", "writes_with_reasons", "--format", "json"],
    );
    assert_eq!(r.code, Some(0), "{r}");
    let newest = &r.json()["rows"][0];
    assert_eq!(newest[6], "allow", "{r}");
    assert_eq!(
        (newest[10].as_str(), newest[11].as_str()),
        (Some(a1.as_str()), Some("alice"))
    );
}

fn record(i: usize) -> AuditRecord {
    let args = json!({"model": "orders", "id": i});
    AuditRecord {
        trace_id: format!("trace-{i}"),
        tenant_id: "acme".into(),
        user_id: "agent-1".into(),
        roles: vec!["support".into()],
        tool: if i % 10 == 9 { "db_update" } else { "db_get" }.into(),
        arguments_sha256: preflight_enforcer::audit::arguments_sha256(&args),
        arguments: args,
        decision: if i.is_multiple_of(4) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        error_code: i.is_multiple_of(4).then(|| "not_found".to_string()),
        rows_returned: Some(1),
        rows_affected: None,
        duration_ms: 1.0 + i as f64 / 7.0,
        reason: (i % 10 == 9).then(|| format!("reason {i}")),
        approval_id: None,
        approver: None,
        policy_hash: "policyhash".into(),
        subjects: vec![format!("orders:{i}"), "customers:3".into()],
    }
}

fn jsonl(args: &[&str]) -> Run {
    run(preflight(None).args(args))
}

#[tokio::test]
async fn a_jsonl_log_verifies_checkpoints_and_answers_views_and_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    {
        let sink = JsonlSink::open(&path, "test", FsyncPolicy::Always).unwrap();
        for i in 0..30 {
            sink.append(None, &record(i)).await.unwrap();
        }
    }
    let log = path.to_str().unwrap();
    let cp = dir.path().join("cp.json");
    let cp_arg = cp.to_str().unwrap();

    let r = jsonl(&["audit", "verify", "--jsonl", log]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("records verified: 30"), "{r}");
    let r = jsonl(&["audit", "checkpoint", cp_arg, "--jsonl", log]);
    assert_eq!(r.code, Some(0), "{r}");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(
        (saved["head_id"].as_i64(), saved["source"].as_str()),
        (Some(30), Some("jsonl"))
    );

    // Views and subject access from the file.
    let r = jsonl(&[
        "audit",
        "view",
        "denials_by_code",
        "--jsonl",
        log,
        "--format",
        "json",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.json()["rows"], json!([["not_found", "acme", 8]]), "{r}");
    let r = jsonl(&["audit", "view", "writes_with_reasons", "--jsonl", log]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(
        r.stdout.contains("reason 29") && r.stdout.contains("3 of 3 rows"),
        "{r}"
    );
    let r = jsonl(&[
        "audit", "subject", "orders:7", "--jsonl", log, "--format", "json",
    ]);
    assert_eq!(r.code, Some(0), "{r}");
    let ops = r.json()["operations"].as_array().cloned().unwrap();
    assert_eq!(ops.len(), 1, "{r}");
    assert_eq!(ops[0]["trace_id"], "trace-7");
    let r = jsonl(&["audit", "prune", "--dry-run", "--jsonl", log]);
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("would remove nothing"), "{r}");

    // An edited line is named by record and line.
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = original.lines().map(String::from).collect();
    let write = |ls: &[String]| std::fs::write(&path, ls.join("\n") + "\n").unwrap();
    let mut edited = lines.clone();
    edited[9] = edited[9].replace("\"trace-9\"", "\"trace-forged\"");
    assert_ne!(edited[9], lines[9]);
    write(&edited);
    let r = jsonl(&["audit", "verify", "--jsonl", log]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stdout
            .contains("BROKEN: edited at record 10 (position 10)"),
        "{r}"
    );

    // A truncated tail verifies on its own, but not against the checkpoint; the checkpoint
    // file does not move on over it.
    write(&lines[..25]);
    assert_eq!(jsonl(&["audit", "verify", "--jsonl", log]).code, Some(0));
    let r = jsonl(&["audit", "verify", "--jsonl", log, "--checkpoint", cp_arg]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.contains("BROKEN: truncated at record 26"), "{r}");
    let before = std::fs::read_to_string(&cp).unwrap();
    let r = jsonl(&["audit", "checkpoint", cp_arg, "--jsonl", log]);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(std::fs::read_to_string(&cp).unwrap(), before);

    // A checkpoint of the other kind of log is a usage error.
    let pg_cp = dir.path().join("pg.json");
    std::fs::write(&pg_cp, before.replace("\"jsonl\"", "\"postgres\"")).unwrap();
    let r = jsonl(&[
        "audit",
        "verify",
        "--jsonl",
        log,
        "--checkpoint",
        pg_cp.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("checkpoint was taken from postgres"),
        "{r}"
    );
}

#[test]
fn flags_are_checked_before_anything_runs() {
    let missing = Path::new("/nonexistent/audit.jsonl");
    // No source, two sources, a URL that is not postgres://.
    let r = jsonl(&["audit", "verify"]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--url URL") && r.stderr.contains("--jsonl FILE"),
        "{r}"
    );
    let r = run(preflight(None).args([
        "audit",
        "verify",
        "--url",
        "postgres://u:hunter2@127.0.0.1:1/db",
        "--jsonl",
        "x.jsonl",
    ]));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("both given"), "{r}");
    let r = run(preflight(Some("mysql://root:hunter2@h/d")).args(["audit", "verify"]));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(!r.stderr.contains("hunter2"), "{r}");
    // A missing file or checkpoint.
    let r = jsonl(&["audit", "verify", "--jsonl", missing.to_str().unwrap()]);
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("/nonexistent/audit.jsonl"), "{r}");
    // Deciding without an identity, before any database is asked.
    let r = run(preflight(None).args([
        "approvals",
        "approve",
        "00000000-0000-4000-8000-000000000000",
    ]));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("--as USER"), "{r}");
    let r = run(preflight(None).args(["approvals", "list"]));
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("PREFLIGHT_AUDIT_DB_URL"), "{r}");
}

#[test]
fn an_unreachable_database_exits_3_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let url = "postgres://owner:hunter2@127.0.0.1:1/shop";
    for args in [
        vec!["audit", "verify"],
        vec!["approvals", "list"],
        vec!["audit", "view", "slowest_calls"],
    ] {
        let r = run(preflight(Some(url)).args(&args));
        assert_eq!(r.code, Some(3), "{args:?}: {r}");
        assert!(
            r.stderr
                .contains("cannot connect to postgres://owner:****@127.0.0.1:1/shop"),
            "{r}"
        );
        assert!(
            !r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"),
            "{r}"
        );
    }
}
