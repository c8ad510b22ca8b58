//! A partition replica as the broker sees it: its Raft group, the application state kept
//! next to its log ([`PartitionMachine`]: the idempotent-producer table and the consumer
//! groups' committed offsets ([`offsets`]); planned: queue deliveries), and the
//! leader-side write gate
//! ([`Partition::append`]) that keeps an idempotent producer's retries from being
//! stored twice.
//!
//! # The idempotence gate
//! A batch stamped by an idempotent producer (`producer_id >= 0` in its header) that
//! the partition already holds, or that is in flight on this leader, is not stored
//! again: the answer is the first copy's offset and count. The check is exact on a
//! leader: once per term it waits until its state machine has applied everything
//! committed before the term (ReadIndex) and everything in its log at that moment (a
//! leader restored after a crash keeps its term and may hold an uncommitted tail), so
//! the producer table covers every earlier batch, and the later batches of its term are
//! in flight here or applied. A stamped write runs in its own task, so that a caller
//! that stops waiting (a produce timeout) does not end the in-flight entry while the
//! batch may still commit: a retry meanwhile waits for it instead of storing a second
//! copy.

pub mod deliveries;
pub mod offsets;
pub mod producers;
pub mod queues;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use neo_raft::{AppliedBatch, EntryId, LocalAck, RaftGroup, Role, StateMachine};
use qiss::batch::ValidatedBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::lock;
use offsets::{OffsetError, OffsetTable, PartitionAnswer, PartitionCommand};
use producers::{ProducedBatch, ProducerTable, ProducerTableImage, Seen};
use queues::QueueTables;

/// Receives of one partition in flight through Raft at once, on its leader.
pub const RECEIVES_IN_FLIGHT_MAX: usize = 4;

/// Bound on a new leader's wait until its whole log is applied before its first
/// deduplicated write (the produce timeout usually ends the wait first).
const DEDUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// The state a partition's machine and its leader's write gate share.
pub(crate) type SharedProducers = Arc<Mutex<ProducerTable>>;

/// The committed offsets a partition's machine and its handle share.
pub(crate) type SharedOffsets = Arc<Mutex<OffsetTable>>;

/// The queue delivery state a partition's machine and its handle share.
pub(crate) type SharedQueues = Arc<Mutex<QueueTables>>;

/// The snapshot image of a partition's application state (its records are the log).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PartitionImage {
    /// The idempotent producers' latest batches.
    producers: ProducerTableImage,
    /// Consumer groups' committed offsets.
    offsets: OffsetTable,
    /// Queue deliveries (share groups, a queue's own) and record facts.
    queues: QueueTables,
}

/// The image before queues existed (snapshots of earlier releases restore).
#[derive(Debug, Clone, Default, Deserialize)]
struct PartitionImageV2 {
    producers: ProducerTableImage,
    offsets: OffsetTable,
}

/// The image before committed offsets existed (snapshots of earlier releases restore).
#[derive(Debug, Clone, Default, Deserialize)]
struct PartitionImageV1 {
    producers: ProducerTableImage,
}

/// A partition group's [`StateMachine`]: records every applied stamped batch in the
/// producer table and applies offset commands to the offset table, in log order, on
/// every replica.
pub struct PartitionMachine {
    producers: SharedProducers,
    offsets: SharedOffsets,
    queues: SharedQueues,
}

impl StateMachine for PartitionMachine {
    fn apply_records(&mut self, entry: EntryId, b: &AppliedBatch, raw: &[u8]) {
        lock(&self.queues).apply_records(b.base_offset, b.record_count, raw);
        if b.producer_id >= 0 {
            lock(&self.producers).record(
                b.producer_id as u64,
                b.producer_epoch,
                entry.index,
                ProducedBatch {
                    base_sequence: b.base_sequence,
                    base_offset: b.base_offset,
                    record_count: b.record_count,
                },
            );
        }
    }

    fn apply_command(&mut self, entry: EntryId, command: &[u8]) -> Bytes {
        let answer = match qiss::from_slice::<PartitionCommand>(command) {
            Ok(PartitionCommand::Queue { group, now_ms, op }) => {
                PartitionAnswer::Queue(lock(&self.queues).apply(&group, entry.index, now_ms, &op))
            }
            Ok(cmd) => lock(&self.offsets).apply(&cmd),
            // Refused the same way on every replica: the bytes are the same everywhere.
            Err(e) => PartitionAnswer::Refused(OffsetError::Invalid {
                reason: format!("undecodable partition command: {e}"),
            }),
        };
        // Plain data: encoding cannot fail.
        Bytes::from(qiss::to_vec(&answer).unwrap_or_default())
    }

