//! `list_topics`: topic names, sorted. On the metadata leader the read is linearizable
//! (ReadIndex first); elsewhere it is this node's applied state, which may lag the
//! leader's by a moment. There are no internal topics yet.

use neo_protocol::RpcError;
use neo_protocol::api::{ListTopicsRequest, ListTopicsResponse};
use neo_raft::Role;

use neo_security::{Operation, ResourceType, SecurityContext};

use crate::facade::Broker;

pub(crate) async fn list_topics(
    b: &Broker,
    ctx: &SecurityContext,
    _req: ListTopicsRequest,
) -> Result<ListTopicsResponse, RpcError> {
    let state = if b.meta_group().metrics().role == Role::Leader {
        crate::meta::linearizable(b.meta_group(), &b.meta_view())
            .await
            .unwrap_or_else(|_| b.state())
    } else {
        b.state()
    };
    let allowed = b.allowed_for(ctx);
    Ok(ListTopicsResponse {
        topics: state
            .topics
            .keys()
            .filter(|name| allowed(ResourceType::Topic, name, Operation::Describe))
            .cloned()
            .collect(),
    })
}
