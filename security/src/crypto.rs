//! Payload encryption: AES-256-GCM or ChaCha20-Poly1305 envelopes under a rotating key
//! ring (ring's AEADs).
//!
//! # Envelope (version 1)
//! ```text
//! version u8 = 1 | algorithm u8 | key id length u8 | key id (1..=64 B, UTF-8)
//!   | nonce (12 B, random per envelope) | ciphertext ‖ tag (16 B)
//! ```
//! The associated data authenticated with each envelope is its header (version,
//! algorithm, key id) followed by the caller's context, e.g. the record's original topic:
//! an envelope moved to another topic, or relabelled with another key id, fails to open.
//! The pieces are also available unencoded ([`Sealed`]) for a caller that puts the key
//! id and algorithm in record headers instead.
//!
//! # Rotation
//! [`Keyring::add_key`] makes the new key current: new envelopes use it, envelopes
//! under older keys still open while those keys stay in the ring. [`Keyring::retire`]
//! removes a key: what was sealed under it can no longer be read by anyone holding only
//! this ring (crypto-shredding). The current key cannot be retired.
//!
//! Random 96-bit nonces are safe for about 2³² envelopes per key (NIST SP 800-38D's
//! bound for AES-GCM); rotate well before that.

use std::collections::BTreeMap;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{CryptoFailure, SecurityError};
use crate::limits::{ENCRYPTION_KEY_ID_BYTES_MAX, KEYRING_KEYS_MAX};

/// The envelope format version written by this build.
pub const ENVELOPE_VERSION: u8 = 1;

/// Bytes of key material per key (both algorithms use 256-bit keys).
pub const KEY_BYTES: usize = 32;

const NONCE_BYTES: usize = aead::NONCE_LEN;
const TAG_BYTES: usize = 16;

/// The AEAD of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AeadAlgorithm {
    /// AES-256 in Galois/Counter Mode (fast with AES-NI / ARMv8 crypto).
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305 (fast without AES hardware).
    ChaCha20Poly1305 = 2,
}

