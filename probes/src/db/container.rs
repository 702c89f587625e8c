//! The container backend: testcontainers' Postgres module with the image the caller names,
//! started with fsync off, labelled so every container of ours can be found and removed.
//!
//! Each container carries [`SESSION_LABEL`] (this process) and [`INSTANCE_LABEL`] (this
//! database). The registry entry is created before the container is, and tears down by label,
//! so an interrupt during start-up still removes a container whose id we never learnt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::ConnectOptions;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use testcontainers_modules::testcontainers::bollard::Docker;
use testcontainers_modules::testcontainers::core::client::docker_client_instance;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

use super::error::DbError;
use super::fixtures::random_password;
use super::local::{DATABASE, SUPERUSER};
use super::registry::{self, Registration, Teardown};

/// The image used when none is named: the official image, pinned.
pub const DEFAULT_PG_IMAGE: &str = "postgres:15.8";
/// Label on every container this process starts; its value is the process's session id.
pub const SESSION_LABEL: &str = "dev.preflight.session";
/// Label on every container; its value is unique per provisioned database.
pub const INSTANCE_LABEL: &str = "dev.preflight.instance";

const PING_TIMEOUT: Duration = Duration::from_secs(5);
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

static SESSION: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// This process's session id (the value of [`SESSION_LABEL`] on its containers).
pub(crate) fn session_id() -> &'static str {
    &SESSION
}

/// An image reference split the way testcontainers wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    /// `name[:tag]`, where the name may hold a registry with a port (`host:5000/pg`). Digests
    /// (`@sha256:`) are not supported by testcontainers' name/tag split.
    pub(crate) fn parse(image: &str) -> Result<ImageRef, DbError> {
        let image = image.trim();
        let bad =
            |reason: &str| DbError::Config(format!("invalid image reference {image:?}: {reason}"));
        if image.is_empty() {
            return Err(bad("it is empty"));
        }
        if image.contains('@') {
            return Err(bad("digests are not supported; use name:tag"));
        }
        if image.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let last_slash = image.rfind('/').map_or(0, |i| i + 1);
        match image[last_slash..].rfind(':') {
            Some(colon) => {
                let (name, tag) = image.split_at(last_slash + colon);
                let tag = &tag[1..];
                if name.is_empty() || tag.is_empty() {
                    return Err(bad("expected name:tag"));
                }
                Ok(ImageRef {
                    name: name.to_string(),
                    tag: tag.to_string(),
                })
            }
            None => Ok(ImageRef {
                name: image.to_string(),
                tag: "latest".to_string(),
            }),
        }
    }

    pub(crate) fn descriptor(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// Where testcontainers looks for the daemon, for messages.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

/// A Docker client that has answered a ping.
pub(crate) async fn docker() -> Result<Docker, DbError> {
    let unavailable =
        |source: Box<dyn std::error::Error + Send + Sync>| DbError::DockerUnavailable {
            host: docker_host(),
            source,
        };
    let docker = docker_client_instance()
        .await
        .map_err(|e| unavailable(Box::new(e)))?;
    match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(unavailable(Box::new(e))),
        Err(_) => Err(unavailable(
            format!("no answer within {} s", PING_TIMEOUT.as_secs()).into(),
        )),
    }
}

/// Makes sure `image` is present locally, pulling it when it is not.
pub(crate) async fn ensure_image(docker: &Docker, image: &ImageRef) -> Result<(), DbError> {
    let descriptor = image.descriptor();
    if docker.inspect_image(&descriptor).await.is_ok() {
        return Ok(());
    }
    tracing::info!(image = %descriptor, "image not present locally; pulling it");
    let options = CreateImageOptionsBuilder::default()
        .from_image(&image.name)
        .tag(&image.tag)
        .build();
    let pull = async {
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(step) = stream.next().await {
            step?;
        }
        Ok::<(), testcontainers_modules::testcontainers::bollard::errors::Error>(())
    };
    let unavailable =
        |source: Box<dyn std::error::Error + Send + Sync>| DbError::ImageUnavailable {
            image: descriptor.clone(),
            source,
        };
    match tokio::time::timeout(PULL_TIMEOUT, pull).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(unavailable(Box::new(e))),
        Err(_) => Err(unavailable(
            format!(
                "the pull did not finish within {} s",
                PULL_TIMEOUT.as_secs()
            )
            .into(),
        )),
    }
}

/// A running container. Dropping it removes the container.
pub(crate) struct ContainerServer {
    container: Mutex<Option<ContainerAsync<Postgres>>>,
    shared: Arc<ContainerShared>,
    _registration: Registration,
    pub image: String,
    pub id: String,
    pub host: String,
    pub port: u16,
    pub superuser_password: String,
    pub start_time: Duration,
}

