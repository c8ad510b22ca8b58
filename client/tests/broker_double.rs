//! Client tests against real `NeoServer`s serving a tiny in-memory broker written here
//! (a test double of the peer: one log per partition, no replication). The end-to-end
//! tests against real `neo-node` processes live in `neo-tests`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{
    Admin, Client, ClientConfig, Consumer, Error, Offset, Producer, ProducerConfig, ProducerRecord,
    RetryPolicy, partition_for_key,
};
use neo_protocol::api::*;
use neo_protocol::{ErrorCode, MethodBuilder, NeoConfig, NeoServer, RpcError, ServiceBuilder};
use qiss::batch::{check, set_base_offset};
use tokio::net::TcpListener;

#[derive(Default)]
struct Log {
    batches: Vec<Vec<u8>>,
    next_offset: u64,
}

/// State shared by every server of one test cluster.
#[derive(Default)]
struct Cluster {
    /// (id, address) of every broker the metadata lists.
    brokers: Vec<(u64, String)>,
    /// topic -> leader of each partition (the real one, where produce succeeds).
    topics: HashMap<String, Vec<u64>>,
    /// Leader the metadata *claims* for every partition, if set (to provoke NotLeader).
    claimed_leader: Option<u64>,
    /// Number of metadata answers after which `claimed_leader` is dropped.
    claim_for: u32,
    logs: HashMap<(String, u32), Log>,
    produce_requests: u32,
    not_leader_replies: u32,
    metadata_requests: u32,
}

type Shared = Arc<Mutex<Cluster>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Cluster> {
    s.lock().unwrap()
}

