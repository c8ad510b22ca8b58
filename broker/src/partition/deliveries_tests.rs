//! Unit tests of each delivery rule (the model-based property test: `model`).

use super::*;
use ReceiptOutcome as R;

/// The visibility timeout of the unit tests' receives.
const VIS: u64 = 1000;
const ACK: u8 = 0;
const NACK: u8 = 1;
const EXTEND: u8 = 2;
const TERM: u8 = 3;

fn limits() -> Limits {
    Limits {
        max_deliveries: 3,
        max_in_flight: 100,
        max_in_flight_per_consumer: 0,
        ordered_by_key: false,
        backoff_ms: vec![],
    }
}

fn lr(offset: u64, delivery: u32, lease: u64) -> LeaseRef {
    LeaseRef {
        offset,
        delivery,
        lease,
    }
}

fn settle_op(
    kind: u8,
    leases: &[LeaseRef],
    delay_ms: Option<u32>,
    vis: u32,
    lim: &Limits,
) -> QueueOp {
    let (leases, reason, limits) = (leases.to_vec(), "why".to_string(), lim.clone());
    match kind {
        ACK => QueueOp::Ack { leases },
        NACK => QueueOp::Nack {
            leases,
            delay_ms,
            reason,
            limits,
        },
        EXTEND => QueueOp::Extend {
            leases,
            visibility_ms: vis,
        },
        _ => QueueOp::Term { leases, reason },
    }
}

fn leased(consumer: &str, lease: u64, deadline_ms: u64, visibility_ms: u32) -> MsgState {
    let consumer = consumer.to_string();
    MsgState::Leased {
        consumer,
        lease,
        deadline_ms,
        visibility_ms,
    }
}

fn offs(ls: &[LeaseRef]) -> Vec<(u64, u32)> {
    ls.iter().map(|l| (l.offset, l.delivery)).collect()
}

/// One queue partition under test: its deliveries, its records' facts, the log's end
/// and start, the last log index and the leader's clock.
struct Q {
    d: Deliveries,
    facts: RecordFacts,
    end: u64,
    log_start: u64,
    index: u64,
    now: u64,
    lim: Limits,
}

impl Q {
    fn new(end: u64) -> Q {
        let (d, facts, lim) = (Deliveries::default(), RecordFacts::default(), limits());
        let (log_start, index, now) = (0, 0, 0);
        Q {
            d,
            facts,
            end,
            log_start,
            index,
            now,
            lim,
        }
    }

    fn op(&mut self, op: QueueOp) -> QueueAnswer {
        self.index += 1;
        let (end, index, now) = (self.end, self.index, self.now);
        self.d.apply(Some(&mut self.facts), end, index, now, &op)
    }

    fn recv_op(&self, consumer: &str, max: u32, visibility_ms: u32) -> QueueOp {
        let (consumer, limits, log_start) = (consumer.into(), self.lim.clone(), self.log_start);
        QueueOp::Receive {
            consumer,
            max,
            visibility_ms,
            limits,
            log_start,
        }
    }