impl std::fmt::Debug for ContainerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerServer")
            .field("image", &self.image)
            .field("id", &self.id)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ContainerServer {
    /// Starts `image` (which must be present or pullable) and waits until the `preflight`
    /// database accepts the superuser.
    pub(crate) async fn start(image: &ImageRef) -> Result<ContainerServer, DbError> {
        let started = Instant::now();
        let docker = docker().await?;
        ensure_image(&docker, image).await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(ContainerShared {
            instance: instance.clone(),
            removed: AtomicBool::new(false),
        });
        let registration = registry::register(shared.clone());
        let password = random_password();
        let descriptor = image.descriptor();
        let request = Postgres::default()
            .with_user(SUPERUSER)
            .with_password(&password)
            .with_db_name(DATABASE)
            .with_name(image.name.clone())
            .with_tag(image.tag.clone())
            .with_cmd([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            // initdb's final fsync of every file is most of the image's start-up on overlay
            // file systems; the data is thrown away anyway.
            .with_env_var("POSTGRES_INITDB_ARGS", "--no-sync")
            .with_label(SESSION_LABEL, session_id())
            .with_label(INSTANCE_LABEL, instance.clone())
            .with_label("dev.preflight.pid", std::process::id().to_string())
            .with_startup_timeout(STARTUP_TIMEOUT);
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| DbError::ContainerStart {
            image: descriptor.clone(),
            source,
        };
        let container = match request.start().await {
            Ok(c) => c,
            Err(e) => {
                // testcontainers removes what it created on failure, but a container whose
                // readiness wait failed may linger: sweep by label.
                shared.teardown();
                return Err(failed(Box::new(e)));
            }
        };
        let id = container.id().to_string();
        let host = match container.get_host().await {
            // The port is mapped on IPv4; `localhost` may resolve to ::1 first.
            Ok(h) if h.to_string() == "localhost" => "127.0.0.1".to_string(),
            Ok(h) => h.to_string(),
            Err(e) => return Err(failed(Box::new(e))),
        };
        let port = match container.get_host_port_ipv4(5432).await {
            Ok(p) => p,
            Err(e) => return Err(failed(Box::new(e))),
        };
        let mut server = ContainerServer {
            container: Mutex::new(Some(container)),
            shared,
            _registration: registration,
            image: descriptor,
            id,
            host,
            port,
            superuser_password: password,
            start_time: Duration::ZERO,
        };
        server.wait_for_connections().await?;
        server.start_time = started.elapsed();
        Ok(server)
    }

    /// The readiness log line can come a moment before the published port forwards; retry
    /// briefly.
    async fn wait_for_connections(&self) -> Result<(), DbError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match self.superuser_options().connect().await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(DbError::Connect {
                        target: format!(
                            "the {} container at {}:{}",
                            self.image, self.host, self.port
                        ),
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub(crate) fn superuser_options(&self) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(SUPERUSER)
            .password(&self.superuser_password)
            .database(DATABASE)
            .ssl_mode(PgSslMode::Disable)
    }

    pub(crate) fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Removes the container now (idempotent).
    pub(crate) fn teardown(&self) {
        let container = self
            .container
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if container.is_none() && self.shared.removed.load(Ordering::SeqCst) {
            return;
        }
        let instance = self.shared.instance.clone();
        let removed = run_detached(async move {
            if let Some(container) = container {
                if let Err(e) = container.rm().await {
                    tracing::debug!(error = %e, "removing the container by handle failed; sweeping by label");
                }
            }
            sweep(&instance).await
        });
        if removed == Some(true) {
            self.shared.removed.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for ContainerServer {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What the registry and `Drop` share: the instance label to sweep.
struct ContainerShared {
    instance: String,
    removed: AtomicBool,
}

impl Teardown for ContainerShared {
    fn describe(&self) -> String {
        format!("container labelled {INSTANCE_LABEL}={}", self.instance)
    }

    fn teardown(&self) {
        if self.removed.load(Ordering::SeqCst) {
            return;
        }
        let instance = self.instance.clone();
        if run_detached(async move { sweep(&instance).await }) == Some(true) {
            self.removed.store(true, Ordering::SeqCst);
        }
    }
}

/// Removes every container carrying the instance label: through the API, else the CLI.
async fn sweep(instance: &str) -> bool {
    match remove_labelled(instance).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, instance, "cannot remove the container through the Docker API; trying the docker CLI");
            remove_with_cli(instance)
        }
    }
}

async fn remove_labelled(instance: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let docker = docker_client_instance().await?;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let found =
        tokio::time::timeout(REMOVE_TIMEOUT, docker.list_containers(Some(options))).await??;
    for summary in found {
        let Some(id) = summary.id else { continue };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match tokio::time::timeout(REMOVE_TIMEOUT, docker.remove_container(&id, Some(options))).await? {
            Ok(()) => {}
            // Already gone (removed concurrently, or by `--rm`).
            Err(testcontainers_modules::testcontainers::bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(e) => return Err(Box::new(e)),
        }
    }
    Ok(())
}

/// The fallback when the API client cannot be used: `docker rm -f` on the label's containers.
fn remove_with_cli(instance: &str) -> bool {
    let filter = format!("label={INSTANCE_LABEL}={instance}");
    let Ok(out) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &filter])
        .output()
    else {
        return false;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        return false;
    }
    if ids.is_empty() {
        return true;
    }
    std::process::Command::new("docker")
        .args(["rm", "-f", "-v"])
        .args(&ids)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `future` to completion on a fresh current-thread runtime in its own thread, and waits.
/// Teardown happens from `Drop` and from the signal handler, inside or outside any runtime;
/// the Docker client opens a new connection per request, so it works from any runtime.
fn run_detached<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    std::thread::Builder::new()
        .name("preflight-docker-teardown".to_string())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
                .map(|rt| rt.block_on(future))
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_image_references() {
        let r = ImageRef::parse("postgres:15.8").unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("postgres", "15.8"));
        let r = ImageRef::parse("preflight/postgres:15-debian").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("preflight/postgres", "15-debian")
        );
        let r = ImageRef::parse("registry.local:5000/pg").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_str()),
            ("registry.local:5000/pg", "latest")
        );
        let r = ImageRef::parse("registry.local:5000/pg:16").unwrap();
        assert_eq!(r.descriptor(), "registry.local:5000/pg:16");
    }

    #[test]
    fn rejects_bad_image_references() {
        for bad in ["", "pg@sha256:abc", "pg:", "pg 15", ":15"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
