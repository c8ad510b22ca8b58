//! [`Calls`]: a connection's pending calls by correlation id, without hashing.
//!
//! An id is `generation << INDEX_BITS | index`: the index finds the entry at once, and
//! the generation (bumped each time the entry is freed) tells a reused entry from the
//! call a late reply was for (a call that timed out or was cancelled). Freed entries
//! are reused last-in first-out, so the table stays as small as the most calls ever in
//! flight at once, and a pipelined burst keeps touching the same few cache lines.
//! Generations start at 1, so no id is 0 (the connection itself).

use super::Slot;

/// Low bits of an id: the entry's index (up to 16 M calls in flight).
const INDEX_BITS: u32 = 24;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

struct Entry {
    generation: u64,
    slot: Option<Slot>,
}

/// Pending calls (see the module docs).
#[derive(Default)]
pub(super) struct Calls {
    entries: Vec<Entry>,
    /// Indices of free entries; the last one is used next.
    free: Vec<u32>,
    len: usize,
}

impl Calls {
    fn id(index: usize, generation: u64) -> u64 {
        generation << INDEX_BITS | index as u64
    }

    /// The index of pending call `id`: its entry exists, is in use, and is of the
    /// id's generation.
    fn index_of(&self, id: u64) -> Option<usize> {
        let index = (id & INDEX_MASK) as usize;
        let entry = self.entries.get(index)?;
        (entry.generation == id >> INDEX_BITS && entry.slot.is_some()).then_some(index)
    }

    /// The id the next [`Calls::insert`] will return.
    pub(super) fn next_id(&self) -> u64 {
        match self.free.last() {
            Some(&index) => Self::id(index as usize, self.entries[index as usize].generation),
            None => Self::id(self.entries.len(), 1),
        }
    }

    /// Whether another call fits (16 M in flight at once).
    pub(super) fn has_room(&self) -> bool {
        !self.free.is_empty() || (self.entries.len() as u64) <= INDEX_MASK
    }

    /// Add a call under [`Calls::next_id`]; returns that id. The caller checked
    /// [`Calls::has_room`].
    pub(super) fn insert(&mut self, slot: Slot) -> u64 {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                let entry = &mut self.entries[index as usize];
                entry.slot = Some(slot);
                Self::id(index as usize, entry.generation)
            }
            None => {
                let index = self.entries.len();
                self.entries.push(Entry {
                    generation: 1,
                    slot: Some(slot),
                });
                Self::id(index, 1)
            }
        }
    }

    pub(super) fn get(&self, id: u64) -> Option<&Slot> {
        self.entries[self.index_of(id)?].slot.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let index = self.index_of(id)?;
        self.entries[index].slot.as_mut()
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Slot> {
        let index = self.index_of(id)?;
        let entry = &mut self.entries[index];
        entry.generation += 1;
        self.free.push(index as u32);
        self.len -= 1;
        entry.slot.take()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every pending call, with its id.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Slot)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter_map(|(index, entry)| {
                let id = Self::id(index, entry.generation);
                entry.slot.as_mut().map(|slot| (id, slot))
            })
    }

    /// Keep the calls for which `keep` says so.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64, &mut Slot) -> bool) {
        let gone: Vec<u64> = self
            .iter_mut()
            .filter_map(|(id, slot)| (!keep(id, slot)).then_some(id))
            .collect();
        for id in gone {
            self.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Slot {
        Slot::Stream(tokio::sync::mpsc::channel(1).0)
    }

    #[test]
    fn ids_are_unique_among_pending_calls_and_never_zero() {
        let mut calls = Calls::default();
        let mut ids = Vec::new();
        for _ in 0..100 {
            let next = calls.next_id();
            let id = calls.insert(stream());
            assert_eq!(id, next);
            assert_ne!(id, 0);
            ids.push(id);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert_eq!(calls.len(), 100);
    }

    #[test]
    fn a_reused_entry_does_not_answer_for_its_old_call() {
        let mut calls = Calls::default();
        let old = calls.insert(stream());
        assert!(calls.remove(old).is_some());
        let new = calls.insert(stream());
        assert_ne!(old, new, "same entry, new generation");
        assert_eq!(old & INDEX_MASK, new & INDEX_MASK);
        // A late reply for the old call finds nothing; the new call is untouched.
        assert!(calls.get(old).is_none());
        assert!(calls.get_mut(old).is_none());
        assert!(calls.remove(old).is_none());
        assert!(calls.get(new).is_some());
        assert_eq!(calls.len(), 1);
        // Removing twice is a no-op the second time.
        assert!(calls.remove(new).is_some());
        assert!(calls.remove(new).is_none());
        assert_eq!(calls.len(), 0);
    }

    #[test]
    fn unknown_ids_find_nothing() {
        let mut calls = Calls::default();
        let id = calls.insert(stream());
        for bogus in [0, u64::MAX, id + 1, id ^ (1 << 40), INDEX_MASK] {
            assert!(calls.get(bogus).is_none(), "{bogus}");
            assert!(calls.remove(bogus).is_none(), "{bogus}");
        }
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn retain_and_iterate_see_every_pending_call() {
        let mut calls = Calls::default();
        let ids: Vec<u64> = (0..10).map(|_| calls.insert(stream())).collect();
        calls.remove(ids[3]);
        let mut seen: Vec<u64> = calls.iter_mut().map(|(id, _)| id).collect();
        seen.sort();
        let mut want: Vec<u64> = ids.iter().copied().filter(|&id| id != ids[3]).collect();
        want.sort();
        assert_eq!(seen, want);
        calls.retain(|id, _| id % 2 == 0);
        assert!(calls.iter_mut().all(|(id, _)| id % 2 == 0));
        assert_eq!(calls.len(), calls.iter_mut().count());
    }
}
