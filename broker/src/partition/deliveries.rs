//! Queue delivery state of one partition: which messages are available, leased, waiting
//! for a delay, on their way to the dead-letter queue, or done; kept by the partition's
//! own Raft group next to its data (a receive or an ack goes to the leader the consumer
//! already talks to, and is answered once a quorum has it on disk).
//!
//! Pure rules, applied in log order by every replica ([`Deliveries::apply`]). Every
//! command carries the leader's clock (`now_ms`) and the queue's settings from the
//! leader's metadata view, so replicas compute the same answers without a clock.
//!
//! ```text
//!              receive                 ack
//!  available ───────────► leased ───────────────► done (acked)
//!     ▲  ▲                 │ │ │ term / nack or expiry at max_deliveries
//!     │  └── expiry ───────┘ │ └──────────────► dying ──archive──► done (dead)
//!     │      (lazy)          │ nack(delay)          (moved to the DLQ by the leader)
//!     └──── waiting ◄────────┘
//! ```
//!
//! - Offsets below the **floor** are done; the map holds only offsets at or above it
//!   whose state is not "available, never delivered". The floor moves past done
//!   messages (the acked prefix), so a drained queue keeps no per-message state.
//! - A lease is named by the log index of the receive that granted it: a receipt whose
//!   (offset, delivery, lease) is not the message's current lease is `LeaseLost` and
//!   changes nothing. An expired lease stays the holder's until another receive takes
//!   the message (an ack in between still counts). It still counts toward the in-flight
//!   bounds, so at a bound a receive takes back expired leases only (any, at
//!   `max_in_flight`; its own, at `max_in_flight_per_consumer`).
//! - A message delivered `max_deliveries` times is never delivered again: a nack, a
//!   term or the expiry of its last lease makes it **dying**; the leader appends it to
//!   the dead-letter queue, then proposes `Archive` (append first, archive second: a
//!   crash between them duplicates in the DLQ, never loses).
//! - Ordered by key: a receive never leases a message whose key has an earlier message
//!   not done (leased, waiting, dying, or passed over), so a key's messages go one at a
//!   time, in offset order.
//! - Lease deadlines follow the leader's clock; a new leader restarts every lease with
//!   its full visibility timeout (`Takeover`).

use std::collections::{BTreeMap, BTreeSet};

use neo_protocol::api::ReceiptOutcome;
use serde::{Deserialize, Serialize};

/// Most offsets one receive looks at (bounds the apply time of a receive behind a long
/// run of leased or delayed messages).
pub const RECEIVE_SCAN_MAX: u64 = 100_000;

/// Facts about a queue partition's records the delivery rules need: the log end, and
/// per record its key hash (ordered queues) and its earliest delivery time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFacts {
    /// The next offset (every record below it is applied).
    pub end: u64,
    /// Offset → key hash, for records with a key (ordered queues only).
    pub keys: BTreeMap<u64, u64>,
    /// Offset → earliest delivery (ms since the epoch), for delayed records.
    pub not_before: BTreeMap<u64, u64>,
    /// Base offset → first timestamp of each batch (the oldest message's age).
    pub times: BTreeMap<u64, i64>,
}

impl RecordFacts {
    /// Forgets what lies below `floor`.
    fn trim(&mut self, floor: u64) {
        self.keys = self.keys.split_off(&floor);
        self.not_before = self.not_before.split_off(&floor);
        // Keep the batch that holds `floor`.
        let keep = self.times.range(..=floor).next_back().map(|(o, _)| *o);
        self.times = self.times.split_off(&keep.unwrap_or(floor));
    }

    /// The timestamp of the batch holding `offset`, if known.
    fn time_of(&self, offset: u64) -> Option<i64> {
        self.times.range(..=offset).next_back().map(|(_, t)| *t)
    }
}

