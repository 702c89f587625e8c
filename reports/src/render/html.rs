//! `report.html`: one self-contained page for a reviewer — environment and totals, verdicts per
//! family, every finding with its evidence in a `<details>` block, and filters by family,
//! verdict and text. CSS and JS are inline; nothing is fetched. Every string from a finding is
//! HTML-escaped where it is written ([`markup`]); the script only toggles visibility. A
//! Content-Security-Policy pins the inline style and script by hash, so markup that slipped past
//! escaping still could not run script or load anything.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::escape::markup;
use crate::model::{Finding, Report, ReportKind, Verdict};
use crate::redact::Scrubbed;
use crate::render::{json_line, seconds};
use crate::summary::Counts;

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy: nothing external, only our own style and script.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; style-src {}; script-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(CSS),
        csp_hash(JS)
    )
});

fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
        Verdict::NotVerified => "not verified",
    }
}

fn kind_title(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Probe => "probe report",
        ReportKind::Agent => "agent run report",
        ReportKind::SelfTest => "self-test report",
    }
}

/// Writes `report.html`.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    out.write_all(render_string(report).as_bytes())
}

pub fn render_string(report: &Report) -> String {
    render_scrubbed(&Scrubbed::new(report))
}

pub(crate) fn render_scrubbed(report: &Scrubbed) -> String {
    let summary = report.summary();
    let totals = summary.totals;
    let outcome = totals.outcome();
    let e = &report.environment;
    let mut h = String::with_capacity(64 * 1024 + report.findings.len() * 2048);

    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"generator\" content=\"preflight {}\">\n\
         <title>preflight {} — {} — {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        markup(&CSP),
        markup(&e.preflight_version),
        kind_title(report.kind),
        outcome.as_str(),
        markup(&e.target),
    );

    // Header: outcome and environment.
    let _ = write!(
        h,
        "<header class=\"top\">\n<div class=\"brand\">preflight · {}</div>\n\
         <h1 class=\"outcome outcome-{}\"><span class=\"dot\"></span>{}</h1>\n<dl class=\"env\">\n",
        kind_title(report.kind),
        outcome.as_str(),
        markup(&capitalise(&report.headline())),
    );
    let env_rows: [(&str, String); 11] = [
        ("Target", e.target.clone()),
        ("Policy", e.policy_path.clone()),
        ("Policy hash", e.policy_hash.clone()),
        ("Fixtures hash", e.fixtures_hash.clone()),
        ("Database", e.database_backend.clone()),
        ("Backend chosen because", e.backend_reason.clone()),
        ("Server", e.server_version.clone()),
        ("Started", e.started_at.clone()),
        ("Duration", format!("{} s", seconds(report.duration))),
        ("Tool calls", report.tool_calls.to_string()),
        ("preflight", e.preflight_version.clone()),
    ];
    for (k, v) in env_rows {
        if v.is_empty() {
            continue;
        }
        let class = if k.ends_with("hash") {
            " class=\"mono\""
        } else {
            ""
        };
        let _ = writeln!(h, "<div><dt>{k}</dt><dd{class}>{}</dd></div>", markup(&v));
    }
    h.push_str("</dl>\n</header>\n<main>\n");

    // Totals: each a button that filters by its verdict.
    h.push_str("<section class=\"totals\" aria-label=\"Totals by verdict\">\n");
    for v in [
        Verdict::Fail,
        Verdict::Error,
        Verdict::NotVerified,
        Verdict::Pass,
    ] {
        let _ = writeln!(
            h,
            "<button type=\"button\" class=\"total v-{0}\" data-verdict=\"{0}\" aria-pressed=\"false\" title=\"Show only {1}\"><span class=\"n\">{2}</span><span class=\"l\">{1}</span></button>",
            v.as_str(),
            verdict_label(v),
            totals.get(v)
        );
    }
    h.push_str("</section>\n");

    // Verdicts per family.
    h.push_str(
        "<section aria-labelledby=\"families-h\">\n<h2 id=\"families-h\">Verdicts by family</h2>\n",
    );
    if summary.families.is_empty() {
        h.push_str(
            "<p class=\"empty\">No probes ran, so nothing was verified. This is not a pass.</p>\n",
        );
    } else {
        h.push_str(
            "<table class=\"families\">\n<thead><tr><th scope=\"col\">Family</th><th scope=\"col\" class=\"num\">Pass</th>\
             <th scope=\"col\" class=\"num\">Fail</th><th scope=\"col\" class=\"num\">Error</th>\
             <th scope=\"col\" class=\"num\">Not verified</th><th scope=\"col\" class=\"num\">Total</th>\
             <th scope=\"col\">Share</th></tr></thead>\n<tbody>\n",
        );
        for f in &summary.families {
            let fam = markup(&f.family);
            let _ = writeln!(
                h,
                "<tr><th scope=\"row\"><button type=\"button\" class=\"family-link\" data-family=\"{fam}\" title=\"Show only {fam}\">{fam}</button></th>{}</tr>",
                count_cells(&f.counts)
            );
        }
        let _ = writeln!(
            h,
            "</tbody>\n<tfoot><tr><th scope=\"row\">Total</th>{}</tr></tfoot>\n</table>",
            count_cells(&totals)
        );
    }
    h.push_str("</section>\n");

    // Findings with filters.
    let _ = write!(
        h,
        "<section id=\"findings\" aria-labelledby=\"findings-h\">\n<h2 id=\"findings-h\">Findings</h2>\n\
         <div class=\"controls\" id=\"controls\" role=\"search\" hidden>\n\
         <label>Family <select id=\"filter-family\"><option value=\"all\">All families</option>"
    );
    for f in &summary.families {
        let fam = markup(&f.family);
        let _ = write!(
            h,
            "<option value=\"{fam}\">{fam} ({})</option>",
            f.counts.total()
        );
    }
    h.push_str(
        "</select></label>\n<label>Verdict <select id=\"filter-verdict\"><option value=\"all\">All verdicts</option>\
         <option value=\"non_pass\">Not passed</option>",
    );
    for v in [
        Verdict::Fail,
        Verdict::Error,
        Verdict::NotVerified,
        Verdict::Pass,
    ] {
        let _ = write!(
            h,
            "<option value=\"{}\">{} ({})</option>",
            v.as_str(),
            capitalise(verdict_label(v)),
            totals.get(v)
        );
    }
    h.push_str(
        "</select></label>\n<label>Search <input id=\"filter-text\" type=\"search\" placeholder=\"code, title, checklist ID…\" autocomplete=\"off\"></label>\n\
         <button type=\"button\" id=\"expand-all\">Expand all</button>\
         <button type=\"button\" id=\"collapse-all\">Collapse all</button>\n\
         <span id=\"visible-count\" aria-live=\"polite\"></span>\n</div>\n\
         <p id=\"no-match\" class=\"empty\" hidden>No findings match these filters.</p>\n<ol class=\"findings\">\n",
    );
    for (i, f) in report.sorted_findings().into_iter().enumerate() {
        finding(&mut h, i + 1, f);
    }
    h.push_str("</ol>\n</section>\n");
    super::html_attempts::section(&mut h, &report.attempts);
    h.push_str("</main>\n");
    let _ = write!(
        h,
        "<footer>preflight {} · report schema v{} · the same data is in report.json</footer>\n<script>{JS}</script>\n</body>\n</html>\n",
        markup(&e.preflight_version),
        report.schema_version
    );
    h
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn count_cells(c: &Counts) -> String {
    let cell = |n: usize, class: &str| {
        if n > 0 && !class.is_empty() {
            format!("<td class=\"num {class}\">{n}</td>")
        } else {
            format!("<td class=\"num\">{n}</td>")
        }
    };
    let total = c.total().max(1) as f64;
    // A stacked bar drawn with SVG attributes, not inline styles, so the CSP can forbid them.
    let mut bar = String::from("<svg class=\"bar\" viewBox=\"0 0 100 10\" preserveAspectRatio=\"none\" role=\"img\" aria-hidden=\"true\">");
    let mut x = 0.0;
    for v in [
        Verdict::Fail,
        Verdict::Error,
        Verdict::NotVerified,
        Verdict::Pass,
    ] {
        let w = c.get(v) as f64 * 100.0 / total;
        if w > 0.0 {
            let _ = write!(
                bar,
                "<rect class=\"b-{}\" x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"10\"/>",
                v.as_str()
            );
        }
        x += w;
    }
    bar.push_str("</svg>");
    format!(
        "{}{}{}{}<td class=\"num\">{}</td><td>{bar}</td>",
        cell(c.pass, ""),
        cell(c.fail, "hot"),
        cell(c.error, "warm"),
        cell(c.not_verified, "cool"),
        c.total()
    )
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| json_line(v))
}

