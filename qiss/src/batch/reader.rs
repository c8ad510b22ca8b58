//! Reading a record batch: validation and zero-copy record views.
//!
//! Validation is one pass: header checks, CRC over the covered bytes, then (for record
//! batches) a walk over the records that checks every length against its record and
//! every record against the section, without allocating per record. A zstd section is
//! decompressed once into one buffer whose size, `records_length`, is bounded by
//! [`BatchLimits`] before it is allocated.

use std::borrow::Cow;

use bytes::Bytes;

use super::header::{BatchHeader, Compression, FRAMING_LEN, HEADER_LEN};
use super::record::{self, RawRecord};
use crate::error::{Error, Result};

/// Byte position of `records_length` in the header, for error reports.
const RECORDS_LENGTH_POS: usize = 73;

/// Smallest encoded record: length, offset_delta, timestamp_delta, key_length (-1),
/// header_count and value_length, one byte each.
const RECORD_LEN_MIN: usize = 6;

/// Bounds a reader enforces on untrusted batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest uncompressed records section a reader accepts; also the most a zstd
    /// section may make it allocate.
    pub records_length_max: u32,
}

impl BatchLimits {
    /// 64 MiB: above any produce request Neo accepts, and an allocation a node survives.
    pub const DEFAULT: BatchLimits = BatchLimits {
        records_length_max: 64 * 1024 * 1024,
    };
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits::DEFAULT
    }
}

/// Fully checks one encoded batch that fills `batch` exactly, with
/// [`BatchLimits::DEFAULT`]: header, CRC, and the structure of every record.
/// Control batches' sections are opaque: only their length is checked.
pub fn validate(batch: &[u8]) -> Result<BatchHeader> {
    validate_with(batch, &BatchLimits::DEFAULT)
}

/// [`validate`] with explicit limits.
pub fn validate_with(batch: &[u8], limits: &BatchLimits) -> Result<BatchHeader> {
    let header = check_whole(batch)?;
    let section = section(batch, &header, limits)?;
    if !header.is_control() {
        walk(&section, &header)?;
    }
    Ok(header)
}

/// Header, exact length and CRC.
fn check_whole(batch: &[u8]) -> Result<BatchHeader> {
    let header = super::header::check(batch)?;
    let remaining = batch.len() - header.batch_length as usize;
    if remaining != 0 {
        return Err(Error::TrailingBytes { remaining });
    }
    Ok(header)
}

/// The uncompressed records section of a checked batch.
fn section<'a>(batch: &'a [u8], h: &BatchHeader, limits: &BatchLimits) -> Result<Cow<'a, [u8]>> {
    if h.records_length > limits.records_length_max {
        return Err(Error::LengthLimit {
            position: RECORDS_LENGTH_POS,
            len: u64::from(h.records_length),
            limit: u64::from(limits.records_length_max),
        });
    }
    let stored = &batch[HEADER_LEN..h.batch_length as usize];
    match h.compression() {
        Compression::None => {
            if stored.len() != h.records_length as usize {
                return Err(Error::CorruptBatch {
                    reason: "records_length does not match batch_length",
                });
            }
            Ok(Cow::Borrowed(stored))
        }
        Compression::Zstd => decompress(stored, h.records_length).map(Cow::Owned),
    }
}

fn decompress(stored: &[u8], records_length: u32) -> Result<Vec<u8>> {
    // Exactly one frame, whose declared size (when it declares one) is records_length:
    // both checks are header reads, done before the output buffer is allocated.
    match zstd::zstd_safe::find_frame_compressed_size(stored) {
        Ok(n) if n == stored.len() => {}
        _ => {
            return Err(Error::CorruptBatch {
                reason: "records section is not exactly one zstd frame",
            });
        }
    }
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(None) => {}
        Ok(Some(n)) if n == u64::from(records_length) => {}
        _ => {
            return Err(Error::CorruptBatch {
                reason: "zstd frame size does not match records_length",
            });
        }
    }
    let out = zstd::bulk::decompress(stored, records_length as usize)
        .map_err(|e| Error::Compression(e.to_string()))?;
    if out.len() != records_length as usize {
        return Err(Error::CorruptBatch {
            reason: "decompressed size does not match records_length",
        });
    }
    Ok(out)
}

/// Walks every record of an uncompressed section, checking structure and timestamps.
fn walk(section: &[u8], h: &BatchHeader) -> Result<()> {
    if h.record_count as usize > section.len() / RECORD_LEN_MIN {
        return Err(Error::CorruptBatch {
            reason: "record_count larger than the records section can hold",
        });
    }
    let mut pos = 0;
    let mut max_timestamp = i64::MIN;
    for index in 0..h.record_count {
        let r = record::parse(section, &mut pos, index, true)?;
        if index == 0 && r.timestamp_delta != 0 {
            return Err(Error::CorruptRecord {
                index,
                reason: "first record's timestamp_delta is not 0",
            });
        }
        let ts = h
            .first_timestamp
            .checked_add(r.timestamp_delta)
            .ok_or(Error::CorruptRecord {
                index,
                reason: "timestamp overflows",
            })?;
        max_timestamp = max_timestamp.max(ts);
    }
    if pos != section.len() {
        return Err(Error::CorruptBatch {
            reason: "bytes after the last record",
        });
    }
    if max_timestamp != h.max_timestamp {
        return Err(Error::CorruptBatch {
            reason: "max_timestamp does not match the records",
        });
    }
    Ok(())
}

