//! Validates tool arguments against the tool's own JSON Schema (the subset `tools.rs` emits:
//! `type`, `properties`, `required`, `additionalProperties`, `items`, `min/maxItems`,
//! `min/maxProperties`, `enum`, `minimum`, `maximum`, `min/maxLength`, `pattern`, `anyOf`).
//!
//! Every violation is collected with the path of the offending value (`where[0].op`) and what was
//! expected, so an agent can fix all of them in one retry.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde_json::Value;

use super::text::quote_for_message;

/// What kind of rule a value broke; the pipeline turns some kinds into other codes (a `limit`
/// over its maximum is `row_budget_exceeded`, an unknown `model` is `model_not_allowed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Type,
    Required,
    UnknownKey,
    Enum,
    Minimum,
    Maximum,
    Size,
    Length,
    Pattern,
    AnyOf,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Violation {
    /// `where[0].op`; the arguments object itself is `arguments`.
    pub path: String,
    pub kind: Kind,
    pub message: String,
}

impl Violation {
    pub(crate) fn render(&self) -> String {
        format!("`{}`: {}", self.path, self.message)
    }
}

/// Every violation of `schema` by `value`, in document order.
pub(crate) fn validate(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, "arguments", &mut out);
    out
}

fn child(path: &str, key: &str) -> String {
    if path == "arguments" {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if is_integer(n) => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn matches_type(t: &str, v: &Value) -> bool {
    match (t, v) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

fn type_words(t: &str) -> &'static str {
    match t {
        "null" => "null",
        "boolean" => "a boolean",
        "number" => "a number",
        "integer" => "an integer",
        "string" => "a string",
        "array" => "an array",
        "object" => "an object",
        _ => "a value",
    }
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn describe_schema(schema: &Value) -> String {
    let types = types_of(schema);
    if types.is_empty() {
        "a value".to_string()
    } else {
        let words: Vec<String> = types.iter().map(|t| type_words(t).to_string()).collect();
        super::text::or_list(&words)
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) {
    if let Some(Value::Array(alternatives)) = schema.get("anyOf") {
        check_any_of(alternatives, value, path, out);
        // `anyOf` siblings (description) carry no constraints in our schemas.
        return;
    }
    let types = types_of(schema);
    if !types.is_empty() && !types.iter().any(|t| matches_type(t, value)) {
        out.push(Violation {
            path: path.to_string(),
            kind: Kind::Type,
            message: format!(
                "expected {}, got {}",
                describe_schema(schema),
                kind_of(value)
            ),
        });
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            let names: Vec<String> = allowed
                .iter()
                .map(|a| {
                    a.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| a.to_string())
                })
                .collect();
            let got = match value {
                Value::String(s) => quote_for_message(s),
                other => other.to_string(),
            };
            out.push(Violation {
                path: path.to_string(),
                kind: Kind::Enum,
                message: if names.is_empty() {
                    format!("no value is allowed here under this policy; got {got}")
                } else {
                    format!("expected one of {}; got {got}", names.join(", "))
                },
            });
            return;
        }
    }
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if f < min || f.is_nan() {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Minimum,
                        message: format!("must be at least {min}, got {n}"),
                    });
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if f > max {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Maximum,
                        message: format!("must be at most {max}, got {n}"),
                    });
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count();
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if (len as u64) < min {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Length,
                        message: format!("must be at least {min} characters long"),
                    });
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if len as u64 > max {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Length,
                        message: format!("must be at most {max} characters long, got {len}"),
                    });
                }
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                if !pattern_matches(pattern, s) {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Pattern,
                        message: format!(
                            "{} does not match the pattern {pattern}",
                            quote_for_message(s)
                        ),
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Size,
                        message: format!("needs at least {min} item(s)"),
                    });
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Size,
                        message: format!("takes at most {max} items, got {}", items.len()),
                    });
                    return;
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
                if (map.len() as u64) < min {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Size,
                        message: format!("needs at least {min} key(s)"),
                    });
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
                if map.len() as u64 > max {
                    out.push(Violation {
                        path: path.to_string(),
                        kind: Kind::Size,
                        message: format!("takes at most {max} keys, got {}", map.len()),
                    });
                    return;
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = schema.get("required") {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.push(Violation {
                            path: child(path, r),
                            kind: Kind::Required,
                            message: "is required".to_string(),
                        });
                    }
                }
            }
            for (key, v) in map {
                let key_path = child(path, &escape_key(key));
                match properties.and_then(|p| p.get(key)) {
                    Some(prop_schema) => check(prop_schema, v, &key_path, out),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            let known: Vec<&str> = properties
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            out.push(Violation {
                                path: key_path,
                                kind: Kind::UnknownKey,
                                message: if known.is_empty() {
                                    "unknown key; this tool takes no arguments".to_string()
                                } else {
                                    format!("unknown key; expected one of {}", known.join(", "))
                                },
                            });
                        }
                        Some(extra @ Value::Object(_)) => check(extra, v, &key_path, out),
                        _ => {}
                    },
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn check_any_of(alternatives: &[Value], value: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut best: Option<Vec<Violation>> = None;
    for alt in alternatives {
        let mut v = Vec::new();
        check(alt, value, path, &mut v);
        if v.is_empty() {
            return;
        }
        // Prefer the alternative whose type matched: its errors are the precise ones.
        let type_mismatch = v.len() == 1 && v[0].kind == Kind::Type && v[0].path == path;
        if !type_mismatch && best.is_none() {
            best = Some(v);
        }
    }
    match best {
        Some(v) => out.extend(v),
        None => {
            let words: Vec<String> = alternatives.iter().map(describe_schema).collect();
            out.push(Violation {
                path: path.to_string(),
                kind: Kind::AnyOf,
                message: format!(
                    "expected {}, got {}",
                    super::text::or_list(&words),
                    kind_of(value)
                ),
            });
        }
    }
}

