//! Disk faults on real `neo-node` processes (issue 22): a full disk and a failed
//! `fdatasync`. Every test asserts on data: what was acknowledged is read back intact.
//!
//! - A single node whose data folder is a small tmpfs this test mounts (root only; the
//!   test says so and fails elsewhere): produce until the disk is full. Produce answers
//!   `StorageFull` (typed, never a panic), everything acknowledged reads back, the node
//!   stays ready, writes resume by themselves once a topic is deleted, and after a
//!   restart every segment recovers cleanly (nothing torn, nothing lost).
//! - With the reserve off (`--storage-reserve-bytes 0`) and the disk filled by another
//!   file: the log really hits `ENOSPC`, the replica stops and produce says
//!   `StorageFull`; once the file is deleted the node reopens the replica from its last
//!   good sync, writes resume, and everything acknowledged reads back.
//! - Three nodes, one follower's partition log armed with a failpoint (the node is built
//!   with the `failpoints` feature, as `cargo test --workspace` builds it) that makes
//!   one `fdatasync` return EIO: that replica stops (`/ready` lists it under
//!   `groups_stopped`), the other two keep committing, the node reopens it from its last
//!   good sync, it catches up, and the three replica digests match.
//! - Three nodes, a follower stopped and bytes flipped in two of its segments (a sealed
//!   one, trusted through its index files, and the active one): on restart it finds the
//!   damage (the batch CRCs, checked when the log is opened), cuts its log at the first
//!   bad batch (what followed goes to the log's `quarantine/` folder), the leader sends
//!   it the rest, and the three replica digests match.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use neo_client::{Admin, Client, Consumer, Offset, Producer, ProducerRecord};
use neo_protocol::ErrorCode;
use neo_tests::cluster::{http_get, replica_digest};
use neo_tests::{TestCluster, connect};

const WAIT_MAX: Duration = Duration::from_secs(60);
const RECORD_BYTES: usize = 4096;

/// A tmpfs of `mib` MiB mounted on a fresh folder; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts as root, or through `sudo -n` when not root (CI installs packages the
    /// same way).
    fn mount(mib: u64) -> anyhow::Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("neo-tmpfs-").tempdir()?;
        let size = format!("size={mib}m,mode=1777");
        let out = privileged("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(dir.path())
            .output()
            .context("run mount")?;
        ensure!(
            out.status.success(),
            "this test mounts a tmpfs and needs root or passwordless sudo: mount said {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = privileged("umount").arg(self.dir.path()).status();
    }
}

/// `program` as root: directly when this process is root, else through `sudo -n`.
fn privileged(program: &str) -> Command {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

fn value(topic: &str, i: usize) -> Vec<u8> {
    let mut v = format!("{topic}-{i:08}-").into_bytes();
    v.resize(RECORD_BYTES, b'a' + (i % 26) as u8);
    v
}

/// What one topic was sent: the indices acknowledged, and the next index to send.
#[derive(Debug, Default)]
struct Sent {
    acked: Vec<usize>,
    next: usize,
}

/// Sends up to `max` more records to `topic` in chunks of 64, stopping after the first
/// chunk in which one failed; returns that failure. A failed record's outcome is
/// unknown in general (it was refused, or it may still be stored), so later records of
/// the same chunk can be acknowledged after it.
async fn produce_until_full(
    client: &Client,
    topic: &str,
    sent: &mut Sent,
    max: usize,
) -> anyhow::Result<Option<neo_client::Error>> {
    let producer = Producer::new(client.clone());
    let end = sent.next + max;
    while sent.next < end {
        let chunk: Vec<usize> = (sent.next..end.min(sent.next + 64)).collect();
        sent.next += chunk.len();
        let mut pending = Vec::new();
        for &i in &chunk {
            pending.push((
                i,
                producer
                    .send(ProducerRecord::new(topic, value(topic, i)))
                    .await?,
            ));
        }
        producer.flush().await;
        let mut first_err = None;
        for (i, p) in pending {
            match p.await {
                Ok(_) => sent.acked.push(i),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return Ok(first_err);
        }
    }
    Ok(None)
}

/// Reads `topic`'s partition 0 from the start until every acknowledged record was seen:
/// each intact, in the order sent, none twice, none never sent. When every record sent
/// was acknowledged, that is exactly `0..sent.next`.
async fn read_back(client: &Client, topic: &str, sent: &Sent) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0], Offset::Beginning).await?;
    let started = Instant::now();
    let mut acked = sent.acked.clone();
    acked.sort_unstable();
    let mut want = acked.iter().peekable();
    let mut last: Option<usize> = None;
    while want.peek().is_some() {
        ensure!(
            started.elapsed() < WAIT_MAX,
            "{topic}: acknowledged record {:?} never read (last read: {last:?})",
            want.peek()
        );
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let head =
                String::from_utf8_lossy(&r.value[..r.value.len().min(topic.len() + 9)]).to_string();
            let i: usize = head
                .get(topic.len() + 1..)
                .and_then(|d| d.parse().ok())
                .with_context(|| format!("{topic}: a record that was never sent: {head:?}"))?;
            ensure!(i < sent.next, "{topic}: record {i} was never sent");
            ensure!(
                r.value.as_ref() == value(topic, i).as_slice(),
                "{topic}: record {i} differs"
            );
            ensure!(
                last.is_none_or(|l| i > l),
                "{topic}: record {i} after {last:?} (out of order or twice)"
            );
            last = Some(i);
            if let Some(w) = want.peek().filter(|w| ***w < i) {
                bail!("{topic}: acknowledged record {w} is missing");
            }
            if want.peek() == Some(&&i) {
                want.next();
            }
        }
    }
    Ok(())
}

