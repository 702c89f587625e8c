//! The self-test ([`run_self_test`]): every probe instance against a healthy layer, then each
//! instance against the positive controls it declares ([`crate::runner::Probe::controls`]), and
//! the kill matrix ([`SelfTestResult::kill_matrix`]) that shows, per probe code, how many of its
//! instances failed under every control they declared.
//!
//! It fails unless all of these hold:
//! - the healthy baseline passes in full (otherwise a "kill" could be a probe that fails
//!   everywhere);
//! - every instance declares at least one control and fails under each of them (no instance
//!   that cannot fail);
//! - every control is declared by some instance, could be switched on and off, and ran
//!   without an infrastructure error;
//! - the database's fingerprint ([`Fingerprint`]: catalog and a checksum per table, the audit
//!   log included) after each variant equals the one before it, so every control was undone
//!   exactly and no probe left a row behind.
//!
//! One database serves every variant: each variant gets a fresh gateway instance and runs only
//! the instances that declare its control, which keeps the self-test a few baseline runs long.

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
use crate::fingerprint::Fingerprint;
use crate::runner::{self, Access, CtxParts, Principals, ProbeCtx, ProbePlan, RunOptions};
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

/// One probe instance: its code and its title (unique within a plan).
pub type Instance = (String, String);

/// One variant's run: the healthy baseline or one control.
#[derive(Clone, Debug)]
pub struct VariantResult {
    /// `None` for the healthy baseline.
    pub control: Option<Control>,
    /// The instances that declare this control (every instance, for the baseline).
    pub targets: Vec<Instance>,
    /// The findings of the instances that ran.
    pub findings: Vec<Finding>,
    /// Why the variant could not run, or hit an infrastructure error (control not applicable,
    /// layer not started, database gone, undo failed).
    pub error: Option<String>,
    /// How the database after the variant differs from before it (empty: restored exactly).
    pub not_restored: Vec<String>,
    /// Rows planted by probes that could not be removed.
    pub leftover_rows: Vec<String>,
    pub duration: Duration,
    pub tool_calls: u64,
}

impl VariantResult {
    /// The instances this control killed (that failed in this variant).
    pub fn killed(&self) -> BTreeSet<Instance> {
        self.findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .map(|f| (f.code.clone(), f.title.clone()))
            .collect()
    }

    /// Target instances that did not fail, with what they said instead.
    pub fn survivors(&self) -> Vec<(Instance, String)> {
        let by_id: BTreeMap<Instance, &Finding> = self
            .findings
            .iter()
            .map(|f| ((f.code.clone(), f.title.clone()), f))
            .collect();
        self.targets
            .iter()
            .filter_map(|i| match by_id.get(i) {
                Some(f) if f.verdict == Verdict::Fail => None,
                Some(f) => Some((i.clone(), format!("{}: {}", f.verdict.as_str(), f.message))),
                None => Some((
                    i.clone(),
                    match &self.error {
                        Some(e) => format!("not run: {e}"),
                        None => "not planned under this control".to_string(),
                    },
                )),
            })
            .collect()
    }

    pub fn name(&self) -> &'static str {
        self.control.map(|c| c.name()).unwrap_or("baseline")
    }

    /// The variant's own problems: an error, an inexact restore, rows left behind.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("{}: {e}", self.name()));
        }
        if !self.not_restored.is_empty() {
            out.push(format!(
                "{}: the database was not restored exactly ({})",
                self.name(),
                self.not_restored.join("; ")
            ));
        }
        if !self.leftover_rows.is_empty() {
            out.push(format!(
                "{}: rows planted by probes were left behind ({})",
                self.name(),
                self.leftover_rows.join("; ")
            ));
        }
        out
    }
}

/// One row of the kill matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillRow {
    pub code: String,
    pub instances: usize,
    /// Instances that failed under every control they declared.
    pub killed: usize,
    /// The controls this code's instances declare.
    pub controls: BTreeSet<&'static str>,
}

/// The whole self-test.
#[derive(Clone, Debug)]
pub struct SelfTestResult {
    pub baseline: VariantResult,
    pub variants: Vec<VariantResult>,
    /// Each baseline instance and the controls it declares.
    pub declared: BTreeMap<Instance, Vec<Control>>,
    /// The controls the self-test was asked to run.
    pub controls: Vec<Control>,
    pub duration: Duration,
}

impl SelfTestResult {
    /// Baseline findings that did not pass.
    pub fn baseline_failures(&self) -> Vec<&Finding> {
        self.baseline
            .findings
            .iter()
            .filter(|f| f.verdict != Verdict::Pass)
            .collect()
    }

