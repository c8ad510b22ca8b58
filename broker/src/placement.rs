//! Placement: which nodes hold a partition's replicas, and which replica should lead.
//! Pure functions (no I/O): the metadata leader calls them and proposes the outcome.
//!
//! - [`place`] spreads new replica sets evenly: the first node of each set (the
//!   *preferred leader*) is the node with the fewest preferred leaderships so far
//!   (existing ones included), the other replicas go to the nodes with the fewest
//!   replicas. From an even start, replicas and leaders end balanced to within one per
//!   node (the unit tests check this for several cluster shapes).
//! - [`leader_moves`] proposes leader transfers back to preferred leaders (Kafka's
//!   "preferred replica election"): after a node returns, the groups it prefers to lead
//!   are handed back to it, which rebalances leadership.

use std::collections::{BTreeMap, BTreeSet};

use neo_raft::{GroupId, NodeId};

/// Why a placement cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More replicas per partition than nodes.
    #[error("replication factor {replication_factor} exceeds the {nodes} nodes available")]
    NotEnoughNodes {
        /// Requested replicas per partition.
        replication_factor: usize,
        /// Nodes available.
        nodes: usize,
    },
    /// A replication factor of zero.
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Load already on each node: replicas hosted and preferred leaderships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    /// Replicas per node.
    pub replicas: BTreeMap<NodeId, usize>,
    /// Preferred leaderships per node.
    pub leaders: BTreeMap<NodeId, usize>,
}

impl Load {
    /// The load of existing replica sets (first node = preferred leader).
    pub fn of<'a>(sets: impl IntoIterator<Item = &'a [NodeId]>) -> Load {
        let mut load = Load::default();
        for set in sets {
            for (i, n) in set.iter().enumerate() {
                *load.replicas.entry(*n).or_default() += 1;
                if i == 0 {
                    *load.leaders.entry(*n).or_default() += 1;
                }
            }
        }
        load
    }
}

/// Replica sets for `partitions` new partitions with `replication_factor` replicas each,
/// over `nodes`, given the `load` already there. Deterministic: the same inputs give the
/// same sets on every node.
pub fn place(
    nodes: &BTreeSet<NodeId>,
    load: &Load,
    partitions: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if replication_factor > nodes.len() {
        return Err(PlacementError::NotEnoughNodes {
            replication_factor,
            nodes: nodes.len(),
        });
    }
    let mut replicas: BTreeMap<NodeId, usize> = nodes
        .iter()
        .map(|n| (*n, load.replicas.get(n).copied().unwrap_or(0)))
        .collect();
    let mut leaders: BTreeMap<NodeId, usize> = nodes
        .iter()
        .map(|n| (*n, load.leaders.get(n).copied().unwrap_or(0)))
        .collect();
    let order: Vec<NodeId> = nodes.iter().copied().collect();
    let mut out = Vec::with_capacity(partitions);
    for p in 0..partitions {
        // Ties go round-robin from a start that moves with the partition, so equal
        // loads do not always pick the lowest node id.
        let rank = |n: &NodeId| {
            let pos = order.iter().position(|m| m == n).expect("node in order");
            (pos + order.len() - p % order.len()) % order.len()
        };
        // The preferred leader first: fewest leaderships, then fewest replicas.
        let lead = order
            .iter()
            .min_by_key(|n| (leaders[n], replicas[n], rank(n)))
            .copied()
            .expect("at least one node");
        let mut set: Vec<NodeId> = Vec::with_capacity(replication_factor);
        set.push(lead);
        *replicas.get_mut(&lead).expect("known node") += 1;
        *leaders.get_mut(&lead).expect("known node") += 1;
        while set.len() < replication_factor {
            let pick = order
                .iter()
                .filter(|n| !set.contains(n))
                .min_by_key(|n| (replicas[n], rank(n)))
                .copied()
                .expect("enough nodes checked above");
            *replicas.get_mut(&pick).expect("known node") += 1;
            set.push(pick);
        }
        out.push(set);
    }
    Ok(out)
}

/// A group as leader balancing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// The group.
    pub group: GroupId,
    /// Its replica set, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// Its current leader, if any.
    pub leader: Option<NodeId>,
}

/// Leader transfers that hand each group back to its preferred leader, for groups whose
/// preferred leader is `alive` but does not lead. Returns `(group, from, to)`.
pub fn leader_moves(
    groups: &[GroupView],
    alive: &BTreeSet<NodeId>,
) -> Vec<(GroupId, NodeId, NodeId)> {
    groups
        .iter()
        .filter_map(|g| {
            let preferred = *g.replicas.first()?;
            let leader = g.leader?;
            (leader != preferred && alive.contains(&preferred))
                .then_some((g.group, leader, preferred))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u64) -> BTreeSet<NodeId> {
        (1..=n).collect()
    }

    fn spread(sets: &[Vec<NodeId>]) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
        let l = Load::of(sets.iter().map(|s| s.as_slice()));
        (l.replicas, l.leaders)
    }

    #[test]
    fn replicas_and_leaders_spread_within_one() {
        for (n, parts, rf) in [(3, 200, 3), (5, 200, 3), (5, 7, 2), (4, 10, 1)] {
            let sets = place(&nodes(n), &Load::default(), parts, rf).expect("placement");
            assert_eq!(sets.len(), parts);
            for s in &sets {
                let distinct: BTreeSet<_> = s.iter().collect();
                assert_eq!(distinct.len(), rf, "distinct replicas in {s:?}");
            }
            let (replicas, leaders) = spread(&sets);
            let (rmin, rmax) = (
                replicas.values().min().unwrap(),
                replicas.values().max().unwrap(),
            );
            assert!(rmax - rmin <= 1, "replicas {replicas:?} for {n} nodes");
            assert_eq!(replicas.len() as u64, n.min((parts * rf) as u64));
            let lmax = leaders.values().max().unwrap();
            let lmin = if leaders.len() as u64 == n {
                *leaders.values().min().unwrap()
            } else {
                0
            };
            assert!(lmax - lmin <= 1, "leaders {leaders:?} for {n} nodes");
        }
    }

    #[test]
    fn new_partitions_fill_the_least_loaded_nodes() {
        // Node 4 joined an existing 3-node cluster: new replicas go to it first.
        let existing = place(&nodes(3), &Load::default(), 30, 3).expect("placement");
        let load = Load::of(existing.iter().map(|s| s.as_slice()));
        let new = place(&nodes(4), &load, 10, 3).expect("placement");
        assert!(new.iter().all(|s| s.contains(&4)), "{new:?}");
    }

    #[test]
    fn refuses_impossible_placements() {
        assert_eq!(
            place(&nodes(2), &Load::default(), 1, 3),
            Err(PlacementError::NotEnoughNodes {
                replication_factor: 3,
                nodes: 2
            })
        );
        assert_eq!(
            place(&nodes(2), &Load::default(), 1, 0),
            Err(PlacementError::ZeroReplicationFactor)
        );
    }

    #[test]
    fn leader_moves_return_groups_to_live_preferred_leaders() {
        let g = |group, replicas: &[NodeId], leader| GroupView {
            group,
            replicas: replicas.to_vec(),
            leader,
        };
        let groups = [
            g(1, &[1, 2, 3], Some(2)),
            g(2, &[2, 3, 1], Some(2)),
            g(3, &[3, 1, 2], Some(1)),
            g(4, &[1, 3, 2], None),
        ];
        let alive: BTreeSet<NodeId> = [1, 2].into();
        assert_eq!(leader_moves(&groups, &alive), vec![(1, 2, 1)]);
    }
}
