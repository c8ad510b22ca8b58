//! Client-side end-to-end payload encryption: a [`Producer`](crate::Producer) with a
//! key ring seals every record value before it joins a batch; a
//! [`Consumer`](crate::Consumer) or [`GroupConsumer`](crate::GroupConsumer) with the
//! key ring opens them again. The broker stores and replicates ciphertext only and never
//! holds a key.
//!
//! ```text
//! Producer::send(record) ─▶ SharedKeyring::seal: current key, fresh random nonce,
//!   AAD = (version, algorithm, key id) ‖ origin topic ─▶ value = ciphertext ‖ tag,
//!   header neo-enc = version | algorithm | nonce | key id ─▶ batch ─▶ broker
//! Consumer::poll ─▶ fetch ─▶ record with neo-enc? ─▶ key by id, same AAD ─▶ plaintext
//!   (neo-enc removed) | typed per-record error (never the ciphertext as a value)
//! ```
//!
//! # Record headers
//!
//! - `neo-enc` ([`ENCRYPTION_HEADER`]), binary, 15 to 78 bytes ([`EncryptionHeader`]):
//!   ```text
//!   version u8 = 1 | algorithm u8 (1 = AES-256-GCM, 2 = ChaCha20-Poly1305)
//!     | nonce (12 bytes, random per record) | key id (1..=64 bytes, UTF-8, the rest)
//!   ```
//!   The value is then exactly the ciphertext followed by the 16-byte tag.
//! - `neo-enc-topic` ([`ORIGIN_TOPIC_HEADER`]): the topic the value was encrypted for,
//!   present only on a record re-published elsewhere (dead-lettered, redriven,
//!   mirrored; [`forward`] adds it).
//!
//! # Associated data
//!
//! Each value is sealed with [`Keyring::seal`] (neo-security's [`Sealed`] pieces): the
//! associated data is the envelope header (version, algorithm, key id) followed by the
//! *origin topic*, which is the `neo-enc-topic` header when the record has one and the
//! record's topic otherwise (the same rule on both sides). A value moved to another
//! topic without that header, relabelled with another key id or algorithm, or changed
//! by one bit does not decrypt. A record that does carry `neo-enc-topic` decrypts in any
//! topic, as a record *of its origin topic*: the header stays on the decrypted record so
//! that an application which must not accept moved records can refuse it.
//!
//! Not encrypted: keys (they choose the partition), header names and values, timestamps,
//! topic names, and the value's length (ciphertext = plaintext + 16 bytes).
//!
//! # Rotation and crypto-shredding
//!
//! A [`SharedKeyring`] is one ring shared by every producer and consumer given a clone
//! of it; the application changes it while they run. [`SharedKeyring::add_key`] makes
//! the new key current: records sent from then on use it, records under older keys
//! still decrypt while those keys stay in the ring. [`SharedKeyring::retire`] removes a
//! (non-current) key: every record sealed under it becomes unreadable to this ring
//! (crypto-shredding; copies of the key kept elsewhere still read them).
//!
//! # Errors, and records without the header
//!
//! A record without `neo-enc` passes through unchanged (topics may mix plaintext and
//! ciphertext). A record with it that cannot be decrypted (unknown or retired key,
//! wrong key under the same id, tampering, another topic, a malformed header) is an
//! [`EncryptionError`] for that record alone: [`Consumer::poll`](crate::Consumer::poll)
//! answers [`Error::Decrypt`] naming the record and stops its partition there (skip it
//! with `seek(topic, partition, offset + 1)`, or add the key and poll again);
//! [`Consumer::poll_each`](crate::Consumer::poll_each) returns every record as
//! `Ok(plaintext)` or `Err(`[`UndecryptableRecord`]`)` with the record as stored. A
//! consumer without a key ring (`encryption: None`) sees records as stored, ciphertext
//! and `neo-enc` header included: that is how mirroring and [`forward`] read them.

use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use neo_security::crypto::Sealed;
pub use neo_security::crypto::{AeadAlgorithm, KEY_BYTES, Keyring};
use neo_security::limits::ENCRYPTION_KEY_ID_BYTES_MAX;
pub use neo_security::{CryptoFailure, SecurityError};

use crate::consumer::ConsumerRecord;
use crate::error::Error;
use crate::producer::ProducerRecord;

/// The header that marks an encrypted value and says how to open it.
pub const ENCRYPTION_HEADER: &str = "neo-enc";

/// The header naming the topic a re-published record's value was encrypted for.
pub const ORIGIN_TOPIC_HEADER: &str = "neo-enc-topic";

/// The `neo-enc` layout version this build writes and reads.
pub const ENCRYPTION_HEADER_VERSION: u8 = 1;

