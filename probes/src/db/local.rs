//! The local backend: a throwaway cluster in a temp dir, from the system's PostgreSQL binaries,
//! listening on a free port of 127.0.0.1 with password (SCRAM) authentication.
//!
//! The postmaster runs as a direct child of a supervisor thread, in its own process group, with
//! a parent-death signal: if this process dies for any reason (even SIGKILL) the kernel sends
//! the postmaster SIGQUIT, an immediate shutdown, so no server outlives us. When we are root it
//! runs as an unprivileged user (`postgres`, else `nobody`), since Postgres refuses root.
//!
//! `initdb` is most of the start-up time, so a freshly initialised data dir is kept per binary
//! version in a cache folder and copied for each run; the superuser password is reset on every
//! start, so the cached copy holds no secret anyone relies on.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{Pid, Uid, User};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Executor};

use super::error::DbError;
use super::fixtures::random_password;
use super::registry::{self, Registration, Teardown};

/// The superuser `initdb` creates.
pub(crate) const SUPERUSER: &str = "postgres";
/// The database the fixtures go into.
pub(crate) const DATABASE: &str = "preflight";
/// Bump when the initdb options change, so old cached templates are not used.
const TEMPLATE_FORMAT: &str = "v1";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL server binaries of one installation.
#[derive(Clone, Debug)]
pub(crate) struct PgBin {
    pub dir: PathBuf,
    /// `postgres --version`, e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    pub major: u32,
}

