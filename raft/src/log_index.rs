//! Where each Raft entry of a group's log is stored: a sparse index, and how it is
//! rebuilt at open.
//!
//! # What it holds
//! The entries present are the contiguous range `[first_index, next_index)`. For them
//! the map keeps the last entry's term and a list of [`Anchor`]s: the stored position
//! ([`BatchPos`]) of some entries, ascending. Every segment's first entry is an anchor,
//! and then at least one every [`ANCHOR_ENTRIES`] entries and every [`ANCHOR_BYTES`]
//! bytes. Finding entry `i` means starting at the last anchor at or before `i` (always
//! in `i`'s segment, since each segment starts with one) and reading batch headers
//! forward: at most `ANCHOR_ENTRIES - 1` batches or about `ANCHOR_BYTES` bytes, from the
//! page cache in the usual case (the replication tail was just written).
//!
//! A dense map (one 32-byte slot per entry) grew with every entry ever appended, and a
//! log that retention never cuts keeps its entries: 45 bytes of memory per entry
//! measured (`scripts/bench/rss-per-entry.sh`), 54 MB on a node of the 60-minute soak.
//! The anchors cost 24 bytes per [`ANCHOR_ENTRIES`] entries (or per
//! [`ANCHOR_BYTES`]).
//!
//! # Invariants
//! - `anchors[0].index <= first_index` when entries are present; it may name an entry
//!   already purged from the same segment (still on disk: purging deletes only whole
//!   segments before the first entry's).
//! - The last anchor at or before any present index is in that index's segment.
//! - The term of an entry other than the last is read from its batch's Raft stamp, never
//!   from the map.

use std::collections::VecDeque;
use std::path::Path;

use neo_storage::{BatchPos, LogConfig, SegmentLog};
use qiss::batch::BatchHeader;

use crate::error::{Error, Result};
use crate::types::LogId;

/// Most entries between two anchors.
pub(crate) const ANCHOR_ENTRIES: u64 = 32;
/// Most bytes between two anchors (a batch larger than this is anchored by itself).
pub(crate) const ANCHOR_BYTES: u64 = 32 * 1024;

/// Bytes read per call when scanning batch headers.
pub(crate) const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// The stored position of entry `index`'s batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    pub(crate) index: u64,
    pub(crate) at: BatchPos,
}

/// Raft index ⇄ stored batch for the entries present in the log (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct IndexMap {
    /// Raft index of the first entry present.
    first_index: u64,
    /// One past the last entry present (`== first_index`: none).
    next_index: u64,
    /// The term of entry `next_index - 1`.
    last_term: u64,
    /// Scan starts, ascending in index and position.
    anchors: VecDeque<Anchor>,
    /// The last purged log id (entries up to it are gone).
    pub(crate) last_purged: Option<LogId>,
}

impl IndexMap {
    /// An empty map after `last_purged`.
    pub(crate) fn new(last_purged: Option<LogId>) -> IndexMap {
        IndexMap {
            last_purged,
            ..IndexMap::default()
        }
    }

    /// Whether no entry is present.
    pub(crate) fn is_empty(&self) -> bool {
        self.next_index == self.first_index
    }