fn metadata(s: &Shared) -> MetadataResponse {
    let mut c = lock(s);
    c.metadata_requests += 1;
    let claim = (c.metadata_requests <= c.claim_for)
        .then_some(c.claimed_leader)
        .flatten();
    let mut topics: Vec<TopicMetadata> = c
        .topics
        .iter()
        .map(|(name, leaders)| TopicMetadata {
            name: name.clone(),
            partitions: leaders
                .iter()
                .enumerate()
                .map(|(p, l)| PartitionMetadata {
                    partition: p as u32,
                    leader: Some(claim.unwrap_or(*l)),
                    replicas: vec![*l],
                    in_sync: vec![*l],
                    leader_epoch: 1,
                })
                .collect(),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    MetadataResponse {
        cluster_id: "double".into(),
        brokers: c
            .brokers
            .iter()
            .map(|(id, a)| BrokerInfo {
                node_id: *id,
                address: a.clone(),
                rack: None,
            })
            .collect(),
        controller_id: c.brokers.first().map(|b| b.0),
        topics,
    }
}

/// Err(NotLeader) unless broker `me` leads the partition.
fn check_leader(c: &mut Cluster, me: u64, topic: &str, partition: u32) -> Result<(), RpcError> {
    let leaders = c
        .topics
        .get(topic)
        .ok_or_else(|| RpcError::new(ErrorCode::UnknownTopic, topic.to_string()))?;
    let leader = *leaders
        .get(partition as usize)
        .ok_or_else(|| RpcError::new(ErrorCode::UnknownPartition, "no such partition"))?;
    if leader != me {
        c.not_leader_replies += 1;
        let address = c
            .brokers
            .iter()
            .find(|b| b.0 == leader)
            .map(|b| b.1.clone());
        return Err(RpcError::not_leader(address.as_deref()));
    }
    Ok(())
}

fn service(me: u64, s: Shared) -> ServiceBuilder {
    let (s1, s2, s3, s4, s5, s6, s7) = (
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
        s.clone(),
    );
    ServiceBuilder::new(BROKER_SERVICE)
        .method(
            MethodBuilder::new("produce").sync_handler(move |r: ProduceRequest| {
                let mut c = lock(&s1);
                c.produce_requests += 1;
                check_leader(&mut c, me, &r.topic, r.partition)?;
                let header = check(&r.records)
                    .map_err(|e| RpcError::new(ErrorCode::InvalidRecordBatch, e.to_string()))?;
                let log = c.logs.entry((r.topic.clone(), r.partition)).or_default();
                let base_offset = log.next_offset;
                let mut batch = r.records.to_vec();
                set_base_offset(&mut batch, base_offset);
                log.next_offset += u64::from(header.record_count);
                log.batches.push(batch);
                Ok(ProduceResponse {
                    base_offset,
                    log_append_time_ms: None,
                    record_count: header.record_count,
                })
            }),
        )
        .method(
            MethodBuilder::new("fetch").async_handler(move |r: FetchRequest| {
                let s = s2.clone();
                async move {
                    let deadline = tokio::time::Instant::now()
                        + Duration::from_millis(u64::from(r.wait_ms_max));
                    loop {
                        {
                            let mut c = lock(&s);
                            check_leader(&mut c, me, &r.topic, r.partition)?;
                            let log = c.logs.entry((r.topic.clone(), r.partition)).or_default();
                            let mut batches = Vec::new();
                            for b in &log.batches {
                                let h = check(b).unwrap();
                                if h.next_offset() > r.offset
                                    && (batches.is_empty() || batches.len() < r.bytes_max as usize)
                                {
                                    batches.extend_from_slice(b);
                                }
                            }
                            if !batches.is_empty() || tokio::time::Instant::now() >= deadline {
                                return Ok(FetchResponse {
                                    high_watermark: log.next_offset,
                                    log_start_offset: 0,
                                    batches: batches.into(),
                                });
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }),
        )
        .method(
            MethodBuilder::new("metadata")
                .sync_handler(move |_: MetadataRequest| Ok(metadata(&s3))),
        )
        .method(
            MethodBuilder::new("create_topic").sync_handler(move |r: CreateTopicRequest| {
                let mut c = lock(&s4);
                if c.topics.contains_key(&r.name) {
                    return Err(RpcError::new(ErrorCode::TopicAlreadyExists, r.name));
                }
                c.topics
                    .insert(r.name.clone(), vec![me; r.partitions as usize]);
                Ok(CreateTopicResponse { name: r.name })
            }),
        )
        .method(
            MethodBuilder::new("delete_topic").sync_handler(move |r: DeleteTopicRequest| {
                let mut c = lock(&s5);
                c.topics
                    .remove(&r.name)
                    .ok_or_else(|| RpcError::new(ErrorCode::UnknownTopic, r.name))?;
                Ok(DeleteTopicResponse {})
            }),
        )
        .method(
            MethodBuilder::new("list_topics").sync_handler(move |_: ListTopicsRequest| {
                let mut topics: Vec<String> = lock(&s6).topics.keys().cloned().collect();
                topics.sort();
                Ok(ListTopicsResponse { topics })
            }),
        )
        .method(MethodBuilder::new("describe_topic").sync_handler(
            move |r: DescribeTopicRequest| {
                let m = metadata(&s7);
                let t = m
                    .topics
                    .into_iter()
                    .find(|t| t.name == r.name)
                    .ok_or_else(|| RpcError::new(ErrorCode::UnknownTopic, r.name))?;
                Ok(TopicDescription {
                    name: t.name,
                    partitions: t.partitions,
                    configs: Vec::new(),
                })
            },
        ))
}

/// Start `n` brokers (ids 1..=n) sharing one state; returns their addresses.
async fn start(n: u64, shared: &Shared) -> Vec<String> {
    let mut listeners = Vec::new();
    for id in 1..=n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        lock(shared)
            .brokers
            .push((id, l.local_addr().unwrap().to_string()));
        listeners.push((id, l));
    }
    let mut addresses = Vec::new();
    for (id, l) in listeners {
        addresses.push(l.local_addr().unwrap().to_string());
        let mut server = NeoServer::new(NeoConfig::default());
        server.register(service(id, shared.clone())).unwrap();
        // The handle is leaked on purpose: the servers live as long as the test.
        std::mem::forget(server.start(l).unwrap());
    }
    addresses
}

fn fast_config() -> ClientConfig {
    ClientConfig {
        retry: RetryPolicy {
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            attempts_max: 20,
            deadline: Duration::from_secs(10),
        },
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn produce_then_consume_round_trip() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    let admin = Admin::new(client.clone());
    admin.create_topic("t", 3, 1).await.unwrap();
    assert_eq!(admin.list_topics().await.unwrap(), vec!["t".to_string()]);
    assert_eq!(admin.describe_topic("t").await.unwrap().partitions.len(), 3);

    let producer = Producer::new(client.clone());
    let mut deliveries = Vec::new();
    for i in 0..600u32 {
        let record = ProducerRecord::new("t", format!("v{i}")).key(format!("k{}", i % 7));
        deliveries.push((i, producer.send(record).await.unwrap()));
    }
    producer.flush().await;
    let mut acked = HashMap::new();
    for (i, d) in deliveries {
        let meta = d.await.unwrap();
        assert_eq!(
            meta.partition,
            partition_for_key(format!("k{}", i % 7).as_bytes(), 3)
        );
        let offset = meta.offset.expect("acks=all returns an offset");
        assert!(
            acked.insert((meta.partition, offset), i).is_none(),
            "offset reused"
        );
    }

    let mut consumer = Consumer::new(client.clone());
    consumer.assign_all("t", Offset::Beginning).await.unwrap();
    let mut seen = HashMap::new();
    while seen.len() < 600 {
        let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
        assert!(
            !records.is_empty(),
            "records missing: {} of 600",
            seen.len()
        );
        for r in records {
            let i = acked[&(r.partition, r.offset)];
            assert_eq!(r.value, format!("v{i}").as_bytes());
            assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 7).as_bytes()));
            assert!(
                seen.insert((r.partition, r.offset), i).is_none(),
                "duplicate"
            );
        }
    }
    // Nothing more: an empty poll after the long-poll wait.
    assert!(
        consumer
            .poll(Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );

    admin.delete_topic("t").await.unwrap();
    assert!(admin.list_topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn linger_and_batch_size_shape_the_batches() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    Admin::new(client.clone())
        .create_topic("t", 1, 1)
        .await
        .unwrap();

    // A long linger: 100 records wait in one batch until flush sends it.
    let producer = Producer::with_config(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_secs(600),
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    assert_eq!(lock(&shared).produce_requests, 0, "linger holds the batch");
    producer.flush().await;
    assert_eq!(
        lock(&shared).produce_requests,
        1,
        "one batch for 100 records"
    );
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, Some(i as u64));
    }

    // A tiny batch size: every record closes its batch.
    let before = lock(&shared).produce_requests;
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            linger: Duration::from_secs(600),
            batch_size_bytes: 1,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..10 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", format!("{i}")))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    assert_eq!(lock(&shared).produce_requests - before, 10);
}

#[tokio::test]
async fn not_leader_hint_redirects_produce_and_fetch() {
    let shared = Shared::default();
    let addrs = start(2, &shared).await;
    {
        let mut c = lock(&shared);
        c.topics.insert("t".into(), vec![2, 2]);
        // The metadata keeps claiming broker 1 leads: only the hint can help.
        c.claimed_leader = Some(1);
        c.claim_for = u32::MAX;
    }
    let client = Client::connect_with(&addrs[..1], fast_config())
        .await
        .unwrap();
    let producer = Producer::new(client.clone());
    let meta = producer
        .send_and_wait(ProducerRecord::new("t", "x").partition(1))
        .await
        .unwrap();
    assert_eq!((meta.partition, meta.offset), (1, Some(0)));
    let redirects = lock(&shared).not_leader_replies;
    assert!(redirects >= 1, "the first produce went to broker 1");

    let mut consumer = Consumer::new(client);
    consumer.assign("t", &[1], Offset::At(0)).await.unwrap();
    let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_ref(), b"x");
}

#[tokio::test]
async fn dead_leader_in_metadata_is_refreshed_away() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    // An address nothing listens on: bind, note it, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    {
        let mut c = lock(&shared);
        c.brokers.push((9, dead));
        c.topics.insert("t".into(), vec![1]);
        // The first two metadata answers say the dead broker 9 leads.
        c.claimed_leader = Some(9);
        c.claim_for = 2;
    }
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    let meta = Producer::new(client.clone())
        .send_and_wait(ProducerRecord::new("t", "x"))
        .await
        .unwrap();
    assert_eq!(meta.offset, Some(0));
    assert!(
        lock(&shared).metadata_requests >= 3,
        "refreshed after the failure"
    );

    let status = Admin::new(client).cluster_status().await.unwrap();
    let alive: Vec<(u64, bool)> = status.nodes.iter().map(|n| (n.id, n.alive)).collect();
    assert_eq!(alive, vec![(1, true), (9, false)]);
    assert_eq!(status.controller, Some(1));
    assert_eq!(status.partitions.len(), 1);
}

#[tokio::test]
async fn fatal_errors_are_not_retried() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    let producer = Producer::new(client.clone());
    let err = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err:?}");
    assert!(!err.is_retriable());

    Admin::new(client.clone())
        .create_topic("t", 2, 1)
        .await
        .unwrap();
    let err = producer
        .send(ProducerRecord::new("t", "x").partition(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownPartition { count: 2, .. }),
        "{err:?}"
    );

    let err = Admin::new(client)
        .create_topic("t", 1, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TopicAlreadyExists), "{err:?}");
}

