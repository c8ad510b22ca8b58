//! The history checker: pure, deterministic, and the only place that decides whether a
//! run passed.
//!
//! | invariant | how | fails the run |
//! |---|---|---|
//! | lost = 0 | every `Ok` produce's payload is in the final drain at its acknowledged offset | yes |
//! | offsets kept | an `Ok` payload stored elsewhere than its acknowledged offset (`offset_mismatches`) | yes |
//! | unexpected = 0 | every drained value is a payload of this run that was invoked and not refused before sending (`Fail`) | yes |
//! | duplicates | payloads stored more than once: counted and reported (retries after a failover store a batch twice until the broker deduplicates) | no |
//! | order | drained offsets strictly increase per partition; each producer's payloads, first copies only, appear in sequence order in its own partition | yes |
//! | live reads | every record a consumer read during the faults is in the final log at the same offset (no committed-then-vanished reads) | yes |
//! | drain | every partition was read up to its high watermark | yes |
//! | replicas | every replica answered a digest, at the same `start_offset` and `high_watermark`, with the same `crc32`, `batches`, `bytes` | yes |
//! | failover | per fault and affected partition: fault start → completion of the first `Ok` produce invoked after it; p50 / p99 / max | no (reported) |
//! | consumer group | [`crate::groups_check`]: consumed at least once, nothing foreign, committed offsets never backwards, members rejoin | yes |
//! | queue | [`crate::queue_check`]: every acknowledged message acked or dead-lettered, nothing delivered after an `Ok` ack, dead letters only after `max_deliveries`, DLQ headers, nothing foreign | yes |

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::groups_check::{GroupCheck, check_group};
use crate::history::{
    History, Outcome, PartitionDigests, ProduceOp, drain_map, parse_payload, payload,
};
use crate::queue_check::{QueueCheck, check_queue};

/// Examples kept per category.
const EXAMPLES_MAX: usize = 10;

/// One failover measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverSample {
    /// Index of the fault in the history.
    pub fault: usize,
    /// The affected partition.
    pub partition: u32,
    /// Fault start → first acknowledgement of a produce invoked after it; `None` when
    /// no such acknowledgement came before the end of the run.
    pub ms: Option<f64>,
}

/// Failover times over every fault of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverStats {
    /// Measurements with an acknowledgement.
    pub samples: usize,
    /// Median, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile (nearest rank), milliseconds.
    pub p99_ms: Option<f64>,
    /// Maximum, milliseconds.
    pub max_ms: Option<f64>,
    /// (fault, partition) pairs that saw no acknowledgement after the fault.
    pub unrecovered: usize,
    /// Every measurement.
    pub all: Vec<FailoverSample>,
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Produces invoked.
    pub invoked: usize,
    /// Produces acknowledged with an offset.
    pub acknowledged: usize,
    /// Produces refused before sending.
    pub failed: usize,
    /// Produces whose outcome is unknown (or never completed).
    pub unknown: usize,
    /// Unknown produces that are in the final log.
    pub unknown_stored: usize,
    /// Records in the final drain.
    pub stored_records: usize,
    /// Acknowledged payloads not in the final log.
    pub lost: usize,
    /// Acknowledged payloads in the log, but not at the acknowledged offset.
    pub offset_mismatches: usize,
    /// Drained values that were never sent (or refused before sending).
    pub unexpected: usize,
    /// Extra copies of payloads stored more than once.
    pub duplicates: usize,
    /// Payloads stored more than once.
    pub duplicated_values: usize,
    /// Offset or producer order violations (and payloads in a foreign partition).
    pub order_violations: usize,
    /// Records read live that the final log does not hold at the same offset.
    pub divergent_reads: usize,
    /// Records read live.
    pub live_reads: usize,
    /// Errors seen by the live consumers (retried; reported, not failed).
    pub live_read_errors: usize,
    /// Every partition was drained up to its high watermark.
    pub drain_complete: bool,
    /// Every replica of every partition answered with identical digests.
    pub digests_identical: bool,
    /// Failover times.
    pub failover: FailoverStats,
    /// The consumer group's rules (`None`: no group workload).
    #[serde(default)]
    pub group: Option<GroupCheck>,
    /// The queue's rules (`None`: no queue workload).
    #[serde(default)]
    pub queue: Option<QueueCheck>,
    /// Up to 10 examples per category (`lost`, `unexpected`, ...).
    pub examples: BTreeMap<String, Vec<String>>,
    /// One line per violated invariant; empty = pass.
    pub violations: Vec<String>,
}

