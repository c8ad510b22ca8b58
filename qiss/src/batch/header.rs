//! The fixed 77-byte record-batch header.
//!
//! ```text
//! off len field            notes
//!   0   8 base_offset      u64 LE; offset of the first record; stamped by the log
//!   8   4 batch_length     u32 LE; total bytes of the batch including this header
//!  12   4 magic            b"QISB"
//!  16   1 version          1
//!  17   8 term             u64 LE; Raft term of the log entry carrying the batch
//!                          (0 outside Raft); stamped by the partition leader
//!  25   8 log_index        u64 LE; Raft log index of that entry (0 outside Raft)
//!  33   4 crc32            u32 LE; CRC-32 (IEEE, crc32fast) of bytes [37, batch_length)
//!  37   2 attributes       u16 LE; bits 0-2 compression (0 none, 1 zstd),
//!                          bit 3 control batch (a Raft entry without user records,
//!                          skipped by consumers), other bits 0
//!  39   4 record_count     u32 LE; offsets are base_offset .. base_offset+count; >= 1,
//!                          except that a control batch may hold 0 (it then occupies
//!                          no offset: Neo's partition logs store Raft control entries so)
//!  43   8 first_timestamp  i64 LE; milliseconds since the Unix epoch
//!  51   8 max_timestamp    i64 LE
//!  59   8 producer_id      i64 LE; -1 when the producer is not idempotent
//!  67   2 producer_epoch   i16 LE; -1 when none
//!  69   4 base_sequence    i32 LE; -1 when none
//!  73   4 records_length   u32 LE; uncompressed size of the records section
//!  77   . records section  (a zstd frame when compressed)
//! ```
//!
//! The stamped fields (`base_offset`, `term`, `log_index`) and `batch_length` sit before
//! the CRC, so that a log can stamp them without recomputing it (Kafka does the same with
//! its base offset and leader epoch), and so that a reader can frame a stream of batches
//! by reading 12 bytes. Everything from `attributes` on is covered by the CRC and never
//! changes between producer, disk and consumer.
//!
//! Why the Raft stamps live in the batch: the partition log *is* the Raft log (see
//! design.md), one batch per Raft entry, so the log store can recover an entry's log id
//! from the segment file alone, and a follower's segment is byte-identical to the
//! leader's.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// CRC verifications this process ran ([`BatchHeader::verify_crc`]).
static CRC_CHECKS: AtomicU64 = AtomicU64::new(0);

/// How many batch CRCs this process has verified so far. A diagnostic: a test reads it
/// before and after a produce to prove how often the batch was checked. One relaxed
/// increment per batch (not per record), next to a CRC over the whole batch.
pub fn crc_checks_total() -> u64 {
    CRC_CHECKS.load(Ordering::Relaxed)
}

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 77;
/// The magic bytes at offset 12.
pub const MAGIC: [u8; 4] = *b"QISB";
/// The only batch layout version so far.
pub const VERSION: u8 = 1;
/// Byte offset of `base_offset`.
pub const BASE_OFFSET_POS: usize = 0;
/// Byte offset of `batch_length`.
pub const BATCH_LENGTH_POS: usize = 8;
/// Byte offset of the magic.
pub const MAGIC_POS: usize = 12;
/// Byte offset of the version.
pub const VERSION_POS: usize = 16;
/// Byte offset of the Raft `term` stamp.
pub const TERM_POS: usize = 17;
/// Byte offset of the Raft `log_index` stamp.
pub const LOG_INDEX_POS: usize = 25;
/// Byte offset of the CRC field.
pub const CRC_POS: usize = 33;
/// First byte covered by the CRC.
pub const CRC_START: usize = 37;
/// Bytes a reader needs to learn a batch's total length (`base_offset` + `batch_length`).
pub const FRAMING_LEN: usize = 12;
/// Mask of the compression bits in `attributes`.
pub const COMPRESSION_MASK: u16 = 0b111;
/// Attribute bit of a control batch (a Raft entry that carries no user records).
pub const CONTROL_FLAG: u16 = 0b1000;
/// Every attribute bit that has a meaning in version 1.
pub const ATTRIBUTES_KNOWN: u16 = COMPRESSION_MASK | CONTROL_FLAG;

/// Compression codec of a batch's records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// Records section is one zstd frame.
    Zstd,
}

