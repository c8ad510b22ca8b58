//! Forwarding a record batch to a partition group's leader, wherever it runs.
//!
//! A node that must append a batch to a group it may not lead (the broker moving a
//! queue's message to its dead-letter queue, which lives in another partition group)
//! calls [`forward_records`]. It proposes on this node's replica when that one leads,
//! and otherwise sends the batch to a replica over the control plane
//! ([`RpcKind::ForwardRecords`], through the node's [`Transport`]: the cluster's gRPC
//! port, with cluster mTLS when it is on, never the client port). The replica that
//! receives it ([`crate::Registry::handle`]) answers `NotLeader` with its leader hint
//! unless it leads; the leader checks the batch as the produce path does, proposes it
//! (`acks=all`: quorum, then apply) and answers `(base_offset, record_count)`.
//!
//! # At least once
//!
//! A forwarded write whose outcome was not heard (the RPC timed out, the connection
//! broke, the leader lost its quorum after taking the batch, the deadline passed) may
//! still have committed, and [`forward_records`] goes on to another replica within its
//! deadline. So the batch may be stored twice, even when the call returns `Ok`, and a
//! [`ForwardRecordsError::Timeout`] says nothing about whether it was stored. Callers
//! must tolerate duplicates (the queue's dead-letter move is at-least-once by design).
//! No deduplication happens here: that is why a batch stamped by an idempotent producer
//! is refused ([`Error::StampedBatch`]) rather than appended past the broker's producer
//! table.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use qiss::batch::{BatchLimits, ValidatedBatch};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::codec;
use crate::error::{Error, Result};
use crate::group::{RaftGroup, Registry};
use crate::log_store::RECORD_BATCH_BYTES_MAX;
use crate::network::{RpcKind, Transport, TransportError};
use crate::types::{GroupId, NodeId};

/// Longest a leader waits for one forwarded batch to commit, whatever deadline the
/// sender asks for.
pub const FORWARD_WAIT_MS_MAX: u64 = 60_000;

/// First pause after every replica was asked without success (an election may be in
/// progress); it doubles each round up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The body of a [`RpcKind::ForwardRecords`] request.
#[derive(Serialize, Deserialize)]
struct ForwardRequest {
    /// One whole Qiss record batch, as a client produces it.
    #[serde(with = "qiss::bytes")]
    batch: Bytes,
    /// How long the sender waits for the answer: the leader stops waiting for the
    /// commit then (bounded by [`FORWARD_WAIT_MS_MAX`]).
    timeout_ms: u64,
}

/// The answer to a [`RpcKind::ForwardRecords`] request, as it travels.
type ForwardAnswer = std::result::Result<(u64, u32), ForwardError>;

/// Why a replica did not append a forwarded batch: the wire answer of
/// [`RpcKind::ForwardRecords`] (Qiss-encoded), also used to classify a local failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// This replica does not lead the group: ask `leader` when known. Nothing was
    /// written.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The node this replica believes leads, if any.
        leader: Option<NodeId>,
    },
    /// This replica leads but lost contact with a quorum (see
    /// [`crate::RaftGroup::quorum_lost`]); another leader is being elected.
    #[error(
        "the leader lost contact with a quorum{}",
        if *written { "; the batch may be in its log and may still commit" } else { "" }
    )]
    QuorumLost {
        /// `true`: the batch had been taken and may still commit (outcome unknown);
        /// `false`: refused before anything was written.
        written: bool,
    },
    /// The batch was refused (malformed, a bad CRC, larger than
    /// [`RECORD_BATCH_BYTES_MAX`], a control batch, stamped by an idempotent producer):
    /// nothing was written, and no replica will take it.
    #[error("bad record batch: {reason}")]
    BadBatch {
        /// What the check found.
        reason: String,
    },
    /// The group is not hosted on the node asked.
    #[error("group not hosted on that node")]
    UnknownGroup,
    /// The leader took the batch but it did not commit within the sender's deadline;
    /// it may still commit.
    #[error("not committed within {timeout_ms} ms; it may still commit")]
    Timeout {
        /// How long the leader waited.
        timeout_ms: u64,
    },
    /// Anything else: the replica's Raft stopped, its storage failed, ... (the text of
    /// the replica's [`Error`]).
    #[error("{reason}")]
    Fatal {
        /// The replica's error.
        reason: String,
    },
}

