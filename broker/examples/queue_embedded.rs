//! Per-message cost of a work queue in process: produce + receive + ack through
//! `neo_broker::Embedded` (one node, no sockets, real storage, `fsync` before every
//! answer: `NodeStore::open`'s `Durability::Fsync`, the default). Recorded figures and
//! their reading: docs/BENCHMARKS.md, "Queues".
//!
//! ```text
//! cargo run --release -p neo-broker --example queue_embedded -- \
//!     [--messages N] [--size S] [--batches 10,100,1000] [--partitions P] \
//!     [--dir D] [--json]
//! ```
//!
//! Modes, each on a fresh queue of the same broker, every call awaited before the next
//! (except in `pipelined`):
//!
//! | mode | per round |
//! |---|---|
//! | `one per call` | `produce_to_queue` (1 message) ─▶ `consume_from_queue(max 1)` ─▶ `ack` (1 receipt): three Raft entries, three `fdatasync`s per message |
//! | `batch B` | one produce of a B-record batch (`Broker::produce`, what `produce_to_queue` does with one) ─▶ `consume_from_queue(max B)` until B came ─▶ one `ack` of the B receipts: three entries per B messages |
//! | `pipelined B x P, any partition` | P partitions; per partition a task producing B-record batches back to back, and P tasks calling `consume_from_queue(max B)` (every partition this node leads, one after the other) and acking what came, all at once |
//! | `pipelined B x P, own partition` | the same, but consumer task p receives only from partition p (`Broker::queue_receive` with `partition: Some(p)`, what a network `QueueConsumer`'s per-partition tasks do) |
//!
//! Each line gives the wall time per message of the whole round (produce + receive +
//! ack), messages per second, and the time per message of each step. `--dir` must be a
//! real disk (default /var/tmp): on tmpfs `fdatasync` costs nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use neo_broker::{BrokerLimits, Embedded, SecurityContext};
use neo_protocol::api::{
    Acks, DeadLetter, ProduceRequest, QueueMessage, QueueReceiveRequest, QueueSettings,
    ReceiptOutcome,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone)]
