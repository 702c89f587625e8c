//! Sanitizing tool arguments before they are audited (AUD-7).
//!
//! A key name says little: an agent can put a card number under `note` or an API key in a
//! filter value. So [`sanitize_arguments`] decides by three things, never by key name alone:
//!
//! 1. **Field policy.** The arguments name a model (`model`, also nested, e.g. a dry run's inner
//!    write) and fields of it: data maps (`{"email": ...}`), filters (`{"field": "ssn", "value":
//!    ...}`), includes (which switch to the related model). Any value bound to a field whose
//!    action is `deny`, `mask` or `hash` — or to a field the policy does not know — is replaced.
//! 2. **Secret and PII value patterns**, anywhere (values and keys, whole or inside free text):
//!    JWTs, `sk_live_`/`pk_`/`rk_` keys, `tok_` card tokens, password hashes (`$argon2`, bcrypt,
//!    scrypt, pbkdf2), cloud and VCS tokens, bearer tokens, private-key blocks, long hex and
//!    base64 runs, emails, phone numbers, SSNs and Luhn-valid card numbers (strings or numbers).
//! 3. **Canary shape**: the seeded reference tails (`ACME-C1-19a276`) and `*-canary.example`
//!    addresses (the latter are emails and caught by 2 as well).
//!
//! A replaced value becomes `"[redacted:<kind>]"`; high-entropy secrets carry a short SHA-256
//! fingerprint (`[redacted:secret:3fa9…]`, 12 hex) so one leaked key can be traced across calls.
//! Low-entropy values (emails, phones, SSNs, card numbers, masked fields) never carry one: an
//! unkeyed hash of an SSN is reversible by brute force. The raw arguments survive only as their
//! SHA-256 in the audit record.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::policy::{FieldAction, ModelPolicy, Policy};

/// Returns `arguments` with every sensitive value replaced (see the module docs).
pub fn sanitize_arguments(policy: &Policy, tool: &str, arguments: &Value) -> Value {
    let _ = tool; // The structure, not the tool name, says which model a value belongs to.
    walk(policy, None, arguments)
}

/// The deliberately broken sanitizer behind [`crate::Fault::AuditSanitizeByKeyOnly`]: it redacts
/// only values whose key looks secret, so secrets under innocent keys leak into the audit log.
pub fn sanitize_arguments_by_key_only(arguments: &Value) -> Value {
    match arguments {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret_key = ["password", "secret", "token", "api_key"]
                        .iter()
                        .any(|s| lower.contains(s));
                    if secret_key {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), sanitize_arguments_by_key_only(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(sanitize_arguments_by_key_only).collect())
        }
        other => other.clone(),
    }
}

/// Replaces every secret-, PII- or canary-shaped part of free text (e.g. a write's `reason`).
pub fn sanitize_text(text: &str) -> String {
    let mut out = text.to_string();
    for p in PATTERNS.iter() {
        if !p.regex.is_match(&out) {
            continue;
        }
        out = p
            .regex
            .replace_all(&out, |caps: &regex::Captures<'_>| {
                let m = caps.get(0).map(|m| m.as_str()).unwrap_or("");
                if (p.accept)(m) {
                    token(p.kind, m, p.fingerprint)
                } else {
                    m.to_string()
                }
            })
            .into_owned();
    }
    out
}

/// Whether `text` holds anything [`sanitize_text`] would replace.
pub fn looks_sensitive(text: &str) -> bool {
    sanitize_text(text) != text
}

fn token(kind: &str, raw: &str, fingerprint: bool) -> String {
    if fingerprint {
        let fp = hex::encode(Sha256::digest(raw.as_bytes()));
        format!("[redacted:{kind}:{}]", &fp[..12])
    } else {
        format!("[redacted:{kind}]")
    }
}

fn field_token(action: Option<FieldAction>) -> Value {
    let kind = match action {
        Some(FieldAction::Deny) => "denied_field",
        Some(FieldAction::Mask) => "masked_field",
        Some(FieldAction::Hash) => "hashed_field",
        // Allow never reaches here; an unknown field's value is kept out as well.
        Some(FieldAction::Allow) | None => "unknown_field",
    };
    Value::String(format!("[redacted:{kind}]"))
}

