//! The `server` family in the default `preflight probe` run ([`run_served`]): the built-in layer
//! the run is probing — same database, same policy, same faults — is served by this process
//! over streamable HTTP on `127.0.0.1:<ephemeral port>` with `preflight_serve`, principals from
//! HS256 tokens signed with a key generated for the run (held in memory only, never printed),
//! and probed as a server through an in-memory target profile equal to the shipped
//! `tests/targets/serve/profile-http.yaml` ([`served_profile`]). That is how the default run
//! verifies what only a served layer has: the health endpoint (OPS-4), the request rate limits
//! (OPS-6) and the bearer-token checks (ISO-1's forgeries). The server is shut down afterwards.
//!
//! Every finding says it was taken through the built-in layer served over HTTP on loopback. A
//! served layer that cannot be started makes every server probe an `error` with the reason; a
//! policy without `rate_limits:` makes the rate-limit probes `fail` (served, the layer limits
//! nothing), never `pass`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::policy::{Policy, RateLimit};
use preflight_enforcer::Faults;
use preflight_probes::codes::Family;
use preflight_probes::runner::{self, ProbeCtx, ProbeOutcome, RunOptions, RunResult};
use preflight_probes::session::Session;
use preflight_probes::target::{RemoteTarget, Target};
use preflight_reports::{Finding, RunEnvironment, Verdict};
use preflight_serve::auth::{ClaimNames, JwtVerifier};
use preflight_serve::http::{HttpOptions, HttpServer, TestVariant};
use preflight_serve::limits::Rate;
use preflight_serve::Layer;
use preflight_targets::profile::{
    DeclaredLimits, DeclaredRate, HealthCheck, Jwt, JwtAlg, JwtKey, PrincipalDelivery, Profile,
    ServerSection, Transport,
};
use preflight_targets::Connection;

/// What the findings say about where they were taken.
const THROUGH: &str = "the built-in layer, served over streamable HTTP on loopback by this run";

/// How long the served server may take to stop after the probes.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The rate-limit probes, and the policy limit each one checks.
const RATE_PROBES: [(&str, &str); 2] = [
    ("server.rate_limit_per_ip", "per_ip"),
    ("server.rate_limit_per_principal", "per_principal"),
];

/// Serves the session's built-in layer over HTTP with the faults of `main_ctx` (the run's
/// context on the built-in layer) and, in the server family's own tests, a protection switched
/// off by `variant`; runs the `server` family against it and shuts it down. If the layer cannot
/// be served, each server probe is an `error` finding saying why.
pub async fn run_served(
    session: &Session,
    main_ctx: &ProbeCtx,
    options: &RunOptions,
    environment: RunEnvironment,
    variant: TestVariant,
) -> RunResult {
    let started = Instant::now();
    let families = BTreeSet::from([Family::Server]);
    let faults = main_ctx.faults.clone();
    match serve_and_probe(session, faults, options, environment, variant, &families).await {
        Ok(mut result) => {
            for f in &mut result.findings {
                annotate(f, &session.policy);
            }
            result
        }
        Err(why) => {
            let plan = session.plan(main_ctx, &families, &[]);
            let findings = plan
                .probes
                .iter()
                .map(|p| {
                    p.finding(
                        main_ctx,
                        ProbeOutcome::error(format!(
                            "the built-in layer could not be served over HTTP on loopback for \
                             the server probes: {why}"
                        )),
                        Duration::ZERO,
                    )
                })
                .collect();
            RunResult {
                findings,
                tool_calls: 0,
                call_p50: None,
                duration: started.elapsed(),
                infrastructure_error: None,
                leftover_rows: Vec::new(),
            }
        }
    }
}

/// Adds the served run's findings, calls, time and faults to the run's own.
pub fn merge(into: &mut RunResult, served: RunResult) {
    into.findings.extend(served.findings);
    into.tool_calls += served.tool_calls;
    into.duration += served.duration;
    into.infrastructure_error = into
        .infrastructure_error
        .take()
        .or(served.infrastructure_error);
    into.leftover_rows.extend(served.leftover_rows);
}

