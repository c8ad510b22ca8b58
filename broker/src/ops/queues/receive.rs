//! `queue_receive`: on the partition leaders. Leases up to `messages_max` available
//! messages of the queue (or share group) to the consumer and answers them with their
//! receipts, after the lease is committed.
//!
//! ```text
//! bounds (messages_max, visibility, names) ─► resolve + authorize (Consume)
//! ─► partitions: the one named (its leader, else NotLeader + hint), or every
//!    partition of the queue this node leads (none: NotLeader, no hint)
//! ─► loop until something is leased, wait_ms_max passes, or shutdown:
//!      per partition (at most RECEIVES_IN_FLIGHT_MAX receives in flight; the
//!      machine picks messages at apply time, so concurrent receives never overlap):
//!        would a receive change anything (applied state, leader's clock)? no: skip
//!        (idle polls write nothing) ─► propose Receive ─► committed: leased offsets
//!        ─► read their records from the log (blocking pool) ─► messages
//!      nothing: wait for an applied change or 100 ms (delays and leases expire)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use neo_protocol::RpcError;
use neo_protocol::api::{
    QUEUE_RECEIVE_MESSAGES_MAX, QueueMessage, QueueReceiveRequest, QueueReceiveResponse, Receipt,
};
use neo_raft::Role;
use neo_security::{Operation, SecurityContext};
use qiss::batch::{RecordBatch, split_batches};

use super::{Target, check_text, now_ms, resolve, visibility};
use crate::facade::Broker;
use crate::ops::{broker_error, hosted_replica, no_leader_known, raft_error, serving_leader};
use crate::partition::Partition;
use crate::partition::deliveries::{QueueAnswer, QueueOp};

/// How often a waiting receive looks again when nothing was applied meanwhile (delays
/// and lease deadlines pass without a log entry).
const POLL_TICK: Duration = Duration::from_millis(100);
/// Bytes read from the log per step while collecting leased records.
const READ_BYTES: usize = 1 << 20;

pub(crate) async fn receive(
    b: &Broker,
    ctx: &SecurityContext,
    req: QueueReceiveRequest,
) -> Result<QueueReceiveResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Consume,
    )?;
    check_text("consumer name", &req.consumer, false)?;
    if !(1..=QUEUE_RECEIVE_MESSAGES_MAX).contains(&req.messages_max) {
        return Err(RpcError::invalid_argument(format!(
            "messages_max must be in 1..={QUEUE_RECEIVE_MESSAGES_MAX}, got {}",
            req.messages_max
        )));
    }
    let visibility_ms = visibility(&t, req.visibility_timeout_ms)?;
    let parts = led_partitions(b, &t, req.partition)?;
    let wait = Duration::from_millis(u64::from(req.wait_ms_max.min(b.limits().fetch_wait_ms_max)));
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = b.shutdown.clone();
    let mut applied: Vec<_> = parts
        .iter()
        .map(|(_, p)| p.group().applied_watch())
        .collect();
    let mut messages = Vec::new();
    loop {
        for w in &mut applied {
            w.borrow_and_update();
        }
        for (index, p) in &parts {
            let left = req.messages_max as usize - messages.len();
            if left == 0 {
                break;
            }
            let got =
                receive_one(b, &t, *index, p, &req.consumer, left as u32, visibility_ms).await?;
            messages.extend(got);
        }
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            break;
        }
        let changed = futures_any(&mut applied);
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(POLL_TICK) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
        }
    }
    Ok(QueueReceiveResponse {
        messages,
        led_partitions: parts.iter().map(|(i, _)| *i).collect(),
    })
}

/// Resolves once any of the watches sees a new applied state.
async fn futures_any(watches: &mut [tokio::sync::watch::Receiver<neo_raft::AppliedState>]) {
    if watches.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed()))).await;
}

