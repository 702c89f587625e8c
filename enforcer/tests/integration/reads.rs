//! The built-in gateway's read tools against a real shop database: tenant scoping, filters,
//! pagination, includes, aggregates, budgets, the audit pipeline and health, each with the
//! fault switch that must make it fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::audit::{arguments_sha256, AuditSink, Decision};
use preflight_enforcer::{ErrorCode, Fault, Faults, Gateway};
use serde_json::{json, Value};
use sqlx::Row;

use crate::gateway_support::*;

#[tokio::test]
async fn describe_schema_lists_only_what_the_policy_allows() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let d = ok(&gw, "acme", "db_describe_schema", json!({})).await;
    let text = d.to_string();
    let models = d["models"].as_array().unwrap();
    assert_eq!(models.len(), env.policy.models.len());
    let customers = models.iter().find(|m| m["name"] == "customers").unwrap();
    let fields: Vec<&str> = customers["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for denied in ["notes", "password_hash", "api_key"] {
        assert!(!fields.contains(&denied), "{denied} listed: {fields:?}");
    }
    for f in customers["fields"].as_array().unwrap() {
        match f["name"].as_str().unwrap() {
            "email" | "phone" | "ssn" | "date_of_birth" => {
                assert_eq!(f["access"], "masked", "{f}");
                assert_eq!(f["operators"], json!(["is_null"]));
            }
            "name" => assert!(f["operators"]
                .as_array()
                .unwrap()
                .contains(&json!("contains"))),
            _ => {}
        }
    }
    assert!(
        !text.contains("card_token") && !text.contains("body"),
        "{text}"
    );
    let orders = models.iter().find(|m| m["name"] == "orders").unwrap();
    assert!(
        orders["limits"]["filter_on"]
            .as_array()
            .unwrap()
            .contains(&json!("created_at")),
        "{orders}"
    );
    assert_eq!(orders["relations"].as_array().unwrap().len(), 4);

    // Positive control: the describe fault lists denied fields.
    let leaky = env.gateway(Faults::one(Fault::DescribeShowsDenied)).await;
    let d = ok(&leaky, "acme", "db_describe_schema", json!({}))
        .await
        .to_string();
    assert!(
        d.contains("password_hash") && d.contains("card_token"),
        "fault had no effect"
    );

    // The tool list is generated from the policy: enums of models, bounded limits.
    let tools = gw.tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["db_describe_schema", "db_query", "db_get", "db_aggregate"]
    );
    let q = &tools[1].input_schema;
    assert_eq!(q["additionalProperties"], false);
    assert_eq!(q["properties"]["limit"]["maximum"], 100);
    assert!(q["properties"]["model"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("orders")));
}

