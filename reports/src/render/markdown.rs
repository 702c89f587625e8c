//! `report.md`: GitHub-flavoured Markdown sized for a PR comment. The summary (verdict counts,
//! one row per family, then every failure and error with its checklist IDs, message and evidence
//! in a `<details>` block) comes first; the full per-family listing follows. The whole document
//! stays under GitHub's comment limit: when it would not, the later parts are cut and a note
//! points at `report.html`.

use std::io::{self, Write};

use crate::escape::{markup, md_block, md_code, md_inline, truncate};
use crate::model::{Finding, Report, Verdict};
use crate::redact::Scrubbed;
use crate::render::{evidence_text, seconds};
use crate::summary::Counts;

/// GitHub rejects comments longer than this many characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;

/// Our ceiling, in bytes (never fewer than characters), with room for the closing note.
const MAX_BYTES: usize = GITHUB_COMMENT_LIMIT - 1_536;

/// Evidence beyond this many characters per finding is cut in Markdown (report.html has it all).
const EVIDENCE_CHARS: usize = 2_000;

pub(crate) fn icon(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "✅",
        Verdict::Fail => "❌",
        Verdict::Error => "⚠️",
        Verdict::NotVerified => "❔",
    }
}

pub(crate) fn label(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
        Verdict::NotVerified => "not verified",
    }
}

/// Accumulates the document while keeping it under [`MAX_BYTES`].
struct Doc {
    text: String,
    full: bool,
}

impl Doc {
    fn fits(&self, more: usize) -> bool {
        !self.full && self.text.len() + more <= MAX_BYTES
    }

    /// Appends `s` if it fits; once something did not fit, nothing more is added.
    fn push(&mut self, s: &str) -> bool {
        if self.fits(s.len()) {
            self.text.push_str(s);
            true
        } else {
            self.full = true;
            false
        }
    }
}

fn counts_line(c: &Counts) -> String {
    let part = |n: usize, v: Verdict| {
        if n > 0 && !v.is_pass() {
            format!("**{n} {}**", label(v))
        } else {
            format!("{n} {}", label(v))
        }
    };
    [
        part(c.fail, Verdict::Fail),
        part(c.error, Verdict::Error),
        part(c.not_verified, Verdict::NotVerified),
        part(c.pass, Verdict::Pass),
    ]
    .join(" · ")
}

fn header(report: &Report) -> String {
    let s = report.summary();
    let t = s.totals;
    let outcome = t.outcome();
    let mark = if outcome == crate::summary::Outcome::Passed {
        "✅"
    } else {
        "❌"
    };
    let e = &report.environment;
    let mut out = format!(
        "## {mark} preflight {}: {}\n\n{} — {} findings, {} tool calls, {} s\n\n",
        kind_name(report),
        report.headline(),
        counts_line(&t),
        t.total(),
        report.tool_calls,
        seconds(report.duration),
    );
    if !s.families.is_empty() {
        out.push_str("| family | ✅ pass | ❌ fail | ⚠️ error | ❔ not verified | total |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        for f in &s.families {
            let c = f.counts;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                md_inline(&f.family),
                c.pass,
                bold_if(c.fail),
                bold_if(c.error),
                bold_if(c.not_verified),
                c.total()
            ));
        }
        out.push_str(&format!(
            "| **total** | **{}** | **{}** | **{}** | **{}** | **{}** |\n\n",
            t.pass,
            t.fail,
            t.error,
            t.not_verified,
            t.total()
        ));
    }
    let short_hash: String = e.policy_hash.chars().take(12).collect();
    out.push_str(&format!(
        "<sub>target {} · policy {} ({}) · database {} · {} · started {} · preflight {}</sub>\n\n",
        md_code(&e.target),
        md_code(&e.policy_path),
        md_code(&short_hash),
        md_inline(&e.database_backend),
        md_inline(&e.server_version),
        md_inline(&e.started_at),
        md_inline(&e.preflight_version),
    ));
    for note in &e.not_applicable {
        out.push_str(&format!("Not applicable: {}\n\n", md_inline(note)));
    }
    out
}

