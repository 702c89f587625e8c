//! What `preflight audit` and `preflight approvals` share: where the log (or queue) is read
//! from ([`SourceArgs`] → [`Source`]), the owner connection ([`connect`]), the policy file
//! ([`PolicyArg`]), the output format, and how library errors become exit codes
//! ([`failure`]).
//!
//! The database URL comes from `--url` or, when neither `--url` nor `--jsonl` is given, from
//! `PREFLIGHT_AUDIT_DB_URL`; it is never printed unredacted.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use preflight_enforcer::policy::{self, Catalog, Policy};
use preflight_probes::db::{redact, redact_url};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

use crate::error::CliError;

/// The environment variable that names the owner connection when `--url` is not given.
pub const URL_ENV: &str = "PREFLIGHT_AUDIT_DB_URL";

/// The shipped policy, built in so the commands work from any folder.
const EMBEDDED_POLICY: &str = include_str!("../../fixtures/shop/policy.yaml");
const DEFAULT_POLICY: &str = "fixtures/shop/policy.yaml";

/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the audit log is read from: exactly one of a database and a file.
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// The audit database: a postgres:// URL of the owner connection (it reads
    /// preflight_audit). Prefer the environment variable PREFLIGHT_AUDIT_DB_URL, which is used
    /// when neither --url nor --jsonl is given: command lines are visible to other users.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// A JSONL audit log file (the `jsonl` sink's hash-chained copy) instead of the database.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
}

/// The validated source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Postgres { url: String },
    Jsonl(PathBuf),
}

impl Source {
    /// How the source is shown: the URL with its password masked, or the file.
    pub fn shown(&self) -> String {
        match self {
            Source::Postgres { url } => redact_url(url),
            Source::Jsonl(p) => p.display().to_string(),
        }
    }
}

fn env_url() -> Option<String> {
    std::env::var(URL_ENV).ok().filter(|v| !v.trim().is_empty())
}

fn check_url(url: &str, from: &str) -> Result<String, CliError> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(url.to_string())
    } else {
        Err(CliError::config(format!(
            "{from}: expected a postgres:// URL, got {:?}",
            redact(url)
        )))
    }
}

impl SourceArgs {
    /// Exactly one of `--url` (or the environment variable) and `--jsonl`.
    pub fn resolve(&self) -> Result<Source, CliError> {
        self.resolve_with(env_url())
    }

    fn resolve_with(&self, env: Option<String>) -> Result<Source, CliError> {
        match (&self.url, &self.jsonl) {
            (Some(_), Some(_)) => Err(CliError::config(
                "--url and --jsonl both given: read either the database or a JSONL file, not both",
            )),
            (Some(url), None) => Ok(Source::Postgres {
                url: check_url(url, "--url")?,
            }),
            (None, Some(path)) => Ok(Source::Jsonl(path.clone())),
            (None, None) => match env {
                Some(url) => Ok(Source::Postgres {
                    url: check_url(&url, URL_ENV)?,
                }),
                None => Err(CliError::config(format!(
                    "no audit log given: pass --url URL (or set {URL_ENV}) for the database, or --jsonl FILE"
                ))),
            },
        }
    }
}

/// The database only (the approval queue has no file form).
#[derive(Args, Debug, Clone, Default)]
pub struct DbUrlArgs {
    /// The database holding preflight_ops.approvals: a postgres:// URL of the owner
    /// connection. Prefer the environment variable PREFLIGHT_AUDIT_DB_URL, used when --url is
    /// not given: command lines are visible to other users.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

impl DbUrlArgs {
    pub fn resolve(&self) -> Result<String, CliError> {
        self.resolve_with(env_url())
    }

