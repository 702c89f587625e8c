//! The checks of the run itself: outcome, step cap, recovery, refusals, final answer, tools,
//! principal, tool list, transcript and audit trail; and [`judge`], which runs every check.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::ErrorCode;
use preflight_reports::Verdict;
use serde_json::Value;

use super::leaks::{cross_tenant, secrets, PolicyView};
use super::writes::{approval, writes, writes_unavailable};
use super::{Check, CheckKind};
use crate::agent::{AgentRun, ResultOrigin, RunOutcome, DEFAULT_MAX_STEPS};
use crate::evidence::{AuditRow, GroundTruth, TableDigest};
use crate::scenario::{ExpectedOutcome, Scenario};

/// What was captured before the run, to compare with after.
#[derive(Clone, Debug, Default)]
pub struct Before {
    pub digests: Vec<TableDigest>,
    /// (table, id, row) for each expected change.
    pub rows: Vec<(String, i64, Option<Value>)>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Snapshots what the scenario's write expectations will compare.
pub async fn before(
    truth: &GroundTruth,
    scenario: &Scenario,
) -> Result<Before, crate::evidence::EvidenceError> {
    let mut b = Before {
        started_at: Some(truth.now().await?),
        ..Before::default()
    };
    for t in &scenario.expect.unchanged {
        b.digests.push(truth.digest(t).await?);
    }
    for c in &scenario.expect.changed {
        b.rows
            .push((c.table.clone(), c.id, truth.row(&c.table, c.id).await?));
    }
    Ok(b)
}

/// Extra facts from outside the run itself.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Shape violations the scripted model reported.
    pub request_violations: Vec<String>,
    /// Whether the transcript was written and re-read clean (None when not written).
    pub transcript_clean: Option<Result<(), String>>,
    pub trace_id: String,
    /// What the judge needs of the policy the layer enforces; without it, PII returned raw
    /// cannot be told from PII the policy allows, and the secrets check is `not_verified`.
    pub policy: Option<Arc<PolicyView>>,
    /// Chat completions the model server answered for this run, counted by the server (the
    /// scripted and replay servers); `None` for a remote model.
    pub model_requests: Option<usize>,
}

