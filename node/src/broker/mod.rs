//! The broker service (`neo.broker`) on the Neo RPC port: every method hands its
//! request, with the connection's [`SecurityContext`], to the node's
//! [`neo_broker::Broker`], and records the request's metrics. Methods are registered in
//! the order of [`neo_protocol::api::BROKER_METHODS`] so that wire ids are stable.
//!
//! | id | method | broker operation |
//! |---|---|---|
//! | 1 | `produce` | `Broker::produce` |
//! | 2 | `fetch` | `Broker::fetch` |
//! | 3 | `metadata` | `Broker::metadata` |
//! | 4 | `create_topic` | `Broker::create_topic` |
//! | 5 | `delete_topic` | `Broker::delete_topic` |
//! | 6 | `list_topics` | `Broker::list_topics` |
//! | 7 | `describe_topic` | `Broker::describe_topic` |
//! | 8 | `join_group` | `Broker::join_group` |
//! | 9 | `heartbeat_group` | `Broker::heartbeat_group` (held up to 5 s) |
//! | 10 | `leave_group` | `Broker::leave_group` |
//! | 11 | `commit_offsets` | `Broker::commit_offsets` |
//! | 12 | `fetch_offsets` | `Broker::fetch_offsets` |
//! | 13 | `queue_receive` | `Broker::queue_receive` (long poll up to `fetch_wait_ms_max`) |
//! | 14 | `queue_ack` | `Broker::queue_ack` |
//! | 15 | `queue_nack` | `Broker::queue_nack` |
//! | 16 | `find_coordinator` | `Broker::find_coordinator` |
//! | 17 | `list_groups` | `Broker::list_groups` |
//! | 18 | `describe_group` | `Broker::describe_group` |
//! | 19 | `delete_group` | `Broker::delete_group` |
//! | 20 | `list_offsets` | `Broker::list_offsets` |
//! | 21-22 | `alter_security`, `describe_security` | `Broker::alter_security`, `Broker::describe_security` |
//! | 23-26 | `create_queue`, `delete_queue`, `list_queues`, `describe_queue` | `Broker::` same name |
//! | 27-28 | `queue_extend`, `queue_term` | `Broker::queue_extend`, `Broker::queue_term` |
//! | 29 | `purge_queue` | `Broker::purge_queue` |

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::future::Either;
use neo_broker::SecurityContext;
use neo_protocol::api::{Acks, BROKER_METHODS, BROKER_SERVICE};
use neo_protocol::{Method, MethodBuilder, RequestContext, RpcError, ServiceBuilder};
use neo_security::rate::LimitKind;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::Shared;

/// Timeout of the admin methods (a topic create waits for its partitions' leaders).
const ADMIN_TIMEOUT_MS: u64 = 30_000;
/// Extra time a method's timeout grants beyond the request's own bound, so that the
/// broker answers with its typed error (`NotEnoughReplicas`, an empty fetch) before
/// the framework's `Timeout`.
const HANDLER_SLACK_MS: u64 = 5_000;

/// The security context of a request on this connection.
fn security_context(ctx: &RequestContext) -> SecurityContext {
    let principal = ctx.principal();
    let mut sc = SecurityContext::client(principal.map(|p| p.name.clone()), ctx.peer_addr());
    if let Some(p) = principal {
        sc.roles = p.roles.clone();
    }
    sc
}

/// When a request's frame was read and when its body was decoded (its handler
/// called): the first phases of a slow request's log line.
#[derive(Debug, Clone, Copy)]
struct Received {
    at: Instant,
    decoded: Instant,
}

/// A typed async method whose handler gets the shared node state and the request's
/// security context.
fn method<Req, Resp, F, Fut>(
    shared: &Arc<Shared>,
    name: &'static str,
    timeout_ms: u64,
    f: F,
) -> (&'static str, Method)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Arc<Shared>, SecurityContext, Req, Received) -> Fut + Send + Sync + 'static,
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
            let received = Received {
                at: ctx.received_at(),
                decoded: Instant::now(),
            };
            shared.metrics.saw_peer(ctx.peer_addr());
            let sc = security_context(&ctx);
            // Every request costs one `requests/s` token (security on only).
            let refusal = shared
                .throttle
                .as_ref()
                .and_then(|t| t.check(&sc, LimitKind::Requests, 1).err());
            match refusal {
                None => Either::Left(f(shared.clone(), sc, req, received)),
                Some(e) => {
                    shared.metrics.throttled.fetch_add(1, Ordering::Relaxed);
                    Either::Right(std::future::ready(Err(e)))
                }
            }
        });
    (name, m)
}

/// An admin method: counted, then handed to the broker.
macro_rules! admin {
    ($shared:expr, $name:literal, $op:ident) => {
        method(
            $shared,
            $name,
            ADMIN_TIMEOUT_MS,
            |s: Arc<Shared>, ctx: SecurityContext, req, _: Received| async move {
                s.metrics.admin_requests.inc();
                s.broker.$op(&ctx, req).await
            },
        )
    };
}

