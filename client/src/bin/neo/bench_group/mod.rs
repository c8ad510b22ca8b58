//! `neo bench commit` and `neo bench rebalance`: consumer-group benchmarks
//! (docs/cli.md, "Bench"; recorded figures in docs/BENCHMARKS.md, "Consumer groups").
//!
//! Both run real [`GroupConsumer`] members, each polling in its own task, and follow
//! who owns which partition through a [`RebalanceListener`] that writes every
//! assignment, revocation and loss into one shared [`Ownership`] table with the time
//! it happened. "Stable" means: every partition owned by exactly one live member,
//! partition counts of the live members differing by at most one (the assignor's
//! target), and the coordinator's `describe_group` saying `stable` with no member
//! waiting for a partition (none pending).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use neo_client::{
    AutoOffsetReset, Client, Error, GroupAdmin, GroupConsumer, GroupConsumerConfig,
    RebalanceListener, Revocation, TopicPartition,
};
use neo_protocol::api::TopicPartitions;
use tokio::time::Instant;

use super::percentile;

mod commit;
mod rebalance;

pub(crate) use commit::commit;
pub(crate) use rebalance::rebalance;

/// Bound on reaching a stable group (all members joined and settled).
const SETTLE_MAX: Duration = Duration::from_secs(180);
/// Bound on one rebalance (a leave or a join) beyond the session timeout.
const REBALANCE_MAX: Duration = Duration::from_secs(60);
/// Each member's long-poll wait while it is only keeping up with the assignment.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// A phase starts this long after it is announced, so that every task starts it at
/// the same instant.
const START_DELAY: Duration = Duration::from_millis(300);
/// How often the bench looks at the ownership table (the times it reports are the
/// table's own timestamps, not when it looked).
const LOOK_EVERY: Duration = Duration::from_millis(2);
/// Heartbeat round trips sampled per rebalance round (the baseline).
const PROBES_PER_ROUND: usize = 10;
/// Value size of the produce baseline's single-record batches.
const BASELINE_VALUE_BYTES: usize = 100;

#[derive(Debug, Args)]
pub(crate) struct CommitArgs {
    /// Topic (must exist, with at least as many partitions as consumers).
    #[arg(long)]
    pub(crate) topic: String,
    /// Consumer group of the members (use one no one else is in).
    #[arg(long)]
    pub(crate) group: String,
    /// Members of the group, each committing its partitions' offsets.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) consumers: u32,
    /// Length of the commit phase, and of the produce baseline after it, in ms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub(crate) duration_ms: u64,
    /// The members' session timeout, in ms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=300_000))]
    pub(crate) session_timeout_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct RebalanceArgs {
    /// Topic (must exist).
    #[arg(long)]
    pub(crate) topic: String,
    /// Consumer group (default: a new one, `neo-bench-rebalance-<unix ms>`).
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Members kept in the group.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub(crate) members: u32,
    /// Rounds: one member goes, then a fresh one joins.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rounds: u32,
    /// Drop the member without leaving (its task aborted: a crash) instead of closing it.
    #[arg(long)]
    pub(crate) kill: bool,
    /// The members' session timeout, in ms (what a killed member costs).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=300_000))]
    pub(crate) session_timeout_ms: u64,
    /// Wait this long once the group is stable before each leave, kill or join
    /// (default: the heartbeat interval, a third of the session and at most 3 s, plus
    /// 500 ms; 0: back to back).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(crate) pause_ms: Option<u64>,
}

/// Default of `bench rebalance --pause-ms`: one heartbeat interval (the coordinator's
/// rule: a third of the session, 100 ms to 3 s) and 500 ms. A member that has just
/// had an answer without news sends its next heartbeat one interval after the
/// previous one; until then it hears of no change (see docs/BENCHMARKS.md).
pub(crate) fn default_pause_ms(session_timeout_ms: u64) -> u64 {
    (session_timeout_ms / 3).clamp(100, 3_000) + 500
}

// ---------------------------------------------------------------- ownership table

/// Who owns which partition, as the members' listeners report it. A partition can
/// have two owners for a while: a member that took it over before the coordinator
/// gave it to another one keeps it until it is told (see docs/BENCHMARKS.md).
#[derive(Debug)]
struct Ownership {
    partitions: u32,
    /// Partition -> the slots of the members owning it (never empty).
    owners: BTreeMap<u32, BTreeSet<usize>>,
    /// Slots of the members that count (joined or joining, not leaving or killed).
    live: BTreeSet<usize>,
    /// Assignments of a partition another member still held.
    double_owned: u64,
    /// When the table last changed.
    last_change: Instant,
    /// Since when every partition has had an owner (`None`: some has none now).
    complete_since: Option<Instant>,
}

impl Ownership {
    fn assign(&mut self, slot: usize, partitions: impl Iterator<Item = u32>) {
        if !self.live.contains(&slot) {
            return;
        }
        for p in partitions {
            let owners = self.owners.entry(p).or_default();
            if owners.iter().any(|s| *s != slot) {
                self.double_owned += 1;
            }
            owners.insert(slot);
        }
        self.changed();
    }

