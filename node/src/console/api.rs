//! The console's reads of cluster data, each asked through this node's client port as
//! the caller: topics with their partitions and offsets, a page of a partition's
//! records, a queue's delivery counts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use neo_client::{Consumer, ConsumerConfig, ConsumerRecord, GroupAdmin, Offset};
use neo_protocol::api::OffsetSpec;
use serde_json::json;

use super::with_deadline;
use crate::http::{BadRequest, Reply, caller_client, query_u64};
use crate::node::Shared;
use crate::security::http::Caller;

/// Most topics listed by `/v1/topics` (the first ones by name).
pub(crate) const TOPICS_LISTED_MAX: usize = 500;
/// Partitions whose offsets one `/v1/topics` asks for (the first ones by topic name;
/// the others are answered with `null` offsets).
pub(crate) const PARTITIONS_WITH_OFFSETS_MAX: usize = 2000;
/// Offsets asked of partition leaders at once.
const OFFSET_CALLS_CONCURRENT: usize = 32;
/// Bound on one offset lookup.
const OFFSET_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most records of one `/v1/topics/{t}/messages` page.
pub(crate) const MESSAGES_LIMIT_MAX: u64 = 100;
/// Records of a page when `limit` is not given.
const MESSAGES_LIMIT_DEFAULT: u64 = 20;
/// Bytes of one key, value or header value shown (text and hex of that prefix).
pub(crate) const FIELD_SHOWN_BYTES_MAX: usize = 2048;
/// Bytes one fetch of the messages page may return.
const MESSAGES_FETCH_BYTES_MAX: u32 = 512 * 1024;
/// The page ends once its shown bytes pass this (at least one record is shown).
pub(crate) const PAGE_SHOWN_BYTES_MAX: usize = 256 * 1024;

/// `/v1/topics`: every topic the caller may see (queues included, flagged), each
/// partition with leader, replicas, in-sync replicas, start and end offsets (from
/// the leaders; `null` when a leader did not answer in time) and the bytes of the
/// replica on this node (`null` when not hosted here).
pub(super) async fn topics(shared: &Arc<Shared>, caller: Option<&Caller>) -> Reply {
    with_deadline(async {
        let client = caller_client(shared, caller).await?;
        client.refresh_metadata().await?;
        let cache = client.metadata().await?;
        let mut names = cache.topics();
        let truncated = names.len() > TOPICS_LISTED_MAX;
        names.truncate(TOPICS_LISTED_MAX);
        // Leaders and in-sync replicas as the leaders report them (only they know).
        let led = leaders(&client, &cache).await;
        let admin = GroupAdmin::new(client);
        let mut wanted = Vec::new();
        for name in &names {
            for p in cache.partitions(name).unwrap_or_default() {
                wanted.push((name.clone(), p.partition));
            }
        }
        wanted.truncate(PARTITIONS_WITH_OFFSETS_MAX);
        let offsets: std::collections::HashMap<(String, u32), (Option<u64>, Option<u64>)> =
            futures::stream::iter(wanted)
                .map(|(topic, p)| {
                    let admin = &admin;
                    async move {
                        let topic_ref = &topic;
                        let ask = |spec| async move {
                            let call = admin.list_offset(topic_ref, p, spec);
                            tokio::time::timeout(OFFSET_CALL_TIMEOUT, call)
                                .await
                                .ok()
                                .and_then(Result::ok)
                        };
                        let (start, end) =
                            futures::join!(ask(OffsetSpec::Earliest), ask(OffsetSpec::Latest));
                        ((topic, p), (start, end))
                    }
                })
                .buffer_unordered(OFFSET_CALLS_CONCURRENT)
                .collect()
                .await;
        let state = shared.state();
        let list: Vec<_> = names
            .iter()
            .map(|name| {
                let partitions: Vec<_> = cache
                    .partitions(name)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        let key = (name.clone(), p.partition);
                        let (start, end) = offsets.get(&key).copied().unwrap_or((None, None));
                        let bytes_here = shared
                            .partition(name, p.partition)
                            .and_then(|r| r.group)
                            .map(|g| g.log_size_bytes());
                        json!({
                            "partition": p.partition,
                            "leader": led.get(&key).map(|l| l.0),
                            "replicas": p.replicas,
                            "in_sync": led.get(&key).map_or(&p.in_sync, |l| &l.1),
                            "start_offset": start,
                            "end_offset": end,
                            "bytes_here": bytes_here,
                        })
                    })
                    .collect();
                json!({
                    "name": name,
                    "queue": state.queues.contains_key(name),
                    "partitions": partitions,
                })
            })
            .collect();
        Ok(Reply::json(
            200,
            json!({ "node_id": shared.node_id, "topics": list, "truncated": truncated }),
        ))
    })
    .await
}

