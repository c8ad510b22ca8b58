//! The queue client (admin, producer, consumer, settles, run, redrive) against the
//! queue broker double of `queue_double/`. End-to-end tests against real `neo-node`
//! processes live in `neo-tests`.

mod queue_double;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::queue::{HEADER_DLQ_REASON, HEADER_DLQ_SOURCE, RedriveOptions, redrive};
use neo_client::{
    DeadLetter, Error, QueueAdmin, QueueConsumer, QueueConsumerConfig, QueueOptions, QueueProducer,
    Receipt, ReceiptOutcome, SendOptions,
};
use neo_protocol::ErrorCode;
use neo_protocol::api::QueueMessage;
use queue_double::{Slot, in_flight, lock, setup};

#[tokio::test]
async fn messages_flow_from_every_leader_and_acks_are_grouped() {
    let (shared, client) = setup(40).await;
    let admin = QueueAdmin::new(client.clone());
    let names: Vec<String> = admin
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["q", "q.dlq"]);

    let consumer = QueueConsumer::new(client.clone(), "q", "w1").unwrap();
    let mut got = Vec::new();
    while got.len() < 40 {
        let batch = consumer.receive(100, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "{} of 40", got.len());
        got.extend(batch);
    }
    let mut values: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8(d.value.to_vec()).unwrap())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 40, "each message once");
    assert!(got.iter().all(|d| d.delivery_count == 1));
    let partitions: std::collections::BTreeSet<u32> = got.iter().map(|d| d.partition).collect();
    assert_eq!(partitions.len(), 4, "both brokers' partitions");

    // One ack call for receipts of 4 partitions: one request per partition, each at
    // its leader (the double refuses mixed or misrouted requests).
    let mut receipts: Vec<Receipt> = got.iter().map(|d| d.receipt).collect();
    let bogus = Receipt {
        group: 999,
        ..receipts[0]
    };
    let elsewhere = Receipt {
        partition: 99,
        ..receipts[0]
    };
    receipts.push(bogus);
    receipts.push(elsewhere);
    let outcomes = consumer.ack(&receipts).await.unwrap();
    assert_eq!(outcomes.len(), 42);
    assert!(outcomes[..40].iter().all(|o| *o == ReceiptOutcome::Ok));
    assert_eq!(
        outcomes[40],
        ReceiptOutcome::Unknown,
        "another queue's group"
    );
    assert_eq!(
        outcomes[41],
        ReceiptOutcome::Unknown,
        "no partition 99: not sent"
    );
    assert_eq!(lock(&shared).calls("queue_ack"), 4);
    let again = consumer.ack(&receipts[..1]).await.unwrap();
    assert_eq!(again, vec![ReceiptOutcome::AlreadyDone]);
    assert!(matches!(
        consumer.ack_one(receipts[0]).await,
        Err(Error::AlreadyDone { receipt }) if receipt == receipts[0]
    ));

    // Describe asks one broker, then the other for the partitions it leads.
    let report = admin.describe("q", None).await.unwrap();
    assert!(report.missing().is_empty(), "{report:?}");
    assert_eq!(report.total().acked, 40);
    assert_eq!(report.total().available, 0);
    assert!(lock(&shared).calls("describe_queue") >= 2);
    consumer.close().await.unwrap();
    assert!(matches!(
        consumer.receive(1, Duration::ZERO).await,
        Err(Error::ConsumerClosed)
    ));
}

#[tokio::test]
async fn receive_follows_not_leader_hints() {
    let (shared, client) = setup(8).await;
    // From now on the metadata says broker 1 leads everything: half the receives
    // are redirected by NotLeader hints.
    lock(&shared).claimed_leader = Some(1);
    client.refresh_metadata().await.unwrap();
    let config = QueueConsumerConfig {
        prefetch: 0,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, "q", "w", config).unwrap();
    let mut got = 0;
    while got < 8 {
        let batch = consumer.receive(8, Duration::from_secs(1)).await.unwrap();
        assert!(!batch.is_empty());
        got += batch.len();
        consumer
            .ack(&batch.iter().map(|d| d.receipt).collect::<Vec<_>>())
            .await
            .unwrap()
            .iter()
            .for_each(|o| assert_eq!(*o, ReceiptOutcome::Ok));
    }
}