    fn release(&mut self, slot: usize, partitions: impl Iterator<Item = u32>) {
        for p in partitions {
            if let Some(owners) = self.owners.get_mut(&p) {
                owners.remove(&slot);
            }
        }
        self.changed();
    }

    /// A killed member: it counts no more and its partitions have no owner.
    fn kill(&mut self, slot: usize) {
        self.live.remove(&slot);
        self.owners.values_mut().for_each(|owners| {
            owners.remove(&slot);
        });
        self.changed();
    }

    fn changed(&mut self) {
        self.owners.retain(|_, owners| !owners.is_empty());
        let now = Instant::now();
        self.last_change = now;
        if self.owners.len() == self.partitions as usize {
            self.complete_since.get_or_insert(now);
        } else {
            self.complete_since = None;
        }
    }

    fn owned_by(&self, slot: usize) -> usize {
        self.owners.values().filter(|o| o.contains(&slot)).count()
    }

    /// Every partition owned by exactly one live member, counts differing by at most one.
    fn balanced(&self) -> bool {
        let single = |o: &BTreeSet<usize>| o.len() == 1 && o.iter().all(|s| self.live.contains(s));
        if self.complete_since.is_none() || !self.owners.values().all(single) {
            return false;
        }
        let counts: Vec<usize> = self.live.iter().map(|s| self.owned_by(*s)).collect();
        let (min, max) = (counts.iter().min(), counts.iter().max());
        matches!((min, max), (Some(a), Some(b)) if b - a <= 1)
    }

