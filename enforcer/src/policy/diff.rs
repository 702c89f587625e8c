//! What an agent can see and do under one policy that it could not under another, in words
//! (`preflight policy diff`, and the review's drift section).
//!
//! The main type is [`PolicyDiff`]: a list of [`Change`]s, each a plain sentence with its
//! [`Direction`]. A change *widens* when the agent gains reach (a model, a tool, an unmasked
//! field, a raised budget, a write without a reason or approval, less audit); it *narrows* in the
//! reverse case; everything else (a renamed setting, a different approver list) is `Other`.
//! CI asks for a security review when anything widens.
//!
//! Fields are compared for every column either policy names or the catalog resolved (a policy
//! loaded without a catalog only knows the columns it names); a column that only a wildcard
//! pattern reaches is covered by the pattern's own line, and the default action for unnamed
//! columns by its own line.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::load::resolve_field;
use super::model::{
    ApprovalRule, AuditSinkConfig, Budgets, FieldAction, ModelPolicy, PatternSet, Policy,
};

/// Which way a change moves the agent's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Widens,
    Narrows,
    Other,
}

/// One change, as a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub direction: Direction,
    /// What kind of capability: `model`, `tool`, `field`, `pattern`, `relation`, `writable`,
    /// `reason`, `approval`, `budget`, `quota`, `tenant`, `audit`, `setting`.
    pub kind: &'static str,
    pub text: String,
}

/// Which policy file a side of the diff came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Side {
    pub path: String,
    pub name: String,
    pub hash: String,
}

impl Side {
    fn of(p: &Policy) -> Self {
        Self {
            path: p.path.clone(),
            name: p.name.clone(),
            hash: p.hash.clone(),
        }
    }
}

/// Every capability change from `old` to `new`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    pub old: Side,
    pub new: Side,
    pub changes: Vec<Change>,
}

impl PolicyDiff {
    pub fn widens(&self) -> bool {
        self.changes
            .iter()
            .any(|c| c.direction == Direction::Widens)
    }

    pub fn of(&self, d: Direction) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.direction == d)
    }

    /// Markdown for a pull-request comment.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# Policy diff: {}\n\nold: `{}` (hash {}) → new: `{}` (hash {})\n\n",
            self.new.name,
            self.old.path,
            short(&self.old.hash),
            self.new.path,
            short(&self.new.hash)
        );
        if self.changes.is_empty() {
            s.push_str("No capability changes.\n");
            return s;
        }
        for (d, title) in [
            (
                Direction::Widens,
                "Widened: the agent can see or do more than before",
            ),
            (
                Direction::Narrows,
                "Narrowed: the agent can see or do less than before",
            ),
            (Direction::Other, "Other changes"),
        ] {
            let items: Vec<&Change> = self.of(d).collect();
            if items.is_empty() {
                continue;
            }
            s.push_str(&format!("## {title} ({})\n\n", items.len()));
            for c in items {
                s.push_str(&format!("- {}\n", c.text));
            }
            s.push('\n');
        }
        s.push_str(if self.widens() {
            "**Capabilities widen: ask for a security review.**\n"
        } else {
            "Capabilities only narrow or stay the same.\n"
        });
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "old": self.old,
            "new": self.new,
            "widens": self.widens(),
            "changes": self.changes,
        })
    }
}

fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

/// Compares two validated policies.
pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let mut out = Vec::new();
    let c = &mut out;
    models(c, old, new);
    patterns(c, old, new);
    budgets(c, old, new);
    approvals(c, &old.approvals, &new.approvals);
    settings(c, old, new);
    audit(c, old, new);
    PolicyDiff {
        old: Side::of(old),
        new: Side::of(new),
        changes: out,
    }
}

fn push(c: &mut Vec<Change>, direction: Direction, kind: &'static str, text: String) {
    c.push(Change {
        direction,
        kind,
        text,
    });
}

fn list(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// `1234567` as `1,234,567`; fractions kept as written.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn number(x: f64) -> String {
    if x.fract() == 0.0 && (0.0..1e15).contains(&x) {
        thousands(x as u64)
    } else {
        x.to_string()
    }
}

