//! Lint findings as text, as a table and as JSON (`preflight policy lint --format`).

use super::rules::{LintFinding, Severity};

/// Findings as rustc-style lines: `path:line:col: error[lint.x]: message (ISO-2)`.
pub fn render_text(path: &str, findings: &[LintFinding]) -> String {
    let mut s = String::new();
    for f in findings {
        let at = match f.span {
            Some(sp) => format!("{path}:{}:{}", sp.line, sp.column),
            None => path.to_string(),
        };
        s.push_str(&format!(
            "{at}: {}[{}]: {} ({})\n",
            f.severity.as_str(),
            f.rule.code(),
            f.message,
            f.checklist().join(", ")
        ));
    }
    s
}

/// Findings as a table (rule, checklist, severity, line, message).
pub fn render_table(findings: &[LintFinding]) -> String {
    use tabled::settings::{Style, Width};
    #[derive(tabled::Tabled)]
    struct Row {
        #[tabled(rename = "severity")]
        severity: &'static str,
        #[tabled(rename = "rule")]
        rule: &'static str,
        #[tabled(rename = "checklist")]
        checklist: String,
        #[tabled(rename = "line")]
        line: String,
        #[tabled(rename = "finding")]
        message: String,
    }
    let rows = findings.iter().map(|f| Row {
        severity: f.severity.as_str(),
        rule: f.rule.code(),
        checklist: f.checklist().join(", "),
        line: f
            .span
            .map(|s| s.line.to_string())
            .unwrap_or_else(|| "-".into()),
        message: f.message.clone(),
    });
    let mut t = tabled::Table::new(rows);
    t.with(Style::sharp()).with(
        tabled::settings::Modify::new(tabled::settings::object::Columns::last())
            .with(Width::wrap(80).keep_words(true)),
    );
    t.to_string()
}

/// The JSON document `preflight policy lint --format json` prints.
pub fn to_json(
    path: &str,
    policy_hash: &str,
    catalog_checked: bool,
    findings: &[LintFinding],
) -> serde_json::Value {
    let items: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "rule": f.rule.code(),
                "checklist": f.checklist(),
                "severity": f.severity.as_str(),
                "message": f.message,
                "key_path": f.key_path,
                "model": f.model,
                "line": f.span.map(|s| s.line),
                "column": f.span.map(|s| s.column),
            })
        })
        .collect();
    serde_json::json!({
        "policy": path,
        "policy_hash": policy_hash,
        "catalog_checked": catalog_checked,
        "errors": findings.iter().filter(|f| f.severity == Severity::Error).count(),
        "warnings": findings.iter().filter(|f| f.severity == Severity::Warning).count(),
        "findings": items,
    })
}
