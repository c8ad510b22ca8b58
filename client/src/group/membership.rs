//! The member's state shared by the poll path and the heartbeat task, and the task.
//!
//! ```text
//!            join answered                 FencedMember (or unknown group)    
//! Rejoining ───────────────▶ Joined ──────────────────────────────────▶ Fenced
//!     ▲                        │ heartbeat answers: epoch, target assignment
//!     └────────────────────────┴── poll path dropped everything (rejoin) ◀──┘
//! ```
//!
//! The task owns the conversation with the coordinator; the poll path owns the
//! partitions. They meet in [`State`]: the task writes the target assignment and the
//! phase and wakes the poll path (`poll_wake`); the poll path writes what it owns and
//! wakes the task (`task_wake`), which then heartbeats at once (wait 0).
//!
//! Only the coordinator ends a membership. While no coordinator answers (it died, an
//! election is under way, it is frozen or unreachable) the member keeps its partitions
//! and keeps trying, as Kafka's consumer does: a new coordinator gives every member a
//! full session from its takeover, so a failover costs no rebalance. If the
//! coordinator did evict the member meanwhile, its first answer is `FencedMember`, and
//! any commit the member makes after the new owner took a partition over is refused
//! (`FencedMember`) too: nothing it does can move the group's offsets.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use neo_protocol::ErrorCode;
use neo_protocol::api::{
    GroupHeartbeatRequest, GroupHeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::TopicPartition;
use super::assignment::{self, PartitionSet};
use super::coordinator::{CoordinatorLink, timed_out};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Lower bound on the heartbeat interval, whatever the coordinator says (a zero would
/// spin).
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// A member identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) epoch: u64,
}

/// Where the member stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A member (`State::member` is set).
    Joined,
    /// Fenced by the coordinator: the poll path must drop every
    /// partition without committing, then ask for a rejoin.
    Fenced {
        /// The member id that was fenced.
        member_id: String,
        /// Why.
        reason: String,
    },
    /// Waiting for the task to join again.
    Rejoining,
}

/// The state both sides see.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) member: Option<Member>,
    /// The latest assignment from the coordinator.
    pub(crate) target: PartitionSet,
    /// Bumped whenever `target` (or the member) changes.
    pub(crate) generation: u64,
    /// What the poll path owns (reported in heartbeats).
    owned: PartitionSet,
    /// The last `generation` the poll path has brought its partitions in line with.
    /// Until it reaches `generation`, heartbeats also report the target's partitions
    /// as owned: the poll path may be taking them over right now, and reporting them
    /// not owned would let the coordinator hand them to another member first.
    reconciled: u64,
    /// Partitions the poll path is taking over right now (their takeover fetch may
    /// already have fenced them for this member): reported as owned too.
    taking_over: PartitionSet,
    /// `owned` changed since the last heartbeat was sent: send the next one at once.
    owned_dirty: bool,
    /// An error for the poll path to return once (join refused, coordinator gone).
    error: Option<Error>,
    /// `close` was called: leave and stop.
    closing: bool,
    /// A member abandoned by the poll path (its commits were fenced): left, best
    /// effort, before joining again.
    abandoned: Option<Member>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) session_timeout: Duration,
}

impl State {
    /// What a heartbeat reports as owned: what the poll path owns, and, while it has
    /// not caught up with the latest target, the target's partitions too (see
    /// `reconciled`).
    fn reported_owned(&self) -> PartitionSet {
        let mut owned = self.owned.clone();
        owned.extend(self.taking_over.iter().cloned());
        if self.reconciled < self.generation {
            owned.extend(self.target.iter().cloned());
        }
        owned
    }
}

/// [`State`] and the two wake-ups.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the poll path: the target assignment or the phase changed.
    pub(crate) poll_wake: Notify,
    /// Wakes the task: owned partitions changed, a rejoin was asked for, or closing.
    pub(crate) task_wake: Notify,
}

/// What the poll path reads at the start of a reconciliation.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) phase: Phase,
    pub(crate) member: Option<Member>,
    pub(crate) target: PartitionSet,
    pub(crate) generation: u64,
}

