//! The one error type of `neo-raft`.
//!
//! Fatal vs retriable: [`Error::Storage`] and [`Error::Fatal`] mean the group stopped (its
//! log or state machine failed) and must be reopened; [`Error::NotLeader`],
//! [`Error::QuorumLost`] and [`Error::Busy`] are retriable at the leader hint, at the new
//! leader or later; the rest describe bad input.
//!
//! A storage failure keeps its cause ([`Error::Storage`]'s source: the `neo-storage`
//! error, I/O error or codec error), so a caller can ask [`Error::is_storage_full`]
//! (a full disk) instead of reading text.

use std::io;

use crate::types::{GroupId, NodeId};

/// The cause behind an [`Error::Storage`]: a `neo-storage`, I/O or codec error (or, for
/// a check of our own, a message).
pub type StorageSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a replica stopped ([`crate::RaftGroup::failure`]): it acknowledges nothing until
/// the node reopens it.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaFailure {
    /// Its segment log failed (a write or `fdatasync` returned an error, or the disk
    /// is full) and refuses work from then on.
    #[error("log failed: {0}")]
    Log(#[source] neo_storage::Error),
    /// Its Raft core exited on a fatal error.
    #[error("raft stopped: {0}")]
    Raft(#[source] openraft::error::Fatal<crate::types::NeoRaft>),
}

/// Everything that can go wrong in a Raft group.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This replica is not the group's leader; retry at `leader` when known.
    #[error("group {group}: not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The node believed to lead, if any.
        leader: Option<NodeId>,
    },
    /// This replica leads the group but no quorum of voters has answered it for at
    /// least the leader lease (the maximum election timeout): it cannot commit, and the others are
    /// electing (or have elected) another leader. Look for the new leader and retry.
    #[error(
        "group {group}: this leader lost contact with a quorum of its voters{}",
        if *written { "; the write may be in its log and may still commit" } else { "" }
    )]
    QuorumLost {
        /// The group.
        group: GroupId,
        /// `true`: the write had been accepted and may be in this leader's log (its
        /// outcome is unknown: it commits if the next leader holds it); `false`: it was
        /// refused before anything was written.
        written: bool,
    },
    /// The group cannot take more work right now (a queue is full); retry later.
    #[error("group {group}: busy")]
    Busy {
        /// The group.
        group: GroupId,
    },
    /// No group with this id runs on this node.
    #[error("group {group} is not hosted here")]
    UnknownGroup {
        /// The group.
        group: GroupId,
    },
    /// A proposed record batch is larger than `RECORD_BATCH_BYTES_MAX`.
    #[error("record batch of {size} bytes exceeds {max}")]
    BatchTooLarge {
        /// The batch's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A proposed or stored record batch is malformed.
    #[error("bad record batch at log index {index}: {source}")]
    BadBatch {
        /// Raft log index of the entry (0 when not known yet).
        index: u64,
        /// What the batch check found.
        source: qiss::Error,
    },
    /// A proposed record batch has the control attribute (bit 3) set: control batches
    /// are written by Raft itself (blank, membership, metadata entries), never by a
    /// producer, since the log store decodes them as Raft entries.
    #[error("record batch has the control attribute set; producers may not write control batches")]
    ControlBatch,
    /// A record batch forwarded to a group's leader ([`crate::forward_records`]) is
    /// stamped by an idempotent producer (`producer_id >= 0`). Only the broker's produce
    /// path deduplicates such batches (through its producer table); a forwarded batch is
    /// appended as is, so it must carry no producer stamp.
    #[error(
        "record batch is stamped by idempotent producer {producer_id}; a forwarded batch must not be"
    )]
    StampedBatch {
        /// The batch's producer id.
        producer_id: i64,
    },
    /// Encoding or decoding a value with the Qiss codec failed.
    #[error("qiss codec failed on {what}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The codec's error.
        source: qiss::Error,
    },
    /// The log or metadata store failed: `subject` is what was touched, `verb` what was
    /// done to it (as openraft's `write_log_entry`, `read_vote`).
    #[error("storage: {verb} {subject}: {source}")]
    Storage {
        /// What was touched (`log`, `vote`, `committed`, `snapshot`, ...).
        subject: &'static str,
        /// What was done (`read`, `write`, `truncate`, `purge`, `open`, ...).
        verb: &'static str,
        /// The underlying error, kept whole (see [`Error::is_storage_full`]).
        #[source]
        source: StorageSource,
    },
    /// A membership change was refused (e.g. one is already in progress).
    #[error("group {group}: membership change refused: {reason}")]
    Membership {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The group's Raft core stopped (shut down, or a storage failure stopped it).
    #[error("group {group}: raft stopped: {reason}")]
    Fatal {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The group's configuration is invalid.
    #[error("invalid raft config: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Storage`]: `verb` done to `subject` failed because of `source`.
    pub fn storage(
        subject: &'static str,
        verb: &'static str,
        source: impl Into<StorageSource>,
    ) -> Self {
        Error::Storage {
            subject,
            verb,
            source: source.into(),
        }
    }

    /// Whether the cause of this error is a full disk (`ENOSPC`,
    /// [`io::ErrorKind::StorageFull`]) rather than a failed sync, damage or a bug. A
    /// group whose Raft core stopped ([`Error::Fatal`]) carries only openraft's text:
    /// ask [`crate::RaftGroup::storage_full`] then.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Storage { source, .. } => chain_is_storage_full(source.as_ref()),
            _ => false,
        }
    }
}

/// Walks an error chain for a full disk: a `neo-storage` error answers for itself, an
/// I/O error by its kind or OS code, or by the error it wraps (the log store hands
/// openraft `io::Error::new(kind, our_error)`).
pub(crate) fn chain_is_storage_full(mut e: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if let Some(s) = e.downcast_ref::<neo_storage::Error>() {
            return s.is_storage_full();
        }
        if let Some(ours) = e.downcast_ref::<Error>() {
            return ours.is_storage_full();
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            const ENOSPC: i32 = 28;
            if io.kind() == io::ErrorKind::StorageFull || io.raw_os_error() == Some(ENOSPC) {
                return true;
            }
            // `io::Error::source` skips the wrapped error itself; look at it.
            if let Some(inner) = io.get_ref() {
                return chain_is_storage_full(inner);
            }
        }
        match e.source() {
            Some(next) => e = next,
            None => return false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_from_other_storage_errors() {
        let enospc = || io::Error::from_raw_os_error(28);
        assert!(Error::storage("log entry", "append", enospc()).is_storage_full());
        assert!(
            !Error::storage("vote", "write", io::Error::from_raw_os_error(5)).is_storage_full()
        );
        assert!(!Error::storage("log", "scan", "index gap").is_storage_full());
        // Through openraft's boundary: io::Error::new(kind, our error).
        let ours = Error::storage("log entry", "append", enospc());
        let wrapped = io::Error::other(ours);
        assert!(Error::storage("log", "append", wrapped).is_storage_full());
        assert!(
            !Error::NotLeader {
                group: 1,
                leader: None
            }
            .is_storage_full()
        );
        // The source is kept: the OS error is one `source()` away.
        let e = Error::storage("log entry", "append", enospc());
        let src = std::error::Error::source(&e).expect("source");
        let io = src.downcast_ref::<io::Error>().expect("an io::Error");
        assert_eq!(io.raw_os_error(), Some(28));
    }
}
