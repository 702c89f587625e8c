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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use preflight_enforcer::policy::Policy;
use preflight_enforcer::{CallContext, ErrorCode, Faults, Gateway, Principal, ToolError};
use preflight_reports::{
    Evidence, Finding, Location, ProbeEvent, ProbeEventKind, RunEnvironment, Severity,
    ToolCallRecord, Verdict,
};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

use crate::codes::{Family, ProbeCode};
use crate::target::GatewayFactory;
use crate::truth::{GroundTruth, TruthError};

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
    run: ProbeFn,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("code", &self.code)
            .field("title", &self.title)
            .field("phase", &self.phase)
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
            run: Arc::new(move |ctx| Box::pin(body(ctx))),
        }
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

/// The two tenants a run plays against each other, and the approver.
#[derive(Clone, Debug)]
pub struct Principals {
    /// The caller: every probe acts as this principal (tenant A).
    pub a: Principal,
    /// The victim: its rows, keys, cursors and canaries are what A must never reach (tenant B).
    pub b: Principal,
    /// A person allowed to approve gated writes in tenant A.
    pub approver: Principal,
}

impl Principals {
    pub fn new(tenant_a: &str, tenant_b: &str) -> Self {
        Self {
            a: Principal {
                tenant: tenant_a.to_string(),
                user: format!("preflight-probe@{tenant_a}"),
                roles: vec!["support".to_string()],
            },
            b: Principal {
                tenant: tenant_b.to_string(),
                user: format!("preflight-probe@{tenant_b}"),
                roles: vec!["support".to_string()],
            },
            approver: Principal {
                tenant: tenant_a.to_string(),
                user: format!("preflight-approver@{tenant_a}"),
                roles: vec!["admin".to_string()],
            },
        }
    }
}

/// Whether probes may change data (scratch rows, writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// A staging database without `--allow-writes`: probes that must write report
    /// `not_verified`.
    ReadOnly,
}

/// One tool call as made, for the audit probes.
#[derive(Clone, Debug)]
pub struct CallEntry {
    pub trace_id: String,
    pub principal: Principal,
    pub tool: String,
    /// The raw arguments (kept in memory only, to check `arguments_sha256`).
    pub arguments: Value,
    pub outcome: Result<(), ErrorCode>,
    /// Which probe made it.
    pub probe: String,
}

/// Counts and logs every tool call the run makes.
#[derive(Debug, Default)]
pub struct ToolCallCounter {
    count: AtomicU64,
    log: Mutex<Vec<CallEntry>>,
}

impl ToolCallCounter {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    pub fn entries(&self) -> Vec<CallEntry> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn push(&self, entry: CallEntry) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
    }
}

/// One call and its result.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    pub tool: String,
    pub principal: Principal,
    pub trace_id: String,
    pub arguments: Value,
    pub result: Result<Value, ToolError>,
    pub elapsed: Duration,
}

impl CallOutcome {
    /// The response as the agent sees it: the result, or the structured error object.
    pub fn response(&self) -> Value {
        match &self.result {
            Ok(v) => v.clone(),
            Err(e) => e.to_json(),
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.result.as_ref().err().map(|e| e.code)
    }

    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The record for the finding: arguments with every canary masked.
    pub fn record(&self, ctx: &ProbeCtx) -> ToolCallRecord {
        ToolCallRecord {
            tool: self.tool.clone(),
            tenant: self.principal.tenant.clone(),
            user: self.principal.user.clone(),
            arguments: ctx.truth.canaries.redact_json(&self.arguments),
            trace_id: self.trace_id.clone(),
        }
    }

    /// At most ~400 characters of the response with every canary masked.
    pub fn excerpt(&self, ctx: &ProbeCtx) -> String {
        excerpt(
            &ctx.truth.canaries.redact(&self.response().to_string()),
            400,
        )
    }

    /// One line for evidence: `db_get → not_found` or `db_query → ok (3 rows)`.
    pub fn describe(&self) -> String {
        match &self.result {
            Ok(v) => {
                let n = crate::evidence::rows_of(v).len();
                format!("{} as {} → ok ({n} rows)", self.tool, self.principal.tenant)
            }
            Err(e) => format!("{} as {} → {}", self.tool, self.principal.tenant, e.code),
        }
    }
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut} …[truncated]")
}

/// Everything a probe may use. Shared by all probes of one run (one gateway variant).
pub struct ProbeCtx {
    /// The enforcement layer under test.
    pub gateway: Arc<dyn Gateway>,
    /// Builds more instances of the same layer (fresh budget counters, a derived policy); absent
    /// for targets that cannot be instantiated twice.
    pub factory: Option<Arc<dyn GatewayFactory>>,
    /// The faults the gateway under test runs with (empty outside the self-test); fresh
    /// instances get the same.
    pub faults: Faults,
    pub truth: Arc<GroundTruth>,
    pub policy: Arc<Policy>,
    pub principals: Principals,
    pub calls: Arc<ToolCallCounter>,
    pub access: Access,
    /// The audit writer role's login, for the append-only probe (a secret: never printed).
    pub audit_url: Option<String>,
    /// The gateway's tool names.
    pub tools: BTreeSet<String>,
    /// The layer's own tools under its own names (the every-tool probes call each).
    pub native_tools: Vec<preflight_enforcer::ToolSpec>,
    /// The approvals store, when the target has one (approval probes need it).
    pub approvals: Option<Arc<dyn crate::families::approval::ApprovalDesk>>,
    /// The database role the layer connects as, and the audit writer's.
    pub agent_role: Option<String>,
    pub audit_role: Option<String>,
    /// Rows probes planted, removed at the end of the run whatever happened.
    pub scratch: crate::scratch::ScratchRegistry,
    /// Which probe is running, per task (for the call log).
    current: Mutex<BTreeMap<tokio::task::Id, String>>,
}

