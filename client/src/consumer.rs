//! [`Consumer`]: reads assigned partitions from positions the caller controls.
//!
//! ```text
//! assign / seek ─▶ positions[(topic, partition)] = Offset
//! poll(wait) ─▶ one long-poll fetch per partition, concurrently, each to its leader
//!            ─▶ the first answer with records ends the wait; answers that are ready
//!               at that moment are taken too, the others are cancelled
//!            ─▶ split the bytes into batches, skip control batches (Raft entries),
//!               drop records below the position (a batch is returned whole),
//!               advance the position to the batch's next offset
//! ```
//!
//! Invariant: a partition's position only moves forward, and only past batches whose
//! records were returned to the caller (or that were control batches), so every
//! committed record is returned exactly once per consumer, in offset order.
//!
//! With a key ring ([`ConsumerConfig::encryption`]), records carrying `neo-enc` are
//! decrypted after decoding ([`crate::encryption`]). In `poll`, a record that cannot be
//! decrypted ends its partition's records just before it and keeps the position at it:
//! that poll returns the records before it (and the other partitions'), and a poll
//! whose first record of a partition is undecryptable answers [`Error::Decrypt`]
//! (moving no position), until the key ring can open it or the caller seeks past it.
//! `poll_each` instead returns every record, decrypted or as an
//! [`UndecryptableRecord`](crate::UndecryptableRecord), and moves past all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use neo_protocol::api::{FetchRequest, FetchResponse, Isolation};
use qiss::batch::{RecordBatch, split_batches};

use crate::client::Client;
use crate::encryption::{DecryptMode, RecordResult, SharedKeyring};
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// Every knob of a [`Consumer`], named, units last.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Bound on the bytes one fetch returns per partition (at least one batch is
    /// returned when one exists).
    pub fetch_bytes_max: u32,
    /// A long poll ends once this many bytes can be returned (or its wait passes): larger
    /// values trade latency for fewer, fuller fetches.
    pub fetch_bytes_min: u32,
    /// Only committed records (the default), or everything the leader has.
    pub isolation: Isolation,
    /// Retry of a fetch (NotLeader, dead connection, no leader yet).
    pub retry: RetryPolicy,
    /// Added to the long-poll wait to bound one fetch call on the client side.
    pub request_timeout: Duration,
    /// Client-side end-to-end decryption ([`crate::encryption`]): records carrying
    /// `neo-enc` are returned with their plaintext value, or as a per-record error.
    /// `None` (the default): records are returned as stored, encrypted ones included.
    pub encryption: Option<SharedKeyring>,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            fetch_bytes_max: 1024 * 1024,
            fetch_bytes_min: 1,
            isolation: Isolation::Committed,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
            encryption: None,
        }
    }
}

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The first offset still in the log.
    Beginning,
    /// After the last committed record (only new records).
    End,
    /// This offset.
    At(u64),
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Key, if any (a slice of the fetched batch: no copy).
    pub key: Option<Bytes>,
    /// Value (a slice of the fetched batch: no copy).
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

/// Reads assigned partitions. Cloning copies the assignment and positions (the clone
/// reads independently); the connections are shared.
#[derive(Debug, Clone)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Position (next offset to return) of each assigned partition; `Beginning` and
    /// `End` are resolved on the next poll.
    positions: BTreeMap<(String, u32), Offset>,
    /// The high watermark each partition's last fetch saw (for lag).
    high_watermarks: BTreeMap<(String, u32), u64>,
}

/// What one round of fetches gave: records, and the partitions whose fetch failed.
#[derive(Debug, Default)]
pub(crate) struct PollOutcome {
    /// Records of every partition whose fetch succeeded, per partition in offset order
    /// (`Err` items only with [`DecryptMode::EachRecord`]).
    pub(crate) records: Vec<RecordResult>,
    /// Partitions whose fetch failed, with the error (their positions were kept); an
    /// [`Error::Decrypt`] first, and then no records and no position moved at all.
    pub(crate) failed: Vec<((String, u32), Error)>,
}

