//! The queue rules on hand-built histories, including ones that must fail.

use super::*;
use crate::history::queue::{DlqRecord, QueueFinalStats, QueueSettle, queue_payload};

const RUN: &str = "t";
const S: u64 = 1_000_000;

fn send(seq: u64, kind: MessageKind, outcome: Outcome, at: Option<(u32, u64)>) -> QueueSend {
    QueueSend {
        producer: 0,
        seq,
        kind,
        invoke_us: seq * 1000,
        complete_us: Some(seq * 1000 + 500),
        outcome,
        partition: at.map(|(p, _)| p),
        offset: at.map(|(_, o)| o),
        error: None,
    }
}

fn value(seq: u64, kind: MessageKind) -> String {
    queue_payload(RUN, 0, seq, kind)
}

/// Delivery `count` of (p, o) with `value`, from a receive over [at - 10 ms, at].
fn delivery(worker: u32, (p, o): (u32, u64), count: u32, value: &str, at: u64) -> QueueDeliveryRec {
    QueueDeliveryRec {
        worker,
        partition: p,
        offset: o,
        delivery_count: count,
        receipt: format!("7-{p}-{o}-{count}-{at}"),
        value: value.to_string(),
        invoke_us: at - 10_000,
        at_us: at,
    }
}

/// `kind` of `d`, answered `outcome` 10 ms after the delivery.
fn settle(kind: SettleKind, d: &QueueDeliveryRec, outcome: SettleOutcome) -> QueueSettle {
    QueueSettle {
        worker: d.worker,
        kind,
        receipt: d.receipt.clone(),
        partition: d.partition,
        offset: d.offset,
        delivery_count: d.delivery_count,
        invoke_us: d.at_us + 1_000,
        complete_us: d.at_us + 10_000,
        outcome,
        error_kind: (outcome == SettleOutcome::Error).then(|| "Timeout".to_string()),
    }
}

fn dead_letter(value: &str, (p, o): (u32, u64), deliveries: u32, reason: &str) -> DlqRecord {
    DlqRecord {
        partition: p,
        offset: 0,
        value: value.to_string(),
        source: Some("q".into()),
        source_partition: Some(p),
        source_offset: Some(o),
        deliveries: Some(deliveries),
        reason: Some(reason.into()),
    }
}

/// Three acknowledged messages, each on its own partition at offset 0:
/// - seq 0, normal: delivered once at 1 s, acked Ok;
/// - seq 1, poison: delivered 5 times from 2 s, each nacked Ok, then in the DLQ;
/// - seq 2, crash: delivered at 3 s and abandoned, delivered again at 6.1 s (after the
///   3 s lease), acked Ok.
fn clean() -> QueueHistory {
    let (a, b, c) = (
        value(0, MessageKind::Normal),
        value(1, MessageKind::Poison),
        value(2, MessageKind::Crash),
    );
    let mut q = QueueHistory {
        queue: "q".into(),
        dlq: "q.dlq".into(),
        partitions: 3,
        max_deliveries: 5,
        visibility_timeout_ms: 3_000,
        workers: 2,
        sends: vec![
            send(0, MessageKind::Normal, Outcome::Ok, Some((0, 0))),
            send(1, MessageKind::Poison, Outcome::Ok, Some((1, 0))),
            send(2, MessageKind::Crash, Outcome::Ok, Some((2, 0))),
        ],
        drain_us: Some((20 * S, 20 * S + 300_000)),
        ..QueueHistory::default()
    };
    let d = delivery(0, (0, 0), 1, &a, S);
    q.settles
        .push(settle(SettleKind::Ack, &d, SettleOutcome::Ok));
    q.deliveries.push(d);
    for n in 1..=5 {
        let d = delivery(n % 2, (1, 0), n, &b, 2 * S + u64::from(n) * 50_000);
        q.settles
            .push(settle(SettleKind::Nack, &d, SettleOutcome::Ok));
        q.deliveries.push(d);
    }
    q.dlq_records.push(dead_letter(&b, (1, 0), 5, "poison"));
    q.deliveries.push(delivery(1, (2, 0), 1, &c, 3 * S));
    let d = delivery(0, (2, 0), 2, &c, 6 * S + 100_000);
    q.settles
        .push(settle(SettleKind::Ack, &d, SettleOutcome::Ok));
    q.deliveries.push(d);
    q.final_stats = (0..3)
        .map(|p| QueueFinalStats {
            partition: p,
            ack_floor: 1,
            end_offset: 1,
            acked: u64::from(p != 1),
            dead_lettered: u64::from(p == 1),
            ..QueueFinalStats::default()
        })
        .collect();
    q
}

