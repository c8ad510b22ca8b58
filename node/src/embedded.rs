//! The broker in process (the mission's embedded API): [`Broker::start`] opens a
//! single-node broker over real storage in a directory, with no sockets, and its queue
//! calls (`create_queue`, `produce_to_queue`, `consume_from_queue`, `ack`, `nack`) run the
//! same `neo_broker::Broker` operations a server node runs (`neo_broker::Embedded`):
//! no second implementation.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use neo_node::embedded::{Broker, EmbeddedConfig};
//! let broker = Broker::start(EmbeddedConfig::new("./neo-embedded")).await?;
//! broker.create_queue("jobs", 1).await?;
//! broker.produce_to_queue("jobs", b"resize 42.png").await?;
//! for job in broker.consume_from_queue("jobs", "worker-1").await? {
//!     broker.ack("jobs", &[job.receipt]).await?;
//! }
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use neo_broker::{BrokerLimits, Embedded};
use neo_protocol::RpcError;
use neo_protocol::api::{DeadLetter, QueueMessage, QueueSettings, Receipt, ReceiptOutcome};

/// Most messages one [`Broker::consume_from_queue`] returns.
pub const CONSUME_BATCH_MAX: u32 = 100;
/// How long [`Broker::consume_from_queue`] waits for a first message, in milliseconds.
pub const CONSUME_WAIT_MS: u32 = 1_000;

/// Where and how an embedded broker runs.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Its data directory (created if missing; reopened with its data).
    pub dir: PathBuf,
    /// The limits of its operations.
    pub limits: BrokerLimits,
}

impl EmbeddedConfig {
    /// A broker in `dir` with the default limits.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            dir: dir.into(),
            limits: BrokerLimits::default(),
        }
    }
}

/// A single-node broker running in this process.
pub struct Broker {
    inner: Embedded,
}

impl Broker {
    /// Opens (or reopens) the broker in `config.dir` and elects it.
    pub async fn start(config: EmbeddedConfig) -> neo_broker::Result<Broker> {
        Ok(Broker {
            inner: Embedded::start(&config.dir, config.limits).await?,
        })
    }

    /// Creates a queue of `partitions` partitions with the default settings and its
    /// dead-letter queue `name.dlq`.
    pub async fn create_queue(&self, name: &str, partitions: u32) -> Result<(), RpcError> {
        self.create_queue_with(
            name,
            partitions,
            QueueSettings::default(),
            DeadLetter::Default,
        )
        .await
    }

    /// Creates a queue with explicit settings.
    pub async fn create_queue_with(
        &self,
        name: &str,
        partitions: u32,
        settings: QueueSettings,
        dead_letter: DeadLetter,
    ) -> Result<(), RpcError> {
        self.inner
            .create_queue(name, partitions, settings, dead_letter)
            .await
            .map(|_| ())
    }

    /// Sends one message, answered once it is on disk (fsync); returns (partition,
    /// offset).
    pub async fn produce_to_queue(
        &self,
        queue: &str,
        value: &[u8],
    ) -> Result<(u32, u64), RpcError> {
        self.inner.produce_to_queue(queue, None, value).await
    }

    /// Receives up to [`CONSUME_BATCH_MAX`] messages leased to `consumer`, waiting up
    /// to [`CONSUME_WAIT_MS`] for the first.
    pub async fn consume_from_queue(
        &self,
        queue: &str,
        consumer: &str,
    ) -> Result<Vec<QueueMessage>, RpcError> {
        self.inner
            .consume_from_queue(queue, consumer, CONSUME_BATCH_MAX, CONSUME_WAIT_MS)
            .await
    }

    /// Acks deliveries; one outcome per receipt.
    pub async fn ack(
        &self,
        queue: &str,
        receipts: &[Receipt],
    ) -> Result<Vec<ReceiptOutcome>, RpcError> {
        self.inner.ack(queue, receipts).await
    }

    /// Nacks deliveries (redelivered after `delay_ms`, else the queue's backoff).
    pub async fn nack(
        &self,
        queue: &str,
        receipts: &[Receipt],
        delay_ms: Option<u32>,
        reason: &str,
    ) -> Result<Vec<ReceiptOutcome>, RpcError> {
        self.inner.nack(queue, receipts, delay_ms, reason).await
    }

    /// The embedded broker underneath (every other operation, with a security context).
    pub fn embedded(&self) -> &Embedded {
        &self.inner
    }

    /// Stops the broker; its data stays in the directory.
    pub async fn shutdown(self) {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mission_s_embedded_queue_calls_work_end_to_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let broker = Broker::start(EmbeddedConfig::new(dir.path()))
            .await
            .expect("start");
        broker.create_queue("jobs", 2).await.expect("create");
        for i in 0..10 {
            broker
                .produce_to_queue("jobs", format!("job-{i}").as_bytes())
                .await
                .expect("send");
        }
        let mut done = 0;
        while done < 10 {
            let got = broker
                .consume_from_queue("jobs", "w")
                .await
                .expect("consume");
            assert!(!got.is_empty(), "messages left");
            let receipts: Vec<_> = got.iter().map(|m| m.receipt).collect();
            let outcomes = broker.ack("jobs", &receipts).await.expect("ack");
            assert!(outcomes.iter().all(|o| *o == ReceiptOutcome::Ok));
            done += got.len();
        }
        assert_eq!(done, 10);
        broker.shutdown().await;
    }
}
