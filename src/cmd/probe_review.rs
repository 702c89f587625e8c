//! `preflight probe --review FILE`: the quarterly review's results (`review.json` from
//! `preflight review`, or the folder holding it) on the same checklist as the probes, so a team
//! that reviews its production audit log gets QRT-2 … QRT-5 and OPS-8 on the one page.
//!
//! Each item passes when the review read a log whose chain verifies and found nothing in that
//! section for a person's attention; it fails when the chain does not verify (a broken log is
//! never reviewed as if sound) or when the section needs attention (the review's own words are
//! the evidence); QRT-5 is `not_verified` when the review did not run the suite.

use std::path::{Path, PathBuf};
use std::time::Duration;

use preflight_reports::{Evidence, Finding, Severity, Verdict};
use serde_json::Value;

use crate::error::CliError;

/// The review's sections, by checklist item.
const SECTIONS: [(&str, &str, &str); 5] = [
    ("QRT-2", "qrt2_denials", "the most common denials"),
    ("QRT-3", "qrt3_latency", "the longest-running calls"),
    ("QRT-4", "qrt4_reasons", "every write's reason"),
    ("QRT-5", "qrt5_suite", "the regression suite"),
    ("OPS-8", "ops8_alerts", "the alert conditions"),
];

/// A review read from disk, before any database is started.
#[derive(Debug)]
pub struct ReviewInput {
    path: PathBuf,
    doc: Value,
}

/// Reads `review.json` (or `DIR/review.json`); a file that is not a review is a usage error
/// naming what was expected.
pub fn read(path: &Path) -> Result<ReviewInput, CliError> {
    let file = if path.is_dir() {
        path.join("review.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        CliError::config(format!(
            "--review {}: cannot read: {e} (expected the review.json `preflight review` writes, or its folder)",
            file.display()
        ))
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::config(format!(
            "--review {}:{}:{}: not JSON: {e}",
            file.display(),
            e.line(),
            e.column()
        ))
    })?;
    for key in ["source", "window", "chain", "attention"] {
        if doc.get(key).is_none() {
            return Err(CliError::config(format!(
                "--review {}: no `{key}`: expected the review.json `preflight review` writes",
                file.display()
            )));
        }
    }
    if doc["chain"]["verified"].as_bool().is_none() {
        return Err(CliError::config(format!(
            "--review {}: `chain.verified`: expected true or false",
            file.display()
        )));
    }
    Ok(ReviewInput { path: file, doc })
}

fn finding(id: &str, what: &str, verdict: Verdict, message: String, evidence: Evidence) -> Finding {
    let code = format!("review.{}", id.to_ascii_lowercase().replace('-', "_"));
    let title = format!("the quarterly review: {what} ({id})");
    Finding {
        fingerprint: Finding::fingerprint_for(&code, &title),
        code,
        family: "review".into(),
        title,
        checklist: vec![id.to_string()],
        severity: Severity::Medium,
        verdict,
        message,
        call: None,
        response_excerpt: None,
        evidence,
        location: None,
        duration: Duration::ZERO,
    }
}

