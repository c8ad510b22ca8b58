//! `neo bench queue`: work-queue throughput and latency, end to end (docs/cli.md,
//! "Bench"; recorded figures in docs/BENCHMARKS.md, "Queues").
//!
//! ```text
//! create queue Q (partitions × replication, a fresh name) ─▶ C consumers start
//!   (QueueConsumer: per-partition receive tasks, prefetch) ─▶ P producers, each
//!   keeping K messages awaiting their commit (QueueProducer: acks=all)
//!   value = [id: u64 LE][send time: u64 LE, ns since the run's epoch][padding]
//! each consumer: receive(up to --batch) ─▶ ack(all of them, one call) ─▶ for every
//!   receipt answered Ok: the id marked done (once), latency = ack answered − send time
//! producers done ─▶ wait until every id is acked or --drain-timeout-ms passed
//!   ─▶ consumers close ─▶ report ─▶ exit 1 if any id was never acked
//! ```
//!
//! Honest counting: only ids whose ack was answered `Ok` count, each once (a bitmap of
//! the ids); deliveries with a delivery count above 1 are reported as `redelivered`,
//! an id acked `Ok` twice (which the queue must never do) as `duplicates`, and any
//! other outcome as `settle_failed`. Throughput is the distinct ids acked over the
//! time from the first send to the last ack that counted one.

use std::collections::VecDeque;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use neo_client::{
    Admin, Client, Delivery, Error, ProducerConfig, QueueAdmin, QueueConsumer, QueueConsumerConfig,
    QueueOptions, QueueProducer, ReceiptOutcome, SendOptions,
};
use neo_protocol::api::{
    QUEUE_RECEIVE_MESSAGES_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MIN,
};
use serde::Serialize;
use tokio::sync::watch;

use super::{BENCH_BATCHES_INFLIGHT, percentile};
use crate::Format;

/// Bytes of a value the bench uses for itself: the id and the send time.
pub(crate) const STAMP_LEN: usize = 16;
/// How long one consumer's `receive` waits before it looks at the stop flag again.
const RECEIVE_WAIT: Duration = Duration::from_millis(200);
/// How often the drain wait looks at the count of acked ids.
const DRAIN_LOOK: Duration = Duration::from_millis(5);
/// Missing ids named on stderr at most.
const MISSING_SHOWN: usize = 10;

#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// Queue to create (default: `neo-bench-queue-<unix ms>`); it must not exist. It is
    /// deleted at the end with its dead-letter queue, unless `--keep`.
    #[arg(long)]
    pub(crate) queue: Option<String>,
    /// Messages to send, over all producers.
    #[arg(long, visible_alias = "msgs", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub(crate) messages: u64,
    /// Value size in bytes (at least 16: the id and the send time travel in the value).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(STAMP_LEN as i64..=(1 << 20)))]
    pub(crate) size: u32,
    /// Producer tasks (each its own `QueueProducer`, acks=all).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) producers: u32,
    /// Consumers (each a `QueueConsumer` of its own name), receiving and acking.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) consumers: u32,
    /// Partitions of the queue.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) partitions: u32,
    /// Replicas of each partition.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) replication: u32,
    /// Most messages per receive, and so per ack request (1 to 1000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=i64::from(QUEUE_RECEIVE_MESSAGES_MAX)))]
    pub(crate) batch: u32,
    /// Messages each producer keeps awaiting their commit.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) inflight: u32,
    /// Send at this many messages per second in all (0: as fast as the window allows).
    /// Below saturation the latencies are the system's, not the backlog's; a message's
    /// latency then runs from its scheduled send time (a late send counts against it).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// Messages each consumer receives ahead (default: batch × partitions, at least 256).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) prefetch: Option<u32>,
    /// Lease length of every receive, in ms (a lease that runs out is a redelivery).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(i64::from(QUEUE_VISIBILITY_TIMEOUT_MS_MIN)..=i64::from(QUEUE_VISIBILITY_TIMEOUT_MS_MAX)))]
    pub(crate) visibility_timeout_ms: u32,
    /// After the last commit, how long to wait for the last acks before giving up (the
    /// run then fails: exit 1).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub(crate) drain_timeout_ms: u64,
    /// Keep the queue (and its dead-letter queue) after the run.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Output: a summary (text) or one JSON line.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: Format,
}

