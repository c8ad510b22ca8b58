//! `produce`: append one record batch to a partition, on its leader.
//!
//! Checks, in order (each failure is a typed error and nothing is stored): the topic
//! and partition exist (`UnknownTopic`, `UnknownPartition`); this node hosts the
//! partition (else `NotLeader` with a replica's client address: the preferred leader,
//! which redirects if it does not lead); the batch fits `batch_bytes_max`, is a whole,
//! valid Qiss batch (CRC and every record's framing) and not a control batch
//! (`InvalidRecordBatch`). Then, by `acks`:
//!
//! Idempotent producers: a batch whose header carries a producer id (`>= 0`) is
//! deduplicated by `RaftGroup::propose_records` against the partition's replicated
//! producer table and the batches in flight on this leader: a retry of a batch the
//! partition holds gets the first copy's offset and is not stored again; a retry older
//! than the remembered window gets `DuplicateSequence`. The request's `producer` stamp
//! is informational: the header (covered by the CRC) is what counts.
//!
//! - `all`: `RaftGroup::propose_records`, answered once a quorum has the batch on disk
//!   and it is applied, with its base offset; bounded by the request's `timeout_ms` (at
//!   most `produce_timeout_ms_max`), after which the answer is `NotEnoughReplicas` (the
//!   batch may still commit later).
//! - `leader`: `RaftGroup::propose_records_leader_ack`, answered with the base offset as
//!   soon as the leader's own log holds the batch durably (the log store fires a
//!   notification carried by the entry after its `fdatasync`), before any follower has
//!   it; the batch then commits as usual. Same timeout and errors as `all`. The trade:
//!   a batch acknowledged this way is lost if the leader fails before a quorum stores it.
//! - `none`: the batch is handed to the leader's Raft (`propose_records_ff`) and the
//!   answer goes out at once, before the batch is written anywhere, with
//!   `base_offset = u64::MAX` ([`OFFSET_UNKNOWN`]): the batch may be lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use neo_protocol::api::{Acks, ProduceRequest, ProduceResponse};
use neo_protocol::{ErrorCode, RequestContext, RpcError};
use qiss::batch::{BatchLimits, ValidatedBatch};

use super::{lookup_error, not_leader, raft_error};
use crate::node::Shared;

/// `base_offset` of an `acks=none` answer: the offset is not known when it is sent.
pub(crate) const OFFSET_UNKNOWN: u64 = u64::MAX;

/// Bound on a batch's uncompressed records section: zstd may expand a batch of at most
/// `batch_bytes_max` to this much while it is validated, and no more.
const RECORDS_LENGTH_MAX: u32 = 64 * 1024 * 1024;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    _ctx: RequestContext,
    req: ProduceRequest,
) -> Result<ProduceResponse, RpcError> {
    let started = Instant::now();
    shared
        .metrics
        .produce_requests
        .fetch_add(1, Ordering::Relaxed);
    let r = produce(&shared, req).await;
    match &r {
        Ok(resp) => {
            shared
                .metrics
                .produce_records
                .fetch_add(u64::from(resp.0.record_count), Ordering::Relaxed);
            shared
                .metrics
                .produce_bytes
                .fetch_add(resp.1 as u64, Ordering::Relaxed);
        }
        Err(_) => {
            shared
                .metrics
                .produce_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.metrics.produce_latency.observe(started.elapsed());
    r.map(|(resp, _)| resp)
}

/// The response and the batch's size in bytes.
async fn produce(
    shared: &Shared,
    req: ProduceRequest,
) -> Result<(ProduceResponse, usize), RpcError> {
    let what = format!("{}/{}", req.topic, req.partition);
    let p = shared
        .partition(&req.topic, req.partition)
        .map_err(|e| lookup_error(e, &req.topic, req.partition))?;
    let Some(group) = p.group else {
        // Not a replica here: send the client to the preferred leader.
        return Err(not_leader(shared, p.info.replicas.first().copied(), &what));
    };
    let size = req.records.len();
    if size > shared.limits.batch_bytes_max {
        return Err(RpcError::new(
            ErrorCode::InvalidRecordBatch,
            format!(
                "record batch of {size} bytes exceeds batch_bytes_max {}",
                shared.limits.batch_bytes_max
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
    match req.acks {
        Acks::None => {
            group
                .propose_records_ff(batch)
                .await
                .map_err(|e| raft_error(shared, e, &what))?;
            Ok((
                ProduceResponse {
                    base_offset: OFFSET_UNKNOWN,
                    log_append_time_ms: None,
                    record_count: header.record_count,
                },
                size,
            ))
        }
        Acks::All | Acks::Leader => {
            let max = shared.limits.produce_timeout_ms_max;
            let timeout_ms = if req.timeout_ms == 0 {
                max
            } else {
                req.timeout_ms.min(max)
            };
            let started = Instant::now();
            let leader_only = req.acks == Acks::Leader;
            let proposed =
                tokio::time::timeout(Duration::from_millis(u64::from(timeout_ms)), async {
                    if leader_only {
                        group.propose_records_leader_ack(batch).await
                    } else {
                        group.propose_records(batch).await
                    }
                })
                .await;
            let (base_offset, record_count) = match proposed {
                Ok(r) => r.map_err(|e| raft_error(shared, e, &what))?,
                Err(_) => {
                    return Err(RpcError::new(
                        ErrorCode::NotEnoughReplicas,
                        format!(
                            "{what}: not committed within {timeout_ms} ms (it may still commit)"
                        ),
                    ));
                }
            };
            if !leader_only {
                shared.metrics.commit_latency.observe(started.elapsed());
            }
            Ok((
                ProduceResponse {
                    base_offset,
                    log_append_time_ms: None,
                    record_count,
                },
                size,
            ))
        }
    }
}
