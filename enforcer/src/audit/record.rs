//! The audit record: one per tool call, allowed or denied, and the sink contract.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The decision a call ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

/// One audit record as the gateway builds it. The sink adds `id`, `at`, `actor` and the chain
/// (`prev_hash`, `hash`); the Postgres sink lets the database's trigger do so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub trace_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub roles: Vec<String>,
    pub tool: String,
    /// Arguments sanitized by field policy and by canary/secret value patterns (AUD-7).
    pub arguments: serde_json::Value,
    /// SHA-256 (hex) of the raw arguments' canonical JSON, for forgery detection (AUD-7).
    pub arguments_sha256: String,
    pub decision: Decision,
    pub error_code: Option<String>,
    pub rows_returned: Option<i64>,
    pub rows_affected: Option<i64>,
    pub duration_ms: f64,
    pub reason: Option<String>,
    pub approval_id: Option<String>,
    pub approver: Option<String>,
    pub policy_hash: String,
    /// Data subjects involved, as `model:id` (e.g. `customers:17`), for subject-access requests.
    pub subjects: Vec<String>,
}

/// Where audit records go.
///
/// Contract: `append` either durably records `record` or returns `Err`; the gateway then fails the
/// call closed (no result is returned without its record). When `tx` is given, the record must be
/// written inside that transaction, so a write and its record commit together.
#[async_trait]
pub trait AuditSink: Send + Sync {
    fn kind(&self) -> &'static str;

    async fn append(
        &self,
        tx: Option<&mut sqlx::PgConnection>,
        record: &AuditRecord,
    ) -> Result<(), AuditError>;

    /// A one-line health statement (OPS-4).
    async fn health(&self) -> Result<String, AuditError>;

    /// How `append` uses the call's transaction. The built-in gateway's pipelined read path
    /// only runs when every sink says `Unused` or `AuditLogInsert`; the default keeps a sink on
    /// the path that hands it the sqlx transaction.
    fn tx_use(&self) -> TxUse {
        TxUse::Opaque
    }
}

/// How a sink's `append` uses the transaction it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxUse {
    /// `append` never touches the transaction (a file, a log line): it may be called with `None`.
    Unused,
    /// `append` is exactly the Postgres sink's one `INSERT` of the normalized record into
    /// `preflight_audit.audit_log` inside the transaction, so the gateway may send that same
    /// statement itself, pipelined with the COMMIT.
    AuditLogInsert,
    /// Anything else: the sink needs the sqlx transaction itself.
    Opaque,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit sink {sink} failed")]
    Sink {
        sink: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
