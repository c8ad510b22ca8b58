//! The record batch: the container one produce request carries, the partition log
//! stores and a fetch returns, byte for byte the same.
//!
//! ```text
//! +---------------------------+  header (77 bytes, `header`): framing, Raft stamps,
//! | base_offset, batch_length |  CRC, attributes, counts, timestamps, producer ids,
//! | magic, version, stamps    |  records_length
//! | crc32 ─────────────┐      |
//! | attributes ... records_len|  <- CRC covers from `attributes` to the end
//! +--------------------│------+
//! | records section    ▼      |  record_count records (`record`), or one zstd frame
//! |  record 0, record 1, ...  |  of them; a control batch's section is opaque
//! +---------------------------+
//! ```
//!
//! - [`BatchBuilder`] encodes records on the producer side.
//! - [`check`] is the cheap check a log runs on append and recovery (header + CRC).
//! - [`validate`] / [`RecordBatch::new`] add the walk over every record.
//! - [`RecordBatch::records`] iterates zero-copy [`Record`] views.
//! - [`ValidatedBatch`] proves one of those checks ran: a broker validates a produced
//!   batch once, on receipt, and hands the proof down instead of re-checking the bytes.
//! - [`crc_checks_total`] counts CRC verifications (a diagnostic: tests prove with it
//!   that a produce is checked once).

mod builder;
pub mod header;
mod reader;
mod record;
mod validated;

pub use builder::{BatchBuilder, ZSTD_LEVEL_DEFAULT};
pub use header::{
    ATTRIBUTES_KNOWN, BASE_OFFSET_POS, BATCH_LENGTH_POS, BatchHeader, COMPRESSION_MASK,
    CONTROL_FLAG, CRC_POS, CRC_START, Compression, FRAMING_LEN, HEADER_LEN, LOG_INDEX_POS, MAGIC,
    MAGIC_POS, TERM_POS, VERSION, VERSION_POS, check, crc_checks_total, set_base_offset,
    set_raft_stamp,
};
pub use reader::{
    BatchLimits, Headers, Record, RecordBatch, Records, SplitBatches, split_batches, validate,
    validate_with,
};
pub use validated::{ValidatedBatch, stamped_header};

#[cfg(test)]
mod tests;
