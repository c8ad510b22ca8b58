//! The queue workload: a queue (`chaos-queue`, dead letters to `chaos-queue.dlq`)
//! with producers and competing workers running beside the other workloads while the
//! faults run, then, after the other workloads' checks, a bounded drain and a read of
//! the dead-letter queue. [`crate::queue_check`] judges what it recorded.
//!
//! - Setup ([`create_queue`]): the topic's partitions, its replication factor, a
//!   [`VISIBILITY_TIMEOUT_MS`] lease (short, so that a lease lost to a fault or a
//!   "crashed" worker comes back within the run) and [`MAX_DELIVERIES`].
//! - [`QUEUE_PRODUCERS`] producers, each with its own client and [`QueueProducer`]
//!   (`acks=all`, idempotence on), send unique values `{run}:q{producer}:{seq}` (no
//!   key: round robin over the partitions) at `--queue-rate` in all, until
//!   [`SEND_STOP_LEAD`] before the cool-down ends. One message in [`KIND_EVERY`] is
//!   *poison* (`:poison`: the workers always nack it, so it must end in the DLQ after
//!   `max_deliveries`) and one a *crash* (`:crash`: left unsettled on its first
//!   delivery, as if the worker died while processing it; its lease runs out and it
//!   comes back). Every send is recorded like the topic's produces: ok (committed,
//!   with partition and offset), fail (refused before sending) or unknown.
//! - `--queue-workers` workers (`worker.rs`), each with its own client and
//!   [`QueueConsumer`](neo_client::QueueConsumer) without prefetch (so that a
//!   delivery's lease was granted during the `receive` that returned it), receive up
//!   to [`RECEIVE_BATCH`], record every delivery, nack the poison, skip the crashes'
//!   first deliveries, ack the rest in one call, and record every receipt's outcome.
//!   Errors (no leader, timeouts, connection refused) are recorded and the worker
//!   goes on.
//! - A reader (`finish.rs`) reads the DLQ all along (a plain consumer per partition).
//! - [`QueueWorkload::finish`] (`finish.rs`): keep the workers and the reader going
//!   until every acknowledged send is accounted for (acked, or in the DLQ, or its ack
//!   failed and it has not come back for two lease lengths) or [`DRAIN_MAX`]; stop
//!   the workers and the reader; read the rest of the DLQ; describe the queue.
//!
//! Every call on a peer runs under the client's retry deadline and under an outer
//! `tokio::time::timeout` here.

