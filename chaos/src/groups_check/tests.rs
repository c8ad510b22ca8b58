//! The group rules on hand-built histories, including ones that must fail.

use super::*;
use crate::history::{DrainedPartition, GroupCommit, GroupEvent, GroupRead, OffsetSample};

const RUN: &str = "t";

/// One partition, one producer: seqs 0..n acknowledged at offsets 0..n, drained;
/// a group of 2 members where member 0 joined, took partition 0 over at 0 and
/// consumed everything once.
fn clean(n: u64) -> History {
    let produces = (0..n)
        .map(|s| ProduceOp {
            producer: 0,
            seq: s,
            partition: 0,
            invoke_us: s * 1000,
            complete_us: Some(s * 1000 + 500),
            outcome: Outcome::Ok,
            offset: Some(s),
            error: None,
        })
        .collect();
    let mut g = GroupHistory {
        group: "chaos-t".into(),
        members: 2,
        final_phase_us: Some((20_000_000, 20_000_100)),
        ..GroupHistory::default()
    };
    for m in 0..2 {
        g.events.push(event(
            m,
            10,
            GroupEventKind::Joined {
                member_id: format!("id{m}"),
            },
        ));
    }
    g.events.push(event(
        0,
        20,
        GroupEventKind::Assigned {
            partitions: vec![(0, 0)],
        },
    ));
    g.reads = (0..n).map(|s| read(0, s, 30 + s)).collect();
    History {
        run_id: RUN.into(),
        partitions: 1,
        replication: 3,
        produces,
        drain: vec![DrainedPartition {
            partition: 0,
            records: (0..n).map(|s| (s, payload(RUN, 0, s))).collect(),
            target: n,
            position: n,
            error: None,
        }],
        group: Some(g),
        ..History::default()
    }
}

fn event(member: u32, at_us: u64, kind: GroupEventKind) -> GroupEvent {
    GroupEvent {
        member,
        start_us: at_us.saturating_sub(5),
        at_us,
        kind,
    }
}

fn read(member: u32, offset: u64, at_us: u64) -> GroupRead {
    GroupRead {
        member,
        partition: 0,
        offset,
        value: payload(RUN, 0, offset),
        at_us,
    }
}

fn commit(member: u32, offset: u64, invoke_us: u64, complete_us: u64) -> GroupCommit {
    GroupCommit {
        member,
        member_id: format!("id{member}"),
        partition: 0,
        offset,
        invoke_us,
        complete_us: Some(complete_us),
        outcome: CommitOutcome::Acked,
        error_kind: None,
        error: None,
    }
}

fn sample(offset: Option<u64>, invoke_us: u64, complete_us: u64) -> OffsetSample {
    OffsetSample {
        partition: 0,
        offset,
        log_end_offset: Some(10),
        invoke_us,
        complete_us,
    }
}

fn run(h: &History) -> GroupCheck {
    check_group(h, h.group.as_ref().expect("a group history"))
}

fn group(h: &mut History) -> &mut GroupHistory {
    h.group.as_mut().expect("a group history")
}

#[test]
fn a_clean_group_history_passes() {
    let mut h = clean(5);
    group(&mut h).commits = vec![commit(0, 3, 100, 200), commit(0, 5, 300, 400)];
    let r = run(&h);
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!((r.consumed, r.consumed_distinct, r.duplicates), (5, 5, 0));
    assert_eq!((r.missed, r.unexpected, r.commit_regressions), (0, 0, 0));
    assert_eq!((r.commits_acked, r.joins, r.rebalances), (2, 2, 1));
    assert_eq!(r.members_stuck, 0);
}

#[test]
fn an_acknowledged_record_never_consumed_fails() {
    let mut h = clean(5);
    group(&mut h).reads.remove(3);
    let r = run(&h);
    assert_eq!(r.missed, 1);
    assert!(r.examples["group_missed"][0].contains("seq 3"), "{r:#?}");
    assert!(!r.violations.is_empty());
}

