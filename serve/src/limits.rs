//! Request rate limits in front of the MCP endpoint ([`Limiter`]), per client IP and per
//! principal, with `governor` (GCRA). The limits are the policy's `rate_limits:` section; over a
//! limit the request is refused with HTTP 429 and `Retry-After` before it reaches the layer.
//!
//! These counters are per process, on purpose: they protect one instance from one client. The
//! budgets that must hold across instances (write rates, quotas, BUD-6) live in the layer's
//! budget store (Redis when several instances serve).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A sustained rate with a burst of the same size: `requests` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let burst = NonZeroU32::new(self.requests)?;
        let period = self.per.checked_div(self.requests)?;
        Some(Quota::with_period(period)?.allow_burst(burst))
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Principal,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "per_ip",
            Scope::Principal => "per_principal",
        }
    }
}

/// The refusal: which limit, and when a request would fit again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// The configured limits; a limit that is not configured allows everything.
pub struct Limiter {
    per_ip: Option<DefaultKeyedRateLimiter<String>>,
    per_principal: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(per_ip: Option<Rate>, per_principal: Option<Rate>) -> Limiter {
        Limiter {
            per_ip: per_ip.and_then(Rate::quota).map(RateLimiter::keyed),
            per_principal: per_principal.and_then(Rate::quota).map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    pub fn check_ip(&self, ip: &str) -> Result<(), Refusal> {
        self.check(self.per_ip.as_ref(), ip, Scope::Ip)
    }

    /// `principal` is `tenant/user`: one user of one tenant, whichever session they use.
    pub fn check_principal(&self, principal: &str) -> Result<(), Refusal> {
        self.check(self.per_principal.as_ref(), principal, Scope::Principal)
    }

    fn check(
        &self,
        limiter: Option<&DefaultKeyedRateLimiter<String>>,
        key: &str,
        scope: Scope,
    ) -> Result<(), Refusal> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter
            .check_key(&key.to_string())
            .map_err(|not_until| Refusal {
                scope,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_with_a_wait() {
        let l = Limiter::new(
            Some(Rate {
                requests: 3,
                per: Duration::from_secs(60),
            }),
            None,
        );
        for _ in 0..3 {
            assert!(l.check_ip("10.0.0.1").is_ok());
        }
        let r = l.check_ip("10.0.0.1").unwrap_err();
        assert_eq!(r.scope, Scope::Ip);
        assert!(r.retry_after > Duration::from_secs(1), "{r:?}");
        // Another key has its own budget; an unconfigured limit allows everything.
        assert!(l.check_ip("10.0.0.2").is_ok());
        for _ in 0..100 {
            assert!(l.check_principal("acme/alice").is_ok());
        }
    }
}
