//! `neo bench commit`: committed offsets per second of 64 members, against as many
//! single-record `acks=all` produce batches from the same tasks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use neo_client::{Acks, Client, GroupAdmin, Producer, ProducerConfig, ProducerRecord};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;

/// The line `neo bench commit` prints.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct CommitReport {
    pub(crate) consumers: u32,
    pub(crate) partitions: u32,
    pub(crate) duration_ms: u64,
    /// Partition offsets committed (one Raft entry each).
    pub(crate) commits: u64,
    /// `commit_offsets_sync` calls (one per member in flight).
    pub(crate) commit_calls: u64,
    pub(crate) commits_per_s: f64,
    /// Latency of one `commit_offsets_sync` call.
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    /// Baseline: single-record `acks=all` batches, one in flight per task.
    pub(crate) produce_batches: u64,
    pub(crate) produce_batches_per_s: f64,
    pub(crate) produce_p50_us: u64,
    pub(crate) produce_p99_us: u64,
    pub(crate) produce_max_us: u64,
    /// `commits_per_s / produce_batches_per_s`.
    pub(crate) ratio: f64,
    /// From the first join to the stable group, in seconds.
    pub(crate) settle_s: f64,
    /// Errors the members met (the run is suspect if not 0).
    pub(crate) errors: u64,
    /// Times a member was fenced (lost its membership and joined again).
    pub(crate) fenced: u64,
}

/// The produce baseline starts this long after the commit phase ended (for the last
/// commits in flight).
const BASELINE_GAP: Duration = Duration::from_secs(1);

pub(crate) async fn commit(client: Client, args: CommitArgs) -> anyhow::Result<()> {
    let partitions = client.partition_count(&args.topic).await?;
    let consumers = args.consumers as usize;
    if (partitions as usize) < consumers {
        bail!(
            "topic {:?} has {partitions} partitions: at least --consumers {consumers} are needed (each member must own one)",
            args.topic
        );
    }
    let admin = GroupAdmin::new(client.clone());
    let table = Table::new(partitions);
    table.lock().live.extend(0..consumers);
    let errors = Arc::new(Errors::default());
    let producer = Producer::with_config(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    );
    let duration = Duration::from_millis(args.duration_ms);
    let (start_tx, start_rx) = watch::channel(None);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for slot in 0..consumers {
        let task = CommitTask {
            slot,
            client: client.clone(),
            topic: args.topic.clone(),
            group: args.group.clone(),
            session_timeout_ms: args.session_timeout_ms,
            duration,
            table: table.clone(),
            errors: errors.clone(),
            producer: producer.clone(),
            start: start_rx.clone(),
        };
        tasks.push(tokio::spawn(task.run()));
    }
    let stable_at = wait_stable(&admin, &args.group, &table, SETTLE_MAX)
        .await
        .inspect_err(|_| errors.warn(&table))?;
    // Every task starts the phase at the same instant.
    let start = Instant::now() + START_DELAY;
    start_tx.send_replace(Some(start));
    let (mut commits, mut produced) = (Vec::new(), Vec::new());
    for (slot, task) in tasks.into_iter().enumerate() {
        let (c, p) = task
            .await
            .context("bench member task")?
            .with_context(|| format!("member {slot}"))?;
        commits.push(c);
        produced.push(p);
    }
    let (commits, commit_calls, commits_per_s, [p50_us, p99_us, max_us]) = totals(start, commits);
    let (batches, _, batches_per_s, produce_us) = totals(start + duration + BASELINE_GAP, produced);
    let line = CommitReport {
        consumers: args.consumers,
        partitions,
        duration_ms: args.duration_ms,
        commits,
        commit_calls,
        commits_per_s,
        p50_us,
        p99_us,
        max_us,
        produce_batches: batches,
        produce_batches_per_s: batches_per_s,
        produce_p50_us: produce_us[0],
        produce_p99_us: produce_us[1],
        produce_max_us: produce_us[2],
        ratio: commits_per_s / batches_per_s.max(1e-9),
        settle_s: (stable_at - started).as_secs_f64(),
        errors: errors.count(ERROR),
        fenced: errors.count(FENCED),
    };
    errors.warn(&table);
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// One member of `bench commit`, in its own task.
struct CommitTask {
    slot: usize,
    client: Client,
    topic: String,
    group: String,
    session_timeout_ms: u64,
    duration: Duration,
    table: Arc<Table>,
    errors: Arc<Errors>,
    producer: Producer,
    /// When the commit phase starts, once the group is stable.
    start: watch::Receiver<Option<Instant>>,
}

impl CommitTask {
    /// Joins, keeps up with the assignment until the start, commits for the duration,
    /// then produces for the duration, then leaves.
    async fn run(self) -> anyhow::Result<(PhaseResult, PhaseResult)> {
        let mut config = member_config("commit", self.slot, self.session_timeout_ms);
        config.auto_commit = false; // only the bench's own commits
        let (client, topic) = (self.client.clone(), &self.topic);
        let mut member =
            subscribe(client, &self.group, topic, config, self.slot, &self.table).await?;
        let start = loop {
            if let Some(start) = *self.start.borrow() {
                break start;
            }
            let result = member.poll(POLL_WAIT).await;
            self.errors.after_poll(result).await;
        };
        let owned = member.assignment();
        if owned.is_empty() {
            bail!("owns no partition when the commits start");
        }
        // Two offsets to alternate between per partition (the client skips a commit
        // of the offset already committed): the log end and the one before it, so an
        // empty partition gets one record first.
        let (mut next, mut other) = (BTreeMap::new(), BTreeMap::new());
        for lag in member.lag().await? {
            let mut end = lag.log_end_offset;
            if end == 0 {
                let record = ProducerRecord::new(topic.clone(), Bytes::from_static(b"x"))
                    .partition(lag.partition.partition);
                self.producer.send(record).await?.await?;
                end = 1;
            }
            let tp = lag.partition;
            let (a, b) = if member.committed(&tp) == Some(end) {
                (end - 1, end)
            } else {
                (end, end - 1)
            };
            next.insert(tp.clone(), a);
            other.insert(tp, b);
        }
        tokio::time::sleep_until(start).await;
        let mut commits = PhaseResult::default();
        while Instant::now() < start + self.duration {
            let t0 = Instant::now();
            match member.commit_offsets_sync(next.clone()).await {
                Ok(()) => commits.answered(t0, next.len()),
                Err(err) => {
                    // Fenced or rebalanced away: this member's commits end here.
                    self.errors.note(ERROR, "commit", &err);
                    break;
                }
            }
            std::mem::swap(&mut next, &mut other);
        }
        // The baseline: single-record batches to the same partitions, in turn.
        let value = Bytes::from(vec![b'x'; BASELINE_VALUE_BYTES]);
        let records: Vec<ProducerRecord> = owned
            .iter()
            .map(|tp| ProducerRecord::new(topic.clone(), value.clone()).partition(tp.partition))
            .collect();
        let start = start + self.duration + BASELINE_GAP;
        tokio::time::sleep_until(start).await;
        let mut produced = PhaseResult::default();
        for record in records.iter().cycle() {
            if Instant::now() >= start + self.duration {
                break;
            }
            let t0 = Instant::now();
            self.producer.send_ref(record).await?.await?;
            produced.answered(t0, 1);
        }
        member.close().await?;
        Ok((commits, produced))
    }
}
