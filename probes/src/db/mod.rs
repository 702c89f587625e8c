//! Throwaway Postgres: the backend choice (`Db`), decided once at the edge, and the provisioned
//! [`Database`] every probe, test and the agent harness stand on.
//!
//! Each backend starts (or reaches) a server, loads the shop fixtures and hands back two
//! connections: the ground-truth owner connection and the agent-role connection the enforcement
//! layer uses. Dropping the `Database` tears the server down (container removed, cluster stopped
//! and deleted); a Ctrl-C handler does the same for whatever is still alive.

use std::path::PathBuf;

use serde::Serialize;

/// Which database to run against, as chosen on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// Container when a Docker daemon answers, else local; the choice and reason are recorded.
    Auto,
    /// testcontainers with this image (`--pg-image` / `PREFLIGHT_PG_IMAGE`, default the official
    /// image with a pinned tag).
    Container { image: String },
    /// A throwaway cluster from the system's `initdb`/`pg_ctl` (`--pg-bin` or Debian's versioned
    /// bin folder).
    Local { bin_dir: Option<PathBuf> },
    /// An existing database (staging): read-only unless `allow_writes`.
    Url { url: String, allow_writes: bool },
}

/// Options for loading the fixtures.
#[derive(Clone, Debug)]
pub struct FixtureOptions {
    /// The fixtures folder, e.g. `fixtures/shop`.
    pub dir: PathBuf,
    /// Orders per tenant filled by the scale step.
    pub rows: u64,
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
