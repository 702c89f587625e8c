//! The audit chain's canonical form, computed in Rust exactly as the database computes it.
//!
//! The Postgres chain trigger (`fixtures/shop/50_audit.sql`, `preflight_audit.canonical_payload`)
//! defines the form; the JSONL sink and every verifier recompute it here, so a JSONL log and a
//! Postgres log of the same calls hash alike and a verifier never trusts the database's own
//! function:
//!
//! ```text
//! hash    = lower-hex( sha256( utf8( prev_hash || '|' || payload ) ) )
//! payload = jsonb_build_array(20 fields)::text, i.e. one JSON array in jsonb's text rendering:
//!           id, at, trace_id, tenant_id, user_id, roles, tool, arguments, arguments_sha256,
//!           decision, error_code, rows_returned, rows_affected, duration_ms, reason,
//!           approval_id, approver, policy_hash, subjects, actor
//! ```
//!
//! Every field is a JSON value of its own: text as a JSON string (escaped, so no text can reach
//! into the next field), ids and row counts as numbers, `duration_ms` as the string of its
//! float8 text, `arguments` as the JSON value itself, `roles` and `subjects` as arrays of
//! strings, and NULL as `null`, distinct from `""` and from `[]`. Two records with different
//! fields therefore never have the same payload: moving text between `reason` and
//! `approval_id`, splitting one role in two, or turning NULL into `''` all change the hash. (The
//! earlier form joined text fields with U+001F and lists with `,`, unescaped, and rendered NULL
//! like `''`, so each of those edits kept every hash valid.)
//!
//! The main type is [`ChainedRecord`], a record as stored: the gateway's [`AuditRecord`] plus the
//! fields the sink assigns (`id`, `at`, `actor`) and the chain (`prev_hash`, `hash`).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pgtext::write_jsonb;
pub use super::pgtext::{
    format_time, jsonb_text, now_text, numeric_text, pg_float8_text, write_jsonb_string,
};
use super::record::{AuditRecord, Decision};

/// The `prev_hash` of the first record of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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
        let mut out = String::with_capacity(512);
        self.write_payload(&mut out);
        out
    }

    /// Appends the canonical payload to `out`.
    pub fn write_payload(&self, out: &mut String) {
        PayloadFields {
            id: self.id,
            at: &self.at,
            trace_id: &self.trace_id,
            tenant_id: self.tenant_id.as_deref(),
            user_id: self.user_id.as_deref(),
            roles: self.roles.as_deref(),
            tool: &self.tool,
            arguments: &self.arguments,
            arguments_sha256: &self.arguments_sha256,
            decision: &self.decision,
            error_code: self.error_code.as_deref(),
            rows_returned: self.rows_returned,
            rows_affected: self.rows_affected,
            duration_ms: self.duration_ms,
            reason: self.reason.as_deref(),
            approval_id: self.approval_id.as_deref(),
            approver: self.approver.as_deref(),
            policy_hash: &self.policy_hash,
            subjects: &self.subjects,
            actor: &self.actor,
        }
        .write(out);
    }

    /// Whether the stored hash matches the recomputed one.
    pub fn self_consistent(&self) -> bool {
        hash_matches(&self.prev_hash, &self.payload(), &self.hash)
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

/// A JSON value the payload renders in jsonb's text form: a `serde_json::Value`, or the JSONL
/// verifier's value borrowed from its line (`verify::args`), which must render the same text.
pub trait JsonbText {
    fn write_jsonb(&self, out: &mut String);
}

impl JsonbText for Value {
    fn write_jsonb(&self, out: &mut String) {
        write_jsonb(self, out);
    }
}

/// The twenty payload fields of one record, borrowed: the one place that orders and renders
/// them. [`ChainedRecord::write_payload`] fills it from an owned record, the JSONL verifier from
/// a line parsed in place (its strings borrowed from the line, `S` its string type).
pub struct PayloadFields<'a, S: AsRef<str>, A: JsonbText + ?Sized = Value> {
    pub id: i64,
    pub at: &'a str,
    pub trace_id: &'a str,
    pub tenant_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub roles: Option<&'a [S]>,
    pub tool: &'a str,
    pub arguments: &'a A,
    pub arguments_sha256: &'a str,
    pub decision: &'a str,
    pub error_code: Option<&'a str>,
    pub rows_returned: Option<i64>,
    pub rows_affected: Option<i64>,
    pub duration_ms: Option<f64>,
    pub reason: Option<&'a str>,
    pub approval_id: Option<&'a str>,
    pub approver: Option<&'a str>,
    pub policy_hash: &'a str,
    pub subjects: &'a [S],
    pub actor: &'a str,
}

