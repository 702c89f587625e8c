//! The pipelined read path against a real shop database: the same answers as the sqlx path for
//! every column type, the tenant context applied before the read, errors mapped to the same
//! codes, a statement timeout, and an audit INSERT that fails the call closed.

use std::sync::Arc;
use std::time::Duration;

use preflight_enforcer::audit::{AuditSink, PostgresSink};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::Policy;
use preflight_enforcer::{ErrorCode, Fault, Faults, Gateway};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::gateway_support::*;

async fn gateway(env: &Env, policy: Arc<Policy>, pipeline: bool, opts: Opts) -> BuiltinGateway {
    BuiltinGateway::connect(
        policy,
        env.db.agent_url(),
        BuiltinOptions {
            faults: opts.faults,
            secret_key: [42u8; 32],
            audit: if opts.audit {
                vec![Arc::new(PostgresSink::in_transaction()) as Arc<dyn AuditSink>]
            } else {
                Vec::new()
            },
            max_connections: opts.max_connections,
            pipeline,
            ..BuiltinOptions::default()
        },
    )
    .await
    .expect("gateway connects")
}

struct Opts {
    faults: Faults,
    audit: bool,
    max_connections: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            faults: Faults::none(),
            audit: true,
            max_connections: 4,
        }
    }
}

async fn superuser(env: &Env) -> PgConnection {
    PgConnection::connect(
        env.db
            .superuser_url()
            .expect("a superuser for the test database"),
    )
    .await
    .expect("superuser")
}

/// A call's answer as comparable JSON: the value, or the error without its correlation id.
async fn answer(gw: &BuiltinGateway, tenant: &str, tool: &str, args: &Value) -> Value {
    match gw.call(&ctx(tenant), tool, args.clone()).await {
        Ok(v) => json!({"ok": v}),
        Err(e) => {
            json!({"err": {"code": e.code.as_str(), "message": e.message, "details": e.details}})
        }
    }
}

async fn audit_rows(env: &Env, trace_tool: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT decision, error_code FROM preflight_audit.audit_log WHERE tool = $1 ORDER BY id",
    )
    .bind(trace_tool)
    .fetch_all(&env.owner)
    .await
    .expect("read the audit log")
}

#[tokio::test]
async fn pipelined_reads_answer_exactly_like_the_sqlx_path_for_every_column_type() {
    let env = env().await;
    // The shop has bigint, integer, smallint, numeric, boolean, date, text and timestamptz; a
    // scratch table adds the types it lacks.
    sqlx::raw_sql(
        "CREATE TABLE public.pf_types (
             id bigint PRIMARY KEY, tenant_id text NOT NULL, u uuid, j json, jb jsonb,
             ta text[], ia integer[], ts timestamp, t time, iv interval, f8 double precision,
             f4 real, n numeric, nn numeric, d date);
         INSERT INTO public.pf_types VALUES
             (1, 'acme', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1, \"a\": [1, 2.5]}',
              '{\"k\": {\"x\": null}}', ARRAY['x', 'y, z', NULL], ARRAY[1, -2],
              '2024-02-29 13:14:15.123456', '23:59:59.5', '1 day 02:03:04', 1.0000000000000002,
              3.25, 12345678901234567890.123456789, NULL, '2024-02-29'),
             (2, 'acme', NULL, 'null', '[]', '{}', '{}', NULL, NULL, NULL, -1.5e300, -0.5,
              -0.000000001, 0, NULL),
             (3, 'globex', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '1', '\"s\"', NULL, NULL, NULL,
              NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         GRANT SELECT ON public.pf_types TO preflight_agent;
         ANALYZE public.pf_types;",
    )
    .execute(&env.owner)
    .await
    .expect("scratch table");
    let policy = Arc::new(shop_policy(&env.owner).await);
    let piped = gateway(&env, policy.clone(), true, Opts::default()).await;
    let plain = gateway(&env, policy.clone(), false, Opts::default()).await;
    assert!(
        piped.pipelined(),
        "a local test database takes the pipelined path"
    );
    assert!(!plain.pipelined());

    let mut calls = Vec::new();
    for (name, model) in &policy.models {
        let includes: Vec<&String> = model.relations.keys().collect();
        let narrow = if name == "orders" {
            json!([{"field": "created_at", "op": "between", "value": ["2024-01-01", "2024-01-31"]}])
        } else {
            json!([])
        };
        calls.push((
            "db_query",
            json!({"model": name, "where": narrow, "include": includes, "limit": 25}),
        ));
        for id in [1, 2, 3, 5] {
            calls.push((
                "db_get",
                json!({"model": name, "id": id, "include": includes}),
            ));
        }
    }
    calls.push((
        "db_aggregate",
        json!({"model": "order_items", "group_by": ["product_id"],
               "aggregates": [{"function": "sum", "field": "quantity"},
                              {"function": "count"}], "limit": 50}),
    ));
    let before = piped.pipelined_calls();
    let mut seen_types = std::collections::BTreeSet::new();
    for tenant in ["acme", "globex"] {
        for (tool, args) in &calls {
            let a = answer(&piped, tenant, tool, args).await;
            let b = answer(&plain, tenant, tool, args).await;
            assert_eq!(a, b, "{tool} {args} as {tenant}: the two paths differ");
            if let Some(model) = args["model"].as_str().and_then(|m| policy.model(m)) {
                let rows = match (&a["ok"]["rows"], &a["ok"]["row"]) {
                    (Value::Array(rows), _) => rows.clone(),
                    (_, row @ Value::Object(_)) => vec![row.clone()],
                    _ => Vec::new(),
                };
                for row in &rows {
                    for c in &model.columns {
                        if row.get(&c.name).is_some_and(|v| !v.is_null()) {
                            seen_types.insert(c.pg_type.clone());
                        }
                    }
                }
            }
        }
    }
    // Budget-checked reads (an EXPLAIN first) stay on sqlx; the key lookups are pipelined.
    assert!(
        piped.pipelined_calls() > before,
        "the reads did not take the pipelined path"
    );
    assert_eq!(plain.pipelined_calls(), 0);
    for ty in [
        "bigint",
        "integer",
        "smallint",
        "numeric(12,2)",
        "boolean",
        "date",
        "text",
        "timestamp with time zone",
        "uuid",
        "json",
        "jsonb",
        "text[]",
        "integer[]",
        "timestamp without time zone",
        "time without time zone",
        "interval",
        "double precision",
        "real",
        "numeric",
    ] {
        assert!(
            seen_types.contains(ty),
            "no non-null {ty} value was compared: {seen_types:?}"
        );
    }
}