mod finish;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use neo_client::{
    Client, ClientConfig, ProducerConfig, QueueAdmin, QueueOptions, QueueProducer, RetryPolicy,
    SendOptions,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::group_workload::{LOCAL_DEADLINE, error_kind};
use crate::history::queue::{QueueHistory, QueueSend, message_kind, queue_payload};
use crate::history::{Outcome, Recorder};
use crate::security::ClientSecurity;

/// The queue's name (each scenario runs on a fresh cluster).
pub const QUEUE_NAME: &str = "chaos-queue";
/// The queue's visibility timeout: short, so that lost leases come back in the run.
pub const VISIBILITY_TIMEOUT_MS: u32 = 3_000;
/// The queue's `max_deliveries`.
pub const MAX_DELIVERIES: u32 = 5;
/// One message in this many is poison, one a crash.
pub const KIND_EVERY: u64 = 40;
/// Producers of the queue (the rate is split between them).
pub const QUEUE_PRODUCERS: u32 = 2;
/// Messages a producer may have unresolved before it waits.
pub const OUTSTANDING_MAX: usize = 5_000;
/// Most messages one `receive` returns.
pub const RECEIVE_BATCH: usize = 16;
/// A `receive`'s wait for its first message.
pub const RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// Per-attempt bound of the workers' calls.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry of one worker call: long enough for an election, short enough that a call
/// stuck behind a fault fails and the worker goes on.
pub const CALL_RETRY: RetryPolicy = RetryPolicy {
    backoff_initial: Duration::from_millis(50),
    backoff_max: Duration::from_secs(1),
    attempts_max: 1_000,
    deadline: Duration::from_secs(10),
};
/// Outer bound on one receive, ack, nack, connect or admin call.
pub const CALL_BOUND: Duration = Duration::from_secs(20);
/// Bound on the drain: from its start until every acknowledged send is accounted for.
/// With the workers' stop and [`DLQ_READ_MAX`] twice, the queue adds at most about
/// 30 s to a scenario (normally well under a second: the workers run through the
/// other workloads' drain, so everything is accounted for by then).
pub const DRAIN_MAX: Duration = Duration::from_secs(18);
/// Bound on the DLQ read after the workers stopped, and on the final describe.
pub const DLQ_READ_MAX: Duration = Duration::from_secs(4);
/// The queue's producers stop this long before the cool-down ends (a lease length and
/// a second: a crash message sent last comes back after a lease).
pub const SEND_STOP_LEAD: Duration = Duration::from_millis(VISIBILITY_TIMEOUT_MS as u64 + 1_000);
/// Why the workers nack poison.
pub const POISON_REASON: &str = "poison";

/// The client settings of the queue's connections.
fn queue_client_config(security: &ClientSecurity) -> ClientConfig {
    security.apply(ClientConfig {
        retry: CALL_RETRY,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    })
}

/// Create the queue and its dead-letter queue (waits until both have leaders);
/// returns the dead-letter queue's name.
pub async fn create_queue(
    client: &Client,
    partitions: u32,
    replication: u32,
) -> neo_client::Result<String> {
    let options = QueueOptions::new(partitions, replication)
        .visibility_timeout_ms(VISIBILITY_TIMEOUT_MS)
        .max_deliveries(MAX_DELIVERIES);
    let created = QueueAdmin::new(client.clone())
        .create(QUEUE_NAME, options)
        .await?;
    Ok(created
        .settings
        .dead_letter
        .or(created.created_dead_letter)
        .unwrap_or_else(|| format!("{QUEUE_NAME}{}", neo_client::queue::DEAD_LETTER_SUFFIX)))
}

/// What the queue workload needs to start.
#[derive(Debug, Clone)]
pub struct QueueWorkloadConfig {
    /// The queue's partitions.
    pub partitions: u32,
    /// Its dead-letter queue.
    pub dlq: String,
    /// Workers.
    pub workers: u32,
    /// Messages per second, all producers together.
    pub rate: f64,
    /// The producers' produce timeout.
    pub produce_timeout: Duration,
    /// The producers' retry of one batch.
    pub retry: RetryPolicy,
}

/// A running queue workload.
#[derive(Debug)]
pub struct QueueWorkload {
    seeds: Vec<String>,
    security: ClientSecurity,
    dlq: String,
    stop_sending: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    deliveries: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    stop_workers: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    stop_reader: watch::Sender<bool>,
    reader: JoinHandle<Option<finish::DlqReader>>,
}

impl QueueWorkload {
    /// Start the producers and workers (each connects in its own task and keeps
    /// trying while a fault is on).
    pub fn start(
        seeds: &[String],
        security: &ClientSecurity,
        recorder: &Recorder,
        config: &QueueWorkloadConfig,
    ) -> QueueWorkload {
        recorder.start_queue(QueueHistory {
            queue: QUEUE_NAME.into(),
            dlq: config.dlq.clone(),
            partitions: config.partitions,
            max_deliveries: MAX_DELIVERIES,
            visibility_timeout_ms: VISIBILITY_TIMEOUT_MS,
            workers: config.workers,
            ..QueueHistory::default()
        });
        let (stop_sending, sending) = watch::channel(false);
        let (stop_workers, working) = watch::channel(false);
        let deliveries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let per_producer = (config.rate / f64::from(QUEUE_PRODUCERS)).max(0.1);
        let period = Duration::from_secs_f64(1.0 / per_producer);
        let producers = (0..QUEUE_PRODUCERS)
            .map(|i| {
                tokio::spawn(produce(
                    i,
                    seeds.to_vec(),
                    security.clone(),
                    recorder.clone(),
                    config.clone(),
                    period,
                    sending.clone(),
                    deliveries.clone(),
                ))
            })
            .collect();
        let workers = (0..config.workers)
            .map(|i| {
                tokio::spawn(worker::worker(
                    i,
                    seeds.to_vec(),
                    security.clone(),
                    recorder.clone(),
                    working.clone(),
                ))
            })
            .collect();
        let (stop_reader, reading) = watch::channel(false);
        let reader = tokio::spawn(finish::read_dlq(
            seeds.to_vec(),
            security.clone(),
            recorder.clone(),
            config.dlq.clone(),
            reading,
        ));
        QueueWorkload {
            seeds: seeds.to_vec(),
            security: security.clone(),
            dlq: config.dlq.clone(),
            stop_sending,
            producers,
            deliveries,
            stop_workers,
            workers,
            stop_reader,
            reader,
        }
    }

