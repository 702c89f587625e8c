//! What a validated target profile says ([`Profile`]): how to reach a layer, which database login
//! it gets, how the principal reaches it, which of the contract's tools it offers under which
//! names and shapes, and how its denials look.

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
}

impl PrincipalDelivery {
    /// Whether each principal needs a connection of its own (the principal is fixed per
    /// process or per session).
    pub fn per_connection(&self) -> bool {
        !self.env.is_empty() || !self.headers.is_empty()
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
        }
    }
}
