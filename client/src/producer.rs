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
//! Cost per record: `send` reads the clock once (the record's timestamp), takes one
//! buffer permit, locks the producer's queues twice (the topic's partition count, which
//! it takes from the client's metadata cache at most every 100 ms, then the batch), and
//! appends the record to its batch's buffer; the topic name is shared (`Arc<str>`) by
//! its queues and jobs, never copied per record. With a key ring
//! ([`ProducerConfig::encryption`]) it also seals the value first (the ring's read
//! lock, one random nonce, one AEAD pass into a new buffer), outside the queues' lock.
//! The records of a batch share one completion (outcome, time of the answer, the
//! wakers of the tasks that wait); a [`Delivery`] is that completion plus the record's
//! index, and resolves to the batch's base offset plus that index.
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
//! the producer's last 8 batches on that partition with their offsets, plus the ranges
//! of sequences it applied) and answers with the first copy's offset instead of storing
//! it again. A retry of an older batch the partition holds gets `DuplicateSequence`
//! (not stored again). With `idempotence` off, a retried
//! batch can be stored twice.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use neo_protocol::api::{Acks, ProduceRequest, ProduceResponse, ProducerStamp};
use qiss::batch::{BatchBuilder, Compression, HEADER_LEN};
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::client::Client;
use crate::encryption::{ENCRYPTION_HEADER, SharedKeyring};
use crate::error::{Error, Result};
use crate::partitioner::Partitioner;
use crate::retry::RetryPolicy;

/// Largest batch a broker stores (the Raft layer's `RECORD_BATCH_BYTES_MAX`, 1 MiB);
/// `batch_size_bytes` is capped to it.
pub const BATCH_SIZE_BYTES_LIMIT: usize = 1024 * 1024;

/// How long `send` trusts a topic's partition count before asking the client's
/// metadata cache again (which refreshes it when it is stale or old).
const PARTITION_COUNT_TTL_MS: i64 = 100;

/// Initial buffer of a new batch (it grows up to `batch_size_bytes` as records come).
const BATCH_CAPACITY_INITIAL: usize = 16 * 1024;

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
    /// Client-side end-to-end encryption ([`crate::encryption`]): each value is sealed
    /// under the ring's current key before it joins a batch (a record that already
    /// carries `neo-enc` is sent as it is). `None` (the default): values go as given.
    pub encryption: Option<SharedKeyring>,
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
            encryption: None,
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
///
/// Every record of a batch shares one completion with the others (the batch's answer
/// and the time it came); a `Delivery` is that completion and the record's index in
/// the batch, so its offset is the batch's base offset plus the index.
pub struct Delivery {
    batch: Arc<BatchCompletion>,
    index: u32,
    /// Where this delivery's waker sits in the batch's waker list, once polled.
    waker_slot: Option<usize>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.batch.partition)
            .field("index", &self.index)
            .field("done", &self.batch.outcome.get().is_some())
            .finish()
    }
}

impl Delivery {
    /// The outcome if the batch is already answered (or failed), without waiting.
    pub fn result(&self) -> Option<Result<RecordMetadata>> {
        self.batch
            .outcome
            .get()
            .map(|(outcome, _)| outcome.record(self.batch.partition, self.index))
    }

    /// When the producer got the broker's answer for this record's batch (or gave up
    /// on it); `None` while it is pending. With `acks = none`: when the batch was
    /// handed over. Lets a caller measure a record's latency exactly (send call ->
    /// answer) without awaiting every `Delivery` as it completes.
    pub fn completed_at(&self) -> Option<std::time::Instant> {
        self.batch.outcome.get().map(|(_, at)| *at)
    }
}

