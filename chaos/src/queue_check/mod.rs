//! The queue rules: pure, from the history alone, called by [`crate::checker::check`]
//! when the run had a queue workload ([`crate::queue_workload`]).
//!
//! A *message* is a (partition, offset) of the queue; its *id* is the value's
//! `{run}:q{producer}:{seq}` (a send stored twice would be two messages of one id).
//!
//! | rule | fails the run |
//! |---|---|
//! | **lost = 0**: every send acknowledged (`acks=all`) ends acked by a worker (an ack answered `Ok`) or in the dead-letter queue; poison must be in the DLQ (`poison_missing`, part of lost) | yes |
//! | **acked then redelivered = 0**: once an ack of a delivery was answered `Ok`, the message is never delivered again: no delivery of it with a higher delivery count, and none from a `receive` called after the ack's answer (workers receive without prefetch, so a delivery's lease was granted during its `receive`) | yes |
//! | **dead-lettered only after max deliveries**: every DLQ record's `neo-dlq-deliveries` is ≥ `max_deliveries` (or its reason is a term's, `term:`; the workers never term) | yes |
//! | **never delivered more than `max_deliveries` times** (delivery count above it) | yes |
//! | **delivery counts grow in real time**: a delivery returned before another delivery's `receive` of the same message was called has a lower count (both leases are committed Raft commands; a lower or equal count later means a committed lease vanished) | yes |
//! | **acked and dead-lettered = 0**: no DLQ record of a message whose ack was answered `Ok` | yes |
//! | **DLQ headers match**: `neo-dlq-source` is the queue, `neo-dlq-partition` / `-offset` a place where that value was delivered or stored, `neo-dlq-deliveries` present | yes |
//! | **unexpected = 0**: every delivered or dead-lettered value is a message of this run that was sent and not refused before sending, and one message always carries one value | yes |
//! | redeliveries (delivery count > 1), deliveries no worker saw (gaps in the counts: a receive whose answer was lost), messages processed twice, crash messages redelivered, redeliveries that came before the previous lease could have run out, ack / nack outcomes by kind, worker errors by kind, DLQ duplicates, non-poison messages dead-lettered (after `max_deliveries`), acks whose answer was lost (below) | no: reported |
//!
//! # Acks whose answer was lost
//!
//! An ack that failed (timeout, no leader) may have been applied, and a client retry
//! of an applied ack answers `AlreadyDone`. Such a message is never delivered again
//! and never gets an `Ok`. It counts as *acked, unconfirmed* (reported, not lost) when
//! it is not in the DLQ and some ack of it ended in an error or `AlreadyDone`: had the
//! ack not been applied, the lease would have run out and a worker would have received
//! it again (the drain waits two lease lengths after the last such ack before it
//! stops). A message with no ack attempt at all (or only `LeaseLost` / `Unknown`
//! answers) that is not in the DLQ is lost.
//!
//! Layout: this file has [`QueueCheck`], the deliveries' rules (values, counts,
//! acked then redelivered) and the settle counts; `fates.rs` where each acknowledged
//! message ended ([`account`], lost, the broker's counters); `dlq.rs` the dead letters.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub use fates::{Accounting, account};

use dlq::dead_letters;
use fates::{agreement, lost, totals};

use crate::history::Outcome;
use crate::history::queue::{
    MessageId, MessageKind, QueueDeliveryRec, QueueHistory, QueueSend, SettleKind, SettleOutcome,
    parse_queue_payload,
};

/// Examples kept per category.
const EXAMPLES_MAX: usize = 10;
/// A DLQ record with fewer deliveries than `max_deliveries` is legitimate only with a
/// reason that starts with this (a term; the workers never term).
pub const TERM_REASON_PREFIX: &str = "term:";
/// Slack between the chaos clock and the leader's (a lease's deadline is the leader's
/// clock at the receive plus the visibility timeout).
const CLOCK_SLACK_US: u64 = 100_000;

/// The queue's counts after the workers stopped, all partitions added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    /// Messages not done (available, leased, delayed).
    pub not_done: u64,
    /// Acked (the broker's counter).
    pub acked: u64,
    /// Dead-lettered (the broker's counter).
    pub dead_lettered: u64,
    /// Redeliveries (the broker's counter).
    pub redelivered: u64,
    /// Partitions whose ack floor is below their log end.
    pub partitions_not_drained: u32,
}

