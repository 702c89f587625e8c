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
use preflight_harness::runner::{
    self, AgentEvent, AttemptLayers, Provider, Require, RunPlan, SharedLayer,
};
use preflight_harness::scenario;
use preflight_probes::target::{BuiltinTarget, GatewayFactory};
use preflight_reports::{Report, ReportKind, RunEnvironment, Verdict, REPORT_SCHEMA_VERSION};

use crate::cmd::db_args::{db_error, DbArgs};
use crate::cmd::target_args::TargetArgs;
use crate::error::{CliError, CmdResult, Outcome};
use preflight_probes::target::TargetKind;
use preflight_targets::profile::Transport;

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

    /// The policy the built-in layer enforces [default: the fixtures' policy.yaml]. With another
    /// `--target`, giving it states that the layer enforces this policy: the judge then knows
    /// which fields it hides (without it, hidden-field leaks on such a layer are not judged).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// When a scenario's attempts count as a pass: `all` (every attempt, pass^k), `any` (at
    /// least one, pass@k), or `rate=P` (the 95% Wilson lower bound of the pass rate is at least
    /// P, e.g. `rate=0.9`). The rule is stated in the report.
    #[arg(long, default_value = "all", value_parser = parse_require, value_name = "all|any|rate=P")]
    pub require: Require,

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

