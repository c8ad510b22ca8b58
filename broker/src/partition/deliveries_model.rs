//! The model-based property test of the delivery rules: random operations applied to
//! the implementation and to a simple model, compared after every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Where one message is, in the model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    Available,
    /// Consumer, lease, deadline, visibility.
    Leased(usize, u64, u64, u32),
    Waiting(u64),
    Dying,
    Acked,
    Dead,
    /// Purged, or skipped as gone from the log.
    Dropped,
}

impl M {
    fn done(self) -> bool {
        matches!(self, M::Acked | M::Dead | M::Dropped)
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    st: M,
    deliveries: u32,
    key: Option<u64>,
    not_before: u64,
}

#[derive(Debug, Default)]
struct Model {
    slots: Vec<Slot>,
    redelivered: u64,
    purged: u64,
}

impl Model {
    fn count(&self, f: impl Fn(M) -> bool) -> u64 {
        self.slots.iter().filter(|s| f(s.st)).count() as u64
    }

    /// Moves each message `f` names to its new state: how many moved.
    fn each(&mut self, f: impl Fn(&Slot) -> Option<M>) -> u64 {
        let moved = self
            .slots
            .iter_mut()
            .filter_map(|s| f(s).map(|st| s.st = st));
        moved.count() as u64
    }

    fn receive(
        &mut self,
        c: usize,
        max: u32,
        vis: u32,
        lim: &Limits,
        now: u64,
        lease: u64,
    ) -> Vec<(u64, u32)> {
        let mut all = self.count(|m| matches!(m, M::Leased(..)));
        let mut mine = self.count(|m| matches!(m, M::Leased(h, ..) if h == c));
        let per = u64::from(lim.max_in_flight_per_consumer);
        let (mut blocked, mut out) = (BTreeSet::new(), Vec::new());
        for (o, s) in (0u64..).zip(&mut self.slots) {
            let key = s.key.filter(|_| lim.ordered_by_key);
            if out.len() >= max as usize {
                break;
            } else if s.st.done() || key.is_some_and(|k| blocked.contains(&k)) {
                continue;
            }
            let (due, holder) = match s.st {
                M::Available => (s.not_before <= now, None),
                M::Waiting(at) => (at <= now, None),
                M::Leased(h, _, deadline, _) => (deadline <= now, Some(h)),
                _ => (false, None),
            };
            let room = (holder.is_some() || all < u64::from(lim.max_in_flight))
                && (holder == Some(c) || per == 0 || mine < per);
            if due && s.deliveries >= lim.max_deliveries {
                // Killing a lease frees its room.
                all -= u64::from(holder.is_some());
                mine -= u64::from(holder == Some(c));
                s.st = M::Dying;
            } else if due && room {
                s.deliveries += 1;
                self.redelivered += u64::from(s.deliveries > 1);
                all += u64::from(holder.is_none());
                mine += u64::from(holder != Some(c));
                s.st = M::Leased(c, lease, now + u64::from(vis), vis);
                out.push((o, s.deliveries));
            }
            if let Some(k) = key {
                blocked.insert(k);
            }
        }
        out
    }

    fn settle(
        &mut self,
        kind: u8,
        l: &LeaseRef,
        now: u64,
        lim: &Limits,
        delay: Option<u32>,
        vis: u32,
    ) -> R {
        let Some(s) = self.slots.get_mut(l.offset as usize) else {
            return R::Unknown;
        };
        s.st = match s.st {
            m if m.done() || m == M::Dying => return R::AlreadyDone,
            M::Leased(c, lease, ..) if lease == l.lease && s.deliveries == l.delivery => match kind
            {
                ACK => M::Acked,
                NACK if s.deliveries >= lim.max_deliveries => M::Dying,
                NACK => {
                    let steps = &lim.backoff_ms;
                    let i = (s.deliveries as usize).min(steps.len());
                    let step = if i == 0 { 0 } else { steps[i - 1] };
                    M::Waiting(now + u64::from(delay.unwrap_or(step)))
                }
                EXTEND => M::Leased(c, lease, now + u64::from(vis), vis),
                _ => M::Dying,
            },
            _ => return R::LeaseLost,
        };
        R::Ok
    }

