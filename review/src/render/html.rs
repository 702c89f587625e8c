//! `review.html`: one self-contained page (inline CSS and SVG, no script, no network), with the
//! Markdown's sections as tables and three charts: denials per day by code, call latency per
//! tool, writes per day.

use std::collections::BTreeMap;

use preflight_enforcer::policy::{thousands, Direction};

use super::svg;
use crate::model::{Review, Sections};

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}\
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.ok{color:#1b5e20;font-weight:bold}\
code{font-size:.8rem;word-break:break-all}.sign{border:1px dashed #888;padding:1rem;margin:1rem 0}";

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut s = String::from("<table><tr>");
    for h in head {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{}</td>", esc(&c)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

fn list(items: &[String]) -> String {
    let mut s = String::from("<ul>");
    for i in items {
        s.push_str(&format!("<li>{}</li>", esc(i)));
    }
    s.push_str("</ul>");
    s
}

pub fn to_html(r: &Review) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "<h1>Quarterly review of the audit log</h1><p>Source: <code>{}</code></p>",
        esc(&r.source)
    ));
    if r.chain.verified {
        b.push_str(&format!(
            "<p>Chain: <span class=\"ok\">verified</span> ({} records). Window: {} – {} (since {}).</p>",
            thousands(r.chain.records),
            esc(&r.window.from),
            esc(&r.window.to),
            esc(&r.window.since)
        ));
    } else {
        b.push_str(&format!(
            "<p>Chain: <span class=\"bad\">DOES NOT VERIFY</span> — {}. The log was not reviewed: a log whose chain is broken cannot be read as a true record.</p>",
            esc(r.chain.first_break.as_deref().unwrap_or("unknown break"))
        ));
    }
    b.push_str("<h2>Needs attention</h2>");
    if r.attention.is_empty() {
        b.push_str("<p class=\"ok\">Nothing.</p>");
    } else {
        b.push_str(&list(&r.attention));
    }
    if let Some(sec) = &r.sections {
        sections(&mut b, sec);
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Audit log review</title><style>{CSS}</style></head><body>{b}</body></html>\n"
    )
}

