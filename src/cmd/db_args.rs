//! The database flags every command that needs a database shares (`db up`, `probe`, `agent`):
//! [`DbArgs`], turned into the library's [`Db`] and [`FixtureOptions`] by [`DbArgs::to_db`].

use std::path::PathBuf;

use clap::Args;
use preflight_probes::db::{
    redact, Db, DbError, DbErrorKind, FixtureOptions, StagingOptions, DEFAULT_PG_IMAGE,
};

use crate::error::CliError;

/// Where the database comes from and what goes into it.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The database: `auto` (a container when a Docker daemon answers, else a local cluster),
    /// `container`, `local`, or a postgres:// URL of an existing (staging) database. Prefer the
    /// environment variable for URLs: command lines are visible to other users.
    #[arg(
        long,
        env = "PREFLIGHT_DB",
        default_value = "auto",
        value_name = "auto|container|local|URL",
        hide_env_values = true
    )]
    pub db: String,

    /// The Postgres image for `--db container` and `auto`.
    #[arg(long, env = "PREFLIGHT_PG_IMAGE", default_value = DEFAULT_PG_IMAGE, value_name = "IMAGE")]
    pub pg_image: String,

    /// The folder holding `initdb` and `postgres` for `--db local` and `auto` [default: the
    /// newest /usr/lib/postgresql/*/bin, else PATH].
    #[arg(long, env = "PREFLIGHT_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Bulk orders per tenant (budget probes need a table that is expensive to scan).
    #[arg(long, default_value_t = FixtureOptions::DEFAULT_ROWS, value_name = "N")]
    pub rows: u64,

    /// The fixtures folder [default: ./fixtures/shop, else the one in preflight's source tree].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,

    /// With a URL: allow writes (write probes then touch only rows they create). Without it
    /// the owner connection is read-only.
    #[arg(long)]
    pub allow_writes: bool,

    /// With a URL: load the fixtures into it (an empty database; needs a superuser URL and
    /// --allow-writes). The fixture roles are cluster-wide: their passwords are reset.
    #[arg(long)]
    pub load_fixtures: bool,

    /// With a URL whose fixtures were loaded earlier: how the agent role
    /// (`preflight_agent`) logs in.
    #[arg(
        long,
        env = "PREFLIGHT_AGENT_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub agent_url: Option<String>,

    /// With a URL whose fixtures were loaded earlier: how the audit writer
    /// (`preflight_audit_writer`) logs in [default: the agent URL].
    #[arg(
        long,
        env = "PREFLIGHT_AUDIT_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub audit_url: Option<String>,

    /// With a URL whose fixtures were loaded earlier: a superuser login to the same database,
    /// for the probes that change roles (the `server` family takes a served layer's login away
    /// to see its health endpoint turn unhealthy). Without it those are `not_verified`.
    #[arg(
        long,
        env = "PREFLIGHT_SUPERUSER_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub superuser_url: Option<String>,
}

impl DbArgs {
    /// The validated choice: a usage error (exit 2) for a `--db` value that is none of the four
    /// forms, or a URL-only flag without a URL.
    pub fn to_db(&self) -> Result<(Db, FixtureOptions), CliError> {
        let choice = self.db.trim();
        let is_url = {
            let lower = choice.to_ascii_lowercase();
            lower.starts_with("postgres://") || lower.starts_with("postgresql://")
        };
        if !is_url {
            let url_only = [
                ("--allow-writes", self.allow_writes),
                ("--load-fixtures", self.load_fixtures),
                ("--agent-url", self.agent_url.is_some()),
                ("--audit-url", self.audit_url.is_some()),
                ("--superuser-url", self.superuser_url.is_some()),
            ];
            if let Some((flag, _)) = url_only.iter().find(|(_, set)| *set) {
                return Err(CliError::config(format!(
                    "{flag} only applies to a postgres:// URL database (--db {}); throwaway \
                     databases are always writable and always get the fixtures",
                    redact(choice)
                )));
            }
        }
        let db = match choice {
            "auto" => Db::Auto {
                image: self.pg_image.clone(),
                bin_dir: self.pg_bin.clone(),
            },
            "container" => Db::Container {
                image: self.pg_image.clone(),
            },
            "local" => Db::Local {
                bin_dir: self.pg_bin.clone(),
            },
            url if is_url => Db::Url {
                url: url.to_string(),
                allow_writes: self.allow_writes,
            },
            other => {
                return Err(CliError::config(format!(
                    "--db: expected auto, container, local or a postgres:// URL, got {:?}",
                    redact(other)
                )))
            }
        };
        let fixtures = FixtureOptions {
            dir: self.fixtures.clone().unwrap_or_else(default_fixtures_dir),
            rows: self.rows,
            staging: StagingOptions {
                load_fixtures: self.load_fixtures,
                agent_url: self.agent_url.clone(),
                audit_url: self.audit_url.clone(),
                superuser_url: self.superuser_url.clone(),
            },
        };
        Ok((db, fixtures))
    }
}

