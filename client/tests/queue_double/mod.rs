//! A test double of a queue broker, shared by `queues.rs` (the library) and
//! `queue_cli.rs` (the `neo queue` commands): real `NeoServer`s serving an in-memory
//! broker with the semantics of `neo_protocol::api::queues` (leases, receipts,
//! outcomes, leaders per partition, NotLeader hints), kept deliberately simple (no
//! replication, no max deliveries, no ordering by key, no share groups of their own).
#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use neo_client::{
    Client, ClientConfig, DeadLetter, QueueAdmin, QueueOptions, QueueProducer, Receipt,
    ReceiptOutcome, RetryPolicy, SendOptions,
};
use neo_protocol::api::*;
use neo_protocol::{ErrorCode, MethodBuilder, NeoConfig, NeoServer, RpcError, ServiceBuilder};
use qiss::batch::{RecordBatch, check, set_base_offset};
use tokio::net::TcpListener;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    Available { not_before: Instant },
    Leased { lease: u64, deadline: Instant },
    Done,
}

pub struct Message {
    pub record: QueueMessage,
    pub slot: Slot,
    pub deliveries: u32,
}

pub struct Queue {
    pub settings: QueueSettings,
    /// Raft group id of each partition (receipts carry it).
    pub groups: Vec<u64>,
    pub messages: Vec<Vec<Message>>,
    pub acked: Vec<u64>,
}

#[derive(Default)]
pub struct Cluster {
    pub brokers: Vec<(u64, String)>,
    /// topic -> leader of each partition.
    pub topics: HashMap<String, Vec<u64>>,
    /// Leader the metadata claims for every partition while set (NotLeader hints).
    pub claimed_leader: Option<u64>,
    pub queues: HashMap<String, Queue>,
    next_group: u64,
    /// The log index a receive leases under.
    next_lease: u64,
    /// Requests by (broker, method).
    calls: HashMap<(u64, &'static str), u32>,
}

pub type Shared = Arc<Mutex<Cluster>>;

pub fn lock(s: &Shared) -> MutexGuard<'_, Cluster> {
    s.lock().unwrap()
}

fn rpc(code: ErrorCode, message: impl Into<String>) -> RpcError {
    RpcError::new(code, message)
}

impl Cluster {
    fn count(&mut self, me: u64, method: &'static str) {
        *self.calls.entry((me, method)).or_default() += 1;
    }

    pub fn calls(&self, method: &str) -> u32 {
        self.calls
            .iter()
            .filter(|((_, m), _)| *m == method)
            .map(|(_, n)| n)
            .sum()
    }

    fn address(&self, id: u64) -> Option<String> {
        self.brokers.iter().find(|b| b.0 == id).map(|b| b.1.clone())
    }

    fn check_leader(&self, me: u64, topic: &str, partition: u32) -> Result<(), RpcError> {
        let leaders = self
            .topics
            .get(topic)
            .ok_or_else(|| rpc(ErrorCode::UnknownTopic, topic))?;
        let leader = *leaders
            .get(partition as usize)
            .ok_or_else(|| rpc(ErrorCode::UnknownPartition, "no such partition"))?;
        if leader != me {
            return Err(RpcError::not_leader(self.address(leader).as_deref()));
        }
        Ok(())
    }

    fn create_queue(&mut self, name: &str, partitions: u32, settings: QueueSettings) {
        let n = self.brokers.len() as u64;
        let leaders = (0..partitions).map(|p| u64::from(p) % n + 1).collect();
        self.topics.insert(name.to_string(), leaders);
        let groups = (0..partitions)
            .map(|_| {
                self.next_group += 1;
                self.next_group
            })
            .collect();
        let queue = Queue {
            settings,
            groups,
            messages: (0..partitions).map(|_| Vec::new()).collect(),
            acked: vec![0; partitions as usize],
        };
        self.queues.insert(name.to_string(), queue);
    }

    fn queue(&mut self, name: &str) -> Result<&mut Queue, RpcError> {
        self.queues
            .get_mut(name)
            .ok_or_else(|| rpc(ErrorCode::UnknownQueue, name))
    }

    /// Every receipt of one request must be of one partition this broker leads (the
    /// client groups them): the partition, or an error.
    fn settle_partition(
        &self,
        me: u64,
        queue: &str,
        receipts: &[Receipt],
    ) -> Result<u32, RpcError> {
        let p = receipts
            .first()
            .ok_or_else(|| rpc(ErrorCode::InvalidArgument, "no receipts"))?
            .partition;
        if receipts.iter().any(|r| r.partition != p) {
            return Err(rpc(
                ErrorCode::InvalidArgument,
                "receipts of several partitions",
            ));
        }
        self.check_leader(me, queue, p)?;
        Ok(p)
    }
}

