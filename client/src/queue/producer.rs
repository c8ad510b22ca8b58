//! [`QueueProducer`]: sending to a queue is producing to its topic. This is the
//! [`Producer`] with `acks=all` (a message counts as sent once a quorum of replicas
//! committed it) and the queue's one header of its own: a delayed message carries
//! `neo-deliver-after-ms` (decimal milliseconds after the record timestamp).

use std::time::Duration;

use bytes::Bytes;
use neo_protocol::api::{Acks, HEADER_DELIVER_AFTER_MS, QUEUE_DELAY_MS_MAX};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::producer::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};

/// What a queue message carries besides its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Key (picks the partition: murmur2(key) % partitions; with `ordered_by_key`, a
    /// key's messages are leased one at a time, in order).
    pub key: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// Deliver no sooner than this many milliseconds after the record's timestamp (at
    /// most `QUEUE_DELAY_MS_MAX`, 7 days).
    pub deliver_after_ms: Option<u32>,
    /// An explicit partition (else by key, else round robin).
    pub partition: Option<u32>,
}

impl SendOptions {
    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> SendOptions {
        self.key = Some(key.into());
        self
    }

    /// With one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> SendOptions {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delivered no sooner than `ms` milliseconds after it was sent.
    pub fn deliver_after_ms(mut self, ms: u32) -> SendOptions {
        self.deliver_after_ms = Some(ms);
        self
    }

    /// Delivered no sooner than `delay` after it was sent (milliseconds; saturates
    /// above `u32::MAX` ms, which `send` then refuses as above the maximum).
    pub fn deliver_after(self, delay: Duration) -> SendOptions {
        let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.deliver_after_ms(ms)
    }

    /// To this partition.
    pub fn partition(mut self, partition: u32) -> SendOptions {
        self.partition = Some(partition);
        self
    }
}

/// The record that carries a queue message.
pub(crate) fn queue_record(
    queue: &str,
    value: Bytes,
    options: SendOptions,
) -> Result<ProducerRecord> {
    let mut headers = options.headers;
    if let Some(ms) = options.deliver_after_ms {
        if ms > QUEUE_DELAY_MS_MAX {
            return Err(Error::InvalidArgument(format!(
                "deliver_after_ms {ms}: at most {QUEUE_DELAY_MS_MAX} (7 days)"
            )));
        }
        if headers.iter().any(|(n, _)| n == HEADER_DELIVER_AFTER_MS) {
            return Err(Error::InvalidArgument(format!(
                "both deliver_after_ms and a {HEADER_DELIVER_AFTER_MS} header"
            )));
        }
        if ms > 0 {
            headers.push((HEADER_DELIVER_AFTER_MS.to_string(), ms.to_string().into()));
        }
    }
    Ok(ProducerRecord {
        topic: queue.to_string(),
        partition: options.partition,
        key: options.key,
        value,
        headers,
        timestamp_ms: None,
    })
}

/// Sends messages to queues. Cheap to clone: clones share batches and connections.
#[derive(Debug, Clone)]
pub struct QueueProducer {
    producer: Producer,
}

impl QueueProducer {
    /// A producer on `client` with the default configuration (`acks=all`).
    pub fn new(client: Client) -> QueueProducer {
        QueueProducer::with_config(client, ProducerConfig::default())
    }

    /// A producer with explicit configuration; `acks` is always `all` (a queue
    /// message is sent once committed).
    pub fn with_config(client: Client, config: ProducerConfig) -> QueueProducer {
        QueueProducer {
            producer: Producer::with_config(
                client,
                ProducerConfig {
                    acks: Acks::All,
                    ..config
                },
            ),
        }
    }

    /// Send `value` to `queue` and wait until it is committed.
    pub async fn send(&self, queue: &str, value: impl Into<Bytes>) -> Result<RecordMetadata> {
        self.send_with(queue, value, SendOptions::default()).await
    }

    /// Send `value` with a key, headers or a delay, and wait until it is committed.
    pub async fn send_with(
        &self,
        queue: &str,
        value: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<RecordMetadata> {
        self.submit(queue, value, options).await?.await
    }

    /// Queue the message in a batch and return at once: the [`Delivery`] resolves
    /// when it is committed (or failed). Many `submit`s and then their deliveries
    /// send far faster than `send` one at a time.
    pub async fn submit(
        &self,
        queue: &str,
        value: impl Into<Bytes>,
        options: SendOptions,
    ) -> Result<Delivery> {
        let record = queue_record(queue, value.into(), options)?;
        self.producer.send(record).await
    }

    /// Send every open batch now and wait until everything submitted before is
    /// committed or failed.
    pub async fn flush(&self) {
        self.producer.flush().await;
    }

    /// The producer underneath.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_becomes_the_header() {
        let r = queue_record(
            "q",
            Bytes::from_static(b"v"),
            SendOptions::default()
                .key("k")
                .header("a", "1")
                .deliver_after_ms(1500),
        )
        .unwrap();
        assert_eq!(r.topic, "q");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            r.headers,
            vec![
                ("a".to_string(), Bytes::from_static(b"1")),
                (
                    HEADER_DELIVER_AFTER_MS.to_string(),
                    Bytes::from_static(b"1500")
                )
            ]
        );
        let none = queue_record("q", Bytes::new(), SendOptions::default()).unwrap();
        assert!(none.headers.is_empty());
        let zero = queue_record(
            "q",
            Bytes::new(),
            SendOptions::default().deliver_after_ms(0),
        );
        assert!(zero.unwrap().headers.is_empty(), "no delay: no header");
    }

    #[test]
    fn bad_delays_are_refused() {
        let too_long = SendOptions::default().deliver_after_ms(QUEUE_DELAY_MS_MAX + 1);
        assert!(queue_record("q", Bytes::new(), too_long).is_err());
        let huge = SendOptions::default().deliver_after(Duration::from_secs(u64::MAX));
        assert_eq!(huge.deliver_after_ms, Some(u32::MAX));
        assert!(queue_record("q", Bytes::new(), huge).is_err());
        let twice = SendOptions::default()
            .header(HEADER_DELIVER_AFTER_MS, "5")
            .deliver_after_ms(10);
        assert!(queue_record("q", Bytes::new(), twice).is_err());
        // The header alone is the caller's business.
        let header_only = SendOptions::default().header(HEADER_DELIVER_AFTER_MS, "5");
        assert!(queue_record("q", Bytes::new(), header_only).is_ok());
    }
}
