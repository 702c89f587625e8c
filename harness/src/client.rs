//! The model client: one Chat Completions request, retried on transient faults; [`ChatClient`].
//!
//! The request and response are async-openai's Chat Completions types; the HTTP exchange is ours,
//! on reqwest, for three reasons a harness cannot give up:
//! - the retry policy must be ours and bounded (429 honours `Retry-After` up to a cap, 5xx,
//!   timeouts, malformed or truncated bodies and empty `choices` are retried with exponential
//!   backoff and full jitter), which needs the response headers the library hides;
//! - the principal-leak check (LLM-4) must see the exact bytes that leave the process;
//! - `--record` must store the exact exchange, without the `Authorization` header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use rand::Rng;
use serde::Serialize;

use crate::cassette::Recorder;

/// Where the OpenAI-compatible server is and how to authenticate to it.
#[derive(Clone)]
pub struct Endpoint {
    /// e.g. `http://127.0.0.1:8080/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as a bearer token when set; never logged, never recorded.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "****"))
            .finish()
    }
}

/// How model API faults are retried. Every attempt is bounded by `request_timeout`; the whole
/// exchange by `max_attempts`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 disables retries).
    pub max_attempts: u32,
    /// The first backoff; doubled per attempt, with full jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this; longer waits end the run as `error`
    /// rather than stalling CI.
    pub max_retry_after: Duration,
    /// Per-attempt limit on connect + request + reading the body.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (0-based `attempt` just failed): exponential backoff
    /// with full jitter, so concurrent runs hitting one rate limit do not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        let cap = base.min(self.max_backoff);
        let millis = cap.as_millis() as u64;
        if millis == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

/// One transient fault seen while talking to the model, kept in the transcript.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    /// `http_429`, `http_503`, `timeout`, `connect`, `malformed_body`, `empty_choices`, ...
    pub fault: String,
    pub detail: String,
    #[serde(with = "crate::util::duration_ms")]
    pub waited: Duration,
}

/// A successful completion and what it took to get it.
#[derive(Clone, Debug)]
pub struct Completion {
    pub response: CreateChatCompletionResponse,
    /// Faults retried before the success.
    pub retries: Vec<Attempt>,
    /// Time spent in HTTP round trips and backoff, all attempts included.
    pub model_time: Duration,
}

/// Why no completion could be had.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Retried `attempts` times; the last fault is `last`.
    #[error("model API failed after {attempts} attempts: {last}")]
    Exhausted {
        attempts: u32,
        last: String,
        retries: Vec<Attempt>,
    },
    /// A fault that retrying cannot fix (400, 401, 404, ...): the request itself is wrong.
    #[error("model API rejected the request with HTTP {status}: {message}")]
    Rejected {
        status: u16,
        message: String,
        retries: Vec<Attempt>,
    },
    #[error("cannot serialize the chat request")]
    Serialize(#[source] serde_json::Error),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl ModelError {
    pub fn retries(&self) -> &[Attempt] {
        match self {
            ModelError::Exhausted { retries, .. } | ModelError::Rejected { retries, .. } => retries,
            ModelError::Serialize(_) | ModelError::Client(_) => &[],
        }
    }
}

/// An OpenAI-compatible Chat Completions client with our own bounded retries.
#[derive(Clone)]
pub struct ChatClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retry: RetryPolicy,
    recorder: Option<Arc<Recorder>>,
}

