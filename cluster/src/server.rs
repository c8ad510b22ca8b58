//! The server side: the `Raft` gRPC service, dispatching each RPC by its group id to the
//! node's `neo_raft::Registry`.
//!
//! Snapshots arrive as a stream of chunks, reassembled in order up to the announced
//! size (bounded by [`SNAPSHOT_BYTES_MAX`]), checked against the announced CRC32, then
//! installed. When a stream breaks part-way, the bytes that arrived are kept (at most
//! one partial transfer per group, [`SNAPSHOT_PARTIALS_BYTES_MAX`] in all, each dropped
//! after [`SNAPSHOT_PARTIAL_TTL_MS`]) so that the sender's retry of the same snapshot
//! resumes where it stopped. A stream for a group this node does not host is refused at
//! its first chunk, before anything is buffered.
//!
//! With cluster TLS on, every Raft RPC first checks its caller ([`crate::peer`]): the
//! certificate must name a node id this node knows as a member.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use neo_raft::{GroupId, METADATA_GROUP, NodeId, Registry, RpcKind};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result, error_chain};
use crate::health::{HealthMonitor, HealthService};
use crate::incoming::{Refused, limited};
use crate::limits::{
    FORWARD_RECORDS_IN_FLIGHT_MAX, HTTP2_CONCURRENT_STREAMS_MAX, HTTP2_CONNECTION_WINDOW_BYTES,
    HTTP2_STREAM_WINDOW_BYTES, PEER_CONNECTIONS_MAX, RPC_MESSAGE_BYTES_MAX, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_PARTIAL_TTL_MS, SNAPSHOT_PARTIALS_BYTES_MAX, SNAPSHOT_PREALLOC_BYTES_MAX,
};
use crate::membership::MembershipService;
use crate::pb::health::health_server::HealthServer;
use crate::pb::membership::membership_server::MembershipServer;
use crate::pb::raft as pb;
use crate::pb::raft::raft_server::{Raft, RaftServer};
use crate::peer::{Caller, Known};
use crate::tls::ClusterTls;

/// The gRPC service in front of a registry.
pub struct RaftService {
    /// This node.
    node_id: NodeId,
    registry: Arc<Registry>,
    /// The metadata state as this node applies it: the registered nodes, for the
    /// caller check.
    meta: neo_broker::meta::MetaView,
    /// Cluster TLS on: callers are checked ([`crate::peer`]).
    tls: bool,
    partials: Arc<Partials>,
    /// Permits for forwarded record batches served at once
    /// ([`FORWARD_RECORDS_IN_FLIGHT_MAX`]).
    forwards: Semaphore,
}

/// What a snapshot transfer carries: the head (sender's vote, so its node id and term,
/// and the snapshot meta, so the snapshot id), the size and the CRC32 of the data.
#[derive(Clone, PartialEq, Eq)]
struct TransferId {
    head: Bytes,
    total_len: u64,
    crc32: u32,
}

/// The prefix of an interrupted transfer, kept for a retry to resume.
struct Partial {
    id: TransferId,
    data: Vec<u8>,
    generation: u64,
    saved: Instant,
}

/// Interrupted transfers, at most one per group.
#[derive(Default)]
struct Partials {
    inner: Mutex<PartialsInner>,
}

#[derive(Default)]
struct PartialsInner {
    by_group: HashMap<GroupId, Partial>,
    next_generation: u64,
}

fn partial_ttl() -> Duration {
    Duration::from_millis(SNAPSHOT_PARTIAL_TTL_MS)
}

impl PartialsInner {
    fn prune(&mut self) {
        let ttl = partial_ttl();
        self.by_group.retain(|_, p| p.saved.elapsed() < ttl);
    }
}

impl Partials {
    fn lock(&self) -> std::sync::MutexGuard<'_, PartialsInner> {
        // The data is plain bytes: a panic elsewhere cannot leave it inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held of transfer `id` of `group` (0 when none).
    fn held(&self, group: GroupId, id: &TransferId) -> u64 {
        let mut inner = self.lock();
        inner.prune();
        match inner.by_group.get(&group) {
            Some(p) if p.id == *id => p.data.len() as u64,
            _ => 0,
        }
    }

    /// Takes the kept prefix of transfer `id` of `group`, if it is exactly `offset`
    /// bytes long. The group's partial is removed either way.
    fn take(&self, group: GroupId, id: &TransferId, offset: u64) -> Option<Vec<u8>> {
        let mut inner = self.lock();
        inner.prune();
        let p = inner.by_group.remove(&group)?;
        (p.id == *id && p.data.len() as u64 == offset).then_some(p.data)
    }

    fn drop_group(&self, group: GroupId) {
        self.lock().by_group.remove(&group);
    }

