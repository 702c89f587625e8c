//! Approval requests: filing, status, consumption, listing and decisions.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The effective state of a request (`expired` is computed, never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Expired,
    Executed,
}

impl ApprovalState {
    pub const ALL: [ApprovalState; 5] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Rejected,
        ApprovalState::Expired,
        ApprovalState::Executed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Expired => "expired",
            ApprovalState::Executed => "executed",
        }
    }

    pub fn parse(s: &str) -> Option<ApprovalState> {
        ApprovalState::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gateway files for a gated write.
#[derive(Clone, Debug, PartialEq)]
pub struct NewApproval {
    pub tenant: String,
    pub requested_by: String,
    pub tool: String,
    pub model: String,
    /// The exact write, as [`payload`] builds it.
    pub payload: Value,
    /// Every rule that gates the write, with the roles that may approve under it.
    pub rules: BTreeMap<String, Vec<String>>,
    pub reason: Option<String>,
    pub trace_id: String,
    pub sla_seconds: u64,
}

/// The payload a request is bound to: the tool and its arguments, minus `approval_id` (which
/// the re-submission adds).
pub fn payload(tool: &str, arguments: &Value) -> Value {
    let mut args = arguments.clone();
    if let Value::Object(m) = &mut args {
        m.remove("approval_id");
    }
    serde_json::json!({"tool": tool, "arguments": args})
}

/// One stored request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub tenant_id: String,
    pub requested_by: String,
    pub tool: String,
    pub model: String,
    pub payload: Value,
    pub payload_sha256: String,
    /// Comma-separated names of the gating rules.
    pub rule: String,
    pub approver_roles: Value,
    pub reason: Option<String>,
    pub trace_id: Option<String>,
    pub sla_seconds: i32,
    /// The effective state (expiry applied).
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_roles: Option<Vec<String>>,
    pub decided_at: Option<chrono::DateTime<chrono::Utc>>,
    pub decision_note: Option<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub executed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("the approval queue query failed")]
    Database {
        #[source]
        source: sqlx::Error,
    },
    #[error("no approval request {id}")]
    NotFound { id: String },
    #[error("{id:?} is not an approval id (expected a UUID)")]
    BadId { id: String },
    #[error("approval request {id} is {state}, not pending; only pending requests can be decided")]
    NotPending { id: Uuid, state: ApprovalState },
    #[error("{name} is not a registered approver (preflight approvals approvers add {name} --role ROLE)")]
    NotAnApprover { name: String },
    #[error("{name} holds {has:?} but rule {rule} needs one of {needed:?}")]
    MissingRole {
        name: String,
        rule: String,
        needed: Vec<String>,
        has: Vec<String>,
    },
    #[error("{name} requested this change and cannot also decide it")]
    SelfDecision { name: String },
    #[error("an approver needs a name and at least one role")]
    BadApprover,
    #[error("the database refused the decision: {message}")]
    Refused { message: String },
}

fn db(source: sqlx::Error) -> ApprovalError {
    ApprovalError::Database { source }
}

pub fn parse_id(id: &str) -> Result<Uuid, ApprovalError> {
    Uuid::parse_str(id.trim()).map_err(|_| ApprovalError::BadId { id: id.to_string() })
}

const SELECT: &str = "SELECT a.id, a.created_at, a.tenant_id, a.requested_by, a.tool, a.model, \
    a.payload, a.payload_sha256, a.rule, a.approver_roles, a.reason, a.trace_id, a.sla_seconds, \
    preflight_ops.approval_state(a) AS state, a.decided_by, a.decided_roles, a.decided_at, \
    a.decision_note, a.expires_at, a.executed_at FROM preflight_ops.approvals a";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Approval, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(Approval {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        tenant_id: row.try_get("tenant_id")?,
        requested_by: row.try_get("requested_by")?,
        tool: row.try_get("tool")?,
        model: row.try_get("model")?,
        payload: row.try_get("payload")?,
        payload_sha256: row.try_get("payload_sha256")?,
        rule: row.try_get("rule")?,
        approver_roles: row.try_get("approver_roles")?,
        reason: row.try_get("reason")?,
        trace_id: row.try_get("trace_id")?,
        sla_seconds: row.try_get("sla_seconds")?,
        state: ApprovalState::parse(&state).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown approval state {state:?}").into())
        })?,
        decided_by: row.try_get("decided_by")?,
        decided_roles: row.try_get("decided_roles")?,
        decided_at: row.try_get("decided_at")?,
        decision_note: row.try_get("decision_note")?,
        expires_at: row.try_get("expires_at")?,
        executed_at: row.try_get("executed_at")?,
    })
}