#[tokio::test]
async fn query_filters_orders_and_scopes_every_row_to_the_tenant() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;

    // Customers: 8 per tenant, the 8th soft-deleted.
    let r = ok(&gw, "acme", "db_query", json!({"model": "customers"})).await;
    assert_eq!(r["row_count"], 7, "{r}");
    assert!(rows(&r).iter().all(|c| c["tenant_id"] == "acme"));
    assert_eq!(r["redacted_fields"]["email"], "masked");
    let g = ok(&gw, "globex", "db_query", json!({"model": "customers"})).await;
    let acme_ids: Vec<i64> = rows(&r).iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert!(rows(&g)
        .iter()
        .all(|c| !acme_ids.contains(&c["id"].as_i64().unwrap())));

    // Every operator against ground truth.
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([{"field": "status", "op": "eq", "value": "paid"}]),
            "status = 'paid'",
        ),
        (json!({"status": "paid"}), "status = 'paid'"),
        (
            json!([{"field": "status", "op": "ne", "value": "paid"}]),
            "status <> 'paid'",
        ),
        (
            json!([{"field": "status", "op": "in", "value": ["paid", "shipped"]}]),
            "status IN ('paid', 'shipped')",
        ),
        (
            json!({"status": ["paid", "shipped"]}),
            "status IN ('paid', 'shipped')",
        ),
        (
            json!([{"field": "status", "op": "not_in", "value": ["paid", "shipped"]}]),
            "status NOT IN ('paid', 'shipped')",
        ),
        (
            json!([{"field": "total", "op": "gt", "value": 1000}]),
            "total > 1000",
        ),
        (
            json!([{"field": "total", "op": "lte", "value": "25.5"}]),
            "total <= 25.5",
        ),
        (
            json!([{"field": "total", "op": "between", "value": [100, 200]}]),
            "total BETWEEN 100 AND 200",
        ),
        (
            json!([{"field": "carrier_id", "op": "is_null", "value": true}]),
            "carrier_id IS NULL",
        ),
        (
            json!([{"field": "carrier_id", "op": "is_null", "value": false}]),
            "carrier_id IS NOT NULL",
        ),
        (
            json!([{"field": "created_at", "op": "gte", "value": "2025-01-01"}]),
            "created_at >= '2025-01-01'",
        ),
        (
            json!([{"field": "customer_id", "op": "eq", "value": 3}, {"field": "status", "op": "ne", "value": "cancelled"}]),
            "customer_id = 3 AND status <> 'cancelled'",
        ),
    ];
    for (filter, sql) in cases {
        let truth: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM orders WHERE tenant_id = 'acme' AND created_at >= '2025-01-01' AND ({sql})"
        ))
        .fetch_one(&env.owner)
        .await
        .unwrap();
        // Pin the seed orders (2025) with an indexed range so every filter stays in budget.
        let mut w = match filter.clone() {
            Value::Array(a) => a,
            Value::Object(o) => o
                .into_iter()
                .map(|(k, v)| {
                    if v.is_array() {
                        json!({"field": k, "op": "in", "value": v})
                    } else {
                        json!({"field": k, "op": "eq", "value": v})
                    }
                })
                .collect(),
            _ => unreachable!(),
        };
        if let Value::Object(_) = filter {
            // The short form is tested as sent, then combined below.
            let r = gw
                .call(
                    &ctx("acme"),
                    "db_query",
                    json!({"model": "orders", "where": filter}),
                )
                .await;
            assert!(
                r.is_ok() || r.as_ref().unwrap_err().code == ErrorCode::ScanBudgetExceeded,
                "{r:?}"
            );
        }
        w.push(json!({"field": "created_at", "op": "gte", "value": "2025-01-01"}));
        let r = ok(
            &gw,
            "acme",
            "db_query",
            json!({"model": "orders", "where": w, "limit": 100}),
        )
        .await;
        assert_eq!(r["row_count"].as_i64().unwrap(), truth, "{filter} ({sql})");
        assert!(rows(&r).iter().all(|o| o["tenant_id"] == "acme"));
    }

    // Text operators are case-insensitive and treat % and _ literally.
    let r = ok(&gw, "acme", "db_query", json!({"model": "customers", "where": [{"field": "name", "op": "contains", "value": "PETROV"}]})).await;
    assert_eq!(r["row_count"], 1, "{r}");
    let r = ok(
        &gw,
        "acme",
        "db_query",
        json!({"model": "customers", "where": [{"field": "name", "op": "contains", "value": "%"}]}),
    )
    .await;
    assert_eq!(r["row_count"], 0);
    let r = ok(
        &gw,
        "acme",
        "db_query",
        json!({"model": "products", "where": [{"field": "sku", "op": "startswith", "value": ""}]}),
    )
    .await;
    assert_eq!(r["row_count"], 6);

    // Ordering and select.
    let r = ok(
        &gw,
        "acme",
        "db_query",
        json!({
        "model": "orders", "select": ["id", "total"],
        "where": [{"field": "created_at", "op": "gte", "value": "2025-01-01"}],
        "order_by": [{"field": "total", "direction": "desc"}], "limit": 5}),
    )
    .await;
    let totals: Vec<f64> = rows(&r)
        .iter()
        .map(|o| o["total"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
    assert_eq!(
        rows(&r)[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "total"]
    );
    let truth: String = sqlx::query_scalar("SELECT max(total)::text FROM orders WHERE tenant_id = 'acme' AND created_at >= '2025-01-01'")
        .fetch_one(&env.owner).await.unwrap();
    assert_eq!(
        rows(&r)[0]["total"],
        json!(truth),
        "decimals are exact text"
    );

    // Default limit is the cap.
    let r = ok(&gw, "acme", "db_query", json!({"model": "orders", "where": [{"field": "customer_id", "op": "eq", "value": 1}, {"field": "created_at", "op": "gte", "value": "2024-06-01"}]})).await;
    assert!(r["row_count"].as_i64().unwrap() <= 100);
}

#[tokio::test]
async fn cursors_page_through_everything_once_and_are_bound_to_tenant_and_query() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let filter =
        json!([{"field": "created_at", "op": "between", "value": ["2024-10-01", "2025-12-31"]}]);
    let truth: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE tenant_id = 'acme' AND created_at BETWEEN '2024-10-01' AND '2025-12-31'
          ORDER BY status DESC, created_at, id",
    )
    .fetch_all(&env.owner)
    .await
    .unwrap();
    assert!(
        truth.len() > 250,
        "fixture too small for paging: {}",
        truth.len()
    );
    let base = json!({"model": "orders", "select": ["id", "status"], "where": filter,
                      "order_by": [{"field": "status", "direction": "desc"}, "created_at"], "limit": 97});
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first_cursor = None;
    loop {
        let mut args = base.clone();
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let r = ok(&gw, "acme", "db_query", args).await;
        seen.extend(rows(&r).iter().map(|o| o["id"].as_i64().unwrap()));
        match r["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(r["has_more"], true);
                first_cursor.get_or_insert_with(|| c.to_string());
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(
        seen, truth,
        "keyset pages must cover every row exactly once, in order"
    );
    let c = first_cursor.unwrap();

    // Another tenant, another query, an edited cursor: all refused.
    let mut other_tenant = base.clone();
    other_tenant["cursor"] = json!(c);
    denied(
        &gw,
        "globex",
        "db_query",
        other_tenant.clone(),
        ErrorCode::ValidationError,
    )
    .await;
    let mut other_query = base.clone();
    other_query["cursor"] = json!(c);
    other_query["order_by"] = json!(["created_at"]);
    denied(
        &gw,
        "acme",
        "db_query",
        other_query,
        ErrorCode::ValidationError,
    )
    .await;
    let mut other_filter = base.clone();
    other_filter["cursor"] = json!(c);
    other_filter["where"] = json!([{"field": "status", "op": "eq", "value": "paid"}, {"field": "created_at", "op": "gte", "value": "2024-10-01"}]);
    denied(
        &gw,
        "acme",
        "db_query",
        other_filter,
        ErrorCode::ValidationError,
    )
    .await;
    let mut edited = base.clone();
    let (payload, tag) = c.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    edited["cursor"] = json!(format!("{}.{tag}", String::from_utf8(bytes).unwrap()));
    let e = denied(&gw, "acme", "db_query", edited, ErrorCode::ValidationError).await;
    assert!(e.message.contains("cursor"), "{}", e.message);
    let mut offset = base.clone();
    offset["cursor"] = json!("100");
    denied(&gw, "acme", "db_query", offset, ErrorCode::ValidationError).await;
    // A different limit is the same query: the cursor still works.
    let mut relimited = base.clone();
    relimited["cursor"] = json!(c);
    relimited["limit"] = json!(10);
    let r = ok(&gw, "acme", "db_query", relimited).await;
    assert_eq!(rows(&r)[0]["id"].as_i64().unwrap(), truth[97]);

    // Positive control: unsigned cursors are plain offsets anyone can forge or reuse.
    let weak = env.gateway(Faults::one(Fault::CursorUnsigned)).await;
    let r = ok(&weak, "acme", "db_query", base.clone()).await;
    assert_eq!(r["next_cursor"], "97");
    let mut forged = base.clone();
    forged["cursor"] = json!("100");
    ok(&weak, "acme", "db_query", forged).await;
    let mut reused = base.clone();
    reused["cursor"] = r["next_cursor"].clone();
    ok(&weak, "globex", "db_query", reused).await;
}

#[tokio::test]
async fn get_finds_own_rows_and_hides_everything_else_the_same_way() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let own: i64 = sqlx::query_scalar("SELECT min(id) FROM customers WHERE tenant_id = 'acme'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    let other: i64 = sqlx::query_scalar("SELECT min(id) FROM customers WHERE tenant_id = 'globex'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    let deleted: i64 = sqlx::query_scalar(
        "SELECT id FROM customers WHERE tenant_id = 'acme' AND deleted_at IS NOT NULL",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();

    let r = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": own}),
    )
    .await;
    assert_eq!(r["row"]["id"], own);
    assert_eq!(r["row"]["tenant_id"], "acme");
    let r2 = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": own.to_string()}),
    )
    .await;
    assert_eq!(r, r2, "string ids are accepted for integer keys");

    let shape = |e: &preflight_enforcer::ToolError| {
        (
            e.code,
            e.suggestion.clone(),
            e.details.clone(),
            e.message
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>(),
        )
    };
    let cross = denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": other}),
        ErrorCode::NotFound,
    )
    .await;
    let absent = denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": 999999}),
        ErrorCode::NotFound,
    )
    .await;
    let gone = denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": deleted}),
        ErrorCode::NotFound,
    )
    .await;
    assert_eq!(
        shape(&cross),
        shape(&absent),
        "out of scope and absent must look the same"
    );
    assert_eq!(shape(&gone), shape(&absent));
    // Orders have no RLS: only the gateway's predicate keeps globex out.
    let gorder: i64 = sqlx::query_scalar("SELECT min(id) FROM orders WHERE tenant_id = 'globex'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": gorder}),
        ErrorCode::NotFound,
    )
    .await;
    denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": "abc"}),
        ErrorCode::ValidationError,
    )
    .await;

    // Positive control: without the tenant predicate the RLS-less orders table leaks.
    let leaky = env.gateway(Faults::one(Fault::NoTenantPredicate)).await;
    let r = ok(
        &leaky,
        "acme",
        "db_get",
        json!({"model": "orders", "id": gorder}),
    )
    .await;
    assert_eq!(r["row"]["tenant_id"], "globex");
    // ...while RLS still protects customers (defence in depth).
    denied(
        &leaky,
        "acme",
        "db_get",
        json!({"model": "customers", "id": other}),
        ErrorCode::NotFound,
    )
    .await;
}

