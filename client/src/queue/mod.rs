//! Work queues, client side: competing consumers with per-message leases, acks,
//! nacks, redelivery and dead letters (the wire API is `neo_protocol::api::queues`).
//!
//! A queue is a topic (same name, same partitions) with delivery settings. Messages
//! are sent with `produce` like any record ([`QueueProducer`]); a consumer *receives*
//! them: each receive leases the messages to it for the visibility timeout, and a
//! [`Receipt`] per delivery then acks (done for good), nacks (redeliver, after a
//! delay), extends (a longer lease) or terms (dead-letter now) it. A lease that runs
//! out makes the message available again; a message delivered `max_deliveries` times
//! goes to the dead-letter queue (`Q.dlq` by default). Any plain topic can be consumed
//! the same way by a named *share group*.
//!
//! ```no_run
//! use std::time::Duration;
//! use neo_client::{Client, QueueAdmin, QueueConsumer, QueueOptions, QueueProducer};
//! # async fn resize(_: &[u8]) -> Result<(), String> { Ok(()) }
//! # async fn demo() -> neo_client::Result<()> {
//! let client = Client::connect(&["127.0.0.1:7070"]).await?;
//! let options = QueueOptions::new(3, 3).max_deliveries(5); // dead letters: jobs.dlq
//! QueueAdmin::new(client.clone()).create("jobs", options).await?;
//! QueueProducer::new(client.clone()).send("jobs", "42.png").await?; // committed
//!
//! let consumer = QueueConsumer::new(client, "jobs", "worker-1")?;
//! for job in consumer.receive(10, Duration::from_secs(1)).await? {
//!     match resize(&job.value).await {
//!         Ok(()) => consumer.ack_one(job.receipt).await?,
//!         Err(why) => consumer.nack_one(job.receipt, None, &why).await?,
//!     }
//! }
//! // Or let it loop: 8 jobs at once, leases extended while each runs, Ok acks,
//! // Err nacks; until `close` is called from elsewhere.
//! consumer
//!     .run(|job| async move { resize(&job.value).await }, 8)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | file | role |
//! |---|---|
//! | `mod.rs` | [`QueueDelivery`] (one received message and its receipt) |
//! | [`admin`] | [`QueueAdmin`]: create ([`QueueOptions`]), delete, list, describe, purge |
//! | `report.rs` | [`QueueReport`]: the `describe_queue` answers of the partitions' leaders merged by partition, [`QueueTotals`] |
//! | `producer.rs` | [`QueueProducer`]: the [`Producer`](crate::Producer) with `acks=all`, [`SendOptions`] (key, headers, `deliver_after_ms`) |
//! | `consumer.rs` | [`QueueConsumer`], [`QueueConsumerConfig`]: start (lease length), `receive` (prefetch buffer), `keep_alive`, `close` |
//! | `receiver.rs` | the receive side: one background task per partition long-polling its leader into the prefetch buffer, or direct receives without prefetch |
//! | `settle.rs` | [`QueueConsumer`]'s `ack` / `nack` / `extend` / `term` (per receipt outcomes; `*_one` forms with typed errors): receipts grouped by partition, one request per partition to its leader, outcomes back in the caller's order |
//! | `lease.rs` | automatic lease extension ([`LeaseGuard`]): one task per consumer extends every registered lease a third of the way through it |
//! | `runner.rs` | [`QueueConsumer::run`]: a handler per message with bounded concurrency, ack on `Ok`, nack on `Err` or panic, leases extended meanwhile |
//! | `redrive.rs` | [`redrive`]: move dead letters back to their source queues (what `neo queue redrive` runs) |
//!
//! # Routing
//!
//! ```text
//! queue_receive(partition: Some(p))            ─▶ p's leader (Client::call_partition:
//!                                                  NotLeader hint, refresh, backoff)
//! queue_ack / nack / extend / term (receipts)  ─▶ grouped by receipt.partition, one
//!                                                  request per partition to its leader
//! purge_queue(partition: Some(p))              ─▶ each partition's leader
//! create / delete / list_queues                ─▶ any broker (the controller first)
//! describe_queue ─▶ any broker; it counts the partitions it leads and names the
//!                   leaders of the others ─▶ those are asked in turn, answers merged
//! ```
//!
//! # Invariants
//!
//! - At least once: a message is done only when its ack (or term) was answered `Ok`;
//!   every other path (nack, lease run out, a consumer gone) delivers it again.
//! - Bounded: a consumer never holds more than `prefetch` received-but-not-returned
//!   messages (without prefetch, it leases only what `receive` returns); `run` never
//!   runs more than `concurrency` handlers.
//! - Every call to a broker has a deadline (the client's retry policy; a receive's
//!   long-poll wait plus `request_timeout`).
//! - A settle call that is retried after its answer was lost may answer `AlreadyDone`
//!   (a retried ack or term) or `LeaseLost` (a retried nack) for receipts the first
//!   attempt applied.

