//! Shared support for the built-in gateway's tests: a real shop database, a shop policy built
//! from its live catalog (every field rule of the policy file format: explicit rules, wildcard
//! patterns, defaults), an audit sink that records through the call's own transaction, table
//! checksums, and call helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use preflight_enforcer::audit::{AuditError, AuditRecord, AuditSink};
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{
    AuditPolicy, BudgetStoreConfig, Budgets, ColumnPolicy, FieldAction, ModelPolicy, Policy,
    Preset, Quotas, Relation, RelationKind, RuleSource, Span, WritePolicy,
};
use preflight_enforcer::{CallContext, ErrorCode, Faults, Gateway, Principal, ToolError};
use preflight_probes::db::{testing, Database};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, Row};

/// A provisioned shop database, its owner pool (ground truth) and the test policy.
pub struct Env {
    pub db: Database,
    pub owner: PgPool,
    pub policy: Arc<Policy>,
}

pub async fn env() -> Env {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let policy = Arc::new(shop_policy(&owner).await);
    Env { db, owner, policy }
}

impl Env {
    pub async fn gateway(&self, faults: Faults) -> BuiltinGateway {
        self.gateway_with(self.policy.clone(), faults, Vec::new())
            .await
    }

    pub async fn gateway_with(
        &self,
        policy: Arc<Policy>,
        faults: Faults,
        audit: Vec<Arc<dyn AuditSink>>,
    ) -> BuiltinGateway {
        BuiltinGateway::connect(
            policy,
            self.db.agent_url(),
            BuiltinOptions {
                faults,
                secret_key: [42u8; 32],
                audit,
                ..BuiltinOptions::default()
            },
        )
        .await
        .expect("gateway connects")
    }

    /// A copy of the policy with `edit` applied to every model.
    pub fn policy_with(&self, edit: impl Fn(&mut ModelPolicy)) -> Arc<Policy> {
        let mut p = (*self.policy).clone();
        for m in p.models.values_mut() {
            edit(m);
        }
        Arc::new(p)
    }
}

pub fn ctx(tenant: &str) -> CallContext {
    CallContext::new(Principal {
        tenant: tenant.to_string(),
        user: format!("{tenant}-support-agent"),
        roles: vec!["support".to_string()],
    })
}

pub async fn ok(gw: &BuiltinGateway, tenant: &str, tool: &str, args: Value) -> Value {
    match gw.call(&ctx(tenant), tool, args.clone()).await {
        Ok(v) => v,
        Err(e) => panic!(
            "{tool} {args} as {tenant}: expected success, got {}",
            e.to_json()
        ),
    }
}

pub async fn err(gw: &BuiltinGateway, tenant: &str, tool: &str, args: Value) -> ToolError {
    match gw.call(&ctx(tenant), tool, args.clone()).await {
        Ok(v) => panic!("{tool} {args} as {tenant}: expected an error, got {v}"),
        Err(e) => {
            assert_safe_error(&e);
            e
        }
    }
}

pub async fn denied(
    gw: &BuiltinGateway,
    tenant: &str,
    tool: &str,
    args: Value,
    code: ErrorCode,
) -> ToolError {
    let e = err(gw, tenant, tool, args.clone()).await;
    assert_eq!(e.code, code, "{tool} {args}: {}", e.to_json());
    e
}

/// No error ever carries server text, SQL or a stack trace, and always has a suggestion.
pub fn assert_safe_error(e: &ToolError) {
    let text = e.to_json().to_string();
    for needle in [
        "DETAIL",
        "HINT",
        "syntax error",
        "SQLSTATE",
        "panicked",
        "stack backtrace",
        "src/",
        "to_jsonb",
        "\"public\".",
        "_pf_",
        "preflight_agent",
        "postgres://",
        "ERROR:",
    ] {
        assert!(!text.contains(needle), "error leaks {needle:?}: {text}");
    }
    assert!(!e.message.is_empty());
    if e.code != ErrorCode::NotFound {
        assert!(!e.suggestion.is_empty(), "no suggestion: {text}");
    }
}

pub fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().expect("rows array")
}

