//! The facade: [`RaftGroup`] (one replica of one group) and [`Registry`] (every group on
//! this node, by id). The node and `neo-cluster` call these; nothing outside this crate
//! names an openraft type.
//!
//! This file: opening a replica, the write path (proposals, acks), linearizable reads,
//! applied state, metrics and waits. `config` holds the timing and [`GroupConfig`],
//! `admin` membership changes and log purge, `inbound` the registry and the handling
//! of peers' RPCs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{
    BasicNode, Config, LinearizerOption, Raft, ReadPolicy, ServerState, SnapshotPolicy,
};
use qiss::batch::ValidatedBatch;
use tokio::sync::watch;

use crate::error::{Error, ReplicaFailure, Result};
use crate::log_store::{LogStore, NodeStore, OffsetAnchor, RECORD_BATCH_BYTES_MAX};
use crate::machine::StateMachine;
use crate::network::{NetworkFactory, Router, Transport};
use crate::state_machine::{AppliedState, GroupKind, GroupStateMachine};
use crate::types::{
    Applied, GroupId, LocalAck, LocalAckResult, NeoRaft, NodeId, Proposal, RecordBatch,
};

mod admin;
mod config;
mod inbound;

pub use config::{GroupConfig, RaftTiming};
pub use inbound::Registry;

/// A point-in-time view of a replica, for status pages, tests and leader balancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetrics {
    /// The group.
    pub group: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// Current term.
    pub term: u64,
    /// Role of this replica.
    pub role: Role,
    /// The leader this replica knows of.
    pub leader: Option<NodeId>,
    /// Index of the last entry in the local log.
    pub last_log_index: Option<u64>,
    /// Index of the last entry known committed.
    pub committed_index: Option<u64>,
    /// Index of the last applied entry.
    pub applied_index: Option<u64>,
    /// Index up to which the log was purged.
    pub purged_index: Option<u64>,
    /// Last index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Current voters.
    pub voters: BTreeSet<NodeId>,
    /// Current learners.
    pub learners: BTreeSet<NodeId>,
    /// Leader only (else empty): the voters that hold every committed entry (their
    /// matched index is at least the commit index), this leader included.
    pub in_sync: BTreeSet<NodeId>,
    /// Leader only: no quorum of voters has answered this leader for at least the
    /// leader lease, `election_max_ms` (see [`RaftGroup::quorum_lost`]). The rest of the group
    /// is electing, or has elected, another leader: clients should look elsewhere.
    pub quorum_lost: bool,
    /// Leader only (else empty): each other member's matched log index (`None`: nothing
    /// matched yet), from openraft's replication metrics.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

impl GroupMetrics {
    /// The leader a client should be sent to: `leader`, except when this replica leads
    /// but has lost contact with a quorum (then `None`: it cannot commit, and another
    /// leader is being elected).
    pub fn serving_leader(&self) -> Option<NodeId> {
        if self.quorum_lost { None } else { self.leader }
    }
}

/// The role of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leads the group.
    Leader,
    /// Follows a leader.
    Follower,
    /// Campaigning.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// Deadline of one whole snapshot transfer to a follower (every chunk, then the
/// install); an interrupted transfer resumes where it stopped at the next attempt.
pub const SNAPSHOT_TRANSFER_TIMEOUT_MS: u64 = 60_000;

/// Most entries in one AppendEntries request.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// Longest [`RaftGroup::ensure_linearizable`] waits, after the quorum confirmed the
/// term, for the log it held at the call to be applied (then `QuorumLost`: retriable).
const LINEARIZABLE_CATCH_UP: Duration = Duration::from_secs(5);