#[tokio::test]
async fn connect_fails_when_no_seed_answers() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let config = ClientConfig {
        retry: RetryPolicy {
            backoff_initial: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
            attempts_max: 3,
            deadline: Duration::from_secs(5),
        },
        ..ClientConfig::default()
    };
    let err = Client::connect_with(&[dead], config).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(Client::connect(&Vec::<String>::new()).await.is_err());
}

/// Every record of a batch shares one completion: each still gets its own offset, in
/// send order, across many batches, and a delivery can be read without awaiting it.
#[tokio::test]
async fn offsets_are_per_record_in_order_across_batches() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    Admin::new(client.clone())
        .create_topic("t", 1, 1)
        .await
        .unwrap();
    // ~10 records of 100 B per batch, one batch in flight at a time.
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            linger: Duration::ZERO,
            batch_size_bytes: 1024,
            ..ProducerConfig::default()
        },
    );
    let record = ProducerRecord::new("t", vec![b'x'; 100]);
    let started = std::time::Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..300 {
        let d = if i % 2 == 0 {
            producer.send_ref(&record).await.unwrap()
        } else {
            producer.send(record.clone()).await.unwrap()
        };
        deliveries.push(d);
    }
    producer.flush().await;
    let batches = lock(&shared).produce_requests;
    assert!(
        (30..300).contains(&batches),
        "records share batches ({batches} requests)"
    );
    for (i, d) in deliveries.into_iter().enumerate() {
        let now = d.result().expect("flush waited for every batch").unwrap();
        assert_eq!(now.offset, Some(i as u64));
        let at = d.completed_at().expect("completed");
        assert!(at >= started);
        assert_eq!(d.await.unwrap(), now, "awaiting gives the same answer");
    }
}

