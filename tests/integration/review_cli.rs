//! `preflight review` end to end: on a JSONL log and on the Postgres audit table (`--url`, a real
//! database filled by real gateway calls) the files are written and the exit code says whether
//! something needs attention; a tampered log is reported as not verifying (exit 1, no sections);
//! the regression suite given with `--cases` is run and its result reviewed (QRT-5); bad flags
//! exit 2 before anything runs.

use std::process::{Command, Stdio};
use std::sync::Arc;

use preflight_enforcer::audit::{
    arguments_sha256, AuditRecord, Decision, FsyncPolicy, JsonlSink, PostgresSink,
};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{self, Catalog};
use preflight_enforcer::{CallContext, ErrorCode, Gateway, Principal};
use preflight_probes::db::{provision, testing, Database, Db};
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn preflight() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_preflight"));
    cmd.env_remove("PREFLIGHT_AUDIT_DB_URL")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run preflight");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Twelve quiet reads by many principals, written by the real sink.
pub(crate) fn log(path: &std::path::Path) {
    let sink = JsonlSink::open(path, "test", FsyncPolicy::Never).unwrap();
    for i in 0..12 {
        let args = json!({"model": "orders", "id": i});
        sink.append_blocking(&AuditRecord {
            trace_id: format!("t{i}"),
            tenant_id: "acme".into(),
            user_id: format!("agent-{i}"),
            roles: vec!["support".into()],
            tool: "db_get".into(),
            arguments_sha256: arguments_sha256(&args),
            arguments: args,
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 1.0,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "b".repeat(64),
            subjects: Vec::new(),
        })
        .unwrap();
    }
}

#[test]
fn a_verified_log_is_reviewed_and_a_tampered_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    log(&path);
    let out = dir.path().join("review");
    let (code, stdout, err) = run(preflight()
        .args(["review", "--jsonl"])
        .arg(&path)
        .arg("--out")
        .arg(&out));
    // Only the regression suite, not run, needs attention in a quiet log.
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(stdout.contains("chain verified (12 records)"), "{stdout}");
    assert!(stdout.contains("1 item(s) need attention"), "{stdout}");
    assert!(
        stdout.contains("QRT-5: the regression suite was not run"),
        "{stdout}"
    );
    for f in ["review.md", "review.html", "review.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("\"rows_returned\":1", "\"rows_returned\":7", 1),
    )
    .unwrap();
    let (code, stdout, err) = run(preflight()
        .args(["review", "--jsonl"])
        .arg(&path)
        .arg("--out")
        .arg(&out));
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(
        stdout.contains("the audit chain DOES NOT VERIFY: record 1: edited"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(out.join("review.md")).unwrap();
    assert!(md.contains("**DOES NOT VERIFY**"), "{md}");
    assert!(!md.contains("## QRT-2"), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("review.json")).unwrap()).unwrap();
    assert_eq!(json["chain"]["verified"], false);
    assert!(json["sections"].is_null());
}

