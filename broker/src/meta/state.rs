//! The metadata group's state: nodes, topics, partitions and their replica sets.
//!
//! Pure decision logic (no I/O, no openraft types): [`MetaState::apply`] takes a committed
//! [`MetaCommand`] and returns a [`MetaResponse`]. Every replica applies the same commands
//! in the same order, so a command that is refused (topic exists, unknown node) is refused
//! identically everywhere and is answered with a typed [`MetaError`], never a panic.
//!
//! Consumer-group membership ([`Groups`], rules in `crate::groups::state`) lives here
//! too, and the security state (roles, grants, assignments, API key hashes; commands in
//! [`super::security`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use neo_protocol::api::QueueSettings;
use neo_raft::{GroupId, METADATA_GROUP, NodeId};

use crate::groups::state::{GroupCommand, GroupError, Groups};
use neo_security::SecurityState;
use neo_security::state::SecurityStateV1;

use super::security::SecurityCommand;

/// Longest topic name accepted, in bytes.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Most partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

/// A change to the cluster metadata, proposed to the metadata group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Records (or updates) a node, its cluster-plane address and the client address it
    /// advertises.
    RegisterNode {
        /// The node.
        node_id: NodeId,
        /// Its gRPC address (`host:port`).
        addr: String,
        /// The Neo RPC address clients are sent to (`host:port`, metadata and `NotLeader`
        /// hints). Empty: keep the one already registered (a join that does not know it).
        client_addr: String,
    },
    /// Forgets a node. Refused while a partition still lists it as a replica.
    RemoveNode {
        /// The node.
        node_id: NodeId,
    },
    /// Creates a topic with one replica set per partition (placement is decided by the
    /// proposer, see `neo-cluster`'s placement).
    CreateTopic {
        /// Topic name.
        name: String,
        /// `replicas[p]` is the replica set of partition `p`; the first node is the
        /// preferred leader.
        replicas: Vec<Vec<NodeId>>,
        /// Retention by age: sealed segments whose newest record is older than this
        /// many milliseconds are deleted. `None`: no age limit. `Some(0)` is refused.
        retention_ms: Option<u64>,
        /// Retention by size, per partition replica log: the oldest sealed segments are
        /// deleted while the log is larger. `None`: no size limit. `Some(0)` is refused.
        retention_bytes: Option<u64>,
    },
    /// Deletes a topic and its partitions.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Changes a consumer group's membership (proposed by its coordinator).
    Group(GroupCommand),
    /// Changes roles, grants, assignments or API keys.
    Security(SecurityCommand),
    /// Creates a queue: a topic (as `CreateTopic`) and its delivery settings, in one
    /// command (so every replica opens its partitions as a queue's).
    CreateQueue {
        /// Queue (topic) name.
        name: String,
        /// Replica sets, as in `CreateTopic`.
        replicas: Vec<Vec<NodeId>>,
        /// Retention by age (as in `CreateTopic`).
        retention_ms: Option<u64>,
        /// Retention by size (as in `CreateTopic`).
        retention_bytes: Option<u64>,
        /// Delivery settings (checked by [`super::queues::check_settings`]).
        settings: QueueSettings,
    },
    /// A `CreateTopic` or `CreateQueue` whose partition logs are encrypted at rest:
    /// the topic and its flag come into being in one command, so that no replica ever
    /// opens one of its partitions in the clear.
    EncryptedAtRest(Box<MetaCommand>),
}

/// The answer to a [`MetaCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Applied; nothing to report.
    Done,
    /// A topic was created; its partitions use groups `first_group .. first_group + n`.
    TopicCreated {
        /// Group id of partition 0.
        first_group: GroupId,
    },
    /// Refused; the state did not change.
    Refused(MetaError),
}

/// Why a [`MetaCommand`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// The topic already exists.
    #[error("topic {name:?} already exists")]
    TopicExists {
        /// Topic name.
        name: String,
    },
    /// No such topic.
    #[error("unknown topic {name:?}")]
    UnknownTopic {
        /// Topic name.
        name: String,
    },
    /// A replica set names a node that is not registered.
    #[error("unknown node {node_id}")]
    UnknownNode {
        /// The node.
        node_id: NodeId,
    },
    /// The node still hosts replicas and cannot be removed.
    #[error("node {node_id} still hosts {replicas} partition replicas")]
    NodeInUse {
        /// The node.
        node_id: NodeId,
        /// How many replicas it hosts.
        replicas: usize,
    },
    /// A consumer-group command was refused.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A security change was refused (unknown role, bad grant, limit).
    #[error("{reason}")]
    Security {
        /// What is wrong.
        reason: String,
    },
    /// The command's arguments break a limit or are malformed.
    #[error("invalid command: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