/// The shop policy a careful team would write, built against the live catalog: wildcard deny
/// for secrets and mask for PII (pattern rules), explicit rules for the rest.
pub async fn shop_policy(owner: &PgPool) -> Policy {
    let cols = sqlx::query(
        "SELECT c.relname::text AS tbl, a.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS ty,
                NOT a.attnotnull AS nullable,
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) AS indexed
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY c.relname, a.attnum",
    )
    .fetch_all(owner)
    .await
    .expect("catalog");
    let mut columns: BTreeMap<String, Vec<ColumnPolicy>> = BTreeMap::new();
    for r in cols {
        let table: String = r.get("tbl");
        let name: String = r.get("col");
        let (action, source) = field_rule(&table, &name);
        columns.entry(table).or_default().push(ColumnPolicy {
            name,
            pg_type: r.get("ty"),
            nullable: r.get("nullable"),
            action,
            source,
            reason: None,
            indexed: r.get("indexed"),
        });
    }
    let rel = |name: &str, target: &str, kind: RelationKind, fk: &str| {
        (
            name.to_string(),
            Relation {
                name: name.to_string(),
                target: target.to_string(),
                kind,
                foreign_key: fk.to_string(),
                span: Span::default(),
            },
        )
    };
    let relations: BTreeMap<&str, BTreeMap<String, Relation>> = BTreeMap::from([
        (
            "customers",
            BTreeMap::from([
                rel("orders", "orders", RelationKind::HasMany, "customer_id"),
                rel(
                    "payment_methods",
                    "payment_methods",
                    RelationKind::HasMany,
                    "customer_id",
                ),
                rel(
                    "tickets",
                    "support_tickets",
                    RelationKind::HasMany,
                    "customer_id",
                ),
            ]),
        ),
        (
            "orders",
            BTreeMap::from([
                rel(
                    "customer",
                    "customers",
                    RelationKind::BelongsTo,
                    "customer_id",
                ),
                rel("items", "order_items", RelationKind::HasMany, "order_id"),
                rel("refunds", "refunds", RelationKind::HasMany, "order_id"),
                rel("carrier", "carriers", RelationKind::BelongsTo, "carrier_id"),
            ]),
        ),
        (
            "order_items",
            BTreeMap::from([
                rel("order", "orders", RelationKind::BelongsTo, "order_id"),
                rel("product", "products", RelationKind::BelongsTo, "product_id"),
            ]),
        ),
        (
            "refunds",
            BTreeMap::from([rel("order", "orders", RelationKind::BelongsTo, "order_id")]),
        ),
        (
            "payment_methods",
            BTreeMap::from([rel(
                "customer",
                "customers",
                RelationKind::BelongsTo,
                "customer_id",
            )]),
        ),
        (
            "support_tickets",
            BTreeMap::from([rel(
                "customer",
                "customers",
                RelationKind::BelongsTo,
                "customer_id",
            )]),
        ),
    ]);
    let mut models = BTreeMap::new();
    for (table, cols) in columns {
        let tenant_column = match table.as_str() {
            "carriers" => None,
            "tenants" => Some("id".to_string()),
            _ => Some("tenant_id".to_string()),
        };
        let soft = cols
            .iter()
            .any(|c| c.name == "deleted_at")
            .then(|| "deleted_at".to_string());
        models.insert(
            table.clone(),
            ModelPolicy {
                name: table.clone(),
                schema: "public".to_string(),
                table: table.clone(),
                primary_key: "id".to_string(),
                tenant_exempt_reason: tenant_column
                    .is_none()
                    .then(|| "global reference data shared by every tenant".to_string()),
                tenant_column,
                columns: cols,
                relations: relations.get(table.as_str()).cloned().unwrap_or_default(),
                tools: BTreeSet::from([
                    "db_query".to_string(),
                    "db_get".to_string(),
                    "db_aggregate".to_string(),
                ]),
                writable_fields: BTreeSet::new(),
                require_reason: true,
                soft_delete_column: soft,
                budgets: budgets(),
                span: Span::default(),
            },
        );
    }
    Policy {
        name: "shop-test".to_string(),
        extends: Preset::Prod,
        path: "tests/shop-test.yaml".to_string(),
        tenant_setting: "app.tenant_id".to_string(),
        models,
        approvals: Vec::new(),
        writes: WritePolicy {
            dry_run_required_above: 10,
        },
        quotas: Quotas {
            calls_per_hour: None,
            rows_per_hour: None,
        },
        budget_store: BudgetStoreConfig::Memory,
        audit: AuditPolicy {
            sinks: Vec::new(),
            retention: None,
            span: Span::default(),
        },
        deployment: Default::default(),
        rate_limits: None,
        field_rules: Default::default(),
        spans: BTreeMap::new(),
        hash: "test-policy-hash-0001".to_string(),
    }
}

