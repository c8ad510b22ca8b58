//! The workload: producers with unique payloads and live consumers, every operation
//! recorded; then, after healing, the final drain.
//!
//! - Producer `i` has its own [`Client`] and [`Producer`] (idempotence stamps on, one
//!   batch in flight per partition, so its records are stored in `send` order), sends
//!   `{run}:{i}:{seq}` keyed `p{i}` to partition `i % partitions` at a fixed rate, and
//!   keeps at most `outstanding_max` records unresolved (then it waits, as a real
//!   application would). `send` failing = `Fail` (nothing was sent); a `Delivery`
//!   with an offset = `Ok`; a `Delivery` error = `Unknown` (a batch that was sent may
//!   have been stored even if the last attempt failed).
//! - One live consumer per partition (its own [`Consumer`], from the beginning) polls
//!   until stopped and records what it reads. One consumer per partition, because a
//!   `Consumer::poll` over several partitions that fails on one of them returns the
//!   error and drops the records it decoded from the others while moving their
//!   positions past them.
//! - The drain reads each partition from its log start up to a target offset (the
//!   replicas' common high watermark), with a fresh client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use neo_client::{
    Client, ClientConfig, Consumer, Offset, Producer, ProducerConfig, ProducerRecord, RetryPolicy,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::history::{DrainedPartition, Outcome, ReadOp, Recorder, payload};
use crate::security::ClientSecurity;

/// What the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Topic (created by the runner).
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Producers.
    pub producers: u32,
    /// Records per second, all producers together.
    pub rate: f64,
    /// Records a producer may have unresolved before it waits.
    pub outstanding_max: usize,
    /// How long a produce may wait for commit on the broker.
    pub produce_timeout: Duration,
    /// Retry of one batch (bounds how long a record can stay unresolved).
    pub retry: RetryPolicy,
    /// Members of the consumer group workload (`crate::group_workload`); 0: none.
    pub group_consumers: u32,
    /// Workers of the queue workload (`crate::queue_workload`); 0: no queue workload.
    pub queue_workers: u32,
    /// Messages per second sent to the queue, all its producers together.
    pub queue_rate: f64,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            topic: "chaos".into(),
            partitions: 3,
            producers: 4,
            rate: 400.0,
            outstanding_max: 20_000,
            produce_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_secs(1),
                attempts_max: 1_000,
                deadline: Duration::from_secs(45),
            },
            group_consumers: 3,
            queue_workers: 3,
            queue_rate: 40.0,
        }
    }
}

/// The client settings every workload connection uses (and the runner's admin client).
pub fn client_config(retry: RetryPolicy, security: &ClientSecurity) -> ClientConfig {
    security.apply(ClientConfig {
        retry,
        ..ClientConfig::default()
    })
}

