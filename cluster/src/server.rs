//! The server side: the `Raft` gRPC service, dispatching each RPC by its group id to the
//! node's `neo_raft::Registry`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neo_raft::{Registry, RpcKind};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::health::{HealthMonitor, HealthService};
use crate::limits::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_STREAM_WINDOW_BYTES, RPC_MESSAGE_BYTES_MAX,
    SNAPSHOT_BYTES_MAX,
};
use crate::membership::MembershipService;
use crate::pb::health::health_server::HealthServer;
use crate::pb::membership::membership_server::MembershipServer;
use crate::pb::raft as pb;
use crate::pb::raft::raft_server::{Raft, RaftServer};

/// The gRPC service in front of a registry.
pub struct RaftService {
    registry: Arc<Registry>,
}

fn raft_status(e: neo_raft::Error) -> Status {
    match e {
        neo_raft::Error::UnknownGroup { .. } => Status::not_found(e.to_string()),
        neo_raft::Error::Codec { .. } | neo_raft::Error::BadBatch { .. } => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

impl RaftService {
    async fn call(
        &self,
        kind: RpcKind,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let req = req.into_inner();
        let body = self
            .registry
            .handle(req.group_id, kind, &req.body)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(pb::RaftReply { body: body.into() }))
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.call(RpcKind::AppendEntries, req).await
    }

    async fn vote(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.call(RpcKind::Vote, req).await
    }

    async fn pre_vote(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.call(RpcKind::PreVote, req).await
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.call(RpcKind::TransferLeader, req).await
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        if first.total_len > SNAPSHOT_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds {SNAPSHOT_BYTES_MAX}",
                first.total_len
            )));
        }
        let (group, head, total) = (first.group_id, first.head, first.total_len);
        let mut data = Vec::with_capacity(total as usize);
        let mut chunk = Some(first.data);
        let mut offset = first.offset;
        loop {
            if let Some(c) = chunk.take() {
                if offset != data.len() as u64 || data.len() as u64 + c.len() as u64 > total {
                    return Err(Status::invalid_argument(
                        "snapshot chunk out of order or too long",
                    ));
                }
                data.extend_from_slice(&c);
            }
            match stream.next().await {
                None => break,
                Some(c) => {
                    let c = c?;
                    if c.group_id != group || c.total_len != total {
                        return Err(Status::invalid_argument(
                            "snapshot chunk from another transfer",
                        ));
                    }
                    offset = c.offset;
                    chunk = Some(c.data);
                }
            }
        }
        if data.len() as u64 != total {
            return Err(Status::invalid_argument("snapshot stream ended early"));
        }
        let body = self
            .registry
            .handle_snapshot(group, &head, data)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(pb::RaftReply { body: body.into() }))
    }
}

/// A running control-plane server.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// How long a graceful stop may wait for in-flight RPCs before connections are cut.
const SHUTDOWN_GRACE_MS: u64 = 2_000;

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight RPCs finish for a short grace period, then cuts
    /// every connection.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
        if tokio::time::timeout(grace, &mut self.join).await.is_err() {
            self.join.abort();
            let _ = (&mut self.join).await;
        }
    }
}

/// What one node's control plane serves.
#[derive(Clone)]
pub struct ControlPlane {
    /// This node.
    pub node_id: neo_raft::NodeId,
    /// Every Raft group hosted here (the metadata group, if hosted, under
    /// `neo_raft::METADATA_GROUP`).
    pub registry: Arc<Registry>,
    /// Node heartbeat results, for status.
    pub health: HealthMonitor,
}

/// Binds `addr` and serves the Raft, Membership and Health services until shut down.
pub async fn serve(addr: SocketAddr, plane: ControlPlane) -> Result<ServerHandle> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let join = spawn_server(listener, plane, async {
        let _ = stop_rx.await;
    });
    Ok(ServerHandle {
        addr: local,
        stop: Some(stop_tx),
        join,
    })
}

fn spawn_server(
    listener: TcpListener,
    plane: ControlPlane,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let membership = MembershipServer::new(MembershipService {
        node_id: plane.node_id,
        registry: plane.registry.clone(),
        health: plane.health.clone(),
    });
    let health = HealthServer::new(HealthService {
        node_id: plane.node_id,
    });
    let svc = RaftServer::new(RaftService {
        registry: plane.registry,
    })
    .max_decoding_message_size(RPC_MESSAGE_BYTES_MAX)
    .max_encoding_message_size(RPC_MESSAGE_BYTES_MAX);
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // A 64-entry AppendEntries is ~1 MiB: let it arrive without waiting for
            // WINDOW_UPDATEs every 64 KiB (HTTP/2's default window).
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES))
            .add_service(svc)
            .add_service(membership)
            .add_service(health)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop),
    )
}
