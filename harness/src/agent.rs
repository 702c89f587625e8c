//! The agent loop: a real tool-calling conversation between a model and an enforcement layer,
//! capped in steps, with structured errors fed back; [`run_agent`] returns an [`AgentRun`].
//!
//! One step is one model request. A reply with tool calls is answered call by call, in order, with
//! one tool message each (the layer's JSON result, or `{"error": {...}}` with the structured
//! error); a reply without tool calls is the final answer. Reaching `max_steps` is the scored
//! outcome `step_limit`, not a failure of the harness. The principal is only ever in the
//! [`CallContext`] handed to the layer; every request is checked by the [`PrincipalGuard`] before
//! it is sent (LLM-4).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionTool, ChatCompletionToolChoiceOption,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use preflight_enforcer::{CallContext, ErrorCode, Gateway, ToolError, ToolSpec};
use serde::Serialize;
use serde_json::Value;

use crate::client::{Attempt, ChatClient};
use crate::guard::{Leak, PrincipalGuard};
use crate::validate::validate_arguments;

/// The step cap when a scenario sets none, and the highest value LLM-2 accepts.
pub const DEFAULT_MAX_STEPS: u32 = 12;

/// Tool calls run per model reply when the settings name no other cap; calls past it are
/// answered with a `validation_error` from the harness and never reach the layer, so a
/// reply cannot turn one step into an unbounded burst of calls.
pub const DEFAULT_MAX_TOOL_CALLS_PER_REPLY: usize = 8;

/// The built-in system prompt (LLM-1); `--system-prompt FILE` replaces it.
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("../prompts/system.md");

/// How the model is asked.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub model: String,
    pub max_steps: u32,
    /// Tool calls run per model reply (at least 1).
    pub max_tool_calls_per_reply: usize,
    pub system_prompt: String,
    pub temperature: Option<f32>,
    /// Sent as `max_tokens` (the field every compatible server knows).
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    /// `tool_choice` as sent; `None` leaves the server's default (`auto` when tools are given).
    pub tool_choice: Option<ChatCompletionToolChoiceOption>,
}

impl AgentSettings {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            max_steps: DEFAULT_MAX_STEPS,
            max_tool_calls_per_reply: DEFAULT_MAX_TOOL_CALLS_PER_REPLY,
            system_prompt: DEFAULT_SYSTEM_PROMPT.to_string(),
            temperature: None,
            max_tokens: None,
            seed: None,
            tool_choice: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The model gave a final answer.
    Completed,
    /// The step cap was reached; the transcript is kept.
    StepLimit,
    /// The model API failed past the retry budget, or rejected the request.
    Error,
    /// A request would have told the model who it acts for; it was not sent (LLM-4).
    PrincipalLeak,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::StepLimit => "step_limit",
            RunOutcome::Error => "error",
            RunOutcome::PrincipalLeak => "principal_leak",
        }
    }
}

/// Who wrote a tool result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultOrigin {
    /// The enforcement layer answered.
    Gateway,
    /// The harness refused the call before it reached the layer (bad JSON, unknown tool, schema).
    Harness,
}

/// One tool call the model made and what it got back.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCallLog {
    pub step: u32,
    pub id: String,
    pub tool: String,
    /// The parsed arguments; `null` when they did not parse.
    pub arguments: Value,
    pub raw_arguments: String,
    pub origin: ResultOrigin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
    #[serde(with = "crate::util::duration_ms")]
    pub duration: Duration,
}

impl ToolCallLog {
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// The text the model received for this call.
    pub fn content(&self) -> String {
        tool_content(self.result.as_ref(), self.error.as_ref())
    }
}

