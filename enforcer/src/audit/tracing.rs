//! The tracing audit sink: one structured `tracing` event per record, for the observability stack.
//!
//! It is a stream, not a store: there is no chain and no durability guarantee beyond the
//! subscriber's, so it complements the Postgres or JSONL sink rather than replacing one. Events go
//! to target `preflight::audit` at INFO (denials and errors at WARN) with the trace id as a field,
//! so a log pipeline can join them with the caller's spans (AUD-3, OPS-7). Arguments are the
//! already-sanitized ones; raw arguments are never logged.

use async_trait::async_trait;
use sqlx::PgConnection;

use super::canonical::normalize_record;
use super::record::{AuditError, AuditRecord, AuditSink, Decision, TxUse};

/// Emits every record as a `tracing` event.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink;

#[async_trait]
impl AuditSink for TracingSink {
    fn kind(&self) -> &'static str {
        "tracing"
    }

    fn tx_use(&self) -> TxUse {
        TxUse::Unused
    }

    async fn append(
        &self,
        _tx: Option<&mut PgConnection>,
        record: &AuditRecord,
    ) -> Result<(), AuditError> {
        let r = normalize_record(record);
        let arguments = r.arguments.to_string();
        let roles = r.roles.join(",");
        let subjects = r.subjects.join(",");
        macro_rules! emit {
            ($level:ident) => {
                ::tracing::$level!(
                    target: "preflight::audit",
                    trace_id = %r.trace_id,
                    tenant_id = %r.tenant_id,
                    user_id = %r.user_id,
                    roles = %roles,
                    tool = %r.tool,
                    decision = r.decision.as_str(),
                    error_code = r.error_code.as_deref(),
                    rows_returned = r.rows_returned,
                    rows_affected = r.rows_affected,
                    duration_ms = r.duration_ms,
                    reason = r.reason.as_deref(),
                    approval_id = r.approval_id.as_deref(),
                    approver = r.approver.as_deref(),
                    policy_hash = %r.policy_hash,
                    subjects = %subjects,
                    arguments = %arguments,
                    arguments_sha256 = %r.arguments_sha256,
                    "tool call"
                )
            };
        }
        match r.decision {
            Decision::Allow => emit!(info),
            Decision::Deny | Decision::Error => emit!(warn),
        }
        Ok(())
    }

    async fn health(&self) -> Result<String, AuditError> {
        Ok("ok (events to target preflight::audit)".to_string())
    }
}
