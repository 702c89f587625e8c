//! Positive controls: the self-test passes on the shipped policy (every probe instance fails
//! under each control it declares and passes on the healthy layer, every control is undone
//! exactly), and every database control changes the database and restores it bit for bit.

use std::time::Instant;

use preflight_enforcer::Fault;
use preflight_probes::codes::Family;
use preflight_probes::controls::{Control, ControlEnv, DbControl};
use preflight_probes::fingerprint::Fingerprint;
use preflight_probes::runner::RunOptions;
use preflight_probes::selftest::run_self_test;

use crate::runner::{non_pass, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_is_killed_by_its_controls_and_every_control_is_undone() {
    let s = session().await;
    let setup = s
        .self_test_setup(
            RunOptions::default(),
            Family::IN_PROCESS.into_iter().collect(),
        )
        .expect("the built-in target runs the self-test");
    let started = Instant::now();
    let result = run_self_test(&setup, &Control::all(), |v| {
        eprintln!(
            "{:<32} {:>4} probes {:>5.1} s killed {} of {}",
            v.name(),
            v.findings.len(),
            v.duration.as_secs_f64(),
            v.targets.len() - v.survivors().len(),
            v.targets.len()
        );
    })
    .await;
    eprintln!("{}", result.matrix());
    for g in result.gaps() {
        eprintln!("GAP {g}");
    }
    eprintln!("self-test took {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        result.baseline_failures().is_empty(),
        "the healthy layer does not pass:\n{}",
        non_pass(&result.baseline.findings)
    );
    let (instances, killed) = result.kill_totals();
    assert!(instances > 100, "only {instances} instances");
    assert_eq!(
        killed,
        instances,
        "instances not killed:\n{}",
        result
            .unkilled()
            .iter()
            .map(|((code, title), why)| format!("{code} [{title}]: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        result.variant_problems().is_empty(),
        "{:?}",
        result.variant_problems()
    );
    assert!(
        result.undeclared_controls().is_empty(),
        "{:?}",
        result.undeclared_controls()
    );
    assert!(result.passed(), "{:?}", result.gaps());
    // Every control ran, none was skipped for want of an instance that declares it.
    let ran: Vec<&str> = result.variants.iter().map(|v| v.name()).collect();
    for c in Control::all() {
        assert!(ran.contains(&c.name()), "{} did not run", c.name());
    }
    let report = result.to_report(Default::default());
    assert!(report
        .findings
        .iter()
        .all(|f| f.verdict == preflight_reports::Verdict::Pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_controls_change_the_database_and_restore_it_exactly() {
    let s = session().await;
    // Audit records, written as the audit writer, so the tamper control has one to edit; all
    // `error` records, which a flip that is its own inverse only for allow/deny would not
    // restore.
    let writer = sqlx::PgPool::connect(s.database.audit_url())
        .await
        .expect("audit writer");
    for i in 0..3 {
        sqlx::query(
            "INSERT INTO preflight_audit.audit_log (trace_id, tool, arguments, arguments_sha256, decision, policy_hash) \
             VALUES ($1, 'db_describe_schema', '{}', repeat('0', 64), 'error', 'test')",
        )
        .bind(format!("control-test-{i}"))
        .execute(&writer)
        .await
        .expect("append an audit record");
    }
    let agent = s.agent_role.clone().expect("agent role");
    let env = ControlEnv {
        owner: s.truth.pool(),
        superuser_url: s.database.superuser_url(),
        agent_role: &agent,
        audit_role: s.audit_role.as_deref(),
        policy: &s.policy,
    };
    let mut controls: Vec<Control> = DbControl::ALL.iter().map(|d| Control::Db(*d)).collect();
    controls.push(Control::Fault(Fault::RlsDisabled));
    controls.push(Control::Fault(Fault::TenantColumnWritable));
    let pool = s.truth.pool();
    for c in controls {
        let before = Fingerprint::take(pool, None).await.expect("fingerprint");
        let mut applied = c.apply(&env).await.unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                c.name(),
                preflight_probes::runner::error_chain(&e)
            )
        });
        let during = Fingerprint::take(pool, Some(&before))
            .await
            .expect("fingerprint");
        assert!(
            !during.diff(&before).is_empty(),
            "{} changed nothing the fingerprint shows",
            c.name()
        );
        applied.restore(&env).await.unwrap_or_else(|e| {
            panic!(
                "{} restore: {}",
                c.name(),
                preflight_probes::runner::error_chain(&e)
            )
        });
        let after = Fingerprint::take(pool, Some(&before))
            .await
            .expect("fingerprint");
        assert_eq!(
            after.diff(&before),
            Vec::<String>::new(),
            "{} was not restored exactly",
            c.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fingerprint_sees_rows_left_behind_and_edits_of_old_audit_records() {
    let s = session().await;
    let pool = s.truth.pool();
    let before = Fingerprint::take(pool, None).await.expect("fingerprint");
    assert!(before.len() > 50, "only {} objects", before.len());
    // A row planted and not removed.
    sqlx::query("INSERT INTO public.carriers (name, tracking_url_template) VALUES ('left behind', 'https://example.invalid/{}')")
        .execute(pool)
        .await
        .expect("insert");
    let after = Fingerprint::take(pool, Some(&before))
        .await
        .expect("fingerprint");
    let diff = after.diff(&before);
    assert!(
        diff.len() == 1 && diff[0].starts_with("data public.carriers"),
        "{diff:?}"
    );
    sqlx::query("DELETE FROM public.carriers WHERE name = 'left behind'")
        .execute(pool)
        .await
        .expect("delete");
    let after = Fingerprint::take(pool, Some(&before))
        .await
        .expect("fingerprint");
    assert!(after.diff(&before).is_empty(), "{:?}", after.diff(&before));
}
