//! `neo-cluster`: the internal gRPC control plane (port 7071) between Neo nodes.
//!
//! Built on tonic 0.14 / prost 0.14; the `.proto` files are compiled by `build.rs` with
//! protox (pure Rust), so no system `protoc` is needed. This crate never names an
//! openraft type: Raft RPC bodies are opaque bytes that `neo-raft` encodes and decodes.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `proto/raft.proto` → [`pb::raft`] | Raft RPCs of every group: AppendEntries, Vote, PreVote, TransferLeader, InstallSnapshot (client stream of chunks); each carries a `group_id` |
//! | `proto/membership.proto` → [`pb::membership`] | Join, Leave, Status |
//! | `proto/health.proto` → [`pb::health`] | node heartbeats |
//! | `transport` | [`GrpcTransport`]: `neo_raft::Transport` over one lazily connected tonic channel per peer, shared by all groups; consults the [`NetFilter`] first |
//! | `server` | [`serve`]: the Raft service (dispatch by group id to the node's `neo_raft::Registry`), Membership and Health, with graceful then forced shutdown |
//! | `filter` | [`NetFilter`]: drop / isolate / heal per peer, for partition tests |
//! | [`membership`] | `--peers` parsing, join (registers the node's cluster and client addresses, then learner, then voter up to [`membership::METADATA_VOTERS_MAX`]), leave, status; clients follow leader hints |
//! | [`health`] | [`HealthMonitor`]: one heartbeat per peer per interval, independent of the number of groups |
//! | [`placement`] | pure functions: spread replica sets and preferred leaders evenly; leader moves back to preferred leaders |
//! | [`limits`] | named limits: message size, HTTP/2 windows, snapshot chunk size, connect timeout |
//! | `error` | the one [`Error`] enum |
//!
//! # Request flow
//!
//! ```text
//! leader's openraft ─► neo_raft Router ─► GrpcTransport::send(target, group, kind, body)
//!     ─► [filter] ─► tonic channel to target ─► RaftService::append_entries
//!     ─► Registry::handle(group, kind, body) ─► follower's Raft ─► reply body
//! snapshot: GrpcTransport::send_snapshot ─► stream of SnapshotChunk (1 MiB each, head in
//!     the first) ─► server reassembles (in order, bounded) ─► Registry::handle_snapshot
//! ```
//!
//! # Invariants
//!
//! - One channel per peer, whatever the number of groups; the group id is in every RPC.
//! - Both ends bound messages by [`limits::RPC_MESSAGE_BYTES_MAX`], sized for the largest
//!   AppendEntries (`neo_raft::MAX_PAYLOAD_ENTRIES` × `neo_raft::RECORD_BATCH_BYTES_MAX`).
//! - Every RPC has a deadline; a snapshot transfer has one overall deadline and no
//!   per-chunk timeout, so it cannot retry forever.
//! - Placement and balancing decisions are free of I/O; the caller sends the RPCs.
//!
//! # Planned (not built yet)
//!
//! - Optional mTLS between nodes (tonic's rustls feature, identities from `neo-security`).
//! - Pipelined replication (openraft's stream-append over a bidirectional gRPC stream);
//!   today each follower has one AppendEntries in flight per group.
//! - Resumable snapshot transfer (restart from the last acknowledged chunk).
//! - Running [`placement::leader_moves`] periodically (the node wiring, in `neo-node`,
//!   bootstraps the metadata group from `--peers`, registers through
//!   [`membership::join_with_client_addr`] and opens partition groups from the metadata,
//!   but does not balance leaders yet).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod filter;
pub mod health;
pub mod limits;
pub mod membership;
pub mod placement;
mod server;
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
pub use server::{ControlPlane, RaftService, ServerHandle, serve};
pub use transport::GrpcTransport;
