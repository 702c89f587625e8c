//! The malformed-input probe (`pii.malformed_input`): every tool the layer lists, under its own
//! name — contract tools and domain tools alike — is called with arguments its JSON Schema does
//! not allow or that stress what it does allow, and no response, errors included, may carry
//! what only the layer's insides know.
//!
//! From each tool's schema, one argument at a time is made wrong (the other required arguments
//! get harmless values): a value of the wrong type, an oversized value (a 1 MB string, the
//! largest integers JSON carries, a 100-deep nesting), unicode edge values in strings (NUL, an
//! escaped lone surrogate, a right-to-left override, stacked combining marks, a joined emoji),
//! each required argument left out, and an argument the schema does not name. Each response
//! is searched for a stack trace (Python, Java, Rust, Node), SQL text, a Postgres DETAIL, HINT
//! or CONTEXT line, a connection string, and any canary of the fixtures the call did not send.
//!
//! A layer that stops answering after a malformed call (its process died, its transport broke,
//! it hung) fails: any agent can take it down with one bad argument. A layer that does not
//! answer a well-formed call first is an `error`, never a pass or a fail of this claim.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::{ErrorCode, ToolSpec};
use serde_json::{json, Map, Value};

use super::PlanInput;
use crate::codes::ProbeCode;
use crate::runner::{CallOutcome, Probe, ProbeCtx, ProbeOutcome, ProbeResult};

/// Words of a tool name that say it changes data: such tools are only called on a database the
/// run may change.
const WRITE_WORDS: [&str; 12] = [
    "update", "delete", "create", "insert", "set", "write", "remove", "cancel", "refund",
    "approve", "add", "edit",
];

pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    input
        .native_tools
        .iter()
        .map(|t| {
            let tool = t.clone();
            Probe::new(
                ProbeCode::MalformedInput,
                format!("{} with malformed arguments", t.name),
                move |ctx| malformed_input(ctx, tool.clone()),
            )
        })
        .collect()
}

/// One malformed call: which argument, what was done to it, the arguments sent.
struct Case {
    what: String,
    arguments: Value,
}

/// The JSON types a schema accepts (`type` as a string or a list, or across `anyOf`).
fn types_of(schema: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match schema.get("type") {
        Some(Value::String(t)) => {
            out.insert(t.clone());
        }
        Some(Value::Array(ts)) => {
            out.extend(ts.iter().filter_map(Value::as_str).map(str::to_string));
        }
        _ => {}
    }
    if let Some(Value::Array(alts)) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
        for alt in alts {
            out.extend(types_of(alt));
        }
    }
    out
}

/// A harmless value the schema accepts, for the arguments a case leaves alone: the first of an
/// enum, a key that cannot exist, an empty container.
fn filler(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let types = types_of(schema);
    let has = |t: &str| types.contains(t);
    if has("string") || types.is_empty() {
        json!("preflight-malformed-probe")
    } else if has("integer") || has("number") {
        // Far above any key the fixtures hold, so a write tool given it changes nothing.
        json!(987_654_321_987_i64)
    } else if has("boolean") {
        json!(false)
    } else if has("array") {
        json!([])
    } else if has("object") {
        json!({})
    } else {
        Value::Null
    }
}

/// A value of a type the schema does not accept, when there is one.
fn wrong_type(schema: &Value) -> Option<(&'static str, Value)> {
    let types = types_of(schema);
    if types.is_empty() {
        return None;
    }
    let accepts = |t: &str| types.contains(t) || (t == "integer" && types.contains("number"));
    [
        ("integer", json!(12345)),
        ("string", json!("preflight-wrong-type")),
        ("boolean", json!(true)),
        ("array", json!([1, "two", null])),
        ("object", json!({"preflight": {"wrong": "type"}})),
    ]
    .into_iter()
    .find(|(t, _)| !accepts(t))
}

/// `depth` arrays nested in each other around one string.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("deep"), |inner, _| json!([inner]))
}