/// Each partition's leader and in-sync replicas: every broker is asked for its
/// metadata (at once, each within [`OFFSET_CALL_TIMEOUT`]); a partition's leader is
/// the one named with the highest leader epoch by a broker that replicates it (a
/// broker that does not names the first replica with epoch 0, a guess), and its
/// in-sync replicas those the leader itself answers (only it knows them; empty when
/// it did not answer). A partition no answer names a leader for has none now.
async fn leaders(
    client: &neo_client::Client,
    cache: &neo_client::MetadataCache,
) -> std::collections::HashMap<(String, u32), (u64, Vec<u64>)> {
    let admin = neo_client::Admin::new(client.clone());
    let asks = cache.brokers().into_iter().map(|b| {
        let admin = &admin;
        async move {
            let answer = admin.metadata_at(&b.address, OFFSET_CALL_TIMEOUT);
            (
                b.id,
                tokio::time::timeout(OFFSET_CALL_TIMEOUT, answer).await,
            )
        }
    });
    // (topic, partition) -> (epoch, leader); (topic, partition, leader) -> in sync.
    let mut best: std::collections::HashMap<(String, u32), (u64, u64)> =
        std::collections::HashMap::new();
    let mut own: std::collections::HashMap<(String, u32, u64), Vec<u64>> =
        std::collections::HashMap::new();
    for (node, answer) in futures::future::join_all(asks).await {
        let metadata = match answer {
            Ok(Ok(metadata)) => metadata,
            Ok(Err(e)) => {
                tracing::debug!(node, "console: metadata of node {node} failed: {e}");
                continue;
            }
            Err(_) => {
                tracing::debug!(node, "console: metadata of node {node} timed out");
                continue;
            }
        };
        for t in metadata.topics {
            for p in t.partitions {
                let Some(leader) = p.leader.filter(|_| p.leader_epoch > 0) else {
                    continue;
                };
                if leader == node {
                    own.insert((t.name.clone(), p.partition, node), p.in_sync);
                }
                let key = (t.name.clone(), p.partition);
                if best.get(&key).is_none_or(|b| p.leader_epoch > b.0) {
                    best.insert(key, (p.leader_epoch, leader));
                }
            }
        }
    }
    best.into_iter()
        .map(|((topic, p), (_, leader))| {
            let in_sync = own.remove(&(topic.clone(), p, leader)).unwrap_or_default();
            ((topic, p), (leader, in_sync))
        })
        .collect()
}

/// The page a messages request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub partition: u32,
    /// `None`: the last `limit` records.
    pub offset: Option<u64>,
    pub limit: u64,
}

/// `partition`, `offset`, `limit` of a messages request, checked.
pub(crate) fn page_query(query: &str) -> Result<PageQuery, BadRequest> {
    let partition = query_u64(query, "partition", 0)?;
    let partition =
        u32::try_from(partition).map_err(|_| BadRequest::new(400, "partition out of range"))?;
    let offset = match crate::http::query_u64(query, "offset", u64::MAX)? {
        u64::MAX => None,
        o => Some(o),
    };
    let limit = query_u64(query, "limit", MESSAGES_LIMIT_DEFAULT)?;
    if !(1..=MESSAGES_LIMIT_MAX).contains(&limit) {
        return Err(BadRequest::new(
            400,
            format!("limit must be 1 to {MESSAGES_LIMIT_MAX}"),
        ));
    }
    Ok(PageQuery {
        partition,
        offset,
        limit,
    })
}

/// Where a page starts within the log `[start, end)`: the offset asked, moved into the
/// log, or the last `limit` records.
pub(crate) fn page_start(q: &PageQuery, start: u64, end: u64) -> u64 {
    match q.offset {
        Some(o) => o.clamp(start, end.max(start)),
        None => end.saturating_sub(q.limit).max(start),
    }
}

/// Bytes as the page shows them: `text` when the shown prefix is UTF-8 (else
/// `null`), `hex` of the shown prefix, the full `length`, and whether it was cut.
pub(crate) fn shown(bytes: &[u8]) -> serde_json::Value {
    let mut cut = bytes.len().min(FIELD_SHOWN_BYTES_MAX);
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => {
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Some(&s[..cut])
        }
        Err(_) => None,
    };
    let hex: String = bytes[..cut].iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "text": text,
        "hex": hex,
        "length": bytes.len(),
        "truncated": cut < bytes.len(),
    })
}

fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    let headers: Vec<_> = r
        .headers
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": shown(value) }))
        .collect();
    json!({
        "offset": r.offset,
        "timestamp_ms": r.timestamp_ms,
        "key": r.key.as_deref().map(shown),
        "value": shown(&r.value),
        "headers": headers,
    })
}

