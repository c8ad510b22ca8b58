//! The group coordinator's soft state and duties.
//!
//! The coordinator of every group is the metadata group's leader: membership changes
//! are proposals to the metadata group it leads, so they are replicated and survive
//! failover; what is *not* replicated is liveness (when each member was last heard
//! from). A node that becomes coordinator first makes a linearizable read, then waits
//! until it has applied its whole log (see [`ensure`]), and then counts every member as
//! heard from *now*: after a failover members get a full session timeout to find the
//! new coordinator.
//!
//! Duties ([`run_duties`], on every node):
//! - as coordinator: evict members silent for their session timeout; delete groups
//!   empty for longer than `offsets_retention_ms`;
//! - as a partition leader: drop committed offsets of groups that no longer exist (or
//!   exist as a newer incarnation), through the partition's Raft group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neo_protocol::{ErrorCode, RpcError};
use neo_raft::Role;
use tokio::sync::watch;

use super::state::GroupCommand;
use crate::facade::Broker;
use crate::lock;
use crate::meta::{self, MetaCommand, MetaResponse, MetaState};
use crate::partition::offsets::{PartitionAnswer, PartitionCommand};

/// How often the duties run.
const DUTY_INTERVAL: Duration = Duration::from_millis(250);
/// How often partition leaders look for offsets of deleted groups (in duty rounds).
const OFFSET_GC_EVERY_ROUNDS: u64 = 20;

/// Milliseconds since the Unix epoch (the coordinator's and leaders' clock for
/// commands; never used for a decision on another replica).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The coordinator's soft state on this node.
#[derive(Default)]
pub(crate) struct Coordinator {
    /// (group, member) → when the member was last heard from.
    seen: Mutex<HashMap<(String, String), Instant>>,
    /// The metadata term this node confirmed its leadership in (0: none).
    ready_term: AtomicU64,
    /// The metadata log index this node had applied when it last became coordinator:
    /// part of the member ids it makes. The term alone does not tell two runs of this
    /// node apart: a leader that restarts may resume its term (openraft's leader
    /// restore), and `next_member` starts again at 0.
    ready_index: AtomicU64,
    /// Makes member ids unique within this process.
    next_member: AtomicU64,
    /// Held while this node takes over a term (the linearizable read, then the wait
    /// for its whole log applied), so that the requests arriving meanwhile wait for
    /// that one take-over instead of each making their own: 10 000 joins at once were
    /// 10 000 reads and 10 000 watchers of the group's metrics, each woken at every
    /// applied entry, and hundreds of them timed out (broker/tests/groups.rs).
    takeover: tokio::sync::Mutex<()>,
    /// Membership changes this node made as coordinator, by group.
    rebalances: Mutex<BTreeMap<String, u64>>,
}

impl Coordinator {
    /// Records that a member was heard from.
    pub(crate) fn touch(&self, group: &str, member: &str) {
        lock(&self.seen).insert((group.to_string(), member.to_string()), Instant::now());
    }

    /// Forgets a member's liveness.
    pub(crate) fn forget(&self, group: &str, member: &str) {
        lock(&self.seen).remove(&(group.to_string(), member.to_string()));
    }

    /// A fresh member id: unique within this process by `next_member`, and apart from
    /// the ids of this node's earlier runs by the log index it took over at (every
    /// join an earlier run committed is at or below it).
    pub(crate) fn member_id(&self, node: u64, term: u64) -> String {
        let at = self.ready_index.load(Ordering::Acquire);
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!("m-{node}-{term}-{at}-{n}")
    }

    /// Counts one membership change of `group`.
    pub(crate) fn rebalanced(&self, group: &str) {
        *lock(&self.rebalances).entry(group.to_string()).or_default() += 1;
    }

    /// Membership changes made by this node as coordinator, by group.
    pub(crate) fn rebalances(&self) -> BTreeMap<String, u64> {
        lock(&self.rebalances).clone()
    }
}

