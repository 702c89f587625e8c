//! What a probe runs in ([`ProbeCtx`]): the layer under test, ground truth, the policy, the
//! two tenants, and the log of every tool call the run makes ([`ToolCallCounter`]), with each
//! call's outcome ([`CallOutcome`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use preflight_enforcer::policy::Policy;
use preflight_enforcer::{CallContext, ErrorCode, Faults, Gateway, Principal, ToolError};
use preflight_reports::ToolCallRecord;
use serde_json::Value;

use crate::runner::ProbeOutcome;
use crate::target::GatewayFactory;
use crate::truth::GroundTruth;

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
    /// How long the layer took to answer (for the run's per-call latency).
    pub elapsed: Duration,
    /// Whether the call reached the layer (an adapter can refuse a call before sending it, and
    /// a transport fault leaves it unknown).
    pub delivery: Delivery,
}

/// Whether a call reached the layer, as far as the caller can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The layer answered it.
    Sent,
    /// Refused before it was sent: the adapter could not translate it, or the layer does not
    /// offer the tool.
    NotSent,
    /// A transport fault or timeout: the layer may or may not have seen it.
    Unknown,
}

impl Delivery {
    /// From a call's result: adapters mark their own refusals in the error's details
    /// (`not_sent`, `unsupported`) and faults of the target (`target_fault`).
    pub fn of(result: &Result<Value, ToolError>) -> Delivery {
        let Err(e) = result else {
            return Delivery::Sent;
        };
        let flag = |k: &str| e.details.get(k).and_then(Value::as_bool) == Some(true);
        if flag("not_sent") || flag("unsupported") {
            Delivery::NotSent
        } else if flag("target_fault") {
            Delivery::Unknown
        } else {
            Delivery::Sent
        }
    }
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

    /// The median time a call took, over every call so far.
    pub fn p50(&self) -> Option<Duration> {
        let mut times: Vec<Duration> = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.elapsed)
            .collect();
        times.sort();
        times.get(times.len() / 2).copied()
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
    /// A superuser login, when the database offers one (a secret: never printed): the server
    /// probes take the layer's login away with it, and the `sql` family plants its canary file in
    /// the data directory with it.
    pub superuser_url: Option<String>,
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
    /// A layer preflight did not write: its profile and where its own audit log is; `None` for
    /// the built-in layer, whose log is `preflight_audit.audit_log`.
    pub foreign: Option<crate::target::ForeignAudit>,
    /// When the context was made: records of a foreign log from before it are not this run's.
    pub started: std::time::SystemTime,
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
    pub superuser_url: Option<String>,
    pub approvals: Option<Arc<dyn crate::families::approval::ApprovalDesk>>,
    pub agent_role: Option<String>,
    pub audit_role: Option<String>,
    pub foreign: Option<crate::target::ForeignAudit>,
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
            superuser_url: parts.superuser_url,
            tools,
            native_tools,
            approvals: parts.approvals,
            agent_role: parts.agent_role,
            audit_role: parts.audit_role,
            scratch: crate::scratch::ScratchRegistry::new(),
            foreign: parts.foreign,
            started: std::time::SystemTime::now(),
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
            delivery: Delivery::of(&result),
            elapsed,
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
    pub(crate) fn enter(self: &Arc<Self>, probe: &str) -> CurrentProbe {
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
pub(crate) struct CurrentProbe {
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
