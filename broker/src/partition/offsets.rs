//! Consumer groups' committed offsets of one partition, kept by the partition's own Raft
//! group next to its data (a commit goes to the leader the consumer fetches from; the
//! metadata group carries no per-commit traffic).
//!
//! Pure rules applied in log order by every replica ([`OffsetTable::apply`]):
//! - Entries are keyed by group name and tagged with the group's *incarnation* (from
//!   the metadata group): a command from a newer incarnation replaces an older entry
//!   (a deleted and re-created group starts empty); one from an older incarnation is
//!   refused.
//! - The **fence** is the last member that took the partition over (`fetch_offsets`
//!   with a member) or committed, with its member epoch. A member's commit or takeover
//!   is accepted when it is the fence's member, or its epoch is above the fence's;
//!   anything else is `Fenced`. Successive owners of a partition have strictly
//!   increasing epochs (see `crate::groups::state`), so once a new owner has fenced,
//!   a late commit from the previous owner can never land.
//! - Admin commits (no member) are checked by the leader against the metadata (the
//!   group must be empty) and leave the fence alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest metadata string stored with a committed offset, in bytes.
pub const OFFSET_METADATA_LEN_MAX: usize = 4096;

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// Offset of the next record the group will consume.
    pub offset: u64,
    /// Free text stored with it.
    pub metadata: String,
    /// When the leader took the commit (ms since the Unix epoch).
    pub time_ms: u64,
}

/// A member and its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// Member id.
    pub member_id: String,
    /// Member epoch.
    pub epoch: u64,
}

/// One group's state on this partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// The group incarnation the entry belongs to.
    pub incarnation: u64,
    /// The committed offset, if any.
    pub committed: Option<CommittedOffset>,
    /// The last owner that fenced or committed.
    pub fence: Option<Fence>,
}

/// A command for a partition's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Commits an offset.
    CommitOffset {
        /// Group name.
        group: String,
        /// Its incarnation.
        incarnation: u64,
        /// The committing member (`None`: an admin commit).
        member: Option<Fence>,
        /// The offset.
        offset: u64,
        /// Metadata stored with it.
        metadata: String,
        /// The leader's clock.
        time_ms: u64,
    },
    /// A member takes the partition over: fences older owners and reads the committed
    /// offset.
    Fence {
        /// Group name.
        group: String,
        /// Its incarnation.
        incarnation: u64,
        /// The member.
        member: Fence,
    },
    /// Forgets groups that no longer exist: each `(name, incarnation)` drops the entry
    /// of that name if its incarnation is at most the one given.
    DropGroups {
        /// The groups.
        groups: Vec<(String, u64)>,
    },
    /// A queue delivery command (see [`super::deliveries`]).
    Queue {
        /// The share group (`""`: the queue's own deliveries).
        group: String,
        /// The leader's clock (ms since the epoch).
        now_ms: u64,
        /// What to do.
        op: super::deliveries::QueueOp,
    },
}

/// The answer to a [`PartitionCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionAnswer {
    /// Committed.
    Committed,
    /// Fenced; the committed offset as of the fence.
    Fenced(Option<CommittedOffset>),
    /// How many entries were dropped.
    Dropped(u32),
    /// Refused; nothing changed.
    Refused(OffsetError),
    /// A queue command's answer.
    Queue(super::deliveries::QueueAnswer),
}

/// Why an offset command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OffsetError {
    /// The member is not (or no longer) the partition's owner.
    #[error(
        "member {member_id:?} (epoch {epoch}) of group {group:?} is fenced: member \
         {owner:?} (epoch {owner_epoch}) owns the partition"
    )]
    Fenced {
        /// Group name.
        group: String,
        /// The refused member.
        member_id: String,
        /// Its epoch.
        epoch: u64,
        /// The fence's member.
        owner: String,
        /// The fence's epoch.
        owner_epoch: u64,
    },
    /// The command names an incarnation older than the one stored: the group was
    /// deleted and re-created.
    #[error("group {group:?} was deleted and re-created")]
    StaleGroup {
        /// Group name.
        group: String,
    },
    /// The command could not be decoded or breaks a limit.
    #[error("invalid offset command: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// Every group's offsets of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetTable {
    /// By group name.
    pub groups: BTreeMap<String, GroupOffsets>,
}

impl OffsetTable {
    /// Applies one committed command.
    pub fn apply(&mut self, cmd: &PartitionCommand) -> PartitionAnswer {
        match self.try_apply(cmd) {
            Ok(a) => a,
            Err(e) => PartitionAnswer::Refused(e),
        }
    }

