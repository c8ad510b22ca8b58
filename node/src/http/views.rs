//! The node's own views: readiness, cluster, groups, queues, a replica's digest; and
//! [`caller_client`], the client through which HTTP requests ask the cluster as their
//! caller.

use std::sync::Arc;
use std::time::Duration;

use neo_raft::{METADATA_GROUP, Role};
use serde_json::json;

use super::Reply;
use super::request::percent_decode;
use crate::node::Shared;
use crate::security::http as http_auth;
use neo_broker::committed_prefix;
use neo_security::{Operation, ResourceType};

/// Bytes read from the log per step while computing a digest.
const DIGEST_READ_BYTES: usize = 1024 * 1024;

/// A client of the cluster through this node's own client port, acting as `caller`
/// (with security on, a fresh connection authenticated with the caller's token, so
/// that the client port checks the caller's permissions again); without security the
/// node's shared client. TLS: see `crate::admin_tls`.
pub(crate) async fn caller_client(
    shared: &Shared,
    caller: Option<&http_auth::Caller>,
) -> neo_client::Result<neo_client::Client> {
    let addr = shared.advertise_client.clone();
    let mut config = neo_client::ClientConfig::default();
    config.rpc.tls = shared.client_tls.clone();
    match caller {
        Some(caller) => {
            config.rpc.auth_token = Some(caller.token.clone().into_bytes());
            neo_client::Client::connect_with(&[addr], config).await
        }
        None => Ok(shared
            .cluster_client
            .get_or_try_init(
                || async move { neo_client::Client::connect_with(&[addr], config).await },
            )
            .await?
            .clone()),
    }
}

/// Every queue the caller may see, with the counts of its partitions this node leads
/// (ask each node, or `neo queue describe`, for the whole picture).
pub(super) fn queues(shared: &Shared, caller: Option<&http_auth::Caller>) -> serde_json::Value {
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

pub(super) fn ready(shared: &Shared) -> Reply {
    let meta_leader = shared.broker.meta_group().metrics().serving_leader();
    let leaderless: Vec<u64> = shared
        .partition_groups()
        .iter()
        .filter(|g| g.metrics().serving_leader().is_none())
        .map(|g| g.id())
        .collect();
    // A replica whose log failed (or whose Raft stopped) acknowledges nothing until the
    // node reopens it: the node is not ready meanwhile.
    // The metadata group is listed too; the node does not reopen it (a restart does).
    let stopped: Vec<serde_json::Value> = std::iter::once(shared.broker.meta_group().clone())
        .chain(shared.partition_groups())
        .filter_map(|g| {
            g.failure()
                .map(|why| json!({"group": g.id(), "reason": why.to_string()}))
        })
        .collect();
    let registered = *shared.registered.borrow();
    let ok = meta_leader.is_some() && leaderless.is_empty() && stopped.is_empty() && registered;
    Reply::json(
        if ok { 200 } else { 503 },
        json!({
            "ready": ok,
            "registered": registered,
            "controller": meta_leader,
            "groups_without_leader": leaderless,
            "groups_stopped": stopped,
        }),
    )
}

/// The cluster as this node sees it; the shape `neo cluster status --format json`
/// prints, plus cluster addresses and group ids.
pub(super) fn cluster(shared: &Shared) -> serde_json::Value {
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
pub(super) fn groups(shared: &Shared, caller: Option<&http_auth::Caller>) -> serde_json::Value {
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
const GROUP_DESCRIBE_TIMEOUT: Duration = Duration::from_secs(8);

/// One group with its offsets, asked of the cluster through this node's client port
/// (the partition leaders answer the offsets; with TLS on the client port, the node's
/// client trusts its own certificate and the cluster CA: `crate::admin_tls`).
pub(super) async fn group(
    shared: &Arc<Shared>,
    name: &str,
    caller: Option<&http_auth::Caller>,
) -> Reply {
    let name = percent_decode(name);
    let describe = async {
        let client = caller_client(shared, caller).await?;
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

pub(super) async fn digest(shared: &Arc<Shared>, topic: &str, p: &str) -> Reply {
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