impl ForwardError {
    /// The wire form of a replica's error.
    pub fn of(e: &Error) -> ForwardError {
        match e {
            Error::NotLeader { leader, .. } => ForwardError::NotLeader { leader: *leader },
            Error::QuorumLost { written, .. } => ForwardError::QuorumLost { written: *written },
            Error::BatchTooLarge { .. }
            | Error::BadBatch { .. }
            | Error::ControlBatch
            | Error::StampedBatch { .. } => ForwardError::BadBatch {
                reason: e.to_string(),
            },
            Error::UnknownGroup { .. } => ForwardError::UnknownGroup,
            _ => ForwardError::Fatal {
                reason: e.to_string(),
            },
        }
    }

    /// The leader to ask instead, if this is a `NotLeader` with a hint.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ForwardError::NotLeader { leader } => *leader,
            _ => None,
        }
    }
}

/// One failed attempt of [`forward_records`] (at this node's replica or at a peer).
#[derive(Debug, thiserror::Error)]
pub enum ForwardAttemptError {
    /// This node's replica, proposed to directly, failed.
    #[error("local replica: {0}")]
    Local(#[source] Error),
    /// The RPC to a peer produced no answer (unreachable, timed out, failed mid-way).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A peer answered with an error.
    #[error("node {node}: {source}")]
    Remote {
        /// The peer.
        node: NodeId,
        /// Its answer.
        #[source]
        source: ForwardError,
    },
    /// A request could not be encoded, or a peer's answer decoded.
    #[error("node {node}: qiss codec failed on the forward {what}: {source}")]
    Codec {
        /// The peer.
        node: NodeId,
        /// `request` or `answer`.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: qiss::Error,
    },
    /// `node` gave no answer before the deadline (the batch may still commit there).
    #[error("node {node} did not answer within {timeout_ms} ms")]
    TimedOut {
        /// The node (this one, for the local replica).
        node: NodeId,
        /// How long it was given.
        timeout_ms: u64,
    },
}

/// Why [`forward_records`] did not get a batch committed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardRecordsError {
    /// This node's check refused the batch (see [`forward_records`]); nothing was sent.
    #[error("group {group}: {source}")]
    BadBatch {
        /// The group.
        group: GroupId,
        /// What the check found ([`Error::BatchTooLarge`], [`Error::BadBatch`],
        /// [`Error::ControlBatch`] or [`Error::StampedBatch`]).
        #[source]
        source: Error,
    },
    /// The leader refused the batch ([`ForwardError::BadBatch`]): nothing was written,
    /// and retrying cannot help.
    #[error("group {group}: node {node} refused the record batch: {source}")]
    Refused {
        /// The group.
        group: GroupId,
        /// The leader that refused it.
        node: NodeId,
        /// Its answer.
        #[source]
        source: ForwardError,
    },
    /// No replica to ask: `replicas` is empty (or names only this node), and this node
    /// hosts no replica of the group.
    #[error("group {group}: no replica to send the record batch to")]
    NoReplicas {
        /// The group.
        group: GroupId,
    },
    /// No replica reported the batch committed within the deadline. The outcome is
    /// unknown: an attempt may have committed it, or may still.
    #[error(
        "group {group}: record batch not committed within {timeout_ms} ms (it may have been, or may still be){}",
        match last { Some(e) => format!("; last attempt: {e}"), None => String::new() }
    )]
    Timeout {
        /// The group.
        group: GroupId,
        /// The caller's deadline.
        timeout_ms: u64,
        /// The last attempt's failure, if one ended before the deadline.
        #[source]
        last: Option<ForwardAttemptError>,
    },
}

