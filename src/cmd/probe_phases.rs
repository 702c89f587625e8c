//! What `preflight probe` runs after the probe families, so that one run writes one complete
//! checklist: the agent scenarios with the scripted model (LLM-1 … LLM-5, judged by the harness
//! from evidence) and the policy's regression suite (OPS-3). Items no finding of the run can
//! verify get a note on the checklist saying why, and what run would verify them.
//!
//! Both phases run on the run's own throwaway database, after the probes (which put every row
//! back), against a fresh instance of the built-in layer with the policy as written: first the
//! scenarios (they act on the fixtures' rows; the harness undoes their writes), then the
//! regression suite (its writes stay). Against another layer or a database given by URL they do
//! not run, and the checklist says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::policy::{self, Cases};
use preflight_enforcer::Faults;
use preflight_harness::agent::{AgentSettings, ResultOrigin, DEFAULT_SYSTEM_PROMPT};
use preflight_harness::client::RetryPolicy;
use preflight_harness::evidence::GroundTruth as AgentTruth;
use preflight_harness::judge::PolicyView;
use preflight_harness::runner::{self as agent_runner, AgentEvent, Provider, Require};
use preflight_harness::scenario::{self, Scenario};
use preflight_probes::session::Session;
use preflight_reports::{Evidence, Finding, ItemNote, Location, Severity, Verdict};
use preflight_review::SuiteResult;

use crate::cmd::db_args::db_error;
use crate::error::CliError;

/// The shipped regression suite, for the built-in copy of the shipped policy.
const EMBEDDED_CASES: &str = include_str!("../../fixtures/shop/policy-cases.yaml");
const DEFAULT_CASES: &str = "fixtures/shop/policy-cases.yaml";
/// Where scenarios are looked for when `--scenarios` is not given.
pub const DEFAULT_SCENARIOS: &str = "scenarios";

/// The pseudo-families `--only`/`--skip` accept besides the probe families.
pub const AGENT: &str = "agent";
pub const SUITE: &str = "suite";

/// The LLM items the scenarios verify.
const LLM_ITEMS: [&str; 5] = ["LLM-1", "LLM-2", "LLM-3", "LLM-4", "LLM-5"];

/// The agent scenarios of this run, or why there are none.
#[derive(Debug)]
pub enum ScenarioPhase {
    Run {
        dir: PathBuf,
        scenarios: Vec<Scenario>,
        system_prompt: String,
    },
    Skip(String),
}

/// The regression suite of this run, or why there is none.
#[derive(Debug)]
pub enum SuitePhase {
    Run(Box<Cases>),
    /// The policy has none: OPS-3 fails.
    Missing(String),
    Skip(String),
}

/// The flags the phases are decided from.
pub struct PhaseFlags<'a> {
    pub scenarios: Option<&'a Path>,
    pub system_prompt: Option<&'a Path>,
    pub cases: Option<&'a Path>,
    /// `--only`/`--skip` leave the scenarios in.
    pub agent_selected: bool,
    /// `--only`/`--skip` leave the suite in.
    pub suite_selected: bool,
    /// The policy file, `None` for the built-in copy.
    pub policy_file: Option<&'a Path>,
    pub self_test: bool,
}

#[cfg(test)]
impl PhaseFlags<'_> {
    /// The default run's flags: every phase selected, no files given (for unit tests).
    pub(crate) fn every_phase() -> Self {
        PhaseFlags {
            scenarios: None,
            system_prompt: None,
            cases: None,
            agent_selected: true,
            suite_selected: true,
            policy_file: None,
            self_test: false,
        }
    }
}

