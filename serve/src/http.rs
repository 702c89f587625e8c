//! The HTTP server ([`HttpServer`]): `GET /healthz`, and `/mcp` (MCP streamable HTTP through
//! rmcp) behind a guard that, in this order, applies the per-IP rate limit, verifies the bearer
//! token, and applies the per-principal limit. A refused request never reaches the MCP layer:
//! 401 for a token, 429 with `Retry-After` for a limit, each with a JSON body
//! `{code, message}` and an audit record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use preflight_enforcer::audit::{arguments_sha256, AuditRecord, Decision};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::JwtVerifier;
use crate::handler::{LayerHandler, PrincipalSource};
use crate::health;
use crate::layer::Layer;
use crate::limits::{Limiter, Rate, Refusal};

/// Deliberately broken servers for the `server` probe family's own tests: each switches one
/// protection off. Only reachable through a hidden flag; never in production.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestVariant {
    /// Principals from the token's claims without verifying signature, expiry or algorithm.
    pub no_token_check: bool,
    /// `/healthz` answers `ok` without asking the database or the sinks.
    pub no_health: bool,
    /// No rate limits, whatever the policy says.
    pub no_limits: bool,
}

/// How the HTTP server runs.
pub struct HttpOptions {
    pub listen: SocketAddr,
    pub verifier: JwtVerifier,
    pub per_ip: Option<Rate>,
    pub per_principal: Option<Rate>,
    /// `Host` values rmcp accepts (DNS-rebinding protection); loopback when empty.
    pub allowed_hosts: Vec<String>,
    pub variant: TestVariant,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

struct AppState {
    layer: Layer,
    verifier: JwtVerifier,
    limiter: Limiter,
    variant: TestVariant,
}

/// A bound server; [`run`](HttpServer::run) serves until the token is cancelled.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
}

impl HttpServer {
    pub async fn bind(layer: Layer, options: HttpOptions) -> Result<HttpServer, HttpError> {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| HttpError::Bind {
                addr: options.listen,
                source,
            })?;
        let cancel = CancellationToken::new();
        let limiter = if options.variant.no_limits {
            Limiter::new(None, None)
        } else {
            Limiter::new(options.per_ip, options.per_principal)
        };
        let state = Arc::new(AppState {
            layer: layer.clone(),
            verifier: if options.variant.no_token_check {
                options.verifier.insecure_no_check()
            } else {
                options.verifier
            },
            limiter,
            variant: options.variant,
        });
        let mut config =
            StreamableHttpServerConfig::default().with_cancellation_token(cancel.child_token());
        if !options.allowed_hosts.is_empty() {
            config = config.with_allowed_hosts(options.allowed_hosts);
        }
        let gateway: Arc<dyn preflight_enforcer::Gateway> = layer.gateway.clone();
        let mcp = StreamableHttpService::new(
            move || {
                Ok(LayerHandler::new(
                    Arc::clone(&gateway),
                    PrincipalSource::PerRequest,
                ))
            },
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let router = Router::new()
            .route_service("/mcp", mcp)
            .layer(middleware::from_fn_with_state(Arc::clone(&state), guard))
            .route("/healthz", get(healthz))
            .with_state(state);
        Ok(HttpServer {
            listener,
            router,
            cancel,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Cancelling it stops the server (and every MCP session).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub async fn run(self) -> Result<(), HttpError> {
        let cancel = self.cancel.clone();
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(HttpError::Serve)
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.variant.no_health {
        return (StatusCode::OK, Json(json!({"status": "ok"}))).into_response();
    }
    let report = health::check(&state.layer).await;
    let code = if report.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

async fn guard(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let ip = peer.ip().to_string();
    if let Err(refusal) = state.limiter.check_ip(&ip) {
        audit(
            &state,
            None,
            &ip,
            &rate_code(&refusal),
            &rate_message(&refusal),
            None,
            started,
        )
        .await;
        return too_many(&refusal);
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let principal = match state.verifier.principal(authorization.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            let claimed = state.verifier.claimed_tenant(authorization.as_deref());
            audit(
                &state,
                None,
                &ip,
                e.code(),
                &e.to_string(),
                claimed,
                started,
            )
            .await;
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": "unauthenticated", "reason": e.code(), "message": e.to_string()})),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return response;
        }
    };
    let key = format!("{}/{}", principal.tenant, principal.user);
    if let Err(refusal) = state.limiter.check_principal(&key) {
        audit(
            &state,
            Some(&principal),
            &ip,
            &rate_code(&refusal),
            &rate_message(&refusal),
            None,
            started,
        )
        .await;
        return too_many(&refusal);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

fn rate_code(r: &Refusal) -> String {
    format!("rate_limited_{}", r.scope.as_str())
}

fn rate_message(r: &Refusal) -> String {
    format!(
        "over the {} request rate limit; retry in {} ms",
        r.scope.as_str(),
        r.retry_after.as_millis()
    )
}

fn too_many(r: &Refusal) -> Response {
    // Retry-After is in whole seconds; round up so a client that waits exactly that long fits.
    let secs = r.retry_after.as_secs() + u64::from(r.retry_after.subsec_nanos() > 0);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "code": "rate_limited",
            "scope": r.scope.as_str(),
            "message": rate_message(r),
            "retry_after_ms": r.retry_after.as_millis() as u64,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// One audit record for a request refused before the MCP layer, through every sink. A sink that
/// fails is logged: the request is refused either way.
async fn audit(
    state: &AppState,
    principal: Option<&preflight_enforcer::Principal>,
    ip: &str,
    code: &str,
    message: &str,
    claimed_tenant: Option<String>,
    started: Instant,
) {
    let mut arguments = json!({"client_ip": ip, "refusal": message});
    if let Some(t) = claimed_tenant {
        arguments["claimed_tenant_unverified"] = Value::String(t);
    }
    let record = AuditRecord {
        trace_id: uuid_like(),
        tenant_id: principal.map(|p| p.tenant.clone()).unwrap_or_default(),
        user_id: principal.map(|p| p.user.clone()).unwrap_or_default(),
        roles: principal.map(|p| p.roles.clone()).unwrap_or_default(),
        tool: "http:/mcp".to_string(),
        arguments_sha256: arguments_sha256(&arguments),
        arguments,
        decision: Decision::Deny,
        error_code: Some(code.to_string()),
        rows_returned: None,
        rows_affected: None,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        reason: None,
        approval_id: None,
        approver: None,
        policy_hash: state.layer.policy.hash.clone(),
        subjects: Vec::new(),
    };
    for sink in &state.layer.sinks {
        if let Err(e) = sink.append(None, &record).await {
            tracing::error!(target: "preflight::serve", "cannot audit a refused request in {}: {e}", sink.kind());
        }
    }
}

fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
