//! `heartbeat_group`: keeps a member alive and tells it its assignment (at the
//! coordinator).
//!
//! ```text
//! ensure coordinator ─► member known, epoch its current or previous one? (FencedMember,
//!   an epoch newer than the view's only once the view had up to 2 s to learn it)
//!   ├─ new subscription ─► Subscribe (metadata proposal: new targets)
//!   ├─ it gave up revoked partitions ─► Reconcile (freed partitions go to their
//!   │     targets in the same entry)
//!   └─ nothing new to tell (it owns exactly its assignment, same epoch): hold the
//!        answer until the metadata view changes for it, `wait_ms` passes, leadership
//!        is lost or the node shuts down
//! ```
//! A held heartbeat counts as heard from when it arrives and when it is answered.

use std::time::Duration;

use neo_protocol::api::{GroupHeartbeatRequest, GroupHeartbeatResponse};
use neo_protocol::{ErrorCode, RpcError};
use neo_raft::Role;
use neo_security::{Operation, ResourceType, SecurityContext};

use super::join_group::heartbeat_interval_ms;
use crate::facade::Broker;
use crate::groups::coordinator::{self, not_coordinator};
use crate::groups::state::{GroupCommand, Member};
use crate::groups::{from_wire, to_wire, view_knowing};
use crate::meta::MetaState;

/// Longest a heartbeat is held, in milliseconds.
pub const HEARTBEAT_WAIT_MS_MAX: u32 = 5_000;

fn fenced(group: &str, member_id: &str, why: &str) -> RpcError {
    RpcError::new(
        ErrorCode::FencedMember,
        format!("member {member_id:?} of group {group:?} is fenced: {why}; join again"),
    )
}

/// The member as `state` knows it, or `FencedMember`.
fn member<'a>(state: &'a MetaState, req: &GroupHeartbeatRequest) -> Result<&'a Member, RpcError> {
    let m = state
        .groups
        .groups
        .get(&req.group)
        .and_then(|g| g.members.get(&req.member_id))
        .ok_or_else(|| {
            fenced(
                &req.group,
                &req.member_id,
                "unknown member (left or timed out)",
            )
        })?;
    Ok(m)
}

pub(crate) async fn heartbeat_group(
    b: &Broker,
    ctx: &SecurityContext,
    req: GroupHeartbeatRequest,
) -> Result<GroupHeartbeatResponse, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Consume)?;
    for t in req.topics.iter().flatten() {
        b.authorize(ctx, ResourceType::Topic, t, Operation::Consume)?;
    }
    let (mut state, term) = coordinator::ensure(b).await?;
    if member(&state, &req).is_ok_and(|m| req.member_epoch > m.epoch) {
        // Epochs come only from the metadata group: a member ahead of this view may have
        // heard of a change this replica has not applied yet. Give the view a moment
        // before fencing (an epoch the group never gave is still fenced after it).
        state = view_knowing(b, &req.group, Some((&req.member_id, req.member_epoch))).await;
    }
    let m = member(&state, &req)?;
    if !m.accepts_epoch(req.member_epoch) {
        return Err(fenced(
            &req.group,
            &req.member_id,
            &format!("epoch {} is stale (current {})", req.member_epoch, m.epoch),
        ));
    }
    b.coordinator.touch(&req.group, &req.member_id);
    if let Some(topics) = &req.topics {
        let topics = topics.iter().cloned().collect();
        if m.topics != topics {
            coordinator::propose(
                b,
                GroupCommand::Subscribe {
                    group: req.group.clone(),
                    member_id: req.member_id.clone(),
                    topics,
                },
            )
            .await?;
            b.coordinator.rebalanced(&req.group);
        }
    }
    let owned = from_wire(&req.owned);
    let wait = Duration::from_millis(u64::from(
        req.wait_ms
            .min(HEARTBEAT_WAIT_MS_MAX)
            .min(m.session_timeout_ms / 2),
    ));
    let deadline = tokio::time::Instant::now() + wait;
    let mut view = b.meta_view();
    let mut shutdown = b.shutdown.clone();
    loop {
        let state = view.borrow_and_update().clone();
        let m = member(&state, &req)?;
        // Revoked partitions it no longer owns: free them.
        let released = m
            .assigned
            .iter()
            .any(|tp| !m.target.contains(tp) && !owned.contains(tp));
        if released {
            coordinator::propose(
                b,
                GroupCommand::Reconcile {
                    group: req.group.clone(),
                    member_id: req.member_id.clone(),
                    owned: owned.clone(),
                },
            )
            .await?;
            continue;
        }
        let assignment = m.assignment();
        let news = assignment != owned || m.epoch != req.member_epoch;
        if news || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            b.coordinator.touch(&req.group, &req.member_id);
            return Ok(GroupHeartbeatResponse {
                member_epoch: m.epoch,
                assignment: to_wire(&assignment),
                heartbeat_interval_ms: heartbeat_interval_ms(m.session_timeout_ms),
            });
        }
        let (role, now_term, leader) = b.meta_group().leadership();
        if role != Role::Leader || now_term != term {
            return Err(not_coordinator(b, leader));
        }
        if b.meta_group().quorum_lost() {
            return Err(not_coordinator(b, None));
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return Err(not_coordinator(b, None)) },
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
            // Leadership is checked at least every half second while held.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
