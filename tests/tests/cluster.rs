//! Three real `neo-node` processes: 100k messages through the client while the leader
//! of a partition is killed with SIGKILL; every acknowledged message is read back at
//! its acknowledged offset exactly once, in per-partition order; the killed node
//! restarts, rejoins and catches up.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use neo_client::metadata::LeaderLookup;
use neo_client::{
    Admin, Client, Consumer, Delivery, Offset, Producer, ProducerConfig, ProducerRecord,
};
use neo_tests::TestCluster;

const TOPIC: &str = "e2e";
const PARTITIONS: u32 = 3;
const MESSAGES: u64 = 100_000;
const VALUE_BYTES: usize = 100;
/// Bound on the wait for the consumer to catch up with what was acknowledged.
const CONSUME_IDLE_MAX: Duration = Duration::from_secs(30);

fn value(seq: u64) -> String {
    format!("{seq:012}-{}", "x".repeat(VALUE_BYTES - 13))
}

fn seq_of(value: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(value.get(..12).context("short value")?)?;
    Ok(text.parse()?)
}

/// Sends `count` messages from `first` on, partition = seq % PARTITIONS; `on_sent` runs
/// after each send (to kill a node mid-stream). Returns the deliveries by seq.
async fn produce(
    producer: &Producer,
    first: u64,
    count: u64,
    mut on_sent: impl AsyncFnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<(u64, Delivery)>> {
    let mut deliveries = Vec::with_capacity(count as usize);
    for seq in first..first + count {
        let record = ProducerRecord::new(TOPIC, value(seq)).partition((seq % 3) as u32);
        deliveries.push((seq, producer.send(record).await?));
        on_sent(seq).await?;
    }
    producer.flush().await;
    Ok(deliveries)
}

/// Awaits deliveries: acknowledged seq → (partition, offset), and the failures.
async fn acks(
    deliveries: Vec<(u64, Delivery)>,
    acked: &mut BTreeMap<u64, (u32, u64)>,
) -> Vec<(u64, String)> {
    let mut failed = Vec::new();
    for (seq, delivery) in deliveries {
        match delivery.await {
            Ok(meta) => {
                acked.insert(seq, (meta.partition, meta.offset.expect("acks=all")));
            }
            Err(err) => failed.push((seq, err.to_string())),
        }
    }
    failed
}

/// Reads every partition from the beginning until every acknowledged offset was seen
/// (or nothing new came for `CONSUME_IDLE_MAX`). Returns (partition, offset) → seq.
async fn consume_all(
    client: &Client,
    acked: &BTreeMap<u64, (u32, u64)>,
) -> anyhow::Result<BTreeMap<(u32, u64), u64>> {
    let mut end: HashMap<u32, u64> = HashMap::new();
    for (p, o) in acked.values() {
        let e = end.entry(*p).or_default();
        *e = (*e).max(o + 1);
    }
    let mut consumer = Consumer::new(client.clone());
    consumer.assign_all(TOPIC, Offset::Beginning).await?;
    let mut seen = BTreeMap::new();
    let mut last_new = Instant::now();
    loop {
        let done = (0..PARTITIONS)
            .all(|p| consumer.position(TOPIC, p).unwrap_or(0) >= end.get(&p).copied().unwrap_or(0));
        if done {
            return Ok(seen);
        }
        if last_new.elapsed() > CONSUME_IDLE_MAX {
            bail!(
                "consumer stuck: positions {:?}, acknowledged ends {end:?}",
                consumer.assignment()
            );
        }
        for r in consumer.poll(Duration::from_millis(500)).await? {
            last_new = Instant::now();
            let previous = seen.insert((r.partition, r.offset), seq_of(&r.value)?);
            ensure!(
                previous.is_none(),
                "offset {}/{} returned twice by one consumer",
                r.partition,
                r.offset
            );
        }
    }
}

/// The checks of the issue: every acknowledged message at its acknowledged offset,
/// exactly once, and per-partition order. Returns a report line.
fn check(
    acked: &BTreeMap<u64, (u32, u64)>,
    seen: &BTreeMap<(u32, u64), u64>,
) -> anyhow::Result<String> {
    for (seq, at) in acked {
        match seen.get(at) {
            Some(s) if s == seq => {}
            other => bail!("acknowledged seq {seq} at {at:?}, but the log has {other:?} there"),
        }
    }
    // How often each seq is stored: more than once = a duplicate from a retry.
    let mut copies: HashMap<u64, u32> = HashMap::new();
    for seq in seen.values() {
        *copies.entry(*seq).or_default() += 1;
    }
    let duplicates: Vec<u64> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let unacked_stored = copies.keys().filter(|s| !acked.contains_key(s)).count();
    // Per-partition order: the first copies of a partition's seqs, in offset order,
    // are increasing (the producer keeps one batch in flight per partition).
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut first_seen = std::collections::HashSet::new();
    for ((p, o), seq) in seen {
        if !first_seen.insert(*seq) {
            continue;
        }
        if let Some(prev) = last.insert(*p, *seq) {
            ensure!(
                prev < *seq,
                "partition {p}: seq {seq} at offset {o} after seq {prev}"
            );
        }
    }
    let report = format!(
        "acknowledged {}, stored {} records, duplicates {} (e.g. {:?}), stored but not acknowledged {}",
        acked.len(),
        seen.len(),
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)],
        unacked_stored
    );
    ensure!(duplicates.is_empty(), "not exactly once: {report}");
    Ok(report)
}