fn models(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
    for (name, m) in &new.models {
        match old.models.get(name) {
            None => push(
                c,
                Direction::Widens,
                "model",
                if m.tools.is_empty() {
                    format!("{name} is now a model of the policy (no tools; reachable through includes)")
                } else {
                    format!("{name} is now reachable with {}", list(&m.tools))
                },
            ),
            Some(o) => model(c, old, new, o, m),
        }
    }
    for name in old.models.keys().filter(|n| !new.models.contains_key(*n)) {
        push(
            c,
            Direction::Narrows,
            "model",
            format!("{name} is no longer reachable"),
        );
    }
}

fn model(c: &mut Vec<Change>, old: &Policy, new: &Policy, o: &ModelPolicy, n: &ModelPolicy) {
    let name = &n.name;
    for t in n.tools.difference(&o.tools) {
        push(
            c,
            Direction::Widens,
            "tool",
            format!("{t} is now allowed on {name}"),
        );
    }
    for t in o.tools.difference(&n.tools) {
        push(
            c,
            Direction::Narrows,
            "tool",
            format!("{t} is no longer allowed on {name}"),
        );
    }
    fields(c, old, new, o, n);
    for r in n.relations.keys().filter(|r| !o.relations.contains_key(*r)) {
        push(
            c,
            Direction::Widens,
            "relation",
            format!("{name} can now include {r} ({})", n.relations[r].target),
        );
    }
    for r in o.relations.keys().filter(|r| !n.relations.contains_key(*r)) {
        push(
            c,
            Direction::Narrows,
            "relation",
            format!("{name} can no longer include {r}"),
        );
    }
    for f in n.writable_fields.difference(&o.writable_fields) {
        push(
            c,
            Direction::Widens,
            "writable",
            format!("{name}.{f} is now writable"),
        );
    }
    for f in o.writable_fields.difference(&n.writable_fields) {
        push(
            c,
            Direction::Narrows,
            "writable",
            format!("{name}.{f} is no longer writable"),
        );
    }
    match (o.require_reason, n.require_reason) {
        (true, false) => push(
            c,
            Direction::Widens,
            "reason",
            format!("writes to {name} no longer need a reason"),
        ),
        (false, true) => push(
            c,
            Direction::Narrows,
            "reason",
            format!("writes to {name} now need a reason"),
        ),
        _ => {}
    }
    match (&o.tenant_column, &n.tenant_column) {
        (Some(a), None) => push(
            c,
            Direction::Widens,
            "tenant",
            format!(
                "{name} is no longer scoped by tenant (was by {a}; exempt: {})",
                n.tenant_exempt_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        ),
        (None, Some(b)) => push(
            c,
            Direction::Narrows,
            "tenant",
            format!("{name} is now scoped by tenant column {b} (was tenant-exempt)"),
        ),
        (Some(a), Some(b)) if a != b => push(
            c,
            Direction::Other,
            "tenant",
            format!("{name} is now scoped by tenant column {b} (was {a})"),
        ),
        _ => {}
    }
    match (&o.soft_delete_column, &n.soft_delete_column) {
        (Some(a), None) => push(
            c,
            Direction::Widens,
            "setting",
            format!("db_delete on {name} now removes rows (was a soft delete setting {a})"),
        ),
        (None, Some(b)) => push(
            c,
            Direction::Narrows,
            "setting",
            format!("db_delete on {name} is now a soft delete setting {b} (was removing rows)"),
        ),
        _ => {}
    }
}

/// How open an action is: deny < hash < mask < allow (a mask shows part of the value, a hash
/// only equality).
fn openness(a: FieldAction) -> u8 {
    match a {
        FieldAction::Deny => 0,
        FieldAction::Hash => 1,
        FieldAction::Mask => 2,
        FieldAction::Allow => 3,
    }
}

fn now_words(a: FieldAction) -> &'static str {
    match a {
        FieldAction::Allow => "is now returned unmasked",
        FieldAction::Mask => "is now returned masked",
        FieldAction::Hash => "is now returned hashed",
        FieldAction::Deny => "is now denied",
    }
}

