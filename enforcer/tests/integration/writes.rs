//! The write tools through the built-in gateway, on a real shop database with the shipped
//! policy: every denial leaves the database unchanged, allowed writes are exact and audited in
//! the same transaction, approvals run once exactly as approved, rates and quotas hold (also
//! across instances sharing Redis), no secret reaches the audit log, and a process killed in the
//! middle of a burst leaves every committed write with its audit record.

use std::sync::Arc;
use std::time::Duration;

use preflight_enforcer::approvals::{self, Verdict};
use preflight_enforcer::audit::verify_postgres;
use preflight_enforcer::budget_store::{BudgetStore, RedisStore};
use preflight_enforcer::builtin::BuiltinGateway;
use preflight_enforcer::{ErrorCode, Fault, Faults, Gateway, ToolError};
use serde_json::{json, Value};

use crate::writes_support::{
    audit_texts, canaries, principal, snapshot, write_env, RedisServer, WriteEnv,
};

const REASON: &str = "customer asked for this change on the phone";

async fn call(
    gw: &BuiltinGateway,
    user: &str,
    tool: &str,
    args: Value,
) -> Result<Value, ToolError> {
    gw.call(&principal("acme", user), tool, args).await
}

/// Calls, expects `code`, and checks the database did not change and one audit record with
/// that code was added.
async fn refused(
    env: &WriteEnv,
    gw: &BuiltinGateway,
    tool: &str,
    args: Value,
    code: ErrorCode,
) -> ToolError {
    let mut own = env.conn().await;
    let before = snapshot(&mut own).await;
    let audits = env.audit_count().await;
    let e = match call(gw, "agent-1", tool, args.clone()).await {
        Ok(v) => panic!("{tool} {args}: expected {code}, got success {v}"),
        Err(e) => e,
    };
    assert_eq!(e.code, code, "{tool} {args}: {}", e.to_json());
    assert!(!e.suggestion.is_empty(), "{}", e.to_json());
    let after = snapshot(&mut own).await;
    assert_eq!(
        before, after,
        "{tool} {args} changed the database although refused"
    );
    assert_eq!(
        env.audit_count().await,
        audits + 1,
        "one audit record per call"
    );
    let rec = env.last_audit().await;
    assert_eq!(rec["error_code"], code.as_str());
    assert_eq!(rec["tool"], tool);
    e
}

