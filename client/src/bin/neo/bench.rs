//! `neo bench`: produce and consume throughput and latency (docs/cli.md, "Bench").

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Subcommand, ValueEnum};
use neo_client::{
    AeadAlgorithm, AutoOffsetReset, Client, Consumer, Delivery, Error, GroupConsumer,
    GroupConsumerConfig, Keyring, Offset, Producer, ProducerConfig, ProducerRecord, SharedKeyring,
};
use serde::Serialize;

use crate::AcksArg;

// A child of this module (main.rs declares only `bench`): `neo bench commit` and
// `neo bench rebalance`.
#[path = "bench_group/mod.rs"]
mod bench_group;

use bench_group::{CommitArgs, RebalanceArgs};

// `neo bench queue`, also a child of this module.
#[path = "bench_queue.rs"]
mod bench_queue;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Produce N messages of B bytes with K in flight.
    Produce {
        /// Topic (must exist).
        #[arg(long)]
        topic: String,
        /// Messages to send.
        #[arg(long)]
        msgs: u64,
        /// Value size in bytes.
        #[arg(long)]
        size: usize,
        /// Messages awaiting acknowledgement at once.
        #[arg(long, default_value_t = 1)]
        inflight: usize,
        /// Acknowledgement mode.
        #[arg(long, value_enum, default_value = "all")]
        acks: AcksArg,
        /// Batches in flight per partition (the producer's
        /// `partition_inflight_batches_max`); messages sent while every slot is busy
        /// wait in the next batch, so fewer slots make fewer, larger batches.
        #[arg(long, default_value_t = BENCH_BATCHES_INFLIGHT, value_parser = clap::value_parser!(u32).range(1..=1024))]
        batches_inflight: u32,
        /// How long a batch may wait for more messages, in microseconds (0: sent as
        /// soon as a slot is free).
        #[arg(long, default_value_t = 0)]
        linger_us: u64,
        /// A batch is sent once it reaches this many bytes (at most 1 MiB).
        #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024))]
        batch_bytes: u64,
        /// Compress Neo RPC frames of 64 KiB and more (the client's default). Off in
        /// the bench: its values are all `x`, and NATS compresses nothing either.
        #[arg(long)]
        rpc_compression: bool,
        /// Encrypt every value client-side with this AEAD, under a random key made for
        /// the run (docs/security.md, "Payload encryption and key rotation").
        #[arg(long, value_enum)]
        encrypt: Option<EncryptArg>,
        /// With `--encrypt`: run this many pairs of runs in this process, each pair one
        /// run without encryption and one with (alternating which goes first), and print
        /// the medians of both and their ratio.
        #[arg(long, value_name = "PAIRS", requires = "encrypt", value_parser = clap::value_parser!(u32).range(1..=100))]
        compare_plain: Option<u32>,
    },
    /// Read a topic from the beginning until nothing new arrives.
    Consume {
        /// Topic (must exist).
        #[arg(long)]
        topic: String,
        /// Stop after this many messages (default: when nothing new arrives).
        #[arg(long)]
        msgs: Option<u64>,
        /// Stop after this long with nothing new.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Also read the topic as members of this consumer group (a new group: it
        /// starts where the group has no committed offset, at the beginning), and
        /// compare with as many plain consumers in the same run.
        #[arg(long)]
        group: Option<String>,
        /// Consumers on each side of the `--group` comparison.
        #[arg(long, default_value_t = 4, requires = "group", value_parser = clap::value_parser!(u32).range(1..=256))]
        consumers: u32,
    },
    /// Commit rate of a consumer group's members (each committing its partitions'
    /// offsets, one commit in flight), against single-record produce batches.
    Commit(CommitArgs),
    /// Rebalance time of a consumer group: a member leaves (or is killed), then a
    /// fresh one joins, round after round.
    Rebalance(RebalanceArgs),
    /// Work-queue throughput and latency: P producers (acks=all) and C consumers
    /// receiving and acking on a new queue; exits 1 if a message is never acked.
    Queue(bench_queue::QueueArgs),
}

