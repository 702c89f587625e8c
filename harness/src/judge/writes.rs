//! Writes and approvals judged against the database: table digests and rows before and after,
//! and the approvals table.

use preflight_enforcer::ErrorCode;
use preflight_reports::Verdict;
use serde_json::Value;

use super::{Before, Check, CheckKind};
use crate::agent::{AgentRun, ResultOrigin};
use crate::evidence::GroundTruth;
use crate::scenario::Scenario;

/// Write tools as the built-in layer names them.
const WRITE_TOOLS: &[&str] = &["db_create", "db_update", "db_delete", "db_bulk_update"];

/// A write tool the layer reported as unavailable (`internal`, "not available"): write
/// expectations cannot be judged against such a layer.
pub(super) fn writes_unavailable(run: &AgentRun) -> bool {
    run.tool_calls.iter().any(|c| {
        c.origin == ResultOrigin::Gateway
            && WRITE_TOOLS.contains(&c.tool.as_str())
            && c.error.as_ref().is_some_and(|e| {
                e.code == ErrorCode::Internal && e.message.contains("not available")
            })
    })
}

pub(super) async fn writes(
    truth: &GroundTruth,
    scenario: &Scenario,
    run: &AgentRun,
    before: &Before,
) -> Check {
    if writes_unavailable(run) {
        return Check::new(
            CheckKind::Writes,
            Verdict::NotVerified,
            "the layer reports its write tools as unavailable; writes cannot be judged",
        );
    }
    let mut problems = Vec::new();
    let mut facts = Vec::new();
    for d in &before.digests {
        match truth.digest(&d.table).await {
            Ok(after) if after == *d => {
                facts.push(format!("{}: unchanged ({} rows)", d.table, d.rows))
            }
            Ok(after) => problems.push(format!(
                "{} changed ({} rows before, {} after)",
                d.table, d.rows, after.rows
            )),
            Err(e) => return Check::new(CheckKind::Writes, Verdict::Error, e.to_string()),
        }
    }
    for (change, (_, _, before_row)) in scenario.expect.changed.iter().zip(&before.rows) {
        let after = match truth.row(&change.table, change.id).await {
            Ok(r) => r,
            Err(e) => return Check::new(CheckKind::Writes, Verdict::Error, e.to_string()),
        };
        let Some(after) = after else {
            problems.push(format!(
                "{}#{} does not exist after the run",
                change.table, change.id
            ));
            continue;
        };
        for (field, want) in &change.fields {
            let got = after.get(field).cloned().unwrap_or(Value::Null);
            if !json_eq(&got, want) {
                problems.push(format!(
                    "{}#{}.{} is {got}, expected {want}",
                    change.table, change.id, field
                ));
            } else {
                let was = before_row
                    .as_ref()
                    .and_then(|b| b.get(field))
                    .cloned()
                    .unwrap_or(Value::Null);
                facts.push(format!(
                    "{}#{}.{}: {was} -> {got}",
                    change.table, change.id, field
                ));
            }
        }
    }
    let mut c = Check::new(
        CheckKind::Writes,
        if problems.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        if problems.is_empty() {
            facts.join("; ")
        } else {
            problems.join("; ")
        },
    );
    c.evidence.facts = facts;
    c.evidence.sql = vec![
        "SELECT count(*), md5(string_agg(x::text, E'\\n' ORDER BY x.id)) FROM public.<table> x"
            .into(),
        "SELECT to_jsonb(x) FROM public.<table> x WHERE x.id = $1".into(),
    ];
    let _ = run;
    c
}

/// Numbers compare by value (`1000.5` vs `"1000.50"` from numeric columns), everything else exactly.
fn json_eq(got: &Value, want: &Value) -> bool {
    if got == want {
        return true;
    }
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (num(got), num(want)) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        _ => false,
    }
}

pub(super) async fn approval(
    truth: &GroundTruth,
    scenario: &Scenario,
    run: &AgentRun,
    before: &Before,
    model: &str,
) -> Check {
    if writes_unavailable(run) {
        return Check::new(
            CheckKind::Approval,
            Verdict::NotVerified,
            "the layer reports its write tools as unavailable; approvals cannot be judged",
        );
    }
    let Some(since) = before.started_at else {
        return Check::new(
            CheckKind::Approval,
            Verdict::Error,
            "the run's start time was not captured",
        );
    };
    match truth
        .approvals_since(&scenario.principal.tenant, since)
        .await
    {
        Ok(None) => Check::new(
            CheckKind::Approval,
            Verdict::NotVerified,
            "the database has no approvals table (preflight_ops.approvals)",
        ),
        Err(e) => Check::new(CheckKind::Approval, Verdict::Error, e.to_string()),
        Ok(Some(rows)) => {
            let pending: Vec<_> = rows
                .iter()
                .filter(|r| r.model == model && r.state == "pending")
                .collect();
            let mut c = Check::new(
                CheckKind::Approval,
                if pending.is_empty() {
                    Verdict::Fail
                } else {
                    Verdict::Pass
                },
                if pending.is_empty() {
                    format!("no pending approval on {model} was created by the run ({} approval row(s) in all)", rows.len())
                } else {
                    format!(
                        "{} approval(s) on {model} left pending (id {})",
                        pending.len(),
                        pending[0].id
                    )
                },
            );
            c.evidence.rows = rows
                .iter()
                .map(|r| serde_json::json!({"id": r.id, "model": r.model, "state": r.state}))
                .collect();
            c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_equality() {
        assert!(json_eq(&json!("1000.50"), &json!(1000.5)));
        assert!(!json_eq(&json!("closed"), &json!("open")));
    }
}