/// `/v1/topics/{t}/messages?partition=&offset=&limit=`: up to `limit` (at most
/// [`MESSAGES_LIMIT_MAX`]) committed records of one partition from `offset` (default:
/// the last `limit`), each field shown up to [`FIELD_SHOWN_BYTES_MAX`] bytes, the page
/// ending early past [`PAGE_SHOWN_BYTES_MAX`]; `next_offset` continues it.
pub(super) async fn messages(
    shared: &Arc<Shared>,
    topic: &str,
    query: &str,
    caller: Option<&Caller>,
) -> Reply {
    let q = match page_query(query) {
        Ok(q) => q,
        Err(bad) => return bad.into(),
    };
    with_deadline(async {
        let client = caller_client(shared, caller).await?;
        let admin = GroupAdmin::new(client.clone());
        let start = admin
            .list_offset(topic, q.partition, OffsetSpec::Earliest)
            .await?;
        let end = admin
            .list_offset(topic, q.partition, OffsetSpec::Latest)
            .await?;
        let from = page_start(&q, start, end);
        let mut records = Vec::new();
        let mut next = from;
        let mut page_bytes = 0usize;
        if from < end {
            let config = ConsumerConfig {
                fetch_bytes_max: MESSAGES_FETCH_BYTES_MAX,
                request_timeout: Duration::from_secs(3),
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::with_config(client, config);
            consumer
                .assign(topic, &[q.partition], Offset::At(from))
                .await?;
            // A few fetches at most: each returns at least one batch while any is left.
            'fetch: for _ in 0..8 {
                let batch = consumer.poll(Duration::from_millis(100)).await?;
                if batch.is_empty() {
                    break;
                }
                for r in &batch {
                    if r.offset < next {
                        continue;
                    }
                    let json = record_json(r);
                    page_bytes += json.to_string().len();
                    records.push(json);
                    next = r.offset + 1;
                    let full = records.len() as u64 >= q.limit || page_bytes > PAGE_SHOWN_BYTES_MAX;
                    if full || next >= end {
                        break 'fetch;
                    }
                }
            }
        }
        Ok(Reply::json(
            200,
            json!({
                "topic": topic,
                "partition": q.partition,
                "start_offset": start,
                "end_offset": end,
                "offset": from,
                "next_offset": next,
                "records": records,
            }),
        ))
    })
    .await
}

/// `/v1/queues/{q}`: a queue's settings and the delivery counts of every partition,
/// each from its leader (`neo queue describe`), and their totals.
pub(super) async fn queue(shared: &Arc<Shared>, name: &str, caller: Option<&Caller>) -> Reply {
    with_deadline(async {
        let client = caller_client(shared, caller).await?;
        let report = neo_client::QueueAdmin::new(client)
            .describe(name, None)
            .await?;
        let partitions: Vec<_> = report
            .partitions
            .iter()
            .map(|p| json!({ "partition": p.partition, "leader": p.leader, "stats": p.stats }))
            .collect();
        Ok(Reply::json(
            200,
            json!({
                "name": report.name,
                "settings": report.settings,
                "partitions": partitions,
                "totals": report.total(),
                "missing": report.missing(),
            }),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded() {
        assert_eq!(
            page_query("").unwrap(),
            PageQuery {
                partition: 0,
                offset: None,
                limit: MESSAGES_LIMIT_DEFAULT
            }
        );
        let q = page_query("partition=2&offset=7&limit=100").unwrap();
        assert_eq!((q.partition, q.offset, q.limit), (2, Some(7), 100));
        assert_eq!(page_query("limit=101").unwrap_err().status, 400);
        assert_eq!(page_query("limit=0").unwrap_err().status, 400);
        assert_eq!(page_query("partition=4294967296").unwrap_err().status, 400);
        assert_eq!(page_query("offset=-1").unwrap_err().status, 400);
    }

    #[test]
    fn pages_start_inside_the_log() {
        let q = |offset, limit| PageQuery {
            partition: 0,
            offset,
            limit,
        };
        assert_eq!(page_start(&q(None, 20), 0, 100), 80);
        assert_eq!(page_start(&q(None, 20), 90, 100), 90);
        assert_eq!(page_start(&q(Some(5), 20), 10, 100), 10);
        assert_eq!(page_start(&q(Some(500), 20), 10, 100), 100);
        assert_eq!(page_start(&q(Some(50), 20), 10, 100), 50);
        assert_eq!(page_start(&q(None, 20), 0, 0), 0);
    }

    #[test]
    fn fields_are_cut_and_shown_as_text_and_hex() {
        let v = shown(b"<script>");
        assert_eq!(v["text"], "<script>");
        assert_eq!(v["hex"], "3c7363726970743e");
        assert_eq!(v["truncated"], false);
        let v = shown(&[0xff, 0x00]);
        assert_eq!(v["text"], serde_json::Value::Null);
        assert_eq!(v["hex"], "ff00");
        let long = "é".repeat(FIELD_SHOWN_BYTES_MAX);
        let v = shown(long.as_bytes());
        assert_eq!(v["truncated"], true);
        assert_eq!(v["length"], 2 * FIELD_SHOWN_BYTES_MAX);
        assert_eq!(v["text"].as_str().unwrap().len(), FIELD_SHOWN_BYTES_MAX);
        assert_eq!(v["hex"].as_str().unwrap().len(), 2 * FIELD_SHOWN_BYTES_MAX);
    }
}
