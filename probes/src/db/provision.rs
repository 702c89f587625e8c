//! [`provision`]: turns a [`Db`] choice into a running [`Database`] with the fixtures loaded,
//! trying container then local for `auto` and recording why.

use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use super::container::{self, ContainerServer, ImageRef};
use super::database::{quiet, Database, Endpoint, Role, Server, Timings};
use super::error::DbError;
use super::fixtures::{self, FixtureSet, RolePasswords};
use super::local::{LocalCluster, DATABASE, SUPERUSER};
use super::registry;
use super::{url, BackendInfo, Db, FixtureOptions};

/// Starts (or reaches) the database `db` describes and loads the fixtures. For the throwaway
/// backends the returned [`Database`] owns the server: dropping it tears the server down, and
/// an interrupt (Ctrl-C, SIGTERM) tears down whatever is alive and exits with status 130.
pub async fn provision(db: &Db, fixtures: &FixtureOptions) -> Result<Database, DbError> {
    registry::install_interrupt_handler();
    let started = Instant::now();
    let result = match db {
        Db::Url { url, allow_writes } => url::provision(url, *allow_writes, fixtures).await,
        Db::Container { image } => {
            let image = ImageRef::parse(image)?;
            let set = FixtureSet::read(&fixtures.dir)?;
            start_container(&image, &set, fixtures.rows, "requested".to_string()).await
        }
        Db::Local { bin_dir } => {
            let set = FixtureSet::read(&fixtures.dir)?;
            start_local(
                bin_dir.clone(),
                &set,
                fixtures.rows,
                "requested".to_string(),
            )
            .await
        }
        Db::Auto { image, bin_dir } => {
            let image = ImageRef::parse(image)?;
            let set = FixtureSet::read(&fixtures.dir)?;
            auto(&image, bin_dir.clone(), &set, fixtures.rows).await
        }
    };
    if registry::interrupted() {
        // The interrupt handler is tearing down what this call started and will exit the
        // process with 130; returning an error now would race it to a different exit code.
        std::future::pending::<()>().await;
    }
    if let Ok(db) = &result {
        tracing::info!(
            backend = %db.info().kind,
            detail = %db.info().detail,
            reason = %db.info().reason,
            total_ms = started.elapsed().as_millis() as u64,
            "database ready"
        );
    }
    result
}

