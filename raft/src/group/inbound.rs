//! The receiving side of the control plane: [`Registry`] (every replica on this node, by
//! group id) dispatches a peer's RPC body or snapshot to its replica, which decodes it
//! and hands it to openraft (or to `crate::forward` for forwarded records).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};

use super::RaftGroup;
use crate::codec;
use crate::error::{Error, Result};
use crate::network::{RpcKind, SnapshotHead, WireResult};
use crate::types::{GroupId, NeoRaft, Snapshot};

impl RaftGroup {
    /// Answers one RPC body from a peer (see [`crate::Transport::send`]).
    async fn handle(&self, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>> {
        fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
            codec::decode(b).map_err(|source| Error::Codec {
                what: "rpc request",
                source,
            })
        }
        fn enc<T: serde::Serialize>(r: WireResult<T>) -> Result<Vec<u8>> {
            codec::encode(&r).map_err(|source| Error::Codec {
                what: "rpc response",
                source,
            })
        }
        match kind {
            RpcKind::AppendEntries => {
                let req: AppendEntriesRequest<NeoRaft> = dec(body)?;
                enc(self
                    .raft
                    .append_entries(req)
                    .await
                    .map_err(|e| e.to_string()))
            }
            RpcKind::Vote => {
                let req: VoteRequest<NeoRaft> = dec(body)?;
                enc(self.raft.vote(req).await.map_err(|e| e.to_string()))
            }
            RpcKind::PreVote => {
                let req: VoteRequest<NeoRaft> = dec(body)?;
                enc(self.raft.pre_vote(req).await.map_err(|e| e.to_string()))
            }
            RpcKind::TransferLeader => {
                let req: TransferLeaderRequest<NeoRaft> = dec(body)?;
                enc(self
                    .raft
                    .handle_transfer_leader(req)
                    .await
                    .map_err(|e| e.to_string()))
            }
            RpcKind::ForwardRecords => crate::forward::handle(self, body).await,
        }
    }

    /// Installs a snapshot received whole from the leader.
    async fn handle_snapshot(&self, head: &[u8], data: Vec<u8>) -> Result<Vec<u8>> {
        let head: SnapshotHead = codec::decode(head).map_err(|source| Error::Codec {
            what: "snapshot head",
            source,
        })?;
        let snap = Snapshot {
            meta: head.meta,
            snapshot: data,
        };
        let r = self
            .raft
            .install_full_snapshot(head.vote, snap)
            .await
            .map_err(|e| e.to_string());
        codec::encode(&r).map_err(|source| Error::Codec {
            what: "snapshot response",
            source,
        })
    }
}

/// Every group replica on this node, by group id: what the control-plane server
/// dispatches RPCs to.
#[derive(Default)]
pub struct Registry {
    groups: RwLock<HashMap<GroupId, Arc<RaftGroup>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a group.
    pub fn insert(&self, group: Arc<RaftGroup>) {
        self.groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(group.id(), group);
    }

    /// Removes a group (its RPCs then fail with [`Error::UnknownGroup`]).
    pub fn remove(&self, group: GroupId) -> Option<Arc<RaftGroup>> {
        self.groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&group)
    }

    /// The group, if hosted here.
    pub fn get(&self, group: GroupId) -> Option<Arc<RaftGroup>> {
        self.groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&group)
            .cloned()
    }

    /// Ids of every hosted group.
    pub fn ids(&self) -> Vec<GroupId> {
        let mut v: Vec<_> = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Answers an RPC body from a peer for `group`.
    ///
    /// A forwarded record batch for a group not hosted here is answered (typed), so
    /// that its sender asks another replica.
    pub async fn handle(&self, group: GroupId, kind: RpcKind, body: &[u8]) -> Result<Vec<u8>> {
        match self.get(group) {
            Some(g) => g.handle(kind, body).await,
            None if kind == RpcKind::ForwardRecords => crate::forward::not_hosted(),
            None => Err(Error::UnknownGroup { group }),
        }
    }

    /// Installs a whole snapshot received for `group`.
    pub async fn handle_snapshot(
        &self,
        group: GroupId,
        head: &[u8],
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let g = self.get(group).ok_or(Error::UnknownGroup { group })?;
        g.handle_snapshot(head, data).await
    }
}