    /// Keeps `data`, the prefix of transfer `id` of `group`, replacing the group's
    /// previous partial; drops the oldest others while over the byte bound; forgets it
    /// after the TTL.
    fn save(self: &Arc<Self>, group: GroupId, id: TransferId, data: Vec<u8>) {
        let len = data.len() as u64;
        if len == 0 || len > SNAPSHOT_PARTIALS_BYTES_MAX {
            return;
        }
        let generation = {
            let mut inner = self.lock();
            inner.prune();
            inner.by_group.remove(&group);
            loop {
                let held: u64 = inner.by_group.values().map(|p| p.data.len() as u64).sum();
                if held + len <= SNAPSHOT_PARTIALS_BYTES_MAX {
                    break;
                }
                let oldest = inner
                    .by_group
                    .iter()
                    .min_by_key(|(_, p)| p.saved)
                    .map(|(g, _)| *g);
                match oldest {
                    Some(g) => inner.by_group.remove(&g),
                    None => break,
                };
            }
            inner.next_generation += 1;
            let generation = inner.next_generation;
            inner.by_group.insert(
                group,
                Partial {
                    id,
                    data,
                    generation,
                    saved: Instant::now(),
                },
            );
            generation
        };
        tracing::debug!(group, bytes = len, "kept a partial snapshot transfer");
        // Release the memory after the TTL even if no snapshot RPC comes to prune it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = Arc::downgrade(self);
            rt.spawn(async move {
                tokio::time::sleep(partial_ttl()).await;
                if let Some(me) = me.upgrade() {
                    let mut inner = me.lock();
                    if inner.by_group.get(&group).map(|p| p.generation) == Some(generation) {
                        inner.by_group.remove(&group);
                    }
                }
            });
        }
    }
}

/// A snapshot being received. Dropped before completion (the stream broke, the client
/// went away and the handler was cancelled), it keeps what arrived for a retry.
struct Receiving {
    partials: Arc<Partials>,
    group: GroupId,
    /// `None`: not resumable (no CRC announced, or a protocol violation).
    id: Option<TransferId>,
    data: Vec<u8>,
}

impl Receiving {
    /// The whole snapshot: nothing is kept.
    fn finish(mut self) -> Vec<u8> {
        self.id = None;
        std::mem::take(&mut self.data)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.partials
                .save(self.group, id, std::mem::take(&mut self.data));
        }
    }
}

/// Snapshots above this size are checksummed off the async workers.
const CRC_INLINE_BYTES_MAX: usize = 1024 * 1024;