/// The records of a [`DecryptMode::StopAtFailure`] round, which has no `Err` item (its
/// undecryptable records are in `failed`, or left for the next round).
pub(crate) fn stopped_records(records: Vec<RecordResult>) -> Vec<ConsumerRecord> {
    debug_assert!(records.iter().all(Result::is_ok));
    records.into_iter().filter_map(Result::ok).collect()
}

impl Consumer {
    /// A consumer with no assignment and the default configuration.
    pub fn new(client: Client) -> Consumer {
        Consumer::with_config(client, ConsumerConfig::default())
    }

    /// A consumer with explicit configuration.
    pub fn with_config(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
        }
    }

    /// Assign `partitions` of `topic`, each starting at `from` (an already assigned
    /// partition is moved to `from`). Fails for an unknown topic or partition.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32], from: Offset) -> Result<()> {
        let count = self.client.partition_count(topic).await?;
        if let Some(&partition) = partitions.iter().find(|p| **p >= count) {
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                count,
            });
        }
        for &p in partitions {
            self.positions.insert((topic.to_string(), p), from);
        }
        Ok(())
    }

    /// Assign every partition of `topic`, each starting at `from`.
    pub async fn assign_all(&mut self, topic: &str, from: Offset) -> Result<()> {
        let count = self.client.partition_count(topic).await?;
        let all: Vec<u32> = (0..count).collect();
        self.assign(topic, &all, from).await
    }

    /// Stop reading a partition.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        let key = (topic.to_string(), partition);
        self.positions.remove(&key);
        self.high_watermarks.remove(&key);
    }

    /// Move an assigned partition (assigns it if it was not).
    pub fn seek(&mut self, topic: &str, partition: u32, to: Offset) {
        self.positions.insert((topic.to_string(), partition), to);
    }

    /// The assigned partitions and their positions.
    pub fn assignment(&self) -> Vec<(String, u32, Offset)> {
        self.positions
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect()
    }

    /// The next offset `poll` will return for a partition, once resolved.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        match self.positions.get(&(topic.to_string(), partition)) {
            Some(Offset::At(o)) => Some(*o),
            _ => None,
        }
    }

    /// The committed end (high watermark) of a partition, from its leader.
    pub async fn high_watermark(&self, topic: &str, partition: u32) -> Result<u64> {
        Ok(self.fetch(topic, partition, 0, 0, 1).await?.high_watermark)
    }

    /// Records from every assigned partition, waiting up to `wait` for some to be
    /// committed (long poll). Empty when none arrived in time. An error of one
    /// partition's fetch keeps that partition's position (nothing is skipped) and is
    /// returned only if no other partition returned records.
    ///
    /// Cancel-safe: positions move only in the last, synchronous step, so a `poll`
    /// future dropped before it completes (a `select!` that took another branch)
    /// returns nothing and moves nothing.
    ///
    /// With a key ring, values come back decrypted; a record that cannot be decrypted
    /// stops its partition there and is answered as [`Error::Decrypt`] (see the module
    /// docs; [`Consumer::poll_each`] returns such records instead).
    pub async fn poll(&mut self, wait: Duration) -> Result<Vec<ConsumerRecord>> {
        let outcome = self
            .poll_partitions(wait, DecryptMode::StopAtFailure)
            .await?;
        match outcome.failed.into_iter().next() {
            Some((_, e)) if outcome.records.is_empty() => Err(e),
            _ => Ok(stopped_records(outcome.records)),
        }
    }

    /// [`Consumer::poll`], but every record comes back on its own: `Ok` with its value
    /// decrypted (or never encrypted), or `Err` with the record as stored and why it
    /// cannot be decrypted. Positions move past both kinds. Without a key ring every
    /// item is `Ok`.
    pub async fn poll_each(&mut self, wait: Duration) -> Result<Vec<RecordResult>> {
        let outcome = self.poll_partitions(wait, DecryptMode::EachRecord).await?;
        match outcome.failed.into_iter().next() {
            Some((_, e)) if outcome.records.is_empty() => Err(e),
            _ => Ok(outcome.records),
        }
    }

    /// The body of [`Consumer::poll`], shared with the group consumer: the records,
    /// and each partition whose fetch failed with its error (its position kept), so
    /// that a caller can act per partition (a group consumer resets a partition whose
    /// position fell out of the log). Cancel-safe like `poll`. Fails as a whole only
    /// when an unresolved start position (`Beginning`/`End`) cannot be resolved.
    pub(crate) async fn poll_partitions(
        &mut self,
        wait: Duration,
        mode: DecryptMode,
    ) -> Result<PollOutcome> {
        self.resolve_positions().await?;
        let wait_ms = wait.as_millis().min(u32::MAX as u128) as u32;
        let this = &*self;
        let mut fetches: FuturesUnordered<_> = this
            .positions
            .iter()
            .filter_map(|((topic, partition), offset)| match offset {
                Offset::At(o) => Some((topic.clone(), *partition, *o)),
                // Resolved above; a partition seeked meanwhile waits for the next poll.
                _ => None,
            })
            .map(|(topic, partition, position)| async move {
                let resp = this
                    .fetch(
                        &topic,
                        partition,
                        position,
                        wait_ms,
                        this.config.fetch_bytes_max,
                    )
                    .await;
                (topic, partition, position, resp)
            })
            .collect();
        let mut done = Vec::new();
        while let Some(result) = fetches.next().await {
            let has_data = matches!(&result.3, Ok(r) if !r.batches.is_empty());
            done.push(result);
            if has_data {
                // Take whatever else is ready now; cancel the rest (their records
                // stay in the log for the next poll).
                while let Some(Some(more)) = fetches.next().now_or_never() {
                    done.push(more);
                }
                break;
            }
        }
        drop(fetches);
        // A partition's records and its new position are taken together, or neither: a
        // failed fetch (or undecodable answer) of one partition leaves its position where
        // it was and does not cost the records other partitions returned.
        let mut outcome = PollOutcome::default();
        let mut moves = Vec::new();
        // Partitions whose first record cannot be decrypted (`StopAtFailure`).
        let mut blocked = Vec::new();
        for (topic, partition, position, resp) in done {
            let mut got = Vec::new();
            let next = resp.and_then(|resp| {
                let next = decode_into(&topic, partition, position, resp.batches, &mut got)?;
                Ok((next, resp.high_watermark))
            });
            match next {
                Ok((next, high_watermark)) => {
                    let key = (topic, partition);
                    self.high_watermarks.insert(key.clone(), high_watermark);
                    let mut next = next.max(position);
                    match &self.config.encryption {
                        None => outcome.records.extend(got.into_iter().map(Ok)),
                        Some(ring) => {
                            let mut decrypted = ring.decrypt_records(got, mode);
                            if let Some(stopped) = decrypted.stopped {
                                // Read again from the record that failed.
                                next = stopped.record.offset;
                                if decrypted.records.is_empty() {
                                    blocked.push((key.clone(), Error::from(stopped)));
                                }
                            }
                            outcome.records.append(&mut decrypted.records);
                        }
                    }
                    moves.push((key, next));
                }
                Err(e) => {
                    tracing::debug!(%topic, partition, error = %e, "fetch failed; position kept");
                    outcome.failed.push(((topic, partition), e));
                }
            }
        }
        if !blocked.is_empty() {
            // The undecryptable record is this poll's answer; nothing moves, so the
            // other partitions' records come again with the next poll.
            outcome.records.clear();
            blocked.append(&mut outcome.failed);
            outcome.failed = blocked;
            return Ok(outcome);
        }
        for (key, next) in moves {
            self.positions.insert(key, Offset::At(next));
        }
        Ok(outcome)
    }

    /// The high watermark of a partition as its last fetch in `poll` saw it.
    pub(crate) fn last_high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.high_watermarks
            .get(&(topic.to_string(), partition))
            .copied()
    }

    async fn resolve_positions(&mut self) -> Result<()> {
        let unresolved: Vec<(String, u32, Offset)> = self
            .positions
            .iter()
            .filter(|(_, o)| !matches!(o, Offset::At(_)))
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        for (topic, partition, offset) in unresolved {
            let resp = self.fetch(&topic, partition, 0, 0, 1).await?;
            let at = match offset {
                Offset::Beginning => resp.log_start_offset,
                _ => resp.high_watermark,
            };
            self.positions.insert((topic, partition), Offset::At(at));
        }
        Ok(())
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        wait_ms: u32,
        bytes_max: u32,
    ) -> Result<FetchResponse> {
        let request = FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            bytes_max,
            wait_ms_max: wait_ms,
            bytes_min: self.config.fetch_bytes_min.min(bytes_max),
            isolation: self.config.isolation,
        };
        let timeout = Duration::from_millis(u64::from(wait_ms)) + self.config.request_timeout;
        self.client
            .call_partition(
                topic,
                partition,
                "fetch",
                &request,
                timeout,
                self.config.retry,
            )
            .await
    }
}