#[test]
fn a_clean_history_passes() {
    let r = check_queue(RUN, &clean());
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!((r.sent, r.sent_acknowledged), (3, 3));
    assert_eq!((r.poison_acknowledged, r.crash_acknowledged), (1, 1));
    assert_eq!((r.deliveries, r.delivered_messages), (8, 3));
    assert_eq!(r.redeliveries, 5, "4 of the poison, 1 of the crash");
    assert_eq!((r.acked, r.acked_unconfirmed, r.lost), (2, 0, 0));
    assert_eq!((r.dead_lettered, r.poison_dead_lettered), (1, 1));
    assert_eq!((r.dead_lettered_other, r.dlq_duplicates), (0, 0));
    assert_eq!((r.crash_redelivered, r.early_redeliveries), (1, 0));
    assert_eq!((r.unseen_deliveries, r.delivery_count_max), (0, 5));
    assert_eq!(
        r.processed_twice, 0,
        "the crash was not processed the first time"
    );
    assert_eq!(r.acks.get("Ok"), Some(&2));
    assert_eq!(r.nacks.get("Ok"), Some(&5));
    assert_eq!(r.drain_ms, Some(300.0));
    let t = r.final_counts.unwrap();
    assert_eq!((t.not_done, t.acked, t.dead_lettered), (0, 2, 1));
    assert_eq!(t.partitions_not_drained, 0);
    assert_eq!(r.counts_agree, Some(true));
}

#[test]
fn an_acknowledged_message_never_acked_is_lost() {
    let mut q = clean();
    // The normal message's ack was refused: its lease had been lost.
    q.settles[0].outcome = SettleOutcome::LeaseLost;
    let r = check_queue(RUN, &q);
    assert_eq!((r.lost, r.poison_missing), (1, 0));
    assert!(!r.violations.is_empty());
    assert!(
        r.examples["queue_lost"][0].contains("q0:0"),
        "{:?}",
        r.examples
    );

    // Never delivered at all.
    let mut q = clean();
    q.sends
        .push(send(3, MessageKind::Normal, Outcome::Ok, Some((0, 1))));
    let r = check_queue(RUN, &q);
    assert_eq!(r.lost, 1);
    assert!(!r.violations.is_empty());
}

#[test]
fn sends_not_acknowledged_need_not_end_anywhere() {
    let mut q = clean();
    q.sends
        .push(send(3, MessageKind::Normal, Outcome::Unknown, None));
    q.sends
        .push(send(4, MessageKind::Normal, Outcome::Fail, None));
    let r = check_queue(RUN, &q);
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!((r.sent_unknown, r.sent_failed, r.lost), (1, 1, 0));
}

#[test]
fn an_ack_without_answer_never_redelivered_is_unconfirmed_not_lost() {
    for outcome in [SettleOutcome::Error, SettleOutcome::AlreadyDone] {
        let mut q = clean();
        q.settles[0].outcome = outcome;
        let r = check_queue(RUN, &q);
        assert!(r.violations.is_empty(), "{outcome:?}: {r:#?}");
        assert_eq!((r.acked, r.acked_unconfirmed, r.lost), (1, 1, 0));
        assert_eq!(r.counts_agree, Some(true), "the broker counted it acked");
    }
    // The broker says it was not: reported, not failed.
    let mut q = clean();
    q.settles[0].outcome = SettleOutcome::Error;
    q.final_stats[0].acked = 0;
    let r = check_queue(RUN, &q);
    assert_eq!(r.counts_agree, Some(false));
    assert!(r.violations.is_empty());
    assert!(r.examples.contains_key("queue_counts"));
}

