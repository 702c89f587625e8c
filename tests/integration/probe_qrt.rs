//! The review self-check of the default run: QRT-2 … QRT-5 and OPS-8 verified on a short quarter
//! generated through the layer under test (the default run's own verification is in
//! checklist_cli.rs), and each item failed by a layer whose audit log breaks what the review
//! needs: denials without their code (QRT-2), calls without their duration (QRT-3), writes
//! without their reason (QRT-4), a regression case the layer no longer holds (QRT-5), no audit
//! record at all (every item, OPS-8 among them). `--review FILE` takes precedence.

use std::path::Path;

use serde_json::Value;

use crate::checklist_cli::{checklist, item, probe, status};

const ITEMS: [&str; 5] = ["QRT-2", "QRT-3", "QRT-4", "QRT-5", "OPS-8"];

/// `probe --only review --insecure-fault FAULT`: the items that fail, the rest verified by the
/// self-check.
fn variant(fault: &str, failing: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let (code, log) = probe(&["--only", "review", "--insecure-fault", fault], &out);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("through the layer (faults {fault})")),
        "{log}"
    );
    let c = checklist(&out);
    for id in ITEMS {
        let want = if failing.contains(&id) {
            "failed"
        } else {
            "verified"
        };
        assert_eq!(status(&c, id), want, "{fault}: {}", item(&c, id));
    }
    let report = report(&out);
    for f in findings(&report) {
        let id = f["checklist"][0].as_str().unwrap();
        if failing.contains(&id) {
            let m = f["message"].as_str().unwrap();
            assert!(m.contains("did not find what was planted"), "{m}");
            assert!(m.contains("generated"), "{m}");
            assert!(
                !f["evidence"]["facts"].as_array().unwrap().is_empty(),
                "{f}"
            );
        }
    }
}

fn report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn findings(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("review.self_check."))
        })
        .collect()
}

#[test]
fn denials_audited_without_their_code_fail_qrt_2() {
    variant("audit_error_code_dropped", &["QRT-2"]);
}

#[test]
fn calls_audited_without_their_duration_fail_qrt_3() {
    variant("audit_duration_unmeasured", &["QRT-3"]);
}

#[test]
fn writes_audited_without_their_reason_fail_qrt_4() {
    variant("audit_reason_dropped", &["QRT-4"]);
}

#[test]
fn a_layer_that_accepts_writes_without_a_reason_fails_qrt_5() {
    variant("reason_not_required", &["QRT-5"]);
}

#[test]
fn a_layer_that_audits_nothing_fails_every_item() {
    variant("audit_skipped", &ITEMS);
}

/// The self-check keeps what it generated for an auditor to re-read: the log, the plants, the
/// review; a team's own review given with `--review` replaces it on the checklist.
#[test]
fn the_generated_quarter_is_kept_and_a_teams_review_takes_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let (code, log) = probe(&["--only", "review"], &out);
    assert_eq!(code, Some(0), "{log}");
    let kept = out.join("review-self-check");
    for f in ["audit.jsonl", "planted.json", "review.json"] {
        assert!(kept.join(f).is_file(), "{f} missing");
    }
    let r = report(&out);
    assert_eq!(findings(&r).len(), 5, "{r}");
    assert!(findings(&r).iter().all(|f| f["verdict"] == "pass"), "{r}");

    // The generated quarter's review, given as a team's: the self-check does not run.
    let (code, log) = probe(
        &["--only", "review", "--review", &kept.to_string_lossy()],
        &out.with_file_name("again"),
    );
    assert!(!log.contains("generating a"), "{log}");
    let r = report(&out.with_file_name("again"));
    assert!(findings(&r).is_empty(), "{r}");
    let mut codes: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "review.ops_8",
            "review.qrt_2",
            "review.qrt_3",
            "review.qrt_4",
            "review.qrt_5"
        ],
        "{log}"
    );
    // Its attention list names the plants (a concentrated denial, a slow tool, …): exit 1.
    assert_eq!(code, Some(1), "{log}");
}

/// A layer preflight did not write: no quarter is generated through it; the items stay not
/// verified and say how its own quarter is checked.
#[test]
fn a_layer_preflight_did_not_write_keeps_the_items_not_verified_with_the_instruction() {
    let Some(bin) = crate::targets_cli::venv_bin() else {
        return;
    };
    let repo = crate::targets_cli::repo();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_preflight"))
        .args([
            "probe",
            "--db",
            "local",
            "--only",
            "lint,review",
            "--policy",
        ])
        .arg(repo.join("tests/targets/structured/policy.yaml"))
        .arg("--target")
        .arg(repo.join("tests/targets/structured/profile.yaml"))
        .arg("--out")
        .arg(&out)
        .env("PATH", crate::targets_cli::path_with_venv(&bin))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run preflight");
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!log.contains("generating a"), "{log}");
    let c = checklist(&out);
    for id in ITEMS {
        assert_eq!(status(&c, id), "not_verified", "{}", item(&c, id));
        let reason = item(&c, id)["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("built-in layer only")
                && reason.contains("preflight review")
                && reason.contains("--review FILE"),
            "{id}: {reason}"
        );
    }
}
