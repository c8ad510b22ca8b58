//! The state machine of a group: a partition or the metadata group.
//!
//! Both kinds share the bookkeeping openraft needs (last applied log id, last membership,
//! the current snapshot) and the offset rule that makes the partition log the Raft log:
//! every entry consumes [`offsets_used`] record offsets, in log order, starting at 0 (a
//! record batch its record count; a control entry none in a partition, one in the
//! metadata group), so the state machine and the log store compute the same base offset
//! for every entry without talking to each other, and a partition's first record gets
//! offset 0.
//!
//! Snapshots: a partition's snapshot is metadata only (`next_offset` and the
//! idempotent-producer table, see `producers`), since its data is the log itself; the metadata group's snapshot is the whole [`MetaState`], Qiss-encoded.
//! The current snapshot is written to `snapshot.qiss` in the group's directory (write to a
//! temporary file, fsync, rename, fsync the directory) so a restart resumes from it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::EntryPayload;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::log_store::OffsetAnchor;
use crate::meta_sm::MetaState;
use crate::producers::{ProducedBatch, ProducerTable, ProducerTableImage};
use crate::types::{Applied, LogId, NeoRaft, Proposal, Snapshot, SnapshotMeta, StoredMembership};

/// Which kind of group a state machine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// A partition group: entries are record batches.
    Partition,
    /// The metadata group: entries are metadata commands.
    Metadata,
}

impl GroupKind {
    /// Record offsets a control entry (blank, membership, metadata command: a control
    /// batch on disk) takes. None in a partition: its offsets are its records', dense
    /// from 0, whatever elections and membership changes happen. One in the metadata
    /// group, whose log holds nothing but control entries: its offsets must still
    /// advance, since segments are named, rolled and purged by offset.
    pub(crate) fn control_offsets(self) -> u32 {
        match self {
            GroupKind::Partition => 0,
            GroupKind::Metadata => 1,
        }
    }
}

/// How many record offsets an entry consumes: a record batch its `record_count`, every
/// other entry [`GroupKind::control_offsets`].
pub(crate) fn offsets_used(
    kind: GroupKind,
    payload: &EntryPayload<Proposal, u64, crate::types::Node>,
) -> u64 {
    match payload {
        EntryPayload::Normal(Proposal::Records(b)) => codec::record_count(&b.0).unwrap_or(1),
        _ => u64::from(kind.control_offsets()),
    }
}

/// What a group's state machine has applied; published to the facade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Log index of the last applied entry, if any.
    pub last_applied_index: Option<u64>,
    /// Term of the last applied entry, if any.
    pub last_applied_term: Option<u64>,
    /// The offset the next applied entry gets: every record below it is committed (the
    /// partition's high watermark).
    pub next_offset: u64,
}

/// The Qiss-encoded body of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotBody {
    next_offset: u64,
    /// `Some` for the metadata group.
    meta: Option<MetaState>,
    /// Partition groups: the idempotent producers' latest batches.
    producers: ProducerTableImage,
}

/// A snapshot as stored on disk: the openraft meta plus the body bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Inner {
    kind: GroupKind,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    next_offset: u64,
    meta: MetaState,
}

impl Inner {
    fn body(&self, producers: ProducerTableImage) -> SnapshotBody {
        SnapshotBody {
            next_offset: self.next_offset,
            meta: (self.kind == GroupKind::Metadata).then(|| self.meta.clone()),
            producers,
        }
    }
}

/// The shared handle on a partition's producer table: the state machine writes it as it
/// applies, the leader's produce path reads it.
pub(crate) type SharedProducers = Arc<std::sync::Mutex<ProducerTable>>;

fn lock_producers(p: &SharedProducers) -> std::sync::MutexGuard<'_, ProducerTable> {
    // The table holds plain data, consistent after every statement: a panic elsewhere
    // while it was locked leaves nothing half-done.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The openraft state machine of one group.
pub struct GroupStateMachine {
    inner: Inner,
    /// The current snapshot, shared with snapshot builders.
    snapshot: Arc<std::sync::Mutex<Option<Snapshot>>>,
    /// Where the current snapshot is kept; `None` keeps it in memory only (tests of the
    /// storage suite build many throw-away state machines).
    snapshot_path: Option<PathBuf>,
    applied_tx: watch::Sender<AppliedState>,
    meta_tx: watch::Sender<Arc<MetaState>>,
    /// Tells the log store where the log restarts after a snapshot install.
    anchor: OffsetAnchor,
    producers: SharedProducers,
}

const SNAPSHOT_FILE: &str = "snapshot.qiss";

