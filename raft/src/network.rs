//! The seam between openraft and the control plane.
//!
//! `neo-cluster` implements [`Transport`]: it moves opaque, Qiss-encoded request bodies
//! to a peer for a group and brings the response body back. It never sees an openraft
//! type, so an openraft upgrade stays inside this crate. [`Router`] adapts a transport to
//! openraft-multi's `GroupRouter`, so every group on a node shares the transport (and
//! thus one channel per peer); the group id travels in every RPC.
//!
//! On the receiving side, `neo-cluster` hands the body to [`crate::Registry::handle`]
//! (or [`crate::Registry::handle_snapshot`]), which finds the group and answers with the
//! encoded response.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetworkFactory};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::types::{GroupId, NeoRaft, Node, NodeId, Snapshot, Vote};

/// The kinds of request-response RPC a group sends (snapshots go through
/// [`Transport::send_snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// Log replication and heartbeats.
    AppendEntries,
    /// A vote request.
    Vote,
    /// A pre-vote request (does not disturb a healthy leader).
    PreVote,
    /// A leader handing leadership to the target.
    TransferLeader,
    /// A record batch for the group's leader to append, sent by a node that does not
    /// lead the group (see [`crate::forward_records`]). Not an openraft RPC: the body is
    /// a `ForwardRequest`, the answer a `Result<(base_offset, record_count),
    /// ForwardError>`, and it is answered after commit and apply.
    ForwardRecords,
}

/// Why an RPC did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached (no connection, isolated by a test filter, shut down):
    /// openraft backs off before retrying.
    #[error("node {target} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        target: NodeId,
        /// Why.
        reason: String,
    },
    /// The RPC did not finish within its deadline.
    #[error("rpc to node {target} timed out after {timeout_ms} ms")]
    Timeout {
        /// The peer.
        target: NodeId,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The connection failed mid-RPC or the peer answered with an error status.
    #[error("rpc to node {target} failed: {reason}")]
    Network {
        /// The peer.
        target: NodeId,
        /// Why.
        reason: String,
    },
}

/// Sends Raft RPC bodies to peers; implemented by `neo-cluster` over gRPC.
pub trait Transport: Send + Sync + 'static {
    /// Sends one request body of `kind` for `group` to `target` and returns the response
    /// body. `timeout` bounds the whole call.
    fn send(
        &self,
        target: NodeId,
        group: GroupId,
        kind: RpcKind,
        body: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>>;

    /// Sends a whole snapshot: `head` (the encoded vote and snapshot meta) and `data`,
    /// which the transport may split into chunks. Returns the response body. There is no
    /// per-chunk timeout: `timeout` bounds the whole transfer, so a stalled transfer ends.
    fn send_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        head: Bytes,
        data: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>>;
}

/// A transport for a node with no peers (a single-node group, an embedded broker,
/// tests): every RPC is `Unreachable`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

impl NoPeers {
    fn unreachable(target: NodeId) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Unreachable {
                target,
                reason: "this node has no peers".into(),
            })
        })
    }
}

impl Transport for NoPeers {
    fn send(
        &self,
        target: NodeId,
        _: GroupId,
        _: RpcKind,
        _: Bytes,
        _: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        Self::unreachable(target)
    }

    fn send_snapshot(
        &self,
        target: NodeId,
        _: GroupId,
        _: Bytes,
        _: Bytes,
        _: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        Self::unreachable(target)
    }
}

/// The head of a snapshot transfer: who sends it and what it covers.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct SnapshotHead {
    pub(crate) vote: Vote,
    pub(crate) meta: crate::types::SnapshotMeta,
}

/// A response as it travels: either the RPC's answer or the text of a fatal error on the
/// receiving group (it was shutting down or its storage failed).
pub(crate) type WireResult<T> = Result<T, String>;

/// Adapts a [`Transport`] to openraft-multi's `GroupRouter`.
#[derive(Clone)]
pub(crate) struct Router {
    transport: Arc<dyn Transport>,
    /// This node: openraft's timeout errors name the sender.
    local: NodeId,
    /// AppendEntries calls of this group running on their own task (see `call`).
    detached: Arc<AtomicUsize>,
}

