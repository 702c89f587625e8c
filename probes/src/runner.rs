//! The probe runner: [`Probe`]s, the context they run in ([`ProbeCtx`]), the plan
//! ([`ProbePlan`]) and the scheduler ([`run`]) that turns outcomes into report findings and
//! emits [`ProbeEvent`]s.
//!
//! Scheduling follows what a probe does to shared state ([`Phase`]): read-only probes run
//! concurrently (`--jobs`); probes that plant rows, write or need a quiet database run one at a
//! time; the audit probes run after every other call has been made; the probe that tampers with
//! the audit log runs last. Each probe runs in its own task, so a panic becomes an `error` finding
//! instead of ending the run, and once the database is found unreachable every remaining probe is
//! reported as `error` without being tried.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use preflight_reports::{
    Evidence, Finding, Location, ProbeEvent, ProbeEventKind, RunEnvironment, Severity,
    ToolCallRecord, Verdict,
};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::codes::{Family, ProbeCode};
pub use crate::context::{
    excerpt, Access, CallEntry, CallOutcome, CtxParts, Principals, ProbeCtx, ToolCallCounter,
};
use crate::controls::Control;
use crate::truth::TruthError;

/// When a probe may run relative to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Reads only; runs concurrently with other such probes.
    Concurrent,
    /// Plants rows, writes, or needs the database quiet (statistics); runs alone.
    Serial,
    /// Judges the calls every earlier probe made (the audit log); runs alone after them.
    Final,
    /// Disturbs shared state in a way nothing may overlap (locks and edits the audit log).
    Last,
}

/// What a probe found: the runtime twin of [`Finding`], without the identity fields the runner
/// fills in.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    pub verdict: Verdict,
    pub message: String,
    pub call: Option<Box<ToolCallRecord>>,
    pub response_excerpt: Option<String>,
    pub evidence: Box<Evidence>,
}

/// A probe body's result. `Err` is an early exit with an outcome (usually `error` or
/// `not_verified`), so bodies can use `?` on ground-truth reads.
pub type ProbeResult = Result<ProbeOutcome, ProbeOutcome>;

impl ProbeOutcome {
    fn new(verdict: Verdict, message: impl Into<String>) -> Self {
        Self {
            verdict,
            message: message.into(),
            call: None,
            response_excerpt: None,
            evidence: Box::default(),
        }
    }

    pub fn pass(message: impl Into<String>) -> Self {
        Self::new(Verdict::Pass, message)
    }

    pub fn fail(message: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, message)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Verdict::Error, message)
    }

    pub fn not_verified(message: impl Into<String>) -> Self {
        Self::new(Verdict::NotVerified, message)
    }

    /// Attaches the call (arguments with canaries masked) and a redacted response excerpt.
    pub fn with_call(mut self, ctx: &ProbeCtx, call: &CallOutcome) -> Self {
        self.call = Some(Box::new(call.record(ctx)));
        self.response_excerpt = Some(call.excerpt(ctx));
        self
    }

    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.evidence.summary = summary.into();
        self
    }

    pub fn fact(mut self, fact: impl Into<String>) -> Self {
        self.evidence.facts.push(fact.into());
        self
    }

    pub fn facts(mut self, facts: impl IntoIterator<Item = String>) -> Self {
        self.evidence.facts.extend(facts);
        self
    }

    pub fn leaks(mut self, leaks: impl IntoIterator<Item = String>) -> Self {
        self.evidence.leaks.extend(leaks);
        self
    }

    pub fn sql(mut self, sql: impl Into<String>) -> Self {
        self.evidence.sql.push(sql.into());
        self
    }

    pub fn rows(mut self, rows: impl IntoIterator<Item = Value>) -> Self {
        self.evidence.rows.extend(rows);
        self
    }

    pub fn audit_records(mut self, records: impl IntoIterator<Item = Value>) -> Self {
        self.evidence.audit_records.extend(records);
        self
    }
}

impl From<TruthError> for ProbeOutcome {
    fn from(e: TruthError) -> Self {
        ProbeOutcome::error(format!("ground truth unavailable: {}", error_chain(&e)))
    }
}

/// `e` and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'static>>;
type ProbeFn = Arc<dyn Fn(Arc<ProbeCtx>) -> ProbeFuture + Send + Sync>;

