//! The approval queue on a real database: the agent files and consumes, the operator decides,
//! and the database holds the line (payload binding, one execution, expiry, tenant scope).

use std::collections::BTreeMap;

use preflight_enforcer::approvals::{
    self, consume, create, decide, ApprovalError, ApprovalState, ConsumeOutcome, NewApproval,
    Verdict,
};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::writes_support::{owner, small_db};

async fn agent_tx<'c>(
    conn: &'c mut PgConnection,
    tenant: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

fn request(sla: u64) -> NewApproval {
    let args = json!({"model": "products", "id": 1, "data": {"price": 999.5}, "reason": "supplier raised prices"});
    NewApproval {
        tenant: "acme".into(),
        requested_by: "agent-user".into(),
        tool: "db_update".into(),
        model: "products".into(),
        payload: approvals::payload("db_update", &args),
        rules: BTreeMap::from([(
            "product-price-change".to_string(),
            vec!["admin".to_string()],
        )]),
        reason: Some("supplier raised prices".into()),
        trace_id: "t-1".into(),
        sla_seconds: sla,
    }
}

#[tokio::test]
async fn life_cycle_binding_replay_and_roles() {
    let db = small_db().await;
    let mut agent = PgConnection::connect(db.agent_url()).await.unwrap();
    let mut own = owner(&db).await;
    approvals::add_approver(&mut own, "alice", &["admin".into()])
        .await
        .unwrap();
    approvals::add_approver(&mut own, "bob", &["support".into()])
        .await
        .unwrap();
    approvals::add_approver(&mut own, "agent-user", &["admin".into()])
        .await
        .unwrap();

    let req = request(600);
    let filed = {
        let mut tx = agent_tx(&mut agent, "acme").await;
        let a = create(&mut tx, &req).await.unwrap();
        tx.commit().await.unwrap();
        a
    };
    assert_eq!(filed.state, ApprovalState::Pending);
    assert_eq!(filed.payload_sha256.len(), 64);

    // The agent can neither decide nor edit, and another tenant cannot see the request.
    {
        let mut tx = agent_tx(&mut agent, "acme").await;
        let e =
            sqlx::query("UPDATE preflight_ops.approvals SET state = 'approved', decided_by = 'x'")
                .execute(&mut *tx)
                .await
                .unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
        tx.rollback().await.unwrap();
    }
    {
        let mut tx = agent_tx(&mut agent, "globex").await;
        assert!(approvals::status(&mut tx, filed.id)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            consume(&mut tx, filed.id, &req.payload, "agent-user")
                .await
                .unwrap(),
            ConsumeOutcome::NotFound
        );
        tx.rollback().await.unwrap();
    }
    // Pending: consuming is refused.
    {
        let mut tx = agent_tx(&mut agent, "acme").await;
        assert_eq!(
            consume(&mut tx, filed.id, &req.payload, "agent-user")
                .await
                .unwrap(),
            ConsumeOutcome::Pending
        );
        // Roll back explicitly: a dropped transaction keeps its row lock until the
        // connection is used again, and the decision below would wait for it.
        tx.rollback().await.unwrap();
    }

    // Deciding needs a registered approver with the rule's role, never the requester.
    assert!(matches!(
        decide(&mut own, filed.id, "mallory", Verdict::Approve, None).await,
        Err(ApprovalError::NotAnApprover { .. })
    ));
    assert!(matches!(
        decide(&mut own, filed.id, "bob", Verdict::Approve, None).await,
        Err(ApprovalError::MissingRole { .. })
    ));
    assert!(matches!(
        decide(&mut own, filed.id, "agent-user", Verdict::Approve, None).await,
        Err(ApprovalError::SelfDecision { .. })
    ));
    let approved = decide(&mut own, filed.id, "alice", Verdict::Approve, Some("ok"))
        .await
        .unwrap();
    assert_eq!(approved.state, ApprovalState::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("alice"));
    assert!(matches!(
        decide(&mut own, filed.id, "alice", Verdict::Reject, None).await,
        Err(ApprovalError::NotPending { .. })
    ));

    // Even the owner cannot swap the approved payload.
    let e = sqlx::query("UPDATE preflight_ops.approvals SET payload = '{}' WHERE id = $1")
        .bind(filed.id)
        .execute(&mut own)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot change"), "{e}");

    // A changed payload or another requester is refused; the approved one runs exactly once.
    {
        let mut tx = agent_tx(&mut agent, "acme").await;
        let mut changed = req.payload.clone();
        changed["arguments"]["data"]["price"] = json!(1);
        assert_eq!(
            consume(&mut tx, filed.id, &changed, "agent-user")
                .await
                .unwrap(),
            ConsumeOutcome::PayloadMismatch
        );
        assert_eq!(
            consume(&mut tx, filed.id, &req.payload, "someone-else")
                .await
                .unwrap(),
            ConsumeOutcome::RequesterMismatch
        );
        tx.rollback().await.unwrap();
    }
    {
        // A consumption whose write fails rolls back with it.
        let mut tx = agent_tx(&mut agent, "acme").await;
        assert!(matches!(
            consume(&mut tx, filed.id, &req.payload, "agent-user")
                .await
                .unwrap(),
            ConsumeOutcome::Ok { .. }
        ));
        tx.rollback().await.unwrap();
    }
    {
        let mut tx = agent_tx(&mut agent, "acme").await;
        let ConsumeOutcome::Ok { approver, rule, .. } =
            consume(&mut tx, filed.id, &req.payload, "agent-user")
                .await
                .unwrap()
        else {
            panic!("approved request must be consumable once");
        };
        assert_eq!(approver.as_deref(), Some("alice"));
        assert_eq!(rule, "product-price-change");
        tx.commit().await.unwrap();
    }
    {
        let mut tx = agent_tx(&mut agent, "acme").await;
        assert_eq!(
            consume(&mut tx, filed.id, &req.payload, "agent-user")
                .await
                .unwrap(),
            ConsumeOutcome::Executed
        );
        assert_eq!(
            approvals::status(&mut tx, filed.id)
                .await
                .unwrap()
                .unwrap()
                .state,
            ApprovalState::Executed
        );
        tx.rollback().await.unwrap();
    }
    // Requests are never deleted.
    assert!(sqlx::query("DELETE FROM preflight_ops.approvals")
        .execute(&mut own)
        .await
        .is_err());
}

#[tokio::test]
async fn expiry_happens_without_any_action() {
    let db = small_db().await;
    let mut agent = PgConnection::connect(db.agent_url()).await.unwrap();
    let mut own = owner(&db).await;
    approvals::add_approver(&mut own, "alice", &["admin".into()])
        .await
        .unwrap();
    let req = request(1);
    let filed = {
        let mut tx = agent_tx(&mut agent, "acme").await;
        let a = create(&mut tx, &req).await.unwrap();
        tx.commit().await.unwrap();
        a
    };
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let listed = approvals::list(
        &mut own,
        &approvals::ListFilter {
            state: Some(ApprovalState::Expired),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, filed.id);
    assert!(matches!(
        decide(&mut own, filed.id, "alice", Verdict::Approve, None).await,
        Err(ApprovalError::NotPending {
            state: ApprovalState::Expired,
            ..
        })
    ));
    let mut tx = agent_tx(&mut agent, "acme").await;
    assert_eq!(
        consume(&mut tx, filed.id, &req.payload, "agent-user")
            .await
            .unwrap(),
        ConsumeOutcome::Expired
    );
}
