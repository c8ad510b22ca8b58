//! The queue duties of a partition leader (run on every node, for the queue partitions
//! it leads, every [`DUTY_PERIOD`]):
//!
//! - **Expire**: a lease that expired on a message's last allowed delivery makes it
//!   dying (proposed only when the applied state shows one, so idle queues write
//!   nothing).
//! - **Dead-letter moves**: dying messages are appended to the dead-letter queue (one
//!   batch per run and partition, to the DLQ partition `source partition % DLQ
//!   partitions`, through the DLQ partition's leader wherever it runs:
//!   [`neo_raft::forward_records`] over the control plane), with headers naming the
//!   source, partition, offset, deliveries and reason; then `Archive` is proposed.
//!   Append first, archive second: a failure between the two may duplicate a message in
//!   the DLQ, never lose it. A queue without a dead-letter queue (and a topic's share
//!   group) archives dying messages at once (counted as dead-lettered). While the DLQ
//!   does not exist (deleted), dying messages wait (logged), never dropped.

use std::time::Duration;

use neo_protocol::api::{
    HEADER_DLQ_DELIVERIES, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_REASON,
    HEADER_DLQ_SHARE_GROUP, HEADER_DLQ_SOURCE, QueueMessage, QueueSettings,
};
use neo_raft::Role;
use tokio::sync::watch;

use super::now_ms;
use super::receive::read_records;
use crate::error::{Error, Result};
use crate::facade::Broker;
use crate::partition::Partition;
use crate::partition::deliveries::{QueueAnswer, QueueOp};
use crate::partition::queues::QUEUE_OWN;

