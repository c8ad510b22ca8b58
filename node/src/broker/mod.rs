//! The broker service (`neo.broker`): one file per method, registered in the order of
//! [`neo_protocol::api::BROKER_METHODS`] so that wire ids are stable.
//!
//! | id | method | file | where it runs |
//! |---|---|---|---|
//! | 1 | `produce` | `produce.rs` | partition leader (else `NotLeader` + hint) |
//! | 2 | `fetch` | `fetch.rs` | partition leader (else `NotLeader` + hint) |
//! | 3 | `metadata` | `metadata.rs` | any node (its applied metadata) |
//! | 4 | `create_topic` | `create_topic.rs` | metadata leader (else `NotLeader` + hint) |
//! | 5 | `delete_topic` | `delete_topic.rs` | metadata leader (else `NotLeader` + hint) |
//! | 6 | `list_topics` | `list_topics.rs` | any node (linearizable on the leader) |
//! | 7 | `describe_topic` | `describe_topic.rs` | any node (its applied metadata) |
//! | 8-15 | groups, queues | `unsupported.rs` | not implemented: `UnknownMethod` |

mod create_topic;
mod delete_topic;
mod describe_topic;
pub(crate) mod fetch;
mod list_topics;
mod metadata;
mod produce;
mod unsupported;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use neo_protocol::api::{BROKER_METHODS, BROKER_SERVICE};
use neo_protocol::{ErrorCode, Method, MethodBuilder, RequestContext, RpcError, ServiceBuilder};
use neo_raft::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::{Lookup, Shared};

/// Timeout of the admin methods (a topic create waits for its partitions' leaders).
const ADMIN_TIMEOUT_MS: u64 = 30_000;
/// Extra time a method's timeout grants beyond the request's own bound, so that the
/// handler answers with its typed error (`NotEnoughReplicas`, an empty fetch) before
/// the framework's `Timeout`.
const HANDLER_SLACK_MS: u64 = 5_000;

/// A typed async method whose handler gets the shared node state.
fn method<Req, Resp, F, Fut>(
    shared: &Arc<Shared>,
    name: &'static str,
    timeout_ms: u64,
    f: F,
) -> (&'static str, Method)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + 'static,
    F: Fn(Arc<Shared>, RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
{
    let (_, _, input, output) = BROKER_METHODS
        .iter()
        .find(|(_, n, _, _)| *n == name)
        .copied()
        .expect("method is in BROKER_METHODS");
    let shared = shared.clone();
    let m = MethodBuilder::new(name)
        .input(input)
        .output(output)
        .timeout(Duration::from_millis(timeout_ms))
        .async_handler_with_context(move |ctx: RequestContext, req: Req| {
            shared.metrics.saw_peer(ctx.peer_addr());
            f(shared.clone(), ctx, req)
        });
    (name, m)
}

/// The `neo.broker` service with every method, in wire-id order.
pub(crate) fn service(shared: Arc<Shared>) -> ServiceBuilder {
    let l = &shared.limits;
    let produce_ms = u64::from(l.produce_timeout_ms_max) + HANDLER_SLACK_MS;
    let fetch_ms = u64::from(l.fetch_wait_ms_max) + HANDLER_SLACK_MS;
    let mut methods = vec![
        method(&shared, "produce", produce_ms, produce::handle),
        method(&shared, "fetch", fetch_ms, fetch::handle),
        method(&shared, "metadata", ADMIN_TIMEOUT_MS, metadata::handle),
        method(
            &shared,
            "create_topic",
            ADMIN_TIMEOUT_MS,
            create_topic::handle,
        ),
        method(
            &shared,
            "delete_topic",
            ADMIN_TIMEOUT_MS,
            delete_topic::handle,
        ),
        method(
            &shared,
            "list_topics",
            ADMIN_TIMEOUT_MS,
            list_topics::handle,
        ),
        method(
            &shared,
            "describe_topic",
            ADMIN_TIMEOUT_MS,
            describe_topic::handle,
        ),
    ];
    methods.extend(unsupported::methods());
    // Wire ids are positions: the table and the registration must agree exactly.
    assert_eq!(
        methods.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        BROKER_METHODS
            .iter()
            .map(|(_, n, _, _)| *n)
            .collect::<Vec<_>>(),
        "broker methods must be registered in BROKER_METHODS order"
    );
    let mut svc = ServiceBuilder::new(BROKER_SERVICE)
        .version(env!("CARGO_PKG_VERSION"))
        .namespace("neo");
    for (_, m) in methods {
        svc = svc.method(m);
    }
    svc
}

/// `NotLeader` pointing at `leader`'s advertised client address (no hint if unknown).
pub(crate) fn not_leader(shared: &Shared, leader: Option<NodeId>, what: &str) -> RpcError {
    let addr = leader.and_then(|l| shared.client_addr_of(l));
    let mut e = RpcError::not_leader(addr.as_deref());
    e.message = match (leader, &addr) {
        (Some(l), Some(a)) => format!("not the leader of {what}; node {l} at {a} is"),
        _ => format!("not the leader of {what}; no leader known yet, retry shortly"),
    };
    e
}

/// The wire error of a failed topic/partition lookup.
pub(crate) fn lookup_error(e: Lookup, topic: &str, partition: u32) -> RpcError {
    match e {
        Lookup::UnknownTopic => {
            RpcError::new(ErrorCode::UnknownTopic, format!("unknown topic {topic:?}"))
        }
        Lookup::UnknownPartition { count } => RpcError::new(
            ErrorCode::UnknownPartition,
            format!("topic {topic:?} has {count} partitions; partition {partition} does not exist"),
        ),
    }
}

/// `NotLeader` without a hint (the client refreshes its metadata), with `message`.
fn no_leader_known(message: String) -> RpcError {
    let mut n = RpcError::not_leader(None);
    n.message = message;
    n
}

/// The wire error of a failed Raft operation on a group about `what`.
pub(crate) fn raft_error(shared: &Shared, e: neo_raft::Error, what: &str) -> RpcError {
    use neo_raft::Error as E;
    match e {
        E::NotLeader { leader, .. } => not_leader(shared, leader, what),
        // Refused before it was written: nothing to wait for, the client looks for the
        // new leader.
        E::QuorumLost { written: false, .. } => no_leader_known(format!("{what}: {e}")),
        // In this leader's log: the outcome is unknown, as after a produce timeout.
        E::QuorumLost { written: true, .. } => {
            RpcError::new(ErrorCode::NotEnoughReplicas, format!("{what}: {e}"))
        }
        E::Busy { .. } => RpcError::new(ErrorCode::Busy, format!("{what}: {e}")),
        E::DuplicateSequence { .. } => {
            RpcError::new(ErrorCode::DuplicateSequence, format!("{what}: {e}"))
        }
        E::BatchTooLarge { .. } | E::BadBatch { .. } | E::ControlBatch => {
            RpcError::new(ErrorCode::InvalidRecordBatch, e.to_string())
        }
        // The replica stopped (shutdown, topic deleted, storage failure): another
        // replica takes over, so the client should look for the new leader.
        E::Fatal { .. } | E::UnknownGroup { .. } => {
            if *shared.shutdown.borrow() {
                RpcError::new(
                    ErrorCode::ShuttingDown,
                    format!("{what}: node shutting down"),
                )
            } else {
                no_leader_known(format!("{what}: replica stopped: {e}"))
            }
        }
        other => RpcError::internal(format!("{what}: {other}")),
    }
}
