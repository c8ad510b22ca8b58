//! The sticky, balanced assignor: which member of a group should own which partition.
//!
//! Pure and deterministic (the metadata group's state machine runs it on every replica
//! at apply time, so every replica computes the same target).
//!
//! Per topic, the members subscribed to it share its partitions evenly: each gets
//! `n / k` or `n / k + 1` of the topic's `n` partitions (`k` subscribers). Sticky: a
//! member keeps the partitions it has (in the current target) up to its quota; the
//! members that get the larger quota are those that already hold the most of the topic
//! (then the least loaded overall), so a membership change moves only the partitions
//! it must. Freed partitions go to the members below quota, least loaded overall
//! first, which also spreads many small topics across the group.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition: `(topic, partition index)`.
pub type Tp = (String, u32);

/// The target assignment of every member, given each member's subscription, the
/// partition count of every topic that exists, and the current target. Members with no
/// subscribed topic that exists get an empty set. Never names a partition twice.
pub fn assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
    current: &BTreeMap<String, BTreeSet<Tp>>,
) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut out: BTreeMap<String, BTreeSet<Tp>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in topics {
        let Some(&n) = partition_counts.get(topic) else {
            continue;
        };
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(m, _)| m)
            .collect();
        assign_topic(topic, n, &subscribers, current, &mut out);
    }
    out
}