#[test]
fn duplicates_are_counted_and_do_not_fail() {
    let mut h = clean(5);
    // A rebalance: member 1 read 2..5 again from the last commit.
    let g = group(&mut h);
    g.reads.extend((2..5).map(|o| read(1, o, 100 + o)));
    g.events.push(event(
        1,
        90,
        GroupEventKind::Assigned {
            partitions: vec![(0, 2)],
        },
    ));
    let r = run(&h);
    assert_eq!((r.duplicates, r.duplicated_records, r.consumed), (3, 3, 8));
    assert!(r.violations.is_empty(), "{r:#?}");
}

#[test]
fn records_never_produced_or_not_in_the_log_are_unexpected() {
    let mut h = clean(3);
    h.produces[2].outcome = Outcome::Fail; // refused, yet consumed at offset 2
    h.produces[2].offset = None;
    let g = group(&mut h);
    g.reads.push(GroupRead {
        value: payload(RUN, 9, 0), // no such producer
        ..read(0, 7, 50)
    });
    g.reads.push(GroupRead {
        value: "garbage".into(),
        ..read(0, 8, 50)
    });
    g.reads.push(GroupRead {
        value: payload(RUN, 0, 1), // produced, but the log has seq 0 at offset 0
        ..read(1, 0, 60)
    });
    let r = run(&h);
    assert_eq!(r.unexpected, 4, "{:#?}", r.examples);
    assert!(!r.violations.is_empty());
}

#[test]
fn a_commit_below_an_earlier_acknowledged_one_is_a_regression() {
    let mut h = clean(5);
    // Member 0 commits 4 (answered at 200); member 1's commit of 2, invoked at 300.
    group(&mut h).commits = vec![commit(0, 4, 100, 200), commit(1, 2, 300, 400)];
    let r = run(&h);
    assert_eq!((r.commit_regressions, r.commit_regression_max), (1, 2));
    assert!(
        r.examples["commit_regressions"][0].contains("member 1"),
        "{r:#?}"
    );
    assert!(!r.violations.is_empty());
}

#[test]
fn a_takeover_below_an_earlier_commit_is_a_regression() {
    let mut h = clean(5);
    let g = group(&mut h);
    g.commits = vec![commit(0, 4, 100, 200)];
    // Member 1 took the partition over at 1 in a poll that began after the answer.
    g.events.push(GroupEvent {
        member: 1,
        start_us: 250,
        at_us: 260,
        kind: GroupEventKind::Assigned {
            partitions: vec![(0, 1)],
        },
    });
    let r = run(&h);
    assert_eq!((r.commit_regressions, r.commit_regression_max), (1, 3));
    assert!(!r.violations.is_empty());
}

#[test]
fn acknowledgements_out_of_order_for_overlapping_commits_are_legitimate() {
    let mut h = clean(5);
    let g = group(&mut h);
    // A's commit of 2 is applied, B takes over at 2 and commits 4 (answered at
    // 300); A's answer arrives at 500 (its leader thawed).
    g.commits = vec![commit(0, 2, 100, 500), commit(1, 4, 250, 300)];
    g.events.push(GroupEvent {
        member: 1,
        start_us: 150,
        at_us: 240,
        kind: GroupEventKind::Assigned {
            partitions: vec![(0, 2)],
        },
    });
    let r = run(&h);
    assert_eq!((r.commit_regressions, r.reordered_acks), (0, 1), "{r:#?}");
    assert!(r.violations.is_empty(), "{r:#?}");
}

