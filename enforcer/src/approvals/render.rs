//! Terminal tables of the approval queue ([`list_table`]) and the approver registry
//! ([`approvers_table`]) for `preflight approvals`. JSON output is the types' serde form.

use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::{Modify, Style, Width};

use super::store::{Approval, Approver};

/// How a time is shown: UTC, to the second.
fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Requests as a table: id, state, model, tool, tenant, requester, reason, created, expires,
/// decided by, and the payload hash (short: its first 12 hex digits).
pub fn list_table(items: &[Approval]) -> String {
    let mut b = Builder::default();
    b.push_record([
        "id",
        "state",
        "model",
        "tool",
        "tenant",
        "requester",
        "reason",
        "created",
        "expires",
        "decided by",
        "payload",
    ]);
    for a in items {
        b.push_record([
            a.id.to_string(),
            a.state.as_str().to_string(),
            a.model.clone(),
            a.tool.clone(),
            a.tenant_id.clone(),
            a.requested_by.clone(),
            a.reason.clone().unwrap_or_default(),
            time(&a.created_at),
            time(&a.expires_at),
            a.decided_by.clone().unwrap_or_default(),
            a.payload_sha256[..12.min(a.payload_sha256.len())].to_string(),
        ]);
    }
    let mut t = b.build();
    t.with(Style::sharp())
        .with(Modify::new(Columns::one(6)).with(Width::wrap(36).keep_words(true)));
    t.to_string()
}

/// Registered approvers and their roles.
pub fn approvers_table(items: &[Approver]) -> String {
    let mut b = Builder::default();
    b.push_record(["name", "roles"]);
    for a in items {
        b.push_record([a.name.clone(), a.roles.join(", ")]);
    }
    let mut t = b.build();
    t.with(Style::sharp());
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::ApprovalState;

    #[test]
    fn the_table_shows_the_short_payload_hash_and_the_full_id() {
        let now = chrono::Utc::now();
        let a = Approval {
            id: uuid::Uuid::nil(),
            created_at: now,
            tenant_id: "acme".into(),
            requested_by: "agent-1".into(),
            tool: "db_update".into(),
            model: "products".into(),
            payload: serde_json::json!({}),
            payload_sha256: "0123456789abcdef".repeat(4),
            rule: "product-price-change".into(),
            approver_roles: serde_json::json!({}),
            reason: Some("supplier price list".into()),
            trace_id: None,
            sla_seconds: 60,
            state: ApprovalState::Pending,
            decided_by: None,
            decided_roles: None,
            decided_at: None,
            decision_note: None,
            expires_at: now,
            executed_at: None,
        };
        let t = list_table(&[a]);
        assert!(t.contains("00000000-0000-0000-0000-000000000000"), "{t}");
        assert!(t.contains("0123456789ab "), "{t}");
        assert!(!t.contains("0123456789abc"), "{t}");
        assert!(t.contains("supplier price list"), "{t}");
    }
}
