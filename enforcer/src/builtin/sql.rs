//! SQL text plus its bind parameters, and the conversion of agent JSON values into typed binds.
//!
//! Values only ever reach the database as bind parameters, cast in SQL to the column's type
//! class (`CAST($3 AS timestamptz)`); identifiers only ever come from the policy, quoted.

use serde_json::Value;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

use crate::gateway::ToolError;

use super::access::TypeClass;
use super::args::invalid;
use super::text::quote_for_message;
use super::tools::MAX_STRING_CHARS;

/// One bind parameter.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Bool(bool),
    TextArray(Vec<String>),
    IntArray(Vec<i64>),
    BoolArray(Vec<bool>),
}

/// SQL text under construction with its binds, numbered in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    tenant_param: Option<String>,
}

impl Sql {
    /// Adds a bind and returns its placeholder (`$4`).
    pub(crate) fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// The placeholder of the principal's tenant, bound once per statement.
    pub(crate) fn tenant(&mut self, tenant: &str) -> String {
        if let Some(p) = &self.tenant_param {
            return p.clone();
        }
        let p = self.bind(Bind::Text(tenant.to_string()));
        self.tenant_param = Some(p.clone());
        p
    }

    /// A scalar cast to `class` (`CAST($2 AS bigint)`); `Other` stays text.
    pub(crate) fn scalar(&mut self, class: TypeClass, s: Scalar) -> String {
        let p = match s {
            Scalar::Int(i) => self.bind(Bind::Int(i)),
            Scalar::Bool(b) => self.bind(Bind::Bool(b)),
            Scalar::Text(t) => self.bind(Bind::Text(t)),
        };
        match class.cast() {
            Some(t) => format!("CAST({p} AS {t})"),
            None => p,
        }
    }

    /// A list cast to `class[]`.
    pub(crate) fn array(&mut self, class: TypeClass, items: Vec<Scalar>) -> String {
        let b = match class {
            TypeClass::Int => Bind::IntArray(
                items
                    .into_iter()
                    .filter_map(|s| match s {
                        Scalar::Int(i) => Some(i),
                        Scalar::Bool(_) | Scalar::Text(_) => None,
                    })
                    .collect(),
            ),
            TypeClass::Bool => Bind::BoolArray(
                items
                    .into_iter()
                    .filter_map(|s| match s {
                        Scalar::Bool(b) => Some(b),
                        Scalar::Int(_) | Scalar::Text(_) => None,
                    })
                    .collect(),
            ),
            _ => Bind::TextArray(
                items
                    .into_iter()
                    .map(|s| match s {
                        Scalar::Text(t) => t,
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    })
                    .collect(),
            ),
        };
        let p = self.bind(b);
        match class.cast() {
            Some(t) => format!("CAST({p} AS {t}[])"),
            None => p,
        }
    }

    pub(crate) fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
}

/// Applies `binds` to a sqlx query over `text`.
pub(crate) fn query<'q>(text: &'q str, binds: &'q [Bind]) -> Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query(text);
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Int(i) => q.bind(*i),
            Bind::Bool(v) => q.bind(*v),
            Bind::TextArray(v) => q.bind(v.as_slice()),
            Bind::IntArray(v) => q.bind(v.as_slice()),
            Bind::BoolArray(v) => q.bind(v.as_slice()),
        };
    }
    q
}

/// A value converted for one column's type class.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Int(i64),
    Bool(bool),
    Text(String),
}