#[test]
fn stale_samples_are_reported_and_phantoms_fail() {
    let mut h = clean(5);
    let g = group(&mut h);
    g.commits = vec![commit(0, 3, 100, 200), commit(0, 5, 300, 400)];
    g.samples = vec![
        sample(Some(5), 450, 460),
        // A new leader that has not applied the last commit yet.
        sample(Some(3), 500, 510),
        sample(None, 520, 530),
    ];
    let r = run(&h);
    assert_eq!((r.stale_samples, r.stale_sample_lag_max), (2, 5), "{r:#?}");
    assert_eq!((r.phantom_samples, r.commit_regressions), (0, 0));
    assert!(r.violations.is_empty(), "{r:#?}");

    // 4 was never committed, and 5 not before this sample was answered.
    group(&mut h).samples = vec![sample(Some(4), 450, 460), sample(Some(5), 210, 220)];
    let r = run(&h);
    assert_eq!(r.phantom_samples, 2, "{r:#?}");
    assert!(!r.violations.is_empty());
}

#[test]
fn unobserved_and_failed_commits_are_not_ordered_but_make_samples_legitimate() {
    let mut h = clean(5);
    let g = group(&mut h);
    g.commits = vec![
        commit(0, 4, 100, 200),
        GroupCommit {
            outcome: CommitOutcome::Error,
            error_kind: Some("Timeout".into()),
            ..commit(0, 2, 300, 400)
        },
        GroupCommit {
            outcome: CommitOutcome::Unobserved,
            complete_us: None,
            ..commit(0, 1, 500, 0)
        },
    ];
    g.samples = vec![sample(Some(1), 600, 610)];
    let r = run(&h);
    assert_eq!((r.commit_regressions, r.phantom_samples), (0, 0), "{r:#?}");
    assert_eq!(r.stale_samples, 1);
    assert_eq!(r.commit_errors.get("Timeout"), Some(&1));
    assert_eq!(r.commits_unobserved, 1);
}

#[test]
fn a_final_read_below_the_last_commit_is_a_regression() {
    let mut h = clean(5);
    let g = group(&mut h);
    g.commits = vec![commit(0, 5, 100, 200)];
    // The auditor (member index 2) took over at 3 after everything stopped.
    g.events.push(GroupEvent {
        member: 2,
        start_us: 2_000_000,
        at_us: 2_000_010,
        kind: GroupEventKind::Assigned {
            partitions: vec![(0, 3)],
        },
    });
    g.final_offsets = vec![OffsetSample {
        log_end_offset: None,
        ..sample(Some(3), 2_000_000, 2_000_010)
    }];
    let r = run(&h);
    assert_eq!((r.commit_regressions, r.final_lag), (1, 2), "{r:#?}");
    assert!(r.examples["commit_regressions"][0].contains("the auditor"));
    assert_eq!(r.final_committed, vec![(0, Some(3))]);
}

#[test]
fn a_fenced_member_must_join_again() {
    let mut h = clean(3);
    let fence = GroupEventKind::Error {
        call: "poll".into(),
        kind: "FencedMember".into(),
        error: "session lost".into(),
    };
    let g = group(&mut h);
    g.events.push(event(1, 500, fence.clone()));
    let r = run(&h);
    assert_eq!((r.members_stuck, r.fences), (1, 1));
    assert!(!r.violations.is_empty());

    let g = group(&mut h);
    g.events.push(event(
        1,
        700,
        GroupEventKind::Joined {
            member_id: "id1b".into(),
        },
    ));
    let r = run(&h);
    assert_eq!((r.members_stuck, r.joins), (0, 3), "{r:#?}");

    // A commit refused as fenced also drops the membership; a fence in the last
    // 10 s before the members were stopped is not held against it (no time to join).
    let g = group(&mut h);
    g.commits.push(GroupCommit {
        outcome: CommitOutcome::Error,
        error_kind: Some("FencedMember".into()),
        ..commit(1, 3, 800, 900)
    });
    assert_eq!(run(&h).members_stuck, 1);
    group(&mut h).commits[0].complete_us = Some(12_000_000);
    assert_eq!(run(&h).members_stuck, 0);
}

#[test]
fn a_member_that_never_joined_is_stuck() {
    let mut h = clean(2);
    group(&mut h).events.retain(|e| e.member != 1);
    let r = run(&h);
    assert_eq!(r.members_stuck, 1);
    assert!(r.examples["members_stuck"][0].contains("never joined"));
}
