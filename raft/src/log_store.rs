//! The openraft log store on `neo-storage`: the partition log *is* the Raft log.
//!
//! # Mapping
//! - One entry = one record batch in the group's [`SegmentLog`] (see `codec` for the
//!   encoding). Its log id is `(term, log_index)`, read back from the batch's Raft stamps.
//! - Record offsets are assigned by log position: an entry's `base_offset` is the log's
//!   next offset when it is appended (`append_at`, so storage checks the stamp), i.e. the
//!   previous entry's base plus its record count. A control entry takes
//!   [`GroupKind::control_offsets`] offsets: none in a partition (a zero-width control
//!   batch), so records are numbered densely from 0. Leader and followers compute the
//!   same offsets for the same entries, so their segments are byte-identical.
//! - Openraft addresses entries by Raft index. An offset does not name one entry (the
//!   zero-width control batches before a record batch share its base offset), so the
//!   log store addresses batches by where they are stored ([`BatchPos`]: segment and
//!   byte position, stable for a batch's lifetime), through the sparse
//!   [`IndexMap`](crate::log_index) (an anchor per segment start and every 32 entries or
//!   32 KiB; reads start at the anchor and skip forward), rebuilt at open by one
//!   sequential scan of the batch headers. Known cost: open reads the whole log once; a
//!   persisted checkpoint of the map is planned.
//! - Vote, committed log id and last purged log id live in the node's sled
//!   [`MetaStore`], Qiss-encoded, under the group's id.
//!
//! # Durability
//! `append` writes every entry of the call (inline on Raft's core task: page-cache
//! `pwrite`s; running them on the blocking pool measured slower, see
//! docs/BENCHMARKS.md), then registers openraft's `IOFlushed` with
//! [`SegmentLog::notify_durable`] for the end offset of the last one: it fires on the
//! storage flusher thread only after an `fdatasync` covering the entries has returned,
//! and one `fdatasync` covers every append since the previous one (group commit). The
//! vote is written with `set_raft_durable` (sled flush, on the blocking pool) before
//! `save_vote` returns.
//!
//! # Purge and truncate
//! `purge(upto)` first records `upto` as last purged (durably), then drops it from the
//! map and asks storage to delete whole segments before the next entry's segment
//! (segment-granular: older batches may stay on disk and are skipped at open). Purging
//! past the last entry (a snapshot install) empties the log and restarts it at the
//! offset the snapshot says comes next ([`OffsetAnchor`]). `truncate_after` cuts the
//! segment log at the first removed entry's position (storage syncs the cut).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use neo_storage::{
    AtRestKey, BatchPos, DiskSpace, FsyncPolicy, LogConfig, MetaConfig, MetaStore, RaftField,
    SegmentLog, StorageFull,
};
use openraft::EntryPayload;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use qiss::batch::BatchHeader;

use crate::codec;
use crate::error::{Error, Result};
use crate::log_index::{self, IndexMap};
use crate::state_machine::GroupKind;
use crate::types::{Entry, GroupId, LocalAck, LogId, NeoRaft, Proposal, RecordBatch, Vote};

/// Largest record batch a partition group accepts (the producer's batch limit).
pub const RECORD_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Bytes read from the segment log per read call when serving entries.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest control batch: a membership or metadata command, Qiss-encoded.
const CONTROL_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Smallest segment size [`NodeStore::with_segment_bytes`] accepts.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment size [`NodeStore::with_segment_bytes`] accepts.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Where the log restarts after a snapshot install emptied it: the state machine sets
/// it when it installs a snapshot (`index` = the snapshot's last index, `next_offset` =
/// the offset the entry after it gets), the log store reads it when a purge empties the
/// log at that index. Shared by one group's state machine and log store.
#[derive(Debug, Clone, Default)]
pub(crate) struct OffsetAnchor(Arc<Mutex<Option<(u64, u64)>>>);

impl OffsetAnchor {
    pub(crate) fn set(&self, index: u64, next_offset: u64) {
        *self.0.lock().expect("anchor lock") = Some((index, next_offset));
    }

    fn get(&self, index: u64) -> Option<u64> {
        match *self.0.lock().expect("anchor lock") {
            Some((i, off)) if i == index => Some(off),
            _ => None,
        }
    }
}