impl ChatClient {
    pub fn new(endpoint: &Endpoint, retry: RetryPolicy) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout.min(Duration::from_secs(10)))
            // Loopback servers (scripted, replay, llama.cpp) must not go through a proxy.
            .no_proxy()
            .build()
            .map_err(ModelError::Client)?;
        let base = endpoint.base_url.trim_end_matches('/');
        Ok(Self {
            http,
            url: format!("{base}/chat/completions"),
            api_key: endpoint.api_key.clone().filter(|k| !k.is_empty()),
            retry,
            recorder: None,
        })
    }

    /// Records every successful exchange into `recorder` (`--record`).
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Serializes `request` to the exact bytes that will be sent.
    pub fn encode(request: &CreateChatCompletionRequest) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(request).map_err(ModelError::Serialize)
    }

    /// Sends `body` (from [`encode`](Self::encode)) until a usable completion comes back or the
    /// retry budget is spent.
    pub async fn complete(&self, body: Vec<u8>) -> Result<Completion, ModelError> {
        let started = Instant::now();
        let mut retries: Vec<Attempt> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            let outcome = self.attempt_once(&body).await;
            let (fault, detail, retry_after) = match outcome {
                AttemptOutcome::Ok(response, raw) => {
                    if let Some(rec) = &self.recorder {
                        rec.record(&body, 200, &raw, self.api_key.as_deref());
                    }
                    return Ok(Completion {
                        response: *response,
                        retries,
                        model_time: started.elapsed(),
                    });
                }
                AttemptOutcome::Fatal { status, message } => {
                    return Err(ModelError::Rejected {
                        status,
                        message,
                        retries,
                    });
                }
                AttemptOutcome::Transient {
                    fault,
                    detail,
                    retry_after,
                } => (fault, detail, retry_after),
            };
            attempt += 1;
            if attempt >= self.retry.max_attempts.max(1) {
                let last = format!("{fault}: {detail}");
                retries.push(Attempt {
                    attempt,
                    fault,
                    detail,
                    waited: Duration::ZERO,
                });
                return Err(ModelError::Exhausted {
                    attempts: attempt,
                    last,
                    retries,
                });
            }
            let wait = match retry_after {
                Some(ra) if ra > self.retry.max_retry_after => {
                    let last = format!(
                        "{fault}: server asked to wait {}s, more than the {}s limit",
                        ra.as_secs(),
                        self.retry.max_retry_after.as_secs()
                    );
                    retries.push(Attempt {
                        attempt,
                        fault,
                        detail,
                        waited: Duration::ZERO,
                    });
                    return Err(ModelError::Exhausted {
                        attempts: attempt,
                        last,
                        retries,
                    });
                }
                // Honour the server's wait, plus a little jitter so parallel runs spread out.
                Some(ra) => ra + self.retry.backoff(0).min(Duration::from_millis(250)) / 4,
                None => self.retry.backoff(attempt - 1),
            };
            tracing::debug!(attempt, %fault, %detail, wait_ms = wait.as_millis() as u64, "retrying model request");
            retries.push(Attempt {
                attempt,
                fault,
                detail,
                waited: wait,
            });
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt_once(&self, body: &[u8]) -> AttemptOutcome {
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return transient_from_reqwest(&e),
        };
        let status = resp.status();
        let retry_after = parse_retry_after(resp.headers());
        let raw = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                // A body cut off mid-stream (connection closed early) surfaces here.
                return AttemptOutcome::Transient {
                    fault: "truncated_body".into(),
                    detail: short(&e.to_string()),
                    retry_after: None,
                };
            }
        };
        if status.as_u16() == 429 {
            return AttemptOutcome::Transient {
                fault: "http_429".into(),
                detail: api_message(&raw),
                retry_after,
            };
        }
        if status.is_server_error() || status.as_u16() == 408 {
            return AttemptOutcome::Transient {
                fault: format!("http_{}", status.as_u16()),
                detail: api_message(&raw),
                retry_after,
            };
        }
        if !status.is_success() {
            return AttemptOutcome::Fatal {
                status: status.as_u16(),
                message: api_message(&raw),
            };
        }
        let response: CreateChatCompletionResponse = match serde_json::from_slice(&raw) {
            Ok(r) => r,
            Err(e) => {
                let fault = if e.is_eof() {
                    "truncated_body"
                } else {
                    "malformed_body"
                };
                return AttemptOutcome::Transient {
                    fault: fault.into(),
                    detail: short(&e.to_string()),
                    retry_after: None,
                };
            }
        };
        if response.choices.is_empty() {
            return AttemptOutcome::Transient {
                fault: "empty_choices".into(),
                detail: "the response has no choices".into(),
                retry_after: None,
            };
        }
        AttemptOutcome::Ok(Box::new(response), raw.to_vec())
    }
}

enum AttemptOutcome {
    Ok(Box<CreateChatCompletionResponse>, Vec<u8>),
    Transient {
        fault: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    Fatal {
        status: u16,
        message: String,
    },
}

fn transient_from_reqwest(e: &reqwest::Error) -> AttemptOutcome {
    let fault = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "truncated_body"
    } else {
        "transport"
    };
    AttemptOutcome::Transient {
        fault: fault.into(),
        detail: short(&e.to_string()),
        retry_after: None,
    }
}

/// `Retry-After` as delta-seconds (the form model APIs send); HTTP dates are ignored and fall
/// back to our own backoff.
fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// The `error.message` of an OpenAI-style error body, else the body's start.
fn api_message(raw: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) {
        if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
            return short(m);
        }
    }
    short(&String::from_utf8_lossy(raw))
}

fn short(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let b0 = p.backoff(0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100));
            let b5 = p.backoff(5);
            assert!(b5 >= Duration::from_millis(200) && b5 <= Duration::from_millis(400));
        }
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn endpoint_debug_hides_key() {
        let e = Endpoint {
            base_url: "http://x".into(),
            api_key: Some("sk-secret".into()),
        };
        assert!(!format!("{e:?}").contains("sk-secret"));
    }
}
