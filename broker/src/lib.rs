//! `neo-broker`: the broker's domain, between consensus (`neo-raft`) and wiring
//! (`neo-node`).
//!
//! Everything a broker decides lives here: the state its Raft groups replicate (as pure
//! state machines that never see an openraft type and do no I/O), where replicas go,
//! and one [`Broker`] value with one method per operation, each taking the request's
//! [`SecurityContext`]. `neo-raft` only replicates logs and drives the machines through
//! its `StateMachine` trait; `neo-node` only wires ports, transport, config and HTTP
//! to the [`Broker`].
//!
//! # Dependency graph
//!
//! ```text
//! qiss ◄── neo-protocol ◄──────────────┐
//!   ▲                                  │
//! neo-storage ◄── neo-raft ◄── neo-broker ◄── neo-cluster ◄── neo-node
//!                               │   ▲                          │
//!             neo-security ◄────┘   └──────────────────────────┘
//! neo-client ─► neo-protocol, qiss (never a server crate)
//! ```
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`meta`] | the metadata group's state ([`meta::MetaState`]: nodes, topics, partitions, replica sets) and its machine ([`meta::MetaMachine`]) with the [`meta::MetaView`] readers watch; `propose` and `linearizable` reads |
//! | [`partition`] | a partition replica: its machine ([`partition::PartitionMachine`]: the idempotent-producer table, committed offsets with their fences ([`partition::offsets`]), queue delivery state ([`partition::deliveries`], with the record facts of [`partition::queues`])) and [`partition::Partition`], whose `append` is the leader's idempotence gate |
//! | [`placement`] | pure placement: spread replica sets and preferred leaders; leader moves back to preferred leaders |
//! | `facade` | [`Broker`]: the metadata replica, the partitions hosted here, lookups, open/close of partitions, and the operations |
//! | [`groups`] | consumer groups: the sticky [`groups::assignor`], the replicated membership rules ([`groups::state`], inside [`meta::MetaState`]), the coordinator's soft state and duties (evictions, expiry, offsets of deleted groups) |
//! | `ops` | one file per operation (`produce`, `fetch`, `metadata`, topic admin, the group methods; the queue methods and the queue duties in `ops/queues/`) and the mapping of every internal error to the wire's typed `RpcError` |
//! | `reconcile` | keeps the partition replicas hosted here in step with the applied metadata ([`Broker::reconcile`]) |
//! | `embedded` | [`Embedded`]: a single-node broker in the process over real storage, no sockets (tests, embedding), over `neo_raft::NoPeers`; `embedded_queues`: its `create_queue`, `produce_to_queue`, `consume_from_queue`, `ack`, `nack` |
//! | `error` | the crate's internal [`Error`] |
//!
//! # Request flow: produce
//!
//! ```text
//! neo-node (Neo RPC) ─► Broker::produce(&SecurityContext, ProduceRequest)
//!   ├─ lookup in the applied MetaState (UnknownTopic / UnknownPartition)
//!   ├─ no replica here ─► NotLeader{preferred replica's client address}
//!   ├─ size, then ValidatedBatch::validate: the batch's one CRC check on this node
//!   │     (records, limits), not a control batch (InvalidRecordBatch; nothing stored);
//!   │     the batch stays a slice of the request frame's buffer
//!   ├─ acks=none ─► RaftGroup::propose_records_ff, answered at once
//!   └─ acks=all|leader ─► Partition::append ─► (stamped: idempotence gate)
//!        ─► RaftGroup::propose_* (ValidatedBatch: no CRC, no copy of the body)
//!        ─► quorum (or leader) fdatasync ─► applied
//!        ─► PartitionMachine::apply_records (producer table) ─► base offset
//! ```
//!
//! # Request flow: fetch
//!
//! ```text
//! Broker::fetch ─► lookup; not the leader ─► NotLeader{leader's client address}
//!   ├─ hw = applied next_offset; offset outside [log start, log end] ─► OffsetOutOfRange
//!   ├─ offset ≥ hw: wait on the applied watch (≤ wait_ms_max, ends on shutdown)
//!   └─ read_log(offset, bytes_max) (blocking pool) cut before the first batch that
//!        ends above hw ─► the stored bytes, unchanged (control batches included;
//!        consumers skip them): the segment read's `Bytes` is the answer's `batches`
//! ```
//!
//! # Request flow: queue receive and ack
//!
//! ```text
//! Broker::queue_receive ─► resolve the queue (or a topic's share group), authorize
//!   ─► the partition(s) led here ─► would a receive lease anything (applied state,
//!      leader clock)? no: wait (applied change or 100 ms), idle polls write nothing
//!   ─► Partition::queue_command(Receive{now, settings}) ─► Raft commit (quorum fsync)
//!   ─► Deliveries::apply picks and leases, the same on every replica ─► read the
//!      leased records from the log ─► messages with receipts (group, partition,
//!      offset, delivery, lease = the receive's log index)
//! Broker::queue_ack ─► receipts by partition ─► leader of each ─► Ack{leases} ─► commit
//!   ─► one outcome per receipt (Ok, LeaseLost, AlreadyDone, Unknown)
//! queue duties (every 500 ms, leaders): Expire ─► dying ─► forward_records to the DLQ
//!   partition's leader ─► Archive (append first, archive second)
//! ```
//!
//! # Invariants
//!
//! - State machines are deterministic: the same committed entries give the same state
//!   and the same answers on every replica; a refused command is refused everywhere,
//!   as a typed answer, never a panic.
//! - Every operation takes a [`SecurityContext`]; nothing reaches a Raft group without
//!   passing through a [`Broker`] operation (or a background duty of this crate).
//! - A stamped batch is stored at most once per partition (see [`partition`]).
//! - Bad input gets a typed `RpcError` with a stable code, and nothing stored changes.
//! - Locks hold plain data and are taken even when poisoned (see `lock`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod embedded;
mod embedded_queues;
mod error;
mod facade;
pub mod groups;
pub mod meta;
mod ops;
pub mod partition;
pub mod placement;
mod reconcile;

pub use access::AccessConfig;
pub use embedded::{EMBEDDED_ADDR, EMBEDDED_NODE_ID, Embedded};
pub use error::{Error, Result};
pub use facade::{
    Broker, BrokerConfig, BrokerLimits, Cluster, GroupTiming, METADATA_SNAPSHOT_EVERY_ENTRIES,
    PeerAddressError, SingleNode,
};
pub use groups::GroupLag;
pub use neo_security::SecurityContext;
pub use ops::create_topic::{
    ENCRYPTION_AT_REST, RETENTION_BYTES, RETENTION_MS, Retention, check_topic_name,
    parse_topic_configs,
};
pub use ops::fetch::{committed_prefix, read_committed};
pub use ops::heartbeat_group::HEARTBEAT_WAIT_MS_MAX;
pub use ops::join_group::SESSION_TIMEOUT_MS_DEFAULT;
pub use ops::metadata::CLUSTER_ID;
pub use ops::produce::OFFSET_UNKNOWN;
pub use reconcile::{RECOVER_FIRST_MS, RECOVER_MAX_MS, replica_reopens};

/// Locks a mutex that holds plain data. The crate's lock-poisoning policy: every value
/// behind a lock is consistent after each statement that changes it, so a panic
/// elsewhere while it was held leaves nothing half-done, and the lock is taken anyway.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