const NONCE_BYTES: usize = 12;
/// Version, algorithm, nonce: the part of `neo-enc` before the key id.
const HEADER_FIXED_BYTES: usize = 2 + NONCE_BYTES;

/// Longest `neo-enc` header value.
pub const ENCRYPTION_HEADER_BYTES_MAX: usize = HEADER_FIXED_BYTES + ENCRYPTION_KEY_ID_BYTES_MAX;

/// Why one record's value could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionError {
    /// The `neo-enc` or `neo-enc-topic` header is malformed (length, UTF-8, repeated).
    #[error("malformed {header} header: {reason}")]
    MalformedHeader {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key ring refused: `UnknownKey` (never held or retired), `DecryptFailed`
    /// (another key under the same id, a changed byte, another topic),
    /// `UnsupportedVersion` / `UnsupportedAlgorithm` (from the header), `NoCurrentKey`
    /// (sealing with an empty ring), `Random`.
    #[error(transparent)]
    Crypto(#[from] CryptoFailure),
    /// Another error of the key ring (not expected from sealing or opening).
    #[error(transparent)]
    Keyring(Box<SecurityError>),
}

impl From<SecurityError> for EncryptionError {
    fn from(err: SecurityError) -> EncryptionError {
        match err {
            SecurityError::Crypto(failure) => EncryptionError::Crypto(failure),
            other => EncryptionError::Keyring(Box::new(other)),
        }
    }
}

/// A record a consumer could not decrypt, as stored (ciphertext value, `neo-enc`
/// header), with the reason. [`forward`] can re-publish it (a dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "record {}/{}@{} cannot be decrypted: {error}",
    record.topic,
    record.partition,
    record.offset
)]
pub struct UndecryptableRecord {
    /// The record as the broker returned it.
    pub record: ConsumerRecord,
    /// Why it could not be decrypted.
    #[source]
    pub error: EncryptionError,
}

impl From<UndecryptableRecord> for Error {
    fn from(undecryptable: UndecryptableRecord) -> Error {
        let UndecryptableRecord { record, error } = undecryptable;
        Error::Decrypt {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            source: error,
        }
    }
}

/// One record of [`Consumer::poll_each`](crate::Consumer::poll_each): decrypted (or
/// never encrypted), or the record as stored and why it could not be decrypted.
pub type RecordResult = std::result::Result<ConsumerRecord, UndecryptableRecord>;

/// The parsed `neo-enc` header of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionHeader {
    /// The AEAD.
    pub algorithm: AeadAlgorithm,
    /// The nonce (random per record).
    pub nonce: [u8; NONCE_BYTES],
    /// The key the value was sealed under.
    pub key_id: String,
}

impl EncryptionHeader {
    /// The header value (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = [0; ENCRYPTION_HEADER_BYTES_MAX];
        let len = self.write_to(&mut out);
        out[..len].to_vec()
    }

    /// Write the header value into `out`; its length. A key id longer than the key
    /// ring allows is cut (the ring never makes one).
    fn write_to(&self, out: &mut [u8; ENCRYPTION_HEADER_BYTES_MAX]) -> usize {
        out[0] = ENCRYPTION_HEADER_VERSION;
        out[1] = self.algorithm.id();
        out[2..HEADER_FIXED_BYTES].copy_from_slice(&self.nonce);
        let id = &self.key_id.as_bytes()[..self.key_id.len().min(ENCRYPTION_KEY_ID_BYTES_MAX)];
        let len = HEADER_FIXED_BYTES + id.len();
        out[HEADER_FIXED_BYTES..len].copy_from_slice(id);
        len
    }

    /// Parse a header value: check, then parse; every length is bounded.
    pub fn parse(bytes: &[u8]) -> Result<EncryptionHeader, EncryptionError> {
        let malformed = |reason| EncryptionError::MalformedHeader {
            header: ENCRYPTION_HEADER,
            reason,
        };
        let (&version, rest) = bytes.split_first().ok_or(malformed("empty"))?;
        if version != ENCRYPTION_HEADER_VERSION {
            return Err(CryptoFailure::UnsupportedVersion { version }.into());
        }
        let (&algorithm, rest) = rest.split_first().ok_or(malformed("truncated"))?;
        let algorithm = AeadAlgorithm::from_id(algorithm)
            .ok_or(CryptoFailure::UnsupportedAlgorithm { algorithm })?;
        if rest.len() <= NONCE_BYTES {
            return Err(malformed("truncated"));
        }
        if rest.len() > NONCE_BYTES + ENCRYPTION_KEY_ID_BYTES_MAX {
            return Err(malformed("key id longer than 64 bytes"));
        }
        let (nonce, key_id) = rest.split_at(NONCE_BYTES);
        let key_id = std::str::from_utf8(key_id).map_err(|_| malformed("key id not UTF-8"))?;
        Ok(EncryptionHeader {
            algorithm,
            nonce: nonce.try_into().map_err(|_| malformed("truncated"))?,
            key_id: key_id.to_string(),
        })
    }
}