impl GroupStateMachine {
    /// Opens the state machine of a group whose files live in `dir` (`None`: memory only),
    /// resuming from the snapshot found there.
    pub(crate) fn open(
        kind: GroupKind,
        dir: Option<&Path>,
        anchor: OffsetAnchor,
    ) -> io::Result<Self> {
        let mut sm = GroupStateMachine {
            inner: Inner {
                kind,
                last_applied: None,
                membership: StoredMembership::default(),
                next_offset: 0,
                meta: MetaState::default(),
            },
            snapshot: Arc::new(std::sync::Mutex::new(None)),
            snapshot_path: dir.map(|d| d.join(SNAPSHOT_FILE)),
            applied_tx: watch::Sender::new(AppliedState::default()),
            meta_tx: watch::Sender::new(Arc::new(MetaState::default())),
            anchor,
            producers: SharedProducers::default(),
        };
        if let Some(path) = &sm.snapshot_path {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let stored: StoredSnapshot = codec::decode(&bytes).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("read_snapshot {}: {e}", path.display()),
                        )
                    })?;
                    sm.load(&stored.meta, &stored.data)?;
                    *sm.snapshot.lock().expect("snapshot lock") = Some(Snapshot {
                        meta: stored.meta,
                        snapshot: stored.data,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sm)
    }

    /// A receiver of the applied state (last applied log id, high watermark).
    pub(crate) fn applied_rx(&self) -> watch::Receiver<AppliedState> {
        self.applied_tx.subscribe()
    }

    /// The producer table this state machine maintains (empty for the metadata group).
    pub(crate) fn producers(&self) -> SharedProducers {
        self.producers.clone()
    }

    /// A receiver of the metadata state (stays empty for partition groups).
    pub(crate) fn meta_rx(&self) -> watch::Receiver<Arc<MetaState>> {
        self.meta_tx.subscribe()
    }

    fn publish(&self) {
        let st = AppliedState {
            last_applied_index: self.inner.last_applied.map(|l| l.index),
            last_applied_term: self.inner.last_applied.map(|l| l.leader_id.term),
            next_offset: self.inner.next_offset,
        };
        self.applied_tx.send_replace(st);
        if self.inner.kind == GroupKind::Metadata {
            self.meta_tx.send_replace(Arc::new(self.inner.meta.clone()));
        }
    }

    fn load(&mut self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let body: SnapshotBody = codec::decode(data).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("decode_snapshot: {e}"))
        })?;
        self.inner.last_applied = meta.last_log_id;
        self.inner.membership = meta.last_membership.clone();
        self.inner.next_offset = body.next_offset;
        self.inner.meta = body.meta.unwrap_or_default();
        *lock_producers(&self.producers) = ProducerTable::from_image(body.producers);
        self.publish();
        Ok(())
    }

    fn apply_one(&mut self, entry: &crate::types::Entry) -> Applied {
        let base_offset = self.inner.next_offset;
        self.inner.next_offset += offsets_used(self.inner.kind, &entry.payload);
        self.inner.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => Applied::Nothing,
            EntryPayload::Membership(m) => {
                self.inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Applied::Nothing
            }
            EntryPayload::Normal(Proposal::Records(b)) => match self.inner.kind {
                GroupKind::Partition => {
                    let header = qiss::batch::BatchHeader::parse(&b.0).ok();
                    let record_count = header.as_ref().map_or(1, |h| h.record_count);
                    if let Some(h) = header.filter(|h| h.producer_id >= 0) {
                        lock_producers(&self.producers).record(
                            h.producer_id as u64,
                            h.producer_epoch,
                            entry.log_id.index,
                            ProducedBatch {
                                base_sequence: h.base_sequence,
                                base_offset,
                                record_count,
                            },
                        );
                    }
                    Applied::Records {
                        base_offset,
                        record_count,
                    }
                }
                GroupKind::Metadata => Applied::Nothing,
            },
            EntryPayload::Normal(Proposal::Meta(cmd)) => match self.inner.kind {
                GroupKind::Metadata => Applied::Meta(self.inner.meta.apply(cmd)),
                GroupKind::Partition => Applied::Nothing,
            },
        }
    }
}

/// Builds a snapshot from a copy of the state taken when the builder was made.
pub struct SnapshotBuilder {
    state: Inner,
    producers: ProducerTableImage,
    snapshot: Arc<std::sync::Mutex<Option<Snapshot>>>,
    snapshot_path: Option<PathBuf>,
}

impl RaftSnapshotBuilder<NeoRaft> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = codec::encode(&self.state.body(self.producers.clone()))
            .map_err(|e| io::Error::other(format!("encode_snapshot: {e}")))?;
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            },
            snapshot: data,
        };
        if let Some(path) = &self.snapshot_path {
            persist_snapshot(path.clone(), &snap).await?;
        }
        *self.snapshot.lock().expect("snapshot lock") = Some(snap.clone());
        Ok(snap)
    }
}

async fn persist_snapshot(path: PathBuf, snap: &Snapshot) -> io::Result<()> {
    let stored = StoredSnapshot {
        meta: snap.meta.clone(),
        data: snap.snapshot.clone(),
    };
    let bytes =
        codec::encode(&stored).map_err(|e| io::Error::other(format!("encode_snapshot: {e}")))?;
    tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
        .await
        .map_err(io::Error::other)?
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl RaftStateMachine<NeoRaft> for GroupStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.inner.last_applied, self.inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<NeoRaft>, io::Error>> + Unpin + Send,
    {
        // Answer the proposers only after the applied state is published: a client that
        // got its offset and then fetches must find the high watermark past it.
        let mut answers = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = self.apply_one(&entry);
            if let Some(r) = responder {
                answers.push((r, applied));
            }
        }
        self.publish();
        for (r, applied) in answers {
            r.send(applied);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.inner.clone(),
            producers: lock_producers(&self.producers).image(),
            snapshot: self.snapshot.clone(),
            snapshot_path: self.snapshot_path.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.load(meta, &snapshot)?;
        if let Some(last) = meta.last_log_id {
            self.anchor.set(last.index, self.inner.next_offset);
        }
        let snap = Snapshot {
            meta: meta.clone(),
            snapshot,
        };
        if let Some(path) = &self.snapshot_path {
            persist_snapshot(path.clone(), &snap).await?;
        }
        *self.snapshot.lock().expect("snapshot lock") = Some(snap);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.snapshot.lock().expect("snapshot lock").clone())
    }
}
