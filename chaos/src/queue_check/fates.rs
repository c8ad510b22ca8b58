//! Where each acknowledged message ended: acked, dead-lettered, acked without an
//! answer, or lost ([`account`], also the drain's stop condition); the broker's final
//! counters against the workers' view.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{QueueCheck, QueueTotals, outcome_name, secs};
use crate::history::Outcome;
use crate::history::queue::{
    MessageId, MessageKind, QueueDeliveryRec, QueueHistory, QueueSend, SettleKind, SettleOutcome,
    parse_queue_payload,
};

/// Where the acknowledged sends stand (the drain's stop condition and the lost rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Acknowledged sends.
    pub acknowledged: usize,
    /// Acknowledged sends acked `Ok`.
    pub acked: BTreeSet<MessageId>,
    /// Acknowledged sends in the DLQ (read so far).
    pub dead_lettered: BTreeSet<MessageId>,
    /// Neither, with an ack that failed or answered `AlreadyDone`: when the last such
    /// ack was answered.
    pub maybe_acked: BTreeMap<MessageId, u64>,
    /// Neither, and no such ack.
    pub pending: BTreeSet<MessageId>,
}

impl Accounting {
    /// Whether the drain can stop at `now_us`: nothing pending, and every maybe-acked
    /// message's last ack older than two lease lengths and a second (had it not been
    /// applied, the message would have been received again by then).
    pub fn settled(&self, now_us: u64, visibility_timeout_ms: u32) -> bool {
        let quiet_us = 2 * u64::from(visibility_timeout_ms) * 1000 + 1_000_000;
        self.pending.is_empty()
            && self
                .maybe_acked
                .values()
                .all(|at| at.saturating_add(quiet_us) <= now_us)
    }
}

/// The message at each (partition, offset) delivered, by its first delivery's value.
fn ids_by_place(run: &str, q: &QueueHistory) -> HashMap<(u32, u64), MessageId> {
    let mut ids = HashMap::new();
    for d in &q.deliveries {
        if let Some((id, _)) = parse_queue_payload(run, &d.value) {
            ids.entry((d.partition, d.offset)).or_insert(id);
        }
    }
    ids
}

/// Where every acknowledged send stands.
pub fn account(run: &str, q: &QueueHistory) -> Accounting {
    let ids = ids_by_place(run, q);
    let mut a = Accounting::default();
    for s in &q.settles {
        if s.kind != SettleKind::Ack {
            continue;
        }
        let Some(id) = ids.get(&(s.partition, s.offset)) else {
            continue;
        };
        match s.outcome {
            SettleOutcome::Ok => {
                a.acked.insert(*id);
            }
            SettleOutcome::AlreadyDone | SettleOutcome::Error => {
                let at = a.maybe_acked.entry(*id).or_insert(0);
                *at = (*at).max(s.complete_us);
            }
            SettleOutcome::LeaseLost | SettleOutcome::Unknown => {}
        }
    }
    a.dead_lettered = q
        .dlq_records
        .iter()
        .filter_map(|r| parse_queue_payload(run, &r.value).map(|(id, _)| id))
        .collect();
    let acknowledged: BTreeSet<MessageId> = q
        .sends
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .map(QueueSend::id)
        .collect();
    a.acknowledged = acknowledged.len();
    a.acked.retain(|id| acknowledged.contains(id));
    a.dead_lettered.retain(|id| acknowledged.contains(id));
    a.maybe_acked.retain(|id, _| {
        acknowledged.contains(id) && !a.acked.contains(id) && !a.dead_lettered.contains(id)
    });
    a.pending = acknowledged
        .into_iter()
        .filter(|id| {
            !a.acked.contains(id)
                && !a.dead_lettered.contains(id)
                && !a.maybe_acked.contains_key(id)
        })
        .collect();
    a
}