fn finding(h: &mut String, n: usize, f: &Finding) {
    let verdict = f.verdict.as_str();
    let _ = write!(
        h,
        "<li class=\"finding v-{verdict}\" id=\"finding-{n}\" data-family=\"{}\" data-verdict=\"{verdict}\" data-severity=\"{}\" data-fingerprint=\"{}\">\n\
         <details>\n<summary><span class=\"badges\"><span class=\"badge v-{verdict}\">{}</span><span class=\"sev sev-{1}\">{1}</span></span>\
         <span class=\"title\">{}</span><span class=\"meta\"><code>{}</code>",
        markup(&f.family),
        f.severity.as_str(),
        markup(&f.fingerprint),
        verdict_label(f.verdict),
        markup(&f.title),
        markup(&f.code),
    );
    for id in &f.checklist {
        let _ = write!(h, " <span class=\"cid\">{}</span>", markup(id));
    }
    h.push_str("</span></summary>\n<div class=\"body\">\n");
    let _ = writeln!(h, "<p class=\"message\">{}</p>", markup(&f.message));

    h.push_str("<dl class=\"facts\">");
    let _ = write!(h, "<dt>Family</dt><dd>{}</dd>", markup(&f.family));
    let _ = write!(
        h,
        "<dt>Checklist</dt><dd>{}</dd>",
        if f.checklist.is_empty() {
            "none".to_string()
        } else {
            markup(&f.checklist.join(", "))
        }
    );
    if let Some(l) = &f.location {
        let _ = write!(
            h,
            "<dt>Policy</dt><dd><code>{}:{}:{}</code></dd>",
            markup(&l.path),
            l.line,
            l.column
        );
    }
    let _ = writeln!(
        h,
        "<dt>Fingerprint</dt><dd><code>{}</code></dd><dt>Duration</dt><dd>{} s</dd></dl>",
        markup(&f.fingerprint),
        seconds(f.duration)
    );

    if let Some(c) = &f.call {
        let _ = write!(
            h,
            "<h3>Tool call</h3>\n<p><code>{}</code> as {} (tenant {}) · trace <code>{}</code></p>\n<pre>{}</pre>\n",
            markup(&c.tool),
            markup(&c.user),
            markup(&c.tenant),
            markup(&c.trace_id),
            markup(&pretty(&c.arguments))
        );
    }
    if let Some(r) = &f.response_excerpt {
        let _ = write!(h, "<h3>Response excerpt</h3>\n<pre>{}</pre>\n", markup(r));
    }
    let ev = &f.evidence;
    if !ev.summary.is_empty() {
        let _ = write!(h, "<h3>Observed</h3>\n<p>{}</p>\n", markup(&ev.summary));
    }
    let json_lists = [
        ("Rows (ground truth)", &ev.rows),
        ("Audit records", &ev.audit_records),
    ];
    for (name, list) in json_lists {
        if list.is_empty() {
            continue;
        }
        let body: Vec<String> = list.iter().map(pretty).collect();
        let _ = write!(
            h,
            "<h3>{name} ({})</h3>\n<pre>{}</pre>\n",
            list.len(),
            markup(&body.join("\n"))
        );
    }
    if !ev.sql.is_empty() {
        let _ = write!(
            h,
            "<h3>SQL ({})</h3>\n<pre>{}</pre>\n",
            ev.sql.len(),
            markup(&ev.sql.join(";\n"))
        );
    }
    for (name, list) in [
        ("Catalog facts", &ev.facts),
        ("Leaked values (masked)", &ev.leaks),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(h, "<h3>{name} ({})</h3>\n<ul class=\"plain\">", list.len());
        for item in list {
            let _ = write!(h, "<li><code>{}</code></li>", markup(item));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</div>\n</details>\n</li>\n");
}

/// The page's policy, for tests and for anyone embedding the page elsewhere.
pub fn content_security_policy() -> &'static str {
    &CSP
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::Outcome;
    use crate::testutil::{
        redact_snapshot, sample_report, HOSTILE_TITLE, PLANTED_PASSWORD, PLANTED_TOKEN,
    };

    fn body(html: &str) -> &str {
        let start = html.find("<body>").unwrap();
        let end = html.find("<script>").unwrap();
        &html[start..end]
    }

    #[test]
    fn snapshot_of_the_markup() {
        // CSS and JS are not data; the snapshot covers the markup the report produces.
        let html = render_string(&sample_report());
        insta::assert_snapshot!("report_html_body", redact_snapshot(body(&html)));
    }

    #[test]
    fn self_contained() {
        let html = render_string(&sample_report());
        let lower = html.to_lowercase();
        for bad in ["http://", "https://", "<link", "@import", " src=", "url("] {
            // The only URL-looking text allowed is escaped data from findings (none here).
            assert!(!lower.contains(bad), "external reference {bad:?}");
        }
        assert_eq!(html.matches("<script>").count(), 1);
        assert_eq!(html.matches("<style>").count(), 1);
        assert!(html.contains(&markup(content_security_policy())));
    }

    #[test]
    fn script_never_builds_markup() {
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "JSON.parse",
        ] {
            assert!(!JS.contains(bad), "report.js uses {bad}");
        }
    }

    #[test]
    fn hostile_strings_are_escaped_in_text_and_attributes() {
        let mut report = sample_report();
        report.findings[0].family = "x\" onmouseover=\"alert(1)".into();
        report.findings[0]
            .checklist
            .push("<img src=x onerror=alert(1)>".into());
        let html = render_string(&report);
        let b = body(&html);
        assert!(!b.contains("<script>"), "raw script tag in body");
        assert!(!b.contains("<img"));
        assert!(!b.contains("\" onmouseover"));
        assert!(b.contains("x&quot; onmouseover=&quot;alert(1)"));
        assert!(b.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; ]]&gt;"));
        assert!(b.contains("&lt;/pre&gt;&lt;script&gt;"));
        for c in ['\u{7}', '\u{1b}', '\u{202e}'] {
            assert!(!html.contains(c), "{c:?} survived");
        }
        assert!(!html.contains(HOSTILE_TITLE));
        assert!(!html.contains(PLANTED_PASSWORD) && !html.contains(PLANTED_TOKEN));
    }

    #[test]
    fn every_finding_is_listed_with_filter_data() {
        let report = sample_report();
        let html = render_string(&report);
        assert_eq!(
            html.matches("<li class=\"finding ").count(),
            report.findings.len()
        );
        for v in Verdict::ALL {
            let n = html
                .matches(&format!("data-verdict=\"{}\" data-severity", v.as_str()))
                .count();
            assert_eq!(n, report.count(v), "{v:?}");
        }
        // Failures come first.
        assert!(
            html.find("data-verdict=\"fail\" data-sev").unwrap()
                < html.find("data-verdict=\"pass\" data-sev").unwrap()
        );
    }

    #[test]
    fn empty_report_says_nothing_was_verified() {
        let mut report = sample_report();
        report.findings.clear();
        let html = render_string(&report);
        assert!(html.contains("No probes ran"));
        assert!(html.contains("outcome-empty"));
        assert_eq!(report.summary().totals.outcome(), Outcome::Empty);
    }
}
