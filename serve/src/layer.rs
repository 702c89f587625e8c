//! Starting the built-in layer for serving ([`Layer`]): the policy is checked against the live
//! catalog, and the audit sinks, budget store and approvals come from the policy exactly as
//! `preflight probe` starts them. Unlike a probe run, the JSONL sink writes to the policy's own
//! path: this is the operator's layer, and its log is the operator's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use preflight_enforcer::audit::{AuditSink, FsyncPolicy, JsonlSink, PostgresSink, TracingSink};
use preflight_enforcer::budget_store::BudgetStore;
use preflight_enforcer::builtin::{BuiltinGateway, BuiltinOptions};
use preflight_enforcer::policy::{self, AuditSinkConfig, Catalog, Policy};
use preflight_enforcer::Faults;

/// How long the health check waits for the database before calling it unreachable.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `preflight serve` was told to start.
#[derive(Clone)]
pub struct LayerConfig {
    pub policy_path: PathBuf,
    /// The agent login (a secret: it carries a password).
    pub database_url: String,
    /// HMAC key for hashed fields and cursor signatures. Several instances behind one load
    /// balancer need the same key, or a cursor from one is refused by the next.
    pub secret_key: Option<[u8; 32]>,
    /// Enforcement switched off on purpose; only the test variants set it.
    pub faults: Faults,
    /// This instance's name, for `{instance}` in a JSONL sink's path (the process id when
    /// `None`; see [`preflight_enforcer::policy::jsonl_path`]).
    pub instance: Option<String>,
}

impl std::fmt::Debug for LayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries a password and the key is a secret.
        f.debug_struct("LayerConfig")
            .field("policy_path", &self.policy_path)
            .finish_non_exhaustive()
    }
}