struct Opts {
    messages: u64,
    size: usize,
    batches: Vec<u32>,
    partitions: u32,
    dir: PathBuf,
    json: bool,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts {
        messages: 20_000,
        size: 100,
        batches: vec![10, 100, 1000],
        partitions: 4,
        dir: PathBuf::from("/var/tmp"),
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--messages" => o.messages = value()?.parse()?,
            "--size" => o.size = value()?.parse()?,
            "--batches" => {
                o.batches = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--partitions" => o.partitions = value()?.parse()?,
            "--dir" => o.dir = PathBuf::from(value()?),
            "--json" => o.json = true,
            "--bench" => {} // `cargo bench` passes it to examples run as benches
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if o.messages == 0 || o.partitions == 0 || o.batches.iter().any(|b| !(1..=1000).contains(b)) {
        return Err("--messages and --partitions at least 1, batches 1 to 1000".into());
    }
    Ok(o)
}

/// One measured mode.
#[derive(Debug)]
struct Line {
    mode: String,
    messages: u64,
    elapsed: Duration,
    /// Wall time spent in each step (sequential modes only), summed over the run.
    produce: Duration,
    receive: Duration,
    ack: Duration,
    /// Calls of each step.
    calls: [u64; 3],
}

impl Line {
    fn us_per_msg(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.messages.max(1) as f64
    }

    fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One batch of `count` records of `size` bytes.
fn batch(count: u32, size: usize) -> Res<Bytes> {
    let value = vec![b'x'; size];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut b = qiss::batch::BatchBuilder::new();
    for _ in 0..count {
        b.push(now, None, &[], &value)?;
    }
    Ok(b.build()?)
}

async fn produce_batch(emb: &Embedded, queue: &str, partition: u32, records: Bytes) -> Res<()> {
    let req = ProduceRequest {
        topic: queue.to_string(),
        partition,
        acks: Acks::All,
        timeout_ms: 30_000,
        producer: None,
        records,
    };
    emb.broker()
        .produce(&SecurityContext::internal(), req)
        .await?;
    Ok(())
}

async fn new_queue(emb: &Embedded, name: &str, partitions: u32) -> Res<()> {
    emb.create_queue(name, partitions, QueueSettings::default(), DeadLetter::None)
        .await?;
    // Wait until every partition leads (a first produce retries NotLeader itself;
    // a receive needs at least one led partition).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match emb.consume_from_queue(name, "warm-up", 1, 0).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn check_acked(outcomes: &[ReceiptOutcome]) -> Res<()> {
    if let Some(bad) = outcomes.iter().find(|o| **o != ReceiptOutcome::Ok) {
        return Err(format!("an ack answered {bad:?}").into());
    }
    Ok(())
}

/// `one per call`: each message produced, received and acked on its own.
async fn one_per_call(emb: &Embedded, o: &Opts, queue: &str) -> Res<Line> {
    new_queue(emb, queue, 1).await?;
    let value = vec![b'x'; o.size];
    let n = (o.messages / 10).clamp(1, 2_000); // three fsyncs each: keep it short
    let mut line = Line {
        mode: "one per call".into(),
        messages: n,
        elapsed: Duration::ZERO,
        produce: Duration::ZERO,
        receive: Duration::ZERO,
        ack: Duration::ZERO,
        calls: [0; 3],
    };
    let started = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        emb.produce_to_queue(queue, None, &value).await?;
        let t1 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() {
            got = emb.consume_from_queue(queue, "c", 1, 1000).await?;
            line.calls[1] += 1;
        }
        let t2 = Instant::now();
        let receipts: Vec<_> = got.iter().map(|m| m.receipt).collect();
        check_acked(&emb.ack(queue, &receipts).await?)?;
        let t3 = Instant::now();
        line.produce += t1 - t0;
        line.receive += t2 - t1;
        line.ack += t3 - t2;
        line.calls[0] += 1;
        line.calls[2] += 1;
    }
    line.elapsed = started.elapsed();
    Ok(line)
}

/// `batch B`: B messages per produce, per receive (as many receives as it takes) and
/// per ack.
async fn batched(emb: &Embedded, o: &Opts, queue: &str, b: u32) -> Res<Line> {
    new_queue(emb, queue, 1).await?;
    let rounds = o.messages.div_ceil(u64::from(b));
    let records = batch(b, o.size)?;
    let mut line = Line {
        mode: format!("batch {b}"),
        messages: rounds * u64::from(b),
        elapsed: Duration::ZERO,
        produce: Duration::ZERO,
        receive: Duration::ZERO,
        ack: Duration::ZERO,
        calls: [0; 3],
    };
    let started = Instant::now();
    for _ in 0..rounds {
        let t0 = Instant::now();
        produce_batch(emb, queue, 0, records.clone()).await?;
        let t1 = Instant::now();
        let mut got = Vec::with_capacity(b as usize);
        while got.len() < b as usize {
            let left = b - got.len() as u32;
            got.extend(emb.consume_from_queue(queue, "c", left, 1000).await?);
            line.calls[1] += 1;
        }
        let t2 = Instant::now();
        let receipts: Vec<_> = got.iter().map(|m| m.receipt).collect();
        check_acked(&emb.ack(queue, &receipts).await?)?;
        let t3 = Instant::now();
        line.produce += t1 - t0;
        line.receive += t2 - t1;
        line.ack += t3 - t2;
        line.calls[0] += 1;
        line.calls[2] += 1;
    }
    line.elapsed = started.elapsed();
    Ok(line)
}

/// Up to `max` messages of `partition` only (what `consume_from_queue` does for every
/// partition the node leads, in turn).
async fn receive_partition(
    emb: &Embedded,
    queue: &str,
    consumer: &str,
    partition: u32,
    max: u32,
) -> Res<Vec<QueueMessage>> {
    let req = QueueReceiveRequest {
        queue: queue.to_string(),
        share_group: None,
        consumer: consumer.to_string(),
        partition: Some(partition),
        messages_max: max,
        visibility_timeout_ms: 0,
        wait_ms_max: 50,
    };
    let r = emb
        .broker()
        .queue_receive(&SecurityContext::internal(), req)
        .await?;
    Ok(r.messages)
}

/// `pipelined B`: producers and consumers at once over `partitions` partitions; with
/// `own`, consumer p receives from partition p only.
async fn pipelined(emb: &Arc<Embedded>, o: &Opts, queue: &str, b: u32, own: bool) -> Res<Line> {
    let parts = o.partitions;
    new_queue(emb, queue, parts).await?;
    let per_partition = o.messages.div_ceil(u64::from(b) * u64::from(parts));
    let total = per_partition * u64::from(b) * u64::from(parts);
    let records = batch(b, o.size)?;
    let acked = Arc::new(AtomicU64::new(0));
    let calls: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..parts {
        let (emb, queue, records, calls) = (
            emb.clone(),
            queue.to_string(),
            records.clone(),
            calls.clone(),
        );
        tasks.spawn(async move {
            for _ in 0..per_partition {
                produce_batch(&emb, &queue, p, records.clone()).await?;
                calls[0].fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    for c in 0..parts {
        let (emb, queue, acked, calls) =
            (emb.clone(), queue.to_string(), acked.clone(), calls.clone());
        tasks.spawn(async move {
            let consumer = format!("c{c}");
            let deadline = Instant::now() + Duration::from_secs(600);
            while acked.load(Ordering::Relaxed) < total {
                if Instant::now() > deadline {
                    return Err("pipelined run did not finish in 600 s".into());
                }
                let got = if own {
                    receive_partition(&emb, &queue, &consumer, c, b).await?
                } else {
                    emb.consume_from_queue(&queue, &consumer, b, 50).await?
                };
                calls[1].fetch_add(1, Ordering::Relaxed);
                if got.is_empty() {
                    continue;
                }
                let receipts: Vec<_> = got.iter().map(|m| m.receipt).collect();
                check_acked(&emb.ack(&queue, &receipts).await?)?;
                calls[2].fetch_add(1, Ordering::Relaxed);
                acked.fetch_add(receipts.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let got = acked.load(Ordering::Relaxed);
    if got != total {
        return Err(format!("pipelined: {got} acked of {total}").into());
    }
    Ok(Line {
        mode: format!(
            "pipelined {b} x {parts} partitions, {} partition",
            if own { "own" } else { "any" }
        ),
        messages: total,
        elapsed,
        produce: Duration::ZERO,
        receive: Duration::ZERO,
        ack: Duration::ZERO,
        calls: [0, 1, 2].map(|i| calls[i].load(Ordering::Relaxed)),
    })
}

#[tokio::main]
async fn main() -> Res<()> {
    let o = parse_args()?;
    std::fs::create_dir_all(&o.dir)?;
    let dir = tempfile::Builder::new()
        .prefix("neo-queue-embedded.")
        .tempdir_in(&o.dir)?;
    let emb = Arc::new(Embedded::start(dir.path(), BrokerLimits::default()).await?);
    let mut lines = vec![one_per_call(&emb, &o, "q-one").await?];
    for &b in &o.batches {
        lines.push(batched(&emb, &o, &format!("q-batch-{b}"), b).await?);
    }
    for own in [false, true] {
        for &b in &o.batches {
            let name = format!("q-pipe-{b}-{}", if own { "own" } else { "any" });
            lines.push(pipelined(&emb, &o, &name, b, own).await?);
        }
    }
    if o.json {
        for l in &lines {
            println!(
                "{{\"mode\":\"{}\",\"messages\":{},\"size\":{},\"elapsed_s\":{:.6},\"us_per_msg\":{:.3},\"msgs_per_s\":{:.1},\"produce_us_per_msg\":{:.3},\"receive_us_per_msg\":{:.3},\"ack_us_per_msg\":{:.3},\"produce_calls\":{},\"receive_calls\":{},\"ack_calls\":{}}}",
                l.mode,
                l.messages,
                o.size,
                l.elapsed.as_secs_f64(),
                l.us_per_msg(l.elapsed),
                l.msgs_per_s(),
                l.us_per_msg(l.produce),
                l.us_per_msg(l.receive),
                l.us_per_msg(l.ack),
                l.calls[0],
                l.calls[1],
                l.calls[2]
            );
        }
    } else {
        println!(
            "one node, fsync before every answer, {} B values, data in {}",
            o.size,
            o.dir.display()
        );
        println!(
            "| mode | messages | µs per message (produce + receive + ack) | msgs/s | produce µs/msg | receive µs/msg | ack µs/msg | calls produce / receive / ack |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---|");
        for l in &lines {
            let step = |d: Duration| {
                if d.is_zero() {
                    "—".to_string()
                } else {
                    format!("{:.2}", l.us_per_msg(d))
                }
            };
            println!(
                "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} / {} / {} |",
                l.mode,
                l.messages,
                l.us_per_msg(l.elapsed),
                l.msgs_per_s(),
                step(l.produce),
                step(l.receive),
                step(l.ack),
                l.calls[0],
                l.calls[1],
                l.calls[2]
            );
        }
    }
    match Arc::try_unwrap(emb) {
        Ok(emb) => emb.shutdown().await,
        Err(_) => eprintln!("warning: broker still shared at exit"),
    }
    Ok(())
}
