//! Field access on the input side: what an agent may do with each column in a filter, an
//! ordering, a grouping or an aggregate, and the type class that decides which operators and
//! values make sense.
//!
//! The rule for masked and hashed fields is deliberately strict: they can be selected (and come
//! back masked or hashed) and tested with `is_null`, nothing else. Equality looks harmless but is
//! an oracle: `ssn eq "911-56-7219"` confirms a guess one value at a time, and `in` confirms a
//! thousand guesses per call. Comparing HMACs server-side is impossible without handing the key
//! to the database, so hashed fields get the same rule. Ordering, ranges, prefixes, grouping and
//! min/max all reveal more than one bit per call and are refused as well.

use crate::faults::{Fault, Faults};
use crate::gateway::{ErrorCode, ToolError};
use crate::policy::{ColumnPolicy, FieldAction, ModelPolicy, RuleSource};

use super::args::{AggFn, Op};
use super::text::quote_for_message;

/// The family of a catalog type; it decides casts, operators and JSON value shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeClass {
    Int,
    Numeric,
    Float,
    Bool,
    Text,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
    Json,
    /// Arrays, enums, bytea, intervals and anything else: equality only, compared as text.
    Other,
}

impl TypeClass {
    /// Classifies a `format_type` string such as `numeric(12,2)` or
    /// `timestamp(3) with time zone`.
    pub(crate) fn of(pg_type: &str) -> TypeClass {
        let lower = pg_type.trim().to_ascii_lowercase();
        if lower.ends_with("[]") {
            return TypeClass::Other;
        }
        // Drop type modifiers: `timestamp(3) with time zone` -> `timestamp with time zone`.
        let mut base = String::with_capacity(lower.len());
        let mut depth = 0usize;
        for c in lower.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => base.push(c),
                _ => {}
            }
        }
        let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
        match base.as_str() {
            "bigint" | "integer" | "smallint" | "int8" | "int4" | "int2" | "int" => TypeClass::Int,
            "numeric" | "decimal" => TypeClass::Numeric,
            "real" | "double precision" | "float4" | "float8" => TypeClass::Float,
            "boolean" | "bool" => TypeClass::Bool,
            "text" | "character varying" | "varchar" | "character" | "char" | "bpchar"
            | "citext" | "name" => TypeClass::Text,
            "date" => TypeClass::Date,
            "timestamp without time zone" | "timestamp" => TypeClass::Timestamp,
            "timestamp with time zone" | "timestamptz" => TypeClass::TimestampTz,
            "time without time zone" | "time" => TypeClass::Time,
            "uuid" => TypeClass::Uuid,
            "json" | "jsonb" => TypeClass::Json,
            _ => TypeClass::Other,
        }
    }

    /// The SQL type a bound value is cast to, or `None` when values are compared as text.
    pub(crate) fn cast(self) -> Option<&'static str> {
        match self {
            TypeClass::Int => Some("bigint"),
            TypeClass::Numeric => Some("numeric"),
            TypeClass::Float => Some("double precision"),
            TypeClass::Bool => Some("boolean"),
            TypeClass::Text => Some("text"),
            TypeClass::Date => Some("date"),
            TypeClass::Timestamp => Some("timestamp"),
            TypeClass::TimestampTz => Some("timestamptz"),
            TypeClass::Time => Some("time"),
            TypeClass::Uuid => Some("uuid"),
            TypeClass::Json | TypeClass::Other => None,
        }
    }

    pub(crate) fn orderable(self) -> bool {
        !matches!(self, TypeClass::Json | TypeClass::Other)
    }

    pub(crate) fn supports(self, op: Op) -> bool {
        match op {
            Op::IsNull => true,
            Op::Eq | Op::Ne | Op::In | Op::NotIn => self != TypeClass::Json,
            Op::Lt | Op::Lte | Op::Gt | Op::Gte | Op::Between => {
                self.orderable() && self != TypeClass::Bool
            }
            Op::Contains | Op::StartsWith | Op::EndsWith => self == TypeClass::Text,
        }
    }

    pub(crate) fn aggregatable(self, f: AggFn) -> bool {
        match f {
            AggFn::Count => true,
            AggFn::Sum | AggFn::Avg => {
                matches!(self, TypeClass::Int | TypeClass::Numeric | TypeClass::Float)
            }
            AggFn::Min | AggFn::Max => matches!(
                self,
                TypeClass::Int
                    | TypeClass::Numeric
                    | TypeClass::Float
                    | TypeClass::Text
                    | TypeClass::Date
                    | TypeClass::Timestamp
                    | TypeClass::TimestampTz
                    | TypeClass::Time
            ),
        }
    }

    /// Words for messages: "an integer", "a date (YYYY-MM-DD)".
    pub(crate) fn expected(self) -> &'static str {
        match self {
            TypeClass::Int => "an integer",
            TypeClass::Numeric | TypeClass::Float => "a number",
            TypeClass::Bool => "true or false",
            TypeClass::Text => "a string",
            TypeClass::Date => "a date (YYYY-MM-DD)",
            TypeClass::Timestamp | TypeClass::TimestampTz => {
                "a timestamp (ISO 8601, e.g. 2025-01-31T12:00:00Z)"
            }
            TypeClass::Time => "a time of day (HH:MM:SS)",
            TypeClass::Uuid => "a UUID",
            TypeClass::Json => "no value (JSON fields can only be tested with is_null)",
            TypeClass::Other => "a string",
        }
    }
}

