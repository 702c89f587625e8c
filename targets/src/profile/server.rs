//! The profile's `server:` section ([`ServerSection`]): where a layer reached by URL keeps its
//! health endpoint and how its body reads, and the request rate limits it declares, per client
//! address and per principal. The `server` probe family checks each against the running layer;
//! a profile without this section leaves those claims `not_verified`.

use std::time::Duration;

use marked_yaml::Node;

use super::model::*;
use super::nodes::*;

const KEYS: &[&str] = &["health", "rate_limits"];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "status",
    "healthy",
    "version",
    "policy_hash",
    "sinks",
];
const LIMIT_KEYS: &[&str] = &["per_ip", "per_principal"];
const UNITS: &[&str] = &["s", "sec", "second", "min", "minute", "h", "hour"];

pub(super) fn server(d: &mut Diag, node: &Node) -> Option<ServerSection> {
    let m = mapping(d, node, "server")?;
    check_keys(d, m, "server", KEYS);
    let health = get(m, "health").and_then(|n| health(d, n));
    let rate_limits = get(m, "rate_limits")
        .map(|n| limits(d, n))
        .unwrap_or_default();
    if get(m, "health").is_none() && get(m, "rate_limits").is_none() {
        d.error(
            at(node),
            "server",
            "empty: name the health endpoint (`health: /healthz`) or the declared `rate_limits:`",
        );
    }
    Some(ServerSection {
        health,
        rate_limits,
    })
}

/// `health: /healthz`, or a mapping with the path and where the body's fields are.
fn health(d: &mut Diag, node: &Node) -> Option<HealthCheck> {
    let mut out = HealthCheck::default();
    match node {
        Node::Scalar(_) => {
            out.path = string(d, node, "server.health")?;
        }
        Node::Mapping(m) => {
            check_keys(d, m, "server.health", HEALTH_KEYS);
            match get(m, "path") {
                Some(n) => out.path = string(d, n, "server.health.path")?,
                None => {
                    d.error(
                        at(node),
                        "server.health.path",
                        "missing: the health endpoint's path (`/healthz`) or URL",
                    );
                    return None;
                }
            }
            let field = |d: &mut Diag, key: &str, slot: &mut String| {
                if let Some(n) = get(m, key) {
                    if let Some(s) = string(d, n, &join("server.health", key)) {
                        *slot = s;
                    }
                }
            };
            field(d, "status", &mut out.status_field);
            field(d, "version", &mut out.version_field);
            field(d, "policy_hash", &mut out.policy_hash_field);
            field(d, "sinks", &mut out.sinks_field);
            if let Some(n) = get(m, "healthy") {
                let values = match n {
                    Node::Sequence(_) => string_list(d, n, "server.health.healthy"),
                    Node::Scalar(_) | Node::Mapping(_) => {
                        string(d, n, "server.health.healthy").into_iter().collect()
                    }
                };
                if !values.is_empty() {
                    out.healthy = values;
                }
            }
        }
        Node::Sequence(_) => {
            d.error(
                at(node),
                "server.health",
                format!(
                    "expected a path (`/healthz`) or `{{path, status, healthy, version, policy_hash, sinks}}`, found {}",
                    describe(node)
                ),
            );
            return None;
        }
    }
    let p = &out.path;
    if !(p.starts_with('/') || p.starts_with("http://") || p.starts_with("https://")) {
        d.error(
            at(node),
            "server.health",
            format!("expected a path starting with `/` or an http(s):// URL, found `{p}`"),
        );
        return None;
    }
    Some(out)
}

fn limits(d: &mut Diag, node: &Node) -> DeclaredLimits {
    let mut out = DeclaredLimits::default();
    let Some(m) = mapping(d, node, "server.rate_limits") else {
        return out;
    };
    check_keys(d, m, "server.rate_limits", LIMIT_KEYS);
    out.per_ip = get(m, "per_ip").and_then(|n| rate(d, n, "server.rate_limits.per_ip"));
    out.per_principal =
        get(m, "per_principal").and_then(|n| rate(d, n, "server.rate_limits.per_principal"));
    out
}

