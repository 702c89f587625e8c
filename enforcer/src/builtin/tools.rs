//! The tool list: names, descriptions written for an LLM, and precise JSON Schemas generated from
//! the policy (the `model` enums list exactly the models each tool may touch, `limit` is bounded by
//! the policy's row caps).
//!
//! The same schemas validate every call's arguments (`validate.rs`), so what the model is told
//! and what the gateway accepts cannot drift apart.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::gateway::ToolSpec;
use crate::policy::Policy;

use super::args::{AggFn, Op};

/// Row cap used when the policy sets none for a tool (a lint finding, BUD-3, but never unbounded).
pub(crate) const BUILTIN_MAX_ROWS: u64 = 1000;
/// Longest `in`/`not_in` list.
pub(crate) const MAX_IN_VALUES: u64 = 1000;
/// Longest string value accepted anywhere in the arguments.
pub(crate) const MAX_STRING_CHARS: usize = 4096;

pub(crate) const DESCRIBE: &str = "db_describe_schema";
pub(crate) const QUERY: &str = "db_query";
pub(crate) const GET: &str = "db_get";
pub(crate) const AGGREGATE: &str = "db_aggregate";
pub(crate) const CREATE: &str = "db_create";
pub(crate) const UPDATE: &str = "db_update";
pub(crate) const DELETE: &str = "db_delete";
pub(crate) const BULK_UPDATE: &str = "db_bulk_update";
pub(crate) const DRY_RUN: &str = "db_dry_run";
pub(crate) const APPROVAL_STATUS: &str = "db_approval_status";

/// Write tools a model can enable; `db_dry_run` and `db_approval_status` follow them.
pub(crate) const WRITE_TOOLS: [&str; 4] = [CREATE, UPDATE, DELETE, BULK_UPDATE];

/// Every tool name the contract defines (docs/gateway.md, "Tools"), in the order the list presents them.
pub(crate) const ALL_TOOLS: [&str; 10] = [
    DESCRIBE,
    QUERY,
    GET,
    AGGREGATE,
    CREATE,
    UPDATE,
    DELETE,
    BULK_UPDATE,
    DRY_RUN,
    APPROVAL_STATUS,
];

/// Models whose policy enables `tool` (for `db_dry_run`, any write tool), sorted.
pub(crate) fn models_for(policy: &Policy, tool: &str) -> Vec<String> {
    policy
        .models
        .values()
        .filter(|m| {
            if tool == DRY_RUN {
                WRITE_TOOLS.iter().any(|w| m.tools.contains(*w))
            } else {
                m.tools.contains(tool)
            }
        })
        .map(|m| m.name.clone())
        .collect()
}

/// Whether `tool` is offered at all under this policy.
pub(crate) fn offered(policy: &Policy, tool: &str) -> bool {
    match tool {
        DESCRIBE => true,
        APPROVAL_STATUS => !models_for(policy, DRY_RUN).is_empty(),
        _ => !models_for(policy, tool).is_empty(),
    }
}

/// The row cap for `tool` on `model`'s budgets, with the built-in ceiling when the policy sets none.
pub(crate) fn row_cap(policy: &Policy, model: &str, tool: &str) -> u64 {
    policy
        .model(model)
        .and_then(|m| m.budgets.max_rows_for(tool))
        .unwrap_or(BUILTIN_MAX_ROWS)
        .max(1)
}

fn max_cap(policy: &Policy, tool: &str) -> u64 {
    models_for(policy, tool)
        .iter()
        .map(|m| row_cap(policy, m, tool))
        .max()
        .unwrap_or(BUILTIN_MAX_ROWS)
}

fn caps_text(policy: &Policy, tool: &str) -> String {
    let caps: BTreeSet<u64> = models_for(policy, tool)
        .iter()
        .map(|m| row_cap(policy, m, tool))
        .collect();
    if caps.len() <= 1 {
        format!("at most {}", max_cap(policy, tool))
    } else {
        let per: Vec<String> = models_for(policy, tool)
            .iter()
            .map(|m| format!("{m} {}", row_cap(policy, m, tool)))
            .collect();
        format!("at most, per model: {}", per.join(", "))
    }
}

/// The generated tool list for `policy`.
pub(crate) fn tool_list(policy: &Policy) -> Vec<ToolSpec> {
    ALL_TOOLS
        .iter()
        .filter(|t| offered(policy, t))
        .filter_map(|t| spec(policy, t))
        .collect()
}

