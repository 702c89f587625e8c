//! The every-tool probe (`cross_tenant.every_tool`): the checklist's own cross-tenant test, "from
//! an agent acting as tenant A, try every tool with tenant B's id in its arguments", run on every
//! tool the layer lists under its own name, whatever its shape — domain tools included.
//!
//! From the tool's JSON Schema, B's tenant id goes into every argument that can carry a tenant,
//! B's keys (from ground truth) into every id-like argument, and one of B's canary e-mails into
//! every e-mail argument. The response, errors included, is judged by B's canaries (other than
//! the ones the call itself sent) and by ground-truth row attribution: a row is B's when it
//! carries B's canary, B's tenant id, or the key of a B row of the model the tool or argument
//! names. A row that nothing attributes makes the probe `not_verified` with the count — never a
//! pass.
//!
//! Tools under contract names are left to the structured families, which probe them in depth.

use std::collections::BTreeSet;
use std::sync::Arc;

use preflight_enforcer::policy::{ModelPolicy, Policy};
use preflight_enforcer::ToolSpec;
use serde_json::{json, Map, Value};

use super::common;
use super::PlanInput;
use crate::codes::ProbeCode;
use crate::runner::{Probe, ProbeCtx, ProbeOutcome, ProbeResult};
use crate::truth::key_text;

pub fn probes(input: &PlanInput<'_>) -> Vec<Probe> {
    input
        .native_tools
        .iter()
        // Tools under the contract's names are probed in depth by the structured families.
        .filter(|t| !preflight_enforcer::gateway::CONTRACT_TOOLS.contains(&t.name.as_str()))
        .map(|t| {
            let tool = t.clone();
            Probe::new(
                ProbeCode::EveryTool,
                format!("{} with {}'s tenant id and keys", t.name, input.tenant_b),
                move |ctx| every_tool(ctx, tool.clone()),
            )
        })
        .collect()
}

/// What an argument can carry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Tenant,
    /// A key of this model.
    Key(String),
    Email,
    /// Anything else (filled only when required).
    Other,
}

/// Lower-case words of a name: `get_order`, `orderId` → `get`, `order` / `order`, `id`.
pub(crate) fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in name.chars() {
        if ch == '_' || ch == '-' || ch == '.' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if ch.is_ascii_uppercase() && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur.push(ch.to_ascii_lowercase());
        } else {
            cur.push(ch.to_ascii_lowercase());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The tenant-scoped model a word names (`order` → `orders`, `ticket` → `support_tickets`).
fn model_named<'a>(policy: &'a Policy, word: &str) -> Option<&'a ModelPolicy> {
    if word.len() < 3 {
        return None;
    }
    let scoped = || policy.models.values().filter(|m| m.tenant_column.is_some());
    scoped()
        .find(|m| m.name == word || m.name == format!("{word}s") || m.name == format!("{word}es"))
        .or_else(|| {
            scoped().find(|m| {
                words(&m.name)
                    .last()
                    .is_some_and(|w| w == &format!("{word}s") || w == word)
            })
        })
}

fn slot(policy: &Policy, tool: &str, arg: &str) -> Slot {
    let w = words(arg);
    if w.iter()
        .any(|x| x == "tenant" || x == "org" || x == "organization" || x == "account")
    {
        return Slot::Tenant;
    }
    if w.iter().any(|x| x == "email") {
        return Slot::Email;
    }
    if w.last()
        .is_some_and(|x| x == "id" || x == "ids" || x == "key")
    {
        let named = w[..w.len() - 1]
            .iter()
            .rev()
            .find_map(|x| model_named(policy, x))
            .or_else(|| words(tool).iter().find_map(|x| model_named(policy, x)));
        if let Some(m) = named {
            return Slot::Key(m.name.clone());
        }
    }
    Slot::Other
}

/// A harmless value of the schema's type, for required arguments that carry nothing of B's.
fn filler(schema: &Value) -> Value {
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        Some("array") => json!([]),
        Some("object") => json!({}),
        _ => json!("preflight"),
    }
}

fn wants_string(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("string")
}

