//! The consumer group workload: `--group-consumers N` members of one group (`chaos-<run>`)
//! subscribed to the chaos topic while the faults run, a sampler of the group's
//! committed offsets, and, after the drain, the catch-up, the members' clean stop and a
//! final linearizable read of the committed offsets.
//!
//! - Member `i` has its own [`Client`] and [`GroupConsumer`] (auto-commit off, offsets
//!   reset to the earliest, a [`GROUP_SESSION_TIMEOUT`] session). It polls; every
//!   record a poll returns is recorded; at most every [`COMMIT_INTERVAL`] it commits the
//!   position of each owned partition that moved, one partition per `commit_offsets_sync`
//!   so that each commit has its own answer (at-least-once: a position only moves past
//!   records `poll` returned). Its listener records takeovers (with the offset reading
//!   starts at), revocations (committing the positions, as auto-commit would) and lost
//!   partitions. A fenced member keeps polling: the client joins again under a new id.
//! - The sampler reads every partition's committed offset (`GroupAdmin`) and the group's
//!   description every [`SAMPLE_INTERVAL`].
//! - [`GroupWorkload::finish`]: after the drain, wait until the group has consumed every
//!   acknowledged record (or the deadline), stop the members (last commit, `close`),
//!   then let one more member (the *auditor*) join the empty group: its takeovers read
//!   each partition's committed offset through the partition's Raft group (a fence),
//!   which is the final committed offset.
//!
//! Every call on a peer runs under a deadline of its own (the client's retry deadline)
//! and under an outer `tokio::time::timeout` here.
//!
//! Layout: this file has the settings, [`GroupWorkload`], the listener and the
//! connect / subscribe loops; `member` a member's task and its commits; `observe` the
//! sampler and the auditor.

mod member;
mod observe;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{
    AutoOffsetReset, Client, ClientConfig, ConsumerConfig, Error, GroupConsumer,
    GroupConsumerConfig, RebalanceListener, RetryPolicy, Revocation, TopicPartition,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::history::{CommitOutcome, GroupCommit, GroupEvent, GroupEventKind, Recorder};
use crate::security::ClientSecurity;
use member::member;
use observe::{audit, sample};

/// Session timeout of every member: shorter than the default 10 s so that the longer
/// faults (a paused or isolated coordinator, every node down) cost some members their
/// session, and the rejoin path runs.
pub const GROUP_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Each poll's long-poll wait.
pub const POLL_WAIT: Duration = Duration::from_millis(500);
/// A member commits its moved positions at most this often.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Period of the committed-offset and `describe_group` samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Per-attempt bound of a member's calls (fetch beyond its wait, commit, coordinator).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry of one member call: long enough for an election, short enough that a commit
/// stuck behind a fault fails and the member goes on.
pub const CALL_RETRY: RetryPolicy = RetryPolicy {
    backoff_initial: Duration::from_millis(50),
    backoff_max: Duration::from_secs(1),
    attempts_max: 1_000,
    deadline: Duration::from_secs(10),
};
/// Outer bound on one `poll`: a revocation commit and a takeover, each within
/// [`CALL_RETRY`], plus the wait. Hitting it is recorded as a `LocalDeadline` error.
pub const POLL_BOUND: Duration = Duration::from_secs(40);
/// Outer bound on one commit, `subscribe`, `close`, connect or admin call.
pub const CALL_BOUND: Duration = Duration::from_secs(20);
/// Bound on the auditor's wait for every partition's takeover.
pub const AUDIT_MAX: Duration = Duration::from_secs(20);
/// The auditor's poll wait: it only waits for its assignment, not for records.
pub const AUDIT_POLL_WAIT: Duration = Duration::from_millis(100);

/// The client settings of the group's connections.
fn group_client_config(security: &ClientSecurity) -> ClientConfig {
    security.apply(ClientConfig {
        retry: CALL_RETRY,
        request_timeout: REQUEST_TIMEOUT,
        ..ClientConfig::default()
    })
}

fn member_config(index: u32) -> GroupConsumerConfig {
    GroupConsumerConfig {
        client_id: format!("neo-chaos-{index}"),
        session_timeout: GROUP_SESSION_TIMEOUT,
        auto_commit: false,
        auto_offset_reset: AutoOffsetReset::Earliest,
        consumer: ConsumerConfig {
            retry: CALL_RETRY,
            request_timeout: REQUEST_TIMEOUT,
            ..ConsumerConfig::default()
        },
        ..GroupConsumerConfig::default()
    }
}

/// The kind of a client error, for counting: the broker's error code when there is one
/// (`FencedMember`, `NotCoordinator`, `NotLeader`, ...), else the transport's or the
/// client's variant (`Timeout`, `Connect`, `NoBrokerReachable`, ...). Retry wrappers
/// are looked through: the kind is the last attempt's.
pub fn error_kind(err: &Error) -> String {
    match err {
        Error::Fenced { .. } => "FencedMember".into(),
        Error::RetriesExhausted { last, .. } | Error::DeadlineExceeded { last, .. } => {
            error_kind(last)
        }
        Error::BatchFailed(inner) => error_kind(inner),
        _ => match (err.code(), err) {
            (Some(code), _) => format!("{code:?}"),
            (None, Error::Transport(t)) => variant_name(&format!("{t:?}")),
            (None, other) => variant_name(&format!("{other:?}")),
        },
    }
}

/// `Timeout { .. }` → `Timeout`.
fn variant_name(debug: &str) -> String {
    let name: String = debug
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        "Other".into()
    } else {
        name
    }
}

