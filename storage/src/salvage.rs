//! Reopening a log that failed: back to its last successful `fdatasync`.
//!
//! A failed `fdatasync` must never be retried as if the data were safe: the kernel may
//! have dropped the dirty pages, or marked them clean without writing them, so a later
//! sync that "succeeds" proves nothing about the bytes written before it ("fsyncgate").
//! A [`crate::SegmentLog`] therefore refuses all work after its first failure, and a
//! log under [`crate::FsyncPolicy::Always`] notes here where its data was last known to
//! be on disk: the active segment and its length at the last sync that returned `Ok`.
//!
//! When the same directory is opened again in this process (a Raft group recovering
//! its replica), [`apply`] cuts the log back to that point before recovery reads it:
//! later segments are deleted and the segment is truncated, so bytes whose sync failed
//! are never read back as if they were durable. Under `Always` nothing past that point
//! was ever reported durable, so nothing acknowledged is cut; a Raft replica gets the
//! rest again from its leader.
//!
//! The note lives in memory only: if the process dies before reopening, recovery at the
//! next start reads whatever the page cache or disk holds (torn tails are cut by their
//! CRC as always). Logs under `Interval` or `Never` report data durable before it is
//! synced (their documented loss window), so cutting would drop acknowledged data:
//! they note nothing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::segment;

/// The last point known durable: (base offset of the active segment, its length).
pub(crate) type SyncedPos = (u64, u64);

fn notes() -> &'static Mutex<HashMap<PathBuf, SyncedPos>> {
    static NOTES: OnceLock<Mutex<HashMap<PathBuf, SyncedPos>>> = OnceLock::new();
    NOTES.get_or_init(Default::default)
}

/// Notes that the log in `dir` failed with everything up to `pos` durable. The first
/// note stands until the directory is reopened.
pub(crate) fn note(dir: &Path, pos: SyncedPos) {
    let mut notes = crate::log::lock(notes());
    notes.entry(dir.to_path_buf()).or_insert(pos);
}

/// Whether a failed log in `dir` waits to be cut back on its next open.
pub fn pending(dir: &Path) -> bool {
    crate::log::lock(notes()).contains_key(dir)
}

/// Cuts the log in `dir` back to the point noted when it failed, if any: deletes the
/// segments after it, truncates its segment and syncs. Returns the point cut to.
pub(crate) fn apply(dir: &Path) -> Result<Option<SyncedPos>> {
    let Some(&(base, len)) = crate::log::lock(notes()).get(dir) else {
        return Ok(None);
    };
    let later = segments_after(dir, base)?;
    for b in &later {
        segment::remove_if_exists(&segment::log_path(dir, *b))?;
        segment::remove_index_files(dir, *b)?;
    }
    let path = segment::log_path(dir, base);
    let file = segment::open_rw(&path, !path.exists())?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    if size > len {
        file.set_len(len)
            .map_err(|e| Error::io("truncate to the last sync", &path, e))?;
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync segment", &path, e))?;
    segment::remove_index_files(dir, base)?;
    segment::sync_dir(dir)?;
    tracing::warn!(
        dir = %dir.display(),
        segment = base,
        position = len,
        cut_bytes = size.saturating_sub(len),
        cut_segments = later.len(),
        "reopening a failed log at its last successful fdatasync"
    );
    crate::log::lock(notes()).remove(dir);
    Ok(Some((base, len)))
}

/// Base offsets of the segments of `dir` after `base`, newest first (so that removing
/// them in this order leaves a contiguous log if interrupted).
fn segments_after(dir: &Path, base: u64) -> Result<Vec<u64>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list log directory", dir, e))?;
    let mut later = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list log directory", dir, e))?;
        if let Some(b) = entry
            .file_name()
            .to_str()
            .and_then(|n| segment::parse_name(n, "log"))
            && b > base
        {
            later.push(b);
        }
    }
    later.sort_unstable_by(|a, b| b.cmp(a));
    Ok(later)
}

/// What [`cut_damaged`] moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Bytes of the damaged segment from the cut on, now in the quarantine folder.
    pub tail_bytes: u64,
    /// Whole later segments moved to the quarantine folder.
    pub later_segments: usize,
    /// The quarantine folder (`<log dir>/quarantine`).
    pub quarantine: PathBuf,
}

