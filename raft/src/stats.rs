//! Process-wide Raft statistics ([`stats`]): leader changes and elections counted as
//! they happen (one watcher task per group follows its openraft server-metrics
//! channel, which changes only with votes, states and leaders: a change of leader, a
//! vote for itself in a newer term),
//! proposals in flight (a guard around every client write), whole snapshots sent (the
//! network adapter). The node reads them when `/metrics` is scraped. Also the phases of
//! one task's proposals ([`with_phases`]), for slow-request logs.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::type_config::alias::WatchReceiverOf;

use crate::types::{NeoRaft, NodeId};

/// Counters of every group hosted in this process.
#[derive(Debug, Default)]
pub struct RaftStats {
    leader_changes: AtomicU64,
    elections_started: AtomicU64,
    proposals_pending: AtomicI64,
    snapshots_sent: AtomicU64,
}

impl RaftStats {
    /// Times a group hosted here saw its leader change (to another node, or to none).
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// Elections this node started (a replica here became a candidate).
    pub fn elections_started(&self) -> u64 {
        self.elections_started.load(Ordering::Relaxed)
    }

    /// Proposals (client writes: record batches and commands) submitted to a group's
    /// Raft here and not answered yet.
    pub fn proposals_pending(&self) -> u64 {
        u64::try_from(self.proposals_pending.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Whole snapshots this node sent to a follower (successfully or not).
    pub fn snapshots_sent(&self) -> u64 {
        self.snapshots_sent.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot_sent(&self) {
        self.snapshots_sent.fetch_add(1, Ordering::Relaxed);
    }
}

static STATS: RaftStats = RaftStats {
    leader_changes: AtomicU64::new(0),
    elections_started: AtomicU64::new(0),
    proposals_pending: AtomicI64::new(0),
    snapshots_sent: AtomicU64::new(0),
};

/// The Raft statistics of this process.
pub fn stats() -> &'static RaftStats {
    &STATS
}

/// Counts one proposal in flight while it lives (dropped when the write is answered,
/// or when its caller gives up on it).
pub(crate) struct Pending(());

impl Pending {
    pub(crate) fn start() -> Pending {
        STATS.proposals_pending.fetch_add(1, Ordering::Relaxed);
        Pending(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        STATS.proposals_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a record batch proposed by the calling task reached Raft and when Raft was done
/// with it ([`with_phases`]): the middle phases of a slow produce's log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProposePhases {
    /// The batch was handed to the group's Raft (first proposal of the task).
    pub proposed: Option<Instant>,
    /// The batch was durable in the leader's own log (its `fdatasync`, or its write
    /// under `--fsync interval`); the followers' syncs are part of `done`.
    pub flushed: Option<Instant>,
    /// Raft answered: committed by a quorum and applied (`acks=all`), or durable in the
    /// leader's log (`acks=leader`); openraft answers a write once applied, so the
    /// commit is not told apart from the apply.
    pub done: Option<Instant>,
}

/// The phases one request's tasks note (shared with the tasks it spawns through
/// [`inherit_phases`]).
type SharedPhases = Arc<Mutex<ProposePhases>>;

tokio::task_local! {
    static PHASES: SharedPhases;
}

/// Runs `f`, noting when the record batches it proposes (on this task, or on a task
/// spawned with [`inherit_phases`]) reach Raft and are answered.
pub async fn with_phases<F: Future>(f: F) -> (F::Output, ProposePhases) {
    let phases = SharedPhases::default();
    let out = PHASES.scope(phases.clone(), f).await;
    let seen = *phases.lock().unwrap_or_else(PoisonError::into_inner);
    (out, seen)
}

/// `f`, noting its proposals in the phases of the calling task's [`with_phases`] (if
/// any): wrap a future handed to `tokio::spawn` with it.
pub fn inherit_phases<F: Future>(f: F) -> impl Future<Output = F::Output> {
    let phases = PHASES.try_with(Arc::clone).ok();
    async move {
        match phases {
            Some(p) => PHASES.scope(p, f).await,
            None => f.await,
        }
    }
}

fn note(update: impl FnOnce(&mut ProposePhases)) {
    let _ = PHASES.try_with(|p| update(&mut p.lock().unwrap_or_else(PoisonError::into_inner)));
}

/// Notes that this task proposes a batch now (outside [`with_phases`]: nothing).
pub(crate) fn note_proposed() {
    note(|p| {
        p.proposed.get_or_insert_with(Instant::now);
    });
}

/// Whether the calling task runs inside [`with_phases`] (a proposal then asks for the
/// leader's flush to be noted as well).
pub(crate) fn tracking() -> bool {
    PHASES.try_with(|_| ()).is_ok()
}

/// Notes that the leader's log made this task's batch durable now (the first time).
pub(crate) fn note_flushed() {
    note(|p| {
        p.flushed.get_or_insert_with(Instant::now);
    });
}

/// Notes that Raft answered this task's proposal now.
pub(crate) fn note_done() {
    note(|p| p.done = Some(Instant::now()));
}

/// What the watcher remembers of a replica between two metrics updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) leader: Option<NodeId>,
    /// Term of the replica's vote.
    pub(crate) vote_term: u64,
    /// Whether that vote is for this node itself.
    pub(crate) voted_self: bool,
}

/// Counts the transitions from `before` to `now`: a leader change (a different leader,
/// or none); an election started: a vote for itself in a newer term (what a candidate
/// does first; pre-votes change no vote). Votes, not the `Candidate` state, are
/// compared: a short candidacy may start and end between two metrics updates (a single
/// voter elects itself at once), its vote stays.
pub(crate) fn count_transition(stats: &RaftStats, before: Seen, now: Seen) {
    if now.leader != before.leader {
        stats.leader_changes.fetch_add(1, Ordering::Relaxed);
    }
    if now.voted_self && now.vote_term > before.vote_term {
        stats.elections_started.fetch_add(1, Ordering::Relaxed);
    }
}

/// Follows one replica's server metrics (vote, state, leader, membership: openraft
/// sends them only when one of those changed, never per appended or applied entry, so
/// this task wakes on elections, not on writes) until its Raft stops (the channel
/// closes), counting transitions into [`stats`]. The first value is the starting
/// point, not a change.
pub(crate) async fn watch_transitions(
    mut rx: WatchReceiverOf<NeoRaft, openraft::metrics::RaftServerMetrics<NeoRaft>>,
) {
    let seen =
        |rx: &mut WatchReceiverOf<NeoRaft, openraft::metrics::RaftServerMetrics<NeoRaft>>| {
            let m = rx.borrow_and_update();
            let vote = m.vote.leader_id();
            Seen {
                leader: m.current_leader,
                vote_term: vote.term,
                voted_self: vote.voted_for == m.id,
            }
        };
    let mut before = seen(&mut rx);
    while rx.changed().await.is_ok() {
        let now = seen(&mut rx);
        if now != before {
            count_transition(&STATS, before, now);
            before = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_are_noted_inside_the_scope_only() {
        note_proposed();
        let now = || PHASES.with(|p| *p.lock().unwrap());
        let ((), p) = with_phases(async {
            note_proposed();
            let first = now().proposed;
            note_proposed();
            assert_eq!(now().proposed, first, "the first one stays");
            // A spawned task notes into the same phases when it inherits them.
            tokio::spawn(inherit_phases(async { note_done() }))
                .await
                .unwrap();
        })
        .await;
        assert!(p.proposed.is_some() && p.done.is_some());
        assert!(p.done >= p.proposed);
        let ((), p) = with_phases(async {
            tokio::spawn(async { note_proposed() }).await.unwrap();
        })
        .await;
        assert_eq!(p, ProposePhases::default(), "not inherited: not noted");
    }

    #[test]
    fn transitions_are_counted_once_each() {
        let s = RaftStats::default();
        // This node is 3: a follower of 1 in term 1, a candidate in term 2 (1 gone), then
        // a follower of 2, which won term 3.
        let follower = |leader, vote_term| Seen {
            leader,
            vote_term,
            voted_self: false,
        };
        let candidate = Seen {
            leader: None,
            vote_term: 2,
            voted_self: true,
        };
        count_transition(&s, follower(Some(1), 1), follower(Some(1), 1));
        assert_eq!((s.leader_changes(), s.elections_started()), (0, 0));
        count_transition(&s, follower(Some(1), 1), candidate);
        assert_eq!((s.leader_changes(), s.elections_started()), (1, 1));
        count_transition(&s, candidate, candidate);
        assert_eq!((s.leader_changes(), s.elections_started()), (1, 1));
        count_transition(&s, candidate, follower(Some(2), 3));
        assert_eq!((s.leader_changes(), s.elections_started()), (2, 1));
        // A single voter elects itself between two updates: leader and vote change.
        let leader_self = Seen {
            leader: Some(3),
            vote_term: 4,
            voted_self: true,
        };
        count_transition(&s, follower(Some(2), 3), leader_self);
        assert_eq!((s.leader_changes(), s.elections_started()), (3, 2));
    }
}