/// Converts an agent's JSON value for a column of `class`. Only the shape is checked here (and
/// NUL bytes and oversized strings refused); the database parses dates and times, and a value it
/// rejects becomes a `validation_error` too.
pub(crate) fn scalar(
    class: TypeClass,
    v: &Value,
    path: &str,
    field: &str,
) -> Result<Scalar, ToolError> {
    let wrong = || {
        invalid(
            path,
            format!(
                "expected {} for {field}, got {}",
                class.expected(),
                shape(v)
            ),
            "",
        )
    };
    if let Value::String(s) = v {
        check_text(s, path)?;
    }
    match class {
        TypeClass::Int => match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                })
                .map(Scalar::Int)
                .ok_or_else(wrong),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Scalar::Int)
                .map_err(|_| wrong()),
            _ => Err(wrong()),
        },
        TypeClass::Numeric | TypeClass::Float => match v {
            Value::Number(n) => Ok(Scalar::Text(n.to_string())),
            Value::String(s) => {
                let t = s.trim();
                if t.parse::<f64>().is_ok_and(f64::is_finite) {
                    Ok(Scalar::Text(t.to_string()))
                } else {
                    Err(wrong())
                }
            }
            _ => Err(wrong()),
        },
        TypeClass::Bool => match v {
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Scalar::Bool(s == "true")),
            _ => Err(wrong()),
        },
        TypeClass::Text | TypeClass::Other => match v {
            Value::String(s) => Ok(Scalar::Text(s.clone())),
            // Agents often send codes as numbers; the text form is unambiguous.
            Value::Number(n) => Ok(Scalar::Text(n.to_string())),
            _ => Err(wrong()),
        },
        TypeClass::Uuid => match v {
            Value::String(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => {
                Ok(Scalar::Text(s.trim().to_string()))
            }
            _ => Err(wrong()),
        },
        TypeClass::Date | TypeClass::Timestamp | TypeClass::TimestampTz | TypeClass::Time => {
            match v {
                Value::String(s) if looks_temporal(s) => Ok(Scalar::Text(s.trim().to_string())),
                _ => Err(wrong()),
            }
        }
        TypeClass::Json => Err(wrong()),
    }
}

/// NUL bytes cannot be stored in Postgres text and would otherwise surface as a driver error;
/// huge strings are refused before they cost anything.
pub(crate) fn check_text(s: &str, path: &str) -> Result<(), ToolError> {
    if s.contains('\0') {
        return Err(invalid(
            path,
            "contains a NUL byte (\\u0000), which text values cannot hold",
            "remove the NUL character from the value",
        ));
    }
    if s.chars().count() > MAX_STRING_CHARS {
        return Err(invalid(
            path,
            format!("is longer than {MAX_STRING_CHARS} characters"),
            "send a shorter value",
        ));
    }
    Ok(())
}

/// Digits, separators and an optional ISO designator/zone only: enough to refuse prose and SQL
/// before the database sees it; the database does the real parsing.
fn looks_temporal(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && t.len() <= 64
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && t.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | ' ' | 'T' | 'Z' | '+' | 'z' | 't')
        })
}

fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote_for_message(s),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_by_class() {
        assert_eq!(
            scalar(TypeClass::Int, &json!(7), "p", "id").unwrap(),
            Scalar::Int(7)
        );
        assert_eq!(
            scalar(TypeClass::Int, &json!("7"), "p", "id").unwrap(),
            Scalar::Int(7)
        );
        assert!(scalar(TypeClass::Int, &json!("7; drop table x"), "p", "id").is_err());
        assert!(scalar(TypeClass::Int, &json!(1.5), "p", "id").is_err());
        assert_eq!(
            scalar(TypeClass::Numeric, &json!(12.5), "p", "total").unwrap(),
            Scalar::Text("12.5".into())
        );
        assert!(scalar(TypeClass::Numeric, &json!("NaN"), "p", "total").is_err());
        assert!(scalar(TypeClass::Bool, &json!(1), "p", "active").is_err());
        assert!(scalar(
            TypeClass::TimestampTz,
            &json!("2025-01-01T00:00:00Z"),
            "p",
            "c"
        )
        .is_ok());
        assert!(scalar(TypeClass::TimestampTz, &json!("now(); select 1"), "p", "c").is_err());
        assert!(scalar(TypeClass::Date, &json!("yesterday"), "p", "c").is_err());
        assert!(scalar(TypeClass::Uuid, &json!("not-a-uuid"), "p", "c").is_err());
    }

    #[test]
    fn nul_bytes_are_a_validation_error() {
        let e = scalar(TypeClass::Text, &json!("a\u{0}b"), "where[0].value", "name").unwrap_err();
        assert_eq!(e.code, crate::gateway::ErrorCode::ValidationError);
        assert!(e.message.contains("NUL"));
    }

    #[test]
    fn binds_are_numbered_and_tenant_reused() {
        let mut s = Sql::default();
        assert_eq!(s.tenant("acme"), "$1");
        assert_eq!(
            s.scalar(TypeClass::Int, Scalar::Int(3)),
            "CAST($2 AS bigint)"
        );
        assert_eq!(s.tenant("acme"), "$1");
        assert_eq!(
            s.array(TypeClass::Numeric, vec![Scalar::Text("1".into())]),
            "CAST($3 AS numeric[])"
        );
        assert_eq!(s.scalar(TypeClass::Other, Scalar::Text("x".into())), "$4");
    }
}
