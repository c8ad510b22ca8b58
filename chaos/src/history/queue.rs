//! What the queue workload records ([`crate::queue_workload`]): every send (invoke →
//! ok / fail / unknown), every delivery a worker's `receive` returned, every ack and
//! nack with its per-receipt outcome, the workers' receive errors, the dead-letter
//! queue read after the drain and the queue's final counts. Plain data, like the rest
//! of the history; [`crate::queue_check`] judges it.

use serde::{Deserialize, Serialize};

use super::{Outcome, Recorder};

/// What a worker does with a message, from the marker in its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Processed and acked.
    Normal,
    /// Always nacked: must end in the dead-letter queue after `max_deliveries`.
    Poison,
    /// Left unsettled on its first delivery (a worker "crashing" mid-processing): the
    /// lease runs out and the message comes back; acked on a later delivery.
    Crash,
}

impl MessageKind {
    /// The marker appended to the value (`""` for a normal message).
    fn marker(self) -> &'static str {
        match self {
            MessageKind::Normal => "",
            MessageKind::Poison => ":poison",
            MessageKind::Crash => ":crash",
        }
    }
}

/// The kind of message `seq` of a producer: one in `every` is poison, one in `every`
/// (another residue) a crash; `every` = 0: all normal.
pub fn message_kind(seq: u64, every: u64) -> MessageKind {
    if every == 0 {
        return MessageKind::Normal;
    }
    match seq % every {
        r if r == every / 3 => MessageKind::Poison,
        r if r == 2 * every / 3 => MessageKind::Crash,
        _ => MessageKind::Normal,
    }
}

/// The value of a queue message: `{run}:q{producer}:{seq}` plus its kind's marker.
pub fn queue_payload(run_id: &str, producer: u32, seq: u64, kind: MessageKind) -> String {
    format!("{run_id}:q{producer}:{seq}{}", kind.marker())
}

/// The id of a queue message of this run (the producer and its sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// Producer index.
    pub producer: u32,
    /// The producer's sequence number.
    pub seq: u64,
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "q{}:{}", self.producer, self.seq)
    }
}

/// The id and kind of a queue payload of run `run_id`; `None` for anything else.
pub fn parse_queue_payload(run_id: &str, value: &str) -> Option<(MessageId, MessageKind)> {
    let mut parts = value.split(':');
    let (run, producer, seq) = (parts.next()?, parts.next()?, parts.next()?);
    let kind = match parts.next() {
        None => MessageKind::Normal,
        Some("poison") => MessageKind::Poison,
        Some("crash") => MessageKind::Crash,
        Some(_) => return None,
    };
    if parts.next().is_some() || run != run_id {
        return None;
    }
    let id = MessageId {
        producer: producer.strip_prefix('q')?.parse().ok()?,
        seq: seq.parse().ok()?,
    };
    Some((id, kind))
}

/// One message sent to the queue, from invoke to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSend {
    /// Producer index.
    pub producer: u32,
    /// The producer's sequence number (gap-free per producer).
    pub seq: u64,
    /// What the workers do with it.
    pub kind: MessageKind,
    /// When `submit` was called.
    pub invoke_us: u64,
    /// When the outcome was known.
    pub complete_us: Option<u64>,
    /// `Ok` (committed, `acks=all`), `Fail` (refused before sending), `Unknown`.
    pub outcome: Outcome,
    /// Where it was stored (`Ok` only).
    pub partition: Option<u32>,
    /// Its offset (`Ok` only).
    pub offset: Option<u64>,
    /// The error text (`Fail` / `Unknown`).
    pub error: Option<String>,
}

impl QueueSend {
    /// The message's id.
    pub fn id(&self) -> MessageId {
        MessageId {
            producer: self.producer,
            seq: self.seq,
        }
    }
}

/// One message a worker's `receive` returned (one delivery, one lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDeliveryRec {
    /// Worker index.
    pub worker: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Delivery count the broker gave (1 on the first).
    pub delivery_count: u32,
    /// The receipt (`GROUP-PARTITION-OFFSET-DELIVERY-LEASE`).
    pub receipt: String,
    /// The value, as text.
    pub value: String,
    /// When the `receive` that returned it was called (without prefetch, the lease
    /// was granted after this).
    pub invoke_us: u64,
    /// When that `receive` returned.
    pub at_us: u64,
}

/// Ack or nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettleKind {
    /// Done for good.
    Ack,
    /// Deliver again (dead-letter when out of deliveries).
    Nack,
}

/// How one receipt's settle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleOutcome {
    /// Applied.
    Ok,
    /// The receipt's lease is no longer the message's: nothing changed.
    LeaseLost,
    /// The message was done already (acked or dead-lettered). For an ack whose first
    /// attempt was applied and whose answer was lost, the client's retry answers this.
    AlreadyDone,
    /// No such message: nothing changed.
    Unknown,
    /// The call failed (timeout, no leader, ...): may or may not have been applied.
    Error,
}

