//! Judgements shared by several families: what counts as a refusal, when a response means the
//! probe could not test anything, whether a returned row is redacted as its policy says, and
//! whether an error leaks database internals.

use preflight_enforcer::policy::{FieldAction, ModelPolicy};
use preflight_enforcer::ErrorCode;
use serde_json::{Map, Value};

use crate::runner::{CallOutcome, ProbeOutcome};

/// A tool's argument schema: its `properties` and its `required` names, in schema order. A
/// schema without them (or with the wrong shape) has none.
pub fn schema_arguments(tool: &preflight_enforcer::ToolSpec) -> (Map<String, Value>, Vec<String>) {
    let props = tool
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required = tool
        .input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    (props, required)
}

/// `Err(outcome)` when the call ended in `internal`: the layer failed, so nothing about the
/// claim was shown either way. A layer that says a tool is not available yet gives
/// `not_verified`; any other internal failure is an `error`.
pub fn internal_is_inconclusive(call: &CallOutcome) -> Result<(), ProbeOutcome> {
    match &call.result {
        Err(e) if e.code == ErrorCode::Internal => {
            let msg = e.message.to_lowercase();
            if msg.contains("not available")
                || msg.contains("unknown tool")
                || msg.contains("not implemented")
            {
                Err(ProbeOutcome::not_verified(format!(
                    "`{}` is not available in this layer ({}); the claim could not be tested",
                    call.tool, e.message
                )))
            } else {
                Err(ProbeOutcome::error(format!(
                    "`{}` failed inside the layer (internal: {}); the claim could not be tested",
                    call.tool, e.message
                )))
            }
        }
        Ok(_) | Err(_) => Ok(()),
    }
}

/// `Err(error)` unless a control call (one that must succeed for the probe to mean anything)
/// succeeded.
pub fn require_ok(call: &CallOutcome, what: &str) -> Result<(), ProbeOutcome> {
    internal_is_inconclusive(call)?;
    match &call.result {
        Ok(_) => Ok(()),
        Err(e) => Err(ProbeOutcome::error(format!(
            "{what} was refused ({}: {}), so a refusal of the probing call would prove nothing",
            e.code, e.message
        ))),
    }
}

/// The text form of a JSON scalar for comparisons with ground truth.
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        Value::Array(_) | Value::Object(_) => Some(v.to_string()),
    }
}

/// Whether `shown` reveals `raw`: equal, or containing it (case-insensitively) once `raw` is
/// long enough to mean something.
pub fn reveals(shown: &str, raw: &str) -> bool {
    if shown == raw {
        return true;
    }
    raw.chars().count() >= 4 && shown.to_lowercase().contains(&raw.to_lowercase())
}

/// Where a returned row breaks its model's field policy, compared with the stored row:
/// denied fields present, masked or hashed fields revealing the stored value.
pub fn redaction_violations(
    model: &ModelPolicy,
    returned: &Map<String, Value>,
    stored: Option<&Value>,
    path: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for col in &model.columns {
        let Some(v) = returned.get(&col.name) else {
            continue;
        };
        match col.action {
            FieldAction::Deny => out.push(format!(
                "{path}.{}: denied field `{}` of {} is present",
                col.name, col.name, model.name
            )),
            FieldAction::Mask | FieldAction::Hash => {
                let raw = stored.and_then(|r| r.get(&col.name)).and_then(text_of);
                let shown = text_of(v);
                if let (Some(raw), Some(shown)) = (raw, shown) {
                    if reveals(&shown, &raw) {
                        out.push(format!(
                            "{path}.{}: {} field `{}` of {} carries its stored value",
                            col.name,
                            if col.action == FieldAction::Mask {
                                "masked"
                            } else {
                                "hashed"
                            },
                            col.name,
                            model.name
                        ));
                    }
                }
            }
            FieldAction::Allow => {}
        }
    }
    out
}

/// Phrases that only a database (or a crash) writes; an agent-facing error carrying one passes
/// database internals through.
const INTERNAL_MARKERS: [&str; 16] = [
    "failing row contains",
    "violates not-null constraint",
    "violates check constraint",
    "violates foreign key constraint",
    "violates unique constraint",
    "duplicate key value",
    "invalid input syntax for type",
    "syntax error at or near",
    "detail:",
    "hint:",
    "sqlstate",
    "error returned from database",
    "pg_catalog.",
    "panicked at",
    "stack backtrace",
    "out of range for type",
];

/// The database-internal phrases in an error's message, suggestion and details.
pub fn internal_markers(error: &preflight_enforcer::ToolError) -> Vec<&'static str> {
    let text = format!("{} {} {}", error.message, error.suggestion, error.details).to_lowercase();
    INTERNAL_MARKERS
        .iter()
        .copied()
        .filter(|m| text.contains(m))
        .collect()
}

/// A rendering of a key that cannot exist: far above the highest numeric key, or an obviously
/// foreign text.
pub fn absent_key(max_key: Option<&str>, numeric: bool) -> Value {
    if numeric {
        let top: i64 = max_key.and_then(|s| s.parse().ok()).unwrap_or(0);
        Value::from(top.saturating_add(1_000_000_007))
    } else {
        Value::String("preflight-no-such-key".to_string())
    }
}

/// Whether a model's primary key is an integer column.
pub fn numeric_key(model: &ModelPolicy) -> bool {
    model
        .column(&model.primary_key)
        .map(|c| matches!(c.pg_type.as_str(), "bigint" | "integer" | "smallint"))
        .unwrap_or(false)
}

/// An error with every occurrence of `key` replaced, for comparing "not yours" with "absent".
pub fn normalised_error(call: &CallOutcome, key: &Value) -> Option<String> {
    let e = call.result.as_ref().err()?;
    let k = text_of(key).unwrap_or_default();
    let norm = |s: &str| {
        if k.is_empty() {
            s.to_string()
        } else {
            s.replace(&k, "<key>")
        }
    };
    Some(format!(
        "{}|{}|{}|{}",
        e.code,
        norm(&e.message),
        norm(&e.suggestion),
        norm(&e.details.to_string())
    ))
}

/// Checks a refusal's shape for BUD-7: a message, and a suggestion an agent can act on.
pub fn structured(error: &preflight_enforcer::ToolError) -> Result<(), String> {
    if error.message.trim().is_empty() {
        return Err(format!("the {} error has an empty message", error.code));
    }
    if error.suggestion.trim().is_empty() {
        return Err(format!(
            "the {} error has no suggestion telling the agent how to recover",
            error.code
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reveals_needs_equality_or_containment() {
        assert!(reveals("911-56-7219", "911-56-7219"));
        assert!(reveals("x OLGA PETROV y", "Olga Petrov"));
        assert!(!reveals("***-**-7219", "911-56-7219"));
        assert!(!reveals("ab", "a"));
    }

    #[test]
    fn markers_are_found_case_insensitively() {
        let e = preflight_enforcer::ToolError::new(
            ErrorCode::ValidationError,
            "error returned from database: null value in column \"name\" violates not-null constraint",
            "",
        );
        let m = internal_markers(&e);
        assert!(m.contains(&"violates not-null constraint"));
        assert!(m.contains(&"error returned from database"));
        let ok =
            preflight_enforcer::ToolError::new(ErrorCode::NotFound, "no such row", "check the id");
        assert!(internal_markers(&ok).is_empty());
    }

    #[test]
    fn absent_keys_are_far_away() {
        assert_eq!(
            absent_key(Some("60090"), true),
            Value::from(1_000_060_097i64)
        );
        assert_eq!(
            absent_key(None, false),
            Value::from("preflight-no-such-key")
        );
    }
}
