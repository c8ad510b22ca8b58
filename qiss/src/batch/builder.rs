//! Building a record batch on the producer side.

use bytes::Bytes;

use super::header::{BatchHeader, CONTROL_FLAG, CRC_START, Compression, HEADER_LEN};
use super::reader::BatchLimits;
use super::record;
use crate::error::{Error, Result};

/// Default zstd level: zstd's own default, a good speed/ratio point for a producer.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;

/// Accumulates records and encodes them as one batch.
///
/// Records are encoded as they are pushed, into a buffer that already has room for the
/// header, so an uncompressed `build` copies nothing. [`BatchBuilder::encoded_len`] lets
/// a producer close a batch before it grows past its size limit.
///
/// ```
/// use qiss::batch::{BatchBuilder, RecordBatch};
/// let mut b = BatchBuilder::new();
/// b.push(1_700_000_000_000, Some(b"k"), &[("trace", b"t1")], b"hello")?;
/// let batch = RecordBatch::new(b.build()?)?;
/// let r = batch.records().next().unwrap();
/// assert_eq!(r.value(), b"hello");
/// # Ok::<(), qiss::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// `HEADER_LEN` placeholder bytes, then the records section.
    buf: Vec<u8>,
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
    zstd_level: i32,
    records_length_max: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty builder: no producer id (-1), no compression, the default limits.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty builder whose buffer has room for `records_bytes` of records.
    pub fn with_capacity(records_bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + records_bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            record_count: 0,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            compression: Compression::None,
            zstd_level: ZSTD_LEVEL_DEFAULT,
            records_length_max: BatchLimits::DEFAULT.records_length_max,
        }
    }

    /// Sets the idempotent producer's id, epoch and the sequence of the first record.
    pub fn producer(&mut self, id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the compression of the records section.
    pub fn compression(&mut self, compression: Compression) -> &mut Self {
        self.compression = compression;
        self
    }

    /// Sets the zstd level (1..=22; negative levels are zstd's fast modes).
    pub fn zstd_level(&mut self, level: i32) -> &mut Self {
        self.zstd_level = level;
        self
    }

    /// Caps the uncompressed records section; a push past it fails. Readers apply the
    /// same bound ([`BatchLimits`]), so a builder should not exceed theirs.
    pub fn records_length_max(&mut self, bytes: u32) -> &mut Self {
        self.records_length_max = bytes;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.record_count
    }

    /// Whether no record was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Size of the batch if built now without compression.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Size `encoded_len` would grow by if this record were pushed.
    pub fn record_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> usize {
        let delta = if self.is_empty() {
            0
        } else {
            timestamp.wrapping_sub(self.first_timestamp)
        };
        record::encoded_len(self.record_count, delta, key, headers, value)
    }

    /// Appends a record with a timestamp (ms since the Unix epoch), an optional key,
    /// headers (name, value) and a value. Fails, leaving the builder unchanged, when the
    /// batch would exceed its limits or the timestamp is too far from the first one.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> Result<()> {
        if self.record_count == u32::MAX {
            return Err(Error::BatchLimit {
                reason: "more than u32::MAX records",
            });
        }
        let delta = if self.is_empty() {
            0
        } else {
            timestamp
                .checked_sub(self.first_timestamp)
                .ok_or(Error::BatchLimit {
                    reason: "timestamp too far from the batch's first timestamp",
                })?
        };
        let len = record::encoded_len(self.record_count, delta, key, headers, value);
        let records_length = (self.buf.len() - HEADER_LEN) as u64 + len as u64;
        if records_length > u64::from(self.records_length_max) {
            return Err(Error::BatchLimit {
                reason: "records section larger than records_length_max",
            });
        }
        record::write(&mut self.buf, self.record_count, delta, key, headers, value);
        debug_assert_eq!(self.buf.len() as u64 - HEADER_LEN as u64, records_length);
        if self.is_empty() {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        } else {
            self.max_timestamp = self.max_timestamp.max(timestamp);
        }
        self.record_count += 1;
        Ok(())
    }

    /// Encodes the batch (base offset 0, Raft stamps 0: the log stamps them). At least
    /// one record must have been pushed.
    pub fn build(self) -> Result<Bytes> {
        self.finish(0, &[])
    }

    /// Encodes a control batch: attribute bit 3 set, one nominal record, and `payload`
    /// as an opaque records section that only the control batch's owner interprets
    /// (Neo's Raft layer stores its non-record entries this way).
    pub fn control(payload: &[u8]) -> Result<Bytes> {
        let mut b = BatchBuilder::with_capacity(payload.len());
        b.record_count = 1;
        b.finish(CONTROL_FLAG, payload)
    }

    fn finish(mut self, extra_attributes: u16, opaque: &[u8]) -> Result<Bytes> {
        if self.record_count == 0 {
            return Err(Error::BatchLimit {
                reason: "a batch needs at least one record",
            });
        }
        self.buf.extend_from_slice(opaque);
        let records_length =
            u32::try_from(self.buf.len() - HEADER_LEN).map_err(|_| Error::BatchLimit {
                reason: "records section larger than u32::MAX",
            })?;
        let mut buf = match self.compression {
            Compression::None => self.buf,
            Compression::Zstd => {
                let compressed = zstd::bulk::compress(&self.buf[HEADER_LEN..], self.zstd_level)
                    .map_err(|e| Error::Compression(e.to_string()))?;
                let mut out = Vec::with_capacity(HEADER_LEN + compressed.len());
                out.resize(HEADER_LEN, 0);
                out.extend_from_slice(&compressed);
                out
            }
        };
        let batch_length = u32::try_from(buf.len()).map_err(|_| Error::BatchLimit {
            reason: "batch larger than u32::MAX",
        })?;
        let mut header = BatchHeader {
            base_offset: 0,
            batch_length,
            term: 0,
            log_index: 0,
            crc: 0,
            attributes: self.compression.bits() | extra_attributes,
            record_count: self.record_count,
            first_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_length,
        };
        header.write_to(&mut buf);
        header.crc = crc32fast::hash(&buf[CRC_START..]);
        header.write_to(&mut buf);
        Ok(Bytes::from(buf))
    }
}
