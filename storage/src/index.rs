//! Sparse offset index and time index of one segment, in memory and on disk.
//!
//! In memory every segment keeps both indexes (8 + 12 bytes per entry, one entry per
//! `index_interval_bytes`). On disk they are written once, when a segment is sealed, as
//! `<base>.index` and `<base>.timeindex`, each ending in a footer with a CRC. The active
//! (tail) segment has no index files: recovery rebuilds its index by scanning it, which it
//! must do anyway to verify the tail's CRCs.
//!
//! ```text
//! .index      entries: (relative_offset u32, position u32)*        (8 bytes each)
//!             footer:  magic "QIDX" | count u32 | segment_size u64 | next_offset u64
//!                      | max_timestamp i64 | crc32 u32              (36 bytes)
//! .timeindex  entries: (max_timestamp_so_far i64, relative_offset u32)* (12 bytes each)
//!             footer:  magic "QTIX" | count u32 | crc32 u32         (12 bytes)
//! ```
//! Each CRC covers every byte before it. A file that fails any check is "damaged" and is
//! rebuilt from the segment (whose batches carry their own CRCs).

/// One offset-index entry: the batch that starts at `position` has base offset
/// `segment_base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

/// One time-index entry: the largest timestamp of every batch up to and including the
/// batch at `relative_offset` is `timestamp`, and every batch before the previous entry's
/// batch has a smaller one. Entries are added only when the running maximum grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) relative_offset: u32,
}

const INDEX_MAGIC: [u8; 4] = *b"QIDX";
const TIME_MAGIC: [u8; 4] = *b"QTIX";
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;
const INDEX_FOOTER_LEN: usize = 36;
const TIME_FOOTER_LEN: usize = 12;

/// What a sealed segment's `.index` footer records about the segment, so that opening a
/// log does not have to scan sealed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedInfo {
    pub(crate) segment_size: u64,
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp: i64,
}

/// Both indexes of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
    /// Largest batch timestamp in the segment (`i64::MIN` when empty).
    pub(crate) max_timestamp: i64,
    /// Bytes of batches since the last offset entry was added.
    bytes_since_entry: u64,
}

impl SegmentIndex {
    pub(crate) fn new() -> Self {
        SegmentIndex {
            offsets: Vec::new(),
            times: Vec::new(),
            max_timestamp: i64::MIN,
            bytes_since_entry: 0,
        }
    }

