//! `preflight probe`: provision a database, load the policy against its catalog, start the
//! enforcement layer, run every probe (or the self-test), show progress and the summary, write
//! the report files, and exit 0 (all passed), 1 (findings), 2 (usage or configuration) or 3
//! (the database or the layer could not be reached — also when it went away mid-run, after the
//! report is written).
//!
//! Raw flags ([`ProbeArgs`]) become a validated [`RunPlan`] before anything starts.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use preflight_enforcer::{Fault, Faults};
use preflight_probes::codes::Family;
use preflight_probes::controls::Control;
use preflight_probes::db::provision;
use preflight_probes::environment;
use preflight_probes::runner::{self, RunOptions};
use preflight_probes::selftest::{run_self_test, VariantResult};
use preflight_probes::session::{Session, SessionError, SessionOptions};
use preflight_reports::{
    write_all, LiveReporter, Report, ReportKind, RunEnvironment, Verdict, REPORT_SCHEMA_VERSION,
};

use crate::cmd::db_args::{db_error, DbArgs};
use crate::cmd::probe_phases::{self as phases, PhaseFlags};
use crate::cmd::probe_qrt;
use crate::cmd::target_args::TargetArgs;
use crate::error::{CliError, CmdResult, Outcome};
use preflight_probes::target::TargetKind;

/// The shipped policy, built in so `preflight probe` works from any folder.
const EMBEDDED_POLICY: &str = include_str!("../../fixtures/shop/policy.yaml");
const DEFAULT_POLICY: &str = "fixtures/shop/policy.yaml";

#[derive(Args, Debug)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// The policy file [default: fixtures/shop/policy.yaml, else the copy built into preflight].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Where the report files go.
    #[arg(long, default_value = "reports/latest", value_name = "DIR")]
    pub out: PathBuf,

    /// Read-only probes run this many at a time (writes always run one at a time).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,

    /// Run only these families (comma-separated): cross_tenant, pii, budget, write, approval,
    /// audit, hygiene, lint, sql (layers with a SQL tool only), server (layers reached by URL),
    /// and the phases after them: agent (the scenarios), suite (the policy's regression suite).
    #[arg(long, value_delimiter = ',', value_name = "FAMILY,...")]
    pub only: Vec<String>,

    /// Skip these families (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "FAMILY,...")]
    pub skip: Vec<String>,

    /// Run every probe instance against the healthy layer and against the deliberately broken
    /// variants it declares, and print the kill matrix; fails unless every instance fails under
    /// each of its controls and every control is undone exactly.
    #[arg(long)]
    pub self_test: bool,

    /// Agent scenarios to run after the probes with the scripted model (LLM-1 … LLM-5)
    /// [default: ./scenarios when it exists].
    #[arg(long, value_name = "DIR")]
    pub scenarios: Option<PathBuf>,

    /// Replace the agent's built-in system prompt with this file for the scenarios.
    #[arg(long, value_name = "FILE")]
    pub system_prompt: Option<PathBuf>,

    /// The policy's regression suite, run after the probes (OPS-3) [default: `<policy>-cases.yaml`
    /// beside the policy file; the built-in suite with the built-in policy].
    #[arg(long, value_name = "FILE")]
    pub cases: Option<PathBuf>,

    /// The quarterly review of the production audit log (`review.json` from `preflight review`,
    /// or its folder): QRT-2 … QRT-5 and OPS-8 on this run's checklist.
    #[arg(long, value_name = "FILE")]
    pub review: Option<PathBuf>,

    /// The lowest verdict that makes the run fail (exit 1): `fail`, `error`, or `not_verified`
    /// (anything but a pass).
    #[arg(long, value_enum, default_value_t = FailOn::NotVerified)]
    pub fail_on: FailOn,

    #[command(flatten)]
    pub target: TargetArgs,

    /// The caller's tenant (tenant A).
    #[arg(long, default_value = "acme", value_name = "TENANT")]
    pub tenant_a: String,

    /// The other tenant whose data A must never reach (tenant B).
    #[arg(long, default_value = "globex", value_name = "TENANT")]
    pub tenant_b: String,

    /// Serves the built-in layer to the server probes with one protection switched off
    /// (`no-token-check`, `no-health`, `no-limits`), for the server probes' own tests. Hidden,
    /// test-only, never in production (see src/cmd/probe_served.rs).
    #[arg(long, value_enum, hide = true)]
    pub insecure_test_variant: Vec<crate::cmd::serve::InsecureVariant>,
    /// Runs the built-in layer under test with one of its faults (`audit_skipped`,
    /// `reason_not_required`, …) in every phase, so the tests can show each item fails on a layer
    /// that really has the flaw. Test-only, hidden, never in production.
    #[arg(long, hide = true, value_name = "FAULT")]
    pub insecure_fault: Vec<String>,
}