/// Files a pending request (agent role, inside the call's transaction).
pub async fn create(conn: &mut PgConnection, req: &NewApproval) -> Result<Approval, sqlx::Error> {
    let rule = req.rules.keys().cloned().collect::<Vec<_>>().join(",");
    let roles = serde_json::to_value(&req.rules).unwrap_or(Value::Null);
    let sla = i32::try_from(req.sla_seconds.clamp(1, i32::MAX as u64)).unwrap_or(i32::MAX);
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO preflight_ops.approvals \
           (tenant_id, requested_by, tool, model, payload, payload_sha256, rule, approver_roles, \
            reason, trace_id, sla_seconds, expires_at) \
         VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8, $9, $10, now()) RETURNING id",
    )
    .bind(&req.tenant)
    .bind(&req.requested_by)
    .bind(&req.tool)
    .bind(&req.model)
    .bind(&req.payload)
    .bind(&rule)
    .bind(&roles)
    .bind(&req.reason)
    .bind(&req.trace_id)
    .bind(sla)
    .fetch_one(&mut *conn)
    .await?;
    let row = sqlx::query(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    from_row(&row)
}

/// A request of the caller's tenant (agent role: RLS scopes it), or `None`.
pub async fn status(conn: &mut PgConnection, id: Uuid) -> Result<Option<Approval>, sqlx::Error> {
    let row = sqlx::query(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// What consuming an approval found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumeOutcome {
    /// Marked executed (once); run the write now, in the same transaction.
    Ok {
        approver: Option<String>,
        approver_roles: Vec<String>,
        rule: String,
    },
    NotFound,
    Pending,
    Rejected,
    Expired,
    /// Already executed: a replay.
    Executed,
    RequesterMismatch,
    PayloadMismatch,
}

/// Consumes an approved request for exactly this payload (agent role, in the write's
/// transaction: a failed write rolls the consumption back).
pub async fn consume(
    conn: &mut PgConnection,
    id: Uuid,
    payload: &Value,
    requested_by: &str,
) -> Result<ConsumeOutcome, sqlx::Error> {
    let row = sqlx::query(
        "SELECT outcome, approver, approver_roles, rule \
         FROM preflight_ops.consume_approval($1, $2, $3)",
    )
    .bind(id)
    .bind(payload)
    .bind(requested_by)
    .fetch_one(&mut *conn)
    .await?;
    let outcome: String = row.try_get("outcome")?;
    Ok(match outcome.as_str() {
        "ok" => ConsumeOutcome::Ok {
            approver: row.try_get("approver")?,
            approver_roles: row
                .try_get::<Option<Vec<String>>, _>("approver_roles")?
                .unwrap_or_default(),
            rule: row
                .try_get::<Option<String>, _>("rule")?
                .unwrap_or_default(),
        },
        "pending" => ConsumeOutcome::Pending,
        "rejected" => ConsumeOutcome::Rejected,
        "expired" => ConsumeOutcome::Expired,
        "executed" => ConsumeOutcome::Executed,
        "requester_mismatch" => ConsumeOutcome::RequesterMismatch,
        "payload_mismatch" => ConsumeOutcome::PayloadMismatch,
        _ => ConsumeOutcome::NotFound,
    })
}

/// Which requests to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<ApprovalState>,
    pub tenant: Option<String>,
    pub limit: Option<i64>,
}

/// Lists requests, newest first (owner connection).
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter,
) -> Result<Vec<Approval>, ApprovalError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE ($1::text IS NULL OR preflight_ops.approval_state(a) = $1) \
           AND ($2::text IS NULL OR a.tenant_id = $2) \
         ORDER BY a.created_at DESC, a.id LIMIT $3"
    ))
    .bind(filter.state.map(|s| s.as_str()))
    .bind(&filter.tenant)
    .bind(filter.limit.unwrap_or(1000))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(from_row)
        .collect::<Result<_, _>>()
        .map_err(db)
}

/// One request by id (owner connection).
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Approval, ApprovalError> {
    status(conn, id)
        .await
        .map_err(db)?
        .ok_or(ApprovalError::NotFound { id: id.to_string() })
}

/// Approve or reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

/// A registered approver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    pub name: String,
    pub roles: Vec<String>,
}