fn was_words(a: FieldAction) -> &'static str {
    match a {
        FieldAction::Allow => "returned unmasked",
        FieldAction::Mask => "masked",
        FieldAction::Hash => "hashed",
        FieldAction::Deny => "denied",
    }
}

/// A column's action under `p`: the catalog-resolved one when known, else by name.
fn action_of(p: &Policy, m: &ModelPolicy, column: &str) -> Option<FieldAction> {
    m.action(column)
        .or_else(|| resolve_field(p, &m.name, column).map(|(a, _)| a))
}

fn fields(c: &mut Vec<Change>, old: &Policy, new: &Policy, o: &ModelPolicy, n: &ModelPolicy) {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for m in [o, n] {
        names.extend(m.columns.iter().map(|c| c.name.as_str()));
    }
    for p in [old, new] {
        if let Some(r) = p.field_rules.models.get(&n.name) {
            names.extend(r.explicit.keys().map(String::as_str));
        }
    }
    for col in names {
        let (Some(a), Some(b)) = (action_of(old, o, col), action_of(new, n, col)) else {
            continue;
        };
        if a == b {
            continue;
        }
        let direction = if openness(b) > openness(a) {
            Direction::Widens
        } else {
            Direction::Narrows
        };
        push(
            c,
            direction,
            "field",
            format!("{}.{col} {} (was {})", n.name, now_words(b), was_words(a)),
        );
    }
}

fn patterns(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
    let (o, n) = (&old.field_rules, &new.field_rules);
    if o.default_action != n.default_action {
        let direction = if openness(n.default_action) > openness(o.default_action) {
            Direction::Widens
        } else {
            Direction::Narrows
        };
        let now = now_words(n.default_action).trim_start_matches("is ");
        push(
            c,
            direction,
            "field",
            format!(
                "columns no rule names are {now} (were {})",
                was_words(o.default_action)
            ),
        );
    }
    pattern_sets(c, "every model", &o.global, &n.global);
    let names: BTreeSet<&String> = o.models.keys().chain(n.models.keys()).collect();
    for m in names {
        // A model that appears or disappears is reported as a model.
        let (Some(a), Some(b)) = (o.models.get(m), n.models.get(m)) else {
            continue;
        };
        pattern_sets(c, m, &a.patterns, &b.patterns);
    }
}

fn pattern_sets(c: &mut Vec<Change>, scope: &str, o: &PatternSet, n: &PatternSet) {
    for (old_set, new_set, word) in [
        (&o.deny, &n.deny, "denied"),
        (&o.mask, &n.mask, "masked"),
        (&o.hash, &n.hash, "hashed"),
    ] {
        for p in old_set.difference(new_set) {
            push(
                c,
                Direction::Widens,
                "pattern",
                format!("columns matching {p} on {scope} are no longer {word} by pattern"),
            );
        }
        for p in new_set.difference(old_set) {
            push(
                c,
                Direction::Narrows,
                "pattern",
                format!("columns matching {p} on {scope} are now {word} by pattern"),
            );
        }
    }
}

/// A limit moving between two values; `None` is unlimited, so raising it widens.
fn limit(c: &mut Vec<Change>, kind: &'static str, what: &str, old: Option<u64>, new: Option<u64>) {
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
fn budgets(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
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

fn approvals(c: &mut Vec<Change>, old: &[ApprovalRule], new: &[ApprovalRule]) {
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

fn settings(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
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

fn store(s: &super::model::BudgetStoreConfig) -> String {
    match s {
        super::model::BudgetStoreConfig::Memory => "memory".to_string(),
        super::model::BudgetStoreConfig::Redis { url_env } => format!("redis (${url_env})"),
    }
}

fn sink(s: &AuditSinkConfig) -> String {
    match s {
        AuditSinkConfig::Postgres => "postgres".to_string(),
        AuditSinkConfig::Jsonl { path } => format!("jsonl ({path})"),
        AuditSinkConfig::Tracing => "tracing".to_string(),
    }
}

fn audit(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
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
    let days =
        |r: Option<&super::model::Retention>| r.map(|r| [r.hot_days, r.warm_days, r.cold_days]);
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

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