/// Cuts a damaged log at a batch boundary: the segment `segment` ends at `position`,
/// and every later segment goes. Nothing is deleted: the cut tail and the later
/// segments are moved to `<dir>/quarantine/` (recovery ignores that folder) for an
/// operator to inspect or remove. The log must be closed.
///
/// This is how a Raft replica gets past damage found when it opens (a flipped bit in a
/// segment, a corrupt header): it keeps the intact prefix and its leader sends it the
/// rest. A replica cut this way has forgotten entries it may have acknowledged, so Raft's
/// guarantee then rests on the other replicas that hold them (as after losing a disk).
pub fn cut_damaged(dir: &Path, segment: u64, position: u64) -> Result<CutReport> {
    let quarantine = dir.join("quarantine");
    fs::create_dir_all(&quarantine)
        .map_err(|e| Error::io("create quarantine folder", &quarantine, e))?;
    let later = segments_after(dir, segment)?;
    for b in &later {
        let from = segment::log_path(dir, *b);
        let to = quarantine.join(from.file_name().unwrap_or_default());
        fs::rename(&from, &to).map_err(|e| Error::io("quarantine segment", &from, e))?;
        segment::remove_index_files(dir, *b)?;
    }
    let path = segment::log_path(dir, segment);
    let file = segment::open_rw(&path, false)?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    let mut tail_bytes = 0;
    if size > position {
        let to = quarantine.join(format!("{segment:020}-{position}.log.tail"));
        copy_tail(&file, &path, position, &to)?;
        file.set_len(position)
            .map_err(|e| Error::io("cut damaged segment", &path, e))?;
        tail_bytes = size - position;
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync segment", &path, e))?;
    segment::remove_index_files(dir, segment)?;
    segment::sync_dir(&quarantine)?;
    segment::sync_dir(dir)?;
    tracing::error!(
        dir = %dir.display(),
        segment,
        position,
        tail_bytes,
        later_segments = later.len(),
        quarantine = %quarantine.display(),
        "damaged log cut at the first bad batch; what followed is in the quarantine folder"
    );
    Ok(CutReport {
        tail_bytes,
        later_segments: later.len(),
        quarantine,
    })
}

/// Copies `file` from `position` to its end into a new file `to` and syncs it, a bounded
/// buffer at a time (a damaged tail may be a whole segment: hundreds of MiB).
fn copy_tail(file: &fs::File, path: &Path, position: u64, to: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src = file;
    src.seek(SeekFrom::Start(position))
        .map_err(|e| Error::io("seek to damaged tail", path, e))?;
    let mut out = fs::File::create(to).map_err(|e| Error::io("quarantine damaged tail", to, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read damaged tail", path, e)),
        };
        std::io::Write::write_all(&mut out, &buf[..n])
            .map_err(|e| Error::io("quarantine damaged tail", to, e))?;
    }
    out.sync_all()
        .map_err(|e| Error::io("fsync quarantined tail", to, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_cut_back_to_its_noted_point_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(segment::log_path(d, 0), vec![1u8; 300]).unwrap();
        fs::write(segment::log_path(d, 10), vec![2u8; 50]).unwrap();
        fs::write(segment::log_path(d, 20), vec![3u8; 50]).unwrap();
        assert_eq!(apply(d).unwrap(), None, "nothing noted: nothing cut");
        note(d, (10, 20));
        note(d, (20, 40)); // the first note stands
        assert!(pending(d));
        assert_eq!(apply(d).unwrap(), Some((10, 20)));
        assert!(!pending(d));
        assert_eq!(fs::metadata(segment::log_path(d, 0)).unwrap().len(), 300);
        assert_eq!(fs::metadata(segment::log_path(d, 10)).unwrap().len(), 20);
        assert!(!segment::log_path(d, 20).exists());
        assert_eq!(apply(d).unwrap(), None, "applied once");
    }

    #[test]
    fn a_damaged_log_is_cut_and_what_followed_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A tail of several copy buffers, every byte telling its position.
        let first: Vec<u8> = (0..(3 << 20) + 300).map(|i| (i % 251) as u8).collect();
        fs::write(segment::log_path(d, 0), &first).unwrap();
        fs::write(segment::log_path(d, 10), vec![2u8; 50]).unwrap();
        let r = cut_damaged(d, 0, 120).unwrap();
        assert_eq!(
            (r.tail_bytes, r.later_segments),
            (first.len() as u64 - 120, 1)
        );
        assert_eq!(fs::metadata(segment::log_path(d, 0)).unwrap().len(), 120);
        assert!(!segment::log_path(d, 10).exists());
        let q = d.join("quarantine");
        assert_eq!(
            fs::read(q.join("00000000000000000010.log")).unwrap(),
            vec![2u8; 50]
        );
        assert_eq!(
            fs::read(q.join("00000000000000000000-120.log.tail")).unwrap(),
            first[120..]
        );
    }
}
