//! The crate's one error type, and the wire error codes that travel in error frames.
//!
//! Two layers, kept apart on purpose:
//!
//! - [`ErrorCode`] + [`RpcError`] are what crosses the wire. The numbers are stable: a
//!   client in another language matches on them, so a number is never reused or
//!   renumbered, only added. `docs/protocol.md` carries the same table.
//! - [`Error`] is what a Rust caller of this crate sees: a remote [`RpcError`], or one of
//!   the local failures (I/O, a malformed frame, a closed connection, a local timeout).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, FrameError, Kind};

/// Stable numeric codes of the errors that travel in error frames.
///
/// Ranges: `1..=999` protocol and framework errors, `1000..=1999` the broker's API
/// errors, `2000..=u16::MAX` free for user services. `0` is never sent.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A frame could not be parsed (bad magic, unknown kind, reserved bits set, a body
    /// that does not decode). The connection is closed after this error.
    Malformed = 1,
    /// A frame's declared length is above the receiver's `frame_size_bytes_max`. The
    /// connection is closed after this error.
    FrameTooLarge = 2,
    /// The frame's protocol version is not supported. The connection is closed.
    UnsupportedVersion = 3,
    /// The body's CRC32 does not match the header. The connection is closed.
    ChecksumMismatch = 4,
    /// No service with this id or name is registered.
    UnknownService = 10,
    /// The service exists but has no method with this id or name.
    UnknownMethod = 11,
    /// The request body does not decode as the method's input type.
    InvalidArgument = 12,
    /// Retriable: the connection already has `inflight_requests_max` requests in flight,
    /// or the server is at `connections_max`.
    Busy = 20,
    /// The handler ran past its method's timeout.
    Timeout = 21,
    /// The request was cancelled by the client.
    Cancelled = 22,
    /// Retriable: the server is shutting down; retry on another connection or node.
    ShuttingDown = 23,
    /// Retriable after a delay: the principal (or client address) is over one of its
    /// rate limits (produce bytes/s, fetch bytes/s, requests/s). The details carry the
    /// delay in milliseconds (decimal ASCII): retry no sooner. The connection stays open.
    Throttled = 24,
    /// The connection has not completed the authentication handshake, or the token was
    /// rejected. The connection is closed after this error, except when it answers a
    /// re-authentication: the connection then keeps its identity (until that expires).
    Unauthenticated = 30,
    /// The principal is authenticated but may not do this.
    PermissionDenied = 31,
    /// A re-authentication (an `Auth` frame on an authenticated connection) presented
    /// a valid credential of another principal: refused, the connection keeps its
    /// identity and stays open. A connection never changes principal.
    PrincipalMismatch = 32,
    /// The handler failed (or panicked) for a reason of its own.
    Internal = 50,
    /// Retriable after a metadata refresh: this node does not lead the partition; the
    /// details carry the leader's address when known.
    NotLeader = 1000,
    /// The topic does not exist.
    UnknownTopic = 1001,
    /// The topic already exists.
    TopicAlreadyExists = 1002,
    /// The partition does not exist in the topic.
    UnknownPartition = 1003,
    /// The consumer group does not exist.
    UnknownGroup = 1004,
    /// The queue does not exist.
    UnknownQueue = 1005,
    /// A produced record batch failed validation (CRC, framing, size).
    InvalidRecordBatch = 1006,
    /// A fetch asked for an offset outside the log's range.
    OffsetOutOfRange = 1007,
    /// Retriable: the write was not acknowledged in time by a quorum.
    NotEnoughReplicas = 1008,
    /// A group or queue member's generation is stale (it must rejoin).
    StaleGeneration = 1009,
    /// An idempotent producer's batch was stored before, and its offset is no longer
    /// remembered (older than the producer's last batches): it is not stored again.
    DuplicateSequence = 1010,
    /// A consumer-group member's epoch is stale, or the coordinator no longer knows the
    /// member (its session timed out, it left): its heartbeats and commits are refused
    /// and it must join again.
    FencedMember = 1011,
    /// Retriable after finding the coordinator again: this node does not coordinate the
    /// group; the details carry the coordinator's address when known.
    NotCoordinator = 1012,
    /// The operation needs a group without members (delete, reset offsets, a commit
    /// from outside the membership).
    GroupNotEmpty = 1013,
    /// Not retried by clients: the node's disk is full (less free space than its
    /// reserve, or a replica's log failed on `ENOSPC`). Nothing was stored; what is
    /// stored stays readable; writes resume once space is freed (retention, a deleted
    /// topic).
    StorageFull = 1014,
}

