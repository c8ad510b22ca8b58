//! A fault filter on the client side of the transport, for partition tests: drop every
//! RPC this node sends to chosen peers (as raft-rs's and TiKV's simulated transports).
//! Both directions of a link are cut by filtering on both nodes; [`crate::Transport`]
//! consults the filter before each RPC and answers "unreachable" without sending, and
//! before each snapshot chunk, so that cutting a link also cuts a transfer part-way.
//! [`NetFilter::cut_snapshot_after`] cuts one snapshot transfer after a number of chunks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use neo_raft::NodeId;

/// Which peers this node cannot reach. Cheap to clone; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct NetFilter {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
    /// One-shot: the next snapshot transfer to the peer ends after this many chunks.
    snapshot_cuts: Arc<RwLock<BTreeMap<NodeId, u64>>>,
}

impl NetFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every RPC to `peer` from now on.
    pub fn drop_to(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer);
    }

    /// Drops every RPC to each of `peers`.
    pub fn isolate<I: IntoIterator<Item = NodeId>>(&self, peers: I) {
        self.blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(peers);
    }

    /// Lets RPCs to `peer` through again.
    pub fn heal(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&peer);
    }

    /// Lets everything through again.
    pub fn heal_all(&self) {
        self.blocked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Whether RPCs to `peer` are dropped.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&peer)
    }

    /// Ends the next snapshot transfer to `peer` after `chunks` chunks have been sent,
    /// as if the link broke there (the receiver keeps what arrived; the sender's retry
    /// resumes). One-shot: later transfers are not cut.
    pub fn cut_snapshot_after(&self, peer: NodeId, chunks: u64) {
        self.snapshot_cuts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer, chunks);
    }

    /// Takes the pending snapshot cut for `peer`, if any.
    pub(crate) fn take_snapshot_cut(&self, peer: NodeId) -> Option<u64> {
        self.snapshot_cuts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&peer)
    }
}
