//! Idempotent producers: the table that lets a partition leader recognise a retried
//! record batch and answer it with the offset the first copy got, instead of storing it
//! twice.
//!
//! A producer stamps every batch's header with its id, epoch and the sequence number of
//! the batch's first record (`producer_id < 0`: not idempotent, never deduplicated). The
//! [`ProducerTable`] is part of a partition's replicated state: every replica's state
//! machine records each applied stamped batch, in log order, so every replica holds the
//! same table and a new leader knows every batch its predecessors committed. It travels
//! in the partition's snapshot.
//!
//! What a producer's entry holds:
//! - `recent`: its last [`RECENT_BATCHES`] applied batches with their offsets, so a retry
//!   of one of them is answered with the first copy's offset;
//! - `floor` and `ahead`: which sequences were applied at all. A producer numbers its
//!   records 0, 1, 2, ... (a wrapping `i32`), so its batches tile the sequence space;
//!   every sequence below `floor` is applied, and `ahead` holds the applied ranges above
//!   a gap (batches that overtook an earlier one still in flight, at most
//!   [`AHEAD_MAX`]). A batch below `floor` or inside an `ahead` range but not in
//!   `recent` was stored before, under an offset no longer known: [`Seen::Stale`], it is
//!   refused, never stored twice, however late the retry comes.
//!
//! Bounds (deterministic, so replicas agree): beyond [`AHEAD_MAX`] ranges above a gap
//! the gap is given up (the floor jumps over it: a batch that never arrived, e.g. one
//! its producer abandoned, would be refused as stale if it came later); beyond
//! [`PRODUCERS_MAX`] producers the one whose last batch is oldest in the log is
//! forgotten, and a retry of its batches is then stored again.
//!
//! The leader-side gate that consults the table (plus the batches still in flight in the
//! current term) is [`super::Partition::append`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How many of a producer's latest batches are remembered (a producer keeps at most
/// this many batches per partition in flight for retries to be recognised).
pub const RECENT_BATCHES: usize = 8;

/// How many producers a partition remembers.
pub const PRODUCERS_MAX: usize = 4096;

/// How many applied ranges above a sequence gap a producer may have before the gap is
/// given up.
pub const AHEAD_MAX: usize = 64;

/// What [`ProducerTable::check`] knows of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: store it.
    New,
    /// Applied before: answer with its offset.
    Applied(ProducedBatch),
    /// Older than every remembered batch: stored before, offset forgotten.
    Stale,
}

/// One applied batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducedBatch {
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
    /// Offset its first record got.
    pub base_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerState {
    epoch: i16,
    /// Log index of the producer's latest applied batch (eviction order).
    touched: u64,
    recent: VecDeque<ProducedBatch>,
    /// Every sequence below this (wrapping) is applied.
    floor: i32,
    /// Applied `[start, end)` ranges above `floor`, unordered, at most [`AHEAD_MAX`].
    ahead: Vec<(i32, i32)>,
}

/// `a - b` in the wrapping sequence space: negative when `a` comes before `b`.
fn distance(a: i32, b: i32) -> i32 {
    a.wrapping_sub(b)
}

impl ProducerState {
    fn new(epoch: i16, touched: u64) -> Self {
        ProducerState {
            epoch,
            touched,
            recent: VecDeque::with_capacity(RECENT_BATCHES),
            floor: 0,
            ahead: Vec::new(),
        }
    }

    /// Marks `[start, start + count)` applied.
    fn mark_applied(&mut self, start: i32, count: u32) {
        let end = start.wrapping_add(count as i32);
        if distance(start, self.floor) <= 0 {
            // At (or overlapping) the floor: it rises.
            if distance(end, self.floor) > 0 {
                self.floor = end;
            }
        } else {
            self.ahead.push((start, end));
            if self.ahead.len() > AHEAD_MAX {
                // Give up the gap below the lowest range: jump the floor over it.
                let lowest = (0..self.ahead.len())
                    .min_by_key(|&i| distance(self.ahead[i].0, self.floor))
                    .expect("not empty");
                let (_, e) = self.ahead.swap_remove(lowest);
                self.floor = e;
            }
        }
        // Absorb the ranges the floor now reaches.
        loop {
            let floor = self.floor;
            let Some(i) = self
                .ahead
                .iter()
                .position(|&(s, _)| distance(s, floor) <= 0)
            else {
                break;
            };
            let (_, e) = self.ahead.swap_remove(i);
            if distance(e, self.floor) > 0 {
                self.floor = e;
            }
        }
    }