/// `120/min`, `10/s`, `5000/hour`, or `{requests: 120, per: 1m}` as the policy writes it.
fn rate(d: &mut Diag, node: &Node, path: &str) -> Option<DeclaredRate> {
    if let Node::Mapping(m) = node {
        check_keys(d, m, path, &["requests", "per"]);
        let requests = get(m, "requests").and_then(|n| {
            let s = string(d, n, &join(path, "requests"))?;
            match s.parse::<u32>() {
                Ok(r) if r > 0 => Some(r),
                Ok(_) | Err(_) => {
                    d.error(
                        at(n),
                        &join(path, "requests"),
                        format!("expected a positive whole number, found `{s}`"),
                    );
                    None
                }
            }
        });
        let per = get(m, "per").and_then(|n| duration(d, n, &join(path, "per")));
        if get(m, "requests").is_none() || get(m, "per").is_none() {
            d.error(
                at(node),
                path,
                "expected `requests:` and `per:` (e.g. `{requests: 120, per: 1m}`)",
            );
        }
        return Some(DeclaredRate {
            requests: requests?,
            per: per?,
        });
    }
    let s = string(d, node, path)?;
    let parsed = s.split_once('/').and_then(|(n, unit)| {
        let requests = n.trim().parse::<u32>().ok().filter(|r| *r > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(DeclaredRate { requests, per })
    });
    if parsed.is_none() {
        let hint = s
            .split_once('/')
            .and_then(|(_, unit)| did_you_mean(unit.trim(), UNITS))
            .map(|u| format!("; did you mean `/{u}`?"))
            .unwrap_or_default();
        d.error(
            at(node),
            path,
            format!(
                "expected a rate such as `120/min`, `10/s` or `{{requests: 120, per: 1m}}`, found `{s}`{hint}"
            ),
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use crate::profile::*;

    fn with_server(server: &str) -> String {
        format!(
            "transport: {{url: \"http://127.0.0.1:9/mcp\"}}\nprincipal: {{headers: {{X-T: \"{{tenant}}\"}}}}\ntools: {{db_get: {{}}}}\nserver:\n{server}"
        )
    }

    #[test]
    fn a_server_section_loads_with_defaults_for_our_fields() {
        let p = load_str(
            &with_server("  health: /healthz\n  rate_limits: {per_ip: 120/min, per_principal: {requests: 10, per: 1s}}\n"),
            "p.yaml",
        )
        .unwrap();
        let s = p.server.unwrap();
        let h = s.health.unwrap();
        assert_eq!(h.path, "/healthz");
        assert_eq!(h.status_field, "status");
        assert_eq!(h.healthy, ["ok"]);
        assert_eq!(h.version_field, "version");
        assert_eq!(h.policy_hash_field, "policy_hash");
        assert_eq!(h.sinks_field, "audit_sinks");
        let ip = s.rate_limits.per_ip.unwrap();
        assert_eq!((ip.requests, ip.per.as_secs()), (120, 60));
        let pp = s.rate_limits.per_principal.unwrap();
        assert_eq!((pp.requests, pp.per.as_secs()), (10, 1));
        assert_eq!(
            h.url("http://127.0.0.1:9/mcp").as_deref(),
            Some("http://127.0.0.1:9/healthz")
        );
    }

    #[test]
    fn mistakes_in_the_server_section_are_precise_errors() {
        let text = with_server(
            "  helth: /healthz\n  rate_limits: {per_ip: 120/minn, per_principle: 5/s}\n",
        );
        let e = load_str(&text, "p.yaml").unwrap_err().to_string();
        for want in [
            "p.yaml:5:3: error: server.helth: unknown key `helth`; did you mean `health`?",
            "server.rate_limits.per_ip: expected a rate such as `120/min`",
            "did you mean `/min`?",
            "server.rate_limits.per_principle: unknown key `per_principle`; did you mean `per_principal`?",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        let e = load_str(&with_server("  health: healthz\n"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a path starting with `/`"), "{e}");
    }

    #[test]
    fn a_stdio_layer_has_no_server_section() {
        let text = "transport: {stdio: {command: x}}\nprincipal: {env: {T: \"{tenant}\"}}\ntools: {db_get: {}}\nserver: {health: /healthz}\n";
        let e = load_str(text, "p.yaml").unwrap_err().to_string();
        assert!(
            e.contains("p.yaml:4:")
                && e.contains("error: server: a stdio layer has no HTTP endpoint"),
            "{e}"
        );
    }
}
