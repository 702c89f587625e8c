//! Raw requests to a layer reached by URL ([`Wire`]), for the probes of the server itself: the
//! health endpoint, and MCP sessions and tool calls whose headers the caller chooses (a forged
//! token, one principal per session), with the HTTP status and `Retry-After` of every answer
//! kept. The adapter ([`crate::RemoteGateway`]) hides those; a probe of token checks and rate
//! limits needs them.
//!
//! Over streamable HTTP a session is `initialize` then `notifications/initialized`, and each
//! call is one POST (one request for the layer's rate limiter); over plain HTTP tool endpoints a
//! call is `POST {url}/tools/{name}`. Tool results are read through the profile exactly as the
//! adapter reads them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use preflight_contract::{Principal, ToolError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::link::RawReply;
use crate::profile::{Profile, Transport};

/// The MCP protocol version the raw client speaks.
const PROTOCOL_VERSION: &str = "2025-06-18";
/// Longest body excerpt kept in an answer.
const EXCERPT: usize = 600;

/// One HTTP exchange as it happened.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// The HTTP status; `None` when no answer came (connection refused, timeout).
    pub status: Option<u16>,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The JSON body (for MCP: the JSON-RPC message answering the request), when there was one.
    pub body: Option<Value>,
    /// The body as text, cut and with credentials masked (for evidence).
    pub text: String,
    /// Why no answer came.
    pub fault: Option<String>,
    /// For a tool call the layer answered: the result or denial as the contract reads it.
    pub outcome: Option<Result<Value, ToolError>>,
}

impl Answer {
    fn fault(why: String) -> Answer {
        Answer {
            fault: Some(crate::stderr::redact(&why)),
            ..Answer::default()
        }
    }

    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A successful tool result (not a denial).
    pub fn served(&self) -> bool {
        matches!(self.outcome, Some(Ok(_)))
    }

    /// One line for evidence: `HTTP 401 …` or the fault.
    pub fn describe(&self) -> String {
        match (self.status, &self.fault) {
            (Some(s), _) => {
                let retry = self
                    .retry_after
                    .as_ref()
                    .map(|r| format!(" (Retry-After: {r})"))
                    .unwrap_or_default();
                let what = match &self.outcome {
                    Some(Ok(_)) => " → a tool result".to_string(),
                    Some(Err(e)) => format!(" → denial {}", e.code),
                    None => String::new(),
                };
                let body: String = self.text.chars().take(160).collect();
                format!("HTTP {s}{retry}{what}: {body}")
            }
            (None, Some(f)) => format!("no answer: {f}"),
            (None, None) => "no answer".to_string(),
        }
    }
}

/// An open session: its id (MCP) and the headers every request of it carries.
#[derive(Clone, Debug)]
pub struct WireSession {
    id: Option<String>,
    headers: HeaderMap,
}

/// Raw access to one layer reached by URL.
#[derive(Clone)]
pub struct Wire {
    client: reqwest::Client,
    profile: Arc<Profile>,
    url: String,
    mcp: bool,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("url", &self.url).finish()
    }
}

impl Wire {
    /// `None` for a layer that is not reached by URL.
    pub fn new(profile: Arc<Profile>) -> Option<Wire> {
        let (url, mcp) = match &profile.transport {
            Transport::McpHttp { url } => (url.clone(), true),
            Transport::Http { url } => (url.trim_end_matches('/').to_string(), false),
            Transport::McpStdio { .. } => return None,
        };
        let client = reqwest::Client::builder()
            .timeout(profile.timeout)
            .build()
            .ok()?;
        Some(Wire {
            client,
            profile,
            url,
            mcp,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The layer's URL (MCP endpoint or tools base).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers the profile sends for `who`, with a bearer token minted for `who` when the
    /// principal travels as a JWT.
    pub fn headers_for(&self, who: &Principal) -> Result<BTreeMap<String, String>, String> {
        let vars = BTreeMap::from([
            ("tenant", who.tenant.clone()),
            ("user", who.user.clone()),
            ("roles", who.roles.join(",")),
        ]);
        let mut out: BTreeMap<String, String> = self
            .profile
            .principal
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), crate::template::expand(v, &vars)))
            .collect();
        if let Some(jwt) = &self.profile.principal.jwt {
            let token = crate::jwt::mint(jwt, who)?;
            out.insert(jwt.header.clone(), format!("Bearer {token}"));
        }
        Ok(out)
    }

    /// `GET url`, the body read as JSON when it is.
    pub async fn get(&self, url: &str) -> Answer {
        match self.client.get(url).send().await {
            Ok(resp) => read(resp, None).await,
            Err(e) => Answer::fault(without_url(&e)),
        }
    }

