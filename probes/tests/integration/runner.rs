//! The runner against a real database and the built-in layer: panics and timeouts become
//! `error` findings, phases keep write probes apart from everything else, a database killed
//! mid-run ends in errors (never a pass), a full run leaves the fixture data as it found it, and
//! findings carry what reports need without a raw canary.
//!
//! The helpers here ([`session`], [`run_plan`]) are shared with the families and self-test
//! modules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preflight_enforcer::Faults;
use preflight_probes::codes::Family;
use preflight_probes::db::testing;
use preflight_probes::runner::{
    self, Phase, Probe, ProbeOutcome, ProbePlan, RunOptions, RunResult,
};
use preflight_probes::session::{Session, SessionOptions};
use preflight_reports::{Finding, ProbeEventKind, RunEnvironment, Severity, Verdict};

/// The shipped policy.
pub const POLICY: &str = include_str!("../../../fixtures/shop/policy.yaml");

/// A session over a fresh test database with the shipped policy.
pub async fn session() -> Session {
    let db = testing::database().await;
    match Session::open(
        db,
        POLICY,
        "fixtures/shop/policy.yaml",
        &SessionOptions::default(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => panic!("session: {}", runner::error_chain(&e)),
    }
}

/// Runs `families` on a layer instance with `faults`.
pub async fn run_families(session: &Session, faults: Faults, families: &[Family]) -> RunResult {
    let ctx = session.context(faults).await.expect("layer instance");
    let lint = if families.contains(&Family::Lint) {
        session.lint()
    } else {
        Vec::new()
    };
    let families: BTreeSet<Family> = families.iter().copied().collect();
    let plan = session.plan(&ctx, &families, &lint);
    assert!(!plan.is_empty(), "no probes planned for {families:?}");
    runner::run(
        &plan,
        ctx,
        &RunOptions::default(),
        RunEnvironment::default(),
        None,
    )
    .await
}

/// Every non-pass finding, one per line, for assertion messages.
pub fn non_pass(findings: &[Finding]) -> String {
    findings
        .iter()
        .filter(|f| f.verdict != Verdict::Pass)
        .map(|f| {
            format!(
                "{} {} [{}]: {}",
                f.verdict.as_str(),
                f.code,
                f.title,
                f.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn custom(
    title: &str,
    phase: Phase,
    body: impl Fn() -> ProbeOutcome + Send + Sync + Clone + 'static,
) -> Probe {
    Probe::custom(
        "test.custom",
        Family::Hygiene,
        title,
        vec!["ISO-5".to_string()],
        Severity::Low,
        move |_ctx| {
            let body = body.clone();
            async move { Ok(body()) }
        },
    )
    .phase(phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_become_errors_and_the_run_goes_on() {
    let s = session().await;
    let ctx = s.context(Faults::none()).await.expect("layer");
    let mut probes = vec![
        custom("passes", Phase::Concurrent, || ProbeOutcome::pass("fine")),
        custom("panics", Phase::Concurrent, || panic!("boom in a probe")),
        custom("fails", Phase::Serial, || ProbeOutcome::fail("broken")),
    ];
    probes.push(
        Probe::custom(
            "test.sleeper",
            Family::Hygiene,
            "never finishes",
            vec![],
            Severity::Low,
            |_ctx| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(ProbeOutcome::pass("unreachable"))
            },
        )
        .phase(Phase::Concurrent),
    );
    let plan = ProbePlan { probes };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        jobs: 4,
        // Long enough for a panic hook to print its backtrace, short enough for the test.
        probe_timeout: Duration::from_secs(5),
    };
    let result = runner::run(&plan, ctx, &options, RunEnvironment::default(), Some(tx)).await;
    let by_title: BTreeMap<&str, &Finding> = result
        .findings
        .iter()
        .map(|f| (f.title.as_str(), f))
        .collect();
    assert_eq!(by_title["passes"].verdict, Verdict::Pass);
    assert_eq!(by_title["fails"].verdict, Verdict::Fail);
    let panicked = by_title["panics"];
    assert_eq!(panicked.verdict, Verdict::Error);
    assert!(
        panicked.message.contains("boom in a probe"),
        "{}",
        panicked.message
    );
    let slept = by_title["never finishes"];
    assert_eq!(slept.verdict, Verdict::Error);
    assert!(
        slept.message.contains("did not finish"),
        "{}",
        slept.message
    );
    assert!(
        result.infrastructure_error.is_none(),
        "the database is fine"
    );

    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(e.kind);
    }
    assert!(matches!(
        kinds.first(),
        Some(ProbeEventKind::RunStarted { .. })
    ));
    assert!(matches!(
        kinds.last(),
        Some(ProbeEventKind::RunFinished { .. })
    ));
    let finished = kinds
        .iter()
        .filter(|k| matches!(k, ProbeEventKind::ProbeFinished { .. }))
        .count();
    assert_eq!(finished, 4);
    let family_events = kinds
        .iter()
        .filter(|k| {
            matches!(
                k,
                ProbeEventKind::FamilyStarted { .. } | ProbeEventKind::FamilyFinished { .. }
            )
        })
        .count();
    assert_eq!(family_events, 2, "one family: started once, finished once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_probes_never_overlap_and_final_ones_come_last() {
    let s = session().await;
    let ctx = s.context(Faults::none()).await.expect("layer");
    let running = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut probes = Vec::new();
    for (i, phase) in [
        Phase::Serial,
        Phase::Concurrent,
        Phase::Last,
        Phase::Serial,
        Phase::Final,
        Phase::Concurrent,
        Phase::Serial,
    ]
    .into_iter()
    .enumerate()
    {
        let (running, overlap, order) = (running.clone(), overlap.clone(), order.clone());
        let name = format!("{phase:?}-{i}");
        probes.push(
            Probe::custom(
                "test.phase",
                Family::Hygiene,
                name.clone(),
                vec![],
                Severity::Low,
                move |_ctx| {
                    let (running, overlap, order, name) = (
                        running.clone(),
                        overlap.clone(),
                        order.clone(),
                        name.clone(),
                    );
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        if phase != Phase::Concurrent && now > 1 {
                            overlap.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        order.lock().unwrap().push(name);
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(ProbeOutcome::pass("ok"))
                    }
                },
            )
            .phase(phase),
        );
    }
    let result = runner::run(
        &ProbePlan { probes },
        ctx,
        &RunOptions::default(),
        RunEnvironment::default(),
        None,
    )
    .await;
    assert_eq!(result.findings.len(), 7);
    assert_eq!(
        overlap.load(Ordering::SeqCst),
        0,
        "a serial probe ran beside another"
    );
    let order = order.lock().unwrap().clone();
    let pos = |p: &str| order.iter().position(|n| n.starts_with(p)).unwrap();
    let last_pos = |p: &str| order.iter().rposition(|n| n.starts_with(p)).unwrap();
    assert!(last_pos("Concurrent") < pos("Serial"), "{order:?}");
    assert!(last_pos("Serial") < pos("Final"), "{order:?}");
    assert!(pos("Final") < pos("Last"), "{order:?}");
    // Findings come back in plan order whatever order they ran in.
    let titles: Vec<&str> = result.findings.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(titles[0], "Serial-0");
    assert_eq!(titles[6], "Serial-6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_mid_run_gives_errors_never_passes() {
    let s = session().await;
    let ctx = s.context(Faults::none()).await.expect("layer");
    let families: BTreeSet<Family> = [Family::CrossTenant, Family::Pii, Family::Audit].into();
    let plan = s.plan(&ctx, &families, &[]);
    let total = plan.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        jobs: 2,
        probe_timeout: Duration::from_secs(30),
    };
    let run = tokio::spawn({
        let ctx = ctx.clone();
        async move { runner::run(&plan, ctx, &options, RunEnvironment::default(), Some(tx)).await }
    });
    // Let some probes finish, then take the server down under the run.
    let mut seen = 0;
    let mut after_kill: Vec<Verdict> = Vec::new();
    let mut killed = false;
    while let Some(event) = rx.recv().await {
        if let ProbeEventKind::ProbeFinished { finding } = event.kind {
            seen += 1;
            if killed {
                after_kill.push(finding.verdict);
            }
            if seen == 20 && !killed {
                s.database.stop_server().expect("stop the server");
                killed = true;
            }
        }
    }
    let result = run.await.expect("the run task");
    assert!(killed, "the run ended before 20 probes finished");
    assert_eq!(
        result.findings.len(),
        total,
        "every planned probe has a finding"
    );
    assert!(
        result.infrastructure_error.is_some(),
        "the outage was not noticed"
    );
    // Probes in flight when the server went away may still have passed; everything started
    // after it must be an error.
    let in_flight = options_jobs() + 1;
    let late: Vec<&Verdict> = after_kill.iter().skip(in_flight).collect();
    assert!(!late.is_empty(), "no probe finished after the kill");
    assert!(
        late.iter().all(|v| **v == Verdict::Error),
        "verdicts after the kill: {late:?}"
    );
}

fn options_jobs() -> usize {
    2
}

/// md5 of every fixture table's rows (the audit log aside, which grows by design).
async fn fingerprint(s: &Session) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables \
         WHERE schemaname IN ('public', 'preflight_meta') ORDER BY 1",
    )
    .fetch_all(s.truth.pool())
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for t in tables {
        let sql = format!(
            "SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
        );
        let h: String = sqlx::query_scalar(&sql)
            .fetch_one(s.truth.pool())
            .await
            .expect("hash");
        out.insert(t, h);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_leaves_the_fixture_data_unchanged() {
    let s = session().await;
    let before = fingerprint(&s).await;
    let result = run_families(&s, Faults::none(), &Family::IN_PROCESS).await;
    assert!(
        result.leftover_rows.is_empty(),
        "{:?}",
        result.leftover_rows
    );
    let after = fingerprint(&s).await;
    let changed: Vec<&String> = before
        .keys()
        .filter(|t| before.get(*t) != after.get(*t))
        .collect();
    assert!(changed.is_empty(), "tables changed by the run: {changed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_are_reportable_and_carry_no_raw_canary() {
    let s = session().await;
    // A broken layer, so failing findings with leaks and excerpts are among them.
    let faults: Faults = [
        preflight_enforcer::Fault::MaskOff,
        preflight_enforcer::Fault::NoTenantPredicate,
    ]
    .into_iter()
    .collect();
    let result = run_families(&s, faults, &[Family::CrossTenant, Family::Pii]).await;
    let fails: Vec<&Finding> = result
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .collect();
    assert!(!fails.is_empty(), "the broken layer should fail probes");
    let mut prints = BTreeSet::new();
    for f in &result.findings {
        assert!(!f.checklist.is_empty(), "{} has no checklist ids", f.code);
        assert!(
            prints.insert(f.fingerprint.clone()),
            "duplicate fingerprint {} ({})",
            f.fingerprint,
            f.title
        );
        assert_eq!(f.fingerprint, Finding::fingerprint_for(&f.code, &f.title));
    }
    for f in &fails {
        assert!(
            f.call.is_some() || !f.evidence.facts.is_empty(),
            "{} has no evidence",
            f.title
        );
    }
    assert!(
        fails.iter().any(|f| !f.evidence.leaks.is_empty()),
        "no failing finding names a leaked canary"
    );
    assert!(
        fails.iter().any(|f| f.location.is_some()),
        "no finding points at the policy file"
    );
    let text = serde_json::to_string(&result.findings).expect("json");
    let raw: Vec<String> = s
        .truth
        .canaries
        .find_in(&text)
        .iter()
        .map(|c| c.cell())
        .collect();
    assert!(raw.is_empty(), "raw canaries in findings: {raw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_staging_database_is_probed_without_a_single_write() {
    use preflight_probes::db::{provision, Db, FixtureOptions, StagingOptions};
    let base = testing::database().await;
    let staging = provision(
        &Db::Url {
            url: base.owner_url().to_string(),
            allow_writes: false,
        },
        &FixtureOptions {
            staging: StagingOptions {
                load_fixtures: false,
                agent_url: Some(base.agent_url().to_string()),
                audit_url: Some(base.audit_url().to_string()),
                superuser_url: None,
            },
            ..FixtureOptions::new(testing::fixtures_dir())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("staging: {}", e.report()));
    assert!(staging.read_only());
    let s = Session::open(
        staging,
        POLICY,
        "fixtures/shop/policy.yaml",
        &SessionOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("session: {}", runner::error_chain(&e)));
    let before = fingerprint(&s).await;
    let result = run_families(
        &s,
        Faults::none(),
        &[Family::CrossTenant, Family::Write, Family::Budget],
    )
    .await;
    let after = fingerprint(&s).await;
    assert_eq!(before, after, "a read-only run changed the database");
    assert!(result
        .findings
        .iter()
        .any(|f| f.code == "budget.statement_timeout"));
    for f in &result.findings {
        // The timeout probe locks a table, which a read-only run must not do to staging.
        let writes = f.family == "write"
            || f.code.starts_with("cross_tenant.write_")
            || f.code == "cross_tenant.include_foreign"
            || f.code == "budget.statement_timeout";
        if writes {
            assert_eq!(
                f.verdict,
                Verdict::NotVerified,
                "{} [{}]: {}",
                f.code,
                f.title,
                f.message
            );
            assert!(f.message.contains("read-only"), "{}", f.message);
        } else {
            assert_eq!(
                f.verdict,
                Verdict::Pass,
                "{} [{}]: {}",
                f.code,
                f.title,
                f.message
            );
        }
    }
}

/// Every `model:key` of the policy's models, as the audit log names written rows.
async fn row_subjects(s: &Session) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for m in s.policy.models.values() {
        let sql = format!(
            "SELECT {}::text FROM {}.{}",
            preflight_probes::truth::quote_ident(&m.primary_key),
            preflight_probes::truth::quote_ident(&m.schema),
            preflight_probes::truth::quote_ident(&m.table)
        );
        let keys: Vec<String> = sqlx::query_scalar(&sql)
            .fetch_all(s.truth.pool())
            .await
            .expect("keys");
        out.extend(keys.into_iter().map(|k| format!("{}:{k}", m.name)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_with_allow_writes_writes_only_its_own_rows_and_removes_them() {
    use preflight_probes::db::{provision, Db, FixtureOptions, StagingOptions};
    let base = testing::database().await;
    let staging = provision(
        &Db::Url {
            url: base.owner_url().to_string(),
            allow_writes: true,
        },
        &FixtureOptions {
            staging: StagingOptions {
                load_fixtures: false,
                agent_url: Some(base.agent_url().to_string()),
                audit_url: Some(base.audit_url().to_string()),
                superuser_url: None,
            },
            ..FixtureOptions::new(testing::fixtures_dir())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("staging: {}", e.report()));
    assert!(!staging.read_only());
    let s = Session::open(
        staging,
        POLICY,
        "fixtures/shop/policy.yaml",
        &SessionOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("session: {}", runner::error_chain(&e)));
    let before = fingerprint(&s).await;
    let existing = row_subjects(&s).await;
    let last_audit: i64 =
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM preflight_audit.audit_log")
            .fetch_one(s.truth.pool())
            .await
            .expect("audit position");
    let families = [
        Family::CrossTenant,
        Family::Pii,
        Family::Write,
        Family::Approval,
    ];
    let result = run_families(&s, Faults::none(), &families).await;
    // The write probes ran (not skipped as on a read-only database) and passed.
    let bad = non_pass(&result.findings);
    assert!(bad.is_empty(), "with --allow-writes:\n{bad}");
    let writers = result
        .findings
        .iter()
        .filter(|f| f.family == "write" || f.code.starts_with("cross_tenant.write_"))
        .count();
    assert!(writers > 10, "only {writers} write probes ran");
    // Every write the layer applied touched a row the probes created, never a staging row.
    let applied: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT tool, arguments->>'model', subjects FROM preflight_audit.audit_log \
         WHERE id > $1 AND decision = 'allow' \
           AND tool IN ('db_create', 'db_update', 'db_delete', 'db_bulk_update')",
    )
    .bind(last_audit)
    .fetch_all(s.truth.pool())
    .await
    .expect("applied writes");
    assert!(!applied.is_empty(), "no write was applied");
    for (tool, model, subjects) in &applied {
        let written: Vec<&String> = subjects
            .iter()
            .filter(|x| x.starts_with(&format!("{model}:")))
            .collect();
        assert!(!written.is_empty(), "{tool} on {model}: no subject");
        for w in written {
            assert!(
                !existing.contains(w),
                "{tool} wrote {w}, a row the probes did not create"
            );
        }
    }
    // ... and every such row is gone again; the staging data is as it was.
    assert!(
        result.leftover_rows.is_empty(),
        "{:?}",
        result.leftover_rows
    );
    assert_eq!(
        before,
        fingerprint(&s).await,
        "the run changed staging data"
    );
    let now = row_subjects(&s).await;
    assert_eq!(existing, now, "rows added or removed by the run");
}