    fn summary(&self) -> String {
        let twice = self.owners.values().filter(|o| o.len() > 1).count();
        let counts: Vec<usize> = self.live.iter().map(|s| self.owned_by(*s)).collect();
        format!(
            "{} of {} partitions owned ({twice} by two members or more), {} live members owning {counts:?}",
            self.owners.len(),
            self.partitions,
            self.live.len(),
        )
    }
}

#[derive(Debug)]
struct Table(Mutex<Ownership>);

impl Table {
    fn new(partitions: u32) -> Arc<Table> {
        Arc::new(Table(Mutex::new(Ownership {
            partitions,
            owners: BTreeMap::new(),
            live: BTreeSet::new(),
            double_owned: 0,
            last_change: Instant::now(),
            complete_since: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Ownership> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a member's partition changes into the table.
struct Recorder {
    slot: usize,
    table: Arc<Table>,
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, assigned: &[(TopicPartition, u64)]) {
        let parts = assigned.iter().map(|(tp, _)| tp.partition);
        self.table.lock().assign(self.slot, parts);
    }

    fn on_revoked(&mut self, revocation: &mut Revocation) {
        let parts = revocation.partitions().into_iter().map(|tp| tp.partition);
        self.table.lock().release(self.slot, parts);
    }

    fn on_lost(&mut self, lost: &[TopicPartition]) {
        let parts = lost.iter().map(|tp| tp.partition);
        self.table.lock().release(self.slot, parts);
    }
}

/// What the members met, counted, with the first one's text: errors (they go on)
/// and fencings (a member lost its membership and joined again).
#[derive(Debug, Default)]
struct Errors(Mutex<[(u64, Option<String>); 2]>);

const ERROR: usize = 0;
const FENCED: usize = 1;

impl Errors {
    fn note(&self, kind: usize, what: &str, err: &dyn std::fmt::Display) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all[kind].0 += 1;
        all[kind].1.get_or_insert_with(|| format!("{what}: {err}"));
    }

    /// Account for what a `poll` returned; after an error other than fenced, wait a
    /// little before the next poll.
    async fn after_poll<T>(&self, result: neo_client::Result<T>) {
        match result {
            Ok(_) => {}
            Err(err @ Error::Fenced { .. }) => self.note(FENCED, "poll", &err),
            Err(err) => {
                self.note(ERROR, "poll", &err);
                tokio::time::sleep(POLL_WAIT).await;
            }
        }
    }

    fn count(&self, kind: usize) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[kind].0
    }

    /// Warnings on stderr: errors and fencings, and partitions found owned twice.
    fn warn(&self, table: &Table) {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for ((n, first), what) in all.iter().zip(["member errors", "members fenced"]) {
            if let Some(first) = first {
                eprintln!("warning: {what}: {n}; first: {first}");
            }
        }
        let double = table.lock().double_owned;
        if double > 0 {
            eprintln!("warning: {double} partitions were assigned while another member held them");
        }
    }
}

async fn subscribe(
    client: Client,
    group: &str,
    topic: &str,
    config: GroupConsumerConfig,
    slot: usize,
    table: &Arc<Table>,
) -> anyhow::Result<GroupConsumer> {
    let mut member = GroupConsumer::subscribe(client, group, &[topic], config)
        .await
        .with_context(|| format!("member {slot} joining group {group:?}"))?;
    member.set_listener(Box::new(Recorder {
        slot,
        table: table.clone(),
    }));
    Ok(member)
}

fn member_config(what: &str, slot: usize, session_timeout_ms: u64) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client_id: format!("neo-bench-{what}-{slot}"),
        session_timeout: Duration::from_millis(session_timeout_ms),
        // Only new records: the members keep up with their assignment, they read nothing.
        auto_offset_reset: AutoOffsetReset::Latest,
        ..GroupConsumerConfig::default()
    }
}

/// Wait until the group is stable (see the module doc) with the members of
/// `table.live`; returns when the table last changed, i.e. when the last partition
/// move the stable state needed was made.
async fn wait_stable(
    admin: &GroupAdmin,
    group: &str,
    table: &Table,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let (balanced, at, live) = {
            let t = table.lock();
            (t.balanced(), t.last_change, t.live.len())
        };
        if balanced {
            let d = admin.describe_group(group).await?;
            let settled = d.state == "stable"
                && d.members.len() == live
                && d.members.iter().all(|m| m.pending.is_empty());
            if settled && table.lock().last_change == at {
                return Ok(at);
            }
        }
        if Instant::now() > deadline {
            let summary = table.lock().summary();
            let d = admin.describe_group(group).await?;
            let parts = |tps: &[TopicPartitions]| -> Vec<u32> {
                tps.iter().flat_map(|t| t.partitions.clone()).collect()
            };
            let members: Vec<String> = (d.members.iter())
                .map(|m| {
                    format!(
                        "{} owns {:?} pending {:?}",
                        m.client_id,
                        parts(&m.assignment),
                        parts(&m.pending)
                    )
                })
                .collect();
            let members = members.join(", ");
            bail!(
                "group {group:?} not stable within {within:?}: {summary}; coordinator: {} with {members}",
                d.state
            );
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

// ---------------------------------------------------------------- bench commit

/// One task's results of one timed phase.
#[derive(Debug, Default)]
struct PhaseResult {
    /// Raft entries made: partition offsets committed, or batches produced.
    entries: u64,
    /// Calls made (`commit_offsets_sync` calls, or produce batches).
    calls: u64,
    latencies_us: Vec<u64>,
    /// When the last call of the phase was answered.
    finished: Option<Instant>,
}

impl PhaseResult {
    fn answered(&mut self, t0: Instant, entries: usize) {
        let now = Instant::now();
        self.latencies_us.push(us(now - t0));
        self.entries += entries as u64;
        self.calls += 1;
        self.finished = Some(now);
    }
}

/// Entries per second over every task from `start` to the last answer; p50, p99 and
/// max of the call latencies in µs.
fn totals(start: Instant, results: Vec<PhaseResult>) -> (u64, u64, f64, [u64; 3]) {
    let (mut entries, mut calls, mut last, mut latencies) = (0, 0, start, Vec::new());
    for r in results {
        (entries, calls) = (entries + r.entries, calls + r.calls);
        latencies.extend(r.latencies_us);
        last = last.max(r.finished.unwrap_or(start));
    }
    latencies.sort_unstable();
    let secs = (last - start).as_secs_f64().max(1e-9);
    let max = latencies.last().copied().unwrap_or(0);
    let quantiles = [0.50, 0.99].map(|q| percentile(&latencies, q));
    (
        entries,
        calls,
        entries as f64 / secs,
        [quantiles[0], quantiles[1], max],
    )
}