/// Why the layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The policy file is unreadable or invalid (every problem, at its line and column).
    #[error("{0}")]
    Policy(String),
    #[error("cannot read the database catalog")]
    Catalog(#[source] policy::CatalogError),
    #[error("cannot open the audit sink {what}")]
    Sink {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot start the budget store")]
    BudgetStore(#[source] preflight_enforcer::budget_store::BudgetError),
    #[error("cannot start the enforcement layer")]
    Gateway(#[source] preflight_enforcer::builtin::ConnectError),
}

impl LayerError {
    /// Whether the fault is the operator's input (exit 2) rather than unreachable infrastructure.
    pub fn is_config(&self) -> bool {
        matches!(self, LayerError::Policy(_))
    }
}

/// The started layer: the gateway, and what its health endpoint inspects.
#[derive(Clone)]
pub struct Layer {
    pub gateway: Arc<BuiltinGateway>,
    pub policy: Arc<Policy>,
    pub sinks: Vec<Arc<dyn AuditSink>>,
    pub budget_store: Arc<dyn BudgetStore>,
}

impl Layer {
    pub async fn start(config: &LayerConfig) -> Result<Layer, LayerError> {
        let shown = config.policy_path.display().to_string();
        let text = std::fs::read_to_string(&config.policy_path).map_err(|e| {
            LayerError::Policy(format!("{shown}: cannot read the policy file: {e}"))
        })?;
        let catalog = Catalog::read_url(&config.database_url)
            .await
            .map_err(LayerError::Catalog)?;
        let policy = Arc::new(
            policy::load_str(&text, &shown, Some(&catalog))
                .map_err(|e| LayerError::Policy(e.to_string()))?,
        );
        let sinks = open_sinks(&policy, &config.database_url, config.instance.as_deref()).await?;
        Layer::assemble(
            policy,
            &config.database_url,
            config.faults.clone(),
            config.secret_key,
            sinks,
        )
        .await
    }

    /// The layer over a policy already loaded and checked against the catalog (a probe run
    /// serving the layer it probes, in its own process). Its JSONL copy, if the policy has one,
    /// goes to `jsonl_dir` rather than the policy's path: a run must not write into the
    /// operator's audit files.
    pub async fn start_with_policy(
        policy: Arc<Policy>,
        database_url: &str,
        faults: Faults,
        jsonl_dir: &std::path::Path,
    ) -> Result<Layer, LayerError> {
        let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
        for sink in &policy.audit.sinks {
            match sink {
                AuditSinkConfig::Jsonl { .. } => {
                    let path = jsonl_dir.join("served-audit.jsonl");
                    let jsonl = JsonlSink::open(&path, "preflight-serve", FsyncPolicy::Never)
                        .map_err(|e| LayerError::Sink {
                            what: format!("jsonl at {}", path.display()),
                            source: Box::new(e),
                        })?;
                    sinks.push(Arc::new(jsonl));
                }
                AuditSinkConfig::Postgres => sinks.push(postgres_sink(database_url).await?),
                AuditSinkConfig::Tracing => sinks.push(Arc::new(TracingSink)),
            }
        }
        Layer::assemble(policy, database_url, faults, None, sinks).await
    }

    async fn assemble(
        policy: Arc<Policy>,
        database_url: &str,
        faults: Faults,
        secret_key: Option<[u8; 32]>,
        sinks: Vec<Arc<dyn AuditSink>>,
    ) -> Result<Layer, LayerError> {
        let budget_store = preflight_enforcer::budget_store::from_config(&policy.budget_store)
            .await
            .map_err(LayerError::BudgetStore)?;
        let options = BuiltinOptions {
            faults,
            secret_key: secret_key.unwrap_or_else(rand::random),
            audit: sinks.clone(),
            budget_store: Some(Arc::clone(&budget_store)),
            ..Default::default()
        };
        let gateway = BuiltinGateway::connect(Arc::clone(&policy), database_url, options)
            .await
            .map_err(LayerError::Gateway)?;
        Ok(Layer {
            gateway: Arc::new(gateway),
            policy,
            sinks,
            budget_store,
        })
    }

    /// Whether the database answers a trivial query within [`DB_CHECK_TIMEOUT`]; `Err` says why
    /// not (without the URL).
    pub async fn database_reachable(&self) -> Result<(), String> {
        let query = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(self.gateway.pool());
        match tokio::time::timeout(DB_CHECK_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                DB_CHECK_TIMEOUT.as_millis()
            )),
        }
    }
}

/// The policy's audit sinks, the JSONL copy at the policy's own path (see [`postgres_sink`]).
async fn open_sinks(
    policy: &Policy,
    database_url: &str,
    instance: Option<&str>,
) -> Result<Vec<Arc<dyn AuditSink>>, LayerError> {
    let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
    for sink in &policy.audit.sinks {
        match sink {
            AuditSinkConfig::Postgres => sinks.push(postgres_sink(database_url).await?),
            AuditSinkConfig::Jsonl { path } => {
                // `{pid}`/`{instance}`: each instance its own file, each file its own chain.
                let path = &preflight_enforcer::policy::jsonl_path(path, instance);
                // A fresh deployment has no log folder yet; the log itself is created on open.
                if let Some(parent) = std::path::Path::new(path).parent() {
                    if !parent.as_os_str().is_empty() {
                        std::fs::create_dir_all(parent).map_err(|e| LayerError::Sink {
                            what: format!("jsonl at {path}"),
                            source: Box::new(e),
                        })?;
                    }
                }
                let jsonl = JsonlSink::open(
                    std::path::Path::new(path),
                    "preflight-serve",
                    FsyncPolicy::Always,
                )
                .map_err(|e| LayerError::Sink {
                    what: format!("jsonl at {path}"),
                    source: Box::new(e),
                })?;
                sinks.push(Arc::new(jsonl));
            }
            AuditSinkConfig::Tracing => sinks.push(Arc::new(TracingSink)),
        }
    }
    Ok(sinks)
}

/// The Postgres sink with a small pool of its own: calls still append inside their own
/// transaction, but refusals before any call (a bad token, a rate limit) need a connection, and
/// the health check asks it for its insert privilege.
async fn postgres_sink(database_url: &str) -> Result<Arc<dyn AuditSink>, LayerError> {
    let pg = PostgresSink::connect(database_url, 2)
        .await
        .map_err(|e| LayerError::Sink {
            what: "postgres".to_string(),
            source: Box::new(e),
        })?;
    Ok(Arc::new(pg))
}
