//! Provisioning against real servers: every backend loads the shop fixtures correctly, the
//! roles and row-level security hold, nothing is left behind (after a drop, a panic or a
//! SIGKILL), and bad input gives a clear error.
//!
//! The local backend is always tested. The container backend is tested when
//! `PREFLIGHT_PG_IMAGE` names an image (scripts/test sets it); otherwise those tests fail under
//! `CI=true` and say loudly that they were skipped elsewhere. Teardown-after-panic tests re-run this test binary as a child process
//! ([`child_process`]) and inspect the machine afterwards.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preflight_probes::db::{
    provision, testing, Database, Db, DbError, DbErrorKind, FixtureOptions, Footprint, Role,
    StagingOptions, INSTANCE_LABEL,
};
use sqlx::{Connection, Row};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Small enough to keep the suite fast, large enough to tell bulk rows from the seed.
const ROWS: u64 = 1000;
const CHILD_ENV: &str = "PREFLIGHT_DB_TEST_CHILD";

fn shop(rows: u64) -> FixtureOptions {
    FixtureOptions {
        rows,
        ..FixtureOptions::new(testing::fixtures_dir())
    }
}

fn local() -> Db {
    Db::Local { bin_dir: None }
}

/// The container image under test, or `None` (after saying so) when none is configured.
fn container_image(test: &str) -> Option<String> {
    match std::env::var("PREFLIGHT_PG_IMAGE") {
        Ok(image) if !image.trim().is_empty() => Some(image),
        _ => {
            testing::prerequisite_missing(
                test,
                "PREFLIGHT_PG_IMAGE is not set (scripts/test sets it)",
            );
            None
        }
    }
}