/// Decides a pending request as `approver`, who must be registered, must not be the requester,
/// and must hold, for every gating rule, one of the roles that rule names.
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    approver: &str,
    verdict: Verdict,
    note: Option<&str>,
) -> Result<Approval, ApprovalError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await.map_err(db)?;
    match decide_in(&mut tx, id, approver, verdict, note).await {
        Ok(out) => {
            tx.commit().await.map_err(db)?;
            Ok(out)
        }
        Err(e) => {
            // Release the row lock now: a dropped transaction would only roll back on the
            // connection's next use, leaving the agent's consume waiting meanwhile.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn decide_in(
    tx: &mut PgConnection,
    id: Uuid,
    approver: &str,
    verdict: Verdict,
    note: Option<&str>,
) -> Result<Approval, ApprovalError> {
    let row = sqlx::query(&format!("{SELECT} WHERE a.id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or(ApprovalError::NotFound { id: id.to_string() })?;
    let a = from_row(&row).map_err(db)?;
    if a.state != ApprovalState::Pending {
        return Err(ApprovalError::NotPending { id, state: a.state });
    }
    let who =
        approver_roles(&mut *tx, approver)
            .await?
            .ok_or_else(|| ApprovalError::NotAnApprover {
                name: approver.to_string(),
            })?;
    if who.name == a.requested_by {
        return Err(ApprovalError::SelfDecision {
            name: approver.to_string(),
        });
    }
    let rules: BTreeMap<String, Vec<String>> =
        serde_json::from_value(a.approver_roles.clone()).unwrap_or_default();
    for (rule, needed) in &rules {
        if !needed.iter().any(|r| who.roles.contains(r)) {
            return Err(ApprovalError::MissingRole {
                name: who.name.clone(),
                rule: rule.clone(),
                needed: needed.clone(),
                has: who.roles.clone(),
            });
        }
    }
    let state = match verdict {
        Verdict::Approve => "approved",
        Verdict::Reject => "rejected",
    };
    let updated = sqlx::query(
        "UPDATE preflight_ops.approvals SET state = $2, decided_by = $3, decided_roles = $4, \
           decision_note = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(&who.name)
    .bind(&who.roles)
    .bind(note)
    .execute(&mut *tx)
    .await;
    if let Err(e) = updated {
        // The guard trigger's own refusals (e.g. it expired a moment ago) are messages an
        // operator should read.
        if let sqlx::Error::Database(d) = &e {
            return Err(ApprovalError::Refused {
                message: d.message().to_string(),
            });
        }
        return Err(db(e));
    }
    let row = sqlx::query(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    from_row(&row).map_err(db)
}

async fn approver_roles(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<Approver>, ApprovalError> {
    let row: Option<(String, Vec<String>)> =
        sqlx::query_as("SELECT name, roles FROM preflight_ops.approvers WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    Ok(row.map(|(name, roles)| Approver { name, roles }))
}

/// Registers (or updates) an approver (owner connection).
pub async fn add_approver(
    conn: &mut PgConnection,
    name: &str,
    roles: &[String],
) -> Result<(), ApprovalError> {
    if name.trim().is_empty() || roles.is_empty() || roles.iter().any(|r| r.trim().is_empty()) {
        return Err(ApprovalError::BadApprover);
    }
    sqlx::query(
        "INSERT INTO preflight_ops.approvers (name, roles) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET roles = EXCLUDED.roles, added_at = now(), \
           added_by = session_user",
    )
    .bind(name)
    .bind(roles)
    .execute(&mut *conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => {
            ApprovalError::BadApprover
        }
        _ => db(e),
    })?;
    Ok(())
}

/// Removes an approver; returns whether one was registered.
pub async fn remove_approver(conn: &mut PgConnection, name: &str) -> Result<bool, ApprovalError> {
    let n = sqlx::query("DELETE FROM preflight_ops.approvers WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(db)?
        .rows_affected();
    Ok(n > 0)
}

pub async fn list_approvers(conn: &mut PgConnection) -> Result<Vec<Approver>, ApprovalError> {
    let rows: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT name, roles FROM preflight_ops.approvers ORDER BY name")
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|(name, roles)| Approver { name, roles })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_drops_only_the_approval_id() {
        let p = payload(
            "db_update",
            &serde_json::json!({"model": "products", "id": 3, "data": {"price": 9}, "reason": "r", "approval_id": "x"}),
        );
        assert_eq!(
            p,
            serde_json::json!({"tool": "db_update", "arguments": {"model": "products", "id": 3, "data": {"price": 9}, "reason": "r"}})
        );
    }

    #[test]
    fn states_round_trip() {
        for s in ApprovalState::ALL {
            assert_eq!(ApprovalState::parse(s.as_str()), Some(s));
        }
    }
}
