//! The gateway's budget hook: per-principal write rates and per-tenant quotas, counted in a
//! [`BudgetStore`] (WRT-7, BUD-5, BUD-6).
//!
//! | budget | key | window | cost | denial |
//! |---|---|---|---|---|
//! | `max_writes_per_minute` (per model) | `writes:<tenant>:<user>:<model>` | 60 s | 1 per write call | `write_rate_exceeded` |
//! | `quotas.calls_per_hour` | `quota:calls:<tenant>` | 1 h | 1 per call | `quota_exceeded` |
//! | `quotas.rows_per_hour` | `quota:rows:<tenant>` | 1 h | rows returned + affected, charged after the call | `quota_exceeded` once used up |
//!
//! Attempts count, not only successes: a write refused later (no reason, say) still used a slot,
//! so an agent cannot probe the rules at full speed. The row quota is charged when the rows are
//! known, so one call can overshoot it by at most its own row cap; the next call is refused.
//! A store that cannot be asked fails the call closed (`internal`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{BudgetStore, Hit};
use crate::builtin::CallHook;
use crate::faults::{Fault, Faults};
use crate::gateway::{CallContext, ErrorCode, ToolError};
use crate::policy::{ModelPolicy, Policy};

const WRITE_TOOLS: [&str; 4] = ["db_create", "db_update", "db_delete", "db_bulk_update"];
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Rate limits and quotas for one gateway instance.
pub struct BudgetHook {
    policy: Arc<Policy>,
    store: Arc<dyn BudgetStore>,
    faults: Faults,
}

impl BudgetHook {
    pub fn new(policy: Arc<Policy>, store: Arc<dyn BudgetStore>, faults: Faults) -> Self {
        Self {
            policy,
            store,
            faults,
        }
    }

    pub fn store(&self) -> &Arc<dyn BudgetStore> {
        &self.store
    }
}

fn seconds(d: Duration) -> u64 {
    // Round up: "retry after 0 s" would invite an immediate retry that fails again.
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn unavailable(ctx: &CallContext, e: &super::BudgetError) -> ToolError {
    ::tracing::error!(trace_id = %ctx.trace_id, error = %e, "budget store unavailable; failing the call closed");
    ToolError::new(
        ErrorCode::Internal,
        format!(
            "the rate-limit store could not be reached, so the call was not run (correlation id {})",
            ctx.trace_id
        ),
        "retry in a few seconds; report the correlation id to the operator if it persists",
    )
    .with_details(json!({"correlation_id": ctx.trace_id}))
}

fn key_part(s: &str) -> String {
    // Tenants and users come from the session, but a separator inside one must not let two
    // principals share a key.
    s.replace('%', "%25").replace(':', "%3A")
}

#[async_trait]
impl CallHook for BudgetHook {
    async fn before(
        &self,
        ctx: &CallContext,
        tool: &str,
        model: Option<&ModelPolicy>,
    ) -> Result<(), ToolError> {
        let tenant = key_part(&ctx.principal.tenant);
        if !self.faults.has(Fault::QuotaOff) {
            if let Some(limit) = self.policy.quotas.rows_per_hour {
                let used = self
                    .store
                    .usage(&format!("quota:rows:{tenant}"), HOUR)
                    .await
                    .map_err(|e| unavailable(ctx, &e))?;
                if used >= limit {
                    return Err(ToolError::new(
                        ErrorCode::QuotaExceeded,
                        format!("your tenant has used its quota of {limit} rows per hour"),
                        "wait before reading or writing more rows; the quota is a sliding one-hour window",
                    )
                    .with_details(json!({"quota": "rows_per_hour", "limit": limit, "used": used})));
                }
            }
            if let Some(limit) = self.policy.quotas.calls_per_hour {
                let hit = self
                    .store
                    .hit(&format!("quota:calls:{tenant}"), HOUR, limit, 1)
                    .await
                    .map_err(|e| unavailable(ctx, &e))?;
                if let Hit::Exceeded { retry_after, .. } = hit {
                    let secs = seconds(retry_after);
                    return Err(ToolError::new(
                        ErrorCode::QuotaExceeded,
                        format!("your tenant has used its quota of {limit} calls per hour"),
                        format!("retry after {secs} seconds, and make fewer, more selective calls"),
                    )
                    .with_details(json!({"quota": "calls_per_hour", "limit": limit, "retry_after_seconds": secs})));
                }
            }
        }
        if WRITE_TOOLS.contains(&tool) && !self.faults.has(Fault::RateLimitOff) {
            if let Some(m) = model {
                if let Some(limit) = m.budgets.max_writes_per_minute {
                    let key = format!(
                        "writes:{tenant}:{}:{}",
                        key_part(&ctx.principal.user),
                        key_part(&m.name)
                    );
                    let hit = self
                        .store
                        .hit(&key, MINUTE, u64::from(limit), 1)
                        .await
                        .map_err(|e| unavailable(ctx, &e))?;
                    if let Hit::Exceeded { retry_after, .. } = hit {
                        let secs = seconds(retry_after);
                        return Err(ToolError::new(
                            ErrorCode::WriteRateExceeded,
                            format!(
                                "more than {limit} writes to {} within a minute",
                                m.name
                            ),
                            format!(
                                "retry after {secs} seconds; for many rows use one db_bulk_update instead of many writes"
                            ),
                        )
                        .with_details(json!({"limit_per_minute": limit, "retry_after_seconds": secs})));
                    }
                }
            }
        }
        Ok(())
    }

    async fn after(
        &self,
        ctx: &CallContext,
        _tool: &str,
        _model: Option<&ModelPolicy>,
        rows_returned: u64,
        rows_affected: u64,
    ) {
        if self.faults.has(Fault::QuotaOff) || self.policy.quotas.rows_per_hour.is_none() {
            return;
        }
        let rows = rows_returned.saturating_add(rows_affected);
        if rows == 0 {
            return;
        }
        let key = format!("quota:rows:{}", key_part(&ctx.principal.tenant));
        if let Err(e) = self.store.charge(&key, HOUR, rows).await {
            // The call already ran; the next call's check will fail closed if the store is gone.
            ::tracing::error!(trace_id = %ctx.trace_id, error = %e, "could not charge the row quota");
        }
    }
}