/// Resolves `field` (or `relation.field`, any depth) against `model`.
fn field_action(policy: &Policy, model: &ModelPolicy, field: &str) -> Option<FieldAction> {
    match field.split_once('.') {
        None => model.action(field),
        Some((rel, rest)) => {
            let target = model.relations.get(rel)?;
            let target = policy.model(&target.target)?;
            field_action(policy, target, rest)
        }
    }
}

/// Tool parameters: at the level of a call (the root, or a dry run's inner `arguments`) these
/// keys are never field names, so a model with a field called `reason` does not swallow the
/// write's own `reason`.
const PARAMETERS: [&str; 17] = [
    "model",
    "select",
    "where",
    "order_by",
    "limit",
    "cursor",
    "include",
    "id",
    "data",
    "reason",
    "approval_id",
    "aggregates",
    "group_by",
    "tool",
    "arguments",
    "field",
    "op",
];

fn walk(policy: &Policy, model: Option<&ModelPolicy>, v: &Value) -> Value {
    match v {
        Value::Object(map) if map.contains_key("model") => walk_call(policy, model, map),
        Value::Object(map) => walk_object(policy, model, map),
        Value::Array(items) => Value::Array(items.iter().map(|i| walk(policy, model, i)).collect()),
        Value::String(s) => Value::String(sanitize_text(s)),
        Value::Number(n) => {
            let digits = n.to_string();
            if is_card_number(&digits) {
                Value::String(token("card_number", &digits, false))
            } else {
                v.clone()
            }
        }
        Value::Bool(_) | Value::Null => v.clone(),
    }
}

/// One call's arguments: parameters by name, field maps (`data`, object-form `where`) by the
/// model's field policy.
fn walk_call(policy: &Policy, model: Option<&ModelPolicy>, map: &Map<String, Value>) -> Value {
    let ctx = match map.get("model") {
        Some(Value::String(name)) => policy.model(name),
        _ => model,
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let value = match (k.as_str(), v) {
            ("data", Value::Object(fields)) | ("where", Value::Object(fields)) => {
                field_map(policy, ctx, fields)
            }
            ("arguments", Value::Object(inner)) => walk_call(policy, ctx, inner),
            (p, _) if PARAMETERS.contains(&p) => walk(policy, ctx, v),
            (other, _) => match ctx.and_then(|m| m.action(other)) {
                Some(FieldAction::Allow) | None => walk(policy, ctx, v),
                action => field_token(action),
            },
        };
        out.insert(sanitize_text(k), value);
    }
    Value::Object(out)
}

/// `{field: value}`: every value judged by its field's action; unknown fields are redacted.
fn field_map(policy: &Policy, model: Option<&ModelPolicy>, map: &Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let action = model.and_then(|m| field_action(policy, m, k));
        let value = match action {
            Some(FieldAction::Allow) => walk(policy, model, v),
            other => field_token(other),
        };
        out.insert(sanitize_text(k), value);
    }
    Value::Object(out)
}

fn walk_object(policy: &Policy, model: Option<&ModelPolicy>, map: &Map<String, Value>) -> Value {
    // An include naming a relation switches the field context for everything inside it.
    let mut ctx = model;
    if let (Some(m), Some(Value::String(rel))) = (model, map.get("relation")) {
        ctx = m
            .relations
            .get(rel)
            .and_then(|r| policy.model(&r.target))
            .or(ctx);
    }
    // A filter `{field, op, value}`: its value is judged by the field's action.
    let filter_action = match map.get("field") {
        Some(Value::String(field)) => Some(ctx.and_then(|m| field_action(policy, m, field))),
        _ => None,
    };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let key = sanitize_text(k);
        let value = if matches!(k.as_str(), "value" | "values" | "from" | "to")
            && filter_action.is_some()
        {
            match filter_action.flatten() {
                Some(FieldAction::Allow) => walk(policy, ctx, v),
                other => field_token(other),
            }
        } else if let Some(action) = ctx.and_then(|m| m.action(k)) {
            if action == FieldAction::Allow {
                walk(policy, ctx, v)
            } else {
                field_token(Some(action))
            }
        } else if let Some(rel) = ctx.and_then(|m| m.relations.get(k.as_str())) {
            // `include: {orders: {...}}`: the nested object is about the related model.
            walk(policy, policy.model(&rel.target), v)
        } else {
            walk(policy, ctx, v)
        };
        out.insert(key, value);
    }
    Value::Object(out)
}

