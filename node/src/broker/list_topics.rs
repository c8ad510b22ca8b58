//! `list_topics`: topic names, sorted. On the metadata leader the read is linearizable
//! (ReadIndex first); elsewhere it is this node's applied state, which may lag the
//! leader's by a moment. There are no internal topics yet.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use neo_protocol::api::{ListTopicsRequest, ListTopicsResponse};
use neo_protocol::{RequestContext, RpcError};
use neo_raft::Role;

use crate::node::Shared;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    _ctx: RequestContext,
    _req: ListTopicsRequest,
) -> Result<ListTopicsResponse, RpcError> {
    shared
        .metrics
        .admin_requests
        .fetch_add(1, Ordering::Relaxed);
    let state = if shared.meta.metrics().role == Role::Leader {
        shared
            .meta
            .linearizable_meta()
            .await
            .unwrap_or_else(|_| shared.state())
    } else {
        shared.state()
    };
    Ok(ListTopicsResponse {
        topics: state.topics.keys().cloned().collect(),
    })
}
