//! Queues: competing consumers with per-message ack/nack and visibility timeouts.

use serde::{Deserialize, Serialize};

/// Receive up to `messages_max` messages, hiding them from other consumers for the
/// visibility timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReceiveRequest {
    /// Queue name.
    pub queue: String,
    /// Bound on messages returned.
    pub messages_max: u32,
    /// Unacked messages become visible again after this long.
    pub visibility_timeout_ms: u32,
    /// How long to wait if the queue is empty (long poll).
    pub wait_ms_max: u32,
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// Handle for ack/nack of this delivery.
    pub receipt: u64,
    /// Offset in the queue's log.
    pub offset: u64,
    /// How many times this message has been delivered (1 on first delivery).
    pub delivery_count: u32,
    /// Record key.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// Record value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp.
    pub timestamp_ms: i64,
}

/// Delivered messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReceiveResponse {
    /// Messages, oldest first.
    pub messages: Vec<QueueMessage>,
}

/// Acknowledge deliveries (the messages are done).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAckRequest {
    /// Queue name.
    pub queue: String,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<u64>,
}

/// Acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAckResponse {
    /// Receipts that were still valid.
    pub acked: u32,
}

/// Return deliveries to the queue for redelivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNackRequest {
    /// Queue name.
    pub queue: String,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<u64>,
    /// Redeliver no sooner than this.
    pub redeliver_after_ms: u32,
}

/// Nacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNackResponse {
    /// Receipts that were still valid.
    pub nacked: u32,
}