impl QueueArgs {
    fn prefetch(&self) -> usize {
        let default = (self.batch as usize * self.partitions as usize).max(256);
        self.prefetch.map_or(default, |p| p as usize)
    }
}

/// What `neo bench queue` prints (`--format json`: this, as one line).
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct QueueBenchReport {
    pub(crate) queue: String,
    pub(crate) partitions: u32,
    pub(crate) replication: u32,
    pub(crate) producers: u32,
    pub(crate) consumers: u32,
    pub(crate) batch: u32,
    pub(crate) inflight: u32,
    /// The `--rate` asked for (0: none).
    pub(crate) rate: u64,
    pub(crate) prefetch: usize,
    pub(crate) size: u32,
    /// Messages sent (each committed: acks=all).
    pub(crate) messages: u64,
    /// Distinct messages whose ack was answered `Ok`.
    pub(crate) acked: u64,
    /// Messages sent and never acked within the drain deadline (the run failed).
    pub(crate) missing: u64,
    /// Deliveries with a delivery count above 1 (a lease ran out, or a close gave
    /// buffered messages back).
    pub(crate) redelivered: u64,
    /// Ids acked `Ok` a second time (never expected).
    pub(crate) duplicates: u64,
    /// Receipts answered other than `Ok` (lease lost, already done, unknown).
    pub(crate) settle_failed: u64,
    /// Values that were not this run's (wrong size or id out of range).
    pub(crate) foreign: u64,
    /// Failed receive and ack calls (their messages come back after the lease).
    pub(crate) receive_errors: u64,
    pub(crate) ack_errors: u64,
    /// First send to the last ack that counted a message, in seconds.
    pub(crate) elapsed_s: f64,
    /// `acked / elapsed_s`.
    pub(crate) msgs_per_s: f64,
    /// Value bytes acked per second (10^6).
    pub(crate) mb_per_s: f64,
    /// Send call -> its ack answered `Ok` (µs, nearest rank).
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
    /// The produce side alone: first send to last commit, and send call -> commit.
    pub(crate) produce_msgs_per_s: f64,
    pub(crate) produce_p50_us: u64,
    pub(crate) produce_p99_us: u64,
    /// Receives that returned messages, and their mean size.
    pub(crate) receives: u64,
    pub(crate) msgs_per_receive: f64,
    /// Round trip of one ack request (all the receipts of one receive).
    pub(crate) ack_p50_us: u64,
    pub(crate) ack_p99_us: u64,
    /// The first error a consumer met, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_error: Option<String>,
}

/// The value of message `id`: its id, its send time (ns since the run's epoch), then
/// `x` up to `size` bytes (at least [`STAMP_LEN`]).
pub(crate) fn stamp(id: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut v = BytesMut::with_capacity(size.max(STAMP_LEN));
    v.put_u64_le(id);
    v.put_u64_le(sent_ns);
    v.resize(size.max(STAMP_LEN), b'x');
    v.freeze()
}

/// The id and send time of a value made by [`stamp`].
pub(crate) fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_le_bytes(value.get(0..8)?.try_into().ok()?);
    let sent_ns = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((id, sent_ns))
}

