//! The profile applied to one call: a contract call becomes the layer's tool name and argument
//! shape ([`outgoing`]), and the layer's reply becomes the contract's result or structured denial
//! ([`incoming`]). Nothing here knows any particular layer; everything comes from the profile.
//!
//! What cannot be understood is never guessed: a denial whose code the profile does not map, or a
//! reply with neither JSON nor a matching pattern, becomes `internal` with the raw reply in
//! `details`, which probes treat as inconclusive — never as a pass or a refusal.

// `ToolError` is the contract's denial, returned as it is on every path, like the built-in layer.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use preflight_contract::{ErrorCode, ToolError};
use serde_json::{json, Map, Value};

use crate::link::RawReply;
use crate::profile::{Case, Denials, ToolMap, WhereShape};
use crate::template;

/// Longest raw-reply excerpt kept in a denial's details.
const RAW_EXCERPT: usize = 600;

/// The layer's tool name and arguments for a contract call, or why the call cannot be made.
pub(crate) fn outgoing(
    contract_tool: &str,
    map: &ToolMap,
    arguments: &Value,
) -> Result<(String, Map<String, Value>), ToolError> {
    let Value::Object(args) = arguments else {
        return Err(ToolError::new(
            ErrorCode::ValidationError,
            format!("`{contract_tool}` takes an object of arguments"),
            "pass the arguments as a JSON object",
        ));
    };
    let mut args = args.clone();
    let mut vars = BTreeMap::new();
    if template::placeholders(&map.name)
        .iter()
        .any(|p| p == "model")
    {
        match args.remove("model") {
            Some(Value::String(m)) => {
                vars.insert("model", to_case(&m, map.case));
            }
            Some(_) | None => {
                return Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!("`{contract_tool}` needs `model` as a string"),
                    "name the model to read",
                ))
            }
        }
    }
    let name = template::expand(&map.name, &vars);
    if let Some(w) = args.remove("where") {
        args.insert("where".into(), reshape_where(w, map));
    }
    if map.case == Case::Camel {
        for key in ["data"] {
            if let Some(Value::Object(d)) = args.remove(key) {
                let renamed = d
                    .into_iter()
                    .map(|(k, v)| (to_case(&k, Case::Camel), v))
                    .collect();
                args.insert(key.into(), Value::Object(renamed));
            }
        }
        if let Some(Value::Array(items)) = args.get_mut("select") {
            camel_strings(items);
        }
        if let Some(Value::Array(items)) = args.get_mut("include") {
            camel_strings(items);
        }
        if let Some(Value::Array(items)) = args.get_mut("order_by") {
            for item in items {
                if let Some(Value::String(f)) = item.get_mut("field") {
                    *f = to_case(f, Case::Camel);
                }
            }
        }
    }
    let renamed = args
        .into_iter()
        .map(|(k, v)| match map.args.get(&k) {
            Some(to) => (to.clone(), v),
            None => (k, v),
        })
        .collect();
    Ok((name, renamed))
}

fn camel_strings(items: &mut [Value]) {
    for item in items {
        if let Value::String(s) = item {
            *s = s
                .split('.')
                .map(|p| to_case(p, Case::Camel))
                .collect::<Vec<_>>()
                .join(".");
        }
    }
}

/// `[{field, op, value}]` in the layer's shape. A filter that is not the contract's list is
/// passed on untouched: the layer must judge malformed input itself.
fn reshape_where(w: Value, map: &ToolMap) -> Value {
    let Value::Array(items) = w else { return w };
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut c| {
            if let Some(Value::String(f)) = c.get_mut("field") {
                *f = to_case(f, map.case);
            }
            c
        })
        .collect();
    match map.where_shape {
        WhereShape::List => Value::Array(items),
        WhereShape::Object => {
            let mut out = Map::new();
            for c in &items {
                let (Some(Value::String(field)), Some(Value::String(op))) =
                    (c.get("field"), c.get("op"))
                else {
                    // Not a condition the object shape can carry: keep the list so the layer
                    // sees (and refuses) exactly what was sent.
                    return Value::Array(items);
                };
                let entry = out
                    .entry(field.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(ops) = entry {
                    ops.insert(op.clone(), c.get("value").cloned().unwrap_or(Value::Null));
                }
            }
            Value::Object(out)
        }
    }
}

