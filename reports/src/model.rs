//! The report model: findings with evidence, the run's environment, and the event stream the
//! runner emits. Renderers read only these types.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bumped whenever `report.json` changes shape incompatibly.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A probe's verdict. Only `Pass` is a pass: CI fails on every other variant unless told otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The probe could not run (database gone, layer unreachable, unexpected response).
    Error,
    /// Skipped or unsupported; never shown as a pass.
    NotVerified,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Error,
        Verdict::NotVerified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::NotVerified => "not_verified",
        }
    }

    pub fn is_pass(self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The tool call a probe made (arguments already free of secrets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub tool: String,
    pub tenant: String,
    pub user: String,
    pub arguments: serde_json::Value,
    pub trace_id: String,
}

/// What the verdict rests on. Canary values appear only masked (first 4 characters).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// One-line human statement of what was observed.
    pub summary: String,
    /// Rows from the ground-truth connection (owner), redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<serde_json::Value>,
    /// Audit records involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_records: Vec<serde_json::Value>,
    /// SQL the probe ran against ground truth (identifiers only; no values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sql: Vec<String>,
    /// Catalog facts, e.g. `customers: relrowsecurity=true relforcerowsecurity=false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<String>,
    /// Leaked canaries, masked, with where they belong (`acme.customers.ssn#3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<String>,
}

/// Where in the policy file the finding is governed (for SARIF and PR annotations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// One probe's result: data, never an `Err`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable probe code, e.g. `cross_tenant.get_by_foreign_id`; also the SARIF rule id.
    pub code: String,
    /// Family, e.g. `cross_tenant`, `pii`, `budget`, `write`, `approval`, `audit`, `hygiene`,
    /// `lint`, `agent`.
    pub family: String,
    /// Human title of this instance, e.g. `db_get on customers with a globex id`.
    pub title: String,
    /// Checklist ids this finding proves or breaks (`ISO-3`, `PRE-1`).
    pub checklist: Vec<String>,
    pub severity: Severity,
    pub verdict: Verdict,
    /// What a reader should do; for failures, the fix.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<ToolCallRecord>,
    /// A redacted excerpt of the response (at most a few hundred characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    pub evidence: Evidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Stable across runs for the same probe on the same target: sha256 of code, family, title.
    pub fingerprint: String,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

impl Finding {
    /// The fingerprint every finding uses: first 16 hex chars of sha256(code \x1f title).
    pub fn fingerprint_for(code: &str, title: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(code.as_bytes());
        h.update([0x1f]);
        h.update(title.as_bytes());
        hex::encode(&h.finalize()[..8])
    }
}

/// Where and against what the run happened. Contains no credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunEnvironment {
    pub preflight_version: String,
    pub policy_path: String,
    pub policy_hash: String,
    pub fixtures_hash: String,
    /// `container (image ...)`, `local (/usr/lib/postgresql/15/bin)`, `url (host redacted)`.
    pub database_backend: String,
    /// Why this backend was chosen (for `--db auto`).
    pub backend_reason: String,
    pub server_version: String,
    /// The enforcement layer probed, e.g. `builtin`.
    pub target: String,
    pub started_at: String,
    /// Families that were selected but do not apply to this target, each with the reason
    /// (`sql: the target offers no SQL tool ...`). They produce no findings and verify no
    /// checklist item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applicable: Vec<String>,
}

/// A finished run: what every renderer takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub kind: ReportKind,
    pub environment: RunEnvironment,
    pub findings: Vec<Finding>,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Tool calls that reached the enforcement layer during the run (the agent harness does not
    /// count calls it refused itself, such as unparsable arguments: the layer never saw them).
    pub tool_calls: u64,
    /// How long the probes themselves ran (without starting the database and writing the
    /// report): what tool calls per second are measured over. Zero when not measured.
    #[serde(with = "duration_ms", default)]
    pub probe_duration: Duration,
    /// Why checklist items that no finding of this run could verify were not verified, when
    /// the run knows (a phase that did not run, a claim only a served layer can show). Shown
    /// on the checklist page; never a verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<ItemNote>,
    /// Agent reports: every attempt's transcript and judged checks, shown in the HTML report.
    /// Canary values in it are already masked by the harness (`[canary: ACME…]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
}

/// Why one checklist item was not verified on this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemNote {
    /// The checklist id (`OPS-4`).
    pub item: String,
    /// One sentence: why, and what run would verify it.
    pub note: String,
}

impl ItemNote {
    pub fn new(item: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            item: item.into(),
            note: note.into(),
        }
    }
}

/// One attempt of one agent scenario: its transcript and the checks that decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub scenario: String,
    pub attempt: u32,
    pub verdict: Verdict,
    /// ISO 8601, UTC.
    pub started_at: String,
    pub trace_id: String,
    /// `completed`, `step_limit`, `error`, `principal_leak`.
    pub outcome: String,
    pub turns: Vec<TranscriptTurn>,
    pub checks: Vec<AttemptCheck>,
}

/// One message of a transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptTurn {
    /// `system`, `user`, `assistant`, `tool call`, `tool result`, `model retry`, `model error`,
    /// `outcome`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// A tool's name, with the error code of a refused call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    pub text: String,
}

/// One judged check of an attempt, with the evidence that decided it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptCheck {
    pub code: String,
    pub verdict: Verdict,
    pub summary: String,
    /// `layer`, `agent` or `harness` for a check that did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Probe,
    Agent,
    SelfTest,
}

impl Report {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// Tool calls per second while the probes ran (over the whole run when that was not
    /// measured); `None` without calls or time to divide by.
    pub fn tool_calls_per_second(&self) -> Option<f64> {
        let over = if self.probe_duration.is_zero() {
            self.duration
        } else {
            self.probe_duration
        };
        (self.tool_calls > 0 && !over.is_zero())
            .then(|| self.tool_calls as f64 / over.as_secs_f64())
    }

    /// True only when every finding passed (and there is at least one).
    pub fn all_passed(&self) -> bool {
        !self.findings.is_empty() && self.findings.iter().all(|f| f.verdict.is_pass())
    }
}

/// What the runner emits while it works; reporters consume events and never call back.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    pub elapsed: Duration,
    pub kind: ProbeEventKind,
}

#[derive(Clone, Debug)]
pub enum ProbeEventKind {
    RunStarted {
        environment: Box<RunEnvironment>,
        planned: Vec<(String, usize)>,
    },
    FamilyStarted {
        family: String,
        probes: usize,
    },
    ProbeFinished {
        finding: Box<Finding>,
    },
    FamilyFinished {
        family: String,
    },
    RunFinished {
        tool_calls: u64,
    },
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
