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
