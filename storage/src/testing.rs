//! Builders of valid record batches for tests and benchmarks (of this crate and of the
//! crates above it), so that they need not wait for the Qiss batch builder.

use qiss::batch::header::{CRC_POS, CRC_START};
use qiss::batch::{BatchHeader, HEADER_LEN};

/// Builds one valid batch: a header claiming `record_count` records with the given
/// timestamps, followed by `payload` as the records section, with a correct CRC.
/// `base_offset` is 0 (the log stamps it).
pub fn batch(
    record_count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    payload: &[u8],
) -> Vec<u8> {
    assert!(record_count >= 1, "a batch holds at least one record");
    let batch_length = u32::try_from(HEADER_LEN + payload.len()).expect("batch under 4 GiB");
    let header = BatchHeader {
        base_offset: 0,
        batch_length,
        term: 0,
        log_index: 0,
        crc: 0,
        attributes: 0,
        record_count,
        first_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_length: payload.len() as u32,
    };
    let mut out = vec![0u8; batch_length as usize];
    header.write_to(&mut out);
    out[HEADER_LEN..].copy_from_slice(payload);
    let crc = crc32fast::hash(&out[CRC_START..]);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A batch of exactly `total_bytes` bytes (at least the header) whose payload is a
/// pattern derived from `seed`, so that two batches with different seeds differ.
pub fn batch_of_size(total_bytes: usize, record_count: u32, timestamp: i64, seed: u64) -> Vec<u8> {
    let payload_len = total_bytes.saturating_sub(HEADER_LEN);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let payload: Vec<u8> = (0..payload_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    batch(record_count, timestamp, timestamp, &payload)
}

/// A zero-width control batch (attribute bit 3, `record_count` 0) with `payload` as its
/// opaque section: how a partition log stores a Raft control entry, which occupies no
/// record offset.
pub fn control_batch(payload: &[u8]) -> Vec<u8> {
    let mut out = batch(1, 0, 0, payload);
    let mut header = BatchHeader::parse(&out).expect("a valid batch");
    header.attributes = qiss::batch::header::CONTROL_FLAG;
    header.record_count = 0;
    header.write_to(&mut out);
    let crc = crc32fast::hash(&out[CRC_START..]);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_le_bytes());
    out
}