/// Strings a careless layer mishandles: the database refuses NUL, a JSON decoder may choke on
/// a lone surrogate (sent escaped, as text), and the rest test rendering and normalisation.
const UNICODE: [(&str, &str); 5] = [
    ("a NUL character", "preflight\u{0}malformed"),
    ("an escaped lone surrogate", "preflight\\ud800malformed"),
    ("a right-to-left override", "preflight\u{202e}demrolam"),
    (
        "stacked combining marks",
        "pre\u{301}\u{302}\u{303}\u{304}\u{305}\u{306}\u{307}\u{308}flight",
    ),
    (
        "an emoji sequence",
        "preflight \u{1f469}\u{200d}\u{1f469}\u{200d}\u{1f467}\u{200d}\u{1f466}\u{fe0f}",
    ),
];

/// The well-formed arguments (each required one with a harmless value) and every malformed call
/// for a tool, from its schema.
fn cases(tool: &ToolSpec) -> (Map<String, Value>, Vec<Case>) {
    let (props, required) = super::common::schema_arguments(tool);
    let base: Map<String, Value> = required
        .iter()
        .map(|name| {
            let schema = props.get(name).cloned().unwrap_or(Value::Null);
            (name.clone(), filler(&schema))
        })
        .collect();
    let with = |name: &str, value: Value| {
        let mut args = base.clone();
        args.insert(name.to_string(), value);
        Value::Object(args)
    };
    let mut out = Vec::new();
    for (name, schema) in &props {
        let types = types_of(schema);
        if let Some((t, v)) = wrong_type(schema) {
            out.push(Case {
                what: format!("`{name}` given a value of type {t}"),
                arguments: with(name, v),
            });
        }
        let stringy = types.is_empty() || types.contains("string");
        if stringy {
            out.push(Case {
                what: format!("`{name}` given a 1 MB string"),
                arguments: with(name, json!("x".repeat(1 << 20))),
            });
            for (label, text) in UNICODE {
                out.push(Case {
                    what: format!("`{name}` given a string with {label}"),
                    arguments: with(name, json!(text)),
                });
            }
        }
        if types.is_empty() || types.contains("integer") || types.contains("number") {
            out.push(Case {
                what: format!("`{name}` given the largest unsigned 64-bit integer"),
                arguments: with(name, json!(u64::MAX)),
            });
            out.push(Case {
                what: format!("`{name}` given the smallest signed 64-bit integer"),
                arguments: with(name, json!(i64::MIN)),
            });
            out.push(Case {
                what: format!("`{name}` given 1e308"),
                arguments: with(name, json!(1e308)),
            });
        }
        out.push(Case {
            what: format!("`{name}` given arrays nested 100 deep"),
            arguments: with(name, nested(100)),
        });
    }
    for name in &required {
        let mut args = base.clone();
        args.remove(name);
        out.push(Case {
            what: format!("the required `{name}` left out"),
            arguments: Value::Object(args),
        });
    }
    out.push(Case {
        what: "an argument the schema does not name".to_string(),
        arguments: with("preflight_unexpected", json!("preflight-malformed-probe")),
    });
    (base, out)
}

/// Text that only a layer's insides write: traces of four runtimes, SQL, Postgres's extra
/// lines, connection strings. Each is a (label, pattern) pair.
fn internals() -> &'static [(&'static str, regex::Regex)] {
    use std::sync::OnceLock;
    static PATTERNS: OnceLock<Vec<(&'static str, regex::Regex)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            ("a Python traceback", r"Traceback \(most recent call last\)|File \x22[^\x22]+\x22, line \d+"),
            ("a Java stack trace", r"(?m)^\s*at [\w$.]+\([\w$]+\.java:\d+\)|Exception in thread \x22"),
            ("a Rust panic", r"panicked at |stack backtrace:|RUST_BACKTRACE"),
            ("a Node stack trace", r"(?m)^\s*at .+ \((?:node:|/|file://)[^)]*:\d+:\d+\)|node:internal/"),
            // A column list then FROM, so that prose ("select a model from the list") is not SQL.
            ("SQL text", r#"(?i)\bselect\s+(?:\*|[\w".]+(?:\s*,\s*[\w".]+)*)\s+from\s+[\w".]+|\binsert\s+into\s+[\w".]+|\bdelete\s+from\s+[\w".]+|\bupdate\s+[\w".]+\s+set\s"#),
            ("a database syntax error", r"(?i)syntax error at or near"),
            ("a Postgres DETAIL, HINT or CONTEXT line", r"\b(?:DETAIL|HINT|CONTEXT):"),
            ("a connection string", r"(?i)\b(?:postgres(?:ql)?|mysql|mongodb(?:\+srv)?|redis|jdbc:[a-z]+)://\S+"),
            ("a password in a connection setting", r"(?i)\bpassword\s*=\s*\S+"),
        ]
        .into_iter()
        .map(|(label, re)| (label, regex::Regex::new(re).expect("static regex")))
        .collect()
    })
}