    fn snapshot(&self) -> std::io::Result<Vec<u8>> {
        let image = PartitionImage {
            producers: lock(&self.producers).image(),
            offsets: lock(&self.offsets).clone(),
            queues: lock(&self.queues).clone(),
        };
        crate::error::encode_image("partition image", &image)
    }

    fn restore(&mut self, image: &[u8]) -> std::io::Result<()> {
        let (is_queue, ordered) = {
            let q = lock(&self.queues);
            (q.is_queue, q.ordered)
        };
        let fresh = || QueueTables {
            is_queue,
            ordered,
            ..QueueTables::default()
        };
        let image: PartitionImage = match crate::error::decode_image("partition image", image) {
            Ok(image) => image,
            Err(e) => match qiss::from_slice::<PartitionImageV2>(image) {
                Ok(old) => PartitionImage {
                    producers: old.producers,
                    offsets: old.offsets,
                    queues: fresh(),
                },
                Err(_) => match qiss::from_slice::<PartitionImageV1>(image) {
                    Ok(old) => PartitionImage {
                        producers: old.producers,
                        offsets: OffsetTable::default(),
                        queues: fresh(),
                    },
                    Err(_) => return Err(e),
                },
            },
        };
        *lock(&self.producers) = ProducerTable::from_image(image.producers);
        *lock(&self.offsets) = image.offsets;
        let mut queues = image.queues;
        // The kind is the open's (fixed at the topic's creation), not the image's.
        queues.is_queue = is_queue;
        queues.ordered = ordered;
        *lock(&self.queues) = queues;
        Ok(())
    }
}

/// (producer id, epoch, base sequence) of a stamped batch.
type InflightKey = (u64, i16, i32);
type Inflight = Arc<Mutex<HashMap<InflightKey, watch::Receiver<bool>>>>;

/// Removes a finished in-flight batch and wakes the retries waiting on it.
struct InflightGuard {
    map: Inflight,
    key: InflightKey,
    done: watch::Sender<bool>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        lock(&self.map).remove(&self.key);
        self.done.send_replace(true);
    }
}

/// What [`Partition::claim`] found.
enum Claim {
    /// The batch is applied: its offsets.
    Answered((u64, u32)),
    /// This copy is the one to write; the guard ends its in-flight entry.
    Write(InflightGuard),
}

/// How much durability a write waits for before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAck {
    /// Committed on a quorum and applied (`acks=all`).
    Quorum,
    /// Durable in this leader's own log (`acks=leader`); it goes on to commit.
    Leader,
}

/// One partition replica hosted on this node.
pub struct Partition {
    group: Arc<RaftGroup>,
    producers: SharedProducers,
    offsets: SharedOffsets,
    queues: SharedQueues,
    /// The term in which this replica, as leader, restarted the leases it inherited
    /// (`u64::MAX`: never).
    takeover_term: AtomicU64,
    /// Bounds this leader's receives in flight through Raft. Concurrent receives never
    /// lease a message twice (the machine picks messages at apply time, in log order);
    /// the bound keeps many idle consumers woken by one new message from each writing
    /// an empty receive, while still letting receives pipeline.
    pub(crate) receives: tokio::sync::Semaphore,
    /// Stamped batches proposed by this replica and not yet finished.
    inflight: Inflight,
    /// The term in which this replica, as leader, last caught its state machine up to
    /// everything committed before its term (`u64::MAX`: never).
    dedup_term: AtomicU64,
}

impl Partition {
    /// A partition's machine and the handle that pairs with it once its group is open
    /// (see [`Partition::new`]); `queue`: `Some(ordered_by_key)` for a queue's
    /// partition (fixed when its topic is created).
    pub fn machine(queue: Option<bool>) -> (PartitionMachine, PartitionState) {
        let producers = SharedProducers::default();
        let offsets = SharedOffsets::default();
        let queues = Arc::new(Mutex::new(QueueTables::new(queue)));
        (
            PartitionMachine {
                producers: producers.clone(),
                offsets: offsets.clone(),
                queues: queues.clone(),
            },
            PartitionState {
                producers,
                offsets,
                queues,
            },
        )
    }

