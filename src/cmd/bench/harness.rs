//! `preflight bench harness`: the agent loop's own overhead per step with the scripted model, and
//! a concurrency run of many scenario runs.
//!
//! Overhead is each step's wall time minus the HTTP round trip to the model (retries included)
//! and the time inside `Gateway::call`: what is left is the harness itself — building and
//! serializing the request, the principal guard, parsing the reply, argument validation and
//! bookkeeping. The layer is the in-memory test gateway, so no database time is in the loop at
//! all; the figure does not depend on which layer is used, because layer time is subtracted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use preflight_harness::agent::{AgentSettings, RunOutcome};
use preflight_harness::client::RetryPolicy;
use preflight_harness::runner::{self, Provider, Require, RunPlan};
use preflight_harness::scenario;
use preflight_harness::testutil::FakeGateway;

use crate::error::{CliError, CmdResult, Outcome};

/// A five-step scenario: single calls, a validation error the model fixes, several calls in one
/// turn, and a final answer.
const BENCH_SCENARIO: &str = r#"
name: bench
principal: {tenant: acme, user: bench-user, roles: [support]}
task: Where are orders 3 and 4, and what else did that customer order?
max_steps: 8
script:
  - tool_calls:
      - {tool: db_get, arguments: {model: orders, id: 3}}
  - tool_calls:
      - {tool: db_get, raw_arguments: '{"model": "orders", "id": '}
  - tool_calls:
      - {tool: db_get, arguments: {model: orders, id: 4}}
      - {tool: db_query, arguments: {model: orders, where: [{field: customer_id, op: eq, value: 3}], limit: 20}}
      - {tool: db_get, arguments: {model: orders, id: 99}}
  - tool_calls:
      - {tool: db_query, arguments: {model: orders, where: [{field: status, op: eq, value: shipped}], limit: 50}}
  - final: Orders 3 and 4 have shipped; the customer has no other open orders.
"#;

#[derive(Args, Debug)]
pub struct HarnessBenchArgs {
    /// Scenario runs in the concurrency part.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub runs: u32,

    /// Runs in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub jobs: usize,

    /// Sequential runs for the per-step overhead figure (no concurrency noise).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub overhead_runs: u32,

    /// Fail (exit 1) when the median overhead per step exceeds this many milliseconds.
    #[arg(long, default_value_t = 2.0, value_name = "MS")]
    pub max_median_ms: f64,
}

pub async fn run(args: HarnessBenchArgs) -> CmdResult {
    let scenario = scenario::load_str(BENCH_SCENARIO, "<bench>").map_err(CliError::config)?;
    let gateway: Arc<dyn preflight_enforcer::Gateway> = Arc::new(FakeGateway::new());
    let plan = |repeat: u32, jobs: usize| RunPlan {
        scenarios: vec![scenario.clone()],
        repeat,
        jobs,
        provider: Provider::Scripted,
        settings: AgentSettings::new("scripted"),
        retry: RetryPolicy::default(),
        recorder: None,
        transcripts_dir: None,
        require: Require::All,
        policy: None,
    };

    // 1. Per-step overhead, sequential.
    let quiet = |_e: runner::AgentEvent| {};
    let warm = plan(3, 1);
    runner::execute(&warm, gateway.clone(), None, &quiet).await;
    let seq = plan(args.overhead_runs.max(1), 1);
    let results = runner::execute(&seq, gateway.clone(), None, &quiet).await;
    let mut overheads: Vec<Duration> = Vec::new();
    let mut model = Vec::new();
    let mut layer = Vec::new();
    for r in &results {
        for t in &r.run.timings {
            overheads.push(t.overhead());
            model.push(t.model);
            layer.push(t.gateway);
        }
    }
    let steps = overheads.len();
    let median = percentile(&mut overheads, 0.5);
    let p90 = percentile(&mut overheads, 0.9);
    let p99 = percentile(&mut overheads, 0.99);
    let max = overheads.iter().max().copied().unwrap_or_default();
    println!(
        "harness overhead per step (scripted model, {steps} steps over {} runs):",
        results.len()
    );
    println!(
        "  median {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   max {:.3} ms   (goal: median < {:.1} ms)",
        ms(median),
        ms(p90),
        ms(p99),
        ms(max),
        args.max_median_ms
    );
    println!(
        "  for scale: model round trip median {:.3} ms, layer call median {:.3} ms",
        ms(percentile(&mut model, 0.5)),
        ms(percentile(&mut layer, 0.5))
    );

    // 2. Many runs at once.
    let started = Instant::now();
    let many = plan(args.runs.max(1), args.jobs.max(1));
    let results = runner::execute(&many, gateway, None, &quiet).await;
    let errors: Vec<String> = results
        .iter()
        .filter(|r| r.run.outcome != RunOutcome::Completed)
        .map(|r| {
            format!(
                "run {}: {} {}",
                r.repeat,
                r.run.outcome.as_str(),
                r.run.error.clone().unwrap_or_default()
            )
        })
        .collect();
    let wall = started.elapsed();
    println!(
        "{} scenario runs with --jobs {}: {} completed, {} error(s), {:.2} s wall ({:.1} runs/s)",
        results.len(),
        args.jobs,
        results.len() - errors.len(),
        errors.len(),
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64().max(1e-9)
    );
    for e in errors.iter().take(5) {
        println!("  {e}");
    }
    let ok = errors.is_empty() && ms(median) < args.max_median_ms;
    Ok(Outcome::from_all_passed(ok))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[idx.min(v.len() - 1)]
}
