//! The small metadata store on sled 0.34: Raft state per group and small keyed state.
//!
//! # Layout
//!
//! One sled tree; keys carry a kind prefix so that one [`MetaBatch`] can update Raft
//! state and keyed state of any groups atomically:
//!
//! ```text
//! b'r' | group u64 BE | field u8            -> Raft field (opaque bytes: the caller encodes)
//! b'k' | namespace_len u8 | namespace | key -> keyed state (consumer offsets, producer ids)
//! ```
//!
//! # Durability
//!
//! sled applies a write in memory and to its log buffer; it is durable only after a
//! flush. [`MetaStore::flush`] calls sled's `flush`, which fsyncs everything written
//! before it started, and returns after that fsync. sled also flushes on its own every
//! `MetaConfig::flush_every_ms` (a loss window, not a promise). So:
//!
//! - after `write`/`set_raft` returns: visible to readers, **not** durable;
//! - after `flush` (or `write_durable`/`set_raft_durable`) returns: durable;
//! - a [`MetaBatch`] is atomic: after a crash either all of it or none of it is there.
//!
//! Raft needs the vote durable before answering a vote request: use `set_raft_durable`.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest namespace of keyed state.
pub const NAMESPACE_BYTES_MAX: usize = 64;
/// Longest key of keyed state.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value (Raft fields included; a membership config is the largest).
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Settings of the metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaConfig {
    /// sled's page cache size.
    pub cache_capacity_bytes: u64,
    /// sled's background flush period (`None`: only explicit flushes).
    pub flush_every_ms: Option<u64>,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_every_ms: Some(500),
        }
    }
}

/// The Raft fields stored per group (values are opaque bytes encoded by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftField {
    /// The last vote.
    Vote,
    /// The last committed log id.
    Committed,
    /// The last purged log id.
    LastPurged,
    /// The last membership config.
    Membership,
}

impl RaftField {
    fn code(self) -> u8 {
        match self {
            RaftField::Vote => 1,
            RaftField::Committed => 2,
            RaftField::LastPurged => 3,
            RaftField::Membership => 4,
        }
    }
}

