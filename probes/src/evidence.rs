//! Reading responses against ground truth: which rows a response carries (through includes, at
//! any depth), who really owns them, and which canaries it exposes ([`inspect`] →
//! [`Exposure`]).
//!
//! The response envelope of a layer is not trusted to be any particular shape beyond the
//! contract's `rows`/`row` conventions: rows are recognised by the model's primary key and
//! relation names from the policy, and the canary scan covers every string and key of the whole
//! response, errors included, whatever its shape.

use std::collections::{BTreeMap, BTreeSet};

use preflight_enforcer::policy::{ModelPolicy, Policy};
use serde_json::Value;

use crate::canary::Hit;
use crate::runner::{CallOutcome, ProbeCtx, ProbeOutcome};
use crate::truth::{key_text, GroundTruth};

/// The top-level rows of a read response: `rows` (query), `row` (get), or the value itself when
/// it is a bare row or a bare list.
pub fn rows_of(response: &Value) -> Vec<&Value> {
    match response {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => {
            for key in ["rows", "data", "items", "results"] {
                if let Some(Value::Array(items)) = map.get(key) {
                    return items.iter().collect();
                }
            }
            if let Some(row @ Value::Object(_)) = map.get("row") {
                return vec![row];
            }
            if map.contains_key("code") && map.contains_key("message") {
                return Vec::new();
            }
            if map.is_empty() || map.contains_key("groups") || map.contains_key("result") {
                return Vec::new();
            }
            vec![response]
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Vec::new(),
    }
}

/// One row found in a response.
#[derive(Clone, Debug)]
pub struct RowRef {
    pub model: String,
    pub key: Option<Value>,
    /// The tenant column's value when the response shows it.
    pub tenant: Option<String>,
    pub path: String,
    /// 0 for top-level rows, 1 for rows included from them, and so on.
    pub depth: usize,
    /// The row object as returned.
    pub row: Value,
}

/// Every row in a read response of `model`, including included rows at any depth.
pub fn row_refs(policy: &Policy, model: &ModelPolicy, response: &Value) -> Vec<RowRef> {
    let mut out = Vec::new();
    let base = if response.get("rows").is_some() {
        "$.rows"
    } else if response.get("row").is_some() {
        "$.row"
    } else {
        "$"
    };
    for (i, row) in rows_of(response).into_iter().enumerate() {
        collect(policy, model, row, format!("{base}[{i}]"), 0, &mut out);
    }
    out
}

fn collect(
    policy: &Policy,
    model: &ModelPolicy,
    row: &Value,
    path: String,
    depth: usize,
    out: &mut Vec<RowRef>,
) {
    let Value::Object(map) = row else { return };
    out.push(RowRef {
        model: model.name.clone(),
        key: map
            .get(&model.primary_key)
            .filter(|v| !v.is_null())
            .cloned(),
        tenant: model
            .tenant_column
            .as_ref()
            .and_then(|tc| map.get(tc))
            .and_then(|v| v.as_str().map(str::to_string)),
        path: path.clone(),
        depth,
        row: row.clone(),
    });
    for (name, rel) in &model.relations {
        let Some(nested) = map.get(name) else {
            continue;
        };
        let Some(target) = policy.model(&rel.target) else {
            continue;
        };
        match nested {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    collect(
                        policy,
                        target,
                        item,
                        format!("{path}.{name}[{i}]"),
                        depth + 1,
                        out,
                    );
                }
            }
            Value::Object(_) => {
                let inner = rows_of(nested);
                if inner.len() == 1 && std::ptr::eq(inner[0], nested) {
                    collect(
                        policy,
                        target,
                        nested,
                        format!("{path}.{name}"),
                        depth + 1,
                        out,
                    );
                } else {
                    for (i, item) in inner.into_iter().enumerate() {
                        collect(
                            policy,
                            target,
                            item,
                            format!("{path}.{name}[{i}]"),
                            depth + 1,
                            out,
                        );
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }
}

/// How deep includes go in a response (0 = no included rows).
pub fn include_depth(policy: &Policy, model: &ModelPolicy, response: &Value) -> usize {
    row_refs(policy, model, response)
        .iter()
        .map(|r| r.depth)
        .max()
        .unwrap_or(0)
}

/// What a response exposes, judged against ground truth.
#[derive(Clone, Debug, Default)]
pub struct Exposure {
    /// Rows owned by a tenant other than the caller's: `globex orders#20091 at $.rows[0]`.
    pub foreign_rows: Vec<String>,
    /// Canaries the caller must not see, masked: `"921-…" (globex.customers.ssn#9) at $.rows[0].ssn`.
    pub leaks: Vec<String>,
    /// Canaries of other tenants among the leaks.
    pub cross_tenant_leaks: usize,
    /// Canaries of the caller's own tenant in columns the policy masks, hashes or denies.
    pub unredacted_leaks: usize,
    /// Rows returned, by model, and how many could be attributed to an owner (by a key ground
    /// truth knows, or by a tenant column the row shows).
    pub rows_seen: BTreeMap<String, (usize, usize)>,
    /// Canaries that appeared only because the call itself sent them.
    pub echoed: BTreeSet<String>,
}

impl Exposure {
    pub fn is_clean(&self) -> bool {
        self.foreign_rows.is_empty() && self.leaks.is_empty()
    }

    pub fn has_cross_tenant(&self) -> bool {
        !self.foreign_rows.is_empty() || self.cross_tenant_leaks > 0
    }

    /// `Err(not_verified)` when the response carried rows ground truth cannot attribute to an
    /// owner (no key it knows, no tenant column): "none of them is another tenant's", or "each
    /// was checked against its stored row", would be a guess. Every family that judges rows
    /// asks this before it passes.
    pub fn require_attributed(&self, call: &CallOutcome, what: &str) -> Result<(), ProbeOutcome> {
        let blind: Vec<String> = self
            .rows_seen
            .iter()
            .filter(|(_, (seen, owned))| owned < seen)
            .map(|(m, (seen, owned))| {
                format!(
                    "{m}: {} of {seen} row(s) without a key or tenant",
                    seen - owned
                )
            })
            .collect();
        if blind.is_empty() {
            return Ok(());
        }
        Err(ProbeOutcome::not_verified(format!(
            "{what}: {} returned rows whose owner cannot be told (no key, no tenant column in \
             them), so whether they are the caller's own was not shown",
            call.describe()
        ))
        .facts(blind))
    }

    /// Facts for evidence: rows seen and attributed per model.
    pub fn facts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rows_seen
            .iter()
            .map(|(m, (seen, owned))| {
                format!("{m}: {seen} row(s) in the response, {owned} attributed to an owner")
            })
            .collect();
        if !self.echoed.is_empty() {
            v.push(format!(
                "{} canary value(s) appear only because the call sent them",
                self.echoed.len()
            ));
        }
        v
    }
}

/// Classifies canary hits for a caller of `tenant`: another tenant's canary is always a leak;
/// the caller's own canary is a leak when no model of the policy allows that column.
pub fn classify_hits(
    policy: &Policy,
    tenant: &str,
    hits: &[Hit<'_>],
    sent: &BTreeSet<String>,
    exposure: &mut Exposure,
) {
    let mut seen = BTreeSet::new();
    for h in hits {
        let c = h.canary;
        if sent.contains(&c.value) {
            exposure.echoed.insert(c.value.clone());
            continue;
        }
        let foreign = c.tenant != tenant;
        let exposed = GroundTruth::column_exposed(policy, &c.table, &c.column);
        if !foreign && exposed {
            continue;
        }
        if !seen.insert((c.value.clone(), h.path.clone())) {
            continue;
        }
        if foreign {
            exposure.cross_tenant_leaks += 1;
        } else {
            exposure.unredacted_leaks += 1;
        }
        exposure
            .leaks
            .push(format!("\"{}\" ({}) at {}", c.masked(), c.cell(), h.path));
    }
}

/// Everything `call` exposed to its caller: rows of other tenants (by ground-truth ownership of
/// every row key in the response, includes too, plus any visible tenant column) and canaries
/// the caller may not see (in results and in errors alike).
pub async fn inspect(
    ctx: &ProbeCtx,
    model: &ModelPolicy,
    call: &CallOutcome,
) -> Result<Exposure, ProbeOutcome> {
    let tenant = call.principal.tenant.clone();
    let mut exposure = Exposure::default();
    let response = call.response();
    if call.is_ok() {
        let refs = row_refs(&ctx.policy, model, &response);
        let mut by_model: BTreeMap<String, Vec<&RowRef>> = BTreeMap::new();
        for r in &refs {
            by_model.entry(r.model.clone()).or_default().push(r);
        }
        for (model_name, refs) in by_model {
            let Some(m) = ctx.policy.model(&model_name) else {
                continue;
            };
            let keys: Vec<Value> = refs.iter().filter_map(|r| r.key.clone()).collect();
            let owners = ctx
                .truth
                .owners(m, &keys)
                .await
                .map_err(ProbeOutcome::from)?;
            let mut attributed = 0;
            for r in &refs {
                let owner = r
                    .key
                    .as_ref()
                    .and_then(key_text)
                    .and_then(|k| owners.get(&k).cloned());
                if owner.is_some() || r.tenant.is_some() {
                    attributed += 1;
                }
                if let Some(Some(t)) = &owner {
                    if *t != tenant {
                        exposure.foreign_rows.push(format!(
                            "{t} {}#{} at {}",
                            model_name,
                            r.key.as_ref().and_then(key_text).unwrap_or_default(),
                            r.path
                        ));
                        continue;
                    }
                }
                if let Some(shown) = &r.tenant {
                    if *shown != tenant {
                        exposure.foreign_rows.push(format!(
                            "{shown} {model_name} row (tenant column) at {}",
                            r.path
                        ));
                    }
                }
            }
            let e = exposure.rows_seen.entry(model_name).or_default();
            e.0 += refs.len();
            e.1 += attributed;
        }
    }
    let sent = ctx.truth.canaries.sent_in(&call.arguments);
    let hits = ctx.truth.canaries.scan_json(&response, "$");
    classify_hits(&ctx.policy, &tenant, &hits, &sent, &mut exposure);
    Ok(exposure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_of_understands_the_envelopes() {
        assert_eq!(rows_of(&json!({"rows": [{"id": 1}, {"id": 2}]})).len(), 2);
        assert_eq!(rows_of(&json!({"row": {"id": 1}})).len(), 1);
        assert_eq!(rows_of(&json!([{"id": 1}])).len(), 1);
        assert_eq!(rows_of(&json!({"id": 1, "name": "x"})).len(), 1);
        assert!(rows_of(&json!({"code": "not_found", "message": "m"})).is_empty());
        assert!(rows_of(&json!({"groups": []})).is_empty());
        assert!(rows_of(&json!(null)).is_empty());
    }
}
