//! Encryption at rest of a segment log: every batch's records section is stored under a
//! key of this log, derived from the node's key; headers stay readable.
//!
//! # What is encrypted, and how
//!
//! A batch on disk is its 77-byte header (offsets, Raft stamps, CRC, attributes, record
//! count, timestamps, producer id: in the clear, so recovery, indexes, truncation and
//! retention work without the key) followed by its records section (keys, values,
//! headers of every record), which is XORed with a keystream: **AES-256 in counter
//! mode**, computed by ring's AES-256-GCM sealing in place with the tag thrown away
//! (GCM's ciphertext is the plaintext XORed with AES-CTR from counter 2, so the same
//! operation encrypts and decrypts, and the batch keeps its length: positions, sizes
//! and indexes are those of a plaintext log). Each batch's CRC covers its plaintext,
//! and is checked after decryption (recovery, scrubs, consumers).
//!
//! - **Per-log key**: HKDF-SHA256 of the node key with a random 16-byte salt made when
//!   the log is created, so no two logs (or two replicas of one partition, even with
//!   the same node key) share a keystream.
//! - **Nonce**: the batch's Raft log index (8 bytes LE) and term (4 bytes LE). In a
//!   Raft log, a (term, index) pair names one entry, whatever replica or truncation
//!   wrote it, so a nonce is never used for two different records sections under one
//!   key. A term above 2^32 − 1 is refused (no Raft group gets near it). Batches that
//!   carry no Raft stamps (term and index 0) must therefore not be appended twice with
//!   different contents: only Raft log stores open encrypted logs.
//! - **The log's file** `encryption` (next to the segments): magic, version, the salt,
//!   and a 16-byte check value (HKDF of the node key with the salt, for another
//!   purpose) under a CRC. Opening with a different key, or without one, is refused
//!   with [`Error::AtRest`] before any segment is read, so that a wrong key can never
//!   make recovery take good batches for torn ones and cut them.
//!
//! Not covered: integrity against someone who can write the disk (counter mode is
//! malleable; the CRC catches accidents, not forgery: as with dm-crypt), batch headers,
//! the index files, Raft metadata in sled and state-machine snapshots (offsets and
//! delivery state, no record contents).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use qiss::batch::{HEADER_LEN, LOG_INDEX_POS, TERM_POS};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};
use crate::segment;

/// Name of the file that marks a log as encrypted at rest.
pub const ENCRYPTION_FILE: &str = "encryption";

const FILE_MAGIC: &[u8; 4] = b"NEOE";
const FILE_VERSION: u8 = 1;
/// The one algorithm so far: AES-256-CTR (through GCM, tag dropped), HKDF-SHA256 keys.
const ALGORITHM_AES256_CTR: u8 = 1;
const SALT_LEN: usize = 16;
const CHECK_LEN: usize = 16;
/// magic, version, algorithm, salt, check, CRC-32 of everything before it.
const FILE_LEN: usize = 4 + 1 + 1 + SALT_LEN + CHECK_LEN + 4;

const INFO_LOG_KEY: &[u8] = b"neo at-rest v1: segment log key";
const INFO_CHECK: &[u8] = b"neo at-rest v1: key check";

/// A node's key for encryption at rest: 32 bytes, given to every log that must be
/// encrypted. Its `Debug` shows a fingerprint only.
#[derive(Clone)]
pub struct AtRestKey {
    key: Arc<[u8; 32]>,
    fingerprint: String,
}

impl AtRestKey {
    /// A key from its 32 bytes.
    pub fn new(key: [u8; 32]) -> AtRestKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, &key);
        let fingerprint = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        AtRestKey {
            key: Arc::new(key),
            fingerprint,
        }
    }

    /// A key from a key file's contents: 64 hex digits (surrounding whitespace
    /// ignored) or exactly 32 raw bytes. The error says which shape was expected,
    /// never the bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> std::result::Result<AtRestKey, &'static str> {
        let text = std::str::from_utf8(bytes).ok().map(str::trim);
        if let Some(t) = text
            && t.len() == 64
            && t.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let mut key = [0u8; 32];
            for (i, k) in key.iter_mut().enumerate() {
                *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| "bad hex")?;
            }
            return Ok(AtRestKey::new(key));
        }
        match <[u8; 32]>::try_from(bytes) {
            Ok(key) => Ok(AtRestKey::new(key)),
            Err(_) => Err("an at-rest key file holds 64 hex digits or exactly 32 bytes"),
        }
    }

    /// 16 hex digits of SHA-256 of the key: names it in logs without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    fn derive<const N: usize>(&self, salt: &[u8; SALT_LEN], info: &[u8]) -> [u8; N] {
        struct Len(usize);
        impl KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let prk = Salt::new(HKDF_SHA256, salt).extract(&self.key[..]);
        let info = [info];
        let mut out = [0u8; N];
        prk.expand(&info, Len(N))
            .and_then(|okm| okm.fill(&mut out))
            .expect("HKDF-SHA256 output of at most 32 bytes");
        out
    }
}