    /// Receives as `consumer`: the receipts of what it leased.
    fn recv_as(&mut self, consumer: &str, max: u32) -> Vec<LeaseRef> {
        let index = self.index + 1;
        match self.op(self.recv_op(consumer, max, VIS as u32)) {
            QueueAnswer::Leased { lease, messages } if lease == index => {
                messages.iter().map(|(o, d)| lr(*o, *d, lease)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    fn recv(&mut self, max: u32) -> Vec<LeaseRef> {
        self.recv_as("a", max)
    }

    /// `would_receive`, checked against a receive applied to a copy.
    fn would(&self, consumer: &str) -> bool {
        let (end, now) = (self.end, self.now);
        let w = self
            .d
            .would_receive(Some(&self.facts), end, now, consumer, &self.lim);
        let (mut d, mut f) = (self.d.clone(), self.facts.clone());
        d.apply(
            Some(&mut f),
            end,
            self.index + 1,
            now,
            &self.recv_op(consumer, 1, 1),
        );
        assert_eq!(w, d != self.d, "would_receive({consumer}) is not a receive");
        w
    }

    fn settle(&mut self, kind: u8, leases: &[LeaseRef], delay: Option<u32>, vis: u32) -> Vec<R> {
        match self.op(settle_op(kind, leases, delay, vis, &self.lim)) {
            QueueAnswer::Settled(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn ack(&mut self, leases: &[LeaseRef]) -> Vec<R> {
        self.settle(ACK, leases, None, 0)
    }

    fn nack(&mut self, leases: &[LeaseRef], delay: Option<u32>) -> Vec<R> {
        self.settle(NACK, leases, delay, 0)
    }

    fn term(&mut self, leases: &[LeaseRef]) -> Vec<R> {
        self.settle(TERM, leases, None, 0)
    }

    fn extend(&mut self, leases: &[LeaseRef], vis: u32) -> Vec<R> {
        self.settle(EXTEND, leases, None, vis)
    }

    fn count(&mut self, op: QueueOp) -> u64 {
        match self.op(op) {
            QueueAnswer::Count(n) => n,
            other => panic!("{other:?}"),
        }
    }

    fn archive(&mut self, offsets: &[u64]) -> u64 {
        let offsets = offsets.to_vec();
        self.count(QueueOp::Archive { offsets })
    }

    fn state(&self, offset: u64) -> Option<MsgState> {
        self.d.msg(offset).map(|m| m.state.clone())
    }

    fn stats(&self) -> Stats {
        self.d
            .stats(Some(&self.facts), self.end, self.now, u64::MAX)
    }
}

#[test]
fn receive_leases_in_offset_order_up_to_max() {
    let mut q = Q::new(5);
    assert_eq!(offs(&q.recv(2)), vec![(0, 1), (1, 1)]);
    assert_eq!(q.recv(0), vec![]);
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(2, 1), (3, 1), (4, 1)]);
    assert!(!q.would("c"));
    assert_eq!(q.recv(10), vec![]);
    assert_eq!(q.d.leased(), 5);
    assert_eq!(q.state(0), Some(leased("a", 1, VIS, VIS as u32)));
    q.end = 7;
    assert!(q.would("c"));
    assert_eq!(offs(&q.recv_as("c", 10)), vec![(5, 1), (6, 1)]);
    assert_eq!(q.d.consumers.values().sum::<u32>(), 7);
}

#[test]
fn in_flight_bounds_hold() {
    let mut q = Q::new(10);
    q.lim.max_in_flight = 4;
    q.lim.max_in_flight_per_consumer = 3;
    let a = q.recv_as("a", 10);
    assert_eq!(offs(&a), vec![(0, 1), (1, 1), (2, 1)]);
    assert!(!q.would("a"));
    assert_eq!(q.recv_as("a", 10), vec![]);
    assert!(q.would("b"));
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(3, 1)]);
    assert!(!q.would("c"));
    assert_eq!(q.recv_as("c", 10), vec![]);
    // An ack frees room for one more, in the partition and for its holder.
    assert_eq!(q.ack(&a[..1]), vec![R::Ok]);
    assert!(q.would("a"));
    assert_eq!(offs(&q.recv_as("c", 10)), vec![(4, 1)]);
    assert_eq!((q.d.consumers.get("a"), q.d.leased()), (Some(&2), 4));
}

#[test]
fn ack_ends_a_message_and_the_floor_passes_the_acked_prefix() {
    let mut q = Q::new(4);
    let r = q.recv(4);
    assert_eq!(q.ack(&[r[1], r[2]]), vec![R::Ok, R::Ok]);
    assert_eq!(
        (q.d.floor, q.d.msgs.len(), q.state(1)),
        (0, 4, Some(MsgState::Done))
    );
    assert_eq!(q.ack(&r[2..3]), vec![R::AlreadyDone]);
    assert_eq!(q.ack(&r[..1]), vec![R::Ok]);
    assert_eq!((q.d.floor, q.d.msgs.len(), q.d.leased()), (3, 1, 1));
    // Below the floor: already done, whatever the command.
    assert_eq!(q.ack(&r[..1]), vec![R::AlreadyDone]);
    assert_eq!(q.nack(&r[..1], None), vec![R::AlreadyDone]);
    assert_eq!(q.term(&r[..1]), vec![R::AlreadyDone]);
    assert_eq!(q.extend(&r[..1], 9), vec![R::AlreadyDone]);
    // Past the end: unknown. One outcome per receipt, in order.
    let mixed = [r[3], r[3], lr(4, 1, r[0].lease), lr(u64::MAX, 1, 1)];
    let want = vec![R::Ok, R::AlreadyDone, R::Unknown, R::Unknown];
    assert_eq!(q.ack(&mixed), want);
    assert_eq!((q.d.floor, q.d.counters.acked), (4, 4));
    assert!(q.d.msgs.is_empty() && q.d.consumers.is_empty());
    // Acked messages never come back.
    q.now = 10 * VIS;
    assert!(!q.would("a"));
    assert_eq!(q.recv(10), vec![]);
}

#[test]
fn a_stale_receipt_is_lease_lost_and_changes_nothing() {
    let mut q = Q::new(2);
    let r = q.recv(2);
    let before = q.d.clone();
    for l in [lr(0, 1, r[0].lease + 7), lr(0, 2, r[0].lease)] {
        assert_eq!(q.ack(&[l]), vec![R::LeaseLost]);
        assert_eq!(q.nack(&[l], None), vec![R::LeaseLost]);
        assert_eq!(q.term(&[l]), vec![R::LeaseLost]);
        assert_eq!(q.extend(&[l], 5), vec![R::LeaseLost]);
    }
    assert_eq!(q.d, before);
    // The lease expires; another receive takes the message with the next delivery.
    q.now = VIS - 1;
    assert!(!q.would("b"));
    q.now = VIS;
    assert!(q.would("b"));
    let again = q.recv_as("b", 1);
    assert_eq!(offs(&again), vec![(0, 2)]);
    assert_eq!(q.d.counters.redelivered, 1);
    assert_eq!(
        q.d.consumers,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1)])
    );
    let before = q.d.clone();
    assert_eq!(q.ack(&r[..1]), vec![R::LeaseLost]);
    assert_eq!(q.d, before);
    assert_eq!(q.ack(&again), vec![R::Ok]);
    // An expired lease nobody took again is still its holder's.
    assert_eq!(q.ack(&r[1..]), vec![R::Ok]);
    // A message never delivered has no lease.
    q.end = 3;
    assert_eq!(q.ack(&[lr(2, 1, 1)]), vec![R::LeaseLost]);
}

