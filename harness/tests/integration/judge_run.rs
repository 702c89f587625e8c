//! The judge's checks of the run itself, on runs made over real HTTP with the scripted model and
//! the in-crate fake layer: the harness's own validation errors never count as the layer's
//! refusals or as a recovery, and the step-cap check fails when the model was asked more often
//! than the scenario's cap allows.

use preflight_harness::judge::{self, Before, Check, CheckKind, Context};
use preflight_harness::providers::{FaultPlan, ScriptTurn};
use preflight_harness::scenario::{load_str, Scenario};
use preflight_reports::Verdict;
use serde_json::json;

use crate::support::*;

fn scenario(yaml: &str) -> Scenario {
    load_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn check(checks: &[Check], kind: CheckKind) -> &Check {
    checks
        .iter()
        .find(|c| c.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} check in {checks:?}"))
}

const ONLY_HARNESS_ERRORS: &str = r#"
name: harness-errors
principal: {tenant: acme, user: support-7, roles: [support]}
task: Where is order 3?
max_steps: 4
expect:
  errors_seen: [validation_error]
  recovers_from: [validation_error]
"#;

#[tokio::test]
async fn the_harness_own_validation_errors_are_neither_refusals_nor_recoveries() {
    // Malformed JSON (refused by the harness, never sent), then a valid call the layer answers.
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(vec![raw("db_get", "{\"model\": \"orders\", \"id\": ")]),
            ScriptTurn::ToolCalls(vec![call("db_get", json!({"model": "orders", "id": 3}))]),
            ScriptTurn::Final("Order 3 has shipped.".into()),
        ]),
        FaultPlan::none(),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    assert_eq!(
        o.gateway.calls().len(),
        1,
        "only the valid call reached the layer"
    );
    let s = scenario(ONLY_HARNESS_ERRORS);
    let checks = judge::judge(&s, &o.run, None, &Before::default(), &Context::default()).await;
    let seen = check(&checks, CheckKind::ErrorsSeen);
    assert_eq!(seen.verdict, Verdict::Fail, "{}", seen.summary);
    assert!(
        seen.summary.contains("never returned validation_error"),
        "{}",
        seen.summary
    );
    let rec = check(&checks, CheckKind::Recovery);
    assert_eq!(rec.verdict, Verdict::Fail, "{}", rec.summary);
    assert!(
        rec.summary
            .contains("the layer never returned validation_error"),
        "{}",
        rec.summary
    );
}

#[tokio::test]
async fn the_layers_own_refusal_and_a_later_success_are_a_recovery() {
    // The fake refuses an unfiltered db_query with scan_budget_exceeded; the filtered retry works.
    let o = run_script(
        script(vec![
            ScriptTurn::ToolCalls(vec![call("db_query", json!({"model": "orders"}))]),
            ScriptTurn::ToolCalls(vec![call(
                "db_query",
                json!({"model": "orders", "where": [{"field": "id", "op": "eq", "value": 3}]}),
            )]),
            ScriptTurn::Final("Order 3 has shipped.".into()),
        ]),
        FaultPlan::none(),
        4,
        "Where is order 3?",
        fast_retry(),
    )
    .await;
    let s = scenario(&ONLY_HARNESS_ERRORS.replace("validation_error", "scan_budget_exceeded"));
    let checks = judge::judge(&s, &o.run, None, &Before::default(), &Context::default()).await;
    assert_eq!(check(&checks, CheckKind::ErrorsSeen).verdict, Verdict::Pass);
    let rec = check(&checks, CheckKind::Recovery);
    assert_eq!(rec.verdict, Verdict::Pass, "{}", rec.summary);
}

const RUNAWAY: &str = r#"
name: runaway
principal: {tenant: acme, user: support-7, roles: [support]}
task: Keep checking order 4.
max_steps: 5
expect:
  outcome: step_limit
"#;

fn runaway_script() -> preflight_harness::providers::Script {
    let mut s = script(vec![ScriptTurn::ToolCalls(vec![call(
        "db_get",
        json!({"model": "orders", "id": 4}),
    )])]);
    s.repeat_last = true;
    s
}

#[tokio::test]
async fn the_step_cap_check_fails_when_the_model_was_asked_past_the_cap() {
    let s = scenario(RUNAWAY);
    // A loop that honours the scenario's cap: pass, judged from the server's own count.
    let o = run_script(
        runaway_script(),
        FaultPlan::none(),
        5,
        "Keep checking order 4.",
        fast_retry(),
    )
    .await;
    let cx = Context {
        model_requests: Some(o.server.requests()),
        ..Context::default()
    };
    let checks = judge::judge(&s, &o.run, None, &Before::default(), &cx).await;
    let cap = check(&checks, CheckKind::StepCap);
    assert_eq!(cap.verdict, Verdict::Pass, "{}", cap.summary);
    assert!(
        cap.summary.contains("answered 5 model replies"),
        "{}",
        cap.summary
    );

    // A loop that ran past the scenario's cap (here: given 8 steps for a 5-step scenario).
    let o = run_script(
        runaway_script(),
        FaultPlan::none(),
        8,
        "Keep checking order 4.",
        fast_retry(),
    )
    .await;
    assert_eq!(o.server.requests(), 8);
    let cx = Context {
        model_requests: Some(o.server.requests()),
        ..Context::default()
    };
    let checks = judge::judge(&s, &o.run, None, &Before::default(), &cx).await;
    let cap = check(&checks, CheckKind::StepCap);
    assert_eq!(cap.verdict, Verdict::Fail, "{}", cap.summary);
    assert!(
        cap.summary.contains("8 model replies, past the cap of 5"),
        "{}",
        cap.summary
    );

    // Without the server's count the transcript's replies are the evidence, and they agree.
    let checks = judge::judge(&s, &o.run, None, &Before::default(), &Context::default()).await;
    assert_eq!(check(&checks, CheckKind::StepCap).verdict, Verdict::Fail);
}

#[test]
fn a_scenario_above_the_cap_is_refused_before_it_runs() {
    let errs = load_str(
        &RUNAWAY.replace("max_steps: 5", "max_steps: 20"),
        "runaway.yaml",
    )
    .expect_err("max_steps 20 must be refused");
    assert!(
        errs.to_string().contains("max_steps: expected at most 12"),
        "{errs}"
    );
}
