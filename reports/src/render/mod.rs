//! The renderers, one file per output format. Each exposes `render(report, &mut impl Write)`
//! and scrubs secrets ([`crate::redact::scrub_report`]) before it writes anything.
//! Shared plain-text pieces (the evidence block every format shows) live here.

use std::fmt::Write as _;

use crate::model::Finding;

pub mod checklist;
pub mod html;
mod html_attempts;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod sarif;

/// Compact one-line JSON for rows, audit records and arguments.
pub(crate) fn json_line(v: &serde_json::Value) -> String {
    // Serialising a `Value` to a string cannot fail (string keys, no I/O).
    serde_json::to_string(v).unwrap_or_default()
}

/// The evidence of one finding as plain text (not yet escaped for any format).
pub fn evidence_text(f: &Finding) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verdict: {} · severity: {} · checklist: {}",
        f.verdict.as_str(),
        f.severity.as_str(),
        checklist_ids(f)
    );
    let _ = writeln!(out, "probe: {} ({})", f.code, f.family);
    if let Some(l) = &f.location {
        let _ = writeln!(out, "policy: {}:{}:{}", l.path, l.line, l.column);
    }
    let _ = writeln!(out, "fingerprint: {}", f.fingerprint);
    if let Some(c) = &f.call {
        let _ = writeln!(
            out,
            "\ncall: {} as {} (tenant {}), trace {}\narguments: {}",
            c.tool,
            c.user,
            c.tenant,
            c.trace_id,
            json_line(&c.arguments)
        );
    }
    if let Some(r) = &f.response_excerpt {
        let _ = writeln!(out, "\nresponse excerpt:\n{r}");
    }
    let e = &f.evidence;
    if !e.summary.is_empty() {
        let _ = writeln!(out, "\nobserved: {}", e.summary);
    }
    let lists: [(&str, Vec<String>); 5] = [
        ("rows", e.rows.iter().map(json_line).collect()),
        (
            "audit records",
            e.audit_records.iter().map(json_line).collect(),
        ),
        ("sql", e.sql.clone()),
        ("catalog facts", e.facts.clone()),
        ("leaked values (masked)", e.leaks.clone()),
    ];
    for (name, items) in lists {
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{name} ({}):", items.len());
        for item in items {
            let _ = writeln!(out, "  {item}");
        }
    }
    out
}

pub(crate) fn checklist_ids(f: &Finding) -> String {
    if f.checklist.is_empty() {
        "none".to_string()
    } else {
        f.checklist.join(", ")
    }
}

/// Seconds with millisecond precision, as JUnit and the Markdown header show durations.
pub(crate) fn seconds(d: std::time::Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}
