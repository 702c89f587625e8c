//! `preflight agent run <file|dir>`: runs agent scenarios through the real tool-calling loop
//! against an enforcement layer on a provisioned database, and writes the report.
//!
//! Flags become a validated [`RunPlan`] before anything starts (no database is provisioned for a
//! malformed scenario file); the run then emits events that are printed as progress lines.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use preflight_enforcer::policy::{Catalog, Policy};
use preflight_enforcer::{Fault, Faults, Gateway};
use preflight_harness::agent::{
    AgentSettings, ResultOrigin, DEFAULT_MAX_TOOL_CALLS_PER_REPLY, DEFAULT_SYSTEM_PROMPT,
};
use preflight_harness::cassette::{Cassette, Recorder};
use preflight_harness::client::{Endpoint, RetryPolicy};
use preflight_harness::evidence::GroundTruth;
use preflight_harness::judge::PolicyView;
use preflight_harness::runner::{self, AgentEvent, Provider, Require, RunPlan};
use preflight_harness::scenario;
use preflight_probes::target::{BuiltinTarget, GatewayFactory};
use preflight_reports::{Report, ReportKind, RunEnvironment, Verdict, REPORT_SCHEMA_VERSION};

use crate::cmd::db_args::{db_error, DbArgs};
use crate::cmd::target_args::TargetArgs;
use crate::error::{CliError, CmdResult, Outcome};
use preflight_probes::target::TargetKind;

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Run scenario files (a file or every *.yaml in a folder) and write the report.
    Run(Box<AgentRunArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// Each scenario's own script, served by a loopback model server.
    Scripted,
    /// A cassette recorded with --record (needs --cassette); no live fallback.
    Replay,
    /// Any OpenAI-compatible server (--base-url, OPENAI_API_KEY, --model).
    Openai,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RequireArg {
    /// A scenario passes only when every repeat passes (pass^k).
    All,
    /// A scenario passes when any repeat passes (pass@k).
    Any,
}

#[derive(Args, Debug)]
pub struct AgentRunArgs {
    /// A scenario file, or a folder of *.yaml scenario files.
    pub path: PathBuf,

    /// Runs per scenario (pass@k and pass^k are reported per scenario).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub repeat: u32,

    /// Runs in flight at once (scenarios that check writes always run alone).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,

    /// Where model replies come from.
    #[arg(long, value_enum, default_value_t = ProviderArg::Scripted)]
    pub provider: ProviderArg,

    /// The OpenAI-compatible API base URL for --provider openai.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub base_url: String,

    /// The model name sent with every request.
    #[arg(long, env = "PREFLIGHT_MODEL", default_value = "gpt-4o-mini")]
    pub model: String,

    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f32>,

    /// Token limit per model reply.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,

    /// Tool calls run per model reply; calls past it get a `validation_error` from the harness
    /// and never reach the layer.
    #[arg(long, default_value_t = DEFAULT_MAX_TOOL_CALLS_PER_REPLY, value_name = "N")]
    pub max_tool_calls: usize,

    /// Record every model exchange of this run into a cassette (.yaml/.yml or JSON); only with
    /// --provider openai. API keys and headers are never recorded.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// The cassette for --provider replay.
    #[arg(long, value_name = "FILE")]
    pub cassette: Option<PathBuf>,

    /// Replace the built-in system prompt with this file.
    #[arg(long, value_name = "FILE")]
    pub system_prompt: Option<PathBuf>,

    /// The policy the built-in layer enforces [default: the fixtures' policy.yaml].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// When a repeated scenario counts as passed.
    #[arg(long, value_enum, default_value_t = RequireArg::All)]
    pub require: RequireArg,

    /// Model API attempts per request (first included) before the run ends as `error`.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_attempts: u32,

    /// Where the report and the transcripts go.
    #[arg(long, default_value = "preflight-agent-report", value_name = "DIR")]
    pub out: PathBuf,

    /// Positive control: switch one enforcement of the built-in layer off (repeatable, e.g.
    /// `--fault no_tenant_predicate`), to see the scenarios catch it. The report's target names
    /// the faults; never use it for a real verdict.
    #[arg(long = "fault", value_name = "FAULT", value_parser = parse_fault)]
    pub faults: Vec<Fault>,

    /// The layer the agent talks to; the model gets the target's own tool list, unedited.
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub db: DbArgs,
}

fn parse_fault(name: &str) -> Result<Fault, String> {
    Fault::ALL
        .into_iter()
        .find(|f| f.as_str() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|f| f.as_str()).collect();
            format!(
                "unknown fault {name:?}; expected one of: {}",
                names.join(", ")
            )
        })
}

pub async fn run(command: AgentCommand) -> CmdResult {
    match command {
        AgentCommand::Run(args) => run_scenarios(*args).await,
    }
}

