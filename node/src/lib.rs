//! `neo-node`: the Neo broker process. One process runs one node: three listeners, the
//! control plane, and the node's [`neo_broker::Broker`] (the metadata replica and the
//! partition replicas it hosts), wired together. Broker logic is not here: every Neo RPC
//! request is handed, with its security context, to a `Broker` operation.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`config`] | flags > environment (`NEO_*`) > TOML file (`--config`) > defaults; validation with errors that name the setting. No settings = the embedded single-node default |
//! | `node` | [`Node`]: wiring and shutdown; `Shared` (the broker and the node's own wiring) that the service, duties and HTTP see; the broker's `Cluster` view (heartbeats, peer addresses) |
//! | `broker/` | the `neo.broker` Neo RPC service: each method builds the request's `SecurityContext`, calls the `Broker` operation and records metrics (consumer-group and queue methods included) |
//! | `balance` | every `leader_balance_ms`: each partition this node leads goes back to its preferred replica (the first of its replica set) once that replica is alive and has stayed in sync for a whole period |
//! | `retention` | every `retention_check_ms`: applies each hosted partition's topic retention (age, size) to the local replica's log, and purges each queue partition's acked prefix |
//! | [`embedded`] | the broker in process: [`embedded::Broker::start`], `create_queue`, `produce_to_queue`, `consume_from_queue(queue, consumer)`, `ack`, `nack` over `neo_broker::Embedded` (the same operations as a server) |
//! | `http` (+ `http/`) | the admin listener: `/health`, `/ready`, `/metrics`, `/v1/cluster`, `/v1/groups`, `/v1/queues`, `/v1/groups/{name}` (described through this node's client port), `/v1/partitions/{topic}/{p}/digest`, the console's paths; GET and bounded JSON POSTs (CSRF-guarded); [`healthcheck`] |
//! | `console/` | the built-in web console at `/` on the HTTP port: embedded HTML/CSS/JS modules and their JSON reads and actions, all asked through this node's client port as the HTTP caller (docs/console.md) |
//! | `admin_tls` | TLS of that description's client when the client port has TLS: trusts exactly the node's own certificate, and certificates of the cluster CA |
//! | `metrics/` | Prometheus metrics with `prometheus-client` (OpenMetrics text): the request-path registry, the Neo RPC server's observer (`rpc`), scrape-time series from the node's groups (`cluster`, `raft`, `storage`), `/proc/self` (`process`); every name in docs/metrics.md |
//! | `error` | the crate's [`Error`] (start-up failures) |
//! | `bin/neo-node` | parses the config (exit 2 when invalid), sets up logging, runs until SIGINT/SIGTERM; `neo-node healthcheck` |
//!
//! ```text
//!   :7070 Neo RPC ─► broker/ service ─► neo_broker::Broker ◄── reconcile (broker's)
//!                                         │  metadata RaftGroup + MetaMachine
//!                                         │  partition RaftGroups + PartitionMachines
//!   :7071 gRPC (neo-cluster: Raft RPCs by group id, membership, health) ◄─┘ Registry
//!   :7072 HTTP ─► http                 balance, retention ─► partition RaftGroups
//!                                      group duties (broker's: evictions, expiry)
//! ```
//!
//! # Request flow
//!
//! ```text
//! client ─ frame ─► NeoServer ─► broker::<method> (metrics, SecurityContext from the
//!   connection's principal and peer) ─► Broker::<operation> ─► answer or typed RpcError
//! ```
//! The operations themselves (lookups, checks, Raft, offsets) are described in
//! `neo-broker`'s crate map and docs/broker.md.
//!
//! # Invariants
//!
//! - Every broker method goes through the `Broker` with the request's security context.
//! - `acks=all` is answered only after the batch is committed on a quorum (fdatasync
//!   under the default `--fsync always`) and applied; the answer carries its offset.
//! - A `NotLeader` hint is always a client (Neo RPC) address, never a cluster address.
//! - Wire ids: methods are registered in `BROKER_METHODS` order (checked at start).
//! - Shutdown: every wait on a background task is bounded (`TASK_STOP_TIMEOUT_MS`), as
//!   is the drain of in-flight client requests (`shutdown_drain_timeout`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin_tls;
mod balance;
pub(crate) mod broker;
pub mod config;
mod console;
pub mod embedded;
mod error;
mod http;
mod metrics;
mod node;
mod retention;
pub mod security;

pub use config::{Bootstrap, Config, ConfigError, Limits, LogFormat, RaftTimingProfile, RunArgs};
pub use error::{Error, Result};
pub use http::{REQUEST_HEAD_BYTES_MAX, REQUEST_TIMEOUT_MS, healthcheck};
pub use node::Node;
