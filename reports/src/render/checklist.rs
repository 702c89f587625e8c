//! `checklist.md`: every checklist item with its status, the page a team hands to an auditor.
//! [`statuses`] decides each item's [`Status`] from the findings that cite it:
//!
//! - **failed**: any finding citing the item failed;
//! - **verified**: at least one finding cites it and every one of them passed;
//! - **needs sign-off**: only a person can attest to it (`verify: [attest]`) and nothing cites it;
//! - **not verified**: otherwise — nothing cites it, or a citing probe errored or was skipped.
//!
//! A signature block follows for every item that asks for attestation.

use std::io::{self, Write};

use crate::checklist::{Checklist, Item};
use crate::escape::{md_code, md_inline};
use crate::model::{Report, Verdict};
use crate::redact::Scrubbed;
use crate::summary::Counts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Verified,
    Failed,
    NotVerified,
    NeedsSignOff,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Verified => "✅ verified",
            Status::Failed => "❌ failed",
            Status::NotVerified => "❔ not verified",
            Status::NeedsSignOff => "✍️ needs sign-off",
        }
    }
}

/// One checklist item and what the report says about it.
#[derive(Clone, Debug)]
pub struct ItemStatus<'a> {
    pub section: &'a str,
    pub item: &'a Item,
    pub status: Status,
    /// Each probe or lint code citing the item, with its verdict counts, in code order.
    pub codes: Vec<(String, Counts)>,
    /// Why a not-verified item was not verified on this run: the run's own note for it, else
    /// the message of the first citing finding that did not pass.
    pub reason: Option<String>,
}

/// The status of every checklist item, in checklist order.
pub fn statuses<'a>(checklist: &'a Checklist, report: &Report) -> Vec<ItemStatus<'a>> {
    checklist
        .items()
        .map(|(section, item)| {
            let mut codes: Vec<(String, Counts)> = Vec::new();
            for f in report
                .findings
                .iter()
                .filter(|f| f.checklist.iter().any(|c| c == &item.id))
            {
                match codes.iter_mut().find(|(c, _)| *c == f.code) {
                    Some((_, counts)) => counts.add(f.verdict),
                    None => {
                        let mut counts = Counts::default();
                        counts.add(f.verdict);
                        codes.push((f.code.clone(), counts));
                    }
                }
            }
            codes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut all = Counts::default();
            for (_, c) in &codes {
                all.pass += c.pass;
                all.fail += c.fail;
                all.error += c.error;
                all.not_verified += c.not_verified;
            }
            let note = report
                .notes
                .iter()
                .find(|n| n.item == item.id)
                .map(|n| n.note.clone());
            let first_non_pass = report
                .findings
                .iter()
                .filter(|f| f.checklist.iter().any(|c| c == &item.id))
                .find(|f| matches!(f.verdict, Verdict::Error | Verdict::NotVerified))
                .map(|f| format!("{}: {}", f.code, f.message));
            let status = if all.fail > 0 {
                Status::Failed
            } else if all.total() > 0 && all.non_pass() == 0 {
                Status::Verified
            } else if all.total() == 0 && item.attest_only() {
                Status::NeedsSignOff
            } else {
                Status::NotVerified
            };
            let reason = match status {
                Status::NotVerified => note.or(first_non_pass),
                Status::Verified | Status::Failed | Status::NeedsSignOff => None,
            };
            ItemStatus {
                section: &section.name,
                item,
                status,
                codes,
                reason,
            }
        })
        .collect()
}