impl std::fmt::Debug for ProbeCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeCtx")
            .field("gateway", &self.gateway.name())
            .field("principals", &self.principals)
            .field("access", &self.access)
            .finish()
    }
}

/// The parts a [`ProbeCtx`] is built from.
pub struct CtxParts {
    pub gateway: Arc<dyn Gateway>,
    pub factory: Option<Arc<dyn GatewayFactory>>,
    pub faults: Faults,
    pub truth: Arc<GroundTruth>,
    pub policy: Arc<Policy>,
    pub principals: Principals,
    pub access: Access,
    pub audit_url: Option<String>,
    pub approvals: Option<Arc<dyn crate::families::approval::ApprovalDesk>>,
    pub agent_role: Option<String>,
    pub audit_role: Option<String>,
}

impl ProbeCtx {
    pub fn new(parts: CtxParts) -> Self {
        let tools = parts.gateway.tools().into_iter().map(|t| t.name).collect();
        let native_tools = parts.gateway.native_tools();
        Self {
            gateway: parts.gateway,
            factory: parts.factory,
            faults: parts.faults,
            truth: parts.truth,
            policy: parts.policy,
            principals: parts.principals,
            calls: Arc::new(ToolCallCounter::default()),
            access: parts.access,
            audit_url: parts.audit_url,
            tools,
            native_tools,
            approvals: parts.approvals,
            agent_role: parts.agent_role,
            audit_role: parts.audit_role,
            scratch: crate::scratch::ScratchRegistry::new(),
            current: Mutex::new(BTreeMap::new()),
        }
    }

    /// Calls `tool` on the gateway under test as `who`, logging the call.
    pub async fn call(&self, who: &Principal, tool: &str, arguments: Value) -> CallOutcome {
        let gw = Arc::clone(&self.gateway);
        self.call_on(gw.as_ref(), who, tool, arguments).await
    }

    /// Calls `tool` on a specific gateway instance (a fresh one from the factory).
    pub async fn call_on(
        &self,
        gateway: &dyn Gateway,
        who: &Principal,
        tool: &str,
        arguments: Value,
    ) -> CallOutcome {
        let cctx = CallContext::new(who.clone());
        let started = Instant::now();
        let result = gateway.call(&cctx, tool, arguments.clone()).await;
        let elapsed = started.elapsed();
        let probe = tokio::task::try_id()
            .and_then(|id| {
                self.current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned()
            })
            .unwrap_or_default();
        self.calls.push(CallEntry {
            trace_id: cctx.trace_id.clone(),
            principal: who.clone(),
            tool: tool.to_string(),
            arguments: arguments.clone(),
            outcome: result.as_ref().map(|_| ()).map_err(|e| e.code),
            probe,
        });
        CallOutcome {
            tool: tool.to_string(),
            principal: who.clone(),
            trace_id: cctx.trace_id,
            arguments,
            result,
            elapsed,
        }
    }

    pub fn has_tool(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }

    /// `Err(not_verified)` unless the gateway offers `tool`.
    pub fn require_tool(&self, tool: &str) -> Result<(), ProbeOutcome> {
        if self.has_tool(tool) {
            Ok(())
        } else {
            Err(ProbeOutcome::not_verified(format!(
                "the layer does not offer `{tool}`, so this claim could not be tested"
            )))
        }
    }

    /// `Err(not_verified)` when the run may not change data.
    pub fn require_writes(&self) -> Result<(), ProbeOutcome> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(ProbeOutcome::not_verified(
                "the database is read-only for this run (staging without --allow-writes); \
                 this probe must create its own rows",
            )),
        }
    }

    /// A model of the policy, or an `error` outcome naming it.
    pub fn model(
        &self,
        name: &str,
    ) -> Result<&preflight_enforcer::policy::ModelPolicy, ProbeOutcome> {
        self.policy
            .model(name)
            .ok_or_else(|| ProbeOutcome::error(format!("model {name} vanished from the policy")))
    }

    /// Records which probe the current task runs, until the guard drops.
    fn enter(self: &Arc<Self>, probe: &str) -> CurrentProbe {
        let id = tokio::task::try_id();
        if let Some(id) = id {
            self.current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, probe.to_string());
        }
        CurrentProbe {
            ctx: Arc::clone(self),
            id,
        }
    }
}

/// Removes the task's entry from the current-probe map when the probe body ends.
struct CurrentProbe {
    ctx: Arc<ProbeCtx>,
    id: Option<tokio::task::Id>,
}

impl Drop for CurrentProbe {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.ctx
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
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

    let findings: Vec<Finding> = results.into_iter().flatten().collect();
    // Rows of probes that panicked or timed out before their own cleanup.
    let leftovers = if ctx.truth.is_down() {
        Vec::new()
    } else {
        ctx.scratch.purge(&ctx.truth).await
    };
    if !leftovers.is_empty() {
        tracing::warn!(rows = ?leftovers, "some rows planted by probes could not be removed");
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
        duration: started.elapsed(),
        infrastructure_error,
        leftover_rows: leftovers,
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
