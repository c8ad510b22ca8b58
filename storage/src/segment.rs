//! One segment: a file of concatenated batches, its in-memory index, and the scans that
//! recovery and lookups run over it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qiss::batch::header::FRAMING_LEN;
use qiss::batch::header::{BATCH_LENGTH_POS, MAGIC, MAGIC_POS};
use qiss::batch::{BatchHeader, HEADER_LEN};

use crate::at_rest::LogCipher;
use crate::error::{Error, Result};
use crate::index::{SealedInfo, SegmentIndex};

/// Bytes read at a time by scans.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub(crate) fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Parses `00000000000000000042.log` (exactly 20 digits) into 42.
pub(crate) fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One segment of a log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of its first batch; also its file name.
    pub(crate) base: u64,
    /// Offset after its last batch.
    pub(crate) next: u64,
    /// Bytes of whole batches in the file.
    pub(crate) size: u64,
    pub(crate) index: SegmentIndex,
    /// Open handle, if any (always for the active segment; LRU-cached for sealed ones).
    pub(crate) file: Option<Arc<File>>,
    /// LRU tick of the last read.
    pub(crate) last_used: u64,
}

/// Outcome of scanning a segment file from the start.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) index: SegmentIndex,
    /// End of the last valid batch.
    pub(crate) size: u64,
    /// Offset after the last valid batch.
    pub(crate) next: u64,
    /// Where and why the scan stopped before the end of the file.
    pub(crate) stopped: Option<(u64, String)>,
}