#[test]
fn nack_with_a_delay_waits_until_due() {
    let mut q = Q::new(2);
    let r = q.recv(1);
    q.now = 100;
    assert_eq!(q.nack(&r, Some(500)), vec![R::Ok]);
    assert_eq!(q.state(0), Some(MsgState::Waiting { at_ms: 600 }));
    assert_eq!(q.d.leased(), 0);
    assert_eq!(q.ack(&r), vec![R::LeaseLost]);
    q.now = 599;
    assert_eq!(offs(&q.recv(5)), vec![(1, 1)]);
    assert!(!q.would("a"));
    assert_eq!(q.stats().delayed, 1);
    q.now = 600;
    assert!(q.would("a"));
    assert_eq!(offs(&q.recv(5)), vec![(0, 2)]);
    assert_eq!(q.d.msg(0).map(|m| m.reason.as_str()), Some("why"));
}

#[test]
fn nack_without_a_delay_follows_the_backoff() {
    let mut q = Q::new(1);
    q.lim.max_deliveries = 10;
    q.lim.backoff_ms = vec![10, 20, 40];
    let mut waits = Vec::new();
    for delivery in 1..=5 {
        let r = q.recv(1);
        assert_eq!(offs(&r), vec![(0, delivery)]);
        assert_eq!(q.nack(&r, None), vec![R::Ok]);
        let Some(MsgState::Waiting { at_ms }) = q.state(0) else {
            panic!("{:?}", q.state(0));
        };
        waits.push(at_ms - q.now);
        q.now = at_ms - 1;
        assert_eq!(q.recv(1), vec![]);
        q.now = at_ms;
    }
    assert_eq!(waits, vec![10, 20, 40, 40, 40]);
    // An explicit delay wins; no steps: at once.
    let r = q.recv(1);
    q.nack(&r, Some(3));
    assert_eq!(q.state(0), Some(MsgState::Waiting { at_ms: q.now + 3 }));
    q.now += 3;
    let r = q.recv(1);
    q.lim.backoff_ms.clear();
    q.nack(&r, None);
    assert_eq!(offs(&q.recv(1)), vec![(0, 8)]);
    let steps: Vec<u32> = (0..=5).map(|d| backoff_step(&[1, 2, 3], d)).collect();
    assert_eq!(steps, vec![1, 1, 2, 3, 3, 3]);
    assert_eq!((backoff_step(&[], 5), backoff_step(&[7], u32::MAX)), (0, 7));
}