impl PgBin {
    /// `explicit` when given; else the highest version under `/usr/lib/postgresql/*/bin`
    /// (Debian and Ubuntu); else the first folder on `PATH` holding `initdb` and `postgres`.
    pub(crate) fn find(explicit: Option<&Path>) -> Result<PgBin, DbError> {
        if let Some(dir) = explicit {
            return if has_server_binaries(dir) {
                PgBin::at(dir)
            } else {
                Err(DbError::BinariesNotFound {
                    searched: dir.display().to_string(),
                })
            };
        }
        let mut searched = Vec::new();
        let debian = Path::new("/usr/lib/postgresql");
        searched.push(format!("{}/*/bin", debian.display()));
        let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(debian)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
                Some((key?, entry.path().join("bin")))
            })
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        if let Some((_, dir)) = versions.iter().find(|(_, dir)| has_server_binaries(dir)) {
            return PgBin::at(dir);
        }
        searched.push("PATH".to_string());
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_server_binaries(&dir) {
                    return PgBin::at(&dir);
                }
            }
        }
        Err(DbError::BinariesNotFound {
            searched: format!(
                "{} (install the PostgreSQL server package or pass --pg-bin)",
                searched.join(", ")
            ),
        })
    }

    fn at(dir: &Path) -> Result<PgBin, DbError> {
        let postgres = dir.join("postgres");
        let output = Command::new(&postgres)
            .arg("--version")
            .output()
            .map_err(|e| DbError::Command {
                what: format!("cannot run {} --version", postgres.display()),
                source: Some(e),
            })?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || version.is_empty() {
            return Err(DbError::Command {
                what: format!(
                    "{} --version failed ({}): {}",
                    postgres.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                source: None,
            });
        }
        let major = version
            .split(") ")
            .nth(1)
            .and_then(|v| v.split(['.', ' ']).next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        Ok(PgBin {
            dir: dir.to_path_buf(),
            version,
            major,
        })
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The version number alone, e.g. `15.18`.
    pub(crate) fn short_version(&self) -> &str {
        self.version
            .split(") ")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .unwrap_or(&self.version)
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|tool| {
        fs::metadata(dir.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The unprivileged account the server runs as when we are root.
#[derive(Clone, Debug)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

impl RunAs {
    /// `None` when we are not root (the server then runs as us).
    fn choose() -> Result<Option<RunAs>, DbError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = User::from_name(name) {
                return Ok(Some(RunAs {
                    name: user.name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                }));
            }
        }
        Err(DbError::Config(
            "running as root, and neither a `postgres` nor a `nobody` account exists to run the \
             server as (PostgreSQL refuses to run as root)"
                .to_string(),
        ))
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    fn chown(&self, path: &Path) -> Result<(), DbError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|e| {
            DbError::io(
                format!("cannot chown {} to {}", path.display(), self.name),
                e,
            )
        })
    }
}

/// A running cluster. Dropping it stops the server and deletes the temp dir.
pub(crate) struct LocalCluster {
    shared: Arc<LocalShared>,
    _registration: Registration,
    pub bin: PgBin,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub superuser_password: String,
    pub start_time: Duration,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("root", &self.shared.root)
            .field("port", &self.port)
            .field("bin", &self.bin.dir)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Finds the binaries, prepares a data dir and starts the server; then sets a fresh
    /// superuser password and creates the `preflight` database.
    pub(crate) async fn start(bin_dir: Option<PathBuf>) -> Result<LocalCluster, DbError> {
        let started = Instant::now();
        let mut cluster = tokio::task::spawn_blocking(move || {
            let bin = PgBin::find(bin_dir.as_deref())?;
            LocalCluster::start_blocking(bin)
        })
        .await
        .map_err(|e| DbError::Config(format!("the local backend's start task failed: {e}")))??;
        let mut conn = cluster
            .socket_options(SUPERUSER, "postgres")
            .connect()
            .await
            .map_err(|e| DbError::Connect {
                target: format!(
                    "the local server's socket in {}",
                    cluster.socket_dir.display()
                ),
                source: e,
            })?;
        // The password is passed as a bound setting and formatted with %L on the server, so it
        // never appears in a statement's text (or a log line).
        sqlx::query("SELECT set_config('preflight.superuser_password', $1, false)")
            .bind(&cluster.superuser_password)
            .execute(&mut conn)
            .await
            .map_err(|e| DbError::query("cannot pass the superuser password", e))?;
        conn.execute(sqlx::raw_sql(
            "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, \
             current_setting('preflight.superuser_password')); END $$; \
             SELECT set_config('preflight.superuser_password', '', false);",
        ))
        .await
        // The server's message could quote the statement with the password in it: not kept.
        .map_err(|_| DbError::Command {
            what: "cannot set the superuser password".to_string(),
            source: None,
        })?;
        let phase = Instant::now();
        conn.execute(sqlx::raw_sql(&format!("CREATE DATABASE \"{DATABASE}\"")))
            .await
            .map_err(|e| DbError::query("cannot create the preflight database", e))?;
        tracing::debug!(
            elapsed_ms = phase.elapsed().as_millis() as u64,
            "database created"
        );
        let _ = conn.close().await;
        cluster.start_time = started.elapsed();
        Ok(cluster)
    }

    fn start_blocking(bin: PgBin) -> Result<LocalCluster, DbError> {
        let run_as = RunAs::choose()?;
        let base = std::env::temp_dir();
        if let Some(user) = &run_as {
            check_reachable(&base, user)?;
        }
        let root = base.join(format!(
            "preflight-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let shared = Arc::new(LocalShared {
            root: root.clone(),
            state: Mutex::new(LocalState::default()),
        });
        // Registered before anything exists on disk, so an interrupt from here on cleans up.
        let registration = registry::register(shared.clone());
        let mut cluster = LocalCluster {
            shared,
            _registration: registration,
            bin,
            port: 0,
            socket_dir: root.join("sock"),
            superuser_password: random_password(),
            start_time: Duration::ZERO,
        };
        fs::create_dir(&root)
            .map_err(|e| DbError::io(format!("cannot create {}", root.display()), e))?;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .map_err(|e| DbError::io(format!("cannot restrict {}", root.display()), e))?;
        fs::create_dir(&cluster.socket_dir).map_err(|e| {
            DbError::io(format!("cannot create {}", cluster.socket_dir.display()), e)
        })?;
        if let Some(user) = &run_as {
            user.chown(&root)?;
            user.chown(&cluster.socket_dir)?;
        }
        let data = root.join("data");
        let phase = Instant::now();
        cluster.prepare_data_dir(&data, run_as.as_ref())?;
        tracing::debug!(
            elapsed_ms = phase.elapsed().as_millis() as u64,
            "data dir prepared"
        );
        let phase = Instant::now();
        cluster.spawn_server(&data, run_as.as_ref())?;
        tracing::debug!(
            elapsed_ms = phase.elapsed().as_millis() as u64,
            "server ready"
        );
        Ok(cluster)
    }

    /// Copies the cached template for this binary version, or runs initdb (and caches it).
    fn prepare_data_dir(&self, data: &Path, run_as: Option<&RunAs>) -> Result<(), DbError> {
        let template = template_dir(&self.bin);
        if let Some(template) = &template {
            if template.join("PG_VERSION").is_file() {
                match copy_tree(template, data, run_as, &|| self.shared.check_alive()) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        self.shared.check_alive()?;
                        tracing::warn!(error = %e.report(), "cannot use the cached data dir; running initdb");
                        let _ = fs::remove_dir_all(data);
                    }
                }
            }
        }
        let started = Instant::now();
        self.shared.check_alive()?;
        self.initdb(data, run_as)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "initdb finished"
        );
        if let Some(template) = &template {
            if let Err(e) = store_template(data, template) {
                tracing::debug!(error = %e.report(), "cannot cache the initdb result");
            }
        }
        Ok(())
    }

    fn initdb(&self, data: &Path, run_as: Option<&RunAs>) -> Result<(), DbError> {
        let pwfile = self.shared.root.join("initdb.pw");
        // Only a placeholder: the real password is set after every start.
        fs::write(&pwfile, random_password())
            .map_err(|e| DbError::io(format!("cannot write {}", pwfile.display()), e))?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))
            .map_err(|e| DbError::io(format!("cannot restrict {}", pwfile.display()), e))?;
        if let Some(user) = run_as {
            user.chown(&pwfile)?;
        }
        let mut cmd = Command::new(self.bin.tool("initdb"));
        cmd.arg("-D")
            .arg(data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&self.shared.root)
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if self.bin.major >= 13 {
            cmd.arg("--no-instructions");
        }
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        die_with_parent(&mut cmd, Signal::SIGKILL);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = self.run_helper(cmd).map_err(|e| DbError::Command {
            what: format!("cannot run {}", self.bin.tool("initdb").display()),
            source: Some(e),
        });
        let _ = fs::remove_file(&pwfile);
        let output = output?;
        self.shared.check_alive()?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            return Err(DbError::Command {
                what: format!(
                    "initdb failed ({}){}: {}",
                    output.status,
                    run_as
                        .map(|u| format!(" running as {}", u.name))
                        .unwrap_or_default(),
                    last_lines(&text, 10)
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// Runs a short-lived tool (initdb) where a teardown can find and kill it.
    fn run_helper(&self, mut cmd: Command) -> std::io::Result<std::process::Output> {
        let mut state = self.shared.lock();
        if state.torn_down {
            return Err(std::io::Error::other("interrupted"));
        }
        let child = cmd.spawn()?;
        state.helper = Some(Pid::from_raw(child.id() as i32));
        drop(state);
        let output = child.wait_with_output();
        self.shared.lock().helper = None;
        output
    }

    /// Starts the postmaster on a free port, retrying when another process takes the port
    /// between our probe and the server's bind.
    fn spawn_server(&mut self, data: &Path, run_as: Option<&RunAs>) -> Result<(), DbError> {
        let log_path = self.shared.root.join("postgres.log");
        let mut last_error = None;
        for _attempt in 0..5 {
            let port = free_port()?;
            let log = File::create(&log_path)
                .map_err(|e| DbError::io(format!("cannot create {}", log_path.display()), e))?;
            let log_err = log
                .try_clone()
                .map_err(|e| DbError::io("cannot duplicate the log file handle", e))?;
            let mut cmd = Command::new(self.bin.tool("postgres"));
            cmd.arg("-D")
                .arg(data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&self.socket_dir)
                .args(["-h", "127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "logging_collector=off"])
                .current_dir(&self.shared.root)
                .env_remove("PGDATA")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                // Our own process group: a terminal's Ctrl-C reaches us, not the server, so the
                // teardown order stays ours; and the whole group can be killed at once.
                .process_group(0);
            if let Some(user) = run_as {
                user.apply(&mut cmd);
            }
            die_with_parent(&mut cmd, Signal::SIGQUIT);
            let postmaster = Postmaster::spawn(cmd)?;
            {
                let mut state = self.shared.lock();
                if state.torn_down {
                    drop(state);
                    postmaster.stop();
                    return Err(DbError::Config(
                        "interrupted while starting the local cluster".to_string(),
                    ));
                }
                state.server = Some(postmaster.clone());
            }
            match wait_ready(&postmaster, data, &log_path) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    self.shared.stop_server();
                    let log = read_tail(&log_path);
                    if log.contains("Address already in use") || log.contains("could not bind") {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| DbError::NotReady {
            reason: "no free port could be bound".to_string(),
            log: String::new(),
        }))
    }

    /// Superuser (or any role, `trust`) over the Unix socket.
    pub(crate) fn socket_options(&self, user: &str, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.socket_dir)
            .port(self.port)
            .username(user)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
    }

    /// The temp dir holding the data dir, socket and log.
    pub(crate) fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Stops the server and deletes the temp dir now (idempotent).
    pub(crate) fn teardown(&self) {
        self.shared.teardown();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shared.teardown();
    }
}

/// What the registry and `Drop` share: where the cluster lives and its server, if running.
struct LocalShared {
    root: PathBuf,
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    server: Option<Postmaster>,
    /// A running `initdb`, killed by a teardown that interrupts start-up.
    helper: Option<Pid>,
    /// Set by the first teardown; start-up steps check it and stop creating things.
    torn_down: bool,
}

impl LocalShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop_server(&self) {
        let server = self.lock().server.take();
        if let Some(server) = server {
            server.stop();
        }
    }

    /// Fails once a teardown has started (an interrupt during start-up).
    fn check_alive(&self) -> Result<(), DbError> {
        if self.lock().torn_down {
            Err(DbError::Config(
                "interrupted while starting the local cluster".to_string(),
            ))
        } else {
            Ok(())
        }
    }
}

impl Teardown for LocalShared {
    fn describe(&self) -> String {
        format!("local cluster in {}", self.root.display())
    }

    fn teardown(&self) {
        // Holding the lock for the whole teardown makes a concurrent second call wait for the
        // first and then find nothing left to do.
        let mut state = self.lock();
        if state.torn_down {
            return;
        }
        state.torn_down = true;
        if let Some(helper) = state.helper.take() {
            let _ = kill(helper, Signal::SIGKILL);
        }
        if let Some(server) = state.server.take() {
            server.stop();
        }
        // Start-up may still be creating files in another thread until it sees `torn_down`
        // (it checks between files), so a first removal can race with it: retry briefly.
        let mut attempts = 0;
        loop {
            match fs::remove_dir_all(&self.root) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if attempts >= 20 => {
                    tracing::warn!(dir = %self.root.display(), error = %e, "cannot remove the cluster's temp dir");
                    break;
                }
                Err(_) => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The postmaster process, waited on by its supervisor thread.
#[derive(Clone)]
struct Postmaster {
    pid: Pid,
    exit: Arc<(Mutex<Option<ExitStatus>>, Condvar)>,
}

impl Postmaster {
    /// Spawns `cmd` from a dedicated thread that then waits for it: the parent-death signal is
    /// tied to the spawning *thread*, so that thread must live exactly as long as the server.
    fn spawn(mut cmd: Command) -> Result<Postmaster, DbError> {
        let exit: Arc<(Mutex<Option<ExitStatus>>, Condvar)> =
            Arc::new((Mutex::new(None), Condvar::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let exit_for_thread = exit.clone();
        std::thread::Builder::new()
            .name("preflight-postgres".to_string())
            .spawn(move || match cmd.spawn() {
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let status = child.wait();
                    let (lock, cv) = &*exit_for_thread;
                    let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                    // A failed wait means the child is gone all the same.
                    *slot =
                        Some(status.unwrap_or_else(|_| {
                            std::os::unix::process::ExitStatusExt::from_raw(0)
                        }));
                    cv.notify_all();
                }
            })
            .map_err(|e| DbError::io("cannot start the server's supervisor thread", e))?;
        let pid = rx
            .recv()
            .map_err(|_| DbError::Command {
                what: "the server's supervisor thread ended early".to_string(),
                source: None,
            })?
            .map_err(|e| DbError::Command {
                what: "cannot start postgres".to_string(),
                source: Some(e),
            })?;
        Ok(Postmaster {
            pid: Pid::from_raw(pid as i32),
            exit,
        })
    }

    fn exited(&self) -> Option<ExitStatus> {
        *self.exit.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.exit;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |status| status.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.is_some()
    }

    /// Immediate shutdown (SIGQUIT: the server and its backends exit without a checkpoint; the
    /// data is thrown away anyway), then SIGKILL to the whole process group if it lingers.
    fn stop(&self) {
        if self.exited().is_some() {
            return;
        }
        let _ = kill(self.pid, Signal::SIGQUIT);
        if !self.wait_exit(STOP_TIMEOUT) {
            tracing::warn!(
                pid = self.pid.as_raw(),
                "postgres did not stop on SIGQUIT; killing it"
            );
            let _ = killpg(self.pid, Signal::SIGKILL);
            self.wait_exit(STOP_TIMEOUT);
        }
        // Backends get SIGQUIT from the postmaster and it waits for them, but make sure.
        let _ = killpg(self.pid, Signal::SIGKILL);
    }
}

/// Sets the parent-death signal in the child (after std has switched uid, which would clear
/// it), and gives up when the parent is already gone.
fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// Polls `postmaster.pid` for the `ready` status (what `pg_ctl -w` does), failing early when
/// the server exits.
fn wait_ready(postmaster: &Postmaster, data: &Path, log_path: &Path) -> Result<(), DbError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid_file = data.join("postmaster.pid");
    loop {
        if let Some(status) = postmaster.exited() {
            return Err(DbError::NotReady {
                reason: format!("postgres exited ({status})"),
                log: read_tail(log_path),
            });
        }
        if let Ok(text) = fs::read_to_string(&pid_file) {
            let mut lines = text.lines();
            let pid_matches = lines.next().map(str::trim) == Some(&postmaster.pid.to_string());
            if pid_matches && lines.nth(6).map(str::trim) == Some("ready") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(DbError::NotReady {
                reason: format!("no `ready` status after {} s", READY_TIMEOUT.as_secs()),
                log: read_tail(log_path),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_port() -> Result<u16, DbError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| DbError::io("cannot find a free port on 127.0.0.1", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| DbError::io("cannot read the probed port", e))
}

/// Fails unless every folder from `/` to `dir` lets `user` through, with a hint, instead of an
/// obscure initdb error later.
fn check_reachable(dir: &Path, user: &RunAs) -> Result<(), DbError> {
    for ancestor in dir.ancestors() {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let ok = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(DbError::Config(format!(
                "the temp folder {} is not reachable by the `{}` account the server runs as \
                 ({} is mode {:o}); set TMPDIR to a folder it can enter, such as /tmp",
                dir.display(),
                user.name,
                ancestor.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Where initialised data dirs are cached: `$PREFLIGHT_CACHE_DIR`, `$XDG_CACHE_HOME/preflight`
/// or `~/.cache/preflight`; `None` when `PREFLIGHT_PG_TEMPLATE_CACHE=off` or no home is known.
fn template_dir(bin: &PgBin) -> Option<PathBuf> {
    if std::env::var("PREFLIGHT_PG_TEMPLATE_CACHE").is_ok_and(|v| v == "off" || v == "0") {
        return None;
    }
    let root = std::env::var_os("PREFLIGHT_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("preflight")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/preflight")))?;
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(TEMPLATE_FORMAT.as_bytes());
    hasher.update(bin.dir.as_os_str().as_encoded_bytes());
    hasher.update(bin.version.as_bytes());
    let key = hex::encode(&hasher.finalize()[..8]);
    Some(
        root.join("pg-template")
            .join(format!("{}-{key}", bin.short_version())),
    )
}

/// Copies a fresh data dir into the cache atomically (copy aside, then rename), so concurrent
/// runs never see half a template.
fn store_template(data: &Path, template: &Path) -> Result<(), DbError> {
    let parent = template
        .parent()
        .ok_or_else(|| DbError::Config("the template cache path has no parent".to_string()))?;
    fs::create_dir_all(parent)
        .map_err(|e| DbError::io(format!("cannot create {}", parent.display()), e))?;
    let staging = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = copy_tree(data, &staging, None, &|| Ok(())).and_then(|()| {
        fs::rename(&staging, template)
            .map_err(|e| DbError::io("cannot publish the cached data dir", e))
    });
    if result.is_err() || staging.exists() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Copies a directory tree keeping modes, owned by `owner` when given.
fn copy_tree(
    from: &Path,
    to: &Path,
    owner: Option<&RunAs>,
    alive: &dyn Fn() -> Result<(), DbError>,
) -> Result<(), DbError> {
    alive()?;
    let meta = fs::metadata(from)
        .map_err(|e| DbError::io(format!("cannot read {}", from.display()), e))?;
    fs::create_dir(to).map_err(|e| DbError::io(format!("cannot create {}", to.display()), e))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| DbError::io(format!("cannot set the mode of {}", to.display()), e))?;
    if let Some(user) = owner {
        user.chown(to)?;
    }
    let entries = fs::read_dir(from)
        .map_err(|e| DbError::io(format!("cannot list {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DbError::io(format!("cannot list {}", from.display()), e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let file_type = entry
            .file_type()
            .map_err(|e| DbError::io(format!("cannot stat {}", source.display()), e))?;
        if file_type.is_dir() {
            copy_tree(&source, &target, owner, alive)?;
        } else if file_type.is_symlink() {
            let link = fs::read_link(&source)
                .map_err(|e| DbError::io(format!("cannot read {}", source.display()), e))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| DbError::io(format!("cannot create {}", target.display()), e))?;
        } else {
            alive()?;
            fs::copy(&source, &target)
                .map_err(|e| DbError::io(format!("cannot copy {}", source.display()), e))?;
            if let Some(user) = owner {
                user.chown(&target)?;
            }
        }
    }
    Ok(())
}

/// The last lines of the server log, for error messages.
fn read_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    last_lines(&String::from_utf8_lossy(&bytes), 15)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