/// A read-through window over a file for sequential scans.
pub(crate) struct Window<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl<'a> Window<'a> {
    pub(crate) fn new(file: &'a File, path: &'a Path, file_len: u64) -> Self {
        Window {
            file,
            path,
            file_len,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// The bytes `[pos, pos + len)`, or `None` if they run past the end of the file.
    pub(crate) fn get(&mut self, pos: u64, len: usize) -> Result<Option<&[u8]>> {
        if pos + len as u64 > self.file_len {
            return Ok(None);
        }
        let have = pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + self.buf.len() as u64;
        if !have {
            let want = (len.max(SCAN_CHUNK_BYTES) as u64).min(self.file_len - pos) as usize;
            self.buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buf, pos)
                .map_err(|e| Error::io("read segment", self.path, e))?;
            self.buf_pos = pos;
        }
        let start = (pos - self.buf_pos) as usize;
        Ok(Some(&self.buf[start..start + len]))
    }
}

/// Checks the batch at `pos`: framing, header, CRC (of the decrypted batch, in a log
/// encrypted at rest), and that its base offset is `expected`. `Ok(Err(reason))` when
/// it is not a valid batch.
pub(crate) fn check_batch_at(
    w: &mut Window<'_>,
    pos: u64,
    expected: Option<u64>,
    cipher: Option<&LogCipher>,
) -> Result<std::result::Result<BatchHeader, String>> {
    let len = match w.get(pos, FRAMING_LEN)? {
        None => return Ok(Err("incomplete batch framing at the end of the file".into())),
        Some(f) => match BatchHeader::peek_length(f) {
            Some(Ok(len)) => len as usize,
            Some(Err(e)) => return Ok(Err(e.to_string())),
            None => unreachable!("window returned FRAMING_LEN bytes"),
        },
    };
    let Some(bytes) = w.get(pos, len)? else {
        return Ok(Err(format!(
            "batch of {len} bytes runs past the end of the file"
        )));
    };
    let checked = match cipher {
        None => qiss::batch::check(bytes),
        Some(cipher) => {
            if len < HEADER_LEN {
                return Ok(Err(format!(
                    "batch of {len} bytes is shorter than a header"
                )));
            }
            let mut plain = bytes.to_vec();
            let (head, body) = plain.split_at_mut(HEADER_LEN);
            if let Err(reason) = cipher.apply(head, body) {
                return Ok(Err(reason));
            }
            qiss::batch::check(&plain)
        }
    };
    let h = match checked {
        Ok(h) => h,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Some(expected) = expected
        && h.base_offset != expected
    {
        return Ok(Err(format!(
            "base offset {} where {expected} was expected",
            h.base_offset
        )));
    }
    Ok(Ok(h))
}

/// Parses a batch header from its first [`HEADER_LEN`] bytes alone (`BatchHeader::parse`
/// wants the whole batch), for walks that skip from header to header.
pub(crate) fn parse_header(hb: &[u8]) -> std::result::Result<BatchHeader, String> {
    let mut tmp = [0u8; HEADER_LEN];
    tmp.copy_from_slice(&hb[..HEADER_LEN]);
    let len = match BatchHeader::peek_length(&tmp) {
        Some(Ok(len)) => len,
        Some(Err(e)) => return Err(e.to_string()),
        None => unreachable!("HEADER_LEN bytes are more than the framing"),
    };
    tmp[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    let mut h = BatchHeader::parse(&tmp).map_err(|e| e.to_string())?;
    h.batch_length = len;
    Ok(h)
}

/// Scans a segment file from the start, verifying every batch, and rebuilds its index.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    base: u64,
    file_len: u64,
    interval_bytes: u32,
    cipher: Option<&LogCipher>,
) -> Result<Scan> {
    let mut w = Window::new(file, path, file_len);
    let mut index = SegmentIndex::new();
    let (mut pos, mut next) = (0u64, base);
    while pos < file_len {
        match check_batch_at(&mut w, pos, Some(next), cipher)? {
            Ok(h) => {
                if h.next_offset() - base > u64::from(u32::MAX) {
                    return Ok(Scan {
                        index,
                        size: pos,
                        next,
                        stopped: Some((pos, "segment spans more than 2^32 offsets".into())),
                    });
                }
                index.on_batch(
                    interval_bytes,
                    (next - base) as u32,
                    pos as u32,
                    h.batch_length,
                    h.max_timestamp,
                );
                pos += u64::from(h.batch_length);
                next = h.next_offset();
            }
            Err(reason) => {
                return Ok(Scan {
                    index,
                    size: pos,
                    next,
                    stopped: Some((pos, reason)),
                });
            }
        }
    }
    Ok(Scan {
        index,
        size: pos,
        next,
        stopped: None,
    })
}

/// Whether any valid batch (header and CRC) starts after `bad_pos`: the test that tells
/// mid-log corruption from a torn tail. Candidates are found by their magic bytes.
pub(crate) fn valid_batch_after(
    file: &File,
    path: &Path,
    bad_pos: u64,
    file_len: u64,
    cipher: Option<&LogCipher>,
) -> Result<Option<u64>> {
    let mut w = Window::new(file, path, file_len);
    let mut chunk_start = bad_pos + 1;
    while chunk_start + HEADER_LEN as u64 <= file_len {
        let chunk_len = ((file_len - chunk_start) as usize).min(SCAN_CHUNK_BYTES);
        let chunk = w
            .get(chunk_start, chunk_len)?
            .expect("within file")
            .to_vec();
        for (i, win) in chunk.windows(MAGIC.len()).enumerate() {
            if win != MAGIC {
                continue;
            }
            let Some(start) = (chunk_start + i as u64).checked_sub(MAGIC_POS as u64) else {
                continue;
            };
            if start <= bad_pos {
                continue;
            }
            if check_batch_at(&mut w, start, None, cipher)?.is_ok() {
                return Ok(Some(start));
            }
        }
        // Overlap by the magic length so a magic split across chunks is still seen.
        chunk_start += (chunk_len as u64)
            .saturating_sub(MAGIC.len() as u64 - 1)
            .max(1);
    }
    Ok(None)
}

/// Writes the index files of a segment being sealed, and syncs them.
pub(crate) fn write_index_files(dir: &Path, seg: &Segment) -> Result<()> {
    let info = SealedInfo {
        segment_size: seg.size,
        next_offset: seg.next,
        max_timestamp: seg.index.max_timestamp,
    };
    write_synced(&index_path(dir, seg.base), &seg.index.encode_offsets(info))?;
    write_synced(&time_index_path(dir, seg.base), &seg.index.encode_times())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io("create index", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write index", path, e))?;
    f.sync_data()
        .map_err(|e| Error::io("fdatasync index", path, e))
}

/// Loads a sealed segment's index files; `None` when missing or damaged.
pub(crate) fn load_sealed_index(
    dir: &Path,
    base: u64,
    size: u64,
    next: u64,
) -> Option<SegmentIndex> {
    let i = fs::read(index_path(dir, base)).ok()?;
    let t = fs::read(time_index_path(dir, base)).ok()?;
    match SegmentIndex::decode_sealed(&i, &t, base, size, next) {
        Ok(idx) => Some(idx),
        Err(reason) => {
            tracing::warn!(
                segment = base,
                reason,
                "damaged index files; rebuilding from the segment"
            );
            None
        }
    }
}

/// Removes a segment's index files (missing ones are fine).
pub(crate) fn remove_index_files(dir: &Path, base: u64) -> Result<()> {
    for p in [index_path(dir, base), time_index_path(dir, base)] {
        remove_if_exists(&p)?;
    }
    Ok(())
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove file", path, e)),
    }
}

pub(crate) fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)
        .map_err(|e| {
            Error::io(
                if create {
                    "create segment"
                } else {
                    "open segment"
                },
                path,
                e,
            )
        })
}

pub(crate) fn open_ro(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("open segment", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        let p = log_path(Path::new("/x"), 42);
        assert_eq!(p.file_name().unwrap(), "00000000000000000042.log");
        assert_eq!(parse_name("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_name("00000000000000000042.index", "index"), Some(42));
        assert_eq!(parse_name("0000000000000000042.log", "log"), None);
        assert_eq!(parse_name("0000000000000000004x.log", "log"), None);
        assert_eq!(parse_name("00000000000000000042.log.tmp", "log"), None);
        assert_eq!(
            parse_name(&format!("{:020}.log", u64::MAX), "log"),
            Some(u64::MAX)
        );
    }
}