#[tokio::test]
async fn pipelined_reads_see_only_the_principals_tenant() {
    let env = env().await;
    // With the layer's own tenant predicate off, only row-level security (reading the tenant
    // setting the pipeline sends before the read) keeps other tenants out.
    let gw = gateway(
        &env,
        env.policy.clone(),
        true,
        Opts {
            faults: Faults::one(Fault::NoTenantPredicate),
            ..Opts::default()
        },
    )
    .await;
    let foreign: i64 = sqlx::query_scalar(
        "SELECT id FROM public.customers WHERE tenant_id = 'globex' ORDER BY id LIMIT 1",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    let own: i64 = sqlx::query_scalar(
        "SELECT id FROM public.customers WHERE tenant_id = 'acme' ORDER BY id LIMIT 1",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    let before = gw.pipelined_calls();
    let r = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": own}),
    )
    .await;
    assert_eq!(r["row"]["tenant_id"], "acme", "{r}");
    denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": foreign}),
        ErrorCode::NotFound,
    )
    .await;
    assert!(gw.pipelined_calls() >= before + 2);

    // Control: without the tenant setting, row-level security shows this role nothing at all, so
    // the rows above came through the setting the pipeline sent ahead of the read.
    let unset = gateway(
        &env,
        env.policy.clone(),
        true,
        Opts {
            faults: [Fault::NoTenantPredicate, Fault::RlsDisabled]
                .into_iter()
                .collect(),
            ..Opts::default()
        },
    )
    .await;
    let before = unset.pipelined_calls();
    denied(
        &unset,
        "acme",
        "db_get",
        json!({"model": "customers", "id": own}),
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(unset.pipelined_calls(), before + 1);
}

#[tokio::test]
async fn pipelined_errors_map_to_the_same_codes_and_are_audited() {
    let env = env().await;
    let piped = gateway(&env, env.policy.clone(), true, Opts::default()).await;
    let plain = gateway(&env, env.policy.clone(), false, Opts::default()).await;
    let leak = Opts {
        faults: Faults::one(Fault::ErrorDetailLeak),
        ..Opts::default()
    };
    let piped_leak = gateway(&env, env.policy.clone(), true, leak).await;
    let leak = Opts {
        faults: Faults::one(Fault::ErrorDetailLeak),
        ..Opts::default()
    };
    let plain_leak = gateway(&env, env.policy.clone(), false, leak).await;
    let cases = [
        // The database rejects the date (SQLSTATE 22008): validation_error.
        json!({"model": "orders", "where": [{"field": "created_at", "op": "gte", "value": "2024-13-45"}]}),
        // The planner prices it over the scan budget: scan_budget_exceeded, nothing read.
        json!({"model": "orders", "order_by": [{"field": "total", "direction": "desc"}], "limit": 5}),
    ];
    for args in &cases {
        let a = answer(&piped, "acme", "db_query", args).await;
        let b = answer(&plain, "acme", "db_query", args).await;
        assert!(a.get("err").is_some(), "{args}: expected an error, got {a}");
        assert_eq!(a, b, "{args}: the two paths differ");
        let a = answer(&piped_leak, "acme", "db_query", args).await;
        let b = answer(&plain_leak, "acme", "db_query", args).await;
        assert_eq!(a, b, "{args} under error_detail_leak: the two paths differ");
    }
    let codes = [
        ErrorCode::ValidationError.as_str().to_string(),
        ErrorCode::ScanBudgetExceeded.as_str().to_string(),
    ];
    let audited = audit_rows(&env, "db_query").await;
    for code in &codes {
        let n = audited
            .iter()
            .filter(|(d, c)| d == "deny" && c.as_deref() == Some(code))
            .count();
        assert_eq!(
            n, 4,
            "{code}: one deny record per call on each path: {audited:?}"
        );
    }
    // After failed statements every pooled connection is clean again: with one connection, the
    // next read works (a connection handed back inside an aborted transaction would fail it).
    let one = gateway(
        &env,
        env.policy.clone(),
        true,
        Opts {
            max_connections: 1,
            ..Opts::default()
        },
    )
    .await;
    for _ in 0..3 {
        denied(
            &one,
            "acme",
            "db_query",
            cases[0].clone(),
            ErrorCode::ValidationError,
        )
        .await;
        ok(&one, "acme", "db_get", json!({"model": "orders", "id": 1})).await;
    }
}

#[tokio::test]
async fn a_pipelined_read_past_its_statement_timeout_is_stopped_and_audited() {
    let env = env().await;
    let policy = env.policy_with(|m| m.budgets.statement_timeout_ms = Some(300));
    let gw = gateway(&env, policy, true, Opts::default()).await;
    // Another session holds the table: the read waits on its lock until the timeout stops it.
    let mut su = superuser(&env).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut su)
        .await
        .expect("lock orders");
    let before = gw.pipelined_calls();
    let started = std::time::Instant::now();
    let e = denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": 1}),
        ErrorCode::StatementTimeout,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(e.message.contains("300 ms"), "{}", e.message);
    assert_eq!(gw.pipelined_calls(), before + 1);
    sqlx::raw_sql("ROLLBACK").execute(&mut su).await.unwrap();
    let audited = audit_rows(&env, "db_get").await;
    assert_eq!(
        audited,
        vec![("error".to_string(), Some("statement_timeout".to_string()))]
    );
    // The connection is usable again once the lock is gone.
    ok(&gw, "acme", "db_get", json!({"model": "orders", "id": 1})).await;
}

