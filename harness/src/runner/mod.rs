//! Running scenarios: each scenario `repeat` times, `jobs` at a time, with a model provider,
//! against one `Gateway`, judged against ground truth; [`execute`] emits [`AgentEvent`]s while it
//! works and returns [`RunResult`]s, which [`findings`] aggregates into report findings with
//! pass@k and pass^k per scenario.
//!
//! Attempts are isolated (see `docs/agent.md`, "Isolated attempts"): each attempt gets its own
//! layer instance from [`AttemptLayers`] (its own budget, rate-limit and quota state), and
//! scenarios that check writes or approvals run alone (a write lock over the database) with the
//! rows they change put back from the ground-truth snapshot taken before the attempt, so every
//! attempt starts from the loaded fixtures whatever ran before it or beside it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use preflight_enforcer::{CallContext, Gateway};
use preflight_reports::{Evidence, Verdict};

use crate::agent::{run_agent, AgentRun, AgentSettings, RunOutcome};
use crate::cassette::{Cassette, Recorder};
use crate::client::{ChatClient, Endpoint, RetryPolicy};
use crate::evidence::GroundTruth;
use crate::guard::PrincipalGuard;
use crate::judge::{self, Check, CheckKind, PolicyView};
use crate::providers::{ReplayServer, ScriptedOptions, ScriptedServer};
use crate::scenario::Scenario;
use crate::transcript::{self, Scrubber};

/// Where model replies come from.
#[derive(Clone)]
pub enum Provider {
    /// Each scenario's own script, served over loopback HTTP.
    Scripted,
    /// A recorded cassette, served over loopback HTTP; a miss ends the run as `error`.
    Replay(Arc<Cassette>),
    /// A real OpenAI-compatible server.
    OpenAi(Endpoint),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Scripted => "scripted",
            Provider::Replay(_) => "replay",
            Provider::OpenAi(_) => "openai",
        }
    }
}

/// When a scenario's attempts add up to a pass (the run's verdict rule, stated in the report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Require {
    /// Every attempt passed (pass^k). The default.
    All,
    /// At least one attempt passed (pass@k).
    Any,
    /// The 95% Wilson lower bound of the per-attempt pass rate is at least `per_mille` / 1000.
    MinRate { per_mille: u16 },
}

impl std::str::FromStr for Require {
    type Err = String;

    /// `all`, `any`, or `rate=P` with P in (0, 1].
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Require::All),
            "any" => Ok(Require::Any),
            _ => {
                let p = s
                    .strip_prefix("rate=")
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|p| *p > 0.0 && *p <= 1.0)
                    .ok_or_else(|| {
                        format!("expected `all`, `any` or `rate=P` with 0 < P <= 1, got {s:?}")
                    })?;
                Ok(Require::MinRate {
                    per_mille: (p * 1000.0).round() as u16,
                })
            }
        }
    }
}

/// A validated plan.
#[derive(Clone)]
pub struct RunPlan {
    pub scenarios: Vec<Scenario>,
    pub repeat: u32,
    pub jobs: usize,
    pub provider: Provider,
    /// Model name, system prompt and sampling; `max_steps` comes from each scenario.
    pub settings: AgentSettings,
    pub retry: RetryPolicy,
    pub recorder: Option<Arc<Recorder>>,
    pub transcripts_dir: Option<PathBuf>,
    pub require: Require,
    /// The policy the layer enforces, as the judge reads it (hidden fields, relations); without
    /// it the secrets check cannot judge PII and says so.
    pub policy: Option<Arc<PolicyView>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("scenario `{name}` ({path}) has no script; the scripted provider needs one (use --provider openai or replay)")]
    NoScript { name: String, path: String },
    #[error("--repeat must be at least 1")]
    Repeat,
    #[error("--jobs must be at least 1")]
    Jobs,
}

