//! The broker's operations, one file per method, and the one place where internal
//! errors become the wire's typed errors ([`raft_error`], [`broker_error`]).
//!
//! | method | file | where it runs |
//! |---|---|---|
//! | `produce` | `produce.rs` | partition leader (else `NotLeader` + hint) |
//! | `fetch` | `fetch.rs` | partition leader (else `NotLeader` + hint) |
//! | `metadata` | `metadata.rs` | any node (its applied metadata) |
//! | `create_topic` | `create_topic.rs` | metadata leader (else `NotLeader` + hint) |
//! | `delete_topic` | `delete_topic.rs` | metadata leader (else `NotLeader` + hint) |
//! | `list_topics` | `list_topics.rs` | any node (linearizable on the leader) |
//! | `describe_topic` | `describe_topic.rs` | any node (its applied metadata) |
//! | `find_coordinator` | `find_coordinator.rs` | any node (names the metadata leader) |
//! | `join_group` | `join_group.rs` | group coordinator (else `NotCoordinator` + hint) |
//! | `heartbeat_group` | `heartbeat_group.rs` | group coordinator (held until news) |
//! | `leave_group` | `leave_group.rs` | group coordinator |
//! | `delete_group` | `delete_group.rs` | group coordinator |
//! | `list_groups` | `list_groups.rs` | any node (its applied metadata) |
//! | `describe_group` | `describe_group.rs` | any node (its applied metadata) |
//! | `commit_offsets` | `commit_offsets.rs` | partition leader (partition Raft group) |
//! | `fetch_offsets` | `fetch_offsets.rs` | partition leader (a member's takeover fences) |
//! | `list_offsets` | `list_offsets.rs` | partition leader |
//! | `create_queue`, `delete_queue`, `list_queues` | `queues/admin.rs` | metadata leader (list: any node) |
//! | `describe_queue`, `purge_queue` | `queues/admin.rs` | any node: the partitions it leads |
//! | `queue_receive` | `queues/receive.rs` | partition leaders (partition Raft group) |
//! | `queue_ack`, `queue_nack`, `queue_extend`, `queue_term` | `queues/settle.rs` | the receipts' partition leaders |

pub(crate) mod commit_offsets;
pub(crate) mod create_topic;
pub(crate) mod delete_group;
pub(crate) mod delete_topic;
pub(crate) mod describe_group;
pub(crate) mod describe_topic;
pub(crate) mod fetch;
pub(crate) mod fetch_offsets;
pub(crate) mod find_coordinator;
pub(crate) mod heartbeat_group;
pub(crate) mod join_group;
pub(crate) mod leave_group;
pub(crate) mod list_groups;
pub(crate) mod list_offsets;
pub(crate) mod list_topics;
pub(crate) mod metadata;
pub(crate) mod produce;
pub(crate) mod queues;
pub(crate) mod security;

use neo_protocol::{ErrorCode, RpcError};
use neo_raft::{NodeId, RaftGroup, Role};

use crate::error::Error;
use crate::facade::{Broker, Lookup};
use crate::groups::state::GroupError;
use crate::meta::MetaError;

/// `NotLeader` pointing at `leader`'s advertised client address (no hint if unknown).
pub(crate) fn not_leader(b: &Broker, leader: Option<NodeId>, what: &str) -> RpcError {
    let addr = leader.and_then(|l| b.client_addr_of(l));
    let mut e = RpcError::not_leader(addr.as_deref());
    e.message = match (leader, &addr) {
        (Some(l), Some(a)) => format!("not the leader of {what}; node {l} at {a} is"),
        _ => format!("not the leader of {what}; no leader known yet, retry shortly"),
    };
    e
}

/// `Ok` when this replica leads `group` and still hears from a quorum; else
/// `NotLeader`: with the leader's address when another replica leads, with none when
/// this one leads but is cut off from its quorum (another leader is being elected, and
/// what this one would answer may already be stale).
pub(crate) fn serving_leader(b: &Broker, group: &RaftGroup, what: &str) -> Result<(), RpcError> {
    let m = group.metrics();
    if m.role != Role::Leader {
        return Err(not_leader(b, m.leader, what));
    }
    if m.quorum_lost {
        return Err(not_leader(b, None, what));
    }
    Ok(())
}

/// This node's replica of `topic`/`partition`, or the typed error: `UnknownTopic`,
/// `UnknownPartition`, or `NotLeader` pointing at the preferred leader (the first
/// replica, which redirects if it does not lead) when no replica is hosted here.
pub(crate) fn hosted_replica(
    b: &Broker,
    topic: &str,
    partition: u32,
    what: &str,
) -> Result<std::sync::Arc<crate::partition::Partition>, RpcError> {
    let p = b
        .lookup(topic, partition)
        .map_err(|e| lookup_error(e, topic, partition))?;
    p.replica
        .ok_or_else(|| not_leader(b, p.info.replicas.first().copied(), what))
}