    /// Every instance that was not killed, with why: no control declared, or a declared control
    /// under which it did not fail.
    pub fn unkilled(&self) -> Vec<(Instance, String)> {
        let mut out = Vec::new();
        let survivors: BTreeMap<(Instance, &'static str), String> = self
            .variants
            .iter()
            .flat_map(|v| {
                v.survivors()
                    .into_iter()
                    .map(move |(i, why)| ((i, v.name()), why))
            })
            .collect();
        let ran: BTreeSet<&'static str> = self.variants.iter().map(|v| v.name()).collect();
        for (instance, controls) in &self.declared {
            if controls.is_empty() {
                out.push((
                    instance.clone(),
                    "declares no control that makes it fail".to_string(),
                ));
                continue;
            }
            for c in controls {
                if let Some(why) = survivors.get(&(instance.clone(), c.name())) {
                    out.push((instance.clone(), format!("under {}: {why}", c.name())));
                } else if !ran.contains(c.name()) {
                    out.push((
                        instance.clone(),
                        format!("its control {} was not run", c.name()),
                    ));
                }
            }
        }
        out
    }

    /// Controls no instance declares (nothing shows that switching them off is noticed).
    pub fn undeclared_controls(&self) -> Vec<&'static str> {
        let declared: BTreeSet<&'static str> =
            self.declared.values().flatten().map(|c| c.name()).collect();
        self.controls
            .iter()
            .map(|c| c.name())
            .filter(|n| !declared.contains(n))
            .collect()
    }

    /// Errors, inexact restores and leftover rows of every variant, the baseline included.
    pub fn variant_problems(&self) -> Vec<String> {
        std::iter::once(&self.baseline)
            .chain(&self.variants)
            .flat_map(|v| v.problems())
            .collect()
    }

    /// Per probe code: instances, instances killed, and the controls they declare.
    pub fn kill_matrix(&self) -> Vec<KillRow> {
        let unkilled: BTreeSet<Instance> = self.unkilled().into_iter().map(|(i, _)| i).collect();
        let mut rows: BTreeMap<String, KillRow> = BTreeMap::new();
        for (instance, controls) in &self.declared {
            let row = rows.entry(instance.0.clone()).or_insert_with(|| KillRow {
                code: instance.0.clone(),
                instances: 0,
                killed: 0,
                controls: BTreeSet::new(),
            });
            row.instances += 1;
            if !unkilled.contains(instance) {
                row.killed += 1;
            }
            row.controls.extend(controls.iter().map(|c| c.name()));
        }
        rows.into_values().collect()
    }

    /// `(instances, killed)` over every code.
    pub fn kill_totals(&self) -> (usize, usize) {
        self.kill_matrix()
            .iter()
            .fold((0, 0), |(n, k), r| (n + r.instances, k + r.killed))
    }

    pub fn passed(&self) -> bool {
        self.baseline_failures().is_empty()
            && self.unkilled().is_empty()
            && self.undeclared_controls().is_empty()
            && self.variant_problems().is_empty()
    }

