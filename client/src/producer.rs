//! [`Producer`]: batches records per partition into Qiss record batches and sends each
//! batch to its partition's leader.
//!
//! ```text
//! send(record) ─ partition (explicit | murmur2(key) | round robin)
//!      │         take a buffer permit (backpressure at buffer_records_max)
//!      ▼
//! PartitionQueue { open batch ─(full)─▶ ready batches ─(slot free)─▶ in flight ≤ N }
//!      │                 └─(linger elapsed / flush, slot free)──────────▲
//!      ▼
//! Delivery (a future) ◀── job: build (zstd) → produce to the leader, retried on
//!                          NotLeader / dead connection / no leader, with backoff
//!                          ◀── base_offset + index in the batch
//! ```
//!
//! Batching rule: a partition's open batch is sent when it reaches
//! `batch_size_bytes`, or when `linger` has passed since its first record, or on
//! [`Producer::flush`], but only while the partition has fewer than
//! `partition_inflight_batches_max` batches in flight. Records that arrive while every
//! slot is busy join the open batch, so load batches itself even with `linger = 0`.
//!
//! Ordering: with `partition_inflight_batches_max = 1` (the default) a partition's
//! records are appended in the order `send` was called, retries included. With more
//! slots a retried batch can land after a later one.
//!
//! Duplicates: a batch whose reply was lost (leader killed after commit, timeout) is
//! sent again. With `idempotence` on (the default), every batch carries a
//! [`ProducerStamp`] (random producer id, per-partition sequence) in the request and in
//! the batch header; the partition leader recognises a batch it already holds (among
//! the producer's last 8 batches on that partition, the broker's `RECENT_BATCHES`) and
//! answers with the first copy's offset instead of storing it again. A retry of an
//! older batch the partition holds gets `DuplicateSequence` (not stored again). With `idempotence` off, a retried
//! batch can be stored twice.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use neo_protocol::api::{Acks, ProduceRequest, ProduceResponse, ProducerStamp};
use qiss::batch::{BatchBuilder, Compression, HEADER_LEN};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::partitioner::Partitioner;
use crate::retry::RetryPolicy;

/// Largest batch a broker stores (the Raft layer's `RECORD_BATCH_BYTES_MAX`, 1 MiB);
/// `batch_size_bytes` is capped to it.
pub const BATCH_SIZE_BYTES_LIMIT: usize = 1024 * 1024;

/// Every knob of a [`Producer`], named, units last.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker answers (default: after commit on a quorum).
    pub acks: Acks,
    /// A batch is sent once its encoded size reaches this (capped at
    /// [`BATCH_SIZE_BYTES_LIMIT`]). A single record larger than this gets a batch of
    /// its own.
    pub batch_size_bytes: usize,
    /// How long an open batch may wait for more records before it is sent.
    pub linger: Duration,
    /// Compression of the records section (`Compression::Zstd` or none).
    pub compression: Compression,
    /// Batches in flight per partition. 1 keeps send order across retries.
    pub partition_inflight_batches_max: usize,
    /// Records accepted by `send` but not yet delivered; `send` waits beyond it.
    pub buffer_records_max: usize,
    /// How long the leader may wait for replication (sent as `timeout_ms`).
    pub produce_timeout: Duration,
    /// Retry of a batch (bounds the time to deliver or fail it).
    pub retry: RetryPolicy,
    /// Stamp batches with a producer id and per-partition sequence numbers.
    pub idempotence: bool,
}

