//! Test support shared by the unit tests, the integration tests and downstream crates: a
//! [`sample_report`] that holds every verdict and every severity (with hostile strings and a
//! planted secret), and [`redact_snapshot`], which masks what changes between runs so snapshots
//! stay stable.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde_json::json;

use crate::model::{
    Evidence, Finding, Location, Report, ReportKind, RunEnvironment, Severity, ToolCallRecord,
    Verdict, REPORT_SCHEMA_VERSION,
};

/// A title exercising every escaping rule: markup, CDATA end, quotes, Markdown table and code
/// syntax, control characters, a bidi override and a GitHub mention.
pub const HOSTILE_TITLE: &str =
    "db_query on \"notes\" with <script>alert('x')</script> ]]> | `rm` \u{7}\u{1b}[2J \u{202e}txt.exe @octocat";

/// A secret planted in the sample report; no renderer may print it.
pub const PLANTED_PASSWORD: &str = "hunter2-s3cret";
pub const PLANTED_TOKEN: &str = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX";

fn finding(
    code: &str,
    family: &str,
    title: &str,
    checklist: &[&str],
    severity: Severity,
    verdict: Verdict,
    message: &str,
) -> Finding {
    Finding {
        code: code.into(),
        family: family.into(),
        title: title.into(),
        checklist: checklist.iter().map(|s| s.to_string()).collect(),
        severity,
        verdict,
        message: message.into(),
        call: None,
        response_excerpt: None,
        evidence: Evidence {
            summary: String::new(),
            ..Evidence::default()
        },
        location: None,
        fingerprint: Finding::fingerprint_for(code, title),
        duration: Duration::from_millis(7),
    }
}

fn call(tool: &str, arguments: serde_json::Value, trace: &str) -> Option<ToolCallRecord> {
    Some(ToolCallRecord {
        tool: tool.into(),
        tenant: "acme".into(),
        user: "alice@acme.test".into(),
        arguments,
        trace_id: trace.into(),
    })
}

fn loc(line: usize) -> Option<Location> {
    Some(Location {
        path: "fixtures/policies/shop.yaml".into(),
        line,
        column: 5,
    })
}

pub fn sample_environment() -> RunEnvironment {
    RunEnvironment {
        preflight_version: "0.1.0".into(),
        policy_path: "fixtures/policies/shop.yaml".into(),
        policy_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        fixtures_hash: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
        database_backend: "local (/usr/lib/postgresql/15/bin)".into(),
        backend_reason: "no Docker daemon answered".into(),
        server_version: "PostgreSQL 15.8".into(),
        target: "builtin".into(),
        started_at: "2026-11-26T01:00:00Z".into(),
        not_applicable: Vec::new(),
    }
}

