//! One probing session over a provisioned database ([`Session`]): the policy loaded against the
//! live catalog, ground truth, the target layer, and the contexts and plans probes run with.
//! `preflight probe` and the tests build everything through it, so both run exactly the same
//! setup.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::policy::{self, Catalog, Policy};
use preflight_enforcer::Faults;
use preflight_reports::RunEnvironment;

use crate::codes::Family;
use crate::db::{Database, Role};
use crate::families::lint::LintItem;
use crate::families::{self, PlanInput};
use crate::runner::{Access, CtxParts, Principals, ProbeCtx, ProbePlan, RunOptions};
use crate::selftest::SelfTestSetup;
use crate::target::{BuiltinTarget, RemoteTarget, Target, TargetError, TargetKind};
use crate::truth::{GroundTruth, TruthError};
use preflight_targets::profile::{Login, Transport};
use preflight_targets::Connection;

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The policy file is malformed or does not match the database (every problem, one per
    /// line, `path:line:col: error: ...`).
    #[error("{0}")]
    Policy(String),
    /// A flag or setting names something that is not there (a tenant, ...).
    #[error("{0}")]
    Config(String),
    #[error("cannot read the database catalog")]
    Catalog(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot read ground truth")]
    Truth(#[source] TruthError),
    #[error("cannot start the enforcement layer")]
    Target(#[source] TargetError),
}

impl SessionError {
    /// Configuration (exit 2) rather than infrastructure (exit 3).
    pub fn is_config(&self) -> bool {
        matches!(self, SessionError::Policy(_) | SessionError::Config(_))
    }
}

/// How to open a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub tenant_a: String,
    pub tenant_b: String,
    /// Connections of the ground-truth pool.
    pub owner_connections: u32,
    pub target: TargetKind,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            tenant_a: "acme".to_string(),
            tenant_b: "globex".to_string(),
            owner_connections: 8,
            target: TargetKind::Builtin,
        }
    }
}

/// A database, its policy, ground truth and the layer under test.
pub struct Session {
    pub database: Database,
    pub catalog: Catalog,
    pub policy: Arc<Policy>,
    pub truth: Arc<GroundTruth>,
    pub target: Target,
    pub principals: Principals,
    pub agent_role: Option<String>,
    pub audit_role: Option<String>,
}

