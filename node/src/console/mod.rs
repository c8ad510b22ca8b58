//! The built-in web console, served by the HTTP admin listener (`crate::http`) at `/`:
//! static files embedded in the binary (plain HTML, CSS and JavaScript modules: no
//! build step, no CDN) and the JSON endpoints they call.
//!
//! | module | role |
//! |---|---|
//! | `assets` | `/` and `/console/{file}`: the embedded files (`assets/`) with their content types |
//! | `api` | reads: `/v1/topics` (partitions, leader, replicas, in sync, start/end offsets, bytes here), `/v1/topics/{t}/messages` (a bounded page of records), `/v1/queues/{q}` (delivery counts of every partition) |
//! | `stats` | `/v1/stats`: this node's produce/fetch totals and latency histograms, read out of its Prometheus text by the metric names of the contract |
//! | `actions` | POSTs: create and delete a topic, reset a group's offsets, purge a queue, redrive a dead-letter queue |
//!
//! Every read of cluster data and every action goes through this node's own client
//! port as the HTTP caller (`crate::http::caller_client`: with security on, with the
//! caller's token, so the client port checks its permissions again), each under a
//! deadline ([`CALL_TIMEOUT`]) shorter than the HTTP request's, so no request holds a
//! connection slot for long and nothing runs on the node's own tasks.
//!
//! The pages render every value with `textContent` (never HTML): topic names, keys,
//! values and headers are the writers' data. See docs/console.md.

mod actions;
mod api;
mod assets;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use crate::http::{Reply, percent_decode};
use crate::node::Shared;
use crate::security::http::Caller;

pub(crate) use assets::is_asset;

/// Deadline of one console request's calls into the cluster (below the HTTP
/// connection's `REQUEST_TIMEOUT_MS`, so the answer still gets written).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// The answer of a console GET, `None` for a path that is not the console's.
pub(crate) async fn get(
    shared: &Arc<Shared>,
    segments: &[&str],
    query: &str,
    caller: Option<&Caller>,
) -> Option<Reply> {
    Some(match segments {
        s if is_asset(s) => assets::serve(s)?,
        ["v1", "topics"] => api::topics(shared, caller).await,
        ["v1", "topics", topic, "messages"] => {
            api::messages(shared, &percent_decode(topic), query, caller).await
        }
        ["v1", "queues", name] => api::queue(shared, &percent_decode(name), caller).await,
        ["v1", "stats"] => {
            // The render reads /proc (see `crate::http`'s `/metrics`): off the executor.
            let shared = Arc::clone(shared);
            tokio::task::spawn_blocking(move || stats::stats(&shared))
                .await
                .unwrap_or_else(|e| Reply::error(500, format!("reading the stats failed: {e}")))
        }
        _ => return None,
    })
}

/// The answer of a POST (every POST is a console action).
pub(crate) async fn post(
    shared: &Arc<Shared>,
    segments: &[&str],
    body: &[u8],
    caller: Option<&Caller>,
) -> Reply {
    match segments {
        ["v1", "topics"] => actions::create_topic(shared, body, caller).await,
        ["v1", "topics", topic, "delete"] => {
            actions::delete_topic(shared, &percent_decode(topic), caller).await
        }
        ["v1", "groups", group, "reset-offsets"] => {
            actions::reset_offsets(shared, &percent_decode(group), body, caller).await
        }
        ["v1", "queues", name, "purge"] => {
            actions::purge_queue(shared, &percent_decode(name), caller).await
        }
        ["v1", "queues", name, "redrive"] => {
            actions::redrive(shared, &percent_decode(name), body, caller).await
        }
        _ => Reply::error(404, "no such action"),
    }
}

/// A client error as an HTTP answer: the broker's refusals keep their meaning (404
/// unknown, 400 invalid, 401/403 security, 409 conflicts), the rest is 503.
pub(crate) fn client_error(e: &neo_client::Error) -> Reply {
    use neo_protocol::ErrorCode as C;
    let status = match (e, e.code()) {
        (
            neo_client::Error::UnknownTopic { .. } | neo_client::Error::UnknownPartition { .. },
            _,
        ) => 404,
        (neo_client::Error::InvalidArgument(_), _) => 400,
        (neo_client::Error::GroupNotEmpty { .. }, _) => 409,
        (_, Some(C::UnknownTopic | C::UnknownPartition | C::UnknownGroup | C::UnknownQueue)) => 404,
        (_, Some(C::InvalidArgument | C::OffsetOutOfRange)) => 400,
        (_, Some(C::Unauthenticated)) => 401,
        (_, Some(C::PermissionDenied | C::PrincipalMismatch)) => 403,
        (_, Some(C::TopicAlreadyExists | C::GroupNotEmpty)) => 409,
        _ => 503,
    };
    Reply::error(status, e)
}

/// `f` under [`CALL_TIMEOUT`]: its reply, a client error's, or 504.
pub(crate) async fn with_deadline<F>(f: F) -> Reply
where
    F: std::future::Future<Output = Result<Reply, neo_client::Error>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => client_error(&e),
        Err(_) => Reply::error(504, format!("no answer within {CALL_TIMEOUT:?}")),
    }
}
