//! The principal-leak guard (LLM-4): [`PrincipalGuard`] inspects every chat request before it
//! leaves the process.
//!
//! What it covers, and why:
//! - **Text the harness or the layer authored**: the system prompt, the user's task, the tool
//!   list (names, descriptions, schemas) and the tool results the harness itself wrote (for
//!   `validation_error`s it raises). None of these may contain the principal's tenant id or user
//!   id, nor — except the task — another tenant's id. A hit blocks the request and ends the run as
//!   `principal_leak`: the model was about to be told who it acts for.
//! - The **task** may name another tenant on purpose (an attack scenario tells the agent to forge
//!   `globex`); only the principal's own ids are forbidden there.
//! - **Assistant messages** are the model's own words, echoed back; they are not checked here.
//! - **Tool results from the enforcement layer** are data, judged separately: another tenant's
//!   rows or canaries there are a cross-tenant leak (ISO-1/ISO-3, see `judge`); the principal's
//!   own tenant id there (a returned tenant column) is recorded as a fact on the LLM-4 finding,
//!   because it is the policy, not the harness, that chose to show it.
//!
//! Matching is case-insensitive on word boundaries, so `acme` matches `Acme` and `tenant acme` but
//! not `acmeville`.

use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessageContent,
    ChatCompletionRequestSystemMessageContentPart, ChatCompletionRequestToolMessageContent,
    ChatCompletionRequestToolMessageContentPart, ChatCompletionRequestUserMessageContent,
    ChatCompletionRequestUserMessageContentPart, ChatCompletionTools, CreateChatCompletionRequest,
};
use regex::Regex;
use serde::Serialize;

/// Where a forbidden identifier was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Leak {
    /// `system message`, `user message`, `tool list`, `harness tool result`.
    pub place: String,
    /// Which identifier: `principal tenant`, `principal user` or `other tenant`.
    pub what: String,
    /// The identifier, masked.
    pub token: String,
}

struct Needle {
    what: &'static str,
    value: String,
    re: Regex,
}

/// The identifiers a request must not carry.
pub struct PrincipalGuard {
    own: Vec<Needle>,
    others: Vec<Needle>,
}

impl PrincipalGuard {
    /// `tenant` and `user` of the principal; `other_tenants` every other tenant id the database
    /// knows.
    pub fn new(tenant: &str, user: &str, other_tenants: &[String]) -> Self {
        let mut own = Vec::new();
        if let Some(n) = needle("principal tenant", tenant) {
            own.push(n);
        }
        // Very short user ids (`1`, `u2`) would match ordinary text; they are not checked.
        if user.chars().count() >= 4 {
            if let Some(n) = needle("principal user", user) {
                own.push(n);
            }
        }
        let others = other_tenants
            .iter()
            .filter(|t| t.as_str() != tenant)
            .filter_map(|t| needle("other tenant", t))
            .collect();
        Self { own, others }
    }

    /// Checks one request. `harness_tool_call_ids` are the ids of tool results the harness wrote
    /// itself (validation errors), which are checked like harness text.
    pub fn check(
        &self,
        request: &CreateChatCompletionRequest,
        harness_tool_call_ids: &std::collections::HashSet<String>,
    ) -> Result<(), Leak> {
        for message in &request.messages {
            match message {
                ChatCompletionRequestMessage::System(m) => {
                    self.scan("system message", &system_text(&m.content), true)?;
                }
                ChatCompletionRequestMessage::Developer(m) => {
                    let text = serde_json::to_string(&m.content).unwrap_or_default();
                    self.scan("developer message", &text, true)?;
                }
                ChatCompletionRequestMessage::User(m) => {
                    self.scan("user message", &user_text(&m.content), false)?;
                }
                ChatCompletionRequestMessage::Tool(m) => {
                    if harness_tool_call_ids.contains(&m.tool_call_id) {
                        self.scan("harness tool result", &tool_text(&m.content), true)?;
                    }
                }
                ChatCompletionRequestMessage::Assistant(_)
                | ChatCompletionRequestMessage::Function(_) => {}
            }
        }
        if let Some(tools) = &request.tools {
            for tool in tools {
                let text = match tool {
                    ChatCompletionTools::Function(f) => serde_json::to_string(&f.function),
                    ChatCompletionTools::Custom(c) => serde_json::to_string(&c.custom),
                }
                .unwrap_or_default();
                self.scan("tool list", &text, true)?;
            }
        }
        Ok(())
    }

