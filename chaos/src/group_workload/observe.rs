//! What watches the group from outside its members: the sampler of committed offsets
//! and descriptions, and the auditor that reads the final committed offsets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{Client, Error, GroupAdmin, TopicPartition};
use tokio::sync::watch;
use tokio::time::Instant;

use super::member::{note_member_id, record_reads};
use super::{
    AUDIT_MAX, AUDIT_POLL_WAIT, CALL_BOUND, LOCAL_DEADLINE, Listener, SAMPLE_INTERVAL, connect,
    error_kind, group_client_config, pause, push_error, push_event, subscribe,
};
use crate::history::{GroupEventKind, GroupSnapshot, OffsetSample, Recorder};
use crate::security::ClientSecurity;

/// Every [`SAMPLE_INTERVAL`]: each partition's committed offset and the group's
/// description, until aborted.
pub(super) async fn sample(
    seeds: Vec<String>,
    security: ClientSecurity,
    recorder: Recorder,
    topic: String,
    group: String,
    mut stop: watch::Receiver<bool>,
) {
    let clock = recorder.clock();
    let (client, partitions) = loop {
        let connected = tokio::time::timeout(CALL_BOUND, async {
            let client = Client::connect_with(&seeds, group_client_config(&security)).await?;
            let partitions = client.partition_count(&topic).await?;
            Ok::<_, Error>((client, partitions))
        })
        .await;
        match connected {
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => {
                recorder.group(|g| g.sample_errors.push((clock.now_us(), error_kind(&e))))
            }
            Err(_) => recorder.group(|g| {
                g.sample_errors
                    .push((clock.now_us(), LOCAL_DEADLINE.into()))
            }),
        };
        if pause(&mut stop, Duration::from_millis(500)).await {
            return;
        }
    };
    let admin = GroupAdmin::new(client);
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let reads = (0..partitions).map(|p| {
            let (admin, group, topic) = (&admin, &group, &topic);
            async move {
                let invoke_us = clock.now_us();
                let r =
                    tokio::time::timeout(CALL_BOUND, admin.committed_offset(group, topic, p)).await;
                (p, invoke_us, clock.now_us(), r)
            }
        });
        let reads = futures::future::join_all(reads).await;
        let described = tokio::time::timeout(CALL_BOUND, admin.describe_group(&group)).await;
        let at_us = clock.now_us();
        recorder.group(|g| {
            for (partition, invoke_us, complete_us, r) in reads {
                match r {
                    Ok(Ok(resp)) => g.samples.push(OffsetSample {
                        partition,
                        offset: resp.offset,
                        log_end_offset: Some(resp.log_end_offset),
                        invoke_us,
                        complete_us,
                    }),
                    Ok(Err(e)) => g.sample_errors.push((complete_us, error_kind(&e))),
                    Err(_) => g.sample_errors.push((complete_us, LOCAL_DEADLINE.into())),
                }
            }
            match described {
                Ok(Ok(d)) => g.snapshots.push(GroupSnapshot {
                    at_us,
                    state: d.state,
                    group_epoch: d.group_epoch,
                    members: d.members.len() as u32,
                }),
                Ok(Err(e)) => g.sample_errors.push((at_us, error_kind(&e))),
                Err(_) => g.sample_errors.push((at_us, LOCAL_DEADLINE.into())),
            }
        });
    }
}

/// The final committed offsets, read the linearizable way: one more member (index
/// `members`) joins the empty group, and each takeover's fence reads the partition's
/// committed offset through its Raft group (recorded as its `Assigned` events, like
/// any member's). Polls until it owns every partition or [`AUDIT_MAX`]; what it reads
/// meanwhile is recorded as group reads; then it closes.
pub(super) async fn audit(
    seeds: &[String],
    security: &ClientSecurity,
    recorder: &Recorder,
    topic: &str,
    group: &str,
    members: u32,
    partitions: u32,
) -> Vec<OffsetSample> {
    let clock = recorder.clock();
    let index = members;
    let (_keep, mut stop) = watch::channel(false);
    let deadline = Instant::now() + AUDIT_MAX;
    let audited = tokio::time::timeout_at(deadline, async {
        let client = connect(seeds, security, recorder, index, &mut stop).await?;
        subscribe(&client, recorder, index, topic, group, &mut stop).await
    })
    .await;
    let Ok(Some(mut consumer)) = audited else {
        push_error(
            recorder,
            index,
            clock.now_us(),
            "subscribe",
            LOCAL_DEADLINE.into(),
            String::new(),
        );
        return Vec::new();
    };
    let poll_start_us = Arc::new(AtomicU64::new(clock.now_us()));
    let member_id = Arc::new(Mutex::new(String::new()));
    consumer.set_listener(Box::new(Listener {
        member: index,
        recorder: recorder.clone(),
        poll_start_us: poll_start_us.clone(),
        member_id: member_id.clone(),
    }));
    note_member_id(&consumer, recorder, index, &member_id, clock.now_us());
    let mut finals: BTreeMap<u32, OffsetSample> = BTreeMap::new();
    while (finals.len() as u32) < partitions && Instant::now() < deadline {
        let start = clock.now_us();
        poll_start_us.store(start, Ordering::Relaxed);
        let polled = tokio::time::timeout_at(deadline, consumer.poll(AUDIT_POLL_WAIT)).await;
        let at_us = clock.now_us();
        note_member_id(&consumer, recorder, index, &member_id, start);
        match polled {
            Ok(Ok(records)) => record_reads(recorder, index, records, at_us),
            Ok(Err(e)) => {
                push_error(
                    recorder,
                    index,
                    start,
                    "poll",
                    error_kind(&e),
                    e.to_string(),
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
        // The takeovers of this poll, from the events the listener just recorded.
        let taken = recorder
            .group(|g| {
                g.events
                    .iter()
                    .filter(|e| e.member == index && e.start_us == start)
                    .filter_map(|e| match &e.kind {
                        GroupEventKind::Assigned { partitions } => Some(
                            partitions
                                .iter()
                                .map(|(p, o)| (*p, *o, e.start_us, e.at_us))
                                .collect::<Vec<_>>(),
                        ),
                        _ => None,
                    })
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (partition, offset, invoke_us, complete_us) in taken {
            finals.entry(partition).or_insert(OffsetSample {
                partition,
                offset: Some(offset),
                log_end_offset: consumer
                    .last_log_end_offset(&TopicPartition::new(topic, partition)),
                invoke_us,
                complete_us,
            });
        }
    }
    let start = clock.now_us();
    match tokio::time::timeout(CALL_BOUND, consumer.close()).await {
        Ok(Ok(())) => push_event(recorder, index, start, GroupEventKind::Closed),
        Ok(Err(e)) => push_error(
            recorder,
            index,
            start,
            "close",
            error_kind(&e),
            e.to_string(),
        ),
        Err(_) => push_error(
            recorder,
            index,
            start,
            "close",
            LOCAL_DEADLINE.into(),
            String::new(),
        ),
    }
    let finals: Vec<OffsetSample> = finals.into_values().collect();
    recorder.group(|g| g.final_offsets = finals.clone());
    finals
}
