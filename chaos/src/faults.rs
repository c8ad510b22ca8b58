//! Fault scenarios: one per run, a loop of inject → hold → heal → settle cycles until
//! the scenario's duration is over. Every random choice (victim partition, hold and
//! settle times, the halves) comes from one PRNG seeded by the run seed and the
//! scenario name, so a seed replays the same schedule (the interleavings of the
//! cluster itself are not replayable).
//!
//! | scenario | one cycle | hold | settle |
//! |---|---|---|---|
//! | `kill-leader` | SIGKILL the leader of a random partition; start it again | 2–5 s down | ready + 3–6 s |
//! | `pause-leader` | SIGSTOP / `docker pause` the leader of a random partition (longer than the election timeout: 1.5–3 s for partitions, 1–2 s for metadata) | 4–7 s | ready + 3–6 s |
//! | `isolate-leader` | cut the leader of a random partition from every other node (clients still reach it) | 5–9 s | ready + 4–7 s |
//! | `partition-halves` | random split into two sides (the smaller of 1..=n/2 nodes; every other cycle, by coin flip, it holds the leader of a random partition), every link across cut | 5–9 s | ready + 4–7 s |
//! | `packet-loss` | drop 30 % of the packets between the leader of a random partition and every other node | 8–12 s | ready + 3–5 s |
//! | `rolling-restart` | every node in turn (random start): SIGTERM / `docker stop`, start, wait ready | — | 2–4 s per node |
//! | `kill-all` | SIGKILL every node at once, start them all | 1–3 s down | ready + 5–8 s |
//!
//! A fault's start is recorded once it is in place (the kill returned, the last drop
//! rule was added), its end once it was undone.
//!
//! Affected partitions (for failover times): those whose leader, just before the
//! fault, was a node the fault hit (for a split: a node on a side without a majority;
//! `kill-all`: every partition).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::admin_http;
use crate::cluster::{Cluster, Link};
use crate::history::Recorder;

/// Bound on the wait for a restarted or healed node to report `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Drop probability of `packet-loss`.
pub const LOSS_PROBABILITY: f64 = 0.3;

/// One kind of fault run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// SIGKILL the leader of a partition, repeatedly.
    KillLeader,
    /// Freeze the leader longer than the election timeout.
    PauseLeader,
    /// Cut the leader off from its peers.
    IsolateLeader,
    /// Split the cluster into two random sides.
    PartitionHalves,
    /// 30 % packet loss between the leader and its peers.
    PacketLoss,
    /// Restart every node in turn, gracefully.
    RollingRestart,
    /// SIGKILL every node at once, then restart them all.
    KillAll,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 7] = [
        Scenario::KillLeader,
        Scenario::PauseLeader,
        Scenario::IsolateLeader,
        Scenario::PartitionHalves,
        Scenario::PacketLoss,
        Scenario::RollingRestart,
        Scenario::KillAll,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::KillLeader => "kill-leader",
            Scenario::PauseLeader => "pause-leader",
            Scenario::IsolateLeader => "isolate-leader",
            Scenario::PartitionHalves => "partition-halves",
            Scenario::PacketLoss => "packet-loss",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::KillAll => "kill-all",
        }
    }

    /// Whether the scenario cuts or degrades links (iptables).
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Scenario::IsolateLeader | Scenario::PartitionHalves | Scenario::PacketLoss
        )
    }

    /// The PRNG of this scenario under `seed`.
    pub fn rng(self, seed: u64) -> fastrand::Rng {
        // FNV-1a of the name: a stable, per-scenario stream for one seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        fastrand::Rng::with_seed(seed ^ h)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the fault loop needs besides the cluster.
#[derive(Debug)]
pub struct FaultContext<'a> {
    /// The history to record faults in.
    pub recorder: &'a Recorder,
    /// The topic whose leaders are targeted.
    pub topic: &'a str,
    /// Its partition count.
    pub partitions: u32,
    /// Bearer token of the HTTP admin port's `/v1/cluster` (security on).
    pub http_token: Option<&'a str>,
    /// The scenario's PRNG.
    pub rng: fastrand::Rng,
    /// No new cycle starts after this (a started cycle finishes).
    pub until: tokio::time::Instant,
}

impl FaultContext<'_> {
    fn log(&self, text: impl AsRef<str>) {
        eprintln!("[{:7.2}s] {}", self.recorder.clock().secs(), text.as_ref());
    }

    fn between(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.rng.u64(lo_ms..=hi_ms))
    }
}

/// Run `scenario`'s cycles until `ctx.until` (at least one cycle).
pub async fn run(
    scenario: Scenario,
    cluster: &mut Cluster,
    ctx: &mut FaultContext<'_>,
) -> anyhow::Result<usize> {
    let mut cycles = 0;
    loop {
        cycle(scenario, cluster, ctx).await?;
        cycles += 1;
        if tokio::time::Instant::now() >= ctx.until {
            return Ok(cycles);
        }
    }
}