/// `./fixtures/shop` when it exists (running from a checkout), else the source tree this
/// binary was built from (so a dev build works from any folder), else `./fixtures/shop`
/// (which then fails with a message naming it).
fn default_fixtures_dir() -> PathBuf {
    let here = PathBuf::from("fixtures/shop");
    if here.is_dir() {
        return here;
    }
    let built = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/shop"));
    if built.is_dir() {
        built
    } else {
        here
    }
}

/// A provisioning error as the binary reports it: configuration (exit 2) or infrastructure
/// (exit 3), with every cause, redacted.
pub fn db_error(e: DbError) -> CliError {
    match e.kind() {
        DbErrorKind::Config => CliError::Config(e.report()),
        DbErrorKind::Infra => CliError::Infra(e.report()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        db: DbArgs,
    }

    fn parse(args: &[&str]) -> Result<(Db, FixtureOptions), CliError> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("flags parse").db.to_db()
    }

    #[test]
    fn the_four_forms() {
        assert!(matches!(
            parse(&["--db", "auto"]).unwrap().0,
            Db::Auto { .. }
        ));
        assert_eq!(
            parse(&["--db", "container", "--pg-image", "x/pg:1"])
                .unwrap()
                .0,
            Db::Container {
                image: "x/pg:1".to_string()
            }
        );
        assert_eq!(
            parse(&["--db", "local", "--pg-bin", "/opt/pg/bin"])
                .unwrap()
                .0,
            Db::Local {
                bin_dir: Some(PathBuf::from("/opt/pg/bin"))
            }
        );
        assert_eq!(
            parse(&["--db", "postgres://u:p@h/d", "--allow-writes"])
                .unwrap()
                .0,
            Db::Url {
                url: "postgres://u:p@h/d".to_string(),
                allow_writes: true
            }
        );
    }

    #[test]
    fn url_only_flags_need_a_url() {
        for flag in [
            vec!["--allow-writes"],
            vec!["--load-fixtures"],
            vec!["--agent-url", "postgres://a@h/d"],
        ] {
            let mut args = vec!["--db", "local"];
            args.extend(flag.iter().copied());
            let err = parse(&args).unwrap_err();
            assert!(matches!(err, CliError::Config(_)), "{args:?}");
            assert!(err.to_string().contains("only applies"), "{err}");
        }
    }

    #[test]
    fn an_unknown_db_is_a_usage_error_without_secrets() {
        let err = parse(&["--db", "mysql://root:hunter2@h/d"]).unwrap_err();
        assert!(matches!(err, CliError::Config(_)));
        let text = err.to_string();
        assert!(text.contains("expected auto, container, local"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn fixture_options_follow_the_flags() {
        let (_, fixtures) = parse(&["--db", "local", "--rows", "7", "--fixtures", "/x"]).unwrap();
        assert_eq!(fixtures.rows, 7);
        assert_eq!(fixtures.dir, PathBuf::from("/x"));
        assert_eq!(fixtures.staging, StagingOptions::default());
    }
}
