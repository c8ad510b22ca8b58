//! The openraft type configuration shared by every Neo Raft group, and the application
//! data that travels in log entries.
//!
//! One type config serves the metadata group and every partition group, so that one
//! transport, one registry and one log-store implementation serve them all. A log id is
//! `(term, index)`: the standard (term-only) committed leader id, because the log id is
//! recovered from the `term`/`log_index` stamps of a record batch, which carry no node id.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's id in every Raft group (the `N` of `--peers N=host:port`).
pub type NodeId = u64;

/// Identifies one Raft group on a node. [`METADATA_GROUP`] is the metadata group; every
/// other id names a partition group (assigned by the metadata group).
pub type GroupId = u64;

/// The group id of the metadata group.
pub const METADATA_GROUP: GroupId = 0;

/// A node as members of a group see it: its cluster-plane (gRPC) address.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Neo's openraft type configuration.
    pub NeoRaft:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = Node,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

pub(crate) type LogId = openraft::LogId<openraft::vote::leader_id_std::CommittedLeaderId<u64>>;
pub(crate) type Entry = openraft::type_config::alias::EntryOf<NeoRaft>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<NeoRaft>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<NeoRaft>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<NeoRaft>;
pub(crate) type Snapshot = openraft::type_config::alias::SnapshotOf<NeoRaft, Vec<u8>>;

/// The application data of one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// A partition group's entry: one encoded Qiss record batch, exactly as the producer
    /// sent it (the log store stamps offsets and the Raft log id into its header).
    Records(RecordBatch),
    /// A command for the group's [`crate::StateMachine`], encoded by its proposer (a
    /// metadata change, a committed offset, ...): opaque to this crate.
    Command(#[serde(with = "qiss::bytes")] Bytes),
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proposal::Records(b) => write!(f, "records({} bytes)", b.0.len()),
            Proposal::Command(c) => write!(f, "command({} bytes)", c.len()),
        }
    }
}

/// An encoded Qiss record batch (header + records), kept as shared bytes so that it is
/// never copied between the producer's frame, the log store and the replication stream.
///
/// Its CRC was verified once on this replica before the value existed: on the leader by
/// the broker (`RaftGroup::propose_records*` take a `qiss::batch::ValidatedBatch`), on a
/// follower when the AppendEntries body was decoded (this type's `Deserialize` checks
/// header, CRC and length, and refuses a damaged batch). So the log store trusts it and
/// does not compute the CRC again.
///
/// The second field exists only in the memory of the replica that proposed the batch
/// (never encoded, never replicated, equal to every other): `acks=leader` waits on it
/// for the leader's own log to hold the batch durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch(
    #[serde(with = "checked_batch_serde")] pub Bytes,
    #[serde(skip)] pub LocalAck,
);

impl RecordBatch {
    /// A batch without a local acknowledgement.
    pub fn new(batch: Bytes) -> RecordBatch {
        RecordBatch(batch, LocalAck::default())
    }
}

/// What `acks=leader` learns from the log store: the batch's first offset and record
/// count once its entry is durable in this replica's log, or why it will not be.
pub type LocalAckResult = std::result::Result<(u64, u32), String>;

/// A one-shot notification fired by the log store once the entry carrying it is
/// durable in the local log (after `fdatasync`, or written with `--fsync interval`).
/// Clones share it; it fires at most once. An entry that is never appended drops it,
/// and the waiter sees the channel closed.
#[derive(Clone, Default)]
pub struct LocalAck(Option<Arc<Mutex<Option<tokio::sync::oneshot::Sender<LocalAckResult>>>>>);

impl LocalAck {
    /// A notification and the receiver that waits for it.
    pub fn channel() -> (LocalAck, tokio::sync::oneshot::Receiver<LocalAckResult>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (LocalAck(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    /// Whether anyone waits on this one.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Fires the notification (only the first call of all clones counts).
    pub fn fire(&self, result: LocalAckResult) {
        if let Some(slot) = &self.0
            && let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(result);
        }
    }
}

impl PartialEq for LocalAck {
    /// Never part of an entry's identity.
    fn eq(&self, _: &LocalAck) -> bool {
        true
    }
}

impl Eq for LocalAck {}

impl fmt::Debug for LocalAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "LocalAck(set)"
        } else {
            "LocalAck"
        })
    }
}

/// The result of applying one entry, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A record batch was applied: its records got offsets
    /// `base_offset .. base_offset + record_count`.
    Records {
        /// Offset of the batch's first record.
        base_offset: u64,
        /// How many records the batch holds.
        record_count: u32,
    },
    /// A command was applied: the state machine's encoded answer.
    Command(#[serde(with = "qiss::bytes")] Bytes),
    /// A blank or membership entry, or a record batch sent to the metadata group (it was
    /// committed and skipped, which keeps every replica's state identical).
    Nothing,
}

/// A record batch as a byte string; decoding it is its receipt on this replica, so the
/// batch's CRC is checked there (the only check a follower runs on it).
mod checked_batch_serde {
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        qiss::bytes::serialize(b, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let bytes = qiss::bytes::deserialize(d)?;
        qiss::batch::ValidatedBatch::check(bytes)
            .map(qiss::batch::ValidatedBatch::into_bytes)
            .map_err(|e| D::Error::custom(format!("record batch: {e}")))
    }
}
