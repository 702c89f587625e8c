//! The stable policy hash: SHA-256 over a canonical form of the validated [`Policy`].
//!
//! The hash identifies what a policy *means*, not how its file is written, so it appears in every
//! audit row, report and health response and two people can compare it.
//!
//! # What is hashed
//!
//! The canonical form is the validated policy — the preset already merged in, defaults applied,
//! patterns sorted — rendered as JSON with:
//! - every object's keys sorted by byte order, no whitespace (`serde_json` compact form; numbers as
//!   `serde_json` prints them: integers as integers, thresholds as floats such as `1000.0`);
//! - removed: `path` (where the file lies), `spans` and every `span` (line numbers), `hash` itself,
//!   and `models.*.columns` (the per-column resolution, which needs the live catalog — the rules it
//!   is computed from, `field_rules`, are hashed instead);
//! - order-free lists put in a fixed order: approval rules by name, audit sinks by their JSON text.
//!
//! So comments, key order, quoting style, flow vs. block style, blank lines, where a rule sits in
//! the file, and whether a catalog was available do not change the hash; any change in meaning
//! (an action, a budget, a tool, a preset default, a reason text) does. Upgrading preflight can
//! change the hash when the policy model gains a field; compare hashes made by one version.
//!
//! The digest is lowercase hex, 64 characters.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::model::Policy;

/// The canonical JSON text of a policy (see the module docs).
pub fn canonical_json(policy: &Policy) -> String {
    let mut v = serde_json::to_value(policy).unwrap_or(Value::Null);
    if let Value::Object(top) = &mut v {
        top.remove("path");
        top.remove("spans");
        top.remove("hash");
        if let Some(Value::Object(models)) = top.get_mut("models") {
            for model in models.values_mut() {
                if let Value::Object(m) = model {
                    m.remove("columns");
                }
            }
        }
        if let Some(Value::Array(rules)) = top.get_mut("approvals") {
            rules.sort_by(|a, b| {
                let name = |v: &Value| {
                    v.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                name(a).cmp(&name(b))
            });
        }
        if let Some(Value::Array(sinks)) = top.get_mut("audit").and_then(|a| a.get_mut("sinks")) {
            sinks.sort_by_key(|s| s.to_string());
        }
    }
    let v = canonicalize(v);
    v.to_string()
}

/// Recursively drops `span` keys and sorts object keys.
fn canonicalize(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map
                .into_iter()
                .filter(|(k, _)| k != "span")
                .map(|(k, v)| (k, canonicalize(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (k, v) in entries {
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonicalize).collect()),
        other => other,
    }
}

/// SHA-256 of [`canonical_json`], lowercase hex.
pub fn policy_hash(policy: &Policy) -> String {
    hex::encode(Sha256::digest(canonical_json(policy).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_and_drops_spans() {
        let v = serde_json::json!({"b": 1, "a": {"span": {"line": 1}, "z": [{"y": 1, "x": 2}]}});
        assert_eq!(
            canonicalize(v).to_string(),
            r#"{"a":{"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }
}
