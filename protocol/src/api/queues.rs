//! Queues: competing consumers with per-message leases, acks, nacks, redelivery and
//! dead letters (see `docs/queues.md`).
//!
//! A queue is a topic (same partitions, same replicated log) plus per-message delivery
//! state kept by each partition's Raft group. Messages are sent with `produce` to the
//! queue's name. Any plain topic can also be consumed with queue semantics by a named
//! *share group* (`share_group` in every request below; `None` means the queue's own
//! deliveries, which only a queue has).
//!
//! A delivery is identified by its [`Receipt`]: the partition's Raft group, the
//! partition, the offset, the delivery attempt and the lease (the log index of the
//! receive that leased it). A receipt whose lease is no longer the message's current
//! one (expired and leased again, acked, nacked, dead-lettered) is refused with
//! [`ReceiptOutcome::LeaseLost`] and changes nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Default visibility timeout (lease length), in milliseconds.
pub const QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT: u32 = 30_000;
/// Shortest visibility timeout, in milliseconds.
pub const QUEUE_VISIBILITY_TIMEOUT_MS_MIN: u32 = 100;
/// Longest visibility timeout (12 hours), in milliseconds.
pub const QUEUE_VISIBILITY_TIMEOUT_MS_MAX: u32 = 12 * 3600 * 1000;
/// Default deliveries before a message is dead-lettered.
pub const QUEUE_MAX_DELIVERIES_DEFAULT: u32 = 5;
/// Most deliveries a queue may allow.
pub const QUEUE_MAX_DELIVERIES_MAX: u32 = 1000;
/// Default bound on leased messages per partition.
pub const QUEUE_MAX_IN_FLIGHT_DEFAULT: u32 = 10_000;
/// Largest `max_in_flight` (per partition or per consumer).
pub const QUEUE_MAX_IN_FLIGHT_MAX: u32 = 100_000;
/// Most messages one receive hands out.
pub const QUEUE_RECEIVE_MESSAGES_MAX: u32 = 1000;
/// Most receipts one ack/nack/extend/term carries.
pub const QUEUE_RECEIPTS_MAX: usize = 10_000;
/// Longest redelivery delay (a nack's, a backoff step's, a send's `deliver_after`): 7 days.
pub const QUEUE_DELAY_MS_MAX: u32 = 7 * 24 * 3600 * 1000;
/// Most steps in a redelivery backoff list.
pub const QUEUE_BACKOFF_STEPS_MAX: usize = 32;
/// Longest consumer name or nack/term reason, in bytes.
pub const QUEUE_NAME_LEN_MAX: usize = 256;
/// The default dead-letter queue of queue `Q` is `Q` + this suffix.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";
/// Record header that delays a message's first delivery: the delay in milliseconds
/// after the record's timestamp, as decimal ASCII.
pub const HEADER_DELIVER_AFTER_MS: &str = "neo-deliver-after-ms";
/// Dead-letter header: the source queue (or topic).
pub const HEADER_DLQ_SOURCE: &str = "neo-dlq-source";
/// Dead-letter header: the source partition (decimal).
pub const HEADER_DLQ_PARTITION: &str = "neo-dlq-partition";
/// Dead-letter header: the source offset (decimal).
pub const HEADER_DLQ_OFFSET: &str = "neo-dlq-offset";
/// Dead-letter header: deliveries made before it was dead-lettered (decimal).
pub const HEADER_DLQ_DELIVERIES: &str = "neo-dlq-deliveries";
/// Dead-letter header: why (the last nack or term reason, or "max deliveries").
pub const HEADER_DLQ_REASON: &str = "neo-dlq-reason";
/// Dead-letter header: the share group, when the source is a topic's share group.
pub const HEADER_DLQ_SHARE_GROUP: &str = "neo-dlq-share-group";

/// Where a queue's dead letters go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetter {
    /// `Q.dlq`, created with the queue when missing.
    Default,
    /// No dead-letter queue: a message out of deliveries is archived (dropped).
    None,
    /// This queue (which must exist, or is created).
    Queue(String),
}