/// The checks a forwarded batch passes before it is proposed, on the sender and again on
/// the leader: the produce path's (at most [`RECORD_BATCH_BYTES_MAX`], full validation
/// with the produce path's limits: header, CRC, every record; not a control batch),
/// plus no idempotent producer's stamp (see the module docs).
pub(crate) fn check_batch(batch: Bytes) -> Result<ValidatedBatch> {
    if batch.len() > RECORD_BATCH_BYTES_MAX {
        return Err(Error::BatchTooLarge {
            size: batch.len(),
            max: RECORD_BATCH_BYTES_MAX,
        });
    }
    let batch = ValidatedBatch::validate(batch, &BatchLimits::DEFAULT)
        .map_err(|source| Error::BadBatch { index: 0, source })?;
    let h = batch.header();
    if h.is_control() {
        return Err(Error::ControlBatch);
    }
    if h.producer_id >= 0 {
        return Err(Error::StampedBatch {
            producer_id: h.producer_id,
        });
    }
    Ok(batch)
}

fn encode_answer(answer: &ForwardAnswer) -> Result<Vec<u8>> {
    codec::encode(answer).map_err(|source| Error::Codec {
        what: "forward answer",
        source,
    })
}

/// Answers a [`RpcKind::ForwardRecords`] body at `group`'s replica on this node. `Err`
/// only when the request cannot be decoded or the answer encoded; every outcome of the
/// write itself is in the encoded answer.
pub(crate) async fn handle(group: &RaftGroup, body: &[u8]) -> Result<Vec<u8>> {
    let req: ForwardRequest = codec::decode(body).map_err(|source| Error::Codec {
        what: "forward request",
        source,
    })?;
    encode_answer(&serve(group, req).await)
}

/// The answer of a node that does not host the group.
pub(crate) fn not_hosted() -> Result<Vec<u8>> {
    encode_answer(&Err(ForwardError::UnknownGroup))
}

async fn serve(group: &RaftGroup, req: ForwardRequest) -> ForwardAnswer {
    let of = |e: Error| ForwardError::of(&e);
    // A follower answers with its hint before spending a CRC on the batch.
    group.ensure_leader().map_err(of)?;
    let batch = check_batch(req.batch).map_err(of)?;
    let wait = Duration::from_millis(req.timeout_ms.clamp(1, FORWARD_WAIT_MS_MAX));
    match tokio::time::timeout(wait, group.propose_records(batch)).await {
        Ok(r) => r.map_err(of),
        // The entry may be in the log: it commits (or not) without this waiter.
        Err(_) => Err(ForwardError::Timeout {
            timeout_ms: wait.as_millis() as u64,
        }),
    }
}

/// What to do after a failed attempt.
enum Verdict {
    /// The batch is refused for good.
    Refused,
    /// The deadline is spent.
    Over,
    /// Ask this node next.
    Follow(NodeId),
    /// Ask the next replica.
    Next,
}

fn verdict_of(answer: &ForwardError) -> Verdict {
    match answer {
        ForwardError::NotLeader {
            leader: Some(leader),
        } => Verdict::Follow(*leader),
        ForwardError::BadBatch { .. } => Verdict::Refused,
        ForwardError::Timeout { .. } => Verdict::Over,
        ForwardError::NotLeader { leader: None }
        | ForwardError::QuorumLost { .. }
        | ForwardError::UnknownGroup
        | ForwardError::Fatal { .. } => Verdict::Next,
    }
}

fn verdict(e: &ForwardAttemptError) -> Verdict {
    match e {
        ForwardAttemptError::Local(e) => verdict_of(&ForwardError::of(e)),
        ForwardAttemptError::Remote { source, .. } => verdict_of(source),
        ForwardAttemptError::TimedOut { .. }
        | ForwardAttemptError::Transport(TransportError::Timeout { .. }) => Verdict::Over,
        ForwardAttemptError::Transport(_) | ForwardAttemptError::Codec { .. } => Verdict::Next,
    }
}

