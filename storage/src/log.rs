//! The segmented log: appends, reads, group commit, truncation, purge, retention,
//! recovery.
//!
//! # Locks
//!
//! Three locks, always taken in this order (any prefix may be skipped):
//!
//! 1. `structure` (RwLock): readers hold it shared while they `pread` outside the state
//!    lock; `truncate_suffix` and `purge_prefix` hold it exclusively, so a read never sees
//!    a file shrink under it. Appends do not take it: they only grow files.
//! 2. `sync_lock` (Mutex): held by whoever runs an `fdatasync` round (flusher, `sync`),
//!    and by truncate/purge, so that a sync in flight and a truncation never interleave
//!    (a round's "everything below `target` is durable" stays true when it completes).
//! 3. `state` (Mutex): segments, offsets, pending notifications. Held only for in-memory
//!    work and the `pwrite` of an append (and the rare segment roll).
//!
//! Callbacks are always run after every lock is released.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use qiss::batch::header::FRAMING_LEN;
use qiss::batch::{
    BASE_OFFSET_POS, BATCH_LENGTH_POS, BatchHeader, CRC_POS, HEADER_LEN, LOG_INDEX_POS, TERM_POS,
};

use std::fs::File;

use crate::at_rest::LogCipher;
use crate::config::{FsyncPolicy, LogConfig};
use crate::durable::{Durable, DurableCallback, Waiter, fire};
use crate::error::{Error, Result};
use crate::segment::{self, Segment, Window};
use crate::sync_pool;

/// Extra bytes a read fetches beyond `max_bytes`, on top of one index interval, so that
/// the batch an index entry points before is usually reached with a single `pread`.
const READ_SLACK_BYTES: u64 = 8 * 1024;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record (as stamped).
    pub base_offset: u64,
    /// Offset after its last record: the log's next offset after this append, and the
    /// `end` to pass to [`SegmentLog::notify_durable`].
    pub next_offset: u64,
    /// Base offset of the segment it went into.
    pub segment: u64,
    /// Byte position in that segment file.
    pub position: u64,
    /// Length of the batch in bytes.
    pub batch_bytes: u32,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSlice {
    /// The batches, byte-for-byte as stored (a slice of one read buffer: no per-record
    /// copy). Empty when nothing is available at the offset.
    pub bytes: Bytes,
    /// Base offset of the first batch (it may be below the offset asked for, which then
    /// lies inside that batch); the asked offset when empty.
    pub base_offset: u64,
    /// Offset after the last batch returned: where the next read continues.
    pub next_offset: u64,
}

/// Counters and sizes of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// `fdatasync` calls on segment data since open (group commit: fewer than batches).
    pub syncs: u64,
    /// Batches appended since open.
    pub batches_appended: u64,
    /// Segments in the log.
    pub segments: usize,
    /// Bytes of all segments.
    pub size_bytes: u64,
    /// First offset held.
    pub start_offset: u64,
    /// Next offset to assign.
    pub next_offset: u64,
    /// Every offset below this is on disk.
    pub durable_offset: u64,
}

/// An append-only log of Qiss record batches in segment files. See the crate docs.
///
/// `Send + Sync`: share it with an `Arc`; every method takes `&self`.
pub struct SegmentLog {
    pub(crate) shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    closed: bool,
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Encryption at rest: every records section on disk is under this cipher.
    pub(crate) cipher: Option<LogCipher>,
    pub(crate) structure: RwLock<()>,
    pub(crate) sync_lock: Mutex<()>,
    pub(crate) state: Mutex<State>,
    /// Wakes the flusher thread (`Interval`) when a notification or unsynced bytes are
    /// pending. `Always` logs queue themselves on the sync pool instead.
    flusher_wake: Condvar,
    /// This log, for queueing itself on the sync pool.
    me: Weak<Shared>,
    /// Owned by the sync pool: queued, or a pool thread is running its rounds. Released
    /// by that thread when nothing is left to sync ([`Shared::sync_step`]).
    queued: AtomicBool,
    /// Exclusive end of the durable prefix. Raised only after an `fdatasync` returned
    /// (or when truncation/purge redefine the log); read without locks.
    pub(crate) durable: AtomicU64,
    shutdown: AtomicBool,
    pub(crate) syncs: AtomicU64,
}

