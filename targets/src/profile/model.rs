//! What a validated target profile says ([`Profile`]): how to reach a layer, which database login
//! it gets, how the principal reaches it (environment, headers, an argument, or a bearer JWT
//! preflight mints), which of the contract's tools it offers under which names and shapes, how its
//! denials look, and where it keeps its own audit log.

use std::collections::BTreeMap;
use std::time::Duration;

use preflight_contract::ErrorCode;
use regex::Regex;

/// The tools of the enforcement-layer contract, the keys of a profile's `tools:` section.
pub use preflight_contract::CONTRACT_TOOLS;

/// The default per-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated target profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The file as the user named it (`<default mcp-stdio>` etc. for shorthands).
    pub path: String,
    /// Hex SHA-256 of the file's bytes (of the shorthand's canonical form for shorthands).
    pub hash: String,
    pub name: String,
    pub transport: Transport,
    pub timeout: Duration,
    pub login: Login,
    pub principal: PrincipalDelivery,
    /// Contract tool name → how the layer offers it.
    pub tools: BTreeMap<String, ToolMap>,
    pub denials: Denials,
    /// The layer's own audit log; `None`: the profile names none, and no audit claim about the
    /// layer can be judged.
    pub audit: Option<AuditLog>,
    /// The layer's health endpoint and declared request rate limits (a layer reached by URL);
    /// `None`: the profile names neither, and the `server` probes cannot test them.
    pub server: Option<ServerSection>,
    /// The layer's SQL tool, for the `sql` probe family; `None`: it offers none.
    pub sql: Option<super::SqlTool>,
}

/// How the layer is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// An MCP server started as a child process, spoken to over its stdin and stdout. `command`,
    /// `args` and `env` values are templates (`{database_url}`, `{profile_dir}`, and the
    /// principal's `{tenant}`, `{user}`, `{roles}` when the principal travels in the
    /// environment).
    McpStdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// An MCP server over streamable HTTP.
    McpHttp { url: String },
    /// Plain HTTP tool endpoints: `GET {url}/tools` lists, `POST {url}/tools/{name}` calls.
    Http { url: String },
}

impl Transport {
    /// `mcp-stdio`, `mcp-http` or `http`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::McpStdio { .. } => "mcp-stdio",
            Transport::McpHttp { .. } => "mcp-http",
            Transport::Http { .. } => "http",
        }
    }
}

/// The database login the layer is given through `{database_url}` and `DATABASE_URL`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Login {
    /// The least-privileged agent role (what a well-configured layer uses).
    #[default]
    Agent,
    /// The schema owner, to model a team that connects its layer with a stronger role.
    Owner,
    /// A superuser.
    Superuser,
}

impl Login {
    pub fn as_str(self) -> &'static str {
        match self {
            Login::Agent => "agent",
            Login::Owner => "owner",
            Login::Superuser => "superuser",
        }
    }
}

/// How the caller's tenant, user and roles reach the layer. Values are templates over
/// `{tenant}`, `{user}` and `{roles}` (comma-separated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrincipalDelivery {
    /// Environment variables of the layer's process: one process per principal.
    pub env: BTreeMap<String, String>,
    /// HTTP headers on every request: one session per principal.
    pub headers: BTreeMap<String, String>,
    /// An argument added to every call.
    pub argument: Option<(String, String)>,
    /// A bearer token preflight mints per principal and sends in a header on every request.
    pub jwt: Option<Jwt>,
}

impl PrincipalDelivery {
    /// Whether each principal needs a connection of its own (the principal is fixed per
    /// process or per session).
    pub fn per_connection(&self) -> bool {
        !self.env.is_empty() || !self.headers.is_empty() || self.jwt.is_some()
    }
}

/// A signing algorithm preflight mints tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlg {
    Hs256,
    Rs256,
    Es256,
}

impl JwtAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Hs256 => "HS256",
            JwtAlg::Rs256 => "RS256",
            JwtAlg::Es256 => "ES256",
        }
    }
}

/// Key material for signing: an HMAC secret, or a PEM private key. A secret: its `Debug` shows
/// only where it came from, and it is never written to a report or a log.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtKey {
    pub(crate) bytes: Vec<u8>,
    /// `key`, `key_file: PATH` or `key_env: NAME`, for messages.
    pub source: String,
}

