//! Queue admin: `create_queue`, `delete_queue`, `list_queues` (metadata),
//! `describe_queue` and `purge_queue` (partition leaders).
//!
//! `create_queue` creates the dead-letter queue first when it is missing (`Q.dlq` by
//! default: a queue of the same shape, without a dead-letter queue of its own), then the
//! queue: a topic and its settings in one `CreateQueue` metadata command.

use neo_protocol::api::{
    CreateQueueRequest, CreateQueueResponse, DEAD_LETTER_SUFFIX, DeadLetter, DeleteQueueRequest,
    DeleteQueueResponse, DescribeQueueRequest, ListQueuesRequest, ListQueuesResponse,
    PurgeQueueRequest, PurgeQueueResponse, QueueDescription, QueueListing, QueuePartitionStats,
    QueueSettings,
};
use neo_protocol::{ErrorCode, RpcError};
use neo_raft::Role;
use neo_security::{Operation, ResourceType, SecurityContext};

use super::{Target, now_ms, resolve, unknown_queue};
use crate::facade::Broker;
use crate::ops::create_topic::create_placed;
use crate::ops::{broker_error, hosted_replica, serving_leader};
use crate::partition::deliveries::{QueueAnswer, QueueOp, RECEIVE_SCAN_MAX};

pub(crate) async fn create_queue(
    b: &Broker,
    ctx: &SecurityContext,
    req: CreateQueueRequest,
) -> Result<CreateQueueResponse, RpcError> {
    b.authorize(ctx, ResourceType::Queue, &req.name, Operation::Create)?;
    let mut settings = req.settings.clone();
    settings.dead_letter = match &req.dead_letter {
        DeadLetter::Default => Some(format!("{}{DEAD_LETTER_SUFFIX}", req.name)),
        DeadLetter::None => None,
        DeadLetter::Queue(q) => Some(q.clone()),
    };
    crate::meta::queues::check_settings(&req.name, &settings)
        .map_err(RpcError::invalid_argument)?;
    if b.state().topics.contains_key(&req.name) {
        return Err(RpcError::new(
            ErrorCode::TopicAlreadyExists,
            format!("queue {:?} already exists", req.name),
        ));
    }
    let mut created_dead_letter = None;
    if let Some(dlq) = &settings.dead_letter
        && !b.state().topics.contains_key(dlq)
    {
        b.authorize(ctx, ResourceType::Queue, dlq, Operation::Create)?;
        let dlq_settings = QueueSettings {
            dead_letter: None,
            ..QueueSettings::default()
        };
        match create_placed(
            b,
            dlq,
            req.partitions,
            req.replication_factor,
            &req.configs,
            Some(dlq_settings),
        )
        .await
        {
            Ok(()) => created_dead_letter = Some(dlq.clone()),
            // Created meanwhile by someone else: fine, it exists.
            Err(e) if e.error_code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    create_placed(
        b,
        &req.name,
        req.partitions,
        req.replication_factor,
        &req.configs,
        Some(settings.clone()),
    )
    .await?;
    Ok(CreateQueueResponse {
        name: req.name,
        settings,
        created_dead_letter,
    })
}

pub(crate) async fn delete_queue(
    b: &Broker,
    ctx: &SecurityContext,
    req: DeleteQueueRequest,
) -> Result<DeleteQueueResponse, RpcError> {
    b.authorize(ctx, ResourceType::Queue, &req.name, Operation::Delete)?;
    let m = b.meta_group().metrics();
    if m.role != Role::Leader {
        return Err(crate::ops::not_leader(b, m.leader, "the metadata group"));
    }
    let state = crate::meta::linearizable(b.meta_group(), &b.meta_view())
        .await
        .map_err(|e| broker_error(b, e, "the metadata group"))?;
    if !state.queues.contains_key(&req.name) {
        return Err(unknown_queue(&req.name));
    }
    let r = crate::meta::propose(
        b.meta_group(),
        &crate::meta::MetaCommand::DeleteTopic {
            name: req.name.clone(),
        },
    )
    .await
    .map_err(|e| broker_error(b, e, "the metadata group"))?;
    match r {
        crate::meta::MetaResponse::Refused(e) => Err(RpcError::invalid_argument(e.to_string())),
        _ => Ok(DeleteQueueResponse {}),
    }
}

pub(crate) async fn list_queues(
    b: &Broker,
    ctx: &SecurityContext,
    _req: ListQueuesRequest,
) -> Result<ListQueuesResponse, RpcError> {
    let state = b.state();
    let queues = state
        .queues
        .iter()
        .filter(|(name, _)| b.allows(ctx, ResourceType::Queue, name, Operation::Describe))
        .filter_map(|(name, settings)| {
            let t = state.topics.get(name)?;
            Some(QueueListing {
                name: name.clone(),
                partitions: t.partitions.len() as u32,
                replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len() as u32),
                settings: settings.clone(),
            })
        })
        .collect();
    Ok(ListQueuesResponse { queues })
}

pub(crate) async fn describe_queue(
    b: &Broker,
    ctx: &SecurityContext,
    req: DescribeQueueRequest,
) -> Result<QueueDescription, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Describe,
    )?;
    let mut led = Vec::new();
    let mut not_led = Vec::new();
    for (i, info) in t.partitions.iter().enumerate() {
        let i = i as u32;
        let stats = b.partition(info.group).and_then(|p| {
            let m = p.group().metrics();
            (m.role == Role::Leader && !m.quorum_lost).then(|| partition_stats(&t, i, &p))
        });
        match stats {
            Some(s) => led.push(s),
            None => {
                let leader = b
                    .partition(info.group)
                    .and_then(|p| p.group().metrics().leader)
                    .or_else(|| info.replicas.first().copied())
                    .and_then(|n| b.client_addr_of(n));
                not_led.push((i, leader));
            }
        }
    }
    Ok(QueueDescription {
        name: t.name.clone(),
        share_group: req.share_group,
        partitions: t.partitions.len() as u32,
        settings: t.settings.clone(),
        led,
        not_led,
    })
}

