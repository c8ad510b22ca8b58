//! Consumer-group membership as the metadata group replicates it: members, their
//! subscriptions, epochs, the target assignment and what each member may own now.
//!
//! Pure rules, applied by every metadata replica in log order ([`GroupCommand`]). The
//! coordinator (the metadata leader) proposes the commands; heartbeats that change
//! nothing are not written (they are the coordinator's soft state).
//!
//! # Invariants
//! - A partition is in at most one member's `assigned` set (never two owners).
//! - A member gains a partition only when no other member has it in `assigned`: a
//!   partition moves after its previous owner reported it gone (revoke before assign),
//!   left, or was evicted.
//! - Every gain gives the member a fresh `epoch` from the group's counter, so the
//!   successive owners of a partition have strictly increasing epochs (the partition's
//!   offset fence relies on it).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::assignor::{self, Tp};

/// Most members one group may have.
pub const GROUP_MEMBERS_MAX: usize = 1_000;
/// Longest group name, member id, instance id, client id or host, in bytes.
pub const GROUP_NAME_LEN_MAX: usize = 249;
/// Most topics one member may subscribe to.
pub const GROUP_TOPICS_MAX: usize = 1_000;
/// Shortest session timeout a member may ask for, in milliseconds.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 1_000;
/// Longest session timeout a member may ask for, in milliseconds.
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;

/// A change to a consumer group, proposed by its coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// A member joins (creating the group if needed). With an `instance_id` held by a
    /// current member, the new member takes that member's place and assignment.
    Join {
        /// Group name.
        group: String,
        /// The new member's id (made by the coordinator).
        member_id: String,
        /// Static membership id.
        instance_id: Option<String>,
        /// The client's name for itself.
        client_id: String,
        /// The member's address.
        host: String,
        /// Subscribed topics.
        topics: BTreeSet<String>,
        /// Session timeout in milliseconds.
        session_timeout_ms: u32,
        /// The coordinator's clock, in milliseconds since the Unix epoch.
        now_ms: u64,
    },
    /// A member reports what it still owns: revoked partitions it no longer owns are
    /// freed (and handed to their targets).
    Reconcile {
        /// Group name.
        group: String,
        /// Member id.
        member_id: String,
        /// What the member still owns.
        owned: BTreeSet<Tp>,
    },
    /// A member changes its subscription.
    Subscribe {
        /// Group name.
        group: String,
        /// Member id.
        member_id: String,
        /// The new subscription.
        topics: BTreeSet<String>,
    },
    /// A member leaves or is evicted; its partitions are freed.
    Remove {
        /// Group name.
        group: String,
        /// Member id.
        member_id: String,
        /// The coordinator's clock, in milliseconds since the Unix epoch.
        now_ms: u64,
    },
    /// Deletes an empty group (its committed offsets go with it).
    Delete {
        /// Group name.
        group: String,
    },
}

impl GroupCommand {
    /// The group the command is about.
    pub fn group(&self) -> &str {
        match self {
            GroupCommand::Join { group, .. }
            | GroupCommand::Reconcile { group, .. }
            | GroupCommand::Subscribe { group, .. }
            | GroupCommand::Remove { group, .. }
            | GroupCommand::Delete { group } => group,
        }
    }
}

/// Why a [`GroupCommand`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GroupError {
    /// No such group.
    #[error("unknown group {group:?}")]
    UnknownGroup {
        /// Group name.
        group: String,
    },
    /// The group has no such member (it left or its session timed out).
    #[error("group {group:?} has no member {member_id:?} (left or timed out): join again")]
    UnknownMember {
        /// Group name.
        group: String,
        /// Member id.
        member_id: String,
    },
    /// The group still has members.
    #[error("group {group:?} has {members} members")]
    NotEmpty {
        /// Group name.
        group: String,
        /// How many.
        members: usize,
    },
    /// The group is at [`GROUP_MEMBERS_MAX`].
    #[error("group {group:?} is full ({max} members)")]
    Full {
        /// Group name.
        group: String,
        /// The limit.
        max: usize,
    },
    /// An argument breaks a documented limit.
    #[error("invalid group request: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Static membership id.
    pub instance_id: Option<String>,
    /// The client's name for itself.
    pub client_id: String,
    /// The member's address as the coordinator saw it.
    pub host: String,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Session timeout in milliseconds.
    pub session_timeout_ms: u32,
    /// The member's epoch (a fresh group epoch at every gain of partitions).
    pub epoch: u64,
    /// The epoch before the last bump (a heartbeat that missed the bump's answer may
    /// still carry it).
    pub previous_epoch: u64,
    /// What the member may own now.
    pub assigned: BTreeSet<Tp>,
    /// What the assignor wants it to own.
    pub target: BTreeSet<Tp>,
}

