//! Hostile arguments against the built-in gateway: SQL in every identifier and value position,
//! unicode and NUL bytes, absurd limits, includes past the depth, foreign cursors, wrong JSON
//! types. Each must come back as a structured error with the expected code (or a harmless empty
//! result for SQL-looking VALUES, which are just data), and the database must be unchanged.

use preflight_enforcer::{ErrorCode, Fault, Faults, Gateway};
use serde_json::{json, Value};

use crate::gateway_support::*;

use ErrorCode::{
    FieldDenied, JoinDepthExceeded, ModelNotAllowed, RelationNotAllowed, RowBudgetExceeded,
    TenantMismatch, ValidationError,
};

fn hostile_calls() -> Vec<(&'static str, &'static str, Value, ErrorCode)> {
    let since = json!({"field": "created_at", "op": "gte", "value": "2025-01-01"});
    vec![
        // SQL in model names.
        (
            "model injection",
            "db_query",
            json!({"model": "orders; DROP TABLE orders; --"}),
            ModelNotAllowed,
        ),
        (
            "quoted model",
            "db_query",
            json!({"model": "\"orders\""}),
            ModelNotAllowed,
        ),
        (
            "schema-qualified model",
            "db_query",
            json!({"model": "public.orders"}),
            ModelNotAllowed,
        ),
        (
            "catalog model",
            "db_query",
            json!({"model": "pg_authid"}),
            ModelNotAllowed,
        ),
        (
            "meta model",
            "db_get",
            json!({"model": "preflight_meta.canaries", "id": 1}),
            ModelNotAllowed,
        ),
        (
            "audit model",
            "db_aggregate",
            json!({"model": "audit_log", "aggregates": [{"function": "count"}]}),
            ModelNotAllowed,
        ),
        // SQL in field names.
        (
            "select injection",
            "db_query",
            json!({"model": "customers", "select": ["id, (SELECT api_key FROM customers LIMIT 1) AS x"]}),
            ValidationError,
        ),
        (
            "select star",
            "db_query",
            json!({"model": "customers", "select": ["*"]}),
            ValidationError,
        ),
        (
            "where field injection",
            "db_query",
            json!({"model": "customers", "where": [{"field": "1=1 OR id", "op": "eq", "value": 1}]}),
            ValidationError,
        ),
        (
            "short-form field injection",
            "db_query",
            json!({"model": "customers", "where": {"id\" = 1 OR \"id": 1}}),
            ValidationError,
        ),
        (
            "order field injection",
            "db_query",
            json!({"model": "customers", "order_by": ["(SELECT 1)"]}),
            ValidationError,
        ),
        (
            "group field injection",
            "db_aggregate",
            json!({"model": "customers", "aggregates": [{"function": "count"}], "group_by": ["name; DELETE FROM customers"]}),
            ValidationError,
        ),
        (
            "aggregate field injection",
            "db_aggregate",
            json!({"model": "customers", "aggregates": [{"function": "sum", "field": "id) FROM customers; --"}]}),
            ValidationError,
        ),
        (
            "alias injection",
            "db_aggregate",
            json!({"model": "customers", "aggregates": [{"function": "count", "alias": "x\" FROM customers; --"}]}),
            ValidationError,
        ),
        // SQL in order direction and operators.
        (
            "direction injection",
            "db_query",
            json!({"model": "customers", "order_by": [{"field": "id", "direction": "desc; DROP TABLE customers"}]}),
            ValidationError,
        ),
        (
            "operator injection",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "= 1 OR 1=1 --", "value": 1}]}),
            ValidationError,
        ),
        (
            "raw operator",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": ">=", "value": 1}]}),
            ValidationError,
        ),
        (
            "function name",
            "db_aggregate",
            json!({"model": "orders", "aggregates": [{"function": "pg_sleep", "field": "total"}]}),
            ValidationError,
        ),
        // Values of the wrong type for their column (SQL-looking values are checked below).
        (
            "integer value injection",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "eq", "value": "1 OR 1=1"}]}),
            ValidationError,
        ),
        (
            "timestamp value injection",
            "db_query",
            json!({"model": "orders", "where": [{"field": "created_at", "op": "gte", "value": "now() - interval '1 day'"}]}),
            ValidationError,
        ),
        (
            "numeric value injection",
            "db_query",
            json!({"model": "orders", "where": [since.clone(), {"field": "total", "op": "gt", "value": "0; DROP TABLE orders"}]}),
            ValidationError,
        ),
        (
            "id injection",
            "db_get",
            json!({"model": "customers", "id": "1; DELETE FROM customers"}),
            ValidationError,
        ),
        (
            "object as value",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "eq", "value": {"$gt": 0}}]}),
            ValidationError,
        ),
        (
            "null for eq",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "eq", "value": null}]}),
            ValidationError,
        ),
        (
            "list for eq",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "eq", "value": [1, 2]}]}),
            ValidationError,
        ),
        (
            "scalar for in",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "in", "value": 1}]}),
            ValidationError,
        ),
        (
            "empty in",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "in", "value": []}]}),
            ValidationError,
        ),
        (
            "between of three",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "between", "value": [1, 2, 3]}]}),
            ValidationError,
        ),
        (
            "contains on integer",
            "db_query",
            json!({"model": "customers", "where": [{"field": "id", "op": "contains", "value": "1"}]}),
            ValidationError,
        ),
        (
            "out of range date",
            "db_query",
            json!({"model": "orders", "where": [{"field": "created_at", "op": "between", "value": ["2025-13-45", "2025-14-01"]}]}),
            ValidationError,
        ),
        (
            "int overflow",
            "db_get",
            json!({"model": "customers", "id": "99999999999999999999999"}),
            ValidationError,
        ),
        // Unicode and NUL bytes.
        (
            "NUL in value",
            "db_query",
            json!({"model": "customers", "where": [{"field": "name", "op": "eq", "value": "Olga\u{0}Petrov"}]}),
            ValidationError,
        ),
        (
            "NUL in field",
            "db_query",
            json!({"model": "customers", "where": [{"field": "name\u{0}", "op": "eq", "value": "x"}]}),
            ValidationError,
        ),
        (
            "NUL in model",
            "db_query",
            json!({"model": "customers\u{0}"}),
            ModelNotAllowed,
        ),
        (
            "NUL in key",
            "db_query",
            json!({"model": "customers", "where": {"name\u{0}": "x"}}),
            ValidationError,
        ),
        (
            "NUL in cursor",
            "db_query",
            json!({"model": "customers", "cursor": "abc\u{0}.def"}),
            ValidationError,
        ),
        (
            "unicode field",
            "db_query",
            json!({"model": "customers", "where": [{"field": "nаme", "op": "eq", "value": "x"}]}),
            ValidationError,
        ),
        (
            "RTL override model",
            "db_query",
            json!({"model": "customers\u{202e}"}),
            ModelNotAllowed,
        ),
        (
            "huge string",
            "db_query",
            json!({"model": "customers", "where": [{"field": "name", "op": "eq", "value": "x".repeat(5000)}]}),
            ValidationError,
        ),
        // Limits.
        (
            "limit 0",
            "db_query",
            json!({"model": "customers", "limit": 0}),
            ValidationError,
        ),
        (
            "limit -1",
            "db_query",
            json!({"model": "customers", "limit": -1}),
            ValidationError,
        ),
        (
            "limit 1e12",
            "db_query",
            json!({"model": "customers", "limit": 1_000_000_000_000u64}),
            RowBudgetExceeded,
        ),
        (
            "limit 1e30",
            "db_query",
            json!({"model": "customers", "limit": 1e30}),
            RowBudgetExceeded,
        ),
        (
            "limit fraction",
            "db_query",
            json!({"model": "customers", "limit": 2.5}),
            ValidationError,
        ),
        (
            "limit string",
            "db_query",
            json!({"model": "customers", "limit": "10; DROP TABLE customers"}),
            ValidationError,
        ),
        (
            "aggregate limit 0",
            "db_aggregate",
            json!({"model": "customers", "aggregates": [{"function": "count"}], "group_by": ["id"], "limit": 0}),
            ValidationError,
        ),
        // Includes.
        (
            "include past depth",
            "db_query",
            json!({"model": "orders", "where": [since.clone()], "include": ["items.product.order_items"]}),
            JoinDepthExceeded,
        ),
        (
            "include deep chain",
            "db_get",
            json!({"model": "customers", "id": 1, "include": ["orders.items.order.customer.orders"]}),
            JoinDepthExceeded,
        ),
        (
            "include injection",
            "db_query",
            json!({"model": "orders", "where": [since.clone()], "include": ["customer; DROP TABLE orders"]}),
            ValidationError,
        ),
        (
            "include unknown",
            "db_query",
            json!({"model": "orders", "where": [since.clone()], "include": ["tenant"]}),
            RelationNotAllowed,
        ),
        (
            "include empty segment",
            "db_query",
            json!({"model": "orders", "where": [since.clone()], "include": ["items..product"]}),
            ValidationError,
        ),
        // Cursors.
        (
            "garbage cursor",
            "db_query",
            json!({"model": "customers", "cursor": "not a cursor"}),
            ValidationError,
        ),
        (
            "offset cursor",
            "db_query",
            json!({"model": "customers", "cursor": "0"}),
            ValidationError,
        ),
        (
            "sql cursor",
            "db_query",
            json!({"model": "customers", "cursor": "1; DROP TABLE customers"}),
            ValidationError,
        ),
        // Wrong JSON types and shapes.
        (
            "arguments array",
            "db_query",
            json!(["customers"]),
            ValidationError,
        ),
        (
            "arguments string",
            "db_query",
            json!("SELECT * FROM customers"),
            ValidationError,
        ),
        ("arguments null", "db_query", Value::Null, ValidationError),
        (
            "model number",
            "db_query",
            json!({"model": 1}),
            ValidationError,
        ),
        ("missing model", "db_query", json!({}), ValidationError),
        (
            "select string",
            "db_query",
            json!({"model": "customers", "select": "id"}),
            ValidationError,
        ),
        (
            "where string",
            "db_query",
            json!({"model": "customers", "where": "id = 1"}),
            ValidationError,
        ),
        (
            "order_by object",
            "db_query",
            json!({"model": "customers", "order_by": {"id": "asc"}}),
            ValidationError,
        ),
        (
            "include string",
            "db_query",
            json!({"model": "orders", "include": "customer"}),
            ValidationError,
        ),
        (
            "unknown key",
            "db_query",
            json!({"model": "customers", "sql": "SELECT 1"}),
            ValidationError,
        ),
        (
            "tenant argument",
            "db_query",
            json!({"model": "customers", "tenant": "globex"}),
            ValidationError,
        ),
        (
            "id bool",
            "db_get",
            json!({"model": "customers", "id": true}),
            ValidationError,
        ),
        (
            "aggregates empty",
            "db_aggregate",
            json!({"model": "customers", "aggregates": []}),
            ValidationError,
        ),
        (
            "describe with args",
            "db_describe_schema",
            json!({"model": "customers"}),
            ValidationError,
        ),
        (
            "unknown tool",
            "db_execute_sql",
            json!({"sql": "DROP TABLE customers"}),
            ValidationError,
        ),
        (
            "dotted tool name",
            "db.query",
            json!({"model": "customers"}),
            ValidationError,
        ),
        // Field policy on input.
        (
            "filter denied",
            "db_query",
            json!({"model": "customers", "where": [{"field": "api_key", "op": "startswith", "value": "sk_live_"}]}),
            FieldDenied,
        ),
        (
            "filter masked eq",
            "db_query",
            json!({"model": "customers", "where": {"ssn": "911-56-7219"}}),
            FieldDenied,
        ),
        (
            "filter masked prefix",
            "db_query",
            json!({"model": "customers", "where": [{"field": "email", "op": "startswith", "value": "olga"}]}),
            FieldDenied,
        ),
        (
            "filter hashed eq",
            "db_query",
            json!({"model": "support_tickets", "where": {"subject": "x"}}),
            FieldDenied,
        ),
        (
            "order masked",
            "db_query",
            json!({"model": "customers", "order_by": ["date_of_birth"]}),
            FieldDenied,
        ),
        (
            "order denied",
            "db_query",
            json!({"model": "customers", "order_by": ["password_hash"]}),
            FieldDenied,
        ),
        (
            "select denied",
            "db_query",
            json!({"model": "customers", "select": ["id", "notes"]}),
            FieldDenied,
        ),
        (
            "get select denied",
            "db_get",
            json!({"model": "payment_methods", "id": 1, "select": ["card_token"]}),
            FieldDenied,
        ),
        (
            "tenant forged",
            "db_query",
            json!({"model": "customers", "where": {"tenant_id": "globex"}}),
            TenantMismatch,
        ),
    ]
}

