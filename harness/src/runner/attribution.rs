//! Whose failure a failed check is, read from the evidence of the attempt: the layer's (it leaked,
//! let through a write it should have refused, never refused what it must, lost an audit record),
//! the agent's (it gave up, hit the step cap, answered wrongly, never made the call) or the
//! harness's (the model API, the loop, the judge or the database it reads could not do its part).

use preflight_reports::Verdict;
use serde_json::Value;

use crate::agent::{AgentRun, ResultOrigin, RunOutcome, ToolCallLog};
use crate::judge::{Check, CheckKind};
use crate::scenario::Scenario;

/// Whose failure a failed check is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The enforcement layer did not hold.
    Layer,
    /// The model did not do its part (the layer held).
    Agent,
    /// The harness or its infrastructure (model API, database reads) failed; nothing was learnt
    /// about the layer or the agent.
    Harness,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Layer => "layer",
            FailureKind::Agent => "agent",
            FailureKind::Harness => "harness",
        }
    }

    /// The evidence fact a finding carries (`failure kind: layer`); the report's headline reads it.
    pub fn fact(self, why: &str) -> String {
        format!(
            "{}{}: {why}",
            preflight_reports::FAILURE_KIND_FACT,
            self.as_str()
        )
    }
}

/// Whose failure `check` is, with the reason; `None` unless the check failed or errored.
pub fn attribute(
    scenario: &Scenario,
    run: &AgentRun,
    check: &Check,
) -> Option<(FailureKind, &'static str)> {
    use FailureKind::*;
    match check.verdict {
        Verdict::Pass | Verdict::NotVerified => return None,
        // A check that could not be judged (the model API failed past its retries, ground truth
        // could not be read, a transcript could not be written): nothing about the layer.
        Verdict::Error => return Some((Harness, "the harness could not judge this check")),
        Verdict::Fail => {}
    }
    let layer_calls: Vec<&ToolCallLog> = run
        .tool_calls
        .iter()
        .filter(|c| c.origin == ResultOrigin::Gateway)
        .collect();
    let returned = |code| {
        layer_calls
            .iter()
            .any(|c| c.error.as_ref().is_some_and(|e| e.code == code))
    };
    Some(match check.kind {
        CheckKind::CrossTenant => (Layer, "the layer returned another tenant's data"),
        CheckKind::Secrets => (Layer, "the layer returned a secret or a hidden value"),
        CheckKind::AuditTrail => (Layer, "the layer's audit log does not match its calls"),
        CheckKind::ToolList if !run.tool_list_stable => {
            (Layer, "the layer's tool list changed during the run")
        }
        CheckKind::ToolList => (Harness, "the model was not offered the layer's tool list"),
        CheckKind::PrincipalLeak | CheckKind::Outcome
            if run.outcome == RunOutcome::PrincipalLeak =>
        {
            match run.leak.as_ref().map(|l| l.place.as_str()) {
                Some("tool list") => (Layer, "the layer's tool list names the principal"),
                _ => (
                    Harness,
                    "the harness's own prompt or results name the principal",
                ),
            }
        }
        CheckKind::PrincipalLeak => (Harness, "a request to the model named the principal"),
        CheckKind::Outcome if run.outcome == RunOutcome::Error => {
            (Harness, "the model API failed past its retries")
        }
        CheckKind::Outcome => (Agent, "the agent did not end the run as expected"),
        CheckKind::StepCap => (Harness, "the loop did not stop at the step cap"),
        CheckKind::ModelRequests => (Harness, "a request to the model had the wrong shape"),
        CheckKind::Transcript => (Harness, "the transcript was not written clean"),
        CheckKind::Steps | CheckKind::FinalAnswer | CheckKind::Tools => {
            (Agent, "the agent did not do what the task asked")
        }
        CheckKind::ErrorsSeen | CheckKind::Recovery if layer_calls.is_empty() => {
            (Agent, "the agent never called the layer")
        }
        CheckKind::ErrorsSeen => (Layer, "the layer never refused what it must"),
        CheckKind::Recovery => {
            if scenario.expect.recovers_from.iter().all(|c| returned(*c)) {
                (
                    Agent,
                    "the layer refused as it must; the agent did not recover",
                )
            } else {
                (
                    Layer,
                    "the layer never returned the refusal the agent must recover from",
                )
            }
        }
        CheckKind::Approval => {
            let model = scenario.expect.approval_pending.as_deref().unwrap_or("");
            if layer_calls.iter().any(|c| names_model(c, model)) {
                (
                    Layer,
                    "the layer took the write without leaving it pending approval",
                )
            } else {
                (Agent, "the agent never asked the layer for the write")
            }
        }
        CheckKind::Writes => {
            let unchanged_broken = scenario
                .expect
                .unchanged
                .iter()
                .any(|t| check.summary.contains(&format!("{t} changed (")));
            if unchanged_broken {
                (
                    Layer,
                    "a write the layer should have refused reached the database",
                )
            } else if scenario
                .expect
                .changed
                .iter()
                .any(|change| layer_calls.iter().any(|c| acknowledged(c, change)))
            {
                (
                    Layer,
                    "the layer acknowledged the write, the database does not hold it",
                )
            } else {
                (Agent, "the agent did not make the expected write")
            }
        }
    })
}

fn names_model(call: &ToolCallLog, model: &str) -> bool {
    call.arguments.get("model").and_then(Value::as_str) == Some(model)
}

/// The layer answered success to a write of exactly the expected values on the expected row.
fn acknowledged(call: &ToolCallLog, change: &crate::scenario::RowChange) -> bool {
    call.error.is_none()
        && names_model(call, &change.table)
        && call.arguments.get("id").and_then(Value::as_i64) == Some(change.id)
        && change.fields.iter().all(|(field, want)| {
            call.arguments
                .get("data")
                .and_then(|d| d.get(field))
                .is_some_and(|got| got == want)
        })
}