fn assign_topic(
    topic: &str,
    n: u32,
    subscribers: &[&String],
    current: &BTreeMap<String, BTreeSet<Tp>>,
    out: &mut BTreeMap<String, BTreeSet<Tp>>,
) {
    let k = subscribers.len() as u32;
    if k == 0 || n == 0 {
        return;
    }
    let (base, extra) = (n / k, n % k);
    // What each subscriber holds of this topic now (valid partitions only).
    let mut kept: BTreeMap<&String, Vec<u32>> = subscribers
        .iter()
        .map(|m| {
            let held = current
                .get(*m)
                .map(|set| {
                    set.iter()
                        .filter(|(t, p)| t == topic && *p < n)
                        .map(|(_, p)| *p)
                        .collect()
                })
                .unwrap_or_default();
            (*m, held)
        })
        .collect();
    // The larger quotas go to those holding the most already, then the least loaded.
    let load = |m: &String| out.get(m).map_or(0, BTreeSet::len);
    let mut order: Vec<&String> = subscribers.to_vec();
    order.sort_by(|a, b| {
        kept[b]
            .len()
            .cmp(&kept[a].len())
            .then(load(a).cmp(&load(b)))
            .then(a.cmp(b))
    });
    let quota: BTreeMap<&String, u32> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, base + u32::from((i as u32) < extra)))
        .collect();
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    for m in &order {
        let held = kept.get_mut(m).expect("every subscriber has an entry");
        held.retain(|p| !taken.contains(p));
        held.truncate(quota[m] as usize);
        taken.extend(held.iter().copied());
    }
    let mut free = (0..n).filter(|p| !taken.contains(p));
    // Fill the members below quota, least loaded overall first.
    let mut needy: Vec<&String> = order
        .iter()
        .copied()
        .filter(|m| (kept[m].len() as u32) < quota[m])
        .collect();
    needy.sort_by(|a, b| {
        (load(a) + kept[a].len())
            .cmp(&(load(b) + kept[b].len()))
            .then(a.cmp(b))
    });
    for m in needy {
        while (kept[m].len() as u32) < quota[m] {
            match free.next() {
                Some(p) => kept.get_mut(m).expect("entry").push(p),
                None => break,
            }
        }
    }
    for (m, held) in kept {
        let set = out.get_mut(m).expect("every member has an entry");
        set.extend(held.into_iter().map(|p| (topic.to_string(), p)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|(m, t)| (m.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn counts(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn check_valid(
        s: &BTreeMap<String, BTreeSet<String>>,
        c: &BTreeMap<String, u32>,
        a: &BTreeMap<String, BTreeSet<Tp>>,
    ) {
        let mut seen = BTreeSet::new();
        for (m, set) in a {
            for tp in set {
                assert!(seen.insert(tp.clone()), "{tp:?} has two owners");
                assert!(s[m].contains(&tp.0), "{m} does not subscribe to {}", tp.0);
                assert!(tp.1 < c[&tp.0]);
            }
        }
        // Every partition of a subscribed topic is owned; per topic, balanced within 1.
        for (t, &n) in c {
            let subscribers: Vec<&String> = s
                .iter()
                .filter(|(_, ts)| ts.contains(t))
                .map(|(m, _)| m)
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            for p in 0..n {
                assert!(seen.contains(&(t.clone(), p)), "{t}/{p} unowned");
            }
            let per: Vec<usize> = subscribers
                .iter()
                .map(|m| a[*m].iter().filter(|(tt, _)| tt == t).count())
                .collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "{t}: unbalanced {per:?}");
        }
    }

    #[test]
    fn four_members_share_twelve_partitions_three_each() {
        let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"]), ("d", &["t"])]);
        let c = counts(&[("t", 12)]);
        let a = assign(&s, &c, &BTreeMap::new());
        check_valid(&s, &c, &a);
        assert!(a.values().all(|set| set.len() == 3));
        // Stable: the same input gives the same output.
        assert_eq!(assign(&s, &c, &a), a);
    }

    #[test]
    fn a_leaving_member_moves_only_its_partitions() {
        let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"]), ("d", &["t"])]);
        let c = counts(&[("t", 12)]);
        let before = assign(&s, &c, &BTreeMap::new());
        let s2 = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let after = assign(&s2, &c, &before);
        check_valid(&s2, &c, &after);
        for m in ["a", "b", "c"] {
            assert!(before[m].is_subset(&after[m]), "{m} lost partitions");
        }
    }

    #[test]
    fn a_joining_member_takes_only_what_balance_needs() {
        let s = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let c = counts(&[("t", 12)]);
        let before = assign(&s, &c, &BTreeMap::new());
        let s2 = subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"]), ("d", &["t"])]);
        let after = assign(&s2, &c, &before);
        check_valid(&s2, &c, &after);
        for m in ["a", "b", "c"] {
            assert!(after[m].is_subset(&before[m]));
            assert_eq!(after[m].len(), 3);
        }
    }

    #[test]
    fn single_partition_topics_spread_over_members() {
        let s = subs(&[
            ("a", &["t1", "t2", "t3", "t4"]),
            ("b", &["t1", "t2", "t3", "t4"]),
        ]);
        let c = counts(&[("t1", 1), ("t2", 1), ("t3", 1), ("t4", 1)]);
        let a = assign(&s, &c, &BTreeMap::new());
        check_valid(&s, &c, &a);
        assert_eq!(a["a"].len(), 2);
        assert_eq!(a["b"].len(), 2);
    }

    #[test]
    fn unknown_topics_and_shrunk_topics_are_dropped() {
        let s = subs(&[("a", &["t", "gone"])]);
        let mut current = BTreeMap::new();
        current.insert(
            "a".to_string(),
            [("t".to_string(), 5), ("gone".to_string(), 0)].into(),
        );
        let a = assign(&s, &counts(&[("t", 2)]), &current);
        assert_eq!(a["a"], [("t".to_string(), 0), ("t".to_string(), 1)].into());
    }

    /// Subscriptions, partition counts and member indexes to drop.
    type Case = (
        BTreeMap<String, BTreeSet<String>>,
        BTreeMap<String, u32>,
        Vec<usize>,
    );

    fn arb_case() -> impl Strategy<Value = Case> {
        let topics = prop::collection::btree_map("t[0-4]", 0u32..20, 1..5);
        topics.prop_flat_map(|c| {
            let names: Vec<String> = c.keys().cloned().collect();
            let members = prop::collection::btree_map(
                "m[0-9]{1,2}",
                prop::sample::subsequence(names.clone(), 0..=names.len()),
                0..12,
            )
            .prop_map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.into_iter().collect::<BTreeSet<_>>()))
                    .collect::<BTreeMap<_, _>>()
            });
            (members, Just(c), prop::collection::vec(0usize..100, 0..4))
        })
    }

    proptest! {
        #[test]
        fn always_valid_balanced_and_sticky((s, c, removals) in arb_case()) {
            let first = assign(&s, &c, &BTreeMap::new());
            check_valid(&s, &c, &first);
            // Idempotent: a valid target is kept as is.
            prop_assert_eq!(&assign(&s, &c, &first), &first);
            // Remove some members: survivors keep what fits their new quota, and a
            // survivor never loses a partition of a topic whose quota did not shrink.
            let mut s2 = s.clone();
            for r in removals {
                if s2.is_empty() { break; }
                let key = s2.keys().nth(r % s2.len()).unwrap().clone();
                s2.remove(&key);
            }
            let second = assign(&s2, &c, &first);
            check_valid(&s2, &c, &second);
            for (m, set) in &second {
                let before = &first[m];
                for tp in before {
                    if !set.contains(tp) {
                        // Lost only if the member now holds its full (smaller) quota.
                        let n = c[&tp.0];
                        let k = s2.values().filter(|t| t.contains(&tp.0)).count() as u32;
                        let held = set.iter().filter(|(t, _)| *t == tp.0).count() as u32;
                        prop_assert!(held >= n / k, "{m} lost {tp:?} while below quota");
                    }
                }
            }
        }
    }
}