/// One line of the transcript (LLM-5). Written scrubbed, as JSONL, apart from the tool audit.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptEntry {
    System {
        text: String,
    },
    User {
        text: String,
    },
    Assistant {
        step: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<TranscriptToolCall>,
    },
    ToolResult {
        step: u32,
        tool_call_id: String,
        tool: String,
        origin: ResultOrigin,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_code: Option<ErrorCode>,
        content: String,
    },
    ModelRetry {
        step: u32,
        #[serde(flatten)]
        attempt: Attempt,
    },
    ModelError {
        step: u32,
        message: String,
    },
    PrincipalLeak {
        step: u32,
        leak: Leak,
    },
    StepLimit {
        steps: u32,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct TranscriptToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Where one step's time went.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepTiming {
    pub step: u32,
    #[serde(with = "crate::util::duration_ms")]
    pub total: Duration,
    /// HTTP round trips to the model, retries and backoff included.
    #[serde(with = "crate::util::duration_ms")]
    pub model: Duration,
    /// Inside `Gateway::call` (the layer and its database).
    #[serde(with = "crate::util::duration_ms")]
    pub gateway: Duration,
}

impl StepTiming {
    /// The harness's own share: total minus model and layer time.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.model + self.gateway)
    }
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct AgentRun {
    pub outcome: RunOutcome,
    pub steps: u32,
    pub max_steps: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak: Option<Leak>,
    pub tool_calls: Vec<ToolCallLog>,
    pub transcript: Vec<TranscriptEntry>,
    pub timings: Vec<StepTiming>,
    /// Tools offered to the model: the layer's own list (LLM-3).
    pub tools_offered: Vec<String>,
    /// False when the layer's list changed between steps (its contract says it must not).
    pub tool_list_stable: bool,
    /// Model API faults that were retried.
    pub model_retries: usize,
    /// Times the principal's own tenant id appeared in layer tool results.
    pub own_tenant_in_results: usize,
    /// The per-reply tool-call cap in force.
    pub max_tool_calls_per_reply: usize,
    /// Tool calls past the per-reply cap, refused by the harness.
    pub tool_calls_over_cap: usize,
    #[serde(with = "crate::util::duration_ms")]
    pub duration: Duration,
}

/// The layer's tool list as Chat Completions tools, unedited: same names, descriptions and
/// schemas (LLM-3).
pub fn chat_tools(tools: &[ToolSpec]) -> Vec<ChatCompletionTools> {
    tools
        .iter()
        .map(|t| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: t.name.clone(),
                    description: Some(t.description.clone()),
                    parameters: Some(t.input_schema.clone()),
                    strict: None,
                },
            })
        })
        .collect()
}