async fn must(db: &Db, fixtures: &FixtureOptions) -> Database {
    match provision(db, fixtures).await {
        Ok(d) => d,
        Err(e) => panic!("provisioning {db:?} failed:\n{}", e.report()),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The shop as the fixtures README describes it, checked through the owner and agent roles.
async fn check_shop(db: &Database, rows: u64) {
    let owner = db.owner_pool().await.expect("owner pool");

    // Row counts per tenant: the seed plus `rows` bulk orders with one item each.
    let expected: [(&str, i64); 8] = [
        ("users", 4),
        ("customers", 8),
        ("products", 6),
        ("orders", rows as i64 + 30),
        ("order_items", rows as i64 + 60),
        ("refunds", 5),
        ("payment_methods", 8),
        ("support_tickets", 6),
    ];
    for (table, per_tenant) in expected {
        let sql = format!(
            "SELECT tenant_id, count(*) FROM {} GROUP BY tenant_id ORDER BY tenant_id",
            quote_ident(table)
        );
        let counts: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(&owner).await.expect(&sql);
        let want: Vec<(String, i64)> = TENANTS
            .iter()
            .map(|t| (t.to_string(), per_tenant))
            .collect();
        assert_eq!(counts, want, "rows per tenant in {table}");
    }
    let recorded: String = sqlx::query_scalar(
        "SELECT value FROM preflight_meta.fixture WHERE key = 'rows_per_tenant'",
    )
    .fetch_one(&owner)
    .await
    .expect("fixture metadata");
    assert_eq!(recorded, rows.to_string());
    if db.superuser_url().is_some() && db.info().kind != "url" {
        // Paused during the load only.
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&owner)
            .await
            .expect("show autovacuum");
        assert_eq!(autovacuum, "on");
    }

    // Every canary is registered, 131 per tenant, and present in the cell it names.
    let per_tenant: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tenant_id, count(*) FROM preflight_meta.canaries GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&owner)
    .await
    .expect("canary counts");
    assert_eq!(
        per_tenant,
        TENANTS
            .iter()
            .map(|t| (t.to_string(), 131))
            .collect::<Vec<_>>()
    );
    let columns: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT table_name, column_name, count(*) FROM preflight_meta.canaries GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&owner)
    .await
    .expect("canary columns");
    assert!(columns.len() >= 10, "too few canary columns: {columns:?}");
    let mut checked = 0;
    for (table, column, count) in &columns {
        let sql = format!(
            "SELECT count(*) FROM preflight_meta.canaries c WHERE c.table_name = $1 AND c.column_name = $2 \
             AND EXISTS (SELECT 1 FROM public.{t} x WHERE x.id = c.row_id AND x.tenant_id = c.tenant_id \
                         AND x.{c}::text = c.value)",
            t = quote_ident(table),
            c = quote_ident(column)
        );
        let found: i64 = sqlx::query_scalar(&sql)
            .bind(table)
            .bind(column)
            .fetch_one(&owner)
            .await
            .expect(&sql);
        assert_eq!(
            found, *count,
            "canaries of {table}.{column} missing from their rows"
        );
        checked += found;
    }
    assert_eq!(checked, 393, "every canary checked");

    // The agent role: not superuser, cannot bypass RLS (as the catalog and itself say).
    let agent = db.agent_pool().await.expect("agent pool");
    let (who, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&agent)
    .await
    .expect("agent role");
    assert_eq!(who, Role::Agent.name());
    assert!(!superuser, "the agent role is a superuser");
    assert!(!bypass, "the agent role bypasses RLS");

    // The owner sees every tenant (so the checks below are not vacuous).
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&owner)
        .await
        .expect("owner count");
    assert_eq!(all, 24);

    for table in ["customers", "payment_methods", "refunds", "support_tickets"] {
        let t = quote_ident(table);
        // As acme: no globex row, even when asked for by tenant_id.
        let mut tx = agent.begin().await.expect("begin");
        sqlx::query("SELECT set_config('app.tenant_id', 'acme', true)")
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let forged: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {t} WHERE tenant_id = 'globex'"
        ))
        .fetch_one(&mut *tx)
        .await
        .expect("forged select");
        assert_eq!(forged, 0, "acme sees globex rows in {table}");
        let row = sqlx::query(&format!(
            "SELECT count(*) AS n, count(*) FILTER (WHERE tenant_id <> 'acme') AS other FROM {t}"
        ))
        .fetch_one(&mut *tx)
        .await
        .expect("scoped select");
        let (n, other): (i64, i64) = (row.get("n"), row.get("other"));
        assert!(n > 0, "acme sees none of its own rows in {table}");
        assert_eq!(other, 0, "acme sees other tenants' rows in {table}");
        tx.rollback().await.expect("rollback");

        // Unset, then empty: no rows at all.
        let mut conn = agent.acquire().await.expect("acquire");
        let unset: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
            .fetch_one(&mut *conn)
            .await
            .expect("unset select");
        assert_eq!(unset, 0, "{table} returns rows with app.tenant_id unset");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("SELECT set_config('app.tenant_id', '', true)")
            .execute(&mut *tx)
            .await
            .expect("empty tenant");
        let empty: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
            .fetch_one(&mut *tx)
            .await
            .expect("empty select");
        assert_eq!(empty, 0, "{table} returns rows with app.tenant_id empty");
        tx.rollback().await.expect("rollback");
    }

    // The audit writer logs in with its own password.
    let audit = db.audit_pool().await.expect("audit pool");
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&audit)
        .await
        .expect("audit login");
    assert_eq!(who, Role::Audit.name());
}

