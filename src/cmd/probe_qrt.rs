//! The review self-check of `preflight probe`: QRT-2 … QRT-5 and OPS-8 on the default run's
//! checklist, verified on a short quarter generated through the layer under test.
//!
//! The quarterly review answers its questions from the audit log; a layer verifies these items
//! when it writes a log the review can answer them from. So the phase generates a short quarter
//! (`preflight_review::generate`, scaled down to [`RECORDS`] records over [`DAYS`] days, the same
//! plants at the same fractions of the span) through the built-in layer on this run's database,
//! with this run's `--insecure-fault` faults; runs the review over it (the chain verified first,
//! the run's regression suite for QRT-5); and compares the review's answers with what was
//! planted (`preflight_review::selfcheck`). An item passes only when the review found exactly
//! what was planted; otherwise it fails with the difference as evidence. The generated log, the
//! plants and the review (`review.md`, `review.html`, `review.json`) are kept in
//! `<out>/review-self-check/`.
//!
//! A team's own quarter is checked with `preflight review` over its production log, given to
//! `preflight probe --review FILE`; when given, that takes precedence and this phase does not
//! run. A layer preflight did not write is not generated through: its items stay
//! `not_verified` with that instruction.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::policy;
use preflight_enforcer::Faults;
use preflight_probes::session::Session;
use preflight_reports::{Evidence, Finding, ItemNote, Severity, Verdict};
use preflight_review::generate::{self, GenPlan, Generated, POLICY_AFTER, POLICY_BEFORE};
use preflight_review::selfcheck::{self, ItemCheck, ITEMS};
use preflight_review::source::{review_jsonl, Since};
use preflight_review::{render, Inputs, Review, SuiteResult};

use crate::cmd::probe_phases::{self as phases, PhaseFlags, PhaseOutput, SuitePhase};
use crate::error::CliError;

/// The pseudo-family `--only`/`--skip` accept for this phase.
pub const REVIEW: &str = "review";
/// The generated quarter: enough records over enough days that every plant stands out of the
/// review's baselines (the sink gap must exceed 40 × the mean spacing), few enough that it costs
/// about a second. Measured in docs/performance.md.
pub const RECORDS: u64 = 2_500;
pub const DAYS: i64 = 10;
/// The folder under `--out` with the generated log, the plants and the review.
pub const DIR: &str = "review-self-check";

const OWN_QUARTER: &str = "a team's own quarter is checked with `preflight review` over its \
                           audit log, its review.json given to `preflight probe --review FILE` \
                           (which, when given, takes precedence over this self-check)";

/// What the phase does in this run.
#[derive(Debug)]
pub enum QrtPhase {
    /// Generate and review. `suite`: the regression suite to run here, when the run's suite
    /// phase does not (left out with `--only`/`--skip`); otherwise its result is reused.
    Run {
        suite: Option<SuitePhase>,
    },
    Skip(String),
}

/// Decides the phase from the flags; `review_given` is `--review FILE`.
pub fn phase(
    flags: &PhaseFlags<'_>,
    selected: bool,
    review_given: bool,
) -> Result<QrtPhase, CliError> {
    if flags.self_test {
        return Ok(QrtPhase::Skip(
            "the self-test runs the probe families only".into(),
        ));
    }
    if review_given {
        return Ok(QrtPhase::Skip(
            "--review FILE is given: the team's own review is on this checklist instead".into(),
        ));
    }
    if !selected {
        return Ok(QrtPhase::Skip(format!(
            "the review self-check was left out of this run (--only/--skip); {OWN_QUARTER}"
        )));
    }
    let suite = if flags.suite_selected {
        None
    } else {
        Some(phases::suite_phase(&PhaseFlags {
            suite_selected: true,
            scenarios: flags.scenarios,
            system_prompt: flags.system_prompt,
            cases: flags.cases,
            agent_selected: flags.agent_selected,
            policy_file: flags.policy_file,
            self_test: false,
        })?)
    };
    Ok(QrtPhase::Run { suite })
}

fn notes(why: &str) -> PhaseOutput {
    PhaseOutput {
        notes: ITEMS
            .iter()
            .map(|i| ItemNote::new(*i, why.to_string()))
            .collect(),
        ..PhaseOutput::default()
    }
}