#[tokio::test]
async fn every_denial_leaves_the_database_unchanged() {
    let env = write_env().await;
    let gw = env.gateway(env.unlimited(), Faults::none(), None).await;
    use ErrorCode::*;
    let cases: Vec<(&str, Value, ErrorCode)> = vec![
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"name": "New Name"}}),
            ReasonRequired,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"name": "X"}, "reason": "   "}),
            ReasonRequired,
        ),
        (
            "db_delete",
            json!({"model": "customers", "id": 2}),
            ReasonRequired,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"ssn": "123-45-6789"}, "reason": REASON}),
            FieldNotWritable,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"notes": "x", "name": "y"}, "reason": REASON}),
            FieldNotWritable,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"tenant_id": "globex"}, "reason": REASON}),
            FieldNotWritable,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"id": 99}, "reason": REASON}),
            FieldNotWritable,
        ),
        (
            "db_update",
            json!({"model": "orders", "id": 3, "data": {"total": 1}, "reason": REASON}),
            FieldNotWritable,
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"nonexistent": 1}, "reason": REASON}),
            ValidationError,
        ),
        (
            "db_update",
            json!({"model": "orders", "id": 3, "data": {"status": "teleported"}, "reason": REASON}),
            ValidationError,
        ),
        // Another tenant's row: indistinguishable from a missing one.
        (
            "db_update",
            json!({"model": "customers", "id": 9, "data": {"name": "X"}, "reason": REASON}),
            NotFound,
        ),
        (
            "db_delete",
            json!({"model": "customers", "id": 9, "reason": REASON}),
            NotFound,
        ),
        (
            "db_delete",
            json!({"model": "customers", "id": 8, "reason": REASON}),
            NotFound,
        ),
        (
            "db_update",
            json!({"model": "orders", "id": 999999999, "data": {"status": "paid"}, "reason": REASON}),
            NotFound,
        ),
        // Foreign keys must point inside the tenant.
        (
            "db_create",
            json!({"model": "refunds", "data": {"order_id": 31, "amount": 5, "reason": "r"}, "reason": REASON}),
            NotFound,
        ),
        (
            "db_create",
            json!({"model": "refunds", "data": {"order_id": 987654321, "amount": 5, "reason": "r"}, "reason": REASON}),
            NotFound,
        ),
        (
            "db_update",
            json!({"model": "orders", "id": 3, "data": {"carrier_id": 999}, "reason": REASON}),
            NotFound,
        ),
        // Filters of a bulk write follow the read side's field policy.
        (
            "db_bulk_update",
            json!({"model": "products", "where": [{"field": "tenant_id", "op": "eq", "value": "globex"}], "data": {"active": false}, "reason": REASON}),
            FieldDenied,
        ),
        (
            "db_bulk_update",
            json!({"model": "products", "where": [], "data": {"active": false}, "reason": REASON}),
            ValidationError,
        ),
        (
            "db_update",
            json!({"model": "payment_methods", "id": 1, "data": {"brand": "visa"}, "reason": REASON}),
            ModelNotAllowed,
        ),
        (
            "db_create",
            json!({"model": "customers", "data": {"name": "x"}, "reason": REASON}),
            ModelNotAllowed,
        ),
        // Gated writes: pending, nothing changed (the request itself is filed).
        (
            "db_update",
            json!({"model": "products", "id": 2, "data": {"price": 10}, "reason": REASON}),
            ApprovalRequired,
        ),
        (
            "db_update",
            json!({"model": "users", "id": 3, "data": {"role": "admin"}, "reason": REASON}),
            ApprovalRequired,
        ),
        (
            "db_create",
            json!({"model": "refunds", "data": {"order_id": 3, "amount": 2500, "reason": "r"}, "reason": REASON}),
            ApprovalRequired,
        ),
        (
            "db_approval_status",
            json!({"approval_id": "00000000-0000-0000-0000-000000000000"}),
            NotFound,
        ),
        (
            "db_dry_run",
            json!({"tool": "db_update", "arguments": {"model": "customers", "id": 1, "data": {"ssn": "1"}}}),
            FieldNotWritable,
        ),
        (
            "db_dry_run",
            json!({"tool": "db_update", "arguments": {"model": "customers", "id": 1, "bogus": 1}}),
            ValidationError,
        ),
    ];
    for (tool, args, code) in cases {
        refused(&env, &gw, tool, args, code).await;
    }
}

