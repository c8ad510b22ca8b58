//! The receive side of a [`QueueConsumer`](super::QueueConsumer).
//!
//! With prefetch (the default):
//!
//! ```text
//! supervise ─ every partitions_refresh: the queue's partition count (metadata cache)
//!   └─ one task per partition p:
//!        take ≥ 1 free buffer place (wait), then more if free now, up to p's share
//!        (prefetch / partitions, at most receive_batch)
//!        ─▶ queue_receive(partition: Some(p), messages_max = places, wait) at p's
//!           leader (NotLeader hint, refresh, backoff, deadline)
//!        ─▶ messages into the buffer; unused places given back
//!        ─▶ on failure: the places back, the error kept for `receive`, a pause of
//!           error_backoff(failures in a row)
//! ```
//!
//! The buffer never holds more than `prefetch` messages: a task receives no more than
//! the places it took. On close, a task finishes the receive in flight (its messages
//! go to the buffer, which `close` then releases) and ends.
//!
//! Without prefetch, `receive` itself asks each partition in turn (no wait) for what
//! it still lacks, and while nothing comes long-polls one partition at a time for a
//! short slice of the wait: nothing is leased that it does not return.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use neo_protocol::api::{
    QUEUE_RECEIVE_MESSAGES_MAX, QueueReceiveRequest, QueueReceiveResponse, Receipt,
};
use tokio::task::{AbortHandle, JoinSet};

use super::QueueDelivery;
use super::consumer::Core;
use super::settle::SettleOp;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Pause after an empty answer that came back at once (a zero wait), so that an idle
/// task does not spin.
const IDLE_PAUSE: Duration = Duration::from_millis(50);

/// Longest long poll of one partition in a direct receive over several partitions
/// (the others are looked at again after it).
const DIRECT_POLL_SLICE: Duration = Duration::from_millis(100);

/// Longest long poll of one `queue_receive`: brokers cap a receive's wait at their
/// `fetch_wait_ms_max` (30 s by default); a longer wait is several calls.
pub(crate) const RECEIVE_POLL_MAX: Duration = Duration::from_secs(30);

/// How many buffer places one partition's receive takes at most: an even share of
/// the prefetch (at least 1), at most one receive's worth.
pub(crate) fn share(prefetch: usize, partitions: u32, receive_batch: u32) -> u32 {
    let even = prefetch / (partitions.max(1) as usize);
    (even.max(1).min(receive_batch as usize) as u32).clamp(1, QUEUE_RECEIVE_MESSAGES_MAX)
}

/// The pause after the `failures`-th failed receive in a row.
pub(crate) fn error_pause(policy: &RetryPolicy, failures: u32) -> Duration {
    policy.backoff(failures.max(1))
}

/// `ms` as a wire wait (saturating).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Core {
    /// One `queue_receive` of up to `max` messages from `partition`, at its leader.
    pub(crate) async fn receive_once(
        &self,
        partition: u32,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<QueueDelivery>> {
        let lease = self.lease();
        let wait = wait.min(RECEIVE_POLL_MAX);
        let request = QueueReceiveRequest {
            queue: self.queue.clone(),
            share_group: self.config.share_group.clone(),
            consumer: self.consumer.clone(),
            partition: Some(partition),
            messages_max: max.clamp(1, QUEUE_RECEIVE_MESSAGES_MAX),
            visibility_timeout_ms: lease.request_ms,
            wait_ms_max: millis(wait),
        };
        let sent_at = std::time::Instant::now();
        let timeout = wait.saturating_add(self.config.request_timeout);
        let resp: QueueReceiveResponse = self
            .client
            .call_partition(
                &self.queue,
                partition,
                "queue_receive",
                &request,
                timeout,
                self.config.retry,
            )
            .await?;
        let expires = sent_at + lease.length;
        Ok(resp
            .messages
            .into_iter()
            .map(|m| QueueDelivery::from_wire(&self.queue, m, expires))
            .collect())
    }

    /// Give messages back at once (received beyond what was asked for).
    async fn release(&self, receipts: &[Receipt], reason: &str) {
        let op = SettleOp::Nack {
            delay_ms: Some(0),
            reason: reason.to_string(),
        };
        if let Err(err) = self.settle(&op, receipts).await {
            tracing::debug!(error = %err, "releasing extra messages failed");
        }
    }
}