    /// The deliveries the implementation should hold.
    fn want(&self, end: u64) -> Deliveries {
        let floor = self.slots.iter().position(|s| !s.st.done());
        let mut d = Deliveries {
            floor: floor.map_or(end, |p| p as u64),
            ..Deliveries::default()
        };
        for (o, s) in (0u64..).zip(&self.slots).skip(d.floor as usize) {
            let state = match s.st {
                M::Available | M::Dropped => continue,
                M::Leased(c, lease, deadline, vis) => {
                    *d.consumers.entry(NAMES[c].into()).or_default() += 1;
                    d.leased += 1;
                    leased(NAMES[c], lease, deadline, vis)
                }
                M::Waiting(at_ms) => MsgState::Waiting { at_ms },
                M::Dying => MsgState::Dying,
                M::Acked | M::Dead => MsgState::Done,
            };
            let (deliveries, reason) = (s.deliveries, String::new());
            d.msgs.insert(
                o,
                Msg {
                    deliveries,
                    state,
                    reason,
                },
            );
        }
        d.counters = Counters {
            acked: self.count(|s| s == M::Acked),
            dead: self.count(|s| s == M::Dead),
            redelivered: self.redelivered,
            purged: self.purged,
        };
        d
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Consumer, max, visibility.
    Receive(usize, u32, u32),
    /// Kind, (receipt pick, how to spoil it), nack delay, extend visibility.
    Settle(u8, Vec<(usize, u8)>, Option<u32>, u32),
    Advance(u64),
    Expire,
    /// How many dying to archive, plus one arbitrary offset.
    Archive(usize, u64),
    Takeover,
    /// Per new record: key, delay.
    Append(Vec<(Option<u64>, Option<u64>)>),
    Snapshot,
    Purge,
    /// Moves the log start up by this much.
    Retain(u64),
}

fn arb_step() -> impl Strategy<Value = Step> {
    use prop::{collection::vec, option::of};
    let vis = prop_oneof![Just(0u32), Just(30), Just(100)];
    let picks = vec((any::<usize>(), 0u8..6), 1..3);
    prop_oneof![
        8 => (0usize..3, 0u32..4, vis).prop_map(|(c, m, v)| Step::Receive(c, m, v)),
        8 => (0u8..4, picks, of(0u32..80), 0u32..150).prop_map(|(k, p, d, v)| Step::Settle(k, p, d, v)),
        5 => (0u64..120).prop_map(Step::Advance),
        1 => Just(Step::Expire),
        1 => (0usize..3, 0u64..30).prop_map(|(n, o)| Step::Archive(n, o)),
        1 => Just(Step::Takeover),
        4 => vec((of(0u64..3), of(0u64..100)), 1..4).prop_map(Step::Append),
        1 => Just(Step::Snapshot),
        1 => (0u64..20).prop_map(|p| if p == 0 { Step::Purge } else { Step::Advance(p) }),
        1 => (0u64..3).prop_map(Step::Retain),
    ]
}

fn arb_limits(ordered_by_key: bool) -> impl Strategy<Value = Limits> {
    let backoff = prop::collection::vec(0u32..60, 0..3);
    (1u32..4, 1u32..6, 0u32..3, backoff).prop_map(move |(md, all, per, backoff_ms)| Limits {
        max_deliveries: md,
        max_in_flight: all,
        max_in_flight_per_consumer: per,
        ordered_by_key,
        backoff_ms,
    })
}

/// Every invariant, and the implementation's state against the model's.
fn check(q: &Q, m: &Model) -> Result<(), TestCaseError> {
    let (d, lim, now) = (&q.d, &q.lim, q.now);
    for (o, s) in m.slots.iter().enumerate() {
        prop_assert!(s.deliveries <= lim.max_deliveries);
        prop_assert!(o as u64 >= d.floor || s.st.done(), "{} below the floor", o);
    }
    // The whole state, reasons aside (dying ones have one).
    let mut got = d.clone();
    for x in got.msgs.values_mut() {
        prop_assert!(x.state != MsgState::Dying || !x.reason.is_empty());
        x.reason.clear();
    }
    prop_assert_eq!(&got, &m.want(q.end));
    let keys = m.slots.iter().filter(|s| matches!(s.st, M::Leased(..)));
    let keys: Vec<u64> = keys
        .filter_map(|s| s.key.filter(|_| lim.ordered_by_key))
        .collect();
    prop_assert_eq!(
        keys.len(),
        keys.iter().collect::<BTreeSet<_>>().len(),
        "leased twice: a key"
    );
    let dying: Vec<u64> = d.dying(usize::MAX).iter().map(|(o, _, _)| *o).collect();
    prop_assert!(dying.iter().all(|o| m.slots[*o as usize].st == M::Dying));
    // Stats, and conservation: every message is in exactly one state.
    let delayed = m.slots.iter().filter(|s| match s.st {
        M::Available => s.not_before > now,
        M::Waiting(at) => at > now,
        _ => false,
    });
    let delayed = delayed.count() as u64;
    let s = q.stats();
    let want = Stats {
        available: m.count(|s| matches!(s, M::Available | M::Waiting(_))) - delayed,
        in_flight: m.count(|s| matches!(s, M::Leased(..))),
        delayed,
        dying: m.count(|s| s == M::Dying),
        oldest_age_ms: 0,
    };
    prop_assert_eq!(s, want);
    let (c, dropped) = (d.counters, m.count(|s| s == M::Dropped));
    let all = s.available + s.in_flight + s.delayed + s.dying + c.acked + c.dead + dropped;
    prop_assert_eq!(all, q.end);
    // `would_receive` and `expired_at_max` answer what the command would do.
    if q.log_start <= d.floor {
        NAMES.iter().for_each(|c| _ = q.would(c));
    }
    let (mut e, max_deliveries) = (d.clone(), lim.max_deliveries);
    let n = e.apply(
        None,
        q.end,
        q.index + 1,
        now,
        &QueueOp::Expire { max_deliveries },
    );
    prop_assert_eq!(
        d.expired_at_max(now, max_deliveries),
        n != QueueAnswer::Count(0)
    );
    Ok(())
}

/// Runs `steps` on the implementation and on the model, checking after each; then
/// replays the log on fresh state.
fn run_case(lim: Limits, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut q = Q::new(0);
    q.lim = lim.clone();
    let (mut m, mut all_facts) = (Model::default(), RecordFacts::default());
    let (mut log, mut answers, mut pool) = (Vec::new(), Vec::new(), Vec::<LeaseRef>::new());
    // From the implementation's answers alone: offsets acked, and leases per offset.
    let (mut acked, mut leases) = (BTreeSet::new(), BTreeMap::<u64, u32>::new());
    for step in steps {
        let (now, end, index) = (q.now, q.end, q.index + 1);
        let (op, want) = match step {
            Step::Receive(c, max, vis) => {
                for s in m.slots.iter_mut().take(q.log_start as usize) {
                    s.st = if s.st.done() { s.st } else { M::Dropped };
                }
                let messages = m.receive(c, max, vis, &lim, now, index);
                for (o, n) in &messages {
                    pool.push(lr(*o, *n, index));
                    // A key's messages go in offset order: every earlier one is done.
                    let key = m.slots[*o as usize].key.filter(|_| lim.ordered_by_key);
                    let mut earlier = m.slots[..*o as usize].iter().filter(|s| s.key == key);
                    prop_assert!(key.is_none() || earlier.all(|s| s.st.done()));
                }
                let op = q.recv_op(NAMES[c], max, vis);
                (
                    op,
                    QueueAnswer::Leased {
                        lease: index,
                        messages,
                    },
                )
            }
            Step::Settle(kind, picks, delay, vis) if !pool.is_empty() => {
                let spoil = |(i, how): &(usize, u8)| {
                    let l = pool[i % pool.len()];
                    match how {
                        3 => lr(l.offset, l.delivery + 1, l.lease),
                        4 => lr(l.offset, l.delivery, l.lease + 1),
                        5 => lr(l.offset + end, l.delivery, l.lease),
                        _ => l,
                    }
                };
                let leases: Vec<LeaseRef> = picks.iter().map(spoil).collect();
                let want = leases
                    .iter()
                    .map(|l| m.settle(kind, l, now, &lim, delay, vis));
                let want = QueueAnswer::Settled(want.collect());
                (settle_op(kind, &leases, delay, vis, &lim), want)
            }
            Step::Expire => {
                let max_deliveries = lim.max_deliveries;
                let n = m.each(|s| match s.st {
                    M::Leased(_, _, t, _) if t <= now && s.deliveries >= max_deliveries => {
                        Some(M::Dying)
                    }
                    _ => None,
                });
                (QueueOp::Expire { max_deliveries }, QueueAnswer::Count(n))
            }
            Step::Archive(k, extra) => {
                let mut offsets: Vec<u64> = q.d.dying(k).iter().map(|(o, _, _)| *o).collect();
                offsets.push(extra % (end + 2));
                let mut n = 0;
                for o in &offsets {
                    if let Some(s) = m.slots.get_mut(*o as usize).filter(|s| s.st == M::Dying) {
                        s.st = M::Dead;
                        n += 1;
                    }
                }
                (QueueOp::Archive { offsets }, QueueAnswer::Count(n))
            }
            Step::Takeover => {
                let n = m.each(|s| match s.st {
                    M::Leased(c, l, t, v) => Some(M::Leased(c, l, t.max(now + u64::from(v)), v)),
                    _ => None,
                });
                (QueueOp::Takeover, QueueAnswer::Count(n))
            }
            Step::Purge => {
                let n = m.each(|s| (!s.st.done()).then_some(M::Dropped));
                m.purged += n;
                (QueueOp::Purge, QueueAnswer::Count(n))
            }
            other => {
                match other {
                    Step::Append(records) => {
                        for (key, delay) in records {
                            let not_before = delay.map_or(0, |t| now + t);
                            for f in [&mut q.facts, &mut all_facts] {
                                if let Some(k) = key {
                                    f.keys.insert(q.end, k);
                                }
                                if delay.is_some() {
                                    f.not_before.insert(q.end, not_before);
                                }
                            }
                            let (st, deliveries) = (M::Available, 0);
                            m.slots.push(Slot {
                                st,
                                deliveries,
                                key,
                                not_before,
                            });
                            q.end += 1;
                        }
                    }
                    Step::Advance(ms) => q.now += ms,
                    Step::Retain(k) => q.log_start = (q.log_start + k).min(q.end),
                    Step::Snapshot => {
                        let d: Deliveries = qiss::from_slice(&qiss::to_vec(&q.d).unwrap()).unwrap();
                        let f: RecordFacts =
                            qiss::from_slice(&qiss::to_vec(&q.facts).unwrap()).unwrap();
                        prop_assert_eq!((&d, &f), (&q.d, &q.facts));
                        (q.d, q.facts) = (d, f);
                    }
                    _ => {}
                }
                check(&q, &m)?;
                continue;
            }
        };
        let got = q.op(op.clone());
        prop_assert_eq!(&got, &want, "{:?}", op);
        match (&op, &got) {
            (QueueOp::Ack { leases: ls }, QueueAnswer::Settled(outcomes)) => {
                let ok = ls.iter().zip(outcomes).filter(|(_, r)| **r == R::Ok);
                acked.extend(ok.map(|(l, _)| l.offset));
            }
            (_, QueueAnswer::Leased { messages, .. }) => {
                for (o, delivery) in messages {
                    prop_assert!(!acked.contains(o), "{} acked, then leased again", o);
                    let n = leases.entry(*o).or_default();
                    *n += 1;
                    prop_assert!(*n == *delivery && *n <= lim.max_deliveries);
                }
            }
            _ => {}
        }
        log.push((q.end, q.index, q.now, op));
        answers.push(got);
        check(&q, &m)?;
    }
    // The same log applied to fresh state (every record's facts known from the start:
    // a command looks at none past its end) gives the same state and answers.
    let mut d = Deliveries::default();
    let replayed: Vec<QueueAnswer> = log
        .iter()
        .map(|(end, index, now, op)| d.apply(Some(&mut all_facts), *end, *index, *now, op))
        .collect();
    prop_assert_eq!((d, all_facts), (q.d, q.facts));
    prop_assert_eq!(replayed, answers);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deliveries_follow_the_model(
        lim in arb_limits(false),
        steps in prop::collection::vec(arb_step(), 0..120),
    ) {
        run_case(lim, steps)?;
    }

    #[test]
    fn ordered_deliveries_follow_the_model(
        lim in arb_limits(true),
        steps in prop::collection::vec(arb_step(), 0..120),
    ) {
        run_case(lim, steps)?;
    }
}
