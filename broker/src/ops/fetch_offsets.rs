//! `fetch_offsets`: a group's committed offset of one partition, at the partition's
//! leader, with the log's bounds.
//!
//! With a member: the member takes the partition over. After the same ownership check
//! as a commit, a `Fence` command goes through the partition's Raft group: it makes the
//! member the partition's fence (a commit by an older owner arriving later is refused)
//! and answers the committed offset as of that point in the log. Without a member: a
//! read of the leader's applied table (admin tools, lag).
//!
//! Errors: `NotLeader`, `UnknownGroup`, `FencedMember`, `GroupNotEmpty` never (reads
//! need no empty group).

use neo_protocol::RpcError;
use neo_protocol::api::{FetchOffsetsRequest, FetchOffsetsResponse};
use neo_security::{Operation, ResourceType, SecurityContext};

use super::commit_offsets::{offset_error, owner_check};
use super::{broker_error, hosted_replica, serving_leader};
use crate::facade::Broker;
use crate::groups::state::check_name;
use crate::partition::offsets::{CommittedOffset, PartitionAnswer, PartitionCommand};

pub(crate) async fn fetch_offsets(
    b: &Broker,
    ctx: &SecurityContext,
    req: FetchOffsetsRequest,
) -> Result<FetchOffsetsResponse, RpcError> {
    b.authorize(
        ctx,
        ResourceType::Group,
        &req.group,
        if req.member_id.is_some() {
            Operation::Consume
        } else {
            Operation::Describe
        },
    )?;
    b.authorize(ctx, ResourceType::Topic, &req.topic, Operation::Describe)?;
    check_name("group name", &req.group, false).map_err(super::group_error)?;
    let what = format!("{}/{}", req.topic, req.partition);
    let p = hosted_replica(b, &req.topic, req.partition, &what)?;
    serving_leader(b, p.group(), &what)?;
    let committed: Option<CommittedOffset> = match req.member_id.as_deref() {
        Some(member_id) => {
            let (incarnation, fence) = owner_check(
                b,
                &req.group,
                Some(member_id),
                req.member_epoch,
                &req.topic,
                req.partition,
            )
            .await?;
            let member = fence.ok_or_else(|| RpcError::internal("member without a fence"))?;
            let cmd = PartitionCommand::Fence {
                group: req.group.clone(),
                incarnation,
                member,
            };
            match p
                .offset_command(&cmd)
                .await
                .map_err(|e| broker_error(b, e, &what))?
            {
                PartitionAnswer::Fenced(c) => c,
                PartitionAnswer::Refused(e) => return Err(offset_error(e)),
                other => {
                    return Err(RpcError::internal(format!(
                        "{what}: unexpected answer {other:?}"
                    )));
                }
            }
        }
        None => {
            // A new leader answers only once it has applied its predecessors' commits.
            p.catch_up().await.map_err(|e| broker_error(b, e, &what))?;
            let mut state = b.state();
            if !state.groups.groups.contains_key(&req.group) {
                state = crate::groups::view_caught_up(b).await;
            }
            let g = state
                .groups
                .groups
                .get(&req.group)
                .ok_or_else(|| super::describe_group::unknown_group(&req.group))?;
            p.with_offsets(|t| t.committed(&req.group, g.incarnation).cloned())
        }
    };
    let (start, _) = p.group().log_offsets();
    let end = p.group().applied_watch().borrow().next_offset;
    Ok(match committed {
        Some(c) => FetchOffsetsResponse {
            offset: Some(c.offset),
            metadata: c.metadata,
            commit_time_ms: c.time_ms,
            log_start_offset: start,
            log_end_offset: end,
        },
        None => FetchOffsetsResponse {
            offset: None,
            metadata: String::new(),
            commit_time_ms: 0,
            log_start_offset: start,
            log_end_offset: end,
        },
    })
}
