//! The dead-letter queue's records: values, headers, deliveries, copies, and messages
//! acked `Ok` yet dead-lettered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{QueueCheck, TERM_REASON_PREFIX, foreign};
use crate::history::Outcome;
use crate::history::queue::{
    DlqRecord, MessageId, MessageKind, QueueDeliveryRec, QueueHistory, QueueSend, SettleKind,
    SettleOutcome, parse_queue_payload,
};

/// The DLQ: values, headers, deliveries, copies, acked-and-dead-lettered.
pub(super) fn dead_letters(
    run: &str,
    q: &QueueHistory,
    sends: &HashMap<MessageId, &QueueSend>,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
    r: &mut QueueCheck,
) {
    let acked_ok: BTreeSet<(u32, u64)> = q
        .settles
        .iter()
        .filter(|s| s.kind == SettleKind::Ack && s.outcome == SettleOutcome::Ok)
        .map(|s| (s.partition, s.offset))
        .collect();
    let mut copies: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    let mut ids: BTreeSet<MessageId> = BTreeSet::new();
    for rec in &q.dlq_records {
        let at = format!("{}/{}/{}", q.dlq, rec.partition, rec.offset);
        if let Some(why) = foreign(run, &rec.value, sends) {
            r.unexpected += 1;
            r.example(
                "queue_unexpected",
                format!("dead letter {at} {:?}: {why}", rec.value),
            );
            continue;
        }
        let Some((id, kind)) = parse_queue_payload(run, &rec.value) else {
            continue;
        };
        if let Some(problem) = header_problem(q, rec, id, sends, by_place) {
            r.dlq_mismatches += 1;
            r.example(
                "queue_dlq_mismatch",
                format!("dead letter {at} {id}: {problem}"),
            );
        }
        let term = rec
            .reason
            .as_deref()
            .is_some_and(|why| why.starts_with(TERM_REASON_PREFIX));
        if let Some(n) = rec.deliveries
            && n < q.max_deliveries
            && !term
        {
            r.dead_lettered_early += 1;
            r.example(
                "queue_dead_lettered_early",
                format!(
                    "dead letter {at} {id} after {n} deliveries (max {}), reason {:?}",
                    q.max_deliveries, rec.reason
                ),
            );
        }
        if let (Some(p), Some(o)) = (rec.source_partition, rec.source_offset) {
            *copies.entry((p, o)).or_default() += 1;
            if acked_ok.contains(&(p, o)) {
                r.acked_and_dead_lettered += 1;
                r.example(
                    "queue_acked_and_dead_lettered",
                    format!("{p}/{o} {id} was acked Ok and is dead letter {at}"),
                );
            }
        }
        let acknowledged = sends.get(&id).is_some_and(|s| s.outcome == Outcome::Ok);
        if !ids.insert(id) || !acknowledged {
            continue;
        }
        r.dead_lettered += 1;
        if kind == MessageKind::Poison {
            r.poison_dead_lettered += 1;
        } else {
            r.dead_lettered_other += 1;
            let seen: Vec<u32> = by_place
                .values()
                .flatten()
                .filter(|d| d.value == rec.value)
                .map(|d| d.delivery_count)
                .collect();
            r.example(
                "queue_dead_lettered_other",
                format!(
                    "{id} ({kind:?}) dead-lettered after {:?} deliveries (reason {:?}); deliveries seen {seen:?}",
                    rec.deliveries, rec.reason
                ),
            );
        }
    }
    r.dlq_duplicates = copies.values().map(|n| n - 1).sum();
}

/// What is wrong with a DLQ record's headers, if anything.
fn header_problem(
    q: &QueueHistory,
    rec: &DlqRecord,
    id: MessageId,
    sends: &HashMap<MessageId, &QueueSend>,
    by_place: &BTreeMap<(u32, u64), Vec<&QueueDeliveryRec>>,
) -> Option<String> {
    if rec.source.as_deref() != Some(q.queue.as_str()) {
        return Some(format!("source {:?}, not {:?}", rec.source, q.queue));
    }
    if rec.deliveries.is_none() {
        return Some("no deliveries header".into());
    }
    let (Some(p), Some(o)) = (rec.source_partition, rec.source_offset) else {
        return Some("no source partition or offset header".into());
    };
    let mut known: BTreeSet<(u32, u64)> = by_place
        .iter()
        .filter(|(_, list)| list[0].value == rec.value)
        .map(|(place, _)| *place)
        .collect();
    if let Some(s) = sends.get(&id)
        && let (Some(sp), Some(so)) = (s.partition, s.offset)
    {
        known.insert((sp, so));
    }
    if !known.is_empty() && !known.contains(&(p, o)) {
        return Some(format!("names {p}/{o}; the message is at {known:?}"));
    }
    None
}