async fn run_scenarios(args: AgentRunArgs) -> CmdResult {
    let started = Instant::now();
    let started_at = chrono_now();
    let mut plan = plan(&args)?;
    let target = args.target.to_kind()?;
    if !matches!(target, TargetKind::Builtin) && !args.faults.is_empty() {
        return Err(CliError::config(
            "--fault switches off an enforcement of the built-in layer; it cannot be used with another --target",
        ));
    }
    let (db, fixtures) = args.db.to_db()?;

    eprintln!(
        "preflight agent: {} scenario(s) × {} with the {} model, provisioning the database…",
        plan.scenarios.len(),
        plan.repeat,
        plan.provider.name()
    );
    let database = preflight_probes::db::provision(&db, &fixtures)
        .await
        .map_err(db_error)?;
    let owner = database.owner_pool().await.map_err(db_error)?;
    let truth = GroundTruth::load(owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot read ground truth: {e}")))?;
    let policy_file = args
        .policy
        .clone()
        .unwrap_or_else(|| fixtures.dir.join("policy.yaml"));
    let faults: Faults = args.faults.iter().copied().collect();
    let (gateway, remote) = match &target {
        TargetKind::Builtin => {
            let (gateway, policy) = build_gateway(&policy_file, &database, faults.clone()).await?;
            plan.policy = Some(Arc::new(PolicyView::from_policy(&policy)));
            (gateway, None)
        }
        TargetKind::Remote {
            profile,
            profile_dir,
        } => {
            let remote = Arc::new(connect_remote(profile, profile_dir, &database).await?);
            let gw: Arc<dyn Gateway> = remote.clone();
            (gw, Some(remote))
        }
    };

    let on_event = |e: AgentEvent| match e {
        AgentEvent::Started { runs, scenarios } => {
            eprintln!("running {runs} run(s) of {scenarios} scenario(s)");
        }
        AgentEvent::RunFinished {
            done,
            runs,
            scenario,
            repeat,
            verdict,
            outcome,
            steps,
            elapsed,
            note,
        } => {
            eprintln!(
                "[{done}/{runs}] {scenario} #{repeat}: {} ({}, {steps} step(s), {:.1}s){}",
                verdict.as_str(),
                outcome.as_str(),
                elapsed.as_secs_f64(),
                note.map(|n| format!(" — {n}")).unwrap_or_default()
            );
        }
    };
    let results = runner::execute(&plan, gateway.clone(), Some(truth.clone()), &on_event).await;
    let findings = runner::findings(&plan, &results, Some(&truth));

    if let (Some(path), Some(rec)) = (&args.record, &plan.recorder) {
        rec.cassette()
            .save(path)
            .map_err(|e| CliError::infra(e.to_string()))?;
        eprintln!("cassette written to {}", path.display());
    }

    if let Some(r) = &remote {
        r.shutdown().await;
    }
    let health = gateway.health().await;
    let info = database.info().clone();
    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        kind: ReportKind::Agent,
        environment: RunEnvironment {
            preflight_version: env!("CARGO_PKG_VERSION").to_string(),
            policy_path: policy_file.display().to_string(),
            policy_hash: health.policy_hash,
            fixtures_hash: String::new(),
            database_backend: format!("{} ({})", info.kind, info.detail),
            backend_reason: info.reason,
            server_version: info.server_version,
            target: if faults.is_empty() {
                format!("{} with the {} model", gateway.name(), plan.provider.name())
            } else {
                let names: Vec<&str> = faults.iter().map(|f| f.as_str()).collect();
                format!(
                    "{} with the {} model, faults switched on: {}",
                    gateway.name(),
                    plan.provider.name(),
                    names.join(", ")
                )
            },
            started_at,
            not_applicable: Vec::new(),
        },
        // Calls that reached the layer (each has its audit record); calls the harness refused
        // itself (unparsable JSON, unknown tool) never left the process.
        tool_calls: results
            .iter()
            .flat_map(|r| &r.run.tool_calls)
            .filter(|c| c.origin == ResultOrigin::Gateway)
            .count() as u64,
        findings,
        duration: started.elapsed(),
        // No probing phase apart from the run: rates are taken over the whole duration.
        probe_duration: std::time::Duration::ZERO,
    };
    let files = preflight_reports::write_all(&report, &args.out)
        .map_err(|e| CliError::infra(format!("cannot write the report: {e}")))?;
    println!("{}", preflight_reports::summary_table(&report));
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    let passed = report.all_passed() && report.count(Verdict::Pass) == report.findings.len();
    Ok(Outcome::from_all_passed(passed))
}