fn evidence_cell(s: &ItemStatus, separator: &str) -> String {
    if s.codes.is_empty() {
        if let Some(reason) = &s.reason {
            return format!("not verified on this run: {}", md_inline(reason));
        }
        return match s.status {
            Status::NeedsSignOff => "a person signs it off below".into(),
            Status::Verified | Status::Failed | Status::NotVerified => {
                format!(
                    "no finding cites it (verified by: {})",
                    s.item.verify.join(", ")
                )
            }
        };
    }
    s.codes
        .iter()
        .map(|(code, c)| {
            let parts: Vec<String> = [
                Verdict::Fail,
                Verdict::Error,
                Verdict::NotVerified,
                Verdict::Pass,
            ]
            .into_iter()
            .filter(|v| c.get(*v) > 0)
            .map(|v| format!("{} {}", c.get(v), v.as_str().replace('_', " ")))
            .collect();
            format!("{} ({})", md_code(code), parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join(separator)
}

/// Writes `checklist.md` for `report` against `checklist`.
pub fn render(report: &Report, checklist: &Checklist, out: &mut impl Write) -> io::Result<()> {
    out.write_all(render_string(report, checklist).as_bytes())
}

pub fn render_string(report: &Report, checklist: &Checklist) -> String {
    render_scrubbed(&Scrubbed::new(report), checklist)
}

pub(crate) fn render_scrubbed(report: &Scrubbed, checklist: &Checklist) -> String {
    let e = &report.environment;
    let all = statuses(checklist, report);
    let count = |st: Status| all.iter().filter(|s| s.status == st).count();

    let mut md = String::new();
    md.push_str("# Checklist status\n\n");
    md.push_str("The production checklist for agent + database systems, item by item, as this run of preflight found it.\n\n");
    md.push_str("| | |\n|---|---|\n");
    let rows: [(&str, String); 8] = [
        ("Target", md_code(&e.target)),
        ("Policy", md_code(&e.policy_path)),
        ("Policy hash", md_code(&e.policy_hash)),
        ("Fixtures hash", md_code(&e.fixtures_hash)),
        (
            "Database",
            md_inline(&format!("{} · {}", e.database_backend, e.server_version)),
        ),
        ("Run started", md_inline(&e.started_at)),
        (
            "Findings",
            format!(
                "{} ({} tool calls)",
                report.findings.len(),
                report.tool_calls
            ),
        ),
        ("preflight", md_inline(&e.preflight_version)),
    ];
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str(&format!(
        "\n**{} items:** {} · {} · {} · {}\n\n",
        all.len(),
        format_args!("{} {}", count(Status::Verified), Status::Verified.label()),
        format_args!("{} {}", count(Status::Failed), Status::Failed.label()),
        format_args!(
            "{} {}",
            count(Status::NotVerified),
            Status::NotVerified.label()
        ),
        format_args!(
            "{} {}",
            count(Status::NeedsSignOff),
            Status::NeedsSignOff.label()
        ),
    ));
    md.push_str(
        "Statuses: **verified** — findings cite the item and every one passed; **failed** — a finding citing it failed; \
         **not verified** — no finding cites it, or a citing probe errored or was skipped; \
         **needs sign-off** — no machine can check it, a person attests to it below.\n\n",
    );

    let failed: Vec<&ItemStatus> = all.iter().filter(|s| s.status == Status::Failed).collect();
    if !failed.is_empty() {
        md.push_str("## Failed items\n\n");
        for s in &failed {
            md.push_str(&format!(
                "- **{}** {} — {}\n",
                md_inline(&s.item.id),
                md_inline(&s.item.text),
                evidence_cell(s, "; ")
            ));
        }
        md.push('\n');
    }

    let unverified: Vec<&ItemStatus> = all
        .iter()
        .filter(|s| s.status == Status::NotVerified)
        .collect();
    if !unverified.is_empty() {
        md.push_str("## Not verified on this run\n\n");
        for s in &unverified {
            let why = match &s.reason {
                Some(r) => md_inline(r),
                None => format!(
                    "no finding of this run cites it (verified by: {})",
                    md_inline(&s.item.verify.join(", "))
                ),
            };
            md.push_str(&format!(
                "- **{}** {} — {}\n",
                md_inline(&s.item.id),
                md_inline(&s.item.text),
                why
            ));
        }
        md.push('\n');
    }

    for section in &checklist.sections {
        md.push_str(&format!(
            "## {}\n\n| ID | Item | Verified by | Status | Evidence |\n|---|---|---|---|---|\n",
            md_inline(&section.name)
        ));
        for s in all.iter().filter(|s| s.section == section.name) {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                md_inline(&s.item.id),
                md_inline(&s.item.text),
                md_inline(&s.item.verify.join(", ")),
                s.status.label(),
                evidence_cell(s, "<br>")
            ));
        }
        md.push('\n');
    }

    // Findings citing IDs this checklist does not have: a typo in a probe, or a stale checklist.
    let mut unknown: Vec<(&str, &str)> = Vec::new();
    for f in &report.findings {
        for id in &f.checklist {
            if checklist.item(id).is_none()
                && !unknown.iter().any(|(i, c)| *i == id && *c == f.code)
            {
                unknown.push((id, &f.code));
            }
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        md.push_str("## Findings citing IDs not in this checklist\n\n");
        for (id, code) in unknown {
            md.push_str(&format!("- {} cited by {}\n", md_inline(id), md_code(code)));
        }
        md.push('\n');
    }

    let attest: Vec<&ItemStatus> = all.iter().filter(|s| s.item.needs_attestation()).collect();
    if !attest.is_empty() {
        md.push_str("## Sign-off\n\nThese items need a person's attestation. Sign each one off only after checking it; ");
        md.push_str(&format!(
            "the attestation applies to the policy with hash {}.\n\n",
            md_code(&e.policy_hash)
        ));
        for s in attest {
            md.push_str(&format!(
                "### {} — {}\n\nStatus: {}\n\n| Signed off by | Role | Date | Signature |\n|---|---|---|---|\n| | | | |\n\nNotes:\n\n",
                md_inline(&s.item.id),
                md_inline(&s.item.text),
                s.status.label()
            ));
        }
    }
    md
}

/// `checklist.json`: the same statuses as `checklist.md`, for machines: the run's policy hash,
/// the counts per status, and every item with its status, the codes citing it (with their
/// verdict counts) and, when not verified, why.
pub(crate) fn to_json_scrubbed(report: &Scrubbed, checklist: &Checklist) -> serde_json::Value {
    let all = statuses(checklist, report);
    let key = |st: Status| match st {
        Status::Verified => "verified",
        Status::Failed => "failed",
        Status::NotVerified => "not_verified",
        Status::NeedsSignOff => "needs_sign_off",
    };
    let count = |st: Status| all.iter().filter(|s| s.status == st).count();
    let items: Vec<serde_json::Value> = all
        .iter()
        .map(|s| {
            let codes: Vec<serde_json::Value> = s
                .codes
                .iter()
                .map(|(code, c)| {
                    serde_json::json!({
                        "code": code,
                        "pass": c.pass,
                        "fail": c.fail,
                        "error": c.error,
                        "not_verified": c.not_verified,
                    })
                })
                .collect();
            serde_json::json!({
                "id": s.item.id,
                "section": s.section,
                "item": s.item.text,
                "verify": s.item.verify,
                "status": key(s.status),
                "codes": codes,
                "reason": s.reason,
            })
        })
        .collect();
    serde_json::json!({
        "policy_hash": report.environment.policy_hash,
        "target": report.environment.target,
        "total": all.len(),
        "machine_checkable": all.iter().filter(|s| !s.item.attest_only()).count(),
        "verified": count(Status::Verified),
        "failed": count(Status::Failed),
        "not_verified": count(Status::NotVerified),
        "needs_sign_off": count(Status::NeedsSignOff),
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{redact_snapshot, sample_report};

    fn status_of(all: &[ItemStatus], id: &str) -> Status {
        all.iter().find(|s| s.item.id == id).unwrap().status
    }

    #[test]
    fn snapshot() {
        let md = render_string(&sample_report(), &Checklist::embedded());
        insta::assert_snapshot!("checklist_md", redact_snapshot(&md));
    }

    #[test]
    fn each_status_from_the_sample() {
        let checklist = Checklist::embedded();
        let all = statuses(&checklist, &sample_report());
        assert_eq!(all.len(), checklist.len());
        // ISO-3 is cited by a failure and a pass: failed wins.
        assert_eq!(status_of(&all, "ISO-3"), Status::Failed);
        // ISO-1 only by a pass.
        assert_eq!(status_of(&all, "ISO-1"), Status::Verified);
        // BUD-1 only by an error, WRT-1 only by not_verified.
        assert_eq!(status_of(&all, "BUD-1"), Status::NotVerified);
        assert_eq!(status_of(&all, "WRT-1"), Status::NotVerified);
        // Nothing cites ISO-2.
        assert_eq!(status_of(&all, "ISO-2"), Status::NotVerified);
        // Attest-only items need a person; mixed ones (OPS-8 review+attest) do not by default.
        assert_eq!(status_of(&all, "OPS-2"), Status::NeedsSignOff);
        assert_eq!(status_of(&all, "OPS-8"), Status::NotVerified);
        let iso3 = all.iter().find(|s| s.item.id == "ISO-3").unwrap();
        assert_eq!(iso3.codes.len(), 2);
    }

    #[test]
    fn pass_and_error_together_is_not_verified_and_attest_items_can_fail() {
        let checklist = Checklist::embedded();
        let mut report = sample_report();
        report.findings[1].checklist.push("BUD-1".into()); // a pass beside the BUD-1 error
        report.findings[0].checklist.push("OPS-2".into()); // a failure citing an attest item
        report.findings[6].checklist.push("OPS-5".into()); // a pass citing an attest item
        let all = statuses(&checklist, &report);
        assert_eq!(status_of(&all, "BUD-1"), Status::NotVerified);
        assert_eq!(status_of(&all, "OPS-2"), Status::Failed);
        assert_eq!(status_of(&all, "OPS-5"), Status::Verified);
    }

    #[test]
    fn a_not_verified_item_says_why() {
        let checklist = Checklist::embedded();
        let mut report = sample_report();
        report.notes.push(crate::model::ItemNote::new(
            "OPS-4",
            "only a served layer has a health endpoint",
        ));
        let md = render_string(&report, &checklist);
        assert!(md.contains("## Not verified on this run"), "{md}");
        assert!(
            md.contains("- **OPS-4** A health endpoint reports version, policy hash and audit sink status — only a served layer has a health endpoint"),
            "{md}"
        );
        assert!(
            md.contains("| not verified on this run: only a served layer has a health endpoint |")
        );
        // Without a note, the citing finding that did not pass says why (WRT-1: not_verified).
        let all = statuses(&checklist, &report);
        let wrt1 = all.iter().find(|s| s.item.id == "WRT-1").unwrap();
        assert!(wrt1.reason.is_some(), "{wrt1:?}");
        // A verified item never carries a reason.
        let iso1 = all.iter().find(|s| s.item.id == "ISO-1").unwrap();
        assert_eq!(iso1.reason, None);
        let json = to_json_scrubbed(&Scrubbed::new(&report), &checklist);
        assert_eq!(json["total"], 62);
        assert_eq!(json["machine_checkable"], 57);
        let ops4 = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "OPS-4")
            .unwrap();
        assert_eq!(ops4["status"], "not_verified");
        assert_eq!(ops4["reason"], "only a served layer has a health endpoint");
    }

    #[test]
    fn document_lists_every_item_and_signature_blocks() {
        let checklist = Checklist::embedded();
        let mut report = sample_report();
        report.findings[0].checklist.push("NOPE-9".into());
        let md = render_string(&report, &checklist);
        for (_, item) in checklist.items() {
            assert!(
                md.contains(&format!("| {} |", item.id)),
                "{} missing",
                item.id
            );
        }
        let attest = checklist
            .items()
            .filter(|(_, i)| i.needs_attestation())
            .count();
        assert_eq!(
            md.matches("| Signed off by | Role | Date | Signature |")
                .count(),
            attest
        );
        assert!(md.contains("NOPE-9 cited by `cross_tenant.get_by_foreign_id`"));
        assert!(md.contains("## Failed items"));
        assert!(md.contains("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
    }
}
