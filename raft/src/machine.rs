//! The seam between consensus and the broker's domain: a group's Raft drives any
//! [`StateMachine`] with the committed entries, in log order, on every replica.
//!
//! This crate keeps what makes the partition log the Raft log (record offsets, the last
//! applied log id, membership, snapshot files); the application state (topic metadata,
//! producer tables, committed offsets, queue deliveries) lives behind this trait in
//! `neo-broker`, as pure code that never sees an openraft type.

use bytes::Bytes;

/// Where a committed entry sits in the group's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId {
    /// The term of the leader that wrote it.
    pub term: u64,
    /// Its Raft log index.
    pub index: u64,
}

/// The header fields of a committed record batch a state machine may keep (its
/// idempotent producer's stamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// How many records it holds.
    pub record_count: u32,
    /// The idempotent producer that stamped it (`< 0`: none).
    pub producer_id: i64,
    /// That producer's epoch.
    pub producer_epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

/// The application state of one group. Every replica applies the same entries in the
/// same order, so every method must be deterministic: the same calls give the same
/// state and the same answers everywhere (no clock, no randomness, no I/O).
///
/// Errors inside a command are the machine's answer (encoded in the returned bytes),
/// never a panic: a command that is refused is refused identically on every replica.
pub trait StateMachine: Send + Sync + 'static {
    /// A committed record batch was appended to the partition log; `raw` is the batch
    /// as stored (header and records, possibly compressed), for machines that keep
    /// facts about individual records (a queue's keys and delays).
    fn apply_records(&mut self, entry: EntryId, batch: &AppliedBatch, raw: &[u8]);

    /// A committed command (bytes the proposer encoded); returns the encoded answer that
    /// goes back to the proposer.
    fn apply_command(&mut self, entry: EntryId, command: &[u8]) -> Bytes;

    /// Called after each applied run of entries, before their proposers are answered:
    /// where a machine publishes its new state to readers.
    fn publish(&mut self) {}

    /// The whole state as a snapshot image. An error fails the snapshot build (never an
    /// empty image that would restore as an empty state).
    fn snapshot(&self) -> std::io::Result<Vec<u8>>;

    /// Replaces the whole state with a snapshot image made by [`StateMachine::snapshot`]
    /// (on any replica). A malformed image is an error: the group stops rather than run
    /// on a state it cannot read.
    fn restore(&mut self, image: &[u8]) -> std::io::Result<()>;
}

/// A state machine that keeps nothing: for groups whose only state is their log
/// (tests, benchmarks).
#[derive(Debug, Default)]
pub struct LogOnly;

impl StateMachine for LogOnly {
    fn apply_records(&mut self, _: EntryId, _: &AppliedBatch, _: &[u8]) {}

    fn apply_command(&mut self, _: EntryId, _: &[u8]) -> Bytes {
        Bytes::new()
    }

    fn snapshot(&self) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn restore(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}