/// nats-server #4956: a nack after the last allowed delivery must not keep the message
/// alive.
#[test]
fn nack_at_max_deliveries_kills() {
    let mut q = Q::new(1);
    for delivery in 1..=2 {
        let r = q.recv(1);
        assert_eq!(offs(&r), vec![(0, delivery)]);
        assert_eq!(q.nack(&r, Some(0)), vec![R::Ok]);
    }
    let last = q.recv(1);
    assert_eq!(offs(&last), vec![(0, 3)]);
    assert_eq!(q.nack(&last, Some(0)), vec![R::Ok]);
    assert_eq!(q.state(0), Some(MsgState::Dying));
    assert_eq!(q.d.dying(10), vec![(0, 3, "why".to_string())]);
    q.now += 10 * VIS;
    assert!(!q.would("a"));
    assert_eq!(q.recv(1), vec![]);
    let before = q.d.clone();
    assert_eq!(q.nack(&last, Some(0)), vec![R::AlreadyDone]);
    assert_eq!(q.ack(&last), vec![R::AlreadyDone]);
    assert_eq!(q.d, before);
    assert_eq!(q.stats().dying, 1);
}

#[test]
fn a_lowered_limit_kills_due_messages() {
    let mut q = Q::new(2);
    let r = q.recv(1);
    q.nack(&r, Some(10));
    // The queue's limit went down to 1: the nacked message dies when due.
    q.lim.max_deliveries = 1;
    let r = q.recv(5);
    assert_eq!(offs(&r), vec![(1, 1)]);
    q.now = 10;
    assert!(q.would("a"));
    assert_eq!(q.recv(5), vec![]);
    assert_eq!(q.d.dying(10), vec![(0, 1, "why".to_string())]);
    // A nack under the lowered limit kills too.
    assert_eq!(q.nack(&r, None), vec![R::Ok]);
    assert_eq!(q.state(1), Some(MsgState::Dying));
}

#[test]
fn expiry_of_the_last_delivery_kills_on_the_next_receive_or_expire() {
    let mut q = Q::new(4);
    q.lim.max_deliveries = 1;
    let r = q.recv(1);
    q.now = VIS;
    assert!(q.d.expired_at_max(q.now, 1));
    assert!(!q.d.expired_at_max(q.now - 1, 1) && !q.d.expired_at_max(q.now, 2));
    assert!(q.would("b"));
    let b = q.recv_as("b", 2);
    assert_eq!(offs(&b), vec![(1, 1), (2, 1)]);
    assert_eq!(q.state(0), Some(MsgState::Dying));
    assert_eq!(q.d.dying(10), vec![(0, 1, "max deliveries reached".into())]);
    assert_eq!(q.d.consumers, BTreeMap::from([("b".to_string(), 2)]));
    assert_eq!(q.ack(&r), vec![R::AlreadyDone]);
    // The expire command kills them without a receive.
    q.now = 2 * VIS - 1;
    assert_eq!(q.count(QueueOp::Expire { max_deliveries: 1 }), 0);
    q.now += 1;
    assert_eq!(q.count(QueueOp::Expire { max_deliveries: 2 }), 0);
    assert_eq!(q.count(QueueOp::Expire { max_deliveries: 1 }), 2);
    let why = "lease expired at max deliveries".to_string();
    assert_eq!(q.d.dying(2)[1..], [(1, 1, why.clone())]);
    assert_eq!(q.d.dying(10)[2], (2, 1, why));
    assert_eq!((q.d.leased(), q.d.consumers.len()), (0, 0));
    assert!(!q.d.expired_at_max(q.now, 1));
}

