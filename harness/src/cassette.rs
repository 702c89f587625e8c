//! Record/replay cassettes: what `--record FILE` writes from a real run and the `replay` provider
//! serves back; [`Cassette`], [`Recorder`] and the request [`match_key`].
//!
//! A recorded request is stored normalised, and matched by the SHA-256 of that normal form:
//! - kept: the model name, the tool list, system/user text, the assistant turns (text, tool names
//!   and arguments), and for each tool result only whether it succeeded and its error code;
//! - dropped: tool-call ids, sampling options, and tool-result content, which carries values that
//!   legitimately differ between runs (timestamps, HMACs keyed per gateway instance, generated
//!   ids) and would otherwise make every replay miss. What the model *did* with a result is still
//!   pinned by the next assistant turn in the key.
//!
//! Cassettes never contain the API key or any header: only request bodies are seen, and the key
//! is scrubbed from bodies as a last line of defence. Nor do they contain a canary: when the
//! recorder is given the canary registry ([`Recorder::scrub_canaries`]), every registered value
//! in a request or a response is replaced by `[canary]` before it is stored, and the match key
//! is computed over the scrubbed form. The replay side scrubs each incoming request the same way
//! before computing its key ([`Cassette::lookup_scrubbed`]), so a replayed reply that says
//! `[canary]` where the recorded model quoted a value still matches its next request.
//!
//! A model that quoted a canary in its tool arguments replays with `[canary]` there instead:
//! the layer may then answer differently and the replay may miss; such a run leaked the value
//! in the first place.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::transcript::Scrubber;

