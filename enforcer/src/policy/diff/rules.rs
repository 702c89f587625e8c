//! Approval rules, settings and audit sinks.

use std::collections::{BTreeMap, BTreeSet};

use super::{list, number, push, thousands, Change, Direction};
use crate::policy::model::{ApprovalRule, AuditSinkConfig, Policy};

fn gated(r: &ApprovalRule) -> String {
    let mut s = format!("writes to {}", r.model);
    if !r.fields.is_empty() {
        s.push_str(&format!(" that set {}", list(&r.fields)));
    }
    if let Some(t) = &r.threshold {
        s.push_str(&format!(
            " with {} above {}",
            t.field,
            number(t.greater_than)
        ));
    }
    if !r.tools.is_empty() {
        s.push_str(&format!(" (by {})", list(&r.tools)));
    }
    s
}

pub(super) fn approvals(c: &mut Vec<Change>, old: &[ApprovalRule], new: &[ApprovalRule]) {
    let by_name = |rs: &[ApprovalRule]| -> BTreeMap<String, ApprovalRule> {
        rs.iter().map(|r| (r.name.clone(), r.clone())).collect()
    };
    let (o, n) = (by_name(old), by_name(new));
    for (name, r) in &o {
        let Some(nr) = n.get(name) else {
            push(
                c,
                Direction::Widens,
                "approval",
                format!("{} no longer need approval (rule {name} removed)", gated(r)),
            );
            continue;
        };
        match (&r.threshold, &nr.threshold) {
            (Some(a), Some(b)) if a.greater_than != b.greater_than => {
                let (direction, verb) = if b.greater_than > a.greater_than {
                    (Direction::Widens, "raised")
                } else {
                    (Direction::Narrows, "lowered")
                };
                push(
                    c,
                    direction,
                    "approval",
                    format!(
                        "approval threshold of rule {name} ({}.{}) {verb} from {} to {}",
                        nr.model,
                        b.field,
                        number(a.greater_than),
                        number(b.greater_than)
                    ),
                );
            }
            (Some(a), None) => push(
                c,
                Direction::Narrows,
                "approval",
                format!(
                    "rule {name} now gates {} whatever {} is (was above {})",
                    nr.model,
                    a.field,
                    number(a.greater_than)
                ),
            ),
            (None, Some(b)) => push(
                c,
                Direction::Widens,
                "approval",
                format!(
                    "rule {name} now gates {} only with {} above {}",
                    nr.model,
                    b.field,
                    number(b.greater_than)
                ),
            ),
            _ => {}
        }
        // An empty tool list gates every write tool.
        match (r.tools.is_empty(), nr.tools.is_empty()) {
            (true, false) => push(
                c,
                Direction::Widens,
                "approval",
                format!(
                    "rule {name} now gates only {} (was every write tool)",
                    list(&nr.tools)
                ),
            ),
            (false, true) => push(
                c,
                Direction::Narrows,
                "approval",
                format!("rule {name} now gates every write tool"),
            ),
            (false, false) => {
                for t in r.tools.difference(&nr.tools) {
                    push(
                        c,
                        Direction::Widens,
                        "approval",
                        format!(
                            "{t} on {} no longer needs approval under rule {name}",
                            nr.model
                        ),
                    );
                }
                for t in nr.tools.difference(&r.tools) {
                    push(
                        c,
                        Direction::Narrows,
                        "approval",
                        format!("{t} on {} now needs approval under rule {name}", nr.model),
                    );
                }
            }
            (true, true) => {}
        }
        for f in r.fields.difference(&nr.fields) {
            push(
                c,
                Direction::Widens,
                "approval",
                format!(
                    "writes setting {}.{f} no longer need approval under rule {name}",
                    nr.model
                ),
            );
        }
        for f in nr.fields.difference(&r.fields) {
            push(
                c,
                Direction::Narrows,
                "approval",
                format!(
                    "writes setting {}.{f} now need approval under rule {name}",
                    nr.model
                ),
            );
        }
        if r.approvers != nr.approvers {
            push(
                c,
                Direction::Other,
                "approval",
                format!(
                    "approvers of rule {name} are now {} (were {})",
                    list(&nr.approvers),
                    list(&r.approvers)
                ),
            );
        }
        if r.sla_seconds != nr.sla_seconds {
            push(
                c,
                Direction::Other,
                "approval",
                format!(
                    "rule {name}: undecided requests now expire after {} s (was {} s)",
                    thousands(nr.sla_seconds),
                    thousands(r.sla_seconds)
                ),
            );
        }
    }
    for (name, r) in n.iter().filter(|(k, _)| !o.contains_key(*k)) {
        push(
            c,
            Direction::Narrows,
            "approval",
            format!("{} now need approval (rule {name} added)", gated(r)),
        );
    }
}

