//! The crate's one error type, split into retriable and fatal failures.
//!
//! The retry loops of this crate ([`crate::Client`], the producer, the consumer) retry
//! exactly the errors for which [`Error::is_retriable`] is true, and give up with
//! [`Error::RetriesExhausted`] or [`Error::DeadlineExceeded`] carrying the last one.

use std::time::Duration;

use neo_protocol::api::Receipt;
use neo_protocol::{ErrorCode, RpcError};

/// Everything a caller of `neo-client` can see go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with an error frame (stable code in [`RpcError::code`]).
    #[error("broker error: {0}")]
    Broker(RpcError),
    /// The transport failed: I/O, framing, a closed connection, a call timeout.
    #[error("transport: {0}")]
    Transport(neo_protocol::Error),
    /// The topic does not exist (after a metadata refresh).
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        count: u32,
    },
    /// Retriable: the partition has no leader in the cached metadata right now
    /// (election in progress, topic just created).
    #[error("partition {topic}/{partition} has no leader right now")]
    LeaderNotAvailable {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// Retriable: no seed or broker answered a metadata request.
    #[error("no broker reachable (tried {tried:?}): {last}")]
    NoBrokerReachable {
        /// Addresses tried.
        tried: Vec<String>,
        /// The last failure.
        last: String,
    },
    /// A record batch could not be built or a fetched one could not be read.
    #[error("record batch: {0}")]
    Batch(#[from] qiss::Error),
    /// The caller's input makes no sense (empty seed list, zero partitions, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A retriable error persisted through `retry_attempts_max` attempts.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// A retriable error persisted until the operation's overall deadline.
    #[error("deadline of {deadline:?} exceeded: {last}")]
    DeadlineExceeded {
        /// The deadline that expired.
        deadline: Duration,
        /// The last attempt's error.
        last: Box<Error>,
    },
    /// The batch holding this record failed for good (every record of the batch gets
    /// the same error).
    #[error("{0}")]
    BatchFailed(std::sync::Arc<Error>),
    /// The producer was closed (dropped) before the record was delivered.
    #[error("producer closed before the record was delivered")]
    ProducerClosed,
    /// A group consumer lost its membership: the coordinator fenced it (stale epoch,
    /// session timed out) or it could not reach the coordinator for a whole session
    /// timeout. Its partitions were dropped without a commit (another member may own
    /// them now); the next `poll` joins the group again under a new member id.
    #[error("member {member_id:?} of group {group:?} was fenced: {reason}")]
    Fenced {
        /// The group.
        group: String,
        /// The member id that lost its membership.
        member_id: String,
        /// What happened (the coordinator's error, or the local session loss).
        reason: String,
    },
    /// A producer could not encrypt a record's value (its key ring has no current key,
    /// or the random source failed); the record was not sent.
    #[error("cannot encrypt a record for topic {topic:?}: {source}")]
    Encrypt {
        /// The record's topic.
        topic: String,
        /// Why.
        #[source]
        source: crate::encryption::EncryptionError,
    },
    /// A consumed record's value cannot be decrypted (unknown or retired key, wrong
    /// key, tampered, moved to another topic, malformed `neo-enc` header). Never
    /// retried: `poll` keeps the partition's position at this record, so it is
    /// returned again until the key ring can open it or the caller seeks past it
    /// (`offset + 1`).
    #[error("record {topic}/{partition}@{offset} cannot be decrypted: {source}")]
    Decrypt {
        /// The record's topic.
        topic: String,
        /// The record's partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
        /// Why.
        #[source]
        source: crate::encryption::EncryptionError,
    },
    /// The operation needs a group without active members (reset offsets, delete).
    #[error(
        "group {group:?} has active members; stop them (or wait for their session timeout) first"
    )]
    GroupNotEmpty {
        /// The group.
        group: String,
    },
    /// A queue delivery's lease is no longer this receipt's (it expired and the
    /// message was leased again, it was nacked, or the receipt is of an older
    /// attempt): nothing changed. The message will be (or was) delivered again.
    #[error("receipt {receipt}: lease lost (expired, nacked, or another attempt's)")]
    LeaseLost {
        /// The receipt refused.
        receipt: Receipt,
    },
    /// The queue message of this receipt is already done (acked or dead-lettered):
    /// nothing changed.
    #[error("receipt {receipt}: the message is already done (acked or dead-lettered)")]
    AlreadyDone {
        /// The receipt refused.
        receipt: Receipt,
    },
    /// No such queue message in the receipt's partition, or the receipt belongs to
    /// another queue or partition: nothing changed.
    #[error("receipt {receipt}: unknown to this queue")]
    UnknownReceipt {
        /// The receipt refused.
        receipt: Receipt,
    },
    /// The queue consumer was closed: it receives nothing more.
    #[error("queue consumer closed")]
    ConsumerClosed,
    /// A broker's answer does not fit its request (a reply of another length or shape
    /// than asked for). Not retried: the same peer would answer the same.
    #[error("unexpected answer to {method}: {reason}")]
    UnexpectedAnswer {
        /// The method called.
        method: String,
        /// What does not fit.
        reason: String,
    },
}