    /// Records a batch appended at `position`.
    pub(crate) fn on_batch(
        &mut self,
        interval_bytes: u32,
        relative_offset: u32,
        position: u32,
        len: u32,
        max_timestamp: i64,
    ) {
        let grew = max_timestamp > self.max_timestamp;
        if grew {
            self.max_timestamp = max_timestamp;
        }
        if self.offsets.is_empty() || self.bytes_since_entry >= u64::from(interval_bytes) {
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.bytes_since_entry = 0;
            if self
                .times
                .last()
                .is_none_or(|t| self.max_timestamp > t.timestamp)
            {
                self.times.push(TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset,
                });
            }
        }
        self.bytes_since_entry += u64::from(len);
    }

    /// Position to start scanning from for the batch holding `relative_offset`: the
    /// position of the last entry at or before it (0 when none).
    pub(crate) fn position_for(&self, relative_offset: u32) -> u32 {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Relative offset to start a timestamp scan from: the batch of the last time entry
    /// whose running maximum is below `timestamp` (every batch before it is older), or 0.
    pub(crate) fn time_scan_start(&self, timestamp: i64) -> u32 {
        let i = self.times.partition_point(|t| t.timestamp < timestamp);
        if i == 0 {
            0
        } else {
            self.times[i - 1].relative_offset
        }
    }

    /// Drops entries for batches at or after `relative_offset` and resets the running
    /// state to the last kept entry. The caller then feeds every batch from the last kept
    /// offset entry up to the cut through [`SegmentIndex::replay`].
    pub(crate) fn truncate(&mut self, relative_offset: u32) {
        self.offsets.retain(|e| e.relative_offset < relative_offset);
        self.times.retain(|t| t.relative_offset < relative_offset);
        self.max_timestamp = self.times.last().map_or(i64::MIN, |t| t.timestamp);
        self.bytes_since_entry = 0;
    }

    /// Continues the running state after [`SegmentIndex::truncate`] with a batch that lies
    /// at or after the last kept entry (no new entry unless the interval says so).
    pub(crate) fn replay(&mut self, interval_bytes: u32, rel: u32, pos: u32, len: u32, ts: i64) {
        match self.offsets.last() {
            Some(last) if last.relative_offset == rel => {
                // The kept entry's own batch: restore running state without a new entry.
                self.max_timestamp = self.max_timestamp.max(ts);
                self.bytes_since_entry = u64::from(len);
            }
            _ => self.on_batch(interval_bytes, rel, pos, len, ts),
        }
    }

    /// Encodes the `.index` file of a sealed segment.
    pub(crate) fn encode_offsets(&self, info: SealedInfo) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN + INDEX_FOOTER_LEN);
        for e in &self.offsets {
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
        }
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        out.extend_from_slice(&info.segment_size.to_le_bytes());
        out.extend_from_slice(&info.next_offset.to_le_bytes());
        out.extend_from_slice(&info.max_timestamp.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Encodes the `.timeindex` file of a sealed segment.
    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN + TIME_FOOTER_LEN);
        for t in &self.times {
            out.extend_from_slice(&t.timestamp.to_le_bytes());
            out.extend_from_slice(&t.relative_offset.to_le_bytes());
        }
        out.extend_from_slice(&TIME_MAGIC);
        out.extend_from_slice(&(self.times.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks both files of a sealed segment whose base offset is `base`,
    /// whose file is `segment_size` bytes and whose successor starts at `next_offset`.
    /// `Err` names the first failed check; the caller then rebuilds by scanning.
    pub(crate) fn decode_sealed(
        index: &[u8],
        time: &[u8],
        base: u64,
        segment_size: u64,
        next_offset: u64,
    ) -> Result<Self, &'static str> {
        let (offsets, info) = decode_offsets(index)?;
        if info.segment_size != segment_size {
            return Err("segment size differs from the index footer");
        }
        if info.next_offset != next_offset {
            return Err("next offset differs from the index footer");
        }
        let span = next_offset
            .checked_sub(base)
            .ok_or("next offset below base")?;
        if segment_size > 0
            && offsets
                .first()
                .is_none_or(|e| e.relative_offset != 0 || e.position != 0)
        {
            return Err("first index entry is not the first batch");
        }
        for w in offsets.windows(2) {
            if w[1].relative_offset <= w[0].relative_offset || w[1].position <= w[0].position {
                return Err("index entries not increasing");
            }
        }
        if offsets.last().is_some_and(|e| {
            u64::from(e.relative_offset) >= span || u64::from(e.position) >= segment_size
        }) {
            return Err("index entry beyond the segment");
        }
        let times = decode_times(time)?;
        for w in times.windows(2) {
            if w[1].timestamp <= w[0].timestamp || w[1].relative_offset <= w[0].relative_offset {
                return Err("time index entries not increasing");
            }
        }
        // Every time entry sits on an offset entry (both are written together).
        let mut oi = offsets.iter().peekable();
        for t in &times {
            while oi
                .peek()
                .is_some_and(|o| o.relative_offset < t.relative_offset)
            {
                oi.next();
            }
            if oi
                .peek()
                .is_none_or(|o| o.relative_offset != t.relative_offset)
            {
                return Err("time index entry without an offset entry");
            }
        }
        if times
            .last()
            .is_some_and(|t| t.timestamp > info.max_timestamp)
        {
            return Err("time index beyond the segment's max timestamp");
        }
        Ok(SegmentIndex {
            offsets,
            times,
            max_timestamp: info.max_timestamp,
            bytes_since_entry: 0,
        })
    }
}