    /// Whether the sequence `seq` was applied (below the floor or inside a range ahead).
    fn applied(&self, seq: i32) -> bool {
        distance(seq, self.floor) < 0
            || self
                .ahead
                .iter()
                .any(|&(s, e)| distance(seq, s) >= 0 && distance(seq, e) < 0)
    }
}

/// Per partition: producer id → its latest applied batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<u64, ProducerState>,
    /// `touched` log index → producer id, oldest first.
    by_age: BTreeMap<u64, u64>,
}

/// The serialized form of a [`ProducerTable`] (snapshots): (producer id, state), oldest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerTableImage {
    producers: Vec<(u64, ProducerState)>,
}

impl ProducerTable {
    /// How many producers are remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The applied batch of `producer_id` (same epoch) whose first sequence is
    /// `base_sequence`, if remembered.
    pub fn lookup(
        &self,
        producer_id: u64,
        epoch: i16,
        base_sequence: i32,
    ) -> Option<ProducedBatch> {
        match self.check(producer_id, epoch, base_sequence) {
            Seen::Applied(b) => Some(b),
            Seen::New | Seen::Stale => None,
        }
    }

    /// What the table knows of a batch of `producer_id` starting at `base_sequence`.
    /// Sequences compare with wrap-around (a producer's sequence is a wrapping counter).
    pub fn check(&self, producer_id: u64, epoch: i16, base_sequence: i32) -> Seen {
        let Some(p) = self.producers.get(&producer_id) else {
            return Seen::New;
        };
        if p.epoch != epoch {
            return Seen::New;
        }
        if let Some(b) = p
            .recent
            .iter()
            .rev()
            .find(|b| b.base_sequence == base_sequence)
        {
            return Seen::Applied(*b);
        }
        if p.applied(base_sequence) {
            Seen::Stale
        } else {
            Seen::New
        }
    }

