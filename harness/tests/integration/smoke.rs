//! The real-model smoke test: llama-cpp-python's OpenAI-compatible server (code nobody here
//! wrote) serving SmolLM2-135M-Instruct, driven through the real loop with the `openai` provider.
//! It runs only with `PREFLIGHT_LLM_SMOKE=1` (CI sets it after `scripts/setup-llm-smoke.sh`).
//!
//! The model is tiny: it emits well-formed tool calls but rarely finishes a task, so the test
//! asserts what a real server must give — the loop runs, tool calls parse, tool results go back,
//! and the cap stops it — not that the task is solved.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionNamedToolChoice, ChatCompletionToolChoiceOption, FunctionName,
};
use preflight_enforcer::CallContext;
use preflight_harness::agent::{
    run_agent, AgentSettings, ResultOrigin, RunOutcome, TranscriptEntry,
};
use preflight_harness::client::{ChatClient, Endpoint, RetryPolicy};
use preflight_harness::guard::PrincipalGuard;
use preflight_harness::testutil::FakeGateway;

use crate::support::principal;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // The script execs python, so this pid is the server's own.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The last lines of the server's log, for a failure message (a crash in llama.cpp shows there
/// or nowhere).
fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn start_server() -> (Server, String, std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let log = std::env::temp_dir().join(format!("preflight-llm-smoke-{port}.log"));
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new("bash")
        .arg(root.join("scripts/setup-llm-smoke.sh"))
        .arg("--serve")
        .arg(port.to_string())
        .stdout(Stdio::from(log_file.try_clone().expect("log")))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start scripts/setup-llm-smoke.sh --serve");
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/models")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the llama.cpp server did not come up in 300s; log: {}\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (server, base, log)
}

#[tokio::test]
async fn real_model_loop() {
    if std::env::var("PREFLIGHT_LLM_SMOKE").as_deref() != Ok("1") {
        preflight_probes::db::testing::prerequisite_missing(
            "smoke::real_model_loop",
            "the real-model server is not set up: run scripts/setup-llm-smoke.sh and set PREFLIGHT_LLM_SMOKE=1",
        );
        return;
    }
    let (mut server, base_url, log) = start_server().await;
    let client = ChatClient::new(
        &Endpoint {
            base_url,
            api_key: None,
        },
        RetryPolicy {
            request_timeout: Duration::from_secs(180),
            ..RetryPolicy::default()
        },
    )
    .expect("client");
    let gateway = FakeGateway::new();
    let mut settings = AgentSettings::new("smollm2");
    settings.max_steps = 3;
    settings.max_tokens = Some(96);
    settings.temperature = Some(0.0);
    settings.seed = Some(7);
    // Force a tool call each step: the grammar-constrained path of chatml-function-calling is the
    // one real deployments rely on, and it makes the cap, not the model, end the run.
    settings.tool_choice = Some(ChatCompletionToolChoiceOption::Function(
        ChatCompletionNamedToolChoice {
            function: FunctionName {
                name: "db_get".into(),
            },
        },
    ));
    let ctx = CallContext::new(principal());
    let guard = PrincipalGuard::new("acme", "support-7", &["globex".into()]);
    let run = run_agent(
        &client,
        &settings,
        &gateway,
        &ctx,
        "Look up order 3 and tell me its status.",
        &guard,
    )
    .await;

    if run.outcome == RunOutcome::Error {
        let status = server.0.try_wait().ok().flatten();
        panic!(
            "the real server failed: {:?}\nserver exit status: {}\nlast lines of {}:\n{}",
            run.error,
            status.map_or("still running".to_string(), |s| s.to_string()),
            log.display(),
            log_tail(&log)
        );
    }
    assert!(run.steps >= 1);
    // Tool calls parsed into calls with names and arguments.
    assert!(
        !run.tool_calls.is_empty(),
        "no tool call came back: {:?}",
        run.transcript
    );
    assert!(run.tool_calls.iter().all(|c| !c.tool.is_empty()));
    // Tool results went back: every call has a tool message, and the server accepted the next
    // request carrying them (a later step exists or the run completed after them).
    let results = run
        .transcript
        .iter()
        .filter(|e| matches!(e, TranscriptEntry::ToolResult { .. }))
        .count();
    assert_eq!(results, run.tool_calls.len());
    assert!(
        run.steps >= 2 || run.outcome == RunOutcome::Completed,
        "{:?}",
        run.outcome
    );
    assert!(
        run.tool_calls
            .iter()
            .any(|c| c.origin == ResultOrigin::Gateway)
            || run.tool_calls.iter().all(|c| c.error.is_some())
    );
    // The cap stops it.
    assert!(run.steps <= 3);
    assert!(matches!(
        run.outcome,
        RunOutcome::StepLimit | RunOutcome::Completed
    ));
    eprintln!(
        "smoke: outcome {} after {} step(s), {} tool call(s): {:?}",
        run.outcome.as_str(),
        run.steps,
        run.tool_calls.len(),
        run.tool_calls
            .iter()
            .map(|c| (&c.tool, &c.raw_arguments))
            .collect::<Vec<_>>()
    );
}
