//! [`Database`]: a provisioned database with the fixtures loaded — its connection URLs (secret:
//! never print them unredacted), lazily created pools per role, and the server it stands on,
//! which is torn down when the `Database` is dropped.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use tokio::sync::OnceCell;

use super::container::ContainerServer;
use super::error::DbError;
use super::local::LocalCluster;
use super::redact::redact_url;
use super::BackendInfo;

/// The roles a test or probe can connect as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `preflight_owner`: owns every fixture object, bypasses RLS; the ground truth. For a
    /// staging URL that was not loaded by this run, the URL's own user.
    Owner,
    /// `preflight_agent`: what the enforcement layer logs in as.
    Agent,
    /// `preflight_audit_writer`: may only append to the audit log.
    Audit,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "preflight_owner",
            Role::Agent => "preflight_agent",
            Role::Audit => "preflight_audit_writer",
        }
    }
}

/// How long provisioning took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Until the server accepted connections (container started, or cluster initialised and
    /// started; the connection check for a URL).
    pub server: Duration,
    /// Loading the fixture files, when this run loaded them.
    pub fixtures: Option<Duration>,
    /// Start to ready, everything included.
    pub total: Duration,
}

/// What a throwaway database occupies on this machine while it lives, so tests can check it
/// is gone afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// A container: its id and the value of its [`INSTANCE_LABEL`](super::INSTANCE_LABEL).
    Container { id: String, instance: String },
    /// A local cluster: the temp dir holding its data dir, socket and log.
    LocalDir(PathBuf),
}

/// One way to log in: the full URL (with password) and the equivalent sqlx options.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    pub options: PgConnectOptions,
}

impl Endpoint {
    pub(crate) fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// Our connections' statement logging: slow statements at debug level, since sqlx's default
/// warns with the full SQL text (a fixture file, a probe's deliberately expensive scan).
pub(crate) fn quiet(options: PgConnectOptions) -> PgConnectOptions {
    options.log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
}

/// The server under a database.
pub(crate) enum Server {
    Container(Box<ContainerServer>),
    Local(LocalCluster),
    /// Someone else's server: nothing to tear down.
    Remote,
}

/// A provisioned database with the fixtures loaded. Dropping it tears the server down
/// (container removed; local cluster stopped and its temp dir deleted; a URL is left alone).
pub struct Database {
    pub(crate) info: BackendInfo,
    pub(crate) owner: Endpoint,
    pub(crate) agent: Endpoint,
    pub(crate) audit: Endpoint,
    pub(crate) superuser: Option<Endpoint>,
    pub(crate) read_only: bool,
    pub(crate) fixtures_loaded: bool,
    pub(crate) rows: Option<u64>,
    pub(crate) timings: Timings,
    pub(crate) server: Server,
    pools: [OnceCell<PgPool>; 3],
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("info", &self.info)
            .field("owner", &self.owner.redacted())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Database {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        info: BackendInfo,
        owner: Endpoint,
        agent: Endpoint,
        audit: Endpoint,
        superuser: Option<Endpoint>,
        read_only: bool,
        rows: Option<u64>,
        timings: Timings,
        server: Server,
    ) -> Self {
        Database {
            info,
            owner,
            agent,
            audit,
            superuser,
            read_only,
            fixtures_loaded: rows.is_some(),
            rows,
            timings,
            server,
            pools: [OnceCell::new(), OnceCell::new(), OnceCell::new()],
        }
    }

    /// The backend used, why, and the server version.
    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// The ground-truth connection URL. Secret: show it through [`redact_url`].
    pub fn owner_url(&self) -> &str {
        &self.owner.url
    }

    /// The enforcement layer's connection URL (`preflight_agent`). Secret.
    pub fn agent_url(&self) -> &str {
        &self.agent.url
    }

    /// The audit writer's connection URL (`preflight_audit_writer`). Secret.
    pub fn audit_url(&self) -> &str {
        &self.audit.url
    }

    /// The superuser's URL, for the throwaway backends (and a staging URL this run loaded the
    /// fixtures through). Secret; for tests and diagnostics.
    pub fn superuser_url(&self) -> Option<&str> {
        self.superuser.as_ref().map(|e| e.url.as_str())
    }

    /// The URL of `role`. Secret.
    pub fn url(&self, role: Role) -> &str {
        &self.endpoint(role).url
    }

    /// The URL of `role` with its password masked, for display.
    pub fn redacted_url(&self, role: Role) -> String {
        self.endpoint(role).redacted()
    }

    /// sqlx connect options for `role`.
    pub fn connect_options(&self, role: Role) -> PgConnectOptions {
        self.endpoint(role).options.clone()
    }

    /// A staging database opened without `allow_writes`: probes must not write, and the owner
    /// connection refuses writes itself (`default_transaction_read_only`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether this run loaded the fixtures (always for container and local).
    pub fn fixtures_loaded(&self) -> bool {
        self.fixtures_loaded
    }

    /// Orders per tenant loaded by the scale step, when this run loaded the fixtures.
    pub fn rows(&self) -> Option<u64> {
        self.rows
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// What this database occupies on the machine (`None` for a URL).
    pub fn footprint(&self) -> Option<Footprint> {
        match &self.server {
            Server::Container(c) => Some(Footprint::Container {
                id: c.id.clone(),
                instance: c.instance().to_string(),
            }),
            Server::Local(l) => Some(Footprint::LocalDir(l.root().to_path_buf())),
            Server::Remote => None,
        }
    }

    /// The ground-truth pool (created on first use, then shared).
    pub async fn owner_pool(&self) -> Result<PgPool, DbError> {
        self.pool(Role::Owner).await
    }

    /// The agent-role pool (created on first use, then shared).
    pub async fn agent_pool(&self) -> Result<PgPool, DbError> {
        self.pool(Role::Agent).await
    }

    /// The audit-writer pool (created on first use, then shared).
    pub async fn audit_pool(&self) -> Result<PgPool, DbError> {
        self.pool(Role::Audit).await
    }

    /// The pool of `role` (created on first use, then shared).
    pub async fn pool(&self, role: Role) -> Result<PgPool, DbError> {
        let endpoint = self.endpoint(role);
        let cell = &self.pools[role as usize];
        cell.get_or_try_init(|| async {
            PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(endpoint.options.clone())
                .await
                .map_err(|source| DbError::Connect {
                    target: endpoint.redacted(),
                    source,
                })
        })
        .await
        .cloned()
    }

    /// Stops (and removes) the server now, keeping this handle: every connection fails from
    /// here on, as in an outage. For tests; a staging URL is never stopped.
    pub fn stop_server(&self) -> Result<(), DbError> {
        match &self.server {
            Server::Container(c) => {
                c.teardown();
                Ok(())
            }
            Server::Local(l) => {
                l.teardown();
                Ok(())
            }
            Server::Remote => Err(DbError::Config(
                "refusing to stop a server preflight did not start (a URL database)".to_string(),
            )),
        }
    }

    fn endpoint(&self, role: Role) -> &Endpoint {
        match role {
            Role::Owner => &self.owner,
            Role::Agent => &self.agent,
            Role::Audit => &self.audit,
        }
    }
}