/// What the queue rules found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueCheck {
    /// The queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
    /// Workers.
    pub workers: u32,
    /// The queue's `max_deliveries`.
    pub max_deliveries: u32,
    /// The queue's visibility timeout, milliseconds.
    pub visibility_timeout_ms: u32,
    /// Sends invoked.
    pub sent: usize,
    /// Sends acknowledged (committed).
    pub sent_acknowledged: usize,
    /// Sends refused before sending.
    pub sent_failed: usize,
    /// Sends whose outcome is unknown.
    pub sent_unknown: usize,
    /// Acknowledged poison messages.
    pub poison_acknowledged: usize,
    /// Acknowledged crash messages.
    pub crash_acknowledged: usize,
    /// Deliveries returned to workers.
    pub deliveries: usize,
    /// Distinct messages delivered.
    pub delivered_messages: usize,
    /// Deliveries with a delivery count above 1.
    pub redeliveries: usize,
    /// Deliveries no worker saw (counts skipped: a receive whose answer was lost).
    pub unseen_deliveries: usize,
    /// The highest delivery count seen.
    pub delivery_count_max: u32,
    /// Extra processings: non-poison messages a worker went to ack more than once.
    pub processed_twice: usize,
    /// Crash messages delivered again after the delivery their worker abandoned.
    pub crash_redelivered: usize,
    /// Redeliveries returned before the previous, unsettled lease could have run out
    /// (reported: leases are the leader's clock; one host here).
    pub early_redeliveries: usize,
    /// Ack outcomes per receipt (`Ok`, `LeaseLost`, `AlreadyDone`, `Unknown`,
    /// `error:<kind>`).
    pub acks: BTreeMap<String, usize>,
    /// Nack outcomes per receipt.
    pub nacks: BTreeMap<String, usize>,
    /// Worker and producer errors by `call:kind` (receives, connects).
    pub worker_errors: BTreeMap<String, usize>,
    /// Acknowledged sends acked `Ok`.
    pub acked: usize,
    /// Acknowledged sends whose ack failed or answered `AlreadyDone`, never seen again
    /// and not in the DLQ (see the module doc).
    pub acked_unconfirmed: usize,
    /// Acknowledged sends in the DLQ.
    pub dead_lettered: usize,
    /// Poison among them.
    pub poison_dead_lettered: usize,
    /// Non-poison among them (allowed after `max_deliveries` deliveries).
    pub dead_lettered_other: usize,
    /// Records read from the DLQ.
    pub dlq_records: usize,
    /// Extra DLQ copies of one message (append first, archive second).
    pub dlq_duplicates: usize,
    /// Sends of unknown outcome that were delivered (so stored).
    pub unknown_sends_delivered: usize,
    /// Messages delivered at a place other than their send's acknowledged one.
    pub stored_twice: usize,
    /// Acknowledged sends neither acked nor dead-lettered.
    pub lost: usize,
    /// Poison acknowledged and not in the DLQ (part of `lost`).
    pub poison_missing: usize,
    /// Deliveries after an `Ok` ack of the same message.
    pub acked_then_redelivered: usize,
    /// DLQ records with fewer than `max_deliveries` deliveries (and no term reason).
    pub dead_lettered_early: usize,
    /// Deliveries with a count above `max_deliveries`.
    pub over_delivered: usize,
    /// Deliveries whose count is not above that of a delivery of the same message
    /// returned before their `receive` was called (a committed lease vanished).
    pub count_regressions: usize,
    /// DLQ records of messages whose ack was answered `Ok`.
    pub acked_and_dead_lettered: usize,
    /// DLQ records whose headers do not match the message.
    pub dlq_mismatches: usize,
    /// Deliveries or DLQ records that are not messages of this run, were never sent,
    /// were refused before sending, or disagree on a message's value.
    pub unexpected: usize,
    /// From the start of the drain until everything was accounted for (or the
    /// deadline), milliseconds.
    pub drain_ms: Option<f64>,
    /// Why the DLQ read stopped early, if it did.
    pub dlq_error: Option<String>,
    /// The queue's counts after the workers stopped (`None`: not read).
    pub final_counts: Option<QueueTotals>,
    /// Whether the broker's final counters match what the workers saw: acked = the
    /// messages acked `Ok` plus those whose ack went unanswered (`AlreadyDone`, an
    /// error) and that are not in the DLQ; dead-lettered = the messages in the DLQ
    /// (`None`: counts not read). Reported: it confirms the unconfirmed acks.
    pub counts_agree: Option<bool>,
    /// Up to 10 examples per category.
    pub examples: BTreeMap<String, Vec<String>>,
    /// One line per violated rule; empty = pass.
    pub violations: Vec<String>,
}

