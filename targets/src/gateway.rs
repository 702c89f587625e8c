//! A layer reached through a profile, as a [`Gateway`] ([`RemoteGateway`]).
//!
//! Two views of the same connection: the *contract* view (what probes use) offers our tool names
//! and shapes, translated by the profile; the *raw* view (what the agent harness uses) offers the
//! layer's own tool list, unedited. One connection per principal when the principal travels in a
//! process's environment or a session's headers; one shared connection when it is an argument.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use preflight_contract::{CallContext, ErrorCode, Gateway, Health, Principal, ToolError, ToolSpec};
use serde_json::{json, Value};

use crate::adapt;
use crate::http::HttpLink;
use crate::link::{Link, LinkError};
use crate::mcp::McpLink;
use crate::profile::{Profile, ToolMap, Transport};
use crate::template;

/// What a report says about the target (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    /// `mcp-stdio`, `mcp-http` or `http`.
    pub transport: String,
    /// The command line or URL, credentials masked.
    pub endpoint: String,
    pub profile_path: String,
    pub profile_hash: String,
    /// From MCP `initialize`, when the server said.
    pub server_name: Option<String>,
    pub server_version: Option<String>,
    /// Hex SHA-256 of the layer's tool list (names, descriptions, schemas) as listed.
    pub tools_hash: String,
}

impl TargetInfo {
    /// One line for the report's `target` field.
    pub fn summary(&self) -> String {
        let server = match (&self.server_name, &self.server_version) {
            (Some(n), Some(v)) => format!(" server {n} {v};"),
            (Some(n), None) => format!(" server {n};"),
            (None, _) => String::new(),
        };
        format!(
            "{} {} (profile {} sha256:{};{} tools sha256:{})",
            self.transport,
            self.endpoint,
            self.profile_path,
            short(&self.profile_hash),
            server,
            short(&self.tools_hash)
        )
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// How to reach a layer: the profile and what its templates are filled with.
#[derive(Clone)]
pub struct Connection {
    pub profile: Arc<Profile>,
    /// What `{database_url}` and `DATABASE_URL` are (the profile's login). A secret.
    pub database_url: String,
    /// What `{profile_dir}` is.
    pub profile_dir: String,
    /// What `{run_dir}` is: a folder of this run's own (removed when the last clone goes), where
    /// a layer can be told to write its audit log.
    run_dir: Arc<tempfile::TempDir>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL carries a password.
        f.debug_struct("Connection")
            .field("profile", &self.profile.path)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection with a new run folder for `{run_dir}`.
    pub fn new(
        profile: Arc<Profile>,
        database_url: String,
        profile_dir: String,
    ) -> std::io::Result<Connection> {
        let run_dir = tempfile::Builder::new()
            .prefix("preflight-target-")
            .tempdir()?;
        Ok(Connection {
            profile,
            database_url,
            profile_dir,
            run_dir: Arc::new(run_dir),
        })
    }

    /// What `{run_dir}` is.
    pub fn run_dir(&self) -> &std::path::Path {
        self.run_dir.path()
    }

    /// Where the layer writes its JSONL audit log (`{audit_path}`), when the profile names one.
    pub fn audit_path(&self) -> Option<std::path::PathBuf> {
        match self.profile.audit.as_ref().map(|a| &a.source) {
            Some(crate::profile::AuditSource::Jsonl { path }) => {
                Some(template::expand(path, &self.dir_vars()).into())
            }
            Some(crate::profile::AuditSource::Table { .. }) | None => None,
        }
    }

    /// `{profile_dir}` and `{run_dir}`.
    fn dir_vars(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("profile_dir", self.profile_dir.clone()),
            ("run_dir", self.run_dir.path().display().to_string()),
        ])
    }

