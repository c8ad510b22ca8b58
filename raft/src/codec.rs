//! Bytes in and out of this crate: the Qiss serde codec for RPC bodies and snapshots, and
//! the mapping between a Raft entry and the record batch that stores it.
//!
//! # Entry ⇄ batch
//! One entry is one record batch in the segment log:
//! - a record batch proposal is stored as the producer's batch itself, with `base_offset`,
//!   `term` and `log_index` stamped into its header (all outside the CRC);
//! - every other entry (blank, membership, metadata command) is a *control batch*
//!   (attribute bit 3) whose records section is the Qiss encoding of the entry's
//!   payload, with `record_count` 0 in a partition (it occupies no record offset: a
//!   zero-width batch sharing its base offset with the next record batch) and 1 in the
//!   metadata group (see `GroupKind::control_offsets`).
//!
//! So the entry's log id is `(term, log_index)` read back from the stamps, and a
//! follower that stores the same entries at the same offsets holds byte-identical batches.

use bytes::Bytes;
use openraft::EntryPayload;
use qiss::batch::BatchHeader;
use qiss::batch::header::{CONTROL_FLAG, CRC_START, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::types::{Entry, LogId, Node, NodeId, Proposal, RecordBatch};

/// Encodes a value with the Qiss codec.
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, qiss::Error> {
    qiss::to_vec(v)
}

/// Decodes a value with the Qiss codec (trailing bytes are an error).
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, qiss::Error> {
    qiss::from_slice(b)
}

/// The `record_count` of an encoded batch, if its header parses.
pub(crate) fn record_count(batch: &[u8]) -> Option<u64> {
    BatchHeader::parse(batch)
        .ok()
        .map(|h| u64::from(h.record_count))
}

type Payload = EntryPayload<Proposal, NodeId, Node>;

/// Encodes `entry` as the batch stored at `base_offset`; a control entry's batch claims
/// `control_records` records.
pub(crate) fn entry_to_batch(
    entry: &Entry,
    base_offset: u64,
    control_records: u32,
) -> Result<Vec<u8>, Error> {
    let term = entry.log_id.leader_id.term;
    let index = entry.log_id.index;
    match &entry.payload {
        EntryPayload::Normal(Proposal::Records(b)) => {
            let mut bytes = b.0.to_vec();
            qiss::batch::check(&bytes).map_err(|source| Error::BadBatch { index, source })?;
            qiss::batch::set_base_offset(&mut bytes, base_offset);
            qiss::batch::set_raft_stamp(&mut bytes, term, index);
            Ok(bytes)
        }
        other => {
            let body = encode(other).map_err(|source| Error::Codec {
                what: "entry payload",
                source,
            })?;
            Ok(control_batch(
                base_offset,
                term,
                index,
                control_records,
                &body,
            ))
        }
    }
}

/// Builds a control batch whose records section is `body`.
pub(crate) fn control_batch(
    base_offset: u64,
    term: u64,
    index: u64,
    record_count: u32,
    body: &[u8],
) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut h = BatchHeader {
        base_offset,
        batch_length: len as u32,
        term,
        log_index: index,
        crc: 0,
        attributes: CONTROL_FLAG,
        record_count,
        first_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_length: body.len() as u32,
    };
    let mut buf = vec![0u8; len];
    buf[HEADER_LEN..].copy_from_slice(body);
    h.write_to(&mut buf);
    h.crc = crc32fast::hash(&buf[CRC_START..]);
    h.write_to(&mut buf);
    buf
}

/// Decodes the entry stored as `batch` (one whole batch, CRC already checked by the
/// caller or checked here).
pub(crate) fn batch_to_entry(batch: Bytes) -> Result<Entry, Error> {
    let h = qiss::batch::check(&batch).map_err(|source| Error::BadBatch { index: 0, source })?;
    let log_id = LogId::new(h.term.into(), h.log_index);
    let payload = if h.is_control() {
        let body = &batch[HEADER_LEN..h.batch_length as usize];
        decode::<Payload>(body).map_err(|source| Error::Codec {
            what: "entry payload",
            source,
        })?
    } else {
        EntryPayload::Normal(Proposal::Records(RecordBatch::new(
            batch.slice(..h.batch_length as usize),
        )))
    };
    Ok(Entry { log_id, payload })
}
