//! Every broker operation through the [`Broker`] facade, without sockets or processes:
//! an embedded single-node broker over real storage in a temporary directory.
//!
//! No timing is asserted; waits are bounded only to turn a hang into a failure.

use std::time::Duration;

use bytes::Bytes;
use neo_broker::{Embedded, OFFSET_UNKNOWN};
use neo_protocol::api::{
    Acks, DeleteTopicRequest, DescribeTopicRequest, FetchRequest, FetchResponse, Isolation,
    ListTopicsRequest, MetadataRequest, ProduceResponse,
};
use neo_protocol::{ErrorCode, RpcError};

mod common;
use common::*;

fn fetch_req(topic: &str, offset: u64, wait_ms_max: u32) -> FetchRequest {
    FetchRequest {
        topic: topic.into(),
        partition: 0,
        offset,
        bytes_max: 1 << 20,
        wait_ms_max,
        bytes_min: 1,
        isolation: Isolation::Committed,
    }
}

/// Record values of the data batches in a fetch answer, from `offset` on.
fn values(resp: &FetchResponse, offset: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = resp.batches.clone();
    while !rest.is_empty() {
        let h = qiss::batch::check(&rest).expect("whole batch");
        let len = h.batch_length as usize;
        if !h.is_control() {
            let reader = qiss::batch::RecordBatch::new(rest.slice(..len)).expect("reader");
            for r in reader.records() {
                if r.offset() >= offset {
                    out.push(String::from_utf8(r.value().to_vec()).expect("utf8"));
                }
            }
        }
        rest = rest.slice(len..);
    }
    out
}