impl Default for ProducerConfig {
    fn default() -> ProducerConfig {
        ProducerConfig {
            acks: Acks::All,
            batch_size_bytes: 256 * 1024,
            linger: Duration::from_millis(1),
            compression: Compression::None,
            partition_inflight_batches_max: 1,
            buffer_records_max: 256 * 1024,
            produce_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            idempotence: true,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic name.
    pub topic: String,
    /// Explicit partition; else by key hash, else round robin.
    pub partition: Option<u32>,
    /// Key (also picks the partition when `partition` is `None`).
    pub key: Option<Bytes>,
    /// Value.
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; now if `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: value.into(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// With a key.
    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    /// With an explicit partition.
    pub fn partition(mut self, partition: u32) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }

    /// With one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// With an explicit timestamp.
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> ProducerRecord {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition.
    pub partition: u32,
    /// Offset; `None` with `acks = none` (nothing was awaited).
    pub offset: Option<u64>,
}

/// The outcome of one `send`: resolves when the record's batch is acknowledged (or
/// failed for good).
#[derive(Debug)]
pub struct Delivery {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::ProducerClosed)))
    }
}

/// Batches and sends records. Cheap to clone: clones share batches and connections.
#[derive(Clone, Debug)]
pub struct Producer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    config: ProducerConfig,
    partitioner: Partitioner,
    state: Mutex<State>,
    /// One permit per record accepted and not yet delivered.
    buffer: Arc<Semaphore>,
    /// Woken whenever a batch completes (for `flush`).
    progress: Notify,
    /// While non-zero, linger is ignored (a flush is waiting).
    flushing: AtomicUsize,
    producer_id: u64,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, HashMap<u32, PartitionQueue>>,
}

#[derive(Debug, Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<OpenBatch>,
    inflight: usize,
    /// Sequence of the next batch's first record (idempotence).
    next_sequence: u32,
}

impl PartitionQueue {
    fn is_idle(&self) -> bool {
        self.open.is_none() && self.ready.is_empty() && self.inflight == 0
    }
}

#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    opened_at: Instant,
}

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Result<RecordMetadata>>,
    _permit: OwnedSemaphorePermit,
}

/// A batch taken out of its queue, to be sent by a job.
struct Job {
    topic: String,
    partition: u32,
    batch: OpenBatch,
    sequence: u32,
}

impl Producer {
    /// A producer on `client` with the default configuration.
    pub fn new(client: Client) -> Producer {
        Producer::with_config(client, ProducerConfig::default())
    }

    /// A producer with explicit configuration.
    pub fn with_config(client: Client, mut config: ProducerConfig) -> Producer {
        config.batch_size_bytes = config.batch_size_bytes.clamp(1, BATCH_SIZE_BYTES_LIMIT);
        config.partition_inflight_batches_max = config.partition_inflight_batches_max.max(1);
        config.buffer_records_max = config.buffer_records_max.max(1);
        Producer {
            shared: Arc::new(Shared {
                client,
                partitioner: Partitioner::default(),
                state: Mutex::new(State::default()),
                buffer: Arc::new(Semaphore::new(config.buffer_records_max)),
                progress: Notify::new(),
                flushing: AtomicUsize::new(0),
                // Positive as an i64 (the batch header's type); 0 is avoided.
                producer_id: (fastrand::u64(..) >> 1).max(1),
                config,
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    /// Queue a record. Returns once the record is in a batch (waiting first if
    /// `buffer_records_max` records are pending); the returned [`Delivery`] resolves
    /// when the broker acknowledged it. Fails right away for an unknown topic or
    /// partition or a record that cannot fit a batch.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery> {
        let shared = &self.shared;
        let count = shared.client.partition_count(&record.topic).await?;
        let partition = shared
            .partitioner
            .choose(record.partition, record.key.as_deref(), count)
            .ok_or_else(|| Error::UnknownPartition {
                topic: record.topic.clone(),
                partition: record.partition.unwrap_or(0),
                count,
            })?;
        let permit = Arc::clone(&shared.buffer)
            .acquire_owned()
            .await
            .map_err(|_| Error::ProducerClosed)?;
        let (tx, rx) = oneshot::channel();
        let timestamp = record.timestamp_ms.unwrap_or_else(now_ms);
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        let (jobs, linger_timer) = {
            let mut state = shared.lock();
            let queue = state
                .topics
                .entry(record.topic.clone())
                .or_default()
                .entry(partition)
                .or_default();
            let batch_size = shared.config.batch_size_bytes;
            if let Some(open) = &queue.open {
                let grow = open.builder.record_len(
                    timestamp,
                    record.key.as_deref(),
                    &headers,
                    &record.value,
                );
                if open.builder.encoded_len() + grow > batch_size {
                    let full = queue.open.take().expect("checked above");
                    queue.ready.push_back(full);
                }
            }
            let mut linger_timer = false;
            if queue.open.is_none() {
                let mut builder = BatchBuilder::new();
                builder.records_length_max((BATCH_SIZE_BYTES_LIMIT - HEADER_LEN) as u32);
                queue.open = Some(OpenBatch {
                    builder,
                    waiters: Vec::new(),
                    opened_at: Instant::now(),
                });
                linger_timer = !shared.config.linger.is_zero();
            }
            let open = queue.open.as_mut().expect("opened above");
            let pushed =
                open.builder
                    .push(timestamp, record.key.as_deref(), &headers, &record.value);
            if let Err(err) = pushed {
                if open.builder.is_empty() {
                    queue.open = None;
                }
                return Err(err.into());
            }
            open.waiters.push(Waiter {
                tx,
                _permit: permit,
            });
            if open.builder.encoded_len() >= batch_size {
                let full = queue.open.take().expect("open");
                queue.ready.push_back(full);
            }
            (
                shared.take_jobs(&record.topic, partition, queue),
                linger_timer,
            )
        };
        for job in jobs {
            spawn_job(Arc::clone(&self.shared), job);
        }
        if linger_timer {
            let shared = Arc::clone(&self.shared);
            let topic = record.topic;
            tokio::spawn(async move {
                tokio::time::sleep(shared.config.linger).await;
                shared.kick(&topic, partition);
            });
        }
        Ok(Delivery { rx })
    }

    /// [`Producer::send`] and wait for the acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Send every open batch now (ignoring linger) and wait until every record sent
    /// before this call is delivered or failed.
    pub async fn flush(&self) {
        let shared = &self.shared;
        shared.flushing.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let keys: Vec<(String, u32)> = {
                let state = shared.lock();
                state
                    .topics
                    .iter()
                    .flat_map(|(t, ps)| {
                        ps.iter()
                            .filter(|(_, q)| !q.is_idle())
                            .map(move |(p, _)| (t.clone(), *p))
                    })
                    .collect()
            };
            if keys.is_empty() {
                break;
            }
            for (topic, partition) in keys {
                shared.kick(&topic, partition);
            }
            notified.await;
        }
        shared.flushing.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Dispatch what may go now on one partition.
    fn kick(self: &Arc<Self>, topic: &str, partition: u32) {
        let jobs = {
            let mut state = self.lock();
            let Some(queue) = state
                .topics
                .get_mut(topic)
                .and_then(|ps| ps.get_mut(&partition))
            else {
                return;
            };
            self.take_jobs(topic, partition, queue)
        };
        for job in jobs {
            spawn_job(Arc::clone(self), job);
        }
    }

    /// The batches of `queue` that may be sent now (see the module doc's rule).
    fn take_jobs(&self, topic: &str, partition: u32, queue: &mut PartitionQueue) -> Vec<Job> {
        let mut jobs = Vec::new();
        let linger = self.config.linger;
        let flushing = self.flushing.load(Ordering::SeqCst) > 0;
        while queue.inflight < self.config.partition_inflight_batches_max {
            let batch = if let Some(batch) = queue.ready.pop_front() {
                batch
            } else if queue.open.as_ref().is_some_and(|open| {
                flushing || linger.is_zero() || open.opened_at.elapsed() >= linger
            }) {
                queue.open.take().expect("checked")
            } else {
                break;
            };
            let sequence = queue.next_sequence;
            queue.next_sequence = sequence.wrapping_add(batch.builder.len());
            queue.inflight += 1;
            jobs.push(Job {
                topic: topic.to_string(),
                partition,
                batch,
                sequence,
            });
        }
        jobs
    }

    /// A job ended: free its slot and dispatch what waits.
    fn job_done(self: &Arc<Self>, topic: &str, partition: u32) {
        {
            let mut state = self.lock();
            if let Some(queue) = state
                .topics
                .get_mut(topic)
                .and_then(|ps| ps.get_mut(&partition))
            {
                queue.inflight = queue.inflight.saturating_sub(1);
            }
        }
        self.kick(topic, partition);
        self.progress.notify_waiters();
    }
}

fn spawn_job(shared: Arc<Shared>, job: Job) {
    tokio::spawn(run_job(shared, job));
}

async fn run_job(shared: Arc<Shared>, job: Job) {
    let Job {
        topic,
        partition,
        batch,
        sequence,
    } = job;
    let OpenBatch {
        mut builder,
        waiters,
        ..
    } = batch;
    let config = &shared.config;
    let stamp = config.idempotence.then_some(ProducerStamp {
        producer_id: shared.producer_id,
        epoch: 0,
        sequence,
    });
    if let Some(stamp) = stamp {
        builder.producer(stamp.producer_id as i64, 0, stamp.sequence as i32);
    }
    builder.compression(config.compression);
    let outcome = match builder.build() {
        Err(err) => Err(Error::from(err)),
        Ok(bytes) => {
            let request = ProduceRequest {
                topic: topic.clone(),
                partition,
                acks: config.acks,
                timeout_ms: config.produce_timeout.as_millis().min(u32::MAX as u128) as u32,
                producer: stamp,
                records: bytes.to_vec(),
            };
            if config.acks == Acks::None {
                // Nothing is awaited: the records count as sent once handed over.
                resolve(waiters, partition, Ok(None));
                let once: Result<ProduceResponse> = shared
                    .client
                    .call_partition_once(
                        &topic,
                        partition,
                        "produce",
                        &request,
                        config.produce_timeout,
                    )
                    .await;
                if let Err(err) = once {
                    tracing::debug!(%topic, partition, error = %err, "acks=none produce failed");
                }
                shared.job_done(&topic, partition);
                return;
            }
            let call_timeout = config.produce_timeout + Duration::from_secs(2);
            shared
                .client
                .call_partition::<_, ProduceResponse>(
                    &topic,
                    partition,
                    "produce",
                    &request,
                    call_timeout,
                    config.retry,
                )
                .await
                .map(|resp| Some(resp.base_offset))
        }
    };
    resolve(waiters, partition, outcome);
    shared.job_done(&topic, partition);
}

/// Tell every waiter of a batch where its record went (base offset + index).
fn resolve(waiters: Vec<Waiter>, partition: u32, outcome: Result<Option<u64>>) {
    match outcome {
        Ok(base) => {
            for (i, waiter) in waiters.into_iter().enumerate() {
                let offset = base.map(|b| b + i as u64);
                let _ = waiter.tx.send(Ok(RecordMetadata { partition, offset }));
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for waiter in waiters {
                let _ = waiter.tx.send(Err(Error::BatchFailed(Arc::clone(&err))));
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
