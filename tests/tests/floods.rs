//! Floods and slow clients (issue 22) against a real `neo-node`, each test bounded well
//! under a minute, every one asserting on data: what was acknowledged is read back
//! intact.
//!
//! - A connection flood past a small `--connections-max` (64; the default is 10 000,
//!   the same code path scaled down): every connection beyond it gets a typed `Busy`
//!   on correlation id 0 and is closed, a storm of connects and closes goes on
//!   meanwhile, a client connected before keeps producing and reading, and a new
//!   client afterwards does too.
//! - A client that trickles a frame one byte at a time (slowloris) is told `Timeout`
//!   and closed after `--frame-read-timeout-ms`; a client that sends requests and never
//!   reads its replies is closed after `--write-timeout-ms`; a normal client produces
//!   and reads throughout.
//! - Out of file descriptors: the node's open-files limit is lowered (`prlimit`) to a
//!   little above what it uses, then more connections arrive than it can hold: `accept`
//!   fails with EMFILE, the node backs off (no spin, no crash), the client connected
//!   before keeps producing and reading, and once the flood leaves new clients get in.
//! - Producing faster than the node takes it, with a small
//!   `--inflight-request-bytes-max`: the producer meets `Busy` (counted on `/metrics`),
//!   retries, and every acknowledged record is read back intact, once.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::{Bytes, BytesMut};
use neo_client::{
    Admin, Client, Consumer, Offset, Producer, ProducerConfig, ProducerRecord, RetryPolicy,
};
use neo_protocol::ErrorCode;
use neo_protocol::frame::{self, EncodeOptions, Frame, Kind};
use neo_tests::TestCluster;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on every wait for records or for the node to act.
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Frames the tests read are small; this only bounds a bug.
const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Runs `scenario` on one fresh node started with `args`; prints its log tail if the
/// scenario fails.
async fn with_node<F>(args: &[&str], scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<()>,
{
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut cluster = TestCluster::start_with_args(1, &args)?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(80));
    }
    result
}

/// The value of record `i` of phase `tag`.
fn value(tag: &str, i: usize) -> String {
    format!("{tag}-{i:05}")
}

/// Produce `n` records of phase `tag` to partition 0 of `topic` (one partition) and
/// wait for every acknowledgement.
async fn produce(client: &Client, topic: &str, tag: &str, n: usize) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone());
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic, value(tag, i)))
                .await?,
        );
    }
    producer.flush().await;
    for delivery in deliveries {
        tokio::time::timeout(WAIT_MAX, delivery)
            .await
            .with_context(|| format!("{tag}: acknowledgement within {WAIT_MAX:?}"))??;
    }
    Ok(())
}

/// Every record of partition 0 of `topic` from the beginning, until `count` came.
async fn read_all(client: &Client, topic: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0], Offset::Beginning).await?;
    let deadline = Instant::now() + WAIT_MAX;
    let mut out = Vec::new();
    while out.len() < count {
        ensure!(
            Instant::now() < deadline,
            "{topic}: {} of {count} records",
            out.len()
        );
        for record in consumer.poll(Duration::from_millis(200)).await? {
            out.push(String::from_utf8(record.value.to_vec())?);
        }
    }
    Ok(out)
}

/// The records of `topic` must be exactly the phases `tags` of `n` records each, in
/// order: every acknowledged record, intact, once.
async fn check_log(client: &Client, topic: &str, tags: &[&str], n: usize) -> anyhow::Result<()> {
    let expected: Vec<String> = tags
        .iter()
        .flat_map(|tag| (0..n).map(move |i| value(tag, i)))
        .collect();
    let read = read_all(client, topic, expected.len()).await?;
    ensure!(
        read == expected,
        "{topic}: {} records read, {} expected; first difference at {:?}",
        read.len(),
        expected.len(),
        read.iter().zip(&expected).position(|(a, b)| a != b)
    );
    Ok(())
}

/// A LEB128 varint at the start of `bytes`, and what follows it.
fn varint(bytes: &[u8]) -> anyhow::Result<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    bail!("bad varint")
}

/// Code and message of an `Error` frame's body (a Qiss `RpcError`: the code as a
/// varint, then the message as a length-prefixed string).
fn error_of(frame: &Frame) -> anyhow::Result<(u16, String)> {
    ensure!(frame.kind == Kind::Error, "not an error frame: {frame:?}");
    let (code, rest) = varint(&frame.body)?;
    let (len, rest) = varint(rest)?;
    let message = rest.get(..len as usize).context("message cut short")?;
    Ok((u16::try_from(code)?, String::from_utf8(message.to_vec())?))
}

