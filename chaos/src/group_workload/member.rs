//! A member's task: join, poll, record, commit; its listener's records are in
//! [`super::Listener`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neo_client::{ConsumerRecord, GroupConsumer};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    CALL_BOUND, COMMIT_INTERVAL, LOCAL_DEADLINE, Listener, POLL_BOUND, POLL_WAIT, connect,
    error_kind, pause, push_error, push_event, subscribe,
};
use crate::history::{CommitOutcome, GroupCommit, GroupEventKind, GroupRead, Recorder};
use crate::security::ClientSecurity;

/// One member: join, poll and commit until stopped, then a last commit and `close`.
pub(super) async fn member(
    index: u32,
    seeds: Vec<String>,
    security: ClientSecurity,
    recorder: Recorder,
    topic: String,
    group: String,
    mut stop: watch::Receiver<bool>,
) {
    let clock = recorder.clock();
    let Some(client) = connect(&seeds, &security, &recorder, index, &mut stop).await else {
        return;
    };
    let Some(mut consumer) = subscribe(&client, &recorder, index, &topic, &group, &mut stop).await
    else {
        return;
    };
    let poll_start_us = Arc::new(AtomicU64::new(clock.now_us()));
    let member_id = Arc::new(Mutex::new(String::new()));
    consumer.set_listener(Box::new(Listener {
        member: index,
        recorder: recorder.clone(),
        poll_start_us: poll_start_us.clone(),
        member_id: member_id.clone(),
    }));
    let mut last_commit = Instant::now();
    note_member_id(&consumer, &recorder, index, &member_id, clock.now_us());
    while !*stop.borrow() {
        let start = clock.now_us();
        poll_start_us.store(start, Ordering::Relaxed);
        let polled = tokio::time::timeout(POLL_BOUND, consumer.poll(POLL_WAIT)).await;
        let at_us = clock.now_us();
        match polled {
            Ok(Ok(records)) => record_reads(&recorder, index, records, at_us),
            Ok(Err(e)) => {
                let kind = error_kind(&e);
                let fenced = kind == "FencedMember";
                push_error(&recorder, index, start, "poll", kind, e.to_string());
                // A fenced member rejoins on its next poll; other errors back off.
                if !fenced && pause(&mut stop, Duration::from_millis(200)).await {
                    break;
                }
            }
            Err(_) => push_error(
                &recorder,
                index,
                start,
                "poll",
                LOCAL_DEADLINE.into(),
                String::new(),
            ),
        }
        note_member_id(&consumer, &recorder, index, &member_id, start);
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            commit_moved(&mut consumer, &recorder, index).await;
            last_commit = Instant::now();
        }
    }
    commit_moved(&mut consumer, &recorder, index).await;
    let start = clock.now_us();
    poll_start_us.store(start, Ordering::Relaxed);
    match tokio::time::timeout(CALL_BOUND, consumer.close()).await {
        Ok(Ok(())) => push_event(&recorder, index, start, GroupEventKind::Closed),
        Ok(Err(e)) => push_error(
            &recorder,
            index,
            start,
            "close",
            error_kind(&e),
            e.to_string(),
        ),
        Err(_) => push_error(
            &recorder,
            index,
            start,
            "close",
            LOCAL_DEADLINE.into(),
            String::new(),
        ),
    }
}

pub(super) fn record_reads(
    recorder: &Recorder,
    member: u32,
    records: Vec<ConsumerRecord>,
    at_us: u64,
) {
    recorder.group(|g| {
        g.reads.extend(records.into_iter().map(|r| GroupRead {
            member,
            partition: r.partition,
            offset: r.offset,
            value: String::from_utf8_lossy(&r.value).into_owned(),
            at_us,
        }))
    });
}

/// Record a `Joined` event when the member id changed (first join, rejoin).
pub(super) fn note_member_id(
    consumer: &GroupConsumer,
    recorder: &Recorder,
    index: u32,
    shared: &Mutex<String>,
    start_us: u64,
) {
    let Some(id) = consumer.member_id() else {
        return;
    };
    let mut known = shared.lock().unwrap_or_else(|e| e.into_inner());
    if *known != id {
        known.clone_from(&id);
        drop(known);
        push_event(
            recorder,
            index,
            start_us,
            GroupEventKind::Joined { member_id: id },
        );
    }
}

/// Commit, one partition at a time, the position of every owned partition that moved
/// past what this member last committed (or found committed when it took it over).
async fn commit_moved(consumer: &mut GroupConsumer, recorder: &Recorder, index: u32) {
    let clock = recorder.clock();
    for tp in consumer.assignment() {
        // A fenced commit drops every partition: the rest are no longer ours.
        if !consumer.assignment().contains(&tp) {
            continue;
        }
        let Some(position) = consumer.position(&tp) else {
            continue;
        };
        if consumer.committed(&tp) == Some(position) {
            continue;
        }
        let member_id = consumer.member_id().unwrap_or_default();
        let invoke_us = clock.now_us();
        let result = tokio::time::timeout(
            CALL_BOUND,
            consumer.commit_offsets_sync(BTreeMap::from([(tp.clone(), position)])),
        )
        .await;
        let complete_us = Some(clock.now_us());
        let (outcome, error_kind, error) = match result {
            Ok(Ok(())) => (CommitOutcome::Acked, None, None),
            Ok(Err(e)) => (
                CommitOutcome::Error,
                Some(self::error_kind(&e)),
                Some(e.to_string()),
            ),
            Err(_) => (CommitOutcome::Error, Some(LOCAL_DEADLINE.to_string()), None),
        };
        recorder.group(|g| {
            g.commits.push(GroupCommit {
                member: index,
                member_id,
                partition: tp.partition,
                offset: position,
                invoke_us,
                complete_us,
                outcome,
                error_kind,
                error,
            })
        });
    }
}
