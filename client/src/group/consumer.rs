//! [`GroupConsumer`]: a member of a consumer group. Reads the partitions the
//! coordinator assigns it from the group's committed offsets, commits what `poll`
//! returned, gives partitions up when told to. The fetching is [`Consumer`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use neo_protocol::ErrorCode;
use neo_protocol::api::{FetchOffsetsResponse, JoinGroupRequest, JoinGroupResponse};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::assignment::{self, PartitionSet};
use super::coordinator::CoordinatorLink;
use super::listener::{RebalanceListener, Revocation};
use super::membership::{HeartbeatTask, Member, Phase, Shared};
use super::offsets::{Commits, OffsetCalls};
use super::{AutoOffsetReset, GROUP_NAME_BYTES_MAX, GroupConsumerConfig, TopicPartition};
use crate::client::Client;
use crate::consumer::{Consumer, ConsumerRecord, Offset, stopped_records};
use crate::encryption::{DecryptMode, RecordResult};
use crate::error::{Error, Result};

/// One owned partition's lag, as [`GroupConsumer::lag`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The next offset `poll` returns (`None`: not resolved yet).
    pub position: Option<u64>,
    /// The partition's log end offset (high watermark), from its leader just now.
    pub log_end_offset: u64,
    /// `log_end_offset - position` (`None` when the position is unknown).
    pub lag: Option<u64>,
}