    fn resolve_with(&self, env: Option<String>) -> Result<String, CliError> {
        match (&self.url, env) {
            (Some(url), _) => check_url(url, "--url"),
            (None, Some(url)) => check_url(&url, URL_ENV),
            (None, None) => Err(CliError::config(format!(
                "no database given: pass --url URL or set {URL_ENV} (the owner connection)"
            ))),
        }
    }
}

/// Connects as the owner: a malformed URL is a usage error (exit 2), a database that does not
/// answer or refuses the login is infrastructure (exit 3). Messages never carry the password.
pub async fn connect(url: &str) -> Result<PgConnection, CliError> {
    let shown = redact_url(url);
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| {
            CliError::config(format!(
                "{shown} is not a usable postgres:// URL: {}",
                redact(&e.to_string())
            ))
        })?
        .log_statements(log::LevelFilter::Debug)
        // Verifying a large log is one long COPY: not worth a warning with its SQL.
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(CliError::infra(format!(
            "cannot connect to {shown}: {}",
            redact(&chain(&e))
        ))),
        Err(_) => Err(CliError::infra(format!(
            "cannot connect to {shown}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// An error with all its causes, `: `-joined.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// A library error that carries (somewhere in its causes) a database error: a refusal by the
/// server for what was asked (no such table, no privilege: the wrong database or role) is a
/// configuration problem (exit 2), anything else (connection lost, I/O) is infrastructure
/// (exit 3).
pub fn failure(e: &(dyn std::error::Error + 'static)) -> CliError {
    let text = redact(&chain(e));
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(sqlx::Error::Database(d)) = err.downcast_ref::<sqlx::Error>() {
            let code = d.code().unwrap_or_default();
            // 42: syntax or access rule violation (undefined table, insufficient privilege);
            // 3F: invalid schema name.
            if code.starts_with("42") || code.starts_with("3F") {
                return CliError::config(format!(
                    "{text} (is this the owner connection of a database with the preflight fixtures?)"
                ));
            }
        }
        cur = err.source();
    }
    CliError::infra(text)
}

/// The policy file: where prune reads the retention, and subject the sensitive columns.
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyArg {
    /// The policy file [default: fixtures/shop/policy.yaml, else the copy built into preflight].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl PolicyArg {
    /// The policy text and the path it is reported under.
    fn text(&self) -> Result<(String, String), CliError> {
        let path = match &self.policy {
            Some(p) => p.clone(),
            None if Path::new(DEFAULT_POLICY).is_file() => PathBuf::from(DEFAULT_POLICY),
            None => return Ok((EMBEDDED_POLICY.to_string(), DEFAULT_POLICY.to_string())),
        };
        std::fs::read_to_string(&path)
            .map(|t| (t, path.display().to_string()))
            .map_err(|e| {
                CliError::config(format!(
                    "{}: cannot read the policy file: {e}",
                    path.display()
                ))
            })
    }

    /// Loads the policy (against a catalog when given), every problem a usage error (exit 2).
    pub fn load(&self, catalog: Option<&Catalog>) -> Result<Policy, CliError> {
        let (text, path) = self.text()?;
        policy::load_str(&text, &path, catalog).map_err(|e| {
            let n = e.len();
            CliError::config(format!(
                "the policy file is not valid ({n} problem{}):\n{e}",
                if n == 1 { "" } else { "s" },
            ))
        })
    }
}

/// Table for people, JSON for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::infra(format!("cannot write to stdout: {e}"))),
    }
}

/// Pretty JSON and a newline.
pub fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::infra(format!("cannot render JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// A status line on stderr (stdout stays the result).
pub fn status(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: Option<&str>, jsonl: Option<&str>, env: Option<&str>) -> Result<Source, String> {
        SourceArgs {
            url: url.map(String::from),
            jsonl: jsonl.map(PathBuf::from),
        }
        .resolve_with(env.map(String::from))
        .map_err(|e| {
            assert!(matches!(e, CliError::Config(_)));
            e.to_string()
        })
    }

    #[test]
    fn exactly_one_source() {
        assert_eq!(
            source(Some("postgres://u:p@h/d"), None, None),
            Ok(Source::Postgres {
                url: "postgres://u:p@h/d".into()
            })
        );
        assert_eq!(
            source(None, Some("a.jsonl"), Some("postgres://e@h/d")),
            Ok(Source::Jsonl("a.jsonl".into())),
            "an explicit --jsonl wins over the environment"
        );
        assert_eq!(
            source(None, None, Some("postgresql://e@h/d")),
            Ok(Source::Postgres {
                url: "postgresql://e@h/d".into()
            })
        );
        let both = source(Some("postgres://u@h/d"), Some("a.jsonl"), None).unwrap_err();
        assert!(both.contains("both given"), "{both}");
        let none = source(None, None, None).unwrap_err();
        assert!(none.contains("--url") && none.contains("--jsonl"), "{none}");
    }

    #[test]
    fn a_bad_url_is_a_usage_error_without_its_password() {
        let e = source(Some("mysql://root:hunter2@h/d"), None, None).unwrap_err();
        assert!(e.contains("expected a postgres:// URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = DbUrlArgs { url: None }
            .resolve_with(Some("http://x:hunter2@h".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(URL_ENV) && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_default_policy_loads_and_has_a_retention() {
        let p = PolicyArg::default()
            .load(None)
            .expect("shipped policy loads");
        assert!(p.audit.retention.is_some());
    }
}
