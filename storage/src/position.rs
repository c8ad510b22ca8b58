//! Batches addressed by where they are stored, not by offset.
//!
//! A zero-width control batch (a Raft control entry in a partition log) occupies no
//! record offset: it shares its base offset with the batches after it, up to and
//! including the next record batch. So an offset does not name one batch, and a Raft
//! log store, which must read, cut and keep exactly the batch of one entry, names it by
//! [`BatchPos`] instead: the segment it is in and its byte position there. A batch keeps
//! its position for as long as it exists (segments only grow at the tail; truncation
//! cuts whole batches off the tail; purge deletes whole segments), and positions order
//! batches as the log does: by segment, then by position.
//!
//! Also here: truncation, which both addressings share ([`Cut`]).

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use qiss::batch::HEADER_LEN;

use crate::durable::fire;
use crate::error::{Error, Result};
use crate::log::{SegmentLog, Shared, State, lock, open_segment_file, recount_open};
use crate::segment::{self, Window};

/// Where a batch is stored: the base offset of its segment and its byte position in that
/// segment's file. Ordered as the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchPos {
    /// Base offset of the segment (its file name).
    pub segment: u64,
    /// Byte position of the batch in the segment file.
    pub position: u64,
}

/// Whole batches read from a [`BatchPos`] on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosSlice {
    /// The batches, byte-for-byte as stored; empty at the end of the log.
    pub bytes: Bytes,
    /// Where the batch after the last one returned is (in the next segment when this
    /// one ended); the end of the log when there is none yet.
    pub next: BatchPos,
}

/// Where `truncate` cuts.
pub(crate) enum Cut {
    /// Before the first batch that holds an offset at or above this one.
    Offset(u64),
    /// Before the batch stored here.
    At(BatchPos),
}

impl SegmentLog {
    /// Where the oldest batch is (or the next one will be, when the log is empty).
    pub fn start_pos(&self) -> BatchPos {
        let st = lock(&self.shared.state);
        BatchPos {
            segment: st.start_offset(),
            position: 0,
        }
    }

    /// Whole batches from the one stored at `at` on, up to `max_bytes` (at least one,
    /// however large), within one segment; `next` says where to continue. Reading at
    /// the end of the log returns no bytes. [`Error::BadPosition`] when no batch starts
    /// at `at` (its segment is gone, or `at` is past its end or not a batch boundary).
    pub fn read_at(&self, at: BatchPos, max_bytes: usize) -> Result<PosSlice> {
        self.shared.read_at(at, max_bytes)
    }

    /// Removes the batch stored at `at` and every batch after it (a Raft log conflict
    /// that must cut one of several zero-width batches sharing an offset). Returns the
    /// new next offset. `at` may be the end of a segment (then the later segments go).
    /// Pending notifications are completed as [`SegmentLog::truncate_suffix`] does;
    /// one whose cut batch held no offset completes with `Ok` (no offset it waited for
    /// was lost).
    pub fn truncate_at(&self, at: BatchPos) -> Result<u64> {
        self.shared.truncate(Cut::At(at))
    }
}

