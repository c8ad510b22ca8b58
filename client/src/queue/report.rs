//! [`QueueReport`]: a queue's delivery counts merged from the `describe_queue`
//! answers of its partitions' leaders ([`DescribeMerge`] is the pure merge; the calls
//! are in [`QueueAdmin::describe`](super::QueueAdmin::describe)).

use std::collections::BTreeMap;

use neo_protocol::api::{QueueDescription, QueuePartitionStats, QueueSettings};
use serde::Serialize;

/// One partition in a [`QueueReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// Partition index.
    pub partition: u32,
    /// The leader's client address: the broker that answered for it, else the one
    /// named as leader (`None`: unknown).
    pub leader: Option<String>,
    /// Its delivery counts, as its leader sees them (`None`: no leader answered).
    pub stats: Option<QueuePartitionStats>,
}

/// A queue (or share group) with the delivery counts of every partition, merged from
/// the answers of the partitions' leaders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// Queue (or topic) name.
    pub name: String,
    /// The share group described, if any.
    pub share_group: Option<String>,
    /// Settings (a share group's are the defaults).
    pub settings: QueueSettings,
    /// Every partition, by index.
    pub partitions: Vec<PartitionReport>,
}

/// The counts of a [`QueueReport`]'s partitions added up (the partitions without
/// counts left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueTotals {
    /// Messages that can be received now.
    pub available: u64,
    /// Messages leased to a consumer.
    pub in_flight: u64,
    /// Messages waiting for a delay.
    pub delayed: u64,
    /// Messages dead-lettered so far.
    pub dead_lettered: u64,
    /// Messages acked so far.
    pub acked: u64,
    /// Redeliveries made so far.
    pub redelivered: u64,
    /// Age of the oldest message not yet done, over every partition (0: none).
    pub oldest_age_ms: u64,
}

impl QueueReport {
    /// The counts added up (`oldest_age_ms`: the largest).
    pub fn total(&self) -> QueueTotals {
        let mut t = QueueTotals::default();
        for s in self.partitions.iter().filter_map(|p| p.stats.as_ref()) {
            t.available = t.available.saturating_add(s.available);
            t.in_flight = t.in_flight.saturating_add(s.in_flight);
            t.delayed = t.delayed.saturating_add(s.delayed);
            t.dead_lettered = t.dead_lettered.saturating_add(s.dead_lettered);
            t.acked = t.acked.saturating_add(s.acked);
            t.redelivered = t.redelivered.saturating_add(s.redelivered);
            t.oldest_age_ms = t.oldest_age_ms.max(s.oldest_age_ms);
        }
        t
    }

    /// The partitions no leader answered for.
    pub fn missing(&self) -> Vec<u32> {
        self.partitions
            .iter()
            .filter(|p| p.stats.is_none())
            .map(|p| p.partition)
            .collect()
    }
}

/// `describe_queue` answers gathered so far. Pure data: the I/O is in
/// [`QueueAdmin::describe`].
#[derive(Debug)]
pub(crate) struct DescribeMerge {
    name: String,
    share_group: Option<String>,
    partitions: u32,
    settings: QueueSettings,
    /// Counts of each partition (the first answer wins), with the address that
    /// answered if known.
    stats: BTreeMap<u32, (QueuePartitionStats, Option<String>)>,
    /// The leader last named for each partition not counted by the broker that named it.
    hints: BTreeMap<u32, String>,
}

impl DescribeMerge {
    pub(crate) fn new(first: QueueDescription, from: Option<&str>) -> DescribeMerge {
        let mut merge = DescribeMerge {
            name: first.name.clone(),
            share_group: first.share_group.clone(),
            partitions: 0,
            settings: first.settings.clone(),
            stats: BTreeMap::new(),
            hints: BTreeMap::new(),
        };
        merge.add(first, from);
        merge
    }

    /// Take in one broker's answer (`from`: its address, if known).
    pub(crate) fn add(&mut self, d: QueueDescription, from: Option<&str>) {
        self.partitions = self.partitions.max(d.partitions);
        for s in d.led {
            if s.partition < d.partitions && !self.stats.contains_key(&s.partition) {
                self.hints.remove(&s.partition);
                self.stats
                    .insert(s.partition, (s, from.map(str::to_string)));
            }
        }
        for (p, leader) in d.not_led {
            if let Some(address) = leader
                && !self.stats.contains_key(&p)
            {
                self.hints.insert(p, address);
            }
        }
    }

