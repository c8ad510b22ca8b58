//! The HTTP admin listener (port 7072): a minimal HTTP/1.1 server over tokio, one
//! request per connection (`Connection: close`), GET only.
//!
//! | path | answer |
//! |---|---|
//! | `/health` | 200 `ok`: the process is up |
//! | `/ready` | 200 when the metadata group and every partition group hosted here have a leader and this node is registered; else 503. JSON body either way |
//! | `/metrics` | Prometheus text format 0.0.4 |
//! | `/v1/cluster` | JSON: nodes (id, client and cluster addresses, alive), controller, partitions (topic, partition, group, leader, replicas) |
//! | `/v1/queues` | JSON: every queue (settings) with the counts of its partitions this node leads |
//! | `/v1/groups` | JSON: every consumer group (name, state, members) from this node's applied metadata, and the coordinator |
//! | `/v1/groups/{name}` | JSON: the group as `neo group describe --format json` prints it (members, and per partition committed offset, log end offset, lag), asked of the cluster through this node's client port (TLS too: see `crate::admin_tls`); 404 for an unknown group |
//! | `/v1/partitions/{topic}/{p}/digest` | JSON digest of this replica's committed log (for comparing replicas) |
//!
//! With security on (`--auth`), every path but `/health`, `/ready` (and `/metrics` with
//! `--metrics-open true`) needs `Authorization: Bearer <JWT or API key>` and the
//! path's permission: 401 / 403 otherwise (see `crate::security::http`).
//!
//! Limits: request head at most [`REQUEST_HEAD_BYTES_MAX`], read within
//! [`REQUEST_TIMEOUT_MS`]; at most `http_connections_max` connections at once (more
//! wait in the listen backlog).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neo_raft::{METADATA_GROUP, Role};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::node::Shared;
use crate::security::http as http_auth;
use neo_broker::committed_prefix;
use neo_security::{Operation, ResourceType};

/// Largest request head (request line + headers) read.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A request must arrive (and its answer be written) within this long.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Bytes read from the log per step while computing a digest.
const DIGEST_READ_BYTES: usize = 1024 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.limits.http_connections_max));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (socket, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            let _ = tokio::time::timeout(timeout, connection(socket, shared)).await;
            drop(permit);
        });
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{v}\n"),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

