//! `describe_topic`: one topic's partitions (as `metadata` reports them) and its
//! configuration: the retention limits it was created with (`retention.ms`,
//! `retention.bytes`, decimal), only those that are set, and `encryption.at-rest=true`
//! for a topic encrypted at rest.

use neo_protocol::api::{DescribeTopicRequest, TopicDescription};
use neo_protocol::{ErrorCode, RpcError};

use crate::meta::TopicInfo;

use super::create_topic::{ENCRYPTION_AT_REST, RETENTION_BYTES, RETENTION_MS};
use super::metadata::partitions;
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;

pub(crate) fn describe_topic(
    b: &Broker,
    ctx: &SecurityContext,
    req: DescribeTopicRequest,
) -> Result<TopicDescription, RpcError> {
    b.authorize(ctx, ResourceType::Topic, &req.name, Operation::Describe)?;
    let state = b.state();
    let t = state.topics.get(&req.name).ok_or_else(|| {
        RpcError::new(
            ErrorCode::UnknownTopic,
            format!("unknown topic {:?}", req.name),
        )
    })?;
    Ok(TopicDescription {
        name: req.name.clone(),
        partitions: partitions(b, t),
        configs: topic_configs(t, state.encrypted_topics.contains(&req.name)),
    })
}

/// The configs a topic was created with, in a fixed order, as `(key, decimal value)`.
pub(crate) fn topic_configs(t: &TopicInfo, encrypted_at_rest: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(ms) = t.retention_ms {
        out.push((RETENTION_MS.to_string(), ms.to_string()));
    }
    if let Some(bytes) = t.retention_bytes {
        out.push((RETENTION_BYTES.to_string(), bytes.to_string()));
    }
    if encrypted_at_rest {
        out.push((ENCRYPTION_AT_REST.to_string(), "true".to_string()));
    }
    out
}