fn u32_at(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(b[pos..pos + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(b[pos..pos + 8].try_into().expect("8 bytes"))
}

fn decode_offsets(buf: &[u8]) -> Result<(Vec<OffsetEntry>, SealedInfo), &'static str> {
    if buf.len() < INDEX_FOOTER_LEN {
        return Err("index file shorter than its footer");
    }
    let f = buf.len() - INDEX_FOOTER_LEN;
    if buf[f..f + 4] != INDEX_MAGIC {
        return Err("bad index magic");
    }
    let crc_pos = buf.len() - 4;
    if crc32fast::hash(&buf[..crc_pos]) != u32_at(buf, crc_pos) {
        return Err("index CRC mismatch");
    }
    let count = u32_at(buf, f + 4) as usize;
    if count.checked_mul(OFFSET_ENTRY_LEN) != Some(f) {
        return Err("index entry count differs from the file length");
    }
    let info = SealedInfo {
        segment_size: u64_at(buf, f + 8),
        next_offset: u64_at(buf, f + 16),
        max_timestamp: u64_at(buf, f + 24) as i64,
    };
    let offsets = buf[..f]
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map(|c| OffsetEntry {
            relative_offset: u32_at(c, 0),
            position: u32_at(c, 4),
        })
        .collect();
    Ok((offsets, info))
}

fn decode_times(buf: &[u8]) -> Result<Vec<TimeEntry>, &'static str> {
    if buf.len() < TIME_FOOTER_LEN {
        return Err("time index file shorter than its footer");
    }
    let f = buf.len() - TIME_FOOTER_LEN;
    if buf[f..f + 4] != TIME_MAGIC {
        return Err("bad time index magic");
    }
    let crc_pos = buf.len() - 4;
    if crc32fast::hash(&buf[..crc_pos]) != u32_at(buf, crc_pos) {
        return Err("time index CRC mismatch");
    }
    let count = u32_at(buf, f + 4) as usize;
    if count.checked_mul(TIME_ENTRY_LEN) != Some(f) {
        return Err("time index entry count differs from the file length");
    }
    Ok(buf[..f]
        .chunks_exact(TIME_ENTRY_LEN)
        .map(|c| TimeEntry {
            timestamp: u64_at(c, 0) as i64,
            relative_offset: u32_at(c, 8),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(batches: &[(u32, i64)], interval: u32) -> (SegmentIndex, Vec<(u32, u32, u32, i64)>) {
        // (relative offset, position, len, max ts), one record per batch
        let mut idx = SegmentIndex::new();
        let mut pos = 0u32;
        let mut out = Vec::new();
        for (rel, &(len, ts)) in batches.iter().enumerate() {
            idx.on_batch(interval, rel as u32, pos, len, ts);
            out.push((rel as u32, pos, len, ts));
            pos += len;
        }
        (idx, out)
    }

    #[test]
    fn sealed_files_round_trip_and_reject_flips() {
        let (idx, b) = build(&[(100, 5), (5000, 3), (100, 9), (9000, 9), (10, 12)], 4096);
        let size: u64 = b.iter().map(|x| u64::from(x.2)).sum();
        let info = SealedInfo {
            segment_size: size,
            next_offset: 10 + b.len() as u64,
            max_timestamp: idx.max_timestamp,
        };
        let i = idx.encode_offsets(info);
        let t = idx.encode_times();
        let back = SegmentIndex::decode_sealed(&i, &t, 10, size, 15).unwrap();
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        assert_eq!(back.max_timestamp, 12);
        assert!(SegmentIndex::decode_sealed(&i, &t, 10, size + 1, 15).is_err());
        assert!(SegmentIndex::decode_sealed(&i, &t, 10, size, 16).is_err());
        for pos in 0..i.len() {
            let mut bad = i.clone();
            bad[pos] ^= 0x10;
            assert!(
                SegmentIndex::decode_sealed(&bad, &t, 10, size, 15).is_err(),
                "flip at {pos}"
            );
        }
        for pos in 0..t.len() {
            let mut bad = t.clone();
            bad[pos] ^= 0x01;
            assert!(
                SegmentIndex::decode_sealed(&i, &bad, 10, size, 15).is_err(),
                "flip at {pos}"
            );
        }
        assert!(SegmentIndex::decode_sealed(&i[..i.len() - 1], &t, 10, size, 15).is_err());
    }

    proptest! {
        /// `position_for` always points at or before the batch holding the offset, with at
        /// most one interval of bytes (plus that batch) to scan.
        #[test]
        fn position_lookup_matches_model(
            lens in prop::collection::vec(77u32..20_000, 1..200),
            interval in 1u32..50_000,
            probe in any::<prop::sample::Index>(),
        ) {
            let batches: Vec<(u32, i64)> = lens.iter().map(|&l| (l, 0)).collect();
            let (idx, b) = build(&batches, interval);
            let target = probe.index(b.len());
            let pos = idx.position_for(target as u32);
            let (_, tpos, _, _) = b[target];
            prop_assert!(pos <= tpos);
            // pos is a batch start
            prop_assert!(b.iter().any(|x| x.1 == pos));
            let skipped: u64 = b.iter().filter(|x| x.1 >= pos && x.1 < tpos).map(|x| u64::from(x.2)).sum();
            let biggest = b.iter().map(|x| u64::from(x.2)).max().unwrap();
            prop_assert!(skipped <= u64::from(interval) + biggest);
        }

        /// A time scan started at `time_scan_start` never skips the first batch whose
        /// max timestamp reaches the target.
        #[test]
        fn time_lookup_matches_model(
            batches in prop::collection::vec((77u32..5_000, -1000i64..1000), 1..200),
            interval in 1u32..20_000,
            target in -1100i64..1100,
        ) {
            let (idx, b) = build(&batches, interval);
            let start = idx.time_scan_start(target);
            if let Some(first) = b.iter().find(|x| x.3 >= target) {
                prop_assert!(start <= first.0);
            }
        }

        /// Truncating then replaying gives the same index as building the prefix fresh.
        #[test]
        fn truncate_then_replay_equals_fresh_build(
            batches in prop::collection::vec((77u32..5_000, -1000i64..1000), 1..100),
            interval in 1u32..20_000,
            cut in any::<prop::sample::Index>(),
        ) {
            let (mut idx, b) = build(&batches, interval);
            let cut = cut.index(b.len());
            let (fresh, _) = build(&batches[..cut], interval);
            idx.truncate(cut as u32);
            let from = idx.offsets.last().map_or(0, |e| e.relative_offset as usize);
            for &(rel, pos, len, ts) in &b[from..cut] {
                idx.replay(interval, rel, pos, len, ts);
            }
            prop_assert_eq!(idx, fresh);
        }
    }
}
