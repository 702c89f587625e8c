//! Record and replay: a run recorded from a live (here: scripted) server replays from the
//! cassette with the same outcome; a request the cassette does not hold ends the run as `error`
//! with no live fallback; the cassette never holds the API key.

use std::sync::Arc;

use preflight_enforcer::CallContext;
use preflight_harness::agent::{run_agent, AgentSettings, RunOutcome};
use preflight_harness::cassette::{Cassette, Recorder};
use preflight_harness::client::{ChatClient, Endpoint};
use preflight_harness::guard::PrincipalGuard;
use preflight_harness::providers::{
    FaultPlan, ReplayServer, ScriptTurn, ScriptedOptions, ScriptedServer,
};
use preflight_harness::testutil::FakeGateway;
use serde_json::json;

use crate::support::*;

const KEY: &str = "sk-live-recording-key-0123456789";

#[tokio::test]
async fn a_recorded_run_replays_and_a_miss_is_an_error() {
    let gateway = FakeGateway::new();
    let live = ScriptedServer::start(
        script(vec![
            ScriptTurn::ToolCalls(vec![call("db_query", json!({"model": "orders"}))]),
            ScriptTurn::ToolCalls(vec![call(
                "db_query",
                json!({"model": "orders", "where": [{"field": "customer_id", "op": "eq", "value": 3}]}),
            )]),
            ScriptTurn::Final("Customer 3 has one shipped order.".into()),
        ]),
        ScriptedOptions { faults: FaultPlan::none(), expected_tools: None, model: None },
    )
    .await
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    let client = ChatClient::new(
        &Endpoint {
            base_url: live.base_url(),
            api_key: Some(KEY.into()),
        },
        fast_retry(),
    )
    .unwrap()
    .with_recorder(recorder.clone());
    let settings = AgentSettings::new("live-model");
    let guard = PrincipalGuard::new("acme", "support-7", &[]);
    let task = "What did customer 3 order?";
    let recorded = run_agent(
        &client,
        &settings,
        &gateway,
        &CallContext::new(principal()),
        task,
        &guard,
    )
    .await;
    assert_eq!(recorded.outcome, RunOutcome::Completed);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cassette.yaml");
    recorder.cassette().save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(KEY) && !text.to_lowercase().contains("authorization"));
    let cassette = Cassette::load(&path).unwrap();
    assert_eq!(cassette.interactions.len(), 3);
    drop(live); // nothing live is left to fall back to

    let replay = ReplayServer::start(cassette).await.unwrap();
    let client = ChatClient::new(
        &Endpoint {
            base_url: replay.base_url(),
            api_key: None,
        },
        fast_retry(),
    )
    .unwrap();
    let replayed = run_agent(
        &client,
        &settings,
        &gateway,
        &CallContext::new(principal()),
        task,
        &guard,
    )
    .await;
    assert_eq!(
        replayed.outcome,
        RunOutcome::Completed,
        "{:?}",
        replayed.error
    );
    assert_eq!(replayed.final_answer, recorded.final_answer);
    assert_eq!(replayed.tool_calls.len(), 2);
    assert!(replay.misses().is_empty());

    let missed = run_agent(
        &client,
        &settings,
        &gateway,
        &CallContext::new(principal()),
        "A different question",
        &guard,
    )
    .await;
    assert_eq!(missed.outcome, RunOutcome::Error);
    assert!(
        missed
            .error
            .as_deref()
            .unwrap()
            .contains("no recorded response"),
        "{:?}",
        missed.error
    );
    assert_eq!(replay.misses().len(), 1, "a miss is not retried");
}