/// One lease as a receipt names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    /// Message offset.
    pub offset: u64,
    /// Delivery attempt.
    pub delivery: u32,
    /// Lease (log index of the receive).
    pub lease: u64,
}

/// The settings a command is applied with (from the leader's metadata view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Deliveries after which a message dies.
    pub max_deliveries: u32,
    /// Bound on leased messages in the partition.
    pub max_in_flight: u32,
    /// Bound on one consumer's leased messages in the partition (0: none).
    pub max_in_flight_per_consumer: u32,
    /// Never two messages of one key leased at once; keys in offset order.
    pub ordered_by_key: bool,
    /// Redelivery delays of successive nacks without a delay (last step repeats).
    pub backoff_ms: Vec<u32>,
}

/// What a queue command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOp {
    /// Lease up to `max` available messages to `consumer` for `visibility_ms`.
    Receive {
        /// Who.
        consumer: String,
        /// Bound on messages.
        max: u32,
        /// Lease length.
        visibility_ms: u32,
        /// Settings.
        limits: Limits,
        /// The first offset still in the log (retention): below it nothing is
        /// delivered.
        log_start: u64,
    },
    /// Ends messages for good.
    Ack {
        /// The leases.
        leases: Vec<LeaseRef>,
    },
    /// Makes messages available again after a delay (or kills those out of deliveries).
    Nack {
        /// The leases.
        leases: Vec<LeaseRef>,
        /// Explicit delay (`None`: the backoff step).
        delay_ms: Option<u32>,
        /// Why.
        reason: String,
        /// Settings.
        limits: Limits,
    },
    /// Pushes lease deadlines to now + `visibility_ms`.
    Extend {
        /// The leases.
        leases: Vec<LeaseRef>,
        /// New lease length.
        visibility_ms: u32,
    },
    /// Kills messages at once (dead-letter).
    Term {
        /// The leases.
        leases: Vec<LeaseRef>,
        /// Why.
        reason: String,
    },
    /// Kills messages whose last lease expired.
    Expire {
        /// Settings.
        max_deliveries: u32,
    },
    /// Marks dying messages dead: the leader has appended them to the dead-letter
    /// queue (or there is none).
    Archive {
        /// Their offsets.
        offsets: Vec<u64>,
    },
    /// A new leader restarts every lease with its full visibility timeout.
    Takeover,
    /// Drops every message not yet done, leased ones included.
    Purge,
}

/// The answer to a queue command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueAnswer {
    /// Leased: (offset, delivery attempt) under lease `lease`.
    Leased {
        /// The lease (the receive's log index).
        lease: u64,
        /// The messages.
        messages: Vec<(u64, u32)>,
    },
    /// One outcome per lease of an ack/nack/extend/term.
    Settled(Vec<ReceiptOutcome>),
    /// How many messages a command changed (expire, archive, purge, takeover).
    Count(u64),
}

/// Where one message is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgState {
    /// Leased to `consumer` until `deadline_ms`.
    Leased {
        /// Holder.
        consumer: String,
        /// The lease id.
        lease: u64,
        /// Leader-clock deadline.
        deadline_ms: u64,
        /// Its length (a takeover restarts it).
        visibility_ms: u32,
    },
    /// Available again from `at_ms`.
    Waiting {
        /// When.
        at_ms: u64,
    },
    /// To be moved to the dead-letter queue.
    Dying,
    /// Acked or dead: done, until the floor passes it.
    Done,
}

/// One message's delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// Deliveries so far.
    pub deliveries: u32,
    /// State.
    pub state: MsgState,
    /// The last nack or term reason.
    pub reason: String,
}

/// Counters since the queue (or share group) began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Messages acked.
    pub acked: u64,
    /// Messages dead-lettered (moved, or dropped without a DLQ).
    pub dead: u64,
    /// Deliveries after a message's first.
    pub redelivered: u64,
    /// Messages dropped by purges.
    pub purged: u64,
}