/// The action in force for `column`, after the gateway's faults: `PatternsIgnored` turns every
/// pattern-derived rule into `Allow`, as a layer whose wildcards silently do nothing would;
/// `DenyIgnored` turns every `Deny` into `Allow`.
pub(crate) fn effective_action(column: &ColumnPolicy, faults: &Faults) -> FieldAction {
    if faults.has(Fault::PatternsIgnored) && matches!(column.source, RuleSource::Pattern { .. })
        || faults.has(Fault::DenyIgnored) && column.action == FieldAction::Deny
    {
        FieldAction::Allow
    } else {
        column.action
    }
}

/// How an argument uses a field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Use {
    Select,
    Filter(Op),
    Order,
    Group,
    Aggregate(AggFn),
}

impl Use {
    fn words(self) -> String {
        match self {
            Use::Select => "select".to_string(),
            Use::Filter(op) => format!("filter with {}", op.as_str()),
            Use::Order => "order by".to_string(),
            Use::Group => "group by".to_string(),
            Use::Aggregate(f) => format!("aggregate with {}", f.as_str()),
        }
    }
}

/// Resolves `field` on `model` for `use_`, applying the field policy to the input: unknown
/// fields are a `validation_error`, denied ones `field_denied`, masked/hashed ones `field_denied`
/// for anything but select, `is_null` and `count`. `path` names the argument for messages.
pub(crate) fn resolve<'m>(
    model: &'m ModelPolicy,
    field: &str,
    use_: Use,
    faults: &Faults,
    path: &str,
) -> Result<&'m ColumnPolicy, ToolError> {
    let Some(column) = model.column(field) else {
        return Err(ToolError::new(
            ErrorCode::ValidationError,
            format!(
                "`{path}`: {} has no field {}",
                model.name,
                quote_for_message(field)
            ),
            format!(
                "call db_describe_schema to see the fields of {}",
                model.name
            ),
        )
        .with_details(serde_json::json!({"path": path, "model": model.name})));
    };
    let oracle_checks = !faults.has(Fault::OracleCheckOff);
    match effective_action(column, faults) {
        FieldAction::Allow => {}
        FieldAction::Deny => {
            // Selecting a denied field is refused even with the oracle check off: output never
            // carries denied values.
            if oracle_checks || matches!(use_, Use::Select) {
                return Err(denied(model, field, use_, path));
            }
        }
        action @ (FieldAction::Mask | FieldAction::Hash) => {
            let allowed = matches!(
                use_,
                Use::Select | Use::Filter(Op::IsNull) | Use::Aggregate(AggFn::Count)
            );
            if !allowed && oracle_checks {
                return Err(masked(model, field, action, use_, path));
            }
        }
    }
    let class = TypeClass::of(&column.pg_type);
    match use_ {
        Use::Select => {}
        Use::Filter(op) => {
            if !class.supports(op) {
                return Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "`{path}`: operator {} does not apply to {}.{} ({})",
                        op.as_str(),
                        model.name,
                        field,
                        column.pg_type
                    ),
                    format!(
                        "operators for this field: {}",
                        Op::ALL
                            .iter()
                            .filter(|o| class.supports(**o))
                            .map(|o| o.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .with_details(serde_json::json!({"path": path, "field": field})));
            }
        }
        Use::Order | Use::Group => {
            if !class.orderable() {
                return Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "`{path}`: cannot {} {}.{} ({})",
                        use_.words(),
                        model.name,
                        field,
                        column.pg_type
                    ),
                    "order or group by a text, number, boolean, date or time field",
                )
                .with_details(serde_json::json!({"path": path, "field": field})));
            }
        }
        Use::Aggregate(f) => {
            if !class.aggregatable(f) {
                let want = match f {
                    AggFn::Sum | AggFn::Avg => "a numeric field",
                    AggFn::Min | AggFn::Max => "a number, text, date or time field",
                    AggFn::Count => "any field",
                };
                return Err(ToolError::new(
                    ErrorCode::ValidationError,
                    format!(
                        "`{path}`: {} needs {want}; {}.{} is {}",
                        f.as_str(),
                        model.name,
                        field,
                        column.pg_type
                    ),
                    "use count for non-numeric fields",
                )
                .with_details(serde_json::json!({"path": path, "field": field})));
            }
        }
    }
    Ok(column)
}