pub(crate) struct State {
    /// Keyed by base offset; the last one is the active segment.
    pub(crate) segments: BTreeMap<u64, Segment>,
    pub(crate) next_offset: u64,
    /// Bytes written since open (monotonic, also across truncations).
    pub(crate) written_bytes: u64,
    /// `written_bytes` as of the start of the last successful sync.
    pub(crate) synced_bytes: u64,
    /// Pending durability notifications, in registration order.
    pub(crate) waiters: Vec<Waiter>,
    /// Sealed segments with an open handle (the LRU's size).
    pub(crate) open_sealed: usize,
    tick: u64,
    /// Set by the first failed write or sync; the log then refuses work.
    failed: Option<Error>,
    /// The active segment and its length at the last `fdatasync` that returned `Ok`
    /// (or at open, truncation, purge, roll: every point the log knows durable).
    pub(crate) synced_pos: crate::salvage::SyncedPos,
    /// `FsyncPolicy::Always` logs: the directory to note in `salvage` on failure.
    salvage_dir: Option<PathBuf>,
    /// Reused buffer to stamp a batch's base offset without touching the caller's bytes.
    scratch: Vec<u8>,
    batches_appended: u64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock (a bug) must not turn every later call into a panic;
    // the state is only mutated in ways that keep it consistent between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
    pub(crate) fn start_offset(&self) -> u64 {
        *self
            .segments
            .keys()
            .next()
            .expect("a log always has an active segment")
    }
    pub(crate) fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(first) => Err(Error::Failed {
                first: Box::new(first.clone()),
            }),
            None => Ok(()),
        }
    }
    /// Enters the failed state; returns every pending notification to fail.
    pub(crate) fn fail(&mut self, err: &Error) -> Vec<Waiter> {
        if self.failed.is_none() {
            tracing::error!(error = %err, "segment log failed; reopen to recover");
            self.failed = Some(err.clone());
            if let Some(dir) = &self.salvage_dir {
                crate::salvage::note(dir, self.synced_pos);
            }
        }
        std::mem::take(&mut self.waiters)
    }
    /// Removes and returns the notifications satisfied by `durable`.
    fn take_ready(&mut self, durable: u64) -> Vec<Waiter> {
        let (ready, pending) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.end <= durable);
        self.waiters = pending;
        ready
    }
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, running recovery: see the crate docs for the
    /// rules. Returns [`Error::Corruption`] if durable data is damaged.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<SegmentLog> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create log directory", &dir, e))?;
        // A log that failed in this process reopens at its last successful sync.
        crate::salvage::apply(&dir)?;
        // Before any segment is read: a wrong key must never make recovery cut data.
        let cipher = LogCipher::for_dir(&dir, config.at_rest.as_ref(), !has_segments(&dir)?)?;
        let segments = recover(&dir, &config, cipher.as_ref())?;
        let next_offset = segments
            .values()
            .next_back()
            .expect("recover returns a segment")
            .next;
        let open_sealed = segments.values().filter(|s| s.file.is_some()).count() - 1;
        let synced_pos = segments
            .values()
            .next_back()
            .map(|s| (s.base, s.size))
            .expect("recover returns a segment");
        let salvage_dir = (config.fsync == FsyncPolicy::Always).then(|| dir.clone());
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            queued: AtomicBool::new(false),
            dir,
            cipher,
            structure: RwLock::new(()),
            sync_lock: Mutex::new(()),
            state: Mutex::new(State {
                segments,
                next_offset,
                written_bytes: 0,
                synced_bytes: 0,
                waiters: Vec::new(),
                open_sealed,
                tick: 0,
                failed: None,
                synced_pos,
                salvage_dir,
                scratch: Vec::new(),
                batches_appended: 0,
            }),
            flusher_wake: Condvar::new(),
            // `recover` synced the tail, so everything recovered is durable.
            durable: AtomicU64::new(next_offset),
            shutdown: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            config,
        });
        let flusher = match shared.config.fsync {
            FsyncPolicy::Never => None,
            FsyncPolicy::Always => {
                sync_pool::ensure_started(&shared.dir)?;
                None
            }
            FsyncPolicy::Interval(_) => {
                let s = Arc::clone(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("neo-log-flusher".into())
                        .spawn(move || s.flusher_loop())
                        .map_err(|e| Error::io("spawn flusher thread", &shared.dir, e))?,
                )
            }
        };
        Ok(SegmentLog {
            shared,
            flusher,
            closed: false,
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Appends one batch (validated with `qiss::batch::check`), stamping its base offset
    /// with the log's next offset. The caller's bytes are not modified.
    pub fn append(&self, batch: &[u8]) -> Result<Appended> {
        self.shared.append(batch, false, None)
    }

    /// Appends one batch whose base offset is already set and must equal the log's next
    /// offset ([`Error::NonContiguous`] otherwise): the Raft follower path, where the
    /// leader's bytes are stored unchanged.
    pub fn append_at(&self, batch: &[u8]) -> Result<Appended> {
        self.shared.append(batch, true, None)
    }

    /// [`SegmentLog::append`], then `on_durable` once the batch is durable. If the append
    /// itself fails, the error is returned and `on_durable` is dropped uncalled.
    pub fn append_with(
        &self,
        batch: &[u8],
        on_durable: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<Appended> {
        self.shared.append(batch, false, Some(Box::new(on_durable)))
    }

    /// [`SegmentLog::append_at`] for a batch whose CRC its caller checked on receipt (the
    /// Raft log store, whose entries carry that proof): `head` is `batch`'s header with
    /// the stamps written in (`base_offset`, which must equal the log's next offset,
    /// `term`, `log_index`; all outside the CRC), `batch` the whole batch as received.
    /// The log writes `head`, then `batch` after its header: no CRC is computed and the
    /// body is not copied. A `head` that differs from `batch`'s header in anything but
    /// the stamps is refused ([`Error::InvalidBatch`]).
    pub fn append_stamped_at(&self, head: &[u8; HEADER_LEN], batch: &[u8]) -> Result<Appended> {
        self.shared.append_stamped(head, batch)
    }

    /// [`SegmentLog::append_at`] with a durability callback (see `append_with`).
    pub fn append_at_with(
        &self,
        batch: &[u8],
        on_durable: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<Appended> {
        self.shared.append(batch, true, Some(Box::new(on_durable)))
    }

    /// [`SegmentLog::append`], returning a [`Durable`] handle to wait on.
    pub fn append_durable(&self, batch: &[u8]) -> Result<(Appended, Durable)> {
        let (durable, cb) = Durable::pair();
        let appended = self.shared.append(batch, false, Some(cb))?;
        Ok((appended, durable))
    }

    /// Calls `callback` once every offset below `end` is durable (at once, on this
    /// thread, if it already is). This is the hook for a Raft log store: append the
    /// entries of one `append` call, then register its `IOFlushed` here with the last
    /// [`Appended::next_offset`]. Under [`FsyncPolicy::Never`] it fires only on an
    /// explicit [`SegmentLog::sync`] (or roll, buffer limit, drop).
    pub fn notify_durable(&self, end: u64, callback: impl FnOnce(Result<()>) + Send + 'static) {
        self.shared.register(end, Box::new(callback));
    }

    /// A [`Durable`] handle for everything below `end`.
    pub fn durable(&self, end: u64) -> Durable {
        let (durable, cb) = Durable::pair();
        self.shared.register(end, cb);
        durable
    }

    /// Every offset below this is on disk (an `fdatasync` covering it has returned).
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The offset the next appended batch gets.
    pub fn next_offset(&self) -> u64 {
        lock(&self.shared.state).next_offset
    }

    /// The first fatal error, if the log has failed (every later write and sync returns
    /// [`Error::Failed`] holding it): what a caller asks whether the disk is full.
    pub fn failure(&self) -> Option<Error> {
        lock(&self.shared.state).failed.clone()
    }

    /// The first offset the log holds (base of its oldest segment).
    pub fn start_offset(&self) -> u64 {
        lock(&self.shared.state).start_offset()
    }

    /// Syncs everything appended so far and completes the notifications it covers.
    /// Returns the durable offset.
    pub fn sync(&self) -> Result<u64> {
        self.shared.sync_round()
    }

    /// Reads whole batches from the batch holding `offset` on, up to `max_bytes` (at
    /// least one batch, however large, like Kafka), within one segment.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<LogSlice> {
        self.shared.read(offset, max_bytes, u64::MAX)
    }

    /// [`SegmentLog::read`] limited to batches that end at or below `end` (e.g. the
    /// commit index): a batch straddling `end` is not returned.
    pub fn read_bounded(&self, offset: u64, max_bytes: usize, end: u64) -> Result<LogSlice> {
        self.shared.read(offset, max_bytes, end)
    }

    /// Base offset of the first batch whose max timestamp is at least `timestamp`, or
    /// `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        self.shared.offset_for_timestamp(timestamp)
    }

    /// Removes every batch holding an offset at or above `from` (a Raft log conflict).
    /// Returns the new next offset: `from` when it is a batch boundary, else the base
    /// of the batch holding `from`. The cut is synced before returning; pending
    /// notifications beyond it complete with [`Error::Truncated`], the others with `Ok`.
    ///
    /// A zero-width control batch holds no offset: those at `from` itself are kept (to
    /// cut one of them, use [`SegmentLog::truncate_at`]).
    pub fn truncate_suffix(&self, from: u64) -> Result<u64> {
        self.shared.truncate(crate::position::Cut::Offset(from))
    }

    /// Deletes whole segments whose offsets are all below `offset`; returns the new
    /// start offset (may stay below `offset`: a segment is kept until entirely below).
    /// If `offset` is at or beyond the next offset, every segment goes and the log
    /// restarts empty at `offset` (a Raft snapshot install).
    pub fn purge_prefix(&self, offset: u64) -> Result<u64> {
        self.shared.purge_prefix(offset)
    }

    /// The offset retention would purge up to at time `now_ms` (ms since the epoch): the
    /// base of the oldest segment to keep, or `None` if nothing is due. Only sealed
    /// segments are ever due. No I/O: the caller decides (a Raft group purges through
    /// its log, not by itself).
    pub fn retention_plan(&self, now_ms: i64) -> Option<u64> {
        let c = &self.shared.config;
        self.retention_plan_for(c.retention_ms, c.retention_bytes, now_ms)
    }

    /// [`SegmentLog::retention_plan`] under the given limits instead of the log's own
    /// config (a Raft group's log takes its topic's retention from the metadata): the
    /// base offset of the oldest segment to keep, or `None` if nothing is due. Sealed
    /// segments whose newest timestamp is older than `now_ms - retention_ms` are due,
    /// and the oldest sealed segments while the whole log is larger than
    /// `retention_bytes`. The active segment is never due. No I/O.
    pub fn retention_plan_for(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    ) -> Option<u64> {
        let st = lock(&self.shared.state);
        retention_plan(retention_ms, retention_bytes, &st.segments, now_ms)
    }

    /// Where a cut below `offset` would go (a queue's ack floor: everything below it is
    /// done): the base offset of the oldest segment to keep when every record of one or
    /// more sealed segments lies below `offset`; `None` otherwise. The active segment is
    /// never due.
    pub fn cut_below(&self, offset: u64) -> Option<u64> {
        let st = lock(&self.shared.state);
        let mut sealed: Vec<&Segment> = st.segments.values().collect();
        sealed.pop(); // the active segment is never due
        let n = sealed.iter().take_while(|s| s.next <= offset).count();
        n.checked_sub(1).map(|last| sealed[last].next)
    }

    /// Applies [`SegmentLog::retention_plan`]; returns the new start offset if anything
    /// was deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<Option<u64>> {
        match self.retention_plan(now_ms) {
            Some(offset) => self.purge_prefix(offset).map(Some),
            None => Ok(None),
        }
    }

    /// Reads and verifies every batch of every segment (a scrub). Returns the first
    /// [`Error::Corruption`] found.
    pub fn verify(&self) -> Result<()> {
        self.shared.verify()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> LogStats {
        let st = lock(&self.shared.state);
        LogStats {
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            batches_appended: st.batches_appended,
            segments: st.segments.len(),
            size_bytes: st.segments.values().map(|s| s.size).sum(),
            start_offset: st.start_offset(),
            next_offset: st.next_offset,
            durable_offset: self.durable_offset(),
        }
    }

    /// Stops the flusher, syncs, and completes every notification. Dropping the log
    /// does the same but cannot report the sync's error.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.shared.shutdown.store(true, Ordering::Release);
        {
            let _st = lock(&self.shared.state);
            self.shared.flusher_wake.notify_all();
        }
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        let result = self.shared.sync_round().map(|_| ());
        // Anything still pending waits for offsets never appended.
        let rest = std::mem::take(&mut lock(&self.shared.state).waiters);
        fire(rest, &Err(Error::Closed));
        result
    }
}

