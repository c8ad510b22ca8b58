//! `produce`: append one record batch to a partition (sent to its leader).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// When the leader answers a produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    /// No reply is awaited by the client; the batch may be lost.
    None,
    /// After the leader wrote the batch locally (lost if the leader dies before
    /// replication).
    Leader,
    /// After a quorum of replicas flushed the batch (committed). The default.
    All,
}

/// Idempotent producer stamp: the leader drops duplicates of `(producer_id, epoch,
/// sequence)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStamp {
    /// Producer id assigned by the cluster.
    pub producer_id: u64,
    /// Producer epoch (fences zombie producers).
    pub epoch: u32,
    /// Sequence number of the batch's first record.
    pub sequence: u32,
}

/// Append a record batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Acknowledgement mode.
    pub acks: Acks,
    /// How long the leader may wait for replication before answering
    /// `NotEnoughReplicas`.
    pub timeout_ms: u32,
    /// Idempotence stamp, if the producer is idempotent.
    pub producer: Option<ProducerStamp>,
    /// One Qiss record batch, byte for byte as the producer built it; stored and
    /// fetched unchanged. On the wire a length-prefixed byte string; decoded with
    /// `qiss::from_bytes` (as the server does) it is a slice of the request frame's
    /// buffer, so the batch reaches the log without a copy.
    #[serde(with = "qiss::bytes")]
    pub records: Bytes,
}

/// Where the batch landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    /// Offset assigned to the batch's first record.
    pub base_offset: u64,
    /// Broker-assigned append time, when the topic uses log-append time.
    pub log_append_time_ms: Option<i64>,
    /// Records in the batch.
    pub record_count: u32,
}