/// Which verdicts fail the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Fail,
    Error,
    #[value(name = "not_verified")]
    NotVerified,
}

impl FailOn {
    fn fails(self, v: Verdict) -> bool {
        match v {
            Verdict::Pass => false,
            Verdict::Fail => true,
            Verdict::Error => matches!(self, FailOn::Error | FailOn::NotVerified),
            Verdict::NotVerified => self == FailOn::NotVerified,
        }
    }
}

/// Where the policy text comes from.
#[derive(Clone, Debug)]
enum PolicySource {
    File(PathBuf),
    Embedded,
}

/// The validated plan of one invocation.
#[derive(Clone, Debug)]
pub struct RunPlan {
    families: BTreeSet<Family>,
    /// The agent scenarios after the probes (`agent` in --only/--skip).
    agent: bool,
    /// The regression suite after the probes (`suite` in --only/--skip).
    suite: bool,
    /// The review self-check after them (`review` in --only/--skip).
    review: bool,
    /// The layer under test's faults (`--insecure-fault`).
    faults: Faults,
    policy: PolicySource,
    out: PathBuf,
    jobs: usize,
    fail_on: FailOn,
    self_test: bool,
    target: TargetKind,
    tenant_a: String,
    tenant_b: String,
    /// The built-in layer as the server probes get it: served over HTTP by this run, with the
    /// protections a test switched off.
    served_variant: preflight_serve::http::TestVariant,
}

/// The families named in `--only`/`--skip`, and the phases (`agent`, `suite`) named there.
fn parse_families(
    flag: &str,
    values: &[String],
) -> Result<(BTreeSet<Family>, BTreeSet<&'static str>), CliError> {
    let mut out = BTreeSet::new();
    let mut named = BTreeSet::new();
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        if let Some(phase) = [phases::AGENT, phases::SUITE, probe_qrt::REVIEW]
            .into_iter()
            .find(|p| *p == v)
        {
            named.insert(phase);
            continue;
        }
        match Family::parse(v) {
            Some(f) => {
                out.insert(f);
            }
            None => {
                return Err(CliError::config(format!(
                    "{flag}: unknown family {v:?}; expected one of {}, {}, {}, {}",
                    Family::ALL
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    phases::AGENT,
                    phases::SUITE,
                    probe_qrt::REVIEW
                )))
            }
        }
    }
    Ok((out, named))
}

