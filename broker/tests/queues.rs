//! Queues through the embedded broker (no sockets, real storage): receive, ack, nack,
//! expiry, dead letters, ordering by key, delayed messages, bad receipts, restarts.
//!
//! No timing is asserted; waits are bounded only to turn a hang into a failure.

use std::collections::BTreeSet;
use std::time::Duration;

use neo_broker::Embedded;
use neo_protocol::ErrorCode;
use neo_protocol::api::{
    DeadLetter, DescribeQueueRequest, HEADER_DELIVER_AFTER_MS, HEADER_DLQ_DELIVERIES,
    HEADER_DLQ_SOURCE, QueueExtendRequest, QueueMessage, QueueReceiveRequest, QueueSettings,
    QueueTermRequest, Receipt, ReceiptOutcome,
};

mod common;
use common::*;

fn settings(vis: u32, max_deliveries: u32) -> QueueSettings {
    QueueSettings {
        visibility_timeout_ms: vis,
        max_deliveries,
        ..QueueSettings::default()
    }
}

fn receipts(m: &[QueueMessage]) -> Vec<Receipt> {
    m.iter().map(|m| m.receipt).collect()
}

/// Receives until `n` messages came or the deadline passes.
async fn receive_n(e: &Embedded, q: &str, consumer: &str, n: usize) -> Vec<QueueMessage> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < n && tokio::time::Instant::now() < deadline {
        let got = e
            .consume_from_queue(q, consumer, (n - out.len()).min(1000) as u32, 500)
            .await
            .expect("receive");
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acked_exactly_once_by_competing_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    e.create_queue("jobs", 3, QueueSettings::default(), DeadLetter::Default)
        .await
        .expect("create");
    for i in 0..300 {
        e.produce_to_queue("jobs", None, format!("m{i}").as_bytes())
            .await
            .expect("send");
    }
    let mut seen = BTreeSet::new();
    let mut acked = 0;
    for round in 0.. {
        let consumer = format!("c{}", round % 3);
        let got = e
            .consume_from_queue("jobs", &consumer, 50, 200)
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        for m in &got {
            assert_eq!(m.delivery_count, 1);
            assert!(
                seen.insert((m.partition, m.offset)),
                "delivered twice: {m:?}"
            );
        }
        let outcomes = e.ack("jobs", &receipts(&got)).await.expect("ack");
        assert!(outcomes.iter().all(|o| *o == ReceiptOutcome::Ok));
        acked += got.len();
        assert!(round < 1000, "never drained");
    }
    assert_eq!(acked, 300);
    // Acking again: AlreadyDone, nothing changes.
    let d = e
        .broker()
        .describe_queue(
            &ctx(),
            DescribeQueueRequest {
                queue: "jobs".into(),
                share_group: None,
            },
        )
        .await
        .expect("describe");
    assert_eq!(d.led.iter().map(|p| p.acked).sum::<u64>(), 300);
    assert_eq!(
        d.led.iter().map(|p| p.available + p.in_flight).sum::<u64>(),
        0
    );
    assert!(d.led.iter().all(|p| p.ack_floor == p.end_offset));
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_expiry_and_poison_messages_end_in_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let created = e
        .create_queue("work", 1, settings(200, 3), DeadLetter::Default)
        .await
        .expect("create");
    assert_eq!(created.created_dead_letter.as_deref(), Some("work.dlq"));
    e.produce_to_queue("work", Some(b"k"), b"poison")
        .await
        .unwrap();
    // Delivery 1: nacked; 2: lease expires; 3: nacked at the limit -> dead letter.
    let m = receive_n(&e, "work", "a", 1).await;
    assert_eq!(m[0].delivery_count, 1);
    let o = e
        .nack("work", &receipts(&m), Some(0), "bad input")
        .await
        .unwrap();
    assert_eq!(o, vec![ReceiptOutcome::Ok]);
    // A second nack of the same receipt is stale.
    let o = e
        .nack("work", &receipts(&m), Some(0), "again")
        .await
        .unwrap();
    assert_eq!(o, vec![ReceiptOutcome::LeaseLost]);
    let m2 = receive_n(&e, "work", "b", 1).await;
    assert_eq!(m2[0].delivery_count, 2);
    // Let the lease expire (200 ms): it comes back as delivery 3.
    let m3 = receive_n(&e, "work", "c", 1).await;
    assert_eq!(m3[0].delivery_count, 3);
    // The expired receipt is stale now.
    let o = e.ack("work", &receipts(&m2)).await.unwrap();
    assert_eq!(o, vec![ReceiptOutcome::LeaseLost]);
    let o = e
        .nack("work", &receipts(&m3), None, "still bad")
        .await
        .unwrap();
    assert_eq!(o, vec![ReceiptOutcome::Ok]);
    // Never delivered again from "work"; moved to "work.dlq" with its headers.
    let dead = receive_n(&e, "work.dlq", "ops", 1).await;
    assert_eq!(dead.len(), 1, "the poison message reached the DLQ");
    let h = |name: &str| {
        dead[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(h(HEADER_DLQ_SOURCE).as_deref(), Some("work"));
    assert_eq!(h(HEADER_DLQ_DELIVERIES).as_deref(), Some("3"));
    assert_eq!(dead[0].value, b"poison");
    assert_eq!(dead[0].key.as_deref(), Some(&b"k"[..]));
    let again = e.consume_from_queue("work", "a", 10, 300).await.unwrap();
    assert!(
        again.is_empty(),
        "a dead letter is not redelivered: {again:?}"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_extend_and_bad_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    e.create_queue("t", 1, settings(300, 5), DeadLetter::None)
        .await
        .unwrap();
    e.create_queue("other", 1, settings(300, 5), DeadLetter::None)
        .await
        .unwrap();
    for i in 0..3 {
        e.produce_to_queue("t", None, format!("v{i}").as_bytes())
            .await
            .unwrap();
    }
    let m = receive_n(&e, "t", "a", 3).await;
    assert_eq!(m.len(), 3);
    // Extend the first lease well past the visibility timeout.
    let r = e
        .broker()
        .queue_extend(
            &ctx(),
            QueueExtendRequest {
                queue: "t".into(),
                share_group: None,
                receipts: vec![m[0].receipt],
                visibility_timeout_ms: 60_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.outcomes, vec![ReceiptOutcome::Ok]);
    // Term the second: dead at once (no DLQ: archived).
    let r = e
        .broker()
        .queue_term(
            &ctx(),
            QueueTermRequest {
                queue: "t".into(),
                share_group: None,
                receipts: vec![m[1].receipt],
                reason: "unprocessable".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.outcomes, vec![ReceiptOutcome::Ok]);
    // Bad receipts: another queue's, an offset beyond the end, a wrong lease.
    let mut foreign = m[2].receipt;
    foreign.group += 1000;
    let mut beyond = m[2].receipt;
    beyond.offset = 1_000_000;
    let mut wrong = m[2].receipt;
    wrong.lease += 1;
    let o = e.ack("t", &[foreign, beyond, wrong]).await.unwrap();
    assert_eq!(
        o,
        vec![
            ReceiptOutcome::Unknown,
            ReceiptOutcome::Unknown,
            ReceiptOutcome::LeaseLost
        ]
    );
    // After the 300 ms timeout only the third (not extended) comes back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let back = receive_n(&e, "t", "b", 1).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].offset, m[2].offset);
    assert_eq!(back[0].delivery_count, 2);
    let none = e.consume_from_queue("t", "b", 10, 200).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    // The extended lease is still the holder's: its ack works.
    let o = e.ack("t", &[m[0].receipt]).await.unwrap();
    assert_eq!(o, vec![ReceiptOutcome::Ok]);
    // Bad requests: typed errors.
    let bad = QueueReceiveRequest {
        queue: "t".into(),
        share_group: None,
        consumer: "c".into(),
        partition: None,
        messages_max: 0,
        visibility_timeout_ms: 0,
        wait_ms_max: 0,
    };
    assert_eq!(
        code(e.broker().queue_receive(&ctx(), bad.clone()).await),
        ErrorCode::InvalidArgument
    );
    let absurd = QueueReceiveRequest {
        messages_max: 1,
        visibility_timeout_ms: u32::MAX,
        ..bad.clone()
    };
    assert_eq!(
        code(e.broker().queue_receive(&ctx(), absurd).await),
        ErrorCode::InvalidArgument
    );
    let unknown = QueueReceiveRequest {
        queue: "nope".into(),
        messages_max: 1,
        ..bad
    };
    assert_eq!(
        code(e.broker().queue_receive(&ctx(), unknown).await),
        ErrorCode::UnknownQueue
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_by_key_never_leases_two_messages_of_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    let s = QueueSettings {
        ordered_by_key: true,
        ..settings(30_000, 5)
    };
    e.create_queue("fifo", 1, s, DeadLetter::None)
        .await
        .unwrap();
    for i in 0..4 {
        for key in ["a", "b"] {
            e.produce_to_queue("fifo", Some(key.as_bytes()), format!("{key}{i}").as_bytes())
                .await
                .unwrap();
        }
    }
    let mut order: Vec<String> = Vec::new();
    for _ in 0..4 {
        let got = e.consume_from_queue("fifo", "w", 100, 300).await.unwrap();
        let keys: Vec<_> = got.iter().map(|m| m.key.clone()).collect();
        assert_eq!(got.len(), 2, "one message per key at a time: {got:?}");
        assert_ne!(keys[0], keys[1]);
        // Nothing more while both keys are leased.
        let none = e.consume_from_queue("fifo", "x", 100, 0).await.unwrap();
        assert!(none.is_empty(), "{none:?}");
        order.extend(
            got.iter()
                .map(|m| String::from_utf8_lossy(&m.value).to_string()),
        );
        e.ack("fifo", &receipts(&got)).await.unwrap();
    }
    let a: Vec<_> = order
        .iter()
        .filter(|v| v.starts_with('a'))
        .cloned()
        .collect();
    assert_eq!(a, vec!["a0", "a1", "a2", "a3"]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_wait_and_acks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    e.create_queue("d", 1, settings(30_000, 5), DeadLetter::None)
        .await
        .unwrap();
    // A delayed message (header) and two plain ones.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut b = qiss::batch::BatchBuilder::new();
    b.push(now, None, &[(HEADER_DELIVER_AFTER_MS, b"600")], b"later")
        .unwrap();
    b.push(now, None, &[], b"now1").unwrap();
    b.push(now, None, &[], b"now2").unwrap();
    e.broker()
        .produce(
            &ctx(),
            produce_req("d", 0, neo_protocol::api::Acks::All, b.build().unwrap()),
        )
        .await
        .unwrap();
    let first = e.consume_from_queue("d", "a", 10, 0).await.unwrap();
    let values: Vec<_> = first.iter().map(|m| m.value.clone()).collect();
    assert_eq!(values, vec![b"now1".to_vec(), b"now2".to_vec()]);
    e.ack("d", &receipts(&first[..1])).await.unwrap();
    e.shutdown().await;

    // Restart: the ack holds, the lease of now2 holds (restarted), the delay holds.
    let e = start(dir.path()).await;
    let later = receive_n(&e, "d", "b", 1).await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].value, b"later");
    let none = e.consume_from_queue("d", "b", 10, 200).await.unwrap();
    assert!(
        none.is_empty(),
        "now1 is acked and now2 still leased: {none:?}"
    );
    let o = e.ack("d", &receipts(&first[1..])).await.unwrap();
    assert_eq!(o, vec![ReceiptOutcome::Ok], "a lease survives a restart");
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_groups_consume_a_topic_independently() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(dir.path()).await;
    e.broker()
        .create_topic(&ctx(), create("events", 1))
        .await
        .unwrap();
    e.broker()
        .produce(
            &ctx(),
            produce_req(
                "events",
                0,
                neo_protocol::api::Acks::All,
                batch(&["e0", "e1", "e2"], None),
            ),
        )
        .await
        .unwrap();
    let req = |group: &str| QueueReceiveRequest {
        queue: "events".into(),
        share_group: Some(group.into()),
        consumer: "c".into(),
        partition: Some(0),
        messages_max: 10,
        visibility_timeout_ms: 0,
        wait_ms_max: 0,
    };
    let a = e.broker().queue_receive(&ctx(), req("a")).await.unwrap();
    assert_eq!(a.messages.len(), 3);
    // Another share group gets every message too; group "a" gets nothing more.
    let b = e.broker().queue_receive(&ctx(), req("b")).await.unwrap();
    assert_eq!(b.messages.len(), 3);
    let a2 = e.broker().queue_receive(&ctx(), req("a")).await.unwrap();
    assert!(a2.messages.is_empty());
    // Acks are per share group.
    let ack = neo_protocol::api::QueueAckRequest {
        queue: "events".into(),
        share_group: Some("a".into()),
        receipts: receipts(&a.messages),
    };
    let r = e.broker().queue_ack(&ctx(), ack).await.unwrap();
    assert!(r.outcomes.iter().all(|o| *o == ReceiptOutcome::Ok));
    // Queue semantics need a share group on a topic, and none on a queue.
    let mut no_group = req("a");
    no_group.share_group = None;
    assert_eq!(
        code(e.broker().queue_receive(&ctx(), no_group).await),
        ErrorCode::InvalidArgument
    );
    // The topic's records are untouched for offset consumers.
    let d = e
        .broker()
        .describe_queue(
            &ctx(),
            DescribeQueueRequest {
                queue: "events".into(),
                share_group: Some("a".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(d.led[0].acked, 3);
    assert_eq!(d.led[0].ack_floor, 3);
    e.shutdown().await;
}
