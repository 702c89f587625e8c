//! Throwaway Postgres: the backend choice (`Db`), decided once at the edge, and the provisioned
//! [`Database`] every probe, test and the agent harness stand on.
//!
//! Each backend starts (or reaches) a server, loads the shop fixtures and hands back two
//! connections: the ground-truth owner connection and the agent-role connection the enforcement
//! layer uses. Dropping the `Database` tears the server down (container removed, cluster stopped
//! and deleted); a Ctrl-C handler does the same for whatever is still alive.
//!
//! The logic lives in named files beside this one: [`provision()`](provision::provision) picks
//! and starts a backend (`container.rs`, `local.rs`, `url.rs`), `fixtures.rs` loads the SQL,
//! `database.rs` is the handle, `registry.rs` the interrupt-time cleanup and `redact.rs` the
//! connection-string masking used wherever a URL might be shown.

use std::path::PathBuf;

use serde::Serialize;

mod container;
mod database;
mod error;
mod fixtures;
mod local;
mod provision;
mod redact;
pub(crate) mod registry;
pub mod testing;
mod url;

pub use self::container::{DEFAULT_PG_IMAGE, INSTANCE_LABEL, SESSION_LABEL};
pub use self::database::{Database, Footprint, Role, Timings};
pub use self::error::{DbError, DbErrorKind};
pub use self::fixtures::{FixtureFile, FixtureSet};
pub use self::provision::provision;
pub use self::redact::{redact, redact_url};
pub use self::registry::{install_interrupt_handler, teardown_all};

/// Which database to run against, as chosen on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// Container when a Docker daemon answers (and the image is there or can be pulled), else
    /// local; the choice and reason are recorded. `image` and `bin_dir` are what the container
    /// and local backends would use.
    Auto {
        image: String,
        bin_dir: Option<PathBuf>,
    },
    /// testcontainers with this image (`--pg-image` / `PREFLIGHT_PG_IMAGE`, default the official
    /// image with a pinned tag).
    Container { image: String },
    /// A throwaway cluster from the system's `initdb`/`pg_ctl` (`--pg-bin` or Debian's versioned
    /// bin folder).
    Local { bin_dir: Option<PathBuf> },
    /// An existing database (staging): read-only unless `allow_writes`.
    Url { url: String, allow_writes: bool },
}

impl Db {
    /// `auto` with the default image ([`DEFAULT_PG_IMAGE`], or `PREFLIGHT_PG_IMAGE` when set)
    /// and the binaries found in the usual places.
    pub fn auto() -> Self {
        Db::Auto {
            image: default_image(),
            bin_dir: None,
        }
    }
}

impl Default for Db {
    fn default() -> Self {
        Db::auto()
    }
}

/// The container image to use when nobody named one: `PREFLIGHT_PG_IMAGE` when set and not
/// empty, else [`DEFAULT_PG_IMAGE`].
pub fn default_image() -> String {
    std::env::var("PREFLIGHT_PG_IMAGE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PG_IMAGE.to_string())
}

/// Options for loading the fixtures.
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    /// The fixtures folder, e.g. `fixtures/shop`.
    pub dir: PathBuf,
    /// Orders per tenant filled by the scale step.
    pub rows: u64,
    /// How a `Db::Url` database is treated; ignored by the throwaway backends, which always
    /// load the fixtures into their fresh server.
    pub staging: StagingOptions,
}

impl FixtureOptions {
    /// The default row count per tenant (what `fixtures/shop/40_scale.sql` assumes too).
    pub const DEFAULT_ROWS: u64 = 20_000;

    /// Fixtures from `dir` at the default row count, staging databases left untouched.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FixtureOptions {
            dir: dir.into(),
            rows: Self::DEFAULT_ROWS,
            staging: StagingOptions::default(),
        }
    }
}

/// What to do with an existing (`Db::Url`) database. By default nothing is written to it: the
/// fixtures are expected to be there already and the agent and audit roles' credentials come
/// from `agent_url` / `audit_url`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StagingOptions {
    /// Load the fixtures into the database (it must not hold them yet, and `allow_writes` must
    /// be set). The fixture roles are cluster-wide: loading resets their passwords.
    pub load_fixtures: bool,
    /// How the enforcement layer logs in (`preflight_agent`), when the fixtures are not loaded
    /// by this run. Must point at the same server and database as the owner URL.
    pub agent_url: Option<String>,
    /// How the audit writer logs in (`preflight_audit_writer`), when the fixtures are not
    /// loaded by this run; without it `Database::audit_url` falls back to the agent URL (the
    /// agent is a member of the audit writer role).
    pub audit_url: Option<String>,
    /// A superuser login to the same database, when the fixtures are not loaded by this run:
    /// the probes that change roles (the `server` family's health probe takes the layer's login
    /// away for a moment) need one. Without it they are `not_verified`.
    pub superuser_url: Option<String>,
}

/// The backend that was actually used, for reports.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BackendInfo {
    /// `container`, `local` or `url`.
    pub kind: String,
    /// e.g. the image name, the bin folder, or the URL with credentials masked.
    pub detail: String,
    /// Why this backend was chosen (for `auto`) or `requested`.
    pub reason: String,
    pub server_version: String,
}
