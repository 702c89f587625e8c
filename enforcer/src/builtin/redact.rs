//! Output redaction: format-aware masking and keyed hashing of field values, and the walk that
//! applies the field policy to every row, included rows too.
//!
//! Masking keeps just enough to be useful and never enough to identify:
//! - emails keep the first character of the local part and the whole domain:
//!   `olga.petrov@acme.example` → `o***@acme.example`;
//! - phone numbers keep their last 4 digits when they have at least 10, else the last 2; every
//!   other digit becomes `*` and separators stay: `+1-555-101-5303` → `+*-***-***-5303`;
//! - anything else keeps its last 2 characters behind `****` when it has at least 8 characters,
//!   and is fully masked (`****`) when shorter, so short secrets reveal nothing.
//!
//! Hashing is HMAC-SHA256 under the gateway's secret key, hex, prefixed `hmac:`: equal values give
//! equal hashes (so an agent can compare them), and nothing short of the key reverses them.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::faults::{Fault, Faults};
use crate::policy::{ColumnPolicy, FieldAction, ModelPolicy, RelationKind};

use super::access::effective_action;
use super::compile::{IncludeNode, INTERNAL_PREFIX};

/// What kind of value a masked column holds, from its name (values are checked too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MaskFormat {
    Email,
    Phone,
    Generic,
}

fn format_for(column: &str) -> MaskFormat {
    let c = column.to_ascii_lowercase();
    if c.contains("email") || c.contains("e_mail") {
        MaskFormat::Email
    } else if c.contains("phone") || c.contains("mobile") || c.contains("fax") || c == "tel" {
        MaskFormat::Phone
    } else {
        MaskFormat::Generic
    }
}

/// The text a JSON value stands for (strings unquoted).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Masks one value of `column` (NULL stays NULL: emptiness is not a secret, `is_null` may test it).
pub(crate) fn mask(column: &str, v: &Value) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    let s = text_of(v);
    let masked = match format_for(column) {
        MaskFormat::Email => mask_email(&s).unwrap_or_else(|| mask_generic(&s)),
        MaskFormat::Phone => mask_phone(&s).unwrap_or_else(|| mask_generic(&s)),
        MaskFormat::Generic => mask_generic(&s),
    };
    Value::String(masked)
}

fn mask_email(s: &str) -> Option<String> {
    let (local, domain) = s.rsplit_once('@')?;
    let first = local.chars().next()?;
    if domain.is_empty() || !domain.contains('.') || domain.chars().any(char::is_whitespace) {
        return None;
    }
    Some(format!("{first}***@{domain}"))
}

fn mask_phone(s: &str) -> Option<String> {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if digits < 7
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.'))
    {
        return None;
    }
    let keep = if digits >= 10 { 4 } else { 2 };
    let mut seen = 0;
    Some(
        s.chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    seen += 1;
                    if seen > digits - keep {
                        c
                    } else {
                        '*'
                    }
                } else {
                    c
                }
            })
            .collect(),
    )
}

fn mask_generic(s: &str) -> String {
    let n = s.chars().count();
    if n >= 8 {
        let tail: String = s.chars().skip(n - 2).collect();
        format!("****{tail}")
    } else {
        "****".to_string()
    }
}

/// `hmac:<hex>` of the value's text under `key`.
pub(crate) fn hash(key: &[u8; 32], v: &Value) -> Value {
    if v.is_null() {
        return Value::Null;
    }
    // HMAC accepts keys of any length; a 32-byte key cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Value::String("hmac:unavailable".to_string());
    };
    mac.update(text_of(v).as_bytes());
    Value::String(format!("hmac:{}", hex::encode(mac.finalize().into_bytes())))
}

/// Applies the field policy to rows of one model and collects audit subjects.
pub(crate) struct Redactor<'a> {
    pub faults: &'a Faults,
    pub key: &'a [u8; 32],
    /// `model:primary key` of every row returned, root and included (capped).
    pub subjects: Vec<String>,
    /// Include paths whose related rows were cut at the cap.
    pub truncated: Vec<String>,
}

/// Cap on audit subjects per call: enough for subject-access queries, bounded for huge reads.
const MAX_SUBJECTS: usize = 1000;

impl<'a> Redactor<'a> {
    pub(crate) fn new(faults: &'a Faults, key: &'a [u8; 32]) -> Self {
        Self {
            faults,
            key,
            subjects: Vec::new(),
            truncated: Vec::new(),
        }
    }

    /// One value of `column` in a root row (aggregate group keys).
    pub(crate) fn field(&self, column: &ColumnPolicy, v: Value) -> Option<Value> {
        self.value(column, v, false)
    }

    fn value(&self, column: &ColumnPolicy, v: Value, included: bool) -> Option<Value> {
        if included && self.faults.has(Fault::IncludeUnredacted) {
            return Some(v);
        }
        match effective_action(column, self.faults) {
            FieldAction::Allow => Some(v),
            // Denied columns are never selected; dropping one here is defence in depth.
            FieldAction::Deny => None,
            FieldAction::Mask if self.faults.has(Fault::MaskOff) => Some(v),
            FieldAction::Hash if self.faults.has(Fault::MaskOff) => Some(v),
            FieldAction::Mask => Some(mask(&column.name, &v)),
            FieldAction::Hash => Some(hash(self.key, &v)),
        }
    }

