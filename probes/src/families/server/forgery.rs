//! `server.token_forgery` (ISO-1): a layer that takes the principal from a bearer token refuses
//! a forged one — unsigned, signed with the wrong key, a real token with its tenant claim edited,
//! an expired one — and no data comes back. A genuine token minted the same way must get data
//! first (the control), or a refusal would prove nothing.

use preflight_targets::jwt::{forge, Forgery};
use preflight_targets::wire::{Answer, Wire};

use super::{remote, DataCall};
use crate::codes::ProbeCode;
use crate::runner::{Probe, ProbeCtx, ProbeOutcome, ProbeResult};

#[derive(Clone, Copy, Debug)]
enum Kind {
    AlgNone,
    WrongKey,
    TenantEdited,
    Expired,
}

impl Kind {
    fn forgery(self, ctx: &ProbeCtx) -> Forgery {
        match self {
            Kind::AlgNone => Forgery::AlgNone,
            Kind::WrongKey => Forgery::WrongKey,
            Kind::TenantEdited => Forgery::TenantEdited {
                tenant: ctx.principals.b.tenant.clone(),
            },
            Kind::Expired => Forgery::Expired,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::AlgNone => "an unsigned token (alg: none) is refused and returns no data",
            Kind::WrongKey => "a token signed with the wrong key is refused and returns no data",
            Kind::TenantEdited => {
                "a real token with its tenant claim edited is refused and returns no data"
            }
            Kind::Expired => "an expired token is refused and returns no data",
        }
    }
}

pub(super) fn probes() -> Vec<Probe> {
    [
        Kind::AlgNone,
        Kind::WrongKey,
        Kind::TenantEdited,
        Kind::Expired,
    ]
    .into_iter()
    .map(|kind| {
        Probe::new(
            ProbeCode::TokenForgery,
            kind.title(),
            move |ctx| async move { run(&ctx, kind).await },
        )
    })
    .collect()
}

/// How the layer answered a request carrying the forged token.
enum Refused {
    /// An HTTP 4xx before any tool ran (session open or the call itself).
    Http(String),
    /// The session opened, but the call was a denial with no data.
    Denied(String),
}

async fn run(ctx: &ProbeCtx, kind: Kind) -> ProbeResult {
    let (profile, wire) = remote(ctx)?;
    let Some(jwt) = profile.principal.jwt.clone() else {
        return Err(ProbeOutcome::not_verified(format!(
            "the target profile {} has no `principal.jwt`: the layer does not take its principal \
             from a bearer token preflight can mint, so no forged token could be tried",
            profile.path
        )));
    };
    let data = DataCall::find(ctx, &profile).await?;
    let who = &ctx.principals.a;
    let args = data.arguments(ctx);

    // The control: a genuine token gets tenant A's rows.
    let genuine = wire
        .headers_for(who)
        .map_err(|e| ProbeOutcome::error(format!("cannot mint a genuine token: {e}")))?;
    let control = call_with(&wire, ctx, &genuine, &args).await;
    let control_seen = data.judge(ctx, &control);
    if !control.served() || control_seen.rows == 0 {
        return Err(ProbeOutcome::error(format!(
            "the control call with a genuine token did not return tenant A's rows ({}), so a \
             refusal of the forged token would prove nothing",
            control.describe()
        )));
    }

    let forgery = kind.forgery(ctx);
    let token = forge(&jwt, who, &forgery)
        .map_err(|e| ProbeOutcome::error(format!("cannot forge the token: {e}")))?;
    let mut forged = genuine.clone();
    forged.insert(jwt.header.clone(), format!("Bearer {token}"));
    let control_fact = format!(
        "control: a genuine token for {} got {}",
        who.tenant,
        control_seen.describe()
    );

    let (answer, refused) = match wire.open(&forged).await {
        Err(a) => {
            let r = classify(&a)?;
            (a, r)
        }
        Ok(session) => {
            let a = wire.call(&session, who, crate::calls::QUERY, &args).await;
            wire.close(&session).await;
            let seen = data.judge(ctx, &a);
            if a.served() || seen.any() {
                return Ok(ProbeOutcome::fail(format!(
                    "the layer accepted {} and answered the call with {}",
                    forgery.describe(),
                    seen.describe()
                ))
                .fact(control_fact)
                .fact(format!("forged: {}", a.describe()))
                .leaks(seen.canaries.clone()));
            }
            let r = classify(&a)?;
            (a, r)
        }
    };
    let how = match refused {
        Refused::Http(s) => s,
        Refused::Denied(s) => s,
    };
    Ok(ProbeOutcome::pass(format!(
        "the layer refused {} ({how}) and returned no data",
        forgery.describe()
    ))
    .fact(control_fact)
    .fact(format!("forged: {}", answer.describe())))
}

/// One call in a session of its own opened with `headers`.
async fn call_with(
    wire: &Wire,
    ctx: &ProbeCtx,
    headers: &std::collections::BTreeMap<String, String>,
    args: &serde_json::Value,
) -> Answer {
    match wire.open(headers).await {
        Err(a) => a,
        Ok(session) => {
            let a = wire
                .call(&session, &ctx.principals.a, crate::calls::QUERY, args)
                .await;
            wire.close(&session).await;
            a
        }
    }
}

/// A refusal, or `Err` when the answer says nothing about the token (no answer, a server error,
/// a rate limit).
fn classify(a: &Answer) -> Result<Refused, ProbeOutcome> {
    match a.status {
        Some(429) => Err(ProbeOutcome::error(format!(
            "the layer answered with a rate limit, not a judgement of the token: {}",
            a.describe()
        ))),
        Some(s) if (400..500).contains(&s) => Ok(Refused::Http(format!("HTTP {s}"))),
        Some(s) if (200..300).contains(&s) => match &a.outcome {
            Some(Err(e)) => Ok(Refused::Denied(format!(
                "the session opened, but the call was denied with {}",
                e.code
            ))),
            Some(Ok(_)) | None => Err(ProbeOutcome::error(format!(
                "the layer's answer could not be read as a refusal or a result: {}",
                a.describe()
            ))),
        },
        Some(_) | None => Err(ProbeOutcome::error(format!(
            "no judgement of the token could be read: {}",
            a.describe()
        ))),
    }
}