/// One led partition's counts now.
pub(crate) fn partition_stats(
    t: &Target,
    partition: u32,
    p: &crate::partition::Partition,
) -> QueuePartitionStats {
    let now = now_ms();
    let (log_start, _) = p.group().log_offsets();
    p.with_queues(|q| {
        let end = q.end;
        match q.groups.get(&t.group) {
            Some(d) => {
                let s = d.stats(q.facts_for(&t.group), end, now, RECEIVE_SCAN_MAX);
                QueuePartitionStats {
                    partition,
                    available: s.available,
                    in_flight: s.in_flight,
                    delayed: s.delayed,
                    dead_lettered: d.counters.dead,
                    acked: d.counters.acked,
                    redelivered: d.counters.redelivered,
                    ack_floor: d.floor.max(log_start),
                    end_offset: end,
                    oldest_age_ms: s.oldest_age_ms,
                }
            }
            None => QueuePartitionStats {
                partition,
                available: end.saturating_sub(log_start),
                ack_floor: log_start,
                end_offset: end,
                ..QueuePartitionStats::default()
            },
        }
    })
}

pub(crate) async fn purge_queue(
    b: &Broker,
    ctx: &SecurityContext,
    req: PurgeQueueRequest,
) -> Result<PurgeQueueResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Delete,
    )?;
    let mut targets = Vec::new();
    match req.partition {
        Some(p) => {
            let what = t.what(p);
            let r = hosted_replica(b, &t.name, p, &what)?;
            serving_leader(b, r.group(), &what)?;
            targets.push((p, r));
        }
        None => {
            for (i, info) in t.partitions.iter().enumerate() {
                if let Some(p) = b.partition(info.group)
                    && p.group().metrics().role == Role::Leader
                {
                    targets.push((i as u32, p));
                }
            }
        }
    }
    let mut purged = 0;
    let mut partitions = Vec::new();
    for (i, p) in targets {
        let what = t.what(i);
        match p
            .queue_command(&t.group, now_ms(), QueueOp::Purge)
            .await
            .map_err(|e| broker_error(b, e, &what))?
        {
            QueueAnswer::Count(n) => purged += n,
            other => {
                return Err(RpcError::internal(format!(
                    "{what}: purge answered {other:?}"
                )));
            }
        }
        partitions.push(i);
    }
    Ok(PurgeQueueResponse { purged, partitions })
}

impl Broker {
    /// The counts of every queue partition this node leads (queues' own deliveries;
    /// share groups are not included): what `/metrics` and `/v1/queues` report.
    pub fn queue_stats_led(&self) -> Vec<(String, QueuePartitionStats)> {
        let state = self.state();
        let mut out = Vec::new();
        for (name, settings) in &state.queues {
            let Some(topic) = state.topics.get(name) else {
                continue;
            };
            let t = Target {
                name: name.clone(),
                group: crate::partition::queues::QUEUE_OWN.to_string(),
                settings: settings.clone(),
                partitions: topic.partitions.clone(),
            };
            for (i, info) in topic.partitions.iter().enumerate() {
                if let Some(p) = self.partition(info.group)
                    && p.group().metrics().role == Role::Leader
                {
                    out.push((name.clone(), partition_stats(&t, i as u32, &p)));
                }
            }
        }
        out
    }
}
