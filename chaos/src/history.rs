//! The recorded history of one run: every produce (invoke, then ok / fail / unknown),
//! every record the live consumers read, the consumer group's reads, commits,
//! rebalances and committed-offset samples, the faults with their times, the final
//! drain and the replica digests. Plain data: the workload and the runner fill it, the
//! checker reads it, `neo-chaos --check-history FILE` reloads it from JSON. The queue
//! workload's part is in [`queue`].

pub mod queue;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Microseconds since the start of a run: every timestamp of a history uses it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Microseconds since the clock's zero.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Seconds since the clock's zero (for log lines).
    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// How a produce ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Not completed (yet): counts as unknown.
    Invoked,
    /// Acknowledged with an offset (`acks=all`: committed on a quorum).
    Ok,
    /// Refused before anything was sent (`Producer::send` failed): must not be stored.
    Fail,
    /// Sent, then no answer or an error after the send (timeout, dead connection,
    /// retries exhausted): may or may not be stored.
    Unknown,
}

/// One produced record, from invoke to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceOp {
    /// Producer index (0-based).
    pub producer: u32,
    /// The producer's sequence number of this record (0-based, gap-free per producer).
    pub seq: u64,
    /// Partition the record was sent to.
    pub partition: u32,
    /// When `send` was called.
    pub invoke_us: u64,
    /// When the outcome was known.
    pub complete_us: Option<u64>,
    /// The outcome.
    pub outcome: Outcome,
    /// The acknowledged offset (`Ok` only).
    pub offset: Option<u64>,
    /// The error text (`Fail` / `Unknown`).
    pub error: Option<String>,
}

/// One record read by a live consumer while faults were running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOp {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The value, as text (payloads are ASCII).
    pub value: String,
    /// When the poll returned it.
    pub at_us: u64,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// What was done (`kill`, `pause`, `isolate`, `partition`, `loss`, `restart`, `kill-all`).
    pub kind: String,
    /// The nodes it hit.
    pub nodes: Vec<u64>,
    /// Partitions whose leader (just before the fault) was one of `nodes`: failover
    /// times are measured on these.
    pub affected_partitions: Vec<u32>,
    /// When the fault began.
    pub start_us: u64,
    /// When it was healed (the node restarted, resumed, reconnected).
    pub end_us: Option<u64>,
    /// Free text (the halves of a partition, the loss probability, ...).
    pub detail: String,
}

/// What one replica's `GET /v1/partitions/{topic}/{p}/digest` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDigest {
    /// The node.
    pub node: u64,
    /// First offset in its log.
    pub start_offset: u64,
    /// Its high watermark (applied next offset).
    pub high_watermark: u64,
    /// Committed batches hashed.
    pub batches: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// CRC32 of the committed batches (hex).
    pub crc32: String,
    /// Whether this replica led the partition.
    pub leader: bool,
}

/// The digests of every replica of one partition, taken after healing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionDigests {
    /// Partition.
    pub partition: u32,
    /// The replica set from the metadata.
    pub replicas: Vec<u64>,
    /// The answers, by node (a replica that did not answer is missing).
    pub digests: Vec<ReplicaDigest>,
    /// Why some replica could not be read, if so.
    pub errors: Vec<String>,
}

/// One partition read from the beginning after healing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DrainedPartition {
    /// Partition.
    pub partition: u32,
    /// (offset, value) in the order the consumer returned them.
    pub records: Vec<(u64, String)>,
    /// The high watermark the drain had to reach.
    pub target: u64,
    /// The consumer's position when the drain stopped.
    pub position: u64,
    /// Why the drain stopped before `target`, if it did.
    pub error: Option<String>,
}

/// Everything recorded in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The run id in every payload (`{run}:{producer}:{seq}`).
    pub run_id: String,
    /// Topic partitions.
    pub partitions: u32,
    /// Replication factor.
    pub replication: u32,
    /// Every produce.
    pub produces: Vec<ProduceOp>,
    /// Every live read.
    pub reads: Vec<ReadOp>,
    /// Live consumer errors: (time, partition, error).
    pub read_errors: Vec<(u64, u32, String)>,
    /// Faults in order.
    pub faults: Vec<FaultEvent>,
    /// When the last fault was healed.
    pub healed_us: Option<u64>,
    /// The final drain, by partition.
    pub drain: Vec<DrainedPartition>,
    /// Replica digests, by partition.
    pub digests: Vec<PartitionDigests>,
    /// The consumer group workload (`None`: `--group-consumers 0`, or a history
    /// recorded before groups existed).
    #[serde(default)]
    pub group: Option<GroupHistory>,
    /// The queue workload (`None`: `--queue-workers 0`, or a history recorded before
    /// queues existed).
    #[serde(default)]
    pub queue: Option<queue::QueueHistory>,
}

/// How a group member's commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitOutcome {
    /// Answered: a quorum of the partition's Raft group applied it.
    Acked,
    /// An error came back (fenced, not leader, timeout, ...). Retries inside the
    /// client may have sent it more than once, so it may still have been applied.
    Error,
    /// Made by the client inside `poll` or `close` (the revocation commit the
    /// listener asked for): its own answer is not observable.
    Unobserved,
}

