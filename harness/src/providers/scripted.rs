//! The scripted model: a real OpenAI-compatible HTTP server on loopback that plays a scenario's
//! turns in order ([`ScriptedServer`]), checks the shape of every request it receives, and can
//! inject API faults ([`FaultPlan`]) so the client's retry path runs for real.
//!
//! The turn served is chosen from the request itself (the number of assistant messages already in
//! its history), so a retried request gets the same turn again and concurrent runs can share one
//! server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use preflight_enforcer::ToolSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::chat_tools;

/// One model turn of a script.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptTurn {
    /// The model calls these tools, in this order, in one reply.
    ToolCalls(Vec<ScriptedCall>),
    /// The model answers with this text and no tool calls.
    Final(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptedCall {
    pub tool: String,
    pub arguments: ScriptedArguments,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptedArguments {
    /// Serialized as JSON text, as a model would send it.
    Json(Value),
    /// Sent verbatim (for malformed-JSON cases).
    Raw(String),
}

impl ScriptedArguments {
    fn text(&self) -> String {
        match self {
            ScriptedArguments::Json(v) => v.to_string(),
            ScriptedArguments::Raw(s) => s.clone(),
        }
    }
}

/// A scenario's model turns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Script {
    pub turns: Vec<ScriptTurn>,
    /// Keep playing the last turn once the script is exhausted (a model stuck in a loop).
    #[serde(default)]
    pub repeat_last: bool,
}

impl Script {
    fn turn(&self, index: usize) -> Option<&ScriptTurn> {
        self.turns
            .get(index)
            .or_else(|| self.repeat_last.then(|| self.turns.last()).flatten())
    }
}

/// One API fault, served instead of a normal reply.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelFault {
    /// An HTTP error status, optionally with `Retry-After` (seconds) and a body.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Wait this long before replying normally (exceeds the client timeout to test it).
    Delay(Duration),
    /// A 200 whose JSON body is cut off halfway.
    Truncated,
    /// A 200 whose body is not JSON at all.
    Malformed,
    /// A 200 with `"choices": []`.
    EmptyChoices,
}

/// Which requests (0-based, counted across the server's life) get which fault.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    by_request: BTreeMap<usize, ModelFault>,
}

impl FaultPlan {
    pub fn none() -> Self {
        Self::default()
    }

    /// The first `n` requests each get `fault`.
    pub fn first(n: usize, fault: ModelFault) -> Self {
        let mut p = Self::default();
        for i in 0..n {
            p.by_request.insert(i, fault.clone());
        }
        p
    }

    /// Request number `index` gets `fault`.
    pub fn on(mut self, index: usize, fault: ModelFault) -> Self {
        self.by_request.insert(index, fault);
        self
    }
}

/// What the server was configured with.
#[derive(Clone, Debug, Default)]
pub struct ScriptedOptions {
    pub faults: FaultPlan,
    /// When set, every request's `tools` must equal this list unedited (LLM-3).
    pub expected_tools: Option<Vec<ToolSpec>>,
    /// The model name replies carry.
    pub model: Option<String>,
}

/// A request that broke the expected shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub request: usize,
    pub message: String,
}

#[derive(Default)]
struct Log {
    count: usize,
    violations: Vec<Violation>,
    bodies: Vec<Value>,
}

struct Shared {
    script: Script,
    options: ScriptedOptions,
    expected_tools: Option<Value>,
    log: Mutex<Log>,
}

/// A running scripted model. Dropping it stops the server.
pub struct ScriptedServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ScriptedServer {
    /// Starts the server on an ephemeral port of 127.0.0.1.
    pub async fn start(script: Script, options: ScriptedOptions) -> std::io::Result<Self> {
        let expected_tools = options
            .expected_tools
            .as_ref()
            .map(|t| serde_json::to_value(chat_tools(t)).unwrap_or(Value::Null));
        let shared = Arc::new(Shared {
            script,
            options,
            expected_tools,
            log: Mutex::new(Log::default()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/chat/completions", post(handle))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far (faulted ones included).
    pub fn requests(&self) -> usize {
        lock(&self.shared.log).count
    }

    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.shared.log).violations.clone()
    }

    /// The request bodies received, in order.
    pub fn bodies(&self) -> Vec<Value> {
        lock(&self.shared.log).bodies.clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn lock(m: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

async fn handle(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let (index, fault) = {
        let mut log = lock(&shared.log);
        let index = log.count;
        log.count += 1;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            log.bodies.push(v);
        }
        (index, shared.options.faults.by_request.get(&index).cloned())
    };
    match fault {
        Some(ModelFault::Status {
            status,
            retry_after,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut headers = HeaderMap::new();
            if let Some(ra) = retry_after.and_then(|r| HeaderValue::from_str(&r).ok()) {
                headers.insert(axum::http::header::RETRY_AFTER, ra);
            }
            let body = json!({"error": {"message": format!("injected fault: HTTP {status}"), "type": "injected", "param": null, "code": null}});
            return (code, headers, axum::Json(body)).into_response();
        }
        Some(ModelFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(ModelFault::Truncated)
        | Some(ModelFault::Malformed)
        | Some(ModelFault::EmptyChoices)
        | None => {}
    }

    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(&shared, index, format!("the request body is not JSON: {e}")),
    };
    let turn_index = match check_shape(&shared, &request) {
        Ok(i) => i,
        Err(msg) => return reject(&shared, index, msg),
    };
    let Some(turn) = shared.script.turn(turn_index) else {
        return reject(
            &shared,
            index,
            format!(
                "the script has {} turns and the harness asked for turn {}",
                shared.script.turns.len(),
                turn_index + 1
            ),
        );
    };
    let reply = completion(
        turn,
        turn_index,
        shared.options.model.as_deref().unwrap_or("scripted"),
    );
    match fault {
        Some(ModelFault::Truncated) => {
            let text = reply.to_string();
            let cut = &text[..text.len() / 2];
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                cut.to_string(),
            )
                .into_response()
        }
        Some(ModelFault::Malformed) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            "<html>upstream proxy error</html>",
        )
            .into_response(),
        Some(ModelFault::EmptyChoices) => {
            let mut r = reply;
            r["choices"] = json!([]);
            axum::Json(r).into_response()
        }
        _ => axum::Json(reply).into_response(),
    }
}

fn reject(shared: &Shared, index: usize, message: String) -> Response {
    lock(&shared.log).violations.push(Violation {
        request: index,
        message: message.clone(),
    });
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"message": format!("scripted model: {message}"), "type": "invalid_request_error", "param": null, "code": null}})),
    )
        .into_response()
}

