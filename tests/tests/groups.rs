//! Consumer groups end to end, on 3 real `neo-node` processes: members of one group
//! share the partitions and every record is processed once while nothing fails; a
//! member killed without leaving loses its partitions after its session timeout and
//! its successors resume from its last commit; kill -9 of the coordinator and of a
//! partition leader keeps commits and membership; a full restart keeps committed
//! offsets. The CLI and HTTP views of groups: `groups_cli.rs`.
//!
//! Each test starts its own cluster. Members run in tokio tasks ([`run_member`]) that
//! poll and log every record they return; the checks compare those logs with what was
//! produced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use neo_client::metadata::LeaderLookup;
use neo_client::{
    Admin, AutoOffsetReset, Client, Error, GroupAdmin, GroupConsumer, GroupConsumerConfig,
    Producer, ProducerRecord, TopicPartition,
};
use neo_tests::{TestCluster, connect, with_cluster};

/// Bound on every wait for consumption or reassignment.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// Each member's long-poll wait.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// A record as a member returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    member: usize,
    partition: u32,
    offset: u64,
}

/// What a running member publishes after each poll.
#[derive(Debug, Clone, Default)]
struct MemberState {
    assignment: Vec<TopicPartition>,
    member_id: Option<String>,
    /// `Error::Fenced` returned by `poll` (also listed in `errors`, with the reason).
    fenced: u32,
    /// Other errors returned by `poll` (tolerated, counted).
    errors: Vec<String>,
    /// The positions the last requested `commit_sync` committed.
    committed: BTreeMap<TopicPartition, u64>,
}

/// A member polling in its own task.
struct Running {
    stop: Arc<AtomicBool>,
    commit_request: Arc<AtomicBool>,
    state: Arc<Mutex<MemberState>>,
    handle: tokio::task::JoinHandle<GroupConsumer>,
}

impl Running {
    fn state(&self) -> MemberState {
        self.state.lock().unwrap().clone()
    }

    /// Stop polling and hand the consumer back (still a member).
    async fn stop(self) -> anyhow::Result<GroupConsumer> {
        self.stop.store(true, Ordering::SeqCst);
        Ok(self.handle.await?)
    }

    /// Stop polling, commit and leave.
    async fn close(self) -> anyhow::Result<()> {
        self.stop().await?.close().await?;
        Ok(())
    }

    /// Abort the task: the consumer is dropped mid-flight, no commit, no leave (a
    /// crashed process, as far as the group can tell).
    fn kill(self) {
        self.handle.abort();
    }

    /// Ask for a `commit_sync` of the positions and wait until it succeeded.
    async fn commit_now(&self) -> anyhow::Result<BTreeMap<TopicPartition, u64>> {
        self.commit_request.store(true, Ordering::SeqCst);
        wait_until("the requested commit", || {
            !self.commit_request.load(Ordering::SeqCst)
        })
        .await?;
        Ok(self.state().committed)
    }
}

fn run_member(index: usize, mut consumer: GroupConsumer, log: Arc<Mutex<Vec<Seen>>>) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let commit_request = Arc::new(AtomicBool::new(false));
    let state = Arc::new(Mutex::new(MemberState::default()));
    let (s, c, st) = (stop.clone(), commit_request.clone(), state.clone());
    let handle = tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            match consumer.poll(POLL_WAIT).await {
                Ok(records) => log.lock().unwrap().extend(records.iter().map(|r| Seen {
                    member: index,
                    partition: r.partition,
                    offset: r.offset,
                })),
                Err(err @ Error::Fenced { .. }) => {
                    let mut st = st.lock().unwrap();
                    st.fenced += 1;
                    st.errors.push(err.to_string());
                }
                Err(err) => {
                    st.lock().unwrap().errors.push(err.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if c.load(Ordering::SeqCst) {
                match consumer.commit_sync().await {
                    Ok(()) => {
                        let committed = consumer
                            .assignment()
                            .into_iter()
                            .filter_map(|tp| consumer.position(&tp).map(|o| (tp, o)))
                            .collect();
                        st.lock().unwrap().committed = committed;
                        c.store(false, Ordering::SeqCst);
                    }
                    Err(err) => st.lock().unwrap().errors.push(format!("commit: {err}")),
                }
            }
            let mut state = st.lock().unwrap();
            state.assignment = consumer.assignment();
            state.member_id = consumer.member_id();
        }
        consumer
    });
    Running {
        stop,
        commit_request,
        state,
        handle,
    }
}