/// One cycle of `scenario`: inject, hold, heal, settle (the node(s) it hit ready
/// again). `ctx.until` is not looked at.
pub async fn cycle(
    scenario: Scenario,
    cluster: &mut Cluster,
    ctx: &mut FaultContext<'_>,
) -> anyhow::Result<()> {
    match scenario {
        Scenario::KillLeader => kill_leader(cluster, ctx).await,
        Scenario::PauseLeader => pause_leader(cluster, ctx).await,
        Scenario::IsolateLeader => isolate_leader(cluster, ctx).await,
        Scenario::PartitionHalves => partition_halves(cluster, ctx).await,
        Scenario::PacketLoss => packet_loss(cluster, ctx).await,
        Scenario::RollingRestart => rolling_restart(cluster, ctx).await,
        Scenario::KillAll => kill_all(cluster, ctx).await,
    }
}

/// Undo every fault: links healed, paused nodes resumed, stopped nodes started; then
/// wait until every node is ready.
pub async fn heal_all(cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster.heal_network().await?;
    for id in cluster.ids() {
        cluster.resume(id).await.ok();
        cluster.start(id).await.ok();
    }
    let ids = cluster.ids();
    cluster.wait_ready(&ids, READY_TIMEOUT).await
}

/// Current leaders of the topic's partitions (majority of the nodes' claims).
async fn leaders(cluster: &Cluster, ctx: &FaultContext<'_>) -> BTreeMap<u32, u64> {
    admin_http::leaders(&cluster.http_addrs(), ctx.topic, ctx.http_token).await
}

/// The leader of a random partition, waiting (≤ 20 s) until one is known; and the
/// partitions it leads.
async fn pick_leader(
    cluster: &Cluster,
    ctx: &mut FaultContext<'_>,
) -> anyhow::Result<(u64, u32, Vec<u32>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leaders = leaders(cluster, ctx).await;
        if !leaders.is_empty() {
            let known: Vec<(u32, u64)> = leaders.iter().map(|(p, n)| (*p, *n)).collect();
            let (partition, node) = known[ctx.rng.usize(..known.len())];
            let led = led_by(&leaders, &[node]);
            return Ok((node, partition, led));
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no partition of {} has a known leader", ctx.topic);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn led_by(leaders: &BTreeMap<u32, u64>, nodes: &[u64]) -> Vec<u32> {
    leaders
        .iter()
        .filter(|(_, n)| nodes.contains(n))
        .map(|(p, _)| *p)
        .collect()
}

async fn settle(
    cluster: &mut Cluster,
    ctx: &mut FaultContext<'_>,
    ids: &[u64],
    lo_ms: u64,
    hi_ms: u64,
) -> anyhow::Result<()> {
    cluster
        .wait_ready(ids, READY_TIMEOUT)
        .await
        .context("after healing")?;
    let wait = ctx.between(lo_ms, hi_ms);
    tokio::time::sleep(wait).await;
    Ok(())
}

async fn kill_leader(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let (node, partition, led) = pick_leader(cluster, ctx).await?;
    let down = ctx.between(2_000, 5_000);
    ctx.log(format!(
        "kill -9 node {node} (leader of p{partition}; leads {led:?}), down {down:?}"
    ));
    cluster.kill(node).await?;
    let f = ctx
        .recorder
        .fault_start("kill", vec![node], led, format!("down {down:?}"));
    tokio::time::sleep(down).await;
    cluster.start(node).await?;
    ctx.recorder.fault_end(f);
    ctx.log(format!("started node {node}"));
    settle(cluster, ctx, &[node], 3_000, 6_000).await
}

async fn pause_leader(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let (node, partition, led) = pick_leader(cluster, ctx).await?;
    let hold = ctx.between(4_000, 7_000);
    ctx.log(format!(
        "pause node {node} (leader of p{partition}; leads {led:?}) for {hold:?}"
    ));
    cluster.pause(node).await?;
    let f = ctx
        .recorder
        .fault_start("pause", vec![node], led, format!("paused {hold:?}"));
    tokio::time::sleep(hold).await;
    cluster.resume(node).await?;
    ctx.recorder.fault_end(f);
    ctx.log(format!("resumed node {node}"));
    settle(cluster, ctx, &[node], 3_000, 6_000).await
}

async fn isolate_leader(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let (node, partition, led) = pick_leader(cluster, ctx).await?;
    let hold = ctx.between(5_000, 9_000);
    let links: Vec<Link> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != node)
        .map(|b| Link {
            a: node,
            b,
            drop_probability: 1.0,
        })
        .collect();
    ctx.log(format!(
        "isolate node {node} (leader of p{partition}; leads {led:?}) for {hold:?}"
    ));
    cluster.degrade(&links).await?;
    let f = ctx
        .recorder
        .fault_start("isolate", vec![node], led, format!("isolated {hold:?}"));
    tokio::time::sleep(hold).await;
    cluster.heal_network().await?;
    ctx.recorder.fault_end(f);
    ctx.log(format!("reconnected node {node}"));
    let ids = cluster.ids();
    settle(cluster, ctx, &ids, 4_000, 7_000).await
}

