//! API keys: a random secret shown once, stored only as a salted hash.
//!
//! # Format
//! `neoak_<key id>_<secret>`: the key id is 16 lowercase hex digits (8 random bytes;
//! not secret, it names the key in lists, revocations and the audit log), the secret is
//! 32 random bytes in unpadded base64url (43 characters).
//!
//! # Storage
//! An [`ApiKeyRecord`] keeps the key id, the principal, a random 16-byte salt and
//! `HMAC-SHA256(key = salt, message = secret)`; never the secret. A single keyed hash is
//! enough because the secret is 256 random bits: slow password hashing (PBKDF2, Argon2)
//! protects low-entropy secrets and would only add cost to every handshake here. The
//! comparison is constant-time (ring's `hmac::verify`).
//!
//! # Revocation
//! [`ApiKeys::revoke`] marks the record (kept for the audit trail); from then on the key
//! is refused with [`AuthFailure::ApiKeyRevoked`]. Connections already open that
//! authenticated with it are found by their [`Identity::key_id`] and re-checked with
//! [`ApiKeyAuthenticator::is_valid`] (the node's job, once wired).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::Identity;
use crate::error::{AuthFailure, AuthMethod, CryptoFailure, SecurityError, check_name};
use crate::limits::{API_KEY_ID_BYTES, API_KEY_SALT_BYTES, API_KEY_SECRET_BYTES, API_KEYS_MAX};

/// Every API key token starts with this.
pub const API_KEY_PREFIX: &str = "neoak_";

/// A stored API key: everything but the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// 16 lowercase hex digits.
    pub key_id: String,
    /// Who the key authenticates as.
    pub principal: String,
    /// Random per key.
    pub salt: [u8; API_KEY_SALT_BYTES],
    /// `HMAC-SHA256(salt, secret)`.
    pub hash: [u8; 32],
    /// When it was created (seconds since the Unix epoch).
    pub created_at_unix_secs: u64,
    /// When it was revoked, if it was.
    pub revoked_at_unix_secs: Option<u64>,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("key_id", &self.key_id)
            .field("principal", &self.principal)
            .field("created_at_unix_secs", &self.created_at_unix_secs)
            .field("revoked_at_unix_secs", &self.revoked_at_unix_secs)
            .finish_non_exhaustive()
    }
}

/// A freshly created key: the only time its secret exists outside the client.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key id (also inside `token`).
    pub key_id: String,
    /// The whole token to hand to the user, once.
    pub token: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HMAC key of a record: its salt.
fn salted(salt: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, salt)
}

impl ApiKeyRecord {
    /// A new key for `principal`: the token to show once, and the record to store.
    pub fn generate(
        principal: &str,
        now_unix_secs: u64,
    ) -> Result<(NewApiKey, ApiKeyRecord), SecurityError> {
        check_name("principal", principal)?;
        let rng = SystemRandom::new();
        let mut id = [0u8; API_KEY_ID_BYTES];
        let mut secret = [0u8; API_KEY_SECRET_BYTES];
        let mut salt = [0u8; API_KEY_SALT_BYTES];
        for buf in [&mut id[..], &mut secret[..], &mut salt[..]] {
            rng.fill(buf).map_err(|_| CryptoFailure::Random)?;
        }
        let key_id = hex(&id);
        let tag = hmac::sign(&salted(&salt), &secret);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(tag.as_ref());
        let token = format!(
            "{API_KEY_PREFIX}{key_id}_{}",
            URL_SAFE_NO_PAD.encode(secret)
        );
        let record = ApiKeyRecord {
            key_id: key_id.clone(),
            principal: principal.to_string(),
            salt,
            hash,
            created_at_unix_secs: now_unix_secs,
            revoked_at_unix_secs: None,
        };
        Ok((NewApiKey { key_id, token }, record))
    }

    /// Whether `secret` is this key's secret (constant time).
    pub fn matches(&self, secret: &[u8]) -> bool {
        hmac::verify(&salted(&self.salt), secret, &self.hash).is_ok()
    }

    /// Whether the key was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_unix_secs.is_some()
    }
}

fn refused(reason: AuthFailure) -> SecurityError {
    SecurityError::unauthenticated(Some(AuthMethod::ApiKey), reason)
}

