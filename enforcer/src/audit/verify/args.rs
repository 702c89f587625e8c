//! The `arguments` of a JSONL record line, borrowed from the line. [`Json`] accepts exactly what
//! `serde_json::Value` accepts and keeps the same numbers, but builds no ordered map (an
//! `IndexMap` hashed with SipHash per object was a visible share of a JSONL verify's CPU): an
//! object is its members in line order, and rendering sorts them as jsonb does, a later
//! duplicate key replacing an earlier one as in `Value`. It renders the same jsonb text as
//! `Value` (`renders_what_value_renders` below), so the hash input is unchanged.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::line::Text;
use crate::audit::canonical::JsonbText;
use crate::audit::pgtext::{numeric_text, write_jsonb_string};

/// A JSON value whose strings borrow from the line (copied only when they hold an escape).
#[derive(Debug)]
pub(super) enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in line order, repeated keys included (the last one is the member).
    Object(Vec<(Text<'a>, Json<'a>)>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Json<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json<'a>, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json<'a>, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json<'a>, E> {
                Ok(Json::Number(v.into()))
            }
            // As `Value` does: a float that is no JSON number becomes null.
            fn visit_f64<E>(self, v: f64) -> Result<Json<'a>, E> {
                Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Owned(v)))
            }
            fn visit_none<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Json<'a>, D2::Error> {
                Json::deserialize(d)
            }
            fn visit_unit<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'a>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'a>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(member) = map.next_entry::<Text<'a>, Json<'a>>()? {
                    members.push(member);
                }
                Ok(Json::Object(members))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl JsonbText for Json<'_> {
    /// jsonb's text form, as `pgtext::write_jsonb` renders a `Value`: keys shortest first, then
    /// bytewise; `", "` and `": "` separators; numbers as `numeric` prints them.
    fn write_jsonb(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number(n) => out.push_str(&numeric_text(&n.to_string())),
            Json::String(s) => write_jsonb_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_jsonb(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                let key = |i: usize| members[i].0.as_ref();
                let mut order: Vec<usize> = (0..members.len()).collect();
                // Stable: a repeated key's occurrences stay in line order, the last one last.
                order.sort_by(|a, b| {
                    let (a, b) = (key(*a), key(*b));
                    a.len()
                        .cmp(&b.len())
                        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                });
                out.push('{');
                let mut first = true;
                for (pos, &i) in order.iter().enumerate() {
                    if order.get(pos + 1).is_some_and(|&next| key(next) == key(i)) {
                        continue; // replaced by a later occurrence of the same key
                    }
                    if !first {
                        out.push_str(", ");
                    }
                    first = false;
                    write_jsonb_string(key(i), out);
                    out.push_str(": ");
                    members[i].1.write_jsonb(out);
                }
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn both(text: &str) -> (Result<String, String>, Result<String, String>) {
        let borrowed = serde_json::from_str::<Json>(text)
            .map(|j| {
                let mut out = String::new();
                j.write_jsonb(&mut out);
                out
            })
            .map_err(|e| e.to_string());
        let value = serde_json::from_str::<Value>(text)
            .map(|v| {
                let mut out = String::new();
                v.write_jsonb(&mut out);
                out
            })
            .map_err(|e| e.to_string());
        (borrowed, value)
    }

    #[test]
    fn renders_what_value_renders() {
        for text in [
            r#"{"model": "orders", "id": 12345}"#,
            r#"{"b": 1, "a": 2, "aa": 3, "B": 4, "": 5}"#,
            r#"{"k": 1, "k": 2, "j": [1, {"k": "x", "k": "y"}], "k": 3}"#,
            r#"{"where": [{"field": "created_at", "op": "gte", "value": "2024-01-01"}], "limit": 100}"#,
            r#"{"esc\"aped": "line\nbreak \u0001 \\ \u00e9 \ud83d\ude00", "tab": "\t"}"#,
            r#"[1, -0, 0.0, -0.0, 1.5, 1e3, 1E-7, 12345678901234567890, -9223372036854775808, 3.141592653589793]"#,
            r#"[1e308, 2.5e-308, 0.1, 100.000, 123456789012345678901234567890]"#,
            r#"{"nested": {"deeper": {"deepest": [[], {}, null, true, false]}}}"#,
            r#"{}"#,
            r#"[]"#,
            r#""just a string""#,
            r#"null"#,
            r#"{"unicode": "日本語", "ключ": "значение", "é": 1, "e": 2}"#,
        ] {
            let (borrowed, value) = both(text);
            assert!(value.is_ok(), "{text}: {value:?}");
            assert_eq!(borrowed, value, "{text}");
        }
    }

    #[test]
    fn refuses_what_value_refuses() {
        for text in [r#"{"a": }"#, r#"[1, 2"#, r#"{"a" 1}"#, "1e400", r#""\x""#] {
            let (borrowed, value) = both(text);
            assert!(value.is_err(), "{text}");
            assert_eq!(borrowed, value, "{text}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let line = r#"{"plain": "text", "escaped": "a\nb"}"#;
        let Json::Object(members) = serde_json::from_str::<Json>(line).unwrap() else {
            panic!("an object")
        };
        assert!(matches!(members[0].1, Json::String(Cow::Borrowed("text"))));
        assert!(matches!(&members[1].1, Json::String(Cow::Owned(s)) if s == "a\nb"));
    }
}