impl RunPlan {
    pub fn from_args(args: &ProbeArgs) -> Result<RunPlan, CliError> {
        let (only, only_phases) = parse_families("--only", &args.only)?;
        let (skip, skip_phases) = parse_families("--skip", &args.skip)?;
        let restricted = !only.is_empty() || !only_phases.is_empty();
        let target = args.target.to_kind()?;
        let mut families: BTreeSet<Family> = if !restricted {
            default_families(&target, args.self_test)
        } else {
            only
        };
        families.retain(|f| !skip.contains(f));
        let selected = |phase: &str| {
            (!restricted || only_phases.contains(phase)) && !skip_phases.contains(phase)
        };
        let (agent, suite) = (selected(phases::AGENT), selected(phases::SUITE));
        let review = selected(probe_qrt::REVIEW);
        if families.is_empty() && !agent && !suite && !review {
            return Err(CliError::config("--only/--skip leave no family to run"));
        }
        if args.jobs == 0 || args.jobs > 64 {
            return Err(CliError::config(format!(
                "--jobs: expected 1 to 64, got {}",
                args.jobs
            )));
        }
        if !args.insecure_test_variant.is_empty() && !matches!(target, TargetKind::Builtin) {
            return Err(CliError::config(
                "--insecure-test-variant switches a protection off in the layer this run serves; \
                 it runs with --target builtin only",
            ));
        }
        if args.tenant_a == args.tenant_b {
            return Err(CliError::config(
                "--tenant-a and --tenant-b must name two different tenants",
            ));
        }
        let faults = parse_faults(&args.insecure_fault)?;
        if !faults.is_empty() && (args.self_test || !matches!(target, TargetKind::Builtin)) {
            return Err(CliError::config(
                "--insecure-fault breaks the built-in layer under test; it runs with --target builtin and without --self-test",
            ));
        }
        let policy = match &args.policy {
            Some(p) => PolicySource::File(p.clone()),
            None if Path::new(DEFAULT_POLICY).is_file() => {
                PolicySource::File(PathBuf::from(DEFAULT_POLICY))
            }
            None => PolicySource::Embedded,
        };
        Ok(RunPlan {
            families,
            agent,
            suite,
            review,
            faults,
            policy,
            out: args.out.clone(),
            jobs: args.jobs,
            fail_on: args.fail_on,
            self_test: args.self_test,
            target,
            tenant_a: args.tenant_a.clone(),
            tenant_b: args.tenant_b.clone(),
            served_variant: crate::cmd::serve::InsecureVariant::test_variant(
                &args.insecure_test_variant,
            ),
        })
    }
}

/// The families a run selects by default: every one for a layer reached by URL; the same for
/// the built-in layer, whose `server` family runs against it served over HTTP by this run
/// (src/cmd/probe_served.rs), except in the self-test, which cannot break a served layer; a stdio
/// layer has no HTTP endpoint, so its server claims could only be `not_verified` (asked for with
/// `--only server`, they say so).
fn default_families(target: &TargetKind, self_test: bool) -> BTreeSet<Family> {
    let served = matches!(target, TargetKind::Builtin) && !self_test;
    if reached_by_url(target) || served {
        Family::ALL.into_iter().collect()
    } else {
        Family::IN_PROCESS.into_iter().collect()
    }
}

