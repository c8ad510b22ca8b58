//! Assignment callbacks: [`RebalanceListener`], and the [`Revocation`] a listener
//! fills with the offsets to commit before partitions are given up.
//!
//! Callbacks run inside [`super::GroupConsumer::poll`] (and `close`), on the caller's
//! task, never concurrently with the application's processing of polled records.

use std::collections::BTreeMap;

use super::TopicPartition;

/// Told when the member's partitions change. Every method has an empty default.
pub trait RebalanceListener: Send {
    /// Partitions newly assigned, each with the offset reading starts at (the
    /// committed offset, or where `auto_offset_reset` put it).
    fn on_assigned(&mut self, assigned: &[(TopicPartition, u64)]) {
        let _ = assigned;
    }

    /// Partitions about to be given up (revoked by the coordinator, or all of them on
    /// `close`). Runs *before* the revocation is reported, so that the offsets set in
    /// `revocation` are committed (and answered by a quorum) before another member
    /// can start reading those partitions. With auto-commit on, `revocation` already
    /// holds the current positions.
    fn on_revoked(&mut self, revocation: &mut Revocation) {
        let _ = revocation;
    }

    /// Partitions lost without a commit: the member was fenced (or lost its session)
    /// and another member may already own them. Records returned but not committed
    /// will be delivered again to their new owner.
    fn on_lost(&mut self, lost: &[TopicPartition]) {
        let _ = lost;
    }
}

/// Partitions being revoked, their positions, and the offsets to commit for them
/// before they are given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    positions: BTreeMap<TopicPartition, Option<u64>>,
    commits: BTreeMap<TopicPartition, u64>,
}

impl Revocation {
    pub(crate) fn new(positions: BTreeMap<TopicPartition, Option<u64>>) -> Revocation {
        Revocation {
            positions,
            commits: BTreeMap::new(),
        }
    }

    /// The partitions being revoked.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// The next offset `poll` would have returned for a revoked partition (`None`:
    /// not resolved yet, or not a revoked partition).
    pub fn position(&self, partition: &TopicPartition) -> Option<u64> {
        self.positions.get(partition).copied().flatten()
    }

    /// Commit `offset` (the next record to consume) for a revoked partition. Offsets
    /// of partitions that are not being revoked are ignored.
    pub fn commit(&mut self, partition: TopicPartition, offset: u64) {
        if self.positions.contains_key(&partition) {
            self.commits.insert(partition, offset);
        }
    }

    /// Commit the current position of every revoked partition (what auto-commit does).
    pub fn commit_positions(&mut self) {
        for (tp, position) in &self.positions {
            if let Some(offset) = position {
                self.commits.insert(tp.clone(), *offset);
            }
        }
    }

    /// Commit nothing for the revoked partitions (undo the auto-commit pre-fill).
    pub fn clear_commits(&mut self) {
        self.commits.clear();
    }

    /// The offsets that will be committed.
    pub fn commits(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.commits
    }

    pub(crate) fn into_commits(self) -> BTreeMap<TopicPartition, u64> {
        self.commits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_commits_only_revoked_partitions() {
        let a0 = TopicPartition::new("a", 0);
        let a1 = TopicPartition::new("a", 1);
        let mut r = Revocation::new(BTreeMap::from([(a0.clone(), Some(7)), (a1.clone(), None)]));
        assert_eq!(r.partitions(), vec![a0.clone(), a1.clone()]);
        assert_eq!(r.position(&a0), Some(7));
        assert_eq!(r.position(&a1), None);
        r.commit_positions();
        assert_eq!(r.commits(), &BTreeMap::from([(a0.clone(), 7)]));
        r.commit(TopicPartition::new("other", 0), 3);
        r.commit(a1.clone(), 2);
        assert_eq!(r.commits().len(), 2);
        r.clear_commits();
        assert!(r.commits().is_empty());
        r.commit(a0.clone(), 5);
        assert_eq!(r.into_commits(), BTreeMap::from([(a0, 5)]));
    }
}