impl Shared {
    /// The state right after a successful first join.
    pub(crate) fn joined(resp: &JoinGroupResponse) -> Shared {
        let mut state = State {
            phase: Phase::Rejoining,
            member: None,
            target: PartitionSet::new(),
            generation: 0,
            owned: PartitionSet::new(),
            owned_dirty: false,
            reconciled: 0,
            taking_over: PartitionSet::new(),
            error: None,
            closing: false,
            abandoned: None,
            heartbeat_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
        };
        apply_join(&mut state, resp);
        Shared {
            state: Mutex::new(state),
            poll_wake: Notify::new(),
            task_wake: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn view(&self) -> View {
        let state = self.lock();
        View {
            phase: state.phase.clone(),
            member: state.member.clone(),
            target: state.target.clone(),
            generation: state.generation,
        }
    }

    /// The poll path has brought its partitions in line with `generation`.
    pub(crate) fn reconciled(&self, generation: u64) {
        let mut state = self.lock();
        state.reconciled = state.reconciled.max(generation);
    }

    /// The poll path starts (a non-empty set) or ends (empty) taking partitions over.
    pub(crate) fn taking_over(&self, partitions: &[TopicPartition]) {
        self.lock().taking_over = partitions.iter().cloned().collect();
    }

    /// The current member identity (for commits), if joined.
    pub(crate) fn member(&self) -> Option<Member> {
        self.lock().member.clone()
    }

    /// The poll path now owns `owned`: report it in a heartbeat at once.
    pub(crate) fn set_owned(&self, owned: &PartitionSet) {
        {
            let mut state = self.lock();
            if state.owned == *owned {
                return;
            }
            state.owned = owned.clone();
            state.owned_dirty = true;
        }
        self.task_wake.notify_one();
    }

    /// The poll path dropped every partition: join again. `abandon`: the poll path
    /// gave the member up on its own (fenced commit), so the task leaves it first.
    pub(crate) fn rejoin(&self, abandon: bool) {
        {
            let mut state = self.lock();
            let member = state.member.take();
            if abandon {
                state.abandoned = member;
            }
            state.phase = Phase::Rejoining;
            state.owned.clear();
            state.owned_dirty = false;
            state.target.clear();
            state.generation += 1;
        }
        self.task_wake.notify_one();
    }

    /// The error the task left for the poll path, once.
    pub(crate) fn take_error(&self) -> Option<Error> {
        self.lock().error.take()
    }

    /// Ask the task to leave the group and stop.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.task_wake.notify_one();
    }

    fn report(&self, err: Error) {
        self.lock().error.get_or_insert(err);
        self.poll_wake.notify_one();
    }

    fn fenced(&self, member_id: &str, reason: String) {
        {
            let mut state = self.lock();
            if state.member.as_ref().is_none_or(|m| m.id != member_id) {
                return; // already rejoining
            }
            state.member = None;
            state.phase = Phase::Fenced {
                member_id: member_id.to_string(),
                reason,
            };
        }
        self.poll_wake.notify_one();
    }
}

fn apply_join(state: &mut State, resp: &JoinGroupResponse) {
    state.phase = Phase::Joined;
    state.member = Some(Member {
        id: resp.member_id.clone(),
        epoch: resp.member_epoch,
    });
    state.target = assignment::from_wire(&resp.assignment);
    state.generation += 1;
    state.heartbeat_interval =
        Duration::from_millis(u64::from(resp.heartbeat_interval_ms)).max(HEARTBEAT_INTERVAL_MIN);
    if resp.session_timeout_ms > 0 {
        state.session_timeout = Duration::from_millis(u64::from(resp.session_timeout_ms));
    }
}

/// The heartbeat task: joins again when asked, keeps one heartbeat in flight, leaves
/// on close.
#[derive(Debug)]
pub(crate) struct HeartbeatTask {
    pub(crate) shared: std::sync::Arc<Shared>,
    pub(crate) link: CoordinatorLink,
    /// The join request (same subscription and identity every time).
    pub(crate) join: JoinGroupRequest,
    /// Bound on one call beyond its long-poll wait.
    pub(crate) request_timeout: Duration,
    /// Backoff between failed attempts (its attempt and deadline bounds are not used:
    /// the task keeps trying until closed; the session timeout decides when the
    /// partitions are given up).
    pub(crate) backoff: RetryPolicy,
}

enum Step {
    Leave(Option<Member>),
    WaitForPoll,
    Join(Option<Member>),
    Heartbeat(GroupHeartbeatRequest, Member),
}

impl HeartbeatTask {
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        let mut last_answer = Instant::now();
        // A warning about a long coordinator outage was logged (once per outage).
        let mut warned = false;
        loop {
            let step = self.next_step();
            match step {
                Step::Leave(member) => {
                    if let Some(member) = member {
                        self.leave(member).await;
                    }
                    return;
                }
                Step::WaitForPoll => self.shared.task_wake.notified().await,
                Step::Join(abandoned) => {
                    if let Some(member) = abandoned {
                        self.leave(member).await;
                    }
                    let result: Result<JoinGroupResponse> = self
                        .link
                        .call_once("join_group", &self.join, self.request_timeout)
                        .await;
                    match result {
                        Ok(resp) => {
                            failures = 0;
                            last_answer = Instant::now();
                            apply_join(&mut self.shared.lock(), &resp);
                            self.shared.poll_wake.notify_one();
                        }
                        Err(err) => {
                            failures += 1;
                            tracing::debug!(group = %self.join.group, error = %err, "join failed");
                            if !err.is_retriable() {
                                self.shared.report(err);
                            }
                            self.pause(self.backoff.backoff(failures)).await;
                        }
                    }
                }
                Step::Heartbeat(request, member) => {
                    let sent = Instant::now();
                    // A frozen coordinator must not hold the member for long: after the
                    // held wait, at most a third of the session (then it asks again,
                    // maybe a new coordinator).
                    let session = self.shared.lock().session_timeout;
                    let timeout = Duration::from_millis(u64::from(request.wait_ms))
                        + self.request_timeout.min(session / 3);
                    let call = self.link.call_once::<_, GroupHeartbeatResponse>(
                        "heartbeat_group",
                        &request,
                        timeout,
                    );
                    let result = tokio::select! {
                        result = call => result,
                        // Owned partitions changed, or closing: send again at once.
                        () = self.shared.task_wake.notified() => continue,
                    };
                    match result {
                        Ok(resp) => {
                            failures = 0;
                            warned = false;
                            last_answer = Instant::now();
                            let changed = self.answered(&member, &resp);
                            if !changed && request.wait_ms > 0 {
                                // A held heartbeat answered early without news: keep
                                // the pace of one heartbeat per interval. (An answer to
                                // a wait-0 report is expected at once; the next, held
                                // heartbeat goes out right away, or the member would
                                // not hear of a rebalance for up to an interval.)
                                let interval = self.shared.lock().heartbeat_interval;
                                self.pause_until(sent + interval).await;
                            }
                        }
                        Err(err) if fences(&err) => {
                            self.shared.fenced(&member.id, err.to_string());
                        }
                        Err(err) => {
                            failures += 1;
                            if !err.is_retriable() {
                                self.shared.report(err);
                            } else if last_answer.elapsed() >= self.shared.lock().session_timeout
                                && !warned
                            {
                                warned = true;
                                tracing::warn!(
                                    group = %self.join.group,
                                    member = %member.id,
                                    error = %err,
                                    "no coordinator answered for a whole session; keeping the partitions until one does"
                                );
                            }
                            self.pause(self.backoff.backoff(failures)).await;
                        }
                    }
                }
            }
        }
    }

