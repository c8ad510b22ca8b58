//! The DLQ reader (all along the run) and the end of the queue workload: drain (the
//! workers and the reader keep going until every acknowledged send is accounted for),
//! stop the workers, read the rest of the DLQ, describe the queue.

use std::time::Duration;

use neo_client::queue::{
    HEADER_DLQ_DELIVERIES, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
};
use neo_client::{Client, Consumer, ConsumerRecord, Offset, QueueAdmin};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CALL_BOUND, DLQ_READ_MAX, QUEUE_NAME, QueueWorkload, connect, pause};
use crate::group_workload::error_kind;
use crate::history::Recorder;
use crate::history::queue::{DlqRecord, QueueFinalStats};
use crate::queue_check::account;
use crate::security::ClientSecurity;

/// The reader's index in the error list.
const READER: u32 = 2_000;
/// Each DLQ partition's poll wait.
const DLQ_POLL_WAIT: Duration = Duration::from_millis(100);
/// Pause between two reads of the DLQ while the workload runs.
const DLQ_READ_PERIOD: Duration = Duration::from_millis(200);

/// The DLQ reader's task: reads the DLQ all along (so that the drain finds it caught
/// up), until stopped; returns the reader (`None`: stopped before it connected).
pub(super) async fn read_dlq(
    seeds: Vec<String>,
    security: ClientSecurity,
    recorder: Recorder,
    dlq: String,
    mut stop: watch::Receiver<bool>,
) -> Option<DlqReader> {
    let client = connect(&seeds, &security, &recorder, READER, &mut stop).await?;
    let mut reader = DlqReader::new(client, &dlq);
    loop {
        reader.read(&recorder).await;
        if pause(&mut stop, DLQ_READ_PERIOD).await {
            return Some(reader);
        }
    }
}

