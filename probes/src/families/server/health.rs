//! `server.health_fields` and `server.health_db_down` (OPS-4): the health endpoint the profile
//! names reports the layer's version, its policy hash and its audit sinks' status, and turns
//! unhealthy when the database goes away.
//!
//! The database is taken away *for the layer* from ground truth: its login role is made
//! `NOLOGIN` and its backends are terminated (a superuser connection), so the layer's pool can
//! neither keep nor open a connection while preflight's own connections stay up. The login is
//! given back whatever happens — on success, on error, and from a drop guard if the probe is
//! cut off — and the probe waits for the endpoint to report healthy again.

use std::time::{Duration, Instant};

use preflight_targets::profile::{HealthCheck, Login};
use preflight_targets::wire::{Answer, Wire};
use serde_json::Value;
use sqlx::Connection;

use super::{at_path, remote, section};
use crate::codes::ProbeCode;
use crate::runner::{Access, Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::quote_ident;

/// How long the endpoint gets to notice the database is gone, and to notice it is back.
const DOWN_WAIT: Duration = Duration::from_secs(12);
const UP_WAIT: Duration = Duration::from_secs(25);
const POLL: Duration = Duration::from_millis(250);

pub(super) fn probes() -> Vec<Probe> {
    vec![
        Probe::new(
            ProbeCode::HealthFields,
            "the health endpoint reports the version, the policy hash and the audit sinks' status",
            |ctx| async move { fields(&ctx).await },
        ),
        Probe::new(
            ProbeCode::HealthDbDown,
            "the health endpoint turns unhealthy when the layer's database login goes away",
            |ctx| async move { db_down(&ctx).await },
        ),
    ]
}

/// The health check the profile declares and its URL.
fn endpoint(ctx: &ProbeCtx) -> Result<(Wire, HealthCheck, String), ProbeOutcome> {
    let (profile, wire) = remote(ctx)?;
    let server = section(&profile, "health endpoint")?;
    let Some(health) = server.health.clone() else {
        return Err(ProbeOutcome::not_verified(format!(
            "the `server:` section of {} names no `health:` endpoint",
            profile.path
        )));
    };
    let Some(url) = health.url(wire.url()) else {
        return Err(ProbeOutcome::error(format!(
            "cannot form the health endpoint's URL from `{}` and the layer's URL",
            health.path
        )));
    };
    Ok((wire, health, url))
}

/// Healthy, unhealthy, or no judgement (no answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Healthy,
    Unhealthy,
    Silent,
}

fn state(health: &HealthCheck, a: &Answer) -> State {
    match a.status {
        None => State::Silent,
        Some(s) if !(200..300).contains(&s) => State::Unhealthy,
        Some(_) => {
            let status = a
                .body
                .as_ref()
                .and_then(|b| at_path(b, &health.status_field))
                .and_then(Value::as_str);
            match status {
                Some(s) if health.healthy.iter().any(|h| h == s) => State::Healthy,
                // A 2xx without a status field is healthy as far as a load balancer can tell.
                None => State::Healthy,
                Some(_) => State::Unhealthy,
            }
        }
    }
}

async fn fields(ctx: &ProbeCtx) -> ProbeResult {
    let (wire, health, url) = endpoint(ctx)?;
    let a = wire.get(&url).await;
    let shown = format!("GET {}: {}", health.path, a.describe());
    let Some(status) = a.status else {
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint {} does not answer",
            health.path
        ))
        .fact(shown));
    };
    let Some(body) = &a.body else {
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint answered HTTP {status} without a JSON body"
        ))
        .fact(shown));
    };
    let text_at = |path: &str| {
        at_path(body, path)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let mut missing = Vec::new();
    let version = text_at(&health.version_field);
    if version.is_none() {
        missing.push(format!("the version (`{}`)", health.version_field));
    }
    let policy_hash = text_at(&health.policy_hash_field);
    if policy_hash.is_none() {
        missing.push(format!("the policy hash (`{}`)", health.policy_hash_field));
    }
    let sinks = at_path(body, &health.sinks_field).filter(|s| match s {
        Value::Array(items) => !items.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    });
    if sinks.is_none() {
        missing.push(format!(
            "the audit sinks' status (`{}`)",
            health.sinks_field
        ));
    }
    let mut out_facts = vec![shown];
    if let Some(h) = &policy_hash {
        out_facts.push(if *h == ctx.policy.hash {
            "the reported policy hash is the hash of the policy this run judges by".to_string()
        } else {
            format!(
                "the reported policy hash {} is not this run's policy's ({}): the layer runs its own file",
                short(h),
                short(&ctx.policy.hash)
            )
        });
    }
    if !missing.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint does not report {}",
            missing.join(", ")
        ))
        .facts(out_facts));
    }
    if state(&health, &a) != State::Healthy {
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint reports the layer unhealthy (HTTP {status}) while its database is up"
        ))
        .facts(out_facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "the health endpoint reports version {}, a policy hash and the audit sinks' status",
        version.unwrap_or_default()
    ))
    .facts(out_facts))
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