    fn try_apply(&mut self, cmd: &PartitionCommand) -> Result<PartitionAnswer, OffsetError> {
        match cmd {
            PartitionCommand::CommitOffset {
                group,
                incarnation,
                member,
                offset,
                metadata,
                time_ms,
            } => {
                if metadata.len() > OFFSET_METADATA_LEN_MAX {
                    return Err(OffsetError::Invalid {
                        reason: format!("metadata longer than {OFFSET_METADATA_LEN_MAX} bytes"),
                    });
                }
                let entry = self.entry(group, *incarnation)?;
                if let Some(m) = member {
                    advance_fence(group, entry, m)?;
                }
                entry.committed = Some(CommittedOffset {
                    offset: *offset,
                    metadata: metadata.clone(),
                    time_ms: *time_ms,
                });
                Ok(PartitionAnswer::Committed)
            }
            PartitionCommand::Fence {
                group,
                incarnation,
                member,
            } => {
                let entry = self.entry(group, *incarnation)?;
                advance_fence(group, entry, member)?;
                Ok(PartitionAnswer::Fenced(entry.committed.clone()))
            }
            PartitionCommand::DropGroups { groups } => {
                let mut dropped = 0;
                for (name, incarnation) in groups {
                    if self
                        .groups
                        .get(name)
                        .is_some_and(|g| g.incarnation <= *incarnation)
                    {
                        self.groups.remove(name);
                        dropped += 1;
                    }
                }
                Ok(PartitionAnswer::Dropped(dropped))
            }
            // The partition machine hands queue commands to its queue tables.
            PartitionCommand::Queue { .. } => Err(OffsetError::Invalid {
                reason: "a queue command reached the offset table".into(),
            }),
        }
    }

    /// The entry of `group` at `incarnation` (made, or reset from an older one).
    fn entry(&mut self, group: &str, incarnation: u64) -> Result<&mut GroupOffsets, OffsetError> {
        let fresh = GroupOffsets {
            incarnation,
            committed: None,
            fence: None,
        };
        let e = self
            .groups
            .entry(group.to_string())
            .or_insert(fresh.clone());
        if e.incarnation > incarnation {
            return Err(OffsetError::StaleGroup {
                group: group.to_string(),
            });
        }
        if e.incarnation < incarnation {
            *e = fresh;
        }
        Ok(e)
    }

    /// The committed offset of `group` at `incarnation`, if any.
    pub fn committed(&self, group: &str, incarnation: u64) -> Option<&CommittedOffset> {
        self.groups
            .get(group)
            .filter(|g| g.incarnation == incarnation)
            .and_then(|g| g.committed.as_ref())
    }
}