    fn principal_vars(who: &Principal) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("tenant", who.tenant.clone()),
            ("user", who.user.clone()),
            ("roles", who.roles.join(",")),
        ])
    }

    /// Opens one connection for `who`.
    async fn open(&self, who: &Principal) -> Result<Arc<dyn Link>, LinkError> {
        let p = &self.profile;
        let pvars = Self::principal_vars(who);
        let mut vars = pvars.clone();
        vars.extend(self.dir_vars());
        vars.insert("database_url", self.database_url.clone());
        if let Some(path) = self.audit_path() {
            vars.insert("audit_path", path.display().to_string());
        }
        match &p.transport {
            Transport::McpStdio { command, args, env } => {
                let mut full_env: BTreeMap<String, String> = env
                    .iter()
                    .map(|(k, v)| (k.clone(), template::expand(v, &vars)))
                    .collect();
                for (k, v) in &p.principal.env {
                    full_env.insert(k.clone(), template::expand(v, &pvars));
                }
                full_env.insert("DATABASE_URL".into(), self.database_url.clone());
                let args: Vec<String> = args.iter().map(|a| template::expand(a, &vars)).collect();
                let command = template::expand(command, &vars);
                Ok(Arc::new(
                    McpLink::stdio(&command, &args, &full_env, p.timeout).await?,
                ))
            }
            Transport::McpHttp { url } => {
                let headers = self.headers(who, &pvars)?;
                Ok(Arc::new(McpLink::http(url, &headers, p.timeout).await?))
            }
            Transport::Http { url } => {
                let headers = self.headers(who, &pvars)?;
                Ok(Arc::new(HttpLink::connect(url, &headers, p.timeout).await?))
            }
        }
    }

    /// The session's headers: the profile's principal headers, and the bearer token minted for
    /// `who` when the principal travels as a JWT.
    fn headers(
        &self,
        who: &Principal,
        pvars: &BTreeMap<&'static str, String>,
    ) -> Result<BTreeMap<String, String>, LinkError> {
        let mut out: BTreeMap<String, String> = self
            .profile
            .principal
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), template::expand(v, pvars)))
            .collect();
        if let Some(jwt) = &self.profile.principal.jwt {
            let token = crate::jwt::mint(jwt, who).map_err(|reason| LinkError::Start {
                reason,
                stderr: String::new(),
            })?;
            out.insert(jwt.header.clone(), format!("Bearer {token}"));
        }
        Ok(out)
    }

    /// The command line or URL with credentials masked, for reports.
    fn endpoint(&self) -> String {
        let mut vars = self.dir_vars();
        vars.insert("database_url", "<database_url>".to_string());
        let text = match &self.profile.transport {
            Transport::McpStdio { command, args, .. } => std::iter::once(command)
                .chain(args)
                .map(|a| template::expand(a, &vars))
                .collect::<Vec<_>>()
                .join(" "),
            Transport::McpHttp { url } | Transport::Http { url } => url.clone(),
        };
        crate::stderr::redact(&text)
    }
}

/// Which face the gateway shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    Contract,
    Raw,
}

/// A layer reached through its profile.
pub struct RemoteGateway {
    conn: Connection,
    view: View,
    /// Per-principal connections (or one under the empty key when the principal is an argument).
    links: tokio::sync::Mutex<HashMap<String, Arc<dyn Link>>>,
    raw_tools: Vec<ToolSpec>,
    contract_tools: Vec<ToolSpec>,
    info: TargetInfo,
    pids: Mutex<Vec<u32>>,
}

impl RemoteGateway {
    /// Connects as `first` (whose connection lists the tools) and shows the contract view.
    pub async fn connect(conn: Connection, first: &Principal) -> Result<RemoteGateway, LinkError> {
        let link = conn.open(first).await?;
        let raw_tools = link.tools().to_vec();
        let contract_tools = contract_view(&conn.profile, &raw_tools);
        let server = link.server();
        let info = TargetInfo {
            transport: conn.profile.transport.kind().to_string(),
            endpoint: conn.endpoint(),
            profile_path: conn.profile.path.clone(),
            profile_hash: conn.profile.hash.clone(),
            server_name: server.as_ref().map(|s| s.0.clone()),
            server_version: server.as_ref().map(|s| s.1.clone()),
            tools_hash: crate::hash_hex(
                serde_json::to_string(&raw_tools)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
        };
        let key = Self::key_of(&conn.profile, first);
        let pids = link.pids();
        Ok(RemoteGateway {
            conn,
            view: View::Contract,
            links: tokio::sync::Mutex::new(HashMap::from([(key, link)])),
            raw_tools,
            contract_tools,
            info,
            pids: Mutex::new(pids),
        })
    }

    /// The layer's own tool list and names, unedited (for the agent harness).
    pub fn into_raw(mut self) -> RemoteGateway {
        self.view = View::Raw;
        self
    }

    pub fn info(&self) -> &TargetInfo {
        &self.info
    }

    /// The layer's own tool list as listed.
    pub fn raw_tools(&self) -> &[ToolSpec] {
        &self.raw_tools
    }

    /// Every child process this gateway started, ended or not.
    pub fn child_pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends every connection; child processes are ended and reaped.
    pub async fn shutdown(&self) {
        let links: Vec<Arc<dyn Link>> = self.links.lock().await.drain().map(|(_, l)| l).collect();
        for l in links {
            l.close().await;
        }
    }

    fn key_of(profile: &Profile, who: &Principal) -> String {
        if profile.principal.per_connection() {
            format!(
                "{}\u{0}{}\u{0}{}",
                who.tenant,
                who.user,
                who.roles.join(",")
            )
        } else {
            String::new()
        }
    }

    async fn link_for(&self, who: &Principal) -> Result<Arc<dyn Link>, LinkError> {
        let key = Self::key_of(&self.conn.profile, who);
        let mut links = self.links.lock().await;
        if let Some(l) = links.get(&key) {
            return Ok(Arc::clone(l));
        }
        let link = self.conn.open(who).await?;
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(link.pids());
        links.insert(key, Arc::clone(&link));
        Ok(link)
    }

    async fn call_layer(
        &self,
        cctx: &CallContext,
        contract_tool: &str,
        map: &ToolMap,
        arguments: &Value,
    ) -> Result<Value, ToolError> {
        let who = &cctx.principal;
        let (name, mut args) = adapt::outgoing(contract_tool, map, arguments)
            .map_err(|e| e.with_details(json!({"not_sent": true})))?;
        let link = self.link_for(who).await.map_err(fault)?;
        if !link.tools().iter().any(|t| t.name == name) {
            return Err(ToolError::new(
                ErrorCode::Internal,
                format!("`{contract_tool}` is not available in this layer: the target lists no tool `{name}`"),
                "",
            )
            .with_details(json!({"unsupported": true})));
        }
        if let Some((arg, value)) = &self.conn.profile.principal.argument {
            let vars = Connection::principal_vars(who);
            args.insert(arg.clone(), Value::String(template::expand(value, &vars)));
        }
        if let Some(arg) = self
            .conn
            .profile
            .audit
            .as_ref()
            .and_then(|a| a.trace_argument.as_ref())
        {
            args.insert(arg.clone(), Value::String(cctx.trace_id.clone()));
        }
        let traceparent = cctx.traceparent();
        let reply = link
            .call(&name, args, traceparent.as_deref())
            .await
            .map_err(fault)?;
        adapt::incoming(contract_tool, map, &self.conn.profile.denials, reply)
    }
}

/// A fault of the target as the `internal` error probes treat as inconclusive (`error`).
fn fault(e: LinkError) -> ToolError {
    ToolError::new(ErrorCode::Internal, format!("target fault: {e}"), "")
        .with_details(json!({"target_fault": true}))
}

/// The contract tools the profile maps and the layer really lists.
fn contract_view(profile: &Profile, raw: &[ToolSpec]) -> Vec<ToolSpec> {
    let mut out = Vec::new();
    for (contract, map) in &profile.tools {
        let pattern = regex::escape(&map.name).replace(r"\{model\}", ".+");
        let Ok(re) = regex::Regex::new(&format!("^{pattern}$")) else {
            continue;
        };
        if let Some(t) = raw.iter().find(|t| re.is_match(&t.name)) {
            out.push(ToolSpec {
                name: contract.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
            });
        }
    }
    out
}

#[async_trait]
impl Gateway for RemoteGateway {
    fn name(&self) -> String {
        self.info.summary()
    }