impl ErrorCode {
    /// Every code, in numeric order (for docs, tests and exhaustive tables).
    pub const ALL: [ErrorCode; 31] = [
        ErrorCode::Malformed,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::ChecksumMismatch,
        ErrorCode::UnknownService,
        ErrorCode::UnknownMethod,
        ErrorCode::InvalidArgument,
        ErrorCode::Busy,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::ShuttingDown,
        ErrorCode::Throttled,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::PrincipalMismatch,
        ErrorCode::Internal,
        ErrorCode::NotLeader,
        ErrorCode::UnknownTopic,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::UnknownPartition,
        ErrorCode::UnknownGroup,
        ErrorCode::UnknownQueue,
        ErrorCode::InvalidRecordBatch,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::StaleGeneration,
        ErrorCode::DuplicateSequence,
        ErrorCode::FencedMember,
        ErrorCode::NotCoordinator,
        ErrorCode::GroupNotEmpty,
        ErrorCode::StorageFull,
    ];

    /// The stable wire number.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a wire number, if this version of the crate knows it.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_u16() == code)
    }

    /// Whether the same request may succeed if sent again (after a backoff, a
    /// reconnect, or a metadata refresh).
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::Throttled
                | ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotCoordinator
        )
    }
}

/// An error as it travels in the body of an error frame (Qiss-encoded).
///
/// `code` stays a plain `u16` so that a code added by a newer peer still decodes here;
/// [`RpcError::error_code`] maps it to [`ErrorCode`] when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    /// Stable numeric code (see [`ErrorCode`]).
    pub code: u16,
    /// Human-readable message; not for matching.
    pub message: String,
    /// Machine-readable details, specific to the code: for `NotLeader` the leader's
    /// address (UTF-8), for user codes whatever the service documents. Empty if none.
    #[serde(with = "serde_bytes")]
    pub details: Vec<u8>,
}

impl RpcError {
    /// An error with a known code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RpcError {
        RpcError {
            code: code.as_u16(),
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// An error with a user-service code (use `2000..`).
    pub fn custom(code: u16, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// The same error with machine-readable details attached.
    pub fn with_details(mut self, details: impl Into<Vec<u8>>) -> RpcError {
        self.details = details.into();
        self
    }

    /// `Internal`: the handler failed for a reason of its own.
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::Internal, message)
    }

    /// `InvalidArgument`: the request does not make sense.
    pub fn invalid_argument(message: impl Into<String>) -> RpcError {
        RpcError::new(ErrorCode::InvalidArgument, message)
    }

    /// `NotLeader`, carrying the leader's address when known.
    pub fn not_leader(leader: Option<&str>) -> RpcError {
        let err = RpcError::new(ErrorCode::NotLeader, "not the leader");
        match leader {
            Some(leader) => err.with_details(leader.as_bytes().to_vec()),
            None => err,
        }
    }

    /// The leader hint of a `NotLeader` error.
    pub fn leader_hint(&self) -> Option<&str> {
        if self.error_code() != Some(ErrorCode::NotLeader) || self.details.is_empty() {
            return None;
        }
        std::str::from_utf8(&self.details).ok()
    }

    /// The code, if this version of the crate knows it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u16(self.code)
    }

    /// Whether the request may succeed if retried.
    pub fn is_retriable(&self) -> bool {
        self.error_code().is_some_and(ErrorCode::is_retriable)
    }
}

impl RpcError {
    /// The error frame carrying this error as the reply to a request.
    pub(crate) fn to_frame(&self, correlation_id: u64, service_id: u16, method_id: u16) -> Frame {
        // Encoding a struct of a u16, a string and bytes cannot fail; if it ever did,
        // an empty body still tells the client the request failed.
        let body = qiss::to_vec(self).map(Bytes::from).unwrap_or_default();
        Frame {
            kind: Kind::Error,
            service_id,
            method_id,
            correlation_id,
            body,
        }
    }