    /// Everything that makes the self-test fail, one line each.
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for f in self.baseline_failures() {
            gaps.push(format!(
                "baseline {}: {} [{}] — {}",
                f.verdict.as_str(),
                f.code,
                f.title,
                f.message
            ));
        }
        for ((code, title), why) in self.unkilled() {
            gaps.push(format!("instance {code} [{title}] was not killed: {why}"));
        }
        for c in self.undeclared_controls() {
            gaps.push(format!("control {c} is declared by no probe instance"));
        }
        gaps.extend(self.variant_problems());
        gaps
    }

    /// The kill matrix as text: one row per probe code, then a total.
    pub fn matrix(&self) -> String {
        let mut rows: Vec<Vec<String>> = vec![vec![
            "probe code".to_string(),
            "killed / instances".to_string(),
            "controls".to_string(),
        ]];
        for r in self.kill_matrix() {
            rows.push(vec![
                r.code.clone(),
                format!(
                    "{} / {}{}",
                    r.killed,
                    r.instances,
                    if r.killed < r.instances { "  !" } else { "" }
                ),
                r.controls.iter().copied().collect::<Vec<_>>().join(", "),
            ]);
        }
        let (n, k) = self.kill_totals();
        rows.push(vec![
            "total".to_string(),
            format!("{k} / {n}"),
            format!("{} controls run", self.variants.len()),
        ]);
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        let last = rows.len() - 1;
        for (n, r) in rows.iter().enumerate() {
            if n == last || n == 1 {
                out.push_str(
                    &widths
                        .iter()
                        .map(|w| "-".repeat(*w))
                        .collect::<Vec<_>>()
                        .join("-+-"),
                );
                out.push('\n');
            }
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join(" | ").trim_end());
            out.push('\n');
        }
        out
    }

    /// The self-test as a report: the baseline, one finding per control (declared, killed its
    /// instances, restored exactly), one per probe code (every instance killed).
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
        let verdict = |ok: bool| if ok { Verdict::Pass } else { Verdict::Fail };
        let failures = self.baseline_failures();
        findings.push(mk(
            "self_test.baseline",
            "the healthy layer passes every probe".to_string(),
            verdict(failures.is_empty() && self.baseline.problems().is_empty()),
            format!(
                "{} of {} baseline findings did not pass",
                failures.len(),
                self.baseline.findings.len()
            ),
            failures
                .iter()
                .map(|f| {
                    format!(
                        "{} {} [{}]: {}",
                        f.verdict.as_str(),
                        f.code,
                        f.title,
                        f.message
                    )
                })
                .chain(self.baseline.problems())
                .collect(),
        ));
        let undeclared = self.undeclared_controls();
        for v in &self.variants {
            let survivors = v.survivors();
            let problems = v.problems();
            let ok = survivors.is_empty() && problems.is_empty() && !v.targets.is_empty();
            findings.push(mk(
                "self_test.control",
                format!("control {} kills its instances and is undone", v.name()),
                verdict(ok),
                format!(
                    "{} of {} declaring instance(s) failed under it; {}",
                    v.targets.len() - survivors.len(),
                    v.targets.len(),
                    if v.not_restored.is_empty() && v.error.is_none() {
                        "the database was restored exactly"
                    } else {
                        "the variant did not end cleanly"
                    }
                ),
                survivors
                    .iter()
                    .map(|((code, title), why)| format!("survived: {code} [{title}] — {why}"))
                    .chain(problems)
                    .collect(),
            ));
        }
        for c in undeclared {
            findings.push(mk(
                "self_test.control",
                format!("control {c} kills its instances and is undone"),
                Verdict::Fail,
                "no probe instance declares this control".to_string(),
                Vec::new(),
            ));
        }
        let unkilled = self.unkilled();
        for r in self.kill_matrix() {
            let facts: Vec<String> = unkilled
                .iter()
                .filter(|((code, _), _)| *code == r.code)
                .map(|((_, title), why)| format!("not killed: [{title}] {why}"))
                .collect();
            findings.push(mk(
                "self_test.instances_killed",
                format!("every instance of {} fails on a broken layer", r.code),
                verdict(r.killed == r.instances),
                format!(
                    "{} of {} instance(s) killed by {}",
                    r.killed,
                    r.instances,
                    r.controls.iter().copied().collect::<Vec<_>>().join(", ")
                ),
                facts,
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
            notes: Vec::new(),
            attempts: Vec::new(),
        }
    }
}

/// The plan of one variant: the probes of `families` under `policy`, restricted to `only` when
/// given.
fn variant_plan(
    setup: &SelfTestSetup,
    ctx: &ProbeCtx,
    policy: &Policy,
    families: &BTreeSet<Family>,
    only: Option<&BTreeSet<Instance>>,
) -> ProbePlan {
    let input = PlanInput {
        policy,
        tools: &ctx.tools,
        native_tools: &ctx.native_tools,
        truth: &setup.truth,
        tenant_a: &setup.principals.a.tenant,
        tenant_b: &setup.principals.b.tenant,
        lint: &[],
        sql: None,
    };
    let mut plan = families::plan(&input, families);
    if let Some(only) = only {
        plan.probes
            .retain(|p| only.contains(&(p.code.clone(), p.title.clone())));
    }
    plan
}