impl fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtRestKey({})", self.fingerprint)
    }
}

impl PartialEq for AtRestKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for AtRestKey {}

/// The cipher of one open log.
pub(crate) struct LogCipher {
    key: LessSafeKey,
}

impl LogCipher {
    /// The cipher for the log in `dir`, given the node's key (or `None`), checking the
    /// log's `encryption` file; `fresh`: the log has no segment yet (a new log, where an
    /// encrypted one may start). Refuses a wrong key, a missing key for an encrypted
    /// log, and a key for a log that already holds plaintext segments.
    pub(crate) fn for_dir(
        dir: &Path,
        key: Option<&AtRestKey>,
        fresh: bool,
    ) -> Result<Option<LogCipher>> {
        let path = dir.join(ENCRYPTION_FILE);
        let existing = match fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read encryption file", &path, e)),
        };
        let refuse = |reason: &str| Error::AtRest {
            dir: dir.to_path_buf(),
            reason: reason.to_string(),
        };
        match (existing, key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(refuse(
                "the log is encrypted at rest and this node has no at-rest key",
            )),
            (None, Some(_)) if !fresh => Err(refuse(
                "the log holds plaintext segments: encryption at rest cannot be turned on for it",
            )),
            (None, Some(key)) => {
                let mut salt = [0u8; SALT_LEN];
                SystemRandom::new()
                    .fill(&mut salt)
                    .map_err(|_| refuse("the system random generator failed"))?;
                write_file(dir, &salt, &key.derive(&salt, INFO_CHECK))?;
                Ok(Some(LogCipher::new(key, &salt)))
            }
            (Some(bytes), Some(key)) => {
                let (salt, check) = parse_file(&bytes).map_err(refuse)?;
                let expected: [u8; CHECK_LEN] = key.derive(&salt, INFO_CHECK);
                if !ring_eq(&expected, &check) {
                    return Err(refuse(&format!(
                        "the at-rest key ({}) is not the one this log was encrypted with",
                        key.fingerprint()
                    )));
                }
                Ok(Some(LogCipher::new(key, &salt)))
            }
        }
    }

    fn new(key: &AtRestKey, salt: &[u8; SALT_LEN]) -> LogCipher {
        let k: [u8; 32] = key.derive(salt, INFO_LOG_KEY);
        LogCipher {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("32-byte AES key")),
        }
    }

    /// Encrypts or decrypts (the same operation) the records section of the batch
    /// whose header is `head`: `body` is `batch[HEADER_LEN..]`. Only a term above
    /// 2^32 − 1 is refused.
    pub(crate) fn apply(&self, head: &[u8], body: &mut [u8]) -> std::result::Result<(), String> {
        let le = |pos: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[pos..pos + 8]);
            u64::from_le_bytes(b)
        };
        let (term, index) = (le(TERM_POS), le(LOG_INDEX_POS));
        let term = u32::try_from(term)
            .map_err(|_| format!("Raft term {term} does not fit an at-rest nonce"))?;
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&index.to_le_bytes());
        nonce[8..].copy_from_slice(&term.to_le_bytes());
        // The tag is dropped: only GCM's counter-mode keystream is used (module docs).
        self.key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), body)
            .map(|_tag| ())
            .map_err(|_| "batch too large for the at-rest cipher".to_string())
    }

    /// Decrypts, in place, every batch of `buf` (whole batches, headers in the clear).
    pub(crate) fn apply_all(&self, buf: &mut [u8]) -> std::result::Result<(), String> {
        let mut p = 0usize;
        while p < buf.len() {
            if buf.len() - p < HEADER_LEN {
                return Err("partial batch header".into());
            }
            let len = segment::parse_header(&buf[p..p + HEADER_LEN])?.batch_length as usize;
            if len < HEADER_LEN || p + len > buf.len() {
                return Err("batch runs past the end of the buffer".into());
            }
            let (head, body) = buf[p..p + len].split_at_mut(HEADER_LEN);
            self.apply(head, body)?;
            p += len;
        }
        Ok(())
    }
}

/// Constant-time comparison of two check values.
fn ring_eq(a: &[u8; CHECK_LEN], b: &[u8; CHECK_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_file(
    bytes: &[u8],
) -> std::result::Result<([u8; SALT_LEN], [u8; CHECK_LEN]), &'static str> {
    if bytes.len() != FILE_LEN || &bytes[..4] != FILE_MAGIC {
        return Err("the log's encryption file is damaged (length or magic)");
    }
    let (body, crc) = bytes.split_at(FILE_LEN - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("the log's encryption file is damaged (CRC)");
    }
    if body[4] != FILE_VERSION || body[5] != ALGORITHM_AES256_CTR {
        return Err("the log's encryption file has an unknown version or algorithm");
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&body[6..6 + SALT_LEN]);
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&body[6 + SALT_LEN..]);
    Ok((salt, check))
}