struct Pattern {
    kind: &'static str,
    regex: Regex,
    /// Extra check on a match (Luhn for cards, character mix for base64).
    accept: fn(&str) -> bool,
    /// Whether the token carries a fingerprint (only for high-entropy secrets).
    fingerprint: bool,
}

fn always(_: &str) -> bool {
    true
}

fn mixed_token(s: &str) -> bool {
    // UUIDs (trace ids, approval ids) are identifiers, not secrets.
    static UUID: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
            .unwrap_or_else(|e| panic!("bad uuid pattern: {e}"))
    });
    if UUID.is_match(s) {
        return false;
    }
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let letters = s.bytes().filter(u8::is_ascii_alphabetic).count();
    digits >= 2 && letters >= 2
}

fn luhn_digits(s: &str) -> bool {
    is_card_number(s)
}

/// 13–19 digits (separators allowed) passing the Luhn check.
pub fn is_card_number(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    if s.chars()
        .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return false;
    }
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut d = *d;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn pattern(kind: &'static str, re: &str, accept: fn(&str) -> bool, fingerprint: bool) -> Pattern {
    Pattern {
        kind,
        // The patterns are constants; a typo is caught by the unit tests below.
        regex: Regex::new(re).unwrap_or_else(|e| panic!("bad built-in pattern {kind}: {e}")),
        accept,
        fingerprint,
    }
}