/// Checks the request is what a careful client sends, and that its history replays the script's
/// earlier turns exactly. Returns the index of the turn to serve.
fn check_shape(shared: &Shared, req: &Value) -> Result<usize, String> {
    // It must parse as async-openai's request type: the same contract a real server enforces.
    serde_json::from_value::<async_openai::types::chat::CreateChatCompletionRequest>(req.clone())
        .map_err(|e| format!("not a valid chat completion request: {e}"))?;
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err("streaming was requested; tool calls need a complete reply".into());
    }
    if req
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("`model` is missing".into());
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is missing")?;
    let role = |i: usize| {
        messages
            .get(i)
            .and_then(|m| m.get("role"))
            .and_then(Value::as_str)
    };
    if role(0) != Some("system") {
        return Err("the first message is not the system prompt".into());
    }
    if role(1) != Some("user") {
        return Err("the second message is not the user's task".into());
    }
    if let Some(expected) = &shared.expected_tools {
        if req.get("tools") != Some(expected) {
            return Err("`tools` is not the enforcement layer's own tool list, unedited".into());
        }
    }
    let mut turn = 0usize;
    let mut i = 2;
    while i < messages.len() {
        let m = &messages[i];
        if m.get("role").and_then(Value::as_str) != Some("assistant") {
            return Err(format!("message {i} should be an assistant turn"));
        }
        let Some(calls) = m.get("tool_calls").and_then(Value::as_array) else {
            return Err(format!(
                "assistant message {i} has no tool calls but the run went on"
            ));
        };
        if !m.get("content").is_some_and(Value::is_string) {
            return Err(format!(
                "assistant message {i} with tool calls has null or missing `content`; send \"\""
            ));
        }
        if let Some(ScriptTurn::ToolCalls(expected)) = shared.script.turn(turn) {
            let sent: Vec<(Option<&str>, Option<&str>)> = calls
                .iter()
                .map(|c| {
                    (
                        c.pointer("/function/name").and_then(Value::as_str),
                        c.pointer("/function/arguments").and_then(Value::as_str),
                    )
                })
                .collect();
            let want: Vec<(String, String)> = expected
                .iter()
                .map(|c| (c.tool.clone(), c.arguments.text()))
                .collect();
            let same = sent.len() == want.len()
                && sent
                    .iter()
                    .zip(&want)
                    .all(|(s, w)| s.0 == Some(w.0.as_str()) && s.1 == Some(w.1.as_str()));
            if !same {
                return Err(format!(
                    "assistant message {i} does not echo the script's turn {} exactly",
                    turn + 1
                ));
            }
        }
        for (k, c) in calls.iter().enumerate() {
            let id = c.get("id").and_then(Value::as_str).unwrap_or("");
            let Some(t) = messages.get(i + 1 + k) else {
                return Err(format!("tool call {id} has no tool result"));
            };
            if t.get("role").and_then(Value::as_str) != Some("tool")
                || t.get("tool_call_id").and_then(Value::as_str) != Some(id)
            {
                return Err(format!(
                    "message {} should answer tool call {id} (results must follow their calls, in order)",
                    i + 1 + k
                ));
            }
            if !t.get("content").is_some_and(Value::is_string) {
                return Err(format!("the result of tool call {id} has no text content"));
            }
        }
        i += 1 + calls.len();
        turn += 1;
    }
    Ok(turn)
}

fn completion(turn: &ScriptTurn, turn_index: usize, model: &str) -> Value {
    let (message, finish) = match turn {
        ScriptTurn::Final(text) => (json!({"role": "assistant", "content": text}), "stop"),
        ScriptTurn::ToolCalls(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    json!({
                        "id": format!("call_{}_{}", turn_index + 1, k + 1),
                        "type": "function",
                        "function": {"name": c.tool, "arguments": c.arguments.text()}
                    })
                })
                .collect();
            (
                json!({"role": "assistant", "content": null, "tool_calls": calls}),
                "tool_calls",
            )
        }
    };
    json!({
        "id": format!("chatcmpl-scripted-{}", turn_index + 1),
        "object": "chat.completion",
        "created": 1_700_000_000u32,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    })
}
