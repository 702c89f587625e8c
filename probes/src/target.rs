//! The enforcement layer a run probes ([`Target`]), decided once at the edge, and the
//! [`GatewayFactory`] contract probes use when they need an instance of their own.
//!
//! Some claims can only be tested on a fresh instance: a quota or write-rate probe needs counters
//! nobody else has touched, and a statement-timeout probe needs the same layer with a tighter
//! policy. A target that can build instances implements [`GatewayFactory`]; one that cannot
//! (a remote layer reached over HTTP) leaves those probes `not_verified`.

use std::sync::Arc;

use async_trait::async_trait;
use preflight_enforcer::policy::Policy;
use preflight_enforcer::{Faults, Gateway};
use preflight_targets::profile::{Profile, Transport};
use preflight_targets::{Connection, RemoteGateway, TargetInfo, UnreachableGateway};

/// Why an instance of the layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot start the {target} enforcement layer")]
    Connect {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Builds independent instances of one enforcement layer.
///
/// Contract: every call returns a new instance with its own in-memory state (budget counters,
/// rate limits, dry-run memory), configured with `policy` and `faults`, talking to the same
/// database as the instance under test. Approvals and the audit log live in the database and
/// are therefore shared.
#[async_trait]
pub trait GatewayFactory: Send + Sync {
    /// The target's name for reports (`builtin`).
    fn name(&self) -> String;

    /// Whether an instance runs the `policy` it is given. A layer preflight did not write runs
    /// its own configuration, so a probe that needs a changed policy (a tighter budget, a
    /// one-second approval SLA) cannot test it there and must say so.
    fn applies_policy(&self) -> bool;

    async fn instance(
        &self,
        policy: Arc<Policy>,
        faults: Faults,
    ) -> Result<Arc<dyn Gateway>, TargetError>;
}

/// Which enforcement layer to probe (what `--target` names).
#[derive(Clone, Debug, Default)]
pub enum TargetKind {
    /// The built-in layer, started in this process.
    #[default]
    Builtin,
    /// A layer reached through a target profile (a file, or a shorthand's default profile).
    Remote {
        profile: Arc<Profile>,
        /// What the profile's `{profile_dir}` is.
        profile_dir: String,
    },
}

/// The enforcement layers `preflight probe` can reach, decided once at the edge.
pub enum Target {
    /// The built-in layer (`preflight_enforcer::builtin`), started in this process.
    Builtin(BuiltinTarget),
    /// A layer spoken to over MCP (a stdio child process or streamable HTTP).
    Mcp(RemoteTarget),
    /// A layer behind plain HTTP tool endpoints.
    Http(RemoteTarget),
}

impl Target {
    /// The name reports show: `builtin`, or the remote layer's transport, endpoint, profile hash,
    /// server name and version and tool-list hash once it has been reached.
    pub fn name(&self) -> String {
        match self {
            Target::Builtin(_) => "builtin".to_string(),
            Target::Mcp(r) | Target::Http(r) => r.name(),
        }
    }

    /// Instances of the layer, when the target can build fresh ones: the built-in layer, and an
    /// MCP layer started as a child process (a new process is a fresh instance). A layer
    /// reached by URL is one shared instance.
    pub fn factory(&self) -> Option<Arc<dyn GatewayFactory>> {
        match self {
            Target::Builtin(b) => Some(Arc::new(b.clone())),
            Target::Mcp(r) | Target::Http(r) => r.fresh_instances().then(|| {
                let f: Arc<dyn GatewayFactory> = Arc::new(r.clone());
                f
            }),
        }
    }

    /// The gateway probes run against.
    pub async fn gateway(
        &self,
        policy: Arc<Policy>,
        faults: Faults,
    ) -> Result<Arc<dyn Gateway>, TargetError> {
        match self {
            Target::Builtin(b) => b.instance(policy, faults).await,
            Target::Mcp(r) | Target::Http(r) => r.instance(policy, faults).await,
        }
    }

    /// The approvals store a person would use with this layer, for the approval probes.
    pub fn approvals(&self) -> Option<Arc<dyn crate::families::approval::ApprovalDesk>> {
        match self {
            Target::Builtin(b) => b.approvals(),
            Target::Mcp(_) | Target::Http(_) => None,
        }
    }

    /// Ends every connection to a remote layer; child processes are ended and reaped.
    pub async fn shutdown(&self) {
        match self {
            Target::Builtin(_) => {}
            Target::Mcp(r) | Target::Http(r) => r.shutdown().await,
        }
    }

    /// Every child process started for this target (for reaping checks).
    pub fn child_pids(&self) -> Vec<u32> {
        match self {
            Target::Builtin(_) => Vec::new(),
            Target::Mcp(r) | Target::Http(r) => r.child_pids(),
        }
    }

    /// What the audit family needs to judge a remote layer's own log; `None` for the built-in
    /// layer.
    pub fn foreign_audit(&self) -> Option<ForeignAudit> {
        match self {
            Target::Builtin(_) => None,
            Target::Mcp(r) | Target::Http(r) => Some(ForeignAudit {
                profile: Arc::clone(&r.conn.profile),
                jsonl_path: r.conn.audit_path(),
            }),
        }
    }

    /// Whether this is a layer preflight did not write.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Target::Builtin(_))
    }
}

