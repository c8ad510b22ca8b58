//! `delete_topic`: on the metadata leader (else `NotLeader` with the leader's client
//! address), a committed `DeleteTopic` command. Every replica then stops its partition
//! groups and deletes their files (see `reconcile`); the answer does not wait for that.

use crate::meta::{MetaCommand, MetaError, MetaResponse};
use neo_protocol::api::{DeleteTopicRequest, DeleteTopicResponse};
use neo_protocol::{ErrorCode, RpcError};
use neo_raft::Role;

use super::{broker_error, not_leader};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;

pub(crate) async fn delete_topic(
    b: &Broker,
    ctx: &SecurityContext,
    req: DeleteTopicRequest,
) -> Result<DeleteTopicResponse, RpcError> {
    b.authorize(ctx, ResourceType::Topic, &req.name, Operation::Delete)?;
    let m = b.meta_group().metrics();
    if m.role != Role::Leader {
        return Err(not_leader(b, m.leader, "the metadata group"));
    }
    let r = crate::meta::propose(
        b.meta_group(),
        &MetaCommand::DeleteTopic {
            name: req.name.clone(),
        },
    )
    .await
    .map_err(|e| broker_error(b, e, "the metadata group"))?;
    match r {
        MetaResponse::Done | MetaResponse::TopicCreated { .. } => Ok(DeleteTopicResponse {}),
        MetaResponse::Refused(MetaError::UnknownTopic { name }) => Err(RpcError::new(
            ErrorCode::UnknownTopic,
            format!("unknown topic {name:?}"),
        )),
        MetaResponse::Refused(e) => Err(RpcError::invalid_argument(e.to_string())),
    }
}