/// A value sealed for a producer: what replaces the value, and the `neo-enc` header
/// (on the stack: one allocation less per record).
#[derive(Debug)]
pub(crate) struct SealedValue {
    pub(crate) ciphertext: Vec<u8>,
    header: [u8; ENCRYPTION_HEADER_BYTES_MAX],
    header_len: usize,
}

impl SealedValue {
    /// The `neo-enc` header value.
    pub(crate) fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }
}

/// How a consumer treats a record it cannot decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecryptMode {
    /// `poll`: a partition's records end before it; the position stays at it.
    StopAtFailure,
    /// `poll_each`: it is returned as an `Err` item; the position moves past it.
    EachRecord,
}

/// One partition's fetched records after decryption.
#[derive(Debug, Default)]
pub(crate) struct DecryptedRecords {
    /// In offset order.
    pub(crate) records: Vec<RecordResult>,
    /// With [`DecryptMode::StopAtFailure`]: the record decryption stopped at (the
    /// records after it were dropped, to be fetched again).
    pub(crate) stopped: Option<UndecryptableRecord>,
}

/// The header `name` of a record, if present once; repeated is an error.
fn single<'a>(
    headers: &'a [(String, Bytes)],
    name: &'static str,
) -> Result<Option<&'a Bytes>, EncryptionError> {
    let mut found = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(EncryptionError::MalformedHeader {
            header: name,
            reason: "repeated",
        });
    }
    Ok(first)
}

/// The origin topic bound as associated data: `neo-enc-topic` if present, else `topic`.
fn origin<'a>(topic: &'a str, headers: &'a [(String, Bytes)]) -> Result<&'a [u8], EncryptionError> {
    match single(headers, ORIGIN_TOPIC_HEADER)? {
        Some(origin) if origin.is_empty() => Err(EncryptionError::MalformedHeader {
            header: ORIGIN_TOPIC_HEADER,
            reason: "empty",
        }),
        Some(origin) => Ok(origin),
        None => Ok(topic.as_bytes()),
    }
}

/// One key ring shared by producers, consumers and the application that rotates it.
/// Cloning shares the ring: a key added or retired through any clone is in force for
/// every record sealed or opened after that call returns.
#[derive(Clone, Default)]
pub struct SharedKeyring {
    ring: Arc<RwLock<Keyring>>,
}

impl fmt::Debug for SharedKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ring's Debug shows key ids only, never key material.
        fmt::Debug::fmt(&*self.read(), f)
    }
}

impl From<Keyring> for SharedKeyring {
    fn from(ring: Keyring) -> SharedKeyring {
        SharedKeyring::new(ring)
    }
}

impl SharedKeyring {
    /// Share `ring`.
    pub fn new(ring: Keyring) -> SharedKeyring {
        SharedKeyring {
            ring: Arc::new(RwLock::new(ring)),
        }
    }

    /// A ring holding one key, current.
    pub fn with_key(
        key_id: &str,
        algorithm: AeadAlgorithm,
        material: &[u8],
    ) -> Result<SharedKeyring, SecurityError> {
        let shared = SharedKeyring::default();
        shared.add_key(key_id, algorithm, material)?;
        Ok(shared)
    }

    /// Add a key (`KEY_BYTES` of material) and make it current: records sealed from now
    /// on use it; older keys still decrypt. The id must be new.
    pub fn add_key(
        &self,
        key_id: &str,
        algorithm: AeadAlgorithm,
        material: &[u8],
    ) -> Result<(), SecurityError> {
        self.write().add_key(key_id, algorithm, material)
    }

    /// Remove a key that is not current: records sealed under it can no longer be
    /// decrypted with this ring (crypto-shredding).
    pub fn retire(&self, key_id: &str) -> Result<(), SecurityError> {
        self.write().retire(key_id)
    }

    /// The key new records are sealed under.
    pub fn current_key_id(&self) -> Option<String> {
        self.read().current_key_id().map(str::to_string)
    }

    /// Every key id held.
    pub fn key_ids(&self) -> Vec<String> {
        self.read().key_ids().map(str::to_string).collect()
    }

