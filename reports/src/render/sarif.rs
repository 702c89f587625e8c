//! `results.sarif`: SARIF 2.1.0 for code-scanning UIs (GitHub, GitLab, Azure DevOps). One rule
//! per probe code (described by the checklist items it proves), one result per finding that did
//! not pass, located at the policy-file line that governs it so the annotation lands on the
//! line to change.
//!
//! Levels: `fail` and `error` are `error` (both block a launch); `not_verified` is `warning`: it
//! is not evidence of a defect, but it is not a pass either, and a `note` is too easily ignored.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::checklist::Checklist;
use crate::model::{Finding, Report, ReportKind, Severity, Verdict};
use crate::redact::Scrubbed;

pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";
pub const SARIF_VERSION: &str = "2.1.0";

/// Key of the fingerprint in `partialFingerprints`.
pub const FINGERPRINT_KEY: &str = "preflightFingerprint/v1";

/// Writes `results.sarif` with rule help from the embedded checklist.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    render_with(report, &Checklist::embedded(), out)
}

pub fn render_with(report: &Report, checklist: &Checklist, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &to_value(report, checklist))?;
    out.write_all(b"\n")
}

/// GitHub's `security-severity` scale (0–10) that turns into its critical/high/medium/low labels.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn level(v: Verdict) -> &'static str {
    match v {
        Verdict::Fail | Verdict::Error => "error",
        Verdict::NotVerified => "warning",
        Verdict::Pass => "none",
    }
}

/// `cross_tenant.get_by_foreign_id` → `CrossTenantGetByForeignId` (SARIF's rule `name`).
fn pascal(code: &str) -> String {
    code.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A relative path as a URI reference (resolved against `%SRCROOT%`), or a `file://` URI for an
/// absolute one.
fn uri(path: &str) -> (String, bool) {
    let p = path.replace('\\', "/");
    let mut enc = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    if enc.starts_with('/') {
        (format!("file://{enc}"), false)
    } else {
        (enc.trim_start_matches("./").to_string(), true)
    }
}

struct Rule<'a> {
    code: &'a str,
    family: &'a str,
    checklist: Vec<&'a str>,
    severity: Severity,
}

