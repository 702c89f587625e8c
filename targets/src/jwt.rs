//! Minting the bearer token of one principal ([`mint`]) from the profile's `principal.jwt:`
//! section, through the `jsonwebtoken` crate, and the forgeries the `server` probes try
//! ([`forge`]). The key and the token are secrets: neither is ever put into an error message.

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
pub fn mint(jwt: &Jwt, who: &Principal) -> Result<String, String> {
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

/// A token a layer must refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// `alg: none` and no signature.
    AlgNone,
    /// Signed with a key that is not the profile's (HS256: a random secret; RS256/ES256, where
    /// no second key of the kind is at hand: the real signature with its bytes changed).
    WrongKey,
    /// A real token for the principal whose payload names `tenant` instead, the signature kept.
    TenantEdited { tenant: String },
    /// Signed with the real key, expired an hour ago.
    Expired,
}

impl Forgery {
    pub fn describe(&self) -> &'static str {
        match self {
            Forgery::AlgNone => "an unsigned token (`alg: none`)",
            Forgery::WrongKey => "a token signed with the wrong key",
            Forgery::TenantEdited { .. } => {
                "a real token whose tenant claim was changed after signing"
            }
            Forgery::Expired => "a token signed with the real key that expired an hour ago",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// A forged token for `who` (see [`Forgery`]).
pub fn forge(jwt: &Jwt, who: &Principal, forgery: &Forgery) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match forgery {
        Forgery::AlgNone => {
            let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
            let payload = b64(claims(jwt, who, now).to_string().as_bytes());
            Ok(format!("{header}.{payload}."))
        }
        Forgery::WrongKey => {
            if jwt.alg == JwtAlg::Hs256 {
                let secret: [u8; 32] = rand::random();
                return jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims(jwt, who, now),
                    &EncodingKey::from_secret(&secret),
                )
                .map_err(|e| format!("cannot sign with a random key ({e})"));
            }
            let token = mint(jwt, who)?;
            let (head, sig) = token
                .rsplit_once('.')
                .ok_or("a minted token has no signature")?;
            let mut bytes = unb64(sig).ok_or("a minted token's signature is not base64url")?;
            for b in bytes.iter_mut().take(16) {
                *b ^= 0x5a;
            }
            Ok(format!("{head}.{}", b64(&bytes)))
        }
        Forgery::TenantEdited { tenant } => {
            let token = mint(jwt, who)?;
            let parts: Vec<&str> = token.split('.').collect();
            let [header, payload, sig] = parts.as_slice() else {
                return Err("a minted token does not have three parts".to_string());
            };
            let mut claims: Value = unb64(payload)
                .and_then(|p| serde_json::from_slice(&p).ok())
                .ok_or("a minted token's payload is not JSON")?;
            claims[jwt.tenant_claim.as_str()] = json!(tenant);
            Ok(format!(
                "{header}.{}.{sig}",
                b64(claims.to_string().as_bytes())
            ))
        }
        Forgery::Expired => {
            let issued = now.saturating_sub(Duration::from_secs(7200) + jwt.ttl);
            let mut c = claims(jwt, who, issued);
            c["exp"] = json!(now.as_secs().saturating_sub(3600));
            let key = encoding_key(jwt.alg, &jwt.key)?;
            jsonwebtoken::encode(&Header::new(algorithm(jwt.alg)), &c, &key)
                .map_err(|e| format!("cannot sign a token with the {} ({e})", jwt.key.source))
        }
    }
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
    fn every_forgery_fails_verification_with_the_real_key() {
        let jwt = profile_jwt("s3cret-for-tests");
        let who = Principal {
            tenant: "acme".into(),
            user: "alice".into(),
            roles: vec!["support".into()],
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["layer"]);
        v.set_issuer(&["preflight"]);
        v.leeway = 60;
        let key = DecodingKey::from_secret(b"s3cret-for-tests");
        for f in [
            Forgery::AlgNone,
            Forgery::WrongKey,
            Forgery::TenantEdited {
                tenant: "globex".into(),
            },
            Forgery::Expired,
        ] {
            let token = forge(&jwt, &who, &f).unwrap();
            assert!(decode::<Value>(&token, &key, &v).is_err(), "{f:?} verified");
            let payload: Value =
                serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
            let tenant = if matches!(f, Forgery::TenantEdited { .. }) {
                "globex"
            } else {
                "acme"
            };
            assert_eq!(payload["tid"], tenant, "{f:?}");
        }
        // The edited token differs from a real one only in its payload.
        let real = mint(&jwt, &who).unwrap();
        let edited = forge(
            &jwt,
            &who,
            &Forgery::TenantEdited {
                tenant: "globex".into(),
            },
        )
        .unwrap();
        assert_eq!(real.split('.').next(), edited.split('.').next());
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
