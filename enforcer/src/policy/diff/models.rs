//! Model-level changes: models, tools, fields, patterns, relations, writable fields, reasons,
//! tenant scope, soft delete.

use std::collections::BTreeSet;

use super::{list, push, Change, Direction};
use crate::policy::load::resolve_field;
use crate::policy::model::{FieldAction, ModelPolicy, PatternSet, Policy};

pub(super) fn models(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
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

pub(super) fn patterns(c: &mut Vec<Change>, old: &Policy, new: &Policy) {
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