fn faults_text(faults: &Faults) -> String {
    if faults.is_empty() {
        "no fault".into()
    } else {
        format!(
            "faults {}",
            faults
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Runs the self-check; `suite` is the run's regression suite result when its suite phase ran.
pub async fn run(
    phase: QrtPhase,
    session: &Session,
    faults: &Faults,
    suite: Option<SuiteResult>,
    out: &Path,
) -> Result<PhaseOutput, CliError> {
    let own_suite = match phase {
        QrtPhase::Run { suite } => suite,
        QrtPhase::Skip(why) => return Ok(notes(&why)),
    };
    if session.target.is_remote() {
        return Ok(notes(&format!(
            "the review self-check generates a quarter through the built-in layer only; for this layer, {OWN_QUARTER}"
        )));
    }
    if session.database.footprint().is_none()
        || session.database.read_only()
        || !session.database.fixtures_loaded()
    {
        return Ok(notes(&format!(
            "the review self-check writes a generated quarter through the layer on the shop fixtures, so it runs only on a throwaway database with the fixtures (--db auto|container|local); {OWN_QUARTER}"
        )));
    }
    let suite = match (suite, own_suite) {
        (Some(s), _) => s,
        (None, Some(p)) => phases::run_suite(p, session, faults)
            .await?
            .suite
            .unwrap_or_else(|| SuiteResult::NotRun("the regression suite was not run".into())),
        (None, None) => {
            SuiteResult::NotRun("the run's regression suite phase produced no result".into())
        }
    };
    let started = Instant::now();
    let dir = out.join(DIR);
    let mut output = PhaseOutput::default();
    match self_check(session, faults, suite, &dir).await {
        Ok((g, review)) => {
            let checks = match &review {
                Some(r) => selfcheck::compare(r, &g.planted),
                None => ITEMS
                    .iter()
                    .map(|item| ItemCheck {
                        item,
                        found: Vec::new(),
                        differences: vec![format!(
                            "the layer wrote no audit record for the {} calls of the generated quarter: there was nothing to review",
                            g.planted.outcomes.values().sum::<u64>()
                        )],
                    })
                    .collect(),
            };
            let passed = checks.iter().filter(|c| c.differences.is_empty()).count();
            output.findings = checks
                .into_iter()
                .map(|c| item_finding(c, &g, faults, started.elapsed()))
                .collect();
            output.tool_calls = g.planted.outcomes.values().sum();
            phases::status(format!(
                "review: {} records generated through the layer in {:.1} s, reviewed in {:.1} s; {passed} of {} items as planted",
                g.planted.records,
                g.elapsed.as_secs_f64(),
                (started.elapsed() - g.elapsed.min(started.elapsed())).as_secs_f64(),
                ITEMS.len()
            ));
        }
        Err(why) => {
            output.findings = ITEMS.iter().map(|item| error_finding(item, &why)).collect();
        }
    }
    Ok(output)
}

/// Generates the quarter in `dir` and reviews it; `None` for the review when the layer wrote no
/// record at all. `Err` is why the self-check could not run.
async fn self_check(
    session: &Session,
    faults: &Faults,
    suite: SuiteResult,
    dir: &Path,
) -> Result<(Generated, Option<Review>), String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let load = |text: String, name: &str| {
        policy::load_str(
            &text,
            &dir.join(name).display().to_string(),
            Some(&session.catalog),
        )
        .map(Arc::new)
        .map_err(|e| {
            format!("the generated quarter's policy does not load against this database (it needs the shop fixtures' schema): {e}")
        })
    };
    let before = load(generate::policy_before_text(), POLICY_BEFORE)?;
    let after = load(generate::policy_after_text(), POLICY_AFTER)?;
    let plan = GenPlan {
        records: RECORDS,
        days: DAYS,
        concurrency: 8,
        faults: faults.clone(),
        ..GenPlan::default()
    };
    phases::status(format!(
        "review: generating a {DAYS}-day quarter of {RECORDS} calls through the layer ({}) and reviewing it ...",
        faults_text(faults)
    ));
    let g = generate::generate(
        session.database.agent_url(),
        (before.clone(), after.clone()),
        dir,
        &plan,
    )
    .await
    .map_err(|e| format!("the generated quarter could not be produced: {e}"))?;
    if g.planted.records == 0 {
        return Ok((g, None));
    }
    let inputs = Inputs {
        policy: Some((*after).clone()),
        known: vec![(*before).clone(), (*after).clone()],
        suite,
    };
    let log = g.log.clone();
    let review =
        tokio::task::spawn_blocking(move || review_jsonl(&log, &Since::Days(90), "90d", &inputs))
            .await
            .map_err(|e| format!("the review task failed: {e}"))?
            .map_err(|e| format!("the review of the generated quarter could not run: {e}"))?;
    render::write_all(&review, dir)
        .map_err(|e| format!("cannot write the review to {}: {e}", dir.display()))?;
    Ok((g, Some(review)))
}

/// What each item asks of the review.
fn what(item: &str) -> &'static str {
    match item {
        "QRT-2" => "the most common denial and whether it is concentrated or spread",
        "QRT-3" => "the tool that runs longer than its work explains",
        "QRT-4" => "exactly the writes whose reason is not coherent",
        "QRT-5" => "the regression suite, run and passed",
        _ => "the alert windows (audit sink gap, denial spike, write spike)",
    }
}

fn finding(item: &str, verdict: Verdict, message: String, evidence: Evidence) -> Finding {
    let code = format!(
        "review.self_check.{}",
        item.to_ascii_lowercase().replace('-', "_")
    );
    let title = format!(
        "the quarterly review finds {} on a quarter generated through the layer ({item})",
        what(item)
    );
    Finding {
        fingerprint: Finding::fingerprint_for(&code, &title),
        code,
        family: "review".into(),
        title,
        checklist: vec![item.to_string()],
        severity: Severity::Medium,
        verdict,
        message,
        call: None,
        response_excerpt: None,
        evidence,
        location: None,
        duration: Duration::ZERO,
    }
}

fn item_finding(c: ItemCheck, g: &Generated, faults: &Faults, took: Duration) -> Finding {
    let generated = format!(
        "a {DAYS}-day quarter of {} records generated through the built-in layer on this run's database ({}), with planted facts",
        g.planted.records,
        faults_text(faults)
    );
    let evidence = Evidence {
        summary: format!(
            "{generated}: {} (plants: {})",
            g.log.display(),
            g.log.with_file_name(generate::PLANTED_FILE).display()
        ),
        facts: c
            .differences
            .iter()
            .cloned()
            .chain(c.found.iter().map(|f| format!("found: {f}")))
            .collect(),
        ..Evidence::default()
    };
    let mut f = if c.differences.is_empty() {
        finding(
            c.item,
            Verdict::Pass,
            format!(
                "on {generated}, the quarterly review found exactly what was planted: {}. This is a generated quarter, not the team's: {OWN_QUARTER}",
                what(c.item)
            ),
            evidence,
        )
    } else {
        finding(
            c.item,
            Verdict::Fail,
            format!(
                "on {generated}, the quarterly review did not find what was planted ({} difference(s)): {}. This is a generated quarter, not the team's: {OWN_QUARTER}",
                c.differences.len(),
                c.differences[0]
            ),
            evidence,
        )
    };
    f.duration = took;
    f
}

/// The `error` findings of a self-check that could not run (the database went away).
pub fn error_findings(e: &CliError) -> Vec<Finding> {
    ITEMS
        .iter()
        .map(|item| error_finding(item, &e.to_string()))
        .collect()
}

fn error_finding(item: &str, why: &str) -> Finding {
    finding(
        item,
        Verdict::Error,
        format!("the review self-check could not run: {why}; {OWN_QUARTER}"),
        Evidence {
            summary: "nothing was reviewed".into(),
            ..Evidence::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>() -> PhaseFlags<'a> {
        PhaseFlags::every_phase()
    }

    #[test]
    fn the_team_review_takes_precedence_and_the_suite_runs_once() {
        assert!(matches!(
            phase(&flags(), true, true).unwrap(),
            QrtPhase::Skip(why) if why.contains("--review")
        ));
        assert!(matches!(
            phase(&flags(), false, false).unwrap(),
            QrtPhase::Skip(why) if why.contains("preflight review")
        ));
        // The suite phase runs: its result is reused, not run twice (its writes stay).
        assert!(matches!(
            phase(&flags(), true, false).unwrap(),
            QrtPhase::Run { suite: None }
        ));
        let f = PhaseFlags {
            suite_selected: false,
            ..flags()
        };
        assert!(matches!(
            phase(&f, true, false).unwrap(),
            QrtPhase::Run {
                suite: Some(SuitePhase::Run(_))
            }
        ));
    }

    #[test]
    fn a_self_check_that_cannot_run_is_an_error_never_a_pass() {
        let f = error_finding("QRT-3", "the database went away");
        assert_eq!(f.verdict, Verdict::Error);
        assert_eq!(f.checklist, ["QRT-3"]);
        assert!(
            f.message.contains("the database went away"),
            "{}",
            f.message
        );
        assert!(f.message.contains("--review FILE"), "{}", f.message);
    }
}
