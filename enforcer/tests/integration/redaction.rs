//! Redaction on every path: every masked, hashed and denied field of every model, read through
//! db_query, db_get, an include from a related model, and db_aggregate, compared with the raw
//! values from the owner connection and scanned for every protected canary. Each fault that
//! weakens redaction must make these checks fail.

use std::collections::{BTreeMap, BTreeSet};

use preflight_enforcer::builtin::BuiltinGateway;
use preflight_enforcer::policy::{FieldAction, Policy};
use preflight_enforcer::{ErrorCode, Fault, Faults, Gateway};
use serde_json::{json, Map, Value};

use crate::gateway_support::*;

/// (parent model, relation, child model): one include path per model that has protected fields
/// and a relation leading to it. `users` has none: no relation reaches it, so no include can.
const INCLUDES: [(&str, &str, &str); 5] = [
    ("order_items", "order", "orders"),
    ("orders", "customer", "customers"),
    ("customers", "payment_methods", "payment_methods"),
    ("customers", "tickets", "support_tickets"),
    ("orders", "refunds", "refunds"),
];

type Raw = BTreeMap<(String, i64), Map<String, Value>>;

async fn raw_rows(env: &Env, table: &str, ids: &[i64], raw: &mut Raw) {
    let rows: Vec<Value> = sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t) FROM public.{table} t WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&env.owner)
    .await
    .unwrap();
    for r in rows {
        if let Value::Object(m) = r {
            let id = m["id"].as_i64().unwrap();
            raw.insert((table.to_string(), id), m);
        }
    }
}

async fn acme_ids(env: &Env, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!(
        "SELECT id FROM public.{table} WHERE tenant_id = 'acme' ORDER BY id LIMIT 40"
    ))
    .fetch_all(&env.owner)
    .await
    .unwrap()
}

/// Checks one row of `model` against the raw row; records which protected columns were seen.
fn check_row(
    policy: &Policy,
    model: &str,
    row: &Map<String, Value>,
    raw: &Raw,
    seen: &mut BTreeSet<(String, String)>,
    how: &str,
) {
    let m = policy.model(model).unwrap();
    let id = row["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{how}: {model} row without id: {row:?}"));
    let original = &raw[&(model.to_string(), id)];
    for c in &m.columns {
        let got = row.get(&c.name);
        let orig = &original[&c.name];
        match c.action {
            FieldAction::Deny => assert!(
                got.is_none(),
                "{how}: denied {model}.{} returned: {got:?}",
                c.name
            ),
            FieldAction::Mask => {
                let got = got.unwrap_or_else(|| panic!("{how}: masked {model}.{} missing", c.name));
                if orig.is_null() {
                    assert!(got.is_null());
                    continue;
                }
                let g = got.as_str().unwrap();
                let o = orig
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| orig.to_string());
                assert!(
                    g.contains("***"),
                    "{how}: {model}.{} not masked: {g}",
                    c.name
                );
                assert!(!g.contains(&o), "{how}: {model}.{} leaks its value", c.name);
                seen.insert((model.to_string(), c.name.clone()));
            }
            FieldAction::Hash => {
                let g = got.unwrap_or_else(|| panic!("{how}: hashed {model}.{} missing", c.name));
                let g = g.as_str().unwrap();
                assert!(
                    g.starts_with("hmac:") && g.len() == 69,
                    "{how}: {model}.{} not hashed: {g}",
                    c.name
                );
                seen.insert((model.to_string(), c.name.clone()));
            }
            FieldAction::Allow => {}
        }
    }
}

fn protected(policy: &Policy) -> BTreeSet<(String, String)> {
    policy
        .models
        .values()
        .flat_map(|m| {
            m.columns
                .iter()
                .filter(|c| matches!(c.action, FieldAction::Mask | FieldAction::Hash))
                .map(move |c| (m.name.clone(), c.name.clone()))
        })
        .collect()
}

