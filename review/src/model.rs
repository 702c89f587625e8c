//! The review as data: what `review.json` holds and the Markdown and HTML renderers read.
//!
//! The main type is [`Review`]. Each section is a struct named after its checklist item; a
//! section that could not be computed says why instead of being left empty.

use std::collections::BTreeMap;

use serde::Serialize;

/// The whole review of one audit log over one window.
#[derive(Clone, Debug, Serialize)]
pub struct Review {
    /// `jsonl:<path>` or `postgres`.
    pub source: String,
    pub window: Window,
    pub chain: ChainStatus,
    /// `None` when the chain does not verify: a broken log is never reviewed as if sound.
    pub sections: Option<Sections>,
    /// What needs a person's attention; the command exits 1 when this is not empty.
    pub attention: Vec<String>,
}

impl Review {
    pub fn needs_attention(&self) -> bool {
        !self.attention.is_empty()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub from: String,
    pub to: String,
    /// How the window was given (`90d`, a date).
    pub since: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChainStatus {
    pub verified: bool,
    pub records: u64,
    /// The first broken link, in words, when the chain does not verify.
    pub first_break: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sections {
    /// Records in the window, by decision.
    pub records: u64,
    pub decisions: BTreeMap<String, u64>,
    pub qrt2_denials: Denials,
    pub qrt3_latency: Latency,
    pub qrt4_reasons: Reasons,
    pub qrt5_suite: Suite,
    pub qrt1_capabilities: Capabilities,
    pub ops8_alerts: Vec<Alert>,
    pub drift: Drift,
    pub charts: Charts,
}

/// QRT-2: the most common denials.
#[derive(Clone, Debug, Serialize)]
pub struct Denials {
    pub total: u64,
    pub top: Vec<DenialGroup>,
    pub by_code: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DenialGroup {
    pub code: String,
    pub tool: String,
    pub model: String,
    /// The field the denial concerned, read from the arguments against the policy; `-` when
    /// the code concerns no field or it cannot be told.
    pub field: String,
    pub count: u64,
    pub principals: u64,
    /// The principal (`tenant/user`) with the most of these denials, and its count.
    pub top_principal: String,
    pub top_principal_count: u64,
    /// `concentrated`, `spread` or `mixed`.
    pub pattern: String,
    /// The reading in words.
    pub verdict: String,
}

/// QRT-3: the longest-running calls.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub by_tool: Vec<LatencyRow>,
    pub by_tool_model: Vec<LatencyRow>,
    pub slowest: Vec<SlowCall>,
    /// Tools slower than expected for what they do, with why.
    pub flagged: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub tool: String,
    /// Empty in the per-tool table.
    pub model: String,
    pub calls: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SlowCall {
    pub id: i64,
    pub at: String,
    pub tool: String,
    pub principal: String,
    pub duration_ms: f64,
    /// As the layer recorded them (sanitized by field policy and value patterns, AUD-7),
    /// shortened.
    pub arguments: String,
}

/// QRT-4: every write and its reason.
#[derive(Clone, Debug, Serialize)]
pub struct Reasons {
    pub writes: u64,
    pub coherent: u64,
    /// Writes failing at least one rule, per rule.
    pub by_rule: BTreeMap<String, u64>,
    pub failing: Vec<WriteCheck>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WriteCheck {
    pub id: i64,
    pub at: String,
    pub principal: String,
    pub tool: String,
    pub model: String,
    pub entity: String,
    pub reason: Option<String>,
    pub rules: Vec<String>,
}

/// QRT-5: the policy's regression suite.
#[derive(Clone, Debug, Serialize)]
pub struct Suite {
    /// `passed`, `failed` or `not_run`.
    pub status: String,
    pub detail: String,
    pub passed: u64,
    pub failed: u64,
    pub failures: Vec<String>,
}

/// QRT-1: the policy's capabilities, for a person to re-read and sign.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    pub policy: Option<String>,
    pub policy_hash: Option<String>,
    pub lines: Vec<String>,
    pub sign_off: String,
}

/// OPS-8: one alert condition, evaluated hour by hour over the window.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub name: String,
    pub condition: String,
    pub fired: Vec<Fired>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fired {
    pub from: String,
    pub to: String,
    /// What was measured (e.g. `412 denials in the hour`).
    pub value: String,
}

/// Policy hashes seen in the window and what changed between them.
#[derive(Clone, Debug, Serialize)]
pub struct Drift {
    pub hashes: Vec<HashSeen>,
    pub changes: Vec<DriftStep>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HashSeen {
    pub hash: String,
    pub first: String,
    pub last: String,
    pub records: u64,
    /// The policy file it belongs to, when one was given.
    pub policy: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DriftStep {
    pub from_hash: String,
    pub to_hash: String,
    pub at: String,
    /// The capability changes, when both policies are known.
    pub changes: Option<Vec<preflight_enforcer::policy::Change>>,
    pub note: String,
}

/// Series the HTML charts draw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Charts {
    /// Days of the window, `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// Denials per day, per code.
    pub denials_per_day: BTreeMap<String, Vec<u64>>,
    pub writes_per_day: Vec<u64>,
}
