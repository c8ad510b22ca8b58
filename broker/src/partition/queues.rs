//! The queue side of a partition's machine: the delivery state of the queue (or of each
//! share group of a topic) on this partition ([`super::deliveries::Deliveries`]), and,
//! for a queue partition, the facts about its records that delivery needs (keys of an
//! ordered queue, delays, batch times), read from each applied batch.
//!
//! Whether a partition is a queue's is fixed when its topic is created (the metadata
//! creates a queue and its topic in one command), so every replica opens the same kind
//! of machine and parses the same batches.

use std::collections::BTreeMap;

use bytes::Bytes;
use neo_protocol::api::HEADER_DELIVER_AFTER_MS;
use qiss::batch::RecordBatch;
use serde::{Deserialize, Serialize};

use super::deliveries::{Deliveries, QueueAnswer, QueueOp, RecordFacts};

/// The queue's own deliveries (share groups have names; a queue has no share groups).
pub const QUEUE_OWN: &str = "";

/// Every delivery state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTables {
    /// Whether the partition is a queue's (its records' facts are kept).
    pub is_queue: bool,
    /// Whether the queue is ordered by key (keys are kept).
    pub ordered: bool,
    /// The partition's log end (next offset), as applied.
    pub end: u64,
    /// The records' facts (queue partitions only).
    pub facts: RecordFacts,
    /// By share group (`""`: the queue's own).
    pub groups: BTreeMap<String, Deliveries>,
}

impl QueueTables {
    /// Tables for a partition of a queue (`Some(ordered)`) or of a plain topic (`None`).
    pub fn new(queue: Option<bool>) -> QueueTables {
        QueueTables {
            is_queue: queue.is_some(),
            ordered: queue.unwrap_or(false),
            ..QueueTables::default()
        }
    }

    /// A committed batch of `count` records at `base` (`raw`: the stored batch).
    pub fn apply_records(&mut self, base: u64, count: u32, raw: &[u8]) {
        self.end = self.end.max(base + u64::from(count));
        if !self.is_queue {
            return;
        }
        // Stored batches passed validation on the leader; one that does not parse here
        // yields no facts (its records are delivered at once, unordered), identically
        // on every replica.
        let Ok(batch) = RecordBatch::new(Bytes::copy_from_slice(raw)) else {
            return;
        };
        if batch.is_control() {
            return;
        }
        self.facts
            .times
            .insert(base, batch.header().first_timestamp);
        for (i, r) in batch.records().enumerate() {
            let offset = base + i as u64;
            if self.ordered
                && let Some(k) = r.key()
            {
                self.facts.keys.insert(offset, fnv1a(k));
            }
            if r.header_count() > 0 {
                let delay = r
                    .headers()
                    .find(|(name, _)| *name == HEADER_DELIVER_AFTER_MS)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
                if let Some(d) = delay {
                    let at = u64::try_from(r.timestamp()).unwrap_or(0).saturating_add(d);
                    self.facts.not_before.insert(offset, at);
                }
            }
        }
    }

    /// Applies a queue command of `group` at `now_ms` in the entry at log `index`.
    pub fn apply(&mut self, group: &str, index: u64, now_ms: u64, op: &QueueOp) -> QueueAnswer {
        let end = self.end;
        let own = group == QUEUE_OWN;
        let d = self.groups.entry(group.to_string()).or_default();
        let facts = if own && self.is_queue {
            Some(&mut self.facts)
        } else {
            None
        };
        d.apply(facts, end, index, now_ms, op)
    }

    /// The facts a group's delivery uses (the queue's own only).
    pub fn facts_for(&self, group: &str) -> Option<&RecordFacts> {
        (group == QUEUE_OWN && self.is_queue).then_some(&self.facts)
    }
}

