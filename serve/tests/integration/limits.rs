//! Rate limits before the MCP layer: per client IP and per principal, HTTP 429 with
//! `Retry-After` over the limit, audited; the policy section is what `preflight serve` reads.

use std::time::Duration;

use preflight_serve::http::TestVariant;
use preflight_serve::limits::Rate;

use crate::support::*;

fn rate(requests: u32) -> Option<Rate> {
    Some(Rate {
        requests,
        per: Duration::from_secs(60),
    })
}

#[tokio::test]
async fn per_ip_and_per_principal_limits_refuse_with_429() {
    let db = preflight_probes::db::testing::database().await;
    let policy = shop_policy();

    // Per IP: every request counts, with or without a valid token.
    let mut spec = ServeSpec::new(policy.path());
    spec.per_ip = rate(3);
    let served = serve(&db, spec).await;
    let before = refusals(&db, "rate_limited_per_ip").await;
    let tok = format!("Bearer {}", token("acme", "alice"));
    for i in 0..3 {
        let r = raw_initialize(&served.base, Some(&tok)).await;
        assert_ne!(r.status().as_u16(), 429, "request {i} is within the limit");
    }
    let r = raw_initialize(&served.base, Some(&tok)).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(refusals(&db, "rate_limited_per_ip").await, before + 1);
    served.stop().await;

    // Per principal: alice's budget is hers; bob, from the same IP, still gets through.
    let mut spec = ServeSpec::new(policy.path());
    spec.per_principal = rate(2);
    let served = serve(&db, spec).await;
    let alice = format!("Bearer {}", token("acme", "alice"));
    let bob = format!("Bearer {}", token("acme", "bob"));
    for _ in 0..2 {
        assert_ne!(status(&served.base, &alice).await, 429);
    }
    assert_eq!(status(&served.base, &alice).await, 429);
    assert_ne!(status(&served.base, &bob).await, 429);
    served.stop().await;

    // The no-limits variant ignores both.
    let mut spec = ServeSpec::new(policy.path());
    spec.per_ip = rate(1);
    spec.per_principal = rate(1);
    spec.variant = TestVariant {
        no_limits: true,
        ..Default::default()
    };
    let served = serve(&db, spec).await;
    for _ in 0..4 {
        assert_ne!(status(&served.base, &alice).await, 429);
    }
    served.stop().await;
}

/// The HTTP status of an MCP `initialize` sent to `base` with `authorization`.
async fn status(base: &str, authorization: &str) -> u16 {
    raw_initialize(base, Some(authorization))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_policy_section_is_validated_at_its_line() {
    let bad = policy_with("rate_limits:\n  per_ip: {requests: 0, per: 1s}\n  per_session: {}\n");
    let err = preflight_enforcer::policy::load(bad.path(), None).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("rate_limits.per_ip.requests"), "{text}");
    assert!(text.contains("per_session"), "{text}");
    let good = policy_with("rate_limits:\n  per_ip: {requests: 100, per: 1s}\n");
    let p = preflight_enforcer::policy::load(good.path(), None).expect("valid");
    let l = p.rate_limits.expect("section read");
    assert_eq!(
        l.per_ip.map(|r| (r.requests, r.per)),
        Some((100, Duration::from_secs(1)))
    );
    assert_eq!(l.per_principal, None);
}
