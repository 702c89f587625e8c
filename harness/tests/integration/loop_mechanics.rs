//! The loop's mechanics over real HTTP with the scripted model and the in-crate fake gateway:
//! ordering, validation errors the model can fix, the step cap, the principal guard, and the
//! request shape a real server needs.

use preflight_enforcer::ErrorCode;
use preflight_harness::agent::{ResultOrigin, RunOutcome, TranscriptEntry};
use preflight_harness::providers::{FaultPlan, ScriptTurn};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn several_calls_in_one_turn_are_all_answered_in_order() {
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(vec![
                call("db_get", json!({"model": "orders", "id": 3})),
                call("db_get", json!({"model": "orders", "id": 99})),
                call(
                    "db_query",
                    json!({"model": "orders", "where": [{"field": "id", "op": "eq", "value": 3}]}),
                ),
            ]),
            ScriptTurn::Final("Order 3 has shipped.".into()),
        ]),
        FaultPlan::none(),
        6,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Completed, "{:?}", o.run.error);
    assert_eq!(o.run.final_answer.as_deref(), Some("Order 3 has shipped."));
    assert_eq!(
        o.server.violations(),
        vec![],
        "the request shape must satisfy the server"
    );
    let tools: Vec<&str> = o.run.tool_calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["db_get", "db_get", "db_query"]);
    assert_eq!(o.run.tool_calls[1].error_code(), Some(ErrorCode::NotFound));
    // The fake saw the same calls in the same order, with the principal from context.
    let seen: Vec<(String, String)> = o
        .gateway
        .calls()
        .into_iter()
        .map(|c| (c.tool, c.tenant))
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, t)| t == "acme"));
    // The second request carried the three results after the assistant turn, content "" not null.
    let second = &o.server.bodies()[1];
    let msgs = second["messages"].as_array().unwrap();
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[2]["content"], "");
    let ids: Vec<&str> = msgs[3..6]
        .iter()
        .map(|m| m["tool_call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_1_1", "call_1_2", "call_1_3"]);
    assert!(msgs[4]["content"]
        .as_str()
        .unwrap()
        .contains("\"not_found\""));
    assert!(second.get("stream").is_none());
}

#[tokio::test]
async fn bad_arguments_become_validation_errors_the_model_can_fix() {
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(vec![raw("db_get", "{\"model\": \"orders\", \"id\": ")]),
            ScriptTurn::ToolCalls(vec![call("sql_exec", json!({"sql": "select 1"}))]),
            ScriptTurn::ToolCalls(vec![call(
                "db_query",
                json!({"model": "orders", "limit": "5", "where": []}),
            )]),
            ScriptTurn::ToolCalls(vec![call(
                "db_query",
                json!({"model": "orders", "tenant_id": "globex", "where": []}),
            )]),
            ScriptTurn::ToolCalls(vec![call("db_get", json!({"model": "orders", "id": 3}))]),
            ScriptTurn::Final("done".into()),
        ]),
        FaultPlan::none(),
        8,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Completed, "{:?}", o.run.error);
    let calls = &o.run.tool_calls;
    for (i, field) in [
        (0, "arguments"),
        (1, "tool"),
        (2, "limit"),
        (3, "tenant_id"),
    ] {
        assert_eq!(calls[i].origin, ResultOrigin::Harness, "call {i}");
        let e = calls[i].error.as_ref().unwrap();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert_eq!(e.details["field"], field, "call {i}: {e:?}");
        assert!(calls[i].content().contains("\"suggestion\""));
    }
    assert!(calls[4].succeeded());
    // Only the valid call reached the layer.
    assert_eq!(o.gateway.calls().len(), 1);
    assert_eq!(o.server.violations(), vec![]);
}

#[tokio::test]
async fn the_cap_stops_a_runaway_loop_and_keeps_the_transcript() {
    let mut s = script(vec![ScriptTurn::ToolCalls(vec![call(
        "db_query",
        json!({"model": "orders"}),
    )])]);
    s.repeat_last = true;
    let o = run_script(
        s,
        FaultPlan::none(),
        5,
        "List every order ever placed.",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::StepLimit);
    assert_eq!(o.run.steps, 5);
    assert_eq!(
        o.server.requests(),
        5,
        "exactly one request per step, none after the cap"
    );
    assert_eq!(o.run.tool_calls.len(), 5);
    assert!(o
        .run
        .tool_calls
        .iter()
        .all(|c| c.error_code() == Some(ErrorCode::ScanBudgetExceeded)));
    assert!(matches!(
        o.run.transcript.last(),
        Some(TranscriptEntry::StepLimit { steps: 5 })
    ));
    assert_eq!(o.run.timings.len(), 5);
}

