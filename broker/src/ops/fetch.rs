//! `fetch`: committed record batches of a partition from an offset, on its leader, with
//! long polling.
//!
//! Visibility: only committed data. The high watermark is the partition replica's
//! applied `next_offset` (every entry below it is committed and applied); a stored
//! batch is returned only if it ends at or below it, and only whole.
//! Batches are returned exactly as stored (Raft stamps included), control batches too:
//! consumers skip batches with attribute bit 3 and records below the offset they asked
//! for (the first batch may start before it).
//!
//! Long polling: when `offset` is at the high watermark, the handler waits on the
//! replica's applied-state watch until it moves past `offset`, `wait_ms_max` (at most
//! `fetch_wait_ms_max`) passes, or the node shuts down; then it answers, possibly with
//! no batches. With `bytes_min` > 1 the wait also goes on while the committed bytes
//! readable from `offset` are fewer than `bytes_min` (and fewer than the byte bound);
//! when the wait ends, whatever is committed is returned.
//!
//! Errors: `UnknownTopic`, `UnknownPartition`, `NotLeader` (with the leader's client
//! address; fetch is served by the leader only, so a consumer never reads a lagging
//! follower's shorter view), `OffsetOutOfRange` when `offset` is below the log start or
//! beyond the end of the leader's log.

use std::time::Duration;

use bytes::Bytes;
use neo_protocol::api::{FetchRequest, FetchResponse};
use neo_protocol::{ErrorCode, RpcError};
use neo_raft::RaftGroup;
use neo_security::{Operation, ResourceType, SecurityContext};
use qiss::batch::BatchHeader;

use super::{hosted_replica, raft_error, serving_leader};
use crate::facade::Broker;

pub(crate) async fn fetch(
    b: &Broker,
    ctx: &SecurityContext,
    req: FetchRequest,
) -> Result<FetchResponse, RpcError> {
    b.authorize(ctx, ResourceType::Topic, &req.topic, Operation::Consume)?;
    let what = format!("{}/{}", req.topic, req.partition);
    let replica = hosted_replica(b, &req.topic, req.partition, &what)?;
    let group = replica.group();
    serving_leader(b, group, &what)?;
    let limits = b.limits();
    let bytes_max = match req.bytes_max as usize {
        0 => limits.fetch_bytes_max,
        n => n.min(limits.fetch_bytes_max),
    };
    let wait = Duration::from_millis(u64::from(req.wait_ms_max.min(limits.fetch_wait_ms_max)));
    let deadline = tokio::time::Instant::now() + wait;
    let mut applied = group.applied_watch();
    let mut shutdown = b.shutdown.clone();
    loop {
        let hw = applied.borrow_and_update().next_offset;
        let (start, end) = group.log_offsets();
        if req.offset < start || req.offset > end.max(hw) {
            return Err(RpcError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "{what}: offset {} is outside the log [{start}, {})",
                    req.offset,
                    end.max(hw)
                ),
            ));
        }
        let mut answer = empty(hw, start);
        if req.offset < hw {
            let batches = read_committed(group, req.offset, hw, bytes_max)
                .await
                .map_err(|e| raft_error(b, e, &what))?;
            let enough = batches.len() >= (req.bytes_min as usize).min(bytes_max);
            // The segment read's buffer itself, no copy (see `read_committed`).
            answer.batches = batches;
            if enough {
                return Ok(answer);
            }
        }
        if *shutdown.borrow() {
            return Ok(answer);
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return Ok(answer) },
            _ = tokio::time::sleep_until(deadline) => return Ok(answer),
            _ = shutdown.changed() => return Ok(answer),
        }
    }
}

fn empty(high_watermark: u64, log_start_offset: u64) -> FetchResponse {
    FetchResponse {
        high_watermark,
        log_start_offset,
        batches: Bytes::new(),
    }
}

/// Whole stored batches from the one holding `offset`, up to `bytes_max` (at least one),
/// cut before the first batch that does not end at or below `hw`.
pub async fn read_committed(
    group: &RaftGroup,
    offset: u64,
    hw: u64,
    bytes_max: usize,
) -> neo_raft::Result<Bytes> {
    let (bytes, _next) = group.read_log(offset, bytes_max).await?;
    Ok(bytes.slice(..committed_prefix(&bytes, hw)))
}

/// Length of the prefix of `bytes` made of whole batches that end at or below `hw`
/// (every record offset of the batch is below it). Applied entries never straddle the
/// high watermark, so this is "base offset below `hw`", checked the strict way.
pub fn committed_prefix(bytes: &[u8], hw: u64) -> usize {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Ok(h) = BatchHeader::parse(&bytes[pos..]) else {
            break;
        };
        let len = h.batch_length as usize;
        let end = h.base_offset + u64::from(h.record_count.max(1));
        if end > hw || len == 0 || pos + len > bytes.len() {
            break;
        }
        pos += len;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_at(base: u64, records: u32) -> Vec<u8> {
        let mut b = qiss::batch::BatchBuilder::new();
        for i in 0..records {
            b.push(1, None, &[], format!("v{i}").as_bytes())
                .expect("push");
        }
        let mut v = b.build().expect("build").to_vec();
        qiss::batch::set_base_offset(&mut v, base);
        v
    }

    #[test]
    fn committed_prefix_stops_at_the_high_watermark() {
        let mut log = batch_at(0, 3);
        let first = log.len();
        log.extend(batch_at(3, 2));
        let second = log.len();
        log.extend(batch_at(5, 1));
        assert_eq!(committed_prefix(&log, 0), 0);
        assert_eq!(committed_prefix(&log, 3), first);
        assert_eq!(committed_prefix(&log, 4), first);
        assert_eq!(committed_prefix(&log, 5), second);
        assert_eq!(committed_prefix(&log, 6), log.len());
        // A torn tail is never returned.
        assert_eq!(committed_prefix(&log[..second + 3], 100), second);
    }
}
