//! The self-test ([`run_self_test`]): every probe against a healthy layer and against each
//! broken variant, and the detection matrix ([`SelfTestResult`]) that shows which probe codes
//! caught which control.
//!
//! It proves two things and fails when either does not hold: every control is caught by at
//! least one probe (no enforcement can be switched off unnoticed), and every probe code that ran
//! caught at least one control (no probe that cannot fail). The healthy baseline must pass in
//! full, otherwise a "detection" could be a probe that fails everywhere. One database serves
//! every variant: each variant gets a fresh gateway instance, database controls are restored
//! after their variant, and each variant runs only the families that can observe its control.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use preflight_enforcer::policy::Policy;
use preflight_enforcer::Faults;
use preflight_reports::{
    Evidence, Finding, Report, ReportKind, RunEnvironment, Severity, Verdict, REPORT_SCHEMA_VERSION,
};

use crate::codes::Family;
use crate::controls::{Control, ControlEnv};
use crate::families::approval::ApprovalDesk;
use crate::families::{self, PlanInput};
use crate::runner::{self, Access, CtxParts, Principals, ProbeCtx, RunOptions};
use crate::target::GatewayFactory;
use crate::truth::GroundTruth;

/// Everything the self-test needs; the layer comes from `factory`.
pub struct SelfTestSetup {
    pub truth: Arc<GroundTruth>,
    pub factory: Arc<dyn GatewayFactory>,
    pub policy: Arc<Policy>,
    pub principals: Principals,
    pub superuser_url: Option<String>,
    pub audit_url: Option<String>,
    pub agent_role: String,
    pub audit_role: Option<String>,
    pub approvals: Option<Arc<dyn ApprovalDesk>>,
    pub options: RunOptions,
    /// Families to include (lint is never part of the self-test: its rules are controlled by
    /// the linter's own bad-policy tests).
    pub families: BTreeSet<Family>,
}

/// One variant's run.
#[derive(Clone, Debug)]
pub struct VariantResult {
    /// `None` for the healthy baseline.
    pub control: Option<Control>,
    pub families: BTreeSet<Family>,
    pub findings: Vec<Finding>,
    /// Why the variant could not run (control not applicable, restore failed, ...).
    pub error: Option<String>,
    pub duration: Duration,
    pub tool_calls: u64,
}

impl VariantResult {
    /// Probe codes that failed in this variant: what it caught.
    pub fn caught(&self) -> BTreeSet<String> {
        self.findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .map(|f| f.code.clone())
            .collect()
    }
}

/// The whole self-test.
#[derive(Clone, Debug)]
pub struct SelfTestResult {
    pub baseline: VariantResult,
    pub variants: Vec<VariantResult>,
    pub duration: Duration,
}

impl SelfTestResult {
    /// Codes the baseline planned (the probes that exist for this policy and layer).
    pub fn codes(&self) -> BTreeSet<String> {
        self.baseline
            .findings
            .iter()
            .map(|f| f.code.clone())
            .collect()
    }

    /// Baseline findings that did not pass.
    pub fn baseline_failures(&self) -> Vec<&Finding> {
        self.baseline
            .findings
            .iter()
            .filter(|f| f.verdict != Verdict::Pass)
            .collect()
    }

    /// Controls no probe caught (or that could not be applied), with why.
    pub fn uncaught_controls(&self) -> Vec<(String, String)> {
        self.variants
            .iter()
            .filter(|v| v.caught().is_empty())
            .map(|v| {
                let name = v
                    .control
                    .map(|c| c.name())
                    .unwrap_or("baseline")
                    .to_string();
                let why = v
                    .error
                    .clone()
                    .unwrap_or_else(|| "no probe failed".to_string());
                (name, why)
            })
            .collect()
    }

    /// Probe codes that caught no control in any variant they ran in.
    pub fn idle_codes(&self) -> Vec<String> {
        let caught: BTreeSet<String> = self.variants.iter().flat_map(|v| v.caught()).collect();
        self.codes()
            .into_iter()
            .filter(|c| !caught.contains(c))
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.baseline_failures().is_empty()
            && self.uncaught_controls().is_empty()
            && self.idle_codes().is_empty()
    }

