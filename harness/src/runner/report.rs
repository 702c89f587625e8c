//! Report findings from attempts: per scenario the attempts, passes, pass@k and pass^k with 95%
//! Wilson intervals and a `flaky` label, the verdict rule, and per check the worst verdict with
//! whose failure it was.

use std::collections::BTreeSet;
use std::time::Duration;

use preflight_reports::{Evidence, Finding, Severity, ToolCallRecord, Verdict};

use super::attribution::{attribute, FailureKind};
use super::stats::{wilson, Interval};
use super::{worst, Require, RunPlan, RunResult};
use crate::evidence::GroundTruth;
use crate::judge::{Check, CheckKind};
use crate::scenario::Scenario;
use crate::transcript::Scrubber;

/// What the attempts of one scenario add up to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PassRates {
    /// Attempts (k).
    pub k: usize,
    pub passed: usize,
    /// At least one of the k attempts passed (observed pass@k).
    pub pass_at_k: bool,
    /// Every one of the k attempts passed (observed pass^k).
    pub pass_pow_k: bool,
    /// The per-attempt pass rate with its 95% Wilson interval.
    pub rate: Interval,
    /// Attempts disagree: some passed, some did not.
    pub flaky: bool,
}

impl PassRates {
    /// pass@k for a fresh set of k attempts, from the rate's interval: 1 − (1 − p)^k.
    pub fn pass_at_k_interval(&self) -> Interval {
        let k = self.k as i32;
        self.rate.map(|p| 1.0 - (1.0 - p).powi(k))
    }

    /// pass^k for a fresh set of k attempts, from the rate's interval: p^k.
    pub fn pass_pow_k_interval(&self) -> Interval {
        let k = self.k as i32;
        self.rate.map(|p| p.powi(k))
    }
}

pub fn pass_rates(results: &[&RunResult]) -> PassRates {
    let passed = results
        .iter()
        .filter(|r| r.verdict == Verdict::Pass)
        .count();
    PassRates {
        k: results.len(),
        passed,
        pass_at_k: passed > 0,
        pass_pow_k: passed == results.len() && !results.is_empty(),
        rate: wilson(passed, results.len()),
        flaky: passed > 0 && passed < results.len(),
    }
}

impl Require {
    /// Whether a scenario with these attempts passes.
    pub fn holds(self, rates: &PassRates) -> bool {
        match self {
            Require::All => rates.pass_pow_k,
            Require::Any => rates.pass_at_k,
            Require::MinRate { per_mille } => {
                rates.k > 0 && rates.rate.low * 1000.0 >= f64::from(per_mille) - 1e-9
            }
        }
    }

    /// The rule in words, for the report.
    pub fn describe(self) -> String {
        match self {
            Require::All => "every attempt must pass (pass^k; --require all)".into(),
            Require::Any => "at least one attempt must pass (pass@k; --require any)".into(),
            Require::MinRate { per_mille } => format!(
                "the 95% Wilson lower bound of the pass rate must be at least {:.3} (--require rate={:.3})",
                f64::from(per_mille) / 1000.0,
                f64::from(per_mille) / 1000.0
            ),
        }
    }
}

