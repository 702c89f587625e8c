//! A JSONL record read for verification only: [`LineRecord`] is parsed from its line in place,
//! its text fields borrowed from the line (copied only when a string holds a JSON escape), and
//! rendered straight into the canonical payload. Reading a line into a [`ChainedRecord`] instead
//! allocates some fifteen strings per record, which was most of a JSONL verify's cost.
//!
//! It accepts exactly the lines [`ChainedRecord`] accepts (same field names and types, the same
//! defaults for a missing `roles` or `subjects`, unknown fields ignored, a duplicate field
//! refused) and renders the payload through the same [`PayloadFields`], so a line verifies here
//! exactly when it would verify read the slow way (`fast_and_slow_paths_agree` below).
//!
//! [`ChainedRecord`]: crate::audit::canonical::ChainedRecord

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

use super::args::Json;
use crate::audit::canonical::PayloadFields;

/// A JSON string borrowed from the line when it has no escapes, else unescaped into a copy.
#[derive(Debug)]
pub(super) struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_string(V(std::marker::PhantomData))
    }
}

/// The name the verifier uses for a borrowed record line.
pub(super) type LineRecord<'a> = ChainedRecord<'a>;

/// One record line, borrowed: the fields of `canonical::ChainedRecord`, in its order and with
/// its serde attributes, and its name, which serde's error messages quote.
#[derive(Debug, Deserialize)]
pub(super) struct ChainedRecord<'a> {
    pub(super) id: i64,
    #[serde(borrow)]
    at: Text<'a>,
    #[serde(borrow)]
    trace_id: Text<'a>,
    #[serde(borrow)]
    tenant_id: Option<Text<'a>>,
    #[serde(borrow)]
    user_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    roles: Option<Vec<Text<'a>>>,
    #[serde(borrow)]
    tool: Text<'a>,
    /// A tool's sanitized arguments, borrowed from the line; renders what the slow path's
    /// `Value` renders (`verify::args`).
    #[serde(borrow)]
    arguments: Json<'a>,
    #[serde(borrow)]
    arguments_sha256: Text<'a>,
    #[serde(borrow)]
    decision: Text<'a>,
    #[serde(borrow)]
    error_code: Option<Text<'a>>,
    rows_returned: Option<i64>,
    rows_affected: Option<i64>,
    duration_ms: Option<f64>,
    #[serde(borrow)]
    reason: Option<Text<'a>>,
    #[serde(borrow)]
    approval_id: Option<Text<'a>>,
    #[serde(borrow)]
    approver: Option<Text<'a>>,
    #[serde(borrow)]
    policy_hash: Text<'a>,
    #[serde(default, borrow)]
    subjects: Vec<Text<'a>>,
    #[serde(borrow)]
    actor: Text<'a>,
    #[serde(borrow)]
    prev_hash: Text<'a>,
    #[serde(borrow)]
    hash: Text<'a>,
}

