//! `nats-bench`: the NATS JetStream half of `scripts/bench-vs-nats.sh`.
//!
//! `produce` measures exactly what `neo bench produce` measures (client/src/bin/neo/bench.rs):
//! one task on one connection keeps K B-byte messages awaiting their JetStream publish
//! acknowledgement (it publishes until K are outstanding, then waits for the oldest ack
//! before publishing the next); the latency of a message is publish call -> ack
//! received. Throughput is N over the wall time from the
//! first publish to the last ack. It prints the same JSON line as `neo bench`:
//! `{"msgs","bytes","elapsed_s","msgs_per_s","mb_per_s","p50_us","p99_us","p999_us"}`,
//! percentiles by nearest rank, like `neo bench`.
//!
//! `setup` (re)creates the stream: file storage, R replicas, no limits, and prints the
//! name of the server that leads it, so the load can go straight to the leader as Neo's
//! producer goes straight to the partition leader.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::ContextBuilder, context::PublishAckFuture, stream};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde::Serialize;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

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
    /// Delete and create the stream; print its leader.
    Setup {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        subject: String,
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Publish N messages of B bytes with K awaiting their ack at once.
    Produce {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        msgs: u64,
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        inflight: usize,
    },
}

/// The same fields, in the same order, as `neo bench`'s report.
#[derive(Serialize)]
struct BenchReport {
    msgs: u64,
    bytes: u64,
    elapsed_s: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

/// Nearest rank, as in `neo bench`.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Res<()> {
    let cli = Cli::parse();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .connect(cli.server.as_str())
        .await?;
    match cli.cmd {
        Cmd::Setup {
            stream,
            subject,
            replicas,
        } => {
            let js = jetstream::new(client.clone());
            let _ = js.delete_stream(&stream).await;
            let mut s = js
                .create_stream(stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject],
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await?;
            // A server outside a cluster leads every stream it has.
            let info = client.server_info();
            if info.cluster.as_deref().unwrap_or("").is_empty() {
                println!("{}", info.server_name);
                client.drain().await?;
                return Ok(());
            }
            // Wait until the stream's Raft group has elected a leader.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let info = s.info().await?;
                let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
                if let Some(leader) = leader {
                    println!("{leader}");
                    break;
                }
                if Instant::now() > deadline {
                    return Err("stream has no leader after 20 s".into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Cmd::Produce {
            subject,
            msgs,
            size,
            inflight,
        } => {
            let inflight = inflight.max(1);
            let js = ContextBuilder::new()
                .timeout(Duration::from_secs(30))
                .max_ack_inflight(inflight.max(5000))
                .backpressure_on_inflight(true)
                .build(client.clone());
            let value = Bytes::from(vec![b'x'; size]);
            let subject = async_nats::Subject::from(subject);
            // One task keeps `inflight` publishes awaiting their ack (the same loop as
            // `neo bench produce`): send until the window is full, then wait for the
            // oldest ack. JetStream acks one message at a time and in order on a
            // stream, so each ack's latency is taken when it arrives at the front.
            let mut window: VecDeque<(Instant, PublishAckFuture)> =
                VecDeque::with_capacity(inflight);
            let mut latencies = Vec::with_capacity(msgs as usize);
            let mut sent = 0u64;
            let started = Instant::now();
            while sent < msgs || !window.is_empty() {
                while window.len() < inflight && sent < msgs {
                    let t0 = Instant::now();
                    let ack = js.publish(subject.clone(), value.clone()).await?;
                    window.push_back((t0, ack));
                    sent += 1;
                }
                if let Some((t0, ack)) = window.pop_front() {
                    ack.await?;
                    latencies.push(t0.elapsed().as_micros() as u64);
                }
            }
            let elapsed = started.elapsed();
            latencies.sort_unstable();
            let secs = elapsed.as_secs_f64().max(1e-9);
            let bytes = msgs * size as u64;
            let r = BenchReport {
                msgs,
                bytes,
                elapsed_s: secs,
                msgs_per_s: msgs as f64 / secs,
                mb_per_s: bytes as f64 / secs / 1e6,
                p50_us: percentile(&latencies, 0.50),
                p99_us: percentile(&latencies, 0.99),
                p999_us: percentile(&latencies, 0.999),
            };
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    client.drain().await?;
    Ok(())
}
