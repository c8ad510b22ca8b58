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
//! Bounds (deterministic, so replicas agree): the last [`RECENT_BATCHES`] batches of a
//! producer are remembered; beyond [`PRODUCERS_MAX`] producers the one whose last batch
//! is oldest in the log is forgotten. A retry of a forgotten batch is stored again.
//!
//! The leader-side gate that consults the table (plus the batches still in flight in the
//! current term) is in `group.rs` (`RaftGroup::propose_records`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How many of a producer's latest batches are remembered (a producer keeps at most
/// this many batches per partition in flight for retries to be recognised).
pub const RECENT_BATCHES: usize = 8;

/// How many producers a partition remembers.
pub const PRODUCERS_MAX: usize = 4096;

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
}

/// Per partition: producer id → its latest applied batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<u64, ProducerState>,
    /// `touched` log index → producer id, oldest first.
    by_age: BTreeMap<u64, u64>,
}

/// The serialized form of a [`ProducerTable`] (snapshots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProducerTableImage {
    producers: Vec<(u64, i16, u64, Vec<ProducedBatch>)>,
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
        match p.recent.front() {
            // Below the oldest remembered batch while the window is full: a retry of a
            // forgotten batch (a first attempt is never that late).
            Some(oldest)
                if p.recent.len() == RECENT_BATCHES
                    && base_sequence.wrapping_sub(oldest.base_sequence) < 0 =>
            {
                Seen::Stale
            }
            _ => Seen::New,
        }
    }

    /// Records an applied stamped batch at `log_index`. A new epoch forgets the
    /// producer's older batches. Log indexes only grow, so the eviction order is the same
    /// on every replica.
    pub fn record(&mut self, producer_id: u64, epoch: i16, log_index: u64, batch: ProducedBatch) {
        let state = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerState {
                epoch,
                touched: log_index,
                recent: VecDeque::with_capacity(RECENT_BATCHES),
            });
        self.by_age.remove(&state.touched);
        if state.epoch != epoch {
            state.epoch = epoch;
            state.recent.clear();
        }
        state.touched = log_index;
        if state.recent.len() == RECENT_BATCHES {
            state.recent.pop_front();
        }
        state.recent.push_back(batch);
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
            .map(|(id, p)| (*id, p.epoch, p.touched, p.recent.iter().copied().collect()))
            .collect();
        producers.sort_by_key(|p| p.2);
        ProducerTableImage { producers }
    }

    pub(crate) fn from_image(image: ProducerTableImage) -> Self {
        let mut table = ProducerTable::default();
        for (id, epoch, touched, recent) in image.producers {
            table.by_age.insert(touched, id);
            table.producers.insert(
                id,
                ProducerState {
                    epoch,
                    touched,
                    recent: recent.into_iter().collect(),
                },
            );
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
        assert_eq!(t.lookup(7, 0, 10), None);
        let last = (RECENT_BATCHES as i32 + 1) * 10;
        assert_eq!(t.lookup(7, 0, last), Some(batch(last, last as u64)));
        assert_eq!(t.lookup(7, 0, 20), Some(batch(20, 20)));
        assert_eq!(t.lookup(7, 0, 25), None, "not a batch start");
        assert_eq!(t.lookup(8, 0, 20), None, "other producer");
        assert_eq!(t.lookup(7, 1, 20), None, "other epoch");
    }

    #[test]
    fn sequences_wrap_around() {
        let mut t = ProducerTable::default();
        for i in 0..RECENT_BATCHES as i32 {
            let seq = (i32::MAX - 20).wrapping_add(i * 10);
            t.record(7, 0, i as u64 + 1, batch(seq, i as u64));
        }
        assert_eq!(t.check(7, 0, i32::MAX - 30), Seen::Stale);
        let next = (i32::MAX - 20).wrapping_add(RECENT_BATCHES as i32 * 10);
        assert!(next < 0, "the window crosses the wrap");
        assert_eq!(t.check(7, 0, next), Seen::New);
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
        let back = ProducerTable::from_image(t.image());
        assert_eq!(back, t);
        let bytes = crate::codec::encode(&t.image()).unwrap();
        let decoded: ProducerTableImage = crate::codec::decode(&bytes).unwrap();
        assert_eq!(ProducerTable::from_image(decoded), t);
    }
}
