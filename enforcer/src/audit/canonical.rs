//! The audit chain's canonical form, computed in Rust exactly as the database computes it.
//!
//! The Postgres chain trigger (`fixtures/shop/50_audit.sql`, `preflight_audit.canonical_payload`)
//! defines the form; the JSONL sink and every verifier recompute it here, so a JSONL log and a
//! Postgres log of the same calls hash alike and a verifier never trusts the database's own
//! function:
//!
//! ```text
//! hash    = lower-hex( sha256( utf8( prev_hash || '|' || payload ) ) )
//! payload = 20 fields rendered as text (NULL renders as ''), joined by U+001F:
//!           id, at, trace_id, tenant_id, user_id, roles (joined by ','), tool,
//!           arguments (jsonb's own text), arguments_sha256, decision, error_code,
//!           rows_returned, rows_affected, duration_ms (float8 shortest text), reason,
//!           approval_id, approver, policy_hash, subjects (joined by ','), actor
//! ```
//!
//! The main type is [`ChainedRecord`], a record as stored: the gateway's [`AuditRecord`] plus the
//! fields the sink assigns (`id`, `at`, `actor`) and the chain (`prev_hash`, `hash`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::record::{AuditRecord, Decision};

/// The `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The field separator of the canonical payload (ASCII unit separator).
pub const FIELD_SEPARATOR: char = '\u{1f}';

/// One audit record as stored by a chained sink (Postgres row or JSONL line).
///
/// Fields mirror the `preflight_audit.audit_log` columns; the ones the table allows to be NULL are
/// `Option`s, so a row read back from Postgres and a line read back from a file have one shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainedRecord {
    /// The chain position, starting at 1, gapless.
    pub id: i64,
    /// UTC time in the canonical text form `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub at: String,
    pub trace_id: String,
    pub tenant_id: Option<String>,
    pub user_id: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    pub tool: String,
    pub arguments: Value,
    pub arguments_sha256: String,
    pub decision: String,
    pub error_code: Option<String>,
    pub rows_returned: Option<i64>,
    pub rows_affected: Option<i64>,
    pub duration_ms: Option<f64>,
    pub reason: Option<String>,
    pub approval_id: Option<String>,
    pub approver: Option<String>,
    pub policy_hash: String,
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Who appended it: the database's `session_user`, or the JSONL sink's configured actor.
    pub actor: String,
    pub prev_hash: String,
    pub hash: String,
}

impl ChainedRecord {
    /// Builds the stored form of `record` at chain position `id` after `prev_hash`, computing its
    /// hash. `record` should already be [`normalized`](normalize_record).
    pub fn seal(
        record: &AuditRecord,
        id: i64,
        at: String,
        actor: String,
        prev_hash: String,
    ) -> Self {
        let mut r = ChainedRecord {
            id,
            at,
            trace_id: record.trace_id.clone(),
            tenant_id: Some(record.tenant_id.clone()),
            user_id: Some(record.user_id.clone()),
            roles: Some(record.roles.clone()),
            tool: record.tool.clone(),
            arguments: record.arguments.clone(),
            arguments_sha256: record.arguments_sha256.clone(),
            decision: record.decision.as_str().to_string(),
            error_code: record.error_code.clone(),
            rows_returned: record.rows_returned,
            rows_affected: record.rows_affected,
            duration_ms: Some(record.duration_ms),
            reason: record.reason.clone(),
            approval_id: record.approval_id.clone(),
            approver: record.approver.clone(),
            policy_hash: record.policy_hash.clone(),
            subjects: record.subjects.clone(),
            actor,
            prev_hash,
            hash: String::new(),
        };
        r.hash = chain_hash(&r.prev_hash, &r.payload());
        r
    }

    /// The canonical payload of this record (see the module docs).
    pub fn payload(&self) -> String {
        let roles = self
            .roles
            .as_deref()
            .map(|r| r.join(","))
            .unwrap_or_default();
        let fields: [&str; 20] = [
            &self.id.to_string(),
            &self.at,
            &self.trace_id,
            self.tenant_id.as_deref().unwrap_or(""),
            self.user_id.as_deref().unwrap_or(""),
            &roles,
            &self.tool,
            &jsonb_text(&self.arguments),
            &self.arguments_sha256,
            &self.decision,
            self.error_code.as_deref().unwrap_or(""),
            &self
                .rows_returned
                .map(|v| v.to_string())
                .unwrap_or_default(),
            &self
                .rows_affected
                .map(|v| v.to_string())
                .unwrap_or_default(),
            &self.duration_ms.map(pg_float8_text).unwrap_or_default(),
            self.reason.as_deref().unwrap_or(""),
            self.approval_id.as_deref().unwrap_or(""),
            self.approver.as_deref().unwrap_or(""),
            &self.policy_hash,
            &self.subjects.join(","),
            &self.actor,
        ];
        join_payload(&fields)
    }

