//! `server.rate_limit_per_principal` and `server.rate_limit_per_ip` (OPS-6): the request rate
//! limits the profile declares hold. A burst of calls larger than the limit is sent as fast as
//! the layer answers; the calls actually served (a tool result came back) are counted against
//! what the declared rate allows over the burst's duration (the burst, plus what refilled
//! meanwhile), and every refusal must be structured: HTTP 429 with `Retry-After`, or a rate-limit
//! code in the tool's denial.
//!
//! The per-principal burst comes from one principal of its own; the per-IP burst is spread over
//! enough principals that no per-principal limit is reached first. Only tool calls are counted
//! as served — opening a session costs requests too on some layers — so the count never
//! exceeds what the layer really served.

use std::time::Instant;

use futures::stream::{self, StreamExt};
use preflight_enforcer::{ErrorCode, Principal};
use preflight_targets::profile::DeclaredRate;
use preflight_targets::wire::{Answer, WireSession};

use super::{probe_principal, remote, section, DataCall};
use crate::codes::ProbeCode;
use crate::runner::{Probe, ProbeCtx, ProbeOutcome, ProbeResult};

/// Calls in flight at once during a burst.
const IN_FLIGHT: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Principal,
    Ip,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Principal => "per_principal",
            Scope::Ip => "per_ip",
        }
    }
}

pub(super) fn probes() -> Vec<Probe> {
    vec![
        Probe::new(
            ProbeCode::RateLimitPerPrincipal,
            "a burst from one principal is cut off at the declared per-principal limit with a structured refusal",
            |ctx| async move { run(&ctx, Scope::Principal).await },
        ),
        Probe::new(
            ProbeCode::RateLimitPerIp,
            "a burst from one client address is cut off at the declared per-IP limit with a structured refusal",
            |ctx| async move { run(&ctx, Scope::Ip).await },
        ),
    ]
}

/// How one call of the burst ended.
#[derive(Debug, Default)]
struct Tally {
    served: u64,
    structured: u64,
    /// Refused as over a limit, but without `Retry-After` or a rate-limit code.
    unstructured: Vec<String>,
    /// Anything else: faults, server errors, other denials.
    other: Vec<String>,
}

impl Tally {
    fn add(&mut self, a: &Answer) {
        if a.served() {
            self.served += 1;
            return;
        }
        match (a.status, &a.outcome) {
            (Some(429), _) => {
                if a.retry_after.is_some() {
                    self.structured += 1;
                } else {
                    self.unstructured
                        .push(format!("HTTP 429 without Retry-After: {}", a.describe()));
                }
            }
            (_, Some(Err(e)))
                if matches!(
                    e.code,
                    ErrorCode::WriteRateExceeded | ErrorCode::QuotaExceeded
                ) =>
            {
                self.structured += 1
            }
            _ => self.other.push(a.describe()),
        }
    }
}