async fn leader_of(client: &Client, cluster: &TestCluster, partition: u32) -> anyhow::Result<u64> {
    client.refresh_metadata().await?;
    match client.metadata().await?.leader(TOPIC, partition) {
        LeaderLookup::Address(a) => cluster.id_of(&a).context("leader address not a node"),
        other => bail!("no leader for partition {partition}: {other:?}"),
    }
}

/// No acknowledged message is lost or moved, none is stored twice (a batch whose reply
/// was lost to the kill is retried by the client and recognised by the new leader from
/// its producer stamp), per-partition order holds, and the restarted node catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_while_producing_loses_nothing_and_duplicates_nothing() -> anyhow::Result<()> {
    run().await
}

async fn run() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3)?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.logs(60));
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> anyhow::Result<()> {
    let client = Client::connect(&cluster.client_addrs()).await?;
    Admin::new(client.clone())
        .create_topic(TOPIC, PARTITIONS, 3)
        .await?;
    let producer = Producer::with_config(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(2),
            batch_size_bytes: 64 * 1024,
            ..ProducerConfig::default()
        },
    );

    // 1. Produce 100k; a third of the way in, SIGKILL partition 0's leader.
    let mut killed = None;
    let kill_at = MESSAGES / 3;
    let deliveries = produce(&producer, 0, MESSAGES, async |seq| {
        if seq == kill_at {
            let leader = leader_of(&client, cluster, 0).await?;
            eprintln!("killing node {leader}, leader of partition 0, after {seq} sends");
            cluster.kill(leader)?;
            killed = Some(leader);
        }
        Ok(())
    })
    .await?;
    let killed = killed.context("kill did not happen")?;
    let mut acked = BTreeMap::new();
    let failed = acks(deliveries, &mut acked).await;
    eprintln!(
        "produced {MESSAGES}: {} acknowledged, {} failed {:?}",
        acked.len(),
        failed.len(),
        failed.first()
    );
    ensure!(
        failed.is_empty(),
        "{} sends failed across the leader kill, first: {:?}",
        failed.len(),
        failed.first()
    );

    // 2. Every acknowledged message exactly once, in per-partition order.
    let seen = consume_all(&client, &acked).await?;
    eprintln!("after the kill: {}", check(&acked, &seen)?);

    // 3. The killed node restarts and rejoins.
    cluster.restart(killed)?;

    // 4. It caught up: stop another node, so that every commit now needs the restarted
    //    one; new acks=all writes succeed only if its log matches the leader's, and
    //    everything is still readable.
    let other = (1..=3).find(|id| *id != killed).expect("3 nodes");
    cluster.kill(other)?;
    eprintln!("restarted node {killed}, killed node {other}");
    let more = produce(&producer, MESSAGES, 3_000, async |_| Ok(())).await?;
    let failed = acks(more, &mut acked).await;
    ensure!(
        failed.is_empty(),
        "{} sends failed with node {killed} (restarted) and one other up: {:?}",
        failed.len(),
        failed.first()
    );
    let seen = consume_all(&client, &acked).await?;
    eprintln!("after the restart: {}", check(&acked, &seen)?);
    cluster.restart(other)?;
    Ok(())
}