fn raft_key(group: u64, field: RaftField) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'r';
    k[1..9].copy_from_slice(&group.to_be_bytes());
    k[9] = field.code();
    k
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::TooLarge {
            what,
            size: len as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn keyed_prefix(namespace: &str) -> Result<Vec<u8>> {
    check_len("namespace", namespace.len(), NAMESPACE_BYTES_MAX)?;
    let mut k = Vec::with_capacity(2 + namespace.len());
    k.push(b'k');
    k.push(namespace.len() as u8);
    k.extend_from_slice(namespace.as_bytes());
    Ok(k)
}

fn keyed_key(namespace: &str, key: &[u8]) -> Result<Vec<u8>> {
    check_len("key", key.len(), KEY_BYTES_MAX)?;
    let mut k = keyed_prefix(namespace)?;
    k.extend_from_slice(key);
    Ok(k)
}

fn meta_err(op: &'static str) -> impl Fn(sled::Error) -> Error {
    move |e| Error::Meta {
        op,
        source: Arc::new(e),
    }
}

/// An atomic group of metadata updates.
#[derive(Debug, Default, Clone)]
pub struct MetaBatch {
    batch: sled::Batch,
}

impl MetaBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a Raft field of `group`.
    pub fn set_raft(&mut self, group: u64, field: RaftField, value: &[u8]) -> Result<&mut Self> {
        check_len("value", value.len(), VALUE_BYTES_MAX)?;
        self.batch.insert(&raft_key(group, field), value);
        Ok(self)
    }

    /// Removes a Raft field of `group`.
    pub fn remove_raft(&mut self, group: u64, field: RaftField) -> &mut Self {
        self.batch.remove(&raft_key(group, field));
        self
    }

    /// Sets `key` in `namespace`.
    pub fn put(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<&mut Self> {
        check_len("value", value.len(), VALUE_BYTES_MAX)?;
        self.batch.insert(keyed_key(namespace, key)?, value);
        Ok(self)
    }

    /// Removes `key` from `namespace`.
    pub fn remove(&mut self, namespace: &str, key: &[u8]) -> Result<&mut Self> {
        self.batch.remove(keyed_key(namespace, key)?);
        Ok(self)
    }
}

/// The metadata store of one node (shared by all its Raft groups).
#[derive(Debug, Clone)]
pub struct MetaStore {
    db: sled::Db,
}

/// How long [`MetaStore::open`] waits for the directory's lock while another handle on
/// it may still be shutting down.
const OPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl MetaStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// Dropping a store does not release its directory lock at once (sled's background
    /// flusher holds it until its thread ends), so reopening right after a drop (a node
    /// restarted in the same process) may find it still taken: `open` retries for up to
    /// `OPEN_LOCK_WAIT` (2 s) before failing with the lock error. Any other error fails
    /// at once.
    pub fn open(path: impl AsRef<Path>, config: &MetaConfig) -> Result<MetaStore> {
        let path = path.as_ref();
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            let opened = sled::Config::new()
                .path(path)
                .cache_capacity(config.cache_capacity_bytes)
                .flush_every_ms(config.flush_every_ms)
                .open();
            match opened {
                Ok(db) => return Ok(MetaStore { db }),
                // sled reports the lock as `Other` with this message (sled 0.34).
                Err(sled::Error::Io(err))
                    if err.to_string().starts_with("could not acquire lock")
                        && started.elapsed() < OPEN_LOCK_WAIT =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(err) => return Err(meta_err("open")(err)),
            }
        }
    }

    /// Reads a Raft field of `group`.
    pub fn get_raft(&self, group: u64, field: RaftField) -> Result<Option<Vec<u8>>> {
        let v = self
            .db
            .get(raft_key(group, field))
            .map_err(meta_err("read raft field"))?;
        Ok(v.map(|v| v.to_vec()))
    }

    /// Sets a Raft field (visible now, durable after [`MetaStore::flush`]).
    pub fn set_raft(&self, group: u64, field: RaftField, value: &[u8]) -> Result<()> {
        check_len("value", value.len(), VALUE_BYTES_MAX)?;
        self.db
            .insert(raft_key(group, field), value)
            .map_err(meta_err("write raft field"))?;
        Ok(())
    }

    /// Sets a Raft field and flushes: durable when this returns (e.g. the vote).
    pub fn set_raft_durable(&self, group: u64, field: RaftField, value: &[u8]) -> Result<()> {
        self.set_raft(group, field, value)?;
        self.flush()
    }

    /// Reads `key` of `namespace`.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self
            .db
            .get(keyed_key(namespace, key)?)
            .map_err(meta_err("read key"))?;
        Ok(v.map(|v| v.to_vec()))
    }

    /// Up to `limit` entries of `namespace` whose key starts with `prefix`, in key order.
    pub fn scan(
        &self,
        namespace: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ns = keyed_prefix(namespace)?;
        let mut full = ns.clone();
        full.extend_from_slice(prefix);
        self.db
            .scan_prefix(full)
            .take(limit)
            .map(|kv| {
                let (k, v) = kv.map_err(meta_err("scan keys"))?;
                Ok((k[ns.len()..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Applies `batch` atomically (visible now, durable after [`MetaStore::flush`]).
    pub fn write(&self, batch: MetaBatch) -> Result<()> {
        self.db
            .apply_batch(batch.batch)
            .map_err(meta_err("apply batch"))
    }

    /// Applies `batch` atomically and flushes.
    pub fn write_durable(&self, batch: MetaBatch) -> Result<()> {
        self.write(batch)?;
        self.flush()
    }

    /// Removes every Raft field of `group` (atomically).
    pub fn remove_group(&self, group: u64) -> Result<()> {
        let mut b = MetaBatch::new();
        for f in [
            RaftField::Vote,
            RaftField::Committed,
            RaftField::LastPurged,
            RaftField::Membership,
        ] {
            b.remove_raft(group, f);
        }
        self.write(b)
    }

    /// Makes every earlier write durable (sled `flush`: write out and fsync). Fatal if it
    /// fails: what was written may or may not survive a crash.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(meta_err("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> MetaStore {
        MetaStore::open(dir, &MetaConfig::default()).unwrap()
    }

    #[test]
    fn raft_fields_are_per_group_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = store(dir.path());
            assert_eq!(m.get_raft(1, RaftField::Vote).unwrap(), None);
            m.set_raft_durable(1, RaftField::Vote, b"term=3").unwrap();
            m.set_raft(2, RaftField::Vote, b"term=9").unwrap();
            m.set_raft(1, RaftField::Membership, b"{1,2,3}").unwrap();
            m.flush().unwrap();
        }
        let m = store(dir.path());
        assert_eq!(
            m.get_raft(1, RaftField::Vote).unwrap().as_deref(),
            Some(&b"term=3"[..])
        );
        assert_eq!(
            m.get_raft(2, RaftField::Vote).unwrap().as_deref(),
            Some(&b"term=9"[..])
        );
        assert_eq!(
            m.get_raft(1, RaftField::Membership).unwrap().as_deref(),
            Some(&b"{1,2,3}"[..])
        );
        assert_eq!(m.get_raft(1, RaftField::Committed).unwrap(), None);
        m.remove_group(1).unwrap();
        assert_eq!(m.get_raft(1, RaftField::Vote).unwrap(), None);
        assert!(m.get_raft(2, RaftField::Vote).unwrap().is_some());
    }

    #[test]
    fn open_waits_for_a_lock_that_is_being_released_and_fails_on_one_that_is_not() {
        let dir = tempfile::tempdir().unwrap();
        // Another handle lets go 200 ms from now: open waits for it.
        let held = store(dir.path());
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        let reopened = store(dir.path());
        releaser.join().unwrap();
        // A handle that stays open: open gives up after its bound with a typed error.
        let started = std::time::Instant::now();
        let err = MetaStore::open(dir.path(), &MetaConfig::default()).unwrap_err();
        assert!(matches!(err, Error::Meta { op: "open", .. }), "{err:?}");
        assert!(started.elapsed() >= OPEN_LOCK_WAIT);
        drop(reopened);
    }

    #[test]
    fn batches_are_atomic_and_namespaces_do_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let m = store(dir.path());
        let mut b = MetaBatch::new();
        b.put("offsets", b"g1/t/0", b"10").unwrap();
        b.put("offsets", b"g1/t/1", b"20").unwrap();
        b.put("offsetsX", b"g1/t/2", b"30").unwrap();
        b.set_raft(7, RaftField::Committed, b"c").unwrap();
        m.write_durable(b).unwrap();
        let all = m.scan("offsets", b"g1/", 100).unwrap();
        assert_eq!(
            all,
            vec![
                (b"g1/t/0".to_vec(), b"10".to_vec()),
                (b"g1/t/1".to_vec(), b"20".to_vec())
            ]
        );
        assert_eq!(m.scan("offsets", b"", 1).unwrap().len(), 1);
        let mut b = MetaBatch::new();
        b.remove("offsets", b"g1/t/0").unwrap();
        m.write(b).unwrap();
        assert_eq!(m.get("offsets", b"g1/t/0").unwrap(), None);
        assert_eq!(
            m.get_raft(7, RaftField::Committed).unwrap().as_deref(),
            Some(&b"c"[..])
        );
    }

    #[test]
    fn limits_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let m = store(dir.path());
        let long = "n".repeat(NAMESPACE_BYTES_MAX + 1);
        assert!(matches!(
            m.get(&long, b"k"),
            Err(Error::TooLarge {
                what: "namespace",
                ..
            })
        ));
        let key = vec![0u8; KEY_BYTES_MAX + 1];
        assert!(matches!(
            m.get("ns", &key),
            Err(Error::TooLarge { what: "key", .. })
        ));
        let value = vec![0u8; VALUE_BYTES_MAX + 1];
        assert!(matches!(
            m.set_raft(1, RaftField::Vote, &value),
            Err(Error::TooLarge { what: "value", .. })
        ));
    }
}