impl Error {
    /// Whether the same operation may succeed if tried again (after a backoff and,
    /// where it helps, a metadata refresh). Everything else is fatal.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker(err) => err.is_retriable(),
            Error::Transport(err) => match err {
                // A call that timed out may still succeed: the broker may have been
                // busy or the leader dead; the retry goes to the (new) leader.
                neo_protocol::Error::Timeout { .. } | neo_protocol::Error::Connect { .. } => true,
                other => other.is_retriable(),
            },
            Error::LeaderNotAvailable { .. } | Error::NoBrokerReachable { .. } => true,
            Error::BatchFailed(err) => err.is_retriable(),
            Error::UnknownTopic { .. }
            | Error::UnknownPartition { .. }
            | Error::Batch(_)
            | Error::InvalidArgument(_)
            | Error::RetriesExhausted { .. }
            | Error::DeadlineExceeded { .. }
            | Error::ProducerClosed
            | Error::Encrypt { .. }
            | Error::Decrypt { .. }
            | Error::Fenced { .. }
            | Error::GroupNotEmpty { .. }
            | Error::LeaseLost { .. }
            | Error::AlreadyDone { .. }
            | Error::UnknownReceipt { .. }
            | Error::ConsumerClosed
            | Error::UnexpectedAnswer { .. } => false,
        }
    }

    /// Whether the cached metadata is probably wrong after this error (wrong leader,
    /// dead connection, a leader cut off from its followers), so that the next attempt
    /// should refresh it first.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            Error::Broker(err) => matches!(
                err.error_code(),
                Some(
                    ErrorCode::NotLeader
                        | ErrorCode::UnknownTopic
                        | ErrorCode::UnknownPartition
                        | ErrorCode::ShuttingDown
                        // A leader that cannot commit is often isolated while the
                        // others have elected a new one: ask the cluster again.
                        | ErrorCode::NotEnoughReplicas
                )
            ),
            Error::Transport(_) | Error::LeaderNotAvailable { .. } => true,
            _ => false,
        }
    }

    /// Whether this error says a partition's leader is gone or moving: its connection
    /// was refused, closed or went silent (a dead or frozen node), it answered
    /// `NotLeader`, `NotEnoughReplicas` (a leader cut off from its quorum) or
    /// `ShuttingDown`, or the metadata names no leader (an election in progress). The
    /// retry loops then come back within [`crate::retry::FAILOVER_BACKOFF_MAX`] (an
    /// election takes about a second), or at once when the cache already names another
    /// leader. A call timeout is not one: a live but slow leader gets the normal
    /// backoff (a frozen one is caught by the connection's heartbeats first).
    pub fn is_leader_failover(&self) -> bool {
        match self {
            Error::Broker(err) => matches!(
                err.error_code(),
                Some(ErrorCode::NotLeader | ErrorCode::NotEnoughReplicas | ErrorCode::ShuttingDown)
            ),
            Error::Transport(err) => matches!(
                err,
                neo_protocol::Error::Connect { .. }
                    | neo_protocol::Error::ConnectionClosed
                    | neo_protocol::Error::PeerUnresponsive { .. }
                    | neo_protocol::Error::Io(_)
            ),
            Error::LeaderNotAvailable { .. } => true,
            _ => false,
        }
    }

    /// A `Throttled` refusal: how long the broker asked to wait (its `details`).
    pub fn throttle_delay(&self) -> Option<std::time::Duration> {
        let rpc = match self {
            Error::Broker(err) | Error::Transport(neo_protocol::Error::Rpc(err)) => err,
            Error::BatchFailed(err) => return err.throttle_delay(),
            _ => return None,
        };
        if rpc.error_code() != Some(ErrorCode::Throttled) {
            return None;
        }
        let ms = std::str::from_utf8(&rpc.details)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(100);
        Some(std::time::Duration::from_millis(ms))
    }

    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker(err) => err.error_code(),
            Error::Transport(neo_protocol::Error::Rpc(err)) => err.error_code(),
            Error::RetriesExhausted { last, .. } | Error::DeadlineExceeded { last, .. } => {
                last.code()
            }
            Error::BatchFailed(err) => err.code(),
            Error::Fenced { .. } => Some(ErrorCode::FencedMember),
            Error::GroupNotEmpty { .. } => Some(ErrorCode::GroupNotEmpty),
            _ => None,
        }
    }

    /// The leader address a `NotLeader` error carried, if any.
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::Broker(err) => err.leader_hint(),
            _ => None,
        }
    }

    /// The coordinator address a `NotCoordinator` error carried, if any (its details,
    /// like `NotLeader`'s; the protocol crate has no accessor for it).
    pub fn coordinator_hint(&self) -> Option<&str> {
        match self {
            Error::Broker(err)
                if err.error_code() == Some(ErrorCode::NotCoordinator)
                    && !err.details.is_empty() =>
            {
                std::str::from_utf8(&err.details).ok()
            }
            _ => None,
        }
    }
}