#[tokio::test]
async fn a_failed_pipelined_audit_insert_fails_the_call_closed() {
    let env = env().await;
    let gw = gateway(&env, env.policy.clone(), true, Opts::default()).await;
    ok(&gw, "acme", "db_get", json!({"model": "orders", "id": 1})).await;
    assert_eq!(audit_rows(&env, "db_get").await.len(), 1);
    // The log now refuses db_get records (a real server error on the INSERT, inside the same
    // pipelined batch as the COMMIT).
    let mut su = superuser(&env).await;
    sqlx::raw_sql(
        "ALTER TABLE preflight_audit.audit_log ADD CONSTRAINT pf_refuse_get CHECK (tool <> 'db_get') NOT VALID",
    )
    .execute(&mut su)
    .await
    .expect("constraint");
    let before = gw.pipelined_calls();
    let e = err(&gw, "acme", "db_get", json!({"model": "orders", "id": 1})).await;
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.to_json());
    assert!(e.message.contains("audit log"), "{}", e.message);
    assert!(e.details.get("row").is_none());
    assert_eq!(gw.pipelined_calls(), before + 1, "the read was pipelined");
    // A refused call's record fails closed too (not_found, audited after the read).
    let e = err(&gw, "acme", "db_get", json!({"model": "orders", "id": -1})).await;
    assert_eq!(e.code, ErrorCode::Internal, "{}", e.to_json());
    assert_eq!(
        audit_rows(&env, "db_get").await.len(),
        1,
        "nothing was recorded"
    );
    sqlx::raw_sql("ALTER TABLE preflight_audit.audit_log DROP CONSTRAINT pf_refuse_get")
        .execute(&mut su)
        .await
        .unwrap();
    // The same calls record again, and the chain holds.
    ok(&gw, "acme", "db_get", json!({"model": "orders", "id": 1})).await;
    denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": -1}),
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(
        audit_rows(&env, "db_get").await,
        vec![
            ("allow".to_string(), None),
            ("allow".to_string(), None),
            ("deny".to_string(), Some("not_found".to_string())),
        ]
    );
    let report = preflight_enforcer::audit::verify_postgres(&mut su, None)
        .await
        .expect("verify");
    assert!(report.intact(), "{:?}", report.first_break);
}
