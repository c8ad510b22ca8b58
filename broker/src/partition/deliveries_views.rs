//! Read-only views of a partition's delivery state, for the leader (never applied):
//! whether a receive would change anything (so idle polls write nothing), and the
//! counts `describe_queue` and `/metrics` report.

use std::collections::BTreeSet;

use super::{Avail, Deliveries, Limits, MsgState, RECEIVE_SCAN_MAX, RecordFacts, key_of};

/// Delivery counts at one moment (see [`Deliveries::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Receivable now.
    pub available: u64,
    /// Leased.
    pub in_flight: u64,
    /// Waiting for a delay.
    pub delayed: u64,
    /// Dying (being moved to the DLQ).
    pub dying: u64,
    /// Age of the oldest message not done (0: none or unknown).
    pub oldest_age_ms: u64,
}

impl Deliveries {
    /// Whether a receive at `now_ms` by `consumer` would change anything (lease a
    /// message, or kill one whose last lease expired): the leader asks before it
    /// proposes, so idle consumers' polls write nothing to the log.
    pub fn would_receive(
        &self,
        facts: Option<&RecordFacts>,
        end: u64,
        now_ms: u64,
        consumer: &str,
        limits: &Limits,
    ) -> bool {
        let mine = u64::from(self.consumers.get(consumer).copied().unwrap_or(0));
        if self.at_bound(mine, limits) && !self.any_expired(now_ms) {
            return false;
        }
        let mut blocked: BTreeSet<u64> = BTreeSet::new();
        let scan_end = end.min(self.floor.saturating_add(RECEIVE_SCAN_MAX));
        for offset in self.floor..scan_end {
            let key = key_of(facts, offset, limits);
            if key.is_some_and(|k| blocked.contains(&k)) {
                continue;
            }
            match self.availability(facts, offset, now_ms, limits) {
                Avail::Done => {}
                Avail::Waits => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                }
                Avail::Dies => return true,
                Avail::Now if self.room(offset, consumer, mine, limits) => return true,
                Avail::Now => {
                    if let Some(k) = key {
                        blocked.insert(k);
                    }
                }
            }
        }
        false
    }

    /// Counts at `now_ms` over `[floor, end)` (a bounded scan: what lies beyond
    /// `scan_max` offsets above the floor counts as available).
    pub fn stats(
        &self,
        facts: Option<&RecordFacts>,
        end: u64,
        now_ms: u64,
        scan_max: u64,
    ) -> Stats {
        let mut s = Stats::default();
        let scan_end = end.min(self.floor.saturating_add(scan_max));
        let mut oldest = None;
        for offset in self.floor..scan_end {
            let counted = match self.msgs.get(&offset) {
                None => {
                    if facts
                        .and_then(|f| f.not_before.get(&offset))
                        .is_some_and(|t| *t > now_ms)
                    {
                        s.delayed += 1;
                    } else {
                        s.available += 1;
                    }
                    true
                }
                Some(m) => match &m.state {
                    MsgState::Done => false,
                    MsgState::Dying => {
                        s.dying += 1;
                        true
                    }
                    MsgState::Leased { .. } => {
                        s.in_flight += 1;
                        true
                    }
                    MsgState::Waiting { at_ms } => {
                        if *at_ms > now_ms {
                            s.delayed += 1;
                        } else {
                            s.available += 1;
                        }
                        true
                    }
                },
            };
            if counted && oldest.is_none() {
                oldest = Some(offset);
            }
        }
        s.available += end.saturating_sub(scan_end);
        if let (Some(o), Some(f)) = (oldest, facts)
            && let Some(t) = f.time_of(o)
        {
            s.oldest_age_ms = now_ms.saturating_sub(u64::try_from(t).unwrap_or(0));
        }
        s
    }
}
