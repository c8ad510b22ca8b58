//! The one error type of the crate.
//!
//! # Which errors are fatal
//!
//! | variant | fatal? | what the caller does |
//! |---|---|---|
//! | [`Error::Io`] from a write or `fdatasync` | **yes** for the log: it enters the failed state and every later append or sync returns [`Error::Failed`] (after a failed fdatasync the kernel may have dropped the dirty pages, so retrying could report lost data as durable) | stop the replica, reopen (recovery re-reads what is really on disk) |
//! | [`Error::Io`] from a read, open or directory scan | no | retry or report |
//! | [`Error::Corruption`] | **yes** for that log: data that was once durable is damaged | stop the replica; restore from peers (Raft) or an operator decides |
//! | [`Error::Failed`] | **yes** | as above |
//! | [`Error::BatchTooLarge`], [`Error::TooLarge`], [`Error::InvalidBatch`], [`Error::NonContiguous`], [`Error::OffsetOutOfRange`], [`Error::BadPosition`], [`Error::InvalidConfig`] | no: bad input, nothing stored changed | reject the request |
//! | [`Error::Truncated`] | no: only given to a durability notification whose batch a later `truncate_suffix` removed | treat the append as superseded |
//! | [`Error::Closed`] | no | the log was dropped while the notification was pending |
//! | [`Error::Meta`] | yes if it comes from a flush; otherwise report | |

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in `neo-storage`. Cloneable (I/O errors are shared behind
/// an `Arc`) because one failed `fdatasync` must be reported to every waiter it covered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`"fdatasync segment"`, `"open segment"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Durable data is damaged: a batch that fails its checks and is not a torn tail.
    #[error("corruption in segment {segment} at position {position}: {reason}")]
    Corruption {
        /// Base offset of the segment (its file name).
        segment: u64,
        /// Byte position in the segment file.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// A batch is larger than `LogConfig::batch_size_bytes_max`.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The batch's length.
        size: u64,
        /// The configured limit.
        max: u64,
    },
    /// A metadata namespace, key or value is longer than its limit.
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Which (`"namespace"`, `"key"`, `"value"`).
        what: &'static str,
        /// Its length.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A read asked for an offset the log does not hold.
    #[error("offset {requested} out of range [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// First offset the log holds.
        start: u64,
        /// Next offset the log will assign (exclusive end).
        end: u64,
    },
    /// No batch starts at this position (`read_at`, `truncate_at`): its segment is gone,
    /// or the position is past the segment's end or not a batch boundary.
    #[error("no batch at position {position} of segment {segment}")]
    BadPosition {
        /// Base offset of the segment.
        segment: u64,
        /// Byte position asked for.
        position: u64,
    },
    /// `append_at` was given a batch whose base offset is not the log's next offset.
    #[error("non-contiguous append: expected base offset {expected}, got {got}")]
    NonContiguous {
        /// The log's next offset.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },
    /// The bytes given to append are not one valid Qiss record batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] qiss::Error),
    /// A durability notification's batch was removed by `truncate_suffix` before it was
    /// made durable.
    #[error("batch ending at offset {end} was truncated (log cut at {truncated_from})")]
    Truncated {
        /// Exclusive end offset of the notification.
        end: u64,
        /// Where the log was cut.
        truncated_from: u64,
    },
    /// The log hit a fatal error earlier (a failed write or fdatasync) and refuses work.
    #[error("log failed earlier and must be reopened: {first}")]
    Failed {
        /// The first fatal error (with its OS error: a full disk or a failed sync).
        #[source]
        first: Box<Error>,
    },
    /// The log was closed while a durability notification was pending.
    #[error("log closed before the data was durable")]
    Closed,
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// Encryption at rest refused the log: a wrong or missing key, a damaged
    /// `encryption` file, or a key given for a log that holds plaintext.
    #[error("encryption at rest of the log in {dir}: {reason}")]
    AtRest {
        /// The log's directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The metadata store (sled) failed.
    #[error("metadata store: {op}: {source}")]
    Meta {
        /// What we were doing.
        op: &'static str,
        /// sled's error (its `Io` variant holds the OS error).
        #[source]
        source: Arc<sled::Error>,
    },
}

impl Error {
    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// Builds an [`Error::Corruption`].
    pub(crate) fn corruption(segment: u64, position: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            segment,
            position,
            reason: reason.into(),
        }
    }

    /// Whether an OS error behind this one says the disk (or the quota) is full
    /// (`ENOSPC`, [`io::ErrorKind::StorageFull`]): the caller can tell it from a failed
    /// sync or damage, e.g. to answer "storage full" rather than "internal error".
    /// Still fatal for the log that returned it (see the table above).
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => io_is_storage_full(source),
            Error::Failed { first } => first.is_storage_full(),
            Error::Meta { source, .. } => match source.as_ref() {
                sled::Error::Io(e) => io_is_storage_full(e),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the log that returned this error must be stopped and reopened.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Corruption { .. } | Error::Failed { .. })
    }
}

/// Whether `e` says the disk is full: its kind, or `ENOSPC` from the OS (the same on
/// every Linux architecture; std maps it to `StorageFull`, checked both ways so that an
/// error rebuilt from its kind alone is recognised too).
pub(crate) fn io_is_storage_full(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(ENOSPC)
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_a_failed_sync() {
        let full = Error::io("write segment", "/x", io::Error::from_raw_os_error(28));
        assert!(full.is_storage_full());
        let by_kind = Error::io(
            "write segment",
            "/x",
            io::Error::from(io::ErrorKind::StorageFull),
        );
        assert!(by_kind.is_storage_full());
        // EIO from fdatasync: not a full disk.
        let eio = Error::io("fdatasync segment", "/x", io::Error::from_raw_os_error(5));
        assert!(!eio.is_storage_full());
        // The log's failed state keeps the first error, and its cause.
        let failed = Error::Failed {
            first: Box::new(full.clone()),
        };
        assert!(failed.is_storage_full() && failed.is_fatal());
        let source = std::error::Error::source(&failed).expect("a source");
        assert_eq!(source.to_string(), full.to_string());
        assert!(
            !Error::Failed {
                first: Box::new(eio)
            }
            .is_storage_full()
        );
        let meta = Error::Meta {
            op: "flush",
            source: Arc::new(sled::Error::Io(io::Error::from_raw_os_error(28))),
        };
        assert!(meta.is_storage_full());
        assert!(!Error::Closed.is_storage_full());
    }
}