#[test]
fn term_kills_at_once_and_archive_moves_only_dying_to_done() {
    let mut q = Q::new(4);
    let r = q.recv(3);
    assert_eq!(q.term(&r[..1]), vec![R::Ok]);
    assert_eq!((q.state(0), q.d.leased()), (Some(MsgState::Dying), 2));
    assert_eq!(q.term(&r[..1]), vec![R::AlreadyDone]);
    let before = q.d.clone();
    // Leased, never delivered, past the end.
    assert_eq!(q.archive(&[1, 3, 9]), 0);
    assert_eq!(q.d, before);
    q.nack(&r[1..2], Some(100));
    q.ack(&r[2..3]);
    assert_eq!(q.archive(&[1, 2]), 0);
    assert_eq!(q.d.counters.dead, 0);
    assert_eq!(q.archive(&[0, 0]), 1);
    assert_eq!((q.d.counters.dead, q.d.floor), (1, 1));
    assert_eq!(q.d.dying(10), vec![]);
    assert_eq!(q.archive(&[0]), 0);
    assert_eq!(q.d.counters.dead, 1);
}

#[test]
fn extend_pushes_the_deadline() {
    let mut q = Q::new(1);
    let r = q.recv(1);
    q.now = 900;
    assert_eq!(q.extend(&r, 5000), vec![R::Ok]);
    assert_eq!(q.state(0), Some(leased("a", r[0].lease, 5900, 5000)));
    q.now = 5899;
    assert!(!q.would("b"));
    assert_eq!(q.recv_as("b", 1), vec![]);
    q.now = 5900;
    let r2 = q.recv_as("b", 1);
    assert_eq!(offs(&r2), vec![(0, 2)]);
    let before = q.d.clone();
    assert_eq!(q.extend(&r, 10_000), vec![R::LeaseLost]);
    assert_eq!(q.d, before);
    // An expired lease nobody took again can still be extended.
    q.now += 2 * VIS;
    assert_eq!(q.extend(&r2, 100), vec![R::Ok]);
    assert!(!q.would("a"));
}

#[test]
fn takeover_restarts_every_lease() {
    let mut q = Q::new(4);
    let a = q.recv(1);
    q.now = 500;
    let b = q.recv(2);
    q.nack(&b[1..], Some(50));
    assert_eq!(q.extend(&a, 200), vec![R::Ok]);
    // The new leader's clock is behind the old one's.
    q.now = 400;
    assert_eq!(q.count(QueueOp::Takeover), 2);
    let deadlines = |q: &Q| {
        [0, 1].map(|o| match q.state(o) {
            Some(MsgState::Leased { deadline_ms, .. }) => deadline_ms,
            other => panic!("{other:?}"),
        })
    };
    // max(500 + 200, 400 + 200) and max(500 + 1000, 400 + 1000).
    assert_eq!(deadlines(&q), [700, 1500]);
    q.now = 1000;
    assert_eq!(q.count(QueueOp::Takeover), 2);
    assert_eq!(deadlines(&q), [1200, 2000]);
    assert_eq!(q.state(2), Some(MsgState::Waiting { at_ms: 550 }));
    assert_eq!(q.d.msg(3), None);
}