/// `NotCoordinator` pointing at the metadata leader (when known).
pub(crate) fn not_coordinator(b: &Broker, leader: Option<u64>) -> RpcError {
    // Never this node itself (a leader whose first read of its term failed): the
    // client would only come back here.
    let leader = leader.filter(|l| *l != b.node_id());
    let addr = leader.and_then(|l| b.client_addr_of(l));
    let message = match (&leader, &addr) {
        (Some(l), Some(a)) => format!("not the group coordinator; node {l} at {a} is"),
        _ => "not the group coordinator; none known yet, retry shortly".to_string(),
    };
    let e = RpcError::new(ErrorCode::NotCoordinator, message);
    match addr {
        Some(a) => e.with_details(a.into_bytes()),
        None => e,
    }
}

/// Longest a request waits for another request's take-over of the term (one
/// linearizable read plus the catch-up of the whole metadata log, both bounded).
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// Checks that this node coordinates groups (leads the metadata group with its whole log
/// applied, once per term) and returns the metadata state with the current term.
///
/// The linearizable read alone does not make the view current. It waits for the
/// first entry of the leader's term or the commit index the leader knows, whichever
/// is later; a leader that was killed and restarted before another was elected
/// resumes its term (openraft's leader restore), so the first entry of its term is
/// old, and the commit index it read back may be older than what it had committed
/// (it is written without a flush). Its view then misses changes it had committed
/// and told members of before the kill (a member fenced with "epoch 5 is stale
/// (current 3)"). The leader's log holds every committed entry, so once it has
/// applied its whole log, as it stands after the read, its view has them all.
pub(crate) async fn ensure(b: &Broker) -> Result<(std::sync::Arc<MetaState>, u64), RpcError> {
    let (role, term, leader) = b.meta_group().leadership();
    if role != Role::Leader {
        return Err(not_coordinator(b, leader));
    }
    if b.meta_group().quorum_lost() {
        // Cut off from the metadata quorum: another coordinator is being elected, and
        // this one could neither change the membership nor vouch for its view of it.
        return Err(not_coordinator(b, None));
    }
    let c = &b.coordinator;
    if c.ready_term.load(Ordering::Acquire) != term {
        // Bounded: the holder's own read and catch-up are bounded, but a stuck holder
        // must not hold every request of this node behind it (the client retries).
        let Ok(_takeover) = tokio::time::timeout(TAKEOVER_WAIT, c.takeover.lock()).await else {
            return Err(not_coordinator(b, None));
        };
        if b.meta_group().leadership().1 != term {
            // The term moved on while this waited: the take-over it wanted is stale.
            return Err(not_coordinator(b, b.controller()));
        }
        // Whoever held the lock before may have done it (or failed: then try again).
        if c.ready_term.load(Ordering::Acquire) != term {
            meta::linearizable(b.meta_group(), &b.meta_view())
                .await
                .map_err(|_| not_coordinator(b, b.controller()))?;
            let applied = whole_log_applied(b, term).await?;
            // A new coordinator: every member counts as heard from now.
            lock(&c.seen).clear();
            c.ready_index.store(applied, Ordering::Release);
            c.ready_term.store(term, Ordering::Release);
        }
    }
    Ok((b.state(), term))
}

/// Waits (at most [`super::TERM_CATCH_UP`]) until this node, still the metadata leader
/// in `term`, has applied every entry its log holds now; returns the applied index.
/// Not in time, or no longer the leader: `NotCoordinator` (the client retries).
async fn whole_log_applied(b: &Broker, term: u64) -> Result<u64, RpcError> {
    let group = b.meta_group();
    let last = group.metrics().last_log_index;
    let m = group
        .wait_until(super::TERM_CATCH_UP, "the metadata log applied", |m| {
            m.role != Role::Leader || m.term != term || m.applied_index >= last
        })
        .await
        .map_err(|e| {
            tracing::debug!("new coordinator catching up: {e}");
            not_coordinator(b, None)
        })?;
    if m.role != Role::Leader || m.term != term {
        return Err(not_coordinator(b, m.leader));
    }
    Ok(m.applied_index.unwrap_or(0))
}

