//! `neo-cluster`: the internal gRPC control plane (port 7071) between Neo nodes.
//!
//! Built on tonic 0.14 / prost 0.14; the `.proto` files are compiled by `build.rs` with
//! protox (pure Rust), so no system `protoc` is needed. This crate never names an
//! openraft type: Raft RPC bodies are opaque bytes that `neo-raft` encodes and decodes.
//! It depends on `neo-raft` (groups, registry, the `Transport` trait it implements) and
//! on `neo-broker` only for the metadata commands that join and leave write (node
//! registrations).
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `proto/raft.proto` → [`pb::raft`] | Raft RPCs of every group: AppendEntries, Vote, PreVote, TransferLeader, InstallSnapshot (client stream of chunks, resumable), SnapshotResume (where a retry resumes); ForwardRecords (a record batch for the group's leader, from `neo_raft::forward_records`; answered after commit); each carries a `group_id` |
//! | `proto/membership.proto` → [`pb::membership`] | Join, Leave, Status |
//! | `proto/health.proto` → [`pb::health`] | node heartbeats |
//! | `transport` | [`GrpcTransport`]: `neo_raft::Transport` over one lazily connected tonic channel per peer, shared by all groups; consults the [`NetFilter`] first; sends snapshots resumably and counts them ([`SnapshotStats`]) |
//! | `server` | [`serve`] / [`serve_with_tls`]: the Raft service (checks the caller, then dispatches by group id to the node's `neo_raft::Registry`; refuses a snapshot stream for a group not hosted at its first chunk; keeps interrupted snapshot transfers for resuming; serves at most [`limits::FORWARD_RECORDS_IN_FLIGHT_MAX`] forwarded batches at once), Membership and Health, with graceful then forced shutdown |
//! | `incoming` | the accept side: at most [`limits::PEER_CONNECTIONS_MAX`] connections at once; one more is closed as it is accepted, before TLS ([`ServerHandle::refused_connections`]) |
//! | [`tls`] | [`ClusterTls`]: optional mutual TLS between nodes (node certificate + key + cluster CA, PEM, checked when loaded; typed [`TlsError`]); the server-name rule; the node id the node's own certificate names ([`ClusterTls::check_node_id`]) |
//! | [`peer`] | who calls, with cluster TLS on: the node id a certificate names (URI SAN `neo-node:<id>`, typed [`peer::NodeIdError`]) and the pure decisions on it: Join/Leave only for the named node (Leave also by a metadata voter), Raft RPCs only from a member |
//! | `filter` | [`NetFilter`]: drop / isolate / heal per peer, and cut one snapshot transfer after N chunks, for partition tests |
//! | [`membership`] | `--peers` parsing, join (registers the node's cluster and client addresses in `neo-broker`'s metadata state, then learner, then voter up to [`membership::METADATA_VOTERS_MAX`]), leave, status; clients follow leader hints |
//! | [`health`] | [`HealthMonitor`]: one heartbeat per peer per interval, independent of the number of groups |
//! | [`limits`] | named limits: message size, HTTP/2 windows, peer connections, concurrent streams and forwarded batches, snapshot chunk size and partial-transfer bounds, connect and TLS handshake timeouts |
//! | `error` | the one [`Error`] enum |
//!
//! # Request flow
//!
//! ```text
//! leader's openraft ─► neo_raft Router ─► GrpcTransport::send(target, group, kind, body)
//!     ─► [filter] ─► tonic channel to target ─► [accept: connection limit, TLS]
//!     ─► RaftService::append_entries ─► [caller check: certificate names a member]
//!     ─► Registry::handle(group, kind, body) ─► follower's Raft ─► reply body
//! snapshot: GrpcTransport::send_snapshot ─► SnapshotResume probe (bytes already held)
//!     ─► stream of SnapshotChunk from there (1 MiB each, head in the first, whole-snapshot
//!     CRC32 in each) ─► server checks the caller and that it hosts the group (first
//!     chunk) ─► reassembles (in order, bounded; a broken stream's prefix is kept)
//!     ─► CRC check ─► Registry::handle_snapshot
//! ```
//!
//! # Cluster TLS
//!
//! Off by default (plaintext). To turn it on, load [`ClusterTls::from_pem_files`] once
//! and pass the same value to [`GrpcTransport::with_tls`], [`serve_with_tls`] and
//! [`membership::join_with_tls`] / [`membership::leave_with_tls`] /
//! [`membership::status_with_tls`]. Servers then require client certificates of the
//! cluster CA; clients verify peers against the CA and the host of the peer address (or
//! one fixed name, [`ClusterTls::with_server_name`]). Rules in [`tls`]. Each node
//! certificate names its node id (URI SAN `neo-node:<id>`); servers hold callers to it
//! ([`peer`]), and a node checks its own before it starts.
//!
//! # Resumable snapshot transfer
//!
//! The receiver keeps the prefix of a broken transfer (keyed by group and the transfer's
//! head, size and CRC32: the head encodes the sender's vote, hence its node id, and the
//! snapshot id), at most one per group, [`limits::SNAPSHOT_PARTIALS_BYTES_MAX`] in all,
//! each for [`limits::SNAPSHOT_PARTIAL_TTL_MS`]. The sender's retry asks how much is held
//! and streams only the rest; the whole snapshot's CRC32 is checked before installing.
//!
//! # Invariants
//!
//! - One channel per peer, whatever the number of groups; the group id is in every RPC.
//! - Both ends bound messages by [`limits::RPC_MESSAGE_BYTES_MAX`], sized for the largest
//!   AppendEntries (`neo_raft::MAX_PAYLOAD_ENTRIES` × `neo_raft::RECORD_BATCH_BYTES_MAX`).
//! - Every RPC has a deadline; a snapshot transfer (probe and stream, and the one restart
//!   from byte 0 if the receiver's kept part vanished) has one overall deadline and no
//!   per-chunk timeout, so it cannot retry forever.
//! - With cluster TLS on, nothing is served to, or sent to, a peer without a certificate
//!   of the cluster CA; membership changes and Raft RPCs are served only to the node
//!   the certificate names ([`peer`]). Without cluster TLS nothing is checked.
//! - At most [`limits::PEER_CONNECTIONS_MAX`] connections are open on the cluster port.
//! - This crate decides nothing about topics or partitions: placement and leader
//!   balancing are `neo-broker`'s (`neo_broker::placement`), run by `neo-node`.
//!
//! # Planned (not built yet)
//!
//! - Pipelined replication (openraft's stream-append over a bidirectional gRPC stream);
//!   today each follower has one AppendEntries in flight per group.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod filter;
pub mod health;
mod incoming;
pub mod limits;
pub mod membership;
pub mod peer;
mod server;
pub mod tls;
mod transport;

/// Code generated from `proto/*.proto` by tonic/prost (via protox, no system `protoc`).
#[allow(missing_docs)]
pub mod pb {
    /// `proto/raft.proto`.
    pub mod raft {
        tonic::include_proto!("neo.raft.v1");
    }
    /// `proto/membership.proto`.
    pub mod membership {
        tonic::include_proto!("neo.membership.v1");
    }
    /// `proto/health.proto`.
    pub mod health {
        tonic::include_proto!("neo.health.v1");
    }
}

pub use error::{Error, Result};
pub use filter::NetFilter;
pub use health::HealthMonitor;
pub use server::{ControlPlane, RaftService, ServerHandle, serve, serve_with_tls};
pub use tls::{ClusterTls, TlsError};
pub use transport::{GrpcTransport, SnapshotStats};