/// One planned probe: a claim (its code), the instance (title) and the body that tests it.
#[derive(Clone)]
pub struct Probe {
    pub code: String,
    pub family: Family,
    pub title: String,
    pub checklist: Vec<String>,
    pub severity: Severity,
    pub phase: Phase,
    /// The policy key path (`models.orders.budgets`) whose line governs this instance.
    pub policy_path: Option<String>,
    /// A position given outright (lint findings); wins over `policy_path`.
    pub span: Option<preflight_enforcer::policy::Span>,
    /// The positive controls that must make this instance fail (the self-test checks each);
    /// the code's own by default ([`Control::declared_for`]), narrowed per instance by
    /// [`Probe::killed_by`]. Empty only for lint findings, which the self-test does not run.
    pub controls: Vec<Control>,
    /// The contract tools the probe calls; a target that offers one of them not (its profile
    /// maps no such tool, or the layer does not list the mapped name) makes the instance
    /// `not_verified` without running it.
    pub needs: Vec<&'static str>,
    run: ProbeFn,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("code", &self.code)
            .field("title", &self.title)
            .field("phase", &self.phase)
            .field("controls", &self.controls)
            .finish()
    }
}

impl Probe {
    /// A probe of a known code; checklist ids, family and severity come from the code.
    pub fn new<F, Fut>(code: ProbeCode, title: impl Into<String>, body: F) -> Self
    where
        F: Fn(Arc<ProbeCtx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ProbeResult> + Send + 'static,
    {
        Self {
            code: code.as_str().to_string(),
            family: code.family(),
            title: title.into(),
            checklist: code.checklist().iter().map(|s| s.to_string()).collect(),
            severity: code.severity(),
            phase: Phase::Concurrent,
            policy_path: None,
            span: None,
            controls: Control::declared_for(code),
            needs: code.tools().to_vec(),
            run: Arc::new(move |ctx| Box::pin(body(ctx))),
        }
    }

    /// A probe whose identity is given outright (lint findings).
    pub fn custom<F, Fut>(
        code: impl Into<String>,
        family: Family,
        title: impl Into<String>,
        checklist: Vec<String>,
        severity: Severity,
        body: F,
    ) -> Self
    where
        F: Fn(Arc<ProbeCtx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ProbeResult> + Send + 'static,
    {
        Self {
            code: code.into(),
            family,
            title: title.into(),
            checklist,
            severity,
            phase: Phase::Concurrent,
            policy_path: None,
            span: None,
            controls: Vec::new(),
            needs: Vec::new(),
            run: Arc::new(move |ctx| Box::pin(body(ctx))),
        }
    }

    /// Replaces the controls this instance must fail under (an instance whose model or field
    /// only some of its code's controls can reach).
    pub fn killed_by(mut self, controls: impl IntoIterator<Item = Control>) -> Self {
        self.controls = controls.into_iter().collect();
        self
    }

    /// The contract tools this instance calls (see [`Probe::needs`]).
    pub fn needs(mut self, tools: impl IntoIterator<Item = &'static str>) -> Self {
        self.needs.extend(tools);
        self
    }

    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    pub fn at(mut self, policy_path: impl Into<String>) -> Self {
        self.policy_path = Some(policy_path.into());
        self
    }

    pub fn fingerprint(&self) -> String {
        Finding::fingerprint_for(&self.code, &self.title)
    }

    /// Runs the body in its own task (a panic becomes an `error` finding, a body running past
    /// `timeout` is aborted and becomes one too) and builds the finding.
    pub async fn execute(&self, ctx: &Arc<ProbeCtx>, timeout: Duration) -> Finding {
        let started = Instant::now();
        let missing: Vec<&str> = self
            .needs
            .iter()
            .copied()
            .filter(|t| !ctx.has_tool(t))
            .collect();
        if !missing.is_empty() {
            let outcome = ProbeOutcome::not_verified(format!(
                "the target offers no {}, so this claim could not be tested (its profile maps no such tool, or the layer does not list the mapped name)",
                missing
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
            return self.finding(ctx, outcome, started.elapsed());
        }
        let fut = (self.run)(Arc::clone(ctx));
        let task_ctx = Arc::clone(ctx);
        let code = self.code.clone();
        let mut handle = tokio::spawn(async move {
            let _guard = task_ctx.enter(&code);
            fut.await
        });
        let outcome = match tokio::time::timeout(timeout, &mut handle).await {
            Ok(Ok(Ok(o))) | Ok(Ok(Err(o))) => o,
            Ok(Err(e)) if e.is_panic() => {
                let payload = e.into_panic();
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                ProbeOutcome::error(format!("the probe panicked: {what}"))
            }
            Ok(Err(_)) => ProbeOutcome::error("the probe was cancelled"),
            Err(_) => {
                handle.abort();
                ProbeOutcome::error(format!(
                    "the probe did not finish within {:.1} s",
                    timeout.as_secs_f64()
                ))
            }
        };
        self.finding(ctx, outcome, started.elapsed())
    }

    /// The finding for this probe with `outcome`.
    pub fn finding(&self, ctx: &ProbeCtx, outcome: ProbeOutcome, duration: Duration) -> Finding {
        let span = self.span.or_else(|| {
            self.policy_path
                .as_deref()
                .and_then(|p| ctx.policy.span_of(p))
        });
        let location = span.filter(|s| s.line > 0).map(|s| Location {
            path: ctx.policy.path.clone(),
            line: s.line,
            column: s.column,
        });
        let mut evidence = *outcome.evidence;
        // Last line of defence: nothing a probe recorded may carry a raw canary.
        let canaries = &ctx.truth.canaries;
        evidence.summary = canaries.redact(&evidence.summary);
        evidence.facts = evidence.facts.iter().map(|f| canaries.redact(f)).collect();
        evidence.sql = evidence.sql.iter().map(|f| canaries.redact(f)).collect();
        evidence.rows = evidence
            .rows
            .iter()
            .map(|r| canaries.redact_json(r))
            .collect();
        evidence.audit_records = evidence
            .audit_records
            .iter()
            .map(|r| canaries.redact_json(r))
            .collect();
        Finding {
            code: self.code.clone(),
            family: self.family.as_str().to_string(),
            title: self.title.clone(),
            checklist: self.checklist.clone(),
            severity: self.severity,
            verdict: outcome.verdict,
            message: canaries.redact(&outcome.message),
            call: outcome.call.map(|c| *c),
            response_excerpt: outcome.response_excerpt,
            evidence,
            location,
            fingerprint: self.fingerprint(),
            duration,
        }
    }
}

/// The probes of one run, in plan order.
#[derive(Clone, Debug, Default)]
pub struct ProbePlan {
    pub probes: Vec<Probe>,
}

impl ProbePlan {
    /// Probe counts per family, in family order (for `RunStarted`).
    pub fn per_family(&self) -> Vec<(String, usize)> {
        let mut counts: BTreeMap<Family, usize> = BTreeMap::new();
        for p in &self.probes {
            *counts.entry(p.family).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(f, n)| (f.as_str().to_string(), n))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Keeps only the probes of `families`.
    pub fn retain_families(&mut self, families: &BTreeSet<Family>) {
        self.probes.retain(|p| families.contains(&p.family));
    }
}

/// How to run a plan.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Concurrent read-only probes.
    pub jobs: usize,
    /// Longest a single probe may take before it is reported as `error`.
    pub probe_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            probe_timeout: Duration::from_secs(60),
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub findings: Vec<Finding>,
    pub tool_calls: u64,
    /// The median time one tool call took.
    pub call_p50: Option<Duration>,
    pub duration: Duration,
    /// Set when the database became unreachable during the run.
    pub infrastructure_error: Option<String>,
    /// Rows planted by probes that could not be removed (`model#key: why`).
    pub leftover_rows: Vec<String>,
}

struct Emitter {
    started: Instant,
    tx: Option<UnboundedSender<ProbeEvent>>,
    remaining: Mutex<BTreeMap<Family, usize>>,
    begun: Mutex<BTreeSet<Family>>,
}

impl Emitter {
    fn send(&self, kind: ProbeEventKind) {
        if let Some(tx) = &self.tx {
            // A reporter that went away is not the runner's problem.
            let _ = tx.send(ProbeEvent {
                elapsed: self.started.elapsed(),
                kind,
            });
        }
    }

    fn begin(&self, family: Family) {
        let first = self
            .begun
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(family);
        if first {
            let probes = self
                .remaining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&family)
                .copied()
                .unwrap_or(0);
            self.send(ProbeEventKind::FamilyStarted {
                family: family.as_str().to_string(),
                probes,
            });
        }
    }

    fn finish(&self, family: Family, finding: Finding) {
        self.send(ProbeEventKind::ProbeFinished {
            finding: Box::new(finding),
        });
        let done = {
            let mut rem = self.remaining.lock().unwrap_or_else(|p| p.into_inner());
            let n = rem.entry(family).or_insert(1);
            *n = n.saturating_sub(1);
            *n == 0
        };
        if done {
            self.send(ProbeEventKind::FamilyFinished {
                family: family.as_str().to_string(),
            });
        }
    }
}

/// Runs `plan` against `ctx`, emitting events on `events`, and returns every finding in plan
/// order.
pub async fn run(
    plan: &ProbePlan,
    ctx: Arc<ProbeCtx>,
    options: &RunOptions,
    environment: RunEnvironment,
    events: Option<UnboundedSender<ProbeEvent>>,
) -> RunResult {
    let started = Instant::now();
    let mut remaining = BTreeMap::new();
    for p in &plan.probes {
        *remaining.entry(p.family).or_default() += 1;
    }
    let emitter = Arc::new(Emitter {
        started,
        tx: events,
        remaining: Mutex::new(remaining),
        begun: Mutex::new(BTreeSet::new()),
    });
    emitter.send(ProbeEventKind::RunStarted {
        environment: Box::new(environment),
        planned: plan.per_family(),
    });

    let mut results: Vec<Option<Finding>> = vec![None; plan.probes.len()];
    for phase in [Phase::Concurrent, Phase::Serial, Phase::Final, Phase::Last] {
        let indices: Vec<usize> = plan
            .probes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.phase == phase)
            .map(|(i, _)| i)
            .collect();
        let jobs = if phase == Phase::Concurrent {
            options.jobs.max(1)
        } else {
            1
        };
        let done: Vec<(usize, Finding)> = stream::iter(indices)
            .map(|i| {
                let probe = plan.probes[i].clone();
                let ctx = Arc::clone(&ctx);
                let emitter = Arc::clone(&emitter);
                let timeout = options.probe_timeout;
                async move {
                    emitter.begin(probe.family);
                    let finding = run_one(&probe, &ctx, timeout).await;
                    emitter.finish(probe.family, finding.clone());
                    (i, finding)
                }
            })
            .buffer_unordered(jobs)
            .collect()
            .await;
        for (i, f) in done {
            results[i] = Some(f);
        }
    }

    let mut findings: Vec<Finding> = results.into_iter().flatten().collect();
    // Rows of probes that panicked, timed out or failed to clean up after themselves.
    let leftovers = if ctx.truth.is_down() {
        Vec::new()
    } else {
        ctx.scratch.purge(&ctx.truth).await
    };
    if !leftovers.is_empty() {
        tracing::warn!(rows = ?leftovers, "some rows planted by probes could not be removed");
        let finding = cleanup_finding(&leftovers);
        emitter.send(ProbeEventKind::ProbeFinished {
            finding: Box::new(finding.clone()),
        });
        findings.push(finding);
    }
    let tool_calls = ctx.calls.count();
    emitter.send(ProbeEventKind::RunFinished { tool_calls });
    let infrastructure_error = ctx.truth.is_down().then(|| {
        "the database became unreachable during the run; findings after that point are errors"
            .to_string()
    });
    RunResult {
        findings,
        tool_calls,
        call_p50: ctx.calls.p50(),
        duration: started.elapsed(),
        infrastructure_error,
        leftover_rows: leftovers,
    }
}

/// The code of the finding a run adds when rows its probes planted stay in the database.
pub const CLEANUP_CODE: &str = "run.cleanup";

/// The finding for rows left behind: the database is not as the run found it, which a
/// throwaway database shrugs off but a staging one under `--allow-writes` does not.
fn cleanup_finding(leftovers: &[String]) -> Finding {
    let title = "every row planted by a probe is removed".to_string();
    Finding {
        code: CLEANUP_CODE.to_string(),
        family: "run".to_string(),
        fingerprint: Finding::fingerprint_for(CLEANUP_CODE, &title),
        title,
        checklist: Vec::new(),
        severity: Severity::High,
        verdict: Verdict::Error,
        message: format!(
            "{} row(s) planted by probes could not be removed and are still in the database; \
             remove them by hand (their unique text columns carry a `.pf` suffix)",
            leftovers.len()
        ),
        call: None,
        response_excerpt: None,
        evidence: Evidence {
            summary: format!("{} row(s) left behind", leftovers.len()),
            facts: leftovers.to_vec(),
            ..Evidence::default()
        },
        location: None,
        duration: Duration::ZERO,
    }
}

async fn run_one(probe: &Probe, ctx: &Arc<ProbeCtx>, timeout: Duration) -> Finding {
    let started = Instant::now();
    if ctx.truth.is_down() {
        return probe.finding(
            ctx,
            ProbeOutcome::error("not run: the database is unreachable"),
            started.elapsed(),
        );
    }
    let finding = probe.execute(ctx, timeout).await;
    // An error may mean the database went away; find out once, so the rest of the run does not
    // wait on a dead server probe by probe.
    if finding.verdict == Verdict::Error && !ctx.truth.ping().await {
        let mut f = finding;
        f.message = format!("{} (the database is unreachable)", f.message);
        return f;
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        let s = "é".repeat(10);
        assert_eq!(excerpt(&s, 20), s);
        assert!(excerpt(&s, 3).starts_with("ééé …"));
    }

    #[test]
    fn outcome_builders_set_verdicts() {
        assert_eq!(ProbeOutcome::pass("x").verdict, Verdict::Pass);
        assert_eq!(ProbeOutcome::fail("x").verdict, Verdict::Fail);
        assert_eq!(ProbeOutcome::error("x").verdict, Verdict::Error);
        assert_eq!(
            ProbeOutcome::not_verified("x").verdict,
            Verdict::NotVerified
        );
        let o = ProbeOutcome::fail("m").fact("a").leaks(["b".to_string()]);
        assert_eq!(o.evidence.facts, ["a"]);
        assert_eq!(o.evidence.leaks, ["b"]);
    }
}
