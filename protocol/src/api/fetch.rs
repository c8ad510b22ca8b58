//! `fetch`: read record batches from a partition.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which records a fetch may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Only committed records (below the high watermark). The default.
    Committed,
    /// Everything the leader has written (may later be truncated).
    Uncommitted,
}

/// Read from `offset` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Bound on the returned bytes (at least one batch is returned if any exists).
    pub bytes_max: u32,
    /// How long to wait for data if none is available (long poll).
    pub wait_ms_max: u32,
    /// The long poll ends early once at least this many committed bytes can be
    /// returned (0 or 1: as soon as any can). `wait_ms_max` bounds the wait either way.
    pub bytes_min: u32,
    /// Visibility of uncommitted records.
    pub isolation: Isolation,
}

/// Record batches, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// Offset after the last committed record.
    pub high_watermark: u64,
    /// First offset still in the log (after retention).
    pub log_start_offset: u64,
    /// Zero or more whole Qiss record batches, concatenated, unchanged from disk: the
    /// segment read's buffer on the broker, a slice of the response frame's buffer on a
    /// client that decodes with `qiss::from_bytes`. On the wire a length-prefixed byte
    /// string.
    #[serde(with = "qiss::bytes")]
    pub batches: Bytes,
}