async fn serve_and_probe(
    session: &Session,
    faults: Faults,
    options: &RunOptions,
    environment: RunEnvironment,
    variant: TestVariant,
    families: &BTreeSet<Family>,
) -> Result<RunResult, String> {
    let agent_url = session.database.agent_url().to_string();
    // The JSONL copy of the served layer's log goes here, never to the policy's own path.
    let jsonl_dir = tempfile::Builder::new()
        .prefix("preflight-served-")
        .tempdir()
        .map_err(|e| format!("cannot make a folder for its audit copy: {e}"))?;
    let layer = Layer::start_with_policy(
        Arc::clone(&session.policy),
        &agent_url,
        faults,
        jsonl_dir.path(),
    )
    .await
    .map_err(|e| runner::error_chain(&e))?;
    // A fresh key per run, only ever in memory: the verifier and the profile that mints tokens
    // share it, and neither prints it.
    let key: [u8; 32] = rand::random();
    let limits = session.policy.rate_limits.clone().unwrap_or_default();
    let server = HttpServer::bind(
        layer,
        HttpOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            verifier: JwtVerifier::hs256_secret(&key, ClaimNames::default()),
            per_ip: limits.per_ip.map(to_rate),
            per_principal: limits.per_principal.map(to_rate),
            allowed_hosts: Vec::new(),
            variant,
        },
    )
    .await
    .map_err(|e| runner::error_chain(&e))?;
    let addr = server
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let cancel = server.cancel_token();
    let serving = tokio::spawn(server.run());
    status(format!(
        "server: serving the built-in layer on http://{addr}/mcp for the server probes ..."
    ));

    let profile = Arc::new(served_profile(addr.port(), &key, &session.policy));
    let outcome = async {
        let conn = Connection::new(Arc::clone(&profile), agent_url.clone(), ".".to_string())
            .map_err(|e| format!("cannot make the target's run folder: {e}"))?;
        let target = Target::Mcp(RemoteTarget::new(conn, session.principals.a.clone()));
        let ctx = session
            .context_on(&target, Faults::none())
            .await
            .map_err(|e| runner::error_chain(&e))?;
        let plan = session.plan(&ctx, families, &[]);
        let result = runner::run(&plan, ctx, options, environment, None).await;
        target.shutdown().await;
        Ok::<RunResult, String>(result)
    }
    .await;
    cancel.cancel();
    let stopped = match tokio::time::timeout(SHUTDOWN_WAIT, serving).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(format!(
            "stopped with an error: {}",
            runner::error_chain(&e)
        )),
        Ok(Err(e)) => Some(format!("its task failed: {e}")),
        Err(_) => Some(format!("did not stop within {} s", SHUTDOWN_WAIT.as_secs())),
    };
    if let Some(why) = stopped {
        tracing::warn!(target: "preflight::probe", "the served layer {why}");
    }
    let result = outcome?;
    status(format!(
        "server: {} probes through the served layer in {:.1} s",
        result.findings.len(),
        result.duration.as_secs_f64()
    ));
    Ok(result)
}

