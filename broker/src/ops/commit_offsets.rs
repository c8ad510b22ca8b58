//! `commit_offsets`: commits a group's offset of one partition, at the partition's
//! leader, through the partition's Raft group (answered after a quorum has it on disk).
//!
//! ```text
//! names and metadata within limits? (InvalidArgument)
//! ─► this node leads the partition? (NotLeader + hint)
//! ─► the group (and member at its epoch) in the local metadata view, waiting briefly
//!    for a view that is a few entries behind (UnknownGroup / FencedMember)
//!    member: must hold the partition in its assigned set (FencedMember)
//!    no member (admin): the group must have no members (GroupNotEmpty)
//! ─► offset ≤ the high watermark (OffsetOutOfRange)
//! ─► propose CommitOffset{incarnation, member fence} ─► applied: Committed, or
//!    Fenced (a newer owner took the partition over), or StaleGroup
//! ```

use neo_protocol::api::{CommitOffsetsRequest, CommitOffsetsResponse};
use neo_protocol::{ErrorCode, RpcError};
use neo_security::{Operation, ResourceType, SecurityContext};

use super::{broker_error, hosted_replica, serving_leader};
use crate::facade::Broker;
use crate::groups::coordinator::now_ms;
use crate::groups::state::{GroupState, check_name};
use crate::groups::view_knowing;
use crate::partition::offsets::{
    Fence, OFFSET_METADATA_LEN_MAX, OffsetError, PartitionAnswer, PartitionCommand,
};

pub(crate) async fn commit_offsets(
    b: &Broker,
    ctx: &SecurityContext,
    req: CommitOffsetsRequest,
) -> Result<CommitOffsetsResponse, RpcError> {
    b.authorize(ctx, ResourceType::Group, &req.group, Operation::Consume)?;
    b.authorize(ctx, ResourceType::Topic, &req.topic, Operation::Consume)?;
    check_name("group name", &req.group, false).map_err(super::group_error)?;
    if req.metadata.len() > OFFSET_METADATA_LEN_MAX {
        return Err(RpcError::invalid_argument(format!(
            "offset metadata is {} bytes; at most {OFFSET_METADATA_LEN_MAX}",
            req.metadata.len()
        )));
    }
    let what = format!("{}/{}", req.topic, req.partition);
    let p = hosted_replica(b, &req.topic, req.partition, &what)?;
    serving_leader(b, p.group(), &what)?;
    let (incarnation, member) = owner_check(
        b,
        &req.group,
        req.member_id.as_deref(),
        req.member_epoch,
        &req.topic,
        req.partition,
    )
    .await?;
    // The high watermark of a leader that has applied its predecessors' entries.
    p.catch_up().await.map_err(|e| broker_error(b, e, &what))?;
    let hw = p.group().applied_watch().borrow().next_offset;
    if req.offset > hw {
        return Err(RpcError::new(
            ErrorCode::OffsetOutOfRange,
            format!("{what}: offset {} is beyond the log end {hw}", req.offset),
        ));
    }
    let cmd = PartitionCommand::CommitOffset {
        group: req.group.clone(),
        incarnation,
        member,
        offset: req.offset,
        metadata: req.metadata,
        time_ms: now_ms(),
    };
    match p
        .offset_command(&cmd)
        .await
        .map_err(|e| broker_error(b, e, &what))?
    {
        PartitionAnswer::Committed => Ok(CommitOffsetsResponse {}),
        PartitionAnswer::Refused(e) => Err(offset_error(e)),
        other => Err(RpcError::internal(format!(
            "{what}: unexpected answer {other:?}"
        ))),
    }
}

/// Checks, against the local metadata view, that `member_id` (at `epoch`) may commit or
/// take over `topic`/`partition` for `group` (no member: the group must be empty);
/// returns the group's incarnation and the member's fence.
pub(crate) async fn owner_check(
    b: &Broker,
    group: &str,
    member_id: Option<&str>,
    epoch: u64,
    topic: &str,
    partition: u32,
) -> Result<(u64, Option<Fence>), RpcError> {
    let state = view_knowing(b, group, member_id.map(|m| (m, epoch))).await;
    let g: &GroupState = state
        .groups
        .groups
        .get(group)
        .ok_or_else(|| super::describe_group::unknown_group(group))?;
    let Some(member_id) = member_id else {
        if !g.members.is_empty() {
            return Err(RpcError::new(
                ErrorCode::GroupNotEmpty,
                format!(
                    "group {group:?} has {} members: only they commit while it has any",
                    g.members.len()
                ),
            ));
        }
        return Ok((g.incarnation, None));
    };
    let fenced = |why: String| {
        RpcError::new(
            ErrorCode::FencedMember,
            format!("member {member_id:?} of group {group:?} is fenced: {why}"),
        )
    };
    let m = g
        .members
        .get(member_id)
        .ok_or_else(|| fenced("unknown member (left or timed out)".into()))?;
    if epoch > m.epoch {
        return Err(fenced(format!(
            "epoch {epoch} is newer than the group knows"
        )));
    }
    if !m.assigned.contains(&(topic.to_string(), partition)) {
        return Err(fenced(format!("{topic}/{partition} is not assigned to it")));
    }
    Ok((
        g.incarnation,
        Some(Fence {
            member_id: member_id.to_string(),
            epoch,
        }),
    ))
}

/// The wire error of a refused offset command.
pub(crate) fn offset_error(e: OffsetError) -> RpcError {
    match e {
        OffsetError::Fenced { .. } => RpcError::new(ErrorCode::FencedMember, e.to_string()),
        OffsetError::StaleGroup { .. } => RpcError::new(ErrorCode::UnknownGroup, e.to_string()),
        OffsetError::Invalid { .. } => RpcError::invalid_argument(e.to_string()),
    }
}