/// Proposes a group command to the metadata group; a refusal is the typed wire error.
pub(crate) async fn propose(b: &Broker, cmd: GroupCommand) -> Result<(), RpcError> {
    let group = cmd.group().to_string();
    let what = format!("group {group:?}");
    let answer = meta::propose(b.meta_group(), &MetaCommand::Group(cmd))
        .await
        .map_err(|e| match e {
            crate::Error::Raft(neo_raft::Error::NotLeader { leader, .. }) => {
                not_coordinator(b, leader)
            }
            e => crate::ops::broker_error(b, e, &what),
        })?;
    match answer {
        MetaResponse::Refused(e) => Err(crate::ops::meta_error(e)),
        _ => Ok(()),
    }
}

/// Runs the group duties until `stop` turns `true`.
pub(crate) async fn run_duties(b: &Broker, mut stop: watch::Receiver<bool>) {
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DUTY_INTERVAL) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        round += 1;
        if b.meta_group().leadership().0 == Role::Leader
            && let Err(e) = coordinator_round(b).await
        {
            tracing::debug!("group coordinator duties: {}", e.message);
        }
        if round.is_multiple_of(OFFSET_GC_EVERY_ROUNDS) {
            drop_deleted_groups_offsets(b).await;
        }
    }
}

/// Evicts silent members; deletes groups empty past the offsets retention.
async fn coordinator_round(b: &Broker) -> Result<(), RpcError> {
    let (state, _) = ensure(b).await?;
    let now = Instant::now();
    let mut evict = Vec::new();
    {
        let mut seen = lock(&b.coordinator.seen);
        seen.retain(|(g, m), _| {
            state
                .groups
                .groups
                .get(g)
                .is_some_and(|g| g.members.contains_key(m))
        });
        for (name, g) in &state.groups.groups {
            for (id, m) in &g.members {
                let last = *seen.entry((name.clone(), id.clone())).or_insert(now);
                let timeout = Duration::from_millis(u64::from(m.session_timeout_ms));
                if now.duration_since(last) > timeout {
                    evict.push((name.clone(), id.clone()));
                }
            }
        }
    }
    for (group, member_id) in evict {
        tracing::info!(group, member_id, "session timed out: evicting the member");
        b.coordinator.forget(&group, &member_id);
        propose(
            b,
            GroupCommand::Remove {
                group: group.clone(),
                member_id,
                now_ms: now_ms(),
            },
        )
        .await?;
        b.coordinator.rebalanced(&group);
    }
    let retention = b.limits().offsets_retention_ms;
    let wall = now_ms();
    let expired: Vec<String> = state
        .groups
        .groups
        .iter()
        .filter(|(_, g)| {
            g.members.is_empty()
                && g.empty_since_ms
                    .is_some_and(|t| wall.saturating_sub(t) > retention)
        })
        .map(|(n, _)| n.clone())
        .collect();
    for group in expired {
        tracing::info!(group, "empty past offsets.retention.ms: deleting the group");
        propose(b, GroupCommand::Delete { group }).await?;
    }
    Ok(())
}

/// On partitions this node leads: drops offsets of groups that were deleted (or
/// re-created as a newer incarnation). Only incarnations the metadata view already
/// knows were handed out are considered, so a lagging view never drops a live group.
async fn drop_deleted_groups_offsets(b: &Broker) {
    let state = b.state();
    let known = state.groups.next_incarnation;
    for p in b.partitions() {
        if p.group().leadership().0 != Role::Leader {
            continue;
        }
        let stale: Vec<(String, u64)> = p.with_offsets(|t| {
            t.groups
                .iter()
                .filter(|(name, e)| {
                    e.incarnation < known
                        && state
                            .groups
                            .groups
                            .get(*name)
                            .is_none_or(|g| g.incarnation != e.incarnation)
                })
                .map(|(name, e)| (name.clone(), e.incarnation))
                .collect()
        });
        if stale.is_empty() {
            continue;
        }
        match p
            .offset_command(&PartitionCommand::DropGroups { groups: stale })
            .await
        {
            Ok(PartitionAnswer::Dropped(n)) => {
                tracing::info!(
                    group = p.group().id(),
                    "dropped offsets of {n} deleted groups"
                )
            }
            Ok(other) => tracing::warn!(group = p.group().id(), "offset GC: {other:?}"),
            Err(e) => tracing::debug!(group = p.group().id(), "offset GC: {e}"),
        }
    }
}
