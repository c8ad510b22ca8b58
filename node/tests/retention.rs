//! Retention end to end on three real `neo-node` processes (replication 3) with tiny
//! segments (`--segment-bytes 4096`) and a short check period
//! (`--retention-check-ms 100`):
//!
//! - a topic with `retention.bytes`: after enough produce to roll many segments, every
//!   replica's log start moves past 0, its stored bytes drop under the limit (plus the
//!   active segment), fetch below the start is `OffsetOutOfRange`, everything above it
//!   reads back intact, and the replicas agree (same start, high watermark and CRC);
//! - a topic with `retention.ms` of 1 ms and old record timestamps: sealed segments go;
//! - bad configs are refused with `InvalidArgument` naming the key; describe shows the
//!   configs a topic has.
//!
//! No timing is asserted: every wait is for an outcome, bounded by a deadline.

use std::time::Duration;

mod common;
use common::{Proc, dump_logs, http_get, start_cluster};

use neo_protocol::ErrorCode;
use neo_protocol::api::*;

const DEADLINE: Duration = Duration::from_secs(60);
const SEGMENT_BYTES: u64 = 4096;
const SEGMENT_BYTES_ARG: &str = "4096";
const RETENTION_BYTES: u64 = 8192;

/// A batch of 8 records of ~120 bytes each, all with timestamp `ts`.
fn batch(tag: &str, ts: i64) -> Vec<u8> {
    let mut b = qiss::batch::BatchBuilder::new();
    for i in 0..8 {
        let v = format!("{tag}-{i}-{}", "x".repeat(110));
        b.push(ts, None, &[], v.as_bytes()).expect("push");
    }
    b.build().expect("build").to_vec()
}

fn values(tag: &str) -> Vec<String> {
    (0..8)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(110)))
        .collect()
}

/// Calls `method`, following leaders; a non-retriable error is returned.
async fn try_call_leader<Req, Resp>(
    addrs: &[String],
    method: &str,
    req: &Req,
) -> Result<Resp, neo_protocol::Error>
where
    Req: serde::Serialize + Sync,
    Resp: serde::de::DeserializeOwned,
{
    common::try_call_leader(addrs, 0, method, req, DEADLINE).await
}

async fn call_leader<Req, Resp>(addrs: &[String], method: &str, req: &Req) -> Resp
where
    Req: serde::Serialize + Sync,
    Resp: serde::de::DeserializeOwned,
{
    match try_call_leader(addrs, method, req).await {
        Ok(v) => v,
        Err(e) => panic!("{method}: {e}"),
    }
}

async fn digest(http: &str, topic: &str) -> Option<serde_json::Value> {
    let body = http_get(http, &format!("/v1/partitions/{topic}/0/digest")).await?;
    serde_json::from_str(&body).ok()
}

async fn log_bytes_stored(http: &str) -> Option<u64> {
    let body = http_get(http, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("neo_log_bytes_stored "))
        .and_then(|v| v.trim().parse().ok())
}

fn fetch_req(topic: &str, offset: u64) -> FetchRequest {
    FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        bytes_max: 1 << 20,
        wait_ms_max: 0,
        bytes_min: 1,
        isolation: Isolation::Committed,
    }
}

/// Every user record of partition 0 of `topic` from `from` to the high watermark.
async fn consume_from(addrs: &[String], topic: &str, from: u64) -> Vec<String> {
    let mut offset = from;
    let mut out = Vec::new();
    loop {
        let r: FetchResponse = call_leader(addrs, "fetch", &fetch_req(topic, offset)).await;
        if r.batches.is_empty() {
            return out;
        }
        for b in qiss::batch::split_batches(r.batches) {
            let b = qiss::batch::RecordBatch::new(b.expect("batch")).expect("valid");
            let h = b.header();
            let next = h.base_offset + u64::from(h.record_count);
            if next <= offset {
                continue;
            }
            if !b.is_control() {
                for rec in b.records() {
                    if rec.offset() >= offset {
                        out.push(String::from_utf8_lossy(rec.value()).into_owned());
                    }
                }
            }
            offset = next;
        }
        if offset >= r.high_watermark {
            return out;
        }
    }
}