    /// The first index present.
    pub(crate) fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The index the next append must have, if known (an empty log that never
    /// purged takes any).
    pub(crate) fn next_index(&self) -> Option<u64> {
        if self.is_empty() {
            self.last_purged.map(|l| l.index + 1)
        } else {
            Some(self.next_index)
        }
    }

    /// The last entry's log id, or the last purged one when none is present.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        if self.is_empty() {
            self.last_purged
        } else {
            Some(LogId::new(self.last_term.into(), self.next_index - 1))
        }
    }

    /// Anchors held (memory: 24 bytes each).
    #[cfg(test)]
    pub(crate) fn anchors(&self) -> usize {
        self.anchors.len()
    }

    /// Records entry `index` (the next one, or any when the map is empty) of `term`,
    /// stored at `at`.
    pub(crate) fn push(&mut self, index: u64, term: u64, at: BatchPos) {
        debug_assert!(self.is_empty() || index == self.next_index);
        if self.is_empty() {
            self.anchors.clear();
            self.first_index = index;
        }
        let anchor = match self.anchors.back() {
            None => true,
            Some(last) => {
                last.at.segment != at.segment
                    || index.saturating_sub(last.index) >= ANCHOR_ENTRIES
                    || at.position.saturating_sub(last.at.position) >= ANCHOR_BYTES
            }
        };
        if anchor {
            self.anchors.push_back(Anchor { index, at });
        }
        self.next_index = index + 1;
        self.last_term = term;
    }

    /// Where to start reading to reach entry `index`: the last anchor at or before it.
    /// `None` if `index` is not present.
    pub(crate) fn scan_start(&self, index: u64) -> Option<Anchor> {
        if index < self.first_index || index >= self.next_index {
            return None;
        }
        let k = self.anchors.partition_point(|a| a.index <= index);
        self.anchors.get(k.checked_sub(1)?).copied()
    }

    /// Forgets entries `from..`: `from` is present and not the first entry, and
    /// `last_term` is entry `from - 1`'s term; or `from` is the first entry and the
    /// map ends empty.
    pub(crate) fn truncate(&mut self, from: u64, last_term: u64) {
        debug_assert!(from >= self.first_index && from < self.next_index);
        while self.anchors.back().is_some_and(|a| a.index >= from) {
            self.anchors.pop_back();
        }
        self.next_index = from;
        self.last_term = last_term;
        if self.is_empty() {
            self.anchors.clear();
        }
    }

    /// Forgets entries up to `upto` (recorded as purged by the caller). Returns the
    /// segment of the first entry left, before which storage may delete every segment;
    /// `None` if none is left (the map is empty and restarts at `upto + 1`).
    pub(crate) fn purge(&mut self, upto: u64) -> Option<u64> {
        if self.is_empty() || upto + 1 >= self.next_index {
            self.anchors.clear();
            self.first_index = upto + 1;
            self.next_index = upto + 1;
            return None;
        }
        self.first_index = self.first_index.max(upto + 1);
        // Keep the last anchor at or before the new first entry (it is in that entry's
        // segment) and what follows.
        let k = self
            .anchors
            .partition_point(|a| a.index <= self.first_index);
        self.anchors.drain(..k.saturating_sub(1));
        self.anchors.front().map(|a| a.at.segment)
    }

    /// The last index present whose batch lies in a segment before the one starting at
    /// `segment` (so purging up to it deletes exactly the segments before that one).
    pub(crate) fn last_index_before_segment(&self, segment: u64) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        // Segments increase with the index; the first anchor in a segment other than
        // the first is that segment's first entry.
        let k = self.anchors.partition_point(|a| a.at.segment < segment);
        match self.anchors.get(k) {
            _ if k == 0 => None,
            None => Some(self.next_index - 1),
            Some(a) => Some(a.index - 1),
        }
    }
}

/// Finds where entry `index` is stored by reading batch headers forward from `start`
/// (an anchor at or before it in the same segment).
pub(crate) fn locate(log: &SegmentLog, start: Anchor, index: u64) -> Result<BatchPos> {
    let mut at = start.at;
    loop {
        let slice = log
            .read_at(at, SCAN_CHUNK_BYTES)
            .map_err(|e| Error::storage("log", "locate an entry", e))?;
        if slice.bytes.is_empty() {
            break;
        }
        let mut buf = &slice.bytes[..];
        let mut position = at.position;
        while !buf.is_empty() {
            let h = BatchHeader::parse(buf)
                .map_err(|e| Error::storage("log batch header", "read", e))?;
            if h.log_index == index {
                return Ok(BatchPos {
                    segment: at.segment,
                    position,
                });
            }
            if h.log_index > index {
                break;
            }
            let len = h.batch_length as usize;
            buf = &buf[len..];
            position += len as u64;
        }
        if slice.next.segment != at.segment {
            break;
        }
        at = slice.next;
    }
    Err(Error::storage(
        "log",
        "locate an entry",
        format!(
            "entry {index} not found reading from entry {} at segment {} position {}",
            start.index, start.at.segment, start.at.position
        ),
    ))
}

/// Most damaged places one open cuts past before giving up.
const DAMAGE_CUTS_MAX: u32 = 16;