    /// Decode an error frame's body; an undecodable body is itself reported as an error.
    pub(crate) fn from_body(body: &[u8]) -> RpcError {
        qiss::from_slice(body).unwrap_or_else(|err| {
            RpcError::new(
                ErrorCode::Malformed,
                format!("error frame body does not decode: {err}"),
            )
        })
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "{code:?} ({}): {}", self.code, self.message),
            None => write!(f, "error {}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for RpcError {}

impl From<qiss::Error> for RpcError {
    fn from(err: qiss::Error) -> RpcError {
        RpcError::new(
            ErrorCode::InvalidArgument,
            format!("body does not decode: {err}"),
        )
    }
}

/// Everything that can go wrong in this crate, as seen by a Rust caller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer answered with an error frame.
    #[error("remote error: {0}")]
    Rpc(#[from] RpcError),
    /// A frame could not be encoded or decoded.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// A body could not be encoded or decoded with Qiss.
    #[error("qiss codec: {0}")]
    Codec(#[from] qiss::Error),
    /// Socket I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The connection closed before the call completed. Retriable: the client
    /// reconnects on the next call.
    #[error("connection closed")]
    ConnectionClosed,
    /// The peer stopped answering heartbeats and the connection was dropped.
    #[error("peer unresponsive: no frame for {silent_for:?}")]
    PeerUnresponsive {
        /// How long the peer had been silent.
        silent_for: Duration,
    },
    /// The call did not complete within its timeout (measured on the client).
    #[error("call timed out after {after:?}")]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// The call was cancelled by the caller.
    #[error("call cancelled")]
    Cancelled,
    /// A subscriber fell more than `capacity` events behind and was cut off.
    #[error("subscription lagged more than {capacity} events behind and was cancelled")]
    Lagged {
        /// The subscription's queue bound (`subscription_events_max`).
        capacity: usize,
    },
    /// Connecting failed after every reconnect attempt.
    #[error("connect to {addr} failed after {attempts} attempts: {last}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// Registering a service whose name is already taken.
    #[error("service {name:?} is already registered")]
    DuplicateService {
        /// The duplicated name.
        name: String,
    },
    /// Registering two methods of one service under the same name.
    #[error("method {method:?} appears twice in service {service:?}")]
    DuplicateMethod {
        /// The service.
        service: String,
        /// The duplicated name.
        method: String,
    },
    /// A registry limit was exceeded (too many services or methods for the id width).
    #[error("registry full: {what}")]
    RegistryFull {
        /// Which table is full.
        what: &'static str,
    },
}

impl Error {
    /// The wire code of a remote error, if this is one.
    pub fn rpc_code(&self) -> Option<u16> {
        match self {
            Error::Rpc(err) => Some(err.code),
            _ => None,
        }
    }

    /// Whether the same call may succeed if retried (possibly after a reconnect).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Rpc(err) => err.is_retriable(),
            Error::ConnectionClosed | Error::PeerUnresponsive { .. } | Error::Io(_) => true,
            _ => false,
        }
    }
}

/// Short alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate {code:?}");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(code));
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(60000), None);
    }

    #[test]
    fn codes_are_stable() {
        // These numbers are a public contract (docs/protocol.md); changing one breaks
        // every client in the field.
        assert_eq!(ErrorCode::Malformed as u16, 1);
        assert_eq!(ErrorCode::FrameTooLarge as u16, 2);
        assert_eq!(ErrorCode::UnknownService as u16, 10);
        assert_eq!(ErrorCode::UnknownMethod as u16, 11);
        assert_eq!(ErrorCode::Busy as u16, 20);
        assert_eq!(ErrorCode::Timeout as u16, 21);
        assert_eq!(ErrorCode::Cancelled as u16, 22);
        assert_eq!(ErrorCode::Unauthenticated as u16, 30);
        assert_eq!(ErrorCode::PrincipalMismatch as u16, 32);
        assert_eq!(ErrorCode::Internal as u16, 50);
        assert_eq!(ErrorCode::NotLeader as u16, 1000);
        assert_eq!(ErrorCode::StaleGeneration as u16, 1009);
        assert_eq!(ErrorCode::DuplicateSequence as u16, 1010);
    }

    #[test]
    fn not_leader_carries_hint() {
        let err = RpcError::not_leader(Some("10.0.0.2:7070"));
        assert_eq!(err.leader_hint(), Some("10.0.0.2:7070"));
        assert!(err.is_retriable());
        assert_eq!(RpcError::not_leader(None).leader_hint(), None);
        assert!(!RpcError::internal("x").is_retriable());
        assert!(Error::from(RpcError::new(ErrorCode::Busy, "full")).is_retriable());
    }
}
