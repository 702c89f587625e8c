//! The profile's `principal.jwt:` section ([`Jwt`]): the algorithm, the key (inline, from a file
//! or from the environment), the header, the claim names, issuer, audience and lifetime. The key
//! is read and parsed here, so a missing or malformed key is a profile error at its line, not a
//! failure halfway through a run; the key itself never appears in a message.

use std::path::Path;
use std::time::Duration;

use marked_yaml::Node;

use super::model::*;
use super::nodes::*;

const KEYS: &[&str] = &[
    "alg", "key", "key_file", "key_env", "header", "claims", "issuer", "audience", "ttl",
];
const ALGS: &[&str] = &["HS256", "RS256", "ES256"];
/// Lifetime of a minted token when the profile says none: longer than any run.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub(super) fn jwt(d: &mut Diag, node: &Node, profile_path: &str) -> Option<Jwt> {
    let m = mapping(d, node, "principal.jwt")?;
    check_keys(d, m, "principal.jwt", KEYS);
    let alg = match get(m, "alg") {
        Some(n) => string(d, n, "principal.jwt.alg").and_then(|s| match s.as_str() {
            "HS256" => Some(JwtAlg::Hs256),
            "RS256" => Some(JwtAlg::Rs256),
            "ES256" => Some(JwtAlg::Es256),
            other => {
                let hint = did_you_mean(other, ALGS)
                    .map(|a| format!("; did you mean `{a}`?"))
                    .unwrap_or_default();
                d.error(
                    at(n),
                    "principal.jwt.alg",
                    format!("expected one of HS256, RS256, ES256, found `{other}`{hint}"),
                );
                None
            }
        }),
        None => {
            d.error(
                at(node),
                "principal.jwt.alg",
                "missing: HS256, RS256 or ES256",
            );
            None
        }
    };
    let key = key(d, node, m, profile_path);
    let header = get(m, "header")
        .and_then(|n| string(d, n, "principal.jwt.header"))
        .unwrap_or_else(|| "Authorization".to_string());
    let (tenant_claim, user_claim, roles_claim) = match get(m, "claims") {
        Some(n) => {
            let cm = mapping(d, n, "principal.jwt.claims")?;
            check_keys(d, cm, "principal.jwt.claims", &["tenant", "user", "roles"]);
            let claim = |d: &mut Diag, k: &str| {
                get(cm, k).and_then(|v| string(d, v, &join("principal.jwt.claims", k)))
            };
            let tenant = claim(d, "tenant");
            let user = claim(d, "user");
            let roles = claim(d, "roles");
            if tenant.is_none() {
                d.error(
                    at(n),
                    "principal.jwt.claims.tenant",
                    "missing: the claim that names the tenant (e.g. `tid`)",
                );
            }
            (tenant?, user.unwrap_or_else(|| "sub".to_string()), roles)
        }
        None => {
            d.error(
                at(node),
                "principal.jwt.claims",
                "missing: the claim names, e.g. `{tenant: tid, user: sub, roles: roles}`",
            );
            return None;
        }
    };
    let text =
        |d: &mut Diag, k: &str| get(m, k).and_then(|n| string(d, n, &join("principal.jwt", k)));
    let issuer = text(d, "issuer");
    let audience = text(d, "audience");
    let ttl = match get(m, "ttl") {
        Some(n) => duration(d, n, "principal.jwt.ttl")?,
        None => DEFAULT_TTL,
    };
    let alg = alg?;
    let key = key?;
    if let Err(why) = crate::jwt::check_key(alg, &key) {
        d.error(
            at(node),
            "principal.jwt",
            format!(
                "the {} does not hold a {} key: {why}",
                key.source,
                alg.as_str()
            ),
        );
        return None;
    }
    Some(Jwt {
        alg,
        key,
        header,
        tenant_claim,
        user_claim,
        roles_claim,
        issuer,
        audience,
        ttl,
    })
}