    /// The partition over its open group and the state its machine keeps.
    pub fn new(group: Arc<RaftGroup>, state: PartitionState) -> Partition {
        Partition {
            group,
            producers: state.producers,
            offsets: state.offsets,
            queues: state.queues,
            takeover_term: AtomicU64::new(u64::MAX),
            receives: tokio::sync::Semaphore::new(RECEIVES_IN_FLIGHT_MAX),
            inflight: Arc::default(),
            dedup_term: AtomicU64::new(u64::MAX),
        }
    }

    /// The partition's Raft group.
    pub fn group(&self) -> &Arc<RaftGroup> {
        &self.group
    }

    /// Appends `batch` (checked once on receipt) and answers its base offset and record
    /// count once `ack` holds; an idempotent producer's retry gets the first copy's
    /// answer (see the module doc).
    pub async fn append(&self, batch: ValidatedBatch, ack: WriteAck) -> Result<(u64, u32)> {
        let header = *batch.header();
        if header.producer_id < 0 {
            return Ok(match ack {
                WriteAck::Quorum => self.group.propose_records(batch).await?,
                WriteAck::Leader => self.group.propose_records_leader_ack(batch).await?,
            });
        }
        let key: InflightKey = (
            header.producer_id as u64,
            header.producer_epoch,
            header.base_sequence,
        );
        self.group.check_quorum()?;
        // Every wait below (the once-per-term ReadIndex, a retry waiting for its first
        // copy in flight, the commit or the local flush) ends if this leader loses its
        // quorum meanwhile; a write already handed to Raft goes on in its own task.
        let gated = async { Ok(self.append_stamped(batch, key, ack).await) };
        self.group.bounded_by_quorum(gated).await?
    }

    async fn append_stamped(
        &self,
        batch: ValidatedBatch,
        key: InflightKey,
        ack: WriteAck,
    ) -> Result<(u64, u32)> {
        self.catch_up().await?;
        let guard = match self.claim(key).await? {
            Claim::Answered(offsets) => return Ok(offsets),
            Claim::Write(guard) => guard,
        };
        let (local_ack, local) = match ack {
            WriteAck::Quorum => (LocalAck::default(), None),
            WriteAck::Leader => {
                let (a, rx) = LocalAck::channel();
                (a, Some(rx))
            }
        };
        let group = self.group.clone();
        // The write's Raft phases count as the caller's (slow-produce logs).
        let write = tokio::spawn(neo_raft::inherit_phases(async move {
            let r = group.propose_batch(batch, local_ack).await;
            drop(guard);
            r
        }));
        Ok(match local {
            // The write (and the in-flight entry a retry would wait on) goes on to
            // commit in its task; this caller answers at the local flush.
            Some(local) => self.group.local_ack(local).await?,
            None => write.await.map_err(|e| neo_raft::Error::Fatal {
                group: self.group.id(),
                reason: format!("write task: {e}"),
            })??,
        })
    }