/// Waits (bounded) until every replica reports the same start (> 0) and high watermark
/// (>= `hw`) and `settled` holds for each digest (retention runs on its own period, so a
/// pass may still be due when the replicas first agree).
async fn converged(
    procs: &[Proc],
    topic: &str,
    hw: u64,
    settled: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut digests = Vec::new();
        for p in procs {
            if let Some(v) = digest(&p.http, topic).await {
                digests.push(v);
            }
        }
        let key =
            |v: &serde_json::Value| (v["start_offset"].as_u64(), v["high_watermark"].as_u64());
        if digests.len() == procs.len()
            && digests.iter().all(|d| key(d) == key(&digests[0]))
            && digests[0]["start_offset"].as_u64().is_some_and(|s| s > 0)
            && digests[0]["high_watermark"].as_u64() >= Some(hw)
            && digests.iter().all(&settled)
        {
            return digests;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention never took effect on every replica of {topic}: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn create(name: &str, configs: &[(&str, &str)]) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions: 1,
        replication_factor: 3,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_and_age_on_three_replicas() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (procs, _, addrs) = start_cluster(tmp.path(), 3, |_| {
        [
            "--segment-bytes",
            SEGMENT_BYTES_ARG,
            "--retention-check-ms",
            "100",
        ]
        .map(String::from)
        .to_vec()
    });
    let outcome =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario(&procs, &addrs)))
            .await;
    if outcome.is_err() {
        dump_logs(tmp.path(), procs.iter().map(|p| p.id));
        panic!("scenario failed (node logs above)");
    }
}