/// A consumer-group method: counted, then handed to the broker.
macro_rules! group {
    ($shared:expr, $name:literal, $op:ident) => {
        method(
            $shared,
            $name,
            ADMIN_TIMEOUT_MS,
            |s: Arc<Shared>, ctx: SecurityContext, req, _: Received| async move {
                s.metrics.group_requests.inc();
                let r = s.broker.$op(&ctx, req).await;
                if r.is_err() {
                    s.metrics.group_errors.inc();
                }
                r
            },
        )
    };
}

/// A queue settle method (ack, nack, extend, term): counted, then handed to the broker.
macro_rules! queue {
    ($shared:expr, $name:literal, $op:ident) => {
        method(
            $shared,
            $name,
            ADMIN_TIMEOUT_MS,
            |s: Arc<Shared>, ctx: SecurityContext, req, _: Received| async move {
                s.metrics.queue_requests.inc();
                let r = s.broker.$op(&ctx, req).await;
                if r.is_err() {
                    s.metrics.queue_errors.inc();
                }
                r
            },
        )
    };
}

async fn queue_receive(
    shared: Arc<Shared>,
    ctx: SecurityContext,
    req: neo_protocol::api::QueueReceiveRequest,
    _: Received,
) -> Result<neo_protocol::api::QueueReceiveResponse, RpcError> {
    let m = &shared.metrics;
    m.queue_requests.inc();
    let r = shared.broker.queue_receive(&ctx, req).await;
    match &r {
        Ok(resp) => {
            m.queue_delivered.inc_by(resp.messages.len() as u64);
        }
        Err(_) => {
            m.queue_errors.inc();
        }
    }
    r
}

/// The `neo.broker` service with every method, in wire-id order.
pub(crate) fn service(shared: Arc<Shared>) -> ServiceBuilder {
    let l = &shared.limits;
    let produce_ms = u64::from(l.produce_timeout_ms_max) + HANDLER_SLACK_MS;
    let fetch_ms = u64::from(l.fetch_wait_ms_max) + HANDLER_SLACK_MS;
    let mut methods = vec![
        method(&shared, "produce", produce_ms, produce),
        method(&shared, "fetch", fetch_ms, fetch),
        admin!(&shared, "metadata", metadata),
        admin!(&shared, "create_topic", create_topic),
        admin!(&shared, "delete_topic", delete_topic),
        admin!(&shared, "list_topics", list_topics),
        admin!(&shared, "describe_topic", describe_topic),
        group!(&shared, "join_group", join_group),
        group!(&shared, "heartbeat_group", heartbeat_group),
        group!(&shared, "leave_group", leave_group),
        group!(&shared, "commit_offsets", commit_offsets),
        group!(&shared, "fetch_offsets", fetch_offsets),
    ];
    methods.extend([
        method(&shared, "queue_receive", fetch_ms, queue_receive),
        queue!(&shared, "queue_ack", queue_ack),
        queue!(&shared, "queue_nack", queue_nack),
        group!(&shared, "find_coordinator", find_coordinator),
        group!(&shared, "list_groups", list_groups),
        group!(&shared, "describe_group", describe_group),
        group!(&shared, "delete_group", delete_group),
        group!(&shared, "list_offsets", list_offsets),
        admin!(&shared, "alter_security", alter_security),
        admin!(&shared, "describe_security", describe_security),
        admin!(&shared, "create_queue", create_queue),
        admin!(&shared, "delete_queue", delete_queue),
        admin!(&shared, "list_queues", list_queues),
        admin!(&shared, "describe_queue", describe_queue),
        queue!(&shared, "queue_extend", queue_extend),
        queue!(&shared, "queue_term", queue_term),
        admin!(&shared, "purge_queue", purge_queue),
    ]);
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

async fn produce(
    shared: Arc<Shared>,
    ctx: SecurityContext,
    req: neo_protocol::api::ProduceRequest,
    received: Received,
) -> Result<neo_protocol::api::ProduceResponse, RpcError> {
    let m = &shared.metrics;
    let started = received.decoded;
    m.produce_requests.inc();
    let size = req.records.len() as u64;
    let acks = req.acks;
    let slow = shared
        .slow_request
        .map(|after| (after, req.topic.clone(), req.partition));
    if let Some(t) = &shared.throttle
        && let Err(e) = t.check(&ctx, LimitKind::ProduceBytes, size)
    {
        m.throttled.fetch_add(1, Ordering::Relaxed);
        return Err(e);
    }
    // Phases are noted (a task-local, a local ack per batch) only for the slow log.
    let (r, phases) = if slow.is_some() {
        neo_raft::with_phases(shared.broker.produce(&ctx, req)).await
    } else {
        let r = shared.broker.produce(&ctx, req).await;
        (r, neo_raft::ProposePhases::default())
    };
    match &r {
        Ok(resp) => {
            m.produce_records.inc_by(u64::from(resp.record_count));
            m.produce_bytes.inc_by(size);
            if acks == Acks::All {
                m.commit_latency.observe(started.elapsed());
            }
        }
        Err(_) => {
            m.produce_errors.inc();
        }
    }
    let answered = Instant::now();
    m.produce_latency
        .get_or_create(&crate::metrics::acks_label(acks))
        .observe(answered - started);
    if let Some((after, topic, partition)) = slow
        && answered.duration_since(received.at) >= after
    {
        let phases = Phases {
            received,
            raft: phases,
            answered,
        };
        log_slow_produce(&topic, partition, acks, size, &phases, &r);
    }
    r
}

/// The phases of one produce, in order.
struct Phases {
    received: Received,
    raft: neo_raft::ProposePhases,
    answered: Instant,
}

/// Milliseconds since the frame was read, or `-` for a phase not seen (the broker did
/// not propose: an error before, a duplicate answered from memory, `acks=none`; or, for
/// `acks=leader`, Raft had not applied the batch when the leader's flush answered).
struct Ms(Option<f64>);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ms) => write!(f, "{ms:.3}"),
            None => f.write_str("-"),
        }
    }
}

