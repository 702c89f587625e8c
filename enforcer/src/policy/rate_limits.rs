//! The policy's `rate_limits:` section: request rates a served layer (`preflight serve --mcp
//! http`) enforces before the MCP layer, per client IP and per principal (OPS-6).
//!
//! ```yaml
//! rate_limits:
//!   per_ip: {requests: 100, per: 1s}
//!   per_principal: {requests: 20, per: 1s}
//! ```
//!
//! Each is a sustained rate with a burst of the same size. A missing limit is not enforced.
//! These are per-process counters in front of the tools; write rates and quotas that must hold
//! across instances are the budget store's (`quotas:`, `budget_store:`).

use std::time::Duration;

use marked_yaml::Node;
use serde::{Deserialize, Serialize};

use super::yaml::{check_keys, duration, expect_mapping, int_at_least, join, Diag};

/// `requests` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// Both limits; `None` is not enforced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub per_ip: Option<RateLimit>,
    pub per_principal: Option<RateLimit>,
}

/// Reads `rate_limits:` at `path`, reporting every problem.
pub(crate) fn walk(d: &mut Diag, node: &Node, path: &str) -> Option<RateLimits> {
    let m = expect_mapping(d, node, path)?;
    check_keys(d, m, path, &["per_ip", "per_principal"]);
    let mut out = RateLimits::default();
    for (k, v) in m.iter() {
        let p = join(path, k.as_str());
        match k.as_str() {
            "per_ip" => out.per_ip = walk_rate(d, v, &p),
            "per_principal" => out.per_principal = walk_rate(d, v, &p),
            _ => {}
        }
    }
    Some(out)
}

fn walk_rate(d: &mut Diag, node: &Node, path: &str) -> Option<RateLimit> {
    let m = expect_mapping(d, node, path)?;
    check_keys(d, m, path, &["requests", "per"]);
    let mut requests = None;
    let mut per = None;
    for (k, v) in m.iter() {
        let p = join(path, k.as_str());
        match k.as_str() {
            "requests" => {
                requests = int_at_least(d, v, &p, 1, 1_000_000).and_then(|n| u32::try_from(n).ok())
            }
            "per" => per = duration(d, v, &p, true).map(Duration::from_millis),
            _ => {}
        }
    }
    if requests.is_none() && !m.keys().any(|k| k.as_str() == "requests") {
        d.error(
            super::yaml::span(node),
            path,
            "missing `requests` (how many requests the window allows)",
        );
    }
    if per.is_none() && !m.keys().any(|k| k.as_str() == "per") {
        d.error(
            super::yaml::span(node),
            path,
            "missing `per` (the window, e.g. `1s` or `1m`)",
        );
    }
    Some(RateLimit {
        requests: requests?,
        per: per?,
    })
}
