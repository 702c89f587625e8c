//! Who is calling over HTTP ([`JwtVerifier`]): a bearer JWT, verified — signature (HS256 with a
//! shared key, RS256/ES256 with a public key), `exp` (required), `nbf`, and `aud`/`iss` when
//! configured — before the principal's tenant, user and roles are read from configurable
//! claims. Plain headers never name a principal (ISO-1): a token that cannot be verified is a
//! refusal, whatever it claims.

use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use preflight_enforcer::Principal;
use serde_json::{Map, Value};

/// The signature algorithms a server accepts; one per server, so a token can never pick a
/// weaker one (`alg: none` or HS256 signed with the public key) for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlg {
    Hs256,
    Rs256,
    Es256,
}

impl JwtAlg {
    pub fn parse(s: &str) -> Option<JwtAlg> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Some(JwtAlg::Hs256),
            "RS256" => Some(JwtAlg::Rs256),
            "ES256" => Some(JwtAlg::Es256),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::Hs256 => Algorithm::HS256,
            JwtAlg::Rs256 => Algorithm::RS256,
            JwtAlg::Es256 => Algorithm::ES256,
        }
    }
}

/// Which claims carry the principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimNames {
    pub tenant: String,
    pub user: String,
    pub roles: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "tenant".to_string(),
            user: "sub".to_string(),
            roles: "roles".to_string(),
        }
    }
}

/// Why a request's token was refused. The messages go back to the client and into the audit
/// log: they name what was wrong, never the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm `{found}` is not accepted (this server accepts {expected})")]
    Algorithm { found: String, expected: String },
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `{claim}` claim must be {expected}")]
    BadClaim {
        claim: String,
        expected: &'static str,
    },
}

impl AuthError {
    /// A short stable code for the audit record's `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::Algorithm { .. } => "token_algorithm",
            AuthError::Signature => "token_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Audience => "token_audience",
            AuthError::Issuer => "token_issuer",
            AuthError::MissingClaim(_) | AuthError::BadClaim { .. } => "token_claims",
        }
    }
}

/// A problem with the verifier's own configuration (exit 2 at start).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("environment variable {0} (the HS256 key) is not set or empty")]
    MissingKeyEnv(String),
    #[error("cannot read the public key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{path}: not a PEM {expected} public key: {reason}")]
    BadKey {
        path: String,
        expected: &'static str,
        reason: String,
    },
    #[error("--jwt-alg {0} needs --jwt-public-key FILE")]
    NeedsPublicKey(&'static str),
    #[error("--jwt-alg HS256 needs --jwt-hs256-key-env VAR")]
    NeedsSharedKey,
}

/// Verifies bearer tokens and reads the principal from them.
#[derive(Clone)]
pub struct JwtVerifier {
    alg: JwtAlg,
    key: DecodingKey,
    validation: Validation,
    claims: ClaimNames,
    /// Test variant only: read the claims without verifying anything.
    insecure_no_check: bool,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret.
        f.debug_struct("JwtVerifier")
            .field("alg", &self.alg)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// How the server verifies tokens, as the operator configured it.
#[derive(Clone, Debug, Default)]
pub struct JwtSettings {
    pub alg: Option<JwtAlg>,
    /// The variable holding the HS256 shared key (the key itself is never on the command line).
    pub hs256_key_env: Option<String>,
    pub public_key_file: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub claims: ClaimNames,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, AuthConfigError> {
        let alg = settings
            .alg
            .unwrap_or(if settings.public_key_file.is_some() {
                JwtAlg::Rs256
            } else {
                JwtAlg::Hs256
            });
        let key = match alg {
            JwtAlg::Hs256 => {
                let var = settings
                    .hs256_key_env
                    .as_deref()
                    .ok_or(AuthConfigError::NeedsSharedKey)?;
                let secret = std::env::var(var)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| AuthConfigError::MissingKeyEnv(var.to_string()))?;
                DecodingKey::from_secret(secret.as_bytes())
            }
            JwtAlg::Rs256 | JwtAlg::Es256 => {
                let (name, expected) = if alg == JwtAlg::Rs256 {
                    ("RS256", "RSA")
                } else {
                    ("ES256", "EC")
                };
                let path = settings
                    .public_key_file
                    .as_ref()
                    .ok_or(AuthConfigError::NeedsPublicKey(name))?;
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|e| AuthConfigError::KeyFile {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                let parsed = if alg == JwtAlg::Rs256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                };
                parsed.map_err(|e| AuthConfigError::BadKey {
                    path: shown,
                    expected,
                    reason: e.to_string(),
                })?
            }
        };
        Ok(JwtVerifier::with_key(alg, key, settings))
    }

