//! Principals over HTTP come only from a verified bearer JWT: a valid token reads its own
//! tenant's row and not the other's; `alg: none`, a wrong key, a changed tenant claim, an expired
//! token, a missing claim and no token at all are refused with 401 before MCP, each with an
//! audit record, and no data comes back.

use base64::Engine as _;
use serde_json::json;

use crate::support::*;

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn only_verified_tokens_name_a_principal() {
    let db = preflight_probes::db::testing::database().await;
    let policy = shop_policy();
    let served = serve(&db, ServeSpec::new(policy.path())).await;
    let acme_order = an_order_of(&db, "acme").await;
    let globex_order = an_order_of(&db, "globex").await;

    // A valid token: the tenant comes from the token, and RLS plus the layer keep it there.
    let acme = client(&served.base, &token("acme", "alice"))
        .await
        .expect("a valid token opens a session");
    let own = call(
        &acme,
        "db_get",
        json!({"model": "orders", "id": acme_order}),
    )
    .await;
    assert!(own.is_ok(), "acme reads its own order: {own:?}");
    let foreign = call(
        &acme,
        "db_get",
        json!({"model": "orders", "id": globex_order}),
    )
    .await;
    assert_eq!(
        foreign.as_ref().err().and_then(|e| e["code"].as_str()),
        Some("not_found"),
        "acme cannot read globex's order: {foreign:?}"
    );
    let _ = acme.cancel().await;

    let good = token("acme", "alice");
    let mut parts = good.split('.');
    let (_h, payload, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let forged_tenant = {
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["tenant"] = json!("globex");
        format!(
            "{}.{}.{}",
            good.split('.').next().unwrap(),
            b64(&claims),
            sig
        )
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"tenant": "globex", "sub": "mallory", "exp": now() + 600}))
    );
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"tenant": "globex", "sub": "mallory", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-key"),
    )
    .unwrap();
    let expired = token_with(json!({"tenant": "globex", "sub": "bob", "exp": now() - 3600}));
    let no_tenant = token_with(json!({"sub": "bob", "exp": now() + 600}));
    let not_yet = token_with(
        json!({"tenant": "globex", "sub": "bob", "exp": now() + 7200, "nbf": now() + 3600}),
    );

    let cases: [(&str, Option<String>, &str); 7] = [
        ("no token", None, "token_missing"),
        ("alg none", Some(alg_none), "token_algorithm"),
        ("wrong key", Some(wrong_key), "token_signature"),
        (
            "changed tenant claim",
            Some(forged_tenant),
            "token_signature",
        ),
        ("expired", Some(expired), "token_expired"),
        ("missing tenant claim", Some(no_tenant), "token_claims"),
        ("not yet valid", Some(not_yet), "token_not_yet_valid"),
    ];
    for (what, tok, code) in cases {
        let before = refusals(&db, code).await;
        let header = tok.as_ref().map(|t| format!("Bearer {t}"));
        let resp = raw_initialize(&served.base, header.as_deref()).await;
        assert_eq!(resp.status().as_u16(), 401, "{what}: refused before MCP");
        assert!(resp.headers().contains_key("www-authenticate"), "{what}");
        let body: serde_json::Value = resp.json().await.expect("JSON body");
        assert_eq!(body["reason"], code, "{what}: {body}");
        assert!(
            !body.to_string().contains(KEY),
            "{what}: the key never appears in a reply"
        );
        assert_eq!(
            refusals(&db, code).await,
            before + 1,
            "{what}: one audit record"
        );
        // No session can be opened with it either, so no tool call can return data.
        if let Some(t) = tok {
            assert!(
                client(&served.base, &t).await.is_err(),
                "{what}: no session"
            );
        }
    }
    served.stop().await;
}