/// A running workload.
#[derive(Debug)]
pub struct Workload {
    stop: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    deliveries: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Workload {
    /// Connect every producer and consumer, then start them.
    pub async fn start(
        seeds: &[String],
        security: &ClientSecurity,
        recorder: &Recorder,
        config: &WorkloadConfig,
    ) -> anyhow::Result<Workload> {
        let (stop, stop_rx) = watch::channel(false);
        let deliveries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut producers = Vec::new();
        let per_producer = (config.rate / f64::from(config.producers.max(1))).max(0.1);
        let period = Duration::from_secs_f64(1.0 / per_producer);
        for i in 0..config.producers {
            let client = Client::connect_with(seeds, client_config(config.retry, security))
                .await
                .context("producer client")?;
            let producer = Producer::with_config(
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
            producers.push(tokio::spawn(produce(
                i,
                producer,
                recorder.clone(),
                config.clone(),
                period,
                stop_rx.clone(),
                deliveries.clone(),
            )));
        }
        let mut consumers = Vec::new();
        for p in 0..config.partitions {
            let client = Client::connect_with(seeds, client_config(config.retry, security))
                .await
                .context("consumer client")?;
            consumers.push(tokio::spawn(consume(
                p,
                client,
                recorder.clone(),
                config.topic.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Workload {
            stop,
            producers,
            consumers,
            deliveries,
        })
    }

    /// Stop producing and consuming; wait (at most `wait`) until every record sent has
    /// an outcome. Records still unresolved stay `Invoked` (= unknown).
    pub async fn stop(self, wait: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + wait;
        for task in self.producers.into_iter().chain(self.consumers) {
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

async fn produce(
    index: u32,
    producer: Producer,
    recorder: Recorder,
    config: WorkloadConfig,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    deliveries: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
) {
    let partition = index % config.partitions.max(1);
    let outstanding = Arc::new(Semaphore::new(config.outstanding_max.max(1)));
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
        let op = recorder.invoke(index, seq, partition);
        let record = ProducerRecord::new(config.topic.clone(), payload(&run_id, index, seq))
            .key(format!("p{index}"))
            .partition(partition);
        match producer.send(record).await {
            Err(err) => recorder.complete(op, Outcome::Fail, None, Some(err.to_string())),
            Ok(delivery) => {
                let recorder = recorder.clone();
                let task = tokio::spawn(async move {
                    let _permit = permit;
                    match delivery.await {
                        Ok(meta) => recorder.complete(op, Outcome::Ok, meta.offset, None),
                        Err(err) => {
                            recorder.complete(op, Outcome::Unknown, None, Some(err.to_string()))
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
    // Send what is still batched; the deliveries resolve (or the retry deadline ends them).
    producer.flush().await;
}

async fn consume(
    partition: u32,
    client: Client,
    recorder: Recorder,
    topic: String,
    mut stop: watch::Receiver<bool>,
) {
    let clock = recorder.clock();
    let mut consumer = Consumer::new(client);
    let partitions = [partition];
    loop {
        let assigned = tokio::select! {
            _ = stop.changed() => return,
            a = consumer.assign(&topic, &partitions, Offset::Beginning) => a,
        };
        match assigned {
            Ok(()) => break,
            Err(err) => {
                recorder.read_error(partition, format!("assign: {err}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    loop {
        let polled = tokio::select! {
            _ = stop.changed() => return,
            r = consumer.poll(Duration::from_millis(500)) => r,
        };
        match polled {
            Ok(records) => {
                let at_us = clock.now_us();
                recorder.reads(records.into_iter().map(|r| ReadOp {
                    partition: r.partition,
                    offset: r.offset,
                    value: String::from_utf8_lossy(&r.value).into_owned(),
                    at_us,
                }));
            }
            Err(err) => {
                recorder.read_error(partition, err.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Read every partition from its log start up to `targets[p]` (a partition without a
/// target is read up to its leader's high watermark). Stops a partition when nothing
/// new arrived for `idle_max`.
pub async fn drain(
    seeds: &[String],
    security: &ClientSecurity,
    topic: &str,
    partitions: u32,
    targets: &BTreeMap<u32, u64>,
    retry: RetryPolicy,
    idle_max: Duration,
) -> Vec<DrainedPartition> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let target = targets.get(&p).copied();
        out.push(drain_partition(seeds, security, topic, p, target, retry, idle_max).await);
    }
    out
}

async fn drain_partition(
    seeds: &[String],
    security: &ClientSecurity,
    topic: &str,
    partition: u32,
    target: Option<u64>,
    retry: RetryPolicy,
    idle_max: Duration,
) -> DrainedPartition {
    let mut d = DrainedPartition {
        partition,
        ..DrainedPartition::default()
    };
    let mut last_progress = tokio::time::Instant::now();
    let mut last_error = None;
    let client = loop {
        match Client::connect_with(seeds, client_config(retry, security)).await {
            Ok(c) => break c,
            Err(e) if last_progress.elapsed() < idle_max => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                d.error = Some(format!("connect: {e}"));
                return d;
            }
        }
    };
    let mut consumer = Consumer::new(client);
    loop {
        let setup = async {
            consumer
                .assign(topic, &[partition], Offset::Beginning)
                .await?;
            match target {
                Some(t) => Ok(t),
                None => consumer.high_watermark(topic, partition).await,
            }
        };
        match setup.await {
            Ok(t) => {
                d.target = t;
                break;
            }
            Err(e) if last_progress.elapsed() < idle_max => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                d.error = Some(format!("assign: {e}"));
                return d;
            }
        }
    }
    loop {
        d.position = consumer.position(topic, partition).unwrap_or(0);
        if d.position >= d.target {
            return d;
        }
        if last_progress.elapsed() >= idle_max {
            d.error = Some(format!(
                "no progress for {idle_max:?} at offset {} (last error: {})",
                d.position,
                last_error.as_deref().unwrap_or("none")
            ));
            return d;
        }
        match consumer.poll(Duration::from_millis(1000)).await {
            Ok(records) => {
                let before = d.position;
                d.records.extend(
                    records
                        .into_iter()
                        .map(|r| (r.offset, String::from_utf8_lossy(&r.value).into_owned())),
                );
                if consumer.position(topic, partition).unwrap_or(0) > before {
                    last_progress = tokio::time::Instant::now();
                }
            }
            Err(e) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