/// One finding per review item.
pub fn findings(input: &ReviewInput) -> Vec<Finding> {
    let d = &input.doc;
    let source = d["source"].as_str().unwrap_or("?");
    let window = format!(
        "{} – {}",
        d["window"]["from"].as_str().unwrap_or("?"),
        d["window"]["to"].as_str().unwrap_or("?")
    );
    let records = d["chain"]["records"].as_u64().unwrap_or(0);
    let summary = format!(
        "{} ({source}, window {window}, {records} records in the chain)",
        input.path.display()
    );
    let attention: Vec<&str> = d["attention"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let verified = d["chain"]["verified"].as_bool() == Some(true);
    SECTIONS
        .iter()
        .map(|(id, key, what)| {
            let evidence = |facts: Vec<String>| Evidence {
                summary: summary.clone(),
                facts,
                ..Evidence::default()
            };
            if !verified {
                let why = d["chain"]["first_break"].as_str().unwrap_or("a broken link");
                return finding(
                    id,
                    what,
                    Verdict::Fail,
                    format!("the audit log the review read does not verify ({why}): it was not reviewed"),
                    evidence(Vec::new()),
                );
            }
            let Some(section) = d["sections"].get(key) else {
                return finding(
                    id,
                    what,
                    Verdict::Error,
                    format!("the review has no `sections.{key}`"),
                    evidence(Vec::new()),
                );
            };
            if *id == "QRT-5" && section["status"] == "not_run" {
                return finding(
                    id,
                    what,
                    Verdict::NotVerified,
                    format!(
                        "the review did not run the regression suite ({}); pass --cases FILE --policy FILE to `preflight review`",
                        section["detail"].as_str().unwrap_or("no cases given")
                    ),
                    evidence(Vec::new()),
                );
            }
            let prefix = format!("{id}:");
            let mine: Vec<String> = attention
                .iter()
                .filter(|a| a.starts_with(&prefix))
                .map(|a| a.to_string())
                .collect();
            if mine.is_empty() {
                finding(
                    id,
                    what,
                    Verdict::Pass,
                    format!("the review computed {what} over a verified log; nothing needs a person's attention"),
                    evidence(Vec::new()),
                )
            } else {
                finding(
                    id,
                    what,
                    Verdict::Fail,
                    format!(
                        "the review found {} thing(s) in {what} for a person's attention: {}",
                        mine.len(),
                        mine[0]
                    ),
                    evidence(mine),
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(verified: bool, attention: &[&str], suite: &str) -> ReviewInput {
        let sections = serde_json::json!({
            "qrt2_denials": {}, "qrt3_latency": {}, "qrt4_reasons": {},
            "qrt5_suite": {"status": suite, "detail": "no regression cases given"},
            "ops8_alerts": [],
        });
        ReviewInput {
            path: PathBuf::from("review.json"),
            doc: serde_json::json!({
                "source": "postgres",
                "window": {"from": "a", "to": "b"},
                "chain": {"verified": verified, "records": 9, "first_break": "record 3: edited"},
                "sections": if verified { sections } else { Value::Null },
                "attention": attention,
            }),
        }
    }

    fn verdicts(input: &ReviewInput) -> Vec<(String, Verdict)> {
        findings(input)
            .into_iter()
            .map(|f| (f.checklist[0].clone(), f.verdict))
            .collect()
    }

    #[test]
    fn each_item_follows_its_section_of_the_review() {
        let all_pass = verdicts(&review(true, &[], "passed"));
        assert!(
            all_pass.iter().all(|(_, v)| *v == Verdict::Pass),
            "{all_pass:?}"
        );
        let v = verdicts(&review(
            true,
            &["QRT-4: 3 of 9 writes have a reason that fails a coherence rule"],
            "not_run",
        ));
        assert_eq!(
            v,
            [
                ("QRT-2".to_string(), Verdict::Pass),
                ("QRT-3".to_string(), Verdict::Pass),
                ("QRT-4".to_string(), Verdict::Fail),
                ("QRT-5".to_string(), Verdict::NotVerified),
                ("OPS-8".to_string(), Verdict::Pass),
            ]
        );
        let broken = findings(&review(false, &[], "passed"));
        assert!(broken.iter().all(|f| f.verdict == Verdict::Fail));
        assert!(
            broken[0].message.contains("record 3: edited"),
            "{}",
            broken[0].message
        );
    }

    #[test]
    fn a_file_that_is_not_a_review_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("review.json"), "{e}");
        let f = dir.path().join("review.json");
        std::fs::write(&f, "{\"findings\": []}").unwrap();
        let e = read(&f).unwrap_err();
        assert!(e.to_string().contains("no `source`"), "{e}");
        std::fs::write(&f, "{").unwrap();
        assert!(read(dir.path())
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }
}