async fn connection(mut socket: TcpStream, shared: Arc<Shared>) {
    let Ok(peer) = socket.peer_addr() else {
        return;
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let reply = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break route(&shared, &buf[..end], peer).await;
        }
        if buf.len() >= REQUEST_HEAD_BYTES_MAX {
            break Reply::text(431, "request head too large\n");
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(reply.body.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn route(shared: &Arc<Shared>, head: &[u8], peer: SocketAddr) -> Reply {
    let Ok(head) = std::str::from_utf8(head) else {
        return Reply::text(400, "request head is not UTF-8\n");
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Reply::text(400, "bad request line\n");
    };
    if method != "GET" {
        return Reply::text(405, "GET only\n");
    }
    let path = target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Probes (and metrics, if configured so) stay open; the rest needs a bearer token
    // when security is on (see `crate::security::http`).
    let open = match segments.as_slice() {
        ["health"] | ["ready"] => true,
        ["metrics"] => shared.metrics_open,
        _ => false,
    };
    let caller = if open {
        None
    } else {
        match http_auth::caller(shared, head, peer) {
            Ok(caller) => caller,
            Err(refusal) => return refused(refusal),
        }
    };
    let caller = caller.as_ref();
    let allowed = |resource, name: &str| {
        http_auth::authorize(shared, caller, resource, name, Operation::Describe)
    };
    let check = match segments.as_slice() {
        ["metrics"] => allowed(ResourceType::Cluster, "metrics"),
        ["v1", "cluster"] => allowed(ResourceType::Cluster, "cluster"),
        ["v1", "groups", name] => allowed(ResourceType::Group, &percent_decode(name)),
        ["v1", "partitions", topic, _, "digest"] => {
            allowed(ResourceType::Topic, &percent_decode(topic))
        }
        _ => Ok(()),
    };
    if let Err(refusal) = check {
        return refused(refusal);
    }
    match segments.as_slice() {
        ["health"] => Reply::text(200, "ok\n"),
        ["ready"] => ready(shared),
        ["metrics"] => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: shared.metrics.render(&shared.gauges()),
        },
        ["v1", "cluster"] => Reply::json(200, cluster(shared)),
        ["v1", "groups"] => Reply::json(200, groups(shared, caller)),
        ["v1", "groups", name] => group(shared, name, caller).await,
        ["v1", "queues"] => Reply::json(200, queues(shared, caller)),
        ["v1", "partitions", topic, p, "digest"] => digest(shared, topic, p).await,
        _ => Reply::text(404, "not found\n"),
    }
}

/// Every queue the caller may see, with the counts of its partitions this node leads
/// (ask each node, or `neo queue describe`, for the whole picture).
fn queues(shared: &Shared, caller: Option<&http_auth::Caller>) -> serde_json::Value {
    let state = shared.state();
    let stats = shared.broker.queue_stats_led();
    let list: Vec<_> = state
        .queues
        .iter()
        .filter(|(name, _)| {
            http_auth::allows(
                shared,
                caller,
                ResourceType::Queue,
                name,
                Operation::Describe,
            )
        })
        .map(|(name, s)| {
            let led: Vec<_> = stats
                .iter()
                .filter(|(q, _)| q == name)
                .map(|(_, p)| {
                    json!({
                        "partition": p.partition,
                        "available": p.available,
                        "in_flight": p.in_flight,
                        "delayed": p.delayed,
                        "dead_lettered": p.dead_lettered,
                        "acked": p.acked,
                        "redelivered": p.redelivered,
                        "ack_floor": p.ack_floor,
                        "end_offset": p.end_offset,
                        "oldest_age_ms": p.oldest_age_ms,
                    })
                })
                .collect();
            json!({
                "name": name,
                "partitions": state.topics.get(name).map_or(0, |t| t.partitions.len()),
                "visibility_timeout_ms": s.visibility_timeout_ms,
                "max_deliveries": s.max_deliveries,
                "dead_letter": s.dead_letter,
                "ordered_by_key": s.ordered_by_key,
                "led_here": led,
            })
        })
        .collect();
    json!({ "node": shared.broker.node_id(), "queues": list })
}

fn refused(r: http_auth::Refusal) -> Reply {
    Reply::json(r.status, json!({ "error": r.reason }))
}

fn ready(shared: &Shared) -> Reply {
    let meta_leader = shared.broker.meta_group().metrics().serving_leader();
    let leaderless: Vec<u64> = shared
        .partition_groups()
        .iter()
        .filter(|g| g.metrics().serving_leader().is_none())
        .map(|g| g.id())
        .collect();
    let registered = *shared.registered.borrow();
    let ok = meta_leader.is_some() && leaderless.is_empty() && registered;
    Reply::json(
        if ok { 200 } else { 503 },
        json!({
            "ready": ok,
            "registered": registered,
            "controller": meta_leader,
            "groups_without_leader": leaderless,
        }),
    )
}

/// The cluster as this node sees it; the shape `neo cluster status --format json`
/// prints, plus cluster addresses and group ids.
fn cluster(shared: &Shared) -> serde_json::Value {
    let state = shared.state();
    let nodes: Vec<_> = state
        .nodes
        .iter()
        .map(|(id, n)| {
            json!({
                "id": id,
                "client_addr": shared.client_addr_of(*id).unwrap_or_default(),
                "cluster_addr": n.addr,
                "alive": shared.is_alive(*id),
            })
        })
        .collect();
    let mut partitions = Vec::new();
    for (name, t) in &state.topics {
        for (i, p) in t.partitions.iter().enumerate() {
            let leader = shared
                .partition_group(p.group)
                .and_then(|g| g.metrics().serving_leader());
            partitions.push(json!({
                "topic": name,
                "partition": i,
                "group": p.group,
                "leader": leader,
                "replicas": p.replicas,
            }));
        }
    }
    json!({
        "node_id": shared.node_id,
        "nodes": nodes,
        "controller": shared.controller(),
        "partitions": partitions,
    })
}

/// Every group as this node's applied metadata has it.
fn groups(shared: &Shared, caller: Option<&http_auth::Caller>) -> serde_json::Value {
    let state = shared.state();
    let groups: Vec<_> = state
        .groups
        .groups
        .iter()
        .filter(|(name, _)| {
            http_auth::allows(
                shared,
                caller,
                ResourceType::Group,
                name,
                Operation::Describe,
            )
        })
        .map(|(name, g)| {
            json!({
                "name": name,
                "state": neo_broker::groups::state::state_name(g),
                "members": g.members.len(),
                "group_epoch": g.epoch,
            })
        })
        .collect();
    json!({ "coordinator": shared.controller(), "groups": groups })
}

/// Bound on answering `/v1/groups/{name}` (it asks every partition leader).
const GROUP_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One group with its offsets, asked of the cluster through this node's client port
/// (the partition leaders answer the offsets; with TLS on the client port, the node's
/// client trusts its own certificate and the cluster CA: `crate::admin_tls`).
async fn group(shared: &Arc<Shared>, name: &str, caller: Option<&http_auth::Caller>) -> Reply {
    let name = percent_decode(name);
    let addr = shared.advertise_client.clone();
    let mut config = neo_client::ClientConfig::default();
    config.rpc.tls = shared.client_tls.clone();
    let describe = async {
        let client = match caller {
            // With security on the offsets are read as the caller, with its token.
            Some(caller) => {
                config.rpc.auth_token = Some(caller.token.clone().into_bytes());
                neo_client::Client::connect_with(&[addr], config).await?
            }
            None => shared
                .cluster_client
                .get_or_try_init(|| async move {
                    neo_client::Client::connect_with(&[addr], config).await
                })
                .await?
                .clone(),
        };
        neo_client::GroupAdmin::new(client).describe(&name).await
    };
    match tokio::time::timeout(GROUP_DESCRIBE_TIMEOUT, describe).await {
        Ok(Ok(report)) => match serde_json::to_value(&report) {
            Ok(v) => Reply::json(200, v),
            Err(e) => Reply::json(500, json!({"error": e.to_string()})),
        },
        Ok(Err(e)) if e.code() == Some(neo_protocol::ErrorCode::UnknownGroup) => {
            Reply::json(404, json!({"error": e.to_string()}))
        }
        Ok(Err(e)) => Reply::json(503, json!({"error": e.to_string()})),
        Err(_) => Reply::json(
            503,
            json!({"error": format!("no answer within {GROUP_DESCRIBE_TIMEOUT:?}")}),
        ),
    }
}

/// `%XX` escapes of a path segment decoded (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn digest(shared: &Arc<Shared>, topic: &str, p: &str) -> Reply {
    let Ok(partition) = p.parse::<u32>() else {
        return Reply::json(400, json!({"error": "partition is not a number"}));
    };
    let group = match shared.partition(topic, partition) {
        Some(r) => r.group,
        None => return Reply::json(404, json!({"error": "unknown topic or partition"})),
    };
    let Some(group) = group else {
        return Reply::json(
            404,
            json!({"error": "this node does not host a replica of the partition"}),
        );
    };
    if group.id() == METADATA_GROUP {
        return Reply::json(404, json!({"error": "not a partition"}));
    }
    let role = group.metrics().role;
    let hw = group.applied().next_offset;
    let g = group.clone();
    let computed = tokio::task::spawn_blocking(move || -> neo_raft::Result<_> {
        let (start, _) = g.log_offsets();
        let mut offset = start;
        let mut crc = crc32fast::Hasher::new();
        let (mut bytes, mut batches) = (0u64, 0u64);
        while offset < hw {
            let (chunk, next) = g.read_log_blocking(offset, DIGEST_READ_BYTES)?;
            let keep = committed_prefix(&chunk, hw);
            let mut pos = 0;
            while pos < keep {
                let h = qiss::batch::BatchHeader::parse(&chunk[pos..])
                    .map_err(|e| neo_raft::Error::storage("log", "digest", e))?;
                // `read` starts at the batch holding `offset`: skip what was hashed.
                if h.base_offset >= offset || batches == 0 {
                    crc.update(&chunk[pos..pos + h.batch_length as usize]);
                    bytes += u64::from(h.batch_length);
                    batches += 1;
                }
                pos += h.batch_length as usize;
            }
            if keep == 0 || next <= offset {
                break;
            }
            offset = next;
        }
        Ok((start, bytes, batches, crc.finalize()))
    })
    .await;
    match computed {
        Ok(Ok((start, bytes, batches, crc))) => Reply::json(
            200,
            json!({
                "topic": topic,
                "partition": partition,
                "group": group.id(),
                "node_id": shared.node_id,
                "leader": role == Role::Leader,
                "start_offset": start,
                "high_watermark": hw,
                "batches": batches,
                "bytes": bytes,
                "crc32": format!("{crc:08x}"),
            }),
        ),
        Ok(Err(e)) => Reply::json(500, json!({"error": e.to_string()})),
        Err(e) => Reply::json(500, json!({"error": e.to_string()})),
    }
}

/// `neo-node healthcheck`: GET `/health` at `addr`; `true` on a 200 within `timeout`.
pub async fn healthcheck(addr: &str, timeout: Duration) -> bool {
    let check = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        Some(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_escapes_and_keeps_bad_ones() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%é"), "%zz%é");
    }
}