/// A layer preflight did not write, as the audit family sees it: the profile (its `audit:`
/// section, its tool names, its codes) and the resolved path of a JSONL log.
#[derive(Clone, Debug)]
pub struct ForeignAudit {
    pub profile: Arc<Profile>,
    pub jsonl_path: Option<std::path::PathBuf>,
}

/// How to reach a layer through its profile; keeps every gateway it opened so that they can all
/// be shut down at the end of the run.
#[derive(Clone)]
pub struct RemoteTarget {
    /// Kills the layer's child processes on Ctrl-C (the interrupt handler exits the process,
    /// so nothing is dropped); unregistered when the last clone goes.
    _interrupt: Arc<crate::db::registry::Registration>,
    /// Set once every connection has been closed: the interrupt teardown then has nothing to do.
    closed: Arc<std::sync::atomic::AtomicBool>,
    conn: Connection,
    /// The principal whose connection lists the tools (tenant A's first user).
    first: preflight_enforcer::Principal,
    opened: Arc<std::sync::Mutex<Vec<Arc<RemoteGateway>>>>,
    info: Arc<std::sync::Mutex<Option<TargetInfo>>>,
}

impl std::fmt::Debug for RemoteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTarget")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl RemoteTarget {
    pub fn new(conn: Connection, first: preflight_enforcer::Principal) -> RemoteTarget {
        let opened: Arc<std::sync::Mutex<Vec<Arc<RemoteGateway>>>> = Arc::default();
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let registration = crate::db::registry::register(Arc::new(KillChildren {
            opened: Arc::clone(&opened),
            closed: Arc::clone(&closed),
        }));
        RemoteTarget {
            _interrupt: Arc::new(registration),
            closed,
            conn,
            first,
            opened,
            info: Arc::default(),
        }
    }

    fn fresh_instances(&self) -> bool {
        matches!(self.conn.profile.transport, Transport::McpStdio { .. })
    }

    fn name(&self) -> String {
        match &*self.info.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(info) => info.summary(),
            None => format!(
                "{} (profile {})",
                self.conn.profile.transport.kind(),
                self.conn.profile.path
            ),
        }
    }

    async fn shutdown(&self) {
        let opened: Vec<Arc<RemoteGateway>> = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for g in opened {
            g.shutdown().await;
        }
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn child_pids(&self) -> Vec<u32> {
        self.opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|g| g.child_pids())
            .collect()
    }
}

/// The interrupt-time teardown of a remote target: SIGKILL to every child process that is still
/// ours (its parent is this process), so a Ctrl-C leaves no layer process behind.
struct KillChildren {
    opened: Arc<std::sync::Mutex<Vec<Arc<RemoteGateway>>>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::db::registry::Teardown for KillChildren {
    fn describe(&self) -> String {
        "the target's processes".to_string()
    }

    fn teardown(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let pids: Vec<u32> = self
            .opened
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|g| g.child_pids())
            .collect();
        let me = std::process::id();
        for pid in pids {
            // A reaped child's id may have been reused: only a process whose parent is us is
            // still our child.
            let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if parent == Some(me) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[async_trait]
impl GatewayFactory for RemoteTarget {
    fn name(&self) -> String {
        RemoteTarget::name(self)
    }

    fn applies_policy(&self) -> bool {
        false
    }

    /// A new connection (a new process for a stdio layer). The layer runs its own policy;
    /// `policy` is what probes judge it by. A layer that cannot be reached becomes an
    /// [`UnreachableGateway`]: every probe on it is an `error` with the fault as evidence.
    async fn instance(
        &self,
        _policy: Arc<Policy>,
        faults: Faults,
    ) -> Result<Arc<dyn Gateway>, TargetError> {
        if !faults.is_empty() {
            return Err(TargetError::Connect {
                target: RemoteTarget::name(self),
                source: "faults can only be injected into the built-in layer".into(),
            });
        }
        match RemoteGateway::connect(self.conn.clone(), &self.first).await {
            Ok(g) => {
                let g = Arc::new(g);
                *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.info().clone());
                self.opened
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Arc::clone(&g));
                Ok(g)
            }
            Err(e) => {
                tracing::warn!(target: "preflight::target", "the target could not be reached: {e}");
                Ok(Arc::new(UnreachableGateway::new(&self.conn.profile, &e)))
            }
        }
    }
}

/// How to start the built-in layer over a provisioned database.
#[derive(Clone)]
pub struct BuiltinTarget {
    agent_url: String,
    owner_url: String,
    /// Shared by every instance, so hashed values and cursors compare across instances.
    secret_key: [u8; 32],
    /// Where instances' JSONL audit copies go (one file per instance: each keeps its own chain).
    jsonl_dir: Arc<tempfile::TempDir>,
    instances: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for BuiltinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs carry passwords and the key is a secret.
        f.debug_struct("BuiltinTarget").finish_non_exhaustive()
    }
}