#[test]
fn a_delivery_after_an_ok_ack_is_a_violation() {
    // A higher delivery count after the ack.
    let mut q = clean();
    let a = q.deliveries[0].value.clone();
    q.deliveries.push(delivery(1, (0, 0), 2, &a, 9 * S));
    let r = check_queue(RUN, &q);
    assert_eq!(r.acked_then_redelivered, 1, "{:?}", r.examples);
    assert!(!r.violations.is_empty());

    // The same count again (another lease), from a receive called after the ack's answer.
    let mut q = clean();
    let mut again = delivery(1, (0, 0), 1, &a, 9 * S);
    again.receipt = "7-0-0-1-999".into();
    q.deliveries.push(again);
    let r = check_queue(RUN, &q);
    assert_eq!(r.acked_then_redelivered, 1, "{:?}", r.examples);

    // An earlier delivery returned late is no violation: the crash's first delivery
    // was received before its second was acked.
    let r = check_queue(RUN, &clean());
    assert_eq!(r.acked_then_redelivered, 0);
}

#[test]
fn poison_must_end_in_the_dlq() {
    let mut q = clean();
    q.dlq_records.clear();
    let r = check_queue(RUN, &q);
    assert_eq!((r.lost, r.poison_missing), (1, 1));
    assert!(!r.violations.is_empty());
}

#[test]
fn dead_letters_need_max_deliveries_or_a_term() {
    let mut q = clean();
    q.dlq_records[0].deliveries = Some(3);
    let r = check_queue(RUN, &q);
    assert_eq!(r.dead_lettered_early, 1);
    assert!(!r.violations.is_empty());

    q.dlq_records[0].reason = Some(format!("{TERM_REASON_PREFIX} bad input"));
    let r = check_queue(RUN, &q);
    assert!(r.violations.is_empty(), "{r:#?}");
}

#[test]
fn a_normal_message_may_be_dead_lettered_after_max_deliveries() {
    let mut q = clean();
    // The normal message's five acks all failed and were not applied; then it died.
    let a = q.deliveries[0].value.clone();
    q.settles[0].outcome = SettleOutcome::LeaseLost;
    for n in 2..=5 {
        q.deliveries
            .push(delivery(0, (0, 0), n, &a, 10 * S + u64::from(n) * 4 * S));
    }
    q.dlq_records.push(dead_letter(
        &a,
        (0, 0),
        5,
        "lease expired at max deliveries",
    ));
    let r = check_queue(RUN, &q);
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!((r.dead_lettered, r.dead_lettered_other), (2, 1));
    assert!(r.examples.contains_key("queue_dead_lettered_other"));
}

#[test]
fn acked_and_dead_lettered_is_a_violation() {
    let mut q = clean();
    let a = q.deliveries[0].value.clone();
    q.dlq_records.push(dead_letter(&a, (0, 0), 5, "x"));
    let r = check_queue(RUN, &q);
    assert_eq!(r.acked_and_dead_lettered, 1);
    assert!(!r.violations.is_empty());
}

#[test]
fn dead_letter_headers_must_name_the_message() {
    let mut q = clean();
    q.dlq_records[0].source_offset = Some(9);
    assert_eq!(check_queue(RUN, &q).dlq_mismatches, 1);

    let mut q = clean();
    q.dlq_records[0].source = Some("other".into());
    assert_eq!(check_queue(RUN, &q).dlq_mismatches, 1);

    let mut q = clean();
    q.dlq_records[0].deliveries = None;
    let r = check_queue(RUN, &q);
    assert_eq!(r.dlq_mismatches, 1);
    assert!(!r.violations.is_empty());
}

#[test]
fn dlq_duplicates_are_reported_not_failed() {
    let mut q = clean();
    let copy = q.dlq_records[0].clone();
    q.dlq_records.push(copy);
    let r = check_queue(RUN, &q);
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!(
        (r.dlq_records, r.dlq_duplicates, r.dead_lettered),
        (2, 1, 1)
    );
}

#[test]
fn foreign_or_refused_values_are_unexpected() {
    let mut q = clean();
    q.sends
        .push(send(3, MessageKind::Normal, Outcome::Fail, None));
    let refused = value(3, MessageKind::Normal);
    q.deliveries.push(delivery(0, (0, 1), 1, &refused, 7 * S));
    q.deliveries.push(delivery(0, (0, 2), 1, "garbage", 7 * S));
    q.deliveries.push(delivery(
        0,
        (0, 3),
        1,
        &value(99, MessageKind::Normal),
        7 * S,
    ));
    q.dlq_records.push(dead_letter(
        &queue_payload("other", 0, 0, MessageKind::Poison),
        (1, 5),
        5,
        "",
    ));
    let r = check_queue(RUN, &q);
    assert_eq!(r.unexpected, 4, "{:?}", r.examples);
    assert!(!r.violations.is_empty());

    // One message delivered with two values.
    let mut q = clean();
    let mut d = q.deliveries[6].clone();
    d.value = value(7, MessageKind::Crash);
    d.receipt = "other".into();
    q.deliveries.push(d);
    assert!(check_queue(RUN, &q).unexpected >= 1);
}

