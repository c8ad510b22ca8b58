//! One node in-process on ephemeral loopback ports (the embedded single-node wiring):
//! create a topic, produce, fetch the same bytes back, and the typed errors.
//!
//! No timing is asserted: waits are for outcomes, bounded by a deadline that only
//! turns a hang into a failure.

use std::time::Duration;

use neo_node::{Config, Node, RunArgs};
use neo_protocol::api::*;
use neo_protocol::{ClientConfig, ErrorCode, NeoClient};

const DEADLINE: Duration = Duration::from_secs(30);

fn batch(values: &[&str]) -> Vec<u8> {
    let mut b = qiss::batch::BatchBuilder::new();
    for v in values {
        b.push(1_700_000_000_000, Some(b"k"), &[], v.as_bytes())
            .expect("push");
    }
    b.build().expect("build").to_vec()
}

fn code(e: &neo_protocol::Error) -> Option<ErrorCode> {
    match e {
        neo_protocol::Error::Rpc(r) => r.error_code(),
        _ => None,
    }
}

async fn start(dir: &std::path::Path) -> Node {
    let args = RunArgs {
        data_dir: Some(dir.display().to_string()),
        listen: Some("127.0.0.1:0".into()),
        cluster_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        ..RunArgs::default()
    };
    let cfg = Config::resolve(&args, &|_| None).expect("config");
    Node::start(cfg).await.expect("node starts")
}