/// What a raw connection received: its frames (pings left out) and whether the node
/// closed it (end of stream or reset) before `deadline`.
async fn read_until_closed<R: AsyncRead + Unpin>(
    socket: &mut R,
    deadline: Instant,
) -> (Vec<Frame>, bool) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Ok(Some(frame)) = frame::decode(&mut buf, FRAME_BYTES_MAX) {
            if frame.kind != Kind::Ping {
                frames.push(frame);
            }
        }
        match tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (frames, false),
        }
    }
}

fn encoded(frame: &Frame) -> anyhow::Result<BytesMut> {
    let mut buf = BytesMut::new();
    frame::encode(frame, &EncodeOptions::default(), &mut buf)?;
    Ok(buf)
}

/// A client of `cluster`, retried until the node takes its connection.
async fn connect_when_room(cluster: &TestCluster) -> anyhow::Result<Client> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match Client::connect(&cluster.client_addrs()).await {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() < deadline => {
                eprintln!("connect: {err}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

const FLOOD_CONNECTIONS_MAX: usize = 64;
const FLOOD_CONNECTIONS: usize = 256;
const RECORDS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_flood_gets_typed_busy_refusals_and_clients_keep_their_data()
-> anyhow::Result<()> {
    let max = FLOOD_CONNECTIONS_MAX.to_string();
    with_node(&["--connections-max", &max], async |cluster: &mut TestCluster| {
        let addr = cluster.spec(1).client;
        let client = connect_when_room(cluster).await?;
        Admin::new(client.clone()).create_topic("flood", 1, 1).await?;
        produce(&client, "flood", "before", RECORDS).await?;

        // The flood: many more connections than the node takes, all kept open.
        let mut flood = Vec::with_capacity(FLOOD_CONNECTIONS);
        for _ in 0..FLOOD_CONNECTIONS {
            flood.push(TcpStream::connect(addr).await?);
        }
        // A refused one hears `Busy` on correlation id 0 at once and is closed; an
        // accepted one hears nothing (it sent nothing) and stays open.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut readers = Vec::new();
        for mut socket in flood {
            readers.push(tokio::spawn(async move {
                let (frames, closed) = read_until_closed(&mut socket, deadline).await;
                (socket, frames, closed)
            }));
        }
        let (mut open, mut refused) = (Vec::new(), 0usize);
        for reader in readers {
            let (socket, frames, closed) = reader.await?;
            match (frames.as_slice(), closed) {
                ([], false) => open.push(socket),
                ([refusal], true) => {
                    ensure!(refusal.correlation_id == 0, "refusal on {refusal:?}");
                    let (code, message) = error_of(refusal)?;
                    ensure!(
                        code == ErrorCode::Busy.as_u16() && message.contains("connections_max"),
                        "refusal with code {code}: {message}"
                    );
                    refused += 1;
                }
                (frames, closed) => bail!("unexpected: {frames:?}, closed: {closed}"),
            }
        }
        ensure!(
            open.len() <= FLOOD_CONNECTIONS_MAX
                && refused >= FLOOD_CONNECTIONS - FLOOD_CONNECTIONS_MAX,
            "{} connections open and {refused} refused with connections_max {FLOOD_CONNECTIONS_MAX}",
            open.len()
        );

        // A storm of connects and closes on top, while the client connected before the
        // flood keeps producing and reading.
        let stop = Instant::now() + Duration::from_secs(2);
        let mut storms = Vec::new();
        for _ in 0..4 {
            storms.push(tokio::spawn(async move {
                let mut connects = 0u64;
                while Instant::now() < stop {
                    if let Ok(Ok(socket)) =
                        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
                    {
                        connects += 1;
                        drop(socket);
                    }
                }
                connects
            }));
        }
        produce(&client, "flood", "during", RECORDS).await?;
        let mut connects = 0;
        for storm in storms {
            connects += storm.await?;
        }
        ensure!(connects > 0, "the storm made no connection");
        check_log(&client, "flood", &["before", "during"], RECORDS).await?;

        // The flood leaves: a new client gets in and finds every record.
        drop(open);
        let fresh = connect_when_room(cluster).await?;
        produce(&fresh, "flood", "after", RECORDS).await?;
        check_log(&fresh, "flood", &["before", "during", "after"], RECORDS).await?;
        Ok(())
    })
    .await
}

/// Requests a never-reading client sends: `describe` replies (a few KiB each, answered
/// inline) fill any socket buffer many times over.
const UNREAD_REQUESTS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_and_never_reading_clients_are_closed_while_others_keep_their_data()
-> anyhow::Result<()> {
    let args = [
        "--frame-read-timeout-ms",
        "1000",
        "--write-timeout-ms",
        "1000",
    ];
    with_node(&args, async |cluster: &mut TestCluster| {
        let addr = cluster.spec(1).client;
        let client = connect_when_room(cluster).await?;
        Admin::new(client.clone())
            .create_topic("slow", 1, 1)
            .await?;
        produce(&client, "slow", "before", RECORDS).await?;

        // Slowloris: a frame header announcing a 1000-byte body, then a byte every
        // 100 ms (the whole frame would take ~100 s).
        let mut slowloris = TcpStream::connect(addr).await?;
        let trickled = encoded(&Frame {
            kind: Kind::Request,
            service_id: 0,
            method_id: 1,
            correlation_id: 1,
            body: Bytes::from(vec![0u8; 1000]),
        })?;
        slowloris.write_all(&trickled[..10]).await?;
        let (mut slow_read, mut slow_write) = slowloris.into_split();
        let trickler = tokio::spawn(async move {
            for byte in &trickled[10..] {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow_write.write_all(&[*byte]).await.is_err() {
                    return true;
                }
            }
            false
        });

        // Never reads: pipelines `describe` requests and reads nothing back.
        let mut requests = BytesMut::new();
        for id in 1..=UNREAD_REQUESTS {
            requests.extend_from_slice(&encoded(&Frame {
                kind: Kind::Request,
                service_id: 0,
                method_id: 1,
                correlation_id: id,
                body: Bytes::new(),
            })?);
        }
        let deaf = TcpStream::connect(addr).await?;
        let (mut deaf_read, mut deaf_write) = deaf.into_split();
        let sender = tokio::spawn(async move {
            // Blocks once the node stops reading it; bounded, its outcome ignored.
            let _ = tokio::time::timeout(WAIT_MAX, deaf_write.write_all(&requests)).await;
            deaf_write
        });

        // Meanwhile a normal client on its own connection produces and reads.
        produce(&client, "slow", "during", RECORDS).await?;
        check_log(&client, "slow", &["before", "during"], RECORDS).await?;

        // The slowloris hears `Timeout` on correlation id 0 and is closed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (frames, closed) = read_until_closed(&mut slow_read, deadline).await;
        trickler.abort();
        ensure!(closed, "the slowloris is still connected: {frames:?}");
        match frames.as_slice() {
            [timeout] if timeout.correlation_id == 0 => {
                let (code, message) = error_of(timeout)?;
                ensure!(
                    code == ErrorCode::Timeout.as_u16() && message.contains("frame_read_timeout"),
                    "slowloris told {code}: {message}"
                );
            }
            other => bail!("the slowloris got {other:?}"),
        }

        // The never-reading client was given up on: reading now finds the replies the
        // node wrote before its write timed out, then the end of the connection, not
        // every reply (the node would have kept them all for it).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (frames, closed) = read_until_closed(&mut deaf_read, deadline).await;
        drop(sender.await?);
        ensure!(
            closed && (frames.len() as u64) < UNREAD_REQUESTS,
            "never-reading client: {} replies, closed: {closed}",
            frames.len()
        );
        ensure!(
            frames.iter().all(|f| f.kind == Kind::Response),
            "only whole replies before the close"
        );

        // And the normal client goes on, its every record intact.
        produce(&client, "slow", "after", RECORDS).await?;
        check_log(&client, "slow", &["before", "during", "after"], RECORDS).await?;
        Ok(())
    })
    .await
}

/// Records of the backpressure test, and their value size.
const FAST_RECORDS: usize = 4000;
const FAST_VALUE_BYTES: usize = 1024;
const FAST_PARTITIONS: u32 = 8;

/// The value of record `i` of the backpressure test: its id, then filler derived from it.
fn fast_value(i: usize) -> Vec<u8> {
    let mut v = format!("fast-{i:06}-").into_bytes();
    v.extend((0..FAST_VALUE_BYTES - v.len()).map(|j| b'a' + ((i + j) % 26) as u8));
    v
}

/// `neo_rpc_requests_total{method="produce",code="busy"}` on the node's `/metrics`.
fn produce_busy_count(cluster: &TestCluster) -> anyhow::Result<u64> {
    let (status, body) = neo_tests::cluster::http_get(cluster.spec(1).http, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    let mut total = 0;
    for line in body.lines() {
        if line.starts_with("neo_rpc_requests_total{")
            && line.contains("method=\"produce\"")
            && line.contains("code=\"busy\"")
        {
            let value = line.rsplit(' ').next().context("no value")?;
            total += value.parse::<f64>()? as u64;
        }
    }
    Ok(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producing_faster_than_the_node_takes_gets_busy_and_loses_nothing_acknowledged()
-> anyhow::Result<()> {
    // Room for about four 64 KiB batches in flight on the whole node.
    let args = ["--inflight-request-bytes-max", "262144"];
    with_node(&args, async |cluster: &mut TestCluster| {
        let client = connect_when_room(cluster).await?;
        Admin::new(client.clone())
            .create_topic("fast", FAST_PARTITIONS, 1)
            .await?;
        ensure!(produce_busy_count(cluster)? == 0, "Busy before any load");
        // 8 partitions × 4 batches of 64 KiB in flight: eight times the node's room.
        let producer = Producer::with_config(
            client.clone(),
            ProducerConfig {
                batch_size_bytes: 64 * 1024,
                linger: Duration::from_millis(2),
                partition_inflight_batches_max: 4,
                retry: RetryPolicy {
                    backoff_initial: Duration::from_millis(10),
                    backoff_max: Duration::from_millis(200),
                    attempts_max: 1000,
                    deadline: WAIT_MAX,
                },
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::with_capacity(FAST_RECORDS);
        for i in 0..FAST_RECORDS {
            let record = ProducerRecord::new("fast", fast_value(i)).key(format!("k{i}"));
            deliveries.push((i, producer.send(record).await?));
        }
        producer.flush().await;
        let mut acknowledged = Vec::new();
        let mut failed = Vec::new();
        for (i, delivery) in deliveries {
            match tokio::time::timeout(WAIT_MAX, delivery).await {
                Ok(Ok(_)) => acknowledged.push(i),
                Ok(Err(err)) => failed.push((i, err.to_string())),
                Err(_) => bail!("record {i}: no outcome within {WAIT_MAX:?}"),
            }
        }
        let busy = produce_busy_count(cluster)?;
        eprintln!(
            "{} acknowledged, {} failed, {busy} produce requests answered Busy",
            acknowledged.len(),
            failed.len()
        );
        ensure!(busy > 0, "the node never pushed back with Busy");
        ensure!(
            !acknowledged.is_empty(),
            "nothing acknowledged: {:?}",
            failed.first()
        );

        // Every acknowledged record is stored once, intact.
        let mut consumer = Consumer::new(client.clone());
        consumer.assign_all("fast", Offset::Beginning).await?;
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        let deadline = Instant::now() + WAIT_MAX;
        while !acknowledged.iter().all(|i| seen.contains_key(i)) {
            ensure!(
                Instant::now() < deadline,
                "{} of {} acknowledged records read back",
                acknowledged.iter().filter(|i| seen.contains_key(i)).count(),
                acknowledged.len()
            );
            for record in consumer.poll(Duration::from_millis(200)).await? {
                let id: usize = std::str::from_utf8(&record.value[5..11])?.parse()?;
                ensure!(
                    record.value[..] == fast_value(id)[..],
                    "record {id} corrupted"
                );
                *seen.entry(id).or_default() += 1;
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(twice.is_empty(), "records stored twice: {twice:?}");
        Ok(())
    })
    .await
}

/// Descriptors above the node's count at the time its limit is lowered: room for a few
/// connections, far fewer than the flood.
const EMFILE_HEADROOM: usize = 16;
const EMFILE_FLOOD: usize = 200;

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_file_descriptors_the_node_backs_off_and_recovers() -> anyhow::Result<()> {
    with_node(&[], async |cluster: &mut TestCluster| {
        let client = connect_when_room(cluster).await?;
        Admin::new(client.clone()).create_topic("fds", 1, 1).await?;
        produce(&client, "fds", "before", RECORDS).await?;

        // Lower the running node's limit to just above what it holds now.
        let pid = cluster.pid(1).context("node 1 runs")?;
        let limit = open_fds(pid)? + EMFILE_HEADROOM;
        let status = std::process::Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={limit}:{limit}"))
            .status()
            .context("run prlimit (util-linux)")?;
        ensure!(
            status.success(),
            "prlimit --nofile={limit} failed: {status}"
        );

        // The flood: the kernel completes every handshake (the listen backlog), the node
        // accepts until it runs out of descriptors, then its accepts fail with EMFILE.
        let addr = cluster.spec(1).client;
        let mut flood = Vec::with_capacity(EMFILE_FLOOD);
        for _ in 0..EMFILE_FLOOD {
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
                Ok(Ok(socket)) => flood.push(socket),
                // A full backlog drops further handshakes: the flood is big enough.
                _ => break,
            }
        }
        let deadline = Instant::now() + WAIT_MAX;
        while !cluster.log_tail(1, 200).contains("accept failed") {
            ensure!(
                Instant::now() < deadline,
                "the node never ran out of descriptors ({} flood connections, limit {limit}, \
                 {} open)",
                flood.len(),
                open_fds(pid)?
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Out of descriptors: the client connected before keeps producing and reading.
        produce(&client, "fds", "during", RECORDS).await?;
        check_log(&client, "fds", &["before", "during"], RECORDS).await?;
        ensure!(cluster.is_running(1), "the node died out of descriptors");

        // The flood leaves: its descriptors come back, a new client gets in.
        drop(flood);
        let fresh = connect_when_room(cluster).await?;
        produce(&fresh, "fds", "after", RECORDS).await?;
        check_log(&fresh, "fds", &["before", "during", "after"], RECORDS).await?;
        Ok(())
    })
    .await
}