impl QueueWorkload {
    /// Keep the workers going (the DLQ reader too) until every acknowledged send is
    /// acked, dead-lettered, or acked without an answer and quiet for two lease lengths
    /// (or `drain_max`); stop the workers and the reader; read the DLQ up to its end
    /// (at most [`DLQ_READ_MAX`]); record the queue's final counts (within another
    /// [`DLQ_READ_MAX`]).
    pub async fn finish(self, recorder: &Recorder, drain_max: Duration) {
        let clock = recorder.clock();
        let run_id = recorder.run_id();
        let begin = clock.now_us();
        let deadline = Instant::now() + drain_max;
        let vis = recorder
            .queue(|q| q.visibility_timeout_ms)
            .unwrap_or_default();
        loop {
            let a = recorder.queue(|q| account(&run_id, q)).unwrap_or_default();
            if a.settled(clock.now_us(), vis) || Instant::now() >= deadline {
                eprintln!(
                    "[{:7.2}s] queue: {} acknowledged sends, {} acked, {} dead-lettered, {} acked without answer, {} not accounted for; stopping the workers",
                    clock.secs(),
                    a.acknowledged,
                    a.acked.len(),
                    a.dead_lettered.len(),
                    a.maybe_acked.len(),
                    a.pending.len()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end = clock.now_us();
        recorder.queue(|q| q.drain_us = Some((begin, end)));
        let _ = self.stop_workers.send(true);
        let bound = Instant::now() + CALL_BOUND * 2;
        for mut task in self.workers {
            if tokio::time::timeout_at(bound, &mut task).await.is_err() {
                eprintln!("queue: a worker did not stop in time; aborted");
                task.abort();
            }
        }
        let read_until = Instant::now() + DLQ_READ_MAX;
        let mut reader_task = self.reader;
        let _ = self.stop_reader.send(true);
        let reader = match tokio::time::timeout_at(read_until, &mut reader_task).await {
            Ok(Ok(Some(reader))) => Some(reader),
            _ => {
                // Stuck in a poll (or never connected): a new reader goes on from the
                // records already read.
                reader_task.abort();
                let (_keep, mut never) = watch::channel(false);
                tokio::time::timeout_at(
                    read_until,
                    connect(&self.seeds, &self.security, recorder, READER, &mut never),
                )
                .await
                .ok()
                .flatten()
                .map(|client| DlqReader::new(client, &self.dlq))
            }
        };
        let mut reader = reader;
        match reader.as_mut() {
            Some(reader) => reader.catch_up(recorder, read_until).await,
            None => {
                recorder.queue(|q| q.dlq_error = Some("could not connect to read the DLQ".into()));
            }
        }
        let stats = match &reader {
            Some(reader) => tokio::time::timeout(DLQ_READ_MAX, final_stats(&reader.client))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let read = stats.is_some();
        if let Some(stats) = stats {
            recorder.queue(|q| q.final_stats = stats);
        }
        let (records, error) = recorder
            .queue(|q| (q.dlq_records.len(), q.dlq_error.clone()))
            .unwrap_or_default();
        eprintln!(
            "[{:7.2}s] queue: workers stopped; {records} DLQ records{}; final counts {}",
            clock.secs(),
            error
                .map(|e| format!(" (read stopped: {e})"))
                .unwrap_or_default(),
            if read { "read" } else { "not read" }
        );
    }
}

/// Reads the DLQ, one consumer per partition (a poll that fails on one partition does
/// not cost the others their records), each from the record after the last one the
/// history holds (else the log start).
#[derive(Debug)]
pub(super) struct DlqReader {
    client: Client,
    dlq: String,
    partitions: Vec<(u32, Consumer)>,
    assigned: bool,
}

impl DlqReader {
    fn new(client: Client, dlq: &str) -> DlqReader {
        DlqReader {
            client,
            dlq: dlq.to_string(),
            partitions: Vec::new(),
            assigned: false,
        }
    }

    /// Assign every partition once (retried on the next call when it fails).
    async fn assign(&mut self, recorder: &Recorder) -> bool {
        if self.assigned {
            return true;
        }
        let count =
            match tokio::time::timeout(CALL_BOUND, self.client.partition_count(&self.dlq)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    super::record_error(recorder, READER, "dlq", &error_kind(&e));
                    return false;
                }
                Err(_) => return false,
            };
        let mut partitions = Vec::new();
        for p in 0..count {
            let mut c = Consumer::new(self.client.clone());
            let from = recorder
                .queue(|q| {
                    q.dlq_records
                        .iter()
                        .filter(|r| r.partition == p)
                        .map(|r| r.offset + 1)
                        .max()
                })
                .flatten()
                .map_or(Offset::Beginning, Offset::At);
            if let Err(e) = c.assign(&self.dlq, &[p], from).await {
                super::record_error(recorder, READER, "dlq", &error_kind(&e));
                return false;
            }
            partitions.push((p, c));
        }
        self.partitions = partitions;
        self.assigned = true;
        true
    }

    /// One poll of every partition; returns how many records came.
    async fn read(&mut self, recorder: &Recorder) -> usize {
        if !self.assign(recorder).await {
            return 0;
        }
        let mut got = Vec::new();
        for (_, c) in &mut self.partitions {
            match tokio::time::timeout(CALL_BOUND, c.poll(DLQ_POLL_WAIT)).await {
                Ok(Ok(records)) => got.extend(records.iter().map(dlq_record)),
                Ok(Err(e)) => super::record_error(recorder, READER, "dlq", &error_kind(&e)),
                Err(_) => {}
            }
        }
        let n = got.len();
        recorder.queue(|q| q.dlq_records.extend(got));
        n
    }

    /// Read until every partition's position reached its high watermark (asked once
    /// now, after the workers stopped) or `until`.
    async fn catch_up(&mut self, recorder: &Recorder, until: Instant) {
        let mut targets = Vec::new();
        while Instant::now() < until && targets.is_empty() {
            if !self.assign(recorder).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let mut all = Vec::new();
            for (p, c) in &self.partitions {
                match tokio::time::timeout_at(until, c.high_watermark(&self.dlq, *p)).await {
                    Ok(Ok(hw)) => all.push((*p, hw)),
                    _ => break,
                }
            }
            if all.len() == self.partitions.len() {
                targets = all;
            }
        }
        loop {
            let behind: Vec<(u32, u64, u64)> = targets
                .iter()
                .filter_map(|(p, hw)| {
                    let (_, c) = self.partitions.iter().find(|(x, _)| x == p)?;
                    let at = c.position(&self.dlq, *p).unwrap_or(0);
                    (at < *hw).then_some((*p, at, *hw))
                })
                .collect();
            if !targets.is_empty() && behind.is_empty() {
                return;
            }
            if Instant::now() >= until {
                let why = if targets.is_empty() {
                    "no high watermark of the DLQ".to_string()
                } else {
                    format!("(partition, position, high watermark) behind: {behind:?}")
                };
                recorder.queue(|q| q.dlq_error = Some(why));
                return;
            }
            self.read(recorder).await;
        }
    }
}

fn header<T: std::str::FromStr>(r: &ConsumerRecord, name: &str) -> Option<T> {
    let (_, v) = r.headers.iter().find(|(n, _)| n == name)?;
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn dlq_record(r: &ConsumerRecord) -> DlqRecord {
    DlqRecord {
        partition: r.partition,
        offset: r.offset,
        value: String::from_utf8_lossy(&r.value).into_owned(),
        source: header(r, HEADER_DLQ_SOURCE),
        source_partition: header(r, HEADER_DLQ_PARTITION),
        source_offset: header(r, HEADER_DLQ_OFFSET),
        deliveries: header(r, HEADER_DLQ_DELIVERIES),
        reason: header(r, HEADER_DLQ_REASON),
    }
}

/// Every partition's counts (`None` when the describe failed or a partition's leader
/// did not answer).
async fn final_stats(client: &Client) -> Option<Vec<QueueFinalStats>> {
    let report = QueueAdmin::new(client.clone())
        .describe(QUEUE_NAME, None)
        .await
        .ok()?;
    report
        .partitions
        .iter()
        .map(|p| {
            let s = p.stats.as_ref()?;
            Some(QueueFinalStats {
                partition: p.partition,
                available: s.available,
                in_flight: s.in_flight,
                delayed: s.delayed,
                dead_lettered: s.dead_lettered,
                acked: s.acked,
                redelivered: s.redelivered,
                ack_floor: s.ack_floor,
                end_offset: s.end_offset,
            })
        })
        .collect()
}
