//! Assignments as sets of partitions, converted from and to the wire's per-topic
//! lists, and the difference between what a member owns and what it is assigned.
//! Pure data.

use std::collections::BTreeSet;

use neo_protocol::api::TopicPartitions;

use super::TopicPartition;

/// A set of partitions, ordered by topic then index.
pub(crate) type PartitionSet = BTreeSet<TopicPartition>;

/// The partitions of a wire assignment (duplicates collapse).
pub(crate) fn from_wire(list: &[TopicPartitions]) -> PartitionSet {
    list.iter()
        .flat_map(|tp| {
            tp.partitions
                .iter()
                .map(|p| TopicPartition::new(tp.topic.clone(), *p))
        })
        .collect()
}

/// A set as the wire carries it: one entry per topic, partitions ascending.
pub(crate) fn to_wire(set: &PartitionSet) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for tp in set {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
            _ => out.push(TopicPartitions {
                topic: tp.topic.clone(),
                partitions: vec![tp.partition],
            }),
        }
    }
    out
}

/// What reconciling `owned` with `target` takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Owned but no longer assigned: commit, then give up.
    pub(crate) revoked: Vec<TopicPartition>,
    /// Assigned and not owned yet: fetch the committed offset, then read.
    pub(crate) assigned: Vec<TopicPartition>,
}

/// The difference between what a member owns and its target assignment.
pub(crate) fn diff(owned: &PartitionSet, target: &PartitionSet) -> Diff {
    Diff {
        revoked: owned.difference(target).cloned().collect(),
        assigned: target.difference(owned).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> PartitionSet {
        items
            .iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn wire_round_trip_groups_by_topic() {
        let s = set(&[("b", 2), ("a", 1), ("a", 0), ("b", 0)]);
        let wire = to_wire(&s);
        assert_eq!(
            wire,
            vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![0, 1]
                },
                TopicPartitions {
                    topic: "b".into(),
                    partitions: vec![0, 2]
                },
            ]
        );
        assert_eq!(from_wire(&wire), s);
        assert!(to_wire(&PartitionSet::new()).is_empty());
    }

    #[test]
    fn duplicates_from_the_server_collapse() {
        let wire = vec![
            TopicPartitions {
                topic: "a".into(),
                partitions: vec![3, 3, 1],
            },
            TopicPartitions {
                topic: "a".into(),
                partitions: vec![1],
            },
        ];
        assert_eq!(from_wire(&wire), set(&[("a", 1), ("a", 3)]));
    }

    #[test]
    fn diff_splits_revoked_and_assigned() {
        let owned = set(&[("a", 0), ("a", 1), ("b", 0)]);
        let target = set(&[("a", 1), ("b", 0), ("b", 1)]);
        let d = diff(&owned, &target);
        assert_eq!(d.revoked, vec![TopicPartition::new("a", 0)]);
        assert_eq!(d.assigned, vec![TopicPartition::new("b", 1)]);
        assert_eq!(diff(&owned, &owned), Diff::default());
    }
}