#[test]
fn purge_drops_everything_not_done() {
    let mut q = Q::new(6);
    q.facts.not_before.insert(5, 1 << 40);
    let r = q.recv(4);
    q.ack(&r[1..2]);
    q.term(&r[2..3]);
    q.nack(&r[3..4], Some(1000));
    // 0 leased, 1 done, 2 dying, 3 waiting, 4 available, 5 delayed.
    assert_eq!(q.count(QueueOp::Purge), 5);
    assert_eq!((q.d.floor, q.d.leased(), q.d.counters.purged), (6, 0, 5));
    assert!(q.d.msgs.is_empty() && q.d.consumers.is_empty());
    assert!(q.facts.not_before.is_empty());
    assert_eq!(q.ack(&r[..1]), vec![R::AlreadyDone]);
    assert_eq!((q.stats(), q.count(QueueOp::Purge)), (Stats::default(), 0));
    q.end = 8;
    assert_eq!(offs(&q.recv(10)), vec![(6, 1), (7, 1)]);
}

#[test]
fn receive_skips_what_retention_removed() {
    let mut q = Q::new(6);
    let r = q.recv(2);
    q.log_start = 3;
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(3, 1), (4, 1), (5, 1)]);
    assert_eq!((q.d.floor, q.d.leased()), (3, 3));
    assert_eq!(q.d.consumers, BTreeMap::from([("b".to_string(), 3)]));
    assert_eq!(q.ack(&r), vec![R::AlreadyDone, R::AlreadyDone]);
    // A log start below the floor changes nothing.
    q.log_start = 1;
    let before = q.d.clone();
    assert_eq!(q.recv(10), vec![]);
    assert_eq!(q.d, before);
}

fn ordered(keys: &[u64]) -> Q {
    let mut q = Q::new(keys.len() as u64);
    q.lim.ordered_by_key = true;
    q.facts.keys = (0u64..).zip(keys.iter().copied()).collect();
    q
}

#[test]
fn ordered_by_key_leases_one_message_per_key_in_offset_order() {
    let mut q = ordered(&[1, 1, 2, 1, 2, 3]);
    let r = q.recv(10);
    assert_eq!(offs(&r), vec![(0, 1), (2, 1), (5, 1)]);
    assert!(!q.would("b"));
    assert_eq!(q.recv_as("b", 10), vec![]);
    q.ack(&r[..1]);
    let b = q.recv_as("b", 10);
    assert_eq!(offs(&b), vec![(1, 1)]);
    q.ack(&r[1..2]);
    q.ack(&b);
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(3, 1), (4, 1)]);
    // An unordered queue ignores the keys.
    let mut q = ordered(&[1, 1, 1]);
    q.lim.ordered_by_key = false;
    assert_eq!(q.recv(10).len(), 3);
}

#[test]
fn ordered_by_key_a_waiting_expired_or_dying_message_blocks_its_key() {
    let mut q = ordered(&[7, 7, 8]);
    q.facts.keys.remove(&2);
    let r = q.recv(10);
    assert_eq!(offs(&r), vec![(0, 1), (2, 1)]);
    q.ack(&r[1..]);
    q.nack(&r[..1], Some(500));
    assert_eq!(q.recv(10), vec![]);
    q.now = 500;
    assert_eq!(offs(&q.recv(10)), vec![(0, 2)]);
    // Its lease expires: the next receive takes offset 0 again, not 1.
    q.now += VIS;
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(0, 3)]);
    // Its last lease expires: it dies, and its key waits for the archive.
    q.now += VIS;
    assert!(q.would("a"));
    assert_eq!(q.recv(10), vec![]);
    assert_eq!(q.state(0), Some(MsgState::Dying));
    assert!(!q.would("a"));
    assert_eq!(q.archive(&[0]), 1);
    assert_eq!(offs(&q.recv(10)), vec![(1, 1)]);
}