impl Session {
    /// Loads `policy_text` against the database's catalog, reads ground truth and prepares the
    /// built-in layer.
    pub async fn open(
        database: Database,
        policy_text: &str,
        policy_path: &str,
        options: &SessionOptions,
    ) -> Result<Session, SessionError> {
        let owner = database
            .owner_pool()
            .await
            .map_err(|e| SessionError::Catalog(Box::new(e)))?;
        let catalog = Catalog::read(&owner)
            .await
            .map_err(|e| SessionError::Catalog(Box::new(e)))?;
        let policy = policy::load_str(policy_text, policy_path, Some(&catalog))
            .map_err(|e| SessionError::Policy(e.to_string()))?;
        let truth = GroundTruth::connect(database.owner_url(), options.owner_connections)
            .await
            .map_err(SessionError::Truth)?;
        if !truth.tenants.is_empty() {
            for t in [&options.tenant_a, &options.tenant_b] {
                if !truth.tenants.contains(t) {
                    return Err(SessionError::Config(format!(
                        "tenant {t:?} is not in the database (tenants: {})",
                        truth.tenants.join(", ")
                    )));
                }
            }
        }
        let principals = Principals::new(&options.tenant_a, &options.tenant_b);
        let target = match &options.target {
            TargetKind::Builtin => Target::Builtin(
                BuiltinTarget::new(database.agent_url(), database.owner_url())
                    .map_err(SessionError::Target)?,
            ),
            TargetKind::Remote {
                profile,
                profile_dir,
            } => {
                let database_url = match profile.login {
                    Login::Agent => database.agent_url().to_string(),
                    Login::Owner => database.owner_url().to_string(),
                    Login::Superuser => database
                        .superuser_url()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            SessionError::Config(format!(
                                "{}: database.login: superuser, but this database offers no superuser login",
                                profile.path
                            ))
                        })?,
                };
                let conn = Connection::new(Arc::clone(profile), database_url, profile_dir.clone())
                    .map_err(|e| {
                        SessionError::Target(TargetError::Connect {
                            target: profile.path.clone(),
                            source: Box::new(e),
                        })
                    })?;
                let remote = RemoteTarget::new(conn, principals.a.clone());
                match profile.transport {
                    Transport::McpStdio { .. } | Transport::McpHttp { .. } => Target::Mcp(remote),
                    Transport::Http { .. } => Target::Http(remote),
                }
            }
        };
        Ok(Session {
            agent_role: crate::environment::login_role(database.url(Role::Agent)),
            audit_role: crate::environment::login_role(database.url(Role::Audit)),
            catalog,
            policy: Arc::new(policy),
            truth: Arc::new(truth),
            target,
            principals,
            database,
        })
    }

    /// A probe context over a fresh instance of the layer with `faults`, running the policy
    /// with quotas and write rates lifted (see [`families::instance_policy`]).
    pub async fn context(&self, faults: Faults) -> Result<Arc<ProbeCtx>, SessionError> {
        self.context_on(&self.target, faults).await
    }

    /// As [`Session::context`], over `target` instead of the session's own layer, with this
    /// session's database, policy and ground truth: `preflight probe` serves the built-in layer
    /// over HTTP and probes it as a server through this.
    pub async fn context_on(
        &self,
        target: &Target,
        faults: Faults,
    ) -> Result<Arc<ProbeCtx>, SessionError> {
        let gateway = target
            .gateway(
                Arc::new(families::instance_policy(&self.policy)),
                faults.clone(),
            )
            .await
            .map_err(SessionError::Target)?;
        Ok(Arc::new(ProbeCtx::new(CtxParts {
            gateway,
            factory: target.factory(),
            faults,
            truth: Arc::clone(&self.truth),
            policy: Arc::clone(&self.policy),
            principals: self.principals.clone(),
            access: if self.database.read_only() {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            },
            audit_url: Some(self.database.audit_url().to_string()),
            superuser_url: self.database.superuser_url().map(str::to_string),
            approvals: target.approvals(),
            agent_role: self.agent_role.clone(),
            audit_role: self.audit_role.clone(),
            foreign: target.foreign_audit(),
        })))
    }

    /// The selected families that do not apply to this target, each with the reason, for the
    /// report ([`RunEnvironment::not_applicable`]).
    pub fn not_applicable(&self, ctx: &ProbeCtx, families: &BTreeSet<Family>) -> Vec<String> {
        let mut out = Vec::new();
        if families.contains(&Family::Sql) {
            if let Err(why) = families::sql::applies(ctx.foreign.as_ref().map(|f| &*f.profile)) {
                out.push(format!("sql: {why}"));
            }
        }
        out
    }

    /// The policy linter's results as lint items.
    pub fn lint(&self) -> Vec<LintItem> {
        families::lint::from_policy_lint(&self.policy, &self.catalog)
    }

    /// The probes of `families` for `ctx`.
    pub fn plan(
        &self,
        ctx: &ProbeCtx,
        families: &BTreeSet<Family>,
        lint: &[LintItem],
    ) -> ProbePlan {
        let input = PlanInput {
            policy: &self.policy,
            tools: &ctx.tools,
            native_tools: &ctx.native_tools,
            truth: &self.truth,
            tenant_a: &self.principals.a.tenant,
            tenant_b: &self.principals.b.tenant,
            lint,
            sql: ctx.foreign.as_ref().and_then(|f| f.profile.sql.as_ref()),
        };
        families::plan(&input, families)
    }

    /// What the self-test needs; `None` for a target that cannot build instances with injected
    /// faults (every layer but the built-in one).
    pub fn self_test_setup(
        &self,
        options: RunOptions,
        families: BTreeSet<Family>,
    ) -> Option<SelfTestSetup> {
        if self.target.is_remote() {
            return None;
        }
        Some(SelfTestSetup {
            truth: Arc::clone(&self.truth),
            factory: self.target.factory()?,
            policy: Arc::clone(&self.policy),
            principals: self.principals.clone(),
            superuser_url: self.database.superuser_url().map(str::to_string),
            audit_url: Some(self.database.audit_url().to_string()),
            agent_role: self
                .agent_role
                .clone()
                .unwrap_or_else(|| "preflight_agent".to_string()),
            audit_role: self.audit_role.clone(),
            approvals: self.target.approvals(),
            options,
            families,
        })
    }

    /// The run's environment for the report (no credentials).
    pub fn environment(&self, fixtures_hash: String, started_at: String) -> RunEnvironment {
        let info = self.database.info();
        RunEnvironment {
            preflight_version: env!("CARGO_PKG_VERSION").to_string(),
            policy_path: self.policy.path.clone(),
            policy_hash: self.policy.hash.clone(),
            fixtures_hash,
            database_backend: format!("{} ({})", info.kind, info.detail),
            backend_reason: info.reason.clone(),
            server_version: info.server_version.clone(),
            target: self.target.name(),
            started_at,
            not_applicable: Vec::new(),
        }
    }
}
