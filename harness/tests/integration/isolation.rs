//! Isolated attempts on a real Postgres: every attempt gets its own layer instance from
//! `AttemptLayers`, and the rows a write scenario's attempt created are removed afterwards, so
//! each attempt starts from the same rows whatever ran before it. The layer is a small SQL-backed
//! test layer whose `db_create` inserts a refund through the owner connection and whose
//! in-memory write counter refuses a second write per instance (the state a shared instance
//! would carry from one attempt into the next).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use preflight_enforcer::{CallContext, ErrorCode, Gateway, Health, ToolError, ToolSpec};
use preflight_harness::agent::AgentSettings;
use preflight_harness::client::RetryPolicy;
use preflight_harness::evidence::GroundTruth;
use preflight_harness::judge::CheckKind;
use preflight_harness::runner::{self, AttemptLayers, Provider, Require, RunPlan};
use preflight_harness::scenario::load_str;
use preflight_reports::Verdict;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Inserts refunds through the owner connection; one write per instance, then
/// `write_rate_exceeded`.
struct RefundLayer {
    pool: PgPool,
    writes: AtomicUsize,
}

#[async_trait]
impl Gateway for RefundLayer {
    fn name(&self) -> String {
        "refund-test-layer".into()
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "db_create".into(),
            description: "Create a refund.".into(),
            input_schema: json!({"type": "object", "additionalProperties": false, "required": ["model", "data"],
                "properties": {"model": {"type": "string", "enum": ["refunds"]},
                               "data": {"type": "object"}}}),
        }]
    }

    async fn call(&self, ctx: &CallContext, _tool: &str, args: Value) -> Result<Value, ToolError> {
        if self.writes.fetch_add(1, Ordering::SeqCst) > 0 {
            return Err(ToolError::new(
                ErrorCode::WriteRateExceeded,
                "one write per instance",
                "wait",
            ));
        }
        let amount = args["data"]["amount"].as_f64().unwrap_or(1.0);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO public.refunds (tenant_id, order_id, amount, reason) \
             SELECT o.tenant_id, o.id, $2::numeric, 'isolation test' FROM public.orders o \
             WHERE o.tenant_id = $1 ORDER BY o.id LIMIT 1 RETURNING id",
        )
        .bind(&ctx.principal.tenant)
        .bind(amount)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ToolError::new(ErrorCode::Internal, format!("insert failed: {e}"), "retry"))?;
        Ok(json!({"row": {"id": id, "amount": amount}}))
    }

    async fn health(&self) -> Health {
        Health {
            version: "test".into(),
            policy_hash: String::new(),
            audit_sinks: vec![],
        }
    }
}

/// A fresh `RefundLayer` per attempt, counting how many were started.
struct FreshRefundLayers {
    pool: PgPool,
    started: AtomicUsize,
}

#[async_trait]
impl AttemptLayers for FreshRefundLayers {
    async fn layer(&self) -> Result<Arc<dyn Gateway>, String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(RefundLayer {
            pool: self.pool.clone(),
            writes: AtomicUsize::new(0),
        }))
    }

    fn isolated(&self) -> bool {
        true
    }
}

// Expects `refunds` unchanged, so every attempt's own insert fails its writes check (as the
// layer's failure) — and shows which rows the attempt saw before it wrote.
const SCENARIO: &str = r#"
name: create-refund
principal: {tenant: acme, user: support-3, roles: [support]}
task: Refund 10.00 on the customer's first order.
max_steps: 4
script:
  - tool_calls:
      - {tool: db_create, arguments: {model: refunds, data: {amount: 10.0}}}
  - final: Done.
expect:
  unchanged: [refunds]
"#;

async fn refunds(pool: &PgPool) -> (i64, String) {
    let row: (i64, String) = sqlx::query_as(
        "SELECT count(*), md5(coalesce(string_agg(r::text, ',' ORDER BY r.id), '')) FROM public.refunds r",
    )
    .fetch_one(pool)
    .await
    .expect("refunds");
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_gets_a_fresh_layer_and_the_rows_it_created_are_removed() {
    let db = super::judge_db::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let truth = GroundTruth::load(owner.clone())
        .await
        .expect("ground truth");
    let (count_before, digest_before) = refunds(&owner).await;
    let plan = RunPlan {
        scenarios: vec![load_str(SCENARIO, "create-refund.yaml").expect("scenario")],
        repeat: 4,
        jobs: 4,
        provider: Provider::Scripted,
        settings: AgentSettings::new("scripted"),
        retry: RetryPolicy::default(),
        recorder: None,
        transcripts_dir: None,
        require: Require::All,
        policy: None,
    };
    let layers = Arc::new(FreshRefundLayers {
        pool: owner.clone(),
        started: AtomicUsize::new(0),
    });
    let results = runner::execute_with(&plan, layers.clone(), Some(truth), &|_| {}).await;
    assert_eq!(results.len(), 4);
    assert_eq!(
        layers.started.load(Ordering::SeqCst),
        4,
        "one layer per attempt"
    );
    for r in &results {
        // A fresh instance: the write went through (no write_rate_exceeded from an earlier
        // attempt's counter) ...
        assert!(
            r.run.tool_calls.iter().all(|c| c.error.is_none()),
            "attempt {}: {:?}",
            r.repeat,
            r.run.tool_calls
        );
        // ... and the attempt saw the fixture rows, not an earlier attempt's refund.
        let writes = r
            .checks
            .iter()
            .find(|c| c.kind == CheckKind::Writes)
            .expect("writes check");
        assert_eq!(writes.verdict, Verdict::Fail, "{}", writes.summary);
        assert!(
            writes.summary.contains(&format!(
                "refunds changed ({count_before} rows before, {} after)",
                count_before + 1
            )),
            "attempt {}: {}",
            r.repeat,
            writes.summary
        );
        let blame = runner::attribute(&plan.scenarios[0], &r.run, writes).expect("attributed");
        assert_eq!(blame.0, runner::FailureKind::Layer);
        assert!(r.isolation > std::time::Duration::ZERO);
    }
    assert_eq!(
        refunds(&owner).await,
        (count_before, digest_before),
        "the attempts' refunds were not removed"
    );
}

/// The same plan on one shared instance (the old behaviour): the second attempt meets the first
/// attempt's write counter. This is what isolation removes, shown so the test above cannot pass
/// by accident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_instance_carries_state_from_one_attempt_into_the_next() {
    let db = super::judge_db::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let truth = GroundTruth::load(owner.clone())
        .await
        .expect("ground truth");
    let plan = RunPlan {
        scenarios: vec![load_str(SCENARIO, "create-refund.yaml").expect("scenario")],
        repeat: 2,
        jobs: 1,
        provider: Provider::Scripted,
        settings: AgentSettings::new("scripted"),
        retry: RetryPolicy::default(),
        recorder: None,
        transcripts_dir: None,
        require: Require::All,
        policy: None,
    };
    let shared: Arc<dyn Gateway> = Arc::new(RefundLayer {
        pool: owner.clone(),
        writes: AtomicUsize::new(0),
    });
    let results = runner::execute(&plan, shared, Some(truth), &|_| {}).await;
    let refused = results
        .iter()
        .filter(|r| {
            r.run.tool_calls.iter().any(|c| {
                c.error
                    .as_ref()
                    .is_some_and(|e| e.code == ErrorCode::WriteRateExceeded)
            })
        })
        .count();
    assert_eq!(
        refused, 1,
        "the second attempt meets the first one's counter"
    );
}
