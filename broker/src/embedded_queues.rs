//! The embedded queue API (the mission's `create_queue`, `produce_to_queue`,
//! `consume_from_queue`): thin calls into the same [`crate::Broker`] operations a
//! server node runs, with the internal security context. No second implementation.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use neo_protocol::api::{
    Acks, CreateQueueRequest, CreateQueueResponse, DeadLetter, ProduceRequest, QueueAckRequest,
    QueueMessage, QueueNackRequest, QueueReceiveRequest, QueueSettings, Receipt, ReceiptOutcome,
};
use neo_protocol::{ErrorCode, RpcError};
use neo_security::SecurityContext;

use crate::embedded::Embedded;
use crate::partition::queues::fnv1a;

/// Round-robin position of keyless sends.
static NEXT_PARTITION: AtomicU32 = AtomicU32::new(0);

/// How long a call waits for its partitions to elect this node (right after start, a
/// reopened partition may not lead yet).
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Runs `call` again while it answers `NotLeader` (a partition still opening), up to
/// [`LEADER_WAIT`].
async fn while_opening<T, F, Fut>(mut call: F) -> Result<T, RpcError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
{
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match call().await {
            Err(e)
                if e.error_code() == Some(ErrorCode::NotLeader)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

impl Embedded {
    /// Creates a queue of `partitions` partitions (replication 1) with `settings` and
    /// its dead-letter queue.
    pub async fn create_queue(
        &self,
        name: &str,
        partitions: u32,
        settings: QueueSettings,
        dead_letter: DeadLetter,
    ) -> Result<CreateQueueResponse, RpcError> {
        let req = CreateQueueRequest {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            settings,
            dead_letter,
            configs: Vec::new(),
        };
        self.broker()
            .create_queue(&SecurityContext::internal(), req)
            .await
    }

    /// Sends one message (committed, fsynced before the answer): partition by the key's
    /// hash, or round robin. Returns (partition, offset).
    pub async fn produce_to_queue(
        &self,
        queue: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(u32, u64), RpcError> {
        let n = self
            .broker()
            .state()
            .topics
            .get(queue)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(|| crate::ops::queues::unknown_queue(queue))?;
        let partition = match key {
            Some(k) => (fnv1a(k) % u64::from(n)) as u32,
            None => NEXT_PARTITION.fetch_add(1, Ordering::Relaxed) % n,
        };
        let mut b = qiss::batch::BatchBuilder::new();
        let now = i64::try_from(crate::ops::queues::now_ms()).unwrap_or(i64::MAX);
        b.push(now, key, &[], value)
            .map_err(|e| RpcError::invalid_argument(e.to_string()))?;
        let records: Bytes = b
            .build()
            .map_err(|e| RpcError::invalid_argument(e.to_string()))?;
        let req = ProduceRequest {
            topic: queue.to_string(),
            partition,
            acks: Acks::All,
            timeout_ms: 30_000,
            producer: None,
            records,
        };
        let ctx = SecurityContext::internal();
        let r = while_opening(|| self.broker().produce(&ctx, req.clone())).await?;
        Ok((partition, r.base_offset))
    }

    /// Receives up to `max` messages leased to `consumer` (waiting up to `wait_ms`).
    pub async fn consume_from_queue(
        &self,
        queue: &str,
        consumer: &str,
        max: u32,
        wait_ms: u32,
    ) -> Result<Vec<QueueMessage>, RpcError> {
        let req = QueueReceiveRequest {
            queue: queue.to_string(),
            share_group: None,
            consumer: consumer.to_string(),
            partition: None,
            messages_max: max,
            visibility_timeout_ms: 0,
            wait_ms_max: wait_ms,
        };
        let ctx = SecurityContext::internal();
        let r = while_opening(|| self.broker().queue_receive(&ctx, req.clone())).await?;
        Ok(r.messages)
    }

    /// Acks deliveries; one outcome per receipt.
    pub async fn ack(
        &self,
        queue: &str,
        receipts: &[Receipt],
    ) -> Result<Vec<ReceiptOutcome>, RpcError> {
        let req = QueueAckRequest {
            queue: queue.to_string(),
            share_group: None,
            receipts: receipts.to_vec(),
        };
        let ctx = SecurityContext::internal();
        let r = while_opening(|| self.broker().queue_ack(&ctx, req.clone())).await?;
        Ok(r.outcomes)
    }

    /// Nacks deliveries (redelivered after `delay_ms`, or the queue's backoff).
    pub async fn nack(
        &self,
        queue: &str,
        receipts: &[Receipt],
        delay_ms: Option<u32>,
        reason: &str,
    ) -> Result<Vec<ReceiptOutcome>, RpcError> {
        let req = QueueNackRequest {
            queue: queue.to_string(),
            share_group: None,
            receipts: receipts.to_vec(),
            delay_ms,
            reason: reason.to_string(),
        };
        let ctx = SecurityContext::internal();
        let r = while_opening(|| self.broker().queue_nack(&ctx, req.clone())).await?;
        Ok(r.outcomes)
    }
}
