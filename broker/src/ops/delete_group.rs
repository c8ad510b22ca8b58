//! `delete_group`: deletes a group without members (at the coordinator). Its committed
//! offsets are dropped by each partition's leader shortly after (the group's
//! incarnation is gone from the metadata, so a re-created group never sees them).
//!
//! Errors: `UnknownGroup`, `GroupNotEmpty`, `NotCoordinator`.

use neo_protocol::RpcError;
use neo_protocol::api::{DeleteGroupRequest, DeleteGroupResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::coordinator;
use crate::groups::state::GroupCommand;

pub(crate) async fn delete_group(
    b: &Broker,
    ctx: &SecurityContext,
    req: DeleteGroupRequest,
) -> Result<DeleteGroupResponse, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Delete)?;
    coordinator::ensure(b).await?;
    coordinator::propose(b, GroupCommand::Delete { group: req.group }).await?;
    Ok(DeleteGroupResponse {})
}