    /// Whether the stored hash matches the recomputed one.
    pub fn self_consistent(&self) -> bool {
        chain_hash(&self.prev_hash, &self.payload()) == self.hash
    }

    /// The decision as the enum, when it is one of the known values.
    pub fn decision(&self) -> Option<Decision> {
        match self.decision.as_str() {
            "allow" => Some(Decision::Allow),
            "deny" => Some(Decision::Deny),
            "error" => Some(Decision::Error),
            _ => None,
        }
    }
}

/// Joins rendered fields with the unit separator.
pub fn join_payload(fields: &[&str]) -> String {
    let len = fields.iter().map(|f| f.len() + 1).sum();
    let mut out = String::with_capacity(len);
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(FIELD_SEPARATOR);
        }
        out.push_str(f);
    }
    out
}

/// `lower-hex(sha256(prev_hash || '|' || payload))`.
pub fn chain_hash(prev_hash: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"|");
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

/// The chain hash as raw bytes (the verifier's hot path compares bytes, not hex).
pub fn chain_hash_bytes(prev_hash: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(b"|");
    h.update(payload);
    h.finalize().into()
}

/// SHA-256 (hex) of the raw arguments' canonical JSON: object keys sorted, no whitespace (AUD-7).
/// A forged or altered sanitized record cannot be made to match it without the raw arguments.
pub fn arguments_sha256(arguments: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(arguments).as_bytes()))
}

/// The canonical JSON text of a value: object keys sorted by their UTF-8 bytes at every level, no
/// whitespace. Two values that differ only in key order have the same canonical form.
pub fn canonical_json(value: &Value) -> String {
    let mut text = String::new();
    write_sorted_json(value, &mut text);
    text
}

fn write_sorted_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(*k) {
                    write_sorted_json(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Makes a record storable in both sinks alike: Postgres text cannot hold NUL, so every NUL in a
/// text field or a JSON string becomes U+FFFD (the sinks must agree byte for byte, and a NUL must
/// not turn an audit append into a failed call).
pub fn normalize_record(record: &AuditRecord) -> AuditRecord {
    fn clean(s: &str) -> String {
        if s.contains('\0') {
            s.replace('\0', "\u{fffd}")
        } else {
            s.to_string()
        }
    }
    fn clean_opt(s: &Option<String>) -> Option<String> {
        s.as_deref().map(clean)
    }
    fn clean_json(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(clean(s)),
            Value::Array(items) => Value::Array(items.iter().map(clean_json).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (clean(k), clean_json(v))).collect())
            }
            other => other.clone(),
        }
    }
    AuditRecord {
        trace_id: clean(&record.trace_id),
        tenant_id: clean(&record.tenant_id),
        user_id: clean(&record.user_id),
        roles: record.roles.iter().map(|r| clean(r)).collect(),
        tool: clean(&record.tool),
        arguments: clean_json(&record.arguments),
        arguments_sha256: clean(&record.arguments_sha256),
        decision: record.decision,
        error_code: clean_opt(&record.error_code),
        rows_returned: record.rows_returned,
        rows_affected: record.rows_affected,
        // Postgres float8 accepts NaN and infinities, but a duration is never one; clamp so the
        // two sinks render alike.
        duration_ms: if record.duration_ms.is_finite() && record.duration_ms >= 0.0 {
            record.duration_ms
        } else {
            0.0
        },
        reason: clean_opt(&record.reason),
        approval_id: clean_opt(&record.approval_id),
        approver: clean_opt(&record.approver),
        policy_hash: clean(&record.policy_hash),
        subjects: record.subjects.iter().map(|s| clean(s)).collect(),
    }
}