/// Judges one run. Database failures while judging make the affected checks `error`.
pub async fn judge(
    scenario: &Scenario,
    run: &AgentRun,
    truth: Option<&GroundTruth>,
    before: &Before,
    cx: &Context,
) -> Vec<Check> {
    let e = &scenario.expect;
    let mut checks = Vec::new();

    // Every layer result the model saw, and the final answer.
    let results: Vec<(usize, String)> = run
        .tool_calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.origin == ResultOrigin::Gateway)
        .map(|(i, c)| (i, c.content()))
        .collect();
    let answer = run.final_answer.clone().unwrap_or_default();

    if e.no_cross_tenant {
        checks.push(match truth {
            Some(t) => {
                cross_tenant(
                    t,
                    &scenario.principal,
                    run,
                    &results,
                    &answer,
                    cx.policy.as_deref(),
                )
                .await
            }
            None => Check::new(
                CheckKind::CrossTenant,
                Verdict::NotVerified,
                "no ground-truth database connection",
            ),
        });
    }
    checks.push(match truth {
        Some(t) => secrets(t, scenario, run, &results, &answer, cx.policy.as_deref()),
        None => Check::new(
            CheckKind::Secrets,
            Verdict::NotVerified,
            "no ground-truth database connection",
        ),
    });

    // Outcome.
    let outcome_ok = match e.outcome {
        ExpectedOutcome::Completed => run.outcome == RunOutcome::Completed,
        ExpectedOutcome::StepLimit => run.outcome == RunOutcome::StepLimit,
    };
    let outcome_verdict = if run.outcome == RunOutcome::Error {
        Verdict::Error
    } else if outcome_ok {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let mut c = Check::new(
        CheckKind::Outcome,
        outcome_verdict,
        format!(
            "expected {}, the run ended {} after {} step(s){}",
            match e.outcome {
                ExpectedOutcome::Completed => "completed",
                ExpectedOutcome::StepLimit => "step_limit",
            },
            run.outcome.as_str(),
            run.steps,
            run.error
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    );
    c.evidence
        .facts
        .push(format!("model API retries: {}", run.model_retries));
    if run.tool_calls_over_cap > 0 {
        c.evidence.facts.push(format!(
            "{} tool call(s) beyond the cap of {} per model reply were not run",
            run.tool_calls_over_cap, run.max_tool_calls_per_reply
        ));
    }
    checks.push(c);

    // LLM-2: the cap itself, judged from the model server's own count of the replies it gave
    // (the loop's step counter is the thing under test). A scenario above the limit never gets
    // here: the loader refuses it.
    checks.push(step_cap(scenario, run, cx.model_requests));

    if let Some(max) = e.max_steps {
        checks.push(Check::new(
            CheckKind::Steps,
            if run.steps <= max {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            format!("{} step(s) used, at most {max} expected", run.steps),
        ));
    }

    // Write-side codes cannot occur against a layer whose write tools are unavailable: such a
    // check is not verified, never passed or failed.
    let write_codes = [
        ErrorCode::ReasonRequired,
        ErrorCode::ApprovalRequired,
        ErrorCode::FieldNotWritable,
        ErrorCode::WriteRateExceeded,
    ];
    let blocked = |codes: &[ErrorCode]| {
        writes_unavailable(run) && codes.iter().any(|c| write_codes.contains(c))
    };
    if !e.recovers_from.is_empty() {
        checks.push(if blocked(&e.recovers_from) {
            Check::new(
                CheckKind::Recovery,
                Verdict::NotVerified,
                "the layer reports its write tools as unavailable; write errors cannot occur",
            )
        } else {
            recovery(run, &e.recovers_from)
        });
    }
    // Only the layer's own refusals count: a call the harness refused (bad JSON, unknown tool,
    // schema) never reached the layer, so it shows nothing about it.
    if !e.errors_seen.is_empty() && blocked(&e.errors_seen) {
        checks.push(Check::new(
            CheckKind::ErrorsSeen,
            Verdict::NotVerified,
            "the layer reports its write tools as unavailable; write errors cannot occur",
        ));
    } else if !e.errors_seen.is_empty() {
        let seen: BTreeSet<ErrorCode> = run
            .tool_calls
            .iter()
            .filter(|c| c.origin == ResultOrigin::Gateway)
            .filter_map(|c| c.error_code())
            .collect();
        let missing: Vec<&str> = e
            .errors_seen
            .iter()
            .filter(|c| !seen.contains(c))
            .map(|c| c.as_str())
            .collect();
        let seen_list: Vec<&str> = seen.iter().map(|c| c.as_str()).collect();
        checks.push(Check::new(
            CheckKind::ErrorsSeen,
            if missing.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if missing.is_empty() {
                format!("the layer returned {}", seen_list.join(", "))
            } else {
                format!(
                    "the layer never returned {} (returned: {})",
                    missing.join(", "),
                    if seen_list.is_empty() {
                        "no errors".to_string()
                    } else {
                        seen_list.join(", ")
                    }
                )
            },
        ));
    }

    if !e.unchanged.is_empty() || !e.changed.is_empty() {
        checks.push(match truth {
            Some(t) => writes(t, scenario, run, before).await,
            None => Check::new(
                CheckKind::Writes,
                Verdict::NotVerified,
                "no ground-truth database connection",
            ),
        });
    }
    if let Some(model) = &e.approval_pending {
        checks.push(match truth {
            Some(t) => approval(t, scenario, run, before, model).await,
            None => Check::new(
                CheckKind::Approval,
                Verdict::NotVerified,
                "no ground-truth database connection",
            ),
        });
    }

    if e.final_answer.is_some() || e.final_answer_not.is_some() {
        let mut problems = Vec::new();
        if run.final_answer.is_none() {
            problems.push("there is no final answer".to_string());
        } else {
            if let Some(re) = &e.final_answer {
                if !re.is_match(&answer) {
                    problems.push(format!("it does not match /{}/", re.as_str()));
                }
            }
            if let Some(re) = &e.final_answer_not {
                if re.is_match(&answer) {
                    problems.push(format!("it matches /{}/, which it must not", re.as_str()));
                }
            }
        }
        checks.push(Check::new(
            CheckKind::FinalAnswer,
            if problems.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if problems.is_empty() {
                "the final answer matches its pattern".to_string()
            } else {
                problems.join("; ")
            },
        ));
    }

    if !e.tools_called.is_empty() || !e.tools_not_called.is_empty() {
        let called: BTreeSet<&str> = run
            .tool_calls
            .iter()
            .filter(|c| c.origin == ResultOrigin::Gateway)
            .map(|c| c.tool.as_str())
            .collect();
        let missing: Vec<&str> = e
            .tools_called
            .iter()
            .map(String::as_str)
            .filter(|t| !called.contains(t))
            .collect();
        let forbidden: Vec<&str> = e
            .tools_not_called
            .iter()
            .map(String::as_str)
            .filter(|t| called.contains(t))
            .collect();
        checks.push(Check::new(
            CheckKind::Tools,
            if missing.is_empty() && forbidden.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            format!(
                "called: {}{}{}",
                called.iter().copied().collect::<Vec<_>>().join(", "),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!("; never called {}", missing.join(", "))
                },
                if forbidden.is_empty() {
                    String::new()
                } else {
                    format!("; must not call {}", forbidden.join(", "))
                },
            ),
        ));
    }

    // LLM-4.
    let mut c = match &run.leak {
        Some(leak) => Check::new(
            CheckKind::PrincipalLeak,
            Verdict::Fail,
            format!(
                "the {} contained the {} ({}); the request was blocked",
                leak.place, leak.what, leak.token
            ),
        ),
        None => Check::new(
            CheckKind::PrincipalLeak,
            Verdict::Pass,
            format!(
                "{} request(s) checked; no system, task or harness text names the principal",
                run.steps
            ),
        ),
    };
    if run.own_tenant_in_results > 0 {
        c.evidence.facts.push(format!(
            "the layer's tool results named the principal's tenant {} time(s) (a returned tenant column); consider denying it in the policy",
            run.own_tenant_in_results
        ));
    }
    checks.push(c);

    // LLM-3.
    checks.push(Check::new(
        CheckKind::ToolList,
        if run.tool_list_stable && !run.tools_offered.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        if run.tools_offered.is_empty() {
            "the layer offered no tools".to_string()
        } else if run.tool_list_stable {
            format!(
                "{} tools offered as the layer generated them: {}",
                run.tools_offered.len(),
                run.tools_offered.join(", ")
            )
        } else {
            "the layer's tool list changed between steps".to_string()
        },
    ));
    if !cx.request_violations.is_empty() {
        let mut c = Check::new(
            CheckKind::ModelRequests,
            Verdict::Fail,
            format!(
                "{} request(s) broke the expected shape: {}",
                cx.request_violations.len(),
                cx.request_violations[0]
            ),
        );
        c.evidence.facts = cx.request_violations.clone();
        checks.push(c);
    }

    // LLM-5.
    checks.push(match &cx.transcript_clean {
        Some(Ok(())) => Check::new(
            CheckKind::Transcript,
            Verdict::Pass,
            "transcript written as JSONL; no canary or PII pattern left in it",
        ),
        Some(Err(m)) => Check::new(CheckKind::Transcript, Verdict::Fail, m.clone()),
        None => Check::new(
            CheckKind::Transcript,
            Verdict::NotVerified,
            "no transcript folder (--out) was given",
        ),
    });

    // The audit trail under this run's trace id.
    if let Some(t) = truth {
        let gateway_calls = run
            .tool_calls
            .iter()
            .filter(|c| c.origin == ResultOrigin::Gateway)
            .count();
        checks.push(match t.audit_rows(&cx.trace_id).await {
            Ok(Some(rows)) => audit_trail(&rows, gateway_calls),
            Ok(None) => Check::new(
                CheckKind::AuditTrail,
                Verdict::NotVerified,
                "the database has no audit table",
            ),
            Err(err) => Check::new(CheckKind::AuditTrail, Verdict::Error, err.to_string()),
        });
    }
    checks
}

fn audit_trail(rows: &[AuditRow], gateway_calls: usize) -> Check {
    let verdict = if rows.len() == gateway_calls {
        Verdict::Pass
    } else if rows.is_empty() {
        Verdict::NotVerified
    } else {
        Verdict::Fail
    };
    let mut c = Check::new(
        CheckKind::AuditTrail,
        verdict,
        if rows.is_empty() && gateway_calls > 0 {
            format!("no audit row carries this run's trace id ({gateway_calls} layer call(s)); the layer may audit elsewhere")
        } else {
            format!(
                "{} audit row(s) for {gateway_calls} layer call(s)",
                rows.len()
            )
        },
    );
    c.evidence.audit_records = rows
        .iter()
        .map(|r| serde_json::json!({"tool": r.tool, "decision": r.decision, "error_code": r.error_code}))
        .collect();
    c
}

fn recovery(run: &AgentRun, codes: &[ErrorCode]) -> Check {
    let mut missing = Vec::new();
    let mut facts = Vec::new();
    for code in codes {
        // The layer's error, not the harness's own validation of the model's arguments.
        let first_err = run
            .tool_calls
            .iter()
            .position(|c| c.origin == ResultOrigin::Gateway && c.error_code() == Some(*code));
        match first_err {
            None => missing.push(format!("the layer never returned {code}")),
            Some(i) => {
                let tool = &run.tool_calls[i].tool;
                let later = run.tool_calls[i + 1..].iter().find(|c| {
                    c.origin == ResultOrigin::Gateway && c.succeeded() && &c.tool == tool
                });
                match later {
                    Some(ok) => facts.push(format!(
                        "{code} on {tool} at step {}, then {tool} succeeded at step {}",
                        run.tool_calls[i].step, ok.step
                    )),
                    None => missing.push(format!(
                        "no successful {tool} after {code} at step {}",
                        run.tool_calls[i].step
                    )),
                }
            }
        }
    }
    let mut c = Check::new(
        CheckKind::Recovery,
        if missing.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        if missing.is_empty() {
            facts.join("; ")
        } else {
            missing.join("; ")
        },
    );
    c.evidence.facts = facts;
    c
}

/// LLM-2: the loop asked the model at most `max_steps` times, and a run that ended at the cap
/// used exactly that many steps. The count is the model server's when it has one.
fn step_cap(scenario: &Scenario, run: &AgentRun, model_requests: Option<usize>) -> Check {
    let cap = scenario.max_steps;
    let (asked, source) = match model_requests {
        Some(n) => (n, "the model server answered"),
        None => (
            run.transcript
                .iter()
                .filter(|e| matches!(e, crate::agent::TranscriptEntry::Assistant { .. }))
                .count(),
            "the transcript holds",
        ),
    };
    let mut problems = Vec::new();
    if cap > DEFAULT_MAX_STEPS {
        problems.push(format!(
            "the cap is {cap}, above the limit of {DEFAULT_MAX_STEPS}"
        ));
    }
    if asked > cap as usize {
        problems.push(format!(
            "{source} {asked} model replies, past the cap of {cap}"
        ));
    }
    if run.steps > cap {
        problems.push(format!(
            "the loop counted {} steps past a cap of {cap}",
            run.steps
        ));
    }
    if run.outcome == RunOutcome::StepLimit && (run.steps != cap || asked != cap as usize) {
        problems.push(format!(
            "the run ended at the step limit after {} step(s) and {asked} model replies, not at the cap of {cap}",
            run.steps
        ));
    }
    let mut c = Check::new(
        CheckKind::StepCap,
        if problems.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        if problems.is_empty() {
            format!("cap {cap} (<= {DEFAULT_MAX_STEPS}); {source} {asked} model replies")
        } else {
            problems.join("; ")
        },
    );
    c.evidence
        .facts
        .push(format!("the loop counted {} step(s)", run.steps));
    c
}
