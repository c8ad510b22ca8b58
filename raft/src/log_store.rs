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
//!   byte position, stable for a batch's lifetime). The map is an in-memory [`IndexMap`]
//!   (`VecDeque` of [`Slot`]s for a contiguous index range, 32 bytes per entry), rebuilt
//!   at open by one sequential scan of the batch headers. Known cost: open reads the
//!   whole log once; a persisted checkpoint of the map is planned.
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

use std::collections::VecDeque;
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

/// Where one entry is: its term, its first record offset, and its batch's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    term: u64,
    base_offset: u64,
    at: BatchPos,
}

/// Raft index ⇄ stored batch for the entries present in the log.
#[derive(Debug, Default)]
struct IndexMap {
    /// Raft index of `entries[0]`.
    first_index: u64,
    /// The slot of each entry, contiguous in index.
    entries: VecDeque<Slot>,
    /// The last purged log id (entries up to it are gone).
    last_purged: Option<LogId>,
}

impl IndexMap {
    fn next_index(&self) -> Option<u64> {
        if self.entries.is_empty() {
            self.last_purged.map(|l| l.index + 1)
        } else {
            Some(self.first_index + self.entries.len() as u64)
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.back() {
            Some(slot) => Some(LogId::new(
                slot.term.into(),
                self.first_index + self.entries.len() as u64 - 1,
            )),
            None => self.last_purged,
        }
    }

    /// The slot of `index`, if present.
    fn get(&self, index: u64) -> Option<Slot> {
        let i = index.checked_sub(self.first_index)?;
        self.entries.get(i as usize).copied()
    }

    /// The last index present whose batch lies in a segment before the one starting at
    /// `segment` (so purging up to it deletes exactly the segments before that one).
    fn last_index_before_segment(&self, segment: u64) -> Option<u64> {
        // Segments increase with the index.
        let k = self
            .entries
            .partition_point(|slot| slot.at.segment < segment);
        Some(self.first_index + k.checked_sub(1)? as u64)
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
        let (log, map) = open_intact(dir, group, config, last_purged)?;
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

/// Rebuilds the index map from the batch headers of `log`.
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

/// Most damaged places one open cuts past before giving up.
const DAMAGE_CUTS_MAX: u32 = 16;

/// Opens the segment log in `dir` and rebuilds its index map, checking every batch's CRC
/// on the way (the scan reads every batch anyway). Damage found (by the segment log's
/// recovery or by this scan) is cut away with [`neo_storage::cut_damaged`]: the log
/// keeps its intact prefix (what followed goes to its quarantine folder) and the
/// group's leader sends this replica the rest.
fn open_intact(
    dir: &Path,
    group: GroupId,
    config: LogConfig,
    last_purged: Option<LogId>,
) -> Result<(SegmentLog, IndexMap)> {
    let mut cuts = 0;
    loop {
        let damage = match SegmentLog::open(dir, config.clone()) {
            Ok(log) => match scan(&log, last_purged)? {
                Ok(map) => return Ok((log, map)),
                Err(damage) => {
                    drop(log);
                    damage
                }
            },
            Err(neo_storage::Error::Corruption {
                segment,
                position,
                reason,
            }) => Damage {
                at: BatchPos { segment, position },
                reason,
            },
            Err(e) => return Err(storage_err("log", "open", e)),
        };
        cuts += 1;
        if cuts > DAMAGE_CUTS_MAX {
            return Err(storage_err(
                "log",
                "open",
                format!(
                    "still damaged after {DAMAGE_CUTS_MAX} cuts: {}",
                    damage.reason
                ),
            ));
        }
        tracing::error!(
            group,
            segment = damage.at.segment,
            position = damage.at.position,
            reason = %damage.reason,
            "replica log damaged: cutting it there; the leader sends the rest"
        );
        neo_storage::cut_damaged(dir, damage.at.segment, damage.at.position)
            .map_err(|e| storage_err("damaged log", "cut", e))?;
        DAMAGE_CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Damaged logs cut by this process (see [`open_intact`]).
static DAMAGE_CUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process cut a damaged group log at open
/// (`neo_storage_damaged_logs_cut_total`).
pub fn damaged_logs_cut() -> u64 {
    DAMAGE_CUTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where a scan found a batch that fails its checks.
struct Damage {
    at: BatchPos,
    reason: String,
}

/// The index map of `log`, or where it is damaged (a batch whose header or CRC fails).
fn scan(
    log: &SegmentLog,
    last_purged: Option<LogId>,
) -> Result<std::result::Result<IndexMap, Damage>> {
    let mut map = IndexMap {
        first_index: 0,
        entries: VecDeque::new(),
        last_purged,
    };
    let purged_index = last_purged.map(|l| l.index);
    let mut at = log.start_pos();
    loop {
        let slice = match log.read_at(at, READ_CHUNK_BYTES) {
            Ok(slice) => slice,
            Err(neo_storage::Error::Corruption {
                segment,
                position,
                reason,
            }) => {
                return Ok(Err(Damage {
                    at: BatchPos { segment, position },
                    reason,
                }));
            }
            Err(e) => return Err(storage_err("log", "scan", e)),
        };
        if slice.bytes.is_empty() {
            break;
        }
        let mut buf = &slice.bytes[..];
        let mut position = at.position;
        while !buf.is_empty() {
            let checked = BatchHeader::parse(buf).and_then(|h| h.verify_crc(buf).map(|()| h));
            let h = match checked {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Err(Damage {
                        at: BatchPos {
                            segment: at.segment,
                            position,
                        },
                        reason: format!("batch at position {position}: {e}"),
                    }));
                }
            };
            let len = h.batch_length as usize;
            buf = &buf[len..];
            let slot = Slot {
                term: h.term,
                base_offset: h.base_offset,
                at: BatchPos {
                    segment: at.segment,
                    position,
                },
            };
            position += len as u64;
            if purged_index.is_some_and(|p| h.log_index <= p) {
                continue;
            }
            if map.entries.is_empty() {
                map.first_index = h.log_index;
            } else if h.log_index != map.first_index + map.entries.len() as u64 {
                return Err(Error::storage(
                    "log",
                    "scan",
                    format!(
                        "entry at offset {} has log index {}, expected {}",
                        h.base_offset,
                        h.log_index,
                        map.first_index + map.entries.len() as u64
                    ),
                ));
            }
            map.entries.push_back(slot);
        }
        at = slice.next;
    }
    Ok(Ok(map))
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
            let start = start.max(map.first_index);
            let end = end.min(next_index);
            if start >= end || map.entries.is_empty() {
                return Ok(Vec::new());
            }
            (start, end, map.get(start).expect("start within the map").at)
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
                if map.entries.is_empty() {
                    map.first_index = index;
                }
                map.entries.push_back(Slot {
                    term: entry.log_id.leader_id.term,
                    base_offset: base,
                    at: BatchPos {
                        segment: appended.segment,
                        position: appended.position,
                    },
                });
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
        let from = from.max(map.first_index);
        let Some(next) = map.next_index() else {
            return Ok(());
        };
        if from >= next || map.entries.is_empty() {
            return Ok(());
        }
        // By position: a zero-width control batch shares its offset with its neighbours.
        let slot = map.get(from).expect("index within the map");
        inner
            .log
            .truncate_at(slot.at)
            .map_err(|e| io_err("log", "truncate", e))?;
        let keep = (from - map.first_index) as usize;
        map.entries.truncate(keep);
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
        let first = map.first_index;
        let next_present = map.next_index().unwrap_or(upto + 1);
        if !map.entries.is_empty() && upto < next_present - 1 {
            // Some entries remain: drop the purged ones; storage deletes the whole
            // segments before the first remaining entry's (each ends where the next
            // begins, so "below that segment's base offset" is exactly them).
            let drop_n = (upto + 1).saturating_sub(first) as usize;
            let drop_n = drop_n.min(map.entries.len());
            map.entries.drain(..drop_n);
            map.first_index = upto + 1;
            let first = map.entries.front().copied().expect("entries remain");
            inner
                .log
                .purge_prefix(first.at.segment)
                .map_err(|e| io_err("log", "purge", e))?;
        } else {
            // Everything goes. The log restarts at the offset the snapshot names, or,
            // without one, right after what it held.
            map.entries.clear();
            map.first_index = upto + 1;
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
mod tests {
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};

    use super::*;
    use crate::state_machine::GroupStateMachine;

    /// Builds a fresh log store (real segment log + sled, in a temporary directory) and a
    /// partition state machine for each of openraft's conformance tests.
    /// Builds log stores for openraft's suite; `Builder(Some(key))`: encrypted at rest.
    struct Builder(Option<neo_storage::AtRestKey>);

    impl StoreBuilder<NeoRaft, LogStore, GroupStateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError<NeoRaft>>
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let node = NodeStore::open(dir.path()).expect("node store");
            let anchor = OffsetAnchor::default();
            let log = LogStore::open(
                &node.group_dir(7).join("log"),
                7,
                GroupKind::Partition,
                node.meta().clone(),
                anchor.clone(),
                LogOptions {
                    durability: Durability::Fsync,
                    segment_bytes: SEGMENT_BYTES_MAX,
                    at_rest: self.0.clone(),
                },
            )
            .expect("log store");
            let sm = GroupStateMachine::open(
                GroupKind::Partition,
                None,
                anchor,
                Box::new(crate::LogOnly),
            )
            .expect("sm");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn last_index_before_segment_is_the_last_entry_stored_before_it() {
        let slot = |segment, base_offset| Slot {
            term: 1,
            base_offset,
            at: BatchPos {
                segment,
                position: 0,
            },
        };
        // Entries 5, 6 in segment 10; 7 (zero-width) and 8 in segment 20; 9 in 25.
        let map = IndexMap {
            first_index: 5,
            entries: [
                slot(10, 10),
                slot(10, 13),
                slot(20, 20),
                slot(20, 20),
                slot(25, 25),
            ]
            .into(),
            last_purged: None,
        };
        assert_eq!(map.last_index_before_segment(10), None);
        assert_eq!(map.last_index_before_segment(20), Some(6));
        assert_eq!(map.last_index_before_segment(25), Some(8));
        assert_eq!(map.last_index_before_segment(99), Some(9));
        assert_eq!(IndexMap::default().last_index_before_segment(99), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_maps_the_planned_segment_cut_to_a_raft_index() {
        use openraft::entry::RaftEntry;
        use openraft::type_config::TypeConfigExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let node = NodeStore::open(dir.path())
            .expect("node store")
            .with_segment_bytes(SEGMENT_BYTES_MIN);
        assert_eq!(node.segment_bytes(), SEGMENT_BYTES_MIN);
        let mut log = LogStore::open(
            &node.group_dir(4).join("log"),
            4,
            GroupKind::Partition,
            node.meta().clone(),
            OffsetAnchor::default(),
            LogOptions {
                durability: Durability::Fsync,
                segment_bytes: node.segment_bytes(),
                at_rest: None,
            },
        )
        .expect("open");
        // A blank entry, then 24 batches of 3 records and ~1000 bytes, timestamps
        // 100, 200, ...: 4 batches per 4 KiB segment.
        let mut entries = vec![Entry::new_blank(LogId::new(1.into(), 0))];
        for i in 1..=24u64 {
            let b = neo_storage::testing::batch(3, i as i64 * 100, i as i64 * 100, &[7; 1000]);
            entries.push(Entry::new_normal(
                LogId::new(1.into(), i),
                crate::types::Proposal::Records(crate::types::RecordBatch::new(Bytes::from(b))),
            ));
        }
        let (tx, rx) = NeoRaft::oneshot();
        log.append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("flush notified").expect("flushed");
        let segments = log.inner.log.stats().segments;
        assert!(segments >= 5, "the log rolled: {segments} segments");

        assert_eq!(log.retention_upto(None, None, i64::MAX), None, "no limits");
        assert_eq!(
            log.retention_upto(Some(1), None, 0),
            None,
            "nothing old yet"
        );
        assert_eq!(
            log.retention_upto(None, Some(u64::MAX), 0),
            None,
            "the log is below the size limit"
        );

        // Size 1: every sealed segment is due; the cut is the active segment's base.
        let cut = log
            .inner
            .log
            .retention_plan_for(None, Some(1), 0)
            .expect("a plan");
        let upto = log.retention_upto(None, Some(1), 0).expect("an index");
        {
            let map = log.inner.map();
            let next = map.get(upto + 1).expect("the entry after the cut");
            assert_eq!(
                next.at.segment, cut,
                "entry {upto} is the last one below the cut"
            );
            let before = map.get(upto).expect("the entry before the cut");
            assert!(before.at.segment < cut);
        }
        // By age: at t = 1000 + 1, batches with timestamp < 1000 (entries 1..=9) are
        // old; the cut is a segment boundary at or below entry 10.
        let by_age = log.retention_upto(Some(1), None, 1001).expect("an index");
        assert!((1..10).contains(&by_age), "{by_age}");
        assert!(by_age < upto);

        // Purging up to it deletes exactly the planned segments.
        log.purge(LogId::new(1.into(), upto)).await.expect("purge");
        assert_eq!(log.inner.log.start_offset(), cut);
        assert_eq!(log.inner.log.stats().segments, 1);
        assert_eq!(
            log.retention_upto(None, Some(1), 0),
            None,
            "nothing left to cut"
        );
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(LogId::new(1.into(), 24)));
        let got = log.try_get_log_entries(upto + 1..25).await.expect("read");
        assert_eq!(got.len() as u64, 24 - upto);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_openraft_storage_suite() {
        Suite::test_all(Builder(None)).await.expect("storage suite");
    }

    /// The same suite on a log encrypted at rest: every entry read back (appends,
    /// truncations, purges, reopen) must be the entry written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_openraft_storage_suite_encrypted_at_rest() {
        let key = neo_storage::AtRestKey::new([9; 32]);
        Suite::test_all(Builder(Some(key)))
            .await
            .expect("storage suite");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_rebuilds_the_index_map_from_batch_stamps() {
        use openraft::entry::RaftEntry;
        let dir = tempfile::tempdir().expect("temp dir");
        let node = NodeStore::open(dir.path()).expect("node store");
        let path = node.group_dir(3).join("log");
        let open = || {
            LogStore::open(
                &path,
                3,
                GroupKind::Partition,
                node.meta().clone(),
                OffsetAnchor::default(),
                LogOptions {
                    durability: Durability::Fsync,
                    segment_bytes: SEGMENT_BYTES_MAX,
                    at_rest: None,
                },
            )
        };
        let batch = |n: u32| {
            let b = neo_storage::testing::batch(n, 1, 1, b"payload");
            crate::types::Proposal::Records(crate::types::RecordBatch::new(Bytes::from(b)))
        };
        let entries = vec![
            Entry::new_blank(LogId::new(1.into(), 0)),
            Entry::new_normal(LogId::new(1.into(), 1), batch(5)),
            Entry::new_normal(LogId::new(2.into(), 2), batch(3)),
            Entry::new_blank(LogId::new(2.into(), 3)),
        ];
        {
            let mut log = open().expect("open");
            use openraft::type_config::TypeConfigExt;
            let (tx, rx) = NeoRaft::oneshot();
            log.append(entries.clone(), IOFlushed::signal(tx))
                .await
                .expect("append");
            rx.await.expect("flush notified").expect("flushed");
            log.purge(LogId::new(1.into(), 0)).await.expect("purge");
        }
        let mut log = open().expect("reopen");
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(LogId::new(1.into(), 0)));
        assert_eq!(st.last_log_id, Some(LogId::new(2.into(), 3)));
        let got = log.try_get_log_entries(1..4).await.expect("read");
        assert_eq!(got.len(), 3);
        // Control entries take no offset: blank at 0, 5 records at 0..5, 3 at 5..8,
        // blank at 8.
        let offsets: Vec<u64> = {
            let map = log.inner.map();
            map.entries.iter().map(|slot| slot.base_offset).collect()
        };
        assert_eq!(offsets, vec![0, 5, 8]);
        for (g, want) in got.iter().zip(&entries[1..]) {
            assert_eq!(g.log_id, want.log_id);
        }
        match &got[0].payload {
            openraft::EntryPayload::Normal(crate::types::Proposal::Records(b)) => {
                let h = qiss::batch::check(&b.0).expect("stored batch checks");
                assert_eq!((h.base_offset, h.term, h.log_index), (0, 1, 1));
            }
            other => panic!("unexpected payload {other:?}"),
        }
        log.truncate_after(Some(LogId::new(1.into(), 1)))
            .await
            .expect("truncate");
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(LogId::new(1.into(), 1)));
        assert_eq!(log.inner.log.next_offset(), 5);
    }
}