struct Inner {
    group: GroupId,
    log: SegmentLog,
    meta: MetaStore,
    map: Mutex<IndexMap>,
    anchor: OffsetAnchor,
    durability: Durability,
    /// Records a control entry's batch claims (see [`GroupKind::control_offsets`]).
    control_records: u32,
}

impl Inner {
    fn map(&self) -> MutexGuard<'_, IndexMap> {
        self.map.lock().expect("index map lock")
    }
}

/// An error for openraft, which takes `io::Error`: our [`Error::Storage`] wrapped whole
/// (so its cause stays reachable), with kind `StorageFull` when the disk is full.
fn io_err(
    subject: &'static str,
    verb: &'static str,
    e: impl Into<crate::error::StorageSource>,
) -> io::Error {
    let err = Error::storage(subject, verb, e);
    let kind = if err.is_storage_full() {
        io::ErrorKind::StorageFull
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, err)
}

fn storage_err(
    subject: &'static str,
    verb: &'static str,
    e: impl Into<crate::error::StorageSource>,
) -> Error {
    Error::storage(subject, verb, e)
}

/// When a group's log store tells openraft that appended entries are flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After an `fdatasync` covering them has returned (group commit). Nothing a
    /// replica acknowledged is lost on power failure. The default.
    #[default]
    Fsync,
    /// As soon as they are written to the OS (page cache); a background flusher syncs
    /// every `n` milliseconds. A killed *process* loses nothing (the page cache
    /// survives it); a power failure or kernel crash of a replica loses up to `n` ms of
    /// what it acknowledged, so a write acknowledged by a quorum can be lost if a
    /// quorum of replicas loses power within that window.
    IntervalMs(u64),
}

/// A node's storage: the sled metadata store its groups share (`<data>/meta`) and one
/// directory per group (`<data>/groups/<id>`: segment log and snapshot file).
#[derive(Clone)]
pub struct NodeStore {
    dir: PathBuf,
    meta: MetaStore,
    durability: Durability,
    segment_bytes: u64,
    at_rest: Option<AtRestKey>,
    /// Free space of the data directory's filesystem, against the write reserve.
    space: Arc<DiskSpace>,
}

impl NodeStore {
    /// Opens (or creates) the node's storage under `data_dir`, with
    /// [`Durability::Fsync`].
    pub fn open(data_dir: impl AsRef<Path>) -> Result<NodeStore> {
        Self::open_with(data_dir, Durability::Fsync)
    }