/// Split a token into key id and decoded secret, checking the format strictly.
fn parse_token(token: &[u8]) -> Result<(&str, [u8; API_KEY_SECRET_BYTES]), SecurityError> {
    let malformed = || refused(AuthFailure::Malformed);
    let token = std::str::from_utf8(token).map_err(|_| malformed())?;
    let rest = token.strip_prefix(API_KEY_PREFIX).ok_or_else(malformed)?;
    let (key_id, secret) = rest.split_once('_').ok_or_else(malformed)?;
    if key_id.len() != 2 * API_KEY_ID_BYTES
        || !key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed());
    }
    let decoded = URL_SAFE_NO_PAD.decode(secret).map_err(|_| malformed())?;
    let secret: [u8; API_KEY_SECRET_BYTES] = decoded.try_into().map_err(|_| malformed())?;
    Ok((key_id, secret))
}

/// All API keys (the metadata group's copy): serde-serialisable state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeys {
    keys: BTreeMap<String, ApiKeyRecord>,
}

impl ApiKeys {
    /// Store a new key's record.
    pub fn insert(&mut self, record: ApiKeyRecord) -> Result<(), SecurityError> {
        check_name("principal", &record.principal)?;
        if self.keys.contains_key(&record.key_id) {
            return Err(SecurityError::AlreadyExists {
                what: "API key",
                name: record.key_id,
            });
        }
        if self.keys.len() >= API_KEYS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "API keys",
                max: API_KEYS_MAX,
            });
        }
        self.keys.insert(record.key_id.clone(), record);
        Ok(())
    }

    /// Revoke a key (idempotent: a second revocation keeps the first time).
    pub fn revoke(&mut self, key_id: &str, now_unix_secs: u64) -> Result<(), SecurityError> {
        let record = self
            .keys
            .get_mut(key_id)
            .ok_or_else(|| SecurityError::NotFound {
                what: "API key",
                name: key_id.to_string(),
            })?;
        record.revoked_at_unix_secs.get_or_insert(now_unix_secs);
        Ok(())
    }

    /// Forget a key entirely (e.g. when its principal is deleted).
    pub fn remove(&mut self, key_id: &str) -> Option<ApiKeyRecord> {
        self.keys.remove(key_id)
    }

    /// One key's record.
    pub fn get(&self, key_id: &str) -> Option<&ApiKeyRecord> {
        self.keys.get(key_id)
    }

    /// Every record, by key id.
    pub fn iter(&self) -> impl Iterator<Item = &ApiKeyRecord> {
        self.keys.values()
    }

    /// Number of records (revoked ones included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key_id` exists and is not revoked.
    pub fn is_valid(&self, key_id: &str) -> bool {
        self.keys.get(key_id).is_some_and(|r| !r.is_revoked())
    }

    /// Authenticate an API key token.
    pub fn verify(&self, token: &[u8]) -> Result<Identity, SecurityError> {
        let (key_id, secret) = parse_token(token)?;
        let record = self
            .keys
            .get(key_id)
            .ok_or_else(|| refused(AuthFailure::ApiKeyInvalid))?;
        if !record.matches(&secret) {
            return Err(refused(AuthFailure::ApiKeyInvalid));
        }
        // Checked after the secret, so a revoked key id alone reveals nothing.
        if record.is_revoked() {
            return Err(refused(AuthFailure::ApiKeyRevoked));
        }
        Ok(Identity {
            principal: record.principal.clone(),
            roles: Vec::new(),
            method: AuthMethod::ApiKey,
            expires_at_unix_secs: None,
            key_id: Some(record.key_id.clone()),
        })
    }
}

/// Shares one [`ApiKeys`] among connections; the metadata group's changes are applied
/// with [`ApiKeyAuthenticator::update`] or [`ApiKeyAuthenticator::replace`].
#[derive(Debug, Default)]
pub struct ApiKeyAuthenticator {
    keys: RwLock<Arc<ApiKeys>>,
}

impl ApiKeyAuthenticator {
    /// Over these keys.
    pub fn new(keys: ApiKeys) -> ApiKeyAuthenticator {
        ApiKeyAuthenticator {
            keys: RwLock::new(Arc::new(keys)),
        }
    }