impl Drop for SegmentLog {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "final sync of the segment log failed");
        }
    }
}

/// A batch that passed the append's checks, on its way into the log.
struct Checked<'a> {
    /// The whole batch.
    batch: &'a [u8],
    /// When given, written instead of `batch`'s header (the stamped copy of
    /// `append_stamped_at`).
    head: Option<&'a [u8; HEADER_LEN]>,
    /// Its header, with the stamps as they will be written.
    header: BatchHeader,
    /// Whether `header.base_offset` must be the log's next offset (else it is stamped).
    keep_base: bool,
}

impl Shared {
    fn append(
        &self,
        batch: &[u8],
        keep_base: bool,
        callback: Option<DurableCallback>,
    ) -> Result<Appended> {
        self.check_size(batch)?;
        let header = qiss::batch::check(batch)?;
        Self::check_length(&header, batch)?;
        let input = Checked {
            batch,
            head: None,
            header,
            keep_base,
        };
        self.append_checked(&input, callback)
    }

    /// See [`SegmentLog::append_stamped_at`].
    fn append_stamped(&self, head: &[u8; HEADER_LEN], batch: &[u8]) -> Result<Appended> {
        self.check_size(batch)?;
        let mut header = BatchHeader::parse(batch)?;
        Self::check_length(&header, batch)?;
        // Only the stamps may differ: everything else the CRC covers (or frames the
        // batch) must be the batch's own, so what is written checks as it did.
        let same = |r: std::ops::Range<usize>| head[r.clone()] == batch[r];
        if !(same(BATCH_LENGTH_POS..TERM_POS) && same(CRC_POS..HEADER_LEN)) {
            return Err(Error::InvalidBatch(qiss::Error::CorruptBatch {
                reason: "stamped header differs from the batch's beyond the stamps",
            }));
        }
        let stamp = |pos: usize| {
            let mut le = [0u8; 8];
            le.copy_from_slice(&head[pos..pos + 8]);
            u64::from_le_bytes(le)
        };
        header.base_offset = stamp(BASE_OFFSET_POS);
        header.term = stamp(TERM_POS);
        header.log_index = stamp(LOG_INDEX_POS);
        let input = Checked {
            batch,
            head: Some(head),
            header,
            keep_base: true,
        };
        self.append_checked(&input, None)
    }