    /// Partitions without counts yet.
    pub(crate) fn missing(&self) -> Vec<u32> {
        (0..self.partitions)
            .filter(|p| !self.stats.contains_key(p))
            .collect()
    }

    /// Whom to ask next: the missing partitions by address, each at the leader last
    /// named for it, else at `fallback`'s (the metadata's).
    pub(crate) fn targets(
        &self,
        fallback: impl Fn(u32) -> Option<String>,
    ) -> BTreeMap<String, Vec<u32>> {
        let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for p in self.missing() {
            if let Some(address) = self.hints.get(&p).cloned().or_else(|| fallback(p)) {
                out.entry(address).or_default().push(p);
            }
        }
        out
    }

    /// The merged report; `leader_of` names the leader of a partition whose answering
    /// broker and hint are unknown.
    pub(crate) fn report(self, leader_of: impl Fn(u32) -> Option<String>) -> QueueReport {
        let mut stats = self.stats;
        let hints = self.hints;
        let partitions = (0..self.partitions)
            .map(|p| match stats.remove(&p) {
                Some((s, from)) => PartitionReport {
                    partition: p,
                    leader: from.or_else(|| leader_of(p)),
                    stats: Some(s),
                },
                None => PartitionReport {
                    partition: p,
                    leader: hints.get(&p).cloned().or_else(|| leader_of(p)),
                    stats: None,
                },
            })
            .collect();
        QueueReport {
            name: self.name,
            share_group: self.share_group,
            settings: self.settings,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(partition: u32, available: u64, oldest_age_ms: u64) -> QueuePartitionStats {
        QueuePartitionStats {
            partition,
            available,
            in_flight: 1,
            acked: 10,
            oldest_age_ms,
            ..QueuePartitionStats::default()
        }
    }

    fn answer(
        led: Vec<QueuePartitionStats>,
        not_led: Vec<(u32, Option<&str>)>,
    ) -> QueueDescription {
        QueueDescription {
            name: "q".into(),
            share_group: None,
            partitions: 3,
            settings: QueueSettings::default(),
            led,
            not_led: not_led
                .into_iter()
                .map(|(p, a)| (p, a.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn describe_answers_merge_by_partition() {
        // Node A leads 0, names B for 1, knows no leader for 2.
        let mut merge = DescribeMerge::new(
            answer(vec![stats(0, 5, 100)], vec![(1, Some("b:1")), (2, None)]),
            None,
        );
        assert_eq!(merge.missing(), vec![1, 2]);
        let targets = merge.targets(|p| (p == 2).then(|| "c:1".to_string()));
        assert_eq!(
            targets.into_iter().collect::<Vec<_>>(),
            vec![("b:1".into(), vec![1]), ("c:1".into(), vec![2])],
            "the hint for 1, the metadata for 2"
        );
        // B leads 1 (and repeats 0 from a stale view: the first answer wins).
        merge.add(
            answer(
                vec![stats(1, 7, 300), stats(0, 99, 0)],
                vec![(2, Some("c:1"))],
            ),
            Some("b:1"),
        );
        assert_eq!(merge.missing(), vec![2]);
        let report = merge.report(|p| Some(format!("meta:{p}")));
        assert_eq!(report.missing(), vec![2]);
        let leaders: Vec<Option<&str>> = report
            .partitions
            .iter()
            .map(|p| p.leader.as_deref())
            .collect();
        assert_eq!(leaders, vec![Some("meta:0"), Some("b:1"), Some("c:1")]);
        assert_eq!(report.partitions[0].stats.as_ref().unwrap().available, 5);
        let total = report.total();
        assert_eq!(
            (
                total.available,
                total.in_flight,
                total.acked,
                total.oldest_age_ms
            ),
            (12, 2, 20, 300),
            "sums, and the oldest age is the largest"
        );
    }

    #[test]
    fn describe_merge_ignores_partitions_out_of_range() {
        let mut merge = DescribeMerge::new(answer(vec![stats(7, 1, 1)], vec![]), None);
        assert_eq!(merge.missing(), vec![0, 1, 2]);
        assert!(merge.targets(|_| None).is_empty(), "no one to ask");
        merge.add(
            answer(vec![stats(0, 1, 1), stats(1, 1, 1), stats(2, 1, 1)], vec![]),
            None,
        );
        assert!(merge.missing().is_empty());
        let report = merge.report(|_| None);
        assert_eq!(report.partitions.len(), 3);
        assert_eq!(report.total().available, 3);
    }
}