/// `created_at` → `createdAt` (camel) or the reverse (snake).
pub(crate) fn to_case(name: &str, case: Case) -> String {
    match case {
        Case::Snake => {
            let mut out = String::with_capacity(name.len() + 4);
            for ch in name.chars() {
                if ch.is_ascii_uppercase() {
                    out.push('_');
                    out.push(ch.to_ascii_lowercase());
                } else {
                    out.push(ch);
                }
            }
            out
        }
        Case::Camel => {
            let mut out = String::with_capacity(name.len());
            let mut upper = false;
            for ch in name.chars() {
                if ch == '_' && !out.is_empty() {
                    upper = true;
                } else if upper {
                    out.push(ch.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(ch);
                }
            }
            out
        }
    }
}

/// Every object key of `v`, at any depth, back to snake_case.
fn keys_to_snake(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (to_case(&k, Case::Snake), keys_to_snake(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(keys_to_snake).collect()),
        other => other,
    }
}

/// The value at a dotted path (`error.code`, `data.rows`).
pub(crate) fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |cur, key| cur.get(key))
}

fn excerpt(text: &str) -> String {
    crate::stderr::redact(&text.chars().take(RAW_EXCERPT).collect::<String>())
}

/// The contract's result or denial for the layer's reply to a call of `contract_tool`.
pub(crate) fn incoming(
    contract_tool: &str,
    map: &ToolMap,
    denials: &Denials,
    reply: RawReply,
) -> Result<Value, ToolError> {
    let flagged = match (&denials.flag, &reply.value) {
        (Some((path, equals)), Some(v)) => at_path(v, path) == Some(equals),
        (Some(_), None) | (None, _) => false,
    };
    if (reply.is_error && denials.is_error) || flagged {
        return Err(denial(contract_tool, denials, &reply));
    }
    if reply.is_error {
        // The profile says the layer does not signal denials with isError, yet it did: unknown.
        return Err(unrecognised(
            contract_tool,
            "the layer flagged an error the profile does not describe",
            &reply,
        ));
    }
    let Some(value) = reply.value.clone() else {
        if let Some(code) = pattern_code(denials, &reply.text) {
            return Err(ToolError::new(code, excerpt(&reply.text), "")
                .with_details(json!({"original_text": excerpt(&reply.text)})));
        }
        return Err(unrecognised(
            contract_tool,
            "the reply carries no JSON result",
            &reply,
        ));
    };
    let value = if map.case == Case::Camel {
        keys_to_snake(value)
    } else {
        value
    };
    if let Some(path) = &map.rows {
        return match at_path(&value, &snake_path(path, map.case)) {
            Some(Value::Array(rows)) => {
                let mut out = json!({"rows": rows});
                if let Some(c) = value.get("next_cursor") {
                    out["next_cursor"] = c.clone();
                }
                Ok(out)
            }
            Some(_) | None => Err(unrecognised(
                contract_tool,
                &format!("the result has no list of rows at `{path}`"),
                &reply,
            )),
        };
    }
    if let Some(path) = &map.row {
        return match at_path(&value, &snake_path(path, map.case)) {
            Some(row @ Value::Object(_)) => Ok(json!({"row": row})),
            Some(_) | None => Err(unrecognised(
                contract_tool,
                &format!("the result has no row at `{path}`"),
                &reply,
            )),
        };
    }
    Ok(value)
}

fn snake_path(path: &str, case: Case) -> String {
    if case == Case::Camel {
        path.split('.')
            .map(|p| to_case(p, Case::Snake))
            .collect::<Vec<_>>()
            .join(".")
    } else {
        path.to_string()
    }
}

fn pattern_code(denials: &Denials, text: &str) -> Option<ErrorCode> {
    denials
        .patterns
        .iter()
        .find(|(re, _)| re.is_match(text))
        .map(|(_, c)| *c)
}