/// Kind recorded when one of our own outer deadlines ends a call.
pub const LOCAL_DEADLINE: &str = "LocalDeadline";

/// A running group workload.
#[derive(Debug)]
pub struct GroupWorkload {
    seeds: Vec<String>,
    security: ClientSecurity,
    group: String,
    topic: String,
    members: u32,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    sampler: JoinHandle<()>,
}

impl GroupWorkload {
    /// Start `members` members of `group` on `topic` and the sampler. Members connect
    /// and subscribe in their own tasks (and keep trying while a fault is on).
    pub fn start(
        seeds: &[String],
        security: &ClientSecurity,
        recorder: &Recorder,
        topic: &str,
        group: &str,
        members: u32,
    ) -> GroupWorkload {
        recorder.start_group(group, members);
        let (stop, stop_rx) = watch::channel(false);
        let tasks = (0..members)
            .map(|i| {
                tokio::spawn(member(
                    i,
                    seeds.to_vec(),
                    security.clone(),
                    recorder.clone(),
                    topic.to_string(),
                    group.to_string(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        let sampler = tokio::spawn(sample(
            seeds.to_vec(),
            security.clone(),
            recorder.clone(),
            topic.to_string(),
            group.to_string(),
            stop_rx,
        ));
        GroupWorkload {
            seeds: seeds.to_vec(),
            security: security.clone(),
            group: group.to_string(),
            topic: topic.to_string(),
            members,
            stop,
            tasks,
            sampler,
        }
    }

    /// Keep consuming until every acknowledged record was consumed or `catch_up_max`
    /// passed; stop the members (last commit, close) and the sampler; read the final
    /// committed offsets with the auditor.
    pub async fn finish(self, recorder: &Recorder, partitions: u32, catch_up_max: Duration) {
        let clock = recorder.clock();
        let begin = clock.now_us();
        let deadline = Instant::now() + catch_up_max;
        loop {
            let left = recorder.group_unconsumed();
            if left == 0 || Instant::now() >= deadline {
                eprintln!(
                    "[{:7.2}s] group: {left} acknowledged records not consumed; stopping the members",
                    clock.secs()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let end = clock.now_us();
        recorder.group(|g| g.final_phase_us = Some((begin, end)));
        let _ = self.stop.send(true);
        let bound = Instant::now() + POLL_BOUND + CALL_BOUND * 2;
        for mut task in self.tasks {
            if tokio::time::timeout_at(bound, &mut task).await.is_err() {
                eprintln!("group: a member did not stop in time; aborted");
                task.abort();
            }
        }
        self.sampler.abort();
        let finals = audit(
            &self.seeds,
            &self.security,
            recorder,
            &self.topic,
            &self.group,
            self.members,
            partitions,
        )
        .await;
        let finals: BTreeMap<u32, Option<u64>> =
            finals.iter().map(|s| (s.partition, s.offset)).collect();
        eprintln!(
            "[{:7.2}s] group: final committed offsets {finals:?}",
            clock.secs()
        );
    }
}

/// Records a member's takeovers, revocations and losses (callbacks run inside `poll`).
struct Listener {
    member: u32,
    recorder: Recorder,
    /// When the current `poll` began (a takeover's read happened after it).
    poll_start_us: Arc<AtomicU64>,
    /// The member id in force before the current poll.
    member_id: Arc<Mutex<String>>,
}

impl Listener {
    fn event(&self, kind: GroupEventKind) {
        let (start_us, at_us) = (
            self.poll_start_us.load(Ordering::Relaxed),
            self.recorder.clock().now_us(),
        );
        let member = self.member;
        self.recorder.group(|g| {
            g.events.push(GroupEvent {
                member,
                start_us,
                at_us,
                kind,
            })
        });
    }
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, assigned: &[(TopicPartition, u64)]) {
        let partitions = assigned.iter().map(|(tp, o)| (tp.partition, *o)).collect();
        self.event(GroupEventKind::Assigned { partitions });
    }

    fn on_revoked(&mut self, revocation: &mut Revocation) {
        revocation.commit_positions();
        let now = self.recorder.clock().now_us();
        let member_id = self
            .member_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let partitions: Vec<(u32, Option<u64>)> = revocation
            .partitions()
            .iter()
            .map(|tp| (tp.partition, revocation.commits().get(tp).copied()))
            .collect();
        let member = self.member;
        self.recorder.group(|g| {
            for (partition, offset) in &partitions {
                if let Some(offset) = offset {
                    g.commits.push(GroupCommit {
                        member,
                        member_id: member_id.clone(),
                        partition: *partition,
                        offset: *offset,
                        invoke_us: now,
                        complete_us: None,
                        outcome: CommitOutcome::Unobserved,
                        error_kind: None,
                        error: None,
                    });
                }
            }
        });
        self.event(GroupEventKind::Revoked { partitions });
    }

    fn on_lost(&mut self, lost: &[TopicPartition]) {
        let partitions = lost.iter().map(|tp| tp.partition).collect();
        self.event(GroupEventKind::Lost { partitions });
    }
}

fn push_event(recorder: &Recorder, member: u32, start_us: u64, kind: GroupEventKind) {
    let at_us = recorder.clock().now_us();
    recorder.group(|g| {
        g.events.push(GroupEvent {
            member,
            start_us,
            at_us,
            kind,
        })
    });
}

fn push_error(
    recorder: &Recorder,
    member: u32,
    start_us: u64,
    call: &str,
    kind: String,
    error: String,
) {
    push_event(
        recorder,
        member,
        start_us,
        GroupEventKind::Error {
            call: call.into(),
            kind,
            error,
        },
    );
}

/// Wait `wait`, or less if stop is signalled. Returns whether it was.
async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        () = tokio::time::sleep(wait) => *stop.borrow(),
    }
}

/// Connect (retried until stop); `None` when stopped first.
async fn connect(
    seeds: &[String],
    security: &ClientSecurity,
    recorder: &Recorder,
    member: u32,
    stop: &mut watch::Receiver<bool>,
) -> Option<Client> {
    loop {
        let start = recorder.clock().now_us();
        match tokio::time::timeout(
            CALL_BOUND,
            Client::connect_with(seeds, group_client_config(security)),
        )
        .await
        {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e)) => push_error(
                recorder,
                member,
                start,
                "connect",
                error_kind(&e),
                e.to_string(),
            ),
            Err(_) => push_error(
                recorder,
                member,
                start,
                "connect",
                LOCAL_DEADLINE.into(),
                String::new(),
            ),
        }
        if pause(stop, Duration::from_millis(500)).await {
            return None;
        }
    }
}

/// Join the group (retried until stop); `None` when stopped first.
async fn subscribe(
    client: &Client,
    recorder: &Recorder,
    member: u32,
    topic: &str,
    group: &str,
    stop: &mut watch::Receiver<bool>,
) -> Option<GroupConsumer> {
    loop {
        let start = recorder.clock().now_us();
        let joined = tokio::time::timeout(
            CALL_BOUND,
            GroupConsumer::subscribe(client.clone(), group, &[topic], member_config(member)),
        )
        .await;
        match joined {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e)) => push_error(
                recorder,
                member,
                start,
                "subscribe",
                error_kind(&e),
                e.to_string(),
            ),
            Err(_) => push_error(
                recorder,
                member,
                start,
                "subscribe",
                LOCAL_DEADLINE.into(),
                String::new(),
            ),
        }
        if pause(stop, Duration::from_millis(500)).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_name_the_cause() {
        let fenced = Error::Fenced {
            group: "g".into(),
            member_id: "m".into(),
            reason: "r".into(),
        };
        assert_eq!(error_kind(&fenced), "FencedMember");
        let wrapped = Error::DeadlineExceeded {
            deadline: Duration::from_secs(1),
            last: Box::new(Error::NoBrokerReachable {
                tried: vec![],
                last: "x".into(),
            }),
        };
        assert_eq!(error_kind(&wrapped), "NoBrokerReachable");
        assert_eq!(
            error_kind(&Error::InvalidArgument("x".into())),
            "InvalidArgument"
        );
        assert_eq!(variant_name("Timeout { after: 1s }"), "Timeout");
        assert_eq!(variant_name("{}"), "Other");
    }
}