/// The key from exactly one of `key:`, `key_file:` (relative to the profile's folder) or
/// `key_env:`.
fn key(
    d: &mut Diag,
    node: &Node,
    m: &marked_yaml::types::MarkedMappingNode,
    profile_path: &str,
) -> Option<JwtKey> {
    let given: Vec<&str> = ["key", "key_file", "key_env"]
        .into_iter()
        .filter(|k| get(m, k).is_some())
        .collect();
    match given.as_slice() {
        [] => {
            d.error(
                at(node),
                "principal.jwt.key",
                "missing: give the signing key as `key:`, `key_file: PATH` or `key_env: NAME`",
            );
            None
        }
        ["key"] => {
            let n = get(m, "key")?;
            let s = string(d, n, "principal.jwt.key")?;
            Some(JwtKey {
                bytes: s.into_bytes(),
                source: "key".to_string(),
            })
        }
        ["key_file"] => {
            let n = get(m, "key_file")?;
            let file = string(d, n, "principal.jwt.key_file")?;
            let base = Path::new(profile_path).parent().unwrap_or(Path::new("."));
            let path = base.join(&file);
            match std::fs::read(&path) {
                Ok(bytes) if !bytes.is_empty() => Some(JwtKey {
                    bytes,
                    source: format!("key file {}", path.display()),
                }),
                Ok(_) => {
                    d.error(
                        at(n),
                        "principal.jwt.key_file",
                        format!("the key file {} is empty", path.display()),
                    );
                    None
                }
                Err(e) => {
                    d.error(
                        at(n),
                        "principal.jwt.key_file",
                        format!("cannot read the key file {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        ["key_env"] => {
            let n = get(m, "key_env")?;
            let name = string(d, n, "principal.jwt.key_env")?;
            match std::env::var(&name) {
                Ok(v) if !v.is_empty() => Some(JwtKey {
                    bytes: v.into_bytes(),
                    source: format!("environment variable {name}"),
                }),
                Ok(_) | Err(_) => {
                    d.error(
                        at(n),
                        "principal.jwt.key_env",
                        format!("the environment variable {name} is not set or empty"),
                    );
                    None
                }
            }
        }
        many => {
            d.error(
                at(node),
                "principal.jwt",
                format!(
                    "give one of `key`, `key_file`, `key_env`, not {}",
                    many.join(" and ")
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::profile::*;

    fn with_jwt(jwt: &str) -> String {
        format!("transport: {{url: \"http://x/mcp\"}}\nprincipal:\n  jwt: {jwt}\ntools: {{db_get: {{}}}}\n")
    }

    #[test]
    fn a_jwt_principal_loads_without_showing_its_key() {
        let text = with_jwt("{alg: HS256, key: s3cret-s3cret, claims: {tenant: tid, user: sub, roles: roles}, issuer: me, audience: you, ttl: 5m}");
        let p = load_str(&text, "p.yaml").unwrap();
        let j = p.principal.jwt.clone().unwrap();
        assert_eq!(j.alg, JwtAlg::Hs256);
        assert_eq!(j.header, "Authorization");
        assert_eq!(j.tenant_claim, "tid");
        assert_eq!(j.ttl, std::time::Duration::from_secs(300));
        assert!(p.principal.per_connection());
        let shown = format!("{p:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn bad_alg_missing_key_and_unreadable_key_file_are_precise_errors() {
        let e = load_str(&with_jwt("{alg: HS257, claims: {tenant: tid}}"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.yaml:3:14: error: principal.jwt.alg: expected one of HS256, RS256, ES256, found `HS257`; did you mean `HS256`?"), "{e}");
        assert!(
            e.contains("principal.jwt.key: missing: give the signing key"),
            "{e}"
        );
        let e = load_str(
            &with_jwt("{alg: RS256, key_file: no-such-key.pem, claims: {tenant: tid}}"),
            "/nowhere/p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("principal.jwt.key_file: cannot read the key file /nowhere/no-such-key.pem"),
            "{e}"
        );
        let e = load_str(
            &with_jwt(
                "{alg: HS256, key_env: PREFLIGHT_TEST_NO_SUCH_VARIABLE, claims: {tenant: tid}}",
            ),
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("principal.jwt.key_env: the environment variable PREFLIGHT_TEST_NO_SUCH_VARIABLE is not set"), "{e}");
        let e = load_str(
            &with_jwt("{alg: ES256, key: plain-secret, claims: {tenant: tid}}"),
            "p.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("principal.jwt: the key does not hold a ES256 key"),
            "{e}"
        );
        assert!(!e.contains("plain-secret"), "{e}");
        let e = load_str(&with_jwt("{alg: HS256, key: a, key_env: B}"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("give one of `key`, `key_file`, `key_env`, not key and key_env"),
            "{e}"
        );
        assert!(e.contains("principal.jwt.claims: missing"), "{e}");
    }

    #[test]
    fn a_pem_key_file_is_read_beside_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&pem)
            .output();
        let Ok(out) = out else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "openssl is needed to make a test key"
            );
            eprintln!("SKIPPED: openssl is not installed");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // openssl writes SEC1 (`EC PRIVATE KEY`); jsonwebtoken wants PKCS#8.
        let p8 = dir.path().join("k8.pem");
        let conv = std::process::Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&p8)
            .output()
            .unwrap();
        assert!(conv.status.success());
        let profile = dir.path().join("p.yaml");
        let text = with_jwt("{alg: ES256, key_file: k8.pem, claims: {tenant: tid}}");
        let p = load_str(&text, &profile.display().to_string()).unwrap();
        assert_eq!(p.principal.jwt.unwrap().alg, JwtAlg::Es256);
    }
}