/// Ordered: specific shapes first, so a JWT is not half-eaten by the base64 rule.
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    vec![
        pattern(
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
            always,
            true,
        ),
        pattern(
            "jwt",
            r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            always,
            true,
        ),
        pattern(
            "password_hash",
            r"\$(argon2(id|i|d)|2[abxy]|scrypt|pbkdf2[-_a-z0-9]*|[156])\$[^\s\x22'\]\[,;]+",
            always,
            true,
        ),
        pattern(
            "secret",
            r"\b(sk|pk|rk)_(live|test)_[A-Za-z0-9_]{6,}",
            always,
            true,
        ),
        pattern("card_token", r"\btok_[A-Za-z0-9_]{6,}", always, true),
        pattern(
            "secret",
            r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{30,}",
            always,
            true,
        ),
        pattern(
            "bearer_token",
            r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/-]{16,}=*",
            always,
            true,
        ),
        pattern(
            "credential_url",
            r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\x22']+:[^\s@/\x22']+@",
            always,
            false,
        ),
        pattern(
            "email",
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            always,
            false,
        ),
        pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b", always, false),
        pattern(
            "card_number",
            r"\b\d(?:[ -]?\d){12,18}\b",
            luhn_digits,
            false,
        ),
        pattern(
            "phone",
            r"\+\d{1,3}[\s.-]?\(?\d{1,4}\)?([\s.-]?\d{2,4}){2,4}\b|\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
            always,
            false,
        ),
        pattern(
            "canary_ref",
            r"\b[A-Z]{2,12}-[A-Z]{1,3}\d{1,4}-[0-9a-f]{6}\b",
            always,
            false,
        ),
        pattern("hex_token", r"\b[0-9a-fA-F]{32,}\b", always, true),
        pattern(
            "base64_token",
            r"[A-Za-z0-9+/_-]{32,}={0,2}",
            mixed_token,
            true,
        ),
    ]
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct ColumnPolicyForTest;
    impl ColumnPolicyForTest {
        fn hashed(name: &str) -> crate::policy::ColumnPolicy {
            crate::policy::ColumnPolicy {
                name: name.into(),
                pg_type: "text".into(),
                nullable: true,
                action: FieldAction::Hash,
                source: crate::policy::RuleSource::Default,
                reason: None,
                indexed: false,
            }
        }
    }

    #[test]
    fn patterns_compile_and_catch_each_shape() {
        let cases = [
            ("sk_live_acme_customers_3_c59f3503f79ac03f26ca43dc", "secret"),
            ("tok_acme_pm1_e58c457a609275f73334", "card_token"),
            (
                "$argon2id$v=19$m=65536,t=3,p=4$YWNtZTp1c2Vyczox$e4bmO95oJQ5AYWC9FQEKaJcbra94yk7pj0b0KMXnOoc",
                "password_hash",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            ("maria.lopez.u1@acme-canary.example", "email"),
            ("+1-555-101-5303", "phone"),
            ("911-56-7219", "ssn"),
            ("4111 1111 1111 1111", "card_number"),
            ("Account ref ACME-C1-19a276.", "canary_ref"),
            ("0123456789abcdef0123456789abcdef01234567", "hex_token"),
            ("AKIAIOSFODNN7EXAMPLE", "secret"),
            ("postgres://agent:hunter2@db:5432/shop", "credential_url"),
        ];
        for (raw, kind) in cases {
            let out = sanitize_text(&format!("note: {raw} end"));
            assert!(!out.contains(raw), "{raw} survived: {out}");
            assert!(out.contains(&format!("[redacted:{kind}")), "{raw} -> {out}");
        }
    }

    #[test]
    fn ordinary_values_survive() {
        for s in [
            "refund for a damaged parcel",
            "2025-03-01",
            "2500.00",
            "order 12345",
            "pending",
            "550e8400-e29b-41d4-a716-446655440000",
            "acme",
        ] {
            assert_eq!(sanitize_text(s), s);
        }
        // A Luhn-invalid 16-digit number is not a card.
        assert_eq!(sanitize_text("1234567812345678"), "1234567812345678");
    }

    #[test]
    fn card_numbers_as_json_numbers_are_caught() {
        let p = crate::audit::testutil::tiny_policy();
        let out = sanitize_arguments(&p, "db_create", &json!({"note": 4111111111111111u64}));
        assert_eq!(out["note"], "[redacted:card_number]");
    }

    #[test]
    fn the_write_reason_parameter_is_not_a_field() {
        let mut p = crate::audit::testutil::tiny_policy();
        let orders = p.models.get_mut("orders").unwrap();
        orders.columns.push(ColumnPolicyForTest::hashed("reason"));
        let args = json!({"model": "orders", "data": {"reason": "customer said so"},
                          "reason": "refund requested by the customer"});
        let out = sanitize_arguments(&p, "db_create", &args);
        assert_eq!(out["reason"], "refund requested by the customer");
        assert_eq!(out["data"]["reason"], "[redacted:hashed_field]");
        let out = sanitize_arguments(
            &p,
            "db_query",
            &json!({"model": "orders", "where": {"shipping_address": "1 Main St", "status": "paid"}}),
        );
        assert_eq!(out["where"]["shipping_address"], "[redacted:denied_field]");
        assert_eq!(out["where"]["status"], "paid");
    }

    #[test]
    fn field_policy_applies_in_data_filters_and_nested_models() {
        let p = crate::audit::testutil::tiny_policy();
        let args = json!({
            "model": "customers",
            "data": {"name": "Olga Petrov", "phone": "555", "status": "ok"},
            "where": [{"field": "ssn", "op": "eq", "value": "123"},
                      {"field": "status", "op": "eq", "value": "ok"},
                      {"field": "nonexistent", "op": "eq", "value": "x"}],
            "arguments": {"model": "orders", "data": {"shipping_address": "1 Main St"}},
        });
        let out = sanitize_arguments(&p, "db_update", &args);
        assert_eq!(out["data"]["name"], "[redacted:masked_field]");
        assert_eq!(out["data"]["phone"], "[redacted:masked_field]");
        assert_eq!(out["data"]["status"], "ok");
        assert_eq!(out["where"][0]["value"], "[redacted:denied_field]");
        assert_eq!(out["where"][1]["value"], "ok");
        assert_eq!(out["where"][2]["value"], "[redacted:unknown_field]");
        assert_eq!(
            out["arguments"]["data"]["shipping_address"],
            "[redacted:denied_field]"
        );
    }

    #[test]
    fn secrets_under_innocent_keys_are_caught_but_not_by_key_only() {
        let p = crate::audit::testutil::tiny_policy();
        let args = json!({"model": "orders", "status": "sk_live_abcdef123456789"});
        let good = sanitize_arguments(&p, "db_update", &args);
        assert!(!good.to_string().contains("sk_live_abcdef123456789"));
        let bad = sanitize_arguments_by_key_only(&args);
        assert!(bad.to_string().contains("sk_live_abcdef123456789"));
    }
}