/// Reads every protected field through query, get and include; returns every response.
async fn read_everything(env: &Env, gw: &BuiltinGateway, check: bool) -> Vec<String> {
    let policy = env.policy.clone();
    let mut raw = Raw::new();
    let mut texts = Vec::new();
    let mut via_query = BTreeSet::new();
    let mut via_get = BTreeSet::new();
    let mut via_include = BTreeSet::new();
    for m in policy.models.values() {
        if m.columns.iter().all(|c| c.action == FieldAction::Allow) {
            continue;
        }
        let ids = acme_ids(env, &m.table).await;
        raw_rows(env, &m.table, &ids, &mut raw).await;
        let r = ok(
            gw,
            "acme",
            "db_query",
            json!({"model": m.name, "where": [{"field": "id", "op": "in", "value": ids}]}),
        )
        .await;
        texts.push(r.to_string());
        if check {
            assert!(r["row_count"].as_i64().unwrap() > 0, "{}: no rows", m.name);
            for row in rows(&r) {
                check_row(
                    &policy,
                    &m.name,
                    row.as_object().unwrap(),
                    &raw,
                    &mut via_query,
                    "db_query",
                );
            }
        }
        for id in ids.iter().take(3) {
            let r = gw
                .call(&ctx("acme"), "db_get", json!({"model": m.name, "id": id}))
                .await;
            let Ok(r) = r else { continue }; // soft-deleted rows are not_found
            texts.push(r.to_string());
            if check {
                check_row(
                    &policy,
                    &m.name,
                    r["row"].as_object().unwrap(),
                    &raw,
                    &mut via_get,
                    "db_get",
                );
            }
        }
    }
    for (parent, relation, child) in INCLUDES {
        let parents = acme_ids(env, parent).await;
        let children: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM public.{child} WHERE tenant_id = 'acme'"
        ))
        .fetch_all(&env.owner)
        .await
        .unwrap();
        raw_rows(env, child, &children, &mut raw).await;
        let r = ok(gw, "acme", "db_query", json!({"model": parent, "where": [{"field": "id", "op": "in", "value": parents}], "include": [relation]})).await;
        texts.push(r.to_string());
        if check {
            for row in rows(&r) {
                let related: Vec<&Value> = match &row[relation] {
                    Value::Array(items) => items.iter().collect(),
                    Value::Null => Vec::new(),
                    v => vec![v],
                };
                for c in related {
                    check_row(
                        &policy,
                        child,
                        c.as_object().unwrap(),
                        &raw,
                        &mut via_include,
                        "include",
                    );
                }
            }
        }
    }
    if check {
        let all = protected(&policy);
        assert_eq!(
            via_query, all,
            "every masked/hashed field must be exercised through db_query"
        );
        assert_eq!(via_get, all, "... and db_get");
        let reachable: BTreeSet<_> = all
            .iter()
            .filter(|(m, _)| INCLUDES.iter().any(|(_, _, c)| c == m))
            .cloned()
            .collect();
        assert_eq!(via_include, reachable, "... and includes");
    }
    texts
}

async fn leaked_canaries(env: &Env, texts: &[String]) -> Vec<String> {
    let canaries = protected_canaries(&env.owner, &env.policy).await;
    assert!(
        canaries.len() > 100,
        "canary registry unexpectedly small: {}",
        canaries.len()
    );
    let mut leaked = Vec::new();
    for (value, table, column) in canaries {
        // JSON-escaped form, as it would appear inside a response.
        let needle = serde_json::to_string(&value).unwrap();
        let needle = &needle[1..needle.len() - 1];
        if texts.iter().any(|t| t.contains(needle)) {
            leaked.push(format!("{table}.{column}"));
        }
    }
    leaked.sort();
    leaked.dedup();
    leaked
}

#[tokio::test]
async fn every_protected_field_is_redacted_on_every_read_path() {
    let env = env().await;
    let gw = env.gateway(Faults::none()).await;
    let texts = read_everything(&env, &gw, true).await;
    let leaked = leaked_canaries(&env, &texts).await;
    assert!(
        leaked.is_empty(),
        "protected canaries in responses: {leaked:?}"
    );

    // Aggregates: protected fields take count only (and denied ones nothing).
    for m in env.policy.models.values() {
        for c in m.columns.iter().filter(|c| c.action != FieldAction::Allow) {
            let count =
                json!({"model": m.name, "aggregates": [{"function": "count", "field": c.name}]});
            let max =
                json!({"model": m.name, "aggregates": [{"function": "max", "field": c.name}]});
            let group = json!({"model": m.name, "aggregates": [{"function": "count"}], "group_by": [c.name]});
            let budgeted = |mut v: Value| {
                if m.name == "orders" {
                    v["where"] =
                        json!([{"field": "created_at", "op": "gte", "value": "2025-01-01"}]);
                }
                v
            };
            match c.action {
                FieldAction::Deny => {
                    denied(
                        &gw,
                        "acme",
                        "db_aggregate",
                        budgeted(count),
                        ErrorCode::FieldDenied,
                    )
                    .await;
                }
                _ => {
                    let r = ok(&gw, "acme", "db_aggregate", budgeted(count)).await;
                    assert!(
                        r["rows"][0]
                            .as_object()
                            .unwrap()
                            .values()
                            .all(Value::is_number),
                        "{r}"
                    );
                }
            }
            denied(
                &gw,
                "acme",
                "db_aggregate",
                budgeted(max),
                ErrorCode::FieldDenied,
            )
            .await;
            denied(
                &gw,
                "acme",
                "db_aggregate",
                budgeted(group),
                ErrorCode::FieldDenied,
            )
            .await;
            denied(
                &gw,
                "acme",
                "db_query",
                json!({"model": m.name, "order_by": [c.name]}),
                ErrorCode::FieldDenied,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn weakening_redaction_makes_the_checks_fail() {
    let env = env().await;
    for (fault, expect) in [
        (
            Fault::MaskOff,
            vec![
                "customers.email",
                "customers.ssn",
                "orders.shipping_address",
                "refunds.reason",
            ],
        ),
        (
            Fault::PatternsIgnored,
            vec![
                "customers.api_key",
                "customers.email",
                "payment_methods.card_token",
                "users.password_hash",
            ],
        ),
        (
            Fault::IncludeUnredacted,
            vec![
                "customers.notes",
                "payment_methods.card_token",
                "support_tickets.body",
            ],
        ),
    ] {
        let gw = env.gateway(Faults::one(fault)).await;
        let texts = read_everything(&env, &gw, false).await;
        let leaked = leaked_canaries(&env, &texts).await;
        for e in &expect {
            assert!(
                leaked.iter().any(|l| l == e),
                "{fault:?}: expected {e} to leak, leaked {leaked:?}"
            );
        }
    }
}