/// What a response shows that it must not: each leak labelled, with a short excerpt around it.
fn leaks_in(ctx: &ProbeCtx, call: &CallOutcome) -> Vec<String> {
    let response = call.response();
    let text = match &response {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // serde_json escapes newlines inside strings; traces and DETAIL lines are judged on the
    // text as the agent reads it.
    let text = text.replace("\\n", "\n").replace("\\\"", "\"");
    let mut out: Vec<String> = internals()
        .iter()
        .filter_map(|(label, re)| {
            re.find(&text).map(|m| {
                let excerpt: String = text[m.start()..].chars().take(80).collect();
                format!("{label}: \"{}\"", preflight_targets::redact(&excerpt))
            })
        })
        .collect();
    let sent = ctx.truth.canaries.sent_in(&call.arguments);
    out.extend(
        ctx.truth
            .canaries
            .scan_json(&response, "$")
            .into_iter()
            .filter(|h| !sent.contains(&h.canary.value))
            .map(|h| {
                format!(
                    "a canary: \"{}\" ({}) at {}",
                    h.canary.masked(),
                    h.canary.cell(),
                    h.path
                )
            }),
    );
    out
}

/// Whether an error says the layer could not be talked to (not that it refused).
fn target_fault(call: &CallOutcome) -> Option<&str> {
    match &call.result {
        Err(e) if e.code == ErrorCode::Internal && e.details.get("target_fault").is_some() => {
            Some(e.message.as_str())
        }
        Ok(_) | Err(_) => None,
    }
}

async fn malformed_input(ctx: Arc<ProbeCtx>, tool: ToolSpec) -> ProbeResult {
    let a = ctx.principals.a.clone();
    // The harmless values keep a write tool from changing anything (a key no row has, an empty
    // change), but a layer this probe is meant to catch may not be careful: only on a database
    // the run may change.
    if super::every_tool::words(&tool.name)
        .iter()
        .any(|w| WRITE_WORDS.contains(&w.as_str()))
    {
        ctx.require_writes()?;
    }
    let (base, cases) = cases(&tool);
    // A well-formed call first: a layer that cannot answer it is not taken down by the probe.
    let control = ctx.call(&a, &tool.name, Value::Object(base)).await;
    if let Some(fault) = target_fault(&control) {
        return Err(ProbeOutcome::error(format!(
            "`{}` did not answer a well-formed call ({fault}), so what malformed input does to it could not be tested",
            tool.name
        ))
        .with_call(&ctx, &control));
    }
    let total = cases.len();
    let mut leaks = Vec::new();
    let mut first_leak: Option<CallOutcome> = None;
    for case in cases {
        let call = ctx.call(&a, &tool.name, case.arguments).await;
        if let Some(fault) = target_fault(&call) {
            return Ok(ProbeOutcome::fail(format!(
                "`{}` stopped answering when called with {}: {fault}. One malformed argument takes the layer down (a denial of service any agent can cause); validate arguments against the tool's schema and answer with a structured error.",
                tool.name, case.what
            ))
            .with_call(&ctx, &call));
        }
        let found = leaks_in(&ctx, &call);
        if !found.is_empty() {
            leaks.extend(found.into_iter().map(|l| format!("{}: {l}", case.what)));
            if first_leak.is_none() {
                first_leak = Some(call);
            }
        }
    }
    if let Some(call) = first_leak {
        return Ok(ProbeOutcome::fail(format!(
            "`{}` answered malformed arguments with the layer's internals ({} of {total} call(s)); map every failure to a structured error with a safe message",
            tool.name,
            leaks.len()
        ))
        .with_call(&ctx, &call)
        .facts(leaks));
    }
    Ok(ProbeOutcome::pass(format!(
        "`{}` answered {total} malformed call(s) without a trace, SQL text, database detail, connection string or canary, and kept answering",
        tool.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schema: Value) -> ToolSpec {
        ToolSpec {
            name: "get_order".to_string(),
            description: String::new(),
            input_schema: schema,
        }
    }

    #[test]
    fn every_kind_of_case_comes_from_the_schema() {
        let tool = spec(json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "integer"},
                "note": {"type": ["string", "null"]},
            },
            "required": ["order_id"],
        }));
        let (base, cases) = cases(&tool);
        assert_eq!(base["order_id"], json!(987_654_321_987_i64));
        let whats: Vec<&str> = cases.iter().map(|c| c.what.as_str()).collect();
        for want in [
            "`order_id` given a value of type string",
            "`order_id` given the largest unsigned 64-bit integer",
            "`order_id` given arrays nested 100 deep",
            "`note` given a value of type integer",
            "`note` given a 1 MB string",
            "`note` given a string with a NUL character",
            "the required `order_id` left out",
            "an argument the schema does not name",
        ] {
            assert!(whats.contains(&want), "{want} not in {whats:#?}");
        }
        // Cases on `note` keep the required argument, with a harmless value.
        let nul = cases
            .iter()
            .find(|c| c.what.contains("NUL"))
            .expect("NUL case");
        assert_eq!(nul.arguments["order_id"], json!(987_654_321_987_i64));
        let missing = cases
            .iter()
            .find(|c| c.what.contains("left out"))
            .expect("missing case");
        assert!(missing.arguments.get("order_id").is_none());
    }

    #[test]
    fn internals_are_recognised_and_plain_refusals_are_not() {
        let hits = |text: &str| -> Vec<&str> {
            internals()
                .iter()
                .filter(|(_, re)| re.is_match(text))
                .map(|(l, _)| *l)
                .collect()
        };
        assert_eq!(
            hits("Traceback (most recent call last):\n  File \"/srv/app.py\", line 12, in get"),
            vec!["a Python traceback"]
        );
        assert_eq!(
            hits("\tat com.shop.Orders.get(Orders.java:42)"),
            vec!["a Java stack trace"]
        );
        assert_eq!(
            hits("thread 'main' panicked at src/main.rs:3:5"),
            vec!["a Rust panic"]
        );
        assert_eq!(
            hits("    at Object.get (/srv/app/index.js:10:5)"),
            vec!["a Node stack trace"]
        );
        assert!(hits("SELECT id, status FROM orders WHERE id = $1").contains(&"SQL text"));
        assert!(hits("syntax error at or near \"x\"").contains(&"a database syntax error"));
        assert!(hits("invalid input DETAIL: Key (id)=(1)")
            .contains(&"a Postgres DETAIL, HINT or CONTEXT line"));
        assert!(hits("postgres://agent:pw@db/shop").contains(&"a connection string"));
        for clean in [
            "invalid arguments for db_get: `id` must be an integer or a string, got an array",
            "Please select a model from the list",
            "1 validation error for get_orderArguments\norder_id\n  Input should be a valid integer",
            "{\"error\": \"not available\"}",
        ] {
            assert!(hits(clean).is_empty(), "{clean}: {:?}", hits(clean));
        }
    }

    #[test]
    fn wrong_types_avoid_every_accepted_type() {
        assert_eq!(
            wrong_type(&json!({"type": ["integer", "string"]})).map(|(t, _)| t),
            Some("boolean")
        );
        assert_eq!(
            wrong_type(&json!({"type": "number"})).map(|(t, _)| t),
            Some("string")
        );
        assert_eq!(wrong_type(&json!({"description": "anything"})), None);
    }
}