fn config(session: Duration) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client_id: "neo-e2e".into(),
        session_timeout: session,
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConsumerConfig::default()
    }
}

/// Produce `count` records from `first` on (value = the sequence number, partition =
/// seq % partitions); returns (partition, offset) → seq of the acknowledged ones (all
/// must be).
async fn produce(
    client: &Client,
    topic: &str,
    partitions: u32,
    first: u64,
    count: u64,
) -> anyhow::Result<BTreeMap<(u32, u64), u64>> {
    let producer = Producer::new(client.clone());
    let mut deliveries = Vec::new();
    for seq in first..first + count {
        let record = ProducerRecord::new(topic.to_string(), seq.to_string())
            .partition((seq % u64::from(partitions)) as u32);
        deliveries.push((seq, producer.send(record).await?));
    }
    producer.flush().await;
    let mut acked = BTreeMap::new();
    for (seq, delivery) in deliveries {
        let meta = delivery.await.with_context(|| format!("record {seq}"))?;
        acked.insert((meta.partition, meta.offset.context("acks=all")?), seq);
    }
    Ok(acked)
}

/// Poll `done` every 50 ms until it holds, for at most [`WAIT_MAX`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > WAIT_MAX {
            bail!("timed out after {WAIT_MAX:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

/// The distinct records in a log.
fn distinct(log: &Mutex<Vec<Seen>>) -> BTreeSet<(u32, u64)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|s| (s.partition, s.offset))
        .collect()
}

/// Records returned more than once, with how often.
fn duplicates(log: &[Seen]) -> BTreeMap<(u32, u64), usize> {
    let mut counts: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for s in log {
        *counts.entry((s.partition, s.offset)).or_default() += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

/// Every partition owned by exactly one member, and how many each owns.
fn owners(members: &[&Running]) -> (BTreeSet<TopicPartition>, Vec<usize>, bool) {
    let mut all = BTreeSet::new();
    let mut counts = Vec::new();
    let mut disjoint = true;
    for m in members {
        let a = m.state().assignment;
        counts.push(a.len());
        for tp in a {
            disjoint &= all.insert(tp);
        }
    }
    (all, counts, disjoint)
}

async fn leader_of(
    client: &Client,
    cluster: &TestCluster,
    topic: &str,
    partition: u32,
) -> anyhow::Result<u64> {
    client.refresh_metadata().await?;
    match client.metadata().await?.leader(topic, partition) {
        LeaderLookup::Address(a) => cluster.id_of(&a).context("leader address not a node"),
        other => bail!("no leader for {topic}/{partition}: {other:?}"),
    }
}

/// The group's committed offset of each partition of `topic`.
async fn committed(
    client: &Client,
    group: &str,
    topic: &str,
) -> anyhow::Result<BTreeMap<u32, (Option<u64>, u64)>> {
    Ok(GroupAdmin::new(client.clone())
        .committed_offsets(group, topic)
        .await?
        .into_iter()
        .map(|(p, r)| (p, (r.offset, r.log_end_offset)))
        .collect())
}

/// (a) 4 members, 12 partitions: 3 each, every record returned by exactly one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_members_share_twelve_partitions_exactly_once() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let (topic, group) = ("ga", "ga-group");
        let client = connect(cluster).await?;
        Admin::new(client.clone())
            .create_topic(topic, 12, 3)
            .await?;
        let produced = produce(&client, topic, 12, 0, 1200).await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut members = Vec::new();
        for i in 0..4 {
            let consumer = GroupConsumer::subscribe(
                client.clone(),
                group,
                &[topic],
                config(Duration::from_secs(10)),
            )
            .await?;
            members.push(run_member(i, consumer, log.clone()));
        }
        let refs: Vec<&Running> = members.iter().collect();
        wait_until("every record and 3 partitions per member", || {
            let (all, counts, disjoint) = owners(&refs);
            distinct(&log).len() == produced.len()
                && all.len() == 12
                && disjoint
                && counts.iter().all(|c| *c == 3)
        })
        .await?;
        let seen = distinct(&log);
        let want: BTreeSet<(u32, u64)> = produced.keys().copied().collect();
        ensure!(
            seen == want,
            "returned records differ from the produced ones"
        );
        let dups = duplicates(&log.lock().unwrap());
        ensure!(dups.is_empty(), "returned more than once: {dups:?}");
        for m in &members {
            let state = m.state();
            ensure!(state.fenced == 0 && state.errors.is_empty(), "{state:?}");
        }
        for m in members {
            m.close().await?;
        }
        // Every member committed on close: the group is empty and caught up.
        for (p, (offset, end)) in committed(&client, group, topic).await? {
            ensure!(
                offset == Some(end),
                "partition {p}: committed {offset:?}, end {end}"
            );
        }
        let d = GroupAdmin::new(client).describe_group(group).await?;
        ensure!(d.members.is_empty() && d.state == "empty", "{d:?}");
        Ok(())
    })
    .await
}