    /// Opens (or creates) the node's storage under `data_dir`; every group log opened
    /// on it uses `durability`.
    pub fn open_with(data_dir: impl AsRef<Path>, durability: Durability) -> Result<NodeStore> {
        let dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join("groups"))
            .map_err(|e| storage_err("data directory", "create", e))?;
        let meta = MetaStore::open(dir.join("meta"), &MetaConfig::default())
            .map_err(|e| storage_err("metadata store", "open", e))?;
        Ok(NodeStore {
            space: Arc::new(DiskSpace::new(&dir, 0)),
            dir,
            meta,
            durability,
            segment_bytes: LogConfig::default().segment_size_bytes_max,
            at_rest: None,
        })
    }

    /// The node's key for encryption at rest: group logs opened with
    /// `GroupConfig::encrypt_at_rest` (and logs created encrypted) use it.
    pub fn with_at_rest_key(mut self, key: AtRestKey) -> NodeStore {
        self.at_rest = Some(key);
        self
    }

    /// Whether this node has a key for encryption at rest.
    pub fn has_at_rest_key(&self) -> bool {
        self.at_rest.is_some()
    }

    /// New data is admitted ([`NodeStore::admit`]) only while at least `reserve` bytes
    /// stay free on the data directory's filesystem (0: no check). The reserve keeps
    /// room for what must still be written when the disk is nearly full: votes,
    /// membership and other control entries, the metadata group, segment rolls.
    pub fn with_storage_reserve(mut self, reserve: u64) -> NodeStore {
        self.space = Arc::new(DiskSpace::new(&self.dir, reserve));
        self
    }

    /// Admits `len` bytes of new data, or says the disk is full (above the reserve).
    pub fn admit(&self, len: u64) -> std::result::Result<(), StorageFull> {
        self.space.admit(len)
    }

    /// Free space of the data directory's filesystem (`statvfs`), and the reserve.
    pub fn space(&self) -> &DiskSpace {
        &self.space
    }

    /// How a group's log opens on this store: its durability, segment size and, when
    /// `encrypt`, the node's at-rest key (an error if the node has none; a plaintext
    /// group gets none, and `neo-storage` then refuses a log created encrypted: its
    /// file pins it).
    pub(crate) fn log_options(&self, encrypt: bool) -> Result<LogOptions> {
        Ok(LogOptions {
            durability: self.durability,
            segment_bytes: self.segment_bytes,
            at_rest: self.at_rest_for(encrypt)?,
        })
    }

    fn at_rest_for(&self, encrypt: bool) -> Result<Option<AtRestKey>> {
        match (&self.at_rest, encrypt) {
            (None, true) => Err(Error::Config {
                reason: "the group is encrypted at rest and this node has no at-rest key \
                         (--at-rest-key-file)"
                    .into(),
            }),
            (Some(k), true) => Ok(Some(k.clone())),
            (_, false) => Ok(None),
        }
    }

    /// Every group log opened on this store from now on rolls its segments at this
    /// size (default: `neo-storage`'s, 256 MiB). Retention deletes whole sealed
    /// segments, so this is also its granularity. Clamped to 4 KiB ..= 1 GiB.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> NodeStore {
        self.segment_bytes = segment_bytes.clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
        self
    }

    /// The segment size of group logs opened on this store.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Deletes the files of `group` (its log and snapshot). The group must be shut
    /// down first; its Raft fields in the metadata store stay (group ids are never
    /// reused, so they are never read again).
    pub fn remove_group_files(&self, group: GroupId) -> Result<()> {
        match std::fs::remove_dir_all(self.group_dir(group)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_err("group directory", "remove", e)),
        }
    }

    /// The directory of `group`'s files.
    pub(crate) fn group_dir(&self, group: GroupId) -> PathBuf {
        self.dir.join("groups").join(group.to_string())
    }

    pub(crate) fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Flushes the metadata store (every group's vote, committed and purged ids).
    pub fn flush(&self) -> Result<()> {
        self.meta
            .flush()
            .map_err(|e| storage_err("metadata store", "flush", e))
    }
}

/// How one group's log is opened ([`NodeStore::log_options`]).
pub(crate) struct LogOptions {
    /// When appended entries count as flushed.
    pub(crate) durability: Durability,
    /// Segment size.
    pub(crate) segment_bytes: u64,
    /// Encryption at rest under this node key.
    pub(crate) at_rest: Option<AtRestKey>,
}

/// One group's Raft log: a segment log plus the group's fields in the metadata store.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    /// Opens the log in `dir` (created if missing) and rebuilds the index map.
    pub(crate) fn open(
        dir: &Path,
        group: GroupId,
        kind: GroupKind,
        meta: MetaStore,
        anchor: OffsetAnchor,
        options: LogOptions,
    ) -> Result<LogStore> {
        let LogOptions {
            durability,
            segment_bytes,
            at_rest,
        } = options;
        let config = LogConfig {
            at_rest,
            segment_size_bytes_max: segment_bytes,
            batch_size_bytes_max: (RECORD_BATCH_BYTES_MAX.max(CONTROL_BATCH_BYTES_MAX) + 4096)
                as u32,
            fsync: match durability {
                Durability::Fsync => FsyncPolicy::Always,
                Durability::IntervalMs(ms) => FsyncPolicy::Interval(ms.max(1)),
            },
            ..LogConfig::default()
        };
        let last_purged: Option<LogId> = match meta
            .get_raft(group, RaftField::LastPurged)
            .map_err(|e| storage_err("last purged log id", "read", e))?
        {
            Some(b) => Some(
                codec::decode(&b).map_err(|e| storage_err("last purged log id", "decode", e))?,
            ),
            None => None,
        };
        let (log, map) = log_index::open_intact(dir, group, config, last_purged)?;
        clamp_committed(&meta, group, map.last_log_id())?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                group,
                log,
                meta,
                map: Mutex::new(map),
                anchor,
                durability,
                control_records: kind.control_offsets(),
            }),
        })
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one), as
    /// stored; with the offset where the next read continues.
    pub(crate) fn read_raw(&self, offset: u64, max_bytes: usize) -> Result<(Bytes, u64)> {
        self.inner
            .log
            .read(offset, max_bytes)
            .map(|s| (s.bytes, s.next_offset))
            .map_err(|e| storage_err("log", "read", e))
    }

    /// `[start, next)` record offsets held by the segment log.
    pub(crate) fn offsets(&self) -> (u64, u64) {
        (self.inner.log.start_offset(), self.inner.log.next_offset())
    }

    /// The segment log's first failure, if it failed (it then refuses work).
    pub(crate) fn failure(&self) -> Option<neo_storage::Error> {
        self.inner.log.failure()
    }

    /// Whether the segment log failed (and refuses work) because the disk is full.
    pub(crate) fn storage_full(&self) -> bool {
        self.inner
            .log
            .failure()
            .is_some_and(|e| e.is_storage_full())
    }

    /// Bytes of every segment of the log.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.inner.log.stats().size_bytes
    }

    /// Segment files of the log.
    pub(crate) fn segments(&self) -> usize {
        self.inner.log.stats().segments
    }

    /// Where retention under these limits would cut the log, as a Raft index: the last
    /// entry stored before the oldest segment to keep (see
    /// [`SegmentLog::retention_plan_for`]; the active segment is never due). `None`
    /// if nothing is due. Purging up to it deletes exactly the planned segments.
    pub(crate) fn retention_upto(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    ) -> Option<u64> {
        let map = self.inner.map();
        // The plan is the base offset of the oldest segment to keep.
        let segment = self
            .inner
            .log
            .retention_plan_for(retention_ms, retention_bytes, now_ms)?;
        map.last_index_before_segment(segment)
    }
}