pub(crate) fn escape_key(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.is_empty()
    {
        key.to_string()
    } else {
        quote_for_message(key)
    }
}

fn pattern_matches(pattern: &str, s: &str) -> bool {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = match CACHE.lock() {
        Ok(c) => c,
        Err(poisoned) => poisoned.into_inner(),
    };
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    // A pattern that does not compile is a bug in tools.rs; refusing the value is the safe side.
    re.as_ref().is_some_and(|re| re.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "model": {"type": "string", "enum": ["orders"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "where": super::super::tools::where_prop(),
                "include": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}
            },
            "required": ["model"],
            "additionalProperties": false
        })
    }

    #[test]
    fn collects_every_violation_with_paths() {
        let v = validate(
            &schema(),
            &json!({"limit": "ten", "bogus": 1, "where": [{"field": "x", "op": "drop"}], "include": ["A"]}),
        );
        let rendered: Vec<String> = v.iter().map(Violation::render).collect();
        assert!(
            rendered.contains(&"`model`: is required".to_string()),
            "{rendered:?}"
        );
        assert!(rendered.contains(&"`limit`: expected an integer, got a string".to_string()));
        assert!(rendered
            .iter()
            .any(|r| r.starts_with("`bogus`: unknown key")));
        assert!(rendered
            .iter()
            .any(|r| r.starts_with("`where[0].op`: expected one of eq, ne")));
        assert!(rendered.iter().any(|r| r.starts_with("`include[0]`:")));
    }

    #[test]
    fn bounds_and_kinds() {
        let v = validate(&schema(), &json!({"model": "orders", "limit": 0}));
        assert_eq!(v[0].kind, Kind::Minimum);
        let v = validate(
            &schema(),
            &json!({"model": "orders", "limit": 1000000000000u64}),
        );
        assert_eq!(v[0].kind, Kind::Maximum);
        let v = validate(&schema(), &json!({"model": "orders", "limit": 2.5}));
        assert_eq!(v[0].kind, Kind::Type);
        let v = validate(&schema(), &json!({"model": "x; drop table orders"}));
        assert_eq!(v[0].kind, Kind::Enum);
        assert!(validate(&schema(), &json!({"model": "orders", "limit": 5.0})).is_empty());
    }

    #[test]
    fn any_of_picks_the_matching_branch() {
        assert!(validate(
            &schema(),
            &json!({"model": "orders", "where": {"status": "paid"}})
        )
        .is_empty());
        let v = validate(
            &schema(),
            &json!({"model": "orders", "where": "status = 'paid'"}),
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, Kind::AnyOf);
        assert_eq!(v[0].message, "expected an array or an object, got a string");
        let v = validate(
            &schema(),
            &json!({"model": "orders", "where": {"status": {"$ne": 1}}}),
        );
        assert_eq!(v[0].path, "where.status");
    }

    #[test]
    fn odd_keys_are_escaped_in_paths() {
        let v = validate(&schema(), &json!({"model": "orders", "a\u{0}b": 1}));
        assert_eq!(v[0].path, "\"a\\u{0}b\"");
    }
}
