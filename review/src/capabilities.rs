//! QRT-1: a policy's capabilities in plain words, for the person who re-reads and signs it.

use preflight_enforcer::policy::{resolve_field, thousands, AuditSinkConfig, FieldAction, Policy};

fn join(v: &[String]) -> String {
    v.join(", ")
}

fn limit(v: Option<u64>) -> String {
    v.map_or("unlimited".to_string(), thousands)
}

/// One line per model, then approvals, quotas and audit.
pub fn capabilities(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for m in p.models.values() {
        let mut by_action: [(FieldAction, &str, Vec<String>); 4] = [
            (FieldAction::Allow, "returned as stored", Vec::new()),
            (FieldAction::Mask, "masked", Vec::new()),
            (FieldAction::Hash, "hashed", Vec::new()),
            (FieldAction::Deny, "denied", Vec::new()),
        ];
        // Catalog-resolved columns when the policy was loaded against a database, else the
        // fields the policy names.
        let names: Vec<String> = if m.columns.is_empty() {
            p.field_rules
                .models
                .get(&m.name)
                .map(|r| r.explicit.keys().cloned().collect())
                .unwrap_or_default()
        } else {
            m.columns.iter().map(|c| c.name.clone()).collect()
        };
        for n in names {
            let action = m
                .action(&n)
                .or_else(|| resolve_field(p, &m.name, &n).map(|(a, _)| a));
            if let Some(a) = action {
                if let Some(slot) = by_action.iter_mut().find(|s| s.0 == a) {
                    slot.2.push(n);
                }
            }
        }
        let tools: Vec<String> = m.tools.iter().cloned().collect();
        let mut s = if tools.is_empty() {
            format!("{}: no tools (reachable only through includes)", m.name)
        } else {
            format!("{}: {}", m.name, join(&tools))
        };
        for (_, words, cols) in &by_action {
            if !cols.is_empty() {
                s.push_str(&format!("; {words}: {}", join(cols)));
            }
        }
        match &m.tenant_column {
            Some(c) => s.push_str(&format!("; scoped to the caller's tenant by {c}")),
            None => s.push_str(&format!(
                "; NOT tenant-scoped ({})",
                m.tenant_exempt_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            )),
        }
        if !m.relations.is_empty() {
            let r: Vec<String> = m.relations.keys().cloned().collect();
            s.push_str(&format!("; may include {}", join(&r)));
        }
        if !m.writable_fields.is_empty() {
            let w: Vec<String> = m.writable_fields.iter().cloned().collect();
            s.push_str(&format!(
                "; may write {}{}",
                join(&w),
                if m.require_reason {
                    " (with a reason)"
                } else {
                    " (no reason needed)"
                }
            ));
        }
        let b = &m.budgets;
        s.push_str(&format!(
            "; at most {} rows per query, {} rows scanned, {} ms per statement",
            limit(b.max_rows_for("db_query")),
            limit(b.max_scan_rows),
            limit(b.statement_timeout_ms),
        ));
        out.push(s);
    }
    for r in &p.approvals {
        let mut s = format!("approval rule {}: writes to {}", r.name, r.model);
        if !r.fields.is_empty() {
            let f: Vec<String> = r.fields.iter().cloned().collect();
            s.push_str(&format!(" setting {}", join(&f)));
        }
        if let Some(t) = &r.threshold {
            s.push_str(&format!(" with {} above {}", t.field, t.greater_than));
        }
        let a: Vec<String> = r.approvers.iter().cloned().collect();
        s.push_str(&format!(" wait for {}", join(&a)));
        out.push(s);
    }
    out.push(format!(
        "quotas per tenant: {} calls and {} rows an hour; writes touching more than {} rows need a dry run first",
        limit(p.quotas.calls_per_hour),
        limit(p.quotas.rows_per_hour),
        thousands(p.writes.dry_run_required_above)
    ));
    let sinks: Vec<String> = p
        .audit
        .sinks
        .iter()
        .map(|s| match s {
            AuditSinkConfig::Postgres => "postgres".to_string(),
            AuditSinkConfig::Jsonl { path } => format!("jsonl ({path})"),
            AuditSinkConfig::Tracing => "tracing".to_string(),
        })
        .collect();
    out.push(if sinks.is_empty() {
        "audit: no sink declared".to_string()
    } else {
        format!("audit: every call recorded to {}", join(&sinks))
    });
    out
}