pub fn budgets() -> Budgets {
    Budgets {
        max_rows: BTreeMap::from([
            ("db_query".to_string(), 100),
            ("db_aggregate".to_string(), 50),
            ("default".to_string(), 100),
        ]),
        max_scan_rows: Some(10_000),
        statement_timeout_ms: Some(3000),
        max_join_depth: 2,
        max_writes_per_minute: Some(10),
        max_affected_rows: Some(10),
    }
}

/// Field rules: wildcard patterns (deny secrets, mask PII) and explicit rules.
pub fn field_rule(table: &str, column: &str) -> (FieldAction, RuleSource) {
    let explicit = |a| {
        (
            a,
            RuleSource::Explicit {
                span: Span { line: 1, column: 1 },
            },
        )
    };
    let pattern = |a, p: &str| {
        (
            a,
            RuleSource::Pattern {
                pattern: p.to_string(),
                span: Span { line: 1, column: 1 },
            },
        )
    };
    match (table, column) {
        ("customers", "ssn") => explicit(FieldAction::Mask),
        ("customers", "date_of_birth") => explicit(FieldAction::Mask),
        ("customers", "notes") => explicit(FieldAction::Deny),
        ("orders", "shipping_address") => explicit(FieldAction::Mask),
        ("refunds", "reason") => explicit(FieldAction::Hash),
        ("support_tickets", "subject") => explicit(FieldAction::Hash),
        ("support_tickets", "body") => explicit(FieldAction::Deny),
        (_, c) if c.contains("password") => pattern(FieldAction::Deny, "*password*"),
        (_, c) if c.contains("token") => pattern(FieldAction::Deny, "*token*"),
        (_, c) if c.contains("api_key") => pattern(FieldAction::Deny, "*api_key*"),
        (_, c) if c.contains("email") => pattern(FieldAction::Mask, "*email*"),
        (_, c) if c.contains("phone") => pattern(FieldAction::Mask, "*phone*"),
        _ => (FieldAction::Allow, RuleSource::Default),
    }
}

/// A checksum of every row of every table (owner connection), for "the database is unchanged".
pub async fn checksum(owner: &PgPool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for t in [
        "tenants",
        "carriers",
        "users",
        "customers",
        "products",
        "orders",
        "order_items",
        "refunds",
        "payment_methods",
        "support_tickets",
    ] {
        let sum: String = sqlx::query_scalar(&format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) || ':' || count(*) FROM public.{t} t"
        ))
        .fetch_one(owner)
        .await
        .expect("checksum");
        out.insert(t.to_string(), sum);
    }
    out
}

/// Canary values of the given kind in columns the policy does not allow, per (table, column).
pub async fn protected_canaries(owner: &PgPool, policy: &Policy) -> Vec<(String, String, String)> {
    let rows = sqlx::query("SELECT value, table_name, column_name FROM preflight_meta.canaries")
        .fetch_all(owner)
        .await
        .expect("canaries");
    rows.into_iter()
        .map(|r| {
            (
                r.get::<String, _>("value"),
                r.get::<String, _>("table_name"),
                r.get::<String, _>("column_name"),
            )
        })
        .filter(|(_, t, c)| {
            policy
                .model(t)
                .and_then(|m| m.action(c))
                .is_some_and(|a| a != FieldAction::Allow)
        })
        .collect()
}

/// An audit sink that appends through the call's own connection: it reads the tenant setting
/// (proving it runs inside the call's transaction) and inserts the record into the fixture's
/// `preflight_audit.audit_log` as the agent (a member of `preflight_audit_writer`).
#[derive(Default)]
pub struct RecordingSink {
    pub records: Mutex<Vec<(AuditRecord, Option<String>)>>,
    pub fail: AtomicBool,
}

impl RecordingSink {
    pub fn records(&self) -> Vec<(AuditRecord, Option<String>)> {
        self.records.lock().expect("lock").clone()
    }

    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

fn sink_err(e: impl std::error::Error + Send + Sync + 'static) -> AuditError {
    AuditError::Sink {
        sink: "recording",
        source: Box::new(e),
    }
}

#[async_trait]
impl AuditSink for RecordingSink {
    fn kind(&self) -> &'static str {
        "recording"
    }

