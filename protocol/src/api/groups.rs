//! Consumer groups: membership and assignment (at the group's coordinator), committed
//! offsets (at each partition's leader).
//!
//! # The member protocol (server-side assignment, after Kafka's KIP-848)
//! 1. `find_coordinator(group)` names the node that coordinates the group.
//! 2. `join_group` there: the member gets a `member_id`, a `member_epoch` and the
//!    partitions it may consume now (perhaps none yet: a partition is handed to a new
//!    owner only after its previous owner gave it up).
//! 3. The member keeps one `heartbeat_group` in flight: it reports the partitions it
//!    owns; the coordinator answers at once when the member's assignment changed, else
//!    after `wait_ms`. A smaller assignment is a revocation: the member commits what it
//!    consumed of those partitions, stops reading them, and reports them gone in its
//!    next heartbeat, which frees them for their new owner.
//! 4. Before reading a newly assigned partition the member calls `fetch_offsets` with its
//!    member id and epoch at the partition leader: that both returns the committed
//!    offset and *fences* the partition for the group (a Raft write), so that a commit
//!    by an older owner arriving later is refused with `FencedMember`.
//! 5. `commit_offsets` goes to the partition leader and is answered after a quorum has
//!    it on disk.
//! 6. `leave_group` frees the member's partitions at once (a static member keeps them
//!    until its session times out, so that a restart does not rebalance the others).
//!
//! A member whose epoch is stale, or that the coordinator no longer knows (its session
//! timed out), gets `FencedMember` on heartbeats and commits, and must join again.

use serde::{Deserialize, Serialize};

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition indexes, ascending.
    pub partitions: Vec<u32>,
}

/// Which node coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorRequest {
    /// Group name.
    pub group: String,
}

/// The coordinator of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorResponse {
    /// Node id of the coordinator.
    pub node_id: u64,
    /// Its Neo RPC address (`host:port`).
    pub address: String,
}

/// Join a group (at its coordinator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    /// Group name (created by its first join).
    pub group: String,
    /// Static membership: a member that joins again with the same instance id within
    /// its session timeout takes over its previous assignment without a rebalance.
    pub instance_id: Option<String>,
    /// Free text naming the client application (shown by `describe_group`).
    pub client_id: String,
    /// Topics the member consumes.
    pub topics: Vec<String>,
    /// A member silent for this long is removed (0: the broker's default).
    pub session_timeout_ms: u32,
}

/// The member's identity and its first assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupResponse {
    /// Member id: send it with every heartbeat, commit and leave.
    pub member_id: String,
    /// The member's epoch: send it with heartbeats and commits.
    pub member_epoch: u64,
    /// Partitions the member may consume now.
    pub assignment: Vec<TopicPartitions>,
    /// How often the member should heartbeat (at least).
    pub heartbeat_interval_ms: u32,
    /// The session timeout in force.
    pub session_timeout_ms: u32,
}

/// Keep a membership alive and learn assignment changes (at the coordinator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatRequest {
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: String,
    /// The member epoch the member holds.
    pub member_epoch: u64,
    /// Partitions the member still owns (it dropped everything else it was told to).
    pub owned: Vec<TopicPartitions>,
    /// A new subscription, when it changed.
    pub topics: Option<Vec<String>>,
    /// Hold the answer up to this long unless the assignment changes (bounded by the
    /// broker; 0: answer at once).
    pub wait_ms: u32,
}

/// The member's current epoch and assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatResponse {
    /// The member epoch to use from now on.
    pub member_epoch: u64,
    /// Partitions the member may consume now; any it owns and that are not listed are
    /// revoked.
    pub assignment: Vec<TopicPartitions>,
    /// How often the member should heartbeat (at least).
    pub heartbeat_interval_ms: u32,
}

/// Leave a group (at its coordinator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupRequest {
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: String,
    /// The member epoch the member holds.
    pub member_epoch: u64,
}

/// Left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupResponse {}

/// Commit a consumed offset of one partition (at the partition's leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetsRequest {
    /// Group name.
    pub group: String,
    /// The committing member; `None`: a commit from outside the group's membership
    /// (admin tools), accepted only while the group has no members.
    pub member_id: Option<String>,
    /// The member's epoch (ignored without a member id).
    pub member_epoch: u64,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Offset of the next record the group will consume (at most the log end offset).
    pub offset: u64,
    /// Free text stored with the offset (bounded, see docs/groups.md).
    pub metadata: String,
}

/// Committed (on a quorum's disks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetsResponse {}

/// Read a group's committed offset of one partition (at the partition's leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsetsRequest {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// A member taking the partition over: fences older owners (see the module doc).
    /// `None`: a plain read (admin tools, lag).
    pub member_id: Option<String>,
    /// The member's epoch (ignored without a member id).
    pub member_epoch: u64,
}

/// A partition's committed offset and the log's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsetsResponse {
    /// The committed offset; `None`: the group never committed one here.
    pub offset: Option<u64>,
    /// The metadata committed with it.
    pub metadata: String,
    /// Milliseconds since the Unix epoch when it was committed (leader clock).
    pub commit_time_ms: u64,
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Offset the next record will get (the high watermark).
    pub log_end_offset: u64,
}

/// List the groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGroupsRequest {}

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListing {
    /// Group name.
    pub name: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    /// How many members it has.
    pub members: u32,
}

/// Every group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGroupsResponse {
    /// Groups by name.
    pub groups: Vec<GroupListing>,
}

/// Describe one group's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroupRequest {
    /// Group name.
    pub group: String,
}

/// A member as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership instance id.
    pub instance_id: Option<String>,
    /// The client's own name for itself.
    pub client_id: String,
    /// The member's address as the coordinator saw it.
    pub host: String,
    /// The member's epoch.
    pub member_epoch: u64,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// Partitions it owns.
    pub assignment: Vec<TopicPartitions>,
    /// Partitions it is to get once their previous owners give them up.
    pub pending: Vec<TopicPartitions>,
}

/// A group's membership (committed offsets are read from the partition leaders with
/// `fetch_offsets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    /// Group name.
    pub name: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    /// The group epoch (bumped by every membership or subscription change).
    pub group_epoch: u64,
    /// Members by id.
    pub members: Vec<MemberDescription>,
    /// Topics the group consumes or has committed offsets of.
    pub topics: Vec<String>,
}

/// Delete a group (only while it has no members): its membership and committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteGroupRequest {
    /// Group name.
    pub group: String,
}

/// Deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteGroupResponse {}

/// Find an offset of a partition by position or time (at the partition's leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsRequest {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// What to find.
    pub spec: OffsetSpec,
}

/// Which offset [`ListOffsetsRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset whose record timestamp is at or after this many milliseconds
    /// since the Unix epoch (the log end offset when none is).
    Timestamp(i64),
}

/// The offset found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOffsetsResponse {
    /// The offset.
    pub offset: u64,
}
