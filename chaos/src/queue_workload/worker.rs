//! A worker: receive, record, "process", settle, record; until stopped.

use neo_client::{
    QueueConsumer, QueueConsumerConfig, QueueDelivery, Receipt, ReceiptOutcome, SettleOp,
};
use tokio::sync::watch;

use super::{
    CALL_BOUND, CALL_RETRY, POISON_REASON, QUEUE_NAME, RECEIVE_BATCH, RECEIVE_WAIT,
    REQUEST_TIMEOUT, connect, pause, record_error,
};
use crate::group_workload::{LOCAL_DEADLINE, error_kind};
use crate::history::Recorder;
use crate::history::queue::{
    MessageKind, QueueDeliveryRec, QueueSettle, SettleKind, SettleOutcome, parse_queue_payload,
};
use crate::security::ClientSecurity;

/// A worker's consumer: no prefetch (a `receive` leases only what it returns, during
/// the call), the queue's own visibility timeout.
fn consumer_config() -> QueueConsumerConfig {
    QueueConsumerConfig {
        prefetch: 0,
        receive_batch: RECEIVE_BATCH as u32,
        wait: RECEIVE_WAIT,
        request_timeout: REQUEST_TIMEOUT,
        retry: CALL_RETRY,
        ..QueueConsumerConfig::default()
    }
}

/// What a worker does with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Ack,
    Nack,
    /// Leave it: the lease runs out and it comes back.
    Abandon,
}

/// Poison is nacked; a crash is abandoned on its first delivery; the rest (foreign
/// values included) is acked.
pub(super) fn action(kind: Option<MessageKind>, delivery_count: u32) -> Action {
    match kind {
        Some(MessageKind::Poison) => Action::Nack,
        Some(MessageKind::Crash) if delivery_count <= 1 => Action::Abandon,
        _ => Action::Ack,
    }
}

/// One worker until `stop`, then `close`.
pub(super) async fn worker(
    index: u32,
    seeds: Vec<String>,
    security: ClientSecurity,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    let clock = recorder.clock();
    let run_id = recorder.run_id();
    let Some(client) = connect(&seeds, &security, &recorder, index, &mut stop).await else {
        return;
    };
    let consumer = match QueueConsumer::with_config(
        client,
        QUEUE_NAME,
        &format!("worker-{index}"),
        consumer_config(),
    ) {
        Ok(c) => c,
        Err(e) => {
            record_error(&recorder, index, "consumer", &error_kind(&e));
            return;
        }
    };
    while !*stop.borrow() {
        let invoke_us = clock.now_us();
        let got =
            tokio::time::timeout(CALL_BOUND, consumer.receive(RECEIVE_BATCH, RECEIVE_WAIT)).await;
        let at_us = clock.now_us();
        let deliveries = match got {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                record_error(&recorder, index, "receive", &error_kind(&e));
                if pause(&mut stop, std::time::Duration::from_millis(200)).await {
                    break;
                }
                continue;
            }
            Err(_) => {
                record_error(&recorder, index, "receive", LOCAL_DEADLINE);
                continue;
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        recorder.queue(|q| {
            q.deliveries
                .extend(deliveries.iter().map(|d| QueueDeliveryRec {
                    worker: index,
                    partition: d.partition,
                    offset: d.offset,
                    delivery_count: d.delivery_count,
                    receipt: d.receipt.to_string(),
                    value: String::from_utf8_lossy(&d.value).into_owned(),
                    invoke_us,
                    at_us,
                }))
        });
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        for d in &deliveries {
            let value = String::from_utf8_lossy(&d.value);
            let kind = parse_queue_payload(&run_id, &value).map(|(_, k)| k);
            match action(kind, d.delivery_count) {
                Action::Ack => acks.push(d),
                Action::Nack => nacks.push(d),
                Action::Abandon => {}
            }
        }
        settle(&consumer, &recorder, index, SettleKind::Ack, &acks).await;
        settle(&consumer, &recorder, index, SettleKind::Nack, &nacks).await;
    }
    if tokio::time::timeout(CALL_BOUND, consumer.close())
        .await
        .is_err()
    {
        record_error(&recorder, index, "close", LOCAL_DEADLINE);
    }
}

/// Ack or nack (at once, reason [`POISON_REASON`]) `list` in one call; record each
/// receipt's outcome.
async fn settle(
    consumer: &QueueConsumer,
    recorder: &Recorder,
    worker: u32,
    kind: SettleKind,
    list: &[&QueueDelivery],
) {
    if list.is_empty() {
        return;
    }
    let clock = recorder.clock();
    let receipts: Vec<Receipt> = list.iter().map(|d| d.receipt).collect();
    let op = match kind {
        SettleKind::Ack => SettleOp::Ack,
        SettleKind::Nack => SettleOp::Nack {
            delay_ms: Some(0),
            reason: POISON_REASON.into(),
        },
    };
    let invoke_us = clock.now_us();
    let answer = tokio::time::timeout(CALL_BOUND, consumer.settle(&op, &receipts)).await;
    let complete_us = clock.now_us();
    let outcomes: Vec<(SettleOutcome, Option<String>)> = match answer {
        Ok(Ok(outcomes)) if outcomes.len() == receipts.len() => {
            outcomes.into_iter().map(|o| (outcome(o), None)).collect()
        }
        Ok(Ok(_)) => vec![(SettleOutcome::Error, Some("UnexpectedAnswer".into())); list.len()],
        Ok(Err(e)) => vec![(SettleOutcome::Error, Some(error_kind(&e))); list.len()],
        Err(_) => vec![(SettleOutcome::Error, Some(LOCAL_DEADLINE.into())); list.len()],
    };
    recorder.queue(|q| {
        q.settles.extend(
            list.iter()
                .zip(outcomes)
                .map(|(d, (outcome, error_kind))| QueueSettle {
                    worker,
                    kind,
                    receipt: d.receipt.to_string(),
                    partition: d.partition,
                    offset: d.offset,
                    delivery_count: d.delivery_count,
                    invoke_us,
                    complete_us,
                    outcome,
                    error_kind,
                }),
        )
    });
}

fn outcome(o: ReceiptOutcome) -> SettleOutcome {
    match o {
        ReceiptOutcome::Ok => SettleOutcome::Ok,
        ReceiptOutcome::LeaseLost => SettleOutcome::LeaseLost,
        ReceiptOutcome::AlreadyDone => SettleOutcome::AlreadyDone,
        ReceiptOutcome::Unknown => SettleOutcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_nack_poison_abandon_first_crashes_and_ack_the_rest() {
        assert_eq!(action(Some(MessageKind::Poison), 1), Action::Nack);
        assert_eq!(action(Some(MessageKind::Poison), 5), Action::Nack);
        assert_eq!(action(Some(MessageKind::Crash), 1), Action::Abandon);
        assert_eq!(action(Some(MessageKind::Crash), 2), Action::Ack);
        assert_eq!(action(Some(MessageKind::Normal), 1), Action::Ack);
        assert_eq!(action(None, 1), Action::Ack, "foreign values are acked");
    }

    #[test]
    fn the_consumer_config_is_valid_and_without_prefetch() {
        let c = consumer_config();
        assert_eq!(c.prefetch, 0);
        assert_eq!(c.visibility_timeout_ms, 0, "the queue's own");
    }
}
