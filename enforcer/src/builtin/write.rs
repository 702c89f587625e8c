//! The write tools (`db_create`, `db_update`, `db_delete`, `db_bulk_update`, `db_dry_run`,
//! `db_approval_status`): issue 4, owned by the `writes` helper.
//!
//! STUB: every write tool returns `internal` ("write tools are not available in this build")
//! until the writes helper fills [`call`]. The pipeline (builtin/mod.rs) has already, before
//! calling it:
//! - checked that `model` (when the tool takes one) is a model whose policy enables this tool
//!   (`model_not_allowed` otherwise) and set the statement timeout from its budgets;
//! - validated the arguments against the tool's JSON Schema (tools.rs), NUL bytes included;
//! - run the `CallHook::before` hooks (rate limits, quotas).
//!
//! After it returns, the pipeline builds the audit record (taking `reason`, `approval_id`,
//! `approver`, `rows_affected` and `subjects` from the [`CallOutcome`]), appends it through every
//! sink INSIDE `call.tx`, and commits. Return contract:
//! - `Ok(outcome)` with `outcome.denial == None`: success, committed with its audit record;
//! - `Ok(outcome)` with `outcome.denial == Some(e)`: a denial whose database work must persist
//!   (e.g. `approval_required` with its pending approvals row), committed, `e` returned;
//! - `Err(e)`: the transaction is rolled back, and the denial is audited in a fresh transaction.
//!   Call `call.tx.poison()` after any failed statement; map sqlx errors with
//!   `super::errors::map` so no DETAIL ever reaches the agent.

use serde_json::Value;

use crate::faults::Faults;
use crate::gateway::{CallContext, ErrorCode, ToolError};
use crate::policy::{ModelPolicy, Policy};

use super::tools;
use super::tx::CallTx;
use super::CallOutcome;

/// Which write tool was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteTool {
    Create,
    Update,
    Delete,
    BulkUpdate,
    DryRun,
    ApprovalStatus,
}

impl WriteTool {
    pub(crate) fn parse(tool: &str) -> Option<WriteTool> {
        Some(match tool {
            tools::CREATE => WriteTool::Create,
            tools::UPDATE => WriteTool::Update,
            tools::DELETE => WriteTool::Delete,
            tools::BULK_UPDATE => WriteTool::BulkUpdate,
            tools::DRY_RUN => WriteTool::DryRun,
            tools::APPROVAL_STATUS => WriteTool::ApprovalStatus,
            _ => return None,
        })
    }
}

/// Everything a write call gets.
// The stub reads none of it; the writes helper will.
#[allow(dead_code)]
pub(crate) struct WriteCall<'a, 'c> {
    /// The call's transaction (opened on `tx.conn()`, with the tenant setting and timeout set).
    pub tx: &'a mut CallTx<'c>,
    pub policy: &'a Policy,
    /// The model named by `model` (`None` for `db_approval_status`, and for `db_dry_run`, whose
    /// model sits in `arguments.arguments.model`).
    pub model: Option<&'a ModelPolicy>,
    pub ctx: &'a CallContext,
    /// The schema-validated arguments.
    pub args: &'a Value,
    pub faults: &'a Faults,
    /// HMAC key for hashed fields (redacted dry-run samples).
    pub secret_key: &'a [u8; 32],
}

/// Runs one write tool. STUB: the writes helper replaces this body.
pub(crate) async fn call(
    tool: WriteTool,
    call: WriteCall<'_, '_>,
) -> Result<CallOutcome, ToolError> {
    let _ = (tool, call);
    Err(ToolError::new(
        ErrorCode::Internal,
        "write tools are not available in this build",
        "use the read tools (db_query, db_get, db_aggregate)",
    ))
}
