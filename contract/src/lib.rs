//! The enforcement-layer contract: the [`Gateway`] trait and its value types.
//!
//! Every enforcement layer, built-in or remote, is reached through this trait, so probes and the
//! agent harness never know which one they are talking to. Implementations live elsewhere (the
//! built-in layer in `preflight-enforcer`, the remote adapters in `preflight-targets`); nothing
//! here knows about SQL.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tool names of the contract, in the order a tool list presents them (see docs/gateway.md,
/// "Tools"). A remote layer's own names map onto these through its target profile.
pub const CONTRACT_TOOLS: [&str; 10] = [
    "db_describe_schema",
    "db_query",
    "db_get",
    "db_aggregate",
    "db_create",
    "db_update",
    "db_delete",
    "db_bulk_update",
    "db_dry_run",
    "db_approval_status",
];

/// Who is calling. It comes from the run's context (the authenticated session), never from tool
/// arguments: nothing an agent puts in a call can change it (ISO-1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant id, as stored in every tenant-scoped table's tenant column (e.g. `acme`).
    pub tenant: String,
    /// The end user on whose behalf the agent acts.
    pub user: String,
    /// Roles such as `support` or `admin`; approval rules and role-gated tools read them.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The context of one tool call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContext {
    pub principal: Principal,
    /// Links the call's audit record to the caller's trace (AUD-3).
    pub trace_id: String,
}

impl CallContext {
    /// A context with a fresh random trace id.
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The call's trace as a W3C Trace Context `traceparent` (`00-<trace id>-<span id>-01`), for
    /// a layer reached over MCP (`_meta.traceparent`) or HTTP (the `traceparent` header); `None`
    /// when the trace id is not 32 lowercase hex digits.
    pub fn traceparent(&self) -> Option<String> {
        trace_id_of(&format!("00-{}-0000000000000001-01", self.trace_id))?;
        let span = uuid::Uuid::new_v4().simple().to_string();
        Some(format!("00-{}-{}-01", self.trace_id, &span[..16]))
    }
}

/// The trace id of a W3C `traceparent` value, when it is well formed (version `00`, 32 lowercase
/// hex digits not all zero, a 16-digit span id, two flag digits).
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, span, flags]
            if *version == "00"
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            Some(trace.to_string())
        }
        _ => None,
    }
}

/// One tool as offered to a model: the name, a description written for an LLM, and a precise
/// JSON Schema for its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// The stable error codes of the public contract. The snake_case strings are what agents, reports,
/// SARIF rule ids and docs anchors see; they never change once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ModelNotAllowed,
    FieldDenied,
    RelationNotAllowed,
    TenantMismatch,
    ScanBudgetExceeded,
    RowBudgetExceeded,
    JoinDepthExceeded,
    StatementTimeout,
    ReasonRequired,
    FieldNotWritable,
    ApprovalRequired,
    WriteRateExceeded,
    QuotaExceeded,
    ValidationError,
    NotFound,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::ModelNotAllowed,
        ErrorCode::FieldDenied,
        ErrorCode::RelationNotAllowed,
        ErrorCode::TenantMismatch,
        ErrorCode::ScanBudgetExceeded,
        ErrorCode::RowBudgetExceeded,
        ErrorCode::JoinDepthExceeded,
        ErrorCode::StatementTimeout,
        ErrorCode::ReasonRequired,
        ErrorCode::FieldNotWritable,
        ErrorCode::ApprovalRequired,
        ErrorCode::WriteRateExceeded,
        ErrorCode::QuotaExceeded,
        ErrorCode::ValidationError,
        ErrorCode::NotFound,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ModelNotAllowed => "model_not_allowed",
            ErrorCode::FieldDenied => "field_denied",
            ErrorCode::RelationNotAllowed => "relation_not_allowed",
            ErrorCode::TenantMismatch => "tenant_mismatch",
            ErrorCode::ScanBudgetExceeded => "scan_budget_exceeded",
            ErrorCode::RowBudgetExceeded => "row_budget_exceeded",
            ErrorCode::JoinDepthExceeded => "join_depth_exceeded",
            ErrorCode::StatementTimeout => "statement_timeout",
            ErrorCode::ReasonRequired => "reason_required",
            ErrorCode::FieldNotWritable => "field_not_writable",
            ErrorCode::ApprovalRequired => "approval_required",
            ErrorCode::WriteRateExceeded => "write_rate_exceeded",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A structured denial, exactly as the agent receives it:
/// `{"code": "...", "message": "...", "suggestion": "...", "details": {...}}`.
///
/// `message` and `details` must never carry another tenant's value, a secret, a database error's
/// DETAIL line or a stack trace. `suggestion` tells an agent how to recover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    pub code: ErrorCode,
    pub message: String,
    pub suggestion: String,
    #[serde(default)]
    pub details: Value,
}

impl ToolError {
    pub fn new(code: ErrorCode, message: impl Into<String>, suggestion: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            suggestion: suggestion.into(),
            details: Value::Object(Default::default()),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The error as the JSON object an agent sees.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What a health endpoint reports (OPS-4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub policy_hash: String,
    /// One line per configured audit sink, e.g. `postgres: ok`.
    pub audit_sinks: Vec<SinkHealth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkHealth {
    pub kind: String,
    pub ok: bool,
    pub detail: String,
}

/// An enforcement layer between an agent and the database.
///
/// Contract:
/// - [`tools`](Gateway::tools) returns the layer's own generated tool list, the same on every call
///   for one policy; the agent harness hands it to the model unedited (LLM-3).
/// - [`call`](Gateway::call) runs one tool as `ctx.principal`. `Ok` carries the JSON result the agent
///   sees; `Err` carries a structured denial. A layer must never panic on any argument value and
///   must return [`ErrorCode::ValidationError`] for arguments that do not match the tool's schema.
///   Every call, allowed or denied, yields exactly one audit record when the layer audits.
/// - [`health`](Gateway::health) reports version, policy hash and audit-sink status.
#[async_trait]
pub trait Gateway: Send + Sync {
    /// A short name for reports, e.g. `builtin` or `http://layer:8080`.
    fn name(&self) -> String;

    fn tools(&self) -> Vec<ToolSpec>;

    /// The layer's own tool list, under its own names, whatever view [`tools`](Gateway::tools)
    /// gives; [`call`](Gateway::call) accepts these names too. The every-tool probes read it.
    /// The same as `tools` for a layer that speaks the contract natively.
    fn native_tools(&self) -> Vec<ToolSpec> {
        self.tools()
    }

    async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, ToolError>;

    async fn health(&self) -> Health;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "duplicate code {code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, Value::String(code.as_str().to_string()));
        }
    }

    #[test]
    fn tool_error_has_contract_shape() {
        let e = ToolError::new(
            ErrorCode::ScanBudgetExceeded,
            "too many rows",
            "add a filter",
        );
        let v = e.to_json();
        assert_eq!(v["code"], "scan_budget_exceeded");
        assert_eq!(v["suggestion"], "add a filter");
        assert!(v["details"].is_object());
    }
}

#[cfg(test)]
mod trace_tests {
    use super::*;

    #[test]
    fn a_traceparent_carries_the_trace_id_and_only_a_well_formed_one_is_read() {
        let ctx = CallContext::new(Principal {
            tenant: "acme".into(),
            user: "u".into(),
            roles: vec![],
        });
        let tp = ctx
            .traceparent()
            .expect("a uuid trace id is a W3C trace id");
        assert_eq!(trace_id_of(&tp).as_deref(), Some(ctx.trace_id.as_str()));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad:?}");
        }
        let odd = CallContext {
            principal: ctx.principal.clone(),
            trace_id: "not-hex".into(),
        };
        assert_eq!(odd.traceparent(), None);
    }
}
