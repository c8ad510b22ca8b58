//! JSON Web Tokens: HS256, RS256, ES256 and EdDSA, keys from PEM or a JWKS document.
//!
//! # What is checked, in order
//! 1. Size (≤ [`TOKEN_SIZE_BYTES_MAX`]), then shape: three base64url segments.
//! 2. The header, decoded here before jsonwebtoken sees it: `alg: none` is refused as
//!    such, any `alg` outside [`JwtAlgorithm`] is refused, and keys embedded in the
//!    header (`jwk`, `jku`, `x5c`, `x5u`) are never used.
//! 3. The key: the token's `kid` must name a configured key whose algorithm is the
//!    token's `alg` (so an RS256 public key can never be used as an HS256 secret: key
//!    confusion). Without `kid`, every key of that algorithm is tried (at most
//!    [`JWT_KEYS_MAX`]).
//! 4. The signature (jsonwebtoken, with ring behind it: see `jwt_ring`), `iss` and `aud`
//!    when configured (then required).
//! 5. `exp` (required) and `nbf` (optional) against the caller's clock, with a bounded
//!    skew; `sub` (required) becomes the principal, the configured roles claim (a list
//!    of strings, default `roles`) the roles.
//!
//! The time is passed in (`now_unix_secs`), so every check is a pure function; the
//! [`Identity`] returned carries `exp` so the connection can be closed at expiry.
//! Keys are swapped atomically with [`JwtAuthenticator::replace_keys`] (a JWKS file
//! reloaded on change: the reloading is the caller's I/O).

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Identity, jwt_ring};
use crate::error::{AuthFailure, AuthMethod, SecurityError, check_name};
use crate::limits::{
    CLOCK_SKEW_SECS_DEFAULT, CLOCK_SKEW_SECS_MAX, HS256_SECRET_BYTES_MIN, JWKS_SIZE_BYTES_MAX,
    JWT_KEYS_MAX, ROLES_PER_TOKEN_MAX, TOKEN_SIZE_BYTES_MAX,
};

