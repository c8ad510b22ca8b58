//! `list_groups`: every group with its state and member count, from this node's
//! applied metadata (any node answers).

use neo_protocol::RpcError;
use neo_protocol::api::{GroupListing, ListGroupsRequest, ListGroupsResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::state::state_name;

pub(crate) fn list_groups(
    b: &Broker,
    ctx: &SecurityContext,
    _req: ListGroupsRequest,
) -> Result<ListGroupsResponse, RpcError> {
    let state = b.state();
    let allowed = b.allowed_for(ctx);
    Ok(ListGroupsResponse {
        groups: state
            .groups
            .groups
            .iter()
            .filter(|(name, _)| allowed(ResourceType::Group, name, Operation::Describe))
            .map(|(name, g)| GroupListing {
                name: name.clone(),
                state: state_name(g).to_string(),
                members: g.members.len() as u32,
            })
            .collect(),
    })
}