pub mod admin;
mod consumer;
mod lease;
mod producer;
mod receiver;
mod redrive;
mod report;
mod runner;
mod settle;

use std::time::Instant;

use bytes::Bytes;
use neo_protocol::api::{QueueMessage, Receipt};

pub use admin::{QueueAdmin, QueueOptions};
pub use consumer::{QueueConsumer, QueueConsumerConfig};
pub use lease::LeaseGuard;
pub use neo_protocol::api::{
    DEAD_LETTER_SUFFIX, DeadLetter, HEADER_DELIVER_AFTER_MS, HEADER_DLQ_DELIVERIES,
    HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_REASON, HEADER_DLQ_SHARE_GROUP,
    HEADER_DLQ_SOURCE, QueueListing, QueuePartitionStats, QueueSettings, ReceiptOutcome,
};
pub use producer::{QueueProducer, SendOptions};
pub use redrive::{RedriveOptions, RedriveReport, redrive};
pub use report::{PartitionReport, QueueReport, QueueTotals};
pub use runner::RunReport;
pub use settle::SettleOp;

/// One message received from a queue, with the receipt of this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDelivery {
    /// The queue (or topic) it came from.
    pub queue: String,
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition's log.
    pub offset: u64,
    /// How many times it has been delivered, this time included (1 on the first).
    pub delivery_count: u32,
    /// The handle for ack / nack / extend / term of this delivery.
    pub receipt: Receipt,
    /// Record key, if any.
    pub key: Option<Bytes>,
    /// Record value.
    pub value: Bytes,
    /// Record headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// Record timestamp (milliseconds since the Unix epoch).
    pub timestamp_ms: i64,
    /// When the lease runs out, as this client reckons it: the moment the receive
    /// was sent plus the lease length (so never later than the broker's deadline).
    pub lease_expires_at: Instant,
}

impl QueueDelivery {
    pub(crate) fn from_wire(queue: &str, message: QueueMessage, lease_expires_at: Instant) -> Self {
        QueueDelivery {
            queue: queue.to_string(),
            partition: message.partition,
            offset: message.offset,
            delivery_count: message.delivery_count,
            receipt: message.receipt,
            key: message.key.map(Bytes::from),
            value: Bytes::from(message.value),
            headers: message
                .headers
                .into_iter()
                .map(|(name, value)| (name, Bytes::from(value)))
                .collect(),
            timestamp_ms: message.timestamp_ms,
            lease_expires_at,
        }
    }

    /// The value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether the lease has run out (by this client's reckoning). The receipt still
    /// works until another receive takes the message; after that a settle answers
    /// `LeaseLost`.
    pub fn lease_expired(&self) -> bool {
        Instant::now() >= self.lease_expires_at
    }
}

/// `text` cut to at most `bytes_max` bytes, at a character boundary (reasons and
/// names travel with a length bound).
pub(crate) fn truncate_utf8(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A consumer or queue name the wire accepts: not empty, at most
/// `QUEUE_NAME_LEN_MAX` bytes.
pub(crate) fn check_name(what: &str, name: &str) -> crate::Result<()> {
    let max = neo_protocol::api::QUEUE_NAME_LEN_MAX;
    if name.is_empty() || name.len() > max {
        return Err(crate::Error::InvalidArgument(format!(
            "{what} must be 1 to {max} bytes long, got {}",
            name.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("hello", 10), "hello");
        assert_eq!(truncate_utf8("hello", 3), "hel");
        // "é" is two bytes: cutting inside it drops it whole.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("", 0), "");
        assert_eq!(truncate_utf8("é", 0), "");
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("consumer", "c").is_ok());
        assert!(check_name("consumer", "").is_err());
        assert!(check_name("consumer", &"x".repeat(257)).is_err());
        assert!(check_name("consumer", &"x".repeat(256)).is_ok());
    }

    #[test]
    fn deliveries_come_from_the_wire_whole() {
        let receipt = Receipt {
            group: 3,
            partition: 1,
            offset: 9,
            delivery: 2,
            lease: 40,
        };
        let d = QueueDelivery::from_wire(
            "q",
            QueueMessage {
                receipt,
                partition: 1,
                offset: 9,
                delivery_count: 2,
                key: Some(b"k".to_vec()),
                value: b"v".to_vec(),
                headers: vec![("h".into(), b"1".to_vec()), ("h".into(), b"2".to_vec())],
                timestamp_ms: 5,
            },
            Instant::now() + std::time::Duration::from_secs(30),
        );
        assert_eq!((d.partition, d.offset, d.delivery_count), (1, 9, 2));
        assert_eq!(d.receipt, receipt);
        assert_eq!(d.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(d.header("h"), Some(&b"1"[..]), "the first of its name");
        assert_eq!(d.header("x"), None);
        assert!(!d.lease_expired());
    }
}