async fn crc_matches(data: Vec<u8>, crc: u32) -> Result<Vec<u8>, Status> {
    let ok = move |data: &[u8]| crc32fast::hash(data) == crc;
    let (matches, data) = if data.len() <= CRC_INLINE_BYTES_MAX {
        (ok(&data), data)
    } else {
        tokio::task::spawn_blocking(move || (ok(&data), data))
            .await
            .map_err(|e| Status::internal(format!("snapshot checksum task: {e}")))?
    };
    if matches {
        Ok(data)
    } else {
        Err(Status::data_loss("snapshot CRC32 mismatch"))
    }
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
    /// What this node knows of `node` for an RPC of `group`. Cheap on the common path
    /// (a registered node: one map look-up); the group memberships are read only for
    /// ids not registered (yet).
    fn known(&self, group: GroupId, node: NodeId) -> Known {
        let registered = {
            let meta = self.meta.borrow();
            if node == self.node_id || meta.nodes.contains_key(&node) {
                return Known::Member;
            }
            !meta.nodes.is_empty()
        };
        let mut knows_a_cluster = registered;
        for g in [METADATA_GROUP, group] {
            if let Some(g) = self.registry.get(g) {
                if g.member_addr(node).is_some() {
                    return Known::Member;
                }
                knows_a_cluster |= g.member_addr(self.node_id).is_some();
            }
        }
        if knows_a_cluster {
            Known::Stranger
        } else {
            Known::NoView
        }
    }

    /// Refuses a caller that may not send Raft RPCs of `group` (TLS on only).
    fn check_caller<T>(&self, group: GroupId, req: &Request<T>) -> Result<(), Status> {
        if !self.tls {
            return Ok(());
        }
        Caller::of(self.tls, req)
            .may_send_raft(|node| self.known(group, node))
            .map_err(|r| {
                tracing::warn!(target: "neo::audit", group, "cluster port: {r}");
                Status::from(r)
            })
    }

    async fn call(
        &self,
        kind: RpcKind,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.check_caller(req.get_ref().group_id, &req)?;
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

    async fn forward_records(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.check_caller(req.get_ref().group_id, &req)?;
        // Held until the batch commits (or the wait ends).
        let _permit = self.forwards.try_acquire().map_err(|_| {
            Status::resource_exhausted(format!(
                "more than {FORWARD_RECORDS_IN_FLIGHT_MAX} forwarded record batches in flight"
            ))
        })?;
        self.call(RpcKind::ForwardRecords, req).await
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let caller = Caller::of(self.tls, &req);
        let mut stream = req.into_inner();
        // Bounded by the sender's deadline (grpc-timeout; neo's transport sets one per
        // transfer); the first chunk is one message of at most `RPC_MESSAGE_BYTES_MAX`.
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        if self.tls {
            caller
                .may_send_raft(|node| self.known(first.group_id, node))
                .map_err(|r| {
                    tracing::warn!(target: "neo::audit", group = first.group_id, "cluster port: {r}");
                    Status::from(r)
                })?;
        }
        // Checked before anything is kept or allocated: a stream for a group this node
        // does not host would be refused at the end anyway.
        if self.registry.get(first.group_id).is_none() {
            return Err(raft_status(neo_raft::Error::UnknownGroup {
                group: first.group_id,
            }));
        }
        if first.total_len > SNAPSHOT_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds {SNAPSHOT_BYTES_MAX}",
                first.total_len
            )));
        }
        let (group, total, crc) = (first.group_id, first.total_len, first.crc32);
        let head = first.head;
        let id = crc.map(|crc32| TransferId {
            head: head.clone(),
            total_len: total,
            crc32,
        });
        let data = if first.offset == 0 {
            // A fresh start replaces whatever this group kept.
            self.partials.drop_group(group);
            Vec::with_capacity(total.min(SNAPSHOT_PREALLOC_BYTES_MAX) as usize)
        } else {
            let kept = id
                .as_ref()
                .and_then(|id| self.partials.take(group, id, first.offset));
            match kept {
                Some(d) => d,
                None => {
                    return Err(Status::failed_precondition(format!(
                        "no kept snapshot part of {} bytes to resume from",
                        first.offset
                    )));
                }
            }
        };
        let mut rx = Receiving {
            partials: self.partials.clone(),
            group,
            id,
            data,
        };
        let mut chunk = Some((first.offset, first.data));
        loop {
            if let Some((offset, c)) = chunk.take() {
                let have = rx.data.len() as u64;
                if offset != have || have + c.len() as u64 > total {
                    rx.id = None;
                    return Err(Status::invalid_argument(
                        "snapshot chunk out of order or too long",
                    ));
                }
                rx.data.extend_from_slice(&c);
            }
            // A broken stream returns here; `rx` keeps what arrived.
            match stream.next().await {
                None => break,
                Some(c) => {
                    let c = c?;
                    if c.group_id != group || c.total_len != total || c.crc32 != crc {
                        rx.id = None;
                        return Err(Status::invalid_argument(
                            "snapshot chunk from another transfer",
                        ));
                    }
                    chunk = Some((c.offset, c.data));
                }
            }
        }
        if (rx.data.len() as u64) < total {
            let kept = if rx.id.is_some() {
                "kept for a retry to resume"
            } else {
                "not resumable"
            };
            return Err(Status::aborted(format!(
                "snapshot stream ended at byte {} of {total}; {kept}",
                rx.data.len()
            )));
        }
        let data = rx.finish();
        let data = match crc {
            Some(crc) => crc_matches(data, crc).await?,
            None => data,
        };
        let body = self
            .registry
            .handle_snapshot(group, &head, data)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(pb::RaftReply { body: body.into() }))
    }

    async fn snapshot_resume(
        &self,
        req: Request<pb::SnapshotProbe>,
    ) -> Result<Response<pb::SnapshotResumeReply>, Status> {
        self.check_caller(req.get_ref().group_id, &req)?;
        let p = req.into_inner();
        let id = TransferId {
            head: p.head,
            total_len: p.total_len,
            crc32: p.crc32,
        };
        Ok(Response::new(pb::SnapshotResumeReply {
            offset: self.partials.held(p.group_id, &id),
        }))
    }
}

/// A running control-plane server.
pub struct ServerHandle {
    addr: SocketAddr,
    /// Connections closed at accept by [`PEER_CONNECTIONS_MAX`].
    refused: Refused,
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