fn status(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

fn to_rate(r: RateLimit) -> Rate {
    Rate {
        requests: r.requests,
        per: r.per,
    }
}

/// The shipped `tests/targets/serve/profile-http.yaml` on `port`, in memory: our contract's
/// tools, principals only from HS256 bearer tokens signed with `key`, `/healthz`, and the rate
/// limits the served policy declares (none declared: none in the profile).
fn served_profile(port: u16, key: &[u8], policy: &Policy) -> Profile {
    let mut profile = Profile::default_for(Transport::McpHttp {
        url: format!("http://127.0.0.1:{port}/mcp"),
    });
    profile.path = "<the built-in layer served on loopback>".to_string();
    profile.name = "the built-in layer served over streamable HTTP by preflight probe".to_string();
    profile.timeout = Duration::from_secs(20);
    profile.principal = PrincipalDelivery {
        jwt: Some(Jwt {
            alg: JwtAlg::Hs256,
            key: JwtKey::in_memory(key.to_vec(), "a key generated for this run"),
            header: "Authorization".to_string(),
            tenant_claim: "tenant".to_string(),
            user_claim: "sub".to_string(),
            roles_claim: Some("roles".to_string()),
            issuer: None,
            audience: None,
            ttl: Duration::from_secs(30 * 60),
        }),
        ..PrincipalDelivery::default()
    };
    let limits = policy.rate_limits.clone().unwrap_or_default();
    let declared = |r: Option<RateLimit>| {
        r.map(|r| DeclaredRate {
            requests: r.requests,
            per: r.per,
        })
    };
    profile.server = Some(ServerSection {
        health: Some(HealthCheck::default()),
        rate_limits: DeclaredLimits {
            per_ip: declared(limits.per_ip),
            per_principal: declared(limits.per_principal),
        },
    });
    profile
}

/// Says where the finding was taken; a rate limit the policy does not declare is a `fail`:
/// served, the layer limits nothing of that kind.
fn annotate(f: &mut Finding, policy: &Policy) {
    let limits = policy.rate_limits.clone().unwrap_or_default();
    for (code, limit) in RATE_PROBES {
        let declared = match limit {
            "per_ip" => limits.per_ip.is_some(),
            _ => limits.per_principal.is_some(),
        };
        if f.code == code && !declared && f.verdict == Verdict::NotVerified {
            f.verdict = Verdict::Fail;
            f.message = format!(
                "the policy {} declares no `rate_limits.{limit}`, so the served layer limits \
                 nothing {}: a runaway agent or client is never slowed down (add a \
                 `rate_limits:` section; see docs/serve.md)",
                policy.path,
                if limit == "per_ip" {
                    "per client address"
                } else {
                    "per principal"
                }
            );
        }
    }
    f.message = format!("{} (through {THROUGH})", f.message);
    f.evidence.facts.insert(
        0,
        format!(
            "taken through {THROUGH}: same database, same policy; principals from HS256 bearer \
             tokens signed with a key generated for the run"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped policy, with its `rate_limits:` section.
    fn shop() -> Policy {
        preflight_enforcer::policy::load_str(
            include_str!("../../fixtures/shop/policy.yaml"),
            "policy.yaml",
            None,
        )
        .expect("policy loads")
    }

    fn finding(verdict: Verdict, message: &str) -> Finding {
        let code = "server.rate_limit_per_ip";
        Finding {
            code: code.into(),
            family: "server".into(),
            fingerprint: Finding::fingerprint_for(code, "t"),
            title: "t".into(),
            checklist: vec!["OPS-6".into()],
            severity: preflight_reports::Severity::High,
            verdict,
            message: message.into(),
            call: None,
            response_excerpt: None,
            evidence: preflight_reports::Evidence::default(),
            location: None,
            duration: Duration::ZERO,
        }
    }

    /// The in-memory profile is the shipped one with its port and key: same transport, tools,
    /// token claims, health path and limits (the shipped policy's).
    #[test]
    fn the_served_profile_is_the_shipped_one() {
        let shipped = include_str!("../../tests/targets/serve/profile-http.yaml")
            .replace("38920", "41234")
            .replace("key_env: SERVE_JWT_KEY", "key: shipped-key");
        let shipped = preflight_targets::profile::load_str(&shipped, "profile-http.yaml")
            .expect("shipped profile loads");
        let ours = served_profile(41234, b"k", &shop());
        assert_eq!(ours.transport, shipped.transport);
        assert_eq!(ours.timeout, shipped.timeout);
        assert_eq!(ours.login, shipped.login);
        assert_eq!(ours.tools, shipped.tools);
        assert_eq!(ours.server, shipped.server);
        let (a, b) = (
            ours.principal.jwt.clone().unwrap(),
            shipped.principal.jwt.clone().unwrap(),
        );
        assert_eq!(
            (
                a.alg,
                &a.header,
                &a.tenant_claim,
                &a.user_claim,
                &a.roles_claim
            ),
            (
                b.alg,
                &b.header,
                &b.tenant_claim,
                &b.user_claim,
                &b.roles_claim
            )
        );
        assert_eq!((a.issuer, a.audience, a.ttl), (b.issuer, b.audience, b.ttl));
        assert!(ours.principal.headers.is_empty() && ours.principal.env.is_empty());
        assert!(
            !format!("{ours:?}").contains("[107]"),
            "the key is not shown"
        );
    }

    #[test]
    fn a_policy_without_rate_limits_fails_the_rate_probes_never_passes() {
        let mut bare = shop();
        bare.rate_limits = None;
        let profile = served_profile(1, b"k", &bare);
        assert_eq!(
            profile.server.unwrap().rate_limits,
            DeclaredLimits::default()
        );
        let mut f = finding(Verdict::NotVerified, "declares no `per_ip` limit");
        annotate(&mut f, &bare);
        assert_eq!(f.verdict, Verdict::Fail);
        assert!(f.message.contains("rate_limits.per_ip"), "{}", f.message);
        assert!(f
            .message
            .contains("served over streamable HTTP on loopback"));
        // Declared: the probe's own verdict stands.
        let mut f = finding(Verdict::Pass, "served 40 of 60");
        annotate(&mut f, &shop());
        assert_eq!(f.verdict, Verdict::Pass);
        assert!(f.evidence.facts[0].contains("loopback"));
    }
}
