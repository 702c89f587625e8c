//! `review.md`: the review as Markdown, section by section.

use preflight_enforcer::policy::thousands;

use crate::model::{Review, Sections};

/// Text for a Markdown table cell: no pipes or newlines break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn to_markdown(r: &Review) -> String {
    let mut s = String::from("# Quarterly review of the audit log\n\n");
    s.push_str(&format!("Source: `{}`  \n", r.source));
    if r.chain.verified {
        s.push_str(&format!(
            "Chain: **verified** ({} records)  \nWindow: {} – {} (since {})\n\n",
            thousands(r.chain.records),
            r.window.from,
            r.window.to,
            r.window.since
        ));
    } else {
        s.push_str(&format!(
            "Chain: **DOES NOT VERIFY** — {}  \nThe log was not reviewed: a log whose chain is broken cannot be read as a true record.\n\n",
            r.chain.first_break.as_deref().unwrap_or("unknown break")
        ));
    }
    s.push_str("## Needs attention\n\n");
    if r.attention.is_empty() {
        s.push_str("Nothing.\n\n");
    } else {
        for a in &r.attention {
            s.push_str(&format!("- {}\n", a));
        }
        s.push('\n');
    }
    if let Some(sec) = &r.sections {
        sections(&mut s, sec);
    }
    s
}

fn sections(s: &mut String, sec: &Sections) {
    let decisions: Vec<String> = sec
        .decisions
        .iter()
        .map(|(k, v)| format!("{k}: {}", thousands(*v)))
        .collect();
    s.push_str(&format!(
        "{} records in the window ({}).\n\n",
        thousands(sec.records),
        decisions.join(", ")
    ));

    let d = &sec.qrt2_denials;
    s.push_str(&format!(
        "## QRT-2: most common denials\n\n{} denials.\n\n| code | tool | model | field | count | principals | top principal | reading |\n|---|---|---|---|---:|---:|---|---|\n",
        thousands(d.total)
    ));
    for g in &d.top {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} |\n",
            cell(&g.code),
            cell(&g.tool),
            cell(&g.model),
            cell(&g.field),
            thousands(g.count),
            g.principals,
            cell(&g.top_principal),
            thousands(g.top_principal_count),
            cell(&g.verdict)
        ));
    }
    s.push_str(
        "\nThe log records principals, not sessions: concentration is read per principal.\n\n",
    );

    let l = &sec.qrt3_latency;
    s.push_str("## QRT-3: longest-running calls\n\n| tool | calls | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|\n");
    for r in &l.by_tool {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
            cell(&r.tool),
            thousands(r.calls),
            r.p50_ms,
            r.p95_ms,
            r.max_ms
        ));
    }
    s.push_str("\nBy tool and model:\n\n| tool | model | calls | p50 ms | p95 ms | max ms |\n|---|---|---:|---:|---:|---:|\n");
    for r in &l.by_tool_model {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} |\n",
            cell(&r.tool),
            cell(&r.model),
            thousands(r.calls),
            r.p50_ms,
            r.p95_ms,
            r.max_ms
        ));
    }
    if l.flagged.is_empty() {
        s.push_str("\nNo tool is slower than its work explains.\n");
    } else {
        s.push('\n');
        for f in &l.flagged {
            s.push_str(&format!("- **flagged:** {f}\n"));
        }
    }
    s.push_str("\nThe slowest calls (arguments as recorded, sanitized by the layer):\n\n| id | at | tool | principal | ms | arguments |\n|---:|---|---|---|---:|---|\n");
    for c in &l.slowest {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | `{}` |\n",
            c.id,
            c.at,
            cell(&c.tool),
            cell(&c.principal),
            c.duration_ms,
            cell(&c.arguments).replace('`', "'")
        ));
    }

    let q = &sec.qrt4_reasons;
    s.push_str(&format!(
        "\n## QRT-4: writes and their reasons\n\n{} writes, {} with a coherent reason.\n\n",
        thousands(q.writes),
        thousands(q.coherent)
    ));
    for rule in crate::reasons::RULES {
        s.push_str(&format!(
            "- {rule}: {}\n",
            thousands(q.by_rule.get(rule).copied().unwrap_or(0))
        ));
    }
    if !q.failing.is_empty() {
        s.push_str(&format!(
            "\nWrites failing a rule (the first {}):\n\n| id | at | principal | write | reason | rules |\n|---:|---|---|---|---|---|\n",
            q.failing.len()
        ));
        for w in &q.failing {
            s.push_str(&format!(
                "| {} | {} | {} | {} {} {} | {} | {} |\n",
                w.id,
                w.at,
                cell(&w.principal),
                cell(&w.tool),
                cell(&w.model),
                cell(&w.entity),
                cell(w.reason.as_deref().unwrap_or("(none)")),
                w.rules.join(", ")
            ));
        }
    }

    let u = &sec.qrt5_suite;
    s.push_str(&format!(
        "\n## QRT-5: regression suite\n\n**{}**: {}\n",
        u.status, u.detail
    ));
    for f in &u.failures {
        s.push_str(&format!("- {f}\n"));
    }

    let c = &sec.qrt1_capabilities;
    s.push_str(&format!(
        "\n## QRT-1: the policy's capabilities, to re-read\n\nPolicy: {} (hash {})\n\n",
        c.policy.as_deref().unwrap_or("(none given)"),
        c.policy_hash.as_deref().unwrap_or("-")
    ));
    for l in &c.lines {
        s.push_str(&format!("- {l}\n"));
    }
    s.push_str(&format!("\n{}\n", c.sign_off));

    s.push_str("\n## OPS-8: alert conditions over the window\n\n");
    for a in &sec.ops8_alerts {
        s.push_str(&format!("### {}\n\nCondition: {}\n\n", a.name, a.condition));
        if a.fired.is_empty() {
            s.push_str("Would not have fired.\n\n");
        } else {
            for f in &a.fired {
                s.push_str(&format!(
                    "- would have fired {} – {}: {}\n",
                    f.from, f.to, f.value
                ));
            }
            s.push('\n');
        }
    }

    s.push_str("## Drift: policy hashes seen\n\n| hash | first | last | records | policy file |\n|---|---|---|---:|---|\n");
    for h in &sec.drift.hashes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            &h.hash[..12.min(h.hash.len())],
            h.first,
            h.last,
            thousands(h.records),
            h.policy.as_deref().unwrap_or("unknown")
        ));
    }
    for step in &sec.drift.changes {
        s.push_str(&format!(
            "\nAt {}: {} → {}: {}\n",
            step.at,
            &step.from_hash[..12.min(step.from_hash.len())],
            &step.to_hash[..12.min(step.to_hash.len())],
            step.note
        ));
        for c in step.changes.iter().flatten() {
            let dir = match c.direction {
                preflight_enforcer::policy::Direction::Widens => "widens",
                preflight_enforcer::policy::Direction::Narrows => "narrows",
                preflight_enforcer::policy::Direction::Other => "other",
            };
            s.push_str(&format!("- ({dir}) {}\n", c.text));
        }
    }
}
