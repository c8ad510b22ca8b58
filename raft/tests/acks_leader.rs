//! `acks=leader` on one replica: `propose_records_leader_ack` answers with the same
//! offsets the committed batch gets, and a replica that does not lead answers
//! `NotLeader`. (Idempotent producers under `acks=leader` are the broker's: see
//! neo-broker's partition tests.) (That it answers before followers
//! store the batch is tested with real processes in `node/tests/acks.rs`.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use neo_raft::{Error, NodeStore, RaftGroup};

mod common;
use common::{lead_alone, open_partition};

const DEADLINE: Duration = Duration::from_secs(30);

fn batch(records: usize, producer: Option<(i64, i32)>) -> Bytes {
    let mut b = qiss::batch::BatchBuilder::new();
    if let Some((id, seq)) = producer {
        b.producer(id, 0, seq);
    }
    for i in 0..records {
        b.push(1, None, &[], format!("v{i}").as_bytes())
            .expect("push");
    }
    b.build().expect("build")
}

async fn open(dir: &std::path::Path, group: u64) -> Arc<RaftGroup> {
    open_partition(&NodeStore::open(dir).expect("store"), group).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_ack_answers_the_offsets_the_batch_commits_at() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = open(dir.path(), 1).await;

    // Not bootstrapped: not a leader.
    match g.propose_records_leader_ack(valid(batch(1, None))).await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }

    lead_alone(&g, DEADLINE).await;

    // Interleaved acks=all and acks=leader writes get consecutive offsets.
    let mut next = None;
    for i in 0..20 {
        let (base, n) = if i % 2 == 0 {
            g.propose_records_leader_ack(valid(batch(3, None))).await
        } else {
            g.propose_records(valid(batch(3, None))).await
        }
        .expect("propose");
        assert_eq!(n, 3);
        if let Some(next) = next {
            assert_eq!(base, next, "write {i}");
        }
        next = Some(base + 3);
    }
    // The acks=leader batches commit too: all 60 records are applied and readable.
    let end = next.expect("offsets");
    g.wait_until(DEADLINE, "applied", |_| g.applied().next_offset >= end)
        .await
        .expect("applied");
    let (bytes, _) = g.read_log(end - 60, 1 << 20).await.expect("read");
    let mut records = 0;
    let mut rest = bytes.clone();
    while !rest.is_empty() {
        let h = qiss::batch::check(&rest).expect("batch");
        if !h.is_control() {
            records += h.record_count;
        }
        rest = rest.slice(h.batch_length as usize..);
    }
    assert_eq!(records, 60);
}

/// The proof a broker makes on receipt; raft takes nothing less.
fn valid(batch: bytes::Bytes) -> qiss::batch::ValidatedBatch {
    qiss::batch::ValidatedBatch::validate(batch, &qiss::batch::BatchLimits::DEFAULT)
        .expect("valid batch")
}

/// The phases a slow-produce log line shows: inside `with_phases`, an acks=all write
/// notes when it reached Raft, when the leader's own log made it durable, and when Raft
/// answered, in that order; an acks=leader write notes its flush as well. Outside, a
/// write notes nothing and takes no local ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_note_the_leaders_flush_between_proposal_and_answer() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = open(dir.path(), 1).await;
    lead_alone(&g, DEADLINE).await;
    let (r, p) = neo_raft::with_phases(g.propose_records(valid(batch(2, None)))).await;
    r.expect("acks=all");
    let (proposed, flushed, done) = (
        p.proposed.expect("proposed"),
        p.flushed.expect("the leader's flush is noted"),
        p.done.expect("answered"),
    );
    assert!(proposed <= flushed && flushed <= done, "{p:?}");
    let (r, p) = neo_raft::with_phases(g.propose_records_leader_ack(valid(batch(2, None)))).await;
    r.expect("acks=leader");
    assert!(p.flushed.is_some() && p.done.is_some(), "{p:?}");
    // Outside a phases scope nothing is noted (and nothing breaks).
    g.propose_records(valid(batch(1, None)))
        .await
        .expect("untracked write");
}