    /// Opens a session with `headers`. Over MCP: `initialize` and, when it succeeds,
    /// `notifications/initialized`; `Err` is the answer to the first request that did not
    /// succeed. Over plain HTTP there is no session: the headers travel with every call.
    pub async fn open(&self, headers: &BTreeMap<String, String>) -> Result<WireSession, Answer> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let (Ok(name), Ok(value)) = (k.parse::<HeaderName>(), HeaderValue::from_str(v)) else {
                return Err(Answer::fault(format!("header `{k}` cannot be sent")));
            };
            map.insert(name, value);
        }
        let mut session = WireSession {
            id: None,
            headers: map,
        };
        if !self.mcp {
            return Ok(session);
        }
        let init = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "preflight-server-probe", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let resp = match self.post(&session, &init, false).await {
            Ok(r) => r,
            Err(a) => return Err(a),
        };
        let id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let answer = read(resp, Some(0)).await;
        if !answer.is_success() || answer.body.as_ref().and_then(|b| b.get("result")).is_none() {
            return Err(answer);
        }
        session.id = id;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = match self.post(&session, &note, true).await {
            Ok(r) => read(r, None).await,
            Err(a) => a,
        };
        if !answer.is_success() {
            return Err(answer);
        }
        Ok(session)
    }

    /// Calls the contract tool `contract_tool` (translated through the profile) as `who` in
    /// `session`; `who` only fills a principal argument, when the profile has one.
    pub async fn call(
        &self,
        session: &WireSession,
        who: &Principal,
        contract_tool: &str,
        arguments: &Value,
    ) -> Answer {
        let Some(map) = self.profile.tools.get(contract_tool) else {
            return Answer::fault(format!("the profile maps no `{contract_tool}`"));
        };
        let (name, mut args) = match crate::adapt::outgoing(contract_tool, map, arguments) {
            Ok(x) => x,
            Err(e) => return Answer::fault(format!("cannot translate the call: {}", e.message)),
        };
        if let Some((arg, value)) = &self.profile.principal.argument {
            let vars = BTreeMap::from([
                ("tenant", who.tenant.clone()),
                ("user", who.user.clone()),
                ("roles", who.roles.join(",")),
            ]);
            args.insert(
                arg.clone(),
                Value::String(crate::template::expand(value, &vars)),
            );
        }
        let mut answer = if self.mcp {
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let msg = json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": "tools/call",
                "params": {"name": name, "arguments": Value::Object(args)},
            });
            match self.post(session, &msg, true).await {
                Ok(r) => read(r, Some(id)).await,
                Err(a) => a,
            }
        } else {
            let sent = self
                .client
                .post(format!("{}/tools/{name}", self.url))
                .headers(session.headers.clone())
                .json(&Value::Object(args))
                .send()
                .await;
            match sent {
                Ok(r) => read(r, None).await,
                Err(e) => Answer::fault(without_url(&e)),
            }
        };
        if let Some(reply) = self.reply(&answer) {
            answer.outcome = Some(crate::adapt::incoming(
                contract_tool,
                map,
                &self.profile.denials,
                reply,
            ));
        }
        answer
    }

    /// Ends an MCP session (best effort).
    pub async fn close(&self, session: &WireSession) {
        if let (true, Some(id)) = (self.mcp, &session.id) {
            let _ = self
                .client
                .delete(&self.url)
                .headers(session.headers.clone())
                .header("mcp-session-id", id)
                .send()
                .await;
        }
    }

    /// The tool reply inside an answer, when the layer gave one.
    fn reply(&self, answer: &Answer) -> Option<RawReply> {
        let status = answer.status?;
        let body = answer.body.as_ref()?;
        if !self.mcp {
            if status >= 500 {
                return None;
            }
            return Some(RawReply {
                is_error: (400..500).contains(&status),
                value: Some(body.clone()),
                text: body.to_string(),
            });
        }
        if !(200..300).contains(&status) {
            return None;
        }
        if let Some(result) = body.get("result") {
            let text = result
                .get("content")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(|i| i.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            let value = match result.get("structuredContent") {
                Some(v) if !v.is_null() => Some(v.clone()),
                _ => serde_json::from_str(text.trim()).ok(),
            };
            return Some(RawReply {
                is_error: result.get("isError").and_then(Value::as_bool) == Some(true),
                value,
                text,
            });
        }
        body.get("error").map(|e| RawReply {
            is_error: true,
            value: Some(e.clone()),
            text: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    async fn post(
        &self,
        session: &WireSession,
        message: &Value,
        in_session: bool,
    ) -> Result<reqwest::Response, Answer> {
        let mut req = self
            .client
            .post(&self.url)
            .headers(session.headers.clone())
            .header("accept", "application/json, text/event-stream")
            .json(message);
        if in_session {
            req = req.header("mcp-protocol-version", PROTOCOL_VERSION);
            if let Some(id) = &session.id {
                req = req.header("mcp-session-id", id);
            }
        }
        req.send().await.map_err(|e| Answer::fault(without_url(&e)))
    }
}

/// Reads an answer; for an MCP request with `id`, the JSON-RPC message answering it (from a JSON
/// body or an event stream).
async fn read(resp: reqwest::Response, id: Option<u64>) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => {
            return Answer {
                status: Some(status),
                retry_after,
                fault: Some(without_url(&e)),
                ..Answer::default()
            }
        }
    };
    let body = serde_json::from_str::<Value>(text.trim()).ok().or_else(|| {
        // An event stream: the `data:` line that answers the request.
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| match id {
                Some(id) => m.get("id").and_then(Value::as_u64) == Some(id),
                None => true,
            })
    });
    Answer {
        status: Some(status),
        retry_after,
        body,
        text: crate::stderr::redact(&text.chars().take(EXCERPT).collect::<String>()),
        fault: None,
        outcome: None,
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}