#[tokio::test]
async fn hostile_arguments_get_structured_errors_and_change_nothing() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let before = checksum(&env.owner).await;
    let mut failures = Vec::new();
    for (label, tool, args, code) in hostile_calls() {
        match gw.call(&ctx("acme"), tool, args.clone()).await {
            Ok(v) => failures.push(format!("{label}: expected {code}, got a result {v}")),
            Err(e) => {
                assert_safe_error(&e);
                if e.code != code {
                    failures.push(format!("{label}: expected {code}, got {}", e.to_json()));
                }
                // The echo of agent input in messages is bounded and escaped.
                assert!(!e.message.contains('\0'), "{label}: raw NUL echoed");
                assert!(
                    e.message.chars().count() < 600,
                    "{label}: message too long: {}",
                    e.message
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile calls misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checksum(&env.owner).await, before, "the database changed");
}

#[tokio::test]
async fn sql_looking_values_are_only_data() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let before = checksum(&env.owner).await;
    for value in [
        "'; DROP TABLE customers; --",
        "x' OR '1'='1",
        "\\'; DELETE FROM orders; --",
        "$1",
        "%' OR name LIKE '%",
        "Ölga Pétrov 🙂 \u{202e}",
        "name\"); DROP TABLE customers; --",
    ] {
        for op in ["eq", "ne", "contains", "startswith", "endswith", "in"] {
            let v = if op == "in" {
                json!([value, "Olga Petrov"])
            } else {
                json!(value)
            };
            let r = ok(
                &gw,
                "acme",
                "db_query",
                json!({"model": "customers", "where": [{"field": "name", "op": op, "value": v}]}),
            )
            .await;
            let n = r["row_count"].as_i64().unwrap();
            match op {
                "ne" => assert_eq!(n, 7, "{value}"),
                "in" => assert_eq!(n, 1, "{value}"),
                _ => assert_eq!(n, 0, "{op} {value}"),
            }
        }
    }
    // The same values in a text column of the aggregate path and in get ids (as strings).
    ok(&gw, "acme", "db_aggregate", json!({"model": "customers", "aggregates": [{"function": "count"}], "where": {"name": "' OR 1=1 --"}})).await;
    assert_eq!(checksum(&env.owner).await, before, "the database changed");
}

#[tokio::test]
async fn error_details_never_reach_the_agent() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    // A date the gateway's shape check lets through and the server rejects.
    let args = json!({"model": "orders", "where": [{"field": "created_at", "op": "between", "value": ["2025-02-30", "2025-03-01"]}]});
    let e = denied(&gw, "acme", "db_query", args.clone(), ValidationError).await;
    assert!(
        !e.message.contains("2025-02-30") && !e.message.contains("out of range"),
        "{}",
        e.message
    );
    // Positive control: the leak switch passes the server's text through.
    let leaky = env.gateway(Faults::one(Fault::ErrorDetailLeak)).await;
    let e = leaky
        .call(&ctx("acme"), "db_query", args)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("2025-02-30") && e.message.contains("DETAIL"),
        "fault had no effect: {}",
        e.message
    );
}