/// (b) A member killed without leaving: its partitions move to the others after its
/// session timeout; they resume from its last commit (nothing skipped), and the only
/// records returned twice are the ones it returned after that commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_member_partitions_resume_from_its_last_commit() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let (topic, group) = ("gb", "gb-group");
        let session = Duration::from_secs(3);
        let client = connect(cluster).await?;
        Admin::new(client.clone())
            .create_topic(topic, 12, 3)
            .await?;
        let mut produced = produce(&client, topic, 12, 0, 600).await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut survivors = Vec::new();
        for i in 0..3 {
            let consumer =
                GroupConsumer::subscribe(client.clone(), group, &[topic], config(session)).await?;
            survivors.push(run_member(i, consumer, log.clone()));
        }
        let refs: Vec<&Running> = survivors.iter().collect();
        wait_until("3 members with 4 partitions each", || {
            let (all, counts, disjoint) = owners(&refs);
            all.len() == 12 && disjoint && counts.iter().all(|c| *c == 4)
        })
        .await?;
        // The victim joins last, so that it never gives a partition up before the kill
        // (it does not commit on its own: only when asked).
        let victim_config = GroupConsumerConfig {
            auto_commit: false,
            ..config(session)
        };
        let victim = run_member(
            3,
            GroupConsumer::subscribe(client.clone(), group, &[topic], victim_config).await?,
            log.clone(),
        );
        let mut all_refs = refs.clone();
        all_refs.push(&victim);
        wait_until("phase 1 consumed, 3 partitions each", || {
            let (all, counts, disjoint) = owners(&all_refs);
            distinct(&log).len() == produced.len()
                && all.len() == 12
                && disjoint
                && counts.iter().all(|c| *c == 3)
        })
        .await?;
        let last_commit = victim.commit_now().await?;
        let victim_parts: BTreeSet<u32> = victim
            .state()
            .assignment
            .iter()
            .map(|tp| tp.partition)
            .collect();
        ensure!(victim_parts.len() == 3, "{:?}", victim.state());
        // Phase 2: the victim returns records of its partitions it will never commit.
        produced.extend(produce(&client, topic, 12, 600, 600).await?);
        wait_until("phase 2 consumed", || {
            distinct(&log).len() == produced.len()
        })
        .await?;
        let victim_uncommitted: BTreeSet<(u32, u64)> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.member == 3)
            .filter(|s| {
                let tp = TopicPartition::new(topic, s.partition);
                last_commit.get(&tp).is_some_and(|c| s.offset >= *c)
            })
            .map(|s| (s.partition, s.offset))
            .collect();
        ensure!(
            !victim_uncommitted.is_empty(),
            "the victim read nothing after its commit"
        );
        let before_kill = log.lock().unwrap().len();
        victim.kill();
        let moved_after = wait_until("the victim's partitions reassigned", || {
            let (all, _, disjoint) = owners(&refs);
            all.len() == 12 && disjoint
        })
        .await?;
        eprintln!("partitions moved {moved_after:?} after the kill (session {session:?})");
        wait_until("the uncommitted records redelivered", || {
            let after: BTreeSet<(u32, u64)> = log.lock().unwrap()[before_kill..]
                .iter()
                .map(|s| (s.partition, s.offset))
                .collect();
            victim_uncommitted.is_subset(&after)
        })
        .await?;
        let log_now = log.lock().unwrap().clone();
        // Nothing skipped.
        let seen: BTreeSet<(u32, u64)> = log_now.iter().map(|s| (s.partition, s.offset)).collect();
        let want: BTreeSet<(u32, u64)> = produced.keys().copied().collect();
        ensure!(want.is_subset(&seen), "records skipped");
        // The successors resumed exactly at the last commit of each victim partition:
        // after the kill they returned precisely its records from that offset on (a
        // commit may point at a Raft control entry, so compare sets, not first offsets).
        for p in &victim_parts {
            let tp = TopicPartition::new(topic, *p);
            let from = *last_commit
                .get(&tp)
                .context("no commit for a victim partition")?;
            let resumed: BTreeSet<u64> = log_now[before_kill..]
                .iter()
                .filter(|s| s.partition == *p)
                .map(|s| s.offset)
                .collect();
            let expected: BTreeSet<u64> = produced
                .keys()
                .filter(|(q, o)| q == p && *o >= from)
                .map(|(_, o)| *o)
                .collect();
            ensure!(
                resumed == expected,
                "{tp}: after the kill read {} records from {:?}, expected {} from {from}",
                resumed.len(),
                resumed.first(),
                expected.len()
            );
        }
        // Redeliveries are exactly the victim's records after its last commit.
        let dups: BTreeSet<(u32, u64)> = duplicates(&log_now).into_keys().collect();
        ensure!(
            dups == victim_uncommitted,
            "duplicates {} vs uncommitted {}: extra {:?}",
            dups.len(),
            victim_uncommitted.len(),
            dups.difference(&victim_uncommitted)
                .take(5)
                .collect::<Vec<_>>()
        );
        for m in survivors {
            m.close().await?;
        }
        Ok(())
    })
    .await
}