impl Member {
    /// Whether `epoch` is one the member may present (its current or previous one).
    pub fn accepts_epoch(&self, epoch: u64) -> bool {
        epoch == self.epoch || epoch == self.previous_epoch
    }

    /// Partitions the member is to get once their owners give them up.
    pub fn pending(&self) -> BTreeSet<Tp> {
        self.target.difference(&self.assigned).cloned().collect()
    }

    /// What the member should own now: its assigned partitions that stay in its target
    /// (the others are being revoked).
    pub fn assignment(&self) -> BTreeSet<Tp> {
        self.assigned.intersection(&self.target).cloned().collect()
    }
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Unique id of this incarnation of the name (a deleted and re-created group never
    /// sees its predecessor's offsets).
    pub incarnation: u64,
    /// The group epoch: bumped by every membership change and every member's gain.
    pub epoch: u64,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// When the group last became empty (ms since the Unix epoch); `None` while it has
    /// members.
    pub empty_since_ms: Option<u64>,
    /// Every existing topic a member of this incarnation subscribed to (where its
    /// committed offsets may be).
    pub topics: BTreeSet<String>,
}

/// `empty`, `reconciling` or `stable`.
pub fn state_name(g: &GroupState) -> &'static str {
    if g.members.is_empty() {
        "empty"
    } else if g.members.values().all(|m| m.assigned == m.target) {
        "stable"
    } else {
        "reconciling"
    }
}

fn invalid(reason: impl Into<String>) -> GroupError {
    GroupError::Invalid {
        reason: reason.into(),
    }
}

/// Checks a name-like argument against [`GROUP_NAME_LEN_MAX`].
pub fn check_name(what: &str, s: &str, may_be_empty: bool) -> Result<(), GroupError> {
    if (!may_be_empty && s.is_empty()) || s.len() > GROUP_NAME_LEN_MAX {
        return Err(invalid(format!(
            "{what} must be 1..={GROUP_NAME_LEN_MAX} bytes, got {}",
            s.len()
        )));
    }
    Ok(())
}

/// Checks a subscription against the limits.
pub fn check_topics(topics: &BTreeSet<String>) -> Result<(), GroupError> {
    if topics.is_empty() || topics.len() > GROUP_TOPICS_MAX {
        return Err(invalid(format!(
            "a member subscribes to 1..={GROUP_TOPICS_MAX} topics, got {}",
            topics.len()
        )));
    }
    topics
        .iter()
        .try_for_each(|t| check_name("topic name", t, false))
}

/// All groups, and the counter that makes incarnations unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Groups {
    /// Groups by name.
    pub groups: BTreeMap<String, GroupState>,
    /// The next incarnation to hand out (never reused).
    pub next_incarnation: u64,
}

