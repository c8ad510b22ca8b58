//! `list_offsets`: an offset of a partition by position (earliest, latest) or by time
//! (the first record at or after a timestamp), at the partition's leader.
//!
//! By time: a scan of the committed batches' headers from the log start (each batch
//! header carries its largest record timestamp), reading `SCAN_BYTES` at a time on the
//! blocking pool; O(log size) in disk reads (there is no time index yet). The answer
//! is the base offset of the first batch whose largest timestamp is at or after the
//! time asked (a batch is consumed whole), or the log end when none is.

use neo_protocol::RpcError;
use neo_protocol::api::{ListOffsetsRequest, ListOffsetsResponse, OffsetSpec};
use neo_security::{Operation, ResourceType, SecurityContext};
use qiss::batch::BatchHeader;

use super::fetch::read_committed;
use super::{hosted_replica, raft_error, serving_leader};
use crate::facade::Broker;

/// Bytes read per step of a scan by time.
const SCAN_BYTES: usize = 4 * 1024 * 1024;

pub(crate) async fn list_offsets(
    b: &Broker,
    ctx: &SecurityContext,
    req: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, RpcError> {
    b.authorize(ctx, ResourceType::Topic, &req.topic, Operation::Describe)?;
    let what = format!("{}/{}", req.topic, req.partition);
    let p = hosted_replica(b, &req.topic, req.partition, &what)?;
    let group = p.group();
    serving_leader(b, group, &what)?;
    // A new leader answers only once it has applied its predecessors' entries.
    p.catch_up()
        .await
        .map_err(|e| super::broker_error(b, e, &what))?;
    let (start, _) = group.log_offsets();
    let hw = group.applied_watch().borrow().next_offset;
    let offset = match req.spec {
        OffsetSpec::Earliest => start,
        OffsetSpec::Latest => hw,
        OffsetSpec::Timestamp(ts) => {
            let mut at = start;
            'scan: loop {
                if at >= hw {
                    break hw;
                }
                let before = at;
                let bytes = read_committed(group, at, hw, SCAN_BYTES)
                    .await
                    .map_err(|e| raft_error(b, e, &what))?;
                if bytes.is_empty() {
                    break hw;
                }
                let mut pos = 0;
                while pos < bytes.len() {
                    let Ok(h) = BatchHeader::parse(&bytes[pos..]) else {
                        break;
                    };
                    let next = h.base_offset + u64::from(h.record_count.max(1));
                    let control = h.record_count == 0 || h.is_control();
                    if !control && h.max_timestamp >= ts && next > at {
                        break 'scan h.base_offset.max(at);
                    }
                    if h.batch_length == 0 {
                        break;
                    }
                    pos += h.batch_length as usize;
                    at = at.max(next);
                }
                if at == before {
                    // Nothing readable moved the scan on: no later record exists.
                    break hw;
                }
            }
        }
    };
    Ok(ListOffsetsResponse { offset })
}