    /// Tell the producers to stop (they finish the send in progress).
    pub fn signal_stop_sending(&self) {
        let _ = self.stop_sending.send(true);
    }

    /// Stop sending; wait (at most `wait`) until every send has an outcome (those
    /// still unresolved stay `Invoked` = unknown). The workers go on.
    pub async fn stop_sending(&mut self, wait: Duration) {
        self.signal_stop_sending();
        let deadline = tokio::time::Instant::now() + wait;
        for task in self.producers.drain(..) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        let deliveries =
            std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
        for task in deliveries {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                break;
            }
        }
    }
}

/// Connect (retried until stop); `None` when stopped first. Failures are recorded as
/// `connect:<kind>` errors of `worker` (producers use indexes from 1000 up).
async fn connect(
    seeds: &[String],
    security: &ClientSecurity,
    recorder: &Recorder,
    who: u32,
    stop: &mut watch::Receiver<bool>,
) -> Option<Client> {
    loop {
        match tokio::time::timeout(
            CALL_BOUND,
            Client::connect_with(seeds, queue_client_config(security)),
        )
        .await
        {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e)) => record_error(recorder, who, "connect", &error_kind(&e)),
            Err(_) => record_error(recorder, who, "connect", LOCAL_DEADLINE),
        }
        if pause(stop, Duration::from_millis(500)).await {
            return None;
        }
    }
}

fn record_error(recorder: &Recorder, who: u32, call: &str, kind: &str) {
    let at = recorder.clock().now_us();
    recorder.queue(|q| q.errors.push((at, who, format!("{call}:{kind}"))));
}

/// Wait `wait`, or less if stop is signalled. Returns whether it was.
async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        () = tokio::time::sleep(wait) => *stop.borrow(),
    }
}

/// Index of producer `i` in the error list (workers are 0..).
const PRODUCER_BASE: u32 = 1_000;

#[allow(clippy::too_many_arguments)]
async fn produce(
    index: u32,
    seeds: Vec<String>,
    security: ClientSecurity,
    recorder: Recorder,
    config: QueueWorkloadConfig,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    deliveries: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
) {
    let clock = recorder.clock();
    let who = PRODUCER_BASE + index;
    let Some(client) = connect(&seeds, &security, &recorder, who, &mut stop).await else {
        return;
    };
    let producer = QueueProducer::with_config(
        client,
        ProducerConfig {
            linger: Duration::from_millis(2),
            produce_timeout: config.produce_timeout,
            retry: config.retry,
            idempotence: true,
            partition_inflight_batches_max: 1,
            ..ProducerConfig::default()
        },
    );
    let outstanding = Arc::new(Semaphore::new(OUTSTANDING_MAX));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let run_id = recorder.run_id();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = outstanding.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let kind = message_kind(seq, KIND_EVERY);
        let Some(op) = recorder.queue(|q| {
            q.sends.push(QueueSend {
                producer: index,
                seq,
                kind,
                invoke_us: clock.now_us(),
                complete_us: None,
                outcome: Outcome::Invoked,
                partition: None,
                offset: None,
                error: None,
            });
            q.sends.len() - 1
        }) else {
            return;
        };
        let value = queue_payload(&run_id, index, seq, kind);
        let complete =
            move |recorder: &Recorder, outcome, at: Option<(u32, Option<u64>)>, error| {
                let now = recorder.clock().now_us();
                recorder.queue(|q| {
                    let s = &mut q.sends[op];
                    s.complete_us = Some(now);
                    s.outcome = outcome;
                    s.partition = at.map(|(p, _)| p);
                    s.offset = at.and_then(|(_, o)| o);
                    s.error = error;
                });
            };
        match producer
            .submit(QUEUE_NAME, value, SendOptions::default())
            .await
        {
            Err(err) => complete(&recorder, Outcome::Fail, None, Some(err.to_string())),
            Ok(delivery) => {
                let recorder = recorder.clone();
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    match delivery.await {
                        Ok(meta) => complete(
                            &recorder,
                            Outcome::Ok,
                            Some((meta.partition, meta.offset)),
                            None,
                        ),
                        Err(err) => {
                            complete(&recorder, Outcome::Unknown, None, Some(err.to_string()))
                        }
                    }
                });
                let mut list = deliveries.lock().unwrap_or_else(|e| e.into_inner());
                list.retain(|t| !t.is_finished());
                list.push(task);
            }
        }
        seq += 1;
    }
    producer.flush().await;
}
