//! [`redrive`]: move dead letters back to where they came from (client side; what
//! `neo queue redrive` runs).
//!
//! ```text
//! receive a batch from the dead-letter queue (no prefetch: only what is moved now)
//!   each message ─▶ its source: header neo-dlq-source (a queue, or the topic of a
//!                   share group when neo-dlq-share-group is set)
//!              ─▶ the same key, value and headers minus neo-dlq-*, produced to the
//!                 source (acks=all)
//!   ─▶ wait for every commit ─▶ ack those in the dead-letter queue
//!   ─▶ a message that failed to send is nacked back (no delay) and the redrive stops
//! until `max` messages, or a receive that waits `idle_wait` for nothing
//! messages without a usable source stay leased until the end, then are nacked back
//! ```
//!
//! At least once: a message is acked in the dead-letter queue only after its copy was
//! committed; if that ack fails, it stays there too (`ack_failed`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use neo_protocol::api::{HEADER_DLQ_SOURCE, QUEUE_RECEIVE_MESSAGES_MAX, Receipt, ReceiptOutcome};

use super::consumer::{QueueConsumer, QueueConsumerConfig};
use super::{QueueDelivery, QueueProducer};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::producer::ProducerRecord;

/// Every dead-letter header's name starts with this.
const DLQ_HEADER_PREFIX: &str = "neo-dlq-";

/// How a [`redrive`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveOptions {
    /// Most messages to take from the dead-letter queue (`None`: until it is empty).
    pub max: Option<u64>,
    /// Stop after a receive that waited this long for nothing.
    pub idle_wait: Duration,
    /// Lease of the dead letters while they are moved, in milliseconds.
    pub visibility_timeout_ms: u32,
    /// Messages per receive (1 to 1000).
    pub batch: u32,
    /// The consumer name in the dead-letter queue.
    pub consumer: String,
}

impl Default for RedriveOptions {
    fn default() -> RedriveOptions {
        RedriveOptions {
            max: None,
            idle_wait: Duration::from_secs(1),
            visibility_timeout_ms: 60_000,
            batch: 100,
            consumer: "neo-redrive".into(),
        }
    }
}

/// What a [`redrive`] did.
#[derive(Debug, Default)]
pub struct RedriveReport {
    /// Messages committed to their source (acked in the dead-letter queue unless
    /// counted in `ack_failed`).
    pub moved: u64,
    /// `moved` by source queue (or topic).
    pub by_source: BTreeMap<String, u64>,
    /// Messages left in the dead-letter queue: no (usable) `neo-dlq-source` header.
    pub skipped: u64,
    /// Messages that could not be sent (given back to the dead-letter queue).
    pub failed: u64,
    /// Moved messages whose ack in the dead-letter queue failed: they are in both
    /// places now (and would be moved again by another redrive).
    pub ack_failed: u64,
    /// The failure that stopped the redrive, if one did.
    pub error: Option<Error>,
}

/// The record that takes dead letter `d` of `dead_letter_queue` back to its source,
/// or why there is none.
pub(crate) fn redrive_record(
    dead_letter_queue: &str,
    d: &QueueDelivery,
) -> std::result::Result<ProducerRecord, String> {
    let source = match d.header(HEADER_DLQ_SOURCE) {
        None => return Err(format!("no {HEADER_DLQ_SOURCE} header")),
        Some(raw) => std::str::from_utf8(raw)
            .map_err(|_| format!("{HEADER_DLQ_SOURCE} is not UTF-8"))?
            .trim(),
    };
    if source.is_empty() {
        return Err(format!("empty {HEADER_DLQ_SOURCE} header"));
    }
    if source == dead_letter_queue {
        return Err(format!(
            "{HEADER_DLQ_SOURCE} names the dead-letter queue itself"
        ));
    }
    Ok(ProducerRecord {
        topic: source.to_string(),
        partition: None,
        key: d.key.clone(),
        value: d.value.clone(),
        headers: d
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with(DLQ_HEADER_PREFIX))
            .cloned()
            .collect(),
        timestamp_ms: None,
    })
}