    fn check_size(&self, batch: &[u8]) -> Result<()> {
        let max = self.config.batch_size_bytes_max;
        if batch.len() as u64 > u64::from(max) {
            return Err(Error::BatchTooLarge {
                size: batch.len() as u64,
                max: u64::from(max),
            });
        }
        Ok(())
    }

    fn check_length(header: &BatchHeader, batch: &[u8]) -> Result<()> {
        if header.batch_length as usize != batch.len() {
            return Err(Error::InvalidBatch(qiss::Error::TrailingBytes {
                remaining: batch.len() - header.batch_length as usize,
            }));
        }
        Ok(())
    }

    /// The append after the checks.
    fn append_checked(
        &self,
        input: &Checked<'_>,
        callback: Option<DurableCallback>,
    ) -> Result<Appended> {
        let mut to_fire = Vec::new();
        let result = self.append_locked(input, callback, &mut to_fire);
        let need_sync = matches!(result, Ok((_, true)));
        match &to_fire[..] {
            [] => {}
            _ => {
                let r = match &result {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.clone()),
                };
                fire(to_fire, &r);
            }
        }
        let (appended, _) = result?;
        if need_sync {
            // Over `buffered_bytes_max` with no flusher: the appender pays for a sync.
            self.sync_round()?;
        }
        Ok(appended)
    }

    /// The locked part of an append. `to_fire` collects notifications to run after
    /// unlocking (satisfied by a roll: fire `Ok`; or failed: fire the error).
    fn append_locked(
        &self,
        input: &Checked<'_>,
        callback: Option<DurableCallback>,
        to_fire: &mut Vec<Waiter>,
    ) -> Result<(Appended, bool)> {
        let &Checked {
            batch,
            head,
            ref header,
            keep_base,
        } = input;
        let mut st = lock(&self.state);
        st.check_failed()?;
        let base = st.next_offset;
        if keep_base && header.base_offset != base {
            return Err(Error::NonContiguous {
                expected: base,
                got: header.base_offset,
            });
        }
        let len = batch.len() as u64;
        let next = base
            .checked_add(u64::from(header.record_count))
            .ok_or(Error::InvalidConfig("offset space exhausted"))?;
        {
            let active = st.active();
            // A segment is named by its base offset, so a new one can start only past
            // the active one's base: a segment holding nothing but zero-width control
            // batches (all at its base) grows past the limit until a record comes.
            let too_big = active.size > 0
                && active.size + len > self.config.segment_size_bytes_max
                && base > active.base;
            let too_many = next - active.base > u64::from(u32::MAX);
            if too_big || too_many {
                match self.roll(&mut st) {
                    Ok(ready) => to_fire.extend(ready),
                    Err(e) => {
                        to_fire.extend(st.fail(&e));
                        return Err(e);
                    }
                }
            }
        }
        let State {
            segments, scratch, ..
        } = &mut *st;
        let active = segments.values_mut().next_back().expect("active segment");
        let position = active.size;
        let file = Arc::clone(active.file.as_ref().expect("active segment is open"));
        let write_started = std::time::Instant::now();
        let injected = crate::failpoints::hit(
            crate::failpoints::Point::SegmentWrite,
            &segment::log_path(&self.dir, active.base),
        );
        let written = match (&self.cipher, head) {
            _ if injected.is_err() => injected,
            // Encrypted at rest: the header as stamped, the records section encrypted,
            // built in the scratch buffer (the caller's bytes are not modified).
            (Some(cipher), _) => {
                scratch.clear();
                scratch.extend_from_slice(head.map_or(&batch[..HEADER_LEN], |h| &h[..]));
                if head.is_none() {
                    qiss::batch::set_base_offset(scratch, base);
                }
                scratch.extend_from_slice(&batch[HEADER_LEN..]);
                let (h, body) = scratch.split_at_mut(HEADER_LEN);
                if let Err(reason) = cipher.apply(h, body) {
                    // Nothing was written: the log stays usable.
                    return Err(Error::AtRest {
                        dir: self.dir.clone(),
                        reason,
                    });
                }
                file.write_all_at(scratch, position)
            }
            // The stamped header, then the body straight from the caller's buffer.
            (None, Some(head)) => file.write_all_at(head, position).and_then(|()| {
                file.write_all_at(&batch[HEADER_LEN..], position + HEADER_LEN as u64)
            }),
            (None, None) => {
                let bytes: &[u8] = if header.base_offset == base {
                    batch
                } else {
                    scratch.clear();
                    scratch.extend_from_slice(batch);
                    qiss::batch::set_base_offset(scratch, base);
                    scratch
                };
                file.write_all_at(bytes, position)
            }
        };
        if let Err(e) = written {
            let err = Error::io(
                "write segment",
                segment::log_path(&self.dir, active.base),
                e,
            );
            to_fire.extend(st.fail(&err));
            return Err(err);
        }
        crate::stats::stats().appended(len, write_started.elapsed());
        active.index.on_batch(
            self.config.index_interval_bytes,
            (base - active.base) as u32,
            position as u32,
            len as u32,
            header.max_timestamp,
        );
        active.size += len;
        active.next = next;
        let appended = Appended {
            base_offset: base,
            next_offset: next,
            segment: active.base,
            position,
            batch_bytes: len as u32,
        };
        st.next_offset = next;
        st.written_bytes += len;
        st.batches_appended += 1;
        if let Some(cb) = callback {
            st.waiters.push(Waiter {
                end: next,
                callback: cb,
            });
        }
        if self.config.fsync == FsyncPolicy::Always {
            self.wake_flusher();
        }
        let over = st.written_bytes - st.synced_bytes > self.config.buffered_bytes_max;
        // With a flusher thread, it syncs at once, off the appender's thread (which may
        // be an async executor's): the appender does not wait for an `fdatasync`.
        // Without one (`Never`), the appender pays for the sync (backpressure).
        if over && self.config.fsync != FsyncPolicy::Never {
            self.wake_flusher();
        }
        Ok((appended, over && self.config.fsync == FsyncPolicy::Never))
    }

    /// Seals the active segment (synced, index files written) and starts a new one at
    /// the next offset. Called with the state lock held; returns notifications the sync
    /// of the sealed segment satisfied.
    fn roll(&self, st: &mut State) -> Result<Vec<Waiter>> {
        let dir = &self.dir;
        let active = st.active();
        let old_path = segment::log_path(dir, active.base);
        let sync_started = std::time::Instant::now();
        active
            .file
            .as_ref()
            .expect("active segment is open")
            .sync_data()
            .map_err(|e| Error::io("fdatasync segment", &old_path, e))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        crate::stats::stats().synced(sync_started.elapsed());
        segment::write_index_files(dir, active)?;
        // Index files are durable before the next segment exists: a sealed segment
        // without index files then means damage or an interrupted purge (see recover).
        segment::sync_dir(dir)?;
        let base = st.next_offset;
        let path = segment::log_path(dir, base);
        let file = segment::open_rw(&path, true)?;
        segment::sync_dir(dir)?;
        st.segments.insert(
            base,
            Segment {
                base,
                next: base,
                size: 0,
                index: crate::index::SegmentIndex::new(),
                file: Some(Arc::new(file)),
                last_used: 0,
            },
        );
        st.open_sealed += 1;
        evict_files(st, self.config.open_files_max);
        st.synced_bytes = st.written_bytes;
        st.synced_pos = st.synced_pos.max((base, 0));
        self.durable.fetch_max(base, Ordering::AcqRel);
        Ok(st.take_ready(base))
    }

    fn register(&self, end: u64, callback: DurableCallback) {
        let mut st = lock(&self.state);
        if let Err(e) = st.check_failed() {
            drop(st);
            callback(Err(e));
            return;
        }
        // `durable` is raised under the state lock, so this check cannot miss a round.
        // Offsets alone do not say it: a zero-width control batch appended at `end`
        // holds no offset, so it is durable only once nothing written is unsynced.
        if self.durable.load(Ordering::Acquire) >= end && st.synced_bytes == st.written_bytes {
            drop(st);
            callback(Ok(()));
            return;
        }
        st.waiters.push(Waiter { end, callback });
        if self.config.fsync == FsyncPolicy::Always {
            self.wake_flusher();
        }
    }

    /// One group-commit round: take every pending notification, `fdatasync` the active
    /// segment once, then complete them all.
    fn sync_round(&self) -> Result<u64> {
        let sync_guard = lock(&self.sync_lock);
        let (file, path, target, written, waiters) = {
            let mut st = lock(&self.state);
            if let Err(e) = st.check_failed() {
                let w = std::mem::take(&mut st.waiters);
                drop(st);
                drop(sync_guard);
                fire(w, &Err(e.clone()));
                return Err(e);
            }
            let target = st.next_offset;
            let written = st.written_bytes;
            if written == st.synced_bytes {
                // Nothing new since the last sync: everything below `target` is
                // durable already. Complete what is satisfied and leave.
                self.durable.fetch_max(target, Ordering::AcqRel);
                let ready = st.take_ready(target);
                drop(st);
                drop(sync_guard);
                fire(ready, &Ok(()));
                return Ok(target);
            }
            let waiters = st.take_ready(target);
            let active = st.active();
            (
                Arc::clone(active.file.as_ref().expect("active segment is open")),
                segment::log_path(&self.dir, active.base),
                target,
                (written, (active.base, active.size)),
                waiters,
            )
        };
        let (written, pos) = written;
        let sync_started = std::time::Instant::now();
        let result = crate::failpoints::hit(crate::failpoints::Point::SegmentSync, &path)
            .and_then(|()| file.sync_data());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        crate::stats::stats().synced(sync_started.elapsed());
        let mut st = lock(&self.state);
        match result {
            Ok(()) => {
                st.synced_bytes = st.synced_bytes.max(written);
                st.synced_pos = st.synced_pos.max(pos);
                self.durable.fetch_max(target, Ordering::AcqRel);
                drop(st);
                drop(sync_guard);
                fire(waiters, &Ok(()));
                Ok(target)
            }
            Err(e) => {
                let err = Error::io("fdatasync segment", path, e);
                let mut all = waiters;
                all.extend(st.fail(&err));
                drop(st);
                drop(sync_guard);
                fire(all, &Err(err.clone()));
                Err(err)
            }
        }
    }

    /// Asks for a sync round off the caller's thread: `Always` logs queue themselves on
    /// the sync pool (once, until a pool thread takes them), `Interval` logs wake their
    /// flusher thread. Called with the state lock held.
    fn wake_flusher(&self) {
        match self.config.fsync {
            FsyncPolicy::Always => {
                if !self.queued.swap(true, Ordering::AcqRel) {
                    match self.me.upgrade() {
                        Some(me) => sync_pool::schedule(me),
                        None => self.queued.store(false, Ordering::Release),
                    }
                }
            }
            FsyncPolicy::Interval(_) => self.flusher_wake.notify_one(),
            FsyncPolicy::Never => {}
        }
    }

    /// A sync pool thread's turn at this log: one round if anything is pending (the
    /// flusher thread's rule; a closing log does its own final round). `true`: more
    /// is pending, and the caller still holds the `queued` flag; `false`: the flag is
    /// released (a later append queues the log again).
    pub(crate) fn sync_step(&self) -> bool {
        if self.sync_pending() {
            // Errors are recorded in the state and delivered to the waiters.
            let _ = self.sync_round();
            if self.sync_pending() {
                return true;
            }
        }
        self.queued.store(false, Ordering::Release);
        // An append between the look above and the release saw the flag set and did not
        // queue the log: look again, and keep the log if the flag is still free.
        self.sync_pending() && !self.queued.swap(true, Ordering::AcqRel)
    }

    /// Something to sync, on a log that is open and has not failed.
    fn sync_pending(&self) -> bool {
        if self.shutdown.load(Ordering::Acquire) {
            return false;
        }
        let st = lock(&self.state);
        (st.written_bytes != st.synced_bytes || !st.waiters.is_empty()) && st.failed.is_none()
    }

    /// The `Interval` policy's flusher thread.
    fn flusher_loop(&self) {
        let interval = match self.config.fsync {
            FsyncPolicy::Interval(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        };
        loop {
            {
                let mut st = lock(&self.state);
                loop {
                    if self.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    let pending = st.written_bytes != st.synced_bytes || !st.waiters.is_empty();
                    match interval {
                        None if pending && st.failed.is_none() => break,
                        None => {
                            st = self
                                .flusher_wake
                                .wait(st)
                                .unwrap_or_else(|p| p.into_inner())
                        }
                        Some(d) => {
                            st = self
                                .flusher_wake
                                .wait_timeout(st, d)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                            let pending =
                                st.written_bytes != st.synced_bytes || !st.waiters.is_empty();
                            if self.shutdown.load(Ordering::Acquire) {
                                return;
                            }
                            if pending && st.failed.is_none() {
                                break;
                            }
                        }
                    }
                }
            }
            // Errors are recorded in the state and delivered to the waiters.
            let _ = self.sync_round();
        }
    }

    fn read(&self, offset: u64, max_bytes: usize, end: u64) -> Result<LogSlice> {
        let _structure = self.structure.read().unwrap_or_else(|p| p.into_inner());
        let (file, seg_base, seg_size, start_pos, path) = {
            let mut st = lock(&self.state);
            let (start, next) = (st.start_offset(), st.next_offset);
            if offset < start || offset > next {
                return Err(Error::OffsetOutOfRange {
                    requested: offset,
                    start,
                    end: next,
                });
            }
            if offset >= end.min(next) {
                return Ok(empty(offset));
            }
            let seg_base = *st
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= start")
                .0;
            let file = open_segment_file(&self.dir, &mut st, seg_base, self.config.open_files_max)?;
            let seg = &st.segments[&seg_base];
            let pos = seg.index.position_for((offset - seg_base) as u32);
            (
                file,
                seg_base,
                seg.size,
                u64::from(pos),
                segment::log_path(&self.dir, seg_base),
            )
        };
        let remaining = seg_size - start_pos;
        let first_read = remaining.min(
            (max_bytes as u64)
                .saturating_add(u64::from(self.config.index_interval_bytes))
                .saturating_add(READ_SLACK_BYTES),
        );
        let mut buf = vec![0u8; first_read as usize];
        file.read_exact_at(&mut buf, start_pos)
            .map_err(|e| Error::io("read segment", &path, e))?;
        let corrupt =
            |p: usize, reason: String| Error::corruption(seg_base, start_pos + p as u64, reason);
        // Makes sure `buf` holds `[.., upto)`, reading more of the segment if needed.
        let ensure = |buf: &mut Vec<u8>, upto: usize| -> Result<bool> {
            if upto <= buf.len() {
                return Ok(true);
            }
            if upto as u64 > remaining {
                return Ok(false);
            }
            let old = buf.len();
            let new_len = (upto as u64).max((old as u64 * 2).min(remaining)) as usize;
            buf.resize(new_len, 0);
            file.read_exact_at(&mut buf[old..], start_pos + old as u64)
                .map_err(|e| Error::io("read segment", &path, e))?;
            Ok(true)
        };
        let (mut p, mut first, mut last_end, mut next_offset) =
            (0usize, None::<(usize, u64)>, 0usize, offset);
        let mut expected: Option<u64> = None;
        while (p as u64) < remaining {
            if !ensure(&mut buf, p + HEADER_LEN)? {
                return Err(corrupt(
                    p,
                    "batch header runs past the end of the segment".into(),
                ));
            }
            let len = match BatchHeader::peek_length(&buf[p..p + FRAMING_LEN]) {
                Some(Ok(len)) => len as usize,
                Some(Err(e)) => return Err(corrupt(p, e.to_string())),
                None => unreachable!("HEADER_LEN bytes are present"),
            };
            if !ensure(&mut buf, p + len)? {
                return Err(corrupt(
                    p,
                    format!("batch of {len} bytes runs past the end of the segment"),
                ));
            }
            let h = BatchHeader::parse(&buf[p..p + len]).map_err(|e| corrupt(p, e.to_string()))?;
            if expected.is_some_and(|x| x != h.base_offset)
                || (expected.is_none() && h.base_offset > offset)
            {
                return Err(corrupt(
                    p,
                    format!("unexpected base offset {}", h.base_offset),
                ));
            }
            expected = Some(h.next_offset());
            if h.next_offset() <= offset {
                p += len;
                continue;
            }
            if h.next_offset() > end {
                break;
            }
            match first {
                None => first = Some((p, h.base_offset)),
                Some((fp, _)) if p + len - fp > max_bytes => break,
                Some(_) => {}
            }
            p += len;
            last_end = p;
            next_offset = h.next_offset();
            if first.is_some_and(|(fp, _)| p - fp >= max_bytes) {
                break;
            }
        }
        if let (Some(cipher), Some((fp, _))) = (&self.cipher, first) {
            cipher
                .apply_all(&mut buf[fp..last_end])
                .map_err(|reason| corrupt(fp, reason))?;
        }
        match first {
            None => Ok(empty(offset)),
            Some((fp, base_offset)) => Ok(LogSlice {
                bytes: Bytes::from(buf).slice(fp..last_end),
                base_offset,
                next_offset,
            }),
        }
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let _structure = self.structure.read().unwrap_or_else(|p| p.into_inner());
        let mut after = None::<u64>;
        loop {
            let (file, base, size, pos) = {
                let mut st = lock(&self.state);
                let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                let Some(seg) = st
                    .segments
                    .range((lower, std::ops::Bound::Unbounded))
                    .map(|(_, s)| s)
                    .find(|s| s.size > 0 && s.index.max_timestamp >= timestamp)
                else {
                    return Ok(None);
                };
                let base = seg.base;
                let rel = seg.index.time_scan_start(timestamp);
                let pos = seg.index.position_for(rel);
                let size = seg.size;
                let file = open_segment_file(&self.dir, &mut st, base, self.config.open_files_max)?;
                (file, base, size, u64::from(pos))
            };
            let path = segment::log_path(&self.dir, base);
            let mut w = Window::new(&file, &path, size);
            let mut p = pos;
            while p < size {
                let Some(hb) = w.get(p, HEADER_LEN)? else {
                    return Err(Error::corruption(
                        base,
                        p,
                        "batch header runs past the end of the segment",
                    ));
                };
                let h = segment::parse_header(hb).map_err(|e| Error::corruption(base, p, e))?;
                if h.max_timestamp >= timestamp {
                    return Ok(Some(h.base_offset));
                }
                p += u64::from(h.batch_length);
            }
            after = Some(base);
        }
    }

    fn purge_prefix(&self, offset: u64) -> Result<u64> {
        let _structure = self.structure.write().unwrap_or_else(|p| p.into_inner());
        let sync_guard = lock(&self.sync_lock);
        let mut st = lock(&self.state);
        st.check_failed()?;
        let mut ready = Vec::new();
        if offset >= st.next_offset {
            // Reset: sync what is pending (so notifications complete truthfully), create
            // the new empty segment, then delete every older one. A crash in between
            // leaves a gap that `recover` recognises (see the crate docs).
            let active = st.active();
            let active_path = segment::log_path(&self.dir, active.base);
            let sync_started = std::time::Instant::now();
            if let Err(e) = active
                .file
                .as_ref()
                .expect("active segment is open")
                .sync_data()
            {
                let err = Error::io("fdatasync segment", active_path, e);
                let w = st.fail(&err);
                drop(st);
                fire(w, &Err(err.clone()));
                return Err(err);
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            crate::stats::stats().synced(sync_started.elapsed());
            let next = st.next_offset;
            self.durable.fetch_max(next, Ordering::AcqRel);
            ready = st.take_ready(next);
            let keep_active = st.active().base == offset;
            if keep_active {
                // The active segment is empty and already starts at `offset`.
                let old: Vec<u64> = st
                    .segments
                    .keys()
                    .copied()
                    .filter(|b| *b != offset)
                    .collect();
                for b in old {
                    st.segments.remove(&b);
                    segment::remove_if_exists(&segment::log_path(&self.dir, b))?;
                    segment::remove_index_files(&self.dir, b)?;
                }
                recount_open(&mut st);
            } else {
                let path = segment::log_path(&self.dir, offset);
                let file = segment::open_rw(&path, true)?;
                segment::sync_dir(&self.dir)?;
                let old: Vec<u64> = st.segments.keys().copied().collect();
                for b in old {
                    st.segments.remove(&b);
                    segment::remove_if_exists(&segment::log_path(&self.dir, b))?;
                    segment::remove_index_files(&self.dir, b)?;
                }
                st.segments.insert(
                    offset,
                    Segment {
                        base: offset,
                        next: offset,
                        size: 0,
                        index: crate::index::SegmentIndex::new(),
                        file: Some(Arc::new(file)),
                        last_used: 0,
                    },
                );
                st.open_sealed = 0;
            }
            st.next_offset = offset;
            st.synced_bytes = st.written_bytes;
            st.synced_pos = (offset, 0);
            self.durable.store(offset, Ordering::Release);
        } else {
            let doomed: Vec<u64> = {
                let active_base = st.active().base;
                st.segments
                    .values()
                    .take_while(|s| s.base != active_base && s.next <= offset)
                    .map(|s| s.base)
                    .collect()
            };
            for b in doomed {
                let seg = st.segments.remove(&b).expect("segment exists");
                if seg.file.is_some() {
                    st.open_sealed -= 1;
                }
                segment::remove_if_exists(&segment::log_path(&self.dir, b))?;
                segment::remove_index_files(&self.dir, b)?;
            }
        }
        segment::sync_dir(&self.dir)?;
        let start = st.start_offset();
        drop(st);
        drop(sync_guard);
        fire(ready, &Ok(()));
        Ok(start)
    }

    fn verify(&self) -> Result<()> {
        let _structure = self.structure.read().unwrap_or_else(|p| p.into_inner());
        let bases: Vec<(u64, u64, u64)> = lock(&self.state)
            .segments
            .values()
            .map(|s| (s.base, s.next, s.size))
            .collect();
        for (base, next, size) in bases {
            let file = {
                let mut st = lock(&self.state);
                open_segment_file(&self.dir, &mut st, base, self.config.open_files_max)?
            };
            let path = segment::log_path(&self.dir, base);
            let scan = segment::scan(
                &file,
                &path,
                base,
                size,
                self.config.index_interval_bytes,
                self.cipher.as_ref(),
            )?;
            if let Some((pos, reason)) = scan.stopped {
                return Err(Error::corruption(base, pos, reason));
            }
            if scan.next != next {
                return Err(Error::corruption(
                    base,
                    size,
                    format!("segment ends at offset {} instead of {next}", scan.next),
                ));
            }
        }
        Ok(())
    }
}

fn empty(offset: u64) -> LogSlice {
    LogSlice {
        bytes: Bytes::new(),
        base_offset: offset,
        next_offset: offset,
    }
}

/// Recounts open sealed handles (the active segment's handle is not in the LRU).
pub(crate) fn recount_open(st: &mut State) {
    st.open_sealed = st
        .segments
        .values()
        .filter(|s| s.file.is_some())
        .count()
        .saturating_sub(1);
}

/// Whether `dir` holds any segment file (an encrypted log may start only in a new one).
fn has_segments(dir: &Path) -> Result<bool> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list log directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list log directory", dir, e))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| segment::parse_name(n, "log").is_some())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The open handle of segment `base`, opening it (read-only) if needed and closing the
/// least recently used sealed handle beyond `open_files_max`.
pub(crate) fn open_segment_file(
    dir: &Path,
    st: &mut State,
    base: u64,
    open_files_max: usize,
) -> Result<Arc<File>> {
    st.tick += 1;
    let tick = st.tick;
    let seg = st.segments.get_mut(&base).expect("segment exists");
    seg.last_used = tick;
    if let Some(f) = &seg.file {
        return Ok(Arc::clone(f));
    }
    let f = Arc::new(segment::open_ro(&segment::log_path(dir, base))?);
    seg.file = Some(Arc::clone(&f));
    st.open_sealed += 1;
    evict_files(st, open_files_max);
    Ok(f)
}

fn evict_files(st: &mut State, open_files_max: usize) {
    while st.open_sealed > open_files_max {
        let active_base = st.active().base;
        let victim = st
            .segments
            .values_mut()
            .filter(|s| s.base != active_base && s.file.is_some())
            .min_by_key(|s| s.last_used);
        match victim {
            Some(v) => {
                // Readers holding the Arc keep the file open until they finish.
                v.file = None;
                st.open_sealed -= 1;
            }
            None => break,
        }
    }
}

/// The offset to purge up to under the retention limits (see `retention_plan`).
pub(crate) fn retention_plan(
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segments: &BTreeMap<u64, Segment>,
    now_ms: i64,
) -> Option<u64> {
    let sealed: Vec<&Segment> = {
        let mut v: Vec<&Segment> = segments.values().collect();
        v.pop(); // the active segment is never due
        v
    };
    let mut keep_from = 0usize;
    if let Some(ms) = retention_ms {
        let cutoff = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
        keep_from = sealed
            .iter()
            .take_while(|s| s.index.max_timestamp < cutoff)
            .count();
    }
    if let Some(max) = retention_bytes {
        let mut total: u64 = segments.values().map(|s| s.size).sum();
        let mut n = 0;
        while n < sealed.len() && total > max {
            total -= sealed[n].size;
            n += 1;
        }
        keep_from = keep_from.max(n);
    }
    match keep_from {
        0 => None,
        n => Some(sealed[n - 1].next),
    }
}

/// Opens every segment of `dir`, recovering the tail. See the crate docs for the rules.
fn recover(
    dir: &Path,
    config: &LogConfig,
    cipher: Option<&LogCipher>,
) -> Result<BTreeMap<u64, Segment>> {
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list log directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(b) = segment::parse_name(name, "log") {
            bases.push(b);
        } else if let Some(b) =
            segment::parse_name(name, "index").or_else(|| segment::parse_name(name, "timeindex"))
        {
            index_files.push(b);
        }
    }
    bases.sort_unstable();
    for b in index_files {
        if bases.binary_search(&b).is_err() {
            segment::remove_index_files(dir, b)?;
        }
    }
    if bases.is_empty() {
        let path = segment::log_path(dir, config.initial_offset);
        segment::open_rw(&path, true)?;
        segment::sync_dir(dir)?;
        bases.push(config.initial_offset);
    }
    finish_interrupted_reset(dir, config, &mut bases, cipher)?;
    let mut segments = BTreeMap::new();
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::log_path(dir, base);
        if i < last {
            let following = bases[i + 1];
            let len = fs::metadata(&path)
                .map_err(|e| Error::io("stat segment", &path, e))?
                .len();
            let index = match segment::load_sealed_index(dir, base, len, following) {
                Some(index) => index,
                None => {
                    let file = segment::open_ro(&path)?;
                    let scan = segment::scan(
                        &file,
                        &path,
                        base,
                        len,
                        config.index_interval_bytes,
                        cipher,
                    )?;
                    if let Some((pos, reason)) = scan.stopped {
                        return Err(Error::corruption(
                            base,
                            pos,
                            format!("sealed segment: {reason}"),
                        ));
                    }
                    if scan.next != following {
                        return Err(Error::corruption(
                            base,
                            scan.size,
                            format!(
                                "segment ends at offset {} but the next segment starts at {following}",
                                scan.next
                            ),
                        ));
                    }
                    let seg = Segment {
                        base,
                        next: following,
                        size: len,
                        index: scan.index,
                        file: None,
                        last_used: 0,
                    };
                    segment::write_index_files(dir, &seg)?;
                    tracing::info!(segment = base, "rebuilt index files");
                    segments.insert(base, seg);
                    continue;
                }
            };
            segments.insert(
                base,
                Segment {
                    base,
                    next: following,
                    size: len,
                    index,
                    file: None,
                    last_used: 0,
                },
            );
        } else {
            let file = segment::open_rw(&path, false)?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat segment", &path, e))?
                .len();
            let scan = segment::scan(&file, &path, base, len, config.index_interval_bytes, cipher)?;
            if let Some((pos, reason)) = &scan.stopped {
                if let Some(valid) = segment::valid_batch_after(&file, &path, *pos, len, cipher)? {
                    return Err(Error::corruption(
                        base,
                        *pos,
                        format!("{reason}; a valid batch follows at position {valid}"),
                    ));
                }
                tracing::warn!(segment = base, position = pos, dropped_bytes = len - pos, reason = %reason, "cutting torn tail");
                file.set_len(*pos)
                    .map_err(|e| Error::io("truncate torn tail", &path, e))?;
            }
            file.sync_data()
                .map_err(|e| Error::io("fdatasync segment", &path, e))?;
            segment::remove_index_files(dir, base)?;
            segments.insert(
                base,
                Segment {
                    base,
                    next: scan.next,
                    size: scan.size,
                    index: scan.index,
                    file: Some(Arc::new(file)),
                    last_used: 0,
                },
            );
        }
    }
    segment::sync_dir(dir)?;
    Ok(segments)
}

