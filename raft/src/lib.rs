//! `neo-raft`: all of Neo's openraft glue, and the only crate that names openraft types.
//!
//! openraft is pinned to `=0.10.0-alpha.37` (with `openraft-multi`): it batches client
//! writes, flushes the log asynchronously and pipelines appends. Everything else in Neo
//! talks to the facade below, so an openraft upgrade touches this crate only.
//!
//! This crate is consensus glue: it replicates a group's log and drives the group's
//! application state through the [`StateMachine`] trait. What that state is (topic
//! metadata, idempotent producers, committed offsets, queue deliveries) and every
//! decision about it belong to `neo-broker`, which depends on this crate (never the
//! reverse).
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `types` | the openraft type config (`declare_raft_types!`: `NodeId = u64`, the standard term-only committed leader id, so a log id is `(term, index)`), [`Proposal`] (a record batch or an opaque command) and [`Applied`] |
//! | `machine` | the [`StateMachine`] trait a group's application state implements ([`EntryId`], [`AppliedBatch`]; [`LogOnly`] keeps nothing) |
//! | `codec` | Qiss codec for RPC bodies and snapshots; entry ⇄ record batch (user batch stamped, or a control batch holding the Qiss-encoded payload) |
//! | `log_index` | the sparse index from Raft index to stored batch (an anchor per segment start and every 32 entries or 32 KiB), rebuilt at open by a CRC-checked scan that cuts damage away |
//! | `log_store` | [`NodeStore`] (node's sled metadata store + one directory per group, with the node's [`Durability`]) and the openraft log store on `neo-storage`'s segment log: the partition log *is* the Raft log |
//! | `state_machine` | openraft's state machine for both kinds of group ([`GroupKind`]): offsets, last applied, membership, snapshots (offsets + the application machine's image), around the group's [`StateMachine`] |
//! | `network` | the [`Transport`] trait `neo-cluster` implements (opaque bodies, group id per RPC) and its adapter to openraft-multi's `GroupRouter` |
//! | `forward` | [`forward_records`]: a record batch appended at a group's leader from any node (local proposal when the local replica leads, else [`RpcKind::ForwardRecords`] to a replica, following `NotLeader` hints, one deadline, at-least-once); the leader side of that RPC; [`ForwardError`] (the typed wire answer), [`ForwardRecordsError`] |
//! | `group` | the facade: [`RaftGroup`] (propose record batches: quorum, leader-local or fire-and-forget; propose commands; linearizable reads, applied watch, log reads, metrics (with followers' matched indexes), quorum checks; `group/admin`: leader transfer, membership, purge; `group/config`: [`RaftTiming`], [`GroupConfig`]) and [`Registry`] (`group/inbound`: groups by id, RPC dispatch); a stopped replica says why with [`ReplicaFailure`] |
//! | `error` | the one [`Error`] enum |
//! | `stats` | process-wide [`stats`]: leader changes and elections started (a watcher task per group on its openraft server metrics: votes, states, leaders), proposals in flight, whole snapshots sent; read by the node's `/metrics`; [`with_phases`]: when one task's proposals reached Raft, were durable in the leader's log and were answered (slow-produce logs) |
//!
//! # Request flow
//!
//! ```text
//! broker ── RaftGroup::propose_records(ValidatedBatch) ──► openraft client_write (batched)
//!   leader: LogStore::append ─► SegmentLog::append_stamped_at, inline on Raft's core task
//!           (offset + term/index stamped in a copy of the header; the body written from
//!           the frame's bytes)
//!           └─ IOFlushed fires from the storage flusher after fdatasync (group commit)
//!   Router (GroupRouter) ─► Transport::send(target, group, AppendEntries, qiss bytes)
//!           ─► neo-cluster gRPC ─► peer Registry::handle ─► follower's Raft ─► its LogStore
//!   quorum flushed ─► committed ─► GroupStateMachine::apply (offsets) ─► StateMachine::apply_records
//!           ─► Applied::Records{base_offset}
//! broker ── RaftGroup::propose_command(bytes) ─► ... committed ─► StateMachine::apply_command
//!           ─► Applied::Command(answer bytes)
//! broker ── forward_records(batch) ─► local replica leads? propose_records
//!           else Transport::send(replica, group, ForwardRecords) ─► its Registry::handle
//!           ─► NotLeader{hint} (followed) | leader: check, propose_records ─► (base, count)
//! ```
//!
//! # Invariants
//!
//! - No `fdatasync` runs on an executor thread: log syncs run on storage's flusher
//!   thread, the vote's sled flush and [`RaftGroup::read_log`]'s `pread` on tokio's
//!   blocking pool. Log appends (`pwrite` to the page cache) stay inline on Raft's core
//!   task: moving them to the blocking pool measured slower (docs/BENCHMARKS.md); a
//!   segment roll (two syncs) is the one slow step left there.
//! - Nothing is reported durable before `fdatasync` returns: the log store hands
//!   openraft's `IOFlushed` to `SegmentLog::notify_durable`; the vote is flushed to sled
//!   before `save_vote` returns. The one exception is asked for explicitly:
//!   [`Durability::IntervalMs`] reports entries flushed once written to the OS and syncs
//!   on a timer (its loss window is documented on the variant and in docs/node.md).
//! - Every replica feeds its [`StateMachine`] the same entries in the same order, from
//!   the same snapshot image: the machine must be deterministic.
//! - A record batch's CRC is checked once per replica, on receipt: the leader's broker
//!   validates it (`propose_records*` take a `qiss::batch::ValidatedBatch`), a follower
//!   when it decodes the AppendEntries carrying it ([`RecordBatch`]'s `Deserialize`). The
//!   log store, the segment log and the read-back openraft applies from trust that
//!   (the stamps are outside the CRC); control batches are checked when read back.
//! - Producers never write control batches: a proposed batch with attribute bit 3 is
//!   refused ([`Error::ControlBatch`]), since the log store decodes control batches as
//!   Raft entries.
//! - A forwarded batch ([`forward_records`]) passes the produce path's checks on the
//!   sender and again on the leader, and carries no idempotent producer's stamp
//!   ([`Error::StampedBatch`]): nothing here deduplicates it. Its delivery is at least
//!   once (a write whose answer was lost may have committed and is sent again), so its
//!   callers tolerate duplicates.
//! - Entry `i`'s batch starts at the record offset that follows entry `i - 1`'s, on every
//!   replica: the state machine and the log store compute the same offsets
//!   independently, and followers hold byte-identical batches. In a partition a control
//!   entry (blank, membership) is a zero-width control batch that takes no offset, so
//!   record offsets are dense from 0; in the metadata group each entry takes one.
//! - A log id is recovered from the batch's `term`/`log_index` stamps; the index map
//!   (Raft index → term, base offset and storage position) is rebuilt from them at open.
//!   That open checks every batch's header and CRC: a damaged log is cut at its first bad
//!   batch (`neo_storage::cut_damaged`, what followed kept in `quarantine/`) and the
//!   leader sends the rest; a saved commit index past the log's end is lowered to it.
//! - A replica whose log failed (write or `fdatasync` error) or whose Raft core exited
//!   acknowledges nothing more; [`RaftGroup::failure`] says so and the node reopens it
//!   (the log then restarts from its last successful sync).
//!   The Raft-index-to-offset mapping never leaves this crate.
//! - Partition groups never snapshot or purge on openraft's initiative: their log is
//!   their data; retention calls [`RaftGroup::apply_retention`] (which plans the cut on
//!   segment boundaries, never past the applied index nor into the active segment, and
//!   purges through [`RaftGroup::purge_upto`]). A snapshot is the next offset plus the
//!   application machine's image (for a partition, small state kept beside the log;
//!   for the metadata group, all of it).
//! - A leader of more than one voter that no quorum has answered for the minimum
//!   election timeout takes no new write and stops waiting on the ones in its log
//!   ([`Error::QuorumLost`]), and names no leader ([`GroupMetrics::serving_leader`]):
//!   openraft has no check-quorum step-down, so [`RaftGroup::quorum_lost`] is Neo's.
//! - Only this crate depends on openraft.
//!
//! # Planned (not built yet)
//!
//! - A per-group writer thread for log appends (with reads of not-yet-written entries
//!   served from memory), if segment rolls show up in latency: `spawn_blocking` per
//!   append cost more than it saved.
//! - A persisted checkpoint of the index map, so that open does not scan the whole log.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod error;
mod forward;
mod group;
mod log_index;
mod log_store;
mod machine;
mod network;
mod state_machine;
mod stats;
mod types;

pub use error::{Error, ReplicaFailure, Result};
pub use forward::{
    FORWARD_WAIT_MS_MAX, ForwardAttemptError, ForwardError, ForwardRecordsError, forward_records,
};
pub use group::{
    GroupConfig, GroupMetrics, MAX_PAYLOAD_ENTRIES, RaftGroup, RaftTiming, Registry, Role,
    SNAPSHOT_TRANSFER_TIMEOUT_MS,
};
pub use log_index::damaged_logs_cut;
pub use log_store::{
    Durability, NodeStore, RECORD_BATCH_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
pub use machine::{AppliedBatch, EntryId, LogOnly, StateMachine};
/// The node key for encryption at rest of group logs ([`NodeStore::with_at_rest_key`],
/// [`GroupConfig::encrypt_at_rest`]).
pub use neo_storage::{AtRestKey, StorageFull};
pub use network::{NoPeers, RpcKind, Transport, TransportError};
pub use state_machine::{AppliedState, GroupKind};
pub use stats::{ProposePhases, RaftStats, inherit_phases, stats, with_phases};
pub use types::{
    Applied, GroupId, LocalAck, LocalAckResult, METADATA_GROUP, NodeId, Proposal, RecordBatch,
};