/// The canonical UTC time text, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (what the trigger's `to_char` gives).
pub fn format_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The current time truncated to microseconds (Postgres' resolution), in canonical text.
pub fn now_text() -> String {
    format_time(chrono::Utc::now())
}

/// jsonb's own text rendering (`jsonb_out`), so a JSONL record hashes like its Postgres twin:
/// object keys ordered by length then bytes (duplicates cannot occur in a `Value`), `", "` and
/// `": "` separators, numbers as Postgres `numeric` prints them, strings escaped like
/// `escape_json`.
pub fn jsonb_text(v: &Value) -> String {
    let mut out = String::new();
    write_jsonb(v, &mut out);
    out
}

fn write_jsonb(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&numeric_text(&n.to_string())),
        Value::String(s) => write_jsonb_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb_string(k, out);
                out.push_str(": ");
                if let Some(child) = map.get(*k) {
                    write_jsonb(child, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_jsonb_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Renders a JSON number's text the way Postgres `numeric_out` prints the value `numeric_in`
/// parsed from it: plain decimal notation, display scale = fraction digits minus exponent
/// (never below 0), no sign on zero.
pub fn numeric_text(json_number: &str) -> String {
    let (negative, rest) = match json_number.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, json_number),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(pos) => {
            let exp: i64 = rest[pos + 1..].parse().unwrap_or(0);
            (&rest[..pos], exp)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(pos) => (&mantissa[..pos], &mantissa[pos + 1..]),
        None => (mantissa, ""),
    };
    let digits: String = format!("{int_part}{frac_part}");
    // value = digits * 10^(exponent - frac_len)
    let point_shift = exponent - frac_part.len() as i64;
    let scale = (-point_shift).max(0) as usize;
    let mut all = digits;
    if point_shift > 0 {
        all.extend(std::iter::repeat_n('0', point_shift as usize));
    }
    // Now value = all * 10^-scale.
    if all.len() <= scale {
        let pad = scale + 1 - all.len();
        all = format!("{}{all}", "0".repeat(pad));
    }
    let split = all.len() - scale;
    let int_digits = all[..split].trim_start_matches('0');
    let int_digits = if int_digits.is_empty() {
        "0"
    } else {
        int_digits
    };
    let frac_digits = &all[split..];
    let is_zero = int_digits == "0" && frac_digits.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(int_digits);
    if scale > 0 {
        out.push('.');
        out.push_str(frac_digits);
    }
    out
}

/// Renders an `f64` as Postgres `float8out` does with `extra_float_digits >= 1`: the shortest
/// text that round-trips, in fixed notation when the decimal exponent is in `-4..15`, otherwise
/// as `d.ddde+XX` with at least two exponent digits.
pub fn pg_float8_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddddde<exp>`.
    let sci = format!("{:e}", v.abs());
    let (mant, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    if (-4..15).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float8_matches_postgres_rules() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1.25e20, "1.25e+20"),
            (12.345678, "12.345678"),
            (1e100, "1e+100"),
            (-2.5, "-2.5"),
            (0.30000000000000004, "0.30000000000000004"),
        ];
        for (v, want) in cases {
            assert_eq!(pg_float8_text(v), want, "{v}");
        }
    }

    #[test]
    fn numeric_matches_postgres_rules() {
        let cases = [
            ("1", "1"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("1.50", "1.50"),
            ("1.5e1", "15"),
            ("1.55e1", "15.5"),
            ("15e-1", "1.5"),
            ("1e20", "100000000000000000000"),
            ("1e-7", "0.0000001"),
            ("-12.5E+2", "-1250"),
            ("0.000", "0.000"),
            ("007", "7"),
        ];
        for (input, want) in cases {
            assert_eq!(numeric_text(input), want, "{input}");
        }
    }

    #[test]
    fn jsonb_text_orders_keys_like_postgres() {
        let v =
            json!({"bb": 1, "a": [1, 2.5, "x\ny"], "ccc": {"z": null, "yy": true}, "b": "q\"\\"});
        assert_eq!(
            jsonb_text(&v),
            r#"{"a": [1, 2.5, "x\ny"], "b": "q\"\\", "bb": 1, "ccc": {"z": null, "yy": true}}"#
        );
        assert_eq!(jsonb_text(&json!({})), "{}");
        assert_eq!(jsonb_text(&json!([])), "[]");
        assert_eq!(jsonb_text(&json!("\u{1}é")), "\"\\u0001é\"");
    }

    #[test]
    fn sealed_record_is_self_consistent_and_sensitive_to_every_field() {
        let rec = AuditRecord {
            trace_id: "t".into(),
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec!["support".into(), "admin".into()],
            tool: "db_get".into(),
            arguments: json!({"model": "orders", "id": 7}),
            arguments_sha256: arguments_sha256(&json!({"model": "orders", "id": 7})),
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 1.25,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec!["orders:7".into()],
        };
        let sealed = ChainedRecord::seal(&rec, 1, now_text(), "me".into(), GENESIS_HASH.into());
        assert!(sealed.self_consistent());
        let mut edited = sealed.clone();
        edited.rows_returned = Some(2);
        assert!(!edited.self_consistent());
        let mut edited = sealed.clone();
        edited.arguments = json!({"model": "orders", "id": 8});
        assert!(!edited.self_consistent());
        let line = serde_json::to_string(&sealed).unwrap();
        let back: ChainedRecord = serde_json::from_str(&line).unwrap();
        assert!(back.self_consistent());
    }

    #[test]
    fn arguments_hash_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
        assert_ne!(arguments_sha256(&a), arguments_sha256(&json!({"b": 2})));
    }
}
