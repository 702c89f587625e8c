//! The url backend: an existing database (staging). preflight connects with the given URL as
//! the owner, writes nothing unless told to (`allow_writes`), and loads the fixtures only when
//! [`StagingOptions::load_fixtures`](super::StagingOptions) asks for it.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::database::{quiet, Database, Endpoint, Role, Server, Timings};
use super::error::DbError;
use super::fixtures::{self, FixtureSet, RolePasswords};
use super::redact::{redact, redact_url};
use super::{BackendInfo, FixtureOptions};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_ONLY_PARAM: &str = "options=-c%20default_transaction_read_only%3Don";

/// Parses a `postgres://` URL, with the error redacted.
pub(crate) fn parse(url: &str) -> Result<PgConnectOptions, DbError> {
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err(DbError::BadUrl {
            url: redact_url(url),
            reason: "expected a postgres:// or postgresql:// URL".to_string(),
        });
    }
    PgConnectOptions::from_str(url)
        .map(quiet)
        .map_err(|e| DbError::BadUrl {
            url: redact_url(url),
            reason: redact(&e.to_string()),
        })
}

/// Connects once, with a timeout (an unroutable host would otherwise hang for minutes).
pub(crate) async fn connect(
    options: &PgConnectOptions,
    shown: &str,
) -> Result<PgConnection, DbError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => Err(DbError::Connect {
            target: shown.to_string(),
            source,
        }),
        Err(_) => Err(DbError::Connect {
            target: shown.to_string(),
            source: sqlx::Error::PoolTimedOut,
        }),
    }
}

pub(crate) async fn provision(
    url: &str,
    allow_writes: bool,
    fixtures: &FixtureOptions,
) -> Result<Database, DbError> {
    let started = Instant::now();
    let staging = &fixtures.staging;
    let given = parse(url)?;
    if staging.load_fixtures && !allow_writes {
        return Err(DbError::Config(
            "loading the fixtures writes to the database: allow writes as well (--allow-writes)"
                .to_string(),
        ));
    }
    let set = if staging.load_fixtures {
        Some(FixtureSet::read(&fixtures.dir)?)
    } else {
        None
    };
    let shown = redact_url(url);
    // This connection may run the loader, whose statements are whole fixture files.
    let mut conn = connect(&given.clone().disable_statement_logging(), &shown).await?;
    let server_time = started.elapsed();
    let present: bool =
        sqlx::query_scalar("SELECT to_regclass('preflight_meta.fixture') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| DbError::query(format!("cannot inspect {shown}"), e))?;

    let (owner, agent, audit, superuser, loaded) = match set {
        Some(set) => {
            if present {
                return Err(DbError::Config(format!(
                    "{shown} already holds the preflight fixtures; load them into an empty \
                     database, or drop --load-fixtures to use them as they are"
                )));
            }
            let passwords = RolePasswords::random();
            let elapsed = fixtures::load(&mut conn, &set, fixtures.rows, &passwords).await?;
            let endpoint = |role: Role, password: &str| Endpoint {
                url: with_credentials(url, role.name(), password),
                options: given.clone().username(role.name()).password(password),
            };
            let given_endpoint = Endpoint {
                url: url.to_string(),
                options: given.clone(),
            };
            (
                endpoint(Role::Owner, &passwords.owner),
                endpoint(Role::Agent, &passwords.agent),
                endpoint(Role::Audit, &passwords.audit),
                Some(given_endpoint),
                Some(elapsed),
            )
        }
        None => {
            if !present {
                return Err(DbError::Config(format!(
                    "{shown} holds no preflight fixtures (preflight_meta.fixture is missing); \
                     load them into an empty database with --load-fixtures --allow-writes"
                )));
            }
            let Some(agent_url) = staging.agent_url.as_deref() else {
                return Err(DbError::Config(format!(
                    "the fixtures of {shown} were not loaded by this run, so the agent role's \
                     password is unknown: pass --agent-url (and --audit-url)"
                )));
            };
            let agent = same_database(&given, agent_url, "--agent-url")?;
            let audit = match staging.audit_url.as_deref() {
                Some(audit_url) => same_database(&given, audit_url, "--audit-url")?,
                None => agent.clone(),
            };
            let superuser = match staging.superuser_url.as_deref() {
                Some(su) => Some(same_database(&given, su, "--superuser-url")?),
                None => None,
            };
            let owner = Endpoint {
                url: url.to_string(),
                options: given.clone(),
            };
            (owner, agent, audit, superuser, None)
        }
    };
    let _ = conn.close().await;

    let read_only = !allow_writes;
    let owner = if read_only {
        read_only_endpoint(owner)
    } else {
        owner
    };
    // Every role must be able to log in before anyone relies on it.
    let mut server_version = String::new();
    for endpoint in [&owner, &agent, &audit] {
        let mut conn = connect(&endpoint.options, &endpoint.redacted()).await?;
        if server_version.is_empty() {
            server_version = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| DbError::query("cannot read the server version", e))?;
        }
        let _ = conn.close().await;
    }
    let info = BackendInfo {
        kind: "url".to_string(),
        detail: shown,
        reason: "requested".to_string(),
        server_version,
    };
    let timings = Timings {
        server: server_time,
        fixtures: loaded,
        total: started.elapsed(),
    };
    Ok(Database::new(
        info,
        owner,
        agent,
        audit,
        superuser,
        read_only,
        loaded.map(|_| fixtures.rows),
        timings,
        Server::Remote,
    ))
}