    /// Registers `key` in flight, or returns the answer it already has (applied, or
    /// stale); waits while another copy of it is in flight.
    async fn claim(&self, key: InflightKey) -> Result<Claim> {
        loop {
            let mut wait = {
                let mut inflight = lock(&self.inflight);
                match lock(&self.producers).check(key.0, key.1, key.2) {
                    Seen::Applied(b) => {
                        return Ok(Claim::Answered((b.base_offset, b.record_count)));
                    }
                    Seen::Stale => {
                        return Err(Error::DuplicateSequence {
                            group: self.group.id(),
                            producer_id: key.0,
                            sequence: key.2,
                        });
                    }
                    Seen::New => {}
                }
                match inflight.get(&key) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (done, rx) = watch::channel(false);
                        inflight.insert(key, rx);
                        return Ok(Claim::Write(InflightGuard {
                            map: Arc::clone(&self.inflight),
                            key,
                            done,
                        }));
                    }
                }
            };
            // The same batch is in flight: wait for its outcome, then look again (it is
            // applied, or it failed and this copy is proposed).
            let _ = wait.wait_for(|done| *done).await;
        }
    }

    /// Leader only: once per term, waits until everything committed before the term is
    /// applied, and everything in its log at that point (so the producer table knows
    /// every earlier batch, including a restored leader's uncommitted tail, and reads
    /// of the applied state (committed offsets, the high watermark) are not older than
    /// what an earlier leader answered).
    pub async fn catch_up(&self) -> Result<()> {
        let (role, term, leader) = self.group.leadership();
        if role != Role::Leader {
            return Err(neo_raft::Error::NotLeader {
                group: self.group.id(),
                leader,
            }
            .into());
        }
        if self.dedup_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        self.group.ensure_linearizable().await?;
        // ReadIndex covers what was committed before the term's blank entry. A leader
        // restored after a restart keeps its term and writes no blank entry, and its log
        // may end in entries it appended before the crash, uncommitted then: wait until
        // everything in the log now is applied, so the producer table knows those too.
        // (Later entries of the term are this leader's own, tracked in flight.)
        let last = self.group.metrics().last_log_index;
        self.group
            .wait_until(DEDUP_CATCH_UP_TIMEOUT, "dedup catch-up", |m| {
                m.role != Role::Leader || m.applied_index >= last
            })
            .await?;
        let m = self.group.metrics();
        if m.role != Role::Leader || m.term != term {
            return Err(neo_raft::Error::NotLeader {
                group: self.group.id(),
                leader: m.leader,
            }
            .into());
        }
        self.dedup_term.store(term, Ordering::Release);
        Ok(())
    }

    /// Proposes an offset command through the partition's Raft group (this replica
    /// must lead it) and answers once it is committed and applied.
    pub async fn offset_command(&self, cmd: &PartitionCommand) -> Result<PartitionAnswer> {
        let bytes = qiss::to_vec(cmd).map_err(|e| Error::codec("partition command", e))?;
        let answer = self.group.propose_command(Bytes::from(bytes)).await?;
        qiss::from_slice(&answer).map_err(|e| Error::codec("partition answer", e))
    }

    /// Proposes a queue command of share group `group` (`""`: the queue's own) and
    /// answers once it is committed and applied. Once per term, a new leader first
    /// restarts the leases it inherited (`Takeover`: full visibility timeouts from now).
    pub async fn queue_command(
        &self,
        group: &str,
        now_ms: u64,
        op: deliveries::QueueOp,
    ) -> Result<deliveries::QueueAnswer> {
        self.catch_up().await?;
        let (_, term, _) = self.group.leadership();
        if self.takeover_term.load(Ordering::Acquire) != term {
            let groups: Vec<String> = lock(&self.queues).groups.keys().cloned().collect();
            for g in groups {
                self.propose_queue(&g, now_ms, deliveries::QueueOp::Takeover)
                    .await?;
            }
            self.takeover_term.store(term, Ordering::Release);
        }
        self.propose_queue(group, now_ms, op).await
    }

    async fn propose_queue(
        &self,
        group: &str,
        now_ms: u64,
        op: deliveries::QueueOp,
    ) -> Result<deliveries::QueueAnswer> {
        let cmd = PartitionCommand::Queue {
            group: group.to_string(),
            now_ms,
            op,
        };
        match self.offset_command(&cmd).await? {
            PartitionAnswer::Queue(a) => Ok(a),
            other => Err(Error::Internal(format!(
                "partition {}: queue command answered {other:?}",
                self.group.id()
            ))),
        }
    }

    /// Reads this replica's applied queue tables.
    pub fn with_queues<R>(&self, f: impl FnOnce(&QueueTables) -> R) -> R {
        f(&lock(&self.queues))
    }

    /// Reads this replica's applied offset table.
    pub fn with_offsets<R>(&self, f: impl FnOnce(&OffsetTable) -> R) -> R {
        f(&lock(&self.offsets))
    }

    /// The applied batch of an idempotent producer, if this replica's producer table
    /// remembers it (tests and diagnostics).
    pub fn produced_batch(
        &self,
        producer_id: u64,
        epoch: i16,
        base_sequence: i32,
    ) -> Option<ProducedBatch> {
        lock(&self.producers).lookup(producer_id, epoch, base_sequence)
    }
}

/// What a partition's machine shares with its [`Partition`] handle.
pub struct PartitionState {
    producers: SharedProducers,
    offsets: SharedOffsets,
    queues: SharedQueues,
}