/// A member of a consumer group.
///
/// ```no_run
/// use std::time::Duration;
/// use neo_client::{AutoOffsetReset, Client, GroupConsumer, GroupConsumerConfig};
/// # async fn demo() -> neo_client::Result<()> {
/// let client = Client::connect(&["127.0.0.1:7070"]).await?;
/// let config = GroupConsumerConfig {
///     auto_offset_reset: AutoOffsetReset::Earliest,
///     ..GroupConsumerConfig::default()
/// };
/// let mut consumer = GroupConsumer::subscribe(client, "billing", &["orders"], config).await?;
/// for _ in 0..10 {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{}/{}@{}", record.topic, record.partition, record.offset);
///     }
/// }
/// consumer.close().await // commits, then leaves the group
/// # }
/// ```
///
/// Dropping it without [`GroupConsumer::close`] stops its heartbeats without leaving:
/// the coordinator frees its partitions after the session timeout (what a crash does).
pub struct GroupConsumer {
    group: String,
    config: GroupConsumerConfig,
    /// Positions of the owned partitions, and the fetching.
    consumer: Consumer,
    /// The partitions this member reads (reported to the coordinator as owned).
    owned: PartitionSet,
    /// The assignment generation last reconciled.
    seen_generation: u64,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    /// In a mutex only so that `GroupConsumer` is `Sync` (its `&self` futures are
    /// `Send`) without asking listeners to be `Sync`; used through `get_mut`.
    listener: std::sync::Mutex<Option<Box<dyn RebalanceListener>>>,
    offsets: OffsetCalls,
    commits: Commits,
    last_auto_commit: Instant,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .field("member", &self.shared.member())
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

fn check_name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > GROUP_NAME_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "{what} must be 1 to {GROUP_NAME_BYTES_MAX} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

impl GroupConsumer {
    /// Join `group` as a consumer of `topics` and start heartbeating. Returns once the
    /// coordinator accepted the member (the assignment arrives with the next polls).
    pub async fn subscribe<S: AsRef<str>>(
        client: Client,
        group: &str,
        topics: &[S],
        config: GroupConsumerConfig,
    ) -> Result<GroupConsumer> {
        check_name("group name", group)?;
        let mut topics: Vec<String> = topics.iter().map(|t| t.as_ref().to_string()).collect();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(Error::InvalidArgument(
                "subscribe to at least one topic".into(),
            ));
        }
        for topic in &topics {
            check_name("topic name", topic)?;
        }
        if let Some(instance) = &config.instance_id {
            check_name("instance id", instance)?;
        }
        if config.client_id.len() > GROUP_NAME_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "client id longer than {GROUP_NAME_BYTES_MAX} bytes"
            )));
        }
        let session_timeout_ms = u32::try_from(config.session_timeout.as_millis())
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                Error::InvalidArgument("session timeout must be 1 ms to u32::MAX ms".into())
            })?;
        if config.auto_commit && config.auto_commit_interval.is_zero() {
            return Err(Error::InvalidArgument(
                "auto_commit_interval must be positive".into(),
            ));
        }
        let request_timeout = config.consumer.request_timeout;
        let join = JoinGroupRequest {
            group: group.to_string(),
            instance_id: config.instance_id.clone(),
            client_id: config.client_id.clone(),
            topics,
            session_timeout_ms,
        };
        let mut link = CoordinatorLink::new(client.clone(), group.to_string());
        let resp: JoinGroupResponse = link
            .call("join_group", &join, request_timeout, client.config().retry)
            .await?;
        tracing::debug!(group, member = %resp.member_id, epoch = resp.member_epoch, "joined");
        let shared = Arc::new(Shared::joined(&resp));
        let task = HeartbeatTask {
            shared: shared.clone(),
            link,
            join,
            request_timeout,
            backoff: client.config().retry,
        };
        let task = tokio::spawn(task.run());
        let offsets = OffsetCalls {
            client: client.clone(),
            group: group.to_string(),
            timeout: request_timeout,
            retry: config.consumer.retry,
        };
        Ok(GroupConsumer {
            group: group.to_string(),
            consumer: Consumer::with_config(client, config.consumer.clone()),
            config,
            owned: PartitionSet::new(),
            seen_generation: 0,
            commits: Commits::new(offsets.clone(), shared.clone()),
            shared,
            task: Some(task),
            listener: std::sync::Mutex::new(None),
            offsets,
            last_auto_commit: Instant::now(),
        })
    }

    /// Install the assignment listener. Its callbacks run inside `poll` and `close`,
    /// so set it before the first `poll` to see the first assignment.
    pub fn set_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        *self.listener_mut() = Some(listener);
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The member id the coordinator gave this member (`None` while rejoining).
    pub fn member_id(&self) -> Option<String> {
        self.shared.member().map(|m| m.id)
    }

    /// The member epoch in force (`None` while rejoining).
    pub fn member_epoch(&self) -> Option<u64> {
        self.shared.member().map(|m| m.epoch)
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The next offset `poll` returns for an owned partition.
    pub fn position(&self, partition: &TopicPartition) -> Option<u64> {
        if !self.owned.contains(partition) {
            return None;
        }
        self.consumer
            .position(&partition.topic, partition.partition)
    }

    /// The offset this member last committed (or found committed when it took the
    /// partition over) for an owned partition.
    pub fn committed(&self, partition: &TopicPartition) -> Option<u64> {
        self.commits.last_committed(partition)
    }

    /// Records of the owned partitions, waiting up to `wait` for some (long poll).
    /// Reconciles with the coordinator's assignment first (revocations, takeovers,
    /// callbacks) and runs the automatic commit when due. Returns
    /// [`Error::Fenced`] once when the member lost its membership (its partitions
    /// dropped without commit); the following polls rejoin.
    ///
    /// With a key ring (`config.consumer.encryption`), values come back decrypted, and a
    /// record that cannot be decrypted is answered as [`Error::Decrypt`] with the
    /// partition's position kept at it, as [`Consumer::poll`] does: skip it with
    /// [`GroupConsumer::seek`] to `offset + 1`, or use [`GroupConsumer::poll_each`].
    pub async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>> {
        let records = self.poll_with(wait, DecryptMode::StopAtFailure).await?;
        Ok(stopped_records(records))
    }

    /// [`GroupConsumer::poll`], but every record comes back on its own: decrypted (or
    /// never encrypted), or as stored with the reason it cannot be decrypted
    /// ([`Consumer::poll_each`]). Positions (and so commits) move past both kinds.
    pub async fn poll_each(&mut self, wait: Duration) -> Result<Vec<RecordResult>> {
        self.poll_with(wait, DecryptMode::EachRecord).await
    }

    async fn poll_with(&mut self, wait: Duration, mode: DecryptMode) -> Result<Vec<RecordResult>> {
        let deadline = Instant::now() + wait;
        if let Some(err) = self.commits.take_error() {
            return Err(self.after_commit_error(err));
        }
        loop {
            self.reconcile().await?;
            self.auto_commit();
            let left = deadline.saturating_duration_since(Instant::now());
            let wake = self.shared.poll_wake.notified();
            if self.owned.is_empty() {
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                tokio::select! {
                    () = wake => continue,
                    () = tokio::time::sleep(left) => return Ok(Vec::new()),
                }
            }
            // The fetch is cancel-safe: cut short by an assignment change, it returns
            // and moves nothing.
            let outcome = tokio::select! {
                outcome = self.consumer.poll_partitions(left, mode) => outcome?,
                () = wake => continue,
            };
            let mut first_error = None;
            for ((topic, partition), err) in outcome.failed {
                if err.code() == Some(ErrorCode::OffsetOutOfRange) {
                    let to = match self.config.auto_offset_reset {
                        AutoOffsetReset::Earliest => Offset::Beginning,
                        AutoOffsetReset::Latest => Offset::End,
                    };
                    tracing::warn!(group = %self.group, %topic, partition, ?to,
                        "position out of the log range; reset");
                    self.consumer.seek(&topic, partition, to);
                } else {
                    first_error.get_or_insert(err);
                }
            }
            if !outcome.records.is_empty() {
                return Ok(outcome.records);
            }
            if let Some(err) = first_error {
                return Err(err);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Commit the positions of the owned partitions (past the records `poll`
    /// returned) without waiting. At most one commit is in flight; this one is merged
    /// behind it. Returns the error of an earlier asynchronous commit, if one failed.
    pub fn commit(&mut self) -> Result<()> {
        let positions = self.positions();
        self.commit_offsets(positions)
    }

    /// Commit the positions of the owned partitions and wait until a quorum has them.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let positions = self.positions();
        self.commit_offsets_sync(positions).await
    }

    /// Commit these offsets (each the next record to consume) of owned partitions,
    /// without waiting. Partitions not owned are refused with `InvalidArgument`.
    pub fn commit_offsets(&mut self, offsets: BTreeMap<TopicPartition, u64>) -> Result<()> {
        self.check_owned(offsets.keys())?;
        self.commits.commit_async(offsets);
        match self.commits.take_error() {
            Some(err) => Err(self.after_commit_error(err)),
            None => Ok(()),
        }
    }

    /// Commit these offsets of owned partitions and wait for the answers.
    pub async fn commit_offsets_sync(
        &mut self,
        offsets: BTreeMap<TopicPartition, u64>,
    ) -> Result<()> {
        self.check_owned(offsets.keys())?;
        let earlier = self.commits.take_error();
        let result = self.commits.commit_sync(offsets).await;
        match result.err().or(earlier) {
            Some(err) => Err(self.after_commit_error(err)),
            None => Ok(()),
        }
    }

    /// Move an owned partition's position: the next `poll` returns records from
    /// `offset` on (an offset outside the log is reset per `auto_offset_reset`).
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let tp = TopicPartition::new(topic, partition);
        self.check_owned([&tp])?;
        self.consumer.seek(topic, partition, Offset::At(offset));
        Ok(())
    }

    /// Per owned partition: its position, its log end offset (asked of its leader now)
    /// and the difference.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let asks = self.owned.iter().map(|tp| async move {
            let end = self.consumer.high_watermark(&tp.topic, tp.partition).await;
            (tp.clone(), end)
        });
        let mut out = Vec::new();
        for (tp, end) in futures::future::join_all(asks).await {
            let log_end_offset = end?;
            let position = self.consumer.position(&tp.topic, tp.partition);
            out.push(PartitionLag {
                partition: tp,
                position,
                log_end_offset,
                lag: position.map(|p| log_end_offset.saturating_sub(p)),
            });
        }
        Ok(out)
    }

    /// The log end offset of an owned partition as its last fetch saw it (no I/O).
    pub fn last_log_end_offset(&self, partition: &TopicPartition) -> Option<u64> {
        self.consumer
            .last_high_watermark(&partition.topic, partition.partition)
    }

    /// Give every partition up (the listener's `on_revoked`, then a commit of the
    /// positions when auto-commit is on), leave the group, stop the heartbeats.
    /// Returns the first error met; the member leaves either way.
    pub async fn close(mut self) -> Result<()> {
        let mut first = self.commits.take_error();
        if matches!(self.shared.view().phase, Phase::Joined) && !self.owned.is_empty() {
            let all: Vec<TopicPartition> = self.owned.iter().cloned().collect();
            if let Err(err) = self.revoke(all).await {
                first.get_or_insert(err);
            }
        } else {
            self.commits.settle().await;
            if let Some(err) = self.commits.take_error() {
                first.get_or_insert(err);
            }
        }
        self.shared.close();
        if let Some(mut task) = self.task.take() {
            let bound = self.config.consumer.request_timeout * 2;
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                tracing::warn!(group = %self.group, "leave did not finish in {bound:?}");
                task.abort();
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Bring the owned partitions in line with the coordinator's latest assignment.
    async fn reconcile(&mut self) -> Result<()> {
        let view = self.shared.view();
        if let Phase::Fenced { member_id, reason } = view.phase {
            self.lose_all();
            self.shared.rejoin(false);
            return Err(Error::Fenced {
                group: self.group.clone(),
                member_id,
                reason,
            });
        }
        if let Some(err) = self.shared.take_error() {
            return Err(err);
        }
        if view.generation == self.seen_generation {
            return Ok(());
        }
        let Some(member) = view.member else {
            // Rejoining: nothing to own until the new member's assignment arrives.
            self.seen_generation = view.generation;
            self.shared.reconciled(view.generation);
            return Ok(());
        };
        let diff = assignment::diff(&self.owned, &view.target);
        if !diff.revoked.is_empty() {
            self.revoke(diff.revoked).await?;
        }
        if !diff.assigned.is_empty() {
            self.shared.taking_over(&diff.assigned);
            let taken = self.take_over(&diff.assigned, &member).await;
            self.shared.taking_over(&[]);
            taken?;
        }
        self.seen_generation = view.generation;
        self.shared.reconciled(view.generation);
        Ok(())
    }

    /// Give partitions up: listener, commit (answered), stop reading, report.
    async fn revoke(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        let positions = partitions
            .iter()
            .map(|tp| (tp.clone(), self.consumer.position(&tp.topic, tp.partition)))
            .collect();
        let mut revocation = Revocation::new(positions);
        if self.config.auto_commit {
            revocation.commit_positions();
        }
        if let Some(listener) = self.listener_mut() {
            listener.on_revoked(&mut revocation);
        }
        let result = self.commits.commit_sync(revocation.into_commits()).await;
        self.commits.forget(&partitions);
        for tp in &partitions {
            self.consumer.unassign(&tp.topic, tp.partition);
            self.owned.remove(tp);
        }
        self.shared.set_owned(&self.owned);
        tracing::debug!(group = %self.group, revoked = partitions.len(), "partitions given up");
        result.map_err(|err| self.after_commit_error(err))
    }

    /// Take newly assigned partitions over: fetch their committed offsets as this
    /// member (which fences older owners), position, listener, report.
    async fn take_over(&mut self, partitions: &[TopicPartition], member: &Member) -> Result<()> {
        let this = &*self;
        let fetches = partitions
            .iter()
            .map(|tp| async move { (tp.clone(), this.fetch_as_member(tp, member).await) });
        let results = futures::future::join_all(fetches).await;
        let mut started = Vec::new();
        let mut first_error = None;
        for (tp, result) in results {
            match result {
                Ok(resp) => {
                    let start = match resp.offset {
                        Some(offset) => {
                            self.commits.known(tp.clone(), offset);
                            offset
                        }
                        None => match self.config.auto_offset_reset {
                            AutoOffsetReset::Earliest => resp.log_start_offset,
                            AutoOffsetReset::Latest => resp.log_end_offset,
                        },
                    };
                    self.consumer
                        .seek(&tp.topic, tp.partition, Offset::At(start));
                    self.owned.insert(tp.clone());
                    started.push((tp, start));
                }
                Err(err) => {
                    tracing::debug!(group = %self.group, %tp, error = %err, "takeover failed");
                    first_error.get_or_insert(err);
                }
            }
        }
        if !started.is_empty() {
            if let Some(listener) = self.listener_mut() {
                listener.on_assigned(&started);
            }
            self.shared.set_owned(&self.owned);
        }
        match first_error {
            Some(err) => Err(self.after_commit_error(err)),
            None => Ok(()),
        }
    }

    /// `fetch_offsets` as this member; retried once with the newer epoch when a
    /// heartbeat moved it while the request was on its way.
    async fn fetch_as_member(
        &self,
        tp: &TopicPartition,
        member: &Member,
    ) -> Result<FetchOffsetsResponse> {
        let result = self
            .offsets
            .fetch(tp, Some((&member.id, member.epoch)))
            .await;
        match &result {
            Err(err) if err.code() == Some(ErrorCode::FencedMember) => match self.shared.member() {
                Some(now) if now.id == member.id && now.epoch != member.epoch => {
                    self.offsets.fetch(tp, Some((&now.id, now.epoch))).await
                }
                _ => result,
            },
            _ => result,
        }
    }

    fn listener_mut(&mut self) -> &mut Option<Box<dyn RebalanceListener>> {
        self.listener.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// The positions of the owned partitions that are resolved.
    fn positions(&self) -> BTreeMap<TopicPartition, u64> {
        self.owned
            .iter()
            .filter_map(|tp| {
                self.consumer
                    .position(&tp.topic, tp.partition)
                    .map(|o| (tp.clone(), o))
            })
            .collect()
    }

    fn auto_commit(&mut self) {
        if self.config.auto_commit
            && self.last_auto_commit.elapsed() >= self.config.auto_commit_interval
        {
            self.last_auto_commit = Instant::now();
            let positions = self.positions();
            self.commits.commit_async(positions);
        } else {
            self.commits.drive();
        }
    }

    fn check_owned<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        for tp in partitions {
            if !self.owned.contains(tp) {
                return Err(Error::InvalidArgument(format!(
                    "partition {tp} is not assigned to this member of group {:?}",
                    self.group
                )));
            }
        }
        Ok(())
    }

    /// A commit or takeover failed: a `FencedMember` answer means this member lost
    /// its partitions (drop them, rejoin); anything else is returned as is.
    fn after_commit_error(&mut self, err: Error) -> Error {
        let fenced =
            matches!(err, Error::Fenced { .. }) || err.code() == Some(ErrorCode::FencedMember);
        if !fenced {
            return err;
        }
        let member_id = self.shared.member().map(|m| m.id).unwrap_or_default();
        self.lose_all();
        self.shared.rejoin(true);
        match err {
            Error::Fenced { .. } => err,
            other => Error::Fenced {
                group: self.group.clone(),
                member_id,
                reason: other.to_string(),
            },
        }
    }

    /// Drop every partition without committing (fenced).
    fn lose_all(&mut self) {
        let lost: Vec<TopicPartition> = std::mem::take(&mut self.owned).into_iter().collect();
        for tp in &lost {
            self.consumer.unassign(&tp.topic, tp.partition);
        }
        self.commits.reset();
        if !lost.is_empty() {
            tracing::warn!(group = %self.group, lost = lost.len(), "membership lost; partitions dropped");
            if let Some(listener) = self.listener_mut() {
                listener.on_lost(&lost);
            }
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // No leave: a dropped member is a crashed one (see the type's doc).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    /// Never called: compiling it checks that the futures are `Send`.
    #[allow(dead_code)]
    async fn futures_are_send(mut consumer: GroupConsumer) {
        send(&consumer.poll(Duration::ZERO));
        send(&consumer.lag());
        send(&consumer.commit_sync());
        send(&consumer.close());
    }

    #[test]
    fn group_consumer_can_move_between_threads() {
        fn sync<T: Send + Sync>() {}
        sync::<GroupConsumer>();
    }
}