/// A queue's delivery settings, as stored in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Lease length of a receive that names none, in milliseconds.
    pub visibility_timeout_ms: u32,
    /// Deliveries after which an unacked message is dead-lettered.
    pub max_deliveries: u32,
    /// The dead-letter queue, if any.
    pub dead_letter: Option<String>,
    /// Never lease two messages of one key at once; a key's messages go in offset order.
    pub ordered_by_key: bool,
    /// Bound on leased messages per partition.
    pub max_in_flight: u32,
    /// Bound on leased messages per consumer per partition (0: none but the above).
    pub max_in_flight_per_consumer: u32,
    /// Delays of successive redeliveries after a nack that names none (the last step
    /// repeats), in milliseconds; empty: at once.
    pub redelivery_backoff_ms: Vec<u32>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout_ms: QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT,
            max_deliveries: QUEUE_MAX_DELIVERIES_DEFAULT,
            dead_letter: None,
            ordered_by_key: false,
            max_in_flight: QUEUE_MAX_IN_FLIGHT_DEFAULT,
            max_in_flight_per_consumer: 0,
            redelivery_backoff_ms: Vec::new(),
        }
    }
}

/// Create a queue (and its dead-letter queue when missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateQueueRequest {
    /// Queue name (a topic name).
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Delivery settings (`dead_letter` is ignored: see the field below).
    pub settings: QueueSettings,
    /// Where dead letters go.
    pub dead_letter: DeadLetter,
    /// Topic configuration overrides (`retention.ms`, `retention.bytes`).
    pub configs: Vec<(String, String)>,
}

/// The queue was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateQueueResponse {
    /// Queue name.
    pub name: String,
    /// The settings as stored.
    pub settings: QueueSettings,
    /// The dead-letter queue, when this request created it.
    pub created_dead_letter: Option<String>,
}

/// Delete a queue and its data (its dead-letter queue stays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteQueueRequest {
    /// Queue name.
    pub name: String,
}

/// The queue was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteQueueResponse {}

/// List queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQueuesRequest {}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueListing {
    /// Queue name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Settings.
    pub settings: QueueSettings,
}

/// Every queue the caller may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQueuesResponse {
    /// Queues by name.
    pub queues: Vec<QueueListing>,
}

/// Describe a queue (or a topic's share group): settings and, for each partition this
/// node leads, its delivery counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeQueueRequest {
    /// Queue (or topic) name.
    pub queue: String,
    /// A topic's share group (`None`: the queue's own deliveries).
    pub share_group: Option<String>,
}

/// Delivery counts of one partition, as its leader sees them now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePartitionStats {
    /// Partition index.
    pub partition: u32,
    /// Messages that can be received now.
    pub available: u64,
    /// Messages leased to a consumer.
    pub in_flight: u64,
    /// Messages waiting for a delay (nack delay, backoff, `deliver_after`).
    pub delayed: u64,
    /// Messages dead-lettered (moved or archived) so far.
    pub dead_lettered: u64,
    /// Messages acked so far.
    pub acked: u64,
    /// Redeliveries made so far (deliveries after the first).
    pub redelivered: u64,
    /// Every offset below this is done (acked or dead-lettered).
    pub ack_floor: u64,
    /// The partition's log end (next offset).
    pub end_offset: u64,
    /// Age of the oldest message not yet done, in milliseconds (0: none).
    pub oldest_age_ms: u64,
}

/// A queue's settings and the delivery counts of the partitions the answering node
/// leads (`led`); the others are named in `not_led` with their leader, if known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDescription {
    /// Queue (or topic) name.
    pub name: String,
    /// The share group described, if any.
    pub share_group: Option<String>,
    /// Partition count.
    pub partitions: u32,
    /// Settings (a share group's are the defaults).
    pub settings: QueueSettings,
    /// Counts of the partitions led here.
    pub led: Vec<QueuePartitionStats>,
    /// Partitions led elsewhere: (partition, leader's client address if known).
    pub not_led: Vec<(u32, Option<String>)>,
}

/// A delivery's handle for ack/nack/extend/term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Receipt {
    /// The partition's Raft group (group ids are never reused: a receipt from another
    /// queue is recognised).
    pub group: u64,
    /// Partition index.
    pub partition: u32,
    /// Offset of the message.
    pub offset: u64,
    /// Delivery attempt (1 on first delivery).
    pub delivery: u32,
    /// The lease: log index of the receive that leased it.
    pub lease: u64,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}",
            self.group, self.partition, self.offset, self.delivery, self.lease
        )
    }
}

/// Why a receipt's text form does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed receipt {0:?}: expected GROUP-PARTITION-OFFSET-DELIVERY-LEASE (decimal)")]
pub struct ReceiptParseError(pub String);

impl FromStr for Receipt {
    type Err = ReceiptParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReceiptParseError(s.chars().take(64).collect());
        let mut it = s.trim().split('-');
        let mut next = || it.next().ok_or_else(bad);
        let group = next()?.parse().map_err(|_| bad())?;
        let partition = next()?.parse().map_err(|_| bad())?;
        let offset = next()?.parse().map_err(|_| bad())?;
        let delivery = next()?.parse().map_err(|_| bad())?;
        let lease = next()?.parse().map_err(|_| bad())?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Receipt {
            group,
            partition,
            offset,
            delivery,
            lease,
        })
    }
}