/// Deliveries of one batch awaited by many tasks at once all wake up, each with its
/// own offset.
#[tokio::test]
async fn one_batch_wakes_every_waiting_task() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
    Admin::new(client.clone())
        .create_topic("t", 1, 1)
        .await
        .unwrap();
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            linger: Duration::from_secs(600),
            ..ProducerConfig::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let d = producer
            .send(ProducerRecord::new("t", format!("{i}")))
            .await
            .unwrap();
        assert!(d.result().is_none(), "linger holds the batch");
        tasks.push(tokio::spawn(async move { (i, d.await) }));
    }
    tokio::task::yield_now().await;
    producer.flush().await;
    assert_eq!(lock(&shared).produce_requests, 1);
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.unwrap().offset, Some(i));
    }
}

/// Batches redirected by NotLeader are retried; every record still gets its own
/// offset, in order, and nothing is stored twice.
#[tokio::test]
async fn retries_after_not_leader_keep_per_record_offsets() {
    let shared = Shared::default();
    let addrs = start(2, &shared).await;
    {
        let mut c = lock(&shared);
        c.topics.insert("t".into(), vec![2]);
        // The first metadata answers claim broker 1 leads (it refuses with NotLeader).
        c.claimed_leader = Some(1);
        c.claim_for = 3;
    }
    let client = Client::connect_with(&addrs[..1], fast_config())
        .await
        .unwrap();
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            linger: Duration::ZERO,
            batch_size_bytes: 512,
            ..ProducerConfig::default()
        },
    );
    let record = ProducerRecord::new("t", vec![b'y'; 50]);
    let mut deliveries = Vec::new();
    for _ in 0..100 {
        deliveries.push(producer.send_ref(&record).await.unwrap());
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, Some(i as u64));
    }
    let c = lock(&shared);
    assert!(c.not_leader_replies >= 1, "some batch was redirected");
    assert_eq!(
        c.logs[&("t".to_string(), 0)].next_offset,
        100,
        "no duplicate"
    );
}

/// A batch that never gets sent (its runtime went away with the producer) fails its
/// records with `ProducerClosed` instead of leaving them pending forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_batch_fails_with_producer_closed() {
    let shared = Shared::default();
    let addrs = start(1, &shared).await;
    {
        lock(&shared).topics.insert("t".into(), vec![1]);
    }
    // The brokers run on this test's runtime: wait for the other one off it.
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = Client::connect_with(&addrs, fast_config()).await.unwrap();
            let producer = Producer::with_config(
                client,
                ProducerConfig {
                    linger: Duration::from_secs(600),
                    ..ProducerConfig::default()
                },
            );
            // Not awaited here: it is awaited on the test's runtime once `rt` is gone.
            Some(producer.send(ProducerRecord::new("t", "x")).await.unwrap())
        })
        // `rt` drops here, with the linger timer and the producer's state.
    });
    let delivery = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap()
        .expect("sent");
    let err = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .expect("resolved, not pending")
        .unwrap_err();
    assert!(matches!(err, Error::ProducerClosed), "{err:?}");
}