impl<S: AsRef<str>, A: JsonbText + ?Sized> PayloadFields<'_, S, A> {
    /// Appends the canonical payload (see the module docs) to `out`: one buffer, no
    /// intermediate strings (the verifier's hot path).
    pub fn write(&self, out: &mut String) {
        let mut p = PayloadWriter::new(out);
        p.number(Some(self.id));
        p.text(Some(self.at));
        p.text(Some(self.trace_id));
        p.text(self.tenant_id);
        p.text(self.user_id);
        p.list(self.roles);
        p.text(Some(self.tool));
        self.arguments.write_jsonb(p.field());
        p.text(Some(self.arguments_sha256));
        p.text(Some(self.decision));
        p.text(self.error_code);
        p.number(self.rows_returned);
        p.number(self.rows_affected);
        match self.duration_ms {
            Some(v) => p.text(Some(&pg_float8_text(v))),
            None => p.text(None),
        }
        p.text(self.reason);
        p.text(self.approval_id);
        p.text(self.approver);
        p.text(Some(self.policy_hash));
        p.list(Some(self.subjects));
        p.text(Some(self.actor));
        p.finish();
    }
}

/// Builds a payload field by field: `[`, the fields separated by `", "` (jsonb's array
/// separator), `]`. Shared by [`ChainedRecord::write_payload`] and the Postgres verifier, which
/// renders the fields of a `COPY` row with it.
pub struct PayloadWriter<'a> {
    out: &'a mut String,
    fields: usize,
}

impl<'a> PayloadWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('[');
        Self { out, fields: 0 }
    }

    /// Starts the next field and hands out the buffer to write its JSON into.
    pub fn field(&mut self) -> &mut String {
        if self.fields > 0 {
            self.out.push_str(", ");
        }
        self.fields += 1;
        self.out
    }

    /// A text field: a JSON string, or `null`.
    pub fn text(&mut self, v: Option<&str>) {
        let out = self.field();
        match v {
            Some(s) => write_jsonb_string(s, out),
            None => out.push_str("null"),
        }
    }

    /// An integer field: a JSON number, or `null`.
    pub fn number(&mut self, v: Option<i64>) {
        let out = self.field();
        match v {
            Some(n) => {
                let _ = write!(out, "{n}");
            }
            None => out.push_str("null"),
        }
    }

    /// A list of text: a JSON array of strings, or `null`.
    pub fn list<S: AsRef<str>>(&mut self, items: Option<&[S]>) {
        let out = self.field();
        match items {
            None => out.push_str("null"),
            Some(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_jsonb_string(item.as_ref(), out);
                }
                out.push(']');
            }
        }
    }

    /// A field already rendered as jsonb text (a `COPY` of `arguments::text` or
    /// `to_jsonb(roles)::text`), or `null`.
    pub fn raw(&mut self, json_text: Option<&str>) {
        self.field().push_str(json_text.unwrap_or("null"));
    }

    pub fn finish(self) {
        self.out.push(']');
    }
}

/// The payload with its first field, the id, replaced by `id` (the verifier's test of whether
/// a record was renumbered); `None` when `payload` does not start with an id.
pub fn payload_with_id(payload: &str, id: i64) -> Option<String> {
    let rest = payload.strip_prefix('[')?;
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '-'))?;
    Some(format!("[{id}{}", &rest[end..]))
}

/// `lower-hex(sha256(prev_hash || '|' || payload))`.
pub fn chain_hash(prev_hash: &str, payload: &str) -> String {
    hex::encode(chain_hash_bytes(prev_hash.as_bytes(), payload.as_bytes()))
}