/// The wire error of a failed topic/partition lookup.
pub(crate) fn lookup_error(e: Lookup, topic: &str, partition: u32) -> RpcError {
    match e {
        Lookup::UnknownTopic => unknown_topic(topic),
        Lookup::UnknownPartition { count } => RpcError::new(
            ErrorCode::UnknownPartition,
            format!("topic {topic:?} has {count} partitions; partition {partition} does not exist"),
        ),
    }
}

/// `UnknownTopic` naming `topic`.
pub(crate) fn unknown_topic(topic: &str) -> RpcError {
    RpcError::new(ErrorCode::UnknownTopic, format!("unknown topic {topic:?}"))
}

/// `NotLeader` without a hint (the client refreshes its metadata), with `message`.
pub(crate) fn no_leader_known(message: String) -> RpcError {
    let mut n = RpcError::not_leader(None);
    n.message = message;
    n
}

/// The wire error of a failed Raft operation on a group about `what`.
pub(crate) fn raft_error(b: &Broker, e: neo_raft::Error, what: &str) -> RpcError {
    use neo_raft::Error as E;
    match e {
        E::NotLeader { leader, .. } => not_leader(b, leader, what),
        // Refused before it was written: nothing to wait for, the client looks for the
        // new leader.
        E::QuorumLost { written: false, .. } => no_leader_known(format!("{what}: {e}")),
        // In this leader's log: the outcome is unknown, as after a produce timeout.
        E::QuorumLost { written: true, .. } => {
            RpcError::new(ErrorCode::NotEnoughReplicas, format!("{what}: {e}"))
        }
        E::Busy { .. } => RpcError::new(ErrorCode::Busy, format!("{what}: {e}")),
        E::BatchTooLarge { .. } | E::BadBatch { .. } | E::ControlBatch => {
            RpcError::new(ErrorCode::InvalidRecordBatch, e.to_string())
        }
        // The replica stopped (shutdown, topic deleted, storage failure): another
        // replica takes over, so the client should look for the new leader.
        E::Fatal { group, .. } if group_storage_full(b, group) => RpcError::new(
            ErrorCode::StorageFull,
            format!("{what}: this replica's log stopped on a full disk: {e}"),
        ),
        E::Fatal { .. } | E::UnknownGroup { .. } => {
            if *b.shutdown.borrow() {
                RpcError::new(
                    ErrorCode::ShuttingDown,
                    format!("{what}: node shutting down"),
                )
            } else {
                no_leader_known(format!("{what}: replica stopped: {e}"))
            }
        }
        other => RpcError::internal(format!("{what}: {other}")),
    }
}

/// Whether this node's replica of `group` stopped because its disk was full.
fn group_storage_full(b: &Broker, group: neo_raft::GroupId) -> bool {
    b.partition(group).is_some_and(|p| p.group().storage_full())
}

/// The wire error of a failed broker-internal operation about `what`.
pub(crate) fn broker_error(b: &Broker, e: Error, what: &str) -> RpcError {
    match e {
        Error::Raft(e) => raft_error(b, e, what),
        Error::DuplicateSequence { .. } => {
            RpcError::new(ErrorCode::DuplicateSequence, format!("{what}: {e}"))
        }
        Error::Codec { .. } | Error::Internal(_) | Error::Forward(_) => {
            RpcError::internal(format!("{what}: {e}"))
        }
    }
}

/// The wire error of a refused group command.
pub(crate) fn group_error(e: GroupError) -> RpcError {
    let code = match &e {
        GroupError::UnknownGroup { .. } => ErrorCode::UnknownGroup,
        GroupError::UnknownMember { .. } => ErrorCode::FencedMember,
        GroupError::NotEmpty { .. } => ErrorCode::GroupNotEmpty,
        GroupError::Full { .. } | GroupError::Invalid { .. } => ErrorCode::InvalidArgument,
    };
    RpcError::new(code, e.to_string())
}

/// The wire error of a refused metadata command.
pub(crate) fn meta_error(e: MetaError) -> RpcError {
    match e {
        MetaError::Group(g) => group_error(g),
        MetaError::TopicExists { .. } => {
            RpcError::new(ErrorCode::TopicAlreadyExists, e.to_string())
        }
        MetaError::UnknownTopic { .. } => RpcError::new(ErrorCode::UnknownTopic, e.to_string()),
        other => RpcError::invalid_argument(other.to_string()),
    }
}