impl Groups {
    /// Applies `cmd`; `partitions` is every existing topic's partition count.
    pub fn apply(
        &mut self,
        cmd: &GroupCommand,
        partitions: &BTreeMap<String, u32>,
    ) -> Result<(), GroupError> {
        match cmd {
            GroupCommand::Join {
                group,
                member_id,
                instance_id,
                client_id,
                host,
                topics,
                session_timeout_ms,
                now_ms: _,
            } => {
                check_name("group name", group, false)?;
                check_name("member id", member_id, false)?;
                check_name("client id", client_id, true)?;
                check_name("host", host, true)?;
                if let Some(i) = instance_id {
                    check_name("instance id", i, false)?;
                }
                check_topics(topics)?;
                if !(SESSION_TIMEOUT_MS_MIN..=SESSION_TIMEOUT_MS_MAX).contains(session_timeout_ms) {
                    return Err(invalid(format!(
                        "session timeout must be {SESSION_TIMEOUT_MS_MIN}..={SESSION_TIMEOUT_MS_MAX} ms"
                    )));
                }
                if let Some(g) = self.groups.get(group) {
                    if g.members.contains_key(member_id) {
                        return Err(invalid(format!("member id {member_id:?} is taken")));
                    }
                    let rejoin = instance_id.is_some()
                        && g.members.values().any(|m| m.instance_id == *instance_id);
                    if !rejoin && g.members.len() >= GROUP_MEMBERS_MAX {
                        return Err(GroupError::Full {
                            group: group.clone(),
                            max: GROUP_MEMBERS_MAX,
                        });
                    }
                } else {
                    let incarnation = self.next_incarnation.max(1);
                    self.next_incarnation = incarnation + 1;
                    self.groups.insert(
                        group.clone(),
                        GroupState {
                            incarnation,
                            epoch: 0,
                            members: BTreeMap::new(),
                            empty_since_ms: None,
                            topics: BTreeSet::new(),
                        },
                    );
                }
                let g = self.groups.get_mut(group).expect("inserted above");
                let static_prev = instance_id.as_ref().and_then(|i| {
                    g.members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(i))
                        .map(|(id, _)| id.clone())
                });
                g.epoch += 1;
                let mut member = Member {
                    instance_id: instance_id.clone(),
                    client_id: client_id.clone(),
                    host: host.clone(),
                    topics: topics.clone(),
                    session_timeout_ms: *session_timeout_ms,
                    epoch: g.epoch,
                    previous_epoch: 0,
                    assigned: BTreeSet::new(),
                    target: BTreeSet::new(),
                };
                let subscription_changed = match static_prev {
                    // The same instance again: it takes its predecessor's place and
                    // partitions under a fresh epoch (which fences the predecessor).
                    Some(prev) => {
                        let old = g.members.remove(&prev).expect("found above");
                        let changed = old.topics != member.topics;
                        member.assigned = old.assigned;
                        member.target = old.target;
                        changed
                    }
                    None => true,
                };
                g.topics.extend(
                    member
                        .topics
                        .iter()
                        .filter(|t| partitions.contains_key(*t))
                        .cloned(),
                );
                g.members.insert(member_id.clone(), member);
                g.empty_since_ms = None;
                if subscription_changed {
                    retarget(g, partitions);
                }
                settle(g);
                Ok(())
            }
            GroupCommand::Reconcile {
                group,
                member_id,
                owned,
            } => {
                let g = self.group_mut(group)?;
                let m = member_mut(g, group, member_id)?;
                // Revoked partitions the member no longer owns are freed.
                let target = m.target.clone();
                m.assigned
                    .retain(|tp| target.contains(tp) || owned.contains(tp));
                settle(g);
                Ok(())
            }
            GroupCommand::Subscribe {
                group,
                member_id,
                topics,
            } => {
                check_topics(topics)?;
                let g = self.group_mut(group)?;
                let m = member_mut(g, group, member_id)?;
                if m.topics != *topics {
                    m.topics = topics.clone();
                    g.topics.extend(
                        topics
                            .iter()
                            .filter(|t| partitions.contains_key(*t))
                            .cloned(),
                    );
                    g.epoch += 1;
                    retarget(g, partitions);
                    settle(g);
                }
                Ok(())
            }
            GroupCommand::Remove {
                group,
                member_id,
                now_ms,
            } => {
                let g = self.group_mut(group)?;
                if g.members.remove(member_id).is_none() {
                    return Err(GroupError::UnknownMember {
                        group: group.clone(),
                        member_id: member_id.clone(),
                    });
                }
                g.epoch += 1;
                if g.members.is_empty() {
                    g.empty_since_ms = Some(*now_ms);
                }
                retarget(g, partitions);
                settle(g);
                Ok(())
            }
            GroupCommand::Delete { group } => {
                let g = self.group_mut(group)?;
                if !g.members.is_empty() {
                    return Err(GroupError::NotEmpty {
                        group: group.clone(),
                        members: g.members.len(),
                    });
                }
                self.groups.remove(group);
                Ok(())
            }
        }
    }

    /// Recomputes the targets of every group subscribed to `topic` (created, deleted or
    /// resized); `partitions` is every existing topic's partition count.
    pub fn topic_changed(&mut self, topic: &str, partitions: &BTreeMap<String, u32>) {
        let n = partitions.get(topic).copied().unwrap_or(0);
        for g in self.groups.values_mut() {
            if n == 0 {
                g.topics.remove(topic);
            }
            if !g.members.values().any(|m| m.topics.contains(topic)) {
                continue;
            }
            for m in g.members.values_mut() {
                // Partitions that no longer exist are nobody's.
                m.assigned.retain(|(t, p)| t != topic || *p < n);
            }
            g.epoch += 1;
            retarget(g, partitions);
            settle(g);
        }
    }

    fn group_mut(&mut self, group: &str) -> Result<&mut GroupState, GroupError> {
        self.groups
            .get_mut(group)
            .ok_or_else(|| GroupError::UnknownGroup {
                group: group.to_string(),
            })
    }
}