    async fn append(
        &self,
        tx: Option<&mut PgConnection>,
        r: &AuditRecord,
    ) -> Result<(), AuditError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(sink_err(std::io::Error::other(
                "sink switched off by the test",
            )));
        }
        let conn = tx.ok_or_else(|| sink_err(std::io::Error::other("no transaction given")))?;
        let seen: Option<String> =
            sqlx::query_scalar("SELECT current_setting('app.tenant_id', true)")
                .fetch_one(&mut *conn)
                .await
                .map_err(sink_err)?;
        sqlx::query(
            "INSERT INTO preflight_audit.audit_log (trace_id, tenant_id, user_id, roles, tool, arguments,
                 arguments_sha256, decision, error_code, rows_returned, rows_affected, duration_ms, reason,
                 approval_id, approver, policy_hash, subjects)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&r.trace_id)
        .bind(&r.tenant_id)
        .bind(&r.user_id)
        .bind(&r.roles)
        .bind(&r.tool)
        .bind(&r.arguments)
        .bind(&r.arguments_sha256)
        .bind(r.decision.as_str())
        .bind(&r.error_code)
        .bind(r.rows_returned)
        .bind(r.rows_affected)
        .bind(r.duration_ms)
        .bind(&r.reason)
        .bind(&r.approval_id)
        .bind(&r.approver)
        .bind(&r.policy_hash)
        .bind(&r.subjects)
        .execute(&mut *conn)
        .await
        .map_err(sink_err)?;
        self.records.lock().expect("lock").push((r.clone(), seen));
        Ok(())
    }

    async fn health(&self) -> Result<String, AuditError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(sink_err(std::io::Error::other(
                "sink switched off by the test",
            )));
        }
        Ok(format!(
            "{} records",
            self.records.lock().expect("lock").len()
        ))
    }
}

/// Scan and tuple counters of one table (owner connection), after the agent's backends have
/// exited (a backend flushes its statistics when it ends).
pub async fn table_reads(owner: &PgPool, table: &str) -> (i64, i64, i64) {
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(owner)
        .await;
    let r = sqlx::query(
        "SELECT coalesce(seq_scan, 0) AS s, coalesce(seq_tup_read, 0) AS r, coalesce(idx_tup_fetch, 0) AS f
           FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = $1",
    )
    .bind(table)
    .fetch_one(owner)
    .await
    .expect("pg_stat_user_tables");
    (r.get("s"), r.get("r"), r.get("f"))
}

/// Makes the table statistics of every session of `gw`, and of ground truth's own pool, visible
/// to ground truth now, without waiting for backends to exit.
///
/// A backend publishes its statistics when it goes idle at most once a second, and at exit. The
/// old way closed the gateway's pool and waited for its backends to disappear from
/// `pg_stat_activity`, which on a loaded machine took past 30 s and failed in the full suite;
/// and it left out ground truth's own reads (a `count(*)` of the table before the baseline),
/// whose late flush then showed up as a scan the gateway never made. Instead every pooled
/// session asks for an immediate flush (`pg_stat_force_next_flush()`, PostgreSQL 15+): the
/// server flushes before it reports the session idle, so once the call returns the counters are
/// in shared memory.
pub async fn flush_stats(env: &Env, gw: &BuiltinGateway) {
    let superuser = env
        .db
        .superuser_url()
        .expect("a superuser for the test database");
    let mut su = PgConnection::connect(superuser).await.expect("superuser");
    // The fixtures let ground truth's login publish its statistics; the agent's is granted here.
    sqlx::query("GRANT EXECUTE ON FUNCTION pg_stat_force_next_flush() TO preflight_agent")
        .execute(&mut su)
        .await
        .expect("grant pg_stat_force_next_flush");
    su.close().await.ok();
    // The pipelined read path's sessions are not in `gw.pool()`.
    gw.publish_pipelined_stats()
        .await
        .expect("publish the pipelined sessions' statistics");
    for pool in [gw.pool(), &env.owner] {
        preflight_probes::truth::publish_pool_stats(pool)
            .await
            .expect("publish the sessions' statistics");
    }
}