impl Future for Delivery {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.result() {
            return Poll::Ready(result);
        }
        let this = &mut *self;
        let mut wakers = this.batch.lock_wakers();
        // Completion sets the outcome before it takes the wakers (under this lock),
        // so either it is visible here or our waker is in the list it takes.
        if let Some((outcome, _)) = this.batch.outcome.get() {
            return Poll::Ready(outcome.record(this.batch.partition, this.index));
        }
        match this.waker_slot {
            Some(slot) if slot < wakers.len() => {
                if !wakers[slot].will_wake(cx.waker()) {
                    wakers[slot] = cx.waker().clone();
                }
            }
            _ => {
                this.waker_slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// How a batch ended.
#[derive(Debug)]
enum Outcome {
    /// Acknowledged; the base offset (`None` with `acks = none`).
    Acked(Option<u64>),
    /// Failed for good.
    Failed(Arc<Error>),
    /// Dropped unsent (the producer and its runtime went away).
    Closed,
}

impl Outcome {
    fn record(&self, partition: u32, index: u32) -> Result<RecordMetadata> {
        match self {
            Outcome::Acked(base) => Ok(RecordMetadata {
                partition,
                offset: base.map(|b| b + u64::from(index)),
            }),
            Outcome::Failed(err) => Err(Error::BatchFailed(Arc::clone(err))),
            Outcome::Closed => Err(Error::ProducerClosed),
        }
    }
}

/// The one completion every record of a batch shares.
#[derive(Debug)]
struct BatchCompletion {
    partition: u32,
    /// Set once, with the time it was set.
    outcome: OnceLock<(Outcome, std::time::Instant)>,
    /// Tasks waiting on a `Delivery` of this batch.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchCompletion {
    fn lock_wakers(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the outcome (the first call wins) and wake every waiting delivery.
    fn complete(&self, outcome: Outcome) {
        if self
            .outcome
            .set((outcome, std::time::Instant::now()))
            .is_err()
        {
            return;
        }
        let wakers = std::mem::take(&mut *self.lock_wakers());
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Completes a batch exactly once and gives its buffer permits back; if dropped first
/// (the job never ran: runtime shut down, producer dropped), the records get
/// `ProducerClosed`.
#[derive(Debug)]
struct Completer {
    completion: Arc<BatchCompletion>,
    buffer: Arc<Semaphore>,
    /// Buffer permits the batch's records hold.
    permits: usize,
}

impl Completer {
    fn complete(&mut self, outcome: Outcome) {
        self.completion.complete(outcome);
        self.buffer.add_permits(std::mem::take(&mut self.permits));
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.complete(Outcome::Closed);
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

/// FNV-1a: topic names are short and picked by the application, so `send`'s
/// per-record lookup needs no DoS-resistant (and slower) SipHash.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

#[derive(Debug, Default)]
struct State {
    /// Topic name -> its partitions' queues, indexed by partition.
    topics: HashMap<Arc<str>, TopicQueues, BuildHasherDefault<Fnv>>,
}

#[derive(Debug)]
struct TopicQueues {
    /// The topic's name, shared by its jobs and timers (never copied per record).
    name: Arc<str>,
    /// Partition count from the client's metadata and when it was read (ms since the
    /// epoch): `send` asks the metadata cache at most every [`PARTITION_COUNT_TTL_MS`]
    /// per topic instead of per record.
    partition_count: Option<(u32, i64)>,
    partitions: Vec<PartitionQueue>,
}

impl State {
    /// `topic`'s entry, created on first use.
    fn topic(&mut self, topic: &str) -> &mut TopicQueues {
        if !self.topics.contains_key(topic) {
            let name: Arc<str> = Arc::from(topic);
            self.topics.insert(
                Arc::clone(&name),
                TopicQueues {
                    name,
                    partition_count: None,
                    partitions: Vec::new(),
                },
            );
        }
        self.topics.get_mut(topic).expect("inserted above")
    }

    /// `topic`'s partition count if it was read from the metadata less than
    /// [`PARTITION_COUNT_TTL_MS`] before `now_ms` (a clock that went back counts as
    /// old).
    fn partition_count(&self, topic: &str, now_ms: i64) -> Option<u32> {
        let (count, at) = self.topics.get(topic)?.partition_count?;
        (0..PARTITION_COUNT_TTL_MS)
            .contains(&now_ms.wrapping_sub(at))
            .then_some(count)
    }

    /// The queue of `topic`/`partition`, created on first use, with the topic's name.
    fn queue(&mut self, topic: &str, partition: u32) -> (&Arc<str>, &mut PartitionQueue) {
        let t = self.topic(topic);
        let p = partition as usize;
        if t.partitions.len() <= p {
            t.partitions.resize_with(p + 1, PartitionQueue::default);
        }
        (&t.name, &mut t.partitions[p])
    }

    /// The queue of `topic`/`partition`, if it exists.
    fn existing(&mut self, topic: &str, partition: u32) -> Option<&mut PartitionQueue> {
        self.topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
    }
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
    completer: Completer,
    opened_at: Instant,
}

/// A batch taken out of its queue, to be sent by a job.
struct Job {
    topic: Arc<str>,
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
        config.buffer_records_max = config.buffer_records_max.clamp(1, Semaphore::MAX_PERMITS);
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
        self.send_ref(&record).await
    }

    /// [`Producer::send`] of a borrowed record: the record is copied into its batch
    /// and not kept, so a caller sending the same topic, key or value many times
    /// need not clone them per record.
    pub async fn send_ref(&self, record: &ProducerRecord) -> Result<Delivery> {
        let shared = &self.shared;
        // One clock read per record: its timestamp, and the age of the cached count.
        let now = now_ms();
        let cached = shared.lock().partition_count(&record.topic, now);
        let mut count = match cached {
            Some(count) => count,
            None => shared.fetch_partition_count(&record.topic, now).await?,
        };
        let mut chosen = shared
            .partitioner
            .choose(record.partition, record.key.as_deref(), count);
        if chosen.is_none() && cached.is_some() {
            // Out of range by the cached count: ask the metadata before refusing.
            count = shared.fetch_partition_count(&record.topic, now).await?;
            chosen = shared
                .partitioner
                .choose(record.partition, record.key.as_deref(), count);
        }
        let partition = chosen.ok_or_else(|| Error::UnknownPartition {
            topic: record.topic.clone(),
            partition: record.partition.unwrap_or(0),
            count,
        })?;
        // Sealed outside every lock; the batch gets the ciphertext and `neo-enc`.
        let sealed = match &shared.config.encryption {
            Some(ring) => ring
                .seal(&record.topic, &record.headers, &record.value)
                .map_err(|source| Error::Encrypt {
                    topic: record.topic.clone(),
                    source,
                })?,
            None => None,
        };
        let value: &[u8] = sealed.as_ref().map_or(&record.value, |s| &s.ciphertext);
        let permit = match shared.buffer.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => shared
                .buffer
                .acquire()
                .await
                .map_err(|_| Error::ProducerClosed)?,
            Err(TryAcquireError::Closed) => return Err(Error::ProducerClosed),
        };
        let timestamp = record.timestamp_ms.unwrap_or(now);
        let mut headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        if let Some(sealed) = &sealed {
            headers.push((ENCRYPTION_HEADER, sealed.header()));
        }
        let (delivery, jobs, linger_topic) = {
            let mut state = shared.lock();
            let (name, queue) = state.queue(&record.topic, partition);
            let batch_size = shared.config.batch_size_bytes;
            if let Some(open) = &queue.open {
                let grow =
                    open.builder
                        .record_len(timestamp, record.key.as_deref(), &headers, value);
                if open.builder.encoded_len() + grow > batch_size {
                    let full = queue.open.take().expect("checked above");
                    queue.ready.push_back(full);
                }
            }
            let mut linger_topic = None;
            if queue.open.is_none() {
                let mut builder =
                    BatchBuilder::with_capacity(batch_size.min(BATCH_CAPACITY_INITIAL));
                builder.records_length_max((BATCH_SIZE_BYTES_LIMIT - HEADER_LEN) as u32);
                queue.open = Some(OpenBatch {
                    builder,
                    completer: Completer {
                        completion: Arc::new(BatchCompletion {
                            partition,
                            outcome: OnceLock::new(),
                            wakers: Mutex::new(Vec::new()),
                        }),
                        buffer: Arc::clone(&shared.buffer),
                        permits: 0,
                    },
                    opened_at: Instant::now(),
                });
                if !shared.config.linger.is_zero() {
                    linger_topic = Some(Arc::clone(name));
                }
            }
            let open = queue.open.as_mut().expect("opened above");
            let pushed = open
                .builder
                .push(timestamp, record.key.as_deref(), &headers, value);
            if let Err(err) = pushed {
                if open.builder.is_empty() {
                    queue.open = None;
                }
                return Err(err.into()); // the permit goes back as it drops
            }
            // The batch holds the record's permit until it completes.
            permit.forget();
            open.completer.permits += 1;
            let delivery = Delivery {
                batch: Arc::clone(&open.completer.completion),
                index: open.builder.len() - 1,
                waker_slot: None,
            };
            if open.builder.encoded_len() >= batch_size {
                let full = queue.open.take().expect("open");
                queue.ready.push_back(full);
            }
            let name = Arc::clone(name);
            let jobs = shared.take_jobs(&name, partition, queue);
            (delivery, jobs, linger_topic)
        };
        for job in jobs {
            spawn_job(Arc::clone(&self.shared), job);
        }
        if let Some(topic) = linger_topic {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                tokio::time::sleep(shared.config.linger).await;
                shared.kick(&topic, partition);
            });
        }
        Ok(delivery)
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
            let keys: Vec<(Arc<str>, u32)> = {
                let state = shared.lock();
                state
                    .topics
                    .values()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .enumerate()
                            .filter(|(_, q)| !q.is_idle())
                            .map(move |(p, _)| (Arc::clone(&t.name), p as u32))
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

    /// `topic`'s partition count from the client (its metadata cache, refreshed as
    /// needed), remembered for the next records.
    async fn fetch_partition_count(&self, topic: &str, now_ms: i64) -> Result<u32> {
        let count = self.client.partition_count(topic).await?;
        self.lock().topic(topic).partition_count = Some((count, now_ms));
        Ok(count)
    }

    /// Dispatch what may go now on one partition.
    fn kick(self: &Arc<Self>, topic: &Arc<str>, partition: u32) {
        let jobs = {
            let mut state = self.lock();
            let Some(queue) = state.existing(topic, partition) else {
                return;
            };
            self.take_jobs(topic, partition, queue)
        };
        for job in jobs {
            spawn_job(Arc::clone(self), job);
        }
    }

    /// The batches of `queue` that may be sent now (see the module doc's rule).
    fn take_jobs(&self, topic: &Arc<str>, partition: u32, queue: &mut PartitionQueue) -> Vec<Job> {
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
                topic: Arc::clone(topic),
                partition,
                batch,
                sequence,
            });
        }
        jobs
    }

    /// A job ended: free its slot and dispatch what waits.
    fn job_done(self: &Arc<Self>, topic: &Arc<str>, partition: u32) {
        {
            let mut state = self.lock();
            if let Some(queue) = state.existing(topic, partition) {
                queue.inflight = queue.inflight.saturating_sub(1);
            }
        }
        self.kick(topic, partition);
        self.progress.notify_waiters();
    }
}

/// Margin past the retry policy's deadline plus one call timeout after which a batch
/// job is failed regardless of what it waits on.
const JOB_DEADLINE_SLACK: Duration = Duration::from_secs(5);

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
        mut completer,
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
                topic: topic.to_string(),
                partition,
                acks: config.acks,
                timeout_ms: config.produce_timeout.as_millis().min(u32::MAX as u128) as u32,
                producer: stamp,
                // The builder's own buffer, shared, not copied: encoding the request
                // copies it once, into the connection's out buffer.
                records: bytes,
            };
            if config.acks == Acks::None {
                // Nothing is awaited: the records count as sent once handed over.
                completer.complete(Outcome::Acked(None));
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
            // Every attempt and wait is bounded by the retry policy; this outer bound
            // guarantees that a batch (and the partition queue behind it) can never
            // wait forever, whatever a connection does.
            let job_deadline = config.retry.deadline + call_timeout + JOB_DEADLINE_SLACK;
            let sent = tokio::time::timeout(
                job_deadline,
                shared.client.call_partition::<_, ProduceResponse>(
                    &topic,
                    partition,
                    "produce",
                    &request,
                    call_timeout,
                    config.retry,
                ),
            )
            .await;
            match sent {
                Ok(result) => result.map(|resp| Some(resp.base_offset)),
                Err(_) => {
                    tracing::warn!(
                        %topic,
                        partition,
                        ?job_deadline,
                        "produce batch outlived its retry deadline; failing it"
                    );
                    Err(Error::DeadlineExceeded {
                        deadline: job_deadline,
                        last: Box::new(Error::Transport(neo_protocol::Error::Timeout {
                            after: job_deadline,
                        })),
                    })
                }
            }
        }
    };
    // Every record of the batch: base offset + its index in the batch.
    completer.complete(match outcome {
        Ok(base) => Outcome::Acked(base),
        Err(err) => Outcome::Failed(Arc::new(err)),
    });
    shared.job_done(&topic, partition);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