/// (c) kill -9 of the group's coordinator, then of a partition leader: members keep
/// their ids, commits survive, consumption continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_and_leader_kills_keep_commits_and_membership() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let (topic, group) = ("gc", "gc-group");
        let client = connect(cluster).await?;
        Admin::new(client.clone()).create_topic(topic, 6, 3).await?;
        let mut produced = produce(&client, topic, 6, 0, 300).await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut members = Vec::new();
        for i in 0..3 {
            let config = GroupConsumerConfig {
                auto_commit_interval: Duration::from_millis(300),
                ..config(Duration::from_secs(10))
            };
            let consumer =
                GroupConsumer::subscribe(client.clone(), group, &[topic], config).await?;
            members.push(run_member(i, consumer, log.clone()));
        }
        let refs: Vec<&Running> = members.iter().collect();
        wait_until("first records consumed, 2 partitions each", || {
            let (all, counts, _) = owners(&refs);
            distinct(&log).len() == produced.len() && all.len() == 6 && counts == [2, 2, 2]
        })
        .await?;
        let ids: Vec<Option<String>> = members.iter().map(|m| m.state().member_id).collect();
        ensure!(ids.iter().all(Option::is_some), "{ids:?}");

        // 1. The coordinator dies.
        let (_, address) = GroupAdmin::new(client.clone())
            .find_coordinator(group)
            .await?;
        let coordinator = cluster
            .id_of(&address)
            .context("coordinator is not a node")?;
        eprintln!("killing node {coordinator}, coordinator of {group}");
        cluster.kill(coordinator)?;
        produced.extend(produce(&client, topic, 6, 300, 300).await?);
        wait_until("consumption after the coordinator kill", || {
            distinct(&log).len() == produced.len()
        })
        .await?;
        cluster.restart(coordinator)?;

        // 2. Commits caught up, then a partition leader dies: they survive it.
        wait_until_committed(&client, group, topic).await?;
        let before = committed(&client, group, topic).await?;
        let leader = leader_of(&client, cluster, topic, 0).await?;
        eprintln!("killing node {leader}, leader of {topic}/0");
        cluster.kill(leader)?;
        let after = committed(&client, group, topic).await?;
        for (p, (offset, _)) in &before {
            let now = after.get(p).and_then(|(o, _)| *o);
            ensure!(
                now >= *offset,
                "partition {p}: committed {offset:?} then {now:?}"
            );
        }
        produced.extend(produce(&client, topic, 6, 600, 300).await?);
        wait_until("consumption after the leader kill", || {
            distinct(&log).len() == produced.len()
        })
        .await?;

        // Membership survived both: same ids, never fenced.
        for (m, id) in members.iter().zip(&ids) {
            let state = m.state();
            ensure!(
                state.member_id == *id && state.fenced == 0,
                "{state:?} (was {id:?})"
            );
        }
        let want: BTreeSet<(u32, u64)> = produced.keys().copied().collect();
        ensure!(want.is_subset(&distinct(&log)), "records skipped");
        for m in members {
            m.close().await?;
        }
        for (p, (offset, end)) in committed(&client, group, topic).await? {
            ensure!(
                offset == Some(end),
                "partition {p}: committed {offset:?}, end {end}"
            );
        }
        cluster.restart(leader)?;
        Ok(())
    })
    .await
}