async fn every_tool(ctx: Arc<ProbeCtx>, tool: ToolSpec) -> ProbeResult {
    let b = ctx.principals.b.tenant.clone();
    let a = ctx.principals.a.clone();
    let (props, required) = common::schema_arguments(&tool);
    let required: BTreeSet<String> = required.into_iter().collect();
    let mut args = Map::new();
    let mut carried = Vec::new();
    let mut key_models = BTreeSet::new();
    for (name, schema) in &props {
        match slot(&ctx.policy, &tool.name, name) {
            Slot::Tenant => {
                args.insert(name.clone(), json!(b));
                carried.push(format!("{name} = {b}"));
            }
            Slot::Key(model) => {
                let m = ctx.model(&model)?.clone();
                let keys = ctx.truth.keys(&m, &b, 1).await?;
                let Some(key) = keys.into_iter().next() else {
                    continue;
                };
                let value = if wants_string(schema) {
                    json!(key_text(&key).unwrap_or_default())
                } else if schema.get("type").and_then(Value::as_str) == Some("array") {
                    json!([key])
                } else {
                    key
                };
                carried.push(format!("{name} = a key of {b}'s {model}"));
                key_models.insert(model);
                args.insert(name.clone(), value);
            }
            Slot::Email => {
                let canary = ctx
                    .truth
                    .canaries
                    .iter()
                    .find(|c| c.tenant == b && c.column.contains("email"));
                if let Some(c) = canary {
                    args.insert(name.clone(), json!(c.value));
                    carried.push(format!("{name} = {b}'s e-mail {}", c.masked()));
                }
            }
            Slot::Other => {
                if required.contains(name) {
                    args.insert(name.clone(), filler(schema));
                }
            }
        }
    }
    // A tool whose name says it changes data gets B's keys only on a throwaway database: on
    // staging a layer with this very flaw would change B's real rows.
    const WRITE_WORDS: [&str; 12] = [
        "update", "delete", "create", "insert", "set", "write", "remove", "cancel", "refund",
        "approve", "add", "edit",
    ];
    if !carried.is_empty()
        && words(&tool.name)
            .iter()
            .any(|w| WRITE_WORDS.contains(&w.as_str()))
    {
        ctx.require_writes()?;
    }
    if carried.is_empty() {
        return Err(ProbeOutcome::not_verified(format!(
            "`{}` takes no argument that can carry a tenant, a key or an e-mail, so there was nothing of {b}'s to put in it",
            tool.name
        )));
    }
    let arguments = Value::Object(args);
    let sent = ctx.truth.canaries.sent_in(&arguments);
    let call = ctx.call(&a, &tool.name, arguments).await;
    common::internal_is_inconclusive(&call).map_err(|o| o.with_call(&ctx, &call))?;
    let response = match &call.result {
        Ok(v) => v.clone(),
        Err(e) => e.to_json(),
    };
    let foreign_canaries: Vec<String> = ctx
        .truth
        .canaries
        .scan_json(&response, "$")
        .into_iter()
        .filter(|h| h.canary.tenant != a.tenant && !sent.contains(&h.canary.value))
        .map(|h| format!("{} at {}", h.canary.cell(), h.path))
        .collect();
    let what = carried.join(", ");
    if !foreign_canaries.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "`{}` called with {what} returned another tenant's data: {}. Take the tenant from the session, never from arguments, and scope every lookup by it.",
            tool.name,
            foreign_canaries.join("; ")
        ))
        .with_call(&ctx, &call));
    }
    let Ok(value) = &call.result else {
        return Ok(ProbeOutcome::pass(format!(
            "`{}` called with {what} was refused and carried none of {b}'s data",
            tool.name
        ))
        .with_call(&ctx, &call));
    };
    let attribution = attribute(&ctx, &tool.name, &key_models, value).await?;
    if !attribution.foreign.is_empty() {
        return Ok(ProbeOutcome::fail(format!(
            "`{}` called with {what} returned {} row(s) of another tenant: {}. Take the tenant from the session, never from arguments.",
            tool.name,
            attribution.foreign.len(),
            attribution.foreign.join("; ")
        ))
        .with_call(&ctx, &call));
    }
    if attribution.unattributed > 0 {
        return Ok(ProbeOutcome::not_verified(format!(
            "`{}` called with {what} returned {} row(s) that nothing attributes to a tenant (no tenant column, no canary, no key of a known model), so whether they are {b}'s cannot be told",
            tool.name, attribution.unattributed
        ))
        .with_call(&ctx, &call));
    }
    Ok(ProbeOutcome::pass(format!(
        "`{}` called with {what} returned none of {b}'s data ({} row(s), all the caller's)",
        tool.name, attribution.own
    ))
    .with_call(&ctx, &call))
}

