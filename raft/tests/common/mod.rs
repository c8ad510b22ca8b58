//! Helpers shared by the tests that run one Raft group without peers.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use neo_raft::{GroupConfig, GroupId, GroupKind, NodeStore, RaftGroup, RaftTiming, Role};

pub use neo_raft::NoPeers;

/// Opens partition group `group` of node 1 on `store`, with no peers.
pub async fn open_partition(store: &NodeStore, group: GroupId) -> Arc<RaftGroup> {
    RaftGroup::open(
        GroupConfig {
            group,
            node_id: 1,
            kind: GroupKind::Partition,
            timing: RaftTiming::PARTITION,
            snapshot_every_entries: 0,
            encrypt_at_rest: false,
        },
        store,
        Arc::new(NoPeers),
        Box::new(neo_raft::LogOnly),
    )
    .await
    .expect("open")
}

/// Bootstraps `g` as its only voter and waits (up to `deadline`) until it leads.
pub async fn lead_alone(g: &RaftGroup, deadline: Duration) {
    g.bootstrap(&BTreeMap::from([(1, "unused:1".to_string())]))
        .await
        .expect("bootstrap");
    g.wait_until(deadline, "leader", |m| m.role == Role::Leader)
        .await
        .expect("leads");
}