impl<'a> ChainedRecord<'a> {
    /// Parses one line (not a checkpoint line: the caller tells those apart first).
    pub(super) fn parse(line: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line)
    }

    pub(super) fn prev_hash(&self) -> &str {
        self.prev_hash.as_ref()
    }

    pub(super) fn hash(&self) -> &str {
        self.hash.as_ref()
    }

    /// Appends the canonical payload to `out`.
    pub(super) fn write_payload(&self, out: &mut String) {
        fn opt<'b>(t: &'b Option<Text<'_>>) -> Option<&'b str> {
            t.as_ref().map(AsRef::as_ref)
        }
        PayloadFields {
            id: self.id,
            at: self.at.as_ref(),
            trace_id: self.trace_id.as_ref(),
            tenant_id: opt(&self.tenant_id),
            user_id: opt(&self.user_id),
            roles: self.roles.as_deref(),
            tool: self.tool.as_ref(),
            arguments: &self.arguments,
            arguments_sha256: self.arguments_sha256.as_ref(),
            decision: self.decision.as_ref(),
            error_code: opt(&self.error_code),
            rows_returned: self.rows_returned,
            rows_affected: self.rows_affected,
            duration_ms: self.duration_ms,
            reason: opt(&self.reason),
            approval_id: opt(&self.approval_id),
            approver: opt(&self.approver),
            policy_hash: self.policy_hash.as_ref(),
            subjects: &self.subjects,
            actor: self.actor.as_ref(),
        }
        .write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::canonical::GENESIS_HASH;
    use crate::audit::jsonl::{parse_line, JsonlLine};
    use crate::audit::record::{AuditRecord, Decision};
    use serde_json::json;
    use serde_json::Value;

    /// What the slow path makes of a line: its payload, prev_hash and hash, or its error.
    fn slow(line: &str) -> Result<(String, String, String), String> {
        match parse_line(line).map_err(|e| e.to_string())? {
            JsonlLine::Record(r) => Ok((r.payload(), r.prev_hash, r.hash)),
            JsonlLine::Checkpoint(_) => Err("checkpoint".into()),
        }
    }

    fn fast(line: &str) -> Result<(String, String, String), String> {
        let r = LineRecord::parse(line).map_err(|e| e.to_string())?;
        let mut payload = String::new();
        r.write_payload(&mut payload);
        Ok((payload, r.prev_hash().into(), r.hash().into()))
    }

    fn sealed(rec: &AuditRecord) -> crate::audit::canonical::ChainedRecord {
        crate::audit::canonical::ChainedRecord::seal(
            rec,
            7,
            "2026-12-06T10:00:00.000001Z".into(),
            "actor \"q\"".into(),
            GENESIS_HASH.into(),
        )
    }

    fn base() -> AuditRecord {
        AuditRecord {
            trace_id: "t".into(),
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec!["support".into()],
            tool: "db_get".into(),
            arguments: json!({"model": "orders", "id": 7}),
            arguments_sha256: "h".into(),
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 0.25,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec!["customers:1".into()],
        }
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        let mut records = vec![base()];
        let mut r = base();
        r.trace_id = "tab\there \"quoted\" back\\slash \u{1} é 漢 \u{1F600}".into();
        r.reason = Some("line\nbreak \\u0041".into());
        r.roles = vec![];
        r.subjects = vec!["a\"b".into(), String::new()];
        r.arguments = json!({"z": [1, 2.5, -0.0, 1e300, "x\ny"], "bb": {"k": null, "a": true},
                             "a": 12345678901234567890u64, "é": -3});
        r.duration_ms = 1e-7;
        r.error_code = Some("e".into());
        r.rows_returned = None;
        r.rows_affected = Some(-4);
        r.approval_id = Some("ap".into());
        r.approver = Some("boss".into());
        records.push(r);
        let mut lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(&sealed(r)).unwrap())
            .collect();
        let full = lines[1].clone();
        let v: Value = serde_json::from_str(&full).unwrap();
        // Pretty-printed, keys reordered, an unknown field, nulls and missing defaults.
        lines.push(serde_json::to_string_pretty(&v).unwrap().replace('\n', " "));
        let mut reordered: Vec<(String, Value)> =
            v.as_object().unwrap().clone().into_iter().collect();
        reordered.reverse();
        reordered.push(("extra".into(), json!({"ignored": [1]})));
        let obj: serde_json::Map<String, Value> = reordered.into_iter().collect();
        lines.push(Value::Object(obj.clone()).to_string());
        for (field, value) in [
            ("roles", Value::Null),
            ("tenant_id", Value::Null),
            ("duration_ms", Value::Null),
            ("duration_ms", json!(3)),
            ("rows_returned", json!(2.5)),
            ("subjects", Value::Null),
            ("subjects", json!([1])),
            ("id", json!("7")),
            ("id", json!(1e3)),
            ("hash", json!(7)),
            ("arguments", json!([])),
        ] {
            let mut o = obj.clone();
            o.insert(field.into(), value);
            lines.push(Value::Object(o).to_string());
        }
        for field in ["roles", "subjects", "tenant_id", "arguments", "hash", "id"] {
            let mut o = obj.clone();
            o.remove(field);
            lines.push(Value::Object(o).to_string());
        }
        lines.push(full.replacen("{", "{\"id\":8,", 1));
        lines.push(full.replace("\"tool\":\"db_get\"", "\"tool\":\"db\\u005fget\""));
        lines.extend(
            [
                "",
                "{",
                "[]",
                "null",
                "7",
                "{}",
                &full[..full.len() - 1],
                &format!("{full} trailing"),
            ]
            .map(String::from),
        );
        let mut compared = 0;
        for line in &lines {
            let (s, f) = (slow(line), fast(line));
            match (&s, &f) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{line}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{line}"),
                _ => panic!("slow {s:?} but fast {f:?} for {line}"),
            }
            compared += 1;
        }
        assert_eq!(compared, lines.len());
        // The first records round-trip into self-consistent payloads on the fast path.
        for (r, line) in records.iter().zip(&lines) {
            let (payload, prev, hash) = fast(line).unwrap();
            assert_eq!(payload, sealed(r).payload());
            assert!(crate::audit::canonical::hash_matches(
                &prev, &payload, &hash
            ));
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let line = serde_json::to_string(&sealed(&base())).unwrap();
        let r = LineRecord::parse(&line).unwrap();
        assert!(matches!(r.trace_id.0, Cow::Borrowed(_)));
        let escaped = line.replace("\"tool\":\"db_get\"", "\"tool\":\"db\\u005fget\"");
        let r = LineRecord::parse(&escaped).unwrap();
        assert!(matches!(r.tool.0, Cow::Owned(_)));
        assert_eq!(r.tool.as_ref(), "db_get");
    }
}