/// Every acknowledged send acked or dead-lettered.
pub(super) fn lost(
    run: &str,
    q: &QueueHistory,
    sends: &HashMap<MessageId, &QueueSend>,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
    r: &mut QueueCheck,
) {
    let a = account(run, q);
    r.acked = a.acked.len();
    r.acked_unconfirmed = a.maybe_acked.len();
    for (id, at) in &a.maybe_acked {
        r.example(
            "queue_acked_unconfirmed",
            format!(
                "{id}: last ack failed or answered AlreadyDone at {:.3}s, never delivered again",
                secs(*at)
            ),
        );
    }
    for id in &a.pending {
        let s = sends[id];
        r.lost += 1;
        if s.kind == MessageKind::Poison {
            r.poison_missing += 1;
        }
        let delivered: Vec<(u32, u32, f64)> = by_place
            .values()
            .flatten()
            .filter(|d| parse_queue_payload(run, &d.value).is_some_and(|(x, _)| x == *id))
            .map(|d| (d.delivery_count, d.worker, secs(d.at_us)))
            .collect();
        let settled: Vec<String> = q
            .settles
            .iter()
            .filter(|x| {
                by_place.get(&(x.partition, x.offset)).is_some_and(|l| {
                    parse_queue_payload(run, &l[0].value).is_some_and(|(y, _)| y == *id)
                })
            })
            .map(|x| {
                format!(
                    "{:?} of delivery {} {} at {:.3}s",
                    x.kind,
                    x.delivery_count,
                    outcome_name(x.outcome, x.error_kind.as_deref()),
                    secs(x.complete_us)
                )
            })
            .collect();
        r.example(
            "queue_lost",
            format!(
                "{id} ({:?}) acknowledged at {:?}/{:?} ({:.3}s); deliveries (count, worker, s) {delivered:?}; settles {settled:?}",
                s.kind,
                s.partition,
                s.offset,
                secs(s.complete_us.unwrap_or(0))
            ),
        );
    }
}

/// The broker's final counters against the workers' view (see
/// [`QueueCheck::counts_agree`]).
pub(super) fn agreement(q: &QueueHistory, r: &mut QueueCheck) {
    let Some(t) = r.final_counts else {
        return;
    };
    let acks = |outcomes: &[SettleOutcome]| -> BTreeSet<(u32, u64)> {
        q.settles
            .iter()
            .filter(|s| s.kind == SettleKind::Ack && outcomes.contains(&s.outcome))
            .map(|s| (s.partition, s.offset))
            .collect()
    };
    let ok = acks(&[SettleOutcome::Ok]);
    let dead: BTreeSet<(u32, u64)> = q
        .dlq_records
        .iter()
        .filter_map(|d| Some((d.source_partition?, d.source_offset?)))
        .collect();
    let unanswered = acks(&[SettleOutcome::AlreadyDone, SettleOutcome::Error])
        .into_iter()
        .filter(|place| !ok.contains(place) && !dead.contains(place))
        .count();
    let acked = (ok.len() + unanswered) as u64;
    let agree = t.acked == acked && t.dead_lettered == dead.len() as u64;
    r.counts_agree = Some(agree);
    if !agree {
        r.example(
            "queue_counts",
            format!(
                "the broker counts {} acked and {} dead-lettered; the workers saw {} acked Ok + {unanswered} unanswered acks, the DLQ holds {} messages",
                t.acked,
                t.dead_lettered,
                ok.len(),
                dead.len()
            ),
        );
    }
}

/// The final counts added up.
pub(super) fn totals(q: &QueueHistory) -> Option<QueueTotals> {
    if q.final_stats.is_empty() {
        return None;
    }
    let mut t = QueueTotals::default();
    for s in &q.final_stats {
        t.not_done += s.available + s.in_flight + s.delayed;
        t.acked += s.acked;
        t.dead_lettered += s.dead_lettered;
        t.redelivered += s.redelivered;
        if s.ack_floor < s.end_offset {
            t.partitions_not_drained += 1;
        }
    }
    Some(t)
}