#[tokio::test]
async fn a_task_naming_the_principal_is_never_sent() {
    let o = run_script(
        script(vec![ScriptTurn::Final("hi".into())]),
        FaultPlan::none(),
        4,
        "You are acting for tenant ACME. Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::PrincipalLeak);
    assert_eq!(
        o.server.requests(),
        0,
        "the leaking request must not leave the process"
    );
    let leak = o.run.leak.unwrap();
    assert_eq!(leak.place, "user message");
    assert_eq!(leak.token, "acme…");
}

#[tokio::test]
async fn another_tenant_named_in_the_task_is_allowed_but_the_call_is_scoped() {
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(vec![call("db_get", json!({"model": "orders", "id": 45}))]),
            ScriptTurn::Final("I can only see your own orders.".into()),
        ]),
        FaultPlan::none(),
        4,
        "Show me globex's order 45.",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Completed);
    assert_eq!(o.gateway.calls()[0].tenant, "acme");
}

#[tokio::test]
async fn tools_are_the_layers_own_list() {
    let o = run_script(
        script(vec![ScriptTurn::Final("ok".into())]),
        FaultPlan::none(),
        2,
        "hello",
        fast_retry(),
    )
    .await;
    // The server compares `tools` with the fake's own list, unedited.
    assert_eq!(o.server.violations(), vec![]);
    assert_eq!(o.run.tools_offered, ["db_query", "db_get"]);
    let tools = &o.server.bodies()[0]["tools"];
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["model"])
    );
}

/// LLM-3's positive control: a client that offers the model a hand-picked subset of the layer's
/// tools (the same request with one tool left out) is refused by the model server and recorded
/// as a violation, which the judge turns into a failing `agent.model_requests` (LLM-3).
#[tokio::test]
async fn a_request_that_hides_a_tool_is_a_violation() {
    let o = run_script(
        script(vec![ScriptTurn::Final("ok".into())]),
        FaultPlan::none(),
        2,
        "hello",
        fast_retry(),
    )
    .await;
    assert_eq!(o.server.violations(), vec![]);
    let mut body = o.server.bodies()[0].clone();
    let tools = body["tools"].as_array_mut().expect("tools");
    assert!(tools.len() > 1);
    tools.pop();
    let reply = reqwest::Client::new()
        .post(format!("{}/chat/completions", o.server.base_url()))
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(reply.status(), 400);
    let violations = o.server.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0]
            .message
            .contains("not the enforcement layer's own tool list"),
        "{violations:?}"
    );
}

#[tokio::test]
async fn a_script_that_runs_out_is_an_error_not_a_hang() {
    let o = run_script(
        script(vec![ScriptTurn::ToolCalls(vec![call(
            "db_get",
            json!({"model": "orders", "id": 3}),
        )])]),
        FaultPlan::none(),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Error);
    assert!(
        o.run.error.as_deref().unwrap().contains("HTTP 400"),
        "{:?}",
        o.run.error
    );
    assert_eq!(o.server.violations().len(), 1);
}

#[tokio::test]
async fn a_reply_with_more_tool_calls_than_the_cap_runs_only_the_cap() {
    let burst: Vec<_> = (1..=12)
        .map(|id| call("db_get", json!({"model": "orders", "id": id})))
        .collect();
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(burst),
            ScriptTurn::Final("Done.".into()),
        ]),
        FaultPlan::none(),
        4,
        "Read orders 1 to 12.",
        fast_retry(),
    )
    .await;
    assert_eq!(o.run.outcome, RunOutcome::Completed, "{:?}", o.run.error);
    let cap = preflight_harness::agent::DEFAULT_MAX_TOOL_CALLS_PER_REPLY;
    assert_eq!(cap, 8);
    // The layer saw only the first `cap` calls, in order.
    let ids: Vec<i64> = o
        .gateway
        .calls()
        .iter()
        .map(|c| c.arguments["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=8).collect::<Vec<i64>>());
    assert_eq!(o.run.tool_calls_over_cap, 4);
    // Every call still got its tool message (the API requires one per call id): the rest are
    // the harness's refusals.
    assert_eq!(o.run.tool_calls.len(), 12);
    for c in &o.run.tool_calls[8..] {
        assert_eq!(c.origin, ResultOrigin::Harness);
        assert_eq!(c.error_code(), Some(ErrorCode::ValidationError));
        assert!(c.content().contains("at most 8"), "{}", c.content());
    }
    let second = &o.server.bodies()[1];
    let tool_messages = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .count();
    assert_eq!(tool_messages, 12);
    assert_eq!(o.server.violations(), vec![]);
}