#[tokio::test]
async fn tenant_filters_naming_another_tenant_are_refused_and_rls_is_set() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let e = denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": {"tenant_id": "globex"}}),
        ErrorCode::TenantMismatch,
    )
    .await;
    assert!(!e.message.contains("globex"), "{}", e.message);
    denied(&gw, "acme", "db_query", json!({"model": "customers", "where": [{"field": "tenant_id", "op": "in", "value": ["acme", "globex"]}]}), ErrorCode::TenantMismatch).await;
    denied(&gw, "acme", "db_aggregate", json!({"model": "orders", "aggregates": [{"function": "count"}], "where": {"tenant_id": "initech"}}), ErrorCode::TenantMismatch).await;
    let r = ok(
        &gw,
        "acme",
        "db_query",
        json!({"model": "customers", "where": {"tenant_id": "acme"}}),
    )
    .await;
    assert_eq!(r["row_count"], 7);

    // Positive control: without the tenant predicate, a forged filter reads another tenant's
    // orders (no RLS there).
    let leaky = env.gateway(Faults::one(Fault::NoTenantPredicate)).await;
    let r = ok(&leaky, "acme", "db_query", json!({"model": "orders", "where": [
        {"field": "tenant_id", "op": "eq", "value": "globex"}, {"field": "created_at", "op": "gte", "value": "2025-01-01"}]})).await;
    assert!(r["row_count"].as_i64().unwrap() > 0);
    assert!(rows(&r).iter().all(|o| o["tenant_id"] == "globex"));

    // RLS reads the tenant setting the gateway sets: without it the RLS tables show nothing.
    let no_rls = env.gateway(Faults::one(Fault::RlsDisabled)).await;
    let r = ok(&no_rls, "acme", "db_query", json!({"model": "customers"})).await;
    assert_eq!(
        r["row_count"], 0,
        "RLS without the tenant setting must fail closed"
    );
}