fn sections(b: &mut String, sec: &Sections) {
    let d = &sec.qrt2_denials;
    b.push_str(&format!(
        "<h2>QRT-2: most common denials</h2><p>{} denials in {} records.</p>",
        thousands(d.total),
        thousands(sec.records)
    ));
    b.push_str(&svg::stacked_days(
        "denials per day by code",
        &sec.charts.days,
        &sec.charts.denials_per_day,
    ));
    b.push_str(&table(
        &[
            "code",
            "tool",
            "model",
            "field",
            "count",
            "principals",
            "top principal",
            "reading",
        ],
        d.top
            .iter()
            .map(|g| {
                vec![
                    g.code.clone(),
                    g.tool.clone(),
                    g.model.clone(),
                    g.field.clone(),
                    thousands(g.count),
                    g.principals.to_string(),
                    format!("{} ({})", g.top_principal, thousands(g.top_principal_count)),
                    g.verdict.clone(),
                ]
            })
            .collect(),
    ));

    let l = &sec.qrt3_latency;
    b.push_str("<h2>QRT-3: longest-running calls</h2>");
    b.push_str(&svg::latency(&l.by_tool));
    if !l.flagged.is_empty() {
        b.push_str("<p class=\"bad\">Flagged:</p>");
        b.push_str(&list(&l.flagged));
    }
    let lat = |rows: &[crate::model::LatencyRow]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                vec![
                    r.tool.clone(),
                    r.model.clone(),
                    thousands(r.calls),
                    format!("{:.1}", r.p50_ms),
                    format!("{:.1}", r.p95_ms),
                    format!("{:.1}", r.max_ms),
                ]
            })
            .collect()
    };
    b.push_str(&table(
        &["tool", "model", "calls", "p50 ms", "p95 ms", "max ms"],
        lat(&l.by_tool_model),
    ));
    b.push_str("<p>The slowest calls (arguments as recorded, sanitized by the layer):</p>");
    b.push_str(&table(
        &["id", "at", "tool", "principal", "ms", "arguments"],
        l.slowest
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.at.clone(),
                    c.tool.clone(),
                    c.principal.clone(),
                    format!("{:.1}", c.duration_ms),
                    c.arguments.clone(),
                ]
            })
            .collect(),
    ));

    let q = &sec.qrt4_reasons;
    b.push_str(&format!(
        "<h2>QRT-4: writes and their reasons</h2><p>{} writes, {} with a coherent reason.</p>",
        thousands(q.writes),
        thousands(q.coherent)
    ));
    let mut writes = BTreeMap::new();
    writes.insert("writes".to_string(), sec.charts.writes_per_day.clone());
    b.push_str(&svg::stacked_days(
        "writes per day",
        &sec.charts.days,
        &writes,
    ));
    b.push_str(&table(
        &["rule", "writes failing it"],
        crate::reasons::RULES
            .iter()
            .map(|r| {
                vec![
                    r.to_string(),
                    thousands(q.by_rule.get(*r).copied().unwrap_or(0)),
                ]
            })
            .collect(),
    ));
    b.push_str(&table(
        &["id", "at", "principal", "write", "reason", "rules"],
        q.failing
            .iter()
            .map(|w| {
                vec![
                    w.id.to_string(),
                    w.at.clone(),
                    w.principal.clone(),
                    format!("{} {} {}", w.tool, w.model, w.entity),
                    w.reason.clone().unwrap_or_else(|| "(none)".into()),
                    w.rules.join(", "),
                ]
            })
            .collect(),
    ));

    let u = &sec.qrt5_suite;
    b.push_str(&format!(
        "<h2>QRT-5: regression suite</h2><p><span class=\"{}\">{}</span>: {}</p>",
        if u.status == "passed" { "ok" } else { "bad" },
        esc(&u.status),
        esc(&u.detail)
    ));
    if !u.failures.is_empty() {
        b.push_str(&list(&u.failures));
    }

    let c = &sec.qrt1_capabilities;
    b.push_str(&format!(
        "<h2>QRT-1: the policy's capabilities, to re-read</h2><p>Policy: <code>{}</code> (hash {})</p>",
        esc(c.policy.as_deref().unwrap_or("(none given)")),
        esc(c.policy_hash.as_deref().unwrap_or("-"))
    ));
    b.push_str(&list(&c.lines));
    b.push_str(&format!("<div class=\"sign\">{}</div>", esc(&c.sign_off)));

    b.push_str("<h2>OPS-8: alert conditions over the window</h2>");
    b.push_str(&table(
        &["alert", "condition", "would have fired"],
        sec.ops8_alerts
            .iter()
            .map(|a| {
                let fired = if a.fired.is_empty() {
                    "never".to_string()
                } else {
                    a.fired
                        .iter()
                        .map(|f| format!("{} – {} ({})", f.from, f.to, f.value))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                vec![a.name.clone(), a.condition.clone(), fired]
            })
            .collect(),
    ));

    b.push_str("<h2>Drift: policy hashes seen</h2>");
    b.push_str(&table(
        &["hash", "first", "last", "records", "policy file"],
        sec.drift
            .hashes
            .iter()
            .map(|h| {
                vec![
                    h.hash[..12.min(h.hash.len())].to_string(),
                    h.first.clone(),
                    h.last.clone(),
                    thousands(h.records),
                    h.policy.clone().unwrap_or_else(|| "unknown".into()),
                ]
            })
            .collect(),
    ));
    for step in &sec.drift.changes {
        b.push_str(&format!(
            "<p>At {}: {} → {}: {}</p>",
            esc(&step.at),
            esc(&step.from_hash[..12.min(step.from_hash.len())]),
            esc(&step.to_hash[..12.min(step.to_hash.len())]),
            esc(&step.note)
        ));
        let items: Vec<String> = step
            .changes
            .iter()
            .flatten()
            .map(|c| {
                let dir = match c.direction {
                    Direction::Widens => "widens",
                    Direction::Narrows => "narrows",
                    Direction::Other => "other",
                };
                format!("({dir}) {}", c.text)
            })
            .collect();
        if !items.is_empty() {
            b.push_str(&list(&items));
        }
    }
}