fn parse_require(s: &str) -> Result<Require, String> {
    s.parse()
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
    if let preflight_probes::db::Db::Url {
        allow_writes: false,
        ..
    } = &db
    {
        // A staging database is read-only without --allow-writes: a write scenario could only
        // end in an error, so say so before anything runs.
        let writers: Vec<&str> = plan
            .scenarios
            .iter()
            .filter(|s| !s.expect.changed.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        if !writers.is_empty() {
            return Err(CliError::config(format!(
                "scenario(s) {} change rows, and a database given by URL is read-only without --allow-writes; add --allow-writes (each attempt then writes only rows created for it, removed afterwards) or leave those scenarios out",
                writers.join(", ")
            )));
        }
    }

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
    let mut truth = GroundTruth::load(owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot read ground truth: {e}")))?;
    // A staging database's rows are not ours: write scenarios act on copies made per attempt.
    truth.attempt_rows = matches!(db, preflight_probes::db::Db::Url { .. });
    let policy_file = args
        .policy
        .clone()
        .unwrap_or_else(|| fixtures.dir.join("policy.yaml"));
    let faults: Faults = args.faults.iter().copied().collect();
    let (gateway, remote, layers): (_, _, Arc<dyn AttemptLayers>) = match &target {
        TargetKind::Builtin => {
            let (gateway, policy, builtin) =
                build_gateway(&policy_file, &database, faults.clone()).await?;
            plan.policy = Some(Arc::new(PolicyView::from_policy(&policy)));
            let layers = Arc::new(BuiltinLayers {
                target: builtin,
                policy: Arc::new(policy),
                faults: faults.clone(),
            });
            (gateway, None, layers)
        }
        TargetKind::Remote {
            profile,
            profile_dir,
        } => {
            if let Some(stated) = &args.policy {
                let policy = load_policy(stated, &database).await?;
                plan.policy = Some(Arc::new(PolicyView::from_policy(&policy)));
            }
            let (remote, conn) = connect_remote(profile, profile_dir, &database).await?;
            let remote = Arc::new(remote);
            let gw: Arc<dyn Gateway> = remote.clone();
            let layers: Arc<dyn AttemptLayers> =
                if matches!(profile.transport, Transport::McpStdio { .. }) {
                    Arc::new(StdioLayers {
                        conn,
                        open: std::sync::Mutex::new(Vec::new()),
                    })
                } else {
                    Arc::new(SharedLayer(gw.clone()))
                };
            (gw, Some(remote), layers)
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
    let isolated = layers.isolated();
    let results = runner::execute_with(&plan, layers, Some(truth.clone()), &on_event).await;
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
            target: {
                let mut target =
                    format!("{} with the {} model", gateway.name(), plan.provider.name());
                if !faults.is_empty() {
                    let names: Vec<&str> = faults.iter().map(|f| f.as_str()).collect();
                    target.push_str(&format!(", faults switched on: {}", names.join(", ")));
                }
                if !isolated {
                    target.push_str(
                        "; attempts share one layer instance (a layer reached by URL cannot be \
                         started fresh per attempt), so its rate and quota state carries over",
                    );
                }
                target
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
        notes: Vec::new(),
        attempts: runner::attempt_records(&plan, &results, Some(&truth)),
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
        require: args.require,
        // Set once the policy is loaded against the provisioned database.
        policy: None,
    };
    plan.validate().map_err(CliError::config)?;
    Ok(plan)
}

/// A fresh built-in layer per attempt: its own budget, rate-limit and quota counters, the same
/// policy, faults, secret key and database.
struct BuiltinLayers {
    target: BuiltinTarget,
    policy: Arc<Policy>,
    faults: Faults,
}

#[async_trait::async_trait]
impl AttemptLayers for BuiltinLayers {
    async fn layer(&self) -> Result<Arc<dyn Gateway>, String> {
        self.target
            .instance(self.policy.clone(), self.faults.clone())
            .await
            .map_err(|e| preflight_probes::runner::error_chain(&e))
    }

    fn isolated(&self) -> bool {
        true
    }
}

/// A fresh process per attempt for a layer started over MCP stdio, ended after the attempt.
struct StdioLayers {
    conn: preflight_targets::Connection,
    open: std::sync::Mutex<Vec<Arc<preflight_targets::RemoteGateway>>>,
}

#[async_trait::async_trait]
impl AttemptLayers for StdioLayers {
    async fn layer(&self) -> Result<Arc<dyn Gateway>, String> {
        let first = preflight_enforcer::Principal {
            tenant: "acme".to_string(),
            user: "preflight-agent".to_string(),
            roles: Vec::new(),
        };
        let g = preflight_targets::RemoteGateway::connect(self.conn.clone(), &first)
            .await
            .map_err(|e| format!("cannot reach the target: {e}"))?;
        let g = Arc::new(g.into_raw());
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(g.clone());
        Ok(g)
    }

    fn isolated(&self) -> bool {
        true
    }

    async fn release(&self, layer: Arc<dyn Gateway>) {
        let mine = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let at = open
                .iter()
                .position(|g| std::ptr::addr_eq(Arc::as_ptr(g), Arc::as_ptr(&layer)));
            at.map(|i| open.swap_remove(i))
        };
        if let Some(g) = mine {
            g.shutdown().await;
        }
    }
}

/// A layer reached through its profile, in its raw view: the agent sees the layer's own tools.
/// Returns the connection too, for fresh instances of a stdio layer.
async fn connect_remote(
    profile: &Arc<preflight_targets::Profile>,
    profile_dir: &str,
    database: &preflight_probes::db::Database,
) -> Result<
    (
        preflight_targets::RemoteGateway,
        preflight_targets::Connection,
    ),
    CliError,
> {
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
    preflight_targets::RemoteGateway::connect(conn.clone(), &first)
        .await
        .map(|g| (g.into_raw(), conn))
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
) -> Result<(Arc<dyn Gateway>, Policy, BuiltinTarget), CliError> {
    let policy = load_policy(policy_file, database).await?;
    let target = BuiltinTarget::new(database.agent_url(), database.owner_url())
        .map_err(|e| CliError::infra(format!("cannot start the built-in layer: {e}")))?;
    let gateway = target
        .instance(Arc::new(policy.clone()), faults)
        .await
        .map_err(|e| CliError::infra(format!("cannot start the built-in layer: {e}")))?;
    Ok((gateway, policy, target))
}

/// The policy file, checked against the provisioned database's catalog.
async fn load_policy(
    policy_file: &Path,
    database: &preflight_probes::db::Database,
) -> Result<Policy, CliError> {
    let owner = database.owner_pool().await.map_err(db_error)?;
    let catalog = Catalog::read(&owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot read the catalog: {e}")))?;
    preflight_enforcer::policy::load(policy_file, Some(&catalog)).map_err(CliError::config)
}

fn chrono_now() -> String {
    runner::now_iso8601()
}
