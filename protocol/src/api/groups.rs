//! Consumer groups: membership, partition assignment, committed offsets.

use serde::{Deserialize, Serialize};

/// Partitions of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPartitions {
    /// Topic name.
    pub topic: String,
    /// Partition indexes.
    pub partitions: Vec<u32>,
}

/// One partition's offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Offset of the next record to consume.
    pub offset: u64,
}

/// Join (or rejoin) a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    /// Group name.
    pub group: String,
    /// The member id from a previous join, to keep assignments stable.
    pub member_id: Option<String>,
    /// Topics the member consumes.
    pub topics: Vec<String>,
    /// A member silent for this long is removed.
    pub session_timeout_ms: u32,
}

/// The member's id, generation and assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupResponse {
    /// Member id (keep it for heartbeats and rejoins).
    pub member_id: String,
    /// Group generation; stale generations get `StaleGeneration`.
    pub generation: u32,
    /// Partitions assigned to this member.
    pub assignment: Vec<TopicPartitions>,
}

/// Keep a membership alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatRequest {
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: String,
    /// Generation the member believes in.
    pub generation: u32,
}

/// Whether the member must rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatResponse {
    /// A rebalance is in progress: rejoin.
    pub rebalance: bool,
}

/// Leave a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupRequest {
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: String,
}

/// Left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupResponse {}

/// Commit consumed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetsRequest {
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: String,
    /// Generation (commits from stale generations are refused).
    pub generation: u32,
    /// Offsets to commit.
    pub offsets: Vec<PartitionOffset>,
}

/// Committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsetsResponse {}

/// Read committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsetsRequest {
    /// Group name.
    pub group: String,
    /// Partitions of interest.
    pub partitions: Vec<TopicPartitions>,
}

/// Committed offsets (partitions without one are absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchOffsetsResponse {
    /// Offsets.
    pub offsets: Vec<PartitionOffset>,
}