/// `neo bench produce --encrypt`'s algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EncryptArg {
    /// AES-256-GCM.
    Aes256gcm,
    /// ChaCha20-Poly1305.
    Chacha20poly1305,
}

impl From<EncryptArg> for AeadAlgorithm {
    fn from(arg: EncryptArg) -> AeadAlgorithm {
        match arg {
            EncryptArg::Aes256gcm => AeadAlgorithm::Aes256Gcm,
            EncryptArg::Chacha20poly1305 => AeadAlgorithm::ChaCha20Poly1305,
        }
    }
}

/// The line `neo bench produce --encrypt A --compare-plain N` prints.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct EncryptBenchReport {
    pub(crate) algorithm: &'static str,
    pub(crate) pairs: u32,
    /// The median run (by `msgs_per_s`) of each side.
    pub(crate) plain: BenchReport,
    pub(crate) encrypted: BenchReport,
    /// The median over the pairs of `encrypted msgs/s ÷ plain msgs/s` within a pair
    /// (runs minutes apart on a shared machine compare worse than neighbours).
    pub(crate) ratio: f64,
    /// That ratio for each pair, in run order.
    pub(crate) pair_ratios: Vec<f64>,
    /// The median CPU time (user + system) of this process per message, µs, on each
    /// side: what encryption costs the client. Absent without `/proc`.
    pub(crate) plain_cpu_us_per_msg: Option<f64>,
    pub(crate) encrypted_cpu_us_per_msg: Option<f64>,
}

/// The median run by throughput (the upper one of an even count).
fn median(mut runs: Vec<BenchReport>) -> Option<BenchReport> {
    runs.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle)
}

/// The median of `values` (the upper one of an even count).
fn median_f64(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// CPU time (user + system) this process used so far, from `/proc/self/stat` (Linux);
/// `None` where it cannot be read. In clock ticks of 10 ms (`USER_HZ` is 100 on Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: count after it. The
    // first field after it is field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The line `neo bench` prints.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct BenchReport {
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) msgs_per_s: f64,
    pub(crate) mb_per_s: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank; 0 when empty.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn report(
    msgs: u64,
    bytes: u64,
    elapsed: Duration,
    mut latencies_us: Vec<u64>,
) -> BenchReport {
    latencies_us.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    BenchReport {
        msgs,
        bytes,
        elapsed_s: secs,
        msgs_per_s: msgs as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        p50_us: percentile(&latencies_us, 0.50),
        p99_us: percentile(&latencies_us, 0.99),
        p999_us: percentile(&latencies_us, 0.999),
    }
}

/// Default of `neo bench produce --batches-inflight` (measurements in
/// docs/BENCHMARKS.md, "Neo vs NATS JetStream").
pub(crate) const BENCH_BATCHES_INFLIGHT: u32 = 1;

/// `neo bench produce`'s load: `inflight` messages awaiting their acknowledgement at
/// all times. One task sends until `inflight` are outstanding, then waits for the
/// oldest and retires every acknowledged message at the front of the window before
/// sending more. A message's latency is its own: from just before its `send` call to
/// the moment the producer received its batch's answer ([`Delivery::completed_at`]),
/// not to when this loop got round to looking at it. The record is built once and
/// sent by reference: nothing is allocated per message but the producer's batch.
async fn bench_produce(
    producer: &Producer,
    topic: String,
    msgs: u64,
    size: usize,
    inflight: usize,
) -> anyhow::Result<BenchReport> {
    let record = ProducerRecord::new(topic, Bytes::from(vec![b'x'; size]));
    let mut window: VecDeque<(Instant, Delivery)> = VecDeque::with_capacity(inflight);
    let mut latencies = Vec::with_capacity(usize::try_from(msgs).unwrap_or(0).min(1 << 28));
    let mut sent = 0u64;
    let started = Instant::now();
    let mut last_ack = started;
    while sent < msgs || !window.is_empty() {
        while window.len() < inflight && sent < msgs {
            let t0 = Instant::now();
            let delivery = producer.send_ref(&record).await?;
            window.push_back((t0, delivery));
            sent += 1;
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
            latencies.push(at.saturating_duration_since(*t0).as_micros() as u64);
            last_ack = last_ack.max(at);
            window.pop_front();
        }
    }
    let elapsed = last_ack.saturating_duration_since(started);
    Ok(report(msgs, msgs * size as u64, elapsed, latencies))
}