/// One receipt of one ack or nack call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettle {
    /// Worker index.
    pub worker: u32,
    /// Ack or nack.
    pub kind: SettleKind,
    /// The receipt settled.
    pub receipt: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The delivery count of the delivery settled.
    pub delivery_count: u32,
    /// When the call was made.
    pub invoke_us: u64,
    /// When it was answered or failed.
    pub complete_us: u64,
    /// The outcome.
    pub outcome: SettleOutcome,
    /// The error kind (`Error` only: `NotLeader`, `Timeout`, `LocalDeadline`, ...).
    pub error_kind: Option<String>,
}

/// One record of the dead-letter queue, read after the workers stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlqRecord {
    /// DLQ partition.
    pub partition: u32,
    /// DLQ offset.
    pub offset: u64,
    /// The value (the source message's), as text.
    pub value: String,
    /// `neo-dlq-source`.
    pub source: Option<String>,
    /// `neo-dlq-partition`.
    pub source_partition: Option<u32>,
    /// `neo-dlq-offset`.
    pub source_offset: Option<u64>,
    /// `neo-dlq-deliveries`.
    pub deliveries: Option<u32>,
    /// `neo-dlq-reason`.
    pub reason: Option<String>,
}

/// One partition's counts from `describe_queue` after the workers stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueFinalStats {
    /// Partition.
    pub partition: u32,
    /// Receivable.
    pub available: u64,
    /// Leased.
    pub in_flight: u64,
    /// Waiting for a delay.
    pub delayed: u64,
    /// Dead-lettered so far.
    pub dead_lettered: u64,
    /// Acked so far.
    pub acked: u64,
    /// Redeliveries so far.
    pub redelivered: u64,
    /// Every offset below is done.
    pub ack_floor: u64,
    /// The log end.
    pub end_offset: u64,
}

/// Everything the queue workload recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueHistory {
    /// The queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
    /// Its partitions.
    pub partitions: u32,
    /// Its `max_deliveries`.
    pub max_deliveries: u32,
    /// Its visibility timeout (lease length), milliseconds.
    pub visibility_timeout_ms: u32,
    /// Workers started.
    pub workers: u32,
    /// Every send.
    pub sends: Vec<QueueSend>,
    /// Every delivery returned to a worker.
    pub deliveries: Vec<QueueDeliveryRec>,
    /// Every ack and nack, per receipt.
    pub settles: Vec<QueueSettle>,
    /// Failed receives (and connects): (time, worker, `call:kind`).
    pub errors: Vec<(u64, u32, String)>,
    /// When the drain began (after the other workloads' checks) and ended (everything
    /// accounted for, or the deadline).
    pub drain_us: Option<(u64, u64)>,
    /// The dead-letter queue, read from its log start after the workers stopped.
    pub dlq_records: Vec<DlqRecord>,
    /// Why the DLQ read stopped early, if it did.
    pub dlq_error: Option<String>,
    /// `describe_queue` after the workers stopped (empty: it failed).
    pub final_stats: Vec<QueueFinalStats>,
}

impl Recorder {
    /// Start recording a queue workload.
    pub fn start_queue(&self, q: QueueHistory) {
        self.lock().queue = Some(q);
    }

    /// Run `f` on the queue history (created by [`Recorder::start_queue`]); `None`
    /// without a queue workload.
    pub fn queue<R>(&self, f: impl FnOnce(&mut QueueHistory) -> R) -> Option<R> {
        self.lock().queue.as_mut().map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_payloads_round_trip() {
        for kind in [MessageKind::Normal, MessageKind::Poison, MessageKind::Crash] {
            let v = queue_payload("r1", 2, 17, kind);
            let id = MessageId {
                producer: 2,
                seq: 17,
            };
            assert_eq!(parse_queue_payload("r1", &v), Some((id, kind)), "{v}");
            assert_eq!(parse_queue_payload("r2", &v), None);
        }
        assert_eq!(parse_queue_payload("r1", "r1:2:17"), None, "no q prefix");
        assert_eq!(parse_queue_payload("r1", "r1:q2:17:other"), None);
        assert_eq!(parse_queue_payload("r1", "r1:q2:17:poison:x"), None);
        assert_eq!(parse_queue_payload("r1", "r1:q2"), None);
    }

    #[test]
    fn kinds_are_spread_by_sequence() {
        let kinds: Vec<MessageKind> = (0..30).map(|s| message_kind(s, 30)).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(MessageKind::Poison), 1);
        assert_eq!(count(MessageKind::Crash), 1);
        assert_eq!(message_kind(10, 30), MessageKind::Poison);
        assert_eq!(message_kind(20, 30), MessageKind::Crash);
        assert!((0..100).all(|s| message_kind(s, 0) == MessageKind::Normal));
    }
}