impl LogStore {
    /// Where a cut below record offset `offset` would go, as a Raft index (the last
    /// entry stored before the oldest segment to keep; see [`SegmentLog::cut_below`]).
    pub(crate) fn cut_below_upto(&self, offset: u64) -> Option<u64> {
        let map = self.inner.map();
        let segment = self.inner.log.cut_below(offset)?;
        map.last_index_before_segment(segment)
    }
}

/// The saved committed log id may lie past the log's end when the log was cut back at
/// open (a failed `fdatasync`: `neo-storage` reopens it at its last successful sync, and a
/// follower saves the leader's commit index before its own copy is durable). openraft
/// would then look for entries that are gone; committed is only a hint (the leader tells
/// it again), so it is lowered to the last entry present.
fn clamp_committed(meta: &MetaStore, group: GroupId, last: Option<LogId>) -> Result<()> {
    let Some(b) = meta
        .get_raft(group, RaftField::Committed)
        .map_err(|e| storage_err("committed log id", "read", e))?
    else {
        return Ok(());
    };
    let committed: Option<LogId> =
        codec::decode(&b).map_err(|e| storage_err("committed log id", "decode", e))?;
    let past_end = match (committed, last) {
        (Some(c), Some(l)) => c.index > l.index,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if past_end {
        tracing::warn!(
            group,
            ?committed,
            ?last,
            "committed log id past the log's end: lowered"
        );
        let b = codec::encode(&last).map_err(|e| storage_err("committed log id", "encode", e))?;
        meta.set_raft(group, RaftField::Committed, &b)
            .map_err(|e| storage_err("committed log id", "write", e))?;
    }
    Ok(())
}

fn range_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl Inner {
    fn read_entries(&self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        // Resolve the first index to its batch under the lock, read without it.
        let (start, end, mut at) = {
            let map = self.map();
            let Some(next_index) = map.next_index() else {
                return Ok(Vec::new());
            };
            let start = start.max(map.first_index());
            let end = end.min(next_index);
            if start >= end || map.is_empty() {
                return Ok(Vec::new());
            }
            (
                start,
                end,
                map.scan_start(start).expect("start within the map").at,
            )
        };
        let mut out = Vec::with_capacity((end - start) as usize);
        while (out.len() as u64) < end - start {
            let slice = self
                .log
                .read_at(at, READ_CHUNK_BYTES)
                .map_err(|e| io_err("log", "read", e))?;
            if slice.bytes.is_empty() {
                break;
            }
            let bytes = slice.bytes;
            let mut pos = 0usize;
            while pos < bytes.len() && (out.len() as u64) < end - start {
                let h = BatchHeader::parse(&bytes[pos..])
                    .map_err(|e| io_err("log batch header", "read", e))?;
                let len = h.batch_length as usize;
                let batch = bytes.slice(pos..pos + len);
                pos += len;
                if out.is_empty() && h.log_index < start {
                    // Between the anchor and the first entry asked for.
                    continue;
                }
                let expected = start + out.len() as u64;
                if h.log_index != expected {
                    return Err(io_err(
                        "log entry",
                        "read",
                        format!(
                            "batch at offset {} has log index {}, expected {expected}",
                            h.base_offset, h.log_index
                        ),
                    ));
                }
                out.push(
                    codec::batch_to_entry(batch).map_err(|e| io_err("log entry", "decode", e))?,
                );
            }
            at = slice.next;
        }
        Ok(out)
    }

    /// Writes `entries` to the segment log and registers `callback` to fire once they
    /// are durable (see the module docs).
    fn append_entries(&self, entries: Vec<Entry>, callback: IOFlushed<NeoRaft>) -> io::Result<()> {
        let mut end = None;
        // acks=leader waiters of this call's entries: (notification, offset, count).
        let mut acks: Vec<(LocalAck, u64, u32)> = Vec::new();
        {
            let mut map = self.map();
            for entry in entries {
                let index = entry.log_id.index;
                if let Some(next) = map.next_index()
                    && index != next
                {
                    return Err(io_err(
                        "log entry",
                        "append",
                        format!("non-contiguous log index {index}, expected {next}"),
                    ));
                }
                let base = self.log.next_offset();
                let batch = codec::entry_to_batch(&entry, base, self.control_records)
                    .map_err(|e| io_err("log entry", "encode", e))?;
                if let EntryPayload::Normal(Proposal::Records(RecordBatch(b, ack))) = &entry.payload
                    && ack.is_set()
                {
                    let count = BatchHeader::parse(b).map_or(0, |h| h.record_count);
                    acks.push((ack.clone(), base, count));
                }
                let appended = match batch {
                    codec::StoredBatch::Records { head, batch } => {
                        self.log.append_stamped_at(&head, batch)
                    }
                    codec::StoredBatch::Control(bytes) => self.log.append_at(&bytes),
                }
                .map_err(|e| io_err("log entry", "append", e))?;
                map.push(
                    index,
                    entry.log_id.leader_id.term,
                    BatchPos {
                        segment: appended.segment,
                        position: appended.position,
                    },
                );
                end = Some(appended.next_offset);
            }
        }
        let fire = move |r: Result<(), String>| {
            for (ack, base, count) in acks {
                ack.fire(r.clone().map(|()| (base, count)));
            }
        };
        match end {
            // Looser durability, by request: written to the OS is reported flushed; the
            // storage flusher syncs on its interval (see `Durability::IntervalMs`).
            Some(_) if matches!(self.durability, Durability::IntervalMs(_)) => {
                fire(Ok(()));
                callback.io_completed(Ok(()))
            }
            Some(end) => self.log.notify_durable(end, move |r| {
                fire(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(e.to_string()),
                });
                let r = match r {
                    // openraft itself truncated these entries after appending them (a
                    // follower meeting a new leader's conflicting log); the cut was
                    // synced and openraft no longer counts on them. An error here would
                    // stop the group.
                    Err(neo_storage::Error::Truncated { .. }) => Ok(()),
                    r => r,
                };
                callback.io_completed(r.map_err(|e| io_err("log entries", "fdatasync", e)))
            }),
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    fn read_vote(&self) -> io::Result<Option<Vote>> {
        match self
            .meta
            .get_raft(self.group, RaftField::Vote)
            .map_err(|e| io_err("vote", "read", e))?
        {
            Some(b) => Ok(Some(
                codec::decode(&b).map_err(|e| io_err("vote", "decode", e))?,
            )),
            None => Ok(None),
        }
    }
}

/// A reader sharing the store's state (openraft hands one to each replication task).
pub struct LogReader {
    inner: Arc<Inner>,
}

impl RaftLogReader<NeoRaft> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = range_bounds(&range);
        self.inner.read_entries(start, end)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.inner.read_vote()
    }
}