/// Report findings: per scenario one `agent.scenario` finding with the attempts' statistics,
/// one finding per check (worst verdict over the attempts, with whose failure it was), and the
/// plan-level LLM-1 check of the system prompt.
pub fn findings(
    plan: &RunPlan,
    results: &[RunResult],
    truth: Option<&GroundTruth>,
) -> Vec<Finding> {
    // Findings quote the model's answer and arguments: scrub them like transcripts.
    let scrubber = Scrubber::new(truth.map(|t| t.canaries.as_slice()).unwrap_or(&[]));
    let mut out = vec![system_prompt_finding(&plan.settings.system_prompt)];
    for scenario in &plan.scenarios {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.scenario == scenario.name)
            .collect();
        let rates = pass_rates(&runs);
        let duration: Duration = runs.iter().map(|r| r.run.duration).sum();
        let scenario_verdict = if plan.require.holds(&rates) {
            Verdict::Pass
        } else {
            match worst(runs.iter().map(|r| r.verdict)) {
                Verdict::Pass => Verdict::Fail,
                v => v,
            }
        };
        let mut kinds: Vec<CheckKind> = runs
            .iter()
            .flat_map(|r| r.checks.iter().map(|c| c.kind))
            .collect();
        kinds.sort();
        kinds.dedup();
        let mut checklist: BTreeSet<String> = scenario.checklist.iter().cloned().collect();
        for k in &kinds {
            checklist.extend(k.checklist().iter().map(|s| s.to_string()));
        }
        let first_bad = runs.iter().find(|r| r.verdict != Verdict::Pass);
        let title = format!("scenario {}", scenario.name);
        let k = rates.k;
        let mut evidence = Evidence {
            summary: format!(
                "{}{} of {k} attempt(s) passed; pass rate {}; pass@{k} = {}, pass^{k} = {} observed",
                if rates.flaky { "flaky: " } else { "" },
                rates.passed,
                rates.rate.show(),
                u8::from(rates.pass_at_k),
                u8::from(rates.pass_pow_k),
            ),
            ..Evidence::default()
        };
        evidence
            .facts
            .push(format!("verdict rule: {}", plan.require.describe()));
        evidence.facts.push(format!(
            "attempts: {k}, passes: {}, pass rate {}",
            rates.passed,
            rates.rate.show()
        ));
        evidence.facts.push(format!(
            "for a new set of {k} attempts, from the interval: pass@{k} {}, pass^{k} {}",
            rates.pass_at_k_interval().show(),
            rates.pass_pow_k_interval().show()
        ));
        if rates.flaky {
            evidence
                .facts
                .push("label: flaky (attempts of this scenario disagree)".into());
        }
        // Whose failures the attempts' failed checks were.
        let mut blamed: std::collections::BTreeMap<FailureKind, (usize, &'static str)> =
            Default::default();
        for r in &runs {
            let mut mine = BTreeSet::new();
            for c in &r.checks {
                if let Some((kind, why)) = attribute(scenario, &r.run, c) {
                    if mine.insert(kind) {
                        blamed.entry(kind).or_insert((0, why)).0 += 1;
                    }
                }
            }
        }
        for (kind, (n, why)) in &blamed {
            evidence
                .facts
                .push(kind.fact(&format!("{why} (in {n} of {k} attempt(s))")));
        }
        let isolation: Duration = runs.iter().map(|r| r.isolation).sum();
        if k > 0 {
            evidence.facts.push(format!(
                "isolation: {:.1} ms per attempt (a fresh layer instance, the attempt's rows put back)",
                isolation.as_secs_f64() * 1000.0 / k as f64
            ));
        }
        for r in &runs {
            evidence.facts.push(format!(
                "attempt {}: {} ({}, {} step(s), started {}, trace {})",
                r.repeat,
                r.verdict.as_str(),
                r.run.outcome.as_str(),
                r.run.steps,
                r.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                r.trace_id
            ));
        }
        out.push(Finding {
            code: "agent.scenario".into(),
            family: "agent".into(),
            fingerprint: Finding::fingerprint_for("agent.scenario", &title),
            title,
            checklist: checklist.into_iter().collect(),
            severity: Severity::High,
            verdict: scenario_verdict,
            message: match first_bad {
                None => format!("{}: {}", scenario.description_or_task(), evidence.summary),
                Some(r) => format!(
                    "{}; first problem (attempt {}): {}",
                    evidence.summary,
                    r.repeat,
                    r.checks
                        .iter()
                        .find(|c| c.verdict != Verdict::Pass)
                        .map(|c| format!("{}: {}", c.kind.code(), c.summary))
                        .unwrap_or_else(|| r.run.error.clone().unwrap_or_default())
                ),
            },
            call: None,
            response_excerpt: runs
                .first()
                .and_then(|r| r.run.final_answer.as_deref())
                .map(|a| excerpt(&scrubber.scrub(a), 300)),
            evidence,
            location: None,
            duration,
        });
        for kind in kinds {
            let per_run: Vec<(&RunResult, &Check)> = runs
                .iter()
                .filter_map(|r| r.checks.iter().find(|c| c.kind == kind).map(|c| (*r, c)))
                .collect();
            let verdict = worst(per_run.iter().map(|(_, c)| c.verdict));
            let Some((run, shown)) = per_run
                .iter()
                .find(|(_, c)| c.verdict == verdict)
                .or_else(|| per_run.first())
                .copied()
            else {
                continue;
            };
            let title = format!("{}: {}", scenario.name, kind.title());
            let mut evidence = shown.evidence.clone();
            let mut blamed: std::collections::BTreeMap<FailureKind, (usize, &'static str)> =
                Default::default();
            for (r, c) in &per_run {
                if let Some((kind, why)) = attribute(scenario, &r.run, c) {
                    blamed.entry(kind).or_insert((0, why)).0 += 1;
                }
            }
            for (kind, (n, why)) in &blamed {
                evidence
                    .facts
                    .push(kind.fact(&format!("{why} (in {n} of {} attempt(s))", per_run.len())));
            }
            if per_run.len() > 1 {
                evidence.facts.push(format!(
                    "{} of {} attempt(s) passed this check; shown: attempt {}",
                    per_run
                        .iter()
                        .filter(|(_, c)| c.verdict == Verdict::Pass)
                        .count(),
                    per_run.len(),
                    run.repeat
                ));
            }
            let call = run
                .run
                .tool_calls
                .iter()
                .find(|c| c.error.is_some() || kind == CheckKind::CrossTenant)
                .or_else(|| run.run.tool_calls.first())
                .map(|c| ToolCallRecord {
                    tool: c.tool.clone(),
                    tenant: scenario.principal.tenant.clone(),
                    user: scenario.principal.user.clone(),
                    arguments: scrubber.scrub_value(&c.arguments),
                    trace_id: run.trace_id.clone(),
                });
            out.push(Finding {
                code: kind.code().into(),
                family: "agent".into(),
                fingerprint: Finding::fingerprint_for(kind.code(), &title),
                title,
                checklist: kind.checklist().iter().map(|s| s.to_string()).collect(),
                severity: severity(kind),
                verdict,
                message: shown.summary.clone(),
                call,
                response_excerpt: None,
                evidence,
                location: None,
                duration: run.run.duration,
            });
        }
    }
    out
}

fn severity(kind: CheckKind) -> Severity {
    match kind {
        CheckKind::CrossTenant | CheckKind::Secrets | CheckKind::PrincipalLeak => {
            Severity::Critical
        }
        CheckKind::Writes | CheckKind::Approval | CheckKind::StepCap | CheckKind::Transcript => {
            Severity::High
        }
        CheckKind::Recovery
        | CheckKind::ErrorsSeen
        | CheckKind::ToolList
        | CheckKind::AuditTrail
        | CheckKind::ModelRequests => Severity::Medium,
        CheckKind::Outcome | CheckKind::Steps | CheckKind::FinalAnswer | CheckKind::Tools => {
            Severity::Low
        }
    }
}

/// LLM-1 as a static check of the prompt text: it must explain `code` and `suggestion` and ask
/// the model to recover.
pub fn system_prompt_finding(prompt: &str) -> Finding {
    let lower = prompt.to_lowercase();
    let mut missing = Vec::new();
    for (needle, what) in [
        ("code", "the error `code`"),
        ("suggestion", "the `suggestion`"),
        (
            "recover",
            "that the agent should recover rather than give up",
        ),
    ] {
        if !lower.contains(needle) {
            missing.push(what);
        }
    }
    let title = "the system prompt explains structured errors".to_string();
    Finding {
        code: "agent.system_prompt".into(),
        family: "agent".into(),
        fingerprint: Finding::fingerprint_for("agent.system_prompt", &title),
        title,
        checklist: vec!["LLM-1".into()],
        severity: Severity::Medium,
        verdict: if missing.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        message: if missing.is_empty() {
            "the system prompt tells the agent how to read `code` and `suggestion` and to recover"
                .into()
        } else {
            format!(
                "the system prompt does not mention {}; add it (see harness/prompts/system.md)",
                missing.join(", ")
            )
        },
        call: None,
        response_excerpt: Some(excerpt(prompt, 300)),
        evidence: Evidence {
            summary: format!(
                "{} characters of system prompt checked",
                prompt.chars().count()
            ),
            ..Evidence::default()
        },
        location: None,
        duration: Duration::ZERO,
    }
}

fn excerpt(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

impl Scenario {
    fn description_or_task(&self) -> String {
        if self.description.is_empty() {
            excerpt(&self.task, 120)
        } else {
            self.description.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(passed: usize, k: usize) -> PassRates {
        PassRates {
            k,
            passed,
            pass_at_k: passed > 0,
            pass_pow_k: passed == k && k > 0,
            rate: wilson(passed, k),
            flaky: passed > 0 && passed < k,
        }
    }

    #[test]
    fn verdict_rules() {
        let all: Require = "all".parse().unwrap();
        let any: Require = "any".parse().unwrap();
        let rate: Require = "rate=0.9".parse().unwrap();
        assert_eq!(rate, Require::MinRate { per_mille: 900 });
        assert!(all.holds(&rates(30, 30)) && !all.holds(&rates(29, 30)));
        assert!(any.holds(&rates(1, 30)) && !any.holds(&rates(0, 30)));
        // The Wilson lower bound, not the observed rate: 30 of 30 is not enough for 0.9.
        assert!(rate.holds(&rates(50, 50)));
        assert!(!rate.holds(&rates(30, 30)));
        assert!(!rate.holds(&rates(0, 0)));
        for bad in ["rate=0", "rate=1.5", "rate=x", "most", ""] {
            assert!(bad.parse::<Require>().is_err(), "{bad}");
        }
        assert!(rate.describe().contains("0.900"));
    }

    #[test]
    fn flaky_only_when_attempts_disagree() {
        assert!(rates(3, 10).flaky);
        assert!(!rates(10, 10).flaky && !rates(0, 10).flaky);
    }
}