fn member_mut<'a>(
    g: &'a mut GroupState,
    group: &str,
    member_id: &str,
) -> Result<&'a mut Member, GroupError> {
    g.members
        .get_mut(member_id)
        .ok_or_else(|| GroupError::UnknownMember {
            group: group.to_string(),
            member_id: member_id.to_string(),
        })
}

/// Recomputes every member's target (sticky to the current targets).
fn retarget(g: &mut GroupState, partitions: &BTreeMap<String, u32>) {
    let subscriptions = g
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.topics.clone()))
        .collect();
    let current = g
        .members
        .iter()
        .map(|(id, m)| (id.clone(), m.target.clone()))
        .collect();
    let mut targets = assignor::assign(&subscriptions, partitions, &current);
    for (id, m) in g.members.iter_mut() {
        m.target = targets.remove(id).unwrap_or_default();
    }
}

/// Hands every free partition to the member whose target holds it (a fresh epoch for
/// every member that gains).
fn settle(g: &mut GroupState) {
    let owned: BTreeSet<Tp> = g
        .members
        .values()
        .flat_map(|m| m.assigned.iter().cloned())
        .collect();
    let mut epoch = g.epoch;
    for m in g.members.values_mut() {
        let gains: Vec<Tp> = m
            .target
            .iter()
            .filter(|tp| !m.assigned.contains(*tp) && !owned.contains(*tp))
            .cloned()
            .collect();
        if gains.is_empty() {
            continue;
        }
        m.assigned.extend(gains);
        epoch += 1;
        m.previous_epoch = m.epoch;
        m.epoch = epoch;
    }
    g.epoch = epoch;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(ts: &[&str]) -> BTreeSet<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    fn join(g: &str, m: &str, instance: Option<&str>) -> GroupCommand {
        GroupCommand::Join {
            group: g.into(),
            member_id: m.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            host: "h".into(),
            topics: topics(&["t"]),
            session_timeout_ms: 10_000,
            now_ms: 1,
        }
    }

    fn counts() -> BTreeMap<String, u32> {
        [("t".to_string(), 12)].into()
    }

    fn owners(g: &GroupState) -> BTreeMap<Tp, String> {
        let mut out = BTreeMap::new();
        for (id, m) in &g.members {
            for tp in &m.assigned {
                assert!(out.insert(tp.clone(), id.clone()).is_none(), "two owners");
            }
        }
        out
    }

    #[test]
    fn revoke_before_assign_and_epochs_grow_with_every_owner() {
        let mut s = Groups::default();
        let c = counts();
        s.apply(&join("g", "a", None), &c).unwrap();
        let g = &s.groups["g"];
        assert_eq!(
            g.members["a"].assigned.len(),
            12,
            "a lone member gets everything"
        );
        let a_epoch = g.members["a"].epoch;

        s.apply(&join("g", "b", None), &c).unwrap();
        let g = &s.groups["g"];
        assert_eq!(g.members["b"].target.len(), 6);
        assert!(g.members["b"].assigned.is_empty(), "a still owns them");
        assert_eq!(
            g.members["a"].assignment().len(),
            6,
            "a is told to revoke 6"
        );
        assert_eq!(state_name(g), "reconciling");
        owners(g);

        // a reports it gave up the six: b gets them with a newer epoch.
        let owned = g.members["a"].assignment();
        s.apply(
            &GroupCommand::Reconcile {
                group: "g".into(),
                member_id: "a".into(),
                owned,
            },
            &c,
        )
        .unwrap();
        let g = &s.groups["g"];
        assert_eq!(g.members["b"].assigned.len(), 6);
        assert!(g.members["b"].epoch > a_epoch);
        assert_eq!(state_name(g), "stable");
        owners(g);
    }

    #[test]
    fn a_leaver_frees_its_partitions_in_the_same_command() {
        let mut s = Groups::default();
        let c = counts();
        for m in ["a", "b", "c"] {
            s.apply(&join("g", m, None), &c).unwrap();
            let owned: BTreeMap<String, BTreeSet<Tp>> = s.groups["g"]
                .members
                .iter()
                .map(|(id, m)| (id.clone(), m.assignment()))
                .collect();
            for (id, owned) in owned {
                s.apply(
                    &GroupCommand::Reconcile {
                        group: "g".into(),
                        member_id: id,
                        owned,
                    },
                    &c,
                )
                .unwrap();
            }
        }
        assert_eq!(state_name(&s.groups["g"]), "stable");
        s.apply(
            &GroupCommand::Remove {
                group: "g".into(),
                member_id: "b".into(),
                now_ms: 5,
            },
            &c,
        )
        .unwrap();
        let g = &s.groups["g"];
        assert_eq!(state_name(g), "stable");
        assert_eq!(owners(g).len(), 12);
    }

    #[test]
    fn a_static_member_takes_its_place_back_without_moving_others() {
        let mut s = Groups::default();
        let c = counts();
        s.apply(&join("g", "a1", Some("i-a")), &c).unwrap();
        s.apply(&join("g", "b", None), &c).unwrap();
        let owned = s.groups["g"].members["a1"].assignment();
        s.apply(
            &GroupCommand::Reconcile {
                group: "g".into(),
                member_id: "a1".into(),
                owned,
            },
            &c,
        )
        .unwrap();
        let before = s.groups["g"].clone();
        s.apply(&join("g", "a2", Some("i-a")), &c).unwrap();
        let g = &s.groups["g"];
        assert!(!g.members.contains_key("a1"));
        assert_eq!(g.members["a2"].assigned, before.members["a1"].assigned);
        assert_eq!(g.members["b"], before.members["b"], "b untouched");
        assert!(g.members["a2"].epoch > before.members["a1"].epoch);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut s = Groups::default();
        let c = counts();
        let mut bad = join("g", "a", None);
        if let GroupCommand::Join { topics, .. } = &mut bad {
            topics.clear();
        }
        assert!(matches!(s.apply(&bad, &c), Err(GroupError::Invalid { .. })));
        let mut bad = join("g", "a", None);
        if let GroupCommand::Join {
            session_timeout_ms, ..
        } = &mut bad
        {
            *session_timeout_ms = 1;
        }
        assert!(s.apply(&bad, &c).is_err());
        assert!(s.groups.is_empty());
        let long = "x".repeat(GROUP_NAME_LEN_MAX + 1);
        assert!(s.apply(&join(&long, "a", None), &c).is_err());
        s.apply(&join("g", "a", None), &c).unwrap();
        assert!(matches!(
            s.apply(&GroupCommand::Delete { group: "g".into() }, &c),
            Err(GroupError::NotEmpty { .. })
        ));
        assert!(matches!(
            s.apply(
                &GroupCommand::Reconcile {
                    group: "g".into(),
                    member_id: "zz".into(),
                    owned: BTreeSet::new()
                },
                &c
            ),
            Err(GroupError::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_group_is_bounded_in_members() {
        let mut s = Groups::default();
        let c = counts();
        for i in 0..GROUP_MEMBERS_MAX {
            s.apply(&join("g", &format!("m{i}"), None), &c).unwrap();
        }
        assert!(matches!(
            s.apply(&join("g", "one-too-many", None), &c),
            Err(GroupError::Full { .. })
        ));
        owners(&s.groups["g"]);
    }

    #[test]
    fn deleting_a_topic_drops_its_partitions_from_every_member() {
        let mut s = Groups::default();
        let mut c = counts();
        s.apply(&join("g", "a", None), &c).unwrap();
        c.remove("t");
        s.topic_changed("t", &c);
        assert!(s.groups["g"].members["a"].assigned.is_empty());
        c.insert("t".into(), 2);
        s.topic_changed("t", &c);
        assert_eq!(s.groups["g"].members["a"].assigned.len(), 2);
    }
}
