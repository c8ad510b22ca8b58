//! [`ValidatedBatch`]: a record batch whose header, CRC and (for a produced batch) every
//! record were checked once, on receipt, so that the layers below (Raft, the log) take
//! the proof instead of checking the bytes again.

use bytes::Bytes;

use super::header::{BatchHeader, HEADER_LEN};
use super::reader::{self, BatchLimits};
use crate::error::Result;

/// One whole record batch that passed a check, with its parsed header.
///
/// Only this module builds one, and only by checking: [`ValidatedBatch::validate`] (what
/// a broker runs on a produced batch: header, CRC, limits, every record) or
/// [`ValidatedBatch::check`] (header, CRC, exact length: what a replica runs on a batch a
/// leader already validated). The bytes cannot be changed afterwards (`Bytes` is
/// immutable and the fields are private), so the header and the CRC verdict stay true;
/// the log's stamps (`base_offset`, `term`, `log_index`) lie outside the CRC and are
/// written into a copy of the header only ([`ValidatedBatch::stamped_header`]).
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl ValidatedBatch {
    /// Fully validates `bytes` (exactly one batch: header, CRC, `limits`, the structure
    /// of every record) and keeps them, without copying.
    pub fn validate(bytes: Bytes, limits: &BatchLimits) -> Result<ValidatedBatch> {
        let header = reader::validate_with(&bytes, limits)?;
        Ok(ValidatedBatch { bytes, header })
    }

    /// Checks header, CRC and exact length only (the cheap check of
    /// [`super::check`]), for bytes that a peer already validated in full.
    pub fn check(bytes: Bytes) -> Result<ValidatedBatch> {
        let header = super::header::check(&bytes)?;
        let remaining = bytes.len() - header.batch_length as usize;
        if remaining != 0 {
            return Err(crate::Error::TrailingBytes { remaining });
        }
        Ok(ValidatedBatch { bytes, header })
    }

    /// The parsed header (stamps as they are in the bytes).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, as received.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Total length in bytes (`batch_length`).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A copy of the header bytes with the log's stamps written in. The stamps are
    /// outside the CRC, so the copy and [`ValidatedBatch::body`] written back to back
    /// are a valid batch with the same CRC: a log stores a stamped batch this way
    /// without copying (or re-checking) the body.
    pub fn stamped_header(&self, base_offset: u64, term: u64, log_index: u64) -> [u8; HEADER_LEN] {
        stamped_header(&self.bytes, base_offset, term, log_index)
    }

    /// Everything after the header (the records section).
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// The first [`HEADER_LEN`] bytes of `batch` with the log's stamps written in. `batch`
/// must hold at least a header (any parsed batch does).
pub fn stamped_header(
    batch: &[u8],
    base_offset: u64,
    term: u64,
    log_index: u64,
) -> [u8; HEADER_LEN] {
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&batch[..HEADER_LEN]);
    super::header::set_base_offset(&mut head, base_offset);
    super::header::set_raft_stamp(&mut head, term, log_index);
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, CRC_POS, check, crc_checks_total};

    fn batch() -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..3 {
            b.push(1, Some(b"k"), &[], format!("v{i}").as_bytes())
                .expect("push");
        }
        b.build().expect("build")
    }

    #[test]
    fn validate_keeps_the_bytes_and_checks_the_crc() {
        let bytes = batch();
        let before = crc_checks_total();
        let v = ValidatedBatch::validate(bytes.clone(), &BatchLimits::DEFAULT).expect("valid");
        // Other tests run in parallel and count too: at least one, and the batch's bytes
        // are the caller's (no copy).
        assert!(crc_checks_total() > before);
        assert_eq!(v.as_bytes().as_ptr(), bytes.as_ptr());
        assert_eq!(v.header().record_count, 3);
    }

    #[test]
    fn a_damaged_batch_is_refused_by_both_checks() {
        let mut damaged = batch().to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let damaged = Bytes::from(damaged);
        assert!(matches!(
            ValidatedBatch::validate(damaged.clone(), &BatchLimits::DEFAULT),
            Err(crate::Error::CrcMismatch { .. })
        ));
        assert!(matches!(
            ValidatedBatch::check(damaged),
            Err(crate::Error::CrcMismatch { .. })
        ));
        let mut long = batch().to_vec();
        long.push(0);
        assert!(matches!(
            ValidatedBatch::check(Bytes::from(long)),
            Err(crate::Error::TrailingBytes { remaining: 1 })
        ));
    }

    #[test]
    fn a_stamped_header_and_the_body_are_the_batch_with_the_same_crc() {
        let v = ValidatedBatch::check(batch()).expect("valid");
        let head = v.stamped_header(100, 7, 42);
        let mut stored = head.to_vec();
        stored.extend_from_slice(v.body());
        let h = check(&stored).expect("the stamps are outside the CRC");
        assert_eq!((h.base_offset, h.term, h.log_index), (100, 7, 42));
        assert_eq!(stored[CRC_POS..], v.as_bytes()[CRC_POS..]);
    }
}
