//! Attempts as the HTML report shows them: each attempt's transcript (turns, tool calls,
//! results) and its checks with whose failure each was and the evidence that decided it, canary
//! values masked to four characters and marked (`[canary: ACME…]`), other PII scrubbed as in the
//! transcript files.

use preflight_reports::{AttemptCheck, AttemptRecord, TranscriptTurn};

use super::attribution::attribute;
use super::{RunPlan, RunResult};
use crate::agent::{ResultOrigin, TranscriptEntry};
use crate::evidence::GroundTruth;
use crate::transcript::Scrubber;

/// One record per attempt, in the results' order.
pub fn attempt_records(
    plan: &RunPlan,
    results: &[RunResult],
    truth: Option<&GroundTruth>,
) -> Vec<AttemptRecord> {
    let scrubber = Scrubber::new(truth.map(|t| t.canaries.as_slice()).unwrap_or(&[]));
    let s = |t: &str| scrubber.scrub_marked(t);
    results
        .iter()
        .map(|r| {
            let scenario = plan.scenarios.iter().find(|x| x.name == r.scenario);
            let checks = r
                .checks
                .iter()
                .map(|c| {
                    let blame = scenario.and_then(|sc| attribute(sc, &r.run, c));
                    let mut evidence: Vec<String> = Vec::new();
                    if let Some((_, why)) = blame {
                        evidence.push(format!("why: {why}"));
                    }
                    evidence.extend(c.evidence.facts.iter().map(|f| s(f)));
                    evidence.extend(c.evidence.leaks.iter().map(|l| format!("leaked: {l}")));
                    evidence.extend(
                        c.evidence
                            .rows
                            .iter()
                            .map(|v| format!("row: {}", s(&v.to_string()))),
                    );
                    evidence.extend(
                        c.evidence
                            .audit_records
                            .iter()
                            .map(|v| format!("audit: {}", s(&v.to_string()))),
                    );
                    AttemptCheck {
                        code: c.kind.code().to_string(),
                        verdict: c.verdict,
                        summary: s(&c.summary),
                        failure_kind: blame.map(|(k, _)| k.as_str().to_string()),
                        evidence,
                    }
                })
                .collect();
            AttemptRecord {
                scenario: r.scenario.clone(),
                attempt: r.repeat,
                verdict: r.verdict,
                started_at: r
                    .started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                trace_id: r.trace_id.clone(),
                outcome: r.run.outcome.as_str().to_string(),
                turns: r
                    .run
                    .transcript
                    .iter()
                    .map(|e| match e {
                        // The same in every attempt: named, not repeated 1,000 times.
                        TranscriptEntry::System { text } if *text == plan.settings.system_prompt => {
                            TranscriptTurn {
                                role: "system".into(),
                                step: None,
                                label: String::new(),
                                text: format!(
                                    "(the run's system prompt, {} characters: see the agent.system_prompt finding)",
                                    text.chars().count()
                                ),
                            }
                        }
                        e => turn(e, &s),
                    })
                    .collect(),
                checks,
            }
        })
        .collect()
}

fn turn(e: &TranscriptEntry, s: &dyn Fn(&str) -> String) -> TranscriptTurn {
    let t = |role: &str, step: Option<u32>, label: String, text: String| TranscriptTurn {
        role: role.to_string(),
        step,
        label,
        text,
    };
    match e {
        TranscriptEntry::System { text } => t("system", None, String::new(), s(text)),
        TranscriptEntry::User { text } => t("user", None, String::new(), s(text)),
        TranscriptEntry::Assistant {
            step,
            content,
            tool_calls,
        } => {
            let mut text = content.as_deref().map(s).unwrap_or_default();
            for c in tool_calls {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("→ {}({})", c.name, s(&c.arguments)));
            }
            t("assistant", Some(*step), String::new(), text)
        }
        TranscriptEntry::ToolResult {
            step,
            tool,
            origin,
            error_code,
            content,
            ..
        } => {
            let mut label = tool.clone();
            if let Some(code) = error_code {
                label.push_str(&format!(" · error {}", code.as_str()));
            }
            if *origin == ResultOrigin::Harness {
                label.push_str(" · refused by the harness, never reached the layer");
            }
            t("tool result", Some(*step), label, s(content))
        }
        TranscriptEntry::ModelRetry { step, attempt } => t(
            "model retry",
            Some(*step),
            attempt.fault.clone(),
            s(&attempt.detail),
        ),
        TranscriptEntry::ModelError { step, message } => {
            t("model error", Some(*step), String::new(), s(message))
        }
        TranscriptEntry::PrincipalLeak { step, leak } => t(
            "principal leak",
            Some(*step),
            leak.place.clone(),
            format!("{} {} — request not sent", leak.what, leak.token),
        ),
        TranscriptEntry::StepLimit { steps } => t(
            "step limit",
            None,
            String::new(),
            format!("the step cap stopped the loop after {steps} step(s)"),
        ),
    }
}