    /// Redacts one row of `model` (`columns` in output order), recursing into `includes`.
    pub(crate) fn row(
        &mut self,
        model: &ModelPolicy,
        columns: &[&ColumnPolicy],
        includes: &[IncludeNode<'_>],
        mut row: Map<String, Value>,
        included: bool,
        path: &str,
    ) -> Map<String, Value> {
        if let Some(Value::String(pk)) = row.get(&format!("{INTERNAL_PREFIX}pk")) {
            if self.subjects.len() < MAX_SUBJECTS {
                self.subjects.push(format!("{}:{pk}", model.name));
            }
        }
        let mut out = Map::with_capacity(columns.len() + includes.len());
        for c in columns {
            if let Some(v) = row.remove(&c.name) {
                if let Some(v) = self.value(c, v, included) {
                    out.insert(c.name.clone(), v);
                }
            }
        }
        for node in includes {
            let name = &node.relation.name;
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            let target_columns: Vec<&ColumnPolicy> = node.target.columns.iter().collect();
            let v = match row.remove(name) {
                Some(Value::Object(m)) => Value::Object(self.row(
                    node.target,
                    &target_columns,
                    &node.children,
                    m,
                    true,
                    &child_path,
                )),
                Some(Value::Array(items)) => {
                    let cap = usize::try_from(node.cap).unwrap_or(usize::MAX);
                    if items.len() > cap && !self.truncated.contains(&child_path) {
                        self.truncated.push(child_path.clone());
                    }
                    Value::Array(
                        items
                            .into_iter()
                            .take(cap)
                            .filter_map(|i| match i {
                                Value::Object(m) => Some(Value::Object(self.row(
                                    node.target,
                                    &target_columns,
                                    &node.children,
                                    m,
                                    true,
                                    &child_path,
                                ))),
                                _ => None,
                            })
                            .collect(),
                    )
                }
                _ => match node.relation.kind {
                    RelationKind::BelongsTo => Value::Null,
                    RelationKind::HasMany => Value::Array(Vec::new()),
                },
            };
            out.insert(name.clone(), v);
        }
        out
    }

    /// `{"email": "masked", "items.card_token": "hashed"}` for the columns this response redacts.
    pub(crate) fn describe(
        &self,
        columns: &[&ColumnPolicy],
        includes: &[IncludeNode<'_>],
        prefix: &str,
        out: &mut Map<String, Value>,
    ) {
        let included = !prefix.is_empty();
        if !(self.faults.has(Fault::MaskOff)
            || included && self.faults.has(Fault::IncludeUnredacted))
        {
            for c in columns {
                let word = match effective_action(c, self.faults) {
                    FieldAction::Mask => "masked",
                    FieldAction::Hash => "hashed",
                    FieldAction::Allow | FieldAction::Deny => continue,
                };
                out.insert(
                    format!("{prefix}{}", c.name),
                    Value::String(word.to_string()),
                );
            }
        }
        for n in includes {
            let cols: Vec<&ColumnPolicy> = super::compile::visible(n.target, self.faults);
            self.describe(
                &cols,
                &n.children,
                &format!("{prefix}{}.", n.relation.name),
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_keep_their_domain() {
        assert_eq!(
            mask("email", &json!("maria.lopez.u1@acme-canary.example")),
            json!("m***@acme-canary.example")
        );
        // Not an email after all: generic masking.
        assert_eq!(mask("email", &json!("no-at-sign-here")), json!("****re"));
    }

    #[test]
    fn phones_keep_their_last_digits() {
        assert_eq!(
            mask("phone", &json!("+1-555-101-5303")),
            json!("+*-***-***-5303")
        );
        assert_eq!(mask("mobile_phone", &json!("555 0123")), json!("*** **23"));
        assert_eq!(mask("phone", &json!("call me")), json!("****"));
    }

    #[test]
    fn other_values_keep_two_characters_or_nothing() {
        assert_eq!(mask("ssn", &json!("911-56-7219")), json!("****19"));
        assert_eq!(mask("pin", &json!("1234")), json!("****"));
        assert_eq!(mask("date_of_birth", &json!("1963-01-27")), json!("****27"));
        assert_eq!(mask("salary", &json!(123456789)), json!("****89"));
        assert_eq!(mask("x", &Value::Null), Value::Null);
    }

    #[test]
    fn masked_values_never_contain_the_original() {
        for v in [
            "olga.petrov.c1@acme-canary.example",
            "+1-555-101-5303",
            "911-56-7219",
            "sk_live_acme_customers_1_c59f3503f79ac03f26ca43dc",
        ] {
            for col in ["email", "phone", "ssn", "api_key"] {
                let m = mask(col, &json!(v));
                let m = m.as_str().unwrap();
                assert!(!m.contains(v), "{col}: {m}");
                assert!(
                    m.chars().count() <= v.chars().count().max(8) + 4,
                    "{col}: {m}"
                );
            }
        }
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let a = hash(&k1, &json!("911-56-7219"));
        assert_eq!(a, hash(&k1, &json!("911-56-7219")));
        assert_ne!(a, hash(&k2, &json!("911-56-7219")));
        assert_ne!(a, hash(&k1, &json!("911-56-7218")));
        let s = a.as_str().unwrap();
        assert!(s.starts_with("hmac:") && s.len() == 5 + 64, "{s}");
    }
}