impl QueueCheck {
    fn example(&mut self, category: &str, text: String) {
        let list = self.examples.entry(category.to_string()).or_default();
        if list.len() < EXAMPLES_MAX {
            list.push(text);
        }
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// `Ok`, `LeaseLost`, ..., `error:<kind>`.
fn outcome_name(outcome: SettleOutcome, kind: Option<&str>) -> String {
    match outcome {
        SettleOutcome::Error => format!("error:{}", kind.unwrap_or("?")),
        other => format!("{other:?}"),
    }
}
/// Check the queue part of a history (`run`: the run id in every value).
pub fn check_queue(run: &str, q: &QueueHistory) -> QueueCheck {
    let mut r = QueueCheck {
        queue: q.queue.clone(),
        dlq: q.dlq.clone(),
        workers: q.workers,
        max_deliveries: q.max_deliveries,
        visibility_timeout_ms: q.visibility_timeout_ms,
        sent: q.sends.len(),
        deliveries: q.deliveries.len(),
        dlq_records: q.dlq_records.len(),
        drain_ms: q.drain_us.map(|(a, b)| b.saturating_sub(a) as f64 / 1000.0),
        dlq_error: q.dlq_error.clone(),
        final_counts: totals(q),
        ..QueueCheck::default()
    };
    for (_, _, kind) in &q.errors {
        *r.worker_errors.entry(kind.clone()).or_default() += 1;
    }
    let sends: HashMap<MessageId, &QueueSend> = q.sends.iter().map(|s| (s.id(), s)).collect();
    for s in &q.sends {
        match s.outcome {
            Outcome::Ok => {
                r.sent_acknowledged += 1;
                match s.kind {
                    MessageKind::Poison => r.poison_acknowledged += 1,
                    MessageKind::Crash => r.crash_acknowledged += 1,
                    MessageKind::Normal => {}
                }
            }
            Outcome::Fail => r.sent_failed += 1,
            Outcome::Unknown | Outcome::Invoked => r.sent_unknown += 1,
        }
    }
    let mut by_place: BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>> = BTreeMap::new();
    for d in &q.deliveries {
        by_place.entry((d.partition, d.offset)).or_default().push(d);
    }
    r.delivered_messages = by_place.len();
    deliveries(run, q, &sends, &by_place, &mut r);
    settles(run, q, &by_place, &mut r);
    acked_then_redelivered(q, &by_place, &mut r);
    dead_letters(run, q, &sends, &by_place, &mut r);
    lost(run, q, &sends, &by_place, &mut r);
    agreement(q, &mut r);
    r.violations = verdict(&r);
    r
}

fn verdict(r: &QueueCheck) -> Vec<String> {
    let mut v = Vec::new();
    if r.lost > 0 {
        v.push(format!(
            "queue: {} acknowledged messages neither acked nor dead-lettered ({} of them poison)",
            r.lost, r.poison_missing
        ));
    }
    if r.acked_then_redelivered > 0 {
        v.push(format!(
            "queue: {} deliveries of messages whose ack had been answered Ok",
            r.acked_then_redelivered
        ));
    }
    if r.dead_lettered_early > 0 {
        v.push(format!(
            "queue: {} dead letters with fewer than {} deliveries",
            r.dead_lettered_early, r.max_deliveries
        ));
    }
    if r.count_regressions > 0 {
        v.push(format!(
            "queue: {} deliveries with a delivery count not above an earlier one's",
            r.count_regressions
        ));
    }
    if r.over_delivered > 0 {
        v.push(format!(
            "queue: {} deliveries beyond max_deliveries ({})",
            r.over_delivered, r.max_deliveries
        ));
    }
    if r.acked_and_dead_lettered > 0 {
        v.push(format!(
            "queue: {} messages acked Ok and dead-lettered",
            r.acked_and_dead_lettered
        ));
    }
    if r.dlq_mismatches > 0 {
        v.push(format!(
            "queue: {} dead letters whose headers do not match the message",
            r.dlq_mismatches
        ));
    }
    if r.unexpected > 0 {
        v.push(format!(
            "queue: {} deliveries or dead letters that are not messages this run sent",
            r.unexpected
        ));
    }
    v
}

/// What is wrong with a value delivered or dead-lettered, if anything.
fn foreign(run: &str, value: &str, sends: &HashMap<MessageId, &QueueSend>) -> Option<&'static str> {
    match parse_queue_payload(run, value) {
        None => Some("not a queue message of this run"),
        Some((id, kind)) => match sends.get(&id) {
            None => Some("never sent"),
            Some(s) if s.kind != kind => Some("sent with another marker"),
            Some(s) if s.outcome == Outcome::Fail => Some("refused before sending"),
            Some(_) => None,
        },
    }
}

/// Values, delivery counts (over, unseen, early), unknown sends stored, copies.
fn deliveries(
    run: &str,
    q: &QueueHistory,
    sends: &HashMap<MessageId, &QueueSend>,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
    r: &mut QueueCheck,
) {
    let vis_us = u64::from(q.visibility_timeout_ms) * 1000;
    let nacked: BTreeSet<&str> = q
        .settles
        .iter()
        .filter(|s| s.kind == SettleKind::Nack)
        .map(|s| s.receipt.as_str())
        .collect();
    let mut unknown_delivered: BTreeSet<MessageId> = BTreeSet::new();
    for ((p, o), list) in by_place {
        let first = list[0];
        if let Some(other) = list.iter().find(|d| d.value != first.value) {
            r.unexpected += 1;
            r.example(
                "queue_unexpected",
                format!(
                    "{p}/{o} delivered as {:?} and as {:?}",
                    first.value, other.value
                ),
            );
        }
        if let Some(why) = foreign(run, &first.value, sends) {
            r.unexpected += 1;
            r.example(
                "queue_unexpected",
                format!(
                    "{p}/{o}: worker {} received {:?} at {:.3}s: {why}",
                    first.worker,
                    first.value,
                    secs(first.at_us)
                ),
            );
        } else if let Some((id, _)) = parse_queue_payload(run, &first.value) {
            let s = sends[&id];
            match s.outcome {
                Outcome::Ok if (s.partition, s.offset) != (Some(*p), Some(*o)) => {
                    r.stored_twice += 1;
                    r.example(
                        "queue_stored_twice",
                        format!(
                            "{id} acknowledged at {:?}/{:?}, delivered from {p}/{o}",
                            s.partition, s.offset
                        ),
                    );
                }
                Outcome::Unknown | Outcome::Invoked => {
                    unknown_delivered.insert(id);
                }
                _ => {}
            }
        }
        let mut counts: Vec<&QueueDeliveryRec> = list.clone();
        counts.sort_by_key(|d| (d.delivery_count, d.invoke_us));
        let seen: BTreeSet<u32> = counts.iter().map(|d| d.delivery_count).collect();
        let max = seen.iter().next_back().copied().unwrap_or(0);
        r.delivery_count_max = r.delivery_count_max.max(max);
        r.unseen_deliveries += (max as usize).saturating_sub(seen.len());
        for d in &counts {
            if d.delivery_count > 1 {
                r.redeliveries += 1;
            }
            if q.max_deliveries > 0 && d.delivery_count > q.max_deliveries {
                r.over_delivered += 1;
                r.example(
                    "queue_over_delivered",
                    format!(
                        "{p}/{o} {:?} delivered a {}th time (max {}) to worker {} at {:.3}s",
                        d.value,
                        d.delivery_count,
                        q.max_deliveries,
                        d.worker,
                        secs(d.at_us)
                    ),
                );
            }
        }
        // Counts grow in real time: a delivery returned before another's receive was
        // called was leased first (both are committed Raft commands).
        for a in list {
            for b in list {
                if a.at_us < b.invoke_us && b.delivery_count <= a.delivery_count {
                    r.count_regressions += 1;
                    r.example(
                        "queue_count_regressions",
                        format!(
                            "{p}/{o}: delivery {} to worker {} returned at {:.3}s, then delivery {} to worker {} from a receive called at {:.3}s",
                            a.delivery_count,
                            a.worker,
                            secs(a.at_us),
                            b.delivery_count,
                            b.worker,
                            secs(b.invoke_us)
                        ),
                    );
                }
            }
        }
        // A redelivery before the previous lease could have run out, when that
        // delivery was not nacked (a nack makes it available at once).
        for pair in counts.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            if next.delivery_count != prev.delivery_count + 1 {
                continue;
            }
            if !nacked.contains(prev.receipt.as_str())
                && next.at_us + CLOCK_SLACK_US < prev.invoke_us + vis_us
            {
                r.early_redeliveries += 1;
                r.example(
                    "queue_early_redeliveries",
                    format!(
                        "{p}/{o} delivery {} (worker {}, receive from {:.3}s) came back as delivery {} to worker {} by {:.3}s, {:.0} ms before a {} ms lease could end",
                        prev.delivery_count,
                        prev.worker,
                        secs(prev.invoke_us),
                        next.delivery_count,
                        next.worker,
                        secs(next.at_us),
                        (prev.invoke_us + vis_us - next.at_us) as f64 / 1000.0,
                        q.visibility_timeout_ms
                    ),
                );
            }
        }
    }
    r.unknown_sends_delivered = unknown_delivered.len();
}