fn rule_value(rule: &Rule, checklist: &Checklist) -> Value {
    let known: Vec<(&str, &str)> = rule
        .checklist
        .iter()
        .filter_map(|id| checklist.item(id).map(|i| (*id, i.text.as_str())))
        .collect();
    let short = match known.first() {
        Some((id, text)) => format!("{id}: {text}"),
        None => format!("preflight {} probe {}", rule.family, rule.code),
    };
    let full = if known.is_empty() {
        short.clone()
    } else {
        known
            .iter()
            .map(|(id, t)| format!("{id}: {t}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ids = if rule.checklist.is_empty() {
        "none".to_string()
    } else {
        rule.checklist.join(", ")
    };
    let mut help_text = format!("Checklist items: {ids}.\n");
    let mut help_md = format!("**Checklist items:** {ids}\n\n");
    for (id, t) in &known {
        help_text.push_str(&format!("- {id}: {t}\n"));
        help_md.push_str(&format!("- **{id}**: {t}\n"));
    }
    let tail = "The finding's evidence (tool call, response excerpt, ground-truth rows, audit records) is in report.html and report.json from the same run.";
    help_text.push_str(tail);
    help_md.push('\n');
    help_md.push_str(tail);
    let mut tags: Vec<String> = vec![
        "security".into(),
        "preflight".into(),
        rule.family.to_string(),
    ];
    tags.extend(rule.checklist.iter().map(|s| s.to_string()));
    json!({
        "id": rule.code,
        "name": pascal(rule.code),
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "help": {"text": help_text, "markdown": help_md},
        "defaultConfiguration": {"level": "error"},
        "properties": {
            "tags": tags,
            "precision": "very-high",
            "problem.severity": "error",
            "security-severity": security_severity(rule.severity),
            "checklist": rule.checklist,
            "family": rule.family,
        }
    })
}

fn message(f: &Finding) -> String {
    let prefix = match f.verdict {
        Verdict::Fail => "",
        Verdict::Error => "The probe could not run. ",
        Verdict::NotVerified => "Not verified. ",
        Verdict::Pass => "",
    };
    let mut m = format!("{prefix}{}: {}", f.title, f.message);
    if !f.evidence.summary.is_empty() {
        m.push_str(&format!(
            " Observed: {}.",
            f.evidence.summary.trim_end_matches('.')
        ));
    }
    m
}

/// The SARIF document as a JSON value.
pub fn to_value(report: &Report, checklist: &Checklist) -> Value {
    to_value_scrubbed(&Scrubbed::new(report), checklist)
}

pub(crate) fn to_value_scrubbed(report: &Scrubbed, checklist: &Checklist) -> Value {
    let e = &report.environment;
    let sorted = report.sorted_findings();

    // Rules in code order; each collects every checklist ID and the worst severity seen.
    let mut rules: Vec<Rule> = Vec::new();
    let mut by_code: Vec<&Finding> = report.findings.iter().collect();
    by_code.sort_by(|a, b| a.code.cmp(&b.code));
    for f in by_code {
        let rule = match rules.iter_mut().find(|r| r.code == f.code) {
            Some(r) => r,
            None => {
                rules.push(Rule {
                    code: &f.code,
                    family: &f.family,
                    checklist: Vec::new(),
                    severity: f.severity,
                });
                let last = rules.len() - 1;
                &mut rules[last]
            }
        };
        rule.severity = rule.severity.max(f.severity);
        for id in &f.checklist {
            if !rule.checklist.contains(&id.as_str()) {
                rule.checklist.push(id);
            }
        }
    }

    let mut results = Vec::new();
    for f in sorted.iter().filter(|f| !f.verdict.is_pass()) {
        let index = rules.iter().position(|r| r.code == f.code).unwrap_or(0);
        let (path, line, column) = match &f.location {
            Some(l) => (l.path.as_str(), l.line.max(1), l.column.max(1)),
            None => (e.policy_path.as_str(), 1, 1),
        };
        let mut result = json!({
            "ruleId": f.code,
            "ruleIndex": index,
            "level": level(f.verdict),
            "message": {"text": message(f)},
            "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
            "properties": {
                "verdict": f.verdict.as_str(),
                "severity": f.severity.as_str(),
                "family": f.family,
                "checklist": f.checklist,
                "security-severity": security_severity(f.severity),
            }
        });
        if !path.is_empty() {
            let (uri, relative) = uri(path);
            let mut artifact = json!({"uri": uri});
            if relative {
                artifact["uriBaseId"] = json!("%SRCROOT%");
            }
            result["locations"] = json!([{
                "physicalLocation": {
                    "artifactLocation": artifact,
                    "region": {"startLine": line, "startColumn": column}
                }
            }]);
        }
        results.push(result);
    }

    let kind = match report.kind {
        ReportKind::Probe => "probe",
        ReportKind::Agent => "agent",
        ReportKind::SelfTest => "self-test",
    };
    let summary = report.summary();
    let rules: Vec<Value> = rules.iter().map(|r| rule_value(r, checklist)).collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {
                "driver": {
                    "name": "preflight",
                    "version": e.preflight_version,
                    "semanticVersion": e.preflight_version,
                    "rules": rules,
                }
            },
            "automationDetails": {"id": format!("preflight/{kind}/{}/", e.target)},
            "columnKind": "unicodeCodePoints",
            "invocations": [{
                "executionSuccessful": true,
                "properties": {
                    "target": e.target,
                    "policyPath": e.policy_path,
                    "policyHash": e.policy_hash,
                    "fixturesHash": e.fixtures_hash,
                    "databaseBackend": e.database_backend,
                    "serverVersion": e.server_version,
                    "startedAt": e.started_at,
                    "toolCalls": report.tool_calls,
                }
            }],
            "results": results,
            "properties": {"summary": summary.totals, "families": summary.families},
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{redact_snapshot, sample_report, PLANTED_PASSWORD, PLANTED_TOKEN};

    fn rendered() -> String {
        let mut buf = Vec::new();
        render(&sample_report(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn snapshot() {
        insta::assert_snapshot!("results_sarif", redact_snapshot(&rendered()));
    }

    fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{ptr} missing or not a string"))
    }

    /// The properties SARIF 2.1.0 makes required (§3.13–3.27), and what GitHub code scanning
    /// additionally needs to show an alert on a line.
    #[test]
    fn required_shape() {
        let report = sample_report();
        let v: Value = serde_json::from_str(&rendered()).unwrap();
        assert_eq!(str_at(&v, "/$schema"), SARIF_SCHEMA);
        assert_eq!(str_at(&v, "/version"), "2.1.0");
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(str_at(run, "/tool/driver/name"), "preflight");
        let rules = run
            .pointer("/tool/driver/rules")
            .and_then(Value::as_array)
            .unwrap();
        let mut codes: Vec<&str> = report.findings.iter().map(|f| f.code.as_str()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(rules.len(), codes.len(), "one rule per probe code");
        for (rule, code) in rules.iter().zip(&codes) {
            assert_eq!(str_at(rule, "/id"), *code);
            assert!(!str_at(rule, "/shortDescription/text").is_empty());
            assert!(str_at(rule, "/help/text").contains("Checklist items:"));
            assert!(rule
                .pointer("/properties/tags")
                .and_then(Value::as_array)
                .is_some_and(|t| t.len() >= 3));
            let sev: f64 = str_at(rule, "/properties/security-severity")
                .parse()
                .unwrap();
            assert!((0.0..=10.0).contains(&sev));
        }
        let results = run["results"].as_array().unwrap();
        let non_pass = report
            .findings
            .iter()
            .filter(|f| !f.verdict.is_pass())
            .count();
        assert_eq!(results.len(), non_pass);
        for r in results {
            let id = str_at(r, "/ruleId");
            let idx = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(
                str_at(&rules[idx], "/id"),
                id,
                "ruleIndex points at its rule"
            );
            assert!(["error", "warning", "note"].contains(&str_at(r, "/level")));
            assert!(!str_at(r, "/message/text").is_empty());
            let loc = &r["locations"][0]["physicalLocation"];
            assert!(!str_at(loc, "/artifactLocation/uri").is_empty());
            assert!(
                loc.pointer("/region/startLine")
                    .and_then(Value::as_u64)
                    .unwrap()
                    >= 1
            );
            assert_eq!(
                str_at(
                    r,
                    &format!(
                        "/partialFingerprints/{}",
                        FINGERPRINT_KEY.replace('/', "~1")
                    )
                )
                .len(),
                16
            );
            let f = report.findings.iter().find(|f| f.code == id).unwrap();
            let level = str_at(r, "/level");
            match f.verdict {
                Verdict::Fail | Verdict::Error => assert_eq!(level, "error"),
                Verdict::NotVerified => assert_eq!(level, "warning"),
                Verdict::Pass => panic!("a pass became a result"),
            }
        }
        assert!(run
            .pointer("/invocations/0/executionSuccessful")
            .and_then(Value::as_bool)
            .unwrap());
    }

    #[test]
    fn results_point_at_the_governing_policy_line() {
        let v: Value = serde_json::from_str(&rendered()).unwrap();
        let results = v["runs"][0]["results"].as_array().unwrap();
        let leak = results
            .iter()
            .find(|r| r["ruleId"] == "cross_tenant.get_by_foreign_id")
            .unwrap();
        let loc = &leak["locations"][0]["physicalLocation"];
        assert_eq!(
            loc["artifactLocation"]["uri"],
            "fixtures/policies/shop.yaml"
        );
        assert_eq!(loc["artifactLocation"]["uriBaseId"], "%SRCROOT%");
        assert_eq!(loc["region"]["startLine"], 12);
        // Without a location, the result falls back to the top of the policy file.
        let nv = results
            .iter()
            .find(|r| r["ruleId"] == "write.reason_required")
            .unwrap();
        assert_eq!(
            nv["locations"][0]["physicalLocation"]["region"]["startLine"],
            1
        );
    }

    #[test]
    fn rule_text_comes_from_the_checklist() {
        let v: Value = serde_json::from_str(&rendered()).unwrap();
        let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
        let rls = rules
            .iter()
            .find(|r| r["id"] == "hygiene.rls_forced")
            .unwrap();
        assert_eq!(
            rls["shortDescription"]["text"],
            "ISO-5: Row-level security is enabled (and forced) on the highest-stakes tables"
        );
        assert_eq!(rls["name"], "HygieneRlsForced");
    }

    #[test]
    fn uris_are_encoded() {
        assert_eq!(
            uri("policies/my policy.yaml"),
            ("policies/my%20policy.yaml".into(), true)
        );
        assert_eq!(uri("./p.yaml"), ("p.yaml".into(), true));
        assert_eq!(
            uri("/etc/preflight/p.yaml"),
            ("file:///etc/preflight/p.yaml".into(), false)
        );
        assert_eq!(uri("a\\b#c.yaml"), ("a/b%23c.yaml".into(), true));
    }

    #[test]
    fn secrets_never_appear() {
        let text = rendered();
        assert!(!text.contains(PLANTED_PASSWORD) && !text.contains(PLANTED_TOKEN));
    }
}