    /// Records an applied stamped batch at `log_index`. A new epoch forgets the
    /// producer's older batches. Log indexes only grow, so the eviction order is the same
    /// on every replica.
    pub fn record(&mut self, producer_id: u64, epoch: i16, log_index: u64, batch: ProducedBatch) {
        let state = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerState::new(epoch, log_index));
        self.by_age.remove(&state.touched);
        if state.epoch != epoch {
            *state = ProducerState::new(epoch, log_index);
        }
        state.touched = log_index;
        if state.recent.len() == RECENT_BATCHES {
            state.recent.pop_front();
        }
        state.recent.push_back(batch);
        state.mark_applied(batch.base_sequence, batch.record_count);
        self.by_age.insert(log_index, producer_id);
        while self.producers.len() > PRODUCERS_MAX {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.producers.remove(&oldest);
        }
    }

    pub(crate) fn image(&self) -> ProducerTableImage {
        let mut producers: Vec<_> = self
            .producers
            .iter()
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        producers.sort_by_key(|(_, p)| p.touched);
        ProducerTableImage { producers }
    }

    pub(crate) fn from_image(image: ProducerTableImage) -> Self {
        let mut table = ProducerTable::default();
        for (id, state) in image.producers {
            table.by_age.insert(state.touched, id);
            table.producers.insert(id, state);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: i32, offset: u64) -> ProducedBatch {
        ProducedBatch {
            base_sequence: seq,
            base_offset: offset,
            record_count: 10,
        }
    }

    #[test]
    fn remembers_recent_batches_only() {
        let mut t = ProducerTable::default();
        for i in 0..(RECENT_BATCHES as i32 + 2) {
            t.record(7, 0, i as u64 + 1, batch(i * 10, i as u64 * 10));
        }
        assert_eq!(t.lookup(7, 0, 0), None, "oldest batches are forgotten");
        assert_eq!(t.check(7, 0, 0), Seen::Stale);
        assert_eq!(t.check(7, 0, 15), Seen::Stale);
        assert_eq!(t.check(7, 0, 1000), Seen::New);
        assert_eq!(t.check(7, 0, (RECENT_BATCHES as i32 + 2) * 10), Seen::New);
        assert_eq!(t.lookup(7, 0, 10), None);
        let last = (RECENT_BATCHES as i32 + 1) * 10;
        assert_eq!(t.lookup(7, 0, last), Some(batch(last, last as u64)));
        assert_eq!(t.lookup(7, 0, 20), Some(batch(20, 20)));
        assert_eq!(t.lookup(7, 0, 25), None, "not a batch start");
        assert_eq!(t.lookup(8, 0, 20), None, "other producer");
        assert_eq!(t.lookup(7, 1, 20), None, "other epoch");
    }

    #[test]
    fn a_late_first_attempt_is_new_however_many_batches_overtook_it() {
        // Batch 0..10 is delayed (refused as busy and retried later, say) while 30 later
        // batches of the same producer are applied.
        let mut t = ProducerTable::default();
        for i in 1..=30 {
            t.record(7, 0, i as u64, batch(i * 10, i as u64 * 10));
        }
        assert_eq!(t.check(7, 0, 0), Seen::New, "never applied");
        t.record(7, 0, 31, batch(0, 300));
        assert_eq!(t.check(7, 0, 0), Seen::Applied(batch(0, 300)));
        // The gap is closed: everything up to 310 is below the floor.
        assert_eq!(t.check(7, 0, 10), Seen::Stale);
        assert_eq!(t.check(7, 0, 310), Seen::New);
    }

    #[test]
    fn a_gap_is_given_up_beyond_ahead_max() {
        let mut t = ProducerTable::default();
        // 0..10 never arrives; AHEAD_MAX + 1 batches pile up above it.
        for i in 1..=(AHEAD_MAX as i32 + 1) {
            t.record(7, 0, i as u64, batch(i * 10, 0));
        }
        assert_eq!(
            t.check(7, 0, 0),
            Seen::Stale,
            "the floor jumped over the gap"
        );
        let next = (AHEAD_MAX as i32 + 2) * 10;
        assert_eq!(t.check(7, 0, next), Seen::New);
    }

    #[test]
    fn sequences_wrap_around() {
        let mut t = ProducerTable::default();
        let first = i32::MAX - 20;
        t.record(7, 0, 1, batch(0, 0));
        // Jump the producer near the wrap (as after 2^31 records), in order from there.
        let st = t.producers.get_mut(&7).unwrap();
        st.floor = first;
        for i in 0..RECENT_BATCHES as i32 {
            let seq = first.wrapping_add(i * 10);
            t.record(7, 0, i as u64 + 2, batch(seq, i as u64));
        }
        assert_eq!(t.check(7, 0, i32::MAX - 30), Seen::Stale);
        let next = first.wrapping_add(RECENT_BATCHES as i32 * 10);
        assert!(next < 0, "the window crosses the wrap");
        assert_eq!(t.check(7, 0, next), Seen::New);
        assert_eq!(
            t.check(7, 0, first.wrapping_add(10)),
            Seen::Applied(batch(first.wrapping_add(10), 1))
        );
    }

    #[test]
    fn new_epoch_forgets_the_old_one() {
        let mut t = ProducerTable::default();
        t.record(7, 0, 1, batch(0, 0));
        t.record(7, 1, 2, batch(0, 5));
        assert_eq!(t.lookup(7, 1, 0), Some(batch(0, 5)));
        assert_eq!(t.lookup(7, 0, 0), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn evicts_the_producer_idle_longest() {
        let mut t = ProducerTable::default();
        for id in 0..PRODUCERS_MAX as u64 {
            t.record(id, 0, id + 1, batch(0, id));
        }
        // Producer 0 writes again: producer 1 is now the idle-longest.
        t.record(0, 0, PRODUCERS_MAX as u64 + 1, batch(1, 99));
        t.record(u64::MAX, 0, PRODUCERS_MAX as u64 + 2, batch(0, 100));
        assert_eq!(t.len(), PRODUCERS_MAX);
        assert!(t.lookup(1, 0, 0).is_none());
        assert!(t.lookup(0, 0, 0).is_some());
        assert!(t.lookup(u64::MAX, 0, 0).is_some());
    }

    #[test]
    fn image_round_trips() {
        let mut t = ProducerTable::default();
        t.record(1, 0, 3, batch(0, 0));
        t.record(2, 4, 5, batch(9, 1));
        t.record(1, 0, 6, batch(10, 2));
        t.record(1, 0, 7, batch(50, 3)); // a range ahead of a gap
        let back = ProducerTable::from_image(t.image());
        assert_eq!(back, t);
        let bytes = qiss::to_vec(&t.image()).unwrap();
        let decoded: ProducerTableImage = qiss::from_slice(&bytes).unwrap();
        assert_eq!(ProducerTable::from_image(decoded), t);
    }
}