/// Outcome counts; processed twice; crash messages redelivered.
fn settles(
    run: &str,
    q: &QueueHistory,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
    r: &mut QueueCheck,
) {
    let mut ack_attempts: BTreeMap<(u32, u64), BTreeSet<&str>> = BTreeMap::new();
    for s in &q.settles {
        let name = outcome_name(s.outcome, s.error_kind.as_deref());
        match s.kind {
            SettleKind::Ack => {
                *r.acks.entry(name).or_default() += 1;
                ack_attempts
                    .entry((s.partition, s.offset))
                    .or_default()
                    .insert(s.receipt.as_str());
            }
            SettleKind::Nack => *r.nacks.entry(name).or_default() += 1,
        }
    }
    for ((p, o), receipts) in &ack_attempts {
        if receipts.len() > 1 {
            r.processed_twice += receipts.len() - 1;
            r.example(
                "queue_processed_twice",
                format!(
                    "{p}/{o} processed (ack attempted) in {} deliveries",
                    receipts.len()
                ),
            );
        }
    }
    for list in by_place.values() {
        let crash =
            parse_queue_payload(run, &list[0].value).is_some_and(|(_, k)| k == MessageKind::Crash);
        if crash && list.iter().any(|d| d.delivery_count > 1) {
            r.crash_redelivered += 1;
        }
    }
}

/// No delivery of a message after an ack of it was answered `Ok`.
fn acked_then_redelivered(
    q: &QueueHistory,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
    r: &mut QueueCheck,
) {
    for s in &q.settles {
        if s.kind != SettleKind::Ack || s.outcome != SettleOutcome::Ok {
            continue;
        }
        let Some(list) = by_place.get(&(s.partition, s.offset)) else {
            continue;
        };
        for d in list {
            if d.receipt == s.receipt {
                continue;
            }
            let later = d.delivery_count > s.delivery_count || d.invoke_us > s.complete_us;
            if later {
                r.acked_then_redelivered += 1;
                r.example(
                    "queue_acked_then_redelivered",
                    format!(
                        "{}/{} {:?}: delivery {} acked Ok by worker {} at {:.3}s, then delivery {} to worker {} (receive {:.3}s-{:.3}s)",
                        s.partition,
                        s.offset,
                        d.value,
                        s.delivery_count,
                        s.worker,
                        secs(s.complete_us),
                        d.delivery_count,
                        d.worker,
                        secs(d.invoke_us),
                        secs(d.at_us)
                    ),
                );
            }
        }
    }
}

mod dlq;
mod fates;
#[cfg(test)]
mod tests;
