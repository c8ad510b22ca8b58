//! Retention: every `retention_check_ms`, each partition replica hosted here whose
//! topic has a retention limit (`retention.ms`, `retention.bytes`) is asked to purge its
//! own log ([`neo_raft::RaftGroup::apply_retention`]).
//!
//! Log compaction is local in Raft: every replica (leader or follower) decides on its
//! own log, with the same rule and the same limits from the metadata state, so replicas
//! converge on the same segment cut (their segments are byte-identical). What is
//! deleted is whole sealed segments below the applied index: never the active segment,
//! never an entry not yet applied. A follower that later needs purged entries receives
//! a snapshot (metadata only) and restarts its log after it.
//!
//! Queues also purge their acked prefix (work-queue retention, `queue_pass`): sealed
//! segments below the partition's ack floor.
//!
//! A failure is logged (`warn`) and counted (`neo_retention_errors_total`); the next
//! pass retries. The task ends on the node's shutdown broadcast, also mid-pass.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::node::Shared;

/// Longest one purge (snapshot + log purge) of one replica may take before it counts
/// as failed.
const PURGE_TIMEOUT_MS: u64 = 10_000;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(shared.limits.retention_check_ms.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        tokio::select! {
            _ = pass(&shared) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Work-queue retention: each queue partition replica here purges the sealed segments
/// below its ack floor (the acked prefix: every message there is done), so a drained
/// queue does not grow on disk. The floor is replicated state, so every replica cuts
/// at the same place once it has applied the same commands.
async fn queue_pass(shared: &Shared, state: &neo_broker::meta::MetaState) {
    for name in state.queues.keys() {
        let Some(t) = state.topics.get(name) else {
            continue;
        };
        for (partition, p) in t.partitions.iter().enumerate() {
            let Some(replica) = shared.broker.partition(p.group) else {
                continue;
            };
            let floor = replica.with_queues(|q| {
                q.groups
                    .get(neo_broker::partition::queues::QUEUE_OWN)
                    .map_or(0, |d| d.floor)
            });
            if floor == 0 {
                continue;
            }
            let timeout = Duration::from_millis(PURGE_TIMEOUT_MS);
            match replica.group().purge_below_offset(floor, timeout).await {
                Ok(Some(index)) => {
                    shared
                        .metrics
                        .retention_purges
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(queue = %name, partition, index, "queue retention: purging the acked prefix up to index {index}");
                }
                Ok(None) => {}
                Err(e) => {
                    shared
                        .metrics
                        .retention_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(queue = %name, partition, "queue retention: {e}");
                }
            }
        }
    }
}

/// Resolves once the node is shutting down (or the broadcast is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One pass over every partition replica hosted here.
async fn pass(shared: &Shared) {
    let state = shared.state();
    queue_pass(shared, &state).await;
    for (topic, t) in &state.topics {
        if t.retention_ms.is_none() && t.retention_bytes.is_none() {
            continue;
        }
        for (partition, p) in t.partitions.iter().enumerate() {
            let Some(group) = shared.partition_group(p.group) else {
                continue; // Not a replica here, or not opened yet.
            };
            let timeout = Duration::from_millis(PURGE_TIMEOUT_MS);
            match group
                .apply_retention(t.retention_ms, t.retention_bytes, now_ms(), timeout)
                .await
            {
                Ok(Some(index)) => {
                    shared
                        .metrics
                        .retention_purges
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        topic = %topic,
                        partition,
                        group = p.group,
                        index,
                        "retention: purging the log up to index {index}"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    shared
                        .metrics
                        .retention_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic = %topic,
                        partition,
                        group = p.group,
                        "retention: {e}"
                    );
                }
            }
        }
    }
}