/// The ids producer `i` of `producers` sends: a contiguous share of `0..messages`.
pub(crate) fn share(messages: u64, producers: u32, i: u32) -> Range<u64> {
    let p = u64::from(producers.max(1));
    let at = |k: u64| (u128::from(messages) * u128::from(k) / u128::from(p)) as u64;
    at(u64::from(i))..at(u64::from(i) + 1)
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// What every task of the run shares: which ids are done, and the counters.
#[derive(Debug)]
pub(crate) struct Tally {
    epoch: Instant,
    messages: u64,
    /// One bit per id: acked `Ok` at least once.
    done: Vec<AtomicU64>,
    acked: AtomicU64,
    duplicates: AtomicU64,
    redelivered: AtomicU64,
    settle_failed: AtomicU64,
    foreign: AtomicU64,
    receive_errors: AtomicU64,
    ack_errors: AtomicU64,
    /// ns since `epoch` of the first send and of the last ack that counted.
    first_send_ns: AtomicU64,
    last_ack_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    pub(crate) fn new(messages: u64) -> Tally {
        Tally {
            epoch: Instant::now(),
            messages,
            done: (0..messages.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            acked: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            settle_failed: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            receive_errors: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            first_send_ns: AtomicU64::new(u64::MAX),
            last_ack_ns: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// Marks `id` acked: true the first time, false for a duplicate or an id that is
    /// not this run's.
    pub(crate) fn mark(&self, id: u64) -> bool {
        if id >= self.messages {
            return false;
        }
        let bit = 1u64 << (id % 64);
        self.done[(id / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    pub(crate) fn is_done(&self, id: u64) -> bool {
        id < self.messages
            && self.done[(id / 64) as usize].load(Ordering::Relaxed) & (1u64 << (id % 64)) != 0
    }

    /// Up to `max` ids never acked, and how many there are.
    pub(crate) fn missing(&self, max: usize) -> (u64, Vec<u64>) {
        let mut first = Vec::new();
        let mut count = 0;
        for id in 0..self.messages {
            if !self.is_done(id) {
                count += 1;
                if first.len() < max {
                    first.push(id);
                }
            }
        }
        (count, first)
    }

    fn note_error(&self, what: &str, err: &Error) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert_with(|| format!("{what}: {err}"));
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One consumer's own figures.
#[derive(Debug, Default)]
struct ConsumerResult {
    /// Send -> ack answered, µs, one per id this consumer acked first.
    latencies_us: Vec<u64>,
    /// Ack request round trips, µs.
    ack_rtt_us: Vec<u64>,
    receives: u64,
    received: u64,
}

/// Receive up to `batch`, ack them all in one call, count; until `stop`.
async fn consume(
    consumer: QueueConsumer,
    tally: Arc<Tally>,
    batch: usize,
    stop: watch::Receiver<bool>,
) -> ConsumerResult {
    let mut r = ConsumerResult::default();
    while !*stop.borrow() {
        let got = match consumer.receive(batch, RECEIVE_WAIT).await {
            Ok(got) => got,
            Err(Error::ConsumerClosed) => break,
            Err(err) => {
                Tally::add(&tally.receive_errors, 1);
                tally.note_error("receive", &err);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if got.is_empty() {
            continue;
        }
        r.receives += 1;
        r.received += got.len() as u64;
        let again = got.iter().filter(|d| d.delivery_count > 1).count();
        Tally::add(&tally.redelivered, again as u64);
        let receipts: Vec<_> = got.iter().map(|d| d.receipt).collect();
        let t0 = Instant::now();
        let outcomes = match consumer.ack(&receipts).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                // The messages come back once their leases run out.
                Tally::add(&tally.ack_errors, 1);
                tally.note_error("ack", &err);
                continue;
            }
        };
        let at = Instant::now();
        let at_ns = tally.ns(at);
        r.ack_rtt_us.push(us(at - t0));
        let mut counted = 0u64;
        for (d, outcome) in got.iter().zip(outcomes) {
            if outcome != ReceiptOutcome::Ok {
                Tally::add(&tally.settle_failed, 1);
                continue;
            }
            let Some((id, sent_ns)) = read_stamp(&d.value).filter(|(id, _)| *id < tally.messages)
            else {
                Tally::add(&tally.foreign, 1);
                continue;
            };
            if tally.mark(id) {
                r.latencies_us.push(at_ns.saturating_sub(sent_ns) / 1000);
                counted += 1;
            } else {
                Tally::add(&tally.duplicates, 1);
            }
        }
        if counted > 0 {
            // The time first, then the count: the drain wait sees a full count only
            // with the time of the ack that completed it.
            tally.last_ack_ns.fetch_max(at_ns, Ordering::Relaxed);
            Tally::add(&tally.acked, counted);
        }
    }
    // Messages still buffered are nacked at once (free for the others).
    if let Err(err) = consumer.close().await {
        tally.note_error("close", &err);
    }
    r
}

/// One producer's own figures: send -> commit per message, and the last commit.
#[derive(Debug)]
struct ProducerResult {
    latencies_us: Vec<u64>,
    last_commit: Option<Instant>,
}

/// Send the ids `ids`, keeping `inflight` awaiting their commit (the loop of `neo bench
/// produce`); with `interval`, message k of `ids` is due at start + k × interval, and
/// its send time is when it was due.
async fn produce(
    producer: QueueProducer,
    queue: String,
    ids: Range<u64>,
    size: usize,
    inflight: usize,
    interval: Option<Duration>,
    tally: Arc<Tally>,
) -> anyhow::Result<ProducerResult> {
    let mut window: VecDeque<(Instant, Delivery)> = VecDeque::with_capacity(inflight);
    let mut latencies_us = Vec::with_capacity((ids.end - ids.start) as usize);
    let mut last_commit = None;
    let mut next = ids.start;
    let start = Instant::now();
    if next < ids.end {
        tally
            .first_send_ns
            .fetch_min(tally.ns(start), Ordering::Relaxed);
    }
    while next < ids.end || !window.is_empty() {
        while window.len() < inflight && next < ids.end {
            let t0 = match interval {
                Some(every) => {
                    let due = start + every.mul_f64((next - ids.start) as f64);
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
                None => Instant::now(),
            };
            let value = stamp(next, tally.ns(t0), size);
            let delivery = producer
                .submit(&queue, value, SendOptions::default())
                .await?;
            window.push_back((t0, delivery));
            next += 1;
        }
        if let Some((_, oldest)) = window.front_mut() {
            (&mut *oldest).await?;
        }
        while let Some((t0, delivery)) = window.front() {
            let Some(result) = delivery.result() else {
                break;
            };
            result?;
            let at = delivery.completed_at().unwrap_or_else(Instant::now);
            latencies_us.push(us(at.saturating_duration_since(*t0)));
            last_commit = last_commit.max(Some(at));
            window.pop_front();
        }
    }
    Ok(ProducerResult {
        latencies_us,
        last_commit,
    })
}

/// `neo bench queue`.
pub(crate) async fn queue(client: Client, args: QueueArgs) -> anyhow::Result<ExitCode> {
    let name = args.queue.clone().unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("neo-bench-queue-{ms}")
    });
    let admin = QueueAdmin::new(client.clone());
    let options = QueueOptions::new(args.partitions, args.replication)
        .visibility_timeout_ms(args.visibility_timeout_ms);
    let created = admin
        .create(&name, options)
        .await
        .with_context(|| format!("creating queue {name:?} (it must not exist yet)"))?;
    let outcome = run(&client, &name, &args).await;
    if !args.keep {
        if let Err(err) = admin.delete(&name).await {
            eprintln!("warning: deleting queue {name:?}: {err}");
        }
        if let Some(dlq) = &created.created_dead_letter
            && admin.delete(dlq).await.is_err()
            && let Err(err) = Admin::new(client.clone()).delete_topic(dlq).await
        {
            eprintln!("warning: deleting dead-letter queue {dlq:?}: {err}");
        }
    }
    let (report, missing_ids) = outcome?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&report)?),
        Format::Text => print!("{}", summary(&report)),
    }
    if report.missing > 0 {
        eprintln!(
            "error: {} of {} messages were not acked within {} ms of the last commit (first: {missing_ids:?})",
            report.missing, report.messages, args.drain_timeout_ms
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The run on a created queue: the report, and the first missing ids.
async fn run(
    client: &Client,
    name: &str,
    args: &QueueArgs,
) -> anyhow::Result<(QueueBenchReport, Vec<u64>)> {
    let tally = Arc::new(Tally::new(args.messages));
    let prefetch = args.prefetch();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Consumers first: their receive tasks are long-polling when the first message
    // is committed.
    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let config = QueueConsumerConfig {
            visibility_timeout_ms: args.visibility_timeout_ms,
            prefetch,
            receive_batch: args.batch,
            ..QueueConsumerConfig::default()
        };
        let consumer =
            QueueConsumer::with_config(client.clone(), name, &format!("neo-bench-{i}"), config)?;
        consumer
            .start()
            .await
            .with_context(|| format!("starting consumer {i}"))?;
        consumers.push(tokio::spawn(consume(
            consumer,
            tally.clone(),
            args.batch as usize,
            stop_rx.clone(),
        )));
    }
    let config = ProducerConfig {
        // Batches form from the messages that wait for a free slot (as `bench produce`).
        linger: Duration::ZERO,
        partition_inflight_batches_max: BENCH_BATCHES_INFLIGHT as usize,
        buffer_records_max: ProducerConfig::default()
            .buffer_records_max
            .max(args.inflight as usize),
        ..ProducerConfig::default()
    };
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(f64::from(args.producers) / args.rate as f64));
    let mut producers = Vec::new();
    for i in 0..args.producers {
        let producer = QueueProducer::with_config(client.clone(), config.clone());
        producers.push(tokio::spawn(produce(
            producer,
            name.to_string(),
            share(args.messages, args.producers, i),
            args.size as usize,
            args.inflight as usize,
            interval,
            tally.clone(),
        )));
    }
    let mut produce_us = Vec::with_capacity(args.messages as usize);
    let mut last_commit: Option<Instant> = None;
    let mut failed = None;
    for task in producers {
        match task.await.context("producer task") {
            Ok(Ok(r)) => {
                produce_us.extend(r.latencies_us);
                last_commit = last_commit.max(r.last_commit);
            }
            Ok(Err(err)) | Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    if failed.is_none() {
        let deadline = Instant::now() + Duration::from_millis(args.drain_timeout_ms);
        while tally.acked_count() < args.messages && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_LOOK).await;
        }
    }
    stop_tx.send_replace(true);
    let mut results = Vec::new();
    for task in consumers {
        results.push(task.await.context("consumer task")?);
    }
    if let Some(err) = failed {
        return Err(err.context("producing"));
    }
    let (missing, missing_ids) = tally.missing(MISSING_SHOWN);
    Ok((
        report(
            args,
            name,
            prefetch,
            &tally,
            results,
            produce_us,
            last_commit,
            missing,
        ),
        missing_ids,
    ))
}

impl Tally {
    /// Distinct ids acked so far.
    fn acked_count(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &QueueArgs,
    name: &str,
    prefetch: usize,
    tally: &Tally,
    results: Vec<ConsumerResult>,
    mut produce_us: Vec<u64>,
    last_commit: Option<Instant>,
    missing: u64,
) -> QueueBenchReport {
    let (mut latencies, mut ack_rtt) = (Vec::new(), Vec::new());
    let (mut receives, mut received) = (0, 0);
    for r in results {
        latencies.extend(r.latencies_us);
        ack_rtt.extend(r.ack_rtt_us);
        receives += r.receives;
        received += r.received;
    }
    latencies.sort_unstable();
    ack_rtt.sort_unstable();
    produce_us.sort_unstable();
    let acked = latencies.len() as u64;
    let first = tally.first_send_ns.load(Ordering::Relaxed);
    let last = tally.last_ack_ns.load(Ordering::Relaxed);
    let secs = (last.saturating_sub(first) as f64 / 1e9).max(1e-9);
    let produce_secs = last_commit
        .map(|at| (tally.ns(at).saturating_sub(first) as f64 / 1e9).max(1e-9))
        .unwrap_or(f64::INFINITY);
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    QueueBenchReport {
        queue: name.to_string(),
        partitions: args.partitions,
        replication: args.replication,
        producers: args.producers,
        consumers: args.consumers,
        batch: args.batch,
        inflight: args.inflight,
        rate: args.rate,
        prefetch,
        size: args.size,
        messages: args.messages,
        acked,
        missing,
        redelivered: count(&tally.redelivered),
        duplicates: count(&tally.duplicates),
        settle_failed: count(&tally.settle_failed),
        foreign: count(&tally.foreign),
        receive_errors: count(&tally.receive_errors),
        ack_errors: count(&tally.ack_errors),
        elapsed_s: secs,
        msgs_per_s: acked as f64 / secs,
        mb_per_s: (acked * u64::from(args.size)) as f64 / secs / 1e6,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
        produce_msgs_per_s: produce_us.len() as f64 / produce_secs,
        produce_p50_us: percentile(&produce_us, 0.50),
        produce_p99_us: percentile(&produce_us, 0.99),
        receives,
        msgs_per_receive: received as f64 / receives.max(1) as f64,
        ack_p50_us: percentile(&ack_rtt, 0.50),
        ack_p99_us: percentile(&ack_rtt, 0.99),
        first_error: tally
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    }
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The text form of a report.
pub(crate) fn summary(r: &QueueBenchReport) -> String {
    let rate = match r.rate {
        0 => String::new(),
        n => format!(", {n} msgs/s in all"),
    };
    let mut s = format!(
        "queue {}: {} partitions x {} replicas; {} producers ({} in flight each{rate}), {} consumers (batch {}, prefetch {})\n",
        r.queue,
        r.partitions,
        r.replication,
        r.producers,
        r.inflight,
        r.consumers,
        r.batch,
        r.prefetch
    );
    s += &format!(
        "acked {} of {} messages of {} B in {:.2} s: {:.0} msgs/s, {:.1} MB/s (first send to last ack)\n",
        r.acked, r.messages, r.size, r.elapsed_s, r.msgs_per_s, r.mb_per_s
    );
    s += &format!(
        "send -> ack:    p50 {}, p99 {}, p999 {}, max {}\n",
        ms(r.p50_us),
        ms(r.p99_us),
        ms(r.p999_us),
        ms(r.max_us)
    );
    s += &format!(
        "send -> commit: p50 {}, p99 {} (the produce side alone: {:.0} msgs/s)\n",
        ms(r.produce_p50_us),
        ms(r.produce_p99_us),
        r.produce_msgs_per_s
    );
    s += &format!(
        "receives: {} ({:.1} messages each); ack round trip p50 {}, p99 {}\n",
        r.receives,
        r.msgs_per_receive,
        ms(r.ack_p50_us),
        ms(r.ack_p99_us)
    );
    s += &format!(
        "redelivered {}, duplicates {}, settle failures {}, foreign {}, errors {} receive / {} ack; missing {}\n",
        r.redelivered,
        r.duplicates,
        r.settle_failed,
        r.foreign,
        r.receive_errors,
        r.ack_errors,
        r.missing
    );
    if let Some(e) = &r.first_error {
        s += &format!("first error: {e}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::BenchCommand;
    use super::*;
    use crate::{Cli, Command};

    fn args(extra: &[&str]) -> Result<QueueArgs, clap::Error> {
        let argv = ["neo", "bench", "queue"]
            .into_iter()
            .chain(extra.iter().copied());
        match Cli::try_parse_from(argv)?.command {
            Command::Bench(BenchCommand::Queue(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_and_defaults() {
        let a = args(&[]).unwrap();
        assert_eq!(a.queue, None);
        assert_eq!(
            (a.messages, a.size, a.producers, a.consumers),
            (100_000, 100, 4, 16)
        );
        assert_eq!(
            (a.partitions, a.replication, a.batch, a.inflight),
            (3, 3, 64, 256)
        );
        assert_eq!(
            (a.visibility_timeout_ms, a.drain_timeout_ms),
            (30_000, 30_000)
        );
        assert_eq!((a.keep, a.format, a.rate), (false, Format::Text, 0));
        assert_eq!(a.prefetch(), 256);
        let a = args(&[
            "--queue",
            "q",
            "--msgs",
            "10",
            "--size",
            "1024",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--partitions",
            "6",
            "--replication",
            "1",
            "--batch",
            "100",
            "--inflight",
            "8",
            "--format",
            "json",
            "--keep",
            "--rate",
            "5000",
        ])
        .unwrap();
        assert_eq!(a.queue.as_deref(), Some("q"));
        assert_eq!(
            (a.messages, a.size, a.producers, a.consumers),
            (10, 1024, 2, 3)
        );
        assert_eq!(
            (a.partitions, a.replication, a.batch, a.inflight),
            (6, 1, 100, 8)
        );
        assert_eq!((a.keep, a.format, a.rate), (true, Format::Json, 5000));
        assert_eq!(a.prefetch(), 600, "batch x partitions");
        assert_eq!(args(&["--prefetch", "7"]).unwrap().prefetch(), 7);
        for bad in [
            &["--size", "15"][..],
            &["--batch", "0"],
            &["--batch", "1001"],
            &["--messages", "0"],
            &["--consumers", "0"],
            &["--visibility-timeout-ms", "99"],
            &["--format", "yaml"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamps_round_trip() {
        let v = stamp(42, 123_456_789, 100);
        assert_eq!(v.len(), 100);
        assert_eq!(read_stamp(&v), Some((42, 123_456_789)));
        assert!(v[16..].iter().all(|b| *b == b'x'));
        assert_eq!(
            stamp(1, 2, 3).len(),
            STAMP_LEN,
            "never shorter than the stamp"
        );
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn producers_share_every_id_once() {
        for (n, p) in [(10, 3), (1, 4), (100_000, 4), (7, 7), (5, 1)] {
            let ranges: Vec<_> = (0..p).map(|i| share(n, p, i)).collect();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, n);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{n} {p}");
            }
        }
    }

    #[test]
    fn the_tally_counts_each_id_once() {
        let t = Tally::new(130);
        assert!(t.mark(0));
        assert!(t.mark(129));
        assert!(!t.mark(129), "a duplicate");
        assert!(!t.mark(130), "not this run's");
        assert!(t.is_done(129) && !t.is_done(64));
        let (count, first) = t.missing(3);
        assert_eq!((count, first), (128, vec![1, 2, 3]));
    }
}