fn invalid(reason: &str) -> MetaError {
    MetaError::Invalid {
        reason: reason.to_string(),
    }
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// gRPC address (`host:port`).
    pub addr: String,
    /// Advertised Neo RPC address for clients (`host:port`); empty until the node
    /// registered one.
    pub client_addr: String,
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// The partition's Raft group.
    pub group: GroupId,
    /// Its replica set; the first node is the preferred leader.
    pub replicas: Vec<NodeId>,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// `partitions[p]` describes partition `p`.
    pub partitions: Vec<PartitionInfo>,
    /// Retention by age in milliseconds (`None`: keep regardless of age).
    pub retention_ms: Option<u64>,
    /// Retention by size of each partition replica's log, in bytes (`None`: no limit).
    pub retention_bytes: Option<u64>,
}

/// The whole metadata state; its Qiss encoding is the metadata group's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Registered nodes.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicInfo>,
    /// The next partition group id to hand out (group ids are never reused, so that a
    /// deleted partition's stale replicas can never join a new group).
    pub next_group: GroupId,
    /// Consumer groups: members, epochs, assignments.
    pub groups: Groups,
    /// Users, roles, grants, role assignments, ACLs, API key hashes, quotas.
    pub security: SecurityState,
    /// Queues (topics with delivery settings) by name.
    pub queues: BTreeMap<String, QueueSettings>,
    /// Topics whose partition logs are encrypted at rest (created with
    /// `encryption.at-rest=true`, see [`MetaCommand::EncryptedAtRest`]).
    pub encrypted_topics: BTreeSet<String>,
}

/// The metadata image before users, ACLs and the `connections` quota (the security
/// state's first layout), and before topics encrypted at rest.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MetaStateV4 {
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    next_group: GroupId,
    groups: Groups,
    security: SecurityStateV1,
    queues: BTreeMap<String, QueueSettings>,
}

impl From<MetaStateV4> for MetaState {
    fn from(v: MetaStateV4) -> MetaState {
        MetaState {
            nodes: v.nodes,
            topics: v.topics,
            next_group: v.next_group,
            groups: v.groups,
            security: v.security.into(),
            queues: v.queues,
            encrypted_topics: BTreeSet::new(),
        }
    }
}

/// The metadata image before queues existed.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MetaStateV3 {
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    next_group: GroupId,
    groups: Groups,
    security: SecurityStateV1,
}

impl From<MetaStateV3> for MetaState {
    fn from(v: MetaStateV3) -> MetaState {
        MetaState {
            nodes: v.nodes,
            topics: v.topics,
            next_group: v.next_group,
            groups: v.groups,
            security: v.security.into(),
            queues: BTreeMap::new(),
            encrypted_topics: BTreeSet::new(),
        }
    }
}

/// The metadata image before the security state existed.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MetaStateV2 {
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    next_group: GroupId,
    groups: Groups,
}

impl From<MetaStateV2> for MetaState {
    fn from(v: MetaStateV2) -> MetaState {
        MetaState {
            nodes: v.nodes,
            topics: v.topics,
            next_group: v.next_group,
            groups: v.groups,
            security: SecurityState::default(),
            queues: BTreeMap::new(),
            encrypted_topics: BTreeSet::new(),
        }
    }
}

/// The metadata image before consumer groups existed (snapshots written by earlier
/// releases still restore).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MetaStateV1 {
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicInfo>,
    next_group: GroupId,
}

impl From<MetaStateV1> for MetaState {
    fn from(v: MetaStateV1) -> MetaState {
        MetaState {
            nodes: v.nodes,
            topics: v.topics,
            next_group: v.next_group,
            groups: Groups::default(),
            security: SecurityState::default(),
            queues: BTreeMap::new(),
            encrypted_topics: BTreeSet::new(),
        }
    }
}

