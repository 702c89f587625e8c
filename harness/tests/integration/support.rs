//! Shared helpers: run a script against the fake gateway through the real client over HTTP.

use std::time::Duration;

use preflight_enforcer::{CallContext, Principal};
use preflight_harness::agent::{run_agent, AgentRun, AgentSettings};
use preflight_harness::client::{ChatClient, Endpoint, RetryPolicy};
use preflight_harness::guard::PrincipalGuard;
use preflight_harness::providers::{
    FaultPlan, Script, ScriptTurn, ScriptedArguments, ScriptedCall, ScriptedOptions, ScriptedServer,
};
use preflight_harness::testutil::FakeGateway;
use serde_json::Value;

pub fn principal() -> Principal {
    Principal {
        tenant: "acme".into(),
        user: "support-7".into(),
        roles: vec!["support".into()],
    }
}

pub fn call(tool: &str, args: Value) -> ScriptedCall {
    ScriptedCall {
        tool: tool.into(),
        arguments: ScriptedArguments::Json(args),
    }
}

pub fn raw(tool: &str, raw: &str) -> ScriptedCall {
    ScriptedCall {
        tool: tool.into(),
        arguments: ScriptedArguments::Raw(raw.into()),
    }
}

pub fn script(turns: Vec<ScriptTurn>) -> Script {
    Script {
        turns,
        repeat_last: false,
    }
}

/// Fast retries so fault tests take milliseconds, not seconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
        request_timeout: Duration::from_millis(500),
    }
}

pub struct Outcome {
    pub run: AgentRun,
    pub server: ScriptedServer,
    pub gateway: FakeGateway,
}

pub async fn run_script(
    script: Script,
    faults: FaultPlan,
    max_steps: u32,
    task: &str,
    retry: RetryPolicy,
) -> Outcome {
    let gateway = FakeGateway::new();
    let server = ScriptedServer::start(
        script,
        ScriptedOptions {
            faults,
            expected_tools: Some(preflight_enforcer::Gateway::tools(&gateway)),
            model: Some("scripted".into()),
        },
    )
    .await
    .expect("start scripted server");
    let client = ChatClient::new(
        &Endpoint {
            base_url: server.base_url(),
            api_key: Some("sk-test-not-a-real-key".into()),
        },
        retry,
    )
    .expect("client");
    let mut settings = AgentSettings::new("scripted");
    settings.max_steps = max_steps;
    let ctx = CallContext::new(principal());
    let guard = PrincipalGuard::new("acme", "support-7", &["globex".into(), "initech".into()]);
    let run = run_agent(&client, &settings, &gateway, &ctx, task, &guard).await;
    Outcome {
        run,
        server,
        gateway,
    }
}