fn ready(cluster: &TestCluster, id: u64) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, body) = http_get(cluster.spec(id).http, "/ready")?;
    Ok((status, serde_json::from_str(&body)?))
}

/// Produces to `topic` until one record is acknowledged (writes resumed).
async fn until_writes_resume(client: &Client, topic: &str, sent: &mut Sent) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match produce_until_full(client, topic, sent, 1).await? {
            None => return Ok(()),
            Some(e) => ensure!(
                started.elapsed() < WAIT_MAX,
                "{topic}: writes did not resume: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn disk_full(reserve: &str) -> anyhow::Result<()> {
    let fs = Tmpfs::mount(48)?;
    let data = fs.path();
    let args = [
        "--storage-reserve-bytes".to_string(),
        reserve.to_string(),
        "--segment-bytes".into(),
        (1024 * 1024).to_string(),
    ];
    let mut cluster = TestCluster::start_custom(1, &args, |spec| {
        spec.data_dir = data.clone();
        Ok(Vec::new())
    })?;
    let result = disk_full_scenario(&mut cluster, &data).await;
    logged(&cluster, result)
}

async fn disk_full_scenario(cluster: &mut TestCluster, data: &Path) -> anyhow::Result<()> {
    let client = connect(cluster).await?;
    let admin = Admin::new(client.clone());
    admin.create_topic("filler", 1, 1).await?;
    admin.create_topic("kept", 1, 1).await?;
    let mut kept = Sent::default();
    let err = produce_until_full(&client, "kept", &mut kept, 200).await?;
    ensure!(err.is_none(), "kept: {err:?}");
    let mut filled = Sent::default();
    let err = produce_until_full(&client, "filler", &mut filled, 100_000).await?;
    let err = err.context("the disk never filled")?;
    ensure!(
        err.code() == Some(ErrorCode::StorageFull),
        "a full disk must answer StorageFull, got: {err}"
    );
    eprintln!(
        "filler: {} records acknowledged, then: {err}",
        filled.acked.len()
    );
    // Full for every topic (a few small batches may still fit above the reserve).
    let err = produce_until_full(&client, "kept", &mut kept, 100).await?;
    ensure!(
        err.as_ref().and_then(|e| e.code()) == Some(ErrorCode::StorageFull),
        "kept on a full disk: {err:?}"
    );
    // Reads keep working; the node stays in the cluster.
    read_back(&client, "kept", &kept).await?;
    read_back(&client, "filler", &filled).await?;
    // Space freed: writes resume by themselves.
    admin.delete_topic("filler").await?;
    until_writes_resume(&client, "kept", &mut kept).await?;
    read_back(&client, "kept", &kept).await?;
    let started = Instant::now();
    while ready(cluster, 1)?.0 != 200 {
        ensure!(
            started.elapsed() < WAIT_MAX,
            "not ready: {:?}",
            ready(cluster, 1)?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // After a restart every segment recovers (no torn or corrupt batch) with the data.
    cluster.restart(1)?;
    cluster.wait_ready(1, WAIT_MAX)?;
    let client = connect(cluster).await?;
    read_back(&client, "kept", &kept).await?;
    ensure!(data.join("groups").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_storage_full_keeps_reads_and_resumes_when_space_is_freed()
-> anyhow::Result<()> {
    disk_full(&(8 * 1024 * 1024).to_string()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_reserve_off_a_replica_stopped_by_enospc_recovers_once_space_is_freed()
-> anyhow::Result<()> {
    let fs = Tmpfs::mount(32)?;
    let data = fs.path();
    let args = [
        "--storage-reserve-bytes".to_string(),
        "0".into(),
        "--segment-bytes".into(),
        (1024 * 1024).to_string(),
    ];
    let mut cluster = TestCluster::start_custom(1, &args, |spec| {
        spec.data_dir = data.clone();
        Ok(Vec::new())
    })?;
    let result = enospc_scenario(&mut cluster, fs.dir.path()).await;
    logged(&cluster, result)
}

async fn enospc_scenario(cluster: &mut TestCluster, mount: &Path) -> anyhow::Result<()> {
    let client = connect(cluster).await?;
    Admin::new(client.clone())
        .create_topic("kept", 1, 1)
        .await?;
    let mut kept = Sent::default();
    let err = produce_until_full(&client, "kept", &mut kept, 200).await?;
    ensure!(err.is_none(), "kept: {err:?}");
    // Another program fills the disk (what is left of it, but 256 KiB).
    let ballast = mount.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast)?;
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        f.sync_all().ok();
        let size = f.metadata()?.len();
        f.set_len(size.saturating_sub(256 * 1024))?;
    }
    let err = produce_until_full(&client, "kept", &mut kept, 10_000).await?;
    let err = err.context("the disk never filled")?;
    ensure!(
        err.code() == Some(ErrorCode::StorageFull),
        "ENOSPC in the log must answer StorageFull, got: {err}"
    );
    eprintln!("{} records acknowledged, then: {err}", kept.acked.len());
    std::fs::remove_file(&ballast)?;
    until_writes_resume(&client, "kept", &mut kept).await?;
    read_back(&client, "kept", &kept).await?;
    ensure!(
        cluster
            .log_tail(1, 400)
            .contains("reopened stopped replica"),
        "the stopped replica was not reopened"
    );
    Ok(())
}

/// `topic`/0 as node 1's `/v1/cluster` shows it (group, leader, replicas).
fn partition_view(cluster: &TestCluster, topic: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(cluster.spec(1).http, "/v1/cluster")?;
    ensure!(status == 200, "/v1/cluster: {status}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["topic"] == topic && p["partition"] == 0)
        .cloned()
        .context("no such partition in /v1/cluster")
}

/// The partition group id of `topic`/0.
fn group_of(cluster: &TestCluster, topic: &str) -> anyhow::Result<u64> {
    partition_view(cluster, topic)?["group"]
        .as_u64()
        .context("no group")
}

/// Waits until the three replicas of `topic`/0 hold the same committed log and `also`
/// holds; `what` names the wait in the error.
async fn converge(
    cluster: &TestCluster,
    topic: &str,
    what: &str,
    also: impl Fn(&TestCluster) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let all: Vec<String> = (1..=3)
            .map(|id| replica_digest(cluster, id, topic, 0))
            .collect::<anyhow::Result<_>>()
            .unwrap_or_default();
        if all.len() == 3 && all.iter().all(|d| *d == all[0]) && also(cluster)? {
            return Ok(());
        }
        ensure!(started.elapsed() < WAIT_MAX, "{what}: digests {all:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `scenario`'s result through: the nodes' log tails are printed if it failed.
fn logged(cluster: &TestCluster, result: anyhow::Result<()>) -> anyhow::Result<()> {
    if result.is_err() {
        eprintln!("{}", cluster.logs(80));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_one_replica_which_recovers_from_its_last_good_sync()
-> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3)?;
    let result = fsync_scenario(&mut cluster).await;
    logged(&cluster, result)
}

/// Restarts node `victim` with `NEO_FAILPOINTS=spec` and checks it armed them.
fn arm(cluster: &mut TestCluster, victim: u64, spec: &str) -> anyhow::Result<()> {
    cluster.set_env(victim, "NEO_FAILPOINTS", Some(spec));
    cluster.restart(victim)?;
    cluster.wait_ready(victim, WAIT_MAX)?;
    ensure!(
        cluster
            .log_tail(victim, 400)
            .contains("storage failpoints armed"),
        "node {victim} ignored NEO_FAILPOINTS: build it with the failpoints feature \
         (`cargo test --workspace` does)"
    );
    Ok(())
}

/// Creates `topic` (1 partition, 3 replicas), restarts `victim` with failpoint `spec`
/// limited to that partition's group, and returns a fresh client and the group.
async fn topic_with_armed_replica(
    cluster: &mut TestCluster,
    topic: &str,
    victim: u64,
    spec: &str,
) -> anyhow::Result<(Client, u64)> {
    let client = connect(cluster).await?;
    Admin::new(client.clone()).create_topic(topic, 1, 3).await?;
    let group = group_of(cluster, topic)?;
    arm(cluster, victim, &format!("{spec},path=/groups/{group}/"))?;
    Ok((connect(cluster).await?, group))
}

async fn fsync_scenario(cluster: &mut TestCluster) -> anyhow::Result<()> {
    const TOPIC: &str = "synced";
    // Arm node 3: its replica of this partition fails its 20th fdatasync from now, once.
    let victim = 3;
    let (client, group) =
        topic_with_armed_replica(cluster, TOPIC, victim, "segment.sync=eio,after=20,times=1")
            .await?;
    let mut sent = Sent::default();
    let mut stopped_seen = false;
    let started = Instant::now();
    // Produce while the victim's sync fails and it recovers; every record must land.
    while sent.next < 3000 || !stopped_seen {
        ensure!(
            started.elapsed() < 2 * WAIT_MAX,
            "after {} records: the replica on node {victim} never stopped ({})",
            sent.next,
            cluster.log_tail(victim, 20)
        );
        if let Some(e) = produce_until_full(&client, TOPIC, &mut sent, 100).await? {
            bail!("a record was refused while two replicas were healthy: {e}");
        }
        if !stopped_seen {
            let (status, body) = ready(cluster, victim)?;
            let listed = body["groups_stopped"]
                .as_array()
                .is_some_and(|g| g.iter().any(|s| s["group"] == group));
            if listed {
                ensure!(
                    status == 503,
                    "a stopped replica must make /ready 503: {body}"
                );
                stopped_seen = true;
            } else if cluster.log_tail(victim, 400).contains("failpoint fired") {
                // It stopped and was reopened between two looks: as good.
                stopped_seen = true;
            }
        }
    }
    // The victim is reopened, catches up, and the three replicas hold the same log.
    converge(cluster, TOPIC, "victim back and caught up", |c| {
        Ok(ready(c, victim)?.0 == 200)
    })
    .await?;
    ensure!(
        cluster
            .log_tail(victim, 400)
            .contains("reopened stopped replica"),
        "node {victim} never reopened its stopped replica"
    );
    read_back(&client, TOPIC, &sent).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_segment_was_damaged_while_down_cuts_it_and_catches_up()
-> anyhow::Result<()> {
    let args = ["--segment-bytes".to_string(), (256 * 1024).to_string()];
    let mut cluster = TestCluster::start_with_args(3, &args)?;
    let result = corruption_scenario(&mut cluster).await;
    logged(&cluster, result)
}

async fn corruption_scenario(cluster: &mut TestCluster) -> anyhow::Result<()> {
    const TOPIC: &str = "damaged";
    let client = connect(cluster).await?;
    Admin::new(client.clone()).create_topic(TOPIC, 1, 3).await?;
    let group = group_of(cluster, TOPIC)?;
    let mut sent = Sent::default();
    let err = produce_until_full(&client, TOPIC, &mut sent, 600).await?;
    ensure!(err.is_none(), "{err:?}");
    let started = Instant::now();
    let leader = loop {
        if let Some(l) = partition_view(cluster, TOPIC)?["leader"].as_u64() {
            break l;
        }
        ensure!(started.elapsed() < WAIT_MAX, "no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let victim = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.kill(victim)?;
    // Flip bytes in the middle of the follower's first (sealed) segment and of its
    // last one: a record body, under the batch CRC.
    let log_dir = cluster
        .spec(victim)
        .data_dir
        .join("groups")
        .join(group.to_string())
        .join("log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    ensure!(
        segments.len() >= 3,
        "expected several segments: {segments:?}"
    );
    for path in [&segments[0], &segments[segments.len() - 1]] {
        let mut bytes = std::fs::read(path)?;
        let at = bytes.len() / 2;
        for b in &mut bytes[at..at + 8] {
            *b ^= 0x5a;
        }
        std::fs::write(path, &bytes)?;
    }
    cluster.restart(victim)?;
    // It detects the damage, cuts its log there, and the leader sends the rest.
    converge(cluster, TOPIC, "after the repair", |_| Ok(true)).await?;
    ensure!(
        cluster
            .log_tail(victim, 400)
            .contains("replica log damaged"),
        "node {victim} did not report the damage"
    );
    ensure!(
        log_dir.join("quarantine").read_dir()?.count() >= 1,
        "the cut bytes were not kept in quarantine"
    );
    read_back(&client, TOPIC, &sent).await?;
    Ok(())
}

/// Every record of `topic`'s partition 0, in any order: exactly `0..n`, each once.
async fn read_back_set(client: &Client, topic: &str, n: usize) -> anyhow::Result<()> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0], Offset::Beginning).await?;
    let started = Instant::now();
    let mut seen = vec![0u32; n];
    let mut total = 0;
    while total < n {
        ensure!(
            started.elapsed() < WAIT_MAX,
            "{topic}: read {total} of {n} records"
        );
        for r in consumer.poll(Duration::from_millis(200)).await? {
            let text = String::from_utf8_lossy(&r.value[..topic.len() + 10]).to_string();
            let i: usize = text[topic.len() + 1..topic.len() + 9].parse()?;
            ensure!(i < n, "{topic}: unexpected record {i}");
            ensure!(
                r.value.as_ref() == value(topic, i).as_slice(),
                "{topic}: record {i} differs"
            );
            seen[i] += 1;
            total += 1;
        }
    }
    let missing: Vec<usize> = (0..n).filter(|i| seen[*i] == 0).collect();
    let twice: Vec<usize> = (0..n).filter(|i| seen[*i] > 1).collect();
    ensure!(
        missing.is_empty() && twice.is_empty(),
        "{topic}: missing {missing:?}, stored twice {twice:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_failing_an_fsync_in_turn_leader_included_loses_nothing() -> anyhow::Result<()>
{
    // The first topic's partition is group 1 (group 0 is the metadata group); each node
    // fails one fdatasync of it, at a different moment.
    let mut cluster = TestCluster::start_custom(3, &[], |spec| {
        let spec_str = format!(
            "segment.sync=eio,after={},times=1,path=/groups/1/",
            40 * spec.id
        );
        Ok(vec![("NEO_FAILPOINTS".to_string(), spec_str)])
    })?;
    let result = all_fail_scenario(&mut cluster).await;
    logged(&cluster, result)
}

async fn all_fail_scenario(cluster: &mut TestCluster) -> anyhow::Result<()> {
    const TOPIC: &str = "rotating";
    let client = connect(cluster).await?;
    Admin::new(client.clone()).create_topic(TOPIC, 1, 3).await?;
    ensure!(
        group_of(cluster, TOPIC)? == 1,
        "the first topic is not group 1"
    );
    let n = 4000;
    let mut sent = Sent::default();
    let err = produce_until_full(&client, TOPIC, &mut sent, n).await?;
    ensure!(
        err.is_none(),
        "{} of {n} acknowledged while at most one replica was stopped: {err:?}",
        sent.acked.len()
    );
    converge(cluster, TOPIC, "every replica reopened", |c| {
        Ok((1..=3).all(|id| c.log_tail(id, 2000).contains("reopened stopped replica")))
    })
    .await?;
    read_back_set(&client, TOPIC, n).await
}

/// (Slow disk) One replica's every `fdatasync` of the partition takes 300 ms more: the
/// cluster keeps committing through the other two, nothing is refused, everything
/// acknowledged is read back, and the slow replica ends with the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_slow_disk_does_not_hold_back_commits() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3)?;
    let result = slow_disk_scenario(&mut cluster).await;
    logged(&cluster, result)
}

async fn slow_disk_scenario(cluster: &mut TestCluster) -> anyhow::Result<()> {
    const TOPIC: &str = "slow";
    let victim = 3;
    let (client, _) =
        topic_with_armed_replica(cluster, TOPIC, victim, "segment.sync=delay=300").await?;
    let mut sent = Sent::default();
    if let Some(e) = produce_until_full(&client, TOPIC, &mut sent, 1500).await? {
        bail!("a record was refused with one slow replica: {e}");
    }
    read_back(&client, TOPIC, &sent).await?;
    // The slow replica ends with the same log as the others, and the delay was real:
    // its syncs of this partition are in its fsync histogram above the 0.25 s bucket
    // (group commit: one sync covers all it appended meanwhile, so there may be few).
    converge(cluster, TOPIC, "slow replica caught up", |_| Ok(true)).await?;
    let (status, metrics) = http_get(cluster.spec(victim).http, "/metrics")?;
    ensure!(status == 200, "/metrics: {status}");
    let series = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let all = series("neo_storage_fsync_seconds_count").context("no fsync count")?;
    let fast = series("neo_storage_fsync_seconds_bucket{le=\"0.25\"}")
        .context("no fsync bucket le=0.25")?;
    ensure!(
        all - fast >= 1.0,
        "node {victim}: {all} fdatasyncs, {fast} of them under 0.25 s: the delay never applied"
    );
    Ok(())
}