    /// Connections closed as they were accepted because [`PEER_CONNECTIONS_MAX`] were
    /// open, since the server started.
    pub fn refused_connections(&self) -> u64 {
        self.refused.get()
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
    /// The metadata state as this node applies it (registered nodes, for status).
    pub meta: neo_broker::meta::MetaView,
}

/// Binds `addr` and serves the Raft, Membership and Health services in plaintext until
/// shut down.
pub async fn serve(addr: SocketAddr, plane: ControlPlane) -> Result<ServerHandle> {
    serve_with_tls(addr, plane, None).await
}

/// [`serve`], with mutual TLS when `tls` is given: every client must present a
/// certificate signed by the cluster CA (see [`ClusterTls`]), and callers are checked by
/// the node id their certificate names ([`crate::peer`]). At most
/// [`PEER_CONNECTIONS_MAX`] connections are open at once.
pub async fn serve_with_tls(
    addr: SocketAddr,
    plane: ControlPlane,
    tls: Option<&ClusterTls>,
) -> Result<ServerHandle> {
    serve_limited(addr, plane, tls, PEER_CONNECTIONS_MAX).await
}

/// [`serve_with_tls`] with another connection limit (tests).
pub(crate) async fn serve_limited(
    addr: SocketAddr,
    plane: ControlPlane,
    tls: Option<&ClusterTls>,
    connections_max: usize,
) -> Result<ServerHandle> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|e| Error::Server {
                reason: format!("tls: {}", error_chain(&e)),
            })?;
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let refused = Refused::default();
    let incoming = limited(listener, connections_max, refused.clone());
    let join = spawn_server(builder, incoming, plane, tls.is_some(), async {
        let _ = stop_rx.await;
    });
    Ok(ServerHandle {
        addr: local,
        refused,
        stop: Some(stop_tx),
        join,
    })
}

fn spawn_server(
    builder: tonic::transport::Server,
    incoming: impl tokio_stream::Stream<Item = std::io::Result<crate::incoming::LimitedConn>>
    + Send
    + 'static,
    plane: ControlPlane,
    tls: bool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let membership = MembershipServer::new(MembershipService {
        node_id: plane.node_id,
        registry: plane.registry.clone(),
        health: plane.health.clone(),
        meta: plane.meta.clone(),
        tls,
    });
    let health = HealthServer::new(HealthService {
        node_id: plane.node_id,
    });
    let svc = RaftServer::new(RaftService {
        node_id: plane.node_id,
        registry: plane.registry,
        meta: plane.meta,
        tls,
        partials: Arc::new(Partials::default()),
        forwards: Semaphore::new(FORWARD_RECORDS_IN_FLIGHT_MAX),
    })
    .max_decoding_message_size(RPC_MESSAGE_BYTES_MAX)
    .max_encoding_message_size(RPC_MESSAGE_BYTES_MAX);
    tokio::spawn(
        builder
            // A 64-entry AppendEntries is ~1 MiB: let it arrive without waiting for
            // WINDOW_UPDATEs every 64 KiB (HTTP/2's default window).
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES))
            .max_concurrent_streams(Some(HTTP2_CONCURRENT_STREAMS_MAX))
            .add_service(svc)
            .add_service(membership)
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, stop),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(head: &'static [u8], total_len: u64, crc32: u32) -> TransferId {
        TransferId {
            head: Bytes::from_static(head),
            total_len,
            crc32,
        }
    }

    #[tokio::test]
    async fn partials_resume_only_the_same_transfer_one_per_group() {
        let p = Arc::new(Partials::default());
        let a = id(b"head-a", 100, 7);
        assert_eq!(p.held(1, &a), 0);
        p.save(1, a.clone(), vec![1; 40]);
        assert_eq!(p.held(1, &a), 40);
        // Another snapshot (head, size or CRC differ) resumes nothing.
        assert_eq!(p.held(1, &id(b"head-b", 100, 7)), 0);
        assert_eq!(p.held(1, &id(b"head-a", 101, 7)), 0);
        assert_eq!(p.held(1, &id(b"head-a", 100, 8)), 0);
        assert_eq!(p.held(2, &a), 0);
        // A wrong offset takes nothing, and drops the group's partial.
        assert_eq!(p.take(1, &a, 39), None);
        assert_eq!(p.held(1, &a), 0);
        p.save(1, a.clone(), vec![1; 40]);
        assert_eq!(p.take(1, &a, 40), Some(vec![1; 40]));
        assert_eq!(p.held(1, &a), 0);
        // At most one per group: a newer transfer replaces the older.
        let b = id(b"head-b", 100, 9);
        p.save(1, a.clone(), vec![1; 10]);
        p.save(1, b.clone(), vec![2; 20]);
        assert_eq!((p.held(1, &a), p.held(1, &b)), (0, 20));
        // Empty prefixes are not kept.
        p.save(3, a.clone(), Vec::new());
        assert_eq!(p.held(3, &a), 0);
        p.drop_group(1);
        assert_eq!(p.held(1, &b), 0);
    }

    #[tokio::test]
    async fn crc_is_checked() {
        let data = vec![5u8; 3 * CRC_INLINE_BYTES_MAX];
        let crc = crc32fast::hash(&data);
        assert!(crc_matches(data.clone(), crc).await.is_ok());
        let err = crc_matches(data, crc ^ 1).await.expect_err("mismatch");
        assert_eq!(err.code(), tonic::Code::DataLoss);
        assert!(crc_matches(vec![1, 2, 3], 0).await.is_err());
    }
}