#[tokio::test]
async fn limits_on_affected_rows_and_the_dry_run_requirement() {
    let env = write_env().await;
    // 15 more acme products in one category, so a bulk write can exceed the thresholds.
    sqlx::query(
        "INSERT INTO public.products (tenant_id, sku, name, price, category) \
         SELECT 'acme', 'BULK-' || g, 'Bulk ' || g, 1.00, 'bulk' FROM generate_series(1, 15) g",
    )
    .execute(&env.owner)
    .await
    .unwrap();
    let mut policy = (*env.unlimited()).clone();
    policy
        .models
        .get_mut("products")
        .unwrap()
        .budgets
        .max_affected_rows = Some(12);
    let gw = env.gateway(Arc::new(policy), Faults::none(), None).await;
    let bulk = |cat: &str| {
        json!({"model": "products", "where": [{"field": "category", "op": "eq", "value": cat}],
               "data": {"active": false}, "reason": REASON})
    };
    let e = refused(
        &env,
        &gw,
        "db_bulk_update",
        bulk("bulk"),
        ErrorCode::RowBudgetExceeded,
    )
    .await;
    assert!(e.suggestion.contains("12"), "{}", e.suggestion);

    // 11 rows (above the threshold of 10, within the cap): a dry run must come first.
    sqlx::query("UPDATE public.products SET category = 'eleven' WHERE sku LIKE 'BULK-%' AND substr(sku, 6)::int <= 11")
        .execute(&env.owner)
        .await
        .unwrap();
    let e = refused(
        &env,
        &gw,
        "db_bulk_update",
        bulk("eleven"),
        ErrorCode::ValidationError,
    )
    .await;
    assert_eq!(e.details["dry_run_required"], true);

    let mut own = env.conn().await;
    let before = snapshot(&mut own).await;
    let plan = call(
        &gw,
        "agent-1",
        "db_dry_run",
        json!({"tool": "db_bulk_update", "arguments": bulk("eleven")}),
    )
    .await
    .unwrap();
    assert_eq!(plan["affected_rows"], 11);
    assert_eq!(plan["changed"], false);
    assert_eq!(plan["sample"].as_array().unwrap().len(), 5);
    assert_eq!(
        plan["sample"][0]["active"], false,
        "the sample shows the rows as they would be"
    );
    assert_eq!(
        snapshot(&mut own).await,
        before,
        "a dry run changes nothing"
    );

    // Another principal's dry run does not count; the same principal's does.
    let e = call(&gw, "agent-2", "db_bulk_update", bulk("eleven"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationError);
    let done = call(&gw, "agent-1", "db_bulk_update", bulk("eleven"))
        .await
        .unwrap();
    assert_eq!(done["rows_affected"], 11);
    let inactive: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.products WHERE category = 'eleven' AND NOT active",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(inactive, 11);
    let rec = env.last_audit().await;
    assert_eq!(rec["rows_affected"], 11);
    assert_eq!(rec["reason"], REASON);

    // With the fault, a dry run changes data: the control for the claim above.
    let broken = env
        .gateway(env.unlimited(), Faults::one(Fault::DryRunWrites), None)
        .await;
    call(&broken, "agent-1", "db_dry_run", json!({"tool": "db_bulk_update", "arguments": {"model": "products",
        "where": [{"field": "category", "op": "eq", "value": "bulk"}], "data": {"name": "changed by a dry run"}}}))
        .await
        .unwrap();
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.products WHERE name = 'changed by a dry run'",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(changed, 4);
}

#[tokio::test]
async fn allowed_writes_are_exact_scoped_and_audited() {
    let env = write_env().await;
    let gw = env.gateway(env.unlimited(), Faults::none(), None).await;

    // Create: the tenant comes from the session; the reason and subjects are audited.
    let created = call(&gw, "agent-1", "db_create", json!({"model": "refunds",
        "data": {"order_id": 3, "amount": 12.5, "reason": "parcel arrived damaged"}, "reason": REASON}))
        .await
        .unwrap();
    let id = created["row"]["id"].as_i64().unwrap();
    assert_eq!(
        created["row"]["reason"]
            .as_str()
            .map(|s| s.starts_with("hmac:")),
        Some(true)
    );
    let (tenant, amount): (String, String) =
        sqlx::query_as("SELECT tenant_id, amount::text FROM public.refunds WHERE id = $1")
            .bind(id)
            .fetch_one(&env.owner)
            .await
            .unwrap();
    assert_eq!((tenant.as_str(), amount.as_str()), ("acme", "12.50"));
    let rec = env.last_audit().await;
    assert_eq!(rec["decision"], "allow");
    assert_eq!(rec["rows_affected"], 1);
    assert_eq!(rec["reason"], REASON);
    let subjects: Vec<String> = serde_json::from_value(rec["subjects"].clone()).unwrap();
    assert!(subjects.contains(&format!("refunds:{id}")), "{subjects:?}");
    assert!(subjects.contains(&"orders:3".to_string()), "{subjects:?}");
    // The hashed field's value never reaches the audit log.
    assert!(!rec["arguments"]
        .to_string()
        .contains("parcel arrived damaged"));

    // Update, masked on the way back.
    let updated = call(
        &gw,
        "agent-1",
        "db_update",
        json!({"model": "customers", "id": 2,
        "data": {"email": "new.address@example.org"}, "reason": REASON}),
    )
    .await
    .unwrap();
    assert_ne!(updated["row"]["email"], "new.address@example.org");
    let email: String = sqlx::query_scalar("SELECT email FROM public.customers WHERE id = 2")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(email, "new.address@example.org");

    // Soft delete where the policy says; the row stays, and is gone for the agent.
    let del = call(
        &gw,
        "agent-1",
        "db_delete",
        json!({"model": "customers", "id": 3, "reason": REASON}),
    )
    .await
    .unwrap();
    assert_eq!(del["soft_deleted"], true);
    let deleted: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM public.customers WHERE id = 3")
            .fetch_one(&env.owner)
            .await
            .unwrap();
    assert!(deleted.is_some());
    let e = call(
        &gw,
        "agent-1",
        "db_get",
        json!({"model": "customers", "id": 3}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = call(
        &gw,
        "agent-1",
        "db_delete",
        json!({"model": "customers", "id": 3, "reason": REASON}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::NotFound,
        "a soft-deleted row cannot be deleted again"
    );

    // A global reference (carriers has no tenant) is fine to point at.
    call(
        &gw,
        "agent-1",
        "db_update",
        json!({"model": "orders", "id": 4, "data": {"carrier_id": 2}, "reason": REASON}),
    )
    .await
    .unwrap();
    let carrier: Option<i64> =
        sqlx::query_scalar("SELECT carrier_id FROM public.orders WHERE id = 4")
            .fetch_one(&env.owner)
            .await
            .unwrap();
    assert_eq!(carrier, Some(2));
    // Globex saw none of it.
    let globex_refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.refunds WHERE tenant_id = 'globex'")
            .fetch_one(&env.owner)
            .await
            .unwrap();
    assert_eq!(globex_refunds, 5);
}

#[tokio::test]
async fn write_side_faults_flip_the_assertions() {
    let env = write_env().await;
    async fn succeeds(env: &WriteEnv, fault: Fault, tool: &str, args: Value) {
        let gw = env.gateway(env.unlimited(), Faults::one(fault), None).await;
        if let Err(e) = call(&gw, "agent-1", tool, args.clone()).await {
            panic!(
                "with {fault:?}, {tool} {args} should go through, got {}",
                e.to_json()
            );
        }
    }
    succeeds(
        &env,
        Fault::ReasonNotRequired,
        "db_update",
        json!({"model": "customers", "id": 1, "data": {"name": "No Reason"}}),
    )
    .await;
    succeeds(
        &env,
        Fault::WritableFieldsOff,
        "db_update",
        json!({"model": "orders", "id": 3, "data": {"total": 1}, "reason": REASON}),
    )
    .await;
    succeeds(
        &env,
        Fault::TenantColumnWritable,
        "db_update",
        json!({"model": "products", "id": 4, "data": {"tenant_id": "globex"}, "reason": REASON}),
    )
    .await;
    let moved: String = sqlx::query_scalar("SELECT tenant_id FROM public.products WHERE id = 4")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(
        moved, "globex",
        "the broken layer moved the row into another tenant"
    );
    // On a table with row-level security the database still stops the forged tenant, and the
    // agent gets a structured refusal, not `internal`.
    let no_tenant_check = env
        .gateway(
            env.unlimited(),
            Faults::one(Fault::TenantColumnWritable),
            None,
        )
        .await;
    refused(
        &env,
        &no_tenant_check,
        "db_update",
        json!({"model": "customers", "id": 1, "data": {"tenant_id": "globex"}, "reason": REASON}),
        ErrorCode::TenantMismatch,
    )
    .await;
    succeeds(&env, Fault::ForeignKeyUnchecked, "db_create", json!({"model": "refunds", "data": {"order_id": 31, "amount": 5, "reason": "x"}, "reason": REASON})).await;
    let cross: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.refunds r JOIN public.orders o ON o.id = r.order_id WHERE r.tenant_id <> o.tenant_id",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(
        cross, 1,
        "the broken layer let a refund point at another tenant's order"
    );
    succeeds(
        &env,
        Fault::ApprovalsBypassed,
        "db_update",
        json!({"model": "products", "id": 2, "data": {"price": 1}, "reason": REASON}),
    )
    .await;
    let price: String = sqlx::query_scalar("SELECT price::text FROM public.products WHERE id = 2")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(price, "1.00");

    // AuditSkipped: a call without its record.
    let gw = env
        .gateway(env.unlimited(), Faults::one(Fault::AuditSkipped), None)
        .await;
    let n = env.audit_count().await;
    call(
        &gw,
        "agent-1",
        "db_get",
        json!({"model": "orders", "id": 3}),
    )
    .await
    .unwrap();
    assert_eq!(env.audit_count().await, n);

    // AuditSanitizeByKeyOnly: a secret under an innocent key reaches the log.
    let secret = "sk_live_acme_customers_1_c0ffee0123456789abcdef";
    for (faults, leaks) in [
        (Faults::none(), false),
        (Faults::one(Fault::AuditSanitizeByKeyOnly), true),
    ] {
        let gw = env.gateway(env.unlimited(), faults, None).await;
        let _ = call(
            &gw,
            "agent-1",
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"name": secret}, "reason": REASON}),
        )
        .await;
        let rec = env.last_audit().await;
        assert_eq!(rec.to_string().contains(secret), leaks, "{rec}");
    }
}