/// `purge_prefix` past the end creates an empty segment at the new start, then deletes
/// the older ones. If a crash came in between, the tail is empty, the segment before it
/// has no index files (it was the active one) and ends below the tail's base. Only that
/// exact shape is completed here; any other gap is reported as corruption later.
fn finish_interrupted_reset(
    dir: &Path,
    config: &LogConfig,
    bases: &mut Vec<u64>,
    cipher: Option<&LogCipher>,
) -> Result<()> {
    let n = bases.len();
    if n < 2 {
        return Ok(());
    }
    let (prev, tail) = (bases[n - 2], bases[n - 1]);
    let tail_path = segment::log_path(dir, tail);
    let tail_len = fs::metadata(&tail_path)
        .map_err(|e| Error::io("stat segment", &tail_path, e))?
        .len();
    let has_index =
        segment::index_path(dir, prev).exists() || segment::time_index_path(dir, prev).exists();
    if tail_len != 0 || has_index {
        return Ok(());
    }
    let path = segment::log_path(dir, prev);
    let file = segment::open_ro(&path)?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    let scan = segment::scan(&file, &path, prev, len, config.index_interval_bytes, cipher)?;
    if scan.stopped.is_some() || scan.next >= tail {
        return Ok(());
    }
    tracing::warn!(new_start = tail, "completing an interrupted purge_prefix");
    for &b in &bases[..n - 1] {
        segment::remove_if_exists(&segment::log_path(dir, b))?;
        segment::remove_index_files(dir, b)?;
    }
    segment::sync_dir(dir)?;
    bases.drain(..n - 1);
    Ok(())
}