#[test]
fn delivery_counts_must_grow_in_real_time() {
    // The normal message delivered again, with count 1, by a receive called after the
    // first delivery returned (and its ack failed): a committed lease vanished.
    let mut q = clean();
    q.settles[0].outcome = SettleOutcome::LeaseLost;
    let a = q.deliveries[0].value.clone();
    let mut again = delivery(1, (0, 0), 1, &a, 5 * S);
    again.receipt = "7-0-0-1-555".into();
    q.settles
        .push(settle(SettleKind::Ack, &again, SettleOutcome::Ok));
    q.deliveries.push(again);
    let r = check_queue(RUN, &q);
    assert_eq!(r.count_regressions, 1, "{:?}", r.examples);
    assert!(!r.violations.is_empty());
    // Overlapping receives are not ordered.
    let mut q = clean();
    q.settles[0].outcome = SettleOutcome::LeaseLost;
    let mut again = delivery(1, (0, 0), 1, &a, S + 5_000);
    again.receipt = "7-0-0-1-556".into();
    q.settles
        .push(settle(SettleKind::Ack, &again, SettleOutcome::Ok));
    q.deliveries.push(again);
    assert_eq!(check_queue(RUN, &q).count_regressions, 0);
}

#[test]
fn a_delivery_beyond_max_deliveries_is_a_violation() {
    let mut q = clean();
    let b = q.deliveries[1].value.clone();
    q.deliveries.push(delivery(0, (1, 0), 6, &b, 3 * S));
    let r = check_queue(RUN, &q);
    assert_eq!(r.over_delivered, 1);
    assert!(!r.violations.is_empty());
}

#[test]
fn gaps_processing_twice_and_early_redeliveries_are_reported() {
    let mut q = clean();
    // The crash came back after 1 s instead of 3: early (reported).
    q.deliveries[7].at_us = 4 * S;
    q.deliveries[7].invoke_us = 4 * S - 10_000;
    q.settles[6].invoke_us = 4 * S + 1_000;
    q.settles[6].complete_us = 4 * S + 10_000;
    // The normal message: delivery 1 acked with an error, delivery 3 acked Ok (2 unseen).
    q.settles[0].outcome = SettleOutcome::Error;
    q.settles[0].error_kind = Some("Timeout".into());
    let a = q.deliveries[0].value.clone();
    let d = delivery(1, (0, 0), 3, &a, 8 * S);
    q.settles
        .push(settle(SettleKind::Ack, &d, SettleOutcome::Ok));
    q.deliveries.push(d);
    let r = check_queue(RUN, &q);
    assert!(r.violations.is_empty(), "{r:#?}");
    assert_eq!(r.early_redeliveries, 1, "{:?}", r.examples);
    assert_eq!(r.unseen_deliveries, 1);
    assert_eq!(r.processed_twice, 1);
    assert_eq!((r.acked, r.acked_unconfirmed), (2, 0));
    assert_eq!(r.acks.get("error:Timeout"), Some(&1));
}

#[test]
fn the_drain_waits_for_pending_and_quiet_unconfirmed_acks() {
    let q = clean();
    let a = account(RUN, &q);
    assert_eq!(
        (a.acknowledged, a.acked.len(), a.dead_lettered.len()),
        (3, 2, 1)
    );
    assert!(a.settled(0, 3_000));

    let mut q = clean();
    q.dlq_records.clear();
    let a = account(RUN, &q);
    assert_eq!(a.pending.len(), 1, "the poison is not in the DLQ yet");
    assert!(!a.settled(u64::MAX, 3_000));

    let mut q = clean();
    q.settles[0].outcome = SettleOutcome::Error;
    let a = account(RUN, &q);
    let at = q.settles[0].complete_us;
    assert_eq!(a.maybe_acked.get(&q.sends[0].id()), Some(&at));
    assert!(!a.settled(at + 6 * S, 3_000), "two leases and a second");
    assert!(a.settled(at + 7 * S, 3_000));
}