/// Appends `batch` (one whole Qiss record batch, as a client produces it) to partition
/// group `group`, whose replicas are on `replicas`, at its leader, and returns the
/// offset of its first record and its record count once a quorum stored it and the
/// leader applied it (`acks=all`).
///
/// The batch is checked here first, as the produce path checks a batch before it
/// proposes it (at most [`RECORD_BATCH_BYTES_MAX`]; header, CRC and every record; not a
/// control batch), and it must carry no idempotent producer's stamp (`producer_id` -1):
/// a refused batch is [`ForwardRecordsError::BadBatch`], and nothing is sent.
///
/// Where it goes: when `registry` (this node, `local`) hosts a replica of the group,
/// that replica's leader hint is asked first, and a leading local replica is proposed
/// to directly ([`RaftGroup::propose_records`]); every other replica is reached over
/// `transport` ([`RpcKind::ForwardRecords`]). A replica that does not lead answers
/// `NotLeader` and its hint is followed; an unreachable one, or one without a hint, is
/// passed for the next replica. Once every replica was asked, the next round starts
/// after a short pause (20 ms, doubling up to 500 ms: an election may be in progress).
/// `timeout` bounds the whole call, every RPC included.
///
/// **At least once**: an attempt whose answer was not heard may have committed the
/// batch (or still may), and the next attempt appends it again, so the batch can be
/// stored twice even when this returns `Ok`; after [`ForwardRecordsError::Timeout`] its
/// outcome is unknown. Callers must tolerate duplicates.
pub async fn forward_records(
    registry: &Registry,
    local: NodeId,
    transport: &dyn Transport,
    replicas: &[NodeId],
    group: GroupId,
    batch: Bytes,
    timeout: Duration,
) -> Result<(u64, u32), ForwardRecordsError> {
    let now = Instant::now();
    // A deadline too far to represent is as good as none (a year).
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let batch =
        check_batch(batch).map_err(|source| ForwardRecordsError::BadBatch { group, source })?;
    let timed_out = |last| ForwardRecordsError::Timeout {
        group,
        timeout_ms,
        last,
    };
    let mut hint = None;
    let mut last = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let hosted = registry.get(group);
        let mut queue = round_order(hint.take(), local, hosted.as_deref(), replicas);
        if queue.is_empty() {
            return Err(ForwardRecordsError::NoReplicas { group });
        }
        let mut tried = Vec::with_capacity(queue.len());
        while let Some(target) = queue.pop_front() {
            if tried.contains(&target) {
                continue;
            }
            tried.push(target);
            if Instant::now() >= deadline {
                return Err(timed_out(last));
            }
            let attempt = if target == local {
                let Some(g) = &hosted else {
                    // This node hosts no replica (any more): nothing to ask here.
                    continue;
                };
                propose_here(g, local, batch.clone(), deadline).await
            } else {
                send(transport, target, group, batch.as_bytes().clone(), deadline).await
            };
            let e = match attempt {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            tracing::debug!(group, target, "forwarded record batch not taken: {e}");
            match verdict(&e) {
                Verdict::Refused => {
                    return Err(match e {
                        ForwardAttemptError::Remote { node, source } => {
                            ForwardRecordsError::Refused {
                                group,
                                node,
                                source,
                            }
                        }
                        ForwardAttemptError::Local(source) => {
                            ForwardRecordsError::BadBatch { group, source }
                        }
                        other => timed_out(Some(other)),
                    });
                }
                Verdict::Over => return Err(timed_out(Some(e))),
                Verdict::Follow(leader) if !tried.contains(&leader) => queue.push_front(leader),
                // Asked already this round: start the next round there.
                Verdict::Follow(leader) => hint = Some(leader),
                Verdict::Next => {}
            }
            last = Some(e);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(last));
        }
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The nodes one round asks, in order: the last hint, the leader this node's replica
/// knows of, this node (if it hosts a replica), then every other replica. Duplicates
/// are skipped when the round runs.
fn round_order(
    hint: Option<NodeId>,
    local: NodeId,
    hosted: Option<&RaftGroup>,
    replicas: &[NodeId],
) -> VecDeque<NodeId> {
    let mut order = VecDeque::with_capacity(replicas.len() + 3);
    order.extend(hint);
    if let Some(g) = hosted {
        order.extend(g.leadership().2);
        order.push_back(local);
    }
    // This node is asked only through its registry.
    order.extend(
        replicas
            .iter()
            .copied()
            .filter(|&n| n != local || hosted.is_some()),
    );
    order
}

/// Proposes at this node's replica (which answers `NotLeader` unless it leads).
async fn propose_here(
    g: &RaftGroup,
    local: NodeId,
    batch: ValidatedBatch,
    deadline: Instant,
) -> Result<(u64, u32), ForwardAttemptError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout_at(deadline, g.propose_records(batch)).await {
        Ok(r) => r.map_err(ForwardAttemptError::Local),
        Err(_) => Err(ForwardAttemptError::TimedOut {
            node: local,
            timeout_ms: left.as_millis() as u64,
        }),
    }
}

