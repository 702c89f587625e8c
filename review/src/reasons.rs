//! QRT-4: deterministic coherence rules for write reasons.
//!
//! A reason must exist, must not be a placeholder, must be long enough to say something, must
//! not be one text pasted across many writes, and must name what it changed (the entity's model
//! or id, a written field or its new value). The rules are plain string checks, so a reviewer
//! can predict them and a test can pin them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Fewer characters than this is too short to explain a change.
pub const MIN_CHARS: usize = 15;
/// Fewer words than this is too short.
pub const MIN_WORDS: usize = 3;
/// The same text on at least this many writes, of at least two entities, is a reused reason.
pub const REUSE_MIN_WRITES: usize = 5;

/// Texts that say nothing, compared after lowercasing and trimming punctuation and spaces.
const PLACEHOLDERS: &[&str] = &[
    "",
    "n/a",
    "na",
    "none",
    "null",
    "nil",
    "todo",
    "tbd",
    "tbc",
    "test",
    "testing",
    "asdf",
    "qwerty",
    "foo",
    "bar",
    "placeholder",
    "reason",
    "no reason",
    "because",
    "update",
    "change",
    "fix",
    "misc",
    "x",
    "xx",
    "xxx",
    "xxxx",
    "lorem ipsum",
    "...",
    "-",
    "?",
];

pub const RULES: [&str; 5] = ["missing", "placeholder", "too_short", "reused", "unnamed"];

/// One write as the checks need it.
#[derive(Clone, Debug)]
pub struct Write {
    pub model: String,
    /// The entity's id (`id` argument), empty for creates and bulk updates.
    pub entity: String,
    /// Written field names and their values as text.
    pub data: Vec<(String, String)>,
    pub reason: Option<String>,
}

impl Write {
    /// Reads a write call's arguments.
    pub fn from_arguments(args: &Value, reason: Option<&str>) -> Self {
        let model = args["model"].as_str().unwrap_or("").to_string();
        let entity = match &args["id"] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let data = args["data"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            v => v.to_string(),
                        };
                        (k.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            model,
            entity,
            data,
            reason: reason.map(str::to_string),
        }
    }
}

fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn words(text: &str) -> BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Words that name the write: the model (`support_tickets` gives `support`, `tickets`,
/// `ticket`, `support_tickets`), the entity id, each written field and each written value.
fn naming_words(w: &Write) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let model = w.model.to_lowercase();
    out.insert(model.clone());
    for part in model.split('_').filter(|p| p.len() > 2) {
        out.insert(part.to_string());
        if let Some(s) = part.strip_suffix('s') {
            out.insert(s.to_string());
        }
    }
    if !w.entity.is_empty() {
        out.insert(w.entity.to_lowercase());
    }
    for (k, v) in &w.data {
        out.insert(k.to_lowercase());
        out.extend(words(v).into_iter().filter(|x| x.len() > 2));
    }
    out
}

/// The rules `w`'s reason fails on its own (every rule but `reused`, which needs the others).
pub fn own_rules(w: &Write) -> Vec<&'static str> {
    let Some(reason) = w.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) else {
        return vec!["missing"];
    };
    let bare = normalized(reason);
    let bare = bare.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace());
    if PLACEHOLDERS.contains(&bare) || bare.chars().all(|c| !c.is_alphanumeric()) {
        return vec!["placeholder"];
    }
    let mut out = Vec::new();
    if reason.chars().count() < MIN_CHARS || reason.split_whitespace().count() < MIN_WORDS {
        out.push("too_short");
    }
    if words(reason).is_disjoint(&naming_words(w)) {
        out.push("unnamed");
    }
    out
}

/// Every rule each write fails, in input order (`reused` included).
pub fn check_all(writes: &[Write]) -> Vec<Vec<&'static str>> {
    let mut uses: BTreeMap<String, (usize, BTreeSet<(String, String)>)> = BTreeMap::new();
    for w in writes {
        if let Some(r) = w.reason.as_deref().filter(|r| !r.trim().is_empty()) {
            let e = uses.entry(normalized(r)).or_default();
            e.0 += 1;
            e.1.insert((w.model.clone(), w.entity.clone()));
        }
    }
    writes
        .iter()
        .map(|w| {
            let mut rules = own_rules(w);
            let reused = w.reason.as_deref().is_some_and(|r| {
                uses.get(&normalized(r))
                    .is_some_and(|(n, ents)| *n >= REUSE_MIN_WRITES && ents.len() >= 2)
            });
            // A placeholder repeated is still just a placeholder.
            if reused && !rules.contains(&"placeholder") {
                rules.push("reused");
            }
            rules
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(reason: Option<&str>) -> Write {
        Write::from_arguments(
            &json!({"model": "support_tickets", "id": 17, "data": {"status": "closed"}}),
            reason,
        )
    }

    #[test]
    fn each_rule_fires_on_its_own_case_and_not_on_a_good_reason() {
        assert_eq!(own_rules(&w(None)), vec!["missing"]);
        assert_eq!(own_rules(&w(Some("  "))), vec!["missing"]);
        assert_eq!(own_rules(&w(Some("N/A."))), vec!["placeholder"]);
        assert_eq!(own_rules(&w(Some("TODO"))), vec!["placeholder"]);
        assert_eq!(
            own_rules(&w(Some("per chat"))),
            vec!["too_short", "unnamed"]
        );
        assert_eq!(own_rules(&w(Some("ticket 17 ok"))), vec!["too_short"]);
        assert_eq!(
            own_rules(&w(Some("The customer asked us to sort this out quickly"))),
            vec!["unnamed"]
        );
        assert!(own_rules(&w(Some(
            "Closing ticket 17: the customer confirmed the replacement arrived"
        )))
        .is_empty());
        assert!(own_rules(&w(Some("Customer confirmed, marking it closed now"))).is_empty());
    }

    #[test]
    fn reuse_needs_five_writes_of_two_entities() {
        let text = "Updating the ticket status as agreed in the weekly sync";
        let mut writes: Vec<Write> = (0..5).map(|_| w(Some(text))).collect();
        // Five writes of one entity: the same explanation may fit each.
        assert!(check_all(&writes).iter().all(Vec::is_empty));
        writes[4].entity = "18".into();
        assert!(check_all(&writes).iter().all(|r| r == &vec!["reused"]));
        writes.pop();
        assert!(check_all(&writes).iter().all(Vec::is_empty));
    }
}