fn kind_name(report: &Report) -> &'static str {
    match report.kind {
        crate::model::ReportKind::Probe => "probe",
        crate::model::ReportKind::Agent => "agent",
        crate::model::ReportKind::SelfTest => "self-test",
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn bold_if(n: usize) -> String {
    if n > 0 {
        format!("**{n}**")
    } else {
        n.to_string()
    }
}

fn headline(f: &Finding) -> String {
    let mut out = format!(
        "**{} {} · {}** {} — {}  \n",
        icon(f.verdict),
        label(f.verdict),
        f.severity.as_str(),
        md_code(&f.code),
        md_inline(&f.title)
    );
    let ids: Vec<String> = f.checklist.iter().map(|id| md_inline(id)).collect();
    out.push_str(&format!(
        "Checklist: {}",
        if ids.is_empty() {
            "none".into()
        } else {
            ids.join(", ")
        }
    ));
    if let Some(l) = &f.location {
        out.push_str(&format!(
            " · policy {}",
            md_code(&format!("{}:{}", l.path, l.line))
        ));
    }
    out.push_str("  \n");
    out.push_str(&md_inline(&f.message));
    out.push('\n');
    out
}

fn full_block(f: &Finding) -> String {
    format!(
        "{}\n<details><summary>Evidence</summary>\n\n{}\n</details>\n\n",
        headline(f),
        md_block(&truncate(&evidence_text(f), EVIDENCE_CHARS), "text")
    )
}

/// Writes `report.md`.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    out.write_all(render_string(report).as_bytes())
}

/// The Markdown as a string, never longer than GitHub's comment limit.
pub fn render_string(report: &Report) -> String {
    render_scrubbed(&Scrubbed::new(report))
}

