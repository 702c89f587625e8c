//! Every family on the shipped policy and the built-in layer: all probes pass on the healthy
//! layer (on the local backend, and in a container when `PREFLIGHT_PG_IMAGE` is set), and each
//! family's probes fail against the faults that switch off what they check.

use preflight_enforcer::{Fault, Faults};
use preflight_probes::codes::Family;
use preflight_probes::db::{provision, testing, Db};
use preflight_probes::runner;
use preflight_probes::session::{Session, SessionOptions};
use preflight_reports::Verdict;

use crate::runner::{non_pass, run_families, session, POLICY};

async fn full_suite_passes(s: &Session) {
    let result = run_families(
        s,
        Faults::none(),
        &preflight_probes::codes::Family::IN_PROCESS,
    )
    .await;
    assert!(result.infrastructure_error.is_none());
    assert!(
        result.findings.len() > 100,
        "only {} probes",
        result.findings.len()
    );
    let bad = non_pass(&result.findings);
    assert!(
        bad.is_empty(),
        "the shipped policy does not pass every probe:\n{bad}"
    );
    // The sql family plans nothing on the built-in layer (it offers no SQL tool).
    for family in Family::IN_PROCESS.into_iter().filter(|f| *f != Family::Sql) {
        assert!(
            result.findings.iter().any(|f| f.family == family.as_str()),
            "no {} finding",
            family.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_passes_every_probe_on_the_local_backend() {
    full_suite_passes(&session().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_policy_passes_every_probe_in_a_container() {
    let image = match std::env::var("PREFLIGHT_PG_IMAGE") {
        Ok(i) if !i.trim().is_empty() => i,
        _ => {
            testing::prerequisite_missing(
                "the_shipped_policy_passes_every_probe_in_a_container",
                "PREFLIGHT_PG_IMAGE is not set (scripts/test sets it)",
            );
            return;
        }
    };
    let options = testing::test_fixture_options().expect("fixture options");
    let db = provision(&Db::Container { image }, &options)
        .await
        .unwrap_or_else(|e| panic!("container: {}", e.report()));
    let s = Session::open(
        db,
        POLICY,
        "fixtures/shop/policy.yaml",
        &SessionOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("session: {}", runner::error_chain(&e)));
    full_suite_passes(&s).await;
}

/// Runs `family` against a layer with `faults` and requires a failure of each of `codes`.
async fn fails_with(family: Family, faults: &[Fault], codes: &[&str]) {
    let s = session().await;
    let faults: Faults = faults.iter().copied().collect();
    let result = run_families(&s, faults.clone(), &[family]).await;
    for code in codes {
        assert!(
            result
                .findings
                .iter()
                .any(|f| f.code == *code && f.verdict == Verdict::Fail),
            "{code} did not fail with {faults:?}; non-passing findings:\n{}",
            non_pass(&result.findings)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_probes_fail_without_a_tenant_predicate() {
    fails_with(
        Family::CrossTenant,
        &[Fault::NoTenantPredicate],
        &[
            "cross_tenant.get_foreign_row",
            "cross_tenant.filter_foreign_keys",
            "cross_tenant.filter_foreign_reference",
            "cross_tenant.include_foreign",
            "cross_tenant.aggregate_forged_tenant",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_probes_fail_with_unsigned_cursors_and_unchecked_writes() {
    fails_with(
        Family::CrossTenant,
        &[
            Fault::CursorUnsigned,
            Fault::ForeignKeyUnchecked,
            Fault::TenantColumnWritable,
        ],
        &[
            "cross_tenant.cursor_foreign",
            "cross_tenant.cursor_rebound",
            "cross_tenant.write_foreign_reference",
            "cross_tenant.write_forged_tenant",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_probes_fail_when_redaction_is_off() {
    fails_with(
        Family::Pii,
        &[
            Fault::MaskOff,
            Fault::IncludeUnredacted,
            Fault::DescribeShowsDenied,
            Fault::OracleCheckOff,
        ],
        &[
            "pii.get_redacted",
            "pii.query_redacted",
            "pii.include_redacted",
            "pii.describe_schema",
            "pii.filter_oracle",
            "pii.order_oracle",
            "pii.aggregate_oracle",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pii_probes_fail_when_database_errors_leak() {
    fails_with(Family::Pii, &[Fault::ErrorDetailLeak], &["pii.error_leak"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_probes_fail_when_budgets_are_off() {
    fails_with(
        Family::Budget,
        &[
            Fault::ScanBudgetOff,
            Fault::RowBudgetOff,
            Fault::JoinDepthOff,
            Fault::TimeoutOff,
            Fault::QuotaOff,
        ],
        &[
            "budget.unbounded_scan",
            "budget.row_limit",
            "budget.join_depth",
            "budget.statement_timeout",
            "budget.quota",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_probes_fail_when_write_checks_are_off() {
    fails_with(
        Family::Write,
        &[
            Fault::ReasonNotRequired,
            Fault::WritableFieldsOff,
            Fault::TenantColumnWritable,
            Fault::DryRunWrites,
            Fault::RateLimitOff,
        ],
        &[
            "write.reason_required",
            "write.writable_fields",
            "write.tenant_column",
            "write.dry_run",
            "write.rate_limit",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_probes_fail_when_approvals_are_bypassed_or_replayable() {
    fails_with(
        Family::Approval,
        &[Fault::ApprovalsBypassed],
        &[
            "approval.pending",
            "approval.executes_once",
            "approval.expiry",
        ],
    )
    .await;
    fails_with(
        Family::Approval,
        &[Fault::ApprovalReplay],
        &["approval.replay_refused"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_probes_fail_when_calls_go_unrecorded_or_unsanitized() {
    fails_with(Family::Audit, &[Fault::AuditSkipped], &["audit.every_call"]).await;
    fails_with(
        Family::Audit,
        &[Fault::AuditSanitizeByKeyOnly],
        &["audit.arguments_sanitized", "audit.subject_erasure"],
    )
    .await;
}

/// CMP-4: a policy that sets no audit retention keeps a deleted subject's trail forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_erasure_fails_without_a_retention() {
    let retention = "  retention: {hot: 90d, warm: 365d, cold: 7y}\n";
    assert_eq!(POLICY.matches(retention).count(), 1);
    let s = Session::open(
        testing::database().await,
        &POLICY.replacen(retention, "", 1),
        "fixtures/shop/policy.yaml",
        &SessionOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("session: {}", runner::error_chain(&e)));
    let result = run_families(&s, Faults::none(), &[Family::Audit]).await;
    let erasure = result
        .findings
        .iter()
        .find(|f| f.code == "audit.subject_erasure")
        .expect("the erasure probe ran");
    assert_eq!(erasure.verdict, Verdict::Fail, "{}", erasure.message);
    assert!(
        erasure
            .evidence
            .facts
            .iter()
            .any(|f| f.contains("retention")),
        "{:?}",
        erasure.evidence.facts
    );
    // Everything else about the subject held.
    assert!(
        result
            .findings
            .iter()
            .any(|f| f.code == "audit.subject_access" && f.verdict == Verdict::Pass),
        "{}",
        non_pass(&result.findings)
    );
}

/// CMP-3 and CMP-4: records without their subjects hide a subject's calls from a subject-access
/// request and a deleted subject's trail from erasure and retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_probes_fail_when_records_drop_their_subjects() {
    fails_with(
        Family::Audit,
        &[Fault::AuditSubjectsDropped],
        &["audit.subject_access", "audit.subject_erasure"],
    )
    .await;
}
