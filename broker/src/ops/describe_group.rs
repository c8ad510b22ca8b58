//! `describe_group`: one group's membership from this node's applied metadata (any
//! node answers; the coordinator's is the most current). Committed offsets are read
//! from the partition leaders (`fetch_offsets` without a member).
//!
//! Errors: `UnknownGroup`.

use std::collections::BTreeSet;

use neo_protocol::api::{DescribeGroupRequest, GroupDescription, MemberDescription};
use neo_protocol::{ErrorCode, RpcError};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::state::state_name;
use crate::groups::to_wire;

pub(crate) async fn describe_group(
    b: &Broker,
    ctx: &SecurityContext,
    req: DescribeGroupRequest,
) -> Result<GroupDescription, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Describe)?;
    let mut state = b.state();
    if !state.groups.groups.contains_key(&req.group) {
        // Not "unknown" before this replica has applied its leader's commits.
        state = crate::groups::view_caught_up(b).await;
    }
    let g = state
        .groups
        .groups
        .get(&req.group)
        .ok_or_else(|| unknown_group(&req.group))?;
    let mut topics: BTreeSet<String> = g.topics.clone();
    let members = g
        .members
        .iter()
        .map(|(id, m)| {
            topics.extend(m.topics.iter().cloned());
            MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                member_epoch: m.epoch,
                topics: m.topics.iter().cloned().collect(),
                assignment: to_wire(&m.assigned),
                pending: to_wire(&m.pending()),
            }
        })
        .collect();
    // Topics with committed offsets on partitions hosted here (admin commits to a topic
    // no member subscribed to).
    for (name, t) in &state.topics {
        let has = t.partitions.iter().any(|p| {
            b.partition(p.group).is_some_and(|r| {
                r.with_offsets(|o| o.committed(&req.group, g.incarnation).is_some())
            })
        });
        if has {
            topics.insert(name.clone());
        }
    }
    Ok(GroupDescription {
        name: req.group,
        state: state_name(g).to_string(),
        group_epoch: g.epoch,
        members,
        topics: topics.into_iter().collect(),
    })
}

/// `UnknownGroup` naming `group`.
pub(crate) fn unknown_group(group: &str) -> RpcError {
    RpcError::new(ErrorCode::UnknownGroup, format!("unknown group {group:?}"))
}
