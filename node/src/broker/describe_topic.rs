//! `describe_topic`: one topic's partitions (as `metadata` reports them) and its
//! configuration (none yet: topic configs are not stored in this release).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use neo_protocol::api::{DescribeTopicRequest, TopicDescription};
use neo_protocol::{ErrorCode, RequestContext, RpcError};

use super::metadata::partitions;
use crate::node::Shared;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    _ctx: RequestContext,
    req: DescribeTopicRequest,
) -> Result<TopicDescription, RpcError> {
    shared
        .metrics
        .admin_requests
        .fetch_add(1, Ordering::Relaxed);
    let state = shared.state();
    let t = state.topics.get(&req.name).ok_or_else(|| {
        RpcError::new(
            ErrorCode::UnknownTopic,
            format!("unknown topic {:?}", req.name),
        )
    })?;
    Ok(TopicDescription {
        name: req.name.clone(),
        partitions: partitions(&shared, t),
        configs: Vec::new(),
    })
}