/// A validated batch, holding its bytes and (for zstd) its decompressed records.
///
/// Records are views into those buffers: [`Record::value`] borrows,
/// [`Record::value_bytes`] is a reference-counted slice. Nothing is copied per record.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    batch: Bytes,
    header: BatchHeader,
    /// The uncompressed records section: a slice of `batch`, or the one buffer a zstd
    /// section was decompressed into.
    records: Bytes,
}

impl RecordBatch {
    /// Validates `batch` (exactly one batch, [`BatchLimits::DEFAULT`]) and wraps it.
    pub fn new(batch: Bytes) -> Result<Self> {
        Self::with_limits(batch, &BatchLimits::DEFAULT)
    }

    /// Validates `batch` with explicit limits and wraps it.
    pub fn with_limits(batch: Bytes, limits: &BatchLimits) -> Result<Self> {
        let header = check_whole(&batch)?;
        let records = match section(&batch, &header, limits)? {
            Cow::Borrowed(s) => batch.slice_ref(s),
            Cow::Owned(v) => Bytes::from(v),
        };
        if !header.is_control() {
            walk(&records, &header)?;
        }
        Ok(RecordBatch {
            batch,
            header,
            records,
        })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as produced (plus the log's stamps).
    pub fn as_bytes(&self) -> &Bytes {
        &self.batch
    }

    /// The batch's bytes.
    pub fn into_bytes(self) -> Bytes {
        self.batch
    }

    /// Number of records (`record_count`).
    pub fn len(&self) -> u32 {
        self.header.record_count
    }

    /// Whether the batch holds no record: only a zero-width control batch does.
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }

    /// Whether this is a control batch (its section is opaque; [`RecordBatch::records`]
    /// yields nothing).
    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }

    /// The uncompressed records section (for a control batch, its opaque payload).
    pub fn records_section(&self) -> &Bytes {
        &self.records
    }

    /// The records, in offset order. Empty for a control batch.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            pos: 0,
            index: if self.is_control() {
                self.header.record_count
            } else {
                0
            },
        }
    }
}

/// Iterator over the records of a [`RecordBatch`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: &'a RecordBatch,
    pos: usize,
    index: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        let h = &self.batch.header;
        if self.index >= h.record_count {
            return None;
        }
        // Validated when the batch was made; an error here would be a bug, and ends the
        // iteration rather than panicking.
        let raw = record::parse(&self.batch.records, &mut self.pos, self.index, false).ok()?;
        let record = Record {
            section: &self.batch.records,
            offset: h.base_offset.wrapping_add(u64::from(self.index)),
            timestamp: h.first_timestamp.wrapping_add(raw.timestamp_delta),
            raw,
        };
        self.index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.batch.header.record_count - self.index) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Records<'_> {}

/// A view of one record inside a batch.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    section: &'a Bytes,
    offset: u64,
    timestamp: i64,
    raw: RawRecord,
}

impl<'a> Record<'a> {
    /// The record's offset (`base_offset` + its index).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key, `None` when the record has none.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.raw.key.map(|(s, e)| &self.section[s..e])
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        &self.section[self.raw.value.0..self.raw.value.1]
    }

    /// The key as a reference-counted slice of the batch (no copy).
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.raw.key.map(|(s, e)| self.section.slice(s..e))
    }

    /// The value as a reference-counted slice of the batch (no copy).
    pub fn value_bytes(&self) -> Bytes {
        self.section.slice(self.raw.value.0..self.raw.value.1)
    }

    /// Number of headers.
    pub fn header_count(&self) -> u32 {
        self.raw.header_count
    }

    /// The headers, `(name, value)`, in the order they were pushed.
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            region: &self.section[self.raw.headers.0..self.raw.headers.1],
            pos: 0,
            left: self.raw.header_count,
        }
    }
}

/// Iterator over a record's headers.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    region: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        record::next_header(self.region, &mut self.pos)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Headers<'_> {}

/// Splits a buffer of back-to-back batches (a fetch response, a segment read) into
/// one `Bytes` per batch, without copying or validating them. A trailing partial batch
/// is an error.
pub fn split_batches(buf: Bytes) -> SplitBatches {
    SplitBatches { buf }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug, Clone)]
pub struct SplitBatches {
    buf: Bytes,
}

impl Iterator for SplitBatches {
    type Item = Result<Bytes>;

    fn next(&mut self) -> Option<Result<Bytes>> {
        if self.buf.is_empty() {
            return None;
        }
        let len = match BatchHeader::peek_length(&self.buf) {
            None => {
                let position = self.buf.len();
                self.buf.clear();
                return Some(Err(Error::UnexpectedEof {
                    position,
                    needed: FRAMING_LEN - position,
                }));
            }
            Some(Err(e)) => {
                self.buf.clear();
                return Some(Err(e));
            }
            Some(Ok(len)) => len as usize,
        };
        if len > self.buf.len() {
            let position = self.buf.len();
            self.buf.clear();
            return Some(Err(Error::UnexpectedEof {
                position,
                needed: len - position,
            }));
        }
        Some(Ok(self.buf.split_to(len)))
    }
}