async fn produce(
    e: &Embedded,
    topic: &str,
    acks: Acks,
    records: Bytes,
) -> Result<ProduceResponse, RpcError> {
    e.broker()
        .produce(&ctx(), produce_req(topic, 0, acks, records))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_admin_operations_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    let c = ctx();

    let created = b
        .create_topic(&c, create("orders", 3))
        .await
        .expect("create");
    assert_eq!(created.name, "orders");
    let mut with_retention = create("logs", 1);
    with_retention.configs = vec![("retention.ms".into(), "60000".into())];
    b.create_topic(&c, with_retention)
        .await
        .expect("create logs");

    let listed = b
        .list_topics(
            &c,
            ListTopicsRequest {
                include_internal: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed.topics,
        vec!["logs".to_string(), "orders".to_string()]
    );
    let d = b
        .describe_topic(
            &c,
            DescribeTopicRequest {
                name: "logs".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        d.configs,
        vec![("retention.ms".to_string(), "60000".to_string())]
    );
    let m = b
        .metadata(
            &c,
            MetadataRequest {
                topics: vec!["orders".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.topics[0].partitions.len(), 3);
    assert_eq!(m.controller_id, Some(neo_broker::EMBEDDED_NODE_ID));

    // Bad input: typed errors, nothing changes.
    assert_eq!(
        code(b.create_topic(&c, create("orders", 1)).await),
        ErrorCode::TopicAlreadyExists
    );
    assert_eq!(
        code(b.create_topic(&c, create("bad name", 1)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(b.create_topic(&c, create("zero", 0)).await),
        ErrorCode::InvalidArgument
    );
    let mut rf2 = create("rf2", 1);
    rf2.replication_factor = 2;
    assert_eq!(
        code(b.create_topic(&c, rf2).await),
        ErrorCode::NotEnoughReplicas
    );
    let mut bad_cfg = create("cfg", 1);
    bad_cfg.configs = vec![("cleanup.policy".into(), "compact".into())];
    assert_eq!(
        code(b.create_topic(&c, bad_cfg).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            b.describe_topic(
                &c,
                DescribeTopicRequest {
                    name: "nope".into()
                }
            )
            .await
        ),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        code(
            b.metadata(
                &c,
                MetadataRequest {
                    topics: vec!["nope".into()]
                }
            )
            .await
        ),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        code(
            b.delete_topic(
                &c,
                DeleteTopicRequest {
                    name: "nope".into()
                }
            )
            .await
        ),
        ErrorCode::UnknownTopic
    );
    let listed = b
        .list_topics(
            &c,
            ListTopicsRequest {
                include_internal: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.topics.len(), 2);

    // Delete: the topic is gone and its partition replicas are closed.
    b.delete_topic(
        &c,
        DeleteTopicRequest {
            name: "orders".into(),
        },
    )
    .await
    .expect("delete");
    assert_eq!(
        code(produce(&e, "orders", Acks::All, batch(&["x"], None)).await),
        ErrorCode::UnknownTopic
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while b.partitions().len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_with_every_acks_mode() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    b.create_topic(&ctx(), create("t", 1)).await.unwrap();

    let first = produce(&e, "t", Acks::All, batch(&["a", "b", "c"], None))
        .await
        .unwrap();
    assert_eq!(first.record_count, 3);
    let second = produce(&e, "t", Acks::Leader, batch(&["d"], None))
        .await
        .unwrap();
    assert_eq!(second.base_offset, first.base_offset + 3, "dense offsets");
    let none = produce(&e, "t", Acks::None, batch(&["e"], None))
        .await
        .unwrap();
    assert_eq!(none.base_offset, OFFSET_UNKNOWN);
    assert_eq!(none.record_count, 1);

    // Fetch waits (bounded) until the acks=none record is committed too.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let got = loop {
        let r = b
            .fetch(&ctx(), fetch_req("t", first.base_offset, 100))
            .await
            .unwrap();
        let v = values(&r, first.base_offset);
        if v.len() == 5 || tokio::time::Instant::now() >= deadline {
            break v;
        }
    };
    assert_eq!(got, ["a", "b", "c", "d", "e"]);
    // From the middle of the first batch: the records below the offset are skipped.
    let r = b
        .fetch(&ctx(), fetch_req("t", first.base_offset + 1, 0))
        .await
        .unwrap();
    assert_eq!(values(&r, first.base_offset + 1)[0], "b");
    assert!(r.high_watermark >= first.base_offset + 5);

    // A long poll at the end is woken by a produce.
    let hw = r.high_watermark;
    let poll = {
        let b = b.clone();
        tokio::spawn(async move { b.fetch(&ctx(), fetch_req("t", hw, 20_000)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&e, "t", Acks::All, batch(&["late"], None))
        .await
        .unwrap();
    let woke = tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(values(&woke, hw), ["late"]);

    // Bad input: typed errors, nothing stored.
    let before = b
        .fetch(&ctx(), fetch_req("t", 0, 0))
        .await
        .unwrap()
        .high_watermark;
    assert_eq!(
        code(produce(&e, "nope", Acks::All, batch(&["x"], None)).await),
        ErrorCode::UnknownTopic
    );
    assert_eq!(
        code(
            b.produce(&ctx(), produce_req("t", 9, Acks::All, batch(&["x"], None)))
                .await
        ),
        ErrorCode::UnknownPartition
    );
    let mut corrupt = batch(&["x"], None).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        code(produce(&e, "t", Acks::All, Bytes::from(corrupt)).await),
        ErrorCode::InvalidRecordBatch
    );
    assert_eq!(
        code(produce(&e, "t", Acks::All, Bytes::from_static(b"not a batch")).await),
        ErrorCode::InvalidRecordBatch
    );
    let control = qiss::batch::BatchBuilder::control(b"payload").unwrap();
    assert_eq!(
        code(produce(&e, "t", Acks::All, control).await),
        ErrorCode::InvalidRecordBatch
    );
    let huge = "x".repeat(2 * 1024 * 1024);
    assert_eq!(
        code(produce(&e, "t", Acks::All, batch(&[huge.as_str()], None)).await),
        ErrorCode::InvalidRecordBatch
    );
    assert_eq!(
        code(b.fetch(&ctx(), fetch_req("t", before + 1_000, 0)).await),
        ErrorCode::OffsetOutOfRange
    );
    let after = b
        .fetch(&ctx(), fetch_req("t", 0, 0))
        .await
        .unwrap()
        .high_watermark;
    assert_eq!(after, before, "refused batches stored nothing");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producers_retries_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let b = e.broker();
    b.create_topic(&ctx(), create("idem", 1)).await.unwrap();

    // Under acks=leader and acks=all, sent three times: one copy, one answer.
    let stamped = batch(&["p0", "p1"], Some((77, 0)));
    let first = produce(&e, "idem", Acks::Leader, stamped.clone())
        .await
        .unwrap();
    let again = produce(&e, "idem", Acks::Leader, stamped.clone())
        .await
        .unwrap();
    let all = produce(&e, "idem", Acks::All, stamped).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, all);
    let next = produce(&e, "idem", Acks::All, batch(&["n"], None))
        .await
        .unwrap();
    assert_eq!(
        next.base_offset,
        first.base_offset + 2,
        "no second copy was stored"
    );

    // Concurrent copies of a new batch: one stored, every copy gets its offset.
    let copies: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                b.produce(
                    &ctx(),
                    produce_req("idem", 0, Acks::All, batch(&["c"], Some((77, 2)))),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in copies {
        answers.push(t.await.unwrap().expect("copy"));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let after = produce(&e, "idem", Acks::All, batch(&["z"], None))
        .await
        .unwrap();
    assert_eq!(after.base_offset, answers[0].base_offset + 1);

    // Older than the remembered window: refused, not stored again.
    for seq in 3..(3 + neo_broker::partition::producers::RECENT_BATCHES as i32 + 1) {
        produce(&e, "idem", Acks::All, batch(&["w"], Some((77, seq))))
            .await
            .unwrap();
    }
    assert_eq!(
        code(produce(&e, "idem", Acks::All, batch(&["p0", "p1"], Some((77, 0)))).await),
        ErrorCode::DuplicateSequence
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_keeps_its_topics_records_and_producers() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    e.broker()
        .create_topic(&ctx(), create("keep", 1))
        .await
        .unwrap();
    let stamped = batch(&["once"], Some((9, 0)));
    let first = produce(&e, "keep", Acks::All, stamped.clone())
        .await
        .unwrap();
    e.shutdown().await;

    let e = start(dir.path()).await;
    let b = e.broker();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let retry = loop {
        // The partition reopens and elects itself: NotLeader until then.
        match produce(&e, "keep", Acks::All, stamped.clone()).await {
            Ok(r) => break r,
            Err(err) if err.error_code() == Some(ErrorCode::NotLeader) => {
                assert!(tokio::time::Instant::now() < deadline, "no leader: {err:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("retry after restart: {err:?}"),
        }
    };
    assert_eq!(retry, first, "the producer table survived the restart");
    let r = b
        .fetch(&ctx(), fetch_req("keep", first.base_offset, 0))
        .await
        .unwrap();
    assert_eq!(values(&r, first.base_offset), ["once"]);
    e.shutdown().await;
}
