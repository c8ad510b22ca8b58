//! Committed offsets: `fetch_offsets` and `commit_offsets` at each partition's leader,
//! and [`Commits`], a member's commit pipeline (one asynchronous commit in flight,
//! later ones merged behind it, synchronous commits after it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use neo_protocol::ErrorCode;
use neo_protocol::api::{
    CommitOffsetsRequest, CommitOffsetsResponse, FetchOffsetsRequest, FetchOffsetsResponse,
};
use tokio::task::JoinHandle;

use super::TopicPartition;
use super::membership::Shared;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// How offset calls are made: their timeout per attempt and their retry policy.
#[derive(Debug, Clone)]
pub(crate) struct OffsetCalls {
    pub(crate) client: Client,
    pub(crate) group: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

impl OffsetCalls {
    /// A partition's committed offset and log bounds; with a member, also fences the
    /// partition's older owners (see the protocol's module doc).
    pub(crate) async fn fetch(
        &self,
        tp: &TopicPartition,
        member: Option<(&str, u64)>,
    ) -> Result<FetchOffsetsResponse> {
        let request = FetchOffsetsRequest {
            group: self.group.clone(),
            topic: tp.topic.clone(),
            partition: tp.partition,
            member_id: member.map(|(id, _)| id.to_string()),
            member_epoch: member.map_or(0, |(_, epoch)| epoch),
        };
        self.client
            .call_partition(
                &tp.topic,
                tp.partition,
                "fetch_offsets",
                &request,
                self.timeout,
                self.retry,
            )
            .await
    }

    /// Commit one partition's offset (answered after a quorum has it on disk). Without
    /// a member: an admin commit (only while the group has no members).
    pub(crate) async fn commit(
        &self,
        tp: &TopicPartition,
        offset: u64,
        member: Option<(&str, u64)>,
    ) -> Result<()> {
        let request = CommitOffsetsRequest {
            group: self.group.clone(),
            member_id: member.map(|(id, _)| id.to_string()),
            member_epoch: member.map_or(0, |(_, epoch)| epoch),
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            metadata: String::new(),
        };
        let _: CommitOffsetsResponse = self
            .client
            .call_partition(
                &tp.topic,
                tp.partition,
                "commit_offsets",
                &request,
                self.timeout,
                self.retry,
            )
            .await?;
        Ok(())
    }
}

/// The offsets this member knows the group has committed (to skip commits that would
/// change nothing). Shared with the in-flight commit task.
type Committed = Arc<Mutex<HashMap<TopicPartition, u64>>>;

/// A member's commits.
#[derive(Debug)]
pub(crate) struct Commits {
    calls: OffsetCalls,
    shared: Arc<Shared>,
    committed: Committed,
    /// The asynchronous commit in flight, if any.
    inflight: Option<JoinHandle<Result<()>>>,
    /// Offsets asked for while a commit was in flight: sent when it is done.
    deferred: BTreeMap<TopicPartition, u64>,
    /// The first error of an asynchronous commit, reported by the next call.
    error: Option<Error>,
}

impl Commits {
    pub(crate) fn new(calls: OffsetCalls, shared: Arc<Shared>) -> Commits {
        Commits {
            calls,
            shared,
            committed: Arc::new(Mutex::new(HashMap::new())),
            inflight: None,
            deferred: BTreeMap::new(),
            error: None,
        }
    }

    fn committed(&self) -> MutexGuard<'_, HashMap<TopicPartition, u64>> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember an offset read from the group (no commit needed to keep it).
    pub(crate) fn known(&self, tp: TopicPartition, offset: u64) {
        self.committed().insert(tp, offset);
    }

    /// The offset this member last committed (or found committed) for a partition.
    pub(crate) fn last_committed(&self, tp: &TopicPartition) -> Option<u64> {
        self.committed().get(tp).copied()
    }

    /// Queue `offsets` for an asynchronous commit: sent now if no commit is in flight,
    /// else merged and sent after it.
    pub(crate) fn commit_async(&mut self, offsets: BTreeMap<TopicPartition, u64>) {
        self.deferred.extend(offsets);
        self.drive();
    }