impl MetaState {
    /// Applies one committed command.
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        match self.try_apply(cmd) {
            Ok(r) => r,
            Err(e) => MetaResponse::Refused(e),
        }
    }

    fn try_apply(&mut self, cmd: &MetaCommand) -> Result<MetaResponse, MetaError> {
        match cmd {
            MetaCommand::RegisterNode {
                node_id,
                addr,
                client_addr,
            } => {
                if addr.is_empty() {
                    return Err(invalid("empty node address"));
                }
                let client_addr = if client_addr.is_empty() {
                    self.nodes
                        .get(node_id)
                        .map(|n| n.client_addr.clone())
                        .unwrap_or_default()
                } else {
                    client_addr.clone()
                };
                self.nodes.insert(
                    *node_id,
                    NodeInfo {
                        addr: addr.clone(),
                        client_addr,
                    },
                );
                Ok(MetaResponse::Done)
            }
            MetaCommand::RemoveNode { node_id } => {
                let replicas = self.replicas_on(*node_id);
                if replicas > 0 {
                    return Err(MetaError::NodeInUse {
                        node_id: *node_id,
                        replicas,
                    });
                }
                self.nodes.remove(node_id);
                Ok(MetaResponse::Done)
            }
            MetaCommand::CreateTopic {
                name,
                replicas,
                retention_ms,
                retention_bytes,
            } => self.create_topic(name, replicas, *retention_ms, *retention_bytes),
            MetaCommand::CreateQueue {
                name,
                replicas,
                retention_ms,
                retention_bytes,
                settings,
            } => {
                super::queues::check_settings(name, settings)
                    .map_err(|reason| MetaError::Invalid { reason })?;
                let r = self.create_topic(name, replicas, *retention_ms, *retention_bytes)?;
                self.queues.insert(name.clone(), settings.clone());
                Ok(r)
            }
            MetaCommand::EncryptedAtRest(inner) => {
                let name = match inner.as_ref() {
                    MetaCommand::CreateTopic { name, .. }
                    | MetaCommand::CreateQueue { name, .. } => name.clone(),
                    _ => {
                        return Err(invalid(
                            "only a topic or queue creation can be encrypted at rest",
                        ));
                    }
                };
                let r = self.try_apply(inner)?;
                self.encrypted_topics.insert(name);
                Ok(r)
            }
            MetaCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => {
                    self.queues.remove(name);
                    self.encrypted_topics.remove(name);
                    let counts = self.partition_counts();
                    self.groups.topic_changed(name, &counts);
                    Ok(MetaResponse::Done)
                }
                None => Err(MetaError::UnknownTopic { name: name.clone() }),
            },
            MetaCommand::Group(cmd) => {
                let counts = self.partition_counts();
                self.groups.apply(cmd, &counts)?;
                Ok(MetaResponse::Done)
            }
            MetaCommand::Security(cmd) => {
                super::security::apply(&mut self.security, cmd)?;
                Ok(MetaResponse::Done)
            }
        }
    }

    fn create_topic(
        &mut self,
        name: &String,
        replicas: &[Vec<NodeId>],
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<MetaResponse, MetaError> {
        if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
            return Err(invalid("topic name empty or too long"));
        }
        if retention_ms == Some(0) {
            return Err(invalid("retention.ms must be at least 1"));
        }
        if retention_bytes == Some(0) {
            return Err(invalid("retention.bytes must be at least 1"));
        }
        if replicas.is_empty() || replicas.len() > PARTITIONS_PER_TOPIC_MAX as usize {
            return Err(invalid("partition count out of range"));
        }
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists { name: name.clone() });
        }
        for set in replicas {
            if set.is_empty() {
                return Err(invalid("empty replica set"));
            }
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != set.len() {
                return Err(invalid("a replica set names a node twice"));
            }
            if let Some(n) = set.iter().find(|n| !self.nodes.contains_key(n)) {
                return Err(MetaError::UnknownNode { node_id: *n });
            }
        }
        // Group 0 is the metadata group.
        let first_group = self.next_group.max(METADATA_GROUP + 1);
        let partitions = replicas
            .iter()
            .enumerate()
            .map(|(i, set)| PartitionInfo {
                group: first_group + i as u64,
                replicas: set.clone(),
            })
            .collect();
        self.next_group = first_group + replicas.len() as u64;
        self.topics.insert(
            name.clone(),
            TopicInfo {
                partitions,
                retention_ms,
                retention_bytes,
            },
        );
        let counts = self.partition_counts();
        self.groups.topic_changed(name, &counts);
        Ok(MetaResponse::TopicCreated { first_group })
    }

    /// Every topic's partition count.
    pub fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.topics
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// How many partition replicas `node_id` hosts.
    pub fn replicas_on(&self, node_id: NodeId) -> usize {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.replicas.contains(&node_id))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_nodes(ids: &[NodeId]) -> MetaState {
        let mut s = MetaState::default();
        for id in ids {
            let r = s.apply(&MetaCommand::RegisterNode {
                node_id: *id,
                addr: format!("127.0.0.1:{}", 7000 + id),
                client_addr: format!("127.0.0.1:{}", 8000 + id),
            });
            assert_eq!(r, MetaResponse::Done);
        }
        s
    }

    #[test]
    fn a_registration_without_client_addr_keeps_the_known_one() {
        let mut s = with_nodes(&[1]);
        s.apply(&MetaCommand::RegisterNode {
            node_id: 1,
            addr: "10.0.0.1:7071".into(),
            client_addr: String::new(),
        });
        assert_eq!(s.nodes[&1].addr, "10.0.0.1:7071");
        assert_eq!(s.nodes[&1].client_addr, "127.0.0.1:8001");
    }

    #[test]
    fn create_topic_hands_out_fresh_group_ids() {
        let mut s = with_nodes(&[1, 2, 3]);
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
            retention_ms: None,
            retention_bytes: None,
        });
        assert_eq!(r, MetaResponse::TopicCreated { first_group: 1 });
        s.apply(&MetaCommand::DeleteTopic { name: "a".into() });
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "a".into(),
            replicas: vec![vec![1]],
            retention_ms: None,
            retention_bytes: None,
        });
        assert_eq!(r, MetaResponse::TopicCreated { first_group: 3 });
    }

    #[test]
    fn encrypted_at_rest_wraps_a_creation_only() {
        let mut s = with_nodes(&[1]);
        let create = |name: &str| MetaCommand::CreateTopic {
            name: name.into(),
            replicas: vec![vec![1]],
            retention_ms: None,
            retention_bytes: None,
        };
        let r = s.apply(&MetaCommand::EncryptedAtRest(Box::new(create("e"))));
        assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
        assert!(s.encrypted_topics.contains("e") && s.topics.contains_key("e"));
        s.apply(&create("plain"));
        assert!(!s.encrypted_topics.contains("plain"));
        // A refused creation (the topic exists) marks nothing.
        let r = s.apply(&MetaCommand::EncryptedAtRest(Box::new(create("plain"))));
        assert!(matches!(r, MetaResponse::Refused(_)), "{r:?}");
        assert!(!s.encrypted_topics.contains("plain"));
        let r = s.apply(&MetaCommand::EncryptedAtRest(Box::new(
            MetaCommand::DeleteTopic {
                name: "plain".into(),
            },
        )));
        assert!(matches!(r, MetaResponse::Refused(_)), "{r:?}");
        s.apply(&MetaCommand::DeleteTopic { name: "e".into() });
        assert!(s.encrypted_topics.is_empty());
    }

    #[test]
    fn create_topic_stores_retention_and_refuses_zero() {
        let mut s = with_nodes(&[1]);
        let before = s.clone();
        for (ms, bytes) in [(Some(0), None), (None, Some(0)), (Some(0), Some(0))] {
            let r = s.apply(&MetaCommand::CreateTopic {
                name: "r".into(),
                replicas: vec![vec![1]],
                retention_ms: ms,
                retention_bytes: bytes,
            });
            assert!(
                matches!(&r, MetaResponse::Refused(MetaError::Invalid { reason }) if reason.contains("retention")),
                "{r:?}"
            );
        }
        assert_eq!(s, before);
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "r".into(),
            replicas: vec![vec![1]],
            retention_ms: Some(60_000),
            retention_bytes: Some(1 << 20),
        });
        assert!(matches!(r, MetaResponse::TopicCreated { .. }), "{r:?}");
        let t = &s.topics["r"];
        assert_eq!(
            (t.retention_ms, t.retention_bytes),
            (Some(60_000), Some(1 << 20))
        );
        // The state (a snapshot) round-trips with it.
        let bytes = qiss::to_vec(&s).expect("encode");
        let back: MetaState = qiss::from_slice(&bytes).expect("decode");
        assert_eq!(back, s);
    }

    #[test]
    fn refusals_leave_the_state_alone() {
        let mut s = with_nodes(&[1, 2]);
        let before = s.clone();
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1, 9]],
            retention_ms: None,
            retention_bytes: None,
        });
        assert_eq!(
            r,
            MetaResponse::Refused(MetaError::UnknownNode { node_id: 9 })
        );
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1, 1]],
            retention_ms: None,
            retention_bytes: None,
        });
        assert!(matches!(
            r,
            MetaResponse::Refused(MetaError::Invalid { .. })
        ));
        assert_eq!(s, before);
        s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1, 2]],
            retention_ms: None,
            retention_bytes: None,
        });
        let r = s.apply(&MetaCommand::RemoveNode { node_id: 2 });
        assert_eq!(
            r,
            MetaResponse::Refused(MetaError::NodeInUse {
                node_id: 2,
                replicas: 1
            })
        );
        let r = s.apply(&MetaCommand::CreateTopic {
            name: "t".into(),
            replicas: vec![vec![1]],
            retention_ms: None,
            retention_bytes: None,
        });
        assert_eq!(
            r,
            MetaResponse::Refused(MetaError::TopicExists { name: "t".into() })
        );
    }
}
