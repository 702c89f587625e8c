//! Positive controls: the self-test passes on the shipped policy (every control caught, every
//! probe code catching one, the healthy baseline passing), and every database control leaves the
//! database exactly as it found it.

use std::collections::BTreeSet;
use std::time::Instant;

use preflight_enforcer::Fault;
use preflight_probes::codes::Family;
use preflight_probes::controls::{Control, ControlEnv, DbControl};
use preflight_probes::families::audit::walk_chain;
use preflight_probes::runner::RunOptions;
use preflight_probes::selftest::run_self_test;
use preflight_probes::session::Session;

use crate::runner::{non_pass, session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_is_caught_and_every_probe_catches_one() {
    let s = session().await;
    let setup = s
        .self_test_setup(RunOptions::default(), Family::ALL.into_iter().collect())
        .expect("the built-in target runs the self-test");
    let started = Instant::now();
    let result = run_self_test(&setup, &Control::all(), |v| {
        eprintln!(
            "{:<32} {:>4} probes {:>5.1} s caught {}",
            v.control.map(|c| c.name()).unwrap_or("baseline"),
            v.findings.len(),
            v.duration.as_secs_f64(),
            v.caught().len()
        );
    })
    .await;
    eprintln!("{}", result.matrix());
    eprintln!("self-test took {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        result.baseline_failures().is_empty(),
        "the healthy layer does not pass:\n{}",
        non_pass(&result.baseline.findings)
    );
    assert!(
        result.uncaught_controls().is_empty(),
        "controls nobody caught: {:?}",
        result.uncaught_controls()
    );
    assert!(
        result.idle_codes().is_empty(),
        "probe codes that caught nothing: {:?}",
        result.idle_codes()
    );
    assert!(result.passed());
    // Every control of the layer ran (none was skipped for lack of a family).
    let ran: BTreeSet<&str> = result
        .variants
        .iter()
        .filter_map(|v| v.control.map(|c| c.name()))
        .collect();
    for f in Fault::ALL {
        assert!(ran.contains(f.as_str()), "{} did not run", f.as_str());
    }
    let report = result.to_report(Default::default());
    assert!(report
        .findings
        .iter()
        .all(|f| f.verdict == preflight_reports::Verdict::Pass));
}

/// Everything the database controls touch, as text.
async fn catalog_state(s: &Session) -> Vec<String> {
    let pool = s.truth.pool();
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s rls=%s force=%s owner=%s', c.oid::regclass, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('public', 'preflight_audit') AND c.relkind IN ('r', 'v') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    out.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT format('%s super=%s bypass=%s settings=%s', r.rolname, r.rolsuper, r.rolbypassrls, \
                    (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setrole = r.oid)) \
             FROM pg_roles r WHERE r.rolname LIKE 'preflight%' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("roles"),
    );
    out.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT format('%s %s enabled=%s', tgrelid::regclass, tgname, tgenabled) FROM pg_trigger \
             WHERE tgrelid = 'preflight_audit.audit_log'::regclass AND NOT tgisinternal ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("triggers"),
    );
    out.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT format('%s update=%s delete=%s', r.rolname, \
                    has_table_privilege(r.oid, 'preflight_audit.audit_log', 'UPDATE'), \
                    has_table_privilege(r.oid, 'preflight_audit.audit_log', 'DELETE')) \
             FROM pg_roles r WHERE r.rolname LIKE 'preflight%' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .expect("grants"),
    );
    let mut conn = pool.acquire().await.expect("connection");
    let walk = walk_chain(&mut conn).await.expect("chain");
    out.push(format!("chain broken: {:?}", walk.broken.map(|b| b.id)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_controls_change_the_database_and_restore_it_exactly() {
    let s = session().await;
    // Some audit records, written as the audit writer, so the tamper control has one to edit.
    let writer = sqlx::PgPool::connect(s.database.audit_url())
        .await
        .expect("audit writer");
    for i in 0..3 {
        sqlx::query(
            "INSERT INTO preflight_audit.audit_log (trace_id, tool, arguments, arguments_sha256, decision, policy_hash) \
             VALUES ($1, 'db_describe_schema', '{}', repeat('0', 64), 'allow', 'test')",
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
    for c in controls {
        let before = catalog_state(&s).await;
        let applied = c.apply(&env).await.unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                c.name(),
                preflight_probes::runner::error_chain(&e)
            )
        });
        let during = catalog_state(&s).await;
        assert_ne!(
            before,
            during,
            "{} changed nothing the catalog shows",
            c.name()
        );
        applied.restore(&env).await.unwrap_or_else(|e| {
            panic!(
                "{} restore: {}",
                c.name(),
                preflight_probes::runner::error_chain(&e)
            )
        });
        let after = catalog_state(&s).await;
        assert_eq!(before, after, "{} was not restored exactly", c.name());
    }
}
