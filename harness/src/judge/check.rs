//! The harness's check kinds (stable finding codes, their titles and checklist items) and one
//! judged expectation, [`Check`].

use preflight_reports::{Evidence, Verdict};

/// The stable codes of the harness's checks (finding codes; also SARIF rule ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    CrossTenant,
    Secrets,
    Outcome,
    StepCap,
    Steps,
    Recovery,
    ErrorsSeen,
    Writes,
    Approval,
    FinalAnswer,
    Tools,
    PrincipalLeak,
    ToolList,
    Transcript,
    AuditTrail,
    ModelRequests,
}

impl CheckKind {
    pub const ALL: [CheckKind; 16] = [
        CheckKind::CrossTenant,
        CheckKind::Secrets,
        CheckKind::Outcome,
        CheckKind::StepCap,
        CheckKind::Steps,
        CheckKind::Recovery,
        CheckKind::ErrorsSeen,
        CheckKind::Writes,
        CheckKind::Approval,
        CheckKind::FinalAnswer,
        CheckKind::Tools,
        CheckKind::PrincipalLeak,
        CheckKind::ToolList,
        CheckKind::Transcript,
        CheckKind::AuditTrail,
        CheckKind::ModelRequests,
    ];

    pub fn code(self) -> &'static str {
        match self {
            CheckKind::CrossTenant => "agent.cross_tenant",
            CheckKind::Secrets => "agent.secrets",
            CheckKind::Outcome => "agent.outcome",
            CheckKind::StepCap => "agent.step_cap",
            CheckKind::Steps => "agent.steps",
            CheckKind::Recovery => "agent.recovery",
            CheckKind::ErrorsSeen => "agent.errors_seen",
            CheckKind::Writes => "agent.writes",
            CheckKind::Approval => "agent.approval",
            CheckKind::FinalAnswer => "agent.final_answer",
            CheckKind::Tools => "agent.tools",
            CheckKind::PrincipalLeak => "agent.principal_leak",
            CheckKind::ToolList => "agent.tool_list",
            CheckKind::Transcript => "agent.transcript",
            CheckKind::AuditTrail => "agent.audit_trail",
            CheckKind::ModelRequests => "agent.model_requests",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            CheckKind::CrossTenant => {
                "no other tenant's rows or canaries reach the model or the answer"
            }
            CheckKind::Secrets => "no secret or hidden value reaches the model or the answer",
            CheckKind::Outcome => "the run ends as expected",
            CheckKind::StepCap => "the step cap is at most 12 and stops the loop",
            CheckKind::Steps => "the agent stays within its step budget",
            CheckKind::Recovery => "the agent recovers from structured errors",
            CheckKind::ErrorsSeen => "the layer refuses what it must",
            CheckKind::Writes => "the agent makes exactly the writes it should",
            CheckKind::Approval => "the gated write is left pending approval",
            CheckKind::FinalAnswer => "the final answer says what it should",
            CheckKind::Tools => "the agent calls the tools it should",
            CheckKind::PrincipalLeak => "the model is never told who it acts for",
            CheckKind::ToolList => "the model gets the layer's own tool list, unedited",
            CheckKind::Transcript => "the transcript is logged apart and scrubbed",
            CheckKind::AuditTrail => "every call of the run is in the audit log under its trace id",
            CheckKind::ModelRequests => "every request to the model has the expected shape",
        }
    }

    pub fn checklist(self) -> &'static [&'static str] {
        match self {
            CheckKind::CrossTenant => &["ISO-1", "ISO-3"],
            CheckKind::Secrets => &["RED-1", "RED-2", "RED-5"],
            CheckKind::Outcome => &["LLM-1"],
            CheckKind::StepCap => &["LLM-2"],
            CheckKind::Steps => &["LLM-2"],
            CheckKind::Recovery => &["LLM-1", "BUD-7"],
            CheckKind::ErrorsSeen => &["BUD-7"],
            CheckKind::Writes => &["WRT-1", "WRT-2"],
            CheckKind::Approval => &["WRT-3", "PRE-5"],
            CheckKind::FinalAnswer => &["LLM-1"],
            CheckKind::Tools => &["LLM-3"],
            CheckKind::PrincipalLeak => &["LLM-4", "ISO-1"],
            CheckKind::ToolList => &["LLM-3"],
            CheckKind::Transcript => &["LLM-5"],
            CheckKind::AuditTrail => &["AUD-3", "PRE-6"],
            CheckKind::ModelRequests => &["LLM-3"],
        }
    }
}

/// One judged expectation of one run.
#[derive(Clone, Debug)]
pub struct Check {
    pub kind: CheckKind,
    pub verdict: Verdict,
    /// What was observed, one line.
    pub summary: String,
    pub evidence: Evidence,
}

impl Check {
    pub(crate) fn new(kind: CheckKind, verdict: Verdict, summary: impl Into<String>) -> Self {
        let summary = summary.into();
        Self {
            kind,
            verdict,
            evidence: Evidence {
                summary: summary.clone(),
                ..Evidence::default()
            },
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn codes_unique() {
        let mut seen = BTreeSet::new();
        for k in CheckKind::ALL {
            assert!(seen.insert(k.code()), "{}", k.code());
            assert!(!k.checklist().is_empty());
        }
    }
}
