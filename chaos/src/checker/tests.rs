//! The checker's rules on hand-built histories, including ones that must fail.

use super::*;
use crate::history::{DrainedPartition, FaultEvent, ReadOp, ReplicaDigest};

const RUN: &str = "t";

fn op(producer: u32, seq: u64, partition: u32, outcome: Outcome, offset: Option<u64>) -> ProduceOp {
    ProduceOp {
        producer,
        seq,
        partition,
        invoke_us: seq * 1000,
        complete_us: Some(seq * 1000 + 500),
        outcome,
        offset,
        error: None,
    }
}

fn digest(node: u64, hw: u64, crc: &str) -> ReplicaDigest {
    ReplicaDigest {
        node,
        start_offset: 0,
        high_watermark: hw,
        batches: hw,
        bytes: hw * 10,
        crc32: crc.to_string(),
        leader: node == 1,
    }
}

/// One partition, one producer: seqs 0..n acknowledged at offsets 0..n and stored
/// there; three identical replicas.
fn clean(n: u64) -> History {
    History {
        run_id: RUN.into(),
        partitions: 1,
        replication: 3,
        produces: (0..n).map(|s| op(0, s, 0, Outcome::Ok, Some(s))).collect(),
        drain: vec![DrainedPartition {
            partition: 0,
            records: (0..n).map(|s| (s, payload(RUN, 0, s))).collect(),
            target: n,
            position: n,
            error: None,
        }],
        digests: vec![PartitionDigests {
            partition: 0,
            replicas: vec![1, 2, 3],
            digests: vec![digest(1, n, "aa"), digest(2, n, "aa"), digest(3, n, "aa")],
            errors: Vec::new(),
        }],
        ..History::default()
    }
}

#[test]
fn a_clean_history_passes() {
    let r = check(&clean(5));
    assert!(r.pass(), "{r:#?}");
    assert_eq!((r.invoked, r.acknowledged, r.stored_records), (5, 5, 5));
    assert_eq!(
        (r.lost, r.unexpected, r.duplicates, r.order_violations),
        (0, 0, 0, 0)
    );
    assert!(r.drain_complete && r.digests_identical);
}

#[test]
fn an_acknowledged_record_missing_from_the_log_is_lost() {
    let mut h = clean(5);
    h.drain[0].records.remove(2);
    let r = check(&h);
    assert_eq!(r.lost, 1);
    assert!(!r.pass());
    assert!(r.examples["lost"][0].contains("seq 2"), "{:?}", r.examples);
}

#[test]
fn an_acknowledged_record_at_another_offset_is_a_mismatch_not_a_loss() {
    let mut h = clean(3);
    h.produces[1].offset = Some(7);
    let r = check(&h);
    assert_eq!((r.lost, r.offset_mismatches), (0, 1));
    assert!(!r.pass());
}

#[test]
fn unknown_outcomes_may_or_may_not_be_stored() {
    let mut h = clean(4);
    h.produces[1].outcome = Outcome::Unknown; // stored
    h.produces[1].offset = None;
    h.produces[3].outcome = Outcome::Invoked; // not stored
    h.produces[3].offset = None;
    h.drain[0].records.pop();
    let r = check(&h);
    assert!(r.pass(), "{r:#?}");
    assert_eq!((r.acknowledged, r.unknown, r.unknown_stored), (2, 2, 1));
}

#[test]
fn values_never_sent_or_refused_are_unexpected() {
    let mut h = clean(3);
    h.produces[2].outcome = Outcome::Fail; // refused, yet stored at offset 2
    h.produces[2].offset = None;
    h.drain[0].records.push((3, payload(RUN, 9, 0))); // no such producer
    h.drain[0].records.push((4, "garbage".into()));
    h.drain[0].records.push((5, payload("other-run", 0, 0)));
    let r = check(&h);
    assert_eq!(r.unexpected, 4, "{:?}", r.examples);
    assert!(!r.pass());
}

#[test]
fn duplicates_are_counted_but_do_not_fail() {
    let mut h = clean(3);
    // A retried batch: seqs 1, 2 stored again after themselves.
    h.drain[0].records.push((3, payload(RUN, 0, 1)));
    h.drain[0].records.push((4, payload(RUN, 0, 2)));
    let r = check(&h);
    assert_eq!((r.duplicates, r.duplicated_values), (2, 2));
    assert_eq!(r.order_violations, 0, "order is judged on first copies");
    assert!(r.pass(), "{r:#?}");
}

#[test]
fn a_producer_out_of_order_is_a_violation() {
    let mut h = clean(3);
    // Unknown outcomes stored in swapped order: seq 2 before seq 1.
    for i in [1, 2] {
        h.produces[i].outcome = Outcome::Unknown;
        h.produces[i].offset = None;
    }
    let (a, b) = (
        h.drain[0].records[1].1.clone(),
        h.drain[0].records[2].1.clone(),
    );
    h.drain[0].records[1].1 = b;
    h.drain[0].records[2].1 = a;
    let r = check(&h);
    assert_eq!(r.order_violations, 1, "{:?}", r.examples);
    assert_eq!(r.lost, 0);
    assert!(!r.pass());
}

