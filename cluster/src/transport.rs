//! The client side: [`GrpcTransport`] implements `neo_raft::Transport` over one tonic
//! channel per peer, shared by every group on this node.
//!
//! Channels connect lazily and reconnect on their own after a failure, so a peer that
//! restarts on the same address is picked up without any bookkeeping here. Each RPC is
//! bounded by the timeout openraft gives it; a snapshot transfer by one overall timeout
//! (no per-chunk timeout that could retry forever).
//!
//! With [`ClusterTls`], channels use `https`, present this node's certificate and verify
//! the peer's (see [`crate::tls`] for the server-name rule).
//!
//! # Resumable snapshot transfer
//!
//! A snapshot goes out as a client stream of chunks. Before streaming, the sender asks
//! the receiver (`SnapshotResume`, one small unary RPC) how much of this exact snapshot
//! (same head, size and CRC32) it kept from an interrupted transfer, and streams only
//! the rest. If the receiver dropped that part meanwhile it refuses the stream with
//! `FAILED_PRECONDITION`, and the sender restarts from byte 0 within the same call. One
//! deadline bounds the probe and every byte of the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use neo_raft::{GroupId, NodeId, RpcKind, Transport, TransportError};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result, error_chain};
use crate::filter::NetFilter;
use crate::limits::{
    CONNECT_TIMEOUT_MS, HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_STREAM_WINDOW_BYTES,
    RPC_MESSAGE_BYTES_MAX, SNAPSHOT_CHUNK_BYTES,
};
use crate::pb::health::HeartbeatRequest;
use crate::pb::health::health_client::HealthClient;
use crate::pb::raft as pb;
use crate::pb::raft::raft_client::RaftClient;
use crate::tls::{ClusterTls, scheme};

/// One channel per peer, shared by all groups.
#[derive(Clone)]
pub struct GrpcTransport {
    peers: Arc<RwLock<HashMap<NodeId, Channel>>>,
    filter: NetFilter,
    tls: Option<ClusterTls>,
    snapshot_chunk_bytes: usize,
    stats: Arc<Counters>,
}

/// Counters of the snapshot transfers a [`GrpcTransport`] sent (all peers, all groups),
/// since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Streams started: every attempt, first tries and retries alike.
    pub attempts: u64,
    /// Attempts that resumed an interrupted transfer (started past byte 0).
    pub resumed: u64,
    /// Chunks handed to the wire.
    pub chunks_sent: u64,
    /// Snapshot bytes handed to the wire.
    pub bytes_sent: u64,
    /// Bytes not sent again because the receiver already held them.
    pub bytes_skipped: u64,
    /// Transfers the receiver took whole and answered.
    pub completed: u64,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    resumed: AtomicU64,
    chunks_sent: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_skipped: AtomicU64,
    completed: AtomicU64,
}

impl GrpcTransport {
    /// A plaintext transport with no peers yet, consulting `filter` before every RPC.
    pub fn new(filter: NetFilter) -> Self {
        Self::with_tls(filter, None)
    }

    /// A transport with no peers yet, consulting `filter` before every RPC; with `tls`,
    /// every peer channel uses mutual TLS.
    pub fn with_tls(filter: NetFilter, tls: Option<ClusterTls>) -> Self {
        GrpcTransport {
            peers: Arc::new(RwLock::new(HashMap::new())),
            filter,
            tls,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
            stats: Arc::new(Counters::default()),
        }
    }

    /// Sets the size of the chunks snapshots are sent in (default
    /// [`SNAPSHOT_CHUNK_BYTES`]; clamped to 1 byte .. half of
    /// [`RPC_MESSAGE_BYTES_MAX`]). Small chunks are for tests.
    pub fn with_snapshot_chunk_bytes(mut self, bytes: usize) -> Self {
        self.snapshot_chunk_bytes = bytes.clamp(1, RPC_MESSAGE_BYTES_MAX / 2);
        self
    }