#[tokio::test]
async fn without_prefetch_only_what_is_returned_is_leased() {
    let (shared, client) = setup(10).await;
    let config = QueueConsumerConfig {
        prefetch: 0,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, "q", "cli", config).unwrap();
    let one = consumer.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(in_flight(&shared, "q"), 1);
    let three = consumer.receive(3, Duration::from_secs(1)).await.unwrap();
    assert_eq!(three.len(), 3);
    assert_eq!(in_flight(&shared, "q"), 4);
}

#[tokio::test]
async fn close_gives_buffered_messages_back() {
    let (shared, client) = setup(20).await;
    let config = QueueConsumerConfig {
        prefetch: 8,
        wait: Duration::from_millis(100),
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, "q", "w", config).unwrap();
    let first = consumer.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 1);
    // Let the receive tasks fill the buffer; never more than the prefetch bound.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leased = in_flight(&shared, "q");
    assert!(
        (2..=9).contains(&leased),
        "1 returned + at most 8 buffered: {leased}"
    );
    consumer.close().await.unwrap();
    assert_eq!(
        in_flight(&shared, "q"),
        1,
        "only the returned message stays leased"
    );
}

#[tokio::test]
async fn expired_leases_come_back_and_old_receipts_are_refused() {
    let (_shared, client) = setup(1).await;
    let config = QueueConsumerConfig {
        prefetch: 0,
        visibility_timeout_ms: 100,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, "q", "w", config).unwrap();
    let first = consumer.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(first[0].delivery_count, 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(first[0].lease_expired());
    let second = consumer.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(second[0].offset, first[0].offset);
    assert_eq!(second[0].delivery_count, 2);
    assert!(matches!(
        consumer.ack_one(first[0].receipt).await,
        Err(Error::LeaseLost { .. })
    ));
    consumer.extend_one(second[0].receipt, 5000).await.unwrap();
    consumer
        .term_one(second[0].receipt, "poison")
        .await
        .unwrap();
    assert!(matches!(
        consumer.nack_one(second[0].receipt, None, "x").await,
        Err(Error::AlreadyDone { .. })
    ));
}

#[tokio::test]
async fn run_acks_nacks_and_keeps_leases_alive() {
    let (shared, client) = setup(12).await;
    // Without prefetch nothing waits in a buffer (where leases would run out while
    // the slow handlers below hold every slot).
    let config = QueueConsumerConfig {
        visibility_timeout_ms: 300,
        prefetch: 0,
        ..QueueConsumerConfig::default()
    };
    let consumer = QueueConsumer::with_config(client, "q", "w", config).unwrap();
    let attempts = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let handler = {
        let (attempts, running, peak) = (attempts.clone(), running.clone(), peak.clone());
        move |d: neo_client::QueueDelivery| {
            let (attempts, running, peak) = (attempts.clone(), running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let key = (u64::from(d.partition) << 32) | d.offset;
                let n = {
                    let mut a = attempts.lock().unwrap();
                    let n = a.entry(key).or_default();
                    *n += 1;
                    *n
                };
                // Longer than the lease: only the keep-alive saves the ack.
                tokio::time::sleep(Duration::from_millis(450)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if d.offset == 0 && n == 1 {
                    Err(format!("first try of {key} fails"))
                } else {
                    Ok(())
                }
            }
        }
    };
    let stop = {
        let shared = shared.clone();
        async move {
            while lock(&shared).queues["q"].acked.iter().sum::<u64>() < 12 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        consumer.run_until(handler, 3, stop),
    )
    .await
    .expect("the run ends")
    .unwrap();
    assert_eq!(report.acked, 12, "{report:?}");
    assert_eq!(
        report.nacked, 4,
        "offset 0 of each partition once: {report:?}"
    );
    assert_eq!(
        (report.settle_failed, report.panicked),
        (0, 0),
        "{report:?}"
    );
    assert_eq!(report.handled, 16);
    assert!(peak.load(Ordering::SeqCst) <= 3, "bounded concurrency");
    assert!(
        lock(&shared).calls("queue_extend") > 0,
        "leases were extended"
    );
    assert!(consumer.is_closed());
}

#[tokio::test]
async fn a_panicking_handler_nacks_and_close_ends_run() {
    let (shared, client) = setup(1).await;
    let consumer = QueueConsumer::new(client, "q", "w").unwrap();
    let handler = |d: neo_client::QueueDelivery| async move {
        if d.delivery_count == 1 {
            panic!("boom");
        }
        Ok::<(), String>(())
    };
    let closer = {
        let consumer = consumer.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            while lock(&shared).queues["q"].acked.iter().sum::<u64>() < 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            consumer.close().await
        })
    };
    let report = tokio::time::timeout(Duration::from_secs(20), consumer.run(handler, 2))
        .await
        .expect("close ends the run")
        .unwrap();
    closer.await.unwrap().unwrap();
    assert_eq!(
        (report.handled, report.panicked, report.nacked, report.acked),
        (2, 1, 1, 1),
        "{report:?}"
    );
}

#[tokio::test]
async fn dead_letters_go_back_to_their_source() {
    let (shared, client) = setup(0).await;
    let producer = QueueProducer::new(client.clone());
    for i in 0..3 {
        let options = SendOptions::default()
            .key(format!("k{i}"))
            .header(HEADER_DLQ_SOURCE, "q")
            .header(HEADER_DLQ_REASON, "boom")
            .header("trace", "t");
        producer
            .send_with("q.dlq", format!("d{i}"), options)
            .await
            .unwrap();
    }
    producer.send("q.dlq", "orphan").await.unwrap();
    let report = redrive(&client, "q.dlq", RedriveOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (report.moved, report.skipped, report.failed),
        (3, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.by_source.get("q"), Some(&3));
    assert!(report.error.is_none());
    let c = lock(&shared);
    let moved: Vec<&QueueMessage> = c.queues["q"]
        .messages
        .iter()
        .flatten()
        .map(|m| &m.record)
        .collect();
    assert_eq!(moved.len(), 3);
    for m in moved {
        let names: Vec<&str> = m.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["trace"], "neo-dlq-* headers dropped");
        assert!(m.key.is_some());
    }
    let dlq = &c.queues["q.dlq"].messages[0];
    let done = dlq.iter().filter(|m| m.slot == Slot::Done).count();
    assert_eq!(done, 3, "moved ones acked in the DLQ");
    assert!(
        matches!(dlq[3].slot, Slot::Available { .. }),
        "the orphan is given back"
    );
}

#[tokio::test]
async fn admin_purges_delays_and_deletes() {
    let (shared, client) = setup(6).await;
    let admin = QueueAdmin::new(client.clone());
    let producer = QueueProducer::new(client.clone());
    producer
        .send_with(
            "q",
            "later",
            SendOptions::default().partition(0).deliver_after_ms(60_000),
        )
        .await
        .unwrap();
    let report = admin.describe("q", None).await.unwrap();
    assert_eq!((report.total().available, report.total().delayed), (6, 1));
    assert_eq!(admin.purge("q", None).await.unwrap(), 7);
    assert_eq!(lock(&shared).calls("purge_queue"), 4, "one per partition");
    assert_eq!(
        admin.describe("q", None).await.unwrap().total().available,
        0
    );
    let err = admin
        .create("q", QueueOptions::new(1, 1).dead_letter(DeadLetter::None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists));
    admin.delete("q").await.unwrap();
    let err = admin.describe("q", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownQueue));
    let consumer = QueueConsumer::new(client, "q", "w").unwrap();
    let err = consumer
        .receive(1, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownQueue), "{err:?}");
}