#[tokio::test]
async fn includes_are_scoped_redacted_and_depth_limited() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let since = json!([{"field": "created_at", "op": "gte", "value": "2025-01-01"}]);
    let deleted_customer: i64 = sqlx::query_scalar(
        "SELECT id FROM customers WHERE tenant_id = 'acme' AND deleted_at IS NOT NULL",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    let r = ok(&gw, "acme", "db_query", json!({"model": "orders", "where": since, "include": ["customer", "items.product", "carrier"], "limit": 30})).await;
    for o in rows(&r) {
        let items = o["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 3, "{o}");
        for i in items {
            assert_eq!(i["tenant_id"], "acme");
            assert_eq!(i["order_id"], o["id"]);
            assert_eq!(i["product"]["id"], i["product_id"]);
            assert_eq!(i["product"]["tenant_id"], "acme");
        }
        let c = &o["customer"];
        if o["customer_id"] == json!(deleted_customer) {
            assert!(
                c.is_null(),
                "a soft-deleted customer must not be included: {c}"
            );
            continue;
        }
        assert_eq!(c["id"], o["customer_id"]);
        assert!(
            c.get("notes").is_none()
                && c.get("api_key").is_none()
                && c.get("password_hash").is_none(),
            "{c}"
        );
        assert!(c["email"].as_str().unwrap().contains("***@"), "{c}");
        assert!(
            o.get("_pf_pk").is_none() && c.get("_pf_pk").is_none(),
            "internal columns leaked: {o}"
        );
    }
    assert_eq!(r["redacted_fields"]["customer.email"], "masked");
    // has_many from customers, with masked/hashed/denied fields on the way.
    let r = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": 1, "include": ["tickets", "payment_methods"]}),
    )
    .await;
    let tickets = r["row"]["tickets"].as_array().unwrap();
    assert!(!tickets.is_empty());
    assert!(tickets
        .iter()
        .all(|t| t["subject"].as_str().unwrap().starts_with("hmac:") && t.get("body").is_none()));
    assert!(r["row"]["payment_methods"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p.get("card_token").is_none()));

    // A row pointing at another tenant's row: the include is empty, never the foreign row.
    let gcust: i64 = sqlx::query_scalar("SELECT min(id) FROM customers WHERE tenant_id = 'globex'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    let forged: i64 = sqlx::query_scalar("INSERT INTO orders (tenant_id, customer_id, status, total, created_at) VALUES ('acme', $1, 'paid', 1, '2026-01-01') RETURNING id")
        .bind(gcust).fetch_one(&env.owner).await.unwrap();
    let r = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": forged, "include": ["customer"]}),
    )
    .await;
    assert_eq!(r["row"]["customer"], Value::Null, "{r}");
    let leaky = env.gateway(Faults::one(Fault::NoTenantPredicate)).await;
    let r = ok(
        &leaky,
        "acme",
        "db_get",
        json!({"model": "orders", "id": forged, "include": ["customer"]}),
    )
    .await;
    // RLS on customers still hides it; the fault shows on RLS-less tables (items below).
    assert_eq!(r["row"]["customer"], Value::Null);
    let gorder: i64 = sqlx::query_scalar("SELECT min(id) FROM orders WHERE tenant_id = 'globex'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    let gitem: i64 = sqlx::query_scalar("SELECT min(id) FROM order_items WHERE order_id = $1")
        .bind(gorder)
        .fetch_one(&env.owner)
        .await
        .unwrap();
    let aitem: i64 = sqlx::query_scalar("SELECT min(id) FROM order_items WHERE tenant_id = 'acme'")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    sqlx::query("UPDATE order_items SET order_id = $1 WHERE id = $2")
        .bind(forged)
        .bind(gitem)
        .execute(&env.owner)
        .await
        .unwrap();
    let _ = aitem;
    let r = ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": forged, "include": ["items"]}),
    )
    .await;
    assert_eq!(
        r["row"]["items"],
        json!([]),
        "another tenant's child row must not be included"
    );
    let r = ok(
        &leaky,
        "acme",
        "db_get",
        json!({"model": "orders", "id": forged, "include": ["items"]}),
    )
    .await;
    assert_eq!(
        r["row"]["items"][0]["tenant_id"], "globex",
        "positive control"
    );

    // Depth and relations.
    let e = denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "include": ["items.product.x"]}),
        ErrorCode::JoinDepthExceeded,
    )
    .await;
    assert_eq!(e.details["max_join_depth"], 2);
    denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "include": ["items.order.customer"]}),
        ErrorCode::JoinDepthExceeded,
    )
    .await;
    denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "include": ["payments"]}),
        ErrorCode::RelationNotAllowed,
    )
    .await;
    denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "include": ["items.customer"]}),
        ErrorCode::RelationNotAllowed,
    )
    .await;
    let deep = env.gateway(Faults::one(Fault::JoinDepthOff)).await;
    let r = ok(
        &deep,
        "acme",
        "db_get",
        json!({"model": "orders", "id": 1, "include": ["items.order.customer"]}),
    )
    .await;
    assert_eq!(
        r["row"]["items"][0]["order"]["customer"]["id"], r["row"]["customer_id"],
        "positive control"
    );
}