#[test]
fn offsets_going_backwards_and_foreign_partitions_are_violations() {
    let mut h = clean(3);
    h.drain[0].records[2].0 = 1; // offsets 0, 1, 1
    h.produces[2].offset = Some(1);
    let r = check(&h);
    assert!(r.order_violations >= 1, "{r:#?}");
    assert!(!r.pass());

    let mut h = clean(2);
    h.partitions = 2;
    h.produces.push(op(1, 0, 0, Outcome::Unknown, None)); // sent to 0, found in 1
    h.drain.push(DrainedPartition {
        partition: 1,
        records: vec![(0, payload(RUN, 1, 0))],
        target: 1,
        position: 1,
        error: None,
    });
    h.digests.push(PartitionDigests {
        partition: 1,
        replicas: vec![1],
        digests: vec![digest(1, 1, "bb")],
        errors: Vec::new(),
    });
    let r = check(&h);
    assert_eq!(r.order_violations, 1, "{:?}", r.examples);
}

#[test]
fn a_live_read_that_vanished_is_a_violation() {
    let mut h = clean(3);
    h.reads = vec![
        ReadOp {
            partition: 0,
            offset: 0,
            value: payload(RUN, 0, 0),
            at_us: 1,
        },
        ReadOp {
            partition: 0,
            offset: 1,
            value: payload(RUN, 7, 7),
            at_us: 2,
        },
    ];
    let r = check(&h);
    assert_eq!((r.live_reads, r.divergent_reads), (2, 1));
    assert!(!r.pass());
}

#[test]
fn an_incomplete_drain_fails() {
    let mut h = clean(3);
    h.drain[0].target = 5;
    let r = check(&h);
    assert!(!r.drain_complete);
    assert!(!r.pass());
}

#[test]
fn replicas_must_agree() {
    let mut h = clean(3);
    h.digests[0].digests[2].crc32 = "bb".into();
    let r = check(&h);
    assert!(!r.digests_identical);
    assert!(
        r.examples["digests"][0].contains("differ"),
        "{:?}",
        r.examples
    );

    let mut h = clean(3);
    h.digests[0].digests[1].high_watermark = 2;
    let r = check(&h);
    assert!(
        r.examples["digests"][0].contains("converge"),
        "{:?}",
        r.examples
    );
    assert!(!r.pass());

    let mut h = clean(3);
    h.digests[0].digests.pop();
    assert!(!check(&h).pass());
}

#[test]
fn failover_is_fault_to_first_ack_of_a_later_invoke() {
    let mut h = clean(10); // invoke at seq ms, ack 0.5 ms later
    // Acks of seqs 3..6 never came: the partition was unavailable.
    for i in 3..6 {
        h.produces[i].outcome = Outcome::Unknown;
    }
    h.faults = vec![
        FaultEvent {
            kind: "kill".into(),
            nodes: vec![1],
            affected_partitions: vec![0],
            start_us: 2_800,
            end_us: Some(4_000),
            detail: String::new(),
        },
        FaultEvent {
            kind: "kill".into(),
            nodes: vec![1],
            affected_partitions: vec![0],
            start_us: 20_000,
            end_us: None,
            detail: String::new(),
        },
    ];
    for i in 3..6 {
        h.produces[i].offset = None;
    }
    h.drain[0].records.retain(|(o, _)| !(3..6).contains(o));
    let r = check(&h);
    assert!(r.pass(), "{r:#?}");
    // First invoke at or after 2.8 ms with an ack: seq 6, acked at 6.5 ms.
    assert_eq!(r.failover.samples, 1);
    assert_eq!(r.failover.max_ms, Some(3.7));
    assert_eq!(r.failover.unrecovered, 1);
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), Some(50.0));
    assert_eq!(percentile(&v, 0.99), Some(99.0));
    assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    assert_eq!(percentile(&[], 0.5), None);
}

#[test]
fn a_queue_violation_fails_the_run_and_no_queue_is_fine() {
    use crate::history::queue::{MessageKind, QueueHistory, QueueSend};
    let mut h = clean(3);
    assert!(
        check(&h).queue.is_none(),
        "no queue workload: no queue check"
    );
    // One message acknowledged by the queue and never delivered: lost.
    h.queue = Some(QueueHistory {
        queue: "q".into(),
        dlq: "q.dlq".into(),
        partitions: 1,
        max_deliveries: 5,
        visibility_timeout_ms: 3_000,
        workers: 1,
        sends: vec![QueueSend {
            producer: 0,
            seq: 0,
            kind: MessageKind::Normal,
            invoke_us: 1,
            complete_us: Some(2),
            outcome: Outcome::Ok,
            partition: Some(0),
            offset: Some(0),
            error: None,
        }],
        ..QueueHistory::default()
    });
    let r = check(&h);
    assert!(!r.pass());
    assert_eq!(r.queue.as_ref().map(|q| q.lost), Some(1));
    assert!(
        r.violations.iter().any(|v| v.starts_with("queue:")),
        "{:?}",
        r.violations
    );
    // The topic's own rules still pass.
    assert_eq!((r.lost, r.unexpected), (0, 0));
}