/// Postgres processes whose command line names `dir` (the local backend passes `-D dir/data`).
fn postgres_processes_in(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// Containers (running or not) carrying our instance label.
fn containers_labelled(instance: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={INSTANCE_LABEL}={instance}"))
        .output()
        .expect("docker ps");
    assert!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn assert_alive(footprint: &Footprint) {
    match footprint {
        Footprint::LocalDir(dir) => {
            assert!(dir.is_dir(), "{} missing while alive", dir.display());
            assert!(
                !postgres_processes_in(dir).is_empty(),
                "no postgres process for {}",
                dir.display()
            );
        }
        Footprint::Container { instance, .. } => {
            assert_eq!(
                containers_labelled(instance).len(),
                1,
                "container missing while alive"
            );
        }
    }
}

/// Waits (teardown is synchronous, but process exit is observed with a small delay) until the
/// footprint is gone, then asserts it.
fn assert_gone(footprint: &Footprint) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = match footprint {
            Footprint::LocalDir(dir) => {
                let pids = postgres_processes_in(dir);
                (!pids.is_empty() || dir.exists())
                    .then(|| format!("processes {pids:?}, dir exists: {}", dir.exists()))
            }
            Footprint::Container { instance, .. } => {
                let ids = containers_labelled(instance);
                (!ids.is_empty()).then(|| format!("containers {ids:?}"))
            }
        };
        match left {
            None => return,
            Some(left) if Instant::now() > deadline => panic!("{footprint:?} left behind: {left}"),
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn parse_footprint(line: &str) -> Option<Footprint> {
    // libtest may have printed `test name ... ` on the same line first.
    let rest = &line[line.find("FOOTPRINT ")? + "FOOTPRINT ".len()..];
    if let Some(dir) = rest.strip_prefix("local ") {
        return Some(Footprint::LocalDir(PathBuf::from(dir)));
    }
    let (id, instance) = rest.strip_prefix("container ")?.split_once(' ')?;
    Some(Footprint::Container {
        id: id.to_string(),
        instance: instance.to_string(),
    })
}

fn print_footprint(footprint: &Footprint) {
    match footprint {
        Footprint::LocalDir(dir) => println!("FOOTPRINT local {}", dir.display()),
        Footprint::Container { id, instance } => println!("FOOTPRINT container {id} {instance}"),
    }
}

/// This test binary, re-run to execute only [`child_process`] in `mode`.
fn child(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "db::child_process",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .stdin(Stdio::null());
    cmd
}

/// Not a test of its own: the child process of the teardown and Docker tests, selected by
/// `PREFLIGHT_DB_TEST_CHILD`.
#[tokio::test]
#[ignore = "runs only as a child process of the teardown tests"]
async fn child_process() {
    let mode =
        std::env::var(CHILD_ENV).expect("run only as a child process (PREFLIGHT_DB_TEST_CHILD)");
    match mode.as_str() {
        "panic-local" | "panic-container" | "hang-local" => {
            let db = if mode.ends_with("local") {
                local()
            } else {
                Db::Container {
                    image: std::env::var("PREFLIGHT_PG_IMAGE").expect("image"),
                }
            };
            let database = must(&db, &shop(0)).await;
            print_footprint(&database.footprint().expect("footprint"));
            if mode.starts_with("hang") {
                println!("READY");
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            panic!("deliberate panic while the database is alive");
        }
        "dead-docker" => {
            // DOCKER_HOST points at a socket nobody listens on.
            let image = "postgres:15.8".to_string();
            let err = provision(
                &Db::Container {
                    image: image.clone(),
                },
                &shop(0),
            )
            .await
            .expect_err("container backend without a daemon");
            let text = err.report();
            assert!(matches!(err, DbError::DockerUnavailable { .. }), "{text}");
            assert_eq!(err.kind(), DbErrorKind::Infra);
            assert!(
                text.contains("no Docker daemon answered at unix:///nonexistent/docker.sock"),
                "{text}"
            );

            // No backend at all: every one tried is listed with its reason.
            let err = provision(
                &Db::Auto {
                    image: image.clone(),
                    bin_dir: Some(PathBuf::from("/nonexistent/pg/bin")),
                },
                &shop(0),
            )
            .await
            .expect_err("no backend");
            let text = err.report();
            assert!(matches!(err, DbError::NoBackend { .. }), "{text}");
            assert_eq!(err.kind(), DbErrorKind::Infra);
            assert!(
                text.starts_with("no backend could start a database:"),
                "{text}"
            );
            assert!(
                text.contains("\n  - container: no Docker daemon answered at"),
                "{text}"
            );
            assert!(
                text.contains("\n  - local: PostgreSQL server binaries (initdb, postgres) not found; looked in /nonexistent/pg/bin"),
                "{text}"
            );

            // auto falls back to a local cluster and says why.
            let database = must(
                &Db::Auto {
                    image,
                    bin_dir: None,
                },
                &shop(0),
            )
            .await;
            assert_eq!(database.info().kind, "local");
            assert!(
                database.info().reason.contains("no Docker daemon answered"),
                "{:?}",
                database.info()
            );
            println!("CHILD OK");
        }
        other => panic!("unknown child mode {other:?}"),
    }
}

fn run_panicking_child(mode: &str) {
    let out = child(mode).output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the child did not panic:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("deliberate panic") || stderr.contains("deliberate panic"),
        "{stdout}\n{stderr}"
    );
    let footprint = stdout
        .lines()
        .find_map(parse_footprint)
        .unwrap_or_else(|| panic!("the child printed no footprint:\n{stdout}\n{stderr}"));
    assert_gone(&footprint);
}

#[tokio::test]
async fn local_backend_loads_the_shop() {
    let database = must(&local(), &shop(ROWS)).await;
    let info = database.info();
    assert_eq!(info.kind, "local");
    assert_eq!(info.reason, "requested");
    assert!(
        info.server_version.starts_with(char::is_numeric),
        "{info:?}"
    );
    assert!(!database.read_only());
    assert_eq!(database.rows(), Some(ROWS));
    for role in [Role::Owner, Role::Agent, Role::Audit] {
        let url = database.url(role);
        assert!(
            url.starts_with(&format!("postgres://{}:", role.name())),
            "{}",
            database.redacted_url(role)
        );
        assert!(database.redacted_url(role).contains(":****@"));
        assert!(!database.redacted_url(role).contains(password(url)));
    }
    check_shop(&database, ROWS).await;
}

fn password(url: &str) -> &str {
    let userinfo = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('@').next())
        .unwrap_or_default();
    userinfo.split(':').nth(1).unwrap_or_default()
}

#[tokio::test]
async fn local_teardown_on_drop_leaves_nothing() {
    let database = must(&local(), &shop(0)).await;
    let footprint = database.footprint().expect("footprint");
    assert_alive(&footprint);
    drop(database);
    assert_gone(&footprint);
}

#[tokio::test]
async fn local_teardown_after_a_panic_leaves_nothing() {
    run_panicking_child("panic-local");
}

#[test]
fn local_server_dies_with_a_killed_process() {
    let mut child = child("hang-local")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut footprint = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        if let Some(f) = parse_footprint(&line) {
            footprint = Some(f);
        }
        if line.ends_with("READY") {
            break;
        }
    }
    let footprint = footprint.expect("the child printed no footprint");
    let Footprint::LocalDir(dir) = &footprint else {
        panic!("expected a local footprint");
    };
    assert!(
        !postgres_processes_in(dir).is_empty(),
        "server not running in the child"
    );
    // SIGKILL: no destructor and no signal handler runs; only the parent-death signal can stop
    // the server.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !postgres_processes_in(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "postgres outlived its SIGKILLed parent: {:?}",
            postgres_processes_in(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Only the files remain (nothing could delete them); clean up after the child.
    std::fs::remove_dir_all(dir).expect("remove the killed child's temp dir");
}

#[tokio::test]
async fn stop_server_simulates_an_outage() {
    let database = must(&local(), &shop(0)).await;
    let owner = database.owner_pool().await.expect("owner pool");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&owner)
        .await
        .expect("query");
    assert_eq!(one, 1);
    let footprint = database.footprint().expect("footprint");
    database.stop_server().expect("stop");
    assert_gone(&footprint);
    let err = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&owner)
        .await;
    assert!(err.is_err(), "query succeeded after the server stopped");
}