/// The WARN line of a produce slower than `--slow-request-ms`, with its phases in ms
/// from the read of its frame: decoded (handler started), proposed (handed to Raft),
/// leader fsynced (durable in the leader's own log), committed and applied (Raft answered: quorum `fdatasync`, commit and apply for
/// `acks=all`; the leader's own `fdatasync` for `acks=leader`), answered. The request
/// id (`<connection>-<correlation>`) comes from the request's span.
fn log_slow_produce(
    topic: &str,
    partition: u32,
    acks: Acks,
    bytes: u64,
    p: &Phases,
    r: &Result<neo_protocol::api::ProduceResponse, RpcError>,
) {
    // In ms, to the µs.
    let since =
        |t: Instant| (t.saturating_duration_since(p.received.at).as_secs_f64() * 1e6).round() / 1e3;
    let outcome = match r {
        Ok(_) => "ok",
        Err(e) => e
            .error_code()
            .map_or("custom", neo_protocol::error_code_name),
    };
    tracing::warn!(
        topic,
        partition,
        acks = crate::metrics::acks_label(acks)[0].1,
        bytes,
        outcome,
        received_ms = 0.0,
        decoded_ms = since(p.received.decoded),
        proposed_ms = %Ms(p.raft.proposed.map(since)),
        leader_fsynced_ms = %Ms(p.raft.flushed.map(since)),
        committed_applied_ms = %Ms(p.raft.done.map(since)),
        answered_ms = since(p.answered),
        "slow produce: {:.1} ms",
        since(p.answered),
    );
}

async fn fetch(
    shared: Arc<Shared>,
    ctx: SecurityContext,
    req: neo_protocol::api::FetchRequest,
    _: Received,
) -> Result<neo_protocol::api::FetchResponse, RpcError> {
    let m = &shared.metrics;
    let started = Instant::now();
    m.fetch_requests.inc();
    // Admitted while not in fetch-bytes debt; the bytes returned are charged after.
    if let Some(t) = &shared.throttle
        && let Err(e) = t.check(&ctx, LimitKind::FetchBytes, 0)
    {
        m.throttled.fetch_add(1, Ordering::Relaxed);
        return Err(e);
    }
    let r = shared.broker.fetch(&ctx, req).await;
    match &r {
        Ok(resp) => {
            m.fetch_bytes.inc_by(resp.batches.len() as u64);
            m.fetch_records.inc_by(records_in(&resp.batches));
            if let Some(t) = &shared.throttle {
                t.charge(&ctx, LimitKind::FetchBytes, resp.batches.len() as u64);
            }
        }
        Err(_) => {
            m.fetch_errors.inc();
        }
    }
    m.fetch_latency.observe(started.elapsed());
    r
}

/// Records in whole concatenated batches (control batches count none); stops at the
/// first header that does not parse.
fn records_in(mut batches: &[u8]) -> u64 {
    let mut records = 0u64;
    while let Ok(h) = qiss::batch::BatchHeader::parse(batches) {
        if !h.is_control() {
            records += u64::from(h.record_count);
        }
        match batches.get(h.batch_length as usize..) {
            Some(rest) if h.batch_length > 0 => batches = rest,
            _ => break,
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use neo_storage::testing::{batch, control_batch};

    #[test]
    fn fetched_records_are_counted_in_whole_batches() {
        let mut all = batch(3, 0, 0, b"abc");
        all.extend(control_batch(b"x"));
        all.extend(batch(2, 0, 0, b"de"));
        assert_eq!(super::records_in(&all), 5, "control batches count none");
        let cut = all.len() - 5;
        assert_eq!(super::records_in(&all[..cut]), 3, "a cut batch counts none");
        assert_eq!(super::records_in(&[]), 0);
    }

    #[test]
    fn a_phase_not_seen_is_a_dash() {
        assert_eq!(super::Ms(None).to_string(), "-");
        assert_eq!(super::Ms(Some(1.25)).to_string(), "1.250");
    }
}
