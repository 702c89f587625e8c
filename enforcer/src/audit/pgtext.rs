//! Postgres' own text renderings, reproduced in Rust so that a record rendered here hashes like
//! its row rendered by the database: timestamps as the chain trigger's `to_char` writes them,
//! jsonb as `jsonb_out`, numeric as `numeric_out` and float8 as `float8out`.

use std::fmt::Write as _;

use serde_json::Value;

/// The canonical UTC time text, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (what the trigger's `to_char` gives).
pub fn format_time(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let nanos = at.nanosecond();
    if nanos >= 1_000_000_000 || !(0..=9999).contains(&at.year()) {
        // A leap second, or a year outside four digits: leave the edge cases to chrono.
        return at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        nanos / 1000
    )
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

pub(crate) fn write_jsonb(v: &Value, out: &mut String) {
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

/// A JSON string as `escape_json` writes it (jsonb's text rendering).
pub fn write_jsonb_string(s: &str, out: &mut String) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
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
    fn time_text_matches_strftime() {
        use chrono::TimeZone;
        for (secs, nanos) in [
            (0, 0),
            (1_709_251_199, 999_999_999),
            (1_709_251_199, 1_000),
            (4_102_444_800, 123_456_789),
        ] {
            let at = chrono::Utc.timestamp_opt(secs, nanos).unwrap();
            assert_eq!(
                format_time(at),
                at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
        assert_eq!(now_text().len(), "2024-01-01T00:00:00.000000Z".len());
    }
}
