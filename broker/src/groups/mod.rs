//! Consumer groups on the broker: the sticky [`assignor`], the replicated membership
//! rules ([`state`], part of the metadata state), the coordinator's soft state and
//! duties (`coordinator`), and the [`Broker`] operations of the group methods (their
//! code is in `crate::ops`, one file per method).
//!
//! Where the state lives (see docs/groups.md):
//! - membership, epochs and assignments: the metadata group (written by the
//!   coordinator = the metadata leader, only when something changes);
//! - liveness: the coordinator's memory (heartbeats are not written);
//! - committed offsets and fences: each partition's own Raft group
//!   (`crate::partition::offsets`), next to the data.

pub mod assignor;
pub(crate) mod coordinator;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use neo_protocol::RpcError;
use neo_protocol::api::*;
use neo_security::SecurityContext;

use crate::facade::Broker;
use crate::meta::MetaState;
use crate::ops;

/// How long a partition leader waits for its metadata view to learn a member (or
/// epoch) a request names before it decides with what it has.
const VIEW_CATCH_UP: Duration = Duration::from_secs(2);

/// How long a node whose metadata replica has not applied its current leader's
/// commits (it just restarted, or lost its leader) waits for them before it answers
/// from the view it has.
const TERM_CATCH_UP: Duration = Duration::from_secs(5);

/// The local metadata state once the replica has applied what its leader committed
/// before the current term (at most [`TERM_CATCH_UP`]): for reads that would answer
/// "unknown" from a replica that has just restarted.
pub(crate) async fn view_caught_up(b: &Broker) -> Arc<MetaState> {
    if let Err(e) = b.meta_group().caught_up_in_term(TERM_CATCH_UP).await {
        tracing::debug!("metadata catch-up: {e}");
    }
    b.state()
}

/// The local metadata state once it knows `group` (and `member_id` at `epoch` or
/// later), or after [`VIEW_CATCH_UP`]: the member may have joined a moment ago at the
/// coordinator and this node's replica is a few entries behind. Before a group is
/// called unknown, the replica must also have applied what its leader committed
/// before the current term (a node that has just restarted replays and hears from the
/// leader first: without this it answers `UnknownGroup` for a group created long ago).
pub(crate) async fn view_knowing(
    b: &Broker,
    group: &str,
    member: Option<(&str, u64)>,
) -> Arc<MetaState> {
    let knows = |state: &MetaState| {
        state
            .groups
            .groups
            .get(group)
            .is_some_and(|g| match member {
                None => true,
                Some((id, epoch)) => g.members.get(id).is_some_and(|m| m.epoch >= epoch),
            })
    };
    let mut view = b.meta_view();
    if !knows(&view.borrow_and_update()) {
        view_caught_up(b).await;
    }
    let deadline = tokio::time::Instant::now() + VIEW_CATCH_UP;
    loop {
        let state = view.borrow_and_update().clone();
        if knows(&state) {
            return state;
        }
        tokio::select! {
            r = view.changed() => if r.is_err() { return state },
            _ = tokio::time::sleep_until(deadline) => return state,
        }
    }
}

impl Broker {
    /// The node that coordinates `group` (any node answers).
    pub async fn find_coordinator(
        &self,
        ctx: &SecurityContext,
        req: FindCoordinatorRequest,
    ) -> Result<FindCoordinatorResponse, RpcError> {
        ops::find_coordinator::find_coordinator(self, ctx, req)
    }

    /// Joins a group (at its coordinator).
    pub async fn join_group(
        &self,
        ctx: &SecurityContext,
        req: JoinGroupRequest,
    ) -> Result<JoinGroupResponse, RpcError> {
        ops::join_group::join_group(self, ctx, req).await
    }

    /// A member's heartbeat (at its coordinator), held until its assignment changes.
    pub async fn heartbeat_group(
        &self,
        ctx: &SecurityContext,
        req: GroupHeartbeatRequest,
    ) -> Result<GroupHeartbeatResponse, RpcError> {
        ops::heartbeat_group::heartbeat_group(self, ctx, req).await
    }

