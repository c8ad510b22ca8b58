//! The one error type of `neo-raft`.
//!
//! Fatal vs retriable: [`Error::Storage`] and [`Error::Fatal`] mean the group stopped (its
//! log or state machine failed) and must be reopened; [`Error::NotLeader`],
//! [`Error::QuorumLost`] and [`Error::Busy`] are retriable at the leader hint, at the new
//! leader or later; the rest describe bad input.

use crate::types::{GroupId, NodeId};

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
    /// least the minimum election timeout: it cannot commit, and the others are
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
    #[error("storage: {verb} {subject}: {reason}")]
    Storage {
        /// What was touched (`log`, `vote`, `committed`, `snapshot`, ...).
        subject: &'static str,
        /// What was done (`read`, `write`, `truncate`, `purge`, `open`, ...).
        verb: &'static str,
        /// The underlying error, as text.
        reason: String,
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

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