/// Every verdict, every severity, every evidence kind, with and without location and call.
pub fn sample_report() -> Report {
    let mut findings = Vec::new();

    let mut f = finding(
        "cross_tenant.get_by_foreign_id",
        "cross_tenant",
        "db_get on customers with a globex id",
        &["PRE-1", "ISO-3"],
        Severity::Critical,
        Verdict::Fail,
        "db_get returned a row owned by tenant globex to a principal of acme; add the tenant predicate to primary-key reads.",
    );
    f.call = call(
        "db_get",
        json!({"model": "customers", "id": 1042}),
        "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    f.response_excerpt = Some(r#"{"id":1042,"name":"GLOB…","tenant_id":"globex"}"#.into());
    f.evidence = Evidence {
        summary: "row customers#1042 belongs to globex (ground truth) but was returned to acme"
            .into(),
        rows: vec![json!({"id": 1042, "tenant_id": "globex", "name": "GLOB…"})],
        audit_records: vec![
            json!({"seq": 17, "tool": "db_get", "tenant": "acme", "outcome": "ok"}),
        ],
        sql: vec![r#"SELECT "tenant_id" FROM "customers" WHERE "id" = $1"#.into()],
        facts: vec![],
        leaks: vec!["GLOB… (globex.customers.name#1042)".into()],
    };
    f.location = loc(12);
    findings.push(f);

    let mut f = finding(
        "cross_tenant.filter_forged_tenant",
        "cross_tenant",
        "db_query on orders with tenant_id = globex in where",
        &["PRE-1", "ISO-1", "ISO-3"],
        Severity::Critical,
        Verdict::Pass,
        "the forged tenant filter was ignored; only acme rows came back",
    );
    f.call = call(
        "db_query",
        json!({"model": "orders", "where": {"tenant_id": {"eq": "globex"}}}),
        "a1",
    );
    f.evidence.summary = "0 of 0 returned rows belong to globex".into();
    findings.push(f);

    let mut f = finding(
        "pii.masked_field_visible",
        "pii",
        HOSTILE_TITLE,
        &["PRE-2", "RED-2"],
        Severity::High,
        Verdict::Fail,
        "customers.email is declared `mask` but came back in clear | fix: set action: mask <b>now</b>",
    );
    f.call = call(
        "db_query",
        json!({"model": "notes", "select": ["body"], "where": {"body": {"contains": "</pre><script>alert(1)</script>"}}}),
        "b2",
    );
    f.response_excerpt = Some(format!(
        "error: could not connect to postgres://agent:{PLANTED_PASSWORD}@db.internal:5432/shop with Authorization: Bearer {PLANTED_TOKEN}"
    ));
    f.evidence = Evidence {
        summary: "canary for acme.customers.email#3 appeared unmasked".into(),
        rows: vec![json!({"email": "ALIC…", "note": "]]><![CDATA[x"})],
        audit_records: vec![],
        sql: vec![],
        facts: vec![format!("api_key={PLANTED_TOKEN}")],
        leaks: vec!["ALIC… (acme.customers.email#3)".into()],
    };
    f.location = loc(31);
    findings.push(f);

    let mut f = finding(
        "pii.describe_schema_hides_denied",
        "pii",
        "db_describe_schema omits customers.password_hash",
        &["RED-4"],
        Severity::High,
        Verdict::Pass,
        "denied fields are absent from the schema description",
    );
    f.call = call("db_describe_schema", json!({}), "c3");
    f.evidence.summary = "password_hash not listed".into();
    findings.push(f);

    let mut f = finding(
        "budget.unbounded_scan_refused",
        "budget",
        "unbounded db_query on events",
        &["PRE-3", "BUD-1"],
        Severity::Medium,
        Verdict::Error,
        "the probe could not run: the database connection closed while the query ran",
    );
    f.call = call("db_query", json!({"model": "events"}), "d4");
    f.evidence.summary = "connection reset by peer after 3 s".into();
    f.evidence.facts = vec!["events: reltuples=200000".into()];
    f.duration = Duration::from_millis(3012);
    findings.push(f);

    let mut f = finding(
        "write.reason_required",
        "write",
        "db_update on orders without a reason",
        &["PRE-4", "WRT-1"],
        Severity::Low,
        Verdict::NotVerified,
        "writes need part 2 of the enforcement layer; not verified",
    );
    f.evidence.summary = "write tools are not offered by this target".into();
    findings.push(f);

    let mut f = finding(
        "audit.every_call_recorded",
        "audit",
        "every tool call has exactly one audit record",
        &["PRE-6", "AUD-1"],
        Severity::Info,
        Verdict::Pass,
        "42 calls, 42 audit records",
    );
    f.evidence.audit_records = vec![json!({"seq": 1, "tool": "db_get", "trace_id": "4bf92f35"})];
    f.evidence.summary = "42 of 42 calls audited".into();
    findings.push(f);

    let mut f = finding(
        "hygiene.rls_forced",
        "hygiene",
        "row-level security forced on customers",
        &["ISO-5"],
        Severity::Medium,
        Verdict::Fail,
        "customers has RLS enabled but not forced: the table owner bypasses it. Run ALTER TABLE customers FORCE ROW LEVEL SECURITY.",
    );
    f.evidence.facts = vec!["customers: relrowsecurity=true relforcerowsecurity=false".into()];
    f.evidence.sql =
        vec!["SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = $1".into()];
    f.evidence.summary = "RLS enabled, not forced".into();
    findings.push(f);

    let mut f = finding(
        "lint.max_join_depth",
        "lint",
        "max_join_depth is set and at most 3",
        &["BUD-4"],
        Severity::Low,
        Verdict::Pass,
        "max_join_depth: 2",
    );
    f.location = loc(48);
    findings.push(f);

    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        kind: ReportKind::Probe,
        environment: sample_environment(),
        findings,
        duration: Duration::from_millis(4321),
        tool_calls: 42,
        probe_duration: Duration::from_millis(3000),
        notes: Vec::new(),
        attempts: Vec::new(),
    }
}

/// A report with `n` failing findings carrying bulky evidence, to test size limits.
pub fn large_report(n: usize) -> Report {
    let mut r = sample_report();
    for i in 0..n {
        let title = format!("db_get on customers #{i} with a globex id");
        let mut f = finding(
            "cross_tenant.get_by_foreign_id",
            "cross_tenant",
            &title,
            &["PRE-1", "ISO-3"],
            Severity::Critical,
            Verdict::Fail,
            "db_get returned a row owned by another tenant",
        );
        f.evidence.summary = "row belongs to globex".into();
        f.evidence.rows = (0..20)
            .map(|j| json!({"id": i * 100 + j, "tenant_id": "globex", "payload": "x".repeat(40)}))
            .collect();
        r.findings.push(f);
    }
    r
}

static VOLATILE: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)",
            "[timestamp]",
        ),
        (
            r#"(\b(?:time|duration|duration_ms)"?\s*[=:]\s*"?)\d+(?:\.\d+)?"#,
            "${1}[duration]",
        ),
        (r"\b\d+(?:\.\d+)? ?(?:ms|s)\b", "[duration]"),
        (r"(?:/tmp|/var/folders)/[^\s\x22'<>)]+", "[tmp]"),
        (r"(?:127\.0\.0\.1|localhost):\d{2,5}", "[host:port]"),
    ]
    .into_iter()
    // The patterns are literals exercised by every snapshot test.
    .map(|(re, with)| (Regex::new(re).expect("snapshot redaction pattern"), with))
    .collect()
});

/// Masks durations, timestamps, temporary paths and local ports.
pub fn redact_snapshot(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in VOLATILE.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_covers_every_variant() {
        let r = sample_report();
        for v in Verdict::ALL {
            assert!(r.findings.iter().any(|f| f.verdict == v), "no {v:?}");
        }
        for s in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert!(r.findings.iter().any(|f| f.severity == s), "no {s:?}");
        }
    }

    #[test]
    fn redact_snapshot_masks_volatile_parts() {
        let out = redact_snapshot(
            "at 2026-11-26T01:02:03.123Z took 12 ms (1.5 s) time=\"0.012\" \"duration_ms\": 4321 in /tmp/.tmpAbC/report.json on 127.0.0.1:55012",
        );
        assert_eq!(
            out,
            "at [timestamp] took [duration] ([duration]) time=\"[duration]\" \"duration_ms\": [duration] in [tmp] on [host:port]"
        );
    }
}
