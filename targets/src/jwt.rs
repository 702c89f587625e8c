//! Minting the bearer token of one principal ([`mint`]) from the profile's `principal.jwt:`
//! section, through the `jsonwebtoken` crate. The key and the token are secrets: neither is ever
//! put into an error message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use preflight_contract::Principal;
use serde_json::{json, Map, Value};

use crate::profile::{Jwt, JwtAlg, JwtKey};

fn algorithm(alg: JwtAlg) -> Algorithm {
    match alg {
        JwtAlg::Hs256 => Algorithm::HS256,
        JwtAlg::Rs256 => Algorithm::RS256,
        JwtAlg::Es256 => Algorithm::ES256,
    }
}

fn encoding_key(alg: JwtAlg, key: &JwtKey) -> Result<EncodingKey, String> {
    match alg {
        JwtAlg::Hs256 => Ok(EncodingKey::from_secret(&key.bytes)),
        JwtAlg::Rs256 => EncodingKey::from_rsa_pem(&key.bytes)
            .map_err(|e| format!("not an RSA private key in PEM form ({e})")),
        JwtAlg::Es256 => EncodingKey::from_ec_pem(&key.bytes)
            .map_err(|e| format!("not a P-256 private key in PEM form ({e})")),
    }
}

/// Whether `key` can sign with `alg` (a test signature, thrown away).
pub(crate) fn check_key(alg: JwtAlg, key: &JwtKey) -> Result<(), String> {
    let k = encoding_key(alg, key)?;
    jsonwebtoken::encode(&Header::new(algorithm(alg)), &json!({"check": true}), &k)
        .map(|_| ())
        .map_err(|e| format!("signing failed ({e})"))
}

/// The claims of `who`'s token, issued `now`.
pub(crate) fn claims(jwt: &Jwt, who: &Principal, now: Duration) -> Value {
    let mut c = Map::new();
    c.insert(jwt.tenant_claim.clone(), json!(who.tenant));
    c.insert(jwt.user_claim.clone(), json!(who.user));
    if let Some(r) = &jwt.roles_claim {
        c.insert(r.clone(), json!(who.roles));
    }
    if let Some(iss) = &jwt.issuer {
        c.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &jwt.audience {
        c.insert("aud".into(), json!(aud));
    }
    c.insert("iat".into(), json!(now.as_secs()));
    c.insert("exp".into(), json!((now + jwt.ttl).as_secs()));
    Value::Object(c)
}

/// A signed token for `who`, valid from now for the profile's `ttl`.
pub(crate) fn mint(jwt: &Jwt, who: &Principal) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let key = encoding_key(jwt.alg, &jwt.key)?;
    jsonwebtoken::encode(
        &Header::new(algorithm(jwt.alg)),
        &claims(jwt, who, now),
        &key,
    )
    .map_err(|e| format!("cannot sign a token with the {} ({e})", jwt.key.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn profile_jwt(secret: &str) -> Jwt {
        Jwt {
            alg: JwtAlg::Hs256,
            key: JwtKey {
                bytes: secret.as_bytes().to_vec(),
                source: "key".into(),
            },
            header: "Authorization".into(),
            tenant_claim: "tid".into(),
            user_claim: "sub".into(),
            roles_claim: Some("roles".into()),
            issuer: Some("preflight".into()),
            audience: Some("layer".into()),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn a_minted_token_verifies_with_the_key_and_carries_the_principal() {
        let jwt = profile_jwt("s3cret-for-tests");
        let who = Principal {
            tenant: "acme".into(),
            user: "alice".into(),
            roles: vec!["support".into()],
        };
        let token = mint(&jwt, &who).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["layer"]);
        v.set_issuer(&["preflight"]);
        let data =
            decode::<Value>(&token, &DecodingKey::from_secret(b"s3cret-for-tests"), &v).unwrap();
        assert_eq!(data.claims["tid"], "acme");
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["roles"], json!(["support"]));
        let wrong = decode::<Value>(&token, &DecodingKey::from_secret(b"other"), &v);
        assert!(wrong.is_err());
    }

    #[test]
    fn a_key_of_the_wrong_kind_is_refused_without_showing_it() {
        let key = JwtKey {
            bytes: b"not-a-pem-but-a-secret".to_vec(),
            source: "key".into(),
        };
        let e = check_key(JwtAlg::Rs256, &key).unwrap_err();
        assert!(e.contains("not an RSA private key"), "{e}");
        assert!(!e.contains("not-a-pem-but-a-secret"), "{e}");
        assert!(check_key(JwtAlg::Hs256, &key).is_ok());
    }
}