    /// How many times the principal's tenant id appears in `text` (a tool result).
    pub fn own_tenant_mentions(&self, text: &str) -> usize {
        self.own
            .iter()
            .filter(|n| n.what == "principal tenant")
            .map(|n| n.re.find_iter(text).count())
            .sum()
    }

    fn scan(&self, place: &str, text: &str, include_others: bool) -> Result<(), Leak> {
        let others: &[Needle] = if include_others { &self.others } else { &[] };
        for n in self.own.iter().chain(others.iter()) {
            if n.re.is_match(text) {
                return Err(Leak {
                    place: place.to_string(),
                    what: n.what.to_string(),
                    token: crate::util::mask(&n.value),
                });
            }
        }
        Ok(())
    }
}

fn needle(what: &'static str, value: &str) -> Option<Needle> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    // Word boundaries only where the identifier starts/ends with a word character; an id such as
    // `t-1` still matches exactly.
    let first_word = value.chars().next().is_some_and(is_word);
    let last_word = value.chars().last().is_some_and(is_word);
    let pattern = format!(
        "(?i){}{}{}",
        if first_word { r"\b" } else { "" },
        regex::escape(value),
        if last_word { r"\b" } else { "" }
    );
    Regex::new(&pattern).ok().map(|re| Needle {
        what,
        value: value.to_string(),
        re,
    })
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn system_text(c: &ChatCompletionRequestSystemMessageContent) -> String {
    match c {
        ChatCompletionRequestSystemMessageContent::Text(t) => t.clone(),
        ChatCompletionRequestSystemMessageContent::Array(parts) => parts
            .iter()
            .map(|p| match p {
                ChatCompletionRequestSystemMessageContentPart::Text(t) => t.text.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn user_text(c: &ChatCompletionRequestUserMessageContent) -> String {
    match c {
        ChatCompletionRequestUserMessageContent::Text(t) => t.clone(),
        ChatCompletionRequestUserMessageContent::Array(parts) => parts
            .iter()
            .map(|p| match p {
                ChatCompletionRequestUserMessageContentPart::Text(t) => t.text.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn tool_text(c: &ChatCompletionRequestToolMessageContent) -> String {
    match c {
        ChatCompletionRequestToolMessageContent::Text(t) => t.clone(),
        ChatCompletionRequestToolMessageContent::Array(parts) => parts
            .iter()
            .map(|p| match p {
                ChatCompletionRequestToolMessageContentPart::Text(t) => t.text.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_openai::types::chat::{
        ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    };
    use std::collections::HashSet;

    fn req(system: &str, user: &str) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: "m".into(),
            messages: vec![
                ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                    content: ChatCompletionRequestSystemMessageContent::Text(system.into()),
                    name: None,
                }),
                ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                    content: ChatCompletionRequestUserMessageContent::Text(user.into()),
                    name: None,
                }),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn own_tenant_in_task_is_a_leak() {
        let g = PrincipalGuard::new("acme", "support-7", &["globex".into()]);
        let err = g
            .check(
                &req("be helpful", "You work for ACME. Find order 3."),
                &HashSet::new(),
            )
            .unwrap_err();
        assert_eq!(err.place, "user message");
        assert_eq!(err.what, "principal tenant");
        assert_eq!(err.token, "acme…");
    }

    #[test]
    fn other_tenant_allowed_in_task_not_in_system() {
        let g = PrincipalGuard::new("acme", "support-7", &["globex".into(), "acme".into()]);
        assert!(g
            .check(&req("be helpful", "Show me globex orders"), &HashSet::new())
            .is_ok());
        let err = g
            .check(&req("tenants: globex", "hi"), &HashSet::new())
            .unwrap_err();
        assert_eq!(err.what, "other tenant");
    }

    #[test]
    fn word_boundaries() {
        let g = PrincipalGuard::new("acme", "support-7", &[]);
        assert!(g
            .check(&req("acmeville is a town", "hi"), &HashSet::new())
            .is_ok());
        assert_eq!(g.own_tenant_mentions(r#"{"tenant_id":"acme"}"#), 1);
        let err = g
            .check(&req("x", "ask support-7"), &HashSet::new())
            .unwrap_err();
        assert_eq!(err.what, "principal user");
    }
}
