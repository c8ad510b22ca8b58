//! `join_group`: a member joins a group at its coordinator (the metadata leader). The
//! membership change is a metadata proposal; the answer is the member's id, epoch and
//! the partitions it may own now (free ones of its target; the rest follow once their
//! owners give them up).
//!
//! Errors: `NotCoordinator` (+ hint), `UnknownTopic` (a subscribed topic does not
//! exist), `InvalidArgument` (names, limits, session timeout out of range, group full).

use std::collections::BTreeSet;

use neo_protocol::RpcError;
use neo_protocol::api::{JoinGroupRequest, JoinGroupResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;
use crate::groups::coordinator::{self, now_ms};
use crate::groups::state::{GroupCommand, check_name, check_topics};
use crate::groups::to_wire;

/// Session timeout of a member that asks for none (0), in milliseconds.
pub const SESSION_TIMEOUT_MS_DEFAULT: u32 = 10_000;
/// Longest a heartbeat interval gets, in milliseconds.
const HEARTBEAT_INTERVAL_MS_MAX: u32 = 3_000;

/// The heartbeat interval for a session timeout: a third of it, at most 3 s.
pub(crate) fn heartbeat_interval_ms(session_timeout_ms: u32) -> u32 {
    (session_timeout_ms / 3).clamp(100, HEARTBEAT_INTERVAL_MS_MAX)
}

pub(crate) async fn join_group(
    b: &Broker,
    ctx: &SecurityContext,
    req: JoinGroupRequest,
) -> Result<JoinGroupResponse, RpcError> {
    let topics: BTreeSet<String> = req.topics.iter().cloned().collect();
    check_name("group name", &req.group, false).map_err(super::group_error)?;
    check_topics(&topics).map_err(super::group_error)?;
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Consume)?;
    for t in &topics {
        b.authorize(ctx, ResourceType::Topic, t, Operation::Consume)?;
    }
    let (state, term) = coordinator::ensure(b).await?;
    if let Some(t) = topics.iter().find(|t| !state.topics.contains_key(*t)) {
        return Err(super::unknown_topic(t));
    }
    let session_timeout_ms = match req.session_timeout_ms {
        0 => SESSION_TIMEOUT_MS_DEFAULT,
        n => n,
    };
    let member_id = b.coordinator.member_id(b.node_id(), term);
    let host = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
    coordinator::propose(
        b,
        GroupCommand::Join {
            group: req.group.clone(),
            member_id: member_id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            host,
            topics,
            session_timeout_ms,
            now_ms: now_ms(),
        },
    )
    .await?;
    b.coordinator.touch(&req.group, &member_id);
    b.coordinator.rebalanced(&req.group);
    let state = b.state();
    let m = state
        .groups
        .groups
        .get(&req.group)
        .and_then(|g| g.members.get(&member_id))
        .ok_or_else(|| RpcError::internal("the joined member is not in the applied state"))?;
    Ok(JoinGroupResponse {
        member_id,
        member_epoch: m.epoch,
        assignment: to_wire(&m.assignment()),
        heartbeat_interval_ms: heartbeat_interval_ms(m.session_timeout_ms),
        session_timeout_ms: m.session_timeout_ms,
    })
}
