//! A fault filter on the client side of the transport, for partition tests: drop every
//! RPC this node sends to chosen peers (as raft-rs's and TiKV's simulated transports).
//! Both directions of a link are cut by filtering on both nodes; [`crate::Transport`]
//! consults the filter before each RPC and answers "unreachable" without sending.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use neo_raft::NodeId;

/// Which peers this node cannot reach. Cheap to clone; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct NetFilter {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl NetFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every RPC to `peer` from now on.
    pub fn drop_to(&self, peer: NodeId) {
        self.blocked.write().expect("filter lock").insert(peer);
    }

    /// Drops every RPC to each of `peers`.
    pub fn isolate<I: IntoIterator<Item = NodeId>>(&self, peers: I) {
        self.blocked.write().expect("filter lock").extend(peers);
    }

    /// Lets RPCs to `peer` through again.
    pub fn heal(&self, peer: NodeId) {
        self.blocked.write().expect("filter lock").remove(&peer);
    }

    /// Lets everything through again.
    pub fn heal_all(&self) {
        self.blocked.write().expect("filter lock").clear();
    }

    /// Whether RPCs to `peer` are dropped.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked.read().expect("filter lock").contains(&peer)
    }
}
