//! One connection to a layer ([`Link`]): MCP (stdio, streamable HTTP) or HTTP tool endpoints,
//! speaking the layer's own tool names and shapes. The profile's translation sits above it.

use std::time::Duration;

use async_trait::async_trait;
use preflight_contract::ToolSpec;
use serde_json::{Map, Value};

/// A tool's reply as the layer sent it.
#[derive(Clone, Debug)]
pub(crate) struct RawReply {
    /// MCP `isError`, or an HTTP 4xx.
    pub is_error: bool,
    /// The structured result, or the text content parsed as JSON; `None` when the reply carried
    /// no JSON.
    pub value: Option<Value>,
    /// The text content as sent (for text patterns and evidence).
    pub text: String,
}

/// Why a layer could not be talked to. These are faults of the target, never denials.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the target could not be started: {reason}{}", tail(stderr))]
    Start { reason: String, stderr: String },
    #[error("the target did not answer within {} ms{}", timeout.as_millis(), tail(stderr))]
    Timeout { timeout: Duration, stderr: String },
    #[error("the connection to the target broke: {reason}{}", tail(stderr))]
    Transport { reason: String, stderr: String },
    #[error("the target's reply is malformed: {reason}{}", tail(stderr))]
    Protocol { reason: String, stderr: String },
    #[error("the target stopped answering earlier in this run ({0})")]
    Broken(String),
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; the target's stderr ends with:\n{stderr}")
    }
}

#[async_trait]
pub(crate) trait Link: Send + Sync {
    /// The layer's own tool list, as listed when the connection opened.
    fn tools(&self) -> &[ToolSpec];

    /// The server's name and version (MCP `initialize`), when it said.
    fn server(&self) -> Option<(String, String)>;

    /// Calls `tool`; `traceparent` (W3C Trace Context) travels beside the arguments (MCP
    /// `_meta.traceparent`, the HTTP `traceparent` header), so a layer that honours it records the
    /// call under preflight's trace id.
    async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        traceparent: Option<&str>,
    ) -> Result<RawReply, LinkError>;

    /// Ends the connection and, for a child process, ends and reaps it.
    async fn close(&self);

    /// Process ids of child processes this link started (for the tests' reaping checks).
    fn pids(&self) -> Vec<u32>;
}
