//! Limits: budgets per model (grouped when every model changes alike), quotas, dry runs.

use std::collections::{BTreeMap, BTreeSet};

use super::{push, thousands, Change, Direction};
use crate::policy::model::{Budgets, Policy};

/// A limit moving between two values; `None` is unlimited, so raising it widens.
pub(super) fn limit(
    c: &mut Vec<Change>,
    kind: &'static str,
    what: &str,
    old: Option<u64>,
    new: Option<u64>,
) {
    let (direction, text) = match (old, new) {
        (Some(a), Some(b)) if b > a => (
            Direction::Widens,
            format!("{what} raised from {} to {}", thousands(a), thousands(b)),
        ),
        (Some(a), Some(b)) if b < a => (
            Direction::Narrows,
            format!("{what} lowered from {} to {}", thousands(a), thousands(b)),
        ),
        (Some(a), None) => (
            Direction::Widens,
            format!("{what} removed: now unlimited (was {})", thousands(a)),
        ),
        (None, Some(b)) => (
            Direction::Narrows,
            format!("{what} set to {} (was unlimited)", thousands(b)),
        ),
        _ => return,
    };
    push(c, direction, kind, text);
}

/// Budget changes, grouped: a change every shared model makes alike is said once.
pub(super) fn budgets(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
    let shared: Vec<&String> = new
        .models
        .keys()
        .filter(|m| old.models.contains_key(*m))
        .collect();
    // sentence -> (direction, models)
    let mut groups: BTreeMap<(Direction, String), Vec<&str>> = BTreeMap::new();
    for m in &shared {
        let mut one = Vec::new();
        budget_pair(&mut one, &old.models[*m].budgets, &new.models[*m].budgets);
        for ch in one {
            groups
                .entry((ch.direction, ch.text))
                .or_default()
                .push(m.as_str());
        }
    }
    for ((direction, text), ms) in groups {
        let scope = if ms.len() == shared.len() && shared.len() > 1 {
            "every model".to_string()
        } else {
            ms.join(", ")
        };
        push(c, direction, "budget", format!("{text} on {scope}"));
    }
    let (o, n) = (&old.quotas, &new.quotas);
    limit(
        c,
        "quota",
        "calls_per_hour",
        o.calls_per_hour,
        n.calls_per_hour,
    );
    limit(
        c,
        "quota",
        "rows_per_hour",
        o.rows_per_hour,
        n.rows_per_hour,
    );
    limit(
        c,
        "budget",
        "dry_run_required_above",
        Some(old.writes.dry_run_required_above),
        Some(new.writes.dry_run_required_above),
    );
}

fn budget_pair(c: &mut Vec<Change>, o: &Budgets, n: &Budgets) {
    let tools: BTreeSet<&String> = o.max_rows.keys().chain(n.max_rows.keys()).collect();
    for t in tools {
        limit(
            c,
            "budget",
            &format!("max_rows ({t})"),
            o.max_rows.get(t).copied(),
            n.max_rows.get(t).copied(),
        );
    }
    limit(
        c,
        "budget",
        "max_scan_rows",
        o.max_scan_rows,
        n.max_scan_rows,
    );
    limit(
        c,
        "budget",
        "statement_timeout_ms",
        o.statement_timeout_ms,
        n.statement_timeout_ms,
    );
    limit(
        c,
        "budget",
        "max_join_depth",
        Some(o.max_join_depth.into()),
        Some(n.max_join_depth.into()),
    );
    limit(
        c,
        "budget",
        "max_writes_per_minute",
        o.max_writes_per_minute.map(u64::from),
        n.max_writes_per_minute.map(u64::from),
    );
    limit(
        c,
        "budget",
        "max_affected_rows",
        o.max_affected_rows,
        n.max_affected_rows,
    );
}
