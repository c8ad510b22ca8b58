//! `metadata`: brokers (with their advertised client addresses), the controller (the
//! metadata group's leader) and the asked topics' partitions, from this node's applied
//! metadata state (possibly a little stale: clients refresh on `NotLeader`).
//!
//! A partition's leader is what this node's replica knows (with its term as the leader
//! epoch). For a partition this node does not replicate, it cannot know: the preferred
//! leader (first replica) is given, with epoch 0, and that replica redirects with
//! `NotLeader` if it does not lead. `in_sync` (the replicas holding every committed
//! entry, in replica order) is known only to the partition's leader: other nodes answer
//! it empty.
//! An asked-for topic that does not exist fails the whole request with `UnknownTopic`.

use crate::meta::TopicInfo;
use neo_protocol::RpcError;
use neo_protocol::api::{
    BrokerInfo, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata,
};

use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;

/// The cluster id in metadata answers (one cluster per metadata group).
pub const CLUSTER_ID: &str = "neo";

pub(crate) fn metadata(
    b: &Broker,
    ctx: &SecurityContext,
    req: MetadataRequest,
) -> Result<MetadataResponse, RpcError> {
    let state = b.state();
    let brokers = state
        .nodes
        .iter()
        .map(|(id, n)| BrokerInfo {
            node_id: *id,
            address: b
                .client_addr_of(*id)
                .unwrap_or_else(|| n.client_addr.clone()),
            rack: None,
        })
        .collect();
    let mut topics = Vec::new();
    // A topic's metadata is for whoever may describe, produce to or consume it (a
    // queue's: the queue's grants count too).
    let allowed = b.allowed_for(ctx);
    let visible = |name: &str| {
        let queue = state.queues.contains_key(name);
        [Operation::Describe, Operation::Produce, Operation::Consume]
            .into_iter()
            .any(|op| {
                allowed(ResourceType::Topic, name, op)
                    || (queue && allowed(ResourceType::Queue, name, op))
            })
    };
    if req.topics.is_empty() {
        for (name, t) in state.topics.iter().filter(|(name, _)| visible(name)) {
            topics.push(topic_metadata(b, name, t));
        }
    } else {
        for name in &req.topics {
            if !visible(name) {
                b.authorize(ctx, ResourceType::Topic, name, Operation::Describe)?;
            }
            let t = state
                .topics
                .get(name)
                .ok_or_else(|| super::unknown_topic(name))?;
            topics.push(topic_metadata(b, name, t));
        }
    }
    Ok(MetadataResponse {
        cluster_id: CLUSTER_ID.to_string(),
        brokers,
        controller_id: b.controller(),
        topics,
    })
}

pub(crate) fn topic_metadata(b: &Broker, name: &str, t: &TopicInfo) -> TopicMetadata {
    TopicMetadata {
        name: name.to_string(),
        partitions: partitions(b, t),
    }
}

pub(crate) fn partitions(b: &Broker, t: &TopicInfo) -> Vec<PartitionMetadata> {
    t.partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (leader, epoch, in_sync) = match b.partition(p.group) {
                Some(replica) => {
                    let m = replica.group().metrics();
                    let in_sync = p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| m.in_sync.contains(r))
                        .collect();
                    (m.serving_leader(), m.term, in_sync)
                }
                None => (p.replicas.first().copied(), 0, Vec::new()),
            };
            PartitionMetadata {
                partition: i as u32,
                leader,
                replicas: p.replicas.clone(),
                in_sync,
                leader_epoch: epoch,
            }
        })
        .collect()
}