async fn db_down(ctx: &ProbeCtx) -> ProbeResult {
    let (wire, health, url) = endpoint(ctx)?;
    let profile = remote(ctx)?.0;
    if ctx.access != Access::ReadWrite {
        return Err(ProbeOutcome::not_verified(
            "the database is read-only for this run; taking the layer's login away is a change \
             only a throwaway database (or --allow-writes) permits",
        ));
    }
    if profile.login != Login::Agent {
        return Err(ProbeOutcome::not_verified(format!(
            "the layer connects as the {} login, which preflight's own ground truth shares; it \
             cannot be taken from the layer alone",
            profile.login.as_str()
        )));
    }
    let (Some(role), Some(su)) = (ctx.agent_role.clone(), ctx.superuser_url.clone()) else {
        return Err(ProbeOutcome::not_verified(
            "taking the layer's login away needs a superuser connection and the agent role's \
             name; this database offers no superuser login",
        ));
    };
    let before = wire.get(&url).await;
    if state(&health, &before) != State::Healthy {
        return Err(ProbeOutcome::error(format!(
            "the health endpoint was not healthy before the database was taken away ({}), so \
             an unhealthy answer afterwards would prove nothing",
            before.describe()
        )));
    }
    let mut facts = vec![format!("before: {}", before.describe())];

    let mut guard = LoginGuard::take(&su, &role).await?;
    facts.push(format!(
        "the layer's login role was made NOLOGIN and {} of its backend(s) terminated",
        guard.terminated
    ));
    let started = Instant::now();
    let mut down: Option<Answer> = None;
    let mut silent = 0usize;
    while started.elapsed() < DOWN_WAIT {
        let a = wire.get(&url).await;
        match state(&health, &a) {
            State::Unhealthy => {
                down = Some(a);
                break;
            }
            State::Silent => silent += 1,
            State::Healthy => {}
        }
        tokio::time::sleep(POLL).await;
    }
    let noticed = started.elapsed();
    let restored = guard.restore().await;
    if let Err(e) = &restored {
        return Err(ProbeOutcome::error(format!(
            "the layer's login could not be given back: {e}"
        )));
    }
    let back = Instant::now();
    let mut up: Option<Answer> = None;
    while back.elapsed() < UP_WAIT {
        let a = wire.get(&url).await;
        if state(&health, &a) == State::Healthy {
            up = Some(a);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let Some(down) = down else {
        if silent > 0 {
            return Err(ProbeOutcome::error(format!(
                "the health endpoint stopped answering ({silent} request(s) without an answer) \
                 instead of reporting unhealthy"
            ))
            .facts(facts));
        }
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint kept reporting healthy for {:.0} s while the layer could not \
             reach its database",
            DOWN_WAIT.as_secs_f64()
        ))
        .facts(facts));
    };
    facts.push(format!(
        "after {:.1} s: {}",
        noticed.as_secs_f64(),
        down.describe()
    ));
    let Some(up) = up else {
        return Ok(ProbeOutcome::fail(format!(
            "the health endpoint turned unhealthy with the database gone, but did not report \
             healthy again within {:.0} s after the login was given back: a load balancer would \
             never send it traffic again",
            UP_WAIT.as_secs_f64()
        ))
        .facts(facts));
    };
    facts.push(format!(
        "healthy again {:.1} s after the login was given back: {}",
        back.elapsed().as_secs_f64(),
        up.describe()
    ));
    Ok(ProbeOutcome::pass(format!(
        "the health endpoint turned unhealthy {:.1} s after the layer lost its database login, and healthy again once it was given back",
        noticed.as_secs_f64()
    ))
    .facts(facts))
}

/// The layer's login taken away; given back by [`LoginGuard::restore`], or on drop (a probe cut
/// off by its timeout) from a task of its own.
struct LoginGuard {
    superuser_url: String,
    role: String,
    terminated: i64,
    restored: bool,
}

impl LoginGuard {
    async fn take(superuser_url: &str, role: &str) -> Result<LoginGuard, ProbeOutcome> {
        let err = |e: sqlx::Error| {
            ProbeOutcome::error(format!(
                "cannot take the layer's login away: {}",
                crate::runner::error_chain(&e)
            ))
        };
        let mut conn = sqlx::PgConnection::connect(superuser_url)
            .await
            .map_err(err)?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname = $1")
                .bind(role)
                .fetch_optional(&mut conn)
                .await
                .map_err(err)?;
        let Some(role) = exists else {
            return Err(ProbeOutcome::error(format!(
                "the layer's login role {role:?} is not in the database"
            )));
        };
        let mut guard = LoginGuard {
            superuser_url: superuser_url.to_string(),
            role: role.clone(),
            terminated: 0,
            restored: false,
        };
        sqlx::query(&format!("ALTER ROLE {} NOLOGIN", quote_ident(&role)))
            .execute(&mut conn)
            .await
            .map_err(err)?;
        guard.terminated = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&role)
        .fetch_one(&mut conn)
        .await
        .map_err(err)?;
        let _ = conn.close().await;
        Ok(guard)
    }

    async fn restore(&mut self) -> Result<(), String> {
        let r = give_back(&self.superuser_url, &self.role).await;
        if r.is_ok() {
            self.restored = true;
        }
        r
    }
}

impl Drop for LoginGuard {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        let (url, role) = (self.superuser_url.clone(), self.role.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    if let Err(e) = give_back(&url, &role).await {
                        tracing::error!(target: "preflight::probe", "the agent login could not be given back: {e}");
                    }
                });
            }
            Err(_) => tracing::error!(
                target: "preflight::probe",
                "the agent login was left NOLOGIN: no runtime to give it back"
            ),
        }
    }
}

async fn give_back(superuser_url: &str, role: &str) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(superuser_url)
        .await
        .map_err(|e| crate::runner::error_chain(&e))?;
    sqlx::query(&format!("ALTER ROLE {} LOGIN", quote_ident(role)))
        .execute(&mut conn)
        .await
        .map_err(|e| crate::runner::error_chain(&e))?;
    let _ = conn.close().await;
    Ok(())
}