#[derive(Default)]
struct Attribution {
    own: usize,
    foreign: Vec<String>,
    unattributed: usize,
}

/// The row objects of a response: a bare list, a list under any key, or a single object.
fn row_objects(value: &Value) -> Vec<&Map<String, Value>> {
    match value {
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        Value::Object(map) => {
            let lists: Vec<&Map<String, Value>> = map
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(Value::as_object)
                .collect();
            if !lists.is_empty() {
                return lists;
            }
            let nested: Vec<&Map<String, Value>> =
                map.values().filter_map(Value::as_object).collect();
            if map.values().all(|v| !v.is_object()) && map.len() > 1 {
                vec![map]
            } else {
                nested
                    .into_iter()
                    .filter(|m| m.values().all(|v| !v.is_object() && !v.is_array()))
                    .collect()
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Vec::new(),
    }
}

async fn attribute(
    ctx: &ProbeCtx,
    tool: &str,
    key_models: &BTreeSet<String>,
    value: &Value,
) -> Result<Attribution, ProbeOutcome> {
    let a = &ctx.principals.a.tenant;
    let mut out = Attribution::default();
    // The model a row's `id` belongs to: the one the tool's name or its key argument names.
    let model = words(tool)
        .iter()
        .find_map(|w| model_named(&ctx.policy, w))
        .map(|m| m.name.clone())
        .or_else(|| key_models.iter().next().cloned());
    for (i, row) in row_objects(value).into_iter().enumerate() {
        let row_value = Value::Object(row.clone());
        let tenants: BTreeSet<String> = ctx
            .truth
            .canaries
            .scan_json(&row_value, "$")
            .into_iter()
            .map(|h| h.canary.tenant.clone())
            .collect();
        let tenant_field = ["tenant_id", "tenantId", "tenant"]
            .iter()
            .find_map(|k| row.get(*k).and_then(Value::as_str).map(str::to_string));
        let owner = if let Some(t) = tenants.iter().find(|t| *t != a) {
            Some(t.clone())
        } else if let Some(t) = tenant_field {
            Some(t)
        } else if let (Some(m), Some(id)) = (&model, row.get("id")) {
            let m = ctx.model(m)?.clone();
            let owners = ctx.truth.owners(&m, std::slice::from_ref(id)).await?;
            key_text(id).and_then(|k| owners.get(&k).cloned().flatten())
        } else if !tenants.is_empty() {
            Some(a.clone())
        } else {
            None
        };
        match owner {
            Some(t) if &t == a => out.own += 1,
            Some(t) => out.foreign.push(format!("row {i} is {t}'s")),
            None => out.unattributed += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_snake_and_camel() {
        assert_eq!(words("get_order"), vec!["get", "order"]);
        assert_eq!(words("orderId"), vec!["order", "id"]);
        assert_eq!(words("list_tickets"), vec!["list", "tickets"]);
    }

    #[test]
    fn rows_are_found_in_any_envelope() {
        let v = json!({"tickets": [{"id": 1}, {"id": 2}]});
        assert_eq!(row_objects(&v).len(), 2);
        let v = json!({"order": {"id": 1, "status": "paid"}});
        assert_eq!(row_objects(&v).len(), 1);
        let v = json!({"id": 1, "status": "paid"});
        assert_eq!(row_objects(&v).len(), 1);
        assert!(row_objects(&json!("text")).is_empty());
    }
}