impl From<neo_protocol::Error> for Error {
    fn from(err: neo_protocol::Error) -> Error {
        match err {
            // A broker error frame is the broker's answer, not a transport failure.
            neo_protocol::Error::Rpc(rpc) => Error::Broker(rpc),
            other => Error::Transport(other),
        }
    }
}

/// Short alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_and_fatal_are_told_apart() {
        let not_leader = Error::from(neo_protocol::Error::Rpc(RpcError::not_leader(Some(
            "127.0.0.1:1",
        ))));
        assert!(not_leader.is_retriable());
        assert!(not_leader.invalidates_metadata());
        assert_eq!(not_leader.leader_hint(), Some("127.0.0.1:1"));
        assert_eq!(not_leader.code(), Some(ErrorCode::NotLeader));

        let unknown = Error::from(neo_protocol::Error::Rpc(RpcError::new(
            ErrorCode::UnknownTopic,
            "no",
        )));
        assert!(!unknown.is_retriable());

        let no_quorum = Error::from(neo_protocol::Error::Rpc(RpcError::new(
            ErrorCode::NotEnoughReplicas,
            "not committed within 5000 ms",
        )));
        assert!(no_quorum.is_retriable());
        assert!(
            no_quorum.invalidates_metadata(),
            "an isolated leader: look again"
        );

        let closed = Error::from(neo_protocol::Error::ConnectionClosed);
        assert!(closed.is_retriable());
        assert!(closed.invalidates_metadata());

        let exhausted = Error::RetriesExhausted {
            attempts: 3,
            last: Box::new(not_leader),
        };
        assert!(!exhausted.is_retriable());
        assert_eq!(exhausted.code(), Some(ErrorCode::NotLeader));
        assert!(!Error::InvalidArgument("x".into()).is_retriable());
    }

    #[test]
    fn leader_failover_errors_are_told_apart() {
        let rpc = |code| Error::from(neo_protocol::Error::Rpc(RpcError::new(code, "x")));
        let moving = [
            Error::from(neo_protocol::Error::Rpc(RpcError::not_leader(None))),
            rpc(ErrorCode::NotEnoughReplicas),
            rpc(ErrorCode::ShuttingDown),
            Error::from(neo_protocol::Error::ConnectionClosed),
            Error::from(neo_protocol::Error::PeerUnresponsive {
                silent_for: Duration::from_secs(2),
            }),
            Error::from(neo_protocol::Error::Connect {
                addr: "127.0.0.1:1".into(),
                attempts: 1,
                last: "connection refused".into(),
            }),
            Error::from(neo_protocol::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
            Error::LeaderNotAvailable {
                topic: "t".into(),
                partition: 0,
            },
        ];
        for err in &moving {
            assert!(err.is_leader_failover(), "{err}");
            assert!(err.is_retriable(), "{err}");
        }
        let other = [
            rpc(ErrorCode::Busy),
            rpc(ErrorCode::Throttled),
            rpc(ErrorCode::UnknownTopic),
            Error::from(neo_protocol::Error::Timeout {
                after: Duration::from_secs(7),
            }),
            Error::NoBrokerReachable {
                tried: Vec::new(),
                last: "refused".into(),
            },
            Error::InvalidArgument("x".into()),
        ];
        for err in &other {
            assert!(!err.is_leader_failover(), "{err}");
        }
    }

    #[test]
    fn group_errors_have_codes_and_hints() {
        let moved = Error::from(neo_protocol::Error::Rpc(
            RpcError::new(ErrorCode::NotCoordinator, "not me")
                .with_details(b"10.0.0.9:7070".to_vec()),
        ));
        assert!(moved.is_retriable());
        assert_eq!(moved.coordinator_hint(), Some("10.0.0.9:7070"));
        assert_eq!(moved.leader_hint(), None);
        let no_hint = Error::from(neo_protocol::Error::Rpc(RpcError::new(
            ErrorCode::NotCoordinator,
            "not me",
        )));
        assert_eq!(no_hint.coordinator_hint(), None);
        let bad_utf8 = Error::from(neo_protocol::Error::Rpc(
            RpcError::new(ErrorCode::NotCoordinator, "x").with_details(vec![0xff, 0xfe]),
        ));
        assert_eq!(
            bad_utf8.coordinator_hint(),
            None,
            "never panics on server input"
        );
        let fenced = Error::Fenced {
            group: "g".into(),
            member_id: "m".into(),
            reason: "stale epoch".into(),
        };
        assert!(!fenced.is_retriable());
        assert_eq!(fenced.code(), Some(ErrorCode::FencedMember));
        let busy = Error::GroupNotEmpty { group: "g".into() };
        assert_eq!(busy.code(), Some(ErrorCode::GroupNotEmpty));
        assert!(busy.to_string().contains("active members"), "{busy}");
    }

    #[test]
    fn queue_receipt_errors_are_fatal_and_name_the_receipt() {
        let receipt = Receipt {
            group: 7,
            partition: 1,
            offset: 42,
            delivery: 2,
            lease: 99,
        };
        for err in [
            Error::LeaseLost { receipt },
            Error::AlreadyDone { receipt },
            Error::UnknownReceipt { receipt },
        ] {
            assert!(!err.is_retriable(), "{err}");
            assert!(!err.invalidates_metadata(), "{err}");
            assert_eq!(err.code(), None, "not a wire error: {err}");
            assert!(err.to_string().contains("7-1-42-2-99"), "{err}");
        }
        assert!(!Error::ConsumerClosed.is_retriable());
        let odd = Error::UnexpectedAnswer {
            method: "queue_ack".into(),
            reason: "2 outcomes for 3 receipts".into(),
        };
        assert!(!odd.is_retriable());
        assert!(odd.to_string().contains("queue_ack"), "{odd}");
    }
}