fn denied(model: &ModelPolicy, field: &str, use_: Use, path: &str) -> ToolError {
    // The message names only the field the agent sent and the model; it never says why (the
    // reason may itself be sensitive) and never hints at a value.
    ToolError::new(
        ErrorCode::FieldDenied,
        format!(
            "`{path}`: field {} of {} is not available to this agent (cannot {})",
            quote_for_message(field),
            model.name,
            use_.words()
        ),
        format!(
            "leave {} out; call db_describe_schema to see the fields you may use",
            quote_for_message(field)
        ),
    )
    .with_details(serde_json::json!({"path": path, "model": model.name, "field": field}))
}

fn masked(
    model: &ModelPolicy,
    field: &str,
    action: FieldAction,
    use_: Use,
    path: &str,
) -> ToolError {
    let how = if action == FieldAction::Hash {
        "hashed"
    } else {
        "masked"
    };
    ToolError::new(
        ErrorCode::FieldDenied,
        format!(
            "`{path}`: field {} of {} is {how}; it cannot be used to {}",
            quote_for_message(field),
            model.name,
            use_.words()
        ),
        format!(
            "{how} fields can be selected (they come back {how}) and tested with is_null only; \
             filter, order or group by an allowed field such as the primary key {} instead",
            model.primary_key
        ),
    )
    .with_details(serde_json::json!({
        "path": path, "model": model.name, "field": field, "action": how,
        "allowed_uses": ["select", "is_null", "count"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_format_type_output() {
        assert_eq!(TypeClass::of("bigint"), TypeClass::Int);
        assert_eq!(TypeClass::of("numeric(12,2)"), TypeClass::Numeric);
        assert_eq!(
            TypeClass::of("timestamp(3) with time zone"),
            TypeClass::TimestampTz
        );
        assert_eq!(
            TypeClass::of("timestamp without time zone"),
            TypeClass::Timestamp
        );
        assert_eq!(TypeClass::of("character varying(20)"), TypeClass::Text);
        assert_eq!(TypeClass::of("text[]"), TypeClass::Other);
        assert_eq!(TypeClass::of("mood"), TypeClass::Other);
        assert_eq!(TypeClass::of("jsonb"), TypeClass::Json);
    }

    #[test]
    fn operators_by_class() {
        assert!(TypeClass::Text.supports(Op::Contains));
        assert!(!TypeClass::Int.supports(Op::Contains));
        assert!(!TypeClass::Bool.supports(Op::Lt));
        assert!(TypeClass::Other.supports(Op::Eq));
        assert!(!TypeClass::Other.supports(Op::Lt));
        assert!(!TypeClass::Json.supports(Op::Eq));
        assert!(TypeClass::Json.supports(Op::IsNull));
        assert!(!TypeClass::Text.aggregatable(AggFn::Sum));
        assert!(TypeClass::Numeric.aggregatable(AggFn::Avg));
        assert!(!TypeClass::Bool.aggregatable(AggFn::Max));
    }
}