    fn next_step(&self) -> Step {
        let mut state = self.shared.lock();
        if state.closing {
            let member = state.member.take().or_else(|| state.abandoned.take());
            return Step::Leave(member);
        }
        match (&state.phase, &state.member) {
            (Phase::Fenced { .. }, _) => Step::WaitForPoll,
            (Phase::Rejoining, _) | (Phase::Joined, None) => Step::Join(state.abandoned.take()),
            (Phase::Joined, Some(member)) => {
                let member = member.clone();
                let wait = if state.owned_dirty {
                    Duration::ZERO
                } else {
                    state.heartbeat_interval
                };
                state.owned_dirty = false;
                let request = GroupHeartbeatRequest {
                    group: self.join.group.clone(),
                    member_id: member.id.clone(),
                    member_epoch: member.epoch,
                    owned: assignment::to_wire(&state.reported_owned()),
                    topics: None,
                    wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
                };
                Step::Heartbeat(request, member)
            }
        }
    }

    /// Apply a heartbeat answer; whether the assignment changed (the poll path woken).
    fn answered(&self, member: &Member, resp: &GroupHeartbeatResponse) -> bool {
        let changed = {
            let mut state = self.shared.lock();
            match &mut state.member {
                Some(current) if current.id == member.id => current.epoch = resp.member_epoch,
                _ => return false, // the poll path gave this member up meanwhile
            }
            state.heartbeat_interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms))
                .max(HEARTBEAT_INTERVAL_MIN);
            let target = assignment::from_wire(&resp.assignment);
            if target != state.target {
                state.target = target;
                state.generation += 1;
                true
            } else {
                false
            }
        };
        if changed {
            self.shared.poll_wake.notify_one();
        }
        changed
    }

    /// Leave the group, best effort, bounded by the request timeout.
    async fn leave(&mut self, member: Member) {
        let request = LeaveGroupRequest {
            group: self.join.group.clone(),
            member_id: member.id.clone(),
            member_epoch: member.epoch,
        };
        let policy = RetryPolicy {
            deadline: self.request_timeout,
            ..self.backoff
        };
        let result = tokio::time::timeout(
            self.request_timeout,
            self.link.call::<_, LeaveGroupResponse>(
                "leave_group",
                &request,
                self.request_timeout,
                policy,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out(self.request_timeout)));
        if let Err(err) = result {
            tracing::debug!(group = %self.join.group, member = %member.id, error = %err, "leave failed");
        }
    }

    /// Sleep, cut short by a wake-up (closing, owned partitions changed).
    async fn pause(&self, wait: Duration) {
        self.pause_until(Instant::now() + wait).await;
    }

    async fn pause_until(&self, until: Instant) {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = self.shared.task_wake.notified() => {}
        }
    }
}

/// Whether a heartbeat error means the membership is gone: fenced, or the group itself
/// is gone (deleted), which a new join recreates.
fn fences(err: &Error) -> bool {
    matches!(
        err.code(),
        Some(ErrorCode::FencedMember | ErrorCode::UnknownGroup)
    )
}