/// A denial in the contract's shape, the layer's own code kept in `details.original_code`.
fn denial(contract_tool: &str, denials: &Denials, reply: &RawReply) -> ToolError {
    let value = reply.value.as_ref();
    let original = value
        .and_then(|v| at_path(v, &denials.code_path))
        .map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    let message = value
        .and_then(|v| at_path(v, &denials.message_path))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| reply.text.clone());
    let suggestion = value
        .and_then(|v| v.get("suggestion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let code = original
        .as_deref()
        .and_then(|o| {
            denials
                .codes
                .get(o)
                .copied()
                .or_else(|| ErrorCode::parse(o))
        })
        .or_else(|| pattern_code(denials, &message))
        .or_else(|| pattern_code(denials, &reply.text));
    match code {
        Some(code) => ToolError {
            code,
            message: excerpt(&message),
            suggestion,
            details: json!({
                "original_code": original,
                "layer_details": value.and_then(|v| v.get("details")).cloned().unwrap_or(Value::Null),
            }),
        },
        None => unrecognised(
            contract_tool,
            &match &original {
                Some(o) => format!("the layer's code `{o}` is not mapped in the profile"),
                None => "the denial carries no code the profile can read".to_string(),
            },
            reply,
        ),
    }
}

/// `internal`, with the raw reply as evidence: probes treat it as inconclusive.
fn unrecognised(contract_tool: &str, why: &str, reply: &RawReply) -> ToolError {
    ToolError::new(
        ErrorCode::Internal,
        format!("preflight could not interpret the target's reply to `{contract_tool}`: {why}"),
        "",
    )
    .with_details(json!({
        "unrecognised_reply": true,
        "raw": excerpt(&reply.text),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Denials;

    fn camel_query() -> ToolMap {
        ToolMap {
            name: "{model}_search".into(),
            args: BTreeMap::from([("limit".to_string(), "take".to_string())]),
            where_shape: WhereShape::Object,
            case: Case::Camel,
            rows: Some("items".into()),
            row: None,
        }
    }

    #[test]
    fn contract_calls_take_the_layer_shape() {
        let args = json!({"model": "support_tickets", "limit": 5,
            "where": [{"field": "created_at", "op": "gte", "value": "2024"},
                      {"field": "created_at", "op": "lt", "value": "2025"}],
            "select": ["customer_id"], "include": ["customer.orders"]});
        let (name, out) = outgoing("db_query", &camel_query(), &args).unwrap();
        assert_eq!(name, "supportTickets_search");
        assert_eq!(out["take"], 5);
        assert!(out.get("limit").is_none() && out.get("model").is_none());
        assert_eq!(
            out["where"],
            json!({"createdAt": {"gte": "2024", "lt": "2025"}})
        );
        assert_eq!(out["select"], json!(["customerId"]));
        let e = outgoing("db_query", &camel_query(), &json!({"limit": 1})).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
    }

    #[test]
    fn replies_become_rows_or_denials() {
        let denials = Denials {
            flag: Some(("success".into(), json!(false))),
            code_path: "error.code".into(),
            message_path: "error.message".into(),
            codes: BTreeMap::from([("FORBIDDEN_FIELD".to_string(), ErrorCode::FieldDenied)]),
            ..Denials::default()
        };
        let ok = RawReply {
            is_error: false,
            value: Some(json!({"success": true, "items": [{"customerId": 3}]})),
            text: String::new(),
        };
        let v = incoming("db_query", &camel_query(), &denials, ok).unwrap();
        assert_eq!(v, json!({"rows": [{"customer_id": 3}]}));
        let denied = RawReply {
            is_error: false,
            value: Some(
                json!({"success": false, "error": {"code": "FORBIDDEN_FIELD", "message": "no"}}),
            ),
            text: String::new(),
        };
        let e = incoming("db_query", &camel_query(), &denials, denied).unwrap_err();
        assert_eq!(e.code, ErrorCode::FieldDenied);
        assert_eq!(e.details["original_code"], "FORBIDDEN_FIELD");
        let unknown = RawReply {
            is_error: false,
            value: Some(json!({"success": false, "error": {"code": "WHO_KNOWS"}})),
            text: "{\"success\": false}".into(),
        };
        let e = incoming("db_query", &camel_query(), &denials, unknown).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::Internal,
            "an unmapped code is never a denial"
        );
        assert_eq!(e.details["unrecognised_reply"], true);
        let prose = RawReply {
            is_error: false,
            value: None,
            text: "Traceback (most recent call last)".into(),
        };
        let e = incoming("db_query", &camel_query(), &denials, prose).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        let no_rows = RawReply {
            is_error: false,
            value: Some(json!({"success": true, "things": []})),
            text: String::new(),
        };
        let e = incoming("db_query", &camel_query(), &denials, no_rows).unwrap_err();
        assert_eq!(
            e.code,
            ErrorCode::Internal,
            "rows elsewhere are not an empty result"
        );
    }

    #[test]
    fn case_conversion_round_trips() {
        assert_eq!(to_case("created_at", Case::Camel), "createdAt");
        assert_eq!(to_case("createdAt", Case::Snake), "created_at");
        assert_eq!(to_case("id", Case::Camel), "id");
    }
}