/// The background receive: a task per partition, kept in line with the partition
/// count, until the consumer closes (then every task finishes its receive in flight).
pub(crate) async fn supervise(core: Arc<Core>) {
    let mut tasks = JoinSet::new();
    let mut running: BTreeMap<u32, AbortHandle> = BTreeMap::new();
    let partitions = Arc::new(AtomicU32::new(0));
    let mut failures = 0u32;
    loop {
        match core.client.partition_count(&core.queue).await {
            Ok(count) => {
                failures = 0;
                partitions.store(count, Ordering::Relaxed);
                for p in 0..count {
                    running.entry(p).or_insert_with(|| {
                        tasks.spawn(partition_task(
                            Arc::clone(&core),
                            p,
                            Arc::clone(&partitions),
                        ))
                    });
                }
                // A queue deleted and created again with fewer partitions.
                for (_, task) in running.split_off(&count) {
                    task.abort();
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::debug!(queue = %core.queue, error = %err, "partition count failed");
                core.report_error(err);
            }
        }
        let pause = if failures > 0 {
            error_pause(&core.config.error_backoff, failures)
        } else {
            core.config.partitions_refresh
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = core.closed() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// One partition's receive loop.
async fn partition_task(core: Arc<Core>, partition: u32, partitions: Arc<AtomicU32>) {
    let mut failures = 0u32;
    let wait = core.config.wait;
    loop {
        if core.is_closed() {
            return;
        }
        let first = tokio::select! {
            permit = core.slots.acquire() => permit,
            _ = core.closed() => return,
        };
        match first {
            Ok(permit) => permit.forget(),
            Err(_) => return, // the semaphore was closed
        }
        let share = share(
            core.config.prefetch,
            partitions.load(Ordering::Relaxed),
            core.config.receive_batch,
        );
        let mut places = 1u32;
        while places < share {
            match core.slots.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    places += 1;
                }
                Err(_) => break,
            }
        }
        let started = tokio::time::Instant::now();
        match core.receive_once(partition, places, wait).await {
            Ok(mut messages) => {
                failures = 0;
                let extra = if messages.len() > places as usize {
                    messages.split_off(places as usize)
                } else {
                    Vec::new()
                };
                let unused = places as usize - messages.len();
                core.slots.add_permits(unused);
                let empty = messages.is_empty();
                for d in messages {
                    if core.buffer.send(d).is_err() {
                        return; // the consumer is gone
                    }
                }
                if !extra.is_empty() {
                    let receipts: Vec<Receipt> = extra.iter().map(|d| d.receipt).collect();
                    core.release(&receipts, "received beyond messages_max")
                        .await;
                }
                if empty && started.elapsed() < IDLE_PAUSE {
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_PAUSE) => {}
                        _ = core.closed() => return,
                    }
                }
            }
            Err(err) => {
                core.slots.add_permits(places as usize);
                failures = failures.saturating_add(1);
                tracing::debug!(queue = %core.queue, partition, error = %err, "receive failed");
                core.report_error(err);
                let pause = error_pause(&core.config.error_backoff, failures);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = core.closed() => return,
                }
            }
        }
    }
}

/// A receive without prefetch: each partition in turn (starting one further each
/// call) with no wait, returning as soon as one leased anything (so no lease waits on
/// a slow partition); while nothing came, a long poll of
/// one partition (the whole wait with one partition, else a slice of it), until
/// `wait` passed. An error is returned only if no message came in the whole wait.
pub(crate) async fn receive_direct(
    core: &Core,
    max: usize,
    wait: Duration,
) -> Result<Vec<QueueDelivery>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut failed: Option<Error> = None;
    let want = max.min(QUEUE_RECEIVE_MESSAGES_MAX as usize) as u32;
    loop {
        if core.is_closed() {
            return Err(Error::ConsumerClosed);
        }
        let count = core.client.partition_count(&core.queue).await?.max(1);
        let start = core.next_partition.fetch_add(1, Ordering::Relaxed) % count;
        if want == 0 {
            return Ok(Vec::new());
        }
        for i in 0..count {
            match core
                .receive_once((start + i) % count, want, Duration::ZERO)
                .await
            {
                // Return what is leased at once: asking the next partition could
                // block (its leader paused or cut off, retried up to the request
                // timeout) while these leases run out unreturned.
                Ok(got) if !got.is_empty() => return Ok(got),
                Ok(_) => {}
                Err(err) => failed = Some(err),
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return failed.map_or(Ok(Vec::new()), Err);
        }
        let slice = if count == 1 {
            left
        } else {
            left.min(DIRECT_POLL_SLICE)
        };
        match core.receive_once(start, want, slice).await {
            Ok(got) if !got.is_empty() => return Ok(got),
            Ok(_) => {}
            Err(err) => {
                failed = Some(err);
                // Do not spin on a partition that fails at once.
                let pause = left.min(IDLE_PAUSE);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_prefetch_evenly() {
        assert_eq!(share(256, 4, 64), 64);
        assert_eq!(share(256, 4, 16), 16, "at most one receive's worth");
        assert_eq!(share(10, 3, 64), 3);
        assert_eq!(
            share(2, 8, 64),
            1,
            "every partition gets at least one place"
        );
        assert_eq!(
            share(100, 0, 64),
            64,
            "no partitions yet: no division by zero"
        );
        assert_eq!(share(1_000_000, 1, 5000), QUEUE_RECEIVE_MESSAGES_MAX);
    }

    #[test]
    fn error_pauses_grow_and_are_capped() {
        let policy = RetryPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        for failures in [0, 1, 2, 5, 100, u32::MAX] {
            let base = policy.base_backoff(failures.max(1));
            let pause = error_pause(&policy, failures);
            assert!(pause >= base / 2 && pause <= base, "{failures}: {pause:?}");
            assert!(pause <= Duration::from_secs(5));
        }
        assert!(policy.base_backoff(1) < policy.base_backoff(4));
    }

    #[test]
    fn waits_saturate_on_the_wire() {
        assert!(RECEIVE_POLL_MAX <= Duration::from_millis(u64::from(u32::MAX)));
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u32::MAX);
    }
}