/// The signature algorithms a token may use. Each key allows exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA ≥ 2048 bits).
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwtAlgorithm {
    const ALL: [JwtAlgorithm; 4] = [
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Es256,
        JwtAlgorithm::EdDsa,
    ];

    /// The header's `alg` value.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }

    fn from_name(alg: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.into_iter().find(|a| a.name() == alg)
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One verification key and the one algorithm it allows.
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<String>,
    algorithm: JwtAlgorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key bytes (an HS256 key is a secret).
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn invalid_key(what: &str, reason: impl Into<String>) -> SecurityError {
    SecurityError::InvalidKey {
        what: what.to_string(),
        reason: reason.into(),
    }
}

impl JwtKey {
    /// An HS256 shared secret (at least [`HS256_SECRET_BYTES_MIN`] bytes).
    pub fn hs256(secret: &[u8]) -> Result<JwtKey, SecurityError> {
        if secret.len() < HS256_SECRET_BYTES_MIN {
            return Err(invalid_key(
                "HS256 secret",
                format!("shorter than {HS256_SECRET_BYTES_MIN} bytes"),
            ));
        }
        let key = DecodingKey::from_secret(secret)
            .map_err(|e| invalid_key("HS256 secret", e.to_string()))?;
        Ok(JwtKey {
            kid: None,
            algorithm: JwtAlgorithm::Hs256,
            key,
        })
    }

    /// A public key in PEM (`PUBLIC KEY`, or `RSA PUBLIC KEY`); the algorithm follows the
    /// key type: RSA → RS256, P-256 → ES256, Ed25519 → EdDSA.
    pub fn from_public_pem(pem: &[u8]) -> Result<JwtKey, SecurityError> {
        // jsonwebtoken also reads private keys and certificates here; a private key
        // given as the public one is a configuration mistake worth refusing loudly.
        let label = std::str::from_utf8(pem).ok().and_then(|text| {
            let rest = &text[text.find("-----BEGIN ")? + "-----BEGIN ".len()..];
            Some(&rest[..rest.find("-----")?])
        });
        if !matches!(label, Some("PUBLIC KEY" | "RSA PUBLIC KEY")) {
            return Err(invalid_key(
                "JWT public key PEM",
                "expected a PUBLIC KEY or RSA PUBLIC KEY block",
            ));
        }
        let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (JwtAlgorithm::Rs256, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (JwtAlgorithm::Es256, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (JwtAlgorithm::EdDsa, key)
        } else {
            return Err(invalid_key(
                "JWT public key PEM",
                "not an RSA, EC or Ed25519 public key",
            ));
        };
        let bytes = key.try_get_as_bytes().unwrap_or_default();
        let shape_ok = match algorithm {
            // An uncompressed P-256 point; a P-384 key would never verify as ES256.
            JwtAlgorithm::Es256 => bytes.len() == 65 && bytes[0] == 4,
            JwtAlgorithm::EdDsa => bytes.len() == 32,
            _ => !bytes.is_empty(),
        };
        if !shape_ok {
            return Err(invalid_key(
                "JWT public key PEM",
                "unsupported curve or key size",
            ));
        }
        Ok(JwtKey {
            kid: None,
            algorithm,
            key,
        })
    }

    /// The same key, selected by tokens whose header names `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> JwtKey {
        self.kid = Some(kid.into());
        self
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }
}

/// The keys tokens may be signed with.
#[derive(Debug, Clone, Default)]
pub struct JwtKeySet {
    keys: Vec<JwtKey>,
}

impl JwtKeySet {
    /// An empty set (refuses every token).
    pub fn new() -> JwtKeySet {
        JwtKeySet::default()
    }

    /// Add a key; at most [`JWT_KEYS_MAX`].
    pub fn with(mut self, key: JwtKey) -> Result<JwtKeySet, SecurityError> {
        if self.keys.len() >= JWT_KEYS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "JWT keys",
                max: JWT_KEYS_MAX,
            });
        }
        self.keys.push(key);
        Ok(self)
    }

    /// The keys, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &JwtKey> {
        self.keys.iter()
    }

    /// The keys of a JWKS document (RFC 7517). Keys for encryption (`use: enc`), with an
    /// `alg` other than HS256/RS256/ES256/EdDSA, or on another curve are skipped (a
    /// provider's JWKS often lists such keys); a document with no usable key is an
    /// error. Without `alg`, the algorithm follows the key type as for PEM keys (`oct` →
    /// HS256).
    pub fn from_jwks(json: &[u8]) -> Result<JwtKeySet, SecurityError> {
        if json.len() > JWKS_SIZE_BYTES_MAX {
            return Err(invalid_key(
                "JWKS",
                format!("larger than {JWKS_SIZE_BYTES_MAX} bytes"),
            ));
        }
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| invalid_key("JWKS", e.to_string()))?;
        let mut keys = JwtKeySet::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let by_type = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => JwtAlgorithm::Rs256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    JwtAlgorithm::Es256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    JwtAlgorithm::EdDsa
                }
                AlgorithmParameters::OctetKey(_) => JwtAlgorithm::Hs256,
                _ => continue,
            };
            let stated = match jwk.common.key_algorithm {
                None => by_type,
                Some(KeyAlgorithm::HS256) => JwtAlgorithm::Hs256,
                Some(KeyAlgorithm::RS256) => JwtAlgorithm::Rs256,
                Some(KeyAlgorithm::ES256) => JwtAlgorithm::Es256,
                Some(KeyAlgorithm::EdDSA) => JwtAlgorithm::EdDsa,
                Some(_) => continue,
            };
            if stated != by_type {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                invalid_key(
                    &format!("JWKS key {:?}", jwk.common.key_id.as_deref().unwrap_or("")),
                    e.to_string(),
                )
            })?;
            if stated == JwtAlgorithm::Hs256
                && key.try_get_as_bytes().map_or(0, <[u8]>::len) < HS256_SECRET_BYTES_MIN
            {
                return Err(invalid_key("JWKS oct key", "secret too short"));
            }
            keys = keys.with(JwtKey {
                kid: jwk.common.key_id.clone(),
                algorithm: stated,
                key,
            })?;
        }
        if keys.keys.is_empty() {
            return Err(invalid_key("JWKS", "no usable signature key"));
        }
        Ok(keys)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a token must say besides being well signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
    /// The claim holding the principal's roles (a list of strings; absent = none).
    pub roles_claim: String,
    /// Tolerance on `exp` and `nbf`, at most [`CLOCK_SKEW_SECS_MAX`].
    pub clock_skew_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig {
            issuer: None,
            audience: None,
            roles_claim: "roles".to_string(),
            clock_skew_secs: CLOCK_SKEW_SECS_DEFAULT,
        }
    }
}

/// Verifies JWTs against a key set and a [`JwtConfig`].
pub struct JwtAuthenticator {
    config: JwtConfig,
    /// One validation per algorithm, built once.
    validations: [Validation; 4],
    keys: RwLock<Arc<JwtKeySet>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("config", &self.config)
            .field("keys", &self.keys())
            .finish()
    }
}

/// The header fields this module reads itself, before jsonwebtoken parses the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn refused(reason: AuthFailure) -> SecurityError {
    SecurityError::unauthenticated(Some(AuthMethod::Jwt), reason)
}

