//! `db_describe_schema`: the models, fields and relations the policy lets this principal see,
//! and nothing else (RED-4). Denied fields are absent (not listed as denied: their names are not
//! the agent's business); masked and hashed ones are listed with the only operator they take.

use serde_json::{json, Map, Value};

use crate::faults::{Fault, Faults};
use crate::policy::{FieldAction, ModelPolicy, Policy, RelationKind};

use super::access::{effective_action, TypeClass};
use super::args::{AggFn, Op};
use super::catalog::Catalog;
use super::tools::{self, row_cap, ALL_TOOLS, QUERY};

pub(crate) fn describe(policy: &Policy, faults: &Faults, catalog: &Catalog) -> Value {
    let models: Vec<Value> = policy
        .models
        .values()
        .filter(|m| ALL_TOOLS.iter().any(|t| m.tools.contains(*t)))
        .map(|m| model(policy, m, faults, catalog))
        .collect();
    json!({
        "models": models,
        "notes": [
            "Every call is limited to your tenant; do not filter on the tenant yourself.",
            "masked and hashed fields come back redacted and can only be tested with is_null.",
            "Fields and models not listed here do not exist for you.",
        ],
    })
}

fn model(policy: &Policy, m: &ModelPolicy, faults: &Faults, catalog: &Catalog) -> Value {
    let indexed = catalog.filter_fields(m, faults);
    let fields: Vec<Value> = m
        .columns
        .iter()
        .filter_map(|c| {
            let action = effective_action(c, faults);
            let shown_denied =
                action == FieldAction::Deny && faults.has(Fault::DescribeShowsDenied);
            if action == FieldAction::Deny && !shown_denied {
                return None;
            }
            let class = TypeClass::of(&c.pg_type);
            let (access, operators, orderable, aggregates): (&str, Vec<&str>, bool, Vec<&str>) =
                match action {
                    FieldAction::Mask => (
                        "masked",
                        vec![Op::IsNull.as_str()],
                        false,
                        vec![AggFn::Count.as_str()],
                    ),
                    FieldAction::Hash => (
                        "hashed",
                        vec![Op::IsNull.as_str()],
                        false,
                        vec![AggFn::Count.as_str()],
                    ),
                    FieldAction::Allow | FieldAction::Deny => (
                        if shown_denied { "denied" } else { "allow" },
                        Op::ALL
                            .iter()
                            .filter(|o| class.supports(**o))
                            .map(|o| o.as_str())
                            .collect(),
                        class.orderable(),
                        AggFn::ALL
                            .iter()
                            .filter(|f| class.aggregatable(**f))
                            .map(|f| f.as_str())
                            .collect(),
                    ),
                };
            let mut f = Map::new();
            f.insert("name".into(), json!(c.name));
            f.insert("type".into(), json!(c.pg_type));
            f.insert("nullable".into(), json!(c.nullable));
            f.insert("access".into(), json!(access));
            f.insert("operators".into(), json!(operators));
            f.insert("orderable".into(), json!(orderable));
            f.insert("aggregates".into(), json!(aggregates));
            if indexed.contains(&c.name) {
                f.insert("indexed".into(), json!(true));
            }
            Some(Value::Object(f))
        })
        .collect();
    let relations: Vec<Value> = m
        .relations
        .values()
        .filter(|r| policy.model(&r.target).is_some_and(|t| t.tools.contains(QUERY)))
        .map(|r| {
            json!({
                "name": r.name,
                "model": r.target,
                "kind": match r.kind { RelationKind::BelongsTo => "belongs_to", RelationKind::HasMany => "has_many" },
            })
        })
        .collect();
    let tools_here: Vec<&str> = ALL_TOOLS
        .iter()
        .copied()
        .filter(|t| m.tools.contains(*t))
        .collect();
    let max_rows: Map<String, Value> = [tools::QUERY, tools::AGGREGATE]
        .iter()
        .filter(|t| m.tools.contains(**t))
        .map(|t| (t.to_string(), json!(row_cap(policy, &m.name, t))))
        .collect();
    json!({
        "name": m.name,
        "primary_key": m.primary_key,
        "tools": tools_here,
        "fields": fields,
        "relations": relations,
        "writable_fields": m.writable_fields,
        "require_reason": m.require_reason,
        "limits": {
            "max_rows": max_rows,
            "max_scan_rows": m.budgets.max_scan_rows,
            "max_join_depth": m.budgets.max_join_depth,
            "statement_timeout_ms": m.budgets.statement_timeout_ms,
            "filter_on": indexed,
        },
    })
}