impl Compression {
    /// The attribute bits of this codec.
    pub fn bits(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    /// The codec named by attribute bits.
    pub fn from_bits(attributes: u16) -> Result<Self> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(Error::CorruptBatch {
                reason: "unknown compression codec",
            }),
        }
    }
}

/// The decoded fixed header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Total bytes of the batch including the header.
    pub batch_length: u32,
    /// Raft term of the entry carrying this batch (0 outside Raft).
    pub term: u64,
    /// Raft log index of the entry carrying this batch (0 outside Raft).
    pub log_index: u64,
    /// Stored CRC-32 of bytes `[CRC_START, batch_length)`.
    pub crc: u32,
    /// Attribute bits (compression in bits 0-2, control flag in bit 3).
    pub attributes: u16,
    /// Number of records; at least 1.
    pub record_count: u32,
    /// Timestamp of the first record, ms since the epoch.
    pub first_timestamp: i64,
    /// Largest record timestamp, ms since the epoch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Uncompressed size of the records section.
    pub records_length: u32,
}

fn u16_at(b: &[u8], pos: usize) -> u16 {
    u16::from_le_bytes([b[pos], b[pos + 1]])
}
fn u32_at(b: &[u8], pos: usize) -> u32 {
    u32::from_le_bytes(b[pos..pos + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], pos: usize) -> u64 {
    u64::from_le_bytes(b[pos..pos + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Reads the total length of the batch that starts at `buf[0]` from its first 12
    /// bytes, checking only that it is at least a header long. `None` when fewer than
    /// [`FRAMING_LEN`] bytes are given (a normal outcome when reading a stream).
    pub fn peek_length(buf: &[u8]) -> Option<Result<u32>> {
        if buf.len() < FRAMING_LEN {
            return None;
        }
        let len = u32_at(buf, BATCH_LENGTH_POS);
        if (len as usize) < HEADER_LEN {
            return Some(Err(Error::CorruptBatch {
                reason: "batch_length shorter than the header",
            }));
        }
        Some(Ok(len))
    }

    /// Parses and checks the fixed header at the start of `buf` (magic, version,
    /// compression bits, record count, length not beyond `buf`). Does not check the CRC:
    /// see [`BatchHeader::verify_crc`].
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < HEADER_LEN {
            return Err(Error::UnexpectedEof {
                position: buf.len(),
                needed: HEADER_LEN - buf.len(),
            });
        }
        if buf[MAGIC_POS..MAGIC_POS + 4] != MAGIC {
            return Err(Error::CorruptBatch {
                reason: "bad magic",
            });
        }
        if buf[VERSION_POS] != VERSION {
            return Err(Error::CorruptBatch {
                reason: "unsupported batch version",
            });
        }
        let h = BatchHeader {
            base_offset: u64_at(buf, BASE_OFFSET_POS),
            batch_length: u32_at(buf, BATCH_LENGTH_POS),
            term: u64_at(buf, TERM_POS),
            log_index: u64_at(buf, LOG_INDEX_POS),
            crc: u32_at(buf, CRC_POS),
            attributes: u16_at(buf, 37),
            record_count: u32_at(buf, 39),
            first_timestamp: u64_at(buf, 43) as i64,
            max_timestamp: u64_at(buf, 51) as i64,
            producer_id: u64_at(buf, 59) as i64,
            producer_epoch: u16_at(buf, 67) as i16,
            base_sequence: u32_at(buf, 69) as i32,
            records_length: u32_at(buf, 73),
        };
        if (h.batch_length as usize) < HEADER_LEN {
            return Err(Error::CorruptBatch {
                reason: "batch_length shorter than the header",
            });
        }
        if h.batch_length as usize > buf.len() {
            return Err(Error::UnexpectedEof {
                position: buf.len(),
                needed: h.batch_length as usize - buf.len(),
            });
        }
        if h.base_offset
            .checked_add(u64::from(h.record_count))
            .is_none()
        {
            // base_offset sits outside the CRC, so a damaged one must not make
            // `next_offset` overflow later.
            return Err(Error::CorruptBatch {
                reason: "base_offset + record_count overflows",
            });
        }
        if h.attributes & !ATTRIBUTES_KNOWN != 0 {
            return Err(Error::CorruptBatch {
                reason: "reserved attribute bits set",
            });
        }
        // A zero-width control batch is how a partition log stores a Raft entry that
        // must not consume a record offset; a user batch always holds a record.
        if h.record_count == 0 && h.attributes & CONTROL_FLAG == 0 {
            return Err(Error::CorruptBatch {
                reason: "record_count is zero",
            });
        }
        Compression::from_bits(h.attributes)?;
        Ok(h)
    }

    /// The compression codec named by the attributes.
    pub fn compression(&self) -> Compression {
        // `parse` rejected unknown codecs.
        Compression::from_bits(self.attributes).unwrap_or(Compression::None)
    }

    /// Whether this is a control batch (no user records; consumers skip it).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Offset of the last record (`base_offset + record_count - 1`; `base_offset - 1`,
    /// saturating, for a zero-width control batch, which holds no record).
    pub fn last_offset(&self) -> u64 {
        // Saturating: `parse` rejects headers where this would overflow, but a header
        // built by hand must not panic either.
        self.next_offset().saturating_sub(1)
    }

    /// Offset the next batch in the log gets (`base_offset + record_count`).
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }

    /// Checks the stored CRC against `batch[CRC_START..batch_length]`. `batch` must hold
    /// at least `batch_length` bytes (as [`BatchHeader::parse`] checked).
    pub fn verify_crc(&self, batch: &[u8]) -> Result<()> {
        let end = self.batch_length as usize;
        if batch.len() < end {
            return Err(Error::UnexpectedEof {
                position: batch.len(),
                needed: end - batch.len(),
            });
        }
        let covered = batch.get(CRC_START..end).ok_or(Error::CorruptBatch {
            reason: "batch_length shorter than the header",
        })?;
        CRC_CHECKS.fetch_add(1, Ordering::Relaxed);
        let computed = crc32fast::hash(covered);
        if computed != self.crc {
            return Err(Error::CrcMismatch {
                stored: self.crc,
                computed,
            });
        }
        Ok(())
    }

    /// Writes this header into `buf[..HEADER_LEN]` (the CRC field as stored in `self`).
    pub fn write_to(&self, buf: &mut [u8]) {
        buf[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        buf[8..12].copy_from_slice(&self.batch_length.to_le_bytes());
        buf[12..16].copy_from_slice(&MAGIC);
        buf[16] = VERSION;
        buf[17..25].copy_from_slice(&self.term.to_le_bytes());
        buf[25..33].copy_from_slice(&self.log_index.to_le_bytes());
        buf[33..37].copy_from_slice(&self.crc.to_le_bytes());
        buf[37..39].copy_from_slice(&self.attributes.to_le_bytes());
        buf[39..43].copy_from_slice(&self.record_count.to_le_bytes());
        buf[43..51].copy_from_slice(&self.first_timestamp.to_le_bytes());
        buf[51..59].copy_from_slice(&self.max_timestamp.to_le_bytes());
        buf[59..67].copy_from_slice(&self.producer_id.to_le_bytes());
        buf[67..69].copy_from_slice(&self.producer_epoch.to_le_bytes());
        buf[69..73].copy_from_slice(&self.base_sequence.to_le_bytes());
        buf[73..77].copy_from_slice(&self.records_length.to_le_bytes());
    }
}

/// Stamps `base_offset` into an encoded batch without touching the CRC (the field is
/// outside it). `batch` must be at least [`FRAMING_LEN`] bytes long.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&base_offset.to_le_bytes());
}

/// Stamps the Raft `term` and `log_index` of the entry carrying `batch` (outside the
/// CRC). `batch` must be at least [`CRC_POS`] bytes long.
pub fn set_raft_stamp(batch: &mut [u8], term: u64, log_index: u64) {
    batch[TERM_POS..TERM_POS + 8].copy_from_slice(&term.to_le_bytes());
    batch[LOG_INDEX_POS..LOG_INDEX_POS + 8].copy_from_slice(&log_index.to_le_bytes());
}

/// Parses the header at the start of `batch` and verifies its CRC, without decoding
/// records: the cheap check a log runs on every append and every recovery scan.
pub fn check(batch: &[u8]) -> Result<BatchHeader> {
    let h = BatchHeader::parse(batch)?;
    h.verify_crc(batch)?;
    Ok(h)
}