async fn scenario(procs: &[Proc], addrs: &[String]) {
    // Bad configs: InvalidArgument naming the key; nothing is created.
    for (configs, key) in [
        (vec![("retention.ms", "0")], "retention.ms"),
        (vec![("retention.bytes", "-5")], "retention.bytes"),
        (vec![("retention.bytes", "12kb")], "retention.bytes"),
        (vec![("cleanup.policy", "compact")], "cleanup.policy"),
    ] {
        let r: Result<CreateTopicResponse, _> =
            try_call_leader(addrs, "create_topic", &create("bad", &configs)).await;
        match r {
            Err(neo_protocol::Error::Rpc(e)) => {
                assert_eq!(e.error_code(), Some(ErrorCode::InvalidArgument), "{e}");
                assert!(e.to_string().contains(key), "{e} should name {key}");
            }
            other => panic!("config {configs:?} must be refused, got {other:?}"),
        }
    }
    let list: ListTopicsResponse = call_leader(
        addrs,
        "list_topics",
        &ListTopicsRequest {
            include_internal: false,
        },
    )
    .await;
    assert!(list.topics.is_empty(), "{:?}", list.topics);

    // Size: keep each replica's log at about RETENTION_BYTES.
    let limit = RETENTION_BYTES.to_string();
    let _: CreateTopicResponse = call_leader(
        addrs,
        "create_topic",
        &create("sized", &[("retention.bytes", &limit)]),
    )
    .await;
    let d: TopicDescription = call_leader(
        addrs,
        "describe_topic",
        &DescribeTopicRequest {
            name: "sized".into(),
        },
    )
    .await;
    assert_eq!(
        d.configs,
        vec![("retention.bytes".to_string(), limit.clone())]
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut produced = Vec::new(); // (base offset, tag)
    let mut produced_bytes = 0u64;
    for i in 0..40 {
        let tag = format!("s{i}");
        let records = batch(&tag, now);
        produced_bytes += records.len() as u64;
        let req = ProduceRequest {
            topic: "sized".into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 10_000,
            producer: None,
            records: records.into(),
        };
        let r: ProduceResponse = call_leader(addrs, "produce", &req).await;
        produced.push((r.base_offset, tag));
    }
    assert!(produced_bytes > 4 * RETENTION_BYTES);
    // Retention may already be at work (the check runs every 100 ms): the high
    // watermark is at least the end of the last acknowledged batch.
    let hw = produced.last().expect("produced").0 + 8;
    assert!(hw >= 320);

    let digests = converged(procs, "sized", hw, |d| {
        d["bytes"].as_u64().is_some_and(|b| b <= RETENTION_BYTES)
    })
    .await;
    let start = digests[0]["start_offset"].as_u64().expect("start");
    // The replicas agree: same start and high watermark, same bytes.
    for d in &digests {
        assert_eq!(
            d["crc32"], digests[0]["crc32"],
            "replicas differ: {digests:?}"
        );
        assert!(
            d["bytes"].as_u64().expect("bytes") <= RETENTION_BYTES,
            "committed bytes over the limit: {d}"
        );
    }
    // Stored bytes (the gauge) drop under the limit plus one active segment.
    for p in procs {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stored = log_bytes_stored(&p.http).await;
            if stored.is_some_and(|s| s <= RETENTION_BYTES + SEGMENT_BYTES && s < produced_bytes) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} still stores {stored:?} bytes",
                p.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Fetch below the start: OffsetOutOfRange; the answer at the start reports it.
    let r: Result<FetchResponse, _> = try_call_leader(addrs, "fetch", &fetch_req("sized", 0)).await;
    match r {
        Err(neo_protocol::Error::Rpc(e)) => {
            assert_eq!(e.error_code(), Some(ErrorCode::OffsetOutOfRange), "{e}")
        }
        other => panic!("fetch below the log start must fail: {other:?}"),
    }
    let r: FetchResponse = call_leader(addrs, "fetch", &fetch_req("sized", start)).await;
    assert_eq!(r.log_start_offset, start);
    assert!(r.high_watermark >= hw);
    // Everything above the start is intact: whole batches, in order.
    let got = consume_from(addrs, "sized", start).await;
    let want: Vec<String> = produced
        .iter()
        .filter(|(base, _)| *base >= start)
        .flat_map(|(_, tag)| values(tag))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // Age: 1 ms with record timestamps in 1970: every sealed segment is due.
    let _: CreateTopicResponse = call_leader(
        addrs,
        "create_topic",
        &create("aged", &[("retention.ms", "1")]),
    )
    .await;
    let mut hw = 0;
    for i in 0..20 {
        let req = ProduceRequest {
            topic: "aged".into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 10_000,
            producer: None,
            records: batch(&format!("a{i}"), 1_000).into(),
        };
        let r: ProduceResponse = call_leader(addrs, "produce", &req).await;
        hw = r.base_offset + 8;
    }
    let digests = converged(procs, "aged", hw, |d| {
        d["bytes"].as_u64().is_some_and(|b| b <= SEGMENT_BYTES)
    })
    .await;
    for d in &digests {
        assert_eq!(
            d["crc32"], digests[0]["crc32"],
            "replicas differ: {digests:?}"
        );
        // Only the active segment is left.
        assert!(d["bytes"].as_u64().expect("bytes") <= SEGMENT_BYTES, "{d}");
    }
    let r: Result<FetchResponse, _> = try_call_leader(addrs, "fetch", &fetch_req("aged", 0)).await;
    assert!(
        matches!(&r, Err(neo_protocol::Error::Rpc(e)) if e.error_code() == Some(ErrorCode::OffsetOutOfRange)),
        "{r:?}"
    );
    let d: TopicDescription = call_leader(
        addrs,
        "describe_topic",
        &DescribeTopicRequest {
            name: "aged".into(),
        },
    )
    .await;
    assert_eq!(
        d.configs,
        vec![("retention.ms".to_string(), "1".to_string())]
    );
}