/// The partitions to receive from: the one named (this node must lead it), or every
/// partition of the queue this node leads.
fn led_partitions(
    b: &Broker,
    t: &Target,
    partition: Option<u32>,
) -> Result<Vec<(u32, Arc<Partition>)>, RpcError> {
    if let Some(p) = partition {
        let what = t.what(p);
        let replica = hosted_replica(b, &t.name, p, &what)?;
        serving_leader(b, replica.group(), &what)?;
        return Ok(vec![(p, replica)]);
    }
    let led: Vec<_> = t
        .partitions
        .iter()
        .enumerate()
        .filter_map(|(i, info)| {
            let p = b.partition(info.group)?;
            let m = p.group().metrics();
            (m.role == Role::Leader && !m.quorum_lost).then_some((i as u32, p))
        })
        .collect();
    if led.is_empty() {
        return Err(no_leader_known(format!(
            "this node leads no partition of {:?}; receive from a partition's leader",
            t.name
        )));
    }
    Ok(led)
}

/// One partition's share of a receive: leases and reads up to `max` messages.
async fn receive_one(
    b: &Broker,
    t: &Target,
    index: u32,
    p: &Arc<Partition>,
    consumer: &str,
    max: u32,
    visibility_ms: u32,
) -> Result<Vec<QueueMessage>, RpcError> {
    let what = t.what(index);
    let limits = t.limits();
    let _slot = p
        .receives
        .acquire()
        .await
        .map_err(|_| RpcError::internal(format!("{what}: receive slots closed")))?;
    let now = now_ms();
    let due = p.with_queues(|q| match q.groups.get(&t.group) {
        Some(d) => d.would_receive(q.facts_for(&t.group), q.end, now, consumer, &limits),
        None => q.end > p.group().log_offsets().0,
    });
    if !due {
        return Ok(Vec::new());
    }
    let (log_start, _) = p.group().log_offsets();
    let op = QueueOp::Receive {
        consumer: consumer.to_string(),
        max,
        visibility_ms,
        limits,
        log_start,
    };
    let answer = p
        .queue_command(&t.group, now, op)
        .await
        .map_err(|e| broker_error(b, e, &what))?;
    let QueueAnswer::Leased { lease, messages } = answer else {
        return Err(RpcError::internal(format!(
            "{what}: receive answered {answer:?}"
        )));
    };
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let group_id = p.group().id();
    let mut records = read_records(p, &messages.iter().map(|(o, _)| *o).collect())
        .await
        .map_err(|e| raft_error(b, e, &what))?;
    Ok(messages
        .into_iter()
        .filter_map(|(offset, delivery)| {
            // A record the log no longer holds (retention) is not answered; its lease
            // expires and the next receive skips past the log start.
            let mut m = records.remove(&offset)?;
            m.receipt = Receipt {
                group: group_id,
                partition: index,
                offset,
                delivery,
                lease,
            };
            m.partition = index;
            m.delivery_count = delivery;
            Some(m)
        })
        .collect())
}

/// Reads the records at `offsets` from the partition's log.
pub(crate) async fn read_records(
    p: &Partition,
    offsets: &BTreeSet<u64>,
) -> neo_raft::Result<std::collections::BTreeMap<u64, QueueMessage>> {
    let mut out = std::collections::BTreeMap::new();
    let mut next = offsets.iter().next().copied();
    while let Some(from) = next {
        let (bytes, _) = p.group().read_log(from, READ_BYTES).await?;
        if bytes.is_empty() {
            break;
        }
        let mut progressed = false;
        for raw in split_batches(bytes) {
            let Ok(raw) = raw else { break };
            let Ok(batch) = RecordBatch::new(raw) else {
                continue;
            };
            for r in batch.records() {
                if offsets.contains(&r.offset()) {
                    out.insert(
                        r.offset(),
                        QueueMessage {
                            receipt: Receipt {
                                group: 0,
                                partition: 0,
                                offset: r.offset(),
                                delivery: 0,
                                lease: 0,
                            },
                            partition: 0,
                            offset: r.offset(),
                            delivery_count: 0,
                            key: r.key().map(<[u8]>::to_vec),
                            value: r.value().to_vec(),
                            headers: r
                                .headers()
                                .map(|(k, v)| (k.to_string(), v.to_vec()))
                                .collect(),
                            timestamp_ms: r.timestamp(),
                        },
                    );
                    progressed = true;
                }
            }
        }
        let after = next;
        next = offsets
            .iter()
            .find(|o| !out.contains_key(o) && Some(**o) > after)
            .copied();
        if !progressed && next.is_none() {
            break;
        }
    }
    Ok(out)
}