/// Retries `op` while it fails with a retriable error (no leader elected yet).
async fn retry<T, F, Fut>(op: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = neo_protocol::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("call failed: {e}"),
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out[9..12].parse().expect("status");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_create_produce_fetch_and_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = start(tmp.path()).await;
    assert!(neo_node::healthcheck(&node.http_addr().to_string(), DEADLINE).await);
    let client = NeoClient::connect(node.client_addr().to_string(), ClientConfig::default())
        .await
        .expect("connect");

    // The method table is BROKER_METHODS, in order.
    let table = client.describe().await.expect("describe");
    let svc = table
        .services
        .iter()
        .find(|s| s.name == BROKER_SERVICE)
        .expect("broker service");
    let names: Vec<&str> = svc.methods.iter().map(|m| m.name.as_str()).collect();
    let want: Vec<&str> = BROKER_METHODS.iter().map(|m| m.1).collect();
    assert_eq!(names, want);

    let create = CreateTopicRequest {
        name: "orders".into(),
        partitions: 2,
        replication_factor: 1,
        configs: vec![],
    };
    let _: CreateTopicResponse =
        retry(|| client.call(BROKER_SERVICE, "create_topic", &create)).await;
    let e = client
        .call::<_, CreateTopicResponse>(BROKER_SERVICE, "create_topic", &create)
        .await
        .expect_err("exists");
    assert_eq!(code(&e), Some(ErrorCode::TopicAlreadyExists));

    let list: ListTopicsResponse = client
        .call(
            BROKER_SERVICE,
            "list_topics",
            &ListTopicsRequest {
                include_internal: false,
            },
        )
        .await
        .expect("list");
    assert_eq!(list.topics, vec!["orders".to_string()]);

    // Produce two batches to partition 1; fetch returns them byte for byte (after the
    // control batches of the group's bootstrap).
    let b1 = batch(&["a", "b", "c"]);
    let b2 = batch(&["d"]);
    let mut offsets = Vec::new();
    for b in [&b1, &b2] {
        let req = ProduceRequest {
            topic: "orders".into(),
            partition: 1,
            acks: Acks::All,
            timeout_ms: 10_000,
            producer: None,
            records: b.clone().into(),
        };
        let r: ProduceResponse = retry(|| client.call(BROKER_SERVICE, "produce", &req)).await;
        offsets.push((r.base_offset, r.record_count));
    }
    assert_eq!(offsets[0].1, 3);
    assert_eq!(offsets[1].1, 1);
    assert!(offsets[1].0 >= offsets[0].0 + 3, "{offsets:?}");

    let fetch = |offset: u64, wait_ms_max: u32| FetchRequest {
        topic: "orders".into(),
        partition: 1,
        offset,
        bytes_max: 1 << 20,
        wait_ms_max,
        bytes_min: 1,
        isolation: Isolation::Committed,
    };
    let r: FetchResponse = client
        .call(BROKER_SERVICE, "fetch", &fetch(offsets[0].0, 0))
        .await
        .expect("fetch");
    assert!(r.high_watermark > offsets[1].0);
    let mut user = Vec::new();
    for b in qiss::batch::split_batches(r.batches) {
        let b = qiss::batch::RecordBatch::new(b.expect("whole batch")).expect("valid batch");
        if !b.is_control() {
            user.push(b);
        }
    }
    assert_eq!(user.len(), 2);
    // Identical to what was produced, except the stamps the log writes outside the CRC.
    for (got, sent) in user.iter().zip([&b1, &b2]) {
        let h = qiss::batch::HEADER_LEN;
        assert_eq!(
            &got.as_bytes()[h..],
            &sent[h..],
            "records section unchanged"
        );
        assert_eq!(
            &got.as_bytes()[qiss::batch::CRC_POS..h],
            &sent[qiss::batch::CRC_POS..h],
            "CRC-covered header unchanged"
        );
        let values: Vec<Vec<u8>> = got.records().map(|r| r.value().to_vec()).collect();
        assert!(!values.is_empty());
    }

    // Long poll: a fetch at the high watermark waits, then sees the next batch.
    let hw = offsets[1].0 + 1;
    let waiting = {
        let client = client.clone();
        let req = fetch(hw, 20_000);
        tokio::spawn(async move {
            client
                .call::<_, FetchResponse>(BROKER_SERVICE, "fetch", &req)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b3 = batch(&["e"]);
    let _: ProduceResponse = client
        .call(
            BROKER_SERVICE,
            "produce",
            &ProduceRequest {
                topic: "orders".into(),
                partition: 1,
                acks: Acks::All,
                timeout_ms: 10_000,
                producer: None,
                records: b3.clone().into(),
            },
        )
        .await
        .expect("produce 3");
    let r = waiting.await.expect("task").expect("long poll");
    assert!(
        !r.batches.is_empty(),
        "the long poll returned the new batch"
    );

    // bytes_min: a long poll asking for more than one batch's bytes waits for the
    // second batch instead of answering with the first.
    let after_b3 = {
        let r: FetchResponse = client
            .call(BROKER_SERVICE, "fetch", &fetch(hw, 0))
            .await
            .expect("fetch");
        r.high_watermark
    };
    let b4 = batch(&["f"]);
    let waiting = {
        let client = client.clone();
        let mut req = fetch(after_b3, 20_000);
        req.bytes_min = (2 * b4.len()) as u32;
        tokio::spawn(async move {
            client
                .call::<_, FetchResponse>(BROKER_SERVICE, "fetch", &req)
                .await
        })
    };
    for values in [["f"], ["g"]] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _: ProduceResponse = client
            .call(
                BROKER_SERVICE,
                "produce",
                &ProduceRequest {
                    topic: "orders".into(),
                    partition: 1,
                    acks: Acks::All,
                    timeout_ms: 10_000,
                    producer: None,
                    records: batch(&values).into(),
                },
            )
            .await
            .expect("produce");
    }
    let r = waiting
        .await
        .expect("task")
        .expect("long poll with bytes_min");
    assert!(
        r.batches.len() >= 2 * b4.len(),
        "bytes_min = two batches, got {} bytes",
        r.batches.len()
    );

    // Idempotent producer: the same stamped batch twice is stored once and both
    // answers carry its offset.
    let stamped = {
        let mut b = qiss::batch::BatchBuilder::new();
        b.producer(77, 0, 0);
        b.push(1, None, &[], b"once").expect("push");
        b.build().expect("build").to_vec()
    };
    let req = ProduceRequest {
        topic: "orders".into(),
        partition: 1,
        acks: Acks::All,
        timeout_ms: 10_000,
        producer: Some(neo_protocol::api::ProducerStamp {
            producer_id: 77,
            epoch: 0,
            sequence: 0,
        }),
        records: stamped.into(),
    };
    let first: ProduceResponse = client
        .call(BROKER_SERVICE, "produce", &req)
        .await
        .expect("stamped");
    let hw_after_first = first.base_offset + 1;
    let again: ProduceResponse = client
        .call(BROKER_SERVICE, "produce", &req)
        .await
        .expect("stamped again");
    assert_eq!(again.base_offset, first.base_offset);
    let r: FetchResponse = client
        .call(BROKER_SERVICE, "fetch", &fetch(first.base_offset, 0))
        .await
        .expect("fetch");
    assert_eq!(r.high_watermark, hw_after_first, "the retry was stored");

    // acks=none answers without an offset.
    let r: ProduceResponse = client
        .call(
            BROKER_SERVICE,
            "produce",
            &ProduceRequest {
                topic: "orders".into(),
                partition: 0,
                acks: Acks::None,
                timeout_ms: 0,
                producer: None,
                records: batch(&["x"]).into(),
            },
        )
        .await
        .expect("acks none");
    assert_eq!(r.base_offset, u64::MAX);

    // Typed errors, and nothing stored changes.
    let produce = |topic: &str, partition: u32, records: Vec<u8>| ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Acks::All,
        timeout_ms: 1_000,
        producer: None,
        records: records.into(),
    };
    let cases = [
        (produce("nope", 0, b1.clone()), ErrorCode::UnknownTopic),
        (
            produce("orders", 9, b1.clone()),
            ErrorCode::UnknownPartition,
        ),
        (
            produce("orders", 1, b"garbage".to_vec()),
            ErrorCode::InvalidRecordBatch,
        ),
        (
            produce("orders", 1, vec![0; 2 << 20]),
            ErrorCode::InvalidRecordBatch,
        ),
        (
            produce("orders", 1, {
                let mut b = b1.clone();
                let last = b.len() - 1;
                b[last] ^= 0xff; // CRC mismatch
                b
            }),
            ErrorCode::InvalidRecordBatch,
        ),
        (
            produce(
                "orders",
                1,
                qiss::batch::BatchBuilder::control(b"forged")
                    .expect("control")
                    .to_vec(),
            ),
            ErrorCode::InvalidRecordBatch,
        ),
    ];
    for (req, want) in cases {
        let e = client
            .call::<_, ProduceResponse>(BROKER_SERVICE, "produce", &req)
            .await
            .expect_err("refused");
        assert_eq!(code(&e), Some(want), "{e}");
    }
    let e = client
        .call::<_, FetchResponse>(BROKER_SERVICE, "fetch", &fetch(1 << 40, 0))
        .await
        .expect_err("out of range");
    assert_eq!(code(&e), Some(ErrorCode::OffsetOutOfRange));
    let e = client
        .call::<_, QueueReceiveResponse>(
            BROKER_SERVICE,
            "queue_receive",
            &QueueReceiveRequest {
                queue: "q".into(),
                share_group: None,
                consumer: "c".into(),
                partition: None,
                messages_max: 1,
                visibility_timeout_ms: 0,
                wait_ms_max: 0,
            },
        )
        .await
        .expect_err("no such queue");
    assert_eq!(code(&e), Some(ErrorCode::UnknownQueue));
    let r: FetchResponse = client
        .call(BROKER_SERVICE, "fetch", &fetch(offsets[0].0, 0))
        .await
        .expect("fetch again");
    let user = qiss::batch::split_batches(r.batches)
        .map(|b| qiss::batch::RecordBatch::new(b.expect("batch")).expect("valid"))
        .filter(|b| !b.is_control())
        .count();
    assert_eq!(
        user, 6,
        "only the accepted batches are stored: b1, b2, b3, f, g and the stamped one once"
    );

    // Metadata: this node, its client address, the controller, leaders.
    let md: MetadataResponse = client
        .call(
            BROKER_SERVICE,
            "metadata",
            &MetadataRequest { topics: vec![] },
        )
        .await
        .expect("metadata");
    assert_eq!(md.brokers.len(), 1);
    assert_eq!(md.brokers[0].address, node.client_addr().to_string());
    assert_eq!(md.controller_id, Some(1));
    assert_eq!(md.topics[0].partitions.len(), 2);
    assert!(md.topics[0].partitions.iter().all(|p| p.leader == Some(1)));
    assert!(md.topics[0].partitions.iter().all(|p| p.in_sync == vec![1]));

    // HTTP admin.
    let (s, body) = http_get(node.http_addr(), "/ready").await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = http_get(node.http_addr(), "/metrics").await;
    assert_eq!(s, 200);
    assert!(body.contains("neo_produce_requests_total"), "{body}");
    assert!(body.contains("neo_partitions_led 2"), "{body}");
    let (s, body) = http_get(node.http_addr(), "/v1/cluster").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["controller"], 1);
    assert_eq!(v["nodes"][0]["alive"], true);
    assert_eq!(v["partitions"].as_array().map(Vec::len), Some(2));
    let (s, body) = http_get(node.http_addr(), "/v1/partitions/orders/1/digest").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v["batches"].as_u64().unwrap_or(0) >= 3, "{v}");
    let (s, _) = http_get(node.http_addr(), "/nope").await;
    assert_eq!(s, 404);

    // Delete: the topic is gone.
    let _: DeleteTopicResponse = client
        .call(
            BROKER_SERVICE,
            "delete_topic",
            &DeleteTopicRequest {
                name: "orders".into(),
            },
        )
        .await
        .expect("delete");
    let e = client
        .call::<_, TopicDescription>(
            BROKER_SERVICE,
            "describe_topic",
            &DescribeTopicRequest {
                name: "orders".into(),
            },
        )
        .await
        .expect_err("deleted");
    assert_eq!(code(&e), Some(ErrorCode::UnknownTopic));
    drop(client);
    node.shutdown().await;
}
