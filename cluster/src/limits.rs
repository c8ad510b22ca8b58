//! Named limits of the control plane (units last).

/// Largest gRPC message either end encodes or decodes. It must hold the largest
/// AppendEntries request: openraft sends at most `max_payload_entries` entries per
/// request (neo-raft sets 64) of at most `neo_raft::RECORD_BATCH_BYTES_MAX` (1 MiB)
/// each, plus framing.
pub const RPC_MESSAGE_BYTES_MAX: usize = 72 * 1024 * 1024;

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest snapshot accepted (the metadata group's whole state).
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// How long a new connection attempt to a peer may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Deadline of one membership change call (`join`, `leave`) at one node: the leader
/// registers the node, adds it as a learner of the metadata group and waits for it to
/// catch up (a snapshot and a short log), then may make it a voter. A node that accepts
/// the connection and never answers (frozen, or cut off from its quorum) costs this
/// long per attempt instead of blocking the caller for ever.
pub const MEMBERSHIP_CALL_TIMEOUT_MS: u64 = 30_000;

/// Deadline of one `status` call (answered from the node's own state).
pub const STATUS_CALL_TIMEOUT_MS: u64 = 5_000;

/// Most forwarded record batches (`ForwardRecords`: at most
/// `neo_raft::RECORD_BATCH_BYTES_MAX` each, well within [`RPC_MESSAGE_BYTES_MAX`]) one
/// node serves at once, over all peers: each holds its batch and an HTTP/2 stream until
/// the batch commits (bounded by `neo_raft::FORWARD_WAIT_MS_MAX`), so this bounds that
/// memory (256 MiB) and keeps such streams a small share of
/// [`HTTP2_CONCURRENT_STREAMS_MAX`]. Beyond it a forward is refused with
/// `RESOURCE_EXHAUSTED` (the sender tries another replica, then backs off).
pub const FORWARD_RECORDS_IN_FLIGHT_MAX: usize = 256;

/// HTTP/2 flow-control window per stream, both ends: a whole AppendEntries of 64 16-KiB
/// entries fits without waiting for a window update.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// HTTP/2 flow-control window per connection (shared by every group's RPCs to a peer).
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Most concurrent HTTP/2 streams (RPCs in flight) one peer connection may open on the
/// cluster port: every group's AppendEntries, votes and snapshot streams to this node
/// share the connection, so it is far above what multi-raft needs, and bounds a peer
/// that opens streams without end.
pub const HTTP2_CONCURRENT_STREAMS_MAX: u32 = 8192;

/// Most TCP connections open at once on the cluster port, counted as they are accepted
/// (before the TLS handshake). A node opens a handful to each peer (its Raft channel,
/// and short-lived membership and status calls), so this is far above what a cluster of
/// hundreds of nodes needs, and bounds the sockets, handshakes and HTTP/2 state (each
/// connection up to [`HTTP2_CONCURRENT_STREAMS_MAX`] streams) a flood can make a node
/// hold. A connection above it is closed at once, unread.
pub const PEER_CONNECTIONS_MAX: usize = 1024;

/// How long a TLS handshake between nodes may take (both ends), when cluster TLS is on.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// How long a receiver keeps the part of an interrupted snapshot transfer it already
/// has, for the sender's retry of the same snapshot to resume from.
pub const SNAPSHOT_PARTIAL_TTL_MS: u64 = 60_000;

/// Most bytes of interrupted snapshot transfers a receiver keeps, over all groups (at
/// most one per group); the oldest are dropped first.
pub const SNAPSHOT_PARTIALS_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Most bytes a receiver reserves up front for an incoming snapshot (the buffer grows
/// with the chunks that actually arrive, up to the announced total).
pub const SNAPSHOT_PREALLOC_BYTES_MAX: u64 = 64 * 1024 * 1024;