impl JwtKey {
    /// A key held only in memory (one generated for a run); `source` names it in messages.
    pub fn in_memory(bytes: Vec<u8>, source: impl Into<String>) -> JwtKey {
        JwtKey {
            bytes,
            source: source.into(),
        }
    }
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey({}, ***)", self.source)
    }
}

/// How a bearer JWT is minted for each principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwt {
    pub alg: JwtAlg,
    pub key: JwtKey,
    /// The header that carries the token (`Authorization`), its value `Bearer <token>`.
    pub header: String,
    /// Claim names of the tenant, the user and the roles (a JSON list).
    pub tenant_claim: String,
    pub user_claim: String,
    pub roles_claim: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// How long a minted token is valid (`exp` = now + ttl).
    pub ttl: Duration,
}

/// Where the layer writes its own audit log, and how its records read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLog {
    pub source: AuditSource,
    pub fields: AuditFields,
    /// The values of the decision field that mean allowed, and those that mean refused (denied
    /// or failed).
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// The argument that carries preflight's trace id to the layer on every call; with
    /// `fields.trace_id`, records are matched to calls by trace id instead of by counts.
    pub trace_argument: Option<String>,
}

/// A JSONL file or a database table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditSource {
    /// A path template over `{profile_dir}` and `{run_dir}` (a folder preflight creates for the
    /// run); the layer is told the path through `{audit_path}` in its arguments or environment.
    Jsonl { path: String },
    /// `schema.table` in the run's database; identifiers are checked against the catalog.
    Table { schema: String, table: String },
}

/// Where each part of a record sits: dotted paths in a JSONL record, column names in a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditFields {
    /// RFC 3339 text or seconds since the epoch; records before the run are left out.
    pub time: Option<String>,
    pub tenant: String,
    pub user: Option<String>,
    /// The tool under the layer's own name (`orders_search`).
    pub tool: String,
    pub decision: String,
    /// The layer's error code (mapped through `denials.codes`).
    pub code: Option<String>,
    pub trace_id: Option<String>,
}

impl AuditLog {
    /// Whether records can be matched to calls by trace id.
    pub fn matches_by_trace(&self) -> bool {
        self.trace_argument.is_some() && self.fields.trace_id.is_some()
    }
}

/// What the profile's `server:` section says about a layer reached by URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSection {
    pub health: Option<HealthCheck>,
    pub rate_limits: DeclaredLimits,
}

/// Where the health endpoint is and how its JSON body reads (dotted paths). The defaults are
/// those of `preflight serve`'s `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// A path on the layer's origin (`/healthz`) or a full URL.
    pub path: String,
    pub status_field: String,
    /// Values of the status field that mean healthy.
    pub healthy: Vec<String>,
    pub version_field: String,
    pub policy_hash_field: String,
    /// Where each audit sink's status is listed.
    pub sinks_field: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/healthz".to_string(),
            status_field: "status".to_string(),
            healthy: vec!["ok".to_string()],
            version_field: "version".to_string(),
            policy_hash_field: "policy_hash".to_string(),
            sinks_field: "audit_sinks".to_string(),
        }
    }
}

impl HealthCheck {
    /// The endpoint's URL for a layer at `base` (its MCP or tools URL): a full URL as given, a
    /// path on `base`'s origin. `None` when `base` has no `scheme://host` part.
    pub fn url(&self, base: &str) -> Option<String> {
        if self.path.starts_with("http://") || self.path.starts_with("https://") {
            return Some(self.path.clone());
        }
        let (scheme, rest) = base.split_once("://")?;
        let host = rest
            .split(['/', '?', '#'])
            .next()
            .filter(|h| !h.is_empty())?;
        Some(format!("{scheme}://{host}{}", self.path))
    }
}

/// The request rate limits a layer declares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeclaredLimits {
    pub per_ip: Option<DeclaredRate>,
    pub per_principal: Option<DeclaredRate>,
}

/// `requests` per `per`, with a burst of `requests` (a token bucket or GCRA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredRate {
    pub requests: u32,
    pub per: std::time::Duration,
}

impl DeclaredRate {
    /// The most requests a limiter of this rate may serve in `elapsed`: the burst, and what
    /// refilled meanwhile.
    pub fn allowance(&self, elapsed: std::time::Duration) -> u64 {
        let refill = elapsed.as_secs_f64() * f64::from(self.requests) / self.per.as_secs_f64();
        u64::from(self.requests) + refill.floor() as u64
    }
}