#[tokio::test]
async fn container_backend_loads_the_shop() {
    let Some(image) = container_image("container_backend_loads_the_shop") else {
        return;
    };
    let database = must(
        &Db::Container {
            image: image.clone(),
        },
        &shop(ROWS),
    )
    .await;
    let info = database.info();
    assert_eq!(info.kind, "container");
    assert!(info.detail.contains(&image), "{info:?}");
    check_shop(&database, ROWS).await;
    let footprint = database.footprint().expect("footprint");
    assert_alive(&footprint);
    drop(database);
    assert_gone(&footprint);
}

#[tokio::test]
async fn container_teardown_after_a_panic_leaves_nothing() {
    if container_image("container_teardown_after_a_panic_leaves_nothing").is_none() {
        return;
    }
    run_panicking_child("panic-container");
}

#[tokio::test]
async fn auto_prefers_the_container_when_docker_answers() {
    let Some(image) = container_image("auto_prefers_the_container_when_docker_answers") else {
        return;
    };
    let database = must(
        &Db::Auto {
            image: image.clone(),
            bin_dir: None,
        },
        &shop(0),
    )
    .await;
    assert_eq!(database.info().kind, "container");
    assert!(
        database.info().reason.contains(&image),
        "{:?}",
        database.info()
    );
}