/// FNV-1a, 64 bits: a key's hash, the same on every replica and release.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use neo_protocol::api::ReceiptOutcome;

    use super::*;
    use crate::partition::deliveries::Limits;

    /// A record: timestamp, key, `neo-deliver-after-ms` header value.
    type Rec<'a> = (i64, Option<&'a [u8]>, Option<&'a str>);

    fn batch_at(base: u64, records: &[Rec<'_>]) -> Vec<u8> {
        let mut b = qiss::batch::BatchBuilder::new();
        for (i, (ts, key, after)) in records.iter().enumerate() {
            let headers: Vec<(&str, &[u8])> = after
                .iter()
                .map(|v| (HEADER_DELIVER_AFTER_MS, v.as_bytes()))
                .collect();
            b.push(*ts, *key, &headers, format!("v{i}").as_bytes())
                .expect("push");
        }
        let mut v = b.build().expect("build").to_vec();
        qiss::batch::set_base_offset(&mut v, base);
        v
    }

    fn receive(t: &mut QueueTables, group: &str, index: u64, now: u64) -> Vec<(u64, u32)> {
        let op = QueueOp::Receive {
            consumer: "c".into(),
            max: 10,
            visibility_ms: 1000,
            limits: Limits {
                max_deliveries: 3,
                max_in_flight: 100,
                max_in_flight_per_consumer: 0,
                ordered_by_key: true,
                backoff_ms: vec![],
            },
            log_start: 0,
        };
        match t.apply(group, index, now, &op) {
            QueueAnswer::Leased { messages, .. } => messages,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_of_an_ordered_queue_give_keys_delays_and_times() {
        let mut t = QueueTables::new(Some(true));
        let raw = batch_at(
            0,
            &[
                (1000, Some(b"k1"), None),
                (1005, None, Some("250")),
                (1010, Some(b"k2"), Some(" 40 ")),
                (1020, Some(b"k1"), Some("soon")),
                (1030, None, Some("-5")),
            ],
        );
        t.apply_records(0, 5, &raw);
        assert_eq!(t.end, 5);
        let keys = [(0, fnv1a(b"k1")), (2, fnv1a(b"k2")), (3, fnv1a(b"k1"))];
        assert_eq!(t.facts.keys, BTreeMap::from(keys));
        assert_eq!(t.facts.not_before, BTreeMap::from([(1, 1255), (2, 1050)]));
        assert_eq!(t.facts.times, BTreeMap::from([(0, 1000)]));
        t.apply_records(5, 1, &batch_at(5, &[(2000, Some(b"k2"), Some("0"))]));
        assert_eq!(t.end, 6);
        assert_eq!(t.facts.times, BTreeMap::from([(0, 1000), (5, 2000)]));
        assert_eq!(t.facts.keys.get(&5), Some(&fnv1a(b"k2")));
        assert_eq!(t.facts.not_before.get(&5), Some(&2000));
        // Applied again (a replay): the end never goes back.
        t.apply_records(0, 5, &raw);
        assert_eq!(t.end, 6);
    }

    #[test]
    fn an_unordered_queue_keeps_delays_but_no_keys() {
        let mut t = QueueTables::new(Some(false));
        let raw = batch_at(3, &[(10, Some(b"k"), Some("5")), (11, Some(b"k"), None)]);
        t.apply_records(3, 2, &raw);
        assert_eq!(t.end, 5);
        assert!(t.facts.keys.is_empty());
        assert_eq!(t.facts.not_before, BTreeMap::from([(3, 15)]));
        assert_eq!(t.facts.times, BTreeMap::from([(3, 10)]));
    }

    #[test]
    fn a_plain_topic_or_an_unparsable_batch_only_moves_the_end() {
        let raw = batch_at(0, &[(10, Some(b"k"), Some("5"))]);
        let mut t = QueueTables::new(None);
        t.apply_records(0, 1, &raw);
        assert_eq!((t.end, &t.facts), (1, &RecordFacts::default()));
        assert_eq!(t.facts_for(QUEUE_OWN), None);
        let mut t = QueueTables::new(Some(true));
        t.apply_records(0, 2, b"not a batch");
        let control = qiss::batch::BatchBuilder::control(b"raft").expect("control");
        t.apply_records(2, 1, &control);
        let mut torn = raw.clone();
        torn.truncate(raw.len() - 1);
        t.apply_records(3, 1, &torn);
        assert_eq!((t.end, &t.facts), (4, &RecordFacts::default()));
    }

    #[test]
    fn only_the_queue_own_deliveries_use_the_facts() {
        let mut t = QueueTables::new(Some(true));
        let raw = batch_at(
            0,
            &[
                (100, Some(b"k"), None),
                (100, Some(b"k"), None),
                (100, None, Some("1000")),
            ],
        );
        t.apply_records(0, 3, &raw);
        assert!(t.facts_for(QUEUE_OWN).is_some());
        assert!(t.facts_for("g").is_none());
        // The queue's own: one per key, and the delayed record waits.
        assert_eq!(receive(&mut t, QUEUE_OWN, 1, 500), vec![(0, 1)]);
        // A share group: no keys, no delays.
        assert_eq!(receive(&mut t, "g", 2, 500), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(receive(&mut t, QUEUE_OWN, 3, 1100), vec![(2, 1)]);
        let ack = QueueOp::Ack {
            leases: vec![crate::partition::deliveries::LeaseRef {
                offset: 0,
                delivery: 1,
                lease: 1,
            }],
        };
        let ok = QueueAnswer::Settled(vec![ReceiptOutcome::Ok]);
        assert_eq!(t.apply(QUEUE_OWN, 4, 1100, &ack), ok);
        // The facts below the queue's floor are forgotten.
        assert_eq!(t.groups[QUEUE_OWN].floor, 1);
        assert_eq!(t.facts.keys.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(receive(&mut t, QUEUE_OWN, 5, 1100), vec![(1, 1)]);
        assert_eq!(t.groups["g"].leased(), 3);
    }

    #[test]
    fn fnv1a_matches_the_reference() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