    /// Counters of the snapshot transfers sent so far.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        let c = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SnapshotStats {
            attempts: get(&c.attempts),
            resumed: get(&c.resumed),
            chunks_sent: get(&c.chunks_sent),
            bytes_sent: get(&c.bytes_sent),
            bytes_skipped: get(&c.bytes_skipped),
            completed: get(&c.completed),
        }
    }

    /// Sets (or replaces) the address of `node` (`host:port`). The channel connects on
    /// first use.
    pub fn set_peer(&self, node: NodeId, addr: &str) -> Result<()> {
        let bad = |reason: String| Error::BadAddress {
            node,
            addr: addr.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("{}://{addr}", scheme(self.tls.as_ref())))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES));
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.client_config())
                .map_err(|e| bad(format!("tls: {}", error_chain(&e))))?,
            None => endpoint,
        };
        let channel = endpoint.connect_lazy();
        self.peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(node, channel);
        Ok(())
    }

    /// Forgets `node`.
    pub fn remove_peer(&self, node: NodeId) {
        self.peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&node);
    }

    /// Ids of every peer with a known address.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Sends one node heartbeat from `me` to `target`; `true` if it was answered within
    /// one heartbeat interval. Goes through the filter like Raft traffic.
    pub async fn heartbeat(&self, me: NodeId, target: NodeId) -> bool {
        if self.filter.is_blocked(target) {
            return false;
        }
        let Some(channel) = self
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target)
            .cloned()
        else {
            return false;
        };
        let timeout = Duration::from_millis(crate::health::HEARTBEAT_INTERVAL_MS);
        let mut client = HealthClient::new(channel);
        let call = client.heartbeat(HeartbeatRequest { from: me });
        matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_)))
    }

    /// The filter this transport consults.
    pub fn filter(&self) -> &NetFilter {
        &self.filter
    }

    fn client(&self, target: NodeId) -> Result<RaftClient<Channel>, TransportError> {
        if self.filter.is_blocked(target) {
            return Err(TransportError::Unreachable {
                target,
                reason: "dropped by the network filter".into(),
            });
        }
        let channel = self
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable {
                target,
                reason: "no address known".into(),
            })?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(RPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RPC_MESSAGE_BYTES_MAX))
    }
}

fn status_error(target: NodeId, s: tonic::Status) -> TransportError {
    match s.code() {
        // No connection could be made or it broke: the peer is down or restarting.
        tonic::Code::Unavailable => TransportError::Unreachable {
            target,
            reason: s.message().to_string(),
        },
        _ => TransportError::Network {
            target,
            reason: format!("{:?}: {}", s.code(), s.message()),
        },
    }
}

impl Transport for GrpcTransport {
    fn send(
        &self,
        target: NodeId,
        group: GroupId,
        kind: RpcKind,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let client = self.client(target);
        Box::pin(async move {
            let mut client = client?;
            let req = pb::RaftRequest {
                group_id: group,
                body,
            };
            let call = async move {
                match kind {
                    RpcKind::AppendEntries => client.append_entries(req).await,
                    RpcKind::Vote => client.vote(req).await,
                    RpcKind::PreVote => client.pre_vote(req).await,
                    RpcKind::TransferLeader => client.transfer_leader(req).await,
                    RpcKind::ForwardRecords => client.forward_records(req).await,
                }
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(resp)) => Ok(resp.into_inner().body),
                Ok(Err(status)) => Err(status_error(target, status)),
                Err(_) => Err(TransportError::Timeout {
                    target,
                    timeout_ms: timeout.as_millis() as u64,
                }),
            }
        })
    }

    fn send_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        head: Bytes,
        data: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        let client = self.client(target);
        let sender = SnapshotSender {
            target,
            group,
            head,
            data,
            chunk_bytes: self.snapshot_chunk_bytes,
            filter: self.filter.clone(),
            stats: self.stats.clone(),
        };
        Box::pin(async move {
            let client = client?;
            match tokio::time::timeout(timeout, sender.run(client)).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::Timeout {
                    target,
                    timeout_ms: timeout.as_millis() as u64,
                }),
            }
        })
    }
}