pub(crate) fn render_scrubbed(report: &Scrubbed) -> String {
    let sorted = report.sorted_findings();
    let total = sorted.len();
    let mut doc = Doc {
        text: String::new(),
        full: false,
    };
    // The header is a few hundred bytes plus one row per family; it always fits.
    doc.text.push_str(&header(report));

    // Findings shown in full (with evidence) or at least as a headline.
    let mut shown = 0usize;
    for (verdict, title) in [(Verdict::Fail, "Failures"), (Verdict::Error, "Errors")] {
        let group: Vec<&&Finding> = sorted.iter().filter(|f| f.verdict == verdict).collect();
        if group.is_empty()
            || !doc.push(&format!(
                "### {} {title} ({})\n\n",
                icon(verdict),
                group.len()
            ))
        {
            continue;
        }
        for f in group {
            let block = full_block(f);
            if doc.fits(block.len()) {
                doc.push(&block);
            } else if !doc.push(&format!("{}\n", headline(f))) {
                break;
            }
            shown += 1;
        }
    }

    let not_verified: Vec<&&Finding> = sorted
        .iter()
        .filter(|f| f.verdict == Verdict::NotVerified)
        .collect();
    if !not_verified.is_empty()
        && doc.push(&format!(
            "### {} Not verified ({})\n\n| probe | checklist | title | why |\n|---|---|---|---|\n",
            icon(Verdict::NotVerified),
            not_verified.len()
        ))
    {
        for f in not_verified {
            let row = format!(
                "| {} | {} | {} | {} |\n",
                md_code(&f.code),
                md_inline(&f.checklist.join(", ")),
                md_inline(&f.title),
                md_inline(&f.message)
            );
            if !doc.push(&row) {
                break;
            }
            shown += 1;
        }
        doc.text.push('\n');
    }

    // Details: every finding, by family, passes included.
    let summary = report.summary();
    let mut listed_passes = 0usize;
    if !summary.families.is_empty() && doc.push("### All findings by family\n\n") {
        'families: for fam in &summary.families {
            // `<summary>` sits in an HTML block, where Markdown is not parsed: escape as HTML.
            let open = format!(
                "<details><summary>{} — {}, {} not passed</summary>\n\n| verdict | severity | probe | checklist | title |\n|---|---|---|---|---|\n",
                markup(&fam.family),
                plural(fam.counts.total(), "finding"),
                fam.counts.non_pass()
            );
            if !doc.push(&open) {
                break;
            }
            for f in sorted.iter().filter(|f| f.family == fam.family) {
                let row = format!(
                    "| {} {} | {} | {} | {} | {} |\n",
                    icon(f.verdict),
                    label(f.verdict),
                    f.severity.as_str(),
                    md_code(&f.code),
                    md_inline(&f.checklist.join(", ")),
                    md_inline(&f.title)
                );
                if !doc.push(&row) {
                    doc.text.push_str("\n</details>\n\n");
                    break 'families;
                }
                if f.verdict.is_pass() {
                    listed_passes += 1;
                }
            }
            doc.text.push_str("\n</details>\n\n");
        }
    }

    if doc.full {
        let listed = shown + listed_passes;
        doc.text.push_str(&format!(
            "---\n> [!NOTE]\n> Cut to fit GitHub's {GITHUB_COMMENT_LIMIT}-character comment limit: {} of {total} findings are not listed here. Open **report.html** (or report.json) from this run's artifacts for every finding and its evidence.\n",
            total.saturating_sub(listed)
        ));
    } else if total == 0 {
        doc.text
            .push_str("No probes ran, so nothing was verified. This is not a pass.\n");
    }
    doc.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        large_report, redact_snapshot, sample_report, HOSTILE_TITLE, PLANTED_PASSWORD,
        PLANTED_TOKEN,
    };

    #[test]
    fn snapshot() {
        insta::assert_snapshot!(
            "report_md",
            redact_snapshot(&render_string(&sample_report()))
        );
    }

    #[test]
    fn failures_come_first_with_their_evidence() {
        let md = render_string(&sample_report());
        let failures = md.find("Failures (3)").unwrap();
        let errors = md.find("Errors (1)").unwrap();
        let nv = md.find("Not verified (1)").unwrap();
        let details = md.find("All findings by family").unwrap();
        assert!(failures < errors && errors < nv && nv < details);
        assert_eq!(
            md.matches("<details><summary>Evidence</summary>").count(),
            4
        );
        assert!(md.contains("Checklist: PRE-1, ISO-3"));
        assert!(
            md.contains("| cross\\_tenant | 1 | **1** | 0 | 0 | 2 |"),
            "{md}"
        );
    }

    /// The document with fenced code blocks removed: what GitHub parses as Markdown and HTML.
    fn outside_code_blocks(md: &str) -> String {
        let mut out = String::new();
        let mut fence: Option<String> = None;
        for line in md.lines() {
            let ticks: String = line.chars().take_while(|c| *c == '`').collect();
            match &fence {
                None if ticks.len() >= 3 => fence = Some(ticks),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
                Some(f) if ticks.len() >= f.len() && line.trim_end() == ticks => fence = None,
                Some(_) => {}
            }
        }
        assert!(fence.is_none(), "a code block was never closed");
        out
    }

    #[test]
    fn hostile_strings_are_inert() {
        let md = render_string(&sample_report());
        // Inside code blocks `<script>` is shown literally; outside it must not appear.
        assert!(md.contains("</pre><script>"), "the evidence is still shown");
        let prose = outside_code_blocks(&md);
        assert!(!prose.contains("<script>"), "{prose}");
        assert!(!prose.contains("<b>"));
        assert!(!md.contains('\u{7}') && !md.contains('\u{1b}') && !md.contains('\u{202e}'));
        assert!(!md.contains("@octocat"));
        assert!(!md.contains(HOSTILE_TITLE));
        // Every table row keeps its column count: the hostile `|` is escaped.
        for line in md.lines().filter(|l| l.starts_with("| ")) {
            let cells = line.replace("\\|", "").matches('|').count();
            assert!(cells == 5 || cells == 6 || cells == 7, "broken row: {line}");
        }
        assert!(!md.contains(PLANTED_PASSWORD) && !md.contains(PLANTED_TOKEN));
    }

    #[test]
    fn stays_under_the_comment_limit_and_says_so() {
        let report = large_report(800);
        let md = render_string(&report);
        assert!(
            md.chars().count() <= GITHUB_COMMENT_LIMIT,
            "{} chars",
            md.chars().count()
        );
        assert!(md.contains("report.html"));
        assert!(md.contains("Cut to fit GitHub"));
        // The summary part survived.
        assert!(md.contains("| **total** |"));
        assert!(md.contains(&format!("**{} fail**", report.count(Verdict::Fail))));
        // Open and close tags balance even when cut mid-table.
        assert_eq!(
            md.matches("<details>").count(),
            md.matches("</details>").count()
        );

        let small = render_string(&sample_report());
        assert!(!small.contains("Cut to fit"));
    }

    #[test]
    fn empty_report_is_not_a_pass() {
        let mut r = sample_report();
        r.findings.clear();
        let md = render_string(&r);
        assert!(md.contains("no probes ran"));
        assert!(md.contains("This is not a pass"));
        assert!(!md.contains('✅'));
    }
}