/// One commit of a group member (one partition, one offset: the next record to
/// consume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommit {
    /// Member index (0-based; one task and client each).
    pub member: u32,
    /// The member id it committed as (empty while rejoining).
    pub member_id: String,
    /// Partition.
    pub partition: u32,
    /// The committed offset.
    pub offset: u64,
    /// When the commit was started.
    pub invoke_us: u64,
    /// When it was answered or failed (`None`: unobserved).
    pub complete_us: Option<u64>,
    /// The outcome.
    pub outcome: CommitOutcome,
    /// The error kind (`FencedMember`, `NotLeader`, `Timeout`, ...), for `Error`.
    pub error_kind: Option<String>,
    /// The error text, for `Error`.
    pub error: Option<String>,
}

/// One record a group member's `poll` returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRead {
    /// Member index.
    pub member: u32,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// The value, as text.
    pub value: String,
    /// When the poll returned it.
    pub at_us: u64,
}

/// What happened to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupEventKind {
    /// The member has a new member id (first join or rejoin).
    Joined {
        /// The id.
        member_id: String,
    },
    /// `on_assigned`: partitions taken over, each with the offset reading starts at
    /// (the committed offset read through the partition's Raft group by the takeover's
    /// fence, or the log start when the group had none).
    Assigned {
        /// (partition, start offset).
        partitions: Vec<(u32, u64)>,
    },
    /// `on_revoked`: partitions given up, each with the position committed for it
    /// (`None`: position not resolved, nothing committed).
    Revoked {
        /// (partition, committed position).
        partitions: Vec<(u32, Option<u64>)>,
    },
    /// `on_lost`: partitions dropped without a commit (fenced).
    Lost {
        /// Partitions.
        partitions: Vec<u32>,
    },
    /// `poll` (or `subscribe`, `close`) returned an error; `FencedMember` means the
    /// member lost its membership and joins again.
    Error {
        /// What was called (`subscribe`, `poll`, `close`).
        call: String,
        /// The error kind.
        kind: String,
        /// The error text.
        error: String,
    },
    /// The member stopped (after its last commit and `close`).
    Closed,
}

/// One event of one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    /// Member index.
    pub member: u32,
    /// When the `poll` (or call) during which it happened began.
    pub start_us: u64,
    /// When it was seen.
    pub at_us: u64,
    /// What.
    pub kind: GroupEventKind,
}

/// One read of the group's committed offset of a partition (`GroupAdmin`: the applied
/// offset table of the node that believes it leads the partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetSample {
    /// Partition.
    pub partition: u32,
    /// The committed offset (`None`: none yet).
    pub offset: Option<u64>,
    /// The partition's log end offset in the same answer (`None`: not known, for the
    /// auditor's reads).
    pub log_end_offset: Option<u64>,
    /// When the read was started.
    pub invoke_us: u64,
    /// When it was answered.
    pub complete_us: u64,
}

/// What `describe_group` said during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// When it was answered.
    pub at_us: u64,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    /// The group epoch (bumped by every membership or assignment change).
    pub group_epoch: u64,
    /// Members.
    pub members: u32,
}

/// Everything the consumer group workload recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupHistory {
    /// The group's name.
    pub group: String,
    /// Members started.
    pub members: u32,
    /// Every record returned to a member.
    pub reads: Vec<GroupRead>,
    /// Every commit.
    pub commits: Vec<GroupCommit>,
    /// Joins, rebalances, errors, stops.
    pub events: Vec<GroupEvent>,
    /// Committed offsets sampled during the run.
    pub samples: Vec<OffsetSample>,
    /// Sample or describe calls that failed: (time, error kind).
    pub sample_errors: Vec<(u64, String)>,
    /// `describe_group` answers during the run.
    pub snapshots: Vec<GroupSnapshot>,
    /// Committed offsets read after every member closed (two equal reads in a row).
    pub final_offsets: Vec<OffsetSample>,
    /// When the final phase began (after the drain) and when it ended (every
    /// acknowledged record consumed, or the deadline).
    pub final_phase_us: Option<(u64, u64)>,
}

/// The payload of a record: unique per run, producer and sequence number.
pub fn payload(run_id: &str, producer: u32, seq: u64) -> String {
    format!("{run_id}:{producer}:{seq}")
}

/// The (producer, seq) of a payload of run `run_id`; `None` for anything else.
pub fn parse_payload(run_id: &str, value: &str) -> Option<(u32, u64)> {
    let mut parts = value.split(':');
    let (run, producer, seq) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || run != run_id {
        return None;
    }
    Some((producer.parse().ok()?, seq.parse().ok()?))
}

/// A history being recorded by many tasks at once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    clock: Clock,
    inner: Arc<Mutex<History>>,
}

