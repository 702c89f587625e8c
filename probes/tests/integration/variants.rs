//! Layer variants for the no-false-pass tests: a context over the built-in layer with a changed
//! policy or faults ([`ctx_with`]), a wrapper that bends the layer's answers the way a faulty
//! third-party layer might ([`Twist`]), and a runner for the planned instances that match
//! ([`run_matching`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use preflight_enforcer::policy::{FieldAction, Policy};
use preflight_enforcer::{CallContext, Faults, Gateway, Health, ToolError, ToolSpec};
use preflight_probes::codes::Family;
use preflight_probes::families::{self, PlanInput};
use preflight_probes::runner::{self, Access, CtxParts, ProbeCtx, ProbePlan, RunOptions};
use preflight_probes::session::Session;
use preflight_reports::{Finding, RunEnvironment};
use serde_json::Value;

/// How a [`Twist`] answers one call: it may call the real layer (`inner`) or not.
pub type TwistFn = Arc<
    dyn Fn(
            Arc<dyn Gateway>,
            CallContext,
            String,
            Value,
        ) -> BoxFuture<'static, Result<Value, ToolError>>
        + Send
        + Sync,
>;

/// The built-in layer with its answers bent by a function.
pub struct Twist {
    pub inner: Arc<dyn Gateway>,
    pub twist: TwistFn,
}

#[async_trait]
impl Gateway for Twist {
    fn name(&self) -> String {
        format!("twisted {}", self.inner.name())
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.inner.tools()
    }

    async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, ToolError> {
        (self.twist)(
            Arc::clone(&self.inner),
            ctx.clone(),
            tool.to_string(),
            arguments,
        )
        .await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }
}

/// A probe context over a fresh built-in instance running `policy` (quotas lifted, as in a
/// run) with `faults`, its answers bent by `twist` when given.
pub async fn ctx_with(
    s: &Session,
    policy: Policy,
    faults: Faults,
    twist: Option<TwistFn>,
) -> Arc<ProbeCtx> {
    let factory = s
        .target
        .factory()
        .expect("the built-in target builds instances");
    let policy = Arc::new(policy);
    let mut gateway = factory
        .instance(Arc::new(families::instance_policy(&policy)), faults.clone())
        .await
        .expect("layer instance");
    if let Some(twist) = twist {
        gateway = Arc::new(Twist {
            inner: gateway,
            twist,
        });
    }
    Arc::new(ProbeCtx::new(CtxParts {
        gateway,
        factory: Some(factory),
        faults,
        truth: Arc::clone(&s.truth),
        policy,
        principals: s.principals.clone(),
        access: Access::ReadWrite,
        audit_url: Some(s.database.audit_url().to_string()),
        superuser_url: s.database.superuser_url().map(str::to_string),
        approvals: s.target.approvals(),
        agent_role: s.agent_role.clone(),
        audit_role: s.audit_role.clone(),
        foreign: None,
    }))
}

/// Plans `family` from the session's own policy (so the instances are those of the shipped
/// policy) and runs, in `ctx`, those of `code` whose title contains `title`.
pub async fn run_matching(
    s: &Session,
    ctx: &Arc<ProbeCtx>,
    family: Family,
    code: &str,
    title: &str,
) -> Vec<Finding> {
    let input = PlanInput {
        policy: &s.policy,
        tools: &ctx.tools,
        native_tools: &ctx.native_tools,
        truth: &s.truth,
        tenant_a: &s.principals.a.tenant,
        tenant_b: &s.principals.b.tenant,
        lint: &[],
        sql: None,
    };
    let mut plan: ProbePlan = families::plan(&input, &BTreeSet::from([family]));
    plan.probes
        .retain(|p| p.code == code && p.title.contains(title));
    assert!(
        !plan.is_empty(),
        "no {code} instance titled like {title:?} is planned"
    );
    runner::run(
        &plan,
        Arc::clone(ctx),
        &RunOptions::default(),
        RunEnvironment::default(),
        None,
    )
    .await
    .findings
}

/// The session's policy with `model.field` set to `action`.
pub fn with_field(s: &Session, model: &str, field: &str, action: FieldAction) -> Policy {
    let mut p = (*s.policy).clone();
    let m = p.models.get_mut(model).expect("model in the policy");
    let c = m
        .columns
        .iter_mut()
        .find(|c| c.name == field)
        .expect("column in the model");
    c.action = action;
    p
}

/// The one finding of `findings`, for assertion messages.
pub fn only(findings: &[Finding]) -> &Finding {
    assert_eq!(
        findings.len(),
        1,
        "expected one finding: {:#?}",
        findings
            .iter()
            .map(|f| (&f.title, f.verdict, &f.message))
            .collect::<Vec<_>>()
    );
    &findings[0]
}
