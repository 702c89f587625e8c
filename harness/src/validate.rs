//! Tool-argument checks the harness makes before a call reaches the layer: JSON that does not
//! parse, a tool the layer does not offer, and arguments that break the tool's own JSON Schema.
//! Each becomes a `validation_error` tool result the model can act on ([`validate_arguments`]).
//!
//! The schema check covers the keywords tool schemas use (`type`, `properties`, `required`,
//! `additionalProperties`, `enum`, `const`, `minimum`, `maximum`, `minLength`, `maxLength`, `items`,
//! `minItems`, `maxItems`, `anyOf`, `oneOf`); unknown keywords are left to the layer, which must
//! validate every argument itself (the `Gateway` contract). `oneOf` is checked as `anyOf`: the
//! harness only needs to catch what is certainly wrong.

use preflight_enforcer::{ErrorCode, ToolError, ToolSpec};
use serde_json::Value;

/// Parses and checks the raw argument string a model sent for `tool`.
// `ToolError` is the contract's error type, returned by value like `Gateway::call` does.
#[allow(clippy::result_large_err)]
pub fn validate_arguments(
    tools: &[ToolSpec],
    tool: &str,
    raw_arguments: &str,
) -> Result<Value, ToolError> {
    let Some(spec) = tools.iter().find(|t| t.name == tool) else {
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        return Err(ToolError::new(
            ErrorCode::ValidationError,
            // The name is not echoed: harness-written results are scanned for the principal's
            // ids (LLM-4), and the model's own text must not trip that check.
            "there is no tool by that name",
            format!("call one of: {}", names.join(", ")),
        )
        .with_details(serde_json::json!({"field": "tool"})));
    };
    let trimmed = raw_arguments.trim();
    // Some servers send "" for a tool without arguments; treat it as an empty object.
    let value: Value = if trimmed.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(trimmed).map_err(|e| {
            ToolError::new(
                ErrorCode::ValidationError,
                format!("the arguments are not valid JSON: {e}"),
                "send the arguments as one JSON object that matches the tool's parameter schema",
            )
            .with_details(
                serde_json::json!({"field": "arguments", "line": e.line(), "column": e.column()}),
            )
        })?
    };
    if !value.is_object() {
        return Err(ToolError::new(
            ErrorCode::ValidationError,
            format!("the arguments must be a JSON object, not {}", kind(&value)),
            "wrap the arguments in an object keyed by parameter name",
        )
        .with_details(serde_json::json!({"field": "arguments"})));
    }
    check(&spec.input_schema, &value, "").map_err(|(path, expected)| {
        let field = if path.is_empty() {
            "arguments".to_string()
        } else {
            path
        };
        ToolError::new(
            ErrorCode::ValidationError,
            format!("`{field}`: expected {expected}"),
            format!("fix `{field}` to match the tool's parameter schema and call the tool again"),
        )
        .with_details(serde_json::json!({"field": field, "expected": expected}))
    })?;
    Ok(value)
}

/// Returns the path of the first violation and what was expected there.
fn check(schema: &Value, value: &Value, path: &str) -> Result<(), (String, String)> {
    let Some(obj) = schema.as_object() else {
        // `true`/`{}`-like schemas accept anything; `false` accepts nothing.
        return if schema == &Value::Bool(false) {
            Err((path.to_string(), "nothing here (not allowed)".into()))
        } else {
            Ok(())
        };
    };
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = obj.get(key).and_then(Value::as_array) {
            if !alts.is_empty() && !alts.iter().any(|s| check(s, value, path).is_ok()) {
                // Report the first alternative's complaint; it is usually the main form.
                return check(&alts[0], value, path);
            }
        }
    }
    if let Some(t) = obj.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            return Err((
                path.to_string(),
                format!("{} but got {}", types.join(" or "), kind(value)),
            ));
        }
    }
    if let Some(options) = obj.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let shown: Vec<String> = options.iter().take(20).map(|o| o.to_string()).collect();
            return Err((path.to_string(), format!("one of {}", shown.join(", "))));
        }
    }
    if let Some(c) = obj.get("const") {
        if c != value {
            return Err((path.to_string(), format!("the value {c}")));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = obj.get("minimum").and_then(Value::as_f64) {
            if n < min {
                return Err((path.to_string(), format!("a number >= {min}")));
            }
        }
        if let Some(max) = obj.get("maximum").and_then(Value::as_f64) {
            if n > max {
                return Err((path.to_string(), format!("a number <= {max}")));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = obj.get("minLength").and_then(Value::as_u64) {
            if len < min {
                return Err((
                    path.to_string(),
                    format!("a string of at least {min} characters"),
                ));
            }
        }
        if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                return Err((
                    path.to_string(),
                    format!("a string of at most {max} characters"),
                ));
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = obj.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                return Err((path.to_string(), format!("at least {min} items")));
            }
        }
        if let Some(max) = obj.get("maxItems").and_then(Value::as_u64) {
            if (items.len() as u64) > max {
                return Err((path.to_string(), format!("at most {max} items")));
            }
        }
        if let Some(item_schema) = obj.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"))?;
            }
        }
    }
    if let Some(map) = value.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err((join(path, r), "a value (this parameter is required)".into()));
                }
            }
        }
        for (k, v) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, v, &join(path, k))?,
                None => match obj.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err((
                            join(path, k),
                            format!("no such parameter; known: {}", known.join(", ")),
                        ));
                    }
                    Some(s @ Value::Object(_)) => check(s, v, &join(path, k))?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => true,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "db_query".into(),
            description: "read".into(),
            input_schema: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["model"],
                "properties": {
                    "model": {"type": "string", "enum": ["orders", "customers"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                    "where": {"type": "array", "items": {"type": "object", "required": ["field"],
                        "properties": {"field": {"type": "string"}}}}
                }
            }),
        }]
    }

    #[test]
    fn accepts_valid() {
        let v =
            validate_arguments(&tools(), "db_query", r#"{"model":"orders","limit":5}"#).unwrap();
        assert_eq!(v["limit"], 5);
        validate_arguments(
            &tools(),
            "db_query",
            r#"{"model":"orders","where":[{"field":"id"}]}"#,
        )
        .unwrap();
    }

    #[test]
    fn each_violation_is_a_validation_error_naming_the_field() {
        let cases = [
            ("{not json", "arguments"),
            ("[1]", "arguments"),
            (r#"{"limit":5}"#, "model"),
            (r#"{"model":"users"}"#, "model"),
            (r#"{"model":"orders","limit":1000}"#, "limit"),
            (r#"{"model":"orders","limit":"5"}"#, "limit"),
            (r#"{"model":"orders","tenant_id":"globex"}"#, "tenant_id"),
            (r#"{"model":"orders","where":[{}]}"#, "where[0].field"),
        ];
        for (raw, field) in cases {
            let e = validate_arguments(&tools(), "db_query", raw).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationError, "{raw}");
            assert_eq!(e.details["field"], field, "{raw}: {e:?}");
            assert!(!e.suggestion.is_empty());
        }
    }

    #[test]
    fn unknown_tool_lists_the_real_ones() {
        let e = validate_arguments(&tools(), "sql_exec", "{}").unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        assert!(e.suggestion.contains("db_query"));
    }
}