    /// Encrypt `record` in place, as an encrypting producer does (a record that
    /// already carries `neo-enc` is left as it is). For sending through a producer
    /// without a key ring.
    pub fn encrypt(&self, record: &mut ProducerRecord) -> Result<(), EncryptionError> {
        if let Some(sealed) = self.seal(&record.topic, &record.headers, &record.value)? {
            let header = Bytes::copy_from_slice(sealed.header());
            record.value = Bytes::from(sealed.ciphertext);
            record.headers.push((ENCRYPTION_HEADER.to_string(), header));
        }
        Ok(())
    }

    /// Decrypt `record` in place, as a consumer with this ring does: `Ok(true)` when it
    /// was encrypted (the value is now the plaintext and `neo-enc` is gone),
    /// `Ok(false)` when it carries no `neo-enc` (unchanged). On error the record is
    /// unchanged.
    pub fn decrypt(&self, record: &mut ConsumerRecord) -> Result<bool, EncryptionError> {
        open_in_place(&self.read(), record)
    }

    /// The sealed value and `neo-enc` header for a record of `topic`, or `None` when
    /// the record already carries `neo-enc` (forwarded as it is).
    pub(crate) fn seal(
        &self,
        topic: &str,
        headers: &[(String, Bytes)],
        value: &[u8],
    ) -> Result<Option<SealedValue>, EncryptionError> {
        if single(headers, ENCRYPTION_HEADER)?.is_some() {
            return Ok(None);
        }
        let context = origin(topic, headers)?;
        let sealed = self.read().seal(value, context)?;
        let header = EncryptionHeader {
            algorithm: sealed.algorithm,
            nonce: sealed.nonce,
            key_id: sealed.key_id,
        };
        let mut out = SealedValue {
            ciphertext: sealed.ciphertext,
            header: [0; ENCRYPTION_HEADER_BYTES_MAX],
            header_len: 0,
        };
        out.header_len = header.write_to(&mut out.header);
        Ok(Some(out))
    }

    /// Decrypt one partition's fetched records (in offset order), per `mode`.
    pub(crate) fn decrypt_records(
        &self,
        records: Vec<ConsumerRecord>,
        mode: DecryptMode,
    ) -> DecryptedRecords {
        let ring = self.read();
        let mut out = DecryptedRecords {
            records: Vec::with_capacity(records.len()),
            stopped: None,
        };
        for mut record in records {
            match open_in_place(&ring, &mut record) {
                Ok(_) => out.records.push(Ok(record)),
                Err(error) => {
                    let undecryptable = UndecryptableRecord { record, error };
                    match mode {
                        DecryptMode::EachRecord => out.records.push(Err(undecryptable)),
                        DecryptMode::StopAtFailure => {
                            out.stopped = Some(undecryptable);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    fn read(&self) -> RwLockReadGuard<'_, Keyring> {
        // A panic elsewhere while holding the lock leaves the ring consistent: every
        // Keyring method changes it in one step.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Keyring> {
        self.ring.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Open `record` with `ring` (see [`SharedKeyring::decrypt`]).
fn open_in_place(ring: &Keyring, record: &mut ConsumerRecord) -> Result<bool, EncryptionError> {
    let Some(header) = single(&record.headers, ENCRYPTION_HEADER)? else {
        return Ok(false);
    };
    let header = EncryptionHeader::parse(header)?;
    let context = origin(&record.topic, &record.headers)?;
    let sealed = Sealed {
        key_id: header.key_id,
        algorithm: header.algorithm,
        nonce: header.nonce,
        ciphertext: record.value.to_vec(),
    };
    let plaintext = ring.open(&sealed, context)?;
    record.value = Bytes::from(plaintext);
    record.headers.retain(|(name, _)| name != ENCRYPTION_HEADER);
    Ok(true)
}

/// `record` as stored, addressed to `topic` (dead-lettering, redrive, mirroring): same
/// key, value, headers and timestamp, partition chosen by key in `topic`. When the
/// value is encrypted and the record has no `neo-enc-topic` yet, that header is added
/// with the record's topic, so that the value still decrypts where it lands. Send it
/// with any producer: a record carrying `neo-enc` is never encrypted again.
pub fn forward(record: &ConsumerRecord, topic: impl Into<String>) -> ProducerRecord {
    let mut headers = record.headers.clone();
    let encrypted = headers.iter().any(|(n, _)| n == ENCRYPTION_HEADER);
    if encrypted && !headers.iter().any(|(n, _)| n == ORIGIN_TOPIC_HEADER) {
        headers.push((
            ORIGIN_TOPIC_HEADER.to_string(),
            Bytes::copy_from_slice(record.topic.as_bytes()),
        ));
    }
    ProducerRecord {
        topic: topic.into(),
        partition: None,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
        timestamp_ms: Some(record.timestamp_ms),
    }
}

#[cfg(test)]
mod tests;