#[test]
fn container_without_a_docker_daemon_is_a_clear_error() {
    let out = child("dead-docker")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_missing_fixtures_folder_fails_before_anything_starts() {
    let started = Instant::now();
    let missing = PathBuf::from("/nonexistent/fixtures/shop");
    for db in [
        local(),
        Db::Container {
            image: "postgres:15.8".to_string(),
        },
    ] {
        let err = provision(&db, &FixtureOptions::new(&missing))
            .await
            .expect_err("missing folder");
        assert!(
            matches!(err, DbError::FixturesMissing { .. }),
            "{}",
            err.report()
        );
        assert_eq!(err.kind(), DbErrorKind::Config);
        assert_eq!(
            err.to_string(),
            "fixtures folder /nonexistent/fixtures/shop does not exist"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a server was started first"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let err = provision(&local(), &FixtureOptions::new(empty.path()))
        .await
        .expect_err("empty folder");
    assert!(
        matches!(err, DbError::FixturesEmpty { .. }),
        "{}",
        err.report()
    );
}

/// A fixtures folder with one good file and `broken` as `10_broken.sql`.
fn broken_fixtures(broken: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("00_ok.sql"), "CREATE TABLE ok (id int);\n").expect("write");
    std::fs::write(dir.path().join("10_broken.sql"), broken).expect("write");
    dir
}

async fn broken_sql_error(broken: &str) -> (DbError, PathBuf) {
    let dir = broken_fixtures(broken);
    let err = provision(&local(), &FixtureOptions::new(dir.path()))
        .await
        .expect_err("broken SQL");
    (err, dir.path().join("10_broken.sql"))
}

#[tokio::test]
async fn a_broken_sql_file_is_reported_with_file_and_line() {
    // A syntax error: the server gives the position.
    let (err, file) = broken_sql_error("SELECT 1;\n\n-- the typo:\n  SELEC 2;\nSELECT 3;\n").await;
    assert_eq!(err.kind(), DbErrorKind::Config);
    let DbError::FixtureSql {
        file: f,
        line,
        column,
        message,
    } = &err
    else {
        panic!("expected a fixture SQL error, got {}", err.report());
    };
    assert_eq!((f, *line, *column), (&file, Some(4), Some(3)));
    assert!(
        message.contains("syntax error at or near \"SELEC\""),
        "{message}"
    );
    assert!(message.contains("4 |   SELEC 2;"), "{message}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:4:3: syntax error", file.display())),
        "{err}"
    );

    // An unknown column: parse analysis, still positioned.
    let (err, _) = broken_sql_error("CREATE TABLE t (a int);\nSELECT a,\n       b FROM t;\n").await;
    assert!(
        matches!(&err, DbError::FixtureSql { line: Some(3), .. }),
        "{}",
        err.report()
    );
    assert!(
        err.to_string().contains("column \"b\" does not exist"),
        "{err}"
    );

    // A run-time error has no position: the statement is found by replaying the file.
    let (err, _) = broken_sql_error(
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n\nSELECT 1 / (a - 1) FROM t;\n",
    )
    .await;
    assert!(
        matches!(&err, DbError::FixtureSql { line: Some(4), .. }),
        "{}",
        err.report()
    );
    assert!(err.to_string().contains("division by zero"), "{err}");

    // RAISE inside a DO block: the block's line from the PL/pgSQL context.
    let (err, _) = broken_sql_error(
        "SELECT 1;\nDO $$\nBEGIN\n    PERFORM 1;\n    RAISE EXCEPTION 'fixture check failed';\nEND\n$$;\n",
    )
    .await;
    assert!(
        matches!(&err, DbError::FixtureSql { line: Some(5), .. }),
        "{}",
        err.report()
    );
    assert!(err.to_string().contains("fixture check failed"), "{err}");
}

#[tokio::test]
async fn an_unreachable_url_is_a_clear_error_without_the_password() {
    let url = "postgres://someone:sekrit-pw@127.0.0.1:1/shop".to_string();
    let err = provision(
        &Db::Url {
            url,
            allow_writes: false,
        },
        &shop(0),
    )
    .await
    .expect_err("unreachable");
    let text = err.report();
    assert!(matches!(err, DbError::Connect { .. }), "{text}");
    assert_eq!(err.kind(), DbErrorKind::Infra);
    assert!(
        text.contains("cannot connect to postgres://someone:****@127.0.0.1:1/shop"),
        "{text}"
    );
    assert!(!text.contains("sekrit"), "{text}");

    let err = provision(
        &Db::Url {
            url: "postgres://x:y@[bad".to_string(),
            allow_writes: false,
        },
        &shop(0),
    )
    .await
    .expect_err("malformed");
    assert_eq!(err.kind(), DbErrorKind::Config, "{}", err.report());
}

