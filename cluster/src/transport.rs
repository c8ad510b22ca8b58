//! The client side: [`GrpcTransport`] implements `neo_raft::Transport` over one tonic
//! channel per peer, shared by every group on this node.
//!
//! Channels connect lazily and reconnect on their own after a failure, so a peer that
//! restarts on the same address is picked up without any bookkeeping here. Each RPC is
//! bounded by the timeout openraft gives it; a snapshot transfer by one overall timeout
//! (no per-chunk timeout that could retry forever).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use neo_raft::{GroupId, NodeId, RpcKind, Transport, TransportError};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::filter::NetFilter;
use crate::limits::{
    CONNECT_TIMEOUT_MS, HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_STREAM_WINDOW_BYTES,
    RPC_MESSAGE_BYTES_MAX, SNAPSHOT_CHUNK_BYTES,
};
use crate::pb::health::HeartbeatRequest;
use crate::pb::health::health_client::HealthClient;
use crate::pb::raft as pb;
use crate::pb::raft::raft_client::RaftClient;

/// One channel per peer, shared by all groups.
#[derive(Clone)]
pub struct GrpcTransport {
    peers: Arc<RwLock<HashMap<NodeId, Channel>>>,
    filter: NetFilter,
}

impl GrpcTransport {
    /// A transport with no peers yet, consulting `filter` before every RPC.
    pub fn new(filter: NetFilter) -> Self {
        GrpcTransport {
            peers: Arc::new(RwLock::new(HashMap::new())),
            filter,
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
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES));
        let channel = endpoint.connect_lazy();
        self.peers
            .write()
            .expect("peers lock")
            .insert(node, channel);
        Ok(())
    }

    /// Forgets `node`.
    pub fn remove_peer(&self, node: NodeId) {
        self.peers.write().expect("peers lock").remove(&node);
    }

    /// Ids of every peer with a known address.
    pub fn peer_ids(&self) -> Vec<NodeId> {
        self.peers
            .read()
            .expect("peers lock")
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
        let Some(channel) = self.peers.read().expect("peers lock").get(&target).cloned() else {
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
            .expect("peers lock")
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
        Box::pin(async move {
            let mut client = client?;
            let total_len = data.len() as u64;
            // At least one chunk, so that an empty snapshot still carries its head.
            let n_chunks = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
            let chunks = (0..n_chunks).map(move |i| {
                let start = i * SNAPSHOT_CHUNK_BYTES;
                let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
                pb::SnapshotChunk {
                    group_id: group,
                    head: if i == 0 { head.clone() } else { Bytes::new() },
                    offset: start as u64,
                    total_len,
                    data: data.slice(start..end),
                }
            });
            let call = client.install_snapshot(tokio_stream::iter(chunks));
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
}
