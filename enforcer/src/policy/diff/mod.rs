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

mod limits;
mod models;
mod rules;

use std::collections::BTreeSet;

use serde::Serialize;

use super::model::Policy;

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
    models::models(c, old, new);
    models::patterns(c, old, new);
    limits::budgets(c, old, new);
    rules::approvals(c, &old.approvals, &new.approvals);
    rules::settings(c, old, new);
    rules::audit(c, old, new);
    PolicyDiff {
        old: Side::of(old),
        new: Side::of(new),
        changes: out,
    }
}

pub(super) fn push(c: &mut Vec<Change>, direction: Direction, kind: &'static str, text: String) {
    c.push(Change {
        direction,
        kind,
        text,
    });
}

pub(super) fn list(items: &BTreeSet<String>) -> String {
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

pub(super) fn number(x: f64) -> String {
    if x.fract() == 0.0 && (0.0..1e15).contains(&x) {
        thousands(x as u64)
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests;
