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
//! Deletion only follows an observed disappearance: a group is deleted only if an
//! earlier state this task saw listed it. States are applied in log order, so a group
//! that disappears was deleted by a committed command, never by a stale view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use neo_raft::meta_sm::MetaState;
use neo_raft::{GroupId, METADATA_GROUP, NodeId};
use tokio::sync::watch;

use crate::node::Shared;

/// Period of the retry pass.
const RECONCILE_PERIOD_MS: u64 = 1_000;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut state_rx = shared.meta.meta_watch();
    let mut peers: BTreeMap<NodeId, String> = BTreeMap::new();
    let mut seen: BTreeSet<GroupId> = BTreeSet::new();
    let mut bootstrapped: BTreeSet<GroupId> = BTreeSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(RECONCILE_PERIOD_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = state_rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let state = state_rx.borrow_and_update().clone();
        sync_peers(&shared, &state, &mut peers);
        let mine = my_partitions(&state, shared.node_id);
        for (group, replicas) in &mine {
            seen.insert(*group);
            let g = match shared.registry.get(*group) {
                Some(g) => g,
                None => match shared.open_partition(*group).await {
                    Ok(g) => {
                        shared.registry.insert(g.clone());
                        tracing::info!(group, "opened partition group");
                        g
                    }
                    Err(e) => {
                        tracing::warn!(group, "open partition group: {e}");
                        continue;
                    }
                },
            };
            if bootstrapped.contains(group) {
                continue;
            }
            let members: BTreeMap<NodeId, String> = replicas
                .iter()
                .filter_map(|n| state.nodes.get(n).map(|i| (*n, i.addr.clone())))
                .collect();
            if members.len() != replicas.len() {
                continue; // A replica is not registered: cannot happen for applied topics.
            }
            match g.bootstrap(&members).await {
                Ok(()) => {
                    bootstrapped.insert(*group);
                }
                Err(e) => tracing::warn!(group, "bootstrap partition group: {e}"),
            }
        }
        let gone: Vec<GroupId> = shared
            .registry
            .ids()
            .into_iter()
            .filter(|g| *g != METADATA_GROUP && !mine.contains_key(g) && seen.contains(g))
            .collect();
        for group in gone {
            if let Some(g) = shared.registry.remove(group) {
                if let Err(e) = g.shutdown().await {
                    tracing::warn!(group, "shutdown of a deleted partition: {e}");
                }
                drop(g);
                match shared.store.remove_group_files(group) {
                    Ok(()) => tracing::info!(group, "deleted partition group"),
                    Err(e) => tracing::warn!(group, "delete partition files: {e}"),
                }
            }
            seen.remove(&group);
            bootstrapped.remove(&group);
        }
    }
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

/// Hands every registered node's cluster address to the transport (only changes).
fn sync_peers(shared: &Shared, state: &MetaState, known: &mut BTreeMap<NodeId, String>) {
    for (id, info) in &state.nodes {
        if *id == shared.node_id || known.get(id) == Some(&info.addr) {
            continue;
        }
        match shared.transport.set_peer(*id, &info.addr) {
            Ok(()) => {
                known.insert(*id, info.addr.clone());
            }
            Err(e) => tracing::warn!(node = id, "peer address: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neo_raft::meta_sm::MetaCommand;

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
