//! Leader balancing (Kafka's "preferred replica election"), decided by each leader for
//! its own groups.
//!
//! Placement makes the first replica of every partition its *preferred leader* and
//! spreads preferred leaderships evenly over the nodes. Elections do not respect that:
//! after a node dies its groups elect other leaders, and when it returns it leads
//! nothing, so one node can end up leading every partition. Every `leader_balance_ms`
//! each node looks at the partition groups it leads and hands each one back to its
//! preferred leader ([`neo_broker::placement::leader_moves`]) with a Raft leader
//! transfer, when the preferred replica
//! - is alive by the node heartbeats (`Shared::is_alive`), and
//! - holds every committed entry (it is in the group's `in_sync` set), and was so at the
//!   previous pass too: a replica that just returned and is still catching up is left
//!   alone until it has stayed caught up for a whole period, so leadership does not
//!   bounce while it recovers.
//!
//! At most [`TRANSFERS_PER_PASS_MAX`] transfers start per pass, so a node that returns
//! to a cluster with many partitions gets its leaderships back over a few periods
//! instead of in one burst of elections. Clients see `NotLeader` with the new leader's
//! address and retry there (idempotent producers make the retry safe).
//!
//! No coordination is needed: a group has one leader, and only that leader acts on it.
//! A transfer that does not happen (the target crashed, an election intervened) is
//! retried at a later pass if the conditions still hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use neo_broker::placement::{GroupView, leader_moves};
use neo_raft::{GroupId, Role};
use tokio::sync::watch;

use crate::node::Shared;

/// Most leader transfers one node starts in one pass.
pub(crate) const TRANSFERS_PER_PASS_MAX: usize = 8;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(shared.limits.leader_balance_ms.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Groups led here whose preferred leader was in sync at the previous pass.
    let mut ready: BTreeSet<GroupId> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ready = pass(&shared, &ready).await;
    }
}

/// One pass; returns the groups whose preferred leader is in sync now (the next pass's
/// `ready`).
async fn pass(shared: &Shared, ready: &BTreeSet<GroupId>) -> BTreeSet<GroupId> {
    let state = shared.state();
    let mut views = Vec::new();
    let mut in_sync_now = BTreeSet::new();
    let mut alive = BTreeSet::new();
    let mut where_: BTreeMap<GroupId, (&str, usize)> = BTreeMap::new();
    for (topic, t) in &state.topics {
        for (partition, p) in t.partitions.iter().enumerate() {
            let Some(group) = shared.partition_group(p.group) else {
                continue;
            };
            let m = group.metrics();
            if m.role != Role::Leader {
                continue;
            }
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if preferred == shared.node_id || !m.voters.contains(&preferred) {
                continue;
            }
            if !m.in_sync.contains(&preferred) {
                continue;
            }
            in_sync_now.insert(p.group);
            if !ready.contains(&p.group) {
                continue; // In sync for less than a whole period: wait one more.
            }
            if shared.is_alive(preferred) {
                alive.insert(preferred);
            }
            where_.insert(p.group, (topic.as_str(), partition));
            views.push(GroupView {
                group: p.group,
                replicas: p.replicas.clone(),
                leader: Some(shared.node_id),
            });
        }
    }
    for (group, from, to) in leader_moves(&views, &alive)
        .into_iter()
        .take(TRANSFERS_PER_PASS_MAX)
    {
        let Some(g) = shared.partition_group(group) else {
            continue;
        };
        let (topic, partition) = where_.get(&group).copied().unwrap_or(("?", 0));
        match g.transfer_leader(to).await {
            Ok(()) => {
                shared
                    .metrics
                    .leader_transfers
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    topic,
                    partition,
                    group,
                    from,
                    to,
                    "leader balancing: handing leadership to the preferred replica"
                );
            }
            Err(e) => tracing::warn!(topic, partition, group, to, "leader balancing: {e}"),
        }
    }
    in_sync_now
}