pub(super) fn settings(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
    if old.tenant_setting != new.tenant_setting {
        push(
            c,
            Direction::Other,
            "tenant",
            format!(
                "the tenant is now set in {} (was {})",
                new.tenant_setting, old.tenant_setting
            ),
        );
    }
    if old.budget_store != new.budget_store {
        push(
            c,
            Direction::Other,
            "setting",
            format!(
                "budgets are now counted in {} (was {})",
                store(&new.budget_store),
                store(&old.budget_store)
            ),
        );
    }
    if old.deployment != new.deployment {
        let n = |d: Option<u32>| d.map_or("unstated".to_string(), |i| i.to_string());
        push(
            c,
            Direction::Other,
            "setting",
            format!(
                "deployment instances now {} (was {})",
                n(new.deployment.instances),
                n(old.deployment.instances)
            ),
        );
    }
}

fn store(s: &crate::policy::model::BudgetStoreConfig) -> String {
    match s {
        crate::policy::model::BudgetStoreConfig::Memory => "memory".to_string(),
        crate::policy::model::BudgetStoreConfig::Redis { url_env } => format!("redis (${url_env})"),
    }
}

fn sink(s: &AuditSinkConfig) -> String {
    match s {
        AuditSinkConfig::Postgres => "postgres".to_string(),
        AuditSinkConfig::Jsonl { path } => format!("jsonl ({path})"),
        AuditSinkConfig::Tracing => "tracing".to_string(),
    }
}

pub(super) fn audit(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
    let o: BTreeSet<String> = old.audit.sinks.iter().map(sink).collect();
    let n: BTreeSet<String> = new.audit.sinks.iter().map(sink).collect();
    // Less audit is less oversight: a removed sink widens what goes unseen.
    for s in o.difference(&n) {
        push(
            c,
            Direction::Widens,
            "audit",
            format!("audit sink {s} removed"),
        );
    }
    for s in n.difference(&o) {
        push(
            c,
            Direction::Narrows,
            "audit",
            format!("audit sink {s} added"),
        );
    }
    let days = |r: Option<&crate::policy::model::Retention>| {
        r.map(|r| [r.hot_days, r.warm_days, r.cold_days])
    };
    if let (Some(a), Some(b)) = (
        days(old.audit.retention.as_ref()),
        days(new.audit.retention.as_ref()),
    ) {
        for (i, tier) in ["hot", "warm", "cold"].iter().enumerate() {
            let what = format!("audit retention ({tier})");
            match b[i].cmp(&a[i]) {
                std::cmp::Ordering::Less => push(
                    c,
                    Direction::Widens,
                    "audit",
                    format!(
                        "{what} shortened from {} to {} days",
                        thousands(a[i].into()),
                        thousands(b[i].into())
                    ),
                ),
                std::cmp::Ordering::Greater => push(
                    c,
                    Direction::Narrows,
                    "audit",
                    format!(
                        "{what} lengthened from {} to {} days",
                        thousands(a[i].into()),
                        thousands(b[i].into())
                    ),
                ),
                std::cmp::Ordering::Equal => {}
            }
        }
    } else if old.audit.retention.is_some() && new.audit.retention.is_none() {
        push(
            c,
            Direction::Widens,
            "audit",
            "audit retention removed".to_string(),
        );
    }
}
