//! [`QueueConsumer`]: receives a queue's messages (leased to it by name) and settles
//! them.
//!
//! ```text
//! start (on first use) ─▶ lease length: the configured visibility timeout, or the
//!   queue's (describe_queue) ─▶ with prefetch: the receive tasks (receiver.rs)
//! receive(max, wait) ─▶ the prefetch buffer (or direct receives without prefetch)
//! ack / nack / extend / term ─▶ settle.rs (per partition, to its leader)
//! keep_alive(delivery) ─▶ lease.rs extends it until the guard drops
//! close ─▶ receive tasks stop after their receive in flight ─▶ buffered messages are
//!   nacked without delay (free for other consumers at once)
//! ```

use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use neo_protocol::ErrorCode;
use neo_protocol::api::{
    DescribeQueueRequest, QUEUE_RECEIVE_MESSAGES_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT,
    QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN, QueueDescription, Receipt,
    ReceiptOutcome,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::lease::{LeaseGuard, LeaseRegistry};
use super::settle::{SettleOp, SettleTarget, settle};
use super::{QueueDelivery, check_name, receiver};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Longest wait a receive takes (what the wire's `wait_ms_max` can say); longer ones
/// are cut to it.
pub(crate) const WAIT_MAX: Duration = Duration::from_millis(u32::MAX as u64);

/// Every knob of a [`QueueConsumer`], named, units last.
#[derive(Debug, Clone)]
pub struct QueueConsumerConfig {
    /// Consume a plain topic's messages as this share group (`None`: the queue's own
    /// deliveries).
    pub share_group: Option<String>,
    /// Lease length each receive asks for, in milliseconds (0: the queue's visibility
    /// timeout, read once with `describe_queue`; if the principal may not describe
    /// the queue, the default of 30 s is asked for explicitly).
    pub visibility_timeout_ms: u32,
    /// Messages received ahead of `receive` and buffered: the bound on messages
    /// leased to this consumer and not yet returned. 0: no background receiving;
    /// `receive` asks the partitions itself, in turn, for no more than it returns.
    pub prefetch: usize,
    /// Most messages one receive asks for (1 to 1000).
    pub receive_batch: u32,
    /// Long-poll wait of one background receive (brokers cap it at 30 s).
    pub wait: Duration,
    /// How often the background receive checks the queue's partition count (new
    /// partitions get a receive task).
    pub partitions_refresh: Duration,
    /// Bound on one settle call; added to the long-poll wait to bound a receive.
    pub request_timeout: Duration,
    /// Retry of each call (NotLeader, dead connection, no leader yet).
    pub retry: RetryPolicy,
    /// Pause of a background receive task after a failed receive: `backoff(n)` after
    /// the n-th failure in a row (`attempts_max` and `deadline` are not used).
    pub error_backoff: RetryPolicy,
}

impl Default for QueueConsumerConfig {
    fn default() -> QueueConsumerConfig {
        QueueConsumerConfig {
            share_group: None,
            visibility_timeout_ms: 0,
            prefetch: 256,
            receive_batch: 256,
            wait: Duration::from_secs(1),
            partitions_refresh: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            error_backoff: RetryPolicy {
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                ..RetryPolicy::default()
            },
        }
    }
}

impl QueueConsumerConfig {
    fn validate(&self) -> Result<()> {
        if let Some(g) = &self.share_group {
            check_name("share group", g)?;
        }
        let v = self.visibility_timeout_ms;
        if v != 0
            && !(QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX).contains(&v)
        {
            return Err(Error::InvalidArgument(format!(
                "visibility timeout {v} ms: must be 0 (the queue's) or \
                 {QUEUE_VISIBILITY_TIMEOUT_MS_MIN} to {QUEUE_VISIBILITY_TIMEOUT_MS_MAX}"
            )));
        }
        if !(1..=QUEUE_RECEIVE_MESSAGES_MAX).contains(&self.receive_batch) {
            return Err(Error::InvalidArgument(format!(
                "receive batch must be 1 to {QUEUE_RECEIVE_MESSAGES_MAX}"
            )));
        }
        if self.prefetch > Semaphore::MAX_PERMITS {
            return Err(Error::InvalidArgument("prefetch too large".into()));
        }
        if self.wait > WAIT_MAX || self.request_timeout > WAIT_MAX {
            return Err(Error::InvalidArgument(format!(
                "wait and request timeout must be at most {} ms",
                WAIT_MAX.as_millis()
            )));
        }
        Ok(())
    }
}

/// The lease length in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// What receives and extends ask for (0: the queue's).
    pub(crate) request_ms: u32,
    /// How long a lease lasts.
    pub(crate) length: Duration,
}

impl Lease {
    /// Explicit default leases, for when the queue's cannot be read.
    pub(crate) fn fallback() -> Lease {
        Lease {
            request_ms: QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT,
            length: Duration::from_millis(u64::from(QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT)),
        }
    }
}

/// What the consumer's tasks share.
pub(crate) struct Core {
    pub(crate) client: Client,
    pub(crate) queue: String,
    pub(crate) consumer: String,
    pub(crate) config: QueueConsumerConfig,
    lease: OnceLock<Lease>,
    shutdown: watch::Sender<bool>,
    /// Free places of the prefetch buffer (a receive task takes them before it
    /// receives; `receive` gives them back as it takes messages out).
    pub(crate) slots: Semaphore,
    pub(crate) buffer: mpsc::UnboundedSender<QueueDelivery>,
    /// The latest error of a background task, for the next `receive` that has
    /// nothing else to return.
    pending_error: Mutex<Option<Error>>,
    pub(crate) leases: LeaseRegistry,
    /// Where the next direct receive starts (rotates over the partitions).
    pub(crate) next_partition: AtomicU32,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("queue", &self.queue)
            .field("consumer", &self.consumer)
            .field("lease", &self.lease.get())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The lease in force (the fallback before `start` resolved it).
    pub(crate) fn lease(&self) -> Lease {
        self.lease.get().copied().unwrap_or_else(Lease::fallback)
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once the consumer is closed.
    pub(crate) async fn closed(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone: closed as well.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    pub(crate) fn report_error(&self, err: Error) {
        *lock(&self.pending_error) = Some(err);
    }

    pub(crate) fn take_error(&self) -> Option<Error> {
        lock(&self.pending_error).take()
    }

    pub(crate) fn target(&self) -> SettleTarget<'_> {
        SettleTarget {
            client: &self.client,
            queue: &self.queue,
            share_group: self.config.share_group.as_deref(),
            timeout: self.config.request_timeout,
            retry: self.config.retry,
        }
    }

    pub(crate) async fn settle(
        &self,
        op: &SettleOp,
        receipts: &[Receipt],
    ) -> Result<Vec<ReceiptOutcome>> {
        settle(self.target(), op, receipts).await
    }

    /// The lease length: the configured one, else the queue's.
    async fn resolve_lease(&self) -> Result<Lease> {
        let v = self.config.visibility_timeout_ms;
        if v != 0 {
            return Ok(Lease {
                request_ms: v,
                length: Duration::from_millis(u64::from(v)),
            });
        }
        let request = DescribeQueueRequest {
            queue: self.queue.clone(),
            share_group: self.config.share_group.clone(),
        };
        match self
            .client
            .call_any::<_, QueueDescription>("describe_queue", &request)
            .await
        {
            Ok(d) => {
                let ms = d.settings.visibility_timeout_ms.clamp(
                    QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
                    QUEUE_VISIBILITY_TIMEOUT_MS_MAX,
                );
                Ok(Lease {
                    request_ms: 0,
                    length: Duration::from_millis(u64::from(ms)),
                })
            }
            Err(err) if err.code() == Some(ErrorCode::PermissionDenied) => {
                tracing::warn!(
                    queue = %self.queue,
                    error = %err,
                    "cannot read the queue's visibility timeout; asking for the default"
                );
                Ok(Lease::fallback())
            }
            Err(err) => Err(err),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    core: Arc<Core>,
    /// The prefetch buffer's receiving end (one `receive` at a time takes from it).
    buffer: tokio::sync::Mutex<mpsc::UnboundedReceiver<QueueDelivery>>,
    started: tokio::sync::OnceCell<()>,
    /// The receive supervisor (it owns the per-partition tasks).
    receiver: Mutex<Option<JoinHandle<()>>>,
    /// The lease extension task, once a lease is kept alive.
    extender: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.core.shutdown.send_replace(true);
        for slot in [&self.receiver, &self.extender] {
            if let Some(task) = lock(slot).take() {
                task.abort();
            }
        }
    }
}

/// A consumer of one queue (or one share group of a topic) under one name. Cheap to
/// clone: clones share the buffer, the tasks and the leases kept alive. Dropping the
/// last clone stops its tasks without releasing buffered messages (they come back
/// when their leases run out): call [`QueueConsumer::close`] first.
#[derive(Clone)]
pub struct QueueConsumer {
    inner: Arc<Inner>,
}

impl fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("core", &self.inner.core)
            .finish_non_exhaustive()
    }
}

impl QueueConsumer {
    /// A consumer of `queue` named `consumer` with the default configuration
    /// (prefetch 256, the queue's visibility timeout). Nothing is received before the
    /// first [`QueueConsumer::receive`] (or [`QueueConsumer::run`]).
    pub fn new(client: Client, queue: &str, consumer: &str) -> Result<QueueConsumer> {
        QueueConsumer::with_config(client, queue, consumer, QueueConsumerConfig::default())
    }

    /// A consumer with explicit configuration.
    pub fn with_config(
        client: Client,
        queue: &str,
        consumer: &str,
        config: QueueConsumerConfig,
    ) -> Result<QueueConsumer> {
        check_name("queue", queue)?;
        check_name("consumer name", consumer)?;
        config.validate()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Core {
            client,
            queue: queue.to_string(),
            consumer: consumer.to_string(),
            slots: Semaphore::new(config.prefetch),
            config,
            lease: OnceLock::new(),
            shutdown: watch::Sender::new(false),
            buffer: tx,
            pending_error: Mutex::new(None),
            leases: LeaseRegistry::default(),
            next_partition: AtomicU32::new(0),
        };
        Ok(QueueConsumer {
            inner: Arc::new(Inner {
                core: Arc::new(core),
                buffer: tokio::sync::Mutex::new(rx),
                started: tokio::sync::OnceCell::new(),
                receiver: Mutex::new(None),
                extender: Mutex::new(None),
            }),
        })
    }

    /// The queue (or topic).
    pub fn queue(&self) -> &str {
        &self.inner.core.queue
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.inner.core.consumer
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConsumerConfig {
        &self.inner.core.config
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// Whether [`QueueConsumer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }

    /// The lease length in force (known after the first receive).
    pub fn lease_length(&self) -> Duration {
        self.inner.core.lease().length
    }

    /// Resolve the lease length and, with prefetch, start receiving in the
    /// background. `receive` and `run` call it; calling it first only starts earlier.
    /// Fails for an unknown queue, or outside a tokio runtime.
    pub async fn start(&self) -> Result<()> {
        let core = &self.inner.core;
        if core.is_closed() {
            return Err(Error::ConsumerClosed);
        }
        self.inner
            .started
            .get_or_try_init(|| async {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::InvalidArgument("a QueueConsumer needs a tokio runtime".into())
                })?;
                let lease = core.resolve_lease().await?;
                let _ = core.lease.set(lease);
                if core.config.prefetch > 0 {
                    let task = runtime.spawn(receiver::supervise(Arc::clone(core)));
                    *lock(&self.inner.receiver) = Some(task);
                }
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    /// Up to `max` messages, waiting up to `wait` for the first. Empty when none came
    /// in time. Each message is leased to this consumer until
    /// [`QueueDelivery::lease_expires_at`]: settle it before then (or keep it alive).
    /// A message whose lease ran out while it waited in the prefetch buffer is dropped,
    /// not returned: the broker hands it out again (it may already have, to another
    /// consumer that acked it), so returning it could process an acked message twice.
    /// Keep `prefetch` small next to what the handlers settle within a lease.
    /// An error of the background receive is returned by a call that has no message
    /// to return; fails with [`Error::ConsumerClosed`] once closed.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<QueueDelivery>> {
        self.start().await?;
        let wait = wait.min(WAIT_MAX);
        if max == 0 {
            return Ok(Vec::new());
        }
        let core = &self.inner.core;
        if core.config.prefetch == 0 {
            return receiver::receive_direct(core, max, wait).await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut buffer = self.inner.buffer.lock().await;
        let mut out = Vec::new();
        // A message whose lease ran out in the buffer is dropped: another consumer
        // may hold (or have acked) it by now. The broker redelivers it (that delivery
        // counted toward max_deliveries).
        let take = |d: QueueDelivery, out: &mut Vec<QueueDelivery>| {
            core.slots.add_permits(1);
            if !d.lease_expired() {
                out.push(d);
            }
        };
        loop {
            while out.len() < max {
                match buffer.try_recv() {
                    Ok(d) => take(d, &mut out),
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if let Some(err) = core.take_error() {
                return Err(err);
            }
            if core.is_closed() {
                return Err(Error::ConsumerClosed);
            }
            tokio::select! {
                d = buffer.recv() => match d {
                    Some(d) => take(d, &mut out),
                    None => return Err(Error::ConsumerClosed),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(out),
                _ = core.closed() => return Err(Error::ConsumerClosed),
            }
        }
    }

    /// Keep `delivery`'s lease alive until the returned guard is dropped: it is
    /// extended (by the lease length) every third of the lease length, in one request
    /// per partition for every lease this consumer keeps. Extension stops once the
    /// broker refuses it ([`LeaseGuard::lost`]).
    pub async fn keep_alive(&self, delivery: &QueueDelivery) -> Result<LeaseGuard> {
        // Leases are kept alive after a close too (handlers still running).
        if self.inner.started.get().is_none() {
            self.start().await?;
        }
        let core = &self.inner.core;
        {
            let mut extender = lock(&self.inner.extender);
            if extender.is_none() {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    Error::InvalidArgument("a QueueConsumer needs a tokio runtime".into())
                })?;
                *extender = Some(runtime.spawn(super::lease::extend_leases(Arc::clone(core))));
            }
        }
        Ok(LeaseGuard::register(Arc::clone(core), delivery))
    }

    /// Stop receiving: the background receives end after the one in flight (within
    /// the long-poll wait plus `request_timeout`), and the messages received but not
    /// returned are nacked without delay, so that other consumers get them at once.
    /// Settling and keeping alive still work; `receive` fails with
    /// [`Error::ConsumerClosed`]. Idempotent.
    pub async fn close(&self) -> Result<()> {
        let core = &self.inner.core;
        core.shutdown.send_replace(true);
        let task = lock(&self.inner.receiver).take();
        if let Some(mut task) = task {
            let bound = (core.config.wait + core.config.request_timeout)
                .saturating_add(Duration::from_secs(1));
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                task.abort();
            }
        }
        let mut left = Vec::new();
        {
            let mut buffer = self.inner.buffer.lock().await;
            while let Ok(d) = buffer.try_recv() {
                core.slots.add_permits(1);
                left.push(d.receipt);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        let op = SettleOp::Nack {
            delay_ms: Some(0),
            reason: "consumer closed".into(),
        };
        core.settle(&op, &left).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked() {
        let ok = QueueConsumerConfig::default;
        assert!(ok().validate().is_ok());
        let bad = [
            QueueConsumerConfig {
                visibility_timeout_ms: 99,
                ..ok()
            },
            QueueConsumerConfig {
                visibility_timeout_ms: QUEUE_VISIBILITY_TIMEOUT_MS_MAX + 1,
                ..ok()
            },
            QueueConsumerConfig {
                receive_batch: 0,
                ..ok()
            },
            QueueConsumerConfig {
                receive_batch: QUEUE_RECEIVE_MESSAGES_MAX + 1,
                ..ok()
            },
            QueueConsumerConfig {
                share_group: Some(String::new()),
                ..ok()
            },
            QueueConsumerConfig {
                wait: Duration::MAX,
                ..ok()
            },
            QueueConsumerConfig {
                request_timeout: Duration::MAX,
                ..ok()
            },
            QueueConsumerConfig {
                prefetch: usize::MAX,
                ..ok()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let direct = QueueConsumerConfig {
            prefetch: 0,
            visibility_timeout_ms: QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
            ..ok()
        };
        assert!(direct.validate().is_ok());
    }

    #[test]
    fn the_fallback_lease_is_explicit() {
        let lease = Lease::fallback();
        assert_eq!(lease.request_ms, QUEUE_VISIBILITY_TIMEOUT_MS_DEFAULT);
        assert_eq!(lease.length, Duration::from_secs(30));
    }
}