impl CheckReport {
    /// No invariant was violated.
    pub fn pass(&self) -> bool {
        self.violations.is_empty()
    }

    fn example(&mut self, category: &str, text: String) {
        let list = self.examples.entry(category.to_string()).or_default();
        if list.len() < EXAMPLES_MAX {
            list.push(text);
        }
    }
}

/// Check a finished run's history.
pub fn check(history: &History) -> CheckReport {
    let mut r = CheckReport {
        invoked: history.produces.len(),
        live_reads: history.reads.len(),
        live_read_errors: history.read_errors.len(),
        ..CheckReport::default()
    };
    let run = history.run_id.as_str();
    let ops: HashMap<(u32, u64), &ProduceOp> = history
        .produces
        .iter()
        .map(|op| ((op.producer, op.seq), op))
        .collect();
    for op in &history.produces {
        match op.outcome {
            Outcome::Ok => r.acknowledged += 1,
            Outcome::Fail => r.failed += 1,
            Outcome::Unknown | Outcome::Invoked => r.unknown += 1,
        }
    }

    // 1. The drain: offsets, foreign values, copies, producer order.
    let mut copies: HashMap<(u32, u64), Vec<(u32, u64)>> = HashMap::new();
    for part in &history.drain {
        let p = part.partition;
        let mut last_offset: Option<u64> = None;
        let mut last_seq: HashMap<u32, u64> = HashMap::new();
        for (offset, value) in &part.records {
            r.stored_records += 1;
            if let Some(last) = last_offset
                && *offset <= last
            {
                r.order_violations += 1;
                r.example(
                    "order",
                    format!("partition {p}: offset {offset} read after offset {last}"),
                );
            }
            last_offset = Some(*offset);
            let Some((producer, seq)) = parse_payload(run, value) else {
                r.unexpected += 1;
                r.example(
                    "unexpected",
                    format!("{p}/{offset}: {value:?} is not a payload of run {run}"),
                );
                continue;
            };
            let Some(op) = ops.get(&(producer, seq)) else {
                r.unexpected += 1;
                r.example(
                    "unexpected",
                    format!("{p}/{offset}: {value:?} was never sent"),
                );
                continue;
            };
            if op.outcome == Outcome::Fail {
                r.unexpected += 1;
                r.example(
                    "unexpected",
                    format!(
                        "{p}/{offset}: {value:?} was refused before sending ({}) yet stored",
                        op.error.as_deref().unwrap_or("?")
                    ),
                );
            }
            if op.partition != p {
                r.order_violations += 1;
                r.example(
                    "order",
                    format!(
                        "{p}/{offset}: {value:?} was sent to partition {}",
                        op.partition
                    ),
                );
            }
            let first = !copies.contains_key(&(producer, seq));
            copies
                .entry((producer, seq))
                .or_default()
                .push((p, *offset));
            // Order is judged on first copies only (a retried batch may be stored again).
            if first
                && let Some(prev) = last_seq.insert(producer, seq)
                && seq <= prev
            {
                r.order_violations += 1;
                r.example(
                    "order",
                    format!(
                        "partition {p}: producer {producer} seq {seq} at offset {offset} after its seq {prev}"
                    ),
                );
            }
        }
    }
    let mut duplicated: Vec<(u32, u64)> = copies
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(key, _)| *key)
        .collect();
    duplicated.sort_unstable();
    for key in &duplicated {
        let at = &copies[key];
        r.duplicates += at.len() - 1;
        r.duplicated_values += 1;
        let op = ops[key];
        r.example(
            "duplicates",
            format!(
                "producer {} seq {} stored at {at:?}; invoked {:.3}s, {:?} at {:?} ({:.3}s)",
                key.0,
                key.1,
                op.invoke_us as f64 / 1e6,
                op.outcome,
                op.offset,
                op.complete_us.unwrap_or(0) as f64 / 1e6
            ),
        );
    }

    // 2. Every acknowledged payload at its offset.
    let log = drain_map(&history.drain);
    for op in &history.produces {
        let key = (op.producer, op.seq);
        match op.outcome {
            Outcome::Ok => {
                let value = payload(run, op.producer, op.seq);
                let Some(offset) = op.offset else {
                    // acks=all always carries an offset; without one nothing can be checked.
                    r.offset_mismatches += 1;
                    r.example(
                        "offset",
                        format!(
                            "producer {} seq {} acknowledged without offset",
                            op.producer, op.seq
                        ),
                    );
                    continue;
                };
                if log.get(&(op.partition, offset)) == Some(&value.as_str()) {
                    continue;
                }
                let when = op.complete_us.unwrap_or(0) as f64 / 1e6;
                if let Some(at) = copies.get(&key) {
                    r.offset_mismatches += 1;
                    r.example(
                        "offset",
                        format!(
                            "producer {} seq {} acknowledged at {}/{offset} ({when:.3}s), stored at {at:?}",
                            op.producer, op.seq, op.partition
                        ),
                    );
                } else {
                    r.lost += 1;
                    r.example(
                        "lost",
                        format!(
                            "producer {} seq {} acknowledged at {}/{offset} ({when:.3}s), not in the log (log has {:?} there)",
                            op.producer,
                            op.seq,
                            op.partition,
                            log.get(&(op.partition, offset))
                        ),
                    );
                }
            }
            Outcome::Unknown | Outcome::Invoked if copies.contains_key(&key) => {
                r.unknown_stored += 1;
            }
            _ => {}
        }
    }

    // 3. Live reads agree with the final log, in offset order per partition.
    let mut last_read: HashMap<u32, u64> = HashMap::new();
    for read in &history.reads {
        let p = read.partition;
        if let Some(prev) = last_read.insert(p, read.offset)
            && read.offset <= prev
        {
            r.order_violations += 1;
            r.example(
                "order",
                format!(
                    "live read of partition {p}: offset {} after offset {prev}",
                    read.offset
                ),
            );
        }
        if log.get(&(p, read.offset)) != Some(&read.value.as_str()) {
            r.divergent_reads += 1;
            r.example(
                "divergent_reads",
                format!(
                    "read {:?} at {p}/{} ({:.3}s); the final log has {:?}",
                    read.value,
                    read.offset,
                    read.at_us as f64 / 1e6,
                    log.get(&(p, read.offset))
                ),
            );
        }
    }

    // 4. The drain reached every high watermark.
    r.drain_complete = history.drain.len() as u32 == history.partitions;
    let drained: Vec<u32> = history.drain.iter().map(|d| d.partition).collect();
    for p in 0..history.partitions {
        if !drained.contains(&p) {
            r.example("drain", format!("partition {p} was not drained"));
        }
    }
    for d in &history.drain {
        if d.position < d.target || d.error.is_some() {
            r.drain_complete = false;
            r.example(
                "drain",
                format!(
                    "partition {}: drained to {} of {}: {}",
                    d.partition,
                    d.position,
                    d.target,
                    d.error.as_deref().unwrap_or("stopped early")
                ),
            );
        }
    }

    // 5. Replicas identical.
    r.digests_identical = history.digests.len() as u32 == history.partitions;
    for pd in &history.digests {
        let problem = digest_problem(pd);
        if let Some(problem) = problem {
            r.digests_identical = false;
            r.example("digests", problem);
        }
    }
    if history.digests.len() as u32 != history.partitions {
        r.example(
            "digests",
            format!(
                "digests of {} partitions for {}",
                history.digests.len(),
                history.partitions
            ),
        );
    }

    // 6. Failover, 7. the consumer group, 8. the queue.
    r.failover = failover(history);
    r.group = history.group.as_ref().map(|g| check_group(history, g));
    r.queue = history.queue.as_ref().map(|q| check_queue(run, q));

    // Verdict.
    let mut v = Vec::new();
    if r.lost > 0 {
        v.push(format!("{} acknowledged records lost", r.lost));
    }
    if r.offset_mismatches > 0 {
        v.push(format!(
            "{} acknowledged records not at their acknowledged offset",
            r.offset_mismatches
        ));
    }
    if r.unexpected > 0 {
        v.push(format!("{} unexpected records", r.unexpected));
    }
    if r.order_violations > 0 {
        v.push(format!("{} order violations", r.order_violations));
    }
    if r.divergent_reads > 0 {
        v.push(format!(
            "{} live reads not in the final log",
            r.divergent_reads
        ));
    }
    if !r.drain_complete {
        v.push("final drain incomplete".to_string());
    }
    if !r.digests_identical {
        v.push("replica digests differ or are missing".to_string());
    }
    v.extend(r.group.iter().flat_map(|g| g.violations.iter().cloned()));
    v.extend(r.queue.iter().flat_map(|q| q.violations.iter().cloned()));
    r.violations = v;
    r
}

