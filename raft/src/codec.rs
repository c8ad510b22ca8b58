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

/// How an entry is written to the segment log.
pub(crate) enum StoredBatch<'a> {
    /// A record batch: `head` is its header with the log's stamps written in, `batch` the
    /// bytes as proposed or received; the log writes `head`, then `batch` after its
    /// header. No copy of the body, no CRC: the stamps are outside the CRC, and the
    /// batch's CRC was checked on receipt (see [`RecordBatch`]).
    Records {
        head: [u8; HEADER_LEN],
        batch: &'a Bytes,
    },
    /// Any other entry, encoded as a whole control batch claiming `control_records`
    /// records.
    Control(Vec<u8>),
}

/// Encodes `entry` as the batch stored at `base_offset`; a control entry's batch claims
/// `control_records` records.
pub(crate) fn entry_to_batch(
    entry: &Entry,
    base_offset: u64,
    control_records: u32,
) -> Result<StoredBatch<'_>, Error> {
    let term = entry.log_id.leader_id.term;
    let index = entry.log_id.index;
    match &entry.payload {
        EntryPayload::Normal(Proposal::Records(b)) => {
            // A header parse (no CRC) so that a short buffer is an error, not a panic.
            BatchHeader::parse(&b.0).map_err(|source| Error::BadBatch { index, source })?;
            Ok(StoredBatch::Records {
                head: qiss::batch::stamped_header(&b.0, base_offset, term, index),
                batch: &b.0,
            })
        }
        other => {
            let body = encode(other).map_err(|source| Error::Codec {
                what: "entry payload",
                source,
            })?;
            Ok(StoredBatch::Control(control_batch(
                base_offset,
                term,
                index,
                control_records,
                &body,
            )))
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

/// Decodes the entry stored as `batch` (one whole batch read back from this replica's
/// log). A control batch's CRC is checked here, before its payload is decoded and
/// trusted. A record batch's is not: it was checked on its receipt here (and the tail
/// segment's batches again by the scan at open), its entry is only read for the header
/// fields the state machine applies and to be replicated (the follower checks it on
/// receipt), and consumers check it on fetch. Checking it again here would be the leader's second CRC
/// of every produced batch (openraft applies entries by reading them back).
pub(crate) fn batch_to_entry(batch: Bytes) -> Result<Entry, Error> {
    let bad = |source| Error::BadBatch { index: 0, source };
    let h = BatchHeader::parse(&batch).map_err(bad)?;
    let log_id = LogId::new(h.term.into(), h.log_index);
    let payload = if h.is_control() {
        h.verify_crc(&batch).map_err(bad)?;
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
