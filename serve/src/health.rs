//! What `GET /healthz` reports (OPS-4): the version, the policy hash, each audit sink's status,
//! the budget store's, and whether the database answers. Unhealthy — and HTTP 503 — when the
//! database or any sink is down: a layer that cannot reach its database or write its audit
//! trail cannot serve a single call, and must never say "ok".

use serde::Serialize;

use crate::layer::Layer;
use preflight_enforcer::Gateway;

/// One component's status.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Component {
    pub kind: String,
    pub ok: bool,
    pub detail: String,
}

/// The body of `/healthz`.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    /// `ok` or `unhealthy`.
    pub status: &'static str,
    pub version: String,
    pub policy_hash: String,
    pub database: Component,
    pub audit_sinks: Vec<Component>,
    pub budget_store: Component,
}

impl HealthReport {
    pub fn healthy(&self) -> bool {
        self.status == "ok"
    }
}

/// Asks every component; nothing is cached, so a database stopped a moment ago shows.
pub async fn check(layer: &Layer) -> HealthReport {
    let health = layer.gateway.health().await;
    let database = match layer.database_reachable().await {
        Ok(()) => Component {
            kind: "postgres".to_string(),
            ok: true,
            detail: "reachable".to_string(),
        },
        Err(why) => Component {
            kind: "postgres".to_string(),
            ok: false,
            detail: format!("unreachable: {why}"),
        },
    };
    let audit_sinks: Vec<Component> = health
        .audit_sinks
        .into_iter()
        .map(|s| Component {
            kind: s.kind,
            ok: s.ok,
            detail: s.detail,
        })
        .collect();
    let budget_store = match layer.budget_store.health().await {
        Ok(detail) => Component {
            kind: layer.budget_store.kind().to_string(),
            ok: true,
            detail,
        },
        Err(e) => Component {
            kind: layer.budget_store.kind().to_string(),
            ok: false,
            detail: error_chain(&e),
        },
    };
    let healthy = database.ok && budget_store.ok && audit_sinks.iter().all(|s| s.ok);
    HealthReport {
        status: if healthy { "ok" } else { "unhealthy" },
        version: health.version,
        policy_hash: health.policy_hash,
        database,
        audit_sinks,
        budget_store,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