/// `--insecure-fault` names (of `probe` and `serve`), each one of the built-in layer's faults.
pub(crate) fn parse_faults(names: &[String]) -> Result<Faults, CliError> {
    names
        .iter()
        .map(|name| {
            Fault::ALL
                .into_iter()
                .find(|f| f.as_str() == name.trim())
                .ok_or_else(|| {
                    CliError::config(format!(
                        "--insecure-fault: unknown fault `{name}`; expected one of {}",
                        Fault::ALL
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        })
        .collect()
}

/// Whether the layer is reached by URL.
fn reached_by_url(target: &TargetKind) -> bool {
    use preflight_targets::profile::Transport;
    match target {
        TargetKind::Builtin => false,
        TargetKind::Remote { profile, .. } => match profile.transport {
            Transport::McpStdio { .. } => false,
            Transport::McpHttp { .. } | Transport::Http { .. } => true,
        },
    }
}

fn status(line: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    // A closed stderr is not a reason to stop probing.
    let _ = writeln!(err, "{}", line.as_ref());
}

/// The policy text and the path it is reported under.
fn policy_text(source: &PolicySource) -> Result<(String, String), CliError> {
    match source {
        PolicySource::File(p) => std::fs::read_to_string(p)
            .map(|t| (t, p.display().to_string()))
            .map_err(|e| {
                CliError::config(format!("{}: cannot read the policy file: {e}", p.display()))
            }),
        PolicySource::Embedded => Ok((EMBEDDED_POLICY.to_string(), DEFAULT_POLICY.to_string())),
    }
}

fn session_error(e: SessionError) -> CliError {
    let text = runner::error_chain(&e);
    if e.is_config() {
        CliError::Config(text)
    } else {
        CliError::Infra(text)
    }
}

pub async fn run(args: ProbeArgs) -> CmdResult {
    let plan = RunPlan::from_args(&args)?;
    let (db, fixtures) = args.db.to_db()?;
    let (text, policy_path) = policy_text(&plan.policy)?;
    // Scenario and cases files are read before a database is started: a bad one is exit 2.
    let flags = PhaseFlags {
        scenarios: args.scenarios.as_deref(),
        system_prompt: args.system_prompt.as_deref(),
        cases: args.cases.as_deref(),
        agent_selected: plan.agent,
        suite_selected: plan.suite,
        policy_file: match &plan.policy {
            PolicySource::File(p) => Some(p.as_path()),
            PolicySource::Embedded => None,
        },
        self_test: plan.self_test,
    };
    let scenario_phase = phases::scenario_phase(&flags)?;
    let suite_phase = phases::suite_phase(&flags)?;
    let review = args
        .review
        .as_deref()
        .map(crate::cmd::probe_review::read)
        .transpose()?;
    let qrt_phase = probe_qrt::phase(&flags, plan.review, review.is_some())?;
    let started = Instant::now();
    let started_at = environment::now_rfc3339();
    status(format!(
        "preflight {}: starting the database ...",
        env!("CARGO_PKG_VERSION")
    ));
    let database = provision(&db, &fixtures).await.map_err(db_error)?;
    {
        let info = database.info();
        status(format!(
            "database: {} ({}), PostgreSQL {}, ready in {:.1} s",
            info.kind,
            info.detail,
            info.server_version,
            database.timings().total.as_secs_f64()
        ));
    }
    let fixtures_hash = if database.fixtures_loaded() {
        environment::fixtures_hash(&fixtures.dir)
    } else {
        String::new()
    };
    let session = Session::open(
        database,
        &text,
        &policy_path,
        &SessionOptions {
            tenant_a: plan.tenant_a.clone(),
            tenant_b: plan.tenant_b.clone(),
            owner_connections: plan.jobs as u32 + 4,
            target: plan.target.clone(),
        },
    )
    .await
    .map_err(session_error)?;
    let options = RunOptions {
        jobs: plan.jobs,
        ..RunOptions::default()
    };
    if plan.self_test {
        let env = session.environment(fixtures_hash, started_at);
        return self_test(&plan, &session, options, env, started).await;
    }
    let lint = if plan.families.contains(&Family::Lint) {
        session.lint()
    } else {
        Vec::new()
    };
    let ctx = session
        .context(plan.faults.clone())
        .await
        .map_err(session_error)?;
    // After the layer has been reached, so the report names its server and tool list.
    let mut env = session.environment(fixtures_hash, started_at);
    env.not_applicable = session.not_applicable(&ctx, &plan.families);
    // The built-in layer's server claims are taken from it served over HTTP, after the rest.
    let served = plan.families.contains(&Family::Server) && !session.target.is_remote();
    let mut in_process = plan.families.clone();
    if served {
        in_process.remove(&Family::Server);
    }
    let probe_plan = session.plan(&ctx, &in_process, &lint);
    status(format!(
        "probing {} with {} probes in {} families ({} at a time) ...",
        ctx.gateway.name(),
        probe_plan.len(),
        probe_plan.per_family().len(),
        plan.jobs
    ));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = tokio::task::spawn_blocking(move || {
        let mut live = LiveReporter::stderr();
        while let Some(event) = rx.blocking_recv() {
            live.handle(&event);
        }
    });
    let mut result = runner::run(
        &probe_plan,
        Arc::clone(&ctx),
        &options,
        env.clone(),
        Some(tx),
    )
    .await;
    // The sender went away with the run; the reporter drains what is left and stops.
    let _ = reporter.await;
    if served && result.infrastructure_error.is_none() {
        let s = crate::cmd::probe_served::run_served(
            &session,
            &ctx,
            &options,
            env.clone(),
            plan.served_variant,
        )
        .await;
        crate::cmd::probe_served::merge(&mut result, s);
    }

    let mut findings = result.findings;
    let mut notes = Vec::new();
    let mut tool_calls = result.tool_calls;
    // The phases run only when the probes ran to the end (not after an outage). A phase that
    // cannot run becomes an `error` finding on its items; the report is still written and the
    // error decides the exit code afterwards.
    let mut phase_error: Option<CliError> = None;
    let mut suite_result = None;
    if result.infrastructure_error.is_none() {
        let outputs = [
            (
                phases::AGENT,
                phases::run_scenarios(scenario_phase, &session, &plan.faults, &plan.out).await,
            ),
            (
                phases::SUITE,
                phases::run_suite(suite_phase, &session, &plan.faults).await,
            ),
        ];
        for (phase, out) in outputs {
            match out {
                Ok(out) => {
                    suite_result = suite_result.or(out.suite);
                    findings.extend(out.findings);
                    notes.extend(out.notes);
                    tool_calls += out.tool_calls;
                }
                Err(e) => {
                    findings.push(phases::phase_error_finding(phase, &e));
                    phase_error.get_or_insert(e);
                }
            }
        }
    }
    if let Some(r) = &review {
        findings.extend(crate::cmd::probe_review::findings(r));
    } else if result.infrastructure_error.is_none() {
        match probe_qrt::run(qrt_phase, &session, &plan.faults, suite_result, &plan.out).await {
            Ok(out) => {
                findings.extend(out.findings);
                notes.extend(out.notes);
                tool_calls += out.tool_calls;
            }
            Err(e) => {
                findings.extend(probe_qrt::error_findings(&e));
                phase_error.get_or_insert(e);
            }
        }
    }
    notes.extend(phases::other_run_notes(&findings));
    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        kind: ReportKind::Probe,
        environment: env,
        findings,
        duration: started.elapsed(),
        tool_calls,
        probe_duration: result.duration,
        notes,
        attempts: Vec::new(),
    };
    finish_report(&report, &plan.out)?;
    let secs = result.duration.as_secs_f64().max(0.001);
    status(format!(
        "{} findings; the probe families made {} tool calls in {:.1} s ({:.0} calls/s, p50 {:.2} ms per call); {:.1} s from start to report",
        report.findings.len(),
        result.tool_calls,
        secs,
        result.tool_calls as f64 / secs,
        result
            .call_p50
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0),
        started.elapsed().as_secs_f64()
    ));
    if !result.leftover_rows.is_empty() {
        status(format!(
            "error: {} row(s) planted by probes could not be removed: {}",
            result.leftover_rows.len(),
            result.leftover_rows.join("; ")
        ));
    }
    drop(ctx);
    session.target.shutdown().await;
    let remote = session.target.is_remote();
    drop(session);
    if let Some(e) = result.infrastructure_error {
        return Err(CliError::infra(format!(
            "{e}; the report was written to {}",
            plan.out.display()
        )));
    }
    if let Some(e) = phase_error {
        let text = format!("{e}; the report was written to {}", plan.out.display());
        return Err(match e {
            CliError::Config(_) => CliError::Config(text),
            _ => CliError::Infra(text),
        });
    }
    // A layer preflight did not write that answered nothing: no claim was tested either way.
    if remote
        && !report
            .findings
            .iter()
            .any(|f| matches!(f.verdict, Verdict::Pass | Verdict::Fail))
    {
        return Err(CliError::infra(format!(
            "nothing could be probed: the target answered no probe (see the `error` findings); the report was written to {}",
            plan.out.display()
        )));
    }
    // Rows left behind fail the run whatever --fail-on says: the database is not as it was.
    let failing = !result.leftover_rows.is_empty()
        || report
            .findings
            .iter()
            .any(|f| plan.fail_on.fails(f.verdict));
    Ok(Outcome::from_all_passed(
        !failing && !report.findings.is_empty(),
    ))
}

/// Prints the summary table and writes every report file.
fn finish_report(report: &Report, out: &Path) -> Result<(), CliError> {
    let table = preflight_reports::reporter::summary_table_styled(
        report,
        preflight_reports::reporter::color_enabled(std::io::stdout().is_terminal()),
    );
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{table}");
    drop(stdout);
    let paths = write_all(report, out).map_err(|e| {
        CliError::infra(format!(
            "cannot write the report: {}",
            runner::error_chain(&e)
        ))
    })?;
    status(format!(
        "report: {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

async fn self_test(
    plan: &RunPlan,
    session: &Session,
    options: RunOptions,
    environment: RunEnvironment,
    started: Instant,
) -> CmdResult {
    if session.database.read_only() {
        return Err(CliError::config(
            "--self-test changes the database (broken variants, restored afterwards); it needs a \
             throwaway database or --allow-writes",
        ));
    }
    let Some(setup) = session.self_test_setup(options, plan.families.clone()) else {
        return Err(CliError::config(
            "--self-test breaks the built-in layer on purpose; it runs with --target builtin only",
        ));
    };
    let controls = Control::all();
    status(format!(
        "self-test: the healthy layer, then each of {} controls against the probe instances that declare it ...",
        controls.len()
    ));
    let result = run_self_test(&setup, &controls, |v: &VariantResult| {
        let problems = v.problems();
        status(format!(
            "  {:<32} {:>4} probes {:>5.1} s  {}",
            v.control.map(|c| c.name()).unwrap_or("baseline (no fault)"),
            v.findings.len(),
            v.duration.as_secs_f64(),
            if !problems.is_empty() {
                format!("PROBLEM: {}", problems.join("; "))
            } else if v.control.is_none() {
                format!(
                    "{} of {} passed",
                    v.findings
                        .iter()
                        .filter(|f| f.verdict == Verdict::Pass)
                        .count(),
                    v.findings.len()
                )
            } else {
                let survivors = v.survivors().len();
                format!(
                    "killed {} of {}{}; restored exactly",
                    v.targets.len() - survivors,
                    v.targets.len(),
                    if survivors > 0 { " (SURVIVORS)" } else { "" }
                )
            }
        ));
    })
    .await;
    let (instances, killed) = result.kill_totals();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nKill matrix (instances that failed under every control they declare, per probe code):\n\n{}\nkilled {killed} of {instances} instances ({:.0}%) with {} controls",
        result.matrix(),
        if instances == 0 { 0.0 } else { killed as f64 * 100.0 / instances as f64 },
        result.variants.len()
    );
    drop(out);
    let gaps = result.gaps();
    let report = result.to_report(environment);
    finish_report(&report, &plan.out)?;
    status(format!(
        "self-test: {} variants in {:.1} s",
        result.variants.len() + 1,
        started.elapsed().as_secs_f64()
    ));
    if gaps.is_empty() {
        status(format!(
            "self-test passed: all {instances} probe instances fail under their declared controls and pass on the healthy layer; every control was undone exactly"
        ));
        Ok(Outcome::Passed)
    } else {
        status(format!("self-test FAILED ({} gap(s)):", gaps.len()));
        for g in gaps {
            status(format!("  - {g}"));
        }
        Ok(Outcome::Findings)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        probe: ProbeArgs,
    }

    fn plan(args: &[&str]) -> Result<RunPlan, CliError> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        RunPlan::from_args(&Cli::try_parse_from(all).expect("flags parse").probe)
    }

    #[test]
    fn families_are_selected_and_validated() {
        let p = plan(&["--only", "pii,budget"]).unwrap();
        assert_eq!(p.families, BTreeSet::from([Family::Pii, Family::Budget]));
        let p = plan(&["--skip", "lint,hygiene"]).unwrap();
        assert!(!p.families.contains(&Family::Lint) && p.families.contains(&Family::Pii));
        let e = plan(&["--only", "pii,nope"]).unwrap_err();
        assert!(
            matches!(e, CliError::Config(_)) && e.to_string().contains("nope"),
            "{e}"
        );
        let e = plan(&["--only", "pii", "--skip", "pii"]).unwrap_err();
        assert!(e.to_string().contains("no family"), "{e}");
        // The phases after the probes: on by default, chosen like families.
        let p = plan(&[]).unwrap();
        assert!(p.agent && p.suite);
        let p = plan(&["--only", "lint"]).unwrap();
        assert!(!p.agent && !p.suite);
        let p = plan(&["--only", "lint,suite"]).unwrap();
        assert!(!p.agent && p.suite);
        let p = plan(&["--only", "agent"]).unwrap();
        assert!(p.agent && !p.suite && p.families.is_empty());
        let p = plan(&["--skip", "agent"]).unwrap();
        assert!(!p.agent && p.suite && p.families.len() == Family::ALL.len());
    }

    /// The built-in layer's default run has the `server` family (run against the layer served
    /// by the run itself), a layer reached by URL too; a stdio layer and the self-test do not,
    /// and `--only server` asks for it anywhere. The test-only served variants need the
    /// built-in layer.
    #[test]
    fn the_server_family_runs_by_default_for_the_builtin_layer_and_a_layer_reached_by_url() {
        let p = plan(&[]).unwrap();
        assert!(p.families.contains(&Family::Server));
        assert_eq!(
            p.served_variant,
            preflight_serve::http::TestVariant::default()
        );
        let p = plan(&["--target", "mcp-http", "http://127.0.0.1:9/mcp"]).unwrap();
        assert!(p.families.contains(&Family::Server));
        let p = plan(&["--target", "mcp-stdio", "--", "layer"]).unwrap();
        assert!(!p.families.contains(&Family::Server));
        assert!(!plan(&["--self-test"])
            .unwrap()
            .families
            .contains(&Family::Server));
        let p = plan(&["--only", "server"]).unwrap();
        assert_eq!(p.families, BTreeSet::from([Family::Server]));
        let p = plan(&["--insecure-test-variant", "no-limits"]).unwrap();
        assert!(p.served_variant.no_limits && !p.served_variant.no_health);
        let e = plan(&[
            "--insecure-test-variant",
            "no-health",
            "--target",
            "mcp-http",
            "http://127.0.0.1:9/mcp",
        ])
        .unwrap_err();
        assert!(matches!(e, CliError::Config(_)), "{e}");
    }

    #[test]
    fn bad_jobs_and_tenants_are_usage_errors() {
        assert!(plan(&["--jobs", "0"]).is_err());
        assert!(plan(&["--tenant-a", "x", "--tenant-b", "x"]).is_err());
    }

    /// The review self-check is a phase like the suite; `--insecure-fault` breaks the built-in
    /// layer under test only, and names one of its faults.
    #[test]
    fn the_review_phase_and_insecure_faults_are_planned() {
        assert!(plan(&[]).unwrap().review);
        assert!(!plan(&["--only", "lint"]).unwrap().review);
        let p = plan(&["--only", "review", "--insecure-fault", "audit_skipped"]).unwrap();
        assert!(p.review && p.families.is_empty() && !p.suite);
        assert!(p.faults.has(Fault::AuditSkipped));
        let e = plan(&["--insecure-fault", "nope"]).unwrap_err();
        assert!(e.to_string().contains("audit_reason_dropped"), "{e}");
        assert!(plan(&["--insecure-fault", "mask_off", "--self-test"]).is_err());
        assert!(plan(&[
            "--insecure-fault",
            "mask_off",
            "--target",
            "mcp-http",
            "http://127.0.0.1:9/mcp"
        ])
        .is_err());
    }

    #[test]
    fn fail_on_thresholds() {
        assert!(!FailOn::Fail.fails(Verdict::Error));
        assert!(FailOn::Error.fails(Verdict::Error));
        assert!(!FailOn::Error.fails(Verdict::NotVerified));
        assert!(FailOn::NotVerified.fails(Verdict::NotVerified));
        assert!(!FailOn::NotVerified.fails(Verdict::Pass));
    }
}