/// How often the duties run.
pub const DUTY_PERIOD: Duration = Duration::from_millis(500);
/// Most messages moved to a dead-letter queue per partition per run.
const MOVE_BATCH_MAX: usize = 500;
/// Bound on one forwarded append to a dead-letter queue.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one partition's duties in one pass (its proposals wait for a quorum; a
/// leader cut off from it must not hold up the other partitions' duties).
const DUTIES_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of keys, values and headers moved to a dead-letter queue in one batch (a
/// forwarded batch is at most `neo_raft::RECORD_BATCH_BYTES_MAX`).
const MOVE_BYTES_MAX: usize = neo_raft::RECORD_BATCH_BYTES_MAX / 2;

/// Runs the queue duties until `stop` turns `true`.
pub(crate) async fn run(b: &Broker, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(DUTY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = pass(b) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass over every queue partition (and share group) led here.
async fn pass(b: &Broker) {
    let state = b.state();
    for (name, topic) in &state.topics {
        let settings = state.queues.get(name);
        for (i, info) in topic.partitions.iter().enumerate() {
            let Some(p) = b.partition(info.group) else {
                continue;
            };
            let m = p.group().metrics();
            if m.role != Role::Leader || m.quorum_lost {
                continue;
            }
            let groups: Vec<String> = p.with_queues(|q| q.groups.keys().cloned().collect());
            for g in groups {
                let s = match (settings, g == QUEUE_OWN) {
                    (Some(s), true) => s.clone(),
                    (None, false) => QueueSettings::default(),
                    _ => continue,
                };
                match tokio::time::timeout(DUTIES_TIMEOUT, duties_of(b, name, i as u32, &p, &g, &s))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(queue = %name, partition = i, share_group = %g, "queue duty: {e}");
                    }
                    Err(_) => {
                        tracing::warn!(queue = %name, partition = i, share_group = %g, "queue duty: no answer within {DUTIES_TIMEOUT:?}");
                    }
                }
            }
        }
    }
}

async fn duties_of(
    b: &Broker,
    name: &str,
    partition: u32,
    p: &Partition,
    group: &str,
    s: &QueueSettings,
) -> Result<()> {
    let now = now_ms();
    let expire = p.with_queues(|q| {
        q.groups
            .get(group)
            .is_some_and(|d| d.expired_at_max(now, s.max_deliveries))
    });
    if expire {
        let op = QueueOp::Expire {
            max_deliveries: s.max_deliveries,
        };
        p.queue_command(group, now, op).await?;
    }
    let dying = p.with_queues(|q| {
        q.groups
            .get(group)
            .map(|d| d.dying(MOVE_BATCH_MAX))
            .unwrap_or_default()
    });
    if dying.is_empty() {
        return Ok(());
    }
    let mut offsets: Vec<u64> = dying.iter().map(|(o, _, _)| *o).collect();
    let dlq = if group == QUEUE_OWN {
        s.dead_letter.clone()
    } else {
        None
    };
    if let Some(dlq) = dlq {
        let state = b.state();
        let Some(target) = state.topics.get(&dlq) else {
            tracing::warn!(
                queue = %name,
                dead_letter = %dlq,
                waiting = offsets.len(),
                "dead-letter queue does not exist: dying messages wait for it"
            );
            return Ok(());
        };
        let records = read_records(p, &offsets.iter().copied().collect()).await?;
        let (batch, moved) = dead_letter_batch(name, group, partition, &dying, &records)?;
        // What did not fit moves in a later pass.
        offsets.truncate(moved);
        let dp = &target.partitions[partition as usize % target.partitions.len()];
        b.forward_batch(&dp.replicas, dp.group, batch, FORWARD_TIMEOUT)
            .await?;
    }
    match p
        .queue_command(group, now_ms(), QueueOp::Archive { offsets })
        .await?
    {
        QueueAnswer::Count(n) => {
            tracing::debug!(queue = %name, partition, archived = n, "dead letters archived");
            Ok(())
        }
        other => Err(Error::Internal(format!("archive answered {other:?}"))),
    }
}

/// The dead-letter batch of the first dying messages that fit in [`MOVE_BYTES_MAX`]
/// (at least one), and how many it holds: each message as it was (key, value,
/// headers, timestamp) plus the `neo-dlq-*` headers. A message the log no longer holds
/// (retention) goes as an empty value with the headers, so its fate stays visible.
fn dead_letter_batch(
    name: &str,
    group: &str,
    partition: u32,
    dying: &[(u64, u32, String)],
    records: &std::collections::BTreeMap<u64, QueueMessage>,
) -> Result<(bytes::Bytes, usize)> {
    let mut builder = qiss::batch::BatchBuilder::new();
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let mut bytes = 0usize;
    let mut moved = 0usize;
    for (offset, deliveries, reason) in dying {
        let r = records.get(offset);
        let size = r.map_or(0, |m| {
            m.value.len()
                + m.key.as_ref().map_or(0, Vec::len)
                + m.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        }) + reason.len()
            + 256;
        if moved > 0 && bytes + size > MOVE_BYTES_MAX {
            break;
        }
        bytes += size;
        moved += 1;
        let part = partition.to_string();
        let off = offset.to_string();
        let del = deliveries.to_string();
        let reason = if reason.is_empty() {
            "max deliveries"
        } else {
            reason.as_str()
        };
        let mut headers: Vec<(&str, &[u8])> = r
            .map(|m| {
                m.headers
                    .iter()
                    .filter(|(k, _)| !k.starts_with("neo-dlq-"))
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect()
            })
            .unwrap_or_default();
        headers.push((HEADER_DLQ_SOURCE, name.as_bytes()));
        headers.push((HEADER_DLQ_PARTITION, part.as_bytes()));
        headers.push((HEADER_DLQ_OFFSET, off.as_bytes()));
        headers.push((HEADER_DLQ_DELIVERIES, del.as_bytes()));
        headers.push((HEADER_DLQ_REASON, reason.as_bytes()));
        if group != QUEUE_OWN {
            headers.push((HEADER_DLQ_SHARE_GROUP, group.as_bytes()));
        }
        // Timestamps: the original's, so the batch's spread stays that of the source.
        let ts = r.map_or(now, |m| m.timestamp_ms);
        builder
            .push(
                ts,
                r.and_then(|m| m.key.as_deref()),
                &headers,
                r.map_or(&[][..], |m| m.value.as_slice()),
            )
            .map_err(|e| Error::codec("dead-letter batch", e))?;
    }
    let batch = builder
        .build()
        .map_err(|e| Error::codec("dead-letter batch", e))?;
    Ok((batch, moved))
}

impl Broker {
    /// Runs the queue duties (lease expiry at max deliveries, dead-letter moves) of the
    /// queue partitions this node leads until `stop` turns `true`.
    pub async fn queue_duties(&self, stop: watch::Receiver<bool>) {
        run(self, stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_protocol::api::Receipt;

    fn message(offset: u64, value_len: usize) -> QueueMessage {
        QueueMessage {
            receipt: Receipt {
                group: 1,
                partition: 0,
                offset,
                delivery: 1,
                lease: 1,
            },
            partition: 0,
            offset,
            delivery_count: 1,
            key: None,
            value: vec![7; value_len],
            headers: vec![],
            timestamp_ms: 1,
        }
    }

    #[test]
    fn a_dead_letter_batch_stays_within_its_byte_budget() {
        let big = MOVE_BYTES_MAX * 3 / 5;
        let dying: Vec<_> = (0..3).map(|o| (o, 5, String::new())).collect();
        let records = (0..3).map(|o| (o, message(o, big))).collect();
        let (batch, moved) = dead_letter_batch("q", QUEUE_OWN, 0, &dying, &records).unwrap();
        assert_eq!(moved, 1, "the second would pass the budget");
        assert!(batch.len() <= neo_raft::RECORD_BATCH_BYTES_MAX);
        // Small messages all go in one batch, with their headers.
        let records = (0..3).map(|o| (o, message(o, 10))).collect();
        let (batch, moved) = dead_letter_batch("q", QUEUE_OWN, 0, &dying, &records).unwrap();
        assert_eq!(moved, 3);
        let b = qiss::batch::RecordBatch::new(batch).unwrap();
        let first = b.records().next().unwrap();
        assert!(
            first
                .headers()
                .any(|(k, v)| k == HEADER_DLQ_SOURCE && v == b"q")
        );
    }
}