pub const CASSETTE_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    pub version: u32,
    pub interactions: Vec<Interaction>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// SHA-256 of the normalised request.
    pub key: String,
    /// The normalised request (for people reading the cassette and for diagnosing misses).
    pub request: Value,
    /// The response body as the server sent it.
    pub response: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("cannot read cassette {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cassette {path} is not a valid cassette: {message}")]
    Parse { path: String, message: String },
    #[error(
        "cassette {path} has version {found}; this preflight reads version {CASSETTE_VERSION}"
    )]
    Version { path: String, found: u32 },
    #[error("cannot write cassette {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Cassette {
    /// Reads YAML (`.yaml`, `.yml`) or JSON (anything else).
    pub fn load(path: &Path) -> Result<Self, CassetteError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CassetteError::Read {
            path: shown.clone(),
            source,
        })?;
        let cassette: Cassette = if is_yaml(path) {
            serde_yaml::from_str(&text).map_err(|e| CassetteError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_json::from_str(&text).map_err(|e| CassetteError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        };
        if cassette.version != CASSETTE_VERSION {
            return Err(CassetteError::Version {
                path: shown,
                found: cassette.version,
            });
        }
        Ok(cassette)
    }

    pub fn save(&self, path: &Path) -> Result<(), CassetteError> {
        let shown = path.display().to_string();
        let text = if is_yaml(path) {
            serde_yaml::to_string(self).map_err(|e| CassetteError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_json::to_string_pretty(self).map_err(|e| CassetteError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| CassetteError::Write {
                path: shown,
                source,
            })
    }

    /// The recorded response for a request body, if any.
    pub fn lookup(&self, request_body: &[u8]) -> Option<&Value> {
        self.lookup_scrubbed(request_body, None)
    }

    /// The recorded response for a request body whose canaries are first scrubbed by
    /// `scrubber`, as the recorder scrubbed them.
    pub fn lookup_scrubbed(
        &self,
        request_body: &[u8],
        scrubber: Option<&Scrubber>,
    ) -> Option<&Value> {
        let key = match_key_scrubbed(request_body, scrubber)?;
        self.interactions
            .iter()
            .find(|i| i.key == key)
            .map(|i| &i.response)
    }
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// Collects exchanges during a `--record` run; thread-safe, shared by concurrent runs.
#[derive(Default)]
pub struct Recorder {
    interactions: Mutex<Vec<Interaction>>,
    /// Replaces canary values before anything is stored (set once, by the runner).
    scrubber: OnceLock<Arc<Scrubber>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("scrubs_canaries", &self.scrubber.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scrubs every value `scrubber` knows from what is recorded from now on (the runner
    /// passes the canary registry before the first run). Only the first call takes effect.
    pub fn scrub_canaries(&self, scrubber: Arc<Scrubber>) {
        let _ = self.scrubber.set(scrubber);
    }

    /// Records one successful exchange. `api_key` is scrubbed from both bodies.
    pub fn record(
        &self,
        request_body: &[u8],
        _status: u16,
        response: &[u8],
        api_key: Option<&str>,
    ) {
        let scrubber = self.scrubber.get().map(Arc::as_ref);
        let Some(normal) = normalise(request_body) else {
            return;
        };
        let mut normal = match scrubber {
            Some(s) => s.scrub_value(&normal),
            None => normal,
        };
        let key = digest(&normal);
        let response_text = String::from_utf8_lossy(response);
        let response_text = match api_key {
            Some(k) if !k.is_empty() => response_text.replace(k, "[redacted]"),
            _ => response_text.into_owned(),
        };
        if let Some(k) = api_key.filter(|k| !k.is_empty()) {
            let text = normal.to_string().replace(k, "[redacted]");
            normal = serde_json::from_str(&text).unwrap_or(Value::Null);
        }
        let response: Value = match serde_json::from_str(&response_text) {
            Ok(v) => match scrubber {
                Some(s) => s.scrub_value(&v),
                None => v,
            },
            Err(_) => Value::String(match scrubber {
                Some(s) => s.scrub(&response_text),
                None => response_text,
            }),
        };
        let mut all = match self.interactions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if all.iter().any(|i| i.key == key) {
            return;
        }
        all.push(Interaction {
            key,
            request: normal,
            response,
        });
    }

    pub fn cassette(&self) -> Cassette {
        let all = match self.interactions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        Cassette {
            version: CASSETTE_VERSION,
            interactions: all.clone(),
        }
    }
}

/// The match key of a request body; `None` when it is not a JSON chat request.
pub fn match_key(request_body: &[u8]) -> Option<String> {
    match_key_scrubbed(request_body, None)
}

/// The match key of a request body after `scrubber` replaced its canaries.
pub fn match_key_scrubbed(request_body: &[u8], scrubber: Option<&Scrubber>) -> Option<String> {
    let normal = normalise(request_body)?;
    Some(match scrubber {
        Some(s) => digest(&s.scrub_value(&normal)),
        None => digest(&normal),
    })
}

fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

fn normalise(request_body: &[u8]) -> Option<Value> {
    let req: Value = serde_json::from_slice(request_body).ok()?;
    let messages = req.get("messages")?.as_array()?;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let entry = match role {
            "tool" => {
                let content = m.get("content").map(content_text).unwrap_or_default();
                let code = serde_json::from_str::<Value>(&content).ok().and_then(|v| {
                    v.pointer("/error/code")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                json!({"role": "tool", "result": code.map(|c| format!("error:{c}")).unwrap_or_else(|| "ok".into())})
            }
            "assistant" => {
                let calls: Vec<Value> = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| {
                        calls
                            .iter()
                            .map(|c| {
                                json!({
                                    "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                                    "arguments": c.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"role": "assistant", "content": m.get("content").map(content_text).unwrap_or_default(), "tool_calls": calls})
            }
            _ => {
                json!({"role": role, "content": m.get("content").map(content_text).unwrap_or_default()})
            }
        };
        out.push(entry);
    }
    Some(json!({
        "model": req.get("model").cloned().unwrap_or(Value::Null),
        "tools": req.get("tools").cloned().unwrap_or(Value::Null),
        "messages": out,
    }))
}

fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tool_result: &str, call_id: &str) -> Vec<u8> {
        json!({
            "model": "m", "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "db_get", "arguments": "{\"model\":\"orders\",\"id\":1}"}}]},
                {"role": "tool", "tool_call_id": call_id, "content": tool_result}
            ]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn key_ignores_ids_and_result_values_but_not_error_codes() {
        let a = match_key(&body(r#"{"created_at":"2025-01-01"}"#, "call_1")).unwrap();
        let b = match_key(&body(r#"{"created_at":"2026-11-26"}"#, "call_xyz")).unwrap();
        assert_eq!(a, b);
        let c = match_key(&body(r#"{"error":{"code":"not_found"}}"#, "call_1")).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn recorder_scrubs_the_key_and_round_trips() {
        let rec = Recorder::new();
        rec.record(
            &body("{}", "c"),
            200,
            br#"{"echo":"sk-test-123"}"#,
            Some("sk-test-123"),
        );
        let cassette = rec.cassette();
        let text = serde_json::to_string(&cassette).unwrap();
        assert!(!text.contains("sk-test-123"));
        let dir = tempfile::tempdir().unwrap();
        for name in ["c.yaml", "c.json"] {
            let p = dir.path().join(name);
            cassette.save(&p).unwrap();
            let back = Cassette::load(&p).unwrap();
            assert_eq!(back, cassette);
            assert!(back.lookup(&body("{}", "other")).is_some());
            assert!(back
                .lookup(&body(r#"{"error":{"code":"x"}}"#, "c"))
                .is_none());
        }
    }
}