impl Shared {
    fn read_at(&self, mut at: BatchPos, max_bytes: usize) -> Result<PosSlice> {
        let _structure = self.structure.read().unwrap_or_else(|p| p.into_inner());
        let bad = |at: BatchPos| Error::BadPosition {
            segment: at.segment,
            position: at.position,
        };
        let (file, size, following) = loop {
            let mut st = lock(&self.state);
            let size = st.segments.get(&at.segment).ok_or_else(|| bad(at))?.size;
            if at.position > size {
                return Err(bad(at));
            }
            let following = st.segments.range(at.segment + 1..).next().map(|(b, _)| *b);
            if at.position == size {
                match following {
                    // The end of a sealed segment is the start of the next one.
                    Some(b) => {
                        at = BatchPos {
                            segment: b,
                            position: 0,
                        };
                        continue;
                    }
                    None => {
                        return Ok(PosSlice {
                            bytes: Bytes::new(),
                            next: at,
                        });
                    }
                }
            }
            let file =
                open_segment_file(&self.dir, &mut st, at.segment, self.config.open_files_max)?;
            break (file, size, following);
        };
        let path = segment::log_path(&self.dir, at.segment);
        let remaining = size - at.position;
        // One `pread` of what is asked for; a longer first batch (always returned
        // whole) or a batch straddling the end of the buffer reads the rest.
        let mut buf = vec![0u8; remaining.min(max_bytes.max(HEADER_LEN) as u64) as usize];
        file.read_exact_at(&mut buf, at.position)
            .map_err(|e| Error::io("read segment", &path, e))?;
        let mut p = 0usize;
        while (p as u64) < remaining {
            if p + HEADER_LEN > buf.len()
                && !grow(
                    &file,
                    &path,
                    &mut buf,
                    at.position,
                    p + HEADER_LEN,
                    remaining,
                )?
            {
                return Err(match p {
                    0 => bad(at),
                    _ => Error::corruption(
                        at.segment,
                        at.position + p as u64,
                        "batch header runs past the end of the segment",
                    ),
                });
            }
            let h = match segment::parse_header(&buf[p..p + HEADER_LEN]) {
                Ok(h) => h,
                Err(_) if p == 0 => return Err(bad(at)),
                Err(e) => return Err(Error::corruption(at.segment, at.position + p as u64, e)),
            };
            let end = p + h.batch_length as usize;
            if end as u64 > remaining {
                return Err(Error::corruption(
                    at.segment,
                    at.position + p as u64,
                    "batch runs past the end of the segment",
                ));
            }
            if p > 0 && end > max_bytes {
                break;
            }
            if end > buf.len() {
                grow(&file, &path, &mut buf, at.position, end, remaining)?;
            }
            p = end;
        }
        buf.truncate(p);
        if let Some(cipher) = &self.cipher {
            cipher
                .apply_all(&mut buf)
                .map_err(|reason| Error::corruption(at.segment, at.position, reason))?;
        }
        let p = at.position + p as u64;
        let next = match following {
            Some(b) if p == size => BatchPos {
                segment: b,
                position: 0,
            },
            _ => BatchPos {
                segment: at.segment,
                position: p,
            },
        };
        Ok(PosSlice {
            bytes: Bytes::from(buf),
            next,
        })
    }