    /// An HS256 verifier over a shared key held in memory (no issuer, audience or leeway): for a
    /// layer served inside this process, whose key was generated for the run and is never
    /// written anywhere.
    pub fn hs256_secret(secret: &[u8], claims: ClaimNames) -> JwtVerifier {
        let settings = JwtSettings {
            alg: Some(JwtAlg::Hs256),
            claims,
            ..JwtSettings::default()
        };
        JwtVerifier::with_key(JwtAlg::Hs256, DecodingKey::from_secret(secret), &settings)
    }

    fn with_key(alg: JwtAlg, key: DecodingKey, settings: &JwtSettings) -> JwtVerifier {
        let mut validation = Validation::new(alg.algorithm());
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
        }
        JwtVerifier {
            alg,
            key,
            validation,
            claims: settings.claims.clone(),
            insecure_no_check: false,
        }
    }

    /// A verifier that checks nothing: for the test variant that shows the forgery probes fail
    /// on a server without token checks. Never reachable without the hidden test flag.
    pub fn insecure_no_check(mut self) -> Self {
        self.insecure_no_check = true;
        self
    }

    /// The principal of an `Authorization` header's value.
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let claims = if self.insecure_no_check {
            unverified_claims(token).ok_or(AuthError::Malformed)?
        } else {
            self.verified_claims(token)?
        };
        self.principal_from(&claims)
    }

    fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        // The header is read first only to name a wrong algorithm precisely; `alg: none` is
        // not even a value the library's header type can hold, so it is refused here.
        match decode_header(token) {
            Ok(h) if h.alg != self.alg.algorithm() => {
                return Err(AuthError::Algorithm {
                    found: format!("{:?}", h.alg),
                    expected: format!("{:?}", self.alg.algorithm()),
                })
            }
            Ok(_) => {}
            Err(_) => {
                return Err(match unverified_alg(token) {
                    Some(found) => AuthError::Algorithm {
                        found,
                        expected: format!("{:?}", self.alg.algorithm()),
                    },
                    None => AuthError::Malformed,
                })
            }
        }
        decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidIssuer => AuthError::Issuer,
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                ErrorKind::InvalidSignature => AuthError::Signature,
                ErrorKind::InvalidAlgorithm => AuthError::Algorithm {
                    found: "another".to_string(),
                    expected: format!("{:?}", self.alg.algorithm()),
                },
                _ => AuthError::Malformed,
            })
    }

    fn principal_from(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let string = |name: &str| -> Result<String, AuthError> {
            match claims.get(name) {
                None | Some(Value::Null) => Err(AuthError::MissingClaim(name.to_string())),
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(_) => Err(AuthError::BadClaim {
                    claim: name.to_string(),
                    expected: "a non-empty string",
                }),
            }
        };
        let tenant = string(&self.claims.tenant)?;
        let user = string(&self.claims.user)?;
        let roles = match claims.get(&self.claims.roles) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or(AuthError::BadClaim {
                        claim: self.claims.roles.clone(),
                        expected: "a list of strings or a space-separated string",
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(Value::String(s)) => s
                .split([' ', ','])
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect(),
            Some(_) => {
                return Err(AuthError::BadClaim {
                    claim: self.claims.roles.clone(),
                    expected: "a list of strings or a space-separated string",
                })
            }
        };
        Ok(Principal {
            tenant,
            user,
            roles,
        })
    }

    /// The tenant a refused token claims (unverified), for the audit record's evidence.
    pub fn claimed_tenant(&self, authorization: Option<&str>) -> Option<String> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        unverified_claims(token)?
            .get(&self.claims.tenant)?
            .as_str()
            .map(str::to_string)
    }
}

fn b64_json(part: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The payload of a token, read without any check.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    b64_json(token.split('.').nth(1)?)
}

/// The `alg` a token's header names, read without any check.
fn unverified_alg(token: &str) -> Option<String> {
    b64_json(token.split('.').next()?)?
        .get("alg")?
        .as_str()
        .map(str::to_string)
}
