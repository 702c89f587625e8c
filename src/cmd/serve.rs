//! `preflight serve`: the built-in layer as an MCP server. The flags become a [`ServePlan`]
//! (every problem reported before anything starts); the server itself is `preflight_serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use preflight_enforcer::Principal;
use preflight_serve::auth::{ClaimNames, JwtAlg, JwtSettings, JwtVerifier};
use preflight_serve::http::{HttpOptions, HttpServer, TestVariant};
use preflight_serve::{Layer, LayerConfig};

use crate::error::{CliError, CmdResult, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum McpTransport {
    /// One process per principal on stdin/stdout (Claude Desktop, any MCP client).
    Stdio,
    /// Streamable HTTP at /mcp, principals from bearer JWTs, /healthz beside it.
    Http,
}

/// Each names the protection it switches off (`no-token-check`, …), hence the common prefix.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InsecureVariant {
    NoTokenCheck,
    NoHealth,
    NoLimits,
}

impl InsecureVariant {
    /// The served layer with each named protection switched off.
    pub fn test_variant(named: &[InsecureVariant]) -> TestVariant {
        TestVariant {
            no_token_check: named.contains(&InsecureVariant::NoTokenCheck),
            no_health: named.contains(&InsecureVariant::NoHealth),
            no_limits: named.contains(&InsecureVariant::NoLimits),
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The policy file the layer enforces.
    #[arg(long)]
    pub policy: PathBuf,

    /// The database, as the agent login (postgres://…).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub db: String,

    /// How clients reach the layer.
    #[arg(long, value_enum)]
    pub mcp: McpTransport,

    /// Where the HTTP server listens (`--mcp http`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The tenant of the stdio principal.
    #[arg(long, env = "PREFLIGHT_TENANT")]
    pub tenant: Option<String>,
    /// The user of the stdio principal.
    #[arg(long, env = "PREFLIGHT_USER")]
    pub user: Option<String>,
    /// The roles of the stdio principal, comma-separated.
    #[arg(long, env = "PREFLIGHT_ROLES", default_value = "")]
    pub roles: String,

    /// The token signature algorithm (HTTP): HS256, RS256 or ES256.
    #[arg(long, env = "PREFLIGHT_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// The environment variable holding the HS256 shared key (the key itself never goes on a
    /// command line).
    #[arg(long, env = "PREFLIGHT_JWT_HS256_KEY_ENV")]
    pub jwt_hs256_key_env: Option<String>,
    /// A PEM public key for RS256 or ES256 tokens.
    #[arg(long, env = "PREFLIGHT_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// The `iss` every token must carry.
    #[arg(long, env = "PREFLIGHT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every token must carry.
    #[arg(long, env = "PREFLIGHT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    #[arg(long, default_value_t = 0)]
    pub jwt_leeway: u64,
    /// The claim holding the tenant.
    #[arg(long, default_value = "tenant")]
    pub claim_tenant: String,
    /// The claim holding the user.
    #[arg(long, default_value = "sub")]
    pub claim_user: String,
    /// The claim holding the roles (a list, or a space-separated string).
    #[arg(long, default_value = "roles")]
    pub claim_roles: String,

    /// `Host` header values accepted besides loopback (behind a load balancer: its hostname).
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,

    /// The environment variable holding a 64-hex-digit key for hashed fields and cursors; every
    /// instance behind one load balancer needs the same one. Random per process otherwise.
    #[arg(long, env = "PREFLIGHT_SECRET_KEY_ENV")]
    pub secret_key_env: Option<String>,

    /// Switches one protection off, for the server probes' own tests. Never in production.
    #[arg(long, value_enum, hide = true)]
    pub insecure_test_variant: Vec<InsecureVariant>,

    /// This instance's name, for `{instance}` in the policy's JSONL audit path (several
    /// instances on one host each write their own chained file) [default: the process id].
    #[arg(long, env = "PREFLIGHT_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,

    /// Runs the layer with one of the self-test's faults (`mask_off`, `reason_not_required`, …),
    /// so the tests can show a fault is caught over MCP as it is in-process. Test-only, hidden,
    /// never in production.
    #[arg(long, hide = true, value_name = "FAULT")]
    pub insecure_fault: Vec<String>,
}

/// What the flags ask for, validated.
struct ServePlan {
    layer: LayerConfig,
    mode: Mode,
}

enum Mode {
    Stdio(Principal),
    Http(Box<HttpOptions>),
}

impl ServePlan {
    fn from_args(args: &ServeArgs) -> Result<ServePlan, CliError> {
        let secret_key = match &args.secret_key_env {
            None => None,
            Some(var) => {
                let text = std::env::var(var)
                    .map_err(|_| CliError::config(format!("--secret-key-env: {var} is not set")))?;
                let bytes = hex::decode(text.trim()).ok().filter(|b| b.len() == 32);
                let key: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
                    CliError::config(format!(
                        "--secret-key-env: {var} must hold 64 hex digits (32 bytes)"
                    ))
                })?;
                Some(key)
            }
        };
        let faults = super::probe::parse_faults(&args.insecure_fault)?;
        let layer = LayerConfig {
            policy_path: args.policy.clone(),
            database_url: args.db.clone(),
            secret_key,
            faults,
            instance: args.instance.clone(),
        };
        let mode = match args.mcp {
            McpTransport::Stdio => {
                let (Some(tenant), Some(user)) = (&args.tenant, &args.user) else {
                    return Err(CliError::config(
                        "--mcp stdio serves one principal: give --tenant and --user (or PREFLIGHT_TENANT and PREFLIGHT_USER)",
                    ));
                };
                if tenant.is_empty() || user.is_empty() {
                    return Err(CliError::config("--tenant and --user must not be empty"));
                }
                Mode::Stdio(Principal {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    roles: args
                        .roles
                        .split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            }
            McpTransport::Http => {
                let alg = match &args.jwt_alg {
                    None => None,
                    Some(a) => Some(JwtAlg::parse(a).ok_or_else(|| {
                        CliError::config(format!(
                            "--jwt-alg: expected HS256, RS256 or ES256, found `{a}`"
                        ))
                    })?),
                };
                let settings = JwtSettings {
                    alg,
                    hs256_key_env: args.jwt_hs256_key_env.clone(),
                    public_key_file: args.jwt_public_key.clone(),
                    issuer: args.jwt_issuer.clone(),
                    audience: args.jwt_audience.clone(),
                    claims: ClaimNames {
                        tenant: args.claim_tenant.clone(),
                        user: args.claim_user.clone(),
                        roles: args.claim_roles.clone(),
                    },
                    leeway_secs: args.jwt_leeway,
                };
                let verifier = JwtVerifier::new(&settings).map_err(CliError::config)?;
                let variant = InsecureVariant::test_variant(&args.insecure_test_variant);
                Mode::Http(Box::new(HttpOptions {
                    listen: args.listen,
                    verifier,
                    per_ip: None,
                    per_principal: None,
                    allowed_hosts: args.allowed_hosts.clone(),
                    variant,
                }))
            }
        };
        Ok(ServePlan { layer, mode })
    }
}

pub async fn run(args: ServeArgs) -> CmdResult {
    let plan = ServePlan::from_args(&args)?;
    let layer = Layer::start(&plan.layer).await.map_err(|e| {
        let text = preflight_probes::runner::error_chain(&e);
        if e.is_config() {
            CliError::Config(text)
        } else {
            CliError::Infra(text)
        }
    })?;
    match plan.mode {
        Mode::Stdio(principal) => {
            let gateway: Arc<dyn preflight_enforcer::Gateway> = layer.gateway.clone();
            preflight_serve::stdio::serve(gateway, principal)
                .await
                .map_err(|e| CliError::infra(preflight_probes::runner::error_chain(&e)))?;
        }
        Mode::Http(mut options) => {
            if let Some(limits) = &layer.policy.rate_limits {
                options.per_ip = limits.per_ip.map(to_rate);
                options.per_principal = limits.per_principal.map(to_rate);
            }
            let server = HttpServer::bind(layer, *options)
                .await
                .map_err(|e| CliError::infra(preflight_probes::runner::error_chain(&e)))?;
            let addr = server
                .local_addr()
                .map_err(|e| CliError::infra(format!("cannot read the bound address: {e}")))?;
            eprintln!(
                "preflight serve: listening on http://{addr}/mcp (health: http://{addr}/healthz)"
            );
            let cancel = server.cancel_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                cancel.cancel();
            });
            server
                .run()
                .await
                .map_err(|e| CliError::infra(preflight_probes::runner::error_chain(&e)))?;
        }
    }
    Ok(Outcome::Passed)
}

fn to_rate(r: preflight_enforcer::policy::RateLimit) -> preflight_serve::limits::Rate {
    preflight_serve::limits::Rate {
        requests: r.requests,
        per: r.per,
    }
}

/// Ctrl-C or SIGTERM (what a container runtime or a load balancer's drain sends).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