/// Decides the scenario phase from the flags; a malformed scenario or prompt file is a usage
/// error here, before any database is started.
pub fn scenario_phase(flags: &PhaseFlags<'_>) -> Result<ScenarioPhase, CliError> {
    if flags.self_test {
        return Ok(ScenarioPhase::Skip(
            "the self-test runs the probe families only".into(),
        ));
    }
    if !flags.agent_selected {
        if flags.scenarios.is_some() {
            return Err(CliError::config(
                "--scenarios is given but --only/--skip leave out `agent`",
            ));
        }
        return Ok(ScenarioPhase::Skip(
            "the agent scenarios were left out of this run (--only/--skip)".into(),
        ));
    }
    let dir = match flags.scenarios {
        Some(d) => d.to_path_buf(),
        None if Path::new(DEFAULT_SCENARIOS).is_dir() => PathBuf::from(DEFAULT_SCENARIOS),
        None => {
            return Ok(ScenarioPhase::Skip(format!(
                "no `{DEFAULT_SCENARIOS}/` folder here and no --scenarios DIR, so no agent scenario ran"
            )))
        }
    };
    let scenarios = scenario::load_path(&dir).map_err(CliError::config)?;
    if scenarios.is_empty() {
        return Err(CliError::config(format!(
            "--scenarios {}: no scenario files (*.yaml) in it",
            dir.display()
        )));
    }
    let system_prompt = match flags.system_prompt {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            CliError::config(format!("--system-prompt {}: cannot read: {e}", p.display()))
        })?,
        None => DEFAULT_SYSTEM_PROMPT.to_string(),
    };
    Ok(ScenarioPhase::Run {
        dir,
        scenarios,
        system_prompt,
    })
}

/// `policy.yaml` → `policy-cases.yaml` beside it.
fn cases_beside(policy_file: &Path) -> PathBuf {
    let stem = policy_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".into());
    policy_file.with_file_name(format!("{stem}-cases.yaml"))
}

fn load_cases(path: &Path) -> Result<Cases, CliError> {
    policy::load_cases(path).map_err(|e| {
        CliError::config(format!(
            "the regression suite {} is not valid ({} problem{}):\n{e}",
            path.display(),
            e.len(),
            if e.len() == 1 { "" } else { "s" }
        ))
    })
}

/// Decides the suite phase from the flags; a malformed cases file is a usage error.
pub fn suite_phase(flags: &PhaseFlags<'_>) -> Result<SuitePhase, CliError> {
    if flags.self_test {
        return Ok(SuitePhase::Skip(
            "the self-test runs the probe families only".into(),
        ));
    }
    if !flags.suite_selected {
        if flags.cases.is_some() {
            return Err(CliError::config(
                "--cases is given but --only/--skip leave out `suite`",
            ));
        }
        return Ok(SuitePhase::Skip(
            "the regression suite was left out of this run (--only/--skip)".into(),
        ));
    }
    if let Some(path) = flags.cases {
        return Ok(SuitePhase::Run(Box::new(load_cases(path)?)));
    }
    match flags.policy_file {
        Some(policy_file) => {
            let beside = cases_beside(policy_file);
            if beside.is_file() {
                Ok(SuitePhase::Run(Box::new(load_cases(&beside)?)))
            } else {
                Ok(SuitePhase::Missing(format!(
                    "the policy has no regression suite: no {} beside it and no --cases FILE",
                    beside.display()
                )))
            }
        }
        None => policy::load_cases_str(EMBEDDED_CASES, DEFAULT_CASES)
            .map(|c| SuitePhase::Run(Box::new(c)))
            .map_err(|e| CliError::config(format!("the built-in regression suite: {e}"))),
    }
}