    /// The detection matrix as text: one row per control, one column per family with the number
    /// of that family's probe codes that caught it (`-` where the family ran and caught nothing,
    /// blank where it did not run), then the codes themselves.
    pub fn matrix(&self) -> String {
        let fams: Vec<Family> = Family::ALL
            .into_iter()
            .filter(|f| self.baseline.families.contains(f))
            .collect();
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut header = vec!["control".to_string()];
        header.extend(fams.iter().map(|f| f.as_str().to_string()));
        header.push("caught by".to_string());
        rows.push(header);
        for v in &self.variants {
            let caught = v.caught();
            let mut row = vec![v
                .control
                .map(|c| c.name())
                .unwrap_or("baseline")
                .to_string()];
            for f in &fams {
                let prefix = format!("{}.", f.as_str());
                let n = caught.iter().filter(|c| c.starts_with(&prefix)).count();
                row.push(if !v.families.contains(f) {
                    String::new()
                } else if n == 0 {
                    "-".into()
                } else {
                    n.to_string()
                });
            }
            row.push(match (&v.error, caught.is_empty()) {
                (Some(e), _) => format!("NOT RUN: {e}"),
                (None, true) => "NOT CAUGHT".to_string(),
                (None, false) => caught.iter().cloned().collect::<Vec<_>>().join(", "),
            });
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join(" | ").trim_end());
            out.push('\n');
            if n == 0 {
                out.push_str(
                    &widths
                        .iter()
                        .map(|w| "-".repeat(*w))
                        .collect::<Vec<_>>()
                        .join("-+-"),
                );
                out.push('\n');
            }
        }
        out
    }

    /// The self-test as a report: one finding per control (caught or not), one per probe code
    /// (catches something or not), and the baseline's non-passing findings.
    pub fn to_report(&self, environment: RunEnvironment) -> Report {
        let mut findings = Vec::new();
        let mk =
            |code: &str, title: String, verdict: Verdict, message: String, facts: Vec<String>| {
                Finding {
                    code: code.to_string(),
                    family: "self_test".to_string(),
                    fingerprint: Finding::fingerprint_for(code, &title),
                    title,
                    checklist: Vec::new(),
                    severity: Severity::High,
                    verdict,
                    message,
                    call: None,
                    response_excerpt: None,
                    evidence: Evidence {
                        summary: String::new(),
                        facts,
                        ..Evidence::default()
                    },
                    location: None,
                    duration: Duration::ZERO,
                }
            };
        findings.push(mk(
            "self_test.baseline",
            "the healthy layer passes every probe".to_string(),
            if self.baseline_failures().is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            format!(
                "{} of {} baseline findings did not pass",
                self.baseline_failures().len(),
                self.baseline.findings.len()
            ),
            self.baseline_failures()
                .iter()
                .map(|f| {
                    format!(
                        "{} {}: {} — {}",
                        f.verdict.as_str(),
                        f.code,
                        f.title,
                        f.message
                    )
                })
                .collect(),
        ));
        for v in &self.variants {
            let name = v.control.map(|c| c.name()).unwrap_or("baseline");
            let caught = v.caught();
            findings.push(mk(
                "self_test.control_caught",
                format!("control {name} is caught"),
                if caught.is_empty() {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                match (&v.error, caught.is_empty()) {
                    (Some(e), _) => format!("the variant could not run: {e}"),
                    (None, true) => "no probe failed against this broken variant".to_string(),
                    (None, false) => format!(
                        "caught by {}",
                        caught.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                },
                vec![format!(
                    "families run: {}",
                    v.families
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )],
            ));
        }
        let mut by_code: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for v in &self.variants {
            for c in v.caught() {
                by_code
                    .entry(c)
                    .or_default()
                    .push(v.control.map(|c| c.name()).unwrap_or("baseline"));
            }
        }
        for code in self.codes() {
            let controls = by_code.get(&code).cloned().unwrap_or_default();
            findings.push(mk(
                "self_test.probe_can_fail",
                format!("probe {code} fails against a broken layer"),
                if controls.is_empty() {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                if controls.is_empty() {
                    "this probe caught no control: it may be unable to fail".to_string()
                } else {
                    format!("caught {}", controls.join(", "))
                },
                Vec::new(),
            ));
        }
        let tool_calls =
            self.baseline.tool_calls + self.variants.iter().map(|v| v.tool_calls).sum::<u64>();
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            kind: ReportKind::SelfTest,
            environment,
            findings,
            duration: self.duration,
            tool_calls,
            probe_duration: self.duration,
        }
    }
}

/// Runs one variant: switch the control on, build a layer instance, run the families that can
/// see it, switch the control off.
async fn run_variant(
    setup: &SelfTestSetup,
    control: Option<Control>,
    families: BTreeSet<Family>,
) -> VariantResult {
    let started = Instant::now();
    let mut result = VariantResult {
        control,
        families: families.clone(),
        findings: Vec::new(),
        error: None,
        duration: Duration::ZERO,
        tool_calls: 0,
    };
    let policy = match control.map(|c| c.policy(&setup.policy)).transpose() {
        Ok(p) => Arc::new(p.unwrap_or_else(|| (*setup.policy).clone())),
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let env = ControlEnv {
        owner: setup.truth.pool(),
        superuser_url: setup.superuser_url.as_deref(),
        agent_role: &setup.agent_role,
        audit_role: setup.audit_role.as_deref(),
        policy: &setup.policy,
    };
    let applied = match control {
        Some(c) => match c.apply(&env).await {
            Ok(a) => Some(a),
            Err(e) => {
                result.error = Some(e.to_string());
                return result;
            }
        },
        None => None,
    };
    let faults = control.map(|c| c.faults()).unwrap_or_else(Faults::none);
    // As in a probe run: quotas and write rates lifted on the shared instance.
    let instance_policy = Arc::new(families::instance_policy(&policy));
    match setup
        .factory
        .instance(instance_policy, faults.clone())
        .await
    {
        Ok(gateway) => {
            let ctx = Arc::new(ProbeCtx::new(CtxParts {
                gateway,
                factory: Some(Arc::clone(&setup.factory)),
                faults,
                truth: Arc::clone(&setup.truth),
                policy: Arc::clone(&policy),
                principals: setup.principals.clone(),
                access: Access::ReadWrite,
                audit_url: setup.audit_url.clone(),
                approvals: setup.approvals.clone(),
                agent_role: Some(setup.agent_role.clone()),
                audit_role: setup.audit_role.clone(),
            }));
            let input = PlanInput {
                policy: &policy,
                tools: &ctx.tools,
                native_tools: &ctx.native_tools,
                truth: &setup.truth,
                tenant_a: &setup.principals.a.tenant,
                tenant_b: &setup.principals.b.tenant,
                lint: &[],
            };
            let plan = families::plan(&input, &families);
            let run = runner::run(
                &plan,
                Arc::clone(&ctx),
                &setup.options,
                RunEnvironment::default(),
                None,
            )
            .await;
            result.findings = run.findings;
            result.tool_calls = run.tool_calls;
            if let Some(e) = run.infrastructure_error {
                result.error = Some(e);
            }
        }
        Err(e) => {
            result.error = Some(format!(
                "cannot start the layer: {}",
                runner::error_chain(&e)
            ))
        }
    }
    if let Some(a) = applied {
        if let Err(e) = a.restore(&env).await {
            result.error = Some(format!(
                "restoring the database after {} failed: {}",
                control.map(|c| c.name()).unwrap_or("?"),
                runner::error_chain(&e)
            ));
        }
    }
    result.duration = started.elapsed();
    result
}

/// Runs the baseline and then every control in `controls`; `progress` hears about each variant
/// as it finishes.
pub async fn run_self_test(
    setup: &SelfTestSetup,
    controls: &[Control],
    mut progress: impl FnMut(&VariantResult),
) -> SelfTestResult {
    let started = Instant::now();
    let mut families = setup.families.clone();
    families.remove(&Family::Lint);
    let baseline = run_variant(setup, None, families.clone()).await;
    progress(&baseline);
    let mut variants = Vec::new();
    for c in controls {
        let fams: BTreeSet<Family> = c.families().intersection(&families).copied().collect();
        if fams.is_empty() {
            continue;
        }
        let v = run_variant(setup, Some(*c), fams).await;
        progress(&v);
        variants.push(v);
    }
    SelfTestResult {
        baseline,
        variants,
        duration: started.elapsed(),
    }
}
