//! The generator's 90-day log through the real built-in layer on a real Postgres, and the
//! review over it: every plant found, nothing else flagged; a tampered copy not reviewed.

use std::collections::BTreeMap;
use std::sync::Arc;

use preflight_enforcer::policy::{self, Catalog, Policy};
use preflight_probes::db::testing;
use preflight_review::generate::{self, GenPlan, Planted};
use preflight_review::source::{review_jsonl, Since};
use preflight_review::{render, selfcheck, Inputs, Review, SuiteResult};

const RECORDS: u64 = 10_000;

fn load(path: &std::path::Path) -> Policy {
    policy::load(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn review(log: &std::path::Path, before: &Policy, after: &Policy) -> Review {
    let inputs = Inputs {
        policy: Some(after.clone()),
        known: vec![before.clone(), after.clone()],
        suite: SuiteResult::NotRun("not part of this test".into()),
    };
    review_jsonl(log, &Since::Days(90), "90d", &inputs).expect("review runs")
}

fn check_plants(r: &Review, p: &Planted, before: &Policy, after: &Policy) {
    assert!(r.chain.verified, "{:?}", r.chain);
    let s = r.sections.as_ref().expect("a verified log has sections");

    // QRT-2: the top denial, concentrated on the planted principal; the spread one, spread.
    let top = &s.qrt2_denials.top[0];
    assert_eq!(
        (
            top.code.as_str(),
            top.tool.as_str(),
            top.model.as_str(),
            top.field.as_str()
        ),
        (p.top_denial.code.as_str(), "db_query", "customers", "ssn"),
        "{:#?}",
        s.qrt2_denials.top
    );
    assert_eq!(top.count, p.top_denial.count);
    assert_eq!(top.top_principal, "globex/agent-07");
    assert_eq!(top.top_principal_count, p.top_denial.by_principal);
    assert_eq!(top.pattern, "concentrated");
    let spread = s
        .qrt2_denials
        .top
        .iter()
        .find(|g| g.model == "staff_salaries")
        .expect("the staff_salaries denials are listed");
    assert_eq!(spread.code, "model_not_allowed");
    assert_eq!(spread.pattern, "spread", "{spread:?}");

    // QRT-3: exactly the slow tool is flagged.
    assert_eq!(
        s.qrt3_latency.flagged.len(),
        1,
        "{:?}",
        s.qrt3_latency.flagged
    );
    assert!(s.qrt3_latency.flagged[0].starts_with("db_describe_schema is slow"));
    assert_eq!(s.qrt3_latency.slowest.len(), 20);
    let sl = &s.qrt3_latency.slowest;
    assert!(sl.windows(2).all(|w| w[0].duration_ms >= w[1].duration_ms));

    // QRT-4: every bad reason found, no good one flagged. Short texts also name nothing, and a
    // short or unnamed text used on many tickets is reused too.
    let q = &s.qrt4_reasons;
    let planted = |k: &str| p.bad_reasons.get(k).copied().unwrap_or(0);
    let bad: u64 = p.bad_reasons.values().sum();
    assert!(planted("placeholder") > 0 && planted("too_short") > 0);
    assert!(planted("reused") > 0 && planted("unnamed") > 0);
    assert_eq!(q.writes - q.coherent, bad, "{:?}", q.by_rule);
    assert_eq!(q.coherent, p.good_reasons);
    let got = |k: &str| q.by_rule.get(k).copied().unwrap_or(0);
    assert_eq!(got("placeholder"), planted("placeholder"));
    assert_eq!(got("too_short"), planted("too_short"));
    assert_eq!(got("unnamed"), planted("unnamed") + planted("too_short"));
    assert!(got("reused") >= planted("reused"));
    assert_eq!(got("missing"), 0);

    // OPS-8: each planted window fired once, at its hour; nothing else fired.
    let alerts: BTreeMap<&str, &preflight_review::model::Alert> =
        s.ops8_alerts.iter().map(|a| (a.name.as_str(), a)).collect();
    assert_eq!(
        p.outcomes.get("deny:relation_not_allowed").copied(),
        Some(p.denial_spike_count),
        "{:?}",
        p.outcomes
    );
    let spike = &alerts["denial spike"].fired;
    assert_eq!(spike.len(), 1, "{spike:?}");
    assert_eq!(spike[0].from, p.denial_spike_hour);
    let writes = &alerts["write rate above baseline"].fired;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].from, p.write_spike_hour);
    let gap = &alerts["audit sink gap"].fired;
    assert_eq!(gap.len(), 1, "{gap:?}");
    assert!(
        gap[0].from <= p.gap_from && gap[0].to >= p.gap_to,
        "{gap:?}"
    );
    assert!(alerts["statement timeouts"].fired.is_empty());

    // Drift: the two policies, and what changed between them.
    let hashes: Vec<&str> = s.drift.hashes.iter().map(|h| h.hash.as_str()).collect();
    assert_eq!(hashes, vec![before.hash.as_str(), after.hash.as_str()]);
    assert_eq!(s.drift.changes.len(), 1);
    let step = &s.drift.changes[0];
    assert!(step.at >= p.policy_change_at);
    let texts: Vec<&str> = step
        .changes
        .as_ref()
        .expect("both policies are known")
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(
        texts,
        vec![
            "customers.email is now returned unmasked (was masked)",
            "max_scan_rows raised from 10,000 to 1,000,000 on every model",
        ]
    );
    assert!(r.needs_attention());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_finds_exactly_what_the_generator_planted() {
    let db = testing::database().await;
    let owner = db.owner_pool().await.expect("owner pool");
    let catalog = Catalog::read(&owner).await.expect("catalog");
    let dir = tempfile::tempdir().unwrap();
    let load_text = |text: String, name: &str| {
        Arc::new(
            policy::load_str(
                &text,
                &dir.path().join(name).display().to_string(),
                Some(&catalog),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
    };
    let before = load_text(generate::policy_before_text(), generate::POLICY_BEFORE);
    let after = load_text(generate::policy_after_text(), generate::POLICY_AFTER);
    let plan = GenPlan {
        records: RECORDS,
        ..GenPlan::default()
    };
    let g = generate::generate(db.agent_url(), (before, after), dir.path(), &plan)
        .await
        .expect("generate");
    let p = &g.planted;
    assert!(p.records >= RECORDS - 40, "{}", p.records);
    assert_eq!(p.top_denial.code, "field_denied", "{:?}", p.outcomes);

    // The policy files as written, loaded as a reviewer would (no catalog).
    let (before, after) = (load(&g.policy_before), load(&g.policy_after));
    assert_eq!(
        p.policy_hashes,
        vec![before.hash.clone(), after.hash.clone()]
    );
    let r = review(&g.log, &before, &after);
    check_plants(&r, p, &before, &after);
    // The self-check `preflight probe` runs on a short quarter agrees on the full one: every
    // item as planted but the suite, which this test does not run.
    for c in selfcheck::compare(&r, p) {
        assert_eq!(c.differences.is_empty(), c.item != "QRT-5", "{c:?}");
    }
    let out = dir.path().join("review");
    render::write_all(&r, &out).expect("write the review");
    let md = std::fs::read_to_string(out.join("review.md")).unwrap();
    for heading in [
        "## QRT-2", "## QRT-3", "## QRT-4", "## QRT-5", "## QRT-1", "## OPS-8", "## Drift",
    ] {
        assert!(md.contains(heading), "{heading} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("review.json")).unwrap()).unwrap();
    assert_eq!(json["chain"]["verified"], true);

    // One edited record (a denial turned into an allow) and the log is not reviewed.
    let text = std::fs::read_to_string(&g.log).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let victim = lines
        .iter()
        .position(|l| l.contains("\"decision\":\"deny\"") && l.contains("\"ssn\""))
        .expect("a denial to edit");
    lines[victim] = lines[victim].replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    let t = review(&tampered, &before, &after);
    assert!(!t.chain.verified);
    assert!(t.sections.is_none());
    assert!(
        t.chain
            .first_break
            .as_deref()
            .unwrap_or("")
            .contains("edited"),
        "{:?}",
        t.chain
    );
    assert!(t.attention[0].contains("does not verify"));
    let md = render::to_markdown(&t);
    assert!(md.contains("DOES NOT VERIFY"));
    assert!(!md.contains("## QRT-2"));
}
