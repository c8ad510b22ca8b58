//! Helpers shared by the tests that run one Raft group without peers.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use neo_raft::{GroupId, NodeId, RpcKind, Transport, TransportError};

/// A transport for groups that have no peers: every RPC is `Unreachable`.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(
        &self,
        target: NodeId,
        _group: GroupId,
        _kind: RpcKind,
        _body: Bytes,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Unreachable {
                target,
                reason: "no peers".into(),
            })
        })
    }

    fn send_snapshot(
        &self,
        target: NodeId,
        _group: GroupId,
        _head: Bytes,
        _data: Bytes,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Unreachable {
                target,
                reason: "no peers".into(),
            })
        })
    }
}
