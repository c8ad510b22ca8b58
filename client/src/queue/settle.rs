//! Settling deliveries: ack, nack, extend and term.
//!
//! ```text
//! receipts [r0 (p1), r1 (p0), r2 (p1)] ─▶ by partition {p0: [1], p1: [0, 2]}
//!   ─▶ one request per partition (at most QUEUE_RECEIPTS_MAX receipts each), all at
//!      once, each to its partition's leader (Client::call_partition: NotLeader hint,
//!      refresh, backoff, deadline)
//!   ─▶ outcomes scattered back: [p1's 1st, p0's 1st, p1's 2nd]
//! ```
//!
//! A receipt naming a partition the queue does not have is `Unknown` without asking
//! anyone. [`QueueConsumer`]'s `ack`, `nack`, `extend`, `term` (and their `*_one`
//! forms, with typed errors) are here.

use std::collections::BTreeMap;
use std::time::Duration;

use neo_protocol::api::{
    QUEUE_DELAY_MS_MAX, QUEUE_NAME_LEN_MAX, QUEUE_RECEIPTS_MAX, QUEUE_VISIBILITY_TIMEOUT_MS_MAX,
    QUEUE_VISIBILITY_TIMEOUT_MS_MIN, QueueAckRequest, QueueExtendRequest, QueueNackRequest,
    QueueSettleResponse, QueueTermRequest, Receipt, ReceiptOutcome,
};

use super::consumer::QueueConsumer;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// What to do with delivered messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOp {
    /// Done for good.
    Ack,
    /// Deliver again, no sooner than `delay_ms` from now (`None`: the queue's
    /// redelivery backoff); dead-lettered instead when out of deliveries.
    Nack {
        /// The delay, in milliseconds (at most `QUEUE_DELAY_MS_MAX`).
        delay_ms: Option<u32>,
        /// Why (kept in the dead-letter headers; at most 256 bytes).
        reason: String,
    },
    /// Lease the messages for `visibility_timeout_ms` from now (0: the queue's
    /// visibility timeout).
    Extend {
        /// The new lease length, in milliseconds.
        visibility_timeout_ms: u32,
    },
    /// Dead-letter now.
    Term {
        /// Why (kept in the dead-letter headers; at most 256 bytes).
        reason: String,
    },
}

impl SettleOp {
    /// The wire method.
    pub fn method(&self) -> &'static str {
        match self {
            SettleOp::Ack => "queue_ack",
            SettleOp::Nack { .. } => "queue_nack",
            SettleOp::Extend { .. } => "queue_extend",
            SettleOp::Term { .. } => "queue_term",
        }
    }

    /// `ack`, `nack`, `extend` or `term`.
    pub fn verb(&self) -> &'static str {
        match self {
            SettleOp::Ack => "ack",
            SettleOp::Nack { .. } => "nack",
            SettleOp::Extend { .. } => "extend",
            SettleOp::Term { .. } => "term",
        }
    }

    /// The checks the broker makes too, made before anything is sent.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        match self {
            SettleOp::Ack => Ok(()),
            SettleOp::Nack { delay_ms, reason } => {
                if delay_ms.is_some_and(|d| d > QUEUE_DELAY_MS_MAX) {
                    return bad(format!("nack delay above {QUEUE_DELAY_MS_MAX} ms"));
                }
                check_reason(reason)
            }
            SettleOp::Extend {
                visibility_timeout_ms: v,
            } => {
                if *v != 0
                    && !(QUEUE_VISIBILITY_TIMEOUT_MS_MIN..=QUEUE_VISIBILITY_TIMEOUT_MS_MAX)
                        .contains(v)
                {
                    return bad(format!(
                        "visibility timeout {v} ms: must be 0 (the queue's) or \
                         {QUEUE_VISIBILITY_TIMEOUT_MS_MIN} to {QUEUE_VISIBILITY_TIMEOUT_MS_MAX}"
                    ));
                }
                Ok(())
            }
            SettleOp::Term { reason } => check_reason(reason),
        }
    }
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.len() > QUEUE_NAME_LEN_MAX {
        return Err(Error::InvalidArgument(format!(
            "reason of {} bytes: at most {QUEUE_NAME_LEN_MAX}",
            reason.len()
        )));
    }
    Ok(())
}