async fn partition_halves(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let mut ids = cluster.ids();
    ctx.rng.shuffle(&mut ids);
    let small = ctx.rng.usize(1..=(ids.len() / 2).max(1));
    // Every other cycle the smaller side holds the leader of a random partition (else
    // a split that only strands followers could fill a whole run).
    if ctx.rng.bool() {
        let leaders = leaders(cluster, ctx).await;
        let known: Vec<u64> = leaders.values().copied().collect();
        if !known.is_empty() {
            let leader = known[ctx.rng.usize(..known.len())];
            if let Some(i) = ids.iter().position(|id| *id == leader) {
                ids.swap(0, i);
            }
        }
    }
    let (a, b) = ids.split_at(small);
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let majority = ids.len() / 2 + 1;
    let mut minority: Vec<u64> = Vec::new();
    if a.len() < majority {
        minority.extend(&a);
    }
    if b.len() < majority {
        minority.extend(&b);
    }
    let leaders = leaders(cluster, ctx).await;
    let affected = led_by(&leaders, &minority);
    let hold = ctx.between(5_000, 9_000);
    let links: Vec<Link> = a
        .iter()
        .flat_map(|x| {
            b.iter().map(|y| Link {
                a: *x,
                b: *y,
                drop_probability: 1.0,
            })
        })
        .collect();
    ctx.log(format!(
        "partition {a:?} | {b:?} for {hold:?} (leaders {leaders:?}; affected {affected:?})"
    ));
    cluster.degrade(&links).await?;
    let f = ctx.recorder.fault_start(
        "partition",
        minority,
        affected,
        format!("{a:?} | {b:?} for {hold:?}"),
    );
    tokio::time::sleep(hold).await;
    cluster.heal_network().await?;
    ctx.recorder.fault_end(f);
    ctx.log("healed the partition");
    let ids = cluster.ids();
    settle(cluster, ctx, &ids, 4_000, 7_000).await
}

async fn packet_loss(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let (node, partition, led) = pick_leader(cluster, ctx).await?;
    let hold = ctx.between(8_000, 12_000);
    let links: Vec<Link> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != node)
        .map(|b| Link {
            a: node,
            b,
            drop_probability: LOSS_PROBABILITY,
        })
        .collect();
    ctx.log(format!(
        "{:.0}% packet loss around node {node} (leader of p{partition}; leads {led:?}) for {hold:?}",
        LOSS_PROBABILITY * 100.0
    ));
    cluster.degrade(&links).await?;
    let f = ctx.recorder.fault_start(
        "loss",
        vec![node],
        led,
        format!("p={LOSS_PROBABILITY} for {hold:?}"),
    );
    tokio::time::sleep(hold).await;
    cluster.heal_network().await?;
    ctx.recorder.fault_end(f);
    ctx.log("loss removed");
    let ids = cluster.ids();
    settle(cluster, ctx, &ids, 3_000, 5_000).await
}

async fn rolling_restart(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let mut ids = cluster.ids();
    let first = ctx.rng.usize(..ids.len());
    ids.rotate_left(first);
    for node in ids {
        let leaders = leaders(cluster, ctx).await;
        let led = led_by(&leaders, &[node]);
        ctx.log(format!("restart node {node} (SIGTERM; leads {led:?})"));
        cluster.stop(node).await?;
        let f = ctx
            .recorder
            .fault_start("restart", vec![node], led, "graceful".into());
        cluster.start(node).await?;
        ctx.recorder.fault_end(f);
        settle(cluster, ctx, &[node], 2_000, 4_000).await?;
    }
    Ok(())
}

async fn kill_all(cluster: &mut Cluster, ctx: &mut FaultContext<'_>) -> anyhow::Result<()> {
    let ids = cluster.ids();
    let all: Vec<u32> = (0..ctx.partitions).collect();
    let down = ctx.between(1_000, 3_000);
    ctx.log(format!("kill -9 every node {ids:?}, down {down:?}"));
    cluster.kill_all().await?;
    let f = ctx
        .recorder
        .fault_start("kill-all", ids.clone(), all, format!("down {down:?}"));
    tokio::time::sleep(down).await;
    for &id in &ids {
        cluster.start(id).await?;
    }
    ctx.recorder.fault_end(f);
    ctx.log("started every node");
    settle(cluster, ctx, &ids, 5_000, 8_000).await
}