/// Writes the encryption file durably (temporary file, sync, rename, directory sync)
/// before the log's first segment exists.
fn write_file(dir: &Path, salt: &[u8; SALT_LEN], check: &[u8; CHECK_LEN]) -> Result<()> {
    let mut bytes = Vec::with_capacity(FILE_LEN);
    bytes.extend_from_slice(FILE_MAGIC);
    bytes.push(FILE_VERSION);
    bytes.push(ALGORITHM_AES256_CTR);
    bytes.extend_from_slice(salt);
    bytes.extend_from_slice(check);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{ENCRYPTION_FILE}.tmp"));
    let path = dir.join(ENCRYPTION_FILE);
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create encryption file", &tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write encryption file", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename encryption file", &path, e))?;
    segment::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> AtRestKey {
        AtRestKey::new([b; 32])
    }

    #[test]
    fn key_files_parse_hex_or_raw_and_refuse_the_rest() {
        let hex = "ab".repeat(32);
        assert_eq!(
            AtRestKey::from_file_bytes(format!("  {hex}\n").as_bytes()).unwrap(),
            AtRestKey::new([0xab; 32])
        );
        assert_eq!(
            AtRestKey::from_file_bytes(&[7u8; 32]).unwrap(),
            AtRestKey::new([7; 32])
        );
        for bad in [&b""[..], &[1u8; 31], &[1u8; 33], "zz".repeat(32).as_bytes()] {
            assert!(AtRestKey::from_file_bytes(bad).is_err());
        }
        assert!(!format!("{:?}", key(1)).contains("0101"));
    }

    #[test]
    fn keystream_round_trips_and_depends_on_stamps_and_salt() {
        let dir = tempfile::tempdir().unwrap();
        let c = LogCipher::for_dir(dir.path(), Some(&key(1)), true)
            .unwrap()
            .unwrap();
        let mut head = [0u8; HEADER_LEN];
        qiss::batch::set_raft_stamp(&mut head, 3, 17);
        let plain = b"the records section".to_vec();
        let mut body = plain.clone();
        c.apply(&head, &mut body).unwrap();
        assert_ne!(body, plain);
        let enc = body.clone();
        c.apply(&head, &mut body).unwrap();
        assert_eq!(body, plain);
        // Another index, another keystream.
        qiss::batch::set_raft_stamp(&mut head, 3, 18);
        let mut other = plain.clone();
        c.apply(&head, &mut other).unwrap();
        assert_ne!(other, enc);
        // Another log (salt), another keystream for the same stamps.
        let dir2 = tempfile::tempdir().unwrap();
        let c2 = LogCipher::for_dir(dir2.path(), Some(&key(1)), true)
            .unwrap()
            .unwrap();
        qiss::batch::set_raft_stamp(&mut head, 3, 17);
        let mut again = plain.clone();
        c2.apply(&head, &mut again).unwrap();
        assert_ne!(again, enc);
        // A term beyond 32 bits is refused.
        qiss::batch::set_raft_stamp(&mut head, 1 << 32, 1);
        assert!(c.apply(&head, &mut body).is_err());
    }

    #[test]
    fn the_file_pins_the_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            LogCipher::for_dir(dir.path(), Some(&key(1)), true)
                .unwrap()
                .is_some()
        );
        // Same key: opens; another key or none: refused; damaged file: refused.
        assert!(
            LogCipher::for_dir(dir.path(), Some(&key(1)), false)
                .unwrap()
                .is_some()
        );
        let e = LogCipher::for_dir(dir.path(), Some(&key(2)), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not the one"), "{e}");
        let e = LogCipher::for_dir(dir.path(), None, false).err().unwrap();
        assert!(e.to_string().contains("no at-rest key"), "{e}");
        let path = dir.path().join(ENCRYPTION_FILE);
        let mut b = fs::read(&path).unwrap();
        b[10] ^= 1;
        fs::write(&path, b).unwrap();
        let e = LogCipher::for_dir(dir.path(), Some(&key(1)), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("damaged"), "{e}");
        // A plaintext log with segments cannot be turned encrypted.
        let plain = tempfile::tempdir().unwrap();
        assert!(LogCipher::for_dir(plain.path(), Some(&key(1)), false).is_err());
        assert!(
            LogCipher::for_dir(plain.path(), None, false)
                .unwrap()
                .is_none()
        );
    }
}
