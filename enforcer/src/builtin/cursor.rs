//! Pagination cursors: opaque, signed, and bound to who asked and what they asked.
//!
//! A cursor is `base64url(payload) "." base64url(HMAC-SHA256)`, where the payload carries the last
//! row's order-key values (keyset pagination: later pages cost the same as the first and never
//! skip or repeat rows when others insert) and the MAC covers a version tag, the tenant, the model,
//! the query's shape hash and the payload. A cursor edited by hand, minted for another tenant, or
//! replayed against a different query fails verification and is a `validation_error`.
//!
//! With the `CursorUnsigned` fault the gateway instead hands out and accepts bare offsets, the
//! forgeable design this module exists to avoid.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::gateway::{ErrorCode, ToolError};

use super::compile::Page;

const TAG: &[u8] = b"preflight.cursor.v1";

fn mac(key: &[u8; 32], tenant: &str, model: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    // Length-prefix every part so no two different tuples produce the same MAC input.
    for part in [
        TAG,
        tenant.as_bytes(),
        model.as_bytes(),
        shape.as_bytes(),
        payload,
    ] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// A signed cursor for the page after a row whose order-key values are `keys`.
pub(crate) fn sign(
    key: &[u8; 32],
    tenant: &str,
    model: &str,
    shape: &str,
    keys: &[Option<String>],
) -> String {
    let payload = serde_json::to_vec(&serde_json::json!({ "k": keys })).unwrap_or_default();
    let tag = mac(key, tenant, model, shape, &payload);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

fn invalid() -> ToolError {
    ToolError::new(
        ErrorCode::ValidationError,
        "`cursor`: the cursor is not valid for this query",
        "pass back next_cursor exactly as returned, with the same model, select, where, order_by and include; \
         or leave cursor out to start from the first page",
    )
    .with_details(serde_json::json!({"path": "cursor"}))
}

/// Verifies a cursor and returns where the page starts; `expected_keys` is the number of order
/// keys (primary key included) of this query.
pub(crate) fn verify(
    key: &[u8; 32],
    tenant: &str,
    model: &str,
    shape: &str,
    cursor: &str,
    expected_keys: usize,
) -> Result<Page, ToolError> {
    let (p, t) = cursor.split_once('.').ok_or_else(invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(t).map_err(|_| invalid())?;
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Err(invalid());
    };
    for part in [
        TAG,
        tenant.as_bytes(),
        model.as_bytes(),
        shape.as_bytes(),
        &payload,
    ] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    // Constant-time comparison.
    m.verify_slice(&tag).map_err(|_| invalid())?;
    let v: Value = serde_json::from_slice(&payload).map_err(|_| invalid())?;
    let keys = v.get("k").and_then(Value::as_array).ok_or_else(invalid)?;
    if keys.len() != expected_keys {
        return Err(invalid());
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match k {
            Value::Null => out.push(None),
            Value::String(s) if !s.contains('\0') => out.push(Some(s.clone())),
            _ => return Err(invalid()),
        }
    }
    Ok(Page::After(out))
}

/// `CursorUnsigned` fault: a bare offset.
pub(crate) fn unsigned(offset: u64) -> String {
    offset.to_string()
}

/// `CursorUnsigned` fault: any number is accepted as an offset.
pub(crate) fn parse_unsigned(cursor: &str) -> Result<Page, ToolError> {
    cursor
        .trim()
        .parse::<u64>()
        .map(Page::Offset)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 32] = [7u8; 32];

    #[test]
    fn round_trips() {
        let keys = vec![
            Some("2025-01-01 00:00:00+00".to_string()),
            None,
            Some("17".to_string()),
        ];
        let c = sign(&K, "acme", "orders", "shape", &keys);
        assert_eq!(
            verify(&K, "acme", "orders", "shape", &c, 3).unwrap(),
            Page::After(keys)
        );
    }

    #[test]
    fn refuses_other_tenants_queries_and_edits() {
        let c = sign(&K, "acme", "orders", "shape", &[Some("17".to_string())]);
        for (tenant, model, shape) in [
            ("globex", "orders", "shape"),
            ("acme", "customers", "shape"),
            ("acme", "orders", "other"),
        ] {
            let e = verify(&K, tenant, model, shape, &c, 1).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationError);
        }
        // Re-encode the payload with another key value but keep the tag.
        let (_, tag) = c.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(br#"{"k":["1"]}"#));
        assert!(verify(&K, "acme", "orders", "shape", &forged, 1).is_err());
        assert!(verify(&[8u8; 32], "acme", "orders", "shape", &c, 1).is_err());
        assert!(verify(&K, "acme", "orders", "shape", "100", 1).is_err());
        assert!(verify(&K, "acme", "orders", "shape", "", 1).is_err());
        assert!(verify(&K, "acme", "orders", "shape", &c, 2).is_err());
    }

    #[test]
    fn unsigned_offsets_only_under_the_fault() {
        assert_eq!(parse_unsigned("100").unwrap(), Page::Offset(100));
        assert!(parse_unsigned("abc").is_err());
        assert_eq!(unsigned(5), "5");
    }
}
