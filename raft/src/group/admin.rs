//! A replica's administration: leadership transfer, membership changes, and log purge
//! (retention and a queue's ack floor mapped to a Raft index, then purged through a
//! snapshot).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, ChangeMembers};

use super::{RaftGroup, fatal, write_error};
use crate::error::Result;
use crate::types::NodeId;

impl RaftGroup {
    /// Asks the leader to hand leadership to `to` (it must be a voter with the log up to
    /// date); returns once the request is sent, not when `to` leads.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| fatal(self.group, e))
    }

    /// Adds `node` (reachable at `addr`) as a learner and waits until it has caught up.
    pub async fn add_learner(&self, node: NodeId, addr: String) -> Result<()> {
        self.raft
            .add_learner(node, BasicNode { addr }, true)
            .await
            .map(|_| ())
            .map_err(|e| write_error(self.group, e))
    }

    /// Makes `voters` the group's voters (joint consensus; learners not in `voters`
    /// stay learners).
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        self.raft
            .change_membership(voters, true)
            .await
            .map(|_| ())
            .map_err(|e| write_error(self.group, e))
    }

    /// Removes `nodes` from the group entirely (voters are demoted and dropped, learners
    /// dropped). A leader that removes itself steps down once the change commits.
    pub async fn remove_members(&self, nodes: BTreeSet<NodeId>) -> Result<()> {
        let m = self.metrics();
        let voters: BTreeSet<NodeId> = nodes.intersection(&m.voters).copied().collect();
        let learners: BTreeSet<NodeId> = nodes.intersection(&m.learners).copied().collect();
        if !voters.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(voters), false)
                .await
                .map_err(|e| write_error(self.group, e))?;
        }
        if !learners.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(learners), false)
                .await
                .map_err(|e| write_error(self.group, e))?;
        }
        Ok(())
    }

    /// The address of `node` in the group's membership config, if it is a member.
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.addr.clone())
    }

    /// Retention's hook: builds a snapshot covering everything applied, then purges the
    /// local log up to `index` (or up to the snapshot, if that is lower). Returns the
    /// index purge was asked for; openraft purges in the background once no replication
    /// still reads those entries (watch [`crate::GroupMetrics::purged_index`]).
    pub async fn purge_upto(&self, index: u64, timeout: Duration) -> Result<u64> {
        let applied = self.metrics().applied_index;
        let t = self.raft.trigger();
        t.snapshot().await.map_err(|e| fatal(self.group, e))?;
        let m = self
            .wait_until(timeout, "snapshot", |m| {
                m.snapshot_index.is_some() && m.snapshot_index >= applied
            })
            .await?;
        let upto = index.min(m.snapshot_index.unwrap_or(0));
        t.purge_log(upto).await.map_err(|e| fatal(self.group, e))?;
        Ok(upto)
    }

    /// Applies a partition's retention to this replica's log (each replica purges its
    /// own; log compaction is local in Raft, and a follower that later needs purged
    /// entries gets a snapshot). Plans the cut with `neo-storage`'s retention rule over
    /// `retention_ms` / `retention_bytes` at `now_ms` (ms since the epoch: sealed
    /// segments only, never the active one), maps it to the last Raft index whose entry
    /// lies entirely below it, caps that at the applied index (so never beyond what is
    /// committed) and purges up to it through [`RaftGroup::purge_upto`].
    ///
    /// Returns the index purge was asked for, or `None` when nothing is due (no limits,
    /// nothing old or large enough, or already purged). openraft deletes the segments in
    /// the background; watch [`crate::GroupMetrics::purged_index`] or the log start offset.
    pub async fn apply_retention(
        &self,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Option<u64>> {
        if retention_ms.is_none() && retention_bytes.is_none() {
            return Ok(None);
        }
        let Some(planned) = self
            .log
            .retention_upto(retention_ms, retention_bytes, now_ms)
        else {
            return Ok(None);
        };
        self.purge_planned(planned, timeout).await
    }

    /// Work-queue retention: purges this replica's sealed segments whose records all lie
    /// below `offset` (a queue's ack floor, from the applied state, so never beyond what
    /// is committed and applied), through [`RaftGroup::purge_upto`]. Returns the index
    /// purge was asked for, or `None` when nothing is due.
    pub async fn purge_below_offset(&self, offset: u64, timeout: Duration) -> Result<Option<u64>> {
        let Some(planned) = self.log.cut_below_upto(offset) else {
            return Ok(None);
        };
        self.purge_planned(planned, timeout).await
    }

    /// Purges up to `planned`, capped at the applied index; `None` when that is purged
    /// already.
    async fn purge_planned(&self, planned: u64, timeout: Duration) -> Result<Option<u64>> {
        let m = self.metrics();
        let Some(applied) = m.applied_index else {
            return Ok(None);
        };
        let upto = planned.min(applied);
        if m.purged_index.is_some_and(|p| p >= upto) {
            return Ok(None);
        }
        self.purge_upto(upto, timeout).await.map(Some)
    }
}