/// One tool's spec, or `None` for a name that is not a tool.
pub(crate) fn spec(policy: &Policy, tool: &str) -> Option<ToolSpec> {
    let (description, schema) = match tool {
        DESCRIBE => (
            "List the models (tables) you may read or change, with their fields, which fields come \
             back masked or hashed, which operators each field accepts, the relations you may \
             include, and the row limits. Call this first; fields not listed do not exist for you."
                .to_string(),
            object(json!({}), &[]),
        ),
        QUERY => (
            format!(
                "Read rows of one model, filtered, ordered and paginated. Returns `rows` ({} per \
                 call), `has_more` and `next_cursor`: pass `next_cursor` back as `cursor` with the \
                 SAME other arguments to get the next page. Masked fields come back masked (e.g. \
                 m***@example.com); they can only be tested with is_null. Filter on indexed fields \
                 (see db_describe_schema) — a query that would scan too many rows is refused with \
                 scan_budget_exceeded and a suggestion. Errors are JSON objects with `code`, \
                 `message` and `suggestion`: follow the suggestion.",
                caps_text(policy, QUERY)
            ),
            object(
                json!({
                    "model": model_prop(policy, QUERY),
                    "select": select_prop(),
                    "where": where_prop(),
                    "order_by": order_by_prop(),
                    "limit": limit_prop(policy, QUERY),
                    "cursor": {
                        "type": "string",
                        "maxLength": 2048,
                        "description": "Opaque `next_cursor` from the previous page of the same query. Omit for the first page."
                    },
                    "include": include_prop(),
                }),
                &["model"],
            ),
        ),
        GET => (
            "Read one row of a model by its primary key. Returns `row`, or the error `not_found` \
             when no such row exists for you. Masked fields come back masked."
                .to_string(),
            object(
                json!({
                    "model": model_prop(policy, GET),
                    "id": id_prop(),
                    "select": select_prop(),
                    "include": include_prop(),
                }),
                &["model", "id"],
            ),
        ),
        AGGREGATE => (
            format!(
                "Count, sum, average, minimum or maximum over the rows of one model, optionally \
                 per group. Returns `rows`, one per group ({} groups per call), each with the \
                 group_by fields and one value per aggregate under its alias (default `count` or \
                 `<function>_<field>`). sum/avg need numeric fields; masked and hashed fields only \
                 take count.",
                caps_text(policy, AGGREGATE)
            ),
            object(
                json!({
                    "model": model_prop(policy, AGGREGATE),
                    "aggregates": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 20,
                        "description": "What to compute, e.g. [{\"function\": \"count\"}, {\"function\": \"sum\", \"field\": \"total\"}].",
                        "items": object(json!({
                            "function": {"type": "string", "enum": AggFn::ALL.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                                          "description": "count (rows, or non-null values of `field`), sum, avg, min or max."},
                            "field": {"type": "string", "minLength": 1, "maxLength": 63,
                                       "description": "The field to aggregate; required for every function but count."},
                            "alias": {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,62}$",
                                       "description": "Name of the result in each row; defaults to count or <function>_<field>."}
                        }), &["function"]),
                    },
                    "where": where_prop(),
                    "group_by": {
                        "type": "array",
                        "maxItems": 5,
                        "items": {"type": "string", "minLength": 1, "maxLength": 63},
                        "description": "Fields to group by; each result row carries their values. Omit for one total row."
                    },
                    "limit": limit_prop(policy, AGGREGATE),
                }),
                &["model", "aggregates"],
            ),
        ),
        CREATE => (
            "Create one row. `data` holds the field values; only the model's writable fields may \
             be set, and the tenant is set for you. Give a `reason` (required by policy for most \
             models). Some creates need a person's approval: you then get `approval_required` \
             with an approval id; check it with db_approval_status and, once approved, call again \
             with the same arguments plus `approval_id`."
                .to_string(),
            object(
                json!({
                    "model": model_prop(policy, CREATE),
                    "data": data_prop(),
                    "reason": reason_prop(),
                    "approval_id": approval_id_prop(),
                }),
                &["model", "data"],
            ),
        ),
        UPDATE => (
            "Change fields of one row, found by primary key. Only writable fields may be set. \
             Give a `reason`. Gated changes return `approval_required` with an approval id; once \
             approved, repeat the exact same call plus `approval_id`."
                .to_string(),
            object(
                json!({
                    "model": model_prop(policy, UPDATE),
                    "id": id_prop(),
                    "data": data_prop(),
                    "reason": reason_prop(),
                    "approval_id": approval_id_prop(),
                }),
                &["model", "id", "data"],
            ),
        ),
        DELETE => (
            "Delete one row by primary key (models with soft delete are marked deleted instead). \
             Give a `reason`."
                .to_string(),
            object(
                json!({
                    "model": model_prop(policy, DELETE),
                    "id": id_prop(),
                    "reason": reason_prop(),
                    "approval_id": approval_id_prop(),
                }),
                &["model", "id"],
            ),
        ),
        BULK_UPDATE => (
            "Change fields of every row matching `where`. Run db_dry_run with the same arguments \
             first: it reports how many rows would change, and large changes require it. Give a \
             `reason`."
                .to_string(),
            object(
                json!({
                    "model": model_prop(policy, BULK_UPDATE),
                    "where": where_prop(),
                    "data": data_prop(),
                    "reason": reason_prop(),
                    "approval_id": approval_id_prop(),
                }),
                &["model", "where", "data"],
            ),
        ),
        DRY_RUN => {
            let write_tools: Vec<&str> = WRITE_TOOLS
                .iter()
                .copied()
                .filter(|t| offered(policy, t))
                .collect();
            (
                "Plan a write without changing anything: returns how many rows it would affect \
                 and a masked sample of them. `arguments` are exactly what you would pass to the \
                 write tool."
                    .to_string(),
                object(
                    json!({
                        "tool": {"type": "string", "enum": write_tools,
                                 "description": "The write tool to plan."},
                        "arguments": {"type": "object", "description": "The write tool's arguments."},
                    }),
                    &["tool", "arguments"],
                ),
            )
        }
        APPROVAL_STATUS => (
            "The state of an approval request you received with `approval_required`: pending, \
             approved, rejected or expired."
                .to_string(),
            object(
                json!({"approval_id": {"type": "string", "minLength": 1, "maxLength": 128,
                                        "description": "The approval id from the approval_required error."}}),
                &["approval_id"],
            ),
        ),
        _ => return None,
    };
    Some(ToolSpec {
        name: tool.to_string(),
        description,
        input_schema: schema,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn model_prop(policy: &Policy, tool: &str) -> Value {
    json!({
        "type": "string",
        "enum": models_for(policy, tool),
        "description": "The model (table) to use; db_describe_schema lists its fields."
    })
}

fn select_prop() -> Value {
    json!({
        "type": "array",
        "maxItems": 200,
        "items": {"type": "string", "minLength": 1, "maxLength": 63},
        "description": "Fields to return; omit for every field you may see."
    })
}

fn scalar() -> Value {
    json!({"type": ["string", "number", "boolean"]})
}

pub(crate) fn where_prop() -> Value {
    json!({
        "description": "Filters, all of which must hold. Either a list of conditions \
            [{\"field\": \"status\", \"op\": \"eq\", \"value\": \"paid\"}, {\"field\": \"created_at\", \"op\": \"gte\", \"value\": \"2025-01-01\"}] \
            or the short form {\"status\": \"paid\"} (equality; a list value means `in`, null means is_null). \
            Operators: eq, ne (also matches empty values), lt, lte, gt, gte, in / not_in (a list of up to 1000 values), \
            is_null (value true or false), contains / startswith / endswith (text, case-insensitive), \
            between (a list of two values, inclusive). Masked and hashed fields take is_null only.",
        "anyOf": [
            {
                "type": "array",
                "maxItems": 50,
                "items": object(json!({
                    "field": {"type": "string", "minLength": 1, "maxLength": 63},
                    "op": {"type": "string", "enum": Op::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>()},
                    "value": {
                        "type": ["string", "number", "boolean", "array"],
                        "maxItems": MAX_IN_VALUES,
                        "items": scalar(),
                        "description": "The value to compare with; a list for in, not_in and between; true/false for is_null."
                    }
                }), &["field", "op"]),
            },
            {
                "type": "object",
                "maxProperties": 50,
                "additionalProperties": {
                    "type": ["string", "number", "boolean", "array", "null"],
                    "maxItems": MAX_IN_VALUES,
                    "items": scalar()
                }
            }
        ]
    })
}

fn order_by_prop() -> Value {
    json!({
        "type": "array",
        "maxItems": 5,
        "description": "Sort order, e.g. [{\"field\": \"created_at\", \"direction\": \"desc\"}] or [\"name\"] (ascending). \
                        Rows are finally ordered by the primary key so pages never overlap.",
        "items": {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 63},
                object(json!({
                    "field": {"type": "string", "minLength": 1, "maxLength": 63},
                    "direction": {"type": "string", "enum": ["asc", "desc"]}
                }), &["field"])
            ]
        }
    })
}

fn limit_prop(policy: &Policy, tool: &str) -> Value {
    let max = max_cap(policy, tool);
    json!({
        "type": "integer",
        "minimum": 1,
        "maximum": max,
        "description": format!("Most rows to return ({}); defaults to the cap.", caps_text(policy, tool)),
    })
}

fn include_prop() -> Value {
    json!({
        "type": "array",
        "maxItems": 10,
        "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*$", "maxLength": 200},
        "description": "Relations to embed in each row, e.g. [\"customer\", \"items.product\"] (a dot goes one relation deeper; \
                        depth is limited). Included rows are masked like direct reads. db_describe_schema lists the relations."
    })
}

fn id_prop() -> Value {
    json!({
        "type": ["integer", "string"],
        "description": "The primary key value."
    })
}

fn data_prop() -> Value {
    json!({
        "type": "object",
        "minProperties": 1,
        "maxProperties": 100,
        "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        "description": "Field values to write, e.g. {\"status\": \"shipped\"}."
    })
}

fn reason_prop() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 1000,
        "description": "Why this change is made, in a sentence a reviewer will read in the audit log."
    })
}

fn approval_id_prop() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "description": "Only when re-submitting a write that was approved: the approval id."
    })
}
