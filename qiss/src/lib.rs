//! Qiss: Neo's binary format. One byte layout from producer to disk to consumer.
//!
//! Two things live here:
//! - a **serde codec** for every message body Neo RPC carries ([`to_vec`],
//!   [`from_slice`], [`from_bytes`]): compact (varint integers and lengths, no field
//!   names, no type tags), borrowed zero-copy decoding of `&str` / `&[u8]`, and shared
//!   zero-copy `bytes::Bytes` fields ([`bytes`]) when decoding from a `Bytes`;
//! - the **record batch** ([`batch`]): the container a produce request carries, the
//!   partition log stores and a fetch returns, byte for byte unchanged.
//!
//! The byte layouts are specified in `docs/qiss.md`, precisely enough to write a decoder
//! in another language.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | `ser` | serde `Serializer`: [`to_vec`], [`append_to_vec`], [`to_writer`], [`serialized_size`] |
//! | `de` | serde `Deserializer` over one borrowed slice: [`from_slice`], [`from_slice_with`], [`take_from_slice`], [`Limits`]; [`from_bytes`] / [`from_bytes_with`] decode a `bytes::Bytes` the same way and let [`bytes`] fields share it |
//! | [`bytes`] | `#[serde(with = "qiss::bytes")]` for `bytes::Bytes` fields: a slice of the [`from_bytes`] input, no copy |
//! | `varint` | LEB128 varints and zigzag, strict (one encoding per value); shared by both halves |
//! | [`batch`] | record batch: fixed header ([`batch::header`]), builder, reader with zero-copy record views |
//! | `error` | the one [`Error`] enum |
//!
//! # Flow
//!
//! Encoding walks the value through serde and appends bytes to a `Vec<u8>` (or an
//! `io::Write`); a sequence or map writes its length first, so its length must be known.
//! Decoding walks the type through serde with a cursor over the input slice; strings and
//! byte strings are handed out as slices of the input, and the caller's type decides
//! whether to borrow or copy.
//!
//! # Invariants
//!
//! - **No panics on input.** Corrupt, truncated or hostile bytes give a typed [`Error`].
//! - **Limits before allocation.** Every length prefix is checked against the bytes that
//!   remain and a configurable limit ([`Limits`]; for batches the record-section bound)
//!   before anything is allocated or sliced. Nesting depth is bounded too.
//! - **Trailing bytes are an error.** [`from_slice`] must consume the whole input.
//! - **Batches are immutable.** After the producer built a batch, only the log's stamps
//!   outside the CRC (`base_offset`, Raft `term` and `log_index`) are ever written.
//! - **Canonical bytes.** Varints are strict (no over-long forms), so a value has one
//!   encoding and decode-then-encode reproduces the input.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod batch;
pub mod bytes;
mod de;
mod error;
mod ser;
mod varint;

pub use de::{Limits, from_bytes, from_bytes_with, from_slice, from_slice_with, take_from_slice};
pub use error::{Error, Result};
pub use ser::{append_to_vec, serialized_size, to_vec, to_writer};

#[cfg(test)]
mod codec_tests;
