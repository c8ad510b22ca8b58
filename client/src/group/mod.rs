//! Consumer groups, client side: [`GroupConsumer`] (a member of a group that reads the
//! partitions the coordinator assigns it, commits what it consumed) and [`GroupAdmin`]
//! (list, describe, reset offsets, delete).
//!
//! # A member's life (the protocol of `neo_protocol::api::groups`)
//!
//! ```text
//! subscribe ─▶ find_coordinator ─▶ join_group ─▶ member id, epoch, first assignment
//!   └─▶ heartbeat task (tokio): one heartbeat_group always in flight at the
//!       coordinator (wait ≈ heartbeat interval), reporting the partitions the poll path
//!       owns; an answer with another assignment is handed to the poll path
//!
//! poll(wait) ─▶ reconcile with the latest assignment:
//!   revoked  ─▶ listener.on_revoked (auto-commit pre-fills the positions) ─▶ commit
//!               them (quorum) ─▶ stop fetching ─▶ owned reported at once (wait 0)
//!   assigned ─▶ fetch_offsets(member, epoch) at the leader (fences older owners)
//!               ─▶ committed offset, or auto_offset_reset ─▶ listener.on_assigned
//!   ─▶ auto-commit of the positions after records poll returned before (async)
//!   ─▶ long-poll fetch of the owned partitions (shared with `Consumer`), cut short
//!      when the assignment changes
//! ```
//!
//! # Invariants
//!
//! - At-least-once: a committed offset is never beyond a record `poll` has not
//!   returned (auto-commit commits positions, which move only past returned records).
//! - A partition is reported given up only after its revocation commit was answered
//!   (or failed), so its next owner starts from it.
//! - A fenced member commits nothing more: its partitions are dropped as *lost*, the
//!   error is returned by `poll` once, and the member joins again.
//! - At most one asynchronous commit is in flight; later ones wait for it and are
//!   merged (latest offset per partition), so commits of a partition never overtake
//!   each other.
//! - Every call to a peer has a deadline; coordinator moves (`NotCoordinator`,
//!   connection errors) are followed with backoff.

mod admin;
mod assignment;
mod consumer;
mod coordinator;
mod listener;
mod membership;
mod offsets;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::consumer::ConsumerConfig;

pub use admin::{GroupAdmin, GroupReport, MemberReport, OffsetReport, ResetTo};
pub use consumer::{GroupConsumer, PartitionLag};
pub use listener::{RebalanceListener, Revocation};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where a member starts reading a partition for which the group has no committed
/// offset (Kafka's `auto.offset.reset`). Also applied when the committed offset (or a
/// position) fell out of the log (retention): `Earliest` then means the log start,
/// `Latest` the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The first offset still in the log.
    Earliest,
    /// The log end: only records produced from now on (Kafka's default, and ours).
    #[default]
    Latest,
}

/// Every knob of a [`GroupConsumer`], named, units in the types (`Duration`).
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// Static membership: a member that joins again with the same instance id within
    /// its session timeout gets its partitions back without a rebalance of the others.
    /// `None`: a dynamic member (a new identity on every join).
    pub instance_id: Option<String>,
    /// The application's name for itself, shown by `describe_group`.
    pub client_id: String,
    /// A member silent this long is removed from the group by the coordinator (a new
    /// coordinator, after a failover, gives every member a full session from its
    /// takeover). While no coordinator answers, the client keeps its partitions and
    /// keeps trying; the coordinator's answer (`FencedMember` if it evicted the member)
    /// decides. Default 10 s.
    pub session_timeout: Duration,
    /// Commit the positions of the owned partitions (past the records `poll` returned)
    /// every `auto_commit_interval`, when partitions are revoked, and on `close`.
    /// Default on. Off: only `commit`, `commit_sync` and the revocation listener commit.
    pub auto_commit: bool,
    /// Period of the automatic commit. Default 5 s.
    pub auto_commit_interval: Duration,
    /// Start of a partition without a committed offset. Default `Latest`.
    pub auto_offset_reset: AutoOffsetReset,
    /// Fetching (bytes per fetch, isolation, fetch retries, per-call timeout, and the
    /// key ring that decrypts values, `consumer.encryption`); its `request_timeout` also
    /// bounds each coordinator and commit call.
    pub consumer: ConsumerConfig,
}

impl Default for GroupConsumerConfig {
    fn default() -> GroupConsumerConfig {
        GroupConsumerConfig {
            instance_id: None,
            client_id: "neo-client".to_string(),
            session_timeout: Duration::from_secs(10),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: AutoOffsetReset::Latest,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// Bound on the length of a group name, an instance id or a client id this client
/// sends (the broker applies its own bounds too).
pub const GROUP_NAME_BYTES_MAX: usize = 249;