#[test]
fn bad_flags_exit_2() {
    let (code, _, err) =
        run(preflight().args(["review", "--jsonl", "x.jsonl", "--since", "ninety"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--since: expected"), "{err}");
    let (code, _, err) = run(preflight().args(["review"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no audit log given"), "{err}");
    let (code, _, err) =
        run(preflight().args(["review", "--jsonl", "x.jsonl", "--cases", "c.yaml"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--cases needs --policy"), "{err}");
}

fn shop(file: &str) -> std::path::PathBuf {
    testing::workspace_root().join("fixtures/shop").join(file)
}

/// `--db` for the suite's throwaway database, as `PREFLIGHT_TEST_DB` asks.
fn db_flag() -> &'static str {
    match testing::test_db().unwrap_or_else(|e| panic!("{e}")) {
        Db::Container { .. } => "container",
        _ => "local",
    }
}

fn review_json(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("review.json")).unwrap()).unwrap()
}

/// QRT-5 through `--cases`: a suite that holds is reviewed as passed (nothing else in the quiet
/// log needs attention, so exit 0); a suite with a wrong expectation fails the review (exit 1)
/// and names the case's line.
#[test]
fn the_regression_suite_given_with_cases_is_run_and_reviewed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    log(&path);
    let out = dir.path().join("review");
    let suite = |cases: &std::path::Path| {
        run(preflight()
            .args(["review", "--jsonl"])
            .arg(&path)
            .arg("--policy")
            .arg(shop("policy.yaml"))
            .arg("--cases")
            .arg(cases)
            .args(["--db", db_flag(), "--fixtures"])
            .arg(shop(""))
            .arg("--out")
            .arg(&out))
    };

    // The review's database is small (`--rows` 1000 per tenant): cases that need the big
    // orders table's scale to trip the scan budget belong to the probe run's suite.
    let good = dir.path().join("cases.yaml");
    std::fs::write(
        &good,
        "version: 1
cases:
  - name: acme reads its own customers, personal data masked
    principal: {tenant: acme, user: u}
    tool: db_query
    arguments: {model: customers, limit: 5}
    expect: allow
    expect_absent: [ssn, password_hash, api_key]
  - name: acme cannot read globex's customer 9
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: {deny: not_found}
  - name: ssn is never selectable
    principal: {tenant: acme, user: u}
    tool: db_query
    arguments: {model: customers, select: [id, ssn], limit: 1}
    expect: {deny: field_denied}
",
    )
    .unwrap();
    let (code, stdout, err) = suite(&good);
    assert_eq!(code, Some(0), "{stdout}{err}");
    let json = review_json(&out);
    let qrt5 = &json["sections"]["qrt5_suite"];
    assert_eq!(qrt5["status"], "passed", "{qrt5}");
    assert_eq!(qrt5["passed"], 3, "{qrt5}");
    assert_eq!(qrt5["failed"], 0, "{qrt5}");

    let wrong = dir.path().join("wrong-cases.yaml");
    std::fs::write(
        &wrong,
        "version: 1
cases:
  - name: claims another tenant's customer is visible
    principal: {tenant: acme, user: u}
    tool: db_get
    arguments: {model: customers, id: 9}
    expect: allow
",
    )
    .unwrap();
    let (code, stdout, err) = suite(&wrong);
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(
        stdout.contains("QRT-5: the regression suite failed"),
        "{stdout}"
    );
    let json = review_json(&out);
    let qrt5 = &json["sections"]["qrt5_suite"];
    assert_eq!(qrt5["status"], "failed", "{qrt5}");
    assert_eq!(qrt5["failed"], 1, "{qrt5}");
    let failure = qrt5["failures"][0].as_str().unwrap_or_default();
    assert!(
        failure.contains("line 3") && failure.contains("expected allow, got deny not_found"),
        "{failure}"
    );

    // A malformed suite is bad input, before any database starts.
    std::fs::write(&wrong, "cases: [").unwrap();
    let (code, _, err) = suite(&wrong);
    assert_eq!(code, Some(2), "{err}");
}

/// A shop database with few bulk rows: the review needs the audit log, not the scale.
async fn small_db() -> Database {
    let db = testing::test_db().unwrap_or_else(|e| panic!("{e}"));
    let mut options = testing::test_fixture_options().unwrap_or_else(|e| panic!("{e}"));
    options.rows = options.rows.min(200);
    provision(&db, &options)
        .await
        .unwrap_or_else(|e| panic!("provisioning failed:\n{}", e.report()))
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

/// `--url` (and `PREFLIGHT_AUDIT_DB_URL`): the review reads `preflight_audit.audit_log` of a
/// real database that the built-in layer filled: the chain verifies over every record, the
/// denial and the write are found; an edit forced past the log's triggers makes it a log that
/// does not verify and is not reviewed. The password never reaches the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_reads_the_postgres_audit_table_through_its_url() {
    let db = small_db().await;
    let catalog = Catalog::read_url(db.owner_url()).await.expect("catalog");
    let p = policy::load(shop("policy.yaml"), Some(&catalog)).expect("the shipped policy");
    let gw = BuiltinGateway::connect(
        Arc::new(p),
        db.agent_url(),
        BuiltinOptions {
            audit: vec![Arc::new(PostgresSink::in_transaction())],
            ..Default::default()
        },
    )
    .await
    .expect("gateway connects");
    let ctx = CallContext::new(Principal {
        tenant: "acme".to_string(),
        user: "agent-1".to_string(),
        roles: vec!["support".to_string()],
    });
    let mut own = PgConnection::connect(db.owner_url()).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id::bigint FROM public.customers WHERE tenant_id = 'acme' \
         AND deleted_at IS NULL ORDER BY id LIMIT 3",
    )
    .fetch_all(&mut own)
    .await
    .unwrap();
    for id in &ids {
        gw.call(&ctx, "db_get", json!({"model": "customers", "id": id}))
            .await
            .expect("own customer");
    }
    for _ in 0..2 {
        let e = gw
            .call(
                &ctx,
                "db_query",
                json!({"model": "customers", "select": ["id", "ssn"], "limit": 1}),
            )
            .await
            .expect_err("ssn is denied");
        assert_eq!(e.code, ErrorCode::FieldDenied);
    }
    gw.call(
        &ctx,
        "db_update",
        json!({"model": "customers", "id": ids[0], "data": {"name": "Renamed On Request"},
               "reason": "customer asked on the phone to correct the spelling of the name"}),
    )
    .await
    .expect("a write with a reason");
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(&mut own)
        .await
        .unwrap();
    assert_eq!(records, 6, "one record per call");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("review");
    let secret = password(db.owner_url());
    // `--url` first (a command line is visible to other users, so CI uses the environment
    // variable, which the second review takes).
    let review = |by_flag: bool| {
        let mut cmd = preflight();
        if by_flag {
            cmd.args(["review", "--url", db.owner_url()]);
        } else {
            cmd.env("PREFLIGHT_AUDIT_DB_URL", db.owner_url())
                .arg("review");
        }
        let r = run(cmd.arg("--out").arg(&out));
        assert!(
            !r.1.contains(&secret) && !r.2.contains(&secret),
            "the owner password leaked:\n{}{}",
            r.1,
            r.2
        );
        r
    };
    let (code, stdout, err) = review(true);
    // The suite was not given: that alone needs attention.
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(
        stdout.contains(&format!("chain verified ({records} records)")),
        "{stdout}"
    );
    let json = review_json(&out);
    assert_eq!(json["chain"]["verified"], true);
    let sections = &json["sections"];
    assert_eq!(sections["records"], records, "{sections}");
    let top = &sections["qrt2_denials"]["top"][0];
    assert_eq!(top["code"], "field_denied", "{top}");
    assert_eq!(top["count"], 2, "{top}");
    assert_eq!(sections["qrt4_reasons"]["writes"], 1, "{sections}");
    for f in ["review.md", "review.html", "review.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }

    let mut su = PgConnection::connect(db.superuser_url().expect("a superuser"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "ALTER TABLE preflight_audit.audit_log DISABLE TRIGGER USER; \
         UPDATE preflight_audit.audit_log SET rows_returned = 7 WHERE id = 2; \
         ALTER TABLE preflight_audit.audit_log ENABLE TRIGGER USER;",
    )
    .execute(&mut su)
    .await
    .expect("tamper as superuser");
    let (code, stdout, err) = review(false);
    assert_eq!(code, Some(1), "{stdout}{err}");
    assert!(
        stdout.contains("the audit chain DOES NOT VERIFY: record 2"),
        "{stdout}"
    );
    let json = review_json(&out);
    assert_eq!(json["chain"]["verified"], false);
    assert!(json["sections"].is_null());
}