impl JwtAuthenticator {
    /// An authenticator; the configuration is checked here.
    pub fn new(config: JwtConfig, keys: JwtKeySet) -> Result<JwtAuthenticator, SecurityError> {
        if config.clock_skew_secs > CLOCK_SKEW_SECS_MAX {
            return Err(SecurityError::Invalid {
                what: "JWT clock skew",
                value: config.clock_skew_secs.to_string(),
                reason: "above CLOCK_SKEW_SECS_MAX",
            });
        }
        check_name("JWT roles claim", &config.roles_claim)?;
        jwt_ring::install();
        let validations = JwtAlgorithm::ALL.map(|alg| {
            let mut v = Validation::new(alg.jsonwebtoken());
            // Time is checked below against the caller's clock, not the system's.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.required_spec_claims.clear();
            if let Some(issuer) = &config.issuer {
                v.set_issuer(&[issuer]);
                v.required_spec_claims.insert("iss".into());
            }
            match &config.audience {
                Some(audience) => {
                    v.set_audience(&[audience]);
                    v.required_spec_claims.insert("aud".into());
                }
                None => v.validate_aud = false,
            }
            v
        });
        Ok(JwtAuthenticator {
            config,
            validations,
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The current keys.
    pub fn keys(&self) -> Arc<JwtKeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap in a new key set (key rotation, a reloaded JWKS file). Tokens being checked
    /// finish against the set they started with.
    pub fn replace_keys(&self, keys: JwtKeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Verify `token` at `now_unix_secs` (seconds since the Unix epoch).
    pub fn verify(&self, token: &[u8], now_unix_secs: u64) -> Result<Identity, SecurityError> {
        if token.len() > TOKEN_SIZE_BYTES_MAX {
            return Err(refused(AuthFailure::Oversized));
        }
        let token = std::str::from_utf8(token).map_err(|_| refused(AuthFailure::Malformed))?;
        let mut segments = token.split('.');
        let (Some(header), Some(_payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(refused(AuthFailure::Malformed));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<RawHeader>(&bytes).ok())
            .ok_or_else(|| refused(AuthFailure::Malformed))?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(refused(AuthFailure::AlgorithmNone));
        }
        let algorithm = JwtAlgorithm::from_name(&header.alg)
            .ok_or_else(|| refused(AuthFailure::AlgorithmNotAllowed))?;
        if signature.is_empty() {
            return Err(refused(AuthFailure::Malformed));
        }

        let keys = self.keys();
        let candidates: Vec<&JwtKey> = match &header.kid {
            Some(kid) => {
                let named: Vec<&JwtKey> = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(refused(AuthFailure::UnknownKey));
                }
                named
                    .into_iter()
                    .filter(|k| k.algorithm == algorithm)
                    .collect()
            }
            None => keys
                .keys
                .iter()
                .filter(|k| k.algorithm == algorithm)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(refused(AuthFailure::AlgorithmNotAllowed));
        }

        let validation = &self.validations[algorithm.index()];
        let mut last = AuthFailure::BadSignature;
        let mut claims = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    last = map_error(e.kind());
                    if last != AuthFailure::BadSignature {
                        // Not a key mismatch: another key will not change the answer.
                        return Err(refused(last));
                    }
                }
            }
        }
        let claims = claims.ok_or_else(|| refused(last))?;
        self.check_claims(&claims, header.kid, now_unix_secs)
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        kid: Option<String>,
        now_unix_secs: u64,
    ) -> Result<Identity, SecurityError> {
        let skew = self.config.clock_skew_secs;
        let exp = numeric_date(claims, "exp")?
            .ok_or_else(|| refused(AuthFailure::MissingClaim { claim: "exp" }))?;
        // RFC 7519 §4.1.4: not accepted on or after `exp`.
        if now_unix_secs >= exp.saturating_add(skew) {
            return Err(refused(AuthFailure::Expired));
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now_unix_secs.saturating_add(skew) < nbf
        {
            return Err(refused(AuthFailure::NotYetValid));
        }
        let principal = match claims.get("sub") {
            None => return Err(refused(AuthFailure::MissingClaim { claim: "sub" })),
            Some(Value::String(sub)) if check_name("principal", sub).is_ok() => sub.clone(),
            Some(_) => return Err(refused(AuthFailure::BadClaim { claim: "sub" })),
        };
        let bad_roles = || refused(AuthFailure::BadClaim { claim: "roles" });
        let roles = match claims.get(&self.config.roles_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= ROLES_PER_TOKEN_MAX => items
                .iter()
                .map(|item| match item {
                    Value::String(role) if check_name("role", role).is_ok() => Ok(role.clone()),
                    _ => Err(bad_roles()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad_roles()),
        };
        Ok(Identity {
            principal,
            roles,
            method: AuthMethod::Jwt,
            expires_at_unix_secs: Some(exp),
            key_id: kid,
        })
    }
}

/// A NumericDate claim (RFC 7519 §2): a non-negative number of seconds; fractions are
/// truncated. Any other type is refused rather than ignored (a string `exp` must not
/// read as "no expiry").
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<u64>, SecurityError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                return Ok(Some(secs));
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
                _ => Err(refused(AuthFailure::BadClaim { claim })),
            }
        }
        Some(_) => Err(refused(AuthFailure::BadClaim { claim })),
    }
}

fn map_error(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::Provider(_) => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthFailure::AlgorithmNotAllowed,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthFailure::MissingClaim {
            claim: static_claim(claim),
        },
        ErrorKind::InvalidClaimFormat(claim) => AuthFailure::BadClaim {
            claim: static_claim(claim),
        },
        _ => AuthFailure::Malformed,
    }
}

fn static_claim(claim: &str) -> &'static str {
    ["iss", "aud", "sub", "exp", "nbf"]
        .into_iter()
        .find(|c| *c == claim)
        .unwrap_or("registered")
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