/// Receive up to `messages_max` available messages, leasing them to `consumer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReceiveRequest {
    /// Queue name (or topic name, with `share_group`).
    pub queue: String,
    /// A topic's share group (`None`: the queue's own deliveries).
    pub share_group: Option<String>,
    /// Who receives (leases are counted per consumer for `max_in_flight_per_consumer`).
    pub consumer: String,
    /// One partition, or `None`: every partition of the queue this node leads.
    pub partition: Option<u32>,
    /// Bound on messages returned (1..=[`QUEUE_RECEIVE_MESSAGES_MAX`]).
    pub messages_max: u32,
    /// Lease length in milliseconds (0: the queue's visibility timeout).
    pub visibility_timeout_ms: u32,
    /// How long to wait when nothing is available (long poll), in milliseconds.
    pub wait_ms_max: u32,
}

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// Handle for ack/nack/extend/term of this delivery.
    pub receipt: Receipt,
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition's log.
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
    /// Record timestamp (ms since the epoch).
    pub timestamp_ms: i64,
}

/// Delivered messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueReceiveResponse {
    /// Messages, by partition then offset.
    pub messages: Vec<QueueMessage>,
    /// The partitions of the queue this node led while answering (clients learn where
    /// to receive).
    pub led_partitions: Vec<u32>,
}

/// Acknowledge deliveries: the messages are done for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAckRequest {
    /// Queue name.
    pub queue: String,
    /// A topic's share group.
    pub share_group: Option<String>,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<Receipt>,
}

/// Return deliveries for redelivery, after `delay_ms` (`None`: the queue's backoff).
/// A message out of deliveries is dead-lettered instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNackRequest {
    /// Queue name.
    pub queue: String,
    /// A topic's share group.
    pub share_group: Option<String>,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<Receipt>,
    /// Redeliver no sooner than this (`None`: the queue's backoff step).
    pub delay_ms: Option<u32>,
    /// Why (kept for the dead-letter headers).
    pub reason: String,
}

/// Push leases' deadlines to now + `visibility_timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueExtendRequest {
    /// Queue name.
    pub queue: String,
    /// A topic's share group.
    pub share_group: Option<String>,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<Receipt>,
    /// The new lease length from now (0: the queue's visibility timeout).
    pub visibility_timeout_ms: u32,
}

/// Dead-letter deliveries at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTermRequest {
    /// Queue name.
    pub queue: String,
    /// A topic's share group.
    pub share_group: Option<String>,
    /// Receipts from `queue_receive`.
    pub receipts: Vec<Receipt>,
    /// Why (kept in the dead-letter headers).
    pub reason: String,
}

/// What became of one receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptOutcome {
    /// Done as asked.
    Ok,
    /// The lease is no longer this receipt's (expired and leased again, nacked, or
    /// from another attempt): nothing changed.
    LeaseLost,
    /// The message is already done (acked or dead-lettered): nothing changed.
    AlreadyDone,
    /// No such message in this partition, or the receipt belongs to another queue or
    /// partition: nothing changed.
    Unknown,
}

/// The outcome of each receipt of an ack/nack/extend/term, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettleResponse {
    /// One per receipt.
    pub outcomes: Vec<ReceiptOutcome>,
}

/// Drop every message of a queue (or share group) not yet done, leased ones included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeQueueRequest {
    /// Queue (or topic) name.
    pub queue: String,
    /// A topic's share group.
    pub share_group: Option<String>,
    /// One partition, or `None`: every partition this node leads.
    pub partition: Option<u32>,
}

/// Purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeQueueResponse {
    /// Messages dropped.
    pub purged: u64,
    /// The partitions purged (led here).
    pub partitions: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_print_and_parse_back() {
        let r = Receipt {
            group: 12,
            partition: 3,
            offset: 99,
            delivery: 2,
            lease: 1234,
        };
        assert_eq!(r.to_string(), "12-3-99-2-1234");
        assert_eq!(r.to_string().parse::<Receipt>(), Ok(r));
        for bad in [
            "",
            "1-2-3-4",
            "1-2-3-4-5-6",
            "a-2-3-4-5",
            "1--3-4-5",
            "-1-2-3-4",
        ] {
            assert!(bad.parse::<Receipt>().is_err(), "{bad}");
        }
    }
}