/// Where settle requests go and how they are bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettleTarget<'a> {
    pub(crate) client: &'a Client,
    pub(crate) queue: &'a str,
    pub(crate) share_group: Option<&'a str>,
    /// Bound on one request.
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

/// The indexes (into the caller's list) of the receipts of each partition, each list
/// in the caller's order.
pub(crate) fn group_by_partition(receipts: &[Receipt]) -> BTreeMap<u32, Vec<usize>> {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, r) in receipts.iter().enumerate() {
        groups.entry(r.partition).or_default().push(i);
    }
    groups
}

/// The requests to send: (partition, indexes of its receipts), at most
/// `chunk_max` receipts each. Partitions at or above `partition_count` are left out
/// (their receipts are `Unknown`).
pub(crate) fn plan(
    receipts: &[Receipt],
    partition_count: u32,
    chunk_max: usize,
) -> Vec<(u32, Vec<usize>)> {
    group_by_partition(receipts)
        .into_iter()
        .filter(|(p, _)| *p < partition_count)
        .flat_map(|(p, indexes)| {
            indexes
                .chunks(chunk_max.max(1))
                .map(|c| (p, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Settle `receipts`: one outcome per receipt, in order. Fails if a partition's
/// request failed for good (after retries); the other partitions' receipts may have
/// been settled then (settling them again answers `AlreadyDone` or `LeaseLost`).
pub(crate) async fn settle(
    target: SettleTarget<'_>,
    op: &SettleOp,
    receipts: &[Receipt],
) -> Result<Vec<ReceiptOutcome>> {
    if receipts.is_empty() {
        return Ok(Vec::new());
    }
    op.validate()?;
    let count = target.client.partition_count(target.queue).await?;
    let requests = plan(receipts, count, QUEUE_RECEIPTS_MAX);
    let calls = requests.into_iter().map(|(partition, indexes)| async move {
        let chunk: Vec<Receipt> = indexes.iter().map(|&i| receipts[i]).collect();
        let answer = send(target, op, partition, chunk).await;
        (indexes, answer)
    });
    let answers = futures::future::join_all(calls).await;
    let mut outcomes = vec![ReceiptOutcome::Unknown; receipts.len()];
    let mut failed = None;
    for (indexes, answer) in answers {
        match answer {
            Ok(resp) if resp.outcomes.len() == indexes.len() => {
                for (i, outcome) in indexes.into_iter().zip(resp.outcomes) {
                    outcomes[i] = outcome;
                }
            }
            Ok(resp) => {
                failed.get_or_insert(Error::UnexpectedAnswer {
                    method: op.method().to_string(),
                    reason: format!(
                        "{} outcomes for {} receipts",
                        resp.outcomes.len(),
                        indexes.len()
                    ),
                });
            }
            Err(err) => {
                failed.get_or_insert(err);
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(outcomes),
    }
}

/// One request for one partition's receipts, to its leader.
async fn send(
    t: SettleTarget<'_>,
    op: &SettleOp,
    partition: u32,
    receipts: Vec<Receipt>,
) -> Result<QueueSettleResponse> {
    let queue = t.queue.to_string();
    let share_group = t.share_group.map(str::to_string);
    match op {
        SettleOp::Ack => {
            let request = QueueAckRequest {
                queue,
                share_group,
                receipts,
            };
            call(t, op, partition, &request).await
        }
        SettleOp::Nack { delay_ms, reason } => {
            let request = QueueNackRequest {
                queue,
                share_group,
                receipts,
                delay_ms: *delay_ms,
                reason: reason.clone(),
            };
            call(t, op, partition, &request).await
        }
        SettleOp::Extend {
            visibility_timeout_ms,
        } => {
            let request = QueueExtendRequest {
                queue,
                share_group,
                receipts,
                visibility_timeout_ms: *visibility_timeout_ms,
            };
            call(t, op, partition, &request).await
        }
        SettleOp::Term { reason } => {
            let request = QueueTermRequest {
                queue,
                share_group,
                receipts,
                reason: reason.clone(),
            };
            call(t, op, partition, &request).await
        }
    }
}

async fn call<Req: serde::Serialize>(
    t: SettleTarget<'_>,
    op: &SettleOp,
    partition: u32,
    request: &Req,
) -> Result<QueueSettleResponse> {
    t.client
        .call_partition(t.queue, partition, op.method(), request, t.timeout, t.retry)
        .await
}

/// Settling, on a consumer (its queue, share group, timeouts and retry policy).
impl QueueConsumer {
    /// Settle `receipts` as `op` says: one outcome per receipt, in order (see
    /// [`QueueConsumer::ack`]).
    pub async fn settle(&self, op: &SettleOp, receipts: &[Receipt]) -> Result<Vec<ReceiptOutcome>> {
        self.core().settle(op, receipts).await
    }

    /// Acknowledge: the messages are done for good. One outcome per receipt, in
    /// order; receipts are grouped by partition, one request per partition to its
    /// leader. Fails if a partition's request failed for good (the others' receipts
    /// may have been acked then: acking them again answers `AlreadyDone`).
    pub async fn ack(&self, receipts: &[Receipt]) -> Result<Vec<ReceiptOutcome>> {
        self.settle(&SettleOp::Ack, receipts).await
    }

    /// Give the messages back for redelivery, no sooner than `delay_ms` from now
    /// (`None`: the queue's redelivery backoff); a message out of deliveries is
    /// dead-lettered instead, with `reason` in its headers.
    pub async fn nack(
        &self,
        receipts: &[Receipt],
        delay_ms: Option<u32>,
        reason: &str,
    ) -> Result<Vec<ReceiptOutcome>> {
        let op = SettleOp::Nack {
            delay_ms,
            reason: reason.to_string(),
        };
        self.settle(&op, receipts).await
    }

    /// Lease the messages for `visibility_timeout_ms` more from now (0: the queue's
    /// visibility timeout).
    pub async fn extend(
        &self,
        receipts: &[Receipt],
        visibility_timeout_ms: u32,
    ) -> Result<Vec<ReceiptOutcome>> {
        let op = SettleOp::Extend {
            visibility_timeout_ms,
        };
        self.settle(&op, receipts).await
    }

    /// Dead-letter the messages now, with `reason` in their headers.
    pub async fn term(&self, receipts: &[Receipt], reason: &str) -> Result<Vec<ReceiptOutcome>> {
        let op = SettleOp::Term {
            reason: reason.to_string(),
        };
        self.settle(&op, receipts).await
    }

    async fn settle_one(&self, op: &SettleOp, receipt: Receipt) -> Result<()> {
        let outcomes = self.settle(op, &[receipt]).await?;
        let outcome = outcomes.first().copied().unwrap_or(ReceiptOutcome::Unknown);
        outcome_result(receipt, outcome)
    }

    /// Ack one delivery: `Err(LeaseLost | AlreadyDone | UnknownReceipt)` unless done.
    pub async fn ack_one(&self, receipt: Receipt) -> Result<()> {
        self.settle_one(&SettleOp::Ack, receipt).await
    }

    /// Nack one delivery (see [`QueueConsumer::nack`]), with a typed error.
    pub async fn nack_one(
        &self,
        receipt: Receipt,
        delay_ms: Option<u32>,
        reason: &str,
    ) -> Result<()> {
        let op = SettleOp::Nack {
            delay_ms,
            reason: reason.to_string(),
        };
        self.settle_one(&op, receipt).await
    }

    /// Extend one delivery's lease (see [`QueueConsumer::extend`]), with a typed error.
    pub async fn extend_one(&self, receipt: Receipt, visibility_timeout_ms: u32) -> Result<()> {
        let op = SettleOp::Extend {
            visibility_timeout_ms,
        };
        self.settle_one(&op, receipt).await
    }

    /// Term one delivery (see [`QueueConsumer::term`]), with a typed error.
    pub async fn term_one(&self, receipt: Receipt, reason: &str) -> Result<()> {
        let op = SettleOp::Term {
            reason: reason.to_string(),
        };
        self.settle_one(&op, receipt).await
    }
}

/// One receipt's outcome as a result: `Ok` or the typed error.
pub(crate) fn outcome_result(receipt: Receipt, outcome: ReceiptOutcome) -> Result<()> {
    match outcome {
        ReceiptOutcome::Ok => Ok(()),
        ReceiptOutcome::LeaseLost => Err(Error::LeaseLost { receipt }),
        ReceiptOutcome::AlreadyDone => Err(Error::AlreadyDone { receipt }),
        ReceiptOutcome::Unknown => Err(Error::UnknownReceipt { receipt }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(partition: u32, offset: u64) -> Receipt {
        Receipt {
            group: 10 + u64::from(partition),
            partition,
            offset,
            delivery: 1,
            lease: 7,
        }
    }

    #[test]
    fn receipts_group_by_partition_in_caller_order() {
        let receipts = [r(1, 5), r(0, 3), r(1, 2), r(2, 0), r(0, 1)];
        let groups = group_by_partition(&receipts);
        assert_eq!(
            groups.into_iter().collect::<Vec<_>>(),
            vec![(0, vec![1, 4]), (1, vec![0, 2]), (2, vec![3])]
        );
        assert!(group_by_partition(&[]).is_empty());
    }

    #[test]
    fn plan_chunks_and_skips_missing_partitions() {
        let receipts = [r(0, 0), r(0, 1), r(0, 2), r(5, 0), r(1, 0)];
        let requests = plan(&receipts, 2, 2);
        assert_eq!(
            requests,
            vec![(0, vec![0, 1]), (0, vec![2]), (1, vec![4])],
            "partition 5 of a 2-partition queue is not asked"
        );
        // A zero chunk bound cannot loop forever or panic.
        assert_eq!(plan(&receipts[..1], 1, 0), vec![(0, vec![0])]);
    }

    #[test]
    fn outcomes_map_to_typed_errors() {
        let receipt = r(0, 1);
        assert!(outcome_result(receipt, ReceiptOutcome::Ok).is_ok());
        assert!(matches!(
            outcome_result(receipt, ReceiptOutcome::LeaseLost),
            Err(Error::LeaseLost { receipt: x }) if x == receipt
        ));
        assert!(matches!(
            outcome_result(receipt, ReceiptOutcome::AlreadyDone),
            Err(Error::AlreadyDone { .. })
        ));
        assert!(matches!(
            outcome_result(receipt, ReceiptOutcome::Unknown),
            Err(Error::UnknownReceipt { .. })
        ));
    }

    #[test]
    fn ops_are_checked_before_sending() {
        assert!(SettleOp::Ack.validate().is_ok());
        let nack = |delay_ms, reason: &str| SettleOp::Nack {
            delay_ms,
            reason: reason.into(),
        };
        assert!(nack(None, "x").validate().is_ok());
        assert!(nack(Some(QUEUE_DELAY_MS_MAX), "").validate().is_ok());
        assert!(nack(Some(QUEUE_DELAY_MS_MAX + 1), "").validate().is_err());
        assert!(nack(None, &"r".repeat(257)).validate().is_err());
        let extend = |v| SettleOp::Extend {
            visibility_timeout_ms: v,
        };
        assert!(extend(0).validate().is_ok(), "0: the queue's timeout");
        assert!(extend(QUEUE_VISIBILITY_TIMEOUT_MS_MIN).validate().is_ok());
        assert!(
            extend(QUEUE_VISIBILITY_TIMEOUT_MS_MIN - 1)
                .validate()
                .is_err()
        );
        assert!(
            extend(QUEUE_VISIBILITY_TIMEOUT_MS_MAX + 1)
                .validate()
                .is_err()
        );
        let term = SettleOp::Term {
            reason: "é".repeat(200),
        };
        assert!(term.validate().is_err(), "400 bytes");
        assert_eq!(
            [
                SettleOp::Ack.method(),
                nack(None, "").method(),
                extend(0).method(),
                SettleOp::Term { reason: "".into() }.method()
            ],
            ["queue_ack", "queue_nack", "queue_extend", "queue_term"]
        );
    }
}
