//! The one error type of `neo-broker`'s internals. The [`crate::Broker`] facade maps it
//! (in `broker/errors.rs`) to the wire's `RpcError` with a stable code.

use neo_raft::GroupId;

use crate::partition::producers::RECENT_BATCHES;

/// What can go wrong below the facade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The group's Raft refused or failed (not leader, quorum lost, storage, ...).
    #[error(transparent)]
    Raft(#[from] neo_raft::Error),
    /// An idempotent producer's batch was stored before, but is older than the last
    /// batches whose offsets the partition remembers: it is not stored again.
    #[error(
        "group {group}: producer {producer_id} batch at sequence {sequence} was stored \
         before; its offset is older than the last {RECENT_BATCHES} batches the partition \
         remembers"
    )]
    DuplicateSequence {
        /// The partition's group.
        group: GroupId,
        /// The producer.
        producer_id: u64,
        /// The batch's first sequence.
        sequence: i32,
    },
    /// Encoding or decoding a command, answer or image failed.
    #[error("qiss codec failed on {what}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: qiss::Error,
    },
    /// A batch could not be appended through another group's leader.
    #[error("forwarded append failed: {0}")]
    Forward(#[source] Box<neo_raft::ForwardRecordsError>),
    /// A machine answered a command with an answer of another kind (a bug).
    #[error("unexpected answer: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn codec(what: &'static str, source: qiss::Error) -> Error {
        Error::Codec { what, source }
    }
}

/// Decodes a state machine's snapshot image (empty: the default state). A malformed
/// image is an `InvalidData` I/O error carrying the codec error: the group stops.
pub(crate) fn decode_image<T: serde::de::DeserializeOwned + Default>(
    what: &'static str,
    image: &[u8],
) -> std::io::Result<T> {
    if image.is_empty() {
        return Ok(T::default());
    }
    qiss::from_slice(image)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, Error::codec(what, e)))
}

/// Encodes a state machine's snapshot image; a failure is an I/O error carrying the
/// codec error, so the snapshot build fails instead of storing an empty image.
pub(crate) fn encode_image<T: serde::Serialize>(
    what: &'static str,
    state: &T,
) -> std::io::Result<Vec<u8>> {
    qiss::to_vec(state).map_err(|e| std::io::Error::other(Error::codec(what, e)))
}

/// Shorthand for results of this crate's internals.
pub type Result<T, E = Error> = std::result::Result<T, E>;