#[tokio::test]
async fn a_refusal_is_audited_under_a_tight_timeout_while_another_call_holds_the_chain() {
    let env = write_env().await;
    let mut p = (*env.unlimited()).clone();
    for m in p.models.values_mut() {
        m.budgets.statement_timeout_ms = Some(5);
    }
    let gw = env.gateway(Arc::new(p), Faults::none(), None).await;
    // A concurrent call's transaction holds the chain head until it commits; the refused call's
    // audit record has to wait for it, longer than the call's own 5 ms budget.
    let mut holder = env.owner.begin().await.expect("begin");
    sqlx::query("SELECT count FROM preflight_audit.chain_head WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("lock the chain head");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.rollback().await.expect("release the chain head");
    });
    let audits = env.audit_count().await;
    let result = call(
        &gw,
        "agent-1",
        "db_update",
        json!({"model": "customers", "id": 1, "data": {"name": "No Reason"}}),
    )
    .await;
    release.await.expect("release task");
    let e = result.expect_err("a write without a reason is refused");
    assert_eq!(e.code, ErrorCode::ReasonRequired, "{}", e.to_json());
    assert_eq!(
        env.audit_count().await,
        audits + 1,
        "the refusal is recorded"
    );
    assert_eq!(env.last_audit().await["error_code"], "reason_required");
}