/// What a settle does to a message whose receipt matched its lease.
#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Nack(u32),
    Extend(u32),
    Term,
}

fn settle(
    s: &Shared,
    me: u64,
    method: &'static str,
    queue: &str,
    receipts: &[Receipt],
    how: Settle,
) -> Result<QueueSettleResponse, RpcError> {
    let mut c = lock(s);
    c.count(me, method);
    let p = c.settle_partition(me, queue, receipts)?;
    let q = c.queue(queue)?;
    let now = Instant::now();
    let default_vis = q.settings.visibility_timeout_ms;
    let group = q.groups[p as usize];
    let mut outcomes = Vec::new();
    for r in receipts {
        let Some(m) = q.messages[p as usize]
            .get_mut(r.offset as usize)
            .filter(|_| r.group == group)
        else {
            outcomes.push(ReceiptOutcome::Unknown);
            continue;
        };
        let outcome = match m.slot {
            Slot::Done => ReceiptOutcome::AlreadyDone,
            // An expired lease stays its holder's until another receive takes the
            // message (docs/queues.md).
            Slot::Leased { lease, .. } if lease == r.lease => {
                m.slot = match how {
                    Settle::Ack | Settle::Term => Slot::Done,
                    Settle::Nack(delay) => Slot::Available {
                        not_before: now + Duration::from_millis(u64::from(delay)),
                    },
                    Settle::Extend(vis) => {
                        let vis = if vis == 0 { default_vis } else { vis };
                        Slot::Leased {
                            lease,
                            deadline: now + Duration::from_millis(u64::from(vis)),
                        }
                    }
                };
                ReceiptOutcome::Ok
            }
            _ => ReceiptOutcome::LeaseLost,
        };
        if matches!(how, Settle::Ack) && outcome == ReceiptOutcome::Ok {
            q.acked[p as usize] += 1;
        }
        outcomes.push(outcome);
    }
    Ok(QueueSettleResponse { outcomes })
}

