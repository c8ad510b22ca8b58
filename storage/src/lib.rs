//! `neo-storage`: where acknowledged data lives. A segmented, append-only log of Qiss
//! record batches ([`SegmentLog`]) and a small metadata store on sled ([`MetaStore`]).
//! Nothing here may lose or invent a byte.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`config`] | [`LogConfig`] (named limits, units last) and [`FsyncPolicy`] |
//! | `log` | [`SegmentLog`]: append, read, group commit, truncate, purge, retention, recovery |
//! | `segment` | one segment file: naming, scans, torn-tail detection, index files |
//! | `index` | sparse offset index and time index, in memory and on disk |
//! | `durable` | durability notifications: [`DurableCallback`] and [`Durable`] |
//! | `position` | batches addressed by [`BatchPos`] (segment, byte position): `read_at`, `truncate_at`; and truncation itself |
//! | [`meta`] | [`MetaStore`]: Raft vote/committed/purged/membership, keyed state; `open` waits (up to 2 s) for the lock of a handle that is still shutting down |
//! | [`testing`] | builders of valid batches for tests and benchmarks |
//! | `at_rest` | encryption at rest ([`AtRestKey`], `LogConfig::at_rest`): each batch's records section under AES-256-CTR with a key of the log's own, the `encryption` file that pins a log to its key |
//! | `error` | the one [`Error`] enum, with which variants are fatal |
//! | `salvage` | reopening a failed log at its last successful `fdatasync` (in-process note of the synced position; [`salvage_pending`]) |
//! | [`space`] | [`DiskSpace`]: free space of a data directory against a reserve, [`StorageFull`] |
//! | [`failpoints`] | fault injection in segment writes and syncs (EIO, ENOSPC, delays), feature `failpoints` only |
//! | `stats` | process-wide [`stats`]: append and `fdatasync` latency histograms (lock-free buckets), appended bytes, `fdatasync` count, read by the node's `/metrics` |
//!
//! On disk, a log is one directory:
//!
//! ```text
//! 00000000000000000000.log        batches, byte-for-byte as appended (base offset stamped)
//! 00000000000000000000.index      sealed segments only: (relative offset, position) pairs
//! 00000000000000000000.timeindex  sealed segments only: (max timestamp, relative offset)
//! 00000000000000004711.log        the active (tail) segment: no index files
//! encryption                      only in a log encrypted at rest: salt + key check
//! ```
//!
//! In a log encrypted at rest (`LogConfig::at_rest`) each batch's records section is
//! stored encrypted (same length; the header stays readable) and decrypted on every
//! read, so callers see the same bytes as in a plaintext log (see `at_rest`).
//!
//! A segment file is the plain concatenation of batches; each batch frames itself
//! (length at bytes 8..12) and carries a CRC, so a fetch returns a byte range of a
//! segment without re-encoding anything.
//!
//! # Request flow
//!
//! **Append** (`append`, `append_at`, `append_with`, `append_durable`): check the length
//! against `batch_size_bytes_max`, `qiss::batch::check` (header + CRC) outside any lock
//! (`append_stamped_at`, the Raft log store's path for a batch checked on receipt: a
//! header parse only, and the stamped header is written before the caller's body, no
//! copy);
//! then under the state lock: roll the segment if the batch would overflow it (sync the
//! old one, write and sync its index files, create the next file, sync the directory),
//! `pwrite` the batch (its base offset stamped in a scratch copy) at the end of the active
//! segment, update the in-memory indexes, queue the durability notification, wake the
//! flusher (at once, if more than `buffered_bytes_max` is unsynced; only without a
//! flusher, under `FsyncPolicy::Never`, does the appender sync itself). Return the
//! [`Appended`] position. Every call blocks on disk I/O: async callers run it on a
//! blocking thread (`neo-raft` does).
//!
//! **Group commit** (`FsyncPolicy::Always`): an append that leaves something unsynced
//! (or a notification pending) queues the log, once, on the process-wide sync pool
//! (`sync_pool.rs`: at most 32 threads for all logs, started on demand; idle logs cost
//! no thread). A pool thread runs the log's round: under the lock, take every pending
//! notification and note the next offset (`target`); unlock; one `fdatasync` of the
//! active segment; raise `durable_offset` to `target`; run the callbacks. Everything
//! appended while one `fdatasync` runs is covered by the next round, so with N
//! concurrent appenders one sync serves up to N batches. (`Interval` logs keep a
//! flusher thread of their own that runs the same round on a timer.)
//!
//! **Read** (`read`, `read_bounded`): under the lock, find the segment (`BTreeMap` by
//! base offset) and the index position at or before the offset, take an `Arc` of its file
//! (opening it through an LRU of `open_files_max` handles); unlock; one `pread` of
//! `max_bytes` + one index interval + slack; walk the batch headers to the batch holding
//! the offset and cut after the last whole batch that fits (at least one). The result is
//! a `Bytes` slice of that one buffer.
//!
//! **Recovery** (`open`): list the segments. Sealed segments (all but the last) are
//! trusted through their index files, whose footer records the segment's size, next
//! offset and max timestamp under a CRC; a missing or damaged index is rebuilt by scanning
//! the segment and verifying every batch. The tail segment is always scanned and verified,
//! then synced (it may hold page-cache data of a crashed process), and its index is
//! rebuilt in memory.
//!
//! # Torn tail or corruption: the rule
//!
//! Scanning stops at the first batch that fails a check (framing, header, CRC, or a base
//! offset that does not continue the previous batch). Then:
//!
//! - **in the tail segment**, if no valid batch (magic, header and CRC) starts anywhere
//!   after that position, it is a **torn tail**: an append that never completed. The file
//!   is cut there (and a warning logged). Nothing cut was ever reported durable, because
//!   a notification fires only after an `fdatasync` covering the whole batch.
//! - **in the tail segment, with a valid batch after it**, it is **corruption**: writes
//!   are sequential, so a later batch being whole means the damaged one was complete
//!   once. [`Error::Corruption`] names the segment and position.
//! - **in a sealed segment**, any failed check is **corruption**: a segment is synced
//!   before it is sealed, so it cannot have a torn tail.
//!
//! Nothing is skipped silently and nothing panics. Known limit: after a *power loss*
//! with `fsync=never/interval`, the kernel may have written a later page of the tail but
//! not an earlier one; the rule then reports corruption of data that was never durable.
//! The operator (or Raft, by re-replicating) resolves it; acknowledged data is never
//! cut. (With `fsync=always`, notified data is intact either way.)
//!
//! One more shape is recognised: `purge_prefix` beyond the end creates an empty segment
//! at the new start before deleting the old ones; if a crash came in between, the tail is
//! empty and the segment before it has no index files and ends below the tail's base.
//! Recovery then finishes the purge.
//!
//! # Invariants
//!
//! - Nothing is reported durable (callback, [`Durable`], [`SegmentLog::durable_offset`])
//!   before an `fdatasync` covering it has returned.
//! - Offsets are contiguous: each batch's base offset is the previous batch's next
//!   offset, across segments; sealed segment `i` ends exactly where `i + 1` begins.
//! - A zero-width control batch (`record_count` 0, attribute bit 3) occupies no offset:
//!   its next offset is its base, shared with the batches after it up to the next record
//!   batch. Reads by offset return the batch holding the offset first, so they skip
//!   zero-width batches at it; [`BatchPos`] names each batch (a Raft log store's
//!   addressing). A segment is never rolled while its base is the next offset (the new
//!   one would have the same name), so bases stay strictly increasing. A notification
//!   is completed only once nothing appended before it is unsynced (the durable offset
//!   alone does not cover a zero-width batch).
//! - A segment's bytes are whole batches only (`size` never points into a batch); reads
//!   return whole batches only.
//! - Sealed segments are synced and never change, except that `truncate_suffix` may make
//!   one active again (its index files are removed first).
//! - After a failed write or `fdatasync` the log refuses all work ([`Error::Failed`]): the
//!   kernel may have dropped the dirty pages, so a retry could report lost data durable.
//!   Reopened in the same process, an `FsyncPolicy::Always` log is first cut back to its
//!   last successful sync (`salvage`): bytes whose sync failed are never read back as
//!   durable.
//!
//! # Non-features
//!
//! The log does not decode records (only batch headers), does not verify CRCs on the read
//! path (consumers do; [`SegmentLog::verify`] scrubs on demand), and keeps every segment's
//! sparse index in memory (8 + 12 bytes per `index_interval_bytes` of data).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod at_rest;
pub mod config;
mod durable;
mod error;
pub mod failpoints;
mod index;
mod log;
pub mod meta;
mod position;
mod salvage;
mod segment;
pub mod space;
mod stats;
mod sync_pool;
pub mod testing;

pub use at_rest::{AtRestKey, ENCRYPTION_FILE};
pub use config::{FsyncPolicy, LogConfig};
pub use durable::{Durable, DurableCallback};
pub use error::{Error, Result};
pub use log::{Appended, LogSlice, LogStats, SegmentLog};
pub use meta::{MetaBatch, MetaConfig, MetaStore, RaftField};
pub use position::{BatchPos, PosSlice};
pub use salvage::{CutReport, cut_damaged, pending as salvage_pending};
pub use space::{DiskSpace, StorageFull};
pub use stats::{HistogramSnapshot, LATENCY_BUCKETS_S, LatencyHistogram, StorageStats, stats};