#[tokio::test]
async fn approval_life_cycle_through_the_gateway() {
    let env = write_env().await;
    let gw = env.gateway(env.unlimited(), Faults::none(), None).await;
    let mut own = env.conn().await;
    approvals::add_approver(&mut own, "alice", &["admin".into()])
        .await
        .unwrap();
    let args = json!({"model": "products", "id": 2, "data": {"price": 777.25}, "reason": "supplier price list 2026"});

    // 1. Pending: nothing changes.
    let e = refused(
        &env,
        &gw,
        "db_update",
        args.clone(),
        ErrorCode::ApprovalRequired,
    )
    .await;
    let id = e.details["approval_id"].as_str().unwrap().to_string();
    assert_eq!(env.last_audit().await["approval_id"], id.as_str());
    let st = call(
        &gw,
        "agent-1",
        "db_approval_status",
        json!({"approval_id": id}),
    )
    .await
    .unwrap();
    assert_eq!(st["state"], "pending");
    // Another tenant cannot see it.
    let e = gw
        .call(
            &principal("globex", "agent-1"),
            "db_approval_status",
            json!({"approval_id": id}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    // Re-submitting before the decision is refused.
    refused(
        &env,
        &gw,
        "db_update",
        with_approval(&args, &id),
        ErrorCode::ApprovalRequired,
    )
    .await;

    // 2. Approved: runs once, exactly as approved, approver in the audit record.
    approvals::decide(
        &mut own,
        approvals::parse_id(&id).unwrap(),
        "alice",
        Verdict::Approve,
        None,
    )
    .await
    .unwrap();
    let st = call(
        &gw,
        "agent-1",
        "db_approval_status",
        json!({"approval_id": id}),
    )
    .await
    .unwrap();
    assert_eq!(st["state"], "approved");
    // A changed payload under the approved id is refused, and changes nothing.
    let mut changed = with_approval(&args, &id);
    changed["data"]["price"] = json!(1);
    refused(&env, &gw, "db_update", changed, ErrorCode::ApprovalRequired).await;
    let done = call(&gw, "agent-1", "db_update", with_approval(&args, &id))
        .await
        .unwrap();
    assert_eq!(done["rows_affected"], 1);
    let price: String = sqlx::query_scalar("SELECT price::text FROM public.products WHERE id = 2")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(price, "777.25");
    let rec = env.last_audit().await;
    assert_eq!(rec["approver"], "alice");
    assert_eq!(rec["approval_id"], id.as_str());
    assert_eq!(rec["decision"], "allow");

    // 3. Replay: refused, nothing changes (put the old price back first to see it).
    sqlx::query("UPDATE public.products SET price = 349.50 WHERE id = 2")
        .execute(&env.owner)
        .await
        .unwrap();
    let e = refused(
        &env,
        &gw,
        "db_update",
        with_approval(&args, &id),
        ErrorCode::ApprovalRequired,
    )
    .await;
    assert_eq!(e.details["state"], "executed");
    // With the replay fault the same call runs again: the control.
    let broken = env
        .gateway(env.unlimited(), Faults::one(Fault::ApprovalReplay), None)
        .await;
    call(&broken, "agent-1", "db_update", with_approval(&args, &id))
        .await
        .unwrap();
    let price: String = sqlx::query_scalar("SELECT price::text FROM public.products WHERE id = 2")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(price, "777.25");

    // 4. Rejected: refused.
    let e = refused(
        &env,
        &gw,
        "db_update",
        json!({"model": "products", "id": 3, "data": {"price": 5}, "reason": "r"}),
        ErrorCode::ApprovalRequired,
    )
    .await;
    let id2 = e.details["approval_id"].as_str().unwrap().to_string();
    approvals::decide(
        &mut own,
        approvals::parse_id(&id2).unwrap(),
        "alice",
        Verdict::Reject,
        Some("no"),
    )
    .await
    .unwrap();
    let e = refused(&env, &gw, "db_update", json!({"model": "products", "id": 3, "data": {"price": 5}, "reason": "r", "approval_id": id2}), ErrorCode::ApprovalRequired).await;
    assert_eq!(e.details["state"], "rejected");

    // 5. Expiry without any action: a 1-second SLA.
    let mut short = (*env.unlimited()).clone();
    for r in &mut short.approvals {
        r.sla_seconds = 1;
    }
    let gw_short = env.gateway(Arc::new(short), Faults::none(), None).await;
    let args3 = json!({"model": "products", "id": 4, "data": {"price": 6}, "reason": "r"});
    let e = refused(
        &env,
        &gw_short,
        "db_update",
        args3.clone(),
        ErrorCode::ApprovalRequired,
    )
    .await;
    let id3 = e.details["approval_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let st = call(
        &gw_short,
        "agent-1",
        "db_approval_status",
        json!({"approval_id": id3}),
    )
    .await
    .unwrap();
    assert_eq!(st["state"], "expired");
    assert!(approvals::decide(
        &mut own,
        approvals::parse_id(&id3).unwrap(),
        "alice",
        Verdict::Approve,
        None
    )
    .await
    .is_err());
    let e = refused(
        &env,
        &gw_short,
        "db_update",
        with_approval(&args3, &id3),
        ErrorCode::ApprovalRequired,
    )
    .await;
    assert_eq!(e.details["state"], "expired");
}

fn with_approval(args: &Value, id: &str) -> Value {
    let mut a = args.clone();
    a["approval_id"] = json!(id);
    a
}

#[tokio::test]
async fn write_rate_and_quotas_hold_and_are_shared_through_redis() {
    let env = write_env().await;
    // The shipped policy: 10 writes a minute per principal and model.
    let gw = env.gateway(env.policy.clone(), Faults::none(), None).await;
    for i in 0..10 {
        call(&gw, "rate-1", "db_update", json!({"model": "orders", "id": 5, "data": {"status": if i % 2 == 0 { "paid" } else { "shipped" }}, "reason": REASON}))
            .await
            .unwrap_or_else(|e| panic!("write {i}: {}", e.to_json()));
    }
    let mut own = env.conn().await;
    let before = snapshot(&mut own).await;
    let e = call(
        &gw,
        "rate-1",
        "db_update",
        json!({"model": "orders", "id": 5, "data": {"status": "delivered"}, "reason": REASON}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::WriteRateExceeded);
    assert!(
        e.suggestion.contains("retry after") && e.suggestion.contains("seconds"),
        "{}",
        e.suggestion
    );
    assert_eq!(snapshot(&mut own).await, before);
    assert_eq!(env.last_audit().await["error_code"], "write_rate_exceeded");
    // Another principal has its own budget; the rate-limit fault lifts it.
    call(
        &gw,
        "rate-2",
        "db_update",
        json!({"model": "orders", "id": 5, "data": {"status": "paid"}, "reason": REASON}),
    )
    .await
    .unwrap();
    let broken = env
        .gateway(env.policy.clone(), Faults::one(Fault::RateLimitOff), None)
        .await;
    for _ in 0..11 {
        call(
            &broken,
            "rate-3",
            "db_update",
            json!({"model": "orders", "id": 5, "data": {"status": "paid"}, "reason": REASON}),
        )
        .await
        .unwrap();
    }

    // Two instances sharing one Redis share one limit.
    let redis = RedisServer::start().await;
    let store: Arc<dyn BudgetStore> = Arc::new(RedisStore::connect(&redis.url).await.unwrap());
    let store2: Arc<dyn BudgetStore> = Arc::new(RedisStore::connect(&redis.url).await.unwrap());
    let a = env
        .gateway(env.policy.clone(), Faults::none(), Some(store))
        .await;
    let b = env
        .gateway(env.policy.clone(), Faults::none(), Some(store2))
        .await;
    let mut allowed = 0;
    let mut limited = 0;
    for i in 0..14 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match call(
            gw,
            "shared-1",
            "db_update",
            json!({"model": "orders", "id": 6, "data": {"status": "paid"}, "reason": REASON}),
        )
        .await
        {
            Ok(_) => allowed += 1,
            Err(e) if e.code == ErrorCode::WriteRateExceeded => limited += 1,
            Err(e) => panic!("{}", e.to_json()),
        }
    }
    assert_eq!(
        (allowed, limited),
        (10, 4),
        "two instances, one limit of 10"
    );

    // Per-tenant call quota.
    let mut p = (*env.unlimited()).clone();
    p.quotas.calls_per_hour = Some(5);
    let gw = env.gateway(Arc::new(p), Faults::none(), None).await;
    for _ in 0..5 {
        call(&gw, "q-1", "db_get", json!({"model": "orders", "id": 3}))
            .await
            .unwrap();
    }
    let e = call(&gw, "q-2", "db_get", json!({"model": "orders", "id": 3}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::QuotaExceeded);
    assert!(e.suggestion.contains("retry after"), "{}", e.suggestion);
    // Other tenants are not affected.
    gw.call(
        &principal("globex", "q-1"),
        "db_get",
        json!({"model": "orders", "id": 31}),
    )
    .await
    .unwrap();
    let mut p = (*env.unlimited()).clone();
    p.quotas.calls_per_hour = Some(5);
    let broken = env
        .gateway(Arc::new(p), Faults::one(Fault::QuotaOff), None)
        .await;
    for _ in 0..7 {
        call(
            &broken,
            "q-1",
            "db_get",
            json!({"model": "orders", "id": 3}),
        )
        .await
        .unwrap();
    }
    // Per-tenant row quota.
    let mut p = (*env.unlimited()).clone();
    p.quotas.rows_per_hour = Some(3);
    let gw = env.gateway(Arc::new(p), Faults::none(), None).await;
    call(&gw, "r-1", "db_query", json!({"model": "orders", "where": [{"field": "created_at", "op": "gte", "value": "2025-01-01"}], "limit": 5})).await.unwrap();
    let e = call(&gw, "r-1", "db_get", json!({"model": "orders", "id": 3}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::QuotaExceeded);
}

#[tokio::test]
async fn one_audit_record_per_call_and_no_secret_or_canary_in_any() {
    let env = write_env().await;
    let gw = env.gateway(env.unlimited(), Faults::none(), None).await;
    let mut own = env.conn().await;
    let canary = canaries(&mut own).await;
    let pick = |needle: &str| canary.iter().find(|c| c.contains(needle)).cloned().unwrap();
    let api_key = pick("sk_live_acme");
    let token = pick("tok_acme");
    let email = pick("@acme-canary.example");
    let argon = pick("$argon2id$");
    let ssn = canary
        .iter()
        .find(|c| c.len() == 11 && c.chars().nth(3) == Some('-'))
        .cloned()
        .unwrap();
    let start = env.audit_count().await;
    let calls: Vec<(&str, Value)> = vec![
        (
            "db_query",
            json!({"model": "customers", "where": [{"field": "email", "op": "eq", "value": email}]}),
        ),
        (
            "db_query",
            json!({"model": "customers", "where": {"ssn": ssn}}),
        ),
        (
            "db_query",
            json!({"model": "orders", "where": [{"field": "status", "op": "eq", "value": api_key}]}),
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"name": token}, "reason": format!("customer sent {argon} by mistake")}),
        ),
        (
            "db_update",
            json!({"model": "customers", "id": 1, "data": {"phone": "+1-555-101-9999"}, "reason": REASON}),
        ),
        (
            "db_create",
            json!({"model": "refunds", "data": {"order_id": 3, "amount": 3, "reason": format!("call {email}")}, "reason": REASON}),
        ),
        (
            "db_dry_run",
            json!({"tool": "db_update", "arguments": {"model": "customers", "id": 1, "data": {"email": email}}}),
        ),
        ("db_get", json!({"model": "customers", "id": api_key})),
        ("no_such_tool", json!({"x": api_key})),
        ("db_query", json!({"model": "customers", "cursor": token})),
    ];
    let n = calls.len() as i64;
    for (tool, args) in calls {
        let _ = call(&gw, "agent-1", tool, args).await;
    }
    assert_eq!(
        env.audit_count().await,
        start + n,
        "one record per call, denials included"
    );
    let texts = audit_texts(&mut own).await;
    for t in &texts {
        for c in &canary {
            assert!(
                !t.contains(c.as_str()),
                "canary {c:?} in an audit record: {t}"
            );
        }
        assert!(!t.contains("+1-555-101-9999"), "{t}");
    }
    let mut own2 = env.conn().await;
    let report = verify_postgres(&mut own2, None).await.unwrap();
    assert!(report.intact(), "{:?}", report.first_break);
}

/// The child side of `sigkill_mid_burst_leaves_every_write_with_its_record`: writes until
/// killed. Runs only when the parent re-invokes the test binary with the env variable set.
#[tokio::test]
#[ignore = "child process of sigkill_mid_burst_leaves_every_write_with_its_record"]
async fn sigkill_child_writes_until_killed() {
    let (Ok(agent), Ok(policy)) = (
        std::env::var("WRITES_CHILD_AGENT_URL"),
        std::env::var("WRITES_CHILD_POLICY"),
    ) else {
        panic!("run only by the parent test");
    };
    let policy: preflight_enforcer::policy::Policy = serde_json::from_str(&policy).unwrap();
    let gw = BuiltinGateway::connect(
        Arc::new(policy),
        &agent,
        preflight_enforcer::builtin::BuiltinOptions {
            audit: vec![Arc::new(
                preflight_enforcer::audit::PostgresSink::in_transaction(),
            )],
            max_connections: 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let _ = gw
                    .call(
                        &principal("acme", &format!("burst-{w}")),
                        "db_create",
                        json!({"model": "refunds", "data": {"order_id": 3 + (i % 20), "amount": 1, "reason": "burst"}, "reason": format!("burst {w} {i}")}),
                    )
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test]
async fn sigkill_mid_burst_leaves_every_write_with_its_record() {
    let env = write_env().await;
    let policy = serde_json::to_string(&*env.unlimited()).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "writes::sigkill_child_writes_until_killed",
            "--nocapture",
        ])
        .env("WRITES_CHILD_AGENT_URL", env.db.agent_url())
        .env("WRITES_CHILD_POLICY", policy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let the burst run until a good number of writes committed, then kill -9.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM public.refunds WHERE reason = 'burst'")
                .fetch_one(&env.owner)
                .await
                .unwrap();
        if n >= 40 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id();
    // `kill -9` on our own child: no chance to clean up, exactly like a crash.
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
    // Give the server a moment to abort the killed connections' transactions.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM public.refunds WHERE reason = 'burst' ORDER BY id")
            .fetch_all(&env.owner)
            .await
            .unwrap();
    assert!(ids.len() >= 40, "the child committed {} writes", ids.len());
    let missing: Vec<i64> = sqlx::query_scalar(
        "SELECT r.id FROM public.refunds r WHERE r.reason = 'burst' AND NOT EXISTS ( \
           SELECT 1 FROM preflight_audit.audit_log a \
           WHERE a.tool = 'db_create' AND a.decision = 'allow' AND a.subjects @> ARRAY['refunds:' || r.id])",
    )
    .fetch_all(&env.owner)
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "committed writes without an audit record: {missing:?}"
    );
    let mut own = env.conn().await;
    let report = verify_postgres(&mut own, None).await.unwrap();
    assert!(report.intact(), "{:?}", report.first_break);
    assert!(report.records as usize >= ids.len());
}