#[tokio::test]
async fn aggregates_match_ground_truth_and_refuse_protected_fields() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let since = json!([{"field": "created_at", "op": "gte", "value": "2025-01-01"}]);
    let r = ok(&gw, "acme", "db_aggregate", json!({"model": "orders", "where": since, "group_by": ["status"],
        "aggregates": [{"function": "count"}, {"function": "sum", "field": "total"}, {"function": "max", "field": "created_at", "alias": "latest"},
                       {"function": "avg", "field": "total"}, {"function": "min", "field": "total"}, {"function": "count", "field": "carrier_id", "alias": "shipped"}]})).await;
    let truth = sqlx::query("SELECT status, count(*) AS n, sum(total)::text AS s, count(carrier_id) AS c, min(total)::text AS lo FROM orders
                             WHERE tenant_id = 'acme' AND created_at >= '2025-01-01' GROUP BY status ORDER BY status")
        .fetch_all(&env.owner).await.unwrap();
    assert_eq!(rows(&r).len(), truth.len());
    for (row, t) in rows(&r).iter().zip(&truth) {
        assert_eq!(row["status"], json!(t.get::<String, _>("status")));
        assert_eq!(row["count"], json!(t.get::<i64, _>("n")));
        assert_eq!(row["sum_total"], json!(t.get::<String, _>("s")));
        assert_eq!(row["shipped"], json!(t.get::<i64, _>("c")));
        assert_eq!(row["min_total"], json!(t.get::<String, _>("lo")));
        assert!(row["latest"].is_string() && row["avg_total"].is_string());
    }
    // Without group_by: one row.
    let r = ok(&gw, "acme", "db_aggregate", json!({"model": "customers", "aggregates": [{"function": "count"}, {"function": "count", "field": "phone", "alias": "with_phone"}]})).await;
    assert_eq!(rows(&r).len(), 1);
    assert_eq!(rows(&r)[0]["count"], 7);

    denied(
        &gw,
        "acme",
        "db_aggregate",
        json!({"model": "customers", "aggregates": [{"function": "sum", "field": "name"}]}),
        ErrorCode::ValidationError,
    )
    .await;
    denied(
        &gw,
        "acme",
        "db_aggregate",
        json!({"model": "customers", "aggregates": [{"function": "max", "field": "ssn"}]}),
        ErrorCode::FieldDenied,
    )
    .await;
    denied(
        &gw,
        "acme",
        "db_aggregate",
        json!({"model": "customers", "aggregates": [{"function": "min", "field": "email"}]}),
        ErrorCode::FieldDenied,
    )
    .await;
    denied(&gw, "acme", "db_aggregate", json!({"model": "customers", "aggregates": [{"function": "count"}], "group_by": ["date_of_birth"]}), ErrorCode::FieldDenied).await;
    denied(
        &gw,
        "acme",
        "db_aggregate",
        json!({"model": "customers", "aggregates": [{"function": "count", "field": "notes"}]}),
        ErrorCode::FieldDenied,
    )
    .await;
    denied(&gw, "acme", "db_aggregate", json!({"model": "customers", "aggregates": [{"function": "count"}], "group_by": ["api_key"]}), ErrorCode::FieldDenied).await;
    let e = denied(&gw, "acme", "db_aggregate", json!({"model": "orders", "where": since, "group_by": ["customer_id"], "aggregates": [{"function": "count"}], "limit": 51}), ErrorCode::RowBudgetExceeded).await;
    assert!(e.suggestion.contains("50"), "{}", e.suggestion);

    // Positive control: with the oracle check off, max(ssn) returns the raw value.
    let oracle = env.gateway(Faults::one(Fault::OracleCheckOff)).await;
    let r = ok(
        &oracle,
        "acme",
        "db_aggregate",
        json!({"model": "customers", "aggregates": [{"function": "max", "field": "ssn"}]}),
    )
    .await;
    let raw: String = sqlx::query_scalar(
        "SELECT max(ssn) FROM customers WHERE tenant_id = 'acme' AND deleted_at IS NULL",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(rows(&r)[0]["max_ssn"], json!(raw));
}

#[tokio::test]
async fn budgets_refuse_before_running_and_cut_slow_statements() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;

    // Row budget.
    let since = json!([{"field": "created_at", "op": "gte", "value": "2025-01-01"}]);
    let e = denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "limit": 101}),
        ErrorCode::RowBudgetExceeded,
    )
    .await;
    assert!(e.suggestion.contains("100"), "{}", e.suggestion);
    assert_eq!(e.details["max_rows"], 100);
    denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since, "limit": 1_000_000_000_000u64}),
        ErrorCode::RowBudgetExceeded,
    )
    .await;
    let r = ok(
        &gw,
        "acme",
        "db_query",
        json!({"model": "orders", "where": since}),
    )
    .await;
    assert_eq!(r["row_count"], 30);
    let loose = env.gateway(Faults::one(Fault::RowBudgetOff)).await;
    let r = ok(
        &loose,
        "acme",
        "db_query",
        json!({"model": "order_items", "where": {"order_id": [1, 2, 3, 4, 5]}, "limit": 1000}),
    )
    .await;
    assert!(r["row_count"].as_i64().unwrap() > 0);
    loose.pool().close().await;

    // Scan budget: an unbounded read of the big orders table never reaches the table.
    let total_orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert!(total_orders > 10_000);
    flush_stats(&env, &gw).await;
    let before = table_reads(&env.owner, "orders").await;
    let gw = env.gateway(Faults::none()).await;
    let unbounded = [
        json!({"model": "orders"}),
        json!({"model": "orders", "limit": 1}),
        json!({"model": "orders", "order_by": [{"field": "total", "direction": "desc"}], "limit": 5}),
        json!({"model": "orders", "where": [{"field": "status", "op": "eq", "value": "refunded"}]}),
    ];
    for args in &unbounded {
        let e = denied(
            &gw,
            "acme",
            "db_query",
            args.clone(),
            ErrorCode::ScanBudgetExceeded,
        )
        .await;
        assert!(
            e.suggestion.contains("created_at"),
            "suggestion must name an indexed field: {}",
            e.suggestion
        );
        assert!(
            e.details["estimated_rows"].as_u64().unwrap() > 10_000,
            "{}",
            e.details
        );
    }
    let e = denied(
        &gw,
        "acme",
        "db_aggregate",
        json!({"model": "orders", "aggregates": [{"function": "sum", "field": "total"}]}),
        ErrorCode::ScanBudgetExceeded,
    )
    .await;
    assert_eq!(e.details["max_scan_rows"], 10_000);
    flush_stats(&env, &gw).await;
    let after = table_reads(&env.owner, "orders").await;
    assert_eq!(
        before, after,
        "a refused read must not scan the table (seq_scan, seq_tup_read, idx_tup_fetch)"
    );

    // Positive control: with the scan check off the same read runs and the counters move.
    let off = env.gateway(Faults::one(Fault::ScanBudgetOff)).await;
    let r = ok(&off, "acme", "db_query", json!({"model": "orders", "order_by": [{"field": "total", "direction": "desc"}], "limit": 5})).await;
    assert_eq!(r["row_count"], 5);
    // The read ran on a pipelined session whose rollback is spawned after the call returns:
    // publish until its counters show (a few seconds at most).
    let mut moved = after;
    for _ in 0..25 {
        flush_stats(&env, &off).await;
        moved = table_reads(&env.owner, "orders").await;
        if moved.1 > after.1 || moved.2 > after.2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        moved.1 > after.1 || moved.2 > after.2,
        "positive control did not read orders: {after:?} -> {moved:?}"
    );

    // A narrow, indexed read of the same table is within budget.
    let gw = env.gateway(Faults::none()).await;
    ok(&gw, "acme", "db_query", json!({"model": "orders", "where": [{"field": "created_at", "op": "between", "value": ["2023-01-01", "2023-01-31"]}]})).await;
    ok(
        &gw,
        "acme",
        "db_get",
        json!({"model": "orders", "id": 5, "include": ["customer"]}),
    )
    .await;

    // Statement timeout: a slow scan is cut off at the policy's timeout, quickly.
    let slow_policy = env.policy_with(|m| {
        m.budgets.max_scan_rows = None;
        m.budgets.statement_timeout_ms = Some(1);
    });
    let slow = env
        .gateway_with(slow_policy.clone(), Faults::none(), Vec::new())
        .await;
    let heavy = json!({"model": "orders", "aggregates": [{"function": "count"}, {"function": "sum", "field": "total"}, {"function": "max", "field": "created_at"}],
                       "where": [{"field": "status", "op": "ne", "value": "x"}, {"field": "tenant_id", "op": "ne", "value": "nobody"}], "group_by": ["customer_id", "status"]});
    let started = Instant::now();
    let e = denied(
        &slow,
        "acme",
        "db_aggregate",
        heavy.clone(),
        ErrorCode::StatementTimeout,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout took {:?}",
        started.elapsed()
    );
    assert!(e.message.contains("1 ms"), "{}", e.message);
    // Positive control: without the timeout the same statement completes.
    let untimed = env
        .gateway_with(slow_policy, Faults::one(Fault::TimeoutOff), Vec::new())
        .await;
    let r = ok(&untimed, "acme", "db_aggregate", heavy).await;
    assert!(r["row_count"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn every_call_is_audited_inside_its_transaction_and_sink_failure_fails_closed() {
    let env = env().await;
    let sink = Arc::new(RecordingSink::default());
    let gw = env
        .gateway_with(
            env.policy.clone(),
            Faults::none(),
            vec![sink.clone() as Arc<dyn AuditSink>],
        )
        .await;
    let calls: Vec<(&str, Value, Option<ErrorCode>)> = vec![
        ("db_describe_schema", json!({}), None),
        (
            "db_query",
            json!({"model": "customers", "select": ["id", "email"]}),
            None,
        ),
        ("db_get", json!({"model": "customers", "id": 1}), None),
        (
            "db_get",
            json!({"model": "customers", "id": 9}),
            Some(ErrorCode::NotFound),
        ),
        (
            "db_query",
            json!({"model": "orders"}),
            Some(ErrorCode::ScanBudgetExceeded),
        ),
        (
            "db_query",
            json!({"model": "customers", "where": {"ssn": "911-56-7219"}}),
            Some(ErrorCode::FieldDenied),
        ),
        (
            "db_query",
            json!({"model": "secrets"}),
            Some(ErrorCode::ModelNotAllowed),
        ),
        (
            "db_query",
            json!({"model": "customers", "limit": "ten"}),
            Some(ErrorCode::ValidationError),
        ),
        ("db_drop_table", json!({}), Some(ErrorCode::ValidationError)),
        (
            "db_create",
            json!({"model": "customers", "data": {"name": "x"}}),
            Some(ErrorCode::ModelNotAllowed),
        ),
    ];
    for (tool, args, code) in &calls {
        let r = gw.call(&ctx("acme"), tool, args.clone()).await;
        assert_eq!(
            r.as_ref().err().map(|e| e.code),
            *code,
            "{tool} {args}: {r:?}"
        );
    }
    let records = sink.records();
    assert_eq!(
        records.len(),
        calls.len(),
        "one record per call, denials included"
    );
    for ((record, seen), (tool, args, code)) in records.iter().zip(&calls) {
        assert_eq!(
            seen.as_deref(),
            Some("acme"),
            "the sink must run inside the call's transaction"
        );
        assert_eq!(record.tenant_id, "acme");
        assert_eq!(record.policy_hash, "test-policy-hash-0001");
        assert_eq!(record.arguments_sha256, arguments_sha256(args));
        assert_eq!(record.error_code.as_deref(), code.map(|c| c.as_str()));
        assert_eq!(
            record.decision,
            if code.is_some() {
                Decision::Deny
            } else {
                Decision::Allow
            },
            "{tool}"
        );
        if *tool != "db_drop_table" {
            assert_eq!(record.tool, *tool);
        }
        assert!(
            !record.arguments.to_string().contains("911-56-7219"),
            "sanitized arguments leak"
        );
    }
    assert_eq!(records[1].0.rows_returned, Some(7));
    assert_eq!(records[2].0.subjects, vec!["customers:1".to_string()]);
    let in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(
        in_db,
        calls.len() as i64,
        "every record committed with its call"
    );
    let trace: String = sqlx::query_scalar(
        "SELECT trace_id FROM preflight_audit.audit_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&env.owner)
    .await
    .unwrap();
    assert_eq!(trace, records.last().unwrap().0.trace_id);

    // A failing sink fails the call closed: no data, an internal error, nothing committed.
    sink.set_failing(true);
    let e = denied(
        &gw,
        "acme",
        "db_query",
        json!({"model": "customers"}),
        ErrorCode::Internal,
    )
    .await;
    assert!(e.message.contains("audit"), "{}", e.message);
    assert!(e.details["correlation_id"].is_string());
    denied(
        &gw,
        "acme",
        "db_get",
        json!({"model": "customers", "id": 999}),
        ErrorCode::Internal,
    )
    .await;
    let h = gw.health().await;
    assert!(!h.audit_sinks[0].ok);
    sink.set_failing(false);
    let in_db_after: i64 = sqlx::query_scalar("SELECT count(*) FROM preflight_audit.audit_log")
        .fetch_one(&env.owner)
        .await
        .unwrap();
    assert_eq!(in_db_after, in_db);

    // Positive control: the audit fault writes nothing.
    let silent = env
        .gateway_with(
            env.policy.clone(),
            Faults::one(Fault::AuditSkipped),
            vec![sink.clone() as Arc<dyn AuditSink>],
        )
        .await;
    ok(&silent, "acme", "db_query", json!({"model": "customers"})).await;
    assert_eq!(sink.records().len(), calls.len());
}

#[tokio::test]
async fn health_reports_version_policy_hash_and_sinks() {
    let env = env().await;
    let sink = Arc::new(RecordingSink::default());
    let gw = env
        .gateway_with(
            env.policy.clone(),
            Faults::none(),
            vec![sink.clone() as Arc<dyn AuditSink>],
        )
        .await;
    let h = gw.health().await;
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.policy_hash, env.policy.hash);
    assert_eq!(h.audit_sinks.len(), 1);
    assert!(h.audit_sinks[0].ok);
    assert_eq!(h.audit_sinks[0].kind, "recording");
    assert_eq!(gw.name(), "builtin");
    // A bad URL is a clear error without the password.
    let e = preflight_enforcer::builtin::BuiltinGateway::connect(
        env.policy.clone(),
        "postgres://preflight_agent:hunter2@127.0.0.1:1/shop",
        preflight_enforcer::builtin::BuiltinOptions {
            acquire_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("****") && !text.contains("hunter2"), "{text}");
}
