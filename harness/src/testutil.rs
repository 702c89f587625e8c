//! Test support: a small in-memory [`FakeGateway`] for the loop's mechanics (ordering, validation,
//! caps, retries). Scenario behaviour is always tested against the real built-in layer on a real
//! database; this fake only answers well-formed calls with canned rows and records them.

use std::sync::Mutex;

use async_trait::async_trait;
use preflight_enforcer::{CallContext, ErrorCode, Gateway, Health, ToolError, ToolSpec};
use serde_json::{json, Value};

/// One call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeCall {
    pub tenant: String,
    pub trace_id: String,
    pub tool: String,
    pub arguments: Value,
}

/// Tools `db_query` and `db_get` over a fixed `orders` table of the caller's tenant. A `db_query`
/// without `where` is refused with `scan_budget_exceeded`; `db_get` of an id above 30 is
/// `not_found`.
#[derive(Default)]
pub struct FakeGateway {
    pub calls: Mutex<Vec<FakeCall>>,
    /// When set, descriptions mention this text (to test the LLM-4 check on tool lists).
    pub description_suffix: String,
}

impl FakeGateway {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        match self.calls.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

#[async_trait]
impl Gateway for FakeGateway {
    fn name(&self) -> String {
        "fake".into()
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "db_query".into(),
                description: format!("Read rows of a model.{}", self.description_suffix),
                input_schema: json!({
                    "type": "object", "additionalProperties": false, "required": ["model"],
                    "properties": {
                        "model": {"type": "string", "enum": ["orders"]},
                        "where": {"type": "array", "items": {"type": "object", "required": ["field", "op"],
                            "properties": {"field": {"type": "string"}, "op": {"type": "string"}, "value": {}}}},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100}
                    }
                }),
            },
            ToolSpec {
                name: "db_get".into(),
                description: "Read one row by primary key.".into(),
                input_schema: json!({
                    "type": "object", "additionalProperties": false, "required": ["model", "id"],
                    "properties": {"model": {"type": "string", "enum": ["orders"]}, "id": {"type": "integer"}}
                }),
            },
        ]
    }

    async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, ToolError> {
        if let Ok(mut g) = self.calls.lock() {
            g.push(FakeCall {
                tenant: ctx.principal.tenant.clone(),
                trace_id: ctx.trace_id.clone(),
                tool: tool.to_string(),
                arguments: arguments.clone(),
            });
        }
        match tool {
            "db_query" => {
                if arguments.get("where").is_none() {
                    return Err(ToolError::new(
                        ErrorCode::ScanBudgetExceeded,
                        "this query would scan about 60000 rows; the budget is 10000",
                        "add a filter on created_at or customer_id (indexed)",
                    ));
                }
                Ok(
                    json!({"rows": [{"id": 3, "status": "shipped", "total": "42.00"}], "next_cursor": null}),
                )
            }
            "db_get" => {
                let id = arguments.get("id").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=30).contains(&id) {
                    return Err(ToolError::new(
                        ErrorCode::NotFound,
                        "no such row",
                        "check the id",
                    ));
                }
                Ok(json!({"row": {"id": id, "status": "shipped"}}))
            }
            other => Err(ToolError::new(
                ErrorCode::ValidationError,
                format!("unknown tool {other}"),
                "use a listed tool",
            )),
        }
    }

    async fn health(&self) -> Health {
        Health {
            version: "fake".into(),
            policy_hash: "0".repeat(64),
            audit_sinks: Vec::new(),
        }
    }
}