    fn tools(&self) -> Vec<ToolSpec> {
        match self.view {
            View::Contract => self.contract_tools.clone(),
            View::Raw => self.raw_tools.clone(),
        }
    }

    fn native_tools(&self) -> Vec<ToolSpec> {
        self.raw_tools.clone()
    }

    async fn call(
        &self,
        ctx: &CallContext,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, ToolError> {
        let native = !self.conn.profile.tools.contains_key(tool)
            && self.raw_tools.iter().any(|t| t.name == tool);
        match self.view {
            View::Contract if !native => {
                let Some(map) = self.conn.profile.tools.get(tool) else {
                    return Err(ToolError::new(
                        ErrorCode::Internal,
                        format!("`{tool}` is not available in this layer: the target profile maps no such tool"),
                        "",
                    )
                    .with_details(json!({"unsupported": true})));
                };
                self.call_layer(ctx, tool, map, &arguments).await
            }
            View::Contract | View::Raw => {
                let identity = ToolMap {
                    name: tool.to_string(),
                    args: BTreeMap::new(),
                    where_shape: crate::profile::WhereShape::List,
                    case: crate::profile::Case::Snake,
                    rows: None,
                    row: None,
                };
                self.call_layer(ctx, tool, &identity, &arguments).await
            }
        }
    }

    async fn health(&self) -> Health {
        Health {
            version: self.info.server_version.clone().unwrap_or_default(),
            policy_hash: String::new(),
            audit_sinks: Vec::new(),
        }
    }
}

/// A layer that could not be reached (it exited at start, never answered `initialize`, ...).
/// It offers the tools its profile claims, so every probe is planned as usual, and answers every
/// call with the fault: each probe becomes an `error` with the evidence, and the run still writes
/// its report.
pub struct UnreachableGateway {
    name: String,
    tools: Vec<ToolSpec>,
    fault: String,
}

impl UnreachableGateway {
    pub fn new(profile: &Profile, fault: &LinkError) -> UnreachableGateway {
        UnreachableGateway {
            name: format!(
                "{} {} (unreachable)",
                profile.transport.kind(),
                profile.path
            ),
            tools: profile
                .tools
                .keys()
                .map(|t| ToolSpec {
                    name: t.clone(),
                    description: String::new(),
                    input_schema: json!({"type": "object"}),
                })
                .collect(),
            fault: fault.to_string(),
        }
    }

    /// Why the layer could not be reached (redacted).
    pub fn fault(&self) -> &str {
        &self.fault
    }
}

#[async_trait]
impl Gateway for UnreachableGateway {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.tools.clone()
    }

    async fn call(&self, _: &CallContext, _: &str, _: Value) -> Result<Value, ToolError> {
        Err(ToolError::new(
            ErrorCode::Internal,
            format!("target fault: {}", self.fault),
            "",
        )
        .with_details(json!({"target_fault": true})))
    }

    async fn health(&self) -> Health {
        Health {
            version: String::new(),
            policy_hash: String::new(),
            audit_sinks: Vec::new(),
        }
    }
}