impl RunPlan {
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.repeat == 0 {
            return Err(PlanError::Repeat);
        }
        if self.jobs == 0 {
            return Err(PlanError::Jobs);
        }
        if matches!(self.provider, Provider::Scripted) {
            if let Some(s) = self.scenarios.iter().find(|s| s.script.is_none()) {
                return Err(PlanError::NoScript {
                    name: s.name.clone(),
                    path: s.path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What the runner reports while it works; consumers never call back.
#[derive(Clone, Debug)]
pub enum AgentEvent {
    Started {
        runs: usize,
        scenarios: usize,
    },
    RunFinished {
        done: usize,
        runs: usize,
        scenario: String,
        repeat: u32,
        verdict: Verdict,
        outcome: RunOutcome,
        steps: u32,
        elapsed: Duration,
        /// The first non-pass check's summary.
        note: Option<String>,
    },
}

/// Where each attempt's enforcement layer comes from.
#[async_trait::async_trait]
pub trait AttemptLayers: Send + Sync {
    /// The layer one attempt talks to.
    async fn layer(&self) -> Result<Arc<dyn Gateway>, String>;

    /// Whether every [`layer`](AttemptLayers::layer) call returns a fresh instance with its own
    /// in-memory state. `false` for a layer reached by URL: the report then says attempts share
    /// it.
    fn isolated(&self) -> bool;

    /// Called once the attempt is judged, with the layer it used (a stdio layer's process ends).
    async fn release(&self, _layer: Arc<dyn Gateway>) {}
}

/// One layer instance shared by every attempt (the entry point's old behaviour, kept for callers
/// that hold a single gateway; attempts are then not isolated at the layer).
pub struct SharedLayer(pub Arc<dyn Gateway>);

#[async_trait::async_trait]
impl AttemptLayers for SharedLayer {
    async fn layer(&self) -> Result<Arc<dyn Gateway>, String> {
        Ok(self.0.clone())
    }

    fn isolated(&self) -> bool {
        false
    }
}

/// One run of one scenario.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub scenario: String,
    pub repeat: u32,
    pub trace_id: String,
    pub run: AgentRun,
    pub checks: Vec<Check>,
    pub verdict: Verdict,
    pub transcript: Option<PathBuf>,
    /// What isolating this attempt cost: starting its layer instance and putting back the rows it
    /// changed.
    pub isolation: Duration,
    /// When the attempt started (UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// The current UTC time in ISO 8601 (RFC 3339), to the second: `2026-12-06T07:32:01Z`.
pub fn now_iso8601() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Fail beats error beats not verified beats pass.
pub fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let rank = |v: Verdict| match v {
        Verdict::Pass => 0,
        Verdict::NotVerified => 1,
        Verdict::Error => 2,
        Verdict::Fail => 3,
    };
    verdicts
        .into_iter()
        .max_by_key(|v| rank(*v))
        .unwrap_or(Verdict::NotVerified)
}

/// Runs the plan with every attempt on the one `gateway` (not isolated at the layer; see
/// [`execute_with`]). Failures of single runs are results, never `Err`.
pub async fn execute(
    plan: &RunPlan,
    gateway: Arc<dyn Gateway>,
    truth: Option<GroundTruth>,
    on_event: &(dyn Fn(AgentEvent) + Send + Sync),
) -> Vec<RunResult> {
    execute_with(plan, Arc::new(SharedLayer(gateway)), truth, on_event).await
}

/// Runs the plan, each attempt on a layer from `layers`. Failures of single runs are results,
/// never `Err`.
pub async fn execute_with(
    plan: &RunPlan,
    layers: Arc<dyn AttemptLayers>,
    truth: Option<GroundTruth>,
    on_event: &(dyn Fn(AgentEvent) + Send + Sync),
) -> Vec<RunResult> {
    let runs: Vec<(usize, u32)> = (0..plan.scenarios.len())
        .flat_map(|i| (1..=plan.repeat).map(move |r| (i, r)))
        .collect();
    let total = runs.len();
    on_event(AgentEvent::Started {
        runs: total,
        scenarios: plan.scenarios.len(),
    });
    let db_lock = Arc::new(tokio::sync::RwLock::new(()));
    let scrubber = Arc::new(Scrubber::new(
        truth.as_ref().map(|t| t.canaries.as_slice()).unwrap_or(&[]),
    ));
    // One replay server serves every run; scripted servers are per run (each has its script).
    // Cassettes never hold a canary: recorded exchanges are scrubbed, and replayed requests are
    // scrubbed the same way before they are matched.
    let canaries = Arc::new(Scrubber::canaries_only(
        truth.as_ref().map(|t| t.canaries.as_slice()).unwrap_or(&[]),
    ));
    if let Some(r) = &plan.recorder {
        r.scrub_canaries(canaries.clone());
    }
    let replay = match &plan.provider {
        Provider::Replay(c) => {
            match ReplayServer::start_scrubbed((**c).clone(), Some(canaries)).await {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::error!("cannot start the replay server: {e}");
                    None
                }
            }
        }
        Provider::Scripted | Provider::OpenAi(_) => None,
    };
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut results: Vec<RunResult> = futures::stream::iter(runs)
        .map(|(i, repeat)| {
            let scenario = &plan.scenarios[i];
            let layers = layers.clone();
            let truth = truth.clone();
            let db_lock = db_lock.clone();
            let scrubber = scrubber.clone();
            let replay = replay.clone();
            let done = done.clone();
            async move {
                let started = Instant::now();
                let attempt = Attempt {
                    plan,
                    scenario,
                    repeat,
                    layers: layers.as_ref(),
                    truth: truth.as_ref(),
                    scrubber: &scrubber,
                    replay: replay.as_deref(),
                };
                let result = if scenario.touches_writes() {
                    let _g = db_lock.write().await;
                    attempt.run().await
                } else {
                    let _g = db_lock.read().await;
                    attempt.run().await
                };
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                on_event(AgentEvent::RunFinished {
                    done: n,
                    runs: total,
                    scenario: scenario.name.clone(),
                    repeat,
                    verdict: result.verdict,
                    outcome: result.run.outcome,
                    steps: result.run.steps,
                    elapsed: started.elapsed(),
                    note: result
                        .checks
                        .iter()
                        .find(|c| c.verdict != Verdict::Pass)
                        .map(|c| format!("{}: {}", c.kind.code(), c.summary)),
                });
                result
            }
        })
        .buffer_unordered(plan.jobs.max(1))
        .collect()
        .await;
    results.sort_by(|a, b| (a.scenario.as_str(), a.repeat).cmp(&(b.scenario.as_str(), b.repeat)));
    results
}

/// One attempt of one scenario, with what it needs.
struct Attempt<'a> {
    plan: &'a RunPlan,
    scenario: &'a Scenario,
    repeat: u32,
    layers: &'a dyn AttemptLayers,
    truth: Option<&'a GroundTruth>,
    scrubber: &'a Scrubber,
    replay: Option<&'a ReplayServer>,
}

impl Attempt<'_> {
    /// A fresh layer for the attempt, the attempt, then the layer released.
    async fn run(&self) -> RunResult {
        let started_at = chrono::Utc::now();
        let setup = Instant::now();
        let layer = self.layers.layer().await;
        let setup = setup.elapsed();
        let mut result = run_one(self, layer.clone()).await;
        result.isolation += setup;
        result.started_at = started_at;
        if let Ok(layer) = layer {
            self.layers.release(layer).await;
        }
        result
    }
}

async fn run_one(a: &Attempt<'_>, layer: Result<Arc<dyn Gateway>, String>) -> RunResult {
    let Attempt {
        plan,
        scenario,
        repeat,
        truth,
        scrubber,
        replay,
        ..
    } = *a;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let ctx = CallContext {
        principal: scenario.principal.clone(),
        trace_id: trace_id.clone(),
    };
    let mut settings = plan.settings.clone();
    settings.max_steps = scenario.max_steps;
    let fail = |message: String| RunResult {
        scenario: scenario.name.clone(),
        repeat,
        trace_id: trace_id.clone(),
        run: AgentRun {
            outcome: RunOutcome::Error,
            steps: 0,
            max_steps: scenario.max_steps,
            final_answer: None,
            error: Some(message.clone()),
            leak: None,
            tool_calls: Vec::new(),
            transcript: Vec::new(),
            timings: Vec::new(),
            tools_offered: Vec::new(),
            tool_list_stable: true,
            model_retries: 0,
            own_tenant_in_results: 0,
            max_tool_calls_per_reply: settings.max_tool_calls_per_reply,
            tool_calls_over_cap: 0,
            duration: Duration::ZERO,
        },
        checks: vec![{
            let mut c = judge_error(CheckKind::Outcome, &message);
            c.verdict = Verdict::Error;
            c
        }],
        verdict: Verdict::Error,
        transcript: None,
        isolation: Duration::ZERO,
        started_at: chrono::Utc::now(),
    };
    let gateway = match layer {
        Ok(g) => g,
        Err(e) => {
            return fail(format!(
                "cannot start a layer instance for this attempt: {e}"
            ))
        }
    };
    // On a staging database a write scenario acts on rows of its own: a copy of each row it
    // names, created now and removed after the attempt.
    let mut own_rows: Vec<(String, i64)> = Vec::new();
    let attempt_scenario;
    let scenario = match truth {
        Some(t) if t.attempt_rows && !scenario.expect.changed.is_empty() => {
            let mut s = scenario.clone();
            for i in 0..s.expect.changed.len() {
                let (table, id) = (s.expect.changed[i].table.clone(), s.expect.changed[i].id);
                let copy = match t.copy_row(&table, id).await {
                    Ok(c) => c,
                    Err(e) => {
                        for (table, id) in &own_rows {
                            let _ = t.delete_row(table, *id).await;
                        }
                        return fail(format!("cannot create the attempt's own rows: {e}"));
                    }
                };
                own_rows.push((table.clone(), copy));
                retarget(&mut s, &table, id, copy);
            }
            attempt_scenario = s;
            &attempt_scenario
        }
        _ => scenario,
    };

    // The model endpoint for this run.
    let mut scripted: Option<ScriptedServer> = None;
    let endpoint = match &plan.provider {
        Provider::Scripted => {
            let Some(script) = scenario.script.clone() else {
                return fail("the scenario has no script".into());
            };
            let options = ScriptedOptions {
                expected_tools: Some(gateway.tools()),
                model: Some(settings.model.clone()),
                ..ScriptedOptions::default()
            };
            match ScriptedServer::start(script, options).await {
                Ok(s) => {
                    let e = Endpoint {
                        base_url: s.base_url(),
                        api_key: None,
                    };
                    scripted = Some(s);
                    e
                }
                Err(e) => return fail(format!("cannot start the scripted model: {e}")),
            }
        }
        Provider::Replay(_) => match replay {
            Some(r) => Endpoint {
                base_url: r.base_url(),
                api_key: None,
            },
            None => return fail("the replay server is not running".into()),
        },
        Provider::OpenAi(e) => e.clone(),
    };
    let client = match ChatClient::new(&endpoint, plan.retry.clone()) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let client = match &plan.recorder {
        Some(r) => client.with_recorder(r.clone()),
        None => client,
    };

    let before = match truth {
        Some(t) => match judge::before(t, scenario).await {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot snapshot ground truth: {e}")),
        },
        None => judge::Before::default(),
    };
    // The highest id of every table a write scenario looks at: rows above it are the attempt's.
    let mut max_ids = Vec::new();
    if let Some(t) = truth {
        for table in written_tables(scenario) {
            match t.max_id(&table).await {
                Ok(m) => max_ids.push((table, m)),
                Err(e) => return fail(format!("cannot snapshot ground truth: {e}")),
            }
        }
    }
    let tenants: Vec<String> = truth.map(|t| t.tenants.clone()).unwrap_or_default();
    let guard = PrincipalGuard::new(
        &scenario.principal.tenant,
        &scenario.principal.user,
        &tenants,
    );
    let run = run_agent(
        &client,
        &settings,
        gateway.as_ref(),
        &ctx,
        &scenario.task,
        &guard,
    )
    .await;

    let mut cx = judge::Context {
        trace_id: trace_id.clone(),
        request_violations: scripted
            .as_ref()
            .map(|s| {
                s.violations()
                    .into_iter()
                    .map(|v| format!("request {}: {}", v.request + 1, v.message))
                    .collect()
            })
            .unwrap_or_default(),
        transcript_clean: None,
        policy: plan.policy.clone(),
        model_requests: scripted.as_ref().map(|s| s.requests()),
    };
    let mut transcript_path = None;
    if let Some(dir) = &plan.transcripts_dir {
        cx.transcript_clean = Some(
            match transcript::write(dir, &scenario.name, repeat, &trace_id, &run, scrubber) {
                Ok(path) => {
                    let verdict = match (std::fs::read_to_string(&path), truth) {
                        (Ok(text), Some(t)) => {
                            let left = t.canaries_in(&text);
                            if left.is_empty() {
                                Ok(())
                            } else {
                                Err(format!(
                                    "{} canary value(s) survived scrubbing, e.g. {}",
                                    left.len(),
                                    left[0].location()
                                ))
                            }
                        }
                        (Ok(_), None) => Ok(()),
                        (Err(e), _) => Err(format!("cannot re-read the transcript: {e}")),
                    };
                    transcript_path = Some(path);
                    verdict
                }
                Err(e) => Err(format!("cannot write the transcript: {e}")),
            },
        );
    }
    let checks = judge::judge(scenario, &run, truth, &before, &cx).await;

    // Put changed rows back so the next attempt starts from the same state.
    let restoring = Instant::now();
    if let Some(t) = truth {
        for (change, (_, _, row)) in scenario.expect.changed.iter().zip(&before.rows) {
            if let Some(row) = row {
                let fields: BTreeSet<String> = change.fields.keys().cloned().collect();
                if let Err(e) = t.restore(&change.table, change.id, row, &fields).await {
                    tracing::warn!("cannot restore {}#{}: {e}", change.table, change.id);
                }
            }
        }
        for (table, max_id) in &max_ids {
            let ids = created_ids(&run, table);
            if let Err(e) = t.remove_created_rows(table, *max_id, &ids).await {
                tracing::warn!("cannot remove the rows the attempt created in {table}: {e}");
            }
        }
        for (table, id) in &own_rows {
            if let Err(e) = t.delete_row(table, *id).await {
                tracing::warn!("cannot remove the attempt's own row {table}#{id}: {e}");
            }
        }
    }
    let isolation = restoring.elapsed();
    let verdict = worst(checks.iter().map(|c| c.verdict));
    RunResult {
        scenario: scenario.name.clone(),
        repeat,
        trace_id,
        run,
        checks,
        verdict,
        transcript: transcript_path,
        isolation,
        started_at: chrono::Utc::now(),
    }
}

/// Points a scenario at row `to` of `table` instead of row `from`: the `changed` expectation,
/// every scripted call on that model with that id, and the task's mention of the id (as a whole
/// number) when it mentions it exactly once.
fn retarget(s: &mut Scenario, table: &str, from: i64, to: i64) {
    use crate::providers::{ScriptTurn, ScriptedArguments};
    for c in &mut s.expect.changed {
        if c.table == table && c.id == from {
            c.id = to;
        }
    }
    if let Some(script) = &mut s.script {
        for turn in &mut script.turns {
            if let ScriptTurn::ToolCalls(calls) = turn {
                for call in calls {
                    if let ScriptedArguments::Json(v) = &mut call.arguments {
                        let on_row = v.get("model").and_then(serde_json::Value::as_str)
                            == Some(table)
                            && v.get("id").and_then(serde_json::Value::as_i64) == Some(from);
                        if on_row {
                            v["id"] = serde_json::json!(to);
                        }
                    }
                }
            }
        }
    }
    let word = regex::Regex::new(&format!(r"\b{from}\b")).expect("a number is a valid pattern");
    if word.find_iter(&s.task).count() == 1 {
        s.task = word.replace(&s.task, to.to_string()).into_owned();
    }
}

/// Ids of the rows of `table` the layer said it created in this attempt: the `id` fields in the
/// results of its successful create calls on that model. Only these rows (and only above the
/// table's highest id before the attempt) are removed afterwards, so on a shared staging
/// database no row another client wrote meanwhile is touched.
fn created_ids(run: &AgentRun, table: &str) -> Vec<i64> {
    fn ids(v: &serde_json::Value, depth: u8, out: &mut Vec<i64>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(id) = m.get("id").and_then(serde_json::Value::as_i64) {
                    out.push(id);
                }
                if depth > 0 {
                    m.values().for_each(|x| ids(x, depth - 1, out));
                }
            }
            serde_json::Value::Array(a) if depth > 0 => {
                a.iter().for_each(|x| ids(x, depth - 1, out));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for c in &run.tool_calls {
        let creates = ["create", "insert"]
            .iter()
            .any(|w| c.tool.to_lowercase().contains(w));
        if creates
            && c.origin == crate::agent::ResultOrigin::Gateway
            && c.error.is_none()
            && c.arguments.get("model").and_then(serde_json::Value::as_str) == Some(table)
        {
            if let Some(result) = &c.result {
                ids(result, 3, &mut out);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The tables a scenario's write expectations name (unchanged or changed), once each.
fn written_tables(scenario: &Scenario) -> BTreeSet<String> {
    let mut tables: BTreeSet<String> = scenario.expect.unchanged.iter().cloned().collect();
    tables.extend(scenario.expect.changed.iter().map(|c| c.table.clone()));
    tables
}

fn judge_error(kind: CheckKind, message: &str) -> Check {
    Check {
        kind,
        verdict: Verdict::Error,
        summary: message.to_string(),
        evidence: Evidence {
            summary: message.to_string(),
            ..Evidence::default()
        },
    }
}

mod attempts;
mod attribution;
mod report;
mod stats;

pub use attempts::attempt_records;
pub use attribution::{attribute, FailureKind};
pub use report::{findings, pass_rates, system_prompt_finding, PassRates};
pub use stats::{wilson, Interval};