    /// Leaves a group (at its coordinator).
    pub async fn leave_group(
        &self,
        ctx: &SecurityContext,
        req: LeaveGroupRequest,
    ) -> Result<LeaveGroupResponse, RpcError> {
        ops::leave_group::leave_group(self, ctx, req).await
    }

    /// Commits a consumed offset (at the partition leader), after a quorum has it.
    pub async fn commit_offsets(
        &self,
        ctx: &SecurityContext,
        req: CommitOffsetsRequest,
    ) -> Result<CommitOffsetsResponse, RpcError> {
        ops::commit_offsets::commit_offsets(self, ctx, req).await
    }

    /// Reads (and, for a member taking the partition over, fences) a committed offset
    /// (at the partition leader).
    pub async fn fetch_offsets(
        &self,
        ctx: &SecurityContext,
        req: FetchOffsetsRequest,
    ) -> Result<FetchOffsetsResponse, RpcError> {
        ops::fetch_offsets::fetch_offsets(self, ctx, req).await
    }

    /// Every group (any node: its applied metadata).
    pub async fn list_groups(
        &self,
        ctx: &SecurityContext,
        req: ListGroupsRequest,
    ) -> Result<ListGroupsResponse, RpcError> {
        ops::list_groups::list_groups(self, ctx, req)
    }

    /// One group's membership (any node: its applied metadata).
    pub async fn describe_group(
        &self,
        ctx: &SecurityContext,
        req: DescribeGroupRequest,
    ) -> Result<GroupDescription, RpcError> {
        ops::describe_group::describe_group(self, ctx, req).await
    }

    /// Deletes an empty group (at its coordinator).
    pub async fn delete_group(
        &self,
        ctx: &SecurityContext,
        req: DeleteGroupRequest,
    ) -> Result<DeleteGroupResponse, RpcError> {
        ops::delete_group::delete_group(self, ctx, req).await
    }

    /// Finds an offset of a partition by position or time (at the partition leader).
    pub async fn list_offsets(
        &self,
        ctx: &SecurityContext,
        req: ListOffsetsRequest,
    ) -> Result<ListOffsetsResponse, RpcError> {
        ops::list_offsets::list_offsets(self, ctx, req).await
    }

    /// Runs the group duties (evictions, expiry, offsets of deleted groups) until
    /// `stop` turns `true`.
    pub async fn group_duties(&self, stop: tokio::sync::watch::Receiver<bool>) {
        coordinator::run_duties(self, stop).await
    }

    /// Membership changes this node made as coordinator, by group (metrics).
    pub fn group_rebalances(&self) -> std::collections::BTreeMap<String, u64> {
        self.coordinator.rebalances()
    }

    /// Consumer lag of every group on every partition this node leads: (group, topic,
    /// partition, committed offset, log end offset), for metrics.
    pub fn group_lags(&self) -> Vec<GroupLag> {
        let state = self.state();
        let mut out = Vec::new();
        for (topic, t) in &state.topics {
            for (i, info) in t.partitions.iter().enumerate() {
                let Some(p) = self.partition(info.group) else {
                    continue;
                };
                if p.group().leadership().0 != neo_raft::Role::Leader {
                    continue;
                }
                let end = p.group().applied_watch().borrow().next_offset;
                p.with_offsets(|table| {
                    for (name, g) in &state.groups.groups {
                        if let Some(c) = table.committed(name, g.incarnation) {
                            out.push(GroupLag {
                                group: name.clone(),
                                topic: topic.clone(),
                                partition: i as u32,
                                committed: c.offset,
                                log_end: end,
                            });
                        }
                    }
                });
            }
        }
        out
    }
}

/// One group's position on one partition (see [`Broker::group_lags`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Committed offset.
    pub committed: u64,
    /// Log end offset (high watermark).
    pub log_end: u64,
}

/// `[(topic, partition)]` as the wire's per-topic lists.
pub(crate) fn to_wire(set: &std::collections::BTreeSet<assignor::Tp>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (topic, p) in set {
        match out.last_mut() {
            Some(last) if last.topic == *topic => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

/// The wire's per-topic lists as a set.
pub(crate) fn from_wire(list: &[TopicPartitions]) -> std::collections::BTreeSet<assignor::Tp> {
    list.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}