/// Parses `url` and checks it reaches the same server and database as the owner's: the ground
/// truth must describe the database the agent works on.
fn same_database(owner: &PgConnectOptions, url: &str, flag: &str) -> Result<Endpoint, DbError> {
    let options = parse(url)?;
    let target = |o: &PgConnectOptions| {
        (
            o.get_host().to_string(),
            o.get_port(),
            o.get_socket().cloned(),
            o.get_database().map(str::to_string),
        )
    };
    if target(&options) != target(owner) {
        return Err(DbError::Config(format!(
            "{flag} {} does not point at the same server and database as the owner URL",
            redact_url(url)
        )));
    }
    Ok(Endpoint {
        url: url.to_string(),
        options,
    })
}

/// The owner endpoint with `default_transaction_read_only` on, in the options and in the URL.
fn read_only_endpoint(owner: Endpoint) -> Endpoint {
    let separator = if owner.url.contains('?') { '&' } else { '?' };
    Endpoint {
        url: format!("{}{separator}{READ_ONLY_PARAM}", owner.url),
        options: owner
            .options
            .options([("default_transaction_read_only", "on")]),
    }
}

/// `url` logging in as `user` with `password`: the user-info replaced, and any `user` or
/// `password` query parameter removed (they would override the user-info).
pub(crate) fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let tail = &rest[authority_len..];
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut out = format!("{}{user}:{password}@{host}{path}", &url[..scheme_end + 3]);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let key = pair.split('=').next().unwrap_or_default();
                !key.eq_ignore_ascii_case("user") && !key.eq_ignore_ascii_case("password")
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_credentials_and_drops_overriding_parameters() {
        assert_eq!(
            with_credentials(
                "postgres://admin:pw@db:5432/shop?sslmode=require",
                "preflight_agent",
                "x"
            ),
            "postgres://preflight_agent:x@db:5432/shop?sslmode=require"
        );
        assert_eq!(
            with_credentials(
                "postgresql://db/shop?user=admin&password=pw&sslmode=disable",
                "a",
                "b"
            ),
            "postgresql://a:b@db/shop?sslmode=disable"
        );
        assert_eq!(
            with_credentials("postgres://db", "a", "b"),
            "postgres://a:b@db"
        );
    }

    #[test]
    fn rejects_non_postgres_urls_without_echoing_secrets() {
        let e = parse("mysql://root:hunter2@db/x").unwrap_err();
        let text = e.report();
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn read_only_owner_url_carries_the_option() {
        let owner = Endpoint {
            url: "postgres://o:p@h/db".to_string(),
            options: parse("postgres://o:p@h/db").unwrap(),
        };
        let ro = read_only_endpoint(owner);
        assert_eq!(ro.url, format!("postgres://o:p@h/db?{READ_ONLY_PARAM}"));
        assert!(ro
            .options
            .get_options()
            .is_some_and(|o| o.contains("default_transaction_read_only=on")));
        let reparsed = parse(&ro.url).unwrap();
        assert!(reparsed
            .get_options()
            .is_some_and(|o| o.contains("default_transaction_read_only=on")));
    }
}