pub(crate) fn status(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// What a phase adds to the report.
#[derive(Default)]
pub struct PhaseOutput {
    pub findings: Vec<Finding>,
    pub notes: Vec<ItemNote>,
    pub tool_calls: u64,
    /// The regression suite's result, for the review self-check (QRT-5).
    pub suite: Option<SuiteResult>,
}

impl PhaseOutput {
    fn note_all(&mut self, items: &[&str], note: &str) {
        self.notes
            .extend(items.iter().map(|i| ItemNote::new(*i, note.to_string())));
    }
}

/// Runs the scenarios against a fresh instance of the layer with the policy as written (and the
/// run's `--insecure-fault` faults), the scripted model serving each scenario's turns over
/// loopback HTTP; transcripts go to `out/transcripts/`.
pub async fn run_scenarios(
    phase: ScenarioPhase,
    session: &Session,
    faults: &Faults,
    out: &Path,
) -> Result<PhaseOutput, CliError> {
    let mut output = PhaseOutput::default();
    let (dir, scenarios, system_prompt) = match phase {
        ScenarioPhase::Run {
            dir,
            scenarios,
            system_prompt,
        } => (dir, scenarios, system_prompt),
        ScenarioPhase::Skip(why) => {
            output.note_all(&LLM_ITEMS, &why);
            return Ok(output);
        }
    };
    if session.target.is_remote() {
        output.note_all(
            &LLM_ITEMS,
            "`preflight probe` runs the agent scenarios against the built-in layer only; run `preflight agent run DIR --target ...` for this layer",
        );
        return Ok(output);
    }
    if session.database.footprint().is_none() || !session.database.fixtures_loaded() {
        output.note_all(
            &LLM_ITEMS,
            "the scenarios act on the shop fixtures' own rows (and some write to them), so they run only on a throwaway database with the fixtures (--db auto|container|local)",
        );
        return Ok(output);
    }
    let owner = session.database.owner_pool().await.map_err(db_error)?;
    let truth = AgentTruth::load(owner)
        .await
        .map_err(|e| CliError::infra(format!("cannot read ground truth for the agent: {e}")))?;
    let gateway = session
        .target
        .gateway(Arc::clone(&session.policy), faults.clone())
        .await
        .map_err(|e| CliError::infra(format!("cannot start the layer for the agent: {e}")))?;
    let mut settings = AgentSettings::new("preflight-scripted");
    settings.system_prompt = system_prompt;
    let plan = agent_runner::RunPlan {
        scenarios,
        repeat: 1,
        jobs: 4,
        provider: Provider::Scripted,
        settings,
        retry: RetryPolicy::default(),
        recorder: None,
        transcripts_dir: Some(out.join("transcripts")),
        require: Require::All,
        policy: Some(Arc::new(PolicyView::from_policy(&session.policy))),
    };
    plan.validate().map_err(CliError::config)?;
    status(format!(
        "agent: {} scenario(s) from {} with the scripted model ...",
        plan.scenarios.len(),
        dir.display()
    ));
    let started = Instant::now();
    let on_event = |e: AgentEvent| {
        if let AgentEvent::RunFinished {
            done,
            runs,
            scenario,
            verdict,
            steps,
            ..
        } = e
        {
            status(format!(
                "  [{done}/{runs}] {scenario}: {} ({steps} step(s))",
                verdict.as_str()
            ));
        }
    };
    let results = agent_runner::execute(&plan, gateway, Some(truth.clone()), &on_event).await;
    output.findings = agent_runner::findings(&plan, &results, Some(&truth));
    output.tool_calls = results
        .iter()
        .flat_map(|r| &r.run.tool_calls)
        .filter(|c| c.origin == ResultOrigin::Gateway)
        .count() as u64;
    status(format!(
        "agent: {} finding(s) in {:.1} s",
        output.findings.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(output)
}

const SUITE_CODE: &str = "policy.regression_suite";
const SUITE_TITLE: &str = "the policy's regression suite passes against the layer";

fn suite_finding(verdict: Verdict, message: String, evidence: Evidence) -> Finding {
    Finding {
        code: SUITE_CODE.into(),
        family: "policy".into(),
        fingerprint: Finding::fingerprint_for(SUITE_CODE, SUITE_TITLE),
        title: SUITE_TITLE.into(),
        checklist: vec!["OPS-3".into()],
        severity: Severity::High,
        verdict,
        message,
        call: None,
        response_excerpt: None,
        evidence,
        location: None,
        duration: Duration::ZERO,
    }
}

/// Runs the regression suite against a fresh instance of the layer with the policy as written
/// (and the run's `--insecure-fault` faults).
pub async fn run_suite(
    phase: SuitePhase,
    session: &Session,
    faults: &Faults,
) -> Result<PhaseOutput, CliError> {
    let mut output = PhaseOutput::default();
    let cases = match phase {
        SuitePhase::Run(c) => c,
        SuitePhase::Missing(why) => {
            output.suite = Some(SuiteResult::NotRun(why.clone()));
            output.findings.push(suite_finding(
                Verdict::Fail,
                format!(
                    "{why}; write one (see docs/policy.md, \"Regression cases\") that asserts which calls succeed and which fail"
                ),
                Evidence {
                    summary: "no regression suite to run".into(),
                    ..Evidence::default()
                },
            ));
            return Ok(output);
        }
        SuitePhase::Skip(why) => {
            output.note_all(&["OPS-3"], &why);
            return Ok(output);
        }
    };
    if session.target.is_remote() {
        output.note_all(
            &["OPS-3"],
            "`preflight probe` runs the regression suite against the built-in layer only: its cases expect the built-in layer's error codes",
        );
        return Ok(output);
    }
    if session.database.footprint().is_none() || session.database.read_only() {
        output.note_all(
            &["OPS-3"],
            "the regression suite writes through the layer and its writes stay, so it runs only on a throwaway database (--db auto|container|local); run `preflight policy test` there",
        );
        return Ok(output);
    }
    let gateway = session
        .target
        .gateway(Arc::clone(&session.policy), faults.clone())
        .await
        .map_err(|e| CliError::infra(format!("cannot start the layer for the suite: {e}")))?;
    status(format!(
        "suite: {} regression case(s) from {} ...",
        cases.cases.len(),
        cases.path
    ));
    let started = Instant::now();
    let report = policy::run_cases(gateway.as_ref(), &cases).await;
    let coverage = policy::coverage(&session.policy, &cases);
    output.tool_calls = report.outcomes.len() as u64;
    let mut evidence = Evidence {
        summary: format!(
            "{} of {} case(s) passed against {}; {} of {} policy rules exercised",
            report.passed(),
            report.outcomes.len(),
            report.gateway,
            coverage.exercised_count(),
            coverage.items.len()
        ),
        ..Evidence::default()
    };
    let failed: Vec<&policy::CaseOutcome> = report.outcomes.iter().filter(|o| !o.passed).collect();
    output.suite = Some(SuiteResult::Ran {
        cases: cases.path.clone(),
        passed: report.passed() as u64,
        failed: report.failed() as u64,
        failures: failed
            .iter()
            .map(|o| {
                format!(
                    "line {}: {}: expected {}, got {}",
                    o.line, o.name, o.expected, o.actual
                )
            })
            .collect(),
    });
    evidence.facts = failed
        .iter()
        .take(20)
        .map(|o| {
            format!(
                "{}:{}: {}: expected {}, got {}{}",
                cases.path,
                o.line,
                o.name,
                o.expected,
                o.actual,
                if o.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.detail)
                }
            )
        })
        .collect();
    let mut finding = if report.outcomes.is_empty() {
        suite_finding(
            Verdict::Fail,
            format!("the regression suite {} has no cases", cases.path),
            evidence,
        )
    } else if failed.is_empty() {
        suite_finding(
            Verdict::Pass,
            format!(
                "all {} regression cases of {} hold against the layer",
                report.outcomes.len(),
                cases.path
            ),
            evidence,
        )
    } else {
        suite_finding(
            Verdict::Fail,
            format!(
                "{} of {} regression cases of {} do not hold: the layer no longer does what the suite asserts",
                failed.len(),
                report.outcomes.len(),
                cases.path
            ),
            evidence,
        )
    };
    finding.duration = started.elapsed();
    finding.location = failed.first().map(|o| Location {
        path: cases.path.clone(),
        line: o.line,
        column: 1,
    });
    status(format!(
        "suite: {} passed, {} failed in {:.1} s",
        report.passed(),
        report.failed(),
        started.elapsed().as_secs_f64()
    ));
    Ok(output_with(output, finding))
}

fn output_with(mut output: PhaseOutput, finding: Finding) -> PhaseOutput {
    output.findings.push(finding);
    output
}

/// The `error` finding of a phase that could not run (the database went away, the layer could
/// not be started): its items are not verified, and the finding says why.
pub fn phase_error_finding(phase: &str, e: &CliError) -> Finding {
    let (code, title, items): (&str, &str, Vec<String>) = if phase == AGENT {
        (
            "agent.phase",
            "the agent scenarios ran",
            LLM_ITEMS.iter().map(|s| s.to_string()).collect(),
        )
    } else {
        (SUITE_CODE, SUITE_TITLE, vec!["OPS-3".to_string()])
    };
    Finding {
        code: code.into(),
        family: if phase == AGENT { "agent" } else { "policy" }.into(),
        fingerprint: Finding::fingerprint_for(code, title),
        title: title.into(),
        checklist: items,
        severity: Severity::High,
        verdict: Verdict::Error,
        message: format!("the {phase} phase could not run: {e}"),
        call: None,
        response_excerpt: None,
        evidence: Evidence {
            summary: "nothing was judged".into(),
            ..Evidence::default()
        },
        location: None,
        duration: Duration::ZERO,
    }
}

/// Notes for items only another kind of run can verify, added when no finding of this run cites
/// them (the server family, when it ran, speaks for OPS-4 and OPS-6 itself).
pub fn other_run_notes(findings: &[Finding]) -> Vec<ItemNote> {
    let served = "a property of a served layer (its HTTP endpoint), and no server probe ran on \
                  this run: the built-in layer's default run serves it and probes it itself \
                  unless --only/--skip leave out `server`; another layer is served \
                  (`preflight serve --mcp http` for ours) and probed through its URL \
                  (`preflight probe --target mcp-http URL`)";
    let review = "computed from the production audit log by `preflight review` (the quarterly \
                  review); give its review.json to this run with --review FILE to put it on this \
                  checklist";
    let mut notes = vec![
        ItemNote::new("OPS-4", format!("a health endpoint is {served}")),
        ItemNote::new(
            "OPS-6",
            format!("rate limiting in front of the agent endpoint is {served}"),
        ),
    ];
    for id in ["QRT-2", "QRT-3", "QRT-4", "QRT-5", "OPS-8"] {
        notes.push(ItemNote::new(id, review));
    }
    notes
        .into_iter()
        .filter(|n| !findings.iter().any(|f| f.checklist.contains(&n.item)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>() -> PhaseFlags<'a> {
        PhaseFlags::every_phase()
    }

    #[test]
    fn the_suite_is_found_beside_the_policy_or_is_missing() {
        assert_eq!(
            cases_beside(Path::new("fixtures/shop/policy.yaml")),
            PathBuf::from("fixtures/shop/policy-cases.yaml")
        );
        let dir = tempfile::tempdir().unwrap();
        let policy_file = dir.path().join("agent.yaml");
        let f = PhaseFlags {
            policy_file: Some(&policy_file),
            ..flags()
        };
        match suite_phase(&f).unwrap() {
            SuitePhase::Missing(why) => assert!(why.contains("agent-cases.yaml"), "{why}"),
            other => panic!("expected Missing, got {other:?}"),
        }
        std::fs::write(dir.path().join("agent-cases.yaml"), "cases: [").unwrap();
        let e = suite_phase(&f).unwrap_err();
        assert!(
            matches!(e, CliError::Config(_)) && e.to_string().contains("agent-cases.yaml"),
            "{e}"
        );
        // The built-in policy brings the built-in suite.
        assert!(matches!(suite_phase(&flags()).unwrap(), SuitePhase::Run(_)));
        let f = PhaseFlags {
            suite_selected: false,
            ..flags()
        };
        assert!(matches!(suite_phase(&f).unwrap(), SuitePhase::Skip(_)));
    }

    #[test]
    fn a_scenario_folder_that_breaks_the_step_cap_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("loop.yaml"),
            "name: loop\nprincipal: {tenant: acme, user: u}\ntask: t\nmax_steps: 13\nscript:\n  - final: done\n",
        )
        .unwrap();
        let f = PhaseFlags {
            scenarios: Some(dir.path()),
            ..flags()
        };
        let e = scenario_phase(&f).unwrap_err();
        assert!(e.to_string().contains("LLM-2"), "{e}");
        let f = PhaseFlags {
            scenarios: Some(dir.path()),
            agent_selected: false,
            ..flags()
        };
        assert!(
            scenario_phase(&f).is_err(),
            "--scenarios with agent left out"
        );
    }

    #[test]
    fn a_phase_that_cannot_run_is_an_error_on_its_items_never_a_pass() {
        let e = CliError::infra("the database went away");
        let f = phase_error_finding(AGENT, &e);
        assert_eq!(f.verdict, Verdict::Error);
        assert_eq!(f.checklist, LLM_ITEMS);
        assert!(
            f.message.contains("the database went away"),
            "{}",
            f.message
        );
        let f = phase_error_finding(SUITE, &e);
        assert_eq!((f.code.as_str(), f.verdict), (SUITE_CODE, Verdict::Error));
        assert_eq!(f.checklist, ["OPS-3"]);
    }

    #[test]
    fn other_runs_are_noted_only_for_items_nothing_cites() {
        let notes = other_run_notes(&[]);
        let ids: Vec<&str> = notes.iter().map(|n| n.item.as_str()).collect();
        assert_eq!(
            ids,
            ["OPS-4", "OPS-6", "QRT-2", "QRT-3", "QRT-4", "QRT-5", "OPS-8"]
        );
        let mut f = suite_finding(Verdict::Pass, "x".into(), Evidence::default());
        f.checklist = vec!["OPS-4".into()];
        let notes = other_run_notes(&[f]);
        assert!(notes.iter().all(|n| n.item != "OPS-4"));
    }
}