/// Decode a fetch's batches into records at or above `position`; returns the offset
/// after the last batch seen (control batches included).
pub(crate) fn decode_into(
    topic: &str,
    partition: u32,
    position: u64,
    batches: Bytes,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64> {
    let mut next = position;
    // `batches` is a slice of the response frame's buffer; every batch, key and value
    // below is a slice of it in turn (no copy), and each batch's CRC is checked here.
    for bytes in split_batches(batches) {
        let batch = RecordBatch::new(bytes?)?;
        next = next.max(batch.header().next_offset());
        if batch.is_control() {
            continue;
        }
        for record in batch.records() {
            if record.offset() < position {
                continue;
            }
            out.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: record.offset(),
                timestamp_ms: record.timestamp(),
                key: record.key_bytes(),
                value: record.value_bytes(),
                headers: record
                    .headers()
                    .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
                    .collect(),
            });
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qiss::batch::{BatchBuilder, set_base_offset};

    fn batch(base: u64, values: &[&str]) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for v in values {
            b.push(1, Some(b"k"), &[("h", b"x")], v.as_bytes()).unwrap();
        }
        let mut bytes = b.build().unwrap().to_vec();
        set_base_offset(&mut bytes, base);
        bytes
    }

    #[test]
    fn decode_skips_control_batches_and_old_records() {
        let mut buf = batch(10, &["a", "b", "c"]);
        let mut control = BatchBuilder::control(b"raft entry").unwrap().to_vec();
        set_base_offset(&mut control, 13);
        buf.extend_from_slice(&control);
        buf.extend_from_slice(&batch(14, &["d"]));
        let mut out = Vec::new();
        let next = decode_into("t", 1, 11, Bytes::from(buf), &mut out).unwrap();
        assert_eq!(next, 15);
        let got: Vec<(u64, &[u8])> = out.iter().map(|r| (r.offset, r.value.as_ref())).collect();
        assert_eq!(got, vec![(11, &b"b"[..]), (12, b"c"), (14, b"d")]);
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            out[0].headers,
            vec![("h".to_string(), Bytes::from_static(b"x"))]
        );
        assert_eq!(out[0].partition, 1);
    }

    #[test]
    fn decode_of_nothing_keeps_the_position() {
        let mut out = Vec::new();
        assert_eq!(decode_into("t", 0, 7, Bytes::new(), &mut out).unwrap(), 7);
        assert!(out.is_empty());
    }

    #[test]
    fn decode_rejects_a_torn_batch() {
        let mut buf = batch(0, &["a"]);
        buf.truncate(buf.len() - 1);
        let mut out = Vec::new();
        assert!(decode_into("t", 0, 0, Bytes::from(buf), &mut out).is_err());
    }
}
