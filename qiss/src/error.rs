//! The one error type of the crate.

use std::fmt;

/// Everything that can go wrong while encoding or decoding Qiss values and record
/// batches. Decoding never panics: corrupt, truncated or hostile input lands here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended before a value was complete.
    #[error("unexpected end of input: needed {needed} more bytes at position {position}")]
    UnexpectedEof {
        /// Byte position in the input where the read started.
        position: usize,
        /// How many more bytes were needed.
        needed: usize,
    },
    /// A length prefix is larger than the bytes that remain, or than a configured limit.
    #[error("length {len} at position {position} exceeds the limit {limit}")]
    LengthLimit {
        /// Byte position of the length prefix.
        position: usize,
        /// The length that was read.
        len: u64,
        /// The bound it broke.
        limit: u64,
    },
    /// Bytes were left after the value was decoded.
    #[error("{remaining} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left.
        remaining: usize,
    },
    /// A varint was longer than its type allows, or overflowed it.
    #[error("malformed varint at position {position}")]
    BadVarint {
        /// Byte position of the varint.
        position: usize,
    },
    /// A value was out of range for its type (a bool other than 0/1, a bad char, an
    /// option tag other than 0/1, an integer that does not fit the target type).
    #[error("invalid {what} at position {position}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Byte position of the value.
        position: usize,
    },
    /// A string was not valid UTF-8.
    #[error("invalid UTF-8 at position {position}")]
    Utf8 {
        /// Byte position of the string's first byte.
        position: usize,
    },
    /// Nesting went deeper than the configured limit.
    #[error("nesting deeper than {limit}")]
    DepthLimit {
        /// The configured limit.
        limit: u32,
    },
    /// The serde type asked for something Qiss cannot express (e.g. `deserialize_any`,
    /// or a sequence of unknown length when writing).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A custom error from a `Serialize`/`Deserialize` implementation.
    #[error("{0}")]
    Custom(String),
    /// An I/O error from a writer, kept as text so that the error stays `Clone + Eq`.
    #[error("i/o: {0}")]
    Io(String),
    /// A record batch's stored CRC does not match its bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A record batch header or records section is malformed.
    #[error("corrupt batch: {reason}")]
    CorruptBatch {
        /// What is wrong.
        reason: &'static str,
    },
    /// One record inside a batch's records section is malformed.
    #[error("corrupt record {index}: {reason}")]
    CorruptRecord {
        /// Index of the record in its batch (0-based).
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A batch being built would break a limit (record count, section size, timestamp
    /// range) or is empty.
    #[error("batch limit: {reason}")]
    BatchLimit {
        /// Which limit.
        reason: &'static str,
    },
    /// Compressing or decompressing failed.
    #[error("compression: {0}")]
    Compression(String),
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