    /// Collect a finished asynchronous commit and start the deferred one.
    pub(crate) fn drive(&mut self) {
        if let Some(handle) = &mut self.inflight {
            if !handle.is_finished() {
                return;
            }
            if let Some(result) = handle.now_or_never() {
                self.note(join_result(result));
            }
            self.inflight = None;
        }
        if self.deferred.is_empty() {
            return;
        }
        let offsets = std::mem::take(&mut self.deferred);
        let (calls, shared, committed) = (
            self.calls.clone(),
            self.shared.clone(),
            self.committed.clone(),
        );
        self.inflight = Some(tokio::spawn(async move {
            commit_all(&calls, &shared, &committed, offsets).await
        }));
    }

    /// Wait for the commit in flight, if any (its error is kept for `take_error`).
    pub(crate) async fn settle(&mut self) {
        if let Some(handle) = self.inflight.take() {
            self.note(join_result(handle.await));
        }
    }

    /// Commit `offsets` and whatever is deferred, after the commit in flight, and wait
    /// for the answers. Returns the first error of these commits.
    pub(crate) async fn commit_sync(
        &mut self,
        offsets: BTreeMap<TopicPartition, u64>,
    ) -> Result<()> {
        self.settle().await;
        let mut all = std::mem::take(&mut self.deferred);
        all.extend(offsets);
        commit_all(&self.calls, &self.shared, &self.committed, all).await
    }

    /// Drop queued commits of partitions being given up (their next owner commits
    /// them now; a late commit from here would be fenced).
    pub(crate) fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.deferred.remove(tp);
            self.committed().remove(tp);
        }
    }

    /// Drop everything: the member was fenced. The commit in flight is abandoned.
    pub(crate) fn reset(&mut self) {
        if let Some(handle) = self.inflight.take() {
            handle.abort();
        }
        self.deferred.clear();
        self.committed().clear();
    }

    /// The first error of an asynchronous commit since the last call.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.drive();
        self.error.take()
    }

    fn note(&mut self, result: Result<()>) {
        if let Err(err) = result {
            tracing::warn!(group = %self.calls.group, error = %err, "asynchronous commit failed");
            self.error.get_or_insert(err);
        }
    }
}

impl Drop for Commits {
    fn drop(&mut self) {
        if let Some(handle) = self.inflight.take() {
            handle.abort();
        }
    }
}

fn join_result(result: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    result.unwrap_or_else(|err| {
        Err(Error::InvalidArgument(format!(
            "commit task ended abnormally: {err}"
        )))
    })
}

/// Commit every offset that differs from the last known committed one, concurrently
/// (one request per partition). Returns the first error.
async fn commit_all(
    calls: &OffsetCalls,
    shared: &Shared,
    committed: &Committed,
    offsets: BTreeMap<TopicPartition, u64>,
) -> Result<()> {
    let todo: Vec<(TopicPartition, u64)> = {
        let known = committed.lock().unwrap_or_else(|e| e.into_inner());
        offsets
            .into_iter()
            .filter(|(tp, offset)| known.get(tp) != Some(offset))
            .collect()
    };
    if todo.is_empty() {
        return Ok(());
    }
    let Some(member) = shared.member() else {
        return Err(Error::Fenced {
            group: calls.group.clone(),
            member_id: String::new(),
            reason: "not a member of the group right now (rejoining)".into(),
        });
    };
    let results = futures::future::join_all(todo.into_iter().map(|(tp, offset)| {
        let member = member.clone();
        async move {
            let mut epoch = member.epoch;
            let mut result = calls.commit(&tp, offset, Some((&member.id, epoch))).await;
            // A heartbeat may have moved the epoch while the commit was on its way:
            // retry once with the new one before calling the member fenced.
            if matches!(&result, Err(e) if e.code() == Some(ErrorCode::FencedMember))
                && let Some(now) = shared.member()
                && now.id == member.id
                && now.epoch != epoch
            {
                epoch = now.epoch;
                result = calls.commit(&tp, offset, Some((&member.id, epoch))).await;
            }
            (tp, offset, result)
        }
    }))
    .await;
    let mut first = None;
    let mut known = committed.lock().unwrap_or_else(|e| e.into_inner());
    for (tp, offset, result) in results {
        match result {
            Ok(()) => {
                known.insert(tp, offset);
            }
            Err(err) => {
                tracing::debug!(%tp, offset, error = %err, "commit failed");
                first.get_or_insert(err);
            }
        }
    }
    first.map_or(Ok(()), Err)
}