impl AeadAlgorithm {
    /// The byte in envelopes.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The algorithm with this byte.
    pub fn from_id(id: u8) -> Option<AeadAlgorithm> {
        match id {
            1 => Some(AeadAlgorithm::Aes256Gcm),
            2 => Some(AeadAlgorithm::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The name for record headers and logs.
    pub fn name(self) -> &'static str {
        match self {
            AeadAlgorithm::Aes256Gcm => "AES-256-GCM",
            AeadAlgorithm::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    fn ring(self) -> &'static aead::Algorithm {
        match self {
            AeadAlgorithm::Aes256Gcm => &aead::AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One sealed payload, unencoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The key it was sealed under.
    pub key_id: String,
    /// The AEAD.
    pub algorithm: AeadAlgorithm,
    /// The nonce.
    pub nonce: [u8; NONCE_BYTES],
    /// Ciphertext followed by the tag.
    pub ciphertext: Vec<u8>,
}

fn header(algorithm: AeadAlgorithm, key_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + key_id.len());
    out.push(ENVELOPE_VERSION);
    out.push(algorithm.id());
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out
}

impl Sealed {
    /// The envelope bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = header(self.algorithm, &self.key_id);
        out.reserve(NONCE_BYTES + self.ciphertext.len());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parse an envelope: check, then parse; every length is bounded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sealed, SecurityError> {
        let malformed = || SecurityError::from(CryptoFailure::Malformed);
        let (&version, rest) = bytes.split_first().ok_or_else(malformed)?;
        if version != ENVELOPE_VERSION {
            return Err(CryptoFailure::UnsupportedVersion { version }.into());
        }
        let (&algorithm, rest) = rest.split_first().ok_or_else(malformed)?;
        let algorithm = AeadAlgorithm::from_id(algorithm)
            .ok_or(CryptoFailure::UnsupportedAlgorithm { algorithm })?;
        let (&id_len, rest) = rest.split_first().ok_or_else(malformed)?;
        let id_len = usize::from(id_len);
        if id_len == 0
            || id_len > ENCRYPTION_KEY_ID_BYTES_MAX
            || rest.len() < id_len + NONCE_BYTES + TAG_BYTES
        {
            return Err(malformed());
        }
        let (key_id, rest) = rest.split_at(id_len);
        let key_id = std::str::from_utf8(key_id).map_err(|_| malformed())?;
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        Ok(Sealed {
            key_id: key_id.to_string(),
            algorithm,
            nonce: nonce.try_into().map_err(|_| malformed())?,
            ciphertext: ciphertext.to_vec(),
        })
    }

    fn aad(&self, context: &[u8]) -> Vec<u8> {
        let mut aad = header(self.algorithm, &self.key_id);
        aad.extend_from_slice(context);
        aad
    }
}

struct RingKey {
    algorithm: AeadAlgorithm,
    key: LessSafeKey,
}

/// Keys by id, one of them current.
pub struct Keyring {
    keys: BTreeMap<String, RingKey>,
    current: Option<String>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: never key material.
        f.debug_struct("Keyring")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl Default for Keyring {
    fn default() -> Keyring {
        Keyring::new()
    }
}

impl Keyring {
    /// An empty ring (seals nothing, opens nothing).
    pub fn new() -> Keyring {
        Keyring {
            keys: BTreeMap::new(),
            current: None,
            rng: SystemRandom::new(),
        }
    }

    /// Fresh random key material (for tools that mint keys).
    pub fn generate_key() -> Result<[u8; KEY_BYTES], SecurityError> {
        let mut key = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| CryptoFailure::Random)?;
        Ok(key)
    }

    /// Add a key and make it current (rotation). The id must be new.
    pub fn add_key(
        &mut self,
        key_id: &str,
        algorithm: AeadAlgorithm,
        material: &[u8],
    ) -> Result<(), SecurityError> {
        if key_id.is_empty() || key_id.len() > ENCRYPTION_KEY_ID_BYTES_MAX {
            return Err(SecurityError::Invalid {
                what: "encryption key id",
                value: key_id.chars().take(64).collect(),
                reason: "must be 1..=64 bytes",
            });
        }
        if self.keys.contains_key(key_id) {
            return Err(SecurityError::AlreadyExists {
                what: "encryption key",
                name: key_id.to_string(),
            });
        }
        if self.keys.len() >= KEYRING_KEYS_MAX {
            return Err(SecurityError::LimitExceeded {
                what: "encryption keys",
                max: KEYRING_KEYS_MAX,
            });
        }
        if material.len() != KEY_BYTES {
            return Err(SecurityError::InvalidKey {
                what: format!("encryption key {key_id:?}"),
                reason: format!("must be {KEY_BYTES} bytes"),
            });
        }
        let unbound =
            UnboundKey::new(algorithm.ring(), material).map_err(|_| SecurityError::InvalidKey {
                what: format!("encryption key {key_id:?}"),
                reason: "rejected by the AEAD".into(),
            })?;
        self.keys.insert(
            key_id.to_string(),
            RingKey {
                algorithm,
                key: LessSafeKey::new(unbound),
            },
        );
        self.current = Some(key_id.to_string());
        Ok(())
    }

    /// Remove a key that is not current; what it sealed can no longer be opened.
    pub fn retire(&mut self, key_id: &str) -> Result<(), SecurityError> {
        if self.current.as_deref() == Some(key_id) {
            return Err(SecurityError::Invalid {
                what: "key retirement",
                value: key_id.to_string(),
                reason: "the current key cannot be retired; add a new key first",
            });
        }
        self.keys
            .remove(key_id)
            .map(|_| ())
            .ok_or_else(|| SecurityError::NotFound {
                what: "encryption key",
                name: key_id.to_string(),
            })
    }

    /// The key new envelopes use.
    pub fn current_key_id(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Every key id held.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Seal `plaintext` under the current key, binding `context` (e.g. the topic).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Sealed, SecurityError> {
        let key_id = self.current.as_deref().ok_or(CryptoFailure::NoCurrentKey)?;
        let key = &self.keys[key_id];
        let mut nonce = [0u8; NONCE_BYTES];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| CryptoFailure::Random)?;
        let mut sealed = Sealed {
            key_id: key_id.to_string(),
            algorithm: key.algorithm,
            nonce,
            ciphertext: Vec::with_capacity(plaintext.len() + TAG_BYTES),
        };
        let aad = sealed.aad(context);
        sealed.ciphertext.extend_from_slice(plaintext);
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed.ciphertext,
            )
            .map_err(|_| CryptoFailure::DecryptFailed)?;
        Ok(sealed)
    }

    /// Open `sealed` with the key it names; `context` must be what it was sealed with.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| CryptoFailure::UnknownKey {
                key_id: sealed.key_id.clone(),
            })?;
        if key.algorithm != sealed.algorithm {
            // The id names a key of another algorithm: not what sealed this.
            return Err(CryptoFailure::DecryptFailed.into());
        }
        let aad = sealed.aad(context);
        let mut buf = sealed.ciphertext.clone();
        let plaintext = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(&aad),
                &mut buf,
            )
            .map_err(|_| CryptoFailure::DecryptFailed)?;
        let len = plaintext.len();
        buf.truncate(len);
        Ok(buf)
    }

    /// [`Keyring::seal`], encoded as an envelope.
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SecurityError> {
        Ok(self.seal(plaintext, context)?.to_bytes())
    }

    /// Decode an envelope and [`Keyring::open`] it.
    pub fn decrypt(&self, envelope: &[u8], context: &[u8]) -> Result<Vec<u8>, SecurityError> {
        self.open(&Sealed::from_bytes(envelope)?, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring_with(keys: &[(&str, AeadAlgorithm, u8)]) -> Keyring {
        let mut ring = Keyring::new();
        for (id, alg, fill) in keys {
            ring.add_key(id, *alg, &[*fill; KEY_BYTES]).unwrap();
        }
        ring
    }

    fn failure(result: Result<Vec<u8>, SecurityError>) -> CryptoFailure {
        match result {
            Err(SecurityError::Crypto(f)) => f,
            other => panic!("expected a crypto failure, got {other:?}"),
        }
    }

    #[test]
    fn rotation_keeps_old_envelopes_readable() {
        let mut ring = ring_with(&[("k1", AeadAlgorithm::Aes256Gcm, 1)]);
        let old = ring.encrypt(b"first", b"orders").unwrap();
        ring.add_key("k2", AeadAlgorithm::ChaCha20Poly1305, &[2; KEY_BYTES])
            .unwrap();
        assert_eq!(ring.current_key_id(), Some("k2"));
        let new = ring.seal(b"second", b"orders").unwrap();
        assert_eq!(
            (new.key_id.as_str(), new.algorithm),
            ("k2", AeadAlgorithm::ChaCha20Poly1305)
        );
        assert_eq!(ring.decrypt(&old, b"orders").unwrap(), b"first");
        assert_eq!(ring.open(&new, b"orders").unwrap(), b"second");
        // Retiring k1 shreds what it sealed; the current key cannot be retired.
        assert!(ring.retire("k2").is_err());
        ring.retire("k1").unwrap();
        assert_eq!(
            failure(ring.decrypt(&old, b"orders")),
            CryptoFailure::UnknownKey {
                key_id: "k1".into()
            }
        );
        assert!(
            ring.add_key("k2", AeadAlgorithm::Aes256Gcm, &[3; KEY_BYTES])
                .is_err()
        );
        assert!(
            ring.add_key("k3", AeadAlgorithm::Aes256Gcm, &[3; 16])
                .is_err()
        );
    }

    #[test]
    fn wrong_key_context_or_tampering_is_an_error() {
        let ring = ring_with(&[("k1", AeadAlgorithm::Aes256Gcm, 1)]);
        let envelope = ring.encrypt(b"payload", b"orders").unwrap();
        // Same id, other key material: a reader with the wrong ring.
        let other = ring_with(&[("k1", AeadAlgorithm::Aes256Gcm, 9)]);
        assert_eq!(
            failure(other.decrypt(&envelope, b"orders")),
            CryptoFailure::DecryptFailed
        );
        // Same id, other algorithm.
        let other = ring_with(&[("k1", AeadAlgorithm::ChaCha20Poly1305, 1)]);
        assert_eq!(
            failure(other.decrypt(&envelope, b"orders")),
            CryptoFailure::DecryptFailed
        );
        // Moved to another topic.
        assert_eq!(
            failure(ring.decrypt(&envelope, b"payments")),
            CryptoFailure::DecryptFailed
        );
        // A flipped byte in the ciphertext, and in the nonce.
        let mut bad = envelope.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            failure(ring.decrypt(&bad, b"orders")),
            CryptoFailure::DecryptFailed
        );
        let mut bad = envelope.clone();
        bad[6] ^= 1;
        assert_eq!(
            failure(ring.decrypt(&bad, b"orders")),
            CryptoFailure::DecryptFailed
        );
        // Relabelled to another key the reader holds.
        let two = ring_with(&[
            ("k1", AeadAlgorithm::Aes256Gcm, 1),
            ("k2", AeadAlgorithm::Aes256Gcm, 1),
        ]);
        let mut relabelled = envelope.clone();
        relabelled[4] = b'2';
        assert_eq!(
            failure(two.decrypt(&relabelled, b"orders")),
            CryptoFailure::DecryptFailed
        );
        // Structure.
        assert_eq!(
            failure(ring.decrypt(&envelope[..20], b"orders")),
            CryptoFailure::Malformed
        );
        assert_eq!(
            failure(ring.decrypt(&[], b"orders")),
            CryptoFailure::Malformed
        );
        let mut v2 = envelope.clone();
        v2[0] = 2;
        assert_eq!(
            failure(ring.decrypt(&v2, b"orders")),
            CryptoFailure::UnsupportedVersion { version: 2 }
        );
        let mut alg = envelope;
        alg[1] = 7;
        assert_eq!(
            failure(ring.decrypt(&alg, b"orders")),
            CryptoFailure::UnsupportedAlgorithm { algorithm: 7 }
        );
        assert!(matches!(
            Keyring::new().seal(b"x", b""),
            Err(SecurityError::Crypto(CryptoFailure::NoCurrentKey))
        ));
    }

    #[test]
    fn nonces_differ() {
        let ring = ring_with(&[("k", AeadAlgorithm::Aes256Gcm, 1)]);
        let a = ring.seal(b"same", b"t").unwrap();
        let b = ring.seal(b"same", b"t").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(Keyring::generate_key().unwrap().len(), KEY_BYTES);
        assert!(!format!("{ring:?}").contains("[1, 1"));
    }

    proptest! {
        #[test]
        fn round_trip_and_any_flip_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            context in proptest::collection::vec(any::<u8>(), 0..32),
            chacha in any::<bool>(),
            flip in any::<proptest::sample::Index>(),
        ) {
            let alg = if chacha { AeadAlgorithm::ChaCha20Poly1305 } else { AeadAlgorithm::Aes256Gcm };
            let ring = ring_with(&[("key-1", alg, 7)]);
            let envelope = ring.encrypt(&plaintext, &context).unwrap();
            prop_assert_eq!(ring.decrypt(&envelope, &context).unwrap(), plaintext);
            let mut bad = envelope.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x40;
            prop_assert!(ring.decrypt(&bad, &context).is_err());
        }
    }
}
