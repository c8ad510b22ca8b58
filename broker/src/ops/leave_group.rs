//! `leave_group`: a member leaves (at the coordinator); its partitions are freed and
//! handed to their new owners in the same metadata entry. A static member (one with an
//! instance id) is not removed: it keeps its partitions until its session times out,
//! so that a restart that joins again with the same instance id moves nothing.
//!
//! Leaving twice is not an error (the second finds no member and answers at once).

use neo_protocol::RpcError;
use neo_protocol::api::{LeaveGroupRequest, LeaveGroupResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::coordinator::{self, now_ms};
use crate::groups::state::GroupCommand;

pub(crate) async fn leave_group(
    b: &Broker,
    ctx: &SecurityContext,
    req: LeaveGroupRequest,
) -> Result<LeaveGroupResponse, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Consume)?;
    let (state, _) = coordinator::ensure(b).await?;
    let Some(m) = state
        .groups
        .groups
        .get(&req.group)
        .and_then(|g| g.members.get(&req.member_id))
    else {
        return Ok(LeaveGroupResponse {});
    };
    if m.instance_id.is_some() {
        // Static: its session runs out unless the instance comes back.
        return Ok(LeaveGroupResponse {});
    }
    coordinator::propose(
        b,
        GroupCommand::Remove {
            group: req.group.clone(),
            member_id: req.member_id.clone(),
            now_ms: now_ms(),
        },
    )
    .await?;
    b.coordinator.forget(&req.group, &req.member_id);
    b.coordinator.rebalanced(&req.group);
    Ok(LeaveGroupResponse {})
}
