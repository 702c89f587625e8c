//! An MCP connection through `rmcp` ([`McpLink`]): a child process over stdio, or a streamable
//! HTTP session. Every request is bounded by the profile's per-call timeout; after a timeout or
//! a broken transport the link refuses further calls at once, so a hung layer costs one timeout,
//! not one per probe.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use preflight_contract::ToolSpec;
use rmcp::model::{CallToolRequestParams, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{Map, Value};

use crate::link::{Link, LinkError, RawReply};
use crate::stderr::StderrTail;
use crate::tap::{NotJson, TappedChild};

/// How long a crashed process gets to flush its last stderr lines into the evidence.
const STDERR_SETTLE: Duration = Duration::from_millis(500);
/// How long a child gets to exit after its stdin closes before it is killed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct McpLink {
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    peer: rmcp::Peer<RoleClient>,
    tools: Vec<ToolSpec>,
    server: Option<(String, String)>,
    stderr: StderrTail,
    /// Lines of a stdio child's output that were not JSON (empty over HTTP).
    not_json: NotJson,
    pid: Option<u32>,
    timeout: Duration,
    broken: Mutex<Option<String>>,
}

impl McpLink {
    /// Starts `command` with `args` and `env` (added to this process's environment) and
    /// initializes an MCP session over its stdio.
    pub(crate) async fn stdio(
        command: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<McpLink, LinkError> {
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(args)
            .envs(env)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| LinkError::Start {
            reason: format!("cannot run `{command}`: {e}"),
            stderr: String::new(),
        })?;
        let pid = child.id();
        let tail = child
            .stderr
            .take()
            .map(StderrTail::follow)
            .unwrap_or_default();
        let Some((proc, not_json)) = TappedChild::new(child, CLOSE_TIMEOUT) else {
            return Err(LinkError::Start {
                reason: format!("`{command}` was started without piped stdin and stdout"),
                stderr: String::new(),
            });
        };
        let started = tokio::time::timeout(timeout, ().serve(proc)).await;
        let service = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tail.settle(STDERR_SETTLE).await;
                return Err(LinkError::Start {
                    reason: format!("the MCP session did not initialize: {e}"),
                    stderr: tail.text(),
                });
            }
            Err(_) => {
                return Err(LinkError::Start {
                    reason: format!(
                        "no answer to `initialize` within {} ms",
                        timeout.as_millis()
                    ),
                    stderr: tail.text(),
                })
            }
        };
        Self::ready(service, tail, not_json, pid, timeout).await
    }

    /// Opens a streamable HTTP session at `url`, sending `headers` on every request.
    pub(crate) async fn http(
        url: &str,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<McpLink, LinkError> {
        let mut custom = std::collections::HashMap::new();
        for (k, v) in headers {
            let name = reqwest_header_name(k)?;
            let value = v.parse().map_err(|_| LinkError::Start {
                reason: format!("header `{k}` has a value that cannot be sent"),
                stderr: String::new(),
            })?;
            custom.insert(name, value);
        }
        let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(custom);
        let transport = StreamableHttpClientTransport::from_config(config);
        let service = match tokio::time::timeout(timeout, ().serve(transport)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(LinkError::Start {
                    reason: format!("the MCP session at {url} did not initialize: {e}"),
                    stderr: String::new(),
                })
            }
            Err(_) => {
                return Err(LinkError::Start {
                    reason: format!(
                        "no answer to `initialize` from {url} within {} ms",
                        timeout.as_millis()
                    ),
                    stderr: String::new(),
                })
            }
        };
        Self::ready(
            service,
            StderrTail::default(),
            NotJson::default(),
            None,
            timeout,
        )
        .await
    }

    async fn ready(
        service: RunningService<RoleClient, ()>,
        stderr: StderrTail,
        not_json: NotJson,
        pid: Option<u32>,
        timeout: Duration,
    ) -> Result<McpLink, LinkError> {
        let server = service
            .peer_info()
            .and_then(|i| i.server_info.clone())
            .map(|i| (i.name, i.version));
        let listed = match tokio::time::timeout(timeout, service.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                stderr.settle(STDERR_SETTLE).await;
                let link_err = LinkError::Start {
                    reason: format!("`tools/list` failed: {e}"),
                    stderr: stderr.text(),
                };
                let _ = service.cancel().await;
                return Err(link_err);
            }
            Err(_) => {
                let link_err = LinkError::Start {
                    reason: format!(
                        "no answer to `tools/list` within {} ms",
                        timeout.as_millis()
                    ),
                    stderr: stderr.text(),
                };
                let _ = service.cancel().await;
                return Err(link_err);
            }
        };
        let tools = listed
            .into_iter()
            .map(|t| ToolSpec {
                name: t.name.to_string(),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect();
        Ok(McpLink {
            peer: service.peer().clone(),
            service: tokio::sync::Mutex::new(Some(service)),
            tools,
            server,
            stderr,
            not_json,
            pid,
            timeout,
            broken: Mutex::new(None),
        })
    }

    fn mark_broken(&self, why: &str) {
        let mut b = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if b.is_none() {
            *b = Some(why.to_string());
        }
    }
}