#[tokio::test]
async fn a_url_database_is_read_only_unless_writes_are_allowed() {
    let throwaway = must(&local(), &shop(0)).await;
    let staging = |allow_writes: bool, agent_url: Option<String>| {
        (
            Db::Url {
                url: throwaway.owner_url().to_string(),
                allow_writes,
            },
            FixtureOptions {
                staging: StagingOptions {
                    load_fixtures: false,
                    agent_url,
                    audit_url: Some(throwaway.audit_url().to_string()),
                    superuser_url: None,
                },
                ..shop(0)
            },
        )
    };

    // Without the agent's credentials there is nothing to test with.
    let (db, fixtures) = staging(false, None);
    let err = provision(&db, &fixtures).await.expect_err("no agent url");
    assert_eq!(err.kind(), DbErrorKind::Config);
    assert!(err.to_string().contains("--agent-url"), "{err}");

    let (db, fixtures) = staging(false, Some(throwaway.agent_url().to_string()));
    let database = must(&db, &fixtures).await;
    assert_eq!(database.info().kind, "url");
    assert!(database.read_only());
    assert!(database.footprint().is_none());
    assert!(
        !database
            .info()
            .detail
            .contains(password(throwaway.owner_url())),
        "{:?}",
        database.info()
    );
    assert!(
        database.info().detail.contains("****"),
        "{:?}",
        database.info()
    );
    let owner = database.owner_pool().await.expect("owner pool");
    let write = sqlx::query("UPDATE products SET price = price WHERE id = 1")
        .execute(&owner)
        .await;
    let code = write
        .expect_err("write through a read-only owner")
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("25006"), "read_only_sql_transaction");
    check_shop(&database, 0).await;
    drop(database);

    // Dropping a URL database leaves the server alone.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&throwaway.owner_pool().await.expect("pool"))
        .await
        .expect("the throwaway server still answers");
    assert_eq!(one, 1);

    let (db, fixtures) = staging(true, Some(throwaway.agent_url().to_string()));
    let database = must(&db, &fixtures).await;
    assert!(!database.read_only());
    let owner = database.owner_pool().await.expect("owner pool");
    sqlx::query("UPDATE products SET price = price WHERE id = 1")
        .execute(&owner)
        .await
        .expect("write allowed");
}

#[tokio::test]
async fn fixtures_load_into_a_url_database_only_when_asked() {
    let throwaway = must(&local(), &shop(0)).await;
    let superuser = throwaway
        .superuser_url()
        .expect("superuser url")
        .to_string();
    let mut conn = sqlx::PgConnection::connect(&superuser)
        .await
        .expect("superuser");
    sqlx::query("CREATE DATABASE staging_copy")
        .execute(&mut conn)
        .await
        .expect("create db");
    conn.close().await.expect("close");
    let empty_url = superuser.replace("/preflight", "/staging_copy");
    let load = |allow_writes: bool| {
        (
            Db::Url {
                url: empty_url.clone(),
                allow_writes,
            },
            FixtureOptions {
                staging: StagingOptions {
                    load_fixtures: true,
                    ..StagingOptions::default()
                },
                ..shop(ROWS)
            },
        )
    };

    // Not asked: an empty database is refused, not filled.
    let plain = Db::Url {
        url: empty_url.clone(),
        allow_writes: true,
    };
    let err = provision(&plain, &shop(0))
        .await
        .expect_err("no fixtures there");
    assert_eq!(err.kind(), DbErrorKind::Config);
    assert!(
        err.to_string().contains("holds no preflight fixtures"),
        "{err}"
    );

    // Asked, but writes not allowed.
    let (db, fixtures) = load(false);
    let err = provision(&db, &fixtures)
        .await
        .expect_err("load without writes");
    assert!(err.to_string().contains("--allow-writes"), "{err}");

    let (db, fixtures) = load(true);
    let database = must(&db, &fixtures).await;
    assert!(database.fixtures_loaded());
    assert!(database
        .url(Role::Owner)
        .starts_with("postgres://preflight_owner:"));
    check_shop(&database, ROWS).await;

    // Asked again: already there.
    let err = provision(&db, &fixtures).await.expect_err("second load");
    assert!(err.to_string().contains("already holds"), "{err}");
}

#[tokio::test]
async fn the_test_support_database_works() {
    let database = testing::database().await;
    assert!(database.fixtures_loaded());
    let owner = database.owner_pool().await.expect("owner pool");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&owner)
        .await
        .expect("tenants");
    assert_eq!(n, 3);
}