impl Recorder {
    /// An empty history on `clock`.
    pub fn new(clock: Clock, run_id: &str, partitions: u32, replication: u32) -> Recorder {
        Recorder {
            clock,
            inner: Arc::new(Mutex::new(History {
                run_id: run_id.to_string(),
                partitions,
                replication,
                ..History::default()
            })),
        }
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The run id in every payload.
    pub fn run_id(&self) -> String {
        self.lock().run_id.clone()
    }

    /// Record the invoke of a produce; returns its index for [`Recorder::complete`].
    pub fn invoke(&self, producer: u32, seq: u64, partition: u32) -> usize {
        let now = self.clock.now_us();
        let mut h = self.lock();
        h.produces.push(ProduceOp {
            producer,
            seq,
            partition,
            invoke_us: now,
            complete_us: None,
            outcome: Outcome::Invoked,
            offset: None,
            error: None,
        });
        h.produces.len() - 1
    }

    /// Record how produce `index` ended.
    pub fn complete(
        &self,
        index: usize,
        outcome: Outcome,
        offset: Option<u64>,
        error: Option<String>,
    ) {
        let now = self.clock.now_us();
        let mut h = self.lock();
        let op = &mut h.produces[index];
        op.complete_us = Some(now);
        op.outcome = outcome;
        op.offset = offset;
        op.error = error;
    }

    /// Record live reads.
    pub fn reads(&self, reads: impl IntoIterator<Item = ReadOp>) {
        self.lock().reads.extend(reads);
    }

    /// Record a live consumer error.
    pub fn read_error(&self, partition: u32, error: String) {
        let now = self.clock.now_us();
        self.lock().read_errors.push((now, partition, error));
    }

    /// Record the start of a fault; returns its index for [`Recorder::fault_end`].
    pub fn fault_start(
        &self,
        kind: &str,
        nodes: Vec<u64>,
        affected_partitions: Vec<u32>,
        detail: String,
    ) -> usize {
        let now = self.clock.now_us();
        let mut h = self.lock();
        h.faults.push(FaultEvent {
            kind: kind.to_string(),
            nodes,
            affected_partitions,
            start_us: now,
            end_us: None,
            detail,
        });
        h.faults.len() - 1
    }

    /// Record the end of fault `index`.
    pub fn fault_end(&self, index: usize) {
        let now = self.clock.now_us();
        self.lock().faults[index].end_us = Some(now);
    }

    /// Record that every fault is healed.
    pub fn healed(&self) {
        let now = self.clock.now_us();
        self.lock().healed_us = Some(now);
    }

    /// Run `f` on the group history (created by [`Recorder::start_group`]); `None`
    /// without a group workload.
    pub fn group<R>(&self, f: impl FnOnce(&mut GroupHistory) -> R) -> Option<R> {
        self.lock().group.as_mut().map(f)
    }

    /// Start recording a group workload.
    pub fn start_group(&self, group: &str, members: u32) {
        self.lock().group = Some(GroupHistory {
            group: group.to_string(),
            members,
            ..GroupHistory::default()
        });
    }

    /// Acknowledged produces the group has not consumed yet (at their partition and
    /// offset); 0 without a group workload.
    pub fn group_unconsumed(&self) -> usize {
        let h = self.lock();
        let Some(g) = &h.group else { return 0 };
        let consumed: std::collections::HashSet<(u32, u64)> =
            g.reads.iter().map(|r| (r.partition, r.offset)).collect();
        h.produces
            .iter()
            .filter(|p| p.outcome == Outcome::Ok)
            .filter(|p| {
                !p.offset
                    .is_some_and(|o| consumed.contains(&(p.partition, o)))
            })
            .count()
    }

    /// Store the drain and digests.
    pub fn finish(&self, drain: Vec<DrainedPartition>, digests: Vec<PartitionDigests>) {
        let mut h = self.lock();
        h.drain = drain;
        h.digests = digests;
    }

    /// Acknowledged produces so far, per partition, with their completion times (for
    /// progress lines).
    pub fn acknowledged(&self) -> usize {
        self.lock()
            .produces
            .iter()
            .filter(|p| p.outcome == Outcome::Ok)
            .count()
    }

    /// Produces invoked and not completed yet.
    pub fn pending(&self) -> usize {
        self.lock()
            .produces
            .iter()
            .filter(|p| p.outcome == Outcome::Invoked)
            .count()
    }

    /// A copy of the history as it is now.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Per-partition (offset, value) of a drain, as a map (for lookups).
pub fn drain_map(drain: &[DrainedPartition]) -> BTreeMap<(u32, u64), &str> {
    drain
        .iter()
        .flat_map(|d| {
            d.records
                .iter()
                .map(move |(o, v)| ((d.partition, *o), v.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_foreign_ones_are_refused() {
        let v = payload("r1", 3, 42);
        assert_eq!(parse_payload("r1", &v), Some((3, 42)));
        assert_eq!(parse_payload("r2", &v), None);
        assert_eq!(parse_payload("r1", "r1:3"), None);
        assert_eq!(parse_payload("r1", "r1:3:4:5"), None);
        assert_eq!(parse_payload("r1", "r1:x:4"), None);
    }
}
