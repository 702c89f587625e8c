//! Typed arguments of the read tools, parsed from arguments that already passed the tool's JSON
//! Schema (so shapes are known; parsing still never panics on anything).

use serde_json::Value;

use crate::gateway::{ErrorCode, ToolError};

/// Filter operators, exactly as the contract lists them (docs/gateway.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    NotIn,
    IsNull,
    Contains,
    StartsWith,
    EndsWith,
    Between,
}

impl Op {
    pub(crate) const ALL: [Op; 13] = [
        Op::Eq,
        Op::Ne,
        Op::Lt,
        Op::Lte,
        Op::Gt,
        Op::Gte,
        Op::In,
        Op::NotIn,
        Op::IsNull,
        Op::Contains,
        Op::StartsWith,
        Op::EndsWith,
        Op::Between,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::IsNull => "is_null",
            Op::Contains => "contains",
            Op::StartsWith => "startswith",
            Op::EndsWith => "endswith",
            Op::Between => "between",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Aggregate functions, exactly as the contract lists them (docs/gateway.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AggFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFn {
    pub(crate) const ALL: [AggFn; 5] =
        [AggFn::Count, AggFn::Sum, AggFn::Avg, AggFn::Min, AggFn::Max];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Avg => "avg",
            AggFn::Min => "min",
            AggFn::Max => "max",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<AggFn> {
        AggFn::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dir {
    Asc,
    Desc,
}

impl Dir {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }
}

/// A name the agent sent, with the argument path it came from (`select[2]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Named {
    pub path: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Condition {
    pub path: String,
    pub field: String,
    pub op: Op,
    pub value: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OrderKey {
    pub path: String,
    pub field: String,
    pub dir: Dir,
}

/// A requested `limit`: a value that fits, or one too large for any cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limit(pub u64);

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueryArgs {
    pub model: String,
    pub select: Option<Vec<Named>>,
    pub conditions: Vec<Condition>,
    pub order_by: Vec<OrderKey>,
    pub limit: Option<Limit>,
    pub cursor: Option<String>,
    pub include: Vec<Named>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GetArgs {
    pub model: String,
    pub id: Value,
    pub select: Option<Vec<Named>>,
    pub include: Vec<Named>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AggSpec {
    pub path: String,
    pub function: AggFn,
    pub field: Option<String>,
    pub alias: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AggregateArgs {
    pub model: String,
    pub aggregates: Vec<AggSpec>,
    pub conditions: Vec<Condition>,
    pub group_by: Vec<Named>,
    pub limit: Option<Limit>,
}

pub(crate) fn invalid(path: &str, message: impl Into<String>, suggestion: &str) -> ToolError {
    let suggestion = if suggestion.is_empty() {
        "fix this argument; db_describe_schema lists every field with its type and operators"
    } else {
        suggestion
    };
    ToolError::new(
        ErrorCode::ValidationError,
        format!("`{path}`: {}", message.into()),
        suggestion,
    )
    .with_details(serde_json::json!({"path": path}))
}

fn str_of(args: &Value, key: &str) -> Option<String> {
    args.get(key).and_then(Value::as_str).map(str::to_string)
}

fn names(args: &Value, key: &str) -> Option<Vec<Named>> {
    let items = args.get(key)?.as_array()?;
    Some(
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.as_str().map(|s| Named {
                    path: format!("{key}[{i}]"),
                    name: s.to_string(),
                })
            })
            .collect(),
    )
}

fn limit(args: &Value) -> Option<Limit> {
    let n = args.get("limit")?.as_number()?;
    Some(Limit(match n.as_u64() {
        Some(u) => u,
        // Integral floats beyond u64 (1e30) are simply "too many rows".
        None => n
            .as_f64()
            .filter(|f| *f >= 1.0)
            .map(|_| u64::MAX)
            .unwrap_or(0),
    }))
}

/// `where` in either form, as a list of conditions.
pub(crate) fn conditions(args: &Value) -> Result<Vec<Condition>, ToolError> {
    let mut out = Vec::new();
    match args.get("where") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("where[{i}]");
                let field = item
                    .get("field")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let op_text = item.get("op").and_then(Value::as_str).unwrap_or_default();
                let Some(op) = Op::parse(op_text) else {
                    return Err(invalid(&format!("{path}.op"), "unknown operator", ""));
                };
                out.push(Condition {
                    path,
                    field: field.to_string(),
                    op,
                    value: item.get("value").cloned(),
                });
            }
        }
        Some(Value::Object(map)) => {
            for (field, value) in map {
                let path = format!("where.{field}");
                let (op, value) = match value {
                    Value::Null => (Op::IsNull, Some(Value::Bool(true))),
                    Value::Array(_) => (Op::In, Some(value.clone())),
                    _ => (Op::Eq, Some(value.clone())),
                };
                out.push(Condition {
                    path,
                    field: field.clone(),
                    op,
                    value,
                });
            }
        }
        Some(_) => {
            return Err(invalid(
                "where",
                "expected a list of conditions or an object",
                "",
            ))
        }
    }
    Ok(out)
}

fn order_by(args: &Value) -> Vec<OrderKey> {
    let Some(items) = args.get("order_by").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let path = format!("order_by[{i}]");
            match item {
                Value::String(field) => Some(OrderKey {
                    path,
                    field: field.clone(),
                    dir: Dir::Asc,
                }),
                Value::Object(o) => Some(OrderKey {
                    path,
                    field: o.get("field")?.as_str()?.to_string(),
                    dir: match o.get("direction").and_then(Value::as_str) {
                        Some("desc") => Dir::Desc,
                        _ => Dir::Asc,
                    },
                }),
                _ => None,
            }
        })
        .collect()
}

pub(crate) fn query_args(args: &Value) -> Result<QueryArgs, ToolError> {
    Ok(QueryArgs {
        model: str_of(args, "model").unwrap_or_default(),
        select: names(args, "select"),
        conditions: conditions(args)?,
        order_by: order_by(args),
        limit: limit(args),
        cursor: str_of(args, "cursor"),
        include: names(args, "include").unwrap_or_default(),
    })
}

pub(crate) fn get_args(args: &Value) -> Result<GetArgs, ToolError> {
    Ok(GetArgs {
        model: str_of(args, "model").unwrap_or_default(),
        id: args.get("id").cloned().unwrap_or(Value::Null),
        select: names(args, "select"),
        include: names(args, "include").unwrap_or_default(),
    })
}

pub(crate) fn aggregate_args(args: &Value) -> Result<AggregateArgs, ToolError> {
    let mut aggregates = Vec::new();
    let mut aliases = std::collections::BTreeSet::new();
    if let Some(items) = args.get("aggregates").and_then(Value::as_array) {
        for (i, item) in items.iter().enumerate() {
            let path = format!("aggregates[{i}]");
            let Some(function) = item
                .get("function")
                .and_then(Value::as_str)
                .and_then(AggFn::parse)
            else {
                return Err(invalid(&format!("{path}.function"), "unknown function", ""));
            };
            let field = item
                .get("field")
                .and_then(Value::as_str)
                .map(str::to_string);
            if field.is_none() && function != AggFn::Count {
                return Err(invalid(
                    &format!("{path}.field"),
                    format!("{} needs a field", function.as_str()),
                    "name the numeric field to aggregate, e.g. {\"function\": \"sum\", \"field\": \"total\"}",
                ));
            }
            let alias = match (item.get("alias").and_then(Value::as_str), &field) {
                (Some(a), _) => a.to_string(),
                (None, None) => "count".to_string(),
                (None, Some(f)) => format!("{}_{f}", function.as_str()),
            };
            if !aliases.insert(alias.clone()) {
                return Err(invalid(
                    &format!("{path}.alias"),
                    format!("alias {alias} is used twice"),
                    "give each aggregate its own alias",
                ));
            }
            aggregates.push(AggSpec {
                path,
                function,
                field,
                alias,
            });
        }
    }
    let group_by = names(args, "group_by").unwrap_or_default();
    for g in &group_by {
        if aliases.contains(&g.name) {
            return Err(invalid(
                &g.path,
                format!("{} is both a group_by field and an aggregate alias", g.name),
                "give the aggregate another alias",
            ));
        }
    }
    Ok(AggregateArgs {
        model: str_of(args, "model").unwrap_or_default(),
        aggregates,
        conditions: conditions(args)?,
        group_by,
        limit: limit(args),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_short_form_becomes_conditions() {
        let c =
            conditions(&json!({"where": {"status": "paid", "id": [1, 2], "phone": null}})).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].op, Op::Eq);
        assert_eq!(c[1].op, Op::In);
        assert_eq!(c[2].op, Op::IsNull);
        assert_eq!(c[2].path, "where.phone");
    }

    #[test]
    fn order_by_accepts_strings_and_objects() {
        let o =
            order_by(&json!({"order_by": ["name", {"field": "created_at", "direction": "desc"}]}));
        assert_eq!(o[0].dir, Dir::Asc);
        assert_eq!(o[1].field, "created_at");
        assert_eq!(o[1].dir, Dir::Desc);
    }

    #[test]
    fn aggregate_aliases_default_and_clash() {
        let a = aggregate_args(&json!({"model": "orders", "aggregates": [{"function": "count"}, {"function": "sum", "field": "total"}]})).unwrap();
        assert_eq!(a.aggregates[0].alias, "count");
        assert_eq!(a.aggregates[1].alias, "sum_total");
        let e = aggregate_args(&json!({"model": "orders", "aggregates": [{"function": "count"}, {"function": "count"}]})).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationError);
        let e = aggregate_args(&json!({"model": "orders", "aggregates": [{"function": "sum"}]}))
            .unwrap_err();
        assert!(e.message.contains("needs a field"), "{}", e.message);
    }

    #[test]
    fn huge_limits_saturate() {
        assert_eq!(limit(&json!({"limit": 1e30})), Some(Limit(u64::MAX)));
        assert_eq!(limit(&json!({"limit": 5})), Some(Limit(5)));
    }
}
