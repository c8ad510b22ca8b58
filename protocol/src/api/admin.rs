//! Admin and metadata: topics, brokers, partition leaders.

use serde::{Deserialize, Serialize};

/// Ask for the cluster's brokers and the given topics' partitions (all topics if empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    /// Topics of interest; empty = all.
    pub topics: Vec<String>,
}

/// One broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: u64,
    /// Client address (`host:port` of its Neo RPC listener).
    pub address: String,
    /// Rack or zone, if configured.
    pub rack: Option<String>,
}

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: u32,
    /// Node id of the leader, if there is one now.
    pub leader: Option<u64>,
    /// Node ids of every replica.
    pub replicas: Vec<u64>,
    /// Node ids of the replicas caught up with the leader.
    pub in_sync: Vec<u64>,
    /// Raft term of the current leader (fences stale metadata).
    pub leader_epoch: u64,
}

/// One topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionMetadata>,
}

/// The cluster as the answering node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// Cluster id.
    pub cluster_id: String,
    /// Every broker.
    pub brokers: Vec<BrokerInfo>,
    /// Node id of the metadata group's leader, if known.
    pub controller_id: Option<u64>,
    /// The topics asked for.
    pub topics: Vec<TopicMetadata>,
}

/// Create a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Topic configuration overrides (`retention.ms`, ...).
    pub configs: Vec<(String, String)>,
}

/// The topic was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicResponse {
    /// Topic name.
    pub name: String,
}

/// Delete a topic and its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    /// Topic name.
    pub name: String,
}

/// The topic was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicResponse {}

/// List topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsRequest {
    /// Whether to include internal topics (offsets, ...).
    pub include_internal: bool,
}

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsResponse {
    /// Names, sorted.
    pub topics: Vec<String>,
}

/// Describe one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicRequest {
    /// Topic name.
    pub name: String,
}

/// A topic's partitions and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionMetadata>,
    /// Effective configuration.
    pub configs: Vec<(String, String)>,
}