/// The delivery state of one queue (or share group) on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    /// Every offset below is done.
    pub floor: u64,
    /// Offsets at or above the floor that are not "available, never delivered".
    msgs: BTreeMap<u64, Msg>,
    /// Leased messages per consumer.
    consumers: BTreeMap<String, u32>,
    /// Leased messages in all.
    leased: u64,
    /// Counters.
    pub counters: Counters,
}

impl Deliveries {
    /// The message at `offset`, if it has a delivery record.
    pub fn msg(&self, offset: u64) -> Option<&Msg> {
        self.msgs.get(&offset)
    }

    /// Leased messages in all.
    pub fn leased(&self) -> u64 {
        self.leased
    }

    /// Offsets of dying messages (to be moved to the dead-letter queue), oldest first.
    pub fn dying(&self, max: usize) -> Vec<(u64, u32, String)> {
        self.msgs
            .iter()
            .filter(|(_, m)| m.state == MsgState::Dying)
            .take(max)
            .map(|(o, m)| (*o, m.deliveries, m.reason.clone()))
            .collect()
    }

    /// Whether a lease has expired at `now_ms` on a message out of deliveries (an
    /// `Expire` would change something).
    pub fn expired_at_max(&self, now_ms: u64, max_deliveries: u32) -> bool {
        self.msgs.values().any(|m| {
            m.deliveries >= max_deliveries
                && matches!(m.state, MsgState::Leased { deadline_ms, .. } if deadline_ms <= now_ms)
        })
    }

    /// Applies one command at `now_ms`, in the entry at log index `index`.
    pub fn apply(
        &mut self,
        facts: Option<&mut RecordFacts>,
        end: u64,
        index: u64,
        now_ms: u64,
        op: &QueueOp,
    ) -> QueueAnswer {
        let answer = match op {
            QueueOp::Receive {
                consumer,
                max,
                visibility_ms,
                limits,
                log_start,
            } => {
                if *log_start > self.floor {
                    self.skip_to(*log_start);
                }
                let messages = self.receive(
                    facts.as_deref(),
                    end,
                    index,
                    now_ms,
                    consumer,
                    *max,
                    *visibility_ms,
                    limits,
                );
                QueueAnswer::Leased {
                    lease: index,
                    messages,
                }
            }
            QueueOp::Ack { leases } => QueueAnswer::Settled(
                leases
                    .iter()
                    .map(|l| {
                        self.settle(end, l, |d, _| {
                            d.counters.acked += 1;
                            MsgState::Done
                        })
                    })
                    .collect(),
            ),
            QueueOp::Nack {
                leases,
                delay_ms,
                reason,
                limits,
            } => QueueAnswer::Settled(
                leases
                    .iter()
                    .map(|l| {
                        self.settle(end, l, |_, m| {
                            m.reason.clone_from(reason);
                            if m.deliveries >= limits.max_deliveries {
                                return MsgState::Dying;
                            }
                            let delay = delay_ms
                                .unwrap_or_else(|| backoff_step(&limits.backoff_ms, m.deliveries));
                            MsgState::Waiting {
                                at_ms: now_ms.saturating_add(u64::from(delay)),
                            }
                        })
                    })
                    .collect(),
            ),
            QueueOp::Extend {
                leases,
                visibility_ms,
            } => QueueAnswer::Settled(
                leases
                    .iter()
                    .map(|l| self.extend(end, l, now_ms, *visibility_ms))
                    .collect(),
            ),
            QueueOp::Term { leases, reason } => QueueAnswer::Settled(
                leases
                    .iter()
                    .map(|l| {
                        self.settle(end, l, |_, m| {
                            m.reason.clone_from(reason);
                            MsgState::Dying
                        })
                    })
                    .collect(),
            ),
            QueueOp::Expire { max_deliveries } => {
                let mut n = 0;
                let expired: Vec<u64> = self
                    .msgs
                    .iter()
                    .filter(|(_, m)| {
                        m.deliveries >= *max_deliveries
                            && matches!(m.state, MsgState::Leased { deadline_ms, .. } if deadline_ms <= now_ms)
                    })
                    .map(|(o, _)| *o)
                    .collect();
                for o in expired {
                    if let Some(mut m) = self.msgs.remove(&o) {
                        if m.reason.is_empty() {
                            m.reason = "lease expired at max deliveries".into();
                        }
                        self.set_state(o, m, MsgState::Dying);
                        n += 1;
                    }
                }
                QueueAnswer::Count(n)
            }
            QueueOp::Archive { offsets } => {
                let mut n = 0;
                for o in offsets {
                    if let Some(m) = self.msgs.remove(o) {
                        if m.state == MsgState::Dying {
                            self.counters.dead += 1;
                            self.set_state(*o, m, MsgState::Done);
                            n += 1;
                        } else {
                            self.msgs.insert(*o, m);
                        }
                    }
                }
                QueueAnswer::Count(n)
            }
            QueueOp::Takeover => {
                let mut n = 0;
                for m in self.msgs.values_mut() {
                    if let MsgState::Leased {
                        deadline_ms,
                        visibility_ms,
                        ..
                    } = &mut m.state
                    {
                        *deadline_ms =
                            (*deadline_ms).max(now_ms.saturating_add(u64::from(*visibility_ms)));
                        n += 1;
                    }
                }
                QueueAnswer::Count(n)
            }
            QueueOp::Purge => {
                let done = self
                    .msgs
                    .values()
                    .filter(|m| m.state == MsgState::Done)
                    .count() as u64;
                let purged = end.saturating_sub(self.floor).saturating_sub(done);
                self.counters.purged += purged;
                self.msgs.clear();
                self.consumers.clear();
                self.leased = 0;
                self.floor = self.floor.max(end);
                QueueAnswer::Count(purged)
            }
        };
        self.advance_floor();
        if let Some(f) = facts {
            f.trim(self.floor);
        }
        answer
    }