/// Flags to a validated plan: every usage or file error here, before a database is started.
fn plan(args: &AgentRunArgs) -> Result<RunPlan, CliError> {
    let scenarios = scenario::load_path(&args.path).map_err(CliError::config)?;
    let system_prompt = match &args.system_prompt {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            CliError::config(format!("--system-prompt {}: cannot read: {e}", p.display()))
        })?,
        None => DEFAULT_SYSTEM_PROMPT.to_string(),
    };
    if args.record.is_some() && args.provider != ProviderArg::Openai {
        return Err(CliError::config(
            "--record records a live model; use it with --provider openai",
        ));
    }
    if args.cassette.is_some() && args.provider != ProviderArg::Replay {
        return Err(CliError::config("--cassette is for --provider replay"));
    }
    let provider = match args.provider {
        ProviderArg::Scripted => Provider::Scripted,
        ProviderArg::Replay => {
            let Some(path) = &args.cassette else {
                return Err(CliError::config("--provider replay needs --cassette FILE"));
            };
            Provider::Replay(Arc::new(Cassette::load(path).map_err(CliError::config)?))
        }
        ProviderArg::Openai => Provider::OpenAi(Endpoint {
            base_url: args.base_url.clone(),
            // From the environment only: command lines are visible to other users.
            api_key: std::env::var("OPENAI_API_KEY").ok(),
        }),
    };
    let mut settings = AgentSettings::new(args.model.clone());
    settings.system_prompt = system_prompt;
    settings.temperature = args.temperature;
    settings.max_tokens = args.max_tokens;
    if args.max_tool_calls == 0 {
        return Err(CliError::config("--max-tool-calls must be at least 1"));
    }
    settings.max_tool_calls_per_reply = args.max_tool_calls;
    let plan = RunPlan {
        scenarios,
        repeat: args.repeat,
        jobs: args.jobs,
        provider,
        settings,
        retry: RetryPolicy {
            max_attempts: args.max_attempts.max(1),
            ..RetryPolicy::default()
        },
        recorder: args.record.as_ref().map(|_| Arc::new(Recorder::new())),
        transcripts_dir: Some(args.out.join("transcripts")),
        require: match args.require {
            RequireArg::All => Require::All,
            RequireArg::Any => Require::Any,
        },
        // Set once the policy is loaded against the provisioned database.
        policy: None,
    };
    plan.validate().map_err(CliError::config)?;
    Ok(plan)
}

/// A layer reached through its profile, in its raw view: the agent sees the layer's own tools.
async fn connect_remote(
    profile: &Arc<preflight_targets::Profile>,
    profile_dir: &str,
    database: &preflight_probes::db::Database,
) -> Result<preflight_targets::RemoteGateway, CliError> {
    use preflight_targets::profile::Login;
    let database_url = match profile.login {
        Login::Agent => database.agent_url().to_string(),
        Login::Owner => database.owner_url().to_string(),
        Login::Superuser => database
            .superuser_url()
            .ok_or_else(|| {
                CliError::config(
                    "the profile asks for a superuser login, which this database does not offer",
                )
            })?
            .to_string(),
    };
    let conn = preflight_targets::Connection::new(
        Arc::clone(profile),
        database_url,
        profile_dir.to_string(),
    )
    .map_err(|e| CliError::infra(format!("cannot create the run folder for the target: {e}")))?;
    // The first connection lists the tools; each scenario's principal gets its own as needed.
    let first = preflight_enforcer::Principal {
        tenant: "acme".to_string(),
        user: "preflight-agent".to_string(),
        roles: Vec::new(),
    };
    preflight_targets::RemoteGateway::connect(conn, &first)
        .await
        .map(preflight_targets::RemoteGateway::into_raw)
        .map_err(|e| CliError::infra(format!("cannot reach the target: {e}")))
}

/// The built-in enforcement layer for the policy, checked against the live catalog, started the
/// way `preflight probe` starts it: the policy's audit sinks (the Postgres log in the call's own
/// transaction), its budget store, and the approvals queue in the database. Returns the policy
/// too: the judge reads its hidden fields and relations.
async fn build_gateway(
    policy_file: &Path,
    database: &preflight_probes::db::Database,
    faults: Faults,
) -> Result<(Arc<dyn Gateway>, Policy), CliError> {
    let owner = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot read the catalog: {e}")))?;
    let policy =
        preflight_enforcer::policy::load(policy_file, Some(&catalog)).map_err(CliError::config)?;
    let target = BuiltinTarget::new(database.agent_url(), database.owner_url())
        .map_err(|e| CliError::infra(format!("cannot start the built-in layer: {e}")))?;
    let gateway = target
        .instance(Arc::new(policy.clone()), faults)
        .await
        .map_err(|e| CliError::infra(format!("cannot start the built-in layer: {e}")))?;
    Ok((gateway, policy))
}

fn chrono_now() -> String {
    // RFC 3339 in UTC without pulling chrono into the binary.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("unix:{secs}")
}
