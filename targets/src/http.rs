//! Plain HTTP tool endpoints through reqwest ([`HttpLink`]): `GET {url}/tools` lists the tools
//! (`[{name, description, input_schema}]`), `POST {url}/tools/{name}` with the arguments as the
//! JSON body calls one. A 2xx carries the result, a 4xx a denial; a 5xx, a non-JSON body or a
//! dropped connection is a fault of the target.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use preflight_contract::ToolSpec;
use serde_json::{Map, Value};

use crate::link::{Link, LinkError, RawReply};

/// Longest body excerpt kept in a fault's evidence.
const EXCERPT: usize = 300;

pub(crate) struct HttpLink {
    client: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
    tools: Vec<ToolSpec>,
    timeout: Duration,
}

fn excerpt(body: &str) -> String {
    crate::stderr::redact(&body.chars().take(EXCERPT).collect::<String>())
}

impl HttpLink {
    pub(crate) async fn connect(
        url: &str,
        headers: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<HttpLink, LinkError> {
        let start_err = |reason: String| LinkError::Start {
            reason,
            stderr: String::new(),
        };
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name: reqwest::header::HeaderName = k
                .parse()
                .map_err(|_| start_err(format!("`{k}` is not a valid HTTP header name")))?;
            let value = v
                .parse()
                .map_err(|_| start_err(format!("header `{k}` has a value that cannot be sent")))?;
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| start_err(format!("cannot build an HTTP client: {e}")))?;
        let base = url.trim_end_matches('/').to_string();
        let resp = client
            .get(format!("{base}/tools"))
            .headers(map.clone())
            .send()
            .await
            .map_err(|e| start_err(format!("GET {base}/tools failed: {}", without_url(&e))))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| start_err(format!("GET {base}/tools: {}", without_url(&e))))?;
        if !status.is_success() {
            return Err(start_err(format!(
                "GET {base}/tools answered {status}: {}",
                excerpt(&body)
            )));
        }
        let tools: Vec<ToolSpec> = serde_json::from_str(&body).map_err(|e| LinkError::Protocol {
            reason: format!(
                "GET {base}/tools did not return [{{name, description, input_schema}}]: {e}; body: {}",
                excerpt(&body)
            ),
            stderr: String::new(),
        })?;
        Ok(HttpLink {
            client,
            base,
            headers: map,
            tools,
            timeout,
        })
    }
}

/// reqwest's error text without the URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    crate::stderr::redact(&text)
}

#[async_trait]
impl Link for HttpLink {
    fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }

    fn server(&self) -> Option<(String, String)> {
        None
    }

    async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        traceparent: Option<&str>,
    ) -> Result<RawReply, LinkError> {
        let mut request = self
            .client
            .post(format!("{}/tools/{tool}", self.base))
            .headers(self.headers.clone());
        if let Some(t) = traceparent {
            request = request.header("traceparent", t);
        }
        let resp = request
            .json(&Value::Object(arguments))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    LinkError::Timeout {
                        timeout: self.timeout,
                        stderr: String::new(),
                    }
                } else {
                    LinkError::Transport {
                        reason: without_url(&e),
                        stderr: String::new(),
                    }
                }
            })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| LinkError::Transport {
            reason: without_url(&e),
            stderr: String::new(),
        })?;
        if status.is_server_error() {
            return Err(LinkError::Protocol {
                reason: format!("POST /tools/{tool} answered {status}: {}", excerpt(&body)),
                stderr: String::new(),
            });
        }
        let value: Option<Value> = serde_json::from_str(&body).ok();
        if value.is_none() && status.is_success() {
            return Err(LinkError::Protocol {
                reason: format!(
                    "POST /tools/{tool} answered {status} with a body that is not JSON: {}",
                    excerpt(&body)
                ),
                stderr: String::new(),
            });
        }
        Ok(RawReply {
            is_error: status.is_client_error(),
            value,
            text: body,
        })
    }

    async fn close(&self) {}

    fn pids(&self) -> Vec<u32> {
        Vec::new()
    }
}