/// Runs one variant: fingerprint the database, switch the control on, build a layer instance,
/// run the instances that declare the control (every instance for the baseline), switch the
/// control off, and fingerprint again. `on_plan` sees the plan before it runs.
async fn run_variant(
    setup: &SelfTestSetup,
    control: Option<Control>,
    families: &BTreeSet<Family>,
    targets: Option<&BTreeSet<Instance>>,
    on_plan: &mut dyn FnMut(&ProbePlan),
) -> VariantResult {
    let started = Instant::now();
    let mut result = VariantResult {
        control,
        targets: targets
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default(),
        findings: Vec::new(),
        error: None,
        not_restored: Vec::new(),
        leftover_rows: Vec::new(),
        duration: Duration::ZERO,
        tool_calls: 0,
    };
    let pool = setup.truth.pool();
    let before = match Fingerprint::take(pool, None).await {
        Ok(f) => f,
        Err(e) => {
            result.error = Some(format!(
                "cannot fingerprint the database before the variant: {}",
                runner::error_chain(&e)
            ));
            return result;
        }
    };
    let policy = match control.map(|c| c.policy(&setup.policy)).transpose() {
        Ok(p) => Arc::new(p.unwrap_or_else(|| (*setup.policy).clone())),
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let env = ControlEnv {
        owner: pool,
        superuser_url: setup.superuser_url.as_deref(),
        agent_role: &setup.agent_role,
        audit_role: setup.audit_role.as_deref(),
        policy: &setup.policy,
    };
    // A control that fails half-way has undone what it did (its `apply` returns no undo list
    // to run), so the fingerprint below still tells whether the database is as it was.
    let applied = match control {
        Some(c) => match c.apply(&env).await {
            Ok(a) => Some(a),
            Err(e) => {
                result.error = Some(format!(
                    "cannot switch the control on: {}",
                    runner::error_chain(&e)
                ));
                None
            }
        },
        None => None,
    };
    if result.error.is_none() {
        run_instances(
            setup,
            control,
            &policy,
            families,
            targets,
            on_plan,
            &mut result,
        )
        .await;
    }
    if let Some(mut a) = applied {
        if let Err(e) = a.restore(&env).await {
            result.error = Some(format!(
                "switching the control off failed: {}",
                runner::error_chain(&e)
            ));
        }
    }
    match Fingerprint::take(pool, Some(&before)).await {
        Ok(after) => result.not_restored = after.diff(&before),
        Err(e) => {
            result.error.get_or_insert(format!(
                "cannot fingerprint the database after the variant: {}",
                runner::error_chain(&e)
            ));
        }
    }
    result.duration = started.elapsed();
    result
}

/// Builds the variant's layer instance and runs its plan into `result`.
async fn run_instances(
    setup: &SelfTestSetup,
    control: Option<Control>,
    policy: &Arc<Policy>,
    families: &BTreeSet<Family>,
    targets: Option<&BTreeSet<Instance>>,
    on_plan: &mut dyn FnMut(&ProbePlan),
    result: &mut VariantResult,
) {
    let faults = control.map(|c| c.faults()).unwrap_or_else(Faults::none);
    // As in a probe run: quotas and write rates lifted on the shared instance.
    let instance_policy = Arc::new(families::instance_policy(policy));
    let gateway = match setup
        .factory
        .instance(instance_policy, faults.clone())
        .await
    {
        Ok(g) => g,
        Err(e) => {
            result.error = Some(format!(
                "cannot start the layer: {}",
                runner::error_chain(&e)
            ));
            return;
        }
    };
    let ctx = Arc::new(ProbeCtx::new(CtxParts {
        gateway,
        factory: Some(Arc::clone(&setup.factory)),
        faults,
        truth: Arc::clone(&setup.truth),
        policy: Arc::clone(policy),
        principals: setup.principals.clone(),
        access: Access::ReadWrite,
        audit_url: setup.audit_url.clone(),
        superuser_url: setup.superuser_url.clone(),
        approvals: setup.approvals.clone(),
        agent_role: Some(setup.agent_role.clone()),
        audit_role: setup.audit_role.clone(),
        foreign: None,
    }));
    let plan = variant_plan(setup, &ctx, policy, families, targets);
    on_plan(&plan);
    if plan.is_empty() {
        return;
    }
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
    result.leftover_rows = run.leftover_rows;
    if let Some(e) = run.infrastructure_error {
        result.error = Some(e);
    }
}

/// Runs the baseline (every instance of the selected families), then each control in
/// `controls` against the instances that declare it; `progress` hears about each variant as it
/// finishes.
pub async fn run_self_test(
    setup: &SelfTestSetup,
    controls: &[Control],
    mut progress: impl FnMut(&VariantResult),
) -> SelfTestResult {
    let started = Instant::now();
    let mut families = setup.families.clone();
    families.remove(&Family::Lint);
    let mut declared: BTreeMap<Instance, Vec<Control>> = BTreeMap::new();
    let mut baseline = run_variant(setup, None, &families, None, &mut |plan| {
        for p in &plan.probes {
            declared.insert((p.code.clone(), p.title.clone()), p.controls.clone());
        }
    })
    .await;
    baseline.targets = declared.keys().cloned().collect();
    progress(&baseline);
    let mut variants = Vec::new();
    for c in controls {
        let targets: BTreeSet<Instance> = declared
            .iter()
            .filter(|(_, cs)| cs.contains(c))
            .map(|(i, _)| i.clone())
            .collect();
        if targets.is_empty() {
            continue;
        }
        let fams: BTreeSet<Family> = targets
            .iter()
            .filter_map(|(code, _)| crate::codes::ProbeCode::parse(code).map(|p| p.family()))
            .collect();
        let v = run_variant(setup, Some(*c), &fams, Some(&targets), &mut |_| {}).await;
        progress(&v);
        variants.push(v);
    }
    SelfTestResult {
        baseline,
        variants,
        declared,
        controls: controls.to_vec(),
        duration: started.elapsed(),
    }
}