/// How long a linearizable read waits for a quorum to acknowledge a heartbeat round sent
/// after it began (ReadIndex). openraft's default is one leader lease
/// (`election_max_ms`: 0.75 s for partitions, 1 s for the metadata group since issue
/// #22), which a busy leader missed: broker/tests/groups.rs (10 000 joins at once, two
/// busy loops alongside) failed 2 of 4 runs with `NotCoordinator` with a 1 s wait, 0 of
/// 4 with this one, and failed in a CI rehearsal with the default. Waiting longer costs
/// no safety (the read still needs an acknowledgement newer than its start); a leader
/// that cannot get one in this time has lost its quorum and the caller looks elsewhere.
const READ_INDEX_WAIT: Duration = Duration::from_secs(3);

/// One replica of one Raft group.
pub struct RaftGroup {
    group: GroupId,
    node_id: NodeId,
    raft: Raft<NeoRaft, GroupStateMachine>,
    /// A handle on the log for reads (fetch, tests); openraft owns the writing one.
    log: LogStore,
    applied: watch::Receiver<AppliedState>,
    /// A leader that no quorum answered for this long has lost its quorum: the leader
    /// lease (`election_max_ms`), after which the followers may start electing another
    /// leader.
    quorum_loss_after: Duration,
}

fn role_of(state: ServerState) -> Role {
    match state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    }
}

/// See [`RaftGroup::quorum_lost`].
fn quorum_lost_in(m: &openraft::RaftMetrics<NeoRaft>, after: Duration) -> bool {
    m.state == ServerState::Leader
        && m.membership_config
            .membership()
            .voter_ids()
            .nth(1)
            .is_some()
        && m.last_quorum_acked
            .as_ref()
            .is_some_and(|acked| openraft::Instant::elapsed(&**acked) >= after)
}

fn fatal(group: GroupId, e: impl std::fmt::Display) -> Error {
    Error::Fatal {
        group,
        reason: e.to_string(),
    }
}

fn write_error(group: GroupId, e: RaftError<NeoRaft, ClientWriteError<NeoRaft>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
            group,
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => Error::NotLeader {
            group,
            leader: f.leader_id,
        },
        RaftError::APIError(e) => Error::Membership {
            group,
            reason: e.to_string(),
        },
        RaftError::Fatal(e) => fatal(group, e),
    }
}

/// Appends a record batch through Raft; returns its applied offset and count.
async fn write_records(
    raft: &Raft<NeoRaft, GroupStateMachine>,
    group: GroupId,
    mut batch: RecordBatch,
) -> Result<(u64, u32)> {
    let _pending = crate::stats::Pending::start();
    crate::stats::note_proposed();
    // A request whose phases are noted (slow-request logs) also learns when the
    // leader's own log made the batch durable: the log store fires a local ack then
    // (as for acks=leader); nothing waits for it beyond the write itself.
    let mut flushed = None;
    if crate::stats::tracking() && !batch.1.is_set() {
        let (ack, rx) = LocalAck::channel();
        batch.1 = ack;
        flushed = Some(rx);
    }
    let write = raft.client_write(Proposal::Records(batch));
    tokio::pin!(write);
    let resp = loop {
        // Biased, the flush first: the log store fires it before it reports the entry
        // durable to Raft, so by the time the write is answered it is already there.
        tokio::select! {
            biased;
            r = async { flushed.as_mut().expect("guarded").await }, if flushed.is_some() => {
                if matches!(r, Ok(Ok(_))) {
                    crate::stats::note_flushed();
                }
                flushed = None;
            }
            resp = &mut write => break resp,
        }
    };
    if let Some(mut rx) = flushed
        && matches!(rx.try_recv(), Ok(Ok(_)))
    {
        crate::stats::note_flushed();
    }
    let resp = resp.map_err(|e| write_error(group, e))?;
    crate::stats::note_done();
    match resp.data {
        Applied::Records {
            base_offset,
            record_count,
        } => Ok((base_offset, record_count)),
        other => Err(fatal(
            group,
            format!("record batch applied as {other:?}: not a partition group"),
        )),
    }
}

