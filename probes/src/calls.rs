//! Tool-call arguments in the enforcement-layer contract's shapes (docs/gateway.md), built in one place
//! so every family speaks the same dialect: `where` as a list of `{field, op, value}`,
//! `order_by` as `{field, direction}`, `include` as dotted relation paths, writes as
//! `{model, id?, data, reason?}`.

use serde_json::{json, Map, Value};

pub const DESCRIBE: &str = "db_describe_schema";
pub const QUERY: &str = "db_query";
pub const GET: &str = "db_get";
pub const AGGREGATE: &str = "db_aggregate";
pub const CREATE: &str = "db_create";
pub const UPDATE: &str = "db_update";
pub const DELETE: &str = "db_delete";
pub const BULK_UPDATE: &str = "db_bulk_update";
pub const DRY_RUN: &str = "db_dry_run";
pub const APPROVAL_STATUS: &str = "db_approval_status";

/// The write tools, in the order probes try them.
pub const WRITE_TOOLS: [&str; 4] = [CREATE, UPDATE, DELETE, BULK_UPDATE];

/// One filter condition.
pub fn cond(field: &str, op: &str, value: Value) -> Value {
    json!({"field": field, "op": op, "value": value})
}

/// A `db_query` call builder.
#[derive(Clone, Debug, Default)]
pub struct Query {
    args: Map<String, Value>,
}

impl Query {
    pub fn new(model: &str) -> Self {
        let mut args = Map::new();
        args.insert("model".into(), json!(model));
        Self { args }
    }

    pub fn filter(mut self, field: &str, op: &str, value: Value) -> Self {
        let w = self
            .args
            .entry("where")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = w {
            items.push(cond(field, op, value));
        }
        self
    }

    pub fn order(mut self, field: &str, descending: bool) -> Self {
        let o = self
            .args
            .entry("order_by")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = o {
            items.push(
                json!({"field": field, "direction": if descending { "desc" } else { "asc" }}),
            );
        }
        self
    }

    pub fn limit(mut self, n: u64) -> Self {
        self.args.insert("limit".into(), json!(n));
        self
    }

    pub fn cursor(mut self, cursor: &str) -> Self {
        self.args.insert("cursor".into(), json!(cursor));
        self
    }

    pub fn include(mut self, path: &str) -> Self {
        let inc = self
            .args
            .entry("include")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = inc {
            items.push(json!(path));
        }
        self
    }

    pub fn select(mut self, fields: &[&str]) -> Self {
        self.args.insert("select".into(), json!(fields));
        self
    }

    pub fn build(self) -> Value {
        Value::Object(self.args)
    }
}

pub fn get(model: &str, id: &Value) -> Value {
    json!({"model": model, "id": id})
}

pub fn get_with_include(model: &str, id: &Value, include: &str) -> Value {
    json!({"model": model, "id": id, "include": [include]})
}

/// `db_aggregate` with `aggregates` as `(function, field)` pairs.
pub fn aggregate(
    model: &str,
    aggregates: &[(&str, Option<&str>)],
    group_by: &[&str],
    conditions: Vec<Value>,
) -> Value {
    let aggs: Vec<Value> = aggregates
        .iter()
        .map(|(f, field)| match field {
            Some(field) => json!({"function": f, "field": field}),
            None => json!({"function": f}),
        })
        .collect();
    let mut v = json!({"model": model, "aggregates": aggs});
    if !group_by.is_empty() {
        v["group_by"] = json!(group_by);
    }
    if !conditions.is_empty() {
        v["where"] = Value::Array(conditions);
    }
    v
}

pub fn create(model: &str, data: Value, reason: Option<&str>) -> Value {
    with_reason(json!({"model": model, "data": data}), reason)
}

pub fn update(model: &str, id: &Value, data: Value, reason: Option<&str>) -> Value {
    with_reason(json!({"model": model, "id": id, "data": data}), reason)
}

pub fn delete(model: &str, id: &Value, reason: Option<&str>) -> Value {
    with_reason(json!({"model": model, "id": id}), reason)
}

pub fn bulk_update(
    model: &str,
    conditions: Vec<Value>,
    data: Value,
    reason: Option<&str>,
) -> Value {
    with_reason(
        json!({"model": model, "where": conditions, "data": data}),
        reason,
    )
}

pub fn dry_run(tool: &str, arguments: &Value) -> Value {
    json!({"tool": tool, "arguments": arguments})
}

pub fn approval_status(id: &str) -> Value {
    json!({"approval_id": id})
}

/// Adds `approval_id` to a write's arguments (re-submission after approval).
pub fn with_approval(mut args: Value, approval_id: &str) -> Value {
    args["approval_id"] = json!(approval_id);
    args
}

fn with_reason(mut args: Value, reason: Option<&str>) -> Value {
    if let Some(r) = reason {
        args["reason"] = json!(r);
    }
    args
}

/// The `next_cursor` of a `db_query` response, if there is a next page.
pub fn next_cursor(response: &Value) -> Option<String> {
    response
        .get("next_cursor")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The approval id an `approval_required` error carries (in `details`, or quoted in the
/// message as a last resort).
pub fn approval_id_of(error: &preflight_enforcer::ToolError) -> Option<String> {
    // A layer reached through a target profile: its own details are kept under `layer_details`.
    let places = [Some(&error.details), error.details.get("layer_details")];
    for details in places.into_iter().flatten() {
        for key in ["approval_id", "id"] {
            if let Some(s) = details.get(key).and_then(Value::as_str) {
                return Some(s.to_string());
            }
        }
    }
    None
}

/// A reason good enough for any layer: specific, and free of personal data.
pub const REASON: &str =
    "preflight probe: verifying the enforcement layer on a row the probe created";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_builder_shapes() {
        let q = Query::new("orders")
            .filter("tenant_id", "eq", json!("globex"))
            .order("created_at", true)
            .limit(5)
            .include("customer")
            .build();
        assert_eq!(q["model"], "orders");
        assert_eq!(q["where"][0]["op"], "eq");
        assert_eq!(q["order_by"][0]["direction"], "desc");
        assert_eq!(q["include"][0], "customer");
        assert_eq!(q["limit"], 5);
    }

    #[test]
    fn the_approval_id_is_read_from_a_remote_layers_details_too() {
        use preflight_enforcer::{ErrorCode, ToolError};
        let direct = ToolError::new(ErrorCode::ApprovalRequired, "gated", "")
            .with_details(json!({"approval_id": "a-1"}));
        assert_eq!(approval_id_of(&direct).as_deref(), Some("a-1"));
        // What the target adapter makes of a served layer's denial.
        let remote = ToolError::new(ErrorCode::ApprovalRequired, "gated", "").with_details(
            json!({"original_code": "approval_required", "layer_details": {"approval_id": "a-2"}}),
        );
        assert_eq!(approval_id_of(&remote).as_deref(), Some("a-2"));
        let none = ToolError::new(ErrorCode::ApprovalRequired, "gated", "")
            .with_details(json!({"layer_details": null}));
        assert_eq!(approval_id_of(&none), None);
    }

    #[test]
    fn writes_carry_reason_only_when_given() {
        assert!(create("orders", json!({"a": 1}), None)
            .get("reason")
            .is_none());
        assert_eq!(
            update("orders", &json!(1), json!({}), Some("r"))["reason"],
            "r"
        );
        let a = aggregate(
            "orders",
            &[("count", None), ("sum", Some("total"))],
            &["status"],
            vec![],
        );
        assert_eq!(a["aggregates"][1]["field"], "total");
        assert_eq!(a["group_by"][0], "status");
    }
}