fn reqwest_header_name(name: &str) -> Result<rmcp_http::HeaderName, LinkError> {
    name.parse().map_err(|_| LinkError::Start {
        reason: format!("`{name}` is not a valid HTTP header name"),
        stderr: String::new(),
    })
}

/// The `http` crate as rmcp re-exports it through reqwest.
mod rmcp_http {
    pub use reqwest::header::HeaderName;
}

#[async_trait]
impl Link for McpLink {
    fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    fn server(&self) -> Option<(String, String)> {
        self.server.clone()
    }

    async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        traceparent: Option<&str>,
    ) -> Result<RawReply, LinkError> {
        if let Some(why) = self
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(LinkError::Broken(why));
        }
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        if let Some(t) = traceparent {
            let mut meta = RequestMetaObject::default();
            meta.set_traceparent(t);
            params.meta = Some(meta);
        }
        let result = match tokio::time::timeout(self.timeout, self.peer.call_tool(params)).await {
            Ok(Ok(r)) => r,
            Ok(Err(ServiceError::McpError(e))) => {
                // A JSON-RPC error object: the layer answered, but not with a tool result. An
                // unknown tool or invalid params land here; the evidence keeps the layer's words.
                return Ok(RawReply {
                    is_error: true,
                    value: serde_json::to_value(&e).ok(),
                    text: e.message.to_string(),
                });
            }
            Ok(Err(e)) => {
                self.stderr.settle(STDERR_SETTLE).await;
                let reason = e.to_string();
                self.mark_broken(&reason);
                return Err(match e {
                    ServiceError::UnexpectedResponse => LinkError::Protocol {
                        reason,
                        stderr: self.stderr.text(),
                    },
                    _ => LinkError::Transport {
                        reason,
                        stderr: self.stderr.text(),
                    },
                });
            }
            Err(_) => {
                // A reply rmcp could not read is dropped by it and looks like silence; the tap
                // saw it, and it is what the evidence must show.
                if let Some(line) = self.not_json.lines().pop() {
                    let reason = format!(
                        "the layer's output was not JSON-RPC (no reply to `{tool}` could be read within {} ms); its last unreadable line: {line}",
                        self.timeout.as_millis()
                    );
                    self.mark_broken(&reason);
                    return Err(LinkError::Protocol {
                        reason,
                        stderr: self.stderr.text(),
                    });
                }
                self.mark_broken(&format!("a call to `{tool}` timed out"));
                return Err(LinkError::Timeout {
                    timeout: self.timeout,
                    stderr: self.stderr.text(),
                });
            }
        };
        let text = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n");
        let value = match result.structured_content {
            Some(v) => Some(v),
            None => serde_json::from_str(text.trim()).ok(),
        };
        Ok(RawReply {
            is_error: result.is_error.unwrap_or(false),
            value,
            text,
        })
    }

    async fn close(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut s) = service {
            // Closing the transport closes the child's stdin, waits, then signals and kills it;
            // the child is reaped either way.
            let _ = s.close_with_timeout(CLOSE_TIMEOUT).await;
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.pid.into_iter().collect()
    }
}