impl BuiltinTarget {
    /// `agent_url` is the layer's own login; `owner_url` reaches the approvals store as an
    /// operator would.
    pub fn new(agent_url: &str, owner_url: &str) -> Result<Self, TargetError> {
        let jsonl_dir = tempfile::Builder::new()
            .prefix("preflight-audit-")
            .tempdir()
            .map_err(|e| TargetError::Connect {
                target: "builtin".to_string(),
                source: Box::new(e),
            })?;
        Ok(Self {
            agent_url: agent_url.to_string(),
            owner_url: owner_url.to_string(),
            secret_key: rand::random(),
            jsonl_dir: Arc::new(jsonl_dir),
            instances: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// The approvals store over the owner connection, as `preflight approvals` uses it.
    fn approvals(&self) -> Option<Arc<dyn crate::families::approval::ApprovalDesk>> {
        Some(Arc::new(OwnerDesk {
            owner_url: self.owner_url.clone(),
        }))
    }

    /// The instance's audit sinks, as the policy configures them: the Postgres sink appends in
    /// the call's own transaction; a JSONL copy goes to this run's temporary folder rather than
    /// the policy's path (a probe run must not write into the operator's audit files).
    fn sinks(
        &self,
        policy: &Policy,
    ) -> Result<Vec<Arc<dyn preflight_enforcer::audit::AuditSink>>, TargetError> {
        use preflight_enforcer::audit::{FsyncPolicy, JsonlSink, PostgresSink, TracingSink};
        use preflight_enforcer::policy::AuditSinkConfig;
        let n = self
            .instances
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut sinks: Vec<Arc<dyn preflight_enforcer::audit::AuditSink>> = Vec::new();
        for sink in &policy.audit.sinks {
            match sink {
                AuditSinkConfig::Postgres => sinks.push(Arc::new(PostgresSink::in_transaction())),
                AuditSinkConfig::Jsonl { .. } => {
                    let path = self.jsonl_dir.path().join(format!("audit-{n}.jsonl"));
                    let jsonl = JsonlSink::open(&path, "preflight-probe", FsyncPolicy::Never)
                        .map_err(|e| TargetError::Connect {
                            target: "builtin".to_string(),
                            source: Box::new(e),
                        })?;
                    sinks.push(Arc::new(jsonl));
                }
                AuditSinkConfig::Tracing => sinks.push(Arc::new(TracingSink)),
            }
        }
        Ok(sinks)
    }

    fn options(
        &self,
        policy: &Policy,
        faults: Faults,
    ) -> Result<preflight_enforcer::builtin::BuiltinOptions, TargetError> {
        Ok(preflight_enforcer::builtin::BuiltinOptions {
            faults,
            secret_key: self.secret_key,
            audit: self.sinks(policy)?,
            max_connections: 6,
            ..Default::default()
        })
    }
}

#[async_trait]
impl GatewayFactory for BuiltinTarget {
    fn name(&self) -> String {
        "builtin".to_string()
    }

    fn applies_policy(&self) -> bool {
        true
    }

    async fn instance(
        &self,
        policy: Arc<Policy>,
        faults: Faults,
    ) -> Result<Arc<dyn Gateway>, TargetError> {
        let options = self.options(&policy, faults)?;
        let gw =
            preflight_enforcer::builtin::BuiltinGateway::connect(policy, &self.agent_url, options)
                .await
                .map_err(|e| TargetError::Connect {
                    target: "builtin".to_string(),
                    source: Box::new(e),
                })?;
        Ok(Arc::new(gw))
    }
}

/// Approves through the built-in approvals store on the owner connection, registering the
/// approver for the decision and removing the registration afterwards (a probe run leaves no
/// approver behind).
struct OwnerDesk {
    owner_url: String,
}

#[async_trait]
impl crate::families::approval::ApprovalDesk for OwnerDesk {
    async fn approve(
        &self,
        approval_id: &str,
        approver: &preflight_enforcer::Principal,
    ) -> Result<(), String> {
        use preflight_enforcer::approvals::{self, Verdict};
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.owner_url)
            .await
            .map_err(|e| format!("cannot reach the approvals store: {e}"))?;
        let id = approvals::parse_id(approval_id).map_err(|e| e.to_string())?;
        let was_registered = approvals::list_approvers(&mut conn)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|a| a.name == approver.user);
        approvals::add_approver(&mut conn, &approver.user, &approver.roles)
            .await
            .map_err(|e| e.to_string())?;
        let decided = approvals::decide(
            &mut conn,
            id,
            &approver.user,
            Verdict::Approve,
            Some("approved by a preflight probe"),
        )
        .await
        .map(|_| ())
        .map_err(|e| crate::runner::error_chain(&e));
        if !was_registered {
            approvals::remove_approver(&mut conn, &approver.user)
                .await
                .map_err(|e| e.to_string())?;
        }
        decided
    }
}
