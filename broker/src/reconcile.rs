//! Keeps this node's partition groups in step with the applied metadata state.
//!
//! On every change of the state (and once a second, to retry failures):
//! - every registered node's cluster address is handed to the transport;
//! - every partition whose replica set names this node gets its group opened,
//!   registered (so peers' RPCs reach it) and bootstrapped with the replica set as its
//!   voters. Every replica bootstraps with the same members, so the group starts even
//!   if some replicas are down; `bootstrap` is a no-op on a replica that already has
//!   state (a restart, or one that heard from a leader first), and openraft refuses a
//!   second initialization of a non-empty log, which `bootstrap` treats as done;
//! - a group this node hosted whose partition is gone from the state (topic deleted)
//!   is shut down, unregistered and its files deleted.
//!
//! - a hosted replica that stopped ([`neo_raft::RaftGroup::failure`]: its log failed on
//!   a write or an `fdatasync`, or its Raft core exited) is closed and reopened, after
//!   [`RECOVER_FIRST_MS`] and then with doubling delays up to [`RECOVER_MAX_MS`]: the log
//!   reopens at its last successful sync (`neo_storage`'s salvage), the replica rejoins
//!   as a follower and its leader sends it what it lacks. A stopped replica acknowledges
//!   nothing meanwhile, so it is never counted in a quorum.
//!
//! Deletion only follows an observed disappearance: a group is deleted only if an
//! earlier state this task saw listed it. States are applied in log order, so a group
//! that disappears was deleted by a committed command, never by a stale view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neo_raft::{GroupId, NodeId};
use tokio::sync::watch;

use crate::facade::Broker;
use crate::meta::MetaState;
use crate::partition::Partition;

/// Period of the retry pass.
const RECONCILE_PERIOD_MS: u64 = 1_000;
/// Delay before the first reopen of a stopped replica.
pub const RECOVER_FIRST_MS: u64 = 1_000;
/// Longest delay between two reopens of a replica that keeps stopping (a disk still full).
pub const RECOVER_MAX_MS: u64 = 60_000;
/// A reopened replica healthy this long starts over at the first delay if it stops again.
const RECOVERED_AFTER_MS: u64 = 60_000;

/// Stopped replicas reopened by this process.
static REOPENS: AtomicU64 = AtomicU64::new(0);

/// How many stopped replicas this process reopened (`neo_replica_reopens_total`).
pub fn replica_reopens() -> u64 {
    REOPENS.load(Ordering::Relaxed)
}

/// A replica being recovered.
struct Recovery {
    /// Reopens so far.
    attempts: u32,
    /// Not before this.
    next_try: Instant,
    /// When it was last reopened.
    reopened_at: Option<Instant>,
}

/// What one reconciler remembers between passes.
#[derive(Default)]
pub(crate) struct Reconciler {
    /// Peer addresses already handed to the transport.
    peers: BTreeMap<NodeId, String>,
    /// Every group an applied state this reconciler saw listed for this node.
    seen: BTreeSet<GroupId>,
    /// Groups bootstrapped (or found initialised) by this reconciler.
    bootstrapped: BTreeSet<GroupId>,
    /// Stopped replicas being reopened.
    recovering: BTreeMap<GroupId, Recovery>,
}

