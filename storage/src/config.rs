//! Named limits of a segment log (units last in every name).

use crate::error::{Error, Result};

/// When the log calls `fdatasync` on its own.
///
/// Whatever the policy, a durability notification fires only after an `fdatasync` that
/// covers the batch has returned; the policy only decides *when* that sync happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A sync-pool thread syncs as soon as anything is pending; one `fdatasync` covers
    /// every batch appended since the previous one (group commit). Loss window: none for
    /// notified batches.
    Always,
    /// The flusher syncs every `n` milliseconds if anything is pending. Loss window on
    /// power failure: up to `n` ms of appends (notifications wait for the sync).
    Interval(u64),
    /// Never sync on a timer; data becomes durable on [`crate::SegmentLog::sync`], on a
    /// segment roll, when unsynced bytes pass `buffered_bytes_max`, and on drop.
    /// Loss window: everything since the last of those.
    Never,
}

/// Configuration of one [`crate::SegmentLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment is rolled (sealed, and a new one started) before an append would take it
    /// past this size. A single batch larger than this still goes alone into a segment.
    pub segment_size_bytes_max: u64,
    /// One sparse offset-index (and time-index) entry per this many bytes of batches.
    /// Smaller: faster lookups, more memory (8 + 12 bytes per entry).
    pub index_interval_bytes: u32,
    /// Largest batch an append accepts.
    pub batch_size_bytes_max: u32,
    /// Largest number of sealed segment files kept open for reads (least recently used
    /// are closed); the active segment is always open on top of this.
    pub open_files_max: usize,
    /// Sealed segments whose newest timestamp is older than this are eligible for
    /// deletion by [`crate::SegmentLog::retention_plan`]. `None`: no age limit.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are eligible for deletion while the log is larger than
    /// this. `None`: no size limit.
    pub retention_bytes: Option<u64>,
    /// Bytes appended but not yet fdatasync'd before a sync is forced: under `Never` the
    /// append that passes it syncs itself (a bound on the loss window); under `Always`
    /// it queues the log on the sync pool, under `Interval` it wakes the log's flusher
    /// thread, to sync at once, so that an append never runs an `fdatasync` on its
    /// caller's (possibly async) thread.
    pub buffered_bytes_max: u64,
    /// When the log syncs.
    pub fsync: FsyncPolicy,
    /// Offset of the first batch when the directory is empty.
    pub initial_offset: u64,
    /// Encrypt the records section of every batch under this node key (a key of the
    /// log's own is derived from it; see the `at_rest` module). Only for a new log or
    /// one created encrypted: a log's `encryption` file pins it to its key, and a log
    /// created in the clear stays so. Batches must carry distinct Raft stamps.
    pub at_rest: Option<crate::AtRestKey>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes_max: 256 * 1024 * 1024,
            index_interval_bytes: 4096,
            batch_size_bytes_max: 8 * 1024 * 1024,
            open_files_max: 256,
            retention_ms: None,
            retention_bytes: None,
            buffered_bytes_max: 64 * 1024 * 1024,
            fsync: FsyncPolicy::Always,
            initial_offset: 0,
            at_rest: None,
        }
    }
}

/// Sealed segment files hold positions as `u32` in their index.
pub(crate) const SEGMENT_SIZE_BYTES_LIMIT: u64 = u32::MAX as u64;

impl LogConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<()> {
        if self.segment_size_bytes_max < qiss::batch::HEADER_LEN as u64 {
            return Err(Error::InvalidConfig(
                "segment_size_bytes_max below one batch header",
            ));
        }
        if self.segment_size_bytes_max > SEGMENT_SIZE_BYTES_LIMIT {
            return Err(Error::InvalidConfig("segment_size_bytes_max above 4 GiB"));
        }
        if u64::from(self.batch_size_bytes_max) > SEGMENT_SIZE_BYTES_LIMIT / 2 {
            return Err(Error::InvalidConfig("batch_size_bytes_max above 2 GiB"));
        }
        if (self.batch_size_bytes_max as usize) < qiss::batch::HEADER_LEN {
            return Err(Error::InvalidConfig(
                "batch_size_bytes_max below one batch header",
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidConfig("index_interval_bytes is zero"));
        }
        if self.open_files_max == 0 {
            return Err(Error::InvalidConfig("open_files_max is zero"));
        }
        if self.buffered_bytes_max == 0 {
            return Err(Error::InvalidConfig("buffered_bytes_max is zero"));
        }
        if self.fsync == FsyncPolicy::Interval(0) {
            return Err(Error::InvalidConfig("fsync interval of 0 ms: use Always"));
        }
        Ok(())
    }
}