/// Runs one conversation. Never panics and never returns `Err`: every way a run can end is an
/// [`RunOutcome`] with the transcript so far.
pub async fn run_agent(
    client: &ChatClient,
    settings: &AgentSettings,
    gateway: &dyn Gateway,
    ctx: &CallContext,
    task: &str,
    guard: &PrincipalGuard,
) -> AgentRun {
    let started = Instant::now();
    let tools = gateway.tools();
    let mut run = AgentRun {
        outcome: RunOutcome::StepLimit,
        steps: 0,
        max_steps: settings.max_steps,
        final_answer: None,
        error: None,
        leak: None,
        tool_calls: Vec::new(),
        transcript: vec![
            TranscriptEntry::System {
                text: settings.system_prompt.clone(),
            },
            TranscriptEntry::User {
                text: task.to_string(),
            },
        ],
        timings: Vec::new(),
        tools_offered: tools.iter().map(|t| t.name.clone()).collect(),
        tool_list_stable: true,
        model_retries: 0,
        own_tenant_in_results: 0,
        max_tool_calls_per_reply: settings.max_tool_calls_per_reply.max(1),
        tool_calls_over_cap: 0,
        duration: Duration::ZERO,
    };
    // `max_tokens` and `seed` are deprecated by OpenAI but are what compatible servers (llama.cpp,
    // vLLM, Ollama) understand.
    #[allow(deprecated)]
    let mut request = CreateChatCompletionRequest {
        model: settings.model.clone(),
        messages: vec![
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: ChatCompletionRequestSystemMessageContent::Text(
                    settings.system_prompt.clone(),
                ),
                name: None,
            }),
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(task.to_string()),
                name: None,
            }),
        ],
        tools: if tools.is_empty() {
            None
        } else {
            Some(chat_tools(&tools))
        },
        temperature: settings.temperature,
        max_tokens: settings.max_tokens,
        seed: settings.seed,
        tool_choice: settings.tool_choice.clone(),
        ..Default::default()
    };
    let mut harness_ids: HashSet<String> = HashSet::new();
    let mut finished = false;

    for step in 1..=settings.max_steps {
        let step_started = Instant::now();
        let mut timing = StepTiming {
            step,
            ..StepTiming::default()
        };
        run.steps = step;
        if gateway.tools() != tools {
            run.tool_list_stable = false;
        }
        if let Err(leak) = guard.check(&request, &harness_ids) {
            run.transcript.push(TranscriptEntry::PrincipalLeak {
                step,
                leak: leak.clone(),
            });
            run.outcome = RunOutcome::PrincipalLeak;
            run.error = Some(format!(
                "the {} contains the {} ({}); the request was not sent",
                leak.place, leak.what, leak.token
            ));
            run.leak = Some(leak);
            finished = true;
            break;
        }
        let body = match ChatClient::encode(&request) {
            Ok(b) => b,
            Err(e) => {
                run.outcome = RunOutcome::Error;
                run.error = Some(e.to_string());
                finished = true;
                break;
            }
        };
        let completion = client.complete(body).await;
        let completion = match completion {
            Ok(c) => c,
            Err(e) => {
                for a in e.retries() {
                    run.transcript.push(TranscriptEntry::ModelRetry {
                        step,
                        attempt: a.clone(),
                    });
                }
                run.model_retries += e.retries().len();
                run.transcript.push(TranscriptEntry::ModelError {
                    step,
                    message: e.to_string(),
                });
                run.outcome = RunOutcome::Error;
                run.error = Some(e.to_string());
                timing.total = step_started.elapsed();
                timing.model = timing.total;
                run.timings.push(timing);
                finished = true;
                break;
            }
        };
        timing.model = completion.model_time;
        run.model_retries += completion.retries.len();
        for a in &completion.retries {
            run.transcript.push(TranscriptEntry::ModelRetry {
                step,
                attempt: a.clone(),
            });
        }
        // `complete` guarantees at least one choice.
        let Some(choice) = completion.response.choices.into_iter().next() else {
            run.outcome = RunOutcome::Error;
            run.error = Some("the model returned no choices".into());
            finished = true;
            break;
        };
        let message = choice.message;
        let calls = message.tool_calls.unwrap_or_default();
        if calls.is_empty() {
            let text = message.content.or(message.refusal).unwrap_or_default();
            run.transcript.push(TranscriptEntry::Assistant {
                step,
                content: Some(text.clone()),
                tool_calls: Vec::new(),
            });
            run.final_answer = Some(text);
            run.outcome = RunOutcome::Completed;
            timing.total = step_started.elapsed();
            run.timings.push(timing);
            finished = true;
            break;
        }

        // Normalise ids (some servers send empty or repeated ones) so every result can be paired
        // with its call.
        let mut seen_ids = HashSet::new();
        let mut normalised: Vec<(String, String, String, bool)> = Vec::new(); // id, name, args, is_function
        for (i, call) in calls.into_iter().enumerate() {
            let (id, name, args, is_fn) = match call {
                ChatCompletionMessageToolCalls::Function(c) => {
                    (c.id, c.function.name, c.function.arguments, true)
                }
                ChatCompletionMessageToolCalls::Custom(c) => {
                    (c.id, c.custom_tool.name, c.custom_tool.input, false)
                }
            };
            let id = if id.trim().is_empty() || !seen_ids.insert(id.clone()) {
                let fresh = format!("call_{step}_{i}");
                seen_ids.insert(fresh.clone());
                fresh
            } else {
                id
            };
            normalised.push((id, name, args, is_fn));
        }
        let content = message.content.unwrap_or_default();
        run.transcript.push(TranscriptEntry::Assistant {
            step,
            content: if content.is_empty() {
                None
            } else {
                Some(content.clone())
            },
            tool_calls: normalised
                .iter()
                .map(|(id, name, args, _)| TranscriptToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: args.clone(),
                })
                .collect(),
        });
        // Servers such as llama.cpp reject `content: null` next to tool calls; send "".
        request
            .messages
            .push(ChatCompletionRequestMessage::Assistant(
                ChatCompletionRequestAssistantMessage {
                    content: Some(ChatCompletionRequestAssistantMessageContent::Text(content)),
                    tool_calls: Some(
                        normalised
                            .iter()
                            .map(|(id, name, args, _)| {
                                ChatCompletionMessageToolCalls::Function(
                                    ChatCompletionMessageToolCall {
                                        id: id.clone(),
                                        function: FunctionCall {
                                            name: name.clone(),
                                            arguments: args.clone(),
                                        },
                                    },
                                )
                            })
                            .collect(),
                    ),
                    ..Default::default()
                },
            ));

        for (n, (id, name, raw_args, is_fn)) in normalised.into_iter().enumerate() {
            let call_started = Instant::now();
            let checked = if n >= run.max_tool_calls_per_reply {
                run.tool_calls_over_cap += 1;
                Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "not run: at most {} tool calls are run per reply",
                        run.max_tool_calls_per_reply
                    ),
                    "make the remaining calls in your next reply",
                ))
            } else if is_fn {
                validate_arguments(&tools, &name, &raw_args)
            } else {
                Err(ToolError::new(
                    ErrorCode::ValidationError,
                    "custom (free-form) tool calls are not offered",
                    "call one of the function tools with JSON arguments",
                ))
            };
            let (arguments, origin, result, error) = match checked {
                Err(e) => (Value::Null, ResultOrigin::Harness, None, Some(e)),
                Ok(args) => {
                    let g0 = Instant::now();
                    let r = gateway.call(ctx, &name, args.clone()).await;
                    timing.gateway += g0.elapsed();
                    match r {
                        Ok(v) => (args, ResultOrigin::Gateway, Some(v), None),
                        Err(e) => (args, ResultOrigin::Gateway, None, Some(e)),
                    }
                }
            };
            let text = tool_content(result.as_ref(), error.as_ref());
            if origin == ResultOrigin::Harness {
                harness_ids.insert(id.clone());
            } else {
                run.own_tenant_in_results += guard.own_tenant_mentions(&text);
            }
            run.transcript.push(TranscriptEntry::ToolResult {
                step,
                tool_call_id: id.clone(),
                tool: name.clone(),
                origin,
                error_code: error.as_ref().map(|e| e.code),
                content: text.clone(),
            });
            request.messages.push(ChatCompletionRequestMessage::Tool(
                ChatCompletionRequestToolMessage {
                    content: ChatCompletionRequestToolMessageContent::Text(text),
                    tool_call_id: id.clone(),
                },
            ));
            run.tool_calls.push(ToolCallLog {
                step,
                id,
                tool: name,
                arguments,
                raw_arguments: raw_args,
                origin,
                result,
                error,
                duration: call_started.elapsed(),
            });
        }
        timing.total = step_started.elapsed();
        run.timings.push(timing);
    }
    if !finished {
        run.outcome = RunOutcome::StepLimit;
        run.transcript
            .push(TranscriptEntry::StepLimit { steps: run.steps });
    }
    run.duration = started.elapsed();
    run
}

/// The tool message text: the result JSON, or `{"error": {...}}` for a structured error.
fn tool_content(result: Option<&Value>, error: Option<&ToolError>) -> String {
    match (error, result) {
        (Some(e), _) => serde_json::json!({ "error": e.to_json() }).to_string(),
        (None, Some(v)) => v.to_string(),
        (None, None) => "null".to_string(),
    }
}