/// One [`RpcKind::ForwardRecords`] call to `target`, bounded by `deadline`.
async fn send(
    transport: &dyn Transport,
    target: NodeId,
    group: GroupId,
    batch: Bytes,
    deadline: Instant,
) -> Result<(u64, u32), ForwardAttemptError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let left_ms = left.as_millis() as u64;
    let codec_error = |what, source| ForwardAttemptError::Codec {
        node: target,
        what,
        source,
    };
    let req = ForwardRequest {
        batch,
        timeout_ms: left_ms,
    };
    let body = codec::encode(&req).map_err(|e| codec_error("request", e))?;
    let call = transport.send(
        target,
        group,
        RpcKind::ForwardRecords,
        Bytes::from(body),
        left,
    );
    // The transport bounds the call by `left`; this bounds it even if one does not.
    let resp = match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ForwardAttemptError::TimedOut {
                node: target,
                timeout_ms: left_ms,
            });
        }
    };
    let answer: ForwardAnswer = codec::decode(&resp).map_err(|e| codec_error("answer", e))?;
    answer.map_err(|source| ForwardAttemptError::Remote {
        node: target,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer: Option<i64>) -> Bytes {
        let mut b = qiss::batch::BatchBuilder::new();
        if let Some(id) = producer {
            b.producer(id, 0, 0);
        }
        b.push(1, None, &[], b"v").expect("push");
        b.build().expect("build")
    }

    #[test]
    fn the_forward_check_is_the_produce_check_without_producer_stamps() {
        assert!(check_batch(batch(None)).is_ok());
        assert!(matches!(
            check_batch(batch(Some(7))),
            Err(Error::StampedBatch { producer_id: 7 })
        ));
        let mut damaged = batch(None).to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            check_batch(Bytes::from(damaged)),
            Err(Error::BadBatch { .. })
        ));
        assert!(matches!(
            check_batch(Bytes::from_static(b"garbage")),
            Err(Error::BadBatch { .. })
        ));
        let control = codec::control_batch(0, 1, 1, 0, b"x");
        assert!(matches!(
            check_batch(Bytes::from(control)),
            Err(Error::ControlBatch)
        ));
        let big = Bytes::from(vec![0u8; RECORD_BATCH_BYTES_MAX + 1]);
        assert!(matches!(check_batch(big), Err(Error::BatchTooLarge { .. })));
    }

    #[test]
    fn answers_round_trip_and_classify() {
        for answer in [
            Ok((5, 3)),
            Err(ForwardError::NotLeader { leader: Some(2) }),
            Err(ForwardError::NotLeader { leader: None }),
            Err(ForwardError::QuorumLost { written: true }),
            Err(ForwardError::BadBatch { reason: "x".into() }),
            Err(ForwardError::UnknownGroup),
            Err(ForwardError::Timeout { timeout_ms: 9 }),
            Err(ForwardError::Fatal { reason: "y".into() }),
        ] {
            let bytes = encode_answer(&answer).expect("encode");
            let back: ForwardAnswer = codec::decode(&bytes).expect("decode");
            assert_eq!(back, answer);
        }
        let e = Error::NotLeader {
            group: 1,
            leader: Some(3),
        };
        assert_eq!(ForwardError::of(&e).leader_hint(), Some(3));
        assert!(matches!(
            ForwardError::of(&Error::ControlBatch),
            ForwardError::BadBatch { .. }
        ));
        assert!(matches!(
            verdict(&ForwardAttemptError::Transport(
                TransportError::Unreachable {
                    target: 2,
                    reason: "down".into()
                }
            )),
            Verdict::Next
        ));
        // A request whose body is not a forward request is an error, not a panic.
        let req = ForwardRequest {
            batch: batch(None),
            timeout_ms: 1,
        };
        let body = codec::encode(&req).expect("encode");
        assert!(codec::decode::<ForwardRequest>(&body[..body.len() - 1]).is_err());
    }
}