/// Whether `hash` is exactly `chain_hash(prev_hash, payload)` (lower-case hex), without
/// allocating: the verifier calls it once per record.
pub fn hash_matches(prev_hash: &str, payload: &str, hash: &str) -> bool {
    let digest = chain_hash_bytes(prev_hash.as_bytes(), payload.as_bytes());
    let mut hex_text = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    hex::encode_to_slice(digest, &mut hex_text).is_ok() && hex_text[..] == *hash.as_bytes()
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

/// [`normalize_record`] without the copy when there is nothing to change (the usual case: a
/// record with no NUL anywhere and a finite, non-negative duration).
pub fn normalized(record: &AuditRecord) -> Cow<'_, AuditRecord> {
    fn nul(s: &str) -> bool {
        s.contains('\0')
    }
    fn nul_opt(s: &Option<String>) -> bool {
        s.as_deref().is_some_and(nul)
    }
    fn nul_json(v: &Value) -> bool {
        match v {
            Value::String(s) => nul(s),
            Value::Array(items) => items.iter().any(nul_json),
            Value::Object(map) => map.iter().any(|(k, v)| nul(k) || nul_json(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        }
    }
    let r = record;
    let clean = r.duration_ms.is_finite()
        && r.duration_ms >= 0.0
        && ![
            &r.trace_id,
            &r.tenant_id,
            &r.user_id,
            &r.tool,
            &r.arguments_sha256,
            &r.policy_hash,
        ]
        .into_iter()
        .any(|s| nul(s))
        && ![&r.error_code, &r.reason, &r.approval_id, &r.approver]
            .into_iter()
            .any(nul_opt)
        && !r.roles.iter().chain(&r.subjects).any(|s| nul(s))
        && !nul_json(&r.arguments);
    if clean {
        Cow::Borrowed(record)
    } else {
        Cow::Owned(normalize_record(record))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn sample() -> AuditRecord {
        AuditRecord {
            trace_id: "t".into(),
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec!["support".into(), "admin".into()],
            tool: "db_update".into(),
            arguments: json!({"model": "orders", "id": 7, "set": {"status": "x"}}),
            arguments_sha256: "h".into(),
            decision: Decision::Deny,
            error_code: Some("reason_required".into()),
            rows_returned: None,
            rows_affected: Some(-3),
            duration_ms: 0.00001,
            reason: Some("because".into()),
            approval_id: Some("ap-1".into()),
            approver: None,
            policy_hash: "p".into(),
            subjects: vec!["orders:7".into(), "customers:2".into()],
        }
    }

    fn sealed(rec: &AuditRecord) -> ChainedRecord {
        ChainedRecord::seal(
            rec,
            12,
            "2024-02-29T23:59:59.000001Z".into(),
            "me".into(),
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn payload_is_one_json_array_of_the_twenty_fields() {
        let sealed = sealed(&sample());
        let want = concat!(
            r#"[12, "2024-02-29T23:59:59.000001Z", "t", "acme", "u", ["support", "admin"], "#,
            r#""db_update", {"id": 7, "set": {"status": "x"}, "model": "orders"}, "h", "deny", "#,
            r#""reason_required", null, -3, "1e-05", "because", "ap-1", null, "p", "#,
            r#"["orders:7", "customers:2"], "me"]"#
        );
        assert_eq!(sealed.payload(), want);
        // The payload is JSON: 20 fields, NULL as null.
        let parsed: Vec<Value> = serde_json::from_str(&sealed.payload()).unwrap();
        assert_eq!(parsed.len(), 20);
        let mut bare = sealed.clone();
        bare.tenant_id = None;
        bare.roles = None;
        bare.duration_ms = None;
        bare.subjects.clear();
        let parsed: Vec<Value> = serde_json::from_str(&bare.payload()).unwrap();
        assert_eq!(parsed[3], Value::Null);
        assert_eq!(parsed[5], Value::Null);
        assert_eq!(parsed[13], Value::Null);
        assert_eq!(parsed[18], json!([]));
        assert_eq!(payload_with_id(&sealed.payload(), 7).unwrap()[..4], *"[7, ");
        assert_eq!(payload_with_id("x", 7), None);
    }

    /// Edits that kept every hash valid under the old form (fields joined by U+001F, lists by
    /// `,`, NULL rendered as ''): each must now change the payload.
    #[test]
    fn edits_that_collided_before_change_the_payload() {
        let mut base = sample();
        base.reason = Some("refund\u{1f}ap-9".into());
        base.approval_id = None;
        let mut shifted = base.clone();
        shifted.reason = Some("refund".into());
        shifted.approval_id = Some("ap-9".into());
        let mut roles_split = sample();
        roles_split.roles = vec!["support".into(), "ad".into(), "min".into()];
        let mut roles_joined = sample();
        roles_joined.roles = vec!["support,ad".into(), "min".into()];
        let mut subjects_joined = sample();
        subjects_joined.subjects = vec!["orders:7,customers:2".into()];
        let mut empty_reason = sample();
        empty_reason.reason = Some(String::new());
        let mut null_reason = sample();
        null_reason.reason = None;
        let mut one_empty_role = sample();
        one_empty_role.roles = vec![String::new()];
        let mut no_roles = sample();
        no_roles.roles = vec![];
        let pairs = [
            ("text moved between reason and approval_id", &base, &shifted),
            ("a role split in two", &roles_split, &roles_joined),
            ("a subject list joined", &sample(), &subjects_joined),
            ("NULL and ''", &null_reason, &empty_reason),
            ("[] and ['']", &no_roles, &one_empty_role),
        ];
        for (what, a, b) in pairs {
            let (a, b) = (sealed(a), sealed(b));
            assert_ne!(a.payload(), b.payload(), "{what}");
            assert_ne!(a.hash, b.hash, "{what}");
        }
        // A NULL list and an empty one differ too (Postgres rows can hold either).
        let mut null_roles = sealed(&sample());
        null_roles.roles = None;
        let mut empty_roles = null_roles.clone();
        empty_roles.roles = Some(vec![]);
        assert_ne!(null_roles.payload(), empty_roles.payload());
    }

    #[test]
    fn hash_matches_only_the_exact_lower_case_hash() {
        let h = chain_hash(GENESIS_HASH, "payload");
        assert!(hash_matches(GENESIS_HASH, "payload", &h));
        assert!(!hash_matches(GENESIS_HASH, "payload!", &h));
        assert!(!hash_matches(GENESIS_HASH, "payload", &h.to_uppercase()));
        assert!(!hash_matches(GENESIS_HASH, "payload", &h[..63]));
        assert!(!hash_matches(GENESIS_HASH, "payload", ""));
    }

    #[test]
    fn normalized_borrows_a_clean_record_and_cleans_the_rest() {
        let clean = AuditRecord {
            trace_id: "t".into(),
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec![],
            tool: "db_get".into(),
            arguments: json!({"a": ["x", {"b": "y"}]}),
            arguments_sha256: "h".into(),
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 1.0,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec![],
        };
        assert!(matches!(normalized(&clean), Cow::Borrowed(_)));
        let mut dirty = clean.clone();
        dirty.arguments = json!({"a": ["x", {"b\0": "y"}]});
        let mut nul_reason = clean.clone();
        nul_reason.reason = Some("r\0".into());
        let mut nan = clean.clone();
        nan.duration_ms = f64::NAN;
        let mut nul_subject = clean.clone();
        nul_subject.subjects = vec!["c:\0".into()];
        for r in [dirty, nul_reason, nan, nul_subject] {
            let n = normalized(&r);
            assert!(matches!(n, Cow::Owned(_)), "{r:?}");
            assert_eq!(*n, normalize_record(&r));
        }
    }

    #[test]
    fn arguments_hash_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":3,"y":2},"b":1}"#).unwrap();
        assert_eq!(arguments_sha256(&a), arguments_sha256(&b));
        assert_ne!(arguments_sha256(&a), arguments_sha256(&json!({"b": 2})));
    }
}
