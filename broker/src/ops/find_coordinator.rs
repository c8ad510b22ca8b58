//! `find_coordinator`: the node that coordinates a group (the metadata leader), from
//! any node. No leader known (an election): `NotCoordinator` without a hint, retriable.

use neo_protocol::RpcError;
use neo_protocol::api::{FindCoordinatorRequest, FindCoordinatorResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::coordinator::not_coordinator;
use crate::groups::state::check_name;

pub(crate) fn find_coordinator(
    b: &Broker,
    ctx: &SecurityContext,
    req: FindCoordinatorRequest,
) -> Result<FindCoordinatorResponse, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Describe)?;
    check_name("group name", &req.group, false).map_err(super::group_error)?;
    let leader = b.controller();
    match leader.and_then(|l| b.client_addr_of(l).map(|a| (l, a))) {
        Some((node_id, address)) => Ok(FindCoordinatorResponse { node_id, address }),
        None => Err(not_coordinator(b, leader)),
    }
}