async fn run(ctx: &ProbeCtx, scope: Scope) -> ProbeResult {
    let (profile, wire) = remote(ctx)?;
    let server = section(&profile, "request rate limit")?;
    let limits = server.rate_limits;
    let declared = match scope {
        Scope::Principal => limits.per_principal,
        Scope::Ip => limits.per_ip,
    };
    let Some(rate) = declared else {
        return Err(ProbeOutcome::not_verified(format!(
            "the `server.rate_limits` of {} declares no `{}` limit",
            profile.path,
            scope.name()
        )));
    };
    if profile.principal.jwt.is_none() && profile.principal.headers.is_empty() {
        return Err(ProbeOutcome::not_verified(
            "the principal does not travel in a header or a token, so a burst cannot be sent \
             as principals of its own",
        ));
    }
    let data = DataCall::find(ctx, &profile).await?;
    let args = data.arguments(ctx);
    let burst = u64::from(rate.requests) + u64::from(rate.requests / 2).max(10);
    // Principals: one for a per-principal burst; for a per-IP burst enough that none of them
    // reaches a per-principal limit.
    let principals: Vec<Principal> = match scope {
        Scope::Principal => vec![probe_principal(ctx, "rate-principal")],
        Scope::Ip => {
            let per = limits
                .per_principal
                .map(|p| u64::from(p.requests).max(1))
                .unwrap_or(burst);
            let n = burst.div_ceil(per.saturating_sub(1).max(1)) + 1;
            (0..n)
                .map(|i| probe_principal(ctx, &format!("rate-ip-{i}")))
                .collect()
        }
    };

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut sessions: Vec<(WireSession, Principal)> = Vec::new();
    for who in &principals {
        let headers = wire
            .headers_for(who)
            .map_err(|e| ProbeOutcome::error(format!("cannot mint a token: {e}")))?;
        match wire.open(&headers).await {
            Ok(s) => sessions.push((s, who.clone())),
            Err(a) => tally.add(&a),
        }
    }
    if sessions.is_empty() && tally.structured == 0 {
        return Err(ProbeOutcome::error(format!(
            "no session could be opened for the burst: {}",
            tally.other.first().cloned().unwrap_or_default()
        )));
    }
    let answers: Vec<Answer> = stream::iter(0..if sessions.is_empty() { 0 } else { burst })
        .map(|i| {
            let (session, who) = &sessions[(i as usize) % sessions.len()];
            let wire = wire.clone();
            let args = args.clone();
            let session = session.clone();
            let who = who.clone();
            async move { wire.call(&session, &who, crate::calls::QUERY, &args).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    for a in &answers {
        tally.add(a);
    }
    for (s, _) in &sessions {
        wire.close(s).await;
    }
    judge(scope, rate, burst, principals.len(), elapsed, &tally)
}

fn judge(
    scope: Scope,
    rate: DeclaredRate,
    burst: u64,
    principals: usize,
    elapsed: std::time::Duration,
    tally: &Tally,
) -> ProbeResult {
    let allowance = rate.allowance(elapsed);
    let declared = format!(
        "{} requests per {:.0} s",
        rate.requests,
        rate.per.as_secs_f64()
    );
    let mut facts = vec![
        format!(
            "{burst} calls sent in {:.2} s from {principals} principal(s), {IN_FLIGHT} at a time",
            elapsed.as_secs_f64()
        ),
        format!(
            "served {}, refused with a structured rate limit {}, refused without structure {}, other {}",
            tally.served,
            tally.structured,
            tally.unstructured.len(),
            tally.other.len()
        ),
        format!(
            "the declared {} limit ({declared}) allows at most {allowance} in that time",
            scope.name()
        ),
    ];
    facts.extend(tally.unstructured.iter().take(3).cloned());
    facts.extend(tally.other.iter().take(3).cloned());
    if tally.served > allowance {
        return Ok(ProbeOutcome::fail(format!(
            "the layer served {} of {burst} calls in {:.2} s; its declared {} limit ({declared}) allows at most {allowance}",
            tally.served,
            elapsed.as_secs_f64(),
            scope.name()
        ))
        .facts(facts));
    }
    if !tally.unstructured.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "{} call(s) over the limit were refused without `Retry-After` or a rate-limit code: an agent cannot tell when to retry",
            tally.unstructured.len()
        ))
        .facts(facts));
    }
    if tally.structured == 0 {
        if !tally.other.is_empty() {
            return Err(ProbeOutcome::error(format!(
                "{} call(s) of the burst failed for other reasons and none was refused by a rate limit",
                tally.other.len()
            ))
            .facts(facts));
        }
        return Err(ProbeOutcome::not_verified(format!(
            "the burst ({burst} calls in {:.2} s) never exceeded what the declared limit allows ({allowance}), so the limit could not be shown",
            elapsed.as_secs_f64()
        ))
        .facts(facts));
    }
    Ok(ProbeOutcome::pass(format!(
        "the layer served {} of {burst} calls (at most {allowance} allowed) and refused {} with HTTP 429 and Retry-After or a rate-limit code",
        tally.served, tally.structured
    ))
    .facts(facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate() -> DeclaredRate {
        DeclaredRate {
            requests: 60,
            per: Duration::from_secs(60),
        }
    }

    fn tally(served: u64, structured: u64) -> Tally {
        Tally {
            served,
            structured,
            ..Tally::default()
        }
    }

    #[test]
    fn served_beyond_the_allowance_fails_and_the_refill_is_allowed() {
        let two_s = Duration::from_secs(2);
        // 60 + 2 refilled in 2 s.
        let v = |t: &Tally| judge(Scope::Principal, rate(), 90, 1, two_s, t);
        assert_eq!(
            v(&tally(62, 28)).unwrap().verdict,
            preflight_reports::Verdict::Pass
        );
        assert_eq!(
            v(&tally(63, 27)).unwrap().verdict,
            preflight_reports::Verdict::Fail
        );
        assert_eq!(
            v(&tally(90, 0)).unwrap().verdict,
            preflight_reports::Verdict::Fail
        );
        let mut t = tally(40, 10);
        t.unstructured.push("HTTP 429 without Retry-After".into());
        assert_eq!(v(&t).unwrap().verdict, preflight_reports::Verdict::Fail);
        // Nothing refused and nothing over: the limit was never shown.
        let slow = judge(
            Scope::Ip,
            rate(),
            70,
            3,
            Duration::from_secs(30),
            &tally(70, 0),
        );
        assert_eq!(
            slow.unwrap_err().verdict,
            preflight_reports::Verdict::NotVerified
        );
    }
}