    /// Moves the floor to `start` (records below it are gone from the log).
    fn skip_to(&mut self, start: u64) {
        let below: Vec<u64> = self.msgs.range(..start).map(|(o, _)| *o).collect();
        for o in below {
            if let Some(m) = self.msgs.remove(&o) {
                self.set_state(o, m, MsgState::Done);
                self.msgs.remove(&o);
            }
        }
        self.floor = start;
    }

    #[allow(clippy::too_many_arguments)]
    fn receive(
        &mut self,
        facts: Option<&RecordFacts>,
        end: u64,
        lease: u64,
        now_ms: u64,
        consumer: &str,
        max: u32,
        visibility_ms: u32,
        limits: &Limits,
    ) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut mine = u64::from(self.consumers.get(consumer).copied().unwrap_or(0));
        let mut blocked: BTreeSet<u64> = BTreeSet::new();
        let deadline_ms = now_ms.saturating_add(u64::from(visibility_ms));
        // At a bound, only expired leases move (taken back, or killed).
        let reclaim = self.any_expired(now_ms);
        let scan_end = end.min(self.floor.saturating_add(RECEIVE_SCAN_MAX));
        for offset in self.floor..scan_end {
            if out.len() >= max as usize || (!reclaim && self.at_bound(mine, limits)) {
                break;
            }
            let key = key_of(facts, offset, limits);
            if key.is_some_and(|k| blocked.contains(&k)) {
                continue;
            }
            match self.availability(facts, offset, now_ms, limits) {
                Avail::Done => continue,
                Avail::Waits => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    continue;
                }
                Avail::Dies => {
                    // Its last lease expired, or the queue's limit went down: it dies.
                    if let Some(mut m) = self.msgs.remove(&offset) {
                        if m.reason.is_empty() {
                            m.reason = "max deliveries reached".into();
                        }
                        if let MsgState::Leased { consumer: c, .. } = &m.state
                            && c == consumer
                        {
                            // Its own lease ends: room for another.
                            mine = mine.saturating_sub(1);
                        }
                        self.set_state(offset, m, MsgState::Dying);
                    }
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                    continue;
                }
                Avail::Now => {}
            }
            if !self.room(offset, consumer, mine, limits) {
                // Passed over: its key waits for it.
                if let Some(k) = key {
                    blocked.insert(k);
                }
                continue;
            }
            let mut m = self.msgs.remove(&offset).unwrap_or(Msg {
                deliveries: 0,
                state: MsgState::Waiting { at_ms: 0 },
                reason: String::new(),
            });
            if let MsgState::Leased { consumer: c, .. } = &m.state
                && c == consumer
            {
                // Taking back its own expired lease does not count twice below.
                mine = mine.saturating_sub(1);
            }
            m.deliveries += 1;
            if m.deliveries > 1 {
                self.counters.redelivered += 1;
            }
            let delivery = m.deliveries;
            self.set_state(
                offset,
                m,
                MsgState::Leased {
                    consumer: consumer.to_string(),
                    lease,
                    deadline_ms,
                    visibility_ms,
                },
            );
            mine += 1;
            out.push((offset, delivery));
            if let Some(k) = key {
                blocked.insert(k);
            }
        }
        out
    }

    /// Where the message at `offset` stands for a receive at `now_ms`.
    fn availability(
        &self,
        facts: Option<&RecordFacts>,
        offset: u64,
        now_ms: u64,
        limits: &Limits,
    ) -> Avail {
        let Some(m) = self.msgs.get(&offset) else {
            let delayed = facts
                .and_then(|f| f.not_before.get(&offset))
                .is_some_and(|t| *t > now_ms);
            return if delayed { Avail::Waits } else { Avail::Now };
        };
        let due = match &m.state {
            MsgState::Done => return Avail::Done,
            MsgState::Dying => return Avail::Waits,
            MsgState::Leased { deadline_ms, .. } => *deadline_ms <= now_ms,
            MsgState::Waiting { at_ms } => *at_ms <= now_ms,
        };
        match (due, m.deliveries >= limits.max_deliveries) {
            (false, _) => Avail::Waits,
            (true, true) => Avail::Dies,
            (true, false) => Avail::Now,
        }
    }

    /// Whether a lease has expired at `now_ms` (a receive at a bound can take it back).
    fn any_expired(&self, now_ms: u64) -> bool {
        self.msgs.values().any(
            |m| matches!(m.state, MsgState::Leased { deadline_ms, .. } if deadline_ms <= now_ms),
        )
    }

    /// Whether a consumer holding `mine` leases is at a bound (it can only take back
    /// expired leases).
    fn at_bound(&self, mine: u64, limits: &Limits) -> bool {
        self.leased >= u64::from(limits.max_in_flight)
            || (limits.max_in_flight_per_consumer > 0
                && mine >= u64::from(limits.max_in_flight_per_consumer))
    }

    /// Whether `consumer`, holding `mine` leases, may lease the message at `offset`:
    /// taking back an expired lease adds nothing to the partition's count, nor to the
    /// consumer's own when the lease was its own.
    fn room(&self, offset: u64, consumer: &str, mine: u64, limits: &Limits) -> bool {
        let holder = match self.msgs.get(&offset).map(|m| &m.state) {
            Some(MsgState::Leased { consumer: c, .. }) => Some(c.as_str()),
            _ => None,
        };
        let per = u64::from(limits.max_in_flight_per_consumer);
        (holder.is_some() || self.leased < u64::from(limits.max_in_flight))
            && (holder == Some(consumer) || per == 0 || mine < per)
    }

    /// Applies `next` to the message a lease names, if the lease is current.
    fn settle(
        &mut self,
        end: u64,
        l: &LeaseRef,
        next: impl FnOnce(&mut Self, &mut Msg) -> MsgState,
    ) -> ReceiptOutcome {
        match self.check(end, l) {
            ReceiptOutcome::Ok => {}
            other => return other,
        }
        let Some(mut m) = self.msgs.remove(&l.offset) else {
            return ReceiptOutcome::Unknown;
        };
        let state = next(self, &mut m);
        self.set_state(l.offset, m, state);
        ReceiptOutcome::Ok
    }

    fn extend(&mut self, end: u64, l: &LeaseRef, now_ms: u64, vis: u32) -> ReceiptOutcome {
        match self.check(end, l) {
            ReceiptOutcome::Ok => {}
            other => return other,
        }
        if let Some(Msg {
            state:
                MsgState::Leased {
                    deadline_ms,
                    visibility_ms,
                    ..
                },
            ..
        }) = self.msgs.get_mut(&l.offset)
        {
            *deadline_ms = now_ms.saturating_add(u64::from(vis));
            *visibility_ms = vis;
        }
        ReceiptOutcome::Ok
    }

    /// Whether `l` is the current lease of its message.
    fn check(&self, end: u64, l: &LeaseRef) -> ReceiptOutcome {
        if l.offset >= end {
            return ReceiptOutcome::Unknown;
        }
        if l.offset < self.floor {
            return ReceiptOutcome::AlreadyDone;
        }
        match self.msgs.get(&l.offset) {
            None => ReceiptOutcome::LeaseLost,
            Some(m) => match &m.state {
                MsgState::Done | MsgState::Dying => ReceiptOutcome::AlreadyDone,
                MsgState::Leased { lease, .. }
                    if *lease == l.lease && m.deliveries == l.delivery =>
                {
                    ReceiptOutcome::Ok
                }
                _ => ReceiptOutcome::LeaseLost,
            },
        }
    }

    /// Puts `m` back at `offset` in state `state`, keeping the lease counts.
    fn set_state(&mut self, offset: u64, mut m: Msg, state: MsgState) {
        if let MsgState::Leased { consumer, .. } = &m.state {
            self.leased = self.leased.saturating_sub(1);
            if let Some(n) = self.consumers.get_mut(consumer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.consumers.remove(consumer);
                }
            }
        }
        if let MsgState::Leased { consumer, .. } = &state {
            self.leased += 1;
            *self.consumers.entry(consumer.clone()).or_insert(0) += 1;
        }
        m.state = state;
        self.msgs.insert(offset, m);
    }

    /// Moves the floor past done messages.
    fn advance_floor(&mut self) {
        while let Some(entry) = self.msgs.first_entry() {
            if *entry.key() < self.floor {
                entry.remove();
                continue;
            }
            if *entry.key() == self.floor && entry.get().state == MsgState::Done {
                entry.remove();
                self.floor += 1;
                continue;
            }
            break;
        }
    }
}

/// Where a message stands for a receive.
enum Avail {
    /// Done: skipped, blocks nothing.
    Done,
    /// Not receivable now (leased, delayed, dying): blocks its key.
    Waits,
    /// Due, but out of deliveries: dies.
    Dies,
    /// Receivable.
    Now,
}

/// The key hash that orders the message at `offset` (ordered queues only).
fn key_of(facts: Option<&RecordFacts>, offset: u64, limits: &Limits) -> Option<u64> {
    match facts {
        Some(f) if limits.ordered_by_key => f.keys.get(&offset).copied(),
        _ => None,
    }
}

/// The redelivery delay after the `deliveries`-th delivery (1-based) of a message.
pub fn backoff_step(steps: &[u32], deliveries: u32) -> u32 {
    match steps.len() {
        0 => 0,
        n => steps[(deliveries.saturating_sub(1) as usize).min(n - 1)],
    }
}

#[path = "deliveries_views.rs"]
mod views;
pub use views::Stats;

#[cfg(test)]
#[path = "deliveries_tests.rs"]
mod tests;