#[test]
fn delayed_records_wait_for_their_time() {
    let mut q = Q::new(3);
    q.facts.not_before = BTreeMap::from([(0, 1000), (2, 500)]);
    let r = q.recv(10);
    assert_eq!(offs(&r), vec![(1, 1)]);
    q.ack(&r);
    assert!(!q.would("a"));
    let s = q.stats();
    assert_eq!((s.available, s.in_flight, s.delayed), (0, 0, 2));
    q.now = 500;
    let r = q.recv(10);
    assert_eq!(offs(&r), vec![(2, 1)]);
    q.ack(&r);
    q.now = 999;
    assert!(!q.would("a"));
    q.now = 1000;
    let r = q.recv(10);
    assert_eq!(offs(&r), vec![(0, 1)]);
    // Once delivered, its own delay no longer matters.
    q.nack(&r, Some(0));
    assert_eq!(offs(&q.recv(1)), vec![(0, 2)]);
    // Ordered: a delayed record holds back its key.
    let mut q = ordered(&[4, 4, 5]);
    q.facts.not_before.insert(0, 100);
    assert_eq!(offs(&q.recv(10)), vec![(2, 1)]);
    q.now = 100;
    assert_eq!(offs(&q.recv(10)), vec![(0, 1)]);
}

/// At `max_in_flight`, an expired lease must still be taken back by a receive: else a
/// queue whose consumers died holding `max_in_flight` leases delivers nothing, ever
/// (and `would_receive` says yes to every poll, each a log entry that leases nothing).
#[test]
fn at_max_in_flight_expired_leases_are_taken_back() {
    let mut q = Q::new(3);
    q.lim.max_in_flight = 2;
    q.recv(10);
    q.now = VIS;
    assert!(q.would("b"));
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(0, 2), (1, 2)]);
    assert_eq!(q.d.leased(), 2);
    assert!(!q.would("c"));
}

/// The same at the per-consumer bound, for the consumer's own expired leases (not
/// another's: that would put it over its bound); and a receive that kills its own last
/// lease has room for another.
#[test]
fn at_the_consumer_bound_its_own_expired_leases_are_taken_back() {
    let mut q = Q::new(3);
    q.lim.max_in_flight_per_consumer = 1;
    assert_eq!(offs(&q.recv(10)), vec![(0, 1)]);
    q.now = VIS;
    assert!(q.would("a"));
    assert_eq!(offs(&q.recv(10)), vec![(0, 2)]);
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(1, 1)]);
    q.now = 2 * VIS;
    assert!(q.would("b"));
    assert_eq!(offs(&q.recv_as("b", 10)), vec![(1, 2)]);
    assert_eq!(offs(&q.recv(10)), vec![(0, 3)]);
    assert_eq!(q.d.leased(), 2);
    // Its own last lease dies: room for b's expired one.
    q.now = 3 * VIS;
    assert_eq!(offs(&q.recv(10)), vec![(1, 3)]);
    assert_eq!(q.state(0), Some(MsgState::Dying));
}

#[test]
fn stats_count_each_state() {
    let mut q = Q::new(8);
    q.facts.not_before.insert(7, 10_000);
    q.facts.times = BTreeMap::from([(0, 100), (4, 300)]);
    q.now = 1000;
    let r = q.recv(4);
    q.ack(&r[..1]);
    q.term(&r[1..2]);
    q.nack(&r[2..3], Some(500));
    // 0 done, 1 dying, 2 waiting, 3 leased, 4-6 available, 7 delayed.
    let s = q.stats();
    assert_eq!((s.available, s.in_flight, s.delayed, s.dying), (3, 1, 2, 1));
    assert_eq!(s.oldest_age_ms, 900);
    q.archive(&[1]);
    assert_eq!(q.d.floor, 2);
    // A bounded scan counts what lies past it as available.
    let s = q.d.stats(Some(&q.facts), q.end, q.now, 2);
    assert_eq!((s.available, s.in_flight, s.delayed, s.dying), (4, 1, 1, 0));
    q.now = 1500;
    let s = q.stats();
    assert_eq!((s.available, s.delayed, s.oldest_age_ms), (4, 1, 1400));
    let s = q.d.stats(None, q.end, q.now, u64::MAX);
    assert_eq!((s.available, s.delayed, s.oldest_age_ms), (5, 0, 0));
}

#[path = "deliveries_model.rs"]
mod model;