/// Accepts `m` as the partition's owner (the fence's member, or a member with a higher
/// epoch) and moves the fence to it; the fence's epoch never goes down.
fn advance_fence(group: &str, entry: &mut GroupOffsets, m: &Fence) -> Result<(), OffsetError> {
    let epoch = match &entry.fence {
        Some(f) if f.member_id == m.member_id => f.epoch.max(m.epoch),
        Some(f) if m.epoch <= f.epoch => {
            return Err(OffsetError::Fenced {
                group: group.to_string(),
                member_id: m.member_id.clone(),
                epoch: m.epoch,
                owner: f.member_id.clone(),
                owner_epoch: f.epoch,
            });
        }
        _ => m.epoch,
    };
    entry.fence = Some(Fence {
        member_id: m.member_id.clone(),
        epoch,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fence(m: &str, epoch: u64) -> Fence {
        Fence {
            member_id: m.into(),
            epoch,
        }
    }

    fn commit(member: Option<Fence>, incarnation: u64, offset: u64) -> PartitionCommand {
        PartitionCommand::CommitOffset {
            group: "g".into(),
            incarnation,
            member,
            offset,
            metadata: String::new(),
            time_ms: 1,
        }
    }

    #[test]
    fn a_new_owner_fences_the_previous_one() {
        let mut t = OffsetTable::default();
        assert_eq!(
            t.apply(&commit(Some(fence("a", 3)), 1, 10)),
            PartitionAnswer::Committed
        );
        let took = t.apply(&PartitionCommand::Fence {
            group: "g".into(),
            incarnation: 1,
            member: fence("b", 5),
        });
        assert!(matches!(took, PartitionAnswer::Fenced(Some(c)) if c.offset == 10));
        // a's late commit is refused; b's go through.
        assert!(matches!(
            t.apply(&commit(Some(fence("a", 3)), 1, 20)),
            PartitionAnswer::Refused(OffsetError::Fenced { .. })
        ));
        assert!(matches!(
            t.apply(&commit(Some(fence("a", 5)), 1, 20)),
            PartitionAnswer::Refused(OffsetError::Fenced { .. })
        ));
        assert_eq!(
            t.apply(&commit(Some(fence("b", 5)), 1, 12)),
            PartitionAnswer::Committed
        );
        assert_eq!(t.committed("g", 1).unwrap().offset, 12);
    }

    #[test]
    fn incarnations_reset_and_refuse() {
        let mut t = OffsetTable::default();
        t.apply(&commit(None, 2, 10));
        assert!(matches!(
            t.apply(&commit(None, 1, 5)),
            PartitionAnswer::Refused(OffsetError::StaleGroup { .. })
        ));
        assert_eq!(t.committed("g", 2).unwrap().offset, 10);
        t.apply(&commit(None, 3, 1));
        assert_eq!(t.committed("g", 2), None);
        assert_eq!(t.committed("g", 3).unwrap().offset, 1);
        let dropped = t.apply(&PartitionCommand::DropGroups {
            groups: vec![("g".into(), 2)],
        });
        assert_eq!(
            dropped,
            PartitionAnswer::Dropped(0),
            "a newer incarnation stays"
        );
        let dropped = t.apply(&PartitionCommand::DropGroups {
            groups: vec![("g".into(), 3)],
        });
        assert_eq!(dropped, PartitionAnswer::Dropped(1));
        assert!(t.groups.is_empty());
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let mut t = OffsetTable::default();
        let cmd = PartitionCommand::CommitOffset {
            group: "g".into(),
            incarnation: 1,
            member: None,
            offset: 1,
            metadata: "x".repeat(OFFSET_METADATA_LEN_MAX + 1),
            time_ms: 0,
        };
        assert!(matches!(
            t.apply(&cmd),
            PartitionAnswer::Refused(OffsetError::Invalid { .. })
        ));
        assert!(t.groups.is_empty());
    }

    fn arb_cmd() -> impl Strategy<Value = PartitionCommand> {
        let member = prop::option::of(("[ab]", 0u64..4).prop_map(|(m, e)| fence(&m, e)));
        prop_oneof![
            ("[gh]", 1u64..3, member, 0u64..100).prop_map(|(g, i, m, o)| {
                PartitionCommand::CommitOffset {
                    group: g,
                    incarnation: i,
                    member: m,
                    offset: o,
                    metadata: "m".into(),
                    time_ms: o,
                }
            }),
            ("[gh]", 1u64..3, "[ab]", 0u64..4).prop_map(|(g, i, m, e)| PartitionCommand::Fence {
                group: g,
                incarnation: i,
                member: fence(&m, e),
            }),
            ("[gh]", 1u64..3).prop_map(|(g, i)| PartitionCommand::DropGroups {
                groups: vec![(g, i)]
            }),
        ]
    }

    proptest! {
        /// A snapshot taken at any point and replayed with the rest of the log gives
        /// the same table and the same answers as applying the whole log.
        #[test]
        fn snapshot_plus_replay_equals_replay(cmds in prop::collection::vec(arb_cmd(), 0..60), cut in 0usize..60) {
            let cut = cut.min(cmds.len());
            let mut whole = OffsetTable::default();
            let answers: Vec<_> = cmds.iter().map(|c| whole.apply(c)).collect();
            let mut head = OffsetTable::default();
            for c in &cmds[..cut] { head.apply(c); }
            let image = qiss::to_vec(&head).unwrap();
            let mut restored: OffsetTable = qiss::from_slice(&image).unwrap();
            let tail: Vec<_> = cmds[cut..].iter().map(|c| restored.apply(c)).collect();
            prop_assert_eq!(&restored, &whole);
            prop_assert_eq!(&tail[..], &answers[cut..]);
        }

        /// The fence's epoch never goes down within an incarnation.
        #[test]
        fn the_fence_epoch_never_goes_back(cmds in prop::collection::vec(arb_cmd(), 0..60)) {
            let mut t = OffsetTable::default();
            let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
            for c in &cmds {
                if let PartitionCommand::DropGroups { groups } = c {
                    // A dropped entry starts over (only deleted groups are dropped).
                    last.retain(|(g, _), _| groups.iter().all(|(d, _)| d != g));
                }
                t.apply(c);
                for (g, e) in &t.groups {
                    if let Some(f) = &e.fence {
                        let key = (g.clone(), e.incarnation);
                        let prev = last.get(&key).copied().unwrap_or(0);
                        prop_assert!(f.epoch >= prev, "{g}: fence epoch went back");
                        last.insert(key, f.epoch.max(prev));
                    }
                }
            }
        }
    }
}
