//! Model API faults injected by the scripted server: each is retried with backoff and the run
//! still completes; past the retry budget the run ends as `error`, never a panic or a hang.

use std::time::{Duration, Instant};

use preflight_harness::agent::RunOutcome;
use preflight_harness::providers::{FaultPlan, ModelFault, ScriptTurn};
use serde_json::json;

use crate::support::*;

fn two_turns() -> preflight_harness::providers::Script {
    script(vec![
        ScriptTurn::ToolCalls(vec![call("db_get", json!({"model": "orders", "id": 3}))]),
        ScriptTurn::Final("Order 3 has shipped.".into()),
    ])
}

async fn recovers(faults: FaultPlan, expected_fault: &str, extra_requests: usize) -> Duration {
    let started = Instant::now();
    let o = run_script(two_turns(), faults, 4, "Where is order 3?", fast_retry()).await;
    assert_eq!(
        o.run.outcome,
        RunOutcome::Completed,
        "{expected_fault}: {:?}",
        o.run.error
    );
    assert_eq!(o.server.requests(), 2 + extra_requests, "{expected_fault}");
    assert_eq!(o.run.model_retries, extra_requests, "{expected_fault}");
    let faults: Vec<String> = o
        .run
        .transcript
        .iter()
        .filter_map(|e| match e {
            preflight_harness::agent::TranscriptEntry::ModelRetry { attempt, .. } => {
                Some(attempt.fault.clone())
            }
            _ => None,
        })
        .collect();
    assert!(faults.iter().all(|f| f == expected_fault), "{faults:?}");
    // Tool calls were made once, not once per retry.
    assert_eq!(o.gateway.calls().len(), 1);
    started.elapsed()
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_honoured() {
    let took = recovers(
        FaultPlan::first(
            2,
            ModelFault::Status {
                status: 429,
                retry_after: Some("1".into()),
            },
        ),
        "http_429",
        2,
    )
    .await;
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After: 1 twice must wait 2s, took {took:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    recovers(
        FaultPlan::none().on(
            1,
            ModelFault::Status {
                status: 503,
                retry_after: None,
            },
        ),
        "http_503",
        1,
    )
    .await;
    recovers(
        FaultPlan::first(
            2,
            ModelFault::Status {
                status: 500,
                retry_after: None,
            },
        ),
        "http_500",
        2,
    )
    .await;
}

#[tokio::test]
async fn timeouts_are_retried() {
    recovers(
        FaultPlan::none().on(0, ModelFault::Delay(Duration::from_millis(900))),
        "timeout",
        1,
    )
    .await;
}

#[tokio::test]
async fn truncated_malformed_and_empty_bodies_are_retried() {
    recovers(
        FaultPlan::none().on(1, ModelFault::Truncated),
        "truncated_body",
        1,
    )
    .await;
    recovers(
        FaultPlan::none().on(0, ModelFault::Malformed),
        "malformed_body",
        1,
    )
    .await;
    recovers(
        FaultPlan::none().on(1, ModelFault::EmptyChoices),
        "empty_choices",
        1,
    )
    .await;
}

#[tokio::test]
async fn persistent_faults_end_the_run_as_error_after_the_limit() {
    let o = run_script(
        two_turns(),
        FaultPlan::first(
            100,
            ModelFault::Status {
                status: 502,
                retry_after: None,
            },
        ),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Error);
    assert_eq!(o.server.requests(), 4, "max_attempts bounds the requests");
    assert!(
        o.run.error.as_deref().unwrap().contains("after 4 attempts"),
        "{:?}",
        o.run.error
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let o = run_script(
        two_turns(),
        FaultPlan::first(
            100,
            ModelFault::Status {
                status: 401,
                retry_after: None,
            },
        ),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Error);
    assert_eq!(o.server.requests(), 1);
    assert!(o.run.error.as_deref().unwrap().contains("HTTP 401"));
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_ends_the_run() {
    let started = Instant::now();
    let o = run_script(
        two_turns(),
        FaultPlan::first(
            1,
            ModelFault::Status {
                status: 429,
                retry_after: Some("3600".into()),
            },
        ),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Error);
    assert!(
        o.run.error.as_deref().unwrap().contains("3600s"),
        "{:?}",
        o.run.error
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must not sleep for an hour"
    );
}
