//! `queue_ack`, `queue_nack`, `queue_extend`, `queue_term`: on the leader of the
//! receipts' partitions. Each receipt is checked against its message's current lease
//! by the partition's machine ([`crate::partition::deliveries`]); the answer (one
//! outcome per receipt, in request order) comes after commit.
//!
//! ```text
//! bounds (receipt count, delay, visibility, reason) ─► resolve + authorize (Consume)
//! ─► receipts by partition; a receipt of another queue (its group id is not the
//!    partition's) or of a partition that does not exist: Unknown, nothing proposed
//! ─► every other partition must be led here (else NotLeader + hint, nothing changed)
//! ─► one command per partition ─► committed ─► outcomes
//! ```

use std::collections::BTreeMap;

use neo_protocol::RpcError;
use neo_protocol::api::{
    QUEUE_DELAY_MS_MAX, QUEUE_RECEIPTS_MAX, QueueAckRequest, QueueExtendRequest, QueueNackRequest,
    QueueSettleResponse, QueueTermRequest, Receipt, ReceiptOutcome,
};
use neo_security::{Operation, SecurityContext};

use super::{Target, check_text, now_ms, resolve, visibility};
use crate::facade::Broker;
use crate::ops::{broker_error, hosted_replica, serving_leader};
use crate::partition::deliveries::{LeaseRef, Limits, QueueAnswer, QueueOp};

/// What a settle does, given the leases of one partition.
enum Settle {
    Ack,
    Nack {
        delay_ms: Option<u32>,
        reason: String,
    },
    Extend {
        visibility_ms: u32,
    },
    Term {
        reason: String,
    },
}

impl Settle {
    fn op(&self, leases: Vec<LeaseRef>, limits: Limits) -> QueueOp {
        match self {
            Settle::Ack => QueueOp::Ack { leases },
            Settle::Nack { delay_ms, reason } => QueueOp::Nack {
                leases,
                delay_ms: *delay_ms,
                reason: reason.clone(),
                limits,
            },
            Settle::Extend { visibility_ms } => QueueOp::Extend {
                leases,
                visibility_ms: *visibility_ms,
            },
            Settle::Term { reason } => QueueOp::Term {
                leases,
                reason: reason.clone(),
            },
        }
    }
}

pub(crate) async fn ack(
    b: &Broker,
    ctx: &SecurityContext,
    req: QueueAckRequest,
) -> Result<QueueSettleResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Consume,
    )?;
    settle(b, &t, &req.receipts, Settle::Ack).await
}

pub(crate) async fn nack(
    b: &Broker,
    ctx: &SecurityContext,
    req: QueueNackRequest,
) -> Result<QueueSettleResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Consume,
    )?;
    check_text("reason", &req.reason, true)?;
    if let Some(d) = req.delay_ms
        && d > QUEUE_DELAY_MS_MAX
    {
        return Err(RpcError::invalid_argument(format!(
            "delay_ms {d} is above {QUEUE_DELAY_MS_MAX}"
        )));
    }
    let s = Settle::Nack {
        delay_ms: req.delay_ms,
        reason: req.reason,
    };
    settle(b, &t, &req.receipts, s).await
}

pub(crate) async fn extend(
    b: &Broker,
    ctx: &SecurityContext,
    req: QueueExtendRequest,
) -> Result<QueueSettleResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Consume,
    )?;
    let visibility_ms = visibility(&t, req.visibility_timeout_ms)?;
    settle(b, &t, &req.receipts, Settle::Extend { visibility_ms }).await
}

pub(crate) async fn term(
    b: &Broker,
    ctx: &SecurityContext,
    req: QueueTermRequest,
) -> Result<QueueSettleResponse, RpcError> {
    let t = resolve(
        b,
        ctx,
        &req.queue,
        req.share_group.as_deref(),
        Operation::Consume,
    )?;
    check_text("reason", &req.reason, true)?;
    settle(b, &t, &req.receipts, Settle::Term { reason: req.reason }).await
}

async fn settle(
    b: &Broker,
    t: &Target,
    receipts: &[Receipt],
    what_to_do: Settle,
) -> Result<QueueSettleResponse, RpcError> {
    if receipts.is_empty() || receipts.len() > QUEUE_RECEIPTS_MAX {
        return Err(RpcError::invalid_argument(format!(
            "between 1 and {QUEUE_RECEIPTS_MAX} receipts per request, got {}",
            receipts.len()
        )));
    }
    let mut outcomes = vec![ReceiptOutcome::Unknown; receipts.len()];
    // Partition → (receipt positions, leases).
    let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<LeaseRef>)> = BTreeMap::new();
    for (i, r) in receipts.iter().enumerate() {
        let Some(info) = t.partitions.get(r.partition as usize) else {
            continue; // Unknown: no such partition.
        };
        if info.group != r.group {
            continue; // Unknown: a receipt of another queue (group ids are never reused).
        }
        let e = by_partition.entry(r.partition).or_default();
        e.0.push(i);
        e.1.push(LeaseRef {
            offset: r.offset,
            delivery: r.delivery,
            lease: r.lease,
        });
    }
    // Every partition must be led here before anything changes.
    let mut replicas = Vec::with_capacity(by_partition.len());
    for p in by_partition.keys() {
        let what = t.what(*p);
        let replica = hosted_replica(b, &t.name, *p, &what)?;
        serving_leader(b, replica.group(), &what)?;
        replicas.push(replica);
    }
    for ((p, (positions, leases)), replica) in by_partition.into_iter().zip(replicas) {
        let what = t.what(p);
        let op = what_to_do.op(leases, t.limits());
        match replica
            .queue_command(&t.group, now_ms(), op)
            .await
            .map_err(|e| broker_error(b, e, &what))?
        {
            QueueAnswer::Settled(got) if got.len() == positions.len() => {
                for (pos, o) in positions.into_iter().zip(got) {
                    outcomes[pos] = o;
                }
            }
            other => {
                return Err(RpcError::internal(format!(
                    "{what}: settle answered {other:?}"
                )));
            }
        }
    }
    Ok(QueueSettleResponse { outcomes })
}