    pub(crate) fn truncate(&self, cut: Cut) -> Result<u64> {
        let _structure = self.structure.write().unwrap_or_else(|p| p.into_inner());
        let sync_guard = lock(&self.sync_lock);
        let mut st = lock(&self.state);
        st.check_failed()?;
        let (start, next) = (st.start_offset(), st.next_offset);
        let seg_base = match cut {
            Cut::Offset(from) if from >= next => return Ok(next),
            Cut::Offset(from) if from < start => {
                return Err(Error::OffsetOutOfRange {
                    requested: from,
                    start,
                    end: next,
                });
            }
            Cut::Offset(from) => {
                *st.segments
                    .range(..=from)
                    .next_back()
                    .expect("from >= start")
                    .0
            }
            Cut::At(at) => match st.segments.get(&at.segment) {
                Some(seg) if at.position <= seg.size => at.segment,
                _ => {
                    return Err(Error::BadPosition {
                        segment: at.segment,
                        position: at.position,
                    });
                }
            },
        };
        // Find the cut (a batch boundary) and the offset the log continues at, before
        // anything is changed: a bad position must leave the log as it was.
        let path = segment::log_path(&self.dir, seg_base);
        let (cut_pos, new_next) = {
            let file = open_segment_file(&self.dir, &mut st, seg_base, self.config.open_files_max)?;
            let seg = &st.segments[&seg_base];
            let mut w = Window::new(&file, &path, seg.size);
            match cut {
                Cut::Offset(from) => {
                    let mut p = u64::from(seg.index.position_for((from - seg_base) as u32));
                    let mut found = None;
                    while p < seg.size {
                        let h = header_at(&mut w, seg_base, p)?;
                        if h.next_offset() > from {
                            found = Some((p, h.base_offset));
                            break;
                        }
                        p += u64::from(h.batch_length);
                    }
                    found.ok_or_else(|| {
                        Error::corruption(seg_base, p, "offset not found in its segment")
                    })?
                }
                Cut::At(at) if at.position == seg.size => {
                    if st.segments.range(seg_base + 1..).next().is_none() {
                        return Ok(next);
                    }
                    (seg.size, seg.next)
                }
                Cut::At(at) => {
                    let hb = w.get(at.position, HEADER_LEN)?;
                    let h = hb.and_then(|hb| segment::parse_header(hb).ok()).ok_or(
                        Error::BadPosition {
                            segment: at.segment,
                            position: at.position,
                        },
                    )?;
                    (at.position, h.base_offset)
                }
            }
        };
        // Later segments go first (newest first, so a crash leaves a contiguous log).
        let later: Vec<u64> = st
            .segments
            .range(seg_base + 1..)
            .map(|(b, _)| *b)
            .rev()
            .collect();
        for b in later {
            st.segments.remove(&b);
            segment::remove_if_exists(&segment::log_path(&self.dir, b))?;
            segment::remove_index_files(&self.dir, b)?;
        }
        // The segment becomes active: it needs a writable handle, and its index files
        // would be stale.
        let file = Arc::new(segment::open_rw(&path, false)?);
        st.segments.get_mut(&seg_base).expect("segment exists").file = Some(Arc::clone(&file));
        recount_open(&mut st);
        segment::remove_index_files(&self.dir, seg_base)?;
        let seg = st.segments.get_mut(&seg_base).expect("segment exists");
        let interval = self.config.index_interval_bytes;
        let mut w = Window::new(&file, &path, seg.size);
        // Drop the index entries at or after the cut, then replay the batches from the
        // last kept entry up to the cut to restore the running state (max timestamp,
        // bytes since the last entry).
        seg.index.truncate((new_next - seg_base) as u32);
        let mut p = seg
            .index
            .offsets
            .last()
            .map_or(0, |e| u64::from(e.position));
        while p < cut_pos {
            let h = header_at(&mut w, seg_base, p)?;
            let rel = (h.base_offset - seg_base) as u32;
            seg.index
                .replay(interval, rel, p as u32, h.batch_length, h.max_timestamp);
            p += u64::from(h.batch_length);
        }
        seg.size = cut_pos;
        seg.next = new_next;
        let fatal = |st: &mut State, err: Error| -> Error {
            let w = st.fail(&err);
            fire(w, &Err(err.clone()));
            err
        };
        if let Err(e) = file.set_len(cut_pos).and_then(|()| file.sync_data()) {
            return Err(fatal(&mut st, Error::io("truncate segment", &path, e)));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        segment::sync_dir(&self.dir)?;
        st.next_offset = new_next;
        st.synced_bytes = st.written_bytes;
        st.synced_pos = (seg_base, cut_pos);
        // Everything below the cut is durable now (sealed segments were synced at roll,
        // the new active one just now). `durable` may go down: the log got shorter.
        self.durable.store(new_next, Ordering::Release);
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        drop(sync_guard);
        let (ok, cut_away): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|w| w.end <= new_next);
        fire(ok, &Ok(()));
        for w in cut_away {
            let end = w.end;
            (w.callback)(Err(Error::Truncated {
                end,
                truncated_from: new_next,
            }));
        }
        Ok(new_next)
    }
}

/// Extends `buf` (read from `start`) to hold `upto` bytes; `false` if they run past
/// `remaining`, the bytes left in the segment.
fn grow(
    file: &std::fs::File,
    path: &std::path::Path,
    buf: &mut Vec<u8>,
    start: u64,
    upto: usize,
    remaining: u64,
) -> Result<bool> {
    if upto as u64 > remaining {
        return Ok(false);
    }
    let old = buf.len();
    buf.resize(upto, 0);
    file.read_exact_at(&mut buf[old..], start + old as u64)
        .map_err(|e| Error::io("read segment", path, e))?;
    Ok(true)
}

/// The header of the batch at `p` of segment `base`; damage is corruption.
fn header_at(w: &mut Window<'_>, base: u64, p: u64) -> Result<qiss::batch::BatchHeader> {
    let Some(hb) = w.get(p, HEADER_LEN)? else {
        return Err(Error::corruption(
            base,
            p,
            "batch header runs past the end of the segment",
        ));
    };
    segment::parse_header(hb).map_err(|e| Error::corruption(base, p, e))
}