/// What is wrong with one partition's replica digests, if anything.
fn digest_problem(pd: &PartitionDigests) -> Option<String> {
    let p = pd.partition;
    let answered: Vec<u64> = pd.digests.iter().map(|d| d.node).collect();
    let missing: Vec<u64> = pd
        .replicas
        .iter()
        .copied()
        .filter(|n| !answered.contains(n))
        .collect();
    if pd.replicas.is_empty() || pd.digests.is_empty() {
        return Some(format!(
            "partition {p}: no replica digest ({:?})",
            pd.errors
        ));
    }
    if !missing.is_empty() {
        return Some(format!(
            "partition {p}: replicas {missing:?} gave no digest ({:?})",
            pd.errors
        ));
    }
    let first = &pd.digests[0];
    let describe = || {
        pd.digests
            .iter()
            .map(|d| {
                format!(
                    "node {}: start {} hw {} batches {} bytes {} crc {}",
                    d.node, d.start_offset, d.high_watermark, d.batches, d.bytes, d.crc32
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if pd
        .digests
        .iter()
        .any(|d| (d.start_offset, d.high_watermark) != (first.start_offset, first.high_watermark))
    {
        return Some(format!(
            "partition {p}: replicas did not converge: {}",
            describe()
        ));
    }
    if pd
        .digests
        .iter()
        .any(|d| (d.batches, d.bytes, &d.crc32) != (first.batches, first.bytes, &first.crc32))
    {
        return Some(format!(
            "partition {p}: replicas differ at the same high watermark: {}",
            describe()
        ));
    }
    None
}

/// Failover samples: for each fault and affected partition, the first acknowledgement
/// of a produce to that partition invoked at or after the fault's start.
fn failover(history: &History) -> FailoverStats {
    let mut by_partition: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    for op in &history.produces {
        if op.outcome == Outcome::Ok
            && let Some(done) = op.complete_us
        {
            by_partition
                .entry(op.partition)
                .or_default()
                .push((op.invoke_us, done));
        }
    }
    let mut all = Vec::new();
    for (i, fault) in history.faults.iter().enumerate() {
        for &p in &fault.affected_partitions {
            let first = by_partition
                .get(&p)
                .into_iter()
                .flatten()
                .filter(|(invoke, _)| *invoke >= fault.start_us)
                .map(|(_, done)| *done)
                .min();
            all.push(FailoverSample {
                fault: i,
                partition: p,
                ms: first.map(|done| (done - fault.start_us) as f64 / 1000.0),
            });
        }
    }
    let mut ms: Vec<f64> = all.iter().filter_map(|s| s.ms).collect();
    ms.sort_by(f64::total_cmp);
    FailoverStats {
        samples: ms.len(),
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied(),
        unrecovered: all.iter().filter(|s| s.ms.is_none()).count(),
        all,
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests;