pub(crate) async fn bench(client: Client, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Produce {
            topic,
            msgs,
            size,
            inflight,
            acks,
            batches_inflight,
            linger_us,
            batch_bytes,
            encrypt,
            compare_plain,
            ..
        } => {
            client.partition_count(&topic).await?;
            let inflight = inflight.max(1);
            let config = ProducerConfig {
                acks: acks.into(),
                // Batches form from the messages that wait for a free slot.
                linger: Duration::from_micros(linger_us),
                partition_inflight_batches_max: batches_inflight as usize,
                batch_size_bytes: batch_bytes as usize,
                buffer_records_max: ProducerConfig::default().buffer_records_max.max(inflight),
                ..ProducerConfig::default()
            };
            let ring = match encrypt {
                Some(algorithm) => Some(SharedKeyring::with_key(
                    "bench",
                    algorithm.into(),
                    &Keyring::generate_key()?,
                )?),
                None => None,
            };
            let (Some(pairs), Some(algorithm), Some(ring)) = (compare_plain, encrypt, ring.clone())
            else {
                let producer = Producer::with_config(
                    client,
                    ProducerConfig {
                        encryption: ring,
                        ..config
                    },
                );
                let r = bench_produce(&producer, topic, msgs, size, inflight).await?;
                println!("{}", serde_json::to_string(&r)?);
                return Ok(ExitCode::SUCCESS);
            };
            // Interleaved, alternating which side goes first, so that drift of the
            // machine (other load, the log growing) falls on both sides alike.
            let (mut plain, mut encrypted, mut pair_ratios) = (Vec::new(), Vec::new(), Vec::new());
            // CPU µs per message of each run, plain then encrypted.
            let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for pair in 0..pairs {
                let order = if pair % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                let mut rates = [0.0; 2];
                for sealed in order {
                    let producer = Producer::with_config(
                        client.clone(),
                        ProducerConfig {
                            encryption: sealed.then(|| ring.clone()),
                            ..config.clone()
                        },
                    );
                    let cpu_before = process_cpu();
                    let r = bench_produce(&producer, topic.clone(), msgs, size, inflight).await?;
                    if let (Some(before), Some(after)) = (cpu_before, process_cpu()) {
                        let us = after.saturating_sub(before).as_secs_f64() * 1e6;
                        cpu[usize::from(sealed)].push(us / msgs.max(1) as f64);
                    }
                    let side = if sealed { "encrypted" } else { "plain" };
                    eprintln!("pair {pair} {side}: {}", serde_json::to_string(&r)?);
                    rates[usize::from(sealed)] = r.msgs_per_s;
                    if sealed { &mut encrypted } else { &mut plain }.push(r);
                }
                pair_ratios.push(rates[1] / rates[0].max(1e-9));
            }
            let (Some(plain), Some(encrypted)) = (median(plain), median(encrypted)) else {
                bail!("no run");
            };
            let [plain_cpu, encrypted_cpu] = cpu;
            let line = EncryptBenchReport {
                algorithm: AeadAlgorithm::from(algorithm).name(),
                pairs,
                plain,
                encrypted,
                ratio: median_f64(pair_ratios.clone()).unwrap_or(0.0),
                pair_ratios,
                plain_cpu_us_per_msg: median_f64(plain_cpu),
                encrypted_cpu_us_per_msg: median_f64(encrypted_cpu),
            };
            println!("{}", serde_json::to_string(&line)?);
        }
        BenchCommand::Consume {
            topic,
            msgs,
            timeout_ms,
            group: None,
            ..
        } => {
            let mut consumer = Consumer::new(client);
            consumer.assign_all(&topic, Offset::Beginning).await?;
            let idle = Duration::from_millis(timeout_ms);
            let want = msgs.unwrap_or(u64::MAX);
            let (mut count, mut bytes) = (0u64, 0u64);
            let mut latencies = Vec::new();
            let started = Instant::now();
            let mut last_new = Instant::now();
            while count < want && last_new.elapsed() < idle {
                let t0 = Instant::now();
                let records = consumer
                    .poll(idle.saturating_sub(last_new.elapsed()))
                    .await?;
                if records.is_empty() {
                    continue;
                }
                // Latency here is one poll's round trip, charged to each record it
                // returned (a consumer has no per-message send time).
                let us = t0.elapsed().as_micros() as u64;
                last_new = Instant::now();
                for r in &records {
                    count += 1;
                    bytes += r.value.len() as u64;
                    latencies.push(us);
                }
            }
            let elapsed = last_new.saturating_duration_since(started);
            if count == 0 {
                bail!("no message in topic {topic:?} within {timeout_ms} ms");
            }
            let r = report(count, bytes, elapsed, latencies);
            println!("{}", serde_json::to_string(&r)?);
        }
        BenchCommand::Consume {
            topic,
            msgs,
            timeout_ms,
            group: Some(group),
            consumers,
        } => {
            let idle = Duration::from_millis(timeout_ms);
            let consumers = consumers as usize;
            let partitions = client.partition_count(&topic).await?;
            // Plain consumers first (the group, reading second, gets no colder cache).
            let plain =
                bench_side(&client, &topic, None, consumers, partitions, msgs, idle).await?;
            if plain.msgs == 0 {
                bail!("no message in topic {topic:?} within {timeout_ms} ms");
            }
            let want = Some(msgs.unwrap_or(plain.msgs));
            let grouped = bench_side(
                &client,
                &topic,
                Some(&group),
                consumers,
                partitions,
                want,
                idle,
            )
            .await?;
            if grouped.msgs < plain.msgs {
                eprintln!(
                    "warning: the group read {} messages, the plain consumers {}: does group {group:?} have committed offsets already? Use a new group name.",
                    grouped.msgs, plain.msgs
                );
            }
            let line = GroupBenchReport {
                consumers: consumers as u32,
                ratio: grouped.msgs_per_s / plain.msgs_per_s.max(1e-9),
                group: grouped,
                plain,
            };
            println!("{}", serde_json::to_string(&line)?);
        }
        BenchCommand::Commit(args) => bench_group::commit(client, args).await?,
        BenchCommand::Rebalance(args) => bench_group::rebalance(client, args).await?,
        BenchCommand::Queue(args) => return bench_queue::queue(client, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The line `neo bench consume --group` prints.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct GroupBenchReport {
    pub(crate) consumers: u32,
    pub(crate) group: BenchReport,
    pub(crate) plain: BenchReport,
    /// `group.msgs_per_s / plain.msgs_per_s`.
    pub(crate) ratio: f64,
}

/// Progress shared by the consumers of one side of the comparison.
#[derive(Debug)]
struct Progress {
    started: Instant,
    msgs: AtomicU64,
    bytes: AtomicU64,
    /// Microseconds from `started` to the newest record any consumer got.
    last_us: AtomicU64,
    /// `Error::Fenced` answers (a member lost its membership; it joins again on its
    /// next poll and reads again from the group's committed offsets).
    fenced: AtomicU64,
}

impl Progress {
    fn idle_for(&self) -> Duration {
        let last = Duration::from_micros(self.last_us.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// One side of `bench consume --group`: `consumers` consumers reading `topic` from the
/// beginning, as members of `group`, or (no group) each assigned the partitions `p`
/// with `p % consumers == i`. Ends once `want` messages were read in all, or nothing
/// new came for `idle`. Elapsed time runs from before the consumers start (the group
/// side's join and first assignment included) to the last message.
async fn bench_side(
    client: &Client,
    topic: &str,
    group: Option<&str>,
    consumers: usize,
    partitions: u32,
    want: Option<u64>,
    idle: Duration,
) -> anyhow::Result<BenchReport> {
    let want = want.unwrap_or(u64::MAX);
    let progress = Arc::new(Progress {
        started: Instant::now(),
        msgs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        fenced: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for i in 0..consumers {
        let (client, topic, group) = (client.clone(), topic.to_string(), group.map(String::from));
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut source = match group {
                Some(group) => {
                    let config = GroupConsumerConfig {
                        client_id: format!("neo-bench-{i}"),
                        auto_offset_reset: AutoOffsetReset::Earliest,
                        ..GroupConsumerConfig::default()
                    };
                    let member =
                        GroupConsumer::subscribe(client, &group, &[&topic], config).await?;
                    Source::Group(Box::new(member))
                }
                None => {
                    let mut consumer = Consumer::new(client);
                    let mine: Vec<u32> = (0..partitions)
                        .filter(|p| *p as usize % consumers == i)
                        .collect();
                    if !mine.is_empty() {
                        consumer.assign(&topic, &mine, Offset::Beginning).await?;
                    }
                    Source::Plain(consumer)
                }
            };
            let mut latencies = Vec::new();
            while progress.msgs.load(Ordering::Relaxed) < want && progress.idle_for() < idle {
                let t0 = Instant::now();
                let wait = idle
                    .saturating_sub(progress.idle_for())
                    .min(Duration::from_millis(200));
                let records = match &mut source {
                    Source::Group(c) => match c.poll(wait).await {
                        Err(Error::Fenced { .. }) => {
                            progress.fenced.fetch_add(1, Ordering::Relaxed);
                            Vec::new()
                        }
                        records => records?,
                    },
                    Source::Plain(c) if c.assignment().is_empty() => {
                        tokio::time::sleep(wait).await;
                        Vec::new()
                    }
                    Source::Plain(c) => c.poll(wait).await?,
                };
                if records.is_empty() {
                    continue;
                }
                let us = t0.elapsed().as_micros() as u64;
                let bytes: u64 = records.iter().map(|r| r.value.len() as u64).sum();
                progress
                    .msgs
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                let now_us = progress.started.elapsed().as_micros() as u64;
                progress.last_us.fetch_max(now_us, Ordering::Relaxed);
                latencies.extend(std::iter::repeat_n(us, records.len()));
            }
            if let Source::Group(c) = source {
                match c.close().await {
                    Err(Error::Fenced { .. }) => {
                        progress.fenced.fetch_add(1, Ordering::Relaxed);
                    }
                    closed => closed?,
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("bench consumer task")??);
    }
    let fenced = progress.fenced.load(Ordering::Relaxed);
    if fenced > 0 {
        eprintln!(
            "warning: members of group {:?} were fenced {fenced} times (each joined again and read again from the committed offsets)",
            group.unwrap_or_default()
        );
    }
    let elapsed = Duration::from_micros(progress.last_us.load(Ordering::Relaxed));
    Ok(report(
        progress.msgs.load(Ordering::Relaxed),
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        latencies,
    ))
}

/// A bench consumer of either side.
enum Source {
    Group(Box<GroupConsumer>),
    Plain(Consumer),
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("neo").chain(args.iter().copied()))
    }

    fn commit_args(extra: &[&str]) -> Result<CommitArgs, clap::Error> {
        let base = ["bench", "commit", "--topic", "t", "--group", "g"];
        match parse(&[&base[..], extra].concat())?.command {
            Command::Bench(BenchCommand::Commit(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    fn rebalance_args(extra: &[&str]) -> Result<RebalanceArgs, clap::Error> {
        let base = ["bench", "rebalance", "--topic", "t"];
        match parse(&[&base[..], extra].concat())?.command {
            Command::Bench(BenchCommand::Rebalance(a)) => Ok(a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bench_produce_encrypt_flags() {
        let base = [
            "bench", "produce", "--topic", "t", "--msgs", "1", "--size", "1",
        ];
        let flags = |extra: &[&str]| -> Result<_, clap::Error> {
            Ok(match parse(&[&base[..], extra].concat())?.command {
                Command::Bench(BenchCommand::Produce {
                    encrypt,
                    compare_plain,
                    ..
                }) => (encrypt, compare_plain),
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(flags(&[]).unwrap(), (None, None));
        assert_eq!(
            flags(&["--encrypt", "aes256gcm"]).unwrap(),
            (Some(EncryptArg::Aes256gcm), None)
        );
        assert_eq!(
            flags(&["--encrypt", "chacha20poly1305", "--compare-plain", "3"]).unwrap(),
            (Some(EncryptArg::Chacha20poly1305), Some(3))
        );
        assert!(flags(&["--encrypt", "rot13"]).is_err());
        assert!(
            flags(&["--compare-plain", "3"]).is_err(),
            "--compare-plain needs --encrypt"
        );
        assert!(flags(&["--encrypt", "aes256gcm", "--compare-plain", "0"]).is_err());
        let run = |msgs_per_s| report(1, 1, Duration::from_secs_f64(1.0 / msgs_per_s), vec![]);
        let mid = median(vec![run(3.0), run(1.0), run(2.0)]).unwrap();
        assert!((mid.msgs_per_s - 2.0).abs() < 1e-6, "{mid:?}");
        assert!(median(Vec::new()).is_none());
        assert_eq!(median_f64(vec![0.9, 0.7, 1.1, 0.8]), Some(0.9));
        assert_eq!(median_f64(Vec::new()), None);
        if cfg!(target_os = "linux") {
            assert!(process_cpu().is_some(), "/proc/self/stat parses");
        }
    }

    #[test]
    fn bench_commit_flags() {
        let a = commit_args(&[]).unwrap();
        assert_eq!((a.topic.as_str(), a.group.as_str()), ("t", "g"));
        assert_eq!((a.consumers, a.duration_ms), (64, 10_000));
        assert_eq!(a.session_timeout_ms, 10_000);
        let a = commit_args(&["--consumers", "8", "--duration-ms", "500"]).unwrap();
        assert_eq!((a.consumers, a.duration_ms), (8, 500));
        assert!(
            parse(&["bench", "commit", "--topic", "t"]).is_err(),
            "--group is required"
        );
        assert!(
            parse(&["bench", "commit", "--group", "g"]).is_err(),
            "--topic is required"
        );
        for bad in [
            &["--consumers", "0"][..],
            &["--consumers", "1001"],
            &["--duration-ms", "0"],
            &["--session-timeout-ms", "999"],
        ] {
            assert!(commit_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bench_rebalance_flags() {
        let a = rebalance_args(&[]).unwrap();
        assert_eq!((a.topic.as_str(), a.group.as_deref()), ("t", None));
        assert_eq!((a.members, a.rounds, a.kill), (10, 20, false));
        assert_eq!((a.session_timeout_ms, a.pause_ms), (10_000, None));
        assert_eq!(bench_group::default_pause_ms(10_000), 3_500);
        assert_eq!(bench_group::default_pause_ms(3_000), 1_500);
        let a = rebalance_args(&[
            "--group",
            "g",
            "--members",
            "3",
            "--rounds",
            "2",
            "--kill",
            "--session-timeout-ms",
            "3000",
            "--pause-ms",
            "0",
        ])
        .unwrap();
        assert_eq!(a.group.as_deref(), Some("g"));
        assert_eq!((a.members, a.rounds, a.kill), (3, 2, true));
        assert_eq!((a.session_timeout_ms, a.pause_ms), (3000, Some(0)));
        assert!(
            parse(&["bench", "rebalance"]).is_err(),
            "--topic is required"
        );
        for bad in [
            &["--members", "1"][..],
            &["--rounds", "0"],
            &["--session-timeout-ms", "300001"],
            &["--kill", "yes"],
            &["--pause-ms", "-1"],
        ] {
            assert!(rebalance_args(bad).is_err(), "{bad:?}");
        }
    }
}
