//! How a replica is configured: its Raft timing ([`RaftTiming`], with the reasoning
//! behind each default) and everything needed to open it ([`GroupConfig`]).

use crate::state_machine::GroupKind;
use crate::types::{GroupId, NodeId};

/// Timing of a group's Raft. Defaults suit a LAN; tests on a loaded 2-core machine use
/// the same values (no timing is asserted, only eventual outcomes).
///
/// When a follower that stopped hearing from its leader starts an election: openraft
/// refuses votes (and does not time out) for a leader lease of `election_max_ms` after
/// the last heartbeat, then waits its own election timeout, drawn anew in
/// `[election_min_ms, election_max_ms)` at every election, so a dead leader is replaced
/// `election_max_ms + [election_min_ms, election_max_ms)` after its last heartbeat
/// ([`RaftTiming::election_after_ms`]). Pre-vote is on: a follower that times out alone
/// (its leader is alive and heard by the others) asks first and changes no term, so it
/// cannot depose a healthy leader. docs/raft.md, "Timing and heartbeat cost".
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_max_ms: u64,
}

impl RaftTiming {
    /// Metadata group: one per cluster (its heartbeats cost nothing), a little more
    /// slack than partitions: a new controller is elected 1.5-2.0 s after the last
    /// heartbeat of a dead one. Heartbeats every 150 ms: a follower learns that an
    /// entry committed at the leader's next message, so this bounds how long a node's
    /// view (a revoked API key, a new topic) lags the leader's when nothing else is
    /// written.
    pub const METADATA: RaftTiming = RaftTiming {
        heartbeat_ms: 150,
        election_min_ms: 500,
        election_max_ms: 1_000,
    };
    /// Partition groups: a new leader 1.25-1.5 s after the last heartbeat of a dead
    /// one (4.5-6 s before issue #22). The heartbeat and the minimum election timeout
    /// are not shorter because openraft bounds every AppendEntries by the heartbeat
    /// period and every (pre-)vote by the minimum election timeout (3/4 of each in
    /// Neo's transport): with 100-200 ms heartbeats and a 300 ms minimum, a
    /// 100-partition topic created on a loaded 2-core machine never settled (RPCs
    /// slower than those bounds, then a pre-vote storm). Each heartbeat costs one small
    /// AppendEntries per follower per period (docs/raft.md: scaling, what was measured).
    pub const PARTITION: RaftTiming = RaftTiming {
        heartbeat_ms: 300,
        election_min_ms: 500,
        election_max_ms: 750,
    };

    /// The metadata timing before issue #22 (heartbeat 150 ms, election 1.0-2.0 s):
    /// kept for comparisons (`neo-node --raft-timing classic`), not a default.
    pub const METADATA_CLASSIC: RaftTiming = RaftTiming {
        heartbeat_ms: 150,
        election_min_ms: 1_000,
        election_max_ms: 2_000,
    };
    /// The partition timing before issue #22 (heartbeat 300 ms, election 1.5-3.0 s: a
    /// dead leader replaced 4.5-6 s after its last heartbeat): kept for comparisons.
    pub const PARTITION_CLASSIC: RaftTiming = RaftTiming {
        heartbeat_ms: 300,
        election_min_ms: 1_500,
        election_max_ms: 3_000,
    };

    /// The earliest and latest time after a dead leader's last heartbeat at which a
    /// follower starts an election (leader lease, then the election timeout).
    pub fn election_after_ms(&self) -> (u64, u64) {
        (
            self.election_max_ms + self.election_min_ms,
            2 * self.election_max_ms,
        )
    }
}

/// Everything needed to open one replica of a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group.
    pub group: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// Partition or metadata.
    pub kind: GroupKind,
    /// Heartbeat and election timing.
    pub timing: RaftTiming,
    /// Metadata group: build a snapshot (and purge the log before it) every this many
    /// entries. Partition groups never snapshot on their own: their log is their data and
    /// is purged by retention only.
    pub snapshot_every_entries: u64,
    /// Keep the group's log encrypted at rest under the node's key
    /// ([`crate::NodeStore::with_at_rest_key`]); opening fails if the node has none. A log
    /// created encrypted is opened encrypted whatever this says (its key check decides).
    pub encrypt_at_rest: bool,
}