impl RaftLogReader<NeoRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = range_bounds(&range);
        self.inner.read_entries(start, end)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.inner.read_vote()
    }
}

impl RaftLogStorage<NeoRaft> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<NeoRaft>> {
        let map = self.inner.map();
        Ok(LogState {
            last_purged_log_id: map.last_purged,
            last_log_id: map.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let b = codec::encode(vote).map_err(|e| io_err("vote", "encode", e))?;
        // The sled flush blocks for a disk sync: run it on the blocking pool. It has
        // returned (the vote is durable) before this does, as openraft requires.
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .meta
                .set_raft_durable(inner.group, RaftField::Vote, &b)
                .map_err(|e| io_err("vote", "write", e))
        })
        .await
        .map_err(|e| io_err("vote", "write", e))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not flushed: openraft tolerates a committed id that goes back after a crash
        // (it is re-learned from the leader); the next flush makes it durable.
        let b = codec::encode(&committed).map_err(|e| io_err("committed log id", "encode", e))?;
        self.inner
            .meta
            .set_raft(self.inner.group, RaftField::Committed, &b)
            .map_err(|e| io_err("committed log id", "write", e))
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        match self
            .inner
            .meta
            .get_raft(self.inner.group, RaftField::Committed)
            .map_err(|e| io_err("committed log id", "read", e))?
        {
            Some(b) => codec::decode(&b).map_err(|e| io_err("committed log id", "decode", e)),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<NeoRaft>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Inline, on Raft's core task: a `pwrite` to the page cache takes microseconds,
        // and handing it to the blocking pool cost more than it freed (measured in
        // docs/BENCHMARKS.md, 2026-12-06). `IOFlushed` fires from the storage flusher
        // after `fdatasync`; a segment roll's syncs are the one slow case left here.
        self.inner
            .append_entries(entries.into_iter().collect(), callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let inner = &self.inner;
        let mut map = inner.map();
        let keep_upto = last_log_id.map(|l| l.index);
        // First index to remove.
        let from = match keep_upto {
            Some(i) => i + 1,
            None => 0,
        };
        let from = from.max(map.first_index());
        let Some(next) = map.next_index() else {
            return Ok(());
        };
        if from >= next || map.is_empty() {
            return Ok(());
        }
        // By position: a zero-width control batch shares its offset with its neighbours.
        let start = map.scan_start(from).expect("index within the map");
        let at = log_index::locate(&inner.log, start, from).map_err(io::Error::other)?;
        inner
            .log
            .truncate_at(at)
            .map_err(|e| io_err("log", "truncate", e))?;
        // openraft keeps `last_log_id`: the term of the new last entry, if any is left.
        map.truncate(from, last_log_id.map_or(0, |l| l.leader_id.term));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let inner = &self.inner;
        let b = codec::encode(&log_id).map_err(|e| io_err("last purged log id", "encode", e))?;
        // Record first: after a crash, entries up to `log_id` are skipped at open even
        // if their segments are still there.
        inner
            .meta
            .set_raft_durable(inner.group, RaftField::LastPurged, &b)
            .map_err(|e| io_err("last purged log id", "write", e))?;
        let mut map = inner.map();
        if map.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        map.last_purged = Some(log_id);
        let upto = log_id.index;
        if let Some(segment) = map.purge(upto) {
            // Some entries remain: storage deletes the whole segments before the first
            // remaining entry's (each ends where the next begins, so "below that
            // segment's base offset" is exactly them).
            inner
                .log
                .purge_prefix(segment)
                .map_err(|e| io_err("log", "purge", e))?;
        } else {
            // Everything goes. The log restarts at the offset the snapshot names, or,
            // without one, right after what it held.
            let next = inner.log.next_offset();
            let restart = inner.anchor.get(upto).unwrap_or(next);
            if restart < next {
                // Local entries (all purged now) ran past the snapshot's offsets: they
                // were never committed. Cut them, then restart at the snapshot's offset.
                let start = inner.log.start_offset();
                if restart < start {
                    return Err(io_err(
                        "log",
                        "purge",
                        format!(
                            "snapshot restarts at offset {restart}, below the log start {start}"
                        ),
                    ));
                }
                // By position, so that zero-width batches at `start` go too.
                inner
                    .log
                    .truncate_at(inner.log.start_pos())
                    .map_err(|e| io_err("log", "truncate", e))?;
            }
            inner
                .log
                .purge_prefix(restart)
                .map_err(|e| io_err("log", "purge", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