/// Take up to `max` receivable messages of a partition (None: nothing yet).
fn take(
    s: &Shared,
    me: u64,
    r: &QueueReceiveRequest,
) -> Result<Option<Vec<QueueMessage>>, RpcError> {
    let mut c = lock(s);
    let p = r
        .partition
        .ok_or_else(|| rpc(ErrorCode::InvalidArgument, "this double wants a partition"))?;
    c.check_leader(me, &r.queue, p)?;
    c.next_lease += 1;
    let lease = c.next_lease;
    let q = c.queue(&r.queue)?;
    let vis = match r.visibility_timeout_ms {
        0 => q.settings.visibility_timeout_ms,
        v => v,
    };
    let now = Instant::now();
    let mut out = Vec::new();
    for m in q.messages[p as usize].iter_mut() {
        if out.len() >= r.messages_max as usize {
            break;
        }
        let receivable = match m.slot {
            Slot::Available { not_before } => not_before <= now,
            Slot::Leased { deadline, .. } => deadline <= now,
            Slot::Done => false,
        };
        if receivable {
            m.deliveries += 1;
            m.slot = Slot::Leased {
                lease,
                deadline: now + Duration::from_millis(u64::from(vis)),
            };
            let mut msg = m.record.clone();
            msg.delivery_count = m.deliveries;
            msg.receipt.delivery = m.deliveries;
            msg.receipt.lease = lease;
            out.push(msg);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn metadata(c: &Cluster) -> MetadataResponse {
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
                    leader: Some(c.claimed_leader.unwrap_or(*l)),
                    replicas: vec![*l],
                    in_sync: vec![*l],
                    leader_epoch: 1,
                })
                .collect(),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    MetadataResponse {
        cluster_id: "queue-double".into(),
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

fn produce(s: &Shared, me: u64, r: ProduceRequest) -> Result<ProduceResponse, RpcError> {
    let mut c = lock(s);
    c.check_leader(me, &r.topic, r.partition)?;
    let header =
        check(&r.records).map_err(|e| rpc(ErrorCode::InvalidRecordBatch, e.to_string()))?;
    let q = c
        .queues
        .get_mut(&r.topic)
        .ok_or_else(|| rpc(ErrorCode::UnknownQueue, "this double stores queues only"))?;
    let log = &mut q.messages[r.partition as usize];
    let base_offset = log.len() as u64;
    let mut batch = r.records.to_vec();
    set_base_offset(&mut batch, base_offset);
    let batch = RecordBatch::new(Bytes::from(batch))
        .map_err(|e| rpc(ErrorCode::InvalidRecordBatch, e.to_string()))?;
    let group = q.groups[r.partition as usize];
    for record in batch.records() {
        let delay: u64 = record
            .headers()
            .find(|(n, _)| *n == HEADER_DELIVER_AFTER_MS)
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        log.push(Message {
            record: QueueMessage {
                receipt: Receipt {
                    group,
                    partition: r.partition,
                    offset: record.offset(),
                    delivery: 0,
                    lease: 0,
                },
                partition: r.partition,
                offset: record.offset(),
                delivery_count: 0,
                key: record.key().map(<[u8]>::to_vec),
                value: record.value().to_vec(),
                headers: record
                    .headers()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
                timestamp_ms: record.timestamp(),
            },
            slot: Slot::Available {
                not_before: Instant::now() + Duration::from_millis(delay),
            },
            deliveries: 0,
        });
    }
    Ok(ProduceResponse {
        base_offset,
        log_append_time_ms: None,
        record_count: header.record_count,
    })
}

fn describe(s: &Shared, me: u64, r: &DescribeQueueRequest) -> Result<QueueDescription, RpcError> {
    let mut c = lock(s);
    c.count(me, "describe_queue");
    let leaders = c
        .topics
        .get(&r.queue)
        .cloned()
        .ok_or_else(|| rpc(ErrorCode::UnknownQueue, r.queue.clone()))?;
    let addresses: Vec<Option<String>> = leaders.iter().map(|l| c.address(*l)).collect();
    let q = c.queue(&r.queue)?;
    let now = Instant::now();
    let mut led = Vec::new();
    let mut not_led = Vec::new();
    for (p, leader) in leaders.iter().enumerate() {
        if *leader != me {
            not_led.push((p as u32, addresses[p].clone()));
            continue;
        }
        let mut stats = QueuePartitionStats {
            partition: p as u32,
            acked: q.acked[p],
            end_offset: q.messages[p].len() as u64,
            ..QueuePartitionStats::default()
        };
        for m in &q.messages[p] {
            match m.slot {
                Slot::Available { not_before } if not_before > now => stats.delayed += 1,
                Slot::Leased { deadline, .. } if deadline > now => stats.in_flight += 1,
                Slot::Done => {}
                _ => stats.available += 1,
            }
        }
        led.push(stats);
    }
    Ok(QueueDescription {
        name: r.queue.clone(),
        share_group: r.share_group.clone(),
        partitions: leaders.len() as u32,
        settings: q.settings.clone(),
        led,
        not_led,
    })
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
    let (s8, s9, s10, s11, s12) = (s.clone(), s.clone(), s.clone(), s.clone(), s.clone());
    ServiceBuilder::new(BROKER_SERVICE)
        .method(
            MethodBuilder::new("metadata")
                .sync_handler(move |_: MetadataRequest| Ok(metadata(&lock(&s1)))),
        )
        .method(
            MethodBuilder::new("produce")
                .sync_handler(move |r: ProduceRequest| produce(&s2, me, r)),
        )
        .method(
            MethodBuilder::new("create_queue").sync_handler(move |r: CreateQueueRequest| {
                let mut c = lock(&s3);
                if c.topics.contains_key(&r.name) {
                    return Err(rpc(ErrorCode::TopicAlreadyExists, r.name));
                }
                let dlq = match &r.dead_letter {
                    DeadLetter::Default => Some(format!("{}{DEAD_LETTER_SUFFIX}", r.name)),
                    DeadLetter::None => None,
                    DeadLetter::Queue(q) => Some(q.clone()),
                };
                let settings = QueueSettings {
                    dead_letter: dlq.clone(),
                    ..r.settings
                };
                c.create_queue(&r.name, r.partitions, settings.clone());
                let created = dlq.filter(|d| !c.topics.contains_key(d));
                if let Some(d) = &created {
                    c.create_queue(d, 1, QueueSettings::default());
                }
                Ok(CreateQueueResponse {
                    name: r.name,
                    settings,
                    created_dead_letter: created,
                })
            }),
        )
        .method(
            MethodBuilder::new("delete_queue").sync_handler(move |r: DeleteQueueRequest| {
                let mut c = lock(&s4);
                c.queues
                    .remove(&r.name)
                    .ok_or_else(|| rpc(ErrorCode::UnknownQueue, r.name.clone()))?;
                c.topics.remove(&r.name);
                Ok(DeleteQueueResponse {})
            }),
        )
        .method(
            MethodBuilder::new("list_queues").sync_handler(move |_: ListQueuesRequest| {
                let c = lock(&s5);
                let queues = c
                    .queues
                    .iter()
                    .map(|(name, q)| QueueListing {
                        name: name.clone(),
                        partitions: q.groups.len() as u32,
                        replication_factor: 1,
                        settings: q.settings.clone(),
                    })
                    .collect();
                Ok(ListQueuesResponse { queues })
            }),
        )
        .method(
            MethodBuilder::new("describe_queue")
                .sync_handler(move |r: DescribeQueueRequest| describe(&s6, me, &r)),
        )
        .method(
            MethodBuilder::new("queue_receive").async_handler(move |r: QueueReceiveRequest| {
                let s = s7.clone();
                async move {
                    lock(&s).count(me, "queue_receive");
                    let deadline = Instant::now() + Duration::from_millis(u64::from(r.wait_ms_max));
                    loop {
                        if let Some(messages) = take(&s, me, &r)? {
                            return Ok(QueueReceiveResponse {
                                messages,
                                led_partitions: Vec::new(),
                            });
                        }
                        if Instant::now() >= deadline {
                            return Ok(QueueReceiveResponse {
                                messages: Vec::new(),
                                led_partitions: Vec::new(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }),
        )
        .method(
            MethodBuilder::new("queue_ack").sync_handler(move |r: QueueAckRequest| {
                settle(&s8, me, "queue_ack", &r.queue, &r.receipts, Settle::Ack)
            }),
        )
        .method(
            MethodBuilder::new("queue_nack").sync_handler(move |r: QueueNackRequest| {
                let delay = r.delay_ms.unwrap_or(0);
                settle(
                    &s9,
                    me,
                    "queue_nack",
                    &r.queue,
                    &r.receipts,
                    Settle::Nack(delay),
                )
            }),
        )
        .method(
            MethodBuilder::new("queue_extend").sync_handler(move |r: QueueExtendRequest| {
                let how = Settle::Extend(r.visibility_timeout_ms);
                settle(&s10, me, "queue_extend", &r.queue, &r.receipts, how)
            }),
        )
        .method(
            MethodBuilder::new("queue_term").sync_handler(move |r: QueueTermRequest| {
                settle(&s11, me, "queue_term", &r.queue, &r.receipts, Settle::Term)
            }),
        )
        .method(
            MethodBuilder::new("purge_queue").sync_handler(move |r: PurgeQueueRequest| {
                let mut c = lock(&s12);
                c.count(me, "purge_queue");
                let p = r.partition.ok_or_else(|| {
                    rpc(ErrorCode::InvalidArgument, "this double wants a partition")
                })?;
                c.check_leader(me, &r.queue, p)?;
                let q = c.queue(&r.queue)?;
                let mut purged = 0;
                for m in q.messages[p as usize].iter_mut() {
                    if m.slot != Slot::Done {
                        m.slot = Slot::Done;
                        purged += 1;
                    }
                }
                Ok(PurgeQueueResponse {
                    purged,
                    partitions: vec![p],
                })
            }),
        )
}

/// Start `n` brokers (ids 1..=n) sharing one state; returns their addresses.
pub async fn start(n: u64, shared: &Shared) -> Vec<String> {
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

pub fn fast_config() -> ClientConfig {
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

/// Two brokers, queue `q` with 4 partitions (led alternately by 1 and 2), and `n`
/// messages `m0..` sent to it.
pub async fn setup(n: usize) -> (Shared, Client) {
    let shared = Shared::default();
    let addrs = start(2, &shared).await;
    let client = Client::connect_with(&addrs[..1], fast_config())
        .await
        .unwrap();
    let created = QueueAdmin::new(client.clone())
        .create("q", QueueOptions::new(4, 1))
        .await
        .unwrap();
    assert_eq!(created.created_dead_letter.as_deref(), Some("q.dlq"));
    let producer = QueueProducer::new(client.clone());
    let mut deliveries = Vec::new();
    for i in 0..n {
        let d = producer
            .submit("q", format!("m{i}"), SendOptions::default())
            .await
            .unwrap();
        deliveries.push(d);
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    (shared, client)
}

pub fn in_flight(shared: &Shared, queue: &str) -> usize {
    let c = lock(shared);
    let now = Instant::now();
    c.queues[queue]
        .messages
        .iter()
        .flatten()
        .filter(|m| matches!(m.slot, Slot::Leased { deadline, .. } if deadline > now))
        .count()
}