/// How a layer offers one contract tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolMap {
    /// The layer's tool name; `{model}` takes the call's `model` argument (which is then not
    /// sent), e.g. `{model}_search`.
    pub name: String,
    /// Top-level argument renames, contract name → layer name (`limit: take`).
    pub args: BTreeMap<String, String>,
    pub where_shape: WhereShape,
    pub case: Case,
    /// Dotted path of the rows in a successful result (`items`, `data.rows`); `None`: the
    /// result is passed on as it is.
    pub rows: Option<String>,
    /// Dotted path of the single row of a `db_get`-like result.
    pub row: Option<String>,
}

/// The shape of a filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhereShape {
    /// The contract's `[{field, op, value}]`.
    #[default]
    List,
    /// `{field: {op: value}}`, as Prisma-like layers take it.
    Object,
}

/// How field names are spelt on the layer's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Case {
    /// As in the database (`created_at`).
    #[default]
    Snake,
    /// `createdAt`.
    Camel,
}

/// How the layer's denials look.
#[derive(Clone, Debug)]
pub struct Denials {
    /// An MCP `isError` result (or an HTTP 4xx) is a denial.
    pub is_error: bool,
    /// A successful result whose value at `path` equals `equals` is a denial
    /// (`{"success": false, "error": {...}}`).
    pub flag: Option<(String, serde_json::Value)>,
    /// Dotted paths of the code and the message inside a denial.
    pub code_path: String,
    pub message_path: String,
    /// The layer's codes → ours. A code with no entry that is one of ours keeps its meaning; any
    /// other is unrecognised (never mapped to a denial or a success).
    pub codes: BTreeMap<String, ErrorCode>,
    /// Text patterns for layers whose denials are prose.
    pub patterns: Vec<(Regex, ErrorCode)>,
}

impl Default for Denials {
    fn default() -> Self {
        Self {
            is_error: true,
            flag: None,
            code_path: "code".to_string(),
            message_path: "message".to_string(),
            codes: BTreeMap::new(),
            patterns: Vec::new(),
        }
    }
}

impl Profile {
    /// The layer's own name for a call of `tool` with `arguments`: the mapped name with
    /// `{model}` filled in, or `tool` itself for a tool the profile does not map (the layer's
    /// own tools, called by their names). `None` when the name cannot be formed.
    pub fn layer_tool(&self, tool: &str, arguments: &serde_json::Value) -> Option<String> {
        match self.tools.get(tool) {
            Some(map) => crate::adapt::outgoing(tool, map, arguments)
                .ok()
                .map(|(name, _)| name),
            None => Some(tool.to_string()),
        }
    }

    /// The profile the shorthands use: our contract's tool names and shapes, denials as the
    /// contract's structured errors, the principal in the environment (stdio) or in headers
    /// (HTTP).
    pub fn default_for(transport: Transport) -> Profile {
        let principal = match &transport {
            Transport::McpStdio { .. } => PrincipalDelivery {
                env: [
                    ("PREFLIGHT_TENANT", "{tenant}"),
                    ("PREFLIGHT_USER", "{user}"),
                    ("PREFLIGHT_ROLES", "{roles}"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..Default::default()
            },
            Transport::McpHttp { .. } | Transport::Http { .. } => PrincipalDelivery {
                headers: [
                    ("X-Preflight-Tenant", "{tenant}"),
                    ("X-Preflight-User", "{user}"),
                    ("X-Preflight-Roles", "{roles}"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                ..Default::default()
            },
        };
        let tools = CONTRACT_TOOLS
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    ToolMap {
                        name: t.to_string(),
                        args: BTreeMap::new(),
                        where_shape: WhereShape::List,
                        case: Case::Snake,
                        rows: None,
                        row: None,
                    },
                )
            })
            .collect();
        let canonical = format!("default profile for {transport:?}");
        Profile {
            path: format!("<default {}>", transport.kind()),
            hash: crate::hash_hex(canonical.as_bytes()),
            name: format!("default {}", transport.kind()),
            transport,
            timeout: DEFAULT_TIMEOUT,
            login: Login::Agent,
            principal,
            tools,
            denials: Denials::default(),
            audit: None,
            server: None,
            sql: None,
        }
    }
}