/// Move up to `options.max` dead letters of `dead_letter_queue` back to their
/// sources. Fails as a whole only if the dead-letter queue cannot be read at all (or
/// the options are bad); a failure after that stops the redrive and is in the report.
pub async fn redrive(
    client: &Client,
    dead_letter_queue: &str,
    options: RedriveOptions,
) -> Result<RedriveReport> {
    if !(1..=QUEUE_RECEIVE_MESSAGES_MAX).contains(&options.batch) {
        return Err(Error::InvalidArgument(format!(
            "redrive batch must be 1 to {QUEUE_RECEIVE_MESSAGES_MAX}"
        )));
    }
    let consumer = QueueConsumer::with_config(
        client.clone(),
        dead_letter_queue,
        &options.consumer,
        QueueConsumerConfig {
            prefetch: 0,
            visibility_timeout_ms: options.visibility_timeout_ms,
            receive_batch: options.batch,
            ..QueueConsumerConfig::default()
        },
    )?;
    consumer.start().await?;
    let producer = QueueProducer::new(client.clone());
    let mut report = RedriveReport::default();
    let mut received = 0u64;
    // Kept leased until the end so that this run does not take them again.
    let mut skipped: Vec<Receipt> = Vec::new();
    let mut skipped_seen: HashSet<(u32, u64)> = HashSet::new();
    while report.error.is_none() {
        let left = options.max.map_or(u64::MAX, |m| m.saturating_sub(received));
        let want = left.min(u64::from(options.batch)) as usize;
        if want == 0 {
            break;
        }
        let batch = match consumer.receive(want, options.idle_wait).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => batch,
            Err(err) if report.moved == 0 && received == 0 => return Err(err),
            Err(err) => {
                report.error = Some(err);
                break;
            }
        };
        received += batch.len() as u64;
        let mut sending = Vec::new();
        let mut give_back = Vec::new();
        for d in &batch {
            let record = match redrive_record(dead_letter_queue, d) {
                Ok(record) => record,
                Err(why) => {
                    tracing::warn!(receipt = %d.receipt, %why, "dead letter left in place");
                    if skipped_seen.insert((d.partition, d.offset)) {
                        report.skipped += 1;
                    }
                    skipped.push(d.receipt);
                    continue;
                }
            };
            let source = record.topic.clone();
            match producer.producer().send(record).await {
                Ok(delivery) => sending.push((d.receipt, source, delivery)),
                Err(err) => {
                    report.failed += 1;
                    report.error.get_or_insert(err);
                    give_back.push(d.receipt);
                }
            }
        }
        producer.flush().await;
        let mut committed = Vec::new();
        for (receipt, source, delivery) in sending {
            match delivery.await {
                Ok(_) => committed.push((receipt, source)),
                Err(err) => {
                    report.failed += 1;
                    report.error.get_or_insert(err);
                    give_back.push(receipt);
                }
            }
        }
        let receipts: Vec<Receipt> = committed.iter().map(|(r, _)| *r).collect();
        let acked = consumer.ack(&receipts).await;
        for (i, (_, source)) in committed.iter().enumerate() {
            report.moved += 1;
            *report.by_source.entry(source.clone()).or_default() += 1;
            let ok = matches!(&acked, Ok(o) if o.get(i) == Some(&ReceiptOutcome::Ok));
            report.ack_failed += u64::from(!ok);
        }
        if let Err(err) = acked {
            report.error.get_or_insert(err);
        }
        if !give_back.is_empty()
            && let Err(err) = consumer
                .nack(&give_back, Some(0), "redrive: send failed")
                .await
        {
            tracing::warn!(error = %err, "giving failed messages back failed");
        }
    }
    if !skipped.is_empty()
        && let Err(err) = consumer
            .nack(&skipped, Some(0), "redrive: no usable source")
            .await
    {
        tracing::warn!(error = %err, "giving skipped messages back failed");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use neo_protocol::api::{HEADER_DLQ_REASON, HEADER_DLQ_SHARE_GROUP};

    fn dead_letter(headers: &[(&str, &str)]) -> QueueDelivery {
        QueueDelivery {
            queue: "orders.dlq".into(),
            partition: 0,
            offset: 3,
            delivery_count: 1,
            receipt: Receipt {
                group: 1,
                partition: 0,
                offset: 3,
                delivery: 1,
                lease: 2,
            },
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"v"),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            timestamp_ms: 0,
            lease_expires_at: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_dead_letter_goes_back_without_its_dlq_headers() {
        let d = dead_letter(&[
            ("trace", "t1"),
            (HEADER_DLQ_SOURCE, "orders"),
            (HEADER_DLQ_REASON, "boom"),
            ("neo-dlq-partition", "2"),
            ("neo-enc", "x"),
        ]);
        let record = redrive_record("orders.dlq", &d).unwrap();
        assert_eq!(record.topic, "orders");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_ref(), b"v");
        let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["trace", "neo-enc"], "only neo-dlq-* headers go");
        assert_eq!(record.timestamp_ms, None, "a fresh timestamp");
    }

    #[test]
    fn a_share_group_dead_letter_goes_back_to_the_topic() {
        let d = dead_letter(&[(HEADER_DLQ_SOURCE, "events"), (HEADER_DLQ_SHARE_GROUP, "g")]);
        let record = redrive_record("events.g.dlq", &d).unwrap();
        assert_eq!(record.topic, "events");
        assert!(record.headers.is_empty());
    }

    #[test]
    fn dead_letters_without_a_usable_source_stay() {
        assert!(redrive_record("q.dlq", &dead_letter(&[])).is_err());
        assert!(redrive_record("q.dlq", &dead_letter(&[(HEADER_DLQ_SOURCE, " ")])).is_err());
        assert!(
            redrive_record("q.dlq", &dead_letter(&[(HEADER_DLQ_SOURCE, "q.dlq")])).is_err(),
            "never into itself"
        );
        let mut bad = dead_letter(&[]);
        bad.headers
            .push((HEADER_DLQ_SOURCE.into(), Bytes::from_static(&[0xff, 0xfe])));
        assert!(redrive_record("q.dlq", &bad).is_err());
    }
}
