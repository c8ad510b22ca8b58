//! `delete_topic`: on the metadata leader (else `NotLeader` with the leader's client
//! address), a committed `DeleteTopic` command. Every replica then stops its partition
//! groups and deletes their files (see `reconcile`); the answer does not wait for that.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use neo_protocol::api::{DeleteTopicRequest, DeleteTopicResponse};
use neo_protocol::{ErrorCode, RequestContext, RpcError};
use neo_raft::Role;
use neo_raft::meta_sm::{MetaCommand, MetaError, MetaResponse};

use super::{not_leader, raft_error};
use crate::node::Shared;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    _ctx: RequestContext,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, RpcError> {
    shared
        .metrics
        .admin_requests
        .fetch_add(1, Ordering::Relaxed);
    let m = shared.meta.metrics();
    if m.role != Role::Leader {
        return Err(not_leader(&shared, m.leader, "the metadata group"));
    }
    let r = shared
        .meta
        .propose_meta(MetaCommand::DeleteTopic {
            name: req.name.clone(),
        })
        .await
        .map_err(|e| raft_error(&shared, e, "the metadata group"))?;
    match r {
        MetaResponse::Done | MetaResponse::TopicCreated { .. } => Ok(DeleteTopicResponse {}),
        MetaResponse::Refused(MetaError::UnknownTopic { name }) => Err(RpcError::new(
            ErrorCode::UnknownTopic,
            format!("unknown topic {name:?}"),
        )),
        MetaResponse::Refused(e) => Err(RpcError::invalid_argument(e.to_string())),
    }
}
