//! `produce`: append one record batch to a partition, on its leader.
//!
//! Checks, in order (each failure is a typed error and nothing is stored): the topic
//! and partition exist (`UnknownTopic`, `UnknownPartition`); this node hosts the
//! partition (else `NotLeader` with a replica's client address: the preferred leader,
//! which redirects if it does not lead); the batch fits `batch_bytes_max`, is a whole,
//! valid Qiss batch (CRC and every record's framing) and not a control batch
//! (`InvalidRecordBatch`). Then, by `acks`:
//!
//! Then, on the leader, the disk: while less than the node's reserve
//! (`--storage-reserve-bytes`) would stay free after the batch, the answer is
//! `StorageFull` and nothing is proposed; reads, commits and acks keep working, and
//! writes resume by themselves once space is freed.
//!
//! Idempotent producers: a batch whose header carries a producer id (`>= 0`) is
//! deduplicated by `Partition::append` against the partition's replicated
//! producer table and the batches in flight on this leader: a retry of a batch the
//! partition holds gets the first copy's offset and is not stored again; a retry older
//! than the remembered window gets `DuplicateSequence`. The request's `producer` stamp
//! is informational: the header (covered by the CRC) is what counts.
//!
//! - `all`: `Partition::append` (`WriteAck::Quorum`), answered once a quorum has the batch on disk
//!   and it is applied, with its base offset; bounded by the request's `timeout_ms` (at
//!   most `produce_timeout_ms_max`), after which the answer is `NotEnoughReplicas` (the
//!   batch may still commit later).
//! - `leader`: `Partition::append` (`WriteAck::Leader`), answered with the base offset as
//!   soon as the leader's own log holds the batch durably (the log store fires a
//!   notification carried by the entry after its `fdatasync`), before any follower has
//!   it; the batch then commits as usual. Same timeout and errors as `all`. The trade:
//!   a batch acknowledged this way is lost if the leader fails before a quorum stores it.
//! - `none`: the batch is handed to the leader's Raft (`propose_records_ff`) and the
//!   answer goes out at once, before the batch is written anywhere, with
//!   `base_offset = u64::MAX` ([`OFFSET_UNKNOWN`]): the batch may be lost.

use std::time::Duration;

use neo_protocol::api::{Acks, ProduceRequest, ProduceResponse};
use neo_protocol::{ErrorCode, RpcError};
use neo_security::{Operation, ResourceType, SecurityContext};
use qiss::batch::{BatchLimits, ValidatedBatch};

use super::{broker_error, hosted_replica, raft_error};
use crate::facade::Broker;
use crate::partition::WriteAck;

/// `base_offset` of an `acks=none` answer: the offset is not known when it is sent.
pub const OFFSET_UNKNOWN: u64 = u64::MAX;

/// Bound on a batch's uncompressed records section: zstd may expand a batch of at most
/// `batch_bytes_max` to this much while it is validated, and no more.
const RECORDS_LENGTH_MAX: u32 = 64 * 1024 * 1024;

/// `StorageFull` unless the node's disk keeps its reserve free after `len` more bytes
/// (`--storage-reserve-bytes`), or if this replica's log already failed on a full disk.
pub(crate) fn storage_full(b: &Broker, len: u64, what: &str) -> Result<(), RpcError> {
    b.store()
        .admit(len)
        .map_err(|e| RpcError::new(ErrorCode::StorageFull, format!("{what}: {e}")))
}

pub(crate) async fn produce(
    b: &Broker,
    ctx: &SecurityContext,
    req: ProduceRequest,
) -> Result<ProduceResponse, RpcError> {
    // Sending to a queue is producing to its topic; the grant asked is the queue's.
    let resource = if b.state().queues.contains_key(&req.topic) {
        ResourceType::Queue
    } else {
        ResourceType::Topic
    };
    b.authorize(ctx, resource, &req.topic, Operation::Produce)?;
    let what = format!("{}/{}", req.topic, req.partition);
    let replica = hosted_replica(b, &req.topic, req.partition, &what)?;
    let limits = b.limits();
    let size = req.records.len();
    if size > limits.batch_bytes_max {
        return Err(RpcError::new(
            ErrorCode::InvalidRecordBatch,
            format!(
                "record batch of {size} bytes exceeds batch_bytes_max {}",
                limits.batch_bytes_max
            ),
        ));
    }
    // The one check of the batch on this node: header, CRC, limits and every record's
    // framing. The proof travels down (Raft proposal, log append), which trust it
    // instead of checking the bytes again; `req.records` is a slice of the request
    // frame's buffer, and it is stored from there without a copy.
    let batch = ValidatedBatch::validate(
        req.records,
        &BatchLimits {
            records_length_max: RECORDS_LENGTH_MAX,
        },
    )
    .map_err(|e| RpcError::new(ErrorCode::InvalidRecordBatch, format!("record batch: {e}")))?;
    let header = *batch.header();
    if header.is_control() {
        return Err(RpcError::new(
            ErrorCode::InvalidRecordBatch,
            "control batches (attribute bit 3) are written by the broker only",
        ));
    }
    // A full disk refuses new data on the leader, before anything is proposed (see
    // `storage_full`); a follower leaves the answer to the leader (`NotLeader` below).
    if replica.group().ensure_leader().is_ok() {
        storage_full(b, size as u64, &what)?;
    }
    let ack = match req.acks {
        Acks::None => {
            replica
                .group()
                .propose_records_ff(batch)
                .await
                .map_err(|e| raft_error(b, e, &what))?;
            return Ok(ProduceResponse {
                base_offset: OFFSET_UNKNOWN,
                log_append_time_ms: None,
                record_count: header.record_count,
            });
        }
        Acks::All => WriteAck::Quorum,
        Acks::Leader => WriteAck::Leader,
    };
    let max = limits.produce_timeout_ms_max;
    let timeout_ms = if req.timeout_ms == 0 {
        max
    } else {
        req.timeout_ms.min(max)
    };
    let appended = tokio::time::timeout(
        Duration::from_millis(u64::from(timeout_ms)),
        replica.append(batch, ack),
    )
    .await;
    let (base_offset, record_count) = match appended {
        Ok(r) => r.map_err(|e| broker_error(b, e, &what))?,
        Err(_) => {
            return Err(RpcError::new(
                ErrorCode::NotEnoughReplicas,
                format!("{what}: not committed within {timeout_ms} ms (it may still commit)"),
            ));
        }
    };
    Ok(ProduceResponse {
        base_offset,
        log_append_time_ms: None,
        record_count,
    })
}
