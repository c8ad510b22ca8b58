//! The openraft state machine of a group (a partition or the metadata group): the
//! bookkeeping openraft needs (last applied log id, last membership, the current
//! snapshot) and the offset rule that makes the partition log the Raft log, around the
//! group's application [`StateMachine`] (see `machine`), which it feeds every committed
//! entry.
//!
//! The offset rule: every entry consumes [`offsets_used`] record offsets, in log order,
//! starting at 0 (a record batch its record count; a control entry none in a
//! partition, one in the metadata group), so the state machine and the log store
//! compute the same base offset for every entry without talking to each other, and a
//! partition's first record gets offset 0.
//!
//! Snapshots: the body is `next_offset` plus the application machine's image; a
//! partition's data is the log itself, so its image is small (producer table, ...); the
//! metadata group's image is its whole state. The current snapshot is written to
//! `snapshot.qiss` in the group's directory (write to a temporary file, fsync, rename,
//! fsync the directory) so a restart resumes from it.

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
use crate::machine::{AppliedBatch, EntryId, StateMachine};
use crate::types::{Applied, LogId, NeoRaft, Proposal, Snapshot, SnapshotMeta, StoredMembership};

/// Which kind of group a state machine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// A partition group: entries are record batches (and commands on the state kept
    /// next to them); never snapshotted on openraft's initiative.
    Partition,
    /// The metadata group: entries are commands; snapshotted every so many entries.
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
    /// The application machine's image ([`StateMachine::snapshot`]).
    #[serde(with = "serde_bytes")]
    app: Vec<u8>,
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
}

/// Locks a mutex that holds plain data. The crate's lock-poisoning policy: every value
/// behind a lock is consistent after each statement that changes it, so a panic
/// elsewhere while it was held leaves nothing half-done, and the lock is taken anyway.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Tells the log store where the log restarts after a snapshot install.
    anchor: OffsetAnchor,
    /// The group's application state.
    app: Box<dyn StateMachine>,
}

const SNAPSHOT_FILE: &str = "snapshot.qiss";

impl GroupStateMachine {
    /// Opens the state machine of a group whose files live in `dir` (`None`: memory only),
    /// resuming from the snapshot found there.
    pub(crate) fn open(
        kind: GroupKind,
        dir: Option<&Path>,
        anchor: OffsetAnchor,
        app: Box<dyn StateMachine>,
    ) -> io::Result<Self> {
        let mut sm = GroupStateMachine {
            inner: Inner {
                kind,
                last_applied: None,
                membership: StoredMembership::default(),
                next_offset: 0,
            },
            snapshot: Arc::new(std::sync::Mutex::new(None)),
            snapshot_path: dir.map(|d| d.join(SNAPSHOT_FILE)),
            applied_tx: watch::Sender::new(AppliedState::default()),
            anchor,
            app,
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
                    *lock(&sm.snapshot) = Some(Snapshot {
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

    fn publish(&mut self) {
        let st = AppliedState {
            last_applied_index: self.inner.last_applied.map(|l| l.index),
            last_applied_term: self.inner.last_applied.map(|l| l.leader_id.term),
            next_offset: self.inner.next_offset,
        };
        self.applied_tx.send_replace(st);
        self.app.publish();
    }

    fn load(&mut self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let body: SnapshotBody = codec::decode(data).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("decode_snapshot: {e}"))
        })?;
        self.inner.last_applied = meta.last_log_id;
        self.inner.membership = meta.last_membership.clone();
        self.inner.next_offset = body.next_offset;
        self.app.restore(&body.app)?;
        self.publish();
        Ok(())
    }

    fn apply_one(&mut self, entry: &crate::types::Entry) -> Applied {
        let base_offset = self.inner.next_offset;
        self.inner.next_offset += offsets_used(self.inner.kind, &entry.payload);
        self.inner.last_applied = Some(entry.log_id);
        let at = EntryId {
            term: entry.log_id.leader_id.term,
            index: entry.log_id.index,
        };
        match &entry.payload {
            EntryPayload::Blank => Applied::Nothing,
            EntryPayload::Membership(m) => {
                self.inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Applied::Nothing
            }
            EntryPayload::Normal(Proposal::Records(b)) => match self.inner.kind {
                GroupKind::Partition => {
                    let header = qiss::batch::BatchHeader::parse(&b.0).ok();
                    let batch = AppliedBatch {
                        base_offset,
                        record_count: header.as_ref().map_or(1, |h| h.record_count),
                        producer_id: header.as_ref().map_or(-1, |h| h.producer_id),
                        producer_epoch: header.as_ref().map_or(-1, |h| h.producer_epoch),
                        base_sequence: header.as_ref().map_or(-1, |h| h.base_sequence),
                    };
                    self.app.apply_records(at, &batch, &b.0);
                    Applied::Records {
                        base_offset,
                        record_count: batch.record_count,
                    }
                }
                GroupKind::Metadata => Applied::Nothing,
            },
            EntryPayload::Normal(Proposal::Command(cmd)) => {
                Applied::Command(self.app.apply_command(at, cmd))
            }
        }
    }
}

/// Builds a snapshot from a copy of the state taken when the builder was made.
pub struct SnapshotBuilder {
    state: Inner,
    /// The application machine's image (or why it could not be made), taken with
    /// `state`.
    app: io::Result<Vec<u8>>,
    snapshot: Arc<std::sync::Mutex<Option<Snapshot>>>,
    snapshot_path: Option<PathBuf>,
}

impl RaftSnapshotBuilder<NeoRaft> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let body = SnapshotBody {
            next_offset: self.state.next_offset,
            app: std::mem::replace(&mut self.app, Ok(Vec::new()))?,
        };
        let data =
            codec::encode(&body).map_err(|e| io::Error::other(format!("encode_snapshot: {e}")))?;
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
        *lock(&self.snapshot) = Some(snap.clone());
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
            app: self.app.snapshot(),
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
        *lock(&self.snapshot) = Some(snap);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.snapshot).clone())
    }
}
