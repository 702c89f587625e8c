//! [`DbError`]: why a database could not be provisioned, split into the caller's mistakes
//! (configuration: exit 2) and the environment's (infrastructure: exit 3).
//!
//! No variant ever holds a password: URLs are stored redacted, and server messages that could
//! echo a secret are not kept.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Whether an error is the caller's to fix (flags, files) or the environment's (Docker, binaries,
/// servers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbErrorKind {
    /// Bad input: a missing fixtures folder, a broken SQL file, a malformed URL, a flag that does
    /// not apply.
    Config,
    /// Something that should be there is not: a Docker daemon, PostgreSQL binaries, a server.
    Infra,
}

/// Why a database could not be provisioned or reached.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("fixtures folder {} does not exist", path.display())]
    FixturesMissing { path: PathBuf },

    #[error("fixtures folder {} holds no *.sql files", path.display())]
    FixturesEmpty { path: PathBuf },

    #[error("cannot read fixtures from {}", path.display())]
    FixturesRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A fixture file failed on the server. `line`/`column` are 1-based and point at the error
    /// (or, when the server gave no position, at the start of the failing statement).
    #[error("{}: {message}", location(file, *line, *column))]
    FixtureSql {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        /// The server's message, SQLSTATE, detail, hint and context, and the offending line.
        message: String,
    },

    #[error("invalid database URL {url}: {reason}")]
    BadUrl {
        /// Redacted.
        url: String,
        reason: String,
    },

    /// A flag combination or option that does not make sense.
    #[error("{0}")]
    Config(String),

    #[error("no Docker daemon answered at {host}")]
    DockerUnavailable {
        host: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("docker image {image} is not present locally and could not be pulled")]
    ImageUnavailable {
        image: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("the {image} container did not start")]
    ContainerStart {
        image: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("PostgreSQL server binaries (initdb, postgres) not found; looked in {searched}")]
    BinariesNotFound { searched: String },

    #[error("{what}")]
    Command {
        /// What was being done, e.g. `initdb failed (exit status 1)`, plus its output's tail.
        what: String,
        #[source]
        source: Option<std::io::Error>,
    },

    #[error("the local server did not become ready: {reason}{}", log_tail(log))]
    NotReady { reason: String, log: String },

    #[error("cannot connect to {target}")]
    Connect {
        /// Redacted.
        target: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("{what}")]
    Query {
        what: String,
        #[source]
        source: sqlx::Error,
    },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("no backend could start a database:{}", tried_list(tried))]
    NoBackend { tried: Vec<(String, DbError)> },
}

impl DbError {
    /// Configuration (the caller's to fix) or infrastructure (the environment's).
    pub fn kind(&self) -> DbErrorKind {
        match self {
            DbError::FixturesMissing { .. }
            | DbError::FixturesEmpty { .. }
            | DbError::FixtureSql { .. }
            | DbError::BadUrl { .. }
            | DbError::Config(_) => DbErrorKind::Config,
            DbError::FixturesRead { .. }
            | DbError::DockerUnavailable { .. }
            | DbError::ImageUnavailable { .. }
            | DbError::ContainerStart { .. }
            | DbError::BinariesNotFound { .. }
            | DbError::Command { .. }
            | DbError::NotReady { .. }
            | DbError::Connect { .. }
            | DbError::Query { .. }
            | DbError::Io { .. } => DbErrorKind::Infra,
            DbError::NoBackend { tried } => {
                if tried.iter().all(|(_, e)| e.kind() == DbErrorKind::Config) && !tried.is_empty() {
                    DbErrorKind::Config
                } else {
                    DbErrorKind::Infra
                }
            }
        }
    }

    /// The message and every cause, one per line (`caused by: ...`), redacted: what a command
    /// line shows.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let _ = write!(out, "\n  caused by: {cause}");
            source = cause.source();
        }
        crate::db::redact(&out)
    }

    /// Whether trying another backend could help (used by `auto`): problems with the fixtures or
    /// the caller's input would fail the same way everywhere.
    pub(crate) fn is_backend_failure(&self) -> bool {
        self.kind() == DbErrorKind::Infra
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DbError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn query(what: impl Into<String>, source: sqlx::Error) -> Self {
        DbError::Query {
            what: what.into(),
            source,
        }
    }
}

fn location(file: &std::path::Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
        (Some(l), None) => format!("{}:{l}", file.display()),
        (None, _) => format!("{} (line unknown)", file.display()),
    }
}

fn log_tail(log: &str) -> String {
    if log.trim().is_empty() {
        String::new()
    } else {
        format!("\n  server log (last lines):\n{}", indent(log, "    "))
    }
}

fn tried_list(tried: &[(String, DbError)]) -> String {
    let mut out = String::new();
    for (backend, error) in tried {
        let _ = write!(
            out,
            "\n  - {backend}: {}",
            indent_rest(&error.report(), "    ")
        );
    }
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Indents every line but the first (which continues a line already started).
fn indent_rest(text: &str, prefix: &str) -> String {
    let mut lines = text.lines();
    let mut out = lines.next().unwrap_or_default().to_string();
    for l in lines {
        out.push('\n');
        out.push_str(prefix);
        out.push_str(l);
    }
    out
}