/// Wait until the group's committed offset of every partition is its log end.
async fn wait_until_committed(client: &Client, group: &str, topic: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let offsets = committed(client, group, topic).await?;
        if offsets.values().all(|(o, end)| *o == Some(*end)) {
            return Ok(());
        }
        if started.elapsed() > WAIT_MAX {
            bail!("commits did not catch up: {offsets:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (d) A full cluster restart keeps committed offsets; a new member resumes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_a_full_restart() -> anyhow::Result<()> {
    with_cluster(3, async |cluster| {
        let (topic, group) = ("gd", "gd-group");
        let client = connect(cluster).await?;
        Admin::new(client.clone()).create_topic(topic, 3, 3).await?;
        let produced = produce(&client, topic, 3, 0, 300).await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let member = run_member(
            0,
            GroupConsumer::subscribe(
                client.clone(),
                group,
                &[topic],
                config(Duration::from_secs(10)),
            )
            .await?,
            log.clone(),
        );
        wait_until("every record", || distinct(&log).len() == produced.len()).await?;
        member.close().await?;
        let before = committed(&client, group, topic).await?;
        ensure!(
            before.values().all(|(o, end)| *o == Some(*end)),
            "{before:?}"
        );
        drop(client);

        cluster.restart_all()?;
        let client = connect(cluster).await?;
        let after = committed(&client, group, topic).await?;
        let offsets = |m: &BTreeMap<u32, (Option<u64>, u64)>| -> Vec<Option<u64>> {
            m.values().map(|(o, _)| *o).collect()
        };
        ensure!(
            offsets(&after) == offsets(&before),
            "{before:?} then {after:?}"
        );
        let d = GroupAdmin::new(client.clone())
            .describe_group(group)
            .await?;
        ensure!(d.members.is_empty(), "{d:?}");

        // A new member starts at the committed offsets: only the new records.
        let fresh = produce(&client, topic, 3, 300, 30).await?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let member = run_member(
            1,
            GroupConsumer::subscribe(
                client.clone(),
                group,
                &[topic],
                config(Duration::from_secs(10)),
            )
            .await?,
            log.clone(),
        );
        wait_until("the new records", || distinct(&log).len() >= fresh.len()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = distinct(&log);
        let want: BTreeSet<(u32, u64)> = fresh.keys().copied().collect();
        ensure!(
            seen == want,
            "after the restart a member read {} records",
            seen.len()
        );
        member.close().await?;
        Ok(())
    })
    .await
}