/// Most AppendEntries calls one group runs on their own task at once. A frozen peer
/// collects one heartbeat per period until each one's deadline (about 5 each); beyond
/// the bound a call runs inline again (openraft may then cancel it), so a group never
/// holds more than this many calls that nobody waits for.
const DETACHED_CALLS_MAX: usize = 32;

impl Router {
    pub(crate) fn new(transport: Arc<dyn Transport>, local: NodeId) -> Self {
        Router {
            transport,
            local,
            detached: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One detached call counted in [`Router::detached`] until it ends.
struct DetachedCall(Arc<AtomicUsize>);

impl DetachedCall {
    fn try_new(count: &Arc<AtomicUsize>) -> Option<DetachedCall> {
        let prev = count.fetch_add(1, Ordering::AcqRel);
        let call = DetachedCall(count.clone());
        (prev < DETACHED_CALLS_MAX).then_some(call)
    }
}

impl Drop for DetachedCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn to_rpc_error(e: TransportError, kind: RpcKind, local: NodeId) -> RPCError<NeoRaft> {
    match e {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        TransportError::Timeout { target, timeout_ms } => RPCError::Timeout(Timeout {
            action: match kind {
                RpcKind::AppendEntries => RPCTypes::AppendEntries,
                RpcKind::Vote => RPCTypes::Vote,
                RpcKind::PreVote => RPCTypes::Vote,
                RpcKind::TransferLeader => RPCTypes::TransferLeader,
                // Never sent through the router (see `crate::forward`).
                RpcKind::ForwardRecords => RPCTypes::AppendEntries,
            },
            id: local,
            target,
            timeout: Duration::from_millis(timeout_ms),
        }),
        TransportError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

fn to_streaming_error(e: TransportError) -> StreamingError<NeoRaft> {
    match e {
        TransportError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
        _ => StreamingError::Network(NetworkError::new(&e)),
    }
}

/// The shortest deadline an AppendEntries (replication or heartbeat) gets, whatever the
/// heartbeat period.
pub(crate) const APPEND_ENTRIES_DEADLINE_MIN: Duration = Duration::from_millis(1_500);

/// The deadline Neo's transport gives an openraft RPC.
///
/// openraft hands every AppendEntries the heartbeat period as its time to live and
/// enforces nothing itself; `soft_ttl` (3/4 of it: 225 ms for partitions) was the
/// deadline until issue #22. A follower answers an AppendEntries that carries entries only
/// after its `fdatasync`, and a loaded 2-core machine can delay any answer by a few
/// hundred milliseconds: each such answer counted as a failure, so the leader's
/// `last_quorum_acked` stalled (a leader stepping aside with `QuorumLost` while its
/// followers were fine) and openraft's replication backed off. A heartbeat period says how
/// often to send, not how long a peer may take to answer, so AppendEntries get at least
/// [`APPEND_ENTRIES_DEADLINE_MIN`]: a dead peer is still found at once (its connection
/// is refused or reset: `Unreachable`), a frozen one in 1.5 s, and that costs only the
/// replication stream to that one peer.
///
/// Votes, pre-votes and leadership transfers get openraft's own time to live
/// (`hard_ttl`, the minimum election timeout): openraft wraps those calls in that same
/// timeout, so a shorter deadline here would only throw away answers it still accepts.
fn rpc_deadline(kind: RpcKind, option: &RPCOption) -> Duration {
    match kind {
        RpcKind::AppendEntries => option.soft_ttl().max(APPEND_ENTRIES_DEADLINE_MIN),
        RpcKind::Vote | RpcKind::PreVote | RpcKind::TransferLeader => option.hard_ttl(),
        // Not sent through the router (see `crate::forward`); its own deadline.
        RpcKind::ForwardRecords => option.soft_ttl(),
    }
}

impl Router {
    fn call<Req, Resp>(
        &self,
        target: NodeId,
        group: GroupId,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> impl Future<Output = Result<Resp, RPCError<NeoRaft>>> + Send + 'static
    where
        Req: Serialize,
        Resp: DeserializeOwned + Send + 'static,
    {
        let body = codec::encode(req);
        let transport = self.transport.clone();
        let timeout = rpc_deadline(kind, option);
        let local = self.local;
        let detached = self.detached.clone();
        async move {
            let body = body.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let send = transport.send(target, group, kind, Bytes::from(body), timeout);
            let slot = match kind {
                RpcKind::AppendEntries => DetachedCall::try_new(&detached),
                _ => None,
            };
            let resp = if let Some(slot) = slot {
                // openraft's heartbeat worker drops a heartbeat after one heartbeat period
                // (its own timeout, whatever ours is). Dropping the call would cancel the
                // gRPC request, possibly before the follower's Raft saw it; a follower
                // that hears no heartbeat for a lease calls an election. So the call runs
                // on its own task, bounded by its deadline, and still reaches the
                // follower (renewing its lease) when openraft has stopped waiting.
                tokio::spawn(async move {
                    let r = send.await;
                    drop(slot);
                    r
                })
                .await
                .map_err(|e| RPCError::Network(NetworkError::new(&io::Error::other(e))))?
            } else {
                send.await
            }
            .map_err(|e| to_rpc_error(e, kind, local))?;
            let resp: WireResult<Resp> =
                codec::decode(&resp).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            // A remote fatal error means the group there is gone: treat the peer as
            // unreachable so that openraft backs off.
            resp.map_err(|msg| RPCError::Unreachable(Unreachable::from_string(msg)))
        }
    }
}

impl GroupRouter<NeoRaft, GroupId> for Router {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: AppendEntriesRequest<NeoRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NeoRaft>, RPCError<NeoRaft>> {
        self.call(target, group_id, RpcKind::AppendEntries, &rpc, &option)
            .await
    }

    async fn vote(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: VoteRequest<NeoRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<NeoRaft>, RPCError<NeoRaft>> {
        self.call(target, group_id, RpcKind::Vote, &rpc, &option)
            .await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group_id: GroupId,
        rpc: VoteRequest<NeoRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<NeoRaft>, RPCError<NeoRaft>> {
        self.call(target, group_id, RpcKind::PreVote, &rpc, &option)
            .await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group_id: GroupId,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NeoRaft>, StreamingError<NeoRaft>> {
        crate::stats::stats().snapshot_sent();
        let head = SnapshotHead {
            vote,
            meta: snapshot.meta,
        };
        let head =
            codec::encode(&head).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let send = self.transport.send_snapshot(
            target,
            group_id,
            Bytes::from(head),
            Bytes::from(snapshot.snapshot),
            option.hard_ttl(),
        );
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r.map_err(to_streaming_error)?,
        };
        let resp: WireResult<SnapshotResponse<NeoRaft>> =
            codec::decode(&resp).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        resp.map_err(|msg| StreamingError::Unreachable(Unreachable::from_string(msg)))
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group_id: GroupId,
        req: TransferLeaderRequest<NeoRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<NeoRaft>, RPCError<NeoRaft>> {
        self.call(target, group_id, RpcKind::TransferLeader, &req, &option)
            .await
    }
}

/// Makes one openraft network client per (peer, group), all sharing the router.
pub(crate) struct NetworkFactory {
    pub(crate) router: Router,
    pub(crate) group: GroupId,
}

impl RaftNetworkFactory<NeoRaft> for NetworkFactory {
    type Network = GroupNetworkAdapter<NeoRaft, GroupId, Router>;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Self::Network {
        GroupNetworkAdapter::new(self.router.clone(), target, self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_entries_get_the_floor_and_votes_get_openrafts_ttl() {
        let short = RPCOption::new(Duration::from_millis(300));
        assert_eq!(
            rpc_deadline(RpcKind::AppendEntries, &short),
            APPEND_ENTRIES_DEADLINE_MIN
        );
        // A heartbeat period longer than the floor keeps its 3/4.
        let long = RPCOption::new(Duration::from_secs(4));
        assert_eq!(
            rpc_deadline(RpcKind::AppendEntries, &long),
            Duration::from_secs(3)
        );
        let election_min = RPCOption::new(Duration::from_millis(500));
        for kind in [RpcKind::Vote, RpcKind::PreVote, RpcKind::TransferLeader] {
            assert_eq!(
                rpc_deadline(kind, &election_min),
                Duration::from_millis(500)
            );
        }
    }
}
