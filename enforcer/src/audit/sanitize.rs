//! What an audit record keeps of a call's arguments: a sanitized copy and a hash of the raw input.
//!
//! [`sanitize_arguments`] is a deliberately blunt PLACEHOLDER written with the built-in gateway:
//! every string is replaced, so no value can leak into the audit log while the real sanitizer
//! (by field policy and by canary/secret value patterns, AUD-7) is being written. The `writes`
//! helper replaces its body; [`canonical_json`] and [`arguments_sha256`] are the stable parts and
//! stay as they are (probes recompute the hash to check AUD-7).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::policy::Policy;

/// The arguments as the audit record stores them.
///
/// PLACEHOLDER (the `writes` helper replaces this body): keeps the structure (object keys, array
/// lengths, numbers, booleans, nulls) and replaces every string value with `"[redacted]"`. Object
/// keys are kept, except that control characters in them are escaped so the record always fits
/// a `jsonb` column (which cannot hold U+0000).
pub fn sanitize_arguments(_policy: &Policy, _tool: &str, arguments: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::String(_) => Value::String("[redacted]".to_string()),
            Value::Array(items) => Value::Array(items.iter().map(walk).collect()),
            Value::Object(map) => {
                let mut out = Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(escape_controls(k), walk(v));
                }
                Value::Object(out)
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => v.clone(),
        }
    }
    walk(arguments)
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The canonical JSON text of a value: object keys sorted by their UTF-8 bytes at every level,
/// no whitespace, numbers and strings as serde_json writes them. Two argument objects that differ
/// only in key order have the same canonical form.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::with_capacity(map.len());
                for k in keys {
                    out.insert(k.clone(), sorted(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => v.clone(),
        }
    }
    // Serializing a `Value` cannot fail (its keys are strings); an empty string would only show
    // up as a hash mismatch, never as a panic.
    serde_json::to_string(&sorted(value)).unwrap_or_default()
}

/// SHA-256 (lowercase hex) of the raw arguments' [`canonical_json`], kept beside the sanitized
/// copy so a forged or edited record can be detected (AUD-7).
pub fn arguments_sha256(arguments: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(arguments).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_key_order() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 1, "c": 2}], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, {"c": 2, "d": 1}]}, "b": 1});
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":2,"d":1}]},"b":1}"#
        );
        assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
        assert_ne!(arguments_sha256(&a), arguments_sha256(&json!({"b": 2})));
    }

    #[test]
    fn placeholder_replaces_every_string_and_keeps_shape() {
        let p: Policy = serde_json::from_value(json!({
            "name": "t", "extends": "prod", "path": "t.yaml", "tenant_setting": "app.tenant_id",
            "models": {}, "approvals": [], "writes": {"dry_run_required_above": 10},
            "quotas": {"calls_per_hour": null, "rows_per_hour": null},
            "budget_store": {"kind": "memory"},
            "audit": {"sinks": [], "retention": null, "span": {"line": 1, "column": 1}},
            "spans": {}, "hash": "h"
        }))
        .unwrap();
        let out = sanitize_arguments(
            &p,
            "db_query",
            &json!({"model": "customers", "where": [{"field": "email", "value": "a@b.c"}], "limit": 5, "k\u{0}": true}),
        );
        assert_eq!(
            out,
            json!({"model": "[redacted]", "where": [{"field": "[redacted]", "value": "[redacted]"}], "limit": 5, "k\\u{0}": true})
        );
    }
}