/// Opens the segment log in `dir` and rebuilds its index map, checking every batch's CRC
/// on the way (the scan reads every batch anyway). Damage found (by the segment log's
/// recovery or by this scan) is cut away with [`neo_storage::cut_damaged`]: the log
/// keeps its intact prefix (what followed goes to its quarantine folder) and the
/// group's leader sends this replica the rest.
pub(crate) fn open_intact(
    dir: &Path,
    group: crate::types::GroupId,
    config: LogConfig,
    last_purged: Option<LogId>,
) -> Result<(SegmentLog, IndexMap)> {
    let mut cuts = 0;
    loop {
        let damage = match SegmentLog::open(dir, config.clone()) {
            Ok(log) => match scan(&log, last_purged)? {
                Ok(map) => return Ok((log, map)),
                Err(damage) => {
                    drop(log);
                    damage
                }
            },
            Err(neo_storage::Error::Corruption {
                segment,
                position,
                reason,
            }) => Damage {
                at: BatchPos { segment, position },
                reason,
            },
            Err(e) => return Err(Error::storage("log", "open", e)),
        };
        cuts += 1;
        if cuts > DAMAGE_CUTS_MAX {
            return Err(Error::storage(
                "log",
                "open",
                format!(
                    "still damaged after {DAMAGE_CUTS_MAX} cuts: {}",
                    damage.reason
                ),
            ));
        }
        tracing::error!(
            group,
            segment = damage.at.segment,
            position = damage.at.position,
            reason = %damage.reason,
            "replica log damaged: cutting it there; the leader sends the rest"
        );
        neo_storage::cut_damaged(dir, damage.at.segment, damage.at.position)
            .map_err(|e| Error::storage("damaged log", "cut", e))?;
        DAMAGE_CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Damaged logs cut by this process (see [`open_intact`]).
static DAMAGE_CUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process cut a damaged group log at open
/// (`neo_storage_damaged_logs_cut_total`).
pub fn damaged_logs_cut() -> u64 {
    DAMAGE_CUTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where a scan found a batch that fails its checks.
struct Damage {
    at: BatchPos,
    reason: String,
}

/// The index map of `log`, or where it is damaged (a batch whose header or CRC fails).
fn scan(
    log: &SegmentLog,
    last_purged: Option<LogId>,
) -> Result<std::result::Result<IndexMap, Damage>> {
    let mut map = IndexMap::new(last_purged);
    let purged_index = last_purged.map(|l| l.index);
    let mut at = log.start_pos();
    loop {
        let slice = match log.read_at(at, SCAN_CHUNK_BYTES) {
            Ok(slice) => slice,
            Err(neo_storage::Error::Corruption {
                segment,
                position,
                reason,
            }) => {
                return Ok(Err(Damage {
                    at: BatchPos { segment, position },
                    reason,
                }));
            }
            Err(e) => return Err(Error::storage("log", "scan", e)),
        };
        if slice.bytes.is_empty() {
            break;
        }
        let mut buf = &slice.bytes[..];
        let mut position = at.position;
        while !buf.is_empty() {
            let checked = BatchHeader::parse(buf).and_then(|h| h.verify_crc(buf).map(|()| h));
            let h = match checked {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Err(Damage {
                        at: BatchPos {
                            segment: at.segment,
                            position,
                        },
                        reason: format!("batch at position {position}: {e}"),
                    }));
                }
            };
            let len = h.batch_length as usize;
            buf = &buf[len..];
            let here = BatchPos {
                segment: at.segment,
                position,
            };
            position += len as u64;
            if purged_index.is_some_and(|p| h.log_index <= p) {
                continue;
            }
            if let Some(next) = map.next_index()
                && !map.is_empty()
                && h.log_index != next
            {
                return Err(Error::storage(
                    "log",
                    "scan",
                    format!(
                        "entry at offset {} has log index {}, expected {next}",
                        h.base_offset, h.log_index
                    ),
                ));
            }
            map.push(h.log_index, h.term, here);
        }
        at = slice.next;
    }
    Ok(Ok(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(segment: u64, position: u64) -> BatchPos {
        BatchPos { segment, position }
    }

    /// Entries 5, 6 in segment 10; 7 (zero-width) and 8 in segment 20; 9 in 25.
    fn small() -> IndexMap {
        let mut map = IndexMap::new(None);
        map.push(5, 1, pos(10, 0));
        map.push(6, 1, pos(10, 100));
        map.push(7, 1, pos(20, 0));
        map.push(8, 2, pos(20, 60));
        map.push(9, 2, pos(25, 0));
        map
    }

    #[test]
    fn last_index_before_segment_is_the_last_entry_stored_before_it() {
        let map = small();
        assert_eq!(map.last_index_before_segment(10), None);
        assert_eq!(map.last_index_before_segment(20), Some(6));
        assert_eq!(map.last_index_before_segment(25), Some(8));
        assert_eq!(map.last_index_before_segment(99), Some(9));
        assert_eq!(IndexMap::default().last_index_before_segment(99), None);
    }

    #[test]
    fn every_segment_starts_with_an_anchor_and_scans_start_in_the_entry_segment() {
        let map = small();
        assert_eq!(map.anchors(), 3);
        assert_eq!(map.scan_start(6).map(|a| a.index), Some(5));
        assert_eq!(map.scan_start(8).map(|a| a.at), Some(pos(20, 0)));
        assert_eq!(map.scan_start(9).map(|a| a.at), Some(pos(25, 0)));
        assert_eq!(map.scan_start(4), None);
        assert_eq!(map.scan_start(10), None);
        assert_eq!(map.last_log_id(), Some(LogId::new(2.into(), 9)));
    }

    #[test]
    fn anchors_are_sparse_in_entries_and_in_bytes() {
        let mut map = IndexMap::new(None);
        // 10 000 small entries in one segment: one anchor per ANCHOR_ENTRIES.
        for i in 0..10_000u64 {
            map.push(i, 1, pos(0, i * 100));
        }
        assert_eq!(map.anchors() as u64, 10_000u64.div_ceil(ANCHOR_ENTRIES));
        for i in [0, 1, 31, 32, 33, 9_999] {
            let a = map.scan_start(i).expect("present");
            assert!(a.index <= i && i - a.index < ANCHOR_ENTRIES, "{i}: {a:?}");
        }
        // Large batches: one anchor per ANCHOR_BYTES.
        let mut big = IndexMap::new(None);
        for i in 0..100u64 {
            big.push(i, 1, pos(0, i * ANCHOR_BYTES / 4));
        }
        assert_eq!(big.anchors(), 25);
    }

    #[test]
    fn truncate_and_purge_keep_the_invariants() {
        let mut map = small();
        map.truncate(8, 1);
        assert_eq!(map.last_log_id(), Some(LogId::new(1.into(), 7)));
        assert_eq!(map.scan_start(7).map(|a| a.index), Some(7));
        map.push(8, 3, pos(20, 60));
        map.push(9, 3, pos(20, 120));
        assert_eq!(
            map.anchors(),
            2,
            "entry 9 stays in segment 20: no new anchor"
        );

        // Purge to 5: entry 6 is first; its segment's anchor (entry 5, purged but
        // still on disk) stays the scan start.
        assert_eq!(map.purge(5), Some(10));
        assert_eq!(map.first_index(), 6);
        assert_eq!(map.scan_start(6).map(|a| a.index), Some(5));
        assert_eq!(map.scan_start(5), None);
        // Purge into segment 20: segment 10 may go.
        assert_eq!(map.purge(7), Some(20));
        assert_eq!(map.anchors(), 1);
        assert_eq!(map.last_index_before_segment(20), None);
        // Past the end: empty, restarting after it.
        assert_eq!(map.purge(20), None);
        assert!(map.is_empty());
        map.last_purged = Some(LogId::new(3.into(), 20));
        assert_eq!(map.next_index(), Some(21));
        map.push(21, 4, pos(30, 0));
        assert_eq!(map.scan_start(21).map(|a| a.at), Some(pos(30, 0)));

        // Truncating every entry empties the map.
        map.truncate(21, 0);
        assert!(map.is_empty());
        assert_eq!(map.anchors(), 0);
    }
}
