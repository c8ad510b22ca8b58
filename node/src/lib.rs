//! `neo-node`: the Neo broker. One process runs one node: three listeners, the
//! metadata Raft group, one Raft group per partition replica, the broker service.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`config`] | flags > environment (`NEO_*`) > TOML file (`--config`) > defaults; validation with errors that name the setting. No settings = the embedded single-node default |
//! | `node` | [`Node`]: wiring and shutdown; `Shared`, the state every handler sees |
//! | `reconcile` | keeps the partition groups hosted here in step with the applied metadata: open + bootstrap, stop + delete |
//! | `balance` | every `leader_balance_ms`: each partition this node leads goes back to its preferred replica (the first of its replica set) once that replica is alive and has stayed in sync for a whole period |
//! | `retention` | every `retention_check_ms`: applies each hosted partition's topic retention (age, size) to the local replica's log |
//! | `broker/` | the `neo.broker` Neo RPC service, one file per method (`produce`, `fetch`, `metadata`, `create_topic`, `delete_topic`, `list_topics`, `describe_topic`; groups and queues answer `UnknownMethod`) |
//! | `http` | the admin listener: `/health`, `/ready`, `/metrics`, `/v1/cluster`, `/v1/partitions/{topic}/{p}/digest`; [`healthcheck`] |
//! | `metrics` | counters, histograms and the Prometheus text rendering |
//! | `error` | the crate's [`Error`] (start-up failures) |
//! | `bin/neo-node` | parses the config (exit 2 when invalid), sets up logging, runs until SIGINT/SIGTERM; `neo-node healthcheck` |
//!
//! ```text
//!            :7070 Neo RPC ─► broker/* ─┐          :7072 HTTP ─► http
//!                                      ▼
//!   metadata RaftGroup (group 0) ◄── Shared ──► partition RaftGroups (Registry)
//!            ▲   │ applied MetaState watch              ▲
//!            │   └──────────► reconcile ─ open/bootstrap/stop ┘
//!   :7071 gRPC (neo-cluster: Raft RPCs by group id, membership join, health)
//! ```
//!
//! # Request flow: produce
//!
//! ```text
//! client ─ produce{topic, partition, acks, batch} ─► broker::produce
//!   ├─ local MetaState: topic/partition → group id + replicas (UnknownTopic/UnknownPartition)
//!   ├─ not a replica here ─► NotLeader{preferred replica's client addr}
//!   ├─ size ≤ batch_bytes_max, ValidatedBatch::validate (the batch's one CRC check on
//!   │     this node, records, limits), not a control batch (else InvalidRecordBatch;
//!   │     nothing stored); the batch is a slice of the request frame's buffer
//!   ├─ stamped by an idempotent producer and already held (or in flight) ─► the first
//!   │     copy's offset, nothing stored (see neo-raft's `producers`)
//!   ├─ acks=all|leader ─► RaftGroup::propose_records(ValidatedBatch) ─► openraft client_write
//!   │     ─► leader appends (the batch itself is the log entry: stamped header + the
//!   │        frame's bytes, no CRC, no copy) + replicates over gRPC (followers check
//!   │        the CRC on receipt)
//!   │     ─► quorum fdatasync'd ─► commit ─► apply assigns base offset ─► reply
//!   │     (not leader ─► NotLeader{leader's advertised client addr}; timeout ─► NotEnoughReplicas)
//!   └─ acks=none ─► propose_records_ff, reply at once (base_offset = u64::MAX)
//! ```
//!
//! # Request flow: fetch
//!
//! ```text
//! client ─ fetch{topic, partition, offset, bytes_max, wait_ms_max} ─► broker::fetch
//!   ├─ lookup as above; not the leader ─► NotLeader{leader's client addr}
//!   ├─ hw = applied next_offset; offset outside [log start, log end] ─► OffsetOutOfRange
//!   ├─ offset ≥ hw: wait on the applied watch (≤ wait_ms_max, ends on shutdown)
//!   └─ read_log(offset, bytes_max) cut before the first batch with base ≥ hw
//!        ─► the stored bytes, unchanged (control batches included; consumers skip them):
//!           the segment read's `Bytes` is the response's `batches`, no copy until encoding
//! ```
//!
//! # Invariants
//!
//! - A fetch never returns a batch at or above the high watermark: only committed
//!   (applied) data is visible, and a batch is returned whole or not at all.
//! - `acks=all` is answered only after the batch is committed on a quorum (fdatasync
//!   under the default `--fsync always`) and applied; the answer carries its offset.
//! - Bad input (unknown topic or partition, oversized or corrupt batch, control batch,
//!   bad offset) gets a typed error with a stable code; nothing stored changes.
//! - A `NotLeader` hint is always a client (Neo RPC) address, never a cluster address.
//! - Partition groups are deleted only after the metadata state that listed them has
//!   been seen to drop them (a committed `DeleteTopic`), never on a stale view.
//! - Wire ids: methods are registered in `BROKER_METHODS` order (checked at start).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod balance;
pub(crate) mod broker;
pub mod config;
mod error;
mod http;
mod metrics;
mod node;
mod reconcile;
mod retention;

pub use config::{Bootstrap, Config, ConfigError, Limits, LogFormat, RunArgs};
pub use error::{Error, Result};
pub use http::{REQUEST_HEAD_BYTES_MAX, REQUEST_TIMEOUT_MS, healthcheck};
pub use node::Node;