/// Snapshots above this size get their CRC computed off the async workers.
const CRC_INLINE_BYTES_MAX: usize = 1024 * 1024;

/// One snapshot transfer to one peer (probe, then stream the rest, restarting from 0 at
/// most once if the receiver's kept part vanished meanwhile).
struct SnapshotSender {
    target: NodeId,
    group: GroupId,
    head: Bytes,
    data: Bytes,
    chunk_bytes: usize,
    filter: NetFilter,
    stats: Arc<Counters>,
}

impl SnapshotSender {
    async fn run(self, mut client: RaftClient<Channel>) -> Result<Bytes, TransportError> {
        let target = self.target;
        let crc = if self.data.len() <= CRC_INLINE_BYTES_MAX {
            crc32fast::hash(&self.data)
        } else {
            let data = self.data.clone();
            tokio::task::spawn_blocking(move || crc32fast::hash(&data))
                .await
                .map_err(|e| TransportError::Network {
                    target,
                    reason: format!("snapshot checksum task: {e}"),
                })?
        };
        let total = self.data.len() as u64;
        let probe = pb::SnapshotProbe {
            group_id: self.group,
            head: self.head.clone(),
            total_len: total,
            crc32: crc,
        };
        let mut from = match client.snapshot_resume(probe).await {
            Ok(r) => r.into_inner().offset,
            Err(s) if s.code() == tonic::Code::Unavailable => return Err(status_error(target, s)),
            // A peer that does not know the probe: send everything.
            Err(_) => 0,
        };
        if from >= total {
            from = 0;
        }
        loop {
            match self.stream_from(&mut client, from, crc).await {
                Err(s) if s.code() == tonic::Code::FailedPrecondition && from > 0 => {
                    tracing::debug!(target, group = self.group, "snapshot resume refused: {s}");
                    from = 0;
                }
                Ok(body) => {
                    self.stats.completed.fetch_add(1, Ordering::Relaxed);
                    return Ok(body);
                }
                Err(s) if self.filter.is_blocked(target) => {
                    return Err(TransportError::Unreachable {
                        target,
                        reason: format!("dropped by the network filter mid-snapshot: {s}"),
                    });
                }
                Err(s) => return Err(status_error(target, s)),
            }
        }
    }

    /// Streams the snapshot from byte `from` on; the first chunk carries the head.
    async fn stream_from(
        &self,
        client: &mut RaftClient<Channel>,
        from: u64,
        crc: u32,
    ) -> Result<Bytes, tonic::Status> {
        let c = &self.stats;
        c.attempts.fetch_add(1, Ordering::Relaxed);
        if from > 0 {
            c.resumed.fetch_add(1, Ordering::Relaxed);
            c.bytes_skipped.fetch_add(from, Ordering::Relaxed);
        }
        let (group, target, step) = (self.group, self.target, self.chunk_bytes);
        let (head, data) = (self.head.clone(), self.data.clone());
        let total = data.len();
        let from = from as usize;
        // At least one chunk, so that an empty snapshot still carries its head.
        let n_chunks = (total - from).div_ceil(step).max(1);
        let cut = self.filter.take_snapshot_cut(target).unwrap_or(u64::MAX);
        let (filter, stats) = (self.filter.clone(), self.stats.clone());
        let chunks = tokio_stream::iter(0..n_chunks)
            .take(usize::try_from(cut).unwrap_or(usize::MAX))
            // Cutting the link cuts the transfer, as a real partition would.
            .take_while(move |_| !filter.is_blocked(target))
            .map(move |i| {
                let start = from + i * step;
                let end = (start + step).min(total);
                stats.chunks_sent.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_sent
                    .fetch_add((end - start) as u64, Ordering::Relaxed);
                pb::SnapshotChunk {
                    group_id: group,
                    head: if i == 0 { head.clone() } else { Bytes::new() },
                    offset: start as u64,
                    total_len: total as u64,
                    data: data.slice(start..end),
                    crc32: Some(crc),
                }
            });
        let resp = client.install_snapshot(chunks).await?;
        Ok(resp.into_inner().body)
    }
}