/// Runs until `stop` turns `true`.
pub(crate) async fn run(b: &Broker, mut stop: watch::Receiver<bool>) {
    let mut state_rx = b.meta_view();
    let mut r = Reconciler::default();
    let mut tick = tokio::time::interval(Duration::from_millis(RECONCILE_PERIOD_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = state_rx.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let state = state_rx.borrow_and_update().clone();
        r.pass(b, &state).await;
    }
}

impl Reconciler {
    /// One pass over `state`.
    pub(crate) async fn pass(&mut self, b: &Broker, state: &MetaState) {
        self.sync_peers(b, state);
        let mine = my_partitions(state, b.node_id());
        for (group, replicas) in &mine {
            self.seen.insert(*group);
            let p = match b.partition(*group) {
                Some(p) => match self.recover(b, p).await {
                    Some(p) => p,
                    None => continue,
                },
                None => match b.open_partition(*group).await {
                    Ok(p) => {
                        tracing::info!(group, "opened partition group");
                        p
                    }
                    Err(e) => {
                        tracing::warn!(group, "open partition group: {e}");
                        continue;
                    }
                },
            };
            if self.bootstrapped.contains(group) {
                continue;
            }
            let members: BTreeMap<NodeId, String> = replicas
                .iter()
                .filter_map(|n| state.nodes.get(n).map(|i| (*n, i.addr.clone())))
                .collect();
            if members.len() != replicas.len() {
                continue; // A replica is not registered: cannot happen for applied topics.
            }
            match p.group().bootstrap(&members).await {
                Ok(()) => {
                    self.bootstrapped.insert(*group);
                }
                Err(e) => tracing::warn!(group, "bootstrap partition group: {e}"),
            }
        }
        let gone: Vec<GroupId> = b
            .partitions()
            .iter()
            .map(|p| p.group().id())
            .filter(|g| !mine.contains_key(g) && self.seen.contains(g))
            .collect();
        for group in gone {
            match b.close_partition(group, true).await {
                Ok(()) => tracing::info!(group, "deleted partition group"),
                Err(e) => tracing::warn!(group, "delete partition group: {e}"),
            }
            self.seen.remove(&group);
            self.bootstrapped.remove(&group);
        }
    }

    /// `p` if it runs; if it stopped, closes and reopens it when its delay is over (the
    /// reopened replica, or `None` while it waits or if the reopen failed).
    async fn recover(&mut self, b: &Broker, p: Arc<Partition>) -> Option<Arc<Partition>> {
        let group = p.group().id();
        let now = Instant::now();
        let Some(why) = p.group().failure() else {
            if let Some(r) = self.recovering.get(&group)
                && r.reopened_at
                    .is_some_and(|t| now - t >= Duration::from_millis(RECOVERED_AFTER_MS))
            {
                tracing::info!(group, "replica healthy since its recovery");
                self.recovering.remove(&group);
            }
            return Some(p);
        };
        let r = self.recovering.entry(group).or_insert_with(|| {
            tracing::error!(group, reason = %why, "replica stopped; reopening it");
            Recovery {
                attempts: 0,
                next_try: now + Duration::from_millis(RECOVER_FIRST_MS),
                reopened_at: None,
            }
        });
        // After a reopen, `next_try` is already that reopen's time plus a longer delay.
        if now < r.next_try {
            return None;
        }
        r.attempts += 1;
        r.next_try = now + backoff(r.attempts);
        r.reopened_at = Some(now);
        drop(p);
        if let Err(e) = b.close_partition(group, false).await {
            tracing::warn!(group, "close stopped replica: {e}");
        }
        match b.open_partition(group).await {
            Ok(p) => {
                tracing::warn!(group, attempts = r.attempts, reason = %why, "reopened stopped replica");
                REOPENS.fetch_add(1, Ordering::Relaxed);
                Some(p)
            }
            Err(e) => {
                tracing::error!(group, "reopen stopped replica: {e}");
                None
            }
        }
    }

    /// Hands every registered node's cluster address to the transport (only changes).
    fn sync_peers(&mut self, b: &Broker, state: &MetaState) {
        for (id, info) in &state.nodes {
            if *id == b.node_id() || self.peers.get(id) == Some(&info.addr) {
                continue;
            }
            match b.cluster.peer_address(*id, &info.addr) {
                Ok(()) => {
                    self.peers.insert(*id, info.addr.clone());
                }
                // Not remembered: the next pass tries again.
                Err(e) => tracing::warn!(node = id, "peer address: {e}"),
            }
        }
    }
}

/// The delay after `attempts` reopens: doubling from [`RECOVER_FIRST_MS`], at most
/// [`RECOVER_MAX_MS`].
fn backoff(attempts: u32) -> Duration {
    let ms = RECOVER_FIRST_MS.saturating_mul(1 << attempts.min(16));
    Duration::from_millis(ms.min(RECOVER_MAX_MS))
}

/// Partition groups whose replica set names `me`, with their replica sets.
fn my_partitions(state: &MetaState, me: NodeId) -> BTreeMap<GroupId, Vec<NodeId>> {
    state
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.replicas.contains(&me))
        .map(|p| (p.group, p.replicas.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaCommand;

    #[test]
    fn reopen_delays_double_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(RECOVER_FIRST_MS));
        assert_eq!(backoff(1), Duration::from_millis(2 * RECOVER_FIRST_MS));
        assert_eq!(backoff(40), Duration::from_millis(RECOVER_MAX_MS));
    }

    #[test]
    fn my_partitions_are_those_naming_me() {
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(&MetaCommand::RegisterNode {
                node_id: id,
                addr: format!("h:{id}"),
                client_addr: String::new(),
            });
        }
        s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1]],
            retention_ms: None,
            retention_bytes: None,
        });
        let mine = my_partitions(&s, 1);
        assert_eq!(mine.len(), 2);
        assert!(mine.values().all(|r| r.contains(&1)));
    }
}