impl RaftGroup {
    /// Opens (or reopens, from its directory) a replica and starts its Raft. It serves
    /// RPCs once registered in a [`Registry`]; a brand-new group also needs
    /// [`RaftGroup::bootstrap`] on one node (or joins as a learner).
    ///
    /// `machine` is the group's application state (see [`StateMachine`]); it is fed
    /// every committed entry from the group's snapshot on.
    pub async fn open(
        cfg: GroupConfig,
        store: &NodeStore,
        transport: Arc<dyn Transport>,
        machine: Box<dyn StateMachine>,
    ) -> Result<Arc<Self>> {
        let dir = store.group_dir(cfg.group);
        let (snapshot_policy, keep) = match cfg.kind {
            GroupKind::Metadata => (
                SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_entries.max(1)),
                cfg.snapshot_every_entries,
            ),
            // The log is the data: never build snapshots (or purge) on openraft's
            // initiative; retention does it through `purge_upto`.
            GroupKind::Partition => (SnapshotPolicy::Never, u64::MAX / 2),
        };
        let config = Config {
            cluster_name: format!("neo-group-{}", cfg.group),
            heartbeat_interval: cfg.timing.heartbeat_ms,
            election_timeout_min: cfg.timing.election_min_ms,
            election_timeout_max: cfg.timing.election_max_ms,
            // A follower whose timer fires asks "would you vote for me?" first and only
            // then bumps its term: a follower that was starved or cut off alone cannot
            // depose a leader the others still hear (no spurious election, no term
            // inflation on heal). Costs one more round trip per real election.
            enable_pre_vote: Some(true),
            snapshot_policy,
            max_in_snapshot_log_to_keep: keep,
            // Bounds an AppendEntries request: at most this many entries of at most
            // RECORD_BATCH_BYTES_MAX each (neo-cluster sizes its gRPC limit from it).
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // openraft's default (200 ms) is the deadline of a whole snapshot transfer
            // (send + install), too short for any real metadata snapshot.
            install_snapshot_timeout: SNAPSHOT_TRANSFER_TIMEOUT_MS,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config {
            reason: e.to_string(),
        })?;
        // Opening reads the snapshot and scans (and checks) every batch of the log: disk
        // I/O that may take seconds, kept off the executor.
        let (group, kind, meta) = (cfg.group, cfg.kind, store.meta().clone());
        let options = store.log_options(cfg.encrypt_at_rest)?;
        let (sm, log) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::storage("group directory", "create", e))?;
            let anchor = OffsetAnchor::default();
            let sm = GroupStateMachine::open(kind, Some(&dir), anchor.clone(), machine)
                .map_err(|e| Error::storage("snapshot", "open", e))?;
            let log = LogStore::open(&dir.join("log"), group, kind, meta, anchor, options)?;
            Ok::<_, Error>((sm, log))
        })
        .await
        .map_err(|e| Error::storage("replica", "open", e))??;
        let applied = sm.applied_rx();
        let network = NetworkFactory {
            router: Router::new(transport, cfg.node_id),
            group: cfg.group,
        };
        let log_handle = log.clone();
        let raft = Raft::new(cfg.node_id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| fatal(cfg.group, e))?;
        // Counts leader changes and elections as they happen; ends with the Raft.
        tokio::spawn(crate::stats::watch_transitions(raft.server_metrics()));
        Ok(Arc::new(RaftGroup {
            group: cfg.group,
            node_id: cfg.node_id,
            raft,
            log: log_handle,
            applied,
            // The leader lease: no follower votes for another leader before it has
            // passed, so stepping aside sooner gains nothing, and waiting this long
            // rides out a loaded machine's hiccups (2.5 heartbeats for partitions).
            quorum_loss_after: Duration::from_millis(cfg.timing.election_max_ms),
        }))
    }

    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.group
    }

    /// Makes `members` (node id → gRPC address) the group's first voters. Idempotent
    /// across restarts: a replica that already has state keeps it and returns `Ok`.
    pub async fn bootstrap(&self, members: &BTreeMap<NodeId, String>) -> Result<()> {
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| fatal(self.group, e))?
        {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Another bootstrapper (or a previous run) got there first.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Membership {
                group: self.group,
                reason: e.to_string(),
            }),
        }
    }

    /// Proposes a record batch to a partition group; returns once a quorum has it on
    /// disk and it is applied, with the offset of its first record and its record count.
    ///
    /// Every batch proposed is stored: deduplication of idempotent producers' retries is
    /// the broker's (it consults its producer table before it proposes).
    pub async fn propose_records(&self, batch: ValidatedBatch) -> Result<(u64, u32)> {
        self.propose(batch, false).await
    }

    /// `acks=leader`: like [`RaftGroup::propose_records`] (the same checks, and the
    /// batch goes on to commit as usual), but answers as soon as this leader's own log
    /// holds the batch durably (after its `fdatasync`, or once written with `--fsync
    /// interval`), before any follower has it. A batch acknowledged this way is lost if
    /// this leader fails before a quorum stores it (its entry is then truncated by the
    /// next leader): the trade `acks=leader` makes for latency. A leader that steps down
    /// before appending the batch answers `NotLeader`.
    pub async fn propose_records_leader_ack(&self, batch: ValidatedBatch) -> Result<(u64, u32)> {
        self.propose(batch, true).await
    }

    async fn propose(&self, batch: ValidatedBatch, leader_ack: bool) -> Result<(u64, u32)> {
        // The wait for the commit or the local flush ends if this leader loses its
        // quorum meanwhile.
        if !leader_ack {
            return self
                .bounded_by_quorum(self.propose_batch(batch, LocalAck::default()))
                .await;
        }
        Self::check_record_batch(&batch)?;
        let batch = batch.into_bytes();
        self.check_quorum()?;
        self.bounded_by_quorum(async {
            let (ack, local) = LocalAck::channel();
            self.ensure_leader()?;
            let _pending = crate::stats::Pending::start();
            crate::stats::note_proposed();
            // The entry goes on to commit inside Raft; this caller answers at the
            // local flush.
            self.raft
                .client_write_ff(Proposal::Records(RecordBatch(batch, ack)), None)
                .await
                .map_err(|e| fatal(self.group, e))?;
            let acked = self.local_ack(local).await;
            if acked.is_ok() {
                crate::stats::note_flushed();
            }
            crate::stats::note_done();
            acked
        })
        .await
    }

    /// Proposes a record batch and waits until it is committed and applied (not
    /// bounded by [`RaftGroup::bounded_by_quorum`]: a caller that must not cut a write
    /// short, e.g. one whose in-flight entry retries wait on, runs this in its own task).
    /// `ack` (if set) fires once this leader's own log holds the batch durably (wait on
    /// it with [`RaftGroup::local_ack`]).
    pub async fn propose_batch(&self, batch: ValidatedBatch, ack: LocalAck) -> Result<(u64, u32)> {
        Self::check_record_batch(&batch)?;
        self.check_quorum()?;
        write_records(&self.raft, self.group, RecordBatch(batch.into_bytes(), ack)).await
    }

    /// `Ok` if this replica leads, else `NotLeader` with the leader it knows of.
    pub fn ensure_leader(&self) -> Result<()> {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                group: self.group,
                leader: m.current_leader,
            })
        }
    }

    /// This replica's role, current term and the leader it knows of, read without
    /// copying the whole metrics (the produce path asks on every batch).
    pub fn leadership(&self) -> (Role, u64, Option<NodeId>) {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        (role_of(m.state), m.current_term, m.current_leader)
    }

    /// Waits for the log store to report a proposed batch durable in the local log (the
    /// receiver of the [`LocalAck`] the batch carries).
    pub async fn local_ack(
        &self,
        local: tokio::sync::oneshot::Receiver<LocalAckResult>,
    ) -> Result<(u64, u32)> {
        match local.await {
            Ok(Ok(offsets)) => Ok(offsets),
            // The local flush failed, or the entry was cut before it was synced (this
            // leader lost its leadership): not stored here.
            Ok(Err(reason)) => Err(Error::storage("log", "append", reason)),
            // Dropped without being appended: leadership ended before the append.
            Err(_) => Err(self.ensure_leader().err().unwrap_or(Error::NotLeader {
                group: self.group,
                leader: None,
            })),
        }
    }

    /// What a partition group accepts as a proposal: a batch validated on receipt (its
    /// CRC is not computed again, here or by the log store) within
    /// [`RECORD_BATCH_BYTES_MAX`] that is not a control batch.
    fn check_record_batch(batch: &ValidatedBatch) -> Result<qiss::batch::BatchHeader> {
        if batch.len() > RECORD_BATCH_BYTES_MAX {
            return Err(Error::BatchTooLarge {
                size: batch.len(),
                max: RECORD_BATCH_BYTES_MAX,
            });
        }
        let h = *batch.header();
        if h.is_control() {
            return Err(Error::ControlBatch);
        }
        Ok(h)
    }

    /// Fire and forget: hands a record batch to this replica's Raft, which must lead,
    /// and returns once the Raft core has queued it, before it is written anywhere
    /// (`acks=none`). The outcome is never reported: the batch may be lost (leadership
    /// lost, crash) and its offset is not known to the caller.
    pub async fn propose_records_ff(&self, batch: ValidatedBatch) -> Result<()> {
        Self::check_record_batch(&batch)?;
        self.check_quorum()?;
        self.ensure_leader()?;
        self.raft
            .client_write_ff(
                Proposal::Records(RecordBatch::new(batch.into_bytes())),
                None,
            )
            .await
            .map_err(|e| fatal(self.group, e))
    }

    /// Proposes a command for the group's [`StateMachine`] (encoded by the caller);
    /// returns the machine's encoded answer once the command is committed and applied.
    pub async fn propose_command(&self, command: Bytes) -> Result<Bytes> {
        self.check_quorum()?;
        let resp = self
            .bounded_by_quorum(async {
                let _pending = crate::stats::Pending::start();
                self.raft
                    .client_write(Proposal::Command(command))
                    .await
                    .map_err(|e| write_error(self.group, e))
            })
            .await?;
        match resp.data {
            Applied::Command(answer) => Ok(answer),
            other => Err(fatal(self.group, format!("command applied as {other:?}"))),
        }
    }

    /// Waits until this replica is the leader of a quorum-confirmed term and has applied
    /// everything committed before the call (ReadIndex): reads that follow are
    /// linearizable.
    ///
    /// openraft's ReadIndex is the later of the leader's commit index and the first entry
    /// of its term. A leader killed and restarted before another was elected resumes its
    /// term (leader restore) and writes no new first entry, and the commit index it read
    /// back may be behind what it had committed and answered before the kill (it is saved
    /// without a flush): ReadIndex alone would let it answer from a state missing those
    /// writes. So this also waits until everything the log held at the call is applied
    /// (on a busy leader: its writes in flight at the call, one commit round at most).
    pub async fn ensure_linearizable(&self) -> Result<()> {
        let last = self.metrics().last_log_index;
        self.read_index().await?;
        let m = self
            .wait_until(LINEARIZABLE_CATCH_UP, "the log applied", |m| {
                m.role != Role::Leader || m.applied_index >= last
            })
            .await
            .map_err(|e| {
                tracing::debug!(group = self.group, "linearizable read: {e}");
                Error::QuorumLost {
                    group: self.group,
                    written: false,
                }
            })?;
        if m.role != Role::Leader {
            return Err(Error::NotLeader {
                group: self.group,
                leader: m.leader,
            });
        }
        Ok(())
    }

    async fn read_index(&self) -> Result<()> {
        let option =
            LinearizerOption::from(ReadPolicy::ReadIndex).with_wait_timeout(READ_INDEX_WAIT);
        match self.raft.ensure_linearizable(option).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(Error::NotLeader {
                    group: self.group,
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(Error::NotLeader {
                group: self.group,
                leader: None,
            })
            .inspect_err(|_| tracing::debug!(group = self.group, "linearizable read: {e}")),
            Err(RaftError::Fatal(e)) => Err(fatal(self.group, e)),
        }
    }

    /// Waits (at most `timeout`) until this replica has applied everything the current
    /// term's leader reported committed, and that commit is of the current term (so it
    /// covers every entry committed before the term began: a replica that just
    /// restarted, or just rejoined, has seen them all). A leader asks a quorum
    /// ([`RaftGroup::ensure_linearizable`]). `Ok(false)`: not caught up in time (no
    /// leader, or still replaying).
    pub async fn caught_up_in_term(&self, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.metrics().role == Role::Leader {
            return match tokio::time::timeout_at(deadline, self.ensure_linearizable()).await {
                Ok(Ok(())) => Ok(true),
                Ok(Err(Error::NotLeader { .. })) | Err(_) => Ok(false),
                Ok(Err(e)) => Err(e),
            };
        }
        let mut rx = self.raft.metrics();
        loop {
            let caught_up = {
                let m = rx.borrow_watched();
                m.current_leader.is_some()
                    && m.cluster_committed.is_some_and(|c| {
                        c.leader_id.term == m.current_term
                            && m.last_applied.is_some_and(|a| a.index >= c.index)
                    })
            };
            if caught_up {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(fatal(self.group, "metrics channel closed")),
                Err(_) => return Ok(false),
            }
        }
    }

    /// What this replica has applied: last applied index and the partition's high
    /// watermark (`next_offset`).
    pub fn applied(&self) -> AppliedState {
        self.applied.borrow().clone()
    }

    /// A receiver of the applied state: it changes after every applied chunk of entries
    /// (long polling waits on it for the high watermark to move).
    pub fn applied_watch(&self) -> watch::Receiver<AppliedState> {
        self.applied.clone()
    }

    /// Whether this replica's log stopped on a full disk: after an [`Error::Fatal`]
    /// (openraft keeps only the text of a storage error), what tells "storage full"
    /// from other failures.
    pub fn storage_full(&self) -> bool {
        self.log.storage_full()
    }

    /// Why this replica stopped, if it did: its segment log failed (a write or an
    /// `fdatasync` returned an error; the log refuses work from then on) or its Raft core
    /// exited on a fatal error. A stopped replica acknowledges nothing, so it is never
    /// counted in a quorum; the node recovers it by closing and reopening it (the log
    /// then restarts from its last successful sync, see `neo_storage`'s salvage) and the
    /// leader sends it what it lacks.
    pub fn failure(&self) -> Option<ReplicaFailure> {
        if let Some(e) = self.log.failure() {
            return Some(ReplicaFailure::Log(e));
        }
        match &self.raft.metrics().borrow_watched().running_state {
            Ok(()) => None,
            Err(fatal) => Some(ReplicaFailure::Raft(fatal.clone())),
        }
    }

    /// Bytes the replica's segment log holds on disk (every segment, committed or not).
    pub fn log_size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Segment files of the replica's log.
    pub fn log_segments(&self) -> usize {
        self.log.segments()
    }

    /// Reads whole stored batches (entries, including control batches) from the one
    /// holding `offset`, up to `max_bytes` (at least one batch); returns them with the
    /// offset where the next read continues. Uncommitted entries are included: bound
    /// reads by [`AppliedState::next_offset`] for consumers.
    ///
    /// The `pread` runs on tokio's blocking pool, not on the caller's executor thread.
    pub async fn read_log(&self, offset: u64, max_bytes: usize) -> Result<(Bytes, u64)> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.read_raw(offset, max_bytes))
            .await
            .map_err(|e| Error::storage("log", "read", e))?
    }

    /// [`RaftGroup::read_log`] on the calling thread, for callers already on a thread
    /// that may block (a `spawn_blocking` closure).
    pub fn read_log_blocking(&self, offset: u64, max_bytes: usize) -> Result<(Bytes, u64)> {
        self.log.read_raw(offset, max_bytes)
    }

    /// The `[start, next)` record offsets the local log holds.
    pub fn log_offsets(&self) -> (u64, u64) {
        self.log.offsets()
    }

    /// A snapshot of the replica's Raft metrics.
    pub fn metrics(&self) -> GroupMetrics {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = role_of(m.state);
        let membership = m.membership_config.membership();
        let committed = m.local_committed.map(|l| l.index);
        let in_sync = match (&m.replication, role) {
            (Some(replication), Role::Leader) => membership
                .voter_ids()
                .filter(|id| {
                    *id == self.node_id
                        || replication
                            .get(id)
                            .is_some_and(|matched| matched.map(|l| l.index) >= committed)
                })
                .collect(),
            _ => BTreeSet::new(),
        };
        GroupMetrics {
            group: self.group,
            node_id: self.node_id,
            term: m.current_term,
            role,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            in_sync,
            quorum_lost: quorum_lost_in(&m, self.quorum_loss_after),
            matched: match (&m.replication, role) {
                (Some(replication), Role::Leader) => replication
                    .iter()
                    .filter(|(id, _)| **id != self.node_id)
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                    .collect(),
                _ => BTreeMap::new(),
            },
        }
    }

    /// Whether this replica leads a group of more than one voter and no quorum of them
    /// has acknowledged anything it sent for at least the leader lease, `election_max_ms`
    /// (openraft's `last_quorum_acked`, advanced by every heartbeat and append answer).
    /// Such a leader cannot commit, and the followers it lost are electing a new
    /// leader, so it refuses new writes (`QuorumLost`) and stops answering the writes
    /// it is waiting on, instead of holding them until their timeouts; metadata gives
    /// no leader for its groups (see [`GroupMetrics::serving_leader`]). openraft itself
    /// keeps it leader until it hears of a higher term (there is no check-quorum step
    /// down), so this is Neo's check, made at every write and every ~quarter of the
    /// timeout while a write waits.
    pub fn quorum_lost(&self) -> bool {
        quorum_lost_in(
            &self.raft.metrics().borrow_watched(),
            self.quorum_loss_after,
        )
    }

    /// `Err(QuorumLost)` (nothing written) if [`RaftGroup::quorum_lost`].
    pub fn check_quorum(&self) -> Result<()> {
        if self.quorum_lost() {
            Err(Error::QuorumLost {
                group: self.group,
                written: false,
            })
        } else {
            Ok(())
        }
    }

    /// Waits for a write's outcome, or until this leader loses its quorum (then
    /// `QuorumLost` with `written`: the entry may be in this leader's log and may still
    /// commit, if this leader is heard from again before another is elected, or if the
    /// next leader holds it; a write that had not reached Raft yet is simply dropped).
    pub async fn bounded_by_quorum<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        let tick = (self.quorum_loss_after / 4).max(Duration::from_millis(20));
        let lost = async {
            loop {
                tokio::time::sleep(tick).await;
                if self.quorum_lost() {
                    return;
                }
            }
        };
        tokio::select! {
            r = write => r,
            () = lost => Err(Error::QuorumLost {
                group: self.group,
                written: true,
            }),
        }
    }

    /// Waits until `pred` holds for this replica's metrics, or `timeout` passes (then
    /// returns the last metrics seen as the error's text).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&GroupMetrics) -> bool,
    ) -> Result<GroupMetrics> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return Ok(m);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(fatal(self.group, "metrics channel closed")),
                Err(_) => {
                    return Err(Error::Fatal {
                        group: self.group,
                        reason: format!("timed out waiting for {what}; last metrics: {m:?}"),
                    });
                }
            }
        }
    }

    /// Stops the replica's Raft; pending writes fail. Files stay for a reopen.
    pub async fn shutdown(&self) -> Result<()> {
        self.raft.shutdown().await.map_err(|e| fatal(self.group, e))
    }
}