/// Container when a daemon answers and the image is there (or pullable), else local.
async fn auto(
    image: &ImageRef,
    bin_dir: Option<std::path::PathBuf>,
    set: &FixtureSet,
    rows: u64,
) -> Result<Database, DbError> {
    let descriptor = image.descriptor();
    let mut tried = Vec::new();
    let docker_ready = match container::docker().await {
        Ok(docker) => container::ensure_image(&docker, image).await,
        Err(e) => Err(e),
    };
    match docker_ready {
        Ok(()) => {
            let reason = format!("a Docker daemon answered and {descriptor} is available");
            match start_container(image, set, rows, reason).await {
                Ok(db) => return Ok(db),
                Err(e) if !e.is_backend_failure() => return Err(e),
                Err(e) => tried.push(("container".to_string(), e)),
            }
        }
        Err(e) => tried.push(("container".to_string(), e)),
    }
    let why_not_container = tried
        .first()
        .map(|(_, e)| one_line(&e.report()))
        .unwrap_or_default();
    let reason =
        format!("container backend unavailable ({why_not_container}); using a local cluster");
    match start_local(bin_dir, set, rows, reason).await {
        Ok(db) => Ok(db),
        Err(e) if !e.is_backend_failure() => Err(e),
        Err(e) => {
            tried.push(("local".to_string(), e));
            Err(DbError::NoBackend { tried })
        }
    }
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

async fn start_container(
    image: &ImageRef,
    set: &FixtureSet,
    rows: u64,
    reason: String,
) -> Result<Database, DbError> {
    let started = Instant::now();
    let server = ContainerServer::start(image).await?;
    let detail = format!("image {}, container {}", server.image, short_id(&server.id));
    let superuser = server.superuser_options();
    let superuser_password = server.superuser_password.clone();
    let (host, port, server_time) = (server.host.clone(), server.port, server.start_time);
    finish(
        Server::Container(Box::new(server)),
        Throwaway {
            kind: "container",
            detail,
            reason,
            host,
            port,
            superuser,
            superuser_password,
            server_time,
        },
        set,
        rows,
        started,
    )
    .await
}

async fn start_local(
    bin_dir: Option<std::path::PathBuf>,
    set: &FixtureSet,
    rows: u64,
    reason: String,
) -> Result<Database, DbError> {
    let started = Instant::now();
    let cluster = LocalCluster::start(bin_dir).await?;
    let detail = format!(
        "{} (PostgreSQL {}), data in {}",
        cluster.bin.dir.display(),
        cluster.bin.short_version(),
        cluster.root().display()
    );
    // Loading over the socket skips TCP and SCRAM; clients get the TCP URLs.
    let superuser = cluster.socket_options(SUPERUSER, DATABASE);
    let superuser_password = cluster.superuser_password.clone();
    let (port, server_time) = (cluster.port, cluster.start_time);
    finish(
        Server::Local(cluster),
        Throwaway {
            kind: "local",
            detail,
            reason,
            host: "127.0.0.1".to_string(),
            port,
            superuser,
            superuser_password,
            server_time,
        },
        set,
        rows,
        started,
    )
    .await
}

/// What a started throwaway server offers, for [`finish`].
struct Throwaway {
    kind: &'static str,
    detail: String,
    reason: String,
    host: String,
    port: u16,
    /// How the loader connects (TCP for a container, the socket for a local cluster).
    superuser: PgConnectOptions,
    superuser_password: String,
    server_time: std::time::Duration,
}

/// Loads the fixtures into a fresh server as the superuser and builds the role endpoints. On
/// error `server` is dropped, which tears it down.
async fn finish(
    server: Server,
    t: Throwaway,
    set: &FixtureSet,
    rows: u64,
    started: Instant,
) -> Result<Database, DbError> {
    // The loader's statements are whole fixture files: not worth logging.
    let mut conn = t
        .superuser
        .clone()
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|source| DbError::Connect {
            target: format!("the {} server as superuser", t.kind),
            source,
        })?;
    let passwords = RolePasswords::random();
    // Autovacuum, woken by the bulk rows, can deadlock with a later file of the same load: a
    // file that changes a table's pg_class row (GRANT) and then waits for the table's lock
    // (ANALYZE) meets a worker that holds that lock and waits for the file's transaction
    // (15.x minor releases make in-place pg_class updates wait for it). Seen with the shop
    // fixtures at 300000 rows. Paused for the load on the servers we own.
    set_autovacuum(&mut conn, false).await?;
    let fixtures_time = fixtures::load(&mut conn, set, rows, &passwords).await?;
    set_autovacuum(&mut conn, true).await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| DbError::query("cannot read the server version", e))?;
    let _ = conn.close().await;

    let endpoint = |user: &str, password: &str| Endpoint {
        url: format!(
            "postgres://{user}:{password}@{}:{}/{DATABASE}",
            t.host, t.port
        ),
        options: quiet(
            PgConnectOptions::new_without_pgpass()
                .host(&t.host)
                .port(t.port)
                .username(user)
                .password(password)
                .database(DATABASE)
                .ssl_mode(PgSslMode::Disable),
        ),
    };
    let owner = endpoint(Role::Owner.name(), &passwords.owner);
    let agent = endpoint(Role::Agent.name(), &passwords.agent);
    let audit = endpoint(Role::Audit.name(), &passwords.audit);
    let superuser = endpoint(SUPERUSER, &t.superuser_password);
    // The owner must log in over TCP with its password: what every caller does next.
    let check = owner
        .options
        .connect()
        .await
        .map_err(|source| DbError::Connect {
            target: owner.redacted(),
            source,
        })?;
    let _ = check.close().await;

    let info = BackendInfo {
        kind: t.kind.to_string(),
        detail: t.detail,
        reason: t.reason,
        server_version,
    };
    let timings = Timings {
        server: t.server_time,
        fixtures: Some(fixtures_time),
        total: started.elapsed(),
    };
    Ok(Database::new(
        info,
        owner,
        agent,
        audit,
        Some(superuser),
        false,
        Some(rows),
        timings,
        server,
    ))
}

/// Turns autovacuum off (`ALTER SYSTEM`, then a reload) or back to its configured value.
async fn set_autovacuum(conn: &mut sqlx::PgConnection, on: bool) -> Result<(), DbError> {
    let statement = if on {
        "ALTER SYSTEM RESET autovacuum"
    } else {
        "ALTER SYSTEM SET autovacuum = off"
    };
    let what = || {
        format!(
            "cannot switch autovacuum {}",
            if on { "back on" } else { "off" }
        )
    };
    sqlx::query(statement)
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::query(what(), e))?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::query(what(), e))?;
    Ok(())
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}