    /// The current keys.
    pub fn snapshot(&self) -> Arc<ApiKeys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace all keys (e.g. after a metadata snapshot was installed).
    pub fn replace(&self, keys: ApiKeys) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// Apply one change; on error nothing changes.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut ApiKeys) -> Result<T, SecurityError>,
    ) -> Result<T, SecurityError> {
        let mut guard = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut next = ApiKeys::clone(&guard);
        let out = change(&mut next)?;
        *guard = Arc::new(next);
        Ok(out)
    }

    /// Authenticate an API key token.
    pub fn verify(&self, token: &[u8]) -> Result<Identity, SecurityError> {
        self.snapshot().verify(token)
    }

    /// Whether a connection authenticated with `key_id` may stay open.
    pub fn is_valid(&self, key_id: &str) -> bool {
        self.snapshot().is_valid(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<Identity, SecurityError>) -> AuthFailure {
        result.unwrap_err().auth_failure().unwrap()
    }

    #[test]
    fn create_verify_revoke() {
        let (new_key, record) = ApiKeyRecord::generate("svc-billing", 10).unwrap();
        assert!(new_key.token.starts_with("neoak_"));
        assert_eq!(new_key.token.len(), 6 + 16 + 1 + 43);
        assert!(!format!("{new_key:?}{record:?}").contains(&new_key.token[23..]));
        let mut keys = ApiKeys::default();
        keys.insert(record.clone()).unwrap();
        assert!(matches!(
            keys.insert(record),
            Err(SecurityError::AlreadyExists { .. })
        ));

        let id = keys.verify(new_key.token.as_bytes()).unwrap();
        assert_eq!(id.principal, "svc-billing");
        assert_eq!(id.key_id.as_deref(), Some(new_key.key_id.as_str()));
        assert!(keys.is_valid(&new_key.key_id));

        keys.revoke(&new_key.key_id, 20).unwrap();
        keys.revoke(&new_key.key_id, 30).unwrap();
        assert_eq!(
            keys.get(&new_key.key_id).unwrap().revoked_at_unix_secs,
            Some(20)
        );
        assert_eq!(
            reason(keys.verify(new_key.token.as_bytes())),
            AuthFailure::ApiKeyRevoked
        );
        assert!(!keys.is_valid(&new_key.key_id));
        assert!(matches!(
            keys.revoke("0000000000000000", 1),
            Err(SecurityError::NotFound { .. })
        ));
    }

    #[test]
    fn wrong_secret_and_unknown_id_look_the_same() {
        let (new_key, record) = ApiKeyRecord::generate("alice", 0).unwrap();
        let (other, _) = ApiKeyRecord::generate("alice", 0).unwrap();
        let mut keys = ApiKeys::default();
        keys.insert(record).unwrap();
        // The right id with another key's secret.
        let forged = format!("neoak_{}_{}", new_key.key_id, &other.token[23..]);
        assert_eq!(
            reason(keys.verify(forged.as_bytes())),
            AuthFailure::ApiKeyInvalid
        );
        assert_eq!(
            reason(keys.verify(other.token.as_bytes())),
            AuthFailure::ApiKeyInvalid
        );
    }

    #[test]
    fn malformed_tokens() {
        let keys = ApiKeys::default();
        for token in [
            "neoak_",
            "neoak_0011223344556677",
            "neoak_001122334455667_AAAA",
            "neoak_00112233445566XY_AAAA",
            "neoak_0011223344556677_not*base64",
            "neoak_0011223344556677_AAAA",
        ] {
            assert_eq!(
                reason(keys.verify(token.as_bytes())),
                AuthFailure::Malformed,
                "{token}"
            );
        }
        assert_eq!(reason(keys.verify(b"neoak_\xff")), AuthFailure::Malformed);
    }

    #[test]
    fn state_round_trips_through_qiss_and_keeps_no_secret() {
        let (new_key, record) = ApiKeyRecord::generate("alice", 5).unwrap();
        let mut keys = ApiKeys::default();
        keys.insert(record).unwrap();
        let bytes = qiss::to_vec(&keys).unwrap();
        let secret = URL_SAFE_NO_PAD.decode(&new_key.token[23..]).unwrap();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        let back: ApiKeys = qiss::from_slice(&bytes).unwrap();
        assert_eq!(back, keys);
        assert!(back.verify(new_key.token.as_bytes()).is_ok());
    }

    #[test]
    fn authenticator_updates_are_atomic() {
        let auth = ApiKeyAuthenticator::default();
        let (new_key, record) = ApiKeyRecord::generate("bob", 0).unwrap();
        auth.update(|k| k.insert(record)).unwrap();
        assert!(auth.verify(new_key.token.as_bytes()).is_ok());
        let err = auth.update(|k| {
            k.revoke(&new_key.key_id, 1)?;
            k.revoke("ffffffffffffffff", 1)
        });
        assert!(err.is_err());
        // The failed change left the key live.
        assert!(auth.is_valid(&new_key.key_id));
        auth.update(|k| k.revoke(&new_key.key_id, 2)).unwrap();
        assert!(!auth.is_valid(&new_key.key_id));
    }
}
